//! [`JitProgram`]: a function of a module partitioned into kernels ([`crate::partition`]),
//! compiled once into one [`Jit`], and run with the interpreter's contract:
//! `run(&mut State<f32>, inputs) -> outputs`, parameters read as they were at the call, stores
//! written to the state after the whole function ran (tracked parameters keep the entries that
//! differ bitwise from their regenerated initial value, within their budget).
//!
//! **Threads.** A JIT kernel above a size threshold is split over `threads` (1 or 2) threads:
//! products by column panels, chains by element ranges, column reductions by columns,
//! regeneration by word ranges. Each output element is computed by exactly one thread, in the
//! same order as with one thread, and no summation is ever split, so the bits do not depend on
//! the thread count.
//!
//! The second thread is a persistent helper ([`Pair`], `runtime/pair.rs`) that spins while a
//! run is in progress, so each split kernel hands its second half over in well under a
//! microsecond: neither a thread spawn nor the wake-up of a sleeping pool worker (tens of
//! microseconds each, which at batch 64 rival the kernels).
//!
//! **Stores.** A dense parameter's new value is swapped with the buffer that holds it (the
//! buffer is rewritten by its kernel before any read in the next run), not copied.
//!
//! This file compiles the program and runs it as a whole (buffers, threads, results, stores);
//! `runtime/exec.rs` executes one kernel (its checks, argument block and split).

mod exec;
mod gather;
mod pair;
mod stream;

pub(crate) use pair::Pair;

use std::time::Instant;

use cranelift_module::FuncId;
use sparsec_ir::interp::{Input, OpScratch, Output, State, Tensor, GEMM_PANEL};
use sparsec_ir::module::Init;
use sparsec_ir::{DType, Module};

use crate::codegen::chacha::emit_regen;
use crate::codegen::chain::{
    emit_chain, emit_chain_outer, emit_chain_rows, emit_reduce_channels, emit_reduce_rows,
    ChainSpec,
};
use crate::codegen::conv::emit_conv;
use crate::codegen::elementwise::emit_bias_add;
use crate::codegen::gemm::{emit_gemm_fused, GEMM_IMPORT, GEMM_IMPORT_PARAMS, NR};
use crate::codegen::math::MATH_IMPORTS;
use crate::codegen::pool::emit_maxpool;
use crate::codegen::softmax::emit_softmax_xent;
use crate::jit::{Entry, Jit};
use crate::kernel_ir::{Body, KernelProgram, Loc};
use crate::partition::partition;
use exec::exec;

/// Work (elements, or multiply-adds for products) below which a kernel runs on one thread.
const SPLIT_MIN_WORK: usize = 1 << 15;

/// Whether an `m×n×k` product kernel splits its columns over two threads. A product of a few
/// rows (batch 1) streams `B` from memory once and is bound by that, not by its multiply-adds,
/// so it counts as eight rows: LeNet-300-100's 1×300×784 forward takes 14 µs.
fn product_splits(m: usize, n: usize, k: usize) -> bool {
    m.max(8) * n * k >= SPLIT_MIN_WORK * 8 && n > NR
}

/// Whether a chain over an `m×n` outer product splits its rows over two threads: as a plain
/// chain of `m·n` elements would, when its rows can be cut at a multiple of
/// [`GEMM_PANEL`] (where a product of the same weight cuts its columns).
fn outer_product_splits(m: usize, n: usize) -> bool {
    m >= 2 * GEMM_PANEL && m * n >= SPLIT_MIN_WORK
}

/// The thread count from `SPARSEC_THREADS` (1 or 2), else the available parallelism capped at 2.
/// A set variable that is not 1 or 2 is an error, not silently clamped: a user who asked for 4
/// threads must learn that sparsec runs on at most 2.
pub fn default_threads() -> Result<usize, String> {
    if let Some(value) = std::env::var_os("SPARSEC_THREADS") {
        let text = value.to_string_lossy();
        return match text.trim() {
            "1" => Ok(1),
            "2" => Ok(2),
            _ => Err(format!("SPARSEC_THREADS={text:?}: must be 1 or 2")),
        };
    }
    Ok(std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2))
}

struct ParamInfo {
    init: Init,
    stream: u64,
    len: usize,
    tracked: bool,
    capacity: Option<u64>,
    name: String,
}

