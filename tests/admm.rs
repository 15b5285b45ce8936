//! ADMM's compile side (docs/methods.md §3; the run side is not built yet, so `sparsec train`
//! refuses the method): each selected weight's `Z` and `U` are state the step reads and never
//! trains, and the loss gains `ρ/2 · Σ ‖W − Z + U‖²`, checked here against an independent
//! computation on both backends (ADMM-1's penalty invariant).

use sparsec::driver::{compile_to, program_from_source, CompileOptions};
use sparsec::runner::{Backend, Runner};
use sparsec_ir::func_names::TRAIN_STEP;
use sparsec_ir::interp::{Input, Output, State};
use sparsec_ir::{Role, Stage};

const MLP: &str = "model mlp {
    input x: [1, 4, 4]
    flat = flatten(x)
    fc1 = dense(flat, 8)
    h1 = relu(fc1)
    fc2 = dense(h1, 3)
    loss softmax_cross_entropy(fc2)
}
data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
train { epochs: 1, batch: 4, optimizer: sgd(lr: 0.1, momentum: 0.9) }
method admm { keep: 0.25, rho: 0.02 }
";

fn scalar(out: &Output<f32>) -> f64 {
    match out {
        Output::Float(t) if t.data.len() == 1 => f64::from(t.data[0]),
        _ => panic!("a scalar output"),
    }
}

#[test]
fn the_penalty_is_rho_half_the_squared_distance_and_z_u_are_never_trained() {
    let Ok(program) = program_from_source("mlp.net", MLP.to_owned(), false, &[]) else {
        panic!("compiles")
    };
    let Ok(module) = compile_to(
        &program,
        Stage::Opt,
        &CompileOptions::default(),
        &mut String::new(),
    ) else {
        panic!("optimises")
    };
    let mut state = State::<f32>::initial(&module);
    // Z and U somewhere other than zero, deterministic.
    let mut filled = 0;
    for (i, p) in module.params.iter().enumerate() {
        if matches!(p.role, Role::State(_)) {
            for (j, v) in state.values[i].iter_mut().enumerate() {
                *v = (((i * 31 + j * 17) % 23) as f32 - 11.0) / 40.0;
            }
            filled += 1;
        }
    }
    assert_eq!(filled, 4, "Z and U of fc1 and fc2");
    // Σ ‖W − Z + U‖² computed here, in f64.
    let mut want = 0f64;
    for layer in ["fc1", "fc2"] {
        let at = |n: String| module.param_by_name(&n).unwrap().0 as usize;
        let w = &state.values[at(format!("{layer}.weight"))];
        let z = &state.values[at(format!("{layer}.weight.admm_z"))];
        let u = &state.values[at(format!("{layer}.weight.admm_u"))];
        want += w
            .iter()
            .zip(z)
            .zip(u)
            .map(|((w, z), u)| (f64::from(*w) - f64::from(*z) + f64::from(*u)).powi(2))
            .sum::<f64>();
    }
    let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let labels = [0i32, 1, 2, 1];
    let mut finals = Vec::new();
    for backend in [Backend::Interp, Backend::Jit] {
        let mut st = state.clone();
        let mut runner = Runner::new(&module, TRAIN_STEP, backend, Some(1)).unwrap();
        let out = runner
            .run(
                &mut st,
                &[Input::Float(&x), Input::Int(&labels), Input::Float(&[0.1])],
            )
            .unwrap();
        let (loss, ce, p) = (scalar(&out[0]), scalar(&out[2]), scalar(&out[3]));
        assert!(
            (p - want).abs() <= 1e-5 * want,
            "{backend:?}: P {p} vs {want}"
        );
        let penalty = 0.02 / 2.0 * p;
        assert!(
            (loss - ce - penalty).abs() <= 1e-5 * loss.abs(),
            "{backend:?}: loss {loss} = ce {ce} + {penalty}"
        );
        for (i, p) in module.params.iter().enumerate() {
            if matches!(p.role, Role::State(_)) {
                assert_eq!(
                    st.values[i], state.values[i],
                    "{backend:?}: @{} is not trained",
                    p.name
                );
            }
        }
        finals.push(st.values.clone());
    }
    assert_eq!(
        finals[0], finals[1],
        "the JIT steps as the interpreter does"
    );
}
