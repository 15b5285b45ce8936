//! The reference interpreter: every op on hand-computed examples, every gradient op against
//! central finite differences in f64, matrix products and convolutions against naive loops
//! (bit for bit: the summation order is part of the contract), deferred stores, initial state,
//! and errors.

use sparsec_ir::interp::{Float, Input, InterpError, Interpreter, Output, State, Tensor};
use sparsec_ir::op::Hw;
use sparsec_ir::op::{GradInput, Unary};
use sparsec_ir::{regen, DType, Encoding, Func, Init, Module, Op, ParamId, Storage};
use sparsec_ir::{Type, Value};
use sparsec_test_support::modules::{self, param, push};
use sparsec_test_support::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone, Debug)]
enum Data<T> {
    F(Vec<T>),
    I(Vec<i32>),
}

/// A module whose function `f` applies `op` to its arguments (of types `tys`) and returns it.
fn op_module(op: &Op, tys: &[Type]) -> Module {
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    let mut f = Func::new("f");
    let args: Vec<Value> = tys
        .iter()
        .enumerate()
        .map(|(i, t)| f.add_arg(format!("a{i}"), t.clone()))
        .collect();
    let r = push(&mut f, &m, op.clone(), &args, None);
    f.results = vec![r];
    m.funcs.push(f);
    m
}

fn inputs<T>(args: &[Data<T>]) -> Vec<Input<'_, T>> {
    args.iter()
        .map(|a| match a {
            Data::F(v) => Input::Float(&v[..]),
            Data::I(v) => Input::Int(&v[..]),
        })
        .collect()
}

/// Prepared single-op function.
struct OpRunner<T> {
    interp: Interpreter<T>,
    state: State<T>,
}

impl<T: Float> OpRunner<T> {
    fn new(op: &Op, tys: &[Type]) -> Self {
        let m = op_module(op, tys);
        OpRunner {
            interp: Interpreter::new(&m, "f").unwrap(),
            state: State::initial(&m),
        }
    }

    fn run(&mut self, args: &[Data<T>]) -> Output<T> {
        self.interp
            .run(&mut self.state, &inputs(args))
            .unwrap()
            .remove(0)
    }

    fn float(&mut self, args: &[Data<T>]) -> Vec<T> {
        self.run(args).into_float().expect("float result").data
    }
}

fn tys_of<T>(shapes: &[(&[usize], &Data<T>)]) -> Vec<Type> {
    shapes
        .iter()
        .map(|(s, d)| match d {
            Data::F(_) => Type::f32(s.to_vec()),
            Data::I(_) => Type::i32(s.to_vec()),
        })
        .collect()
}

/// Run `op` once in f64 on float arguments of the given shapes.
fn eval(op: Op, args: &[(&[usize], Vec<f64>)]) -> Tensor<f64> {
    let data: Vec<Data<f64>> = args.iter().map(|(_, v)| Data::F(v.clone())).collect();
    let tys: Vec<Type> = args.iter().map(|(s, _)| Type::f32(s.to_vec())).collect();
    OpRunner::<f64>::new(&op, &tys)
        .run(&data)
        .into_float()
        .unwrap()
}

