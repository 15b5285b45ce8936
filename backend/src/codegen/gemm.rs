//! Matrix products `C[m, n] = op(A) · op(B)`, bit-exact with the interpreter.
//!
//! **Order** (products below the import threshold). The interpreter's contract
//! (`ir/src/interp/gemm.rs`) is that every element is
//! `c[i][j] = ((−0 + a(i,0)·b(0,j)) + a(i,1)·b(1,j)) + ... + a(i,k−1)·b(k−1,j)`: products rounded
//! to `f32`, added one at a time in ascending `k`, starting from `−0` (so from the first product
//! exactly), no FMA. Vectorising over `k` would change that order, so the vectors run over `n`
//! instead: a register tile of `MR × NR` outputs (`MR` = 4 rows of A, `NR` = 8 columns = two
//! `f32x4`) is updated once per `k` with `acc += splat(a(i, k)) · b(k, j..j+8)`, each lane still
//! its own ascending-`k` sum.
//!
//! **Imported GEMM.** Products of at least 2^12 multiply-adds ([`use_import`]) are the ones the
//! interpreter hands to the GEMM library (AVX-512/FMA), in panels of 64 columns. This kernel
//! then calls the interpreter's `gemm_f32` through the registered import [`GEMM_IMPORT`] on its
//! column range (which starts at a multiple of 64), or on blocks of [`REGEN_BLOCK`] = 64
//! regenerated weight rows, making exactly the interpreter's library calls; the bias and `relu`
//! epilogue then runs in this kernel over the stored product.
//!
//! **Blocking.** For each panel of `NR` columns, `B`'s part is packed once into a contiguous,
//! zero-padded `[k][NR]` buffer (the transposition of `matmul_nt` happens here), then every
//! strip of rows of A is run against it (4 rows at a time, then single rows). Padded columns
//! are computed and dropped. A one-row `matmul_nt` (batch 1) packs nothing: each value of `B`
//! is used once, so its panel's columns are summed over `B`'s rows where they lie.
//!
//! **In-tile regeneration** ([`Layout::NtRegen`]): `B` is a seeded weight `[n, k]` that is
//! never materialised. Its `NR` rows of the panel are words `j·k .. (j + NR)·k` of the stream,
//! contiguous, so they are regenerated into a scratch buffer of `NR·k` values (the ChaCha8
//! kernel, [`super::chacha`]) and then packed like a dense `B`: each regenerated value is used by
//! all `m` rows of A.
//!
//! **Epilogue** ([`GemmSpec`]): the tile's sums can go through `+ bias[j]` and `relu` in
//! registers before they are stored; each of the three stages (the product, after the bias,
//! after `relu`) is stored only where the program needs it. The same single IEEE operations as
//! the interpreter's `bias_add` and `relu`, so fusing changes no bit.
//!
//! **Overlay** (`NtRegen` with `overlay`): a tracked (Dropback) weight is its regenerated
//! initial value with its stored entries written over it. After a panel's rows are
//! regenerated, the entries that fall in them (a contiguous run of the sorted entry list, whose
//! bounds per panel the caller passes) are written into the scratch rows.
//!
//! **Column range**: the kernel computes the panels of columns `int[5] .. int[6]` (`int[5]` a
//! multiple of `NR`), so several threads can each take a range of panels: every output element
//! is computed by exactly one of them, in the same order, whatever the split.
//!
//! Slots: `A` = `ptr[0]`, `B` = `ptr[1]` (unused by `NtRegen`), `C` (the product) = `ptr[2]`,
//! scratch = `ptr[3]` (`2·NR·k` floats), bias = `ptr[4]` (padded to a multiple of `NR`), the
//! biased sums = `ptr[5]`, after relu = `ptr[6]`; overlay: entry indices (`u32`) = `ptr[7]`,
//! values = `ptr[8]`, per-panel entry bounds (`u64`, one per panel plus one) = `ptr[9]`;
//! `int[0..3]` = m, n, k; `NtRegen` also `int[3]` = seed, `int[4]` = stream, `f32[0]` = lo,
//! `f32[1]` = hi, `f32[2]` = init_scale; `int[5]`, `int[6]` = the column range.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::Variable;

use super::chacha::{emit_fill, UniformMap};
use super::loops::{counted_loop, if_else, if_then, vector_loop};
use super::{mem, FnCtx, F32X4};

