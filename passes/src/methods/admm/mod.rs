//! Progressive ADMM's compile side (docs/methods.md §3): the state it keeps per selected
//! weight, the penalty in the loss, and the masked storage after a hard prune. The schedule (which
//! phase a run is in, ρ per round, each stage's keep ratios) is [`sparsec_ir::admm`]; the method
//! line's `at` names the phase the program is built for, and the run side moves it on with
//! [`SetPhase`] (a structural pass that changes no shape).
//!
//! - **State.** Every selected layer's weight `W` gets, of its shape: `<W>.admm_z` (the
//!   projection `Z`) and `<W>.admm_u` (the scaled dual `U`) with [`Role::State`], zero at first;
//!   and its mask `<W>.mask` with [`Role::Mask`], ones at first. All are read by the step, never
//!   trained (autodiff differentiates weights only), and in every checkpoint. The run side
//!   writes them between steps, outside the gradient (the authors' PyTorch code leaves `U` on
//!   the autograd tape; docs/methods.md §3's decision).
//! - **Penalty**, in the ADMM rounds only: the `admm_penalty` pass adds `ρ/2 · P` to the loss,
//!   `P = Σ_i ‖W_i − Z_i + U_i‖²` (the squared norm, as published; not NNI's square root), so
//!   autodiff gives `ρ (W_i − Z_i + U_i)`; `admm_outputs` returns `@forward` to the plain loss and
//!   appends `(ce, P)` to `@train_step`'s results. ρ is the round's ([`Schedule::rho_at`]).
//! - **Masks.** From the first hard prune on, the selected weights have `storage=masked`, and
//!   autodiff keeps their updates on the mask (the gradient and the new value are multiplied by
//!   it), so a pruned weight stays exactly zero and so does its momentum.

pub mod rules;

use sparsec_ir::admm::{Phase, Schedule};
use sparsec_ir::remap::Remap;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::{Init, Module, Op, Param, ParamId, Role, Storage, Value};

use super::penalty::{Emitter, Penalty, PenaltyPass, SplitOutputs};
use super::{CompileMethod, Registration};
use crate::pipeline::Pass;
use crate::structural::StructuralPass;

pub const PENALTY_PASS: &str = "admm_penalty";
pub const OUTPUTS_PASS: &str = "admm_outputs";
/// The location of the penalty's instructions.
pub const LOC: &str = "admm";

pub const REGISTRATION: Registration = Registration {
    method: "admm",
    passes: &[PENALTY_PASS, OUTPUTS_PASS],
    make: from_spec,
};

pub struct Admm {
    spec: MethodSpec,
}

pub fn from_spec(spec: &MethodSpec) -> Option<Box<dyn CompileMethod>> {
    match spec.method {
        Method::Admm { .. } => Some(Box::new(Admm { spec: spec.clone() })),
        _ => None,
    }
}

/// The names of `Z` and `U` of weight `w`.
pub fn state_names(w: &str) -> (String, String) {
    (format!("{w}.admm_z"), format!("{w}.admm_u"))
}

/// The name of weight `w`'s mask.
pub fn mask_name(w: &str) -> String {
    format!("{w}.mask")
}

/// The schedule of `module`'s ADMM method over its run, and the phase it is built for.
pub fn schedule_and_phase(module: &Module) -> Result<(Schedule, Phase), String> {
    let spec = module.method.as_ref().ok_or("the program has no method")?;
    let epochs = module
        .train
        .as_ref()
        .ok_or("ADMM's schedule needs the program's `train` settings")?
        .epochs;
    let schedule = Schedule::new(&spec.method, epochs)?;
    let phase = match &spec.method {
        Method::Admm { at: Some(at), .. } => *at,
        _ => schedule.phase_at(0),
    };
    Ok((schedule, phase))
}

/// Each selected layer's weight with its mask, in parameter-table order.
pub fn masks(module: &Module, spec: &MethodSpec) -> Result<Vec<(ParamId, ParamId)>, String> {
    spec.layers
        .iter()
        .filter_map(|layer| module.param_by_name(&format!("{layer}.weight")))
        .map(|w| {
            let name = mask_name(&module.param(w).name);
            module
                .param_by_name(&name)
                .filter(|&id| module.param(id).role == Role::Mask(w))
                .map(|m| (w, m))
                .ok_or_else(|| format!("@{} has no mask @{name}", module.param(w).name))
        })
        .collect()
}

