//! The reference interpreter: executes any function of any IR stage in plain Rust. It is the
//! oracle that the JIT, every rewrite and every structural pass are tested against, so it favours
//! obvious correctness, then speed.
//!
//! ```ignore
//! let mut state = State::<f32>::initial(&module);
//! let mut interp = Interpreter::<f32>::new(&module, "train_step")?;
//! let outputs = interp.run(&mut state, &[Input::Float(&images), Input::Int(&labels)])?;
//! ```
//!
//! # Semantics
//!
//! - `param @p` reads `state.values[p]` as it was when [`Interpreter::run`] was called. `store @p,
//!   %v` yields `%v`; all stores are written to the state after the whole function has run (and
//!   only if it ran without error), so every `param` read in a call sees the old value.
//! - The same code serves `f32` (training) and `f64` (gradient checks). Arithmetic is done in `T`
//!   itself, one IEEE operation at a time, never fused (no FMA) and never widened, except the
//!   one documented place: `softmax_xent` sums the per-example losses in `f64` and rounds the mean
//!   to `T` once.
//! - Results are deterministic: every reduction has a fixed order, independent of the CPU.
//!   Matrix products (and the convolutions, which are im2col + the same product) add the
//!   products `a[i][k]·b[k][j]` one at a time in ascending `k` starting from 0 (see `gemm.rs`);
//!   `reduce_sum` adds in row-major input order from 0; `softmax_xent` sums `exp` in column order.
//! - Elementwise: `relu(x) = if x <= 0 { 0 } else { x }` (NaN propagates, `-0` becomes `+0`);
//!   `relu_grad(dy, x) = if x > 0 { dy } else { 0 }` (a select, as PyTorch: not a product);
//!   `tanh_grad(dy, y) = dy · (1 − y·y)`; `sigmoid(x) = 1 / (1 + exp(−x))`;
//!   `sigmoid_grad(dy, y) = (dy · y) · (1 − y)`; `scale(x, s) = x · s`.
//! - Maxima (`maxpool2d`, its gradient, `argmax`, the softmax row maximum) are "first maximum":
//!   elements are scanned in row-major order and a later one wins only when strictly greater.
//!   `maxpool2d_grad` sends each window's `dy` to that element; overlapping windows add up.
//! - `avgpool2d` sums the window in row-major order and divides by `kh·kw`; its gradient adds
//!   `dy / (kh·kw)` to every element of every window containing it.
//! - `softmax_xent`: per row `ln(Σ_j exp(x_j − max)) − (x_label − max)`, mean over the batch
//!   (see above). `softmax_xent_grad`: `(exp(x_j − max) / Σ − [j = label]) / B`. A label outside
//!   `0..C` is an [`InterpError`].
//!
//! # Performance
//!
//! [`Interpreter::new`] resolves every shape and allocates one buffer per instruction result
//! (`reshape`, `param` and most `store`s alias their operand instead); [`Interpreter::run`]
//! allocates nothing but the returned outputs once the scratch buffers have grown on the first
//! call.
//!
//! Of the non-dense encodings only selections (`i32[N]{sparse K}`, from `topk_select` and
//! `tracked_set`) are executed: they are held as their sorted positions. Other encoded values
//! (`{regen}`, sparse floats) are rejected by [`Interpreter::new`].
//!
//! # Tracked parameters (Dropback)
//!
//! The [`State`] keeps a tracked parameter as its stored entries only. In a run, the first use
//! of such a parameter regenerates its initial value `w0` (times `state.init_scale`) into a
//! scratch buffer, which `param` (w0 with the entries written over it), `dropback_score`
//! (`|w1 − w0|`, `−0` as `+0`), `dropback_apply` and the final `store` (keep the entries that
//! differ bitwise from `w0`, at most the parameter's budget) share. `topk_select` orders scores
//! as described at [`topk_select`]. The scratch buffers belong to the [`Interpreter`]; only the
//! state persists between steps.

mod eval_op;
mod float;
mod gemm;
mod gemm_api;
mod kernels;
mod plain;
mod state;
mod topk;

use std::fmt;

pub use eval_op::{eval_op, OpArg, OpOut, OpScratch};
pub use float::Float;
pub use kernels::{ConvGeom, PoolGeom};
use plain::Plain;
pub use plain::{conv_geom, pool_geom};
use state::diff_entries;
pub use state::{initial_value, is_tracked, module_seed, State, TrackedValues};
pub use topk::topk_select;

