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
//! Phase C — forms that hold less: the top-k selection over scores it remakes in each of its
//! passes instead of reading them stored (`stream-scores`), and the update that makes the
//! weight's new tracked entries directly instead of the dense weight they come from
//! (`sparse-update`). Both are instantiated from what the graph holds, like the apply rule.
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

/// The rule that streams the fused scores of a `topk_select`.
pub const STREAM_RULE: &str = "stream-scores";
/// The rule that stores a tracked weight's new entries rather than its dense new value.
pub const UPDATE_RULE: &str = "sparse-update";

/// `(topk_select{k} .. (dropback_score_sgd ?pi ?dyi ?xi ?lri) ..)` → the same selection with
/// each of those operands `(dropback_score_stream ?pi ?dyi ?xi ?lri)`, for the selection key
/// `topk_key` and the operands `fused` marks (the others, `?ci`, are kept as they are).
pub fn stream_rewrite(topk_key: Symbol, fused: &[bool]) -> Rewrite<Node, ValueFacts> {
    use egg::ENodeOrVar::{ENode, Var as V};
    let score = Symbol::from("dropback_score_sgd");
    let stream = Symbol::from("dropback_score_stream");
    let side = |op: Symbol| {
        let mut ast: PatternAst<Node> = PatternAst::default();
        let mut children = Vec::new();
        for (i, &f) in fused.iter().enumerate() {
            if f {
                let vars: Vec<_> = ["?p", "?dy", "?x", "?lr"]
                    .iter()
                    .map(|v| ast.add(V(var(&format!("{v}{i}")))))
                    .collect();
                children.push(ast.add(ENode(Node::Op(op, vars))));
            } else {
                children.push(ast.add(V(var(&format!("?c{i}")))));
            }
        }
        ast.add(ENode(Node::Op(topk_key, children)));
        Pattern::new(ast)
    };
    let mask: String = fused.iter().map(|&f| if f { 's' } else { '-' }).collect();
    let suffix = &topk_key.as_str()[key_name(topk_key).len()..];
    Rewrite::new(
        format!("{STREAM_RULE}{suffix}[{mask}]"),
        side(score),
        side(stream),
    )
    .expect("the stream rule is well formed")
}

/// `(store ?p (dropback_apply_sgd{O} ?p ?dy ?x ?lr ?sel))` →
/// `(store ?p (dropback_update_sgd{O} ?p ?dy ?x ?lr ?sel))`, for the key `apply_key`.
pub fn update_rewrite(apply_key: Symbol) -> Rewrite<Node, ValueFacts> {
    use egg::ENodeOrVar::{ENode, Var as V};
    let suffix = &apply_key.as_str()[key_name(apply_key).len()..];
    let update_key = Symbol::from(format!("dropback_update_sgd{suffix}"));
    let side = |op: Symbol| {
        let mut ast: PatternAst<Node> = PatternAst::default();
        let vars: Vec<_> = ["?p", "?dy", "?x", "?lr", "?sel"]
            .iter()
            .map(|v| ast.add(V(var(v))))
            .collect();
        let value = ast.add(ENode(Node::Op(op, vars.clone())));
        ast.add(ENode(Node::Op(Symbol::from("store"), vec![vars[0], value])));
        Pattern::new(ast)
    };
    Rewrite::new(
        format!("{UPDATE_RULE}{suffix}"),
        side(apply_key),
        side(update_key),
    )
    .expect("the update rule is well formed")
}

/// The keys of the graph's e-nodes named `name`, sorted.
fn keys_named(egraph: &EGraph<Node, ValueFacts>, name: &str) -> Vec<Symbol> {
    let mut keys: Vec<Symbol> = egraph
        .classes()
        .flat_map(|c| c.nodes.iter())
        .filter_map(|n| match n {
            Node::Op(key, _) if key_name(*key) == name => Some(*key),
            _ => None,
        })
        .collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    keys.dedup();
    keys
}

/// Phase C's rules for a graph: one `stream-scores` per selection key and pattern of fused
/// operands found, one `sparse-update` per fused apply key.
fn phase_c_rules(egraph: &mut EGraph<Node, ValueFacts>) -> Vec<Rewrite<Node, ValueFacts>> {
    let is_fused_score = |egraph: &EGraph<Node, ValueFacts>, class: egg::Id| {
        egraph[class]
            .nodes
            .iter()
            .any(|n| matches!(n, Node::Op(k, _) if key_name(*k) == "dropback_score_sgd"))
    };
    let mut selections: Vec<(Symbol, Vec<bool>)> = egraph
        .classes()
        .flat_map(|c| c.nodes.iter())
        .filter_map(|n| match n {
            Node::Op(key, children) if key_name(*key) == "topk_select" => Some((
                *key,
                children
                    .iter()
                    .map(|&c| is_fused_score(egraph, c))
                    .collect::<Vec<bool>>(),
            )),
            _ => None,
        })
        .filter(|(_, fused)| fused.iter().any(|&f| f))
        .collect();
    selections.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    selections.dedup();
    let mut rules: Vec<_> = selections
        .iter()
        .map(|(key, fused)| stream_rewrite(*key, fused))
        .collect();
    for key in keys_named(egraph, "dropback_apply_sgd") {
        if let Some(&Op::DropbackApplySgd { param, offset }) = egraph.analysis.template(key) {
            let update = Op::DropbackUpdateSgd { param, offset };
            egraph.analysis.remember(op_key(&update), &update);
            rules.push(update_rewrite(key));
        }
    }
    rules
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
    if phase == Phase::C {
        return phase_c_rules(egraph);
    }
    if phase == Phase::B {
        let keys = keys_named(egraph, "dropback_apply");
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
