//! `sparsec_test_support::run_dir` and `scratch` bound to what only this crate's integration
//! tests can name: the `sparsec` binary (`CARGO_BIN_EXE_sparsec`) and their scratch space
//! (`CARGO_TARGET_TMPDIR`). Each test uses what it needs of it.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Output;

use sparsec_test_support::{run_dir, scratch};

pub use sparsec_test_support::run_dir::{ok, summary};

/// `sparsec ARGS` from the repository root, on the bundled subset ([`run_dir::sparsec`]).
pub fn sparsec(args: &[&str]) -> Output {
    run_dir::sparsec(Path::new(env!("CARGO_BIN_EXE_sparsec")), args)
}

/// An empty (removed) directory under the test target's scratch space.
pub fn fresh_dir(name: &str) -> PathBuf {
    scratch::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}
