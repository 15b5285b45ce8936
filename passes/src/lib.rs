//! Compiler passes over the sparsec IR: autodiff, equality saturation, partitioning.
//! Empty until the training-step issue lands; the crate exists so the dependency
//! direction (passes → ir) is fixed from the start.
