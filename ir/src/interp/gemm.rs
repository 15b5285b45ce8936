//! The matrix-product kernel shared by `matmul*` and the convolutions.
//!
//! `C (=|+=) A · B` with `A: [m, k]` and `B: [k, n]` given as strided views (so every transpose is
//! just a pair of strides), `C` row-major with leading dimension `ldc`.
//!
//! **Two paths, chosen by the shape alone** ([`uses_library`]), so that every executor that
//! makes the same calls gets the same bits:
//!
//! - **Large `f32` products** (`m·n·k ≥ 2^12` multiply-adds, `k > 1`) call the `gemm` crate (AVX-512 or
//!   AVX2 with FMA kernels, picked at run time) in fixed panels of [`GEMM_PANEL`] columns of `C`
//!   counted from column 0, one library call per panel. The library's summation order depends on
//!   the call's shape (its blocking and its small-matrix paths), never on the data, the address
//!   or the thread; fixing the panels makes the calls, and so the bits, the same whoever splits
//!   the columns, as long as they cut at multiples of [`GEMM_PANEL`]. The JIT splits imported
//!   products over its threads that way, and regenerates seeded weights [`GEMM_PANEL`] rows at a
//!   time, so it gives the interpreter's bits for any thread count. The bits do depend on the
//!   CPU's instruction set (FMA or not), which is the price of the library's speed.
//! - **Everything else** (small products, outer products (`k = 1`), and `f64`, which only the
//!   gradient checks use) runs our own kernel, whose order is the contract the JIT's Cranelift tiles reproduce: every
//!   element is `c[i][j] = (((c0 + a[i][0]·b[0][j]) + a[i][1]·b[1][j]) + ...) + a[i][k-1]·b[k-1][j]`,
//!   products rounded to `T`, added one at a time in ascending `k`, no fused multiply-add,
//!   starting from `c0 = −0` (or the old `c[i][j]` when accumulating). `−0 + x` is `x` for
//!   every `x`, so a sum is exactly its first product plus the others: an outer product
//!   (`k = 1`) is the rounded product `a·b` itself, which a kernel can make wherever it reads
//!   it with one multiplication. Blocking, packing and vector width change only where the
//!   partial sums live, never the order, so this path is bit-identical on every CPU and for
//!   every tile size.
//!
//! Our kernel packs both operands into zero-padded panels (A in `MR`-row strips, B in `NR`-column
//! strips, `k` running along each strip), and an `MR × NR` register tile is updated once per `k`
//! with contiguous loads, which LLVM vectorises. On x86-64 the same code is also compiled with
//! AVX2 enabled and chosen at run time when the CPU has it (no FMA: the products and sums are
//! rounded exactly as in the portable build).

use super::float::Float;

/// A read-only 2-D view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[rows, cols]` matrix (so this view is `[cols, rows]`).
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// Packing buffers, grown on first use and reused afterwards.
pub(crate) struct GemmScratch<T> {
    pa: Vec<T>,
    pb: Vec<T>,
}

impl<T> Default for GemmScratch<T> {
    fn default() -> Self {
        GemmScratch {
            pa: Vec::new(),
            pb: Vec::new(),
        }
    }
}

/// Multiply-adds (`m·n·k`) from which an `f32` product calls the GEMM library. Below it the
/// call's dispatch costs more than the library's wider kernels win, and the JIT keeps such
/// products in its own Cranelift tiles. 2^12, not higher: at batch 1 the library's
/// matrix-vector path beats the tile (which packs all of `B` for one row) from a few thousand
/// multiply-adds on (LeNet-300-100's 1×100×300 product: 27 µs in the tile, 2 µs in the library).
pub const LIBRARY_MIN_WORK: usize = 1 << 12;

/// Columns of `C` per GEMM-library call: the unit in which callers may split a large product.
pub const GEMM_PANEL: usize = 64;

/// Whether an `f32` product of this shape runs in the GEMM library (module docs). Never an
/// outer product (`k = 1`, a batch-1 weight gradient): each element is one rounded product, there
/// is nothing for the library to block, and its calls cost more than the products
/// (LeNet-300-100's 300×784 gradient: 35 µs in 13 panel calls, where a pass that also updates
/// the weight takes about 20). Our own order makes it the product `a·b`, which a kernel can
/// compute wherever it needs the value instead of storing it (the JIT does, inside the weight's
/// update).
pub fn uses_library(m: usize, n: usize, k: usize) -> bool {
    k > 1 && m.saturating_mul(n).saturating_mul(k) >= LIBRARY_MIN_WORK
}

