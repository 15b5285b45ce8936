//! Checkpoints: everything needed to resume a run exactly, written atomically.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding
//! - `model.safetensors`: the network's weights, and nothing else, under PyTorch `state_dict`
//!   names and layouts (`fc1.weight` is `[out, in]`, conv `[out, in, kh, kw]`), so
//!   `model.load_state_dict(safetensors.torch.load_file(path))` works as is; its metadata records
//!   how every parameter was initialised (seed, stream, range) so it can be regenerated, and for
//!   a model with tracked weights the `init_scale` the initial values had at that step
//!   (`decay_init`; 1 otherwise). A tracked weight is saved here as its dense effective value,
//!   so the file loads as a `state_dict` whatever the method;
//! - `train_state.safetensors`: optimizer state (`<weight>.momentum_buffer`), the stored
//!   entries of every Dropback-tracked weight (`<weight>.tracked_indices`, I32, the sorted flat
//!   indices where it differs from its regenerated initial value, and `<weight>.tracked_values`,
//!   F32, the values there; these, not `model.safetensors`, are what a resumed run reads) and, in
//!   its metadata, the position in the schedule and the data order, the running epoch sums, the
//!   resolved model file and the overrides.
//!
//! - `manifest.json`: the SHA-256 of each of those files, the step, and the run's identity.
//!
//! The files are written into a temporary directory which is then renamed into place, and the
//! run's `latest` file (the name of the newest complete checkpoint) is replaced by rename too:
//! a run killed at any instant leaves the previous checkpoint intact and `latest` pointing at a
//! complete one.
//!
//! Nothing read back is trusted as it stands ([`open`]): `run.json` at the run's root holds the
//! run's identity (a random id drawn when it was created and a fingerprint of the model source
//! and `--set` values it was started with); a checkpoint is used only if its manifest names the
//! same run, every file matches its checksum, its format is this build's and its training state
//! has the fingerprint. A flipped byte, a file from another run or another model's checkpoint
//! dropped in are refused, naming the file.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sparsec_ir::interp::{State, TrackedValues};
use sparsec_ir::{Init, Module, Role};

/// The single metadata key sparsec writes (one key keeps the header byte-for-byte stable).
pub const METADATA_KEY: &str = "sparsec";
/// The checkpoint format this build writes and reads: of the training state, the manifests and
/// `run.json`. 2: manifests, `run.json`, the run id.
pub const FORMAT: u32 = 2;
/// The format of the weights files (`model.safetensors`, the sparse form), which a build reads
/// without the rest of a checkpoint. Unchanged since the first: the same bits as before.
pub const MODEL_FORMAT: u32 = 1;

/// The run's identity at the root of its directory.
pub const RUN_FILE: &str = "run.json";
/// A checkpoint's list of its files with their checksums.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Which run a checkpoint belongs to (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub format: u32,
    /// Drawn when the run is created: tells two runs of the same model and settings apart.
    pub run_id: String,
    /// [`fingerprint`] of what the run was started from.
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Manifest {
    run: RunIdentity,
    step: u64,
    /// File name → SHA-256 (hex) of its bytes.
    files: BTreeMap<String, String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprint of a run: a hash of the model source it was started from, whether that was
/// an IR dump, and its `--set` values in order, except `epochs`: a finished run extended with
/// `--resume RUN --set epochs=N` is still the same run.
pub fn fingerprint(source: &str, source_is_ir: bool, sets: &[(String, String)]) -> String {
    let sets: Vec<&(String, String)> = sets.iter().filter(|(k, _)| k != "epochs").collect();
    let canonical = serde_json::json!({
        "source": source,
        "source_is_ir": source_is_ir,
        "sets": sets,
    });
    sha256_hex(canonical.to_string().as_bytes())
}

/// `run.json`: the run's identity and how it was started (enough to start it again in place if
/// it was killed before its first checkpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFile {
    #[serde(flatten)]
    pub identity: RunIdentity,
    pub source_name: String,
    pub source_is_ir: bool,
    pub sets: Vec<(String, String)>,
    pub data_dir: Option<String>,
    /// The weights the run started from (`train --init-from`), absent for initialised ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
}

