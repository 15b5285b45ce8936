//! `sparsec train` and `sparsec eval`: the training loop over real data, on the JIT (the
//! default) or the reference interpreter, with metrics, checkpoints and exact resumption.
//!
//! The loop knows no sparse-training method by name: it asks the program's method for its run
//! side ([`crate::methods`]) and calls its hooks, which choose the step function, keep the
//! method's part of the state in line with the step count, and may ask for a reconfiguration
//! (a structural pass; the program is recompiled and the state carried over).

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sparsec_ir::func_names::{FORWARD, TRAIN_STEP};
use sparsec_ir::interp::{Input, Output, State, ZeroCounts};
use sparsec_ir::spec::{Schedule, TrainSpec};
use sparsec_ir::{Module, Role, Stage};

use crate::checkpoint::{self, Snapshot, TrainMeta};
use crate::data::{self, Dataset, Splits};
use crate::driver::{self, Failure, Program};
use crate::interrupt;
use crate::methods::{self, EpochEnd, Probe, Reconfiguration, RunMethod, StepEnd};
use crate::overrides;
use crate::profile::RunProfile;
use crate::runner::{Backend, Runner};

/// What `sparsec train` was asked to do.
pub struct TrainRequest {
    pub file: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub sets: Vec<(String, String)>,
    pub resume: Option<PathBuf>,
    /// Start a new run from the weights of this run's latest checkpoint.
    pub init_from: Option<PathBuf>,
    /// Where the steps run.
    pub backend: Backend,
    /// JIT threads (1 or 2); `None`: `SPARSEC_THREADS`, else up to 2.
    pub threads: Option<usize>,
    /// Run-side hooks beside the method's own, called after it (a library user's; the tests
    /// drive structural passes with them).
    pub extra_hooks: Vec<Box<dyn RunMethod>>,
    /// Time every kernel and print where the steps' time went (`--profile`; JIT only).
    pub profile: bool,
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
        .func(FORWARD)
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

/// Mean loss and accuracy of the weights in `state` over a data set, with `@forward` at the
/// given batch size.
fn evaluate(
    batch: usize,
    forward: &mut Runner,
    state: &mut State<f32>,
    set: &Dataset,
) -> Result<(f64, f64), Failure> {
    let (mut loss_sum, mut correct) = (0f64, 0usize);
    forward_batches(
        forward,
        state,
        batch,
        set.sample_len(),
        set.len(),
        &|i| (set.sample(i), set.labels[i]),
        &mut |i, row| {
            let (best, lse) = row_stats(row);
            let label = set.labels[i];
            if best == label as usize {
                correct += 1;
            }
            loss_sum += lse - f64::from(row[label as usize]);
        },
    )?;
    let n = set.len().max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n))
}

/// Run `@forward` over `count` samples (`sample(i)`: its values and label) in batches of
/// `batch`, a short last batch padded with its first sample, and hand each sample's logits to
/// `each(i, row)` in order (padding is never handed on). `eval`, the epochs' test pass and
/// `predict` all run the network this way.
pub(crate) fn forward_batches<'s>(
    forward: &mut Runner,
    state: &mut State<f32>,
    batch: usize,
    sample_len: usize,
    count: usize,
    sample: &dyn Fn(usize) -> (&'s [f32], i32),
    each: &mut dyn FnMut(usize, &[f32]),
) -> Result<(), Failure> {
    let mut images = vec![0f32; batch * sample_len];
    let mut labels = vec![0i32; batch];
    let mut start = 0;
    while start < count {
        let n = batch.min(count - start);
        for j in 0..batch {
            let (values, label) = sample(start + if j < n { j } else { 0 });
            images[j * sample_len..(j + 1) * sample_len].copy_from_slice(values);
            labels[j] = label;
        }
        let outputs = forward
            .run(state, &[Input::Float(&images), Input::Int(&labels)])
            .map_err(|e| input_error(format!("the forward pass failed: {e}")))?;
        let Some(Output::Float(logits)) = outputs.get(1) else {
            return Err(input_error("@forward did not return logits"));
        };
        let classes = logits.shape.get(1).copied().unwrap_or(1).max(1);
        for (j, row) in logits.data.chunks_exact(classes).take(n).enumerate() {
            each(start + j, row);
        }
        start += n;
    }
    Ok(())
}