/// The storage `phase` calls for on each selected weight: `masked` once a mask is fixed, with
/// the entries the mask keeps (those of the stage whose hard prune fixed it: the previous
/// stage's in a later stage's rounds, this stage's in its retraining).
pub fn storages(
    module: &Module,
    spec: &MethodSpec,
    phase: Phase,
) -> Result<Vec<(ParamId, Storage)>, String> {
    let (schedule, _) = schedule_and_phase(module)?;
    let mask_stage = phase.mask_stage();
    masks(module, spec)?
        .into_iter()
        .map(|(w, _)| {
            let Some(stage) = mask_stage else {
                return Ok((w, Storage::Dense));
            };
            let p = module.param(w);
            let layer = p.name.strip_suffix(".weight").unwrap_or(&p.name);
            let ratio = schedule
                .keep_ratio(layer, stage)
                .ok_or_else(|| format!("ADMM's `keep` gives no ratio for `{layer}`"))?;
            let nnz = sparsec_ir::admm::kept(ratio, p.ty.num_elements()) as u64;
            Ok((w, Storage::Masked { nnz }))
        })
        .collect()
}

/// Give the selected weights the storage `phase` calls for ([`storages`]).
fn set_storage(module: &mut Module, spec: &MethodSpec, phase: Phase) -> Result<(), String> {
    for (w, storage) in storages(module, spec, phase)? {
        module.params[w.0 as usize].storage = storage;
    }
    Ok(())
}

/// Each selected layer's weight with its `Z` and `U`, in parameter-table order.
pub fn selected(
    module: &Module,
    spec: &MethodSpec,
) -> Result<Vec<(ParamId, ParamId, ParamId)>, String> {
    spec.layers
        .iter()
        .filter_map(|layer| module.param_by_name(&format!("{layer}.weight")))
        .map(|w| {
            let (z, u) = state_names(&module.param(w).name);
            let find = |name: &str| {
                module
                    .param_by_name(name)
                    .filter(|&id| module.param(id).role == Role::State(w))
                    .ok_or_else(|| format!("@{} has no ADMM state @{name}", module.param(w).name))
            };
            Ok((w, find(&z)?, find(&u)?))
        })
        .collect()
}

impl CompileMethod for Admm {
    fn name(&self) -> &'static str {
        "admm"
    }

    /// The state is there, and the weights are stored as the phase says.
    fn validate(&self, module: &Module) -> Result<(), String> {
        selected(module, &self.spec)?;
        if !matches!(self.spec.method, Method::Admm { at: Some(_), .. }) {
            return Err(
                "the ADMM method line must name the phase the program is built for \
                        (`at=pretrain`, `at=admm(stage=S, round=R)` or `at=retrain(stage=S)`)"
                    .into(),
            );
        }
        let (_, phase) = schedule_and_phase(module)?;
        for (w, want) in storages(module, &self.spec, phase)? {
            let p = module.param(w);
            if p.storage != want {
                let name = |s: Storage| match s {
                    Storage::Masked { nnz } => format!("masked(nnz={nnz})"),
                    _ => "dense".to_owned(),
                };
                return Err(format!(
                    "@{} is stored `{}`, but ADMM at {phase} stores it `{}`",
                    p.name,
                    name(p.storage),
                    name(want)
                ));
            }
        }
        Ok(())
    }

    /// `Z` and `U` for every selected weight, zero, and its mask, ones, each with its own
    /// stream; the weights stored as the program's phase says.
    fn assign_storage(&self, module: &mut Module) -> Result<(), String> {
        let mut stream = module
            .params
            .iter()
            .map(|p| p.stream + 1)
            .max()
            .unwrap_or(0);
        let weights: Vec<ParamId> = self
            .spec
            .layers
            .iter()
            .filter_map(|layer| module.param_by_name(&format!("{layer}.weight")))
            .collect();
        for w in weights {
            let weight = module.param(w).clone();
            let (z, u) = state_names(&weight.name);
            let mask = mask_name(&weight.name);
            for (name, init, role) in [
                (z, Init::Zeros, Role::State(w)),
                (u, Init::Zeros, Role::State(w)),
                (mask, Init::Ones, Role::Mask(w)),
            ] {
                if module.param_by_name(&name).is_some() {
                    return Err(format!("cannot add ADMM's @{name}: the name is taken"));
                }
                module.add_param(Param {
                    name,
                    ty: weight.ty.clone(),
                    init,
                    stream,
                    storage: Storage::Dense,
                    role,
                });
                stream += 1;
            }
        }
        // The phase is resolved here, once: from now on the method line names it.
        let (_, phase) = schedule_and_phase(module)?;
        if let Some(Method::Admm { at, .. }) = module.method.as_mut().map(|m| &mut m.method) {
            *at = Some(phase);
        }
        set_storage(module, &self.spec, phase)
    }

    fn selected_storage(&self, module: &Module) -> Result<Vec<(ParamId, Storage)>, String> {
        let phase = match self.spec.method {
            Method::Admm { at: Some(at), .. } => at,
            _ => schedule_and_phase(module)?.1,
        };
        storages(module, &self.spec, phase)
    }

    fn passes_before_autodiff(&self) -> Vec<Box<dyn Pass>> {
        let Some(rho) = self.rho() else {
            return Vec::new();
        };
        vec![Box::new(PenaltyPass(AdmmPenalty {
            spec: self.spec.clone(),
            rho,
        }))]
    }

    fn eqsat_rules(&self) -> crate::eqsat::rules::RuleSource {
        rules::phase_rules
    }

    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        if self.rho().is_none() {
            return Vec::new();
        }
        vec![Box::new(SplitOutputs {
            name: OUTPUTS_PASS,
            loc: LOC,
        })]
    }
}

