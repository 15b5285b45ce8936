//! The JIT (`sparsec_backend::JitProgram`) against the reference interpreter: every example's
//! optimised train step (dense and Dropback) and forward pass at batch sizes 1, 3 and 64, a few
//! steps each, outputs and states compared bit for bit; thread counts 1 and 2 give the same
//! bits; and a short `sparsec train --backend jit` run matches the interpreter's.

use std::path::Path;
use std::process::Command;

use sparsec::driver::{compile_to, program_from_source, CompileOptions};
use sparsec_backend::JitProgram;
use sparsec_ir::interp::{Input, Interpreter, Output, State};
use sparsec_ir::Stage;
use sparsec_ir::{DType, Module};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example at stage `opt` with `batch`, or `None` when it does not compile (a method the
/// passes do not carry out).
fn opt_module(example: &str, batch: usize) -> Option<Module> {
    opt_module_within(example, batch, None)
}

/// [`opt_module`] compiled within `memory_budget` bytes, if given.
fn opt_module_within(example: &str, batch: usize, memory_budget: Option<u64>) -> Option<Module> {
    let text = std::fs::read_to_string(root().join("examples").join(example)).expect("example");
    let sets = vec![("batch".to_owned(), batch.to_string())];
    let program = program_from_source(example, text, false, &sets).ok()?;
    let options = CompileOptions {
        memory_budget,
        ..CompileOptions::default()
    };
    compile_to(&program, Stage::Opt, &options, &mut String::new()).ok()
}

/// Deterministic pseudo-random inputs for `func` (images in [0, 1), labels below `classes`,
/// `lr` a small positive scalar).
fn inputs(m: &Module, func: &str, step: u64) -> (Vec<Vec<f32>>, Vec<Vec<i32>>) {
    let f = m.func(func).expect("function");
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ step.wrapping_mul(0x1234_5678_9abc);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let classes = f
        .results
        .get(1)
        .map(|&v| f.value_type(v).shape[1])
        .unwrap_or(10);
    let (mut fl, mut il) = (Vec::new(), Vec::new());
    for a in &f.args {
        let n = a.ty.num_elements();
        match a.ty.dtype {
            DType::F32 if a.ty.shape.is_empty() => fl.push(vec![0.05]),
            DType::F32 => fl.push(
                (0..n)
                    .map(|_| (next() >> 40) as f32 / 16_777_216.0)
                    .collect(),
            ),
            DType::I32 => il.push((0..n).map(|_| (next() % classes as u64) as i32).collect()),
        }
    }
    (fl, il)
}

fn as_inputs<'a>(
    m: &Module,
    func: &str,
    fl: &'a [Vec<f32>],
    il: &'a [Vec<i32>],
) -> Vec<Input<'a, f32>> {
    let f = m.func(func).expect("function");
    let (mut i, mut j) = (0, 0);
    f.args
        .iter()
        .map(|a| match a.ty.dtype {
            DType::F32 => {
                i += 1;
                Input::Float(&fl[i - 1][..])
            }
            DType::I32 => {
                j += 1;
                Input::Int(&il[j - 1][..])
            }
        })
        .collect()
}

fn bits(outputs: &[Output<f32>]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Float(t) => t.data.iter().map(|x| x.to_bits()).collect(),
            Output::Int(t) => t.data.iter().map(|&x| x as u32).collect(),
            Output::Sparse { indices, .. } => indices.iter().map(|&i| i as u32).collect(),
        })
        .collect()
}

fn state_bits(s: &State<f32>) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = s
        .values
        .iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect();
    for t in s.tracked.iter().flatten() {
        out.push(t.indices.clone());
        out.push(t.values.iter().map(|x| x.to_bits()).collect());
    }
    out
}

