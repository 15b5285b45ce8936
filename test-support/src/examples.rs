//! The example model files (`examples/*.net`): reading them, and checking and lowering one to
//! IR at stage `ir` as the driver does (lowering, then the method's storage:
//! `sparsec_passes::methods::assign_storage`).

use std::path::PathBuf;

use sparsec_ir::Module;

use crate::repo_root;

/// The repository's `examples/`.
pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// Every example model, sorted by name: (name, source text).
pub fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable example"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "expected the example models");
    out
}

/// Every example model, sorted by path: (its path as displayed, source text).
pub fn example_files() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read example");
            (p.display().to_string(), text)
        })
        .collect()
}

/// The source of `examples/NAME.net`.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(examples_dir().join(format!("{name}.net"))).expect("example exists")
}

/// Check and lower a model source, optionally with another batch size.
pub fn lower(source: &str, batch: Option<u64>) -> Module {
    let mut model = sparsec_frontend::check_source(source)
        .unwrap_or_else(|d| panic!("example does not check: {d:?}"));
    if let Some(b) = batch {
        model.train.batch = b;
    }
    let mut module = sparsec_frontend::lower::lower(&model).expect("lowers");
    sparsec_passes::methods::assign_storage(&mut module).expect("the method's storage");
    module
}
