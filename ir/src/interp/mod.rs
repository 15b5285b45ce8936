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
//! Values with a non-dense encoding (`{regen}`, `{sparse N}`) are not supported yet and are
//! rejected by [`Interpreter::new`].

mod float;
mod gemm;
mod kernels;

use std::fmt;

pub use float::Float;

use crate::module::{Module, Value};
use crate::op::Op;
use crate::regen;
use crate::types::{DType, Type};
use crate::verify::MAX_RANK;
use gemm::{gemm, GemmScratch, View};
use kernels::{ConvGeom, PoolGeom, ReducePlan};

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
}

impl<T> Output<T> {
    /// The float tensor, or `None` for an `i32` result.
    pub fn as_float(&self) -> Option<&Tensor<T>> {
        match self {
            Output::Float(t) => Some(t),
            Output::Int(_) => None,
        }
    }

    /// The `i32` tensor, or `None` for a float result.
    pub fn as_int(&self) -> Option<&Tensor<i32>> {
        match self {
            Output::Int(t) => Some(t),
            Output::Float(_) => None,
        }
    }

    pub fn into_float(self) -> Option<Tensor<T>> {
        match self {
            Output::Float(t) => Some(t),
            Output::Int(_) => None,
        }
    }

    pub fn into_int(self) -> Option<Tensor<i32>> {
        match self {
            Output::Int(t) => Some(t),
            Output::Float(_) => None,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Output::Float(t) => &t.shape,
            Output::Int(t) => &t.shape,
        }
    }
}

/// The values of a module's parameters: one row-major buffer (PyTorch layout) per parameter, by
/// `ParamId` index.
#[derive(Clone, Debug, PartialEq)]
pub struct State<T> {
    pub values: Vec<Vec<T>>,
}