/// `steps` steps of `func` on the interpreter and on the JIT with 1 and 2 threads, from the
/// initial state: the same bits everywhere.
fn compare(example: &str, m: &Module, func: &str, steps: u64) {
    let plan: Vec<(u64, Option<f32>)> = (0..steps).map(|s| (s, None)).collect();
    compare_steps(example, m, func, &plan);
}

/// As [`compare`], one step per `(inputs of step, learning rate)` of `plan` (`None`: the
/// inputs' own); the JIT programs, to look into.
fn compare_steps(
    example: &str,
    m: &Module,
    func: &str,
    plan: &[(u64, Option<f32>)],
) -> Vec<JitProgram> {
    let mut reference = Interpreter::<f32>::new(m, func).expect("interpreter");
    let mut ref_state = State::<f32>::initial(m);
    let mut jits: Vec<(JitProgram, State<f32>)> = [1, 2]
        .iter()
        .map(|&t| {
            (
                JitProgram::new(m, func, t).expect("jit"),
                State::<f32>::initial(m),
            )
        })
        .collect();
    for (step, &(batch, lr)) in plan.iter().enumerate() {
        let (mut fl, il) = inputs(m, func, batch);
        if let Some(lr) = lr {
            for scalar in fl.iter_mut().filter(|v| v.len() == 1) {
                scalar[0] = lr;
            }
        }
        let ins = as_inputs(m, func, &fl, &il);
        let want = reference
            .run(&mut ref_state, &ins)
            .expect("interpreter run");
        for (jit, state) in &mut jits {
            let got = jit.run(state, &ins).expect("jit run");
            let what = format!("{example} @{func} step {step} threads {}", jit.threads());
            assert_eq!(bits(&got), bits(&want), "{what}: outputs differ");
            assert_eq!(
                state_bits(state),
                state_bits(&ref_state),
                "{what}: states differ"
            );
        }
    }
    jits.into_iter().map(|(jit, _)| jit).collect()
}

/// Dropback steps whose selection the gathered candidates cannot make: a learning rate 100
/// times the last one's (nearly every score reaches the floor: too many candidates), then the
/// same batch stepped back (the entries just made move back toward `w0`: perhaps too few).
/// The score kernels, which gather without writing their scores, run again and write them,
/// and every step still gives the interpreter's bits, on one thread and two.
#[test]
fn dropback_selections_the_candidates_cannot_make_match_the_interpreter() {
    let example = "lenet300_dropback.net";
    let m = opt_module(example, 64).expect("the example compiles");
    let plan = [
        (0, Some(0.05)),
        (1, Some(0.05)),
        (2, Some(5.0)),
        (3, Some(0.05)),
        (3, Some(-0.05)),
        (4, Some(0.05)),
    ];
    for jit in compare_steps(example, &m, "train_step", &plan) {
        assert!(
            jit.selections_rescored() >= 1,
            "threads {}: no selection needed its scores written",
            jit.threads()
        );
    }
}

/// A dense step updates its weights (and momenta) where they lie (no second copy, and its
/// buffers take less than the weights would twice), while a Dropback step, whose tracked
/// stores may still fail after its kernels, updates none in place; both keep the interpreter's
/// bits (the comparisons above).
#[test]
fn a_dense_step_updates_its_weights_in_place() {
    let m = opt_module("lenet300.net", 64).expect("the example compiles");
    let mut jit = JitProgram::new(&m, "train_step", 1).expect("jit");
    // Every weight and its momentum (SGD with momentum: one chain writes both).
    let mut names = jit.updated_in_place();
    names.sort_unstable();
    let mut all: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
    all.sort_unstable();
    assert_eq!(names, all);
    assert!(names.contains(&"fc1.weight.momentum"), "{names:?}");
    let before = jit.buffer_bytes();
    let mut state = State::<f32>::initial(&m);
    let (fl, il) = inputs(&m, "train_step", 0);
    let first = state_bits(&state);
    jit.run(&mut state, &as_inputs(&m, "train_step", &fl, &il))
        .expect("run");
    assert_ne!(state_bits(&state), first, "the step changed no weight");
    let weights: u64 = state.values.iter().map(|v| 4 * v.len() as u64).sum();
    assert_eq!(jit.buffer_bytes(), before);
    assert!(
        jit.plan().buffers.iter().map(|b| b.bytes()).sum::<u64>() >= before + weights,
        "the in-place weights' buffers are still counted"
    );
    let dropback = opt_module("lenet300_dropback.net", 64).expect("the example compiles");
    let jit = JitProgram::new(&dropback, "train_step", 1).expect("jit");
    assert!(jit.updated_in_place().is_empty());
}

