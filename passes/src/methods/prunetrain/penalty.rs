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

use sparsec_ir::func_names::{FORWARD, TRAIN_STEP};
use sparsec_ir::op::Unary;
use sparsec_ir::{Func, Module, Op, Stage, Type, Value};

use super::penalty_groups;
use crate::pipeline::Pass;

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

fn has_penalty(f: &Func) -> bool {
    f.insts.iter().any(|i| i.loc.as_deref() == Some(LOC))
}

impl Pass for GroupLasso {
    fn name(&self) -> &'static str {
        PENALTY_PASS
    }
    fn stage_after(&self) -> Stage {
        Stage::Train
    }
    fn applied(&self, module: &Module) -> bool {
        module.funcs.iter().any(has_penalty)
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        let groups = penalty_groups(module, &self.layers)?;
        let mut out = module.clone();
        out.stage = Stage::Train;
        let fi = out
            .funcs
            .iter()
            .position(|f| f.name == FORWARD)
            .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
        let mut f = out.funcs[fi].clone();
        let params = out.params.clone();
        let loc = Some(LOC);
        let push = |f: &mut Func, op: Op, operands: &[Value]| f.push(&params, op, operands, loc);
        let mut total: Option<Value> = None;
        for (id, axis) in groups {
            let shape = params[id.0 as usize].ty.shape.clone();
            let w = push(&mut f, Op::Param(id), &[])?;
            let sq = push(&mut f, Op::Mul, &[w, w])?;
            let sums = if axis == 0 {
                let rest: usize = shape[1..].iter().product();
                let flat = push(
                    &mut f,
                    Op::Reshape {
                        shape: vec![1, shape[0], rest],
                    },
                    &[sq],
                )?;
                push(&mut f, Op::ReduceSum { axes: vec![0, 2] }, &[flat])?
            } else {
                let axes = (0..shape.len()).filter(|&a| a != axis).collect();
                push(&mut f, Op::ReduceSum { axes }, &[sq])?
            };
            let eps = push(
                &mut f,
                Op::Const {
                    value: EPSILON,
                    shape: vec![shape[axis]],
                },
                &[],
            )?;
            let inner = push(&mut f, Op::Add, &[sums, eps])?;
            let norms = push(&mut f, Op::Unary(Unary::Sqrt), &[inner])?;
            let g = push(&mut f, Op::ReduceSum { axes: vec![0] }, &[norms])?;
            total = Some(match total {
                None => g,
                Some(t) => push(&mut f, Op::Add, &[t, g])?,
            });
        }
        let gl = match total {
            Some(gl) => gl,
            None => push(
                &mut f,
                Op::Const {
                    value: 0.0,
                    shape: vec![],
                },
                &[],
            )?,
        };
        let lambda = push(
            &mut f,
            Op::Const {
                value: self.lambda as f32,
                shape: vec![],
            },
            &[],
        )?;
        let weighted = push(&mut f, Op::Scale, &[gl, lambda])?;
        let ce = f.results[0];
        let loss = push(&mut f, Op::Add, &[ce, weighted])?;
        f.results[0] = loss;
        out.funcs[fi] = f;
        Ok(out)
    }
}

/// After autodiff: `@forward` back to its plain loss, and `(ce, GL)` appended to
/// `@train_step`'s results.
pub struct PenaltyOutputs;

/// `(ce, GL)` of a function whose loss is the penalty's `add %ce, (scale %GL, %λ)`.
fn loss_parts(f: &Func) -> Option<(Value, Value)> {
    let Value::Inst(i) = *f.results.first()? else {
        return None;
    };
    let add = &f.insts[i as usize];
    if add.op != Op::Add || add.loc.as_deref() != Some(LOC) {
        return None;
    }
    let Value::Inst(s) = add.operands[1] else {
        return None;
    };
    let scale = &f.insts[s as usize];
    (scale.op == Op::Scale).then(|| (add.operands[0], scale.operands[0]))
}

impl Pass for PenaltyOutputs {
    fn name(&self) -> &'static str {
        OUTPUTS_PASS
    }
    fn stage_after(&self) -> Stage {
        Stage::Train
    }
    fn applied(&self, module: &Module) -> bool {
        module.func(FORWARD).is_some_and(|f| !has_penalty(f))
            && module
                .func(TRAIN_STEP)
                .is_some_and(|f| f.results.len() == 4)
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        let mut out = module.clone();
        for f in out
            .funcs
            .iter_mut()
            .filter(|f| f.name == FORWARD || f.name == TRAIN_STEP)
        {
            let Some((ce, gl)) = loss_parts(f) else {
                return Err(format!(
                    "@{}'s loss is not the group-lasso objective `add %ce, (scale %GL, %λ)`",
                    f.name
                ));
            };
            if f.name == FORWARD {
                // The penalty's instructions were appended after the plain loss: drop them.
                let first = f
                    .insts
                    .iter()
                    .position(|i| i.loc.as_deref() == Some(LOC))
                    .unwrap_or(f.insts.len());
                f.insts.truncate(first);
                f.results[0] = ce;
            } else if f.name == TRAIN_STEP {
                if f.value_type(gl) != &Type::scalar_f32() {
                    return Err("the group-lasso sum is not a scalar".into());
                }
                f.results.push(ce);
                f.results.push(gl);
            }
        }
        Ok(out)
    }
}