impl Admm {
    /// ρ of the phase the method line names, `None` outside the ADMM rounds (and without `at`,
    /// which [`CompileMethod::validate`] refuses).
    fn rho(&self) -> Option<f64> {
        match &self.spec.method {
            Method::Admm {
                rho,
                rho_growth,
                at: Some(at),
                ..
            } => sparsec_ir::admm::rho_in(*rho, *rho_growth, *at),
            _ => None,
        }
    }
}

/// Adds `ρ/2 · Σ_i ‖W_i − Z_i + U_i‖²` to `@forward`'s loss.
pub struct AdmmPenalty {
    pub spec: MethodSpec,
    pub rho: f64,
}

impl Penalty for AdmmPenalty {
    fn pass_name(&self) -> &'static str {
        PENALTY_PASS
    }
    fn loc(&self) -> &'static str {
        LOC
    }
    fn weight(&self) -> f64 {
        self.rho / 2.0
    }
    fn build(&self, module: &Module, em: &mut Emitter<'_>) -> Result<Value, String> {
        let mut norms = Vec::new();
        for (w, z, u) in selected(module, &self.spec)? {
            let w = em.push(Op::Param(w), &[])?;
            let z = em.push(Op::Param(z), &[])?;
            let u = em.push(Op::Param(u), &[])?;
            let d = em.push(Op::Sub, &[w, z])?;
            let d = em.push(Op::Add, &[d, u])?;
            let sq = em.push(Op::Mul, &[d, d])?;
            norms.push(em.sum_all(sq)?);
        }
        em.sum_scalars(&norms)
    }
}

/// Move the program to another phase of ADMM's schedule: the method line's `at` (so the step is
/// built with that round's ρ, or without the penalty) and the selected weights' storage (`masked`
/// once a mask is fixed). No shape changes; the run side writes `Z`, `U` and the masks.
pub struct SetPhase {
    pub phase: Phase,
}

impl StructuralPass for SetPhase {
    fn describe(&self) -> String {
        format!("ADMM: move on to {}", self.phase)
    }

    fn run(&self, module: &Module) -> Result<(Module, Remap), String> {
        let mut out = module.clone();
        let spec = match out.method.as_mut() {
            Some(
                spec @ MethodSpec {
                    method: Method::Admm { .. },
                    ..
                },
            ) => {
                if let Method::Admm { at, .. } = &mut spec.method {
                    *at = Some(self.phase);
                }
                spec.clone()
            }
            _ => return Err("the program's method is not admm".into()),
        };
        set_storage(&mut out, &spec, self.phase)?;
        Ok((out, Remap::new()))
    }
}
