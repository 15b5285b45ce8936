//! Tests of the training-step builder (`sparsec_passes::build_train_step`):
//! (a) structure of the train step for every example (verifies, stores, momentum buffers,
//!     locations, no dead or redundant instructions, round trip through the text form);
//! (b) gradient checks in f64 against central finite differences, per op and for whole
//!     examples, through the reference interpreter;
//! (c) the SGD update (momentum, weight decay, Nesterov) against PyTorch's formula by hand.

use std::collections::{HashMap, HashSet};

use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::State;
use sparsec_ir::{
    parse_module, print_module, verify, Init, Module, Op, ParamId, Role, Storage, Type, Value,
};
use sparsec_passes::build_train_step;
use sparsec_test_support::examples::{example, examples, lower};
use sparsec_test_support::interp::{loss, step, Batch};
use sparsec_test_support::modules::{plain_sgd, weights, with_optimizer};
use sparsec_test_support::named_ir::ir_module;
use sparsec_test_support::rng::Rng;

// ---------------------------------------------------------------------------------------------
// (a) Structure
// ---------------------------------------------------------------------------------------------

/// Every structural promise of `build_train_step`; returns the set of stored weights.
fn check_structure(m: &Module, t: &Module) -> HashSet<ParamId> {
    verify(t).unwrap_or_else(|e| panic!("train step does not verify: {e:?}"));
    assert_eq!(t.stage, sparsec_ir::Stage::Train);
    assert_eq!(t.name, m.name);
    assert_eq!(t.train, m.train);
    assert_eq!(t.method, m.method);
    assert_eq!(t.funcs.len(), m.funcs.len() + 1);
    let fwd = m.func("forward").unwrap();
    assert_eq!(t.func("forward"), Some(fwd), "@forward is kept unchanged");
    assert_eq!(
        &t.params[..m.params.len()],
        &m.params[..],
        "existing params unchanged"
    );

    let ts = t.func(TRAIN_STEP).expect("@train_step");
    assert_eq!(ts.args.len(), 3);
    assert_eq!(&ts.args[..2], &fwd.args[..]);
    assert_eq!(ts.args[2].ty, Type::scalar_f32());
    assert_eq!(ts.args[2].name, "lr");
    assert_eq!(
        ts.results, fwd.results,
        "returns (loss, logits) of the copied forward"
    );
    assert_eq!(
        &ts.insts[..fwd.insts.len()],
        &fwd.insts[..],
        "forward copied verbatim"
    );

    // Stores: each parameter at most once; weights and their buffers only.
    let mut stored = HashMap::new();
    for inst in &ts.insts {
        if let Op::Store(p) = inst.op {
            *stored.entry(p).or_insert(0) += 1;
        }
    }
    assert!(stored.values().all(|&n| n == 1), "a parameter stored twice");
    let weights: HashSet<ParamId> = stored
        .keys()
        .copied()
        .filter(|&p| t.param(p).role == Role::Weight)
        .collect();
    let momentum = m.train.as_ref().unwrap().optimizer.momentum;
    let buffers: Vec<(usize, ParamId)> = (0..t.params.len())
        .filter_map(|i| match t.params[i].role {
            Role::Momentum(w) => Some((i, w)),
            Role::Weight | Role::State(_) | Role::Mask(_) => None,
        })
        .collect();
    if momentum == 0.0 {
        assert!(buffers.is_empty(), "momentum buffers without momentum");
        assert_eq!(stored.len(), weights.len());
    } else {
        assert_eq!(
            buffers.len(),
            weights.len(),
            "one buffer per trained weight"
        );
        assert_eq!(stored.len(), 2 * weights.len());
        for &(i, w) in &buffers {
            let (b, wp) = (&t.params[i], t.param(w));
            assert!(weights.contains(&w), "a buffer for an untrained weight");
            assert!(stored.contains_key(&ParamId(i as u32)), "buffer not stored");
            assert_eq!(b.name, format!("{}.momentum", wp.name));
            assert_eq!(b.ty, wp.ty);
            assert_eq!(b.init, Init::Zeros);
            assert_eq!(b.storage, Storage::Dense);
        }
    }

    // No dead instructions, no no-op reshapes; locations as promised.
    let n = ts.insts.len();
    let mut used = vec![false; n];
    for inst in &ts.insts {
        for &v in &inst.operands {
            if let Value::Inst(j) = v {
                used[j as usize] = true;
            }
        }
    }
    for &v in &ts.results {
        if let Value::Inst(j) = v {
            used[j as usize] = true;
        }
    }
    let fwd_locs: HashSet<Option<&str>> = fwd.insts.iter().map(|i| i.loc.as_deref()).collect();
    let mut in_sgd = false;
    for (i, inst) in ts.insts.iter().enumerate().skip(fwd.insts.len()) {
        assert!(
            used[i] || matches!(inst.op, Op::Store(_)),
            "dead instruction %{i} `{}`",
            inst.op.name()
        );
        if let Op::Reshape { shape } = &inst.op {
            assert_ne!(
                shape,
                &ts.value_type(inst.operands[0]).shape,
                "no-op reshape %{i}"
            );
        }
        in_sgd |= inst.loc.as_deref() == Some("sgd");
        if in_sgd {
            assert_eq!(inst.loc.as_deref(), Some("sgd"), "%{i} in the update");
        } else {
            assert!(
                fwd_locs.contains(&inst.loc.as_deref()),
                "backward %{i} has loc {:?}, which no forward instruction has",
                inst.loc
            );
        }
    }

    // The text form round-trips, and building is deterministic.
    let text = print_module(t);
    let back = parse_module(&text).unwrap_or_else(|e| panic!("{}\n{text}", e.message));
    assert_eq!(&back, t, "parse(print(t)) == t");
    assert_eq!(print_module(&back), text);
    assert_eq!(
        print_module(&build_train_step(m).unwrap()),
        text,
        "deterministic"
    );
    weights
}

