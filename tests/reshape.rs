//! Shapes that change mid-training: a structural pass removes units, the program is recompiled
//! from stage `ir`, and weights and momentum are carried over through the pass's remap. The
//! claim tested: training then continues bit for bit as a fresh run of the smaller network,
//! started from the sliced weights and momentum, would. Also the unit groups the pass follows
//! (flatten blocks, residual adds) and the training loop's reconfiguration with resume.

use std::path::{Path, PathBuf};

mod run_dir;

use run_dir::fresh_dir;
use sparsec::driver::{self, compile_module, compile_to, program_from_source, CompileOptions};
use sparsec::methods::{EpochEnd, Reconfiguration, RunMethod};
use sparsec::runner::{Backend, Runner};
use sparsec::train;
use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Input, State};
use sparsec_ir::remap::remap_state;
use sparsec_ir::{Module, Stage};
use sparsec_passes::structural::units::{unit_group, RemoveUnits};
use sparsec_passes::structural::StructuralPass;

/// The values of the smaller network's parameter `name` from the bigger one's.
type Slicer<'a> = dyn Fn(&str, &[f32], &[usize]) -> Vec<f32> + 'a;

/// An MLP whose first hidden layer has `w1` units.
fn mlp(w1: usize) -> String {
    format!(
        "model mlp {{
    input x: [1, 8, 8]
    flat = flatten(x)
    fc1 = dense(flat, 64 -> {w1})
    h1 = relu(fc1)
    fc2 = dense(h1, 16)
    h2 = relu(fc2)
    fc3 = dense(h2, 10)
    loss softmax_cross_entropy(fc3)
}}
data synthetic {{ train_samples: 96, test_samples: 32, seed: 3 }}
train {{
    epochs: 3
    batch: 16
    seed: 5
    optimizer: sgd(lr: 0.1, momentum: 0.9, weight_decay: 0.0001, nesterov: true)
}}
"
    )
}

/// A small conv net whose second convolution has `c2` channels.
fn convnet(c2: usize) -> String {
    format!(
        "model convnet {{
    input x: [1, 10, 10]
    conv1 = conv2d(x, 4, kernel: 3)
    a1 = relu(conv1)
    pool = maxpool2d(a1, kernel: 2)
    conv2 = conv2d(pool, {c2}, kernel: 3, padding: 1)
    a2 = relu(conv2)
    flat = flatten(a2)
    fc = dense(flat, 10)
    loss softmax_cross_entropy(fc)
}}
data synthetic {{ train_samples: 96, test_samples: 32, seed: 3 }}
train {{
    epochs: 3
    batch: 8
    seed: 2
    optimizer: sgd(lr: 0.05, momentum: 0.9)
}}
"
    )
}

fn opt_module(source: &str) -> (driver::Program, Module) {
    let program = program_from_source("t.net", source.to_owned(), false, &[])
        .unwrap_or_else(|_| panic!("compiles:\n{source}"));
    let module = compile_to(
        &program,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    )
    .unwrap_or_else(|_| panic!("optimises"));
    (program, module)
}

