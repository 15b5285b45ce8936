//! PruneTrain (docs/methods.md §4, PT-1 invariants): λ gives the penalty its share of the loss at
//! step 0 against an independent group-lasso sum; the liveness analysis finds exactly the dead
//! channels (union over every edge: flatten blocks, a residual add), and removing them changes
//! the logits by less than 1e-3 relative; training reconfigures, resumes across a
//! reconfiguration on the same bits, and the JIT ends where the interpreter does.

use std::path::{Path, PathBuf};

mod run_dir;

use run_dir::{fresh_dir, metrics_lines as lines, write_file as write};
use sparsec::driver::{compile_module, program_from_source, CompileOptions, Program};
use sparsec::runner::{Backend, Runner};
use sparsec_ir::func_names::FORWARD;
use sparsec_ir::interp::{Input, Output, State};
use sparsec_ir::remap::remap_state;
use sparsec_ir::{Module, Stage};
use sparsec_passes::methods::prunetrain::liveness::liveness;
use sparsec_passes::structural::units::{RemoveUnits, RemoveUnitsEach};
use sparsec_passes::structural::StructuralPass;

/// A small conv net: conv → relu → pool → conv → relu → flatten → dense → relu → dense.
fn convnet(method: &str) -> String {
    format!(
        "model cnn {{
    input x: [1, 8, 8]
    c1 = conv2d(x, 6, kernel: 3)
    r1 = relu(c1)
    p1 = maxpool2d(r1, kernel: 2)
    c2 = conv2d(p1, 8, kernel: 2)
    r2 = relu(c2)
    flat = flatten(r2)
    fc1 = dense(flat, 12)
    h1 = relu(fc1)
    out = dense(h1, 4)
    loss softmax_cross_entropy(out)
}}
data synthetic {{ train_samples: 96, test_samples: 32, seed: 4 }}
train {{ epochs: 4, batch: 8, seed: 3, optimizer: sgd(lr: 0.1, momentum: 0.9, weight_decay: 5e-4) }}
{method}
"
    )
}

/// Two convolutions tied by a residual add, both feeding the add through relus.
const RESIDUAL: &str = "model res {
    input x: [2, 6, 6]
    a  = conv2d(x, 6, kernel: 3, padding: 1)
    ra = relu(a)
    b  = conv2d(ra, 6, kernel: 3, padding: 1)
    rb = relu(b)
    s  = add(ra, rb)
    flat = flatten(s)
    out = dense(flat, 3)
    loss softmax_cross_entropy(out)
}
data synthetic { train_samples: 32, test_samples: 16, seed: 9 }
train { epochs: 1, batch: 8, optimizer: sgd(lr: 0.05, momentum: 0.9) }
method prunetrain { ratio: 0.2, interval: 1 }
";

fn program(source: &str) -> Program {
    let Ok(p) = program_from_source("t.net", source.to_owned(), false, &[]) else {
        panic!("compiles:\n{source}")
    };
    p
}

fn opt(program: &Program, ir: Module) -> Module {
    let Ok(m) = compile_module(
        program,
        ir,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    ) else {
        panic!("optimises")
    };
    m
}

fn train_run(
    dir: &Path,
    file: Option<PathBuf>,
    resume: bool,
    sets: &[(&str, &str)],
    backend: Backend,
) {
    run_dir::train_in(dir, file, resume, sets, backend, Vec::new());
}

/// The logits of `@forward` on a fixed batch.
fn logits(m: &Module, state: &State<f32>) -> Vec<f32> {
    let f = m.func(FORWARD).unwrap();
    let shape = &f.args[0].ty.shape;
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 29 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let labels = vec![0i32; shape[0]];
    let mut runner = Runner::new(m, FORWARD, Backend::Interp, Some(1)).unwrap();
    let mut st = state.clone();
    let out = runner
        .run(&mut st, &[Input::Float(&x), Input::Int(&labels)])
        .unwrap();
    let Output::Float(t) = &out[1] else {
        panic!("logits")
    };
    t.data.clone()
}

