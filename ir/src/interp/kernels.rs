//! The interpreter's kernels on flat row-major slices. Shapes are checked when the interpreter is
//! prepared, so these functions only index within the sizes they are given.

use super::float::Float;
use super::gemm::{gemm, GemmScratch, View};
use crate::verify::MAX_RANK;

/// `out[b, c, ..] = x[b, c, ..] + bias[c]` for `x: [B, C, inner]`.
pub(crate) fn bias_add<T: Float>(x: &[T], bias: &[T], inner: usize, out: &mut [T]) {
    let channels = bias.len();
    if inner == 0 || channels == 0 {
        return;
    }
    for (xb, ob) in x
        .chunks_exact(channels * inner)
        .zip(out.chunks_exact_mut(channels * inner))
    {
        for ((xc, oc), &bc) in xb
            .chunks_exact(inner)
            .zip(ob.chunks_exact_mut(inner))
            .zip(bias)
        {
            for (o, &v) in oc.iter_mut().zip(xc) {
                *o = v + bc;
            }
        }
    }
}

#[inline(always)]
pub(crate) fn map1<T: Float>(x: &[T], out: &mut [T], f: impl Fn(T) -> T) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
pub(crate) fn map2<T: Float>(x: &[T], y: &[T], out: &mut [T], f: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
        *o = f(a, b);
    }
}

/// `reduce_sum`, with the input's dimensions pre-merged: `dims[d]` elements along merged axis `d`,
/// `reduced[d]` whether it is summed away, `out_strides[d]` its stride in the output (0 when
/// reduced). Every output element is the sum of its inputs added one at a time in row-major input
/// order, starting from 0.
#[derive(Clone, Debug)]
pub(crate) struct ReducePlan {
    pub dims: Vec<usize>,
    pub reduced: Vec<bool>,
    pub out_strides: Vec<usize>,
}

impl ReducePlan {
    pub fn new(shape: &[usize], axes: &[usize]) -> ReducePlan {
        let mut dims: Vec<usize> = Vec::new();
        let mut reduced: Vec<bool> = Vec::new();
        for (a, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let r = axes.contains(&a);
            match (dims.last_mut(), reduced.last()) {
                (Some(last), Some(&lr)) if lr == r => *last *= d,
                _ => {
                    dims.push(d);
                    reduced.push(r);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            reduced.push(false);
        }
        let mut out_strides = vec![0; dims.len()];
        let mut stride = 1;
        for d in (0..dims.len()).rev() {
            if !reduced[d] {
                out_strides[d] = stride;
                stride *= dims[d];
            }
        }
        ReducePlan {
            dims,
            reduced,
            out_strides,
        }
    }
}

pub(crate) fn reduce_sum<T: Float>(x: &[T], plan: &ReducePlan, out: &mut [T]) {
    out.fill(T::zero());
    if x.is_empty() {
        return;
    }
    let nd = plan.dims.len();
    let inner = plan.dims[nd - 1];
    let inner_reduced = plan.reduced[nd - 1];
    let outer = &plan.dims[..nd - 1];
    let mut idx = [0usize; MAX_RANK + 1];
    let mut out_off = 0usize;
    for src in x.chunks_exact(inner) {
        if inner_reduced {
            let mut s = out[out_off];
            for &v in src {
                s += v;
            }
            out[out_off] = s;
        } else {
            for (o, &v) in out[out_off..][..inner].iter_mut().zip(src) {
                *o += v;
            }
        }
        // Advance the odometer over the outer (merged) dimensions.
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            out_off += plan.out_strides[d];
            if idx[d] < outer[d] {
                break;
            }
            out_off -= plan.out_strides[d] * outer[d];
            idx[d] = 0;
        }
    }
}

/// Geometry of a 2-D convolution `x: [b, c, h, w] ⋆ w: [o, c, kh, kw] → [b, o, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
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

impl ConvGeom {
    /// Rows of the im2col matrix: `c · kh · kw`.
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per image: `oh · ow`.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// Input row `ih` read by output row `o` through kernel row `k`, or `None` in the padding.
#[inline(always)]
fn src_index(o: usize, stride: usize, k: usize, pad: usize, len: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < len)
}

/// One image `x_b: [c, h, w]` into `cols: [c·kh·kw, oh·ow]` (zero where the window is in padding).
fn im2col<T: Float>(x_b: &[T], g: &ConvGeom, cols: &mut [T]) {
    im2col_rows(x_b, g, 0..g.ckk(), cols, g.p(), 0);
}

/// Scatter-add `cols: [c·kh·kw, oh·ow]` into one image `dx_b: [c, h, w]` (the adjoint of
/// [`im2col`]); contributions arrive in (kernel row, kernel column, oh, ow) order.
fn col2im<T: Float>(cols: &[T], g: &ConvGeom, dx_b: &mut [T]) {
    let p = g.p();
    for c in 0..g.c {
        let plane = &mut dx_b[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &cols[row * p..][..p];
                for (oh, srow) in src.chunks_exact(g.ow).enumerate() {
                    let Some(ih) = src_index(oh, g.sh, ki, g.ph, g.h) else {
                        continue;
                    };
                    let drow = &mut plane[ih * g.w..][..g.w];
                    for (ow, &v) in srow.iter().enumerate() {
                        if let Some(iw) = src_index(ow, g.sw, kj, g.pw, g.w) {
                            drow[iw] += v;
                        }
                    }
                }
            }
        }
    }
}

