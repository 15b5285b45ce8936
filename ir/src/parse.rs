//! The parser of the text form (docs/ir.md): a hand-written lexer and a recursive-descent parser
//! over lines of tokens. It reads exactly what [`crate::print::print_module`] writes, plus `#`
//! comments, free horizontal whitespace and blank lines, and reports every error with the byte
//! span of the offending token.
//!
//! It never panics and never hangs: the grammar has no nesting beyond a fixed depth, the lexer is
//! lazy (an error stops it at the first bad token), numbers are checked for overflow and every
//! shape for the IR's size limits ([`crate::verify::MAX_RANK`], 2^31 elements) before anything is
//! allocated from it.
//!
//! [`parse_module`] also runs the verifier and reports its first error at the offending
//! instruction, so a parsed module is always well-typed; [`parse_module_unverified`] skips that.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use crate::module::{
    Arg, Func, Init, Inst, Module, Param, ParamId, Role, Stage, Storage, Value, FORMAT_VERSION,
};
use crate::op::{Attr, Op};
use crate::print::{is_bare_name, is_word_char};
use crate::spec::{
    DataSpec, DropbackScope, KeepRatio, Method, MethodSpec, Optimizer, Schedule, TrainSpec,
};
use crate::types::{DType, Encoding, Type};
use crate::verify::{verify, Site, VerifyError, MAX_RANK};

/// Named attributes as written.
type Attrs = Vec<(String, Attr)>;

/// A syntax error (or, from [`parse_module`], the first verifier error), located by byte offsets
/// into the parsed text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub span: Range<usize>,
    pub message: String,
}

impl ParseError {
    fn new(span: Range<usize>, message: impl Into<String>) -> ParseError {
        ParseError {
            span,
            message: message.into(),
        }
    }

    /// 1-based line and column (in characters) of the start of the span within `text`.
    pub fn line_col(&self, text: &str) -> (usize, usize) {
        let mut start = self.span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &text[..start];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.span.start, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parse a module and verify it ([`crate::verify::verify`]); a verifier error is reported as a
/// `ParseError` at the offending line or type, with the verifier's message (`@forward %3: ...`),
/// and a count of the others.
pub fn parse_module(text: &str) -> Result<Module, ParseError> {
    parse_module_checked(text, &|_| Vec::new()).map_err(|mut errors| {
        let more = errors.len() - 1;
        let mut first = errors.swap_remove(0);
        if more > 0 {
            first
                .message
                .push_str(&format!(" (and {more} more verifier error(s))"));
        }
        first
    })
}

/// [`parse_module`] with more rules than the verifier's (`extra` sees a module that verifies),
/// their findings located the same way: for callers that know what the IR does not (which
/// storage a method gives its parameters). Every verifier finding is returned, in module order
/// (a syntax error stops at the first); the list is never empty.
pub fn parse_module_checked(
    text: &str,
    extra: &dyn Fn(&Module) -> Vec<VerifyError>,
) -> Result<Module, Vec<ParseError>> {
    let (module, spans) = Parser::new(text)
        .and_then(|p| p.module())
        .map_err(|e| vec![e])?;
    if let Err(errors) = verify(&module).and_then(|()| match extra(&module) {
        errors if errors.is_empty() => Ok(()),
        errors => Err(errors),
    }) {
        return Err(errors
            .iter()
            .map(|e| ParseError::new(spans.site(&e.site), e.to_string()))
            .collect());
    }
    spans.check_results(&module).map_err(|e| vec![e])?;
    Ok(module)
}

/// Parse a module without running the verifier: syntax, numbering, name resolution, operand
/// counts, attributes and size limits are checked, types are not. For tools that want to look at
/// a broken dump; everything else should use [`parse_module`].
pub fn parse_module_unverified(text: &str) -> Result<Module, ParseError> {
    let (module, spans) = Parser::new(text)?.module()?;
    spans.check_results(&module)?;
    Ok(module)
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    /// A run of `[A-Za-z0-9_.-]`: keywords, names, numbers.
    Word(&'a str),
    /// A `"..."` string, unescaped.
    Str(String),
    /// One of `( ) [ ] { } , : = % @`.
    Punct(char),
    /// `->`.
    Arrow,
    Newline,
    Eof,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Result<(Tok<'a>, Range<usize>), ParseError> {
        let bytes = self.src.as_bytes();
        loop {
            match bytes.get(self.pos) {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'#') => {
                    self.pos = match self.src[self.pos..].find('\n') {
                        Some(i) => self.pos + i,
                        None => self.src.len(),
                    }
                }
                _ => break,
            }
        }
        let start = self.pos;
        let Some(&b) = bytes.get(start) else {
            return Ok((Tok::Eof, start..start));
        };
        let tok = match b {
            b'\n' => {
                self.pos += 1;
                Tok::Newline
            }
            b'-' if bytes.get(start + 1) == Some(&b'>') => {
                self.pos += 2;
                Tok::Arrow
            }
            b'"' => return self.string(),
            b'(' | b')' | b'[' | b']' | b'{' | b'}' | b',' | b':' | b'=' | b'%' | b'@' => {
                self.pos += 1;
                Tok::Punct(b as char)
            }
            _ if is_word_char(b as char) => {
                let len = bytes[start..]
                    .iter()
                    .position(|&c| !is_word_char(c as char))
                    .unwrap_or(bytes.len() - start);
                self.pos += len;
                Tok::Word(&self.src[start..self.pos])
            }
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    start..start + c.len_utf8(),
                    format!("unexpected character {c:?}"),
                ));
            }
        };
        Ok((tok, start..self.pos))
    }

    /// A quoted string starting at `self.pos`, with escapes `\" \\ \n \r \t \u{HEX}`.
    fn string(&mut self) -> Result<(Tok<'a>, Range<usize>), ParseError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        let at = |i: usize| start + 1 + i;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = at(i) + 1;
                    return Ok((Tok::Str(out), start..self.pos));
                }
                '\n' => break,
                '\\' => {
                    let Some((j, e)) = chars.next() else { break };
                    let bad = |end: usize, what: &str| {
                        Err(ParseError::new(at(i)..end, format!("{what} in string")))
                    };
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let rest = &self.src[at(j) + 1..];
                            let Some(body) = rest.strip_prefix('{') else {
                                return bad(at(j) + 1, "`\\u` needs `{HEX}`");
                            };
                            let hex_len = body
                                .bytes()
                                .take(7)
                                .position(|b| !b.is_ascii_hexdigit())
                                .unwrap_or(body.len().min(7));
                            let close = at(j) + 2 + hex_len;
                            if hex_len == 0 || hex_len > 6 || !body[hex_len..].starts_with('}') {
                                return bad(close.min(self.src.len()), "bad `\\u{...}` escape");
                            }
                            let code =
                                u32::from_str_radix(&body[..hex_len], 16).unwrap_or(u32::MAX);
                            let Some(ch) = char::from_u32(code) else {
                                return bad(close + 1, "`\\u{...}` is not a Unicode scalar value");
                            };
                            out.push(ch);
                            // Skip `{HEX}`: all ASCII, one char per byte.
                            for _ in 0..hex_len + 2 {
                                chars.next();
                            }
                        }
                        _ => return bad(at(j) + e.len_utf8(), "unknown escape"),
                    }
                }
                c => out.push(c),
            }
        }
        let end = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |i| start + i);
        Err(ParseError::new(start..end, "unterminated string"))
    }
}

