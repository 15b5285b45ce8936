//! The text form of a module (docs/ir.md): stable, diffable and parseable back by
//! [`crate::parse::parse_module`], so that `print(parse(text)) == text` for every printed module.
//!
//! Nothing in a dump depends on addresses, times or the machine: instructions are numbered by
//! position, floats print as Rust's shortest round-tripping `{:?}` form, and names that are not
//! plain identifiers are quoted.

use std::fmt::{self, Write};

use crate::module::{Func, Init, Inst, Module, Param, Role, Value, FORMAT_VERSION};
use crate::op::{Attr, Op};
use crate::spec::{DataSpec, DropbackScope, KeepRatio, Method, MethodSpec, Schedule, TrainSpec};

/// The whole module in its text form, ending with a newline.
pub fn print_module(m: &Module) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_module(&mut out, m);
    out
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_module(f, self)
    }
}

fn write_module(out: &mut impl Write, m: &Module) -> fmt::Result {
    write!(out, "sparsec-ir {FORMAT_VERSION} stage={}", m.stage)?;
    for (k, v) in &m.header {
        write!(out, " {}={}", Word(k), Word(v))?;
    }
    writeln!(out)?;
    writeln!(out, "module {}", Name(&m.name))?;
    if let Some(data) = &m.data {
        write_data(out, data)?;
    }
    if let Some(train) = &m.train {
        write_train(out, train)?;
    }
    if let Some(method) = &m.method {
        write_method(out, method)?;
    }
    if !m.params.is_empty() {
        writeln!(out)?;
        for p in &m.params {
            write_param(out, m, p)?;
        }
    }
    for func in &m.funcs {
        writeln!(out)?;
        write_func(out, m, func)?;
    }
    Ok(())
}

fn write_data(out: &mut impl Write, data: &DataSpec) -> fmt::Result {
    match data {
        DataSpec::FashionMnist { dir: None } => writeln!(out, "data fashion_mnist"),
        DataSpec::FashionMnist { dir: Some(dir) } => {
            writeln!(out, "data fashion_mnist dir={}", Quoted(dir))
        }
        DataSpec::Idx { dir } => writeln!(out, "data idx dir={}", Quoted(dir)),
        DataSpec::Synthetic {
            train_samples,
            test_samples,
            seed,
        } => writeln!(
            out,
            "data synthetic train_samples={train_samples} test_samples={test_samples} seed={seed}"
        ),
    }
}

fn write_train(out: &mut impl Write, t: &TrainSpec) -> fmt::Result {
    let o = &t.optimizer;
    write!(
        out,
        "train epochs={} batch={} seed={} log_every={} optimizer=sgd(lr={:?}, momentum={:?}, weight_decay={:?}, nesterov={}) schedule=",
        t.epochs, t.batch, t.seed, t.log_every, o.lr, o.momentum, o.weight_decay, o.nesterov
    )?;
    match &t.schedule {
        Schedule::Constant => write!(out, "constant")?,
        Schedule::Step { every, gamma } => write!(out, "step(every={every}, gamma={gamma:?})")?,
        Schedule::MultiStep { milestones, gamma } => {
            write!(out, "multistep(milestones=")?;
            write_list(out, milestones, |out, x| write!(out, "{x}"))?;
            write!(out, ", gamma={gamma:?})")?;
        }
    }
    writeln!(out)
}

pub(crate) fn scope_name(scope: DropbackScope) -> &'static str {
    match scope {
        DropbackScope::Global => "global",
        DropbackScope::PerLayer => "per_layer",
    }
}

fn write_method(out: &mut impl Write, spec: &MethodSpec) -> fmt::Result {
    write!(out, "method {}(", spec.method.name())?;
    match &spec.method {
        Method::Dropback {
            k,
            scope,
            freeze_after,
            decay_init,
        } => {
            write!(out, "k={k}, scope={}", scope_name(*scope))?;
            if let Some(n) = freeze_after {
                write!(out, ", freeze_after={n}")?;
            }
            if let Some(d) = decay_init {
                write!(out, ", decay_init={d:?}")?;
            }
        }
        Method::Admm {
            keep,
            rho,
            rho_growth,
            rounds,
            epochs_per_round,
            retrain_epochs,
            stages,
            at,
        } => {
            write!(out, "keep=")?;
            match keep {
                KeepRatio::All(r) => write!(out, "{r:?}")?,
                KeepRatio::PerLayer(layers) => {
                    write!(out, "{{")?;
                    for (i, (name, r)) in layers.iter().enumerate() {
                        if i > 0 {
                            write!(out, ", ")?;
                        }
                        write!(out, "{}: {r:?}", Name(name))?;
                    }
                    write!(out, "}}")?;
                }
            }
            write!(
                out,
                ", rho={rho:?}, rho_growth={rho_growth:?}, rounds={rounds}, epochs_per_round={epochs_per_round}, retrain_epochs={retrain_epochs}, stages="
            )?;
            write_list(out, stages, |out, x| write!(out, "{x:?}"))?;
            if let Some(phase) = at {
                write!(out, ", at={phase}")?;
            }
        }
        Method::PruneTrain {
            ratio,
            interval,
            threshold,
            lambda,
        } => {
            write!(
                out,
                "ratio={ratio:?}, interval={interval}, threshold={threshold:?}"
            )?;
            if let Some(l) = lambda {
                write!(out, ", lambda={l:?}")?;
            }
        }
        Method::ActivationDensity {
            resize_at,
            min_width,
        } => {
            write!(out, "resize_at=")?;
            write_list(out, resize_at, |out, x| write!(out, "{x}"))?;
            write!(out, ", min_width={min_width}")?;
        }
    }
    write!(out, ") on=")?;
    write_list(out, &spec.layers, |out, x| write!(out, "{}", Name(x)))?;
    writeln!(out)
}

