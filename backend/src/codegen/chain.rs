//! Fused element-wise chains and column reductions, generated per kernel of a program.
//!
//! A **chain** ([`ChainSpec`]) is a small expression DAG over same-length buffers: every node
//! is one element-wise operation of the IR on inputs, scalars or earlier nodes, and the nodes
//! the rest of the program needs are stored. Each element is loaded once, every node is
//! computed in registers (`f32x4`, eight vectors a trip, then one, then a scalar tail) with the
//! interpreter's single IEEE operations, and only the outputs are written: the same bits as
//! running the ops one by one.
//! `tanh` and `sigmoid`'s `exp` call the interpreter's own functions ([`super::math`]), lane by
//! lane. The activations are the IR's table ([`sparsec_ir::op::Unary`]); `emit_unary` and
//! `emit_unary_grad` hold each one's code, the one place a new activation needs JIT code.
//!
//! Chain slots: inputs `ptr[0 .. inputs]`, outputs `ptr[inputs ..]`, scalars `f32[0 ..]`;
//! `int[0]`, `int[1]` = the element range `start .. end` (threads take disjoint ranges).
//!
//! A **chain over a product** ([`emit_chain_rows`]) is a chain whose input 0 is a matrix product
//! the runtime makes 64 columns at a time into a scratch panel (a weight gradient feeding its
//! update, so the gradient is never stored whole): the chain runs over a block of rows of that
//! panel's columns. Slots as a chain's, with `ptr[0]` the panel and every other buffer at the
//! panel's first column; `int[0]` = rows, `int[1]` = columns, `int[2]` = the row stride (in
//! elements) of every buffer but the panel, `int[3]` = the panel's. When the product is an outer
//! product (`k = 1`), [`emit_chain_outer`] makes it where it is read instead: `ptr[0]` = `x`
//! (the `n` floats every row reads), `ptr[OUTER_DY_SLOT]` = `dy` (one factor per row), the other
//! buffers `[m, n]` from row 0; `int[0]`, `int[1]` = the row range (threads take disjoint rows),
//! `int[2]` = `n`.
//!
//! A **column reduction** ([`emit_reduce_rows`]) is `reduce_sum` over the leading axes of
//! `x: [R, C]`: `out[c] = ((0 + x[0, c]) + x[1, c]) + ...`, the interpreter's row-major order,
//! vectorised over `c`. Slots: `x` = `ptr[0]`, out = `ptr[1]`; `int[0..4]` = R, C, and the column
//! range `c0 .. c1`.
//!
//! A **channel reduction** ([`emit_reduce_channels`]) is `reduce_sum` of `x: [B, C, I]` over
//! `B` and `I` (a convolution's bias gradient): `out[c]` adds `x[b, c, i]` one at a time in
//! `(b, i)` order from `+0`, which is the interpreter's row-major order restricted to channel
//! `c`. Slots: `x` = `ptr[0]`, out = `ptr[1]`; `int[0..5]` = B, C, I and the channel range
//! `c0 .. c1` (threads take disjoint ranges).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};

use sparsec_ir::op::unary::LEAKY_RELU_SLOPE;
use sparsec_ir::op::Unary;

use super::loops::{counted_loop, if_then};
use super::{FnCtx, F32X4};

/// One element-wise operation of a chain (the IR op it computes, bit for bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EwOp {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
    /// `a · s` (`scale`, `s` a scalar operand)
    Scale,
    /// An activation of `a` (`emit_unary`).
    Unary(Unary),
    /// Its gradient: `dy = a` and `x` or `y` = `b` (`emit_unary_grad`).
    UnaryGrad(Unary),
    /// `|a − b|` with `−0` as `+0` (`dropback_score`: `w1`, `w0`)
    AbsDiff,
}

impl EwOp {
    pub fn name(self) -> &'static str {
        match self {
            EwOp::Add => "add",
            EwOp::Sub => "sub",
            EwOp::Mul => "mul",
            EwOp::Scale => "scale",
            EwOp::Unary(u) => u.name(),
            EwOp::UnaryGrad(u) => u.grad_name(),
            EwOp::AbsDiff => "abs_diff",
        }
    }

    pub fn arity(self) -> usize {
        match self {
            EwOp::Unary(_) => 1,
            _ => 2,
        }
    }

    /// Whether it calls an imported transcendental ([`super::math`]).
    pub fn uses_math(self) -> bool {
        matches!(self, EwOp::Unary(Unary::Tanh | Unary::Sigmoid))
    }
}

