//! Progressive ADMM (docs/methods.md §3, ADMM-1's invariants): the penalty against an
//! independent computation on both backends; `Z` and `U` never trained; through a whole
//! progressive run, `nnz(Z) ≤ l` after every `Z` update, `nnz(W) = l` after every hard prune,
//! weights and momentum zero outside the mask after every masked step and nnz never growing;
//! the interpreter and the JIT ending on the same bits; runs resumed mid-round, at a phase
//! boundary and mid-retraining ending on the same bits as the run that was not interrupted; and
//! the sparse products the optimiser picks for masked weights equal to the dense masked step.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

mod run_dir;

use run_dir::{fresh_dir, metrics_lines as lines, write_file as write};
use sparsec::driver::{compile_to, program_from_source, CompileOptions};
use sparsec::methods::{EpochEnd, Reconfiguration, RunMethod, StepEnd};
use sparsec::runner::{Backend, Runner};
use sparsec_ir::admm::Phase;
use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Input, Output, State};
use sparsec_ir::spec::Method;
use sparsec_ir::{Module, Role, Stage, Storage};

const MLP: &str = "model mlp {
    input x: [1, 4, 4]
    flat = flatten(x)
    fc1 = dense(flat, 8)
    h1 = relu(fc1)
    fc2 = dense(h1, 3)
    loss softmax_cross_entropy(fc2)
}
data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
train { epochs: 1, batch: 4, optimizer: sgd(lr: 0.1, momentum: 0.9) }
method admm { keep: 0.25, rho: 0.02, rounds: 1, epochs_per_round: 1, retrain_epochs: 0 }
";

fn scalar(out: &Output<f32>) -> f64 {
    match out {
        Output::Float(t) if t.data.len() == 1 => f64::from(t.data[0]),
        _ => panic!("a scalar output"),
    }
}

#[test]
fn the_penalty_is_rho_half_the_squared_distance_and_z_u_are_never_trained() {
    let Ok(program) = program_from_source("mlp.net", MLP.to_owned(), false, &[]) else {
        panic!("compiles")
    };
    let Ok(module) = compile_to(
        &program,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    ) else {
        panic!("optimises")
    };
    let mut state = State::<f32>::initial(&module);
    // Z and U somewhere other than zero, deterministic.
    let mut filled = 0;
    for (i, p) in module.params.iter().enumerate() {
        if matches!(p.role, Role::State(_)) {
            for (j, v) in state.values[i].iter_mut().enumerate() {
                *v = (((i * 31 + j * 17) % 23) as f32 - 11.0) / 40.0;
            }
            filled += 1;
        }
    }
    assert_eq!(filled, 4, "Z and U of fc1 and fc2");
    // Σ ‖W − Z + U‖² computed here, in f64.
    let mut want = 0f64;
    for layer in ["fc1", "fc2"] {
        let at = |n: String| module.param_by_name(&n).unwrap().0 as usize;
        let w = &state.values[at(format!("{layer}.weight"))];
        let z = &state.values[at(format!("{layer}.weight.admm_z"))];
        let u = &state.values[at(format!("{layer}.weight.admm_u"))];
        want += w
            .iter()
            .zip(z)
            .zip(u)
            .map(|((w, z), u)| (f64::from(*w) - f64::from(*z) + f64::from(*u)).powi(2))
            .sum::<f64>();
    }
    let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let labels = [0i32, 1, 2, 1];
    let mut finals = Vec::new();
    for backend in [Backend::Interp, Backend::Jit] {
        let mut st = state.clone();
        let mut runner = Runner::new(&module, TRAIN_STEP, backend, Some(1)).unwrap();
        let out = runner
            .run(
                &mut st,
                &[Input::Float(&x), Input::Int(&labels), Input::Float(&[0.1])],
            )
            .unwrap();
        let (loss, ce, p) = (scalar(&out[0]), scalar(&out[2]), scalar(&out[3]));
        assert!(
            (p - want).abs() <= 1e-5 * want,
            "{backend:?}: P {p} vs {want}"
        );
        let penalty = 0.02 / 2.0 * p;
        assert!(
            (loss - ce - penalty).abs() <= 1e-5 * loss.abs(),
            "{backend:?}: loss {loss} = ce {ce} + {penalty}"
        );
        for (i, p) in module.params.iter().enumerate() {
            if matches!(p.role, Role::State(_)) {
                assert_eq!(
                    st.values[i], state.values[i],
                    "{backend:?}: @{} is not trained",
                    p.name
                );
            }
        }
        finals.push(st.values.clone());
    }
    assert_eq!(
        finals[0], finals[1],
        "the JIT steps as the interpreter does"
    );
}

