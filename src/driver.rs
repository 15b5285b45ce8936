//! From a file on disk to the program at a given stage. Every failure is a value: bad input
//! becomes located diagnostics (exit 1), bad usage a one-line message (exit 2).

use std::path::Path;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::term::termcolor::ColorChoice;
use sparsec_frontend::diag::codes;
use sparsec_ir::Module;

use crate::cli::Stage;
use crate::overrides::{self, RunOptions};

/// Why a command did not produce its output.
pub enum Failure {
    /// The input is wrong: diagnostics to show, exit code 1.
    Input(Diagnostics),
    /// The command line asks for something that cannot be done: exit code 2.
    Usage(String),
    /// The input is wrong in a way with no location in a file (data, a run directory, a
    /// diverging run): a one-line message, exit code 1.
    Message(String),
}

/// Diagnostics together with the file they point into.
pub struct Diagnostics {
    file_name: String,
    source: String,
    diagnostics: Vec<Diagnostic<()>>,
}

impl Diagnostics {
    fn new(file: &SourceFile, diagnostics: Vec<Diagnostic<()>>) -> Self {
        Diagnostics {
            file_name: file.name.clone(),
            source: file.text.clone(),
            diagnostics,
        }
    }

    /// An error about the file as a whole (it cannot be read), with no location in it.
    fn unlocated(file_name: &str, diagnostic: Diagnostic<()>) -> Self {
        Diagnostics {
            file_name: file_name.to_owned(),
            source: String::new(),
            diagnostics: vec![diagnostic],
        }
    }

    pub fn render(&self, color: ColorChoice) -> String {
        sparsec_frontend::diag::render(&self.diagnostics, &self.file_name, &self.source, color)
    }
}

/// What kind of program a file holds, by its extension: `.ir` is an IR dump, anything else a
/// model file.
#[derive(Copy, Clone, PartialEq, Eq)]
enum SourceKind {
    Model,
    Ir,
}

struct SourceFile {
    name: String,
    text: String,
    kind: SourceKind,
}

