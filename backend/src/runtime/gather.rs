//! Gathering a selection's candidates from a weight's gradient, made whole and walked row by
//! row, while reading a tracked weight only where it is not its initial value.
//!
//! A tracked weight `w` is `w0` with its entries written over it, so at every other position its
//! Dropback score is `|(w0 − g·lr) − w0|`: `|g·lr|` give or take two roundings on the scale of
//! `w0`. A position whose `|g·lr|` is below [`untracked_threshold`] cannot reach the floor, so
//! only the others and the entries are scored, with `stream::score`'s operations: the
//! candidates (and their bits) are those of scoring every position, and the pass reads the
//! gradient, just made, instead of streaming `w` and `w0` whole. Walking whole rows gives the
//! candidates in position order as they are found: the selection takes them as they are.

use sparsec_ir::interp::{score_key, TrackedValues, GEMM_PANEL};
use sparsec_ir::module::Init;

use super::exec::Candidate;
use super::stream::{score, Gradient};

/// A bound on `|w0|` for a weight initialised by `init` times `scale`: the uniform draw is
/// `lo + (hi − lo)·u` rounded, so it may land on either bound and a rounding beyond it.
pub(super) fn initial_bound(init: Init, scale: f32) -> f32 {
    let unscaled = match init {
        Init::Zeros => 0.0,
        Init::Ones => 1.0,
        Init::Uniform { lo, hi } => lo.abs().max(hi.abs()),
    };
    (f64::from(unscaled) * f64::from(scale.abs()) * (1.0 + 1.0 / 1_048_576.0)) as f32
}

/// The least `|fl(g·lr)|` at which an untracked position's score `|fl(fl(w0 − x) − w0)|`,
/// `x = fl(g·lr)`, `|w0| ≤ w0_bound`, can reach `floor`.
///
/// Each of the two roundings is off by at most `u = 2⁻²⁴` of its result, or `2⁻¹²⁶` where the
/// result is flushed to zero (FTZ; DAZ only shrinks the operands), so the score is at most
/// `|x|(1 + u)² + u(1 + u)·w0_bound + 2⁻¹²⁵(1 + u)`, below `|x|(1 + 4u) + 2u·w0_bound + 2⁻¹²⁴`.
/// Below the returned value that is below `floor`. NaN or infinite inputs give a value nothing
/// is below (a NaN, or −∞): then every position is scored.
pub(super) fn untracked_threshold(floor: f32, w0_bound: f32) -> f32 {
    const U: f64 = 1.0 / 16_777_216.0;
    let slack = 2.0 * U * f64::from(w0_bound) + 2f64.powi(-124);
    let t = (f64::from(floor) - slack) / (1.0 + 4.0 * U);
    let rounded = t as f32;
    // Rounded down, so that below it stays below `t`.
    if f64::from(rounded) > t {
        rounded.next_down()
    } else {
        rounded
    }
}

/// The row stride of a gradient made whole for gathering, `n` columns wide: `n` (the
/// library's call and bits are the same for any stride above 1, and 1 for one column, as the
/// whole product's).
pub(super) fn gather_ld(n: usize) -> usize {
    n.max(1)
}

/// What one score kernel gathers from: the tracked weight `[m, n]` (its `w0` and entries), the
/// step's learning rate, and the selection's floor; candidates are numbered from `offset` and
/// a walk that appends more than `cap` gives up.
pub(super) struct Gathering<'a> {
    pub w0: &'a [f32],
    pub entries: Option<&'a TrackedValues<f32>>,
    pub m: usize,
    pub n: usize,
    pub lr: f32,
    /// A candidate's score is at or above this, or NaN.
    pub floor: f32,
    /// [`untracked_threshold`] of the floor.
    pub threshold: f32,
    pub offset: usize,
    pub cap: usize,
}

/// Columns `cols` of a weight's gradient, made (row `i` at `g[i·ld..]`), with their reach
/// masks (`masks[w·m + i]`: row `i`, the segment's columns `64w .. 64w + 64`).
pub(super) struct Segment<'a> {
    pub cols: (usize, usize),
    pub g: &'a [f32],
    pub ld: usize,
    pub masks: &'a [u64],
}

