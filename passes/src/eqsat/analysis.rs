//! Value facts of e-classes: the IR type (shape, dtype, encoding), whether the value depends
//! only on parameters, and scalar constants. Two terms in one e-class denote one value, so
//! their facts must agree: `merge` asserts it, and an unsound rule fails loudly in tests.

use std::collections::HashMap;

use egg::{Analysis, DidMerge, EGraph, Id, Symbol};
use sparsec_ir::{Attr, Module, Op, Param, ParamId, Type};

use super::lang::{key_name, Leaf, Node, ROOTS};

#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// The value's type; `None` for parameter leaves and the roots node (not values).
    pub ty: Option<Type>,
    /// The value is a function of parameters alone (no data flows into it).
    pub param_only: bool,
    /// The bits of a scalar `const`.
    pub constant: Option<u32>,
}

/// The analysis: what it needs to type any e-node.
#[derive(Clone)]
pub struct ValueFacts {
    params: Vec<Param>,
    param_ids: HashMap<Symbol, ParamId>,
    arg_types: HashMap<Symbol, Type>,
    /// Ops with attributes, by key (how the e-node of such an op is turned back into an op).
    templates: HashMap<Symbol, Op>,
}

impl ValueFacts {
    pub fn new(module: &Module, arg_types: HashMap<Symbol, Type>) -> Self {
        ValueFacts {
            params: module.params.clone(),
            param_ids: module
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| (Symbol::from(p.name.as_str()), ParamId(i as u32)))
                .collect(),
            arg_types,
            templates: HashMap::new(),
        }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn param_id(&self, name: Symbol) -> Option<ParamId> {
        self.param_ids.get(&name).copied()
    }

    pub fn template(&self, key: Symbol) -> Option<&Op> {
        self.templates.get(&key)
    }

    pub fn remember(&mut self, key: Symbol, op: &Op) {
        self.templates.entry(key).or_insert_with(|| op.clone());
    }

    /// The op an e-node stands for, with the operand children (a parameter leaf child is folded
    /// into the op). `leaf_of` finds the parameter leaf in a child class.
    pub fn op_of(
        &self,
        key: Symbol,
        children: &[Id],
        leaf_of: impl Fn(Id) -> Option<Symbol>,
        result: Option<&Type>,
    ) -> Result<(Op, Vec<Id>), String> {
        let name = key_name(key);
        if Op::PARAM_OPS.contains(&name) {
            let (&first, operands) = children
                .split_first()
                .ok_or_else(|| format!("`{name}` without its parameter"))?;
            let pname = leaf_of(first).ok_or_else(|| format!("`{name}`: no parameter leaf"))?;
            let pid = self
                .param_id(pname)
                .ok_or_else(|| format!("`{name}`: unknown parameter @{pname}"))?;
            let attrs: Vec<(String, Attr)> = self
                .templates
                .get(&key)
                .map(|t| {
                    t.attrs()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                })
                .unwrap_or_default();
            let op = Op::from_parts_param(name, pid, &attrs)?;
            return Ok((op, operands.to_vec()));
        }
        let op = match self.templates.get(&key) {
            Some(op) => op.clone(),
            None => {
                let dummy = Type::scalar_f32();
                Op::from_parts(name, &[], result.unwrap_or(&dummy))?
            }
        };
        Ok((op, children.to_vec()))
    }
}

/// The parameter named by a leaf in class `id`, if it holds one.
pub fn param_leaf(egraph: &EGraph<Node, ValueFacts>, id: Id) -> Option<Symbol> {
    egraph[id].nodes.iter().find_map(|n| match n {
        Node::Leaf(Leaf::Param(s)) => Some(*s),
        _ => None,
    })
}

impl Analysis<Node> for ValueFacts {
    type Data = Facts;

    fn make(egraph: &mut EGraph<Node, Self>, enode: &Node, _id: Id) -> Facts {
        match enode {
            Node::Leaf(Leaf::Param(_)) => Facts {
                ty: None,
                param_only: true,
                constant: None,
            },
            Node::Leaf(Leaf::Arg(name)) => Facts {
                ty: Some(
                    egraph
                        .analysis
                        .arg_types
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| panic!("e-graph: unknown argument %{name}")),
                ),
                param_only: false,
                constant: None,
            },
            Node::Op(key, children) if key.as_str() == ROOTS => {
                let _ = children;
                Facts {
                    ty: None,
                    param_only: false,
                    constant: None,
                }
            }
            Node::Op(key, children) => {
                let (op, operands) = egraph
                    .analysis
                    .op_of(*key, children, |c| param_leaf(egraph, c), None)
                    .unwrap_or_else(|e| panic!("e-graph: {e}"));
                let types: Vec<&Type> = operands
                    .iter()
                    .map(|&c| {
                        egraph[c]
                            .data
                            .ty
                            .as_ref()
                            .unwrap_or_else(|| panic!("e-graph: `{key}` reads a non-value"))
                    })
                    .collect();
                let ty = op
                    .infer(&types, &egraph.analysis.params)
                    .unwrap_or_else(|e| panic!("e-graph: ill-typed `{key}`: {e}"));
                let param_only = operands.iter().all(|&c| egraph[c].data.param_only);
                let constant = match op {
                    Op::Const { value, ref shape } if shape.is_empty() => Some(value.to_bits()),
                    _ => None,
                };
                Facts {
                    ty: Some(ty),
                    param_only,
                    constant,
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        assert_eq!(
            a.ty, b.ty,
            "unsound rewrite: merged values of different types"
        );
        if let (Some(x), Some(y)) = (a.constant, b.constant) {
            assert_eq!(x, y, "unsound rewrite: merged different constants");
        }
        let mut changed_a = false;
        if b.constant.is_some() && a.constant.is_none() {
            a.constant = b.constant;
            changed_a = true;
        }
        // One of two equal terms may read data that cancels out; the value depends only on
        // parameters if either term shows it.
        if b.param_only && !a.param_only {
            a.param_only = true;
            changed_a = true;
        }
        DidMerge(
            changed_a,
            a.param_only != b.param_only || a.constant != b.constant,
        )
    }
}
