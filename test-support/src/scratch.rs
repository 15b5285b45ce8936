//! Fresh scratch directories for tests that write files (run directories, model files). They
//! live under the calling test crate's scratch space, `env!("CARGO_TARGET_TMPDIR")`, which
//! only integration tests have, so the caller passes it in (the root crate's
//! `tests/run_dir/mod.rs` does).

use std::path::{Path, PathBuf};

/// `base/NAME`, removed (with whatever an earlier run left there) and not created again: an
/// empty place for a test to write into.
pub fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