#[test]
fn every_example_builds_a_verified_train_step_that_stores_every_weight_once() {
    for (name, source) in examples() {
        let m = lower(&source, None);
        let t = build_train_step(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stored = check_structure(&m, &t);
        assert_eq!(
            stored.len(),
            weights(&m).len(),
            "{name}: every weight is trained"
        );
    }
}

#[test]
fn momentum_buffers_exist_iff_momentum_is_positive() {
    let m = lower(&example("lenet300"), None);
    for (mu, nesterov) in [(0.0, false), (0.9, false), (0.9, true), (0.5, false)] {
        for wd in [0.0, 1e-3] {
            let v = with_optimizer(&m, 0.1, mu, wd, nesterov);
            let t = build_train_step(&v).unwrap();
            check_structure(&v, &t);
            let n = t
                .params
                .iter()
                .filter(|p| matches!(p.role, Role::Momentum(_)))
                .count();
            assert_eq!(n, if mu > 0.0 { 6 } else { 0 });
            let text = print_module(&t);
            assert_eq!(
                text.contains("const 0.001 "),
                wd > 0.0,
                "weight decay constant"
            );
        }
    }
}

#[test]
fn buffer_streams_follow_the_weights() {
    let m = lower(&example("lenet5"), None);
    let t = build_train_step(&m).unwrap();
    let max = m.params.iter().map(|p| p.stream).max().unwrap();
    let streams: Vec<u64> = t.params[m.params.len()..]
        .iter()
        .map(|p| p.stream)
        .collect();
    let expect: Vec<u64> = (max + 1..=max + streams.len() as u64).collect();
    assert_eq!(streams, expect);
}

#[test]
fn no_gradient_is_computed_for_the_data() {
    let count = |t: &Module, name: &str| {
        t.func(TRAIN_STEP)
            .unwrap()
            .insts
            .iter()
            .filter(|i| i.op.name() == name)
            .count()
    };
    // lenet300: the first layer's input gradient would be a [B, 784] matmul.
    let t = build_train_step(&lower(&example("lenet300"), None)).unwrap();
    let ts = t.func(TRAIN_STEP).unwrap();
    assert!(ts
        .insts
        .iter()
        .all(|i| i.ty.shape != [64, 784] || i.op.name() == "reshape"));
    assert_eq!(count(&t, "matmul"), 2, "dx of fc3 and fc2 only");
    assert_eq!(count(&t, "matmul_tn"), 3, "dW of all three layers");
    // lenet5 / resnet_tiny: no conv2d_input_grad for the first convolution.
    let t = build_train_step(&lower(&example("lenet5"), None)).unwrap();
    assert_eq!(count(&t, "conv2d_input_grad"), 1);
    assert_eq!(count(&t, "conv2d_weight_grad"), 2);
    let t = build_train_step(&lower(&example("resnet_tiny"), None)).unwrap();
    assert_eq!(count(&t, "conv2d_input_grad"), 3);
    assert_eq!(count(&t, "conv2d_weight_grad"), 4);
    // The labels never get an adjoint: nothing of type i32 is created by the backward pass.
    let fwd_len = t.func("forward").unwrap().insts.len();
    let ts = t.func(TRAIN_STEP).unwrap();
    assert!(ts.insts[fwd_len..]
        .iter()
        .all(|i| i.ty.dtype == sparsec_ir::DType::F32));
}

/// The exact text of a small train step pins the rules' output and the update's form.
#[test]
fn a_dense_layer_train_step_reads_as_expected() {
    let m = ir_module(
        "w : f32[3, 4]\nb : f32[3]",
        "%x: f32[2, 4], %labels: i32[2]",
        "w = param @w : f32[3, 4]  loc(fc)
         y = matmul_nt %x, %w : f32[2, 3]  loc(fc)
         b = param @b : f32[3]  loc(fc)
         z = bias_add %y, %b : f32[2, 3]  loc(fc)
         h = tanh %z : f32[2, 3]  loc(act)
         l = softmax_xent %h, %labels : f32[]  loc(loss)",
        "l",
        "h",
    );
    let m = with_optimizer(&m, 0.1, 0.9, 0.01, true);
    let t = build_train_step(&m).unwrap();
    let text = print_module(&t);
    let got = &text[text.find("func @train_step").unwrap()..];
    let expected = "\
func @train_step(%x: f32[2, 4], %labels: i32[2], %lr: f32[]) -> (f32[], f32[2, 3]) {
  %0 = param @w : f32[3, 4]  loc(fc)
  %1 = matmul_nt %x, %0 : f32[2, 3]  loc(fc)
  %2 = param @b : f32[3]  loc(fc)
  %3 = bias_add %1, %2 : f32[2, 3]  loc(fc)
  %4 = tanh %3 : f32[2, 3]  loc(act)
  %5 = softmax_xent %4, %labels : f32[]  loc(loss)
  %6 = softmax_xent_grad %4, %labels : f32[2, 3]  loc(loss)
  %7 = tanh_grad %6, %4 : f32[2, 3]  loc(act)
  %8 = reduce_sum %7 {axes=[0]} : f32[3]  loc(fc)
  %9 = matmul_tn %7, %x : f32[3, 4]  loc(fc)
  %10 = const 0.01 : f32[]  loc(sgd)
  %11 = const 0.9 : f32[]  loc(sgd)
  %12 = scale %0, %10 : f32[3, 4]  loc(sgd)
  %13 = add %9, %12 : f32[3, 4]  loc(sgd)
  %14 = param @w.momentum : f32[3, 4]  loc(sgd)
  %15 = scale %14, %11 : f32[3, 4]  loc(sgd)
  %16 = add %15, %13 : f32[3, 4]  loc(sgd)
  %17 = store @w.momentum, %16 : f32[3, 4]  loc(sgd)
  %18 = scale %16, %11 : f32[3, 4]  loc(sgd)
  %19 = add %13, %18 : f32[3, 4]  loc(sgd)
  %20 = scale %19, %lr : f32[3, 4]  loc(sgd)
  %21 = sub %0, %20 : f32[3, 4]  loc(sgd)
  %22 = store @w, %21 : f32[3, 4]  loc(sgd)
  %23 = scale %2, %10 : f32[3]  loc(sgd)
  %24 = add %8, %23 : f32[3]  loc(sgd)
  %25 = param @b.momentum : f32[3]  loc(sgd)
  %26 = scale %25, %11 : f32[3]  loc(sgd)
  %27 = add %26, %24 : f32[3]  loc(sgd)
  %28 = store @b.momentum, %27 : f32[3]  loc(sgd)
  %29 = scale %27, %11 : f32[3]  loc(sgd)
  %30 = add %24, %29 : f32[3]  loc(sgd)
  %31 = scale %30, %lr : f32[3]  loc(sgd)
  %32 = sub %2, %31 : f32[3]  loc(sgd)
  %33 = store @b, %32 : f32[3]  loc(sgd)
  return %5, %4
}
";
    assert_eq!(got, expected, "\n{got}");
    assert!(text.contains(
        "param @w.momentum : f32[3, 4] init=zeros stream=2 storage=dense role=momentum(@w)"
    ));
}

