//! Steps 2 to 4 of [`partition`](super::partition): the nodes scheduled, grouped into fused
//! kernels and given buffers, as a [`KernelProgram`]. Step 1, in `partition.rs`, decides what
//! each instruction computes; this decides where and with what it runs.

use sparsec_ir::op::Unary;
use sparsec_ir::{DType, Module};

use super::{Nk, Node};
use crate::codegen::chain::{ChainSpec, EwOp, Operand, MAX_CHAIN_BUFFERS, MAX_CHAIN_SCALARS};
use crate::codegen::conv::{ConvPass, ConvSpec};
use crate::codegen::gemm::{use_import, GemmSpec, Layout};
use crate::kernel_ir::{Body, Buffer, ChainProduct, Kernel, KernelProgram, Loc, ScoreSource};

/// What a kernel is made of while grouping.
enum Group {
    Gemm {
        gemm: usize,
        bias: Option<usize>,
        relu: Option<usize>,
    },
    Chain {
        len: usize,
        nodes: Vec<usize>,
        /// A product the chain reads as its input 0, made panel by panel inside the kernel
        /// (`kernel_ir::ChainProduct`).
        product: Option<usize>,
    },
    Single(usize),
    /// A forward convolution and the `bias_add` it carries out over its result.
    ConvBias {
        conv: usize,
        bias_add: usize,
    },
    /// A product a later chain took over (`Chain::product`): no kernel of its own.
    Taken,
}

/// The buffers (inputs) and scalars a chain of `members` reads from outside itself.
fn chain_operands(nodes: &[Node], members: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut ins: Vec<usize> = Vec::new();
    let mut scalars: Vec<usize> = Vec::new();
    for &mm in members {
        for (j, &o) in nodes[mm].ops.iter().enumerate() {
            if members.contains(&o) {
                continue;
            }
            let list = if nodes[mm].kind == Nk::Ew(EwOp::Scale) && j == 1 {
                &mut scalars
            } else {
                &mut ins
            };
            if !list.contains(&o) {
                list.push(o);
            }
        }
    }
    (ins, scalars)
}

/// Deepest product (its `k`: the batch, for a weight gradient) a chain takes over. A shallow
/// product is cheap to make and costly to store (LeNet-300-100's fc1 update, 1 thread: batch 1
/// 8.4k -> 9.2k samples/s, batch 16 44k -> 53k); at batch 64 making it dominates, and the fused
/// kernel measured no faster on one thread and up to 10 % slower on two.
const CHAIN_PRODUCT_MAX_DEPTH: usize = 16;

/// Whether element-wise node `n` can take over the product `g` as its chain's input 0: a
/// `matmul_tn` (a weight gradient, `dyᵀ · x`) with no epilogue, of `n`'s length, which nothing
/// else reads or keeps, and either an outer product (`k = 1`, any size: the chain makes each
/// element where it reads it) or shallow and library-sized (the chain makes it 64 columns at a
/// time and consumes each panel at once). Either way it is never stored
/// (`kernel_ir::ChainProduct`).
fn takes_product(nodes: &[Node], n: usize, g: usize, readers: &[usize], kept: &[bool]) -> bool {
    let Nk::Gemm {
        layout: Layout::Tn,
        m,
        n: cols,
        k,
    } = nodes[g].kind
    else {
        return false;
    };
    let node = &nodes[n];
    let scalar = node.kind == Nk::Ew(EwOp::Scale) && node.ops.get(1) == Some(&g);
    // An outer product is made where it is used; a deeper one by the library, panel by panel.
    (k == 1 || use_import(m, cols, k) && k <= CHAIN_PRODUCT_MAX_DEPTH)
        && node.len == m * cols
        && node.ops.contains(&g)
        && !scalar
        && readers[g] == 1
        && !kept[g]
}

