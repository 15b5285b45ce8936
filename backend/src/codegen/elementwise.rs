//! Element-wise kernels: `f32x4` main loop and scalar tail, each operation written exactly as
//! the interpreter evaluates it (`sparsec_ir::interp`, module docs), one IEEE operation at a
//! time.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};

use super::loops::{counted_loop, if_else, vector_loop};
use super::{FnCtx, F32X4};

/// The element-wise operations. Operands: `a` = `ptr[0]`, `b` = `ptr[1]`, result `ptr[2]`,
/// length `int[0]`, scalar `f32[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
    /// `a · s` (the IR's `scale`)
    Scale,
    /// `if a <= 0 { 0 } else { a }` (NaN propagates, `−0` becomes `+0`)
    Relu,
    /// `if b > 0 { a } else { 0 }` with `a = dy`, `b = x` (a select, not a product)
    ReluGrad,
    /// `a − b · s`: the SGD update `w − lr·g` with `a = w`, `b = g`, `s = lr`, rounded as
    /// autodiff writes it (`scale` then `sub`: the product, then the difference; no FMA).
    Sgd,
}

impl Map {
    pub const ALL: [Map; 7] = [
        Map::Add,
        Map::Sub,
        Map::Mul,
        Map::Scale,
        Map::Relu,
        Map::ReluGrad,
        Map::Sgd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Map::Add => "add",
            Map::Sub => "sub",
            Map::Mul => "mul",
            Map::Scale => "scale",
            Map::Relu => "relu",
            Map::ReluGrad => "relu_grad",
            Map::Sgd => "sgd",
        }
    }

    /// Whether the operation reads `b`.
    pub fn binary(self) -> bool {
        matches!(
            self,
            Map::Add | Map::Sub | Map::Mul | Map::ReluGrad | Map::Sgd
        )
    }

    /// The operation on `a` and `b` of type `ty` (`f32` or `f32x4`); `s` is the scalar in that
    /// type, `zero` is 0 in that type.
    fn emit(
        self,
        fx: &mut FnCtx<'_>,
        ty: Type,
        a: Value,
        b: Value,
        s: Value,
        zero: Value,
    ) -> Value {
        let ins = fx.b.ins();
        match self {
            Map::Add => ins.fadd(a, b),
            Map::Sub => ins.fsub(a, b),
            Map::Mul => ins.fmul(a, b),
            Map::Scale => ins.fmul(a, s),
            Map::Sgd => {
                let step = fx.b.ins().fmul(b, s);
                fx.b.ins().fsub(a, step)
            }
            Map::Relu => {
                let le = fx.b.ins().fcmp(FloatCC::LessThanOrEqual, a, zero);
                select(fx, ty, le, zero, a)
            }
            Map::ReluGrad => {
                let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, b, zero);
                select(fx, ty, gt, a, zero)
            }
        }
    }
}

/// `if cond { x } else { y }` lane by lane (`cond` from an `fcmp` of type `ty`).
fn select(fx: &mut FnCtx<'_>, ty: Type, cond: Value, x: Value, y: Value) -> Value {
    if ty.is_vector() {
        let mask = fx.vbitcast(ty, cond);
        fx.b.ins().bitselect(mask, x, y)
    } else {
        fx.b.ins().select(cond, x, y)
    }
}

/// The body of an element-wise kernel (see [`Map`] for the argument slots).
pub fn emit_map(fx: &mut FnCtx<'_>, op: Map) {
    let a = fx.arg_ptr(0);
    let b = if op.binary() { fx.arg_ptr(1) } else { a };
    let out = fx.arg_ptr(2);
    let len = fx.arg_int(0);
    let s = fx.arg_f32(0);
    let s4 = fx.splat(s);
    let zero = fx.f32const(0.0);
    let zero4 = fx.splat(zero);
    vector_loop(fx, len, |fx, i, ty| {
        let (s, zero) = if ty == F32X4 { (s4, zero4) } else { (s, zero) };
        let x = fx.load_at(ty, a, i, 0);
        let y = if op.binary() {
            fx.load_at(ty, b, i, 0)
        } else {
            x
        };
        let r = op.emit(fx, ty, x, y, s, zero);
        fx.store_at(r, out, i, 0);
    });
}

/// `bias_add`: `out[o, c, j] = x[o, c, j] + bias[c]` for `x: [outer, channels, inner]`.
/// Slots: `x` = `ptr[0]`, `bias` = `ptr[1]`, out = `ptr[2]`; `int[0..3]` = outer, channels, inner.
/// With `inner == 1` (a dense layer) each row is `x_row + bias`, vectorised along the
/// channels; otherwise each `(o, c)` plane is `x_plane + splat(bias[c])`, vectorised along
/// `inner`.
pub fn emit_bias_add(fx: &mut FnCtx<'_>) {
    let x = fx.arg_ptr(0);
    let bias = fx.arg_ptr(1);
    let out = fx.arg_ptr(2);
    let outer = fx.arg_int(0);
    let channels = fx.arg_int(1);
    let inner = fx.arg_int(2);
    let zero = fx.iconst(0);
    let one = fx.iconst(1);
    let rowwise = fx.b.ins().icmp(IntCC::Equal, inner, one);
    if_else(
        fx,
        rowwise,
        |fx| {
            counted_loop(fx, zero, outer, 1, |fx, o| {
                let base = fx.b.ins().imul(o, channels);
                let xr = fx.elem(x, base);
                let or = fx.elem(out, base);
                vector_loop(fx, channels, |fx, c, ty| {
                    let v = fx.load_at(ty, xr, c, 0);
                    let bv = fx.load_at(ty, bias, c, 0);
                    let r = fx.b.ins().fadd(v, bv);
                    fx.store_at(r, or, c, 0);
                });
            });
        },
        |fx| {
            let planes = fx.b.ins().imul(outer, channels);
            counted_loop(fx, zero, planes, 1, |fx, p| {
                let c = fx.b.ins().urem(p, channels);
                let bc = fx.load_at(types::F32, bias, c, 0);
                let bc4 = fx.splat(bc);
                let base = fx.b.ins().imul(p, inner);
                let xp = fx.elem(x, base);
                let op = fx.elem(out, base);
                vector_loop(fx, inner, |fx, j, ty| {
                    let v = fx.load_at(ty, xp, j, 0);
                    let bv = if ty == F32X4 { bc4 } else { bc };
                    let r = fx.b.ins().fadd(v, bv);
                    fx.store_at(r, op, j, 0);
                });
            });
        },
    );
}
