//! Progressive ADMM pruning: a keep ratio per layer (or one for all), reached in `stages` of
//! growing compression.

use super::MethodCx;
use crate::ast::*;
use crate::check::opts::Opts;
use crate::check::text::{fmt_f, list_names};
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};
use sparsec_ir::spec::{KeepRatio, Method, MethodSpec};
use std::collections::{HashMap, HashSet};

impl Checker {
    pub(super) fn admm(&mut self, cx: &MethodCx<'_>) -> Option<MethodSpec> {
        let opts = self.block_opts(
            cx.block,
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
        let keep = self.keep(&opts, cx);
        let method = Method::Admm {
            keep: keep.as_ref()?.0.clone(),
            rho: rho?,
            rho_growth: rho_growth?,
            rounds: rounds?,
            epochs_per_round: epr?,
            retrain_epochs: retrain?,
            stages: stages?,
            at: None,
        };
        if let Some((epochs, espan)) = cx.epochs {
            if let Err(message) = sparsec_ir::admm::Schedule::new(&method, epochs) {
                let mut d = error(
                    "E0414",
                    "ADMM's schedule does not fit in the training run",
                    cx.item.kind.span,
                    "stages, rounds and retraining laid out here",
                )
                .note(message);
                d = match espan {
                    Some(s) => d.secondary(s, format!("training runs for {epochs} epochs")),
                    None => d.note(format!("training runs for {epochs} epochs (the default)")),
                };
                self.push(d.note(
                    "the epochs before the stages are dense pretraining; give `epochs` at least \
                     the stages' total, or fewer rounds, epochs per round or retraining epochs",
                ));
                return None;
            }
        }
        Some(MethodSpec {
            method,
            layers: keep?.1,
        })
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
    fn keep(&mut self, opts: &Opts<'_>, cx: &MethodCx<'_>) -> Option<(KeepRatio, Vec<String>)> {
        let ratio = |checker: &mut Checker, v: &Value| {
            checker.float_in(
                v,
                "keep",
                |x| x > 0.0 && x <= 1.0,
                "`keep` must be in 0 < keep ≤ 1",
            )
        };
        let Some(v) = opts.get("keep") else {
            self.missing(
                cx.item.kind.span,
                "option `keep` for `admm`",
                "give a keep ratio, e.g. `keep: 0.05` or `keep: { fc1: 0.01, fc2: 0.1 }`",
            );
            self.selection(opts, cx, false);
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
                    self.selection(opts, cx, false)
                } else {
                    None
                };
                let net = cx.net?;
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
                let layers = self.selection(opts, cx, false);
                Some((KeepRatio::All(r?), layers?))
            }
            _ => {
                self.wrong_type(
                    v,
                    "a keep ratio or a map `{ layer: ratio }`",
                    "`keep` must be a number or a map",
                );
                self.selection(opts, cx, false);
                None
            }
        }
    }
}
