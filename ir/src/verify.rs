//! The verifier: structural and type invariants every module must satisfy. It runs after every
//! pass in debug builds and tests, and [`crate::parse::parse_module`] runs it on every parsed file,
//! so a module read from text is as trustworthy as one built by [`crate::Func::push`].
//!
//! Types are re-derived: every instruction's recorded type must equal [`crate::Op::infer`] of its
//! operands' types.

use std::collections::HashSet;
use std::fmt;

use crate::module::{Func, Init, Module, Param, ParamId, Role, Storage, Value};
use crate::op::Op;
use crate::spec::{ranges, KeepRatio, Method, Schedule};
use crate::types::{DType, Encoding, Type};

/// Largest rank of any type the IR accepts. Real networks use at most 4; the bound keeps every
/// per-axis computation on a hostile file small.
pub const MAX_RANK: usize = 16;

/// What an error is about, by index, so that a caller holding source spans (the parser) can point
/// at the offending text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// The header or `module` line.
    Module,
    Data,
    Train,
    Method,
    Param(usize),
    /// A function as a whole (its name).
    Func(usize),
    Arg {
        func: usize,
        arg: usize,
    },
    /// An instruction: its operands or its op.
    Inst {
        func: usize,
        inst: usize,
    },
    /// An instruction's recorded result type.
    InstType {
        func: usize,
        inst: usize,
    },
    /// A function's `return`.
    Results {
        func: usize,
    },
}

/// One broken invariant. Displays as `@forward %12: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub site: Site,
    /// The site in words: `@forward %12`, `@forward arg %x`, `@forward return`,
    /// `param @fc1.weight`, `method`, ...
    pub context: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for VerifyError {}

