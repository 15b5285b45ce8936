//! Partitioning a function of the optimised graph into fused kernels ([`partition`]).
//!
//! 1. **Nodes.** Every instruction becomes a node; the optimised Dropback forms are spelled
//!    out as the computation the interpreter runs for them (`dropback_score_sgd` is
//!    `|(W − (dyᵀx)·lr) − w0|`, and `dropback_apply_sgd` shares that `W − (dyᵀx)·lr`), a
//!    tracked parameter's initial value `w0` and effective value `W` are one node each per
//!    function, `reshape` and `store` are aliases.
//! 2. **Schedule.** Compute nodes (products, reductions, Dropback ops, fallbacks) keep their
//!    order; element-wise nodes are placed lazily, just before their first user, so that an
//!    update like `0.9·m + g` waits for `g` and fuses with it (parameters are read as they were
//!    at the call, so the order of reads does not matter).
//! 3. **Group.** A `bias_add` (dense layer) and then a `relu` whose operand is a product's
//!    latest value join the product's epilogue; an element-wise node joins the element-wise
//!    chain that produced its latest operand when the lengths match (every other operand is
//!    then ready when that chain runs); anything else starts a kernel. `topk_select` is a
//!    barrier: it needs every score.
//! 4. **Materialise.** A value gets a buffer only when a later kernel, a store or a result
//!    reads it; a product's raw sums that only its epilogue uses never leave registers.
//!
//! Step 1 is this file; steps 2 to 4 are `partition/program.rs`.

mod program;

use std::collections::HashMap;

use sparsec_ir::interp::{conv_geom_of, is_tracked, pool_geom_of};
use sparsec_ir::module::{Init, MEMORY_BUDGET_HEADER};
use sparsec_ir::{DType, Module, Op, Value};

use crate::codegen::chain::EwOp;
use crate::codegen::conv::{ConvPass, ConvSpec};
use crate::codegen::gemm::Layout;
use crate::codegen::pool::PoolSpec;
use crate::codegen::softmax::SoftmaxSpec;
use crate::kernel_ir::{KernelProgram, MaskedOp};
use program::build_program;
use sparsec_ir::interp::masked::{ConvKind, MaskedDims};
use sparsec_ir::interp::ConvGeom;

