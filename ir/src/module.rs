//! Modules, parameters and functions: the containers of the IR.

use crate::op::Op;
use crate::spec::{DataSpec, MethodSpec, TrainSpec};
use crate::types::Type;

/// Version of the text form; bumped whenever a dump of the same program would change (2: a
/// tracked parameter's storage carries its own budget, `tracked(budget=N)`).
pub const FORMAT_VERSION: u32 = 2;

/// The functions a program holds, by name: every stage after lowering finds them here.
pub mod func_names {
    /// The forward pass, `(x, labels) -> (loss, logits)`: made by lowering, kept for evaluation.
    pub const FORWARD: &str = "forward";
    /// The whole training step, `(x, labels, lr) -> (loss, logits)`: made by autodiff.
    pub const TRAIN_STEP: &str = "train_step";
    /// Dropback's step with its tracked set frozen (`freeze_after`), same signature.
    pub const TRAIN_STEP_FROZEN: &str = "train_step_frozen";
}

/// How far a module has been compiled. Stages are ordered: a pass pipeline runs the passes
/// between a module's stage and the one asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Lowered: `@forward` and the parameter table, each parameter with its storage.
    Ir,
    /// With the whole training step (autodiff, then the method's passes).
    Train,
    /// After equality saturation and extraction.
    Opt,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Ir, Stage::Train, Stage::Opt];

    /// The name in the text form's header (`stage=train`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ir => "ir",
            Stage::Train => "train",
            Stage::Opt => "opt",
        }
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The header key of the memory budget (bytes) a module at stage `opt` was compiled within:
/// the backend streams tracked weights it may otherwise keep when the key is there.
pub const MEMORY_BUDGET_HEADER: &str = "memory_budget";

/// A whole program: graph, parameters and the training specification.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub name: String,
    /// The compiler stage that produced this module.
    pub stage: Stage,
    /// Extra `key=value` facts for the header line, in order (saturation statistics, ...).
    pub header: Vec<(String, String)>,
    pub data: Option<DataSpec>,
    pub train: Option<TrainSpec>,
    pub method: Option<MethodSpec>,
    pub params: Vec<Param>,
    pub funcs: Vec<Func>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// A trainable tensor, named as in a PyTorch `state_dict` (`fc1.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// Its logical type (always dense in shape; the storage says what is kept).
    pub ty: Type,
    pub init: Init,
    /// The regeneration stream (unique per parameter, declaration order). Dense parameters draw
    /// their initial values from it too, so dense and Dropback runs start from the same weights.
    pub stream: u64,
    pub storage: Storage,
    pub role: Role,
}

/// What a parameter-table entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A weight or bias of the network: trained, saved in the `state_dict`.
    Weight,
    /// SGD's momentum buffer for the given weight: optimizer state, saved for resuming.
    Momentum(ParamId),
    /// A method's state tied to the given weight, of its shape: read by the step, never trained
    /// (autodiff differentiates only weights), written by the method's run side (ADMM's `Z` and
    /// `U`, a mask). Saved for resuming under its own name, and sliced with its weight when a
    /// reconfiguration changes the weight's shape.
    State(ParamId),
    /// The mask of the given weight, whose storage is `masked`: 1 where the weight may be
    /// non-zero, 0 where it is fixed at zero. Read by the step (autodiff masks the weight's
    /// update with it), written by the method's run side, saved and sliced as [`Role::State`].
    Mask(ParamId),
}

impl Role {
    /// The weight a piece of state belongs to (`None` for a weight).
    pub fn owner(self) -> Option<ParamId> {
        match self {
            Role::Weight => None,
            Role::Momentum(of) | Role::State(of) | Role::Mask(of) => Some(of),
        }
    }
}

/// Initial value of a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    /// All ones (a mask before anything is pruned).
    Ones,
    /// Uniform in `[lo, hi)`, drawn with the regeneration spec (ir/src/regen.rs).
    Uniform {
        lo: f32,
        hi: f32,
    },
}

