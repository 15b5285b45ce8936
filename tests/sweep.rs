//! The Dropback sweep and its report (bench/dropback_sweep.py, bench/dropback_report.py) on the
//! bundled subset, one epoch: an interrupted sweep, run again, ends with the same models as an
//! uninterrupted one, and the report's figures are those of the run directories.

mod run_dir;

use std::path::{Path, PathBuf};
use std::process::Command;

use run_dir::{fresh_dir, ok, sparsec, summary};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `python3 bench/SCRIPT ARGS`, asserting success; its stdout.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(root().join("bench").join(script))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run python3 (CPython 3.11 is on the CI machine)");
    assert!(
        out.status.success(),
        "{script} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-epoch sweep of dense and Dropback at N/25, seed 1, into `out`.
fn sweep(out: &Path, extra: &[&str]) -> String {
    let subset = root().join("data/fashion-mnist-subset");
    let mut args = vec![
        "examples/lenet300_dropback.net",
        "--out",
        out.to_str().unwrap(),
        "--seeds",
        "1",
        "--ratios",
        "25",
        "--no-variants",
        "--epochs",
        "1",
        "--binary",
        env!("CARGO_BIN_EXE_sparsec"),
        "--data",
        subset.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    python("dropback_sweep.py", &args)
}

fn model_bytes(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("model.safetensors")).expect("model.safetensors")
}

#[test]
fn an_interrupted_sweep_resumes_to_the_same_models_and_the_report_rederives_them() {
    let whole = fresh_dir("sweep-whole");
    let stdout = sweep(&whole, &[]);
    assert!(stdout.contains("dropback-x25 seed 1: training"), "{stdout}");
    // Run again: nothing left to do.
    let again = sweep(&whole, &[]);
    assert!(
        again.contains("dense seed 1: done") && again.contains("dropback-x25 seed 1: done"),
        "{again}"
    );

    // The same sweep, interrupted: the Dropback run stopped after 20 of its 60 steps (a
    // checkpoint and no final summary), as a Ctrl-C between checkpoints leaves it.
    let cut = fresh_dir("sweep-interrupted");
    sweep(&cut, &["--dry-run"]);
    let partial: PathBuf = cut.join("dropback-x25-seed1");
    let subset = root().join("data/fashion-mnist-subset");
    ok(&sparsec(&[
        "train",
        cut.join("models/dropback-x25.net").to_str().unwrap(),
        "--out",
        partial.to_str().unwrap(),
        "--set",
        "seed=1",
        "--set",
        "epochs=1",
        "--set",
        "max_steps=20",
        "--data",
        subset.to_str().unwrap(),
    ]));
    assert_eq!(summary(&partial)["status"], "max_steps");
    let resumed = sweep(&cut, &[]);
    assert!(
        resumed.contains("dropback-x25 seed 1: resuming"),
        "{resumed}"
    );
    for run in ["dense-seed1", "dropback-x25-seed1"] {
        assert!(
            model_bytes(&whole.join(run)) == model_bytes(&cut.join(run)),
            "{run}: the resumed sweep's model differs from the uninterrupted one"
        );
    }

    // The report: one record per run, Δ = Dropback − dense of the same seed, from summary.json.
    let results = whole.join("results");
    python(
        "dropback_report.py",
        &[whole.to_str().unwrap(), "--out", results.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(results.join("dropback.json")).unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let runs = data["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let dense = summary(&whole.join("dense-seed1"));
    let dropback = summary(&whole.join("dropback-x25-seed1"));
    let record = runs.iter().find(|r| r["name"] == "dropback-x25").unwrap();
    let delta =
        dropback["test_accuracy"].as_f64().unwrap() - dense["test_accuracy"].as_f64().unwrap();
    assert!((record["delta_accuracy"].as_f64().unwrap() - delta).abs() < 1e-12);
    assert_eq!(record["weights_stored"], dropback["weights_stored"]);
    // The per-layer split of the budget is the run's own `sparsec report`, and adds up to it.
    let per_layer = record["tracked_per_layer"]
        .as_object()
        .expect("tracked_per_layer");
    let layers: Vec<&str> = per_layer.keys().map(String::as_str).collect();
    assert_eq!(layers, ["fc1", "fc2", "fc3"]);
    let tracked: u64 = per_layer.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(tracked, dropback["weights_stored"].as_u64().unwrap());
    let n = data["params_total"].as_f64().unwrap();
    let compression = n / dropback["weights_stored"].as_f64().unwrap();
    assert!((record["compression"].as_f64().unwrap() - compression).abs() < 1e-9);
    let md = std::fs::read_to_string(results.join("dropback.md")).unwrap();
    assert!(
        md.contains(&format!("DB-1 at 25×: Δ = {:+.2} points", delta * 100.0)),
        "{md}"
    );
    assert!(md.contains("| dropback-x25 (sparsec) | "), "{md}");

    // The resumed sweep as a repeat of the whole one: the same seeds, so the same model bits.
    python(
        "dropback_report.py",
        &[
            whole.to_str().unwrap(),
            "--repeat",
            cut.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
        ],
    );
    let md = std::fs::read_to_string(results.join("dropback.md")).unwrap();
    assert!(!md.contains("model differs"), "{md}");
    for name in ["dense", "dropback-x25"] {
        assert!(md.contains(&format!("| {name} | 1 | ")), "{md}");
    }
    assert_eq!(md.matches("| same model bits |").count(), 2, "{md}");
}
