//! Compiler passes over the sparsec IR: autodiff (the training step), each sparse-training
//! method's compile side ([`methods`]: storage, passes, rewrite rules), equality saturation (egg)
//! with cost-model extraction, and the [`pipeline`] that runs them in order with the verifier
//! between them. Dependencies point one way: passes → ir.

#![forbid(unsafe_code)]

pub mod autodiff;
pub mod eqsat;
pub mod methods;
pub mod pipeline;
pub mod structural;

pub use autodiff::build_train_step;
pub use eqsat::{optimize, Options as OptOptions};
pub use methods::dropback::select::apply_dropback;
pub use pipeline::{Pipeline, PipelineError};
