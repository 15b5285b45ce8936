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
//! The second thread is a persistent pool worker: a run executes inside the pool
//! (`ThreadPool::install`), so each split kernel costs one `rayon::join` (about a microsecond),
//! not a thread spawn (tens of microseconds, which at batch 64 would rival the kernels).
//!
//! **Stores.** A dense parameter's new value is swapped with the buffer that holds it (the
//! buffer is rewritten by its kernel before any read in the next run), not copied.

use std::time::Instant;

use cranelift_module::FuncId;
use sparsec_ir::interp::{
    eval_op, matmul_columns_f32, topk_select, Input, OpArg, OpOut, OpScratch, Output, State,
    Tensor, GEMM_PANEL,
};
use sparsec_ir::module::Init;
use sparsec_ir::{DType, Module};

use crate::abi::Args;
use crate::codegen::chacha::emit_regen;
use crate::codegen::chain::{emit_chain, emit_reduce_channels, emit_reduce_rows};
use crate::codegen::conv::{emit_conv, ConvPass};
use crate::codegen::elementwise::emit_bias_add;
use crate::codegen::gemm::{emit_gemm_fused, GEMM_IMPORT, GEMM_IMPORT_PARAMS, NR, REGEN_BLOCK};
use crate::codegen::math::MATH_IMPORTS;
use crate::codegen::pool::emit_maxpool;
use crate::codegen::softmax::emit_softmax_xent;
use crate::jit::{Entry, Jit};
use crate::kernel_ir::{Body, KernelProgram, Loc};
use crate::partition::partition;

/// Work (elements, or multiply-adds for products) below which a kernel runs on one thread.
const SPLIT_MIN_WORK: usize = 1 << 15;

/// The thread count from `SPARSEC_THREADS` (1 or 2), else the available parallelism capped at 2.
pub fn default_threads() -> usize {
    if let Some(n) = std::env::var("SPARSEC_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n.clamp(1, 2);
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2)
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
    /// With two threads: the pool the runs execute in.
    pool: Option<rayon::ThreadPool>,
    /// Per kernel: the buffers it writes (taken out of the table while it runs).
    outs: Vec<Vec<Loc>>,
    /// Whether some product or convolution is big enough to split; if none is, a run stays on
    /// the calling thread (handing a batch-1 step to the pool and splitting its element-wise
    /// chains costs more than it saves).
    worth_threads: bool,
    compile_ms: f64,
    seed: u64,
    params: Vec<ParamInfo>,
    args: Vec<(String, DType, usize)>,
    result_shapes: Vec<Vec<usize>>,
    fbufs: Vec<Vec<f32>>,
    ibufs: Vec<Vec<i32>>,
    sbufs: Vec<Vec<u32>>,
    /// Per float buffer: a kernel writes it in every run, no other store and no constant uses it,
    /// so a store may take it by swapping.
    swappable: Vec<bool>,
    /// Per tracked store whose value is a `dropback_apply`: that kernel's selection buffer and
    /// offset, the only positions where the value can differ from its initial value.
    applied_at: Vec<Option<(Loc, usize)>>,
    gemm_scratch: Vec<Vec<f32>>,
    bias_pad: Vec<f32>,
    bounds: Vec<u64>,
    op_scratch: OpScratch<f32>,
    topk_scratch: Vec<(u64, u32)>,
    /// Seconds per kernel, when `SPARSEC_PROFILE` is set.
    profile: Option<Vec<f64>>,
}

impl Drop for JitProgram {
    /// With `SPARSEC_PROFILE` set, the time spent in each kernel goes to stderr.
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            let total: f64 = p.iter().sum();
            eprintln!("profile @{}: {:.3} s in kernels", self.plan.func, total);
            for (i, t) in p.iter().enumerate() {
                if *t > 0.01 * total {
                    eprintln!(
                        "  k{i} {:<24} {:>8.3} s {:>5.1}%",
                        self.plan.kernels[i].kind(),
                        t,
                        100.0 * t / total.max(1e-12)
                    );
                }
            }
        }
    }
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
    fbufs: &'r [Vec<f32>],
    ibufs: &'r [Vec<i32>],
    sbufs: &'r [Vec<u32>],
}

impl<'r> Env<'r> {
    fn float(&self, l: Loc) -> &'r [f32] {
        match l {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Float(s) => s,
                Input::Int(_) => &[],
            },
            Loc::Param(p) => &self.state.values[p],
            Loc::F(j) => &self.fbufs[j],
            Loc::I(_) | Loc::S(_) => &[],
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

