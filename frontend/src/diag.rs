//! Diagnostics: codespan-reporting's `Diagnostic<()>` (one file per compilation, file id `()`),
//! the table of stable error codes, "did you mean" suggestions and rendering.

use crate::ast::Span;
use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
pub use codespan_reporting::term::termcolor::ColorChoice;
use codespan_reporting::term::{self, termcolor};

/// The diagnostic type used throughout the frontend.
pub type Diag = Diagnostic<()>;

/// Every error code with a one-line description.
/// E00xx lexical, E01xx syntax, E02xx names/structure, E03xx shapes, E04xx options/values/ranges,
/// E05xx methods/selectors.
pub const CODES: &[(&str, &str)] = &[
    ("E0001", "unexpected character"),
    ("E0002", "unterminated string literal"),
    ("E0003", "unknown escape sequence in a string"),
    ("E0004", "brackets nested too deeply (more than 32)"),
    ("E0005", "malformed number (exponent without digits)"),
    ("E0101", "unexpected token"),
    ("E0102", "unexpected end of file"),
    ("E0201", "name defined more than once"),
    ("E0202", "use of an undefined name"),
    ("E0203", "name used before its definition"),
    ("E0204", "unknown layer operation"),
    ("E0205", "the model has no `input` declaration"),
    ("E0206", "more than one `input` declaration"),
    ("E0207", "the model has no `loss`"),
    ("E0208", "more than one `loss`"),
    ("E0209", "unknown loss function"),
    ("E0210", "layer is never used"),
    ("E0211", "no `model` block"),
    ("E0212", "no `train` block"),
    (
        "E0213",
        "block given more than once (`model`, `data`, `train`, `method`)",
    ),
    ("E0214", "unknown data kind"),
    ("E0215", "unknown sparse-training method"),
    ("E0216", "the loss must read a layer, not the input"),
    (
        "E0301",
        "declared input width of a dense layer does not match its input",
    ),
    ("E0302", "dense layer on an input that is not 1-D"),
    (
        "E0303",
        "convolution or pooling on an input that is not 3-D `[C, H, W]`",
    ),
    (
        "E0304",
        "declared input channels of a conv2d layer do not match its input",
    ),
    (
        "E0305",
        "kernel larger than the (padded) input: output size below 1",
    ),
    ("E0306", "`add` operands have different shapes"),
    ("E0307", "loss on a value that is not 1-D"),
    (
        "E0308",
        "invalid input shape (empty or with a zero dimension)",
    ),
    ("E0309", "tensor too large (more than 2^31 elements)"),
    ("E0310", "too many stored parameters (more than 2^32)"),
    ("E0311", "the model does not fit the data set"),
    ("E0312", "the loss needs at least 2 classes"),
    ("E0313", "too many parameters in total (more than 2^40)"),
    ("E0401", "unknown option"),
    ("E0402", "missing required argument or option"),
    ("E0403", "too many positional arguments"),
    ("E0404", "value of the wrong type"),
    ("E0405", "option given more than once"),
    ("E0406", "integer literal too large"),
    ("E0407", "float literal out of range"),
    ("E0408", "value out of its allowed range"),
    ("E0409", "unknown optimizer"),
    ("E0410", "unknown learning-rate schedule"),
    ("E0411", "invalid choice for an option"),
    (
        "E0412",
        "argument must be named (or positional after named)",
    ),
    ("E0413", "list must be strictly increasing"),
    ("E0414", "epoch outside the training run"),
    ("E0415", "training set smaller than one batch"),
    ("E0501", "selector matches no layer with parameters"),
    ("E0502", "selector names a layer without parameters"),
    ("E0503", "`keep` names a layer the method does not select"),
    ("E0504", "the output layer cannot be shrunk by this method"),
    ("E0505", "dropback `k` larger than the selected parameters"),
    ("E0506", "selected layer missing from the `keep` map"),
    ("E0507", "unknown layer kind in an `@kind` selector"),
    (
        "E0508",
        "activation density selects a layer not followed by `relu`",
    ),
    ("E0509", "dropback given both `k` and `compression`"),
];

/// Codes the driver uses for problems with a file as a whole or with an IR dump (their golden
/// cases live in tests/golden/cli and tests/golden/ir-errors).
pub const DRIVER_CODES: &[(&str, &str)] = &[
    (codes::UNREADABLE_FILE, "the file cannot be read"),
    (codes::NOT_UTF8, "the file is not valid UTF-8"),
    (codes::IR_INVALID, "invalid IR dump (syntax or verifier)"),
    (
        codes::INTERNAL,
        "internal compiler error (a bug in sparsec)",
    ),
];

/// Names for the driver's codes.
pub mod codes {
    pub const UNREADABLE_FILE: &str = "E0901";
    pub const NOT_UTF8: &str = "E0902";
    pub const IR_INVALID: &str = "E0903";
    pub const INTERNAL: &str = "E0999";
}

/// One-line description of a code, if it exists.
pub fn describe(code: &str) -> Option<&'static str> {
    CODES
        .iter()
        .chain(DRIVER_CODES)
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
}

