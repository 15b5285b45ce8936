//! Reverse-mode automatic differentiation and the SGD update: `@forward` becomes `@train_step`.
//!
//! ```text
//! func @forward(%x, %labels) -> (loss, logits)          (kept unchanged, for evaluation)
//! func @train_step(%x, %labels, %lr: f32[]) -> (loss, logits) {
//!   forward instructions, copied verbatim (same numbering)
//!   backward: one vector-Jacobian product per active instruction, in reverse order
//!   sgd: per trained weight, in parameter-table order: decay, momentum, `store`s
//! }
//! ```
//!
//! * **Activity.** An instruction is *active* when it depends on a weight (a `param` of a
//!   parameter with [`Role::Weight`]) and the loss depends on it through `f32` operands. Only
//!   active values get an adjoint, so nothing is computed for the data (`%x`, the first layer's
//!   input gradient), the labels, or values that do not reach the loss.
//! * **Adjoints** of a value used several times are collected in the order the consumers are
//!   differentiated (reverse instruction order, operands left to right) and summed left to right
//!   with `add`, when the value's own instruction is reached.
//! * **Rules** ([`vjp_rule`]) are one small function per op: given the forward instruction, its
//!   result and the result's adjoint, emit the operands' adjoints (only those asked for).
//!   An active instruction whose op has no rule is an error, never a panic.
//! * **Locations.** Backward instructions carry the `loc` of the forward instruction they
//!   differentiate; the update carries `loc(sgd)`.
//! * **Update** (PyTorch `torch.optim.SGD`, dampening 0): `g = dW + λ·W`; with momentum μ > 0,
//!   `buf' = μ·buf + g` (stored in the parameter `<W>.momentum`, zero-initialised, which equals
//!   PyTorch's first-step `buf = g`) and `g = nesterov ? g + μ·buf' : buf'`; then
//!   `W' = W − lr·g`. λ and μ are `const` scalars (f32), `lr` is the function's last argument so a
//!   runtime can apply schedules. Weights without a gradient get neither an update nor a buffer.

use std::collections::HashMap;

use sparsec_ir::func_names::{FORWARD, TRAIN_STEP};
use sparsec_ir::op::GradInput;
use sparsec_ir::spec::Optimizer;
use sparsec_ir::{
    DType, Func, Init, Inst, Module, Op, Param, ParamId, Role, Stage, Storage, Type, Value,
};

/// The location of the optimizer update's instructions.
pub const SGD_LOC: &str = "sgd";

/// The name of the momentum buffer of a weight (`fc1.weight.momentum`).
pub fn momentum_name(weight: &str) -> String {
    format!("{weight}.momentum")
}

/// Build the training step of a verified module whose `@forward(%x, %labels)` returns
/// `(loss: f32[], logits)`. The result is a clone at stage `train` with `@forward` unchanged, a new
/// `@train_step(%x, %labels, %lr: f32[]) -> (loss, logits)` and, when the optimizer has momentum,
/// one `<weight>.momentum` buffer per trained weight appended to the parameter table.
pub fn build_train_step(m: &Module) -> Result<Module, String> {
    let fail = |msg: String| format!("autodiff: {msg}");
    let forward = m
        .func(FORWARD)
        .ok_or_else(|| fail(format!("the module has no @{FORWARD} function")))?;
    if m.func(TRAIN_STEP).is_some() {
        return Err(fail(format!(
            "the module already has a @{TRAIN_STEP} function"
        )));
    }
    check_forward(forward).map_err(fail)?;
    let optimizer = match &m.train {
        Some(t) => t.optimizer.clone(),
        None => return Err(fail("the module has no training specification".into())),
    };
    for (what, v) in [
        ("lr", optimizer.lr),
        ("momentum", optimizer.momentum),
        ("weight_decay", optimizer.weight_decay),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(fail(format!(
                "optimizer {what} = {v} must be finite and ≥ 0"
            )));
        }
    }

    let mut out = m.clone();
    out.stage = Stage::Train;

    let mut func = Func::new(TRAIN_STEP);
    func.args = forward.args.clone();
    let lr_name = unique_arg_name(&func, "lr");
    let lr = func.add_arg(lr_name, Type::scalar_f32());
    // The forward computation, verbatim: instruction `%i` of @forward is `%i` here too.
    if forward.insts.iter().any(|i| matches!(i.op, Op::Store(_))) {
        return Err(fail(format!("@{FORWARD} must not store parameters")));
    }
    func.insts = forward.insts.clone();
    func.results = forward.results.clone();

    let grads = backward(&out.params, &mut func).map_err(fail)?;
    sgd_update(&mut out, &mut func, &grads, &optimizer, lr).map_err(fail)?;
    out.funcs.push(func);

    Ok(out)
}