/// At a small batch a weight's gradient is made inside its update, 64 columns at a time, and
/// never stored: fc1's and fc2's (fc3's, 10x100x3, is below the GEMM library's size and stays
/// a product kernel of its own). The bits are checked with every example at batch 1 and 3
/// (`jit_matches_the_interpreter_on_every_example_bit_for_bit`).
#[test]
fn a_shallow_weight_gradient_is_made_inside_its_update() {
    let m = opt_module("lenet300.net", 3).expect("the example compiles");
    let jit = JitProgram::new(&m, "train_step", 2).expect("jit");
    let text = jit.plan().to_string();
    assert_eq!(text.matches("chain.matmul_tn [jit]").count(), 2, "{text}");
    assert_eq!(text.matches("gemm.matmul_tn [jit]").count(), 1, "{text}");
    // fc1's new weight and new momentum; no 300x784 gradient.
    let fc1_sized = jit.plan().buffers.iter().filter(|b| b.len == 300 * 784);
    assert_eq!(fc1_sized.count(), 2, "{text}");
    let mut names = jit.updated_in_place();
    names.sort_unstable();
    assert!(names.contains(&"fc1.weight"), "{names:?}");
    // At batch 1 every weight's gradient is an outer product, made inside the update, however
    // small.
    let m = opt_module("lenet300.net", 1).expect("the example compiles");
    let jit = JitProgram::new(&m, "train_step", 2).expect("jit");
    let text = jit.plan().to_string();
    assert_eq!(text.matches("chain.matmul_tn [jit]").count(), 3, "{text}");
    assert!(!text.contains("gemm.matmul_tn"), "{text}");
    assert!(text.contains("made where it is read"), "{text}");
    // fc1's forward product and update split over both threads, cutting the rows alike.
    assert!(jit.uses_second_thread(), "{text}");
    // At batch 64 making the product dominates: it keeps its own kernel.
    let m = opt_module("lenet300.net", 64).expect("the example compiles");
    let jit = JitProgram::new(&m, "train_step", 2).expect("jit");
    assert!(!jit.plan().to_string().contains("chain.matmul_tn"));
}

/// Weight gradients made inside their update on shapes the examples do not have: an outer
/// product (`k = 1`) whose rows split over two threads and whose rows end in a scalar tail
/// (131 columns), and a depth-16 product in four panels, the last of 5 columns, split over two
/// threads. Special values included; the interpreter's bits on one thread and two.
#[test]
fn products_made_inside_their_update_match_the_interpreter_on_odd_shapes() {
    let text = [
        EDGE_MODULE,
        "func @f(%dy1: f32[1, 300], %x1: f32[1, 131], %w1: f32[300, 131], %dy16: f32[16, 100], %x16: f32[16, 197], %w16: f32[100, 197], %lr: f32[]) -> (f32[300, 131], f32[100, 197]) {
  %0 = matmul_tn %dy1, %x1 : f32[300, 131]
  %1 = scale %0, %lr : f32[300, 131]
  %2 = sub %w1, %1 : f32[300, 131]
  %3 = matmul_tn %dy16, %x16 : f32[100, 197]
  %4 = scale %3, %lr : f32[100, 197]
  %5 = sub %w16, %4 : f32[100, 197]
  return %2, %5
}
",
    ]
    .concat();
    let m = sparsec_ir::parse::parse_module(&text).expect("parses");
    let mut values = special_values(0x853c_49e6_748f_ea9b);
    let fl = vec![
        values(300),
        values(131),
        values(300 * 131),
        values(16 * 100),
        values(16 * 197),
        values(100 * 197),
        vec![0.375],
    ];
    jit_matches_the_interpreter_on(&m, &fl, &[], |jit| {
        let text = jit.plan().to_string();
        assert_eq!(text.matches("chain.matmul_tn [jit]").count(), 2, "{text}");
        assert!(text.contains("made where it is read"), "{text}");
    });
}

