//! The `method` block: each sparse-training method's options, and `on:`, the layers it applies to.

use super::net::{Net, OPS, PARAM_OPS};
use super::opts::Opts;
use super::text::{fmt_f, list_names};
use super::train::TrainFacts;
use super::{Checker, Listing};
use crate::ast::*;
use crate::diag::{error, DiagExt};
use crate::model::Layer;
use sparsec_ir::spec::{DropbackScope, KeepRatio, Method, MethodSpec};
use std::collections::{HashMap, HashSet};

const METHODS: &[&str] = &["dropback", "admm", "prunetrain", "activation_density"];
const SCOPES: &[&str] = &["global", "per_layer"];

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
        let block = m.block.as_ref();
        let epochs = facts.epochs.map(|e| (e, facts.epochs_span));
        // Selectors are resolved only against a network that checked completely.
        let net = net.filter(|n| n.complete && n.logits.is_some());
        let output = net.and_then(|n| n.logits.as_ref().map(|l| l.0.clone()));
        match kind {
            "dropback" => {
                let opts = self.block_opts(
                    block,
                    &["k", "scope", "freeze_after", "decay_init", "on"],
                    "`dropback`",
                );
                let k = match opts.get("k") {
                    Some(v) => self.uint(v, "k", 1).map(|k| (k, v.span)),
                    None => {
                        self.missing(
                            m.kind.span,
                            "option `k` for `dropback`",
                            "give the number of tracked weights, e.g. `k: 10_664`",
                        );
                        None
                    }
                };
                let scope = match opts.get("scope") {
                    None => Some(DropbackScope::Global),
                    Some(v) => match &v.kind {
                        ValueKind::Ident(s) if s == "global" => Some(DropbackScope::Global),
                        ValueKind::Ident(s) if s == "per_layer" => Some(DropbackScope::PerLayer),
                        ValueKind::Ident(s) => {
                            self.unknown(
                                "E0411",
                                format!("unknown scope `{s}`"),
                                (s, v.span),
                                "not a scope",
                                SCOPES.iter().copied(),
                                Listing::Always(format!("scopes: {}", SCOPES.join(", "))),
                            );
                            None
                        }
                        _ => {
                            self.wrong_type(v, "`global` or `per_layer`", "the scope of `k`");
                            None
                        }
                    },
                };
                let freeze_after = match opts.get("freeze_after") {
                    None => Some(None),
                    Some(v) => self.epoch_list_one(v, "freeze_after", epochs).map(Some),
                };
                let decay_init = match opts.get("decay_init") {
                    None => Some(None),
                    Some(v) => self
                        .float_in(
                            v,
                            "decay_init",
                            |x| x > 0.0 && x < 1.0,
                            "`decay_init` must be in 0 < decay_init < 1",
                        )
                        .map(Some),
                };
                let layers = self.selection(&opts, net, None, m);
                if let (Some((k, kspan)), Some(layers), Some(net)) = (k, &layers, net) {
                    let total: u64 = layers
                        .iter()
                        .filter_map(|n| net.layer(n))
                        .map(Layer::param_count)
                        .fold(0u64, u64::saturating_add);
                    if k > total {
                        let per: Vec<String> = layers
                            .iter()
                            .filter_map(|n| net.layer(n))
                            .map(|l| format!("{} ({})", l.name, l.param_count()))
                            .collect();
                        self.push(
                            error(
                                "E0505",
                                format!("`k` = {k} is larger than the {total} parameters of the selected layers"),
                                kspan,
                                format!("at most {total}"),
                            )
                            .note(format!("selected: {}", list_names(per.iter().map(String::as_str))))
                            .help("with `k` equal to the parameter count Dropback is plain dense training"),
                        );
                        return None;
                    }
                }
                let (k, _) = k?;
                Some(MethodSpec {
                    method: Method::Dropback {
                        k,
                        scope: scope?,
                        freeze_after: freeze_after?,
                        decay_init: decay_init?,
                    },
                    layers: layers?,
                })
            }
            "admm" => {
                let opts = self.block_opts(
                    block,
                    &[
                        "keep",
                        "rho",
                        "rho_growth",
                        "rounds",
                        "epochs_per_round",
                        "retrain_epochs",
                        "stages",
                        "on",
                    ],
                    "`admm`",
                );
                let rho = opts.get("rho").map_or(Some(1e-3), |v| {
                    self.float_in(v, "rho", |x| x > 0.0, "`rho` must be > 0")
                });
                let rho_growth = opts.get("rho_growth").map_or(Some(1.3), |v| {
                    self.float_in(v, "rho_growth", |x| x >= 1.0, "`rho_growth` must be ≥ 1")
                });
                let rounds = opts
                    .get("rounds")
                    .map_or(Some(4), |v| self.uint(v, "rounds", 1));
                let epr = opts
                    .get("epochs_per_round")
                    .map_or(Some(2), |v| self.uint(v, "epochs_per_round", 1));
                let retrain = opts
                    .get("retrain_epochs")
                    .map_or(Some(4), |v| self.uint(v, "retrain_epochs", 0));
                let stages = match opts.get("stages") {
                    None => Some(Vec::new()),
                    Some(v) => self.stages(v),
                };
                let keep = self.keep(&opts, net, m);
                Some(MethodSpec {
                    method: Method::Admm {
                        keep: keep.as_ref()?.0.clone(),
                        rho: rho?,
                        rho_growth: rho_growth?,
                        rounds: rounds?,
                        epochs_per_round: epr?,
                        retrain_epochs: retrain?,
                        stages: stages?,
                    },
                    layers: keep?.1,
                })
            }
            "prunetrain" => {
                let opts = self.block_opts(
                    block,
                    &["ratio", "interval", "threshold", "on"],
                    "`prunetrain`",
                );
                let ratio = opts.get("ratio").map_or(Some(0.2), |v| {
                    self.float_in(
                        v,
                        "ratio",
                        |x| x > 0.0 && x < 1.0,
                        "`ratio` must be in 0 < ratio < 1",
                    )
                });
                let interval = opts
                    .get("interval")
                    .map_or(Some(2), |v| self.uint(v, "interval", 1));
                let threshold = opts.get("threshold").map_or(Some(1e-4), |v| {
                    self.float_in(v, "threshold", |x| x > 0.0, "`threshold` must be > 0")
                });
                let layers =
                    self.selection(&opts, net, output.as_deref().map(|o| (o, "prunetrain")), m);
                Some(MethodSpec {
                    method: Method::PruneTrain {
                        ratio: ratio?,
                        interval: interval?,
                        threshold: threshold?,
                    },
                    layers: layers?,
                })
            }
            "activation_density" => {
                let opts = self.block_opts(
                    block,
                    &["resize_at", "min_width", "on"],
                    "`activation_density`",
                );
                let resize_at = match opts.get("resize_at") {
                    Some(v) => self.epoch_list(v, "resize_at", epochs),
                    None => {
                        self.missing(
                            m.kind.span,
                            "option `resize_at` for `activation_density`",
                            "list the resize epochs, e.g. `resize_at: [2, 4, 6]`",
                        );
                        None
                    }
                };
                let min_width = opts
                    .get("min_width")
                    .map_or(Some(1), |v| self.uint(v, "min_width", 1));
                let layers = self.selection(
                    &opts,
                    net,
                    output.as_deref().map(|o| (o, "activation_density")),
                    m,
                );
                Some(MethodSpec {
                    method: Method::ActivationDensity {
                        resize_at: resize_at?,
                        min_width: min_width?,
                    },
                    layers: layers?,
                })
            }
            _ => {
                self.unknown(
                    "E0215",
                    format!("unknown method `{kind}`"),
                    (kind, m.kind.span),
                    "unknown method",
                    METHODS.iter().copied(),
                    Listing::Always(format!("methods: {}", METHODS.join(", "))),
                );
                None
            }
        }
    }

    fn stages(&mut self, v: &Value) -> Option<Vec<f64>> {
        let ValueKind::List(items) = &v.kind else {
            self.wrong_type(
                v,
                "a list of compression factors like `[10, 30, 71]`",
                "`stages` must be a list",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        let mut prev: Option<(f64, Span)> = None;
        for item in items {
            let Some(x) =
                self.float_in(item, "stages", |x| x > 1.0, "each of `stages` must be > 1")
            else {
                ok = false;
                continue;
            };
            ok &= self.increasing("stages", &mut prev, x, item.span, fmt_f, "previous stage");
            out.push(x);
        }
        ok.then_some(out)
    }

    /// ADMM's `keep` and the selection it goes with.
    fn keep(
        &mut self,
        opts: &Opts<'_>,
        net: Option<&Net>,
        m: &MethodItem,
    ) -> Option<(KeepRatio, Vec<String>)> {
        let ratio = |cx: &mut Checker, v: &Value| {
            cx.float_in(
                v,
                "keep",
                |x| x > 0.0 && x <= 1.0,
                "`keep` must be in 0 < keep ≤ 1",
            )
        };
        let Some(v) = opts.get("keep") else {
            self.missing(
                m.kind.span,
                "option `keep` for `admm`",
                "give a keep ratio, e.g. `keep: 0.05` or `keep: { fc1: 0.01, fc2: 0.1 }`",
            );
            self.selection(opts, net, None, m);
            return None;
        };
        match &v.kind {
            ValueKind::Map(entries) => {
                let items: Vec<(&Name, &Value)> =
                    entries.iter().map(|o| (&o.key, &o.value)).collect();
                // Duplicate keys.
                let mut seen: Vec<(&str, Span)> = Vec::new();
                let mut seen_map: HashMap<&str, Span> = HashMap::new();
                let mut ratios: Vec<(String, f64, Span)> = Vec::new();
                let mut ok = true;
                for (k, val) in items {
                    if k.text.is_empty() {
                        ok = false;
                        continue;
                    }
                    if let Some(first) = seen_map.get(k.text.as_str()) {
                        self.push(
                            error(
                                "E0405",
                                format!("layer `{}` is given more than once in `keep`", k.text),
                                k.span,
                                "given again here",
                            )
                            .secondary(*first, "first given here"),
                        );
                        ok = false;
                        continue;
                    }
                    seen.push((k.text.as_str(), k.span));
                    seen_map.insert(k.text.as_str(), k.span);
                    match ratio(self, val) {
                        Some(r) => ratios.push((k.text.clone(), r, k.span)),
                        None => ok = false,
                    }
                }
                if entries.is_empty() {
                    self.range_err(v.span, "`keep` must name at least one layer", "`{}`");
                    return None;
                }
                let explicit = opts.get("on").is_some();
                let selected = if explicit {
                    self.selection(opts, net, None, m)
                } else {
                    None
                };
                let net = net?;
                let selectable: Vec<&str> = net
                    .layers
                    .iter()
                    .filter(|l| l.has_params())
                    .map(|l| l.name.as_str())
                    .collect();
                if !explicit {
                    // Without `on`, the map's keys are the selection.
                    let mut layers = Vec::new();
                    for &(k, span) in &seen {
                        match net.layer(k) {
                            Some(l) if l.has_params() => layers.push(k.to_string()),
                            Some(l) => {
                                self.push(
                                    error(
                                        "E0502",
                                        format!(
                                            "`{k}` is a `{}` layer, which has no parameters",
                                            l.kind.op_name()
                                        ),
                                        span,
                                        "nothing to prune",
                                    )
                                    .note(format!(
                                        "layers with parameters: {}",
                                        list_names(selectable.iter().copied())
                                    )),
                                );
                                ok = false;
                            }
                            None => {
                                self.unknown(
                                    "E0503",
                                    format!("`keep` names `{k}`, which is not a layer"),
                                    (k, span),
                                    "no such layer",
                                    selectable.iter().copied(),
                                    Listing::Always(format!(
                                        "layers with parameters: {}",
                                        list_names(selectable.iter().copied())
                                    )),
                                );
                                ok = false;
                            }
                        }
                    }
                    // Declaration order.
                    let chosen: HashSet<&String> = layers.iter().collect();
                    let order: Vec<String> = net
                        .layers
                        .iter()
                        .map(|l| l.name.clone())
                        .filter(|n| chosen.contains(n))
                        .collect();
                    if !ok {
                        return None;
                    }
                    return Some((
                        KeepRatio::PerLayer(ratios.into_iter().map(|(n, r, _)| (n, r)).collect()),
                        order,
                    ));
                }
                let selected = selected?;
                let selected_set: HashSet<&String> = selected.iter().collect();
                for (k, _, span) in &ratios {
                    if selected_set.contains(k) {
                        continue;
                    }
                    let listing = format!(
                        "selected layers: {}",
                        list_names(selected.iter().map(String::as_str))
                    );
                    if net.layer(k).is_some() {
                        self.push(
                            error(
                                "E0503",
                                format!("`keep` names `{k}`, which `on` does not select"),
                                *span,
                                "not selected",
                            )
                            .note(listing),
                        );
                    } else {
                        self.unknown(
                            "E0503",
                            format!("`keep` names `{k}`, which is not a layer"),
                            (k, *span),
                            "no such layer",
                            selected.iter().map(String::as_str),
                            Listing::Always(listing),
                        );
                    }
                    ok = false;
                }
                for s in &selected {
                    if !seen_map.contains_key(s.as_str()) {
                        self.push(
                            error(
                                "E0506",
                                format!("layer `{s}` is selected but has no keep ratio"),
                                v.span,
                                format!("no entry for `{s}`"),
                            )
                            .help(format!(
                                "add `{s}: RATIO` to `keep`, or leave `{s}` out of `on`"
                            )),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                Some((
                    KeepRatio::PerLayer(ratios.into_iter().map(|(n, r, _)| (n, r)).collect()),
                    selected,
                ))
            }
            ValueKind::Int { .. } | ValueKind::Float { .. } => {
                let r = ratio(self, v);
                let layers = self.selection(opts, net, None, m);
                Some((KeepRatio::All(r?), layers?))
            }
            _ => {
                self.wrong_type(
                    v,
                    "a keep ratio or a map `{ layer: ratio }`",
                    "`keep` must be a number or a map",
                );
                self.selection(opts, net, None, m);
                None
            }
        }
    }

    /// Resolves `on` (default: every layer with parameters, minus the protected output layer).
    /// Returns layer names in declaration order. `protect` = (output layer, method name).
    fn selection(
        &mut self,
        opts: &Opts<'_>,
        net: Option<&Net>,
        protect: Option<(&str, &str)>,
        m: &MethodItem,
    ) -> Option<Vec<String>> {
        let _ = m;
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
                    error("E0501", "no layer to apply the method to", m.kind.span, "nothing selectable")
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
                    if !OPS.contains(&k.as_str()) {
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
