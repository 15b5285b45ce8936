//! The operations of the IR: their text names, operands and attributes, typing, and FLOP count.
//!
//! Every op has a stable text name and a list of named attributes; the printer and parser treat
//! attributes generically through [`Op::attrs`] and [`Op::from_parts`]. [`Op::infer`] is the
//! single typing rule used by builders and the verifier alike; [`Op::flops`] the single FLOP
//! count that the cost model and `sparsec report` read. The element-wise activations are one
//! table ([`unary`]): adding one there gives its op, gradient op, text form, typing, reference
//! semantics, autodiff rule and model-language name.

mod flops;
pub mod unary;

pub use unary::{GradInput, Unary};

use crate::module::{Param, ParamId, Role, Storage};
use crate::types::{DType, Encoding, Type};

/// An attribute value in the text form: `3`, `[1, 1]`, `0.5`.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(u64),
    Ints(Vec<u64>),
    F32(f32),
}

pub type Hw = [usize; 2];

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Read a parameter's current value (a dense read, whatever its storage).
    Param(ParamId),
    /// Give a parameter its value for the next step. Stores take effect when the function
    /// returns, so every `param` read in the function sees the value from before the call; the
    /// result is the stored value. At most one store per parameter and function.
    Store(ParamId),
    /// A tensor of the given shape filled with one value.
    Const {
        value: f32,
        shape: Vec<usize>,
    },
    /// Same elements, new shape (row-major order kept).
    Reshape {
        shape: Vec<usize>,
    },
    /// `a · b` with optional transposes: `[m,k]·[k,n]`, `_nt`: `[m,k]·[n,k]ᵀ`, `_tn`: `[k,m]ᵀ·[k,n]`.
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// `x + b` with `b: [C]` broadcast along axis 1 of `x: [B, C, ...]`.
    BiasAdd,
    Add,
    Sub,
    Mul,
    /// `x * s` with `s: f32[]`.
    Scale,
    /// An element-wise activation ([`unary`]).
    Unary(Unary),
    /// The gradient of an activation: `(dy, x or y) ↦ dx` ([`Unary::grad_reads`] says which).
    UnaryGrad(Unary),
    /// `(x: [B,C,H,W], w: [O,C,KH,KW]) ↦ [B,O,H',W']` (cross-correlation, as PyTorch).
    Conv2d {
        stride: Hw,
        padding: Hw,
    },
    /// `(dy: [B,O,H',W'], w) ↦ dx: [B,C,H,W]`; `input` gives `H, W`, which strides make ambiguous.
    Conv2dInputGrad {
        stride: Hw,
        padding: Hw,
        input: Hw,
    },
    /// `(x, dy) ↦ dw: [O,C,KH,KW]`.
    Conv2dWeightGrad {
        stride: Hw,
        padding: Hw,
        kernel: Hw,
    },
    MaxPool2d {
        kernel: Hw,
        stride: Hw,
    },
    /// `(dy, x) ↦ dx`: the gradient flows to the first maximum of each window.
    MaxPool2dGrad {
        kernel: Hw,
        stride: Hw,
    },
    AvgPool2d {
        kernel: Hw,
        stride: Hw,
    },
    /// `dy ↦ dx` of shape `[B, C, input...]`.
    AvgPool2dGrad {
        kernel: Hw,
        stride: Hw,
        input: Hw,
    },
    /// Sum over the listed axes (strictly increasing), which disappear from the shape.
    ReduceSum {
        axes: Vec<usize>,
    },
    /// `(logits: [B,C], labels: i32[B]) ↦ f32[]`: mean softmax cross-entropy over the batch.
    SoftmaxXent,
    /// `(logits, labels) ↦ (softmax(logits) − onehot(labels)) / B`.
    SoftmaxXentGrad,
    /// `x: [B, C] ↦ i32[B]`: index of the first maximum of each row.
    Argmax,
    /// `dropback_score @p, %w1`: `|w1 − w0|` elementwise, `w0` the regenerated initial value
    /// of the tracked parameter `p` (a bias has `w0 = 0`, so its score is `|w1|`).
    DropbackScore(ParamId),
    /// `topk_select %s1, %s2, ... {k=K}`: the exact top-`K` positions of the concatenation of the
    /// score tensors (operand order, each row-major), ties to the lower global flat index. The
    /// result is the selection as a sparse mask `i32[N]{sparse min(K, N)}` over the `N`
    /// concatenated positions (its stored entries: the sorted selected indices, value 1).
    TopkSelect {
        k: u64,
    },
    /// `dropback_apply @p, %w1, %sel {offset=O}`: `w1[i]` where global position `O + i` is
    /// selected in `sel`, else `w0[i]` (the regenerated initial value of `p`). Dense result.
    DropbackApply {
        param: ParamId,
        offset: u64,
    },
    /// `tracked_set @p`: the positions `p` tracks now (its stored entries) as a sparse mask
    /// `i32[len(p)]{sparse cap(p)}`, for a step whose tracked set is frozen.
    TrackedSet(ParamId),
    // ---- Forms introduced by equality saturation (passes/src/eqsat) ----
    /// `regen @p`: the initial value of a tracked parameter, never materialised: `T{regen}`.
    Regen(ParamId),
    /// `tracked @p`: the tracked values of `p` at their positions, zero elsewhere:
    /// `T{sparse cap(p)}`.
    Tracked(ParamId),
    /// `correction @p`: tracked value minus initial value at the tracked positions, zero
    /// elsewhere (`T{sparse cap(p)}`), so that `W = regen + correction`.
    Correction(ParamId),
    /// `overlay %r, %t`: `r` with the stored entries of `t` written over it: the effective
    /// weight `regen @p ⊕ tracked @p`, dense.
    Overlay,
    /// `matmul_nt_weight @p, %x`: `x · Wᵀ` for the effective weight of tracked `p`, the weight
    /// regenerated tile by tile inside the product and never materialised.
    MatMulNtWeight(ParamId),
    /// `matmul_weight @p, %dy`: `dy · W` likewise (a layer's input gradient).
    MatMulWeight(ParamId),
    /// `dropback_score_sgd @p, %dy, %x, %lr`: `dropback_score @p, (W − lr · dyᵀx)`, the weight
    /// gradient computed tile by tile and scored on the fly, never materialised.
    DropbackScoreSgd(ParamId),
    /// `dropback_apply_sgd @p, %dy, %x, %lr, %sel {offset=O}`: `dropback_apply @p, (W − lr ·
    /// dyᵀx), %sel`: only the selected entries of the gradient are computed.
    DropbackApplySgd {
        param: ParamId,
        offset: u64,
    },
    /// `dropback_score_stream @p, %dy, %x, %lr`: the scores `dropback_score_sgd` makes, never
    /// stored (`T{streamed}`): `topk_select`, their only reader, remakes them panel by panel
    /// in each pass of its selection. Memory O(k) instead of one score per weight.
    DropbackScoreStream(ParamId),
    /// `dropback_update_sgd @p, %dy, %x, %lr, %sel {offset=O}`: the tracked entries `store @p`
    /// keeps from `dropback_apply_sgd` with the same operands (the selected positions whose
    /// new value differs bitwise from the initial one), made directly: `T{sparse budget(p)}`,
    /// no dense weight written. Only `store @p` reads it.
    DropbackUpdateSgd {
        param: ParamId,
        offset: u64,
    },
    // ---- Sparse forms of masked weights (ADMM's rules, passes/src/methods/admm/rules.rs) ----
    /// `mask_index @m`: the positions a mask keeps (`m` has `role=mask` of a weight with
    /// `storage=masked(nnz=N)`), ascending, as a sparse selection `i32[len(m)]{sparse N}`. A
    /// run whose mask keeps another number of entries is an error.
    MaskIndex(ParamId),
    /// `masked_matmul_nt @w, %x, %idx`: `x · Wᵀ` for the masked weight `w: [O, I]` and `x:
    /// [B, I]`, summed over the kept entries only (`idx`: its `mask_index`), each output in
    /// ascending position order: 2·B·N flops instead of 2·B·O·I.
    MaskedMatMulNt(ParamId),
    /// `masked_matmul @w, %dy, %idx`: `dy · W` (`dy: [B, O]`) over the kept entries likewise.
    MaskedMatMul(ParamId),
    /// `masked_grad %dy, %x, %idx`: `(dyᵀ · x) ⊙ M` (`dy: [B, O]`, `x: [B, I]`): only the kept
    /// positions' sums are formed (over the batch, in order); the rest of the `[O, I]` result
    /// is zero.
    MaskedGrad,
    /// `masked_conv2d @w, %x, %idx {stride, padding}`: `conv2d` of `x` with the masked weight
    /// `w: [O, C, KH, KW]`, each kept weight applied to its input plane (2·B·H'·W'·N flops).
    MaskedConv2d {
        param: ParamId,
        stride: Hw,
        padding: Hw,
    },
    /// `masked_conv2d_input_grad @w, %dy, %idx {stride, padding, input}`: `conv2d_input_grad`
    /// over the kept weights.
    MaskedConv2dInputGrad {
        param: ParamId,
        stride: Hw,
        padding: Hw,
        input: Hw,
    },
    /// `masked_conv2d_weight_grad %x, %dy, %idx {stride, padding, kernel}`:
    /// `conv2d_weight_grad ⊙ M`, only the kept positions' sums formed.
    MaskedConv2dWeightGrad {
        stride: Hw,
        padding: Hw,
        kernel: Hw,
    },
}

