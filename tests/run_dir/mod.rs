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

/// `sparsec train` through the library: a fresh run of `file` into `dir`, or (`resume`) the
/// run in `dir` continued; `hooks` run beside the method's own. Panics if training fails.
pub fn train_in(
    dir: &Path,
    file: Option<PathBuf>,
    resume: bool,
    sets: &[(&str, &str)],
    backend: sparsec::runner::Backend,
    hooks: Vec<Box<dyn sparsec::methods::RunMethod>>,
) {
    let req = sparsec::train::TrainRequest {
        file,
        data: None,
        out: (!resume).then(|| dir.to_path_buf()),
        sets: sets
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        resume: resume.then(|| dir.to_path_buf()),
        init_from: None,
        backend,
        threads: Some(2),
        extra_hooks: hooks,
        profile: false,
    };
    if sparsec::train::train(req).is_err() {
        panic!("training in {} failed", dir.display());
    }
}

/// The lines of `kind` in a run's metrics.jsonl.
pub fn metrics_lines(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// Write `text` to `dir/name` (creating `dir`) and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
