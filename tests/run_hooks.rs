//! The training loop's run-side hooks: every step's outputs reach `after_step`, `after_epoch`
//! may change the state before the epoch's checkpoint, and a hook's own state is checkpointed
//! and given back on resume, so an interrupted run continues exactly.

use std::path::{Path, PathBuf};

mod run_dir;

use run_dir::fresh_dir;
use sparsec::methods::{EpochEnd, Reconfiguration, RunMethod, StepEnd};
use sparsec::runner::Backend;
use sparsec::train::{self, TrainRequest};
use sparsec_ir::interp::Output;

const MODEL: &str = "model hooks {
    input x: [1, 6, 6]
    flat = flatten(x)
    fc1 = dense(flat, 12)
    h1 = tanh(fc1)
    fc2 = dense(h1, 10)
    loss softmax_cross_entropy(fc2)
}
data synthetic { train_samples: 96, test_samples: 32, seed: 4 }
train {
    epochs: 3
    batch: 16
    seed: 9
    optimizer: sgd(lr: 0.1, momentum: 0.9)
}
";

/// Counts the steps it has seen (its checkpointed state) and checks the count against the
/// loop's; at every epoch end it halves `fc2.bias`, a change of state the checkpoint must keep.
#[derive(Default)]
struct CountingHook {
    steps_seen: u64,
}

impl RunMethod for CountingHook {
    fn after_step(&mut self, end: &StepEnd<'_>) -> Result<(), String> {
        self.steps_seen += 1;
        if self.steps_seen != end.step {
            return Err(format!(
                "the hook saw {} steps, the loop is at step {}",
                self.steps_seen, end.step
            ));
        }
        match end.outputs.first() {
            Some(Output::Float(loss)) if loss.data.len() == 1 => Ok(()),
            _ => Err("the step's first output is not the loss".into()),
        }
    }

    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        let bias = end.module.param_by_name("fc2.bias").ok_or("no fc2.bias")?;
        for v in &mut end.state.values[bias.0 as usize] {
            *v *= 0.5;
        }
        Ok(None)
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::json!({ "steps_seen": self.steps_seen })
    }

    fn restore(&mut self, saved: &serde_json::Value) -> Result<(), String> {
        self.steps_seen = saved["steps_seen"].as_u64().ok_or("no steps_seen")?;
        Ok(())
    }
}

fn run(dir: &Path, file: Option<PathBuf>, resume: bool, max_steps: Option<u64>) {
    let req = TrainRequest {
        file,
        data: None,
        out: (!resume).then(|| dir.to_path_buf()),
        sets: max_steps
            .map(|n| vec![("max_steps".to_owned(), n.to_string())])
            .unwrap_or_default(),
        resume: resume.then(|| dir.to_path_buf()),
        init_from: None,
        backend: Backend::Interp,
        threads: Some(1),
        extra_hooks: vec![Box::<CountingHook>::default()],
        profile: false,
    };
    if let Err(failure) = train::train(req) {
        let message = match failure {
            sparsec::driver::Failure::Message(m)
            | sparsec::driver::Failure::Usage(m)
            | sparsec::driver::Failure::Interrupted(m) => m,
            sparsec::driver::Failure::Input(_) => "bad input".into(),
        };
        panic!("training in {} failed: {message}", dir.display());
    }
}

#[test]
fn a_hooks_state_and_its_changes_survive_an_interruption() {
    let scratch = fresh_dir("run-hooks");
    std::fs::create_dir_all(&scratch).unwrap();
    let model = scratch.join("hooks.net");
    std::fs::write(&model, MODEL).unwrap();

    let whole = scratch.join("whole");
    run(&whole, Some(model.clone()), false, None);
    // Stopped in the middle of the second epoch (6 steps an epoch), then twice resumed.
    let cut = scratch.join("cut");
    run(&cut, Some(model.clone()), false, Some(8));
    run(&cut, None, true, Some(13));
    run(&cut, None, true, None);

    let bytes = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(
        bytes(&whole),
        bytes(&cut),
        "the resumed run ends on the same weights"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 18);
}

/// A method's state (`role=state(@w)`) is saved in the checkpoint under its own name and comes
/// back on load, value for value.
#[test]
fn a_weights_state_is_checkpointed() {
    let text = "sparsec-ir 2 stage=ir
module m
data synthetic train_samples=16 test_samples=8 seed=1
train epochs=1 batch=4 seed=1 log_every=1 optimizer=sgd(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=false) schedule=constant

param @fc.weight : f32[3, 4] init=uniform(-0.5, 0.5) stream=0 storage=dense
param @fc.weight.admm_z : f32[3, 4] init=zeros stream=1 storage=dense role=state(@fc.weight)

func @forward(%x: f32[4, 1, 2, 2], %labels: i32[4]) -> (f32[], f32[4, 3]) {
  %0 = reshape %x : f32[4, 4]
  %1 = param @fc.weight : f32[3, 4]
  %2 = matmul_nt %0, %1 : f32[4, 3]
  %3 = softmax_xent %2, %labels : f32[]
  return %3, %2
}
";
    let module = sparsec_ir::parse_module(text).unwrap_or_else(|e| panic!("{e}"));
    let mut state = sparsec_ir::interp::State::<f32>::initial(&module);
    state.values[1] = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let dir = run_dir::fresh_dir("state-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let meta = sparsec::checkpoint::TrainMeta {
        format: sparsec::checkpoint::FORMAT,
        run_id: String::new(),
        step: 3,
        epoch: 0,
        batch_in_epoch: 3,
        epoch_loss_sum: 0.0,
        epoch_correct: 0,
        epoch_seen: 0,
        source: text.into(),
        source_name: "m.ir".into(),
        source_is_ir: true,
        sets: Vec::new(),
        data_dir: None,
        resolved: String::new(),
        program: None,
        hook_states: None,
        train_flops: Some(0),
    };
    let saved = sparsec::checkpoint::save(
        &dir,
        &sparsec::checkpoint::Snapshot {
            module: &module,
            state: &state,
            train: meta,
            tracked_dense: true,
        },
    )
    .unwrap();
    let mut back = sparsec_ir::interp::State::<f32>::initial(&module);
    sparsec::checkpoint::load(&saved, &module, &mut back).unwrap();
    assert_eq!(back.values[1], state.values[1]);
    assert_eq!(back.values[0], state.values[0]);
}
