//! Executing one kernel of a run: its operands checked against the extents the kernel was
//! compiled for, its argument block filled in, and the call split over the run's threads where
//! that cannot change a bit (see the module docs of `runtime.rs`). The host kernels (Dropback's
//! bookkeeping, top-k, the interpreter fallbacks) run here directly.

use sparsec_ir::interp::{
    conv2d_weight_grad_images_f32, eval_op, matmul_columns_f32, score_key, topk_among_runs,
    topk_select, Chosen, Input, OpArg, OpOut, GEMM_PANEL,
};
use sparsec_ir::module::Init;

use super::gather::{self, initial_bound, untracked_threshold};
use super::stream::Gradient;
use super::{outer_product_splits, product_splits, Ctx, Env, SPLIT_MIN_WORK};
use crate::abi::Args;
use crate::codegen::chain::OUTER_DY_SLOT;
use crate::codegen::conv::ConvPass;
use crate::codegen::gemm::{NR, REGEN_BLOCK};
use crate::jit::Entry;
use crate::kernel_ir::{Body, Loc, MaskedOp};
use sparsec_ir::interp::masked;

// A panel row's candidates are one 64-bit mask (`stream::score_row`).
const _: () = assert!(GEMM_PANEL <= 64);

fn addr(s: &[f32]) -> usize {
    s.as_ptr() as usize
}

/// `args` split into `parts` by the range in int slots `lo`/`hi`, cut at multiples of `align`.
fn split(args: Args, lo: usize, hi: usize, parts: usize, align: u64) -> Vec<Args> {
    let (a, b) = (args.int[lo], args.int[hi]);
    if parts < 2 || b <= a {
        return vec![args];
    }
    let mid = a + ((b - a) / 2) / align * align;
    if mid <= a || mid >= b {
        return vec![args];
    }
    let mut first = args;
    let mut second = args;
    first.int[hi] = mid;
    second.int[lo] = mid;
    vec![first, second]
}

/// Call `entry` once per argument block: the first on this thread, the others on the run's
/// second thread ([`super::Pair`]) when there is one (blocks come from [`split`], so there are
/// two at most with two threads).
///
/// # Safety
///
/// Each block meets the contract of `Entry::call` for `entry`'s kernel on its own, and the
/// blocks write disjoint elements (as [`split`] makes them, by cutting one range slot), so
/// that running them at the same time still meets its point 4.
unsafe fn run_parts(entry: Entry<'_>, parts: &[Args], pair: Option<&super::Pair>) {
    // SAFETY (every call below): the caller's contract above, block by block.
    match (parts, pair) {
        ([], _) => {}
        ([first, rest @ ..], Some(pair)) if !rest.is_empty() => pair.join(
            || unsafe { entry.call(first) },
            || {
                for block in rest {
                    unsafe { entry.call(block) }
                }
            },
        ),
        (blocks, _) => {
            for block in blocks {
                unsafe { entry.call(block) }
            }
        }
    }
}

/// Entries at least this many a half: an overlay's (or new entries') two halves go to two
/// threads.
const OVERLAY_SPLIT: usize = 2048;

/// The new entries among the `candidates` a selection `chosen` (positions from `lo`) into the
/// front of `indices` and `values`: where the updated weight differs from `w0` (both carried),
/// as `dropback_apply_sgd` keeps them. Returns how many.
fn new_entries(
    candidates: &[Candidate],
    chosen: Chosen,
    lo: u64,
    (indices, values): (&mut [u64], &mut [f32]),
) -> usize {
    let mut kept = 0;
    for &(key, pos, (w1, w0)) in candidates {
        indices[kept] = pos - lo;
        values[kept] = w1;
        kept += usize::from(chosen.contains(key, pos) && w1.to_bits() != w0.to_bits());
    }
    kept
}

/// The part of an overlay's buffer from position `from` on (`o`, its positions `from ..`): the
/// entries written over it, and the last run's `written` positions that are no entry now put
/// back to `w0` (kept with them); both in position order, walked together. Each entry's `w0`
/// is kept into `kept`, from the last run's where it was written then (most entries stay from
/// one step to the next: one write each), else from `o`, which holds `w0` there (the write
/// brings the line in anyway); so the next run puts it back without reading `w0`.
fn overlay_part(
    (o, from): (&mut [f32], usize),
    written: &[(u32, f32)],
    (indices, values): (&[u32], &[f32]),
    kept: &mut [(u32, f32)],
) {
    let mut last = written.iter().peekable();
    for ((&i, &v), k) in indices.iter().zip(values).zip(kept) {
        while let Some(&&(p, v0)) = last.peek().filter(|w| w.0 < i) {
            o[p as usize - from] = v0;
            last.next();
        }
        let slot = &mut o[i as usize - from];
        *k = match last.next_if(|w| w.0 == i) {
            Some(&kept_then) => kept_then,
            None => (i, *slot),
        };
        *slot = v;
    }
    for &(p, v0) in last {
        o[p as usize - from] = v0;
    }
}

/// One `f32` output that two threads write at once, each in elements the other never touches
/// (the columns of its own gradient panels).
#[derive(Clone, Copy)]
pub(super) struct DisjointOut {
    pub(super) ptr: *mut f32,
    pub(super) len: usize,
}

// SAFETY: a `DisjointOut` is only a way to reach the output; every use of it goes through
// `slice`, whose contract keeps the two threads' elements apart.
unsafe impl Send for DisjointOut {}
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    /// The elements `range` of the output.
    ///
    /// # Safety
    ///
    /// The output is alive and borrowed for the whole use of `self`, and no other thread reads
    /// or writes `range` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted) of a live buffer, exclusively ours by the contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Call `run` over gradient panels `0..panels`, each call with its own scratch of `scratch`
/// floats: on two threads (half the panels each) when the run has its second thread and the
/// product (`work` multiply-adds) is worth splitting, else on this one. Every panel is made by
/// the same calls either way, so the bits do not depend on the split.
pub(super) fn over_panels(
    cx: &mut Ctx<'_>,
    work: usize,
    scratch: usize,
    panels: usize,
    run: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
) -> Result<(), String> {
    let parts = if cx.pair.is_some() && panels >= 2 && work >= SPLIT_MIN_WORK * 8 {
        2
    } else {
        1
    };
    if cx.gemm_scratch.len() < parts {
        cx.gemm_scratch.resize(parts, Vec::new());
    }
    for s in cx.gemm_scratch.iter_mut().take(parts) {
        if s.len() < scratch {
            s.resize(scratch, 0.0);
        }
    }
    match (cx.pair, &mut cx.gemm_scratch[..]) {
        (Some(pair), [first, second, ..]) if parts == 2 => {
            let half = panels / 2;
            let (first, second) = (&mut first[..scratch], &mut second[..scratch]);
            pair.join(|| run(0..half, first), || run(half..panels, second));
        }
        (_, [first, ..]) => run(0..panels, &mut first[..scratch]),
        (_, []) => return Err("internal: no gradient scratch".into()),
    }
    Ok(())
}

