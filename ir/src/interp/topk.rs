//! The exact top-`k` selection behind `topk_select`: a radix select on order keys, whose result
//! is fully determined by the scores (ties to the lower position), so every executor that calls
//! it selects the same positions.

use super::float::Float;

/// The exact top-`k` positions of the concatenation of `scores` (in order, each row-major),
/// sorted ascending, written to `out`. Larger scores first, ordered as `f64` values with
/// `−0 = +0` and every NaN above every number; equal scores go to the lower position. With
/// `k ≥` the total every position is selected. `scratch` is reused between calls.
///
/// A radix select on the order keys, 12 bits at a time from the top: one pass counts the top
/// digits, a second sends every position above the digit that holds the `k`-th largest straight
/// to `out` and keeps that digit's positions as candidates, which later digits narrow the same
/// way; the last few thousand candidates (ties included) are settled by an exact selection.
/// Two passes over the scores instead of a selection over all of them: the order of the result
/// is fully determined, so this changes no selected position.
pub fn topk_select<T: Float>(
    scores: &[&[T]],
    k: usize,
    scratch: &mut Vec<(u64, u32)>,
    out: &mut Vec<u32>,
) {
    const DIGIT: u32 = 12;
    const BUCKETS: usize = 1 << DIGIT;
    /// Below this many candidates the exact selection is cheaper than another digit.
    const SETTLE: usize = 4096;
    scratch.clear();
    out.clear();
    let n: usize = scores.iter().map(|s| s.len()).sum();
    if k == 0 {
        return;
    }
    if k >= n {
        out.extend(0..n as u32);
        return;
    }
    // `f32` scores get 32-bit keys (same order, cheaper to make); all keys of one call are of
    // one kind, so candidates compare consistently.
    let f32s: Option<Vec<&[f32]>> = scores.iter().map(|s| T::as_f32s(s)).collect();
    let mut shift = match f32s {
        Some(_) => 32 - DIGIT,
        None => 64 - DIGIT,
    };
    let mut hist = vec![0usize; BUCKETS];
    let mut need = match &f32s {
        Some(f) => topk_first_digit_f32(f, shift, k, &mut hist, scratch, out),
        None => topk_first_digit(
            || {
                scores
                    .iter()
                    .flat_map(|s| s.iter())
                    .map(|&x| order_key(x.to_f64()))
            },
            shift,
            k,
            &mut hist,
            scratch,
            out,
        ),
    };
    let mut bucket;
    // Lower digits over the candidates, which share every digit above `shift`.
    while scratch.len() > SETTLE && shift >= DIGIT {
        shift -= DIGIT;
        let digit = |key: u64| ((key >> shift) as usize) & (BUCKETS - 1);
        hist.fill(0);
        for &(key, _) in scratch.iter() {
            hist[digit(key)] += 1;
        }
        (bucket, need) = threshold_bucket(&hist, need);
        scratch.retain(|&(key, pos)| {
            let d = digit(key);
            if d > bucket {
                out.push(pos);
            }
            d == bucket
        });
    }
    let better = |a: &(u64, u32), b: &(u64, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    // Candidates stay in ascending position order (pushed so, and `retain` keeps order), so when
    // they are all one score, ties to the lower position are simply the first ones: the common
    // case of a batch-1 step, where most scores are an exact 0.
    let first_key = scratch.first().map(|c| c.0);
    if need < scratch.len() && scratch.iter().all(|c| Some(c.0) == first_key) {
        scratch.truncate(need);
    }
    if need < scratch.len() {
        scratch.select_nth_unstable_by(need - 1, better);
        scratch.truncate(need);
    }
    // `out` holds ascending runs (one per digit); the candidates' positions are in any order.
    let runs_end = out.len();
    out.extend(scratch.iter().map(|&(_, i)| i));
    out[runs_end..].sort_unstable();
    // A merge of the runs (the standard library's stable sort finds them).
    out.sort();
}

/// Push `(key, position)` of every score whose key is at least `key_min` onto `candidates`, in
/// position order. For a threshold at or above `+0` (Dropback's scores are magnitudes, so
/// nearly always), that is the float comparison `x >= t` (`t` the float whose key is
/// `key_min`; `−0` compares as `+0`, and a NaN passes, as its key is the largest), and the key is
/// made only for the few that pass: a compare per score instead of a key per score.
fn collect_at_or_above(scores: &[&[f32]], key_min: u64, candidates: &mut Vec<(u64, u32)>) {
    const POSITIVE: u64 = 1 << 31;
    let mut pos = 0u32;
    let t = f32::from_bits(key_min.saturating_sub(POSITIVE) as u32);
    if key_min >= POSITIVE && !t.is_nan() {
        for s in scores {
            for &x in s.iter() {
                // At or above `t`, or NaN (whose key is the largest).
                if x >= t || x.is_nan() {
                    candidates.push((order_key32(x), pos));
                }
                pos = pos.wrapping_add(1);
            }
        }
    } else {
        for s in scores {
            for &x in s.iter() {
                let key = order_key32(x);
                if key >= key_min {
                    candidates.push((key, pos));
                }
                pos = pos.wrapping_add(1);
            }
        }
    }
}

/// The first digit of [`topk_select`] over every key (two passes over `keys()`): positions above
/// the `k`-th largest's digit go to `out`, those with its digit to `candidates`; returns how many
/// candidates are still to be taken.
fn topk_first_digit<I: Iterator<Item = u64>>(
    keys: impl Fn() -> I,
    shift: u32,
    k: usize,
    hist: &mut [usize],
    candidates: &mut Vec<(u64, u32)>,
    out: &mut Vec<u32>,
) -> usize {
    for key in keys() {
        hist[(key >> shift) as usize] += 1;
    }
    let (bucket, need) = threshold_bucket(hist, k);
    for (pos, key) in keys().enumerate() {
        let d = (key >> shift) as usize;
        if d > bucket {
            out.push(pos as u32);
        } else if d == bucket {
            candidates.push((key, pos as u32));
        }
    }
    need
}

/// [`topk_first_digit`] for `f32` scores, written for speed (it reads every score twice per
/// Dropback step): plain loops over each slice, and four interleaved histograms, so that runs
/// of equal digits do not serialise on one counter.
fn topk_first_digit_f32(
    scores: &[&[f32]],
    shift: u32,
    k: usize,
    hist: &mut [usize],
    candidates: &mut Vec<(u64, u32)>,
    out: &mut Vec<u32>,
) -> usize {
    // A sample of every STRIDE-th score estimates a digit that about 1.25·k scores reach; one
    // pass collects every score at or above it. If at least k were collected, the top k are
    // among them (every score left out is below every one collected), and the exact selection
    // goes on over those candidates only; otherwise (a misleading sample) the full histogram.
    const STRIDE: usize = 16;
    let n: usize = scores.iter().map(|s| s.len()).sum();
    if n >= 1 << 16 {
        let mut pos = 0usize;
        let mut sampled = 0usize;
        for s in scores {
            let first = (STRIDE - pos % STRIDE) % STRIDE;
            for &x in s.iter().skip(first).step_by(STRIDE) {
                hist[(order_key32(x) >> shift) as usize] += 1;
                sampled += 1;
            }
            pos += s.len();
        }
        let want = (k + k / 4 + 64).div_ceil(STRIDE);
        if want < sampled {
            let (floor, _) = threshold_bucket(hist, want);
            collect_at_or_above(scores, (floor as u64) << shift, candidates);
            if candidates.len() >= k {
                hist.fill(0);
                for &(key, _) in candidates.iter() {
                    hist[(key >> shift) as usize] += 1;
                }
                let (bucket, need) = threshold_bucket(hist, k);
                candidates.retain(|&(key, pos)| {
                    let d = (key >> shift) as usize;
                    if d > bucket {
                        out.push(pos);
                    }
                    d == bucket
                });
                return need;
            }
            candidates.clear();
        }
        hist.fill(0);
    }
    let buckets = hist.len();
    let mut lanes = vec![0u32; 4 * buckets];
    for s in scores {
        let mut quads = s.chunks_exact(4);
        for q in &mut quads {
            for (lane, &x) in q.iter().enumerate() {
                lanes[lane * buckets + (order_key32(x) >> shift) as usize] += 1;
            }
        }
        for &x in quads.remainder() {
            lanes[(order_key32(x) >> shift) as usize] += 1;
        }
    }
    for (b, h) in hist.iter_mut().enumerate() {
        *h = (0..4).map(|lane| lanes[lane * buckets + b] as usize).sum();
    }
    let (bucket, need) = threshold_bucket(hist, k);
    let mut pos = 0u32;
    for s in scores {
        for &x in s.iter() {
            let key = order_key32(x);
            let d = (key >> shift) as usize;
            if d >= bucket {
                if d > bucket {
                    out.push(pos);
                } else {
                    candidates.push((key, pos));
                }
            }
            pos = pos.wrapping_add(1);
        }
    }
    need
}

/// The bucket that holds the `k`-th largest of a histogram (`1 ≤ k ≤` its total), and how many
/// of that bucket's elements are still to be taken after every larger bucket.
fn threshold_bucket(hist: &[usize], k: usize) -> (usize, usize) {
    let mut above = 0;
    for (b, &count) in hist.iter().enumerate().rev() {
        if above + count >= k {
            return (b, k - above);
        }
        above += count;
    }
    (0, k - above)
}

/// [`order_key`] for an `f32`, in 32 bits: the same order. Branch-free (selects only), since
/// it runs over every score twice per step.
#[inline(always)]
fn order_key32(x: f32) -> u64 {
    let bits = (x + 0.0).to_bits();
    // Negative: flip every bit; else set the sign bit.
    let flip = (((bits as i32) >> 31) as u32) | (1 << 31);
    let key = if x.is_nan() { u32::MAX } else { bits ^ flip };
    u64::from(key)
}

/// A key whose unsigned order is the numeric order of `x` (`−0 = +0`, NaN above everything).
fn order_key(x: f64) -> u64 {
    if x.is_nan() {
        return u64::MAX;
    }
    let bits = (x + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}
