//! The kernel IR: a function of the optimised graph (stage `opt`) as a sequence of fused
//! kernels over named buffers, between the graph and Cranelift ([`crate::partition`] builds it,
//! [`crate::runtime`] compiles and runs it). Printable (`sparsec emit --stage kernels`): one
//! kernel per block with its loops, its operations, its inputs and outputs, never an address.
//!
//! Every kernel is executed one of three ways ([`Exec`]):
//! - `jit`: a Cranelift function generated for this kernel (matrix products with their
//!   regeneration prologue and bias/relu epilogue, element-wise chains with `tanh`/`sigmoid`,
//!   column and channel reductions, regeneration, `bias_add`, softmax cross-entropy and its
//!   gradient, max pooling and its gradient, convolutions and their gradients (their products
//!   through the imported GEMM));
//! - `host`: a few lines of Rust in the runtime for data movement that is not arithmetic
//!   (writing tracked entries over a regenerated weight, copies, `dropback_apply`'s selection,
//!   `topk_select`, the barrier of a Dropback step);
//! - `interp`: the interpreter's own kernel for that one instruction
//!   (`sparsec_ir::interp::eval_op`), the documented fallback for what Cranelift does not do
//!   yet (average pooling and its gradient, `argmax`, `reduce_sum` over other axis patterns,
//!   `matmul_tt`, pooling windows over 64 elements).

use std::fmt;

use sparsec_ir::interp::masked::{ConvKind, MaskedDims};
use sparsec_ir::interp::ConvGeom;
use sparsec_ir::{DType, Op};

use crate::codegen::chain::ChainSpec;
use crate::codegen::conv::{ConvPass, ConvSpec};
use crate::codegen::gemm::{GemmSpec, Layout, GEMM_IMPORT, REGEN_BLOCK};
use crate::codegen::math::{EXP_IMPORT, LN_IMPORT};
use crate::codegen::pool::PoolSpec;
use crate::codegen::softmax::SoftmaxSpec;

/// A value of the kernel program: a function argument, a parameter's state buffer, or a
/// buffer the runtime owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    Arg(usize),
    Param(usize),
    /// A float buffer.
    F(usize),
    /// An `i32` buffer.
    I(usize),
    /// A selection (sorted positions).
    S(usize),
}

/// A runtime-owned buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The value it holds, as the dump names it (`%5`, `%24.w1`, `w0(@fc1.weight)`).
    pub name: String,
    pub dtype: DType,
    /// Elements; for a sparse buffer, the entries it can hold.
    pub len: usize,
    /// A `const`: filled once when the program is built.
    pub fill: Option<f32>,
    /// Entries, not elements: a selection (its positions, 64-bit, grown as it is made) or
    /// Dropback's new entries of a weight (their positions, and their values in the float slot
    /// of the same index).
    pub sparse: bool,
}

impl Buffer {
    /// The bytes it takes at most once allocated.
    pub fn bytes(&self) -> u64 {
        let len = self.len as u64;
        match (self.sparse, self.dtype) {
            (true, DType::F32) => len.saturating_mul(12),
            (true, DType::I32) => len.saturating_mul(8),
            (false, _) => len.saturating_mul(4),
        }
    }
}

/// The product `dyᵀ · x` (`dy: [k, m]`, `x: [k, n]`, the product `[m, n]`) that a chain reads as
/// its input 0: a weight's gradient feeding its update, never stored whole, so the weight is
/// read and written once a step. An outer product (`k = 1`, batch 1) is made where the chain
/// reads it (`0 + dy[r]·x[j]`, the interpreter's order for one term); a deeper one 64 columns at
/// a time into a scratch panel by the product's own library calls (the interpreter's
/// `matmul_tn`), the chain then running over that panel's rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChainProduct {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dy: Loc,
    pub x: Loc,
}

/// How a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exec {
    Jit,
    Host,
    Interp,
}

impl Exec {
    pub fn name(self) -> &'static str {
        match self {
            Exec::Jit => "jit",
            Exec::Host => "host",
            Exec::Interp => "interp",
        }
    }
}

