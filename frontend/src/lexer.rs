//! The lexer: logos for the raw tokens, and a wrapper that resolves string escapes, turns lexing
//! errors into diagnostics (skipping the offending bytes), guards the bracket nesting depth and
//! yields `(start, token, end)` triples for lalrpop's external-lexer interface.

use crate::ast::Span;
use crate::diag::{error, Diag};
use logos::Logos;
use std::fmt;

/// Deepest bracket nesting accepted (`( [ {` together).
pub const MAX_NESTING: usize = 32;
/// After this many lexical diagnostics the rest are dropped (a binary file would flood them).
const MAX_LEX_DIAGS: usize = 100;

#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"(#|//)[^\n]*", allow_greedy = true))]
enum Raw {
    #[token("model")]
    Model,
    #[token("input")]
    Input,
    #[token("loss")]
    Loss,
    #[token("data")]
    Data,
    #[token("train")]
    Train,
    #[token("method")]
    Method,
    #[token("true")]
    True,
    #[token("false")]
    False,
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Ident,
    #[regex(r"([A-Za-z_][A-Za-z0-9_]*)?\*[A-Za-z0-9_*]*")]
    Glob,
    #[regex(r"@[A-Za-z_][A-Za-z0-9_]*")]
    Kind,
    #[regex(r"[0-9][0-9_]*")]
    Int,
    #[regex(r"[0-9][0-9_]*\.[0-9][0-9_]*([eE][+-]?[0-9]+)?")]
    #[regex(r"[0-9][0-9_]*[eE][+-]?[0-9]+")]
    Float,
    #[regex(r"[0-9][0-9_]*(\.[0-9][0-9_]*)?[eE][+-]?")]
    BadExponent,
    #[regex(r"[0-9][0-9_]*(\.[0-9][0-9_]*)?%")]
    Percent,
    #[regex(r#""([^"\\\n]|\\[^\n])*""#)]
    Str,
    #[regex(r#""([^"\\\n]|\\[^\n])*\\?"#)]
    Unterminated,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(":")]
    Colon,
    #[token(",")]
    Comma,
    #[token("=")]
    Eq,
    #[token("->")]
    Arrow,
    #[token("-")]
    Minus,
}

