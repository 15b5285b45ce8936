//! The sparsec driver as a library: from files on disk to IR, data sets, training runs.
//! The `sparsec` binary (src/main.rs, with its command line in src/cli.rs) is a thin layer
//! over it.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
pub mod driver;
pub mod interrupt;
pub mod methods;
pub mod onnx;
pub mod overrides;
pub mod plot;
pub mod predict;
pub mod profile;
pub mod report;
pub mod resources;
pub mod runner;
pub mod standalone;
pub mod train;
pub mod trained;