/// Rows of A per register tile.
pub const MR: usize = 4;
/// Columns of B per register tile (two `f32x4`).
pub const NR: usize = 8;

/// Whether a product of `m·n·k` multiply-adds calls the imported GEMM: exactly the products the
/// interpreter runs in the GEMM library (`sparsec_ir::interp::uses_library`, from 2^12), so both
/// make the same library calls. Below it the Cranelift tile reproduces the interpreter's own
/// kernel order.
pub fn use_import(m: usize, n: usize, k: usize) -> bool {
    sparsec_ir::interp::uses_library(m, n, k)
}

/// The registered name of the imported GEMM (`crate::jit::imports`).
pub const GEMM_IMPORT: &str = "sparsec_gemm_f32";

/// Rows of a regenerated weight (columns of the product) per imported GEMM call: the library's
/// panel width, so the calls are the interpreter's (the scratch holds `REGEN_BLOCK·k` values).
pub const REGEN_BLOCK: usize = sparsec_ir::interp::GEMM_PANEL;

/// Which operands are transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `matmul`: `A[m, k] · B[k, n]`.
    Nn,
    /// `matmul_nt`: `A[m, k] · B[n, k]ᵀ`.
    Nt,
    /// `matmul_tn`: `A[k, m]ᵀ · B[k, n]`.
    Tn,
    /// `matmul_nt` whose `B[n, k]` is the seeded uniform weight `(seed, stream, lo, hi)`,
    /// regenerated tile by tile.
    NtRegen,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nn => "matmul",
            Layout::Nt => "matmul_nt",
            Layout::Tn => "matmul_tn",
            Layout::NtRegen => "matmul_nt_regen",
        }
    }

    fn a_transposed(self) -> bool {
        self == Layout::Tn
    }

    fn b_rows_are_k(self) -> bool {
        matches!(self, Layout::Nn | Layout::Tn)
    }
}

/// A matrix-product kernel: the layout and what is fused around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmSpec {
    pub layout: Layout,
    /// Add `bias[j]` (`ptr[4]`) to every sum.
    pub bias: bool,
    /// Then `relu`.
    pub relu: bool,
    /// Store the plain product (`ptr[2]`), the biased sums (`ptr[5]`), the relu (`ptr[6]`).
    pub store: [bool; 3],
    /// `NtRegen` only: write the tracked entries over the regenerated rows.
    pub overlay: bool,
    /// The product itself is the interpreter's GEMM, called through the registered import
    /// [`GEMM_IMPORT`] (chosen by [`use_import`]); the prologue and epilogue stay in this
    /// kernel's code (module docs, "Imported GEMM").
    pub import: bool,
}

impl GemmSpec {
    /// The plain product, stored in `ptr[2]`.
    pub fn plain(layout: Layout) -> GemmSpec {
        GemmSpec {
            layout,
            bias: false,
            relu: false,
            store: [true, false, false],
            overlay: false,
            import: false,
        }
    }
}

struct Dims {
    a: Value,
    m: Value,
    n: Value,
    k: Value,
    zero: Value,
    /// Where the three epilogue stages go (used when `spec.store` says so).
    outs: [Value; 3],
    bias: Value,
    spec: GemmSpec,
}

/// The body of a plain matrix-product kernel (slots in the module docs).
pub fn emit_gemm(fx: &mut FnCtx<'_>, layout: Layout) {
    emit_gemm_fused(fx, &GemmSpec::plain(layout))
}

