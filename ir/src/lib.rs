//! The sparsec intermediate representation: typed tensor dataflow graphs with a parameter table,
//! the training specification, a verifier, and a stable, parseable text form.

pub mod admm;
pub mod dropback;
pub mod fpenv;
pub mod interp;
pub mod module;
pub mod op;
pub mod parse;
pub mod print;
pub mod regen;
pub mod remap;
pub mod spec;
pub mod types;
pub mod verify;

pub use module::{
    func_names, Arg, Func, Init, Inst, Module, Param, ParamId, Role, Stage, Storage, Value,
    FORMAT_VERSION,
};
pub use op::{Attr, Op};
pub use parse::{parse_module, parse_module_unverified, ParseError};
pub use print::print_module;
pub use types::{DType, Encoding, Type};
pub use verify::{verify, VerifyError, MAX_RANK};