/// Check every invariant of `m`; all violations are reported, in module order.
pub fn verify(m: &Module) -> Result<(), Vec<VerifyError>> {
    let mut v = Verifier { errors: Vec::new() };
    v.spec(m);
    v.params(m);
    let mut func_names = HashSet::new();
    for (i, f) in m.funcs.iter().enumerate() {
        if f.name.is_empty() {
            v.err(
                Site::Func(i),
                format!("func #{i}"),
                "function name is empty",
            );
        } else if !func_names.insert(f.name.as_str()) {
            v.err(
                Site::Func(i),
                format!("@{}", f.name),
                "duplicate function name",
            );
        }
        v.func(m, i, f);
    }
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

/// Whether `t` is within the IR's size limits: rank at most [`MAX_RANK`], and the element
/// counts of [`crate::op::check_elements`].
pub fn check_type_limits(t: &Type) -> Result<(), String> {
    if t.rank() > MAX_RANK {
        return Err(format!("rank {} exceeds the limit of {MAX_RANK}", t.rank()));
    }
    crate::op::check_elements(t)
}

struct Verifier {
    errors: Vec<VerifyError>,
}

impl Verifier {
    fn err(&mut self, site: Site, context: impl Into<String>, message: impl Into<String>) {
        self.errors.push(VerifyError {
            site,
            context: context.into(),
            message: message.into(),
        });
    }

    fn finite(&mut self, site: Site, context: &str, what: &str, x: f64) {
        if !x.is_finite() {
            self.err(site, context, format!("`{what}` is not finite ({x:?})"));
        }
    }

    fn spec(&mut self, m: &Module) {
        if let Some(t) = &m.train {
            let o = &t.optimizer;
            if t.batch == 0 {
                self.err(Site::Train, "train", "`batch` must be at least 1");
            }
            for (range, x) in [
                (&ranges::LR, o.lr),
                (&ranges::MOMENTUM, o.momentum),
                (&ranges::WEIGHT_DECAY, o.weight_decay),
            ] {
                if !x.is_finite() {
                    self.finite(Site::Train, "train", range.name, x);
                } else if !(range.ok)(x) {
                    let message = format!("{}, found {x:?}", range.message());
                    self.err(Site::Train, "train", message);
                }
            }
            if o.nesterov && o.momentum == 0.0 {
                self.err(Site::Train, "train", "`nesterov` needs momentum > 0");
            }
            if t.epochs == 0 {
                self.err(Site::Train, "train", "`epochs` must be at least 1");
            }
            if t.log_every == 0 {
                self.err(Site::Train, "train", "`log_every` must be at least 1");
            }
            match &t.schedule {
                Schedule::Constant => {}
                Schedule::Step { every, gamma } => {
                    if *every == 0 {
                        self.err(Site::Train, "train", "`step` schedule needs `every` ≥ 1");
                    }
                    self.finite(Site::Train, "train", "gamma", *gamma);
                }
                Schedule::MultiStep { gamma, .. } => {
                    self.finite(Site::Train, "train", "gamma", *gamma)
                }
            }
        }
        if let Some(crate::spec::DataSpec::Synthetic {
            train_samples,
            test_samples,
            ..
        }) = &m.data
        {
            // The frontend's E0415, for programs that come as dumps: training needs one batch.
            let batch = m.train.as_ref().map_or(1, |t| t.batch);
            if *train_samples < batch.max(1) {
                self.err(
                    Site::Data,
                    "data",
                    format!(
                        "synthetic `train_samples` {train_samples} is less than one batch of \
                         {batch}"
                    ),
                );
            }
            if *test_samples == 0 {
                self.err(
                    Site::Data,
                    "data",
                    "synthetic `test_samples` must be at least 1",
                );
            }
        }
        if let Some(spec) = &m.method {
            let ctx = "method";
            if spec.layers.is_empty() {
                self.err(Site::Method, ctx, "`on` lists no layers");
            }
            let mut seen = HashSet::new();
            for l in &spec.layers {
                if l.is_empty() {
                    self.err(Site::Method, ctx, "`on` lists an empty layer name");
                } else if !seen.insert(l.as_str()) {
                    self.err(Site::Method, ctx, format!("`on` lists layer `{l}` twice"));
                }
            }
            match &spec.method {
                Method::Dropback { k, decay_init, .. } => {
                    if *k == 0 {
                        self.err(Site::Method, ctx, "dropback `k` must be at least 1");
                    }
                    if let Some(d) = decay_init {
                        self.finite(Site::Method, ctx, "decay_init", *d);
                    }
                }
                Method::Admm {
                    keep,
                    rho,
                    rho_growth,
                    stages,
                    ..
                } => {
                    match keep {
                        KeepRatio::All(r) => self.finite(Site::Method, ctx, "keep", *r),
                        KeepRatio::PerLayer(layers) => {
                            for (name, r) in layers {
                                if name.is_empty() {
                                    self.err(Site::Method, ctx, "`keep` names an empty layer");
                                }
                                self.finite(Site::Method, ctx, "keep", *r);
                            }
                        }
                    }
                    self.finite(Site::Method, ctx, "rho", *rho);
                    self.finite(Site::Method, ctx, "rho_growth", *rho_growth);
                    for s in stages {
                        self.finite(Site::Method, ctx, "stages", *s);
                    }
                    for message in admm_rules(&spec.method, m.train.as_ref().map(|t| t.epochs)) {
                        self.err(Site::Method, ctx, message);
                    }
                }
                Method::PruneTrain {
                    ratio,
                    threshold,
                    lambda,
                    ..
                } => {
                    self.finite(Site::Method, ctx, "ratio", *ratio);
                    self.finite(Site::Method, ctx, "threshold", *threshold);
                    if let Some(l) = lambda {
                        self.finite(Site::Method, ctx, "lambda", *l);
                        if *l < 0.0 {
                            self.err(
                                Site::Method,
                                ctx,
                                format!("`lambda` must be ≥ 0 (the penalty's weight), not {l:?}"),
                            );
                        }
                    }
                }
                Method::ActivationDensity { .. } => {}
            }
        }
    }

    fn params(&mut self, m: &Module) {
        let mut names = HashSet::new();
        let mut streams = HashSet::new();
        let context = |i: usize, p: &Param| {
            if p.name.is_empty() {
                format!("param #{i}")
            } else {
                format!("param @{}", p.name)
            }
        };
        for (i, p) in m.params.iter().enumerate() {
            let site = Site::Param(i);
            let ctx = context(i, p);
            if p.name.is_empty() {
                self.err(site.clone(), &ctx, "parameter name is empty");
            } else if !names.insert(p.name.as_str()) {
                self.err(site.clone(), &ctx, "duplicate parameter name");
            }
            if p.ty.dtype != DType::F32 {
                self.err(
                    site.clone(),
                    &ctx,
                    format!("parameter type {} is not f32", p.ty),
                );
            }
            if p.ty.encoding != Encoding::Dense {
                self.err(
                    site.clone(),
                    &ctx,
                    format!(
                        "parameter type {} must be dense (the storage says what is kept)",
                        p.ty
                    ),
                );
            }
            if let Err(e) = check_type_limits(&p.ty) {
                self.err(site.clone(), &ctx, e);
            }
            if let Init::Uniform { lo, hi } = p.init {
                if !lo.is_finite() || !hi.is_finite() {
                    self.err(
                        site.clone(),
                        &ctx,
                        format!("init bounds ({lo:?}, {hi:?}) are not finite"),
                    );
                } else if lo >= hi {
                    self.err(
                        site.clone(),
                        &ctx,
                        format!("init bounds need lo < hi, found ({lo:?}, {hi:?})"),
                    );
                }
            }
            if !streams.insert(p.stream) {
                self.err(
                    site.clone(),
                    &ctx,
                    format!("stream {} is used by another parameter", p.stream),
                );
            }
            if let Some(of) = p.role.owner() {
                match m.params.get(of.0 as usize) {
                    Some(w) if w.role == Role::Weight && w.ty.shape == p.ty.shape => {}
                    _ => self.err(
                        site.clone(),
                        &ctx,
                        "a momentum buffer or a method's state must follow a weight of the same \
                         shape",
                    ),
                }
            }
            if let Some(message) = mask_rule(m, i) {
                self.err(site, &ctx, message);
            }
        }
        for (i, message) in crate::dropback::check_budgets(m) {
            self.err(Site::Param(i), context(i, &m.params[i]), message);
        }
    }

    fn func(&mut self, m: &Module, fi: usize, f: &Func) {
        let fname = &f.name;
        let mut stored = HashSet::new();
        let mut arg_names = HashSet::new();
        for (ai, a) in f.args.iter().enumerate() {
            let site = Site::Arg { func: fi, arg: ai };
            let ctx = format!("@{fname} arg %{}", a.name);
            if a.name.is_empty() {
                self.err(site.clone(), &ctx, "argument name is empty");
            } else if !arg_names.insert(a.name.as_str()) {
                self.err(site.clone(), &ctx, "duplicate argument name");
            }
            if let Err(e) = check_type_limits(&a.ty) {
                self.err(site, &ctx, e);
            }
        }
        let defined = |v: Value, before: usize| match v {
            Value::Arg(i) => (i as usize) < f.args.len(),
            Value::Inst(i) => (i as usize) < before,
        };
        for (ii, inst) in f.insts.iter().enumerate() {
            let ctx = format!("@{fname} %{ii}");
            let site = Site::Inst { func: fi, inst: ii };
            if let Err(e) = check_type_limits(&inst.ty) {
                self.err(
                    Site::InstType { func: fi, inst: ii },
                    &ctx,
                    format!("result type {}: {e}", inst.ty),
                );
                continue;
            }
            if let Some(&bad) = inst.operands.iter().find(|&&v| !defined(v, ii)) {
                let what = match bad {
                    Value::Arg(i) => format!("argument #{i} does not exist"),
                    Value::Inst(i) if (i as usize) < f.insts.len() => {
                        format!("operand %{i} is used before it is defined")
                    }
                    Value::Inst(i) => format!("operand %{i} does not exist"),
                };
                self.err(site, &ctx, what);
                continue;
            }
            if let Some(id) = inst.op.param() {
                if id.0 as usize >= m.params.len() {
                    self.err(
                        site,
                        &ctx,
                        format!(
                            "`{}` refers to parameter #{}, which does not exist",
                            inst.op.name(),
                            id.0
                        ),
                    );
                    continue;
                }
            }
            if let Op::Store(id) = inst.op {
                if !stored.insert(id) {
                    self.err(
                        site.clone(),
                        &ctx,
                        format!("@{} is stored twice", m.params[id.0 as usize].name),
                    );
                }
            }
            let types: Vec<&Type> = inst.operands.iter().map(|&v| f.value_type(v)).collect();
            match inst.op.infer(&types, &m.params) {
                Ok(t) if t == inst.ty => {}
                Ok(t) => self.err(
                    Site::InstType { func: fi, inst: ii },
                    &ctx,
                    format!(
                        "`{}` produces {t}, but the instruction says {}",
                        inst.op.name(),
                        inst.ty
                    ),
                ),
                Err(e) => self.err(site, &ctx, e),
            }
            if let Some(why) = dropback_entries_rule(f, ii) {
                self.err(Site::Inst { func: fi, inst: ii }, &ctx, why);
            }
        }
        for &r in &f.results {
            if let Value::Inst(i) = r {
                let made_by = f.insts.get(i as usize).map(|inst| &inst.op);
                if let Some(op @ (Op::DropbackUpdateSgd { .. } | Op::DropbackScoreStream(_))) =
                    made_by
                {
                    self.err(
                        Site::Results { func: fi },
                        format!("@{fname} return"),
                        format!(
                            "returns %{i}, made by `{}`, which only its one reader may read",
                            op.name()
                        ),
                    );
                }
            }
            if !defined(r, f.insts.len()) {
                let what = match r {
                    Value::Arg(i) => format!("argument #{i}"),
                    Value::Inst(i) => format!("%{i}"),
                };
                self.err(
                    Site::Results { func: fi },
                    format!("@{fname} return"),
                    format!("returns {what}, which does not exist"),
                );
            }
        }
    }
}

/// Dropback's new entries (`dropback_update_sgd @p`) are read by `store @p` alone, and a store
/// takes entries only from it: the reference interpreter holds them as the weight they make.
fn dropback_entries_rule(f: &Func, ii: usize) -> Option<String> {
    let inst = &f.insts[ii];
    let made_by = |v: Value| match v {
        Value::Inst(j) => f.insts.get(j as usize).map(|i| &i.op),
        Value::Arg(_) => None,
    };
    for (k, &v) in inst.operands.iter().enumerate() {
        if let Some(&Op::DropbackUpdateSgd { param, .. }) = made_by(v) {
            if inst.op != Op::Store(param) || k != 0 {
                return Some(format!(
                    "`{}` reads the entries of `dropback_update_sgd`, which only the store \
                     of its own parameter may read",
                    inst.op.name()
                ));
            }
        }
    }
    if let (Op::Store(_), Some(&v)) = (&inst.op, inst.operands.first()) {
        if matches!(
            f.value_type(v).encoding,
            crate::types::Encoding::Sparse { .. }
        ) && !matches!(made_by(v), Some(Op::DropbackUpdateSgd { .. }))
        {
            return Some(
                "a store takes sparse entries only from `dropback_update_sgd` of its parameter"
                    .into(),
            );
        }
    }
    None
}

/// ADMM's settings against their ranges (the model language's), its schedule against the run's
/// length, and the phase the program is built for against the schedule.
fn admm_rules(method: &Method, epochs: Option<u64>) -> Vec<String> {
    let Method::Admm {
        keep,
        rho,
        rho_growth,
        rounds,
        epochs_per_round,
        stages,
        at,
        ..
    } = method
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let ratios: Vec<f64> = match keep {
        KeepRatio::All(r) => vec![*r],
        KeepRatio::PerLayer(layers) => layers.iter().map(|l| l.1).collect(),
    };
    if ratios.iter().any(|&r| !(r > 0.0 && r <= 1.0)) {
        out.push("`keep` must be in 0 < keep ≤ 1".to_owned());
    }
    // Written so that NaN fails each rule too.
    let more = |x: f64, than: f64| x > than;
    if !more(*rho, 0.0) {
        out.push(format!("`rho` must be > 0, not {rho:?}"));
    }
    if !more(*rho_growth, 1.0) && *rho_growth != 1.0 {
        out.push(format!("`rho_growth` must be ≥ 1, not {rho_growth:?}"));
    }
    if *rounds == 0 || *epochs_per_round == 0 {
        out.push("`rounds` and `epochs_per_round` must be at least 1".to_owned());
    }
    if stages.iter().any(|&s| !more(s, 1.0)) || stages.windows(2).any(|w| !more(w[1], w[0])) {
        out.push("`stages` must be compression factors > 1, strictly increasing".to_owned());
    }
    if !out.is_empty() {
        return out;
    }
    let Some(epochs) = epochs else {
        return out;
    };
    match crate::admm::Schedule::new(method, epochs) {
        Err(e) => out.push(e),
        Ok(schedule) => {
            use crate::admm::Phase;
            let fits = match at {
                None | Some(Phase::Pretrain) => true,
                Some(Phase::Admm { stage, round }) => {
                    (1..=schedule.stages()).contains(stage) && (1..=*rounds).contains(round)
                }
                Some(Phase::Retrain { stage }) => (1..=schedule.stages()).contains(stage),
            };
            if !fits {
                if let Some(phase) = at {
                    out.push(format!(
                        "`at={phase}` is not in the schedule ({} stage(s) of {rounds} rounds)",
                        schedule.stages()
                    ));
                }
            }
        }
    }
    out
}

/// What is wrong with parameter `i`'s part in a masked storage, if anything: a `masked` weight
/// has exactly one mask (the step masks its update with it); a mask is dense and all ones at
/// first, and its weight is stored in full (a mask may precede its weight's hard prune: ADMM
/// keeps one from the start).
fn mask_rule(m: &Module, i: usize) -> Option<String> {
    let p = &m.params[i];
    let masks_of = |w: usize| {
        m.params
            .iter()
            .filter(|q| q.role == Role::Mask(ParamId(w as u32)))
            .count()
    };
    if let Storage::Masked { nnz } = p.storage {
        if p.role != Role::Weight {
            return Some("only a weight can be `masked`".into());
        }
        if nnz == 0 || nnz > p.ty.num_elements() as u64 {
            return Some(format!(
                "a `masked` weight keeps 1 to {} entries, not nnz={nnz}",
                p.ty.num_elements()
            ));
        }
        let n = masks_of(i);
        if n != 1 {
            return Some(format!(
                "a `masked` weight needs exactly one parameter with role=mask(@{}), found {n}",
                p.name
            ));
        }
    }
    if let Role::Mask(of) = p.role {
        if p.storage != Storage::Dense || p.init != Init::Ones {
            return Some(
                "a mask is stored dense and starts as ones (`init=ones storage=dense`)".into(),
            );
        }
        if m.params
            .get(of.0 as usize)
            .is_some_and(|w| !matches!(w.storage, Storage::Dense | Storage::Masked { .. }))
        {
            return Some("a mask's weight must be stored in full (`dense` or `masked`)".into());
        }
    }
    None
}