/// Where a chain node's operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// Input buffer `i` (`ptr[i]`), element by element.
    Input(usize),
    /// Scalar `i` (`f32[i]`), the same for every element.
    Scalar(usize),
    /// An earlier node's value.
    Node(usize),
}

/// A fused element-wise kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainSpec {
    pub inputs: usize,
    pub scalars: usize,
    pub nodes: Vec<(EwOp, Vec<Operand>)>,
    /// The nodes stored, in output-slot order.
    pub outputs: Vec<usize>,
}

impl ChainSpec {
    /// Whether the chain is defined with [`super::math::MATH_IMPORTS`] (it calls `exp`/`tanh`).
    pub fn uses_math(&self) -> bool {
        self.nodes.iter().any(|(op, _)| op.uses_math())
    }
}

/// Most buffers (inputs + outputs) and scalars a chain may have ([`crate::Args`]).
pub const MAX_CHAIN_BUFFERS: usize = 12;
pub const MAX_CHAIN_SCALARS: usize = 4;

fn select(fx: &mut FnCtx<'_>, ty: Type, cond: Value, x: Value, y: Value) -> Value {
    if ty.is_vector() {
        let mask = fx.vbitcast(ty, cond);
        fx.b.ins().bitselect(mask, x, y)
    } else {
        fx.b.ins().select(cond, x, y)
    }
}

fn emit_op(
    fx: &mut FnCtx<'_>,
    ty: Type,
    op: EwOp,
    a: Value,
    b: Value,
    zero: Value,
    one: Value,
) -> Value {
    match op {
        EwOp::Add => fx.b.ins().fadd(a, b),
        EwOp::Sub => fx.b.ins().fsub(a, b),
        EwOp::Mul | EwOp::Scale => fx.b.ins().fmul(a, b),
        EwOp::Unary(u) => emit_unary(fx, ty, u, a, zero, one),
        EwOp::UnaryGrad(u) => emit_unary_grad(fx, ty, u, a, b, zero, one),
        EwOp::AbsDiff => {
            let d = fx.b.ins().fsub(a, b);
            let neg = fx.b.ins().fneg(d);
            let pos = fx.b.ins().fadd(d, zero);
            let lt = fx.b.ins().fcmp(FloatCC::LessThan, d, zero);
            select(fx, ty, lt, neg, pos)
        }
    }
}

/// A constant of the lane type (`f32`, or splatted to `f32x4`).
fn constant(fx: &mut FnCtx<'_>, ty: Type, x: f32) -> Value {
    let c = fx.f32const(x);
    if ty.is_vector() {
        fx.splat(c)
    } else {
        c
    }
}

/// `value` where `test > 0`, else `value · slope`: leaky ReLU (`value = test = x`) and its
/// gradient (`value = dy`, `test = x`).
fn leaky(fx: &mut FnCtx<'_>, ty: Type, test: Value, value: Value, zero: Value) -> Value {
    let slope = constant(fx, ty, LEAKY_RELU_SLOPE);
    let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, test, zero);
    let scaled = fx.b.ins().fmul(value, slope);
    select(fx, ty, gt, value, scaled)
}

/// An activation of `x`: the same single IEEE operations as [`Unary::apply`].
fn emit_unary(fx: &mut FnCtx<'_>, ty: Type, u: Unary, x: Value, zero: Value, one: Value) -> Value {
    match u {
        Unary::Relu => {
            let le = fx.b.ins().fcmp(FloatCC::LessThanOrEqual, x, zero);
            select(fx, ty, le, zero, x)
        }
        Unary::LeakyRelu => leaky(fx, ty, x, x, zero),
        Unary::Tanh => super::math::tanh(fx, x, ty),
        Unary::Sigmoid => {
            let neg = fx.b.ins().fneg(x);
            let e = super::math::exp(fx, neg, ty);
            let d = fx.b.ins().fadd(one, e);
            fx.b.ins().fdiv(one, d)
        }
        Unary::Sqrt => fx.b.ins().sqrt(x),
    }
}

