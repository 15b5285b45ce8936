//! The JIT (`sparsec_backend::JitProgram`, 1 and 2 threads) against the reference interpreter
//! on randomly generated programs, bit for bit: outputs and the state after a few steps.
//!
//! The generators are `sparsec_test_support::random_ir`'s:
//!
//! - Random graphs (`random_module`): seeded, well-typed IR text parsed with the IR
//!   parser, built to exercise what the partitioner fuses and splits. Each case also checks
//!   that its kernel program carries out exactly the instructions it was generated with (every
//!   product, reduction, `bias_add` and element-wise op has its kernel or epilogue), and the
//!   whole run checks that every kind of kernel the generator aims at was produced.
//! - Random models (`random_model`): MLPs of random widths and batch sizes, dense and
//!   Dropback, through the real pipeline (`driver::compile_to` at stage `opt`); every function
//!   (train step, frozen step, forward) is run in turn on one evolving state.
//!
//! One graph in eight gets infinities, NaNs, subnormals and `f32::MAX` among its inputs
//! (`JIT_RANDOM_SPECIALS=1`: every graph); all NaNs compare equal (see `fbits`).
//!
//! A failure prints the case's seed and its IR (or model file). To replay one case:
//! `JIT_RANDOM_SEED=0x... cargo test --test jit_random`; to see which case crashed the process
//! (a crash loses captured output), `JIT_RANDOM_TRACE=1` writes each seed to stderr first.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use sparsec::driver::{compile_to, program_from_source, CompileOptions, Failure};
use sparsec_backend::codegen::chain::Operand;
use sparsec_backend::kernel_ir::Body;
use sparsec_backend::JitProgram;
use sparsec_ir::interp::LIBRARY_MIN_WORK;
use sparsec_ir::interp::{Input, Interpreter, Output, State};
use sparsec_ir::op::Unary;
use sparsec_ir::Stage;
use sparsec_ir::{DType, Module};
use sparsec_test_support::random_ir::{random_model, random_module, Size};
use sparsec_test_support::rng::Rng;

/// `SPLIT_MIN_WORK` in `backend/src/runtime.rs` (private there): from this much work a chain,
/// a row reduction, or a product (8 times as much) is split over two threads.
const SPLIT_MIN_WORK: usize = 1 << 15;

/// Random graphs per size, and random models (dense, Dropback).
const GRAPHS: [(Size, usize); 3] = [(Size::Tiny, 24), (Size::Small, 84), (Size::Large, 24)];
const STEPS: u64 = 3;

fn case_seed(kind: u64, i: usize) -> u64 {
    Rng::new(kind.wrapping_mul(0x100_0000_01b3) ^ i as u64).next_u64()
}

fn only_seed() -> Option<u64> {
    let s = std::env::var("JIT_RANDOM_SEED").ok()?;
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    Some(u64::from_str_radix(s, 16).expect("JIT_RANDOM_SEED: a hex seed"))
}

fn trace(what: &str) {
    if std::env::var_os("JIT_RANDOM_TRACE").is_some() {
        let _ = writeln!(std::io::stderr(), "jit_random: {what}");
    }
}

/// A float's bits, every NaN as one: neither side fixes the sign or payload of a NaN. Rust
/// leaves them unspecified (RFC 3514), and LLVM commutes `fadd`/`fmul` operands at will, so the
/// interpreter's own NaN signs change with how it is compiled (`nan_signs_*` below), while
/// the JIT's follow its operand order.
fn fbits(x: f32) -> u32 {
    if x.is_nan() {
        0x7fc0_0000
    } else {
        x.to_bits()
    }
}

fn bits(outputs: &[Output<f32>]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Float(t) => t.data.iter().map(|&x| fbits(x)).collect(),
            Output::Int(t) => t.data.iter().map(|&x| x as u32).collect(),
            // Positions of these small models, compared as the other outputs are.
            Output::Sparse { indices, .. } => indices.iter().map(|&i| i as u32).collect(),
        })
        .collect()
}

fn state_bits(s: &State<f32>) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = s
        .values
        .iter()
        .map(|v| v.iter().map(|&x| fbits(x)).collect())
        .collect();
    for t in s.tracked.iter().flatten() {
        out.push(t.indices.clone());
        out.push(t.values.iter().map(|&x| fbits(x)).collect());
    }
    out
}

