//! `optimizer: sgd(...)`.

use crate::ast::*;
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};
use sparsec_ir::spec::ranges::{LR, MOMENTUM, WEIGHT_DECAY};
use sparsec_ir::spec::Optimizer;

const OPTIMIZERS: &[&str] = &["sgd"];

impl Checker {
    pub(super) fn optimizer(&mut self, v: &Value) -> Option<Optimizer> {
        let (func, args): (&Name, &[Arg]) = match &v.kind {
            ValueKind::Call { func, args } => (func, args),
            ValueKind::Ident(n) => {
                if OPTIMIZERS.contains(&n.as_str()) {
                    self.missing(
                        v.span,
                        "`lr` for `sgd`",
                        "give the learning rate: `sgd(lr: 0.1)`",
                    );
                } else {
                    self.unknown_optimizer(n, v.span);
                }
                return None;
            }
            _ => {
                self.wrong_type(v, "an optimizer like `sgd(lr: 0.1)`", "the optimizer");
                return None;
            }
        };
        if !OPTIMIZERS.contains(&func.text.as_str()) {
            self.unknown_optimizer(&func.text, func.span);
            return None;
        }
        let opts = self.call_opts(
            func,
            args,
            &["lr", "momentum", "weight_decay", "nesterov"],
            "`sgd`",
        );
        let lr = match opts.get("lr") {
            Some(v) => self.float_in(v, LR.name, LR.ok, &LR.message()),
            None => {
                if !opts.had_positional {
                    self.missing(
                        func.span,
                        "`lr` for `sgd`",
                        "give the learning rate: `sgd(lr: 0.1)`",
                    );
                }
                None
            }
        };
        let momentum = opts.get("momentum").map_or(Some(0.0), |v| {
            self.float_in(v, MOMENTUM.name, MOMENTUM.ok, &MOMENTUM.message())
        });
        let wd = opts.get("weight_decay").map_or(Some(0.0), |v| {
            self.float_in(
                v,
                WEIGHT_DECAY.name,
                WEIGHT_DECAY.ok,
                &WEIGHT_DECAY.message(),
            )
        });
        let nesterov = opts
            .get("nesterov")
            .map_or(Some(false), |v| self.boolean(v, "nesterov"));
        if let (Some(true), Some(m)) = (nesterov, momentum) {
            if m == 0.0 {
                let span = opts.get("nesterov").map_or(func.span, |v| v.span);
                self.push(
                    error(
                        "E0408",
                        "`nesterov` needs momentum > 0, found momentum 0",
                        span,
                        "Nesterov momentum without momentum",
                    )
                    .help("set e.g. `momentum: 0.9`, or remove `nesterov: true`"),
                );
                return None;
            }
        }
        Some(Optimizer {
            lr: lr?,
            momentum: momentum?,
            weight_decay: wd?,
            nesterov: nesterov?,
        })
    }

    /// Both spellings of an optimizer (`sgd` and `sgd(...)`) report an unknown one alike.
    fn unknown_optimizer(&mut self, name: &str, span: Span) {
        self.unknown(
            "E0409",
            format!("unknown optimizer `{name}`"),
            (name, span),
            "unknown optimizer",
            OPTIMIZERS.iter().copied(),
            Listing::Always(format!("optimizers: {}", OPTIMIZERS.join(", "))),
        );
    }
}