impl Op {
    /// The text names of the ops with no table of their own (see [`Op::names`]).
    const FIXED_NAMES: &'static [&'static str] = &[
        "param",
        "store",
        "const",
        "reshape",
        "matmul",
        "matmul_nt",
        "matmul_tn",
        "matmul_tt",
        "bias_add",
        "add",
        "sub",
        "mul",
        "scale",
        "conv2d",
        "conv2d_input_grad",
        "conv2d_weight_grad",
        "maxpool2d",
        "maxpool2d_grad",
        "avgpool2d",
        "avgpool2d_grad",
        "reduce_sum",
        "softmax_xent",
        "softmax_xent_grad",
        "argmax",
        "dropback_score",
        "topk_select",
        "dropback_apply",
        "tracked_set",
        "regen",
        "tracked",
        "correction",
        "overlay",
        "matmul_nt_weight",
        "matmul_weight",
        "dropback_score_sgd",
        "dropback_apply_sgd",
        "dropback_score_stream",
        "dropback_update_sgd",
        "mask_index",
        "masked_matmul_nt",
        "masked_matmul",
        "masked_grad",
        "masked_conv2d",
        "masked_conv2d_input_grad",
        "masked_conv2d_weight_grad",
    ];

    /// Every op's text name, for error messages and "did you mean".
    pub fn names() -> Vec<&'static str> {
        let mut names = Op::FIXED_NAMES.to_vec();
        for u in Unary::ALL {
            names.push(u.name());
            names.push(u.grad_name());
        }
        names
    }

    /// The ops that name a parameter inline (`op @p` or `op @p, %operands...`).
    pub const PARAM_OPS: &'static [&'static str] = &[
        "param",
        "store",
        "dropback_score",
        "dropback_apply",
        "tracked_set",
        "regen",
        "tracked",
        "correction",
        "matmul_nt_weight",
        "matmul_weight",
        "dropback_score_sgd",
        "dropback_apply_sgd",
        "dropback_score_stream",
        "dropback_update_sgd",
        "mask_index",
        "masked_matmul_nt",
        "masked_matmul",
        "masked_conv2d",
        "masked_conv2d_input_grad",
    ];

    /// The parameter an op names inline, if any.
    pub fn param(&self) -> Option<ParamId> {
        match *self {
            Op::Param(id)
            | Op::Store(id)
            | Op::DropbackScore(id)
            | Op::DropbackApply { param: id, .. }
            | Op::TrackedSet(id)
            | Op::Regen(id)
            | Op::Tracked(id)
            | Op::Correction(id)
            | Op::MatMulNtWeight(id)
            | Op::MatMulWeight(id)
            | Op::DropbackScoreSgd(id)
            | Op::DropbackApplySgd { param: id, .. }
            | Op::DropbackScoreStream(id)
            | Op::DropbackUpdateSgd { param: id, .. }
            | Op::MaskIndex(id)
            | Op::MaskedMatMulNt(id)
            | Op::MaskedMatMul(id)
            | Op::MaskedConv2d { param: id, .. }
            | Op::MaskedConv2dInputGrad { param: id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Param(_) => "param",
            Op::Store(_) => "store",
            Op::Const { .. } => "const",
            Op::Reshape { .. } => "reshape",
            Op::MatMul {
                ta: false,
                tb: false,
            } => "matmul",
            Op::MatMul {
                ta: false,
                tb: true,
            } => "matmul_nt",
            Op::MatMul {
                ta: true,
                tb: false,
            } => "matmul_tn",
            Op::MatMul { ta: true, tb: true } => "matmul_tt",
            Op::BiasAdd => "bias_add",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Scale => "scale",
            Op::Unary(u) => u.name(),
            Op::UnaryGrad(u) => u.grad_name(),
            Op::Conv2d { .. } => "conv2d",
            Op::Conv2dInputGrad { .. } => "conv2d_input_grad",
            Op::Conv2dWeightGrad { .. } => "conv2d_weight_grad",
            Op::MaxPool2d { .. } => "maxpool2d",
            Op::MaxPool2dGrad { .. } => "maxpool2d_grad",
            Op::AvgPool2d { .. } => "avgpool2d",
            Op::AvgPool2dGrad { .. } => "avgpool2d_grad",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::SoftmaxXent => "softmax_xent",
            Op::SoftmaxXentGrad => "softmax_xent_grad",
            Op::Argmax => "argmax",
            Op::DropbackScore(_) => "dropback_score",
            Op::TopkSelect { .. } => "topk_select",
            Op::DropbackApply { .. } => "dropback_apply",
            Op::TrackedSet(_) => "tracked_set",
            Op::Regen(_) => "regen",
            Op::Tracked(_) => "tracked",
            Op::Correction(_) => "correction",
            Op::Overlay => "overlay",
            Op::MatMulNtWeight(_) => "matmul_nt_weight",
            Op::MatMulWeight(_) => "matmul_weight",
            Op::DropbackScoreSgd(_) => "dropback_score_sgd",
            Op::DropbackApplySgd { .. } => "dropback_apply_sgd",
            Op::DropbackScoreStream(_) => "dropback_score_stream",
            Op::DropbackUpdateSgd { .. } => "dropback_update_sgd",
            Op::MaskIndex(_) => "mask_index",
            Op::MaskedMatMulNt(_) => "masked_matmul_nt",
            Op::MaskedMatMul(_) => "masked_matmul",
            Op::MaskedGrad => "masked_grad",
            Op::MaskedConv2d { .. } => "masked_conv2d",
            Op::MaskedConv2dInputGrad { .. } => "masked_conv2d_input_grad",
            Op::MaskedConv2dWeightGrad { .. } => "masked_conv2d_weight_grad",
        }
    }

    /// Number of value operands, or `None` for a variadic op (`topk_select`, at least one).
    /// `param`, `const` and `tracked_set` take none (their payload is printed inline).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::TopkSelect { .. } => return None,
            Op::Param(_)
            | Op::Const { .. }
            | Op::TrackedSet(_)
            | Op::Regen(_)
            | Op::Tracked(_)
            | Op::Correction(_) => 0,
            Op::DropbackApply { .. } | Op::Overlay => 2,
            Op::MatMulNtWeight(_) | Op::MatMulWeight(_) => 1,
            Op::MaskIndex(_) => 0,
            Op::MaskedMatMulNt(_) | Op::MaskedMatMul(_) => 2,
            Op::MaskedGrad | Op::MaskedConv2dWeightGrad { .. } => 3,
            Op::MaskedConv2d { .. } | Op::MaskedConv2dInputGrad { .. } => 2,
            Op::DropbackScoreSgd(_) | Op::DropbackScoreStream(_) => 3,
            Op::DropbackApplySgd { .. } | Op::DropbackUpdateSgd { .. } => 4,
            Op::DropbackScore(_)
            | Op::Store(_)
            | Op::Reshape { .. }
            | Op::Unary(_)
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::AvgPool2dGrad { .. }
            | Op::ReduceSum { .. }
            | Op::Argmax => 1,
            Op::MatMul { .. }
            | Op::BiasAdd
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Scale
            | Op::UnaryGrad(_)
            | Op::Conv2d { .. }
            | Op::Conv2dInputGrad { .. }
            | Op::Conv2dWeightGrad { .. }
            | Op::MaxPool2dGrad { .. }
            | Op::SoftmaxXent
            | Op::SoftmaxXentGrad => 2,
        })
    }

    /// Attributes in their fixed print order. `reshape` and `const` take their shape from the
    /// printed result type, `param` its parameter from the `@name` operand, so none of those
    /// three appear here (`const`'s value is printed inline too).
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let hw = |v: &Hw| Attr::Ints(v.iter().map(|&x| x as u64).collect());
        match self {
            Op::Conv2d { stride, padding }
            | Op::MaskedConv2d {
                stride, padding, ..
            } => {
                vec![("stride", hw(stride)), ("padding", hw(padding))]
            }
            Op::Conv2dInputGrad {
                stride,
                padding,
                input,
            }
            | Op::MaskedConv2dInputGrad {
                stride,
                padding,
                input,
                ..
            } => vec![
                ("stride", hw(stride)),
                ("padding", hw(padding)),
                ("input", hw(input)),
            ],
            Op::Conv2dWeightGrad {
                stride,
                padding,
                kernel,
            }
            | Op::MaskedConv2dWeightGrad {
                stride,
                padding,
                kernel,
            } => vec![
                ("stride", hw(stride)),
                ("padding", hw(padding)),
                ("kernel", hw(kernel)),
            ],
            Op::MaxPool2d { kernel, stride }
            | Op::MaxPool2dGrad { kernel, stride }
            | Op::AvgPool2d { kernel, stride } => {
                vec![("kernel", hw(kernel)), ("stride", hw(stride))]
            }
            Op::AvgPool2dGrad {
                kernel,
                stride,
                input,
            } => vec![
                ("kernel", hw(kernel)),
                ("stride", hw(stride)),
                ("input", hw(input)),
            ],
            Op::ReduceSum { axes } => {
                vec![("axes", Attr::Ints(axes.iter().map(|&a| a as u64).collect()))]
            }
            Op::TopkSelect { k } => vec![("k", Attr::Int(*k))],
            Op::DropbackApply { offset, .. }
            | Op::DropbackApplySgd { offset, .. }
            | Op::DropbackUpdateSgd { offset, .. } => {
                vec![("offset", Attr::Int(*offset))]
            }
            _ => Vec::new(),
        }
    }

    /// Rebuild an op from its text name and attributes. `param` and `const` are parsed by their
    /// own syntax and are not accepted here; `reshape` gets its shape from `result`.
    pub fn from_parts(name: &str, attrs: &[(String, Attr)], result: &Type) -> Result<Op, String> {
        let mut reader = AttrReader::new(name, attrs);
        let activation = Unary::by_name(name)
            .map(Op::Unary)
            .or_else(|| Unary::by_grad_name(name).map(Op::UnaryGrad));
        if let Some(op) = activation {
            reader.finish()?;
            return Ok(op);
        }
        let op = match name {
            "reshape" => Op::Reshape {
                shape: result.shape.clone(),
            },
            "matmul" => Op::MatMul {
                ta: false,
                tb: false,
            },
            "matmul_nt" => Op::MatMul {
                ta: false,
                tb: true,
            },
            "matmul_tn" => Op::MatMul {
                ta: true,
                tb: false,
            },
            "matmul_tt" => Op::MatMul { ta: true, tb: true },
            "bias_add" => Op::BiasAdd,
            "add" => Op::Add,
            "sub" => Op::Sub,
            "mul" => Op::Mul,
            "scale" => Op::Scale,
            "conv2d" => Op::Conv2d {
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
            },
            "conv2d_input_grad" => Op::Conv2dInputGrad {
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
                input: reader.hw("input")?,
            },
            "conv2d_weight_grad" => Op::Conv2dWeightGrad {
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
                kernel: reader.hw("kernel")?,
            },
            "masked_conv2d_weight_grad" => Op::MaskedConv2dWeightGrad {
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
                kernel: reader.hw("kernel")?,
            },
            "maxpool2d" => Op::MaxPool2d {
                kernel: reader.hw("kernel")?,
                stride: reader.hw("stride")?,
            },
            "maxpool2d_grad" => Op::MaxPool2dGrad {
                kernel: reader.hw("kernel")?,
                stride: reader.hw("stride")?,
            },
            "avgpool2d" => Op::AvgPool2d {
                kernel: reader.hw("kernel")?,
                stride: reader.hw("stride")?,
            },
            "avgpool2d_grad" => Op::AvgPool2dGrad {
                kernel: reader.hw("kernel")?,
                stride: reader.hw("stride")?,
                input: reader.hw("input")?,
            },
            "reduce_sum" => Op::ReduceSum {
                axes: reader.ints("axes")?,
            },
            "softmax_xent" => Op::SoftmaxXent,
            "softmax_xent_grad" => Op::SoftmaxXentGrad,
            "argmax" => Op::Argmax,
            "overlay" => Op::Overlay,
            "masked_grad" => Op::MaskedGrad,
            "topk_select" => Op::TopkSelect {
                k: reader.int("k")?,
            },
            "const" => return Err(format!("`{name}` has its own syntax")),
            _ if Op::PARAM_OPS.contains(&name) => {
                return Err(format!("`{name}` names a parameter inline (`{name} @p`)"))
            }
            _ => return Err(format!("unknown op `{name}`")),
        };
        reader.finish()?;
        Ok(op)
    }

    /// Rebuild an op that names a parameter inline ([`Op::PARAM_OPS`]) from its name, the
    /// parameter and its attributes.
    pub fn from_parts_param(
        name: &str,
        param: ParamId,
        attrs: &[(String, Attr)],
    ) -> Result<Op, String> {
        let mut reader = AttrReader::new(name, attrs);
        let activation = Unary::by_name(name)
            .map(Op::Unary)
            .or_else(|| Unary::by_grad_name(name).map(Op::UnaryGrad));
        if let Some(op) = activation {
            reader.finish()?;
            return Ok(op);
        }
        let op = match name {
            "param" => Op::Param(param),
            "store" => Op::Store(param),
            "dropback_score" => Op::DropbackScore(param),
            "dropback_apply" => Op::DropbackApply {
                param,
                offset: reader.int("offset")?,
            },
            "tracked_set" => Op::TrackedSet(param),
            "regen" => Op::Regen(param),
            "tracked" => Op::Tracked(param),
            "correction" => Op::Correction(param),
            "matmul_nt_weight" => Op::MatMulNtWeight(param),
            "matmul_weight" => Op::MatMulWeight(param),
            "mask_index" => Op::MaskIndex(param),
            "masked_matmul_nt" => Op::MaskedMatMulNt(param),
            "masked_matmul" => Op::MaskedMatMul(param),
            "masked_conv2d" => Op::MaskedConv2d {
                param,
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
            },
            "masked_conv2d_input_grad" => Op::MaskedConv2dInputGrad {
                param,
                stride: reader.hw("stride")?,
                padding: reader.hw("padding")?,
                input: reader.hw("input")?,
            },
            "dropback_score_sgd" => Op::DropbackScoreSgd(param),
            "dropback_apply_sgd" => Op::DropbackApplySgd {
                param,
                offset: reader.int("offset")?,
            },
            "dropback_score_stream" => Op::DropbackScoreStream(param),
            "dropback_update_sgd" => Op::DropbackUpdateSgd {
                param,
                offset: reader.int("offset")?,
            },
            _ => return Err(format!("`{name}` does not name a parameter")),
        };
        reader.finish()?;
        Ok(op)
    }

    /// The dense convolution a masked one computes on its mask (`None` for other ops): its
    /// typing and geometry are the dense op's, with the weight as a plain operand.
    pub fn dense_conv(&self) -> Option<Op> {
        Some(match *self {
            Op::MaskedConv2d {
                stride, padding, ..
            } => Op::Conv2d { stride, padding },
            Op::MaskedConv2dInputGrad {
                stride,
                padding,
                input,
                ..
            } => Op::Conv2dInputGrad {
                stride,
                padding,
                input,
            },
            Op::MaskedConv2dWeightGrad {
                stride,
                padding,
                kernel,
            } => Op::Conv2dWeightGrad {
                stride,
                padding,
                kernel,
            },
            _ => return None,
        })
    }

    /// The result type of this op applied to operands of the given types, or why it is ill-typed.
    pub fn infer(&self, operands: &[&Type], params: &[Param]) -> Result<Type, String> {
        match self.arity() {
            Some(n) if operands.len() != n => {
                return Err(format!(
                    "`{}` takes {n} operand(s), got {}",
                    self.name(),
                    operands.len()
                ))
            }
            None if operands.is_empty() => {
                return Err(format!("`{}` takes at least one operand", self.name()))
            }
            _ => {}
        }
        // Every op computes on dense values; sparse and regenerated forms enter through their
        // own ops, never implicitly. The exceptions: the selection operand of the Dropback
        // applies, the two operands of `overlay`, the weight operand of `matmul_nt` /
        // `matmul` (a product with a regenerated or a sparse matrix, both orientations), the
        // streamed scores `topk_select` remakes, and the entries `store` gives a tracked weight.
        for (i, t) in operands.iter().enumerate() {
            if t.encoding == Encoding::Streamed {
                if matches!(self, Op::TopkSelect { .. }) {
                    continue;
                }
                return Err(format!(
                    "operand {} of `{}` is streamed ({t}): only `topk_select` reads streamed \
                     values",
                    i + 1,
                    self.name()
                ));
            }
            let sparse_ok = match self {
                Op::DropbackApply { .. } => i == 1,
                Op::DropbackApplySgd { .. } | Op::DropbackUpdateSgd { .. } => i == 3,
                // Entries: the store's typing says which weights take them.
                Op::Store(_) => matches!(t.encoding, Encoding::Sparse { .. }),
                Op::Overlay => true,
                Op::MatMul { ta: false, .. } => i == 1,
                Op::MaskedMatMulNt(_) | Op::MaskedMatMul(_) => i == 1,
                Op::MaskedGrad | Op::MaskedConv2dWeightGrad { .. } => i == 2,
                Op::MaskedConv2d { .. } | Op::MaskedConv2dInputGrad { .. } => i == 1,
                _ => false,
            };
            if t.encoding != Encoding::Dense && !sparse_ok {
                return Err(format!(
                    "operand {} of `{}` must be dense, found {t}",
                    i + 1,
                    self.name()
                ));
            }
        }
        let f32s = |n: usize| -> Result<(), String> {
            for (i, t) in operands.iter().enumerate().take(n) {
                if t.dtype != DType::F32 {
                    return Err(format!(
                        "operand {} of `{}` must be f32, found {t}",
                        i + 1,
                        self.name()
                    ));
                }
            }
            Ok(())
        };
        let same_shape = || -> Result<Type, String> {
            f32s(2)?;
            if operands[0].shape != operands[1].shape {
                return Err(format!(
                    "`{}` needs operands of one shape, found {} and {}",
                    self.name(),
                    operands[0],
                    operands[1]
                ));
            }
            Ok(operands[0].clone())
        };
        let tracked = |id: ParamId| -> Result<&Param, String> {
            let p = params
                .get(id.0 as usize)
                .ok_or_else(|| format!("no parameter #{}", id.0))?;
            if !matches!(p.storage, Storage::Tracked { .. }) || p.role != Role::Weight {
                return Err(format!(
                    "`{}` needs a tracked weight, but @{} is not one",
                    self.name(),
                    p.name
                ));
            }
            Ok(p)
        };
        let rank = |i: usize, r: usize| -> Result<&[usize], String> {
            let t = operands[i];
            if t.rank() != r {
                return Err(format!(
                    "operand {} of `{}` must have rank {r}, found {t}",
                    i + 1,
                    self.name()
                ));
            }
            Ok(&t.shape)
        };
        let masked = |id: ParamId| -> Result<(&Param, u64), String> {
            let p = params
                .get(id.0 as usize)
                .ok_or_else(|| format!("no parameter #{}", id.0))?;
            match p.storage {
                Storage::Masked { nnz } => Ok((p, nnz)),
                _ => Err(format!(
                    "`{}` needs a masked weight, but @{} is not one",
                    self.name(),
                    p.name
                )),
            }
        };
        // `x · Wᵀ` (`nt`) or `x · W` for a matrix weight `p` and `x`, operand 0.
        let weight_product = |p: &Param, nt: bool| -> Result<Type, String> {
            let x = rank(0, 2)?;
            if p.ty.rank() != 2 {
                return Err(format!(
                    "`{}` needs a matrix weight, @{} is {}",
                    self.name(),
                    p.name,
                    p.ty
                ));
            }
            let (rows, cols) = (p.ty.shape[0], p.ty.shape[1]);
            let (inner, out) = if nt { (cols, rows) } else { (rows, cols) };
            if x[1] != inner {
                return Err(format!(
                    "`{}`: {} does not fit the weight @{} {}",
                    self.name(),
                    operands[0],
                    p.name,
                    p.ty
                ));
            }
            Ok(Type::f32(vec![x[0], out]))
        };
        match self {
            Op::Param(id) => params
                .get(id.0 as usize)
                .map(|p| p.ty.with_encoding(Encoding::Dense))
                .ok_or_else(|| format!("no parameter #{}", id.0)),
            Op::Store(id) => {
                let param = params
                    .get(id.0 as usize)
                    .ok_or_else(|| format!("no parameter #{}", id.0))?;
                if operands[0].shape != param.ty.shape || operands[0].dtype != param.ty.dtype {
                    return Err(format!(
                        "cannot store {} into @{}, which is {}",
                        operands[0], param.name, param.ty
                    ));
                }
                // Entries stored into a tracked weight (its new tracked values, within its
                // budget): the value is the weight they make, dense, like any other store's.
                if let Encoding::Sparse { capacity } = operands[0].encoding {
                    match param.storage {
                        Storage::Tracked { budget } if capacity <= budget => {}
                        _ => {
                            return Err(format!(
                                "cannot store {} into @{}: only a tracked weight takes \
                                 entries, at most its budget",
                                operands[0], param.name
                            ))
                        }
                    }
                    return Ok(param.ty.with_encoding(Encoding::Dense));
                }
                Ok(operands[0].clone())
            }
            Op::Const { value, shape } => {
                if !value.is_finite() {
                    return Err(format!("constant {value} is not finite"));
                }
                checked_type(DType::F32, shape.clone())
            }
            Op::Reshape { shape } => {
                let from = operands[0];
                let to = checked_type(from.dtype, shape.clone())?;
                if to.num_elements() != from.num_elements() {
                    return Err(format!(
                        "cannot reshape {from} to {to}: element counts differ"
                    ));
                }
                Ok(to)
            }
            Op::MatMul { ta, tb } => {
                f32s(2)?;
                let a = rank(0, 2)?;
                let b = rank(1, 2)?;
                let (m, ka) = if *ta { (a[1], a[0]) } else { (a[0], a[1]) };
                let (kb, n) = if *tb { (b[1], b[0]) } else { (b[0], b[1]) };
                if ka != kb {
                    return Err(format!(
                        "`{}`: inner dimensions differ ({ka} vs {kb}) for {} and {}",
                        self.name(),
                        operands[0],
                        operands[1]
                    ));
                }
                Ok(Type::f32(vec![m, n]))
            }
            Op::BiasAdd => {
                f32s(2)?;
                let x = operands[0];
                let b = rank(1, 1)?;
                if x.rank() < 2 || x.shape[1] != b[0] {
                    return Err(format!(
                        "`bias_add` needs x: [B, C, ...] and b: [C], found {x} and {}",
                        operands[1]
                    ));
                }
                Ok(x.clone())
            }
            Op::Add | Op::Sub | Op::Mul | Op::UnaryGrad(_) => same_shape(),
            Op::Scale => {
                f32s(2)?;
                rank(1, 0)?;
                Ok(operands[0].clone())
            }
            Op::Unary(_) => {
                f32s(1)?;
                Ok(operands[0].clone())
            }
            Op::Conv2d { stride, padding } => {
                f32s(2)?;
                let x = rank(0, 4)?;
                let w = rank(1, 4)?;
                if x[1] != w[1] {
                    return Err(format!(
                        "`conv2d`: input has {} channels, weight expects {}",
                        x[1], w[1]
                    ));
                }
                let h = window_out(x[2], w[2], stride[0], padding[0])?;
                let wd = window_out(x[3], w[3], stride[1], padding[1])?;
                Ok(Type::f32(vec![x[0], w[0], h, wd]))
            }
            Op::Conv2dInputGrad {
                stride,
                padding,
                input,
            } => {
                f32s(2)?;
                let dy = rank(0, 4)?;
                let w = rank(1, 4)?;
                let out_h = window_out(input[0], w[2], stride[0], padding[0])?;
                let out_w = window_out(input[1], w[3], stride[1], padding[1])?;
                if dy[1] != w[0] || dy[2] != out_h || dy[3] != out_w {
                    return Err(format!(
                        "`conv2d_input_grad`: dy {} does not match weight {} and input {}x{}",
                        operands[0], operands[1], input[0], input[1]
                    ));
                }
                Ok(Type::f32(vec![dy[0], w[1], input[0], input[1]]))
            }
            Op::Conv2dWeightGrad {
                stride,
                padding,
                kernel,
            } => {
                f32s(2)?;
                let x = rank(0, 4)?;
                let dy = rank(1, 4)?;
                let out_h = window_out(x[2], kernel[0], stride[0], padding[0])?;
                let out_w = window_out(x[3], kernel[1], stride[1], padding[1])?;
                if dy[0] != x[0] || dy[2] != out_h || dy[3] != out_w {
                    return Err(format!(
                        "`conv2d_weight_grad`: dy {} does not match x {}",
                        operands[1], operands[0]
                    ));
                }
                Ok(Type::f32(vec![dy[1], x[1], kernel[0], kernel[1]]))
            }
            Op::MaxPool2d { kernel, stride } | Op::AvgPool2d { kernel, stride } => {
                f32s(1)?;
                let x = rank(0, 4)?;
                let h = window_out(x[2], kernel[0], stride[0], 0)?;
                let w = window_out(x[3], kernel[1], stride[1], 0)?;
                Ok(Type::f32(vec![x[0], x[1], h, w]))
            }
            Op::MaxPool2dGrad { kernel, stride } => {
                f32s(2)?;
                let dy = rank(0, 4)?;
                let x = rank(1, 4)?;
                let h = window_out(x[2], kernel[0], stride[0], 0)?;
                let w = window_out(x[3], kernel[1], stride[1], 0)?;
                if dy != [x[0], x[1], h, w] {
                    return Err(format!(
                        "`maxpool2d_grad`: dy {} does not match x {}",
                        operands[0], operands[1]
                    ));
                }
                Ok(operands[1].clone())
            }
            Op::AvgPool2dGrad {
                kernel,
                stride,
                input,
            } => {
                f32s(1)?;
                let dy = rank(0, 4)?;
                let h = window_out(input[0], kernel[0], stride[0], 0)?;
                let w = window_out(input[1], kernel[1], stride[1], 0)?;
                if dy[2] != h || dy[3] != w {
                    return Err(format!(
                        "`avgpool2d_grad`: dy {} does not match input {}x{}",
                        operands[0], input[0], input[1]
                    ));
                }
                Ok(Type::f32(vec![dy[0], dy[1], input[0], input[1]]))
            }
            Op::ReduceSum { axes } => {
                f32s(1)?;
                let x = operands[0];
                if axes.windows(2).any(|p| p[0] >= p[1]) || axes.iter().any(|&a| a >= x.rank()) {
                    return Err(format!(
                        "`reduce_sum`: axes {axes:?} must be strictly increasing and below the rank of {x}"
                    ));
                }
                let shape = (0..x.rank())
                    .filter(|a| !axes.contains(a))
                    .map(|a| x.shape[a])
                    .collect::<Vec<_>>();
                Ok(Type::f32(shape))
            }
            Op::SoftmaxXent | Op::SoftmaxXentGrad => {
                f32s(1)?;
                let logits = rank(0, 2)?;
                let labels = rank(1, 1)?;
                if operands[1].dtype != DType::I32 || labels[0] != logits[0] {
                    return Err(format!(
                        "`{}` needs logits [B, C] and labels i32[B], found {} and {}",
                        self.name(),
                        operands[0],
                        operands[1]
                    ));
                }
                Ok(match self {
                    Op::SoftmaxXent => Type::scalar_f32(),
                    _ => operands[0].clone(),
                })
            }
            Op::Argmax => {
                f32s(1)?;
                let x = rank(0, 2)?;
                Ok(Type::i32(vec![x[0]]))
            }
            Op::DropbackScore(id) | Op::DropbackApply { param: id, .. } => {
                let p = tracked(*id)?;
                f32s(1)?;
                if operands[0].shape != p.ty.shape {
                    return Err(format!(
                        "`{}`: operand {} does not have the shape of @{}, {}",
                        self.name(),
                        operands[0],
                        p.name,
                        p.ty
                    ));
                }
                if let Op::DropbackApply { offset, .. } = self {
                    let sel = operands[1];
                    let end = offset.checked_add(p.ty.num_elements() as u64);
                    if sel.dtype != DType::I32
                        || sel.rank() != 1
                        || !matches!(sel.encoding, Encoding::Sparse { .. })
                    {
                        return Err(format!(
                            "`dropback_apply` needs a selection i32[N]{{sparse K}}, found {sel}"
                        ));
                    }
                    if end.is_none_or(|e| e > sel.shape[0] as u64) {
                        return Err(format!(
                            "`dropback_apply`: @{} ({} elements) at offset {offset} does not \
                             fit in the selection {sel}",
                            p.name,
                            p.ty.num_elements()
                        ));
                    }
                }
                Ok(p.ty.with_encoding(Encoding::Dense))
            }
            Op::TopkSelect { k } => {
                let mut n: u64 = 0;
                for (i, t) in operands.iter().enumerate() {
                    if t.dtype != DType::F32 {
                        return Err(format!(
                            "operand {} of `topk_select` must be f32, found {t}",
                            i + 1
                        ));
                    }
                    n = n.saturating_add(t.num_elements() as u64);
                }
                let ty = Type::i32(vec![n.min(usize::MAX as u64) as usize]).with_encoding(
                    Encoding::Sparse {
                        capacity: (*k).min(n),
                    },
                );
                check_elements(&ty)
                    .map_err(|e| format!("`topk_select`: the scores together: {e}"))?;
                Ok(ty)
            }
            Op::MaskIndex(id) => {
                let (_, nnz) = masked_of_mask(params, *id)?;
                let m = &params[id.0 as usize];
                Ok(Type::i32(vec![m.ty.num_elements()])
                    .with_encoding(Encoding::Sparse { capacity: nnz }))
            }
            Op::MaskedMatMulNt(id) | Op::MaskedMatMul(id) => {
                let (p, nnz) = masked(*id)?;
                f32s(1)?;
                index_operand(self.name(), operands[1], p.ty.num_elements(), nnz)?;
                weight_product(p, matches!(self, Op::MaskedMatMulNt(_)))
            }
            Op::MaskedConv2d {
                param,
                stride,
                padding,
            }
            | Op::MaskedConv2dInputGrad {
                param,
                stride,
                padding,
                ..
            } => {
                let (p, nnz) = masked(*param)?;
                index_operand(self.name(), operands[1], p.ty.num_elements(), nnz)?;
                // The dense convolution's typing, with the weight as the second operand.
                let dense = match self {
                    Op::MaskedConv2dInputGrad { input, .. } => Op::Conv2dInputGrad {
                        stride: *stride,
                        padding: *padding,
                        input: *input,
                    },
                    _ => Op::Conv2d {
                        stride: *stride,
                        padding: *padding,
                    },
                };
                let weight = p.ty.with_encoding(Encoding::Dense);
                dense
                    .infer(&[operands[0], &weight], params)
                    .map_err(|e| format!("`{}`: {e}", self.name()))
            }
            Op::MaskedConv2dWeightGrad {
                stride,
                padding,
                kernel,
            } => {
                let dense = Op::Conv2dWeightGrad {
                    stride: *stride,
                    padding: *padding,
                    kernel: *kernel,
                };
                let ty = dense
                    .infer(&[operands[0], operands[1]], params)
                    .map_err(|e| format!("`{}`: {e}", self.name()))?;
                let Encoding::Sparse { capacity } = operands[2].encoding else {
                    return Err(format!(
                        "operand 3 of `{}` must be a mask index, found {}",
                        self.name(),
                        operands[2]
                    ));
                };
                index_operand(self.name(), operands[2], ty.num_elements(), capacity)?;
                Ok(ty)
            }
            Op::MaskedGrad => {
                f32s(2)?;
                let dy = rank(0, 2)?;
                let x = rank(1, 2)?;
                if dy[0] != x[0] {
                    return Err(format!(
                        "`masked_grad` needs one batch in dy and x, found {} and {}",
                        operands[0], operands[1]
                    ));
                }
                let Encoding::Sparse { capacity } = operands[2].encoding else {
                    return Err(format!(
                        "operand 3 of `masked_grad` must be a mask index, found {}",
                        operands[2]
                    ));
                };
                index_operand(self.name(), operands[2], dy[1] * x[1], capacity)?;
                Ok(Type::f32(vec![dy[1], x[1]]))
            }
            Op::TrackedSet(id) => {
                let p = tracked(*id)?;
                Ok(
                    Type::i32(vec![p.ty.num_elements()]).with_encoding(Encoding::Sparse {
                        capacity: tracked_budget(p),
                    }),
                )
            }
            Op::Regen(id) => Ok(tracked(*id)?.ty.with_encoding(Encoding::Regen)),
            Op::Tracked(id) | Op::Correction(id) => {
                let p = tracked(*id)?;
                Ok(p.ty.with_encoding(Encoding::Sparse {
                    capacity: tracked_budget(p),
                }))
            }
            Op::Overlay => {
                let (r, t) = (operands[0], operands[1]);
                if r.encoding != Encoding::Regen
                    || !matches!(t.encoding, Encoding::Sparse { .. })
                    || r.shape != t.shape
                    || r.dtype != DType::F32
                    || t.dtype != DType::F32
                {
                    return Err(format!(
                        "`overlay` needs a regenerated and a sparse f32 value of one shape, found {r} and {t}"
                    ));
                }
                Ok(r.with_encoding(Encoding::Dense))
            }
            Op::MatMulNtWeight(id) | Op::MatMulWeight(id) => {
                let p = tracked(*id)?;
                f32s(1)?;
                weight_product(p, matches!(self, Op::MatMulNtWeight(_)))
            }
            Op::DropbackScoreSgd(id)
            | Op::DropbackApplySgd { param: id, .. }
            | Op::DropbackScoreStream(id)
            | Op::DropbackUpdateSgd { param: id, .. } => {
                let p = tracked(*id)?;
                f32s(3)?;
                let dy = rank(0, 2)?;
                let x = rank(1, 2)?;
                rank(2, 0)?;
                if p.ty.rank() != 2
                    || dy[0] != x[0]
                    || [dy[1], x[1]] != [p.ty.shape[0], p.ty.shape[1]]
                {
                    return Err(format!(
                        "`{}`: dyᵀ·x of {} and {} is not the shape of @{} {}",
                        self.name(),
                        operands[0],
                        operands[1],
                        p.name,
                        p.ty
                    ));
                }
                match self {
                    Op::DropbackApplySgd { offset, .. } | Op::DropbackUpdateSgd { offset, .. } => {
                        // The same selection rules as `dropback_apply`.
                        let as_apply = Op::DropbackApply {
                            param: *id,
                            offset: *offset,
                        };
                        let w1 = p.ty.with_encoding(Encoding::Dense);
                        let applied = as_apply.infer(&[&w1, operands[3]], params)?;
                        match (self, p.storage) {
                            (Op::DropbackUpdateSgd { .. }, Storage::Tracked { budget }) => {
                                Ok(applied.with_encoding(Encoding::Sparse { capacity: budget }))
                            }
                            _ => Ok(applied),
                        }
                    }
                    Op::DropbackScoreStream(_) => Ok(p.ty.with_encoding(Encoding::Streamed)),
                    _ => Ok(p.ty.with_encoding(Encoding::Dense)),
                }
            }
        }
    }
}

