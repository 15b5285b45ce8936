//! 2-D convolutions `x: [b, c, h, w] ⋆ w: [o, c, kh, kw] → [b, o, oh, ow]` and their input
//! gradient, bit-exact with the interpreter's `conv2d` and `conv2d_input_grad`
//! (`ir/src/interp/kernels.rs`). The weight gradient is the interpreter's own kernel, run on the
//! host (`runtime/exec.rs`): it is data movement around one deep product per image group, where
//! generated code would win nothing.
//!
//! The data movement (`im2col` and its adjoint, the scatter-add `col2im`) is Cranelift code here;
//! every matrix product is the imported GEMM (`crate::jit::sparsec_gemm_f32`, the interpreter's
//! `gemm`) called **exactly as the interpreter calls it**: the same `(m, n, k)`, operand layouts,
//! leading dimensions and accumulate flag, once per image in image order. The bits then come
//! from identical calls, whatever GEMM is behind them, not from a summation order re-derived
//! here. Per image (`ckk = c·kh·kw`, `p = oh·ow`, `cols` the `[ckk, p]` scratch):
//! - forward: `cols = im2col(x[i])`; `y[i] = W[o, ckk] · cols` (`gemm(o, p, ckk)`, overwrite);
//! - input gradient: `dx = 0`; `cols = Wᵀ · dy[i]` (`gemm(ckk, p, o)`, A transposed,
//!   overwrite); `dx[i] += col2im(cols)`, contributions in (channel, kernel row, kernel column,
//!   oh, ow) order as in the interpreter.
//!
//! Positions in the padding read as `+0` (`im2col`) or receive nothing (`col2im`): an input row
//! index is `oh·sh + ki − ph` computed in wrapping unsigned arithmetic, valid when below `h`;
//! along a row, the outputs whose input column is inside the image form one range (`ow_range`),
//! so only that range is read (contiguously, in `f32x4`, for stride 1) and no access leaves the
//! buffers.
//!
//! **Threads.** The kernel runs the images `int[0] .. int[1]`. The forward pass and the input
//! gradient write each image's result from that image alone, so two threads may take disjoint
//! image ranges (each with its own `cols`): every image still gets the same
//! calls, and every output element is computed by one thread.
//!
//! A forward convolution may carry the `bias_add` that follows it ([`ConvSpec::bias`]): each
//! image's result gets its channel's bias added right after its product, the same single
//! addition as the interpreter's `bias_add`, so the unbiased result is never stored.
//!
//! Slots: forward `x` = `ptr[0]`, input gradient `dy` = `ptr[0]`; `W` = `ptr[1]`; the result =
//! `ptr[2]`; scratch `cols` (`ckk·p` floats) = `ptr[3]`; the bias (`o` floats) = `ptr[4]`; the image range `int[0] .. int[1]`. The sizes are compiled
//! in ([`ConvSpec`]); the caller checks the buffers against them. `fx.imports[0]` is the GEMM
//! import.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::loops::{counted_loop, if_else};
use super::{FnCtx, F32X4};

/// Which convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    /// `conv2d x, W`.
    Forward,
    /// `conv2d_input_grad dy, W`.
    InputGrad,
}

impl ConvPass {
    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "conv2d",
            ConvPass::InputGrad => "conv2d_input_grad",
        }
    }
}