/// `@forward(%x, %labels) -> (loss: f32[], logits)`.
fn check_forward(f: &Func) -> Result<(), String> {
    if f.args.len() != 2 || f.args[1].ty.dtype != DType::I32 {
        return Err(format!(
            "@{FORWARD} must take (%x, %labels: i32[B]), found {} argument(s)",
            f.args.len()
        ));
    }
    if f.results.len() != 2 {
        return Err(format!(
            "@{FORWARD} must return (loss, logits), found {} result(s)",
            f.results.len()
        ));
    }
    let loss_ty = f.value_type(f.results[0]);
    if *loss_ty != Type::scalar_f32() {
        return Err(format!("@{FORWARD}'s loss must be f32[], found {loss_ty}"));
    }
    Ok(())
}

fn unique_arg_name(f: &Func, base: &str) -> String {
    let taken = |n: &str| f.args.iter().any(|a| a.name == n);
    if !taken(base) {
        return base.to_owned();
    }
    (1..)
        .map(|i| format!("{base}{i}"))
        .find(|n| !taken(n))
        .expect("an unused name exists")
}

// ---------------------------------------------------------------------------------------------
// The backward pass
// ---------------------------------------------------------------------------------------------

/// An adjoint: the seed `1` of the loss (not materialised unless a rule needs it) or a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Adjoint {
    One,
    Value(Value),
}

/// The gradients of the trained weights, in the order their `param` reads were differentiated,
/// each with the first forward read of the weight (its old value, reused by the update).
struct Grads {
    by_param: Vec<(ParamId, Value, Value)>,
}

/// Whether a value flows into derivatives: `f32` operands do, `i32` ones (labels) do not.
fn differentiable(f: &Func, v: Value) -> bool {
    f.value_type(v).dtype == DType::F32
}