/// Largest element count of one tensor the IR accepts (2^31), so sizes always fit the index
/// types of every backend.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Largest number of positions one selection spans (`i32[N]{sparse K}`: the positions of all
/// the parameters a global top-k covers together). A selection holds only its `K` entries, as
/// 64-bit positions, so `N` is not bounded by [`MAX_ELEMENTS`]; `K` is.
pub const MAX_POSITIONS: u64 = 1 << 48;

/// Whether `t` is within the IR's size limits: a selection (`i32[N]{sparse K}`) spans at most
/// [`MAX_POSITIONS`] positions and holds at most [`MAX_ELEMENTS`] entries; every other value
/// has at most [`MAX_ELEMENTS`] elements.
pub fn check_elements(t: &Type) -> Result<(), String> {
    match t.encoding {
        Encoding::Sparse { capacity } if t.dtype == DType::I32 && t.rank() == 1 => {
            if t.shape[0] as u64 > MAX_POSITIONS {
                return Err(format!("a selection of more than 2^48 positions ({t})"));
            }
            if capacity > MAX_ELEMENTS as u64 {
                return Err(format!("a selection of more than 2^31 entries ({t})"));
            }
            Ok(())
        }
        _ => checked_type(t.dtype, t.shape.clone()).map(|_| ()),
    }
}

