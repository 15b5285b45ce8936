//! Max pooling of `[planes, h, w]` into `[planes, oh, ow]` and its gradient, bit-exact with the
//! interpreter's `maxpool2d` / `maxpool2d_grad` (`ir/src/interp/kernels.rs`).
//!
//! Each window is scanned in row-major order and a later element replaces the candidate only
//! when strictly greater (so the first maximum wins, and a NaN never replaces anything): the
//! same compare-and-select as the interpreter's `window_argmax`, unrolled over the window (whose
//! size is compiled in, [`PoolSpec`]), four adjacent windows at a time in `f32x4` lanes (then
//! one at a time for the rest of the row). Forward stores the maximum; the gradient zeroes `dx`,
//! then adds each `dy` to its window's argmax, windows in row-major order, so overlapping
//! windows add in the interpreter's order (and a single `+ dy` onto `+0` rounds `−0` the same).
//!
//! Windows two wide at stride 2 ([`PoolSpec::paired`], LeNet's) read each of their rows as
//! eight adjacent floats, two vector loads split into even and odd lanes, where others gather
//! their lanes one float at a time; the tiled gradient weaves them back and stores the rows
//! whole (LeNet-5 at batch 64, one thread: pool1's gradient 0.55–0.60 → 0.39 ms a step, its
//! forward 0.23–0.26 → 0.18).
//!
//! When the windows tile the plane exactly ([`PoolSpec::tiles`], as in LeNet's 2×2 pooling), the
//! gradient writes every element once instead: `+0 + dy` at its window's argmax, `+0` elsewhere
//! (the same bits, without the zeroing pass and the read-modify-write).
//!
//! Slots: x = `ptr[0]`, dy = `ptr[1]` (gradient), out = `ptr[2]`; `int[0]` = the planes to pool
//! (threads take disjoint planes, the pointers moved to their first). The caller checks the lengths
//! and the partitioner that every window lies inside its plane.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::loops::counted_loop;
use super::{mem, FnCtx, F32X4, I32X4};

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
    /// Whether the windows tile each plane exactly: side by side without overlap, every
    /// element in one window. The gradient then writes each element once (its window's `dy`
    /// at the argmax, `+0` elsewhere) instead of zeroing the plane and adding.
    pub fn tiles(&self) -> bool {
        self.sh == self.kh
            && self.sw == self.kw
            && self.oh * self.kh == self.h
            && self.ow * self.kw == self.w
    }

    /// Whether the windows are two wide at a horizontal stride of 2, so that four side by side
    /// cover eight adjacent floats of each of their rows (read and written as two vectors).
    pub fn paired(&self) -> bool {
        self.kw == 2 && self.sw == 2
    }

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
        // The four-window loads use byte offsets from the first window's origin.
        let offsets_fit = (self.kh * self.w)
            .checked_add(4 * self.sw)
            .is_some_and(|n| n < 1 << 28);
        self.kh >= 1
            && self.kw >= 1
            && self.kh * self.kw <= MAX_WINDOW
            && offsets_fit
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
    let planes = fx.arg_int(0);
    if s.grad && !s.tiles() {
        let total = fx.b.ins().imul_imm_s(planes, (s.h * s.w) as i64);
        let z = fx.f32const(0.0);
        counted_loop(fx, zero, total, 1, |fx, i| fx.store_at(z, out, i, 0));
    }
    let oh_n = fx.iconst(s.oh as i64);
    let ow_n = fx.iconst(s.ow as i64);
    let ow4 = fx.iconst((s.ow & !3) as i64);
    counted_loop(fx, zero, planes, 1, |fx, p| {
        let at = fx.b.ins().imul_imm_s(p, (s.h * s.w) as i64);
        let plane = fx.elem(x, at);
        let dxp = fx.elem(out, at);
        let oat = fx.b.ins().imul_imm_s(p, (s.oh * s.ow) as i64);
        let oplane = fx.elem(out, oat);
        let dplane = fx.elem(dy, oat);
        let planes = Planes {
            plane,
            dxp,
            oplane,
            dplane,
        };
        counted_loop(fx, zero, oh_n, 1, |fx, oh| {
            let h0 = fx.b.ins().imul_imm_s(oh, (s.sh * s.w) as i64);
            let orow = fx.b.ins().imul_imm_s(oh, s.ow as i64);
            counted_loop(fx, zero, ow4, 4, |fx, ow| {
                windows4(fx, &s, &planes, h0, orow, ow)
            });
            counted_loop(fx, ow4, ow_n, 1, |fx, ow| {
                window1(fx, &s, &planes, h0, orow, ow)
            });
        });
    });
}

