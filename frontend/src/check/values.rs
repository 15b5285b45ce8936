//! Readers of option values: integers, floats, booleans, strings and `[h, w]` pairs, with the
//! type and range errors they report; and the error for a required option that is missing.

use super::text::fmt_f;
use super::{Checker, MAX_TENSOR_ELEMENTS};
use crate::ast::*;
use crate::diag::{error, DiagExt};

impl Checker {
    pub(super) fn wrong_type(&mut self, v: &Value, expected: &str, label: &str) {
        if matches!(v.kind, ValueKind::Error) {
            return;
        }
        self.push(error(
            "E0404",
            format!("expected {expected}, found {}", v.kind.describe()),
            v.span,
            label.to_string(),
        ));
    }

    /// An integer literal's value, sign included. E0406 when it does not fit in 64 bits.
    fn int_literal(&mut self, v: &Value) -> Option<i128> {
        let ValueKind::Int { text, negative } = &v.kind else {
            return None;
        };
        let digits: String = text.chars().filter(|&c| c != '_').collect();
        match digits.parse::<u64>() {
            Ok(n) => Some(if *negative { -(n as i128) } else { n as i128 }),
            Err(_) => {
                self.push(
                    error(
                        "E0406",
                        "integer literal too large",
                        v.span,
                        "does not fit in 64 bits",
                    )
                    .note(format!("the largest integer is {}", u64::MAX)),
                );
                None
            }
        }
    }

    /// An integer option. `what` names it in messages.
    pub(super) fn int(&mut self, v: &Value, what: &str) -> Option<i128> {
        match &v.kind {
            ValueKind::Int { .. } => self.int_literal(v),
            _ => {
                self.wrong_type(v, "an integer", &format!("`{what}` must be an integer"));
                None
            }
        }
    }

    /// An unsigned integer option with a lower bound (the message states the allowed range).
    pub(super) fn uint(&mut self, v: &Value, what: &str, min: u64) -> Option<u64> {
        let n = self.int(v, what)?;
        if n < min as i128 {
            let rule = if min == 0 {
                format!("`{what}` must be ≥ 0")
            } else {
                format!("`{what}` must be ≥ {min}")
            };
            self.range_err(v.span, &rule, &n.to_string());
            return None;
        }
        u64::try_from(n).ok()
    }

    /// A float option; integers are accepted.
    fn float(&mut self, v: &Value, what: &str) -> Option<f64> {
        match &v.kind {
            ValueKind::Int { .. } => self.int_literal(v).map(|n| n as f64),
            ValueKind::Float { text, negative } => {
                let digits: String = text.chars().filter(|&c| c != '_').collect();
                let x: f64 = match digits.parse() {
                    Ok(x) => x,
                    Err(_) => {
                        self.push(error(
                            "E0407",
                            "invalid float literal",
                            v.span,
                            "not a number",
                        ));
                        return None;
                    }
                };
                if !x.is_finite() {
                    self.push(
                        error(
                            "E0407",
                            "float literal out of range",
                            v.span,
                            "too large for a 64-bit float",
                        )
                        .note(format!("the largest float is about {:e}", f64::MAX)),
                    );
                    return None;
                }
                let mantissa_nonzero = digits
                    .split(['e', 'E'])
                    .next()
                    .is_some_and(|m| m.chars().any(|c| ('1'..='9').contains(&c)));
                if x == 0.0 && mantissa_nonzero {
                    self.push(
                        error(
                            "E0407",
                            "float literal out of range",
                            v.span,
                            "too small: it rounds to 0",
                        )
                        .note(format!(
                            "the smallest positive float is about {:e}",
                            f64::from_bits(1)
                        )),
                    );
                    return None;
                }
                Some(if *negative { -x } else { x })
            }
            _ => {
                self.wrong_type(v, "a number", &format!("`{what}` must be a number"));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, v: &Value, what: &str) -> Option<bool> {
        match v.kind {
            ValueKind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(
                    v,
                    "`true` or `false`",
                    &format!("`{what}` must be `true` or `false`"),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Value, what: &str) -> Option<String> {
        match &v.kind {
            ValueKind::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(v, "a string", &format!("`{what}` must be a string"));
                None
            }
        }
    }

    pub(super) fn range_err(&mut self, span: Span, rule: &str, found: &str) {
        self.push(error(
            "E0408",
            format!("{rule}, found {found}"),
            span,
            "out of range",
        ));
    }

    /// A float with a range predicate; `rule` is e.g. "`lr` must be > 0".
    pub(super) fn float_in(
        &mut self,
        v: &Value,
        what: &str,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Option<f64> {
        let x = self.float(v, what)?;
        if ok(x) {
            Some(x)
        } else {
            self.range_err(v.span, rule, &fmt_f(x));
            None
        }
    }

    /// An integer or a pair `[a, b]` (kernel, stride, padding). Each element ≥ `min`.
    pub(super) fn int_or_pair(&mut self, v: &Value, what: &str, min: u64) -> Option<[usize; 2]> {
        let one = |cx: &mut Checker, v: &Value| -> Option<usize> {
            let n = cx.uint(v, what, min)?;
            match usize::try_from(n) {
                Ok(n) if (n as u64) < MAX_TENSOR_ELEMENTS => Some(n),
                _ => {
                    cx.push(
                        error(
                            "E0309",
                            format!("`{what}` is too large"),
                            v.span,
                            "too large",
                        )
                        .note(format!(
                            "values are limited to less than 2^31 ({MAX_TENSOR_ELEMENTS})"
                        )),
                    );
                    None
                }
            }
        };
        match &v.kind {
            ValueKind::Int { .. } => one(self, v).map(|n| [n, n]),
            ValueKind::List(items) if items.len() == 2 => {
                let a = one(self, &items[0]);
                let b = one(self, &items[1]);
                Some([a?, b?])
            }
            ValueKind::List(items) => {
                self.push(error(
                    "E0404",
                    format!(
                        "expected an integer or a pair `[h, w]`, found a list of {}",
                        items.len()
                    ),
                    v.span,
                    format!("`{what}` takes one integer or two"),
                ));
                None
            }
            _ => {
                self.wrong_type(
                    v,
                    "an integer or a pair `[h, w]`",
                    &format!("`{what}` must be an integer or `[h, w]`"),
                );
                None
            }
        }
    }

    pub(super) fn missing(&mut self, span: Span, what: &str, example: &str) {
        self.push(
            error("E0402", format!("missing {what}"), span, "needed here")
                .help(example.to_string()),
        );
    }
}
