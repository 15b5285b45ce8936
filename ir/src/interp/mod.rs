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
//!
//! # Layout
//!
//! This file holds the public values (inputs, outputs, errors) and the shape of a prepared
//! function (`Interpreter`, its steps and where their values live), which `plan.rs` builds
//! ([`Interpreter::new`]) and `run.rs` executes ([`Interpreter::run`]). `state.rs` is what
//! persists between runs; `plain.rs` the one dispatch of the plain ops, which `fallback.rs`
//! ([`eval_op()`]) also serves to other backends; `kernels.rs` their kernels; `gemm.rs` the
//! matrix product and `gemm_api.rs` its entry points on raw slices; `topk.rs` the exact top-k
//! selection; `float.rs` the `f32`/`f64` abstraction.

mod fallback;
mod float;
mod gemm;
mod gemm_api;
mod kernels;
pub mod masked;
mod plain;
mod plan;
mod run;
mod state;
mod topk;

use std::fmt;

pub use fallback::{eval_op, OpArg, OpOut, OpScratch};
pub use float::Float;
pub use kernels::{ConvGeom, PoolGeom};
use plain::Plain;
pub use plain::{conv_geom, conv_geom_of, pool_geom, pool_geom_of};
pub use state::{initial_value, is_tracked, module_seed, State, TrackedValues, ZeroCounts};
pub use topk::{score_key, topk_among, topk_among_runs, topk_select, Chosen, StreamSelect, Tally};

use crate::types::DType;
use gemm::GemmScratch;
pub use gemm::{uses_library, GEMM_PANEL, LIBRARY_MIN_WORK};
pub use gemm_api::{conv2d_weight_grad_images_f32, gemm_f32, gemm_f32_panels, matmul_columns_f32};

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
        indices: Vec<u64>,
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
    /// The positions a mask (operand 0) keeps; exactly `nnz` of them.
    MaskIndex {
        nnz: usize,
    },
    /// A masked product: operands `(w, x, idx)` (`masked_matmul_nt`), `(w, dy, idx)`
    /// (`masked_matmul`) or `(dy, x, idx)` (`masked_grad`).
    Masked {
        kind: MaskedKind,
        dims: masked::MaskedDims,
    },
    /// A masked convolution: operands `(x, w, idx)`, `(dy, w, idx)` or `(x, dy, idx)`.
    MaskedConv {
        kind: masked::ConvKind,
        geom: ConvGeom,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MaskedKind {
    Nt,
    Nn,
    Grad,
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
    sbufs: Vec<Vec<u64>>,
    regen_scratch: Vec<f32>,
    topk_scratch: Vec<(u64, u64)>,
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
