//! `sparsec export --onnx` and `sparsec predict`: the exported network, run by an independent
//! ONNX runtime (tract), gives the logits `predict` gives and the accuracy `eval` reports, for a
//! dense network with every layer kind, a Dropback run, a run activation density shrank and one
//! ADMM pruned.

mod run_dir;

use std::path::Path;

use run_dir::{fresh_dir, ok, sparsec, write_file};
use tract_onnx::prelude::*;

const SUBSET: &str = "data/fashion-mnist-subset";
const TEST_IMAGES: &str = "data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz";

/// Every layer the language has, a residual add among them.
const ALL_LAYERS: &str = "
model all_layers {
    input x: [1, 28, 28]
    c1 = conv2d(x, 4, kernel: 3, padding: 1)
    a1 = relu(c1)
    p1 = maxpool2d(a1, kernel: 2)
    c2 = conv2d(p1, 8, kernel: 3, stride: 2, padding: 1)
    a2 = leaky_relu(c2)
    c3 = conv2d(a2, 8, kernel: 3, padding: 1)
    s  = add(c3, a2)
    a3 = tanh(s)
    p2 = avgpool2d(a3, kernel: 2)
    flat = flatten(p2)
    fc1 = dense(flat, 32)
    h  = sigmoid(fc1)
    fc2 = dense(h, 10)
    loss softmax_cross_entropy(fc2)
}
data fashion_mnist
train { epochs: 1 batch: 50 optimizer: sgd(lr: 0.1, momentum: 0.9) }
";

/// A small MLP that activation density shrinks after its first epoch.
const SHRINKING: &str = "
model shrinking {
    input x: [1, 28, 28]
    flat = flatten(x)
    fc1 = dense(flat, 64)
    h1  = relu(fc1)
    fc2 = dense(h1, 10)
    loss softmax_cross_entropy(fc2)
}
data fashion_mnist
train { epochs: 2 batch: 64 optimizer: sgd(lr: 0.1, momentum: 0.9) }
method activation_density { resize_at: [1] min_width: 4 }
";

/// A small conv net that ADMM prunes to a quarter of its weights, then retrains on the masks.
const MASKED: &str = "
model masked {
    input x: [1, 28, 28]
    c1 = conv2d(x, 4, kernel: 5)
    a1 = relu(c1)
    p1 = maxpool2d(a1, kernel: 2)
    flat = flatten(p1)
    fc1 = dense(flat, 32)
    h1  = relu(fc1)
    fc2 = dense(h1, 10)
    loss softmax_cross_entropy(fc2)
}
data fashion_mnist
train { epochs: 3 batch: 64 optimizer: sgd(lr: 0.05, momentum: 0.9) }
method admm { keep: 0.25, rho: 0.02, rounds: 1, epochs_per_round: 1, retrain_epochs: 1 }
";