/// Set every weight group that carries unit `unit` of `layer` to `value` (the producer's rows
/// and the consumers' columns or channel blocks).
fn set_unit(ir: &Module, m: &Module, state: &mut State<f32>, layer: &str, unit: usize, value: f32) {
    let group = sparsec_passes::structural::units::unit_group(ir, layer).unwrap();
    for (id, axis, block) in group.params {
        let p = ir.param(id);
        if !p.name.ends_with(".weight") {
            continue;
        }
        let shape = p.ty.shape.clone();
        let inner: usize = shape[axis + 1..].iter().product();
        let at = m.param_by_name(&p.name).unwrap().0 as usize;
        for (i, w) in state.values[at].iter_mut().enumerate() {
            if (i / inner) % shape[axis] / block == unit {
                *w = value * if i % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
    }
}

#[test]
fn lambda_gives_the_penalty_its_ratio_at_step_0() {
    let scratch = fresh_dir("pt-lambda");
    let model = write(
        &scratch,
        "cnn.net",
        &convnet("method prunetrain { ratio: 0.3, interval: 2 }"),
    );
    let run = scratch.join("run");
    train_run(
        &run,
        Some(model),
        false,
        &[("max_steps", "0")],
        Backend::Jit,
    );
    let probe = &lines(&run, "method")[0];
    let (lambda, ce, gl) = (
        probe["lambda"].as_f64().unwrap(),
        probe["ce"].as_f64().unwrap(),
        probe["group_lasso"].as_f64().unwrap(),
    );
    assert!(
        (lambda * gl / (ce + lambda * gl) - 0.3).abs() < 1e-9,
        "{probe}"
    );
    // GL recomputed here from the initial weights, group by group (docs/methods.md §4).
    let p = program(&convnet(""));
    let m = opt(&p, p.module.clone());
    let st = State::<f32>::initial(&m);
    let w = |n: &str| {
        let id = m.param_by_name(n).unwrap();
        (
            st.values[id.0 as usize].clone(),
            m.param(id).ty.shape.clone(),
        )
    };
    let norms = |(v, shape): (Vec<f32>, Vec<usize>), axis: usize| -> f64 {
        let inner: usize = shape[axis + 1..].iter().product();
        let mut sums = vec![0f64; shape[axis]];
        for (i, x) in v.iter().enumerate() {
            sums[(i / inner) % shape[axis]] += f64::from(*x) * f64::from(*x);
        }
        sums.iter().map(|s| (s + 1e-8).sqrt()).sum()
    };
    let want = norms(w("c1.weight"), 0)
        + norms(w("c2.weight"), 1)
        + norms(w("c2.weight"), 0)
        + norms(w("fc1.weight"), 1)
        + norms(w("fc1.weight"), 0)
        + norms(w("out.weight"), 1);
    assert!((gl - want).abs() < 1e-4 * want, "GL {gl} vs {want}");
    // λ is in the program the initial checkpoint records, so a resume never recalibrates.
    let Ok(ir) = sparsec::standalone::model_file(&run) else {
        panic!("the run's model file")
    };
    assert!(!ir.contains("method prunetrain"));
    let meta =
        sparsec::checkpoint::read_train_meta(&sparsec::checkpoint::latest(&run).unwrap()).unwrap();
    assert!(
        meta.program
            .unwrap()
            .contains(&format!("lambda={lambda:?}")),
        "λ in the checkpoint's program"
    );
}

#[test]
fn only_dead_channels_go_and_the_logits_barely_move() {
    for (source, layer, dead) in [
        (
            convnet("method prunetrain { ratio: 0.2 }"),
            "c1",
            vec![1, 4],
        ),
        (
            convnet("method prunetrain { ratio: 0.2 }"),
            "c2",
            vec![0, 5, 7],
        ),
        (convnet("method prunetrain { ratio: 0.2 }"), "fc1", vec![2]),
        (RESIDUAL.to_owned(), "a", vec![3]),
    ] {
        let p = program(&source);
        let ir = p.module.clone();
        let m = opt(&p, ir.clone());
        let mut st = State::<f32>::initial(&m);
        for &u in &dead {
            set_unit(&ir, &m, &mut st, layer, u, 1e-5);
        }
        // A unit that only its producer zeroes is live through its consumers: not removed.
        let values = |n: &str| {
            m.param_by_name(n)
                .map(|id| st.values[id.0 as usize].as_slice())
        };
        let live = liveness(&ir, layer, values, 1e-4).unwrap();
        assert_eq!(
            live.dead, dead,
            "{layer}: exactly the zeroed units are dead"
        );
        let (small, remap) = RemoveUnitsEach(vec![RemoveUnits {
            layer: layer.into(),
            units: live.dead.clone(),
        }])
        .run(&ir)
        .unwrap();
        let small_opt = opt(&p, small);
        let carried = remap_state(&m, &small_opt, &st, &remap).unwrap();
        let (before, after) = (logits(&m, &st), logits(&small_opt, &carried));
        let scale = before.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() <= 1e-3 * scale, "{layer}: {a} vs {b}");
        }
    }
}

