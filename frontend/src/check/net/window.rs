//! Window operations (`conv2d`, pooling): kernel, stride and padding, and the output size.

use super::LayerCx;
use crate::ast::*;
use crate::check::opts::Opts;
use crate::check::text::shape_str;
use crate::check::Checker;
use crate::diag::{error, DiagExt};

/// A checked `[h, w]` pair (kernel, stride or padding), `None` when it failed.
pub(super) type Window = Option<[usize; 2]>;

impl Checker {
    pub(super) fn window_opts(
        &mut self,
        opts: &Opts<'_>,
        op: &Name,
        conv: bool,
    ) -> (Window, Window, Window) {
        let kernel = match opts.get("kernel") {
            Some(v) => self.int_or_pair(v, "kernel", 1),
            None => {
                self.missing(
                    op.span,
                    "option `kernel`",
                    &format!(
                        "e.g. `{}(x, {}kernel: 5)`",
                        op.text,
                        if conv { "OUT, " } else { "" }
                    ),
                );
                None
            }
        };
        let stride = match opts.get("stride") {
            Some(v) => self.int_or_pair(v, "stride", 1),
            None if conv => Some([1, 1]),
            None => kernel,
        };
        let padding = match opts.get("padding") {
            Some(v) => self.int_or_pair(v, "padding", 0),
            None => Some([0, 0]),
        };
        (kernel, stride, padding)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn need_3d(
        &mut self,
        op: &str,
        in_name: &str,
        in_shape: &[usize],
        in_arg: Span,
        in_def: Span,
        in_layer: Option<usize>,
        cx: &LayerCx<'_>,
    ) -> Option<[usize; 3]> {
        if let [c, h, w] = in_shape {
            return Some([*c, *h, *w]);
        }
        let who = match in_layer.and_then(|i| cx.layers.get(i)) {
            Some(_) => format!("`{in_name}`"),
            None => format!("the input `{in_name}`"),
        };
        let mut d = error(
            "E0303",
            format!(
                "`{op}` needs a 3-D input `[C, H, W]`, but {who} is {}",
                shape_str(in_shape)
            ),
            in_arg,
            format!("this is {}", shape_str(in_shape)),
        )
        .secondary(in_def, format!("`{in_name}` is declared here"));
        if in_shape.len() == 2 {
            d = d.help(format!(
                "add a channel dimension: `[1, {}, {}]`",
                in_shape[0], in_shape[1]
            ));
        }
        self.push(d);
        None
    }

    /// Output height and width of a window op: `floor((H + 2p - k) / s) + 1`, or E0305.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn out_hw(
        &mut self,
        hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        kspan: Span,
        in_name: &str,
        in_shape: &[usize],
    ) -> Option<[usize; 2]> {
        let mut out = [0usize; 2];
        let mut padded = [0usize; 2];
        let mut fits = true;
        for i in 0..2 {
            let Some(p) = padding[i].checked_mul(2).and_then(|p| p.checked_add(hw[i])) else {
                self.push(error(
                    "E0309",
                    "padding too large",
                    kspan,
                    "padded size overflows",
                ));
                return None;
            };
            padded[i] = p;
            if p < kernel[i] || stride[i] == 0 {
                fits = false;
            } else {
                out[i] = (p - kernel[i]) / stride[i] + 1;
            }
        }
        if fits {
            return Some(out);
        }
        let padded_note = if padding != [0, 0] {
            format!(" (padded: {}×{})", padded[0], padded[1])
        } else {
            String::new()
        };
        self.push(
            error(
                "E0305",
                format!(
                    "kernel {}×{} is larger than the input {}×{}{padded_note}",
                    kernel[0], kernel[1], hw[0], hw[1]
                ),
                kspan,
                format!("kernel {}×{}", kernel[0], kernel[1]),
            )
            .note(format!(
                "`{in_name}` is {}; the output would be smaller than 1×1",
                shape_str(in_shape)
            )),
        );
        None
    }
}
