//! The Dropback kernels that never hold a tracked weight, its initial value or its scores
//! whole: [`Body::TopkStream`] (the global top-k over scores remade panel by panel in each pass
//! of a radix select) and [`Body::GradUpdate`] (the new tracked entries, made from the gradient
//! panels that hold selected positions). Each panel of the weight is regenerated (the JIT's
//! ChaCha8 kernel, row segment by row segment) and its tracked entries written over it, so the
//! memory these kernels take is a few panels per thread, the selection and the candidates.
//!
//! Every value is computed by the calls and in the order the stored forms use (`GradScore`,
//! `GradApply`, `regen`, `overlay`), so the bits are theirs, and the interpreter's.

use sparsec_ir::interp::{matmul_columns_f32, StreamSelect, Tally, TrackedValues, GEMM_PANEL};
use sparsec_ir::module::Init;

use super::exec::{over_panels, DisjointOut};
use super::{Ctx, Env, ParamInfo};
use crate::abi::Args;
use crate::jit::Entry;
use crate::kernel_ir::{Loc, ScoreSource};

/// Where panels of one tracked weight `[m, n]` come from: its regeneration (`regen`, the JIT's
/// ChaCha8 kernel) and its tracked entries, found row by row.
struct WeightPanels<'a> {
    regen: Entry<'a>,
    seed: u64,
    info: &'a ParamInfo,
    init_scale: f32,
    m: usize,
    n: usize,
    entries: Option<&'a TrackedValues<f32>>,
    rows: EntryRows,
}

impl<'a> WeightPanels<'a> {
    fn new(
        regen: Entry<'a>,
        cx: &Ctx<'a>,
        env: &Env<'a>,
        param: usize,
        (m, n): (usize, usize),
    ) -> Result<WeightPanels<'a>, String> {
        let info = cx.params.get(param).ok_or("internal: no such parameter")?;
        if info.len != m * n {
            return Err(format!(
                "internal: @{} has {} elements, the kernel needs {m}x{n}",
                info.name, info.len
            ));
        }
        let entries = env.state.tracked[param].as_ref();
        let indices = entries.map_or(&[][..], |t| &t.indices[..]);
        let rows = EntryRows::new(indices, (m, n)).map_err(|e| format!("@{}: {e}", info.name))?;
        Ok(WeightPanels {
            regen,
            seed: cx.seed,
            info,
            init_scale: env.state.init_scale,
            m,
            n,
            entries,
            rows,
        })
    }

    /// Columns `j0..j1` of every row: the initial value into `w0`, and the weight (the initial
    /// value with the tracked entries written over it) into `w`; row `i` at `i·ld`.
    fn fill(&self, (j0, j1): (usize, usize), w0: &mut [f32], w: &mut [f32], ld: usize) {
        let cols = j1 - j0;
        assert!(cols <= ld && w0.len() >= self.m * ld && w.len() >= self.m * ld);
        for i in 0..self.m {
            let row = &mut w0[i * ld..i * ld + cols];
            match self.info.init {
                Init::Zeros => row.fill(0.0 * self.init_scale),
                Init::Ones => row.fill(self.init_scale),
                Init::Uniform { lo, hi } => {
                    let mut args = Args::default();
                    args.ptr[0] = row.as_mut_ptr() as usize;
                    args.int[..4].copy_from_slice(&[
                        self.seed,
                        self.info.stream,
                        (i * self.n + j0) as u64,
                        cols as u64,
                    ]);
                    args.f32[..3].copy_from_slice(&[lo, hi, self.init_scale]);
                    // SAFETY: the regeneration kernel writes `cols` floats at `ptr[0]`, the
                    // row of `w0` just borrowed mutably (asserted long enough), and reads
                    // nothing else.
                    unsafe { self.regen.call(&args) };
                }
            }
            let wr = &mut w[i * ld..i * ld + cols];
            wr.copy_from_slice(&w0[i * ld..i * ld + cols]);
            if let Some(t) = self.entries {
                let r = self.rows.row(i);
                let (a, row0) = (r.start, i * self.n);
                let here = &t.indices[r];
                let lo = here.partition_point(|&x| (x as usize) < row0 + j0);
                let hi = here.partition_point(|&x| (x as usize) < row0 + j1);
                for (&x, &v) in here[lo..hi].iter().zip(&t.values[a + lo..a + hi]) {
                    wr[x as usize - row0 - j0] = v;
                }
            }
        }
    }
}

/// A tracked weight's entries row by row: `start[i]..start[i + 1]` index row `i`'s.
struct EntryRows {
    start: Vec<usize>,
}