/// Index of the first maximum of a row, and log-sum-exp of the row (computed stably, in f64).
pub(crate) fn row_stats(row: &[f32]) -> (usize, f64) {
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
fn sparsity(
    module: &Module,
    state: &State<f32>,
    counts: &mut ZeroCounts,
) -> serde_json::Map<String, serde_json::Value> {
    weight_names(module)
        .map(|(i, name)| {
            let zeros = counts.count(module, state, i);
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

/// Claim a fresh run directory for this run alone: its copy of the model source is created
/// exclusively, so a second run given the same directory at the same moment refuses instead of
/// interleaving its files with this one's. A default name (`default`) already claimed gets the
/// first free suffix `-2`, `-3`, ... instead. Returns the directory and the source copy, open.
fn claim_run_dir(
    dir: &Path,
    default: bool,
    source_copy: &str,
) -> Result<(PathBuf, fs::File), Failure> {
    for n in 1..=100u32 {
        let candidate = match n {
            1 => dir.to_path_buf(),
            _ => PathBuf::from(format!("{}-{n}", dir.display())),
        };
        fs::create_dir_all(&candidate)
            .map_err(|e| input_error(format!("cannot create `{}`: {e}", candidate.display())))?;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(candidate.join(source_copy))
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && default => continue,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Failure::Usage(format!(
                    "`{}` is taken by another run (it already holds {source_copy}); choose \
                     another --out",
                    candidate.display()
                )))
            }
            Err(e) => {
                return Err(input_error(format!(
                    "cannot write the run directory `{}`: {e}",
                    candidate.display()
                )))
            }
        }
    }
    Err(Failure::Usage(format!(
        "`{}` and its next 99 suffixed names are all taken; give --out",
        dir.display()
    )))
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
    /// The program compiled (stage `opt`); `program.module` is it at stage `ir`.
    module: Module,
    method: Box<dyn RunMethod>,
    splits: Splits,
    run_dir: PathBuf,
    state: State<f32>,
    meta: TrainMeta,
    /// Whether the run continues from a checkpoint (not new, not started again in place).
    resumed: bool,
    compile_ms: f64,
    /// Bytes the run was estimated to need before anything was allocated.
    memory_estimate: u64,
}

/// How a session starts its run.
enum Start {
    /// A new run directory, from initial weights or another run's.
    New(Option<checkpoint::InitFrom>),
    /// From the run's latest checkpoint (its directory and training state).
    Resume(PathBuf, TrainMeta),
    /// Again from step 0 in its own directory: the run was killed before its first checkpoint.
    Restart(checkpoint::RunFile),
}

/// A session must not change a run it continues: the model file, if given, is the run's own,
/// and only this session's settings (`max_steps`, `checkpoint_every`) and `epochs` (to extend
/// a run) may be set.
fn check_continuation(req: &TrainRequest, run_dir: &Path, source: &str) -> Result<(), Failure> {
    if let Some(file) = &req.file {
        let current = fs::read_to_string(file).unwrap_or_default();
        if current != source {
            return Err(Failure::Usage(format!(
                "`{}` differs from the model file the run in `{}` was started with; \
                 resume without FILE to continue with the run's own copy",
                file.display(),
                run_dir.display()
            )));
        }
    }
    if let Some((key, _)) = req
        .sets
        .iter()
        .find(|(k, _)| !overrides::is_session_only(k) && k != "epochs")
    {
        return Err(Failure::Usage(format!(
            "--set {key} cannot change a run being resumed (it continues with its own \
             settings; only max_steps, checkpoint_every and epochs may be given): to train on \
             from its weights with other settings, start a new run with --init-from {}",
            run_dir.display()
        )));
    }
    Ok(())
}

/// The program of a finished or stopped run, for a new run started from its weights without a
/// model file: the run's model with its settings and `sets` on top, or, once a reconfiguration
/// has changed its shapes, its program at stage `ir` as the checkpoint records it.
fn program_of_run(
    run: &Path,
    meta: &TrainMeta,
    sets: &[(String, String)],
) -> Result<Program, Failure> {
    let mut all = meta.sets.clone();
    all.extend(sets.iter().cloned());
    let mut program = driver::run_program(meta, &all)?;
    // A resumed run keeps its model source for its record; a new run has only the program.
    if let Some(ir) = &meta.program {
        program.file_name = format!("{}/program.ir", run.display());
        program.source = ir.clone();
        program.is_ir = true;
    }
    Ok(program)
}

/// The training state of a run at step 0.
fn fresh_meta(
    program: &Program,
    module: &Module,
    sets: &[(String, String)],
    data_dir: Option<&Path>,
    run_id: String,
) -> TrainMeta {
    TrainMeta {
        format: checkpoint::FORMAT,
        run_id,
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
        sets: sets
            .iter()
            .filter(|(k, _)| !overrides::is_session_only(k))
            .cloned()
            .collect(),
        data_dir: data_dir.map(|d| d.display().to_string()),
        resolved: resolved_settings(module),
        program: None,
        hook_states: None,
        train_flops: Some(0),
    }
}

fn prepare(req: &TrainRequest) -> Result<Session, Failure> {
    let started = Instant::now();
    let (program, mut run_dir, start) = match &req.resume {
        Some(run_dir) if !run_dir.join("latest").exists() && run_dir.join("run.json").exists() => {
            let run = checkpoint::read_run_file(run_dir).map_err(input_error)?;
            let source = checkpoint::read_source_copy(run_dir, &run).map_err(input_error)?;
            check_continuation(req, run_dir, &source)?;
            eprintln!(
                "`{}` was stopped before its first checkpoint: starting it again in place",
                run_dir.display()
            );
            let mut sets = run.sets.clone();
            sets.extend(req.sets.iter().cloned());
            let program =
                driver::program_from_source(&run.source_name, source, run.source_is_ir, &sets)?;
            (program, run_dir.clone(), Start::Restart(run))
        }
        Some(run_dir) => {
            let (dir, meta) = checkpoint::open(run_dir).map_err(input_error)?;
            check_continuation(req, run_dir, &meta.source)?;
            // The run's own settings, with this session's stopping point (if any).
            let mut sets = meta.sets.clone();
            sets.extend(req.sets.iter().cloned());
            let program = driver::run_program(&meta, &sets)?;
            (program, run_dir.clone(), Start::Resume(dir, meta))
        }
        None => {
            let (program, init_from) = match (&req.file, &req.init_from) {
                (Some(file), from) => {
                    let from = from
                        .as_ref()
                        .map(|run| checkpoint::init_from(run).map_err(input_error))
                        .transpose()?
                        .map(|(from, _)| from);
                    (driver::load_program(file, &req.sets)?, from)
                }
                (None, Some(run)) => {
                    let (from, meta) = checkpoint::init_from(run).map_err(input_error)?;
                    (program_of_run(run, &meta, &req.sets)?, Some(from))
                }
                (None, None) => {
                    return Err(Failure::Usage(
                        "give a model file to train (or --resume RUN_DIR)".into(),
                    ))
                }
            };
            let run_dir = req
                .out
                .clone()
                .unwrap_or_else(|| default_run_dir(&program.module.name));
            // A default name taken already gets a suffix when the run claims it (below).
            if req.out.is_some()
                && run_dir.exists()
                && fs::read_dir(&run_dir).map_or(true, |mut d| d.next().is_some())
            {
                return Err(Failure::Usage(format!(
                    "`{}` already exists and is not empty; choose another --out, or --resume it",
                    run_dir.display()
                )));
            }
            (program, run_dir, Start::New(init_from))
        }
    };
    // Training such a model densely would silently be a different experiment.
    let method = methods::run_side(program.module.method.as_ref())
        .map_err(|e| input_error(format!("`{}` {e}", program.file_name)))?;
    if let (Start::Resume(_, meta), Some((_, epochs))) =
        (&start, req.sets.iter().rfind(|(k, _)| k == "epochs"))
    {
        if method.schedule_depends_on_length() {
            return Err(Failure::Usage(format!(
                "--set epochs={epochs}: `{}` lays its schedule out from the run's end, so a \
                 longer run is not this run continued; start a new run (--init-from {})",
                method_name(&program.module),
                run_dir.display()
            )));
        }
        let wanted = program.module.train.as_ref().map_or(0, |t| t.epochs);
        if wanted < meta.epoch {
            return Err(Failure::Usage(format!(
                "--set epochs={epochs}: the run has done {} epochs already",
                meta.epoch
            )));
        }
    }
    if program.module.stage != Stage::Ir && method.reconfigures() {
        // A structural pass rewrites the program at stage `ir` and the pipeline rebuilds the
        // rest; a dump past that stage has its training step already written.
        return Err(input_error(format!(
            "`{}` is an IR dump at stage {}, but `{}` changes the program while it trains \
             (from stage ir): train the model file, or a dump of `sparsec emit --stage ir`",
            program.file_name,
            program.module.stage,
            method_name(&program.module)
        )));
    }
    let module = driver::compile_to(
        &program,
        Stage::Opt,
        &compile_options(&program),
        &mut String::new(),
    )?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let data_dir = match &start {
        Start::Resume(_, meta) => meta.data_dir.clone().map(PathBuf::from),
        Start::Restart(run) => run.data_dir.clone().map(PathBuf::from),
        Start::New(_) => None,
    }
    .or(req.data.clone());
    let splits = load_data(&module, data_dir.as_deref())?;
    let functions: Vec<&str> = [TRAIN_STEP, FORWARD]
        .into_iter()
        .chain(method.extra_functions().iter().copied())
        .collect();
    let buffers = crate::resources::buffer_bytes(&module, &functions, req.backend)
        .map_err(|e| input_error(format!("`{}`: {e}", program.file_name)))?;
    let state_bytes = crate::resources::state_bytes(&module);
    let memory_parts = [
        ("parameters and optimizer state", state_bytes),
        ("step buffers", buffers),
        (
            "checkpoint writing",
            crate::resources::checkpoint_bytes(
                &module,
                checkpoint::tracked_weights_dense(&module, program.run.memory_budget),
            ),
        ),
    ];
    crate::resources::check_fits(
        &format!("training `{}`", module.name),
        &memory_parts,
        crate::resources::SMALLER_NETWORK,
    )
    .map_err(input_error)?;
    let memory_estimate = memory_parts.iter().map(|&(_, b)| b).sum::<u64>();

    let mut state = State::<f32>::initial(&module);
    let resumed = matches!(start, Start::Resume(..));
    let meta = match start {
        Start::Resume(dir, _) => {
            let mut meta = checkpoint::load(&dir, &module, &mut state).map_err(input_error)?;
            if let Some(epochs) = req.sets.iter().rfind(|(k, _)| k == "epochs") {
                // Extended: from now on the run is one of that many epochs.
                meta.sets.retain(|(k, _)| k != "epochs");
                meta.sets.push(epochs.clone());
                meta.resolved = resolved_settings(&module);
            }
            meta
        }
        Start::Restart(run) => {
            if let Some(from) = &run.init_from {
                checkpoint::load_init_from(from, &module, &mut state).map_err(input_error)?;
            }
            // Whatever the killed session left (a checkpoint half written, a log) goes: the
            // run starts again from nothing but its own record.
            for leftover in ["checkpoints", "metrics.jsonl"] {
                let path = run_dir.join(leftover);
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match removed {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(input_error(format!(
                            "cannot clear `{}`: {e}",
                            path.display()
                        )))
                    }
                    _ => {}
                }
            }
            fresh_meta(
                &program,
                &module,
                &run.sets,
                data_dir.as_deref(),
                run.identity.run_id,
            )
        }
        Start::New(init_from) => {
            if let Some(from) = &init_from {
                checkpoint::load_init_from(from, &module, &mut state).map_err(input_error)?;
            }
            let source_copy = checkpoint::source_copy_name(program.is_ir);
            let (claimed, mut file) = claim_run_dir(&run_dir, req.out.is_none(), source_copy)?;
            run_dir = claimed;
            file.write_all(program.source.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| input_error(format!("cannot write the run directory: {e}")))?;
            let mut meta = fresh_meta(
                &program,
                &module,
                &req.sets,
                data_dir.as_deref(),
                String::new(),
            );
            let mut run = checkpoint::new_run_file(&run_dir, &meta);
            run.init_from = init_from;
            meta.run_id = run.identity.run_id.clone();
            checkpoint::write_run_file(&run_dir, &run).map_err(input_error)?;
            meta
        }
    };
    Ok(Session {
        program,
        module,
        method,
        splits,
        run_dir,
        state,
        meta,
        resumed,
        compile_ms,
        memory_estimate,
    })
}