/// Pooling windows two wide at stride 2 (LeNet's) read, and in the gradient write, the rows
/// of four windows as whole vectors split into even and odd lanes: tiling 2×2 windows and
/// overlapping 3×2 ones (stride 1 down), 11 windows a row (two groups of four, then three
/// alone), with ties, NaN, ±0 and infinities; the interpreter's bits on one thread and two.
#[test]
fn paired_pooling_windows_match_the_interpreter_on_special_values() {
    let text = [
        EDGE_MODULE,
        "func @f(%x: f32[2, 3, 10, 22]) -> (f32[2, 3, 5, 11], f32[2, 3, 10, 22], f32[2, 3, 8, 11], f32[2, 3, 10, 22]) {
  %0 = maxpool2d %x {kernel=[2, 2], stride=[2, 2]} : f32[2, 3, 5, 11]
  %1 = maxpool2d_grad %0, %x {kernel=[2, 2], stride=[2, 2]} : f32[2, 3, 10, 22]
  %2 = maxpool2d %x {kernel=[3, 2], stride=[1, 2]} : f32[2, 3, 8, 11]
  %3 = maxpool2d_grad %2, %x {kernel=[3, 2], stride=[1, 2]} : f32[2, 3, 10, 22]
  return %0, %1, %2, %3
}
",
    ]
    .concat();
    let m = sparsec_ir::parse::parse_module(&text).expect("parses");
    let fl = vec![special_values(0x2545_f491_4f6c_dd1d)(2 * 3 * 10 * 22)];
    jit_matches_the_interpreter_on(&m, &fl, &[], |jit| {
        let text = jit.plan().to_string();
        assert_eq!(text.matches("maxpool2d [jit]").count(), 2, "{text}");
        assert_eq!(text.matches("maxpool2d_grad [jit]").count(), 2, "{text}");
    });
}

/// The header of the hand-written modules below (one function `@f`, no parameters).
const EDGE_MODULE: &str = "sparsec-ir 2 stage=opt
module edge
data synthetic train_samples=64 test_samples=16 seed=3
train epochs=1 batch=2 seed=7 log_every=1 optimizer=sgd(lr=0.5, momentum=0.0, weight_decay=0.0, nesterov=false) schedule=constant

";

/// Inputs of `n` values from `seed`: mostly a coarse grid (so ties are common), one in seven a
/// special value (NaN, ±0, ±1, ±100, a tiny value, infinity).
fn special_values(seed: u64) -> impl FnMut(usize) -> Vec<f32> {
    let mut state = seed;
    let special = [
        f32::NAN,
        0.0,
        -0.0,
        1.0,
        1.0,
        -1.0,
        100.0,
        -100.0,
        1e-30,
        f32::INFINITY,
    ];
    move |n| {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state.is_multiple_of(7) {
                    special[(state >> 8) as usize % special.len()]
                } else {
                    ((state >> 40) % 17) as f32 / 4.0 - 2.0
                }
            })
            .collect()
    }
}

