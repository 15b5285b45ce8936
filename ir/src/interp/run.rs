//! Running a prepared function: its steps in order over the interpreter's buffers, then the
//! stores, written to the state only once the whole function has succeeded.

use super::float::Float;
use super::gemm::GemmScratch;
use super::state::diff_entries;
use super::{
    kernels, masked, topk_select, Input, InterpError, Interpreter, Kernel, Loc, MaskedKind, Output,
    State, Step, Tensor, TrackedValues,
};
use crate::regen;
use crate::types::DType;

impl<T: Float> Interpreter<T> {
    /// Run the function once on `inputs` (one per argument, in order). Parameters are read from
    /// `state`; the function's stores are written to it after the whole function has run, and
    /// only when it succeeded. Returns the function's results in order.
    ///
    /// A store to a tracked parameter keeps the entries of the stored value that differ
    /// (bitwise) from the parameter's initial value in this run (`init_scale` included); more
    /// than the parameter's capacity is an error and leaves the state unchanged.
    ///
    /// Subnormal results and inputs are zero while it runs ([`crate::fpenv`]), as in the JIT.
    pub fn run(
        &mut self,
        state: &mut State<T>,
        inputs: &[Input<'_, T>],
    ) -> Result<Vec<Output<T>>, InterpError> {
        crate::fpenv::flushing_subnormals(|| self.run_flushed(state, inputs))
    }

    fn run_flushed(
        &mut self,
        state: &mut State<T>,
        inputs: &[Input<'_, T>],
    ) -> Result<Vec<Output<T>>, InterpError> {
        self.check_call(state, inputs)?;
        let Interpreter {
            func,
            steps,
            fbufs,
            ibufs,
            sbufs,
            cols,
            gemm,
            results,
            stores,
            capacity,
            w0,
            seed,
            regen_scratch,
            topk_scratch,
            param_names,
            ..
        } = self;
        let params = &state.values[..];
        let tracked = &state.tracked[..];
        let regen = RegenCx {
            seed: *seed,
            scale: state.init_scale,
        };
        // A read-only view of every buffer but the one a step writes (taken out meanwhile).
        macro_rules! buffers {
            () => {
                Env {
                    inputs,
                    params,
                    tracked,
                    fbufs,
                    ibufs,
                    sbufs,
                }
            };
        }
        for step in steps.iter() {
            let r = match step.out {
                Loc::F(j) => {
                    let mut out = std::mem::take(&mut fbufs[j]);
                    let env = buffers!();
                    let r = exec_float(step, &env, &mut out, cols, gemm, regen, regen_scratch);
                    fbufs[j] = out;
                    r
                }
                Loc::I(j) => {
                    let mut out = std::mem::take(&mut ibufs[j]);
                    let env = buffers!();
                    let r = exec_int(step, &env, &mut out);
                    ibufs[j] = out;
                    r
                }
                Loc::S(j) => {
                    let mut out = std::mem::take(&mut sbufs[j]);
                    let env = buffers!();
                    let r = exec_sparse(step, &env, &mut out, topk_scratch);
                    sbufs[j] = out;
                    r
                }
                Loc::Arg(_) | Loc::Param(_) => unreachable!("steps write interpreter buffers"),
            };
            r.map_err(|e| InterpError::new(format!("@{func} %{}: {e}", step.inst)))?;
        }
        let env = buffers!();
        let outputs = results
            .iter()
            .map(|(loc, shape, dtype)| match (loc, dtype) {
                (Loc::S(j), _) => Output::Sparse {
                    shape: shape.clone(),
                    indices: sbufs[*j].clone(),
                },
                (_, DType::I32) => Output::Int(Tensor {
                    shape: shape.clone(),
                    data: env.int(*loc).to_vec(),
                }),
                (_, DType::F32) => Output::Float(Tensor {
                    shape: shape.clone(),
                    data: env.float(*loc).to_vec(),
                }),
            })
            .collect();
        // Tracked stores first, into new entry lists, so that one over its capacity leaves the
        // state untouched.
        let mut new_tracked = Vec::new();
        for &(p, loc) in stores.iter() {
            if let (Some(cap), Some(w0)) = (capacity[p], w0[p]) {
                let entries = diff_entries(env.float(loc), env.float(w0));
                if entries.len() as u64 > cap {
                    return Err(InterpError::new(format!(
                        "@{func}: the store to the tracked @{} leaves {} values differing from \
                         its initial value, more than its budget of {cap}",
                        param_names[p],
                        entries.len()
                    )));
                }
                new_tracked.push((p, entries));
            }
        }
        // Stores last. No store reads a parameter buffer (those were copied), so the order of
        // the writes does not matter.
        for &(p, loc) in stores.iter() {
            if capacity[p].is_some() {
                continue;
            }
            let src: &[T] = match loc {
                Loc::Arg(a) => match inputs[a] {
                    Input::Float(s) => s,
                    Input::Int(_) => unreachable!("stores are f32"),
                },
                Loc::F(j) => &fbufs[j],
                Loc::Param(_) | Loc::I(_) | Loc::S(_) => {
                    unreachable!("stores of params are copied")
                }
            };
            state.values[p].copy_from_slice(src);
        }
        for (p, entries) in new_tracked {
            state.tracked[p] = Some(entries);
        }
        Ok(outputs)
    }

    fn check_call(&self, state: &State<T>, inputs: &[Input<'_, T>]) -> Result<(), InterpError> {
        let func = &self.func;
        if inputs.len() != self.args.len() {
            return Err(InterpError::new(format!(
                "@{func} takes {} argument(s), got {}",
                self.args.len(),
                inputs.len()
            )));
        }
        for (a, input) in self.args.iter().zip(inputs) {
            let (dtype, len) = match input {
                Input::Float(s) => (DType::F32, s.len()),
                Input::Int(s) => (DType::I32, s.len()),
            };
            if dtype != a.dtype {
                return Err(InterpError::new(format!(
                    "@{func} argument %{} is {}, got {} data",
                    a.name,
                    a.dtype.name(),
                    dtype.name()
                )));
            }
            if len != a.len {
                return Err(InterpError::new(format!(
                    "@{func} argument %{} has {} element(s), got {len}",
                    a.name, a.len
                )));
            }
        }
        if state.values.len() != self.param_lens.len()
            || state.tracked.len() != self.param_lens.len()
        {
            return Err(InterpError::new(format!(
                "the state holds {} parameter(s), the module has {}",
                state.values.len(),
                self.param_lens.len()
            )));
        }
        for (p, ((v, &len), name)) in state
            .values
            .iter()
            .zip(&self.param_lens)
            .zip(&self.param_names)
            .enumerate()
        {
            match (&state.tracked[p], self.capacity[p]) {
                (None, None) if v.len() != len => {
                    return Err(InterpError::new(format!(
                        "the state's @{name} has {} element(s), the parameter has {len}",
                        v.len()
                    )));
                }
                (None, None) => {}
                (Some(t), Some(_)) => {
                    let sorted = t.indices.windows(2).all(|w| w[0] < w[1]);
                    let in_range = t.indices.last().is_none_or(|&i| (i as usize) < len);
                    if t.indices.len() != t.values.len() || !sorted || !in_range {
                        return Err(InterpError::new(format!(
                            "the state's tracked @{name} needs as many values as sorted, \
                             distinct indices below {len}"
                        )));
                    }
                }
                (None, Some(_)) => {
                    return Err(InterpError::new(format!(
                        "the state holds @{name} densely, but the parameter is tracked"
                    )))
                }
                (Some(_), None) => {
                    return Err(InterpError::new(format!(
                        "the state holds @{name} as tracked, but the parameter is not"
                    )))
                }
            }
        }
        if !state.init_scale.is_finite() {
            return Err(InterpError::new(format!(
                "the state's init_scale {} is not finite",
                state.init_scale
            )));
        }
        Ok(())
    }
}

/// What regenerating a tracked parameter's initial value needs besides the parameter.
#[derive(Clone, Copy)]
struct RegenCx {
    seed: u64,
    scale: f32,
}

/// Read access to every value during a step.
struct Env<'r, T> {
    inputs: &'r [Input<'r, T>],
    params: &'r [Vec<T>],
    tracked: &'r [Option<TrackedValues<T>>],
    fbufs: &'r [Vec<T>],
    ibufs: &'r [Vec<i32>],
    sbufs: &'r [Vec<u64>],
}

impl<'r, T> Env<'r, T> {
    fn float(&self, loc: Loc) -> &'r [T] {
        match loc {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Float(s) => s,
                Input::Int(_) => unreachable!("argument types are checked"),
            },
            Loc::Param(p) => &self.params[p],
            Loc::F(j) => &self.fbufs[j],
            Loc::I(_) | Loc::S(_) => unreachable!("operand types are checked"),
        }
    }

    fn int(&self, loc: Loc) -> &'r [i32] {
        match loc {
            Loc::Arg(a) => match self.inputs[a] {
                Input::Int(s) => s,
                Input::Float(_) => unreachable!("argument types are checked"),
            },
            Loc::I(j) => &self.ibufs[j],
            Loc::Param(_) | Loc::F(_) | Loc::S(_) => unreachable!("operand types are checked"),
        }
    }

    fn sparse(&self, loc: Loc) -> &'r [u64] {
        match loc {
            Loc::S(j) => &self.sbufs[j],
            _ => unreachable!("operand types are checked"),
        }
    }
}

