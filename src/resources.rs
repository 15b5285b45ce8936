//! Memory a run will need, estimated before any of it is allocated, against what the machine
//! has: a program too large for the machine is refused with the estimate, instead of aborting
//! on an allocation (which no error handling can catch).
//!
//! The estimate counts what is certain to be allocated: every parameter as the state holds it
//! (a Dropback-tracked weight as its O(k) entries, everything else densely: that is what makes
//! a Dropback program with a large network and a small `k` allowed), and the buffers of the
//! compiled functions (the JIT's kernel buffers, or for the interpreter every value of the
//! function). Data is counted where it is made (synthetic sets) or read (IDX files are checked
//! against their headers before their payloads are read).

use std::path::Path;

use sparsec_ir::interp::is_tracked;
use sparsec_ir::{Module, Storage};

use crate::runner::Backend;

/// Bytes this process can still allocate: the kernel's `MemAvailable`, or less under a cgroup
/// limit. `None` when neither can be read (then nothing is refused).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
                .map(|kb| kb.saturating_mul(1024))
        });
    let read = |p: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new(p))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(current)) => Some(max.saturating_sub(current)),
        _ => None,
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes the training state of `module` takes: each parameter as the state holds it.
pub fn state_bytes(module: &Module) -> u64 {
    module
        .params
        .iter()
        .map(|p| match p.storage {
            Storage::Tracked { budget } if is_tracked(p) => budget.saturating_mul(8),
            _ => (p.ty.num_elements() as u64).saturating_mul(4),
        })
        .fold(0, u64::saturating_add)
}

/// Bytes a checkpoint of `module` is serialised into before it is written: every weight densely
/// (`model.safetensors` is a state_dict; a tracked weight included when `tracked_dense`, see
/// `checkpoint::tracked_weights_dense`), the optimizer's and the method's state and the tracked
/// entries, each once as tensor bytes and once as the file's.
pub fn checkpoint_bytes(module: &Module, tracked_dense: bool) -> u64 {
    let tensors = module
        .params
        .iter()
        .map(|p| {
            let dense = (p.ty.num_elements() as u64).saturating_mul(4);
            match p.storage {
                Storage::Tracked { budget } if is_tracked(p) => {
                    let entries = budget.saturating_mul(8);
                    if tracked_dense {
                        dense.saturating_add(entries)
                    } else {
                        entries
                    }
                }
                _ => dense,
            }
        })
        .fold(0, u64::saturating_add);
    tensors.saturating_mul(2)
}

/// Bytes the run-time buffers of `funcs` take on `backend`.
pub fn buffer_bytes(module: &Module, funcs: &[&str], backend: Backend) -> Result<u64, String> {
    let mut total = 0u64;
    for &name in funcs {
        let Some(func) = module.func(name) else {
            continue;
        };
        let bytes = match backend {
            Backend::Jit => sparsec_backend::partition::partition(module, name)?
                .buffers
                .iter()
                .map(|b| b.bytes())
                .fold(0, u64::saturating_add),
            // The interpreter materialises every value (an upper bound: it frees as it goes).
            Backend::Interp => func
                .insts
                .iter()
                .map(|i| (i.ty.num_elements() as u64).saturating_mul(4))
                .fold(0, u64::saturating_add),
        };
        total = total.saturating_add(bytes);
    }
    Ok(total)
}

/// What to say to a program too large to train or evaluate.
pub const SMALLER_NETWORK: &str = "Make the network or the batch smaller (a Dropback program's \
     state is O(k), and with `--set memory_budget=BYTES` its step regenerates its weights and \
     remakes its scores instead of storing them)";

/// Refuse to go on if `parts` (what, bytes) add up to more than the machine has available.
pub fn check_fits(purpose: &str, parts: &[(&str, u64)], hint: &str) -> Result<(), String> {
    let need = parts.iter().map(|&(_, b)| b).fold(0, u64::saturating_add);
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    if need <= available {
        return Ok(());
    }
    let list: Vec<String> = parts
        .iter()
        .filter(|&&(_, b)| b > 0)
        .map(|&(what, b)| format!("{what} {}", gib(b)))
        .collect();
    Err(format!(
        "{purpose} needs about {} of memory ({}), and this machine has {} available: it would \
         abort on allocation. {hint}",
        gib(need),
        list.join(", "),
        gib(available)
    ))
}

fn gib(bytes: u64) -> String {
    let g = bytes as f64 / f64::from(1u32 << 30);
    if g >= 0.1 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_far_beyond_any_machine_is_refused() {
        if available_bytes().is_none() {
            return;
        }
        let err = check_fits(
            "training `x`",
            &[("parameters", u64::MAX / 2), ("buffers", 1)],
            "",
        )
        .unwrap_err();
        assert!(
            err.contains("needs about") && err.contains("available"),
            "{err}"
        );
        assert!(check_fits("training `x`", &[("parameters", 1024)], "").is_ok());
    }
}