impl EntryRows {
    /// The rows of `indices` (sorted, distinct) in a weight `[m, n]`.
    fn new(indices: &[u32], (m, n): (usize, usize)) -> Result<EntryRows, String> {
        if indices.last().is_some_and(|&i| i as usize >= m * n) {
            return Err("a tracked index out of range".into());
        }
        // The indices are sorted: each row's start is where the indices reach its first
        // position (no division per index).
        let mut start = Vec::with_capacity(m + 1);
        let mut e = 0;
        for i in 0..m {
            while e < indices.len() && (indices[e] as usize) < i * n {
                e += 1;
            }
            start.push(e);
        }
        start.push(indices.len());
        Ok(EntryRows { start })
    }

    /// Row `i`'s entries.
    fn row(&self, i: usize) -> std::ops::Range<usize> {
        self.start[i]..self.start[i + 1]
    }
}

/// The scratch of one panel: the gradient, the initial value and the weight, `m × ld` each.
fn panel_parts(scratch: &mut [f32], m: usize, ld: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (g, rest) = scratch.split_at_mut(m * ld);
    let (w0, w) = rest.split_at_mut(m * ld);
    (g, w0, &mut w[..m * ld])
}

/// The operands of a weight gradient `dyᵀ·x` made 64 columns at a time, checked: every
/// Dropback kernel that makes its panels.
pub(super) struct Gradient<'r> {
    m: usize,
    n: usize,
    k: usize,
    dy: &'r [f32],
    x: &'r [f32],
    pub(super) lr: f32,
}

impl<'r> Gradient<'r> {
    pub(super) fn new(
        env: &Env<'r>,
        (m, n, k): (usize, usize, usize),
        dy: Loc,
        x: Loc,
        lr: Loc,
    ) -> Result<Gradient<'r>, String> {
        let (dy, x) = (env.float(dy), env.float(x));
        super::exec::check("a gradient operand", dy.len(), k * m)?;
        super::exec::check("a gradient operand", x.len(), k * n)?;
        let lr = *env.float(lr).first().ok_or("internal: an empty scalar")?;
        Ok(Gradient { m, n, k, dy, x, lr })
    }

    /// The row stride of a panel.
    pub(super) fn ld(&self) -> usize {
        if self.n > 1 {
            GEMM_PANEL
        } else {
            1
        }
    }

    /// Columns `j0..j1` of `dyᵀ·x` into `g` (row `i` at `i·ld`): the stored forms' call.
    pub(super) fn panel(&self, (j0, j1): (usize, usize), g: &mut [f32]) {
        self.columns((j0, j1), g, self.ld());
    }

    /// [`Gradient::panel`] with rows `ldc` apart (more than 1 exactly when the gradient's are:
    /// the library's call is the same, so are the bits).
    pub(super) fn columns(&self, (j0, j1): (usize, usize), g: &mut [f32], ldc: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        matmul_columns_f32((m, n, k), true, self.dy, false, self.x, n, (j0, j1), g, ldc);
    }
}

/// `|(w − g·lr) − w0|`: `dropback_score_sgd`'s scale, sub and score, one IEEE op each (the
/// interpreter's ops), for every kernel that makes the scores.
#[inline(always)]
pub(super) fn score(w: f32, g: f32, lr: f32, w0: f32) -> f32 {
    let d = (w - g * lr) - w0;
    if d < 0.0 {
        -d
    } else {
        d + 0.0
    }
}

/// One row of at most 64 scores: `scores[j] = score(w[j], g[j], lr, w0[j])`; and, given a
/// floor, the candidates as a bit mask: bit `j` set when score `j` is at or above the floor or
/// NaN. Built for AVX2 with its intrinsics where the CPU has it (chosen at run time) and
/// portably otherwise: the same IEEE operations either way (no FMA), so the same bits.
pub(super) fn score_row(
    scores: &mut [f32],
    (g, w, w0): (&[f32], &[f32], &[f32]),
    lr: f32,
    floor: Option<f32>,
) -> u64 {
    let n = scores.len().min(g.len()).min(w.len()).min(w0.len()).min(64);
    let (scores, g, w, w0) = (&mut scores[..n], &g[..n], &w[..n], &w0[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above), and the four rows are `n` long.
            return unsafe { score_row_avx2(scores, (g, w, w0), lr, floor) };
        }
    }
    score_tail(scores, (g, w, w0), lr, floor, 0)
}

/// `score_row` from column `from` on, one score at a time.
fn score_tail(
    scores: &mut [f32],
    (g, w, w0): (&[f32], &[f32], &[f32]),
    lr: f32,
    floor: Option<f32>,
    from: usize,
) -> u64 {
    let mut mask = 0u64;
    for j in from..scores.len() {
        let s = score(w[j], g[j], lr, w0[j]);
        scores[j] = s;
        if let Some(t) = floor {
            mask |= u64::from((s >= t) | s.is_nan()) << j;
        }
    }
    mask
}

