//! Micro-benchmark: JIT kernels against the reference interpreter. Ignored by default (tests
//! never assert on time); run with
//! `cargo test -p sparsec-backend --release --test bench -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sparsec_backend::{Kernels, Uniform};
use sparsec_ir::interp::{Input, Interpreter, State};
use sparsec_ir::{regen, Func, Module, Op, Type};

/// The median of `reps` timings of `f` (after one warm-up call).
fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2]
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    regen::fill_uniform(seed, 0, -1.0, 1.0, &mut out);
    out
}

#[test]
#[ignore]
fn jit_vs_interpreter() {
    let t0 = Instant::now();
    let kern = Kernels::new().unwrap();
    println!(
        "compile all kernels: {:.1} ms (host FMA: {})",
        t0.elapsed().as_secs_f64() * 1e3,
        kern.jit().has_fma()
    );

    // matmul_nt 64×784×300 (LeNet-300-100's fc1 forward at batch 64).
    let (m, k, n) = (64usize, 784usize, 300usize);
    let flops = 2.0 * (m * n * k) as f64;
    let a = data(m * k, 1);
    let w = Uniform {
        seed: 7,
        stream: 0,
        lo: -0.0357,
        hi: 0.0357,
    };
    let mut b = vec![0.0f32; n * k];
    regen::fill_uniform(w.seed, w.stream, w.lo, w.hi, &mut b);
    let mut c = vec![0.0f32; m * n];

    let mut module = Module::new("bench", sparsec_ir::Stage::Ir);
    let mut f = Func::new("f");
    let x = f.add_arg("a", Type::f32(vec![m, k]));
    let y = f.add_arg("b", Type::f32(vec![n, k]));
    let r = f
        .push(
            &module.params,
            Op::MatMul {
                ta: false,
                tb: true,
            },
            &[x, y],
            None,
        )
        .unwrap();
    f.results = vec![r];
    module.funcs.push(f);
    let mut interp = Interpreter::<f32>::new(&module, "f").unwrap();
    let mut state = State::initial(&module);
    let reps = 50;
    let t_interp = time(reps, || {
        black_box(
            interp
                .run(&mut state, &[Input::Float(&a), Input::Float(&b)])
                .unwrap(),
        );
    });
    let t_jit = time(reps, || kern.matmul_nt(m, n, k, &a, &b, black_box(&mut c)));
    let t_regen_mm = time(reps, || {
        kern.matmul_nt_regen(m, n, k, &a, w, black_box(&mut c))
    });
    let gf = |t: Duration| flops / t.as_secs_f64() / 1e9;
    println!("matmul_nt {m}x{k}x{n} (median of {reps}):");
    println!(
        "  interpreter           {:8.3} ms  {:6.2} GFLOP/s",
        t_interp.as_secs_f64() * 1e3,
        gf(t_interp)
    );
    println!(
        "  jit                   {:8.3} ms  {:6.2} GFLOP/s",
        t_jit.as_secs_f64() * 1e3,
        gf(t_jit)
    );
    println!(
        "  jit, in-tile regen W  {:8.3} ms  {:6.2} GFLOP/s (W never stored)",
        t_regen_mm.as_secs_f64() * 1e3,
        gf(t_regen_mm)
    );

    // Regeneration: a 300×784 weight.
    let words = n * k;
    let mut out = vec![0.0f32; words];
    let t_ref = time(reps, || {
        regen::fill_uniform(w.seed, w.stream, w.lo, w.hi, black_box(&mut out))
    });
    let t_jit_regen = time(reps, || kern.regen(w, 0, black_box(&mut out)));
    let t_jit_regen_odd = time(reps, || kern.regen(w, 5, black_box(&mut out)));
    let rate = |t: Duration| words as f64 / t.as_secs_f64() / 1e6;
    println!("regenerate {words} words (median of {reps}):");
    println!(
        "  regen::fill_uniform   {:8.3} ms  {:7.1} Mwords/s",
        t_ref.as_secs_f64() * 1e3,
        rate(t_ref)
    );
    println!(
        "  jit                   {:8.3} ms  {:7.1} Mwords/s",
        t_jit_regen.as_secs_f64() * 1e3,
        rate(t_jit_regen)
    );
    println!(
        "  jit, start 5          {:8.3} ms  {:7.1} Mwords/s",
        t_jit_regen_odd.as_secs_f64() * 1e3,
        rate(t_jit_regen_odd)
    );
}
