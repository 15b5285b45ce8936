//! Dropback: only `k` weights are tracked (stored and updated); every other weight keeps its
//! initial value, regenerated from the seed whenever it is read.

use super::MethodCx;
use crate::ast::*;
use crate::check::text::list_names;
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};
use crate::model::Layer;
use sparsec_ir::spec::{DropbackScope, Method, MethodSpec};

const SCOPES: &[&str] = &["global", "per_layer"];

/// `k` given relative to the selected layers' parameters.
#[derive(Clone, Copy)]
enum Share {
    Percent(f64),
    Compression(f64),
}

impl Checker {
    pub(super) fn dropback(&mut self, cx: &MethodCx<'_>) -> Option<MethodSpec> {
        let opts = self.block_opts(
            cx.block,
            &[
                "k",
                "compression",
                "scope",
                "freeze_after",
                "decay_init",
                "on",
            ],
            "`dropback`",
        );
        // `k` as a count, as a percentage of the selected layers' parameters (`k: 4%`), or as
        // the compression it gives them (`compression: 25`); the last two are resolved below,
        // once the selection's size is known.
        let mut share: Option<(Share, Span)> = None;
        let k = match (opts.get("k"), opts.get("compression")) {
            (Some(v), None) => match &v.kind {
                ValueKind::Percent(text) => {
                    match text.replace('_', "").parse::<f64>() {
                        Ok(p) if p > 0.0 && p <= 100.0 => share = Some((Share::Percent(p), v.span)),
                        _ => self.range_err(
                            v.span,
                            "`k` as a share must be in 0% < k ≤ 100%",
                            &format!("{text}%"),
                        ),
                    }
                    None
                }
                _ => self.uint(v, "k", 1).map(|k| (k, v.span)),
            },
            (None, Some(v)) => {
                share = self
                    .float_in(
                        v,
                        "compression",
                        |x| x >= 1.0,
                        "`compression` must be ≥ 1 (parameters / tracked weights)",
                    )
                    .map(|c| (Share::Compression(c), v.span));
                None
            }
            (Some(k), Some(c)) => {
                self.push(
                    error(
                        "E0509",
                        "give `k` or `compression`, not both",
                        c.span,
                        "a second way to say k",
                    )
                    .secondary(k.span, "k given here"),
                );
                None
            }
            (None, None) => {
                self.missing(
                    cx.item.kind.span,
                    "option `k` for `dropback`",
                    "give the number of tracked weights, e.g. `k: 10_664`, or the compression \
                     of the selected layers, e.g. `compression: 25`",
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
            Some(v) => self.epoch_list_one(v, "freeze_after", cx.epochs).map(Some),
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
        let layers = self.selection(&opts, cx, false);
        let total = match (&layers, cx.net) {
            (Some(layers), Some(net)) => Some(
                layers
                    .iter()
                    .filter_map(|n| net.layer(n))
                    .map(Layer::param_count)
                    .fold(0u64, u64::saturating_add),
            ),
            _ => None,
        };
        // k = round(parameters · p / 100) or round(parameters / compression), at least 1.
        let k = match (k, share, total) {
            (None, Some((share, span)), Some(total)) => {
                let k = match share {
                    Share::Percent(p) => total as f64 * p / 100.0,
                    Share::Compression(c) => total as f64 / c,
                };
                Some(((k.round() as u64).max(1), span))
            }
            (k, _, _) => k,
        };
        if let (Some((k, kspan)), Some(layers), Some(net), Some(total)) =
            (k, &layers, cx.net, total)
        {
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
}