/// A score kernel's candidates for selection `t`, appended to its candidates in position
/// order; false if the walk gave up (too many). The gradient `dyᵀ·x` is made whole into `g`
/// (the scores' buffer), then walked row by row ([`gather::Gathering::rows`]). On two threads
/// each makes half the columns (its own rows of `g`), then each walks half the rows over both
/// halves: the first half's candidates go straight to the selection, the second's after.
fn gather_candidates(
    cx: &mut Ctx<'_>,
    gathering: &gather::Gathering<'_>,
    gradient: &Gradient<'_>,
    g: &mut [f32],
    t: usize,
    work: usize,
) -> bool {
    let (m, n) = (gathering.m, gathering.n);
    let half = n.div_ceil(GEMM_PANEL) / 2 * GEMM_PANEL;
    // Split where each half is at least a panel and two columns (a stride above 1).
    let pair = cx
        .pair
        .filter(|_| half > 0 && n - half >= 2 && work >= SPLIT_MIN_WORK * 8);
    let sel = &mut cx.selections[t];
    let [first_masks, second_masks] = &mut sel.masks;
    let Some(pair) = pair else {
        let ld = gather::gather_ld(n);
        gathering.make(gradient, (0, n), (&mut *g, ld), first_masks);
        let whole = gather::Segment {
            cols: (0, n),
            g,
            ld,
            masks: first_masks,
        };
        return gathering.rows(&[whole], 0..m, &mut sel.candidates);
    };
    let (left, right) = g.split_at_mut(m * half);
    pair.join(
        || gathering.make(gradient, (0, half), (&mut *left, half), first_masks),
        || gathering.make(gradient, (half, n), (&mut *right, n - half), second_masks),
    );
    let segments = [
        gather::Segment {
            cols: (0, half),
            g: left,
            ld: half,
            masks: first_masks,
        },
        gather::Segment {
            cols: (half, n),
            g: right,
            ld: n - half,
            masks: second_masks,
        },
    ];
    let (candidates, second) = (&mut sel.candidates, &mut sel.second);
    second.clear();
    let (mut first_whole, mut second_whole) = (false, false);
    pair.join(
        || first_whole = gathering.rows(&segments, 0..m / 2, candidates),
        || second_whole = gathering.rows(&segments, m / 2..m, second),
    );
    candidates.extend_from_slice(second);
    first_whole && second_whole
}

/// A chain whose input 0 is the product `p` (`kernel_ir::ChainProduct`). An outer product
/// (`k = 1`) is made inside the chain ([`crate::codegen::chain::emit_chain_outer`]), the threads
/// taking rows; otherwise each 64-column panel of the product is made into scratch by the
/// interpreter's own call and the chain run over the panel's rows
/// ([`crate::codegen::chain::emit_chain_rows`]), the threads taking panels, each with its own
/// scratch. `args` holds the chain's buffers (slots `1 .. buffers`, each checked to hold `m·n`
/// floats) and scalars.
fn chain_over_product(
    cx: &mut Ctx<'_>,
    env: &Env<'_>,
    p: crate::kernel_ir::ChainProduct,
    args: Args,
    buffers: usize,
    entry: Entry<'_>,
) -> Result<(), String> {
    let (m, n, k) = (p.m, p.n, p.k);
    let (dy, x) = (env.float(p.dy), env.float(p.x));
    check("a product operand", dy.len(), k * m)?;
    check("a product operand", x.len(), k * n)?;
    if k == 1 {
        // An outer product, made inside the chain (`emit_chain_outer`): threads take rows.
        if buffers > OUTER_DY_SLOT {
            return Err("internal: an outer-product chain without room for its operand".into());
        }
        let mut args = args;
        args.ptr[0] = addr(x);
        args.ptr[OUTER_DY_SLOT] = addr(dy);
        args.int[..3].copy_from_slice(&[0, m as u64, n as u64]);
        let parts = if outer_product_splits(m, n) && cx.pair.is_some() {
            2
        } else {
            1
        };
        // SAFETY: `x` holds the `n` floats every row reads and `dy` the `m` row factors; every
        // other buffer holds `m·n` floats (checked by the caller) and rows `0 .. m` reach
        // `m·n`. Outputs alias no input but the weight an output updates in place, whose every
        // index is loaded before it is stored; `split` halves the row range, so the two threads
        // write disjoint rows. The rows are cut where a product of the weight's rows is cut
        // (`GEMM_PANEL`), so that each thread updates the rows its own cache holds from the
        // forward product (at batch 1 the weight is the step's whole traffic).
        unsafe { run_parts(entry, &split(args, 0, 1, parts, GEMM_PANEL as u64), cx.pair) };
        return Ok(());
    }
    // The product's own stride rule (`matmul_columns_f32`): a panel row stride above 1 exactly
    // when the product has more than one column.
    let ld = if n > 1 { GEMM_PANEL } else { 1 };
    let run = |qs: std::ops::Range<usize>, panel: &mut [f32]| {
        for q in qs {
            let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
            matmul_columns_f32((m, n, k), true, dy, false, x, n, (j0, j1), panel, ld);
            let mut a = args;
            a.ptr[0] = panel.as_mut_ptr() as usize;
            for slot in &mut a.ptr[1..buffers] {
                *slot += j0 * std::mem::size_of::<f32>();
            }
            a.int[..4].copy_from_slice(&[m as u64, (j1 - j0) as u64, n as u64, ld as u64]);
            // SAFETY: the panel holds rows `0 .. m` of `j1 - j0 ≤ ld` columns at stride `ld`
            // (this thread's scratch of `m·ld` floats); every other buffer holds `m·n` floats
            // (checked by the caller) and is addressed from column `j0`, so row `i`'s columns
            // reach `i·n + j1 ≤ m·n`. Outputs alias no input but the weight an output updates in
            // place, whose every index is loaded before it is stored; the two threads take
            // disjoint panels, so they write disjoint columns.
            unsafe { entry.call(&a) };
        }
    };
    over_panels(cx, m * n * k, m * ld, n.div_ceil(GEMM_PANEL), &run)
}

pub(super) fn check(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "internal: {what} has {got} elements, the kernel needs {want}"
        ))
    }
}

