//! Equality saturation, one rule at a time (as egg's own tests do): every rule makes its left
//! and right sides equal when its condition holds and does nothing otherwise; the analysis
//! catches an unsound rule; the memory budget trades regeneration against storage.

use egg::{Rewrite, Runner, SimpleScheduler};
use sparsec_ir::spec::{
    DataSpec, DropbackScope, Method, MethodSpec, Optimizer, Schedule, TrainSpec,
};
use sparsec_ir::{Func, Init, Module, Op, Param, ParamId, Role, Storage, Type, Value};
use sparsec_passes::eqsat::analysis::ValueFacts;
use sparsec_passes::eqsat::convert::func_to_graph;
use sparsec_passes::eqsat::lang::Node;
use sparsec_passes::eqsat::rules::rewrite;
use sparsec_passes::eqsat::{optimize, CostModel, Options};
use sparsec_passes::methods::dropback::rules::{
    apply_rewrite, stream_rewrite, update_rewrite, RULES,
};
use sparsec_test_support::examples;

/// A module with one weight `@w: f32[4, 3]` (tracked or dense) and an empty function.
fn module(tracked: bool) -> Module {
    let mut m = Module::new("rules", sparsec_ir::Stage::Train);
    m.data = Some(DataSpec::Synthetic {
        train_samples: 8,
        test_samples: 8,
        seed: 0,
    });
    m.train = Some(TrainSpec {
        epochs: 1,
        batch: 2,
        seed: 3,
        log_every: 1,
        optimizer: Optimizer {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        schedule: Schedule::Constant,
    });
    let storage = if tracked {
        m.method = Some(MethodSpec {
            method: Method::Dropback {
                k: 5,
                scope: DropbackScope::Global,
                freeze_after: None,
                decay_init: None,
            },
            layers: vec!["w".into()],
        });
        Storage::Tracked { budget: 5 }
    } else {
        Storage::Dense
    };
    m.add_param(Param {
        name: "w".into(),
        ty: Type::f32(vec![4, 3]),
        init: Init::Uniform { lo: -0.5, hi: 0.5 },
        stream: 0,
        storage,
        role: Role::Weight,
    });
    m
}

const W: ParamId = ParamId(0);

/// Builds both sides of a rule as instructions of one function returning `(lhs, rhs)`.
struct Sides {
    m: Module,
    f: Func,
    x: Value,
    dy: Value,
    lr: Value,
}

impl Sides {
    fn new(tracked: bool) -> Sides {
        let m = module(tracked);
        let mut f = Func::new("step");
        let x = f.add_arg("x", Type::f32(vec![2, 3]));
        let dy = f.add_arg("dy", Type::f32(vec![2, 4]));
        let lr = f.add_arg("lr", Type::scalar_f32());
        Sides { m, f, x, dy, lr }
    }

    fn op(&mut self, op: Op, operands: &[Value]) -> Value {
        let name = op.name();
        self.f
            .push(&self.m.params, op, operands, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn effective(&mut self) -> Value {
        let r = self.op(Op::Regen(W), &[]);
        let t = self.op(Op::Tracked(W), &[]);
        self.op(Op::Overlay, &[r, t])
    }

    fn sgd(&mut self) -> Value {
        let w = self.op(Op::Param(W), &[]);
        let g = self.op(
            Op::MatMul {
                ta: true,
                tb: false,
            },
            &[self.dy, self.x],
        );
        let s = self.op(Op::Scale, &[g, self.lr]);
        self.op(Op::Sub, &[w, s])
    }

    /// Are the two results one e-class after running `rule` alone?
    fn equal_after(mut self, lhs: Value, rhs: Value, rule: Rewrite<Node, ValueFacts>) -> bool {
        self.f.results = vec![lhs, rhs];
        let graph = func_to_graph(&self.m, &self.f).expect("graph");
        let roots = match &graph.egraph[graph.roots].nodes[..] {
            [Node::Op(_, children)] => children.clone(),
            _ => unreachable!(),
        };
        let runner: Runner<Node, ValueFacts, ()> = Runner::new(graph.egraph.analysis.clone())
            .with_egraph(graph.egraph)
            .with_iter_limit(8)
            .with_scheduler(SimpleScheduler)
            .run(&[rule]);
        runner.egraph.find(roots[0]) == runner.egraph.find(roots[1])
    }
}

fn rule(name: &str) -> Rewrite<Node, ValueFacts> {
    rewrite(RULES.iter().find(|r| r.name == name).expect("rule exists"))
}

#[test]
fn tracked_read() {
    let mut s = Sides::new(true);
    let lhs = s.op(Op::Param(W), &[]);
    let rhs = s.effective();
    assert!(s.equal_after(lhs, rhs, rule("tracked-read")));
}

#[test]
fn tracked_read_leaves_dense_weights_alone() {
    let mut s = Sides::new(false);
    let lhs = s.op(Op::Param(W), &[]);
    s.f.results = vec![lhs];
    let graph = func_to_graph(&s.m, &s.f).unwrap();
    let before = graph.egraph.total_number_of_nodes();
    let runner: Runner<Node, ValueFacts, ()> = Runner::new(graph.egraph.analysis.clone())
        .with_egraph(graph.egraph)
        .run(&[rule("tracked-read")]);
    assert_eq!(
        runner.egraph.total_number_of_nodes(),
        before,
        "no new e-node for a dense weight"
    );
}

#[test]
fn distribute_forward() {
    let mut s = Sides::new(true);
    let w = s.effective();
    let lhs = s.op(
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[s.x, w],
    );
    let r = s.op(Op::Regen(W), &[]);
    let c = s.op(Op::Correction(W), &[]);
    let a = s.op(
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[s.x, r],
    );
    let b = s.op(
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[s.x, c],
    );
    let rhs = s.op(Op::Add, &[a, b]);
    assert!(s.equal_after(lhs, rhs, rule("distribute-forward")));
}

#[test]
fn distribute_backward() {
    let mut s = Sides::new(true);
    let w = s.effective();
    let lhs = s.op(
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[s.dy, w],
    );
    let r = s.op(Op::Regen(W), &[]);
    let c = s.op(Op::Correction(W), &[]);
    let a = s.op(
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[s.dy, r],
    );
    let b = s.op(
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[s.dy, c],
    );
    let rhs = s.op(Op::Add, &[a, b]);
    assert!(s.equal_after(lhs, rhs, rule("distribute-backward")));
}

#[test]
fn fuse_forward_regen() {
    let mut s = Sides::new(true);
    let w = s.effective();
    let lhs = s.op(
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[s.x, w],
    );
    let rhs = s.op(Op::MatMulNtWeight(W), &[s.x]);
    assert!(s.equal_after(lhs, rhs, rule("fuse-forward-regen")));
}

#[test]
fn fuse_backward_regen() {
    let mut s = Sides::new(true);
    let w = s.effective();
    let lhs = s.op(
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[s.dy, w],
    );
    let rhs = s.op(Op::MatMulWeight(W), &[s.dy]);
    assert!(s.equal_after(lhs, rhs, rule("fuse-backward-regen")));
}

#[test]
fn fuse_score_gradient() {
    let mut s = Sides::new(true);
    let w1 = s.sgd();
    let lhs = s.op(Op::DropbackScore(W), &[w1]);
    let rhs = s.op(Op::DropbackScoreSgd(W), &[s.dy, s.x, s.lr]);
    assert!(s.equal_after(lhs, rhs, rule("fuse-score-gradient")));
}

#[test]
fn fuse_apply_gradient() {
    let mut s = Sides::new(true);
    let w1 = s.sgd();
    let sel = s.op(Op::TrackedSet(W), &[]);
    let apply = Op::DropbackApply {
        param: W,
        offset: 0,
    };
    let key = sparsec_passes::eqsat::lang::op_key(&apply);
    let lhs = s.op(apply, &[w1, sel]);
    let rhs = s.op(
        Op::DropbackApplySgd {
            param: W,
            offset: 0,
        },
        &[s.dy, s.x, s.lr, sel],
    );
    assert!(s.equal_after(lhs, rhs, apply_rewrite(key)));
}

#[test]
fn stream_scores() {
    let mut s = Sides::new(true);
    let score = s.op(Op::DropbackScoreSgd(W), &[s.dy, s.x, s.lr]);
    let streamed = s.op(Op::DropbackScoreStream(W), &[s.dy, s.x, s.lr]);
    let select = Op::TopkSelect { k: 5 };
    let key = sparsec_passes::eqsat::lang::op_key(&select);
    let lhs = s.op(select.clone(), &[score]);
    let rhs = s.op(select, &[streamed]);
    assert!(s.equal_after(lhs, rhs, stream_rewrite(key, &[true])));
}

#[test]
fn sparse_update() {
    let mut s = Sides::new(true);
    let sel = s.op(Op::TrackedSet(W), &[]);
    let apply = Op::DropbackApplySgd {
        param: W,
        offset: 0,
    };
    let key = sparsec_passes::eqsat::lang::op_key(&apply);
    let dense = s.op(apply, &[s.dy, s.x, s.lr, sel]);
    let entries = s.op(
        Op::DropbackUpdateSgd {
            param: W,
            offset: 0,
        },
        &[s.dy, s.x, s.lr, sel],
    );
    // The stores of the two (one function may store a weight once: two functions' worth).
    let lhs = s.op(Op::Store(W), &[dense]);
    let rhs = s.op(Op::Store(W), &[entries]);
    assert!(s.equal_after(lhs, rhs, update_rewrite(key)));
}

/// The analysis refuses to merge values of different types: an unsound rule fails loudly.
#[test]
#[should_panic(expected = "unsound rewrite")]
fn an_unsound_rule_is_caught_by_the_analysis() {
    let mut s = Sides::new(true);
    let lhs = s.op(Op::Param(W), &[]);
    let rhs = s.op(Op::Regen(W), &[]);
    // "A dense read equals its regenerated initial value" is false (and ill-typed: {regen}).
    let wrong: Rewrite<Node, ValueFacts> = Rewrite::new(
        "wrong",
        "(param ?p)".parse::<egg::Pattern<Node>>().unwrap(),
        "(regen ?p)".parse::<egg::Pattern<Node>>().unwrap(),
    )
    .unwrap();
    s.equal_after(lhs, rhs, wrong);
}

/// Regenerating in every product against storing the weight once: with expensive regeneration
/// the compiler stores it; a memory budget that the stored weight does not fit makes it
/// regenerate instead — the trade-off Dropback exists for.
#[test]
fn a_memory_budget_trades_storage_for_regeneration() {
    let text = examples::example("lenet300_dropback");
    let m = examples::lower(&text, Some(4));
    let m = sparsec_passes::build_train_step(&m).unwrap();
    let m = sparsec_passes::apply_dropback(&m).unwrap();
    let expensive_regen = CostModel {
        regen_word: 64,
        ..CostModel::default()
    };
    let free = Options {
        cost: expensive_regen,
        ..Options::default()
    };
    let (stored, reports) = optimize(&m, &free).unwrap();
    let step = reports.iter().find(|r| r.func == "train_step").unwrap();
    let reads = |m: &Module| {
        m.func("train_step")
            .unwrap()
            .insts
            .iter()
            // A materialised effective weight matrix: `overlay(regen @w, tracked @w)`.
            .filter(|i| matches!(i.op, Op::Overlay) && i.ty.rank() == 2)
            .count()
    };
    assert!(
        reads(&stored) > 0,
        "expensive regeneration: the weights are stored once"
    );
    let tight = Options {
        cost: expensive_regen,
        memory_budget: Some(step.memory_bytes - 1),
        ..Options::default()
    };
    let (regenerated, tight_reports) = optimize(&m, &tight).unwrap();
    let tight_step = tight_reports
        .iter()
        .find(|r| r.func == "train_step")
        .unwrap();
    assert!(tight_step.memory_bytes < step.memory_bytes);
    assert!(
        tight_step.time_cost >= step.time_cost,
        "the fitting program is not faster"
    );
    assert!(reads(&regenerated) < reads(&stored));
    let none = Options {
        memory_budget: Some(1),
        ..Options::default()
    };
    let err = optimize(&m, &none).unwrap_err();
    assert!(err.contains("no program fits"), "{err}");
}