/// The body of a matrix-product kernel with its prologue and epilogue (module docs).
pub fn emit_gemm_fused(fx: &mut FnCtx<'_>, spec: &GemmSpec) {
    if spec.import {
        return emit_gemm_import(fx, spec);
    }
    let layout = spec.layout;
    let a = fx.arg_ptr(0);
    let b = fx.arg_ptr(1);
    let c = fx.arg_ptr(2);
    let scratch = fx.arg_ptr(3);
    let m = fx.arg_int(0);
    let n = fx.arg_int(1);
    let k = fx.arg_int(2);
    let zero = fx.iconst(0);
    let panel = scratch;
    let nr_k = fx.b.ins().imul_imm_s(k, NR as i64);
    let rows_buf = fx.elem(scratch, nr_k);
    let regen = if layout == Layout::NtRegen {
        let seed = fx.arg_int(3);
        let stream = fx.arg_int(4);
        let lo = fx.arg_f32(0);
        let hi = fx.arg_f32(1);
        let init_scale = fx.arg_f32(2);
        Some((seed, stream, UniformMap::new(fx, lo, hi, init_scale)))
    } else {
        None
    };
    let overlay = if spec.overlay && regen.is_some() {
        Some((fx.arg_ptr(7), fx.arg_ptr(8), fx.arg_ptr(9)))
    } else {
        None
    };
    let outs = [c, fx.arg_ptr(5), fx.arg_ptr(6)];
    let bias = fx.arg_ptr(4);
    let d = Dims {
        a,
        m,
        n,
        k,
        zero,
        outs,
        bias,
        spec: *spec,
    };
    let j_begin = fx.arg_int(5);
    let j_end = fx.arg_int(6);
    counted_loop(fx, j_begin, j_end, NR as i64, |fx, jb| {
        let left = fx.b.ins().isub(n, jb);
        let nr = fx.iconst(NR as i64);
        let cols = fx.umin(left, nr);
        // Where the panel's rows of B come from (NT layouts): B itself, or the regenerated tile.
        let (src, row0) = match &regen {
            Some((seed, stream, map)) => {
                let start = fx.b.ins().imul(jb, k);
                let len = fx.b.ins().imul(cols, k);
                emit_fill(fx, map, *seed, *stream, start, rows_buf, len);
                if let Some((idx, val, bounds)) = overlay {
                    // Entries e0 .. e1 of the sorted list fall in rows jb .. jb + cols.
                    let p = fx.b.ins().ushr_imm_u(jb, NR.trailing_zeros() as i64);
                    let at = fx.b.ins().ishl_imm_u(p, 3);
                    let at = fx.b.ins().iadd(bounds, at);
                    let e0 = fx.b.ins().load(types::I64, mem(), at, 0);
                    let e1 = fx.b.ins().load(types::I64, mem(), at, 8);
                    counted_loop(fx, e0, e1, 1, |fx, e| {
                        let ia = fx.elem(idx, e);
                        let i = fx.b.ins().uload32(mem(), ia, 0);
                        let v = fx.load_at(types::F32, val, e, 0);
                        let j = fx.b.ins().isub(i, start);
                        fx.store_at(v, rows_buf, j, 0);
                    });
                }
                (rows_buf, zero)
            }
            None => (b, jb),
        };
        let packed = |fx: &mut FnCtx<'_>| {
            pack_panel(fx, layout, &d, src, row0, jb, cols, panel);
            let m4 = fx.b.ins().band_imm_s(m, !(MR as i64 - 1));
            counted_loop(fx, zero, m4, MR as i64, |fx, i| {
                tile(fx, layout, &d, MR, i, jb, cols, panel)
            });
            counted_loop(fx, m4, m, 1, |fx, i| {
                tile(fx, layout, &d, 1, i, jb, cols, panel)
            });
        };
        if layout == Layout::Nt {
            let one_row = fx.b.ins().icmp_imm_s(IntCC::Equal, m, 1);
            if_else(fx, one_row, |fx| one_row_nt(fx, &d, b, jb, cols), packed);
        } else {
            packed(fx);
        }
    });
}

