//! Dropback's budgets: how many weights each tracked parameter may hold. They are resolved once,
//! when the method gives its parameters `tracked` storage, and kept on the parameters
//! ([`Storage::Tracked`]'s `budget`); the typing rules, the passes and the interpreter read them
//! from there, and the verifier checks them against the method's `k` and scope here.
//!
//! - `scope: global` (the paper's setting): one budget `k` shared by every tracked parameter;
//!   one parameter alone can hold at most `min(k, len)` of them.
//! - `scope: per_layer`: `k` is split over the tracked parameters (weights and biases are
//!   separate parameters) in proportion to their sizes by the largest-remainder method: each
//!   gets `floor(k · len / total)`, then the `k − Σ floor` weights left over go one each to the
//!   parameters with the largest remainders `(k · len) mod total`, ties to the earlier parameter
//!   in the parameter table. The shares sum to `min(k, total)` and never exceed a parameter's size.

use crate::module::{Module, Param, ParamId, Role, Storage};
use crate::spec::{DropbackScope, Method};

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

/// The budget of each of the tracked parameters of the given sizes, in order: for `global`
/// scope the whole `k` (capped at the parameter's size: the selection is one top-`k` over all of
/// them), for `per_layer` its share of `k`.
pub fn resolve_budgets(k: u64, scope: DropbackScope, sizes: &[u64]) -> Vec<u64> {
    match scope {
        DropbackScope::Global => sizes.iter().map(|&n| k.min(n)).collect(),
        DropbackScope::PerLayer => split_budget(k, sizes),
    }
}

/// The tracked parameters, in parameter-table order, with their budgets.
pub fn budgets(params: &[Param]) -> Vec<(ParamId, u64)> {
    params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.storage {
            Storage::Tracked { budget } => Some((ParamId(i as u32), budget)),
            _ => None,
        })
        .collect()
}

/// The verifier's rule for tracked storage: only weights are tracked, no budget exceeds its
/// parameter, and under a `dropback` method every budget is the one the method's `k` and scope
/// give (so `k` has one source, the method line). Returns (parameter index, message) for each
/// violation.
pub(crate) fn check_budgets(m: &Module) -> Vec<(usize, String)> {
    let mut errors = Vec::new();
    let tracked: Vec<(usize, u64, u64)> = m
        .params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.storage {
            Storage::Tracked { budget } => Some((i, budget, p.ty.num_elements() as u64)),
            _ => None,
        })
        .collect();
    for &(i, _, _) in &tracked {
        if m.params[i].role != Role::Weight {
            errors.push((i, "only a weight can have `tracked` storage".to_owned()));
        }
    }
    for &(i, budget, n) in &tracked {
        if budget > n {
            errors.push((i, format!("budget {budget} exceeds the {n} elements")));
        }
    }
    // Without a Dropback method line (a hand-written module) there is no `k` to check against.
    let Some((k, scope)) = m.method.as_ref().and_then(|s| match s.method {
        Method::Dropback { k, scope, .. } => Some((k, scope)),
        _ => None,
    }) else {
        return errors;
    };
    if k == 0 {
        return errors; // the method line's own check reports it
    }
    let sizes: Vec<u64> = tracked.iter().map(|&(_, _, n)| n).collect();
    let expected = resolve_budgets(k, scope, &sizes);
    for (&(i, budget, _), want) in tracked.iter().zip(expected) {
        if budget != want {
            errors.push((
                i,
                format!(
                    "budget {budget} is not this parameter's share of the method's k={k} \
                     (scope {}): expected {want}",
                    match scope {
                        DropbackScope::Global => "global",
                        DropbackScope::PerLayer => "per_layer",
                    }
                ),
            ));
        }
    }
    errors
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