fn grow<T: Float>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::zero());
    }
    &mut v[..len]
}

/// `y[b] = W · im2col(x[b])`: each output is `Σ` over (c, ki, kj) in that order (the GEMM order).
pub(crate) fn conv2d<T: Float>(
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    y: &mut [T],
    cols: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
) {
    let (ckk, p) = (g.ckk(), g.p());
    let cols = grow(cols, ckk * p);
    for bi in 0..g.b {
        im2col(&x[bi * g.chw()..][..g.chw()], g, cols);
        let yb = &mut y[bi * g.o * p..][..g.o * p];
        gemm(
            g.o,
            p,
            ckk,
            View::rows(w, ckk),
            View::rows(cols, p),
            yb,
            p,
            false,
            gs,
        );
    }
}

/// `dx[b] = col2im(Wᵀ · dy[b])`, the exact adjoint of [`conv2d`] in `x`.
pub(crate) fn conv2d_input_grad<T: Float>(
    dy: &[T],
    w: &[T],
    g: &ConvGeom,
    dx: &mut [T],
    cols: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
) {
    let (ckk, p) = (g.ckk(), g.p());
    let cols = grow(cols, ckk * p);
    dx.fill(T::zero());
    for bi in 0..g.b {
        let dyb = &dy[bi * g.o * p..][..g.o * p];
        gemm(
            ckk,
            p,
            g.o,
            View::transposed(w, ckk),
            View::rows(dyb, p),
            cols,
            p,
            false,
            gs,
        );
        col2im(cols, g, &mut dx[bi * g.chw()..][..g.chw()]);
    }
}

/// Floats of scratch the weight gradient's image group aims at: the group's im2col columns and
/// its transposed `dy` (1 MiB, so that both stay in a core's L2 while the product reads them).
const WEIGHT_GRAD_GROUP_FLOATS: usize = 1 << 18;

impl ConvGeom {
    /// Images per product of the weight gradient: as many as [`WEIGHT_GRAD_GROUP_FLOATS`] hold
    /// (at least one, at most the batch). A function of the geometry alone, so every executor
    /// makes the same products.
    pub fn weight_grad_group(&self) -> usize {
        let per_image = (self.ckk() + self.o).saturating_mul(self.p()).max(1);
        (WEIGHT_GRAD_GROUP_FLOATS / per_image).clamp(1, self.b.max(1))
    }

    /// The weight gradient's two halves of the batch, `0 .. ⌈b/2⌉` and the rest, each summed on
    /// its own before the two sums are added (so two threads can take one each).
    pub fn weight_grad_halves(&self) -> [std::ops::Range<usize>; 2] {
        let h = self.b.div_ceil(2);
        [0..h, h..self.b]
    }

    /// Scratch floats [`conv2d_weight_grad_images`] needs: one group's im2col columns and `dy`.
    pub fn weight_grad_scratch(&self) -> usize {
        (self.ckk() + self.o) * self.weight_grad_group() * self.p()
    }
}