/// The current plane's addresses: `x`'s, `dx`'s (gradient), the output's and `dy`'s.
struct Planes {
    plane: Value,
    dxp: Value,
    oplane: Value,
    dplane: Value,
}

/// One window, output `(oh, ow)` (`h0 = oh·sh·w`, `orow = oh·ow_n`).
fn window1(fx: &mut FnCtx<'_>, s: &PoolSpec, p: &Planes, h0: Value, orow: Value, ow: Value) {
    let w0 = fx.b.ins().imul_imm_s(ow, s.sw as i64);
    let origin = fx.b.ins().iadd(h0, w0);
    let mut best = origin;
    let mut best_v = fx.load_at(types::F32, p.plane, origin, 0);
    for ki in 0..s.kh {
        for kj in 0..s.kw {
            let idx = fx.b.ins().iadd_imm_s(origin, (ki * s.w + kj) as i64);
            let v = fx.load_at(types::F32, p.plane, idx, 0);
            let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, v, best_v);
            best_v = fx.b.ins().select(gt, v, best_v);
            best = fx.b.ins().select(gt, idx, best);
        }
    }
    let o = fx.b.ins().iadd(orow, ow);
    if s.grad && s.tiles() {
        // `+0 + dy` at the argmax (as adding onto the zeroed plane rounds it), `+0` elsewhere.
        let d = fx.load_at(types::F32, p.dplane, o, 0);
        let z = fx.f32const(0.0);
        let d = fx.b.ins().fadd(z, d);
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let idx = fx.b.ins().iadd_imm_s(origin, (ki * s.w + kj) as i64);
                let here = fx.b.ins().icmp(IntCC::Equal, idx, best);
                let v = fx.b.ins().select(here, d, z);
                fx.store_at(v, p.dxp, idx, 0);
            }
        }
    } else if s.grad {
        let d = fx.load_at(types::F32, p.dplane, o, 0);
        let old = fx.load_at(types::F32, p.dxp, best, 0);
        let sum = fx.b.ins().fadd(old, d);
        fx.store_at(sum, p.dxp, best, 0);
    } else {
        fx.store_at(best_v, p.oplane, o, 0);
    }
}