/// What a kernel computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A matrix product `[m, n]` over `k`, with its prologue and epilogue. `b` is the dense
    /// right operand, or (`NtRegen`) absent: the tracked weight `regen` is regenerated and
    /// overlaid panel by panel. `outs` are the stored stages (product, biased, relu).
    Gemm {
        spec: GemmSpec,
        m: usize,
        n: usize,
        k: usize,
        a: Loc,
        b: Option<Loc>,
        regen: Option<usize>,
        bias: Option<Loc>,
        outs: [Option<Loc>; 3],
    },
    /// A fused element-wise chain over `len` elements. With a `product`, the chain's input 0
    /// is that product, made where the chain consumes it ([`ChainProduct`]), and `inputs` are
    /// its inputs 1 ..
    Chain {
        spec: ChainSpec,
        len: usize,
        product: Option<ChainProduct>,
        inputs: Vec<Loc>,
        scalars: Vec<Loc>,
        outputs: Vec<Loc>,
    },
    /// `reduce_sum` over the leading axes of `[rows, cols]`.
    ReduceRows {
        rows: usize,
        cols: usize,
        x: Loc,
        out: Loc,
    },
    /// `bias_add` of `[outer, channels, inner]`.
    BiasAdd {
        inner: usize,
        x: Loc,
        bias: Loc,
        out: Loc,
    },
    /// A tracked parameter's initial value times `init_scale`, regenerated.
    Regen { param: usize, out: Loc },
    /// A tracked parameter's effective value: `w0` with its stored entries written over it.
    Overlay { param: usize, w0: Loc, out: Loc },
    /// The stored entries at their positions, zero elsewhere (`tracked @p`).
    TrackedValues { param: usize, out: Loc },
    /// Entry minus `w0` at the stored positions, zero elsewhere (`correction @p`).
    Correction { param: usize, w0: Loc, out: Loc },
    /// `w0` with `w1` at the selected positions in `offset .. offset + len`.
    DropbackApply {
        offset: usize,
        w1: Loc,
        sel: Loc,
        w0: Loc,
        out: Loc,
    },
    /// The Dropback scores `|(w − g·lr) − w0|` of a tracked weight `[m, n]` whose gradient
    /// `g = dyᵀ·x` (`dy: [k, m]`, `x: [k, n]`) is made 64 columns at a time, each panel scored
    /// as soon as it is made: neither the gradient nor the updated weight is ever stored whole.
    /// `w` is the overlay of the tracked weight `param` (`w0` with its entries over it), which
    /// lets the candidates of a selection be gathered without reading `w` whole.
    GradScore {
        param: usize,
        m: usize,
        n: usize,
        k: usize,
        dy: Loc,
        x: Loc,
        lr: Loc,
        w: Loc,
        w0: Loc,
        out: Loc,
    },
    /// `w0` with `w − g·lr` at the selected positions in `offset .. offset + m·n` (the
    /// gradient as in [`Body::GradScore`], its panels made again only where the selection has
    /// positions).
    GradApply {
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
        dy: Loc,
        x: Loc,
        lr: Loc,
        w: Loc,
        sel: Loc,
        w0: Loc,
        out: Loc,
    },
    /// The new tracked entries of the tracked weight `param` `[m, n]`: at each position
    /// selected in `sel` (from `offset`), `w − g·lr` when it differs bitwise from `w0`, with
    /// `w` the weight (its regenerated `w0`, its entries over it) and `g = dyᵀ·x` made 64
    /// columns at a time, only the panels holding selected positions. Neither the weight nor
    /// `w0` is stored whole; the entries' positions go to the selection buffer `out` (`S(j)`)
    /// and their values to the float buffer of the same slot (`F(j)`).
    GradUpdate {
        param: usize,
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
        dy: Loc,
        x: Loc,
        lr: Loc,
        sel: Loc,
        /// The weight and its initial value, when the step builds them anyway (for the
        /// scores): read there instead of regenerated per panel.
        weight: Option<(Loc, Loc)>,
        out: Loc,
    },
    /// `dy · W` (`dy: [m, k]`, the tracked weight `param` `[k, n]`, out `[m, n]`): the
    /// weight regenerated and overlaid 64 columns at a time, each panel of the product made by
    /// the whole product's own GEMM call for it (`matmul_weight`, never materialising `W`).
    WeightProduct {
        param: usize,
        m: usize,
        n: usize,
        k: usize,
        dy: Loc,
        out: Loc,
    },
    /// The top-`k` positions of the concatenated scores, some of them never stored: each
    /// [`ScoreSource::Remade`] is remade panel by panel (as [`Body::GradScore`] makes it, the
    /// weight regenerated per panel) in each pass of a radix select (a barrier).
    TopkStream {
        k: usize,
        sources: Vec<ScoreSource>,
        out: Loc,
    },
    /// The top-`k` positions of the concatenated scores (a barrier: needs every score).
    TopkSelect {
        k: usize,
        scores: Vec<Loc>,
        out: Loc,
    },
    /// The stored positions of a tracked parameter.
    TrackedSet { param: usize, out: Loc },
    /// The positions a mask keeps, ascending (`mask_index`): exactly `nnz` of them.
    MaskIndex { nnz: usize, mask: Loc, out: Loc },
    /// A masked product over the kept positions `idx` (`sparsec_ir::interp::masked`, the
    /// interpreter's kernels): `masked_matmul_nt` (`a` the weight, `b` the input),
    /// `masked_matmul` (`a` the weight, `b` the output gradient) or `masked_grad` (`a` the
    /// output gradient, `b` the input).
    Masked {
        kind: MaskedOp,
        dims: MaskedDims,
        a: Loc,
        b: Loc,
        idx: Loc,
        out: Loc,
    },
    /// A masked convolution over the kept positions `idx` (the interpreter's kernel): operands
    /// `(x, w)` (forward), `(dy, w)` (input gradient) or `(x, dy)` (weight gradient).
    MaskedConv {
        kind: ConvKind,
        geom: ConvGeom,
        a: Loc,
        b: Loc,
        idx: Loc,
        out: Loc,
    },
    /// A copy (a store whose operand is a parameter read).
    Copy { src: Loc, out: Loc },
    /// `reduce_sum` of `[outer, channels, inner]` over the outer and inner axes (a
    /// convolution's bias gradient): `out[c]` sums `x[b, c, i]` in `(b, i)` order.
    ReduceChannels {
        outer: usize,
        channels: usize,
        inner: usize,
        x: Loc,
        out: Loc,
    },
    /// `softmax_xent` (the mean loss) or `softmax_xent_grad` of `logits` and `labels`.
    SoftmaxXent {
        spec: SoftmaxSpec,
        logits: Loc,
        labels: Loc,
        out: Loc,
    },
    /// `maxpool2d x`, or (`spec.grad`) `maxpool2d_grad dy, x`.
    MaxPool {
        spec: PoolSpec,
        x: Loc,
        dy: Option<Loc>,
        out: Loc,
    },
    /// A convolution or one of its gradients; `a`, `b` are the IR operands in order (`x, W`;
    /// `dy, W`; `x, dy`).
    Conv {
        spec: ConvSpec,
        a: Loc,
        b: Loc,
        /// The bias of a fused `bias_add` (`spec.bias`).
        bias: Option<Loc>,
        out: Loc,
    },
    /// `conv2d_weight_grad x, dy`: the interpreter's kernel (image groups, one deep product
    /// each), with `dW`'s columns split over the threads at multiples of the GEMM panel.
    ConvWeightGrad {
        geom: ConvGeom,
        x: Loc,
        dy: Loc,
        out: Loc,
    },
    /// One instruction on the interpreter's kernel.
    Interp {
        op: Op,
        shapes: Vec<Vec<usize>>,
        out_shape: Vec<usize>,
        operands: Vec<Loc>,
        out: Loc,
    },
}