/// Depth of one pass over the packed panels (keeps a `KC × NR` panel of B in L1).
const KC: usize = 256;

/// `c[i*ldc + j] (=|+=) Σ_k a(i, k) · b(k, j)` for `i < m`, `j < n`, in the order documented above.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    s: &mut GemmScratch<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The library writes (or accumulates into) C itself: no zero fill first.
    if T::IS_F32 && k > 0 && uses_library(m, n, k) {
        if let (Some(ad), Some(bd), Some(cd)) = (
            T::as_f32s(a.data),
            T::as_f32s(b.data),
            T::as_f32s_mut(&mut c[..]),
        ) {
            let av = View {
                data: ad,
                rs: a.rs,
                cs: a.cs,
            };
            let bv = View {
                data: bd,
                rs: b.rs,
                cs: b.cs,
            };
            return gemm_library(m, n, k, av, bv, cd, ldc, accumulate);
        }
    }
    if !accumulate {
        // Every sum starts from −0 (module docs); an empty one is +0.
        let start = if k == 0 { T::zero() } else { T::from_f32(-0.0) };
        for i in 0..m {
            c[i * ldc..i * ldc + n].fill(start);
        }
    }
    if k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), which is all `gemm_avx2`
            // requires; the function itself is safe Rust compiled with that feature enabled.
            unsafe { gemm_avx2(m, n, k, a, b, c, ldc, s) };
            return;
        }
    }
    gemm_portable(m, n, k, a, b, c, ldc, s);
}

/// The last element a view reaches for `rows × cols`, which must lie inside its data.
fn check_view(v: View<'_, f32>, rows: usize, cols: usize, what: &str) {
    let last = (rows - 1) * v.rs + (cols - 1) * v.cs;
    assert!(last < v.data.len(), "gemm: {what} too short");
}

/// `C (=|+=) A·B` through the `gemm` crate, one call per [`GEMM_PANEL`] columns from column 0
/// (module docs). `m`, `n`, `k` are all positive.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_library(
    m: usize,
    n: usize,
    k: usize,
    a: View<'_, f32>,
    b: View<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    check_view(a, m, k, "a");
    check_view(b, k, n, "b");
    assert!(
        n <= ldc && (m - 1) * ldc + n <= c.len(),
        "gemm: c too short"
    );
    let mut j0 = 0;
    while j0 < n {
        let cols = GEMM_PANEL.min(n - j0);
        // SAFETY: the three checks above keep every element the call touches inside its slice:
        // A's `(i, kk)` at `i·rs + kk·cs` for `i < m`, `kk < k`; this panel of B's `(kk, j0 + j)`
        // and of C's `(i, j0 + j)` for `j < cols`, with `j0 + cols ≤ n`. `c` is borrowed mutably,
        // so it overlaps neither operand, and the call runs on this thread only
        // (`Parallelism::None`). The library computes `C = 1·C + 1·A·B` with `read_dst`, else
        // `C = A·B` without reading C.
        unsafe {
            ::gemm::gemm(
                m,
                cols,
                k,
                c.as_mut_ptr().add(j0),
                1,
                ldc as isize,
                accumulate,
                a.data.as_ptr(),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(j0 * b.cs),
                b.cs as isize,
                b.rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                ::gemm::Parallelism::None,
            );
        }
        j0 += cols;
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_portable<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [T],
    ldc: usize,
    s: &mut GemmScratch<T>,
) {
    if T::IS_F32 {
        gemm_tiled::<T, 4, 8>(m, n, k, a, b, c, ldc, s);
    } else {
        gemm_tiled::<T, 4, 4>(m, n, k, a, b, c, ldc, s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx2<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [T],
    ldc: usize,
    s: &mut GemmScratch<T>,
) {
    if T::IS_F32 {
        gemm_tiled::<T, 4, 16>(m, n, k, a, b, c, ldc, s);
    } else {
        gemm_tiled::<T, 4, 8>(m, n, k, a, b, c, ldc, s);
    }
}

fn grow<T: Float>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::zero());
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_tiled<T: Float, const MR: usize, const NR: usize>(
    m: usize,
    n: usize,
    k: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [T],
    ldc: usize,
    s: &mut GemmScratch<T>,
) {
    let mb = m.div_ceil(MR);
    let nb = n.div_ceil(NR);
    grow(&mut s.pa, mb * MR * k);
    grow(&mut s.pb, nb * NR * k);
    pack_a::<T, MR>(m, k, a, &mut s.pa);
    pack_b::<T, NR>(k, n, b, &mut s.pb);
    let (pa, pb) = (&s.pa[..], &s.pb[..]);
    let mut kb = 0;
    while kb < k {
        let kc = KC.min(k - kb);
        for jb in 0..nb {
            let j0 = jb * NR;
            let cols = NR.min(n - j0);
            let bp = &pb[(jb * k + kb) * NR..][..kc * NR];
            for ib in 0..mb {
                let i0 = ib * MR;
                let rows = MR.min(m - i0);
                let ap = &pa[(ib * k + kb) * MR..][..kc * MR];
                let mut acc = [[T::zero(); NR]; MR];
                for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                    acc_row[..cols].copy_from_slice(&c[(i0 + r) * ldc + j0..][..cols]);
                }
                kernel::<T, MR, NR>(ap, bp, &mut acc);
                for (r, acc_row) in acc.iter().enumerate().take(rows) {
                    c[(i0 + r) * ldc + j0..][..cols].copy_from_slice(&acc_row[..cols]);
                }
            }
        }
        kb += kc;
    }
}