/// A type whose element count is checked against [`MAX_ELEMENTS`] without overflow.
/// How many values a tracked parameter may hold (0 for any other).
fn tracked_budget(p: &Param) -> u64 {
    match p.storage {
        Storage::Tracked { budget } => budget,
        _ => 0,
    }
}

/// The masked weight a mask parameter belongs to, and how many entries it keeps.
fn masked_of_mask(params: &[Param], mask: ParamId) -> Result<(&Param, u64), String> {
    let m = params
        .get(mask.0 as usize)
        .ok_or_else(|| format!("no parameter #{}", mask.0))?;
    let Role::Mask(of) = m.role else {
        return Err(format!(
            "`mask_index` needs a mask, but @{} is not one",
            m.name
        ));
    };
    let w = params
        .get(of.0 as usize)
        .ok_or_else(|| format!("no parameter #{}", of.0))?;
    match w.storage {
        Storage::Masked { nnz } => Ok((w, nnz)),
        _ => Err(format!(
            "`mask_index @{}`: its weight @{} is not `masked`",
            m.name, w.name
        )),
    }
}

/// A mask index operand `i32[len]{sparse nnz}` of a masked product.
fn index_operand(op: &str, t: &Type, len: usize, nnz: u64) -> Result<(), String> {
    let want = Type::i32(vec![len]).with_encoding(Encoding::Sparse { capacity: nnz });
    if *t != want {
        return Err(format!(
            "`{op}` needs the weight's mask index {want}, found {t}"
        ));
    }
    Ok(())
}

