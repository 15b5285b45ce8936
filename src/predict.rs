//! `sparsec predict RUN_DIR INPUT...`: classify inputs with a trained network.
//!
//! An input is an IDX images file (as the data sets use, optionally gzip-compressed), or an image
//! (PNG or PGM/PPM) of the model's input size. Pixels are scaled to [0, 1] as in training
//! (`x / 255`), so an image must look like the training data: Fashion-MNIST's are light garments
//! on a black background. The network runs in its own compiled forward function, at the batch
//! size it was trained with (a short last batch is padded, the padding never reported).

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use sparsec_ir::func_names::FORWARD;

use crate::data::{idx, image_fits_input};
use crate::driver::Failure;
use crate::runner::{Backend, Runner};
use crate::train::{forward_batches, row_stats};
use crate::trained::{self, Trained};

fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

/// What to predict for: samples of the model's input, each with a label saying where it is from.
struct Samples {
    names: Vec<String>,
    /// `names.len() × sample_len` floats.
    values: Vec<f32>,
}

pub struct PredictRequest<'a> {
    pub run: &'a Path,
    pub inputs: &'a [PathBuf],
    pub json: bool,
    pub backend: Backend,
    pub threads: Option<usize>,
}

pub fn predict(request: &PredictRequest<'_>) -> Result<String, Failure> {
    let mut trained = trained::load_run(request.run, request.backend)?;
    let module = &trained.program.module;
    let forward = module
        .func(FORWARD)
        .ok_or_else(|| fail(format!("`{}` has no @forward", request.run.display())))?;
    let Some(input) = forward.args.first() else {
        return Err(fail("@forward takes no input"));
    };
    let batch = input.ty.shape.first().copied().unwrap_or(1).max(1);
    let sample_shape = input.ty.shape.get(1..).unwrap_or(&[]).to_vec();
    let sample_len: usize = sample_shape.iter().product();
    let mut samples = Samples {
        names: Vec::new(),
        values: Vec::new(),
    };
    for path in request.inputs {
        read_input(path, &sample_shape, &mut samples)?;
    }
    let optimised = trained::optimised(&trained.program)?;
    let mut runner = Runner::new(&optimised, FORWARD, request.backend, request.threads)
        .map_err(|e| fail(format!("cannot prepare @forward: {e}")))?;
    let count = samples.names.len();
    let mut logits_all: Vec<Vec<f32>> = Vec::with_capacity(count);
    // Labels are unused by the logits; 0 is in range for the loss the function also computes.
    forward_batches(
        &mut runner,
        &mut trained.state,
        batch,
        sample_len,
        count,
        &|i| (&samples.values[i * sample_len..(i + 1) * sample_len], 0),
        &mut |_, row| logits_all.push(row.to_vec()),
    )?;
    Ok(if request.json {
        json_report(&trained, &samples.names, &logits_all)
    } else {
        text_report(&trained, &samples.names, &logits_all)
    })
}

/// Softmax in f64, from the row's log-sum-exp as `eval` computes it.
fn probabilities(logits: &[f32]) -> Vec<f64> {
    let (_, lse) = row_stats(logits);
    logits.iter().map(|&v| (f64::from(v) - lse).exp()).collect()
}

/// Classes by falling probability (ties: lower class first).
fn ranked(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order
}

fn class_label(trained: &Trained, c: usize) -> String {
    match trained.class_name(c) {
        Some(name) => format!("{c} {name}"),
        None => format!("class {c}"),
    }
}

fn text_report(trained: &Trained, names: &[String], logits: &[Vec<f32>]) -> String {
    let mut out = String::new();
    for (name, row) in names.iter().zip(logits) {
        let p = probabilities(row);
        let order = ranked(&p);
        let _ = write!(
            out,
            "{name}: {} ({:.1} %)",
            class_label(trained, order[0]),
            100.0 * p[order[0]]
        );
        let runners_up: Vec<String> = order
            .iter()
            .skip(1)
            .take(2)
            .map(|&c| format!("{} {:.1} %", class_label(trained, c), 100.0 * p[c]))
            .collect();
        if !runners_up.is_empty() {
            let _ = write!(out, "   then {}", runners_up.join(", "));
        }
        out.push('\n');
    }
    out
}

