//! Activation-density shrinking's run side (docs/methods.md §2).
//!
//! The compiled step returns, after `(loss, logits)`, one count per unit of every selected layer:
//! how many of its post-ReLU outputs in the batch were non-zero (the `activation_stats` pass in
//! `sparsec_passes::methods::activation_density`). This hook adds them up over the epoch in
//! integers. At the end of every epoch it logs each layer's activation density
//! `AD = non-zero outputs / outputs`; after each epoch of `resize_at` (1-based) it shrinks every
//! layer to `max(min_width, ceil(AD · width))` units (never more than it has), keeping the units
//! that fired most often (ties to the lower index), through the reshape machinery, which carries
//! weights and momentum over.
//!
//! Layers that share their units (a residual `add` joins them) are resized together: the width
//! is the largest their densities ask for, and a unit's rank is the sum of its densities in
//! each of them.

use serde_json::{json, Map, Value};
use sparsec_ir::func_names::FORWARD;
use sparsec_ir::interp::Output;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::Module;
use sparsec_passes::methods::activation_density::relu_input;
use sparsec_passes::structural::units::{unit_group, RemoveUnits, RemoveUnitsEach, UnitGroup};

use super::{EpochEnd, Reconfiguration, Registration, RunMethod, StepEnd};

pub const REGISTRATION: Registration = Registration {
    method: "activation_density",
    make: from_spec,
};

pub struct ActivationDensity {
    resize_at: Vec<u64>,
    min_width: u64,
    layers: Vec<String>,
    /// Per selected layer, per unit: non-zero post-ReLU outputs over the epoch so far.
    counts: Vec<Vec<u64>>,
    /// Training steps counted into `counts`.
    steps: u64,
}

fn from_spec(spec: &MethodSpec) -> Option<Box<dyn RunMethod>> {
    match &spec.method {
        Method::ActivationDensity {
            resize_at,
            min_width,
        } => Some(Box::new(ActivationDensity {
            resize_at: resize_at.clone(),
            min_width: (*min_width).max(1),
            layers: spec.layers.clone(),
            counts: vec![Vec::new(); spec.layers.len()],
            steps: 0,
        })),
        _ => None,
    }
}

/// What one layer's statistics say at the end of an epoch.
struct LayerDensity {
    /// Outputs of one unit over the epoch (samples × positions per channel).
    outputs_per_unit: u64,
    /// Non-zero outputs of all units.
    nonzero: u64,
    width: usize,
}

impl LayerDensity {
    fn density(&self) -> f64 {
        self.nonzero as f64 / (self.outputs_per_unit as f64 * self.width as f64)
    }

    /// `max(min_width, ceil(AD · width))`, at most the width: `AD · width` is
    /// `nonzero / outputs_per_unit`, so the ceiling is exact in integers.
    fn target(&self, min_width: u64) -> usize {
        let wanted = self.nonzero.div_ceil(self.outputs_per_unit.max(1));
        (wanted.max(min_width) as usize).min(self.width)
    }
}

/// The units to keep: the `keep` highest of `score`, ties to the lower index; returned as the
/// complement (the units to remove), increasing.
fn units_to_remove(score: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    let mut removed = order.split_off(keep.min(order.len()));
    removed.sort_unstable();
    removed
}

impl ActivationDensity {
    /// Each layer's statistics over the epoch, with the batch and positions per unit read from
    /// the program at stage `ir`.
    fn densities(&self, ir: &Module) -> Result<Vec<LayerDensity>, String> {
        let f = ir
            .func(FORWARD)
            .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
        self.layers
            .iter()
            .zip(&self.counts)
            .map(|(layer, counts)| {
                let shape = &f.value_type(relu_input(ir, f, layer)?).shape;
                let per_step: u64 = shape
                    .iter()
                    .enumerate()
                    .filter(|&(axis, _)| axis != 1)
                    .map(|(_, &n)| n as u64)
                    .product();
                let width = shape.get(1).copied().unwrap_or(0);
                if !counts.is_empty() && counts.len() != width {
                    return Err(format!(
                        "internal error: {} counts for the {width} units of `{layer}`",
                        counts.len()
                    ));
                }
                Ok(LayerDensity {
                    outputs_per_unit: per_step * self.steps,
                    nonzero: counts.iter().sum(),
                    width,
                })
            })
            .collect()
    }