fn read_source(path: &Path) -> Result<SourceFile, Failure> {
    let name = path.display().to_string();
    let kind = match path.extension() {
        Some(ext) if ext == "ir" => SourceKind::Ir,
        _ => SourceKind::Model,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::Input(Diagnostics::unlocated(
            &name,
            Diagnostic::error()
                .with_code(codes::UNREADABLE_FILE)
                .with_message(format!("cannot read `{name}`: {}", io_reason(&e))),
        ))
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile { name, text, kind }),
        Err(e) => {
            // Point at the first bad byte; everything before it is valid and shown as is.
            let at = e.utf8_error().valid_up_to();
            let file = SourceFile {
                name,
                text: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                kind,
            };
            let diagnostic = Diagnostic::error()
                .with_code(codes::NOT_UTF8)
                .with_message("the file is not valid UTF-8")
                .with_labels(vec![Label::primary((), at..at + 1)
                    .with_message("this byte does not start a UTF-8 character")]);
            Err(Failure::Input(Diagnostics::new(&file, vec![diagnostic])))
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

/// A program ready for the later stages: where it came from and its IR after lowering.
pub struct Program {
    pub file_name: String,
    /// The text it was compiled from (model file or IR dump), kept so a run can be resumed
    /// from its own copy.
    pub source: String,
    pub is_ir: bool,
    pub module: Module,
    pub run: RunOptions,
}

/// Read, check and lower a file, with `--set` overrides applied to its training settings.
pub fn load_program(path: &Path, sets: &[(String, String)]) -> Result<Program, Failure> {
    let file = read_source(path)?;
    program_from_source(
        &file.name.clone(),
        file.text.clone(),
        file.kind == SourceKind::Ir,
        sets,
    )
}

/// Compile a program from text (a model file, or an IR dump when `is_ir`).
pub fn program_from_source(
    file_name: &str,
    source: String,
    is_ir: bool,
    sets: &[(String, String)],
) -> Result<Program, Failure> {
    let file = SourceFile {
        name: file_name.to_owned(),
        text: source,
        kind: if is_ir {
            SourceKind::Ir
        } else {
            SourceKind::Model
        },
    };
    let (module, run) = match file.kind {
        SourceKind::Model => {
            let mut model = sparsec_frontend::check_source(&file.text)
                .map_err(|diags| Failure::Input(Diagnostics::new(&file, diags)))?;
            let run = overrides::apply(&mut model.train, sets).map_err(Failure::Usage)?;
            let module = sparsec_frontend::lower::lower(&model).map_err(|message| {
                if !sets.is_empty() {
                    // The checker vetted the file's own values; an override can still make a
                    // shape too large (a huge batch).
                    return Failure::Usage(format!("with these --set values: {message}"));
                }
                Failure::Input(Diagnostics::new(
                    &file,
                    vec![Diagnostic::bug()
                        .with_code(codes::INTERNAL)
                        .with_message(message)],
                ))
            })?;
            (module, run)
        }
        SourceKind::Ir => {
            // `parse_module` also runs the verifier and locates its findings in the text.
            let mut module = sparsec_ir::parse::parse_module(&file.text).map_err(|e| {
                let diagnostic = Diagnostic::error()
                    .with_code(codes::IR_INVALID)
                    .with_message(e.message.clone())
                    .with_labels(vec![Label::primary((), e.span.clone())]);
                Failure::Input(Diagnostics::new(&file, vec![diagnostic]))
            })?;
            let run = match module.train.as_mut() {
                Some(train) => {
                    let batch = train.batch;
                    let run = overrides::apply(train, sets).map_err(Failure::Usage)?;
                    if train.batch != batch {
                        return Err(Failure::Usage(format!(
                            "the batch size of an IR dump is part of its shapes; change it in the model file (`{}` has batch {batch})",
                            file.name
                        )));
                    }
                    run
                }
                None if sets.is_empty() => RunOptions::default(),
                None => {
                    return Err(Failure::Usage(format!(
                        "`{}` has no `train` line, so there are no settings to override",
                        file.name
                    )))
                }
            };
            (module, run)
        }
    };
    Ok(Program {
        file_name: file.name,
        source: file.text,
        is_ir,
        module,
        run,
    })
}

/// The passes after lowering, in order, by the names `--print-after` takes.
pub const PASSES: &[&str] = &["autodiff", "dropback", "eqsat"];

/// How far to compile and what to show on the way.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Print the module after these passes (`all`: after every pass that runs).
    pub print_after: Vec<String>,
    /// Bytes that the materialised values of a function may take (extraction picks the
    /// fastest program that fits).
    pub memory_budget: Option<u64>,
}

/// The program at `stage` (`train` or `opt`), running the passes it needs from wherever the
/// program starts (a model file starts at `ir`; an IR dump at its own stage). Dumps asked for
/// with `print_after` are appended to `trace`.
pub fn compile_to(
    program: &Program,
    stage: Stage,
    options: &CompileOptions,
    trace: &mut String,
) -> Result<Module, Failure> {
    let fail = |pass: &str, message: String| {
        Failure::Input(Diagnostics::unlocated(
            &program.file_name,
            Diagnostic::error()
                .with_code(codes::INTERNAL)
                .with_message(format!("pass `{pass}` failed: {message}")),
        ))
    };
    let mut module = program.module.clone();
    let order = |s: &str| match s {
        "ir" => 0,
        "train" => 1,
        "opt" => 2,
        _ => 3,
    };
    let target = match stage {
        Stage::Opt | Stage::Kernels | Stage::Clif => 2,
        _ => 1,
    };
    let show = |pass: &str, m: &Module, trace: &mut String| {
        if options.print_after.iter().any(|p| p == pass || p == "all") {
            trace.push_str(&format!("# after {pass}\n"));
            trace.push_str(&sparsec_ir::print::print_module(m));
        }
    };
    if order(&module.stage) < 1 && target >= 1 {
        if let (Some(spec), Some(train)) = (&module.method, &module.train) {
            if matches!(spec.method, sparsec_ir::spec::Method::Dropback { .. })
                && train.optimizer.momentum != 0.0
            {
                return Err(Failure::Message(format!(
                    "`{}`: Dropback trains with plain SGD: momentum {} would keep a dense buffer \
                     of every weight, the O(N) state Dropback exists to avoid; set momentum to 0",
                    program.file_name, train.optimizer.momentum
                )));
            }
        }
        module = sparsec_passes::build_train_step(&module).map_err(|e| fail("autodiff", e))?;
        show("autodiff", &module, trace);
        if let Some(sparsec_ir::spec::Method::Dropback { .. }) =
            module.method.as_ref().map(|s| &s.method)
        {
            module = sparsec_passes::apply_dropback(&module).map_err(|e| fail("dropback", e))?;
            show("dropback", &module, trace);
        }
    }
    if order(&module.stage) < 2 && target >= 2 {
        let opts = sparsec_passes::OptOptions {
            memory_budget: options.memory_budget,
            ..Default::default()
        };
        let (optimised, _) = sparsec_passes::optimize(&module, &opts).map_err(|e| {
            if options.memory_budget.is_some() && e.contains("budget") {
                Failure::Message(e)
            } else {
                fail("eqsat", e)
            }
        })?;
        module = optimised;
        show("eqsat", &module, trace);
    }
    Ok(module)
}

/// The whole training step before optimisation (stage `train`) of a program at stage `ir`.
pub fn train_step_module(program: &Program) -> Result<Module, Failure> {
    compile_to(
        program,
        Stage::Train,
        &CompileOptions::default(),
        &mut String::new(),
    )
}

/// `sparsec check FILE`: a one-line summary on success.
pub fn check(path: &Path) -> Result<String, Failure> {
    let program = load_program(path, &[])?;
    let module = &program.module;
    let method = module
        .method
        .as_ref()
        .map_or("dense".to_owned(), |m| m.method.name().to_owned());
    Ok(format!(
        "{}: ok: model `{}`, {} parameters, {}\n",
        program.file_name,
        module.name,
        module.param_count(),
        method
    ))
}

/// `sparsec emit --stage STAGE FILE`.
pub fn emit(stage: Stage, path: &Path, options: &CompileOptions) -> Result<String, Failure> {
    for pass in &options.print_after {
        if pass != "all" && !PASSES.contains(&pass.as_str()) {
            return Err(Failure::Usage(format!(
                "--print-after {pass}: no such pass; passes: {}, or all",
                PASSES.join(", ")
            )));
        }
    }
    let file = read_source(path)?;
    match stage {
        Stage::Ast => {
            if file.kind == SourceKind::Ir {
                return Err(Failure::Usage(format!(
                    "`{}` is an IR dump; the ast stage needs a model file (.net)",
                    file.name
                )));
            }
            let (ast, diags) = sparsec_frontend::parse(&file.text);
            match ast {
                Some(ast) if diags.is_empty() => Ok(sparsec_frontend::print_ast(&ast, &file.text)),
                _ => Err(Failure::Input(Diagnostics::new(&file, diags))),
            }
        }
        Stage::Ir => {
            let program =
                program_from_source(&file.name, file.text, file.kind == SourceKind::Ir, &[])?;
            Ok(sparsec_ir::print::print_module(&program.module))
        }
        Stage::Train | Stage::Opt => {
            let program =
                program_from_source(&file.name, file.text, file.kind == SourceKind::Ir, &[])?;
            let mut out = String::new();
            let module = compile_to(&program, stage, options, &mut out)?;
            if options.print_after.is_empty() {
                out.push_str(&sparsec_ir::print::print_module(&module));
            }
            Ok(out)
        }
        Stage::Kernels | Stage::Clif => {
            let program =
                program_from_source(&file.name, file.text, file.kind == SourceKind::Ir, &[])?;
            let mut out = String::new();
            let module = compile_to(&program, Stage::Opt, options, &mut out)?;
            for func in &module.funcs {
                let jit =
                    sparsec_backend::JitProgram::new(&module, &func.name, 1).map_err(|e| {
                        Failure::Message(format!("`{}`: @{}: {e}", program.file_name, func.name))
                    })?;
                if stage == Stage::Kernels {
                    out.push_str(&jit.plan().to_string());
                } else {
                    out.push_str(&jit.clif());
                }
            }
            Ok(out)
        }
    }
}