impl Gathering<'_> {
    /// Columns `(j0, j1)` of `gradient` into `g` (rows `ld` apart), each 64-column panel by
    /// its own call, and their reach masks into `masks`: a [`Segment`]'s parts.
    pub(super) fn make(
        &self,
        gradient: &Gradient<'_>,
        (j0, j1): (usize, usize),
        (g, ld): (&mut [f32], usize),
        masks: &mut Vec<u64>,
    ) {
        for p0 in (j0..j1).step_by(GEMM_PANEL) {
            let p1 = (p0 + GEMM_PANEL).min(j1);
            gradient.columns((p0, p1), &mut g[p0 - j0..], ld);
        }
        let (m, cols) = (self.m, j1 - j0);
        let words = cols.div_ceil(64);
        // Each is made below: last time's are not cleared.
        masks.resize(words * m, 0);
        for (w, part) in masks.chunks_mut(m.max(1)).enumerate().take(words) {
            let width = (cols - 64 * w).min(64);
            reach_masks(&g[64 * w..], ld, width, (self.lr, self.threshold), part);
        }
    }

    /// The candidates `(score key, offset + position, (w − g·lr, w0))` of rows `rows`, each
    /// walked over `segments` (left to right, together the whole row), appended to `list` in
    /// position order. False once more than `cap` were appended (given up).
    pub(super) fn rows(
        &self,
        segments: &[Segment<'_>],
        rows: std::ops::Range<usize>,
        list: &mut Vec<Candidate>,
    ) -> bool {
        let (m, n) = (self.m, self.n);
        let (indices, values) = match self.entries {
            Some(t) => (&t.indices[..], &t.values[..]),
            None => (&[][..], &[][..]),
        };
        let start = list.len();
        // The entries are in position order: the walk goes through them as through the rows
        // (each row's words end at its last column).
        let end = indices.len();
        let mut e = indices.partition_point(|&x| (x as usize) < rows.start * n);
        for i in rows {
            for s in segments {
                let (j0, j1) = s.cols;
                let g = &s.g[i * s.ld..][..j1 - j0];
                let first = i * n + j0;
                for w in 0..(j1 - j0).div_ceil(64) {
                    let word_end = first + (64 * w + 64).min(j1 - j0);
                    let word_start = list.len();
                    // The entries in these 64 columns (nearly all of them candidates), in
                    // column order, and their columns as a mask.
                    let mut tracked = 0u64;
                    while e < end && (indices[e] as usize) < word_end {
                        let j = indices[e] as usize - first;
                        tracked |= 1 << (j % 64);
                        self.visit(values[e], g[j], first + j, list);
                        e += 1;
                    }
                    // The untracked positions that may reach the floor: few (none in most
                    // words).
                    let mut extra = s.masks[w * m + i] & !tracked;
                    if extra != 0 {
                        while extra != 0 {
                            let j = 64 * w + extra.trailing_zeros() as usize;
                            extra &= extra - 1;
                            self.visit(self.w0[first + j], g[j], first + j, list);
                        }
                        // Back in position order.
                        list[word_start..].sort_unstable_by_key(|c| c.1);
                    }
                }
            }
            if list.len() - start > self.cap {
                return false;
            }
        }
        true
    }

    /// Position `pos` (of the weight) with the weight `w` and gradient `g` there: a candidate
    /// when its score reaches the floor.
    #[inline(always)]
    fn visit(&self, w: f32, g: f32, pos: usize, list: &mut Vec<Candidate>) {
        let w0 = self.w0[pos];
        let s = score(w, g, self.lr, w0);
        if s >= self.floor || s.is_nan() {
            list.push((
                score_key(s),
                (self.offset + pos) as u64,
                (w - g * self.lr, w0),
            ));
        }
    }
}

/// `x` is not below `t`: at or above it, or either is NaN.
#[inline(always)]
fn not_below(x: f32, t: f32) -> bool {
    x.partial_cmp(&t) != Some(std::cmp::Ordering::Less)
}

