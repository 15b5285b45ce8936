//! A seeded generator of random, well-typed IR modules (as text, so that a failing case can be
//! printed, saved as a `.ir` file and replayed with `sparsec emit --stage kernels`), and of
//! random MLP model files for the whole pipeline.
//!
//! The graphs are shaped after what the JIT's partitioner decides on: element-wise chains whose
//! operands are shared or scalars, products with `bias_add`/`relu` epilogues whose intermediate
//! values are sometimes read again, reductions over leading axes (JIT) and over other axes
//! (fallback), reshapes (aliases), stores to parameters with reads after them (deferred
//! stores), and dimensions of 1, odd sizes, and sizes past the thread-split and imported-GEMM
//! thresholds.
//!
//! Both generators draw from a [`Rng`]; the tests seed it with [`Rng::new`] (SplitMix64), and
//! a case is named by its seed.

use sparsec_ir::op::Unary;
use std::collections::HashSet;
use std::fmt::Write as _;

use crate::rng::Rng;

/// How big a random graph's tensors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Dimensions 1 to 3: degenerate loops, vector bodies that never run.
    Tiny,
    /// Odd and power-of-two dimensions up to 33: scalar tails of `f32x4` loops and of 8-column
    /// panels; products below the imported-GEMM threshold and above it.
    Small,
    /// Dimensions up to 257: chains, reductions and products that are split over two threads.
    Large,
}

impl Size {
    fn dims(self) -> &'static [usize] {
        match self {
            Size::Tiny => &[1, 1, 2, 3],
            Size::Small => &[1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 23, 31, 33, 41, 64],
            Size::Large => &[1, 9, 33, 67, 130, 257],
        }
    }

    /// The most elements one tensor may have.
    fn max_elems(self) -> usize {
        match self {
            Size::Tiny | Size::Small => 4096,
            Size::Large => 70_000,
        }
    }

    /// The most multiply-adds one product may take (the interpreter is the slow side).
    fn max_work(self) -> usize {
        match self {
            Size::Tiny | Size::Small => 80_000,
            Size::Large => 2_500_000,
        }
    }

    fn steps(self) -> (usize, usize) {
        match self {
            Size::Tiny | Size::Small => (4, 22),
            Size::Large => (4, 10),
        }
    }
}

pub fn type_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("f32[{}]", dims.join(", "))
}

#[derive(Clone, Debug)]
struct Val {
    name: String,
    shape: Vec<usize>,
}

struct Param {
    shape: Vec<usize>,
    zeros: bool,
    stored: bool,
}

struct Gen<'r> {
    rng: &'r mut Rng,
    size: Size,
    params: Vec<Param>,
    args: Vec<Vec<usize>>,
    lines: Vec<String>,
    pool: Vec<Val>,
    used: HashSet<String>,
    stores: HashSet<String>,
}