/// `score_row`, eight scores at a time.
///
/// # Safety
///
/// The CPU has AVX2; `g`, `w` and `w0` are at least `scores.len()` long, at most 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_row_avx2(
    scores: &mut [f32],
    (g, w, w0): (&[f32], &[f32], &[f32]),
    lr: f32,
    floor: Option<f32>,
) -> u64 {
    use std::arch::x86_64::*;
    let n = scores.len();
    let (lr8, zero, sign) = (
        _mm256_set1_ps(lr),
        _mm256_setzero_ps(),
        _mm256_set1_ps(-0.0),
    );
    let floor8 = _mm256_set1_ps(floor.unwrap_or(f32::INFINITY));
    let mut mask = 0u64;
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: `j + 8 <= n` and every row is at least `n` long.
        let (gv, wv, w0v) = unsafe {
            (
                _mm256_loadu_ps(g.as_ptr().add(j)),
                _mm256_loadu_ps(w.as_ptr().add(j)),
                _mm256_loadu_ps(w0.as_ptr().add(j)),
            )
        };
        let d = _mm256_sub_ps(_mm256_sub_ps(wv, _mm256_mul_ps(gv, lr8)), w0v);
        // `score`'s choice: −d below zero, else d + 0 (so −0 becomes +0, NaN stays itself).
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(d, zero);
        let s = _mm256_blendv_ps(_mm256_add_ps(d, zero), _mm256_xor_ps(d, sign), below);
        // SAFETY: as for the loads.
        unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j), s) };
        // Not below the floor, or unordered (NaN): a candidate.
        let hit = _mm256_cmp_ps::<_CMP_NLT_UQ>(s, floor8);
        mask |= u64::from(_mm256_movemask_ps(hit) as u8) << j;
        j += 8;
    }
    let mask = mask | score_tail(scores, (g, w, w0), lr, floor, j);
    if floor.is_some() {
        mask
    } else {
        0
    }
}

/// `topk_stream`: the exact top `k` of the concatenated sources into `out`.
pub(super) fn topk_stream(
    regen: Entry<'_>,
    env: &Env<'_>,
    cx: &mut Ctx<'_>,
    k: usize,
    sources: &[ScoreSource],
    out: &mut Vec<u64>,
) -> Result<(), String> {
    let sizes: Vec<usize> = sources
        .iter()
        .map(|s| match s {
            ScoreSource::Stored(l) => env.float(*l).len(),
            ScoreSource::Remade { m, n, .. } => m * n,
        })
        .collect();
    let total: usize = sizes.iter().sum();
    let mut select = StreamSelect::new(k, total);
    let mut remade = Vec::new();
    for s in sources {
        if let ScoreSource::Remade {
            param,
            m,
            n,
            k,
            dy,
            x,
            lr,
        } = s
        {
            let g = Gradient::new(env, (*m, *n, *k), *dy, *x, *lr)?;
            let w = WeightPanels::new(regen, cx, env, *param, (*m, *n))?;
            remade.push((g, w));
        }
    }
    while let Some(tally) = select.next_pass() {
        let mut tallies: Vec<Tally> = Vec::new();
        let mut offset = 0usize;
        let mut remade_iter = remade.iter();
        for (s, &size) in sources.iter().zip(&sizes) {
            match s {
                ScoreSource::Stored(l) => {
                    let mut t = tally.clone();
                    for (i, &x) in env.float(*l).iter().enumerate() {
                        t.visit((offset + i) as u64, x);
                    }
                    tallies.push(t);
                }
                ScoreSource::Remade { .. } => {
                    let (g, w) = remade_iter.next().ok_or("internal: a remade source")?;
                    let (m, n, ld) = (g.m, g.n, g.ld());
                    let done = std::sync::Mutex::new(Vec::new());
                    let visit_panels = |qs: std::ops::Range<usize>, scratch: &mut [f32]| {
                        let mut t = tally.clone();
                        let (gp, w0p, wp) = panel_parts(scratch, m, ld);
                        for q in qs {
                            let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
                            g.panel((j0, j1), gp);
                            w.fill((j0, j1), w0p, wp, ld);
                            for i in 0..m {
                                let base = offset + i * n + j0;
                                let row = i * ld..i * ld + (j1 - j0);
                                for (c, ((&gv, &wv), &w0v)) in gp[row.clone()]
                                    .iter()
                                    .zip(&wp[row.clone()])
                                    .zip(&w0p[row])
                                    .enumerate()
                                {
                                    t.visit((base + c) as u64, score(wv, gv, g.lr, w0v));
                                }
                            }
                        }
                        done.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                    };
                    let panels = n.div_ceil(GEMM_PANEL);
                    over_panels(cx, m * n * g.k, 3 * m * ld, panels, &visit_panels)?;
                    tallies.extend(done.into_inner().unwrap_or_else(|e| e.into_inner()));
                }
            }
            offset += size;
        }
        select.finish_pass(tallies)?;
    }
    *out = select.into_selection();
    Ok(())
}

