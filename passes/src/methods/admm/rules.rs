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
//!
//! Each is exact because a masked weight is zero outside its mask and a mask is 0 or 1 (the run
//! checks both on every checkpoint it loads; the step keeps them): only the sums' order changes
//! (the sparse kernels add in ascending position order), and the sign of some zeros. Whether the
//! sparse form is taken is the cost model's choice, per product.

use egg::{EGraph, ENodeOrVar, Pattern, PatternAst, Rewrite, Symbol};
use sparsec_ir::{Role, Storage};

use crate::eqsat::analysis::ValueFacts;
use crate::eqsat::lang::{Leaf, Node};
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

/// ADMM's [`crate::eqsat::rules::RuleSource`]: the rules of every masked weight, in phase A.
pub fn phase_rules(
    phase: Phase,
    egraph: &mut EGraph<Node, ValueFacts>,
) -> Vec<Rewrite<Node, ValueFacts>> {
    if phase != Phase::A {
        return Vec::new();
    }
    masked_weights(egraph)
        .into_iter()
        .flat_map(|(w, m)| rules_for(w, m))
        .collect()
}