/// Where two lists of bit vectors first differ, readably.
fn first_difference(what: &str, got: &[Vec<u32>], want: &[Vec<u32>]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{what}: {} vs {} tensors", got.len(), want.len()));
    }
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        if g.len() != w.len() {
            return Some(format!("{what} {t}: {} vs {} elements", g.len(), w.len()));
        }
        if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
            let n = g.iter().zip(w).filter(|(a, b)| a != b).count();
            return Some(format!(
                "{what} {t}: element {i} of {} is {:?} ({:#010x}) in the JIT, {:?} ({:#010x}) in \
                 the interpreter; {n} elements differ",
                g.len(),
                f32::from_bits(g[i]),
                g[i],
                f32::from_bits(w[i]),
                w[i]
            ));
        }
    }
    None
}

/// What a function's arguments hold.
#[derive(Clone, Copy)]
enum Style {
    /// Floats in [-1, 1) with signed zeros; with `specials`, now and then an infinity, a NaN,
    /// a subnormal or the largest finite value, whose propagation must match too.
    Graph { specials: bool },
    /// Images in [-1, 1), labels below `classes`, a learning rate in (0, 0.25].
    Model { classes: usize },
}

fn inputs(m: &Module, func: &str, seed: u64, style: Style) -> Vec<InputData> {
    let f = m.func(func).expect("function");
    let mut rng = Rng::new(seed);
    let float = |rng: &mut Rng| match style {
        Style::Graph { specials: true } if rng.below(64) == 0 => rng.pick(&[
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -1e-40,
            f32::MAX,
        ]),
        _ => rng.value(),
    };
    f.args
        .iter()
        .map(|a| {
            let n = a.ty.num_elements();
            match (a.ty.dtype, style) {
                (DType::F32, Style::Model { .. }) if a.ty.shape.is_empty() => {
                    InputData::F(vec![(rng.range(1, 25) as f32) / 100.0])
                }
                (DType::F32, _) => InputData::F((0..n).map(|_| float(&mut rng)).collect()),
                (DType::I32, Style::Model { classes }) => {
                    InputData::I((0..n).map(|_| rng.below(classes) as i32).collect())
                }
                (DType::I32, Style::Graph { .. }) => InputData::I(vec![0; n]),
            }
        })
        .collect()
}

enum InputData {
    F(Vec<f32>),
    I(Vec<i32>),
}

fn as_inputs(data: &[InputData]) -> Vec<Input<'_, f32>> {
    data.iter()
        .map(|d| match d {
            InputData::F(v) => Input::Float(v),
            InputData::I(v) => Input::Int(v),
        })
        .collect()
}

/// Runs `schedule` (function names, in order, one step each) on the interpreter and on the JIT
/// with 1 and 2 threads, each from the initial state; `init_scale(step)` is set before each
/// step. Any difference in outputs, states or success is an error.
fn compare(
    m: &Module,
    schedule: &[&str],
    seed: u64,
    style: Style,
    init_scale: &dyn Fn(u64) -> f32,
) -> Result<Compared, String> {
    let mut funcs: Vec<&str> = schedule.to_vec();
    funcs.sort_unstable();
    funcs.dedup();
    let mut interps = Vec::new();
    let mut jits: Vec<[JitProgram; 2]> = Vec::new();
    for f in &funcs {
        interps.push(Interpreter::<f32>::new(m, f).map_err(|e| format!("interpreter @{f}: {e}"))?);
        let jit = |t| JitProgram::new(m, f, t).map_err(|e| format!("JIT @{f}, {t} threads: {e}"));
        jits.push([jit(1)?, jit(2)?]);
    }
    let (mut finite, mut total) = (0, 0);
    let mut want_state = State::<f32>::initial(m);
    let mut states = [State::<f32>::initial(m), State::<f32>::initial(m)];
    for (step, f) in schedule.iter().enumerate() {
        let step = step as u64;
        let j = funcs.iter().position(|g| g == f).expect("scheduled");
        let data = inputs(m, f, seed ^ step.wrapping_mul(0x9e37), style);
        let ins = as_inputs(&data);
        want_state.init_scale = init_scale(step);
        let want = interps[j].run(&mut want_state, &ins);
        for o in want.iter().flatten() {
            if let Output::Float(t) = o {
                finite += t.data.iter().filter(|x| x.is_finite()).count();
                total += t.data.len();
            }
        }
        for (t, jit) in jits[j].iter_mut().enumerate() {
            let what = format!("step {step} @{f}, {} thread(s)", t + 1);
            let state = &mut states[t];
            state.init_scale = init_scale(step);
            let got = jit.run(state, &ins);
            match (&got, &want) {
                (Ok(got), Ok(want)) => {
                    let outputs = first_difference("output", &bits(got), &bits(want));
                    let state = first_difference(
                        "state tensor",
                        &state_bits(state),
                        &state_bits(&want_state),
                    );
                    if let Some(d) = outputs.or(state) {
                        return Err(format!("{what}: {d}"));
                    }
                }
                (Err(e), Ok(_)) => return Err(format!("{what}: the JIT fails: {e}")),
                (Ok(_), Err(e)) => {
                    return Err(format!(
                        "{what}: the interpreter fails ({e}), the JIT does not"
                    ))
                }
                (Err(_), Err(_)) => {}
            }
        }
    }
    Ok(Compared {
        jits: jits.into_iter().map(|[one, _]| one).collect(),
        finite,
        total,
    })
}