/// One fused kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The IR instructions it carries out (`%i`), ascending.
    pub insts: Vec<usize>,
    pub body: Body,
}

impl Kernel {
    pub fn exec(&self) -> Exec {
        match &self.body {
            Body::Gemm { .. }
            | Body::Chain { .. }
            | Body::ReduceRows { .. }
            | Body::BiasAdd { .. }
            | Body::Regen { .. }
            | Body::ReduceChannels { .. }
            | Body::SoftmaxXent { .. }
            | Body::MaxPool { .. }
            | Body::Conv { .. } => Exec::Jit,
            Body::Interp { .. } => Exec::Interp,
            _ => Exec::Host,
        }
    }

    /// A short name: the kind of kernel.
    pub fn kind(&self) -> String {
        match &self.body {
            Body::Gemm { spec, .. } => format!("gemm.{}", spec.layout.name()),
            Body::Chain {
                product: Some(_), ..
            } => "chain.matmul_tn".into(),
            Body::Chain { .. } => "chain".into(),
            Body::ReduceRows { .. } => "reduce_rows".into(),
            Body::BiasAdd { .. } => "bias_add".into(),
            Body::Regen { .. } => "regen".into(),
            Body::Overlay { .. } => "overlay".into(),
            Body::TrackedValues { .. } => "tracked_values".into(),
            Body::Correction { .. } => "correction".into(),
            Body::DropbackApply { .. } => "dropback_apply".into(),
            Body::GradScore { .. } => "grad_score".into(),
            Body::GradApply { .. } => "grad_apply".into(),
            Body::TopkSelect { .. } => "topk_select".into(),
            Body::TopkStream { .. } => "topk_stream".into(),
            Body::WeightProduct { .. } => "weight_product".into(),
            Body::GradUpdate { .. } => "grad_update".into(),
            Body::TrackedSet { .. } => "tracked_set".into(),
            Body::MaskIndex { .. } => "mask_index".into(),
            Body::Masked { kind, .. } => kind.name().into(),
            Body::MaskedConv { kind, .. } => match kind {
                ConvKind::Forward => "masked_conv2d",
                ConvKind::InputGrad => "masked_conv2d_input_grad",
                ConvKind::WeightGrad => "masked_conv2d_weight_grad",
            }
            .into(),
            Body::Copy { .. } => "copy".into(),
            Body::ReduceChannels { .. } => "reduce_channels".into(),
            Body::SoftmaxXent { spec, .. } if spec.grad => "softmax_xent_grad".into(),
            Body::SoftmaxXent { .. } => "softmax_xent".into(),
            Body::MaxPool { spec, .. } if spec.grad => "maxpool2d_grad".into(),
            Body::MaxPool { .. } => "maxpool2d".into(),
            Body::Conv { spec, .. } => spec.pass.name().into(),
            Body::ConvWeightGrad { .. } => "conv2d_weight_grad".into(),
            Body::Interp { op, .. } => format!("interp.{}", op.name()),
        }
    }
}

/// One operand of [`Body::TopkStream`]: scores read from a buffer, or remade in each pass.
#[derive(Clone, Debug, PartialEq)]
pub enum ScoreSource {
    Stored(Loc),
    /// The scores of `dropback_score_sgd @param` (`[m, n]`, a batch of `k`).
    Remade {
        param: usize,
        m: usize,
        n: usize,
        k: usize,
        dy: Loc,
        x: Loc,
        lr: Loc,
    },
}

impl ScoreSource {
    fn reads(&self) -> Vec<Loc> {
        match self {
            ScoreSource::Stored(l) => vec![*l],
            ScoreSource::Remade { dy, x, lr, .. } => vec![*dy, *x, *lr],
        }
    }
}