/// Weights a run started from instead of its initialisation: another run's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitFrom {
    /// That checkpoint's `model.safetensors`.
    pub weights: String,
    /// Its SHA-256 when the run started (a restart in place loads the same bits or refuses).
    pub sha256: String,
}

/// A new run's `run.json`, with an id no other run has (the clock, the process and the
/// directory, hashed). `meta` is the run's training state at step 0.
pub fn new_run_file(run_dir: &Path, meta: &TrainMeta) -> RunFile {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}:{}:{}", std::process::id(), run_dir.display());
    RunFile {
        identity: RunIdentity {
            format: FORMAT,
            run_id: sha256_hex(seed.as_bytes())[..32].to_owned(),
            fingerprint: fingerprint(&meta.source, meta.source_is_ir, &meta.sets),
        },
        source_name: meta.source_name.clone(),
        source_is_ir: meta.source_is_ir,
        sets: meta.sets.clone(),
        data_dir: meta.data_dir.clone(),
        init_from: None,
    }
}

/// Load the weights a run starts from into `state` (only the weights: optimizer and method
/// state start afresh), checking them against the checksum `from` records.
pub fn load_init_from(
    from: &InitFrom,
    module: &Module,
    state: &mut State<f32>,
) -> Result<(), String> {
    let path = Path::new(&from.weights);
    let bytes = read(path)?;
    if sha256_hex(&bytes) != from.sha256 {
        return Err(format!(
            "`{}` changed since the run started from it (its checksum differs)",
            path.display()
        ));
    }
    load_weights(path, module, state)
        .map(|_| ())
        .map_err(|e| format!("cannot start from another run's weights: {e}"))
}

/// The latest checkpoint of the run in `run_dir` as weights to start a new run from.
pub fn init_from(run_dir: &Path) -> Result<(InitFrom, TrainMeta), String> {
    let (dir, meta) = open(run_dir)?;
    let weights = dir.join("model.safetensors");
    let weights = fs::canonicalize(&weights).unwrap_or(weights);
    let sha256 = sha256_hex(&read(&weights)?);
    Ok((
        InitFrom {
            weights: weights.display().to_string(),
            sha256,
        },
        meta,
    ))
}

/// Write `run.json` (atomically) into a run directory just claimed.
pub fn write_run_file(run_dir: &Path, run: &RunFile) -> Result<(), String> {
    let json = serde_json::to_string_pretty(run).map_err(|e| e.to_string())?;
    write_atomically(&run_dir.join(RUN_FILE), format!("{json}\n").as_bytes())
        .map_err(|e| format!("cannot write `{}`: {e}", run_dir.join(RUN_FILE).display()))
}

/// Read at most `limit` bytes of a small file (a link to /dev/zero must not fill memory).
fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "`{}` is larger than {limit} bytes; it is not sparsec's",
            path.display()
        ));
    }
    Ok(bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, limit: u64) -> Result<T, String> {
    let bytes = read_small(path, limit)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("`{}` is not valid: {e}", path.display()))
}

fn check_format(path: &Path, format: u32) -> Result<(), String> {
    if format == FORMAT {
        Ok(())
    } else {
        Err(format!(
            "`{}` has checkpoint format {format}; this build reads format {FORMAT}",
            path.display()
        ))
    }
}

/// The `run.json` of the run in `run_dir`.
pub fn read_run_file(run_dir: &Path) -> Result<RunFile, String> {
    let path = run_dir.join(RUN_FILE);
    if !path.exists() {
        return Err(format!(
            "`{}` has no {RUN_FILE}: it is not a run directory, or was written by a sparsec \
             older than checkpoint format {FORMAT}",
            run_dir.display()
        ));
    }
    let run: RunFile = read_json(&path, 1 << 16)?;
    check_format(&path, run.identity.format)?;
    Ok(run)
}