/// Append the backward pass of the forward instructions already in `func` (whose first result
/// is the loss) and return the weights' gradients.
fn backward(params: &[Param], func: &mut Func) -> Result<Grads, String> {
    let n = func.insts.len();
    let loss = match func.results[0] {
        Value::Inst(i) => i as usize,
        Value::Arg(_) => return Err("the loss does not depend on any weight".into()),
    };
    // Depends on a weight (forward sweep).
    let mut dep = vec![false; n];
    for (i, inst) in func.insts.iter().enumerate() {
        dep[i] = match inst.op {
            Op::Param(id) => params[id.0 as usize].role == Role::Weight,
            _ => inst.operands.iter().any(|&v| match v {
                Value::Inst(j) => dep[j as usize] && differentiable(func, v),
                Value::Arg(_) => false,
            }),
        };
    }
    // The loss depends on it (backward sweep through f32 operands).
    let mut live = vec![false; n];
    live[loss] = true;
    for i in (0..n).rev() {
        if !live[i] {
            continue;
        }
        for &v in &func.insts[i].operands {
            if let Value::Inst(j) = v {
                if differentiable(func, v) {
                    live[j as usize] = true;
                }
            }
        }
    }
    let active: Vec<bool> = (0..n).map(|i| dep[i] && live[i]).collect();
    if !active[loss] {
        return Err("the loss does not depend on any weight".into());
    }

    // Adjoint contributions per instruction, in the order they were produced.
    let mut contribs: Vec<Vec<Value>> = vec![Vec::new(); n];
    let mut grads: Vec<(ParamId, Vec<Value>, Value)> = Vec::new();
    let mut em = Emitter::new(params);

    for i in (0..n).rev() {
        if !active[i] {
            continue;
        }
        let inst = func.insts[i].clone();
        em.loc = inst.loc.clone();
        let dy = if i == loss {
            Adjoint::One
        } else {
            let terms = std::mem::take(&mut contribs[i]);
            match em.sum(func, &terms)? {
                Some(v) => Adjoint::Value(v),
                // Active values always receive an adjoint from an active consumer.
                None => continue,
            }
        };
        if let Op::Param(id) = inst.op {
            let dy = em.value(func, dy)?;
            let y = Value::Inst(i as u32);
            match grads.iter_mut().find(|g| g.0 == id) {
                // Several reads of one weight: the later read's value is the earlier one's twin;
                // keep the first read (they are processed in reverse, so this one is earlier).
                Some(g) => {
                    g.1.push(dy);
                    g.2 = y;
                }
                None => grads.push((id, vec![dy], y)),
            }
            continue;
        }
        let needs: Vec<bool> = inst
            .operands
            .iter()
            .map(|&v| match v {
                Value::Inst(j) => active[j as usize] && differentiable(func, v),
                Value::Arg(_) => false,
            })
            .collect();
        let rule = vjp_rule(&inst.op).ok_or_else(|| {
            format!(
                "`{}` (@{FORWARD} %{i}{}) lies on the path to the loss but has no derivative rule",
                inst.op.name(),
                inst.loc
                    .as_deref()
                    .map(|l| format!(", loc {l}"))
                    .unwrap_or_default()
            )
        })?;
        let site = Site {
            inst: &inst,
            y: Value::Inst(i as u32),
            dy,
            needs: &needs,
        };
        let d = rule(&mut em, func, &site).map_err(|e| {
            format!(
                "differentiating @{FORWARD} %{i} (`{}`): {e}",
                inst.op.name()
            )
        })?;
        for (k, &v) in inst.operands.iter().enumerate() {
            if let (Some(Some(dv)), Value::Inst(j)) = (d.get(k), v) {
                if needs[k] {
                    contribs[j as usize].push(*dv);
                }
            }
        }
    }

    // Several reads of one weight: sum their adjoints (rare; lowering reads each weight once).
    let mut by_param = Vec::new();
    for (id, terms, read) in grads {
        em.loc = func.insts[read_index(read)].loc.clone();
        let g = em.sum(func, &terms)?.expect("at least one term");
        by_param.push((id, g, read));
    }
    Ok(Grads { by_param })
}

fn read_index(v: Value) -> usize {
    match v {
        Value::Inst(i) => i as usize,
        Value::Arg(_) => unreachable!("parameter reads are instructions"),
    }
}

/// Appends instructions with one location and caches scalar constants per location.
pub struct Emitter<'a> {
    params: &'a [Param],
    loc: Option<String>,
    consts: HashMap<(u32, Option<String>), Value>,
}

impl<'a> Emitter<'a> {
    fn new(params: &'a [Param]) -> Self {
        Emitter {
            params,
            loc: None,
            consts: HashMap::new(),
        }
    }

    /// Append `op operands` (typed by [`Op::infer`]) at the current location.
    pub fn emit(&mut self, f: &mut Func, op: Op, operands: &[Value]) -> Result<Value, String> {
        f.push(self.params, op, operands, self.loc.as_deref())
    }

    /// A scalar `const`, shared by every use at the current location.
    pub fn scalar(&mut self, f: &mut Func, value: f32) -> Result<Value, String> {
        let key = (value.to_bits(), self.loc.clone());
        if let Some(&v) = self.consts.get(&key) {
            return Ok(v);
        }
        let v = self.emit(
            f,
            Op::Const {
                value,
                shape: Vec::new(),
            },
            &[],
        )?;
        self.consts.insert(key, v);
        Ok(v)
    }

    /// The adjoint as a value (the seed `1` becomes `const 1.0 : f32[]`).
    pub fn value(&mut self, f: &mut Func, a: Adjoint) -> Result<Value, String> {
        match a {
            Adjoint::Value(v) => Ok(v),
            Adjoint::One => self.scalar(f, 1.0),
        }
    }

    /// `((t0 + t1) + t2) + ...`, or `None` for no terms.
    fn sum(&mut self, f: &mut Func, terms: &[Value]) -> Result<Option<Value>, String> {
        let Some((&first, rest)) = terms.split_first() else {
            return Ok(None);
        };
        let mut acc = first;
        for &t in rest {
            acc = self.emit(f, Op::Add, &[acc, t])?;
        }
        Ok(Some(acc))
    }

