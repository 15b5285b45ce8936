//! Channel liveness: which units of a selected layer are dead, from the weights.
//!
//! A unit is *live* when any group that carries it has `max |w| ≥ threshold`: the producer's row
//! (or output channel), and every consumer's input column or channel — after a flatten, the
//! block of `H·W` columns of that channel, live when any column is; at a residual add, every
//! layer meeting there. That is the union over every edge of the unit group
//! ([`crate::structural::units::unit_group`]), read off the IR, so a unit is removed only when
//! every weight that touches it is below the threshold. **Decision:** the absolute value, as the
//! spec says; the authors' code compares the signed maximum (`max w < threshold`), which would
//! also call dead a channel whose weights are all large and negative: such units are counted
//! (`signed_rule_differs`) so that a log says where the two rules part.

use sparsec_ir::Module;

use crate::structural::units::unit_group;

/// What the analysis says about one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Liveness {
    pub layer: String,
    pub width: usize,
    /// The dead units, increasing.
    pub dead: Vec<usize>,
    /// Per unit: the largest `|w|` over every group that carries it.
    pub max_abs: Vec<f32>,
    /// Units live by `|w|` that the authors' signed rule (`max w < threshold`) calls dead.
    pub signed_rule_differs: usize,
}

/// The liveness of `layer`'s units in `module` (stage `ir`) under the weights `values` returns
/// by parameter name (row-major, at the module's shapes).
pub fn liveness<'a>(
    module: &Module,
    layer: &str,
    values: impl Fn(&str) -> Option<&'a [f32]>,
    threshold: f32,
) -> Result<Liveness, String> {
    let group = unit_group(module, layer)?;
    let width = group.units;
    let mut max_abs = vec![0f32; width];
    let mut max_signed = vec![f32::NEG_INFINITY; width];
    for &(id, axis, block) in &group.params {
        let p = module.param(id);
        if !p.name.ends_with(".weight") {
            continue; // biases are not groups (docs/methods.md §4)
        }
        let w = values(&p.name).ok_or_else(|| format!("no values for @{}", p.name))?;
        let shape = &p.ty.shape;
        if w.len() != shape.iter().product::<usize>() {
            return Err(format!(
                "@{} has {} values for shape {shape:?}",
                p.name,
                w.len()
            ));
        }
        let inner: usize = shape[axis + 1..].iter().product();
        let n = shape[axis];
        for (i, &x) in w.iter().enumerate() {
            let unit = (i / inner) % n / block;
            max_abs[unit] = max_abs[unit].max(x.abs());
            max_signed[unit] = max_signed[unit].max(x);
        }
    }
    let dead: Vec<usize> = (0..width).filter(|&u| max_abs[u] < threshold).collect();
    let signed_rule_differs = (0..width)
        .filter(|&u| max_abs[u] >= threshold && max_signed[u] < threshold)
        .count();
    Ok(Liveness {
        layer: layer.to_owned(),
        width,
        dead,
        max_abs,
        signed_rule_differs,
    })
}
