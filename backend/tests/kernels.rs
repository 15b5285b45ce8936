//! The standalone JIT kernels (`Kernels`) against the reference, bit for bit: element-wise ops
//! against `sparsec_ir::interp`, regeneration against `sparsec_ir::regen`, and the Cranelift
//! product tile against the interpreter's own-kernel order (`sequential_product`, and the
//! interpreter itself below the size from which it calls the `gemm` crate). Neither the JIT's
//! code nor that order uses FMA; the products that go to the `gemm` crate (FMA) are compared
//! with the interpreter in the workspace's `tests/jit.rs`.

use sparsec_backend::{Kernels, Uniform};
use sparsec_ir::interp::{Input, Interpreter, State};
use sparsec_ir::op::Unary;
use sparsec_ir::{regen, Func, Module, Op, Type, Value};
use sparsec_test_support::rng::Rng;

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} differs: jit {:?} ({:#x}), reference {:?} ({:#x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// Run a one-function module whose instructions are `ops` (each applied to the given operands,
/// `Err(i)` naming argument `i`, `Ok(j)` instruction `j`) and return its last result.
fn reference(args: &[(Type, &[f32])], ops: &[(Op, Vec<Result<u32, u32>>)]) -> Vec<f32> {
    let mut m = Module::new("t", sparsec_ir::Stage::Ir);
    let mut f = Func::new("f");
    let argv: Vec<Value> = args
        .iter()
        .enumerate()
        .map(|(i, (t, _))| f.add_arg(format!("a{i}"), t.clone()))
        .collect();
    let mut last = None;
    let mut insts: Vec<Value> = Vec::new();
    for (op, operands) in ops {
        let operands: Vec<Value> = operands
            .iter()
            .map(|o| match *o {
                Ok(j) => insts[j as usize],
                Err(i) => argv[i as usize],
            })
            .collect();
        let v = f
            .push(&m.params, op.clone(), &operands, None)
            .unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        insts.push(v);
        last = Some(v);
    }
    f.results = vec![last.expect("at least one op")];
    m.funcs.push(f);
    let mut interp = Interpreter::<f32>::new(&m, "f").unwrap();
    let mut state = State::initial(&m);
    let inputs: Vec<Input<'_, f32>> = args.iter().map(|(_, d)| Input::Float(d)).collect();
    let out = interp.run(&mut state, &inputs).unwrap();
    out[0].as_float().unwrap().data.clone()
}

fn one_op(op: Op, args: &[(Type, &[f32])]) -> Vec<f32> {
    let operands = (0..args.len() as u32).map(Err).collect();
    reference(args, &[(op, operands)])
}

const LENGTHS: [usize; 6] = [0, 1, 3, 4, 5, 1023];

#[test]
fn elementwise_ops_match_the_interpreter_bit_for_bit() {
    let k = Kernels::new().unwrap();
    let mut rng = Rng::new(1);
    for len in LENGTHS {
        let t = Type::f32(vec![len]);
        let a = rng.f32_vec_special(len);
        let b = rng.f32_vec(len);
        let s = rng.f32();
        let scalar = Type::f32(vec![]);
        let mut out = vec![f32::NAN; len];

        k.add(&a, &b, &mut out);
        assert_bits(
            "add",
            &out,
            &one_op(Op::Add, &[(t.clone(), &a), (t.clone(), &b)]),
        );
        k.sub(&a, &b, &mut out);
        assert_bits(
            "sub",
            &out,
            &one_op(Op::Sub, &[(t.clone(), &a), (t.clone(), &b)]),
        );
        k.mul(&a, &b, &mut out);
        assert_bits(
            "mul",
            &out,
            &one_op(Op::Mul, &[(t.clone(), &a), (t.clone(), &b)]),
        );
        k.scale(&a, s, &mut out);
        assert_bits(
            "scale",
            &out,
            &one_op(Op::Scale, &[(t.clone(), &a), (scalar.clone(), &[s])]),
        );
        k.relu(&a, &mut out);
        assert_bits(
            "relu",
            &out,
            &one_op(Op::Unary(Unary::Relu), &[(t.clone(), &a)]),
        );
        // relu_grad(dy, x): the NaNs and infinities sit in x, the compared operand, and in dy.
        k.relu_grad(&b, &a, &mut out);
        assert_bits(
            "relu_grad(dy, x)",
            &out,
            &one_op(
                Op::UnaryGrad(Unary::Relu),
                &[(t.clone(), &b), (t.clone(), &a)],
            ),
        );
        k.relu_grad(&a, &b, &mut out);
        assert_bits(
            "relu_grad(x, dy)",
            &out,
            &one_op(
                Op::UnaryGrad(Unary::Relu),
                &[(t.clone(), &a), (t.clone(), &b)],
            ),
        );
        // SGD as autodiff writes it: %0 = scale g, lr; %1 = sub w, %0.
        let w = rng.f32_vec(len);
        let lr = 0.01f32 + rng.f32().abs();
        k.sgd(&w, &a, lr, &mut out);
        let want = reference(
            &[(t.clone(), &w), (t.clone(), &a), (scalar, &[lr])],
            &[
                (Op::Scale, vec![Err(1), Err(2)]),
                (Op::Sub, vec![Err(0), Ok(0)]),
            ],
        );
        assert_bits("sgd", &out, &want);
    }
}

#[test]
fn relu_maps_negative_zero_to_positive_zero_and_keeps_nan() {
    let k = Kernels::new().unwrap();
    let x = [-0.0f32, 0.0, -1.0, f32::NAN, 2.0];
    let mut out = [1.0f32; 5];
    k.relu(&x, &mut out);
    assert_eq!(out[0].to_bits(), 0);
    assert_eq!(out[1].to_bits(), 0);
    assert_eq!(out[2].to_bits(), 0);
    assert!(out[3].is_nan());
    assert_eq!(out[4], 2.0);
}

#[test]
fn bias_add_matches_the_interpreter() {
    let k = Kernels::new().unwrap();
    let mut rng = Rng::new(2);
    // [B, C] (row broadcast, vectorised along C) and [B, C, H, W] (planes).
    for shape in [
        vec![1usize, 1],
        vec![3, 5],
        vec![4, 4],
        vec![2, 1023],
        vec![64, 300],
        vec![0, 7],
        vec![2, 3, 4, 5],
        vec![3, 2, 1, 7],
        vec![2, 6, 1, 1],
    ] {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let inner: usize = shape[2..].iter().product();
        let x = rng.f32_vec_special(n);
        let bias = rng.f32_vec(c);
        let mut out = vec![f32::NAN; n];
        k.bias_add(&x, &bias, inner, &mut out);
        let want = one_op(
            Op::BiasAdd,
            &[(Type::f32(shape.clone()), &x), (Type::f32(vec![c]), &bias)],
        );
        assert_bits(&format!("bias_add {shape:?}"), &out, &want);
    }
}

#[test]
fn regeneration_matches_the_spec_from_position_zero() {
    let k = Kernels::new().unwrap();
    let mut rng = Rng::new(3);
    for len in [
        0usize, 1, 3, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4099,
    ] {
        let seed = rng.next_u64();
        let stream = rng.below_u64(1 << 20);
        let lo = -rng.f32().abs() - 0.01;
        let hi = rng.f32().abs() + 0.01;
        let mut want = vec![0.0f32; len];
        regen::fill_uniform(seed, stream, lo, hi, &mut want);
        let mut got = vec![f32::NAN; len];
        k.regen(
            Uniform {
                seed,
                stream,
                lo,
                hi,
            },
            0,
            &mut got,
        );
        assert_bits(
            &format!("regen seed {seed} stream {stream} len {len}"),
            &got,
            &want,
        );
    }
}

#[test]
fn regeneration_matches_single_elements_at_any_offset() {
    let k = Kernels::new().unwrap();
    let mut rng = Rng::new(4);
    for case in 0..60 {
        let seed = if case == 0 { 0 } else { rng.next_u64() };
        let stream = if case == 1 {
            u64::MAX
        } else {
            rng.next_u64() % 4096
        };
        // Offsets of every residue mod 16 and 64, small and huge (block counters past 2^32,
        // so the high counter word is exercised, and a carry inside a group of four blocks).
        let start = match case % 4 {
            0 => rng.below_u64(200),
            1 => rng.below_u64(1 << 40),
            2 => (u64::from(u32::MAX) << 4) - rng.below_u64(64),
            _ => rng.below_u64(1 << 20) * 16 + rng.below_u64(16),
        };
        let len = rng.below_u64(150) as usize;
        let (lo, hi) = (-0.25f32 - rng.f32().abs(), 0.5f32);
        let u = Uniform {
            seed,
            stream,
            lo,
            hi,
        };
        let mut got = vec![f32::NAN; len];
        k.regen(u, start, &mut got);
        let want: Vec<f32> = (0..len as u64)
            .map(|i| regen::uniform_at(seed, stream, start + i, lo, hi))
            .collect();
        assert_bits(
            &format!("regen seed {seed} stream {stream} start {start} len {len}"),
            &got,
            &want,
        );
    }
}

#[test]
fn regeneration_windows_agree_with_the_whole_stream() {
    let k = Kernels::new().unwrap();
    let u = Uniform {
        seed: 42,
        stream: 3,
        lo: -0.5,
        hi: 0.5,
    };
    let mut whole = vec![0.0f32; 3000];
    regen::fill_uniform(u.seed, u.stream, u.lo, u.hi, &mut whole);
    let mut rng = Rng::new(5);
    for _ in 0..100 {
        let start = rng.below_u64(2900) as usize;
        let len = rng.below_u64((3000 - start) as u64) as usize;
        let mut got = vec![f32::NAN; len];
        k.regen(u, start as u64, &mut got);
        assert_bits(
            &format!("window {start}+{len}"),
            &got,
            &whole[start..start + len],
        );
    }
}

/// The Cranelift tile's contract, the interpreter's own-kernel order: each element summed from
/// `−0` (so from its first product exactly; an empty sum is `+0`) in ascending `kk`, one rounded `f32` product at a time, no FMA. The interpreter itself
/// runs products from `uses_library`'s size in the GEMM library (whose order differs), and the
/// JIT calls that library for them too (`tests/jit.rs`), so the tile is checked against this
/// loop at every size and against the interpreter where the interpreter uses the same order.
fn sequential_product(
    (m, n, k): (usize, usize, usize),
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = if k == 0 { 0.0f32 } else { -0.0 };
            for kk in 0..k {
                s += a(i, kk) * b(kk, j);
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// The reference for a tile product: the interpreter where it runs its own kernel, else
/// [`sequential_product`].
fn tile_reference(
    (m, n, k): (usize, usize, usize),
    interp: impl FnOnce() -> Vec<f32>,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    // Under the environment every kernel runs in: subnormals flushed (sparsec_ir::fpenv).
    let want = sparsec_ir::fpenv::flushing_subnormals(|| sequential_product((m, n, k), a, b));
    if !sparsec_ir::interp::uses_library(m, n, k) {
        assert_bits("the interpreter's own kernel order", &interp(), &want);
    }
    want
}

/// (m, k, n): the brief's odd shapes plus a few edges of the 4 × 8 register tile.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    // One row: a batch-1 `_nt` product reads B's rows in place (two panels, the last of 2
    // columns; three, the last of 5; an empty sum).
    (1, 100, 10),
    (1, 37, 21),
    (1, 0, 5),
    (7, 13, 5),
    (65, 130, 33),
    (64, 784, 300),
    (4, 3, 8),
    (5, 1, 9),
    (3, 0, 4),
    (0, 3, 4),
    (2, 9, 0),
];

#[test]
fn matrix_products_match_the_interpreter_bit_for_bit() {
    let kern = Kernels::new().unwrap();
    let mut rng = Rng::new(6);
    for (m, k, n) in SHAPES {
        let mut c = vec![f32::NAN; m * n];
        // matmul_nt: a[m, k] · b[n, k]ᵀ
        let a = rng.f32_vec(m * k);
        let b = rng.f32_vec(n * k);
        kern.matmul_nt(m, n, k, &a, &b, &mut c);
        let want = tile_reference(
            (m, n, k),
            || {
                one_op(
                    Op::MatMul {
                        ta: false,
                        tb: true,
                    },
                    &[(Type::f32(vec![m, k]), &a), (Type::f32(vec![n, k]), &b)],
                )
            },
            |i, kk| a[i * k + kk],
            |kk, j| b[j * k + kk],
        );
        assert_bits(&format!("matmul_nt {m}x{k}x{n}"), &c, &want);
        // matmul: a[m, k] · b[k, n]
        let b = rng.f32_vec(k * n);
        c.fill(f32::NAN);
        kern.matmul(m, n, k, &a, &b, &mut c);
        let want = tile_reference(
            (m, n, k),
            || {
                one_op(
                    Op::MatMul {
                        ta: false,
                        tb: false,
                    },
                    &[(Type::f32(vec![m, k]), &a), (Type::f32(vec![k, n]), &b)],
                )
            },
            |i, kk| a[i * k + kk],
            |kk, j| b[kk * n + j],
        );
        assert_bits(&format!("matmul {m}x{k}x{n}"), &c, &want);
        // matmul_tn: a[k, m]ᵀ · b[k, n]
        let a = rng.f32_vec(k * m);
        c.fill(f32::NAN);
        kern.matmul_tn(m, n, k, &a, &b, &mut c);
        let want = tile_reference(
            (m, n, k),
            || {
                one_op(
                    Op::MatMul {
                        ta: true,
                        tb: false,
                    },
                    &[(Type::f32(vec![k, m]), &a), (Type::f32(vec![k, n]), &b)],
                )
            },
            |i, kk| a[kk * m + i],
            |kk, j| b[kk * n + j],
        );
        assert_bits(&format!("matmul_tn {m}x{k}x{n}"), &c, &want);
    }
}

#[test]
fn matmul_nt_with_in_tile_regeneration_matches_the_dense_product() {
    let kern = Kernels::new().unwrap();
    let mut rng = Rng::new(7);
    for (m, k, n) in SHAPES {
        let bound = 1.0 / (k.max(1) as f32).sqrt();
        let w = Uniform {
            seed: rng.next_u64(),
            stream: rng.below_u64(16),
            lo: -bound,
            hi: bound,
        };
        let a = rng.f32_vec(m * k);
        let mut weight = vec![0.0f32; n * k];
        regen::fill_uniform(w.seed, w.stream, w.lo, w.hi, &mut weight);
        let want = tile_reference(
            (m, n, k),
            || {
                one_op(
                    Op::MatMul {
                        ta: false,
                        tb: true,
                    },
                    &[
                        (Type::f32(vec![m, k]), &a),
                        (Type::f32(vec![n, k]), &weight),
                    ],
                )
            },
            |i, kk| a[i * k + kk],
            |kk, j| weight[j * k + kk],
        );
        let mut c = vec![f32::NAN; m * n];
        kern.matmul_nt_regen(m, n, k, &a, w, &mut c);
        assert_bits(&format!("matmul_nt_regen {m}x{k}x{n}"), &c, &want);
    }
}

#[test]
fn jit_reports_fma_and_keeps_clif() {
    let kern = Kernels::new().unwrap();
    let jit = kern.jit();
    let _ = jit.has_fma(); // whatever the host says; no kernel here uses it
    let clif = jit.clif("matmul_nt").unwrap();
    assert!(clif.contains("f32x4"), "{clif}");
    assert!(!clif.contains("fma"), "the JIT's own code never emits fma");
    assert!(jit.clif("regen_uniform").unwrap().contains("i32x4"));
}

#[test]
#[should_panic(expected = "elements where the kernel needs")]
fn mismatched_lengths_are_refused_before_entering_the_code() {
    let kern = Kernels::new().unwrap();
    let mut out = vec![0.0f32; 3];
    kern.add(&[1.0, 2.0, 3.0], &[1.0, 2.0], &mut out);
}