fn eval_f32(op: Op, args: &[(&[usize], Vec<f32>)]) -> Tensor<f32> {
    let data: Vec<Data<f32>> = args.iter().map(|(_, v)| Data::F(v.clone())).collect();
    let tys: Vec<Type> = args.iter().map(|(s, _)| Type::f32(s.to_vec())).collect();
    OpRunner::<f32>::new(&op, &tys)
        .run(&data)
        .into_float()
        .unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// Checks `analytic` against central differences of `L(x) = Σ r · forward(args)` with respect to
/// argument `wrt`.
fn fd_check(
    forward: &Op,
    shapes: &[&[usize]],
    args: &[Data<f64>],
    wrt: usize,
    r: &[f64],
    analytic: &[f64],
    what: &str,
) {
    let tys = tys_of(&shapes.iter().copied().zip(args).collect::<Vec<_>>());
    let mut runner = OpRunner::<f64>::new(forward, &tys);
    let y = runner.float(args);
    assert_eq!(y.len(), r.len(), "{what}: functional size");
    let loss = |runner: &mut OpRunner<f64>, args: &[Data<f64>]| -> f64 {
        runner.float(args).iter().zip(r).map(|(y, r)| y * r).sum()
    };
    let Data::F(x) = &args[wrt] else {
        panic!("wrt an int")
    };
    assert_eq!(x.len(), analytic.len(), "{what}: gradient size");
    let h = 1e-6;
    let mut fd = Vec::with_capacity(x.len());
    let mut work = args.to_vec();
    for i in 0..x.len() {
        let mut plus = x.clone();
        plus[i] += h;
        work[wrt] = Data::F(plus);
        let lp = loss(&mut runner, &work);
        let mut minus = x.clone();
        minus[i] -= h;
        work[wrt] = Data::F(minus);
        let lm = loss(&mut runner, &work);
        fd.push((lp - lm) / (2.0 * h));
    }
    assert_close(analytic, &fd, 1e-6, what);
}

const NN: Op = Op::MatMul {
    ta: false,
    tb: false,
};
const NT: Op = Op::MatMul {
    ta: false,
    tb: true,
};
const TN: Op = Op::MatMul {
    ta: true,
    tb: false,
};
const TT: Op = Op::MatMul { ta: true, tb: true };

fn seq(n: usize) -> Vec<f64> {
    (1..=n).map(|i| i as f64).collect()
}

// ---------------------------------------------------------------------------------------------
// Every op on hand-computed examples

#[test]
fn param_const_reshape_and_results() {
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    m.add_param(param("p", &[2, 3], Init::Zeros, 0, Storage::Dense));
    let mut f = Func::new("f");
    let x = f.add_arg("x", Type::f32(vec![6]));
    let l = f.add_arg("l", Type::i32(vec![2, 2]));
    let p = push(&mut f, &m, Op::Param(ParamId(0)), &[], None);
    let c = push(
        &mut f,
        &m,
        Op::Const {
            value: 2.5,
            shape: vec![2, 2],
        },
        &[],
        None,
    );
    let r = push(&mut f, &m, Op::Reshape { shape: vec![3, 2] }, &[x], None);
    let rl = push(&mut f, &m, Op::Reshape { shape: vec![4] }, &[l], None);
    let rp = push(&mut f, &m, Op::Reshape { shape: vec![6] }, &[p], None);
    f.results = vec![p, c, r, rl, rp, x, l];
    m.funcs.push(f);
    let mut interp = Interpreter::<f32>::new(&m, "f").unwrap();
    let mut state = State::dense(vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]);
    let xs = [0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5];
    let ls = [3, 1, 4, 1];
    let out = interp
        .run(&mut state, &[Input::Float(&xs), Input::Int(&ls)])
        .unwrap();
    let ft = |shape: &[usize], data: &[f32]| {
        Output::Float(Tensor {
            shape: shape.to_vec(),
            data: data.to_vec(),
        })
    };
    let it = |shape: &[usize], data: &[i32]| {
        Output::Int(Tensor {
            shape: shape.to_vec(),
            data: data.to_vec(),
        })
    };
    assert_eq!(
        out,
        vec![
            ft(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ft(&[2, 2], &[2.5; 4]),
            ft(&[3, 2], &xs),
            it(&[4], &ls),
            ft(&[6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ft(&[6], &xs),
            it(&[2, 2], &ls),
        ]
    );
    assert_eq!(out[3].shape(), &[4]);
    assert!(out[3].as_float().is_none() && out[0].as_int().is_none());
}

#[test]
fn matmul_variants_by_hand() {
    // a = [[1, 2, 3], [4, 5, 6]], b = [[1, 2], [3, 4], [5, 6]]: a·b = [[22, 28], [49, 64]].
    let a = seq(6);
    let b = seq(6);
    let ab = vec![22.0, 28.0, 49.0, 64.0];
    assert_eq!(
        eval(NN, &[(&[2, 3], a.clone()), (&[3, 2], b.clone())]).data,
        ab
    );
    // a·aᵀ = [[14, 32], [32, 77]]
    assert_eq!(
        eval(NT, &[(&[2, 3], a.clone()), (&[2, 3], a.clone())]).data,
        vec![14.0, 32.0, 32.0, 77.0]
    );
    // aᵀ·a = [[17, 22, 27], [22, 29, 36], [27, 36, 45]]
    assert_eq!(
        eval(TN, &[(&[2, 3], a.clone()), (&[2, 3], a.clone())]).data,
        vec![17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]
    );
    // bᵀ·aᵀ = (a·b)ᵀ = [[22, 49], [28, 64]]
    let t = eval(TT, &[(&[3, 2], b), (&[2, 3], a)]);
    assert_eq!(t.shape, vec![2, 2]);
    assert_eq!(t.data, vec![22.0, 49.0, 28.0, 64.0]);
}

#[test]
fn bias_add_broadcasts_along_axis_1() {
    let x = vec![0.0; 12];
    let y = eval(Op::BiasAdd, &[(&[2, 3, 2], x), (&[3], vec![1.0, 2.0, 3.0])]);
    assert_eq!(
        y.data,
        vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
    let y = eval(Op::BiasAdd, &[(&[2, 2], seq(4)), (&[2], vec![10.0, 20.0])]);
    assert_eq!(y.data, vec![11.0, 22.0, 13.0, 24.0]);
}

#[test]
fn elementwise_ops_by_hand() {
    let a = vec![1.0, -2.0, 3.0, 0.5];
    let b = vec![4.0, 5.0, -6.0, 2.0];
    let s: &[usize] = &[2, 2];
    assert_eq!(
        eval(Op::Add, &[(s, a.clone()), (s, b.clone())]).data,
        vec![5.0, 3.0, -3.0, 2.5]
    );
    assert_eq!(
        eval(Op::Sub, &[(s, a.clone()), (s, b.clone())]).data,
        vec![-3.0, -7.0, 9.0, -1.5]
    );
    assert_eq!(
        eval(Op::Mul, &[(s, a.clone()), (s, b.clone())]).data,
        vec![4.0, -10.0, -18.0, 1.0]
    );
    assert_eq!(
        eval(Op::Scale, &[(s, a.clone()), (&[], vec![-2.0])]).data,
        vec![-2.0, 4.0, -6.0, -1.0]
    );
    assert_eq!(
        eval(
            Op::Unary(Unary::Relu),
            &[(&[5], vec![-1.0, 0.0, 2.0, -0.0, 1e-300])]
        )
        .data,
        vec![0.0, 0.0, 2.0, 0.0, 1e-300]
    );
    let relu_nan = eval_f32(Op::Unary(Unary::Relu), &[(&[1], vec![f32::NAN])]).data;
    assert!(relu_nan[0].is_nan(), "relu propagates NaN");
    let e2 = (2.0f64).exp();
    assert_close(
        &eval(Op::Unary(Unary::Tanh), &[(&[3], vec![0.0, 1.0, -1.0])]).data,
        &[0.0, (e2 - 1.0) / (e2 + 1.0), -(e2 - 1.0) / (e2 + 1.0)],
        1e-15,
        "tanh",
    );
    assert_close(
        &eval(
            Op::Unary(Unary::Sigmoid),
            &[(&[3], vec![0.0, 2.0_f64.ln(), -800.0])],
        )
        .data,
        &[0.5, 2.0 / 3.0, 0.0],
        1e-15,
        "sigmoid",
    );
    assert_eq!(
        eval(Op::Unary(Unary::Sigmoid), &[(&[2], vec![800.0, -800.0])]).data,
        vec![1.0, 0.0]
    );
    let dy = vec![2.0, 3.0, 4.0, 5.0];
    assert_eq!(
        eval(
            Op::UnaryGrad(Unary::Relu),
            &[(&[4], dy.clone()), (&[4], vec![1.0, 0.0, -1.0, 1e-9])]
        )
        .data,
        vec![2.0, 0.0, 0.0, 5.0]
    );
    // 1 − y²: y = 0.5 → 0.75, y = −1 → 0, y = 0 → 1, y = 2 → −3
    assert_eq!(
        eval(
            Op::UnaryGrad(Unary::Tanh),
            &[(&[4], dy.clone()), (&[4], vec![0.5, -1.0, 0.0, 2.0])]
        )
        .data,
        vec![1.5, 0.0, 4.0, -15.0]
    );
    // y(1 − y): 0.5 → 0.25, 0 → 0, 1 → 0, 2 → −2
    assert_eq!(
        eval(
            Op::UnaryGrad(Unary::Sigmoid),
            &[(&[4], dy), (&[4], vec![0.5, 0.0, 1.0, 2.0])]
        )
        .data,
        vec![0.5, 0.0, 0.0, -10.0]
    );
}

fn conv(stride: Hw, padding: Hw) -> Op {
    Op::Conv2d { stride, padding }
}

#[test]
fn conv2d_by_hand() {
    let x = seq(9); // 1..9 in a 3×3 image
    let ones = vec![1.0; 4];
    let y = eval(
        conv([1, 1], [0, 0]),
        &[(&[1, 1, 3, 3], x.clone()), (&[1, 1, 2, 2], ones.clone())],
    );
    assert_eq!(y.shape, vec![1, 1, 2, 2]);
    assert_eq!(y.data, vec![12.0, 16.0, 24.0, 28.0]);
    // Padding 1, stride 2: windows start at (-1,-1), (-1,1), (1,-1), (1,1).
    let y = eval(
        conv([2, 2], [1, 1]),
        &[(&[1, 1, 3, 3], x.clone()), (&[1, 1, 2, 2], ones)],
    );
    assert_eq!(y.data, vec![1.0, 5.0, 11.0, 28.0]);
    // Two input channels, two output channels, cross-correlation (not flipped).
    let x2: Vec<f64> = x
        .iter()
        .copied()
        .chain(x.iter().map(|v| 10.0 * v))
        .collect();
    let w = vec![
        1.0, 0.0, 0.0, 0.0, // o0, c0: top-left
        0.0, 0.0, 0.0, 1.0, // o0, c1: bottom-right
        0.0, 1.0, 0.0, 0.0, // o1, c0: top-right
        0.0, 0.0, 0.0, 0.0, // o1, c1
    ];
    let y = eval(
        conv([1, 1], [0, 0]),
        &[(&[1, 2, 3, 3], x2), (&[2, 2, 2, 2], w)],
    );
    assert_eq!(
        y.data,
        vec![
            1.0 + 50.0,
            2.0 + 60.0,
            4.0 + 80.0,
            5.0 + 90.0,
            2.0,
            3.0,
            5.0,
            6.0
        ]
    );
}

#[test]
fn conv2d_grads_by_hand() {
    let dx = eval(
        Op::Conv2dInputGrad {
            stride: [1, 1],
            padding: [0, 0],
            input: [3, 3],
        },
        &[(&[1, 1, 2, 2], vec![1.0; 4]), (&[1, 1, 2, 2], vec![1.0; 4])],
    );
    assert_eq!(dx.shape, vec![1, 1, 3, 3]);
    assert_eq!(dx.data, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    // Stride 2, 2×2 kernel over a 5×5 input: the last row and column are never read, so their
    // gradient is zero (the `input` attribute resolves this size).
    let dx = eval(
        Op::Conv2dInputGrad {
            stride: [2, 2],
            padding: [0, 0],
            input: [5, 5],
        },
        &[
            (&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            (&[1, 1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0]),
        ],
    );
    #[rustfmt::skip]
    let want = vec![
        1.0, 10.0, 2.0, 20.0, 0.0,
        100.0, 1000.0, 200.0, 2000.0, 0.0,
        3.0, 30.0, 4.0, 40.0, 0.0,
        300.0, 3000.0, 400.0, 4000.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(dx.data, want);
    let dw = eval(
        Op::Conv2dWeightGrad {
            stride: [1, 1],
            padding: [0, 0],
            kernel: [2, 2],
        },
        &[(&[1, 1, 3, 3], seq(9)), (&[1, 1, 2, 2], vec![1.0; 4])],
    );
    assert_eq!(dw.shape, vec![1, 1, 2, 2]);
    assert_eq!(dw.data, vec![12.0, 16.0, 24.0, 28.0]);
    // Batch of two: the weight gradient sums over the batch.
    let x: Vec<f64> = seq(9).into_iter().chain(vec![1.0; 9]).collect();
    let dw = eval(
        Op::Conv2dWeightGrad {
            stride: [1, 1],
            padding: [0, 0],
            kernel: [2, 2],
        },
        &[(&[2, 1, 3, 3], x), (&[2, 1, 2, 2], vec![1.0; 8])],
    );
    assert_eq!(dw.data, vec![16.0, 20.0, 28.0, 32.0]);
}

/// A weight gradient whose batch falls into several image groups in each half (an odd batch,
/// stride 2, padding 1), in `f32` on the GEMM library's path and in `f64`, against a naive loop:
/// small integers, so every sum is exact whatever its order.
#[test]
fn conv2d_weight_grad_over_image_groups_and_halves_is_the_plain_sum() {
    let (b, c, h, w, o, k) = (5usize, 2usize, 84usize, 84usize, 40usize, 3usize);
    let (oh, ow) = ((h + 2 - k) / 2 + 1, (w + 2 - k) / 2 + 1);
    let geom = sparsec_ir::interp::ConvGeom {
        b,
        c,
        h,
        w,
        o,
        kh: k,
        kw: k,
        sh: 2,
        sw: 2,
        ph: 1,
        pw: 1,
        oh,
        ow,
    };
    // Two images per group: the halves (3 and 2 images) take two groups and one.
    assert_eq!(geom.weight_grad_group(), 2);
    let x: Vec<f64> = (0..b * c * h * w)
        .map(|i| ((i * 7) % 5) as f64 - 2.0)
        .collect();
    let dy: Vec<f64> = (0..b * o * oh * ow)
        .map(|i| ((i * 3) % 7) as f64 - 3.0)
        .collect();
    let mut want = vec![0.0; o * c * k * k];
    for bb in 0..b {
        for oc in 0..o {
            for y in 0..oh {
                for xx in 0..ow {
                    let d = dy[((bb * o + oc) * oh + y) * ow + xx];
                    for cc in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (ih, iw) =
                                    ((y * 2 + ki) as isize - 1, (xx * 2 + kj) as isize - 1);
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let xi = ((bb * c + cc) * h + ih as usize) * w + iw as usize;
                                want[((oc * c + cc) * k + ki) * k + kj] += d * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    let op = Op::Conv2dWeightGrad {
        stride: [2, 2],
        padding: [1, 1],
        kernel: [k, k],
    };
    let xs: &[usize] = &[b, c, h, w];
    let ys: &[usize] = &[b, o, oh, ow];
    let got = eval(op.clone(), &[(xs, x.clone()), (ys, dy.clone())]);
    assert_eq!(got.data, want);
    let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let got = eval_f32(op, &[(xs, to32(&x)), (ys, to32(&dy))]);
    assert_eq!(got.data, to32(&want));
}

fn maxpool(kernel: Hw, stride: Hw) -> Op {
    Op::MaxPool2d { kernel, stride }
}

#[test]
fn pools_by_hand() {
    #[rustfmt::skip]
    let x = vec![
        1.0, 5.0, 2.0, 0.0,
        3.0, 4.0, 8.0, 8.0,
        -1.0, -2.0, 7.0, 7.0,
        -3.0, -4.0, 7.0, 7.0,
    ];
    let y = eval(maxpool([2, 2], [2, 2]), &[(&[1, 1, 4, 4], x.clone())]);
    assert_eq!(y.shape, vec![1, 1, 2, 2]);
    assert_eq!(y.data, vec![5.0, 8.0, -1.0, 7.0]);
    let dx = eval(
        Op::MaxPool2dGrad {
            kernel: [2, 2],
            stride: [2, 2],
        },
        &[
            (&[1, 1, 2, 2], vec![10.0, 20.0, 30.0, 40.0]),
            (&[1, 1, 4, 4], x.clone()),
        ],
    );
    // Ties go to the first maximum in row-major window order.
    #[rustfmt::skip]
    let want = vec![
        0.0, 10.0, 0.0, 0.0,
        0.0, 0.0, 20.0, 0.0,
        30.0, 0.0, 40.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(dx.data, want);
    // Overlapping windows (kernel 2, stride 1) with the maximum in the middle: contributions add.
    let x3 = vec![0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
    let dx = eval(
        Op::MaxPool2dGrad {
            kernel: [2, 2],
            stride: [1, 1],
        },
        &[
            (&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            (&[1, 1, 3, 3], x3),
        ],
    );
    assert_eq!(dx.data, vec![0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]);
    // Floor output size: a 5×5 input with kernel 2, stride 2 drops the last row and column.
    let y = eval(maxpool([2, 2], [2, 2]), &[(&[1, 1, 5, 5], seq(25))]);
    assert_eq!(y.data, vec![7.0, 9.0, 17.0, 19.0]);

    let y = eval(
        Op::AvgPool2d {
            kernel: [2, 2],
            stride: [2, 2],
        },
        &[(&[1, 1, 4, 4], x)],
    );
    assert_eq!(
        y.data,
        vec![13.0 / 4.0, 18.0 / 4.0, -10.0 / 4.0, 28.0 / 4.0]
    );
    let dx = eval(
        Op::AvgPool2dGrad {
            kernel: [2, 2],
            stride: [1, 1],
            input: [3, 3],
        },
        &[(&[1, 1, 2, 2], vec![4.0; 4])],
    );
    assert_eq!(dx.shape, vec![1, 1, 3, 3]);
    assert_eq!(dx.data, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    let dx = eval(
        Op::AvgPool2dGrad {
            kernel: [1, 2],
            stride: [2, 2],
            input: [3, 5],
        },
        &[(&[1, 1, 2, 2], vec![2.0, 4.0, 6.0, 8.0])],
    );
    #[rustfmt::skip]
    let want = vec![
        1.0, 1.0, 2.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
        3.0, 3.0, 4.0, 4.0, 0.0,
    ];
    assert_eq!(dx.data, want);
}

#[test]
fn reduce_sum_by_hand() {
    let x = seq(24); // [2, 3, 4]
    let s: &[usize] = &[2, 3, 4];
    let r = |axes: Vec<usize>| eval(Op::ReduceSum { axes }, &[(s, x.clone())]);
    let all: f64 = x.iter().sum();
    let t = r(vec![0, 1, 2]);
    assert_eq!((t.shape, t.data), (vec![], vec![all]));
    assert_eq!(r(vec![]).data, x);
    let t = r(vec![0]);
    assert_eq!(t.shape, vec![3, 4]);
    assert_eq!(
        t.data,
        (0..12).map(|i| 2.0 * i as f64 + 14.0).collect::<Vec<_>>()
    );
    let t = r(vec![2]);
    assert_eq!(t.data, vec![10.0, 26.0, 42.0, 58.0, 74.0, 90.0]);
    let t = r(vec![1]);
    assert_eq!(t.data, vec![15.0, 18.0, 21.0, 24.0, 51.0, 54.0, 57.0, 60.0]);
    let t = r(vec![0, 2]);
    assert_eq!(t.data, vec![10.0 + 58.0, 26.0 + 74.0, 42.0 + 90.0]);
    let t = r(vec![1, 2]);
    assert_eq!(t.data, vec![78.0, 222.0]);
    let t = r(vec![0, 1]);
    assert_eq!(t.data, vec![66.0, 72.0, 78.0, 84.0]);
    // Size-1 axes, reduced or kept.
    let t = eval(
        Op::ReduceSum { axes: vec![0, 3] },
        &[(&[1, 2, 1, 3], seq(6))],
    );
    assert_eq!(t.shape, vec![2, 1]);
    assert_eq!(t.data, vec![6.0, 15.0]);
    // Reducing an empty axis gives zeros.
    let t = eval(Op::ReduceSum { axes: vec![0] }, &[(&[0, 3], vec![])]);
    assert_eq!(t.data, vec![0.0; 3]);
}

fn xent_runner<T: Float>(op: &Op, b: usize, c: usize) -> OpRunner<T> {
    OpRunner::new(op, &[Type::f32(vec![b, c]), Type::i32(vec![b])])
}

#[test]
fn softmax_xent_argmax_by_hand() {
    let logits = vec![0.0, 0.0, 0.0, 3.0f64.ln()];
    let labels = vec![0, 1];
    let args = [Data::F(logits.clone()), Data::I(labels.clone())];
    let loss = xent_runner::<f64>(&Op::SoftmaxXent, 2, 2).float(&args);
    let want = (2.0f64.ln() - 0.75f64.ln()) / 2.0;
    assert_close(&loss, &[want], 1e-15, "softmax_xent");
    let g = xent_runner::<f64>(&Op::SoftmaxXentGrad, 2, 2).float(&args);
    assert_close(
        &g,
        &[-0.25, 0.25, 0.125, -0.125],
        1e-15,
        "softmax_xent_grad",
    );
    // Stable for huge logits.
    let big = [Data::F(vec![1000.0f32, 0.0, -1000.0]), Data::I(vec![0])];
    let loss = xent_runner::<f32>(&Op::SoftmaxXent, 1, 3).float(&big);
    assert_eq!(loss, vec![0.0]);
    let big = [Data::F(vec![1000.0f32, 0.0, -1000.0]), Data::I(vec![2])];
    let loss = xent_runner::<f32>(&Op::SoftmaxXent, 1, 3).float(&big);
    assert_eq!(loss, vec![2000.0]);
    let g = xent_runner::<f32>(&Op::SoftmaxXentGrad, 1, 3).float(&big);
    assert_eq!(g, vec![1.0, 0.0, -1.0]);

    let x = vec![1.0, 3.0, 3.0, 5.0, 0.0, 5.0, -1.0, -2.0, -3.0];
    let mut am = OpRunner::<f64>::new(&Op::Argmax, &[Type::f32(vec![3, 3])]);
    let out = am.run(&[Data::F(x)]);
    assert_eq!(
        out,
        Output::Int(Tensor {
            shape: vec![3],
            data: vec![1, 0, 0]
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Gradient ops against finite differences (f64)

#[test]
fn activation_grads_match_finite_differences() {
    let mut rng = Rng::new(1);
    for shape in [&[1usize][..], &[3, 5], &[2, 3, 2, 3]] {
        let n: usize = shape.iter().product();
        let x = rng
            .vec(n, -1.0, 1.0)
            .into_iter()
            .map(|v| 3.0 * v)
            .collect::<Vec<_>>();
        let r = rng.vec(n, -1.0, 1.0);
        let s = [shape];
        // Every activation of the table, its gradient op reading `x` or `y` as the table says.
        for u in Unary::activations() {
            let y = eval(Op::Unary(u), &[(shape, x.clone())]).data;
            let v = match u.grad_reads() {
                GradInput::Input => x.clone(),
                GradInput::Output => y,
            };
            let g = eval(Op::UnaryGrad(u), &[(shape, r.clone()), (shape, v)]).data;
            fd_check(
                &Op::Unary(u),
                &s,
                &[Data::F(x.clone())],
                0,
                &r,
                &g,
                u.grad_name(),
            );
        }
    }
}

/// `sqrt` is not an activation (its domain is x ≥ 0): checked on positive inputs.
#[test]
fn sqrt_grad_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let shape: &[usize] = &[4, 3];
    let x: Vec<f64> = rng.vec(12, -1.0, 1.0).iter().map(|v| 1.5 + v).collect();
    let r = rng.vec(12, -1.0, 1.0);
    let y = eval(Op::Unary(Unary::Sqrt), &[(shape, x.clone())]).data;
    let g = eval(
        Op::UnaryGrad(Unary::Sqrt),
        &[(shape, r.clone()), (shape, y)],
    )
    .data;
    fd_check(
        &Op::Unary(Unary::Sqrt),
        &[shape],
        &[Data::F(x)],
        0,
        &r,
        &g,
        "sqrt_grad",
    );
}

#[test]
fn softmax_xent_grad_matches_finite_differences() {
    let mut rng = Rng::new(2);
    for (b, c) in [(1, 1), (1, 4), (3, 5), (4, 10)] {
        let logits: Vec<f64> = rng
            .vec(b * c, -1.0, 1.0)
            .into_iter()
            .map(|v| 4.0 * v)
            .collect();
        let labels: Vec<i32> = (0..b).map(|_| rng.below(c) as i32).collect();
        let r = rng.vec(1, -1.0, 1.0);
        let args = [Data::F(logits.clone()), Data::I(labels.clone())];
        let g = xent_runner::<f64>(&Op::SoftmaxXentGrad, b, c).float(&args);
        let g: Vec<f64> = g.iter().map(|v| v * r[0]).collect();
        fd_check(
            &Op::SoftmaxXent,
            &[&[b, c], &[b]],
            &args,
            0,
            &r,
            &g,
            &format!("softmax_xent_grad {b}x{c}"),
        );
    }
}

struct ConvCase {
    x: [usize; 4],
    o: usize,
    k: Hw,
    stride: Hw,
    padding: Hw,
}

fn conv_cases() -> Vec<ConvCase> {
    let c = |x: [usize; 4], o, k, stride, padding| ConvCase {
        x,
        o,
        k,
        stride,
        padding,
    };
    vec![
        c([1, 1, 5, 5], 1, [3, 3], [1, 1], [0, 0]),
        c([3, 2, 7, 6], 3, [3, 2], [2, 1], [1, 0]),
        c([1, 3, 6, 7], 2, [2, 3], [2, 3], [1, 2]),
        c([3, 1, 5, 5], 2, [5, 5], [1, 1], [2, 2]),
        c([2, 2, 8, 7], 3, [2, 2], [3, 3], [0, 1]),
        c([1, 2, 4, 4], 5, [1, 1], [1, 1], [0, 0]),
        c([2, 1, 3, 3], 1, [3, 3], [2, 2], [2, 2]),
    ]
}

fn out_hw(c: &ConvCase) -> [usize; 2] {
    let o = |i: usize, d: usize| (c.x[i] + 2 * c.padding[d] - c.k[d]) / c.stride[d] + 1;
    [o(2, 0), o(3, 1)]
}

#[test]
fn conv2d_grads_match_finite_differences() {
    let mut rng = Rng::new(3);
    for (ci, case) in conv_cases().iter().enumerate() {
        let [b, c, h, w] = case.x;
        let [oh, ow] = out_hw(case);
        let xs = [b, c, h, w];
        let ws = [case.o, c, case.k[0], case.k[1]];
        let ys = [b, case.o, oh, ow];
        let x = rng.vec(xs.iter().product(), -1.0, 1.0);
        let wt = rng.vec(ws.iter().product(), -1.0, 1.0);
        let r = rng.vec(ys.iter().product(), -1.0, 1.0);
        let fwd = conv(case.stride, case.padding);
        let dx = eval(
            Op::Conv2dInputGrad {
                stride: case.stride,
                padding: case.padding,
                input: [h, w],
            },
            &[(&ys, r.clone()), (&ws, wt.clone())],
        );
        assert_eq!(dx.shape, xs.to_vec());
        let args = [Data::F(x.clone()), Data::F(wt.clone())];
        fd_check(
            &fwd,
            &[&xs, &ws],
            &args,
            0,
            &r,
            &dx.data,
            &format!("conv2d_input_grad case {ci}"),
        );
        let dw = eval(
            Op::Conv2dWeightGrad {
                stride: case.stride,
                padding: case.padding,
                kernel: case.k,
            },
            &[(&xs, x.clone()), (&ys, r.clone())],
        );
        assert_eq!(dw.shape, ws.to_vec());
        fd_check(
            &fwd,
            &[&xs, &ws],
            &args,
            1,
            &r,
            &dw.data,
            &format!("conv2d_weight_grad case {ci}"),
        );
    }
}

#[test]
fn pool_grads_match_finite_differences() {
    let mut rng = Rng::new(4);
    let cases: [([usize; 4], Hw, Hw); 6] = [
        ([1, 1, 4, 4], [2, 2], [2, 2]),
        ([3, 2, 5, 6], [3, 3], [1, 1]),
        ([1, 3, 5, 7], [2, 3], [1, 2]),
        ([3, 1, 7, 7], [2, 2], [3, 3]),
        ([2, 2, 5, 5], [5, 5], [1, 1]),
        ([1, 1, 3, 4], [1, 1], [1, 1]),
    ];
    for (ci, (xs, k, s)) in cases.into_iter().enumerate() {
        let oh = (xs[2] - k[0]) / s[0] + 1;
        let ow = (xs[3] - k[1]) / s[1] + 1;
        let ys = [xs[0], xs[1], oh, ow];
        let x = rng.vec(xs.iter().product(), -1.0, 1.0);
        let r = rng.vec(ys.iter().product(), -1.0, 1.0);
        let dx = eval(
            Op::MaxPool2dGrad {
                kernel: k,
                stride: s,
            },
            &[(&ys, r.clone()), (&xs, x.clone())],
        );
        fd_check(
            &maxpool(k, s),
            &[&xs],
            &[Data::F(x.clone())],
            0,
            &r,
            &dx.data,
            &format!("maxpool2d_grad case {ci}"),
        );
        let dx = eval(
            Op::AvgPool2dGrad {
                kernel: k,
                stride: s,
                input: [xs[2], xs[3]],
            },
            &[(&ys, r.clone())],
        );
        assert_eq!(dx.shape, xs.to_vec());
        fd_check(
            &Op::AvgPool2d {
                kernel: k,
                stride: s,
            },
            &[&xs],
            &[Data::F(x)],
            0,
            &r,
            &dx.data,
            &format!("avgpool2d_grad case {ci}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bit-exact against naive loops (the summation order is the contract), except large f32
// products, which the GEMM library computes with FMA in its own order: those agree to rounding.

/// `got` equals `want` bit for bit, or, for a product the GEMM library runs, to within rounding
/// of a `k`-term sum of terms below 1 in magnitude.
fn agrees<T: Float>(got: &[T], want: &[T], library: bool, k: usize) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            let (g, w) = (g.to_f64(), w.to_f64());
            if library && T::IS_F32 {
                (g - w).abs() <= 1e-6 * (k as f64 + 1.0)
            } else {
                g.to_bits() == w.to_bits()
            }
        })
}

fn naive_matmul<T: Float>(op: &Op, a: &[T], b: &[T], m: usize, n: usize, k: usize) -> Vec<T> {
    let Op::MatMul { ta, tb } = *op else {
        unreachable!()
    };
    let mut c = vec![T::zero(); m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = T::zero();
            for kk in 0..k {
                let av = if ta { a[kk * m + i] } else { a[i * k + kk] };
                let bv = if tb { b[j * k + kk] } else { b[kk * n + j] };
                s += av * bv;
            }
            c[i * n + j] = s;
        }
    }
    c
}

fn check_matmul<T: Float>(rng: &mut Rng) {
    for (m, k, n) in [
        (7, 13, 5),
        (1, 1, 1),
        (65, 130, 33),
        (4, 16, 8),
        (9, 600, 17),
        (3, 0, 2),
        (1, 300, 1),
        (17, 5, 1),
    ] {
        for op in [NN, NT, TN, TT] {
            let Op::MatMul { ta, tb } = op else {
                unreachable!()
            };
            let ash = if ta { [k, m] } else { [m, k] };
            let bsh = if tb { [n, k] } else { [k, n] };
            let a: Vec<T> = rng
                .vec(m * k, -1.0, 1.0)
                .into_iter()
                .map(T::from_f64)
                .collect();
            let b: Vec<T> = rng
                .vec(k * n, -1.0, 1.0)
                .into_iter()
                .map(T::from_f64)
                .collect();
            let mut runner = OpRunner::<T>::new(&op, &[Type::f32(ash), Type::f32(bsh)]);
            let got = runner.float(&[Data::F(a.clone()), Data::F(b.clone())]);
            let want = naive_matmul(&op, &a, &b, m, n, k);
            let library = sparsec_ir::interp::uses_library(m, n, k);
            assert!(
                agrees(&got, &want, library, k),
                "{} {m}x{k}x{n}: differs from the sequential sum (library: {library})",
                op.name()
            );
            // Reused buffers: a second run gives the same bits.
            assert_eq!(runner.float(&[Data::F(a.clone()), Data::F(b.clone())]), got);
        }
    }
}

#[test]
fn matmul_variants_equal_the_naive_loop() {
    let mut rng = Rng::new(5);
    check_matmul::<f32>(&mut rng);
    check_matmul::<f64>(&mut rng);
}

/// What lets the JIT split a large product over threads and regenerate weights block by block:
/// `gemm_f32_panels` on a range of columns that starts at a multiple of `GEMM_PANEL` gives exactly the
/// bits of those columns of the whole product.
#[test]
fn library_products_split_at_panels_give_the_whole_products_bits() {
    use sparsec_ir::interp::{gemm_f32, gemm_f32_panels, GEMM_PANEL};
    let mut rng = Rng::new(11);
    for (m, n, k, ta, tb) in [
        (64, 300, 784, false, true),
        (300, 784, 64, true, false),
        (3, 200, 129, false, false),
        (1, 300, 784, false, true),
    ] {
        assert!(sparsec_ir::interp::uses_library(m, n, k));
        let a: Vec<f32> = rng
            .vec(m * k, -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let b: Vec<f32> = rng
            .vec(k * n, -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let ldb = if tb { k } else { n };
        let mut whole = vec![f32::NAN; m * n];
        gemm_f32(m, n, k, ta, &a, tb, &b, ldb, &mut whole, n, false);
        let want = naive_matmul(&Op::MatMul { ta, tb }, &a, &b, m, n, k);
        assert!(agrees(&whole, &want, true, k), "{m}x{n}x{k}");
        for cut in [GEMM_PANEL, 2 * GEMM_PANEL] {
            let mut parts = vec![f32::NAN; m * n];
            for (j0, j1) in [(0, cut.min(n)), (cut.min(n), n)] {
                let b0 = if tb { &b[j0 * k..] } else { &b[j0..] };
                gemm_f32_panels(
                    m,
                    j1 - j0,
                    k,
                    ta,
                    &a,
                    tb,
                    b0,
                    ldb,
                    &mut parts[j0..],
                    n,
                    false,
                );
            }
            let same = whole
                .iter()
                .zip(&parts)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{m}x{n}x{k} cut at column {cut}");
        }
    }
}

fn naive_conv<T: Float>(x: &[T], w: &[T], case: &ConvCase) -> Vec<T> {
    let [b, c, h, wd] = case.x;
    let [oh, ow] = out_hw(case);
    let (kh, kw) = (case.k[0], case.k[1]);
    let mut y = vec![T::zero(); b * case.o * oh * ow];
    for bi in 0..b {
        for o in 0..case.o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = T::zero();
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih =
                                    (i * case.stride[0] + ki) as isize - case.padding[0] as isize;
                                let iw =
                                    (j * case.stride[1] + kj) as isize - case.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xv = x[((bi * c + ci) * h + ih as usize) * wd + iw as usize];
                                let wv = w[((o * c + ci) * kh + ki) * kw + kj];
                                s += xv * wv;
                            }
                        }
                    }
                    y[((bi * case.o + o) * oh + i) * ow + j] = s;
                }
            }
        }
    }
    y
}

#[test]
fn conv2d_equals_the_naive_loop() {
    let mut rng = Rng::new(6);
    let mut cases = conv_cases();
    cases.push(ConvCase {
        x: [4, 6, 12, 12],
        o: 16,
        k: [5, 5],
        stride: [1, 1],
        padding: [0, 0],
    });
    for (ci, case) in cases.iter().enumerate() {
        let ws = [case.o, case.x[1], case.k[0], case.k[1]];
        let x: Vec<f32> = rng
            .vec(case.x.iter().product(), -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let w: Vec<f32> = rng
            .vec(ws.iter().product(), -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let y = eval_f32(
            conv(case.stride, case.padding),
            &[(&case.x, x.clone()), (&ws, w.clone())],
        );
        let want = naive_conv(&x, &w, case);
        // The im2col product per image: [o, c·kh·kw] · [c·kh·kw, oh·ow].
        let depth = case.x[1] * case.k[0] * case.k[1];
        let [oh, ow] = out_hw(case);
        let library = sparsec_ir::interp::uses_library(case.o, oh * ow, depth);
        assert!(
            agrees(&y.data, &want, library, depth),
            "conv case {ci} (library: {library})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Stores, state, whole modules

#[test]
fn stores_are_deferred_to_the_end_of_the_function() {
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    m.add_param(param("a", &[2], Init::Zeros, 0, Storage::Dense));
    m.add_param(param("b", &[2], Init::Zeros, 1, Storage::Dense));
    m.add_param(param("c", &[2], Init::Zeros, 2, Storage::Dense));
    let mut f = Func::new("f");
    let x = f.add_arg("x", Type::f32(vec![2]));
    let a0 = push(&mut f, &m, Op::Param(ParamId(0)), &[], None);
    let b0 = push(&mut f, &m, Op::Param(ParamId(1)), &[], None);
    // Swap a and b, and give c the argument.
    let sa = push(&mut f, &m, Op::Store(ParamId(0)), &[b0], None);
    let sb = push(&mut f, &m, Op::Store(ParamId(1)), &[a0], None);
    let sc = push(&mut f, &m, Op::Store(ParamId(2)), &[x], None);
    // Reads after the stores still see the old values; the store's result is the stored value.
    let a1 = push(&mut f, &m, Op::Param(ParamId(0)), &[], None);
    let c1 = push(&mut f, &m, Op::Param(ParamId(2)), &[], None);
    let sum = push(&mut f, &m, Op::Add, &[a1, sa], None);
    let sum2 = push(&mut f, &m, Op::Add, &[c1, sc], None);
    f.results = vec![a1, c1, sa, sb, sum, sum2];
    m.funcs.push(f);
    let mut interp = Interpreter::<f64>::new(&m, "f").unwrap();
    let mut state = State::dense(vec![vec![1.0, 2.0], vec![10.0, 20.0], vec![100.0, 200.0]]);
    let out = interp
        .run(&mut state, &[Input::Float(&[5.0, 6.0])])
        .unwrap();
    let data: Vec<Vec<f64>> = out
        .into_iter()
        .map(|o| o.into_float().unwrap().data)
        .collect();
    assert_eq!(
        data,
        vec![
            vec![1.0, 2.0],
            vec![100.0, 200.0],
            vec![10.0, 20.0],
            vec![1.0, 2.0],
            vec![11.0, 22.0],
            vec![105.0, 206.0],
        ]
    );
    assert_eq!(
        state.values,
        vec![vec![10.0, 20.0], vec![1.0, 2.0], vec![5.0, 6.0]]
    );
    // Once more: swapped back; c takes the new argument.
    interp
        .run(&mut state, &[Input::Float(&[7.0, 8.0])])
        .unwrap();
    assert_eq!(
        state.values,
        vec![vec![1.0, 2.0], vec![10.0, 20.0], vec![7.0, 8.0]]
    );
}

#[test]
fn initial_state_is_the_regeneration_spec() {
    for m in [modules::mlp(), modules::conv_net()] {
        let seed = m.train.as_ref().unwrap().seed;
        let s32 = State::<f32>::initial(&m);
        let s64 = State::<f64>::initial(&m);
        assert_eq!(s32.values.len(), m.params.len());
        for (i, p) in m.params.iter().enumerate() {
            let want = regen::init_values(p.init, seed, p.stream, p.ty.num_elements());
            assert_eq!(s32.dense_value(&m, i), want, "{}", p.name);
            let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(s64.dense_value(&m, i), want64, "{}", p.name);
            // A tracked parameter starts with nothing stored: its value is regenerated.
            let tracked = matches!(p.storage, sparsec_ir::Storage::Tracked { .. });
            assert_eq!(s32.stored_len(i), if tracked { 0 } else { want.len() });
        }
    }
    // No training spec: seed 0.
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    let init = Init::Uniform { lo: -1.0, hi: 2.0 };
    m.add_param(param("p", &[3, 5], init, 7, Storage::Dense));
    assert_eq!(
        State::<f32>::initial(&m).values[0],
        regen::init_values(init, 0, 7, 15)
    );
}

/// Every function of the shared test modules runs, deterministically, in f32 and f64.
#[test]
fn shared_modules_run() {
    for m in [modules::mlp(), modules::conv_net()] {
        for f in &m.funcs {
            let mut rng = Rng::new(7);
            let args: Vec<Data<f64>> = f
                .args
                .iter()
                .map(|a| match a.ty.dtype {
                    DType::F32 => Data::F(rng.vec(a.ty.num_elements(), -1.0, 1.0)),
                    DType::I32 => Data::I(
                        (0..a.ty.num_elements())
                            .map(|_| rng.below(3) as i32)
                            .collect(),
                    ),
                })
                .collect();
            let args32: Vec<Data<f32>> = args
                .iter()
                .map(|d| match d {
                    Data::F(v) => Data::F(v.iter().map(|&x| x as f32).collect()),
                    Data::I(v) => Data::I(v.clone()),
                })
                .collect();
            let mut i64 = Interpreter::<f64>::new(&m, &f.name).unwrap();
            let mut i32_ = Interpreter::<f32>::new(&m, &f.name).unwrap();
            let mut s64 = State::<f64>::initial(&m);
            let mut s32 = State::<f32>::initial(&m);
            let o64 = i64.run(&mut s64, &inputs(&args)).unwrap();
            let o32 = i32_.run(&mut s32, &inputs(&args32)).unwrap();
            assert_eq!(o64.len(), f.results.len());
            for (a, b) in o64.iter().zip(&o32) {
                assert_eq!(a.shape(), b.shape());
                match (a, b) {
                    (Output::Float(a), Output::Float(b)) => {
                        for (x, y) in a.data.iter().zip(&b.data) {
                            assert!(x.is_finite());
                            assert!((x - f64::from(*y)).abs() <= 1e-4 * (1.0 + x.abs()));
                        }
                    }
                    (Output::Int(a), Output::Int(b)) => assert_eq!(a, b),
                    (Output::Sparse { indices: a, .. }, Output::Sparse { indices: b, .. }) => {
                        assert_eq!(a.len(), b.len());
                        assert!(b.windows(2).all(|w| w[0] < w[1]));
                    }
                    _ => panic!("dtype mismatch"),
                }
            }
            // Deterministic: same state and inputs, same bits.
            let mut again = State::<f32>::initial(&m);
            let o32b = i32_.run(&mut again, &inputs(&args32)).unwrap();
            assert_eq!(o32, o32b, "@{}", f.name);
            assert_eq!(s32, again);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn err<T>(r: Result<T, InterpError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert_eq!(e.to_string(), e.message);
            e.message
        }
    }
}

#[test]
fn bad_labels_are_errors_and_leave_the_state_alone() {
    for op in [Op::SoftmaxXent, Op::SoftmaxXentGrad] {
        let mut r = xent_runner::<f32>(&op, 2, 3);
        for bad in [3, -1, i32::MAX, i32::MIN] {
            let e = err(r.interp.run(
                &mut r.state,
                &[Input::Float(&[0.0; 6]), Input::Int(&[0, bad])],
            ));
            assert!(e.contains("label") && e.contains(&bad.to_string()), "{e}");
        }
        // Still usable afterwards.
        r.interp
            .run(
                &mut r.state,
                &[Input::Float(&[0.0; 6]), Input::Int(&[0, 2])],
            )
            .unwrap();
    }
    // A failing run applies no store.
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    m.add_param(param("p", &[2, 3], Init::Zeros, 0, Storage::Dense));
    let mut f = Func::new("f");
    let x = f.add_arg("x", Type::f32(vec![2, 3]));
    let l = f.add_arg("l", Type::i32(vec![2]));
    push(&mut f, &m, Op::Store(ParamId(0)), &[x], None);
    let loss = push(&mut f, &m, Op::SoftmaxXent, &[x, l], None);
    f.results = vec![loss];
    m.funcs.push(f);
    let mut interp = Interpreter::<f32>::new(&m, "f").unwrap();
    let mut state = State::<f32>::initial(&m);
    err(interp.run(&mut state, &[Input::Float(&[1.0; 6]), Input::Int(&[0, 7])]));
    assert_eq!(state.values, vec![vec![0.0; 6]]);
}

#[test]
fn bad_calls_are_errors() {
    let mut r = xent_runner::<f64>(&Op::SoftmaxXentGrad, 2, 3);
    let mut state = r.state.clone();
    let e = err(r.interp.run(&mut state, &[Input::Float(&[0.0; 6])]));
    assert!(e.contains("takes 2 argument"), "{e}");
    let e = err(r.interp.run(
        &mut state,
        &[Input::Float(&[0.0; 6]), Input::Int(&[0]), Input::Int(&[0])],
    ));
    assert!(e.contains("takes 2 argument"), "{e}");
    let e = err(r
        .interp
        .run(&mut state, &[Input::Float(&[0.0; 5]), Input::Int(&[0, 0])]));
    assert!(e.contains("6 element"), "{e}");
    let e = err(r.interp.run(
        &mut state,
        &[Input::Float(&[0.0; 6]), Input::Int(&[0, 0, 0])],
    ));
    assert!(e.contains("2 element"), "{e}");
    let e = err(r
        .interp
        .run(&mut state, &[Input::Int(&[0; 6]), Input::Int(&[0, 0])]));
    assert!(e.contains("f32"), "{e}");
    let e = err(r.interp.run(
        &mut state,
        &[Input::Float(&[0.0; 6]), Input::Float(&[0.0, 0.0])],
    ));
    assert!(e.contains("i32"), "{e}");

    // A state that does not fit the module.
    let m = modules::mlp();
    let mut interp = Interpreter::<f32>::new(&m, "forward").unwrap();
    let x = vec![0.0f32; 64];
    let l = [0i32; 4];
    let args = [Input::Float(&x[..]), Input::Int(&l[..])];
    let mut s = State::<f32>::initial(&m);
    s.values.pop();
    assert!(err(interp.run(&mut s, &args)).contains("parameter"));
    let mut s = State::<f32>::initial(&m);
    s.values[2].push(0.0);
    assert!(err(interp.run(&mut s, &args)).contains("fc2.weight"));
    interp
        .run(&mut State::<f32>::initial(&m), &args)
        .expect("fits");
}

#[test]
fn unrunnable_functions_are_errors() {
    let m = modules::mlp();
    assert!(err(Interpreter::<f32>::new(&m, "nope")).contains("no function"));
    // Encoded values are not executed (yet).
    let odd = modules::odd_module();
    let e = err(Interpreter::<f32>::new(&odd, &odd.funcs[0].name));
    assert!(e.contains("encoded"), "{e}");
    let mut m2 = Module::new("t", sparsec_ir::Stage::Ir);
    let mut f = Func::new("f");
    f.add_arg(
        "r",
        Type::f32(vec![2]).with_encoding(Encoding::Sparse { capacity: 1 }),
    );
    m2.funcs.push(f);
    err(Interpreter::<f32>::new(&m2, "f"));
    // A recorded type that disagrees with the op's typing rule.
    let mut bad = modules::mlp();
    bad.funcs[0].insts[2].ty = Type::f32(vec![4, 9]);
    let e = err(Interpreter::<f32>::new(&bad, "forward"));
    assert!(e.contains("%2"), "{e}");
    // An operand used before its definition; a result out of range; two stores to one param.
    let mut bad = modules::mlp();
    bad.funcs[0].insts[0].operands[0] = Value::Inst(5);
    err(Interpreter::<f32>::new(&bad, "forward"));
    let mut bad = modules::mlp();
    bad.funcs[0].results.push(Value::Inst(10_000));
    err(Interpreter::<f32>::new(&bad, "forward"));
    let mut bad = modules::mlp();
    bad.funcs[0].results.push(Value::Arg(9));
    err(Interpreter::<f32>::new(&bad, "forward"));
    let mut m3 = Module::new("t", sparsec_ir::Stage::Ir);
    m3.add_param(param("p", &[1], Init::Zeros, 0, Storage::Dense));
    let mut f = Func::new("f");
    let x = f.add_arg("x", Type::f32(vec![1]));
    push(&mut f, &m3, Op::Store(ParamId(0)), &[x], None);
    push(&mut f, &m3, Op::Store(ParamId(0)), &[x], None);
    m3.funcs.push(f);
    assert!(err(Interpreter::<f32>::new(&m3, "f")).contains("second store"));
    // A parameter that does not exist.
    let mut bad = modules::mlp();
    bad.funcs[0].insts[1].op = Op::Param(ParamId(99));
    err(Interpreter::<f32>::new(&bad, "forward"));
}

/// A fused kernel may make a product panel by panel: `matmul_columns_f32` gives each panel the
/// bits of the whole product, on the library path and on the interpreter's own kernel.
#[test]
fn product_columns_have_the_whole_products_bits() {
    use sparsec_ir::interp::{matmul_columns_f32, uses_library, GEMM_PANEL};
    let mut rng = Rng::new(12);
    for (m, n, k, ta, tb) in [
        (300, 784, 64, true, false),
        (10, 100, 64, true, false),
        (10, 100, 1, true, false),
        (7, 130, 3, false, true),
        (5, 1, 900, false, false),
    ] {
        let a: Vec<f32> = rng
            .vec(m * k, -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let b: Vec<f32> = rng
            .vec(k * n, -1.0, 1.0)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let op = Op::MatMul { ta, tb };
        let ash = if ta { [k, m] } else { [m, k] };
        let bsh = if tb { [n, k] } else { [k, n] };
        let mut runner = OpRunner::<f32>::new(&op, &[Type::f32(ash), Type::f32(bsh)]);
        let whole = runner.float(&[Data::F(a.clone()), Data::F(b.clone())]);
        let ldb = if tb { k } else { n };
        let ldc = if n > 1 { GEMM_PANEL } else { 1 };
        let mut panel = vec![f32::NAN; m * ldc];
        for j0 in (0..n).step_by(GEMM_PANEL) {
            let j1 = (j0 + GEMM_PANEL).min(n);
            matmul_columns_f32((m, n, k), ta, &a, tb, &b, ldb, (j0, j1), &mut panel, ldc);
            for i in 0..m {
                for j in j0..j1 {
                    assert_eq!(
                        panel[i * ldc + j - j0].to_bits(),
                        whole[i * n + j].to_bits(),
                        "{m}x{n}x{k} (library: {}) at ({i}, {j})",
                        uses_library(m, n, k)
                    );
                }
            }
        }
    }
}