/// Bit `j` set where `|fl(g[j]·lr)|` is not below `threshold` (or is NaN); `g` at most 64 long.
fn reach_mask(g: &[f32], lr: f32, threshold: f32) -> u64 {
    let mut mask = 0u64;
    for (j, &x) in g.iter().enumerate().take(64) {
        mask |= u64::from(not_below((x * lr).abs(), threshold)) << j;
    }
    mask
}

/// The reach masks ([`reach_mask`]) of rows `0..masks.len()` of a panel (`cols` columns, row
/// `i` of `g` at `i·ldc`), sixteen or eight columns at a time where the CPU can.
fn reach_masks(g: &[f32], ldc: usize, cols: usize, (lr, threshold): (f32, f32), masks: &mut [u64]) {
    let rows = masks.len();
    assert!(cols <= 64 && cols <= ldc && (rows == 0 || g.len() >= (rows - 1) * ldc + cols));
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; every row is in `g` (asserted).
            return unsafe { reach_masks_avx512(g, ldc, cols, (lr, threshold), masks) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; every row is in `g` (asserted).
            return unsafe { reach_masks_avx2(g, ldc, cols, (lr, threshold), masks) };
        }
    }
    for (i, mask) in masks.iter_mut().enumerate() {
        *mask = reach_mask(&g[i * ldc..][..cols], lr, threshold);
    }
}

/// [`reach_masks`], sixteen columns at a time.
///
/// # Safety
///
/// The CPU has AVX-512F; `cols ≤ 64` and row `i < masks.len()` of `g` is `g[i·ldc..][..cols]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn reach_masks_avx512(
    g: &[f32],
    ldc: usize,
    cols: usize,
    (lr, threshold): (f32, f32),
    masks: &mut [u64],
) {
    use std::arch::x86_64::*;
    let (lr16, t16) = (_mm512_set1_ps(lr), _mm512_set1_ps(threshold));
    for (i, mask) in masks.iter_mut().enumerate() {
        let row = &g[i * ldc..][..cols];
        let mut bits = 0u64;
        let mut j = 0;
        while j < cols {
            let lanes = (cols - j).min(16);
            let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
            // SAFETY: the lanes loaded are `j .. j + lanes`, within the row; the others are
            // masked off (never read).
            let x = unsafe { _mm512_maskz_loadu_ps(k, row.as_ptr().add(j)) };
            let a = _mm512_abs_ps(_mm512_mul_ps(x, lr16));
            // Not below the threshold, or unordered (NaN).
            let hit = _mm512_mask_cmp_ps_mask::<_CMP_NLT_UQ>(k, a, t16);
            bits |= u64::from(hit) << j;
            j += 16;
        }
        *mask = bits;
    }
}