/// A two-stage progressive run on synthetic data: 8 steps an epoch; stage 1 is epochs 1–3
/// (rounds at 1 and 2, retraining at 3), stage 2 epochs 4–6.
const PROGRESSIVE: &str = "model mlp {
    input x: [1, 4, 4]
    flat = flatten(x)
    fc1 = dense(flat, 6)
    h1 = relu(fc1)
    fc2 = dense(h1, 3)
    loss softmax_cross_entropy(fc2)
}
data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
train { epochs: 6, batch: 4, seed: 5, optimizer: sgd(lr: 0.1, momentum: 0.9) }
method admm { keep: { fc1: 0.25, fc2: 0.5 }, rho: 0.05, rounds: 2, epochs_per_round: 1, retrain_epochs: 1, stages: [2, 4] }
";

/// `l` per stage, worked out by hand from the keep ratios (`keep · 4 / target`, at most 1) and
/// the sizes (fc1 96 weights, fc2 18).
fn kept_by_hand(layer: &str, stage: u64) -> usize {
    match (layer, stage) {
        ("fc1", 1) => 48,
        ("fc1", 2) => 24,
        ("fc2", 1) => 18,
        ("fc2", 2) => 9,
        _ => unreachable!(),
    }
}

fn values<'a>(module: &Module, state: &'a State<f32>, name: &str) -> &'a [f32] {
    let id = module
        .param_by_name(name)
        .unwrap_or_else(|| panic!("@{name}"));
    &state.values[id.0 as usize]
}

fn nnz(v: &[f32]) -> usize {
    v.iter().filter(|&&x| x != 0.0).count()
}

fn phase(ir: &Module) -> Phase {
    match ir.method.as_ref().map(|m| &m.method) {
        Some(Method::Admm { at: Some(at), .. }) => *at,
        other => panic!("no ADMM phase: {other:?}"),
    }
}

/// Checks ADMM's invariants on the state the method's own hook leaves, after every step and
/// every epoch boundary; what it finds wrong goes into `problems`.
struct Inspector {
    problems: Shared<String>,
    /// The last nnz of each weight seen while masked.
    last_nnz: [Option<usize>; 2],
    boundaries: Shared<Phase>,
}

const LAYERS: [&str; 2] = ["fc1", "fc2"];

impl Inspector {
    fn masked_state(&mut self, module: &Module, state: &State<f32>, when: &str) {
        for (k, layer) in LAYERS.iter().enumerate() {
            let w_name = format!("{layer}.weight");
            let id = module.param_by_name(&w_name).unwrap();
            if !matches!(module.param(id).storage, Storage::Masked { .. }) {
                continue;
            }
            let w = values(module, state, &w_name);
            let mask = values(module, state, &format!("{w_name}.mask"));
            let momentum = values(module, state, &format!("{w_name}.momentum"));
            let mut p = self.problems.borrow_mut();
            for i in 0..w.len() {
                if mask[i] == 0.0 && (w[i] != 0.0 || momentum[i] != 0.0) {
                    p.push(format!(
                        "{when}: {layer}[{i}] is pruned but w {} v {}",
                        w[i], momentum[i]
                    ));
                }
            }
            let n = nnz(w);
            if let Some(before) = self.last_nnz[k] {
                if n > before {
                    p.push(format!("{when}: nnz({layer}) grew from {before} to {n}"));
                }
            }
            self.last_nnz[k] = Some(n);
        }
    }
}

impl RunMethod for Inspector {
    fn after_step(&mut self, end: &StepEnd<'_>) -> Result<(), String> {
        self.masked_state(end.module, end.state, &format!("step {}", end.step));
        Ok(())
    }

