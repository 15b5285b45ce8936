//! The abstract syntax tree. Every node carries the byte span it covers in the source.

/// A half-open byte range `start..end` in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A name as written (identifier), with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    pub span: Span,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Model(Model),
    Data(DataItem),
    Train(TrainItem),
    Method(MethodItem),
    /// A stretch of tokens the parser skipped after a syntax error.
    Error(Span),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Model(m) => m.span,
            Item::Data(d) => d.span,
            Item::Train(t) => t.span,
            Item::Method(m) => m.span,
            Item::Error(s) => *s,
        }
    }
}

/// `model NAME { STMT* }`
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Name,
    pub stmts: Vec<Stmt>,
    /// Span of the `model` keyword.
    pub keyword: Span,
    pub span: Span,
}

/// `data KIND` or `data KIND { OPTIONS }`
#[derive(Clone, Debug, PartialEq)]
pub struct DataItem {
    pub kind: Name,
    pub block: Option<Block>,
    pub keyword: Span,
    pub span: Span,
}

/// `train { OPTIONS }`
#[derive(Clone, Debug, PartialEq)]
pub struct TrainItem {
    pub block: Block,
    pub keyword: Span,
    pub span: Span,
}

/// `method KIND { OPTIONS }` (the block may be omitted when every option has a default)
#[derive(Clone, Debug, PartialEq)]
pub struct MethodItem {
    pub kind: Name,
    pub block: Option<Block>,
    pub keyword: Span,
    pub span: Span,
}

/// `{ key: value, ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub opts: Vec<Opt>,
    pub span: Span,
}

/// `key: value`
#[derive(Clone, Debug, PartialEq)]
pub struct Opt {
    pub key: Name,
    pub value: Value,
    pub span: Span,
}

/// A statement of the model body.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `input NAME: SHAPE`
    Input {
        name: Name,
        shape: Value,
        span: Span,
    },
    /// `NAME = OP(ARGS)`
    Layer {
        name: Name,
        op: Name,
        args: Vec<Arg>,
        span: Span,
    },
    /// `loss FUNC(ARGS)`
    Loss {
        func: Name,
        args: Vec<Arg>,
        keyword: Span,
        span: Span,
    },
    /// Tokens skipped after a syntax error.
    Error(Span),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Input { span, .. }
            | Stmt::Layer { span, .. }
            | Stmt::Loss { span, .. }
            | Stmt::Error(span) => *span,
        }
    }
}

/// A call argument: positional (`key == None`) or named (`key: value`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub key: Option<Name>,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// An integer literal: its text as written (with `_`, without the sign).
    Int {
        text: String,
        negative: bool,
    },
    /// A float literal: its text as written (without the sign).
    Float {
        text: String,
        negative: bool,
    },
    /// A percentage (`4%`): the number's text as written, without the `%`.
    Percent(String),
    /// A string literal, escapes resolved.
    Str(String),
    Bool(bool),
    /// A bare identifier (`global`, `fc1`).
    Ident(String),
    /// A glob selector (`fc*`).
    Glob(String),
    /// A kind selector (`@dense`), without the `@`.
    Kind(String),
    List(Vec<Value>),
    Map(Vec<Opt>),
    Call {
        func: Name,
        args: Vec<Arg>,
    },
    /// `IN -> OUT`
    Pair {
        from: Box<Value>,
        to: Box<Value>,
    },
    /// A value the parser skipped after a syntax error.
    Error,
}

impl ValueKind {
    /// What the value is, for messages ("expected an integer, found a string").
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Int { .. } => "an integer",
            ValueKind::Float { .. } => "a float",
            ValueKind::Percent(_) => "a percentage",
            ValueKind::Str(_) => "a string",
            ValueKind::Bool(_) => "a boolean",
            ValueKind::Ident(_) => "a name",
            ValueKind::Glob(_) => "a glob selector",
            ValueKind::Kind(_) => "a kind selector",
            ValueKind::List(_) => "a list",
            ValueKind::Map(_) => "a map",
            ValueKind::Call { .. } => "a call",
            ValueKind::Pair { .. } => "a width pair",
            ValueKind::Error => "an invalid value",
        }
    }
}
