//! ChaCha8 in Cranelift IR, exactly as `sparsec_ir::regen` specifies it (that is, as
//! `rand_chacha::ChaCha8Rng` produces it), four blocks at a time in `i32x4` lanes.
//!
//! The state of block `b` of stream `s` under the model seed `seed` is the standard ChaCha
//! layout that `rand_chacha` uses:
//!
//! ```text
//! x[0..4]   = "expand 32-byte k"           x[4..12] = the key: seed as two little-endian
//! x[12, 13] = b (64-bit, low word first)              words, then six zero words
//! x[14, 15] = s (64-bit, low word first)
//! ```
//!
//! Eight rounds (four column + diagonal double rounds), then the input is added back; word `j`
//! of block `b` is word `16·b + j` of the stream. Lane `l` of every vector holds block `b0 + l`,
//! so the rounds are pure lane-wise adds, xors and rotations, and a 4×4 transpose puts each
//! block's words back in order.
//!
//! Word → value: `u = (w >> 8) as f32 · 2^-24` (exact: the integer is below 2^24, and the
//! product is a power-of-two scaling), then `lo + (hi − lo) · u` with each of the subtraction,
//! product and sum rounded to `f32`, as `regen::word_to_f32` writes it.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::loops::{counted_loop, if_else};
use super::{FnCtx, F32X4, I32X4};

/// "expand 32-byte k", as four little-endian words.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Double rounds of ChaCha8.
const DOUBLE_ROUNDS: usize = 4;

/// `x <<< n` lane-wise.
fn rotl(fx: &mut FnCtx<'_>, x: Value, n: i64) -> Value {
    let hi = fx.b.ins().ishl_imm_u(x, n);
    let lo = fx.b.ins().ushr_imm_u(x, 32 - n);
    fx.b.ins().bor(hi, lo)
}

fn quarter_round(fx: &mut FnCtx<'_>, x: &mut [Value; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = fx.b.ins().iadd(x[a], x[b]);
    let t = fx.b.ins().bxor(x[d], x[a]);
    x[d] = rotl(fx, t, 16);
    x[c] = fx.b.ins().iadd(x[c], x[d]);
    let t = fx.b.ins().bxor(x[b], x[c]);
    x[b] = rotl(fx, t, 12);
    x[a] = fx.b.ins().iadd(x[a], x[b]);
    let t = fx.b.ins().bxor(x[d], x[a]);
    x[d] = rotl(fx, t, 8);
    x[c] = fx.b.ins().iadd(x[c], x[d]);
    let t = fx.b.ins().bxor(x[b], x[c]);
    x[b] = rotl(fx, t, 7);
}

/// The 16 output words of blocks `block .. block + 4` of `(seed, stream)` (all `i64`): vector
/// `j` holds word `j` of block `block + l` in lane `l`.
pub fn blocks4(fx: &mut FnCtx<'_>, seed: Value, stream: Value, block: Value) -> [Value; 16] {
    let split = |fx: &mut FnCtx<'_>, v: Value| {
        let lo = fx.b.ins().ireduce(types::I32, v);
        let hi = fx.b.ins().ushr_imm_u(v, 32);
        let hi = fx.b.ins().ireduce(types::I32, hi);
        (lo, hi)
    };
    let (seed_lo, seed_hi) = split(fx, seed);
    let (stream_lo, stream_hi) = split(fx, stream);
    let (block_lo, block_hi) = split(fx, block);
    let mut init = [fx.vconst32(I32X4, [0; 4]); 16];
    for (j, &s) in SIGMA.iter().enumerate() {
        init[j] = fx.vconst32(I32X4, [s; 4]);
    }
    init[4] = fx.b.ins().splat(I32X4, seed_lo);
    init[5] = fx.b.ins().splat(I32X4, seed_hi);
    // The 64-bit counters block + l: the low words, then the carry into the high words.
    let lo0 = fx.b.ins().splat(I32X4, block_lo);
    let steps = fx.vconst32(I32X4, [0, 1, 2, 3]);
    init[12] = fx.b.ins().iadd(lo0, steps);
    let wrapped = fx.b.ins().icmp(IntCC::UnsignedLessThan, init[12], lo0); // −1 where it wrapped
    let hi0 = fx.b.ins().splat(I32X4, block_hi);
    init[13] = fx.b.ins().isub(hi0, wrapped);
    init[14] = fx.b.ins().splat(I32X4, stream_lo);
    init[15] = fx.b.ins().splat(I32X4, stream_hi);

    let mut x = init;
    for _ in 0..DOUBLE_ROUNDS {
        quarter_round(fx, &mut x, 0, 4, 8, 12);
        quarter_round(fx, &mut x, 1, 5, 9, 13);
        quarter_round(fx, &mut x, 2, 6, 10, 14);
        quarter_round(fx, &mut x, 3, 7, 11, 15);
        quarter_round(fx, &mut x, 0, 5, 10, 15);
        quarter_round(fx, &mut x, 1, 6, 11, 12);
        quarter_round(fx, &mut x, 2, 7, 8, 13);
        quarter_round(fx, &mut x, 3, 4, 9, 14);
    }
    for j in 0..16 {
        x[j] = fx.b.ins().iadd(x[j], init[j]);
    }
    x
}

