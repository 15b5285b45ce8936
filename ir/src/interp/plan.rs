//! Preparing a function: every shape resolved, every instruction turned into steps on
//! buffers allocated once, and everything execution relies on checked, so that a module that
//! skipped the verifier gives an error here instead of a panic in a run.

use super::float::Float;
use super::gemm::GemmScratch;
use super::plain::Plain;
use super::{module_seed, ArgSpec, InterpError, Interpreter, Kernel, Loc, MaskedKind, Step};
use crate::module::{Module, Value};
use crate::op::Op;
use crate::types::{DType, Encoding, Type};
use crate::verify::MAX_RANK;

impl<T: Float> Interpreter<T> {
    /// Prepare function `func` of `m`. Checks what execution relies on (operands defined before
    /// use, every recorded type equal to `Op::infer` of its operands, dense encodings, at most
    /// one store per parameter), so a module that skipped the verifier gives an error, not a
    /// panic.
    pub fn new(m: &Module, func: &str) -> Result<Self, InterpError> {
        let f = m
            .func(func)
            .ok_or_else(|| InterpError::new(format!("no function @{func} in the module")))?;
        let ctx = |what: String| InterpError::new(format!("@{func} {what}"));
        let mut args = Vec::with_capacity(f.args.len());
        for a in &f.args {
            check_type(&a.ty).map_err(|e| ctx(format!("arg %{}: {e}", a.name)))?;
            args.push(ArgSpec {
                name: a.name.clone(),
                dtype: a.ty.dtype,
                len: a.ty.num_elements(),
            });
        }
        let mut interp = Interpreter {
            func: func.to_owned(),
            args,
            param_lens: m.params.iter().map(|p| p.ty.num_elements()).collect(),
            param_names: m.params.iter().map(|p| p.name.clone()).collect(),
            steps: Vec::new(),
            results: Vec::new(),
            stores: Vec::new(),
            capacity: m
                .params
                .iter()
                .map(|p| match p.storage {
                    crate::module::Storage::Tracked { budget } => Some(budget),
                    _ => None,
                })
                .collect(),
            w0: vec![None; m.params.len()],
            seed: module_seed(m),
            fbufs: Vec::new(),
            ibufs: Vec::new(),
            sbufs: Vec::new(),
            regen_scratch: Vec::new(),
            topk_scratch: Vec::new(),
            cols: Vec::new(),
            gemm: GemmScratch::default(),
        };
        let mut locs: Vec<Loc> = Vec::with_capacity(f.insts.len());
        let mut max_cols = 0usize;
        for (i, inst) in f.insts.iter().enumerate() {
            let here = |e: String| ctx(format!("%{i}: {e}"));
            let mut operands = Vec::with_capacity(inst.operands.len());
            let mut types: Vec<&Type> = Vec::with_capacity(inst.operands.len());
            for &v in &inst.operands {
                let (loc, ty) = match v {
                    Value::Arg(a) if (a as usize) < f.args.len() => {
                        (Loc::Arg(a as usize), &f.args[a as usize].ty)
                    }
                    Value::Inst(j) if (j as usize) < i => {
                        (locs[j as usize], &f.insts[j as usize].ty)
                    }
                    _ => return Err(here(format!("operand {v:?} is not defined before use"))),
                };
                operands.push(loc);
                types.push(ty);
            }
            let inferred = inst.op.infer(&types, &m.params).map_err(&here)?;
            if inferred != inst.ty {
                return Err(here(format!(
                    "`{}` produces {inferred}, but the instruction says {}",
                    inst.op.name(),
                    inst.ty
                )));
            }
            check_value_type(&inst.ty).map_err(&here)?;
            for t in &types {
                check_value_type(t).map_err(&here)?;
            }
            let out_shape = inst.ty.shape.as_slice();
            let kernel = match &inst.op {
                Op::Param(id) if interp.capacity[id.0 as usize].is_some() => {
                    let p = id.0 as usize;
                    let w0 = interp.w0_of(m, p, i);
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::Overlay { param: p },
                        operands: vec![w0],
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Param(id) => {
                    locs.push(Loc::Param(id.0 as usize));
                    continue;
                }
                Op::DropbackScore(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    operands.push(w0);
                    Kernel::DropbackScore
                }
                // The optimised forms run as the plain computation they stand for, with the
                // same kernels in the same order, so they agree bit for bit with the program
                // before optimisation (the distributed products excepted: they round
                // differently by design).
                Op::Regen(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    locs.push(w0);
                    continue;
                }
                Op::Tracked(id) => {
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::TrackedValues {
                            param: id.0 as usize,
                        },
                        operands: Vec::new(),
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Correction(id) => {
                    let w0 = interp.w0_of(m, id.0 as usize, i);
                    let out = interp.alloc_float(inst.ty.num_elements());
                    interp.steps.push(Step {
                        inst: i,
                        kernel: Kernel::Correction {
                            param: id.0 as usize,
                        },
                        operands: vec![w0],
                        out,
                    });
                    locs.push(out);
                    continue;
                }
                Op::Overlay => {
                    // The reference keeps tracked values in the state, so the sparse operand
                    // must be `tracked @p` itself.
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
                    let out = interp.effective_weight(m, p, i);
                    locs.push(out);
                    continue;
                }
                Op::MatMulNtWeight(id) | Op::MatMulWeight(id) => {
                    let w = interp.effective_weight(m, id.0 as usize, i);
                    let wshape = &m.params[id.0 as usize].ty.shape;
                    operands.push(w);
                    let nt = matches!(inst.op, Op::MatMulNtWeight(_));
                    Kernel::Plain(Plain::MatMul {
                        m: out_shape[0],
                        n: out_shape[1],
                        k: if nt { wshape[1] } else { wshape[0] },
                        ta: false,
                        tb: nt,
                    })
                }
                Op::DropbackScoreSgd(id) | Op::DropbackScoreStream(id) => {
                    let p = id.0 as usize;
                    let w1 = interp.sgd_result(m, p, i, &operands, types[0].shape[0]);
                    let w0 = interp.w0_of(m, p, i);
                    operands = vec![w1, w0];
                    Kernel::DropbackScore
                }
                Op::DropbackApplySgd { param, offset }
                | Op::DropbackUpdateSgd { param, offset } => {
                    let p = param.0 as usize;
                    let w1 = interp.sgd_result(m, p, i, &operands, types[0].shape[0]);
                    let w0 = interp.w0_of(m, p, i);
                    operands = vec![w1, operands[3], w0];
                    Kernel::DropbackApply {
                        offset: *offset as usize,
                    }
                }
                Op::DropbackApply { param, offset } => {
                    let w0 = interp.w0_of(m, param.0 as usize, i);
                    operands.push(w0);
                    Kernel::DropbackApply {
                        offset: *offset as usize,
                    }
                }
                Op::TopkSelect { k } => Kernel::TopkSelect {
                    k: usize::try_from(*k).unwrap_or(usize::MAX),
                },
                Op::TrackedSet(id) => Kernel::TrackedSet {
                    param: id.0 as usize,
                },
                Op::MaskIndex(id) => {
                    operands.push(Loc::Param(id.0 as usize));
                    Kernel::MaskIndex {
                        nnz: inst_capacity(&inst.ty),
                    }
                }
                Op::MaskedMatMulNt(id) | Op::MaskedMatMul(id) => {
                    let w = &m.params[id.0 as usize].ty.shape;
                    let dims = super::masked::MaskedDims {
                        b: types[0].shape[0],
                        o: w[0],
                        i: w[1],
                    };
                    operands.insert(0, Loc::Param(id.0 as usize));
                    let kind = if matches!(inst.op, Op::MaskedMatMulNt(_)) {
                        MaskedKind::Nt
                    } else {
                        MaskedKind::Nn
                    };
                    Kernel::Masked { kind, dims }
                }
                Op::MaskedConv2d { param, .. } | Op::MaskedConv2dInputGrad { param, .. } => {
                    let p = param.0 as usize;
                    let dense = inst.op.dense_conv().expect("a masked convolution");
                    let w = m.params[p].ty.shape.as_slice();
                    let geom = super::plain::conv_geom_of(&dense, &[&types[0].shape, w], out_shape)
                        .ok_or_else(|| here("a masked convolution needs 4-d operands".into()))?;
                    let kind = match inst.op {
                        Op::MaskedConv2d { .. } => super::masked::ConvKind::Forward,
                        _ => super::masked::ConvKind::InputGrad,
                    };
                    operands = vec![operands[0], Loc::Param(p), operands[1]];
                    Kernel::MaskedConv { kind, geom }
                }
                Op::MaskedConv2dWeightGrad { .. } => {
                    let dense = inst.op.dense_conv().expect("a masked convolution");
                    let geom = super::plain::conv_geom_of(
                        &dense,
                        &[&types[0].shape, &types[1].shape],
                        out_shape,
                    )
                    .ok_or_else(|| here("a masked convolution needs 4-d operands".into()))?;
                    Kernel::MaskedConv {
                        kind: super::masked::ConvKind::WeightGrad,
                        geom,
                    }
                }
                Op::MaskedGrad => Kernel::Masked {
                    kind: MaskedKind::Grad,
                    dims: super::masked::MaskedDims {
                        b: types[0].shape[0],
                        o: types[0].shape[1],
                        i: types[1].shape[1],
                    },
                },
                Op::Const { value, .. } => {
                    let loc = interp.alloc_float(inst.ty.num_elements());
                    if let Loc::F(j) = loc {
                        interp.fbufs[j].fill(T::from_f32(*value));
                    }
                    locs.push(loc);
                    continue;
                }
                Op::Reshape { .. } => {
                    locs.push(operands[0]);
                    continue;
                }
                Op::Store(id) => {
                    let p = id.0 as usize;
                    if interp.stores.iter().any(|&(q, _)| q == p) {
                        return Err(here(format!("a second store to @{}", m.params[p].name)));
                    }
                    if interp.capacity[p].is_some() {
                        // A tracked parameter keeps what differs from w0 (compared at the end).
                        interp.w0_of(m, p, i);
                    }
                    let loc = match operands[0] {
                        Loc::Param(_) => {
                            let out = interp.alloc_float(inst.ty.num_elements());
                            interp.steps.push(Step {
                                inst: i,
                                kernel: Kernel::Copy,
                                operands,
                                out,
                            });
                            out
                        }
                        other => other,
                    };
                    interp.stores.push((p, loc));
                    locs.push(loc);
                    continue;
                }
                op => {
                    let shapes: Vec<&[usize]> = types.iter().map(|t| t.shape.as_slice()).collect();
                    let plain = Plain::prepare(op, &shapes, out_shape)
                        .ok_or_else(|| here(format!("`{}` has no reference kernel", op.name())))?;
                    max_cols = max_cols.max(plain.cols_needed());
                    Kernel::Plain(plain)
                }
            };
            // Selections get a position list; every `f32` value, whatever its encoding, a dense
            // buffer (see `check_value_type`).
            let out = match (inst.ty.dtype, inst.ty.is_dense()) {
                (DType::I32, false) => {
                    interp.sbufs.push(Vec::new());
                    Loc::S(interp.sbufs.len() - 1)
                }
                (DType::F32, _) => interp.alloc_float(inst.ty.num_elements()),
                (DType::I32, true) => interp.alloc_int(inst.ty.num_elements()),
            };
            interp.steps.push(Step {
                inst: i,
                kernel,
                operands,
                out,
            });
            locs.push(out);
        }
        for (r, &v) in f.results.iter().enumerate() {
            let loc = match v {
                Value::Arg(a) if (a as usize) < f.args.len() => Loc::Arg(a as usize),
                Value::Inst(j) if (j as usize) < f.insts.len() => locs[j as usize],
                _ => return Err(ctx(format!("result {r} ({v:?}) is not defined"))),
            };
            let ty = f.value_type(v);
            check_value_type(ty).map_err(|e| ctx(format!("result {r}: {e}")))?;
            interp.results.push((loc, ty.shape.clone(), ty.dtype));
        }
        interp.cols = vec![T::zero(); max_cols];
        Ok(interp)
    }

    /// The buffer holding tracked parameter `p`'s initial value during a run, regenerated by a
    /// step placed before its first use (instruction `inst`).
    fn w0_of(&mut self, m: &Module, p: usize, inst: usize) -> Loc {
        if let Some(loc) = self.w0[p] {
            return loc;
        }
        let param = &m.params[p];
        let out = self.alloc_float(param.ty.num_elements());
        self.steps.push(Step {
            inst,
            kernel: Kernel::Regen {
                init: param.init,
                stream: param.stream,
            },
            operands: Vec::new(),
            out,
        });
        self.w0[p] = Some(out);
        out
    }

    /// A buffer with the effective (dense) value of tracked parameter `p`: `w0` overlaid with
    /// its stored entries.
    fn effective_weight(&mut self, m: &Module, p: usize, inst: usize) -> Loc {
        let w0 = self.w0_of(m, p, inst);
        let out = self.alloc_float(m.params[p].ty.num_elements());
        self.steps.push(Step {
            inst,
            kernel: Kernel::Overlay { param: p },
            operands: vec![w0],
            out,
        });
        out
    }

    /// `W − lr · dyᵀx` for tracked parameter `p` with operands `(dy, x, lr, ...)` and batch
    /// `batch`: the SGD result the fused Dropback ops stand for, computed as autodiff writes it
    /// (`matmul_tn`, `scale`, `sub`).
    fn sgd_result(
        &mut self,
        m: &Module,
        p: usize,
        inst: usize,
        operands: &[Loc],
        batch: usize,
    ) -> Loc {
        let shape = m.params[p].ty.shape.clone();
        let len = m.params[p].ty.num_elements();
        let w = self.effective_weight(m, p, inst);
        let grad = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::MatMul {
                m: shape[0],
                n: shape[1],
                k: batch,
                ta: true,
                tb: false,
            }),
            operands: vec![operands[0], operands[1]],
            out: grad,
        });
        let step = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::Scale),
            operands: vec![grad, operands[2]],
            out: step,
        });
        let w1 = self.alloc_float(len);
        self.steps.push(Step {
            inst,
            kernel: Kernel::Plain(Plain::Sub),
            operands: vec![w, step],
            out: w1,
        });
        w1
    }

    fn alloc_float(&mut self, len: usize) -> Loc {
        self.fbufs.push(vec![T::zero(); len]);
        Loc::F(self.fbufs.len() - 1)
    }

    fn alloc_int(&mut self, len: usize) -> Loc {
        self.ibufs.push(vec![0; len]);
        Loc::I(self.ibufs.len() - 1)
    }

    /// The prepared function's name.
    pub fn func_name(&self) -> &str {
        &self.func
    }
}