/// `dW = Σ_b dy[b] · im2col(x[b])ᵀ`, as the sum over the first half of the batch plus the sum
/// over the second ([`ConvGeom::weight_grad_halves`], each [`conv2d_weight_grad_images`]).
pub(crate) fn conv2d_weight_grad<T: Float>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
    dw: &mut [T],
    scratch: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
) {
    let [first, second] = g.weight_grad_halves();
    let groups = g.weight_grad_scratch();
    let scratch = grow(scratch, groups + dw.len());
    let (scratch, half) = scratch.split_at_mut(groups);
    conv2d_weight_grad_images(x, dy, g, first, dw, scratch, gs);
    if !second.is_empty() {
        conv2d_weight_grad_images(x, dy, g, second, half, scratch, gs);
        for (d, h) in dw.iter_mut().zip(half.iter()) {
            *d += *h;
        }
    }
}

/// `out = Σ_{b in images} dy[b] · im2col(x[b])ᵀ` (`out: [o, c·kh·kw]`; zeros for no images).
///
/// The images go in groups of [`ConvGeom::weight_grad_group`] from `images.start`. Per group `G`
/// of `n` images, with `cols_G = [im2col(x[i]) for i in G]` side by side (`[ckk, n·p]`) and
/// `dy_G` the group's `dy` as `[o, n·p]`: `out (=|+=) dy_G · cols_Gᵀ`, one product of depth
/// `n·p` per group (the first overwrites, the others accumulate). One deep product per group
/// instead of one of depth `p` per image is what makes the GEMM library fast here. `scratch`
/// holds at least [`ConvGeom::weight_grad_scratch`] floats.
pub fn conv2d_weight_grad_images<T: Float>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
    images: std::ops::Range<usize>,
    out: &mut [T],
    scratch: &mut [T],
    gs: &mut GemmScratch<T>,
) {
    let (ckk, p) = (g.ckk(), g.p());
    let out = &mut out[..g.o * ckk];
    if images.is_empty() || p == 0 {
        out.fill(T::zero());
        return;
    }
    let group = g.weight_grad_group();
    let (xcols, dyt) = scratch[..g.weight_grad_scratch()].split_at_mut(ckk * group * p);
    for g0 in images.clone().step_by(group) {
        let n = group.min(images.end - g0);
        let depth = n * p;
        for i in 0..n {
            let b = g0 + i;
            im2col_rows(&x[b * g.chw()..][..g.chw()], g, 0..ckk, xcols, depth, i * p);
            for oc in 0..g.o {
                dyt[oc * depth + i * p..][..p].copy_from_slice(&dy[(b * g.o + oc) * p..][..p]);
            }
        }
        let a = View::rows(&dyt[..g.o * depth], depth);
        let bt = View::transposed(&xcols[..ckk * depth], depth);
        gemm(g.o, ckk, depth, a, bt, out, ckk, g0 > images.start, gs);
    }
}

/// `dst = src` for the short runs of im2col (a convolution's output rows): in blocks of a
/// fixed 8 elements, which compile to vector moves, where a copy of any length would call
/// `memmove` once per run.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `dst`'s rows of `W` elements from `src`'s rows `stride` apart (`W` a compile-time width).
fn copy_rows<T: Copy, const W: usize>(dst: &mut [T], src: &[T], stride: usize, _ow: usize) {
    for (oh, d) in dst.chunks_exact_mut(W).enumerate() {
        if let Ok(s) = <&[T; W]>::try_from(&src[oh * stride..][..W]) {
            d.copy_from_slice(s);
        }
    }
}

