//! Sizes: the input's shape, and the limits on widths and tensors.

use crate::ast::*;
use crate::check::{Checker, MAX_TENSOR_ELEMENTS};
use crate::diag::{error, DiagExt};

impl Checker {
    pub(super) fn input_shape(&mut self, name: &Name, shape: &Value) -> Option<Vec<usize>> {
        let ValueKind::List(items) = &shape.kind else {
            self.wrong_type(
                shape,
                "a shape like `[1, 28, 28]`",
                "the shape of one sample",
            );
            return None;
        };
        if items.is_empty() {
            self.push(
                error(
                    "E0308",
                    format!("input `{}` has an empty shape", name.text),
                    shape.span,
                    "no dimensions",
                )
                .help("give the shape of one sample, e.g. `[784]` or `[1, 28, 28]`"),
            );
            return None;
        }
        let mut dims = Vec::new();
        let mut ok = true;
        for v in items {
            match self.int(v, "dimension") {
                Some(0) => {
                    self.push(error(
                        "E0308",
                        format!("input `{}` has a zero dimension", name.text),
                        v.span,
                        "every dimension must be ≥ 1",
                    ));
                    ok = false;
                }
                Some(n) if n < 0 => {
                    self.range_err(v.span, "a dimension must be ≥ 1", &n.to_string());
                    ok = false;
                }
                Some(n) => dims.push(n as u64),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let mut total: u64 = 1;
        for &d in &dims {
            match total.checked_mul(d) {
                Some(t) if t <= MAX_TENSOR_ELEMENTS => total = t,
                _ => {
                    self.push(
                        error(
                            "E0309",
                            format!("input `{}` is too large", name.text),
                            shape.span,
                            "more than 2^31 elements per sample",
                        )
                        .note(format!(
                            "a tensor is limited to 2^31 ({MAX_TENSOR_ELEMENTS}) elements"
                        )),
                    );
                    return None;
                }
            }
        }
        dims.into_iter().map(|d| usize::try_from(d).ok()).collect()
    }

    /// A width that must fit in a tensor.
    pub(super) fn size(&mut self, n: u64, span: Span) -> Option<usize> {
        match usize::try_from(n) {
            Ok(n) if (n as u64) <= MAX_TENSOR_ELEMENTS => Some(n),
            _ => {
                self.push(
                    error("E0309", "width too large", span, "more than 2^31").note(format!(
                        "a tensor is limited to 2^31 ({MAX_TENSOR_ELEMENTS}) elements"
                    )),
                );
                None
            }
        }
    }

    pub(super) fn tensor_ok(&mut self, dims: &[u64], name: &Name, what: &str) -> Option<()> {
        let mut total: u64 = 1;
        for &d in dims {
            match total.checked_mul(d) {
                Some(t) if t <= MAX_TENSOR_ELEMENTS => total = t,
                _ => {
                    self.push(
                        error(
                            "E0309",
                            format!("the {what} of `{}` is too large", name.text),
                            name.span,
                            format!("{what} has more than 2^31 elements"),
                        )
                        .note(format!(
                            "a tensor is limited to 2^31 ({MAX_TENSOR_ELEMENTS}) elements"
                        )),
                    );
                    return None;
                }
            }
        }
        Some(())
    }
}
