//! `sparsec report RUN_DIR`: a table per layer of a finished (or stopped) run, also printed at
//! the end of every `sparsec train` and kept in the run directory as `report.txt`.
//!
//! The run is recompiled from the model source recorded in its latest checkpoint, with the
//! `--set` overrides the run was started with (so batch size and the method's budget are the
//! run's own, not the file's), and the checkpoint is loaded through the same code that resumes a
//! run, so a report of a damaged run fails exactly where a resume would.
//!
//! A *layer* is the prefix of a parameter's name before its last dot (`fc1.weight` and
//! `fc1.bias` form `fc1`); an optimizer buffer belongs to the layer of its weight. Per layer:
//!
//! - **parameters**: elements of its weights and biases (optimizer state not counted), so the
//!   column sums to `params_total` of `summary.json`;
//! - **tracked** (a run with Dropback-tracked weights): the entries the checkpoint stores,
//!   `<w>.tracked_indices` of `train_state.safetensors`; **non-zero** (any other run): the
//!   weights of the checkpoint that are not exactly 0;
//! - **bytes stored**: what the checkpoint keeps of the layer's weights between steps: 4 bytes
//!   per element of a dense weight, 8 per tracked entry (an i32 index and an f32 value).
//!   Optimizer buffers (momentum) are not counted here; `weight_state_bytes` in `summary.json`
//!   includes them;
//! - **forward FLOPs** (of `@forward`) and **training FLOPs** (of `@train_step`: forward,
//!   backward, update and, for Dropback, scoring, selection and apply) per sample: the FLOPs of
//!   one call divided by the batch size. They are counted on the `train` stage of the IR, the
//!   step as autodiff and the Dropback pass write it: equality saturation later computes the
//!   same values in fused forms that skip work (only the selected entries of a gradient), so
//!   the count is the arithmetic the step *means*, not the kernels' exact work.
//!
//! A run whose shapes changed (activation density's resizes) also lists every layer's width
//! (axis 0 of its weight) when it started and now. A PruneTrain run also gets its channel
//! liveness at the checkpoint (`passes/src/methods/prunetrain/liveness.rs`): per selected layer,
//! the units every weight group of which is below the threshold, which the next reconfiguration
//! would remove; `--json` gives the indices and how close the call was.
//!
//! FLOPs of one instruction are [`Op::flops`] (ir/src/op/flops.rs), the count the cost model
//! reads too: a product `[m,k]·[k,n]` 2·m·k·n; a convolution and both of its gradients
//! 2·B·O·H'·W'·C·KH·KW; pooling and its gradients one per element of each window; every other
//! arithmetic op one per element of its largest operand or result; moving or regenerating data 0.
//!
//! An instruction belongs to a layer when it names one of the layer's parameters (`param
//! @fc1.weight`, `store`, `dropback_score @fc1.bias`); else when its source location is the
//! layer (the backward products and bias reductions carry the forward layer's `loc`); else when
//! it is part of a parameter's update: all its operands that belong to a layer belong to the
//! same one and its result has the shape of one of that layer's parameters (SGD's scale and
//! subtract). The rest (activations, the loss, the global top-k selection) is the `(other)`
//! row, so the totals are the whole function.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::Serialize;
use sparsec_ir::interp::State;
use sparsec_ir::{Func, Module, Role, Type, Value};

use crate::checkpoint;
use crate::driver::{self, Failure};

/// One row of the table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LayerRow {
    pub layer: String,
    pub parameters: u64,
    /// Tracked entries (Dropback) or non-zero weights (otherwise); see [`Report::kept`].
    pub kept: u64,
    pub bytes_stored: u64,
    pub forward_flops_per_sample: f64,
    pub train_flops_per_sample: f64,
}

/// The per-layer report of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub method: String,
    pub step: u64,
    pub batch: u64,
    /// What the `kept` column counts: `tracked` or `non-zero`.
    pub kept: &'static str,
    pub layers: Vec<LayerRow>,
    /// Instructions of no layer: activations, the loss, the global selection.
    pub other: LayerRow,
    pub total: LayerRow,
    /// Every layer's width (units or output channels) when the run started and now, when a
    /// reconfiguration changed some (activation density, PruneTrain); empty otherwise.
    pub widths: Vec<Width>,
    /// PruneTrain's channel liveness at the checkpoint reported (empty for other methods).
    pub liveness: Vec<LayerLiveness>,
}