    fn sparse(&self, l: Loc) -> &'r [u32] {
        match l {
            Loc::S(j) => &self.sbufs[j],
            _ => &[],
        }
    }
}

fn addr(s: &[f32]) -> usize {
    s.as_ptr() as usize
}

/// `args` split into `parts` by the range in int slots `lo`/`hi`, cut at multiples of `align`.
fn split(args: Args, lo: usize, hi: usize, parts: usize, align: u64) -> Vec<Args> {
    let (a, b) = (args.int[lo], args.int[hi]);
    if parts < 2 || b <= a {
        return vec![args];
    }
    let mid = a + ((b - a) / 2) / align * align;
    if mid <= a || mid >= b {
        return vec![args];
    }
    let mut first = args;
    let mut second = args;
    first.int[hi] = mid;
    second.int[lo] = mid;
    vec![first, second]
}

/// Call `entry` once per argument block: two blocks under `rayon::join` (inside the run's
/// pool, see the module docs), so on both threads.
///
/// # Safety
///
/// Each block meets the contract of `Entry::call` for `entry`'s kernel on its own, and the
/// blocks write disjoint elements (as [`split`] makes them, by cutting one range slot), so
/// that running them at the same time still meets its point 4.
unsafe fn run_parts(entry: Entry<'_>, parts: &[Args]) {
    // SAFETY (every call below): the caller's contract above, block by block.
    match parts {
        [] => {}
        [one] => unsafe { entry.call(one) },
        [first, second] => {
            rayon::join(
                || unsafe { entry.call(first) },
                || unsafe { entry.call(second) },
            );
        }
        [first, rest @ ..] => {
            rayon::join(
                || unsafe { entry.call(first) },
                || unsafe { run_parts(entry, rest) },
            );
        }
    }
}

/// The pool for `threads` threads (none for one).
fn pool_for(threads: usize) -> Result<Option<rayon::ThreadPool>, String> {
    if threads < 2 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sparsec-jit-{i}"))
        .build()
        .map(Some)
        .map_err(|e| format!("cannot start the JIT's {threads} threads: {e}"))
}

/// The scratch panel of a weight gradient `[m, n]` made 64 columns at a time, and its row
/// stride (1 for a single column, as the whole product's, see `matmul_columns_f32`).
fn grad_panel_scratch<'c>(cx: &'c mut Ctx<'_>, m: usize, n: usize) -> (&'c mut [f32], usize) {
    let ldc = if n > 1 { GEMM_PANEL } else { 1 };
    if cx.gemm_scratch.is_empty() {
        cx.gemm_scratch.push(Vec::new());
    }
    let s = &mut cx.gemm_scratch[0];
    if s.len() < m * ldc {
        s.resize(m * ldc, 0.0);
    }
    (&mut s[..m * ldc], ldc)
}

