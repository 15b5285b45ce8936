//! Max pooling of `[planes, h, w]` into `[planes, oh, ow]` and its gradient, bit-exact with the
//! interpreter's `maxpool2d` / `maxpool2d_grad` (`ir/src/interp/kernels.rs`).
//!
//! Each window is scanned in row-major order and a later element replaces the candidate only
//! when strictly greater (so the first maximum wins, and a NaN never replaces anything): the
//! same compare-and-select as the interpreter's `window_argmax`, unrolled over the window (whose
//! size is compiled in, [`PoolSpec`]). Forward stores the maximum; the gradient zeroes `dx`,
//! then adds each `dy` to its window's argmax, windows in row-major order, so overlapping
//! windows add in the interpreter's order (and a single `+ dy` onto `+0` rounds `−0` the same).
//!
//! Slots: x = `ptr[0]`, dy = `ptr[1]` (gradient), out = `ptr[2]`. The caller checks the lengths
//! and the partitioner that every window lies inside its plane.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder};

use super::loops::counted_loop;
use super::FnCtx;

/// Largest window (`kh·kw`) the kernel unrolls; bigger ones stay on the interpreter.
pub const MAX_WINDOW: usize = 64;

/// A max-pooling kernel (no padding, as the IR's `maxpool2d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolSpec {
    /// `batch · channels`.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub oh: usize,
    pub ow: usize,
    /// The gradient `dx` (from `dy` and `x`), else the forward pass.
    pub grad: bool,
}

impl PoolSpec {
    /// Whether every window lies inside its plane and is small enough to unroll: what the
    /// kernel relies on (the interpreter's slicing would panic otherwise).
    pub fn fits(&self) -> bool {
        let inside = |o: usize, s: usize, k: usize, len: usize| {
            o == 0
                || (o - 1)
                    .checked_mul(s)
                    .and_then(|v| v.checked_add(k))
                    .is_some_and(|end| end <= len)
        };
        self.kh >= 1
            && self.kw >= 1
            && self.kh * self.kw <= MAX_WINDOW
            && inside(self.oh, self.sh, self.kh, self.h)
            && inside(self.ow, self.sw, self.kw, self.w)
    }
}

/// The body of a max-pooling kernel (module docs).
pub fn emit_maxpool(fx: &mut FnCtx<'_>, spec: &PoolSpec) {
    let x = fx.arg_ptr(0);
    let dy = fx.arg_ptr(1);
    let out = fx.arg_ptr(2);
    let s = *spec;
    let zero = fx.iconst(0);
    if s.grad {
        let total = fx.iconst((s.planes * s.h * s.w) as i64);
        let z = fx.f32const(0.0);
        counted_loop(fx, zero, total, 1, |fx, i| fx.store_at(z, out, i, 0));
    }
    let planes = fx.iconst(s.planes as i64);
    let oh_n = fx.iconst(s.oh as i64);
    let ow_n = fx.iconst(s.ow as i64);
    counted_loop(fx, zero, planes, 1, |fx, p| {
        let at = fx.b.ins().imul_imm_s(p, (s.h * s.w) as i64);
        let plane = fx.elem(x, at);
        let dxp = fx.elem(out, at);
        let oat = fx.b.ins().imul_imm_s(p, (s.oh * s.ow) as i64);
        let oplane = fx.elem(out, oat);
        let dplane = fx.elem(dy, oat);
        counted_loop(fx, zero, oh_n, 1, |fx, oh| {
            let h0 = fx.b.ins().imul_imm_s(oh, (s.sh * s.w) as i64);
            let orow = fx.b.ins().imul_imm_s(oh, s.ow as i64);
            counted_loop(fx, zero, ow_n, 1, |fx, ow| {
                let w0 = fx.b.ins().imul_imm_s(ow, s.sw as i64);
                let origin = fx.b.ins().iadd(h0, w0);
                let mut best = origin;
                let mut best_v = fx.load_at(types::F32, plane, origin, 0);
                for ki in 0..s.kh {
                    for kj in 0..s.kw {
                        let idx = fx.b.ins().iadd_imm_s(origin, (ki * s.w + kj) as i64);
                        let v = fx.load_at(types::F32, plane, idx, 0);
                        let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, v, best_v);
                        best_v = fx.b.ins().select(gt, v, best_v);
                        best = fx.b.ins().select(gt, idx, best);
                    }
                }
                let o = fx.b.ins().iadd(orow, ow);
                if s.grad {
                    let d = fx.load_at(types::F32, dplane, o, 0);
                    let old = fx.load_at(types::F32, dxp, best, 0);
                    let sum = fx.b.ins().fadd(old, d);
                    fx.store_at(sum, dxp, best, 0);
                } else {
                    fx.store_at(best_v, oplane, o, 0);
                }
            });
        });
    });
}