/// Which units of a layer PruneTrain's liveness analysis calls dead at the checkpoint, and why:
/// every weight group that carries them has `max |w|` below the threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerLiveness {
    pub layer: String,
    pub width: usize,
    pub threshold: f64,
    pub dead: Vec<usize>,
    /// The largest `max |w|` among the dead units (below the threshold) and the smallest among
    /// the live ones (at or above it): how close the call was.
    pub largest_dead_max_abs: Option<f32>,
    pub smallest_live_max_abs: Option<f32>,
}

/// PruneTrain's liveness analysis of every selected layer under the checkpoint's weights.
fn prunetrain_liveness(module: &Module, state: &State<f32>) -> Result<Vec<LayerLiveness>, Failure> {
    let Some(spec) = &module.method else {
        return Ok(Vec::new());
    };
    let sparsec_ir::spec::Method::PruneTrain { threshold, .. } = spec.method else {
        return Ok(Vec::new());
    };
    let values = |name: &str| {
        module
            .param_by_name(name)
            .map(|id| state.values[id.0 as usize].as_slice())
    };
    spec.layers
        .iter()
        .map(|layer| {
            let live = sparsec_passes::methods::prunetrain::liveness::liveness(
                module,
                layer,
                values,
                threshold as f32,
            )
            .map_err(|e| fail(format!("liveness of `{layer}`: {e}")))?;
            let pick = |dead: bool| {
                (0..live.width)
                    .filter(|u| live.dead.contains(u) == dead)
                    .map(|u| live.max_abs[u])
                    .reduce(if dead { f32::max } else { f32::min })
            };
            Ok(LayerLiveness {
                layer: layer.clone(),
                width: live.width,
                threshold,
                largest_dead_max_abs: pick(true),
                smallest_live_max_abs: pick(false),
                dead: live.dead,
            })
        })
        .collect()
}

/// A layer's width at the start of the run and at the checkpoint reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Width {
    pub layer: String,
    pub original: usize,
    #[serde(rename = "final")]
    pub now: usize,
}

/// The widths of the layers (axis 0 of each `<layer>.weight`), in parameter-table order.
fn layer_widths(module: &Module) -> Vec<(String, usize)> {
    module
        .params
        .iter()
        .filter(|p| p.role == Role::Weight)
        .filter_map(|p| {
            let layer = p.name.strip_suffix(".weight")?;
            Some((layer.to_owned(), *p.ty.shape.first()?))
        })
        .collect()
}

/// Original and final widths of a run whose shapes changed (its checkpoint records the program
/// it has now beside the source it started from).
fn width_changes(meta: &checkpoint::TrainMeta, module: &Module) -> Result<Vec<Width>, Failure> {
    if meta.program.is_none() {
        return Ok(Vec::new());
    }
    let start = driver::program_from_source(
        &meta.source_name,
        meta.source.clone(),
        meta.source_is_ir,
        &meta.sets,
    )?;
    let original: HashMap<String, usize> = layer_widths(&start.module).into_iter().collect();
    Ok(layer_widths(module)
        .into_iter()
        .map(|(layer, now)| Width {
            original: original.get(&layer).copied().unwrap_or(now),
            layer,
            now,
        })
        .collect())
}

fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

/// The layer of a parameter-table entry.
fn layer_of(module: &Module, index: usize) -> String {
    let p = &module.params[index];
    let name = match p.role.owner() {
        None => &p.name,
        Some(of) => &module.param(of).name,
    };
    name.rsplit_once('.')
        .map_or(name.as_str(), |(l, _)| l)
        .to_owned()
}