/// Pack columns `jb .. jb + cols` of `op(B)` into `panel[kk·NR + r]`, zero for `r >= cols`.
/// For the NT layouts, `src` holds B's rows from `row0` on (row `j` of B is column `j` of op(B)).
#[allow(clippy::too_many_arguments)]
fn pack_panel(
    fx: &mut FnCtx<'_>,
    layout: Layout,
    d: &Dims,
    src: Value,
    row0: Value,
    jb: Value,
    cols: Value,
    panel: Value,
) {
    let (k, n, zero) = (d.k, d.n, d.zero);
    let partial =
        fx.b.ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, cols, NR as i64);
    if_then(fx, partial, |fx| {
        let total = fx.b.ins().imul_imm_s(k, NR as i64);
        let z = fx.f32const(0.0);
        let z4 = fx.splat(z);
        counted_loop(fx, zero, total, 4, |fx, t| fx.store_at(z4, panel, t, 0));
    });
    if layout.b_rows_are_k() {
        // op(B)(kk, j) = B[kk·n + j]: rows of `cols` contiguous values.
        if_else(
            fx,
            partial,
            |fx| {
                counted_loop(fx, zero, k, 1, |fx, kk| {
                    let row = fx.b.ins().imul(kk, n);
                    let row = fx.b.ins().iadd(row, jb);
                    let from = fx.elem(src, row);
                    let at = fx.b.ins().imul_imm_s(kk, NR as i64);
                    let to = fx.elem(panel, at);
                    counted_loop(fx, zero, cols, 1, |fx, r| {
                        let v = fx.load_at(types::F32, from, r, 0);
                        fx.store_at(v, to, r, 0);
                    });
                });
            },
            |fx| {
                counted_loop(fx, zero, k, 1, |fx, kk| {
                    let row = fx.b.ins().imul(kk, n);
                    let row = fx.b.ins().iadd(row, jb);
                    let at = fx.b.ins().imul_imm_s(kk, NR as i64);
                    for h in 0..NR / 4 {
                        let v = fx.load_at(F32X4, src, row, 16 * h as i32);
                        fx.store_at(v, panel, at, 16 * h as i32);
                    }
                });
            },
        );
    } else {
        // op(B)(kk, j) = B[j·k + kk]: a transposing copy, one row of B at a time.
        counted_loop(fx, zero, cols, 1, |fx, r| {
            let row = fx.b.ins().iadd(row0, r);
            let row = fx.b.ins().imul(row, k);
            let from = fx.elem(src, row);
            let to = fx.elem(panel, r);
            counted_loop(fx, zero, k, 1, |fx, kk| {
                let v = fx.load_at(types::F32, from, kk, 0);
                let at = fx.b.ins().imul_imm_s(kk, NR as i64);
                fx.store_at(v, to, at, 0);
            });
        });
    }
}

/// Where a sum of `k` products starts: `−0`, the interpreter's start (so a sum is its first
/// product plus the rest); `+0` for an empty one.
fn sum_start(fx: &mut FnCtx<'_>, k: Value) -> Value {
    let (plus, minus) = (fx.f32const(0.0), fx.f32const(-0.0));
    let empty = fx.b.ins().icmp_imm_s(IntCC::Equal, k, 0);
    fx.b.ins().select(empty, plus, minus)
}

/// One register tile: rows `i .. i + rows` of C, columns `jb .. jb + cols`, over all of `k`.
#[allow(clippy::too_many_arguments)]
fn tile(
    fx: &mut FnCtx<'_>,
    layout: Layout,
    d: &Dims,
    rows: usize,
    i: Value,
    jb: Value,
    cols: Value,
    panel: Value,
) {
    let (a, m, k, zero) = (d.a, d.m, d.k, d.zero);
    let start = sum_start(fx, k);
    let start4 = fx.splat(start);
    let acc: Vec<[Variable; NR / 4]> = (0..rows)
        .map(|_| [fx.var(F32X4, start4), fx.var(F32X4, start4)])
        .collect();
    // Pointers carried across iterations (so nothing is recomputed per `k`): one per row of
    // the tile into op(A) (one for transposed A, whose rows are adjacent), and the panel row.
    // Element (i + r, kk) of op(A) is at a_ptr[r] (+ 4r bytes when A is transposed), which
    // advances by `a_step` bytes per kk.
    let (a_ptrs, a_step): (Vec<Variable>, Value) = if layout.a_transposed() {
        let base = fx.elem(a, i);
        (vec![fx.var(fx.ptr, base)], fx.b.ins().ishl_imm_u(m, 2))
    } else {
        let ptrs = (0..rows)
            .map(|r| {
                let row = fx.b.ins().iadd_imm_s(i, r as i64);
                let off = fx.b.ins().imul(row, k);
                let p = fx.elem(a, off);
                fx.var(fx.ptr, p)
            })
            .collect();
        (ptrs, fx.iconst(4))
    };
    let b_ptr = fx.var(fx.ptr, panel);
    counted_loop(fx, zero, k, 1, |fx, _kk| {
        let pb = fx.b.use_var(b_ptr);
        let bv: Vec<Value> = (0..NR / 4)
            .map(|h| fx.b.ins().load(F32X4, mem(), pb, 16 * h as i32))
            .collect();
        let pa: Vec<Value> = a_ptrs.iter().map(|&v| fx.b.use_var(v)).collect();
        for (r, acc_r) in acc.iter().enumerate() {
            let av = if layout.a_transposed() {
                fx.b.ins().load(types::F32, mem(), pa[0], 4 * r as i32)
            } else {
                fx.b.ins().load(types::F32, mem(), pa[r], 0)
            };
            let av = fx.splat(av);
            for (h, &var) in acc_r.iter().enumerate() {
                let p = fx.b.ins().fmul(av, bv[h]);
                let s = fx.b.use_var(var);
                let s = fx.b.ins().fadd(s, p);
                fx.b.def_var(var, s);
            }
        }
        for (&var, &p) in a_ptrs.iter().zip(&pa) {
            let next = fx.b.ins().iadd(p, a_step);
            fx.b.def_var(var, next);
        }
        let next = fx.b.ins().iadd_imm_s(pb, (NR * 4) as i64);
        fx.b.def_var(b_ptr, next);
    });
    let sums: Vec<[Value; NR / 4]> = acc
        .iter()
        .map(|r| [fx.b.use_var(r[0]), fx.b.use_var(r[1])])
        .collect();
    epilogue(fx, d, i, jb, cols, sums);
}

