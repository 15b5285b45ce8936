//! The run side of each sparse-training method: hooks the training loop calls around steps and
//! epochs. One file per method, one entry in [`REGISTRY`]; the loop knows no method by name.
//!
//! A hook may ask for a [`Reconfiguration`]: a structural pass over the program at stage `ir`
//! that changes parameter shapes (units or channels removed). The loop then recompiles the
//! program from stage `ir`, rebuilds the compiled functions, and carries every piece of state
//! (weights, biases, momentum buffers) over through the pass's [`Remap`].

pub mod activation_density;
pub mod admm;
pub mod dropback;
pub mod prunetrain;

use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Output, State};
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
    /// The parameters and optimizer state; a hook may change them (a projection, a mask)
    /// before the epoch's checkpoint is written.
    pub state: &'a mut State<f32>,
    /// What the hook has to say about the epoch (a statistic, a decision): logged to
    /// metrics.jsonl as one line of kind `method` when not empty.
    pub log: serde_json::Map<String, serde_json::Value>,
    /// The epoch's test accuracy (NaN before training).
    pub test_accuracy: f64,
}

/// What a hook sees after a training step.
pub struct StepEnd<'a> {
    /// The epoch in progress (0-based) and the steps done, this one included.
    pub epoch: u64,
    pub step: u64,
    pub module: &'a Module,
    /// The step function's outputs: `(loss, logits)`, then any the method's passes added
    /// (statistics accumulated inside the compiled step).
    pub outputs: &'a [Output<f32>],
    pub state: &'a State<f32>,
}

/// What a hook sees of the probe: the step run once, before training, on the first minibatch
/// and a copy of the initial state (nothing of it is kept).
pub struct Probe<'a> {
    pub outputs: &'a [Output<f32>],
    /// What the hook has to say about it: logged to metrics.jsonl as a `method` line.
    pub log: serde_json::Map<String, serde_json::Value>,
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

    /// Whether the method reconfigures the program while it trains (returns
    /// [`Reconfiguration`]s): such a program must start at stage `ir`.
    fn reconfigures(&self) -> bool {
        false
    }

    /// Whether the method's schedule is laid out from the run's length (ADMM's stages end with
    /// the run), so that a finished run cannot be extended with `--set epochs=...` as if it
    /// had been asked for more epochs from the start.
    fn schedule_depends_on_length(&self) -> bool {
        false
    }

    /// Whether a fresh run should probe the step before training ([`RunMethod::after_probe`]).
    fn wants_probe(&self) -> bool {
        false
    }

    /// The probe's outputs (a calibration from the first minibatch): may ask for a
    /// reconfiguration before the first step, which the initial checkpoint then records.
    fn after_probe(&mut self, _probe: &mut Probe<'_>) -> Result<Option<Reconfiguration>, String> {
        Ok(None)
    }

    /// A fresh run, before its first step (after the probe): may set the method's state up and
    /// ask for a reconfiguration, as [`RunMethod::after_epoch`] does; what it does is in the
    /// initial checkpoint. `start.epoch` is 0 and nothing has trained yet.
    fn before_training(
        &mut self,
        _start: &mut EpochEnd<'_>,
    ) -> Result<Option<Reconfiguration>, String> {
        Ok(None)
    }

    /// After every training step (its outputs, before the next step runs).
    fn after_step(&mut self, _end: &StepEnd<'_>) -> Result<(), String> {
        Ok(())
    }

    /// After an epoch has been trained and evaluated, before its checkpoint: a reconfiguration,
    /// if the method asks for one now.
    fn after_epoch(&mut self, _end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        Ok(None)
    }

    /// The method's own state for the checkpoint (a penalty weight fixed at the first step,
    /// where a schedule of rounds stands, ...), `Null` when it keeps none. A resumed run gets
    /// it back through [`RunMethod::restore`] before its first step, so it continues exactly.
    fn checkpoint(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Continue from what [`RunMethod::checkpoint`] returned when the checkpoint was written.
    fn restore(&mut self, _saved: &serde_json::Value) -> Result<(), String> {
        Ok(())
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
pub const REGISTRY: &[Registration] = &[
    dropback::REGISTRATION,
    activation_density::REGISTRATION,
    prunetrain::REGISTRATION,
    admm::REGISTRATION,
];

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

/// The epoch's sums of a penalty method's two loss parts, the cross-entropy and the penalty
/// (PruneTrain's group lasso, ADMM's `Σ‖W − Z + U‖²`), for its `method` line; part of the
/// checkpoint, so a run resumed mid-epoch logs the same means.
pub struct LossParts {
    /// The penalty's name in the checkpoint (`<name>_sum`) and in the log (`log_name`).
    name: &'static str,
    log_name: &'static str,
    ce_sum: f64,
    penalty_sum: f64,
    steps: u64,
}

impl LossParts {
    pub fn new(name: &'static str, log_name: &'static str) -> LossParts {
        LossParts {
            name,
            log_name,
            ce_sum: 0.0,
            penalty_sum: 0.0,
            steps: 0,
        }
    }

    pub fn has_steps(&self) -> bool {
        self.steps > 0
    }

    pub fn add(&mut self, ce: f64, penalty: f64) {
        self.ce_sum += ce;
        self.penalty_sum += penalty;
        self.steps += 1;
    }

    /// Log the epoch's means (`ce`, the penalty's log name) when it had steps, and start over.
    pub fn log_and_reset(&mut self, log: &mut serde_json::Map<String, serde_json::Value>) {
        if self.steps > 0 {
            let n = self.steps as f64;
            log.insert("ce".into(), serde_json::json!(self.ce_sum / n));
            log.insert(
                self.log_name.into(),
                serde_json::json!(self.penalty_sum / n),
            );
        }
        (self.ce_sum, self.penalty_sum, self.steps) = (0.0, 0.0, 0);
    }

    pub fn checkpoint(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "ce_sum": self.ce_sum, "steps": self.steps });
        v[format!("{}_sum", self.name)] = serde_json::json!(self.penalty_sum);
        v
    }

    pub fn restore(&mut self, method: &str, saved: &serde_json::Value) -> Result<(), String> {
        let missing = |k: &str| format!("{method}: `{k}` is missing from the checkpoint");
        let penalty = format!("{}_sum", self.name);
        self.ce_sum = saved["ce_sum"].as_f64().ok_or_else(|| missing("ce_sum"))?;
        self.penalty_sum = saved[&penalty].as_f64().ok_or_else(|| missing(&penalty))?;
        self.steps = saved["steps"].as_u64().ok_or_else(|| missing("steps"))?;
        Ok(())
    }
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