/// FLOPs of a function per layer (`None`: no layer), by the attribution rules above.
fn func_flops(module: &Module, func: &Func) -> HashMap<Option<String>, u64> {
    let layer_shapes: HashMap<String, Vec<&[usize]>> =
        module
            .params
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m, (i, p)| {
                m.entry(layer_of(module, i))
                    .or_default()
                    .push(p.ty.shape.as_slice());
                m
            });
    let mut owner: Vec<Option<String>> = Vec::with_capacity(func.insts.len());
    let mut flops = HashMap::new();
    for inst in &func.insts {
        let by_param = inst.op.param().map(|id| layer_of(module, id.0 as usize));
        let by_loc = || {
            inst.loc
                .as_ref()
                .filter(|l| layer_shapes.contains_key(*l))
                .cloned()
        };
        let by_update = || {
            let mut layers = inst.operands.iter().filter_map(|v| match v {
                Value::Inst(i) => owner[*i as usize].as_ref(),
                Value::Arg(_) => None,
            });
            let first = layers.next()?;
            if layers.any(|l| l != first) {
                return None;
            }
            layer_shapes[first]
                .contains(&inst.ty.shape.as_slice())
                .then(|| first.clone())
        };
        let layer = by_param.or_else(by_loc).or_else(by_update);
        let operands: Vec<&Type> = inst.operands.iter().map(|&v| func.value_type(v)).collect();
        *flops.entry(layer.clone()).or_insert(0) += inst.op.flops(&operands, &inst.ty);
        owner.push(layer);
    }
    flops
}

/// FLOPs of one call of function `name` of `module` (0 when it has none): the sum of
/// [`sparsec_ir::Op::flops`] over its instructions, the total of the report's column.
pub fn function_flops(module: &Module, name: &str) -> u64 {
    module
        .func(name)
        .map_or(0, |f| func_flops(module, f).values().sum())
}

