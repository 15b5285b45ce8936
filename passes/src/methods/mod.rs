//! The compile side of each sparse-training method: one folder per method, one entry in
//! [`REGISTRY`].
//!
//! A method says what storage the parameters it selects get (at lowering), what it refuses,
//! which passes run after autodiff, and which rewrite rules equality saturation adds. Nothing
//! outside a method's folder knows which methods exist: the driver and the pass pipeline ask
//! [`compile_side`] for the module's method and talk to it through [`CompileMethod`].
//!
//! A method named in the model file that has no entry here compiles as the dense program (its
//! block is checked, but adds nothing), and its run side refuses to train it.

pub mod activation_density;
pub mod admm;
pub mod dropback;
pub mod penalty;
pub mod prunetrain;

use sparsec_ir::spec::MethodSpec;
use sparsec_ir::{Module, ParamId, Storage};

use crate::eqsat::rules::{no_rules, RuleSource};
use crate::pipeline::Pass;

/// What a method contributes to compilation. Every hook has a default that adds nothing.
pub trait CompileMethod {
    /// The method's name, as in the model file (`dropback`).
    fn name(&self) -> &'static str;

    /// Refuse a program the method cannot train, before any pass runs (the message names
    /// the setting and says what to do).
    fn validate(&self, _module: &Module) -> Result<(), String> {
        Ok(())
    }

    /// Give the parameters of the selected layers their storage: run once, right after
    /// lowering, on a module whose parameters are all dense.
    fn assign_storage(&self, _module: &mut Module) -> Result<(), String> {
        Ok(())
    }

    /// The storage the method gives the parameters it selects in `module` as it stands (after
    /// [`CompileMethod::assign_storage`], at any stage); every other parameter is dense. An IR
    /// dump's storage is checked against it ([`storage_mismatches`]).
    fn selected_storage(&self, _module: &Module) -> Result<Vec<(ParamId, Storage)>, String> {
        Ok(Vec::new())
    }

    /// Passes that run before autodiff, in order: what changes the training objective (a
    /// penalty added to the loss is differentiated with it). They end at stage `train` too.
    fn passes_before_autodiff(&self) -> Vec<Box<dyn Pass>> {
        Vec::new()
    }

    /// Passes that run after autodiff, in order: what changes the update (Dropback's selection).
    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        Vec::new()
    }

    /// The rules equality saturation runs with, phase by phase.
    fn eqsat_rules(&self) -> RuleSource {
        no_rules
    }
}

/// The dense program: no method block, or a method without a compile side yet.
struct Dense;

impl CompileMethod for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }
}

/// A method's entry in the registry.
pub struct Registration {
    /// The method's name, as in the model file.
    pub method: &'static str,
    /// The names of the passes it adds before and after autodiff (what `--print-after` may
    /// name).
    pub passes: &'static [&'static str],
    /// The compile side, if the spec is this method's.
    pub make: fn(&MethodSpec) -> Option<Box<dyn CompileMethod>>,
}

/// Every method with a compile side. Adding a method: its folder, and one line here.
pub const REGISTRY: &[Registration] = &[
    dropback::REGISTRATION,
    activation_density::REGISTRATION,
    prunetrain::REGISTRATION,
    admm::REGISTRATION,
];

/// The compile side of a module's method (the dense program's when there is none).
pub fn compile_side(spec: Option<&MethodSpec>) -> Box<dyn CompileMethod> {
    spec.and_then(|spec| REGISTRY.iter().find_map(|r| (r.make)(spec)))
        .unwrap_or_else(|| Box::new(Dense))
}

/// Give the parameters of a freshly lowered module the storage its method asks for.
pub fn assign_storage(module: &mut Module) -> Result<(), String> {
    compile_side(module.method.as_ref()).assign_storage(module)
}

/// Where a module's storage differs from what its method gives it (a dump that claims
/// `dense` under Dropback would train densely while its summary says Dropback; `seeded` momentum
/// would silently never be stored): (parameter index, message) for each such parameter, or one
/// message if the method's storage cannot be worked out at all.
pub fn storage_mismatches(module: &Module) -> Result<Vec<(usize, String)>, String> {
    let method = compile_side(module.method.as_ref());
    let mut expected = vec![Storage::Dense; module.params.len()];
    for (id, storage) in method.selected_storage(module)? {
        expected[id.0 as usize] = storage;
    }
    let given_by = match &module.method {
        Some(_) => format!("method `{}` gives it", method.name()),
        None => "a program without a method keeps every parameter".to_owned(),
    };
    Ok(module
        .params
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (p, want))| p.storage != *want)
        .map(|(i, (p, want))| {
            (
                i,
                format!("storage is `{}`, but {given_by} `{want}`", p.storage),
            )
        })
        .collect())
}

/// The parameters of the layers a method selects (`<layer>.weight`, `<layer>.bias`), in
/// parameter-table order.
pub fn selected_params(module: &Module, spec: &MethodSpec) -> Vec<usize> {
    module
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.role == sparsec_ir::Role::Weight
                && p.name
                    .rsplit_once('.')
                    .is_some_and(|(layer, _)| spec.layers.iter().any(|l| l == layer))
        })
        .map(|(i, _)| i)
        .collect()
}