impl Gen<'_> {
    fn emit(&mut self, rhs: String, shape: Vec<usize>) -> String {
        let i = self.lines.len();
        self.lines
            .push(format!("  %{i} = {rhs} : {}", type_str(&shape)));
        let name = format!("%{i}");
        self.pool.push(Val {
            name: name.clone(),
            shape,
        });
        name
    }

    /// `v` as an operand (it is then not a sink to return).
    fn u(&mut self, v: &str) -> String {
        self.used.insert(v.to_owned());
        v.to_owned()
    }

    fn dim(&mut self) -> usize {
        self.rng.pick(self.size.dims())
    }

    fn shape(&mut self, rank: usize) -> Vec<usize> {
        loop {
            let s: Vec<usize> = (0..rank).map(|_| self.dim()).collect();
            if s.iter().product::<usize>() <= self.size.max_elems() {
                return s;
            }
        }
    }

    fn new_arg(&mut self, shape: &[usize]) -> String {
        self.args.push(shape.to_vec());
        let name = format!("%a{}", self.args.len() - 1);
        self.pool.push(Val {
            name: name.clone(),
            shape: shape.to_vec(),
        });
        name
    }

    fn read_param(&mut self, p: usize) -> String {
        let shape = self.params[p].shape.clone();
        self.emit(format!("param @p{p}"), shape)
    }

    fn new_param(&mut self, shape: &[usize]) -> usize {
        self.params.push(Param {
            shape: shape.to_vec(),
            zeros: shape.len() == 1 && self.rng.chance(0.3),
            stored: false,
        });
        self.params.len() - 1
    }

    /// A fresh value of `shape`: an argument, a parameter read or a constant.
    fn source(&mut self, shape: &[usize]) -> String {
        match self.rng.below(10) {
            0..=3 => self.new_arg(shape),
            4..=7 => {
                let same: Vec<usize> = (0..self.params.len())
                    .filter(|&p| self.params[p].shape == shape)
                    .collect();
                let p = if !same.is_empty() && self.rng.chance(0.5) {
                    self.rng.pick(&same)
                } else {
                    self.new_param(shape)
                };
                self.read_param(p)
            }
            _ => {
                let v = self.rng.pick(&[0.5f32, -1.25, 2.0, 0.0, -0.0, 0.1, 3.0]);
                self.emit(format!("const {v:?}"), shape.to_vec())
            }
        }
    }

    /// A value of `shape`: mostly one already computed (recent ones first, so that operands are
    /// shared and chains grow), else a fresh source.
    fn operand(&mut self, shape: &[usize]) -> String {
        let same: Vec<usize> = (0..self.pool.len())
            .filter(|&j| self.pool[j].shape == shape)
            .collect();
        if !same.is_empty() && self.rng.chance(0.7) {
            let j = if self.rng.chance(0.6) {
                same[same.len() - 1]
            } else {
                self.rng.pick(&same)
            };
            return self.pool[j].name.clone();
        }
        self.source(shape)
    }

    /// A recent value satisfying `ok`, or a fresh source of a random rank-2 shape.
    fn recent(&mut self, ok: impl Fn(&[usize]) -> bool) -> Val {
        let fits: Vec<usize> = (0..self.pool.len())
            .filter(|&j| ok(&self.pool[j].shape))
            .collect();
        if !fits.is_empty() && self.rng.chance(0.9) {
            let tail = &fits[fits.len().saturating_sub(4)..];
            let j = if self.rng.chance(0.7) {
                self.rng.pick(tail)
            } else {
                self.rng.pick(&fits)
            };
            return self.pool[j].clone();
        }
        let shape = loop {
            let s = self.shape(2);
            if ok(&s) {
                break s;
            }
        };
        let name = self.source(&shape);
        Val { name, shape }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=27 => self.binary(),
            28..=34 => self.relu(),
            35..=42 => self.scale(),
            43..=61 => self.matmul(),
            62..=65 => self.bias_add(),
            66..=72 => self.reduce(),
            73..=77 => self.reshape(),
            78..=81 => self.fallback(),
            82..=93 => self.store(),
            _ => self.scalar(),
        };
    }

    fn binary(&mut self) -> String {
        let x = self.recent(|s| !s.is_empty());
        let y = self.operand(&x.shape);
        // The arithmetic ops, and every activation's gradient op of the IR's table.
        let mut ops = vec!["add", "add", "sub", "mul"];
        ops.extend(Unary::activations().map(|u| u.grad_name()));
        let op = self.rng.pick(&ops);
        let (a, b) = if self.rng.chance(0.5) {
            (x.name, y)
        } else {
            (y, x.name)
        };
        let (a, b) = (self.u(&a), self.u(&b));
        self.emit(format!("{op} {a}, {b}"), x.shape)
    }

    /// An activation of the table (`relu` twice as often: products fuse it as an epilogue).
    fn relu(&mut self) -> String {
        let x = self.recent(|s| !s.is_empty());
        let a = self.u(&x.name);
        let mut ops = vec!["relu"];
        ops.extend(Unary::activations().map(|u| u.name()));
        let op = self.rng.pick(&ops);
        self.emit(format!("{op} {a}"), x.shape)
    }

    fn scalar_operand(&mut self) -> String {
        if self.rng.chance(0.2) {
            return self.scalar();
        }
        self.operand(&[])
    }

    fn scale(&mut self) -> String {
        let x = self.recent(|s| !s.is_empty());
        let s = self.scalar_operand();
        let (a, s) = (self.u(&x.name), self.u(&s));
        self.emit(format!("scale {a}, {s}"), x.shape)
    }

    /// A computed scalar: a one-element chain, or a full reduction (a fallback).
    fn scalar(&mut self) -> String {
        if self.rng.chance(0.5) {
            let a = self.operand(&[]);
            let b = self.operand(&[]);
            let op = self.rng.pick(&["add", "mul", "sub"]);
            let (a, b) = (self.u(&a), self.u(&b));
            self.emit(format!("{op} {a}, {b}"), vec![])
        } else {
            let x = self.recent(|s| !s.is_empty());
            let axes: Vec<String> = (0..x.shape.len()).map(|a| a.to_string()).collect();
            let a = self.u(&x.name);
            self.emit(
                format!("reduce_sum {a} {{axes=[{}]}}", axes.join(", ")),
                vec![],
            )
        }
    }

    fn bias_for(&mut self, n: usize) -> String {
        if self.rng.chance(0.2) {
            // An element-wise bias: scheduled lazily, it must still be ready before the
            // product whose epilogue adds it.
            let a = self.operand(&[n]);
            let b = self.operand(&[n]);
            let (a, b) = (self.u(&a), self.u(&b));
            return self.emit(format!("add {a}, {b}"), vec![n]);
        }
        self.operand(&[n])
    }

    fn matmul(&mut self) -> String {
        let x = self.recent(|s| s.len() == 2);
        let op = if self.rng.chance(0.1) {
            "matmul_tt"
        } else {
            self.rng.pick(&["matmul", "matmul_nt", "matmul_tn"])
        };
        let ta = matches!(op, "matmul_tn" | "matmul_tt");
        let tb = matches!(op, "matmul_nt" | "matmul_tt");
        let (m, k) = if ta {
            (x.shape[1], x.shape[0])
        } else {
            (x.shape[0], x.shape[1])
        };
        let size = self.size;
        let fits = |n: usize| m * n * k <= size.max_work() && m * n <= size.max_elems();
        let n = if self.rng.chance(0.25) {
            // As wide as allowed: products around and past the imported-GEMM threshold.
            let widest = size.dims().iter().copied().filter(|&n| fits(n)).max();
            widest.unwrap_or(1)
        } else {
            loop {
                let n = self.dim();
                if fits(n) || n == 1 {
                    break n;
                }
            }
        };
        let b_shape = if tb { vec![n, k] } else { vec![k, n] };
        let b = self.operand(&b_shape);
        let (a, b) = (self.u(&x.name), self.u(&b));
        let product = self.emit(format!("{op} {a}, {b}"), vec![m, n]);
        let mut stages = vec![product.clone()];
        let mut cur = product;
        if self.rng.chance(0.6) {
            let bias = self.bias_for(n);
            let (c, bias) = (self.u(&cur), self.u(&bias));
            cur = self.emit(format!("bias_add {c}, {bias}"), vec![m, n]);
            stages.push(cur.clone());
        }
        if self.rng.chance(0.6) {
            let c = self.u(&cur);
            cur = self.emit(format!("relu {c}"), vec![m, n]);
        }
        if stages.len() > 1 || cur != stages[0] {
            // An epilogue stage read again: the product or the biased sums leave registers too.
            if self.rng.chance(0.35) {
                let earlier = stages[self.rng.below(stages.len())].clone();
                let dy = self.operand(&[m, n]);
                let (dy, e) = (self.u(&dy), self.u(&earlier));
                self.emit(format!("relu_grad {dy}, {e}"), vec![m, n]);
            }
        }
        cur
    }

    fn bias_add(&mut self) -> String {
        let x = if self.rng.chance(0.5) {
            self.recent(|s| s.len() == 2)
        } else {
            let rank = self.rng.range(3, 4);
            let shape = self.shape(rank);
            let name = self.operand(&shape);
            Val { name, shape }
        };
        let bias = self.operand(&[x.shape[1]]);
        let (a, b) = (self.u(&x.name), self.u(&bias));
        self.emit(format!("bias_add {a}, {b}"), x.shape)
    }

    fn reduce(&mut self) -> String {
        let x = self.recent(|s| s.len() >= 2);
        let rank = x.shape.len();
        let axes: Vec<usize> = if self.rng.chance(0.75) {
            // Leading axes, not all: the JIT's row reduction.
            (0..self.rng.range(1, rank - 1)).collect()
        } else {
            let a = self.rng.range(1, rank - 1);
            vec![a]
        };
        let shape: Vec<usize> = (0..rank)
            .filter(|d| !axes.contains(d))
            .map(|d| x.shape[d])
            .collect();
        let list: Vec<String> = axes.iter().map(|a| a.to_string()).collect();
        let a = self.u(&x.name);
        self.emit(
            format!("reduce_sum {a} {{axes=[{}]}}", list.join(", ")),
            shape,
        )
    }

    fn reshape(&mut self) -> String {
        let x = self.recent(|s| !s.is_empty());
        let len: usize = x.shape.iter().product();
        let first = x.shape[0];
        let last = x.shape[x.shape.len() - 1];
        let mut options = vec![vec![len], vec![1, len], vec![len / last, last]];
        if first > 0 && x.shape.len() >= 2 {
            options.push(vec![first, len / first]);
        }
        if x.shape.len() < 4 {
            let mut s = x.shape.clone();
            s.push(1);
            options.push(s);
        }
        let target = self.rng.pick(&options.iter().collect::<Vec<_>>()).clone();
        let a = self.u(&x.name);
        self.emit(format!("reshape {a}"), target)
    }

    fn fallback(&mut self) -> String {
        let x = self.recent(|s| !s.is_empty());
        let op = self.rng.pick(&["tanh", "sigmoid"]);
        let a = self.u(&x.name);
        self.emit(format!("{op} {a}"), x.shape)
    }

    fn unstored(&mut self, shape: &[usize]) -> usize {
        let free: Vec<usize> = (0..self.params.len())
            .filter(|&p| !self.params[p].stored && self.params[p].shape == shape)
            .collect();
        if free.is_empty() {
            self.new_param(shape)
        } else {
            self.rng.pick(&free)
        }
    }

    fn store(&mut self) -> String {
        let value = match self.rng.below(10) {
            0..=3 => {
                // An SGD-like update of a parameter from its own value.
                let x = self.recent(|s| !s.is_empty());
                let p = self.unstored(&x.shape);
                let w = self.read_param(p);
                let lr = self.scalar_operand();
                let (g, lr) = (self.u(&x.name), self.u(&lr));
                let step = self.emit(format!("scale {g}, {lr}"), x.shape.clone());
                let (w, step) = (self.u(&w), self.u(&step));
                let w1 = self.emit(format!("sub {w}, {step}"), x.shape.clone());
                (p, w1)
            }
            4 => {
                // A parameter's own value stored into another (or itself): a copy.
                let x = self.recent(|s| !s.is_empty());
                let p = self.unstored(&x.shape);
                let same: Vec<usize> = (0..self.params.len())
                    .filter(|&q| self.params[q].shape == x.shape)
                    .collect();
                let q = self.rng.pick(&same);
                (p, self.read_param(q))
            }
            _ => {
                let x = self.recent(|s| !s.is_empty());
                (self.unstored(&x.shape), x.name)
            }
        };
        let (p, v) = value;
        self.params[p].stored = true;
        let shape = self.params[p].shape.clone();
        let v = self.u(&v);
        let stored = self.emit(format!("store @p{p}, {v}"), shape.clone());
        self.stores.insert(stored.clone());
        if self.rng.chance(0.5) {
            // Read after the store: still the value from before the call.
            let old = self.read_param(p);
            let (old, v) = (self.u(&old), self.u(&v));
            return self.emit(format!("sub {old}, {v}"), shape);
        }
        stored
    }

    fn finish(self, name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sparsec-ir 2 stage=opt\nmodule {name}\n");
        for (i, p) in self.params.iter().enumerate() {
            let init = if p.zeros {
                "zeros".to_owned()
            } else {
                "uniform(-1.0, 1.0)".to_owned()
            };
            let _ = writeln!(
                out,
                "param @p{i} : {} init={init} stream={i} storage=dense",
                type_str(&p.shape)
            );
        }
        let args: Vec<String> = self
            .args
            .iter()
            .enumerate()
            .map(|(i, s)| format!("%a{i}: {}", type_str(s)))
            .collect();
        // Every value nobody reads is returned, so that nothing is dead: each instruction then
        // has its kernel, and the kernel program can be checked against the instructions.
        let mut results: Vec<&Val> = self
            .pool
            .iter()
            .filter(|v| {
                !v.name.starts_with("%a")
                    && !self.used.contains(&v.name)
                    && !self.stores.contains(&v.name)
            })
            .collect();
        if results.is_empty() {
            results.extend(self.pool.last());
        }
        let types: Vec<String> = results.iter().map(|v| type_str(&v.shape)).collect();
        let names: Vec<&str> = results.iter().map(|v| v.name.as_str()).collect();
        let _ = writeln!(
            out,
            "\nfunc @f({}) -> ({}) {{",
            args.join(", "),
            types.join(", ")
        );
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "  return {}\n}}", names.join(", "));
        out
    }
}