/// The model source a run was started from, as its own copy holds it, checked against the
/// run's fingerprint.
pub fn read_source_copy(run_dir: &Path, run: &RunFile) -> Result<String, String> {
    let copy = run_dir.join(source_copy_name(run.source_is_ir));
    let bytes = read_small(&copy, 64 << 20)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("`{}` is not UTF-8 text", copy.display()))?;
    if fingerprint(&text, run.source_is_ir, &run.sets) != run.identity.fingerprint {
        return Err(format!(
            "`{}` is not the model source the run was started with (the fingerprint in {RUN_FILE} \
             differs)",
            copy.display()
        ));
    }
    Ok(text)
}

/// The name of a run's copy of its model source.
pub fn source_copy_name(is_ir: bool) -> &'static str {
    if is_ir {
        "model.ir"
    } else {
        "model.net"
    }
}

/// The latest checkpoint of the run in `run_dir` and where training stood, after checking
/// everything that can be checked before the program is compiled: the checkpoint belongs to
/// this run, every file has its checksum, the format is this build's, the training state has
/// the run's fingerprint and step, and the run's own copy of its source is the one recorded.
pub fn open(run_dir: &Path) -> Result<(PathBuf, TrainMeta), String> {
    let dir = latest(run_dir)?;
    let identity = read_run_file(run_dir)?.identity;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest: Manifest = read_json(&manifest_path, 1 << 20)?;
    if manifest.run != identity {
        return Err(format!(
            "`{}` belongs to another run (its manifest names run {}, `{}` is run {})",
            dir.display(),
            manifest.run.run_id,
            run_dir.join(RUN_FILE).display(),
            identity.run_id
        ));
    }
    for required in ["model.safetensors", "train_state.safetensors"] {
        if !manifest.files.contains_key(required) {
            return Err(format!("`{}` lists no {required}", manifest_path.display()));
        }
    }
    for (name, want) in &manifest.files {
        let known = ["model.safetensors", "train_state.safetensors", SPARSE_FILE];
        if !known.contains(&name.as_str()) {
            return Err(format!(
                "`{}` lists `{name}`, which is not a checkpoint file",
                manifest_path.display()
            ));
        }
        let path = dir.join(name);
        let bytes = read(&path)?;
        if sha256_hex(&bytes) != *want {
            return Err(format!(
                "`{}` does not match its checksum in {MANIFEST_FILE}: it was changed or \
                 replaced after it was written",
                path.display()
            ));
        }
    }
    let path = dir.join("train_state.safetensors");
    let meta = read_train_meta(&dir)?;
    if fingerprint(&meta.source, meta.source_is_ir, &meta.sets) != identity.fingerprint {
        return Err(format!(
            "`{}` was not written by this run: its model source or settings differ from the \
             ones the run was started with",
            path.display()
        ));
    }
    if meta.step != manifest.step {
        return Err(format!(
            "`{}` is at step {}, its manifest says {}",
            path.display(),
            meta.step,
            manifest.step
        ));
    }
    let copy = run_dir.join(source_copy_name(meta.source_is_ir));
    let own = read_small(&copy, 64 << 20)?;
    if own != meta.source.as_bytes() {
        return Err(format!(
            "`{}` differs from the model source the run's checkpoints record",
            copy.display()
        ));
    }
    Ok((dir, meta))
}

/// How one parameter's initial value is regenerated (docs/design.md, "Seeded regeneration").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitRecord {
    pub name: String,
    pub seed: u64,
    pub stream: u64,
    /// `uniform` or `zeros`.
    pub init: String,
    pub lo: f32,
    pub hi: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub model: String,
    pub step: u64,
    pub params: Vec<InitRecord>,
    /// For a model with tracked weights: the factor their initial values were multiplied by at
    /// this step (`decay_init^step`, 1 without decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_scale: Option<f32>,
    /// The tracked weights are not in this file: a run whose memory budget their dense values
    /// do not fit keeps them only as what they are, entries over the regenerated initial value,
    /// in the `train_state.safetensors` beside it ([`tracked_weights_dense`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tracked_in_state: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether a run's weights files hold its tracked weights densely, as a PyTorch `state_dict`
/// does: unless the run has a memory budget that their dense values do not fit. Such a run's
/// step never holds them whole (its program streams them), and neither do its checkpoints.
pub fn tracked_weights_dense(module: &Module, memory_budget: Option<u64>) -> bool {
    let dense: u64 = module
        .params
        .iter()
        .filter(|p| sparsec_ir::interp::is_tracked(p))
        .map(|p| 4 * p.ty.num_elements() as u64)
        .sum();
    memory_budget.is_none_or(|budget| dense <= budget)
}