fn shuffle32(fx: &mut FnCtx<'_>, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    fx.shuffle32(I32X4, a, b, lanes)
}

/// Transpose the 4×4 matrix whose rows are `r`.
fn transpose4(fx: &mut FnCtx<'_>, r: [Value; 4]) -> [Value; 4] {
    let t0 = shuffle32(fx, r[0], r[1], [0, 4, 1, 5]);
    let t1 = shuffle32(fx, r[2], r[3], [0, 4, 1, 5]);
    let t2 = shuffle32(fx, r[0], r[1], [2, 6, 3, 7]);
    let t3 = shuffle32(fx, r[2], r[3], [2, 6, 3, 7]);
    [
        shuffle32(fx, t0, t1, [0, 1, 4, 5]),
        shuffle32(fx, t0, t1, [2, 3, 6, 7]),
        shuffle32(fx, t2, t3, [0, 1, 4, 5]),
        shuffle32(fx, t2, t3, [2, 3, 6, 7]),
    ]
}

/// The word → `f32` map, set up once per kernel.
pub struct UniformMap {
    lo: Value,
    width: Value,
    scale: Value,
    init_scale: Value,
}

impl UniformMap {
    /// `lo` and `hi` are `f32` values; `width = hi − lo` is rounded to `f32` once, here.
    /// `init_scale` (an `f32`) multiplies every value, one more rounding, as the interpreter's
    /// `w · init_scale` (exact when it is 1).
    pub fn new(fx: &mut FnCtx<'_>, lo: Value, hi: Value, init_scale: Value) -> UniformMap {
        let width = fx.b.ins().fsub(hi, lo);
        let scale = fx.f32const(1.0 / 16_777_216.0);
        UniformMap {
            lo: fx.splat(lo),
            width: fx.splat(width),
            scale: fx.splat(scale),
            init_scale: fx.splat(init_scale),
        }
    }

    /// Four words (`i32x4`) → four values (`f32x4`).
    pub fn map(&self, fx: &mut FnCtx<'_>, w: Value) -> Value {
        let top = fx.b.ins().ushr_imm_u(w, 8);
        // Below 2^24, so signed and unsigned conversion agree and both are exact.
        let f = fx.b.ins().fcvt_from_sint(F32X4, top);
        let u = fx.b.ins().fmul(f, self.scale);
        let scaled = fx.b.ins().fmul(self.width, u);
        let w = fx.b.ins().fadd(self.lo, scaled);
        fx.b.ins().fmul(w, self.init_scale)
    }
}

