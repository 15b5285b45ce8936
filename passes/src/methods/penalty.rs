//! A penalty in the training objective, as IR: `loss = ce + weight · P`, where `P` is a scalar the
//! method writes (PruneTrain's group lasso, ADMM's `Σ ½‖W − Z + U‖²`).
//!
//! ```text
//! ; appended to @forward by the method's pass (before autodiff), all loc(<method>):
//! %P    = ...                                   the method's instructions
//! %loss = add %ce, (scale %P, const weight)     the new first result
//! ```
//!
//! Autodiff then differentiates the penalty with the loss. `@forward` is evaluation, so after
//! autodiff [`SplitOutputs`] returns it to the plain loss (the reported test loss is the
//! cross-entropy) and appends `ce` and `P` to `@train_step`'s results, after `(loss, logits)`, for
//! the run side (a calibration, the metrics).

use sparsec_ir::func_names::{FORWARD, TRAIN_STEP};
use sparsec_ir::{Func, Module, Op, Param, Stage, Type, Value};

use crate::pipeline::Pass;

/// Appends instructions to a function, typed, with the penalty's location.
pub struct Emitter<'a> {
    pub params: &'a [Param],
    pub f: &'a mut Func,
    loc: &'static str,
}

impl Emitter<'_> {
    pub fn push(&mut self, op: Op, operands: &[Value]) -> Result<Value, String> {
        self.f.push(self.params, op, operands, Some(self.loc))
    }

    pub fn constant(&mut self, value: f32, shape: Vec<usize>) -> Result<Value, String> {
        self.push(Op::Const { value, shape }, &[])
    }

    /// `Σ` of a tensor: one scalar.
    pub fn sum_all(&mut self, x: Value) -> Result<Value, String> {
        let rank = self.f.value_type(x).rank();
        self.push(
            Op::ReduceSum {
                axes: (0..rank).collect(),
            },
            &[x],
        )
    }

    /// `a + b + ...` of scalars (`0` when there are none).
    pub fn sum_scalars(&mut self, terms: &[Value]) -> Result<Value, String> {
        let Some((&first, rest)) = terms.split_first() else {
            return self.constant(0.0, vec![]);
        };
        rest.iter()
            .try_fold(first, |acc, &t| self.push(Op::Add, &[acc, t]))
    }
}

/// Whether a function holds instructions of the penalty at `loc`.
pub fn has_penalty(f: &Func, loc: &str) -> bool {
    f.insts.iter().any(|i| i.loc.as_deref() == Some(loc))
}

/// `module` at stage `train` with `weight · P` added to `@forward`'s loss, `P` built by `build`.
pub fn add_to_loss(
    module: &Module,
    loc: &'static str,
    weight: f64,
    build: impl FnOnce(&mut Emitter<'_>) -> Result<Value, String>,
) -> Result<Module, String> {
    let mut out = module.clone();
    out.stage = Stage::Train;
    let fi = out
        .funcs
        .iter()
        .position(|f| f.name == FORWARD)
        .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
    let mut f = out.funcs[fi].clone();
    let mut em = Emitter {
        params: &out.params,
        f: &mut f,
        loc,
    };
    let penalty = build(&mut em)?;
    if em.f.value_type(penalty) != &Type::scalar_f32() {
        return Err(format!("the {loc} penalty is not a scalar"));
    }
    let w = em.constant(weight as f32, vec![])?;
    let weighted = em.push(Op::Scale, &[penalty, w])?;
    let ce = em.f.results[0];
    let loss = em.push(Op::Add, &[ce, weighted])?;
    f.results[0] = loss;
    out.funcs[fi] = f;
    Ok(out)
}

/// `(ce, P)` of a function whose loss is `add %ce, (scale %P, %weight)` at `loc`.
fn loss_parts(f: &Func, loc: &str) -> Option<(Value, Value)> {
    let Value::Inst(i) = *f.results.first()? else {
        return None;
    };
    let add = &f.insts[i as usize];
    if add.op != Op::Add || add.loc.as_deref() != Some(loc) {
        return None;
    }
    let Value::Inst(s) = add.operands[1] else {
        return None;
    };
    let scale = &f.insts[s as usize];
    (scale.op == Op::Scale).then(|| (add.operands[0], scale.operands[0]))
}

/// After autodiff: `@forward` back to its plain loss, `(ce, P)` appended to `@train_step`.
pub fn split_outputs(module: &Module, loc: &str) -> Result<Module, String> {
    let mut out = module.clone();
    for f in out
        .funcs
        .iter_mut()
        .filter(|f| f.name == FORWARD || f.name == TRAIN_STEP)
    {
        let Some((ce, penalty)) = loss_parts(f, loc) else {
            return Err(format!(
                "@{}'s loss is not the objective `add %ce, (scale %P, %weight)` of {loc}",
                f.name
            ));
        };
        if f.name == FORWARD {
            // The penalty's instructions were appended after the plain loss: drop them.
            let first = f
                .insts
                .iter()
                .position(|i| i.loc.as_deref() == Some(loc))
                .unwrap_or(f.insts.len());
            f.insts.truncate(first);
            f.results[0] = ce;
        } else {
            f.results.push(ce);
            f.results.push(penalty);
        }
    }
    Ok(out)
}

/// Whether [`split_outputs`] has run for the penalty at `loc`.
pub fn outputs_split(module: &Module, loc: &str) -> bool {
    module.func(FORWARD).is_some_and(|f| !has_penalty(f, loc))
        && module
            .func(TRAIN_STEP)
            .is_some_and(|f| has_penalty(f, loc) && f.results.len() >= 4)
}

/// The pass after autodiff of the penalty at `loc`: [`split_outputs`].
pub struct SplitOutputs {
    /// The pass's name (`--print-after`).
    pub name: &'static str,
    pub loc: &'static str,
}

impl Pass for SplitOutputs {
    fn name(&self) -> &'static str {
        self.name
    }
    fn stage_after(&self) -> Stage {
        Stage::Train
    }
    fn applied(&self, module: &Module) -> bool {
        outputs_split(module, self.loc)
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        split_outputs(module, self.loc)
    }
}

/// A method's penalty: what its pass before autodiff adds to the loss.
pub trait Penalty {
    /// The pass's name (`--print-after`).
    fn pass_name(&self) -> &'static str;
    /// The location of its instructions.
    fn loc(&self) -> &'static str;
    /// The weight of `P` in the loss.
    fn weight(&self) -> f64;
    /// Append the instructions of `P` (a scalar) to `@forward`.
    fn build(&self, module: &Module, em: &mut Emitter<'_>) -> Result<Value, String>;
}

/// The pass before autodiff of a [`Penalty`]: [`add_to_loss`].
pub struct PenaltyPass<P>(pub P);

impl<P: Penalty> Pass for PenaltyPass<P> {
    fn name(&self) -> &'static str {
        self.0.pass_name()
    }
    fn stage_after(&self) -> Stage {
        Stage::Train
    }
    fn applied(&self, module: &Module) -> bool {
        module.funcs.iter().any(|f| has_penalty(f, self.0.loc()))
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        add_to_loss(module, self.0.loc(), self.0.weight(), |em| {
            self.0.build(module, em)
        })
    }
}