fn out_f(outs: &mut [(usize, Vec<f32>)], l: Loc) -> Result<&mut Vec<f32>, String> {
    let Loc::F(j) = l else {
        return Err("internal: not a float buffer".into());
    };
    outs.iter_mut()
        .find(|(k, _)| *k == j)
        .map(|(_, v)| v)
        .ok_or_else(|| "internal: output not taken".into())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn exec(
    body: &Body,
    entry: Option<Entry<'_>>,
    env: &Env<'_>,
    cx: &mut Ctx<'_>,
    f_out: &mut [(usize, Vec<f32>)],
    i_out: &mut [(usize, Vec<i32>)],
    s_out: &mut [(usize, Vec<u64>)],
) -> Result<(), String> {
    let entry = || entry.ok_or_else(|| "internal: kernel not compiled".to_owned());
    let parts = if cx.pair.is_some() { 2 } else { 1 };
    match body {
        Body::Gemm {
            spec,
            m,
            n,
            k,
            a,
            b,
            regen,
            bias,
            outs,
        } => {
            let (m, n, k) = (*m, *n, *k);
            let mut args = Args::default();
            let av = env.float(*a);
            check("a matrix operand", av.len(), m * k)?;
            args.ptr[0] = addr(av);
            if let Some(b) = b {
                let bv = env.float(*b);
                check("a matrix operand", bv.len(), n * k)?;
                args.ptr[1] = addr(bv);
            }
            if let Some(bias) = bias {
                let bv = env.float(*bias);
                check("a bias", bv.len(), n)?;
                cx.bias_pad.clear();
                cx.bias_pad.extend_from_slice(bv);
                cx.bias_pad.resize(n.div_ceil(NR) * NR, 0.0);
                args.ptr[4] = addr(cx.bias_pad);
            }
            for (s, o) in outs.iter().enumerate() {
                if let Some(o) = o {
                    let v = out_f(f_out, *o)?;
                    check("a product", v.len(), m * n)?;
                    args.ptr[[2, 5, 6][s]] = v.as_mut_ptr() as usize;
                }
            }
            args.int[..3].copy_from_slice(&[m as u64, n as u64, k as u64]);
            args.int[5] = 0;
            args.int[6] = n as u64;
            args.f32[2] = 1.0;
            if let Some(p) = regen {
                let info = &cx.params[*p];
                let Init::Uniform { lo, hi } = info.init else {
                    return Err("internal: regeneration of a zero-initialised weight".into());
                };
                check("a regenerated weight", info.len, n * k)?;
                args.int[3] = cx.seed;
                args.int[4] = info.stream;
                args.f32[..3].copy_from_slice(&[lo, hi, env.state.init_scale]);
                if spec.overlay {
                    let t = env.state.tracked[*p]
                        .as_ref()
                        .ok_or("internal: a tracked weight without entries")?;
                    let panels = n.div_ceil(NR);
                    cx.bounds.clear();
                    for q in 0..=panels {
                        let start = (q * NR * k).min(n * k) as u32;
                        cx.bounds
                            .push(t.indices.partition_point(|&i| i < start) as u64);
                    }
                    args.ptr[7] = t.indices.as_ptr() as usize;
                    args.ptr[8] = addr(&t.values);
                    args.ptr[9] = cx.bounds.as_ptr() as usize;
                }
            }
            let split_it = parts > 1 && product_splits(m, n, k);
            // Imported products are cut at the library's panels, so each thread makes the
            // interpreter's calls (sparsec_ir::interp::GEMM_PANEL).
            let align = if spec.import { REGEN_BLOCK } else { NR };
            let blocks = split(args, 5, 6, if split_it { parts } else { 1 }, align as u64);
            cx.gemm_scratch
                .resize(blocks.len().max(cx.gemm_scratch.len()), Vec::new());
            if spec.import && !spec.store.contains(&true) {
                return Err("internal: a product kernel that stores nothing".into());
            }
            // Scratch per thread: two packed panels, or a block of regenerated rows.
            let need = if spec.import {
                REGEN_BLOCK * k
            } else {
                2 * NR * k
            };
            let mut blocks = blocks;
            for (blk, s) in blocks.iter_mut().zip(cx.gemm_scratch.iter_mut()) {
                if s.len() < need {
                    s.resize(need, 0.0);
                }
                blk.ptr[3] = s.as_mut_ptr() as usize;
            }
            let entry = entry()?;
            // SAFETY: A and B (which a regenerated weight does not read: its rows come from the
            // stream) are checked to hold `m·k` and `n·k` floats, every stored stage `m·n` (the
            // partition marks in `spec.store` exactly the stages it gives a buffer), the bias is
            // padded to whole `NR` panels as the epilogue reads it, and each block has its own
            // scratch of `need` floats. An overlay's entries are sorted, distinct and below the
            // weight's `n·k` (`check_call`), with `bounds` partition points into them. Stages
            // are buffers taken out of the table, so they alias no input; blocks cut the column
            // range at multiples of `align`, so the two threads write disjoint columns.
            unsafe { run_parts(entry, &blocks, cx.pair) };
        }
        Body::Chain {
            spec,
            len,
            product,
            inputs,
            scalars,
            outputs,
        } => {
            let mut args = Args::default();
            for (j, l) in outputs.iter().enumerate() {
                let v = out_f(f_out, *l)?;
                check("a chain output", v.len(), *len)?;
                args.ptr[spec.inputs + j] = v.as_mut_ptr() as usize;
            }
            // With a product, slot 0 is its panel and `inputs` fill the slots after it.
            let first = product.iter().len();
            if first + inputs.len() != spec.inputs {
                return Err("internal: a chain's inputs do not match its slots".into());
            }
            for (j, l) in inputs.iter().enumerate() {
                let slot = first + j;
                // A weight updated in place is in the output it is written to.
                if let Some(o) = outputs.iter().position(|&o| o == env.resolve(*l)) {
                    args.ptr[slot] = args.ptr[spec.inputs + o];
                    continue;
                }
                let v = env.float(*l);
                check("a chain input", v.len(), *len)?;
                args.ptr[slot] = addr(v);
            }
            for (j, l) in scalars.iter().enumerate() {
                args.f32[j] = *env.float(*l).first().ok_or("internal: an empty scalar")?;
            }
            if let Some(p) = product {
                check("a chain over a product", *len, p.m * p.n)?;
                let buffers = spec.inputs + outputs.len();
                return chain_over_product(cx, env, *p, args, buffers, entry()?);
            }
            args.int[0] = 0;
            args.int[1] = *len as u64;
            let n = if *len >= SPLIT_MIN_WORK { parts } else { 1 };
            let entry = entry()?;
            // SAFETY: every input and output is checked to hold `len` floats and the kernel
            // touches elements `int[0] .. int[1]` of each, within `0 .. len`; outputs are
            // distinct buffers taken out of the table, so they alias no input but the weight
            // an output updates in place, which the kernel reads at an index before it writes
            // there and nowhere else (element-wise: every load of an index precedes its
            // stores); `split` halves the range, so the two threads touch disjoint elements.
            unsafe { run_parts(entry, &split(args, 0, 1, n, 16), cx.pair) };
        }
        Body::ReduceRows { rows, cols, x, out } => {
            let mut args = Args::default();
            let xv = env.float(*x);
            check("a reduced operand", xv.len(), rows * cols)?;
            let o = out_f(f_out, *out)?;
            check("a reduction", o.len(), *cols)?;
            args.ptr[0] = addr(xv);
            args.ptr[1] = o.as_mut_ptr() as usize;
            args.int[..4].copy_from_slice(&[*rows as u64, *cols as u64, 0, *cols as u64]);
            let n = if rows * cols >= SPLIT_MIN_WORK {
                parts
            } else {
                1
            };
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `rows·cols` floats and `out` `cols`; the kernel
            // reads and writes columns `int[2] .. int[3]` within `0 .. cols`; `out` was taken out
            // of the table, so it is not `x`; `split` gives the threads disjoint columns.
            unsafe { run_parts(entry, &split(args, 2, 3, n, 4), cx.pair) };
        }
        Body::BiasAdd {
            inner,
            x,
            bias,
            out,
        } => {
            let xv = env.float(*x);
            let bv = env.float(*bias);
            let o = out_f(f_out, *out)?;
            check("bias_add", o.len(), xv.len())?;
            let plane = bv.len() * inner;
            let outer = xv.len().checked_div(plane).unwrap_or(0);
            check("bias_add", xv.len(), outer * plane)?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(xv), addr(bv), o.as_mut_ptr() as usize]);
            args.int[..3].copy_from_slice(&[outer as u64, bv.len() as u64, *inner as u64]);
            // Outer rows are independent: two threads take half of them each.
            let mut blocks = vec![args];
            if parts > 1 && outer >= 2 && xv.len() >= SPLIT_MIN_WORK {
                let half = outer / 2;
                let mut second = args;
                second.int[0] = (outer - half) as u64;
                second.ptr[0] += 4 * half * plane;
                second.ptr[2] += 4 * half * plane;
                blocks[0].int[0] = half as u64;
                blocks.push(second);
            }
            let entry = entry()?;
            // SAFETY: `x` and `out` are checked to hold `outer·channels·inner` floats, the bias
            // is `channels` = `bv.len()` long, and `out`, taken out of the table, is neither. A
            // block's rows (its pointers moved to its first) stay within both, and the two
            // blocks write disjoint rows.
            unsafe { run_parts(entry, &blocks, cx.pair) };
        }
        Body::Regen { param, out } => {
            let info = &cx.params[*param];
            let o = out_f(f_out, *out)?;
            check("a regenerated value", o.len(), info.len)?;
            match info.init {
                Init::Zeros => o.fill(0.0 * env.state.init_scale),
                Init::Ones => o.fill(env.state.init_scale),
                Init::Uniform { lo, hi } => {
                    let mut args = Args::default();
                    args.ptr[0] = o.as_mut_ptr() as usize;
                    // The fill kernel's range is (start, len): split by hand at a block of 4.
                    let len = o.len() as u64;
                    let mid = if parts > 1 && o.len() >= SPLIT_MIN_WORK {
                        (len / 2) & !63
                    } else {
                        len
                    };
                    args.f32[..3].copy_from_slice(&[lo, hi, env.state.init_scale]);
                    args.int[..4].copy_from_slice(&[cx.seed, info.stream, 0, mid]);
                    let mut blocks = vec![args];
                    if mid < len {
                        let mut second = args;
                        second.ptr[0] = o[mid as usize..].as_mut_ptr() as usize;
                        second.int[2] = mid;
                        second.int[3] = len - mid;
                        blocks.push(second);
                    }
                    let entry = entry()?;
                    // SAFETY: `out` is checked to hold the parameter's `len` floats; the first
                    // block writes its elements `0 .. mid`, the second, starting at `mid`, the
                    // remaining `len − mid`: disjoint, within `out`, which no input aliases.
                    unsafe { run_parts(entry, &blocks, cx.pair) };
                }
            }
        }
        Body::Overlay { param, w0, out } => {
            let o = out_f(f_out, *out)?;
            let w0 = env.float(*w0);
            check("an initial weight", w0.len(), o.len())?;
            let tracked = env.state.tracked[*param].as_ref();
            let entries = tracked.map_or((&[][..], &[][..]), |t| (&t.indices[..], &t.values[..]));
            match cx.overlaid.as_deref_mut() {
                Some(memo) => {
                    // The buffer holds `w0` but at the positions the last run wrote, whose `w0`
                    // it kept (none the first time: a whole copy of `w0`).
                    let (last, mut written) = match memo.take() {
                        Some(w) => (w.positions, w.spare),
                        None => {
                            o.copy_from_slice(w0);
                            (Vec::new(), Vec::new())
                        }
                    };
                    // Each slot is written below: last time's are not cleared.
                    written.resize(entries.0.len(), (0, 0.0));
                    // Two halves of the positions, at the middle entry: each its own part of
                    // `o`, of the last run's positions and of the entries.
                    let half = entries.0.len() / 2;
                    match cx.pair {
                        Some(pair) if half >= OVERLAY_SPLIT => {
                            let at = entries.0[half] as usize;
                            let cut = last.partition_point(|&(i, _)| (i as usize) < at);
                            let (o_lo, o_hi) = o.split_at_mut(at);
                            let (kept_lo, kept_hi) = written.split_at_mut(half);
                            let lo = (&entries.0[..half], &entries.1[..half]);
                            let hi = (&entries.0[half..], &entries.1[half..]);
                            pair.join(
                                || overlay_part((o_lo, 0), &last[..cut], lo, kept_lo),
                                || overlay_part((o_hi, at), &last[cut..], hi, kept_hi),
                            );
                        }
                        _ => overlay_part((o, 0), &last, entries, &mut written),
                    }
                    *memo = Some(super::Written {
                        positions: written,
                        spare: last,
                    });
                }
                None => {
                    o.copy_from_slice(w0);
                    for (&i, &v) in entries.0.iter().zip(entries.1) {
                        o[i as usize] = v;
                    }
                }
            }
        }
        Body::TrackedValues { param, out } => {
            let o = out_f(f_out, *out)?;
            o.fill(0.0);
            if let Some(t) = &env.state.tracked[*param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    o[i as usize] = v;
                }
            }
        }
        Body::Correction { param, w0, out } => {
            let o = out_f(f_out, *out)?;
            o.fill(0.0);
            let w0 = env.float(*w0);
            if let Some(t) = &env.state.tracked[*param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    o[i as usize] = v - w0[i as usize];
                }
            }
        }
        Body::DropbackApply {
            offset,
            w1,
            sel,
            w0,
            out,
        } => {
            let o = out_f(f_out, *out)?;
            let (w1, w0) = (env.float(*w1), env.float(*w0));
            o.copy_from_slice(w0);
            let sel = env.sparse(*sel);
            let lo = sel.partition_point(|&i| (i as usize) < *offset);
            let hi = sel.partition_point(|&i| (i as usize) < offset + o.len());
            for &i in &sel[lo..hi] {
                let j = i as usize - offset;
                o[j] = w1[j];
            }
        }
        Body::GradScore {
            param,
            m,
            n,
            k,
            dy,
            x,
            lr,
            w,
            w0,
            out,
        } => {
            let (m, n, k) = (*m, *n, *k);
            let gradient = Gradient::new(env, (m, n, k), *dy, *x, *lr)?;
            let (w, w0, lr, ldc) = (env.float(*w), env.float(*w0), gradient.lr, gradient.ld());
            check("a weight", w.len(), m * n)?;
            check("an initial weight", w0.len(), m * n)?;
            let o = out_f(f_out, *out)?;
            check("the scores", o.len(), m * n)?;
            let panels = n.div_ceil(GEMM_PANEL);
            // The scores at or above the floor of the selection they feed (the previous step's
            // k-th largest, lowered), with their positions in it: that selection's candidates.
            let feed = cx.score_feed.and_then(|(t, offset)| {
                let floor = cx.selections[t].floor?;
                let cap = cx.selections[t].cap;
                // Scores are magnitudes (never −0): at or above the floor's float, or NaN.
                let t_float = f32::from_bits((floor.saturating_sub(1 << 31)) as u32);
                (floor >= 1 << 31).then_some((t, offset, t_float, cap))
            });
            // Scores only the selection reads are not written, only gathered as candidates (the
            // selection asks for them when it needs them all), and `w` is read only at its
            // entries: elsewhere it is `w0`. The gradient is made whole into the scores' buffer
            // and walked row by row.
            if let Some((t, offset, floor, cap)) = feed.filter(|_| cx.scores_private) {
                let info = cx.params.get(*param).ok_or("internal: no such parameter")?;
                // The entries are checked (sorted, in range, with their values) before each run.
                let entries = env.state.tracked[*param].as_ref();
                let w0_bound = initial_bound(info.init, env.state.init_scale);
                let gathering = gather::Gathering {
                    w0,
                    entries,
                    m,
                    n,
                    lr,
                    floor,
                    threshold: untracked_threshold(floor, w0_bound),
                    offset,
                    cap,
                };
                let gave_up = !gather_candidates(cx, &gathering, &gradient, o, t, m * n * k);
                let sel = &mut cx.selections[t];
                sel.scores_missing = true;
                sel.overflow |= gave_up;
                sel.fed_this_run += 1;
                return Ok(());
            }
            let out = DisjointOut {
                ptr: o.as_mut_ptr(),
                len: o.len(),
            };
            let found = std::sync::Mutex::new(Vec::new());
            // Panels `qs` of the gradient, each made (the interpreter's call) and scored.
            let score_panels = |qs: std::ops::Range<usize>, panel: &mut [f32]| {
                let first = qs.start;
                // Scores written, every position (and gathered, for a selection).
                let mut mine: Option<Vec<Candidate>> = feed.map(|_| Vec::new());
                // Where each (panel, row)'s candidates start in `mine`, panel by panel: so
                // that they can be put in position order (row by row) without a sort.
                let mut starts: Vec<usize> = Vec::new();
                for q in qs {
                    let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
                    gradient.panel((j0, j1), panel);
                    for i in 0..m {
                        if let Some(list) = &mine {
                            starts.push(list.len());
                        }
                        let g = &panel[i * ldc..][..j1 - j0];
                        let row = i * n + j0..i * n + j1;
                        // SAFETY: columns `j0..j1` are this panel's, and each panel is scored by
                        // one call of `score_panels` only (the two calls take disjoint `qs`).
                        let scores = unsafe { out.slice(row.clone()) };
                        let (w_row, g_row) = (&w[row.clone()], g);
                        let floor = match (&mine, feed) {
                            (Some(_), Some((_, _, t_float, _))) => Some(t_float),
                            _ => None,
                        };
                        let row_w0 = &w0[row.clone()];
                        let mut hits =
                            super::stream::score_row(scores, (g, w_row, row_w0), lr, floor);
                        if let (Some(list), Some((_, offset, _, cap))) = (&mut mine, feed) {
                            // Few scores reach the floor (about one in 25): only the set bits
                            // of the row's candidate mask are visited.
                            while hits != 0 {
                                let j = hits.trailing_zeros() as usize;
                                hits &= hits - 1;
                                let pos = offset + row.start + j;
                                // The updated weight there, as `grad_update` makes it.
                                let w1 = w_row[j] - g_row[j] * lr;
                                list.push((score_key(scores[j]), pos as u64, (w1, row_w0[j])));
                            }
                            // Too many to be worth it: the selection reads every score.
                            if list.len() > cap {
                                mine = None;
                            }
                        }
                    }
                }
                if let Some(list) = &mine {
                    starts.push(list.len());
                }
                let part = mine.map(|list| (first, list, starts));
                found.lock().unwrap_or_else(|e| e.into_inner()).push(part);
            };
            over_panels(cx, m * n * k, m * ldc, panels, &score_panels)?;
            if let Some((t, ..)) = feed {
                let sel = &mut cx.selections[t];
                let mut parts = Vec::new();
                for part in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    match part {
                        Some(part) if !sel.overflow => parts.push(part),
                        _ => sel.overflow = true,
                    }
                }
                if !sel.overflow {
                    // Row by row, each row's panels left to right: position order. A row of a
                    // panel holds a few candidates: copied one by one, not by a call each.
                    parts.sort_unstable_by_key(|p| p.0);
                    let total: usize = parts.iter().map(|p| p.1.len()).sum();
                    sel.candidates.reserve(total);
                    for i in 0..m {
                        for (_, list, starts) in &parts {
                            for q in 0..(starts.len() - 1) / m.max(1) {
                                let at = q * m + i;
                                for &c in &list[starts[at]..starts[at + 1]] {
                                    sel.candidates.push(c);
                                }
                            }
                        }
                    }
                }
                sel.fed_this_run += 1;
            }
        }
        Body::GradApply {
            offset,
            m,
            n,
            k,
            dy,
            x,
            lr,
            w,
            sel,
            w0,
            out,
        } => {
            let (m, n, k, offset) = (*m, *n, *k, *offset);
            let gradient = Gradient::new(env, (m, n, k), *dy, *x, *lr)?;
            let (w, w0, lr, ldc) = (env.float(*w), env.float(*w0), gradient.lr, gradient.ld());
            check("a weight", w.len(), m * n)?;
            let o = out_f(f_out, *out)?;
            check("an applied weight", o.len(), m * n)?;
            o.copy_from_slice(w0);
            let Some((start, by_panel)) = selected_by_panel(env.sparse(*sel), offset, (m, n))
            else {
                return Ok(());
            };
            let panels = start.len() - 1;
            let out = DisjointOut {
                ptr: o.as_mut_ptr(),
                len: o.len(),
            };
            let apply_panels = |qs: std::ops::Range<usize>, panel: &mut [f32]| {
                for q in qs {
                    let here = &by_panel[start[q]..start[q + 1]];
                    if here.is_empty() {
                        continue;
                    }
                    let (j0, j1) = (q * GEMM_PANEL, ((q + 1) * GEMM_PANEL).min(n));
                    gradient.panel((j0, j1), panel);
                    for &i in here {
                        let idx = i as usize - offset;
                        let (r, c) = (idx / n, idx % n);
                        // SAFETY: position `idx` is in this panel's columns, and each panel is
                        // applied by one call of `apply_panels` only.
                        let slot = unsafe { out.slice(idx..idx + 1) };
                        slot[0] = w[idx] - panel[r * ldc + c - j0] * lr;
                    }
                }
            };
            over_panels(cx, m * n * k, m * ldc, panels, &apply_panels)?;
        }
        Body::WeightProduct {
            param,
            m,
            n,
            k,
            dy,
            out,
        } => {
            let o = out_f(f_out, *out)?;
            super::stream::weight_product(entry()?, env, cx, *param, (*m, *n, *k), *dy, o)?;
        }
        Body::TopkStream { k, sources, out } => {
            let o = selection_out(s_out, *out)?;
            super::stream::topk_stream(entry()?, env, cx, *k, sources, o)?;
        }
        Body::GradUpdate {
            param,
            offset,
            m,
            n,
            k,
            dy,
            x,
            lr,
            sel,
            weight,
            out,
        } => {
            let Loc::S(j) = *out else {
                return Err("internal: entries go to a selection buffer".into());
            };
            let mut values = std::mem::take(out_f(f_out, Loc::F(j))?);
            let indices = selection_out(s_out, *out)?;
            // The selection was made from candidates that carry the new values: no gradient
            // to make again, only the comparison with `w0`. (Candidates read apart from the
            // score kernels carry no values: a weight with any of those is updated from its
            // gradient.)
            let (lo, hi) = (*offset as u64, (*offset + m * n) as u64);
            let in_range = |run: &'_ [Candidate]| {
                let a = run.partition_point(|c| c.1 < lo);
                let b = run.partition_point(|c| c.1 < hi);
                a..b
            };
            let carried = cx.update_feed.and_then(|t| {
                let s = &cx.selections[t];
                let chosen = s.chosen?;
                let (fed, unfed) = (in_range(&s.candidates), in_range(&s.unfed));
                let candidates = unfed.is_empty().then(|| &s.candidates[fed])?;
                Some((candidates, chosen, weight.as_ref()?.1))
            });
            if let Some((candidates, chosen, w0)) = carried {
                let w0 = env.float(w0);
                check("an initial weight", w0.len(), m * n)?;
                debug_assert!(candidates
                    .iter()
                    .all(|c| c.2 .1.to_bits() == w0[(c.1 - lo) as usize].to_bits()));
                // Every slot up to the last entry is written below: last run's are not cleared.
                indices.resize(candidates.len(), 0);
                values.resize(candidates.len(), 0.0);
                let half = candidates.len() / 2;
                let kept = match cx.pair {
                    Some(pair) if half >= OVERLAY_SPLIT => {
                        let (i_lo, i_hi) = indices.split_at_mut(half);
                        let (v_lo, v_hi) = values.split_at_mut(half);
                        let (first_half, second_half) = candidates.split_at(half);
                        let (mut first, mut second) = (0, 0);
                        pair.join(
                            || first = new_entries(first_half, chosen, lo, (i_lo, v_lo)),
                            || second = new_entries(second_half, chosen, lo, (i_hi, v_hi)),
                        );
                        indices.copy_within(half..half + second, first);
                        values.copy_within(half..half + second, first);
                        first + second
                    }
                    _ => new_entries(candidates, chosen, lo, (indices, &mut values)),
                };
                indices.truncate(kept);
                values.truncate(kept);
                *out_f(f_out, Loc::F(j))? = values;
                return Ok(());
            }
            let r = super::stream::grad_update(
                entry()?,
                env,
                cx,
                *param,
                *offset,
                (*m, *n, *k),
                (*dy, *x, *lr),
                weight.map(|(w, w0)| (env.float(w), env.float(w0))),
                env.sparse(*sel),
                (indices, &mut values),
            );
            *out_f(f_out, Loc::F(j))? = values;
            r?;
        }
        Body::TopkSelect { k, scores, out } => {
            let o = selection_out(s_out, *out)?;
            let s: Vec<&[f32]> = scores.iter().map(|&l| env.float(l)).collect();
            select_top(cx, &s, *k, o);
        }
        Body::TrackedSet { param, out } => {
            let o = selection_out(s_out, *out)?;
            o.clear();
            if let Some(t) = &env.state.tracked[*param] {
                o.extend(t.indices.iter().map(|&i| u64::from(i)));
            }
        }
        Body::MaskIndex { nnz, mask, out } => {
            let o = selection_out(s_out, *out)?;
            masked::mask_positions(env.float(*mask), *nnz, o)?;
        }
        Body::Masked {
            kind,
            dims,
            a,
            b,
            idx,
            out,
        } => {
            let (a, b, pos) = (env.float(*a), env.float(*b), env.sparse(*idx));
            let o = out_f(f_out, *out)?;
            match kind {
                MaskedOp::Nt => masked::masked_matmul_nt(*dims, b, a, pos, o)?,
                MaskedOp::Nn => masked::masked_matmul(*dims, b, a, pos, o)?,
                MaskedOp::Grad => masked::masked_grad(*dims, a, b, pos, o)?,
            }
        }
        Body::MaskedConv {
            kind,
            geom,
            a,
            b,
            idx,
            out,
        } => {
            let (a, b, pos) = (env.float(*a), env.float(*b), env.sparse(*idx));
            masked::masked_conv(*kind, geom, a, b, pos, out_f(f_out, *out)?)?;
        }
        Body::Copy { src, out } => {
            let o = out_f(f_out, *out)?;
            o.copy_from_slice(env.float(*src));
        }
        Body::ReduceChannels {
            outer,
            channels,
            inner,
            x,
            out,
        } => {
            let xv = env.float(*x);
            check("a reduced operand", xv.len(), outer * channels * inner)?;
            let o = out_f(f_out, *out)?;
            check("a reduction", o.len(), *channels)?;
            let mut args = Args::default();
            args.ptr[..2].copy_from_slice(&[addr(xv), o.as_mut_ptr() as usize]);
            args.int[..5].copy_from_slice(&[
                *outer as u64,
                *channels as u64,
                *inner as u64,
                0,
                *channels as u64,
            ]);
            let n = if xv.len() >= SPLIT_MIN_WORK { parts } else { 1 };
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `outer·channels·inner` floats and `out` `channels`;
            // the kernel sums channels `int[3] .. int[4]`, within `0 .. channels`, over planes of
            // the `inner` it was compiled for (this kernel's); `out` was taken out of the
            // table, so it is not `x`; `split` gives the threads disjoint channels (halves: the
            // kernel groups whatever range it gets).
            unsafe { run_parts(entry, &split(args, 3, 4, n, 1), cx.pair) };
        }
        Body::SoftmaxXent {
            spec,
            logits,
            labels,
            out,
        } => {
            let x = env.float(*logits);
            let l = env.int(*labels);
            check("the logits", x.len(), spec.rows * spec.classes)?;
            check("the labels", l.len(), spec.rows)?;
            // The kernel indexes rows by label: the interpreter's check, its error.
            for (i, &v) in l.iter().enumerate() {
                if v < 0 || v as usize >= spec.classes {
                    return Err(format!(
                        "label {v} of example {i} is not a class index (expected 0..{})",
                        spec.classes
                    ));
                }
            }
            let o = out_f(f_out, *out)?;
            check(
                "a softmax cross-entropy",
                o.len(),
                if spec.grad { x.len() } else { 1 },
            )?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(x), l.as_ptr() as usize, o.as_mut_ptr() as usize]);
            let entry = entry()?;
            // SAFETY: the logits are checked to hold `rows·classes` floats (both positive: the
            // partitioner's condition), the labels `rows` integers, each in `0 .. classes` (the
            // kernel indexes a row by its label), and the output the loss or the gradient's
            // `rows·classes`; the output was taken out of the table, so it aliases no input.
            unsafe { entry.call(&args) };
        }
        Body::MaxPool { spec, x, dy, out } => {
            let xv = env.float(*x);
            check("a pooled operand", xv.len(), spec.planes * spec.h * spec.w)?;
            let pooled = spec.planes * spec.oh * spec.ow;
            let mut args = Args::default();
            args.ptr[0] = addr(xv);
            if let Some(dy) = dy {
                let d = env.float(*dy);
                check("a pooling gradient", d.len(), pooled)?;
                args.ptr[1] = addr(d);
            }
            let o = out_f(f_out, *out)?;
            check(
                "a pooling",
                o.len(),
                if spec.grad { xv.len() } else { pooled },
            )?;
            args.ptr[2] = o.as_mut_ptr() as usize;
            args.int[0] = spec.planes as u64;
            // Planes are independent: two threads take half of them each, every pointer moved
            // to the second half's first plane.
            let mut blocks = vec![args];
            if parts > 1 && spec.planes >= 2 && xv.len() >= SPLIT_MIN_WORK {
                let half = spec.planes / 2;
                let (plane, pooled) = (4 * spec.h * spec.w, 4 * spec.oh * spec.ow);
                let mut second = args;
                second.int[0] = (spec.planes - half) as u64;
                second.ptr[0] += half * plane;
                if spec.grad {
                    second.ptr[1] += half * pooled;
                }
                second.ptr[2] += half * if spec.grad { plane } else { pooled };
                blocks[0].int[0] = half as u64;
                blocks.push(second);
            }
            let entry = entry()?;
            // SAFETY: `x` is checked to hold `planes·h·w` floats, `dy` (a gradient's, which the
            // kernel IR always gives it) and the forward output the pooled size, the gradient's
            // output `x`'s; every window lies inside its plane (the partitioner's check). A
            // block's pointers and plane count stay within those buffers, and the two blocks
            // write disjoint planes. The output was taken out of the table, so it aliases
            // neither input.
            unsafe { run_parts(entry, &blocks, cx.pair) };
        }
        Body::Conv {
            spec,
            a,
            b,
            bias,
            out,
        } => {
            let (av, bv) = (env.float(*a), env.float(*b));
            let (x_len, w_len, y_len) = (
                spec.b * spec.chw(),
                spec.o * spec.ckk(),
                spec.b * spec.o * spec.p(),
            );
            let (a_len, b_len, o_len) = match spec.pass {
                ConvPass::Forward => (x_len, w_len, y_len),
                ConvPass::InputGrad => (y_len, w_len, x_len),
            };
            check("a convolution operand", av.len(), a_len)?;
            check("a convolution operand", bv.len(), b_len)?;
            let o = out_f(f_out, *out)?;
            check("a convolution", o.len(), o_len)?;
            let mut args = Args::default();
            args.ptr[..3].copy_from_slice(&[addr(av), addr(bv), o.as_mut_ptr() as usize]);
            match (spec.bias, bias) {
                (true, Some(bias)) => {
                    let bias = env.float(*bias);
                    check("a convolution's bias", bias.len(), spec.o)?;
                    args.ptr[4] = addr(bias);
                }
                (false, None) => {}
                _ => return Err("internal: a convolution's bias does not match its kernel".into()),
            }
            args.int[1] = spec.b as u64;
            // Images are independent.
            let work = spec.b * spec.o * spec.p() * spec.ckk();
            let split_it = parts > 1 && work >= SPLIT_MIN_WORK * 8;
            let mut blocks = split(args, 0, 1, if split_it { parts } else { 1 }, 1);
            if cx.gemm_scratch.len() < blocks.len() {
                cx.gemm_scratch.resize(blocks.len(), Vec::new());
            }
            let need = spec.ckk() * spec.p();
            for (blk, cols) in blocks.iter_mut().zip(cx.gemm_scratch.iter_mut()) {
                if cols.len() < need {
                    cols.resize(need, 0.0);
                }
                blk.ptr[3] = cols.as_mut_ptr() as usize;
            }
            let entry = entry()?;
            // SAFETY: both operands, the bias the kernel adds (`o` floats) and the result are
            // checked against the extents of `spec` (which the kernel is compiled with) for this
            // pass, and each block has its own `ckk·p` floats of `cols`; the result was taken
            // out of the table, so it aliases no operand. Blocks take disjoint image ranges,
            // whose results are disjoint.
            unsafe { run_parts(entry, &blocks, cx.pair) };
        }
        Body::ConvWeightGrad { geom, x, dy, out } => {
            let (xv, dyv) = (env.float(*x), env.float(*dy));
            let g = *geom;
            check("a convolution operand", xv.len(), g.b * g.c * g.h * g.w)?;
            check("a convolution operand", dyv.len(), g.b * g.o * g.p())?;
            let dw = out_f(f_out, *out)?;
            check("a convolution", dw.len(), g.o * g.ckk())?;
            // The two halves of the batch are summed apart, then added (the interpreter's
            // order): on two threads when the run has its second one and the work is worth it.
            let [first, second] = g.weight_grad_halves();
            let halves = !second.is_empty();
            let work = g.b * g.o * g.p() * g.ckk();
            let (groups, len) = (g.weight_grad_scratch(), dw.len());
            if cx.gemm_scratch.len() < 2 {
                cx.gemm_scratch.resize(2, Vec::new());
            }
            let [s0, s1, ..] = &mut cx.gemm_scratch[..] else {
                return Err("internal: no convolution scratch".into());
            };
            for (s, need) in [(&mut *s0, groups), (&mut *s1, groups + len)] {
                if s.len() < need {
                    s.resize(need, 0.0);
                }
            }
            let (s1, half) = s1.split_at_mut(groups);
            let half = &mut half[..len];
            let run_first = || conv2d_weight_grad_images_f32(xv, dyv, &g, first, dw, s0);
            let run_second = || conv2d_weight_grad_images_f32(xv, dyv, &g, second, half, s1);
            match cx.pair {
                Some(pair) if work >= SPLIT_MIN_WORK * 8 => pair.join(run_first, run_second),
                _ => {
                    run_first();
                    run_second();
                }
            }
            if halves {
                for (d, h) in dw.iter_mut().zip(half.iter()) {
                    *d += *h;
                }
            }
        }
        Body::Interp {
            op,
            shapes,
            out_shape,
            operands,
            out,
        } => {
            let args: Vec<OpArg<'_, f32>> = operands
                .iter()
                .zip(shapes)
                .map(|(&l, _)| match l {
                    Loc::I(_) => OpArg::Int(env.int(l)),
                    Loc::Arg(a) if matches!(env.inputs[a], Input::Int(_)) => OpArg::Int(env.int(l)),
                    _ => OpArg::Float(env.float(l)),
                })
                .collect();
            let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            let o = match out {
                Loc::F(_) => OpOut::Float(out_f(f_out, *out)?.as_mut_slice()),
                Loc::I(j) => OpOut::Int(
                    i_out
                        .iter_mut()
                        .find(|(x, _)| x == j)
                        .map(|(_, v)| v.as_mut_slice())
                        .ok_or("internal: output not taken")?,
                ),
                _ => return Err("internal: a fallback writes a selection".into()),
            };
            eval_op(op, &shapes, out_shape, &args, o, cx.op_scratch)?;
        }
    }
    Ok(())
}

