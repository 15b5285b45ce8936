//! Activation-density shrinking (docs/methods.md §2, AD-1): the statistics the compiled step
//! returns against an independent count, the resize rule, widths that never grow, shapes that
//! check after every resize (flatten blocks, a residual add), the accounting in summary.json,
//! and a run resumed across a resize (and mid-epoch, with its counts half gathered) that ends on
//! the same bits.

use std::path::{Path, PathBuf};

mod run_dir;

use run_dir::{fresh_dir, metrics_lines as lines, write_file as write};
use serde_json::Value as Json;
use sparsec::driver::{compile_to, program_from_source, CompileOptions};
use sparsec::runner::{Backend, Runner};
use sparsec::train;
use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Input, Output, State};
use sparsec_ir::Stage;

/// An MLP on synthetic 8×8 inputs whose hidden layers shrink at `resize_at`.
fn mlp(resize_at: &str, method: bool) -> String {
    let method = if method {
        format!("method activation_density {{ resize_at: [{resize_at}], min_width: 2 }}")
    } else {
        String::new()
    };
    format!(
        "model mlp {{
    input x: [1, 8, 8]
    flat = flatten(x)
    fc1 = dense(flat, 24)
    h1 = relu(fc1)
    fc2 = dense(h1, 16)
    h2 = relu(fc2)
    fc3 = dense(h2, 4)
    loss softmax_cross_entropy(fc3)
}}
data synthetic {{ train_samples: 96, test_samples: 32, seed: 3 }}
train {{ epochs: 3, batch: 8, seed: 5, optimizer: sgd(lr: 0.1, momentum: 0.9) }}
{method}
"
    )
}

/// Two convolutions whose outputs feed relus and meet at a residual add, then a flatten into a
/// dense layer: one unit group for both convolutions, blocks of H·W after the flatten.
const RESIDUAL: &str = "model res {
    input x: [2, 6, 6]
    a  = conv2d(x, 6, kernel: 3, padding: 1)
    ra = relu(a)
    b  = conv2d(ra, 6, kernel: 3, padding: 1)
    rb = relu(b)
    s  = add(ra, rb)
    p  = maxpool2d(s, kernel: 2)
    flat = flatten(p)
    fc = dense(flat, 8)
    h  = relu(fc)
    out = dense(h, 3)
    loss softmax_cross_entropy(out)
}
data synthetic { train_samples: 64, test_samples: 16, seed: 9 }
train { epochs: 2, batch: 8, seed: 2, optimizer: sgd(lr: 0.05, momentum: 0.9) }
method activation_density { resize_at: [1], min_width: 1 }
";

fn train_run(dir: &Path, file: Option<PathBuf>, resume: bool, sets: &[(&str, &str)]) {
    run_dir::train_in(dir, file, resume, sets, Backend::Jit, Vec::new());
}