    fn after_epoch(&mut self, end: &mut EpochEnd<'_>) -> Result<Option<Reconfiguration>, String> {
        // The method's hook ran first: the program is in the phase of the next epoch.
        let now = phase(end.ir);
        self.boundaries.borrow_mut().push(now);
        let when = format!("after epoch {}", end.epoch + 1);
        let mut p = self.problems.borrow_mut();
        for layer in LAYERS {
            let w_name = format!("{layer}.weight");
            let w = values(end.module, end.state, &w_name);
            let z = values(end.module, end.state, &format!("{w_name}.admm_z"));
            let mask = values(end.module, end.state, &format!("{w_name}.mask"));
            match now {
                Phase::Admm { stage, .. } if nnz(z) > kept_by_hand(layer, stage) => {
                    p.push(format!("{when}: nnz(Z {layer}) = {} > l", nnz(z)))
                }
                Phase::Retrain { stage } => {
                    let l = kept_by_hand(layer, stage);
                    if nnz(mask) != l || nnz(w) > l {
                        p.push(format!(
                            "{when}: {layer} mask {} nnz {} != l {l}",
                            nnz(mask),
                            nnz(w)
                        ));
                    }
                }
                _ => {}
            }
        }
        drop(p);
        self.masked_state(end.module, end.state, &when);
        Ok(None)
    }
}

type Shared<T> = Rc<RefCell<Vec<T>>>;

fn inspected() -> (Box<dyn RunMethod>, Shared<String>, Shared<Phase>) {
    let problems = Rc::new(RefCell::new(Vec::new()));
    let boundaries = Rc::new(RefCell::new(Vec::new()));
    let hook = Inspector {
        problems: problems.clone(),
        last_nnz: [None; 2],
        boundaries: boundaries.clone(),
    };
    (Box::new(hook), problems, boundaries)
}

fn model_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn run(dir: &Path, file: Option<PathBuf>, resume: bool, sets: &[(&str, &str)], backend: Backend) {
    run_dir::train_in(dir, file, resume, sets, backend, Vec::new());
}

#[test]
fn a_progressive_run_keeps_its_invariants_and_resumes_exactly() {
    let scratch = fresh_dir("admm-progressive");
    let model = write(&scratch, "mlp.net", PROGRESSIVE);
    let whole = scratch.join("whole");
    let (hook, problems, boundaries) = inspected();
    run_dir::train_in(
        &whole,
        Some(model.clone()),
        false,
        &[],
        Backend::Jit,
        vec![hook],
    );
    let problems = problems.borrow();
    assert!(
        problems.is_empty(),
        "{} problems, the first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(8)]
    );
    use Phase::*;
    assert_eq!(
        boundaries.borrow().as_slice(),
        [
            Admm { stage: 1, round: 2 },
            Retrain { stage: 1 },
            Admm { stage: 2, round: 1 },
            Admm { stage: 2, round: 2 },
            Retrain { stage: 2 },
            Retrain { stage: 2 },
        ]
    );
    // The final weights are the last stage's: exactly l non-zero entries at most, the rest
    // of the file dense.
    let bytes = model_bytes(&whole);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for layer in LAYERS {
        let t = st.tensor(&format!("{layer}.weight")).unwrap();
        let w: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(nnz(&w), kept_by_hand(layer, 2), "{layer}");
    }
    let hard_prunes: Vec<_> = lines(&whole, "method")
        .into_iter()
        .filter(|l| l.get("hard_prune").is_some())
        .collect();
    assert_eq!(hard_prunes.len(), 2, "one hard prune per stage");

    // The interpreter trains the same bits.
    let interp = scratch.join("interp");
    run(&interp, Some(model.clone()), false, &[], Backend::Interp);
    assert_eq!(
        model_bytes(&whole),
        model_bytes(&interp),
        "interpreter vs JIT"
    );

    // Interrupted mid-round (step 12), at the boundary where stage 1's hard prune happens
    // (step 16), and mid-retraining (step 20): each resumed run ends on the same bits.
    for cut_at in ["12", "16", "20"] {
        let cut = scratch.join(format!("cut{cut_at}"));
        run(
            &cut,
            Some(model.clone()),
            false,
            &[("max_steps", cut_at)],
            Backend::Jit,
        );
        run(&cut, None, true, &[], Backend::Jit);
        assert_eq!(
            model_bytes(&whole),
            model_bytes(&cut),
            "resumed after step {cut_at}"
        );
        assert_eq!(
            lines(&cut, "method"),
            lines(&whole, "method"),
            "the same log after step {cut_at}"
        );
    }
}