/// Columns `jb .. jb + cols` of a one-row `matmul_nt` (batch 1): each a dot product of `a` with
/// a row of `B`, read where it lies rather than packed (every value of `B` is used once), the
/// panel's eight columns as eight scalar sums that run side by side, each in ascending `k` from
/// `−0` as in [`tile`]. Lanes past `cols` repeat the last row of `B`; the epilogue does not
/// store them.
fn one_row_nt(fx: &mut FnCtx<'_>, d: &Dims, b: Value, jb: Value, cols: Value) {
    let (a, n, k, zero) = (d.a, d.n, d.k, d.zero);
    let start = sum_start(fx, k);
    let last = fx.b.ins().iadd_imm_s(n, -1);
    let rows: Vec<Variable> = (0..NR)
        .map(|r| {
            let j = fx.b.ins().iadd_imm_s(jb, r as i64);
            let j = fx.umin(j, last);
            let at = fx.b.ins().imul(j, k);
            let p = fx.elem(b, at);
            fx.var(fx.ptr, p)
        })
        .collect();
    let a_ptr = fx.var(fx.ptr, a);
    let acc: Vec<Variable> = (0..NR).map(|_| fx.var(types::F32, start)).collect();
    counted_loop(fx, zero, k, 1, |fx, _kk| {
        let pa = fx.b.use_var(a_ptr);
        let av = fx.b.ins().load(types::F32, mem(), pa, 0);
        for (&row, &sum) in rows.iter().zip(&acc) {
            let pr = fx.b.use_var(row);
            let bv = fx.b.ins().load(types::F32, mem(), pr, 0);
            let p = fx.b.ins().fmul(av, bv);
            let s = fx.b.use_var(sum);
            let s = fx.b.ins().fadd(s, p);
            fx.b.def_var(sum, s);
            let next = fx.b.ins().iadd_imm_s(pr, 4);
            fx.b.def_var(row, next);
        }
        let next = fx.b.ins().iadd_imm_s(pa, 4);
        fx.b.def_var(a_ptr, next);
    });
    let halves: [Value; NR / 4] = std::array::from_fn(|h| {
        let first = fx.b.use_var(acc[4 * h]);
        let mut v = fx.b.ins().scalar_to_vector(F32X4, first);
        for l in 1..4u8 {
            let e = fx.b.use_var(acc[4 * h + l as usize]);
            v = fx.b.ins().insertlane(v, e, l);
        }
        v
    });
    epilogue(fx, d, zero, jb, cols, vec![halves]);
}