// ---------------------------------------------------------------------------------------------
// Source spans of what was parsed, to locate verifier errors.

#[derive(Default)]
struct Spans {
    module: Range<usize>,
    data: Range<usize>,
    train: Range<usize>,
    method: Range<usize>,
    params: Vec<Range<usize>>,
    funcs: Vec<FuncSpans>,
}

#[derive(Default)]
struct FuncSpans {
    name: Range<usize>,
    args: Vec<Range<usize>>,
    /// (whole instruction, its type)
    insts: Vec<(Range<usize>, Range<usize>)>,
    ret: Range<usize>,
    /// Each returned value.
    results: Vec<Range<usize>>,
    /// The declared result types `-> (...)`.
    declared: Vec<(Type, Range<usize>)>,
}

impl Spans {
    /// The declared result types `-> (...)` must be the types of the returned values: the
    /// module does not store them, so this is the only place they are checked.
    fn check_results(&self, m: &Module) -> PResult<()> {
        for (f, spans) in m.funcs.iter().zip(&self.funcs) {
            for (i, (&v, (ty, _))) in f.results.iter().zip(&spans.declared).enumerate() {
                let actual = f.value_type(v);
                if actual != ty {
                    return Err(ParseError::new(
                        spans.results[i].clone(),
                        format!(
                            "result {} of @{} is declared {ty}, but this value has type {actual}",
                            i + 1,
                            f.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn site(&self, site: &Site) -> Range<usize> {
        let func = |i: usize| self.funcs.get(i);
        let found = match *site {
            Site::Module => Some(self.module.clone()),
            Site::Data => Some(self.data.clone()),
            Site::Train => Some(self.train.clone()),
            Site::Method => Some(self.method.clone()),
            Site::Param(i) => self.params.get(i).cloned(),
            Site::Func(i) => func(i).map(|f| f.name.clone()),
            Site::Arg { func: f, arg } => func(f).and_then(|f| f.args.get(arg).cloned()),
            Site::Inst { func: f, inst } => {
                func(f).and_then(|f| f.insts.get(inst).map(|s| s.0.clone()))
            }
            Site::InstType { func: f, inst } => {
                func(f).and_then(|f| f.insts.get(inst).map(|s| s.1.clone()))
            }
            Site::Results { func: f } => func(f).map(|f| f.ret.clone()),
        };
        found.unwrap_or(0..0)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

type PResult<T> = Result<T, ParseError>;

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok<'a>,
    span: Range<usize>,
    /// End of the previous token.
    prev_end: usize,
    spans: Spans,
}

/// Where a section may appear, in order; `data`, `train` and `method` at most once.
const SECTIONS: [&str; 5] = ["data", "train", "method", "param", "func"];

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> PResult<Parser<'a>> {
        let mut lex = Lexer { src: text, pos: 0 };
        let (tok, span) = lex.next()?;
        Ok(Parser {
            lex,
            tok,
            span,
            prev_end: 0,
            spans: Spans::default(),
        })
    }

    // --- token plumbing ---

    fn bump(&mut self) -> PResult<(Tok<'a>, Range<usize>)> {
        let (tok, span) = self.lex.next()?;
        self.prev_end = self.span.end;
        Ok((
            std::mem::replace(&mut self.tok, tok),
            std::mem::replace(&mut self.span, span),
        ))
    }

    fn found(&self) -> String {
        match &self.tok {
            Tok::Word(w) if w.len() > 40 => format!("`{}...`", &w[..40]),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Arrow => "`->`".into(),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }

    fn unexpected<T>(&self, expected: &str) -> PResult<T> {
        Err(ParseError::new(
            self.span.clone(),
            format!("expected {expected}, found {}", self.found()),
        ))
    }

    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    fn is_word(&self, w: &str) -> bool {
        self.tok == Tok::Word(w)
    }

    fn eat_punct(&mut self, c: char) -> PResult<bool> {
        if self.is_punct(c) {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn punct(&mut self, c: char) -> PResult<Range<usize>> {
        if self.is_punct(c) {
            Ok(self.bump()?.1)
        } else {
            self.unexpected(&format!("`{c}`"))
        }
    }

    fn end_of_line(&mut self) -> PResult<()> {
        match self.tok {
            Tok::Newline => {
                self.bump()?;
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => self.unexpected("end of line"),
        }
    }

    fn skip_newlines(&mut self) -> PResult<()> {
        while self.tok == Tok::Newline {
            self.bump()?;
        }
        Ok(())
    }

    fn word(&mut self, expected: &str) -> PResult<(&'a str, Range<usize>)> {
        match self.tok {
            Tok::Word(w) => {
                let span = self.bump()?.1;
                Ok((w, span))
            }
            _ => self.unexpected(expected),
        }
    }

    fn keyword(&mut self, kw: &str) -> PResult<Range<usize>> {
        if self.is_word(kw) {
            Ok(self.bump()?.1)
        } else {
            self.unexpected(&format!("`{kw}`"))
        }
    }

    /// `key=`
    fn key(&mut self, key: &str) -> PResult<()> {
        if !self.is_word(key) {
            return self.unexpected(&format!("`{key}=`"));
        }
        self.bump()?;
        self.punct('=')?;
        Ok(())
    }

    fn string(&mut self, expected: &str) -> PResult<String> {
        match &mut self.tok {
            Tok::Str(s) => {
                let s = std::mem::take(s);
                self.bump()?;
                Ok(s)
            }
            _ => self.unexpected(expected),
        }
    }

    /// A name: a bare identifier or a quoted string.
    fn name(&mut self, expected: &str) -> PResult<(String, Range<usize>)> {
        match &mut self.tok {
            Tok::Word(w) if is_bare_name(w) => {
                let w = w.to_string();
                Ok((w, self.bump()?.1))
            }
            Tok::Str(s) => {
                let s = std::mem::take(s);
                Ok((s, self.bump()?.1))
            }
            Tok::Word(_) => Err(ParseError::new(
                self.span.clone(),
                format!(
                    "expected {expected}, found {}: a name that is not an identifier must be quoted",
                    self.found()
                ),
            )),
            _ => self.unexpected(expected),
        }
    }

    /// A header key or value: one word or a quoted string.
    fn header_word(&mut self, expected: &str) -> PResult<String> {
        match &mut self.tok {
            Tok::Word(w) => {
                let w = w.to_string();
                self.bump()?;
                Ok(w)
            }
            Tok::Str(s) => {
                let s = std::mem::take(s);
                self.bump()?;
                Ok(s)
            }
            _ => self.unexpected(expected),
        }
    }

    /// An ADMM phase: `pretrain`, `admm(stage=S, round=R)` or `retrain(stage=S)`.
    fn admm_phase(&mut self) -> PResult<crate::admm::Phase> {
        use crate::admm::Phase;
        let expected = "`pretrain`, `admm(stage=S, round=R)` or `retrain(stage=S)`";
        let (w, span) = self.word(expected)?;
        match w {
            "pretrain" => Ok(Phase::Pretrain),
            "admm" => {
                self.punct('(')?;
                self.key("stage")?;
                let stage = self.uint("an integer")?;
                self.punct(',')?;
                self.key("round")?;
                let round = self.uint("an integer")?;
                self.punct(')')?;
                Ok(Phase::Admm { stage, round })
            }
            "retrain" => {
                self.punct('(')?;
                self.key("stage")?;
                let stage = self.uint("an integer")?;
                self.punct(')')?;
                Ok(Phase::Retrain { stage })
            }
            other => Err(ParseError::new(
                span,
                format!("unknown ADMM phase `{other}` (expected {expected})"),
            )),
        }
    }

    fn uint(&mut self, expected: &str) -> PResult<u64> {
        let (w, span) = self.word(expected)?;
        parse_u64(w, span, expected)
    }

    fn usize(&mut self, expected: &str) -> PResult<usize> {
        let span = self.span.clone();
        let x = self.uint(expected)?;
        usize::try_from(x).map_err(|_| ParseError::new(span, "number too large"))
    }

    fn f64(&mut self, expected: &str) -> PResult<f64> {
        let (w, span) = self.word(expected)?;
        parse_float::<f64>(w, span, expected)
    }

    fn f32(&mut self, expected: &str) -> PResult<f32> {
        let (w, span) = self.word(expected)?;
        parse_float::<f32>(w, span, expected)
    }

    fn bool(&mut self) -> PResult<bool> {
        match self.tok {
            Tok::Word("true") => {
                self.bump()?;
                Ok(true)
            }
            Tok::Word("false") => {
                self.bump()?;
                Ok(false)
            }
            _ => self.unexpected("`true` or `false`"),
        }
    }

    /// `[item, item, ...]`
    fn list<T>(&mut self, item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.punct('[')?;
        self.comma_list(']', item)
    }

    /// `item, item, ... CLOSE`, possibly empty, after its opening token, through `close`. Every
    /// delimited list of the text form goes through here, so they all report a missing `,` or
    /// closing token the same way.
    fn comma_list<T>(
        &mut self,
        close: char,
        item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        if self.eat_punct(close)? {
            return Ok(Vec::new());
        }
        let items = self.comma_separated(item)?;
        if !self.is_punct(close) {
            return self.unexpected(&format!("`,` or `{close}`"));
        }
        self.bump()?;
        Ok(items)
    }

    /// `item, item, ...`: one or more, up to the first item not followed by `,`. What follows is
    /// the caller's to check (a closing token, or the end of the line).
    fn comma_separated<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let mut items = Vec::new();
        loop {
            items.push(item(self)?);
            if !self.eat_punct(',')? {
                return Ok(items);
            }
        }
    }

    /// `f32[64, 784]`, `f32[]`, `f32[300, 784]{regen}`, `f32[300, 784]{sparse 10664}`.
    fn ty(&mut self) -> PResult<(Type, Range<usize>)> {
        let (w, start) = self.word("a type like `f32[64, 784]`")?;
        let dtype = match w {
            "f32" => DType::F32,
            "i32" => DType::I32,
            _ => {
                return Err(ParseError::new(
                    start,
                    format!("unknown element type `{w}` (expected `f32` or `i32`)"),
                ))
            }
        };
        let open = self.punct('[')?;
        let mut rank = 0;
        // Checked before each dimension is read, so an overlong shape is refused at the first
        // dimension past the limit, before it is built.
        let shape = self.comma_list(']', |p| {
            if rank == MAX_RANK {
                return Err(ParseError::new(
                    open.start..p.span.end,
                    format!("rank exceeds the limit of {MAX_RANK}"),
                ));
            }
            rank += 1;
            p.usize("a dimension")
        })?;
        // The element count is checked once the encoding is known (a selection may span more
        // positions than a dense value may hold); here only that it does not overflow.
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                ParseError::new(
                    start.start..self.prev_end,
                    format!("shape {shape:?} has more than 2^31 elements (its count overflows)"),
                )
            })?;
        let mut ty = Type::dense(dtype, shape);
        if self.eat_punct('{')? {
            let (w, span) = self.word("`regen`, `streamed` or `sparse N`")?;
            ty.encoding = match w {
                "regen" => Encoding::Regen,
                "streamed" => Encoding::Streamed,
                "sparse" => Encoding::Sparse {
                    capacity: self.uint("the sparse capacity")?,
                },
                _ => {
                    return Err(ParseError::new(
                        span,
                        format!(
                            "unknown encoding `{w}` (expected `regen`, `streamed` or `sparse N`)"
                        ),
                    ))
                }
            };
            self.punct('}')?;
        }
        crate::op::check_elements(&ty)
            .map_err(|e| ParseError::new(start.start..self.prev_end, e))?;
        Ok((ty, start.start..self.prev_end))
    }

    // --- the module ---

    fn module(mut self) -> PResult<(Module, Spans)> {
        self.skip_newlines()?;
        if !self.is_word("sparsec-ir") {
            return self.unexpected("the header line `sparsec-ir <version> stage=<stage>`");
        }
        let header_start = self.bump()?.1.start;
        let vspan = self.span.clone();
        let version = self.uint("the format version")?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(ParseError::new(
                vspan,
                format!("unsupported format version {version} (this sparsec reads version {FORMAT_VERSION})"),
            ));
        }
        self.key("stage")?;
        let stage_span = self.span.clone();
        let stage_name = self.header_word("the stage name")?;
        let stage = Stage::from_name(&stage_name).ok_or_else(|| {
            let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
            ParseError::new(
                stage_span,
                format!(
                    "unknown stage `{stage_name}` (expected {})",
                    names.join(", ")
                ),
            )
        })?;
        let mut header = Vec::new();
        while !matches!(self.tok, Tok::Newline | Tok::Eof) {
            let k = self.header_word("a `key=value` header entry")?;
            self.punct('=')?;
            let v = self.header_word("a header value")?;
            header.push((k, v));
        }
        self.end_of_line()?;
        self.skip_newlines()?;
        self.keyword("module")?;
        let (name, _) = self.name("the module name")?;
        self.spans.module = header_start..self.prev_end;
        self.end_of_line()?;

        let mut m = Module::new(name, stage);
        m.header = header;
        let mut param_ids: HashMap<String, ParamId> = HashMap::new();
        let mut section = 0;
        loop {
            self.skip_newlines()?;
            let (w, span) = match self.tok {
                Tok::Eof => break,
                Tok::Word(w) => (w, self.span.clone()),
                _ => return self.unexpected("`data`, `train`, `method`, `param` or `func`"),
            };
            let Some(rank) = SECTIONS.iter().position(|&s| s == w).map(|i| i + 1) else {
                let msg = if w == "module" {
                    "a second `module` line".to_string()
                } else {
                    format!(
                        "expected `data`, `train`, `method`, `param` or `func`, found {}",
                        self.found()
                    )
                };
                return Err(ParseError::new(span, msg));
            };
            if rank < section || (rank == section && rank <= 3) {
                let msg = if rank == section {
                    format!("a second `{w}` line")
                } else {
                    format!("`{w}` is out of place: the order is header, module, data, train, method, params, funcs")
                };
                return Err(ParseError::new(span, msg));
            }
            section = rank;
            let start = span.start;
            match w {
                "data" => {
                    m.data = Some(self.data()?);
                    self.spans.data = start..self.prev_end;
                }
                "train" => {
                    m.train = Some(self.train()?);
                    self.spans.train = start..self.prev_end;
                }
                "method" => {
                    m.method = Some(self.method()?);
                    self.spans.method = start..self.prev_end;
                }
                "param" => {
                    let (p, name_span) = self.param(&param_ids)?;
                    if param_ids.contains_key(&p.name) {
                        return Err(ParseError::new(
                            name_span,
                            format!("duplicate parameter @{}", p.name),
                        ));
                    }
                    self.spans.params.push(start..self.prev_end);
                    param_ids.insert(p.name.clone(), m.add_param(p));
                }
                _ => {
                    let f = self.func(&param_ids)?;
                    m.funcs.push(f);
                }
            }
            self.end_of_line()?;
        }
        Ok((m, self.spans))
    }

    fn data(&mut self) -> PResult<DataSpec> {
        self.keyword("data")?;
        let (w, span) = self.word("a data source")?;
        Ok(match w {
            "fashion_mnist" => {
                let dir = if self.is_word("dir") {
                    self.key("dir")?;
                    Some(self.string("a quoted directory")?)
                } else {
                    None
                };
                DataSpec::FashionMnist { dir }
            }
            "idx" => {
                self.key("dir")?;
                DataSpec::Idx {
                    dir: self.string("a quoted directory")?,
                }
            }
            "synthetic" => {
                self.key("train_samples")?;
                let train_samples = self.uint("an integer")?;
                self.key("test_samples")?;
                let test_samples = self.uint("an integer")?;
                self.key("seed")?;
                let seed = self.uint("an integer")?;
                DataSpec::Synthetic {
                    train_samples,
                    test_samples,
                    seed,
                }
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!(
                    "unknown data source `{w}` (expected `fashion_mnist`, `idx` or `synthetic`)"
                ),
                ))
            }
        })
    }

    fn train(&mut self) -> PResult<TrainSpec> {
        self.keyword("train")?;
        self.key("epochs")?;
        let epochs = self.uint("an integer")?;
        self.key("batch")?;
        let batch = self.uint("an integer")?;
        self.key("seed")?;
        let seed = self.uint("an integer")?;
        self.key("log_every")?;
        let log_every = self.uint("an integer")?;
        self.key("optimizer")?;
        self.keyword("sgd")?;
        self.punct('(')?;
        self.key("lr")?;
        let lr = self.f64("a number")?;
        self.punct(',')?;
        self.key("momentum")?;
        let momentum = self.f64("a number")?;
        self.punct(',')?;
        self.key("weight_decay")?;
        let weight_decay = self.f64("a number")?;
        self.punct(',')?;
        self.key("nesterov")?;
        let nesterov = self.bool()?;
        self.punct(')')?;
        self.key("schedule")?;
        let (w, span) = self.word("a schedule")?;
        let schedule = match w {
            "constant" => Schedule::Constant,
            "step" => {
                self.punct('(')?;
                self.key("every")?;
                let every = self.uint("an integer")?;
                self.punct(',')?;
                self.key("gamma")?;
                let gamma = self.f64("a number")?;
                self.punct(')')?;
                Schedule::Step { every, gamma }
            }
            "multistep" => {
                self.punct('(')?;
                self.key("milestones")?;
                let milestones = self.list(|p| p.uint("an integer"))?;
                self.punct(',')?;
                self.key("gamma")?;
                let gamma = self.f64("a number")?;
                self.punct(')')?;
                Schedule::MultiStep { milestones, gamma }
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!("unknown schedule `{w}` (expected `constant`, `step` or `multistep`)"),
                ))
            }
        };
        Ok(TrainSpec {
            epochs,
            batch,
            seed,
            log_every,
            optimizer: Optimizer {
                lr,
                momentum,
                weight_decay,
                nesterov,
            },
            schedule,
        })
    }

    fn scope(&mut self) -> PResult<DropbackScope> {
        match self.tok {
            Tok::Word("global") => {
                self.bump()?;
                Ok(DropbackScope::Global)
            }
            Tok::Word("per_layer") => {
                self.bump()?;
                Ok(DropbackScope::PerLayer)
            }
            _ => self.unexpected("`global` or `per_layer`"),
        }
    }

    fn method(&mut self) -> PResult<MethodSpec> {
        self.keyword("method")?;
        let (w, span) = self.word("a method name")?;
        self.punct('(')?;
        let method = match w {
            "dropback" => {
                self.key("k")?;
                let k = self.uint("an integer")?;
                self.punct(',')?;
                self.key("scope")?;
                let scope = self.scope()?;
                let mut freeze_after = None;
                let mut decay_init = None;
                if self.eat_punct(',')? {
                    if self.is_word("freeze_after") {
                        self.key("freeze_after")?;
                        freeze_after = Some(self.uint("an integer")?);
                        if self.eat_punct(',')? {
                            self.key("decay_init")?;
                            decay_init = Some(self.f64("a number")?);
                        }
                    } else if self.is_word("decay_init") {
                        self.key("decay_init")?;
                        decay_init = Some(self.f64("a number")?);
                    } else {
                        return self.unexpected("`freeze_after=` or `decay_init=`");
                    }
                }
                Method::Dropback {
                    k,
                    scope,
                    freeze_after,
                    decay_init,
                }
            }
            "admm" => {
                self.key("keep")?;
                let keep = if self.eat_punct('{')? {
                    KeepRatio::PerLayer(self.comma_list('}', |p| {
                        let (name, _) = p.name("a layer name")?;
                        p.punct(':')?;
                        Ok((name, p.f64("a number")?))
                    })?)
                } else {
                    KeepRatio::All(self.f64("a number or `{layer: ratio, ...}`")?)
                };
                self.punct(',')?;
                self.key("rho")?;
                let rho = self.f64("a number")?;
                self.punct(',')?;
                self.key("rho_growth")?;
                let rho_growth = self.f64("a number")?;
                self.punct(',')?;
                self.key("rounds")?;
                let rounds = self.uint("an integer")?;
                self.punct(',')?;
                self.key("epochs_per_round")?;
                let epochs_per_round = self.uint("an integer")?;
                self.punct(',')?;
                self.key("retrain_epochs")?;
                let retrain_epochs = self.uint("an integer")?;
                self.punct(',')?;
                self.key("stages")?;
                let stages = self.list(|p| p.f64("a number"))?;
                let at = if self.eat_punct(',')? {
                    self.key("at")?;
                    Some(self.admm_phase()?)
                } else {
                    None
                };
                Method::Admm {
                    at,
                    keep,
                    rho,
                    rho_growth,
                    rounds,
                    epochs_per_round,
                    retrain_epochs,
                    stages,
                }
            }
            "prunetrain" => {
                self.key("ratio")?;
                let ratio = self.f64("a number")?;
                self.punct(',')?;
                self.key("interval")?;
                let interval = self.uint("an integer")?;
                self.punct(',')?;
                self.key("threshold")?;
                let threshold = self.f64("a number")?;
                let lambda = if self.eat_punct(',')? {
                    self.key("lambda")?;
                    Some(self.f64("a number")?)
                } else {
                    None
                };
                Method::PruneTrain {
                    ratio,
                    interval,
                    threshold,
                    lambda,
                }
            }
            "activation_density" => {
                self.key("resize_at")?;
                let resize_at = self.list(|p| p.uint("an integer"))?;
                self.punct(',')?;
                self.key("min_width")?;
                let min_width = self.uint("an integer")?;
                Method::ActivationDensity {
                    resize_at,
                    min_width,
                }
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!(
                        "unknown method `{w}` (expected `dropback`, `admm`, `prunetrain` or `activation_density`)"
                    ),
                ))
            }
        };
        self.punct(')')?;
        self.key("on")?;
        let layers = self.list(|p| Ok(p.name("a layer name")?.0))?;
        Ok(MethodSpec { method, layers })
    }