/// Where training stands; with the weights and optimizer state it determines the rest of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainMeta {
    pub format: u32,
    /// The run's id ([`RunIdentity`]), so a checkpoint names the run it belongs to.
    pub run_id: String,
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch in progress (0-based) and the next batch in its data order.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Running sums over the epoch in progress (for its train loss and accuracy).
    pub epoch_loss_sum: f64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
    /// The model file (or IR dump) the run was started from, and how it was named.
    pub source: String,
    pub source_name: String,
    pub source_is_ir: bool,
    /// The `--set` overrides, in order.
    pub sets: Vec<(String, String)>,
    /// The data directory given with `--data`, if any.
    pub data_dir: Option<String>,
    /// The data, training and method settings in force (after overrides), as the IR prints them.
    pub resolved: String,
    /// The program at stage `ir` once a reconfiguration has changed its shapes (absent until
    /// then): a resumed run compiles this instead of `source`, so it continues with the shapes
    /// the checkpoint's tensors have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// What each run-side hook keeps of its own ([`crate::methods::RunMethod::checkpoint`]),
    /// in hook order (the method's first), absent when none keeps anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_states: Option<Vec<serde_json::Value>>,
    /// FLOPs of the training steps done so far, each counted on the architecture it ran with
    /// (`train_flops_total` of `summary.json`). Absent in checkpoints written before the count
    /// existed: a run resumed from one reports no total rather than a partial one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_flops: Option<u64>,
}

/// The training state that a checkpoint saves: every parameter-table entry by index.
pub struct Snapshot<'a> {
    pub module: &'a Module,
    pub state: &'a State<f32>,
    pub train: TrainMeta,
    /// [`tracked_weights_dense`] for the run.
    pub tracked_dense: bool,
}