/// Whether a periodic checkpoint is due, `steps` steps and the time since `last` after the
/// last one.
fn checkpoint_due(every: Option<overrides::CheckpointEvery>, steps: u64, last: Instant) -> bool {
    match every {
        None => false,
        Some(overrides::CheckpointEvery::Steps(n)) => steps >= n,
        Some(overrides::CheckpointEvery::Seconds(s)) => last.elapsed().as_secs() >= s,
    }
}

/// How a step's loss says the run is diverging: not finite, or grown far past the loss of a
/// uniform guess over the classes (ln C): ten thousand times that is not a model that is
/// learning, even with a method's penalty added.
fn divergence(loss: f32, classes: usize) -> Option<String> {
    let uniform = (classes.max(2) as f64).ln();
    let limit = 1e4 * uniform;
    if !loss.is_finite() {
        Some(format!("the loss became {loss}"))
    } else if f64::from(loss) > limit {
        Some(format!(
            "the loss reached {loss:.3e}, over 10^4 times a uniform guess's (ln {classes} = \
             {uniform:.3}): the run is diverging"
        ))
    } else {
        None
    }
}

/// A finished run that learned nothing: chance accuracy on the test set. Says so, with the
/// likely cause the training loss points to.
fn learned_nothing(
    test_accuracy: f64,
    train_loss: f64,
    module: &Module,
    spec: &TrainSpec,
) -> Option<String> {
    let classes = data_shape(module).ok()?.1;
    if classes < 2 || !train_loss.is_finite() {
        return None;
    }
    let chance = 1.0 / classes as f64;
    if test_accuracy > 1.5 * chance {
        return None;
    }
    let uniform = (classes as f64).ln();
    let (lr, batch) = (spec.optimizer.lr as f32, spec.batch);
    let cause = if (train_loss - uniform).abs() <= 0.05 * uniform {
        format!(
            "the training loss {train_loss:.4} is a uniform guess's (ln {classes} = \
             {uniform:.4}): the outputs are flat. Either the learning rate is too large for the \
             batch (lr {lr}, batch {batch}) and the first steps left every ReLU unit dead, or it \
             is too small (or decays too fast) for the run to leave its start: try a smaller lr \
             or a larger batch, or a larger lr or more epochs"
        )
    } else if train_loss > uniform {
        format!(
            "the training loss {train_loss:.4} is above a uniform guess's (ln {classes} = \
             {uniform:.4}): the steps overshoot. The likely cause is a learning rate too large \
             (lr {lr}, batch {batch}). Try a smaller lr"
        )
    } else {
        format!(
            "yet the training loss fell to {train_loss:.4}: the model fits the training set and \
             nothing else. The likely cause is test data that does not match the training data"
        )
    };
    Some(format!(
        "the run learned nothing: test accuracy {:.2}% is chance (1 in {classes}), and {cause}.",
        100.0 * test_accuracy
    ))
}

