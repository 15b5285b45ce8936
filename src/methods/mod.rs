//! The run side of each sparse-training method: hooks the training loop calls around steps and
//! epochs. One file per method, one entry in [`REGISTRY`]; the loop knows no method by name.
//!
//! A hook may ask for a [`Reconfiguration`]: a structural pass over the program at stage `ir`
//! that changes parameter shapes (units or channels removed). The loop then recompiles the
//! program from stage `ir`, rebuilds the compiled functions, and carries every piece of state
//! (weights, biases, momentum buffers) over through the pass's [`Remap`].

pub mod dropback;

use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::State;
use sparsec_ir::remap::Remap;
use sparsec_ir::spec::MethodSpec;
use sparsec_ir::Module;
use sparsec_passes::structural::StructuralPass;

/// What a hook sees at the end of an epoch.
pub struct EpochEnd<'a> {
    /// The epoch just trained and evaluated (0-based).
    pub epoch: u64,
    /// Steps done so far.
    pub step: u64,
    /// The program as it is compiled now (stage `opt`), and at stage `ir`.
    pub module: &'a Module,
    pub ir: &'a Module,
    pub state: &'a State<f32>,
}

/// A change of the program's structure asked for by a hook: the structural pass to run on the
/// program at stage `ir`.
pub struct Reconfiguration {
    pub pass: Box<dyn StructuralPass>,
}

/// What a method does while a program trains. Every hook has a default that does nothing.
pub trait RunMethod {
    /// Functions the loop must compile besides `@forward` and `@train_step`.
    fn extra_functions(&self) -> &'static [&'static str] {
        &[]
    }

    /// The function that runs the steps of `epoch` (0-based).
    fn step_function(&self, _epoch: u64) -> &'static str {
        TRAIN_STEP
    }

    /// Bring the method's part of the state in line with `steps` steps done: called before the
    /// first step of a session and after every step (so evaluation sees it too).
    fn sync_state(&self, _module: &Module, _steps: u64, _state: &mut State<f32>) {}

    /// After an epoch has been trained and evaluated, before its checkpoint: a reconfiguration,
    /// if the method asks for one now.
    fn after_epoch(&mut self, _end: &EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        Ok(None)
    }
}

/// The dense program's run side: nothing to do.
pub struct Dense;

impl RunMethod for Dense {}

/// A method's entry in the registry.
pub struct Registration {
    /// The method's name, as in the model file.
    pub method: &'static str,
    /// The run side, if the spec is this method's.
    pub make: fn(&MethodSpec) -> Option<Box<dyn RunMethod>>,
}

/// Every method `sparsec train` carries out. Adding a method: its file, and one line here.
pub const REGISTRY: &[Registration] = &[dropback::REGISTRATION];

/// The run side of a program's method, or why `sparsec train` refuses it.
pub fn run_side(spec: Option<&MethodSpec>) -> Result<Box<dyn RunMethod>, String> {
    let Some(spec) = spec else {
        return Ok(Box::new(Dense));
    };
    REGISTRY.iter().find_map(|r| (r.make)(spec)).ok_or_else(|| {
        let trained: Vec<&str> = REGISTRY.iter().map(|r| r.method).collect();
        format!(
            "declares the sparse-training method `{}`, which `sparsec train` does not carry \
                 out yet (it trains {}); remove the `method` block to train the dense baseline",
            spec.method.name(),
            trained.join(", ")
        )
    })
}

/// A remap's effect on a run, for its metrics: the parameters whose shapes changed.
pub fn changed_shapes(old: &Module, new: &Module, remap: &Remap) -> Vec<(String, Vec<usize>)> {
    new.params
        .iter()
        .filter(|p| remap.changes(&p.name))
        .filter(|p| {
            old.param_by_name(&p.name)
                .is_some_and(|id| old.param(id).ty.shape != p.ty.shape)
        })
        .map(|p| (p.name.clone(), p.ty.shape.clone()))
        .collect()
}