    /// `param @name : TYPE init=INIT stream=N storage=STORAGE`
    fn param(&mut self, param_ids: &HashMap<String, ParamId>) -> PResult<(Param, Range<usize>)> {
        self.keyword("param")?;
        let at = self.punct('@')?.start;
        let (name, name_span) = self.name("a parameter name")?;
        let name_span = at..name_span.end;
        self.punct(':')?;
        let (ty, _) = self.ty()?;
        self.key("init")?;
        let (w, span) = self.word("`zeros`, `ones` or `uniform(lo, hi)`")?;
        let init = match w {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "uniform" => {
                self.punct('(')?;
                let lo = self.f32("a number")?;
                self.punct(',')?;
                let hi = self.f32("a number")?;
                self.punct(')')?;
                Init::Uniform { lo, hi }
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!("unknown init `{w}` (expected `zeros`, `ones` or `uniform(lo, hi)`)"),
                ))
            }
        };
        self.key("stream")?;
        let stream = self.uint("an integer")?;
        self.key("storage")?;
        let (w, span) = self.word("a storage")?;
        let storage = match w {
            "dense" => Storage::Dense,
            "seeded" => Storage::Seeded,
            "masked" => {
                self.punct('(')?;
                self.key("nnz")?;
                let nnz = self.uint("an integer")?;
                self.punct(')')?;
                Storage::Masked { nnz }
            }
            "tracked" => {
                self.punct('(')?;
                self.key("budget")?;
                let budget = self.uint("an integer")?;
                self.punct(')')?;
                Storage::Tracked { budget }
            }
            _ => {
                return Err(ParseError::new(
                    span,
                    format!(
                        "unknown storage `{w}` (expected `dense`, `seeded`, `tracked(budget=N)` or `masked(nnz=N)`)"
                    ),
                ))
            }
        };
        let role = if self.is_word("role") {
            self.key("role")?;
            let (kind, kind_span) = self.word("`momentum`, `state` or `mask`")?;
            let make: fn(ParamId) -> Role = match kind {
                "momentum" => Role::Momentum,
                "state" => Role::State,
                "mask" => Role::Mask,
                _ => {
                    return Err(ParseError::new(
                        kind_span,
                        format!("unknown role `{kind}` (expected `momentum`, `state` or `mask`)"),
                    ))
                }
            };
            self.punct('(')?;
            let at = self.punct('@')?.start;
            let (of, span) = self.name("a parameter name")?;
            let id = *param_ids.get(&of).ok_or_else(|| {
                ParseError::new(
                    at..span.end,
                    format!("unknown parameter @{of} (a weight's state follows the weight)"),
                )
            })?;
            self.punct(')')?;
            make(id)
        } else {
            Role::Weight
        };
        Ok((
            Param {
                name,
                ty,
                init,
                stream,
                storage,
                role,
            },
            name_span,
        ))
    }

    /// `func @name(%a: T, ...) -> (T, ...) {` instructions `return ...` `}`
    fn func(&mut self, param_ids: &HashMap<String, ParamId>) -> PResult<Func> {
        self.keyword("func")?;
        let at = self.punct('@')?.start;
        let (name, name_span) = self.name("a function name")?;
        let name_span = at..name_span.end;
        let mut f = Func::new(name);
        let mut spans = FuncSpans {
            name: name_span,
            ..FuncSpans::default()
        };
        let mut arg_ids: HashMap<String, u32> = HashMap::new();
        self.punct('(')?;
        let args = self.comma_list(')', |p| {
            let start = p.punct('%')?.start;
            let (arg, arg_span) = p.arg_name()?;
            if arg_ids.contains_key(&arg) {
                return Err(ParseError::new(
                    arg_span,
                    format!("duplicate argument %{arg}"),
                ));
            }
            p.punct(':')?;
            let (ty, _) = p.ty()?;
            arg_ids.insert(arg.clone(), arg_ids.len() as u32);
            Ok((Arg { name: arg, ty }, start..p.prev_end))
        })?;
        for (arg, span) in args {
            f.args.push(arg);
            spans.args.push(span);
        }
        if self.tok != Tok::Arrow {
            return self.unexpected("`->`");
        }
        self.bump()?;
        self.punct('(')?;
        let declared = self.comma_list(')', Self::ty)?;
        self.punct('{')?;
        self.end_of_line()?;
        loop {
            self.skip_newlines()?;
            match self.tok {
                Tok::Punct('%') => {
                    let s = self.inst(&mut f, param_ids, &arg_ids)?;
                    spans.insts.push(s);
                }
                Tok::Word("return") => break,
                Tok::Punct('}') => {
                    return Err(ParseError::new(
                        self.span.clone(),
                        format!("@{} ends without `return`", f.name),
                    ))
                }
                _ => return self.unexpected("an instruction `%N = ...` or `return`"),
            }
        }
        let ret_start = self.bump()?.1.start;
        let returned = if matches!(self.tok, Tok::Newline | Tok::Eof) {
            Vec::new()
        } else {
            self.comma_separated(|p| p.value(&f, f.insts.len(), &arg_ids))?
        };
        spans.ret = ret_start..self.prev_end;
        if returned.len() != declared.len() {
            return Err(ParseError::new(
                spans.ret.clone(),
                format!(
                    "@{} declares {} result(s) but returns {}",
                    f.name,
                    declared.len(),
                    returned.len()
                ),
            ));
        }
        // The declared types are compared with the returned values' types after verification
        // (see `check_results`), so that a wrong instruction type is reported where it is.
        spans.results = returned.iter().map(|(_, span)| span.clone()).collect();
        spans.declared = declared;
        f.results = returned.into_iter().map(|(v, _)| v).collect();
        self.end_of_line()?;
        self.skip_newlines()?;
        if !self.is_punct('}') {
            return self.unexpected("`}` after `return`");
        }
        self.bump()?;
        self.spans.funcs.push(spans);
        Ok(f)
    }

    /// The name after `%` in an argument list: an identifier or a quoted string.
    fn arg_name(&mut self) -> PResult<(String, Range<usize>)> {
        if let Tok::Word(w) = self.tok {
            if w.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::new(
                    self.span.clone(),
                    format!("argument names cannot be numbers (`%{w}` names an instruction); quote it: %\"{w}\""),
                ));
            }
        }
        self.name("an argument name")
    }

    /// A use of a value: `%N` (an instruction before `defined`) or `%name` (an argument).
    fn value(
        &mut self,
        f: &Func,
        defined: usize,
        arg_ids: &HashMap<String, u32>,
    ) -> PResult<(Value, Range<usize>)> {
        let start = self.punct('%')?.start;
        if let Tok::Word(w) = self.tok {
            if w.bytes().all(|b| b.is_ascii_digit()) {
                let span = start..self.span.end;
                let n = self.uint("an instruction number")?;
                if n >= defined as u64 {
                    let msg = if defined == 0 {
                        format!(
                            "undefined value %{n}: no instruction of @{} is defined yet",
                            f.name
                        )
                    } else if defined == 1 {
                        format!("undefined value %{n}: only %0 is defined here")
                    } else {
                        format!(
                            "undefined value %{n}: only %0 to %{} are defined here",
                            defined - 1
                        )
                    };
                    return Err(ParseError::new(span, msg));
                }
                return Ok((Value::Inst(n as u32), span));
            }
        }
        let (name, span) = self.name("a value name")?;
        let span = start..span.end;
        match arg_ids.get(&name) {
            Some(&i) => Ok((Value::Arg(i), span)),
            None => Err(ParseError::new(
                span,
                format!("undefined value %{name}: @{} has no such argument", f.name),
            )),
        }
    }

    /// `{k=v, ...}` (at the `{`); returns the attributes and their span.
    fn attrs(&mut self) -> PResult<(Attrs, Range<usize>)> {
        let open = self.bump()?.1.start;
        let attrs = self.comma_list('}', Self::attr)?;
        Ok((attrs, open..self.prev_end))
    }

    /// `%N = op operands {attrs} : TYPE  loc(NAME)`; returns the spans of the instruction and of
    /// its type.
    fn inst(
        &mut self,
        f: &mut Func,
        param_ids: &HashMap<String, ParamId>,
        arg_ids: &HashMap<String, u32>,
    ) -> PResult<(Range<usize>, Range<usize>)> {
        let start = self.punct('%')?.start;
        let index = f.insts.len();
        let (w, wspan) = self.word("an instruction number")?;
        let number_span = start..wspan.end;
        if !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                number_span,
                format!("expected an instruction number, found `%{w}`: this must be %{index}"),
            ));
        }
        let n = parse_u64(w, number_span.clone(), "an instruction number")?;
        if n != index as u64 {
            return Err(ParseError::new(
                number_span,
                format!(
                    "this is instruction {index} of @{}, so it must be numbered %{index}, not %{n} \
                     (instructions are numbered by position)",
                    f.name
                ),
            ));
        }
        self.punct('=')?;
        let (op_name, op_span) = self.word("an op name")?;
        let mut operands = Vec::new();
        let mut operands_span = op_span.clone();
        let mut attrs = Vec::new();
        let mut attrs_span = None;
        let mut special = None;
        match op_name {
            _ if Op::PARAM_OPS.contains(&op_name) => {
                let at = self.punct('@')?.start;
                let (p, span) = self.name("a parameter name")?;
                let span = at..span.end;
                let id = match param_ids.get(&p) {
                    Some(&id) => id,
                    None => return Err(ParseError::new(span, format!("unknown parameter @{p}"))),
                };
                if self.eat_punct(',')? {
                    let first = self.span.start;
                    operands = self.comma_separated(|p| Ok(p.value(f, index, arg_ids)?.0))?;
                    operands_span = first..self.prev_end;
                }
                if self.is_punct('{') {
                    let (a, aspan) = self.attrs()?;
                    attrs = a;
                    attrs_span = Some(aspan);
                }
                special = Some(
                    Op::from_parts_param(op_name, id, &attrs)
                        .map_err(|e| ParseError::new(attrs_span.clone().unwrap_or(span), e))?,
                );
            }
            "const" => {
                let value = self.f32("a constant value")?;
                special = Some(Op::Const {
                    value,
                    shape: Vec::new(),
                });
            }
            _ if Op::names().contains(&op_name) => {
                if self.is_punct('%') {
                    let first = self.span.start;
                    operands = self.comma_separated(|p| Ok(p.value(f, index, arg_ids)?.0))?;
                    operands_span = first..self.prev_end;
                }
                if self.is_punct('{') {
                    let (a, aspan) = self.attrs()?;
                    attrs = a;
                    attrs_span = Some(aspan);
                }
            }
            _ => {
                let msg = match suggest(op_name) {
                    Some(s) => format!("unknown op `{op_name}` (did you mean `{s}`?)"),
                    None => format!("unknown op `{}`", truncate(op_name)),
                };
                return Err(ParseError::new(op_span, msg));
            }
        }
        self.punct(':')?;
        let (ty, ty_span) = self.ty()?;
        let op = match special {
            Some(Op::Const { value, .. }) => Op::Const {
                value,
                shape: ty.shape.clone(),
            },
            Some(op) => op,
            None => Op::from_parts(op_name, &attrs, &ty)
                .map_err(|e| ParseError::new(attrs_span.clone().unwrap_or(op_span.clone()), e))?,
        };
        match op.arity() {
            Some(n) if operands.len() != n => {
                return Err(ParseError::new(
                    operands_span,
                    format!("`{op_name}` takes {n} operand(s), found {}", operands.len()),
                ))
            }
            None if operands.is_empty() => {
                return Err(ParseError::new(
                    operands_span,
                    format!("`{op_name}` takes at least one operand"),
                ))
            }
            _ => {}
        }
        let loc = if self.is_word("loc") {
            self.bump()?;
            self.punct('(')?;
            let (loc, _) = self.name("a location name")?;
            self.punct(')')?;
            Some(loc)
        } else {
            None
        };
        let span = start..self.prev_end;
        self.end_of_line()?;
        f.insts.push(Inst {
            op,
            operands,
            ty,
            loc,
        });
        Ok((span, ty_span))
    }

    /// `key=3`, `key=[1, 1]`, `key=0.5`.
    fn attr(&mut self) -> PResult<(String, Attr)> {
        let (key, _) = self.name("an attribute name")?;
        self.punct('=')?;
        if self.is_punct('[') {
            let xs = self.list(|p| p.uint("an integer"))?;
            return Ok((key, Attr::Ints(xs)));
        }
        let (w, span) = self.word("an attribute value")?;
        let is_float = w.contains(['.', 'e', 'E']) || matches!(w, "inf" | "-inf" | "NaN");
        let value = if is_float {
            Attr::F32(parse_float::<f32>(w, span, "an attribute value")?)
        } else {
            Attr::Int(parse_u64(w, span, "an attribute value")?)
        };
        Ok((key, value))
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers and names

fn truncate(w: &str) -> &str {
    // Words are ASCII, so any byte index is a char boundary.
    &w[..w.len().min(40)]
}

fn parse_u64(w: &str, span: Range<usize>, expected: &str) -> PResult<u64> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            span,
            format!("expected {expected}, found `{}`", truncate(w)),
        ));
    }
    w.parse::<u64>()
        .map_err(|_| ParseError::new(span, "number too large"))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `-?digits(.digits)?([eE]-?digits)?`, `inf`, `-inf`, `NaN`: what `{:?}` prints.