/// A tile's sums (rows `i ..`, columns `jb .. jb + cols`) through the bias and `relu`, in
/// registers, each stage stored where the program needs it: stage 0 is the product, 1 after
/// the bias, 2 after relu.
fn epilogue(
    fx: &mut FnCtx<'_>,
    d: &Dims,
    i: Value,
    jb: Value,
    cols: Value,
    mut cur: Vec<[Value; NR / 4]>,
) {
    let (n, zero) = (d.n, d.zero);
    let z4 = fx.vconst32(F32X4, [0; 4]);
    let spec = d.spec;
    let mut stages: Vec<(usize, Vec<[Value; NR / 4]>)> = Vec::new();
    if spec.store[0] {
        stages.push((0, cur.clone()));
    }
    if spec.bias {
        let bv: Vec<Value> = (0..NR / 4)
            .map(|h| fx.load_at(F32X4, d.bias, jb, 16 * h as i32))
            .collect();
        for row in cur.iter_mut() {
            for (h, v) in row.iter_mut().enumerate() {
                *v = fx.b.ins().fadd(*v, bv[h]);
            }
        }
        if spec.store[1] {
            stages.push((1, cur.clone()));
        }
    }
    if spec.relu {
        for row in cur.iter_mut() {
            for v in row.iter_mut() {
                *v = relu4(fx, *v, z4);
            }
        }
        if spec.store[2] {
            stages.push((2, cur.clone()));
        }
    }
    let full = fx.b.ins().icmp_imm_s(IntCC::Equal, cols, NR as i64);
    let tmp_slot = fx.stack_buffer((MR * NR * 4) as u32);
    if_else(
        fx,
        full,
        |fx| {
            for (stage, vals) in &stages {
                let dst = d.outs[*stage];
                for (r, row_v) in vals.iter().enumerate() {
                    let row = fx.b.ins().iadd_imm_s(i, r as i64);
                    let at = fx.b.ins().imul(row, n);
                    let at = fx.b.ins().iadd(at, jb);
                    for (h, &v) in row_v.iter().enumerate() {
                        fx.store_at(v, dst, at, 16 * h as i32);
                    }
                }
            }
        },
        |fx| {
            let tmp = fx.stack_addr(tmp_slot);
            for (stage, vals) in &stages {
                let out = d.outs[*stage];
                for (r, row_v) in vals.iter().enumerate() {
                    for (h, &v) in row_v.iter().enumerate() {
                        fx.b.ins()
                            .store(super::mem(), v, tmp, ((r * NR + 4 * h) * 4) as i32);
                    }
                    let row = fx.b.ins().iadd_imm_s(i, r as i64);
                    let at = fx.b.ins().imul(row, n);
                    let at = fx.b.ins().iadd(at, jb);
                    let dst = fx.elem(out, at);
                    let src = fx.b.ins().iadd_imm_s(tmp, (r * NR * 4) as i64);
                    counted_loop(fx, zero, cols, 1, |fx, j| {
                        let v = fx.load_at(types::F32, src, j, 0);
                        fx.store_at(v, dst, j, 0);
                    });
                }
            }
        },
    );
}

/// `relu` of an `f32x4`: `if x <= 0 { 0 } else { x }`, lane by lane (the interpreter's rule).
fn relu4(fx: &mut FnCtx<'_>, x: Value, z4: Value) -> Value {
    let le = fx.b.ins().fcmp(
        cranelift_codegen::ir::condcodes::FloatCC::LessThanOrEqual,
        x,
        z4,
    );
    let mask = fx.vbitcast(F32X4, le);
    fx.b.ins().bitselect(mask, z4, x)
}

/// The parameter types of [`GEMM_IMPORT`]: `(m, n, k, flags, a, b, ldb, c, ldc)`, all
/// 64-bit (see `crate::jit::sparsec_gemm_f32`).
pub const GEMM_IMPORT_PARAMS: usize = 9;