/// [`reach_masks`], eight columns at a time.
///
/// # Safety
///
/// The CPU has AVX2; `cols ≤ 64` and row `i < masks.len()` of `g` is `g[i·ldc..][..cols]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn reach_masks_avx2(
    g: &[f32],
    ldc: usize,
    cols: usize,
    (lr, threshold): (f32, f32),
    masks: &mut [u64],
) {
    use std::arch::x86_64::*;
    let (lr8, t8, sign) = (
        _mm256_set1_ps(lr),
        _mm256_set1_ps(threshold),
        _mm256_set1_ps(-0.0),
    );
    for (i, mask) in masks.iter_mut().enumerate() {
        let row = &g[i * ldc..][..cols];
        let mut bits = 0u64;
        let mut j = 0;
        while j + 8 <= cols {
            // SAFETY: `j + 8 <= cols`, the row's length.
            let x = unsafe { _mm256_loadu_ps(row.as_ptr().add(j)) };
            let a = _mm256_andnot_ps(sign, _mm256_mul_ps(x, lr8));
            let hit = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, t8);
            bits |= u64::from(_mm256_movemask_ps(hit) as u8) << j;
            j += 8;
        }
        if j < cols {
            bits |= reach_mask(&row[j..], lr, threshold) << j;
        }
        *mask = bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every untracked position whose score reaches the floor passes the threshold, however
    /// large `w0` is next to `g·lr` (where the score is all rounding).
    #[test]
    fn no_untracked_score_at_the_floor_is_below_the_threshold() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            // Random signs and mantissas; exponents over wide ranges (g from 2⁻²⁷ to 2¹³).
            let mut float = |exponents: std::ops::Range<u32>| {
                let r = next();
                let exponent =
                    exponents.start + (r >> 40) as u32 % (exponents.end - exponents.start);
                f32::from_bits((r as u32 & 0x807f_ffff) | exponent << 23)
            };
            let g = float(100..140);
            let lr = float(110..127).abs();
            let w0_bound = float(110..130).abs();
            let w0 = w0_bound * ((next() % 2001) as f32 / 1000.0 - 1.0);
            let s = score(w0, g, lr, w0);
            // Floors at and just above the score: the tightest cases.
            for floor in [s, s.next_down(), s.next_up()] {
                if s >= floor && floor > 0.0 {
                    let t = untracked_threshold(floor, w0_bound);
                    assert!(
                        not_below((g * lr).abs(), t),
                        "w0 {w0:e}, g {g:e}, lr {lr:e}: score {s:e} reaches {floor:e}, |g·lr| {:e} < {t:e}",
                        (g * lr).abs()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 200_000);
    }

    #[test]
    fn a_nan_or_infinite_bound_lets_everything_through() {
        for t in [
            untracked_threshold(1e-3, f32::NAN),
            untracked_threshold(1e-3, f32::INFINITY),
            untracked_threshold(f32::NAN, 1.0),
        ] {
            assert!(not_below(0.0, t) && not_below(f32::NAN, t));
        }
        // A NaN gradient always passes.
        assert_eq!(reach_mask(&[f32::NAN, 0.0], 0.1, 1e-3), 1);
    }

    #[test]
    fn the_initial_bound_covers_every_drawn_value() {
        let (lo, hi, scale) = (-0.0357f32, 0.0357f32, 1.7f32);
        let bound = initial_bound(Init::Uniform { lo, hi }, scale);
        for word in [0u32, 1 << 8, u32::MAX, u32::MAX - 255, 0x8000_0000] {
            let v = sparsec_ir::regen::word_to_f32(word, lo, hi) * scale;
            assert!(v.abs() <= bound, "{v} > {bound}");
        }
    }

    /// The vector masks and the scalar ones agree, on special values and partial rows.
    #[test]
    fn reach_masks_agree() {
        let values = [
            f32::NAN,
            -0.02,
            0.02,
            -0.0,
            f32::INFINITY,
            0.009_999,
            -0.010_001,
            0.01,
        ];
        let g: Vec<f32> = (0..5 * 64).map(|j| values[(j * 7 + j / 64) % 8]).collect();
        let (lr, t) = (0.1, 1e-3);
        for cols in [0, 5, 8, 13, 16, 17, 44, 64] {
            let want: Vec<u64> = (0..5)
                .map(|i| reach_mask(&g[i * 64..][..cols], lr, t))
                .collect();
            let mut got = vec![0u64; 5];
            reach_masks(&g, 64, cols, (lr, t), &mut got);
            assert_eq!(got, want, "cols {cols}");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    got.fill(0);
                    // SAFETY: the CPU has AVX2; five rows of 64 are in `g`.
                    unsafe { reach_masks_avx2(&g, 64, cols, (lr, t), &mut got) };
                    assert_eq!(got, want, "avx2, cols {cols}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    got.fill(0);
                    // SAFETY: the CPU has AVX-512F; five rows of 64 are in `g`.
                    unsafe { reach_masks_avx512(&g, 64, cols, (lr, t), &mut got) };
                    assert_eq!(got, want, "avx512, cols {cols}");
                }
            }
            assert!(want.iter().all(|&m| cols == 64 || m >> cols == 0));
        }
        // NaN reaches, and so does ±0.02·0.1 (above 1e-3); −0 does not.
        assert_eq!(reach_mask(&values[..4], lr, t), 0b0111);
    }
}