impl<T: Float> State<T> {
    /// Every parameter's `Init` evaluated with the regeneration spec
    /// ([`regen::init_values`]) under the module's seed (`train.seed`, 0 without a training
    /// spec) and the parameter's stream, converted from `f32`.
    pub fn initial(m: &Module) -> State<T> {
        let seed = m.train.as_ref().map_or(0, |t| t.seed);
        let values = m
            .params
            .iter()
            .map(|p| {
                regen::init_values(p.init, seed, p.stream, p.ty.num_elements())
                    .into_iter()
                    .map(T::from_f32)
                    .collect()
            })
            .collect();
        State { values }
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
}

#[derive(Clone, Debug)]
enum Kernel {
    /// Copy the operand (a `store` whose operand is a parameter read: the old value must survive
    /// the other stores).
    Copy,
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
    },
    BiasAdd {
        inner: usize,
    },
    Add,
    Sub,
    Mul,
    Scale,
    Relu,
    Tanh,
    Sigmoid,
    ReluGrad,
    TanhGrad,
    SigmoidGrad,
    Conv2d(ConvGeom),
    Conv2dInputGrad(ConvGeom),
    Conv2dWeightGrad(ConvGeom),
    MaxPool2d(PoolGeom),
    MaxPool2dGrad(PoolGeom),
    AvgPool2d(PoolGeom),
    AvgPool2dGrad(PoolGeom),
    ReduceSum(ReducePlan),
    SoftmaxXent {
        classes: usize,
    },
    SoftmaxXentGrad {
        classes: usize,
    },
    Argmax {
        classes: usize,
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
    fbufs: Vec<Vec<T>>,
    ibufs: Vec<Vec<i32>>,
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

fn conv_geom(
    x: &[usize],
    w_o: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    out: [usize; 2],
) -> ConvGeom {
    ConvGeom {
        b: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        o: w_o,
        kh: kernel[0],
        kw: kernel[1],
        sh: stride[0],
        sw: stride[1],
        ph: padding[0],
        pw: padding[1],
        oh: out[0],
        ow: out[1],
    }
}

fn pool_geom(x: &[usize], kernel: [usize; 2], stride: [usize; 2], out: [usize; 2]) -> PoolGeom {
    PoolGeom {
        h: x[2],
        w: x[3],
        kh: kernel[0],
        kw: kernel[1],
        sh: stride[0],
        sw: stride[1],
        oh: out[0],
        ow: out[1],
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
            fbufs: Vec::new(),
            ibufs: Vec::new(),
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
            check_type(&inst.ty).map_err(&here)?;
            for t in &types {
                check_type(t).map_err(&here)?;
            }
            let shape = |k: usize| types[k].shape.as_slice();
            let out_shape = inst.ty.shape.as_slice();
            let kernel = match &inst.op {
                Op::Param(id) => {
                    locs.push(Loc::Param(id.0 as usize));
                    continue;
                }
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
                Op::MatMul { ta, tb } => {
                    let a = shape(0);
                    Kernel::MatMul {
                        m: out_shape[0],
                        n: out_shape[1],
                        k: if *ta { a[0] } else { a[1] },
                        ta: *ta,
                        tb: *tb,
                    }
                }
                Op::BiasAdd => Kernel::BiasAdd {
                    inner: shape(0)[2..].iter().product(),
                },
                Op::Add => Kernel::Add,
                Op::Sub => Kernel::Sub,
                Op::Mul => Kernel::Mul,
                Op::Scale => Kernel::Scale,
                Op::Relu => Kernel::Relu,
                Op::Tanh => Kernel::Tanh,
                Op::Sigmoid => Kernel::Sigmoid,
                Op::ReluGrad => Kernel::ReluGrad,
                Op::TanhGrad => Kernel::TanhGrad,
                Op::SigmoidGrad => Kernel::SigmoidGrad,
                Op::Conv2d { stride, padding } => {
                    let w = shape(1);
                    let g = conv_geom(
                        shape(0),
                        w[0],
                        [w[2], w[3]],
                        *stride,
                        *padding,
                        [out_shape[2], out_shape[3]],
                    );
                    max_cols = max_cols.max(g.ckk() * g.p());
                    Kernel::Conv2d(g)
                }
                Op::Conv2dInputGrad {
                    stride, padding, ..
                } => {
                    let (dy, w) = (shape(0), shape(1));
                    let g = conv_geom(
                        out_shape,
                        w[0],
                        [w[2], w[3]],
                        *stride,
                        *padding,
                        [dy[2], dy[3]],
                    );
                    max_cols = max_cols.max(g.ckk() * g.p());
                    Kernel::Conv2dInputGrad(g)
                }
                Op::Conv2dWeightGrad {
                    stride,
                    padding,
                    kernel,
                } => {
                    let dy = shape(1);
                    let g = conv_geom(shape(0), dy[1], *kernel, *stride, *padding, [dy[2], dy[3]]);
                    max_cols = max_cols.max(g.ckk() * g.p());
                    Kernel::Conv2dWeightGrad(g)
                }
                Op::MaxPool2d { kernel, stride } => Kernel::MaxPool2d(pool_geom(
                    shape(0),
                    *kernel,
                    *stride,
                    [out_shape[2], out_shape[3]],
                )),
                Op::AvgPool2d { kernel, stride } => Kernel::AvgPool2d(pool_geom(
                    shape(0),
                    *kernel,
                    *stride,
                    [out_shape[2], out_shape[3]],
                )),
                Op::MaxPool2dGrad { kernel, stride } => {
                    let dy = shape(0);
                    Kernel::MaxPool2dGrad(pool_geom(shape(1), *kernel, *stride, [dy[2], dy[3]]))
                }
                Op::AvgPool2dGrad {
                    kernel,
                    stride,
                    input,
                } => {
                    let dy = shape(0);
                    let x = [dy[0], dy[1], input[0], input[1]];
                    Kernel::AvgPool2dGrad(pool_geom(&x, *kernel, *stride, [dy[2], dy[3]]))
                }
                Op::ReduceSum { axes } => Kernel::ReduceSum(ReducePlan::new(shape(0), axes)),
                Op::SoftmaxXent => Kernel::SoftmaxXent {
                    classes: shape(0)[1],
                },
                Op::SoftmaxXentGrad => Kernel::SoftmaxXentGrad {
                    classes: shape(0)[1],
                },
                Op::Argmax => Kernel::Argmax {
                    classes: shape(0)[1],
                },
            };
            let out = match inst.ty.dtype {
                DType::F32 => interp.alloc_float(inst.ty.num_elements()),
                DType::I32 => interp.alloc_int(inst.ty.num_elements()),
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
            check_type(ty).map_err(|e| ctx(format!("result {r}: {e}")))?;
            interp.results.push((loc, ty.shape.clone(), ty.dtype));
        }
        interp.cols = vec![T::zero(); max_cols];
        Ok(interp)
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
            cols,
            gemm,
            results,
            stores,
            ..
        } = self;
        let params = &state.values[..];
        for step in steps.iter() {
            let r = match step.out {
                Loc::F(j) => {
                    let mut out = std::mem::take(&mut fbufs[j]);
                    let env = Env {
                        inputs,
                        params,
                        fbufs,
                        ibufs,
                    };
                    let r = exec_float(step, &env, &mut out, cols, gemm);
                    fbufs[j] = out;
                    r
                }
                Loc::I(j) => {
                    let mut out = std::mem::take(&mut ibufs[j]);
                    let env = Env {
                        inputs,
                        params,
                        fbufs,
                        ibufs,
                    };
                    exec_int(step, &env, &mut out);
                    ibufs[j] = out;
                    Ok(())
                }
                Loc::Arg(_) | Loc::Param(_) => unreachable!("steps write interpreter buffers"),
            };
            r.map_err(|e| InterpError::new(format!("@{func} %{}: {e}", step.inst)))?;
        }
        let env = Env {
            inputs,
            params,
            fbufs,
            ibufs,
        };
        let outputs = results
            .iter()
            .map(|(loc, shape, dtype)| match dtype {
                DType::I32 => Output::Int(Tensor {
                    shape: shape.clone(),
                    data: env.int(*loc).to_vec(),
                }),
                DType::F32 => Output::Float(Tensor {
                    shape: shape.clone(),
                    data: env.float(*loc).to_vec(),
                }),
            })
            .collect();
        // Stores last. No store reads a parameter buffer (those were copied), so the order of
        // the writes does not matter.
        for &(p, loc) in stores.iter() {
            let src: &[T] = match loc {
                Loc::Arg(a) => match inputs[a] {
                    Input::Float(s) => s,
                    Input::Int(_) => unreachable!("stores are f32"),
                },
                Loc::F(j) => &fbufs[j],
                Loc::Param(_) | Loc::I(_) => unreachable!("stores of params are copied"),
            };
            state.values[p].copy_from_slice(src);
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
        if state.values.len() != self.param_lens.len() {
            return Err(InterpError::new(format!(
                "the state holds {} parameter(s), the module has {}",
                state.values.len(),
                self.param_lens.len()
            )));
        }
        for ((v, &len), name) in state
            .values
            .iter()
            .zip(&self.param_lens)
            .zip(&self.param_names)
        {
            if v.len() != len {
                return Err(InterpError::new(format!(
                    "the state's @{name} has {} element(s), the parameter has {len}",
                    v.len()
                )));
            }
        }
        Ok(())
    }
}

/// What the interpreter executes: dense values of bounded rank.
fn check_type(t: &Type) -> Result<(), String> {
    if !t.is_dense() {
        return Err(format!(
            "the interpreter does not execute encoded values yet ({t})"
        ));
    }
    if t.rank() > MAX_RANK {
        return Err(format!("{t} has rank above {MAX_RANK}"));
    }
    crate::op::checked_type(t.dtype, t.shape.clone()).map(|_| ())
}

/// Read access to every value during a step.
struct Env<'r, T> {
    inputs: &'r [Input<'r, T>],
    params: &'r [Vec<T>],
    fbufs: &'r [Vec<T>],
    ibufs: &'r [Vec<i32>],
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
            Loc::I(_) => unreachable!("operand types are checked"),
        }
    }

    fn int(&self, loc: Loc) -> &'r [i32] {
        match loc {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Int(s) => s,
                Input::Float(_) => unreachable!("argument types are checked"),
            },
            Loc::I(j) => &self.ibufs[j],
            Loc::Param(_) | Loc::F(_) => unreachable!("operand types are checked"),
        }
    }
}

