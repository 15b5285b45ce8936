//! `sparsec report RUN_DIR` and the table that ends `sparsec train`: short runs on the bundled
//! subset, checked against what the run directory holds and against counts done by hand.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

mod run_dir;

use run_dir::{fresh_dir, ok, sparsec, summary};

/// Train `model` for 3 steps into a fresh directory; returns the directory and train's stdout.
fn short_run(name: &str, model: &str) -> (PathBuf, String) {
    let dir = fresh_dir(name);
    let out = sparsec(&[
        "train",
        model,
        "--data",
        "data/fashion-mnist-subset",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "max_steps=3",
    ]);
    (dir.clone(), ok(&out))
}

fn report_json(dir: &Path) -> serde_json::Value {
    let out = sparsec(&["report", dir.to_str().unwrap(), "--json"]);
    serde_json::from_str(&ok(&out)).expect("report --json is JSON")
}

fn layer<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {report}"))
}

/// Checks that hold for any run: the parameter column sums to the model's total, every FLOP
/// count is positive, the totals row adds up, and `train` printed the same table as `report`.
fn check_common(dir: &Path, train_stdout: &str, report: &serde_json::Value) {
    let summary = summary(dir);
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(
        layers
            .iter()
            .map(|l| l["parameters"].as_u64().unwrap())
            .sum::<u64>(),
        summary["params_total"].as_u64().unwrap()
    );
    assert_eq!(report["total"]["parameters"], summary["params_total"]);
    for l in layers {
        assert!(l["forward_flops_per_sample"].as_f64().unwrap() > 0.0, "{l}");
        assert!(
            l["train_flops_per_sample"].as_f64().unwrap()
                > l["forward_flops_per_sample"].as_f64().unwrap(),
            "{l}"
        );
    }
    // fc1 is 784 → 300: per sample a 784-long dot product per output (2·784·300 FLOPs) plus
    // one addition per output for the bias.
    assert_eq!(
        layer(report, "fc1")["forward_flops_per_sample"].as_f64(),
        Some((2 * 784 * 300 + 300) as f64)
    );
    let table = ok(&sparsec(&["report", dir.to_str().unwrap()]));
    assert!(
        train_stdout.ends_with(&table),
        "train:\n{train_stdout}\nreport:\n{table}"
    );
    assert!(train_stdout.starts_with(&format!(
        "{}: 3 steps, test accuracy",
        summary["model"].as_str().unwrap()
    )));
    assert_eq!(
        std::fs::read_to_string(dir.join("report.txt")).unwrap(),
        table
    );
    assert!(table.contains(" 235,500 "), "thousands separators: {table}");
    let total = table.lines().last().unwrap();
    assert!(total.starts_with("total "), "{table}");
}

#[test]
fn dense_lenet300_report() {
    let (dir, stdout) = short_run("report-dense", "examples/lenet300.net");
    let report = report_json(&dir);
    check_common(&dir, &stdout, &report);
    assert_eq!(report["kept"], "non-zero");
    let fc1 = layer(&report, "fc1");
    assert_eq!(fc1["parameters"], 300 * 784 + 300);
    assert_eq!(fc1["bytes_stored"], 4 * (300 * 784 + 300));
    // The non-zero weights are counted in the final weights of the run.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let nonzero = |name: &str| {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0.0)
            .count() as u64
    };
    assert_eq!(
        fc1["kept"].as_u64(),
        Some(nonzero("fc1.weight") + nonzero("fc1.bias"))
    );
}

#[test]
fn dropback_report_counts_what_the_checkpoint_holds() {
    let (dir, stdout) = short_run("report-dropback", "examples/lenet300_dropback.net");
    let report = report_json(&dir);
    check_common(&dir, &stdout, &report);
    assert_eq!(report["kept"], "tracked");
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let bytes = std::fs::read(dir.join(latest.trim()).join("train_state.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let stored = |name: &str| st.tensor(name).unwrap().shape()[0] as u64;
    let mut total = 0;
    for name in ["fc1", "fc2", "fc3"] {
        let entries = stored(&format!("{name}.weight.tracked_indices"))
            + stored(&format!("{name}.bias.tracked_indices"));
        let row = layer(&report, name);
        assert_eq!(row["kept"].as_u64(), Some(entries), "{name}");
        assert_eq!(row["bytes_stored"].as_u64(), Some(8 * entries), "{name}");
        total += entries;
    }
    // The example's global budget: k = 10,664 tracked weights.
    assert!(total > 0 && total <= 10_664, "{total}");
    assert_eq!(report["total"]["kept"].as_u64(), Some(total));
    let summary = summary(&dir);
    assert_eq!(summary["tracked"]["total"].as_u64(), Some(total));
    assert_eq!(
        report["total"]["bytes_stored"],
        summary["weight_state_bytes"]
    );
}

#[test]
fn bad_run_directories_are_refused_with_a_message() {
    let missing = fresh_dir("report-missing");
    let empty = fresh_dir("report-empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (dir, says) in [(&missing, "no such directory"), (&empty, "summary.json")] {
        let out = sparsec(&["report", dir.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    // A run whose latest checkpoint is cut short.
    let (dir, _) = short_run("report-truncated", "examples/lenet300.net");
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let state = dir.join(latest.trim()).join("train_state.safetensors");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = sparsec(&["report", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("train_state.safetensors"), "{stderr}");
}
