//! Layer statements: arity, options and inputs, then the shape each operation gives.

use super::{ops, Input, LayerCx};
use crate::ast::*;
use crate::check::opts::Opts;
use crate::check::text::{plural, shape_str};
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};
use crate::model::{Layer, LayerKind};
use sparsec_ir::op::Unary;

/// A layer's width argument, `OUT` or `IN -> OUT`, each with where it is written.
pub(super) enum Width {
    Out(u64, Span),
    InOut(u64, Span, u64, Span),
}

impl Checker {
    /// Checks a layer statement. Returns the layer (when it checked) and the names it reads.
    pub(super) fn layer(
        &mut self,
        name: &Name,
        op: &Name,
        args: &[Arg],
        cx: &LayerCx<'_>,
    ) -> (Option<Layer>, Vec<String>) {
        let op_text = op.text.as_str();
        // Unknown ops: every positional name counts as read (no "unused" cascades).
        let n_inputs = match op_text {
            "add" => 2,
            _ if ops().contains(&op_text) => 1,
            _ => usize::MAX,
        };
        let reads: Vec<String> = args
            .iter()
            .filter(|a| a.key.is_none())
            .take(n_inputs)
            .filter_map(|a| match &a.value.kind {
                ValueKind::Ident(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        if n_inputs == usize::MAX {
            self.unknown(
                "E0204",
                format!("unknown layer operation `{}`", op.text),
                (&op.text, op.span),
                "unknown operation",
                ops(),
                Listing::Always(format!("operations: {}", ops().join(", "))),
            );
            return (None, reads);
        }
        (self.layer_body(name, op, args, n_inputs, cx), reads)
    }

    fn layer_body(
        &mut self,
        name: &Name,
        op: &Name,
        args: &[Arg],
        n_inputs: usize,
        cx: &LayerCx<'_>,
    ) -> Option<Layer> {
        let positional: Vec<&Arg> = args.iter().filter(|a| a.key.is_none()).collect();
        let op_text = op.text.as_str();
        let mut failed = false;

        // Positional after named.
        let mut seen_named = false;
        for a in args {
            if a.key.is_some() {
                seen_named = true;
            } else if seen_named && !matches!(a.value.kind, ValueKind::Error) {
                self.push(
                    error(
                        "E0412",
                        "positional argument after a named option",
                        a.span,
                        "positional argument",
                    )
                    .help("write positional arguments first, then `key: value` options"),
                );
                failed = true;
            }
        }

        let n_positional = match op_text {
            "dense" | "conv2d" | "add" => 2,
            _ => 1,
        };
        let usage = match op_text {
            "dense" => "`dense(x, OUT)` or `dense(x, IN -> OUT)`".to_owned(),
            "conv2d" => {
                "`conv2d(x, OUT, kernel: K)` or `conv2d(x, IN -> OUT, kernel: K)`".to_owned()
            }
            "maxpool2d" => "`maxpool2d(x, kernel: K)`".to_owned(),
            "avgpool2d" => "`avgpool2d(x, kernel: K)`".to_owned(),
            "add" => "`add(a, b)`".to_owned(),
            // `flatten` and the activations.
            _ => format!("`{op_text}(x)`"),
        };
        if positional.len() > n_positional {
            let extra = positional[n_positional];
            let mut d = error(
                "E0403",
                format!(
                    "`{op_text}` takes {} but {} were given",
                    plural(
                        n_positional as u64,
                        "positional argument",
                        "positional arguments"
                    ),
                    positional.len()
                ),
                extra.span,
                "unexpected argument",
            )
            .note(format!("usage: {usage}"));
            if op_text == "conv2d" || op_text.ends_with("pool2d") {
                d = d.help("options are named, e.g. `kernel: 5`");
            }
            self.push(d);
            return None;
        }
        if positional.len() < n_positional {
            let what = match (op_text, positional.len()) {
                ("dense" | "conv2d", 1) => "output width",
                ("add", 1) => "second operand",
                _ => "input",
            };
            let at = positional.last().map_or(op.span, |a| a.span);
            self.push(
                error(
                    "E0402",
                    format!("`{op_text}` is missing its {what}"),
                    at,
                    format!("{what} missing after this"),
                )
                .note(format!("usage: {usage}")),
            );
            failed = true;
        }

        // Options.
        let allowed: &[&str] = match op_text {
            "dense" => &["bias"],
            "conv2d" => &["kernel", "stride", "padding", "bias"],
            "maxpool2d" | "avgpool2d" => &["kernel", "stride"],
            _ => &[],
        };
        let named: Vec<(&Name, &Value)> = args
            .iter()
            .filter_map(|a| a.key.as_ref().map(|k| (k, &a.value)))
            .collect();
        let n_errors = self.diags.len();
        let opts = self.opts(named, allowed, &format!("`{op_text}`"));
        if self.diags.len() > n_errors {
            failed = true;
        }

        // Inputs.
        let mut ins: Vec<Input> = Vec::new();
        let mut inputs_ok = true;
        for a in positional.iter().take(n_inputs) {
            match self.resolve(&a.value, cx) {
                Ok((name, shape, def, layer)) => ins.push(Input {
                    name,
                    shape,
                    def,
                    layer,
                    arg: a.span,
                }),
                Err(_) => inputs_ok = false,
            }
        }
        let width_arg = positional.get(1).copied();
        if !inputs_ok || ins.len() < n_inputs {
            // Still check the options' own values, which do not depend on the input.
            self.layer_option_values(op_text, &opts, width_arg);
            return None;
        }
        let mut ins = ins.into_iter();
        let input = ins.next()?;
        let layer = match op_text {
            "dense" => self.dense(name, op, &opts, width_arg, input, cx)?,
            "conv2d" => self.conv2d(name, op, &opts, width_arg, input, cx)?,
            "maxpool2d" | "avgpool2d" => self.pool2d(name, op, &opts, input, cx)?,
            "add" => self.add(name, input, ins.next()?, cx)?,
            _ => elementwise(name, op_text, input),
        };
        (!failed).then_some(layer)
    }

    fn dense(
        &mut self,
        name: &Name,
        op: &Name,
        opts: &Opts<'_>,
        width_arg: Option<&Arg>,
        input: Input,
        cx: &LayerCx<'_>,
    ) -> Option<Layer> {
        let Input {
            name: in_name,
            shape: in_shape,
            def: in_def,
            layer: in_layer,
            arg: in_arg,
        } = input;
        let bias = opts
            .get("bias")
            .map_or(Some(true), |v| self.boolean(v, "bias"));
        let width = width_arg.and_then(|a| self.width(&a.value, "dense"));
        if in_shape.len() != 1 {
            self.push(
                error(
                    "E0302",
                    format!(
                        "`dense` needs a 1-D input, but {} is {}",
                        cx.producer(&in_name, in_layer),
                        shape_str(&in_shape)
                    ),
                    in_arg,
                    format!("this is {}", shape_str(&in_shape)),
                )
                .secondary(in_def, format!("`{in_name}` is declared here"))
                .help(format!("flatten it first: `flat = flatten({in_name})`")),
            );
            return None;
        }
        let n_in = in_shape[0];
        let (bias, width) = (bias?, width?);
        let out = match width {
            Width::Out(o, _) => o,
            Width::InOut(i, ispan, o, _) => {
                if i != n_in as u64 {
                    self.push(
                        error(
                            "E0301",
                            format!(
                                "`{}` expects {} inputs, but {} gives {n_in}",
                                name.text,
                                i,
                                cx.producer(&in_name, in_layer)
                            ),
                            ispan,
                            format!("`{}` expects {} inputs", name.text, i),
                        )
                        .secondary(in_def, format!("`{in_name}`, declared here, gives {n_in}"))
                        .help(format!("write `{n_in} -> {o}`, or leave the input width out: `dense({in_name}, {o})`")),
                    );
                    return None;
                }
                o
            }
        };
        let out = self.size(out, width_arg.map_or(op.span, |a| a.span))?;
        self.tensor_ok(&[out as u64, n_in as u64], name, "weight")?;
        Some(Layer {
            name: name.text.clone(),
            kind: LayerKind::Dense {
                inputs: n_in,
                outputs: out,
                bias,
            },
            inputs: vec![in_name],
            in_shape,
            out_shape: vec![out],
        })
    }

    /// `add(a, b)`: a residual connection, so both operands must have one shape.
    fn add(&mut self, name: &Name, a: Input, b: Input, cx: &LayerCx<'_>) -> Option<Layer> {
        let Input {
            name: in_name,
            shape: in_shape,
            def: in_def,
            layer: in_layer,
            arg: in_arg,
        } = a;
        let Input {
            name: b_name,
            shape: b_shape,
            def: b_def,
            layer: b_layer,
            arg: b_arg,
        } = b;
        if b_shape != in_shape {
            self.push(
                error(
                    "E0306",
                    format!(
                        "cannot add values of different shapes: {} and {}",
                        shape_str(&in_shape),
                        shape_str(&b_shape)
                    ),
                    in_arg,
                    format!("`{in_name}` is {}", shape_str(&in_shape)),
                )
                .with_labels(vec![codespan_reporting::diagnostic::Label::primary(
                    (),
                    b_arg.range(),
                )
                .with_message(format!("`{b_name}` is {}", shape_str(&b_shape)))])
                .secondary(
                    in_def,
                    format!("{} is declared here", cx.producer(&in_name, in_layer)),
                )
                .secondary(
                    b_def,
                    format!("{} is declared here", cx.producer(&b_name, b_layer)),
                )
                .note("`add` needs operands of the same shape (a residual connection)"),
            );
            return None;
        }
        let layer = Layer {
            name: name.text.clone(),
            kind: LayerKind::Add,
            inputs: vec![in_name, b_name],
            out_shape: in_shape.clone(),
            in_shape,
        };
        Some(layer)
    }

    /// Checks option values of a layer whose input failed (so their errors are still reported).
    fn layer_option_values(&mut self, op: &str, opts: &Opts<'_>, width: Option<&Arg>) {
        if let Some(v) = opts.get("bias") {
            self.boolean(v, "bias");
        }
        match op {
            "dense" | "conv2d" => {
                if let Some(w) = width {
                    if let Some(Width::Out(o, s) | Width::InOut(_, _, o, s)) =
                        self.width(&w.value, op)
                    {
                        self.size(o, s);
                    }
                }
            }
            _ => {}
        }
        for (key, min) in [("kernel", 1), ("stride", 1), ("padding", 0)] {
            if let Some(v) = opts.get(key) {
                self.int_or_pair(v, key, min);
            }
        }
    }

    /// `OUT` or `IN -> OUT`.
    pub(super) fn width(&mut self, v: &Value, op: &str) -> Option<Width> {
        match &v.kind {
            ValueKind::Int { .. } => self
                .uint(v, "output width", 1)
                .map(|o| Width::Out(o, v.span)),
            ValueKind::Pair { from, to } => {
                let i = self.uint(from, "input width", 1);
                let o = self.uint(to, "output width", 1);
                Some(Width::InOut(i?, from.span, o?, to.span))
            }
            _ => {
                let what = if op == "conv2d" {
                    "output channels"
                } else {
                    "output width"
                };
                self.wrong_type(
                    v,
                    &format!("an {what} (`OUT` or `IN -> OUT`)"),
                    &format!("the {what} of `{op}`"),
                );
                None
            }
        }
    }
}

/// `flatten` and the activations: no options, and a shape that follows from the input's.
fn elementwise(name: &Name, op: &str, input: Input) -> Layer {
    // The operations routed here are `flatten` and the activations of the table.
    let (kind, out_shape) = match Unary::by_name(op).filter(|u| u.is_activation()) {
        Some(u) => (LayerKind::Activation(u), input.shape.clone()),
        None => (LayerKind::Flatten, vec![input.shape.iter().product()]),
    };
    Layer {
        name: name.text.clone(),
        kind,
        inputs: vec![input.name],
        in_shape: input.shape,
        out_shape,
    }
}
