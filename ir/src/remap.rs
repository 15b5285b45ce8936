//! Parameter remaps: what a structural change of a program keeps of each parameter.
//!
//! A structural pass (units or channels removed, `sparsec_passes::structural`) returns the new
//! module together with a [`Remap`]: for each parameter whose shape changes, the indices kept
//! along each axis, in increasing order. [`remap_state`] carries a training state over to the
//! new module through it: weights and biases are sliced; a momentum buffer follows the remap of
//! its weight, so optimizer state is never left behind or misaligned.

use std::collections::BTreeMap;

use crate::interp::{Float, State};
use crate::module::{Module, Storage};

/// Kept indices per axis of one parameter: `None` keeps the whole axis.
pub type AxisKeep = Vec<Option<Vec<usize>>>;

/// What a structural change keeps of each weight, by weight name (a parameter not named is
/// kept whole; a momentum buffer follows its weight).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Remap {
    keep: BTreeMap<String, AxisKeep>,
}

impl Remap {
    pub fn new() -> Remap {
        Remap::default()
    }

    /// Keep only `indices` (increasing) along `axis` of weight `name`, on top of what is
    /// already kept along other axes.
    pub fn keep(&mut self, name: &str, rank: usize, axis: usize, indices: Vec<usize>) {
        let axes = self
            .keep
            .entry(name.to_owned())
            .or_insert_with(|| vec![None; rank]);
        axes[axis] = Some(indices);
    }

    /// Whether weight `name` changes shape.
    pub fn changes(&self, name: &str) -> bool {
        self.keep.contains_key(name)
    }

    /// The kept indices of each axis of weight `name`, if it changes.
    pub fn axes(&self, name: &str) -> Option<&AxisKeep> {
        self.keep.get(name)
    }

    /// This remap followed by `next` (which indexes the shapes this one leaves): one remap
    /// from the original shapes to the final ones.
    pub fn then(&self, next: &Remap) -> Remap {
        let mut keep = self.keep.clone();
        for (name, axes) in &next.keep {
            let composed = match keep.get(name) {
                None => axes.clone(),
                Some(first) => first
                    .iter()
                    .zip(axes)
                    .map(|(a, b)| match (a, b) {
                        (a, None) => a.clone(),
                        (None, b) => b.clone(),
                        (Some(a), Some(b)) => Some(b.iter().map(|&j| a[j]).collect()),
                    })
                    .collect(),
            };
            keep.insert(name.clone(), composed);
        }
        Remap { keep }
    }

    /// The weights that change, with what they keep.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &AxisKeep)> {
        self.keep.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The old flat (row-major) index of every element that survives, in the new row-major order:
/// `new[j] = old[gather(shape, keep)[j]]`.
pub fn gather_indices(shape: &[usize], keep: &AxisKeep) -> Result<Vec<usize>, String> {
    if keep.len() != shape.len() {
        return Err(format!(
            "a remap of rank {} for a parameter of rank {}",
            keep.len(),
            shape.len()
        ));
    }
    let axes: Vec<Vec<usize>> = shape
        .iter()
        .zip(keep)
        .map(|(&n, k)| match k {
            None => Ok((0..n).collect()),
            Some(ix) => {
                if ix.windows(2).any(|w| w[0] >= w[1]) || ix.last().is_some_and(|&i| i >= n) {
                    Err(format!(
                        "kept indices must be increasing and below {n}, found {ix:?}"
                    ))
                } else {
                    Ok(ix.clone())
                }
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![0usize];
    for (axis, kept) in axes.iter().enumerate() {
        let stride: usize = shape[axis + 1..].iter().product();
        out = out
            .iter()
            .flat_map(|&base| kept.iter().map(move |&i| base + i * stride))
            .collect();
    }
    Ok(out)
}

/// The state of `new` (the module after a structural change) from `state`, the state of `old`,
/// through `remap`. Every parameter of `new` is found in `old` by name; a weight takes the
/// elements its remap keeps, a momentum buffer those of its weight's remap, and everything
/// else is copied whole. A parameter whose size does not come out right is an error.
pub fn remap_state<T: Float>(
    old: &Module,
    new: &Module,
    state: &State<T>,
    remap: &Remap,
) -> Result<State<T>, String> {
    let mut values = Vec::with_capacity(new.params.len());
    let mut tracked = Vec::with_capacity(new.params.len());
    for p in &new.params {
        let id = old
            .param_by_name(&p.name)
            .ok_or_else(|| format!("@{} is not a parameter of the program before", p.name))?;
        let i = id.0 as usize;
        let before = old.param(id);
        let owner = match before.role.owner() {
            None => before.name.as_str(),
            Some(of) => old.param(of).name.as_str(),
        };
        let data = match remap.axes(owner) {
            None => {
                if before.ty.shape != p.ty.shape {
                    return Err(format!(
                        "@{} changes shape from {:?} to {:?} but the remap does not say how",
                        p.name, before.ty.shape, p.ty.shape
                    ));
                }
                tracked.push(state.tracked[i].clone());
                values.push(state.values[i].clone());
                continue;
            }
            Some(keep) => {
                if matches!(before.storage, Storage::Tracked { .. }) || state.tracked[i].is_some() {
                    // Untracked values are regenerated from their flat positions, which a
                    // change of shape moves: the sliced parameter would not hold its values.
                    return Err(format!(
                        "@{} is tracked (Dropback): a tracked parameter cannot change shape",
                        p.name
                    ));
                }
                let gather = gather_indices(&before.ty.shape, keep)
                    .map_err(|e| format!("@{}: {e}", p.name))?;
                let old_values = &state.values[i];
                if gather.iter().any(|&g| g >= old_values.len()) {
                    return Err(format!("@{}: the state holds too few values", p.name));
                }
                gather.iter().map(|&g| old_values[g]).collect::<Vec<T>>()
            }
        };
        if data.len() != p.ty.num_elements() {
            return Err(format!(
                "@{}: the remap keeps {} values, its new shape {:?} holds {}",
                p.name,
                data.len(),
                p.ty.shape,
                p.ty.num_elements()
            ));
        }
        tracked.push(None);
        values.push(data);
    }
    Ok(State {
        values,
        tracked,
        init_scale: state.init_scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_keeps_rows_and_columns_in_order() {
        // [3, 4]: keep rows 0 and 2, columns 1 and 3.
        let g = gather_indices(&[3, 4], &vec![Some(vec![0, 2]), Some(vec![1, 3])]).unwrap();
        assert_eq!(g, vec![1, 3, 9, 11]);
        let whole = gather_indices(&[2, 2], &vec![None, None]).unwrap();
        assert_eq!(whole, vec![0, 1, 2, 3]);
        assert!(gather_indices(&[2], &vec![Some(vec![1, 0])]).is_err());
        assert!(gather_indices(&[2], &vec![Some(vec![2])]).is_err());
    }
}
