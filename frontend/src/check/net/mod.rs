//! The `model` block: its statements in order, checked into the network the later checks read.

mod dead;
mod layer;
mod loss;
mod resolve;
mod shape;
mod window;

use super::{Checker, MAX_STORED_PARAMS, MAX_TOTAL_PARAMS};
use crate::ast::*;
use crate::diag::{error, DiagExt};
use crate::model::{InputDecl, Layer};
use sparsec_ir::op::Unary;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Every layer operation, in the order error notes list them: the layers with their own rules,
/// then every activation of the IR's table (`sparsec_ir::op::Unary`), then `add`.
pub(super) fn ops() -> Vec<&'static str> {
    let mut ops = vec!["dense", "conv2d", "maxpool2d", "avgpool2d", "flatten"];
    ops.extend(Unary::activations().map(|u| u.name()));
    ops.push("add");
    ops
}
/// The operations whose layers have parameters: the only ones a method can select.
pub(super) const PARAM_OPS: &[&str] = &["dense", "conv2d"];

/// What a checked network gives the later checks.
pub(super) struct Net {
    pub(super) name: String,
    pub(super) input: InputDecl,
    pub(super) layers: Vec<Layer>,
    pub(super) logits: Option<(String, Span)>,
    pub(super) classes: usize,
    pub(super) input_span: Span,
    pub(super) loss_span: Option<Span>,
    /// Where each of `layers` is declared.
    pub(super) layer_spans: Vec<Span>,
    /// Whether every statement checked: selectors are resolved only then.
    pub(super) complete: bool,
    /// Layer name → index in `layers`.
    by_name: HashMap<String, usize>,
}

impl Net {
    pub(super) fn layer(&self, name: &str) -> Option<&Layer> {
        self.by_name.get(name).and_then(|&i| self.layers.get(i))
    }
}

/// A value name as later statements see it: a shape to read, or a failure they skip silently
/// (it was reported where it failed).
enum Avail {
    Ok {
        shape: Vec<usize>,
        span: Span,
        layer: Option<usize>,
    },
    Failed,
}

/// What a statement can see: the definitions above it and the values that checked.
struct LayerCx<'a> {
    index: usize,
    has_input: bool,
    defs: &'a HashMap<&'a str, (usize, Span)>,
    values: &'a BTreeMap<String, Avail>,
    layers: &'a [Layer],
}

/// A value a layer reads, resolved.
struct Input {
    name: String,
    shape: Vec<usize>,
    /// Where the value is declared.
    def: Span,
    /// The layer that computes it; `None` for the model's input.
    layer: Option<usize>,
    /// The argument that reads it.
    arg: Span,
}

impl LayerCx<'_> {
    /// How messages name a value: "`x`" for a layer's output, "the input `x`" for the model's.
    fn producer(&self, name: &str, layer: Option<usize>) -> String {
        match layer.and_then(|i| self.layers.get(i)) {
            Some(_) => format!("`{name}`"),
            None => format!("the input `{name}`"),
        }
    }
}

