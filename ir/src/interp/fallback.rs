//! One plain instruction run on its own, outside any plan: the reference that other backends
//! fall back to. It goes through the plan's own dispatch (`Plain`), so its bits are the
//! interpreter's.

use std::fmt;

use super::float::Float;
use super::gemm::GemmScratch;
use super::plain::Plain;
use crate::op::Op;

/// An operand of [`eval_op`].
#[derive(Clone, Copy, Debug)]
pub enum OpArg<'a, T> {
    Float(&'a [T]),
    Int(&'a [i32]),
}

/// The result buffer of [`eval_op`].
#[derive(Debug)]
pub enum OpOut<'a, T> {
    Float(&'a mut [T]),
    Int(&'a mut [i32]),
}

/// Scratch space [`eval_op`] reuses between calls (im2col columns, GEMM packing).
#[derive(Default)]
pub struct OpScratch<T> {
    cols: Vec<T>,
    gemm: GemmScratch<T>,
}

impl<T> fmt::Debug for OpScratch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpScratch").finish_non_exhaustive()
    }
}

/// Execute ONE plain instruction (no parameter, state or selection involved) with the
/// interpreter's own kernels, so the result is the bits [`Interpreter::run`](super::Interpreter::run) computes for it.
/// `shapes` are the operands' shapes, `out_shape` the result's; operand and result lengths are
/// checked against them. For backends that fall back to the reference for some operations.
///
/// Handles `matmul*`, `bias_add`, the element-wise ops and their gradients, convolutions,
/// pooling, `reduce_sum`, `softmax_xent`, `softmax_xent_grad` and `argmax`; anything else is an
/// error.
pub fn eval_op<T: Float>(
    op: &Op,
    shapes: &[&[usize]],
    out_shape: &[usize],
    args: &[OpArg<'_, T>],
    out: OpOut<'_, T>,
    scratch: &mut OpScratch<T>,
) -> Result<(), String> {
    let name = op.name();
    if shapes.len() != args.len() {
        return Err(format!(
            "`{name}`: {} shapes for {} operands",
            shapes.len(),
            args.len()
        ));
    }
    for (i, (s, a)) in shapes.iter().zip(args).enumerate() {
        let len = match a {
            OpArg::Float(x) => x.len(),
            OpArg::Int(x) => x.len(),
        };
        if len != s.iter().product::<usize>() {
            return Err(format!(
                "`{name}`: operand {i} has {len} elements, shape {s:?}"
            ));
        }
    }
    let out_len: usize = out_shape.iter().product();
    let got = match &out {
        OpOut::Float(o) => o.len(),
        OpOut::Int(o) => o.len(),
    };
    if got != out_len {
        return Err(format!(
            "`{name}`: result has {got} elements, shape {out_shape:?}"
        ));
    }
    let f = |i: usize| -> Result<&[T], String> {
        match args.get(i) {
            Some(OpArg::Float(x)) => Ok(x),
            _ => Err(format!("`{name}`: operand {i} is not f32")),
        }
    };
    let int = |i: usize| -> Result<&[i32], String> {
        match args.get(i) {
            Some(OpArg::Int(x)) => Ok(x),
            _ => Err(format!("`{name}`: operand {i} is not i32")),
        }
    };
    let plain = Plain::prepare(op, shapes, out_shape)
        .ok_or_else(|| format!("`{name}` is not a plain operation"))?;
    let OpScratch { cols, gemm: gs } = scratch;
    let result = match out {
        OpOut::Int(o) if plain.produces_int() => plain.run_int(f(0)?, o),
        OpOut::Float(o) if !plain.produces_int() => plain.run(f, int, o, cols, gs),
        _ => Err("the result buffer has the wrong element type".into()),
    };
    result.map_err(|e| format!("`{name}`: {e}"))
}