/// A compiled function of a module.
pub struct JitProgram {
    plan: KernelProgram,
    jit: Jit,
    /// Per kernel: its compiled function (JIT kernels) and the CLIF name.
    fns: Vec<Option<(FuncId, String)>>,
    threads: usize,
    /// With two threads: the helper thread split kernels hand their second half to.
    pair: Option<Pair>,
    /// Per kernel: the buffers it writes (taken out of the table while it runs).
    outs: Vec<Vec<Loc>>,
    /// Whether some product, convolution or update over an outer product is big enough to split;
    /// if none is, a run stays on the calling thread (handing element-wise chains alone to the
    /// second thread costs more than it saves). A batch-1 LeNet-300-100 step splits: its first
    /// layer's forward product and its update cut the weight's rows at the same multiple of 64,
    /// so each thread streams its rows from its own cache in both (14.8k → 19.6k samples/s
    /// on two threads; cut in different places, the rows moved between the caches every step
    /// and two threads ran slower than one).
    worth_threads: bool,
    compile_ms: f64,
    seed: u64,
    params: Vec<ParamInfo>,
    args: Vec<(String, DType, usize)>,
    result_shapes: Vec<Vec<usize>>,
    fbufs: Vec<Vec<f32>>,
    ibufs: Vec<Vec<i32>>,
    sbufs: Vec<Vec<u64>>,
    /// Whether the buffers above have their sizes (done by the first run).
    allocated: bool,
    /// Per float buffer: a kernel writes it in every run, no other store and no constant uses it,
    /// so a store may take it by swapping.
    swappable: Vec<bool>,
    /// Per parameter: the float buffer it is updated in place through, when its update is a
    /// chain that reads it and nothing reads it after nor the new value at all (a dense
    /// weight's SGD step): the weight moves into that buffer for the run, every read of it
    /// goes there, the chain writes the new value over it, and it moves back. One copy of the
    /// weight instead of two, and a cache-resident step at batch 1. Only in programs with no
    /// tracked store, whose stores cannot fail after the kernels have run.
    in_place: Vec<Option<usize>>,
    /// Per tracked store whose value is a `dropback_apply`: that kernel's selection buffer and
    /// offset, the only positions where the value can differ from its initial value.
    applied_at: Vec<Option<(Loc, usize)>>,
    gemm_scratch: Vec<Vec<f32>>,
    bias_pad: Vec<f32>,
    bounds: Vec<u64>,
    op_scratch: OpScratch<f32>,
    topk_scratch: Vec<(u64, u64)>,
    /// Seconds per kernel and the number of runs timed, while profiling
    /// ([`JitProgram::set_profiling`]).
    profile: Option<(Vec<f64>, u64)>,
    /// Per kernel: for a regeneration whose buffer holds its value from an earlier run, the
    /// `init_scale` (bits) it was made with. A tracked weight's initial value depends on
    /// nothing else, so while the scale is unchanged the kernel is not run again: the buffer
    /// already holds the value (loop-invariant across steps), bit for bit.
    regenerated: Vec<Option<u32>>,
    /// Per kernel: for a `grad_score`, the selection (kernel index) its scores feed and where
    /// they start in it.
    score_feeds: Vec<Option<(usize, usize)>>,
    /// Per kernel: a `grad_score` whose scores only its selection reads, so that it may leave
    /// them unwritten when it gathers candidates (the selection asks for them when the
    /// candidates do not serve, and the kernel is run again to write them).
    scores_private: Vec<bool>,
    /// Per kernel: for an `overlay` whose `w0` a cached regeneration makes and whose output
    /// no other kernel writes, the positions its last run wrote over `w0` and `w0` there
    /// (`Some(None)` before one has): the next run puts `w0` back there and writes the new
    /// entries, without copying or reading all of `w0` again. `None` for any other kernel.
    overlaid: Vec<Option<Option<Written>>>,
    /// Per kernel: for a `topk_select`, the score kernels that feed it (run again when it asks
    /// for its scores).
    feeders: Vec<Vec<usize>>,
    /// How many selections had their score kernels run again (see `scores_private`).
    rescored: u64,
    /// Per kernel: for a `grad_update`, the selection whose candidates carry its new values.
    update_feeds: Vec<Option<usize>>,
    /// Per kernel: for a `topk_select`, what its score kernels gather for it (see
    /// `exec::select_top`).
    selections: Vec<exec::Selection>,
    /// The tracked entries a store replaced, kept for their room: the next stores fill them
    /// instead of allocating (a Dropback step stores k entries every run).
    spare_tracked: Vec<sparsec_ir::interp::TrackedValues<f32>>,
}

/// The time one kernel took over the runs profiled.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// Its position in the kernel program (`emit --stage kernels` numbers it `k<index>`).
    pub index: usize,
    /// What it is: `gemm.nt`, `chain`, `regen`, `topk_select`, ...
    pub kind: String,
    /// The IR instructions it carries out (`%i` of the function).
    pub insts: Vec<usize>,
    pub seconds: f64,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("func", &self.plan.func)
            .field("kernels", &self.plan.kernels.len())
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Read access to the values of a run.
struct Env<'r> {
    inputs: &'r [Input<'r, f32>],
    state: &'r State<f32>,
    /// Per parameter: the float buffer that holds it during this run (`JitProgram::in_place`).
    moved: &'r [Option<usize>],
    fbufs: &'r [Vec<f32>],
    ibufs: &'r [Vec<i32>],
    sbufs: &'r [Vec<u64>],
}

impl<'r> Env<'r> {
    fn float(&self, l: Loc) -> &'r [f32] {
        match l {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Float(s) => s,
                Input::Int(_) => &[],
            },
            Loc::Param(p) => match self.resolve(l) {
                Loc::F(j) => &self.fbufs[j],
                _ => &self.state.values[p],
            },
            Loc::F(j) => &self.fbufs[j],
            Loc::I(_) | Loc::S(_) => &[],
        }
    }

    /// Where `l` is during this run: a parameter moved into a buffer is that buffer.
    fn resolve(&self, l: Loc) -> Loc {
        match l {
            Loc::Param(p) => match self.moved.get(p) {
                Some(&Some(j)) => Loc::F(j),
                _ => l,
            },
            _ => l,
        }
    }

    fn int(&self, l: Loc) -> &'r [i32] {
        match l {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Int(s) => s,
                Input::Float(_) => &[],
            },
            Loc::I(j) => &self.ibufs[j],
            _ => &[],
        }
    }

    fn sparse(&self, l: Loc) -> &'r [u64] {
        match l {
            Loc::S(j) => &self.sbufs[j],
            _ => &[],
        }
    }
}

