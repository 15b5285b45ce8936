//! Progressive ADMM's run side (docs/methods.md §3). The schedule is
//! [`sparsec_ir::admm::Schedule`]; the program names the phase it is built for (its method line's
//! `at`), and at every epoch boundary this hook does what the boundary calls for, on the state
//! and outside the gradient, then moves the program on to the next phase ([`SetPhase`]: the
//! round's ρ, or no penalty; `masked` storage once a mask is fixed):
//!
//! - **a round ends**: `Z ← Π(W + U)`, `U ← U + W − Z` (ρ grows with the next round's phase);
//! - **a stage's last round ends**: the hard prune, `M ← top-l |W|` within the current mask,
//!   `W ← M ⊙ W`, and the momentum buffer likewise (so the masked update starts from masked
//!   state);
//! - **a stage begins** (before the first step when the run has no pretraining): `Z ← Π(W)`,
//!   `U ← 0`.
//!
//! `Π` keeps the `l` largest `|·|` of a layer within its mask, exactly, ties to the lower index
//! (the same selection as the IR's `topk_select`); `l = kept(keep ratio of the stage, size)`.
//! Everything the hook acts on is in the checkpoint (the program with its phase; `Z`, `U`, the
//! masks and momentum as state), so a resumed run continues bit for bit; the hook itself only
//! keeps the epoch's sums of the loss parts for its log.

use serde_json::{json, Map, Value};
use sparsec_ir::admm::{kept, Phase, Schedule};
use sparsec_ir::interp::{topk_select, Output, State};
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::{Module, Role};
use sparsec_passes::methods::admm::{mask_name, schedule_and_phase, state_names, SetPhase};

use super::{EpochEnd, LossParts, Reconfiguration, Registration, RunMethod, StepEnd};

pub const REGISTRATION: Registration = Registration {
    method: "admm",
    make: from_spec,
};

pub struct Admm {
    layers: Vec<String>,
    /// The epoch's sums of the step's cross-entropy and `P = Σ‖W − Z + U‖²` (in the rounds).
    parts: LossParts,
}

fn from_spec(spec: &MethodSpec) -> Option<Box<dyn RunMethod>> {
    match spec.method {
        Method::Admm { .. } => Some(Box::new(Admm {
            layers: spec.layers.clone(),
            parts: LossParts::new("distance", "distance_squared"),
        })),
        _ => None,
    }
}

/// One selected layer's tensors in the state, by their indices.
struct LayerState {
    layer: String,
    weight: usize,
    z: usize,
    u: usize,
    mask: usize,
    momentum: Option<usize>,
}

fn layer_states(module: &Module, layers: &[String]) -> Result<Vec<LayerState>, String> {
    let find = |name: &str| {
        module
            .param_by_name(name)
            .map(|id| id.0 as usize)
            .ok_or_else(|| format!("the program has no @{name} (ADMM's state)"))
    };
    layers
        .iter()
        .map(|layer| {
            let w = format!("{layer}.weight");
            let weight = find(&w)?;
            let (z, u) = state_names(&w);
            let momentum = module
                .params
                .iter()
                .position(|p| p.role == Role::Momentum(sparsec_ir::ParamId(weight as u32)));
            Ok(LayerState {
                layer: layer.clone(),
                weight,
                z: find(&z)?,
                u: find(&u)?,
                mask: find(&mask_name(&w))?,
                momentum,
            })
        })
        .collect()
}

/// The positions of the `l` largest `|values|` among those the mask keeps, ascending; ties to
/// the lower position.
fn top_within_mask(values: &[f32], mask: &[f32], l: usize) -> Vec<u64> {
    // Pruned positions score below every |value|, so they are chosen only if the mask keeps
    // fewer than `l` (never: a stage keeps at most what the previous one did).
    let scores: Vec<f32> = values
        .iter()
        .zip(mask)
        .map(|(&v, &m)| if m != 0.0 { v.abs() } else { -1.0 })
        .collect();
    let mut out = Vec::with_capacity(l);
    topk_select(&[&scores[..]], l, &mut Vec::new(), &mut out);
    out
}

fn nnz(values: &[f32]) -> usize {
    values.iter().filter(|&&v| v != 0.0).count()
}

