//! Unit groups and their removal.
//!
//! A *unit* of a layer is one output feature of a `dense` layer or one output channel of a
//! `conv2d`. Removing it is never local: every tensor that carries it along its channel axis
//! (axis 1 of an activation) loses it too. The analysis follows the program's edges, which the
//! IR knows exactly (no trace, no guessing), and collects a [`UnitGroup`]:
//!
//! - the producer's weight rows (axis 0) and bias entries;
//! - through element-wise activations and pooling, which keep the channel axis;
//! - across a flatten (`reshape [B, C, H, W] → [B, C·H·W]`): unit `c` becomes the block of
//!   features `[c·H·W, (c+1)·H·W)`;
//! - into each consumer: a `dense` layer's weight columns (axis 1), a `conv2d`'s input channels
//!   (axis 1), block by block after a flatten;
//! - at a residual `add`, both operands carry the same units, so every layer meeting there joins
//!   the group (the union): removing a unit removes it from all of them.
//!
//! What cannot be followed is an error that names the op: the data (the program's input), the
//! classifier's outputs (they reach the loss), or an op with no rule here.

use std::collections::{BTreeMap, HashMap};

use sparsec_ir::func_names::FORWARD;
use sparsec_ir::remap::Remap;
use sparsec_ir::{verify, Func, Module, Op, ParamId, Stage, Storage, Type, Value};

use super::StructuralPass;

/// Every tensor and parameter axis that carries the units of one layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitGroup {
    /// The number of units.
    pub units: usize,
    /// Values of `@forward` with the units on axis 1, each with its block size (1 before a
    /// flatten, `H·W` after).
    pub values: BTreeMap<Value, usize>,
    /// Parameter axes that carry the units: (parameter, axis, block size).
    pub params: Vec<(ParamId, usize, usize)>,
}

impl UnitGroup {
    /// Every parameter of the group is stored densely: a tracked weight's untracked values are
    /// regenerated from their flat positions, which a change of shape would move.
    pub fn check_dense(&self, m: &Module) -> Result<(), String> {
        match self
            .params
            .iter()
            .find(|(id, _, _)| m.param(*id).storage != Storage::Dense)
        {
            Some(&(id, _, _)) => Err(format!(
                "@{} is not stored densely (storage {}): only dense parameters can lose units",
                m.param(id).name,
                storage_name(m.param(id).storage)
            )),
            None => Ok(()),
        }
    }
}

/// `H·W` when a reshape from `from` to `to` is a flatten (`[B, C, ...] → [B, C·...]`), the only
/// reshape units can cross: unit `c` becomes the block `[c·H·W, (c+1)·H·W)`.
fn flatten_block(from: &[usize], to: &[usize]) -> Option<usize> {
    let hw: usize = from.get(2..)?.iter().product();
    let flat = from[1].checked_mul(hw)?;
    (to.len() == 2 && to[0] == from[0] && to[1] == flat && hw > 0).then_some(hw)
}

/// The parameter a value reads, if it is a `param` instruction.
fn param_read(f: &Func, v: Value) -> Option<ParamId> {
    match v {
        Value::Inst(i) => match f.insts[i as usize].op {
            Op::Param(id) => Some(id),
            _ => None,
        },
        Value::Arg(_) => None,
    }
}

/// The product (`matmul_nt` or `conv2d`) that reads `layer.weight` in `@forward`.
fn layer_product(m: &Module, f: &Func, layer: &str) -> Result<Value, String> {
    let weight = m
        .param_by_name(&format!("{layer}.weight"))
        .ok_or_else(|| format!("`{layer}` is not a layer with weights"))?;
    f.insts
        .iter()
        .enumerate()
        .find(|(_, inst)| {
            matches!(
                inst.op,
                Op::MatMul {
                    ta: false,
                    tb: true
                } | Op::Conv2d { .. }
            ) && param_read(f, inst.operands[1]) == Some(weight)
        })
        .map(|(i, _)| Value::Inst(i as u32))
        .ok_or_else(|| format!("no dense or conv2d product reads @{layer}.weight"))
}

/// The output of `layer` in `f`: its product, or the `bias_add` on it when the layer has a bias.
pub fn layer_output(m: &Module, f: &Func, layer: &str) -> Result<Value, String> {
    let product = layer_product(m, f, layer)?;
    let biased = f.insts.iter().position(|inst| {
        inst.op == Op::BiasAdd
            && inst.operands[0] == product
            && param_read(f, inst.operands[1])
                .is_some_and(|b| m.param(b).name == format!("{layer}.bias"))
    });
    Ok(biased.map_or(product, |i| Value::Inst(i as u32)))
}