/// A deterministic batch for step `step`: inputs in [-1, 1), labels below `classes`.
fn batch(step: u64, inputs: usize, batch: usize, classes: i32) -> (Vec<f32>, Vec<i32>) {
    let mut x = (step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let images = (0..inputs * batch)
        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let labels = (0..batch)
        .map(|_| (next() % classes as u64) as i32)
        .collect();
    (images, labels)
}

/// `steps` steps of `@train_step` from step `first` on, returning the losses' bits.
fn run_steps(module: &Module, state: &mut State<f32>, first: u64, steps: u64) -> Vec<u32> {
    let mut runner = Runner::new(module, TRAIN_STEP, Backend::Jit, Some(2)).expect("compiles");
    let f = module.func(TRAIN_STEP).unwrap();
    let x = &f.args[0].ty.shape;
    let (n, inputs) = (x[0], x[1..].iter().product::<usize>());
    (first..first + steps)
        .map(|step| {
            let (images, labels) = batch(step, inputs, n, 10);
            let out = runner
                .run(
                    state,
                    &[
                        Input::Float(&images),
                        Input::Int(&labels),
                        Input::Float(&[0.05]),
                    ],
                )
                .expect("a step runs");
            out[0].as_float().unwrap().data[0].to_bits()
        })
        .collect()
}

/// Row-major slice of `values` (shape `shape`) keeping, along `axis`, the indices `keep` says.
fn slice(values: &[f32], shape: &[usize], axis: usize, keep: impl Fn(usize) -> bool) -> Vec<f32> {
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    values
        .chunks(inner)
        .enumerate()
        .filter(|(i, _)| keep(i % n))
        .flat_map(|(_, c)| c.iter().copied())
        .collect()
}

/// Trains `steps_before` steps of `big`, removes `units` of `layer`, trains `steps_after` more;
/// and trains `small` (the same network at its reduced width) from `slices` of the state
/// reached after `steps_before`. Both must end with the same bits.
fn continues_as_fresh(big: &str, small: &str, layer: &str, units: &[usize], slices: &Slicer<'_>) {
    let (program, before) = opt_module(big);
    let mut state = State::<f32>::initial(&before);
    run_steps(&before, &mut state, 0, 3);

    let pass = RemoveUnits {
        layer: layer.into(),
        units: units.to_vec(),
    };
    let (ir, remap) = pass.run(&program.module).expect("units removed");
    let after = compile_module(
        &program,
        ir,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    )
    .unwrap_or_else(|_| panic!("recompiles"));
    let mut carried = remap_state(&before, &after, &state, &remap).expect("state carried over");
    let losses = run_steps(&after, &mut carried, 3, 4);

    let (_, fresh) = opt_module(small);
    let shapes = |m: &Module| -> Vec<(String, Vec<usize>)> {
        m.params
            .iter()
            .map(|p| (p.name.clone(), p.ty.shape.clone()))
            .collect()
    };
    assert_eq!(shapes(&after), shapes(&fresh), "the same network");
    let mut sliced = State::<f32>::initial(&fresh);
    for (i, p) in before.params.iter().enumerate() {
        sliced.values[i] = slices(&p.name, &state.values[i], &p.ty.shape);
    }
    let fresh_losses = run_steps(&fresh, &mut sliced, 3, 4);
    assert_eq!(losses, fresh_losses, "the losses after the change");
    for (i, p) in fresh.params.iter().enumerate() {
        let same = carried.values[i]
            .iter()
            .zip(&sliced.values[i])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "@{} differs from the fresh run's", p.name);
    }
}

#[test]
fn removing_dense_units_continues_as_a_fresh_smaller_run() {
    let removed = [0usize, 5, 23];
    let keep = |u: usize| !removed.contains(&u);
    continues_as_fresh(
        &mlp(24),
        &mlp(21),
        "fc1",
        &removed,
        &|name, values, shape| {
            let weight = name.trim_end_matches(".momentum");
            match weight {
                "fc1.weight" | "fc1.bias" => slice(values, shape, 0, keep),
                "fc2.weight" => slice(values, shape, 1, keep),
                _ => values.to_vec(),
            }
        },
    );
}

#[test]
fn removing_conv_channels_slices_the_flattened_consumer_in_blocks() {
    // conv2's output is [6, 4, 4]: channel c is features [16c, 16c + 16) of `flat`.
    let removed = [1usize, 4];
    continues_as_fresh(
        &convnet(6),
        &convnet(4),
        "conv2",
        &removed,
        &|name, values, shape| match name.trim_end_matches(".momentum") {
            "conv2.weight" | "conv2.bias" => slice(values, shape, 0, |c| !removed.contains(&c)),
            "fc.weight" => slice(values, shape, 1, |f| !removed.contains(&(f / 16))),
            _ => values.to_vec(),
        },
    );
}