/// A resumed run's position must be one this run can be at: within its epochs, its step count
/// the one its epoch and batch give (so no counter is near wrapping, and the data order and
/// schedule pick up where the step count says).
fn check_position(
    meta: &TrainMeta,
    epochs: u64,
    steps_per_epoch: u64,
    batch: u64,
) -> Result<(), Failure> {
    let expected = meta
        .epoch
        .checked_mul(steps_per_epoch)
        .and_then(|s| s.checked_add(meta.batch_in_epoch));
    let fits = meta.epoch <= epochs
        && meta.batch_in_epoch < steps_per_epoch
        && (meta.epoch < epochs || meta.batch_in_epoch == 0)
        && expected == Some(meta.step)
        && Some(meta.epoch_seen) == meta.batch_in_epoch.checked_mul(batch)
        && meta.epoch_correct <= meta.epoch_seen
        && meta.epoch_loss_sum.is_finite();
    if fits {
        return Ok(());
    }
    Err(input_error(format!(
        "the checkpoint's position (epoch {}, batch {} of {steps_per_epoch}, step {}) is not one a \
         run of {epochs} epochs reaches; its training state is damaged",
        meta.epoch, meta.batch_in_epoch, meta.step
    )))
}

/// The compile options of a run: its memory budget, nothing printed.
fn compile_options(program: &Program) -> driver::CompileOptions {
    driver::CompileOptions {
        print_after: Vec::new(),
        memory_budget: program.run.memory_budget,
    }
}

/// The program as it runs now: compiled (stage `opt`), with a runner for every function the
/// loop calls.
struct Compiled {
    module: Module,
    runners: Vec<(&'static str, Runner)>,
    /// What earlier programs of the run timed, when profiling (`--profile`).
    profile: Option<RunProfile>,
}

impl Compiled {
    /// Prepare `@train_step`, the functions the hooks ask for, and `@forward`.
    fn new(
        module: Module,
        hooks: &[Box<dyn RunMethod>],
        backend: Backend,
        threads: Option<usize>,
        profile: Option<RunProfile>,
    ) -> Result<Compiled, Failure> {
        let mut names = vec![TRAIN_STEP];
        for &name in hooks
            .iter()
            .flat_map(|h| h.extra_functions())
            .chain(&[FORWARD])
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut runners = Vec::with_capacity(names.len());
        for name in names {
            if module.func(name).is_none() {
                return Err(input_error(format!("the program has no @{name}")));
            }
            let mut runner = Runner::new(&module, name, backend, threads)
                .map_err(|e| input_error(format!("cannot prepare @{name}: {e}")))?;
            if profile.is_some() {
                runner.set_profiling(true).map_err(Failure::Usage)?;
            }
            runners.push((name, runner));
        }
        Ok(Compiled {
            module,
            runners,
            profile,
        })
    }

