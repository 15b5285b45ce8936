//! The checker: names, structure, shapes, options, ranges, methods and selectors.
//!
//! It collects as many errors as it can in one pass but never cascades: a layer whose input
//! failed to check is skipped silently, and checks that depend on a part that failed are not run.
//!
//! One block per part of a model file: `net/` (the `model` block), `data.rs`, `train/` and
//! `method/` (one file per sparse-training method). `values.rs`, `opts.rs` and `epochs.rs` read
//! the values, options and epoch lists all of them take; `text.rs` words their messages.

mod data;
mod epochs;
mod method;
mod net;
mod opts;
mod text;
mod train;
mod values;

use crate::ast::*;
use crate::diag::{did_you_mean, error, Diag, DiagExt};
use crate::model::CheckedModel;
use sparsec_ir::spec::DataSpec;
use train::TrainFacts;

/// Largest number of elements in any single tensor (per sample for activations).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;
/// Largest total number of parameters (E0313): a bound on absurd sizes, not on memory.
pub const MAX_TOTAL_PARAMS: u64 = 1 << 40;
/// Largest number of parameters a model stores (E0310): every parameter but those of a
/// Dropback method's layers, which are regenerated from their seed and never stored (whether a
/// model fits the machine's memory is checked when it trains).
pub const MAX_STORED_PARAMS: u64 = 1 << 32;

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

/// The note an "unknown name" error ends with, naming what does exist.
enum Listing {
    Always(String),
    /// Only when there is no suggestion: a short list is no help next to a close match.
    Otherwise(Option<String>),
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

    /// Each block at most once, each checked on its own, then the checks that need two of them
    /// (the data set and the batch against the network).
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
        if let (Some(net), Some(method)) = (&net, &method_spec) {
            self.stored_params_fit(net, method.as_ref());
        }
        if let (Some(net), Some(spec)) = (&net, &data_spec) {
            self.data_fits(net, spec, data);
        }
        if let (Some(net), Some(train)) = (&net, &train_spec) {
            self.batch_fits(net, train.batch, facts.batch_span);
        }
        if let (Some(DataSpec::Synthetic { train_samples, .. }), Some(train)) =
            (&data_spec, &train_spec)
        {
            // Training drops a last partial batch: fewer samples than one batch train nothing.
            if *train_samples < train.batch {
                self.push(
                    error(
                        "E0415",
                        "the training set is smaller than one batch",
                        facts.batch_span,
                        format!("a batch of {}", train.batch),
                    )
                    .note(format!(
                        "the synthetic data has {train_samples} training samples; a run trains \
                         on whole batches"
                    )),
                );
            }
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
}