#[test]
fn a_residual_add_ties_every_layer_meeting_there() {
    let source = std::fs::read_to_string("examples/resnet_tiny.net").unwrap();
    let program = program_from_source("resnet_tiny.net", source, false, &[]).unwrap_or_else(|_| {
        panic!("compiles");
    });
    let m = &program.module;
    let names = |layer: &str| -> Vec<(String, usize, usize)> {
        let group = unit_group(m, layer).expect("a group");
        group
            .params
            .iter()
            .map(|&(p, axis, block)| (m.param(p).name.clone(), axis, block))
            .collect()
    };
    let stem = names("stem");
    let expected: Vec<(String, usize, usize)> = [
        ("stem.weight", 0, 1),
        ("stem.bias", 0, 1),
        ("c1.weight", 1, 1),
        ("c2.weight", 0, 1),
        ("down.weight", 1, 1),
    ]
    .iter()
    .map(|&(n, a, b)| (n.to_owned(), a, b))
    .collect();
    let mut sorted = stem.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want);
    // c2 meets stem at the add: the same group, found from either side.
    assert_eq!(names("c2"), stem);
    // down's channels cross the flatten into head's columns in blocks of 2·2.
    assert!(names("down").contains(&("head.weight".to_owned(), 1, 4)));
    // The classifier's outputs are never removed; tracked weights cannot lose units.
    let err = unit_group(m, "head").unwrap_err();
    assert!(err.contains("classifier"), "{err}");
    let err = RemoveUnits {
        layer: "stem".into(),
        units: vec![1],
    }
    .run(m)
    .unwrap_err();
    assert!(err.contains("not stored densely"), "{err}");
    let err = RemoveUnits {
        layer: "nope".into(),
        units: vec![1],
    }
    .run(m)
    .unwrap_err();
    assert!(err.contains("not a layer"), "{err}");
}

/// Removes fc1's units 0, 5 and 23 after the first epoch.
struct RemoveAfterFirstEpoch;

impl RunMethod for RemoveAfterFirstEpoch {
    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        Ok((end.epoch == 0).then(|| Reconfiguration {
            pass: Box::new(RemoveUnits {
                layer: "fc1".into(),
                units: vec![0, 5, 23],
            }),
        }))
    }
}

fn train_run(dir: &Path, file: Option<PathBuf>, resume: bool, sets: &[(&str, &str)]) {
    let hooks: Vec<Box<dyn RunMethod>> = vec![Box::new(RemoveAfterFirstEpoch)];
    run_dir::train_in(dir, file, resume, sets, Backend::Jit, hooks);
}

#[test]
fn the_training_loop_reconfigures_and_resumes_after_it() {
    let scratch = fresh_dir("reshape-loop");
    std::fs::create_dir_all(&scratch).unwrap();
    let model = scratch.join("mlp.net");
    std::fs::write(&model, mlp(24)).unwrap();

    let whole = scratch.join("whole");
    train_run(&whole, Some(model.clone()), false, &[]);
    // Interrupted in the second epoch (6 steps an epoch), after the change, then resumed.
    let cut = scratch.join("cut");
    train_run(&cut, Some(model.clone()), false, &[("max_steps", "8")]);
    train_run(&cut, None, true, &[]);

    let bytes = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(
        bytes(&whole),
        bytes(&cut),
        "the resumed run ends with the same weights"
    );
    let weights = safetensors::SafeTensors::deserialize(&bytes(&whole))
        .unwrap()
        .tensor("fc1.weight")
        .unwrap()
        .shape()
        .to_vec();
    assert_eq!(
        weights,
        vec![21, 64],
        "model.safetensors holds the shapes as they are"
    );
    let metrics = std::fs::read_to_string(whole.join("metrics.jsonl")).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.contains("\"reconfigure\""))
        .expect("a reconfigure line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["shapes"]["fc1.weight"], serde_json::json!([21, 64]));
    assert_eq!(v["shapes"]["fc2.weight"], serde_json::json!([16, 21]));
    // Evaluation and the report read the run at the shapes it has now.
    let eval = train::eval(Some(&model), &whole, None, Backend::Interp, Some(1))
        .unwrap_or_else(|_| panic!("eval of the reshaped run"));
    assert!(eval.contains("test accuracy"), "{eval}");
    let report = sparsec::report::build(&whole)
        .unwrap_or_else(|_| panic!("report"))
        .table();
    assert!(report.contains("fc1"), "{report}");
}
