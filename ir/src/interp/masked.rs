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
pub fn mask_positions<T: Float>(mask: &[T], nnz: usize, out: &mut Vec<u32>) -> Result<(), String> {
    out.clear();
    out.extend(
        mask.iter()
            .enumerate()
            .filter(|(_, &m)| m != T::zero())
            .map(|(i, _)| i as u32),
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

fn check_positions(pos: &[u32], len: usize) -> Result<(), String> {
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
    pos: &[u32],
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
    pos: &[u32],
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
    pos: &[u32],
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
}