impl Admm {
    /// What the boundary before epoch `next` (0-based) calls for; `fresh`: before a new run's
    /// first step, when no phase has trained yet.
    fn boundary(
        &self,
        end: &mut EpochEnd<'_>,
        next: u64,
        fresh: bool,
    ) -> Result<Option<Reconfiguration>, String> {
        let (schedule, current) = schedule_and_phase(end.ir)?;
        let target = schedule.phase_at(next);
        let layers = layer_states(end.module, &self.layers)?;
        let state = &mut *end.state;
        let mut log = Map::new();
        if let (false, Phase::Admm { stage, round }) = (fresh, current) {
            if target != current {
                let report = self.update_z_u(&schedule, stage, &layers, state)?;
                log.insert(
                    "round_end".into(),
                    json!({ "stage": stage, "round": round }),
                );
                log.insert("z_update".into(), report);
                if !matches!(target, Phase::Admm { stage: s, .. } if s == stage) {
                    let report = self.hard_prune(&schedule, stage, &layers, state)?;
                    log.insert("hard_prune".into(), json!({ "stage": stage }));
                    log.insert("nnz".into(), report);
                }
            }
        }
        let last = end.module.train.as_ref().is_some_and(|t| next >= t.epochs);
        if let (false, Some(stage)) = (fresh, current.stage()) {
            if target.stage() != current.stage() || last {
                // The accuracy of the stage's last epoch (before its hard prune, if it has no
                // retraining).
                log.insert(
                    "stage_end".into(),
                    json!({ "stage": stage, "test_accuracy": end.test_accuracy }),
                );
                log.insert("nnz".into(), nnz_report(&layers, state));
            }
        }
        if let Phase::Admm { stage, round: 1 } = target {
            if fresh || target != current {
                self.start_stage(&schedule, stage, &layers, state)?;
                log.insert("stage_start".into(), json!(stage));
                log.insert(
                    "keep".into(),
                    Value::Object(
                        layers
                            .iter()
                            .map(|l| {
                                let n = state.values[l.weight].len();
                                let ratio = schedule.keep_ratio(&l.layer, stage).unwrap_or(1.0);
                                (l.layer.clone(), json!(kept(ratio, n)))
                            })
                            .collect(),
                    ),
                );
            }
        }
        if let Some(rho) = schedule.rho_at(target) {
            log.insert("rho".into(), json!(rho));
        }
        if !log.is_empty() {
            log.insert("phase".into(), json!(target.to_string()));
        }
        end.log.extend(log);
        Ok((target != current).then(|| Reconfiguration {
            pass: Box::new(SetPhase { phase: target }),
        }))
    }

    /// How many weights layer `l` keeps in stage `stage`.
    fn kept_in(schedule: &Schedule, l: &LayerState, stage: u64, n: usize) -> Result<usize, String> {
        let ratio = schedule
            .keep_ratio(&l.layer, stage)
            .ok_or_else(|| format!("ADMM's `keep` gives no ratio for `{}`", l.layer))?;
        Ok(kept(ratio, n))
    }

    /// `Z ← Π(W)`, `U ← 0`.
    fn start_stage(
        &self,
        schedule: &Schedule,
        stage: u64,
        layers: &[LayerState],
        state: &mut State<f32>,
    ) -> Result<(), String> {
        for l in layers {
            let w = state.values[l.weight].clone();
            let keep = Self::kept_in(schedule, l, stage, w.len())?;
            let chosen = top_within_mask(&w, &state.values[l.mask], keep);
            let z = &mut state.values[l.z];
            z.fill(0.0);
            for &i in &chosen {
                z[i as usize] = w[i as usize];
            }
            state.values[l.u].fill(0.0);
        }
        Ok(())
    }

