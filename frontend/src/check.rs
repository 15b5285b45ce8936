//! The checker: names, structure, shapes, options, ranges, methods and selectors.
//!
//! It collects as many errors as it can in one pass but never cascades: a layer whose input
//! failed to check is skipped silently, and checks that depend on a part that failed are not run.

use crate::ast::*;
use crate::diag::{did_you_mean, error, Diag, DiagExt};
use crate::model::{CheckedModel, InputDecl, Layer, LayerKind};
use sparsec_ir::spec::{
    DataSpec, DropbackScope, KeepRatio, Method, MethodSpec, Optimizer, Schedule, TrainSpec,
};
use std::collections::{HashMap, HashSet};

/// Largest number of elements in any single tensor (per sample for activations).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;
/// Largest total number of parameters.
pub const MAX_TOTAL_PARAMS: u64 = 1 << 32;

const OPS: &[&str] = &[
    "dense",
    "conv2d",
    "maxpool2d",
    "avgpool2d",
    "flatten",
    "relu",
    "tanh",
    "sigmoid",
    "add",
];
const PARAM_OPS: &[&str] = &["dense", "conv2d"];
const LOSSES: &[&str] = &["softmax_cross_entropy"];
const DATA_KINDS: &[&str] = &["fashion_mnist", "idx", "synthetic"];
const METHODS: &[&str] = &["dropback", "admm", "prunetrain", "activation_density"];
const OPTIMIZERS: &[&str] = &["sgd"];
const SCHEDULES: &[&str] = &["constant", "step", "multistep"];
const SCOPES: &[&str] = &["global", "per_layer"];
const TRAIN_KEYS: &[&str] = &[
    "epochs",
    "batch",
    "seed",
    "log_every",
    "optimizer",
    "schedule",
];

/// Checks a parsed file and builds the model the rest of the compiler uses.
pub fn check(file: &File) -> Result<CheckedModel, Vec<Diag>> {
    let mut cx = Checker {
        diags: Vec::new(),
        suggestions_left: 100,
    };
    let result = cx.file(file);
    let mut diags = cx.diags;
    match result {
        Some(model) if diags.is_empty() => Ok(model),
        _ => {
            crate::diag::sort(&mut diags);
            Err(diags)
        }
    }
}

struct Checker {
    diags: Vec<Diag>,
    /// "Did you mean" look-ups left: keeps files with thousands of errors linear.
    suggestions_left: usize,
}

/// What a checked network gives the later checks.
struct Net {
    name: String,
    input: InputDecl,
    layers: Vec<Layer>,
    logits: Option<(String, Span)>,
    classes: usize,
    input_span: Span,
    loss_span: Option<Span>,
    /// Whether every statement checked: selectors are resolved only then.
    complete: bool,
    /// Layer name → index in `layers`.
    by_name: HashMap<String, usize>,
}

impl Net {
    fn layer(&self, name: &str) -> Option<&Layer> {
        self.by_name.get(name).and_then(|&i| self.layers.get(i))
    }
}

/// Training facts the method checks need.
struct TrainFacts {
    epochs: Option<u64>,
    epochs_span: Option<Span>,
    /// Where the batch size is written (the `train` keyword when it is the default).
    batch_span: Span,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.into_iter().collect();
    const MAX: usize = 12;
    if v.len() > MAX {
        format!(
            "{}, … ({} in all)",
            v.iter().take(MAX).copied().collect::<Vec<_>>().join(", "),
            v.len()
        )
    } else {
        v.join(", ")
    }
}

fn fmt_f(x: f64) -> String {
    format!("{x}")
}

/// Iterative glob match (`*` matches any run, possibly empty).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// A set of `key: value` options, checked against the allowed keys.
struct Opts<'a> {
    items: Vec<(&'a str, &'a Value, Span)>,
    /// A call had positional arguments (already reported): "missing" errors would be noise.
    had_positional: bool,
}

impl<'a> Opts<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| *v)
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, s)| *s)
    }
}

/// The note an "unknown name" error ends with, naming what does exist.
enum Listing {
    Always(String),
    /// Only when there is no suggestion: a short list is no help next to a close match.
    Otherwise(Option<String>),
}

/// A checked `[h, w]` pair (kernel, stride or padding), `None` when it failed.
type Window = Option<[usize; 2]>;

enum Width {
    Out(u64, Span),
    InOut(u64, Span, u64, Span),
}

impl Checker {
    fn push(&mut self, d: Diag) {
        self.diags.push(d);
    }