/// An error with a code, a message and a primary label.
pub fn error(code: &str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Diag {
    debug_assert!(describe(code).is_some(), "undefined code {code}");
    Diagnostic::error()
        .with_code(code)
        .with_message(message.into())
        .with_labels(vec![
            Label::primary((), span.range()).with_message(label.into())
        ])
}

/// Extension methods for building diagnostics.
pub trait DiagExt {
    fn secondary(self, span: Span, message: impl Into<String>) -> Self;
    fn note(self, message: impl Into<String>) -> Self;
    fn help(self, message: impl Into<String>) -> Self;
    /// The start of the primary label (for sorting).
    fn position(&self) -> usize;
}

impl DiagExt for Diag {
    fn secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels
            .push(Label::secondary((), span.range()).with_message(message.into()));
        self
    }

    fn note(mut self, message: impl Into<String>) -> Self {
        self.notes.push(format!("note: {}", message.into()));
        self
    }

    fn help(mut self, message: impl Into<String>) -> Self {
        self.notes.push(format!("help: {}", message.into()));
        self
    }

    fn position(&self) -> usize {
        self.labels
            .iter()
            .find(|l| l.style == codespan_reporting::diagnostic::LabelStyle::Primary)
            .map_or(0, |l| l.range.start)
    }
}

/// How many candidates a suggestion looks at (keeps "did you mean" linear on huge inputs).
const MAX_CANDIDATES: usize = 2000;
/// Names longer than this get no suggestion.
const MAX_SUGGEST_LEN: usize = 64;

/// The closest candidate to `name`, if close enough to be a plausible typo: normalized
/// Damerau-Levenshtein similarity ≥ 0.7 or an edit distance ≤ 2 (and less than the name's length).
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    if name.is_empty() || name.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(f64, usize, &str)> = None;
    for cand in candidates.into_iter().take(MAX_CANDIDATES) {
        if cand == name || cand.len() > MAX_SUGGEST_LEN {
            continue;
        }
        let cl = cand.to_ascii_lowercase();
        let dist = strsim::damerau_levenshtein(&lower, &cl);
        let sim = strsim::normalized_damerau_levenshtein(&lower, &cl);
        let close = sim >= 0.7 || (dist <= 2 && dist < name.len().min(cand.len()));
        if !close {
            continue;
        }
        let better = match best {
            None => true,
            Some((bs, bd, _)) => dist < bd || (dist == bd && sim > bs),
        };
        if better {
            best = Some((sim, dist, cand));
        }
    }
    best.map(|(_, _, c)| c.to_string())
}

/// Sorts diagnostics by position (stable: equal positions keep their order).
pub fn sort(diags: &mut [Diag]) {
    diags.sort_by_key(|d| d.position());
}

/// Renders diagnostics like rustc (`error[E0301]: ...` then ` --> file:line:col`).
/// `ColorChoice::Auto` colours only when stderr is a terminal and `NO_COLOR` is unset.
pub fn render(diags: &[Diag], file_name: &str, source: &str, color: ColorChoice) -> String {
    let ansi = match color {
        ColorChoice::Never => false,
        ColorChoice::Always | ColorChoice::AlwaysAnsi => true,
        ColorChoice::Auto => {
            use std::io::IsTerminal;
            std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
        }
    };
    let mut buffer = if ansi {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    emit(&mut buffer, diags, file_name, source);
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

/// Writes diagnostics to a termcolor writer (e.g. `StandardStream::stderr(ColorChoice::Auto)`).
pub fn emit<W: termcolor::WriteColor>(
    writer: &mut W,
    diags: &[Diag],
    file_name: &str,
    source: &str,
) {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config {
        chars: term::Chars::ascii(),
        ..term::Config::default()
    };
    let styles = term::Styles::default();
    let mut styled = term::StylesWriter::new(writer, &styles);
    for d in diags {
        // Spans always come from `source`; a failure here could only be an I/O error.
        let _ = term::emit_to_write_style(&mut styled, &config, &file, d);
    }
}

/// 1-based line and column (in characters) of a byte offset, computed once per source.
pub struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset of each line start, and whether the line is pure ASCII.
    lines: Vec<(usize, bool)>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> LineIndex<'a> {
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in source.bytes().enumerate() {
            if b == b'\n' {
                let ascii = source.get(start..i).is_some_and(|s| s.is_ascii());
                lines.push((start, ascii));
                start = i + 1;
            }
        }
        let ascii = source.get(start..).is_some_and(|s| s.is_ascii());
        lines.push((start, ascii));
        LineIndex { source, lines }
    }

    /// (line, column), both 1-based.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = match self.lines.binary_search_by_key(&offset, |l| l.0) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let (start, ascii) = self.lines.get(line).copied().unwrap_or((0, true));
        let col = if ascii {
            offset - start
        } else {
            let mut end = offset;
            while end > start && !self.source.is_char_boundary(end) {
                end -= 1;
            }
            self.source.get(start..end).map_or(0, |s| s.chars().count())
        };
        (line + 1, col + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("fc", ["fc1", "conv1"]), Some("fc1".into()));
        assert_eq!(
            did_you_mean("dense2d", ["dense", "conv2d"]),
            Some("dense".into())
        );
        assert_eq!(
            did_you_mean("momentun", ["lr", "momentum"]),
            Some("momentum".into())
        );
        assert_eq!(did_you_mean("xyz", ["dense", "conv2d"]), None);
        assert_eq!(did_you_mean("a", ["b"]), None);
    }

    #[test]
    fn codes_are_unique_and_sorted() {
        for w in CODES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn line_col() {
        let idx = LineIndex::new("ab\nçd\n");
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(3), (2, 1));
        assert_eq!(idx.line_col(5), (2, 2));
        assert_eq!(idx.line_col(100), (3, 1));
    }
}
