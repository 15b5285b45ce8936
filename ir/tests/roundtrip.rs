//! print → parse → print is the identity on text, and parse ∘ print is the identity on modules.

use std::collections::BTreeSet;

use sparsec_ir::{parse_module, parse_module_unverified, print_module, verify, Op};
use sparsec_test_support::modules;

fn roundtrip(m: &sparsec_ir::Module) {
    verify(m).unwrap_or_else(|e| panic!("{} does not verify: {e:?}", m.name));
    let text = print_module(m);
    let parsed = parse_module(&text).unwrap_or_else(|e| {
        let (line, col) = e.line_col(&text);
        panic!("{line}:{col}: {}\n{text}", e.message)
    });
    assert_eq!(&parsed, m, "parse(print(m)) != m for\n{text}");
    assert_eq!(print_module(&parsed), text);
    assert_eq!(parse_module_unverified(&text).as_ref(), Ok(m));
    assert_eq!(m.to_string(), text, "Display agrees with print_module");
}

#[test]
fn hand_built_modules_round_trip() {
    for m in modules::all_modules() {
        roundtrip(&m);
    }
}

#[test]
fn every_op_is_covered() {
    let mut used = BTreeSet::new();
    for m in [
        modules::mlp(),
        modules::conv_net(),
        modules::odd_module(),
        modules::opt_forms(),
    ] {
        let text = sparsec_ir::print_module(&m);
        let back = sparsec_ir::parse_module(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, m, "{} does not round-trip", m.name);
        for f in &m.funcs {
            for inst in &f.insts {
                used.insert(inst.op.name());
            }
        }
    }
    let all: BTreeSet<&str> = Op::names().into_iter().collect();
    let missing: Vec<_> = all.difference(&used).collect();
    assert!(missing.is_empty(), "ops not exercised: {missing:?}");
}

#[test]
fn every_storage_and_init_is_covered() {
    let text = print_module(&modules::mlp());
    for s in [
        "storage=dense",
        "storage=seeded",
        "storage=tracked(budget=8)",
        "storage=masked(nnz=2)",
        "role=mask(@fc2.bias)",
        "init=ones",
        "init=zeros",
        "init=uniform(-0.25, 0.25)",
    ] {
        assert!(text.contains(s), "missing {s} in\n{text}");
    }
}

/// The exact text form, pinned: a change here is a format change (bump FORMAT_VERSION).
#[test]
fn golden_text() {
    let expected = r#"sparsec-ir 2 stage=train iterations=12 eclasses=340 stop=saturated extraction=ast-size
module lenet
data synthetic train_samples=1024 test_samples=256 seed=0
train epochs=10 batch=4 seed=1 log_every=100 optimizer=sgd(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=false) schedule=step(every=5, gamma=0.1)

param @conv1.weight : f32[4, 1, 3, 3] init=uniform(-0.33333334, 0.33333334) stream=0 storage=dense
param @conv1.bias : f32[4] init=zeros stream=1 storage=dense
param @fc.weight : f32[3, 16] init=uniform(-0.25, 0.25) stream=2 storage=dense

func @train_step(%x: f32[2, 1, 8, 8], %labels: i32[2]) -> (f32[], f32[4, 1, 3, 3], f32[4], f32[2, 1, 8, 8], f32[2, 1, 8, 8]) {
  %0 = param @conv1.weight : f32[4, 1, 3, 3]
  %1 = conv2d %x, %0 {stride=[1, 1], padding=[1, 1]} : f32[2, 4, 8, 8]  loc(conv1)
  %2 = param @conv1.bias : f32[4]
  %3 = bias_add %1, %2 : f32[2, 4, 8, 8]  loc(conv1)
  %4 = relu %3 : f32[2, 4, 8, 8]  loc(conv1)
  %5 = maxpool2d %4 {kernel=[2, 2], stride=[2, 2]} : f32[2, 4, 4, 4]  loc(pool1)
  %6 = avgpool2d %5 {kernel=[2, 2], stride=[2, 2]} : f32[2, 4, 2, 2]  loc(pool2)
  %7 = reshape %6 : f32[2, 16]
  %8 = param @fc.weight : f32[3, 16]
  %9 = matmul_nt %7, %8 : f32[2, 3]  loc(fc)
  %10 = softmax_xent %9, %labels : f32[]
  %11 = softmax_xent_grad %9, %labels : f32[2, 3]
  %12 = matmul %11, %8 : f32[2, 16]
  %13 = reshape %12 : f32[2, 4, 2, 2]
  %14 = avgpool2d_grad %13 {kernel=[2, 2], stride=[2, 2], input=[4, 4]} : f32[2, 4, 4, 4]  loc(pool2)
  %15 = maxpool2d_grad %14, %4 {kernel=[2, 2], stride=[2, 2]} : f32[2, 4, 8, 8]  loc(pool1)
  %16 = relu_grad %15, %3 : f32[2, 4, 8, 8]
  %17 = conv2d_weight_grad %x, %16 {stride=[1, 1], padding=[1, 1], kernel=[3, 3]} : f32[4, 1, 3, 3]  loc(conv1)
  %18 = reduce_sum %16 {axes=[0, 2, 3]} : f32[4]
  %19 = conv2d_input_grad %16, %0 {stride=[1, 1], padding=[1, 1], input=[8, 8]} : f32[2, 1, 8, 8]
  %20 = const 0.5 : f32[2, 1, 3, 3]
  %21 = conv2d %x, %20 {stride=[2, 2], padding=[0, 0]} : f32[2, 2, 3, 3]
  %22 = conv2d_input_grad %21, %20 {stride=[2, 2], padding=[0, 0], input=[8, 8]} : f32[2, 1, 8, 8]
  return %10, %17, %18, %19, %22
}
"#;
    let m = modules::conv_net();
    assert_eq!(print_module(&m), expected);
    assert_eq!(parse_module(expected).unwrap(), m);
}

