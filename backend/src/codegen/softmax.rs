//! Softmax cross-entropy over logits `[rows, classes]` and `i32` labels, bit-exact with the
//! interpreter's `softmax_xent` / `softmax_xent_grad` (`ir/src/interp/kernels.rs`).
//!
//! Per row, as `row_max_sum` there: the first maximum (a later element replaces it only when
//! strictly greater), then `s = Σ_j exp(x_j − max)` added in column order from `+0`. Forward:
//! the row's loss `ln(s) − (x[label] − max)` in `f32`, widened and added to an `f64` total in row
//! order; the result is `total / rows` in `f64`, rounded to `f32` once. Gradient: `p =
//! exp(x_j − max) / s`, `p − 1` at the label, then `/ rows` (the batch as `f32`), each step
//! rounded to `f32`. `exp` and `ln` are the interpreter's own ([`super::math`]); the loops,
//! the reductions and the rest are single IEEE operations here, in the same order.
//!
//! Scalar code, one thread: a LeNet head is 10 classes wide, so there is nothing to vectorise.
//!
//! Slots: logits = `ptr[0]`, labels = `ptr[1]`, out = `ptr[2]` (one `f32`, or `[rows,
//! classes]`). The caller checks every label is in `0 .. classes` and that `rows` and `classes`
//! are positive; the sizes are compiled in ([`SoftmaxSpec`]).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::loops::counted_loop;
use super::math::{exp, ln};
use super::{mem, FnCtx};

/// A softmax cross-entropy kernel: the mean loss, or (`grad`) its gradient in the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftmaxSpec {
    pub rows: usize,
    pub classes: usize,
    pub grad: bool,
}

/// `(max, Σ exp(x − max))` of the row at `row` (`classes` values).
fn row_max_sum(fx: &mut FnCtx<'_>, row: Value, classes: Value) -> (Value, Value) {
    let first = fx.b.ins().load(types::F32, mem(), row, 0);
    let mx = fx.var(types::F32, first);
    let one = fx.iconst(1);
    counted_loop(fx, one, classes, 1, |fx, j| {
        let v = fx.load_at(types::F32, row, j, 0);
        let cur = fx.b.use_var(mx);
        let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, v, cur);
        let next = fx.b.ins().select(gt, v, cur);
        fx.b.def_var(mx, next);
    });
    let mx = fx.b.use_var(mx);
    let zero = fx.f32const(0.0);
    let s = fx.var(types::F32, zero);
    let zero_i = fx.iconst(0);
    counted_loop(fx, zero_i, classes, 1, |fx, j| {
        let v = fx.load_at(types::F32, row, j, 0);
        let d = fx.b.ins().fsub(v, mx);
        let e = exp(fx, d, types::F32);
        let cur = fx.b.use_var(s);
        let next = fx.b.ins().fadd(cur, e);
        fx.b.def_var(s, next);
    });
    let s = fx.b.use_var(s);
    (mx, s)
}

/// The body of a softmax cross-entropy kernel (module docs); defined with
/// [`super::math::MATH_IMPORTS`].
pub fn emit_softmax_xent(fx: &mut FnCtx<'_>, spec: &SoftmaxSpec) {
    let logits = fx.arg_ptr(0);
    let labels = fx.arg_ptr(1);
    let out = fx.arg_ptr(2);
    let rows = fx.iconst(spec.rows as i64);
    let classes = fx.iconst(spec.classes as i64);
    let zero = fx.iconst(0);
    let total = {
        let z = fx.b.ins().f64const(0.0);
        fx.var(types::F64, z)
    };
    // `T::from_usize(rows)`: the batch through `f64`, rounded to `f32`.
    let batch = fx.f32const((spec.rows as f64) as f32);
    counted_loop(fx, zero, rows, 1, |fx, r| {
        let at = fx.b.ins().imul(r, classes);
        let row = fx.elem(logits, at);
        let (mx, s) = row_max_sum(fx, row, classes);
        let la = fx.elem(labels, r);
        let label = fx.b.ins().sload32(mem(), la, 0);
        if spec.grad {
            let orow = fx.elem(out, at);
            let one = fx.f32const(1.0);
            counted_loop(fx, zero, classes, 1, |fx, j| {
                let v = fx.load_at(types::F32, row, j, 0);
                let d = fx.b.ins().fsub(v, mx);
                let e = exp(fx, d, types::F32);
                let p = fx.b.ins().fdiv(e, s);
                let pm = fx.b.ins().fsub(p, one);
                let here = fx.b.ins().icmp(IntCC::Equal, j, label);
                let t = fx.b.ins().select(here, pm, p);
                let g = fx.b.ins().fdiv(t, batch);
                fx.store_at(g, orow, j, 0);
            });
        } else {
            let ls = ln(fx, s, types::F32);
            let xl = fx.load_at(types::F32, row, label, 0);
            let d = fx.b.ins().fsub(xl, mx);
            let loss = fx.b.ins().fsub(ls, d);
            let wide = fx.b.ins().fpromote(types::F64, loss);
            let cur = fx.b.use_var(total);
            let next = fx.b.ins().fadd(cur, wide);
            fx.b.def_var(total, next);
        }
    });
    if !spec.grad {
        let t = fx.b.use_var(total);
        let n = fx.b.ins().f64const(spec.rows as f64);
        let mean = fx.b.ins().fdiv(t, n);
        let mean = fx.b.ins().fdemote(types::F32, mean);
        fx.b.ins().store(mem(), mean, out, 0);
    }
}