/// What a comparison ran: the one-thread programs (for their kernel programs), and how many of
/// the interpreter's float outputs were finite (a comparison of NaNs alone proves little).
struct Compared {
    jits: Vec<JitProgram>,
    finite: usize,
    total: usize,
}

/// How many kernels of each kind (and with each property the generator aims at) ran.
#[derive(Default)]
struct Coverage(BTreeMap<&'static str, usize>);

impl Coverage {
    fn add(&mut self, key: &'static str, yes: bool) {
        if yes {
            *self.0.entry(key).or_default() += 1;
        }
    }

    fn get(&self, key: &str) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }

    fn count(&mut self, jit: &JitProgram) {
        let plan = jit.plan();
        self.add("stores", !plan.stores.is_empty());
        for k in &plan.kernels {
            match &k.body {
                Body::Gemm { spec, m, n, k, .. } => {
                    let work = m * n * k;
                    self.add(
                        match spec.layout.name() {
                            "matmul" => "gemm matmul",
                            "matmul_nt" => "gemm matmul_nt",
                            "matmul_tn" => "gemm matmul_tn",
                            _ => "gemm matmul_nt_regen",
                        },
                        true,
                    );
                    self.add("gemm imported", spec.import);
                    self.add("gemm in JIT code", !spec.import);
                    self.add("gemm with a dimension of 1", *m == 1 || *n == 1 || *k == 1);
                    self.add("gemm n not a multiple of 8", n % 8 != 0);
                    self.add("gemm + bias", spec.bias && !spec.relu);
                    self.add("gemm + relu", spec.relu && !spec.bias);
                    self.add("gemm + bias + relu", spec.bias && spec.relu);
                    self.add(
                        "gemm + bias + relu, imported",
                        spec.bias && spec.relu && spec.import,
                    );
                    self.add(
                        "gemm epilogue, product also stored",
                        (spec.bias || spec.relu) && spec.store[0],
                    );
                    self.add(
                        "gemm epilogue, biased sums also stored",
                        spec.bias && spec.relu && spec.store[1],
                    );
                    self.add(
                        "gemm epilogue, product kept in registers",
                        (spec.bias || spec.relu) && !spec.store[0],
                    );
                    self.add(
                        "gemm split over threads",
                        work >= SPLIT_MIN_WORK * 8 && *n > 8,
                    );
                    self.add(
                        "gemm at the import threshold's edge",
                        (LIBRARY_MIN_WORK / 2..LIBRARY_MIN_WORK * 2).contains(&work),
                    );
                }
                Body::Chain { spec, len, .. } => {
                    let mut uses = vec![0; spec.inputs];
                    for (_, ops) in &spec.nodes {
                        for o in ops {
                            if let Operand::Input(i) = o {
                                uses[*i] += 1;
                            }
                        }
                    }
                    self.add("chain", true);
                    self.add("chain of 3+ ops", spec.nodes.len() >= 3);
                    self.add("chain of 6+ ops", spec.nodes.len() >= 6);
                    self.add("chain with a shared input", uses.iter().any(|&u| u >= 2));
                    self.add("chain with a scalar", spec.scalars > 0);
                    self.add("chain storing an inner node", {
                        let last = spec.nodes.len() - 1;
                        spec.outputs.iter().any(|&o| o != last)
                    });
                    self.add("chain of length 1", *len == 1);
                    self.add("chain length not a multiple of 4", len % 4 != 0);
                    self.add("chain split over threads", *len >= SPLIT_MIN_WORK);
                }
                Body::ReduceRows { rows, cols, .. } => {
                    self.add("reduce_rows", true);
                    self.add(
                        "reduce_rows split over threads",
                        rows * cols >= SPLIT_MIN_WORK,
                    );
                    self.add("reduce_rows cols not a multiple of 4", cols % 4 != 0);
                }
                Body::BiasAdd { inner, .. } => {
                    self.add("bias_add kernel", true);
                    self.add("bias_add kernel, inner > 1", *inner > 1);
                }
                Body::Copy { .. } => self.add("copy", true),
                Body::Interp { .. } => self.add("interp fallback", true),
                Body::Regen { .. } => self.add("regen", true),
                Body::Overlay { .. } => self.add("overlay", true),
                Body::TopkSelect { .. } => self.add("topk_select", true),
                Body::DropbackApply { .. } => self.add("dropback_apply", true),
                Body::GradScore { .. } => self.add("grad_score", true),
                Body::GradApply { .. } => self.add("grad_apply", true),
                Body::GradUpdate { .. } => self.add("grad_update", true),
                Body::TopkStream { .. } => self.add("topk_stream", true),
                Body::WeightProduct { .. } => self.add("weight_product", true),
                Body::ReduceChannels { .. } => self.add("reduce_channels", true),
                Body::SoftmaxXent { .. } => self.add("softmax_xent", true),
                Body::MaxPool { .. } => self.add("max_pool", true),
                Body::Conv { .. } => self.add("conv", true),
                Body::ConvWeightGrad { .. } => self.add("conv weight gradient", true),
                Body::TrackedSet { .. } => self.add("tracked_set", true),
                Body::MaskIndex { .. } => self.add("mask_index", true),
                Body::Masked { kind, .. } => self.add(kind.name(), true),
                Body::MaskedConv { .. } => self.add("masked_conv", true),
                Body::TrackedValues { .. } | Body::Correction { .. } => {}
            }
        }
    }
}

