//! The plain operations: those that touch no parameter, state or selection, only their operands.
//!
//! [`Plain::prepare`] resolves an op and its shapes once (geometry, reduction plan, classes);
//! [`Plain::run`] runs it on buffers. The interpreter's plan and [`super::eval_op`] (the
//! reference that other backends fall back to) both go through this one dispatch, so an op's
//! reference kernel is chosen in one place.

use super::gemm::{gemm, GemmScratch, View};
use super::kernels::{self, ConvGeom, PoolGeom, ReducePlan};
use super::Float;
use crate::op::Op;

/// A plain operation with its shapes resolved.
#[derive(Clone, Debug)]
pub(crate) enum Plain {
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
    },
    BiasAdd {
        inner: usize,
    },
    Add,
    Sub,
    Mul,
    Scale,
    Unary(crate::op::Unary),
    UnaryGrad(crate::op::Unary),
    Conv2d(ConvGeom),
    Conv2dInputGrad(ConvGeom),
    Conv2dWeightGrad(ConvGeom),
    MaxPool2d(PoolGeom),
    MaxPool2dGrad(PoolGeom),
    AvgPool2d(PoolGeom),
    AvgPool2dGrad(PoolGeom),
    ReduceSum(ReducePlan),
    SoftmaxXent {
        classes: usize,
    },
    SoftmaxXentGrad {
        classes: usize,
    },
    Argmax {
        classes: usize,
    },
}

/// The geometry of a convolution from the shapes of its operands and result, as every backend
/// must derive it.
pub fn conv_geom(
    x: &[usize],
    w_o: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    out: [usize; 2],
) -> ConvGeom {
    ConvGeom {
        b: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        o: w_o,
        kh: kernel[0],
        kw: kernel[1],
        sh: stride[0],
        sw: stride[1],
        ph: padding[0],
        pw: padding[1],
        oh: out[0],
        ow: out[1],
    }
}

/// The geometry of a pooling window over `x`'s planes.
pub fn pool_geom(x: &[usize], kernel: [usize; 2], stride: [usize; 2], out: [usize; 2]) -> PoolGeom {
    PoolGeom {
        h: x[2],
        w: x[3],
        kh: kernel[0],
        kw: kernel[1],
        sh: stride[0],
        sw: stride[1],
        oh: out[0],
        ow: out[1],
    }
}

/// The geometry of a convolution instruction (`conv2d` and its two gradients) from the shapes of
/// its operands and result: which operand is the input, which gives the output channels and the
/// kernel. The interpreter and the JIT's partition both take it from here, so they cannot
/// disagree on a convolution's shape. `None` for another op, or shapes that are not all of rank
/// 4 (never so in a function that `Op::infer` accepts).
pub fn conv_geom_of(op: &Op, shapes: &[&[usize]], out: &[usize]) -> Option<ConvGeom> {
    let four = |s: &[usize]| s.len() == 4;
    match (op, shapes) {
        (Op::Conv2d { stride, padding }, &[x, w]) if four(x) && four(w) && four(out) => Some(
            conv_geom(x, w[0], [w[2], w[3]], *stride, *padding, [out[2], out[3]]),
        ),
        (
            Op::Conv2dInputGrad {
                stride, padding, ..
            },
            &[dy, w],
        ) if four(dy) && four(w) && four(out) => Some(conv_geom(
            out,
            w[0],
            [w[2], w[3]],
            *stride,
            *padding,
            [dy[2], dy[3]],
        )),
        (
            Op::Conv2dWeightGrad {
                stride,
                padding,
                kernel,
            },
            &[x, dy],
        ) if four(x) && four(dy) => Some(conv_geom(
            x,
            dy[1],
            *kernel,
            *stride,
            *padding,
            [dy[2], dy[3]],
        )),
        _ => None,
    }
}