/// The names of a tracked weight's two tensors in `train_state.safetensors`.
pub fn tracked_names(weight: &str) -> (String, String) {
    (
        format!("{weight}.tracked_indices"),
        format!("{weight}.tracked_values"),
    )
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A mask read from a checkpoint must be one (0 or 1 in every entry), and its weight, already
/// loaded, zero wherever the mask is: anything else is not the state a masked run can be in.
fn check_mask(
    path: &Path,
    module: &Module,
    of: sparsec_ir::ParamId,
    mask: &[f32],
    weight: &[f32],
) -> Result<(), String> {
    let name = &module.param(of).name;
    if let Some(bad) = mask.iter().find(|&&m| m != 0.0 && m != 1.0) {
        return Err(format!(
            "`{}`: the mask of `{name}` holds {bad}, not only 0 and 1",
            path.display()
        ));
    }
    if let sparsec_ir::Storage::Masked { nnz } = module.param(of).storage {
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as u64;
        if kept != nnz {
            return Err(format!(
                "`{}`: the mask of `{name}` keeps {kept} entries, the program says {nnz}",
                path.display()
            ));
        }
    }
    if let Some(i) =
        (0..mask.len()).find(|&i| mask[i] == 0.0 && weight.get(i).is_some_and(|&w| w != 0.0))
    {
        return Err(format!(
            "`{}`: `{name}` is non-zero at entry {i}, which its mask prunes",
            path.display()
        ));
    }
    Ok(())
}

fn momentum_name(weight: &str) -> String {
    format!("{weight}.momentum_buffer")
}

fn init_records(module: &Module) -> Vec<InitRecord> {
    let seed = module.train.as_ref().map_or(0, |t| t.seed);
    module
        .params
        .iter()
        .filter(|p| p.role == Role::Weight)
        .map(|p| {
            let (init, lo, hi) = match p.init {
                Init::Zeros => ("zeros", 0.0, 0.0),
                Init::Ones => ("ones", 0.0, 0.0),
                Init::Uniform { lo, hi } => ("uniform", lo, hi),
            };
            InitRecord {
                name: p.name.clone(),
                seed,
                stream: p.stream,
                init: init.into(),
                lo,
                hi,
            }
        })
        .collect()
}

type NamedTensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn serialize(tensors: Vec<NamedTensor>, meta: &impl Serialize) -> Result<Vec<u8>, String> {
    let json = serde_json::to_string(meta).map_err(|e| e.to_string())?;
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(
        views,
        Some(HashMap::from([(METADATA_KEY.to_owned(), json)])),
    )
    .map_err(|e| e.to_string())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The bytes of `model.safetensors`: the weights under their PyTorch names, tracked ones
/// densely (their effective values) when `tracked_dense`, else left to the training state.
pub fn model_file_bytes(
    module: &Module,
    state: &State<f32>,
    step: u64,
    tracked_dense: bool,
) -> Result<Vec<u8>, String> {
    let tensors = module
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == Role::Weight)
        .filter(|&(i, _)| tracked_dense || state.tracked[i].is_none())
        .map(|(i, p)| {
            let bytes = match &state.tracked[i] {
                None => f32_bytes(&state.values[i]),
                Some(_) => f32_bytes(&state.dense_value(module, i)),
            };
            (p.name.clone(), Dtype::F32, p.ty.shape.clone(), bytes)
        })
        .collect();
    let meta = ModelMeta {
        format: MODEL_FORMAT,
        model: module.name.clone(),
        step,
        params: init_records(module),
        init_scale: state
            .tracked
            .iter()
            .any(Option::is_some)
            .then_some(state.init_scale),
        tracked_in_state: !tracked_dense && state.tracked.iter().any(Option::is_some),
    };
    serialize(tensors, &meta)
}

/// The file of a checkpoint (and, as `model.sparse.safetensors`, of a finished run) that holds
/// every masked weight in its sparse form, beside the dense state_dict of `model.safetensors`:
/// `<w>.indices` (I32, the kept flat positions, ascending) and `<w>.values` (F32, the weight
/// there). `None` when the program has no masked weight.
pub const SPARSE_FILE: &str = "sparse.safetensors";

/// The masked weights of `module` with their masks.
fn masked_weights(module: &Module) -> Vec<(usize, usize)> {
    module
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.storage, sparsec_ir::Storage::Masked { .. }))
        .filter_map(|(i, _)| {
            module
                .params
                .iter()
                .position(|m| m.role == Role::Mask(sparsec_ir::ParamId(i as u32)))
                .map(|m| (i, m))
        })
        .collect()
}

fn sparse_names(weight: &str) -> (String, String) {
    (format!("{weight}.indices"), format!("{weight}.values"))
}

/// The bytes of the sparse form of the masked weights ([`SPARSE_FILE`]), `None` without any.
pub fn sparse_file_bytes(
    module: &Module,
    state: &State<f32>,
    step: u64,
) -> Result<Option<Vec<u8>>, String> {
    let masked = masked_weights(module);
    if masked.is_empty() {
        return Ok(None);
    }
    let mut tensors = Vec::new();
    for (w, m) in masked {
        let (iname, vname) = sparse_names(&module.params[w].name);
        let kept: Vec<usize> = (0..state.values[m].len())
            .filter(|&j| state.values[m][j] != 0.0)
            .collect();
        let idx: Vec<u8> = kept
            .iter()
            .flat_map(|&j| (j as i32).to_le_bytes())
            .collect();
        let vals: Vec<f32> = kept.iter().map(|&j| state.values[w][j]).collect();
        tensors.push((iname, Dtype::I32, vec![kept.len()], idx));
        tensors.push((vname, Dtype::F32, vec![kept.len()], f32_bytes(&vals)));
    }
    let meta = ModelMeta {
        format: MODEL_FORMAT,
        model: module.name.clone(),
        step,
        params: init_records(module),
        init_scale: None,
        tracked_in_state: false,
    };
    serialize(tensors, &meta).map(Some)
}