/// The kernel program carries out exactly the generated instructions: one product kernel per
/// `matmul*` of each layout, one row reduction per leading-axes `reduce_sum`, a channel
/// reduction or a fallback per other reduction, a fallback per `matmul_tt`, every `bias_add`
/// fused or on its own, every element-wise op (`tanh` and `sigmoid` included) in a chain or
/// fused as a `relu` epilogue, every store kept.
fn check_plan(m: &Module, jit: &JitProgram) -> Result<(), String> {
    let f = &m.funcs[0];
    let mut ir: BTreeMap<&str, usize> = BTreeMap::new();
    for inst in &f.insts {
        let name = inst.op.name();
        let key = match (&inst.op, name) {
            (sparsec_ir::Op::ReduceSum { axes }, _) => {
                let rank = f.value_type(inst.operands[0]).shape.len();
                let leading = axes.iter().copied().eq(0..axes.len());
                if leading && axes.len() < rank {
                    "reduce_rows"
                } else {
                    "reduce_other"
                }
            }
            (_, "matmul_tt") => "interp",
            (_, "add" | "sub" | "mul" | "scale") => "elementwise",
            (_, name) if Unary::by_name(name).is_some() || Unary::by_grad_name(name).is_some() => {
                "elementwise"
            }
            (_, other) => other,
        };
        *ir.entry(key).or_default() += 1;
    }
    let mut plan: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bump = |k: &'static str, n: usize| *plan.entry(k).or_default() += n;
    for k in &jit.plan().kernels {
        match &k.body {
            Body::Gemm { spec, .. } => {
                bump(spec.layout.name(), 1);
                bump("bias_add", spec.bias as usize);
                bump("elementwise", spec.relu as usize);
            }
            Body::Chain { spec, product, .. } => {
                bump("elementwise", spec.nodes.len());
                bump("matmul_tn", product.iter().len());
            }
            Body::ReduceRows { .. } => bump("reduce_rows", 1),
            Body::BiasAdd { .. } => bump("bias_add", 1),
            Body::ReduceChannels { .. } => bump("reduce_other", 1),
            Body::Interp {
                op: sparsec_ir::Op::ReduceSum { .. },
                ..
            } => bump("reduce_other", 1),
            Body::Interp { .. } => bump("interp", 1),
            _ => {}
        }
    }
    bump("store", jit.plan().stores.len());
    for key in [
        "matmul",
        "matmul_nt",
        "matmul_tn",
        "reduce_rows",
        "reduce_other",
        "interp",
        "bias_add",
        "elementwise",
        "store",
    ] {
        let (want, got) = (
            ir.get(key).copied().unwrap_or(0),
            plan.get(key).copied().unwrap_or(0),
        );
        if want != got {
            return Err(format!(
                "the kernel program has {got} {key} where the function has {want}:\n{}",
                jit.plan()
            ));
        }
    }
    Ok(())
}