/// The geometry of a pooling instruction (`maxpool2d`, `avgpool2d` and their gradients) from the
/// shapes of its operands and result, for the same reason as [`conv_geom_of`]. `None` for another
/// op, or shapes that are not of rank 4.
pub fn pool_geom_of(op: &Op, shapes: &[&[usize]], out: &[usize]) -> Option<PoolGeom> {
    let four = |s: &[usize]| s.len() == 4;
    match (op, shapes) {
        (Op::MaxPool2d { kernel, stride } | Op::AvgPool2d { kernel, stride }, &[x])
            if four(x) && four(out) =>
        {
            Some(pool_geom(x, *kernel, *stride, [out[2], out[3]]))
        }
        (Op::MaxPool2dGrad { kernel, stride }, &[dy, x]) if four(dy) && four(x) => {
            Some(pool_geom(x, *kernel, *stride, [dy[2], dy[3]]))
        }
        (
            Op::AvgPool2dGrad {
                kernel,
                stride,
                input,
            },
            &[dy],
        ) if four(dy) => {
            let x = [dy[0], dy[1], input[0], input[1]];
            Some(pool_geom(&x, *kernel, *stride, [dy[2], dy[3]]))
        }
        _ => None,
    }
}

impl Plain {
    /// The prepared form of `op` on operands of `shapes` with a result of `out_shape` (typed by
    /// `Op::infer`), or `None` when the op is not plain.
    pub(crate) fn prepare(op: &Op, shapes: &[&[usize]], out_shape: &[usize]) -> Option<Plain> {
        let shape = |k: usize| shapes[k];
        Some(match op {
            Op::MatMul { ta, tb } => {
                let a = shape(0);
                Plain::MatMul {
                    m: out_shape[0],
                    n: out_shape[1],
                    k: if *ta { a[0] } else { a[1] },
                    ta: *ta,
                    tb: *tb,
                }
            }
            Op::BiasAdd => Plain::BiasAdd {
                inner: shape(0)[2..].iter().product(),
            },
            Op::Add => Plain::Add,
            Op::Sub => Plain::Sub,
            Op::Mul => Plain::Mul,
            Op::Scale => Plain::Scale,
            Op::Unary(u) => Plain::Unary(*u),
            Op::UnaryGrad(u) => Plain::UnaryGrad(*u),
            Op::Conv2d { .. } => Plain::Conv2d(conv_geom_of(op, shapes, out_shape)?),
            Op::Conv2dInputGrad { .. } => {
                Plain::Conv2dInputGrad(conv_geom_of(op, shapes, out_shape)?)
            }
            Op::Conv2dWeightGrad { .. } => {
                Plain::Conv2dWeightGrad(conv_geom_of(op, shapes, out_shape)?)
            }
            Op::MaxPool2d { .. } => Plain::MaxPool2d(pool_geom_of(op, shapes, out_shape)?),
            Op::AvgPool2d { .. } => Plain::AvgPool2d(pool_geom_of(op, shapes, out_shape)?),
            Op::MaxPool2dGrad { .. } => Plain::MaxPool2dGrad(pool_geom_of(op, shapes, out_shape)?),
            Op::AvgPool2dGrad { .. } => Plain::AvgPool2dGrad(pool_geom_of(op, shapes, out_shape)?),
            Op::ReduceSum { axes } => Plain::ReduceSum(ReducePlan::new(shape(0), axes)),
            Op::SoftmaxXent => Plain::SoftmaxXent {
                classes: shape(0)[1],
            },
            Op::SoftmaxXentGrad => Plain::SoftmaxXentGrad {
                classes: shape(0)[1],
            },
            Op::Argmax => Plain::Argmax {
                classes: shape(0)[1],
            },
            _ => return None,
        })
    }

    /// Elements of im2col scratch the op needs (0 but for convolutions).
    pub(crate) fn cols_needed(&self) -> usize {
        match self {
            Plain::Conv2d(g) | Plain::Conv2dInputGrad(g) => g.ckk() * g.p(),
            Plain::Conv2dWeightGrad(g) => g.weight_grad_scratch() + g.o * g.ckk(),
            _ => 0,
        }
    }

    /// Whether the result is `i32` (`argmax`).
    pub(crate) fn produces_int(&self) -> bool {
        matches!(self, Plain::Argmax { .. })
    }

