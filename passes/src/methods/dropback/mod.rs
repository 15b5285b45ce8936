//! Dropback's compile side (docs/methods.md §1, docs/dropback.md): tracked storage with a
//! budget per parameter, the selection pass after autodiff ([`select`]), and the rewrite rules
//! that regenerate weights instead of reading them and fuse the update into the top-k selection
//! ([`rules`]).

pub mod rules;
pub mod select;

use sparsec_ir::dropback::resolve_budgets;
use sparsec_ir::spec::{DropbackScope, Method, MethodSpec};
use sparsec_ir::{Module, ParamId, Storage};

use super::{selected_params, CompileMethod, Registration};
use crate::eqsat::rules::RuleSource;
use crate::pipeline::Pass;

/// Dropback's settings, as the method line gives them.
pub struct Dropback {
    spec: MethodSpec,
    k: u64,
    scope: DropbackScope,
}

pub const REGISTRATION: Registration = Registration {
    method: "dropback",
    passes: &[select::PASS_NAME],
    make: from_spec,
};

/// The compile side, if `spec` is Dropback's.
pub fn from_spec(spec: &MethodSpec) -> Option<Box<dyn CompileMethod>> {
    match spec.method {
        Method::Dropback { k, scope, .. } => Some(Box::new(Dropback {
            spec: spec.clone(),
            k,
            scope,
        })),
        _ => None,
    }
}

impl CompileMethod for Dropback {
    fn name(&self) -> &'static str {
        "dropback"
    }

    /// Momentum is refused: its buffers would be dense O(N) state, which Dropback exists to
    /// avoid (the paper's setting is plain SGD). Weight decay needs no state and is allowed.
    fn validate(&self, module: &Module) -> Result<(), String> {
        match &module.train {
            Some(train) if train.optimizer.momentum != 0.0 => Err(format!(
                "Dropback trains with plain SGD: momentum {} would keep a dense buffer of every \
                 weight, the O(N) state Dropback exists to avoid; set momentum to 0",
                train.optimizer.momentum
            )),
            _ => Ok(()),
        }
    }

    /// Every weight and bias of the selected layers becomes `tracked`, each with its budget
    /// resolved here, once, from `k` and the scope.
    fn assign_storage(&self, module: &mut Module) -> Result<(), String> {
        for (id, storage) in self.selected_storage(module)? {
            module.params[id.0 as usize].storage = storage;
        }
        Ok(())
    }

    fn selected_storage(&self, module: &Module) -> Result<Vec<(ParamId, Storage)>, String> {
        let selected = selected_params(module, &self.spec);
        let sizes: Vec<u64> = selected
            .iter()
            .map(|&i| module.params[i].ty.num_elements() as u64)
            .collect();
        Ok(selected
            .iter()
            .zip(resolve_budgets(self.k, self.scope, &sizes))
            .map(|(&i, budget)| (ParamId(i as u32), Storage::Tracked { budget }))
            .collect())
    }

    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(select::DropbackPass)]
    }

    fn eqsat_rules(&self) -> RuleSource {
        rules::phase_rules
    }
}