#[test]
fn spec_lines_and_quoting() {
    let text = print_module(&modules::odd_module());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        r#"sparsec-ir 2 stage=opt stop="node limit" "weird key"="a\"b\\c\nd\te\u{1}" empty="" neg=-3.5"#
    );
    assert_eq!(lines[1], r#"module "réseau \"v2\"""#);
    assert_eq!(lines[2], r#"data idx dir="/data/with space/\"quoted\"""#);
    assert!(lines[3].ends_with("schedule=multistep(milestones=[3, 6], gamma=0.1)"));
    assert_eq!(
        lines[4],
        r#"method admm(keep={conv1: 0.2, "0": 0.009}, rho=0.0015, rho_growth=1.3, rounds=3, epochs_per_round=1, retrain_epochs=2, stages=[10.0, 30.0], at=admm(stage=2, round=3)) on=[conv1, "0", "has space"]"#
    );
    assert!(
        text.contains(r#"param @"0" : f32[2, 3] init=uniform(-1e-8, 1e-8) stream=7 storage=dense"#)
    );
    assert!(text.contains(
        r#"func @"fn with space"(%"0": f32[2, 3], %regen: f32[300, 784]{regen}, %sp: f32[300, 784]{sparse 10664}) -> (f32[2, 3], f32[300, 784]{regen}, f32[300, 784]{sparse 10664}, f32[2, 3], f32[2, 3]) {"#
    ));
    assert!(text.contains(r#"  %0 = param @"0" : f32[2, 3]  loc("layer \"q\"")"#));
    assert!(text.contains(r#"  %1 = add %"0", %0 : f32[2, 3]  loc("0")"#));
    assert!(text.contains("  %2 = const 3.4028235e38 : f32[2, 3]\n"));
    assert!(text.contains("  return %3, %regen, %sp, %\"0\", %5\n"));
    assert!(text.ends_with("\nfunc @empty() -> () {\n  return\n}\n"));

    let mlp = print_module(&modules::mlp());
    assert!(mlp.contains(
        "method dropback(k=100, scope=global, freeze_after=5, decay_init=0.9) on=[fc1, fc2]\n"
    ));
    assert!(mlp.contains("data fashion_mnist\n"));
    assert!(mlp.contains("const 1e-8 : f32[]"));
    assert!(mlp.contains("const -0.035714287 : f32[3, 8]"));
}

#[test]
fn bare_module_prints_header_only() {
    assert_eq!(
        print_module(&modules::bare()),
        "sparsec-ir 2 stage=ir\nmodule bare\n"
    );
}

/// Comments, blank lines and free horizontal whitespace are accepted and do not matter.
#[test]
fn comments_and_whitespace_are_ignored() {
    for m in [modules::mlp(), modules::conv_net(), modules::odd_module()] {
        let text = print_module(&m);
        let mut noisy = String::from("# RUN: sparsec emit --stage ir %s\n\n");
        for (i, line) in text.lines().enumerate() {
            // Spread tokens apart (outside strings: only lines without quotes), add comments.
            let spaced = if line.contains('"') {
                line.to_string()
            } else {
                line.replace(", ", " ,\t")
                    .replace(" = ", "   =   ")
                    .replace('(', " ( ")
                    .replace('[', "\t[ ")
            };
            noisy.push_str("  ");
            noisy.push_str(&spaced);
            if i % 2 == 0 {
                noisy.push_str("   # comment with \"quote\" and %0 = junk");
            }
            noisy.push_str("\r\n\n# a comment line\n");
        }
        let parsed = parse_module(&noisy).unwrap_or_else(|e| {
            let (l, c) = e.line_col(&noisy);
            panic!("{l}:{c}: {}\n{noisy}", e.message)
        });
        assert_eq!(parsed, m);
        assert_eq!(print_module(&parsed), text);
    }
}

/// The format of the brief's example, built for the LeNet-300-100 shapes.
#[test]
fn lenet300_example() {
    use sparsec_ir::spec::*;
    use sparsec_ir::{Func, Init, Storage, Type};
    let mut m = sparsec_ir::Module::new("lenet300", sparsec_ir::Stage::Ir);
    m.data = Some(DataSpec::FashionMnist { dir: None });
    m.train = Some(TrainSpec {
        epochs: 10,
        batch: 64,
        seed: 1,
        log_every: 100,
        optimizer: Optimizer {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
        schedule: Schedule::Constant,
    });
    m.method = Some(MethodSpec {
        method: Method::Dropback {
            k: 10664,
            scope: DropbackScope::Global,
            freeze_after: Some(5),
            decay_init: Some(0.9),
        },
        layers: vec!["fc1".into(), "fc2".into(), "fc3".into()],
    });
    let w = m.add_param(modules::param(
        "fc1.weight",
        &[300, 784],
        Init::Uniform {
            lo: -0.035714287,
            hi: 0.035714287,
        },
        0,
        Storage::Dense,
    ));
    m.add_param(modules::param(
        "fc1.bias",
        &[300],
        Init::Zeros,
        1,
        Storage::Tracked { budget: 300 },
    ));
    let mut f = Func::new("forward");
    let x = f.add_arg("x", Type::f32(vec![64, 1, 28, 28]));
    f.add_arg("labels", Type::i32(vec![64]));
    let flat = f
        .push(
            &m.params,
            sparsec_ir::Op::Reshape {
                shape: vec![64, 784],
            },
            &[x],
            Some("flat"),
        )
        .unwrap();
    let wv = f
        .push(&m.params, sparsec_ir::Op::Param(w), &[], None)
        .unwrap();
    let h = f
        .push(
            &m.params,
            sparsec_ir::Op::MatMul {
                ta: false,
                tb: true,
            },
            &[flat, wv],
            Some("fc1"),
        )
        .unwrap();
    f.results = vec![h];
    m.funcs.push(f);
    let expected = "\
sparsec-ir 2 stage=ir
module lenet300
data fashion_mnist
train epochs=10 batch=64 seed=1 log_every=100 optimizer=sgd(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=false) schedule=constant
method dropback(k=10664, scope=global, freeze_after=5, decay_init=0.9) on=[fc1, fc2, fc3]

param @fc1.weight : f32[300, 784] init=uniform(-0.035714287, 0.035714287) stream=0 storage=dense
param @fc1.bias : f32[300] init=zeros stream=1 storage=tracked(budget=300)

func @forward(%x: f32[64, 1, 28, 28], %labels: i32[64]) -> (f32[64, 300]) {
  %0 = reshape %x : f32[64, 784]  loc(flat)
  %1 = param @fc1.weight : f32[300, 784]
  %2 = matmul_nt %0, %1 : f32[64, 300]  loc(fc1)
  return %2
}
";
    assert_eq!(print_module(&m), expected);
    roundtrip(&m);
}

/// A method's state tied to a weight (`role=state(@w)`: ADMM's Z and U, a mask) prints, parses
/// back, and must have its weight's shape.
#[test]
fn a_weights_state_round_trips_and_has_the_weights_shape() {
    let text = "sparsec-ir 2 stage=ir
module m

param @w : f32[2, 3] init=uniform(-0.5, 0.5) stream=0 storage=dense
param @w.admm_z : f32[2, 3] init=zeros stream=1 storage=dense role=state(@w)

func @forward(%x: f32[4, 3]) -> (f32[4, 2]) {
  %0 = param @w : f32[2, 3]
  %1 = matmul_nt %x, %0 : f32[4, 2]
  return %1
}
";
    let m = parse_module(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.params[1].role,
        sparsec_ir::Role::State(sparsec_ir::ParamId(0))
    );
    assert_eq!(m.params[1].role.owner(), Some(sparsec_ir::ParamId(0)));
    roundtrip(&m);
    let wrong = text.replace("@w.admm_z : f32[2, 3]", "@w.admm_z : f32[3, 2]");
    let errors = verify(&parse_module_unverified(&wrong).unwrap()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.to_string().contains("same shape")),
        "{errors:?}"
    );
}
