//! The kernels of the masked products (`mask_index`, `masked_matmul_nt`, `masked_matmul`,
//! `masked_grad`): one definition, which the interpreter runs and the JIT's runtime calls, so
//! both give the same bits.
//!
//! A masked weight `W: [O, I]` is stored in full, zero outside its mask; the products visit only
//! the kept positions, given as their ascending flat indices (`mask_index`). Every output element
//! is summed in one fixed order (ascending kept position, or ascending batch row), whatever the
//! thread count.

use super::float::Float;

/// The positions `mask` keeps (non-zero entries), ascending, into `out`; an error unless there
/// are exactly `nnz` of them (the program's `masked(nnz=N)` says how many a run's mask keeps).
pub fn mask_positions<T: Float>(mask: &[T], nnz: usize, out: &mut Vec<u64>) -> Result<(), String> {
    out.clear();
    out.extend(
        mask.iter()
            .enumerate()
            .filter(|(_, &m)| m != T::zero())
            .map(|(i, _)| i as u64),
    );
    if out.len() != nnz {
        return Err(format!(
            "the mask keeps {} entries, but the program says {nnz}",
            out.len()
        ));
    }
    Ok(())
}

/// Shapes of a masked product: batch `b`, the weight's rows `o` and columns `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskedDims {
    pub b: usize,
    pub o: usize,
    pub i: usize,
}

fn check(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: {got} elements, expected {want}"));
    }
    Ok(())
}

fn check_positions(pos: &[u64], len: usize) -> Result<(), String> {
    if pos.last().is_some_and(|&p| p as usize >= len) {
        return Err(format!(
            "a mask position is outside the weight's {len} entries"
        ));
    }
    Ok(())
}

/// `y = x · Wᵀ` over the kept entries (`x: [b, i]`, `y: [b, o]`); `y[r, k]` sums
/// `x[r, c] · W[k, c]` in ascending position order.
pub fn masked_matmul_nt<T: Float>(
    d: MaskedDims,
    x: &[T],
    w: &[T],
    pos: &[u64],
    y: &mut [T],
) -> Result<(), String> {
    check("masked_matmul_nt input", x.len(), d.b * d.i)?;
    check("masked_matmul_nt weight", w.len(), d.o * d.i)?;
    check("masked_matmul_nt result", y.len(), d.b * d.o)?;
    check_positions(pos, w.len())?;
    y.fill(T::zero());
    for &p in pos {
        let p = p as usize;
        let (k, c) = (p / d.i, p % d.i);
        let wv = w[p];
        for r in 0..d.b {
            y[r * d.o + k] += x[r * d.i + c] * wv;
        }
    }
    Ok(())
}

/// `dx = dy · W` over the kept entries (`dy: [b, o]`, `dx: [b, i]`); `dx[r, c]` sums
/// `dy[r, k] · W[k, c]` in ascending position order.
pub fn masked_matmul<T: Float>(
    d: MaskedDims,
    dy: &[T],
    w: &[T],
    pos: &[u64],
    dx: &mut [T],
) -> Result<(), String> {
    check("masked_matmul gradient", dy.len(), d.b * d.o)?;
    check("masked_matmul weight", w.len(), d.o * d.i)?;
    check("masked_matmul result", dx.len(), d.b * d.i)?;
    check_positions(pos, w.len())?;
    dx.fill(T::zero());
    for &p in pos {
        let p = p as usize;
        let (k, c) = (p / d.i, p % d.i);
        let wv = w[p];
        for r in 0..d.b {
            dx[r * d.i + c] += dy[r * d.o + k] * wv;
        }
    }
    Ok(())
}

/// `g = (dyᵀ · x) ⊙ M`: at each kept position `(k, c)` the sum over batch rows, in order, of
/// `dy[r, k] · x[r, c]`; zero elsewhere.
pub fn masked_grad<T: Float>(
    d: MaskedDims,
    dy: &[T],
    x: &[T],
    pos: &[u64],
    g: &mut [T],
) -> Result<(), String> {
    check("masked_grad gradient", dy.len(), d.b * d.o)?;
    check("masked_grad input", x.len(), d.b * d.i)?;
    check("masked_grad result", g.len(), d.o * d.i)?;
    check_positions(pos, g.len())?;
    g.fill(T::zero());
    for &p in pos {
        let p = p as usize;
        let (k, c) = (p / d.i, p % d.i);
        let mut s = T::zero();
        for r in 0..d.b {
            s += dy[r * d.o + k] * x[r * d.i + c];
        }
        g[p] = s;
    }
    Ok(())
}