    /// Run an op with an `f32`-typed result: `x(i)` is float operand `i`, `labels` the `i32`
    /// operand of the losses. `cols` grows to [`Plain::cols_needed`] if it is shorter.
    pub(crate) fn run<'a, T: Float>(
        &self,
        x: impl Fn(usize) -> Result<&'a [T], String>,
        labels: impl Fn(usize) -> Result<&'a [i32], String>,
        out: &mut [T],
        cols: &mut Vec<T>,
        gs: &mut GemmScratch<T>,
    ) -> Result<(), String> {
        match self {
            &Plain::MatMul { m, n, k, ta, tb } => {
                let a = if ta {
                    View::transposed(x(0)?, m)
                } else {
                    View::rows(x(0)?, k)
                };
                let b = if tb {
                    View::transposed(x(1)?, k)
                } else {
                    View::rows(x(1)?, n)
                };
                gemm(m, n, k, a, b, out, n, false, gs);
            }
            &Plain::BiasAdd { inner } => kernels::bias_add(x(0)?, x(1)?, inner, out),
            Plain::Add => kernels::map2(x(0)?, x(1)?, out, |a, b| a + b),
            Plain::Sub => kernels::map2(x(0)?, x(1)?, out, |a, b| a - b),
            Plain::Mul => kernels::map2(x(0)?, x(1)?, out, |a, b| a * b),
            Plain::Scale => {
                let s = x(1)?[0];
                kernels::map1(x(0)?, out, |a| a * s);
            }
            &Plain::Unary(u) => unary(u, x(0)?, out),
            &Plain::UnaryGrad(u) => unary_grad(u, x(0)?, x(1)?, out),
            Plain::Conv2d(g) => kernels::conv2d(x(0)?, x(1)?, g, out, cols, gs),
            Plain::Conv2dInputGrad(g) => kernels::conv2d_input_grad(x(0)?, x(1)?, g, out, cols, gs),
            Plain::Conv2dWeightGrad(g) => {
                kernels::conv2d_weight_grad(x(0)?, x(1)?, g, out, cols, gs)
            }
            Plain::MaxPool2d(g) => kernels::maxpool2d(x(0)?, g, out),
            Plain::MaxPool2dGrad(g) => kernels::maxpool2d_grad(x(0)?, x(1)?, g, out),
            Plain::AvgPool2d(g) => kernels::avgpool2d(x(0)?, g, out),
            Plain::AvgPool2dGrad(g) => kernels::avgpool2d_grad(x(0)?, g, out),
            Plain::ReduceSum(plan) => kernels::reduce_sum(x(0)?, plan, out),
            &Plain::SoftmaxXent { classes } => {
                let labels = labels(1)?;
                kernels::check_labels(labels, classes)?;
                out[0] = kernels::softmax_xent(x(0)?, labels, classes);
            }
            &Plain::SoftmaxXentGrad { classes } => {
                let labels = labels(1)?;
                kernels::check_labels(labels, classes)?;
                kernels::softmax_xent_grad(x(0)?, labels, classes, out);
            }
            Plain::Argmax { .. } => return Err("`argmax` produces i32".into()),
        }
        Ok(())
    }

    /// Run an op with an `i32` result (`argmax`).
    pub(crate) fn run_int<T: Float>(&self, x: &[T], out: &mut [i32]) -> Result<(), String> {
        match self {
            &Plain::Argmax { classes } => {
                kernels::argmax(x, classes, out);
                Ok(())
            }
            _ => Err("the op does not produce i32".into()),
        }
    }
}

/// An activation over a buffer: the table's scalar code for each element (the variant is
/// loop-invariant, so the compiler hoists the dispatch out of the loop).
fn unary<T: Float>(u: crate::op::Unary, x: &[T], out: &mut [T]) {
    kernels::map1(x, out, |a| u.apply(a))
}

fn unary_grad<T: Float>(u: crate::op::Unary, dy: &[T], v: &[T], out: &mut [T]) {
    kernels::map2(dy, v, out, |d, v| u.derivative(d, v))
}