/// What the interpreter executes: dense values of bounded rank, and selections
/// (`i32[N]{sparse K}`).
fn check_value_type(t: &Type) -> Result<(), String> {
    match t.encoding {
        Encoding::Dense => {}
        Encoding::Sparse { .. } if t.dtype == DType::I32 && t.rank() == 1 => {}
        // Regenerated, streamed and sparse values are held densely by the reference
        // interpreter (a streamed score is made once; Dropback's new entries are held as the
        // weight they make, from which the store takes them).
        Encoding::Regen | Encoding::Streamed | Encoding::Sparse { .. } if t.dtype == DType::F32 => {
        }
        _ => {
            return Err(format!(
                "the interpreter does not execute this encoded value ({t})"
            ))
        }
    }
    check_type_limits(t)
}

/// What arguments may be: dense values of bounded rank.
fn check_type(t: &Type) -> Result<(), String> {
    if !t.is_dense() {
        return Err(format!(
            "the interpreter does not execute encoded values yet ({t})"
        ));
    }
    check_type_limits(t)
}

fn check_type_limits(t: &Type) -> Result<(), String> {
    if t.rank() > MAX_RANK {
        return Err(format!("{t} has rank above {MAX_RANK}"));
    }
    crate::op::check_elements(t)
}

/// The capacity of a sparse type (0 for a dense one).
fn inst_capacity(ty: &Type) -> usize {
    match ty.encoding {
        Encoding::Sparse { capacity } => usize::try_from(capacity).unwrap_or(usize::MAX),
        _ => 0,
    }
}