fn graph_case(seed: u64, size: Size, cover: &mut Coverage) -> Result<(), (String, String)> {
    let specials = seed.is_multiple_of(8) || std::env::var_os("JIT_RANDOM_SPECIALS").is_some();
    let text = random_module(&mut Rng::new(seed), size);
    let fail = |e: String| (e, text.clone());
    let m = sparsec_ir::parse::parse_module(&text).map_err(|e| {
        let (line, col) = e.line_col(&text);
        fail(format!(
            "generated IR rejected at {line}:{col}: {}",
            e.message
        ))
    })?;
    let run = catch_unwind(AssertUnwindSafe(|| {
        compare(
            &m,
            &["f"; STEPS as usize],
            seed,
            Style::Graph { specials },
            &|_| 1.0,
        )
    }));
    let compared = match run {
        Ok(r) => r.map_err(fail)?,
        Err(p) => return Err(fail(format!("panic: {}", panic_message(&p)))),
    };
    let mut stored = Vec::new();
    for inst in &m.funcs[0].insts {
        match inst.op {
            sparsec_ir::Op::Store(p) => stored.push(p),
            sparsec_ir::Op::Param(p) => {
                cover.add("param read after its store", stored.contains(&p))
            }
            _ => {}
        }
    }
    if !specials {
        *cover.0.entry("finite outputs").or_default() += compared.finite;
        *cover.0.entry("outputs").or_default() += compared.total;
    }
    for jit in &compared.jits {
        check_plan(&m, jit).map_err(fail)?;
        cover.count(jit);
    }
    Ok(())
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(not a string)".into())
}