/// `@f` of `m` on these inputs gives the interpreter's bits on the JIT with one thread and
/// two; `check` looks at each JIT program first.
fn jit_matches_the_interpreter_on(
    m: &Module,
    fl: &[Vec<f32>],
    il: &[Vec<i32>],
    check: impl Fn(&JitProgram),
) {
    let ins = as_inputs(m, "f", fl, il);
    let mut reference = Interpreter::<f32>::new(m, "f").expect("interpreter");
    let want = reference
        .run(&mut State::<f32>::initial(m), &ins)
        .expect("interpreter run");
    for threads in [1, 2] {
        let mut jit = JitProgram::new(m, "f", threads).expect("jit");
        check(&jit);
        let got = jit
            .run(&mut State::<f32>::initial(m), &ins)
            .expect("jit run");
        for (i, (g, w)) in bits(&got).iter().zip(bits(&want)).enumerate() {
            assert_eq!(g, &w, "result {i} differs ({threads} threads)");
        }
    }
}

#[test]
fn jit_matches_the_interpreter_on_every_example_bit_for_bit() {
    let mut compared = 0;
    for example in [
        "lenet300.net",
        "lenet300_leaky.net",
        "lenet300_dropback.net",
        "lenet300_dropback_freeze.net",
        "lenet300_activation_density.net",
        "lenet5_activation_density.net",
        "lenet5.net",
        "lenet5_admm.net",
        "lenet5_prunetrain.net",
        "resnet_tiny.net",
    ] {
        for batch in [1, 3, 64] {
            let Some(m) = opt_module(example, batch) else {
                continue;
            };
            let conv = example.starts_with("lenet5") || example.starts_with("resnet");
            // A convolutional step is slow on the (reference) interpreter: fewer steps.
            for f in &m.funcs {
                compare(example, &m, &f.name, if conv { 2 } else { 3 });
            }
            compared += 1;
        }
    }
    assert!(
        compared >= 6,
        "only {compared} example/batch pairs compiled"
    );
}

/// An activation added through the op table runs as JIT code in both directions, with no
/// fallback to the interpreter.
#[test]
fn leaky_relu_and_its_gradient_run_in_jit_code() {
    let m = opt_module("lenet300_leaky.net", 64).expect("compiles");
    for func in ["forward", "train_step"] {
        let jit = JitProgram::new(&m, func, 1).expect("jit");
        let text = jit.plan().to_string();
        assert!(jit.plan().fallbacks().is_empty(), "{text}");
        assert!(text.contains("leaky_relu"), "{text}");
        if func == "train_step" {
            assert!(text.contains("leaky_relu_grad"), "{text}");
        }
    }
}

#[test]
fn the_lenet300_steps_run_their_products_and_chains_in_jit_code() {
    for example in ["lenet300.net", "lenet300_dropback.net"] {
        let m = opt_module(example, 64).expect("compiles");
        let jit = JitProgram::new(&m, "train_step", 1).expect("jit");
        let text = jit.plan().to_string();
        assert!(!text.contains("interp.matmul"), "{text}");
        let fallbacks = jit.plan().fallbacks();
        assert!(fallbacks.is_empty(), "{fallbacks:?}");
        assert!(text.contains("softmax_xent [jit]"), "{text}");
        assert!(text.contains("softmax_xent_grad [jit]"), "{text}");
        if example.contains("dropback") {
            // The step scores each tracked weight panel by panel, without a dense gradient, and
            // its forward products read the effective weights the scores need anyway (one
            // regeneration per weight and step). Without a memory budget, evaluation's
            // products read the effective weights too, kept from run to run (regenerated once,
            // overlaid with what changed); within one, they regenerate inside the product.
            assert!(text.contains("grad_score [host]"), "{text}");
            assert!(text.contains("grad_apply [host]"), "{text}");
            assert!(!text.contains("gemm.matmul_tn"), "{text}");
            assert!(!text.contains("matmul_nt_regen"), "{text}");
            let forward = JitProgram::new(&m, "forward", 1).expect("jit");
            let text = forward.plan().to_string();
            assert!(!text.contains("matmul_nt_regen"), "{text}");
            assert!(text.contains("gemm.matmul_nt [jit]"), "{text}");
            assert!(text.contains("overlay [host]"), "{text}");
            let lean = opt_module_within(example, 64, Some(800_000)).expect("compiles");
            let forward = JitProgram::new(&lean, "forward", 1).expect("jit");
            let text = forward.plan().to_string();
            assert!(text.contains("gemm.matmul_nt_regen [jit]"), "{text}");
        }
    }
}

