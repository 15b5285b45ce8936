//! Dropback's rewrite rules, as data, in phases (see `crate::eqsat::rules` for the format).
//!
//! Phase A — weight representation: a dense read of a tracked weight is its regenerated
//! initial value overlaid with the tracked values, and the matrix products that read it (the
//! forward `x·Wᵀ` and the backward `dy·W`) distribute over the overlay: a product with the
//! regenerated matrix plus a sparse correction.
//!
//! Phase B — fusion choices: a product that regenerates the weight tile by tile inside the
//! product (the weight is never materialised), and Dropback's scoring and update fed straight
//! from the weight gradient's factors (the dense gradient is never materialised).
//!
//! No rule is commutativity or associativity; every rule is checked alone by a one-rule test.

use egg::{ConditionalApplier, EGraph, Pattern, PatternAst, Rewrite, Symbol};
use sparsec_ir::Op;

use crate::eqsat::analysis::ValueFacts;
use crate::eqsat::lang::{key_name, op_key, Node};
use crate::eqsat::rules::{rewrite, var, IsTracked, Phase, RuleSpec};

pub const RULES: &[RuleSpec] = &[
    RuleSpec {
        name: "tracked-read",
        phase: Phase::A,
        lhs: "(param ?p)",
        rhs: "(overlay (regen ?p) (tracked ?p))",
        tracked_only: true,
    },
    RuleSpec {
        name: "distribute-forward",
        phase: Phase::A,
        lhs: "(matmul_nt ?x (overlay (regen ?p) (tracked ?p)))",
        rhs: "(add (matmul_nt ?x (regen ?p)) (matmul_nt ?x (correction ?p)))",
        tracked_only: true,
    },
    RuleSpec {
        name: "distribute-backward",
        phase: Phase::A,
        lhs: "(matmul ?dy (overlay (regen ?p) (tracked ?p)))",
        rhs: "(add (matmul ?dy (regen ?p)) (matmul ?dy (correction ?p)))",
        tracked_only: true,
    },
    RuleSpec {
        name: "fuse-forward-regen",
        phase: Phase::B,
        lhs: "(matmul_nt ?x (overlay (regen ?p) (tracked ?p)))",
        rhs: "(matmul_nt_weight ?p ?x)",
        tracked_only: true,
    },
    RuleSpec {
        name: "fuse-backward-regen",
        phase: Phase::B,
        lhs: "(matmul ?dy (overlay (regen ?p) (tracked ?p)))",
        rhs: "(matmul_weight ?p ?dy)",
        tracked_only: true,
    },
    RuleSpec {
        name: "fuse-score-gradient",
        phase: Phase::B,
        lhs: "(dropback_score ?p (sub (param ?p) (scale (matmul_tn ?dy ?x) ?lr)))",
        rhs: "(dropback_score_sgd ?p ?dy ?x ?lr)",
        tracked_only: true,
    },
];

/// The rule whose left side is `dropback_apply`: that op carries an attribute (its offset in
/// the global selection), so the rule is instantiated for every offset the graph holds.
pub const APPLY_RULE: &str = "fuse-apply-gradient";

/// `(dropback_apply{offset=O} ?p (sub (param ?p) (scale (matmul_tn ?dy ?x) ?lr)) ?sel)` →
/// `(dropback_apply_sgd{offset=O} ?p ?dy ?x ?lr ?sel)`, for the key `apply_key`.
pub fn apply_rewrite(apply_key: Symbol) -> Rewrite<Node, ValueFacts> {
    let suffix = &apply_key.as_str()[key_name(apply_key).len()..];
    let fused_key = Symbol::from(format!("dropback_apply_sgd{suffix}"));
    let mut ast: PatternAst<Node> = PatternAst::default();
    use egg::ENodeOrVar::{ENode, Var as V};
    let p = ast.add(V(var("?p")));
    let dy = ast.add(V(var("?dy")));
    let x = ast.add(V(var("?x")));
    let lr = ast.add(V(var("?lr")));
    let sel = ast.add(V(var("?sel")));
    let w = ast.add(ENode(Node::Op(Symbol::from("param"), vec![p])));
    let grad = ast.add(ENode(Node::Op(Symbol::from("matmul_tn"), vec![dy, x])));
    let step = ast.add(ENode(Node::Op(Symbol::from("scale"), vec![grad, lr])));
    let w1 = ast.add(ENode(Node::Op(Symbol::from("sub"), vec![w, step])));
    ast.add(ENode(Node::Op(apply_key, vec![p, w1, sel])));
    let mut rhs: PatternAst<Node> = PatternAst::default();
    let (p2, dy2, x2, lr2, sel2) = (
        rhs.add(V(var("?p"))),
        rhs.add(V(var("?dy"))),
        rhs.add(V(var("?x"))),
        rhs.add(V(var("?lr"))),
        rhs.add(V(var("?sel"))),
    );
    rhs.add(ENode(Node::Op(fused_key, vec![p2, dy2, x2, lr2, sel2])));
    Rewrite::new(
        format!("{APPLY_RULE}{suffix}"),
        Pattern::new(ast),
        ConditionalApplier {
            condition: IsTracked { var: var("?p") },
            applier: Pattern::new(rhs),
        },
    )
    .expect("the apply rule is well formed")
}

/// All rules of a phase for a graph (the apply rule once per offset present; the fused op's
/// attributes are registered with the analysis so its e-nodes can be typed): Dropback's
/// [`crate::eqsat::rules::RuleSource`].
pub fn phase_rules(
    phase: Phase,
    egraph: &mut EGraph<Node, ValueFacts>,
) -> Vec<Rewrite<Node, ValueFacts>> {
    let mut rules: Vec<_> = RULES
        .iter()
        .filter(|r| r.phase == phase)
        .map(rewrite)
        .collect();
    if phase == Phase::B {
        let mut keys: Vec<Symbol> = egraph
            .classes()
            .flat_map(|c| c.nodes.iter())
            .filter_map(|n| match n {
                Node::Op(key, _) if key_name(*key) == "dropback_apply" => Some(*key),
                _ => None,
            })
            .collect();
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        keys.dedup();
        for &key in &keys {
            if let Some(&Op::DropbackApply { param, offset }) = egraph.analysis.template(key) {
                let fused = Op::DropbackApplySgd { param, offset };
                egraph.analysis.remember(op_key(&fused), &fused);
            }
        }
        rules.extend(keys.into_iter().map(apply_rewrite));
    }
    rules
}