/// A token as the parser sees it. Texts borrow from the source except string contents, which have
/// their escapes resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok<'a> {
    Model,
    Input,
    Loss,
    Data,
    Train,
    Method,
    True,
    False,
    Ident(&'a str),
    Glob(&'a str),
    /// `@kind`, without the `@`.
    Kind(&'a str),
    /// Integer literal text (with `_`).
    Int(&'a str),
    /// Float literal text.
    Float(&'a str),
    /// A percentage: the number's text, without the `%`.
    Percent(&'a str),
    /// String contents, escapes resolved.
    Str(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Eq,
    Arrow,
    Minus,
}

impl fmt::Display for Tok<'_> {
    /// How a token is named in "found ..." messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Model => write!(f, "keyword `model`"),
            Tok::Input => write!(f, "keyword `input`"),
            Tok::Loss => write!(f, "keyword `loss`"),
            Tok::Data => write!(f, "keyword `data`"),
            Tok::Train => write!(f, "keyword `train`"),
            Tok::Method => write!(f, "keyword `method`"),
            Tok::True => write!(f, "`true`"),
            Tok::False => write!(f, "`false`"),
            Tok::Ident(s) => write!(f, "identifier `{}`", shorten(s)),
            Tok::Glob(s) => write!(f, "glob `{}`", shorten(s)),
            Tok::Kind(s) => write!(f, "kind selector `@{}`", shorten(s)),
            Tok::Int(s) => write!(f, "integer `{}`", shorten(s)),
            Tok::Float(s) => write!(f, "float `{}`", shorten(s)),
            Tok::Percent(s) => write!(f, "percentage `{}%`", shorten(s)),
            Tok::Str(s) => write!(f, "string {:?}", shorten(s)),
            Tok::LBrace => write!(f, "`{{`"),
            Tok::RBrace => write!(f, "`}}`"),
            Tok::LParen => write!(f, "`(`"),
            Tok::RParen => write!(f, "`)`"),
            Tok::LBracket => write!(f, "`[`"),
            Tok::RBracket => write!(f, "`]`"),
            Tok::Colon => write!(f, "`:`"),
            Tok::Comma => write!(f, "`,`"),
            Tok::Eq => write!(f, "`=`"),
            Tok::Arrow => write!(f, "`->`"),
            Tok::Minus => write!(f, "`-`"),
        }
    }
}

/// Long texts are cut in messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// The lexer never hands an error to the parser (errors become diagnostics); this type only
/// fills lalrpop's `Error` slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LexError {}

impl fmt::Display for LexError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// The token stream handed to lalrpop.
pub struct Lexer<'a, 'd> {
    raw: logos::Lexer<'a, Raw>,
    source: &'a str,
    diags: &'d mut Vec<Diag>,
    /// Start offsets of the tokens yielded so far (used to space out syntax errors).
    pub(crate) token_starts: Vec<usize>,
    depth: usize,
    /// Set once the stream has been cut (nesting guard): the offset where it stopped.
    cut_at: Option<usize>,
    /// Bytes of a run of consecutive stray characters not yet reported.
    pending: Option<Span>,
    lex_diags: usize,
}

impl<'a, 'd> Lexer<'a, 'd> {
    pub fn new(source: &'a str, diags: &'d mut Vec<Diag>) -> Lexer<'a, 'd> {
        Lexer {
            raw: Raw::lexer(source),
            source,
            diags,
            token_starts: Vec::new(),
            depth: 0,
            cut_at: None,
            pending: None,
            lex_diags: 0,
        }
    }

    /// Where the nesting guard ended the stream, if it did.
    pub fn cut_at(&self) -> Option<usize> {
        self.cut_at
    }

    fn push(&mut self, d: Diag) {
        self.lex_diags += 1;
        if self.lex_diags <= MAX_LEX_DIAGS {
            self.diags.push(d);
        } else if self.lex_diags == MAX_LEX_DIAGS + 1 {
            // Keep one marker so the user knows more were dropped.
            let at = d.labels.first().map_or(0, |l| l.range.start);
            self.diags.push(
                error(
                    "E0001",
                    "too many lexical errors; giving up on reporting them",
                    Span::new(at, at),
                    "",
                )
                .with_notes(vec!["note: is this a model file?".to_string()]),
            );
        }
    }

    fn flush_pending(&mut self) {
        if let Some(span) = self.pending.take() {
            let text = self.source.get(span.range()).unwrap_or("");
            let msg = if text.chars().count() == 1 {
                format!("unexpected character `{}`", text.escape_debug())
            } else {
                format!(
                    "unexpected characters `{}`",
                    shorten(&text.escape_debug().to_string())
                )
            };
            let mut d = error("E0001", msg, span, "not part of the language");
            if text.starts_with('@') {
                d = d.with_notes(vec![
                    "help: a kind selector is `@` followed by a layer kind, e.g. `@dense`".into(),
                ]);
            } else if text.starts_with('\'') {
                d = d.with_notes(vec!["help: strings use double quotes".into()]);
            } else if text.starts_with('.') {
                d = d.with_notes(vec![
                    "help: a float needs digits on both sides of `.`, e.g. `0.5`".into(),
                ]);
            }
            self.push(d);
        }
    }

    /// Extends an end offset to the next char boundary.
    fn boundary(&self, mut end: usize) -> usize {
        while end < self.source.len() && !self.source.is_char_boundary(end) {
            end += 1;
        }
        end.min(self.source.len())
    }

    fn string(&mut self, span: Span) -> String {
        let body_start = span.start + 1;
        let body_end = span.end.saturating_sub(1).max(body_start);
        let body = self.source.get(body_start..body_end).unwrap_or("");
        let mut out = String::with_capacity(body.len());
        let mut chars = body.char_indices();
        while let Some((_, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((j, other)) => {
                    let at = body_start + j - 1;
                    let esc = Span::new(at, at + 1 + other.len_utf8());
                    self.push(
                        error(
                            "E0003",
                            format!("unknown escape `\\{}` in a string", other.escape_debug()),
                            esc,
                            "unknown escape",
                        )
                        .with_notes(vec!["help: the only escapes are `\\\"` and `\\\\`".into()]),
                    );
                }
                None => {}
            }
        }
        out
    }
}

impl<'a> Iterator for Lexer<'a, '_> {
    type Item = Result<(usize, Tok<'a>, usize), LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cut_at.is_some() {
            return None;
        }
        loop {
            let next = self.raw.next();
            let range = self.raw.span();
            let span = Span::new(range.start, self.boundary(range.end.max(range.start)));
            let raw = match next {
                None => {
                    self.flush_pending();
                    return None;
                }
                Some(Err(())) => {
                    // Merge runs of stray characters into one diagnostic.
                    match &mut self.pending {
                        Some(p) if p.end == span.start => p.end = span.end,
                        _ => {
                            self.flush_pending();
                            self.pending = Some(span);
                        }
                    }
                    if span.end > range.end {
                        self.raw.bump(span.end - range.end);
                    }
                    continue;
                }
                Some(Ok(raw)) => raw,
            };
            self.flush_pending();
            let text = self.source.get(span.range()).unwrap_or("");
            let tok = match raw {
                Raw::Model => Tok::Model,
                Raw::Input => Tok::Input,
                Raw::Loss => Tok::Loss,
                Raw::Data => Tok::Data,
                Raw::Train => Tok::Train,
                Raw::Method => Tok::Method,
                Raw::True => Tok::True,
                Raw::False => Tok::False,
                Raw::Ident => Tok::Ident(text),
                Raw::Glob => Tok::Glob(text),
                Raw::Kind => Tok::Kind(text.get(1..).unwrap_or("")),
                Raw::Int => Tok::Int(text),
                Raw::Float => Tok::Float(text),
                Raw::Percent => Tok::Percent(text.strip_suffix('%').unwrap_or(text)),
                Raw::BadExponent => {
                    self.push(
                        error(
                            "E0005",
                            "malformed number: the exponent has no digits",
                            span,
                            "exponent without digits",
                        )
                        .with_notes(vec!["help: write the exponent's digits, e.g. `5e-4`".into()]),
                    );
                    // Yield it as a number so that parsing continues without cascading.
                    Tok::Float(text)
                }
                Raw::Str => Tok::Str(self.string(span)),
                Raw::Unterminated => {
                    self.push(error(
                        "E0002",
                        "unterminated string",
                        span,
                        "this string has no closing `\"` on its line",
                    ));
                    // Yield the string anyway so that parsing continues without cascading.
                    let end = span.end + 1;
                    Tok::Str(self.string(Span::new(span.start, end)))
                }
                Raw::LBrace | Raw::LParen | Raw::LBracket => {
                    if self.depth >= MAX_NESTING {
                        self.cut_at = Some(span.start);
                        self.push(
                            error(
                                "E0004",
                                format!(
                                    "brackets nested too deeply (more than {MAX_NESTING} levels)"
                                ),
                                span,
                                format!("nesting level {} starts here", MAX_NESTING + 1),
                            )
                            .with_notes(vec!["note: the rest of the file was not read".into()]),
                        );
                        return None;
                    }
                    self.depth += 1;
                    match raw {
                        Raw::LBrace => Tok::LBrace,
                        Raw::LParen => Tok::LParen,
                        _ => Tok::LBracket,
                    }
                }
                Raw::RBrace | Raw::RParen | Raw::RBracket => {
                    self.depth = self.depth.saturating_sub(1);
                    match raw {
                        Raw::RBrace => Tok::RBrace,
                        Raw::RParen => Tok::RParen,
                        _ => Tok::RBracket,
                    }
                }
                Raw::Colon => Tok::Colon,
                Raw::Comma => Tok::Comma,
                Raw::Eq => Tok::Eq,
                Raw::Arrow => Tok::Arrow,
                Raw::Minus => Tok::Minus,
            };
            self.token_starts.push(span.start);
            return Some(Ok((span.start, tok, span.end)));
        }
    }
}

/// Lexes a whole source into tokens and diagnostics (for tests and tools).
pub fn tokenize(source: &str) -> (Vec<(usize, Tok<'_>, usize)>, Vec<Diag>) {
    let mut diags = Vec::new();
    let toks: Vec<_> = Lexer::new(source, &mut diags).flatten().collect();
    (toks, diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        let (t, d) = tokenize(s);
        assert!(d.is_empty(), "unexpected diagnostics for {s:?}: {d:?}");
        t.into_iter().map(|(_, t, _)| t).collect()
    }

    fn codes(s: &str) -> Vec<String> {
        tokenize(s).1.into_iter().filter_map(|d| d.code).collect()
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("10 10_664 0.1 5e-4 1.5E3 1_000.000_1"),
            vec![
                Tok::Int("10"),
                Tok::Int("10_664"),
                Tok::Float("0.1"),
                Tok::Float("5e-4"),
                Tok::Float("1.5E3"),
                Tok::Float("1_000.000_1")
            ]
        );
        assert_eq!(
            toks("-0.5 -3"),
            vec![Tok::Minus, Tok::Float("0.5"), Tok::Minus, Tok::Int("3")]
        );
        assert_eq!(
            toks("784 -> 300"),
            vec![Tok::Int("784"), Tok::Arrow, Tok::Int("300")]
        );
    }

    #[test]
    fn names_globs_kinds_keywords() {
        assert_eq!(
            toks("fc1 conv_2 fc* conv*_a * @dense @conv2d model models input_x"),
            vec![
                Tok::Ident("fc1"),
                Tok::Ident("conv_2"),
                Tok::Glob("fc*"),
                Tok::Glob("conv*_a"),
                Tok::Glob("*"),
                Tok::Kind("dense"),
                Tok::Kind("conv2d"),
                Tok::Model,
                Tok::Ident("models"),
                Tok::Ident("input_x"),
            ]
        );
    }

    #[test]
    fn strings_and_comments() {
        assert_eq!(
            toks(
                r#""data/fmnist" "a\"b\\c" # comment "x"
            // another
            """#
            ),
            vec![
                Tok::Str("data/fmnist".into()),
                Tok::Str("a\"b\\c".into()),
                Tok::Str(String::new())
            ]
        );
        assert!(toks("# only a comment").is_empty());
        assert!(toks("").is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(codes("a $ b"), vec!["E0001"]);
        assert_eq!(codes("a $$$ b"), vec!["E0001"], "a run is one diagnostic");
        assert_eq!(codes("a é b"), vec!["E0001"]);
        assert_eq!(codes("x = \"abc\ny"), vec!["E0002"]);
        assert_eq!(codes("\"abc\\"), vec!["E0002"]);
        assert_eq!(codes(r#""a\nb""#), vec!["E0003"]);
        assert_eq!(codes("1e"), vec!["E0005"]);
        assert_eq!(codes("@ x"), vec!["E0001"]);
        // The stream continues after an error.
        let (t, _) = tokenize("a $ b");
        assert_eq!(t.len(), 2);
        let (t, _) = tokenize("\"a\\qb\" c");
        assert_eq!(t[0].1, Tok::Str("ab".into()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn nesting_guard() {
        let deep = "[".repeat(32);
        assert!(codes(&deep).is_empty());
        let src = "[".repeat(1_000_000);
        let (t, d) = tokenize(&src);
        assert_eq!(t.len(), 32);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code.as_deref(), Some("E0004"));
        assert_eq!(d[0].labels[0].range, 32..33);
        // Balanced brackets never trip it.
        assert!(codes(&"[]".repeat(1000)).is_empty());
    }

    #[test]
    fn binary_garbage_is_bounded() {
        let s: String = (0..10_000)
            .map(|i| if i % 2 == 0 { '$' } else { ' ' })
            .collect();
        let d = codes(&s);
        assert_eq!(d.len(), MAX_LEX_DIAGS + 1);
    }
}