pub(super) fn build_program(
    m: &Module,
    f: &sparsec_ir::Func,
    nodes: Vec<Node>,
    results: &[usize],
    stores: &[(usize, usize)],
    store_w0: &[(usize, usize)],
) -> Result<KernelProgram, String> {
    // 2. Schedule (only what a store or a result depends on).
    let mut live = vec![false; nodes.len()];
    let mut stack: Vec<usize> = stores
        .iter()
        .chain(store_w0)
        .map(|&(_, n)| n)
        .chain(results.iter().copied())
        .collect();
    while let Some(n) = stack.pop() {
        if !live[n] {
            live[n] = true;
            stack.extend(nodes[n].ops.iter().copied());
        }
    }
    let mut order: Vec<usize> = Vec::new();
    let mut placed = vec![false; nodes.len()];
    fn place(n: usize, nodes: &[Node], placed: &mut [bool], order: &mut Vec<usize>) {
        if placed[n] {
            return;
        }
        placed[n] = true;
        for &o in &nodes[n].ops {
            place(o, nodes, placed, order);
        }
        order.push(n);
    }
    for (n, node) in nodes.iter().enumerate() {
        if !node.lazy() && live[n] {
            if matches!(
                node.kind,
                Nk::Gemm { .. } | Nk::GemmRegen { .. } | Nk::Conv(_)
            ) {
                // A bias that the product's (or convolution's) epilogue will add must be ready
                // before it runs (a tracked bias is regenerated and overlaid lazily otherwise:
                // after it).
                for u in &nodes {
                    if matches!(u.kind, Nk::BiasAdd { .. }) && u.ops[0] == n {
                        place(u.ops[1], &nodes, &mut placed, &mut order);
                    }
                }
            }
            place(n, &nodes, &mut placed, &mut order);
        }
    }
    for &(_, n) in stores.iter().chain(store_w0) {
        place(n, &nodes, &mut placed, &mut order);
    }
    for &n in results {
        place(n, &nodes, &mut placed, &mut order);
    }

    // 3. Group.
    // How many scheduled nodes read each node, and which a store or a result keeps.
    let mut readers = vec![0usize; nodes.len()];
    for &n in &order {
        let mut ops = nodes[n].ops.clone();
        ops.sort_unstable();
        ops.dedup();
        for o in ops {
            readers[o] += 1;
        }
    }
    let mut kept = vec![false; nodes.len()];
    for &(_, n) in stores.iter().chain(store_w0) {
        kept[n] = true;
    }
    for &n in results {
        kept[n] = true;
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut kof: Vec<Option<usize>> = vec![None; nodes.len()];
    let tail = |g: &Group| match g {
        Group::Gemm { gemm, bias, relu } => Some(relu.or(*bias).unwrap_or(*gemm)),
        _ => None,
    };
    for &n in &order {
        let node = &nodes[n];
        if node.free() {
            continue;
        }
        let latest = node.ops.iter().filter_map(|&o| kof[o]).max();
        let joined = match (&node.kind, latest) {
            (Nk::BiasAdd { inner: 1 }, Some(k)) => match &mut groups[k] {
                g @ Group::Gemm {
                    bias: None,
                    relu: None,
                    ..
                } if tail(g) == Some(node.ops[0]) && kof[node.ops[1]] != Some(k) => {
                    if let Group::Gemm { bias, .. } = g {
                        *bias = Some(n);
                    }
                    Some(k)
                }
                _ => None,
            },
            (Nk::BiasAdd { inner }, Some(k)) => match groups[k] {
                Group::Single(c)
                    if node.ops[0] == c
                        && matches!(nodes[c].kind, Nk::Conv(s)
                            if s.pass == ConvPass::Forward && s.p() == *inner)
                        && readers[c] == 1
                        && !kept[c]
                        && kof[node.ops[1]].is_none_or(|kb| kb < k) =>
                {
                    groups[k] = Group::ConvBias {
                        conv: c,
                        bias_add: n,
                    };
                    Some(k)
                }
                _ => None,
            },
            (Nk::Ew(EwOp::Unary(Unary::Relu)), Some(k)) => match &mut groups[k] {
                g @ Group::Gemm { relu: None, .. } if tail(g) == Some(node.ops[0]) => {
                    if let Group::Gemm { relu, .. } = g {
                        *relu = Some(n);
                    }
                    Some(k)
                }
                _ => None,
            },
            _ => None,
        };
        let joined = joined.or(match (&node.kind, latest) {
            (Nk::Ew(op), Some(k)) => match &mut groups[k] {
                Group::Chain {
                    len,
                    nodes: members,
                    product,
                } if *len == node.len => {
                    let scalar_here = *op == EwOp::Scale && kof[node.ops[1]] == Some(k);
                    let mut with = members.clone();
                    with.push(n);
                    let (ins, scalars) = chain_operands(&nodes, &with);
                    let fits = ins.len() + with.len() + product.iter().len() <= MAX_CHAIN_BUFFERS
                        && scalars.len() <= MAX_CHAIN_SCALARS;
                    if fits && !scalar_here {
                        members.push(n);
                        Some(k)
                    } else {
                        None
                    }
                }
                _ => None,
            },
            _ => None,
        });
        let k = match joined {
            Some(k) => k,
            None => {
                groups.push(match &node.kind {
                    Nk::Gemm { .. } | Nk::GemmRegen { .. } => Group::Gemm {
                        gemm: n,
                        bias: None,
                        relu: None,
                    },
                    Nk::Ew(_) => Group::Chain {
                        len: node.len,
                        nodes: vec![n],
                        product: None,
                    },
                    _ => Group::Single(n),
                });
                groups.len() - 1
            }
        };
        kof[n] = Some(k);
        // A product only this chain reads moves into it (it runs later than the product's own
        // kernel would have, when all it reads is long made), which is left empty.
        // A chain taking a product keeps a buffer slot free for it (`OUTER_DY_SLOT`).
        let bare_chain = match &groups[k] {
            Group::Chain {
                nodes: members,
                product: None,
                ..
            } => chain_operands(&nodes, members).0.len() + members.len() < MAX_CHAIN_BUFFERS,
            _ => false,
        };
        let taken = node.ops.iter().copied().find_map(|g| {
            let kg = kof[g].filter(|&kg| kg != k && bare_chain)?;
            match groups[kg] {
                Group::Gemm {
                    gemm,
                    bias: None,
                    relu: None,
                } if gemm == g && takes_product(&nodes, n, g, &readers, &kept) => Some((g, kg)),
                _ => None,
            }
        });
        if let Some((g, kg)) = taken {
            if let Group::Chain { product, .. } = &mut groups[k] {
                *product = Some(g);
            }
            groups[kg] = Group::Taken;
            kof[g] = Some(k);
        }
    }

    // 4. Materialise.
    let mut need = vec![false; nodes.len()];
    for &(_, n) in stores.iter().chain(store_w0) {
        need[n] = true;
    }
    for &n in results {
        need[n] = true;
    }
    for &n in &order {
        for &o in &nodes[n].ops {
            if kof[o] != kof[n] || kof[o].is_none() {
                need[o] = true;
            }
        }
    }
    // Scale's scalar operand is read from a buffer even inside its own chain.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut loc: Vec<Option<Loc>> = vec![None; nodes.len()];
    for &n in &order {
        let node = &nodes[n];
        loc[n] = match node.kind {
            Nk::Arg(a) => Some(Loc::Arg(a)),
            Nk::Param(p) => Some(Loc::Param(p)),
            _ if need[n] => {
                buffers.push(Buffer {
                    name: node.name.clone(),
                    dtype: node.dtype,
                    len: node.len,
                    fill: match node.kind {
                        Nk::Const(v) => Some(v),
                        _ => None,
                    },
                    sparse: node.sparse,
                });
                let j = buffers.len() - 1;
                Some(match (node.sparse, node.dtype) {
                    (true, _) => Loc::S(j),
                    (false, DType::I32) => Loc::I(j),
                    (false, DType::F32) => Loc::F(j),
                })
            }
            _ => None,
        };
    }
    let at = |n: usize| -> Result<Loc, String> {
        loc[n].ok_or_else(|| format!("internal: {} has no buffer", nodes[n].name))
    };
    let mut kernels = Vec::new();
    for g in &groups {
        let mut insts: Vec<usize> = Vec::new();
        let mut note = |n: usize| {
            if let Some(i) = nodes[n].inst {
                if !insts.contains(&i) {
                    insts.push(i);
                }
            }
        };
        let body = match g {
            Group::Gemm { gemm, bias, relu } => {
                note(*gemm);
                bias.iter().chain(relu).for_each(|&x| note(x));
                let node = &nodes[*gemm];
                let (layout, mm, n, k, regen) = match node.kind {
                    Nk::Gemm { layout, m, n, k } => (layout, m, n, k, None),
                    Nk::GemmRegen { p, m, n, k } => (Layout::NtRegen, m, n, k, Some(p)),
                    _ => unreachable!("a gemm group starts with a product"),
                };
                let outs = [Some(*gemm), *bias, *relu]
                    .map(|x| x.and_then(|x| if need[x] { loc[x] } else { None }));
                Body::Gemm {
                    spec: GemmSpec {
                        layout,
                        bias: bias.is_some(),
                        relu: relu.is_some(),
                        store: outs.map(|o| o.is_some()),
                        overlay: regen.is_some(),
                        import: use_import(mm, n, k),
                    },
                    m: mm,
                    n,
                    k,
                    a: at(node.ops[0])?,
                    b: if regen.is_some() {
                        None
                    } else {
                        Some(at(node.ops[1])?)
                    },
                    regen,
                    bias: match bias {
                        Some(bn) => Some(at(nodes[*bn].ops[1])?),
                        None => None,
                    },
                    outs,
                }
            }
            Group::Chain {
                len,
                nodes: members,
                product,
            } => {
                // The product, when there is one, is input 0.
                let mut inputs: Vec<usize> = product.iter().copied().collect();
                product.iter().for_each(|&g| note(g));
                let mut scalars: Vec<usize> = Vec::new();
                let mut spec_nodes = Vec::new();
                for &mm in members {
                    note(mm);
                    let Nk::Ew(op) = nodes[mm].kind else {
                        unreachable!("chains hold element-wise nodes")
                    };
                    let mut operands = Vec::new();
                    for (j, &o) in nodes[mm].ops.iter().enumerate() {
                        let operand = if let Some(pos) = members.iter().position(|&x| x == o) {
                            Operand::Node(pos)
                        } else if op == EwOp::Scale && j == 1 {
                            if !scalars.contains(&o) {
                                scalars.push(o);
                            }
                            Operand::Scalar(scalars.iter().position(|&x| x == o).unwrap_or(0))
                        } else {
                            if !inputs.contains(&o) {
                                inputs.push(o);
                            }
                            Operand::Input(inputs.iter().position(|&x| x == o).unwrap_or(0))
                        };
                        operands.push(operand);
                    }
                    spec_nodes.push((op, operands));
                }
                let out_nodes: Vec<usize> =
                    (0..members.len()).filter(|&j| need[members[j]]).collect();
                Body::Chain {
                    spec: ChainSpec {
                        inputs: inputs.len(),
                        scalars: scalars.len(),
                        nodes: spec_nodes,
                        outputs: out_nodes.clone(),
                    },
                    len: *len,
                    product: match *product {
                        Some(g) => {
                            let Nk::Gemm { m, n, k, .. } = nodes[g].kind else {
                                unreachable!("a chain's product is a matmul_tn")
                            };
                            Some(ChainProduct {
                                m,
                                n,
                                k,
                                dy: at(nodes[g].ops[0])?,
                                x: at(nodes[g].ops[1])?,
                            })
                        }
                        None => None,
                    },
                    inputs: inputs[product.iter().len()..]
                        .iter()
                        .map(|&x| at(x))
                        .collect::<Result<_, _>>()?,
                    scalars: scalars.iter().map(|&x| at(x)).collect::<Result<_, _>>()?,
                    outputs: out_nodes
                        .iter()
                        .map(|&j| at(members[j]))
                        .collect::<Result<_, _>>()?,
                }
            }
            Group::Taken => continue,
            Group::ConvBias { conv, bias_add } => {
                note(*conv);
                note(*bias_add);
                let Nk::Conv(spec) = nodes[*conv].kind else {
                    unreachable!("a convolution group starts with a convolution")
                };
                Body::Conv {
                    spec: ConvSpec { bias: true, ..spec },
                    a: at(nodes[*conv].ops[0])?,
                    b: at(nodes[*conv].ops[1])?,
                    bias: Some(at(nodes[*bias_add].ops[1])?),
                    out: at(*bias_add)?,
                }
            }
            Group::Single(n) => {
                let n = *n;
                note(n);
                let node = &nodes[n];
                let out = at(n)?;
                let op = |j: usize| at(node.ops[j]);
                match &node.kind {
                    Nk::W0(p) => Body::Regen { param: *p, out },
                    Nk::Eff(p) => Body::Overlay {
                        param: *p,
                        w0: op(0)?,
                        out,
                    },
                    Nk::TrackedVals(p) => Body::TrackedValues { param: *p, out },
                    Nk::Correction(p) => Body::Correction {
                        param: *p,
                        w0: op(0)?,
                        out,
                    },
                    Nk::BiasAdd { inner } => Body::BiasAdd {
                        inner: *inner,
                        x: op(0)?,
                        bias: op(1)?,
                        out,
                    },
                    Nk::ReduceRows { rows, cols } => Body::ReduceRows {
                        rows: *rows,
                        cols: *cols,
                        x: op(0)?,
                        out,
                    },
                    Nk::Apply { offset } => Body::DropbackApply {
                        offset: *offset,
                        w1: op(0)?,
                        sel: op(1)?,
                        w0: op(2)?,
                        out,
                    },
                    Nk::GradScore { p, m, n, k } => Body::GradScore {
                        param: *p,
                        m: *m,
                        n: *n,
                        k: *k,
                        dy: op(0)?,
                        x: op(1)?,
                        lr: op(2)?,
                        w: op(3)?,
                        w0: op(4)?,
                        out,
                    },
                    Nk::GradApply { offset, m, n, k } => Body::GradApply {
                        offset: *offset,
                        m: *m,
                        n: *n,
                        k: *k,
                        dy: op(0)?,
                        x: op(1)?,
                        lr: op(2)?,
                        w: op(3)?,
                        sel: op(4)?,
                        w0: op(5)?,
                        out,
                    },
                    Nk::Topk { k } => Body::TopkSelect {
                        k: *k,
                        scores: (0..node.ops.len()).map(op).collect::<Result<_, _>>()?,
                        out,
                    },
                    Nk::TopkStream { k, sources } => {
                        let mut next = 0;
                        let mut take = || {
                            next += 1;
                            op(next - 1)
                        };
                        let mut list = Vec::new();
                        for source in sources {
                            list.push(match *source {
                                None => ScoreSource::Stored(take()?),
                                Some((param, m, n, k)) => ScoreSource::Remade {
                                    param,
                                    m,
                                    n,
                                    k,
                                    dy: take()?,
                                    x: take()?,
                                    lr: take()?,
                                },
                            });
                        }
                        Body::TopkStream {
                            k: *k,
                            sources: list,
                            out,
                        }
                    }
                    Nk::WeightStream { p, m, n, k } => Body::WeightProduct {
                        param: *p,
                        m: *m,
                        n: *n,
                        k: *k,
                        dy: op(0)?,
                        out,
                    },
                    Nk::GradUpdate { p, offset, m, n, k } => Body::GradUpdate {
                        param: *p,
                        offset: *offset,
                        m: *m,
                        n: *n,
                        k: *k,
                        dy: op(0)?,
                        x: op(1)?,
                        lr: op(2)?,
                        sel: op(3)?,
                        weight: if node.ops.len() == 6 {
                            Some((op(4)?, op(5)?))
                        } else {
                            None
                        },
                        out,
                    },
                    Nk::TrackedSet(p) => Body::TrackedSet { param: *p, out },
                    Nk::MaskIndex { nnz } => Body::MaskIndex {
                        nnz: *nnz,
                        mask: op(0)?,
                        out,
                    },
                    Nk::MaskedConv { kind, geom } => Body::MaskedConv {
                        kind: *kind,
                        geom: *geom,
                        a: op(0)?,
                        b: op(1)?,
                        idx: op(2)?,
                        out,
                    },
                    Nk::Masked { kind, dims } => Body::Masked {
                        kind: *kind,
                        dims: *dims,
                        a: op(0)?,
                        b: op(1)?,
                        idx: op(2)?,
                        out,
                    },
                    Nk::Copy => Body::Copy { src: op(0)?, out },
                    Nk::ReduceChannels {
                        outer,
                        channels,
                        inner,
                    } => Body::ReduceChannels {
                        outer: *outer,
                        channels: *channels,
                        inner: *inner,
                        x: op(0)?,
                        out,
                    },
                    Nk::Softmax(spec) => Body::SoftmaxXent {
                        spec: *spec,
                        logits: op(0)?,
                        labels: op(1)?,
                        out,
                    },
                    Nk::MaxPool(spec) if spec.grad => Body::MaxPool {
                        spec: *spec,
                        x: op(1)?,
                        dy: Some(op(0)?),
                        out,
                    },
                    Nk::MaxPool(spec) => Body::MaxPool {
                        spec: *spec,
                        x: op(0)?,
                        dy: None,
                        out,
                    },
                    Nk::ConvWeightGrad(geom) => Body::ConvWeightGrad {
                        geom: *geom,
                        x: op(0)?,
                        dy: op(1)?,
                        out,
                    },
                    Nk::Conv(spec) => Body::Conv {
                        spec: *spec,
                        a: op(0)?,
                        b: op(1)?,
                        bias: None,
                        out,
                    },
                    Nk::Interp {
                        op: o,
                        shapes,
                        out_shape,
                    } => Body::Interp {
                        op: o.clone(),
                        shapes: shapes.clone(),
                        out_shape: out_shape.clone(),
                        operands: (0..node.ops.len()).map(op).collect::<Result<_, _>>()?,
                        out,
                    },
                    other => return Err(format!("internal: {other:?} as a kernel")),
                }
            }
        };
        insts.sort_unstable();
        kernels.push(Kernel { insts, body });
    }
    Ok(KernelProgram {
        func: f.name.clone(),
        param_names: m.params.iter().map(|p| p.name.clone()).collect(),
        arg_names: f.args.iter().map(|a| a.name.clone()).collect(),
        buffers,
        kernels,
        results: results.iter().map(|&n| at(n)).collect::<Result<_, _>>()?,
        stores: stores
            .iter()
            .map(|&(p, n)| Ok((p, at(n)?)))
            .collect::<Result<_, String>>()?,
        store_w0: store_w0
            .iter()
            .map(|&(p, n)| Ok((p, at(n)?)))
            .collect::<Result<_, String>>()?,
    })
}