use crate::module::{Module, Value};
use crate::op::Op;
use crate::regen;
use crate::types::{DType, Encoding, Type};
use crate::verify::MAX_RANK;
use gemm::GemmScratch;
pub use gemm::{uses_library, GEMM_PANEL, LIBRARY_MIN_WORK};
pub use gemm_api::{gemm_f32, gemm_f32_panels, matmul_columns_f32};

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// One function argument; its shape comes from the function's signature (the length is checked).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a, T> {
    Float(&'a [T]),
    Int(&'a [i32]),
}

/// One function result.
#[derive(Clone, Debug, PartialEq)]
pub enum Output<T> {
    Float(Tensor<T>),
    Int(Tensor<i32>),
    /// A sparse selection mask (`i32[N]{sparse K}`): its sorted selected positions.
    Sparse {
        shape: Vec<usize>,
        indices: Vec<u32>,
    },
}

impl<T> Output<T> {
    /// The float tensor, or `None` for an `i32` result.
    pub fn as_float(&self) -> Option<&Tensor<T>> {
        match self {
            Output::Float(t) => Some(t),
            _ => None,
        }
    }

    /// The `i32` tensor, or `None` for a float result.
    pub fn as_int(&self) -> Option<&Tensor<i32>> {
        match self {
            Output::Int(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_float(self) -> Option<Tensor<T>> {
        match self {
            Output::Float(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_int(self) -> Option<Tensor<i32>> {
        match self {
            Output::Int(t) => Some(t),
            _ => None,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Output::Float(t) => &t.shape,
            Output::Int(t) => &t.shape,
            Output::Sparse { shape, .. } => shape,
        }
    }
}

/// Why a function cannot be prepared or run. Never a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterpError {
    pub message: String,
}

impl InterpError {
    fn new(message: impl Into<String>) -> InterpError {
        InterpError {
            message: message.into(),
        }
    }
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// The function argument's input slice.
    Arg(usize),
    /// The parameter's buffer in the state.
    Param(usize),
    /// A float buffer owned by the interpreter.
    F(usize),
    /// An `i32` buffer owned by the interpreter.
    I(usize),
    /// A sparse selection (sorted positions) owned by the interpreter.
    S(usize),
}

#[derive(Clone, Debug)]
enum Kernel {
    /// Copy the operand (a `store` whose operand is a parameter read: the old value must survive
    /// the other stores).
    Copy,
    /// An operation on its operands alone (the one dispatch [`eval_op`] shares).
    Plain(Plain),
    /// Regenerate a tracked parameter's initial value (times the state's `init_scale`).
    Regen {
        init: crate::module::Init,
        stream: u64,
    },
    /// `w0` (operand 0) with the parameter's stored entries written over it.
    Overlay {
        param: usize,
    },
    /// The stored entries of a tracked parameter at their positions, zero elsewhere.
    TrackedValues {
        param: usize,
    },
    /// Stored entry minus `w0` (operand 0) at the tracked positions, zero elsewhere.
    Correction {
        param: usize,
    },
    /// `|w1 − w0|` with operands `(w1, w0)`.
    DropbackScore,
    /// Operands `(w1, sel, w0)`.
    DropbackApply {
        offset: usize,
    },
    TopkSelect {
        k: usize,
    },
    TrackedSet {
        param: usize,
    },
}

#[derive(Clone, Debug)]
struct Step {
    /// Instruction index, for error messages.
    inst: usize,
    kernel: Kernel,
    operands: Vec<Loc>,
    out: Loc,
}

#[derive(Clone, Debug)]
struct ArgSpec {
    name: String,
    dtype: DType,
    len: usize,
}

/// A function prepared for repeated execution: shapes resolved, buffers allocated.
pub struct Interpreter<T> {
    func: String,
    args: Vec<ArgSpec>,
    /// Element count of every module parameter (the state must match).
    param_lens: Vec<usize>,
    param_names: Vec<String>,
    steps: Vec<Step>,
    results: Vec<(Loc, Vec<usize>, DType)>,
    /// `(parameter, value)` written to the state after a successful run.
    stores: Vec<(usize, Loc)>,
    /// Per parameter: tracked, with its capacity (the most entries a store may leave).
    capacity: Vec<Option<u64>>,
    /// Per tracked parameter: the buffer its regenerated initial value is written to in a run.
    w0: Vec<Option<Loc>>,
    seed: u64,
    fbufs: Vec<Vec<T>>,
    ibufs: Vec<Vec<i32>>,
    sbufs: Vec<Vec<u32>>,
    regen_scratch: Vec<f32>,
    topk_scratch: Vec<(u64, u32)>,
    cols: Vec<T>,
    gemm: GemmScratch<T>,
}

impl<T> fmt::Debug for Interpreter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interpreter")
            .field("func", &self.func)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl<T: Float> Interpreter<T> {
    /// Prepare function `func` of `m`. Checks what execution relies on (operands defined before
    /// use, every recorded type equal to `Op::infer` of its operands, dense encodings, at most
    /// one store per parameter), so a module that skipped the verifier gives an error, not a
    /// panic.
    pub fn new(m: &Module, func: &str) -> Result<Self, InterpError> {
        let f = m
            .func(func)
            .ok_or_else(|| InterpError::new(format!("no function @{func} in the module")))?;
        let ctx = |what: String| InterpError::new(format!("@{func} {what}"));
        let mut args = Vec::with_capacity(f.args.len());
        for a in &f.args {
            check_type(&a.ty).map_err(|e| ctx(format!("arg %{}: {e}", a.name)))?;
            args.push(ArgSpec {
                name: a.name.clone(),
                dtype: a.ty.dtype,
                len: a.ty.num_elements(),
            });
        }
        let mut interp = Interpreter {
            func: func.to_owned(),
            args,
            param_lens: m.params.iter().map(|p| p.ty.num_elements()).collect(),
            param_names: m.params.iter().map(|p| p.name.clone()).collect(),
            steps: Vec::new(),
            results: Vec::new(),
            stores: Vec::new(),
            capacity: m
                .params
                .iter()
                .map(|p| match p.storage {
                    crate::module::Storage::Tracked { budget } => Some(budget),
                    _ => None,
                })
                .collect(),
            w0: vec![None; m.params.len()],
            seed: module_seed(m),
            fbufs: Vec::new(),
            ibufs: Vec::new(),
            sbufs: Vec::new(),
            regen_scratch: Vec::new(),
            topk_scratch: Vec::new(),
            cols: Vec::new(),
            gemm: GemmScratch::default(),
        };
        let mut locs: Vec<Loc> = Vec::with_capacity(f.insts.len());
        let mut max_cols = 0usize;
        for (i, inst) in f.insts.iter().enumerate() {
            let here = |e: String| ctx(format!("%{i}: {e}"));
            let mut operands = Vec::with_capacity(inst.operands.len());
            let mut types: Vec<&Type> = Vec::with_capacity(inst.operands.len());
            for &v in &inst.operands {
                let (loc, ty) = match v {
                    Value::Arg(a) if (a as usize) < f.args.len() => {
                        (Loc::Arg(a as usize), &f.args[a as usize].ty)
                    }
                    Value::Inst(j) if (j as usize) < i => {
                        (locs[j as usize], &f.insts[j as usize].ty)
                    }
                    _ => return Err(here(format!("operand {v:?} is not defined before use"))),
                };
                operands.push(loc);
                types.push(ty);
            }
            let inferred = inst.op.infer(&types, &m.params).map_err(&here)?;
            if inferred != inst.ty {
                return Err(here(format!(
                    "`{}` produces {inferred}, but the instruction says {}",
                    inst.op.name(),
                    inst.ty
                )));
            }
            check_value_type(&inst.ty).map_err(&here)?;
            for t in &types {
                check_value_type(t).map_err(&here)?;
            }
            let out_shape = inst.ty.shape.as_slice();
            let kernel = match &inst.op {
                Op::Param(id) if interp.capacity[id.0 as usize].is_some() => {
                    let p = id.0 as usize;
                    let w0 = interp.w0_of(m, p, i);
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::Overlay { param: p },
                        operands: vec![w0],
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Param(id) => {
                    locs.push(Loc::Param(id.0 as usize));
                    continue;
                }
                Op::DropbackScore(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    operands.push(w0);
                    Kernel::DropbackScore
                }
                // The optimised forms run as the plain computation they stand for, with the
                // same kernels in the same order, so they agree bit for bit with the program
                // before optimisation (the distributed products excepted: they round
                // differently by design).
                Op::Regen(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    locs.push(w0);
                    continue;
                }
                Op::Tracked(id) => {
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::TrackedValues {
                            param: id.0 as usize,
                        },
                        operands: Vec::new(),
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Correction(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::Correction {
                            param: id.0 as usize,
                        },
                        operands: vec![w0],
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Overlay => {
                    // The reference keeps tracked values in the state, so the sparse operand
                    // must be `tracked @p` itself.
                    let p = match inst.operands[1] {
                        Value::Inst(j) => match f.insts[j as usize].op {
                            Op::Tracked(p) => p.0 as usize,
                            _ => {
                                return Err(here(
                                    "`overlay` needs `tracked @p` as its second operand".into(),
                                ))
                            }
                        },
                        Value::Arg(_) => {
                            return Err(here(
                                "`overlay` needs `tracked @p` as its second operand".into(),
                            ))
                        }
                    };
                    let out = interp.effective_weight(m, p, i);
                    locs.push(out);
                    continue;
                }
                Op::MatMulNtWeight(id) | Op::MatMulWeight(id) => {
                    let w = interp.effective_weight(m, id.0 as usize, i);
                    let wshape = &m.params[id.0 as usize].ty.shape;
                    operands.push(w);
                    let nt = matches!(inst.op, Op::MatMulNtWeight(_));
                    Kernel::Plain(Plain::MatMul {
                        m: out_shape[0],
                        n: out_shape[1],
                        k: if nt { wshape[1] } else { wshape[0] },
                        ta: false,
                        tb: nt,
                    })
                }
                Op::DropbackScoreSgd(id) => {
                    let p = id.0 as usize;
                    let w1 = interp.sgd_result(m, p, i, &operands, types[0].shape[0]);
                    let w0 = interp.w0_of(m, p, i);
                    operands = vec![w1, w0];
                    Kernel::DropbackScore
                }
                Op::DropbackApplySgd { param, offset } => {
                    let p = param.0 as usize;
                    let w1 = interp.sgd_result(m, p, i, &operands, types[0].shape[0]);
                    let w0 = interp.w0_of(m, p, i);
                    operands = vec![w1, operands[3], w0];
                    Kernel::DropbackApply {
                        offset: *offset as usize,
                    }
                }
                Op::DropbackApply { param, offset } => {
                    let w0 = interp.w0_of(m, param.0 as usize, i);
                    operands.push(w0);
                    Kernel::DropbackApply {
                        offset: *offset as usize,
                    }
                }
                Op::TopkSelect { k } => Kernel::TopkSelect {
                    k: usize::try_from(*k).unwrap_or(usize::MAX),
                },
                Op::TrackedSet(id) => Kernel::TrackedSet {
                    param: id.0 as usize,
                },
                Op::Const { value, .. } => {
                    let loc = interp.alloc_float(inst.ty.num_elements());
                    if let Loc::F(j) = loc {
                        interp.fbufs[j].fill(T::from_f32(*value));
                    }
                    locs.push(loc);
                    continue;
                }
                Op::Reshape { .. } => {
                    locs.push(operands[0]);
                    continue;
                }
                Op::Store(id) => {
                    let p = id.0 as usize;
                    if interp.stores.iter().any(|&(q, _)| q == p) {
                        return Err(here(format!("a second store to @{}", m.params[p].name)));
                    }
                    if interp.capacity[p].is_some() {
                        // A tracked parameter keeps what differs from w0 (compared at the end).
                        interp.w0_of(m, p, i);
                    }
                    let loc = match operands[0] {
                        Loc::Param(_) => {
                            let out = interp.alloc_float(inst.ty.num_elements());
                            interp.steps.push(Step {
                                inst: i,
                                kernel: Kernel::Copy,
                                operands,
                                out,
                            });
                            out
                        }
                        other => other,
                    };
                    interp.stores.push((p, loc));
                    locs.push(loc);
                    continue;
                }
                op => {
                    let shapes: Vec<&[usize]> = types.iter().map(|t| t.shape.as_slice()).collect();
                    let plain = Plain::prepare(op, &shapes, out_shape)
                        .ok_or_else(|| here(format!("`{}` has no reference kernel", op.name())))?;
                    max_cols = max_cols.max(plain.cols_needed());
                    Kernel::Plain(plain)
                }
            };
            let out = match (inst.ty.dtype, inst.ty.is_dense()) {
                (_, false) => {
                    interp.sbufs.push(Vec::new());
                    Loc::S(interp.sbufs.len() - 1)
                }
                (DType::F32, true) => interp.alloc_float(inst.ty.num_elements()),
                (DType::I32, true) => interp.alloc_int(inst.ty.num_elements()),
            };
            interp.steps.push(Step {
                inst: i,
                kernel,
                operands,
                out,
            });
            locs.push(out);
        }
        for (r, &v) in f.results.iter().enumerate() {
            let loc = match v {
                Value::Arg(a) if (a as usize) < f.args.len() => Loc::Arg(a as usize),
                Value::Inst(j) if (j as usize) < f.insts.len() => locs[j as usize],
                _ => return Err(ctx(format!("result {r} ({v:?}) is not defined"))),
            };
            let ty = f.value_type(v);
            check_value_type(ty).map_err(|e| ctx(format!("result {r}: {e}")))?;
            interp.results.push((loc, ty.shape.clone(), ty.dtype));
        }
        interp.cols = vec![T::zero(); max_cols];
        Ok(interp)
    }

    /// The buffer holding tracked parameter `p`'s initial value during a run, regenerated by a
    /// step placed before its first use (instruction `inst`).
    fn w0_of(&mut self, m: &Module, p: usize, inst: usize) -> Loc {
        if let Some(loc) = self.w0[p] {
            return loc;
        }
        let param = &m.params[p];
        let out = self.alloc_float(param.ty.num_elements());
        self.steps.push(Step {
            inst,
            kernel: Kernel::Regen {
                init: param.init,
                stream: param.stream,
            },
            operands: Vec::new(),
            out,
        });
        self.w0[p] = Some(out);
        out
    }

    /// A buffer with the effective (dense) value of tracked parameter `p`: `w0` overlaid with
    /// its stored entries.
    fn effective_weight(&mut self, m: &Module, p: usize, inst: usize) -> Loc {
        let w0 = self.w0_of(m, p, inst);
        let out = self.alloc_float(m.params[p].ty.num_elements());
        self.steps.push(Step {
            inst,
            kernel: Kernel::Overlay { param: p },
            operands: vec![w0],
            out,
        });
        out
    }

    /// `W − lr · dyᵀx` for tracked parameter `p` with operands `(dy, x, lr, ...)` and batch
    /// `batch`: the SGD result the fused Dropback ops stand for, computed as autodiff writes it
    /// (`matmul_tn`, `scale`, `sub`).
    fn sgd_result(
        &mut self,
        m: &Module,
        p: usize,
        inst: usize,
        operands: &[Loc],
        batch: usize,
    ) -> Loc {
        let shape = m.params[p].ty.shape.clone();
        let len = m.params[p].ty.num_elements();
        let w = self.effective_weight(m, p, inst);
        let grad = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::MatMul {
                m: shape[0],
                n: shape[1],
                k: batch,
                ta: true,
                tb: false,
            }),
            operands: vec![operands[0], operands[1]],
            out: grad,
        });
        let step = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::Scale),
            operands: vec![grad, operands[2]],
            out: step,
        });
        let w1 = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::Sub),
            operands: vec![w, step],
            out: w1,
        });
        w1
    }

    fn alloc_float(&mut self, len: usize) -> Loc {
        self.fbufs.push(vec![T::zero(); len]);
        Loc::F(self.fbufs.len() - 1)
    }

    fn alloc_int(&mut self, len: usize) -> Loc {
        self.ibufs.push(vec![0; len]);
        Loc::I(self.ibufs.len() - 1)
    }

    /// The prepared function's name.
    pub fn func_name(&self) -> &str {
        &self.func
    }

    /// Run the function once on `inputs` (one per argument, in order). Parameters are read from
    /// `state`; the function's stores are written to it after the whole function has run, and
    /// only when it succeeded. Returns the function's results in order.
    ///
    /// A store to a tracked parameter keeps the entries of the stored value that differ
    /// (bitwise) from the parameter's initial value in this run (`init_scale` included); more
    /// than the parameter's capacity is an error and leaves the state unchanged.
    pub fn run(
        &mut self,
        state: &mut State<T>,
        inputs: &[Input<'_, T>],
    ) -> Result<Vec<Output<T>>, InterpError> {
        self.check_call(state, inputs)?;
        let Interpreter {
            func,
            steps,
            fbufs,
            ibufs,
            sbufs,
            cols,
            gemm,
            results,
            stores,
            capacity,
            w0,
            seed,
            regen_scratch,
            topk_scratch,
            param_names,
            ..
        } = self;
        let params = &state.values[..];
        let tracked = &state.tracked[..];
        let regen = RegenCx {
            seed: *seed,
            scale: state.init_scale,
        };
        for step in steps.iter() {
            let r = match step.out {
                Loc::F(j) => {
                    let mut out = std::mem::take(&mut fbufs[j]);
                    let env = Env {
                        inputs,
                        params,
                        tracked,
                        fbufs,
                        ibufs,
                        sbufs,
                    };
                    let r = exec_float(step, &env, &mut out, cols, gemm, regen, regen_scratch);
                    fbufs[j] = out;
                    r
                }
                Loc::I(j) => {
                    let mut out = std::mem::take(&mut ibufs[j]);
                    let env = Env {
                        inputs,
                        params,
                        tracked,
                        fbufs,
                        ibufs,
                        sbufs,
                    };
                    let r = exec_int(step, &env, &mut out);
                    ibufs[j] = out;
                    r
                }
                Loc::S(j) => {
                    let mut out = std::mem::take(&mut sbufs[j]);
                    let env = Env {
                        inputs,
                        params,
                        tracked,
                        fbufs,
                        ibufs,
                        sbufs,
                    };
                    exec_sparse(step, &env, &mut out, topk_scratch);
                    sbufs[j] = out;
                    Ok(())
                }
                Loc::Arg(_) | Loc::Param(_) => unreachable!("steps write interpreter buffers"),
            };
            r.map_err(|e| InterpError::new(format!("@{func} %{}: {e}", step.inst)))?;
        }
        let env = Env {
            inputs,
            params,
            tracked,
            fbufs,
            ibufs,
            sbufs,
        };
        let outputs = results
            .iter()
            .map(|(loc, shape, dtype)| match (loc, dtype) {
                (Loc::S(j), _) => Output::Sparse {
                    shape: shape.clone(),
                    indices: sbufs[*j].clone(),
                },
                (_, DType::I32) => Output::Int(Tensor {
                    shape: shape.clone(),
                    data: env.int(*loc).to_vec(),
                }),
                (_, DType::F32) => Output::Float(Tensor {
                    shape: shape.clone(),
                    data: env.float(*loc).to_vec(),
                }),
            })
            .collect();
        // Tracked stores first, into new entry lists, so that one over its capacity leaves the
        // state untouched.
        let mut new_tracked = Vec::new();
        for &(p, loc) in stores.iter() {
            if let (Some(cap), Some(w0)) = (capacity[p], w0[p]) {
                let entries = diff_entries(env.float(loc), env.float(w0));
                if entries.len() as u64 > cap {
                    return Err(InterpError::new(format!(
                        "@{func}: the store to the tracked @{} leaves {} values differing from \
                         its initial value, more than its budget of {cap}",
                        param_names[p],
                        entries.len()
                    )));
                }
                new_tracked.push((p, entries));
            }
        }
        // Stores last. No store reads a parameter buffer (those were copied), so the order of
        // the writes does not matter.
        for &(p, loc) in stores.iter() {
            if capacity[p].is_some() {
                continue;
            }
            let src: &[T] = match loc {
                Loc::Arg(a) => match inputs[a] {
                    Input::Float(s) => s,
                    Input::Int(_) => unreachable!("stores are f32"),
                },
                Loc::F(j) => &fbufs[j],
                Loc::Param(_) | Loc::I(_) | Loc::S(_) => {
                    unreachable!("stores of params are copied")
                }
            };
            state.values[p].copy_from_slice(src);
        }
        for (p, entries) in new_tracked {
            state.tracked[p] = Some(entries);
        }
        Ok(outputs)
    }

    fn check_call(&self, state: &State<T>, inputs: &[Input<'_, T>]) -> Result<(), InterpError> {
        let func = &self.func;
        if inputs.len() != self.args.len() {
            return Err(InterpError::new(format!(
                "@{func} takes {} argument(s), got {}",
                self.args.len(),
                inputs.len()
            )));
        }
        for (a, input) in self.args.iter().zip(inputs) {
            let (dtype, len) = match input {
                Input::Float(s) => (DType::F32, s.len()),
                Input::Int(s) => (DType::I32, s.len()),
            };
            if dtype != a.dtype {
                return Err(InterpError::new(format!(
                    "@{func} argument %{} is {}, got {} data",
                    a.name,
                    a.dtype.name(),
                    dtype.name()
                )));
            }
            if len != a.len {
                return Err(InterpError::new(format!(
                    "@{func} argument %{} has {} element(s), got {len}",
                    a.name, a.len
                )));
            }
        }
        if state.values.len() != self.param_lens.len()
            || state.tracked.len() != self.param_lens.len()
        {
            return Err(InterpError::new(format!(
                "the state holds {} parameter(s), the module has {}",
                state.values.len(),
                self.param_lens.len()
            )));
        }
        for (p, ((v, &len), name)) in state
            .values
            .iter()
            .zip(&self.param_lens)
            .zip(&self.param_names)
            .enumerate()
        {
            match (&state.tracked[p], self.capacity[p]) {
                (None, None) if v.len() != len => {
                    return Err(InterpError::new(format!(
                        "the state's @{name} has {} element(s), the parameter has {len}",
                        v.len()
                    )));
                }
                (None, None) => {}
                (Some(t), Some(_)) => {
                    let sorted = t.indices.windows(2).all(|w| w[0] < w[1]);
                    let in_range = t.indices.last().is_none_or(|&i| (i as usize) < len);
                    if t.indices.len() != t.values.len() || !sorted || !in_range {
                        return Err(InterpError::new(format!(
                            "the state's tracked @{name} needs as many values as sorted, \
                             distinct indices below {len}"
                        )));
                    }
                }
                (None, Some(_)) => {
                    return Err(InterpError::new(format!(
                        "the state holds @{name} densely, but the parameter is tracked"
                    )))
                }
                (Some(_), None) => {
                    return Err(InterpError::new(format!(
                        "the state holds @{name} as tracked, but the parameter is not"
                    )))
                }
            }
        }
        if !state.init_scale.is_finite() {
            return Err(InterpError::new(format!(
                "the state's init_scale {} is not finite",
                state.init_scale
            )));
        }
        Ok(())
    }
}

/// What the interpreter executes: dense values of bounded rank, and selections
/// (`i32[N]{sparse K}`).
fn check_value_type(t: &Type) -> Result<(), String> {
    match t.encoding {
        Encoding::Dense => {}
        Encoding::Sparse { .. } if t.dtype == DType::I32 && t.rank() == 1 => {}
        // Regenerated and sparse weights are held densely by the reference interpreter.
        Encoding::Regen | Encoding::Sparse { .. } if t.dtype == DType::F32 => {}
        _ => {
            return Err(format!(
                "the interpreter does not execute this encoded value ({t})"
            ))
        }
    }
    check_type_limits(t)
}

/// What arguments may be: dense values of bounded rank.
fn check_type(t: &Type) -> Result<(), String> {
    if !t.is_dense() {
        return Err(format!(
            "the interpreter does not execute encoded values yet ({t})"
        ));
    }
    check_type_limits(t)
}

fn check_type_limits(t: &Type) -> Result<(), String> {
    if t.rank() > MAX_RANK {
        return Err(format!("{t} has rank above {MAX_RANK}"));
    }
    crate::op::checked_type(t.dtype, t.shape.clone()).map(|_| ())
}

/// What regenerating a tracked parameter's initial value needs besides the parameter.
#[derive(Clone, Copy)]
struct RegenCx {
    seed: u64,
    scale: f32,
}

/// Read access to every value during a step.
struct Env<'r, T> {
    inputs: &'r [Input<'r, T>],
    params: &'r [Vec<T>],
    tracked: &'r [Option<TrackedValues<T>>],
    fbufs: &'r [Vec<T>],
    ibufs: &'r [Vec<i32>],
    sbufs: &'r [Vec<u32>],
}