/// A function as kernels.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProgram {
    pub func: String,
    /// Parameter names, for printing.
    pub param_names: Vec<String>,
    /// Argument names, for printing.
    pub arg_names: Vec<String>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// The function's results.
    pub results: Vec<Loc>,
    /// `(parameter, value)` written to the state after a successful run.
    pub stores: Vec<(usize, Loc)>,
    /// Per tracked parameter stored: the buffer of its initial value in the run (for keeping
    /// what differs from it).
    pub store_w0: Vec<(usize, Loc)>,
}

impl KernelProgram {
    fn loc(&self, l: Loc) -> String {
        match l {
            Loc::Arg(a) => format!("%{}", self.arg_names[a]),
            Loc::Param(p) => format!("@{}", self.param_names[p]),
            Loc::F(b) | Loc::I(b) | Loc::S(b) => self.buffers[b].name.clone(),
        }
    }

    fn locs(&self, ls: &[Loc]) -> String {
        ls.iter()
            .map(|&l| self.loc(l))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The instructions that run on the interpreter's kernels, as `%i op`.
    pub fn fallbacks(&self) -> Vec<String> {
        self.kernels
            .iter()
            .filter_map(|k| match &k.body {
                Body::Interp { op, .. } => Some(format!(
                    "{} {}",
                    k.insts
                        .iter()
                        .map(|i| format!("%{i}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    op.name()
                )),
                _ => None,
            })
            .collect()
    }

    /// The body of kernel `k` as printed lines (without its header).
    fn body_lines(&self, k: &Kernel) -> Vec<String> {
        let mut out = Vec::new();
        match &k.body {
            Body::Gemm {
                spec,
                m,
                n,
                k: kk,
                a,
                b,
                regen,
                bias,
                outs,
            } if spec.import => {
                let call = |b: &str| {
                    format!(
                        "call {GEMM_IMPORT}: the GEMM library in 64-column panels, {m}x{n}x{kk} = {} \
                         >= 2^12 multiply-adds, C[i, j] = sum over kk in 0..{kk} of {}[i, kk] * {b}",
                        m * n * kk,
                        self.loc(*a)
                    )
                };
                let first = spec.store.iter().position(|&s| s).unwrap_or(0);
                let stages = ["acc", "acc + bias", "relu"];
                let c = outs[first].map_or("?".to_owned(), |o| self.loc(o));
                match (b, regen) {
                    (_, Some(p)) => {
                        out.push(format!(
                            "for jb in 0..{n} step {REGEN_BLOCK} (column blocks; threads split at multiples of 8)"
                        ));
                        out.push(format!(
                            "  regen rows jb..jb+{REGEN_BLOCK} of @{} [{n}, {kk}] into scratch (ChaCha8){}",
                            self.param_names[*p],
                            if spec.overlay {
                                ", overlay its tracked entries"
                            } else {
                                ""
                            }
                        ));
                        out.push(format!("  {} -> {c}[:, jb..]", call("scratch[j, kk]")));
                    }
                    (Some(b), None) => {
                        let bt = if spec.layout == Layout::Nt {
                            format!("{}[j, kk]", self.loc(*b))
                        } else {
                            format!("{}[kk, j]", self.loc(*b))
                        };
                        out.push(format!(
                            "{} -> {c} (threads split columns at multiples of 64)",
                            call(&bt)
                        ));
                    }
                    (None, None) => {}
                }
                if spec.bias || spec.relu {
                    out.push(format!(
                        "for i in 0..{m}, j in the columns (f32x4, scalar tail): epilogue in JIT code"
                    ));
                    out.push(format!("  acc = {c}[i, j]"));
                    if let Some(bias) = bias {
                        out.push(format!("  acc + {}[j]", self.loc(*bias)));
                    }
                    if spec.relu {
                        out.push("  relu".into());
                    }
                    for (s, o) in outs.iter().enumerate().skip(1) {
                        if let Some(o) = o {
                            out.push(format!("  store {} -> {}", stages[s], self.loc(*o)));
                        }
                    }
                }
            }
            Body::Gemm {
                spec,
                m,
                n,
                k: kk,
                a,
                b,
                regen,
                bias,
                outs,
            } => {
                out.push(format!(
                    "for jb in 0..{n} step 8 (column panels; threads split here)"
                ));
                match (b, regen) {
                    (_, Some(p)) => {
                        out.push(format!(
                            "  regen rows jb..jb+8 of @{} [{n}, {kk}] into scratch (ChaCha8){}",
                            self.param_names[*p],
                            if spec.overlay {
                                ", overlay its tracked entries"
                            } else {
                                ""
                            }
                        ));
                        out.push("  pack panel [k][8]".into());
                    }
                    (Some(b), None) => out.push(format!("  pack panel of {} [k][8]", self.loc(*b))),
                    (None, None) => {}
                }
                out.push(format!("  for i in 0..{m} step 4 (then 1)"));
                out.push(format!(
                    "    acc[4x8] = sum over kk in 0..{kk} ascending of {}[i, kk] * panel[kk]",
                    self.loc(*a)
                ));
                let stages = ["acc", "acc + bias", "relu"];
                if let Some(bias) = bias {
                    out.push(format!("    acc + {}[jb..jb+8]", self.loc(*bias)));
                }
                if spec.relu {
                    out.push("    relu".into());
                }
                for (s, o) in outs.iter().enumerate() {
                    if let Some(o) = o {
                        out.push(format!("    store {} -> {}", stages[s], self.loc(*o)));
                    }
                }
            }
            Body::Chain {
                spec,
                len,
                product,
                inputs,
                scalars,
                outputs,
            } => {
                let first = match product {
                    Some(p) if p.k == 1 => {
                        out.push(format!(
                            "for r in 0..{}, j in 0..{} (f32x4, scalar tail; threads split rows at \
                             multiples of 64, where a product of the weight splits its columns)",
                            p.m, p.n
                        ));
                        out.push(format!(
                            "  in0 = 0 + {}[r] * {}[j] (the outer product g = {}ᵀ · {}, made \
                             where it is read)",
                            self.loc(p.dy),
                            self.loc(p.x),
                            self.loc(p.dy),
                            self.loc(p.x)
                        ));
                        1
                    }
                    Some(p) => {
                        out.push(format!(
                            "for each 64-column panel of g = {}ᵀ · {} ({}x{}x{}, the product's \
                             own calls), made into a scratch panel (threads split panels):",
                            self.loc(p.dy),
                            self.loc(p.x),
                            p.m,
                            p.n,
                            p.k
                        ));
                        out.push(format!(
                            "for i in the panel's elements of 0..{len} (f32x4, scalar tail)"
                        ));
                        out.push("  in0 = g[i] (no dense gradient)".into());
                        1
                    }
                    None => {
                        out.push(format!(
                            "for i in 0..{len} step 4 (f32x4, scalar tail; threads split here)"
                        ));
                        0
                    }
                };
                for (j, l) in inputs.iter().enumerate() {
                    out.push(format!("  in{} = {}[i]", first + j, self.loc(*l)));
                }
                for (j, l) in scalars.iter().enumerate() {
                    out.push(format!("  s{j} = {}[0]", self.loc(*l)));
                }
                for (j, (op, operands)) in spec.nodes.iter().enumerate() {
                    let args: Vec<String> = operands
                        .iter()
                        .map(|o| match o {
                            crate::codegen::chain::Operand::Input(i) => format!("in{i}"),
                            crate::codegen::chain::Operand::Scalar(i) => format!("s{i}"),
                            crate::codegen::chain::Operand::Node(i) => format!("v{i}"),
                        })
                        .collect();
                    out.push(format!("  v{j} = {} {}", op.name(), args.join(", ")));
                }
                for (slot, node) in spec.outputs.iter().enumerate() {
                    out.push(format!("  {}[i] = v{node}", self.loc(outputs[slot])));
                }
            }
            Body::ReduceRows {
                rows,
                cols,
                x,
                out: o,
            } => {
                out.push(format!("for c in 0..{cols} step 4 (threads split here)"));
                out.push(format!(
                    "  {}[c] = sum over r in 0..{rows} ascending of {}[r, c]",
                    self.loc(*o),
                    self.loc(*x)
                ));
            }
            Body::BiasAdd {
                inner,
                x,
                bias,
                out: o,
            } => out.push(format!(
                "{} = {} + {}[channel] (inner {inner})",
                self.loc(*o),
                self.loc(*x),
                self.loc(*bias)
            )),
            Body::Regen { param, out: o } => out.push(format!(
                "{} = regen @{} (ChaCha8 stream, x init_scale; threads split here)",
                self.loc(*o),
                self.param_names[*param]
            )),
            Body::Overlay { param, w0, out: o } => out.push(format!(
                "{} = {} with the tracked entries of @{} written over it",
                self.loc(*o),
                self.loc(*w0),
                self.param_names[*param]
            )),
            Body::TrackedValues { param, out: o } => out.push(format!(
                "{} = tracked entries of @{} (zero elsewhere)",
                self.loc(*o),
                self.param_names[*param]
            )),
            Body::Correction { param, w0, out: o } => out.push(format!(
                "{} = entries of @{} minus {} (zero elsewhere)",
                self.loc(*o),
                self.param_names[*param],
                self.loc(*w0)
            )),
            Body::DropbackApply {
                offset,
                w1,
                sel,
                w0,
                out: o,
            } => out.push(format!(
                "{} = {} with {} at the positions of {} from {offset}",
                self.loc(*o),
                self.loc(*w0),
                self.loc(*w1),
                self.loc(*sel)
            )),
            Body::GradScore {
                m,
                n,
                k,
                dy,
                x,
                lr,
                w,
                w0,
                out: o,
                ..
            } => {
                out.push(format!(
                    "for each 64-column panel of g = {}ᵀ · {} ({m}x{n}x{k}, the product's own \
                     calls), made into a scratch panel:",
                    self.loc(*dy),
                    self.loc(*x)
                ));
                out.push(format!(
                    "  {}[panel] = |({}[panel] - g * {}) - {}[panel]| (no dense gradient)",
                    self.loc(*o),
                    self.loc(*w),
                    self.loc(*lr),
                    self.loc(*w0)
                ));
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
                out: o,
            } => {
                out.push(format!(
                    "{} = {}; for each 64-column panel of g = {}ᵀ · {} ({m}x{n}x{k}) holding \
                     positions of {} from {offset}:",
                    self.loc(*o),
                    self.loc(*w0),
                    self.loc(*dy),
                    self.loc(*x),
                    self.loc(*sel)
                ));
                out.push(format!(
                    "  {}[i] = {}[i] - g[i] * {} at those positions",
                    self.loc(*o),
                    self.loc(*w),
                    self.loc(*lr)
                ));
            }
            Body::TopkStream {
                k,
                sources,
                out: o,
            } => {
                let parts: Vec<String> = sources
                    .iter()
                    .map(|s| match s {
                        ScoreSource::Stored(l) => self.loc(*l),
                        ScoreSource::Remade {
                            param,
                            m,
                            n,
                            k,
                            dy,
                            x,
                            lr,
                        } => format!(
                            "remade scores of @{} from {}ᵀ · {} ({m}x{n}x{k}), {}",
                            self.param_names[*param],
                            self.loc(*dy),
                            self.loc(*x),
                            self.loc(*lr)
                        ),
                    })
                    .collect();
                out.push(format!(
                    "{} = top {k} of ({}) (radix select, remade scores remade in every pass)",
                    self.loc(*o),
                    parts.join(", ")
                ));
            }
            Body::WeightProduct {
                param,
                m,
                n,
                k,
                dy,
                out: o,
            } => out.push(format!(
                "{} = {} · @{} ({m}x{n}x{k}), the weight regenerated and overlaid per 64-column \
                 panel",
                self.loc(*o),
                self.loc(*dy),
                self.param_names[*param]
            )),
            Body::GradUpdate {
                param,
                offset,
                m,
                n,
                k,
                dy,
                x,
                lr,
                sel,
                weight,
                out: o,
            } => out.push(format!(
                "{} = entries of @{} at the positions of {} from {offset} where \
                 w - g * {} differs from w0, g = {}ᵀ · {} ({m}x{n}x{k}) made per 64-column panel, \
                 {}",
                self.loc(*o),
                self.param_names[*param],
                self.loc(*sel),
                self.loc(*lr),
                self.loc(*dy),
                self.loc(*x),
                match weight {
                    Some((w, w0)) => format!("w = {}, w0 = {}", self.loc(*w), self.loc(*w0)),
                    None => "the weight regenerated per panel".into(),
                }
            )),
            Body::TopkSelect { k, scores, out: o } => out.push(format!(
                "{} = top {k} of ({}) (barrier)",
                self.loc(*o),
                self.locs(scores)
            )),
            Body::TrackedSet { param, out: o } => out.push(format!(
                "{} = tracked positions of @{}",
                self.loc(*o),
                self.param_names[*param]
            )),
            Body::MaskedConv {
                kind,
                geom: g,
                a,
                b,
                idx,
                out: o,
            } => out.push(format!(
                "{} = {kind:?} masked convolution {}, {} over the kept positions {} (x [{}, {}, {}, {}], W [{}, {}, {}, {}], stride {}x{}, padding {}x{}, out {}x{})",
                self.loc(*o),
                self.loc(*a),
                self.loc(*b),
                self.loc(*idx),
                g.b, g.c, g.h, g.w, g.o, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow
            )),
            Body::MaskIndex { nnz, mask, out: o } => out.push(format!(
                "{} = the {nnz} positions {} keeps",
                self.loc(*o),
                self.loc(*mask)
            )),
            Body::Masked {
                kind,
                dims,
                a,
                b,
                idx,
                out: o,
            } => out.push(format!(
                "{} = {} {}, {} over the kept positions {} (batch {}, weight [{}, {}])",
                self.loc(*o),
                kind.name(),
                self.loc(*a),
                self.loc(*b),
                self.loc(*idx),
                dims.b,
                dims.o,
                dims.i
            )),
            Body::Copy { src, out: o } => {
                out.push(format!("{} = copy {}", self.loc(*o), self.loc(*src)))
            }
            Body::ReduceChannels {
                outer,
                channels,
                inner,
                x,
                out: o,
            } => {
                out.push(format!(
                    "for c in 0..{channels} (8 channels side by side; threads split here)"
                ));
                out.push(format!(
                    "  {}[c] = sum over b in 0..{outer}, i in 0..{inner} ascending of {}[b, c, i]",
                    self.loc(*o),
                    self.loc(*x)
                ));
            }
            Body::SoftmaxXent {
                spec,
                logits,
                labels,
                out: o,
            } => {
                let (rows, classes) = (spec.rows, spec.classes);
                let (x, l) = (self.loc(*logits), self.loc(*labels));
                out.push(format!(
                    "for r in 0..{rows} (labels {l} checked in 0..{classes} first; one thread)"
                ));
                out.push(format!(
                    "  mx = first maximum of {x}[r, 0..{classes}]; s = sum over j ascending of \
                     {EXP_IMPORT}({x}[r, j] - mx)"
                ));
                if spec.grad {
                    out.push(format!(
                        "  {}[r, j] = ((p = {EXP_IMPORT}({x}[r, j] - mx) / s) - 1 if j == {l}[r] \
                         else p) / {rows}",
                        self.loc(*o)
                    ));
                } else {
                    out.push(format!(
                        "  total (f64) += {LN_IMPORT}(s) - ({x}[r, {l}[r]] - mx)"
                    ));
                    out.push(format!("{}[0] = f32(total / {rows})", self.loc(*o)));
                }
            }
            Body::MaxPool {
                spec,
                x,
                dy,
                out: o,
            } => {
                let s = spec;
                out.push(format!(
                    "for plane in 0..{}, oh in 0..{}, ow in 0..{} (threads split the planes)",
                    s.planes, s.oh, s.ow
                ));
                out.push(format!(
                    "  at = first maximum of {}[plane, oh*{} .. +{}, ow*{} .. +{}] (planes {}x{}, \
                     the window unrolled)",
                    self.loc(*x),
                    s.sh,
                    s.kh,
                    s.sw,
                    s.kw,
                    s.h,
                    s.w
                ));
                match dy {
                    Some(dy) if s.tiles() => out.push(format!(
                        "  {}[plane, window] = {}[plane, oh, ow] at `at`, 0 elsewhere (the windows tile the plane)",
                        self.loc(*o),
                        self.loc(*dy)
                    )),
                    Some(dy) => out.push(format!(
                        "  {}[plane, at] += {}[plane, oh, ow] (after zeroing)",
                        self.loc(*o),
                        self.loc(*dy)
                    )),
                    None => out.push(format!("  {}[plane, oh, ow] = value at", self.loc(*o))),
                }
            }
            Body::Conv {
                spec,
                a,
                b,
                bias,
                out: o,
            } => {
                let s = spec;
                let (ckk, p) = (s.ckk(), s.p());
                let (a, b, o) = (self.loc(*a), self.loc(*b), self.loc(*o));
                out.push(format!(
                    "geometry x [{}, {}, {}, {}], W [{}, {}, {}, {}], stride {}x{}, padding {}x{}, \
                     out {}x{}; cols = scratch [{ckk}, {p}] ({})",
                    s.b,
                    s.c,
                    s.h,
                    s.w,
                    s.o,
                    s.c,
                    s.kh,
                    s.kw,
                    s.sh,
                    s.sw,
                    s.ph,
                    s.pw,
                    s.oh,
                    s.ow,
                    "threads split the images, each with its own scratch"
                ));
                match s.pass {
                    ConvPass::Forward => {
                        out.push(format!("for i in 0..{}", s.b));
                        out.push(format!("  cols = im2col {a}[i] (JIT loop)"));
                        out.push(format!(
                            "  call {GEMM_IMPORT}({}x{p}x{ckk}, {b}[o, ckk] * cols[ckk, p]) -> {o}[i]",
                            s.o
                        ));
                        if let Some(bias) = bias {
                            out.push(format!(
                                "  {o}[i][oc, p] += {}[oc] (bias_add; f32x4, scalar tail)",
                                self.loc(*bias)
                            ));
                        }
                    }
                    ConvPass::InputGrad => {
                        out.push(format!("{o} = 0; for i in 0..{}", s.b));
                        out.push(format!(
                            "  call {GEMM_IMPORT}({ckk}x{p}x{}, {b}[o, ckk]^T * {a}[i][o, p]) -> cols",
                            s.o
                        ));
                        out.push(format!("  {o}[i] += col2im cols (JIT loop)"));
                    }
                }
            }
            Body::ConvWeightGrad {
                geom: g,
                x,
                dy,
                out: o,
            } => {
                let (ckk, p, group) = (g.ckk(), g.p(), g.weight_grad_group());
                let (x, dy, o) = (self.loc(*x), self.loc(*dy), self.loc(*o));
                let [first, second] = g.weight_grad_halves();
                out.push(format!(
                    "geometry x [{}, {}, {}, {}], dW [{}, {}, {}, {}], stride {}x{}, padding {}x{}, \
                     out {}x{}; images in groups of {group}",
                    g.b, g.c, g.h, g.w, g.o, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow,
                ));
                out.push(format!(
                    "for half in [{first:?}, {second:?}] (threads split here, each with its own scratch)"
                ));
                out.push("  for each group G of the half's images (host loop)".to_string());
                out.push(format!(
                    "    cols = [im2col {x}[i] for i in G] [{ckk}, |G|*{p}]; dyG = {dy}[G] as [{}, |G|*{p}]",
                    g.o
                ));
                out.push(format!(
                    "    sum (=, then +=) dyG * cols^T ({}x{ckk}x|G|*{p}, the interpreter's product)",
                    g.o
                ));
                out.push(format!("{o} = sum of the first half + sum of the second"));
            }
            Body::Interp {
                op,
                operands,
                out: o,
                ..
            } => out.push(format!(
                "{} = {} {} (interpreter kernel)",
                self.loc(*o),
                op.name(),
                self.locs(operands)
            )),
        }
        out
    }

    /// The inputs and outputs of a kernel (buffers and state it reads and writes).
    pub fn io(k: &Kernel) -> (Vec<Loc>, Vec<Loc>) {
        match &k.body {
            Body::Gemm {
                a, b, bias, outs, ..
            } => {
                let mut i = vec![*a];
                i.extend(b.iter().copied());
                i.extend(bias.iter().copied());
                (i, outs.iter().flatten().copied().collect())
            }
            Body::Chain {
                product,
                inputs,
                scalars,
                outputs,
                ..
            } => {
                let mut i: Vec<Loc> = product.iter().flat_map(|p| [p.dy, p.x]).collect();
                i.extend(inputs.iter().copied());
                i.extend(scalars.iter().copied());
                (i, outputs.clone())
            }
            Body::ReduceRows { x, out, .. } => (vec![*x], vec![*out]),
            Body::BiasAdd { x, bias, out, .. } => (vec![*x, *bias], vec![*out]),
            Body::Regen { out, .. }
            | Body::TrackedValues { out, .. }
            | Body::TrackedSet { out, .. } => (vec![], vec![*out]),
            Body::MaskIndex { mask, out, .. } => (vec![*mask], vec![*out]),
            Body::Masked { a, b, idx, out, .. } | Body::MaskedConv { a, b, idx, out, .. } => {
                (vec![*a, *b, *idx], vec![*out])
            }
            Body::Overlay { w0, out, .. } | Body::Correction { w0, out, .. } => {
                (vec![*w0], vec![*out])
            }
            Body::DropbackApply {
                w1, sel, w0, out, ..
            } => (vec![*w1, *sel, *w0], vec![*out]),
            Body::GradScore {
                dy,
                x,
                lr,
                w,
                w0,
                out,
                ..
            } => (vec![*dy, *x, *lr, *w, *w0], vec![*out]),
            Body::GradApply {
                dy,
                x,
                lr,
                w,
                sel,
                w0,
                out,
                ..
            } => (vec![*dy, *x, *lr, *w, *sel, *w0], vec![*out]),
            Body::TopkSelect { scores, out, .. } => (scores.clone(), vec![*out]),
            Body::WeightProduct { dy, out, .. } => (vec![*dy], vec![*out]),
            Body::TopkStream { sources, out, .. } => (
                sources.iter().flat_map(ScoreSource::reads).collect(),
                vec![*out],
            ),
            Body::GradUpdate {
                dy,
                x,
                lr,
                sel,
                weight,
                out,
                ..
            } => {
                let values = match *out {
                    Loc::S(j) => vec![*out, Loc::F(j)],
                    other => vec![other],
                };
                let mut ins = vec![*dy, *x, *lr, *sel];
                ins.extend(weight.iter().flat_map(|&(w, w0)| [w, w0]));
                (ins, values)
            }
            Body::Copy { src, out } => (vec![*src], vec![*out]),
            Body::ReduceChannels { x, out, .. } => (vec![*x], vec![*out]),
            Body::SoftmaxXent {
                logits,
                labels,
                out,
                ..
            } => (vec![*logits, *labels], vec![*out]),
            Body::MaxPool { x, dy, out, .. } => {
                let mut i: Vec<Loc> = dy.iter().copied().collect();
                i.push(*x);
                (i, vec![*out])
            }
            Body::Conv {
                a, b, bias, out, ..
            } => {
                let mut i = vec![*a, *b];
                i.extend(bias.iter().copied());
                (i, vec![*out])
            }
            Body::ConvWeightGrad { x, dy, out, .. } => (vec![*x, *dy], vec![*out]),
            Body::Interp { operands, out, .. } => (operands.clone(), vec![*out]),
        }
    }
}

impl fmt::Display for KernelProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |e: Exec| self.kernels.iter().filter(|k| k.exec() == e).count();
        writeln!(
            f,
            "kernels @{}: {} kernels (jit {}, host {}, interp {})",
            self.func,
            self.kernels.len(),
            count(Exec::Jit),
            count(Exec::Host),
            count(Exec::Interp)
        )?;
        for (i, k) in self.kernels.iter().enumerate() {
            let insts: Vec<String> = k.insts.iter().map(|i| format!("%{i}")).collect();
            let (ins, outs) = KernelProgram::io(k);
            writeln!(
                f,
                "  k{i} {} [{}] insts({}) in({}) out({})",
                k.kind(),
                k.exec().name(),
                insts.join(" "),
                self.locs(&ins),
                self.locs(&outs)
            )?;
            for line in self.body_lines(k) {
                writeln!(f, "    {line}")?;
            }
        }
        let stores: Vec<String> = self
            .stores
            .iter()
            .map(|&(p, l)| format!("@{} <- {}", self.param_names[p], self.loc(l)))
            .collect();
        if !stores.is_empty() {
            writeln!(f, "  stores (after the run): {}", stores.join(", "))?;
        }
        writeln!(f, "  results: {}", self.locs(&self.results))?;
        let fb = self.fallbacks();
        writeln!(
            f,
            "  fallback (interpreter kernels): {}",
            if fb.is_empty() {
                "none".to_owned()
            } else {
                fb.join(", ")
            }
        )
    }
}

/// Which masked product a [`Body::Masked`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskedOp {
    Nt,
    Nn,
    Grad,
}

impl MaskedOp {
    pub fn name(self) -> &'static str {
        match self {
            MaskedOp::Nt => "masked_matmul_nt",
            MaskedOp::Nn => "masked_matmul",
            MaskedOp::Grad => "masked_grad",
        }
    }
}
