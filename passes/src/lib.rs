//! Compiler passes over the sparsec IR: autodiff (the training step), Dropback's selection, and
//! equality saturation (egg) with cost-model extraction. Dependencies point one way: passes → ir.

pub mod autodiff;
pub mod dropback;
pub mod eqsat;

pub use autodiff::{build_train_step, train_step_name, TRAIN_STEP};
pub use dropback::{apply_dropback, TRAIN_STEP_FROZEN};
pub use eqsat::{optimize, Options as OptOptions};