/// Overwrite the first entry of tensor `name` in the safetensors file `path` that `pick`
/// accepts with `value`.
fn tamper(path: &Path, name: &str, pick: impl Fn(f32) -> bool, value: f32) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data = st.tensor(name).unwrap().data();
    let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
    let first = data
        .chunks_exact(4)
        .position(|b| pick(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .unwrap();
    let mut tampered = bytes.clone();
    let at = offset + 4 * first;
    tampered[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, tampered).unwrap();
}

fn resume_error(dir: &Path) -> String {
    let req = sparsec::train::TrainRequest {
        file: None,
        data: None,
        out: None,
        sets: Vec::new(),
        resume: Some(dir.to_path_buf()),
        init_from: None,
        backend: Backend::Jit,
        threads: Some(1),
        extra_hooks: Vec::new(),
        profile: false,
    };
    let Err(sparsec::driver::Failure::Message(message)) = sparsec::train::train(req) else {
        panic!("a tampered checkpoint must be refused")
    };
    message
}

#[test]
fn a_tampered_mask_or_sparse_form_is_refused_on_resume() {
    let scratch = fresh_dir("admm-tampered");
    let model = write(&scratch, "mlp.net", PROGRESSIVE);
    for (what, file, tensor) in [
        ("mask", "train_state.safetensors", "fc1.weight.mask"),
        (
            "sparse",
            sparsec::checkpoint::SPARSE_FILE,
            "fc1.weight.values",
        ),
    ] {
        let dir = scratch.join(what);
        run(
            &dir,
            Some(model.clone()),
            false,
            &[("max_steps", "20")],
            Backend::Jit,
        );
        let Ok(latest) = sparsec::checkpoint::latest(&dir) else {
            panic!("a checkpoint")
        };
        // A mask entry of 0.5; a kept weight's value changed in the sparse form.
        tamper(&latest.join(file), tensor, |v| v != 0.0, 0.5);
        let message = resume_error(&dir);
        assert!(
            message.contains("does not match its checksum"),
            "{what}: {message}"
        );
        // A forger who also fixes the checksum still meets the check of what the file holds.
        let manifest_path = latest.join(sparsec::checkpoint::MANIFEST_FILE);
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
        manifest["files"][file] =
            sparsec::checkpoint::sha256_hex(&std::fs::read(latest.join(file)).unwrap()).into();
        std::fs::write(&manifest_path, manifest.to_string()).unwrap();
        let message = resume_error(&dir);
        let want = match what {
            "mask" => "mask of `fc1.weight` holds 0.5",
            _ => "the sparse form of `fc1.weight` disagrees",
        };
        assert!(message.contains(want), "{what}: {message}");
    }
}

/// A layer wide enough that the cost model takes the sparse products for it once masked.
const WIDE: &str = "model wide {
    input x: [1, 16, 16]
    flat = flatten(x)
    fc1 = dense(flat, 64)
    h1 = relu(fc1)
    fc2 = dense(h1, 64)
    h2 = relu(fc2)
    fc3 = dense(h2, 4)
    loss softmax_cross_entropy(fc3)
}
data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
train { epochs: 2, batch: 32, optimizer: sgd(lr: 0.1, momentum: 0.9, weight_decay: 0.01) }
method admm { keep: { fc1: 0.01, fc2: 0.01 }, rho: 0.05, rounds: 1, epochs_per_round: 1, retrain_epochs: 0, stages: [2, 4] }
";

/// Convolutions sparse enough that the cost model takes the masked convolutions.
const CONV: &str = "model conv {
    input x: [1, 10, 10]
    conv1 = conv2d(x, 8, kernel: 3)
    h1 = relu(conv1)
    conv2 = conv2d(h1, 64, kernel: 3, padding: 1)
    h2 = relu(conv2)
    pool = maxpool2d(h2, kernel: 2)
    flat = flatten(pool)
    fc = dense(flat, 4)
    loss softmax_cross_entropy(fc)
}
data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
train { epochs: 2, batch: 16, optimizer: sgd(lr: 0.1, momentum: 0.9, weight_decay: 0.01) }
method admm { keep: { conv2: 0.005 }, rho: 0.05, rounds: 1, epochs_per_round: 1, retrain_epochs: 0, stages: [2, 4] }
";

fn ops_of(module: &Module, func: &str) -> Vec<&'static str> {
    module
        .func(func)
        .unwrap()
        .insts
        .iter()
        .map(|i| i.op.name())
        .collect()
}

#[test]
fn sparse_products_of_masked_weights_equal_the_dense_masked_step() {
    sparse_step_is_the_dense_masked_step(
        WIDE,
        &[
            "masked_matmul_nt",
            "masked_matmul",
            "masked_grad",
            "mask_index",
        ],
    );
}

#[test]
fn sparse_convolutions_of_masked_weights_equal_the_dense_masked_step() {
    sparse_step_is_the_dense_masked_step(
        CONV,
        &[
            "masked_conv2d",
            "masked_conv2d_input_grad",
            "masked_conv2d_weight_grad",
            "mask_index",
        ],
    );
}