#[test]
fn weights_that_do_not_reach_the_loss_are_not_updated() {
    let m = ir_module(
        "w : f32[3, 4]\nunused : f32[3, 4]\nside : f32[2, 3]",
        "%x: f32[2, 4], %labels: i32[2]",
        "w = param @w : f32[3, 4]
         y = matmul_nt %x, %w : f32[2, 3]
         u = param @unused : f32[3, 4]
         s = param @side : f32[2, 3]
         off = add %y, %s : f32[2, 3]
         l = softmax_xent %y, %labels : f32[]",
        "l",
        "off",
    );
    let m = with_optimizer(&m, 0.1, 0.9, 0.0, false);
    let t = build_train_step(&m).unwrap();
    let stored = check_structure(&m, &t);
    assert_eq!(stored, HashSet::from([ParamId(0)]));
    assert_eq!(t.params.len(), 4, "one buffer, for @w");
    let fwd_len = m.func("forward").unwrap().insts.len();
    let ts = t.func(TRAIN_STEP).unwrap();
    // softmax_xent_grad, matmul_tn, the update of @w: nothing for @side or @unused.
    assert_eq!(ts.insts[fwd_len].op, Op::SoftmaxXentGrad);
    assert_eq!(ts.insts[fwd_len + 1].op.name(), "matmul_tn");
    assert!(ts.insts[fwd_len + 2..]
        .iter()
        .all(|i| i.loc.as_deref() == Some("sgd")));
}