fn summary(dir: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn shapes(dir: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn the_step_counts_the_positive_pre_activations_of_every_unit() {
    let Ok(program) = program_from_source("mlp.net", mlp("1", true), false, &[]) else {
        panic!("the model compiles")
    };
    let Ok(module) = compile_to(
        &program,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    ) else {
        panic!("the model optimises")
    };
    let (batch, inputs) = (8, 64);
    let x: Vec<f32> = (0..batch * inputs)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 4).collect();
    let initial = State::<f32>::initial(&module);
    // fc1's pre-activations, computed here from the initial weights.
    let w = &initial.values[module.param_by_name("fc1.weight").unwrap().0 as usize];
    let b = &initial.values[module.param_by_name("fc1.bias").unwrap().0 as usize];
    let mut expected = vec![0f32; 24];
    for row in x.chunks(inputs) {
        for (u, count) in expected.iter_mut().enumerate() {
            let pre: f32 = row
                .iter()
                .zip(&w[u * inputs..(u + 1) * inputs])
                .map(|(a, b)| a * b)
                .sum::<f32>()
                + b[u];
            *count += f32::from(pre > 0.0);
        }
    }
    let mut counts = Vec::new();
    for backend in [Backend::Interp, Backend::Jit] {
        let mut runner = Runner::new(&module, TRAIN_STEP, backend, Some(1)).unwrap();
        let mut state = initial.clone();
        let out = runner
            .run(
                &mut state,
                &[Input::Float(&x), Input::Int(&labels), Input::Float(&[0.1])],
            )
            .unwrap();
        assert_eq!(
            out.len(),
            4,
            "(loss, logits) and one count per selected layer"
        );
        let Output::Float(fc1) = &out[2] else {
            panic!("f32 counts")
        };
        assert_eq!(fc1.shape, vec![24]);
        assert_eq!(fc1.data, expected, "{backend:?}: fc1's counts");
        let Output::Float(fc2) = &out[3] else {
            panic!("f32 counts")
        };
        assert!(fc2.data.iter().all(|&c| (0.0..=8.0).contains(&c)));
        counts.push((fc1.data.clone(), fc2.data.clone()));
    }
    assert_eq!(
        counts[0], counts[1],
        "the JIT counts as the interpreter does"
    );
}

#[test]
fn resizes_follow_the_rule_never_grow_and_resume_exactly() {
    let scratch = fresh_dir("ad-mlp");
    let model = write(&scratch, "mlp.net", &mlp("1, 2", true));
    let dense = write(&scratch, "dense.net", &mlp("1, 2", false));
    let whole = scratch.join("whole");
    train_run(&whole, Some(model.clone()), false, &[]);

    let mut widths = serde_json::json!({"fc1": 24, "fc2": 16});
    let method = lines(&whole, "method");
    assert_eq!(method.len(), 3, "one line per epoch");
    for line in &method {
        let density = &line["density"];
        for layer in ["fc1", "fc2"] {
            let ad = density[layer].as_f64().unwrap();
            assert!(ad > 0.0 && ad <= 1.0, "0 < AD <= 1: {line}");
        }
        if line["resize"] != true {
            continue;
        }
        for layer in ["fc1", "fc2"] {
            let before = widths[layer].as_u64().unwrap();
            let ad = density[layer].as_f64().unwrap();
            let want = ((ad * before as f64 - 1e-9).ceil() as u64)
                .max(2)
                .min(before);
            assert_eq!(line["widths"][layer], want, "{layer}: {line}");
            widths[layer] = line["widths"][layer].clone();
        }
    }
    let (w1, w2) = (
        widths["fc1"].as_u64().unwrap() as usize,
        widths["fc2"].as_u64().unwrap() as usize,
    );
    assert!(w1 < 24 && w2 < 16, "the layers shrank: {widths}");
    assert_eq!(
        shapes(&whole),
        vec![
            ("fc1.bias".into(), vec![w1]),
            ("fc1.weight".into(), vec![w1, 64]),
            ("fc2.bias".into(), vec![w2]),
            ("fc2.weight".into(), vec![w2, w1]),
            ("fc3.bias".into(), vec![4]),
            ("fc3.weight".into(), vec![4, w2]),
        ],
        "model.safetensors holds the final shapes"
    );

    // The final architecture stands alone: written back as a model file, it loads
    // model.safetensors and scores what the run reported.
    let Ok(text) = sparsec::standalone::model_file(&whole) else {
        panic!("emit --stage model")
    };
    assert!(!text.contains("method activation_density"), "{text}");
    let small = write(&scratch, "small.net", &text);
    let Ok(eval) = train::eval(
        Some(&small),
        &whole.join("model.safetensors"),
        None,
        Backend::Interp,
        Some(1),
    ) else {
        panic!("eval of the standalone model:\n{text}")
    };
    let accuracy = summary(&whole)["test_accuracy"].as_f64().unwrap();
    assert!(
        eval.contains(&format!("test accuracy {:.2}%", 100.0 * accuracy)),
        "{eval} vs {accuracy}"
    );
    let Ok(report) = sparsec::report::build(&whole) else {
        panic!("report")
    };
    assert!(
        report
            .table()
            .contains(&format!("fc1 24 -> {w1}, fc2 16 -> {w2}, fc3 4 -> 4")),
        "{}",
        report.table()
    );

    // Accounting: the shrunk run trains and infers with fewer FLOPs than its dense pair.
    let pair = scratch.join("dense");
    train_run(&pair, Some(dense), false, &[]);
    let (s, d) = (summary(&whole), summary(&pair));
    let flops = |s: &Json, k: &str| s[k].as_f64().unwrap();
    assert!(flops(&s, "train_flops_total") < flops(&d, "train_flops_total"));
    assert!(flops(&s, "inference_flops") < flops(&d, "inference_flops"));
    // The dense pair's total is its steps times one step's FLOPs.
    let steps = d["steps"].as_f64().unwrap();
    assert_eq!(flops(&d, "train_flops_total") % steps, 0.0);

    // Interrupted mid-epoch, with the epoch's counts half gathered (step 6 of 12), and again
    // after the first resize (step 17): each resumed run ends on the same bits.
    for cut_at in ["6", "17"] {
        let cut = scratch.join(format!("cut{cut_at}"));
        train_run(&cut, Some(model.clone()), false, &[("max_steps", cut_at)]);
        train_run(&cut, None, true, &[]);
        assert_eq!(
            std::fs::read(whole.join("model.safetensors")).unwrap(),
            std::fs::read(cut.join("model.safetensors")).unwrap(),
            "resumed after step {cut_at}"
        );
        assert_eq!(summary(&cut)["train_flops_total"], s["train_flops_total"]);
        assert_eq!(
            lines(&cut, "method"),
            method,
            "the same densities and widths"
        );
    }
}

#[test]
fn layers_meeting_at_a_residual_add_shrink_together() {
    let scratch = fresh_dir("ad-residual");
    let model = write(&scratch, "res.net", RESIDUAL);
    let run = scratch.join("run");
    train_run(&run, Some(model), false, &[]);
    let resize = lines(&run, "method")
        .into_iter()
        .find(|l| l["resize"] == true)
        .unwrap();
    let (a, b) = (&resize["widths"]["a"], &resize["widths"]["b"]);
    assert_eq!(a, b, "one width for the group: {resize}");
    let target = |l: &str| (resize["density"][l].as_f64().unwrap() * 6.0 - 1e-9).ceil() as u64;
    assert_eq!(
        a.as_u64().unwrap(),
        target("a").max(target("b")),
        "the larger of the two widths asked for: {resize}"
    );
    let c = a.as_u64().unwrap() as usize;
    let fc = resize["widths"]["fc"].as_u64().unwrap() as usize;
    let shapes = shapes(&run);
    let shape = |n: &str| shapes.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(shape("a.weight"), vec![c, 2, 3, 3]);
    assert_eq!(shape("b.weight"), vec![c, c, 3, 3]);
    // The flatten carries each channel as a block of 3·3 features.
    assert_eq!(shape("fc.weight"), vec![fc, c * 9]);
    assert_eq!(shape("out.weight"), vec![3, fc]);
}
