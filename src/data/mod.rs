//! Data sets (filled in by the data work).