#[derive(Clone, Debug, PartialEq)]
enum Nk {
    Arg(usize),
    Param(usize),
    Const(f32),
    W0(usize),
    Eff(usize),
    TrackedVals(usize),
    Correction(usize),
    Gemm {
        layout: Layout,
        m: usize,
        n: usize,
        k: usize,
    },
    GemmRegen {
        p: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    Ew(EwOp),
    BiasAdd {
        inner: usize,
    },
    ReduceRows {
        rows: usize,
        cols: usize,
    },
    Apply {
        offset: usize,
    },
    /// `dropback_score_sgd` of a tracked weight `[m, n]` over a batch of `k`.
    GradScore {
        p: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    /// `dropback_apply_sgd`.
    GradApply {
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    Topk {
        k: usize,
    },
    /// `matmul_weight` of a tracked weight `[k, n]` regenerated panel by panel: `[m, k]·W`.
    WeightStream {
        p: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    /// `dropback_score_stream`: never a kernel or a buffer of its own; the selection reading
    /// it takes its operands and remakes it.
    ScoreStream {
        p: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    /// `topk_select` over some streamed scores: per operand, `Some(p, m, n, k)` for a streamed
    /// one (taking three of `ops`: `dy`, `x`, `lr`), `None` for a stored one (one of `ops`).
    TopkStream {
        k: usize,
        sources: Vec<Option<(usize, usize, usize, usize)>>,
    },
    /// `dropback_update_sgd`: the new tracked entries of `p` (a sparse node).
    GradUpdate {
        p: usize,
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
    },
    TrackedSet(usize),
    MaskIndex {
        nnz: usize,
    },
    Masked {
        kind: MaskedOp,
        dims: MaskedDims,
    },
    MaskedConv {
        kind: ConvKind,
        geom: ConvGeom,
    },
    Copy,
    ReduceChannels {
        outer: usize,
        channels: usize,
        inner: usize,
    },
    Softmax(SoftmaxSpec),
    MaxPool(PoolSpec),
    Conv(ConvSpec),
    /// `conv2d_weight_grad` (the interpreter's kernel, on the host).
    ConvWeightGrad(ConvGeom),
    Interp {
        op: Op,
        shapes: Vec<Vec<usize>>,
        out_shape: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
struct Node {
    kind: Nk,
    ops: Vec<usize>,
    len: usize,
    dtype: DType,
    sparse: bool,
    name: String,
    inst: Option<usize>,
}

impl Node {
    fn free(&self) -> bool {
        matches!(self.kind, Nk::Arg(_) | Nk::Param(_) | Nk::Const(_))
    }

    fn lazy(&self) -> bool {
        matches!(
            self.kind,
            Nk::Arg(_) | Nk::Param(_) | Nk::Const(_) | Nk::Ew(_) | Nk::W0(_) | Nk::Eff(_)
        )
    }
}

struct Builder<'m> {
    m: &'m Module,
    nodes: Vec<Node>,
    params: HashMap<usize, usize>,
    w0: HashMap<usize, usize>,
    eff: HashMap<usize, usize>,
    /// Whether a product may read a tracked weight's effective value, kept (with its `w0`)
    /// from run to run, instead of remaking it inside its tiles: when the module was compiled
    /// without a memory budget.
    keep_weights: bool,
}

impl Builder<'_> {
    fn push(
        &mut self,
        kind: Nk,
        ops: Vec<usize>,
        len: usize,
        name: String,
        inst: Option<usize>,
    ) -> usize {
        self.nodes.push(Node {
            kind,
            ops,
            len,
            dtype: DType::F32,
            sparse: false,
            name,
            inst,
        });
        self.nodes.len() - 1
    }

    fn pname(&self, p: usize) -> &str {
        &self.m.params[p].name
    }

    fn plen(&self, p: usize) -> usize {
        self.m.params[p].ty.num_elements()
    }

    fn param(&mut self, p: usize) -> usize {
        if let Some(&n) = self.params.get(&p) {
            return n;
        }
        let name = format!("@{}", self.pname(p));
        let n = self.push(Nk::Param(p), vec![], self.plen(p), name, None);
        self.params.insert(p, n);
        n
    }

    fn w0(&mut self, p: usize, inst: usize) -> usize {
        if let Some(&n) = self.w0.get(&p) {
            return n;
        }
        let name = format!("w0(@{})", self.pname(p));
        let n = self.push(Nk::W0(p), vec![], self.plen(p), name, Some(inst));
        self.w0.insert(p, n);
        n
    }

    /// The effective value of parameter `p`: its state buffer, or (tracked) `w0` overlaid.
    fn weight(&mut self, p: usize, inst: usize) -> usize {
        if !is_tracked(&self.m.params[p]) {
            return self.param(p);
        }
        if let Some(&n) = self.eff.get(&p) {
            return n;
        }
        let w0 = self.w0(p, inst);
        let name = format!("w(@{})", self.pname(p));
        let n = self.push(Nk::Eff(p), vec![w0], self.plen(p), name, Some(inst));
        self.eff.insert(p, n);
        n
    }

    /// The weight-gradient product `[m, n]` over a batch of `batch` for the 2-D parameter `p`.
    fn grad_dims(&self, p: usize, batch: usize) -> Result<(usize, usize, usize), String> {
        match self.m.params[p].ty.shape[..] {
            [m, n] => Ok((m, n, batch)),
            _ => Err(format!(
                "internal: the fused Dropback gradient of @{} needs a matrix",
                self.pname(p)
            )),
        }
    }
}

/// Partition function `func` of `m` into kernels.
pub fn partition(m: &Module, func: &str) -> Result<KernelProgram, String> {
    let f = m
        .func(func)
        .ok_or_else(|| format!("no function @{func} in the module"))?;
    let mut b = Builder {
        m,
        nodes: Vec::new(),
        params: HashMap::new(),
        w0: HashMap::new(),
        eff: HashMap::new(),
        keep_weights: m.header.iter().all(|(key, _)| key != MEMORY_BUDGET_HEADER),
    };
    let mut args = Vec::new();
    for (i, a) in f.args.iter().enumerate() {
        let n = b.push(
            Nk::Arg(i),
            vec![],
            a.ty.num_elements(),
            format!("%{}", a.name),
            None,
        );
        b.nodes[n].dtype = a.ty.dtype;
        args.push(n);
    }
    let mut val: Vec<usize> = Vec::with_capacity(f.insts.len());
    let mut stores: Vec<(usize, usize)> = Vec::new();
    let mut store_w0: Vec<(usize, usize)> = Vec::new();
    for (i, inst) in f.insts.iter().enumerate() {
        let here = |e: String| format!("@{func} %{i}: {e}");
        let ops: Vec<usize> = inst
            .operands
            .iter()
            .map(|&v| match v {
                Value::Arg(a) => args
                    .get(a as usize)
                    .copied()
                    .ok_or_else(|| here("bad operand".into())),
                Value::Inst(j) => val
                    .get(j as usize)
                    .copied()
                    .ok_or_else(|| here("bad operand".into())),
            })
            .collect::<Result<_, _>>()?;
        let shape_of = |v: Value| f.value_type(v).shape.clone();
        let out_shape = inst.ty.shape.clone();
        let len = inst.ty.num_elements();
        let name = format!("%{i}");
        let ew = |b: &mut Builder<'_>, op: EwOp, ops: Vec<usize>| {
            b.push(Nk::Ew(op), ops, len, name.clone(), Some(i))
        };
        let node = match &inst.op {
            Op::Param(id) => b.weight(id.0 as usize, i),
            Op::Store(id) => {
                let p = id.0 as usize;
                let mut v = ops[0];
                if matches!(b.nodes[v].kind, Nk::Param(_)) {
                    v = b.push(Nk::Copy, vec![v], len, name.clone(), Some(i));
                }
                // Entries (`dropback_update_sgd`) are stored as they are; a dense value keeps
                // the positions where it differs from `w0`.
                if is_tracked(&m.params[p]) && !matches!(b.nodes[v].kind, Nk::GradUpdate { .. }) {
                    let w0 = b.w0(p, i);
                    store_w0.push((p, w0));
                }
                stores.push((p, v));
                v
            }
            Op::Const { value, .. } => {
                b.push(Nk::Const(*value), vec![], len, name.clone(), Some(i))
            }
            Op::Reshape { .. } => ops[0],
            Op::Regen(id) => b.w0(id.0 as usize, i),
            Op::Tracked(id) => b.push(
                Nk::TrackedVals(id.0 as usize),
                vec![],
                len,
                name.clone(),
                Some(i),
            ),
            Op::Correction(id) => {
                let w0 = b.w0(id.0 as usize, i);
                b.push(
                    Nk::Correction(id.0 as usize),
                    vec![w0],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::Overlay => {
                let p = match inst.operands[1] {
                    Value::Inst(j) => match f.insts[j as usize].op {
                        Op::Tracked(p) => p.0 as usize,
                        _ => {
                            return Err(here(
                                "`overlay` needs `tracked @p` as its second operand".into(),
                            ))
                        }
                    },
                    Value::Arg(_) => {
                        return Err(here(
                            "`overlay` needs `tracked @p` as its second operand".into(),
                        ))
                    }
                };
                b.weight(p, i)
            }
            Op::MatMul { ta, tb } => {
                let a = shape_of(inst.operands[0]);
                let k = if *ta { a[0] } else { a[1] };
                let layout = match (ta, tb) {
                    (false, false) => Some(Layout::Nn),
                    (false, true) => Some(Layout::Nt),
                    (true, false) => Some(Layout::Tn),
                    (true, true) => None,
                };
                match layout {
                    Some(layout) => b.push(
                        Nk::Gemm {
                            layout,
                            m: out_shape[0],
                            n: out_shape[1],
                            k,
                        },
                        ops,
                        len,
                        name.clone(),
                        Some(i),
                    ),
                    None => interp(&mut b, inst, &ops, f, len, &name, i),
                }
            }
            Op::MatMulNtWeight(id) => {
                let p = id.0 as usize;
                let ws = m.params[p].ty.shape.clone();
                let (mm, n, k) = (out_shape[0], out_shape[1], ws[1]);
                let regenerated = is_tracked(&m.params[p])
                    && matches!(m.params[p].init, Init::Uniform { .. })
                    && !b.keep_weights;
                if regenerated {
                    b.push(
                        Nk::GemmRegen { p, m: mm, n, k },
                        ops,
                        len,
                        name.clone(),
                        Some(i),
                    )
                } else {
                    let w = b.weight(p, i);
                    b.push(
                        Nk::Gemm {
                            layout: Layout::Nt,
                            m: mm,
                            n,
                            k,
                        },
                        vec![ops[0], w],
                        len,
                        name.clone(),
                        Some(i),
                    )
                }
            }
            Op::MatMulWeight(id)
                if is_tracked(&m.params[id.0 as usize])
                    && matches!(m.params[id.0 as usize].init, Init::Uniform { .. }) =>
            {
                let p = id.0 as usize;
                b.push(
                    Nk::WeightStream {
                        p,
                        m: out_shape[0],
                        n: out_shape[1],
                        k: m.params[p].ty.shape[0],
                    },
                    ops,
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::MatMulWeight(id) => {
                let p = id.0 as usize;
                let k = m.params[p].ty.shape[0];
                let w = b.weight(p, i);
                b.push(
                    Nk::Gemm {
                        layout: Layout::Nn,
                        m: out_shape[0],
                        n: out_shape[1],
                        k,
                    },
                    vec![ops[0], w],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::DropbackScore(id) => {
                let w0 = b.w0(id.0 as usize, i);
                ew(&mut b, EwOp::AbsDiff, vec![ops[0], w0])
            }
            Op::DropbackScoreSgd(id) => {
                let p = id.0 as usize;
                let (mm, nn, kk) = b.grad_dims(p, shape_of(inst.operands[0])[0])?;
                let w = b.weight(p, i);
                let w0 = b.w0(p, i);
                b.push(
                    Nk::GradScore {
                        p,
                        m: mm,
                        n: nn,
                        k: kk,
                    },
                    vec![ops[0], ops[1], ops[2], w, w0],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::DropbackApplySgd { param, offset } => {
                let p = param.0 as usize;
                let (mm, nn, kk) = b.grad_dims(p, shape_of(inst.operands[0])[0])?;
                let w = b.weight(p, i);
                let w0 = b.w0(p, i);
                b.push(
                    Nk::GradApply {
                        offset: *offset as usize,
                        m: mm,
                        n: nn,
                        k: kk,
                    },
                    vec![ops[0], ops[1], ops[2], w, ops[3], w0],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::DropbackScoreStream(id) => {
                let p = id.0 as usize;
                let (mm, nn, kk) = b.grad_dims(p, shape_of(inst.operands[0])[0])?;
                b.push(
                    Nk::ScoreStream {
                        p,
                        m: mm,
                        n: nn,
                        k: kk,
                    },
                    ops,
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::DropbackUpdateSgd { param, offset } => {
                let p = param.0 as usize;
                let (mm, nn, kk) = b.grad_dims(p, shape_of(inst.operands[0])[0])?;
                let capacity = match inst.ty.encoding {
                    sparsec_ir::Encoding::Sparse { capacity } => capacity as usize,
                    _ => return Err(here("`dropback_update_sgd` makes entries".into())),
                };
                let n = b.push(
                    Nk::GradUpdate {
                        p,
                        offset: *offset as usize,
                        m: mm,
                        n: nn,
                        k: kk,
                    },
                    ops,
                    capacity,
                    name.clone(),
                    Some(i),
                );
                b.nodes[n].sparse = true;
                n
            }
            Op::TopkSelect { k }
                if ops
                    .iter()
                    .any(|&o| matches!(b.nodes[o].kind, Nk::ScoreStream { .. })) =>
            {
                let mut sources = Vec::new();
                let mut reads = Vec::new();
                for &o in &ops {
                    match b.nodes[o].kind {
                        Nk::ScoreStream {
                            p,
                            m: mm,
                            n: nn,
                            k: kk,
                        } => {
                            sources.push(Some((p, mm, nn, kk)));
                            reads.extend_from_slice(&b.nodes[o].ops);
                        }
                        _ => {
                            sources.push(None);
                            reads.push(o);
                        }
                    }
                }
                let n = b.push(
                    Nk::TopkStream {
                        k: usize::try_from(*k).unwrap_or(usize::MAX),
                        sources,
                    },
                    reads,
                    len,
                    name.clone(),
                    Some(i),
                );
                b.nodes[n].dtype = DType::I32;
                b.nodes[n].sparse = true;
                n
            }
            Op::DropbackApply { param, offset } => {
                let w0 = b.w0(param.0 as usize, i);
                b.push(
                    Nk::Apply {
                        offset: *offset as usize,
                    },
                    vec![ops[0], ops[1], w0],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::TopkSelect { k } => {
                let n = b.push(
                    Nk::Topk {
                        k: usize::try_from(*k).unwrap_or(usize::MAX),
                    },
                    ops,
                    len,
                    name.clone(),
                    Some(i),
                );
                b.nodes[n].dtype = DType::I32;
                b.nodes[n].sparse = true;
                n
            }
            Op::TrackedSet(id) => {
                let n = b.push(
                    Nk::TrackedSet(id.0 as usize),
                    vec![],
                    len,
                    name.clone(),
                    Some(i),
                );
                b.nodes[n].dtype = DType::I32;
                b.nodes[n].sparse = true;
                n
            }
            Op::MaskIndex(id) => {
                let mask = b.param(id.0 as usize);
                let nnz = match inst.ty.encoding {
                    sparsec_ir::Encoding::Sparse { capacity } => capacity as usize,
                    _ => return Err(here("`mask_index` must be sparse".into())),
                };
                let n = b.push(
                    Nk::MaskIndex { nnz },
                    vec![mask],
                    len,
                    name.clone(),
                    Some(i),
                );
                b.nodes[n].dtype = DType::I32;
                b.nodes[n].sparse = true;
                n
            }
            Op::MaskedMatMulNt(id) | Op::MaskedMatMul(id) => {
                let p = id.0 as usize;
                let w = b.param(p);
                let ws = &m.params[p].ty.shape;
                let dims = MaskedDims {
                    b: shape_of(inst.operands[0])[0],
                    o: ws[0],
                    i: ws[1],
                };
                let kind = if matches!(inst.op, Op::MaskedMatMulNt(_)) {
                    MaskedOp::Nt
                } else {
                    MaskedOp::Nn
                };
                b.push(
                    Nk::Masked { kind, dims },
                    vec![w, ops[0], ops[1]],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::MaskedConv2d { param, .. } | Op::MaskedConv2dInputGrad { param, .. } => {
                let p = param.0 as usize;
                let w = b.param(p);
                let dense = inst
                    .op
                    .dense_conv()
                    .ok_or_else(|| here("internal".into()))?;
                let shapes = [shape_of(inst.operands[0]), m.params[p].ty.shape.clone()];
                let geom = conv_geom_of(&dense, &[&shapes[0], &shapes[1]], &out_shape)
                    .ok_or_else(|| here("a masked convolution needs 4-d operands".into()))?;
                let kind = match inst.op {
                    Op::MaskedConv2d { .. } => ConvKind::Forward,
                    _ => ConvKind::InputGrad,
                };
                b.push(
                    Nk::MaskedConv { kind, geom },
                    vec![ops[0], w, ops[1]],
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::MaskedConv2dWeightGrad { .. } => {
                let dense = inst
                    .op
                    .dense_conv()
                    .ok_or_else(|| here("internal".into()))?;
                let shapes = [shape_of(inst.operands[0]), shape_of(inst.operands[1])];
                let geom = conv_geom_of(&dense, &[&shapes[0], &shapes[1]], &out_shape)
                    .ok_or_else(|| here("a masked convolution needs 4-d operands".into()))?;
                b.push(
                    Nk::MaskedConv {
                        kind: ConvKind::WeightGrad,
                        geom,
                    },
                    ops,
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::MaskedGrad => {
                let (dy, x) = (shape_of(inst.operands[0]), shape_of(inst.operands[1]));
                let dims = MaskedDims {
                    b: dy[0],
                    o: dy[1],
                    i: x[1],
                };
                b.push(
                    Nk::Masked {
                        kind: MaskedOp::Grad,
                        dims,
                    },
                    ops,
                    len,
                    name.clone(),
                    Some(i),
                )
            }
            Op::BiasAdd => {
                let inner = shape_of(inst.operands[0])[2..].iter().product();
                b.push(Nk::BiasAdd { inner }, ops, len, name.clone(), Some(i))
            }
            Op::Add => ew(&mut b, EwOp::Add, ops),
            Op::Sub => ew(&mut b, EwOp::Sub, ops),
            Op::Mul => ew(&mut b, EwOp::Mul, ops),
            Op::Scale => ew(&mut b, EwOp::Scale, ops),
            &Op::Unary(u) => ew(&mut b, EwOp::Unary(u), ops),
            &Op::UnaryGrad(u) => ew(&mut b, EwOp::UnaryGrad(u), ops),
            Op::ReduceSum { axes } => {
                let s = shape_of(inst.operands[0]);
                let r = axes.len();
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                if sorted.iter().copied().eq(0..r) && r < s.len() {
                    let rows = s[..r].iter().product();
                    let cols = s[r..].iter().product();
                    b.push(
                        Nk::ReduceRows { rows, cols },
                        ops,
                        len,
                        name.clone(),
                        Some(i),
                    )
                } else if let Some((outer, channels, inner)) = channel_reduction(&s, axes)
                    .filter(|&(_, _, inner)| crate::codegen::chain::channel_planes_fit(inner))
                {
                    b.push(
                        Nk::ReduceChannels {
                            outer,
                            channels,
                            inner,
                        },
                        ops,
                        len,
                        name.clone(),
                        Some(i),
                    )
                } else {
                    interp(&mut b, inst, &ops, f, len, &name, i)
                }
            }
            Op::SoftmaxXent | Op::SoftmaxXentGrad => {
                let s = shape_of(inst.operands[0]);
                match s[..] {
                    [rows, classes] if rows > 0 && classes > 0 => b.push(
                        Nk::Softmax(SoftmaxSpec {
                            rows,
                            classes,
                            grad: inst.op == Op::SoftmaxXentGrad,
                        }),
                        ops,
                        len,
                        name.clone(),
                        Some(i),
                    ),
                    _ => interp(&mut b, inst, &ops, f, len, &name, i),
                }
            }
            Op::MaxPool2d { .. } | Op::MaxPool2dGrad { .. } => {
                let shapes: Vec<Vec<usize>> = inst.operands.iter().map(|&v| shape_of(v)).collect();
                match pool_spec(&inst.op, &shapes, &out_shape) {
                    Some(spec) if spec.fits() => {
                        b.push(Nk::MaxPool(spec), ops, len, name.clone(), Some(i))
                    }
                    _ => interp(&mut b, inst, &ops, f, len, &name, i),
                }
            }
            Op::Conv2dWeightGrad { .. } => {
                let shapes: Vec<Vec<usize>> = inst.operands.iter().map(|&v| shape_of(v)).collect();
                let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
                match conv_geom_of(&inst.op, &shapes, &out_shape) {
                    Some(geom) => b.push(Nk::ConvWeightGrad(geom), ops, len, name.clone(), Some(i)),
                    None => interp(&mut b, inst, &ops, f, len, &name, i),
                }
            }
            Op::Conv2d { .. } | Op::Conv2dInputGrad { .. } => {
                let shapes: Vec<Vec<usize>> = inst.operands.iter().map(|&v| shape_of(v)).collect();
                match conv_spec(&inst.op, &shapes, &out_shape) {
                    Some(spec) if spec.fits() => {
                        b.push(Nk::Conv(spec), ops, len, name.clone(), Some(i))
                    }
                    _ => interp(&mut b, inst, &ops, f, len, &name, i),
                }
            }
            _ => interp(&mut b, inst, &ops, f, len, &name, i),
        };
        // A sparse value's node holds its entries: as many as its type's capacity.
        if let sparsec_ir::Encoding::Sparse { capacity } = inst.ty.encoding {
            if b.nodes[node].sparse && b.nodes[node].inst == Some(i) {
                b.nodes[node].len = usize::try_from(capacity).unwrap_or(usize::MAX);
            }
        }
        val.push(node);
    }
    let results: Vec<usize> = f
        .results
        .iter()
        .map(|&v| match v {
            Value::Arg(a) => args[a as usize],
            Value::Inst(j) => val[j as usize],
        })
        .collect();
    // A tracked weight whose effective value this function builds anyway (for its Dropback
    // score or a data gradient, or because no memory budget asks for its weights to stream)
    // is read from that buffer by its forward product too, instead
    // of being regenerated a second time inside the product's tiles: the same values, so the
    // same bits, and one ChaCha8 pass per step instead of two.
    // Likewise its data-gradient product `dy · W` and its update, instead of remaking the
    // weight per panel.
    for n in 0..b.nodes.len() {
        let (p, layout, mm, nn, k) = match b.nodes[n].kind {
            Nk::GemmRegen { p, m, n, k } => (p, Layout::Nt, m, n, k),
            Nk::WeightStream { p, m, n, k } => (p, Layout::Nn, m, n, k),
            Nk::GradUpdate { p, .. } => {
                if let (Some(&eff), Some(&w0)) = (b.eff.get(&p), b.w0.get(&p)) {
                    b.nodes[n].ops.extend([eff, w0]);
                }
                continue;
            }
            _ => continue,
        };
        if let Some(&eff) = b.eff.get(&p) {
            b.nodes[n].kind = Nk::Gemm {
                layout,
                m: mm,
                n: nn,
                k,
            };
            b.nodes[n].ops.push(eff);
        }
    }
    build_program(m, f, b.nodes, &results, &stores, &store_w0)
}

/// `reduce_sum` over `axes` of `shape` as `[outer, channels, inner]` summed over the outer and
/// inner axes, when that is what it is: the interpreter's merge of its dimensions (size-1 axes
/// dropped, neighbours alike merged) leaves at most one kept run, with reduced runs around it.
fn channel_reduction(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let mut runs: Vec<(usize, bool)> = Vec::new();
    for (a, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let r = axes.contains(&a);
        match runs.last_mut() {
            Some((len, lr)) if *lr == r => *len *= d,
            _ => runs.push((d, r)),
        }
    }
    match runs[..] {
        [] => Some((1, 1, 1)),
        [(n, true)] => Some((1, 1, n)),
        [(c, false)] => Some((1, c, 1)),
        [(o, true), (c, false)] => Some((o, c, 1)),
        [(c, false), (n, true)] => Some((1, c, n)),
        [(o, true), (c, false), (n, true)] => Some((o, c, n)),
        _ => None,
    }
}

/// A convolution instruction's kernel spec, with the interpreter's geometry of it.
fn conv_spec(op: &Op, shapes: &[Vec<usize>], out: &[usize]) -> Option<ConvSpec> {
    let pass = match op {
        Op::Conv2d { .. } => ConvPass::Forward,
        Op::Conv2dInputGrad { .. } => ConvPass::InputGrad,
        _ => return None,
    };
    let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let g = conv_geom_of(op, &shapes, out)?;
    Some(ConvSpec {
        pass,
        bias: false,
        b: g.b,
        c: g.c,
        h: g.h,
        w: g.w,
        o: g.o,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        ph: g.ph,
        pw: g.pw,
        oh: g.oh,
        ow: g.ow,
    })
}

/// A max-pooling instruction's kernel spec, with the interpreter's geometry of it.
fn pool_spec(op: &Op, shapes: &[Vec<usize>], out: &[usize]) -> Option<PoolSpec> {
    let grad = match op {
        Op::MaxPool2d { .. } => false,
        Op::MaxPool2dGrad { .. } => true,
        _ => return None,
    };
    let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let g = pool_geom_of(op, &shapes, out)?;
    // The geometry is per plane; the result (`y`, or `dx` of `x`'s shape) has the planes.
    let &[nb, c, _, _] = out else {
        return None;
    };
    Some(PoolSpec {
        planes: nb * c,
        h: g.h,
        w: g.w,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        oh: g.oh,
        ow: g.ow,
        grad,
    })
}

fn interp(
    b: &mut Builder<'_>,
    inst: &sparsec_ir::Inst,
    ops: &[usize],
    f: &sparsec_ir::Func,
    len: usize,
    name: &str,
    i: usize,
) -> usize {
    let shapes = inst
        .operands
        .iter()
        .map(|&v| f.value_type(v).shape.clone())
        .collect();
    let n = b.push(
        Nk::Interp {
            op: inst.op.clone(),
            shapes,
            out_shape: inst.ty.shape.clone(),
        },
        ops.to_vec(),
        len,
        name.to_owned(),
        Some(i),
    );
    b.nodes[n].dtype = inst.ty.dtype;
    n
}
