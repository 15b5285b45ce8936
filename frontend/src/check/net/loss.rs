//! The `loss` statement.

use super::LayerCx;
use crate::ast::*;
use crate::check::text::shape_str;
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};

const LOSSES: &[&str] = &["softmax_cross_entropy"];

impl Checker {
    /// `loss FUNC(NAME)` → (logits name, its declaration, classes).
    pub(super) fn loss(
        &mut self,
        func: &Name,
        args: &[Arg],
        cx: &LayerCx<'_>,
    ) -> (Option<(String, Span, usize)>, Vec<String>) {
        let positional: Vec<&Arg> = args.iter().filter(|a| a.key.is_none()).collect();
        let reads: Vec<String> = positional
            .iter()
            .filter_map(|a| match &a.value.kind {
                ValueKind::Ident(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let mut failed = false;
        if !LOSSES.contains(&func.text.as_str()) {
            self.unknown(
                "E0209",
                format!("unknown loss function `{}`", func.text),
                (&func.text, func.span),
                "unknown loss",
                LOSSES.iter().copied(),
                Listing::Always(format!("loss functions: {}", LOSSES.join(", "))),
            );
            failed = true;
        }
        let named: Vec<(&Name, &Value)> = args
            .iter()
            .filter_map(|a| a.key.as_ref().map(|k| (k, &a.value)))
            .collect();
        let n = self.diags.len();
        self.opts(named, &[], &format!("`{}`", func.text));
        failed |= self.diags.len() > n;
        if positional.len() > 1 {
            self.push(
                error(
                    "E0403",
                    format!(
                        "`{}` takes 1 positional argument but {} were given",
                        func.text,
                        positional.len()
                    ),
                    positional[1].span,
                    "unexpected argument",
                )
                .note("usage: `loss softmax_cross_entropy(logits)`; labels come from the data"),
            );
            failed = true;
        }
        let Some(arg) = positional.first() else {
            self.push(
                error(
                    "E0402",
                    "the loss is missing its logits",
                    func.span,
                    "logits missing",
                )
                .note("usage: `loss softmax_cross_entropy(logits)`"),
            );
            return (None, reads);
        };
        let (name, shape, def, layer) = match self.resolve(&arg.value, cx) {
            Ok((n, s, d, l)) => (n, s, d, l),
            Err(_) => return (None, reads),
        };
        if layer.is_none() {
            self.push(
                error(
                    "E0216",
                    format!("the loss reads the input `{name}` directly"),
                    arg.span,
                    "this is the input",
                )
                .secondary(def, "declared here")
                .help("the loss needs logits computed by a layer, e.g. `dense(x, 10)`"),
            );
            return (None, reads);
        }
        if shape.len() != 1 {
            self.push(
                error(
                    "E0307",
                    format!(
                        "the loss needs 1-D logits `[classes]`, but `{name}` is {}",
                        shape_str(&shape)
                    ),
                    arg.span,
                    format!("this is {}", shape_str(&shape)),
                )
                .secondary(def, format!("`{name}` is declared here"))
                .help("flatten it and add a dense layer with one output per class"),
            );
            return (None, reads);
        }
        let classes = shape[0];
        if classes < 2 {
            self.push(
                error(
                    "E0312",
                    format!("the loss needs at least 2 classes, but `{name}` gives {classes}"),
                    arg.span,
                    "1 class",
                )
                .secondary(def, format!("`{name}` is declared here")),
            );
            return (None, reads);
        }
        if failed {
            return (None, reads);
        }
        (Some((name, def, classes)), reads)
    }
}