/// Which masked convolution a [`masked_conv`] call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// `y = conv2d(x, W)`: operands `(x, W)`.
    Forward,
    /// `dx = conv2d_input_grad(dy, W)`: operands `(dy, W)`.
    InputGrad,
    /// `g = conv2d_weight_grad(x, dy) ⊙ M`: operands `(x, dy)`.
    WeightGrad,
}

/// The output positions `o` (of `out_len`) whose input position `o·s + k − p` lies in
/// `0..in_len`.
fn span(k: usize, s: usize, p: usize, in_len: usize, out_len: usize) -> std::ops::Range<usize> {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    let hi = if in_len + p > k {
        ((in_len - 1 + p - k) / s + 1).min(out_len)
    } else {
        0
    };
    lo..hi.max(lo)
}

/// A convolution with a masked weight `[O, C, KH, KW]` over its kept positions `pos` (geometry
/// `g`, as the dense convolution's): each kept weight meets every output position of its plane,
/// in ascending position order (the weight gradient: each kept position's sum over batch rows,
/// output rows and columns in order). `a`, `b` are the operands `kind` names.
pub fn masked_conv<T: Float>(
    kind: ConvKind,
    g: &super::kernels::ConvGeom,
    a: &[T],
    b: &[T],
    pos: &[u64],
    out: &mut [T],
) -> Result<(), String> {
    let x_len = g.b * g.c * g.h * g.w;
    let y_len = g.b * g.o * g.oh * g.ow;
    let w_len = g.o * g.c * g.kh * g.kw;
    let (a_len, b_len, out_len) = match kind {
        ConvKind::Forward => (x_len, w_len, y_len),
        ConvKind::InputGrad => (y_len, w_len, x_len),
        ConvKind::WeightGrad => (x_len, y_len, w_len),
    };
    check("masked convolution operand 1", a.len(), a_len)?;
    check("masked convolution operand 2", b.len(), b_len)?;
    check("masked convolution result", out.len(), out_len)?;
    check_positions(pos, w_len)?;
    out.fill(T::zero());
    let plane = g.kh * g.kw;
    for &p in pos {
        let p = p as usize;
        let (o, c) = (p / (g.c * plane), p / plane % g.c);
        let (kh, kw) = (p % plane / g.kw, p % g.kw);
        let rows = span(kh, g.sh, g.ph, g.h, g.oh);
        let cols = span(kw, g.sw, g.pw, g.w, g.ow);
        let mut sum = T::zero();
        for bb in 0..g.b {
            let x_plane = (bb * g.c + c) * g.h * g.w;
            let y_plane = (bb * g.o + o) * g.oh * g.ow;
            for oh in rows.clone() {
                let x_row = x_plane + (oh * g.sh + kh - g.ph) * g.w;
                let y_row = y_plane + oh * g.ow;
                for ow in cols.clone() {
                    let xi = x_row + ow * g.sw + kw - g.pw;
                    let yi = y_row + ow;
                    match kind {
                        ConvKind::Forward => out[yi] += a[xi] * b[p],
                        ConvKind::InputGrad => out[xi] += a[yi] * b[p],
                        ConvKind::WeightGrad => sum += b[yi] * a[xi],
                    }
                }
            }
        }
        if kind == ConvKind::WeightGrad {
            out[p] = sum;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masked products against the dense ones on a masked weight (exact here: small
    /// integers).
    #[test]
    fn masked_products_are_the_dense_ones_on_the_mask() {
        let d = MaskedDims { b: 2, o: 3, i: 4 };
        let mask: Vec<f32> = (0..12).map(|p| f32::from(u8::from(p % 3 != 1))).collect();
        let w: Vec<f32> = (0..12).map(|p| (p as f32 - 5.0) * mask[p]).collect();
        let x: Vec<f32> = (0..8).map(|v| v as f32 - 3.0).collect();
        let dy: Vec<f32> = (0..6).map(|v| 2.0 - v as f32).collect();
        let mut pos = Vec::new();
        mask_positions(&mask, 8, &mut pos).unwrap();
        assert!(mask_positions(&mask, 7, &mut Vec::new()).is_err());
        let mut y = vec![0f32; 6];
        masked_matmul_nt(d, &x, &w, &pos, &mut y).unwrap();
        let mut dx = vec![0f32; 8];
        masked_matmul(d, &dy, &w, &pos, &mut dx).unwrap();
        let mut g = vec![0f32; 12];
        masked_grad(d, &dy, &x, &pos, &mut g).unwrap();
        for r in 0..2 {
            for k in 0..3 {
                let want: f32 = (0..4).map(|c| x[r * 4 + c] * w[k * 4 + c]).sum();
                assert_eq!(y[r * 3 + k], want);
            }
            for c in 0..4 {
                let want: f32 = (0..3).map(|k| dy[r * 3 + k] * w[k * 4 + c]).sum();
                assert_eq!(dx[r * 4 + c], want);
            }
        }
        for k in 0..3 {
            for c in 0..4 {
                let want: f32 = (0..2).map(|r| dy[r * 3 + k] * x[r * 4 + c]).sum();
                assert_eq!(g[k * 4 + c], want * mask[k * 4 + c]);
            }
        }
    }

    /// The masked convolutions against a direct dense convolution on a masked weight, with
    /// stride 2 and padding 1 (small integers: exact).
    #[test]
    fn masked_convolutions_are_the_dense_ones_on_the_mask() {
        use super::super::kernels::ConvGeom;
        let g = ConvGeom {
            b: 2,
            c: 2,
            h: 5,
            w: 4,
            o: 3,
            kh: 3,
            kw: 2,
            sh: 2,
            sw: 1,
            ph: 1,
            pw: 1,
            oh: 3,
            ow: 5,
        };
        let n = g.o * g.c * g.kh * g.kw;
        let mask: Vec<f32> = (0..n).map(|p| f32::from(u8::from(p % 3 != 0))).collect();
        let w: Vec<f32> = (0..n).map(|p| ((p % 5) as f32 - 2.0) * mask[p]).collect();
        let x: Vec<f32> = (0..g.b * g.c * g.h * g.w)
            .map(|v| (v % 7) as f32 - 3.0)
            .collect();
        let dy: Vec<f32> = (0..g.b * g.o * g.oh * g.ow)
            .map(|v| (v % 4) as f32 - 1.0)
            .collect();
        let mut pos = Vec::new();
        let kept = mask.iter().filter(|&&m| m != 0.0).count();
        mask_positions(&mask, kept, &mut pos).unwrap();
        let at = |bb: usize, c: usize, ih: isize, iw: isize| -> Option<usize> {
            (ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w)
                .then(|| ((bb * g.c + c) * g.h + ih as usize) * g.w + iw as usize)
        };
        let mut y = vec![0f32; dy.len()];
        let mut want_y = vec![0f32; dy.len()];
        let mut dx = vec![0f32; x.len()];
        let mut want_dx = vec![0f32; x.len()];
        let mut gw = vec![0f32; n];
        let mut want_g = vec![0f32; n];
        for bb in 0..g.b {
            for o in 0..g.o {
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let yi = ((bb * g.o + o) * g.oh + oh) * g.ow + ow;
                        for c in 0..g.c {
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let ih = (oh * g.sh + kh) as isize - g.ph as isize;
                                    let iw = (ow * g.sw + kw) as isize - g.pw as isize;
                                    let Some(xi) = at(bb, c, ih, iw) else {
                                        continue;
                                    };
                                    let p = ((o * g.c + c) * g.kh + kh) * g.kw + kw;
                                    want_y[yi] += x[xi] * w[p];
                                    want_dx[xi] += dy[yi] * w[p];
                                    want_g[p] += dy[yi] * x[xi] * mask[p];
                                }
                            }
                        }
                    }
                }
            }
        }
        masked_conv(ConvKind::Forward, &g, &x, &w, &pos, &mut y).unwrap();
        masked_conv(ConvKind::InputGrad, &g, &dy, &w, &pos, &mut dx).unwrap();
        masked_conv(ConvKind::WeightGrad, &g, &x, &dy, &pos, &mut gw).unwrap();
        assert_eq!(y, want_y);
        assert_eq!(dx, want_dx);
        assert_eq!(gw, want_g);
    }
}