    /// `reshape x` to `shape`, or `x` itself when it already has that shape.
    fn reshape(&mut self, f: &mut Func, x: Value, shape: &[usize]) -> Result<Value, String> {
        if f.value_type(x).shape == shape {
            return Ok(x);
        }
        self.emit(
            f,
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Derivative rules: one function per op
// ---------------------------------------------------------------------------------------------

/// What a derivative rule sees: the forward instruction, its result, the result's adjoint, and
/// which operands need an adjoint (only those should be computed).
pub struct Site<'a> {
    pub inst: &'a Inst,
    pub y: Value,
    pub dy: Adjoint,
    pub needs: &'a [bool],
}

impl Site<'_> {
    fn x(&self, k: usize) -> Value {
        self.inst.operands[k]
    }
    fn need(&self, k: usize) -> bool {
        self.needs[k]
    }
}

/// Operand adjoints, one per operand (`None`: not needed or not differentiable).
pub type Adjoints = Vec<Option<Value>>;

/// A vector-Jacobian product: emit the operands' adjoints of `site.inst` into the function.
pub type Rule = fn(&mut Emitter, &mut Func, &Site) -> Result<Adjoints, String>;

/// The derivative rule of an op, or `None` when it has none (`argmax`, the `*_grad` ops,
/// `store`). `param` and `const` have no operands; a `param`'s adjoint is its weight's gradient.
pub fn vjp_rule(op: &Op) -> Option<Rule> {
    Some(match op {
        Op::MatMul { .. } => vjp_matmul,
        Op::BiasAdd => vjp_bias_add,
        Op::Add => vjp_add,
        Op::Sub => vjp_sub,
        Op::Mul => vjp_mul,
        Op::Scale => vjp_scale,
        Op::Unary(_) => vjp_unary,
        Op::Reshape { .. } => vjp_reshape,
        Op::Conv2d { .. } => vjp_conv2d,
        Op::MaxPool2d { .. } => vjp_maxpool2d,
        Op::AvgPool2d { .. } => vjp_avgpool2d,
        Op::ReduceSum { .. } => vjp_reduce_sum,
        Op::SoftmaxXent => vjp_softmax_xent,
        Op::Param(_) | Op::Const { .. } => vjp_none,
        Op::Store(_)
        | Op::UnaryGrad(_)
        | Op::Conv2dInputGrad { .. }
        | Op::Conv2dWeightGrad { .. }
        | Op::MaxPool2dGrad { .. }
        | Op::AvgPool2dGrad { .. }
        | Op::SoftmaxXentGrad
        | Op::Argmax
        | Op::DropbackScore(_)
        | Op::TopkSelect { .. }
        | Op::DropbackApply { .. }
        | Op::TrackedSet(_)
        // The optimised forms appear only after autodiff.
        | Op::Regen(_)
        | Op::Tracked(_)
        | Op::Correction(_)
        | Op::Overlay
        | Op::MatMulNtWeight(_)
        | Op::MatMulWeight(_)
        | Op::DropbackScoreSgd(_)
        | Op::DropbackApplySgd { .. }
        | Op::DropbackScoreStream(_)
        | Op::DropbackUpdateSgd { .. }
        | Op::MaskIndex(_)
        | Op::MaskedMatMulNt(_)
        | Op::MaskedMatMul(_)
        | Op::MaskedGrad
        | Op::MaskedConv2d { .. }
        | Op::MaskedConv2dInputGrad { .. }
        | Op::MaskedConv2dWeightGrad { .. } => return None,
    })
}

fn mm(ta: bool, tb: bool) -> Op {
    Op::MatMul { ta, tb }
}

/// `c = op(a)·op(b)`:
/// `matmul`:    da = dc·bᵀ (`matmul_nt dc, b`), db = aᵀ·dc (`matmul_tn a, dc`);
/// `matmul_nt`: da = dc·b (`matmul dc, b`),     db = dcᵀ·a (`matmul_tn dc, a`);
/// `matmul_tn`: da = b·dcᵀ (`matmul_nt b, dc`), db = a·dc (`matmul a, dc`);
/// `matmul_tt`: da = bᵀ·dcᵀ (`matmul_tt b, dc`), db = dcᵀ·aᵀ (`matmul_tt dc, a`).
fn vjp_matmul(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::MatMul { ta, tb } = s.inst.op else {
        unreachable!()
    };
    let (a, b) = (s.x(0), s.x(1));
    let dc = em.value(f, s.dy)?;
    let (da, db) = match (ta, tb) {
        (false, false) => ((mm(false, true), [dc, b]), (mm(true, false), [a, dc])),
        (false, true) => ((mm(false, false), [dc, b]), (mm(true, false), [dc, a])),
        (true, false) => ((mm(false, true), [b, dc]), (mm(false, false), [a, dc])),
        (true, true) => ((mm(true, true), [b, dc]), (mm(true, true), [dc, a])),
    };
    let da = if s.need(0) {
        Some(em.emit(f, da.0, &da.1)?)
    } else {
        None
    };
    let db = if s.need(1) {
        Some(em.emit(f, db.0, &db.1)?)
    } else {
        None
    };
    Ok(vec![da, db])
}

/// `y = x + b` (b along axis 1): dx = dy, db = `reduce_sum dy` over every axis but 1.
fn vjp_bias_add(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    let db = if s.need(1) {
        let rank = f.value_type(dy).rank();
        let axes = (0..rank).filter(|&a| a != 1).collect();
        Some(em.emit(f, Op::ReduceSum { axes }, &[dy])?)
    } else {
        None
    };
    Ok(vec![Some(dy), db])
}

/// `y = a + b`: da = dy, db = dy.
fn vjp_add(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    Ok(vec![Some(dy), Some(dy)])
}

/// `y = a − b`: da = dy, db = `scale dy, -1`.
fn vjp_sub(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    let db = if s.need(1) {
        let neg = em.scalar(f, -1.0)?;
        Some(em.emit(f, Op::Scale, &[dy, neg])?)
    } else {
        None
    };
    Ok(vec![Some(dy), db])
}

/// `y = a · b`: da = `mul dy, b`, db = `mul dy, a`.
fn vjp_mul(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    let (a, b) = (s.x(0), s.x(1));
    let da = if s.need(0) {
        Some(em.emit(f, Op::Mul, &[dy, b])?)
    } else {
        None
    };
    let db = if s.need(1) {
        Some(em.emit(f, Op::Mul, &[dy, a])?)
    } else {
        None
    };
    Ok(vec![da, db])
}

/// `y = x · s` (s: f32[]): dx = `scale dy, s`; ds = `reduce_sum (mul dy, x)` over all axes
/// (only when `s` depends on a weight; a constant scalar gets nothing).
fn vjp_scale(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    let (x, k) = (s.x(0), s.x(1));
    let dx = if s.need(0) {
        Some(em.emit(f, Op::Scale, &[dy, k])?)
    } else {
        None
    };
    let dk = if s.need(1) {
        let p = em.emit(f, Op::Mul, &[dy, x])?;
        let rank = f.value_type(p).rank();
        Some(if rank == 0 {
            p
        } else {
            em.emit(
                f,
                Op::ReduceSum {
                    axes: (0..rank).collect(),
                },
                &[p],
            )?
        })
    } else {
        None
    };
    Ok(vec![dx, dk])
}

/// `y = act(x)` for an activation of the table (`sparsec_ir::op::Unary`): dx = `act_grad dy, v`, where `v` is
/// `x` or `y` as the table says (`relu_grad dy, x`, `tanh_grad dy, y`).
fn vjp_unary(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::Unary(u) = s.inst.op else {
        return Err(format!("the activation rule met `{}`", s.inst.op.name()));
    };
    let dy = em.value(f, s.dy)?;
    let v = match u.grad_reads() {
        GradInput::Input => s.x(0),
        GradInput::Output => s.y,
    };
    Ok(vec![Some(em.emit(f, Op::UnaryGrad(u), &[dy, v])?)])
}

/// `y = reshape x`: dx = `reshape dy` back to x's shape.
fn vjp_reshape(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let dy = em.value(f, s.dy)?;
    let shape = f.value_type(s.x(0)).shape.clone();
    Ok(vec![Some(em.reshape(f, dy, &shape)?)])
}

/// `y = conv2d(x, w)`: dx = `conv2d_input_grad dy, w {input=[H, W]}`,
/// dw = `conv2d_weight_grad x, dy {kernel=[KH, KW]}`.
fn vjp_conv2d(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::Conv2d { stride, padding } = s.inst.op else {
        unreachable!()
    };
    let dy = em.value(f, s.dy)?;
    let (x, w) = (s.x(0), s.x(1));
    let dx = if s.need(0) {
        let xs = &f.value_type(x).shape;
        let input = [xs[2], xs[3]];
        let op = Op::Conv2dInputGrad {
            stride,
            padding,
            input,
        };
        Some(em.emit(f, op, &[dy, w])?)
    } else {
        None
    };
    let dw = if s.need(1) {
        let ws = &f.value_type(w).shape;
        let kernel = [ws[2], ws[3]];
        let op = Op::Conv2dWeightGrad {
            stride,
            padding,
            kernel,
        };
        Some(em.emit(f, op, &[x, dy])?)
    } else {
        None
    };
    Ok(vec![dx, dw])
}

/// `y = maxpool2d(x)`: dx = `maxpool2d_grad dy, x`.
fn vjp_maxpool2d(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::MaxPool2d { kernel, stride } = s.inst.op else {
        unreachable!()
    };
    let dy = em.value(f, s.dy)?;
    let op = Op::MaxPool2dGrad { kernel, stride };
    Ok(vec![Some(em.emit(f, op, &[dy, s.x(0)])?)])
}

/// `y = avgpool2d(x)`: dx = `avgpool2d_grad dy {input=[H, W]}`.
fn vjp_avgpool2d(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::AvgPool2d { kernel, stride } = s.inst.op else {
        unreachable!()
    };
    let dy = em.value(f, s.dy)?;
    let xs = &f.value_type(s.x(0)).shape;
    let input = [xs[2], xs[3]];
    let op = Op::AvgPool2dGrad {
        kernel,
        stride,
        input,
    };
    Ok(vec![Some(em.emit(f, op, &[dy])?)])
}

/// `y = reduce_sum x {axes}`: dx broadcasts dy back. Expressible with the IR's ops when every
/// axis is reduced (`scale (const 1 : x's shape), dy`) or every axis but 1 is
/// (`bias_add (const 0 : x's shape), dy`); other reductions are an error.
fn vjp_reduce_sum(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let Op::ReduceSum { axes } = &s.inst.op else {
        unreachable!()
    };
    let dy = em.value(f, s.dy)?;
    let shape = f.value_type(s.x(0)).shape.clone();
    let rank = shape.len();
    if axes.is_empty() {
        return Ok(vec![Some(dy)]);
    }
    let dx = if axes.len() == rank {
        let ones = em.emit(f, Op::Const { value: 1.0, shape }, &[])?;
        em.emit(f, Op::Scale, &[ones, dy])?
    } else if rank >= 2 && axes.len() == rank - 1 && !axes.contains(&1) {
        let zeros = em.emit(f, Op::Const { value: 0.0, shape }, &[])?;
        em.emit(f, Op::BiasAdd, &[zeros, dy])?
    } else {
        return Err(format!(
            "no broadcast op expresses the gradient of `reduce_sum` over axes {axes:?} of rank {rank}"
        ));
    };
    Ok(vec![Some(dx)])
}

/// `loss = softmax_xent(logits, labels)`: dlogits = `softmax_xent_grad logits, labels` (times
/// the adjoint when it is not the seed 1); the labels get nothing.
fn vjp_softmax_xent(em: &mut Emitter, f: &mut Func, s: &Site) -> Result<Adjoints, String> {
    let g = em.emit(f, Op::SoftmaxXentGrad, &[s.x(0), s.x(1)])?;
    let dlogits = match s.dy {
        Adjoint::One => g,
        Adjoint::Value(dy) => em.emit(f, Op::Scale, &[g, dy])?,
    };
    Ok(vec![Some(dlogits), None])
}

/// Ops without operands.
fn vjp_none(_: &mut Emitter, _: &mut Func, s: &Site) -> Result<Adjoints, String> {
    Ok(vec![None; s.inst.operands.len()])
}

// ---------------------------------------------------------------------------------------------
// The SGD update
// ---------------------------------------------------------------------------------------------

fn sgd_update(
    m: &mut Module,
    func: &mut Func,
    grads: &Grads,
    opt: &Optimizer,
    lr: Value,
) -> Result<(), String> {
    // Parameter-table order, whatever order the backward pass found the gradients in.
    let mut order: Vec<&(ParamId, Value, Value)> = grads.by_param.iter().collect();
    order.sort_by_key(|g| g.0);

    // Momentum buffers first, so the parameter table is final before instructions are typed.
    let mut buffers = Vec::new();
    if opt.momentum as f32 != 0.0 {
        let mut stream = m.params.iter().map(|p| p.stream + 1).max().unwrap_or(0);
        for &&(w, _, _) in &order {
            let existing = m
                .params
                .iter()
                .position(|p| p.role == Role::Momentum(w))
                .map(|i| ParamId(i as u32));
            let buf = match existing {
                Some(b) => b,
                None => {
                    let weight = m.param(w).clone();
                    let name = momentum_name(&weight.name);
                    if m.param_by_name(&name).is_some() {
                        return Err(format!(
                            "cannot add the momentum buffer @{name}: the name is taken"
                        ));
                    }
                    let id = m.add_param(Param {
                        name,
                        ty: weight.ty.with_encoding(sparsec_ir::Encoding::Dense),
                        init: Init::Zeros,
                        stream,
                        storage: Storage::Dense,
                        role: Role::Momentum(w),
                    });
                    stream += 1;
                    id
                }
            };
            buffers.push(buf);
        }
    }

    let mut em = Emitter::new(&m.params);
    em.loc = Some(SGD_LOC.to_owned());
    // The hyper-parameters as f32 constants, once, at the top of the update.
    let (decay, momentum) = (opt.weight_decay as f32, opt.momentum as f32);
    let mut lambda = None;
    let mut mu = None;
    if !order.is_empty() {
        if decay != 0.0 {
            lambda = Some(em.scalar(func, decay)?);
        }
        if momentum != 0.0 {
            mu = Some(em.scalar(func, momentum)?);
        }
    }
    for (k, &&(w, dw, old)) in order.iter().enumerate() {
        // g = dW + λ·W
        let mut g = dw;
        if let Some(l) = lambda {
            let t = em.emit(func, Op::Scale, &[old, l])?;
            g = em.emit(func, Op::Add, &[g, t])?;
        }
        // A masked weight's update stays on its mask: g = g ⊙ M, so the momentum buffer stays
        // zero where the weight is pruned, and W' = (W − lr·g) ⊙ M below.
        let mask = match m.param(w).storage {
            Storage::Masked { .. } => {
                let id = m
                    .params
                    .iter()
                    .position(|p| p.role == Role::Mask(w))
                    .ok_or_else(|| format!("masked weight @{} has no mask", m.param(w).name))?;
                let mask = em.emit(func, Op::Param(ParamId(id as u32)), &[])?;
                g = em.emit(func, Op::Mul, &[g, mask])?;
                Some(mask)
            }
            _ => None,
        };
        if let Some(mu) = mu {
            // buf' = μ·buf + g; g = nesterov ? g + μ·buf' : buf'
            let buf = em.emit(func, Op::Param(buffers[k]), &[])?;
            let t = em.emit(func, Op::Scale, &[buf, mu])?;
            let new_buf = em.emit(func, Op::Add, &[t, g])?;
            em.emit(func, Op::Store(buffers[k]), &[new_buf])?;
            g = if opt.nesterov {
                let t = em.emit(func, Op::Scale, &[new_buf, mu])?;
                em.emit(func, Op::Add, &[g, t])?
            } else {
                new_buf
            };
        }
        // W' = W − lr·g
        let step = em.emit(func, Op::Scale, &[g, lr])?;
        let mut new_w = em.emit(func, Op::Sub, &[old, step])?;
        if let Some(mask) = mask {
            new_w = em.emit(func, Op::Mul, &[new_w, mask])?;
        }
        em.emit(func, Op::Store(w), &[new_w])?;
    }
    Ok(())
}
