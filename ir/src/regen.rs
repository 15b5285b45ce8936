//! THE regeneration spec: how a seeded parameter's initial values are produced, bit for bit.
//!
//! Every consumer (initialisation, the interpreter, the JIT, tests, and anyone reading a
//! checkpoint without sparsec) must produce exactly these values:
//! - generator: ChaCha8 as in `rand_chacha::ChaCha8Rng`;
//! - key: a 32-byte seed whose first 8 bytes are the model seed (little-endian), the rest zero;
//! - stream: the parameter's stream id (`set_stream`);
//! - element `i` of the parameter (row-major, PyTorch layout) uses word `i` of that stream
//!   (`set_word_pos(i)`, then `next_u32()`), so any element can be regenerated alone;
//! - word → f32: `u = (w >> 8) as f32 * 2^-24` (exact, in [0, 1)), then `lo + (hi - lo) * u`
//!   evaluated in f32 as written: subtraction, product and sum each rounded to f32, no FMA.
//!
//! `rand` distributions are deliberately not used: their outputs may change between versions.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::module::Init;

/// The generator for one parameter's stream, positioned at word 0.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng.set_word_pos(0);
    rng
}

/// Map one 32-bit word to a value in `[lo, hi)` (see the module docs).
#[inline]
pub fn word_to_f32(word: u32, lo: f32, hi: f32) -> f32 {
    let u = (word >> 8) as f32 * (1.0 / 16_777_216.0);
    let width = hi - lo;
    let scaled = width * u;
    lo + scaled
}

/// Element `index` of the uniform stream `(seed, stream)` in `[lo, hi)`, regenerated alone.
pub fn uniform_at(seed: u64, stream: u64, index: u64, lo: f32, hi: f32) -> f32 {
    let mut rng = stream_rng(seed, stream);
    rng.set_word_pos(u128::from(index));
    word_to_f32(rng.next_u32(), lo, hi)
}

/// Fill `out` with elements `0..out.len()` of the uniform stream `(seed, stream)`.
pub fn fill_uniform(seed: u64, stream: u64, lo: f32, hi: f32, out: &mut [f32]) {
    fill_words(&mut stream_rng(seed, stream), lo, hi, out);
}

/// `out` from the generator's next words, one each ([`word_to_f32`]). The words come a
/// chunk at a time (`fill_bytes`: the same words as `next_u32`, little-endian, about twice
/// as fast as one call per word).
fn fill_words(rng: &mut ChaCha8Rng, lo: f32, hi: f32, out: &mut [f32]) {
    const CHUNK: usize = 1024;
    let mut bytes = [0u8; 4 * CHUNK];
    for part in out.chunks_mut(CHUNK) {
        let bytes = &mut bytes[..4 * part.len()];
        rng.fill_bytes(bytes);
        for (x, word) in part.iter_mut().zip(bytes.chunks_exact(4)) {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            *x = word_to_f32(word, lo, hi);
        }
    }
}

/// The initial value of a parameter: `Init` evaluated with its seed and stream.
pub fn init_values(init: Init, seed: u64, stream: u64, len: usize) -> Vec<f32> {
    match init {
        Init::Zeros => vec![0.0; len],
        Init::Ones => vec![1.0; len],
        Init::Uniform { lo, hi } => {
            let mut out = vec![0.0f32; len];
            fill_uniform(seed, stream, lo, hi, &mut out);
            out
        }
    }
}

/// Elements `start .. start + out.len()` of the initial value `init` of stream `(seed, stream)`:
/// a window of [`init_values`], for values too large to make whole.
pub fn init_values_at(init: Init, seed: u64, stream: u64, start: u64, out: &mut [f32]) {
    match init {
        Init::Zeros => out.fill(0.0),
        Init::Ones => out.fill(1.0),
        Init::Uniform { lo, hi } => {
            let mut rng = stream_rng(seed, stream);
            rng.set_word_pos(u128::from(start));
            fill_words(&mut rng, lo, hi, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_the_whole_value() {
        let init = Init::Uniform { lo: -0.5, hi: 0.5 };
        let all = init_values(init, 7, 2, 300);
        let mut window = vec![0.0f32; 37];
        init_values_at(init, 7, 2, 101, &mut window);
        assert_eq!(window, all[101..138]);
    }

    #[test]
    fn single_elements_match_the_sequential_stream() {
        let mut all = vec![0.0f32; 1000];
        fill_uniform(42, 3, -0.5, 0.5, &mut all);
        for i in [0usize, 1, 15, 16, 17, 63, 64, 65, 999] {
            assert_eq!(
                uniform_at(42, 3, i as u64, -0.5, 0.5).to_bits(),
                all[i].to_bits()
            );
        }
    }

    #[test]
    fn words_map_into_the_half_open_range() {
        assert_eq!(word_to_f32(0, -1.0, 1.0), -1.0);
        assert!(word_to_f32(u32::MAX, -1.0, 1.0) < 1.0);
        assert_eq!(word_to_f32(1 << 31, 0.0, 1.0), 0.5);
    }

    #[test]
    fn streams_and_seeds_differ() {
        let a = init_values(Init::Uniform { lo: 0.0, hi: 1.0 }, 1, 0, 8);
        let b = init_values(Init::Uniform { lo: 0.0, hi: 1.0 }, 1, 1, 8);
        let c = init_values(Init::Uniform { lo: 0.0, hi: 1.0 }, 2, 0, 8);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(init_values(Init::Zeros, 1, 0, 3), vec![0.0; 3]);
    }
}

#[cfg(test)]
mod raw_words {
    //! The spec against raw `rand_chacha` words, for random seeds, streams and indices.
    use super::*;

    /// A tiny independent generator to pick test cases (not part of the spec).
    fn cases(n: usize) -> Vec<(u64, u64, u64)> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..n)
            .map(|_| (next(), next() % 64, next() % (1 << 40)))
            .collect()
    }

    #[test]
    fn every_element_is_its_word_of_the_stream() {
        for (seed, stream, index) in cases(200) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            let mut raw = ChaCha8Rng::from_seed(key);
            raw.set_stream(stream);
            raw.set_word_pos(u128::from(index));
            let word = raw.next_u32();
            let (lo, hi) = (-0.125f32, 0.375f32);
            let u = (word >> 8) as f32 / 16_777_216.0;
            let expected = lo + (hi - lo) * u;
            let got = uniform_at(seed, stream, index, lo, hi);
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "seed {seed} stream {stream} i {index}"
            );
        }
    }

    /// A window made in bulk (across the chunks it is made in) is the stream's words one by
    /// one, from any start.
    #[test]
    fn windows_are_the_words_one_by_one() {
        for (seed, stream, index) in cases(12) {
            let len = 1 + (index % 3000) as usize;
            let start = index >> 20;
            let (lo, hi) = (-0.5f32, 0.25f32);
            let mut got = vec![0f32; len];
            init_values_at(Init::Uniform { lo, hi }, seed, stream, start, &mut got);
            let mut raw = stream_rng(seed, stream);
            raw.set_word_pos(u128::from(start));
            for (i, x) in got.iter().enumerate() {
                let want = word_to_f32(raw.next_u32(), lo, hi);
                assert_eq!(
                    x.to_bits(),
                    want.to_bits(),
                    "seed {seed} start {start} i {i}"
                );
            }
        }
    }
}
