//! sparsec's front end: lexer (logos), parser (lalrpop), AST with spans, checker and diagnostics.
//!
//! ```text
//! source ──lexer──▶ tokens ──grammar──▶ ast::File ──check──▶ model::CheckedModel
//! ```
//! Every error is a `codespan_reporting` diagnostic with a stable code (see [`diag::CODES`]).

#![forbid(unsafe_code)]

pub mod ast;
pub mod check;
pub mod diag;
pub mod lexer;
pub mod lower;
pub mod model;
pub mod parse;
pub mod print;
pub mod rewrite;

pub use check::check;
pub use diag::{render, Diag, CODES};
pub use model::CheckedModel;
pub use parse::parse;
pub use print::print_ast;

/// Parses and checks a source. Syntax errors are returned alone (the checker would only report
/// their consequences); otherwise the checker's errors, or the checked model.
pub fn check_source(source: &str) -> Result<CheckedModel, Vec<Diag>> {
    let (file, diags) = parse(source);
    if !diags.is_empty() {
        return Err(diags);
    }
    match file {
        Some(file) => check(&file),
        None => Err(diags),
    }
}
