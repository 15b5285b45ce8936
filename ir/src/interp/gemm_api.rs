//! The interpreter's matrix product as other executors call it, on raw `f32` slices: the JIT's
//! convolutions and product kernels go through these entry points so that their calls, and so
//! their bits, are the interpreter's (the kernel and its two paths are in `gemm.rs`).

use super::gemm::{gemm, gemm_library, uses_library, GemmScratch, View, GEMM_PANEL};
use super::kernels::{conv2d_weight_grad_images, ConvGeom};

/// The interpreter's product over raw slices, for other executors that must give the same
/// bits: `c[i·ldc + j] (=|+=) Σ_kk op(a)(i, kk) · op(b)(kk, j)` for `i < m`, `j < n`, exactly
/// as the interpreter's `matmul*` and convolutions compute a call of this shape (the GEMM library
/// when [`uses_library`] says so, else its own sequential kernel). The JIT's convolutions call
/// it with the interpreter's shapes.
///
/// `op(a)(i, kk)` is `a[i·k + kk]` (`ta = false`, `a` is `[m, k]`) or `a[kk·m + i]` (`ta`, `a` is
/// `[k, m]`); `op(b)(kk, j)` is `b[kk·ldb + j]` (`tb = false`) or `b[j·ldb + kk]` (`tb`). With
/// `accumulate`, each sum starts from the old `c[i·ldc + j]` instead of `−0` (as the
/// convolutions' weight gradient calls it). Panics if a slice is too short for those extents.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    a: &[f32],
    tb: bool,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if let Some((av, bv)) = gemm_views(m, n, k, ta, a, tb, b, ldb, c, ldc, accumulate) {
        gemm(
            m,
            n,
            k,
            av,
            bv,
            c,
            ldc,
            accumulate,
            &mut GemmScratch::default(),
        );
    }
}

/// [`gemm_f32`] on the GEMM library's path whatever the shape: for a range of columns of a
/// larger product that [`uses_library`] picks, starting at a multiple of [`GEMM_PANEL`] (the
/// JIT's product kernels split a product over threads, and regenerate seeded weights, in such
/// ranges). The library works in panels of [`GEMM_PANEL`] columns, so these are exactly the
/// calls the interpreter makes for those columns.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_panels(
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    a: &[f32],
    tb: bool,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if let Some((av, bv)) = gemm_views(m, n, k, ta, a, tb, b, ldb, c, ldc, accumulate) {
        gemm_library(m, n, k, av, bv, c, ldc, accumulate);
    }
}

/// The interpreter's convolution weight gradient over the images `images` into
/// `out: [o, c·kh·kw]` (`kernels::conv2d_weight_grad_images`; the whole gradient is the sum of
/// its two halves, `g.weight_grad_halves()`), with `g.weight_grad_scratch()` floats of
/// `scratch`. Panics if a slice is shorter than the geometry says.
pub fn conv2d_weight_grad_images_f32(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeom,
    images: std::ops::Range<usize>,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    conv2d_weight_grad_images(x, dy, g, images, out, scratch, &mut GemmScratch::default());
}

/// The operand views of a [`gemm_f32`] call, checked against the slices; `None` when nothing is
/// left to compute (an empty result, or `k = 0`, whose zero sums are written here).
#[allow(clippy::too_many_arguments)]
fn gemm_views<'a>(
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    a: &'a [f32],
    tb: bool,
    b: &'a [f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Option<(View<'a, f32>, View<'a, f32>)> {
    if m == 0 || n == 0 {
        return None;
    }
    assert!(
        n <= ldc && c.len() >= (m - 1) * ldc + n,
        "gemm_f32: c too short"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return None;
    }
    assert!(a.len() >= m * k, "gemm_f32: a too short");
    let b_need = if tb {
        assert!(k <= ldb, "gemm_f32: ldb < k");
        (n - 1) * ldb + k
    } else {
        assert!(n <= ldb, "gemm_f32: ldb < n");
        (k - 1) * ldb + n
    };
    assert!(b.len() >= b_need, "gemm_f32: b too short");
    let av = if ta {
        View::transposed(a, m)
    } else {
        View::rows(a, k)
    };
    let bv = if tb {
        View::transposed(b, ldb)
    } else {
        View::rows(b, ldb)
    };
    Some((av, bv))
}

/// Columns `j0 .. j1` of the `[m, n]` product `op(a) · op(b)` (operands as in [`gemm_f32`]),
/// with the bits the interpreter's `matmul*` gives them when it computes the whole product:
/// `c[i·ldc + (j − j0)]` for `i < m`, `j0 ≤ j < j1`. This lets a fused kernel produce a product
/// panel by panel (a weight gradient consumed as it is made, never stored whole). For a product
/// the GEMM library runs ([`uses_library`]), `j0` must be a multiple of [`GEMM_PANEL`], and
/// `ldc > 1` exactly when `n > 1` (the library picks its paths from whether a stride is 1, and
/// the whole product's stride is `n`); the interpreter's own kernel sums each element in the same
/// order however the columns are cut. Panics if those rules or the slices' extents are broken.
#[allow(clippy::too_many_arguments)]
pub fn matmul_columns_f32(
    (m, n, k): (usize, usize, usize),
    ta: bool,
    a: &[f32],
    tb: bool,
    b: &[f32],
    ldb: usize,
    (j0, j1): (usize, usize),
    c: &mut [f32],
    ldc: usize,
) {
    assert!(j0 <= j1 && j1 <= n, "matmul_columns_f32: bad column range");
    if m == 0 || j0 == j1 {
        return;
    }
    let cols = j1 - j0;
    assert!(
        cols <= ldc && c.len() >= (m - 1) * ldc + cols,
        "matmul_columns_f32: c too short"
    );
    if k == 0 {
        for i in 0..m {
            c[i * ldc..i * ldc + cols].fill(0.0);
        }
        return;
    }
    let library = uses_library(m, n, k);
    if library {
        assert!(
            j0 % GEMM_PANEL == 0 && (ldc > 1) == (n > 1),
            "matmul_columns_f32: a library product cut off its panels"
        );
    }
    let av = if ta {
        View::transposed(a, m)
    } else {
        View::rows(a, k)
    };
    // Column j0 of op(b) and on.
    let bv = if tb {
        View {
            data: b.get(j0 * ldb..).unwrap_or(&[]),
            rs: 1,
            cs: ldb,
        }
    } else {
        View {
            data: b.get(j0..).unwrap_or(&[]),
            rs: ldb,
            cs: 1,
        }
    };
    if library {
        gemm_library(m, cols, k, av, bv, c, ldc, false);
    } else {
        gemm(
            m,
            cols,
            k,
            av,
            bv,
            c,
            ldc,
            false,
            &mut GemmScratch::default(),
        );
    }
}
