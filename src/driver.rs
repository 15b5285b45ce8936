//! From a file on disk to the program at a given stage. Every failure is a value: bad input
//! becomes located diagnostics (exit 1), bad usage a one-line message (exit 2).

use std::path::Path;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::term::termcolor::ColorChoice;
use sparsec_frontend::diag::codes;
use sparsec_ir::{Module, Stage};
use sparsec_passes::{Pipeline, PipelineError};

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
    /// Stopped by Ctrl-C or SIGTERM, with a checkpoint written: what to type to go on, exit
    /// code 130.
    Interrupted(String),
}

/// Diagnostics together with the file they point into.
pub struct Diagnostics {
    file_name: String,
    source: String,
    diagnostics: Vec<Diagnostic<()>>,
}

/// The most diagnostics shown for one file; the rest are counted in a last note (a garbled
/// multi-megabyte file would otherwise print far more than anyone reads).
const MAX_DIAGNOSTICS: usize = 50;

impl Diagnostics {
    fn new(file: &SourceFile, mut diagnostics: Vec<Diagnostic<()>>) -> Self {
        if diagnostics.len() > MAX_DIAGNOSTICS {
            let more = diagnostics.len() - MAX_DIAGNOSTICS;
            diagnostics.truncate(MAX_DIAGNOSTICS);
            diagnostics.push(Diagnostic::note().with_message(format!(
                "and {more} more diagnostic{} not shown; fix these first",
                if more == 1 { "" } else { "s" }
            )));
        }
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

/// The most a model file or IR dump may hold: far above any real one (an IR dump of LeNet-5 is
/// about 60 KB), and a bound on what reading a wrong path (`/dev/zero`) can cost.
const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// Text as the lexers read it: without a leading byte-order mark, with `\r\n` and lone `\r`
/// line endings as `\n`.
fn normalize_text(text: String) -> String {
    let text = match text.starts_with('\u{feff}') {
        true => text['\u{feff}'.len_utf8()..].to_owned(),
        false => text,
    };
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    }
}

fn read_source(path: &Path) -> Result<SourceFile, Failure> {
    use std::io::Read;
    let from_stdin = path == Path::new("-");
    let name = if from_stdin {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let kind = match path.extension() {
        Some(ext) if ext == "ir" => SourceKind::Ir,
        _ => SourceKind::Model,
    };
    let unreadable = |message: String| {
        Failure::Input(Diagnostics::unlocated(
            &name,
            Diagnostic::error()
                .with_code(codes::UNREADABLE_FILE)
                .with_message(message),
        ))
    };
    let mut bytes = Vec::new();
    let read = if from_stdin {
        std::io::stdin()
            .lock()
            .take(MAX_SOURCE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| unreadable(format!("cannot read `{name}`: {}", io_reason(&e))))?;
    // Standard input has no extension: a dump says what it is on its first line.
    let kind = if from_stdin && bytes.starts_with(b"sparsec-ir") {
        SourceKind::Ir
    } else {
        kind
    };

    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(unreadable(format!(
            "`{name}` holds more than {} MiB, far more than a model file or IR dump: is it the \
             right file?",
            MAX_SOURCE_BYTES >> 20
        )));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile {
            name,
            text: normalize_text(text),
            kind,
        }),
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
            // The checker vetted the program, so a failure past it is the compiler's.
            let bug = |message: String| {
                Failure::Input(Diagnostics::new(
                    &file,
                    vec![Diagnostic::bug()
                        .with_code(codes::INTERNAL)
                        .with_message(message)],
                ))
            };
            let mut module = sparsec_frontend::lower::lower(&model).map_err(|message| {
                if !sets.is_empty() {
                    // The checker vetted the file's own values; an override can still make a
                    // shape too large (a huge batch).
                    return Failure::Usage(format!("with these --set values: {message}"));
                }
                bug(message)
            })?;
            sparsec_passes::methods::assign_storage(&mut module).map_err(bug)?;
            (module, run)
        }
        SourceKind::Ir => {
            // The parser also runs the verifier and locates every finding in the text.
            let mut module = sparsec_ir::parse::parse_module_checked(&file.text, &storage_rule)
                .map_err(|errors| {
                    let diagnostics = errors
                        .into_iter()
                        .map(|e| {
                            Diagnostic::error()
                                .with_code(codes::IR_INVALID)
                                .with_message(e.message)
                                .with_labels(vec![Label::primary((), e.span)])
                        })
                        .collect();
                    Failure::Input(Diagnostics::new(&file, diagnostics))
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

/// An IR dump's storage must be what its method gives each parameter: the passes and the run
/// side act on the storage, the summary on the method line, and the two must agree.
fn storage_rule(module: &sparsec_ir::Module) -> Vec<sparsec_ir::verify::VerifyError> {
    use sparsec_ir::verify::{Site, VerifyError};
    match sparsec_passes::methods::storage_mismatches(module) {
        Ok(mismatches) => mismatches
            .into_iter()
            .map(|(i, message)| VerifyError {
                site: Site::Param(i),
                context: format!("param @{}", module.params[i].name),
                message,
            })
            .collect(),
        Err(message) => vec![VerifyError {
            site: Site::Method,
            context: "method".to_owned(),
            message,
        }],
    }
}

/// The program a run in progress trains: its program at stage `ir` as the checkpoint records
/// it after a reconfiguration, else its own model source, with its `--set` values (`sets`).
pub fn run_program(
    meta: &crate::checkpoint::TrainMeta,
    sets: &[(String, String)],
) -> Result<Program, Failure> {
    match &meta.program {
        Some(ir) => {
            let mut program = program_from_source(&meta.source_name, ir.clone(), true, sets)?;
            // The run is still the one its model source started; only its shapes moved on.
            program.source = meta.source.clone();
            program.is_ir = meta.source_is_ir;
            Ok(program)
        }
        None => program_from_source(
            &meta.source_name,
            meta.source.clone(),
            meta.source_is_ir,
            sets,
        ),
    }
}

/// How far to compile and what to show on the way.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Print the module after these passes (`all`: after every pass that runs).
    pub print_after: Vec<String>,
    /// Bytes that the materialised values of a function may take (extraction picks the
    /// fastest program that fits).
    pub memory_budget: Option<u64>,
}

/// What `sparsec emit` prints.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Emit {
    /// The syntax tree of a model file.
    Ast,
    /// The module at a stage.
    Module(Stage),
    /// The optimised functions as fused kernels (the JIT's kernel IR).
    Kernels,
    /// The Cranelift IR of every compiled kernel.
    Clif,
    /// The architecture a run ended with, as a model file ([`crate::standalone`]).
    Model,
}

/// The program at `stage`, running the pipeline's passes from wherever the program starts (a
/// model file starts at `ir`; an IR dump at its own stage). Dumps asked for with `print_after`
/// are appended to `trace`.
pub fn compile_to(
    program: &Program,
    stage: Stage,
    options: &CompileOptions,
    trace: &mut String,
) -> Result<Module, Failure> {
    compile_module(program, program.module.clone(), stage, options, trace)
}

/// [`compile_to`] for a module of the program other than its own (after a reconfiguration).
pub fn compile_module(
    program: &Program,
    module: Module,
    stage: Stage,
    options: &CompileOptions,
    trace: &mut String,
) -> Result<Module, Failure> {
    let pipeline = Pipeline::for_module(&module, options.memory_budget);
    let mut show = |pass: &str, m: &Module| {
        if options.print_after.iter().any(|p| p == pass || p == "all") {
            trace.push_str(&format!("# after {pass}\n"));
            trace.push_str(&sparsec_ir::print::print_module(m));
        }
    };
    pipeline.run(module, stage, &mut show).map_err(|e| match e {
        PipelineError::Refused(message) => {
            Failure::Message(format!("`{}`: {message}", program.file_name))
        }
        PipelineError::Pass { pass, message } => {
            if pass == "eqsat" && options.memory_budget.is_some() && message.contains("budget") {
                Failure::Message(message)
            } else {
                Failure::Input(Diagnostics::unlocated(
                    &program.file_name,
                    Diagnostic::error()
                        .with_code(codes::INTERNAL)
                        .with_message(format!("pass `{pass}` failed: {message}")),
                ))
            }
        }
    })
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
    // The validation `train` runs before its first pass (a method's refusals: Dropback with
    // momentum, ...), and the passes up to the training step: what check accepts, train compiles.
    compile_to(
        &program,
        Stage::Train.max(program.module.stage),
        &CompileOptions::default(),
        &mut String::new(),
    )?;
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
pub fn emit(what: Emit, path: &Path, options: &CompileOptions) -> Result<String, Failure> {
    let passes = sparsec_passes::pipeline::known_pass_names();
    for pass in &options.print_after {
        if pass != "all" && !passes.contains(&pass.as_str()) {
            return Err(Failure::Usage(format!(
                "--print-after {pass}: no such pass; passes: {}, or all",
                passes.join(", ")
            )));
        }
    }
    if what == Emit::Model {
        return crate::standalone::model_file(path);
    }
    let file = read_source(path)?;
    if what == Emit::Ast {
        return emit_ast(&file);
    }
    let program = program_from_source(&file.name, file.text, file.kind == SourceKind::Ir, &[])?;
    let mut out = String::new();
    let stage = match what {
        Emit::Module(stage) => stage,
        Emit::Ast | Emit::Kernels | Emit::Clif | Emit::Model => Stage::Opt,
    };
    let module = compile_to(&program, stage, options, &mut out)?;
    match what {
        Emit::Ast | Emit::Module(_) | Emit::Model => {
            // Stage `ir` runs no pass, so there is nothing else to show.
            if options.print_after.is_empty() || stage == Stage::Ir {
                out.push_str(&sparsec_ir::print::print_module(&module));
            }
        }
        Emit::Kernels | Emit::Clif => {
            for func in &module.funcs {
                let jit =
                    sparsec_backend::JitProgram::new(&module, &func.name, 1).map_err(|e| {
                        Failure::Message(format!("`{}`: @{}: {e}", program.file_name, func.name))
                    })?;
                if what == Emit::Kernels {
                    out.push_str(&jit.plan().to_string());
                } else {
                    out.push_str(&jit.clif());
                }
            }
        }
    }
    Ok(out)
}

/// `sparsec emit --stage ast`: the syntax tree of a model file.
fn emit_ast(file: &SourceFile) -> Result<String, Failure> {
    if file.kind == SourceKind::Ir {
        return Err(Failure::Usage(format!(
            "`{}` is an IR dump; the ast stage needs a model file (.net)",
            file.name
        )));
    }
    let (ast, diags) = sparsec_frontend::parse(&file.text);
    match ast {
        Some(ast) if diags.is_empty() => Ok(sparsec_frontend::print_ast(&ast, &file.text)),
        _ => Err(Failure::Input(Diagnostics::new(file, diags))),
    }
}
