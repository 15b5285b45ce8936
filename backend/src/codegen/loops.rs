//! Loops: the counted loop every kernel is built from, and the `f32x4` main loop with its scalar
//! tail.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

use super::{FnCtx, F32X4};
use cranelift_codegen::ir::types;

/// `for i in (start..end).step_by(step) { body(i) }`, with `i` unsigned (pointer type) and the
/// test `i < end` before every iteration (so `start >= end` runs nothing). The body may create
/// blocks and loops of its own; it must leave the builder in a block that falls through to the
/// next iteration. Values computed before the loop may be used inside it; values that change
/// across iterations go in [`cranelift_frontend::Variable`]s.
pub fn counted_loop(
    fx: &mut FnCtx<'_>,
    start: Value,
    end: Value,
    step: i64,
    body: impl FnOnce(&mut FnCtx<'_>, Value),
) {
    let header = fx.b.create_block();
    let body_block = fx.b.create_block();
    let exit = fx.b.create_block();
    fx.b.append_block_param(header, fx.ptr);
    fx.b.ins().jump(header, &[start.into()]);

    fx.b.switch_to_block(header);
    let i = fx.b.block_params(header)[0];
    let more = fx.b.ins().icmp(IntCC::UnsignedLessThan, i, end);
    fx.b.ins().brif(more, body_block, &[], exit, &[]);

    fx.b.switch_to_block(body_block);
    fx.b.seal_block(body_block);
    body(fx, i);
    let next = fx.b.ins().iadd_imm_s(i, step);
    fx.b.ins().jump(header, &[next.into()]);
    fx.b.seal_block(header);

    fx.b.switch_to_block(exit);
    fx.b.seal_block(exit);
}

/// Element-wise over `0..len`: `body(i, F32X4)` for `i` in steps of 4 while `i + 4 <= len`, then
/// `body(i, F32)` for the remaining `len % 4` elements. `body` emits the work for the element(s)
/// starting at `i`, with loads and stores of the type it is given.
pub fn vector_loop(
    fx: &mut FnCtx<'_>,
    len: Value,
    mut body: impl FnMut(&mut FnCtx<'_>, Value, Type),
) {
    let zero = fx.iconst(0);
    let main_end = fx.b.ins().band_imm_s(len, !3i64);
    counted_loop(fx, zero, main_end, 4, |fx, i| body(fx, i, F32X4));
    counted_loop(fx, main_end, len, 1, |fx, i| body(fx, i, types::F32));
}

/// `if cond { then() }`.
pub fn if_then(fx: &mut FnCtx<'_>, cond: Value, then: impl FnOnce(&mut FnCtx<'_>)) {
    let then_block = fx.b.create_block();
    let join = fx.b.create_block();
    fx.b.ins().brif(cond, then_block, &[], join, &[]);
    fx.b.switch_to_block(then_block);
    fx.b.seal_block(then_block);
    then(fx);
    fx.b.ins().jump(join, &[]);
    fx.b.switch_to_block(join);
    fx.b.seal_block(join);
}

/// `if cond { then() } else { otherwise() }`.
pub fn if_else(
    fx: &mut FnCtx<'_>,
    cond: Value,
    then: impl FnOnce(&mut FnCtx<'_>),
    otherwise: impl FnOnce(&mut FnCtx<'_>),
) {
    let then_block = fx.b.create_block();
    let else_block = fx.b.create_block();
    let join = fx.b.create_block();
    fx.b.ins().brif(cond, then_block, &[], else_block, &[]);
    fx.b.switch_to_block(then_block);
    fx.b.seal_block(then_block);
    then(fx);
    fx.b.ins().jump(join, &[]);
    fx.b.switch_to_block(else_block);
    fx.b.seal_block(else_block);
    otherwise(fx);
    fx.b.ins().jump(join, &[]);
    fx.b.switch_to_block(join);
    fx.b.seal_block(join);
}