#[test]
fn the_lenet5_step_runs_its_convolutions_and_pooling_without_the_interpreter() {
    let m = opt_module("lenet5.net", 64).expect("compiles");
    let jit = JitProgram::new(&m, "train_step", 1).expect("jit");
    let text = jit.plan().to_string();
    let fallbacks = jit.plan().fallbacks();
    assert!(fallbacks.is_empty(), "{fallbacks:?}");
    for kind in [
        "conv2d",
        "conv2d_input_grad",
        "maxpool2d",
        "maxpool2d_grad",
        "reduce_channels",
    ] {
        assert!(text.contains(&format!(" {kind} [jit]")), "{kind}: {text}");
    }
    // The weight gradient is the interpreter's kernel on the host: data movement around one
    // deep product per group of images, the two halves of the batch on the two threads.
    assert!(text.contains(" conv2d_weight_grad [host]"), "{text}");
    assert!(text.contains("for half in [0..32, 32..64]"), "{text}");
    // The convolutions' products are the interpreter's GEMM, called as it calls it.
    assert!(
        text.contains("call sparsec_gemm_f32(20x576x25, @conv1.weight[o, ckk] * cols[ckk, p])"),
        "{text}"
    );
    assert!(text.contains("20x25x|G|*576"), "{text}");
}

fn train(backend: &str, out: &Path) -> serde_json::Value {
    let _ = std::fs::remove_dir_all(out);
    let status = Command::new(env!("CARGO_BIN_EXE_sparsec"))
        .args([
            "train",
            "examples/lenet300_dropback.net",
            "--backend",
            backend,
        ])
        .args([
            "--set",
            "epochs=1",
            "--set",
            "max_steps=30",
            "--set",
            "batch=50",
        ])
        .arg("--data")
        .arg(root().join("data/fashion-mnist-subset"))
        .arg("--out")
        .arg(out)
        .current_dir(root())
        .env("SPARSEC_DATA", root().join("data/fashion-mnist-subset"))
        .output()
        .expect("run sparsec");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn a_short_jit_training_run_matches_the_interpreter_run() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let jit = train("jit", &tmp.join("jit-run"));
    let interp = train("interp", &tmp.join("interp-run"));
    assert_eq!(jit["backend"], "jit");
    assert_eq!(interp["backend"], "interp");
    for key in ["test_accuracy", "test_loss", "steps", "weights_stored"] {
        assert_eq!(jit[key], interp[key], "{key}");
    }
    assert!(jit["compile_ms"].as_f64().unwrap_or(0.0) > 0.0);
}

