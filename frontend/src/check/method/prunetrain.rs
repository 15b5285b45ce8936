//! PruneTrain: group lasso drives whole channels to zero, and every `interval` epochs the network
//! is rebuilt without them, so the output layer (one unit per class) is off limits.

use super::MethodCx;
use crate::check::Checker;
use sparsec_ir::spec::{Method, MethodSpec};

impl Checker {
    pub(super) fn prunetrain(&mut self, cx: &MethodCx<'_>) -> Option<MethodSpec> {
        let opts = self.block_opts(
            cx.block,
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
        let layers = self.selection(&opts, cx, true);
        Some(MethodSpec {
            method: Method::PruneTrain {
                ratio: ratio?,
                interval: interval?,
                threshold: threshold?,
                lambda: None,
            },
            layers: layers?,
        })
    }
}
