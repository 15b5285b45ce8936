//! The `dropback` pass: after [`crate::build_train_step`], every tracked weight's SGD result
//! goes through Dropback's selection before it is stored (docs/methods.md §1, docs/dropback.md).
//!
//! ```text
//! %w1  = sub %w, %step                              (the SGD result, as autodiff built it)
//! %s1  = dropback_score @fc1.weight, %w1            one score per tracked weight, table order
//! %sel = topk_select %s1, %s2, ... {k=K}            one global selection (scope: global)
//! %n1  = dropback_apply @fc1.weight, %w1, %sel {offset=O}   O = sizes of the earlier ones
//! %_   = store @fc1.weight, %n1
//! ```
//!
//! * **Scope.** `global`: one `topk_select` over the concatenation of all scores in
//!   parameter-table order with the method's `k`. `per_layer`: one `topk_select` per tracked
//!   parameter with its share of `k`, the budget its storage carries (resolved by
//!   [`sparsec_ir::dropback::resolve_budgets`]: proportional to the sizes, largest remainder).
//! * **What is selected.** The tracked weights that `@train_step` stores (those with a gradient).
//!   A tracked weight without a gradient is never stored, so it keeps its initial value and
//!   takes no part in the selection.
//! * **`freeze_after`.** When set, the pass also builds `@train_step_frozen` (same signature):
//!   identical except that each tracked weight's selection is its own current tracked set
//!   (`tracked_set @p`), so tracked weights keep updating, untracked ones keep `w0`, and the set
//!   never grows. The runtime calls it from epoch `freeze_after + 1` on (1-based epochs).
//! * **`decay_init`.** Nothing in the IR: the runtime sets the state's `init_scale` to
//!   `decay^t` before step `t` (0-based), so every read of `w0` in that step (`param`,
//!   `dropback_score`, `dropback_apply`, the final `store`) sees `decay^t · W0`: untracked
//!   weights shrink by `decay` between steps (see docs/dropback.md).
//! * **Momentum** is refused before any pass runs ([`super::Dropback`]'s `validate`).

use sparsec_ir::func_names::{TRAIN_STEP, TRAIN_STEP_FROZEN};
use sparsec_ir::spec::{DropbackScope, Method};
use sparsec_ir::{Func, Module, Op, ParamId, Stage, Value};

use crate::pipeline::Pass;

/// The location of the instructions the pass adds.
pub const DROPBACK_LOC: &str = "dropback";
/// The pass's name (`--print-after dropback`).
pub const PASS_NAME: &str = "dropback";

/// [`apply_dropback`] as a pass of the pipeline.
pub struct DropbackPass;

impl Pass for DropbackPass {
    fn name(&self) -> &'static str {
        PASS_NAME
    }

    fn stage_after(&self) -> Stage {
        Stage::Train
    }

    /// Applied when every store of a tracked weight in `@train_step` goes through a selection.
    fn applied(&self, module: &Module) -> bool {
        let Some(step) = module.func(TRAIN_STEP) else {
            return false;
        };
        let budgets = sparsec_ir::dropback::budgets(&module.params);
        step.insts.iter().all(|inst| match inst.op {
            Op::Store(id) if budgets.iter().any(|&(p, _)| p == id) => {
                matches!(inst.operands[0], Value::Inst(j) if matches!(
                    step.insts[j as usize].op,
                    Op::DropbackApply { .. } | Op::DropbackApplySgd { .. }
                ))
            }
            _ => true,
        })
    }

    fn run(&self, module: &Module) -> Result<Module, String> {
        apply_dropback(module)
    }
}