/// What of a parameter is kept in memory (docs/design.md, "The IR").
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    /// Stored in full.
    Dense,
    /// Never stored: every read regenerates the initial value.
    Seeded,
    /// The Dropback form: the regenerated initial value overridden by at most `budget` tracked
    /// values. The budget is this parameter's own, resolved from the method's `k` and scope once,
    /// when the parameter is given this storage (see [`crate::dropback`]); the verifier checks it.
    Tracked { budget: u64 },
    /// Stored in full, with a fixed sparsity pattern: the weight's mask (the parameter with
    /// [`Role::Mask`] of it) says which entries may be non-zero; the training step masks the
    /// weight's gradient and its new value with it (ADMM after the hard prune). `nnz` is how
    /// many entries the mask keeps, fixed when the storage is given (the typing of the sparse
    /// products and the cost model read it; a run checks the mask against it).
    Masked { nnz: u64 },
}

/// As the text form writes it (`tracked(budget=10)`).
impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Dense => write!(f, "dense"),
            Storage::Seeded => write!(f, "seeded"),
            Storage::Tracked { budget } => write!(f, "tracked(budget={budget})"),
            Storage::Masked { nnz } => write!(f, "masked(nnz={nnz})"),
        }
    }
}

/// An SSA value: a function argument or the result of an instruction, by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Arg(u32),
    Inst(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub operands: Vec<Value>,
    pub ty: Type,
    /// The source construct this instruction comes from (a layer name), for readers of dumps.
    pub loc: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: String,
    pub ty: Type,
}

/// A function: arguments, instructions in topological order, results.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub name: String,
    pub args: Vec<Arg>,
    pub insts: Vec<Inst>,
    pub results: Vec<Value>,
}

impl Module {
    pub fn new(name: impl Into<String>, stage: Stage) -> Module {
        Module {
            name: name.into(),
            stage,
            header: Vec::new(),
            data: None,
            train: None,
            method: None,
            params: Vec::new(),
            funcs: Vec::new(),
        }
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0 as usize]
    }

    pub fn param_by_name(&self, name: &str) -> Option<ParamId> {
        self.params
            .iter()
            .position(|p| p.name == name)
            .map(|i| ParamId(i as u32))
    }

    pub fn add_param(&mut self, param: Param) -> ParamId {
        self.params.push(param);
        ParamId(self.params.len() as u32 - 1)
    }

    pub fn func(&self, name: &str) -> Option<&Func> {
        self.funcs.iter().find(|f| f.name == name)
    }

    /// Total number of elements of the network's weights (optimizer state not counted).
    pub fn param_count(&self) -> u64 {
        self.params
            .iter()
            .filter(|p| p.role == Role::Weight)
            .map(|p| p.ty.num_elements() as u64)
            .sum()
    }
}

impl Func {
    pub fn new(name: impl Into<String>) -> Func {
        Func {
            name: name.into(),
            args: Vec::new(),
            insts: Vec::new(),
            results: Vec::new(),
        }
    }

    pub fn value_type(&self, v: Value) -> &Type {
        match v {
            Value::Arg(i) => &self.args[i as usize].ty,
            Value::Inst(i) => &self.insts[i as usize].ty,
        }
    }

    pub fn add_arg(&mut self, name: impl Into<String>, ty: Type) -> Value {
        self.args.push(Arg {
            name: name.into(),
            ty,
        });
        Value::Arg(self.args.len() as u32 - 1)
    }

    /// Append an instruction, typing it with [`Op::infer`].
    pub fn push(
        &mut self,
        params: &[Param],
        op: Op,
        operands: &[Value],
        loc: Option<&str>,
    ) -> Result<Value, String> {
        for &v in operands {
            let ok = match v {
                Value::Arg(i) => (i as usize) < self.args.len(),
                Value::Inst(i) => (i as usize) < self.insts.len(),
            };
            if !ok {
                return Err(format!("operand {v:?} is not defined yet"));
            }
        }
        let types: Vec<&Type> = operands.iter().map(|&v| self.value_type(v)).collect();
        let ty = op.infer(&types, params)?;
        self.insts.push(Inst {
            op,
            operands: operands.to_vec(),
            ty,
            loc: loc.map(str::to_owned),
        });
        Ok(Value::Inst(self.insts.len() as u32 - 1))
    }
}