/// An activation's gradient from `dy` and `v` (its input or output, [`Unary::grad_reads`]): the
/// same single IEEE operations as [`Unary::derivative`].
fn emit_unary_grad(
    fx: &mut FnCtx<'_>,
    ty: Type,
    u: Unary,
    dy: Value,
    v: Value,
    zero: Value,
    one: Value,
) -> Value {
    match u {
        Unary::Relu => {
            let gt = fx.b.ins().fcmp(FloatCC::GreaterThan, v, zero);
            select(fx, ty, gt, dy, zero)
        }
        Unary::LeakyRelu => leaky(fx, ty, v, dy, zero),
        Unary::Tanh => {
            let yy = fx.b.ins().fmul(v, v);
            let t = fx.b.ins().fsub(one, yy);
            fx.b.ins().fmul(dy, t)
        }
        Unary::Sigmoid => {
            let p = fx.b.ins().fmul(dy, v);
            let t = fx.b.ins().fsub(one, v);
            fx.b.ins().fmul(p, t)
        }
        Unary::Sqrt => {
            let twice = fx.b.ins().fadd(v, v);
            fx.b.ins().fdiv(dy, twice)
        }
    }
}

/// The body of a chain kernel (slots in the module docs).
pub fn emit_chain(fx: &mut FnCtx<'_>, spec: &ChainSpec) {
    let (ins, outs) = chain_buffers(fx, spec);
    let scalars = chain_scalars(fx, spec);
    let start = fx.arg_int(0);
    let end = fx.arg_int(1);
    let consts = ChainConsts::new(fx, scalars);
    chain_loops(fx, spec, &consts, (&ins, &outs), start, end);
}

/// The body of a chain over a block of rows whose input 0 is a product panel (a chain fused
/// behind the product that feeds it, made 64 columns at a time; slots in the module docs): the
/// chain's own loops over the columns of each row.
pub fn emit_chain_rows(fx: &mut FnCtx<'_>, spec: &ChainSpec) {
    let (ins, outs, consts) = chain_setup(fx, spec);
    let rows = fx.arg_int(0);
    let cols = fx.arg_int(1);
    let row_bytes = fx.arg_int(2);
    let row_bytes = fx.b.ins().ishl_imm_u(row_bytes, 2);
    let panel_row_bytes = fx.arg_int(3);
    let panel_row_bytes = fx.b.ins().ishl_imm_u(panel_row_bytes, 2);
    let zero_i = fx.iconst(0);
    counted_loop(fx, zero_i, rows, 1, |fx, r| {
        let off = fx.b.ins().imul(r, row_bytes);
        let panel_off = fx.b.ins().imul(r, panel_row_bytes);
        // Input 0 is the panel, at its own row stride.
        let row_ins: Vec<Value> = ins
            .iter()
            .enumerate()
            .map(|(j, &p)| fx.b.ins().iadd(p, if j == 0 { panel_off } else { off }))
            .collect();
        let row_outs = offset_all(fx, &outs, off);
        chain_loops(fx, spec, &consts, (&row_ins, &row_outs), zero_i, cols);
    });
}

/// The body of a chain over a block of rows whose input 0 is an outer product `dy[r]·x[j]`
/// (the product's own order for one term, `−0 + dy[r]·x[j]`, is the product itself), made
/// where it is used, so the chain passes over its other buffers once (slots in the module
/// docs).
pub fn emit_chain_outer(fx: &mut FnCtx<'_>, spec: &ChainSpec) {
    let x = fx.arg_ptr(0);
    let dy = fx.arg_ptr(OUTER_DY_SLOT);
    let (ins, outs, consts) = chain_setup(fx, spec);
    let r0 = fx.arg_int(0);
    let r1 = fx.arg_int(1);
    let cols = fx.arg_int(2);
    let row_bytes = fx.b.ins().ishl_imm_u(cols, 2);
    let zero_i = fx.iconst(0);
    counted_loop(fx, r0, r1, 1, |fx, r| {
        let off = fx.b.ins().imul(r, row_bytes);
        let d = fx.load_at(types::F32, dy, r, 0);
        let d4 = fx.splat(d);
        let row_ins = offset_all(fx, &ins, off);
        let row_outs = offset_all(fx, &outs, off);
        let product = OuterRow { x, d, d4 };
        chain_loops_with(
            fx,
            spec,
            &consts,
            (&row_ins, &row_outs),
            Some(product),
            zero_i,
            cols,
        );
    });
}