#[inline(always)]
fn kernel<T: Float, const MR: usize, const NR: usize>(
    ap: &[T],
    bp: &[T],
    acc_out: &mut [[T; NR]; MR],
) {
    let mut acc = *acc_out;
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        let a: &[T; MR] = a.try_into().expect("MR-wide chunk");
        let b: &[T; NR] = b.try_into().expect("NR-wide chunk");
        for r in 0..MR {
            let ar = a[r];
            for j in 0..NR {
                acc[r][j] += ar * b[j];
            }
        }
    }
    *acc_out = acc;
}

/// `A` into strips of `MR` rows: `pa[(ib*k + kk)*MR + r] = a(ib*MR + r, kk)`, zero past `m`.
#[inline(always)]
fn pack_a<T: Float, const MR: usize>(m: usize, k: usize, a: View<'_, T>, pa: &mut [T]) {
    for ib in 0..m.div_ceil(MR) {
        let i0 = ib * MR;
        let rows = MR.min(m - i0);
        let strip = &mut pa[ib * k * MR..][..k * MR];
        if a.cs == 1 && rows == MR {
            for r in 0..MR {
                let src = &a.data[(i0 + r) * a.rs..][..k];
                for (kk, &v) in src.iter().enumerate() {
                    strip[kk * MR + r] = v;
                }
            }
        } else {
            for kk in 0..k {
                let dst = &mut strip[kk * MR..][..MR];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = if r < rows {
                        a.data[(i0 + r) * a.rs + kk * a.cs]
                    } else {
                        T::zero()
                    };
                }
            }
        }
    }
}

/// `B` into strips of `NR` columns: `pb[(jb*k + kk)*NR + j] = b(kk, jb*NR + j)`, zero past `n`.
#[inline(always)]
fn pack_b<T: Float, const NR: usize>(k: usize, n: usize, b: View<'_, T>, pb: &mut [T]) {
    for jb in 0..n.div_ceil(NR) {
        let j0 = jb * NR;
        let cols = NR.min(n - j0);
        let strip = &mut pb[jb * k * NR..][..k * NR];
        if b.cs == 1 {
            for kk in 0..k {
                let dst = &mut strip[kk * NR..][..NR];
                dst[..cols].copy_from_slice(&b.data[kk * b.rs + j0..][..cols]);
                dst[cols..].fill(T::zero());
            }
        } else {
            for j in 0..NR {
                if j < cols {
                    let base = (j0 + j) * b.cs;
                    for kk in 0..k {
                        strip[kk * NR + j] = b.data[base + kk * b.rs];
                    }
                } else {
                    for kk in 0..k {
                        strip[kk * NR + j] = T::zero();
                    }
                }
            }
        }
    }
}