/// The body of a product kernel whose product is the imported GEMM (module docs): for the
/// column range `int[5] .. int[6]`, the product goes into the first stored stage's buffer
/// (`C[i·n + j]`), then one pass in `f32x4` (scalar tail) adds the bias, applies `relu` and
/// stores the other stages. Regenerated weights are regenerated (and overlaid) `REGEN_BLOCK`
/// rows at a time into the scratch (`REGEN_BLOCK·k` floats), one call per block.
fn emit_gemm_import(fx: &mut FnCtx<'_>, spec: &GemmSpec) {
    let layout = spec.layout;
    let callee = *fx
        .imports
        .first()
        .expect("an imported-GEMM kernel is defined with its import");
    let a = fx.arg_ptr(0);
    let b = fx.arg_ptr(1);
    let scratch = fx.arg_ptr(3);
    let bias = fx.arg_ptr(4);
    let outs = [fx.arg_ptr(2), fx.arg_ptr(5), fx.arg_ptr(6)];
    let m = fx.arg_int(0);
    let n = fx.arg_int(1);
    let k = fx.arg_int(2);
    let j0 = fx.arg_int(5);
    let j1 = fx.arg_int(6);
    let first = spec.store.iter().position(|&s| s).unwrap_or(0);
    let c = outs[first];
    // bit 0: A transposed; bit 1: op(B)(kk, j) = B[j·ldb + kk].
    // Bit 3: columns of a library product (`gemm_f32_panels`), whatever this call's own size.
    let flags = (layout.a_transposed() as i64) | ((!layout.b_rows_are_k() as i64) << 1) | (1 << 3);
    let flags = fx.iconst(flags);
    if layout == Layout::NtRegen {
        let seed = fx.arg_int(3);
        let stream = fx.arg_int(4);
        let lo = fx.arg_f32(0);
        let hi = fx.arg_f32(1);
        let init_scale = fx.arg_f32(2);
        let map = UniformMap::new(fx, lo, hi, init_scale);
        let overlay = spec
            .overlay
            .then(|| (fx.arg_ptr(7), fx.arg_ptr(8), fx.arg_ptr(9)));
        counted_loop(fx, j0, j1, REGEN_BLOCK as i64, |fx, jb| {
            let left = fx.b.ins().isub(j1, jb);
            let nb = fx.iconst(REGEN_BLOCK as i64);
            let cols = fx.umin(left, nb);
            let start = fx.b.ins().imul(jb, k);
            let len = fx.b.ins().imul(cols, k);
            emit_fill(fx, &map, seed, stream, start, scratch, len);
            if let Some((idx, val, bounds)) = overlay {
                // Entries e0 .. e1 fall in rows jb .. jb + cols: panels jb/NR .. ceil((jb+cols)/NR).
                let p0 = fx.b.ins().ushr_imm_u(jb, NR.trailing_zeros() as i64);
                let end = fx.b.ins().iadd(jb, cols);
                let end = fx.b.ins().iadd_imm_s(end, NR as i64 - 1);
                let p1 = fx.b.ins().ushr_imm_u(end, NR.trailing_zeros() as i64);
                let at0 = fx.b.ins().ishl_imm_u(p0, 3);
                let at0 = fx.b.ins().iadd(bounds, at0);
                let at1 = fx.b.ins().ishl_imm_u(p1, 3);
                let at1 = fx.b.ins().iadd(bounds, at1);
                let e0 = fx.b.ins().load(types::I64, mem(), at0, 0);
                let e1 = fx.b.ins().load(types::I64, mem(), at1, 0);
                counted_loop(fx, e0, e1, 1, |fx, e| {
                    let ia = fx.elem(idx, e);
                    let i = fx.b.ins().uload32(mem(), ia, 0);
                    let v = fx.load_at(types::F32, val, e, 0);
                    let j = fx.b.ins().isub(i, start);
                    fx.store_at(v, scratch, j, 0);
                });
            }
            let cb = fx.elem(c, jb);
            fx.b.ins()
                .call(callee, &[m, cols, k, flags, a, scratch, k, cb, n]);
        });
    } else {
        let cols = fx.b.ins().isub(j1, j0);
        // Column j0 of op(B): B + j0 (B is [k, n]) or B + j0·k (B is [n, k]).
        let (b0, ldb) = if layout.b_rows_are_k() {
            (fx.elem(b, j0), n)
        } else {
            let off = fx.b.ins().imul(j0, k);
            (fx.elem(b, off), k)
        };
        let cb = fx.elem(c, j0);
        fx.b.ins()
            .call(callee, &[m, cols, k, flags, a, b0, ldb, cb, n]);
    }
    if !(spec.bias || spec.relu) {
        return;
    }
    // The epilogue: the same single IEEE operations as `bias_add` and `relu`, element by element.
    let zero = fx.iconst(0);
    let width = fx.b.ins().isub(j1, j0);
    counted_loop(fx, zero, m, 1, |fx, i| {
        let row = fx.b.ins().imul(i, n);
        let row = fx.b.ins().iadd(row, j0);
        vector_loop(fx, width, |fx, t, ty| {
            let at = fx.b.ins().iadd(row, t);
            let mut v = fx.load_at(ty, c, at, 0);
            if spec.bias {
                let j = fx.b.ins().iadd(j0, t);
                let bv = fx.load_at(ty, bias, j, 0);
                v = fx.b.ins().fadd(v, bv);
                if spec.store[1] {
                    fx.store_at(v, outs[1], at, 0);
                }
            }
            if spec.relu {
                let z = fx.f32const(0.0);
                let z = if ty == F32X4 { fx.splat(z) } else { z };
                v = if ty == F32X4 {
                    relu4(fx, v, z)
                } else {
                    let le = fx.b.ins().fcmp(
                        cranelift_codegen::ir::condcodes::FloatCC::LessThanOrEqual,
                        v,
                        z,
                    );
                    fx.b.ins().select(le, z, v)
                };
                if spec.store[2] {
                    fx.store_at(v, outs[2], at, 0);
                }
            }
        });
    });
}
