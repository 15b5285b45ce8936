//! ADMM's rewrite rules: the products of a `masked` weight as sparse products over the entries
//! its mask keeps. They are instantiated for every masked weight `@W` of the graph, with its
//! mask `@M` (the parameter with `role=mask(@W)`), in phase A:
//!
//! - `masked-forward`: `(matmul_nt ?x (param @W))` → `(masked_matmul_nt @W ?x (mask_index @M))`
//! - `masked-backward`: `(matmul ?dy (param @W))` → `(masked_matmul @W ?dy (mask_index @M))`
//! - `masked-gradient`: `(mul (matmul_tn ?dy ?x) (param @M))` → `(masked_grad ?dy ?x
//!   (mask_index @M))`
//! - `masked-distribute`: `(mul (add ?a ?b) (param @M))` → `(add (mul ?a (param @M)) (mul ?b
//!   (param @M)))`, so that a gradient with a penalty term added (ADMM's rounds in a later
//!   stage) still exposes its `matmul_tn` to the rule above.
//! - for every convolution key `{A}` (its stride, padding, ...) in the graph:
//!   `masked-conv`: `(conv2d{A} ?x (param @W))` → `(masked_conv2d{A} @W ?x (mask_index @M))`,
//!   `masked-conv-input`: `(conv2d_input_grad{A} ?dy (param @W))` →
//!   `(masked_conv2d_input_grad{A} @W ?dy (mask_index @M))`, and `masked-conv-gradient`:
//!   `(mul (conv2d_weight_grad{A} ?x ?dy) (param @M))` →
//!   `(masked_conv2d_weight_grad{A} ?x ?dy (mask_index @M))`.
//!
//! Each is exact because a masked weight is zero outside its mask and a mask is 0 or 1 (the run
//! checks both on every checkpoint it loads; the step keeps them): only the sums' order changes
//! (the sparse kernels add in ascending position order), and the sign of some zeros. Whether the
//! sparse form is taken is the cost model's choice, per product.

use egg::{EGraph, ENodeOrVar, Pattern, PatternAst, Rewrite, Symbol};
use sparsec_ir::{Op, Role, Storage};

use crate::eqsat::analysis::ValueFacts;
use crate::eqsat::lang::{key_name, op_key, Leaf, Node};
use crate::eqsat::rules::{var, Phase};

/// Every masked weight of the graph's module with its mask, by name.
fn masked_weights(egraph: &EGraph<Node, ValueFacts>) -> Vec<(Symbol, Symbol)> {
    let params = egraph.analysis.params();
    params
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.storage, Storage::Masked { .. }))
        .filter_map(|(i, w)| {
            params
                .iter()
                .find(|m| m.role == Role::Mask(sparsec_ir::ParamId(i as u32)))
                .map(|m| (Symbol::from(w.name.as_str()), Symbol::from(m.name.as_str())))
        })
        .collect()
}

/// A small builder of pattern trees with ground parameter leaves (names may hold any
/// character, so patterns are built, not parsed).
struct Tree(PatternAst<Node>);

impl Tree {
    fn new() -> Tree {
        Tree(PatternAst::default())
    }
    fn var(&mut self, name: &str) -> egg::Id {
        self.0.add(ENodeOrVar::Var(var(name)))
    }
    fn leaf(&mut self, name: Symbol) -> egg::Id {
        self.0.add(ENodeOrVar::ENode(Node::Leaf(Leaf::Param(name))))
    }
    fn op(&mut self, key: &str, children: Vec<egg::Id>) -> egg::Id {
        self.0
            .add(ENodeOrVar::ENode(Node::Op(Symbol::from(key), children)))
    }
    fn param(&mut self, name: Symbol) -> egg::Id {
        let leaf = self.leaf(name);
        self.op("param", vec![leaf])
    }
    fn mask_index(&mut self, mask: Symbol) -> egg::Id {
        let leaf = self.leaf(mask);
        self.op("mask_index", vec![leaf])
    }
    fn pattern(self) -> Pattern<Node> {
        Pattern::new(self.0)
    }
}

