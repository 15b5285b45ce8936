//! Activation-density shrinking's compile side (docs/methods.md §2): the statistics the run side
//! resizes by are computed inside the compiled training step, as IR, so the interpreter and the
//! JIT count alike and no second pass over the data is needed.
//!
//! For every selected layer, whose output feeds a `relu`, the `activation_stats` pass appends
//! one result to `@train_step`: the number of positive pre-activations of each unit over the
//! batch (and, for a convolution, over the positions of each channel), which is the number of
//! non-zero post-ReLU outputs:
//!
//! ```text
//! %one = const 1 : f32[B, C, H, W]
//! %hit = relu_grad %one, %x : f32[B, C, H, W]      1 where x > 0, else 0
//! %n   = reduce_sum %hit {axes=[0, 2, 3]} : f32[C]  per unit (axes=[0] for a dense layer)
//! ```
//!
//! Counts per batch stay below 2^24 for any batch a model file accepts, so the f32 sums are
//! exact integers; the run side adds them up over the epoch in integers.

use sparsec_ir::func_names::{FORWARD, TRAIN_STEP};
use sparsec_ir::op::Unary;
use sparsec_ir::spec::{Method, MethodSpec};
use sparsec_ir::{Func, Module, Op, Stage, Value};

use super::{CompileMethod, Registration};
use crate::pipeline::Pass;
use crate::structural::units::{layer_output, unit_group};

/// The pass's name (`--print-after activation_stats`).
pub const PASS_NAME: &str = "activation_stats";
/// The location of the instructions the pass adds.
pub const STATS_LOC: &str = "activation_stats";

pub const REGISTRATION: Registration = Registration {
    method: "activation_density",
    passes: &[PASS_NAME],
    make: from_spec,
};

pub struct ActivationDensity {
    spec: MethodSpec,
}

/// The compile side, if `spec` is activation density's.
pub fn from_spec(spec: &MethodSpec) -> Option<Box<dyn CompileMethod>> {
    matches!(spec.method, Method::ActivationDensity { .. })
        .then(|| Box::new(ActivationDensity { spec: spec.clone() }) as Box<dyn CompileMethod>)
}

/// The value a `relu` reads as the output of `layer` in `f`: the layer's output (after its bias),
/// or why the layer has none.
pub fn relu_input(m: &Module, f: &Func, layer: &str) -> Result<Value, String> {
    let out = layer_output(m, f, layer)?;
    let feeds_relu = f
        .insts
        .iter()
        .any(|inst| inst.op == Op::Unary(Unary::Relu) && inst.operands[0] == out);
    if feeds_relu {
        Ok(out)
    } else {
        Err(format!(
            "the output of `{layer}` does not feed a `relu`, so it has no activation density \
             (the count of non-zero post-ReLU outputs); leave it out of `on`"
        ))
    }
}

impl CompileMethod for ActivationDensity {
    fn name(&self) -> &'static str {
        "activation_density"
    }

    /// Every selected layer feeds a `relu`, and its units can be removed (dense storage, not the
    /// classifier's outputs).
    fn validate(&self, module: &Module) -> Result<(), String> {
        let f = module
            .func(FORWARD)
            .ok_or_else(|| format!("the program has no @{FORWARD}"))?;
        for layer in &self.spec.layers {
            relu_input(module, f, layer)?;
            unit_group(module, layer)
                .and_then(|group| group.check_dense(module))
                .map_err(|e| format!("activation density cannot resize `{layer}`: {e}"))?;
        }
        Ok(())
    }

    fn passes_after_autodiff(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(ActivationStats {
            layers: self.spec.layers.clone(),
        })]
    }
}

/// Appends one result per selected layer to `@train_step`: its per-unit count of positive
/// pre-activations over the batch (see the module docs).
pub struct ActivationStats {
    pub layers: Vec<String>,
}

impl Pass for ActivationStats {
    fn name(&self) -> &'static str {
        PASS_NAME
    }

    fn stage_after(&self) -> Stage {
        Stage::Train
    }

    /// Applied when `@train_step` returns more than `(loss, logits)`.
    fn applied(&self, module: &Module) -> bool {
        module
            .func(TRAIN_STEP)
            .is_some_and(|f| f.results.len() == 2 + self.layers.len())
    }

    fn run(&self, module: &Module) -> Result<Module, String> {
        let mut out = module.clone();
        let fi = out
            .funcs
            .iter()
            .position(|f| f.name == TRAIN_STEP)
            .ok_or_else(|| format!("the program has no @{TRAIN_STEP}"))?;
        let mut f = out.funcs[fi].clone();
        if f.results.len() != 2 {
            return Err(format!(
                "@{TRAIN_STEP} returns {} values; the statistics go after (loss, logits)",
                f.results.len()
            ));
        }
        for layer in &self.layers {
            let x = relu_input(module, &f, layer)?;
            let shape = f.value_type(x).shape.clone();
            let axes: Vec<usize> = (0..shape.len()).filter(|&a| a != 1).collect();
            let loc = Some(STATS_LOC);
            let one = f.push(&out.params, Op::Const { value: 1.0, shape }, &[], loc)?;
            let hit = f.push(&out.params, Op::UnaryGrad(Unary::Relu), &[one, x], loc)?;
            let count = f.push(&out.params, Op::ReduceSum { axes }, &[hit], loc)?;
            f.results.push(count);
        }
        out.funcs[fi] = f;
        Ok(out)
    }
}