/// The `ptr` slot of an outer-product chain's `dy` (the last: such a chain has one buffer fewer).
pub const OUTER_DY_SLOT: usize = crate::abi::PTR_SLOTS - 1;

/// Row `r` of an outer product: input 0 at column `j` is `d·x[j]`.
#[derive(Clone, Copy)]
struct OuterRow {
    x: Value,
    d: Value,
    d4: Value,
}

/// A chain's scalars and constants, scalar and splatted, made once in the entry block.
struct ChainConsts {
    scalars: Vec<Value>,
    scalars4: Vec<Value>,
    zero: Value,
    one: Value,
    zero4: Value,
    one4: Value,
}

/// A chain's input and output addresses (`ptr[0 .. inputs]`, then its outputs).
fn chain_buffers(fx: &mut FnCtx<'_>, spec: &ChainSpec) -> (Vec<Value>, Vec<Value>) {
    let ins: Vec<Value> = (0..spec.inputs).map(|i| fx.arg_ptr(i)).collect();
    let outs: Vec<Value> = (0..spec.outputs.len())
        .map(|o| fx.arg_ptr(spec.inputs + o))
        .collect();
    (ins, outs)
}

/// A chain's buffers and its constants, for the kernels that run it row by row.
fn chain_setup(fx: &mut FnCtx<'_>, spec: &ChainSpec) -> (Vec<Value>, Vec<Value>, ChainConsts) {
    let (ins, outs) = chain_buffers(fx, spec);
    let scalars = chain_scalars(fx, spec);
    let consts = ChainConsts::new(fx, scalars);
    (ins, outs, consts)
}

/// Every address of `ptrs` moved on by `off` bytes.
fn offset_all(fx: &mut FnCtx<'_>, ptrs: &[Value], off: Value) -> Vec<Value> {
    ptrs.iter().map(|&p| fx.b.ins().iadd(p, off)).collect()
}

/// A chain's scalars, as `f32` and splatted.
fn chain_scalars(fx: &mut FnCtx<'_>, spec: &ChainSpec) -> (Vec<Value>, Vec<Value>) {
    let scalars: Vec<Value> = (0..spec.scalars).map(|i| fx.arg_f32(i)).collect();
    let scalars4: Vec<Value> = scalars.iter().map(|&s| fx.splat(s)).collect();
    (scalars, scalars4)
}

impl ChainConsts {
    fn new(fx: &mut FnCtx<'_>, (scalars, scalars4): (Vec<Value>, Vec<Value>)) -> ChainConsts {
        let zero = fx.f32const(0.0);
        let one = fx.f32const(1.0);
        let zero4 = fx.splat(zero);
        let one4 = fx.splat(one);
        ChainConsts {
            scalars,
            scalars4,
            zero,
            one,
            zero4,
            one4,
        }
    }
}

/// Elements `start .. end` of every operand (base addresses `ins`, `outs`) through the chain.
fn chain_loops(
    fx: &mut FnCtx<'_>,
    spec: &ChainSpec,
    c: &ChainConsts,
    buffers: (&[Value], &[Value]),
    start: Value,
    end: Value,
) {
    chain_loops_with(fx, spec, c, buffers, None, start, end)
}

