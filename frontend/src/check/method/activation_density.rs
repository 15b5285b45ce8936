//! Activation-density shrinking: at each `resize_at` epoch every selected layer shrinks to the
//! share of its units that fire, so the output layer (one unit per class) is off limits.

use super::MethodCx;
use crate::ast::Value;
use crate::check::Checker;
use crate::diag::{error, DiagExt};
use crate::model::LayerKind;
use sparsec_ir::op::Unary;
use sparsec_ir::spec::{Method, MethodSpec};

impl Checker {
    pub(super) fn activation_density(&mut self, cx: &MethodCx<'_>) -> Option<MethodSpec> {
        let opts = self.block_opts(
            cx.block,
            &["resize_at", "min_width", "on"],
            "`activation_density`",
        );
        let resize_at = match opts.get("resize_at") {
            Some(v) => self.epoch_list(v, "resize_at", cx.epochs),
            None => {
                self.missing(
                    cx.item.kind.span,
                    "option `resize_at` for `activation_density`",
                    "list the resize epochs, e.g. `resize_at: [2, 4, 6]`",
                );
                None
            }
        };
        let min_width = opts
            .get("min_width")
            .map_or(Some(1), |v| self.uint(v, "min_width", 1));
        let layers = self.selection(&opts, cx, true);
        let layers = self.followed_by_relu(layers?, opts.get("on"), cx);
        Some(MethodSpec {
            method: Method::ActivationDensity {
                resize_at: resize_at?,
                min_width: min_width?,
            },
            layers: layers?,
        })
    }
}

impl Checker {
    /// The selected layers whose output feeds a `relu`: the only ones with an activation density
    /// (the share of non-zero post-ReLU outputs). Without `on:` the others are left out; a layer
    /// that `on:` names is an error.
    fn followed_by_relu(
        &mut self,
        layers: Vec<String>,
        on: Option<&Value>,
        cx: &MethodCx<'_>,
    ) -> Option<Vec<String>> {
        let net = cx.net?;
        let feeds_relu = |name: &str| {
            net.layers.iter().any(|l| {
                l.kind == LayerKind::Activation(Unary::Relu)
                    && l.inputs.first().is_some_and(|i| i == name)
            })
        };
        let (kept, refused): (Vec<String>, Vec<String>) =
            layers.into_iter().partition(|l| feeds_relu(l));
        match on {
            Some(v) if !refused.is_empty() => {
                for layer in &refused {
                    self.push(
                        error(
                            "E0508",
                            format!("`{layer}` is not followed by a `relu`"),
                            v.span,
                            "selected here",
                        )
                        .note(
                            "activation density is the share of a layer's post-ReLU outputs \
                             that are non-zero, so only a layer whose output feeds `relu` can \
                             be resized by it",
                        ),
                    );
                }
                None
            }
            _ if kept.is_empty() => {
                self.push(
                    error(
                        "E0501",
                        "no layer to apply `activation_density` to",
                        cx.item.kind.span,
                        "nothing selectable",
                    )
                    .note("it resizes layers whose output feeds `relu`, never the output layer"),
                );
                None
            }
            _ => Some(kept),
        }
    }
}
