//! Progressive ADMM's compile side (docs/methods.md §3), as far as it is built: the state it keeps
//! per selected weight and the penalty in the loss. **Not trained yet**: the run side (the
//! initial projection, the `Z`/`U` updates after each round, ρ's growth, the hard prune, masked
//! retraining and the progressive stages) is still to come, so `sparsec train` refuses the method.
//!
//! - **State.** Every selected layer's weight `W` gets two parameters of its shape with
//!   [`Role::State`]: `<W>.admm_z` (the projection `Z`) and `<W>.admm_u` (the scaled dual `U`),
//!   zero at first, read by the step, never trained (autodiff differentiates weights only), in
//!   every checkpoint. The run side writes them between steps, outside the gradient (the authors'
//!   PyTorch code leaves `U` on the autograd tape; docs/methods.md §3's decision).
//! - **Penalty.** The `admm_penalty` pass adds `ρ/2 · P` to the loss, `P = Σ_i ‖W_i − Z_i + U_i‖²`
//!   (the squared norm, as published; not NNI's square root), so autodiff gives
//!   `ρ (W_i − Z_i + U_i)`; `admm_outputs` returns `@forward` to the plain loss and appends
//!   `(ce, P)` to `@train_step`'s results. ρ is the model file's `rho` (the first round's).

use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::{Init, Module, Op, Param, ParamId, Role, Storage, Value};

use super::penalty::{Emitter, Penalty, PenaltyPass, SplitOutputs};
use super::{CompileMethod, Registration};
use crate::pipeline::Pass;

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
    rho: f64,
}

pub fn from_spec(spec: &MethodSpec) -> Option<Box<dyn CompileMethod>> {
    match spec.method {
        Method::Admm { rho, .. } => Some(Box::new(Admm {
            spec: spec.clone(),
            rho,
        })),
        _ => None,
    }
}

/// The names of `Z` and `U` of weight `w`.
pub fn state_names(w: &str) -> (String, String) {
    (format!("{w}.admm_z"), format!("{w}.admm_u"))
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

    fn validate(&self, module: &Module) -> Result<(), String> {
        selected(module, &self.spec).map(|_| ())
    }

    /// `Z` and `U` for every selected weight, zero, each with its own stream.
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
            for name in [z, u] {
                if module.param_by_name(&name).is_some() {
                    return Err(format!("cannot add ADMM's @{name}: the name is taken"));
                }
                module.add_param(Param {
                    name,
                    ty: weight.ty.clone(),
                    init: Init::Zeros,
                    stream,
                    storage: Storage::Dense,
                    role: Role::State(w),
                });
                stream += 1;
            }
        }
        Ok(())
    }

    fn passes_before_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(PenaltyPass(AdmmPenalty {
            spec: self.spec.clone(),
            rho: self.rho,
        }))]
    }

    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(SplitOutputs {
            name: OUTPUTS_PASS,
            loc: LOC,
        })]
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