/// As [`chain_loops`]; with `outer`, input 0 is that outer product's row instead of a buffer.
fn chain_loops_with(
    fx: &mut FnCtx<'_>,
    spec: &ChainSpec,
    c: &ChainConsts,
    (ins, outs): (&[Value], &[Value]),
    outer: Option<OuterRow>,
    start: Value,
    end: Value,
) {
    let len = fx.b.ins().isub(end, start);
    let len4 = fx.b.ins().band_imm_s(len, !3i64);
    let main_end = fx.b.ins().iadd(start, len4);
    let len32 = fx.b.ins().band_imm_s(len, !31i64);
    let unrolled_end = fx.b.ins().iadd(start, len32);
    // Element `i` (+ `off` bytes) of every operand.
    let body = |fx: &mut FnCtx<'_>, i: Value, off: i32, ty: Type| {
        let (sc, z, o) = if ty == F32X4 {
            (&c.scalars4, c.zero4, c.one4)
        } else {
            (&c.scalars, c.zero, c.one)
        };
        let mut loaded: Vec<Option<Value>> = vec![None; spec.inputs];
        let mut vals: Vec<Value> = Vec::with_capacity(spec.nodes.len());
        for (op, operands) in &spec.nodes {
            let mut get = |fx: &mut FnCtx<'_>, k: usize| -> Value {
                match operands.get(k).copied() {
                    Some(Operand::Input(j)) => *loaded[j].get_or_insert_with(|| match outer {
                        Some(row) if j == 0 => {
                            let x = fx.load_at(ty, row.x, i, off);
                            let d = if ty == F32X4 { row.d4 } else { row.d };
                            // The product's own order: `−0 + d·x`, which is `d·x`.
                            fx.b.ins().fmul(d, x)
                        }
                        _ => fx.load_at(ty, ins[j], i, off),
                    }),
                    Some(Operand::Scalar(j)) => sc[j],
                    Some(Operand::Node(j)) => vals[j],
                    None => z,
                }
            };
            let a = get(fx, 0);
            let b = get(fx, 1);
            let v = emit_op(fx, ty, *op, a, b, z, o);
            vals.push(v);
        }
        for (slot, &node) in spec.outputs.iter().enumerate() {
            fx.store_at(vals[node], outs[slot], i, off);
        }
    };
    // Eight vectors a trip, then one, then single elements: each element's operations are the
    // same whichever loop takes it, and each index's loads precede its stores (an output may
    // be the weight it updates, in place).
    counted_loop(fx, start, unrolled_end, 32, |fx, i| {
        for part in 0..8 {
            body(fx, i, 16 * part, F32X4);
        }
    });
    counted_loop(fx, unrolled_end, main_end, 4, |fx, i| body(fx, i, 0, F32X4));
    counted_loop(fx, main_end, end, 1, |fx, i| body(fx, i, 0, types::F32));
}

/// The body of a column reduction (slots in the module docs).
pub fn emit_reduce_rows(fx: &mut FnCtx<'_>) {
    let x = fx.arg_ptr(0);
    let out = fx.arg_ptr(1);
    let rows = fx.arg_int(0);
    let cols = fx.arg_int(1);
    let c0 = fx.arg_int(2);
    let c1 = fx.arg_int(3);
    let zero_i = fx.iconst(0);
    let zero = fx.f32const(0.0);
    let zero4 = fx.splat(zero);
    let len = fx.b.ins().isub(c1, c0);
    let len4 = fx.b.ins().band_imm_s(len, !3i64);
    let main_end = fx.b.ins().iadd(c0, len4);
    let body = |fx: &mut FnCtx<'_>, c: Value, ty: Type| {
        let z = if ty == F32X4 { zero4 } else { zero };
        let acc = fx.var(ty, z);
        let p = fx.elem(x, c);
        let ptr = fx.var(fx.ptr, p);
        let stride = fx.b.ins().ishl_imm_u(cols, 2);
        counted_loop(fx, zero_i, rows, 1, |fx, _r| {
            let pv = fx.b.use_var(ptr);
            let v = fx.b.ins().load(ty, super::mem(), pv, 0);
            let s = fx.b.use_var(acc);
            let s = fx.b.ins().fadd(s, v);
            fx.b.def_var(acc, s);
            let next = fx.b.ins().iadd(pv, stride);
            fx.b.def_var(ptr, next);
        });
        let s = fx.b.use_var(acc);
        fx.store_at(s, out, c, 0);
    };
    counted_loop(fx, c0, main_end, 4, |fx, c| body(fx, c, F32X4));
    counted_loop(fx, main_end, c1, 1, |fx, c| body(fx, c, types::F32));
}