fn rule(name: String, lhs: Tree, rhs: Tree) -> Rewrite<Node, ValueFacts> {
    Rewrite::new(name.clone(), lhs.pattern(), rhs.pattern())
        .unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// The rules of one masked weight `w` with mask `m`.
pub fn rules_for(w: Symbol, m: Symbol) -> Vec<Rewrite<Node, ValueFacts>> {
    let mut out = Vec::new();
    for (name, op, fused, operand) in [
        ("masked-forward", "matmul_nt", "masked_matmul_nt", "?x"),
        ("masked-backward", "matmul", "masked_matmul", "?dy"),
    ] {
        let mut lhs = Tree::new();
        let x = lhs.var(operand);
        let wp = lhs.param(w);
        lhs.op(op, vec![x, wp]);
        let mut rhs = Tree::new();
        let wl = rhs.leaf(w);
        let x = rhs.var(operand);
        let idx = rhs.mask_index(m);
        rhs.op(fused, vec![wl, x, idx]);
        out.push(rule(format!("{name}@{w}"), lhs, rhs));
    }
    let mut lhs = Tree::new();
    let (dy, x) = (lhs.var("?dy"), lhs.var("?x"));
    let g = lhs.op("matmul_tn", vec![dy, x]);
    let mp = lhs.param(m);
    lhs.op("mul", vec![g, mp]);
    let mut rhs = Tree::new();
    let (dy, x) = (rhs.var("?dy"), rhs.var("?x"));
    let idx = rhs.mask_index(m);
    rhs.op("masked_grad", vec![dy, x, idx]);
    out.push(rule(format!("masked-gradient@{w}"), lhs, rhs));

    let mut lhs = Tree::new();
    let (a, b) = (lhs.var("?a"), lhs.var("?b"));
    let sum = lhs.op("add", vec![a, b]);
    let mp = lhs.param(m);
    lhs.op("mul", vec![sum, mp]);
    let mut rhs = Tree::new();
    let (a, b) = (rhs.var("?a"), rhs.var("?b"));
    let mp = rhs.param(m);
    let ma = rhs.op("mul", vec![a, mp]);
    let mb = rhs.op("mul", vec![b, mp]);
    rhs.op("add", vec![ma, mb]);
    out.push(rule(format!("masked-distribute@{w}"), lhs, rhs));
    out
}

/// The convolution keys of the graph with their ops, in key order.
fn conv_keys(egraph: &EGraph<Node, ValueFacts>) -> Vec<(Symbol, Op)> {
    let mut keys: Vec<Symbol> = egraph
        .classes()
        .flat_map(|c| c.nodes.iter())
        .filter_map(|n| match n {
            Node::Op(key, _)
                if matches!(
                    key_name(*key),
                    "conv2d" | "conv2d_input_grad" | "conv2d_weight_grad"
                ) =>
            {
                Some(*key)
            }
            _ => None,
        })
        .collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| egraph.analysis.template(k).map(|op| (k, op.clone())))
        .collect()
}

/// The masked form of a convolution (its key's attributes, the weight `w`), registered with
/// the analysis so its e-nodes can be typed; its key.
fn masked_conv_key(egraph: &mut EGraph<Node, ValueFacts>, dense: &Op, w: Symbol) -> Option<Symbol> {
    let param = egraph.analysis.param_id(w)?;
    let masked = match *dense {
        Op::Conv2d { stride, padding } => Op::MaskedConv2d {
            param,
            stride,
            padding,
        },
        Op::Conv2dInputGrad {
            stride,
            padding,
            input,
        } => Op::MaskedConv2dInputGrad {
            param,
            stride,
            padding,
            input,
        },
        Op::Conv2dWeightGrad {
            stride,
            padding,
            kernel,
        } => Op::MaskedConv2dWeightGrad {
            stride,
            padding,
            kernel,
        },
        _ => return None,
    };
    let key = op_key(&masked);
    egraph.analysis.remember(key, &masked);
    Some(key)
}

/// The convolution rules of masked weight `w` (mask `m`) for the convolution key `key`, whose
/// masked form has key `masked`.
fn conv_rule(w: Symbol, m: Symbol, key: Symbol, masked: Symbol) -> Rewrite<Node, ValueFacts> {
    let name = key_name(key);
    let (mut lhs, mut rhs) = (Tree::new(), Tree::new());
    if name == "conv2d_weight_grad" {
        let (x, dy) = (lhs.var("?x"), lhs.var("?dy"));
        let g = lhs.op(key.as_str(), vec![x, dy]);
        let mp = lhs.param(m);
        lhs.op("mul", vec![g, mp]);
        let (x, dy) = (rhs.var("?x"), rhs.var("?dy"));
        let idx = rhs.mask_index(m);
        rhs.op(masked.as_str(), vec![x, dy, idx]);
        return rule(
            format!("masked-conv-gradient{}@{w}", &key.as_str()[name.len()..]),
            lhs,
            rhs,
        );
    }
    let a = lhs.var("?a");
    let wp = lhs.param(w);
    lhs.op(key.as_str(), vec![a, wp]);
    let wl = rhs.leaf(w);
    let a = rhs.var("?a");
    let idx = rhs.mask_index(m);
    rhs.op(masked.as_str(), vec![wl, a, idx]);
    let kind = if name == "conv2d" {
        "masked-conv"
    } else {
        "masked-conv-input"
    };
    rule(
        format!("{kind}{}@{w}", &key.as_str()[name.len()..]),
        lhs,
        rhs,
    )
}

/// ADMM's [`crate::eqsat::rules::RuleSource`]: the rules of every masked weight, in phase A.
pub fn phase_rules(
    phase: Phase,
    egraph: &mut EGraph<Node, ValueFacts>,
) -> Vec<Rewrite<Node, ValueFacts>> {
    if phase != Phase::A {
        return Vec::new();
    }
    let convs = conv_keys(egraph);
    let mut rules = Vec::new();
    for (w, m) in masked_weights(egraph) {
        rules.extend(rules_for(w, m));
        for (key, dense) in &convs {
            if let Some(masked) = masked_conv_key(egraph, dense, w) {
                rules.push(conv_rule(w, m, *key, masked));
            }
        }
    }
    rules
}
