//! Helpers shared by the autodiff tests: examples, hand-written IR, deterministic random data and
//! the f64 interpreter.

#![allow(dead_code)]

use std::path::PathBuf;

use sparsec_ir::interp::{Input, Interpreter, State};
use sparsec_ir::spec::Optimizer;
use sparsec_ir::{parse_module, Module, Role};

pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every example model, sorted by name: (name, source text).
pub fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable example"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "expected the example models");
    out
}

pub fn example(name: &str) -> String {
    std::fs::read_to_string(examples_dir().join(format!("{name}.net"))).expect("example exists")
}

/// Check and lower a model source, optionally with another batch size.
pub fn lower(source: &str, batch: Option<u64>) -> Module {
    let mut model = sparsec_frontend::check_source(source)
        .unwrap_or_else(|d| panic!("example does not check: {d:?}"));
    if let Some(b) = batch {
        model.train.batch = b;
    }
    let mut module = sparsec_frontend::lower::lower(&model).expect("lowers");
    sparsec_passes::methods::assign_storage(&mut module).expect("the method's storage");
    module
}

/// The same module with another optimizer.
pub fn with_optimizer(
    m: &Module,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
) -> Module {
    let mut m = m.clone();
    m.train.as_mut().expect("train spec").optimizer = Optimizer {
        lr,
        momentum,
        weight_decay,
        nesterov,
    };
    m
}

/// Plain SGD: the update is `W − lr·dW`, so with lr = 1 the gradient is `W − W'`.
pub fn plain_sgd(m: &Module) -> Module {
    with_optimizer(m, 1.0, 0.0, 0.0, false)
}

/// A module from hand-written IR whose instructions are named instead of numbered:
/// `h = matmul_nt %x, %w0 : f32[2, 3]` lines; `%name` refers to an earlier line or an argument.
/// `params` are `name : type` lines (uniform(-1, 1) init, streams in order).
pub fn ir_module(params: &str, args: &str, body: &str, loss: &str, logits: &str) -> Module {
    let mut text = String::from(
        "sparsec-ir 2 stage=ir\nmodule t\ntrain epochs=1 batch=2 seed=3 log_every=1 \
         optimizer=sgd(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=false) schedule=constant\n\n",
    );
    for (i, p) in params
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        text += &format!("param @{p} init=uniform(-1.0, 1.0) stream={i} storage=dense\n");
    }
    let mut names: Vec<(String, String)> = Vec::new(); // (name, type)
    let mut insts = String::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, rest) = line.split_once('=').expect("`name = op ...`");
        let mut rest = format!(" {}", rest.trim());
        // Longest names first so `%h1` is not replaced inside `%h10`.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(names[i].0.len()));
        for i in order {
            rest = replace_value(&rest, &names[i].0, &format!("{i}"));
        }
        let ty = rest.rsplit_once(" : ").expect("a type").1.trim();
        let ty = ty.split("  loc(").next().unwrap().to_owned();
        insts += &format!("  %{} ={rest}\n", names.len());
        names.push((name.trim().to_owned(), ty));
    }
    let find = |n: &str| {
        names
            .iter()
            .position(|(m, _)| m == n)
            .unwrap_or_else(|| panic!("no value {n}"))
    };
    let (l, g) = (find(loss), find(logits));
    text += &format!(
        "\nfunc @forward({args}) -> ({}, {}) {{\n{insts}  return %{l}, %{g}\n}}\n",
        names[l].1, names[g].1
    );
    parse_module(&text).unwrap_or_else(|e| panic!("{}\n{text}", e.message))
}

/// Replace the value reference `%name` (a whole word) by `%new`.
fn replace_value(s: &str, name: &str, new: &str) -> String {
    let pat = format!("%{name}");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = &rest[i + pat.len()..];
        let boundary = !after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        out += &rest[..i];
        out += if boundary { "%" } else { &pat };
        if boundary {
            out += new;
        }
        rest = after;
    }
    out + rest
}

/// A small deterministic generator (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// One batch of inputs for `@forward`/`@train_step`: random x in [lo, hi), labels `i·7 mod C`.
pub struct Batch {
    pub x: Vec<f64>,
    pub labels: Vec<i32>,
}

impl Batch {
    pub fn random(m: &Module, rng: &mut Rng, lo: f64, hi: f64) -> Batch {
        let f = m.func("forward").expect("@forward");
        let n = f.args[0].ty.num_elements();
        let b = f.args[1].ty.shape[0];
        let logits = f.value_type(f.results[1]);
        let classes = logits.shape[1];
        Batch {
            x: rng.vec(n, lo, hi),
            labels: (0..b).map(|i| ((i * 7 + 1) % classes) as i32).collect(),
        }
    }
}

/// The loss of `@forward` at the given state.
pub fn loss(m: &Module, st: &State<f64>, batch: &Batch) -> f64 {
    let mut it = Interpreter::<f64>::new(m, "forward").expect("interpreter");
    let mut st = st.clone();
    let out = it
        .run(
            &mut st,
            &[Input::Float(&batch.x), Input::Int(&batch.labels)],
        )
        .expect("forward runs");
    out[0].as_float().expect("f32 loss").data[0]
}

/// Run `@train_step` once with the given learning rate; the stores are applied to `st`.
/// Returns the loss.
pub fn step(t: &Module, st: &mut State<f64>, batch: &Batch, lr: f64) -> f64 {
    let mut it = Interpreter::<f64>::new(t, "train_step").expect("interpreter");
    let out = it
        .run(
            st,
            &[
                Input::Float(&batch.x),
                Input::Int(&batch.labels),
                Input::Float(&[lr]),
            ],
        )
        .expect("train step runs");
    assert_eq!(out.len(), 2, "train step returns (loss, logits)");
    out[0].as_float().expect("f32 loss").data[0]
}

/// Indices of the weights (`Role::Weight`) of a module.
pub fn weights(m: &Module) -> Vec<usize> {
    (0..m.params.len())
        .filter(|&i| m.params[i].role == Role::Weight)
        .collect()
}