/// `grad_update`: the new entries of the tracked weight `param` `[m, n]` at the positions of
/// `sel` from `offset` (see [`crate::kernel_ir::Body::GradUpdate`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn grad_update(
    regen: Entry<'_>,
    env: &Env<'_>,
    cx: &mut Ctx<'_>,
    param: usize,
    offset: usize,
    (m, n, k): (usize, usize, usize),
    (dy, x, lr): (Loc, Loc, Loc),
    stored: Option<(&[f32], &[f32])>,
    sel: &[u64],
    (indices, values): (&mut Vec<u64>, &mut Vec<f32>),
) -> Result<(), String> {
    indices.clear();
    values.clear();
    let g = Gradient::new(env, (m, n, k), dy, x, lr)?;
    let w = WeightPanels::new(regen, cx, env, param, (m, n))?;
    if let Some((wv, w0v)) = stored {
        super::exec::check("a weight", wv.len(), m * n)?;
        super::exec::check("an initial weight", w0v.len(), m * n)?;
    }
    let Some((start, by_panel)) = super::exec::selected_by_panel(sel, offset, (m, n)) else {
        return Ok(());
    };
    let panels = start.len() - 1;
    let ld = g.ld();
    let found = std::sync::Mutex::new(Vec::new());
    let update_panels = |qs: std::ops::Range<usize>, scratch: &mut [f32]| {
        let mut made: Vec<(u64, f32)> = Vec::new();
        let (gp, w0p, wp) = panel_parts(scratch, m, ld);
        for q in qs {
            let here = &by_panel[start[q]..start[q + 1]];
            if here.is_empty() {
                continue;
            }
            let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
            g.panel((j0, j1), gp);
            if stored.is_none() {
                w.fill((j0, j1), w0p, wp, ld);
            }
            for &i in here {
                let idx = i as usize - offset;
                let at = (idx / n) * ld + idx % n - j0;
                let (wv, w0v) = match stored {
                    Some((wv, w0v)) => (wv[idx], w0v[idx]),
                    None => (wp[at], w0p[at]),
                };
                // `dropback_apply_sgd`'s value there, kept where it is not `w0`'s bits.
                let w1 = wv - gp[at] * g.lr;
                if w1.to_bits() != w0v.to_bits() {
                    made.push((idx as u64, w1));
                }
            }
        }
        found.lock().unwrap_or_else(|e| e.into_inner()).push(made);
    };
    over_panels(cx, m * n * k, 3 * m * ld, panels, &update_panels)?;
    let mut made: Vec<(u64, f32)> = found
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    made.sort_unstable_by_key(|&(i, _)| i);
    indices.extend(made.iter().map(|&(i, _)| i));
    values.extend(made.iter().map(|&(_, v)| v));
    Ok(())
}

/// `weight_product`: `out = dy · W` for the tracked weight `param` `[k, n]` and `dy: [m, k]`,
/// 64 output columns at a time from the same columns of the weight, remade for each panel.
pub(super) fn weight_product(
    regen: Entry<'_>,
    env: &Env<'_>,
    cx: &mut Ctx<'_>,
    param: usize,
    (m, n, k): (usize, usize, usize),
    dy: Loc,
    out: &mut [f32],
) -> Result<(), String> {
    let dy = env.float(dy);
    super::exec::check("a product operand", dy.len(), m * k)?;
    super::exec::check("a product", out.len(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let w = WeightPanels::new(regen, cx, env, param, (k, n))?;
    let ld = if n > 1 { GEMM_PANEL } else { 1 };
    let out = DisjointOut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let product_panels = |qs: std::ops::Range<usize>, scratch: &mut [f32]| {
        let (w0p, rest) = scratch.split_at_mut(k * ld);
        let (wp, cp) = rest.split_at_mut(k * ld);
        for q in qs {
            let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
            w.fill((j0, j1), w0p, wp, ld);
            // The whole product's call for columns `j0..j1` (its library decision is the
            // whole product's), with this panel of the weight as its columns.
            matmul_columns_f32((m, n, k), false, dy, false, wp, ld, (0, j1 - j0), cp, ld);
            for i in 0..m {
                // SAFETY: columns `j0..j1` are this panel's, and each panel is made by one call
                // of `product_panels` only (the two calls take disjoint `qs`).
                let row = unsafe { out.slice(i * n + j0..i * n + j1) };
                row.copy_from_slice(&cp[i * ld..i * ld + (j1 - j0)]);
            }
        }
    };
    let panels = n.div_ceil(GEMM_PANEL);
    over_panels(cx, m * n * k, 2 * k * ld + m * ld, panels, &product_panels)
}