#[test]
fn training_reconfigures_resumes_exactly_and_the_jit_matches_the_interpreter() {
    let scratch = fresh_dir("pt-train");
    // A threshold this large kills channels within a few epochs of this tiny run.
    let model = write(
        &scratch,
        "cnn.net",
        &convnet("method prunetrain { ratio: 0.5, interval: 1, threshold: 0.01 }"),
    );
    let whole = scratch.join("whole");
    train_run(&whole, Some(model.clone()), false, &[], Backend::Jit);
    let reconfigured = lines(&whole, "reconfigure");
    assert!(
        reconfigured
            .iter()
            .any(|l| !l["shapes"].as_object().unwrap().is_empty()),
        "some channels died: {reconfigured:?}"
    );
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    // Stopped mid-epoch after a reconfiguration (12 steps an epoch), then resumed.
    let cut = scratch.join("cut");
    train_run(
        &cut,
        Some(model.clone()),
        false,
        &[("max_steps", "40")],
        Backend::Jit,
    );
    train_run(&cut, None, true, &[], Backend::Jit);
    assert_eq!(
        bytes(&whole),
        bytes(&cut),
        "resumed across a reconfiguration"
    );
    let interp = scratch.join("interp");
    train_run(&interp, Some(model), false, &[], Backend::Interp);
    assert_eq!(
        bytes(&whole),
        bytes(&interp),
        "JIT and interpreter, before and after"
    );
    // The widths in the last method line are the shapes of model.safetensors.
    let st_bytes = bytes(&whole);
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let widths = lines(&whole, "method")
        .into_iter()
        .rfind(|l| l.get("widths").is_some())
        .unwrap()["widths"]
        .clone();
    for layer in ["c1", "c2", "fc1"] {
        let rows = st.tensor(&format!("{layer}.weight")).unwrap().shape()[0];
        assert!(rows as u64 <= widths[layer].as_u64().unwrap(), "{layer}");
    }
    // The report prints the liveness analysis of the final weights, layer by layer.
    let Ok(report) = sparsec::report::build(&whole) else {
        panic!("report")
    };
    let layers: Vec<&str> = report.liveness.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(layers, ["c1", "c2", "fc1"]);
    for l in &report.liveness {
        let rows = st.tensor(&format!("{}.weight", l.layer)).unwrap().shape()[0];
        assert_eq!(l.width, rows, "{}", l.layer);
        assert!(l.largest_dead_max_abs.is_none_or(|m| m < 0.01));
    }
    assert!(report.table().contains("dead channels now"));
    // The run knows its model: `sparsec eval --weights RUN_DIR` needs no model file, and scores
    // what the run reported.
    let Ok(eval) = sparsec::train::eval(None, &whole, None, Backend::Interp, Some(1)) else {
        panic!("eval of the run without its model file")
    };
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap())
            .unwrap();
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        eval.contains(&format!("test accuracy {:.2}%", 100.0 * accuracy)),
        "{eval}"
    );
    let weights_only = whole.join("model.safetensors");
    assert!(
        sparsec::train::eval(None, &weights_only, None, Backend::Interp, Some(1)).is_err(),
        "a bare weights file needs its model file"
    );
}

#[test]
fn a_layer_left_without_channels_stops_the_run_with_its_name() {
    let scratch = fresh_dir("pt-empty");
    let model = write(
        &scratch,
        "cnn.net",
        &convnet("method prunetrain { ratio: 0.5, interval: 1, threshold: 0.08 }"),
    );
    let run = scratch.join("run");
    let out = run_dir::sparsec(&[
        "train",
        model.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("every channel of `c1` is dead") && stderr.contains("leave `c1` out"),
        "{stderr}"
    );
    // What was written before stays: the checkpoints of the epochs that finished.
    assert!(sparsec::checkpoint::latest(&run).is_ok());
}

#[test]
fn a_dump_past_stage_ir_is_refused_by_a_method_that_reconfigures() {
    let scratch = fresh_dir("pt-dump");
    let out = run_dir::sparsec(&["emit", "--stage", "train", "examples/lenet5_prunetrain.net"]);
    assert_eq!(out.status.code(), Some(0));
    let dump = write(&scratch, "pt.ir", &String::from_utf8_lossy(&out.stdout));
    let run = scratch.join("run");
    let out = run_dir::sparsec(&[
        "train",
        dump.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stage train") && stderr.contains("changes the program"),
        "{stderr}"
    );
    assert!(!run.exists(), "nothing written");
}