/// Apply Dropback to a module at stage `train` whose method is `dropback` (see the module docs).
pub fn apply_dropback(m: &Module) -> Result<Module, String> {
    let fail = |msg: String| format!("dropback: {msg}");
    let (k, scope, freeze_after) = match m.method.as_ref().map(|s| &s.method) {
        Some(Method::Dropback {
            k,
            scope,
            freeze_after,
            ..
        }) => (*k, *scope, *freeze_after),
        _ => return Err(fail("the module's method is not dropback".into())),
    };
    let step = m
        .func(TRAIN_STEP)
        .ok_or_else(|| fail(format!("the module has no @{TRAIN_STEP}")))?;
    if m.func(TRAIN_STEP_FROZEN).is_some() {
        return Err(fail(format!("the module already has @{TRAIN_STEP_FROZEN}")));
    }
    let budgets = sparsec_ir::dropback::budgets(&m.params);
    let mut out = m.clone();
    let selecting = rebuild(m, step, &budgets, Selection::TopK { k, scope }).map_err(fail)?;
    let index = out
        .funcs
        .iter()
        .position(|f| f.name == TRAIN_STEP)
        .expect("found above");
    out.funcs[index] = selecting;
    if freeze_after.is_some() {
        let mut frozen = rebuild(m, step, &budgets, Selection::Frozen).map_err(fail)?;
        frozen.name = TRAIN_STEP_FROZEN.into();
        out.funcs.insert(index + 1, frozen);
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Selection {
    TopK { k: u64, scope: DropbackScope },
    Frozen,
}

/// `step` with the stores of tracked weights removed and re-emitted at the end behind the
/// selection.
fn rebuild(
    m: &Module,
    step: &Func,
    budgets: &[(ParamId, u64)],
    selection: Selection,
) -> Result<Func, String> {
    let is_tracked = |id: ParamId| budgets.iter().any(|&(p, _)| p == id);
    // The tracked stores: (parameter, stored value), and which instructions they are.
    let mut stores: Vec<(ParamId, Value)> = Vec::new();
    let mut dropped = vec![false; step.insts.len()];
    for (i, inst) in step.insts.iter().enumerate() {
        if let Op::Store(id) = inst.op {
            if is_tracked(id) {
                stores.push((id, inst.operands[0]));
                dropped[i] = true;
            }
        }
    }
    let used = |v: Value| {
        step.results.contains(&v) || step.insts.iter().any(|inst| inst.operands.contains(&v))
    };
    for (i, _) in dropped.iter().enumerate().filter(|(_, &d)| d) {
        if used(Value::Inst(i as u32)) {
            return Err(format!(
                "@{} uses the result of the store %{i}; Dropback moves that store",
                step.name
            ));
        }
    }
    stores.sort_by_key(|&(id, _)| id);

    // Copy everything else, renumbering.
    let mut f = Func::new(step.name.clone());
    f.args = step.args.clone();
    let mut map: Vec<Option<Value>> = vec![None; step.insts.len()];
    let remap = |map: &[Option<Value>], v: Value| match v {
        Value::Arg(_) => v,
        Value::Inst(j) => map[j as usize].expect("operands come before their uses"),
    };
    for (i, inst) in step.insts.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        let mut inst = inst.clone();
        inst.operands = inst.operands.iter().map(|&v| remap(&map, v)).collect();
        f.insts.push(inst);
        map[i] = Some(Value::Inst(f.insts.len() as u32 - 1));
    }
    f.results = step.results.iter().map(|&v| remap(&map, v)).collect();
    let stores: Vec<(ParamId, Value)> = stores
        .into_iter()
        .map(|(id, v)| (id, remap(&map, v)))
        .collect();

    let loc = Some(DROPBACK_LOC);
    let emit = |f: &mut Func, op: Op, operands: &[Value]| f.push(&m.params, op, operands, loc);
    // The selection of each stored weight, with its offset in it.
    let mut sels: Vec<(Value, u64)> = Vec::new();
    match selection {
        Selection::TopK {
            k,
            scope: DropbackScope::Global,
        } => {
            let mut scores = Vec::new();
            for &(id, w1) in &stores {
                scores.push(emit(&mut f, Op::DropbackScore(id), &[w1])?);
            }
            if !scores.is_empty() {
                let sel = emit(&mut f, Op::TopkSelect { k }, &scores)?;
                let mut offset = 0u64;
                for &(id, _) in &stores {
                    sels.push((sel, offset));
                    offset += m.param(id).ty.num_elements() as u64;
                }
            }
        }
        Selection::TopK {
            scope: DropbackScope::PerLayer,
            ..
        } => {
            for &(id, w1) in &stores {
                let k = budgets
                    .iter()
                    .find(|&&(p, _)| p == id)
                    .map_or(0, |&(_, k)| k);
                let score = emit(&mut f, Op::DropbackScore(id), &[w1])?;
                sels.push((emit(&mut f, Op::TopkSelect { k }, &[score])?, 0));
            }
        }
        Selection::Frozen => {
            for &(id, _) in &stores {
                sels.push((emit(&mut f, Op::TrackedSet(id), &[])?, 0));
            }
        }
    }
    for (&(id, w1), &(sel, offset)) in stores.iter().zip(&sels) {
        let new = emit(&mut f, Op::DropbackApply { param: id, offset }, &[w1, sel])?;
        emit(&mut f, Op::Store(id), &[new])?;
    }
    Ok(f)
}