    /// Reports `found`, a name that is none of `known`: the error `code` with `message` and
    /// `label` at its span, "did you mean" the closest known name, then `listing`. Every
    /// "unknown name" error goes through here so that all share one suggestion budget.
    fn unknown<'k>(
        &mut self,
        code: &str,
        message: String,
        found: (&str, Span),
        label: &str,
        known: impl IntoIterator<Item = &'k str>,
        listing: Listing,
    ) {
        let (name, span) = found;
        let mut d = error(code, message, span, label);
        let mut suggested = false;
        if self.suggestions_left > 0 {
            self.suggestions_left -= 1;
            if let Some(s) = did_you_mean(name, known) {
                d = d.help(format!("did you mean `{s}`?"));
                suggested = true;
            }
        }
        match listing {
            Listing::Always(note) => d = d.note(note),
            Listing::Otherwise(Some(note)) if !suggested => d = d.note(note),
            Listing::Otherwise(_) => {}
        }
        self.push(d);
    }

    // ----- values ---------------------------------------------------------------------------

    fn wrong_type(&mut self, v: &Value, expected: &str, label: &str) {
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
    fn int(&mut self, v: &Value, what: &str) -> Option<i128> {
        match &v.kind {
            ValueKind::Int { .. } => self.int_literal(v),
            _ => {
                self.wrong_type(v, "an integer", &format!("`{what}` must be an integer"));
                None
            }
        }
    }

    /// An unsigned integer option with a lower bound (the message states the allowed range).
    fn uint(&mut self, v: &Value, what: &str, min: u64) -> Option<u64> {
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

    fn boolean(&mut self, v: &Value, what: &str) -> Option<bool> {
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

    fn string(&mut self, v: &Value, what: &str) -> Option<String> {
        match &v.kind {
            ValueKind::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(v, "a string", &format!("`{what}` must be a string"));
                None
            }
        }
    }

    fn range_err(&mut self, span: Span, rule: &str, found: &str) {
        self.push(error(
            "E0408",
            format!("{rule}, found {found}"),
            span,
            "out of range",
        ));
    }

    /// A float with a range predicate; `rule` is e.g. "`lr` must be > 0".
    fn float_in(
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
    fn int_or_pair(&mut self, v: &Value, what: &str, min: u64) -> Option<[usize; 2]> {
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

    /// Collects options, reporting unknown (E0401) and duplicate (E0405) keys.
    fn opts<'a>(
        &mut self,
        items: Vec<(&'a Name, &'a Value)>,
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let mut out: Vec<(&'a str, &'a Value, Span)> = Vec::new();
        for (key, value) in items {
            if key.text.is_empty() {
                continue; // recovered syntax error
            }
            if !allowed.contains(&key.text.as_str()) {
                let listing = if allowed.is_empty() {
                    format!("{ctx} takes no options")
                } else {
                    format!("{ctx} options: {}", allowed.join(", "))
                };
                self.unknown(
                    "E0401",
                    format!("unknown option `{}` for {ctx}", key.text),
                    (&key.text, key.span),
                    "unknown option",
                    allowed.iter().copied(),
                    Listing::Always(listing),
                );
                continue;
            }
            if let Some((_, _, first)) = out.iter().find(|(k, _, _)| *k == key.text) {
                let first = *first;
                self.push(
                    error(
                        "E0405",
                        format!("option `{}` is given more than once", key.text),
                        key.span,
                        "given again here",
                    )
                    .secondary(first, "first given here"),
                );
                continue;
            }
            out.push((key.text.as_str(), value, key.span));
        }
        Opts {
            items: out,
            had_positional: false,
        }
    }

    fn block_opts<'a>(
        &mut self,
        block: Option<&'a Block>,
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let items = block.map_or_else(Vec::new, |b| {
            b.opts.iter().map(|o| (&o.key, &o.value)).collect()
        });
        self.opts(items, allowed, ctx)
    }

    /// Arguments of a call that takes only named options (`sgd(lr: 0.1)`).
    fn call_opts<'a>(
        &mut self,
        func: &Name,
        args: &'a [Arg],
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let mut items = Vec::new();
        let mut had_positional = false;
        for a in args {
            match &a.key {
                Some(k) => items.push((k, &a.value)),
                None => {
                    had_positional = true;
                    if matches!(a.value.kind, ValueKind::Error) {
                        continue;
                    }
                    let mut d = error(
                        "E0412",
                        format!("`{}` takes only named arguments", func.text),
                        a.span,
                        "positional argument",
                    );
                    if let Some(first) = allowed.first() {
                        d = d.help(format!("name it, e.g. `{}({first}: ...)`", func.text));
                    }
                    self.push(d);
                }
            }
        }
        let mut opts = self.opts(items, allowed, ctx);
        opts.had_positional = had_positional;
        opts
    }

    fn missing(&mut self, span: Span, what: &str, example: &str) {
        self.push(
            error("E0402", format!("missing {what}"), span, "needed here")
                .help(example.to_string()),
        );
    }

    // ----- file -----------------------------------------------------------------------------

    fn file(&mut self, file: &File) -> Option<CheckedModel> {
        let mut model: Option<&Model> = None;
        let mut data: Option<&DataItem> = None;
        let mut train: Option<&TrainItem> = None;
        let mut method: Option<&MethodItem> = None;
        for item in &file.items {
            let (kw, span, first) = match item {
                Item::Model(m) => {
                    let f = model.map(|x| x.keyword.to(x.name.span));
                    model.get_or_insert(m);
                    ("model", m.keyword.to(m.name.span), f)
                }
                Item::Data(d) => {
                    let f = data.map(|x| x.keyword.to(x.kind.span));
                    data.get_or_insert(d);
                    ("data", d.keyword.to(d.kind.span), f)
                }
                Item::Train(t) => {
                    let f = train.map(|x| x.keyword);
                    train.get_or_insert(t);
                    ("train", t.keyword, f)
                }
                Item::Method(m) => {
                    let f = method.map(|x| x.keyword.to(x.kind.span));
                    method.get_or_insert(m);
                    ("method", m.keyword.to(m.kind.span), f)
                }
                Item::Error(_) => continue,
            };
            if let Some(first) = first {
                let mut d = error(
                    "E0213",
                    format!("more than one `{kw}` block"),
                    span,
                    "given again here",
                )
                .secondary(first, "first given here");
                if kw == "method" {
                    d = d.note("a model is trained with at most one method");
                }
                self.push(d);
            }
        }
        let start = Span::new(file.span.start, file.span.start);
        if model.is_none() {
            self.push(
                error("E0211", "no `model` block", start, "expected a `model NAME { ... }` block in this file")
                    .help("declare the network: `model NAME { input x: [784] ... loss softmax_cross_entropy(out) }`"),
            );
        }
        if train.is_none() {
            self.push(
                error(
                    "E0212",
                    "no `train` block",
                    start,
                    "expected a `train { ... }` block in this file",
                )
                .help("add e.g. `train { epochs: 10, batch: 64, optimizer: sgd(lr: 0.1) }`"),
            );
        }

        let net = model.and_then(|m| self.model(m));
        let data_spec = match data {
            Some(d) => self.data(d),
            None => Some(DataSpec::FashionMnist { dir: None }),
        };
        let (train_spec, facts) = match train {
            Some(t) => self.train(t),
            None => (
                None,
                TrainFacts {
                    epochs: None,
                    epochs_span: None,
                    batch_span: start,
                },
            ),
        };
        let method_spec = match method {
            Some(m) => self.method(m, net.as_ref(), &facts).map(Some),
            None => Some(None),
        };
        if let (Some(net), Some(spec)) = (&net, &data_spec) {
            self.data_fits(net, spec, data);
        }
        if let (Some(net), Some(train)) = (&net, &train_spec) {
            self.batch_fits(net, train.batch, facts.batch_span);
        }

        let net = net?;
        let (logits, _) = net.logits?;
        if !net.complete {
            return None;
        }
        Some(CheckedModel {
            name: net.name,
            input: net.input,
            layers: net.layers,
            logits,
            classes: net.classes,
            data: data_spec?,
            train: train_spec?,
            method: method_spec?,
        })
    }

    // ----- model ----------------------------------------------------------------------------

    fn model(&mut self, m: &Model) -> Option<Net> {
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
        let mut values: HashMap<String, Avail> = HashMap::new();
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
                                            "E0310",
                                            "too many parameters in total",
                                            name.span,
                                            format!("with `{}` the model has more than 2^32 parameters", name.text),
                                        )
                                        .note(format!("a model is limited to 2^32 ({MAX_TOTAL_PARAMS}) parameters")),
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
                    span,
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
                    let (result, read) = self.loss(func, args, *span, &ctx);
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
            complete,
        })
    }

    fn input_shape(&mut self, name: &Name, shape: &Value) -> Option<Vec<usize>> {
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

    /// Resolves a value name read by a statement. `Err(true)` when an error was reported,
    /// `Err(false)` when the value failed earlier (skip silently).
    fn resolve(
        &mut self,
        v: &Value,
        cx: &LayerCx<'_>,
    ) -> Result<(String, Vec<usize>, Span, Option<usize>), bool> {
        let ValueKind::Ident(name) = &v.kind else {
            self.wrong_type(
                v,
                "a value name",
                "expected the name of the input or of an earlier layer",
            );
            return Err(true);
        };
        match cx.values.get(name.as_str()) {
            Some(Avail::Ok { shape, span, layer }) => {
                Ok((name.clone(), shape.clone(), *span, *layer))
            }
            Some(Avail::Failed) => Err(false),
            None => {
                if let Some(&(j, def)) = cx.defs.get(name.as_str()) {
                    if j >= cx.index {
                        self.push(
                            error(
                                "E0203",
                                format!("`{name}` is used before its definition"),
                                v.span,
                                "used here",
                            )
                            .secondary(def, format!("`{name}` is defined here"))
                            .help("a value must be defined above the statements that read it"),
                        );
                    }
                    // A definition that is not in `values` and not later failed silently.
                    return Err(j >= cx.index);
                }
                if !cx.has_input {
                    return Err(false); // E0205 explains it
                }
                let defined = (!cx.values.is_empty() && cx.values.len() <= 12).then(|| {
                    let mut sorted: Vec<&str> = cx.values.keys().map(String::as_str).collect();
                    sorted.sort_unstable();
                    format!("values defined so far: {}", list_names(sorted))
                });
                self.unknown(
                    "E0202",
                    format!("cannot find value `{name}`"),
                    (name, v.span),
                    "not defined",
                    cx.values.keys().map(String::as_str),
                    Listing::Otherwise(defined),
                );
                Err(true)
            }
        }
    }

    /// Checks a layer statement. Returns the layer (when it checked) and the names it reads.
    fn layer(
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
            _ if OPS.contains(&op_text) => 1,
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
                OPS.iter().copied(),
                Listing::Always(format!("operations: {}", OPS.join(", "))),
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
            "dense" => "`dense(x, OUT)` or `dense(x, IN -> OUT)`",
            "conv2d" => "`conv2d(x, OUT, kernel: K)` or `conv2d(x, IN -> OUT, kernel: K)`",
            "maxpool2d" => "`maxpool2d(x, kernel: K)`",
            "avgpool2d" => "`avgpool2d(x, kernel: K)`",
            "add" => "`add(a, b)`",
            "flatten" => "`flatten(x)`",
            "relu" => "`relu(x)`",
            "tanh" => "`tanh(x)`",
            _ => "`sigmoid(x)`",
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
        // (name, shape, declaration, producing layer, argument span)
        type Input = (String, Vec<usize>, Span, Option<usize>, Span);
        let mut ins: Vec<Input> = Vec::new();
        let mut inputs_ok = true;
        for a in positional.iter().take(n_inputs) {
            match self.resolve(&a.value, cx) {
                Ok((n, s, def, layer)) => ins.push((n, s, def, layer, a.span)),
                Err(_) => inputs_ok = false,
            }
        }
        if !inputs_ok || ins.len() < n_inputs {
            // Still check the options' own values, which do not depend on the input.
            self.layer_option_values(op_text, &opts, positional.get(1).copied());
            return None;
        }
        let (in_name, in_shape, in_def, _, in_arg) = ins.first().cloned()?;
        let producer = |n: &str, layer: Option<usize>| -> String {
            match layer.and_then(|i| cx.layers.get(i)) {
                Some(_) => format!("`{n}`"),
                None => format!("the input `{n}`"),
            }
        };
        let in_layer = ins.first().and_then(|x| x.3);

        let kind = match op_text {
            "dense" => {
                let bias = opts
                    .get("bias")
                    .map_or(Some(true), |v| self.boolean(v, "bias"));
                let width = positional
                    .get(1)
                    .and_then(|a| self.width(&a.value, "dense"));
                if in_shape.len() != 1 {
                    self.push(
                        error(
                            "E0302",
                            format!(
                                "`dense` needs a 1-D input, but {} is {}",
                                producer(&in_name, in_layer),
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
                                        producer(&in_name, in_layer)
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
                let out = self.size(out, positional.get(1).map_or(op.span, |a| a.span))?;
                self.tensor_ok(&[out as u64, n_in as u64], name, "weight")?;
                LayerKind::Dense {
                    inputs: n_in,
                    outputs: out,
                    bias,
                }
            }
            "conv2d" => {
                let bias = opts
                    .get("bias")
                    .map_or(Some(true), |v| self.boolean(v, "bias"));
                let width = positional
                    .get(1)
                    .and_then(|a| self.width(&a.value, "conv2d"));
                let (kernel, stride, padding) = self.window_opts(&opts, op, true);
                let [c, h, w] =
                    self.need_3d(op_text, &in_name, &in_shape, in_arg, in_def, in_layer, cx)?;
                let (bias, width, kernel, stride, padding) =
                    (bias?, width?, kernel?, stride?, padding?);
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
                                        producer(&in_name, in_layer)
                                    ),
                                    ispan,
                                    format!("`{}` expects {i} input channels", name.text),
                                )
                                .secondary(
                                    in_def,
                                    format!("`{in_name}`, declared here, gives {c} channels"),
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
                let out = self.size(out, positional.get(1).map_or(op.span, |a| a.span))?;
                let kspan = opts.get("kernel").map_or(op.span, |v| v.span);
                let [oh, ow] =
                    self.out_hw([h, w], kernel, stride, padding, kspan, &in_name, &in_shape)?;
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
                    inputs: vec![in_name],
                    in_shape,
                    out_shape: vec![out, oh, ow],
                };
                return (!failed).then_some(layer);
            }
            "maxpool2d" | "avgpool2d" => {
                let (kernel, stride, _) = self.window_opts(&opts, op, false);
                let [c, h, w] =
                    self.need_3d(op_text, &in_name, &in_shape, in_arg, in_def, in_layer, cx)?;
                let (kernel, stride) = (kernel?, stride?);
                let kspan = opts.get("kernel").map_or(op.span, |v| v.span);
                let [oh, ow] =
                    self.out_hw([h, w], kernel, stride, [0, 0], kspan, &in_name, &in_shape)?;
                let kind = if op_text == "maxpool2d" {
                    LayerKind::MaxPool2d { kernel, stride }
                } else {
                    LayerKind::AvgPool2d { kernel, stride }
                };
                let layer = Layer {
                    name: name.text.clone(),
                    kind,
                    inputs: vec![in_name],
                    in_shape,
                    out_shape: vec![c, oh, ow],
                };
                return (!failed).then_some(layer);
            }
            "flatten" => LayerKind::Flatten,
            "relu" => LayerKind::Relu,
            "tanh" => LayerKind::Tanh,
            "sigmoid" => LayerKind::Sigmoid,
            _ => {
                // add
                let (b_name, b_shape, b_def, b_layer, b_arg) = ins.get(1).cloned()?;
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
                            format!("{} is declared here", producer(&in_name, in_layer)),
                        )
                        .secondary(
                            b_def,
                            format!("{} is declared here", producer(&b_name, b_layer)),
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
                return (!failed).then_some(layer);
            }
        };
        let out_shape = match &kind {
            LayerKind::Dense { outputs, .. } => vec![*outputs],
            LayerKind::Flatten => vec![in_shape.iter().product()],
            _ => in_shape.clone(),
        };
        let layer = Layer {
            name: name.text.clone(),
            kind,
            inputs: vec![in_name],
            in_shape,
            out_shape,
        };
        (!failed).then_some(layer)
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
    fn width(&mut self, v: &Value, op: &str) -> Option<Width> {
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

    /// A width that must fit in a tensor.
    fn size(&mut self, n: u64, span: Span) -> Option<usize> {
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

    fn tensor_ok(&mut self, dims: &[u64], name: &Name, what: &str) -> Option<()> {
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

    #[allow(clippy::too_many_arguments)]
    fn need_3d(
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
    fn out_hw(
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

    /// `loss FUNC(NAME)` → (logits name, its declaration, classes).
    fn loss(
        &mut self,
        func: &Name,
        args: &[Arg],
        span: Span,
        cx: &LayerCx<'_>,
    ) -> (Option<(String, Span, usize)>, Vec<String>) {
        let _ = span;
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

    /// Reports layers whose output reaches neither another layer nor the loss.
    fn dead_layers(
        &mut self,
        m: &Model,
        defs: &HashMap<&str, (usize, Span)>,
        reads: &[(String, Vec<String>)],
        used: &HashSet<String>,
        logits: &str,
    ) {
        // Reads graph over first definitions: layer name → names it reads.
        let mut graph: HashMap<&str, Vec<&str>> = HashMap::new();
        for (n, r) in reads {
            graph
                .entry(n.as_str())
                .or_default()
                .extend(r.iter().map(String::as_str));
        }
        let mut live: HashSet<&str> = HashSet::new();
        let mut stack = vec![logits];
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                if let Some(rs) = graph.get(n) {
                    stack.extend(rs.iter().copied());
                }
            }
        }
        for (i, s) in m.stmts.iter().enumerate() {
            let Stmt::Layer { name, .. } = s else {
                continue;
            };
            if defs.get(name.text.as_str()).is_none_or(|&(j, _)| j != i) {
                continue;
            }
            if used.contains(&name.text) || name.text == logits {
                continue;
            }
            // Dead ancestors only this sink keeps "alive".
            let mut dead: Vec<&str> = Vec::new();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut stack: Vec<&str> = graph.get(name.text.as_str()).cloned().unwrap_or_default();
            while let Some(n) = stack.pop() {
                if dead.len() > 12 {
                    break; // enough for the note; keeps this linear
                }
                if live.contains(n) || !seen.insert(n) || !defs.contains_key(n) {
                    continue;
                }
                dead.push(n);
                if let Some(rs) = graph.get(n) {
                    stack.extend(rs.iter().copied());
                }
            }
            let mut d = error(
                "E0210",
                format!("layer `{}` is never used", name.text),
                name.span,
                "its output is never read",
            )
            .note(format!(
                "only layers that feed the loss (through `{logits}`) take part in training"
            ));
            if !dead.is_empty() {
                dead.sort_by_key(|n| defs.get(n).map_or(0, |d| d.0));
                d = d.note(format!(
                    "so these layers do not contribute to the loss either: {}",
                    list_names(dead)
                ));
            }
            self.push(d.help("remove it, or read it in another layer or in the loss"));
        }
    }

    // ----- data -----------------------------------------------------------------------------

    fn data(&mut self, d: &DataItem) -> Option<DataSpec> {
        let kind = d.kind.text.as_str();
        match kind {
            "fashion_mnist" => {
                let opts = self.block_opts(d.block.as_ref(), &["dir"], "`fashion_mnist` data");
                let dir = match opts.get("dir") {
                    Some(v) => Some(self.dir(v)?),
                    None => None,
                };
                Some(DataSpec::FashionMnist { dir })
            }
            "idx" => {
                let opts = self.block_opts(d.block.as_ref(), &["dir"], "`idx` data");
                match opts.get("dir") {
                    Some(v) => Some(DataSpec::Idx { dir: self.dir(v)? }),
                    None => {
                        self.missing(
                            d.kind.span,
                            "option `dir` for `idx` data",
                            "e.g. `data idx { dir: \"path/to/idx\" }`",
                        );
                        None
                    }
                }
            }
            "synthetic" => {
                let opts = self.block_opts(
                    d.block.as_ref(),
                    &["train_samples", "test_samples", "seed"],
                    "`synthetic` data",
                );
                let train = opts
                    .get("train_samples")
                    .map_or(Some(1024), |v| self.uint(v, "train_samples", 1));
                let test = opts
                    .get("test_samples")
                    .map_or(Some(256), |v| self.uint(v, "test_samples", 1));
                let seed = opts
                    .get("seed")
                    .map_or(Some(0), |v| self.uint(v, "seed", 0));
                Some(DataSpec::Synthetic {
                    train_samples: train?,
                    test_samples: test?,
                    seed: seed?,
                })
            }
            _ => {
                self.unknown(
                    "E0214",
                    format!("unknown data kind `{kind}`"),
                    (kind, d.kind.span),
                    "unknown data kind",
                    DATA_KINDS.iter().copied(),
                    Listing::Always(format!("data kinds: {}", DATA_KINDS.join(", "))),
                );
                None
            }
        }
    }

    fn dir(&mut self, v: &Value) -> Option<String> {
        let s = self.string(v, "dir")?;
        if s.is_empty() {
            self.push(error(
                "E0408",
                "`dir` must not be empty",
                v.span,
                "empty path",
            ));
            return None;
        }
        Some(s)
    }

    /// The model must match a data set whose shapes are known (Fashion-MNIST: 784 inputs, 10 classes).
    fn data_fits(&mut self, net: &Net, spec: &DataSpec, item: Option<&DataItem>) {
        if !matches!(spec, DataSpec::FashionMnist { .. }) {
            return;
        }
        let where_ = |d: Diag| -> Diag {
            match item {
                Some(i) => d.secondary(i.kind.span, "Fashion-MNIST: 28×28 images, 10 classes"),
                None => d.note("without a `data` block the data set is fashion_mnist (28×28 images, 10 classes)"),
            }
        };
        let elems: usize = net.input.shape.iter().product();
        if elems != 784 {
            let d = error(
                "E0311",
                format!(
                    "Fashion-MNIST samples have 784 values, but input `{}` is {}",
                    net.input.name,
                    shape_str(&net.input.shape)
                ),
                net.input_span,
                format!("{elems} values per sample"),
            )
            .help("use `[1, 28, 28]` (or `[784]`), or `data synthetic` for other shapes");
            self.push(where_(d));
        }
        if let (Some((logits, def)), true) = (&net.logits, net.classes != 10) {
            if net.classes >= 2 {
                let d = error(
                    "E0311",
                    format!(
                        "Fashion-MNIST has 10 classes, but `{logits}` gives {}",
                        net.classes
                    ),
                    net.loss_span.unwrap_or(*def),
                    format!("{} classes", net.classes),
                )
                .secondary(*def, format!("`{logits}` is declared here"));
                self.push(where_(d));
            }
        }
    }

    // ----- train ----------------------------------------------------------------------------

    /// Every value of the network times the batch must still fit in one tensor.
    fn batch_fits(&mut self, net: &Net, batch: u64, batch_span: Span) {
        let values = std::iter::once((net.input.name.as_str(), net.input.shape.as_slice())).chain(
            net.layers
                .iter()
                .map(|l| (l.name.as_str(), l.out_shape.as_slice())),
        );
        let largest =
            values.max_by_key(|(_, shape)| shape.iter().map(|&d| d as u64).product::<u64>());
        let Some((name, shape)) = largest else {
            return;
        };
        let per_sample: u64 = shape.iter().map(|&d| d as u64).product();
        if per_sample
            .checked_mul(batch)
            .is_none_or(|n| n > MAX_TENSOR_ELEMENTS)
        {
            self.push(
                error(
                    "E0309",
                    format!("a batch of {batch} makes `{name}` too large"),
                    batch_span,
                    format!("{batch} × {per_sample} elements is more than 2^31"),
                )
                .note(format!(
                    "a tensor is limited to 2^31 ({MAX_TENSOR_ELEMENTS}) elements; `{name}` has {per_sample} per sample"
                )),
            );
        }
    }

    fn train(&mut self, t: &TrainItem) -> (Option<TrainSpec>, TrainFacts) {
        let opts = self.block_opts(Some(&t.block), TRAIN_KEYS, "`train`");
        let epochs = opts
            .get("epochs")
            .map_or(Some(10), |v| self.uint(v, "epochs", 1));
        let facts = TrainFacts {
            epochs,
            epochs_span: opts.get("epochs").map(|v| v.span),
            batch_span: opts.get("batch").map_or(t.keyword, |v| v.span),
        };
        let batch = opts
            .get("batch")
            .map_or(Some(64), |v| self.uint(v, "batch", 1));
        let seed = opts
            .get("seed")
            .map_or(Some(0), |v| self.uint(v, "seed", 0));
        let log_every = opts
            .get("log_every")
            .map_or(Some(100), |v| self.uint(v, "log_every", 1));
        let optimizer = match opts.get("optimizer") {
            Some(v) => self.optimizer(v),
            None => {
                self.push(
                    error(
                        "E0402",
                        "missing option `optimizer` in `train`",
                        t.keyword,
                        "`optimizer` is required",
                    )
                    .help("add e.g. `optimizer: sgd(lr: 0.1, momentum: 0.9)`"),
                );
                None
            }
        };
        let schedule = match opts.get("schedule") {
            Some(v) => self.schedule(v),
            None => Some(Schedule::Constant),
        };
        let _ = opts.key_span("epochs");
        let spec = (|| {
            Some(TrainSpec {
                epochs: epochs?,
                batch: batch?,
                seed: seed?,
                log_every: log_every?,
                optimizer: optimizer?,
                schedule: schedule?,
            })
        })();
        (spec, facts)
    }

    fn optimizer(&mut self, v: &Value) -> Option<Optimizer> {
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
            Some(v) => self.float_in(v, "lr", |x| x > 0.0, "`lr` must be > 0"),
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
            self.float_in(
                v,
                "momentum",
                |x| (0.0..1.0).contains(&x),
                "`momentum` must be in 0 ≤ momentum < 1",
            )
        });
        let wd = opts.get("weight_decay").map_or(Some(0.0), |v| {
            self.float_in(
                v,
                "weight_decay",
                |x| x >= 0.0,
                "`weight_decay` must be ≥ 0",
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

    fn schedule(&mut self, v: &Value) -> Option<Schedule> {
        let (func, args): (&Name, &[Arg]) = match &v.kind {
            ValueKind::Call { func, args } => (func, args),
            ValueKind::Ident(n) => {
                return match n.as_str() {
                    "constant" => Some(Schedule::Constant),
                    "step" => {
                        self.missing(
                            v.span,
                            "arguments of `step`",
                            "write `step(every: 10, gamma: 0.1)`",
                        );
                        None
                    }
                    "multistep" => {
                        self.missing(
                            v.span,
                            "arguments of `multistep`",
                            "write `multistep(milestones: [10, 15], gamma: 0.1)`",
                        );
                        None
                    }
                    _ => {
                        self.unknown_schedule(n, v.span);
                        None
                    }
                };
            }
            _ => {
                self.wrong_type(
                    v,
                    "a schedule (`constant`, `step(...)` or `multistep(...)`)",
                    "the learning-rate schedule",
                );
                return None;
            }
        };
        let gamma = |cx: &mut Checker, opts: &Opts<'_>| match opts.get("gamma") {
            Some(v) => cx.float_in(
                v,
                "gamma",
                |x| x > 0.0 && x <= 1.0,
                "`gamma` must be in 0 < gamma ≤ 1",
            ),
            None => {
                if !opts.had_positional {
                    cx.missing(
                        func.span,
                        format!("`gamma` for `{}`", func.text).as_str(),
                        "e.g. `gamma: 0.1`",
                    );
                }
                None
            }
        };
        match func.text.as_str() {
            "constant" => {
                self.call_opts(func, args, &[], "`constant`");
                Some(Schedule::Constant)
            }
            "step" => {
                let opts = self.call_opts(func, args, &["every", "gamma"], "`step`");
                let every = match opts.get("every") {
                    Some(v) => self.uint(v, "every", 1),
                    None => {
                        if !opts.had_positional {
                            self.missing(
                                func.span,
                                "`every` for `step`",
                                "e.g. `step(every: 10, gamma: 0.1)`",
                            );
                        }
                        None
                    }
                };
                let gamma = gamma(self, &opts);
                Some(Schedule::Step {
                    every: every?,
                    gamma: gamma?,
                })
            }
            "multistep" => {
                let opts = self.call_opts(func, args, &["milestones", "gamma"], "`multistep`");
                let milestones = match opts.get("milestones") {
                    Some(v) => self.epoch_list(v, "milestones", None),
                    None => {
                        if !opts.had_positional {
                            self.missing(
                                func.span,
                                "`milestones` for `multistep`",
                                "e.g. `multistep(milestones: [10, 15], gamma: 0.1)`",
                            );
                        }
                        None
                    }
                };
                let gamma = gamma(self, &opts);
                Some(Schedule::MultiStep {
                    milestones: milestones?,
                    gamma: gamma?,
                })
            }
            other => {
                self.unknown_schedule(other, func.span);
                None
            }
        }
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

    /// Both spellings of a schedule (`step` and `step(...)`) report an unknown one alike.
    fn unknown_schedule(&mut self, name: &str, span: Span) {
        self.unknown(
            "E0410",
            format!("unknown schedule `{name}`"),
            (name, span),
            "unknown schedule",
            SCHEDULES.iter().copied(),
            Listing::Always(format!("schedules: {}", SCHEDULES.join(", "))),
        );
    }

    /// A non-empty, strictly increasing list of epochs, each ≥ 1 and (when `epochs` is given)
    /// ≤ epochs.
    fn epoch_list(
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

    /// Check that `x` (at `span`) is greater than the previous list entry, reporting E0413 if
    /// not; `prev` then becomes `x`.
    fn increasing<T: PartialOrd + Copy>(
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

    // ----- method ---------------------------------------------------------------------------

    fn method(
        &mut self,
        m: &MethodItem,
        net: Option<&Net>,
        facts: &TrainFacts,
    ) -> Option<MethodSpec> {
        let kind = m.kind.text.as_str();
        let block = m.block.as_ref();
        let epochs = facts.epochs.map(|e| (e, facts.epochs_span));
        // Selectors are resolved only against a network that checked completely.
        let net = net.filter(|n| n.complete && n.logits.is_some());
        let output = net.and_then(|n| n.logits.as_ref().map(|l| l.0.clone()));
        match kind {
            "dropback" => {
                let opts = self.block_opts(
                    block,
                    &["k", "scope", "freeze_after", "decay_init", "on"],
                    "`dropback`",
                );
                let k = match opts.get("k") {
                    Some(v) => self.uint(v, "k", 1).map(|k| (k, v.span)),
                    None => {
                        self.missing(
                            m.kind.span,
                            "option `k` for `dropback`",
                            "give the number of tracked weights, e.g. `k: 10_664`",
                        );
                        None
                    }
                };
                let scope = match opts.get("scope") {
                    None => Some(DropbackScope::Global),
                    Some(v) => match &v.kind {
                        ValueKind::Ident(s) if s == "global" => Some(DropbackScope::Global),
                        ValueKind::Ident(s) if s == "per_layer" => Some(DropbackScope::PerLayer),
                        ValueKind::Ident(s) => {
                            self.unknown(
                                "E0411",
                                format!("unknown scope `{s}`"),
                                (s, v.span),
                                "not a scope",
                                SCOPES.iter().copied(),
                                Listing::Always(format!("scopes: {}", SCOPES.join(", "))),
                            );
                            None
                        }
                        _ => {
                            self.wrong_type(v, "`global` or `per_layer`", "the scope of `k`");
                            None
                        }
                    },
                };
                let freeze_after = match opts.get("freeze_after") {
                    None => Some(None),
                    Some(v) => self.epoch_list_one(v, "freeze_after", epochs).map(Some),
                };
                let decay_init = match opts.get("decay_init") {
                    None => Some(None),
                    Some(v) => self
                        .float_in(
                            v,
                            "decay_init",
                            |x| x > 0.0 && x < 1.0,
                            "`decay_init` must be in 0 < decay_init < 1",
                        )
                        .map(Some),
                };
                let layers = self.selection(&opts, net, None, m);
                if let (Some((k, kspan)), Some(layers), Some(net)) = (k, &layers, net) {
                    let total: u64 = layers
                        .iter()
                        .filter_map(|n| net.layer(n))
                        .map(Layer::param_count)
                        .fold(0u64, u64::saturating_add);
                    if k > total {
                        let per: Vec<String> = layers
                            .iter()
                            .filter_map(|n| net.layer(n))
                            .map(|l| format!("{} ({})", l.name, l.param_count()))
                            .collect();
                        self.push(
                            error(
                                "E0505",
                                format!("`k` = {k} is larger than the {total} parameters of the selected layers"),
                                kspan,
                                format!("at most {total}"),
                            )
                            .note(format!("selected: {}", list_names(per.iter().map(String::as_str))))
                            .help("with `k` equal to the parameter count Dropback is plain dense training"),
                        );
                        return None;
                    }
                }
                let (k, _) = k?;
                Some(MethodSpec {
                    method: Method::Dropback {
                        k,
                        scope: scope?,
                        freeze_after: freeze_after?,
                        decay_init: decay_init?,
                    },
                    layers: layers?,
                })
            }
            "admm" => {
                let opts = self.block_opts(
                    block,
                    &[
                        "keep",
                        "rho",
                        "rho_growth",
                        "rounds",
                        "epochs_per_round",
                        "retrain_epochs",
                        "stages",
                        "on",
                    ],
                    "`admm`",
                );
                let rho = opts.get("rho").map_or(Some(1e-3), |v| {
                    self.float_in(v, "rho", |x| x > 0.0, "`rho` must be > 0")
                });
                let rho_growth = opts.get("rho_growth").map_or(Some(1.3), |v| {
                    self.float_in(v, "rho_growth", |x| x >= 1.0, "`rho_growth` must be ≥ 1")
                });
                let rounds = opts
                    .get("rounds")
                    .map_or(Some(4), |v| self.uint(v, "rounds", 1));
                let epr = opts
                    .get("epochs_per_round")
                    .map_or(Some(2), |v| self.uint(v, "epochs_per_round", 1));
                let retrain = opts
                    .get("retrain_epochs")
                    .map_or(Some(4), |v| self.uint(v, "retrain_epochs", 0));
                let stages = match opts.get("stages") {
                    None => Some(Vec::new()),
                    Some(v) => self.stages(v),
                };
                let keep = self.keep(&opts, net, m);
                Some(MethodSpec {
                    method: Method::Admm {
                        keep: keep.as_ref()?.0.clone(),
                        rho: rho?,
                        rho_growth: rho_growth?,
                        rounds: rounds?,
                        epochs_per_round: epr?,
                        retrain_epochs: retrain?,
                        stages: stages?,
                    },
                    layers: keep?.1,
                })
            }
            "prunetrain" => {
                let opts = self.block_opts(
                    block,
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
                let layers =
                    self.selection(&opts, net, output.as_deref().map(|o| (o, "prunetrain")), m);
                Some(MethodSpec {
                    method: Method::PruneTrain {
                        ratio: ratio?,
                        interval: interval?,
                        threshold: threshold?,
                    },
                    layers: layers?,
                })
            }
            "activation_density" => {
                let opts = self.block_opts(
                    block,
                    &["resize_at", "min_width", "on"],
                    "`activation_density`",
                );
                let resize_at = match opts.get("resize_at") {
                    Some(v) => self.epoch_list(v, "resize_at", epochs),
                    None => {
                        self.missing(
                            m.kind.span,
                            "option `resize_at` for `activation_density`",
                            "list the resize epochs, e.g. `resize_at: [2, 4, 6]`",
                        );
                        None
                    }
                };
                let min_width = opts
                    .get("min_width")
                    .map_or(Some(1), |v| self.uint(v, "min_width", 1));
                let layers = self.selection(
                    &opts,
                    net,
                    output.as_deref().map(|o| (o, "activation_density")),
                    m,
                );
                Some(MethodSpec {
                    method: Method::ActivationDensity {
                        resize_at: resize_at?,
                        min_width: min_width?,
                    },
                    layers: layers?,
                })
            }
            _ => {
                self.unknown(
                    "E0215",
                    format!("unknown method `{kind}`"),
                    (kind, m.kind.span),
                    "unknown method",
                    METHODS.iter().copied(),
                    Listing::Always(format!("methods: {}", METHODS.join(", "))),
                );
                None
            }
        }
    }

    /// One epoch in 1..=epochs.
    fn epoch_list_one(
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

    fn stages(&mut self, v: &Value) -> Option<Vec<f64>> {
        let ValueKind::List(items) = &v.kind else {
            self.wrong_type(
                v,
                "a list of compression factors like `[10, 30, 71]`",
                "`stages` must be a list",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        let mut prev: Option<(f64, Span)> = None;
        for item in items {
            let Some(x) =
                self.float_in(item, "stages", |x| x > 1.0, "each of `stages` must be > 1")
            else {
                ok = false;
                continue;
            };
            ok &= self.increasing("stages", &mut prev, x, item.span, fmt_f, "previous stage");
            out.push(x);
        }
        ok.then_some(out)
    }

    /// ADMM's `keep` and the selection it goes with.
    fn keep(
        &mut self,
        opts: &Opts<'_>,
        net: Option<&Net>,
        m: &MethodItem,
    ) -> Option<(KeepRatio, Vec<String>)> {
        let ratio = |cx: &mut Checker, v: &Value| {
            cx.float_in(
                v,
                "keep",
                |x| x > 0.0 && x <= 1.0,
                "`keep` must be in 0 < keep ≤ 1",
            )
        };
        let Some(v) = opts.get("keep") else {
            self.missing(
                m.kind.span,
                "option `keep` for `admm`",
                "give a keep ratio, e.g. `keep: 0.05` or `keep: { fc1: 0.01, fc2: 0.1 }`",
            );
            self.selection(opts, net, None, m);
            return None;
        };
        match &v.kind {
            ValueKind::Map(entries) => {
                let items: Vec<(&Name, &Value)> =
                    entries.iter().map(|o| (&o.key, &o.value)).collect();
                // Duplicate keys.
                let mut seen: Vec<(&str, Span)> = Vec::new();
                let mut seen_map: HashMap<&str, Span> = HashMap::new();
                let mut ratios: Vec<(String, f64, Span)> = Vec::new();
                let mut ok = true;
                for (k, val) in items {
                    if k.text.is_empty() {
                        ok = false;
                        continue;
                    }
                    if let Some(first) = seen_map.get(k.text.as_str()) {
                        self.push(
                            error(
                                "E0405",
                                format!("layer `{}` is given more than once in `keep`", k.text),
                                k.span,
                                "given again here",
                            )
                            .secondary(*first, "first given here"),
                        );
                        ok = false;
                        continue;
                    }
                    seen.push((k.text.as_str(), k.span));
                    seen_map.insert(k.text.as_str(), k.span);
                    match ratio(self, val) {
                        Some(r) => ratios.push((k.text.clone(), r, k.span)),
                        None => ok = false,
                    }
                }
                if entries.is_empty() {
                    self.range_err(v.span, "`keep` must name at least one layer", "`{}`");
                    return None;
                }
                let explicit = opts.get("on").is_some();
                let selected = if explicit {
                    self.selection(opts, net, None, m)
                } else {
                    None
                };
                let net = net?;
                let selectable: Vec<&str> = net
                    .layers
                    .iter()
                    .filter(|l| l.has_params())
                    .map(|l| l.name.as_str())
                    .collect();
                if !explicit {
                    // Without `on`, the map's keys are the selection.
                    let mut layers = Vec::new();
                    for &(k, span) in &seen {
                        match net.layer(k) {
                            Some(l) if l.has_params() => layers.push(k.to_string()),
                            Some(l) => {
                                self.push(
                                    error(
                                        "E0502",
                                        format!(
                                            "`{k}` is a `{}` layer, which has no parameters",
                                            l.kind.op_name()
                                        ),
                                        span,
                                        "nothing to prune",
                                    )
                                    .note(format!(
                                        "layers with parameters: {}",
                                        list_names(selectable.iter().copied())
                                    )),
                                );
                                ok = false;
                            }
                            None => {
                                self.unknown(
                                    "E0503",
                                    format!("`keep` names `{k}`, which is not a layer"),
                                    (k, span),
                                    "no such layer",
                                    selectable.iter().copied(),
                                    Listing::Always(format!(
                                        "layers with parameters: {}",
                                        list_names(selectable.iter().copied())
                                    )),
                                );
                                ok = false;
                            }
                        }
                    }
                    // Declaration order.
                    let chosen: HashSet<&String> = layers.iter().collect();
                    let order: Vec<String> = net
                        .layers
                        .iter()
                        .map(|l| l.name.clone())
                        .filter(|n| chosen.contains(n))
                        .collect();
                    if !ok {
                        return None;
                    }
                    return Some((
                        KeepRatio::PerLayer(ratios.into_iter().map(|(n, r, _)| (n, r)).collect()),
                        order,
                    ));
                }
                let selected = selected?;
                let selected_set: HashSet<&String> = selected.iter().collect();
                for (k, _, span) in &ratios {
                    if selected_set.contains(k) {
                        continue;
                    }
                    let listing = format!(
                        "selected layers: {}",
                        list_names(selected.iter().map(String::as_str))
                    );
                    if net.layer(k).is_some() {
                        self.push(
                            error(
                                "E0503",
                                format!("`keep` names `{k}`, which `on` does not select"),
                                *span,
                                "not selected",
                            )
                            .note(listing),
                        );
                    } else {
                        self.unknown(
                            "E0503",
                            format!("`keep` names `{k}`, which is not a layer"),
                            (k, *span),
                            "no such layer",
                            selected.iter().map(String::as_str),
                            Listing::Always(listing),
                        );
                    }
                    ok = false;
                }
                for s in &selected {
                    if !seen_map.contains_key(s.as_str()) {
                        self.push(
                            error(
                                "E0506",
                                format!("layer `{s}` is selected but has no keep ratio"),
                                v.span,
                                format!("no entry for `{s}`"),
                            )
                            .help(format!(
                                "add `{s}: RATIO` to `keep`, or leave `{s}` out of `on`"
                            )),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                Some((
                    KeepRatio::PerLayer(ratios.into_iter().map(|(n, r, _)| (n, r)).collect()),
                    selected,
                ))
            }
            ValueKind::Int { .. } | ValueKind::Float { .. } => {
                let r = ratio(self, v);
                let layers = self.selection(opts, net, None, m);
                Some((KeepRatio::All(r?), layers?))
            }
            _ => {
                self.wrong_type(
                    v,
                    "a keep ratio or a map `{ layer: ratio }`",
                    "`keep` must be a number or a map",
                );
                self.selection(opts, net, None, m);
                None
            }
        }
    }

    /// Resolves `on` (default: every layer with parameters, minus the protected output layer).
    /// Returns layer names in declaration order. `protect` = (output layer, method name).
    fn selection(
        &mut self,
        opts: &Opts<'_>,
        net: Option<&Net>,
        protect: Option<(&str, &str)>,
        m: &MethodItem,
    ) -> Option<Vec<String>> {
        let _ = m;
        let Some(v) = opts.get("on") else {
            let net = net?;
            let out: Vec<String> = net
                .layers
                .iter()
                .filter(|l| l.has_params() && protect.is_none_or(|(o, _)| o != l.name))
                .map(|l| l.name.clone())
                .collect();
            if out.is_empty() {
                self.push(
                    error("E0501", "no layer to apply the method to", m.kind.span, "nothing selectable")
                        .note("only layers with parameters (`dense`, `conv2d`) can be selected, and never the output layer here"),
                );
                return None;
            }
            return Some(out);
        };
        let selectors: Vec<&Value> = match &v.kind {
            ValueKind::List(items) => items.iter().collect(),
            _ => vec![v],
        };
        // Check selector syntax even without a network.
        let mut ok = true;
        for s in &selectors {
            match &s.kind {
                ValueKind::Ident(_) | ValueKind::Glob(_) | ValueKind::Kind(_) => {}
                _ => {
                    self.wrong_type(
                        s,
                        "a selector (a layer name, a glob like `fc*` or a kind like `@dense`)",
                        "not a selector",
                    );
                    ok = false;
                }
            }
        }
        if selectors.is_empty() {
            self.push(error(
                "E0501",
                "`on: []` selects no layer",
                v.span,
                "empty selection",
            ));
            return None;
        }
        let net = net?;
        if !ok {
            return None;
        }
        let selectable: Vec<&str> = net
            .layers
            .iter()
            .filter(|l| l.has_params() && protect.is_none_or(|(o, _)| o != l.name))
            .map(|l| l.name.as_str())
            .collect();
        let selectable_set: HashSet<&str> = selectable.iter().copied().collect();
        let selectable_note = || {
            if selectable.is_empty() {
                "no layer can be selected".to_string()
            } else {
                format!(
                    "selectable layers: {}",
                    list_names(selectable.iter().copied())
                )
            }
        };
        let mut chosen: HashSet<String> = HashSet::new();
        for s in selectors {
            match &s.kind {
                ValueKind::Ident(name) => match net.layer(name) {
                    Some(l) if !l.has_params() => {
                        self.push(
                            error(
                                "E0502",
                                format!(
                                    "`{name}` is a `{}` layer, which has no parameters",
                                    l.kind.op_name()
                                ),
                                s.span,
                                "no parameters",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    Some(l) => {
                        if let Some((o, method)) = protect {
                            if l.name == o {
                                let d = error(
                                    "E0504",
                                    format!("`{method}` cannot shrink the output layer `{o}`"),
                                    s.span,
                                    "the output layer",
                                )
                                .secondary(
                                    net.logits.as_ref().map_or(s.span, |x| x.1),
                                    format!("`{o}` feeds the loss"),
                                )
                                .note("the output layer keeps one unit per class");
                                self.push(d.note(selectable_note()));
                                ok = false;
                                continue;
                            }
                        }
                        chosen.insert(name.clone());
                    }
                    None if *name == net.input.name => {
                        self.push(
                            error(
                                "E0502",
                                format!("`{name}` is the input, which has no parameters"),
                                s.span,
                                "the input",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    None => {
                        self.unknown(
                            "E0501",
                            format!("no layer named `{name}`"),
                            (name, s.span),
                            "matches nothing",
                            selectable.iter().copied(),
                            Listing::Always(selectable_note()),
                        );
                        ok = false;
                    }
                },
                ValueKind::Glob(g) => {
                    let all: Vec<&Layer> = net
                        .layers
                        .iter()
                        .filter(|l| glob_match(g, &l.name))
                        .collect();
                    let hits: Vec<&str> = all
                        .iter()
                        .map(|l| l.name.as_str())
                        .filter(|n| selectable_set.contains(n))
                        .collect();
                    if hits.is_empty() {
                        let mut d = error(
                            "E0501",
                            format!("`{g}` matches no layer with parameters"),
                            s.span,
                            "matches nothing",
                        );
                        if !all.is_empty() {
                            d = d.note(format!(
                                "it matches only: {}",
                                list_names(all.iter().map(|l| l.name.as_str()))
                            ));
                        }
                        self.push(d.note(selectable_note()));
                        ok = false;
                    }
                    chosen.extend(hits.into_iter().map(str::to_string));
                }
                ValueKind::Kind(k) => {
                    if !OPS.contains(&k.as_str()) {
                        self.unknown(
                            "E0507",
                            format!("unknown layer kind `@{k}`"),
                            (k, s.span),
                            "unknown kind",
                            PARAM_OPS.iter().copied(),
                            Listing::Always(format!(
                                "selectable kinds: {}",
                                PARAM_OPS
                                    .iter()
                                    .map(|k| format!("@{k}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                    if !PARAM_OPS.contains(&k.as_str()) {
                        self.push(
                            error(
                                "E0502",
                                format!("`@{k}` layers have no parameters"),
                                s.span,
                                "no parameters",
                            )
                            .note(format!(
                                "selectable kinds: {}",
                                PARAM_OPS
                                    .iter()
                                    .map(|k| format!("@{k}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                    let hits: Vec<&str> = net
                        .layers
                        .iter()
                        .filter(|l| l.kind.op_name() == k)
                        .map(|l| l.name.as_str())
                        .filter(|n| selectable_set.contains(n))
                        .collect();
                    if hits.is_empty() {
                        self.push(
                            error(
                                "E0501",
                                format!("`@{k}` matches no layer"),
                                s.span,
                                "matches nothing",
                            )
                            .note(selectable_note()),
                        );
                        ok = false;
                    }
                    chosen.extend(hits.into_iter().map(str::to_string));
                }
                _ => {}
            }
        }
        if !ok {
            return None;
        }
        Some(
            net.layers
                .iter()
                .filter(|l| chosen.contains(&l.name))
                .map(|l| l.name.clone())
                .collect(),
        )
    }
}

enum Avail {
    Ok {
        shape: Vec<usize>,
        span: Span,
        layer: Option<usize>,
    },
    Failed,
}

struct LayerCx<'a> {
    index: usize,
    has_input: bool,
    defs: &'a HashMap<&'a str, (usize, Span)>,
    values: &'a HashMap<String, Avail>,
    layers: &'a [Layer],
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("fc*", "fc1"));
        assert!(glob_match("fc*", "fc"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("conv*_a", "conv12_a"));
        assert!(!glob_match("conv*_a", "conv12_b"));
        assert!(glob_match("*1", "fc1"));
        assert!(!glob_match("fc*", "conv1"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