/// In stage 2's rounds and its retraining, the optimiser takes the sparse forms `expected` for
/// the masked weights of `model`, and one step of it (interpreter and JIT, bit for bit) is the
/// dense masked step of the program before optimisation, to rounding.
fn sparse_step_is_the_dense_masked_step(model: &str, expected: &[&str]) {
    use sparsec_passes::methods::admm::SetPhase;
    use sparsec_passes::structural::StructuralPass;
    let Ok(mut program) = program_from_source("model.net", model.to_owned(), false, &[]) else {
        panic!("compiles")
    };
    // Stage 2's rounds (penalty and mask) and its retraining (mask alone).
    for phase in [
        Phase::Admm { stage: 2, round: 1 },
        Phase::Retrain { stage: 2 },
    ] {
        let Ok((ir, _)) = SetPhase { phase }.run(&program.module) else {
            panic!("set phase")
        };
        program.module = ir;
        let compile = |stage| {
            let Ok(m) = compile_to(
                &program,
                stage,
                &CompileOptions::default(),
                &mut String::new(),
            ) else {
                panic!("compiles to {stage}")
            };
            m
        };
        let (dense, sparse) = (compile(Stage::Train), compile(Stage::Opt));
        let ops = ops_of(&sparse, TRAIN_STEP);
        for op in expected {
            assert!(
                ops.contains(op),
                "{phase}: the optimiser takes `{op}`: {ops:?}"
            );
        }
        // A state that is what a masked run holds: each mask keeps its weight's nnz positions
        // (spread by a hash), the weight and its momentum zero elsewhere.
        let mut state = State::<f32>::initial(&sparse);
        for (wi, w) in sparse.params.iter().enumerate() {
            let Storage::Masked { nnz } = w.storage else {
                continue;
            };
            let n = w.ty.num_elements();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&p| (p * 7919) % n);
            let mut mask = vec![0f32; n];
            for &p in &order[..nnz as usize] {
                mask[p] = 1.0;
            }
            let find = |suffix: &str| {
                sparse
                    .param_by_name(&format!("{}{suffix}", w.name))
                    .unwrap()
            };
            for (i, v) in state.values[wi].iter_mut().enumerate() {
                *v *= mask[i];
            }
            let m = find(".momentum").0 as usize;
            for (i, v) in state.values[m].iter_mut().enumerate() {
                *v = mask[i] * ((i % 7) as f32 - 3.0) / 50.0;
            }
            let z = find(".admm_z").0 as usize;
            for (i, v) in state.values[z].iter_mut().enumerate() {
                *v = mask[i] * ((i % 5) as f32 - 2.0) / 40.0;
            }
            state.values[find(".mask").0 as usize] = mask;
        }
        let step = dense.func(TRAIN_STEP).unwrap();
        let (x_len, batch) = (
            step.args[0].ty.num_elements(),
            step.args[1].ty.num_elements(),
        );
        let x: Vec<f32> = (0..x_len)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let labels: Vec<i32> = (0..batch as i32).map(|i| i * 7 % 4).collect();
        let inputs = [Input::Float(&x), Input::Int(&labels), Input::Float(&[0.1])];
        let run = |module: &Module, backend| {
            let mut st = state.clone();
            let mut runner = Runner::new(module, TRAIN_STEP, backend, Some(2)).unwrap();
            let out = runner.run(&mut st, &inputs).unwrap();
            (st.values, scalar(&out[0]))
        };
        let (reference, ref_loss) = run(&dense, Backend::Interp);
        let (interp, loss) = run(&sparse, Backend::Interp);
        let (jit, jit_loss) = run(&sparse, Backend::Jit);
        assert_eq!(
            interp, jit,
            "{phase}: the JIT's sparse step is the interpreter's"
        );
        assert_eq!(loss.to_bits(), jit_loss.to_bits());
        assert!(
            (loss - ref_loss).abs() <= 1e-6 * ref_loss.abs(),
            "{phase}: {loss} vs {ref_loss}"
        );
        for (i, (a, b)) in interp.iter().zip(&reference).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                    "{phase}: @{}: {x} vs the dense step's {y}",
                    sparse.params[i].name
                );
                assert_eq!(
                    *x == 0.0,
                    *y == 0.0,
                    "{phase}: @{}: zeros agree",
                    sparse.params[i].name
                );
            }
        }
    }
}
