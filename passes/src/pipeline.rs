//! The pass pipeline: from a module at one stage to a later one, one readable sequence of
//! passes with the verifier between them.
//!
//! ```text
//! stage ir ──method's objective passes──▶ ──autodiff──▶ ──method's update passes (dropback)──▶
//!          stage train ──eqsat──▶ stage opt
//! ```
//!
//! A pipeline is built for a module ([`Pipeline::for_module`]): the passes its method adds
//! before autodiff (a penalty in the loss), autodiff, the passes it adds after autodiff
//! ([`crate::methods::CompileMethod`]), then equality saturation with the method's rules. [`Pipeline::run`] runs the passes between the module's
//! own stage and the one asked for, so an IR dump starts wherever it was printed. In debug
//! builds (and so in every test) the verifier runs after each pass; the final module is
//! verified in every build, so a pass's bug is an error, never a malformed program downstream.

use sparsec_ir::{verify, Module, Stage};

use crate::eqsat::{self, rules::RuleSource};
use crate::methods::{compile_side, CompileMethod};

/// One transformation of a whole module.
pub trait Pass {
    /// The name `--print-after` takes.
    fn name(&self) -> &'static str;
    /// The stage the module is at after this pass.
    fn stage_after(&self) -> Stage;
    /// Whether a module already at [`Pass::stage_after`] has had this pass: several passes
    /// end at one stage (autodiff and a method's passes at `train`), so a dump printed between
    /// them says `stage=train` and the pipeline asks the rest whether they still have to run.
    fn applied(&self, _module: &Module) -> bool {
        true
    }
    fn run(&self, module: &Module) -> Result<Module, String>;
}

/// Why a pipeline stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineError {
    /// The method refuses the program (its message says what to change).
    Refused(String),
    /// A pass failed, or its result does not verify.
    Pass { pass: &'static str, message: String },
}

/// Reverse-mode autodiff and the SGD update ([`crate::autodiff::build_train_step`]).
pub struct Autodiff;

impl Pass for Autodiff {
    fn name(&self) -> &'static str {
        "autodiff"
    }
    fn stage_after(&self) -> Stage {
        Stage::Train
    }
    fn applied(&self, module: &Module) -> bool {
        module.func(sparsec_ir::func_names::TRAIN_STEP).is_some()
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        crate::autodiff::build_train_step(module)
    }
}

/// Equality saturation and extraction ([`crate::eqsat::optimize`]).
pub struct Eqsat {
    pub options: eqsat::Options,
}

impl Pass for Eqsat {
    fn name(&self) -> &'static str {
        "eqsat"
    }
    fn stage_after(&self) -> Stage {
        Stage::Opt
    }
    fn run(&self, module: &Module) -> Result<Module, String> {
        eqsat::optimize(module, &self.options).map(|(m, _)| m)
    }
}

/// The passes for one module, in order.
pub struct Pipeline {
    method: Box<dyn CompileMethod>,
    passes: Vec<Box<dyn Pass>>,
}

/// Every pass name a pipeline can hold (for `--print-after` and its error message).
pub fn known_pass_names() -> Vec<&'static str> {
    let mut names = vec![Autodiff.name()];
    for registration in crate::methods::REGISTRY {
        names.extend(registration.passes);
    }
    names.push("eqsat");
    names
}

impl Pipeline {
    /// Autodiff, the module's method's passes, and saturation under `memory_budget` with the
    /// method's rules.
    pub fn for_module(module: &Module, memory_budget: Option<u64>) -> Pipeline {
        let method = compile_side(module.method.as_ref());
        let rules: RuleSource = method.eqsat_rules();
        let mut passes = method.passes_before_autodiff();
        passes.push(Box::new(Autodiff));
        passes.extend(method.passes_after_autodiff());
        passes.push(Box::new(Eqsat {
            options: eqsat::Options {
                memory_budget,
                rules: Some(rules),
                ..Default::default()
            },
        }));
        Pipeline { method, passes }
    }

    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Run the passes that take `module` from its stage to `target` (none when it is there
    /// already), calling `after_pass` with each pass's name and result.
    pub fn run(
        &self,
        module: Module,
        target: Stage,
        after_pass: &mut dyn FnMut(&str, &Module),
    ) -> Result<Module, PipelineError> {
        let start = module.stage;
        // Whatever stage a program starts at (a dump may start later), one that is to be
        // trained passes its method's checks.
        if target > Stage::Ir {
            self.method
                .validate(&module)
                .map_err(PipelineError::Refused)?;
        }
        let mut module = module;
        for pass in &self.passes {
            let after = pass.stage_after();
            let pending = after > start || (after == start && !pass.applied(&module));
            if !pending || after > target {
                continue;
            }
            module = pass.run(&module).map_err(|message| PipelineError::Pass {
                pass: pass.name(),
                message,
            })?;
            // The verifier runs between passes in every build, as Cranelift's does: a pass
            // that breaks the IR is named here, not found later by a confused backend.
            check(pass.name(), &module)?;
            after_pass(pass.name(), &module);
        }
        Ok(module)
    }
}

fn check(pass: &'static str, module: &Module) -> Result<(), PipelineError> {
    verify(module).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        PipelineError::Pass {
            pass,
            message: format!(
                "internal error: the result does not verify: {}",
                list.join("; ")
            ),
        }
    })
}