/// Rows `rows` of one image's im2col matrix into `cols`, row `r` at `cols[(r − rows.start)·ld
/// + at ..][..p]` (zero where the window is in padding).
fn im2col_rows<T: Float>(
    x_b: &[T],
    g: &ConvGeom,
    rows: std::ops::Range<usize>,
    cols: &mut [T],
    ld: usize,
    at: usize,
) {
    let p = g.p();
    let inside = |o: usize, st: usize, k: usize, len: usize| o == 0 || (o - 1) * st + k <= len;
    let unpadded = g.ph == 0
        && g.pw == 0
        && g.sw == 1
        && inside(g.oh, g.sh, g.kh, g.h)
        && inside(g.ow, g.sw, g.kw, g.w);
    if unpadded {
        // Every window inside the image: each output row is `ow` contiguous inputs. Copies of
        // a width known at compile time are a few vector moves; of any other, a loop.
        let copy: fn(&mut [T], &[T], usize, usize) = match g.ow {
            4 => copy_rows::<T, 4>,
            8 => copy_rows::<T, 8>,
            16 => copy_rows::<T, 16>,
            24 => copy_rows::<T, 24>,
            32 => copy_rows::<T, 32>,
            _ => |dst, src, stride, ow| {
                for (d, s) in dst.chunks_exact_mut(ow).zip(src.chunks(stride)) {
                    copy_run(d, &s[..ow]);
                }
            },
        };
        for (r, row) in rows.enumerate() {
            let (c, ki, kj) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
            let src = &x_b[(c * g.h + ki) * g.w + kj..];
            copy(&mut cols[r * ld + at..][..p], src, g.sh * g.w, g.ow);
        }
        return;
    }
    for (r, row) in rows.clone().enumerate() {
        let (c, ki, kj) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
        let dst = &mut cols[r * ld + at..][..p];
        // With unit stride, the outputs `lo .. hi` of every row read one contiguous run of the
        // input row, from its column `lo + kj − pw`.
        let lo = g.pw.saturating_sub(kj).min(g.ow);
        let hi = (g.w + g.pw).saturating_sub(kj).min(g.ow).max(lo);
        for (oh, drow) in dst.chunks_exact_mut(g.ow).enumerate() {
            let Some(ih) = src_index(oh, g.sh, ki, g.ph, g.h) else {
                drow.fill(T::zero());
                continue;
            };
            let src = &x_b[(c * g.h + ih) * g.w..][..g.w];
            if g.sw == 1 {
                drow[..lo].fill(T::zero());
                if hi > lo {
                    copy_run(&mut drow[lo..hi], &src[lo + kj - g.pw..][..hi - lo]);
                }
                drow[hi..].fill(T::zero());
            } else {
                for (ow, d) in drow.iter_mut().enumerate() {
                    *d = match src_index(ow, g.sw, kj, g.pw, g.w) {
                        Some(iw) => src[iw],
                        None => T::zero(),
                    };
                }
            }
        }
    }
}

/// Geometry of a pooling window over `[b, c, h, w] → [b, c, oh, ow]` (no padding).
#[derive(Clone, Copy, Debug)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Index within the plane of the first maximum of window `(oh, ow)`: the window is scanned in
/// row-major order and a later element replaces the candidate only when strictly greater.
#[inline(always)]
fn window_argmax<T: Float>(plane: &[T], g: &PoolGeom, oh: usize, ow: usize) -> usize {
    let (h0, w0) = (oh * g.sh, ow * g.sw);
    let mut best = h0 * g.w + w0;
    let mut best_v = plane[best];
    for ki in 0..g.kh {
        let row = (h0 + ki) * g.w + w0;
        for (kj, &v) in plane[row..][..g.kw].iter().enumerate() {
            if v > best_v {
                best_v = v;
                best = row + kj;
            }
        }
    }
    best
}

pub(crate) fn maxpool2d<T: Float>(x: &[T], g: &PoolGeom, y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    for (plane, out) in x.chunks_exact(hw).zip(y.chunks_exact_mut(ohw)) {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                out[oh * g.ow + ow] = plane[window_argmax(plane, g, oh, ow)];
            }
        }
    }
}

pub(crate) fn maxpool2d_grad<T: Float>(dy: &[T], x: &[T], g: &PoolGeom, dx: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    dx.fill(T::zero());
    for ((plane, d), dxp) in x
        .chunks_exact(hw)
        .zip(dy.chunks_exact(ohw))
        .zip(dx.chunks_exact_mut(hw))
    {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let i = window_argmax(plane, g, oh, ow);
                dxp[i] += d[oh * g.ow + ow];
            }
        }
    }
}