/// The selection buffer a body writes (its output `out`, taken out of the table for the run).
fn selection_out(s_out: &mut [(usize, Vec<u64>)], out: Loc) -> Result<&mut Vec<u64>, String> {
    let Loc::S(j) = out else {
        return Err("internal: a selection buffer".into());
    };
    s_out
        .iter_mut()
        .find(|(x, _)| *x == j)
        .map(|(_, v)| v)
        .ok_or_else(|| "internal: output not taken".into())
}

/// The positions of `sel` in the weight `[m, n]` at `offset` grouped by 64-column gradient
/// panel (a counting sort, ascending within a panel): panel `q`'s are
/// `by_panel[start[q]..start[q + 1]]`. `None` when none is selected.
pub(super) fn selected_by_panel(
    sel: &[u64],
    offset: usize,
    (m, n): (usize, usize),
) -> Option<(Vec<usize>, Vec<u64>)> {
    let lo = sel.partition_point(|&i| (i as usize) < offset);
    let hi = sel.partition_point(|&i| (i as usize) < offset + m * n);
    let mine = &sel[lo..hi];
    if mine.is_empty() || n == 0 {
        return None;
    }
    let panels = n.div_ceil(GEMM_PANEL);
    let panel_of = |i: u64| ((i as usize - offset) % n) / GEMM_PANEL;
    let mut start = vec![0usize; panels + 1];
    for &i in mine {
        start[panel_of(i) + 1] += 1;
    }
    for q in 0..panels {
        start[q + 1] += start[q];
    }
    let mut fill = start.clone();
    let mut by_panel = vec![0u64; mine.len()];
    for &i in mine {
        let q = panel_of(i);
        by_panel[fill[q]] = i;
        fill[q] += 1;
    }
    Some((start, by_panel))
}

