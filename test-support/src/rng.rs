//! The one seeded random generator of the tests: tiny, without a dependency, and the same on
//! every platform, so that a failing case is named by its seed and replays exactly.
//!
//! It runs one of two streams, because the tests were written against two and each must keep
//! drawing the cases it always drew:
//!
//! - SplitMix64 ([`Rng::new`]): test data for the interpreter, the kernels and the gradient
//!   checks, and the random IR generator ([`crate::random_ir`]);
//! - xorshift64* ([`Rng::xorshift`]): the mutation tests and Dropback's synthetic batches.
//!
//! Every draw below works on either stream and takes the words it always took, so a test that
//! moved here from its own copy of a generator sees the same sequence.

/// A seeded generator; see the module documentation for its two streams.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    stream: Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    SplitMix64,
    XorShift64Star,
}

impl Rng {
    /// SplitMix64 from `seed` (any seed, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed,
            stream: Stream::SplitMix64,
        }
    }

    /// xorshift64* from `seed` (a zero seed gives zeros only).
    pub fn xorshift(seed: u64) -> Rng {
        Rng {
            state: seed,
            stream: Stream::XorShift64Star,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        match self.stream {
            Stream::SplitMix64 => {
                self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            Stream::XorShift64Star => {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
        }
    }

    /// Uniform in `0..n`; `0` when `n` is 0 (a word is drawn either way).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `0..n` (`n > 0`), as a `u64`.
    pub fn below_u64(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// One of `xs` (not empty), uniformly.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// `n` draws of [`Rng::uniform`].
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in `[-1, 1)`, in steps of 2^-23.
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Values in `[-1, 1)` with zeros of both signs and a subnormal sprinkled in (one in 16
    /// each).
    pub fn f32_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match self.below_u64(16) {
                0 => 0.0,
                1 => -0.0,
                2 => 1e-40, // subnormal
                _ => self.f32(),
            })
            .collect()
    }

    /// Like [`Rng::f32_vec`], plus NaN (one with a payload) and infinities, for operands that
    /// are never combined with another NaN, so that a result's payload is determined.
    pub fn f32_vec_special(&mut self, n: usize) -> Vec<f32> {
        let mut v = self.f32_vec(n);
        for x in v.iter_mut() {
            match self.below_u64(24) {
                0 => *x = f32::NAN,
                1 => *x = f32::INFINITY,
                2 => *x = f32::NEG_INFINITY,
                3 => *x = f32::from_bits(0x7fc0_1234), // a NaN with a payload
                _ => {}
            }
        }
        v
    }

    /// In `[-1, 1)`, with exact `+0` and `-0` now and then (one in 32 each): `relu` and
    /// `relu_grad` must treat the signed zeros exactly as the interpreter does.
    pub fn value(&mut self) -> f32 {
        match self.below(32) {
            0 => 0.0,
            1 => -0.0,
            _ => (self.next_u64() >> 40) as f32 / 8_388_608.0 - 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    /// The first words of both streams, as the tests' own copies of the generators drew them.
    #[test]
    fn the_streams_are_the_ones_the_tests_were_written_against() {
        let mut s = Rng::new(0);
        assert_eq!(s.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(s.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut x = Rng::xorshift(1);
        assert_eq!(x.next_u64(), 0x47e4_ce4b_896c_dd1d);
    }
}