/// The group of tensors and parameter axes that carry the units of `layer` (see the module
/// docs), in a module at stage `ir`.
pub fn unit_group(m: &Module, layer: &str) -> Result<UnitGroup, String> {
    let f = m
        .func(FORWARD)
        .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
    let start = layer_product(m, f, layer)?;
    let units = f.value_type(start).shape[1];
    let mut users: HashMap<Value, Vec<(usize, usize)>> = HashMap::new();
    for (i, inst) in f.insts.iter().enumerate() {
        for (k, &v) in inst.operands.iter().enumerate() {
            users.entry(v).or_default().push((i, k));
        }
    }
    let mut group = UnitGroup {
        units,
        ..Default::default()
    };
    let mut work = vec![(start, 1usize)];
    let add_param = |group: &mut UnitGroup, p: ParamId, axis: usize, block: usize| {
        if !group.params.contains(&(p, axis, block)) {
            group.params.push((p, axis, block));
        }
    };
    while let Some((v, block)) = work.pop() {
        match group.values.get(&v) {
            Some(&b) if b == block => continue,
            Some(&b) => {
                return Err(format!(
                "the units of `{layer}` reach one tensor in two layouts (blocks {b} and {block})"
            ))
            }
            None => {
                group.values.insert(v, block);
            }
        }
        // Backward: where the value comes from.
        let Value::Inst(vi) = v else {
            return Err(format!(
                "the units of `{layer}` are tied to the program's input, which cannot lose them"
            ));
        };
        let inst = &f.insts[vi as usize];
        let here = inst.loc.as_deref().unwrap_or("?");
        match &inst.op {
            Op::MatMul {
                ta: false,
                tb: true,
            }
            | Op::Conv2d { .. } => {
                let w = param_read(f, inst.operands[1]).ok_or_else(|| {
                    format!("`{here}`: the weight of a product is not a parameter")
                })?;
                if block != 1 {
                    return Err(format!("`{here}`: a product's outputs met after a flatten"));
                }
                add_param(&mut group, w, 0, 1);
            }
            Op::BiasAdd => {
                let b = param_read(f, inst.operands[1])
                    .ok_or_else(|| format!("`{here}`: a bias that is not a parameter"))?;
                add_param(&mut group, b, 0, block);
                work.push((inst.operands[0], block));
            }
            Op::Unary(_) | Op::MaxPool2d { .. } | Op::AvgPool2d { .. } => {
                work.push((inst.operands[0], block))
            }
            Op::Add => {
                work.push((inst.operands[0], block));
                work.push((inst.operands[1], block));
            }
            Op::Reshape { .. } => {
                let from = &f.value_type(inst.operands[0]).shape;
                match flatten_block(from, &inst.ty.shape) {
                    Some(hw) if block % hw == 0 => work.push((inst.operands[0], block / hw)),
                    _ => return Err(format!("`{here}`: cannot follow units through `reshape`")),
                }
            }
            other => {
                return Err(format!(
                    "`{here}`: cannot follow the units of `{layer}` through `{}`",
                    other.name()
                ))
            }
        }
        // Forward: where the value goes.
        for &(ui, k) in users.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            let user = &f.insts[ui];
            let out = Value::Inst(ui as u32);
            let there = user.loc.as_deref().unwrap_or("?");
            match (&user.op, k) {
                (
                    Op::MatMul {
                        ta: false,
                        tb: true,
                    }
                    | Op::Conv2d { .. },
                    0,
                ) => {
                    let w = param_read(f, user.operands[1]).ok_or_else(|| {
                        format!("`{there}`: the weight of a product is not a parameter")
                    })?;
                    add_param(&mut group, w, 1, block);
                }
                (Op::BiasAdd, 0)
                | (Op::Unary(_), 0)
                | (Op::MaxPool2d { .. } | Op::AvgPool2d { .. }, 0)
                | (Op::Add, _) => work.push((out, block)),
                (Op::Reshape { .. }, 0) => {
                    match flatten_block(&f.value_type(v).shape, &user.ty.shape) {
                        Some(hw) => work.push((out, block * hw)),
                        None => {
                            return Err(format!("`{there}`: cannot follow units through `reshape`"))
                        }
                    }
                }
                (Op::SoftmaxXent, _) => {
                    return Err(format!(
                    "the units of `{layer}` are the classifier's outputs, which are never removed"
                ))
                }
                (op, _) => {
                    return Err(format!(
                        "`{there}`: cannot follow the units of `{layer}` through `{}`",
                        op.name()
                    ))
                }
            }
        }
        if f.results.contains(&v) {
            return Err(format!(
                "the units of `{layer}` are the classifier's outputs, which are never removed"
            ));
        }
    }
    group.params.sort();
    Ok(group)
}

/// Remove chosen units of a layer, and of every layer tied to it ([`unit_group`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveUnits {
    pub layer: String,
    /// Unit indices to remove (any order; duplicates ignored).
    pub units: Vec<usize>,
}