    /// The removals of one resize, and the new width of every layer.
    fn resize(
        &self,
        ir: &Module,
        stats: &[LayerDensity],
    ) -> Result<(Vec<RemoveUnits>, Vec<usize>), String> {
        // Layers that share their units are one group (a residual add).
        let mut groups: Vec<(UnitGroup, Vec<usize>)> = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let group = unit_group(ir, layer)?;
            match groups.iter_mut().find(|(g, _)| g.params == group.params) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
        let mut widths = vec![0; self.layers.len()];
        let mut removals = Vec::new();
        for (_, members) in &groups {
            let width = stats[members[0]].width;
            let keep = members
                .iter()
                .map(|&i| stats[i].target(self.min_width))
                .max()
                .unwrap_or(width);
            let mut score = vec![0f64; width];
            for &i in members {
                let per_unit = stats[i].outputs_per_unit.max(1) as f64;
                for (s, &c) in score.iter_mut().zip(&self.counts[i]) {
                    *s += c as f64 / per_unit;
                }
            }
            let removed = units_to_remove(&score, keep);
            for &i in members {
                widths[i] = width - removed.len();
            }
            if !removed.is_empty() {
                removals.push(RemoveUnits {
                    layer: self.layers[members[0]].clone(),
                    units: removed,
                });
            }
        }
        Ok((removals, widths))
    }
}

impl RunMethod for ActivationDensity {
    fn reconfigures(&self) -> bool {
        true
    }

    fn after_step(&mut self, end: &StepEnd<'_>) -> Result<(), String> {
        let stats = end.outputs.get(2..2 + self.layers.len()).ok_or_else(|| {
            format!(
                "the training step returned {} values, not the {} statistics of activation \
                 density after (loss, logits)",
                end.outputs.len(),
                self.layers.len()
            )
        })?;
        for ((layer, counts), out) in self.layers.iter().zip(&mut self.counts).zip(stats) {
            let Output::Float(t) = out else {
                return Err(format!("the statistics of `{layer}` are not f32 counts"));
            };
            if counts.is_empty() {
                counts.resize(t.data.len(), 0);
            }
            if counts.len() != t.data.len() {
                return Err(format!(
                    "the statistics of `{layer}` have {} units, expected {}",
                    t.data.len(),
                    counts.len()
                ));
            }
            for (c, &x) in counts.iter_mut().zip(&t.data) {
                if !(x >= 0.0 && x.fract() == 0.0 && x < 16_777_216.0) {
                    return Err(format!(
                        "the statistics of `{layer}` hold {x}, which is not a count"
                    ));
                }
                *c += x as u64;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        let epoch = end.epoch + 1;
        if self.steps == 0 {
            return Ok(None);
        }
        let stats = self.densities(end.ir)?;
        let density: Map<String, Value> = self
            .layers
            .iter()
            .zip(&stats)
            .map(|(l, s)| (l.clone(), json!(s.density())))
            .collect();
        end.log.insert("density".into(), Value::Object(density));
        let mut reconfiguration = None;
        if self.resize_at.contains(&epoch) {
            let (removals, widths) = self.resize(end.ir, &stats)?;
            let widths: Map<String, Value> = self
                .layers
                .iter()
                .zip(widths)
                .map(|(l, w)| (l.clone(), json!(w)))
                .collect();
            end.log.insert("resize".into(), json!(true));
            end.log.insert("widths".into(), Value::Object(widths));
            if !removals.is_empty() {
                reconfiguration = Some(Reconfiguration {
                    pass: Box::new(RemoveUnitsEach(removals)),
                });
            }
        }
        for c in &mut self.counts {
            c.clear();
        }
        self.steps = 0;
        Ok(reconfiguration)
    }

    fn checkpoint(&self) -> Value {
        json!({ "steps": self.steps, "counts": self.counts })
    }

    fn restore(&mut self, saved: &Value) -> Result<(), String> {
        let steps = saved["steps"]
            .as_u64()
            .ok_or("activation density: `steps` is missing or not a count")?;
        let counts: Vec<Vec<u64>> = serde_json::from_value(saved["counts"].clone())
            .map_err(|e| format!("activation density: `counts`: {e}"))?;
        if counts.len() != self.layers.len() {
            return Err(format!(
                "activation density: the checkpoint counts {} layers, the method selects {}",
                counts.len(),
                self.layers.len()
            ));
        }
        self.steps = steps;
        self.counts = counts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{units_to_remove, LayerDensity};

    #[test]
    fn the_new_width_is_the_ceiling_of_density_times_width_floored_at_min_width() {
        let layer = |nonzero| LayerDensity {
            outputs_per_unit: 10,
            nonzero,
            width: 8,
        };
        assert_eq!(layer(0).target(4), 4); // AD = 0: the floor
        assert_eq!(layer(21).target(1), 3); // 2.1 units' worth rounds up
        assert_eq!(layer(20).target(1), 2);
        assert_eq!(layer(80).target(1), 8); // AD = 1 keeps every unit
        assert_eq!(layer(5).target(100), 8); // never grows
    }

    #[test]
    fn the_units_kept_fire_most_often_ties_to_the_lower_index() {
        assert_eq!(units_to_remove(&[0.5, 0.9, 0.5, 0.1], 2), vec![2, 3]);
        assert_eq!(units_to_remove(&[0.0, 0.0, 0.0], 1), vec![1, 2]);
        assert!(units_to_remove(&[0.3, 0.2], 2).is_empty());
    }
}
