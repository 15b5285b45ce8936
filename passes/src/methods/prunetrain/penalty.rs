//! The group-lasso penalty in the loss (`group_lasso`, before autodiff) and its values as outputs
//! of the step (`group_lasso_outputs`, after autodiff).
//!
//! ```text
//! ; per group family (a weight W and the axis a its groups run along):
//! %sq = mul %W, %W
//! %s  = reduce_sum %sq ...            Σ w² per index of axis a (axis 0: through a reshape to
//!                                     [1, n, rest], so the gradient broadcasts by bias_add)
//! %n  = sqrt (add %s, const 1e-8)     one norm per group
//! %g  = reduce_sum %n {axes=[0]}
//! ; then
//! %GL   = add %g1, %g2, ...
//! %loss = add %ce, (scale %GL, const λ)          loc(group_lasso)
//! ```
//!
//! Autodiff then gives the penalty's gradient with the loss's, and the JIT fuses its
//! element-wise part like any other. `@forward` is evaluation: after autodiff, the second pass
//! returns it to the plain loss (the penalty is the training objective, not the reported test
//! loss) and appends `ce` and `GL` to `@train_step`'s results, after `(loss, logits)`, for the
//! run side's calibration of λ and its metrics.

use sparsec_ir::op::Unary;
use sparsec_ir::{Module, Op, Value};

use super::penalty_groups;
use crate::methods::penalty::{Emitter, Penalty};

pub const PENALTY_PASS: &str = "group_lasso";
pub const OUTPUTS_PASS: &str = "group_lasso_outputs";
/// The location of the penalty's instructions.
pub const LOC: &str = "group_lasso";
/// The `ε` inside each group's square root (the spec's 1e-8).
pub const EPSILON: f32 = 1e-8;

/// Adds `λ · GL` to `@forward`'s loss.
pub struct GroupLasso {
    pub layers: Vec<String>,
    pub lambda: f64,
}

impl Penalty for GroupLasso {
    fn pass_name(&self) -> &'static str {
        PENALTY_PASS
    }
    fn loc(&self) -> &'static str {
        LOC
    }
    fn weight(&self) -> f64 {
        self.lambda
    }
    fn build(&self, module: &Module, em: &mut Emitter<'_>) -> Result<Value, String> {
        let mut norms_sums = Vec::new();
        for (id, axis) in penalty_groups(module, &self.layers)? {
            let shape = em.params[id.0 as usize].ty.shape.clone();
            let w = em.push(Op::Param(id), &[])?;
            let sq = em.push(Op::Mul, &[w, w])?;
            let sums = if axis == 0 {
                let rest: usize = shape[1..].iter().product();
                let flat = em.push(
                    Op::Reshape {
                        shape: vec![1, shape[0], rest],
                    },
                    &[sq],
                )?;
                em.push(Op::ReduceSum { axes: vec![0, 2] }, &[flat])?
            } else {
                let axes = (0..shape.len()).filter(|&a| a != axis).collect();
                em.push(Op::ReduceSum { axes }, &[sq])?
            };
            let eps = em.constant(EPSILON, vec![shape[axis]])?;
            let inner = em.push(Op::Add, &[sums, eps])?;
            let norms = em.push(Op::Unary(Unary::Sqrt), &[inner])?;
            norms_sums.push(em.push(Op::ReduceSum { axes: vec![0] }, &[norms])?);
        }
        em.sum_scalars(&norms_sums)
    }
}
