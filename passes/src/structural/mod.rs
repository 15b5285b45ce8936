//! Structural passes: passes that change the shapes of parameters during training (units or
//! channels removed). Each returns the new module together with a [`Remap`] saying what
//! survives of each parameter, so the training loop can carry weights and optimizer state over
//! and recompile (see the root crate's `methods` module for who asks for one, and when).
//!
//! Structural passes run on the program at stage `ir` (`@forward` and the parameter table):
//! the training step is then rebuilt by the ordinary pipeline, so autodiff, the method's passes
//! and saturation see a program that was never anything but its new shape.

pub mod units;

use sparsec_ir::remap::Remap;
use sparsec_ir::Module;

/// A change of structure of a program at stage `ir`.
pub trait StructuralPass {
    /// A one-line description for logs and errors (`remove 3 units of fc1`).
    fn describe(&self) -> String;
    /// The new module (still at stage `ir`, verified) and what it keeps of each parameter.
    fn run(&self, module: &Module) -> Result<(Module, Remap), String>;
}
