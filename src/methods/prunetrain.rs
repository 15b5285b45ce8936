//! PruneTrain's run side (docs/methods.md §4).
//!
//! - **λ, once.** A fresh run first probes the step (on a copy of the state, with the first
//!   minibatch; nothing of it is kept): its outputs `ce` and `GL` (appended by the
//!   `group_lasso_outputs` pass) give `λ = ratio · CE / ((1 − ratio) · GL)`, so that
//!   `λ·GL / (CE + λ·GL) = ratio` at step 0. λ is then written into the program's method line
//!   ([`FixLambda`]) and the step recompiled; the program, and so λ, is in every checkpoint, and
//!   a resumed run never recalibrates.
//! - **Every `interval` epochs** the channel-liveness analysis
//!   (`sparsec_passes::methods::prunetrain::liveness`) finds the dead units of each selected
//!   layer, and the reshape machinery removes them, weights, biases and momentum alike. A layer
//!   whose units would all go stops the run with a message naming it (removing a whole layer is
//!   not supported).
//! - **Metrics**: λ with CE and GL at the probe; every epoch the mean CE and GL over its steps; at
//!   each reconfiguration, per layer the dead units, the new widths and where the authors' signed
//!   rule would differ.

use serde_json::{json, Map, Value};
use sparsec_ir::interp::Output;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_passes::methods::prunetrain::liveness::liveness;
use sparsec_passes::methods::prunetrain::FixLambda;
use sparsec_passes::structural::units::{unit_group, RemoveUnits, RemoveUnitsEach};

use super::{EpochEnd, LossParts, Probe, Reconfiguration, Registration, RunMethod, StepEnd};

pub const REGISTRATION: Registration = Registration {
    method: "prunetrain",
    make: from_spec,
};

pub struct PruneTrain {
    ratio: f64,
    interval: u64,
    threshold: f64,
    lambda: Option<f64>,
    layers: Vec<String>,
    /// The epoch's sums of the step's CE and GL.
    parts: LossParts,
}

fn from_spec(spec: &MethodSpec) -> Option<Box<dyn RunMethod>> {
    match spec.method {
        Method::PruneTrain {
            ratio,
            interval,
            threshold,
            lambda,
        } => Some(Box::new(PruneTrain {
            ratio,
            interval: interval.max(1),
            threshold,
            lambda,
            layers: spec.layers.clone(),
            parts: LossParts::new("gl", "group_lasso"),
        })),
        _ => None,
    }
}

/// `(ce, GL)` from a step's outputs: after `(loss, logits)`.
fn loss_parts(outputs: &[Output<f32>]) -> Result<(f64, f64), String> {
    let scalar = |i: usize| match outputs.get(i) {
        Some(Output::Float(t)) if t.data.len() == 1 => Ok(f64::from(t.data[0])),
        _ => Err(format!(
            "the training step does not return PruneTrain's (ce, GL) after (loss, logits): \
             {} outputs",
            outputs.len()
        )),
    };
    Ok((scalar(2)?, scalar(3)?))
}

/// `λ` such that `λ·GL / (CE + λ·GL) = ratio`.
pub fn calibrate(ratio: f64, ce: f64, gl: f64) -> Result<f64, String> {
    let lambda = ratio * ce / ((1.0 - ratio) * gl);
    if lambda.is_finite() && lambda > 0.0 {
        Ok(lambda)
    } else {
        Err(format!(
            "cannot calibrate PruneTrain's λ: cross-entropy {ce}, group lasso {gl} at the first \
             minibatch"
        ))
    }
}

impl PruneTrain {
    /// The dead units of every selected layer, layers that share units analysed once.
    fn reconfiguration(&self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        let (ir, module, state) = (end.ir, end.module, &*end.state);
        let values = |name: &str| {
            module
                .param_by_name(name)
                .map(|id| state.values[id.0 as usize].as_slice())
        };
        let mut seen = Vec::new();
        let mut removals = Vec::new();
        let mut report = Map::new();
        let mut widths = Map::new();
        for layer in &self.layers {
            let group = unit_group(ir, layer)?.params;
            if seen.contains(&group) {
                continue;
            }
            seen.push(group);
            let live = liveness(ir, layer, values, self.threshold as f32)?;
            if live.dead.len() == live.width {
                return Err(format!(
                    "after epoch {}: every channel of `{layer}` is dead (max |w| below {}), and \
                     removing a whole layer is not supported; lower PruneTrain's `ratio` or \
                     `threshold`, or leave `{layer}` out of `on`",
                    end.epoch + 1,
                    self.threshold
                ));
            }
            let largest_dead = live
                .dead
                .iter()
                .map(|&u| live.max_abs[u])
                .fold(0f32, f32::max);
            report.insert(
                layer.clone(),
                json!({
                    "width": live.width, "dead": live.dead,
                    "largest_dead_max_abs": largest_dead,
                    "signed_rule_differs": live.signed_rule_differs,
                }),
            );
            widths.insert(layer.clone(), json!(live.width - live.dead.len()));
            if !live.dead.is_empty() {
                removals.push(RemoveUnits {
                    layer: layer.clone(),
                    units: live.dead,
                });
            }
        }
        end.log.insert("liveness".into(), Value::Object(report));
        end.log.insert("widths".into(), Value::Object(widths));
        Ok((!removals.is_empty()).then(|| Reconfiguration {
            pass: Box::new(RemoveUnitsEach(removals)),
        }))
    }
}

impl RunMethod for PruneTrain {
    fn reconfigures(&self) -> bool {
        true
    }

    fn wants_probe(&self) -> bool {
        self.lambda.is_none()
    }

    fn after_probe(&mut self, probe: &mut Probe<'_>) -> Result<Option<Reconfiguration>, String> {
        let (ce, gl) = loss_parts(probe.outputs)?;
        let lambda = calibrate(self.ratio, ce, gl)?;
        self.lambda = Some(lambda);
        probe.log.insert("lambda".into(), json!(lambda));
        probe.log.insert("ce".into(), json!(ce));
        probe.log.insert("group_lasso".into(), json!(gl));
        probe.log.insert("ratio".into(), json!(self.ratio));
        Ok(Some(Reconfiguration {
            pass: Box::new(FixLambda { lambda }),
        }))
    }

    fn after_step(&mut self, end: &StepEnd<'_>) -> Result<(), String> {
        let (ce, gl) = loss_parts(end.outputs)?;
        self.parts.add(ce, gl);
        Ok(())
    }

    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        if let (Some(l), true) = (self.lambda, self.parts.has_steps()) {
            end.log.insert("lambda".into(), json!(l));
        }
        self.parts.log_and_reset(&mut end.log);
        if !(end.epoch + 1).is_multiple_of(self.interval) {
            return Ok(None);
        }
        self.reconfiguration(end)
    }

    fn checkpoint(&self) -> Value {
        self.parts.checkpoint()
    }

    fn restore(&mut self, saved: &Value) -> Result<(), String> {
        self.parts.restore("PruneTrain", saved)
    }
}

#[cfg(test)]
mod tests {
    use super::calibrate;

    #[test]
    fn lambda_gives_the_penalty_its_share_of_the_loss() {
        let (ce, gl) = (2.3, 57.0);
        let l = calibrate(0.2, ce, gl).unwrap();
        assert!((l * gl / (ce + l * gl) - 0.2).abs() < 1e-12);
        assert!(calibrate(0.2, 2.3, 0.0).is_err());
    }
}
