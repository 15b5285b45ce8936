//! What the workspace's integration tests share, in one place: the tests of `sparsec-ir`,
//! `sparsec-passes`, `sparsec-backend` and the `sparsec` crate depend on it as a
//! dev-dependency (a cycle such as `sparsec-ir` → (dev) this crate → `sparsec-ir` is fine: an
//! integration test links one `sparsec-ir`, so the types are the same).
//!
//! | module | for |
//! |---|---|
//! | [`rng`] | the one seeded random generator every test draws from |
//! | [`modules`] | IR modules built by hand with `Func::push`, their builders, and module tweaks |
//! | [`named_ir`] | a module from hand-written IR text whose values have names |
//! | [`examples`] | reading the example model files and lowering them |
//! | [`interp`] | running `@forward` and `@train_step` in the `f64` interpreter on a random batch |
//! | [`random_ir`] | the seeded generator of random IR modules and random model files |
//! | [`run_dir`] | running the `sparsec` binary and reading what a run wrote |
//! | [`scratch`] | fresh directories under a test target's scratch space |
//!
//! What only the calling test crate knows at compile time (the `sparsec` binary's path,
//! `CARGO_BIN_EXE_sparsec`, and its scratch space, `CARGO_TARGET_TMPDIR`) is passed in: the
//! root crate's `tests/run_dir/mod.rs` binds both.

#![forbid(unsafe_code)]

use std::path::Path;

pub mod examples;
pub mod interp;
pub mod modules;
pub mod named_ir;
pub mod random_ir;
pub mod rng;
pub mod run_dir;
pub mod scratch;

/// The repository root (the workspace's directory), where `examples/` and `data/` are.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ is a directory of the repository root")
}
