//! The sparsec driver as a library: from files on disk to IR, data sets, training runs.
//! The `sparsec` binary (src/main.rs) is a thin command line over it.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod driver;
pub mod overrides;
pub mod report;
pub mod train;
