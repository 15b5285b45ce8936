//! `sparsec train` and `sparsec eval`: the training loop over real data, on the reference
//! interpreter, with metrics, checkpoints and exact resumption.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sparsec_backend::JitProgram;
use sparsec_ir::interp::{Input, Interpreter, Output, State};

use crate::cli::Backend;
use sparsec_ir::spec::{Schedule, TrainSpec};
use sparsec_ir::{Module, Role};

use crate::checkpoint::{self, Snapshot, TrainMeta};
use crate::data::{self, Dataset, Splits};
use crate::driver::{self, Failure, Program};

/// What `sparsec train` was asked to do.
pub struct TrainRequest {
    pub file: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub sets: Vec<(String, String)>,
    pub resume: Option<PathBuf>,
    /// Where the steps run.
    pub backend: Backend,
    /// JIT threads (1 or 2); `None`: `SPARSEC_THREADS`, else up to 2.
    pub threads: Option<usize>,
}

/// A function prepared for repeated execution on one backend.
pub enum Runner {
    Interp(Box<Interpreter<f32>>),
    Jit(Box<JitProgram>),
}

impl Runner {
    /// Prepare `func` of `module` on `backend` (compiling it, for the JIT).
    pub fn new(
        module: &Module,
        func: &str,
        backend: Backend,
        threads: Option<usize>,
    ) -> Result<Runner, String> {
        match backend {
            Backend::Interp => Interpreter::<f32>::new(module, func)
                .map(|i| Runner::Interp(Box::new(i)))
                .map_err(|e| e.to_string()),
            Backend::Jit => JitProgram::new(
                module,
                func,
                threads.unwrap_or_else(sparsec_backend::default_threads),
            )
            .map(|p| Runner::Jit(Box::new(p))),
        }
    }

    /// Milliseconds the JIT spent compiling (0 for the interpreter).
    pub fn compile_ms(&self) -> f64 {
        match self {
            Runner::Interp(_) => 0.0,
            Runner::Jit(p) => p.compile_ms(),
        }
    }

    /// Run once with the interpreter's contract.
    pub fn run(
        &mut self,
        state: &mut State<f32>,
        inputs: &[Input<'_, f32>],
    ) -> Result<Vec<Output<f32>>, String> {
        match self {
            Runner::Interp(i) => i.run(state, inputs).map_err(|e| e.to_string()),
            Runner::Jit(p) => p.run(state, inputs),
        }
    }
}

/// Training stopped for a reason that is the input's fault (exit 1), with a message.
fn input_error(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

/// The learning rate of an epoch (0-based), stepped per epoch as PyTorch's StepLR/MultiStepLR.
pub fn learning_rate(spec: &TrainSpec, epoch: u64) -> f64 {
    let lr = spec.optimizer.lr;
    let lr = match &spec.schedule {
        Schedule::Constant => lr,
        Schedule::Step { every, gamma } => lr * gamma.powi((epoch / every.max(&1)) as i32),
        Schedule::MultiStep { milestones, gamma } => {
            let passed = milestones.iter().filter(|&&m| m <= epoch).count();
            lr * gamma.powi(passed as i32)
        }
    };
    lr
}

/// Shapes the data must have: one sample of the forward function's input, and the classes.
fn data_shape(module: &Module) -> Result<(Vec<usize>, usize), Failure> {
    let forward = module
        .func(sparsec_frontend::lower::FORWARD)
        .ok_or_else(|| input_error("the program has no @forward function"))?;
    let input = forward
        .args
        .first()
        .ok_or_else(|| input_error("@forward takes no input"))?;
    let logits = forward
        .results
        .get(1)
        .map(|&v| forward.value_type(v).clone())
        .ok_or_else(|| input_error("@forward must return (loss, logits)"))?;
    Ok((input.ty.shape[1..].to_vec(), logits.shape[1]))
}

fn load_data(module: &Module, dir: Option<&Path>) -> Result<Splits, Failure> {
    let (input_shape, classes) = data_shape(module)?;
    let spec = module
        .data
        .clone()
        .unwrap_or(sparsec_ir::spec::DataSpec::FashionMnist { dir: None });
    data::load(&spec, dir, &input_shape, classes).map_err(|e| input_error(e.to_string()))
}

/// Mean loss and accuracy of the weights in `state` over a data set, with `@forward`.
fn evaluate(
    module: &Module,
    forward: &mut Runner,
    state: &mut State<f32>,
    set: &Dataset,
) -> Result<(f64, f64), Failure> {
    let batch = module.train.as_ref().map_or(1, |t| t.batch as usize);
    let sample_len = set.sample_len();
    let mut images = vec![0f32; batch * sample_len];
    let mut labels = vec![0i32; batch];
    let (mut loss_sum, mut correct) = (0f64, 0usize);
    let mut start = 0;
    while start < set.len() {
        let n = batch.min(set.len() - start);
        for j in 0..batch {
            // A short last batch is padded with its first sample; padded rows are not counted.
            let i = start + if j < n { j } else { 0 };
            images[j * sample_len..(j + 1) * sample_len].copy_from_slice(set.sample(i));
            labels[j] = set.labels[i];
        }
        let outputs = forward
            .run(state, &[Input::Float(&images), Input::Int(&labels)])
            .map_err(|e| input_error(format!("evaluation failed: {e}")))?;
        let Some(Output::Float(logits)) = outputs.get(1) else {
            return Err(input_error("@forward did not return logits"));
        };
        let classes = logits.shape[1];
        for (j, row) in logits.data.chunks_exact(classes).take(n).enumerate() {
            let (best, lse) = row_stats(row);
            if best == labels[j] as usize {
                correct += 1;
            }
            loss_sum += lse - f64::from(row[labels[j] as usize]);
        }
        start += n;
    }
    let n = set.len().max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n))
}