/// Four windows side by side, outputs `(oh, ow .. ow + 4)`, one per lane: the same
/// compare-and-select per window as [`window1`], branch-free (a scalar `select` of floats
/// becomes a branch, mispredicted on data), with the winning offset kept per lane. The gradient
/// then adds the four `dy` in lane (= window) order.
fn windows4(fx: &mut FnCtx<'_>, s: &PoolSpec, p: &Planes, h0: Value, orow: Value, ow: Value) {
    let w0 = fx.b.ins().imul_imm_s(ow, s.sw as i64);
    let origin = fx.b.ins().iadd(h0, w0);
    let base = fx.elem(p.plane, origin);
    // Window rows two wide at stride 2 (LeNet's pooling): the four windows' row `ki` is eight
    // adjacent floats, loaded as two vectors and split into their even and odd lanes.
    let pairs: Vec<[Value; 2]> = if s.paired() {
        (0..s.kh)
            .map(|ki| {
                let at = (4 * ki * s.w) as i32;
                let lo = fx.b.ins().load(F32X4, mem(), base, at);
                let hi = fx.b.ins().load(F32X4, mem(), base, at + 16);
                [
                    fx.shuffle32(F32X4, lo, hi, [0, 2, 4, 6]),
                    fx.shuffle32(F32X4, lo, hi, [1, 3, 5, 7]),
                ]
            })
            .collect()
    } else {
        Vec::new()
    };
    // Lane `l` reads window `ow + l`, whose element `(ki, kj)` is `origin + l·sw + ki·w + kj`.
    let gather = |fx: &mut FnCtx<'_>, ki: usize, kj: usize| {
        if let Some(pair) = pairs.get(ki) {
            return pair[kj];
        }
        let off = ki * s.w + kj;
        let mut v = fx.b.ins().load(types::F32, mem(), base, (4 * off) as i32);
        v = fx.b.ins().scalar_to_vector(F32X4, v);
        for l in 1..4u8 {
            let at = 4 * (l as usize * s.sw + off);
            let e = fx.b.ins().load(types::F32, mem(), base, at as i32);
            v = fx.b.ins().insertlane(v, e, l);
        }
        v
    };
    let mut best_v = gather(fx, 0, 0);
    let mut best = fx.vconst32(I32X4, [0; 4]);
    for ki in 0..s.kh {
        for kj in 0..s.kw {
            let off = ki * s.w + kj;
            let v = gather(fx, ki, kj);
            let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, v, best_v);
            let mask = fx.vbitcast(F32X4, gt);
            best_v = fx.b.ins().bitselect(mask, v, best_v);
            if s.grad {
                let here = fx.vconst32(I32X4, [off as u32; 4]);
                best = fx.b.ins().bitselect(gt, here, best);
            }
        }
    }
    let o = fx.b.ins().iadd(orow, ow);
    if s.grad && s.tiles() {
        // Each window's elements: `+0 + dy` at its argmax, `+0` elsewhere (see `window1`).
        let zero4 = fx.vconst32(F32X4, [0; 4]);
        let d = fx.load_at(F32X4, p.dplane, o, 0);
        let d = fx.b.ins().fadd(zero4, d);
        let dxb = fx.elem(p.dxp, origin);
        for ki in 0..s.kh {
            let row: Vec<Value> = (0..s.kw)
                .map(|kj| {
                    let off = ki * s.w + kj;
                    let here = fx.vconst32(I32X4, [off as u32; 4]);
                    let hit = fx.b.ins().icmp(IntCC::Equal, best, here);
                    let hit = fx.vbitcast(F32X4, hit);
                    fx.b.ins().bitselect(hit, d, zero4)
                })
                .collect();
            if s.paired() {
                // The even and odd lanes woven back into the row's eight floats.
                let at = (4 * ki * s.w) as i32;
                let lo = fx.shuffle32(F32X4, row[0], row[1], [0, 4, 1, 5]);
                let hi = fx.shuffle32(F32X4, row[0], row[1], [2, 6, 3, 7]);
                fx.b.ins().store(mem(), lo, dxb, at);
                fx.b.ins().store(mem(), hi, dxb, at + 16);
                continue;
            }
            for (kj, &v) in row.iter().enumerate() {
                let off = ki * s.w + kj;
                for l in 0..4u8 {
                    let e = fx.b.ins().extractlane(v, l);
                    let at = 4 * (l as usize * s.sw + off);
                    fx.b.ins().store(mem(), e, dxb, at as i32);
                }
            }
        }
    } else if s.grad {
        for l in 0..4u8 {
            let off = fx.b.ins().extractlane(best, l);
            let off = fx.b.ins().uextend(types::I64, off);
            let at = fx.b.ins().iadd_imm_s(origin, (l as usize * s.sw) as i64);
            let at = fx.b.ins().iadd(at, off);
            let d = fx.load_at(types::F32, p.dplane, o, 4 * l as i32);
            let old = fx.load_at(types::F32, p.dxp, at, 0);
            let sum = fx.b.ins().fadd(old, d);
            fx.store_at(sum, p.dxp, at, 0);
        }
    } else {
        fx.store_at(best_v, p.oplane, o, 0);
    }
}
