//! The command line, as clap sees it. Usage errors exit with code 2 (clap's convention, and ours).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::ColorChoice;
use sparsec::driver::Emit;
use sparsec_ir::Stage as IrStage;

#[derive(Parser, Debug)]
#[command(
    name = "sparsec",
    version,
    about = "A compiler for sparse neural-network training",
    after_help = "Model files (*.net) are described in docs/language.md; IR dumps (*.ir) are accepted wherever a model file is."
)]
pub struct Cli {
    /// When to color diagnostics.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check a model file; report every problem found, exit 1 if there is one.
    Check {
        /// A model file (.net) or an IR dump (.ir), `-` for standard input.
        file: PathBuf,
    },
    /// Train a model; writes a run directory (summary.json, metrics.jsonl, checkpoints).
    Train(TrainArgs),
    /// Test accuracy and loss of trained weights.
    Eval {
        /// The model file the weights were trained with (.net or .ir); optional when --weights
        /// is a run directory (the run records its model).
        file: Option<PathBuf>,
        /// A run directory (its latest checkpoint is used) or a `model.safetensors` file.
        #[arg(long, value_name = "RUN_DIR")]
        weights: PathBuf,
        /// IDX data directory (overrides the model file's data search order).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Execution backend.
        #[arg(long, value_enum, default_value_t = Backend::Jit)]
        backend: Backend,
        /// Threads for the JIT's kernels, 1 or 2 (default: $SPARSEC_THREADS, else up to 2);
        /// the results are the same bits whatever the count.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
        threads: Option<u8>,
    },
    /// Classify inputs with a trained run: the most likely classes and their probabilities.
    Predict {
        /// A run directory written by `sparsec train` (its latest weights are used).
        run_dir: PathBuf,
        /// IDX images files (as in the data sets, plain or .gz) or PNG/PGM images of the
        /// model's input size; pixels are scaled to [0, 1] as in training.
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<PathBuf>,
        /// Print every class's probability and the logits as JSON.
        #[arg(long)]
        json: bool,
        /// Execution backend.
        #[arg(long, value_enum, default_value_t = Backend::Jit)]
        backend: Backend,
        /// Threads for the JIT's kernels, 1 or 2; the results are the same bits whatever the
        /// count.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
        threads: Option<u8>,
    },
    /// Write a trained run's network as an ONNX model (inputs `input`, outputs `logits` and
    /// `probabilities`, any batch size), for inference elsewhere.
    Export {
        /// A run directory written by `sparsec train` (its latest weights are used).
        run_dir: PathBuf,
        /// The ONNX file to write.
        #[arg(long, value_name = "FILE.onnx", required = true)]
        onnx: PathBuf,
    },
    /// A table per layer of a run: parameters, tracked (or non-zero) weights, bytes stored,
    /// forward and training FLOPs per sample.
    Report {
        /// A run directory written by `sparsec train`.
        run_dir: PathBuf,
        /// Print the same data as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw training curves (loss, accuracy, learning rate, and the first run's layers over
    /// time) of one run or several on one figure, as PNG.
    Plot {
        /// Run directories written by `sparsec train`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write (default: RUN_DIR/plot.png for one run; needed for several).
        #[arg(long, value_name = "FILE.png")]
        out: Option<PathBuf>,
        /// A TrueType font for the text (default: DejaVu Sans, Liberation Sans or FreeSans
        /// from the system).
        #[arg(long, value_name = "TTF")]
        font: Option<PathBuf>,
    },
    /// Print the program after a compiler stage.
    Emit {
        /// The stage to stop after.
        #[arg(long, value_enum)]
        stage: Stage,
        /// Print the program after this pass (autodiff, dropback, eqsat) or after `all`, instead
        /// of only at the end. Repeatable.
        #[arg(long, value_name = "PASS")]
        print_after: Vec<String>,
        /// Memory budget in bytes for the materialised values of each function: extraction
        /// picks the fastest program that fits.
        #[arg(long, value_name = "BYTES")]
        memory_budget: Option<u64>,
        /// A model file (.net) or an IR dump (.ir), `-` for standard input; a run directory for
        /// `--stage model`.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The model file (.net or .ir; `-` reads standard input). Optional with --resume, which
    /// uses the run's own copy.
    pub file: Option<PathBuf>,
    /// IDX data directory (default: $SPARSEC_DATA, then /usr/share/datasets/fashion-mnist,
    /// then the subset bundled with sparsec). Given for a model with `data synthetic`, it
    /// replaces the synthetic set with that directory's IDX files.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Run directory to create (default: runs/<model>-<date>-<time>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a training setting: epochs, batch, seed, log_every, lr, momentum, weight_decay,
    /// nesterov, max_steps (stop after that many steps; 0 writes the initial checkpoint),
    /// shuffle (false: batches in file order), memory_budget (bytes the step's materialised
    /// values may take: the optimiser then picks the fastest program that fits, e.g. Dropback
    /// regenerating weights instead of storing them). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Time every kernel of the compiled step and print, at the end, where the time went per
    /// kernel and layer (also written to RUN_DIR/profile.json). JIT only; the results do not
    /// change.
    #[arg(long)]
    pub profile: bool,
    /// Execution backend: `jit` (Cranelift, the default) or `interp` (the reference).
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Threads for the JIT's kernels, 1 or 2 (default: $SPARSEC_THREADS, else up to 2); the
    /// results are the same bits whatever the count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub threads: Option<u8>,
    /// Continue an interrupted run from its latest checkpoint, exactly (`--set epochs=N`
    /// extends a finished one, as if it had been asked for N epochs from the start).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Start a new run from the weights of RUN_DIR's latest checkpoint (optimizer state starts
    /// afresh), with FILE or, without it, RUN_DIR's own model and the --set values given: the
    /// way to go on from a diverged run at a smaller lr.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Cranelift JIT of fused kernels (falls back to the interpreter's kernel per op where
    /// listed by `emit --stage kernels`).
    Jit,
    /// The reference interpreter.
    Interp,
}

impl Backend {
    pub fn backend(self) -> sparsec::runner::Backend {
        match self {
            Backend::Jit => sparsec::runner::Backend::Jit,
            Backend::Interp => sparsec::runner::Backend::Interp,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The syntax tree of a model file, with source positions.
    Ast,
    /// The IR right after lowering: the forward graph, parameters and training spec.
    Ir,
    /// The IR with the whole training step: forward, loss, backward and optimizer update.
    Train,
    /// The training step after equality saturation and extraction (regenerated weights, sparse
    /// updates, fused forms), with the saturation statistics in the header.
    Opt,
    /// The optimised functions partitioned into fused kernels (the JIT's kernel IR): per
    /// kernel its loops, operations, inputs and outputs, and how it runs (jit, host, interp).
    Kernels,
    /// The Cranelift IR of every compiled kernel, as generated (before Cranelift's passes).
    Clif,
    /// The architecture a finished run ended with, as a model file: FILE is the run directory.
    /// Every `dense` and `conv2d` width is the final one (after activation density's resizes)
    /// and the method block is left out, so `sparsec eval` loads the run's model.safetensors
    /// with it and `sparsec train` trains the small network.
    Model,
}

impl Stage {
    /// What the driver prints for this stage.
    pub fn emit(self) -> Emit {
        match self {
            Stage::Ast => Emit::Ast,
            Stage::Ir => Emit::Module(IrStage::Ir),
            Stage::Train => Emit::Module(IrStage::Train),
            Stage::Opt => Emit::Module(IrStage::Opt),
            Stage::Kernels => Emit::Kernels,
            Stage::Clif => Emit::Clif,
            Stage::Model => Emit::Model,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    pub fn choice(self) -> ColorChoice {
        match self {
            ColorWhen::Auto => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none()
                {
                    ColorChoice::Auto
                } else {
                    ColorChoice::Never
                }
            }
            ColorWhen::Always => ColorChoice::Always,
            ColorWhen::Never => ColorChoice::Never,
        }
    }
}