fn exec_float<T: Float>(
    step: &Step,
    env: &Env<'_, T>,
    out: &mut [T],
    cols: &mut Vec<T>,
    gs: &mut GemmScratch<T>,
    regen: RegenCx,
    regen_scratch: &mut Vec<f32>,
) -> Result<(), String> {
    let x = |i: usize| env.float(step.operands[i]);
    match &step.kernel {
        Kernel::Copy => out.copy_from_slice(x(0)),
        &Kernel::Regen { init, stream } => {
            regen_scratch.clear();
            regen_scratch.resize(out.len(), 0.0);
            match init {
                crate::module::Init::Zeros => {}
                crate::module::Init::Ones => regen_scratch.fill(1.0),
                crate::module::Init::Uniform { lo, hi } => {
                    regen::fill_uniform(regen.seed, stream, lo, hi, regen_scratch)
                }
            }
            for (o, &w) in out.iter_mut().zip(regen_scratch.iter()) {
                *o = T::from_f32(w * regen.scale);
            }
        }
        &Kernel::TrackedValues { param } => {
            out.fill(T::zero());
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v;
                }
            }
        }
        &Kernel::Correction { param } => {
            out.fill(T::zero());
            let w0 = x(0);
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v - w0[i as usize];
                }
            }
        }
        &Kernel::Overlay { param } => {
            out.copy_from_slice(x(0));
            if let Some(t) = &env.tracked[param] {
                for (&i, &v) in t.indices.iter().zip(&t.values) {
                    out[i as usize] = v;
                }
            }
        }
        Kernel::DropbackScore => kernels::map2(x(0), x(1), out, |a, b| {
            let d = a - b;
            // |d| with −0 mapped to +0.
            if d < T::zero() {
                -d
            } else {
                d + T::zero()
            }
        }),
        &Kernel::DropbackApply { offset } => {
            let (w1, w0) = (x(0), x(2));
            out.copy_from_slice(w0);
            let sel = env.sparse(step.operands[1]);
            let lo = sel.partition_point(|&i| (i as usize) < offset);
            let hi = sel.partition_point(|&i| (i as usize) < offset + out.len());
            for &i in &sel[lo..hi] {
                let j = i as usize - offset;
                out[j] = w1[j];
            }
        }
        Kernel::Plain(plain) => plain.run(
            |i| Ok(env.float(step.operands[i])),
            |i| Ok(env.int(step.operands[i])),
            out,
            cols,
            gs,
        )?,
        &Kernel::Masked { kind, dims } => {
            let (a, b) = (env.float(step.operands[0]), env.float(step.operands[1]));
            let pos = env.sparse(step.operands[2]);
            match kind {
                MaskedKind::Nt => masked::masked_matmul_nt(dims, b, a, pos, out)?,
                MaskedKind::Nn => masked::masked_matmul(dims, b, a, pos, out)?,
                MaskedKind::Grad => masked::masked_grad(dims, a, b, pos, out)?,
            }
        }
        Kernel::MaskedConv { kind, geom } => masked::masked_conv(
            *kind,
            geom,
            env.float(step.operands[0]),
            env.float(step.operands[1]),
            env.sparse(step.operands[2]),
            out,
        )?,
        Kernel::TopkSelect { .. } | Kernel::TrackedSet { .. } | Kernel::MaskIndex { .. } => {
            unreachable!("{:?} does not produce f32", step.kernel)
        }
    }
    Ok(())
}

fn exec_sparse<T: Float>(
    step: &Step,
    env: &Env<'_, T>,
    out: &mut Vec<u64>,
    scratch: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    match &step.kernel {
        &Kernel::TopkSelect { k } => {
            let scores: Vec<&[T]> = step.operands.iter().map(|&l| env.float(l)).collect();
            topk_select(&scores, k, scratch, out);
        }
        &Kernel::TrackedSet { param } => {
            out.clear();
            if let Some(t) = &env.tracked[param] {
                out.extend(t.indices.iter().map(|&i| u64::from(i)));
            }
        }
        &Kernel::MaskIndex { nnz } => {
            super::masked::mask_positions(env.float(step.operands[0]), nnz, out)?;
        }
        other => unreachable!("{other:?} does not produce a selection"),
    }
    Ok(())
}

fn exec_int<T: Float>(step: &Step, env: &Env<'_, T>, out: &mut [i32]) -> Result<(), String> {
    match &step.kernel {
        Kernel::Plain(plain) => plain.run_int(env.float(step.operands[0]), out),
        other => unreachable!("{other:?} produces f32"),
    }
}