/// Read `summary.json`, which marks a run directory (a run that got far enough to write one).
fn read_summary(run_dir: &Path) -> Result<serde_json::Value, Failure> {
    if !run_dir.is_dir() {
        return Err(fail(format!(
            "`{}` is not a run directory (no such directory)",
            run_dir.display()
        )));
    }
    let path = run_dir.join("summary.json");
    let text = fs::read_to_string(&path).map_err(|e| {
        fail(format!(
            "`{}` is not a finished run directory: cannot read {}: {e}",
            run_dir.display(),
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| fail(format!("`{}` is not valid JSON: {e}", path.display())))
}

/// Build the report of the run in `run_dir`.
pub fn build(run_dir: &Path) -> Result<Report, Failure> {
    read_summary(run_dir)?;
    let (checkpoint_dir, meta) = checkpoint::open(run_dir).map_err(fail)?;
    let program = driver::run_program(&meta, &meta.sets)?;
    let module = driver::train_step_module(&program)?;
    let mut state = State::<f32>::initial(&module);
    let loaded = checkpoint::load(&checkpoint_dir, &module, &mut state).map_err(fail)?;

    let batch = module.train.as_ref().map_or(1, |t| t.batch).max(1);
    let per_sample = |f: u64| f as f64 / batch as f64;
    let forward = module
        .func(sparsec_ir::func_names::FORWARD)
        .map(|f| func_flops(&module, f))
        .unwrap_or_default();
    let train = module
        .func(sparsec_ir::func_names::TRAIN_STEP)
        .map(|f| func_flops(&module, f))
        .unwrap_or_default();
    let has_tracked = state.tracked.iter().any(Option::is_some);

    let mut layers: Vec<LayerRow> = Vec::new();
    for (i, p) in module.params.iter().enumerate() {
        let name = layer_of(&module, i);
        let row = match layers.iter().position(|r| r.layer == name) {
            Some(at) => &mut layers[at],
            None => {
                let key = Some(name.clone());
                layers.push(LayerRow {
                    layer: name,
                    forward_flops_per_sample: per_sample(forward.get(&key).copied().unwrap_or(0)),
                    train_flops_per_sample: per_sample(train.get(&key).copied().unwrap_or(0)),
                    ..LayerRow::default()
                });
                layers.last_mut().expect("just pushed")
            }
        };
        if p.role != Role::Weight {
            continue;
        }
        let n = p.ty.num_elements() as u64;
        row.parameters += n;
        match &state.tracked[i] {
            Some(t) => {
                row.kept += t.len() as u64;
                row.bytes_stored += 8 * t.len() as u64;
            }
            None => {
                row.kept += state.values[i].iter().filter(|&&x| x != 0.0).count() as u64;
                row.bytes_stored += 4 * n;
            }
        }
    }
    let other = LayerRow {
        layer: "(other)".into(),
        forward_flops_per_sample: per_sample(forward.get(&None).copied().unwrap_or(0)),
        train_flops_per_sample: per_sample(train.get(&None).copied().unwrap_or(0)),
        ..LayerRow::default()
    };
    let mut total = LayerRow {
        layer: "total".into(),
        ..LayerRow::default()
    };
    for row in layers.iter().chain([&other]) {
        total.parameters += row.parameters;
        total.kept += row.kept;
        total.bytes_stored += row.bytes_stored;
        total.forward_flops_per_sample += row.forward_flops_per_sample;
        total.train_flops_per_sample += row.train_flops_per_sample;
    }
    Ok(Report {
        model: module.name.clone(),
        method: module
            .method
            .as_ref()
            .map_or("dense".to_owned(), |m| m.method.name().to_owned()),
        step: loaded.step,
        batch,
        kept: if has_tracked { "tracked" } else { "non-zero" },
        layers,
        other,
        total,
        widths: width_changes(&meta, &module)?,
        liveness: prunetrain_liveness(&module, &state)?,
    })
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The aligned text table, with a header line saying what was counted.
    pub fn table(&self) -> String {
        let headers = [
            "layer".to_owned(),
            "parameters".to_owned(),
            self.kept.to_owned(),
            "bytes stored".to_owned(),
            "forward FLOPs/sample".to_owned(),
            "train FLOPs/sample".to_owned(),
        ];
        let cells = |r: &LayerRow, counts: bool| -> [String; 6] {
            let n = |v: u64| if counts { thousands(v) } else { String::new() };
            [
                r.layer.clone(),
                n(r.parameters),
                n(r.kept),
                n(r.bytes_stored),
                thousands(r.forward_flops_per_sample.round() as u64),
                thousands(r.train_flops_per_sample.round() as u64),
            ]
        };
        let mut rows: Vec<[String; 6]> = vec![headers];
        rows.extend(self.layers.iter().map(|r| cells(r, true)));
        rows.push(cells(&self.other, false));
        rows.push(cells(&self.total, true));
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "per-layer report: {} ({}), step {}, batch {}\n",
            self.model, self.method, self.step, self.batch
        );
        let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        for (i, row) in rows.iter().enumerate() {
            if i == rows.len() - 1 {
                out.push_str(&"-".repeat(rule));
                out.push('\n');
            }
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    let _ = write!(line, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(line, "  {}{cell}", " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if let Some(first) = self.liveness.first() {
            let list: Vec<String> = self
                .liveness
                .iter()
                .map(|l| format!("{} {} of {}", l.layer, l.dead.len(), l.width))
                .collect();
            let _ = writeln!(
                out,
                "dead channels now (max |w| of every group below {}): {}",
                first.threshold,
                list.join(", ")
            );
        }
        if !self.widths.is_empty() {
            let list: Vec<String> = self
                .widths
                .iter()
                .map(|w| format!("{} {} -> {}", w.layer, w.original, w.now))
                .collect();
            let _ = writeln!(out, "widths (original -> final): {}", list.join(", "));
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// `sparsec report RUN_DIR [--json]`.
pub fn report(run_dir: &Path, json: bool) -> Result<String, Failure> {
    let report = build(run_dir)?;
    Ok(if json { report.json() } else { report.table() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_066_440), "1,066,440");
    }

    /// A convolution counted by hand: LeNet-5's conv1 maps 1×28×28 to 20×24×24 with 5×5
    /// windows, 2·20·24·24·(1·5·5) FLOPs per sample, plus one bias addition per output.
    #[test]
    fn lenet5_conv1_forward_flops() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lenet5.net");
        let program = driver::load_program(&path, &[])
            .ok()
            .expect("lenet5 compiles");
        let module = driver::train_step_module(&program)
            .ok()
            .expect("train step");
        let batch = module.train.as_ref().unwrap().batch;
        let forward = func_flops(&module, module.func("forward").unwrap());
        let conv1 = forward[&Some("conv1".to_owned())];
        assert_eq!(conv1, batch * (2 * 20 * 24 * 24 * 25 + 20 * 24 * 24));
        let train = func_flops(&module, module.func("train_step").unwrap());
        assert!(train[&Some("conv1".to_owned())] > 2 * conv1);
    }
}