fn write_param(out: &mut impl Write, m: &Module, p: &Param) -> fmt::Result {
    write!(out, "param @{} : {} init=", Name(&p.name), p.ty)?;
    match p.init {
        Init::Zeros => write!(out, "zeros")?,
        Init::Ones => write!(out, "ones")?,
        Init::Uniform { lo, hi } => write!(out, "uniform({lo:?}, {hi:?})")?,
    }
    write!(out, " stream={} storage={}", p.stream, p.storage)?;
    let kind = match p.role {
        Role::Weight => None,
        Role::Momentum(of) => Some(("momentum", of)),
        Role::State(of) => Some(("state", of)),
        Role::Mask(of) => Some(("mask", of)),
    };
    if let Some((kind, of)) = kind {
        match m.params.get(of.0 as usize) {
            Some(w) => write!(out, " role={kind}(@{})", Name(&w.name))?,
            None => write!(out, " role={kind}(@?{})", of.0)?,
        }
    }
    writeln!(out)
}

fn write_func(out: &mut impl Write, m: &Module, f: &Func) -> fmt::Result {
    write!(out, "func @{}(", Name(&f.name))?;
    for (i, a) in f.args.iter().enumerate() {
        if i > 0 {
            write!(out, ", ")?;
        }
        write!(out, "%{}: {}", Name(&a.name), a.ty)?;
    }
    write!(out, ") -> (")?;
    for (i, &r) in f.results.iter().enumerate() {
        if i > 0 {
            write!(out, ", ")?;
        }
        match value_type(f, r) {
            Some(t) => write!(out, "{t}")?,
            // An invalid module (result out of range) still prints, visibly broken.
            None => write!(out, "?")?,
        }
    }
    writeln!(out, ") {{")?;
    for (i, inst) in f.insts.iter().enumerate() {
        write_inst(out, m, f, i, inst)?;
    }
    write!(out, "  return")?;
    for (i, &r) in f.results.iter().enumerate() {
        write!(out, "{}", if i == 0 { " " } else { ", " })?;
        write_value(out, f, r)?;
    }
    writeln!(out)?;
    writeln!(out, "}}")
}

fn value_type(f: &Func, v: Value) -> Option<&crate::types::Type> {
    match v {
        Value::Arg(i) => f.args.get(i as usize).map(|a| &a.ty),
        Value::Inst(i) => f.insts.get(i as usize).map(|x| &x.ty),
    }
}

fn write_value(out: &mut impl Write, f: &Func, v: Value) -> fmt::Result {
    match v {
        Value::Inst(i) => write!(out, "%{i}"),
        Value::Arg(i) => match f.args.get(i as usize) {
            Some(a) => write!(out, "%{}", Name(&a.name)),
            None => write!(out, "%arg?{i}"),
        },
    }
}

fn write_inst(
    out: &mut impl Write,
    m: &Module,
    f: &Func,
    index: usize,
    inst: &Inst,
) -> fmt::Result {
    write!(out, "  %{index} = {}", inst.op.name())?;
    if let Some(id) = inst.op.param() {
        match m.params.get(id.0 as usize) {
            Some(p) => write!(out, " @{}", Name(&p.name))?,
            None => write!(out, " @?{}", id.0)?,
        }
        if !inst.operands.is_empty() {
            write!(out, ",")?;
        }
    }
    if let Op::Const { value, .. } = &inst.op {
        write!(out, " {value:?}")?;
    }
    for (i, &v) in inst.operands.iter().enumerate() {
        write!(out, "{}", if i == 0 { " " } else { ", " })?;
        write_value(out, f, v)?;
    }
    let attrs = inst.op.attrs();
    if !attrs.is_empty() {
        write!(out, " {{")?;
        for (i, (k, v)) in attrs.iter().enumerate() {
            if i > 0 {
                write!(out, ", ")?;
            }
            write!(out, "{k}=")?;
            write_attr(out, v)?;
        }
        write!(out, "}}")?;
    }
    write!(out, " : {}", inst.ty)?;
    if let Some(loc) = &inst.loc {
        write!(out, "  loc({})", Name(loc))?;
    }
    writeln!(out)
}

fn write_attr(out: &mut impl Write, a: &Attr) -> fmt::Result {
    match a {
        Attr::Int(x) => write!(out, "{x}"),
        Attr::Ints(xs) => write_list(out, xs, |out, x| write!(out, "{x}")),
        Attr::F32(x) => write!(out, "{x:?}"),
    }
}

fn write_list<W: Write, T>(
    out: &mut W,
    items: &[T],
    mut item: impl FnMut(&mut W, &T) -> fmt::Result,
) -> fmt::Result {
    write!(out, "[")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            write!(out, ", ")?;
        }
        item(out, x)?;
    }
    write!(out, "]")
}

/// Characters of a bare word token (header keys and values, numbers, names).
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A name that prints without quotes: `fc1.weight`, `conv-1`, `_x`.
pub(crate) fn is_bare_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(is_word_char)
}

/// A header key or value that prints without quotes.
pub(crate) fn is_bare_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_word_char)
}

/// A name (module, parameter, function, argument, layer, location): bare when it is an
/// identifier, so an all-digit argument name, which would read as an instruction number, is quoted.
struct Name<'a>(&'a str);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_name(self.0) {
            f.write_str(self.0)
        } else {
            Quoted(self.0).fmt(f)
        }
    }
}

/// A header key or value: bare when it is one word token.
struct Word<'a>(&'a str);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_word(self.0) {
            f.write_str(self.0)
        } else {
            Quoted(self.0).fmt(f)
        }
    }
}

/// `"..."` with `\"`, `\\`, `\n`, `\r`, `\t` and `\u{..}` for other control characters.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}
