//! The verifier rejects each broken invariant with a message naming where.

use sparsec_ir::spec::{DataSpec, Method, MethodSpec};
use sparsec_ir::verify::Site;
use sparsec_ir::{
    verify, Encoding, Func, Init, Inst, Module, Op, ParamId, Storage, Type, Value, VerifyError,
};
use sparsec_test_support::modules;

#[track_caller]
fn expect(m: &Module, fragment: &str) -> Vec<VerifyError> {
    let errors = verify(m).expect_err("expected a verifier error");
    assert!(
        errors.iter().any(|e| e.to_string().contains(fragment)),
        "no error contains {fragment:?}: {:?}",
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
    errors
}

#[test]
fn hand_built_modules_verify() {
    for m in modules::all_modules() {
        assert_eq!(verify(&m), Ok(()), "{}", m.name);
    }
}

#[test]
fn parameters() {
    let mut m = modules::mlp();
    m.params[1].name = "fc1.weight".into();
    expect(&m, "param @fc1.weight: duplicate parameter name");

    let mut m = modules::mlp();
    m.params[0].name.clear();
    expect(&m, "param #0: parameter name is empty");

    let mut m = modules::mlp();
    m.params[0].ty = Type::i32(vec![8, 16]);
    expect(&m, "is not f32");

    let mut m = modules::mlp();
    m.params[0].ty = m.params[0].ty.with_encoding(Encoding::Regen);
    expect(&m, "must be dense");

    let mut m = modules::mlp();
    m.params[0].ty = Type::f32(vec![1 << 20, 1 << 20]);
    expect(&m, "more than 2^31 elements");

    let mut m = modules::mlp();
    m.params[0].init = Init::Uniform { lo: 0.5, hi: 0.5 };
    expect(&m, "lo < hi");
    m.params[0].init = Init::Uniform {
        lo: f32::NEG_INFINITY,
        hi: 0.5,
    };
    expect(&m, "not finite");
    m.params[0].init = Init::Uniform {
        lo: f32::NAN,
        hi: 0.5,
    };
    expect(&m, "not finite");

    let mut m = modules::mlp();
    m.params[2].stream = 0;
    let errors = expect(
        &m,
        "param @fc2.weight: stream 0 is used by another parameter",
    );
    assert_eq!(errors[0].site, Site::Param(2));

    // A budget is the parameter's share of the method's k, never anything else.
    let mut m = modules::mlp();
    m.params[1].storage = Storage::Tracked { budget: 7 };
    expect(
        &m,
        "param @fc1.bias: budget 7 is not this parameter's share of the method's k=100 (scope global): expected 8",
    );
    let mut m = modules::mlp();
    m.method = None;
    m.params[1].storage = Storage::Tracked { budget: 9 };
    expect(&m, "param @fc1.bias: budget 9 exceeds the 8 elements");
}

#[test]
fn functions_and_arguments() {
    let mut m = modules::mlp();
    m.funcs[1].name = "forward".into();
    let errors = expect(&m, "@forward: duplicate function name");
    assert_eq!(errors[0].site, Site::Func(1));

    let mut m = modules::mlp();
    m.funcs[0].args[1].name = "x".into();
    expect(&m, "@forward arg %x: duplicate argument name");

    let mut m = modules::mlp();
    m.funcs[0].args[0].ty = Type::f32(vec![1; 17]);
    expect(&m, "rank 17 exceeds the limit of 16");
}

#[test]
fn instructions() {
    // Operand defined later (SSA order).
    let mut m = modules::mlp();
    m.funcs[0].insts[2].operands[0] = Value::Inst(5);
    let errors = expect(&m, "@forward %2: operand %5 is used before it is defined");
    assert_eq!(errors[0].site, Site::Inst { func: 0, inst: 2 });

    // Operand out of range.
    let mut m = modules::mlp();
    m.funcs[0].insts[2].operands[0] = Value::Inst(999);
    expect(&m, "@forward %2: operand %999 does not exist");
    m.funcs[0].insts[2].operands[0] = Value::Arg(9);
    expect(&m, "@forward %2: argument #9 does not exist");

    // Wrong recorded type.
    let mut m = modules::mlp();
    m.funcs[0].insts[2].ty = Type::f32(vec![4, 9]);
    let errors = expect(
        &m,
        "@forward %2: `matmul_nt` produces f32[4, 8], but the instruction says f32[4, 9]",
    );
    assert_eq!(errors[0].site, Site::InstType { func: 0, inst: 2 });

    // Ill-typed operands.
    let mut m = modules::mlp();
    m.funcs[0].insts[2].operands[0] = Value::Arg(1);
    expect(
        &m,
        "@forward %2: operand 1 of `matmul_nt` must be f32, found i32[4]",
    );

    // Wrong operand count.
    let mut m = modules::mlp();
    m.funcs[0].insts[2].operands.pop();
    expect(&m, "`matmul_nt` takes 2 operand(s), got 1");

    // `param` of a parameter that does not exist.
    let mut m = modules::mlp();
    m.funcs[0].insts[1].op = Op::Param(ParamId(42));
    expect(
        &m,
        "@forward %1: `param` refers to parameter #42, which does not exist",
    );

    // A huge recorded type is rejected before anything else.
    let mut m = modules::mlp();
    m.funcs[0].insts[0].ty = Type::f32(vec![usize::MAX, usize::MAX]);
    expect(&m, "more than 2^31 elements");

    // Non-finite constants.
    let mut f = Func::new("g");
    f.insts.push(Inst {
        op: Op::Const {
            value: f32::NAN,
            shape: vec![],
        },
        operands: vec![],
        ty: Type::scalar_f32(),
        loc: None,
    });
    let mut m = modules::bare();
    m.funcs.push(f);
    expect(&m, "@g %0: constant NaN is not finite");
}

#[test]
fn results() {
    let mut m = modules::mlp();
    m.funcs[0].results.push(Value::Inst(1000));
    let errors = expect(&m, "@forward return: returns %1000, which does not exist");
    assert_eq!(errors[0].site, Site::Results { func: 0 });
    let mut m = modules::mlp();
    m.funcs[0].results.push(Value::Arg(2));
    expect(&m, "returns argument #2");
}

#[test]
fn spec() {
    let mut m = modules::mlp();
    m.method.as_mut().unwrap().layers.clear();
    expect(&m, "method: `on` lists no layers");

    let mut m = modules::mlp();
    m.method = Some(MethodSpec {
        method: Method::PruneTrain {
            ratio: f64::NAN,
            interval: 1,
            threshold: 0.1,
            lambda: None,
        },
        layers: vec!["fc1".into(), "fc1".into()],
    });
    expect(&m, "`ratio` is not finite");
    expect(&m, "lists layer `fc1` twice");

    let mut m = modules::mlp();
    m.train.as_mut().unwrap().batch = 0;
    m.train.as_mut().unwrap().optimizer.lr = f64::INFINITY;
    expect(&m, "train: `batch` must be at least 1");
    expect(&m, "train: `lr` is not finite");

    // The model file's ranges hold for a dump too (one definition: `spec::ranges`).
    let mut m = modules::mlp();
    let t = m.train.as_mut().unwrap();
    (
        t.optimizer.lr,
        t.optimizer.momentum,
        t.optimizer.weight_decay,
    ) = (-0.05, 0.0, -1.0);
    (t.optimizer.nesterov, t.epochs, t.log_every) = (true, 0, 0);
    expect(&m, "train: `lr` must be > 0, found -0.05");
    expect(&m, "train: `weight_decay` must be ≥ 0");
    expect(&m, "train: `nesterov` needs momentum > 0");
    expect(&m, "train: `epochs` must be at least 1");
    expect(&m, "train: `log_every` must be at least 1");
    m.train.as_mut().unwrap().optimizer.momentum = 1.5;
    expect(&m, "train: `momentum` must be in 0 ≤ momentum < 1");

    // Synthetic data must hold one batch to train and one sample to test, as a model file's
    // must (E0415, E0408 there).
    let mut m = modules::mlp();
    m.data = Some(DataSpec::Synthetic {
        train_samples: 0,
        test_samples: 0,
        seed: 0,
    });
    expect(
        &m,
        "data: synthetic `train_samples` 0 is less than one batch",
    );
    expect(&m, "data: synthetic `test_samples` must be at least 1");
    let batch = m.train.as_ref().unwrap().batch;
    m.data = Some(DataSpec::Synthetic {
        train_samples: batch,
        test_samples: 1,
        seed: 0,
    });
    assert_eq!(verify(&m), Ok(()));
}

/// All violations are reported, not just the first, in module order. Later instructions are
/// checked against the recorded types, so a wrong type can also break its users.
#[test]
fn reports_every_error() {
    let mut m = modules::mlp();
    m.params[0].stream = 1;
    m.funcs[0].insts[2].ty = Type::f32(vec![1]);
    m.funcs[1].results.push(Value::Inst(10_000));
    let sites: Vec<Site> = verify(&m)
        .unwrap_err()
        .into_iter()
        .map(|e| e.site)
        .collect();
    assert_eq!(
        sites,
        [
            Site::Param(1),
            Site::InstType { func: 0, inst: 2 },
            Site::Inst { func: 0, inst: 4 },
            Site::Results { func: 1 },
        ]
    );
}

/// The least-memory Dropback forms have one reader each: streamed scores only the selection,
/// new entries only the store of their own weight, and a store takes entries only from them.
#[test]
fn streamed_scores_and_entries_have_their_one_reader() {
    let streamed = |m: &Module| m.funcs.iter().position(|f| f.name == "streamed").unwrap();
    let base = modules::opt_forms();
    let fi = streamed(&base);
    // The score (%0) read by a product instead of the selection.
    let mut m = base.clone();
    let f = &mut m.funcs[fi];
    f.insts[1].op = Op::Unary(sparsec_ir::op::Unary::Relu);
    f.insts[1].ty = f.insts[0].ty.clone();
    expect(&m, "only `topk_select` reads streamed values");
    // The entries (%2) returned.
    let mut m = base.clone();
    m.funcs[fi].results.push(Value::Inst(2));
    expect(&m, "which only its one reader may read");
    // A streamed score returned.
    let mut m = base.clone();
    m.funcs[fi].results.push(Value::Inst(0));
    expect(&m, "made by `dropback_score_stream`");
    // Entries stored into another weight: the store's parameter is not tracked.
    let mut m = base.clone();
    let other = m.params.iter().position(|p| p.name == "fm.weight").unwrap();
    m.funcs[fi].insts[3].op = Op::Store(ParamId(other as u32));
    expect(&m, "only a tracked weight takes entries");
    // A store of the tracked values themselves.
    let mut m = base;
    let f = &mut m.funcs[fi];
    let w = match f.insts[2].op {
        Op::DropbackUpdateSgd { param, .. } => param,
        _ => unreachable!(),
    };
    f.insts.insert(
        3,
        Inst {
            op: Op::Tracked(w),
            operands: vec![],
            ty: f.insts[2].ty.clone(),
            loc: None,
        },
    );
    f.insts[4].operands = vec![Value::Inst(3)];
    f.results = vec![Value::Inst(1)];
    expect(&m, "takes sparse entries only from `dropback_update_sgd`");
}