fn is_float_syntax(w: &str) -> bool {
    let body = w.strip_prefix('-').unwrap_or(w);
    if body == "inf" || body == "NaN" {
        return true;
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    is_digits(int)
        && frac.is_none_or(is_digits)
        && exponent.is_none_or(|e| is_digits(e.strip_prefix('-').unwrap_or(e)))
}

trait Float: std::str::FromStr + Copy {
    fn is_infinite(self) -> bool;
}

impl Float for f32 {
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
}

impl Float for f64 {
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
}

fn parse_float<F: Float>(w: &str, span: Range<usize>, expected: &str) -> PResult<F> {
    if !is_float_syntax(w) {
        return Err(ParseError::new(
            span,
            format!("expected {expected}, found `{}`", truncate(w)),
        ));
    }
    let x = w
        .parse::<F>()
        .map_err(|_| ParseError::new(span.clone(), format!("bad number `{}`", truncate(w))))?;
    if x.is_infinite() && !w.ends_with("inf") {
        return Err(ParseError::new(span, "number too large"));
    }
    Ok(x)
}

/// The op name closest to `w`, if it is close enough to be a likely typo.
fn suggest(w: &str) -> Option<&'static str> {
    if w.len() > 40 {
        return None;
    }
    let (best, d) = Op::names()
        .into_iter()
        .map(|n| (n, edit_distance(w, n)))
        .min_by_key(|&(_, d)| d)?;
    (d <= 2.max(w.len() / 3)).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
