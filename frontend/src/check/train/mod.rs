//! The `train` block: epochs, batch, seed, logging, optimizer and schedule.

mod optimizer;
mod schedule;

use super::net::Net;
use super::{Checker, MAX_TENSOR_ELEMENTS};
use crate::ast::*;
use crate::diag::{error, DiagExt};
use sparsec_ir::spec::{Schedule, TrainSpec};

const TRAIN_KEYS: &[&str] = &[
    "epochs",
    "batch",
    "seed",
    "log_every",
    "optimizer",
    "schedule",
];

/// Training facts the method checks need.
pub(super) struct TrainFacts {
    pub(super) epochs: Option<u64>,
    pub(super) epochs_span: Option<Span>,
    /// Where the batch size is written (the `train` keyword when it is the default).
    pub(super) batch_span: Span,
}

impl Checker {
    /// Every value of the network times the batch must still fit in one tensor.
    pub(super) fn batch_fits(&mut self, net: &Net, batch: u64, batch_span: Span) {
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

    pub(super) fn train(&mut self, t: &TrainItem) -> (Option<TrainSpec>, TrainFacts) {
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
}
