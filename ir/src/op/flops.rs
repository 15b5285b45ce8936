//! The FLOP count of one instruction, the one both the cost model (passes/src/eqsat/cost.rs) and
//! `sparsec report` read.
//!
//! A product `[m,k]·[k,n]` (any transposes, and the fused products that regenerate their weight)
//! is 2·m·k·n; a convolution and both of its gradients 2·B·O·H'·W'·C·KH·KW; pooling and its
//! gradients one per element of each window (output elements · KH·KW); Dropback's fused scoring
//! and update the weight gradient `dyᵀx` (2·O·I·B) and one op per element; every other
//! arithmetic op (activations and their gradients, additions, reductions, softmax cross-entropy
//! and its gradient, argmax, Dropback's score, apply and top-k selection, a mask's index) one per
//! element of its largest operand or result. The masked products (`masked_matmul_nt`,
//! `masked_matmul`, `masked_grad`) are 2·B·N for the N entries a mask keeps. Moving or regenerating data (`param`, `store`, `const`, `reshape`,
//! `regen`, `tracked`, `correction`, `tracked_set`) costs 0: the cost model counts those bytes
//! and regenerated words as terms of their own.

use super::Op;
use crate::types::Type;

fn elements(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

impl Op {
    /// FLOPs of one instruction with these operand and result types (see the module docs).
    pub fn flops(&self, operands: &[&Type], result: &Type) -> u64 {
        let shape = |i: usize| -> &[usize] { operands.get(i).map_or(&[][..], |t| &t.shape) };
        let out = elements(&result.shape);
        match self {
            Op::Param(_)
            | Op::Store(_)
            | Op::Const { .. }
            | Op::Reshape { .. }
            | Op::TrackedSet(_)
            | Op::Regen(_)
            | Op::Tracked(_)
            | Op::Correction(_) => 0,
            Op::MatMul { ta, .. } => {
                // The contracted length is the first operand's inner (transposed: outer) axis.
                let a = shape(0);
                let k = if *ta { a.first() } else { a.last() };
                2 * out * k.copied().unwrap_or(0) as u64
            }
            // `x · Wᵀ` and `dy · W` for a weight `[O, I]`: the contracted length is the
            // operand's last axis.
            Op::MatMulNtWeight(_) | Op::MatMulWeight(_) => {
                2 * out * shape(0).last().copied().unwrap_or(0) as u64
            }
            // The weight gradient `dyᵀx` (`dy: [B, O]`, `x: [B, I]`), then one op per element.
            Op::DropbackScoreSgd(_)
            | Op::DropbackApplySgd { .. }
            | Op::DropbackScoreStream(_)
            | Op::DropbackUpdateSgd { .. } => {
                let b = shape(0).first().copied().unwrap_or(0) as u64;
                2 * out * b + out
            }
            // The masked products: 2 per kept entry and batch row (`B` is the first operand's
            // leading axis, `N` the mask index's capacity).
            Op::MaskedMatMulNt(_) | Op::MaskedMatMul(_) | Op::MaskedGrad => {
                let b = shape(0).first().copied().unwrap_or(0) as u64;
                let nnz = operands
                    .last()
                    .and_then(|t| match t.encoding {
                        crate::types::Encoding::Sparse { capacity } => Some(capacity),
                        _ => None,
                    })
                    .unwrap_or(0);
                2 * b * nnz
            }
            // Each kept weight of a masked convolution meets every output position of its plane:
            // 2·B·H'·W'·N (the output gradient's `H'·W'` for the gradients).
            Op::MaskedConv2d { .. }
            | Op::MaskedConv2dInputGrad { .. }
            | Op::MaskedConv2dWeightGrad { .. } => {
                let nnz = operands
                    .last()
                    .and_then(|t| match t.encoding {
                        crate::types::Encoding::Sparse { capacity } => Some(capacity),
                        _ => None,
                    })
                    .unwrap_or(0);
                let dy_or_y = match self {
                    Op::MaskedConv2d { .. } => &result.shape,
                    Op::MaskedConv2dInputGrad { .. } => shape(0),
                    _ => shape(1),
                };
                let per = dy_or_y.first().copied().unwrap_or(0) as u64
                    * elements(dy_or_y.get(2..).unwrap_or(&[]));
                2 * per * nnz
            }
            // Output positions of the forward convolution times one window of the weight.
            Op::Conv2d { .. } => 2 * out * elements(shape(1).get(1..).unwrap_or(&[])),
            Op::Conv2dInputGrad { .. } => {
                2 * elements(shape(0)) * elements(shape(1).get(1..).unwrap_or(&[]))
            }
            // (x, dy) ↦ dw [O, C, KH, KW]: every output position of dy meets a C·KH·KW window.
            Op::Conv2dWeightGrad { .. } => {
                2 * elements(shape(1)) * elements(result.shape.get(1..).unwrap_or(&[]))
            }
            Op::MaxPool2d { kernel, .. } | Op::AvgPool2d { kernel, .. } => {
                out * (kernel[0] * kernel[1]) as u64
            }
            // The gradient walks the same windows as the forward pool, whose output is `dy`.
            Op::MaxPool2dGrad { kernel, .. } | Op::AvgPool2dGrad { kernel, .. } => {
                elements(shape(0)) * (kernel[0] * kernel[1]) as u64
            }
            _ => operands
                .iter()
                .map(|t| elements(&t.shape))
                .chain([out])
                .max()
                .unwrap_or(0),
        }
    }
}