/// Index of the first maximum of a row, and log-sum-exp of the row (computed stably, in f64).
fn row_stats(row: &[f32]) -> (usize, f64) {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    let max = f64::from(row[best]);
    let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    (best, max + sum.ln())
}

fn weight_names(module: &Module) -> impl Iterator<Item = (usize, &str)> {
    module
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == Role::Weight)
        .map(|(i, p)| (i, p.name.as_str()))
}

/// Fraction of exactly-zero entries of each weight (of its effective value).
fn sparsity(module: &Module, state: &State<f32>) -> serde_json::Map<String, serde_json::Value> {
    weight_names(module)
        .map(|(i, name)| {
            let zeros = match &state.tracked[i] {
                None => state.values[i].iter().filter(|&&x| x == 0.0).count(),
                Some(_) => state
                    .dense_value(module, i)
                    .iter()
                    .filter(|&&x| x == 0.0)
                    .count(),
            };
            let n = module.params[i].ty.num_elements();
            (name.to_owned(), json!(zeros as f64 / n.max(1) as f64))
        })
        .collect()
}

/// Number of tracked (stored) weights per layer (`fc1` = `fc1.weight` + `fc1.bias`), in
/// parameter order, and their total; `None` when the model tracks nothing.
fn tracked_per_layer(module: &Module, state: &State<f32>) -> Option<serde_json::Value> {
    let mut layers = serde_json::Map::new();
    let mut total = 0usize;
    for (i, name) in weight_names(module) {
        if let Some(t) = &state.tracked[i] {
            let layer = name.rsplit_once('.').map_or(name, |(l, _)| l);
            let n = layers.get(layer).and_then(|v| v.as_u64()).unwrap_or(0);
            layers.insert(layer.to_owned(), json!(n + t.len() as u64));
            total += t.len();
        }
    }
    (!layers.is_empty()).then(|| json!({ "total": total, "layers": layers }))
}

/// `line` with a `tracked` entry when the model has tracked weights.
fn with_tracked(
    mut line: serde_json::Value,
    module: &Module,
    state: &State<f32>,
) -> serde_json::Value {
    if let (Some(t), Some(obj)) = (tracked_per_layer(module, state), line.as_object_mut()) {
        obj.insert("tracked".into(), t);
    }
    line
}