impl<'r, T> Env<'r, T> {
    fn float(&self, loc: Loc) -> &'r [T] {
        match loc {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Float(s) => s,
                Input::Int(_) => unreachable!("argument types are checked"),
            },
            Loc::Param(p) => &self.params[p],
            Loc::F(j) => &self.fbufs[j],
            Loc::I(_) | Loc::S(_) => unreachable!("operand types are checked"),
        }
    }

    fn int(&self, loc: Loc) -> &'r [i32] {
        match loc {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Int(s) => s,
                Input::Float(_) => unreachable!("argument types are checked"),
            },
            Loc::I(j) => &self.ibufs[j],
            Loc::Param(_) | Loc::F(_) | Loc::S(_) => unreachable!("operand types are checked"),
        }
    }

    fn sparse(&self, loc: Loc) -> &'r [u32] {
        match loc {
            Loc::S(j) => &self.sbufs[j],
            _ => unreachable!("operand types are checked"),
        }
    }
}

fn exec_float<T: Float>(
    step: &Step,
    env: &Env<'_, T>,
    out: &mut [T],
    cols: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
    regen: RegenCx,
    regen_scratch: &mut Vec<f32>,
) -> Result<(), String> {
    let x = |i: usize| env.float(step.operands[i]);
    match &step.kernel {
        Kernel::Copy => out.copy_from_slice(x(0)),
        &Kernel::Regen { init, stream } => {
            regen_scratch.clear();
            regen_scratch.resize(out.len(), 0.0);
            if let crate::module::Init::Uniform { lo, hi } = init {
                regen::fill_uniform(regen.seed, stream, lo, hi, regen_scratch);
            }
            for (o, &w) in out.iter_mut().zip(regen_scratch.iter()) {
                *o = T::from_f32(w * regen.scale);
            }
        }
        &Kernel::TrackedValues { param } => {
            out.fill(T::zero());
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v;
                }
            }
        }
        &Kernel::Correction { param } => {
            out.fill(T::zero());
            let w0 = x(0);
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v - w0[i as usize];
                }
            }
        }
        &Kernel::Overlay { param } => {
            out.copy_from_slice(x(0));
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v;
                }
            }
        }
        Kernel::DropbackScore => kernels::map2(x(0), x(1), out, |a, b| {
            let d = a - b;
            // |d| with −0 mapped to +0.
            if d < T::zero() {
                -d
            } else {
                d + T::zero()
            }
        }),
        &Kernel::DropbackApply { offset } => {
            let (w1, w0) = (x(0), x(2));
            out.copy_from_slice(w0);
            let sel = env.sparse(step.operands[1]);
            let lo = sel.partition_point(|&i| (i as usize) < offset);
            let hi = sel.partition_point(|&i| (i as usize) < offset + out.len());
            for &i in &sel[lo..hi] {
                let j = i as usize - offset;
                out[j] = w1[j];
            }
        }
        Kernel::Plain(plain) => plain.run(
            |i| Ok(env.float(step.operands[i])),
            |i| Ok(env.int(step.operands[i])),
            out,
            cols,
            gs,
        )?,
        Kernel::TopkSelect { .. } | Kernel::TrackedSet { .. } => {
            unreachable!("{:?} does not produce f32", step.kernel)
        }
    }
    Ok(())
}

fn exec_sparse<T: Float>(
    step: &Step,
    env: &Env<'_, T>,
    out: &mut Vec<u32>,
    scratch: &mut Vec<(u64, u32)>,
) {
    match &step.kernel {
        &Kernel::TopkSelect { k } => {
            let scores: Vec<&[T]> = step.operands.iter().map(|&l| env.float(l)).collect();
            topk_select(&scores, k, scratch, out);
        }
        &Kernel::TrackedSet { param } => {
            out.clear();
            if let Some(t) = &env.tracked[param] {
                out.extend_from_slice(&t.indices);
            }
        }
        other => unreachable!("{other:?} does not produce a selection"),
    }
}

fn exec_int<T: Float>(step: &Step, env: &Env<'_, T>, out: &mut [i32]) -> Result<(), String> {
    match &step.kernel {
        Kernel::Plain(plain) => plain.run_int(env.float(step.operands[0]), out),
        other => unreachable!("{other:?} produces f32"),
    }
}
