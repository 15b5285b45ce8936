//! A trained network, ready to use: the program a run (or a weights file) was trained with, at
//! the shapes its weights have, and those weights. `eval`, `predict` and `export` all start here,
//! so they agree on which program a run directory means.

use std::path::{Path, PathBuf};

use sparsec_ir::func_names::FORWARD;
use sparsec_ir::interp::State;

use crate::checkpoint::{self, ModelMeta};
use crate::driver::{self, Failure, Program};
use crate::runner::Backend;

fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

pub struct Trained {
    pub program: Program,
    pub state: State<f32>,
    /// The weights file read, and its metadata (the step it was written at).
    pub weights_file: PathBuf,
    pub meta: ModelMeta,
}

/// Load `weights` (a run directory: its latest checkpoint; or a `model.safetensors` file with
/// the model `file` it was trained with). A run directory needs no `file`: the run records its
/// model, its `--set` values and, when its shapes changed, the program as it stands.
pub fn load(file: Option<&Path>, weights: &Path, backend: Backend) -> Result<Trained, Failure> {
    let (program, weights_file) = if weights.is_dir() {
        let (dir, meta) = checkpoint::open(weights).map_err(fail)?;
        let program = match file {
            // The run's own program, at the shapes its checkpoint records.
            None => driver::run_program(&meta, &meta.sets)?,
            Some(file) => {
                let mut program = driver::load_program(file, &[])?;
                // FILE says how the network was declared; a run whose shapes changed since
                // is evaluated at its shapes as they stand.
                if let Some(ir) = &meta.program {
                    program.module = sparsec_ir::parse::parse_module(ir).map_err(|e| {
                        fail(format!(
                            "`{}`: the program the checkpoint records does not parse: {e}",
                            dir.display()
                        ))
                    })?;
                }
                program
            }
        };
        (program, dir.join("model.safetensors"))
    } else {
        let Some(file) = file else {
            return Err(Failure::Usage(format!(
                "`{}` is a weights file, not a run directory: give the model file it was \
                 trained with too (`sparsec eval FILE --weights {}`)",
                weights.display(),
                weights.display()
            )));
        };
        (driver::load_program(file, &[])?, weights.to_path_buf())
    };
    let module = &program.module;
    let buffers = crate::resources::buffer_bytes(module, &[FORWARD], backend)
        .map_err(|e| fail(format!("`{}`: {e}", program.file_name)))?;
    crate::resources::check_fits(
        &format!("loading `{}`", module.name),
        &[
            ("parameters", crate::resources::state_bytes(module)),
            ("buffers", buffers),
        ],
        crate::resources::SMALLER_NETWORK,
    )
    .map_err(fail)?;
    let mut state = State::<f32>::initial(module);
    let meta = checkpoint::load_weights(&weights_file, module, &mut state).map_err(fail)?;
    Ok(Trained {
        program,
        state,
        weights_file,
        meta,
    })
}

/// A trained network's program with its functions optimised by equality saturation within
/// the run's memory budget, its parameter table unchanged (so a state loaded for the program
/// runs it): the one whose `forward` evaluation and prediction run. Its values are the
/// program's own, and a Dropback network larger than memory stays streamed.
pub fn optimised(program: &driver::Program) -> Result<sparsec_ir::Module, Failure> {
    let options = sparsec_passes::eqsat::Options {
        memory_budget: program.run.memory_budget,
        ..sparsec_passes::eqsat::Options::default()
    };
    let (module, _) = sparsec_passes::eqsat::optimize(&program.module, &options)
        .map_err(|e| fail(format!("`{}`: {e}", program.file_name)))?;
    Ok(module)
}

/// The run in directory `run` (its own model, its latest weights), for `predict` and `export`:
/// a weights file alone does not say which network it belongs to.
pub fn load_run(run: &Path, backend: Backend) -> Result<Trained, Failure> {
    if !run.is_dir() {
        return Err(Failure::Usage(format!(
            "`{}` is not a run directory: give the directory `sparsec train` wrote",
            run.display()
        )));
    }
    load(None, run, backend)
}

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl Trained {
    /// The name of class `c`, when the model's data set names its classes.
    pub fn class_name(&self, c: usize) -> Option<&'static str> {
        match &self.program.module.data {
            Some(sparsec_ir::spec::DataSpec::FashionMnist { .. }) => {
                FASHION_MNIST_CLASSES.get(c).copied()
            }
            _ => None,
        }
    }
}
