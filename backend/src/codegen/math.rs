//! The transcendental functions of the interpreter (`exp`, `ln`, `tanh` of `f32`), called from
//! generated code through registered imports (`crate::jit::imports`) rather than approximated:
//! each import is Rust's own `f32::exp` / `f32::ln` / `f32::tanh`, the very functions the
//! interpreter's `Float` impl calls, so every result has the reference's bits on every CPU.
//!
//! Convention: a kernel that uses them is defined with [`MATH_IMPORTS`] as its first imports,
//! in that order (`fx.imports[0]` = exp, `[1]` = ln, `[2]` = tanh).

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};

use super::FnCtx;

/// `fn(f32) -> f32`: `x.exp()`.
pub const EXP_IMPORT: &str = "sparsec_exp_f32";
/// `fn(f32) -> f32`: `x.ln()`.
pub const LN_IMPORT: &str = "sparsec_ln_f32";
/// `fn(f32) -> f32`: `x.tanh()`.
pub const TANH_IMPORT: &str = "sparsec_tanh_f32";

/// The imports of a kernel that calls [`exp`], [`ln`] or [`tanh`], in `fx.imports` order.
pub const MATH_IMPORTS: [&str; 3] = [EXP_IMPORT, LN_IMPORT, TANH_IMPORT];

/// Apply import `slot` (an `f32 -> f32` function) to `x`, an `f32` or each lane of an `f32x4`.
fn call(fx: &mut FnCtx<'_>, slot: usize, x: Value, ty: Type) -> Value {
    let Some(&callee) = fx.imports.get(slot) else {
        unreachable!("a kernel calling exp/ln/tanh is defined with MATH_IMPORTS")
    };
    let one = |fx: &mut FnCtx<'_>, v: Value| {
        let inst = fx.b.ins().call(callee, &[v]);
        fx.b.inst_results(inst)[0]
    };
    if ty == types::F32 {
        return one(fx, x);
    }
    let mut r = x;
    for lane in 0..4u8 {
        let v = fx.b.ins().extractlane(x, lane);
        let y = one(fx, v);
        r = fx.b.ins().insertlane(r, y, lane);
    }
    r
}

/// `x.exp()` of an `f32` (or lane by lane of an `f32x4`).
pub fn exp(fx: &mut FnCtx<'_>, x: Value, ty: Type) -> Value {
    call(fx, 0, x, ty)
}

/// `x.ln()` of an `f32` (or lane by lane of an `f32x4`).
pub fn ln(fx: &mut FnCtx<'_>, x: Value, ty: Type) -> Value {
    call(fx, 1, x, ty)
}

/// `x.tanh()` of an `f32` (or lane by lane of an `f32x4`).
pub fn tanh(fx: &mut FnCtx<'_>, x: Value, ty: Type) -> Value {
    call(fx, 2, x, ty)
}
