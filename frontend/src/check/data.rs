//! The `data` block, and whether the network fits a data set of known shape.

use super::net::Net;
use super::text::shape_str;
use super::{Checker, Listing};
use crate::ast::*;
use crate::diag::{error, Diag, DiagExt};
use sparsec_ir::spec::DataSpec;

const DATA_KINDS: &[&str] = &["fashion_mnist", "idx", "synthetic"];

impl Checker {
    pub(super) fn data(&mut self, d: &DataItem) -> Option<DataSpec> {
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
    pub(super) fn data_fits(&mut self, net: &Net, spec: &DataSpec, item: Option<&DataItem>) {
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
}
