//! The `dropback` pass: its IR for both scopes and the frozen step, and its refusals.

use sparsec_ir::func_names::{TRAIN_STEP, TRAIN_STEP_FROZEN};
use sparsec_ir::spec::{DropbackScope, Method};
use sparsec_ir::{parse_module, print_module, Module, Op};
use sparsec_passes::{apply_dropback, build_train_step};
use sparsec_test_support::examples::{example, lower};

fn ops(m: &Module, func: &str, name: &str) -> usize {
    m.func(func)
        .unwrap()
        .insts
        .iter()
        .filter(|i| i.op.name() == name)
        .count()
}

fn dropback(m: &Module) -> Module {
    let out = apply_dropback(&build_train_step(m).unwrap()).unwrap();
    // The result prints and parses back (the parser verifies).
    assert_eq!(parse_module(&print_module(&out)).unwrap(), out);
    out
}

#[test]
fn global_scope_selects_once_over_every_tracked_weight() {
    let m = dropback(&lower(&example("lenet300_dropback"), Some(4)));
    assert_eq!(ops(&m, TRAIN_STEP, "dropback_score"), 6);
    assert_eq!(ops(&m, TRAIN_STEP, "topk_select"), 1);
    assert_eq!(ops(&m, TRAIN_STEP, "dropback_apply"), 6);
    assert_eq!(ops(&m, TRAIN_STEP, "store"), 6);
    assert!(m.func(TRAIN_STEP_FROZEN).is_none());
    let f = m.func(TRAIN_STEP).unwrap();
    let sel = f
        .insts
        .iter()
        .find(|i| matches!(i.op, Op::TopkSelect { k: 10_664 }))
        .unwrap();
    assert_eq!(sel.ty.to_string(), "i32[266610]{sparse 10664}");
    // The offsets are the running sizes in parameter order.
    let offsets: Vec<u64> = f
        .insts
        .iter()
        .filter_map(|i| match i.op {
            Op::DropbackApply { offset, .. } => Some(offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        offsets,
        vec![0, 235_200, 235_500, 265_500, 265_600, 266_600]
    );
}

#[test]
fn per_layer_scope_and_the_frozen_step() {
    let m = dropback(&lower(&example("lenet300_dropback_freeze"), Some(4)));
    let Some(Method::Dropback { scope, k, .. }) = m.method.as_ref().map(|s| &s.method) else {
        panic!("dropback")
    };
    assert_eq!((*scope, *k), (DropbackScope::PerLayer, 20_000));
    assert_eq!(ops(&m, TRAIN_STEP, "topk_select"), 6);
    let ks: u64 = m
        .func(TRAIN_STEP)
        .unwrap()
        .insts
        .iter()
        .filter_map(|i| match i.op {
            Op::TopkSelect { k } => Some(k),
            _ => None,
        })
        .sum();
    assert_eq!(ks, 20_000);
    // The frozen step: no scores, no top-k; each weight's own tracked set.
    assert_eq!(ops(&m, TRAIN_STEP_FROZEN, "topk_select"), 0);
    assert_eq!(ops(&m, TRAIN_STEP_FROZEN, "dropback_score"), 0);
    assert_eq!(ops(&m, TRAIN_STEP_FROZEN, "tracked_set"), 6);
    assert_eq!(ops(&m, TRAIN_STEP_FROZEN, "store"), 6);
    let (a, b) = (
        m.func(TRAIN_STEP).unwrap(),
        m.func(TRAIN_STEP_FROZEN).unwrap(),
    );
    assert_eq!(a.args, b.args);
}

#[test]
fn momentum_and_other_methods_are_refused() {
    let mut m = lower(&example("lenet300_dropback"), Some(4));
    m.train.as_mut().unwrap().optimizer.momentum = 0.9;
    // The method refuses before any pass runs, in the pipeline.
    let pipeline = sparsec_passes::Pipeline::for_module(&m, None);
    match pipeline.run(m, sparsec_ir::Stage::Train, &mut |_, _| {}) {
        Err(sparsec_passes::PipelineError::Refused(e)) => assert!(e.contains("momentum"), "{e}"),
        other => panic!("not refused: {:?}", other.map(|m| m.stage)),
    }
    let admm = build_train_step(&lower(&example("lenet5_admm"), Some(4))).unwrap();
    assert!(apply_dropback(&admm).is_err());
}