/// The positions an overlay wrote over `w0`, with `w0` there; and the room its next run
/// writes them into.
#[derive(Default)]
struct Written {
    positions: Vec<(u32, f32)>,
    spare: Vec<(u32, f32)>,
}

/// What a kernel needs of the program besides the values: its parameters, threads and scratch.
struct Ctx<'a> {
    seed: u64,
    params: &'a [ParamInfo],
    /// The second thread, when the kernels may split (they run on one thread otherwise).
    pair: Option<&'a Pair>,
    gemm_scratch: &'a mut Vec<Vec<f32>>,
    bias_pad: &'a mut Vec<f32>,
    bounds: &'a mut Vec<u64>,
    op_scratch: &'a mut OpScratch<f32>,
    topk_scratch: &'a mut Vec<(u64, u64)>,
    /// For a `grad_score`: the selection its scores feed and their offset in it.
    score_feed: Option<(usize, usize)>,
    /// For a `grad_score` that feeds a selection: whether only the selection reads its scores
    /// (see `JitProgram::scores_private`).
    scores_private: bool,
    /// For an `overlay` that may write only what changed: its memo (see
    /// `JitProgram::overlaid`).
    overlaid: Option<&'a mut Option<Written>>,
    /// For a `grad_update`: the selection whose candidates may carry its new values.
    update_feed: Option<usize>,
    /// For a `topk_select`: its own index in `selections`.
    selection: Option<usize>,
    selections: &'a mut [exec::Selection],
}

/// `(parameter, buffer)` for each weight updated in place (`JitProgram::in_place`).
fn moved_weights(in_place: &[Option<usize>]) -> impl Iterator<Item = (usize, usize)> + '_ {
    in_place
        .iter()
        .enumerate()
        .filter_map(|(p, j)| Some((p, (*j)?)))
}

/// The second thread, for two threads (none for one).
fn pair_for(threads: usize) -> Result<Option<Pair>, String> {
    if threads < 2 {
        return Ok(None);
    }
    Pair::new().map(Some)
}

