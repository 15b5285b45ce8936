//! Dropback's run side (docs/methods.md §1): after `freeze_after` epochs (from 1-based epoch
//! `freeze_after + 1` on), the step that keeps the tracked set; with `decay_init`, the initial values of untracked weights shrink by
//! `decay` per step.

use sparsec_ir::func_names::{TRAIN_STEP, TRAIN_STEP_FROZEN};
use sparsec_ir::interp::State;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::Module;

use super::{Registration, RunMethod};

pub const REGISTRATION: Registration = Registration {
    method: "dropback",
    make: from_spec,
};

pub struct Dropback {
    freeze_after: Option<u64>,
    decay_init: Option<f64>,
}

fn from_spec(spec: &MethodSpec) -> Option<Box<dyn RunMethod>> {
    match spec.method {
        Method::Dropback {
            freeze_after,
            decay_init,
            ..
        } => Some(Box::new(Dropback {
            freeze_after,
            decay_init,
        })),
        _ => None,
    }
}

/// `decay_init^step` as the factor of the initial values of tracked weights after `step` steps
/// (1 without `decay_init`): computed in f64 from the step alone, rounded to f32 once, so a
/// resumed run has the same factor.
pub fn init_scale(decay_init: Option<f64>, step: u64) -> f32 {
    match decay_init {
        Some(d) => d.powf(step as f64) as f32,
        None => 1.0,
    }
}

impl RunMethod for Dropback {
    fn extra_functions(&self) -> &'static [&'static str] {
        if self.freeze_after.is_some() {
            &[TRAIN_STEP_FROZEN]
        } else {
            &[]
        }
    }

    fn step_function(&self, epoch: u64) -> &'static str {
        match self.freeze_after {
            Some(f) if epoch >= f => TRAIN_STEP_FROZEN,
            _ => TRAIN_STEP,
        }
    }

    fn sync_state(&self, _module: &Module, steps: u64, state: &mut State<f32>) {
        state.init_scale = init_scale(self.decay_init, steps);
    }
}