    /// `Z ← Π(W + U)`, `U ← U + W − Z`; reports per layer nnz(Z), ‖W − Z‖ (how far the weights
    /// are from the constraint set) and ‖Z − Z_old‖.
    fn update_z_u(
        &self,
        schedule: &Schedule,
        stage: u64,
        layers: &[LayerState],
        state: &mut State<f32>,
    ) -> Result<Value, String> {
        let mut report = Map::new();
        for l in layers {
            let w = &state.values[l.weight];
            let v: Vec<f32> = w
                .iter()
                .zip(&state.values[l.u])
                .map(|(w, u)| w + u)
                .collect();
            let keep = Self::kept_in(schedule, l, stage, v.len())?;
            let chosen = top_within_mask(&v, &state.values[l.mask], keep);
            let mut z = vec![0f32; v.len()];
            for &i in &chosen {
                z[i as usize] = v[i as usize];
            }
            let (mut primal, mut moved) = (0f64, 0f64);
            for ((&wi, &zi), &old) in w.iter().zip(&z).zip(&state.values[l.z]) {
                primal += f64::from(wi - zi).powi(2);
                moved += f64::from(zi - old).powi(2);
            }
            let w = w.clone();
            for ((u, &wi), &zi) in state.values[l.u].iter_mut().zip(&w).zip(&z) {
                *u += wi - zi;
            }
            report.insert(
                l.layer.clone(),
                json!({
                    "nnz_z": nnz(&z), "kept": keep,
                    "w_minus_z": primal.sqrt(), "z_moved": moved.sqrt(),
                }),
            );
            state.values[l.z] = z;
        }
        Ok(Value::Object(report))
    }

    /// The hard prune: the mask becomes the top-`l` of `|W|` within it; the weight and its
    /// momentum are zeroed outside it. Reports per layer nnz(W).
    fn hard_prune(
        &self,
        schedule: &Schedule,
        stage: u64,
        layers: &[LayerState],
        state: &mut State<f32>,
    ) -> Result<Value, String> {
        for l in layers {
            let n = state.values[l.weight].len();
            let keep = Self::kept_in(schedule, l, stage, n)?;
            let chosen = top_within_mask(&state.values[l.weight], &state.values[l.mask], keep);
            let mut mask = vec![0f32; n];
            for &i in &chosen {
                mask[i as usize] = 1.0;
            }
            for (x, &m) in state.values[l.weight].iter_mut().zip(&mask) {
                *x *= m;
            }
            if let Some(b) = l.momentum {
                for (x, &m) in state.values[b].iter_mut().zip(&mask) {
                    *x *= m;
                }
            }
            state.values[l.mask] = mask;
        }
        Ok(nnz_report(layers, state))
    }
}

/// Per layer: non-zero weights, the mask's size, the layer's size.
fn nnz_report(layers: &[LayerState], state: &State<f32>) -> Value {
    Value::Object(
        layers
            .iter()
            .map(|l| {
                let w = &state.values[l.weight];
                (
                    l.layer.clone(),
                    json!({
                        "nnz": nnz(w),
                        "mask": nnz(&state.values[l.mask]),
                        "size": w.len(),
                    }),
                )
            })
            .collect(),
    )
}

/// `(ce, P)` from a step's outputs in an ADMM round: after `(loss, logits)`.
fn loss_parts(outputs: &[Output<f32>]) -> Option<(f64, f64)> {
    let scalar = |i: usize| match outputs.get(i) {
        Some(Output::Float(t)) if t.data.len() == 1 => Some(f64::from(t.data[0])),
        _ => None,
    };
    Some((scalar(2)?, scalar(3)?))
}

impl RunMethod for Admm {
    /// The stages are laid out from the run's end: more epochs would move every one.
    fn schedule_depends_on_length(&self) -> bool {
        true
    }

    fn reconfigures(&self) -> bool {
        true
    }

    fn before_training(
        &mut self,
        start: &mut EpochEnd<'_>,
    ) -> Result<Option<Reconfiguration>, String> {
        self.boundary(start, 0, true)
    }

    fn after_step(&mut self, end: &StepEnd<'_>) -> Result<(), String> {
        if let Some((ce, p)) = loss_parts(end.outputs) {
            self.parts.add(ce, p);
        }
        Ok(())
    }

    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        self.parts.log_and_reset(&mut end.log);
        self.boundary(end, end.epoch + 1, false)
    }

    fn checkpoint(&self) -> Value {
        self.parts.checkpoint()
    }

    fn restore(&mut self, saved: &Value) -> Result<(), String> {
        self.parts.restore("ADMM", saved)
    }
}
