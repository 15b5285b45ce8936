//! The command line, as clap sees it. Usage errors exit with code 2 (clap's convention, and ours).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::ColorChoice;

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
        /// A model file (.net) or an IR dump (.ir).
        file: PathBuf,
    },
    /// Print the program after a compiler stage.
    Emit {
        /// The stage to stop after.
        #[arg(long, value_enum)]
        stage: Stage,
        /// A model file (.net) or an IR dump (.ir).
        file: PathBuf,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The syntax tree of a model file, with source positions.
    Ast,
    /// The IR right after lowering: the forward graph, parameters and training spec.
    Ir,
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
