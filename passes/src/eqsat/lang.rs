//! The e-graph language: IR ops as e-nodes, with parameters and arguments as named leaves.
//!
//! A parameter is a leaf that carries its name (`@fc1.weight`), so two weights of one shape can
//! never be merged by hash-consing; ops that name a parameter inline (`param @p`,
//! `dropback_apply @p, ...`) take that leaf as their first child. Every other op is
//! `Op(key, children)` where the key is the op's name plus its attributes, so the e-graph
//! compares ops by value and rules can match attribute-free ops by name (`matmul_nt`).

use std::fmt;
use std::str::FromStr;

use egg::{define_language, Id, Symbol};
use sparsec_ir::{Attr, Op};

/// A named leaf: a parameter (`@name`) or a function argument (`%name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leaf {
    Param(Symbol),
    Arg(Symbol),
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Param(s) => write!(f, "@{s}"),
            Leaf::Arg(s) => write!(f, "%{s}"),
        }
    }
}

impl FromStr for Leaf {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix('@') {
            Ok(Leaf::Param(Symbol::from(name)))
        } else if let Some(name) = s.strip_prefix('%') {
            Ok(Leaf::Arg(Symbol::from(name)))
        } else {
            Err(format!("`{s}` is not a leaf"))
        }
    }
}

define_language! {
    /// IR values as e-nodes.
    pub enum Node {
        Leaf(Leaf),
        Op(Symbol, Vec<Id>),
    }
}

/// The key of the root node that holds a function's results and stores, in order.
pub const ROOTS: &str = "roots";

/// The e-node key of an op: its name, followed by its attributes when it has any
/// (`conv2d{stride=[1, 1], padding=[0, 0]}`, `const{0.9}`, `reshape{64, 784}`).
pub fn op_key(op: &Op) -> Symbol {
    let mut key = op.name().to_owned();
    let attrs = op.attrs();
    match op {
        Op::Const { value, shape } => {
            key.push_str(&format!("{{{:08x}, {shape:?}}}", value.to_bits()));
        }
        Op::Reshape { shape } => key.push_str(&format!("{{{shape:?}}}")),
        _ if !attrs.is_empty() => {
            let parts: Vec<String> = attrs
                .iter()
                .map(|(k, v)| match v {
                    Attr::Int(i) => format!("{k}={i}"),
                    Attr::Ints(v) => format!("{k}={v:?}"),
                    Attr::F32(x) => format!("{k}={:08x}", x.to_bits()),
                })
                .collect();
            key.push_str(&format!("{{{}}}", parts.join(", ")));
        }
        _ => {}
    }
    Symbol::from(key)
}

/// The op name part of a key.
pub fn key_name(key: Symbol) -> &'static str {
    let s: &'static str = key.as_str();
    s.split('{').next().unwrap_or(s)
}
