//! Window operations (`conv2d`, pooling): kernel, stride and padding, and the output size.

use super::layer::Width;
use super::{Input, LayerCx};
use crate::ast::*;
use crate::check::opts::Opts;
use crate::check::text::shape_str;
use crate::check::Checker;
use crate::diag::{error, DiagExt};
use crate::model::{Layer, LayerKind};

/// A checked `[h, w]` pair (kernel, stride or padding), `None` when it failed.
type Window = Option<[usize; 2]>;

impl Checker {
    pub(super) fn conv2d(
        &mut self,
        name: &Name,
        op: &Name,
        opts: &Opts<'_>,
        width_arg: Option<&Arg>,
        input: Input,
        cx: &LayerCx<'_>,
    ) -> Option<Layer> {
        let bias = opts
            .get("bias")
            .map_or(Some(true), |v| self.boolean(v, "bias"));
        let width = width_arg.and_then(|a| self.width(&a.value, "conv2d"));
        let (kernel, stride, padding) = self.window_opts(opts, op, true);
        let [c, h, w] = self.need_3d(&op.text, &input, cx)?;
        let (bias, width, kernel, stride, padding) = (bias?, width?, kernel?, stride?, padding?);
        let out = match width {
            Width::Out(o, _) => o,
            Width::InOut(i, ispan, o, _) => {
                if i != c as u64 {
                    self.push(
                        error(
                            "E0304",
                            format!(
                                "`{}` expects {i} input channels, but {} gives {c}",
                                name.text,
                                cx.producer(&input.name, input.layer)
                            ),
                            ispan,
                            format!("`{}` expects {i} input channels", name.text),
                        )
                        .secondary(
                            input.def,
                            format!("`{}`, declared here, gives {c} channels", input.name),
                        )
                        .help(format!(
                            "write `{c} -> {o}`, or leave the input channels out"
                        )),
                    );
                    return None;
                }
                o
            }
        };
        let out = self.size(out, width_arg.map_or(op.span, |a| a.span))?;
        let kspan = opts.get("kernel").map_or(op.span, |v| v.span);
        let [oh, ow] = self.out_hw([h, w], kernel, stride, padding, kspan, &input)?;
        self.tensor_ok(
            &[out as u64, c as u64, kernel[0] as u64, kernel[1] as u64],
            name,
            "weight",
        )?;
        self.tensor_ok(&[out as u64, oh as u64, ow as u64], name, "output")?;
        let layer = Layer {
            name: name.text.clone(),
            kind: LayerKind::Conv2d {
                in_channels: c,
                out_channels: out,
                kernel,
                stride,
                padding,
                bias,
            },
            inputs: vec![input.name],
            in_shape: input.shape,
            out_shape: vec![out, oh, ow],
        };
        Some(layer)
    }

    /// `maxpool2d` and `avgpool2d`: no padding, and the stride defaults to the kernel.
    pub(super) fn pool2d(
        &mut self,
        name: &Name,
        op: &Name,
        opts: &Opts<'_>,
        input: Input,
        cx: &LayerCx<'_>,
    ) -> Option<Layer> {
        let (kernel, stride, _) = self.window_opts(opts, op, false);
        let [c, h, w] = self.need_3d(&op.text, &input, cx)?;
        let (kernel, stride) = (kernel?, stride?);
        let kspan = opts.get("kernel").map_or(op.span, |v| v.span);
        let [oh, ow] = self.out_hw([h, w], kernel, stride, [0, 0], kspan, &input)?;
        let kind = if op.text == "maxpool2d" {
            LayerKind::MaxPool2d { kernel, stride }
        } else {
            LayerKind::AvgPool2d { kernel, stride }
        };
        let layer = Layer {
            name: name.text.clone(),
            kind,
            inputs: vec![input.name],
            in_shape: input.shape,
            out_shape: vec![c, oh, ow],
        };
        Some(layer)
    }

    fn window_opts(&mut self, opts: &Opts<'_>, op: &Name, conv: bool) -> (Window, Window, Window) {
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

    fn need_3d(&mut self, op: &str, input: &Input, cx: &LayerCx<'_>) -> Option<[usize; 3]> {
        let (in_name, in_shape) = (&input.name, input.shape.as_slice());
        if let [c, h, w] = in_shape {
            return Some([*c, *h, *w]);
        }
        let who = cx.producer(in_name, input.layer);
        let mut d = error(
            "E0303",
            format!(
                "`{op}` needs a 3-D input `[C, H, W]`, but {who} is {}",
                shape_str(in_shape)
            ),
            input.arg,
            format!("this is {}", shape_str(in_shape)),
        )
        .secondary(input.def, format!("`{in_name}` is declared here"));
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
    fn out_hw(
        &mut self,
        hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        kspan: Span,
        input: &Input,
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
                "`{}` is {}; the output would be smaller than 1×1",
                input.name,
                shape_str(&input.shape)
            )),
        );
        None
    }
}
