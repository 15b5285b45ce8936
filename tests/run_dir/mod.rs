//! What the tests that drive the `sparsec` binary share: running it on the bundled subset, a
//! fresh run directory, and reading what a run wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `sparsec ARGS` from the repository root, always on the bundled Fashion-MNIST subset, whatever
/// this machine has installed.
pub fn sparsec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsec"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "SPARSEC_DATA",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist-subset"),
        )
        .output()
        .expect("run sparsec")
}

/// An empty (removed) directory under the test target's scratch space.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
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
