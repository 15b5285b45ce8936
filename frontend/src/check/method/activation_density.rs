//! Activation-density shrinking: at each `resize_at` epoch every selected layer shrinks to the
//! share of its units that fire, so the output layer (one unit per class) is off limits.

use super::MethodCx;
use crate::check::Checker;
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
        Some(MethodSpec {
            method: Method::ActivationDensity {
                resize_at: resize_at?,
                min_width: min_width?,
            },
            layers: layers?,
        })
    }
}