/// A random module with one function `@f`, as IR text.
pub fn random_module(rng: &mut Rng, size: Size) -> String {
    let (lo, hi) = size.steps();
    let steps = rng.range(lo, hi);
    let mut g = Gen {
        rng,
        size,
        params: Vec::new(),
        args: Vec::new(),
        lines: Vec::new(),
        pool: Vec::new(),
        used: HashSet::new(),
        stores: HashSet::new(),
    };
    let first = if size == Size::Large {
        // Start from a tensor past the split threshold, so that the chains, reductions and
        // products that grow from it are too.
        vec![g.rng.pick(&[130, 257]), g.rng.pick(&[130, 257])]
    } else {
        g.shape(2)
    };
    let start = g.new_arg(&first);
    if size == Size::Large && g.rng.chance(0.5) {
        let a = g.u(&start);
        g.emit(format!("reduce_sum {a} {{axes=[0]}}"), vec![first[1]]);
    }
    for _ in 0..steps {
        g.step();
    }
    g.finish("random")
}

/// What a random model is, for reading a failure.
#[derive(Clone, Debug)]
pub struct ModelCase {
    pub source: String,
    pub classes: usize,
}

/// A random MLP model file: widths, batch, activations, residual additions, bias or not,
/// the optimiser's settings, and (`dropback`) a Dropback block with a random budget, scope,
/// layer selection, freezing and initial-value decay.
pub fn random_model(rng: &mut Rng, name: &str, dropback: bool, large: bool) -> ModelCase {
    let widths: &[usize] = if large {
        &[67, 130, 200]
    } else {
        &[1, 2, 3, 5, 8, 13, 17, 31]
    };
    let inputs: &[usize] = if large {
        &[150, 300]
    } else {
        &[1, 3, 7, 16, 33]
    };
    let batches: &[usize] = if large { &[33, 64] } else { &[1, 2, 3, 7, 16] };
    let classes = rng.pick(&[2usize, 3, 10]);
    let features = rng.pick(inputs);
    let batch = rng.pick(batches);
    let hidden = rng.range(1, 3);
    let mut net = String::new();
    let image = rng.chance(0.3) && features.is_multiple_of(3);
    let mut cur = if image {
        let _ = writeln!(net, "    input x: [3, 1, {}]", features / 3);
        let _ = writeln!(net, "    flat = flatten(x)");
        "flat".to_owned()
    } else {
        let _ = writeln!(net, "    input x: [{features}]");
        "x".to_owned()
    };
    let mut width = features;
    let mut layers: Vec<(String, usize)> = Vec::new();
    for l in 1..=hidden {
        // A residual addition needs the layer to keep its input's width.
        let residual = rng.chance(0.25) && l > 1;
        let out = if residual { width } else { rng.pick(widths) };
        let bias = rng.chance(0.8);
        let _ = writeln!(
            net,
            "    fc{l} = dense({cur}, {width} -> {out}{})",
            if bias { "" } else { ", bias: false" }
        );
        layers.push((format!("fc{l}"), out * width + if bias { out } else { 0 }));
        let act = rng.pick(&["relu", "relu", "relu", "tanh", "sigmoid"]);
        let _ = writeln!(net, "    h{l} = {act}(fc{l})");
        cur = format!("h{l}");
        if residual {
            let _ = writeln!(net, "    r{l} = add(h{l}, h{})", l - 1);
            cur = format!("r{l}");
        }
        width = out;
    }
    let last = hidden + 1;
    let _ = writeln!(net, "    fc{last} = dense({cur}, {classes})");
    layers.push((format!("fc{last}"), classes * width + classes));
    let _ = writeln!(net, "    loss softmax_cross_entropy(fc{last})");

    let (momentum, nesterov) = if dropback {
        (0.0, false)
    } else {
        match rng.below(3) {
            0 => (0.0, false),
            1 => (0.9, false),
            _ => (0.5, true),
        }
    };
    let wd = rng.pick(&[0.0, 0.0, 0.0005]);
    let mut source = format!(
        "model {name} {{\n{net}}}\n\ndata synthetic {{ train_samples: 64, test_samples: 16, seed: 3 }}\n\n\
         train {{\n    epochs: 2\n    batch: {batch}\n    seed: {}\n    \
         optimizer: sgd(lr: 0.1, momentum: {momentum:?}, weight_decay: {wd:?}, nesterov: {nesterov})\n}}\n",
        rng.below(1000)
    );
    if dropback {
        let mut chosen: Vec<&(String, usize)> = layers.iter().filter(|_| rng.chance(0.6)).collect();
        if chosen.is_empty() || rng.chance(0.3) {
            chosen = layers.iter().collect();
        }
        let selected: usize = chosen.iter().map(|(_, n)| n).sum();
        let on: Vec<&str> = if chosen.len() == layers.len() && rng.chance(0.5) {
            vec!["fc*"]
        } else {
            chosen.iter().map(|(l, _)| l.as_str()).collect()
        };
        // From one weight to every selected weight: nearly nothing tracked, or nothing ever
        // dropped.
        let k = match rng.below(4) {
            0 => rng.range(1, 3.min(selected)),
            1 => selected,
            _ => rng.range(1, selected),
        };
        let scope = rng.pick(&["global", "per_layer"]);
        let mut extra = String::new();
        if rng.chance(0.4) {
            extra.push_str("    freeze_after: 1\n");
        }
        if rng.chance(0.4) {
            extra.push_str("    decay_init: 0.9\n");
        }
        let _ = write!(
            source,
            "\nmethod dropback {{\n    k: {k}\n    scope: {scope}\n{extra}    on: [{}]\n}}\n",
            on.join(", ")
        );
    }
    ModelCase { source, classes }
}
