//! The `method` block: which sparse-training method, its options, and `on:`, the layers it
//! applies to. Each method's options are checked in its own file; adding a method is that file
//! and one line in `METHODS`.

mod activation_density;
mod admm;
mod dropback;
mod prunetrain;

use super::net::{ops, Net, PARAM_OPS};
use super::opts::Opts;
use super::text::list_names;
use super::train::TrainFacts;
use super::{Checker, Listing};
use crate::ast::*;
use crate::diag::{error, DiagExt};
use crate::model::Layer;
use sparsec_ir::spec::MethodSpec;
use std::collections::HashSet;

/// Checks one method's block into the spec the compiler runs.
type MethodCheck = fn(&mut Checker, &MethodCx<'_>) -> Option<MethodSpec>;

/// Every sparse-training method, by its name in `method NAME { ... }`. Error notes list them in
/// this order.
const METHODS: &[(&str, MethodCheck)] = &[
    ("dropback", Checker::dropback),
    ("admm", Checker::admm),
    ("prunetrain", Checker::prunetrain),
    ("activation_density", Checker::activation_density),
];

/// What a method's checker sees besides its own options.
struct MethodCx<'a> {
    item: &'a MethodItem,
    block: Option<&'a Block>,
    /// The network, only when it checked completely: selectors are resolved only against it.
    net: Option<&'a Net>,
    /// The training run's length and where it is written, for options that name epochs.
    epochs: Option<(u64, Option<Span>)>,
}

impl<'a> MethodCx<'a> {
    /// The layer the loss reads.
    fn output(&self) -> Option<&'a str> {
        self.net
            .and_then(|n| n.logits.as_ref().map(|l| l.0.as_str()))
    }
}

/// Iterative glob match (`*` matches any run, possibly empty).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

impl Checker {
    pub(super) fn method(
        &mut self,
        m: &MethodItem,
        net: Option<&Net>,
        facts: &TrainFacts,
    ) -> Option<MethodSpec> {
        let kind = m.kind.text.as_str();
        let cx = MethodCx {
            item: m,
            block: m.block.as_ref(),
            net: net.filter(|n| n.complete && n.logits.is_some()),
            epochs: facts.epochs.map(|e| (e, facts.epochs_span)),
        };
        if let Some((_, check)) = METHODS.iter().find(|(name, _)| *name == kind) {
            return check(self, &cx);
        }
        let names: Vec<&str> = METHODS.iter().map(|(name, _)| *name).collect();
        self.unknown(
            "E0215",
            format!("unknown method `{kind}`"),
            (kind, m.kind.span),
            "unknown method",
            names.iter().copied(),
            Listing::Always(format!("methods: {}", names.join(", "))),
        );
        None
    }