/// Geometry the examples do not have (overlapping pooling windows, unequal strides and
/// paddings, a non-square kernel, a fused bias, channel reductions over every axis pattern)
/// and special values (NaN, ±0, ties, large logits): every kernel that replaced an interpreter
/// fallback gives the interpreter's bits, on one thread and two.
#[test]
fn the_new_kernels_match_the_interpreter_on_odd_geometry_and_special_values() {
    let text = [
        EDGE_MODULE,
        "func @f(%x: f32[2, 3, 9, 7], %w: f32[4, 3, 3, 2], %dy: f32[2, 4, 6, 8], %logits: f32[5, 7], %labels: i32[5], %b: f32[4]) -> (f32[2, 4, 6, 8], f32[2, 3, 9, 7], f32[4, 3, 3, 2], f32[2, 3, 4, 3], f32[2, 3, 9, 7], f32[], f32[5, 7], f32[4], f32[2], f32[2, 3, 9, 7], f32[2, 3, 9, 7], f32[7], f32[2, 4, 7, 4], f32[2, 3, 9, 7], f32[4, 3, 3, 2], f32[2, 3, 8, 7], f32[2, 3, 9, 7], f32[2, 4, 7, 6]) {
  %0 = conv2d %x, %w {stride=[2, 1], padding=[2, 1]} : f32[2, 4, 6, 8]
  %1 = conv2d_input_grad %dy, %w {stride=[2, 1], padding=[2, 1], input=[9, 7]} : f32[2, 3, 9, 7]
  %2 = conv2d_weight_grad %x, %dy {stride=[2, 1], padding=[2, 1], kernel=[3, 2]} : f32[4, 3, 3, 2]
  %3 = maxpool2d %x {kernel=[3, 3], stride=[2, 2]} : f32[2, 3, 4, 3]
  %4 = maxpool2d_grad %3, %x {kernel=[3, 3], stride=[2, 2]} : f32[2, 3, 9, 7]
  %5 = softmax_xent %logits, %labels : f32[]
  %6 = softmax_xent_grad %logits, %labels : f32[5, 7]
  %7 = reduce_sum %dy {axes=[0, 2, 3]} : f32[4]
  %8 = reduce_sum %x {axes=[1, 2, 3]} : f32[2]
  %9 = tanh %x : f32[2, 3, 9, 7]
  %10 = sigmoid %x : f32[2, 3, 9, 7]
  %11 = reduce_sum %logits {axes=[0]} : f32[7]
  %12 = conv2d %x, %w {stride=[1, 3], padding=[0, 2]} : f32[2, 4, 7, 4]
  %13 = conv2d_input_grad %12, %w {stride=[1, 3], padding=[0, 2], input=[9, 7]} : f32[2, 3, 9, 7]
  %14 = conv2d_weight_grad %x, %12 {stride=[1, 3], padding=[0, 2], kernel=[3, 2]} : f32[4, 3, 3, 2]
  %15 = maxpool2d %x {kernel=[2, 1], stride=[1, 1]} : f32[2, 3, 8, 7]
  %16 = maxpool2d_grad %15, %x {kernel=[2, 1], stride=[1, 1]} : f32[2, 3, 9, 7]
  %17 = conv2d %x, %w {stride=[1, 1], padding=[0, 0]} : f32[2, 4, 7, 6]
  %18 = bias_add %17, %b : f32[2, 4, 7, 6]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %18
}
",
    ]
    .concat();
    let m = sparsec_ir::parse::parse_module(&text).expect("parses");
    let mut values = special_values(0x2545_f491_4f6c_dd1d);
    let fl = vec![
        values(2 * 3 * 9 * 7),
        values(4 * 3 * 3 * 2),
        values(2 * 4 * 6 * 8),
        values(5 * 7),
        values(4),
    ];
    let il = vec![vec![0, 6, 3, 3, 1]];
    jit_matches_the_interpreter_on(&m, &fl, &il, |jit| {
        assert!(
            jit.plan().fallbacks().is_empty(),
            "{:?}",
            jit.plan().fallbacks()
        );
        // The last convolution carries its bias_add (42 positions a channel: a scalar tail).
        let text = jit.plan().to_string();
        assert!(text.contains("+= %b[oc] (bias_add"), "{text}");
    });
    // A label out of range is the interpreter's error, not a read outside the logits.
    let bad = vec![vec![0, 7, 3, 3, 1]];
    let ins = as_inputs(&m, "f", &fl, &bad);
    let mut jit = JitProgram::new(&m, "f", 1).expect("jit");
    let e = jit
        .run(&mut State::<f32>::initial(&m), &ins)
        .expect_err("a bad label");
    assert!(e.contains("label 7 of example 1"), "{e}");
}