    /// The run's kernel times so far (this program's added), when profiling; called when the
    /// program is replaced or the run ends, so each runner's times are added once.
    fn take_profile(&mut self) -> Option<RunProfile> {
        let mut profile = self.profile.take()?;
        for (name, runner) in &self.runners {
            profile.absorb(&self.module, name, runner);
        }
        Some(profile)
    }

    fn runner(&mut self, name: &str) -> Result<&mut Runner, Failure> {
        self.runners
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
            .ok_or_else(|| input_error(format!("@{name} is not prepared")))
    }

    fn compile_ms(&self) -> f64 {
        self.runners.iter().map(|(_, r)| r.compile_ms()).sum()
    }

    fn threads(&self) -> usize {
        self.runners.first().map_or(1, |(_, r)| r.threads())
    }
}

/// Every hook's state sync, in order.
fn sync_state(hooks: &[Box<dyn RunMethod>], module: &Module, steps: u64, state: &mut State<f32>) {
    for hook in hooks {
        hook.sync_state(module, steps, state);
    }
}

/// Carry out a reconfiguration: the structural pass on the program at stage `ir`, the pipeline
/// again from there, new runners, and the state carried over through the pass's remap. Returns
/// the metrics line that records it. `epoch` is the 1-based epoch just finished (0: before
/// training).
/// What the program as it runs costs: compile times so far, and its FLOPs now.
struct Costs {
    /// The passes' time (every compilation), and the JIT's.
    compile_ms: f64,
    jit_compile_ms: f64,
    /// One training step's FLOPs and one sample's inference FLOPs ([`architecture_flops`]).
    step_flops: u64,
    inference_flops: f64,
}

/// The inputs of a training step.
fn step_inputs<'a>(images: &'a [f32], labels: &'a [i32], lr: &'a [f32]) -> [Input<'a, f32>; 3] {
    [Input::Float(images), Input::Int(labels), Input::Float(lr)]
}

/// A `method` line of metrics.jsonl: what a hook said at `epoch` (1-based; 0 before training).
fn method_line(
    module: &Module,
    epoch: u64,
    step: u64,
    log: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut line = json!({
        "kind": "method", "method": method_name(module), "epoch": epoch, "step": step,
    });
    if let Some(fields) = line.as_object_mut() {
        fields.extend(log);
    }
    line
}

/// The running program's parts a reconfiguration replaces.
struct Running<'a> {
    program: &'a mut Program,
    compiled: &'a mut Compiled,
    state: &'a mut State<f32>,
    costs: &'a mut Costs,
    meta: &'a mut TrainMeta,
}

/// [`reconfigure`], then the costs of the new program and the checkpoint's record of it.
fn reconfigure_running(
    reconfiguration: Reconfiguration,
    run: Running<'_>,
    hooks: &[Box<dyn RunMethod>],
    req: &TrainRequest,
    epoch: u64,
) -> Result<serde_json::Value, Failure> {
    let step = run.meta.step;
    let line = reconfigure(
        reconfiguration,
        run.program,
        run.compiled,
        run.state,
        hooks,
        req,
        epoch,
        step,
    )?;
    // The recompilation: its JIT part, and the passes (the rest of its time).
    let jit_ms = run.compiled.compile_ms();
    run.costs.jit_compile_ms += jit_ms;
    run.costs.compile_ms += line["compile_ms"].as_f64().unwrap_or(0.0) - jit_ms;
    run.meta.program = Some(sparsec_ir::print::print_module(&run.program.module));
    (run.costs.step_flops, run.costs.inference_flops) =
        architecture_flops(run.program, &run.compiled.module)?;
    Ok(line)
}