    /// Resolves `on` (default: every layer with parameters, minus the protected output layer).
    /// Returns layer names in declaration order. A method that `shrinks` layers may not select
    /// the output layer, which keeps one unit per class.
    fn selection(
        &mut self,
        opts: &Opts<'_>,
        cx: &MethodCx<'_>,
        shrinks: bool,
    ) -> Option<Vec<String>> {
        let net = cx.net;
        // (output layer, method name)
        let protect = cx
            .output()
            .filter(|_| shrinks)
            .map(|o| (o, cx.item.kind.text.as_str()));
        let Some(v) = opts.get("on") else {
            let net = net?;
            let out: Vec<String> = net
                .layers
                .iter()
                .filter(|l| l.has_params() && protect.is_none_or(|(o, _)| o != l.name))
                .map(|l| l.name.clone())
                .collect();
            if out.is_empty() {
                self.push(
                    error("E0501", "no layer to apply the method to", cx.item.kind.span, "nothing selectable")
                        .note("only layers with parameters (`dense`, `conv2d`) can be selected, and never the output layer here"),
                );
                return None;
            }
            return Some(out);
        };
        let selectors: Vec<&Value> = match &v.kind {
            ValueKind::List(items) => items.iter().collect(),
            _ => vec![v],
        };
        // Check selector syntax even without a network.
        let mut ok = true;
        for s in &selectors {
            match &s.kind {
                ValueKind::Ident(_) | ValueKind::Glob(_) | ValueKind::Kind(_) => {}
                _ => {
                    self.wrong_type(
                        s,
                        "a selector (a layer name, a glob like `fc*` or a kind like `@dense`)",
                        "not a selector",
                    );
                    ok = false;
                }
            }
        }
        if selectors.is_empty() {
            self.push(error(
                "E0501",
                "`on: []` selects no layer",
                v.span,
                "empty selection",
            ));
            return None;
        }
        let net = net?;
        if !ok {
            return None;
        }
        let selectable: Vec<&str> = net
            .layers
            .iter()
            .filter(|l| l.has_params() && protect.is_none_or(|(o, _)| o != l.name))
            .map(|l| l.name.as_str())
            .collect();
        let selectable_set: HashSet<&str> = selectable.iter().copied().collect();
        let selectable_note = || {
            if selectable.is_empty() {
                "no layer can be selected".to_string()
            } else {
                format!(
                    "selectable layers: {}",
                    list_names(selectable.iter().copied())
                )
            }
        };
        let mut chosen: HashSet<String> = HashSet::new();
        for s in selectors {
            match &s.kind {
                ValueKind::Ident(name) => match net.layer(name) {
                    Some(l) if !l.has_params() => {
                        self.push(
                            error(
                                "E0502",
                                format!(
                                    "`{name}` is a `{}` layer, which has no parameters",
                                    l.kind.op_name()
                                ),
                                s.span,
                                "no parameters",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    Some(l) => {
                        if let Some((o, method)) = protect {
                            if l.name == o {
                                let d = error(
                                    "E0504",
                                    format!("`{method}` cannot shrink the output layer `{o}`"),
                                    s.span,
                                    "the output layer",
                                )
                                .secondary(
                                    net.logits.as_ref().map_or(s.span, |x| x.1),
                                    format!("`{o}` feeds the loss"),
                                )
                                .note("the output layer keeps one unit per class");
                                self.push(d.note(selectable_note()));
                                ok = false;
                                continue;
                            }
                        }
                        chosen.insert(name.clone());
                    }
                    None if *name == net.input.name => {
                        self.push(
                            error(
                                "E0502",
                                format!("`{name}` is the input, which has no parameters"),
                                s.span,
                                "the input",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    None => {
                        self.unknown(
                            "E0501",
                            format!("no layer named `{name}`"),
                            (name, s.span),
                            "matches nothing",
                            selectable.iter().copied(),
                            Listing::Always(selectable_note()),
                        );
                        ok = false;
                    }
                },
                ValueKind::Glob(g) => {
                    let all: Vec<&Layer> = net
                        .layers
                        .iter()
                        .filter(|l| glob_match(g, &l.name))
                        .collect();
                    let hits: Vec<&str> = all
                        .iter()
                        .map(|l| l.name.as_str())
                        .filter(|n| selectable_set.contains(n))
                        .collect();
                    if hits.is_empty() {
                        let mut d = error(
                            "E0501",
                            format!("`{g}` matches no layer with parameters"),
                            s.span,
                            "matches nothing",
                        );
                        if !all.is_empty() {
                            d = d.note(format!(
                                "it matches only: {}",
                                list_names(all.iter().map(|l| l.name.as_str()))
                            ));
                        }
                        self.push(d.note(selectable_note()));
                        ok = false;
                    }
                    chosen.extend(hits.into_iter().map(str::to_string));
                }
                ValueKind::Kind(k) => {
                    if !ops().contains(&k.as_str()) {
                        self.unknown(
                            "E0507",
                            format!("unknown layer kind `@{k}`"),
                            (k, s.span),
                            "unknown kind",
                            PARAM_OPS.iter().copied(),
                            Listing::Always(format!(
                                "selectable kinds: {}",
                                PARAM_OPS
                                    .iter()
                                    .map(|k| format!("@{k}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                    if !PARAM_OPS.contains(&k.as_str()) {
                        self.push(
                            error(
                                "E0502",
                                format!("`@{k}` layers have no parameters"),
                                s.span,
                                "no parameters",
                            )
                            .note(format!(
                                "selectable kinds: {}",
                                PARAM_OPS
                                    .iter()
                                    .map(|k| format!("@{k}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                    let hits: Vec<&str> = net
                        .layers
                        .iter()
                        .filter(|l| l.kind.op_name() == k)
                        .map(|l| l.name.as_str())
                        .filter(|n| selectable_set.contains(n))
                        .collect();
                    if hits.is_empty() {
                        self.push(
                            error(
                                "E0501",
                                format!("`@{k}` matches no layer"),
                                s.span,
                                "matches nothing",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    chosen.extend(hits.into_iter().map(str::to_string));
                }
                _ => {}
            }
        }
        if !ok {
            return None;
        }
        Some(
            net.layers
                .iter()
                .filter(|l| chosen.contains(&l.name))
                .map(|l| l.name.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("fc*", "fc1"));
        assert!(glob_match("fc*", "fc"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("conv*_a", "conv12_a"));
        assert!(!glob_match("conv*_a", "conv12_b"));
        assert!(glob_match("*1", "fc1"));
        assert!(!glob_match("fc*", "conv1"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