/// Window mean: the window's elements summed in row-major order from 0, then divided by `kh·kw`.
pub(crate) fn avgpool2d<T: Float>(x: &[T], g: &PoolGeom, y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let count = T::from_usize(g.kh * g.kw);
    for (plane, out) in x.chunks_exact(hw).zip(y.chunks_exact_mut(ohw)) {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let mut s = T::zero();
                for ki in 0..g.kh {
                    let row = (oh * g.sh + ki) * g.w + ow * g.sw;
                    for &v in &plane[row..][..g.kw] {
                        s += v;
                    }
                }
                out[oh * g.ow + ow] = s / count;
            }
        }
    }
}

/// Every input element receives `dy / (kh·kw)` from each window containing it, windows in
/// row-major order.
pub(crate) fn avgpool2d_grad<T: Float>(dy: &[T], g: &PoolGeom, dx: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let count = T::from_usize(g.kh * g.kw);
    dx.fill(T::zero());
    for (d, dxp) in dy.chunks_exact(ohw).zip(dx.chunks_exact_mut(hw)) {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let v = d[oh * g.ow + ow] / count;
                for ki in 0..g.kh {
                    let row = (oh * g.sh + ki) * g.w + ow * g.sw;
                    for e in &mut dxp[row..][..g.kw] {
                        *e += v;
                    }
                }
            }
        }
    }
}

/// Every label must be a class index in `0..classes`.
pub(crate) fn check_labels(labels: &[i32], classes: usize) -> Result<(), String> {
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            return Err(format!(
                "label {l} of example {i} is not a class index (expected 0..{classes})"
            ));
        }
    }
    Ok(())
}

/// Row maximum (first maximum; a later element replaces it only when strictly greater) and
/// `Σ_j exp(x_j − max)` added in column order.
#[inline(always)]
fn row_max_sum<T: Float>(row: &[T]) -> (T, T) {
    let mut mx = row[0];
    for &v in &row[1..] {
        if v > mx {
            mx = v;
        }
    }
    let mut s = T::zero();
    for &v in row {
        s += (v - mx).exp();
    }
    (mx, s)
}

/// Mean cross-entropy: per row `ln(Σ exp(x − max)) − (x[label] − max)` in `T`; the per-row
/// losses are summed in `f64` (for `f32` and `f64` alike) and the mean rounded to `T` once.
pub(crate) fn softmax_xent<T: Float>(logits: &[T], labels: &[i32], classes: usize) -> T {
    let batch = labels.len();
    if batch == 0 || classes == 0 {
        return T::zero();
    }
    let mut total = 0.0f64;
    for (row, &l) in logits.chunks_exact(classes).zip(labels) {
        let (mx, s) = row_max_sum(row);
        let loss = s.ln() - (row[l as usize] - mx);
        total += loss.to_f64();
    }
    T::from_f64(total / batch as f64)
}

/// `(exp(x − max) / Σ − onehot) / B`, every step rounded to `T`.
pub(crate) fn softmax_xent_grad<T: Float>(
    logits: &[T],
    labels: &[i32],
    classes: usize,
    out: &mut [T],
) {
    let batch = T::from_usize(labels.len());
    if classes == 0 {
        return;
    }
    for ((row, o), &l) in logits
        .chunks_exact(classes)
        .zip(out.chunks_exact_mut(classes))
        .zip(labels)
    {
        let (mx, s) = row_max_sum(row);
        for (j, (oj, &v)) in o.iter_mut().zip(row).enumerate() {
            let p = (v - mx).exp() / s;
            let t = if j == l as usize { p - T::one() } else { p };
            *oj = t / batch;
        }
    }
}

/// Index of the first maximum of each row (a later element wins only when strictly greater).
pub(crate) fn argmax<T: Float>(x: &[T], classes: usize, out: &mut [i32]) {
    if classes == 0 {
        out.fill(0);
        return;
    }
    for (row, o) in x.chunks_exact(classes).zip(out.iter_mut()) {
        let mut best = 0usize;
        for (j, &v) in row.iter().enumerate().skip(1) {
            if v > row[best] {
                best = j;
            }
        }
        *o = best as i32;
    }
}
