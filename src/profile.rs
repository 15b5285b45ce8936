//! `sparsec train --profile`: where a step's time goes, kernel by kernel.
//!
//! The JIT times each kernel of each compiled function ([`sparsec_backend::KernelTime`]); this
//! adds the times up over the run (across reconfigurations, which compile new kernels, by
//! function, kernel kind and layers) and prints them as a table, most expensive first, with the
//! layers each kernel computes (the `loc` of its IR instructions). `profile.json` in the run
//! directory holds every row.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;
use sparsec_ir::Module;

use crate::runner::Runner;

/// Kernels under this share of their function's time are summed into one line.
const SMALL_SHARE: f64 = 0.01;

#[derive(Clone, Debug, Default)]
struct FuncProfile {
    /// Seconds by (kernel kind, layers).
    seconds: BTreeMap<(String, String), f64>,
    runs: u64,
}

/// Kernel times summed over a run.
#[derive(Clone, Debug, Default)]
pub struct RunProfile {
    funcs: BTreeMap<String, FuncProfile>,
    threads: usize,
}

impl RunProfile {
    /// Add what `runner` (running `func` of `module`) has timed since profiling started.
    pub fn absorb(&mut self, module: &Module, func: &str, runner: &Runner) {
        let Some((kernels, runs)) = runner.profile() else {
            return;
        };
        self.threads = self.threads.max(runner.threads());
        let insts = module.func(func).map(|f| &f.insts[..]).unwrap_or(&[]);
        let entry = self.funcs.entry(func.to_owned()).or_default();
        entry.runs += runs;
        for k in kernels {
            let mut layers: Vec<&str> = Vec::new();
            for &i in &k.insts {
                if let Some(loc) = insts.get(i).and_then(|inst| inst.loc.as_deref()) {
                    if !layers.contains(&loc) {
                        layers.push(loc);
                    }
                }
            }
            let layers = if layers.is_empty() {
                "-".to_owned()
            } else {
                layers.join(" ")
            };
            *entry.seconds.entry((k.kind, layers)).or_default() += k.seconds;
        }
    }

    /// Rows of one function, most expensive first.
    fn rows(f: &FuncProfile) -> Vec<(&str, &str, f64)> {
        let mut rows: Vec<(&str, &str, f64)> = f
            .seconds
            .iter()
            .map(|((kind, layers), &s)| (kind.as_str(), layers.as_str(), s))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        rows
    }

    /// The table `train --profile` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // The function that took longest first (the training step, as a rule).
        let mut funcs: Vec<(&String, &FuncProfile, f64)> = self
            .funcs
            .iter()
            .map(|(name, f)| (name, f, f.seconds.values().sum::<f64>()))
            .collect();
        funcs.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
        for (name, f, total) in funcs {
            if f.runs == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "profile of @{name}: {total:.3} s in kernels over {} runs ({:.3} ms a run, {} \
                 thread{})",
                f.runs,
                1e3 * total / f.runs as f64,
                self.threads,
                if self.threads == 1 { "" } else { "s" }
            );
            let _ = writeln!(
                out,
                "  {:>6}  {:>9}  {:<22} layers",
                "share", "ms/run", "kernel"
            );
            let (mut small_count, mut small_seconds) = (0, 0.0);
            let share_of = |s: f64| if total > 0.0 { s / total } else { 0.0 };
            for (kind, layers, s) in Self::rows(f) {
                let share = share_of(s);
                if share < SMALL_SHARE {
                    small_count += 1;
                    small_seconds += s;
                    continue;
                }
                let _ = writeln!(
                    out,
                    "  {:>5.1}%  {:>9.4}  {kind:<22} {layers}",
                    100.0 * share,
                    1e3 * s / f.runs as f64
                );
            }
            if small_count > 0 {
                let share = share_of(small_seconds);
                let _ = writeln!(
                    out,
                    "  {:>5.1}%  {:>9.4}  ({small_count} kernels under {:.0}% each)",
                    100.0 * share,
                    1e3 * small_seconds / f.runs as f64,
                    100.0 * SMALL_SHARE
                );
            }
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let funcs: serde_json::Map<String, serde_json::Value> = self
            .funcs
            .iter()
            .map(|(name, f)| {
                let kernels: Vec<serde_json::Value> = Self::rows(f)
                    .into_iter()
                    .map(
                        |(kind, layers, s)| json!({"kernel": kind, "layers": layers, "seconds": s}),
                    )
                    .collect();
                (
                    name.clone(),
                    json!({
                        "runs": f.runs,
                        "seconds": f.seconds.values().sum::<f64>(),
                        "kernels": kernels,
                    }),
                )
            })
            .collect();
        json!({"threads": self.threads, "functions": funcs})
    }
}
