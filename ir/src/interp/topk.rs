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
    scratch: &mut Vec<(u64, u64)>,
    out: &mut Vec<u64>,
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
        out.extend(0..n as u64);
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
    let better = |a: &(u64, u64), b: &(u64, u64)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
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
fn collect_at_or_above(scores: &[&[f32]], key_min: u64, candidates: &mut Vec<(u64, u64)>) {
    const POSITIVE: u64 = 1 << 31;
    let mut pos = 0u64;
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
    candidates: &mut Vec<(u64, u64)>,
    out: &mut Vec<u64>,
) -> usize {
    for key in keys() {
        hist[(key >> shift) as usize] += 1;
    }
    let (bucket, need) = threshold_bucket(hist, k);
    for (pos, key) in keys().enumerate() {
        let d = (key >> shift) as usize;
        if d > bucket {
            out.push(pos as u64);
        } else if d == bucket {
            candidates.push((key, pos as u64));
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
    candidates: &mut Vec<(u64, u64)>,
    out: &mut Vec<u64>,
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
    let mut pos = 0u64;
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

/// A candidate of [`topk_among`]: its order key ([`score_key`]), its position, and anything the
/// caller carries along.
pub type Ranked<P> = (u64, u64, P);

/// The top `k` of `candidates` (order key, position, anything the caller carries along) in
/// [`topk_select`]'s order (larger key first, then the lower position): their positions
/// ascending into `out`, and `candidates` left holding just those, in that position order.
/// This is `topk_select`'s selection over every score when `candidates` holds every position
/// whose key is at least the `k`-th largest's (a caller's superset, e.g. every score above a
/// floor, when at least `k` passed it).
///
/// The candidates are put in position order first (unless they are: a stable sort, which
/// merges the ascending runs a caller gathering panel by panel produces), then selected by
/// [`topk_among_runs`].
pub fn topk_among<P: Copy>(candidates: &mut Vec<Ranked<P>>, k: usize, out: &mut Vec<u64>) {
    if !candidates.is_sorted_by_key(|c| c.1) {
        candidates.sort_by_key(|c| c.1);
    }
    match topk_among_runs((candidates, &[]), k, &mut Vec::new(), out) {
        Some(chosen) => candidates.retain(|c| chosen.contains(c.0, c.1)),
        None => candidates.clear(),
    }
}

/// Which candidates a selection among candidates chose ([`topk_among_runs`]): every key above
/// the `k`-th largest, and of the keys equal to it those up to a position (ties go to the
/// lower position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The `k`-th largest key.
    pub kth: u64,
    /// The position of the last key equal to `kth` that is chosen (`u64::MAX`: all are).
    pub last_tie: u64,
}

impl Chosen {
    /// Whether the candidate with `key` at position `pos` is chosen.
    #[inline(always)]
    pub fn contains(&self, key: u64, pos: u64) -> bool {
        // Without branches: callers test every candidate.
        (key > self.kth) | ((key == self.kth) & (pos <= self.last_tie))
    }
}

/// [`topk_among`] over candidates in two runs, each in position order (disjoint positions),
/// without merging or copying them: the selection's positions, ascending, into `out`, and the
/// rule that tells the chosen candidates ([`Chosen`]; `None` for an empty selection). `keys`
/// is scratch. A caller whose candidates come from two sources (a few gathered apart from the
/// rest) saves a pass over all of them, and one that needs the chosen candidates' payload
/// reads them where they are, with [`Chosen::contains`].
pub fn topk_among_runs<P: Copy>(
    (a, b): (&[Ranked<P>], &[Ranked<P>]),
    k: usize,
    keys: &mut Vec<u64>,
    out: &mut Vec<u64>,
) -> Option<Chosen> {
    let n = a.len() + b.len();
    let k = k.min(n);
    if k == 0 {
        out.clear();
        return None;
    }
    keys.clear();
    keys.extend(a.iter().chain(b).map(|c| c.0));
    let (_, &mut kth, _) = keys.select_nth_unstable_by(k - 1, |x, y| y.cmp(x));
    // Every key at or above the k-th, in position order: each candidate's position written at
    // the next slot, and the slot kept when it is chosen (no branch on the choice). The slots
    // are those of the last run where they can be (no clearing).
    out.resize(n + 1, 0);
    let mut next = 0;
    let mut chosen = Chosen {
        kth,
        last_tie: u64::MAX,
    };
    in_position_order((a, b), |c| {
        out[next] = c.1;
        next += usize::from(chosen.contains(c.0, c.1));
    });
    if next > k {
        // More keys equal the k-th than are chosen: the first of them in position order.
        let ties = k - keys.iter().filter(|&&key| key > kth).count();
        let mut seen = 0;
        in_position_order((a, b), |c| {
            seen += usize::from(c.0 == kth);
            if c.0 == kth && seen == ties {
                chosen.last_tie = c.1;
            }
        });
        next = 0;
        in_position_order((a, b), |c| {
            out[next] = c.1;
            next += usize::from(chosen.contains(c.0, c.1));
        });
    }
    debug_assert_eq!(next, k);
    out.truncate(k);
    Some(chosen)
}

/// `visit` each candidate of two runs, each in position order (disjoint positions), in
/// position order: the long run `a` in stretches between the short run `b`'s candidates.
fn in_position_order<P>((a, b): (&[Ranked<P>], &[Ranked<P>]), mut visit: impl FnMut(&Ranked<P>)) {
    let mut from = 0;
    for c in b {
        let to = from + a[from..].partition_point(|x| x.1 < c.1);
        a[from..to].iter().for_each(&mut visit);
        visit(c);
        from = to;
    }
    a[from..].iter().for_each(visit);
}

/// The order key of a score: [`topk_select`]'s order of `f32` values as unsigned integers
/// (`−0 = +0`, NaN above every number).
#[inline(always)]
pub fn score_key(x: f32) -> u64 {
    order_key32(x)
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

/// The selection of [`topk_select`] over scores that are never stored, only visited: in
/// passes, each visiting every score once, in any order and split among any number of
/// [`Tally`]s (one per thread). The caller remakes the scores for each pass.
///
/// The same radix select on the same 32-bit order keys: each histogram pass fixes the next 12
/// (then 8) bits of the `k`-th largest key, until the scores that share the fixed bits are few
/// ([`StreamSelect::CANDIDATES`]) or every bit is fixed; the last pass collects the positions
/// above the fixed bits and the candidates that share them, and the exact selection settles
/// the candidates (larger key first, then the lower position). Memory: `k` positions and the
/// candidates, never a score per position. The result is `topk_select`'s, position for
/// position.
#[derive(Clone, Debug)]
pub struct StreamSelect {
    k: usize,
    /// How many of the key's top bits are fixed, and their value.
    fixed: u32,
    prefix: u32,
    /// How many positions with the fixed bits are still to be taken.
    need: usize,
    /// How many positions have the fixed bits (all of them before the first pass).
    sharing: usize,
    collected: bool,
    out: Vec<u64>,
}

/// What one pass asks of a [`Tally`]: a histogram of the next digit, or the final collection.
#[derive(Clone, Debug)]
pub enum Tally {
    Histogram {
        fixed: u32,
        prefix: u32,
        digit: u32,
        hist: Vec<usize>,
    },
    Collect {
        fixed: u32,
        prefix: u32,
        above: Vec<u64>,
        candidates: Vec<(u64, u64)>,
    },
}

impl Tally {
    /// Visit the score at `pos` (every position exactly once per pass, over all tallies).
    #[inline(always)]
    pub fn visit(&mut self, pos: u64, score: f32) {
        let key = order_key32(score) as u32;
        match self {
            Tally::Histogram {
                fixed,
                prefix,
                digit,
                hist,
            } => {
                // `checked_shr`: no bits fixed yet means every key shares the (empty) prefix.
                if key.checked_shr(32 - *fixed).unwrap_or(0) == *prefix {
                    let d = (key << *fixed) >> (32 - *digit);
                    hist[d as usize] += 1;
                }
            }
            Tally::Collect {
                fixed,
                prefix,
                above,
                candidates,
            } => {
                let top = key.checked_shr(32 - *fixed).unwrap_or(0);
                if top > *prefix {
                    above.push(pos);
                } else if top == *prefix {
                    candidates.push((u64::from(key), pos));
                }
            }
        }
    }
}

impl StreamSelect {
    /// Collect once at most this many positions share the fixed bits.
    pub const CANDIDATES: usize = 1 << 22;

    /// The top `k` of `total` scores.
    pub fn new(k: usize, total: usize) -> StreamSelect {
        let mut s = StreamSelect {
            k: k.min(total),
            fixed: 0,
            prefix: 0,
            need: k.min(total),
            sharing: total,
            collected: false,
            out: Vec::new(),
        };
        // Nothing to visit: none, or every position.
        if s.k == 0 || s.k == total {
            s.out.extend(0..s.k as u64);
            s.collected = true;
        }
        s
    }

    /// The tally for the next pass, or `None` when the selection is made.
    pub fn next_pass(&self) -> Option<Tally> {
        if self.collected {
            return None;
        }
        if self.fixed == 32 || (self.fixed > 0 && self.sharing <= Self::CANDIDATES) {
            return Some(Tally::Collect {
                fixed: self.fixed,
                prefix: self.prefix,
                above: Vec::new(),
                candidates: Vec::new(),
            });
        }
        let digit = (32 - self.fixed).min(12);
        Some(Tally::Histogram {
            fixed: self.fixed,
            prefix: self.prefix,
            digit,
            hist: vec![0; 1 << digit],
        })
    }

    /// Take the tallies of a pass (each visited some of the positions, together all of them).
    pub fn finish_pass(&mut self, tallies: Vec<Tally>) -> Result<(), String> {
        let mut hist: Vec<usize> = Vec::new();
        let mut digit_bits = 0;
        let mut above: Vec<u64> = Vec::new();
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        for t in tallies {
            match t {
                Tally::Histogram { digit, hist: h, .. } => {
                    digit_bits = digit;
                    if hist.is_empty() {
                        hist = h;
                    } else {
                        hist.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
                    }
                }
                Tally::Collect {
                    above: a,
                    candidates: c,
                    ..
                } => {
                    above.extend(a);
                    candidates.extend(c);
                }
            }
        }
        if digit_bits > 0 {
            if hist.iter().sum::<usize>() != self.sharing {
                return Err(
                    "internal: a pass of the streamed top-k did not visit every score".into(),
                );
            }
            let (bucket, need) = threshold_bucket(&hist, self.need);
            self.sharing = hist[bucket];
            self.need = need;
            self.prefix = (self.prefix.checked_shl(digit_bits).unwrap_or(0)) | bucket as u32;
            self.fixed += digit_bits;
            return Ok(());
        }
        if above.len() + self.need != self.k || candidates.len() != self.sharing {
            return Err(
                "internal: the streamed top-k's collection does not match its counts".into(),
            );
        }
        let better = |a: &(u64, u64), b: &(u64, u64)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if self.need < candidates.len() {
            candidates.select_nth_unstable_by(self.need - 1, better);
            candidates.truncate(self.need);
        }
        self.out = above;
        self.out.extend(candidates.iter().map(|&(_, p)| p));
        self.out.sort_unstable();
        self.collected = true;
        Ok(())
    }

    /// The selected positions, ascending (once [`StreamSelect::next_pass`] is `None`).
    pub fn into_selection(self) -> Vec<u64> {
        self.out
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// The streamed selection, its scores visited in reverse order and split over two tallies.
    fn streamed(scores: &[f32], k: usize) -> Vec<u64> {
        let mut s = StreamSelect::new(k, scores.len());
        while let Some(t) = s.next_pass() {
            let (mut a, mut b) = (t.clone(), t);
            for (i, &x) in scores.iter().enumerate().rev() {
                if i % 3 == 0 { &mut a } else { &mut b }.visit(i as u64, x);
            }
            s.finish_pass(vec![a, b]).unwrap();
        }
        s.into_selection()
    }

    fn dense(scores: &[f32], k: usize) -> Vec<u64> {
        let mut out = Vec::new();
        topk_select(&[scores], k, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn streamed_selection_is_topk_select() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let cases: Vec<Vec<f32>> = vec![
            (0..5000).map(|_| (next() % 1000) as f32 * 1e-3).collect(),
            (0..5000)
                .map(|_| f32::from_bits(next() as u32 & 0x7fff_ffff))
                .collect(),
            vec![0.0; 300],
            (0..700)
                .map(|i| if i % 7 == 0 { f32::NAN } else { (i % 5) as f32 })
                .collect(),
            (0..400)
                .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
                .collect(),
        ];
        for scores in &cases {
            for k in [
                0,
                1,
                2,
                17,
                scores.len() / 3,
                scores.len() - 1,
                scores.len(),
                scores.len() + 5,
            ] {
                assert_eq!(streamed(scores, k), dense(scores, k), "k = {k}");
            }
        }
    }

    /// Ranking only the scores at or above a floor gives the whole selection whenever at
    /// least `k` reach it (ties at the floor included).
    #[test]
    fn candidates_above_a_floor_give_the_whole_selection() {
        let scores: Vec<f32> = (0..3000u32)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01)
            .collect();
        for floor_score in [0.0f32, 2.5, 5.0, 9.0] {
            let floor = score_key(floor_score);
            let mut candidates: Vec<(u64, u64, ())> = scores
                .iter()
                .enumerate()
                .filter(|&(_, &x)| score_key(x) >= floor)
                .map(|(i, &x)| (score_key(x), i as u64, ()))
                .collect();
            let reach = candidates.len();
            for k in [1, 10, reach / 2, reach] {
                let mut c = candidates.clone();
                // Gathered panel by panel: runs in position order, not one.
                c.reverse();
                let mut out = Vec::new();
                topk_among(&mut c, k, &mut out);
                assert_eq!(out, dense(&scores, k), "floor {floor_score}, k {k}");
                assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), out);
                // The same from two runs, each in position order, interleaved (many ties).
                let (a, b): (Vec<_>, Vec<_>) = candidates.iter().partition(|x| x.1 % 3 != 0);
                let (mut keys, mut from_runs) = (Vec::new(), Vec::new());
                let chosen = topk_among_runs((&a, &b), k, &mut keys, &mut from_runs);
                assert_eq!(from_runs, out, "two runs: floor {floor_score}, k {k}");
                let chosen = chosen.expect("a selection");
                assert_eq!(Some(chosen.kth), c.iter().map(|x| x.0).min());
                // The rule picks exactly the selection out of the candidates.
                let picked: Vec<u64> = candidates
                    .iter()
                    .filter(|x| chosen.contains(x.0, x.1))
                    .map(|x| x.1)
                    .collect();
                assert_eq!(picked, out, "the rule: floor {floor_score}, k {k}");
            }
            candidates.clear();
        }
    }

    #[test]
    fn many_equal_scores_fix_every_bit() {
        // 2^22 + 5 equal scores: more candidates than CANDIDATES until all 32 bits are fixed.
        let n = StreamSelect::CANDIDATES + 5;
        let scores = vec![0.5f32; n];
        assert_eq!(streamed(&scores, 3), vec![0, 1, 2]);
    }
}