fn report(failures: &[(u64, String, String)], what: &str) {
    for (seed, e, text) in failures.iter().take(3) {
        eprintln!("=== {what} seed {seed:#018x}: {e}\n{text}");
    }
    let seeds: Vec<String> = failures
        .iter()
        .map(|(s, ..)| format!("{s:#018x}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} {what} case(s) failed (seeds {}); replay one with JIT_RANDOM_SEED",
        failures.len(),
        seeds.join(" ")
    );
}

#[test]
fn jit_matches_the_interpreter_on_random_graphs() {
    let started = Instant::now();
    let mut cover = Coverage::default();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (kind, &(size, count)) in GRAPHS.iter().enumerate() {
        let at = Instant::now();
        for i in 0..count {
            let seed = case_seed(kind as u64 + 1, i);
            if only_seed().is_some_and(|s| s != seed) {
                continue;
            }
            trace(&format!("graph {size:?} {seed:#018x}"));
            cases += 1;
            if let Err((e, text)) = graph_case(seed, size, &mut cover) {
                failures.push((seed, e, text));
            }
        }
        eprintln!("{size:?} graphs: {:.2} s", at.elapsed().as_secs_f64());
    }
    eprintln!(
        "{cases} random graphs in {:.2} s; kernels: {:#?}",
        started.elapsed().as_secs_f64(),
        cover.0
    );
    report(&failures, "random graph");
    if only_seed().is_some() {
        return;
    }
    let (finite, total) = (cover.get("finite outputs"), cover.get("outputs"));
    assert!(
        finite * 10 >= total * 9,
        "only {finite} of {total} output elements are finite: the graphs overflow"
    );
    // The generator must produce what it is for; a change that stops it (or a partitioner
    // change that stops fusing) shows here instead of leaving these paths untested.
    for (key, min) in [
        ("gemm matmul", 40),
        ("gemm matmul_nt", 40),
        ("gemm matmul_tn", 40),
        ("gemm imported", 15),
        ("gemm in JIT code", 40),
        ("gemm with a dimension of 1", 10),
        ("gemm n not a multiple of 8", 30),
        ("gemm + bias", 8),
        ("gemm + relu", 8),
        ("gemm + bias + relu", 8),
        ("gemm + bias + relu, imported", 2),
        ("gemm epilogue, product also stored", 5),
        ("gemm epilogue, biased sums also stored", 3),
        ("gemm epilogue, product kept in registers", 10),
        ("gemm split over threads", 3),
        ("gemm at the import threshold's edge", 3),
        ("chain", 100),
        ("chain of 3+ ops", 30),
        ("chain of 6+ ops", 5),
        ("chain with a shared input", 20),
        ("chain with a scalar", 30),
        ("chain storing an inner node", 20),
        ("chain of length 1", 10),
        ("chain length not a multiple of 4", 40),
        ("chain split over threads", 3),
        ("reduce_rows", 30),
        ("reduce_rows split over threads", 2),
        ("reduce_rows cols not a multiple of 4", 15),
        ("bias_add kernel", 10),
        ("bias_add kernel, inner > 1", 5),
        ("copy", 5),
        ("interp fallback", 15),
        ("reduce_channels", 5),
        ("stores", 60),
        ("param read after its store", 20),
    ] {
        let got = cover.get(key);
        assert!(
            got >= min,
            "only {got} kernel(s) of kind `{key}` over all random graphs (want {min})"
        );
    }
}

/// `source` compiled to stage `opt`, within `memory_budget` bytes if given.
fn opt_module_within(
    name: &str,
    source: &str,
    memory_budget: Option<u64>,
) -> Result<Module, String> {
    let describe = |f: Failure| match f {
        Failure::Input(d) => d.render(codespan_reporting::term::termcolor::ColorChoice::Never),
        Failure::Usage(s) | Failure::Message(s) | Failure::Interrupted(s) => s,
    };
    let program = program_from_source(name, source.to_owned(), false, &[]).map_err(describe)?;
    let options = CompileOptions {
        memory_budget,
        ..CompileOptions::default()
    };
    compile_to(&program, Stage::Opt, &options, &mut String::new()).map_err(describe)
}

/// `source` compiled to stage `opt`.
fn opt_module(name: &str, source: &str) -> Result<Module, String> {
    opt_module_within(name, source, None)
}

/// `source` compiled to its least-memory program: a budget too small is refused with the size
/// of the smallest program of the function that does not fit, which is then tried as the
/// budget, until every function fits.
fn least_memory_module(name: &str, source: &str) -> Result<Module, String> {
    let mut budget = 1;
    for _ in 0..8 {
        let refusal = match opt_module_within(name, source, Some(budget)) {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        budget = refusal
            .split("the smallest needs ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("no smallest program in: {refusal}"))?;
    }
    Err("no least-memory program after 8 budgets".into())
}

fn model_case(
    seed: u64,
    dropback: bool,
    large: bool,
    least_memory: bool,
    cover: &mut Coverage,
) -> Result<(), String> {
    let case = random_model(&mut Rng::new(seed), "random", dropback, large);
    let m = if least_memory {
        least_memory_module("random.net", &case.source)?
    } else {
        opt_module("random.net", &case.source)?
    };
    let frozen = sparsec_ir::func_names::TRAIN_STEP_FROZEN;
    let mut schedule = vec!["train_step"; 3];
    if m.func(frozen).is_some() {
        schedule.extend([frozen, frozen]);
    }
    schedule.push("forward");
    for f in &m.funcs {
        if !schedule.contains(&f.name.as_str()) {
            return Err(format!("a function no schedule runs: @{}", f.name));
        }
    }
    // The initial values' scale after `step` steps, as the method's run side sets it.
    let method = sparsec::methods::run_side(m.method.as_ref())?;
    let scale = |step: u64| {
        let mut state = sparsec_ir::interp::State::<f32>::dense(Vec::new());
        method.sync_state(&m, step, &mut state);
        state.init_scale
    };
    let run = catch_unwind(AssertUnwindSafe(|| {
        let style = Style::Model {
            classes: case.classes,
        };
        compare(&m, &schedule, seed, style, &scale)
    }));
    let jits = match run {
        Ok(r) => r?.jits,
        Err(p) => return Err(format!("panic: {}", panic_message(&p))),
    };
    cover.add("dropback models", dropback);
    cover.add("frozen steps", m.func(frozen).is_some());
    for jit in &jits {
        cover.count(jit);
    }
    Ok(())
}

#[test]
fn jit_matches_the_interpreter_on_random_models() {
    let started = Instant::now();
    let mut cover = Coverage::default();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (kind, dropback, large, count) in [
        (11, false, false, 8),
        (12, true, false, 11),
        (13, false, true, 1),
        (14, true, true, 2),
    ] {
        for i in 0..count {
            let seed = case_seed(kind, i);
            if only_seed().is_some_and(|s| s != seed) {
                continue;
            }
            trace(&format!("model {seed:#018x}"));
            cases += 1;
            // Every other Dropback model also as its least-memory program (streamed scores).
            let least_memory = dropback && i % 2 == 1;
            if let Err(e) = model_case(seed, dropback, large, least_memory, &mut cover) {
                let source = random_model(&mut Rng::new(seed), "random", dropback, large).source;
                failures.push((seed, e, source));
            }
        }
    }
    eprintln!(
        "{cases} random models in {:.2} s; kernels: {:#?}",
        started.elapsed().as_secs_f64(),
        cover.0
    );
    report(&failures, "random model");
    if only_seed().is_some() {
        return;
    }
    for (key, min) in [
        ("dropback models", 10),
        ("frozen steps", 2),
        ("gemm matmul_nt_regen", 5),
        ("gemm + bias + relu", 5),
        ("gemm imported", 3),
        ("gemm split over threads", 1),
        ("topk_select", 10),
        ("grad_score", 5),
        ("grad_update", 10),
        ("topk_stream", 4),
        ("weight_product", 2),
        ("chain with a scalar", 10),
        ("reduce_rows", 10),
        ("stores", 20),
    ] {
        let got = cover.get(key);
        assert!(
            got >= min,
            "only {got} of `{key}` over all random models (want {min})"
        );
    }
}

/// `@f` of `text` on `args` in the interpreter and in the JIT (one thread): the raw bits of
/// the first result, and the kind of the kernel that computes it.
fn raw_first_result(text: &str, args: &[&[f32]]) -> (u32, u32, String) {
    let m = sparsec_ir::parse::parse_module(text).expect("parses");
    let ins: Vec<Input<'_, f32>> = args.iter().map(|a| Input::Float(a)).collect();
    let want = Interpreter::<f32>::new(&m, "f")
        .expect("interpreter")
        .run(&mut State::initial(&m), &ins)
        .expect("interpreter run");
    let mut jit = JitProgram::new(&m, "f", 1).expect("jit");
    let got = jit.run(&mut State::initial(&m), &ins).expect("jit run");
    let first = |o: &[Output<f32>]| o[0].as_float().expect("a float").data[0].to_bits();
    (first(&got), first(&want), jit.plan().kernels[0].kind())
}

// The random graphs with NaN and infinite inputs found NaNs of different signs in the JIT and in
// the interpreter; the two cases below are the smallest. The comparison above takes every NaN as
// one (`fbits`); these stay as the record, ignored until NaN bits are part of the contract.

#[test]
#[ignore = "NaN sign: the JIT's product keeps the left NaN, the interpreter's GEMM the right one"]
fn nan_signs_of_a_product_match() {
    let text = "sparsec-ir 2 stage=opt\nmodule m\n\n\
                func @f(%x: f32[1, 1], %y: f32[1, 1]) -> (f32[1, 1]) {\n\
                \x20 %0 = matmul %x, %y : f32[1, 1]\n\
                \x20 return %0\n}\n";
    let (jit, interp, kind) = raw_first_result(text, &[&[f32::NAN], &[-f32::NAN]]);
    assert_eq!(kind, "gemm.matmul");
    // Observed in a test build: JIT 0x7fc00000, interpreter 0xffc00000.
    assert_eq!(jit, interp, "JIT {jit:#010x}, interpreter {interp:#010x}");
}

#[test]
#[ignore = "NaN sign: one interpreter kernel, compiled in two crates, as fallback and in run"]
fn nan_signs_of_a_fallback_reduction_match() {
    let text = "sparsec-ir 2 stage=opt\nmodule m\n\n\
                func @f(%x: f32[3]) -> (f32[]) {\n\
                \x20 %0 = reduce_sum %x {axes=[0]} : f32[]\n\
                \x20 return %0\n}\n";
    let (jit, interp, kind) = raw_first_result(text, &[&[1.0, f32::NAN, -f32::NAN]]);
    assert_eq!(kind, "interp.reduce_sum");
    // Observed in a test build: JIT 0xffc00000, interpreter 0x7fc00000.
    assert_eq!(jit, interp, "JIT {jit:#010x}, interpreter {interp:#010x}");
}
