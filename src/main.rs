//! `sparsec`: the command-line driver.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::{Cli, Command};
use sparsec::driver::{self, Failure};
use sparsec::interrupt;
use sparsec::overrides;
use sparsec::plot;
use sparsec::predict;
use sparsec::report;
use sparsec::train::{self, TrainRequest};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = cli.color.choice();
    let result = check_environment(&cli).and_then(|()| run(&cli));
    match result {
        Ok(out) => {
            // A closed pipe (`sparsec emit ... | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(Failure::Input(diagnostics)) => {
            let _ = std::io::stderr().write_all(diagnostics.render(color).as_bytes());
            ExitCode::from(1)
        }
        Err(Failure::Message(message)) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Interrupted(message)) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            ExitCode::from(interrupt::EXIT_CODE)
        }
    }
}

/// What the command line cannot say but the environment can, checked like the option it stands
/// for; and option combinations that contradict each other.
fn check_environment(cli: &Cli) -> Result<(), Failure> {
    if let Some(value) = std::env::var_os("SPARSEC_THREADS") {
        let text = value.to_string_lossy();
        if !matches!(text.trim(), "1" | "2") {
            return Err(Failure::Usage(format!(
                "SPARSEC_THREADS={text:?}: must be 1 or 2, as for --threads (or unset it)"
            )));
        }
    }
    if let Command::Train(args) = &cli.command {
        if args.profile && matches!(args.backend, cli::Backend::Interp) {
            return Err(Failure::Usage(
                sparsec::runner::PROFILE_NEEDS_JIT.to_owned(),
            ));
        }
        if let (Some(_), Some(out)) = (&args.resume, &args.out) {
            return Err(Failure::Usage(format!(
                "--out {} with --resume: a resumed run goes on in its own directory; leave \
                 --out out",
                out.display()
            )));
        }
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<String, Failure> {
    match &cli.command {
        Command::Check { file } => driver::check(file),
        Command::Emit {
            stage,
            file,
            print_after,
            memory_budget,
        } => driver::emit(
            stage.emit(),
            file,
            &driver::CompileOptions {
                print_after: print_after.clone(),
                memory_budget: *memory_budget,
            },
        ),
        Command::Train(args) => interrupt::install()
            .map_err(Failure::Message)
            .and_then(|()| overrides::parse(&args.set).map_err(Failure::Usage))
            .and_then(|sets| {
                train::train(TrainRequest {
                    file: args.file.clone(),
                    data: args.data.clone(),
                    out: args.out.clone(),
                    sets,
                    resume: args.resume.clone(),
                    init_from: args.init_from.clone(),
                    backend: args.backend.backend(),
                    threads: args.threads.map(usize::from),
                    extra_hooks: Vec::new(),
                    profile: args.profile,
                })
            }),
        Command::Predict {
            run_dir,
            inputs,
            json,
            backend,
            threads,
        } => predict::predict(&predict::PredictRequest {
            run: run_dir,
            inputs,
            json: *json,
            backend: backend.backend(),
            threads: threads.map(usize::from),
        }),
        Command::Export { run_dir, onnx } => sparsec::onnx::export(run_dir, onnx),
        Command::Report { run_dir, json } => report::report(run_dir, *json),
        Command::Plot { runs, out, font } => {
            plot::plot(runs, out.as_deref(), font.as_deref()).map_err(Failure::Message)
        }
        Command::Eval {
            file,
            weights,
            data,
            backend,
            threads,
        } => train::eval(
            file.as_deref(),
            weights,
            data.as_deref(),
            backend.backend(),
            threads.map(usize::from),
        ),
    }
}