/// What a hook said at `epoch` (1-based; 0 before training), logged as a `method` line when it
/// said something, and the reconfiguration it asked for, carried out and logged.
fn record_hook(
    metrics: &mut Metrics,
    log: serde_json::Map<String, serde_json::Value>,
    asked: Option<Reconfiguration>,
    running: Running<'_>,
    hooks: &[Box<dyn RunMethod>],
    req: &TrainRequest,
    epoch: u64,
) -> Result<(), Failure> {
    if !log.is_empty() {
        let line = method_line(&running.compiled.module, epoch, running.meta.step, log);
        metrics.log(line)?;
    }
    if let Some(reconfiguration) = asked {
        metrics.log(reconfigure_running(
            reconfiguration,
            running,
            hooks,
            req,
            epoch,
        )?)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn reconfigure(
    reconfiguration: Reconfiguration,
    program: &mut Program,
    compiled: &mut Compiled,
    state: &mut State<f32>,
    hooks: &[Box<dyn RunMethod>],
    req: &TrainRequest,
    epoch: u64,
    step: u64,
) -> Result<serde_json::Value, Failure> {
    let started = Instant::now();
    let what = reconfiguration.pass.describe();
    let when = match epoch {
        0 => "before training".to_owned(),
        e => format!("after epoch {e}"),
    };
    let fail = |e: String| input_error(format!("reconfiguration {when} ({what}) failed: {e}"));
    let (ir, remap) = reconfiguration.pass.run(&program.module).map_err(fail)?;
    let module = driver::compile_module(
        program,
        ir.clone(),
        Stage::Opt,
        &compile_options(program),
        &mut String::new(),
    )?;
    let carried =
        sparsec_ir::remap::remap_state(&compiled.module, &module, state, &remap).map_err(fail)?;
    let shapes: serde_json::Map<String, serde_json::Value> =
        methods::changed_shapes(&compiled.module, &module, &remap)
            .into_iter()
            .map(|(name, shape)| (name, json!(shape)))
            .collect();
    let profile = compiled.take_profile();
    *compiled = Compiled::new(module, hooks, req.backend, req.threads, profile)?;
    *state = carried;
    program.module = ir;
    Ok(json!({
        "kind": "reconfigure", "epoch": epoch, "step": step, "what": what,
        "shapes": shapes, "compile_ms": started.elapsed().as_secs_f64() * 1e3,
    }))
}

/// FLOPs of the program as it stands: one training step (forward, both gradients, update and
/// the method's work, as `sparsec report` counts them on stage `train`) and one sample's
/// forward pass.
fn architecture_flops(program: &Program, compiled: &Module) -> Result<(u64, f64), Failure> {
    // An IR dump past stage `train` cannot go back to it: count its own (optimised) step.
    let module = if program.module.stage <= Stage::Train {
        driver::train_step_module(program)?
    } else {
        compiled.clone()
    };
    let batch = module.train.as_ref().map_or(1, |t| t.batch).max(1);
    Ok((
        crate::report::function_flops(&module, TRAIN_STEP),
        crate::report::function_flops(&module, FORWARD) as f64 / batch as f64,
    ))
}

/// The program's method as `summary.json` and the metrics name it.
fn method_name(module: &Module) -> String {
    module
        .method
        .as_ref()
        .map_or("dense".to_owned(), |m| m.method.name().to_owned())
}

/// `sparsec train`: returns the text for stdout.
pub fn train(mut req: TrainRequest) -> Result<String, Failure> {
    let wall = Instant::now();
    let extra_hooks = std::mem::take(&mut req.extra_hooks);
    let req = &req;
    let Session {
        mut program,
        module,
        method,
        splits,
        run_dir,
        mut state,
        mut meta,
        resumed,
        compile_ms,
        memory_estimate,
    } = prepare(req)?;
    let mut hooks = vec![method];
    hooks.extend(extra_hooks);
    if let Some(saved) = &meta.hook_states {
        if saved.len() != hooks.len() {
            return Err(input_error(format!(
                "the checkpoint holds the state of {} run-side hooks, this run has {}",
                saved.len(),
                hooks.len()
            )));
        }
        for (hook, saved) in hooks.iter_mut().zip(saved) {
            if !saved.is_null() {
                hook.restore(saved)
                    .map_err(|e| input_error(format!("cannot resume a hook's state: {e}")))?;
            }
        }
    }
    let spec = module
        .train
        .clone()
        .ok_or_else(|| input_error("the program has no `train` settings"))?;
    let run = program.run.clone();
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
    let mut compiled = Compiled::new(
        module,
        &hooks,
        req.backend,
        req.threads,
        req.profile.then(RunProfile::default),
    )?;
    sync_state(&hooks, &compiled.module, meta.step, &mut state);
    let (step_flops, inference_flops) = architecture_flops(&program, &compiled.module)?;
    let mut costs = Costs {
        compile_ms,
        jit_compile_ms: compiled.compile_ms(),
        step_flops,
        inference_flops,
    };

    // The running program's parts a hook's reconfiguration replaces, borrowed afresh each time.
    macro_rules! running {
        () => {
            Running {
                program: &mut program,
                compiled: &mut compiled,
                state: &mut state,
                costs: &mut costs,
                meta: &mut meta,
            }
        };
    }
    let batch = spec.batch as usize;
    let train_set = &splits.train;
    let steps_per_epoch = train_set.len() / batch;
    if steps_per_epoch == 0 {
        return Err(input_error(format!(
            "the training set has {} samples, fewer than one batch of {batch}",
            train_set.len()
        )));
    }
    if resumed {
        check_position(&meta, spec.epochs, steps_per_epoch as u64, batch as u64)?;
    }
    let sample_len = train_set.sample_len();
    let mut images = vec![0f32; batch * sample_len];
    let mut labels = vec![0i32; batch];
    let memory_budget = program.run.memory_budget;
    let save =
        |module: &Module, state: &State<f32>, meta: &TrainMeta, hooks: &[Box<dyn RunMethod>]| {
            let mut train = meta.clone();
            let own: Vec<serde_json::Value> = hooks.iter().map(|h| h.checkpoint()).collect();
            train.hook_states = own.iter().any(|v| !v.is_null()).then_some(own);
            checkpoint::save(
                &run_dir,
                &Snapshot {
                    module,
                    state,
                    train,
                    tracked_dense: checkpoint::tracked_weights_dense(module, memory_budget),
                },
            )
            .map_err(input_error)
        };
    if !resumed && meta.step == 0 {
        // A method may calibrate on the first minibatch before training (PruneTrain's λ): the
        // step runs once on a copy of the state, and what the method asks for then is in the
        // initial checkpoint.
        for h in 0..hooks.len() {
            if !hooks[h].wants_probe() {
                continue;
            }
            let order = data::order::epoch_order(train_set.len(), spec.seed, 0, run.shuffle);
            data::order::fill_batch(train_set, &order, 0, batch, &mut images, &mut labels);
            let lr_arg = [learning_rate(&spec, 0) as f32];
            let mut scratch = state.clone();
            let outputs = compiled
                .runner(hooks[0].step_function(0))?
                .run(&mut scratch, &step_inputs(&images, &labels, &lr_arg))
                .map_err(|e| input_error(format!("the calibration step failed: {e}")))?;
            let mut probe = Probe {
                outputs: &outputs,
                log: serde_json::Map::new(),
            };
            probe.log.insert("probe".into(), json!(true));
            let asked = hooks[h].after_probe(&mut probe).map_err(input_error)?;
            let log = std::mem::take(&mut probe.log);
            let running = running!();
            record_hook(&mut metrics, log, asked, running, &hooks, req, 0)?;
        }
    }
    if !resumed && meta.step == 0 {
        // A method may set its state up before the first step (ADMM's first projection).
        for h in 0..hooks.len() {
            let mut start = EpochEnd {
                epoch: 0,
                step: 0,
                module: &compiled.module,
                ir: &program.module,
                state: &mut state,
                log: serde_json::Map::new(),
                test_accuracy: f64::NAN,
            };
            let asked = hooks[h].before_training(&mut start).map_err(input_error)?;
            let log = std::mem::take(&mut start.log);
            let running = running!();
            record_hook(&mut metrics, log, asked, running, &hooks, req, 0)?;
        }
    }
    let mut last_checkpoint = if resumed {
        checkpoint::latest(&run_dir).ok()
    } else {
        None
    };
    let mut last_saved_step = meta.step;
    let mut last_saved_at = Instant::now();
    if !resumed {
        last_checkpoint = Some(save(&compiled.module, &state, &meta, &hooks)?);
    }

    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(spec.epochs * steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {per_sec}  {msg}  [{elapsed_precise} < {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(meta.step);
        Some(bar)
    } else {
        None
    };

    let mut samples_this_session = 0u64;
    let mut zero_counts = ZeroCounts::default();
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
            // Both at a step boundary, where the state is one a checkpoint can hold.
            if interrupt::requested() {
                stop_reason = "interrupted";
                break 'epochs;
            }
            if meta.step != last_saved_step
                && checkpoint_due(
                    run.checkpoint_every,
                    meta.step - last_saved_step,
                    last_saved_at,
                )
            {
                last_checkpoint = Some(save(&compiled.module, &state, &meta, &hooks)?);
                last_saved_step = meta.step;
                last_saved_at = Instant::now();
            }
            let start = meta.batch_in_epoch as usize * batch;
            data::order::fill_batch(train_set, &order, start, batch, &mut images, &mut labels);
            // The method's run side (the first hook) chooses the step function.
            let outputs = compiled
                .runner(hooks[0].step_function(epoch))?
                .run(&mut state, &step_inputs(&images, &labels, &lr_arg))
                .map_err(|e| input_error(format!("training step failed: {e}")))?;
            let (Some(Output::Float(loss)), Some(Output::Float(logits))) =
                (outputs.first(), outputs.get(1))
            else {
                return Err(input_error("@train_step must return (loss, logits)"));
            };
            let loss = loss.data.first().copied().unwrap_or(f32::NAN);
            let classes = logits.shape[1];
            if let Some(what) = divergence(loss, classes) {
                if let Some(bar) = &progress {
                    bar.abandon();
                }
                let kept = last_checkpoint
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string());
                return Err(input_error(format!(
                    "{what} at epoch {}, step {} (lr {}); training stopped. The last good \
                     checkpoint is kept: {kept}. Try a smaller learning rate (a new run from \
                     its weights: --init-from {} --set lr=...).",
                    epoch + 1,
                    meta.step + 1,
                    lr as f32,
                    run_dir.display()
                )));
            }
            let correct = logits
                .data
                .chunks_exact(classes)
                .zip(&labels)
                .filter(|(row, &label)| row_stats(row).0 == label as usize)
                .count();
            meta.step += 1;
            meta.train_flops = meta.train_flops.map(|f| f.saturating_add(costs.step_flops));
            sync_state(&hooks, &compiled.module, meta.step, &mut state);
            for hook in hooks.iter_mut() {
                hook.after_step(&StepEnd {
                    epoch,
                    step: meta.step,
                    module: &compiled.module,
                    outputs: &outputs,
                    state: &state,
                })
                .map_err(input_error)?;
            }
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
                        "sparsity": sparsity(&compiled.module, &state, &mut zero_counts),
                    }),
                    &compiled.module,
                    &state,
                ))?;
                match &progress {
                    Some(bar) => bar.set_message(format!("epoch {} loss {loss:.4}", epoch + 1)),
                    None => eprintln!(
                        "epoch {}/{} step {} loss {loss:.4} lr {}",
                        epoch + 1,
                        spec.epochs,
                        meta.step,
                        lr as f32
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
        let (test_loss, test_acc) =
            evaluate(batch, compiled.runner(FORWARD)?, &mut state, &splits.test)?;
        last_test = (test_loss, test_acc);
        last_train_loss = train_loss;
        metrics.log(with_tracked(
            json!({
                "kind": "epoch", "epoch": epoch + 1, "step": meta.step, "lr": lr,
                "train_loss": train_loss, "train_accuracy": train_acc,
                "test_loss": test_loss, "test_accuracy": test_acc,
                "sparsity": sparsity(&compiled.module, &state, &mut zero_counts),
            }),
            &compiled.module,
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
        for h in 0..hooks.len() {
            let mut end = EpochEnd {
                epoch,
                step: meta.step,
                module: &compiled.module,
                ir: &program.module,
                state: &mut state,
                log: serde_json::Map::new(),
                test_accuracy: test_acc,
            };
            let asked = hooks[h].after_epoch(&mut end).map_err(input_error)?;
            let log = std::mem::take(&mut end.log);
            let running = running!();
            record_hook(&mut metrics, log, asked, running, &hooks, req, epoch + 1)?;
        }
        last_checkpoint = Some(save(&compiled.module, &state, &meta, &hooks)?);
        last_saved_step = meta.step;
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let session_seconds = train_started.elapsed().as_secs_f64();
    if last_saved_step != meta.step {
        last_checkpoint = Some(save(&compiled.module, &state, &meta, &hooks)?);
    }
    let checkpoint_dir = last_checkpoint.unwrap_or_else(|| run_dir.join("checkpoints"));
    if stop_reason == "interrupted" {
        let summary = json!({
            "model": compiled.module.name,
            "method": method_name(&compiled.module),
            "status": stop_reason,
            "epochs": spec.epochs,
            "epochs_completed": meta.epoch,
            "steps": meta.step,
            "seed": spec.seed,
            "wall_seconds": wall.elapsed().as_secs_f64(),
            "checkpoint": checkpoint_dir.strip_prefix(&run_dir).unwrap_or(&checkpoint_dir),
        });
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
        checkpoint::write_atomically(&run_dir.join("summary.json"), text.as_bytes())
            .map_err(|e| input_error(format!("cannot write summary.json: {e}")))?;
        return Err(Failure::Interrupted(format!(
            "interrupted at epoch {}, step {}: checkpoint {} written\nresume with: sparsec \
             train --resume {}",
            meta.epoch + 1,
            meta.step,
            checkpoint_dir.display(),
            run_dir.display()
        )));
    }
    if last_test.1.is_nan() || stop_reason == "max_steps" {
        // A run stopped by max_steps (or resumed with nothing left to do) still reports where
        // it stands.
        last_test = evaluate(batch, compiled.runner(FORWARD)?, &mut state, &splits.test)?;
    }
    let run_profile = compiled.take_profile();
    let module = &compiled.module;

    let params_total = module.param_count();
    let (weights_stored, state_bytes) = stored_weights(module, &state);
    let method = method_name(module);
    let summary = json!({
        "model": module.name,
        "method": method,
        "backend": req.backend.name(),
        "threads": compiled.threads(),
        "jit_compile_ms": costs.jit_compile_ms,
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
        "train_flops_total": meta.train_flops,
        "inference_flops": costs.inference_flops,
        "weights_stored": weights_stored,
        "weight_state_bytes": state_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "memory_estimate_bytes": memory_estimate,
        "seed": spec.seed,
        "compile_ms": costs.compile_ms + costs.jit_compile_ms,
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "checkpoint": checkpoint_dir.strip_prefix(&run_dir).unwrap_or(&checkpoint_dir),
    });
    let mut summary = with_tracked(summary, module, &state);
    if let Some(warning) = learned_nothing(last_test.1, last_train_loss, module, &spec) {
        eprintln!("warning: {warning}");
        summary["warning"] = warning.into();
    }
    // The final weights, also as a plain state_dict file at the top of the run directory.
    let model_bytes = checkpoint::model_file_bytes(
        module,
        &state,
        meta.step,
        checkpoint::tracked_weights_dense(module, program.run.memory_budget),
    )
    .map_err(input_error)?;
    checkpoint::write_atomically(&run_dir.join("model.safetensors"), &model_bytes)
        .map_err(|e| input_error(format!("cannot write model.safetensors: {e}")))?;
    // Masked weights also in their sparse form (indices and values), beside the dense file.
    if let Some(bytes) =
        checkpoint::sparse_file_bytes(module, &state, meta.step).map_err(input_error)?
    {
        checkpoint::write_atomically(&run_dir.join("model.sparse.safetensors"), &bytes)
            .map_err(|e| input_error(format!("cannot write model.sparse.safetensors: {e}")))?;
    }
    // summary.json after the model: a run that says it completed has its weights in place.
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
    checkpoint::write_atomically(&run_dir.join("summary.json"), text.as_bytes())
        .map_err(|e| input_error(format!("cannot write summary.json: {e}")))?;
    // The report reads the run back from disk, so it shows what was saved, as `sparsec report`.
    let table = crate::report::build(&run_dir)?.table();
    checkpoint::write_atomically(&run_dir.join("report.txt"), table.as_bytes())
        .map_err(|e| input_error(format!("cannot write report.txt: {e}")))?;
    let rate = if session_seconds > 0.0 {
        samples_this_session as f64 / session_seconds
    } else {
        0.0
    };
    let mut profile_table = String::new();
    if let Some(profile) = run_profile {
        let text = serde_json::to_string_pretty(&profile.json()).unwrap_or_default() + "\n";
        checkpoint::write_atomically(&run_dir.join("profile.json"), text.as_bytes())
            .map_err(|e| input_error(format!("cannot write profile.json: {e}")))?;
        profile_table = profile.table();
    }
    Ok(format!(
        "{}: {} steps, test accuracy {:.2}%; trained in {:.1} s ({rate:.0} samples/s); run \
         directory {}\n{table}{profile_table}",
        module.name,
        meta.step,
        100.0 * last_test.1,
        session_seconds,
        run_dir.display()
    ))
}

/// `sparsec eval [FILE] --weights RUN_DIR|FILE.safetensors` (FILE may be left out for a run
/// directory: the run knows its model).
pub fn eval(
    file: Option<&Path>,
    weights: &Path,
    data_dir: Option<&Path>,
    backend: Backend,
    threads: Option<usize>,
) -> Result<String, Failure> {
    let crate::trained::Trained {
        program,
        mut state,
        weights_file,
        meta,
    } = crate::trained::load(file, weights, backend)?;
    let module = &program.module;
    let splits = load_data(module, data_dir)?;
    eprintln!("{}", splits.description);
    let optimised = crate::trained::optimised(&program)?;
    let mut forward = Runner::new(&optimised, FORWARD, backend, threads)
        .map_err(|e| input_error(format!("cannot prepare @forward: {e}")))?;
    let batch = module.train.as_ref().map_or(1, |t| t.batch as usize);
    let (loss, acc) = evaluate(batch, &mut forward, &mut state, &splits.test)?;
    Ok(format!(
        "{}: weights from step {} ({}): test accuracy {:.2}% ({} samples), test loss {loss:.4}\n",
        module.name,
        meta.step,
        weights_file.display(),
        100.0 * acc,
        splits.test.len()
    ))
}