/// Check a checkpoint's sparse form of its masked weights against the dense weights and masks
/// already loaded: the same positions, the same bits.
fn check_sparse_file(dir: &Path, module: &Module, state: &State<f32>) -> Result<(), String> {
    let masked = masked_weights(module);
    if masked.is_empty() {
        return Ok(());
    }
    let path = dir.join(SPARSE_FILE);
    let bytes = read(&path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    for (w, m) in masked {
        let name = &module.params[w].name;
        let (iname, vname) = sparse_names(name);
        let kept: Vec<usize> = (0..state.values[m].len())
            .filter(|&j| state.values[m][j] != 0.0)
            .collect();
        let indices = tensor_i32(&path, &st, &iname, kept.len())?;
        let values = tensor_f32(&path, &st, &vname, &[kept.len()])?;
        let same = indices.iter().zip(&kept).all(|(&a, &b)| a as usize == b)
            && values
                .iter()
                .zip(&kept)
                .all(|(v, &j)| v.to_bits() == state.values[w][j].to_bits());
        if !same {
            return Err(format!(
                "`{}`: the sparse form of `{name}` disagrees with its dense weights and mask",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Write a checkpoint into `run_dir` and point `latest` at it. Returns its directory.
pub fn save(run_dir: &Path, snap: &Snapshot<'_>) -> Result<PathBuf, String> {
    let module = snap.module;
    let model = model_file_bytes(module, snap.state, snap.train.step, snap.tracked_dense)?;
    let mut state_tensors = Vec::new();
    for (i, p) in module.params.iter().enumerate() {
        match (p.role, &snap.state.tracked[i]) {
            (Role::Momentum(of), _) => state_tensors.push((
                momentum_name(&module.param(of).name),
                Dtype::F32,
                p.ty.shape.clone(),
                f32_bytes(&snap.state.values[i]),
            )),
            (Role::Weight, Some(t)) => {
                let (indices, values) = tracked_names(&p.name);
                let idx: Vec<u8> = t.indices.iter().flat_map(|&i| i.to_le_bytes()).collect();
                state_tensors.push((indices, Dtype::I32, vec![t.len()], idx));
                state_tensors.push((values, Dtype::F32, vec![t.len()], f32_bytes(&t.values)));
            }
            (Role::State(_) | Role::Mask(_), _) => state_tensors.push((
                p.name.clone(),
                Dtype::F32,
                p.ty.shape.clone(),
                f32_bytes(&snap.state.values[i]),
            )),
            (Role::Weight, None) => {}
        }
    }
    let state = serialize(state_tensors, &snap.train)?;

    let name = format!("step-{:08}", snap.train.step);
    let dir = run_dir.join("checkpoints");
    let io = |what: &str, e: std::io::Error| format!("cannot write checkpoint ({what}): {e}");
    fs::create_dir_all(&dir).map_err(|e| io("create checkpoints/", e))?;
    let tmp = dir.join(format!(".tmp-{name}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| io("temporary directory", e))?;
    let mut files = BTreeMap::new();
    let mut write = |name: &str, bytes: &[u8]| {
        files.insert(name.to_owned(), sha256_hex(bytes));
        write_synced(&tmp.join(name), bytes).map_err(|e| io(name, e))
    };
    write("model.safetensors", &model)?;
    write("train_state.safetensors", &state)?;
    if let Some(sparse) = sparse_file_bytes(module, snap.state, snap.train.step)? {
        write(SPARSE_FILE, &sparse)?;
    }
    let manifest = Manifest {
        run: RunIdentity {
            format: FORMAT,
            run_id: snap.train.run_id.clone(),
            fingerprint: fingerprint(
                &snap.train.source,
                snap.train.source_is_ir,
                &snap.train.sets,
            ),
        },
        step: snap.train.step,
        files,
    };
    let manifest = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    write_synced(&tmp.join(MANIFEST_FILE), manifest.as_bytes())
        .map_err(|e| io(MANIFEST_FILE, e))?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        // The same step saved again (a resumed run reaching its end): replace it.
        fs::remove_dir_all(&final_dir).map_err(|e| io("old checkpoint", e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| io("rename", e))?;
    write_atomically(
        &run_dir.join("latest"),
        format!("checkpoints/{name}\n").as_bytes(),
    )
    .map_err(|e| io("latest", e))?;
    Ok(final_dir)
}

/// Replace a file by writing a sibling and renaming it over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// The newest complete checkpoint of a run.
pub fn latest(run_dir: &Path) -> Result<PathBuf, String> {
    let pointer = run_dir.join("latest");
    // `latest` names a directory: a few bytes. Read no more than that could take, whatever the
    // path turns out to be (a link to /dev/zero).
    let text = read_small(&pointer, 4096)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| {
            format!(
                "`{}` is not a run directory with a checkpoint ({e})",
                run_dir.display()
            )
        })?;
    // Only a checkpoint of this run: `checkpoints/step-NNNNNNNN`, never a path that leaves it.
    let name = text.trim();
    let is_checkpoint = name
        .strip_prefix("checkpoints/step-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !is_checkpoint {
        let shown: String = name.chars().take(60).collect();
        return Err(format!(
            "`{}` must name a checkpoint of this run (`checkpoints/step-NNNNNNNN`), not {shown:?}",
            pointer.display()
        ));
    }
    let dir = run_dir.join(name);
    if !dir.join("model.safetensors").is_file() {
        return Err(format!(
            "`{}` names `{}`, which holds no model.safetensors",
            pointer.display(),
            text.trim()
        ));
    }
    Ok(dir)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn metadata<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            format!(
                "`{}` was not written by sparsec (no `{METADATA_KEY}` metadata)",
                path.display()
            )
        })?;
    serde_json::from_str(json)
        .map_err(|e| format!("`{}`: bad sparsec metadata: {e}", path.display()))
}

fn tensor_f32(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("`{}` has no tensor `{name}`", path.display()))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(format!(
            "`{}`: tensor `{name}` is {:?}{:?}, the model needs F32{:?}",
            path.display(),
            view.dtype(),
            view.shape(),
            shape
        ));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn tensor_i32(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    len: usize,
) -> Result<Vec<i32>, String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("`{}` has no tensor `{name}`", path.display()))?;
    if view.dtype() != Dtype::I32 || view.shape() != [len] {
        return Err(format!(
            "`{}`: tensor `{name}` is {:?}{:?}, expected I32[{len}]",
            path.display(),
            view.dtype(),
            view.shape()
        ));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Read the weights of `model.safetensors` into `state` (indexed like `module.params`). A
/// tracked weight is read densely and kept as the entries that differ from its initial value
/// (under the file's `init_scale`); for resuming, [`load`] reads its exact entries instead. A
/// file that keeps its tracked weights in the training state beside it (`tracked_in_state`)
/// has them read from there.
pub fn load_weights(
    path: &Path,
    module: &Module,
    state: &mut State<f32>,
) -> Result<ModelMeta, String> {
    let (meta, in_state) = load_stored_weights(path, module, state)?;
    if !in_state.is_empty() {
        let state_path = path.with_file_name("train_state.safetensors");
        if !state_path.is_file() {
            return Err(format!(
                "`{}` keeps its tracked weights in the train_state.safetensors beside it, \
                 which is missing: load the run directory (or its checkpoint) instead",
                path.display()
            ));
        }
        let bytes = read(&state_path)?;
        let (st, _) = open_train_state(&state_path, &bytes, meta.step)?;
        for i in in_state {
            load_tracked(&state_path, &st, module, state, i)?;
        }
    }
    Ok(meta)
}

/// The weights `model.safetensors` holds, into `state`; returns its metadata and the tracked
/// weights it leaves to the training state (`tracked_in_state`).
fn load_stored_weights(
    path: &Path,
    module: &Module,
    state: &mut State<f32>,
) -> Result<(ModelMeta, Vec<usize>), String> {
    let bytes = read(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let meta: ModelMeta = metadata(path, &bytes)?;
    if meta.format != MODEL_FORMAT {
        return Err(format!(
            "`{}` has weights format {}; this build reads format {MODEL_FORMAT}",
            path.display(),
            meta.format
        ));
    }
    state.init_scale = meta.init_scale.unwrap_or(1.0);
    let mut in_state = Vec::new();
    for (i, p) in module.params.iter().enumerate() {
        if p.role != Role::Weight {
            continue;
        }
        if meta.tracked_in_state && state.tracked[i].is_some() {
            in_state.push(i);
            continue;
        }
        let v = tensor_f32(path, &st, &p.name, &p.ty.shape)?;
        state.set_dense_value(module, i, v);
    }
    Ok((meta, in_state))
}

/// A training state file's tensors and metadata, checked to be of the weights' `step`.
fn open_train_state<'b>(
    path: &Path,
    bytes: &'b [u8],
    step: u64,
) -> Result<(SafeTensors<'b>, TrainMeta), String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let meta: TrainMeta = metadata(path, bytes)?;
    if meta.step != step {
        return Err(format!(
            "`{}`: the weights are from step {step} but the training state from step {}",
            path.display(),
            meta.step
        ));
    }
    Ok((st, meta))
}

/// Read the tracked entries of parameter `i` from a training state file into `state`.
fn load_tracked(
    path: &Path,
    st: &SafeTensors<'_>,
    module: &Module,
    state: &mut State<f32>,
    i: usize,
) -> Result<(), String> {
    let p = &module.params[i];
    let (iname, vname) = tracked_names(&p.name);
    let len = st
        .tensor(&vname)
        .map_err(|_| format!("`{}` has no tensor `{vname}`", path.display()))?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let values = tensor_f32(path, st, &vname, &[len])?;
    let indices = tensor_i32(path, st, &iname, len)?;
    let n = p.ty.num_elements();
    let cap = sparsec_ir::dropback::budgets(&module.params)
        .iter()
        .find(|(id, _)| id.0 as usize == i)
        .map_or(0, |&(_, c)| c);
    let sorted = indices.windows(2).all(|w| w[0] < w[1]);
    let in_range = indices.iter().all(|&j| j >= 0 && (j as usize) < n);
    if !sorted || !in_range || len as u64 > cap {
        return Err(format!(
            "`{}`: the tracked entries of `{}` must be at most {cap} sorted, distinct indices \
             below {n}",
            path.display(),
            p.name
        ));
    }
    state.tracked[i] = Some(TrackedValues {
        indices: indices.into_iter().map(|j| j as u32).collect(),
        values,
    });
    Ok(())
}

/// Read a whole checkpoint directory: weights, tracked entries and optimizer state into
/// `state`, and where the run stood.
pub fn load(dir: &Path, module: &Module, state: &mut State<f32>) -> Result<TrainMeta, String> {
    // Every tracked weight's entries are read below, so those the weights file leaves to the
    // training state are not read twice.
    let (model_meta, _) = load_stored_weights(&dir.join("model.safetensors"), module, state)?;
    let path = dir.join("train_state.safetensors");
    let bytes = read(&path)?;
    let (st, meta) = open_train_state(&path, &bytes, model_meta.step)?;
    for (i, p) in module.params.iter().enumerate() {
        match p.role {
            Role::Momentum(of) => {
                state.values[i] = tensor_f32(
                    &path,
                    &st,
                    &momentum_name(&module.param(of).name),
                    &p.ty.shape,
                )?;
            }
            Role::State(_) => state.values[i] = tensor_f32(&path, &st, &p.name, &p.ty.shape)?,
            Role::Mask(of) => {
                let mask = tensor_f32(&path, &st, &p.name, &p.ty.shape)?;
                check_mask(&path, module, of, &mask, &state.values[of.0 as usize])?;
                state.values[i] = mask;
            }
            Role::Weight => {}
        }
        if state.tracked[i].is_some() {
            load_tracked(&path, &st, module, state, i)?;
        }
    }
    check_sparse_file(dir, module, state)?;
    Ok(meta)
}

/// Parse just the training metadata (to recover the source before the module exists).
pub fn read_train_meta(dir: &Path) -> Result<TrainMeta, String> {
    let path = dir.join("train_state.safetensors");
    let bytes = read(&path)?;
    // The format first: an older checkpoint's metadata need not have this build's fields.
    let raw: serde_json::Value = metadata(&path, &bytes)?;
    let format = raw.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    check_format(&path, u32::try_from(format).unwrap_or(u32::MAX))?;
    serde_json::from_value(raw)
        .map_err(|e| format!("`{}`: bad sparsec metadata: {e}", path.display()))
}
