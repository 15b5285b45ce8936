//! The analytic cost of an e-node: integer, deterministic, from shapes alone.
//!
//! `time` adds floating-point operations ([`Op::flops`], the count `sparsec report` shows too),
//! bytes moved through memory, regenerated words (each
//! generated once per use of the op, then reused across the batch rows of a tile) and bytes
//! materialised (written to a buffer that outlives the op), each weighted by a constant of
//! [`CostModel`]. `memory` is the bytes a value occupies if it is materialised: dense values
//! count fully, regenerated and streamed values not at all, sparse values by their capacity.

use sparsec_ir::{Encoding, Op, Param, Storage, Type};

/// The weights of the cost terms. The golden `opt` dumps pin the results of these constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostModel {
    pub flop: u64,
    pub byte_moved: u64,
    /// One ChaCha8 word: a 20-ish-cycle quarter of a block, about eight flops' worth.
    pub regen_word: u64,
    pub byte_materialised: u64,
    /// One flop of a masked (sparse) product, against one of a dense product: the sparse
    /// kernels (`sparsec_ir::interp::masked`) are plain loops over the kept positions, the
    /// dense ones blocked AVX-512 GEMM. Measured with bench/admm_step.py on LeNet-5
    /// (2026-12-06): stage 3's retraining, its convolutions sparse at 8–20 % of their weights,
    /// ran at 0.71× the dense step, about 18× the dense time per flop for the convolutions;
    /// fc1 sparse at 6.4 % ran about level with dense (≈ 15×). So a sparse product is taken
    /// when it keeps fewer than about 1/16 of the weights' flops.
    pub sparse_flop: u64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            flop: 1,
            byte_moved: 1,
            regen_word: 8,
            byte_materialised: 2,
            sparse_flop: 16,
        }
    }
}

impl CostModel {
    /// The constants by name, for dump headers.
    pub fn entries(&self) -> [(&'static str, u64); 5] {
        [
            ("flop", self.flop),
            ("byte", self.byte_moved),
            ("regen_word", self.regen_word),
            ("materialised_byte", self.byte_materialised),
            ("sparse_flop", self.sparse_flop),
        ]
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeCost {
    pub time: u64,
    pub memory: u64,
}

/// Passes a top-k selection makes over scores it remakes (a histogram of the top bits, often a
/// second of the next bits, then the pass that collects the selection).
pub const STREAM_PASSES: u64 = 3;

/// The cost of reading a seeded or tracked weight as an opaque dense value (see `op_cost`).
pub const OPAQUE_READ: u64 = 1 << 48;

/// Bytes of a value as it is held: dense fully, sparse by capacity (index + value), else 0.
pub fn held_bytes(ty: &Type) -> u64 {
    match ty.encoding {
        Encoding::Dense => 4 * ty.num_elements() as u64,
        Encoding::Sparse { capacity } => 8 * capacity,
        _ => 0,
    }
}

/// Number of logical elements.
fn n(ty: &Type) -> u64 {
    ty.num_elements() as u64
}

/// The cost of one op, given its operand and result types.
pub fn op_cost(
    model: &CostModel,
    op: &Op,
    operands: &[&Type],
    result: &Type,
    params: &[Param],
) -> NodeCost {
    let out_bytes = held_bytes(result);
    let in_bytes: u64 = operands.iter().map(|t| held_bytes(t)).sum();
    let mut regen_words = 0u64;
    let mut moved = in_bytes + out_bytes;
    let mut materialised = out_bytes;
    match op {
        Op::Param(id) => {
            let p = &params[id.0 as usize];
            match p.storage {
                // The stored weight itself: reading it moves it, but nothing new is written.
                Storage::Dense | Storage::Masked { .. } => {
                    materialised = 0;
                    moved = 0;
                }
                // A seeded or tracked weight has no dense copy to read: once phase A has
                // spelled out how it is rebuilt (`overlay(regen, tracked)`), that form is what
                // the program must say, so the opaque read is never the cheaper choice.
                Storage::Seeded | Storage::Tracked { .. } => {
                    return NodeCost {
                        time: OPAQUE_READ,
                        memory: out_bytes,
                    }
                }
            }
        }
        // The tracked values are the parameter's persistent state, not a new buffer.
        Op::Tracked(_) => {
            moved = 0;
            materialised = 0;
        }
        Op::Store(_) => {
            materialised = 0;
        }
        Op::Const { .. } | Op::Reshape { .. } => {
            // Reshape is a view; constants are folded into their users.
            moved = 0;
            materialised = 0;
        }
        _ => {
            if let Some(id) = op.param() {
                let p = &params[id.0 as usize];
                if matches!(p.storage, Storage::Seeded | Storage::Tracked { .. }) {
                    // Ops that compare with or fall back to the initial value regenerate it.
                    regen_words = n(&p.ty);
                }
            }
        }
    }
    let flops = match op {
        // A fused form (a product that regenerates its weight inside, Dropback's score and
        // update fed from the gradient's factors) is charged one pass over its largest operand
        // or result, not the product it contains. This undercount is what makes extraction
        // choose the fused forms, which never materialise a weight or a gradient; with the
        // full count, a weight overlaid once and shared by its three products wins on time
        // (and takes 2.4x the memory on LeNet-300-100). Which to prefer is a measured decision
        // for the speed work, not one to change silently here.
        Op::MatMulNtWeight(_)
        | Op::MatMulWeight(_)
        | Op::DropbackScoreSgd(_)
        | Op::DropbackApplySgd { .. }
        | Op::DropbackUpdateSgd { .. } => operands
            .iter()
            .map(|t| n(t))
            .chain([n(result)])
            .max()
            .unwrap_or(0),
        // Streamed scores are remade in every pass of their selection, each pass the whole
        // weight gradient and a regeneration of the weight: charged in full, so that they are
        // taken only when a memory budget cannot hold the scores.
        Op::DropbackScoreStream(_) => {
            regen_words *= STREAM_PASSES;
            STREAM_PASSES * op.flops(operands, result)
        }
        _ => op.flops(operands, result),
    };
    let per_flop = match op {
        Op::MaskedMatMulNt(_)
        | Op::MaskedMatMul(_)
        | Op::MaskedGrad
        | Op::MaskedConv2d { .. }
        | Op::MaskedConv2dInputGrad { .. }
        | Op::MaskedConv2dWeightGrad { .. } => model.sparse_flop,
        _ => model.flop,
    };
    NodeCost {
        time: flops * per_flop
            + moved * model.byte_moved
            + regen_words * model.regen_word
            + materialised * model.byte_materialised,
        memory: materialised,
    }
}
