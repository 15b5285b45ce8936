//! Every example model checks, and has the shapes and parameter counts the papers give.

use sparsec_frontend::model::LayerKind;
use sparsec_frontend::{check_source, render};
use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(name: &str) -> sparsec_frontend::CheckedModel {
    let path = examples_dir().join(name);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match check_source(&src) {
        Ok(m) => m,
        Err(d) => panic!(
            "{name} does not check:\n{}",
            render(&d, name, &src, sparsec_frontend::diag::ColorChoice::Never)
        ),
    }
}

#[test]
fn every_example_checks() {
    let mut n = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "net") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let src = std::fs::read_to_string(&path).expect("read");
            assert!(
                src.starts_with('#'),
                "{name} must start with a comment saying what it is"
            );
            load(&name);
            n += 1;
        }
    }
    assert!(n >= 7, "expected at least 7 examples, found {n}");
}

#[test]
fn lenet300_shapes() {
    let m = load("lenet300.net");
    assert_eq!(m.param_count(), 266_610);
    assert_eq!(m.input.shape, vec![1, 28, 28]);
    assert_eq!(m.logits, "fc3");
    assert_eq!(m.classes, 10);
    let fc1 = m.layer("fc1").unwrap();
    assert_eq!(
        fc1.kind,
        LayerKind::Dense {
            inputs: 784,
            outputs: 300,
            bias: true
        }
    );
    assert_eq!(fc1.inputs, vec!["flat".to_string()]);
    assert!(m.method.is_none());
    assert_eq!(m.train.optimizer.momentum, 0.9);
}

#[test]
fn lenet300_dropback_method() {
    use sparsec_ir::spec::{DropbackScope, Method};
    let m = load("lenet300_dropback.net");
    let spec = m.method.unwrap();
    assert_eq!(
        spec.method,
        Method::Dropback {
            k: 10_664,
            scope: DropbackScope::Global,
            freeze_after: None,
            decay_init: None
        }
    );
    assert_eq!(spec.layers, vec!["fc1", "fc2", "fc3"]);
    assert_eq!(m.train.epochs, 20);
    assert_eq!(m.train.batch, 100);
    assert_eq!(m.train.optimizer.lr, 0.1);
}

#[test]
fn lenet5_shapes() {
    let m = load("lenet5.net");
    assert_eq!(m.param_count(), 431_080);
    let shapes: Vec<(&str, Vec<usize>)> = m
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.out_shape.clone()))
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("conv1", vec![20, 24, 24]),
            ("pool1", vec![20, 12, 12]),
            ("conv2", vec![50, 8, 8]),
            ("pool2", vec![50, 4, 4]),
            ("flat", vec![800]),
            ("fc1", vec![500]),
            ("h1", vec![500]),
            ("fc2", vec![10]),
        ]
    );
    assert!(m.layer("conv1").unwrap().has_params());
    assert!(!m.layer("pool1").unwrap().has_params());
}

#[test]
fn admm_keep_map_and_stages() {
    use sparsec_ir::spec::{KeepRatio, Method};
    let m = load("lenet5_admm.net");
    let spec = m.method.unwrap();
    let Method::Admm {
        keep, stages, rho, ..
    } = spec.method
    else {
        panic!("not admm")
    };
    assert_eq!(
        keep,
        KeepRatio::PerLayer(vec![
            ("conv1".into(), 0.2),
            ("conv2".into(), 0.08),
            ("fc1".into(), 0.009),
            ("fc2".into(), 0.07)
        ])
    );
    assert_eq!(stages, vec![10.0, 30.0, 71.0]);
    assert_eq!(rho, 1e-3);
    assert_eq!(spec.layers, vec!["conv1", "conv2", "fc1", "fc2"]);
}

#[test]
fn structured_methods_never_select_the_output_layer() {
    let m = load("lenet5_prunetrain.net");
    assert_eq!(m.method.unwrap().layers, vec!["conv1", "conv2", "fc1"]);
    let m = load("lenet300_activation_density.net");
    assert_eq!(m.method.unwrap().layers, vec!["fc1", "fc2"]);
}

#[test]
fn resnet_tiny_residual() {
    let m = load("resnet_tiny.net");
    let res = m.layer("res").unwrap();
    assert_eq!(res.kind, LayerKind::Add);
    assert_eq!(res.inputs, vec!["c2".to_string(), "a0".to_string()]);
    assert_eq!(res.out_shape, vec![8, 16, 16]);
    assert_eq!(m.layer("down").unwrap().out_shape, vec![16, 4, 4]);
    assert_eq!(m.layer("flat").unwrap().out_shape, vec![64]);
    assert_eq!(m.classes, 5);
    assert_eq!(m.method.unwrap().layers, vec!["stem", "c1", "c2", "head"]);
}