/// A score a selection may choose: its order key, its position in the selection, and the
/// updated weight and `w0` there (NaN for an operand no score kernel makes), which the new
/// entries take without reading `w0` again.
pub(super) type Candidate = (u64, u64, (f32, f32));

/// One `topk_select` of the step and what its score kernels gathered for it this run.
#[derive(Clone, Debug, Default)]
pub(super) struct Selection {
    /// Which of its operands `grad_score` kernels make (and gather candidates for).
    pub fed: Vec<bool>,
    /// The floor for this run: the order key of half the last run's `k`-th largest score;
    /// `None` before the first run.
    pub floor: Option<u64>,
    /// How many candidates a kernel may gather before giving up on them (set with the
    /// selection's `k`).
    pub cap: usize,
    /// Every score at or above the floor that the fed operands made this run, in position
    /// order once selected from.
    pub candidates: Vec<Candidate>,
    /// How many fed operands gathered this run, and whether one gave up.
    pub fed_this_run: usize,
    pub overflow: bool,
    /// A score kernel gathered without writing its scores (only the selection reads them):
    /// a selection that cannot be made from the candidates must ask for them.
    pub scores_missing: bool,
    /// Set by a selection that asked for its scores instead of selecting (its score kernels
    /// are run again, writing them, and it runs again).
    pub needs_scores: bool,
    /// Which candidates this run's selection chose, when it was made from them (both runs are
    /// kept as they were gathered).
    pub chosen: Option<Chosen>,
    /// Where each operand starts (positions).
    pub offsets: Vec<u64>,
    /// This run's candidates of the operands no score kernel makes, in position order.
    pub unfed: Vec<Candidate>,
    /// Room for the candidates' keys.
    pub keys: Vec<u64>,
    /// The reach masks of the two halves a score kernel gathers from, and the candidates of
    /// the second half of its rows: kept for their room.
    pub masks: [Vec<u64>; 2],
    pub second: Vec<Candidate>,
}