fn exec_float<T: Float>(
    step: &Step,
    env: &Env<'_, T>,
    out: &mut [T],
    cols: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
) -> Result<(), String> {
    let x = |i: usize| env.float(step.operands[i]);
    match &step.kernel {
        Kernel::Copy => out.copy_from_slice(x(0)),
        &Kernel::MatMul { m, n, k, ta, tb } => {
            let a = if ta {
                View::transposed(x(0), m)
            } else {
                View::rows(x(0), k)
            };
            let b = if tb {
                View::transposed(x(1), k)
            } else {
                View::rows(x(1), n)
            };
            gemm(m, n, k, a, b, out, n, false, gs);
        }
        &Kernel::BiasAdd { inner } => kernels::bias_add(x(0), x(1), inner, out),
        Kernel::Add => kernels::map2(x(0), x(1), out, |a, b| a + b),
        Kernel::Sub => kernels::map2(x(0), x(1), out, |a, b| a - b),
        Kernel::Mul => kernels::map2(x(0), x(1), out, |a, b| a * b),
        Kernel::Scale => {
            let s = x(1)[0];
            kernels::map1(x(0), out, |a| a * s);
        }
        Kernel::Relu => kernels::map1(x(0), out, |a| if a <= T::zero() { T::zero() } else { a }),
        Kernel::Tanh => kernels::map1(x(0), out, T::tanh),
        Kernel::Sigmoid => kernels::map1(x(0), out, |a| T::one() / (T::one() + (-a).exp())),
        Kernel::ReluGrad => {
            kernels::map2(
                x(0),
                x(1),
                out,
                |dy, v| {
                    if v > T::zero() {
                        dy
                    } else {
                        T::zero()
                    }
                },
            )
        }
        Kernel::TanhGrad => kernels::map2(x(0), x(1), out, |dy, y| dy * (T::one() - y * y)),
        Kernel::SigmoidGrad => kernels::map2(x(0), x(1), out, |dy, y| dy * y * (T::one() - y)),
        Kernel::Conv2d(g) => kernels::conv2d(x(0), x(1), g, out, cols, gs),
        Kernel::Conv2dInputGrad(g) => kernels::conv2d_input_grad(x(0), x(1), g, out, cols, gs),
        Kernel::Conv2dWeightGrad(g) => kernels::conv2d_weight_grad(x(0), x(1), g, out, cols, gs),
        Kernel::MaxPool2d(g) => kernels::maxpool2d(x(0), g, out),
        Kernel::MaxPool2dGrad(g) => kernels::maxpool2d_grad(x(0), x(1), g, out),
        Kernel::AvgPool2d(g) => kernels::avgpool2d(x(0), g, out),
        Kernel::AvgPool2dGrad(g) => kernels::avgpool2d_grad(x(0), g, out),
        Kernel::ReduceSum(plan) => kernels::reduce_sum(x(0), plan, out),
        &Kernel::SoftmaxXent { classes } => {
            let labels = env.int(step.operands[1]);
            kernels::check_labels(labels, classes)?;
            out[0] = kernels::softmax_xent(x(0), labels, classes);
        }
        &Kernel::SoftmaxXentGrad { classes } => {
            let labels = env.int(step.operands[1]);
            kernels::check_labels(labels, classes)?;
            kernels::softmax_xent_grad(x(0), labels, classes, out);
        }
        Kernel::Argmax { .. } => unreachable!("argmax produces i32"),
    }
    Ok(())
}

fn exec_int<T: Float>(step: &Step, env: &Env<'_, T>, out: &mut [i32]) {
    match &step.kernel {
        &Kernel::Argmax { classes } => kernels::argmax(env.float(step.operands[0]), classes, out),
        other => unreachable!("{other:?} produces f32"),
    }
}