/// The logits of every test image, from `sparsec predict --json`.
fn predicted_logits(run: &Path) -> Vec<Vec<f32>> {
    let out = ok(&sparsec(&[
        "predict",
        run.to_str().unwrap(),
        TEST_IMAGES,
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Run the ONNX file on the test images with tract, in one batch.
fn onnx_logits(onnx: &Path) -> Vec<Vec<f32>> {
    let images = sparsec::data::idx::read_images(Path::new(TEST_IMAGES)).unwrap();
    let pixels: Vec<f32> = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    let n = images.count;
    let model = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap()
        .with_input_fact(0, f32::fact([n, 1, 28, 28]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: Tensor = tract_ndarray::Array4::from_shape_vec((n, 1, 28, 28), pixels)
        .unwrap()
        .into();
    let outputs = model.run(tvec!(input.into())).unwrap();
    let logits = outputs[0].to_plain_array_view::<f32>().unwrap();
    let probabilities = outputs[1].to_plain_array_view::<f32>().unwrap();
    assert_eq!(logits.shape(), probabilities.shape());
    let rows: Vec<Vec<f32>> = logits
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    for (row, p) in rows.iter().zip(probabilities.outer_iter()) {
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
        assert_eq!(argmax(row), argmax(&p.iter().copied().collect::<Vec<_>>()));
    }
    rows
}

/// The initializer (a weight, as the ONNX file stores it) called `name`, read by tract's parser.
fn initializer(onnx: &Path, name: &str) -> tract_onnx::pb::TensorProto {
    let model = tract_onnx::onnx().proto_model_for_path(onnx).unwrap();
    model
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The test accuracy `sparsec eval RUN` prints, in percent.
fn eval_accuracy(run: &Path) -> f64 {
    let out = ok(&sparsec(&[
        "eval",
        "--weights",
        run.to_str().unwrap(),
        "--data",
        SUBSET,
    ]));
    let after = out.split("test accuracy ").nth(1).unwrap();
    after.split('%').next().unwrap().trim().parse().unwrap()
}

/// Export `run`, run it with tract, and hold it against `predict` and `eval`.
fn exported_model_agrees(run: &Path) -> std::path::PathBuf {
    let onnx = run.join("model.onnx");
    let out = ok(&sparsec(&[
        "export",
        run.to_str().unwrap(),
        "--onnx",
        onnx.to_str().unwrap(),
    ]));
    assert!(out.contains("written to"), "{out}");
    let ours = predicted_logits(run);
    let theirs = onnx_logits(&onnx);
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                "image {i}: sparsec's logit {x}, the ONNX model's {y}"
            );
        }
    }
    // The ONNX model's accuracy is eval's (ties within 1e-4 could flip; none here).
    let labels = sparsec::data::idx::read_labels(Path::new(TEST_LABELS)).unwrap();
    let correct = theirs
        .iter()
        .zip(&labels)
        .filter(|(row, &label)| argmax(row) == usize::from(label))
        .count();
    let accuracy = 100.0 * correct as f64 / labels.len() as f64;
    let reported = eval_accuracy(run);
    assert!(
        (accuracy - reported).abs() < 0.005 + 1e-9,
        "ONNX {accuracy:.2} %, eval {reported:.2} %"
    );
    assert!(accuracy > 30.0, "the run learned something: {accuracy} %");
    onnx
}

#[test]
fn a_network_with_every_layer_exports_and_predicts_as_sparsec_does() {
    let dir = fresh_dir("export-all-layers");
    let model = write_file(&dir, "all_layers.net", ALL_LAYERS);
    let run = dir.join("run");
    ok(&sparsec(&[
        "train",
        model.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]));
    exported_model_agrees(&run);

    // One image: predict names the class, with its probability.
    let png = dir.join("first.png");
    let images = sparsec::data::idx::read_images(Path::new(TEST_IMAGES)).unwrap();
    image::GrayImage::from_raw(28, 28, images.pixels[..784].to_vec())
        .unwrap()
        .save(&png)
        .unwrap();
    let single = ok(&sparsec(&[
        "predict",
        run.to_str().unwrap(),
        png.to_str().unwrap(),
    ]));
    let batch = ok(&sparsec(&["predict", run.to_str().unwrap(), TEST_IMAGES]));
    let first = batch.lines().next().unwrap();
    // The same class and probabilities as the first image of the IDX file.
    assert_eq!(
        single.split_once(": ").unwrap().1.trim(),
        first.split_once(": ").unwrap().1.trim()
    );
    assert!(single.contains(" %"), "{single}");
}

#[test]
fn dropback_shrunk_and_masked_runs_export_their_effective_networks() {
    let dir = fresh_dir("export-methods");
    let dropback = dir.join("dropback");
    ok(&sparsec(&[
        "train",
        "examples/lenet300_dropback.net",
        "--data",
        SUBSET,
        "--out",
        dropback.to_str().unwrap(),
        "--set",
        "max_steps=40",
    ]));
    exported_model_agrees(&dropback);

    let model = write_file(&dir, "shrinking.net", SHRINKING);
    let shrunk = dir.join("shrunk");
    ok(&sparsec(&[
        "train",
        model.to_str().unwrap(),
        "--out",
        shrunk.to_str().unwrap(),
    ]));
    let onnx = exported_model_agrees(&shrunk);
    let masked_model = write_file(&dir, "masked.net", MASKED);
    let masked = dir.join("masked");
    ok(&sparsec(&[
        "train",
        masked_model.to_str().unwrap(),
        "--out",
        masked.to_str().unwrap(),
    ]));
    let masked_onnx = exported_model_agrees(&masked);
    // The pruned weights are exact zeros in the exported model: a quarter of fc1 is kept.
    let fc1 = initializer(&masked_onnx, "fc1.weight");
    let nonzero = fc1
        .raw_data
        .chunks_exact(4)
        .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0.0)
        .count();
    assert_eq!(nonzero, (fc1.raw_data.len() / 4) / 4);
    // The exported layer is the width the run ended with, not the declared 64.
    let fc1 = initializer(&onnx, "fc1.weight");
    assert_eq!(fc1.dims[1], 784);
    assert!(fc1.dims[0] < 64, "fc1 kept {} units", fc1.dims[0]);
}

#[test]
fn bad_inputs_are_refused_with_their_file_named() {
    let dir = fresh_dir("predict-bad");
    let run = dir.join("run");
    ok(&sparsec(&[
        "train",
        "tests/train/tiny_momentum.net",
        "--out",
        run.to_str().unwrap(),
    ]));
    let wrong_size = dir.join("big.png");
    image::GrayImage::new(30, 28).save(&wrong_size).unwrap();
    let not_image = write_file(&dir, "notes.txt", "hello");
    for input in [&wrong_size, &not_image, &dir.join("missing.png")] {
        let out = sparsec(&["predict", run.to_str().unwrap(), input.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(input.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
    }
    // Export needs a run directory and a place to write.
    let out = sparsec(&["export", dir.to_str().unwrap(), "--onnx", "x.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    let out = sparsec(&["export", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