impl Checker {
    pub(super) fn model(&mut self, m: &Model) -> Option<Net> {
        let errors_before = self.diags.len();
        let header = m.keyword.to(m.name.span);

        // input declarations
        let inputs: Vec<(&Name, &Value, Span)> = m
            .stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Input { name, shape, span } => Some((name, shape, *span)),
                _ => None,
            })
            .collect();
        for (name, _, _) in inputs.iter().skip(1) {
            if let Some((first, _, _)) = inputs.first() {
                self.push(
                    error(
                        "E0206",
                        "more than one `input` declaration",
                        name.span,
                        "second input declared here",
                    )
                    .secondary(first.span, "first input declared here")
                    .note("a model has exactly one input; combine the data into one shape"),
                );
            }
        }
        let losses: Vec<&Stmt> = m
            .stmts
            .iter()
            .filter(|s| matches!(s, Stmt::Loss { .. }))
            .collect();
        for s in losses.iter().skip(1) {
            if let (Stmt::Loss { keyword, .. }, Some(Stmt::Loss { keyword: first, .. })) =
                (s, losses.first())
            {
                self.push(
                    error(
                        "E0208",
                        "more than one `loss`",
                        *keyword,
                        "second loss here",
                    )
                    .secondary(*first, "first loss here")
                    .note("a model has exactly one loss"),
                );
            }
        }
        if inputs.is_empty() {
            self.push(
                error(
                    "E0205",
                    format!("model `{}` has no `input` declaration", m.name.text),
                    header,
                    "no input",
                )
                .help("declare the shape of one sample, e.g. `input x: [1, 28, 28]`"),
            );
        }
        if losses.is_empty() {
            self.push(
                error(
                    "E0207",
                    format!("model `{}` has no `loss`", m.name.text),
                    header,
                    "no loss",
                )
                .help("add e.g. `loss softmax_cross_entropy(logits)`"),
            );
        }

        // All definitions, for duplicate and use-before-definition detection.
        let mut defs: HashMap<&str, (usize, Span)> = HashMap::new();
        for (i, s) in m.stmts.iter().enumerate() {
            let name = match s {
                Stmt::Input { name, .. } | Stmt::Layer { name, .. } => name,
                _ => continue,
            };
            if matches!(s, Stmt::Input { .. })
                && inputs
                    .first()
                    .is_some_and(|(n, _, _)| !std::ptr::eq(*n, name))
            {
                continue; // extra inputs were reported above
            }
            match defs.get(name.text.as_str()) {
                Some(&(_, first)) => self.push(
                    error(
                        "E0201",
                        format!("`{}` is defined more than once", name.text),
                        name.span,
                        "defined again here",
                    )
                    .secondary(first, "first defined here")
                    .help("give each value its own name"),
                ),
                None => {
                    defs.insert(name.text.as_str(), (i, name.span));
                }
            }
        }

        // The input.
        // Ordered, so that suggestions among equally close names never depend on hashing.
        let mut values: BTreeMap<String, Avail> = BTreeMap::new();
        let mut input_decl: Option<InputDecl> = None;
        let mut input_span = header;
        if let Some((name, shape, _)) = inputs.first() {
            input_span = name.span;
            match self.input_shape(name, shape) {
                Some(s) => {
                    values.insert(
                        name.text.clone(),
                        Avail::Ok {
                            shape: s.clone(),
                            span: name.span,
                            layer: None,
                        },
                    );
                    input_decl = Some(InputDecl {
                        name: name.text.clone(),
                        shape: s,
                    });
                }
                None => {
                    values.insert(name.text.clone(), Avail::Failed);
                }
            }
        }

        // Extra inputs (reported above): readers of them are skipped silently.
        for (name, _, _) in inputs.iter().skip(1) {
            values.entry(name.text.clone()).or_insert(Avail::Failed);
        }

        // Layers in order.
        let mut layers: Vec<Layer> = Vec::new();
        let mut layer_spans: Vec<Span> = Vec::new();
        let mut reads: Vec<(String, Vec<String>)> = Vec::new(); // per layer statement
        let mut total_params: u64 = 0;
        let mut logits: Option<(String, Span)> = None;
        let mut classes = 0;
        let mut loss_span = None;
        let mut loss_seen = false;
        let mut loss_ok = false;
        let mut used: HashSet<String> = HashSet::new();
        for (i, s) in m.stmts.iter().enumerate() {
            match s {
                Stmt::Layer { name, op, args, .. } => {
                    let first_def = defs.get(name.text.as_str()).is_some_and(|&(j, _)| j == i);
                    let ctx = LayerCx {
                        index: i,
                        has_input: !inputs.is_empty(),
                        defs: &defs,
                        values: &values,
                        layers: &layers,
                    };
                    let (result, read) = self.layer(name, op, args, &ctx);
                    for r in &read {
                        used.insert(r.clone());
                    }
                    reads.push((name.text.clone(), read));
                    if !first_def {
                        continue;
                    }
                    match result {
                        Some(layer) => {
                            let p = layer.param_count();
                            match total_params.checked_add(p) {
                                Some(t) if t <= MAX_TOTAL_PARAMS => total_params = t,
                                _ => {
                                    self.push(
                                        error(
                                            "E0313",
                                            "too many parameters in total",
                                            name.span,
                                            format!("with `{}` the model has more than 2^40 parameters", name.text),
                                        )
                                        .note(format!("a model is limited to 2^40 ({MAX_TOTAL_PARAMS}) parameters")),
                                    );
                                    total_params = u64::MAX;
                                    values.insert(name.text.clone(), Avail::Failed);
                                    continue;
                                }
                            }
                            values.insert(
                                name.text.clone(),
                                Avail::Ok {
                                    shape: layer.out_shape.clone(),
                                    span: name.span,
                                    layer: Some(layers.len()),
                                },
                            );
                            layers.push(layer);
                            layer_spans.push(name.span);
                        }
                        None => {
                            values.insert(name.text.clone(), Avail::Failed);
                        }
                    }
                }
                Stmt::Loss {
                    func,
                    args,
                    keyword,
                    ..
                } => {
                    let first = !loss_seen;
                    loss_seen = true;
                    let ctx = LayerCx {
                        index: i,
                        has_input: !inputs.is_empty(),
                        defs: &defs,
                        values: &values,
                        layers: &layers,
                    };
                    let (result, read) = self.loss(func, args, &ctx);
                    for r in read {
                        used.insert(r);
                    }
                    if first {
                        loss_span = Some(keyword.to(func.span));
                        if let Some((name, span, c)) = result {
                            logits = Some((name, span));
                            classes = c;
                            loss_ok = true;
                        }
                    }
                }
                Stmt::Input { .. } | Stmt::Error(_) => {}
            }
        }

        // Dead layers: only when the loss checked, so that the last layer is not reported.
        if loss_ok {
            if let Some((logit_name, _)) = &logits {
                self.dead_layers(m, &defs, &reads, &used, logit_name);
            }
        }

        let complete = self.diags.len() == errors_before;
        let by_name = layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), i))
            .collect();
        Some(Net {
            by_name,
            name: m.name.text.clone(),
            input: input_decl?,
            layers,
            logits,
            classes,
            input_span,
            loss_span,
            layer_spans,
            complete,
        })
    }

    /// E0310: the parameters a model stores, every one but a Dropback method's, at most 2^32.
    pub(super) fn stored_params_fit(
        &mut self,
        net: &Net,
        method: Option<&sparsec_ir::spec::MethodSpec>,
    ) {
        let regenerated: Vec<&str> = match method {
            Some(sparsec_ir::spec::MethodSpec {
                method: sparsec_ir::spec::Method::Dropback { .. },
                layers,
            }) => layers.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let mut stored = 0u64;
        for (layer, &span) in net.layers.iter().zip(&net.layer_spans) {
            if regenerated.contains(&layer.name.as_str()) {
                continue;
            }
            stored = stored.saturating_add(layer.param_count());
            if stored > MAX_STORED_PARAMS {
                self.push(
                    error(
                        "E0310",
                        "too many stored parameters",
                        span,
                        format!(
                            "with `{}` the model stores more than 2^32 parameters",
                            layer.name
                        ),
                    )
                    .note(format!(
                        "a model stores at most 2^32 ({MAX_STORED_PARAMS}) parameters; the layers \
                         of a Dropback method are regenerated from their seed, not stored, and \
                         may hold more"
                    )),
                );
                return;
            }
        }
    }
}