fn check(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "internal: {what} has {got} elements, the kernel needs {want}"
        ))
    }
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
                Body::Chain { spec, .. } if spec.uses_math() => {
                    let callees = math(&mut jit)?;
                    own(&mut jit, &callees, &|fx| emit_chain(fx, spec))?
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
                Body::Chain { spec, .. } => own(&mut jit, &[], &|fx| emit_chain(fx, spec))?,
                Body::ReduceChannels { .. } => Some((
                    shared_fn(&mut jit, "reduce_channels", emit_reduce_channels)?,
                    "reduce_channels".into(),
                )),
                Body::ReduceRows { .. } => Some((
                    shared_fn(&mut jit, "reduce_rows", emit_reduce_rows)?,
                    "reduce_rows".into(),
                )),
                Body::BiasAdd { .. } => Some((
                    shared_fn(&mut jit, "bias_add", emit_bias_add)?,
                    "bias_add".into(),
                )),
                Body::Regen { .. } => Some((
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
        let n_kernels = plan.kernels.len();
        let mut fbufs = Vec::new();
        let mut ibufs = Vec::new();
        let mut sbufs = Vec::new();
        for b in &plan.buffers {
            // Every buffer has its own index space slot; unused kinds stay empty.
            let f_len = if b.dtype == DType::F32 { b.len } else { 0 };
            fbufs.push(vec![b.fill.unwrap_or(0.0); f_len]);
            ibufs.push(if b.dtype == DType::I32 {
                vec![0; b.len]
            } else {
                Vec::new()
            });
            sbufs.push(Vec::new());
        }
        let mut written = vec![false; fbufs.len()];
        for k in &plan.kernels {
            for o in KernelProgram::io(k).1 {
                if let Loc::F(j) = o {
                    written[j] = true;
                }
            }
        }
        let swappable = (0..fbufs.len())
            .map(|j| {
                let stores = plan.stores.iter().filter(|&&(_, l)| l == Loc::F(j)).count();
                written[j] && stores == 1 && plan.buffers[j].fill.is_none()
            })
            .collect();
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
            Body::Gemm { m, n, k, .. } => m * n * k >= SPLIT_MIN_WORK * 8 && *n > NR,
            Body::Conv { spec, .. } => {
                spec.b * spec.o * spec.p() * spec.ckk() >= SPLIT_MIN_WORK * 8
            }
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
            pool: pool_for(threads)?,
            outs,
            worth_threads,
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
            fbufs,
            ibufs,
            sbufs,
            swappable,
            applied_at,
            gemm_scratch: vec![Vec::new(); threads],
            bias_pad: Vec::new(),
            bounds: Vec::new(),
            op_scratch: OpScratch::default(),
            topk_scratch: Vec::new(),
            profile: std::env::var_os("SPARSEC_PROFILE").map(|_| vec![0.0; n_kernels]),
        })
    }

    /// Milliseconds spent partitioning and compiling.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run on `threads` threads from now on (1 or 2; the results do not change). If the
    /// second thread cannot be started, it stays at one.
    pub fn set_threads(&mut self, threads: usize) {
        let threads = threads.clamp(1, 2);
        if threads != self.threads {
            let pool = pool_for(threads).unwrap_or(None);
            self.threads = if pool.is_some() { threads } else { 1 };
            self.pool = pool;
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

    /// Run the function once: the interpreter's contract (see the module docs).
    pub fn run(
        &mut self,
        state: &mut State<f32>,
        inputs: &[Input<'_, f32>],
    ) -> Result<Vec<Output<f32>>, String> {
        self.check_call(state, inputs)?;
        let JitProgram {
            plan,
            jit,
            fns,
            threads,
            pool,
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
            ..
        } = self;
        let entries: Vec<Option<Entry<'_>>> = fns
            .iter()
            .map(|f| f.as_ref().map(|(id, _)| jit.entry(*id)))
            .collect();
        let state_in: &State<f32> = state;
        let mut kernels = || -> Result<(), String> {
            for (i, k) in plan.kernels.iter().enumerate() {
                let t0 = profile.is_some().then(Instant::now);
                let outs = &outs[i];
                // Take the outputs out of the buffer table, so the inputs can be borrowed from it.
                let mut f_out: Vec<(usize, Vec<f32>)> = Vec::new();
                let mut i_out: Vec<(usize, Vec<i32>)> = Vec::new();
                let mut s_out: Vec<(usize, Vec<u32>)> = Vec::new();
                for o in outs {
                    match *o {
                        Loc::F(j) => f_out.push((j, std::mem::take(&mut fbufs[j]))),
                        Loc::I(j) => i_out.push((j, std::mem::take(&mut ibufs[j]))),
                        Loc::S(j) => s_out.push((j, std::mem::take(&mut sbufs[j]))),
                        _ => {
                            return Err("internal: a kernel writes an argument or parameter".into())
                        }
                    }
                }
                let r = {
                    let env = Env {
                        inputs,
                        state: state_in,
                        fbufs,
                        ibufs,
                        sbufs,
                    };
                    let mut ctx = Ctx {
                        seed: *seed,
                        params,
                        threads: if *worth_threads { *threads } else { 1 },
                        gemm_scratch,
                        bias_pad,
                        bounds,
                        op_scratch,
                        topk_scratch,
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
                if let (Some(t0), Some(p)) = (t0, profile.as_mut()) {
                    p[i] += t0.elapsed().as_secs_f64();
                }
                r?;
            }
            Ok(())
        };
        match pool {
            Some(pool) if *worth_threads => pool.install(kernels)?,
            _ => kernels()?,
        }
        let env = Env {
            inputs,
            state,
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
            let w0 = self
                .plan
                .store_w0
                .iter()
                .find(|(q, _)| *q == p)
                .map(|&(_, w)| env.float(w))
                .ok_or("internal: no w0 for a tracked store")?;
            let value = env.float(l);
            let mut t = sparsec_ir::interp::TrackedValues::default();
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
            let cap = info.capacity.unwrap_or(u64::MAX);
            if t.len() as u64 > cap {
                return Err(format!(
                    "@{}: the store to the tracked @{} leaves {} values differing from its \
                     initial value, more than its budget of {cap}",
                    self.plan.func,
                    info.name,
                    t.len()
                ));
            }
            new_tracked.push((p, t));
        }
        let mut dense: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut swaps: Vec<(usize, usize)> = Vec::new();
        for &(p, l) in &self.plan.stores {
            if self.params[p].tracked {
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
            state.tracked[p] = Some(t);
        }
        Ok(outputs)
    }
}

struct Ctx<'a> {
    seed: u64,
    params: &'a [ParamInfo],
    threads: usize,
    gemm_scratch: &'a mut Vec<Vec<f32>>,
    bias_pad: &'a mut Vec<f32>,
    bounds: &'a mut Vec<u64>,
    op_scratch: &'a mut OpScratch<f32>,
    topk_scratch: &'a mut Vec<(u64, u32)>,
}

fn out_f(outs: &mut [(usize, Vec<f32>)], l: Loc) -> Result<&mut Vec<f32>, String> {
    let Loc::F(j) = l else {
        return Err("internal: not a float buffer".into());
    };
    outs.iter_mut()
        .find(|(k, _)| *k == j)
        .map(|(_, v)| v)
        .ok_or_else(|| "internal: output not taken".into())
}

#[allow(clippy::too_many_arguments)]
fn exec(
    body: &Body,
    entry: Option<Entry<'_>>,
    env: &Env<'_>,
    cx: &mut Ctx<'_>,
    f_out: &mut [(usize, Vec<f32>)],
    i_out: &mut [(usize, Vec<i32>)],
    s_out: &mut [(usize, Vec<u32>)],
) -> Result<(), String> {
    let entry = || entry.ok_or_else(|| "internal: kernel not compiled".to_owned());
    let parts = cx.threads;
    match body {
        Body::Gemm {
            spec,
            m,
            n,
            k,
            a,
            b,
            regen,
            bias,
            outs,
        } => {
            let (m, n, k) = (*m, *n, *k);
            let mut args = Args::default();
            let av = env.float(*a);
            check("a matrix operand", av.len(), m * k)?;
            args.ptr[0] = addr(av);
            if let Some(b) = b {
                let bv = env.float(*b);
                check("a matrix operand", bv.len(), n * k)?;
                args.ptr[1] = addr(bv);
            }
            if let Some(bias) = bias {
                let bv = env.float(*bias);
                check("a bias", bv.len(), n)?;
                cx.bias_pad.clear();
                cx.bias_pad.extend_from_slice(bv);
                cx.bias_pad.resize(n.div_ceil(NR) * NR, 0.0);
                args.ptr[4] = addr(cx.bias_pad);
            }
            for (s, o) in outs.iter().enumerate() {
                if let Some(o) = o {
                    let v = out_f(f_out, *o)?;
                    check("a product", v.len(), m * n)?;
                    args.ptr[[2, 5, 6][s]] = v.as_mut_ptr() as usize;
                }
            }
            args.int[..3].copy_from_slice(&[m as u64, n as u64, k as u64]);
            args.int[5] = 0;
            args.int[6] = n as u64;
            args.f32[2] = 1.0;
            if let Some(p) = regen {
                let info = &cx.params[*p];
                let Init::Uniform { lo, hi } = info.init else {
                    return Err("internal: regeneration of a zero-initialised weight".into());
                };
                check("a regenerated weight", info.len, n * k)?;
                args.int[3] = cx.seed;
                args.int[4] = info.stream;
                args.f32[..3].copy_from_slice(&[lo, hi, env.state.init_scale]);
                if spec.overlay {
                    let t = env.state.tracked[*p]
                        .as_ref()
                        .ok_or("internal: a tracked weight without entries")?;
                    let panels = n.div_ceil(NR);
                    cx.bounds.clear();
                    for q in 0..=panels {
                        let start = (q * NR * k).min(n * k) as u32;
                        cx.bounds
                            .push(t.indices.partition_point(|&i| i < start) as u64);
                    }
                    args.ptr[7] = t.indices.as_ptr() as usize;
                    args.ptr[8] = addr(&t.values);
                    args.ptr[9] = cx.bounds.as_ptr() as usize;
                }
            }
            let split_it = parts > 1 && m * n * k >= SPLIT_MIN_WORK * 8 && n > NR;
            // Imported products are cut at the library's panels, so each thread makes the
            // interpreter's calls (sparsec_ir::interp::GEMM_PANEL).
            let align = if spec.import { REGEN_BLOCK } else { NR };
            let blocks = split(args, 5, 6, if split_it { parts } else { 1 }, align as u64);
            cx.gemm_scratch
                .resize(blocks.len().max(cx.gemm_scratch.len()), Vec::new());
            if spec.import && !spec.store.contains(&true) {
                return Err("internal: a product kernel that stores nothing".into());
            }
            // Scratch per thread: two packed panels, or a block of regenerated rows.
            let need = if spec.import {
                REGEN_BLOCK * k
            } else {
                2 * NR * k
            };
            let mut blocks = blocks;
            for (blk, s) in blocks.iter_mut().zip(cx.gemm_scratch.iter_mut()) {
                if s.len() < need {
                    s.resize(need, 0.0);
                }
                blk.ptr[3] = s.as_mut_ptr() as usize;
            }
            let entry = entry()?;
            // SAFETY: A and B (which a regenerated weight does not read: its rows come from the
            // stream) are checked to hold `m·k` and `n·k` floats, every stored stage `m·n` (the
            // partition marks in `spec.store` exactly the stages it gives a buffer), the bias is
            // padded to whole `NR` panels as the epilogue reads it, and each block has its own
            // scratch of `need` floats. An overlay's entries are sorted, distinct and below the
            // weight's `n·k` (`check_call`), with `bounds` partition points into them. Stages
            // are buffers taken out of the table, so they alias no input; blocks cut the column
            // range at multiples of `align`, so the two threads write disjoint columns.
            unsafe { run_parts(entry, &blocks) };
        }
        Body::Chain {
            spec,
            len,
            inputs,
            scalars,
            outputs,
        } => {
            let mut args = Args::default();
            for (j, l) in inputs.iter().enumerate() {
                let v = env.float(*l);
                check("a chain input", v.len(), *len)?;
                args.ptr[j] = addr(v);
            }
            for (j, l) in outputs.iter().enumerate() {
                let v = out_f(f_out, *l)?;
                check("a chain output", v.len(), *len)?;
                args.ptr[spec.inputs + j] = v.as_mut_ptr() as usize;
            }
            for (j, l) in scalars.iter().enumerate() {
                args.f32[j] = *env.float(*l).first().ok_or("internal: an empty scalar")?;
            }
            args.int[0] = 0;
            args.int[1] = *len as u64;
            let n = if *len >= SPLIT_MIN_WORK { parts } else { 1 };
            let entry = entry()?;
            // SAFETY: every input and output is checked to hold `len` floats and the kernel
            // touches elements `int[0] .. int[1]` of each, within `0 .. len`; outputs are
            // distinct buffers taken out of the table, so they alias no input; `split` halves
            // the range, so the two threads write disjoint elements.
            unsafe { run_parts(entry, &split(args, 0, 1, n, 16)) };
        }
        Body::ReduceRows { rows, cols, x, out } => {
            let mut args = Args::default();
            let xv = env.float(*x);
            check("a reduced operand", xv.len(), rows * cols)?;
            let o = out_f(f_out, *out)?;
            check("a reduction", o.len(), *cols)?;
            args.ptr[0] = addr(xv);
            args.ptr[1] = o.as_mut_ptr() as usize;
            args.int[..4].copy_from_slice(&[*rows as u64, *cols as u64, 0, *cols as u64]);
            let n = if rows * cols >= SPLIT_MIN_WORK {
                parts
            } else {
                1
            };
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `rows·cols` floats and `out` `cols`; the kernel
            // reads and writes columns `int[2] .. int[3]` within `0 .. cols`; `out` was taken out
            // of the table, so it is not `x`; `split` gives the threads disjoint columns.
            unsafe { run_parts(entry, &split(args, 2, 3, n, 4)) };
        }
        Body::BiasAdd {
            inner,
            x,
            bias,
            out,
        } => {
            let xv = env.float(*x);
            let bv = env.float(*bias);
            let o = out_f(f_out, *out)?;
            check("bias_add", o.len(), xv.len())?;
            let plane = bv.len() * inner;
            let outer = xv.len().checked_div(plane).unwrap_or(0);
            check("bias_add", xv.len(), outer * plane)?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(xv), addr(bv), o.as_mut_ptr() as usize]);
            args.int[..3].copy_from_slice(&[outer as u64, bv.len() as u64, *inner as u64]);
            let entry = entry()?;
            // SAFETY: `x` and `out` are checked to hold `outer·channels·inner` floats, the bias
            // is `channels` = `bv.len()` long, and `out`, taken out of the table, is neither.
            unsafe { entry.call(&args) };
        }
        Body::Regen { param, out } => {
            let info = &cx.params[*param];
            let o = out_f(f_out, *out)?;
            check("a regenerated value", o.len(), info.len)?;
            match info.init {
                Init::Zeros => o.fill(0.0 * env.state.init_scale),
                Init::Uniform { lo, hi } => {
                    let mut args = Args::default();
                    args.ptr[0] = o.as_mut_ptr() as usize;
                    // The fill kernel's range is (start, len): split by hand at a block of 4.
                    let len = o.len() as u64;
                    let mid = if parts > 1 && o.len() >= SPLIT_MIN_WORK {
                        (len / 2) & !63
                    } else {
                        len
                    };
                    args.f32[..3].copy_from_slice(&[lo, hi, env.state.init_scale]);
                    args.int[..4].copy_from_slice(&[cx.seed, info.stream, 0, mid]);
                    let mut blocks = vec![args];
                    if mid < len {
                        let mut second = args;
                        second.ptr[0] = o[mid as usize..].as_mut_ptr() as usize;
                        second.int[2] = mid;
                        second.int[3] = len - mid;
                        blocks.push(second);
                    }
                    let entry = entry()?;
                    // SAFETY: `out` is checked to hold the parameter's `len` floats; the first
                    // block writes its elements `0 .. mid`, the second, starting at `mid`, the
                    // remaining `len − mid`: disjoint, within `out`, which no input aliases.
                    unsafe { run_parts(entry, &blocks) };
                }
            }
        }
        Body::Overlay { param, w0, out } => {
            let o = out_f(f_out, *out)?;
            o.copy_from_slice(env.float(*w0));
            if let Some(t) = &env.state.tracked[*param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    o[i as usize] = v;
                }
            }
        }
        Body::TrackedValues { param, out } => {
            let o = out_f(f_out, *out)?;
            o.fill(0.0);
            if let Some(t) = &env.state.tracked[*param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    o[i as usize] = v;
                }
            }
        }
        Body::Correction { param, w0, out } => {
            let o = out_f(f_out, *out)?;
            o.fill(0.0);
            let w0 = env.float(*w0);
            if let Some(t) = &env.state.tracked[*param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    o[i as usize] = v - w0[i as usize];
                }
            }
        }
        Body::DropbackApply {
            offset,
            w1,
            sel,
            w0,
            out,
        } => {
            let o = out_f(f_out, *out)?;
            let (w1, w0) = (env.float(*w1), env.float(*w0));
            o.copy_from_slice(w0);
            let sel = env.sparse(*sel);
            let lo = sel.partition_point(|&i| (i as usize) < *offset);
            let hi = sel.partition_point(|&i| (i as usize) < offset + o.len());
            for &i in &sel[lo..hi] {
                let j = i as usize - offset;
                o[j] = w1[j];
            }
        }
        Body::GradScore {
            m,
            n,
            k,
            dy,
            x,
            lr,
            w,
            w0,
            out,
        } => {
            let (m, n, k) = (*m, *n, *k);
            let (dy, x, w, w0) = (env.float(*dy), env.float(*x), env.float(*w), env.float(*w0));
            check("a gradient operand", dy.len(), k * m)?;
            check("a gradient operand", x.len(), k * n)?;
            check("a weight", w.len(), m * n)?;
            check("an initial weight", w0.len(), m * n)?;
            let lr = *env.float(*lr).first().ok_or("internal: an empty scalar")?;
            let o = out_f(f_out, *out)?;
            check("the scores", o.len(), m * n)?;
            let (panel, ldc) = grad_panel_scratch(cx, m, n);
            for j0 in (0..n).step_by(GEMM_PANEL) {
                let j1 = (j0 + GEMM_PANEL).min(n);
                matmul_columns_f32((m, n, k), true, dy, false, x, n, (j0, j1), panel, ldc);
                for i in 0..m {
                    let g = &panel[i * ldc..][..j1 - j0];
                    let row = i * n + j0..i * n + j1;
                    for (((s, &g), &w), &w0) in o[row.clone()]
                        .iter_mut()
                        .zip(g)
                        .zip(&w[row.clone()])
                        .zip(&w0[row])
                    {
                        // The interpreter's scale, sub and dropback_score, one IEEE op each.
                        let d = (w - g * lr) - w0;
                        *s = if d < 0.0 { -d } else { d + 0.0 };
                    }
                }
            }
        }
        Body::GradApply {
            offset,
            m,
            n,
            k,
            dy,
            x,
            lr,
            w,
            sel,
            w0,
            out,
        } => {
            let (m, n, k, offset) = (*m, *n, *k, *offset);
            let (dy, x, w, w0) = (env.float(*dy), env.float(*x), env.float(*w), env.float(*w0));
            check("a gradient operand", dy.len(), k * m)?;
            check("a gradient operand", x.len(), k * n)?;
            check("a weight", w.len(), m * n)?;
            let lr = *env.float(*lr).first().ok_or("internal: an empty scalar")?;
            let o = out_f(f_out, *out)?;
            check("an applied weight", o.len(), m * n)?;
            o.copy_from_slice(w0);
            let sel = env.sparse(*sel);
            let lo = sel.partition_point(|&i| (i as usize) < offset);
            let hi = sel.partition_point(|&i| (i as usize) < offset + m * n);
            let mine = &sel[lo..hi];
            if mine.is_empty() || n == 0 {
                return Ok(());
            }
            // The selected positions by panel (counting sort, ascending within a panel).
            let panels = n.div_ceil(GEMM_PANEL);
            let panel_of = |i: u32| ((i as usize - offset) % n) / GEMM_PANEL;
            let mut start = vec![0usize; panels + 1];
            for &i in mine {
                start[panel_of(i) + 1] += 1;
            }
            for q in 0..panels {
                start[q + 1] += start[q];
            }
            let mut fill = start.clone();
            let mut by_panel = vec![0u32; mine.len()];
            for &i in mine {
                let q = panel_of(i);
                by_panel[fill[q]] = i;
                fill[q] += 1;
            }
            let (panel, ldc) = grad_panel_scratch(cx, m, n);
            for q in 0..panels {
                let here = &by_panel[start[q]..start[q + 1]];
                if here.is_empty() {
                    continue;
                }
                let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
                matmul_columns_f32((m, n, k), true, dy, false, x, n, (j0, j1), panel, ldc);
                for &i in here {
                    let idx = i as usize - offset;
                    let (r, c) = (idx / n, idx % n);
                    o[idx] = w[idx] - panel[r * ldc + c - j0] * lr;
                }
            }
        }
        Body::TopkSelect { k, scores, out } => {
            let Loc::S(j) = out else {
                return Err("internal: a selection buffer".into());
            };
            let o = s_out
                .iter_mut()
                .find(|(x, _)| x == j)
                .map(|(_, v)| v)
                .ok_or("internal: output not taken")?;
            let s: Vec<&[f32]> = scores.iter().map(|&l| env.float(l)).collect();
            topk_select(&s, *k, cx.topk_scratch, o);
        }
        Body::TrackedSet { param, out } => {
            let Loc::S(j) = out else {
                return Err("internal: a selection buffer".into());
            };
            let o = s_out
                .iter_mut()
                .find(|(x, _)| x == j)
                .map(|(_, v)| v)
                .ok_or("internal: output not taken")?;
            o.clear();
            if let Some(t) = &env.state.tracked[*param] {
                o.extend_from_slice(&t.indices);
            }
        }
        Body::Copy { src, out } => {
            let o = out_f(f_out, *out)?;
            o.copy_from_slice(env.float(*src));
        }
        Body::ReduceChannels {
            outer,
            channels,
            inner,
            x,
            out,
        } => {
            let xv = env.float(*x);
            check("a reduced operand", xv.len(), outer * channels * inner)?;
            let o = out_f(f_out, *out)?;
            check("a reduction", o.len(), *channels)?;
            let mut args = Args::default();
            args.ptr[..2].copy_from_slice(&[addr(xv), o.as_mut_ptr() as usize]);
            args.int[..3].copy_from_slice(&[*outer as u64, *channels as u64, *inner as u64]);
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `outer·channels·inner` floats and `out` `channels`;
            // `out` was taken out of the table, so it is not `x`.
            unsafe { entry.call(&args) };
        }
        Body::SoftmaxXent {
            spec,
            logits,
            labels,
            out,
        } => {
            let x = env.float(*logits);
            let l = env.int(*labels);
            check("the logits", x.len(), spec.rows * spec.classes)?;
            check("the labels", l.len(), spec.rows)?;
            // The kernel indexes rows by label: the interpreter's check, its error.
            for (i, &v) in l.iter().enumerate() {
                if v < 0 || v as usize >= spec.classes {
                    return Err(format!(
                        "label {v} of example {i} is not a class index (expected 0..{})",
                        spec.classes
                    ));
                }
            }
            let o = out_f(f_out, *out)?;
            check(
                "a softmax cross-entropy",
                o.len(),
                if spec.grad { x.len() } else { 1 },
            )?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(x), l.as_ptr() as usize, o.as_mut_ptr() as usize]);
            let entry = entry()?;
            // SAFETY: the logits are checked to hold `rows·classes` floats (both positive: the
            // partitioner's condition), the labels `rows` integers, each in `0 .. classes` (the
            // kernel indexes a row by its label), and the output the loss or the gradient's
            // `rows·classes`; the output was taken out of the table, so it aliases no input.
            unsafe { entry.call(&args) };
        }
        Body::MaxPool { spec, x, dy, out } => {
            let xv = env.float(*x);
            check("a pooled operand", xv.len(), spec.planes * spec.h * spec.w)?;
            let pooled = spec.planes * spec.oh * spec.ow;
            let mut args = Args::default();
            args.ptr[0] = addr(xv);
            if let Some(dy) = dy {
                let d = env.float(*dy);
                check("a pooling gradient", d.len(), pooled)?;
                args.ptr[1] = addr(d);
            }
            let o = out_f(f_out, *out)?;
            check(
                "a pooling",
                o.len(),
                if spec.grad { xv.len() } else { pooled },
            )?;
            args.ptr[2] = o.as_mut_ptr() as usize;
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `planes·h·w` floats, `dy` (a gradient's, which the
            // kernel IR always gives it) and the forward output the pooled size, the gradient's
            // output `x`'s; every window lies inside its plane (the partitioner's check). The
            // output was taken out of the table, so it aliases neither input.
            unsafe { entry.call(&args) };
        }
        Body::Conv { spec, a, b, out } => {
            let (av, bv) = (env.float(*a), env.float(*b));
            let (x_len, w_len, y_len) = (
                spec.b * spec.chw(),
                spec.o * spec.ckk(),
                spec.b * spec.o * spec.p(),
            );
            let (a_len, b_len, o_len) = match spec.pass {
                ConvPass::Forward => (x_len, w_len, y_len),
                ConvPass::InputGrad => (y_len, w_len, x_len),
                ConvPass::WeightGrad => (x_len, y_len, w_len),
            };
            check("a convolution operand", av.len(), a_len)?;
            check("a convolution operand", bv.len(), b_len)?;
            let o = out_f(f_out, *out)?;
            check("a convolution", o.len(), o_len)?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(av), addr(bv), o.as_mut_ptr() as usize]);
            args.int[1] = spec.b as u64;
            // Images are independent except in the weight gradient's running sum.
            let work = spec.b * spec.o * spec.p() * spec.ckk();
            let split_it =
                parts > 1 && spec.pass != ConvPass::WeightGrad && work >= SPLIT_MIN_WORK * 8;
            let mut blocks = split(args, 0, 1, if split_it { parts } else { 1 }, 1);
            if cx.gemm_scratch.len() < blocks.len() {
                cx.gemm_scratch.resize(blocks.len(), Vec::new());
            }
            let need = spec.ckk() * spec.p();
            for (blk, cols) in blocks.iter_mut().zip(cx.gemm_scratch.iter_mut()) {
                if cols.len() < need {
                    cols.resize(need, 0.0);
                }
                blk.ptr[3] = cols.as_mut_ptr() as usize;
            }
            let entry = entry()?;
            // SAFETY: both operands and the result are checked against the extents of `spec`
            // (which the kernel is compiled with) for this pass, and each block has its own
            // `ckk·p` floats of `cols`; the result was taken out of the table, so it aliases no
            // operand. Blocks take disjoint image ranges, whose results are disjoint (the weight
            // gradient, one sum over all images, is never split).
            unsafe { run_parts(entry, &blocks) };
        }
        Body::Interp {
            op,
            shapes,
            out_shape,
            operands,
            out,
        } => {
            let args: Vec<OpArg<'_, f32>> = operands
                .iter()
                .zip(shapes)
                .map(|(&l, _)| match l {
                    Loc::I(_) => OpArg::Int(env.int(l)),
                    Loc::Arg(a) if matches!(env.inputs[a], Input::Int(_)) => OpArg::Int(env.int(l)),
                    _ => OpArg::Float(env.float(l)),
                })
                .collect();
            let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            let o = match out {
                Loc::F(_) => OpOut::Float(out_f(f_out, *out)?.as_mut_slice()),
                Loc::I(j) => OpOut::Int(
                    i_out
                        .iter_mut()
                        .find(|(x, _)| x == j)
                        .map(|(_, v)| v.as_mut_slice())
                        .ok_or("internal: output not taken")?,
                ),
                _ => return Err("internal: a fallback writes a selection".into()),
            };
            eval_op(op, &shapes, out_shape, &args, o, cx.op_scratch)?;
        }
    }
    Ok(())
}