/// Most channels summed side by side: each channel's sum is one chain of dependent additions
/// (its order is the contract), so only independent chains can hide the adder's latency; one
/// accumulator each, fourteen leaving a register for the load.
const CHANNEL_CHAINS: usize = 14;

/// Whether a channel reduction over planes of `inner` elements can run as JIT code: a group's
/// planes are immediate (32-bit) byte offsets from one address. Larger planes (over 38 million
/// elements) take the interpreter's kernel.
pub fn channel_planes_fit(inner: usize) -> bool {
    inner
        .checked_mul(4 * CHANNEL_CHAINS)
        .is_some_and(|bytes| bytes <= i32::MAX as usize)
}

/// The body of a channel reduction (slots in the module docs) for planes of `inner` elements
/// (compiled in, so each channel of a group is an immediate offset from one address): the
/// channels `c0 .. c1` in as few groups as fit [`CHANNEL_CHAINS`], of near-equal widths (20
/// channels as two groups of 10, not 14 and 6: each group is one pass over the batch), each
/// group's sums advancing together over `(b, i)`.
pub fn emit_reduce_channels(fx: &mut FnCtx<'_>, inner: usize) {
    let x = fx.arg_ptr(0);
    let out = fx.arg_ptr(1);
    let outer = fx.arg_int(0);
    let channels = fx.arg_int(1);
    let c0 = fx.arg_int(3);
    let c1 = fx.arg_int(4);
    let room = fx.b.ins().isub(c1, c0);
    let groups = fx.b.ins().iadd_imm_s(room, CHANNEL_CHAINS as i64 - 1);
    let groups = fx.b.ins().udiv_imm_u(groups, CHANNEL_CHAINS as i64);
    let c = fx.var(fx.ptr, c0);
    let zero_i = fx.iconst(0);
    counted_loop(fx, zero_i, groups, 1, |fx, g| {
        let at = fx.b.use_var(c);
        // This group's width: what is left over the groups left, rounded up.
        let left = fx.b.ins().isub(c1, at);
        let groups_left = fx.b.ins().isub(groups, g);
        let width = fx.b.ins().iadd(left, groups_left);
        let width = fx.b.ins().iadd_imm_s(width, -1);
        let width = fx.b.ins().udiv(width, groups_left);
        for w in 1..=CHANNEL_CHAINS {
            let is_w = fx.b.ins().icmp_imm_u(IntCC::Equal, width, w as i64);
            if_then(fx, is_w, |fx| {
                reduce_channel_group(fx, x, out, (outer, channels, inner), at, w)
            });
        }
        let next = fx.b.ins().iadd(at, width);
        fx.b.def_var(c, next);
    });
}

/// `out[c + j]` for `j < width`: the sums of channels `c ..` over `(b, i)`, side by side.
fn reduce_channel_group(
    fx: &mut FnCtx<'_>,
    x: Value,
    out: Value,
    (outer, channels, inner): (Value, Value, usize),
    c: Value,
    width: usize,
) {
    let zero_i = fx.iconst(0);
    let zero = fx.f32const(0.0);
    let accs: Vec<_> = (0..width).map(|_| fx.var(types::F32, zero)).collect();
    let inner_v = fx.iconst(inner as i64);
    counted_loop(fx, zero_i, outer, 1, |fx, b| {
        let base = fx.b.ins().imul(b, channels);
        let base = fx.b.ins().iadd(base, c);
        let base = fx.b.ins().imul(base, inner_v);
        let first = fx.elem(x, base);
        counted_loop(fx, zero_i, inner_v, 1, |fx, i| {
            for (j, acc) in accs.iter().enumerate() {
                // Channel `c + j`'s plane starts `j·inner` elements on (checked to fit an
                // immediate where the kernel is compiled).
                let off = (j * inner * 4) as i32;
                let v = fx.load_at(types::F32, first, i, off);
                let s = fx.b.use_var(*acc);
                let s = fx.b.ins().fadd(s, v);
                fx.b.def_var(*acc, s);
            }
        });
    });
    for (j, acc) in accs.iter().enumerate() {
        let s = fx.b.use_var(*acc);
        fx.store_at(s, out, c, 4 * j as i32);
    }
}