fn json_report(trained: &Trained, names: &[String], logits: &[Vec<f32>]) -> String {
    let predictions: Vec<serde_json::Value> = names
        .iter()
        .zip(logits)
        .map(|(name, row)| {
            let p = probabilities(row);
            let best = ranked(&p)[0];
            json!({
                "input": name,
                "class": best,
                "name": trained.class_name(best),
                "probabilities": p,
                "logits": row,
            })
        })
        .collect();
    let report = json!({
        "model": trained.program.module.name,
        "weights": trained.weights_file.display().to_string(),
        "step": trained.meta.step,
        "predictions": predictions,
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    )
}

/// The leading bytes that tell an IDX file (plain or gzip) from an image.
fn is_idx(path: &Path) -> Result<bool, Failure> {
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot open `{}`: {e}", path.display())))?;
    let got = file
        .read(&mut head)
        .map_err(|e| fail(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(got >= 2 && (head[..2] == [0x1f, 0x8b] || (got == 4 && head[..3] == [0, 0, 8])))
}

fn read_input(path: &Path, sample_shape: &[usize], samples: &mut Samples) -> Result<(), Failure> {
    let sample_len: usize = sample_shape.iter().product();
    if is_idx(path)? {
        let images = idx::read_images(path).map_err(|e| fail(e.to_string()))?;
        if !image_fits_input([images.rows, images.cols], sample_shape) {
            return Err(fail(format!(
                "`{}` holds {}×{} images; the model's input is {sample_shape:?}",
                path.display(),
                images.rows,
                images.cols
            )));
        }
        let stem = path.display().to_string();
        samples
            .names
            .extend((0..images.count).map(|i| format!("{stem}[{i}]")));
        samples
            .values
            .extend(images.pixels.iter().map(|&p| f32::from(p) / 255.0));
        return Ok(());
    }
    // An image: gray for a one-channel input, RGB planes for a three-channel one.
    let first_real = sample_shape.iter().position(|&d| d != 1).unwrap_or(0);
    let (channels, height, width) = match &sample_shape[first_real..] {
        [3, h, w] => (3, *h, *w),
        [h, w] => (1, *h, *w),
        _ => {
            return Err(fail(format!(
                "`{}`: an image can feed a model whose input is [1, H, W], [H, W] or [3, H, W]; \
                 this one's is {sample_shape:?} (give an IDX file)",
                path.display()
            )))
        }
    };
    let open = || {
        image::io::Reader::open(path)
            .and_then(image::io::Reader::with_guessed_format)
            .map_err(|e| fail(format!("cannot read `{}`: {e}", path.display())))
    };
    let (w, h) = open()?.into_dimensions().map_err(|e| {
        fail(format!(
            "`{}` is not a PNG or PNM image: {e}",
            path.display()
        ))
    })?;
    if (w as usize, h as usize) != (width, height) {
        return Err(fail(format!(
            "`{}` is {w}×{h} pixels; the model reads {width}×{height} images (resize it first)",
            path.display()
        )));
    }
    let image = open()?.decode().map_err(|e| {
        fail(format!(
            "`{}` is not a PNG or PNM image: {e}",
            path.display()
        ))
    })?;
    let values: Vec<f32> = if channels == 1 {
        image
            .to_luma8()
            .pixels()
            .map(|p| f32::from(p.0[0]) / 255.0)
            .collect()
    } else {
        let rgb = image.to_rgb8();
        (0..3)
            .flat_map(|c| rgb.pixels().map(move |p| f32::from(p.0[c]) / 255.0))
            .collect()
    };
    debug_assert_eq!(values.len(), sample_len);
    samples.names.push(path.display().to_string());
    samples.values.extend(values);
    Ok(())
}
