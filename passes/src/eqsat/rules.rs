//! Rewrite rules as data: a rule is a name, a phase and its two sides in egg's pattern syntax,
//! optionally only for tracked weights. The rules themselves belong to the methods that add them
//! (`crate::methods`, e.g. Dropback's in `methods/dropback/rules.rs`); saturation runs the
//! phases in order, each with the rules its method gives for that phase.
//!
//! Phase A rewrites representations (what a value is made of); phase B offers fused forms
//! of what phase A produced; phase C offers forms that hold less (values remade by their
//! reader instead of stored), for extraction to take when a memory budget needs them.

use egg::{ConditionalApplier, EGraph, Id, Pattern, Rewrite, Subst, Var};
use sparsec_ir::Storage;

use super::analysis::{param_leaf, ValueFacts};
use super::lang::Node;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    A,
    B,
    C,
}

impl Phase {
    /// Every phase, in the order saturation runs them.
    pub const ALL: [Phase; 3] = [Phase::A, Phase::B, Phase::C];
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::A => "a",
            Phase::B => "b",
            Phase::C => "c",
        }
    }
}

/// One rule: a name, its phase, and its two sides in egg's pattern syntax.
pub struct RuleSpec {
    pub name: &'static str,
    pub phase: Phase,
    pub lhs: &'static str,
    pub rhs: &'static str,
    /// Only for tracked parameters (the `?p` leaf).
    pub tracked_only: bool,
}

/// Where saturation gets the rules of a phase for one function's e-graph (a method may add
/// rules instantiated from what the graph holds, and register ops with the analysis).
pub type RuleSource = fn(Phase, &mut EGraph<Node, ValueFacts>) -> Vec<Rewrite<Node, ValueFacts>>;

/// No rules: a program without a method, or a method that adds none.
pub fn no_rules(_: Phase, _: &mut EGraph<Node, ValueFacts>) -> Vec<Rewrite<Node, ValueFacts>> {
    Vec::new()
}

/// Is the parameter leaf bound to `?p` a tracked weight?
pub struct IsTracked {
    pub var: Var,
}

impl IsTracked {
    fn check(&self, egraph: &EGraph<Node, ValueFacts>, subst: &Subst) -> bool {
        let Some(name) = param_leaf(egraph, subst[self.var]) else {
            return false;
        };
        egraph.analysis.param_id(name).is_some_and(|id| {
            matches!(
                egraph.analysis.params()[id.0 as usize].storage,
                Storage::Tracked { .. }
            )
        })
    }
}

impl egg::Condition<Node, ValueFacts> for IsTracked {
    fn check(&self, egraph: &mut EGraph<Node, ValueFacts>, _eclass: Id, subst: &Subst) -> bool {
        IsTracked::check(self, egraph, subst)
    }
}

pub fn var(name: &str) -> Var {
    name.parse().expect("a pattern variable")
}

fn pattern(text: &str) -> Pattern<Node> {
    text.parse()
        .unwrap_or_else(|e| panic!("bad pattern `{text}`: {e}"))
}

/// Build one rule from its spec.
pub fn rewrite(spec: &RuleSpec) -> Rewrite<Node, ValueFacts> {
    let lhs = pattern(spec.lhs);
    let rhs = pattern(spec.rhs);
    if spec.tracked_only {
        Rewrite::new(
            spec.name,
            lhs,
            ConditionalApplier {
                condition: IsTracked { var: var("?p") },
                applier: rhs,
            },
        )
    } else {
        Rewrite::new(spec.name, lhs, rhs)
    }
    .unwrap_or_else(|e| panic!("rule {}: {e}", spec.name))
}