/// Emit `out[i] = lo + (hi − lo)·u(word(seed, stream, start + i))` for `i < len`.
///
/// `seed`, `stream`, `start`, `len` are `i64`, `out` a pointer; `map` holds `lo`, `hi`.
/// Generates 64 words (4 blocks) per iteration starting at the block of the current word; a full,
/// block-aligned group is stored straight to `out`, and a partial one (the first when `start`
/// is not a multiple of 16, the last when fewer than 64 values remain) goes through a stack
/// buffer and is copied.
pub fn emit_fill(
    fx: &mut FnCtx<'_>,
    map: &UniformMap,
    seed: Value,
    stream: Value,
    start: Value,
    out: Value,
    len: Value,
) {
    let slot = fx.stack_buffer(64 * 4);
    let buf = fx.stack_addr(slot);
    let zero = fx.iconst(0);
    let i_var = fx.var(types::I64, zero);
    let pos_var = fx.var(types::I64, start);

    let header = fx.b.create_block();
    let body = fx.b.create_block();
    let exit = fx.b.create_block();
    fx.b.ins().jump(header, &[]);
    fx.b.switch_to_block(header);
    let i = fx.b.use_var(i_var);
    let more = fx.ult(i, len);
    fx.b.ins().brif(more, body, &[], exit, &[]);

    fx.b.switch_to_block(body);
    fx.b.seal_block(body);
    let i = fx.b.use_var(i_var);
    let pos = fx.b.use_var(pos_var);
    let block = fx.b.ins().ushr_imm_u(pos, 4);
    let off = fx.b.ins().band_imm_s(pos, 15);
    let words = blocks4(fx, seed, stream, block);
    // values[l][g]: words 4g .. 4g + 4 of block `block + l`, mapped to f32.
    let mut values = [[zero; 4]; 4];
    for g in 0..4 {
        let rows = [
            words[4 * g],
            words[4 * g + 1],
            words[4 * g + 2],
            words[4 * g + 3],
        ];
        let cols = transpose4(fx, rows);
        for (l, &c) in cols.iter().enumerate() {
            values[l][g] = map.map(fx, c);
        }
    }
    let remaining = fx.b.ins().isub(len, i);
    let sixty_four = fx.iconst(64);
    let aligned = fx.b.ins().icmp_imm_s(IntCC::Equal, off, 0);
    let full =
        fx.b.ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, remaining, sixty_four);
    let direct = fx.b.ins().band(aligned, full);
    let store_all = |fx: &mut FnCtx<'_>, base: Value, at: Value| {
        for (l, row) in values.iter().enumerate() {
            for (g, &v) in row.iter().enumerate() {
                fx.store_at(v, base, at, (l * 64 + g * 16) as i32);
            }
        }
    };
    if_else(
        fx,
        direct,
        |fx| {
            store_all(fx, out, i);
            let i2 = fx.b.ins().iadd_imm_s(i, 64);
            let pos2 = fx.b.ins().iadd_imm_s(pos, 64);
            fx.b.def_var(i_var, i2);
            fx.b.def_var(pos_var, pos2);
        },
        |fx| {
            store_all(fx, buf, zero);
            let avail = fx.b.ins().isub(sixty_four, off);
            let n = fx.umin(avail, remaining);
            let dst = fx.elem(out, i);
            let src = fx.elem(buf, off);
            counted_loop(fx, zero, n, 1, |fx, j| {
                let v = fx.load_at(types::F32, src, j, 0);
                fx.store_at(v, dst, j, 0);
            });
            let i2 = fx.b.ins().iadd(i, n);
            let pos2 = fx.b.ins().iadd(pos, n);
            fx.b.def_var(i_var, i2);
            fx.b.def_var(pos_var, pos2);
        },
    );
    fx.b.ins().jump(header, &[]);
    fx.b.seal_block(header);
    fx.b.switch_to_block(exit);
    fx.b.seal_block(exit);
}

/// The regeneration kernel. Slots: out = `ptr[0]`; `int[0..4]` = seed, stream, start, len;
/// `f32[0..3]` = lo, hi, init_scale (each value is `word_to_f32(..) · init_scale`).
pub fn emit_regen(fx: &mut FnCtx<'_>) {
    let out = fx.arg_ptr(0);
    let seed = fx.arg_int(0);
    let stream = fx.arg_int(1);
    let start = fx.arg_int(2);
    let len = fx.arg_int(3);
    let lo = fx.arg_f32(0);
    let hi = fx.arg_f32(1);
    let init_scale = fx.arg_f32(2);
    let map = UniformMap::new(fx, lo, hi, init_scale);
    emit_fill(fx, &map, seed, stream, start, out, len);
}