impl JitProgram {
    /// Partition and compile function `func` of `m` (stage `opt`, or any stage) for `threads`
    /// threads (clamped to 1..=2).
    pub fn new(m: &Module, func: &str, threads: usize) -> Result<JitProgram, String> {
        let started = Instant::now();
        let plan = partition(m, func)?;
        let mut jit = Jit::new().map_err(|e| e.to_string())?;
        let mut fns = Vec::with_capacity(plan.kernels.len());
        let mut shared: Vec<(&'static str, FuncId)> = Vec::new();
        let mut shared_fn =
            |jit: &mut Jit, name: &'static str, build: fn(&mut crate::codegen::FnCtx<'_>)| {
                if let Some(&(_, id)) = shared.iter().find(|(n, _)| *n == name) {
                    return Ok::<FuncId, String>(id);
                }
                let id = jit.define(name, build).map_err(|e| e.to_string())?;
                shared.push((name, id));
                Ok(id)
            };
        let mut gemm_import = None;
        let mut math_imports: Option<Vec<FuncId>> = None;
        for (i, k) in plan.kernels.iter().enumerate() {
            let name = format!("{}_k{i}", plan.func);
            let mut gemm = |jit: &mut Jit| match gemm_import {
                Some(id) => Ok(id),
                None => {
                    let id = jit
                        .declare_import(
                            GEMM_IMPORT,
                            &[cranelift_codegen::ir::types::I64; GEMM_IMPORT_PARAMS],
                            &[],
                        )
                        .map_err(|e| e.to_string())?;
                    gemm_import = Some(id);
                    Ok::<FuncId, String>(id)
                }
            };
            let mut math = |jit: &mut Jit| match &math_imports {
                Some(ids) => Ok(ids.clone()),
                None => {
                    let f32_ty = cranelift_codegen::ir::types::F32;
                    let ids = MATH_IMPORTS
                        .iter()
                        .map(|n| jit.declare_import(n, &[f32_ty], &[f32_ty]))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    math_imports = Some(ids.clone());
                    Ok::<Vec<FuncId>, String>(ids)
                }
            };
            // The kernel's own function, calling `imports`.
            let own = |jit: &mut Jit,
                       imports: &[FuncId],
                       build: &dyn Fn(&mut crate::codegen::FnCtx<'_>)| {
                jit.define_with_imports(&name, imports, build)
                    .map(|id| Some((id, name.clone())))
                    .map_err(|e| e.to_string())
            };
            let f = match &k.body {
                Body::Gemm { spec, .. } if spec.import => {
                    let callee = gemm(&mut jit)?;
                    own(&mut jit, &[callee], &|fx| emit_gemm_fused(fx, spec))?
                }
                Body::Chain { spec, product, .. } => {
                    // A chain over a product makes it per row or per panel (`ChainProduct`).
                    let emit: fn(&mut crate::codegen::FnCtx<'_>, &ChainSpec) = match product {
                        Some(p) if p.k == 1 => emit_chain_outer,
                        Some(_) => emit_chain_rows,
                        None => emit_chain,
                    };
                    let callees = match spec.uses_math() {
                        true => math(&mut jit)?,
                        false => Vec::new(),
                    };
                    own(&mut jit, &callees, &|fx| emit(fx, spec))?
                }
                Body::SoftmaxXent { spec, .. } => {
                    let callees = math(&mut jit)?;
                    own(&mut jit, &callees, &|fx| emit_softmax_xent(fx, spec))?
                }
                Body::Conv { spec, .. } => {
                    let callee = gemm(&mut jit)?;
                    own(&mut jit, &[callee], &|fx| emit_conv(fx, spec))?
                }
                Body::MaxPool { spec, .. } => own(&mut jit, &[], &|fx| emit_maxpool(fx, spec))?,
                Body::Gemm { spec, .. } => own(&mut jit, &[], &|fx| emit_gemm_fused(fx, spec))?,
                Body::ReduceChannels { inner, .. } => {
                    let inner = *inner;
                    own(&mut jit, &[], &|fx| emit_reduce_channels(fx, inner))?
                }
                Body::ReduceRows { .. } => Some((
                    shared_fn(&mut jit, "reduce_rows", emit_reduce_rows)?,
                    "reduce_rows".into(),
                )),
                Body::BiasAdd { .. } => Some((
                    shared_fn(&mut jit, "bias_add", emit_bias_add)?,
                    "bias_add".into(),
                )),
                // The streamed Dropback kernels call the regeneration kernel per panel row.
                Body::Regen { .. }
                | Body::TopkStream { .. }
                | Body::GradUpdate { .. }
                | Body::WeightProduct { .. } => Some((
                    shared_fn(&mut jit, "regen_uniform", emit_regen)?,
                    "regen_uniform".into(),
                )),
                _ => None,
            };
            fns.push(f);
        }
        jit.finalize().map_err(|e| e.to_string())?;
        let f = m.func(func).ok_or_else(|| format!("no function @{func}"))?;
        let budgets = sparsec_ir::dropback::budgets(&m.params);
        let params = m
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| ParamInfo {
                init: p.init,
                stream: p.stream,
                len: p.ty.num_elements(),
                tracked: sparsec_ir::interp::is_tracked(p),
                capacity: budgets
                    .iter()
                    .find(|(id, _)| id.0 as usize == i)
                    .map(|&(_, c)| c),
                name: p.name.clone(),
            })
            .collect();
        // Every buffer has its own index space slot; they are allocated on the first run, so a
        // program compiled only to be shown (`emit --stage kernels`) takes no run-time memory.
        let n_buffers = plan.buffers.len();
        let n_kernels = plan.kernels.len();
        // Which selection each score kernel feeds, at which offset.
        let mut score_feeds = vec![None; n_kernels];
        let mut selections = vec![exec::Selection::default(); n_kernels];
        for (t, kernel) in plan.kernels.iter().enumerate() {
            let Body::TopkSelect { scores, k, .. } = &kernel.body else {
                continue;
            };
            selections[t].cap = 4 * k + 4096;
            let mut offset = 0;
            let mut fed = Vec::with_capacity(scores.len());
            for &l in scores {
                selections[t].offsets.push(offset as u64);
                let maker = plan
                    .kernels
                    .iter()
                    .position(|k| matches!(k.body, Body::GradScore { out, .. } if out == l));
                let (Loc::F(j), Some(g)) = (l, maker) else {
                    fed.push(false);
                    if let Loc::F(j) = l {
                        offset += plan.buffers[j].len;
                    }
                    continue;
                };
                score_feeds[g] = Some((t, offset));
                fed.push(true);
                offset += plan.buffers[j].len;
            }
            selections[t].fed = fed;
        }
        let writers = |l: Loc| {
            (0..n_kernels)
                .filter(|&r| KernelProgram::io(&plan.kernels[r]).1.contains(&l))
                .count()
        };
        let overlaid = plan
            .kernels
            .iter()
            .map(|k| {
                let Body::Overlay { w0, out, .. } = k.body else {
                    return None;
                };
                let regenerated = plan
                    .kernels
                    .iter()
                    .any(|r| matches!(r.body, Body::Regen { out: o, .. } if o == w0));
                (regenerated && writers(w0) == 1 && writers(out) == 1).then_some(None)
            })
            .collect();
        let feeders: Vec<Vec<usize>> = (0..n_kernels)
            .map(|t| {
                (0..n_kernels)
                    .filter(|&g| matches!(score_feeds[g], Some((s, _)) if s == t))
                    .collect()
            })
            .collect();
        let scores_private: Vec<bool> = (0..n_kernels)
            .map(|g| {
                let (Some((t, _)), Body::GradScore { out, .. }) =
                    (score_feeds[g], &plan.kernels[g].body)
                else {
                    return false;
                };
                let readers: Vec<usize> = (0..n_kernels)
                    .filter(|&r| KernelProgram::io(&plan.kernels[r]).0.contains(out))
                    .collect();
                // Run again just before the selection, the kernel must find its operands as
                // it left them: nothing between the two writes one.
                let (operands, _) = KernelProgram::io(&plan.kernels[g]);
                let untouched = (g + 1..t).all(|r| {
                    let (_, writes) = KernelProgram::io(&plan.kernels[r]);
                    !writes.iter().any(|l| operands.contains(l))
                });
                untouched
                    && readers == [t]
                    && !plan.results.contains(out)
                    && !plan.stores.iter().any(|s| s.1 == *out)
                    && !plan.store_w0.iter().any(|s| s.1 == *out)
            })
            .collect();
        // Which selection's candidates carry each update's new values.
        let update_feeds =
            plan.kernels
                .iter()
                .map(|k| {
                    let Body::GradUpdate { offset, sel, .. } = k.body else {
                        return None;
                    };
                    let t = plan.kernels.iter().position(
                        |k| matches!(k.body, Body::TopkSelect { out, .. } if out == sel),
                    )?;
                    let s = &selections[t];
                    let operand = s.offsets.iter().position(|&o| o == offset as u64)?;
                    s.fed[operand].then_some(t)
                })
                .collect();
        let (fbufs, ibufs, sbufs) = (
            vec![Vec::new(); n_buffers],
            vec![Vec::new(); n_buffers],
            vec![Vec::new(); n_buffers],
        );
        let mut written = vec![false; fbufs.len()];
        for k in &plan.kernels {
            for o in KernelProgram::io(k).1 {
                if let Loc::F(j) = o {
                    written[j] = true;
                }
            }
        }
        let swappable: Vec<bool> = (0..fbufs.len())
            .map(|j| {
                let stores = plan.stores.iter().filter(|&&(_, l)| l == Loc::F(j)).count();
                written[j] && stores == 1 && plan.buffers[j].fill.is_none()
            })
            .collect();
        let any_tracked_store = plan
            .stores
            .iter()
            .any(|&(p, _)| sparsec_ir::interp::is_tracked(&m.params[p]));
        let mut in_place = vec![None; m.params.len()];
        for &(p, l) in plan.stores.iter().filter(|_| !any_tracked_store) {
            let Loc::F(j) = l else { continue };
            let reads = |k: &crate::kernel_ir::Kernel, l: Loc| KernelProgram::io(k).0.contains(&l);
            let Some(writer) = plan
                .kernels
                .iter()
                .position(|k| KernelProgram::io(k).1.contains(&l))
            else {
                continue;
            };
            let Body::Chain { inputs, .. } = &plan.kernels[writer].body else {
                continue;
            };
            let param = Loc::Param(p);
            let ok = swappable[j]
                && inputs.contains(&param)
                && plan.stores.iter().filter(|s| s.0 == p).count() == 1
                && !plan.results.contains(&l)
                && !plan.results.contains(&param)
                && !plan.kernels.iter().any(|k| reads(k, l))
                && !plan.kernels[writer + 1..].iter().any(|k| reads(k, param));
            if ok {
                in_place[p] = Some(j);
            }
        }
        let applied_at = plan
            .stores
            .iter()
            .map(|&(_, l)| {
                plan.kernels.iter().find_map(|k| match k.body {
                    Body::DropbackApply {
                        offset, sel, out, ..
                    }
                    | Body::GradApply {
                        offset, sel, out, ..
                    } if out == l => Some((sel, offset)),
                    _ => None,
                })
            })
            .collect();
        let outs = plan
            .kernels
            .iter()
            .map(|k| KernelProgram::io(k).1)
            .collect();
        let worth_threads = plan.kernels.iter().any(|k| match &k.body {
            Body::Gemm { m, n, k, .. } => product_splits(*m, *n, *k),
            Body::Conv { spec, .. } => {
                spec.b * spec.o * spec.p() * spec.ckk() >= SPLIT_MIN_WORK * 8
            }
            Body::ConvWeightGrad { geom: g, .. } => {
                g.b * g.o * g.p() * g.ckk() >= SPLIT_MIN_WORK * 8
            }
            Body::Chain {
                product: Some(p), ..
            } if p.k == 1 => outer_product_splits(p.m, p.n),
            Body::Chain {
                product: Some(p), ..
            } => p.m * p.n * p.k >= SPLIT_MIN_WORK * 8,
            _ => false,
        });
        let threads = threads.clamp(1, 2);
        Ok(JitProgram {
            args: f
                .args
                .iter()
                .map(|a| (a.name.clone(), a.ty.dtype, a.ty.num_elements()))
                .collect(),
            result_shapes: f
                .results
                .iter()
                .map(|&v| f.value_type(v).shape.clone())
                .collect(),
            seed: sparsec_ir::interp::module_seed(m),
            params,
            plan,
            jit,
            fns,
            threads,
            pair: pair_for(threads)?,
            outs,
            worth_threads,
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
            fbufs,
            ibufs,
            sbufs,
            allocated: false,
            swappable,
            in_place,
            applied_at,
            gemm_scratch: vec![Vec::new(); threads],
            bias_pad: Vec::new(),
            bounds: Vec::new(),
            op_scratch: OpScratch::default(),
            topk_scratch: Vec::new(),
            profile: None,
            regenerated: vec![None; n_kernels],
            score_feeds,
            scores_private,
            overlaid,
            feeders,
            rescored: 0,
            update_feeds,
            selections,
            spare_tracked: Vec::new(),
        })
    }

    /// Start timing each kernel (from zero), or stop. Timing adds two clock reads per kernel
    /// and run; it changes no result.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| (vec![0.0; self.plan.kernels.len()], 0));
    }

    /// The time per kernel since profiling started, and the number of runs timed.
    pub fn profile(&self) -> Option<(Vec<KernelTime>, u64)> {
        let (seconds, runs) = self.profile.as_ref()?;
        let kernels = self
            .plan
            .kernels
            .iter()
            .zip(seconds)
            .enumerate()
            .map(|(index, (k, &seconds))| KernelTime {
                index,
                kind: k.kind(),
                insts: k.insts.clone(),
                seconds,
            })
            .collect();
        Some((kernels, *runs))
    }

    /// Milliseconds spent partitioning and compiling.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether a run hands work to the second thread (it has one, and some kernel is big
    /// enough to split); otherwise every kernel runs on the calling thread.
    pub fn uses_second_thread(&self) -> bool {
        self.pair.is_some() && self.worth_threads
    }

    /// How many Dropback selections so far could not be made from the candidates their score
    /// kernels gathered and had those kernels run again to write every score (the exact
    /// fallback; rare once the threshold settles).
    pub fn selections_rescored(&self) -> u64 {
        self.rescored
    }

    /// Run on `threads` threads from now on (1 or 2; the results do not change). If the
    /// second thread cannot be started, it stays at one.
    pub fn set_threads(&mut self, threads: usize) {
        let threads = threads.clamp(1, 2);
        if threads != self.threads {
            let pair = pair_for(threads).unwrap_or(None);
            self.threads = if pair.is_some() { threads } else { 1 };
            self.pair = pair;
        }
        self.gemm_scratch.resize(self.threads, Vec::new());
    }

    /// The kernel program.
    pub fn plan(&self) -> &KernelProgram {
        &self.plan
    }

    /// The CLIF text of every compiled kernel, in kernel order (shared kernels once).
    pub fn clif(&self) -> String {
        let mut out = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for (i, f) in self.fns.iter().enumerate() {
            if let Some((_, name)) = f {
                if seen.contains(&name.as_str()) {
                    continue;
                }
                seen.push(name);
                out.push_str(&format!(
                    "; kernel k{i} {} of @{}\n",
                    self.plan.kernels[i].kind(),
                    self.plan.func
                ));
                out.push_str(self.jit.clif(name).unwrap_or(""));
                out.push('\n');
            }
        }
        out
    }

    fn check_call(&self, state: &State<f32>, inputs: &[Input<'_, f32>]) -> Result<(), String> {
        let func = &self.plan.func;
        if inputs.len() != self.args.len() {
            return Err(format!(
                "@{func} takes {} argument(s), got {}",
                self.args.len(),
                inputs.len()
            ));
        }
        for ((name, dtype, len), input) in self.args.iter().zip(inputs) {
            let (d, l) = match input {
                Input::Float(s) => (DType::F32, s.len()),
                Input::Int(s) => (DType::I32, s.len()),
            };
            if d != *dtype || l != *len {
                return Err(format!(
                    "@{func} argument %{name} is {}[{len}], got {}[{l}]",
                    dtype.name(),
                    d.name()
                ));
            }
        }
        if state.values.len() != self.params.len() || state.tracked.len() != self.params.len() {
            return Err(format!(
                "the state holds {} parameter(s), the module has {}",
                state.values.len(),
                self.params.len()
            ));
        }
        for (p, info) in self.params.iter().enumerate() {
            match (&state.tracked[p], info.tracked) {
                (None, false) if state.values[p].len() == info.len => {}
                (Some(t), true) => {
                    let sorted = t.indices.windows(2).all(|w| w[0] < w[1]);
                    let in_range = t.indices.last().is_none_or(|&i| (i as usize) < info.len);
                    if t.indices.len() != t.values.len() || !sorted || !in_range {
                        return Err(format!(
                            "the state's tracked @{} needs as many values as sorted, distinct \
                             indices below {}",
                            info.name, info.len
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "the state's @{} does not match the parameter",
                        info.name
                    ))
                }
            }
        }
        if !state.init_scale.is_finite() {
            return Err(format!(
                "the state's init_scale {} is not finite",
                state.init_scale
            ));
        }
        Ok(())
    }

    /// Give every buffer its size and initial fill (unused kinds stay empty).
    fn allocate(&mut self) {
        for (j, b) in self.plan.buffers.iter().enumerate() {
            // A selection grows as it is made; Dropback's new entries keep their values in
            // the float slot.
            // A buffer a weight is updated in place through holds that weight during a run.
            if b.dtype == DType::F32 && !self.in_place.contains(&Some(j)) {
                self.fbufs[j] = vec![b.fill.unwrap_or(0.0); b.len];
            }
            if b.dtype == DType::I32 && !b.sparse {
                self.ibufs[j] = vec![0; b.len];
            }
        }
        self.allocated = true;
    }

    /// The bytes the run-time buffers take once allocated (the first run allocates them).
    pub fn buffer_bytes(&self) -> u64 {
        let moved = |j: usize| self.in_place.contains(&Some(j));
        let buffers = self.plan.buffers.iter().enumerate();
        buffers
            .filter(|&(j, _)| !moved(j))
            .map(|(_, b)| b.bytes())
            .sum()
    }

    /// The parameters each run updates in place (their update a chain that reads them, in a
    /// program with no tracked store): the step holds no second copy of them.
    pub fn updated_in_place(&self) -> Vec<&str> {
        let params = self.params.iter().zip(&self.in_place);
        params
            .filter(|(_, j)| j.is_some())
            .map(|(p, _)| p.name.as_str())
            .collect()
    }

    /// Run the function once: the interpreter's contract (see the module docs).
    pub fn run(
        &mut self,
        state: &mut State<f32>,
        inputs: &[Input<'_, f32>],
    ) -> Result<Vec<Output<f32>>, String> {
        self.check_call(state, inputs)?;
        if !self.allocated {
            self.allocate();
        }
        let JitProgram {
            plan,
            jit,
            fns,
            pair,
            outs,
            worth_threads,
            seed,
            params,
            fbufs,
            ibufs,
            sbufs,
            gemm_scratch,
            bias_pad,
            bounds,
            op_scratch,
            topk_scratch,
            profile,
            regenerated,
            score_feeds,
            scores_private,
            overlaid,
            feeders,
            rescored,
            update_feeds,
            selections,
            in_place,
            ..
        } = self;
        for s in selections.iter_mut() {
            s.reset();
        }
        let entries: Vec<Option<Entry<'_>>> = fns
            .iter()
            .map(|f| f.as_ref().map(|(id, _)| jit.entry(*id)))
            .collect();
        // The weights updated in place move into their buffers for the run (`in_place`).
        let moved: &[Option<usize>] = in_place;
        for (p, j) in moved_weights(moved) {
            std::mem::swap(&mut state.values[p], &mut fbufs[j]);
        }
        let mut updated_in_place = false;
        let state_in: &State<f32> = state;
        let pair: Option<&Pair> = pair.as_ref().filter(|_| *worth_threads);
        // Kernel `i`; `rescore` for a score kernel run again to write the scores its selection
        // asks for. Whether the kernel is a selection that asks for its scores.
        let mut run = |i: usize, rescore: bool| -> Result<bool, String> {
            let k = &plan.kernels[i];
            let regen_scale =
                matches!(k.body, Body::Regen { .. }).then(|| state_in.init_scale.to_bits());
            if regen_scale.is_some() && regenerated[i] == regen_scale {
                return Ok(false);
            }
            let t0 = profile.is_some().then(Instant::now);
            let outs = &outs[i];
            // Take the outputs out of the buffer table, so the inputs can be borrowed from it.
            let mut f_out: Vec<(usize, Vec<f32>)> = Vec::new();
            let mut i_out: Vec<(usize, Vec<i32>)> = Vec::new();
            let mut s_out: Vec<(usize, Vec<u64>)> = Vec::new();
            for o in outs {
                match *o {
                    Loc::F(j) => f_out.push((j, std::mem::take(&mut fbufs[j]))),
                    Loc::I(j) => i_out.push((j, std::mem::take(&mut ibufs[j]))),
                    Loc::S(j) => s_out.push((j, std::mem::take(&mut sbufs[j]))),
                    _ => return Err("internal: a kernel writes an argument or parameter".into()),
                }
            }
            let r = {
                let env = Env {
                    inputs,
                    state: state_in,
                    moved,
                    fbufs,
                    ibufs,
                    sbufs,
                };
                let mut ctx = Ctx {
                    seed: *seed,
                    params,
                    pair,
                    gemm_scratch,
                    bias_pad,
                    bounds,
                    op_scratch,
                    topk_scratch,
                    score_feed: if rescore { None } else { score_feeds[i] },
                    scores_private: scores_private[i],
                    overlaid: overlaid[i].as_mut(),
                    update_feed: update_feeds[i],
                    selection: matches!(k.body, Body::TopkSelect { .. }).then_some(i),
                    selections,
                };
                exec(
                    &k.body, entries[i], &env, &mut ctx, &mut f_out, &mut i_out, &mut s_out,
                )
                .map_err(|e| {
                    let at: Vec<String> = k.insts.iter().map(|i| format!("%{i}")).collect();
                    format!("@{} {}: {e}", plan.func, at.join(" "))
                })
            };
            for (j, v) in f_out {
                fbufs[j] = v;
            }
            for (j, v) in i_out {
                ibufs[j] = v;
            }
            for (j, v) in s_out {
                sbufs[j] = v;
            }
            if let (Some(t0), Some((p, _))) = (t0, profile.as_mut()) {
                p[i] += t0.elapsed().as_secs_f64();
            }
            r?;
            if outs
                .iter()
                .any(|&o| matches!(o, Loc::F(j) if moved.contains(&Some(j))))
            {
                updated_in_place = true;
            }
            if regen_scale.is_some() {
                regenerated[i] = regen_scale;
                // A new `w0`: every overlay starts again from a whole copy of it.
                for memo in overlaid.iter_mut().flatten() {
                    *memo = None;
                }
            }
            Ok(matches!(k.body, Body::TopkSelect { .. })
                && std::mem::take(&mut selections[i].needs_scores))
        };
        let mut kernels = || -> Result<(), String> {
            for (i, fed_by) in feeders.iter().enumerate() {
                if run(i, false)? {
                    // The candidates did not serve and the score kernels left their scores
                    // unwritten: made again, written this time, for a selection over all.
                    for &g in fed_by {
                        run(g, true)?;
                    }
                    *rescored += 1;
                    if run(i, false)? {
                        return Err("internal: a selection asks twice for its scores".into());
                    }
                }
            }
            Ok(())
        };
        // The helper flushes subnormals from its start; this thread while it runs the kernels.
        let ran = sparsec_ir::fpenv::flushing_subnormals(|| match pair {
            Some(pair) => pair.install(kernels),
            None => kernels(),
        });
        for (p, j) in moved_weights(&self.in_place) {
            std::mem::swap(&mut state.values[p], &mut self.fbufs[j]);
        }
        ran.map_err(|e| match updated_in_place {
            true => format!(
                "{e} (the step had already updated weights in place: the training state is no \
                 longer the one before the step)"
            ),
            false => e,
        })?;
        if let Some((_, runs)) = self.profile.as_mut() {
            *runs += 1;
        }
        let env = Env {
            inputs,
            state,
            moved: &[],
            fbufs: &self.fbufs,
            ibufs: &self.ibufs,
            sbufs: &self.sbufs,
        };
        let outputs = self
            .plan
            .results
            .iter()
            .zip(&self.result_shapes)
            .map(|(&l, shape)| match l {
                Loc::S(_) => Output::Sparse {
                    shape: shape.clone(),
                    indices: env.sparse(l).to_vec(),
                },
                Loc::I(_) => Output::Int(Tensor {
                    shape: shape.clone(),
                    data: env.int(l).to_vec(),
                }),
                Loc::Arg(a) if matches!(inputs[a], Input::Int(_)) => Output::Int(Tensor {
                    shape: shape.clone(),
                    data: env.int(l).to_vec(),
                }),
                _ => Output::Float(Tensor {
                    shape: shape.clone(),
                    data: env.float(l).to_vec(),
                }),
            })
            .collect();
        // Tracked stores first, so that one over its budget leaves the state untouched.
        let mut new_tracked = Vec::new();
        for (s, &(p, l)) in self.plan.stores.iter().enumerate() {
            let info = &self.params[p];
            if !info.tracked {
                continue;
            }
            let cap = info.capacity.unwrap_or(u64::MAX);
            let over_budget = |count: usize| {
                format!(
                    "@{}: the store to the tracked @{} leaves {count} values differing from its \
                     initial value, more than its budget of {cap}",
                    self.plan.func, info.name
                )
            };
            // Entries made directly (`grad_update`): the positions in the selection slot, the
            // values in the float slot of the same buffer.
            if let Loc::S(j) = l {
                let (indices, values) = (&self.sbufs[j], &self.fbufs[j]);
                if indices.len() != values.len() {
                    return Err("internal: entries without their values".into());
                }
                if indices.len() as u64 > cap {
                    return Err(over_budget(indices.len()));
                }
                // A weight's positions are below 2^31 (MAX_ELEMENTS).
                let mut t = self.spare_tracked.pop().unwrap_or_default();
                t.indices.clear();
                t.indices.extend(indices.iter().map(|&i| i as u32));
                t.values.clear();
                t.values.extend_from_slice(values);
                new_tracked.push((p, t));
                continue;
            }
            let w0 = self
                .plan
                .store_w0
                .iter()
                .find(|(q, _)| *q == p)
                .map(|&(_, w)| env.float(w))
                .ok_or("internal: no w0 for a tracked store")?;
            let value = env.float(l);
            let mut t = self.spare_tracked.pop().unwrap_or_default();
            t.indices.clear();
            t.values.clear();
            let mut keep = |i: usize| {
                if value[i].to_bits() != w0[i].to_bits() {
                    t.indices.push(i as u32);
                    t.values.push(value[i]);
                }
            };
            match self.applied_at[s] {
                Some((sel, offset)) => {
                    let sel = env.sparse(sel);
                    let lo = sel.partition_point(|&i| (i as usize) < offset);
                    let hi = sel.partition_point(|&i| (i as usize) < offset + value.len());
                    sel[lo..hi].iter().for_each(|&i| keep(i as usize - offset));
                }
                None => (0..value.len().min(w0.len())).for_each(keep),
            }
            if t.len() as u64 > cap {
                return Err(over_budget(t.len()));
            }
            new_tracked.push((p, t));
        }
        let mut dense: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut swaps: Vec<(usize, usize)> = Vec::new();
        for &(p, l) in &self.plan.stores {
            // A weight updated in place is already the stored value.
            if self.params[p].tracked || self.in_place[p].is_some() {
                continue;
            }
            match l {
                Loc::F(j) if self.swappable[j] => swaps.push((p, j)),
                _ => dense.push((p, env.float(l).to_vec())),
            }
        }
        for (p, v) in dense {
            state.values[p].copy_from_slice(&v);
        }
        for (p, j) in swaps {
            std::mem::swap(&mut state.values[p], &mut self.fbufs[j]);
        }
        for (p, t) in new_tracked {
            if let Some(old) = state.tracked[p].replace(t) {
                self.spare_tracked.push(old);
            }
        }
        Ok(outputs)
    }
}