/// `decay_init^step` as the factor of the initial values of tracked weights after `step` steps
/// (1 without `decay_init`): computed in f64 from the step alone, rounded to f32 once, so a
/// resumed run has the same factor.
pub fn init_scale(module: &Module, step: u64) -> f32 {
    match module.method.as_ref().map(|s| &s.method) {
        Some(sparsec_ir::spec::Method::Dropback {
            decay_init: Some(d),
            ..
        }) => d.powf(step as f64) as f32,
        _ => 1.0,
    }
}

/// What the weights take in memory between steps: `(weights_stored, weight_state_bytes)`.
/// A dense parameter (weight or optimizer state) is all its values; a tracked weight is its
/// stored entries, each a 4-byte value and a 4-byte index. Momentum is refused with Dropback, so
/// tracked weights carry no optimizer state.
fn stored_weights(module: &Module, state: &State<f32>) -> (u64, u64) {
    let (mut weights, mut bytes) = (0u64, 0u64);
    for (i, p) in module.params.iter().enumerate() {
        let n = state.stored_len(i) as u64;
        let per = if state.tracked[i].is_some() { 8 } else { 4 };
        bytes += per * n;
        if p.role == Role::Weight {
            weights += n;
        }
    }
    (weights, bytes)
}

fn peak_rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `runs/<model>-<UTC date>-<time>`.
fn default_run_dir(model: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    PathBuf::from("runs").join(format!(
        "{model}-{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Appends JSON lines to `metrics.jsonl`, one flush per line so a killed run keeps its log.
struct Metrics {
    file: fs::File,
}

impl Metrics {
    /// Open for appending; on resume, first drop lines logged after the checkpoint's step
    /// (the resumed run logs them again).
    fn open(run_dir: &Path, keep_up_to_step: Option<u64>) -> Result<Metrics, Failure> {
        let path = run_dir.join("metrics.jsonl");
        let io = |e: std::io::Error| input_error(format!("cannot write `{}`: {e}", path.display()));
        if let Some(step) = keep_up_to_step {
            let old = fs::read_to_string(&path).unwrap_or_default();
            let kept: String = old
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            checkpoint::write_atomically(&path, kept.as_bytes()).map_err(io)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Metrics { file })
    }

    fn log(&mut self, value: serde_json::Value) -> Result<(), Failure> {
        writeln!(self.file, "{value}")
            .and_then(|_| self.file.flush())
            .map_err(|e| input_error(format!("cannot write metrics.jsonl: {e}")))
    }
}

/// The settings in force after overrides, as the IR prints them (its data/train/method lines).
fn resolved_settings(module: &Module) -> String {
    sparsec_ir::print::print_module(module)
        .lines()
        .filter(|l| l.starts_with("train ") || l.starts_with("method ") || l.starts_with("data "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything the loop needs, prepared once.
struct Session {
    program: Program,
    module: Module,
    splits: Splits,
    run_dir: PathBuf,
    state: State<f32>,
    meta: TrainMeta,
    compile_ms: f64,
}

fn prepare(req: &TrainRequest) -> Result<Session, Failure> {
    let started = Instant::now();
    let (program, run_dir, resume_from) = match &req.resume {
        Some(run_dir) => {
            let dir = checkpoint::latest(run_dir).map_err(input_error)?;
            let meta = checkpoint::read_train_meta(&dir).map_err(input_error)?;
            if let Some(file) = &req.file {
                let current = fs::read_to_string(file).unwrap_or_default();
                if current != meta.source {
                    return Err(Failure::Usage(format!(
                        "`{}` differs from the model file the run in `{}` was started with; \
                         resume without FILE to continue with the run's own copy",
                        file.display(),
                        run_dir.display()
                    )));
                }
            }
            if let Some((key, _)) = req.sets.iter().find(|(k, _)| k != "max_steps") {
                return Err(Failure::Usage(format!(
                    "--set {key} cannot change a run being resumed (it continues with its own \
                     settings; only max_steps may be given)"
                )));
            }
            // The run's own settings, with this session's stopping point (if any).
            let mut sets = meta.sets.clone();
            sets.extend(req.sets.iter().cloned());
            let program = driver::program_from_source(
                &meta.source_name,
                meta.source.clone(),
                meta.source_is_ir,
                &sets,
            )?;
            (program, run_dir.clone(), Some((dir, meta)))
        }
        None => {
            let file = req.file.as_ref().ok_or_else(|| {
                Failure::Usage("give a model file to train (or --resume RUN_DIR)".into())
            })?;
            let program = driver::load_program(file, &req.sets)?;
            let run_dir = req
                .out
                .clone()
                .unwrap_or_else(|| default_run_dir(&program.module.name));
            if run_dir.exists() && fs::read_dir(&run_dir).map_or(true, |mut d| d.next().is_some()) {
                return Err(Failure::Usage(format!(
                    "`{}` already exists and is not empty; choose another --out, or --resume it",
                    run_dir.display()
                )));
            }
            (program, run_dir, None)
        }
    };
    if let Some(method) = &program.module.method {
        if !matches!(method.method, sparsec_ir::spec::Method::Dropback { .. }) {
            // Training such a model densely would silently be a different experiment.
            return Err(input_error(format!(
                "`{}` declares the sparse-training method `{}`, which `sparsec train` does not \
                 carry out yet (of dropback, admm, prunetrain and activation_density only \
                 dropback is); remove the `method` block to train the dense baseline",
                program.file_name,
                method.method.name()
            )));
        }
    }
    let module = driver::compile_to(
        &program,
        crate::cli::Stage::Opt,
        &driver::CompileOptions {
            print_after: Vec::new(),
            memory_budget: program.run.memory_budget,
        },
        &mut String::new(),
    )?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let data_dir = match &resume_from {
        Some((_, meta)) => meta
            .data_dir
            .clone()
            .map(PathBuf::from)
            .or(req.data.clone()),
        None => req.data.clone(),
    };
    let splits = load_data(&module, data_dir.as_deref())?;

    let mut state = State::<f32>::initial(&module);
    let meta = match resume_from {
        Some((dir, _)) => checkpoint::load(&dir, &module, &mut state).map_err(input_error)?,
        None => {
            fs::create_dir_all(&run_dir)
                .map_err(|e| input_error(format!("cannot create `{}`: {e}", run_dir.display())))?;
            let source_copy = if program.is_ir {
                "model.ir"
            } else {
                "model.net"
            };
            checkpoint::write_atomically(&run_dir.join(source_copy), program.source.as_bytes())
                .map_err(|e| input_error(format!("cannot write the run directory: {e}")))?;
            TrainMeta {
                format: checkpoint::FORMAT,
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                epoch_loss_sum: 0.0,
                epoch_correct: 0,
                epoch_seen: 0,
                source: program.source.clone(),
                source_name: program.file_name.clone(),
                source_is_ir: program.is_ir,
                // max_steps only stops this session; a resumed run goes on unless told again.
                sets: req
                    .sets
                    .iter()
                    .filter(|(k, _)| k != "max_steps")
                    .cloned()
                    .collect(),
                data_dir: data_dir.map(|d| d.display().to_string()),
                resolved: resolved_settings(&module),
            }
        }
    };
    Ok(Session {
        program,
        module,
        splits,
        run_dir,
        state,
        meta,
        compile_ms,
    })
}

/// `sparsec train`: returns the text for stdout.
pub fn train(req: &TrainRequest) -> Result<String, Failure> {
    let wall = Instant::now();
    let Session {
        program,
        module,
        splits,
        run_dir,
        mut state,
        mut meta,
        compile_ms,
    } = prepare(req)?;
    let spec = module
        .train
        .clone()
        .ok_or_else(|| input_error("the program has no `train` settings"))?;
    let run = program.run.clone();
    let resumed = req.resume.is_some();
    eprintln!("{}", splits.description);
    if resumed {
        eprintln!(
            "resuming `{}` at epoch {}, step {}",
            run_dir.display(),
            meta.epoch + 1,
            meta.step
        );
    }

    let mut metrics = Metrics::open(&run_dir, resumed.then_some(meta.step))?;
    let mut step_fn = Runner::new(&module, "train_step", req.backend, req.threads)
        .map_err(|e| input_error(format!("cannot prepare the train step: {e}")))?;
    // Dropback's `freeze_after`: from that epoch on, the step that keeps the tracked set.
    let freeze_after = match module.method.as_ref().map(|s| &s.method) {
        Some(sparsec_ir::spec::Method::Dropback { freeze_after, .. }) => *freeze_after,
        _ => None,
    };
    let mut frozen_fn = match (freeze_after, module.func(sparsec_passes::TRAIN_STEP_FROZEN)) {
        (Some(_), Some(_)) => Some(
            Runner::new(
                &module,
                sparsec_passes::TRAIN_STEP_FROZEN,
                req.backend,
                req.threads,
            )
            .map_err(|e| input_error(format!("cannot prepare the frozen train step: {e}")))?,
        ),
        (Some(_), None) => {
            return Err(input_error(format!(
                "the program sets freeze_after but has no @{}",
                sparsec_passes::TRAIN_STEP_FROZEN
            )))
        }
        _ => None,
    };
    state.init_scale = init_scale(&module, meta.step);
    let mut forward = Runner::new(
        &module,
        sparsec_frontend::lower::FORWARD,
        req.backend,
        req.threads,
    )
    .map_err(|e| input_error(format!("cannot prepare @forward: {e}")))?;
    let jit_compile_ms = step_fn.compile_ms()
        + forward.compile_ms()
        + frozen_fn.as_ref().map_or(0.0, Runner::compile_ms);

    let batch = spec.batch as usize;
    let train_set = &splits.train;
    let steps_per_epoch = train_set.len() / batch;
    if steps_per_epoch == 0 {
        return Err(input_error(format!(
            "the training set has {} samples, fewer than one batch of {batch}",
            train_set.len()
        )));
    }
    let sample_len = train_set.sample_len();
    let mut images = vec![0f32; batch * sample_len];
    let mut labels = vec![0i32; batch];
    let save = |state: &State<f32>, meta: &TrainMeta| -> Result<PathBuf, Failure> {
        checkpoint::save(
            &run_dir,
            &Snapshot {
                module: &module,
                state,
                train: meta.clone(),
            },
        )
        .map_err(input_error)
    };
    let mut last_checkpoint = if resumed {
        checkpoint::latest(&run_dir).ok()
    } else {
        None
    };
    let mut last_saved_step = meta.step;
    if !resumed {
        last_checkpoint = Some(save(&state, &meta)?);
    }

    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(spec.epochs * steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(meta.step);
        Some(bar)
    } else {
        None
    };

    let mut samples_this_session = 0u64;
    let train_started = Instant::now();
    let mut stop_reason = "completed";
    let mut last_test = (f64::NAN, f64::NAN);
    let mut last_train_loss = f64::NAN;
    'epochs: while meta.epoch < spec.epochs {
        let epoch = meta.epoch;
        let lr = learning_rate(&spec, epoch);
        let lr_arg = [lr as f32];
        let order = data::order::epoch_order(train_set.len(), spec.seed, epoch, run.shuffle);
        while (meta.batch_in_epoch as usize) < steps_per_epoch {
            if run.max_steps.is_some_and(|m| meta.step >= m) {
                stop_reason = "max_steps";
                break 'epochs;
            }
            let start = meta.batch_in_epoch as usize * batch;
            data::order::fill_batch(train_set, &order, start, batch, &mut images, &mut labels);
            let step_fn = match &mut frozen_fn {
                Some(frozen) if freeze_after.is_some_and(|f| epoch >= f) => frozen,
                _ => &mut step_fn,
            };
            let outputs = step_fn
                .run(
                    &mut state,
                    &[
                        Input::Float(&images),
                        Input::Int(&labels),
                        Input::Float(&lr_arg),
                    ],
                )
                .map_err(|e| input_error(format!("training step failed: {e}")))?;
            let (Some(Output::Float(loss)), Some(Output::Float(logits))) =
                (outputs.first(), outputs.get(1))
            else {
                return Err(input_error("@train_step must return (loss, logits)"));
            };
            let loss = loss.data.first().copied().unwrap_or(f32::NAN);
            if !loss.is_finite() {
                if let Some(bar) = &progress {
                    bar.abandon();
                }
                let kept = last_checkpoint
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string());
                return Err(input_error(format!(
                    "the loss became {loss} at epoch {}, step {} (lr {lr}); training stopped. \
                     The last good checkpoint is kept: {kept}. Try a smaller learning rate.",
                    epoch + 1,
                    meta.step + 1
                )));
            }
            let classes = logits.shape[1];
            let correct = logits
                .data
                .chunks_exact(classes)
                .zip(&labels)
                .filter(|(row, &label)| row_stats(row).0 == label as usize)
                .count();
            meta.step += 1;
            state.init_scale = init_scale(&module, meta.step);
            meta.batch_in_epoch += 1;
            meta.epoch_loss_sum += f64::from(loss);
            meta.epoch_correct += correct as u64;
            meta.epoch_seen += batch as u64;
            samples_this_session += batch as u64;
            if meta.step % spec.log_every == 0 {
                // Train accuracy is the running value over the epoch so far; test accuracy is
                // measured once per epoch (a pass over the test set at every log step would
                // cost more than the training it reports on).
                metrics.log(with_tracked(
                    json!({
                        "kind": "step", "epoch": epoch + 1, "step": meta.step, "loss": loss,
                        "lr": lr,
                        "train_accuracy": meta.epoch_correct as f64 / meta.epoch_seen.max(1) as f64,
                        "sparsity": sparsity(&module, &state),
                    }),
                    &module,
                    &state,
                ))?;
                match &progress {
                    Some(bar) => bar.set_message(format!("epoch {} loss {loss:.4}", epoch + 1)),
                    None => eprintln!(
                        "epoch {}/{} step {} loss {loss:.4} lr {lr}",
                        epoch + 1,
                        spec.epochs,
                        meta.step
                    ),
                }
            }
            if let Some(bar) = &progress {
                bar.set_position(meta.step);
            }
        }
        // End of epoch: evaluate, log, checkpoint.
        let train_loss = meta.epoch_loss_sum / steps_per_epoch as f64;
        let train_acc = meta.epoch_correct as f64 / meta.epoch_seen.max(1) as f64;
        let (test_loss, test_acc) = evaluate(&module, &mut forward, &mut state, &splits.test)?;
        last_test = (test_loss, test_acc);
        last_train_loss = train_loss;
        metrics.log(with_tracked(
            json!({
                "kind": "epoch", "epoch": epoch + 1, "step": meta.step, "lr": lr,
                "train_loss": train_loss, "train_accuracy": train_acc,
                "test_loss": test_loss, "test_accuracy": test_acc,
                "sparsity": sparsity(&module, &state),
            }),
            &module,
            &state,
        ))?;
        let line = format!(
            "epoch {}/{}: train loss {train_loss:.4}, train accuracy {:.2}%, test loss {test_loss:.4}, test accuracy {:.2}%",
            epoch + 1,
            spec.epochs,
            100.0 * train_acc,
            100.0 * test_acc
        );
        // Results go to stdout as they come (above the progress bar, if there is one).
        match &progress {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
        meta.epoch += 1;
        meta.batch_in_epoch = 0;
        meta.epoch_loss_sum = 0.0;
        meta.epoch_correct = 0;
        meta.epoch_seen = 0;
        last_checkpoint = Some(save(&state, &meta)?);
        last_saved_step = meta.step;
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let session_seconds = train_started.elapsed().as_secs_f64();
    if last_saved_step != meta.step {
        last_checkpoint = Some(save(&state, &meta)?);
    }
    let checkpoint_dir = last_checkpoint.unwrap_or_else(|| run_dir.join("checkpoints"));
    if last_test.1.is_nan() || stop_reason == "max_steps" {
        // A run stopped by max_steps (or resumed with nothing left to do) still reports where
        // it stands.
        last_test = evaluate(&module, &mut forward, &mut state, &splits.test)?;
    }

    let params_total = module.param_count();
    let (weights_stored, state_bytes) = stored_weights(&module, &state);
    let method = module
        .method
        .as_ref()
        .map_or("dense".to_owned(), |m| m.method.name().to_owned());
    let summary = json!({
        "model": module.name,
        "method": method,
        "backend": req.backend.name(),
        "threads": match &step_fn { Runner::Jit(p) => p.threads(), Runner::Interp(_) => 1 },
        "jit_compile_ms": jit_compile_ms,
        "status": stop_reason,
        "data": splits.description,
        "epochs": spec.epochs,
        "epochs_completed": meta.epoch,
        "steps": meta.step,
        "batch": spec.batch,
        "test_accuracy": last_test.1,
        "test_loss": last_test.0,
        "train_loss": last_train_loss,
        "samples_per_sec": if session_seconds > 0.0 { samples_this_session as f64 / session_seconds } else { 0.0 },
        "params_total": params_total,
        "weights_stored": weights_stored,
        "weight_state_bytes": state_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "seed": spec.seed,
        "compile_ms": compile_ms + jit_compile_ms,
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "checkpoint": checkpoint_dir.strip_prefix(&run_dir).unwrap_or(&checkpoint_dir),
    });
    let summary = with_tracked(summary, &module, &state);
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
    checkpoint::write_atomically(&run_dir.join("summary.json"), text.as_bytes())
        .map_err(|e| input_error(format!("cannot write summary.json: {e}")))?;
    // The final weights, also as a plain state_dict file at the top of the run directory.
    let model_bytes =
        checkpoint::model_file_bytes(&module, &state, meta.step).map_err(input_error)?;
    checkpoint::write_atomically(&run_dir.join("model.safetensors"), &model_bytes)
        .map_err(|e| input_error(format!("cannot write model.safetensors: {e}")))?;
    // The report reads the run back from disk, so it shows what was saved, as `sparsec report`.
    let table = crate::report::build(&run_dir)?.table();
    checkpoint::write_atomically(&run_dir.join("report.txt"), table.as_bytes())
        .map_err(|e| input_error(format!("cannot write report.txt: {e}")))?;
    Ok(format!(
        "{}: {} steps, test accuracy {:.2}%; run directory {}\n{table}",
        module.name,
        meta.step,
        100.0 * last_test.1,
        run_dir.display()
    ))
}

/// `sparsec eval FILE --weights RUN_DIR|FILE.safetensors`.
pub fn eval(
    file: &Path,
    weights: &Path,
    data_dir: Option<&Path>,
    backend: Backend,
    threads: Option<usize>,
) -> Result<String, Failure> {
    let program = driver::load_program(file, &[])?;
    let module = &program.module;
    let weights_file = if weights.is_dir() {
        checkpoint::latest(weights)
            .map_err(input_error)?
            .join("model.safetensors")
    } else {
        weights.to_path_buf()
    };
    let mut state = State::<f32>::initial(module);
    let meta = checkpoint::load_weights(&weights_file, module, &mut state).map_err(input_error)?;
    let splits = load_data(module, data_dir)?;
    eprintln!("{}", splits.description);
    let mut forward = Runner::new(module, sparsec_frontend::lower::FORWARD, backend, threads)
        .map_err(|e| input_error(format!("cannot prepare @forward: {e}")))?;
    let (loss, acc) = evaluate(module, &mut forward, &mut state, &splits.test)?;
    Ok(format!(
        "{}: weights from step {} ({}): test accuracy {:.2}% ({} samples), test loss {loss:.4}\n",
        module.name,
        meta.step,
        weights_file.display(),
        100.0 * acc,
        splits.test.len()
    ))
}
