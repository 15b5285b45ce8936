//! Parsing: runs the lalrpop grammar over the lexer and turns its errors into diagnostics.

use crate::ast::{File, Span};
use crate::diag::{self, error, Diag};
use crate::lexer::{LexError, Lexer, Tok};
use lalrpop_util::{lalrpop_mod, ErrorRecovery, ParseError};

lalrpop_mod!(
    #[allow(clippy::all, unused_qualifications, dead_code)]
    grammar
);

/// A syntax error closer than this many tokens after the previous one, or on the same line, is not
/// reported: it is most likely a consequence of the parser's recovery (yacc's rule, plus lines).
const ERROR_SPACING: usize = 3;
/// At most this many syntax errors are reported.
const MAX_SYNTAX_ERRORS: usize = 50;

/// Parses a source. Returns the (possibly recovered) AST and every lexical and syntax diagnostic,
/// sorted by position. The AST is `None` only when the parser could not recover.
pub fn parse(source: &str) -> (Option<File>, Vec<Diag>) {
    let mut lex_diags = Vec::new();
    let mut recovered: Vec<ErrorRecovery<usize, Tok<'_>, LexError>> = Vec::new();
    let mut lexer = Lexer::new(source, &mut lex_diags);
    let result = grammar::FileParser::new().parse(&mut recovered, &mut lexer);
    let cut_at = lexer.cut_at();
    let token_starts = std::mem::take(&mut lexer.token_starts);
    drop(lexer);

    let mut errors: Vec<ParseError<usize, Tok<'_>, LexError>> =
        recovered.into_iter().map(|r| r.error).collect();
    let file = match result {
        Ok(mut f) => {
            f.span = Span::new(0, source.len());
            Some(f)
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };

    let index = diag::LineIndex::new(source);
    // Lexical errors count as earlier errors for the spacing rule: a syntax error right after a
    // skipped character or an unterminated string is usually its consequence.
    let mut lex_marks: Vec<(usize, usize)> = lex_diags
        .iter()
        .map(|d| {
            let at = diag::DiagExt::position(d);
            (
                token_starts.partition_point(|&s| s < at),
                index.line_col(at).0,
            )
        })
        .collect();
    lex_marks.sort_unstable();
    let mut diags = lex_diags;
    let mut last: Option<(usize, usize)> = None; // (token index, line) of the last reported error
    let mut reported = 0;
    for e in errors {
        let at = error_offset(&e);
        // After the nesting guard cut the stream, the parser's complaints about the missing rest
        // are consequences, not errors.
        if cut_at.is_some_and(|c| at >= c) {
            continue;
        }
        let token_index = token_starts.partition_point(|&s| s < at);
        let line = index.line_col(at).0;
        let near = |(t, l): (usize, usize)| {
            t <= token_index && (token_index < t + ERROR_SPACING || line == l)
        };
        let after_lex = lex_marks.partition_point(|m| m.0 <= token_index);
        if last.is_some_and(near)
            || after_lex
                .checked_sub(1)
                .and_then(|i| lex_marks.get(i))
                .is_some_and(|&m| near(m))
        {
            continue;
        }
        last = Some((token_index, line));
        reported += 1;
        if reported > MAX_SYNTAX_ERRORS {
            break;
        }
        diags.push(convert(e, source));
    }
    diag::sort(&mut diags);
    (file, diags)
}

fn error_offset(e: &ParseError<usize, Tok<'_>, LexError>) -> usize {
    match e {
        ParseError::InvalidToken { location } | ParseError::UnrecognizedEof { location, .. } => {
            *location
        }
        ParseError::UnrecognizedToken { token, .. } | ParseError::ExtraToken { token } => token.0,
        ParseError::User { error } => match *error {},
    }
}

/// Token names as lalrpop reports them (quoted terminal names) → readable names.
fn friendly(expected: &[String]) -> Vec<String> {
    const VALUE_STARTS: &[&str] = &[
        "integer",
        "float",
        "percent",
        "string",
        "true",
        "false",
        "identifier",
        "glob",
        "kind selector",
        "[",
        "{",
        "-",
    ];
    let mut names: Vec<String> = expected
        .iter()
        .map(|s| s.trim_matches('"').replace("\\\"", "\""))
        .collect();
    names.sort_by_key(|n| order(n));
    names.dedup();
    // Optional separators are noise unless nothing else fits.
    if names.len() > 1 {
        names.retain(|n| n != ",");
    }
    let is_value = VALUE_STARTS.iter().all(|v| names.iter().any(|n| n == v));
    let mut out = Vec::new();
    if is_value {
        // "a value" also covers the identifier that starts a key or a call.
        out.push("a value".to_string());
        names.retain(|n| !VALUE_STARTS.contains(&n.as_str()));
    }
    for n in names {
        out.push(match n.as_str() {
            "percent" => "a percentage".to_string(),
            "identifier" | "integer" | "float" | "string" | "glob" | "kind selector" => {
                let article = if n == "identifier" || n == "integer" {
                    "an"
                } else {
                    "a"
                };
                format!("{article} {n}")
            }
            _ => format!("`{n}`"),
        });
    }
    out
}

/// A stable order for expected-token lists: words first, then punctuation.
fn order(n: &str) -> (u8, String) {
    let class = match n {
        "identifier" => 0,
        "integer" | "float" | "percent" | "string" | "glob" | "kind selector" => 1,
        _ if n.chars().all(|c| c.is_ascii_alphabetic() || c == '_') => 2,
        _ => 3,
    };
    (class, n.to_string())
}

fn expected_list(expected: &[String]) -> String {
    let names = friendly(expected);
    match names.len() {
        0 => String::new(),
        1 => format!("expected {}", names[0]),
        _ => format!("expected one of {}", names.join(", ")),
    }
}

fn convert(e: ParseError<usize, Tok<'_>, LexError>, source: &str) -> Diag {
    match e {
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => {
            let exp = expected_list(&expected);
            let msg = if exp.is_empty() {
                format!("unexpected {tok}")
            } else {
                format!("{exp}; found {tok}")
            };
            let mut d = error("E0101", msg, Span::new(l, r), "unexpected token");
            if let Some(help) = hint(&tok, &expected) {
                d = d.with_notes(vec![format!("help: {help}")]);
            }
            d
        }
        ParseError::ExtraToken { token: (l, tok, r) } => error(
            "E0101",
            format!("unexpected {tok}"),
            Span::new(l, r),
            "unexpected token",
        ),
        ParseError::UnrecognizedEof { location, expected } => {
            let exp = expected_list(&expected);
            let msg = if exp.is_empty() {
                "unexpected end of file".to_string()
            } else {
                format!("{exp}; found end of file")
            };
            let at = location.min(source.len());
            error("E0102", msg, Span::new(at, at), "the file ends here")
        }
        ParseError::InvalidToken { location } => error(
            "E0101",
            "invalid token",
            Span::new(location, location),
            "here",
        ),
        ParseError::User { error } => match error {},
    }
}

/// Extra help for common mistakes.
fn hint(tok: &Tok<'_>, expected: &[String]) -> Option<String> {
    let expects = |t: &str| expected.iter().any(|e| e.trim_matches('"') == t);
    match tok {
        Tok::Eq if expects(":") => Some("options are written `key: value`".into()),
        Tok::Colon if expects("=") => Some("layers are written `name = op(args)`".into()),
        Tok::Input | Tok::Loss | Tok::Model | Tok::Data | Tok::Train | Tok::Method
            if expects("identifier") && !expects("integer") =>
        {
            Some("this is a keyword and cannot be used as a name".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(src: &str) -> Vec<String> {
        parse(src).1.into_iter().filter_map(|d| d.code).collect()
    }

    #[test]
    fn parses_the_spec_example() {
        let src = r#"
model m {
    input x: [1, 28, 28]
    flat = flatten(x)
    fc1  = dense(flat, 300)
    fc2  = dense(fc1, 300 -> 100, bias: false)
    loss softmax_cross_entropy(fc2)
}
data fashion_mnist { dir: "a\"b" }
train { epochs: 20, batch: 100 optimizer: sgd(lr: 0.4) schedule: constant }
method dropback { k: 10_664, scope: global, on: [fc*, @dense, fc1] }
"#;
        let (file, diags) = parse(src);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(file.unwrap().items.len(), 4);
    }

    #[test]
    fn two_syntax_errors_two_diagnostics() {
        let src = "model m {\n  input x: [784]\n  a = dense(x 10 :)\n  b = relu(a)\n  c dense(b, 10)\n  loss softmax_cross_entropy(c)\n}\n";
        let (file, diags) = parse(src);
        assert!(file.is_some());
        let c: Vec<_> = diags.iter().filter_map(|d| d.code.clone()).collect();
        assert_eq!(c, vec!["E0101", "E0101"], "{diags:#?}");
    }

    #[test]
    fn friendly_expected_tokens() {
        let (_, diags) = parse("model m { a = dense(x) }\ntrain { epochs = 3 }");
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].message, "expected `:`; found `=`");
        let (_, diags) = parse("model m { input x: }");
        assert!(
            diags[0].message.starts_with("expected a value"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn eof_and_empty() {
        assert_eq!(codes(""), Vec::<String>::new());
        assert_eq!(codes("# nothing\n// here\n"), Vec::<String>::new());
        assert_eq!(codes("model m {"), vec!["E0102"]);
    }

    #[test]
    fn deep_nesting_reports_once() {
        let src = format!("train {{ a: {} }}", "[".repeat(1_000_000));
        assert_eq!(codes(&src), vec!["E0004"]);
    }
}
