//! Subnormal floats are flushed to zero in every backend and thread (sparsec_ir::fpenv):
//! momentum that would decay into subnormals becomes exactly zero, with the same bits on the
//! interpreter and on the JIT with one or two threads, and the caller's thread keeps its own
//! floating-point environment.

use sparsec::driver::{compile_to, program_from_source, CompileOptions};
use sparsec::runner::{Backend, Runner};
use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Input, State};
use sparsec_ir::{DType, Module, Role, Stage};

/// An MLP whose first layer is large enough for the JIT to split its update over two threads.
const MLP: &str = "
model mlp {
    input x: [1, 28, 28]
    flat = flatten(x)
    fc1 = dense(flat, 64)
    h = relu(fc1)
    fc2 = dense(h, 10)
    loss softmax_cross_entropy(fc2)
}
data synthetic { train_samples: 64, test_samples: 8, seed: 1 }
train { epochs: 1 batch: 4 optimizer: sgd(lr: 0.1, momentum: 0.5) }
";

fn opt_module() -> Module {
    let program = program_from_source("mlp.net", MLP.to_owned(), false, &[])
        .unwrap_or_else(|_| panic!("the model compiles"));
    compile_to(
        &program,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    )
    .unwrap_or_else(|_| panic!("the model compiles to stage opt"))
}

/// One step on all-zero images (so the first layer's weight gradient is exactly zero), from a
/// state whose momentum is all subnormal; returns the state after it.
fn step(m: &Module, backend: Backend, threads: usize) -> State<f32> {
    let mut state = State::<f32>::initial(m);
    for (i, p) in m.params.iter().enumerate() {
        if matches!(p.role, Role::Momentum(_)) {
            // 1e-39 is below f32::MIN_POSITIVE (1.18e-38): a subnormal.
            state.values[i].iter_mut().for_each(|v| *v = 1e-39);
        }
    }
    let f = m.func(TRAIN_STEP).unwrap();
    let floats: Vec<Vec<f32>> = f
        .args
        .iter()
        .filter(|a| a.ty.dtype == DType::F32)
        .map(|a| {
            if a.ty.shape.is_empty() {
                vec![0.1]
            } else {
                vec![0.0; a.ty.num_elements()]
            }
        })
        .collect();
    let ints: Vec<Vec<i32>> = f
        .args
        .iter()
        .filter(|a| a.ty.dtype == DType::I32)
        .map(|a| vec![0; a.ty.num_elements()])
        .collect();
    let (mut fi, mut ii) = (floats.iter(), ints.iter());
    let inputs: Vec<Input<'_, f32>> = f
        .args
        .iter()
        .map(|a| match a.ty.dtype {
            DType::I32 => Input::Int(ii.next().unwrap()),
            _ => Input::Float(fi.next().unwrap()),
        })
        .collect();
    let mut runner = Runner::new(m, TRAIN_STEP, backend, Some(threads)).unwrap();
    runner.run(&mut state, &inputs).unwrap();
    state
}

#[test]
fn subnormal_momentum_is_flushed_alike_in_every_backend_and_thread_count() {
    let m = opt_module();
    let before = sparsec_ir::fpenv::flushes_subnormals();
    let reference = step(&m, Backend::Interp, 1);
    assert_eq!(
        sparsec_ir::fpenv::flushes_subnormals(),
        before,
        "the caller's environment is restored"
    );
    let fc1 = m
        .params
        .iter()
        .position(|p| matches!(p.role, Role::Momentum(of) if m.param(of).name == "fc1.weight"))
        .unwrap();
    // 0.5 · 1e-39 + 0 would be a subnormal; flushed, it is zero.
    assert!(reference.values[fc1].iter().all(|&v| v == 0.0));
    for threads in [1, 2] {
        let jit = step(&m, Backend::Jit, threads);
        for (i, (a, b)) in reference.values.iter().zip(&jit.values).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{}: JIT ({threads} threads) differs",
                m.params[i].name
            );
        }
    }
    assert_eq!(sparsec_ir::fpenv::flushes_subnormals(), before);
}
