//! Lists of epochs and other strictly increasing lists.

use super::Checker;
use crate::ast::*;
use crate::diag::{error, DiagExt};

impl Checker {
    /// A non-empty, strictly increasing list of epochs, each ≥ 1 and (when `epochs` is given)
    /// ≤ epochs.
    pub(super) fn epoch_list(
        &mut self,
        v: &Value,
        what: &str,
        epochs: Option<(u64, Option<Span>)>,
    ) -> Option<Vec<u64>> {
        let ValueKind::List(items) = &v.kind else {
            self.wrong_type(
                v,
                "a list of epochs like `[2, 4, 6]`",
                &format!("`{what}` must be a list"),
            );
            return None;
        };
        if items.is_empty() {
            self.range_err(
                v.span,
                &format!("`{what}` must list at least one epoch"),
                "`[]`",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        let mut prev: Option<(u64, Span)> = None;
        for item in items {
            let Some(n) = self.uint(item, what, 1) else {
                ok = false;
                continue;
            };
            if let Some((e, espan)) = epochs {
                if n > e {
                    let mut d = error(
                        "E0414",
                        format!("`{what}` epoch {n} is outside the training run (1..={e})"),
                        item.span,
                        format!("after the last epoch ({e})"),
                    );
                    d = match espan {
                        Some(s) => d.secondary(s, format!("training runs for {e} epochs")),
                        None => d.note(format!("training runs for {e} epochs (the default)")),
                    };
                    self.push(d);
                    ok = false;
                }
            }
            ok &= self.increasing(
                what,
                &mut prev,
                n,
                item.span,
                |n| n.to_string(),
                "previous entry",
            );
            out.push(n);
        }
        ok.then_some(out)
    }

    /// One epoch in 1..=epochs.
    pub(super) fn epoch_list_one(
        &mut self,
        v: &Value,
        what: &str,
        epochs: Option<(u64, Option<Span>)>,
    ) -> Option<u64> {
        let n = self.uint(v, what, 1)?;
        if let Some((e, espan)) = epochs {
            if n > e {
                let mut d = error(
                    "E0414",
                    format!("`{what}` = {n} is outside the training run (1..={e})"),
                    v.span,
                    format!("after the last epoch ({e})"),
                );
                d = match espan {
                    Some(s) => d.secondary(s, format!("training runs for {e} epochs")),
                    None => d.note(format!("training runs for {e} epochs (the default)")),
                };
                self.push(d);
                return None;
            }
        }
        Some(n)
    }

    /// Check that `x` (at `span`) is greater than the previous list entry, reporting E0413 if
    /// not; `prev` then becomes `x`.
    pub(super) fn increasing<T: PartialOrd + Copy>(
        &mut self,
        what: &str,
        prev: &mut Option<(T, Span)>,
        x: T,
        span: Span,
        show: impl Fn(T) -> String,
        previous_label: &str,
    ) -> bool {
        let ok = match *prev {
            Some((p, pspan)) if x <= p => {
                self.push(
                    error(
                        "E0413",
                        format!("`{what}` must be strictly increasing"),
                        span,
                        format!("{} is not greater than {}", show(x), show(p)),
                    )
                    .secondary(pspan, previous_label),
                );
                false
            }
            _ => true,
        };
        *prev = Some((x, span));
        ok
    }
}