impl StructuralPass for RemoveUnits {
    fn describe(&self) -> String {
        format!("remove {} units of {}", self.units.len(), self.layer)
    }

    fn run(&self, m: &Module) -> Result<(Module, Remap), String> {
        if m.stage != Stage::Ir {
            return Err(format!(
                "removing units works on a program at stage ir, not {}",
                m.stage
            ));
        }
        let group = unit_group(m, &self.layer)?;
        let mut removed = vec![false; group.units];
        for &u in &self.units {
            *removed.get_mut(u).ok_or_else(|| {
                format!(
                    "`{}` has {} units; there is no unit {u}",
                    self.layer, group.units
                )
            })? = true;
        }
        let kept_units = removed.iter().filter(|&&r| !r).count();
        if kept_units == 0 {
            return Err(format!(
                "removing every unit of `{}` would leave the layer empty",
                self.layer
            ));
        }
        group.check_dense(m)?;
        let mut out = m.clone();
        let mut remap = Remap::new();
        for &(id, axis, block) in &group.params {
            let p = &m.params[id.0 as usize];
            let n = p.ty.shape[axis];
            let kept: Vec<usize> = (0..n).filter(|&i| !removed[i / block]).collect();
            let mut shape = out.params[id.0 as usize].ty.shape.clone();
            shape[axis] = kept.len();
            out.params[id.0 as usize].ty = Type::f32(shape);
            remap.keep(&p.name, p.ty.rank(), axis, kept);
        }
        let fi = out
            .funcs
            .iter()
            .position(|f| f.name == FORWARD)
            .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
        out.funcs[fi] = retype(&out, &m.funcs[fi])?;
        if let Err(errors) = verify(&out) {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Err(format!(
                "internal error: the program after removing units does not verify: {}",
                list.join("; ")
            ));
        }
        Ok((out, remap))
    }
}

/// Several removals at once, each on the program the previous one left (a layer's unit
/// indices are those of the program as it stands before the whole change, so the removals must
/// be of distinct unit groups: their indices do not shift each other).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveUnitsEach(pub Vec<RemoveUnits>);

impl StructuralPass for RemoveUnitsEach {
    fn describe(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|r| r.describe()).collect();
        parts.join(", ")
    }

    fn run(&self, m: &Module) -> Result<(Module, Remap), String> {
        let mut module = m.clone();
        let mut remap = Remap::new();
        let mut seen: Vec<Vec<(ParamId, usize, usize)>> = Vec::new();
        for removal in &self.0 {
            let group = unit_group(m, &removal.layer)?.params;
            if seen.contains(&group) {
                return Err(format!(
                    "`{}` shares its units with a layer already changed in this step",
                    removal.layer
                ));
            }
            seen.push(group);
            let (next, step) = removal.run(&module)?;
            remap = remap.then(&step);
            module = next;
        }
        Ok((module, remap))
    }
}

/// `f` with every instruction re-typed under `m`'s (new) parameter shapes. A flatten's target
/// shape follows its input; any other shape-carrying op must still type as it stands.
fn retype(m: &Module, f: &Func) -> Result<Func, String> {
    let mut g = Func::new(f.name.clone());
    g.args = f.args.clone();
    for inst in &f.insts {
        let op = match &inst.op {
            Op::Reshape { shape } if shape.len() == 2 => {
                let from = g.value_type(inst.operands[0]);
                Op::Reshape {
                    shape: vec![from.shape[0], from.shape[1..].iter().product()],
                }
            }
            op => op.clone(),
        };
        g.push(&m.params, op, &inst.operands, inst.loc.as_deref())
            .map_err(|e| {
                format!(
                    "`{}` no longer types after the change: {e}",
                    inst.loc.as_deref().unwrap_or(inst.op.name())
                )
            })?;
    }
    g.results = f.results.clone();
    Ok(g)
}

fn storage_name(storage: Storage) -> &'static str {
    match storage {
        Storage::Dense => "dense",
        Storage::Seeded => "seeded",
        Storage::Tracked { .. } => "tracked",
        Storage::Masked { .. } => "masked",
    }
}

#[cfg(test)]
mod tests {
    use super::flatten_block;

    #[test]
    fn only_a_flatten_carries_units_across_a_reshape() {
        assert_eq!(flatten_block(&[8, 6, 4, 4], &[8, 96]), Some(16));
        assert_eq!(flatten_block(&[8, 96], &[8, 96]), Some(1));
        // The batch axis moves, or the channels do not lead: units would not be blocks.
        assert_eq!(flatten_block(&[8, 6, 4, 4], &[48, 16]), None);
        assert_eq!(flatten_block(&[8, 6, 4, 4], &[8, 6, 16]), None);
        assert_eq!(flatten_block(&[96], &[96]), None);
    }
}