impl Selection {
    /// Ready for a run: nothing gathered yet.
    pub fn reset(&mut self) {
        self.candidates.clear();
        self.fed_this_run = 0;
        self.overflow = false;
        self.scores_missing = false;
        self.needs_scores = false;
        self.chosen = None;
    }
}

/// The top `k` of `scores` into `out`: `topk_select`'s selection. When the step's score kernels
/// gathered every score at or above a floor and at least `k` did, the `k` largest are among
/// them (every score left out is below every one gathered), and only those are ranked; else
/// every score is. Either way the floor for the next run follows the `k`-th largest score.
fn select_top(cx: &mut Ctx<'_>, scores: &[&[f32]], k: usize, out: &mut Vec<u64>) {
    let gathered = match cx.selection {
        Some(t) => {
            let sel = &mut cx.selections[t];
            let fed = sel.fed.iter().filter(|&&f| f).count();
            match sel.floor {
                Some(floor) if !sel.overflow && sel.fed_this_run == fed && fed > 0 => {
                    // The operands no score kernel makes (a bias's scores): read here, in
                    // position order, apart from the rest.
                    let unfed = &mut sel.unfed;
                    unfed.clear();
                    let mut offset = 0u64;
                    for (s, &is_fed) in scores.iter().zip(&sel.fed) {
                        if !is_fed {
                            for (i, &x) in s.iter().enumerate() {
                                let key = score_key(x);
                                if key >= floor {
                                    let none = (f32::NAN, f32::NAN);
                                    unfed.push((key, offset + i as u64, none));
                                }
                            }
                        }
                        offset += s.len() as u64;
                    }
                    sel.candidates.len() + sel.unfed.len() >= k
                }
                _ => false,
            }
        }
        None => false,
    };
    let mut kth = u64::MAX;
    match (gathered, cx.selection) {
        (true, Some(t)) => {
            let sel = &mut cx.selections[t];
            // The score kernels gathered in position order when they ran in it.
            if !sel.candidates.is_sorted_by_key(|c| c.1) {
                sel.candidates.sort_by_key(|c| c.1);
            }
            let runs = (&sel.candidates[..], &sel.unfed[..]);
            sel.chosen = topk_among_runs(runs, k, &mut sel.keys, out);
            kth = sel.chosen.map_or(u64::MAX, |c| c.kth);
        }
        (false, Some(t)) if cx.selections[t].scores_missing => {
            // Every score is needed and some were not written: asked for (made again and
            // written); this second selection reads them all.
            let sel = &mut cx.selections[t];
            sel.needs_scores = true;
            sel.scores_missing = false;
            sel.overflow = true;
            return;
        }
        _ => topk_select(scores, k, cx.topk_scratch, out),
    }
    if let Some(t) = cx.selection {
        // The k-th largest score's key (found above when selected from the candidates: not
        // every score is written).
        if !gathered {
            let mut at = out.iter().peekable();
            let mut offset = 0u64;
            for s in scores {
                let end = offset + s.len() as u64;
                while let Some(&&p) = at.peek() {
                    if p >= end {
                        break;
                    }
                    kth = kth.min(score_key(s[(p - offset) as usize]));
                    at.next();
                }
                offset = end;
            }
        }
        const POSITIVE: u64 = 1 << 31;
        let sel = &mut cx.selections[t];
        // Half the k-th largest score: the threshold moves little from one step to the next
        // (on LeNet-300-100, k = N/25, batch 64: nearly every step at least k scores reach it,
        // about 1.1·k of them), and a step where fewer do reads every score instead.
        // A floor of 0 lets every score through (a k-th largest score of 0: most of a
        // batch-1 step's scores are exact zeros): then every score is read instead.
        sel.floor = (!out.is_empty() && kth >= POSITIVE)
            .then(|| {
                let kth_score = f32::from_bits((kth - POSITIVE) as u32);
                score_key(kth_score * 0.5)
            })
            .filter(|&floor| floor > POSITIVE);
    }
}