pub fn checked_type(dtype: DType, shape: Vec<usize>) -> Result<Type, String> {
    let mut n: usize = 1;
    for &d in &shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {shape:?} has more than 2^31 elements"))?;
    }
    Ok(Type::dense(dtype, shape))
}

/// Output length of a sliding window (PyTorch's floor rule), or why there is none.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize, String> {
    if kernel == 0 || stride == 0 {
        return Err("kernel and stride must be at least 1".into());
    }
    let padded = padding
        .checked_mul(2)
        .and_then(|p| p.checked_add(input))
        .ok_or("padding too large")?;
    if padded < kernel {
        return Err(format!(
            "kernel {kernel} is larger than the padded input {padded}"
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

/// Reads named attributes once each, in any order, and rejects leftovers.
struct AttrReader<'a> {
    op: &'a str,
    attrs: &'a [(String, Attr)],
    used: Vec<bool>,
}

impl<'a> AttrReader<'a> {
    fn new(op: &'a str, attrs: &'a [(String, Attr)]) -> Self {
        AttrReader {
            op,
            attrs,
            used: vec![false; attrs.len()],
        }
    }

    fn take(&mut self, key: &str) -> Result<&'a Attr, String> {
        let mut found = None;
        for (i, (k, v)) in self.attrs.iter().enumerate() {
            if k == key {
                if found.is_some() {
                    return Err(format!("`{}`: attribute `{key}` given twice", self.op));
                }
                self.used[i] = true;
                found = Some(v);
            }
        }
        found.ok_or_else(|| format!("`{}` needs attribute `{key}`", self.op))
    }

    fn ints(&mut self, key: &str) -> Result<Vec<usize>, String> {
        match self.take(key)? {
            Attr::Ints(v) => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| format!("`{key}`: {x} is too large")))
                .collect(),
            other => Err(format!(
                "`{}`: attribute `{key}` must be a list of integers, found {other:?}",
                self.op
            )),
        }
    }

    fn int(&mut self, key: &str) -> Result<u64, String> {
        match self.take(key)? {
            Attr::Int(v) => Ok(*v),
            other => Err(format!(
                "`{}`: attribute `{key}` must be an integer, found {other:?}",
                self.op
            )),
        }
    }

    fn hw(&mut self, key: &str) -> Result<Hw, String> {
        match self.ints(key)?.as_slice() {
            &[h, w] => Ok([h, w]),
            other => Err(format!(
                "`{}`: attribute `{key}` must have two entries, found {}",
                self.op,
                other.len()
            )),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.used.iter().position(|u| !u) {
            Some(i) => Err(format!(
                "`{}` has no attribute `{}`",
                self.op, self.attrs[i].0
            )),
            None => Ok(()),
        }
    }
}