#[test]
fn an_op_without_a_rule_on_the_path_is_an_error() {
    let m = ir_module(
        "w : f32[3, 4]",
        "%x: f32[2, 4], %labels: i32[2]",
        "w = param @w : f32[3, 4]
         y = matmul_nt %x, %w : f32[2, 3]
         g = tanh_grad %y, %y : f32[2, 3]  loc(weird)
         l = softmax_xent %g, %labels : f32[]",
        "l",
        "g",
    );
    let e = build_train_step(&m).unwrap_err();
    assert!(
        e.contains("tanh_grad") && e.contains("no derivative rule"),
        "{e}"
    );
    assert!(e.contains("loc weird"), "{e}");

    // The same op off the path is fine.
    let m = ir_module(
        "w : f32[3, 4]",
        "%x: f32[2, 4], %labels: i32[2]",
        "w = param @w : f32[3, 4]
         y = matmul_nt %x, %w : f32[2, 3]
         g = tanh_grad %y, %y : f32[2, 3]
         l = softmax_xent %y, %labels : f32[]",
        "l",
        "g",
    );
    check_structure(&m, &build_train_step(&m).unwrap());

    // A reduction whose gradient no op can broadcast.
    let m = ir_module(
        "w : f32[3, 4]\nv : f32[2, 3, 2]",
        "%x: f32[2, 4], %labels: i32[2]",
        "w = param @w : f32[3, 4]
         y = matmul_nt %x, %w : f32[2, 3]
         v = param @v : f32[2, 3, 2]
         r = reduce_sum %v {axes=[2]} : f32[2, 3]
         z = add %y, %r : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    let e = build_train_step(&m).unwrap_err();
    assert!(e.contains("reduce_sum"), "{e}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let m = lower(&example("lenet300"), None);
    let t = build_train_step(&m).unwrap();
    assert!(build_train_step(&t).unwrap_err().contains("already has"));
    let mut no_fwd = m.clone();
    no_fwd.funcs[0].name = "main".into();
    assert!(build_train_step(&no_fwd).unwrap_err().contains("@forward"));
    let mut no_train = m.clone();
    no_train.train = None;
    assert!(build_train_step(&no_train).is_err());
    let mut swapped = m.clone();
    swapped.funcs[0].results.swap(0, 1);
    assert!(build_train_step(&swapped).unwrap_err().contains("loss"));
    // A loss that does not depend on any weight.
    let m = ir_module(
        "w : f32[3, 4]",
        "%x: f32[2, 3], %labels: i32[2]",
        "w = param @w : f32[3, 4]
         l = softmax_xent %x, %labels : f32[]
         r = relu %x : f32[2, 3]",
        "l",
        "r",
    );
    assert!(build_train_step(&m)
        .unwrap_err()
        .contains("does not depend"));
}

// ---------------------------------------------------------------------------------------------
// (b) Gradient checks (f64, central finite differences)
// ---------------------------------------------------------------------------------------------

const EPS: f64 = 1e-6;
const REL_TOL: f64 = 1e-6;
const ABS_TOL: f64 = 1e-8;

/// Compare the train step's gradient (W − W' with plain SGD, lr = 1) with central differences
/// of `@forward`'s loss on up to `samples` coordinates of every weight (always including the
/// largest gradient). Returns the largest relative error seen.
fn grad_check(m: &Module, st: &State<f64>, batch: &Batch, samples: usize) -> f64 {
    let t = build_train_step(&plain_sgd(m)).unwrap_or_else(|e| panic!("{e}"));
    check_structure(&plain_sgd(m), &t);
    let mut after = st.clone();
    let l_step = step(&t, &mut after, batch, 1.0);
    let l0 = loss(&t, st, batch);
    assert_eq!(l_step, l0, "the train step's loss is @forward's loss");

    let mut failures = Vec::new();
    let mut max_rel: f64 = 0.0;
    let mut max_grad: f64 = 0.0;
    let mut probe = st.clone();
    for p in weights(m) {
        let name = &m.params[p].name;
        let g: Vec<f64> = st.values[p]
            .iter()
            .zip(&after.values[p])
            .map(|(w, w1)| w - w1)
            .collect();
        let n = g.len();
        let mut coords: Vec<usize> = if n <= samples {
            (0..n).collect()
        } else {
            (0..samples - 1)
                .map(|k| (k * n) / (samples - 1) + k % 3)
                .collect()
        };
        let biggest = (0..n)
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        coords.push(biggest);
        coords.sort();
        coords.dedup();
        for j in coords {
            let w = st.values[p][j];
            probe.values[p][j] = w + EPS;
            let lp = loss(&t, &probe, batch);
            probe.values[p][j] = w - EPS;
            let lm = loss(&t, &probe, batch);
            probe.values[p][j] = w;
            let num = (lp - lm) / (2.0 * EPS);
            let err = (g[j] - num).abs();
            let scale = g[j].abs().max(num.abs());
            max_grad = max_grad.max(scale);
            if scale > 0.0 {
                max_rel = max_rel.max(err / scale.max(ABS_TOL / REL_TOL));
            }
            if err > REL_TOL * scale + ABS_TOL {
                failures.push(format!("@{name}[{j}]: autodiff {} vs numeric {num}", g[j]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "gradient mismatches:\n{}",
        failures.join("\n")
    );
    assert!(
        max_grad > 1e-4,
        "the check is vacuous: every gradient is ~0"
    );
    max_rel
}

/// Per-op check: every weight and the input random in [-1, 1), all coordinates checked.
fn op_check(m: &Module, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut st = State::<f64>::initial(m);
    for v in &mut st.values {
        let n = v.len();
        *v = rng.vec(n, -1.0, 1.0);
    }
    let batch = Batch::random(m, &mut rng, -1.0, 1.0);
    grad_check(m, &st, &batch, usize::MAX);
}

const ARGS: &str = "%x: f32[2, 4], %labels: i32[2]";

#[test]
fn grad_matmul_all_four_transpositions() {
    // logits = op(A)·op(B) + x·Wᵀ, with A and B weights of the shapes each variant needs.
    for (op, a, b) in [
        ("matmul", "f32[2, 4]", "f32[4, 3]"),
        ("matmul_nt", "f32[2, 4]", "f32[3, 4]"),
        ("matmul_tn", "f32[4, 2]", "f32[4, 3]"),
        ("matmul_tt", "f32[4, 2]", "f32[3, 4]"),
    ] {
        let m = ir_module(
            &format!("a : {a}\nb : {b}\nw : f32[3, 4]"),
            ARGS,
            &format!(
                "a = param @a : {a}
                 b = param @b : {b}
                 ab = {op} %a, %b : f32[2, 3]
                 w = param @w : f32[3, 4]
                 xw = matmul_nt %x, %w : f32[2, 3]
                 z = add %ab, %xw : f32[2, 3]
                 l = softmax_xent %z, %labels : f32[]"
            ),
            "l",
            "z",
        );
        op_check(&m, 1);
    }
    // Both operands computed (the adjoint flows on through each rule).
    for op in ["matmul", "matmul_nt", "matmul_tn", "matmul_tt"] {
        let (ta, tb) = match op {
            "matmul" => (false, false),
            "matmul_nt" => (false, true),
            "matmul_tn" => (true, false),
            _ => (true, true),
        };
        // a = op(P)·… where P = tanh(x·Wᵀ) or its transpose-shaped analogue.
        let a_expr = if ta {
            "a = matmul_tn %wa, %xt : f32[4, 2]"
        } else {
            "a = matmul_tn %xt, %wa : f32[2, 4]"
        };
        let a_ty = if ta { "f32[4, 2]" } else { "f32[2, 4]" };
        let b_ty = if tb { "f32[3, 4]" } else { "f32[4, 3]" };
        let m = ir_module(
            &format!("wa : f32[4, 4]\nb : {b_ty}"),
            "%x: f32[4, 2], %labels: i32[2]",
            &format!(
                "wa = param @wa : f32[4, 4]
                 xt = tanh %x : f32[4, 2]
                 {a_expr}
                 ta = tanh %a : {a_ty}
                 b = param @b : {b_ty}
                 sb = sigmoid %b : {b_ty}
                 z = {op} %ta, %sb : f32[2, 3]
                 l = softmax_xent %z, %labels : f32[]"
            ),
            "l",
            "z",
        );
        op_check(&m, 2);
    }
}

#[test]
fn grad_bias_add_add_sub_mul_and_fan_out() {
    let m = ir_module(
        "w1 : f32[3, 4]\nw2 : f32[3, 4]\nw3 : f32[3, 4]\nb : f32[3]",
        ARGS,
        "w1 = param @w1 : f32[3, 4]
         h1 = matmul_nt %x, %w1 : f32[2, 3]
         w2 = param @w2 : f32[3, 4]
         h2 = matmul_nt %x, %w2 : f32[2, 3]
         w3 = param @w3 : f32[3, 4]
         h3 = matmul_nt %x, %w3 : f32[2, 3]
         p = mul %h1, %h2 : f32[2, 3]
         q = sub %p, %h3 : f32[2, 3]
         d = add %h1, %h1 : f32[2, 3]
         s = sub %q, %d : f32[2, 3]
         sq = mul %s, %s : f32[2, 3]
         b = param @b : f32[3]
         z = bias_add %sq, %b : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 3);
}

#[test]
fn grad_scale_by_constant_and_by_computed_scalar_and_reduce_sum() {
    let m = ir_module(
        "w : f32[3, 4]\nv : f32[2, 5]\nc : f32[2, 3, 2, 2]",
        ARGS,
        "w = param @w : f32[3, 4]
         h = matmul_nt %x, %w : f32[2, 3]
         k = const -0.75 : f32[]
         hk = scale %h, %k : f32[2, 3]
         v = param @v : f32[2, 5]
         tv = tanh %v : f32[2, 5]
         s = reduce_sum %tv {axes=[0, 1]} : f32[]
         hs = scale %hk, %s : f32[2, 3]
         c = param @c : f32[2, 3, 2, 2]
         cc = mul %c, %c : f32[2, 3, 2, 2]
         r = reduce_sum %cc {axes=[0, 2, 3]} : f32[3]
         z = bias_add %hs, %r : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 4);
    // A scalar weight scaling a scalar (reduce over no axes is skipped).
    let m = ir_module(
        "w : f32[3, 4]\ns : f32[]",
        ARGS,
        "w = param @w : f32[3, 4]
         h = matmul_nt %x, %w : f32[2, 3]
         l0 = softmax_xent %h, %labels : f32[]
         s = param @s : f32[]
         ss = scale %s, %s : f32[]
         l = scale %l0, %ss : f32[]",
        "l",
        "h",
    );
    op_check(&m, 5);
}

#[test]
fn grad_activations() {
    let m = ir_module(
        "w1 : f32[3, 4]\nw2 : f32[3, 4]\nw3 : f32[3, 4]",
        ARGS,
        "w1 = param @w1 : f32[3, 4]
         h1 = matmul_nt %x, %w1 : f32[2, 3]
         a1 = relu %h1 : f32[2, 3]
         w2 = param @w2 : f32[3, 4]
         h2 = matmul_nt %x, %w2 : f32[2, 3]
         a2 = tanh %h2 : f32[2, 3]
         w3 = param @w3 : f32[3, 4]
         h3 = matmul_nt %x, %w3 : f32[2, 3]
         a3 = sigmoid %h3 : f32[2, 3]
         s = add %a1, %a2 : f32[2, 3]
         t = mul %s, %a3 : f32[2, 3]
         z = add %t, %a1 : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 6);
}

#[test]
fn grad_conv_maxpool_reshape() {
    // Padding and a square kernel, then maxpool and a flatten.
    let m = ir_module(
        "k : f32[3, 1, 3, 3]\nkb : f32[3]\nw : f32[3, 12]",
        "%x: f32[2, 1, 5, 5], %labels: i32[2]",
        "k = param @k : f32[3, 1, 3, 3]
         c = conv2d %x, %k {stride=[1, 1], padding=[1, 1]} : f32[2, 3, 5, 5]
         kb = param @kb : f32[3]
         cb = bias_add %c, %kb : f32[2, 3, 5, 5]
         a = relu %cb : f32[2, 3, 5, 5]
         p = maxpool2d %a {kernel=[2, 2], stride=[2, 2]} : f32[2, 3, 2, 2]
         f = reshape %p : f32[2, 12]
         w = param @w : f32[3, 12]
         z = matmul_nt %f, %w : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 7);
    // Two convolutions (the second's input gradient), overlapping max windows.
    let m = ir_module(
        "k1 : f32[2, 2, 2, 2]\nk2 : f32[3, 2, 2, 2]\nw : f32[3, 12]",
        "%x: f32[2, 2, 5, 5], %labels: i32[2]",
        "k1 = param @k1 : f32[2, 2, 2, 2]
         c1 = conv2d %x, %k1 {stride=[1, 1], padding=[0, 0]} : f32[2, 2, 4, 4]
         p = maxpool2d %c1 {kernel=[2, 2], stride=[1, 1]} : f32[2, 2, 3, 3]
         k2 = param @k2 : f32[3, 2, 2, 2]
         c2 = conv2d %p, %k2 {stride=[1, 1], padding=[0, 0]} : f32[2, 3, 2, 2]
         f = reshape %c2 : f32[2, 12]
         w = param @w : f32[3, 12]
         z = matmul_nt %f, %w : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 8);
}

#[test]
fn grad_strided_padded_rectangular_conv_and_avgpool() {
    // Input 7 with stride 2 and padding 1: the `input` attribute resolves 7 vs 8.
    let m = ir_module(
        "k1 : f32[3, 2, 3, 2]\nk2 : f32[2, 3, 2, 3]\nb2 : f32[2]\nw : f32[3, 8]",
        "%x: f32[2, 2, 7, 6], %labels: i32[2]",
        "k1 = param @k1 : f32[3, 2, 3, 2]
         c1 = conv2d %x, %k1 {stride=[2, 1], padding=[1, 0]} : f32[2, 3, 4, 5]
         s1 = sigmoid %c1 : f32[2, 3, 4, 5]
         k2 = param @k2 : f32[2, 3, 2, 3]
         c2 = conv2d %s1, %k2 {stride=[1, 2], padding=[0, 1]} : f32[2, 2, 3, 3]
         b2 = param @b2 : f32[2]
         cb = bias_add %c2, %b2 : f32[2, 2, 3, 3]
         t = tanh %cb : f32[2, 2, 3, 3]
         p = avgpool2d %t {kernel=[2, 2], stride=[1, 1]} : f32[2, 2, 2, 2]
         f = reshape %p : f32[2, 8]
         w = param @w : f32[3, 8]
         z = matmul_nt %f, %w : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 9);
}

#[test]
fn grad_weight_read_twice_and_residual() {
    let m = ir_module(
        "w : f32[4, 4]\nv : f32[3, 4]",
        ARGS,
        "w = param @w : f32[4, 4]
         h = matmul_nt %x, %w : f32[2, 4]
         a = tanh %h : f32[2, 4]
         w2 = param @w : f32[4, 4]
         g = matmul_nt %a, %w2 : f32[2, 4]
         r = add %g, %a : f32[2, 4]
         v = param @v : f32[3, 4]
         z = matmul_nt %r, %v : f32[2, 3]
         l = softmax_xent %z, %labels : f32[]",
        "l",
        "z",
    );
    op_check(&m, 10);
}

/// Whole examples on a batch of 3, weights as initialised (biases zero), inputs in [0, 1).
fn example_check(name: &str, samples: usize) {
    let mut m = lower(&example(name), Some(3));
    // The gradient of the dense step is checked: Dropback's tracked storage (whose stores keep
    // at most k values) would reject the undropped SGD update.
    for p in &mut m.params {
        p.storage = sparsec_ir::Storage::Dense;
    }
    let st = State::<f64>::initial(&m);
    let mut rng = Rng::new(11);
    let batch = Batch::random(&m, &mut rng, 0.0, 1.0);
    let max_rel = grad_check(&m, &st, &batch, samples);
    eprintln!("{name}: largest relative gradient error {max_rel:e}");
}

#[test]
fn grad_whole_lenet300() {
    example_check("lenet300", 8);
}

#[test]
fn grad_whole_lenet5() {
    example_check("lenet5", 6);
}

#[test]
fn grad_whole_resnet_tiny() {
    example_check("resnet_tiny", 6);
}

// ---------------------------------------------------------------------------------------------
// (c) The SGD update against PyTorch's formula
// ---------------------------------------------------------------------------------------------

/// `torch.optim.SGD.step` for one parameter (dampening 0), as PyTorch writes it:
/// `d_p = g + λ·p; buf = d_p (first step) else μ·buf + d_p; d_p = nesterov ? d_p + μ·buf : buf;
/// p = p − lr·d_p`.
#[allow(clippy::too_many_arguments)]
fn torch_sgd(
    p: &mut [f64],
    grad: &[f64],
    buf: &mut Option<Vec<f64>>,
    lr: f64,
    mu: f64,
    wd: f64,
    nesterov: bool,
) {
    let mut d: Vec<f64> = grad.iter().zip(p.iter()).map(|(g, w)| g + wd * w).collect();
    if wd == 0.0 {
        d = grad.to_vec();
    }
    if mu != 0.0 {
        let b = match buf.take() {
            None => d.clone(),
            Some(b) => b.iter().zip(&d).map(|(b, d)| mu * b + d).collect(),
        };
        d = if nesterov {
            d.iter().zip(&b).map(|(d, b)| d + mu * b).collect()
        } else {
            b.clone()
        };
        *buf = Some(b);
    }
    for (w, d) in p.iter_mut().zip(&d) {
        *w -= lr * d;
    }
}

#[test]
fn sgd_matches_pytorch_for_two_steps() {
    let base = ir_module(
        "w : f32[3, 4]\nb : f32[3]",
        ARGS,
        "w = param @w : f32[3, 4]  loc(fc)
         y = matmul_nt %x, %w : f32[2, 3]  loc(fc)
         b = param @b : f32[3]  loc(fc)
         z = bias_add %y, %b : f32[2, 3]  loc(fc)
         l = softmax_xent %z, %labels : f32[]  loc(loss)",
        "l",
        "z",
    );
    let grad_step = build_train_step(&plain_sgd(&base)).unwrap();
    // The constants are f32 in the IR: the hand computation uses the same rounded values.
    let f = |v: f64| v as f32 as f64;
    for (mu, wd, nesterov) in [
        (0.9, 0.0, false),
        (0.9, 5e-4, true),
        (0.0, 1e-2, false),
        (0.5, 0.1, false),
        (0.7, 0.0, true),
    ] {
        let m = with_optimizer(&base, 0.1, mu, wd, nesterov);
        let t = build_train_step(&m).unwrap();
        check_structure(&m, &t);
        let mut rng = Rng::new(21);
        let mut st = State::<f64>::initial(&t);
        for i in weights(&t) {
            let n = st.values[i].len();
            st.values[i] = rng.vec(n, -1.0, 1.0);
        }
        let mut hand: Vec<Vec<f64>> = weights(&t).iter().map(|&i| st.values[i].clone()).collect();
        let mut bufs: Vec<Option<Vec<f64>>> = vec![None; hand.len()];
        for (k, lr) in [(0, 0.1), (1, 0.05)] {
            let batch = Batch::random(&t, &mut rng, -1.0, 1.0);
            // The gradient at the current weights (checked against finite differences above).
            let mut g_state = State::<f64>::dense(hand.clone());
            step(&grad_step, &mut g_state, &batch, 1.0);
            for (i, p) in hand.iter_mut().enumerate() {
                let g: Vec<f64> = p
                    .iter()
                    .zip(&g_state.values[i])
                    .map(|(a, b)| a - b)
                    .collect();
                torch_sgd(p, &g, &mut bufs[i], lr, f(mu), f(wd), nesterov);
            }
            step(&t, &mut st, &batch, lr);
            for (i, &p) in weights(&t).iter().enumerate() {
                for (j, (&got, &want)) in st.values[p].iter().zip(&hand[i]).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                        "μ={mu} λ={wd} nesterov={nesterov} step {k}: @{}[{j}] = {got}, PyTorch gives {want}",
                        t.params[p].name
                    );
                }
                if let Some(b) = &bufs[i] {
                    let bi = t
                        .params
                        .iter()
                        .position(|q| q.role == Role::Momentum(ParamId(p as u32)))
                        .expect("buffer");
                    for (got, want) in st.values[bi].iter().zip(b) {
                        assert!((got - want).abs() <= 1e-13 * want.abs().max(1.0));
                    }
                }
            }
        }
    }
}
