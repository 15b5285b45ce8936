//! PruneTrain's compile side (docs/methods.md §4): the group-lasso penalty as IR in the loss, so
//! that autodiff differentiates it with everything else ([`penalty`]); the channel-liveness
//! analysis the run side reconfigures by ([`liveness`]); and the structural pass that fixes λ
//! once it is calibrated ([`FixLambda`]).
//!
//! The groups are those of the selected layers' unit groups
//! ([`crate::structural::units::unit_group`]): every parameter axis that carries a selected
//! layer's units, one group per index along it. That is the spec's list: a convolution's output
//! channels `W[o,:,:,:]`, the input channels `W[:,i,:,:]` of a convolution that reads a selected
//! layer (never the first one, which reads the data), a dense layer's input columns `W[:,j]`
//! (after a flatten, each column is its own group), and a hidden dense layer's rows `W[o,:]`;
//! the classifier's outputs are never a group (they are never a selected layer's units).

pub mod liveness;
pub mod penalty;

use sparsec_ir::func_names::FORWARD;
use sparsec_ir::remap::Remap;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::{Module, ParamId, Role};

use super::penalty::{PenaltyPass, SplitOutputs};
use super::{CompileMethod, Registration};
use crate::pipeline::Pass;
use crate::structural::units::unit_group;
use crate::structural::StructuralPass;

pub const REGISTRATION: Registration = Registration {
    method: "prunetrain",
    passes: &[penalty::PENALTY_PASS, penalty::OUTPUTS_PASS],
    make: from_spec,
};

pub struct PruneTrain {
    spec: MethodSpec,
    lambda: Option<f64>,
}

pub fn from_spec(spec: &MethodSpec) -> Option<Box<dyn CompileMethod>> {
    match spec.method {
        Method::PruneTrain { lambda, .. } => Some(Box::new(PruneTrain {
            spec: spec.clone(),
            lambda,
        })),
        _ => None,
    }
}

/// The penalty's groups: every (weight, axis) that carries the units of a selected layer, each
/// once, in the order the layers are selected.
pub fn penalty_groups(module: &Module, layers: &[String]) -> Result<Vec<(ParamId, usize)>, String> {
    let mut out: Vec<(ParamId, usize)> = Vec::new();
    for layer in layers {
        let group = unit_group(module, layer)
            .and_then(|group| group.check_dense(module).map(|()| group))
            .map_err(|e| format!("PruneTrain cannot remove channels of `{layer}`: {e}"))?;
        for &(id, axis, _) in &group.params {
            let p = module.param(id);
            if p.role == Role::Weight && p.name.ends_with(".weight") && !out.contains(&(id, axis)) {
                out.push((id, axis));
            }
        }
    }
    Ok(out)
}

impl CompileMethod for PruneTrain {
    fn name(&self) -> &'static str {
        "prunetrain"
    }

    fn validate(&self, module: &Module) -> Result<(), String> {
        if module.func(FORWARD).is_none() {
            return Err(format!("the program has no @{FORWARD}"));
        }
        penalty_groups(module, &self.spec.layers).map(|_| ())
    }

    fn passes_before_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(PenaltyPass(penalty::GroupLasso {
            layers: self.spec.layers.clone(),
            lambda: self.lambda.unwrap_or(0.0),
        }))]
    }

    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(SplitOutputs {
            name: penalty::OUTPUTS_PASS,
            loc: penalty::LOC,
        })]
    }
}

/// Fix PruneTrain's λ in the program's method line: a structural pass that changes no shape,
/// so the training loop recompiles with the penalty weighted as calibrated.
pub struct FixLambda {
    pub lambda: f64,
}

impl StructuralPass for FixLambda {
    fn describe(&self) -> String {
        format!("fix the group-lasso weight λ = {:e}", self.lambda)
    }

    fn run(&self, module: &Module) -> Result<(Module, Remap), String> {
        let mut out = module.clone();
        match out.method.as_mut().map(|m| &mut m.method) {
            Some(Method::PruneTrain { lambda, .. }) => *lambda = Some(self.lambda),
            _ => return Err("the program's method is not prunetrain".into()),
        }
        Ok((out, Remap::new()))
    }
}
