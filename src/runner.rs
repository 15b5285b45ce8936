//! Where a compiled function runs: the reference interpreter or the Cranelift JIT, behind one
//! contract (the interpreter's: parameters in a [`State`], inputs and outputs as tensors).

use sparsec_backend::JitProgram;
use sparsec_ir::interp::{Input, Interpreter, Output, State};
use sparsec_ir::Module;

/// Where the steps run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Cranelift JIT of fused kernels (falls back to the interpreter's kernel per op where
    /// listed by `emit --stage kernels`).
    Jit,
    /// The reference interpreter.
    Interp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        }
    }
}

/// A function prepared for repeated execution on one backend.
pub enum Runner {
    Interp(Box<Interpreter<f32>>),
    Jit(Box<JitProgram>),
}

/// Why `--profile` is refused with the interpreter.
pub const PROFILE_NEEDS_JIT: &str =
    "--profile times the JIT's kernels; the interpreter has none (leave out --backend interp)";

impl Runner {
    /// Prepare `func` of `module` on `backend` (compiling it, for the JIT).
    pub fn new(
        module: &Module,
        func: &str,
        backend: Backend,
        threads: Option<usize>,
    ) -> Result<Runner, String> {
        match backend {
            Backend::Interp => Interpreter::<f32>::new(module, func)
                .map(|i| Runner::Interp(Box::new(i)))
                .map_err(|e| e.to_string()),
            Backend::Jit => JitProgram::new(
                module,
                func,
                threads.map_or_else(sparsec_backend::default_threads, Ok)?,
            )
            .map(|p| Runner::Jit(Box::new(p))),
        }
    }

    /// Milliseconds the JIT spent compiling (0 for the interpreter).
    pub fn compile_ms(&self) -> f64 {
        match self {
            Runner::Interp(_) => 0.0,
            Runner::Jit(p) => p.compile_ms(),
        }
    }

    /// Threads the steps run on (1 for the interpreter).
    pub fn threads(&self) -> usize {
        match self {
            Runner::Interp(_) => 1,
            Runner::Jit(p) => p.threads(),
        }
    }

    /// Time each kernel from now on (the JIT only: the interpreter has no kernels to time).
    pub fn set_profiling(&mut self, on: bool) -> Result<(), String> {
        match self {
            Runner::Interp(_) if on => Err(PROFILE_NEEDS_JIT.to_owned()),
            Runner::Interp(_) => Ok(()),
            Runner::Jit(p) => {
                p.set_profiling(on);
                Ok(())
            }
        }
    }

    /// The time per kernel since profiling started, and the runs timed.
    pub fn profile(&self) -> Option<(Vec<sparsec_backend::KernelTime>, u64)> {
        match self {
            Runner::Interp(_) => None,
            Runner::Jit(p) => p.profile(),
        }
    }

    /// Run once with the interpreter's contract.
    pub fn run(
        &mut self,
        state: &mut State<f32>,
        inputs: &[Input<'_, f32>],
    ) -> Result<Vec<Output<f32>>, String> {
        match self {
            Runner::Interp(i) => i.run(state, inputs).map_err(|e| e.to_string()),
            Runner::Jit(p) => p.run(state, inputs),
        }
    }
}
