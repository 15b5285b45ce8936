//! `sparsec emit --stage model RUN_DIR`: the architecture a run ended with, as a model file.
//!
//! A run whose method changed its shapes (activation density, PruneTrain) ends with a network
//! the model file it started from does not describe. This writes that file again with every
//! `dense` and `conv2d` width set to the final one and the `method` block replaced by a comment,
//! so the result stands alone: `sparsec eval` reads it with the run's `model.safetensors`, and
//! `sparsec train` trains the small network densely. The written text is compiled before it is
//! returned and its parameter shapes checked against the run's, so a file that would not load
//! the weights is never printed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint;
use crate::driver::{self, Failure};

fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

/// The model file of the run in `run_dir` at the shapes of its latest checkpoint.
pub fn model_file(run_dir: &Path) -> Result<String, Failure> {
    if !run_dir.is_dir() {
        return Err(fail(format!(
            "`{}`: --stage model reads a run directory (written by `sparsec train`)",
            run_dir.display()
        )));
    }
    let (_, meta) = checkpoint::open(run_dir).map_err(fail)?;
    if meta.source_is_ir {
        return Err(fail(format!(
            "`{}` was started from an IR dump, not a model file; its program as it stands is \
             the `program` of the checkpoint (`sparsec eval` reads it)",
            run_dir.display()
        )));
    }
    let program = driver::run_program(&meta, &meta.sets)?;
    let module = &program.module;
    let widths: BTreeMap<String, (usize, usize)> = module
        .params
        .iter()
        .filter(|p| p.role == sparsec_ir::Role::Weight)
        .filter_map(|p| {
            let layer = p.name.strip_suffix(".weight")?;
            let s = &p.ty.shape;
            (s.len() == 2 || s.len() == 4).then(|| (layer.to_owned(), (s[1], s[0])))
        })
        .collect();
    let method = module.method.as_ref().map_or("no method".to_owned(), |m| {
        format!("method `{}`", m.method.name())
    });
    let mut note = format!(
        "The architecture `{}` ended with after step {} ({method} removed: this file trains \
         the network as it stands).",
        run_dir.display(),
        meta.step
    );
    if !meta.sets.is_empty() {
        let sets: Vec<String> = meta.sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        note.push_str(&format!("\nThe run had --set {}.", sets.join(" --set ")));
    }
    let text = sparsec_frontend::rewrite::with_widths(&meta.source, &widths, &note)
        .map_err(|e| fail(format!("`{}`: {e}", meta.source_name)))?;
    // The file must describe exactly the shapes of the run's weights.
    let check = driver::program_from_source(&meta.source_name, text.clone(), false, &[])
        .map_err(|_| fail("internal error: the rewritten model file does not compile"))?;
    let shapes = |m: &sparsec_ir::Module| -> Vec<(String, Vec<usize>)> {
        m.params
            .iter()
            .filter(|p| p.role == sparsec_ir::Role::Weight)
            .map(|p| (p.name.clone(), p.ty.shape.clone()))
            .collect()
    };
    if shapes(&check.module) != shapes(module) {
        return Err(fail(
            "internal error: the rewritten model file's parameters do not have the run's shapes",
        ));
    }
    Ok(text)
}
