//! Compiler passes over the sparsec IR: autodiff (the training step), and later equality
//! saturation and partitioning. Dependencies point one way: passes → ir.

pub mod autodiff;
pub mod dropback;

pub use autodiff::{build_train_step, train_step_name, TRAIN_STEP};
pub use dropback::{apply_dropback, TRAIN_STEP_FROZEN};