/// A convolution kernel: the pass and the geometry (the interpreter's `ConvGeom`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    pub pass: ConvPass,
    /// Forward only: `bias_add` fused, `y[i][oc, ·] + bias[oc]` (the same single addition)
    /// written instead of the product.
    pub bias: bool,
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvSpec {
    /// Rows of the im2col matrix, `c·kh·kw`.
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image, `oh·ow`.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image, `c·h·w`.
    pub fn chw(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether no window reaches into the padding: none, and every window inside the image.
    pub fn unpadded(&self) -> bool {
        let inside = |o: usize, st: usize, k: usize, len: usize| o == 0 || (o - 1) * st + k <= len;
        self.ph == 0
            && self.pw == 0
            && inside(self.oh, self.sh, self.kh, self.h)
            && inside(self.ow, self.sw, self.kw, self.w)
    }

    /// Whether the kernel applies: non-empty images, strides of at least 1 (`ow_range` divides
    /// by the stride) and sizes that fit the 64-bit index arithmetic with room to spare.
    pub fn fits(&self) -> bool {
        let dims = [
            self.b, self.c, self.h, self.w, self.o, self.kh, self.kw, self.sh, self.sw, self.ph,
            self.pw, self.oh, self.ow,
        ];
        let bounded = dims.iter().all(|&d| d < 1 << 24);
        let total = [
            self.chw(),
            self.ckk() * self.p(),
            self.o * self.p(),
            self.o * self.ckk(),
        ]
        .iter()
        .all(|&n| n.checked_mul(self.b.max(1)).is_some_and(|t| t < 1 << 40));
        bounded && total && self.h >= 1 && self.w >= 1 && self.sh >= 1 && self.sw >= 1
    }
}

/// `GEMM_IMPORT(m, n, k, flags, a, b, ldb, c, ldc)` with compiled-in sizes: a whole product of
/// this shape, as the interpreter's convolution makes it (flags bit 3 clear).
#[allow(clippy::too_many_arguments)]
fn gemm_call(
    fx: &mut FnCtx<'_>,
    (m, n, k): (usize, usize, usize),
    flags: i64,
    a: Value,
    b: Value,
    ldb: usize,
    c: Value,
    ldc: usize,
) {
    let Some(&callee) = fx.imports.first() else {
        unreachable!("a convolution kernel is defined with the GEMM import")
    };
    let args = [
        fx.iconst(m as i64),
        fx.iconst(n as i64),
        fx.iconst(k as i64),
        fx.iconst(flags),
        a,
        b,
        fx.iconst(ldb as i64),
        c,
        fx.iconst(ldc as i64),
    ];
    fx.b.ins().call(callee, &args);
}

/// `n` zeros from `base`.
fn zero_fill(fx: &mut FnCtx<'_>, base: Value, n: Value) {
    let zero = fx.iconst(0);
    let z = fx.f32const(0.0);
    counted_loop(fx, zero, n, 1, |fx, i| fx.store_at(z, base, i, 0));
}

/// `idx = o·stride + k − pad` (wrapping) and whether it is inside `0 .. len`.
fn src_index(
    fx: &mut FnCtx<'_>,
    o: Value,
    stride: usize,
    k: Value,
    pad: usize,
    len: usize,
) -> (Value, Value) {
    let t = fx.b.ins().imul_imm_s(o, stride as i64);
    let t = fx.b.ins().iadd(t, k);
    let idx = fx.b.ins().iadd_imm_s(t, -(pad as i64));
    let ok = fx.b.ins().icmp_imm_s(
        cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan,
        idx,
        len as i64,
    );
    (idx, ok)
}

/// Loops over the im2col rows `(c, ki, kj)` and output rows `oh`, in the interpreter's order:
/// `body(c, kj, row, oh, ih, ih_ok)` where `row = (c·kh + ki)·kw + kj` and `ih` is the input
/// row (valid when `ih_ok`).
fn for_rows(
    fx: &mut FnCtx<'_>,
    s: &ConvSpec,
    mut body: impl FnMut(&mut FnCtx<'_>, Value, Value, Value, Value, Value, Value),
) {
    let zero = fx.iconst(0);
    let (cn, khn, kwn, ohn) = (
        fx.iconst(s.c as i64),
        fx.iconst(s.kh as i64),
        fx.iconst(s.kw as i64),
        fx.iconst(s.oh as i64),
    );
    counted_loop(fx, zero, cn, 1, |fx, c| {
        counted_loop(fx, zero, khn, 1, |fx, ki| {
            counted_loop(fx, zero, kwn, 1, |fx, kj| {
                let row = fx.b.ins().imul_imm_s(c, s.kh as i64);
                let row = fx.b.ins().iadd(row, ki);
                let row = fx.b.ins().imul_imm_s(row, s.kw as i64);
                let row = fx.b.ins().iadd(row, kj);
                counted_loop(fx, zero, ohn, 1, |fx, oh| {
                    let (ih, ok) = src_index(fx, oh, s.sh, ki, s.ph, s.h);
                    body(fx, c, kj, row, oh, ih, ok);
                });
            });
        });
    });
}

/// The outputs `lo .. hi` of a row whose input column `ow·sw + kj − pw` is inside `0 .. w`
/// (all others read the padding): `lo = ⌈(pw − kj) / sw⌉` (0 when `kj >= pw`), `hi =
/// min(ow_n, ⌈(w + pw − kj) / sw⌉)` (0 when `kj >= w + pw`), and `lo <= hi`.
fn ow_range(fx: &mut FnCtx<'_>, s: &ConvSpec, kj: Value) -> (Value, Value) {
    let zero = fx.iconst(0);
    let ceil_div = |fx: &mut FnCtx<'_>, num: Value| {
        let t = fx.b.ins().iadd_imm_s(num, s.sw as i64 - 1);
        fx.b.ins().udiv_imm_u(t, s.sw as i64)
    };
    let pw = fx.iconst(s.pw as i64);
    let before = fx.b.ins().isub(pw, kj);
    let lo = ceil_div(fx, before);
    let some_before = fx.ult(kj, pw);
    let lo = fx.b.ins().select(some_before, lo, zero);
    let wp = fx.iconst((s.w + s.pw) as i64);
    let room = fx.b.ins().isub(wp, kj);
    let hi = ceil_div(fx, room);
    let any = fx.ult(kj, wp);
    let hi = fx.b.ins().select(any, hi, zero);
    let own = fx.iconst(s.ow as i64);
    let hi = fx.umin(hi, own);
    let lo = fx.umin(lo, hi);
    (lo, hi)
}

/// `body(ow, ty)` for `ow` in `lo .. hi`: in `f32x4` steps then scalar when `vector`, else one
/// at a time.
fn range_loop(
    fx: &mut FnCtx<'_>,
    lo: Value,
    hi: Value,
    vector: bool,
    mut body: impl FnMut(&mut FnCtx<'_>, Value, cranelift_codegen::ir::Type),
) {
    if vector {
        let len = fx.b.ins().isub(hi, lo);
        let len4 = fx.b.ins().band_imm_s(len, !3i64);
        let mid = fx.b.ins().iadd(lo, len4);
        counted_loop(fx, lo, mid, 4, |fx, ow| body(fx, ow, F32X4));
        counted_loop(fx, mid, hi, 1, |fx, ow| body(fx, ow, types::F32));
    } else {
        counted_loop(fx, lo, hi, 1, |fx, ow| body(fx, ow, types::F32));
    }
}

/// Longest output row the unpadded paths copy in straight-line code.
const UNROLLED_ROW: usize = 64;

/// `dst[j] (= | +=) src[j·sw]` for `j < ow`, unrolled: `f32x4` when `sw == 1` (distinct
/// elements, one operation each), then scalars. With `add`, `src` is a row of `cols` and `dst`
/// of the image (`dst[j·sw] += src[j]`).
fn row_unrolled(fx: &mut FnCtx<'_>, s: &ConvSpec, src: Value, dst: Value, add: bool) {
    let flags = super::mem();
    let vector_end = if s.sw == 1 { s.ow & !3 } else { 0 };
    let mut j = 0;
    while j < s.ow {
        let ty = if j < vector_end { F32X4 } else { types::F32 };
        let (from, to) = if add {
            (4 * j, 4 * j * s.sw)
        } else {
            (4 * j * s.sw, 4 * j)
        };
        let v = fx.b.ins().load(ty, flags, src, from as i32);
        let v = if add {
            let old = fx.b.ins().load(ty, flags, dst, to as i32);
            fx.b.ins().fadd(old, v)
        } else {
            v
        };
        fx.b.ins().store(flags, v, dst, to as i32);
        j += if ty == F32X4 { 4 } else { 1 };
    }
}

/// The address of output row `oh` of `cols` row `row` (`cols: [ckk, p]`, rows of `ow`).
fn cols_row(fx: &mut FnCtx<'_>, s: &ConvSpec, cols: Value, row: Value, oh: Value) -> Value {
    let at = fx.b.ins().imul_imm_s(row, s.p() as i64);
    let o0 = fx.b.ins().imul_imm_s(oh, s.ow as i64);
    let at = fx.b.ins().iadd(at, o0);
    fx.elem(cols, at)
}

/// The address of the image element `(c, ih, kj − pw)` (`img: [c, h, w]`): where the row of
/// window column `kj` starts, as if the padding were in memory.
fn image_row(
    fx: &mut FnCtx<'_>,
    s: &ConvSpec,
    img: Value,
    (c, ih, kj): (Value, Value, Value),
) -> Value {
    let at = fx.b.ins().imul_imm_s(c, s.h as i64);
    let at = fx.b.ins().iadd(at, ih);
    let at = fx.b.ins().imul_imm_s(at, s.w as i64);
    let at = fx.b.ins().iadd(at, kj);
    let at = if s.pw == 0 {
        at
    } else {
        fx.b.ins().iadd_imm_s(at, -(s.pw as i64))
    };
    fx.elem(img, at)
}

/// One image `xb: [c, h, w]` into `cols: [ckk, p]`, `+0` in the padding. Copies only: the
/// in-range part of a row is contiguous when `sw == 1`, and then copied in `f32x4`. Without
/// padding every window is inside the image, and short rows are copied in straight-line code.
fn emit_im2col(fx: &mut FnCtx<'_>, s: &ConvSpec, xb: Value, cols: Value) {
    if s.unpadded() && s.ow <= UNROLLED_ROW {
        for_rows(fx, s, |fx, c, kj, row, oh, ih, _| {
            let drow = cols_row(fx, s, cols, row, oh);
            let src = image_row(fx, s, xb, (c, ih, kj));
            row_unrolled(fx, s, src, drow, false);
        });
        return;
    }
    let zero = fx.iconst(0);
    let own = fx.iconst(s.ow as i64);
    let zf = fx.f32const(0.0);
    for_rows(fx, s, |fx, c, kj, row, oh, ih, ok| {
        let drow = cols_row(fx, s, cols, row, oh);
        if_else(
            fx,
            ok,
            |fx| {
                let (lo, hi) = ow_range(fx, s, kj);
                counted_loop(fx, zero, lo, 1, |fx, ow| fx.store_at(zf, drow, ow, 0));
                // Element `ow·sw` of `src` is input column `ow·sw + kj − pw`, in range here.
                let src = image_row(fx, s, xb, (c, ih, kj));
                range_loop(fx, lo, hi, s.sw == 1, |fx, ow, ty| {
                    let i = fx.b.ins().imul_imm_s(ow, s.sw as i64);
                    let v = fx.load_at(ty, src, i, 0);
                    fx.store_at(v, drow, ow, 0);
                });
                counted_loop(fx, hi, own, 1, |fx, ow| fx.store_at(zf, drow, ow, 0));
            },
            |fx| counted_loop(fx, zero, own, 1, |fx, ow| fx.store_at(zf, drow, ow, 0)),
        );
    });
}

/// Scatter-add `cols: [ckk, p]` into one image `dxb: [c, h, w]`: each in-range element of a
/// row adds once (in `f32x4` when `sw == 1`: distinct elements, one addition each).
fn emit_col2im(fx: &mut FnCtx<'_>, s: &ConvSpec, cols: Value, dxb: Value) {
    if s.unpadded() && s.ow <= UNROLLED_ROW {
        for_rows(fx, s, |fx, c, kj, row, oh, ih, _| {
            let srow = cols_row(fx, s, cols, row, oh);
            let drow = image_row(fx, s, dxb, (c, ih, kj));
            row_unrolled(fx, s, srow, drow, true);
        });
        return;
    }
    for_rows(fx, s, |fx, c, kj, row, oh, ih, ok| {
        super::loops::if_then(fx, ok, |fx| {
            let (lo, hi) = ow_range(fx, s, kj);
            let srow = cols_row(fx, s, cols, row, oh);
            let drow = image_row(fx, s, dxb, (c, ih, kj));
            range_loop(fx, lo, hi, s.sw == 1, |fx, ow, ty| {
                let i = fx.b.ins().imul_imm_s(ow, s.sw as i64);
                let v = fx.load_at(ty, srow, ow, 0);
                let old = fx.load_at(ty, drow, i, 0);
                let sum = fx.b.ins().fadd(old, v);
                fx.store_at(sum, drow, i, 0);
            });
        });
    });
}

/// `y[oc, j] = y[oc, j] + bias[oc]` over one image's `[o, p]` result.
fn add_bias(fx: &mut FnCtx<'_>, y: Value, bias: Value, (o, p): (usize, usize)) {
    let zero = fx.iconst(0);
    let channels = fx.iconst(o as i64);
    let plane = fx.iconst(p as i64);
    counted_loop(fx, zero, channels, 1, |fx, oc| {
        let b = fx.load_at(types::F32, bias, oc, 0);
        let b4 = fx.splat(b);
        let at = fx.b.ins().imul_imm_s(oc, p as i64);
        let row = fx.elem(y, at);
        let main = fx.iconst((p & !3) as i64);
        counted_loop(fx, zero, main, 4, |fx, j| {
            let v = fx.load_at(F32X4, row, j, 0);
            let v = fx.b.ins().fadd(v, b4);
            fx.store_at(v, row, j, 0);
        });
        counted_loop(fx, main, plane, 1, |fx, j| {
            let v = fx.load_at(types::F32, row, j, 0);
            let v = fx.b.ins().fadd(v, b);
            fx.store_at(v, row, j, 0);
        });
    });
}

/// The body of a convolution kernel (module docs); defined with the GEMM import.
pub fn emit_conv(fx: &mut FnCtx<'_>, s: &ConvSpec) {
    let in0 = fx.arg_ptr(0);
    let in1 = fx.arg_ptr(1);
    let out = fx.arg_ptr(2);
    let cols = fx.arg_ptr(3);
    let bias = fx.arg_ptr(4);
    let b0 = fx.arg_int(0);
    let b1 = fx.arg_int(1);
    let (ckk, p, chw, o) = (s.ckk(), s.p(), s.chw(), s.o);
    match s.pass {
        ConvPass::InputGrad => {
            // This range's images only: the other thread zeroes (and fills) its own.
            let at = fx.b.ins().imul_imm_s(b0, chw as i64);
            let from = fx.elem(out, at);
            let images = fx.b.ins().isub(b1, b0);
            let n = fx.b.ins().imul_imm_s(images, chw as i64);
            zero_fill(fx, from, n);
        }
        ConvPass::Forward => {}
    }
    counted_loop(fx, b0, b1, 1, |fx, bi| {
        let img = fx.b.ins().imul_imm_s(bi, chw as i64);
        let per_out = fx.b.ins().imul_imm_s(bi, (o * p) as i64);
        match s.pass {
            ConvPass::Forward => {
                let xb = fx.elem(in0, img);
                emit_im2col(fx, s, xb, cols);
                let yb = fx.elem(out, per_out);
                gemm_call(fx, (o, p, ckk), 0, in1, cols, p, yb, p);
                if s.bias {
                    // While the image's result is in cache.
                    add_bias(fx, yb, bias, (o, p));
                }
            }
            ConvPass::InputGrad => {
                let dyb = fx.elem(in0, per_out);
                // A = Wᵀ: `W` is `[o, ckk]` = `[k, m]` (flags bit 0).
                gemm_call(fx, (ckk, p, o), 1, in1, dyb, p, cols, p);
                let dxb = fx.elem(out, img);
                emit_col2im(fx, s, cols, dxb);
            }
        }
    });
}
