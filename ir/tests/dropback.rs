//! The Dropback ops: `topk_select` exactness and ties, `dropback_score` / `dropback_apply` /
//! `tracked_set`, tracked parameters in the interpreter's state (O(k), overlay, capacity), and
//! the text form of the ops.

use sparsec_ir::interp::{
    initial_value, topk_select, Input, Interpreter, Output, State, TrackedValues, ZeroCounts,
};
use sparsec_ir::spec::{DropbackScope, Method, MethodSpec, Optimizer, Schedule, TrainSpec};
use sparsec_ir::{
    parse_module, print_module, Func, Init, Module, Op, Param, ParamId, Storage, Type,
};
use sparsec_test_support::modules;

fn topk(scores: &[&[f32]], k: usize) -> Vec<u64> {
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    topk_select(scores, k, &mut scratch, &mut out);
    out
}

#[test]
fn topk_ties_go_to_the_lower_global_position() {
    let a = [1.0f32, 3.0, 3.0, 2.0];
    let b = [3.0f32, 0.0];
    assert_eq!(topk(&[&a, &b], 3), vec![1, 2, 4]);
    assert_eq!(topk(&[&a, &b], 2), vec![1, 2]);
    assert_eq!(topk(&[&b, &a], 2), vec![0, 3]);
    assert_eq!(topk(&[&a, &b], 4), vec![1, 2, 3, 4]);
    // −0 and +0 are equal scores; NaN ranks above every number.
    assert_eq!(topk(&[&[0.0, -0.0]], 1), vec![0]);
    assert_eq!(topk(&[&[-0.0, 0.0]], 1), vec![0]);
    assert_eq!(topk(&[&[1.0, f32::NAN, f32::INFINITY]], 2), vec![1, 2]);
    // k = 0 selects nothing; k ≥ N everything.
    assert!(topk(&[&a], 0).is_empty());
    assert_eq!(topk(&[&a, &b], 100), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn topk_is_exact_against_a_full_sort() {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for case in 0..200 {
        let lens = [next() % 50, next() % 300, next() % 20];
        // Few distinct values: many ties.
        let parts: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| (0..n).map(|_| (next() % 7) as f32 * 0.5).collect())
            .collect();
        let all: Vec<f32> = parts.iter().flatten().copied().collect();
        let k = (next() % (all.len() as u64 + 3)) as usize;
        let mut order: Vec<u64> = (0..all.len() as u64).collect();
        order.sort_by(|&i, &j| all[j as usize].total_cmp(&all[i as usize]).then(i.cmp(&j)));
        let mut want: Vec<u64> = order.into_iter().take(k).collect();
        want.sort_unstable();
        let refs: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(topk(&refs, k), want, "case {case}");
    }
}

/// Large enough that the selection narrows over several digits before its final exact step:
/// Dropback-like scores (magnitudes over many octaves, a block of exact ties, zeros).
#[test]
fn topk_is_exact_on_large_inputs_with_clustered_scores() {
    let mut s = 0x0bad_cafe_f00d_d00du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for case in 0..6 {
        let n = 50_000 + (next() % 100_000) as usize;
        let all: Vec<f32> = (0..n)
            .map(|_| match next() % 10 {
                0 => 0.0,
                1 => 0.25, // a block of ties
                2 => 0.25 + f32::EPSILON / 4.0 * (next() % 3) as f32,
                _ => {
                    ((next() >> 40) as f32 / (1u64 << 24) as f32)
                        * 2f32.powi(-((next() % 12) as i32))
                }
            })
            .collect();
        let cut = (next() % n as u64) as usize;
        let parts = [&all[..cut], &all[cut..]];
        let mut order: Vec<u64> = (0..n as u64).collect();
        order.sort_by(|&i, &j| all[j as usize].total_cmp(&all[i as usize]).then(i.cmp(&j)));
        for k in [1, n / 25, n / 10 + 7, n / 2, n - 1] {
            let mut want: Vec<u64> = order[..k].to_vec();
            want.sort_unstable();
            assert_eq!(topk(&parts, k), want, "case {case}, n {n}, k {k}");
        }
    }
}

fn param(name: &str, shape: &[usize], init: Init, stream: u64, k: u64) -> Param {
    // Global scope: each parameter's budget is the whole k, capped at its size.
    let budget = k.min(shape.iter().product::<usize>() as u64);
    modules::param(name, shape, init, stream, Storage::Tracked { budget })
}

/// Two tracked parameters (`w: [2, 3]` uniform, `b: [2]` zeros, global k) and
/// `@step(%w1, %b1)`: one global selection, applied and stored; returns the selection and
/// the frozen form's results.
fn module(k: u64) -> Module {
    let mut m = Module::new("db", sparsec_ir::Stage::Train);
    m.train = Some(TrainSpec {
        epochs: 1,
        batch: 1,
        seed: 9,
        log_every: 1,
        optimizer: Optimizer {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        schedule: Schedule::Constant,
    });
    m.method = Some(MethodSpec {
        method: Method::Dropback {
            k,
            scope: DropbackScope::Global,
            freeze_after: None,
            decay_init: None,
        },
        layers: vec!["w".into(), "b".into()],
    });
    m.add_param(param(
        "w",
        &[2, 3],
        Init::Uniform { lo: -1.0, hi: 1.0 },
        0,
        k,
    ));
    m.add_param(param("b", &[2], Init::Zeros, 1, k));
    let mut f = Func::new("step");
    let w1 = f.add_arg("w1", Type::f32(vec![2, 3]));
    let b1 = f.add_arg("b1", Type::f32(vec![2]));
    let (w, b) = (ParamId(0), ParamId(1));
    let p = m.params.clone();
    let push = |f: &mut Func, op, operands: &[_]| f.push(&p, op, operands, None).unwrap();
    let read = push(&mut f, Op::Param(w), &[]);
    let sw = push(&mut f, Op::DropbackScore(w), &[w1]);
    let sb = push(&mut f, Op::DropbackScore(b), &[b1]);
    let sel = push(&mut f, Op::TopkSelect { k }, &[sw, sb]);
    let nw = push(
        &mut f,
        Op::DropbackApply {
            param: w,
            offset: 0,
        },
        &[w1, sel],
    );
    let nb = push(
        &mut f,
        Op::DropbackApply {
            param: b,
            offset: 6,
        },
        &[b1, sel],
    );
    push(&mut f, Op::Store(w), &[nw]);
    push(&mut f, Op::Store(b), &[nb]);
    let ts = push(&mut f, Op::TrackedSet(w), &[]);
    f.results = vec![read, sel, nw, nb, ts];
    m.funcs.push(f);
    m
}

#[test]
fn the_ops_print_parse_and_verify() {
    let m = module(3);
    let text = print_module(&m);
    for line in [
        "%1 = dropback_score @w, %w1 : f32[2, 3]",
        "%3 = topk_select %1, %2 {k=3} : i32[8]{sparse 3}",
        "%4 = dropback_apply @w, %w1, %3 {offset=0} : f32[2, 3]",
        "%5 = dropback_apply @b, %b1, %3 {offset=6} : f32[2]",
        "%8 = tracked_set @w : i32[6]{sparse 3}",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert_eq!(parse_module(&text).unwrap(), m);
    // Ill-typed forms are rejected with a message: `b` at offset 6 leaves no room for `w`'s 6.
    let broken = text.replace("{offset=0} : f32[2, 3]", "{offset=6} : f32[2, 3]");
    let e = parse_module(&broken).unwrap_err();
    assert!(e.message.contains("does not fit"), "{}", e.message);
    let no_operands = text.replace("topk_select %1, %2 {k=3}", "topk_select {k=3}");
    assert!(parse_module(&no_operands)
        .unwrap_err()
        .message
        .contains("at least one operand"));
    // Only tracked weights have a w0 to score against.
    let mut dense = m.clone();
    dense.params[1].storage = Storage::Dense;
    assert!(sparsec_ir::verify(&dense).is_err());
}

fn run(
    it: &mut Interpreter<f32>,
    st: &mut State<f32>,
    w1: &[f32],
    b1: &[f32],
) -> Result<Vec<Output<f32>>, sparsec_ir::interp::InterpError> {
    it.run(st, &[Input::Float(w1), Input::Float(b1)])
}

#[test]
fn tracked_state_is_the_selected_entries() {
    let m = module(3);
    let mut it = Interpreter::<f32>::new(&m, "step").unwrap();
    let mut st = State::<f32>::initial(&m);
    let w0: Vec<f32> = initial_value(&m, 0, 1.0);
    // Moves: w by +0.1, +0.5, −0.3, 0, +0.5, 0; b by −0.5 and 0.2. Top 3 of the scores
    // [.1, .5, .3, 0, .5, 0, .5, .2]: positions 1, 4, 6 (three ties at 0.5).
    let d = [0.1f32, 0.5, -0.3, 0.0, 0.5, 0.0];
    let w1: Vec<f32> = w0.iter().zip(d).map(|(a, b)| a + b).collect();
    let b1 = [-0.5f32, 0.2];
    let out = run(&mut it, &mut st, &w1, &b1).unwrap();
    let Output::Sparse { indices, shape } = &out[1] else {
        panic!("a selection")
    };
    assert_eq!((indices.clone(), shape.clone()), (vec![1, 4, 6], vec![8]));
    // The param read saw w0 (nothing stored yet).
    assert_eq!(out[0].as_float().unwrap().data, w0);
    let want_w: Vec<f32> = (0..6)
        .map(|i| if i == 1 || i == 4 { w1[i] } else { w0[i] })
        .collect();
    assert_eq!(out[2].as_float().unwrap().data, want_w);
    assert_eq!(out[3].as_float().unwrap().data, vec![-0.5, 0.0]);
    // The state: only the stored entries (O(k)), and no dense buffer.
    let tw = st.tracked[0].as_ref().unwrap();
    assert_eq!(tw.indices, vec![1, 4]);
    assert_eq!(tw.values, vec![w1[1], w1[4]]);
    assert!(st.values[0].is_empty());
    assert_eq!(st.tracked[1].as_ref().unwrap().indices, vec![0]);
    assert_eq!(st.dense_value(&m, 0), want_w);
    // The same value window by window (a window that splits the entries, one that holds all).
    for window in [4, 100] {
        let mut seen = Vec::new();
        st.visit_dense_value(&m, 0, window, |start, part| {
            assert_eq!(start, seen.len());
            seen.extend_from_slice(part);
        });
        assert_eq!(seen, want_w, "windows of {window}");
    }
    // Next call: `param` overlays, `tracked_set` reports the stored positions.
    let out = run(&mut it, &mut st, &w0, &[0.0, 0.0]).unwrap();
    assert_eq!(out[0].as_float().unwrap().data, want_w);
    let Output::Sparse { indices, .. } = &out[4] else {
        panic!("a selection")
    };
    assert_eq!(indices, &vec![1, 4]);
    // Everything back at w0: nothing stored.
    assert!(st.tracked[0].as_ref().unwrap().is_empty());
    assert!(st.tracked[1].as_ref().unwrap().is_empty());
}

#[test]
fn init_scale_scales_the_regenerated_values() {
    let m = module(3);
    let mut it = Interpreter::<f32>::new(&m, "step").unwrap();
    let mut st = State::<f32>::initial(&m);
    st.init_scale = 0.5;
    let w0: Vec<f32> = initial_value(&m, 0, 1.0);
    let half: Vec<f32> = w0.iter().map(|x| x * 0.5).collect();
    assert_eq!(initial_value::<f32>(&m, 0, 0.5), half);
    let out = run(&mut it, &mut st, &half, &[0.0, 0.0]).unwrap();
    assert_eq!(out[0].as_float().unwrap().data, half);
    // w1 = w0·0.5 everywhere: every score is 0, nothing differs, nothing is stored.
    assert!(st.tracked[0].as_ref().unwrap().is_empty());
}

#[test]
fn a_store_beyond_the_budget_is_an_error_and_changes_nothing() {
    // Without the selection: store the SGD result directly.
    let mut m = module(2);
    let f = &mut m.funcs[0];
    f.insts.truncate(1);
    let p = m.params.clone();
    f.push(
        &p,
        Op::Store(ParamId(0)),
        &[sparsec_ir::Value::Arg(0)],
        None,
    )
    .unwrap();
    f.results = vec![sparsec_ir::Value::Inst(0)];
    let mut it = Interpreter::<f32>::new(&m, "step").unwrap();
    let mut st = State::<f32>::initial(&m);
    let before = st.clone();
    let w1 = [5.0f32; 6];
    let e = run(&mut it, &mut st, &w1, &[0.0, 0.0]).unwrap_err();
    assert!(e.message.contains("budget of 2"), "{}", e.message);
    assert_eq!(st, before);
}

/// The optimised forms compute what the plain forms compute: the fused products bit for bit,
/// the distributed one (regenerated product plus sparse correction) to rounding, and the masked
/// weight's sparse products the dense ones on its mask.
#[test]
fn optimised_forms_agree_with_the_plain_computation() {
    let m = modules::opt_forms();
    let mut state = State::<f32>::initial(&m);
    // The masked weight keeps every other entry (its `nnz=6`), zero elsewhere.
    let (fm, mask) = (1usize, 2usize);
    state.values[mask] = (0..12).map(|p| (p % 2) as f32).collect();
    for (w, k) in state.values[fm]
        .iter_mut()
        .zip((0..12).map(|p| (p % 2) as f32))
    {
        *w *= k;
    }
    let w = state.values[fm].clone();
    let mut it = Interpreter::<f32>::new(&m, "train_step").unwrap();
    let x: Vec<f32> = (0..6).map(|i| 0.1 * i as f32 - 0.2).collect();
    let dy: Vec<f32> = (0..8).map(|i| 0.05 * i as f32 - 0.1).collect();
    for step in 0..3 {
        let out = it
            .run(
                &mut state,
                &[Input::Float(&x), Input::Float(&dy), Input::Float(&[0.5])],
            )
            .unwrap();
        let vals: Vec<Vec<f32>> = out
            .into_iter()
            .map(|o| match o {
                Output::Float(t) => t.data,
                _ => panic!("float results"),
            })
            .collect();
        let (dense, dist, fused) = (&vals[0], &vals[1], &vals[2]);
        assert_eq!(dense, fused, "step {step}: fused product differs");
        for (a, b) in dense.iter().zip(dist) {
            assert!(
                (a - b).abs() <= 1e-6,
                "step {step}: distributed product {b} vs {a}"
            );
        }
        let tracked = state.tracked[0].as_ref().map_or(0, |t| t.indices.len());
        assert!(tracked <= 5, "at most k tracked");
        // x: [2, 3], dy: [2, 4], W: [4, 3].
        let close = |a: f32, b: f32| assert!((a - b).abs() <= 1e-6, "step {step}: {a} vs {b}");
        for r in 0..2 {
            for o in 0..4 {
                close(
                    vals[4][r * 4 + o],
                    (0..3).map(|c| x[r * 3 + c] * w[o * 3 + c]).sum(),
                );
            }
            for c in 0..3 {
                close(
                    vals[5][r * 3 + c],
                    (0..4).map(|o| dy[r * 4 + o] * w[o * 3 + c]).sum(),
                );
            }
        }
        for (p, &got) in vals[6].iter().enumerate() {
            let (o, c) = (p / 3, p % 3);
            let g: f32 = (0..2).map(|r| dy[r * 4 + o] * x[r * 3 + c]).sum();
            close(got, g * (p % 2) as f32);
        }
    }
}

/// Zeros counted from the kept zeros of the initial value equal a count over the whole
/// effective value: entries of zero over a zero or non-zero `w0`, entries over a zero `w0`,
/// and a change of `init_scale` (which makes every `w0` zero here) after a count.
#[test]
fn zero_counts_are_those_of_the_effective_value() {
    let m = module(6);
    let mut st = State::<f32>::initial(&m);
    let whole = |st: &State<f32>, p: usize| {
        let mut zeros = 0;
        st.visit_dense_value(&m, p, 4, |_, part| {
            zeros += part.iter().filter(|&&x| x == 0.0).count();
        });
        zeros
    };
    let mut counts = ZeroCounts::default();
    let entries = |indices: &[u32], values: &[f32]| TrackedValues {
        indices: indices.to_vec(),
        values: values.to_vec(),
    };
    st.tracked[0] = Some(entries(&[1, 2, 5], &[0.0, 0.25, -0.0]));
    st.tracked[1] = Some(entries(&[0], &[3.0]));
    for scale in [1.0, 0.0, 0.5] {
        st.init_scale = scale;
        for p in 0..2 {
            assert_eq!(
                counts.count(&m, &st, p),
                whole(&st, p),
                "scale {scale} param {p}"
            );
        }
    }
    // The checks see zeros of both kinds: at scale 0, every untracked `w` is zero.
    st.init_scale = 0.0;
    assert_eq!(counts.count(&m, &st, 0), 5);
    assert_eq!(counts.count(&m, &st, 1), 1);
    // More zeros than are kept (a weight of 300 × 300 at scale 0): counted over the whole
    // value each time instead.
    let mut m = m.clone();
    let big = Init::Uniform { lo: -1.0, hi: 1.0 };
    m.add_param(param("big", &[300, 300], big, 2, 6));
    let mut st = State::<f32>::initial(&m);
    st.tracked[2] = Some(entries(&[7, 89_999], &[0.5, 0.0]));
    for scale in [0.0, 1.0] {
        st.init_scale = scale;
        let mut zeros = 0;
        st.visit_dense_value(&m, 2, 1000, |_, part| {
            zeros += part.iter().filter(|&&x| x == 0.0).count();
        });
        assert_eq!(counts.count(&m, &st, 2), zeros, "scale {scale}");
    }
    assert_eq!(counts.count(&m, &st, 2), 1, "only the entry of zero");
}
