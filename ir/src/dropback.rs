//! Dropback's budgets, shared by the typing rules, the `dropback` pass and the interpreter so
//! that all three agree on how many weights each tracked parameter may hold.
//!
//! - `scope: global` (the paper's setting): one budget `k` shared by every tracked parameter;
//!   one parameter alone can hold at most `min(k, len)` of them.
//! - `scope: per_layer`: `k` is split over the tracked parameters (weights and biases are
//!   separate parameters) in proportion to their sizes by the largest-remainder method: each
//!   gets `floor(k · len / total)`, then the `k − Σ floor` weights left over go one each to the
//!   parameters with the largest remainders `(k · len) mod total`, ties to the earlier parameter
//!   in the parameter table. The shares sum to `min(k, total)` and never exceed a parameter's size.

use crate::module::{Param, ParamId, Role, Storage};
use crate::spec::DropbackScope;

/// The tracked parameters (weights with `tracked` storage), in parameter-table order, with their
/// element counts.
pub fn tracked_params(params: &[Param]) -> Vec<(ParamId, u64)> {
    params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == Role::Weight && matches!(p.storage, Storage::Tracked { .. }))
        .map(|(i, p)| (ParamId(i as u32), p.ty.num_elements() as u64))
        .collect()
}

/// The per-parameter shares of a `per_layer` budget `k` over parameters of the given sizes
/// (largest remainder, see the module docs).
pub fn split_budget(k: u64, sizes: &[u64]) -> Vec<u64> {
    let total: u128 = sizes.iter().map(|&n| u128::from(n)).sum();
    if total == 0 {
        return vec![0; sizes.len()];
    }
    let k = u128::from(k).min(total);
    let mut shares: Vec<u128> = sizes.iter().map(|&n| k * u128::from(n) / total).collect();
    let left = k - shares.iter().sum::<u128>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Largest remainder first, ties to the earlier parameter (a stable sort keeps table order).
    order.sort_by_key(|&i| std::cmp::Reverse(k * u128::from(sizes[i]) % total));
    for &i in order.iter().take(left as usize) {
        shares[i] += 1;
    }
    shares.into_iter().map(|s| s as u64).collect()
}

/// The budget of each tracked parameter: its `per_layer` share, or for `global` scope the whole
/// `k` (capped at its size). Parameters that are not tracked are absent.
pub fn budgets(params: &[Param]) -> Vec<(ParamId, u64)> {
    let tracked = tracked_params(params);
    let scope_k = |id: ParamId| match params[id.0 as usize].storage {
        Storage::Tracked { k, scope } => (k, scope),
        _ => unreachable!("tracked_params returns tracked parameters"),
    };
    // Per-layer parameters with one `k` share it; lowering gives every tracked parameter of a
    // module the same (k, scope), but a hand-written module may mix them.
    let mut out: Vec<(ParamId, u64)> = Vec::with_capacity(tracked.len());
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
    for (i, &(id, n)) in tracked.iter().enumerate() {
        let (k, scope) = scope_k(id);
        out.push((id, k.min(n)));
        if scope == DropbackScope::PerLayer {
            match groups.iter_mut().find(|g| g.0 == k) {
                Some(g) => g.1.push(i),
                None => groups.push((k, vec![i])),
            }
        }
    }
    for (k, members) in groups {
        let sizes: Vec<u64> = members.iter().map(|&i| tracked[i].1).collect();
        for (&i, share) in members.iter().zip(split_budget(k, &sizes)) {
            out[i].1 = share;
        }
    }
    out
}

/// How many tracked values parameter `id` may hold, or `None` when it is not tracked.
pub fn capacity(params: &[Param], id: ParamId) -> Option<u64> {
    budgets(params)
        .into_iter()
        .find(|&(p, _)| p == id)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_remainder_split() {
        assert_eq!(split_budget(10, &[5, 5]), vec![5, 5]);
        // 7·6/12 = 3.5, 7·4/12 = 2.33, 7·2/12 = 1.17 → 3, 2, 1 and one left: to the 0.5.
        assert_eq!(split_budget(7, &[6, 4, 2]), vec![4, 2, 1]);
        // Equal remainders: the earlier parameter wins.
        assert_eq!(split_budget(1, &[1, 1]), vec![1, 0]);
        // k above the total: every element.
        assert_eq!(split_budget(100, &[3, 4]), vec![3, 4]);
        let s = split_budget(20_000, &[235_200, 300, 30_000, 100, 1000, 10]);
        assert_eq!(s.iter().sum::<u64>(), 20_000);
    }
}
