//! What the tests that drive the `sparsec` binary share: running it on the bundled subset, and
//! reading what a run wrote. The binary's path is the calling test crate's
//! `env!("CARGO_BIN_EXE_sparsec")`, which only the root crate's integration tests have: its
//! `tests/run_dir/mod.rs` passes it in.

use std::path::Path;
use std::process::{Command, Output};

use crate::repo_root;

/// `sparsec ARGS` (the binary at `bin`) from the repository root, always on the bundled
/// Fashion-MNIST subset, whatever this machine has installed.
pub fn sparsec(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(repo_root())
        .env(
            "SPARSEC_DATA",
            repo_root().join("data/fashion-mnist-subset"),
        )
        .output()
        .expect("run sparsec")
}

/// The run's stdout, after asserting that it succeeded (its output in the message if not).
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sparsec failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A run directory's `summary.json`.
pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary is JSON")
}
