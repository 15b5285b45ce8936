//! Timing of the reference interpreter on one LeNet-300-100 training step at batch 64.
//! Ignored by default (tests never assert on time); run with
//! `cargo test -p sparsec-ir --release --test interp_bench -- --ignored --nocapture`.

use std::time::Instant;

use sparsec_ir::interp::{Input, Interpreter, State};
use sparsec_ir::op::Unary;
use sparsec_ir::{Func, Init, Module, Op, Param, ParamId, Role, Storage, Type, Value};
use sparsec_test_support::modules::push;

const NT: Op = Op::MatMul {
    ta: false,
    tb: true,
};
const TN: Op = Op::MatMul {
    ta: true,
    tb: false,
};
const NN: Op = Op::MatMul {
    ta: false,
    tb: false,
};

/// Forward, loss, backward and plain SGD for 784-300-100-10 with ReLU.
fn lenet300(batch: usize) -> Module {
    let mut m = Module::new("lenet300", sparsec_ir::Stage::Train);
    let dims = [784usize, 300, 100, 10];
    for l in 0..3 {
        let bound = 1.0 / (dims[l] as f32).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            hi: bound,
        };
        for (suffix, shape, init) in [
            ("weight", vec![dims[l + 1], dims[l]], init),
            ("bias", vec![dims[l + 1]], init),
        ] {
            let stream = m.params.len() as u64;
            m.add_param(Param {
                name: format!("fc{}.{suffix}", l + 1),
                ty: Type::f32(shape),
                init,
                stream,
                storage: Storage::Dense,
                role: Role::Weight,
            });
        }
    }
    let mut f = Func::new("train_step");
    let x = f.add_arg("x", Type::f32(vec![batch, 784]));
    let labels = f.add_arg("labels", Type::i32(vec![batch]));
    let mut acts = vec![x];
    let mut pre = Vec::new();
    let mut ws = Vec::new();
    let mut bs = Vec::new();
    for l in 0..3 {
        let w = push(&mut f, &m, Op::Param(ParamId(2 * l)), &[], None);
        let b = push(&mut f, &m, Op::Param(ParamId(2 * l + 1)), &[], None);
        let h = push(&mut f, &m, NT, &[*acts.last().unwrap(), w], None);
        let z = push(&mut f, &m, Op::BiasAdd, &[h, b], None);
        ws.push(w);
        bs.push(b);
        pre.push(z);
        if l < 2 {
            let a = push(&mut f, &m, Op::Unary(Unary::Relu), &[z], None);
            acts.push(a);
        }
    }
    let logits = pre[2];
    let loss = push(&mut f, &m, Op::SoftmaxXent, &[logits, labels], None);
    let mut dz = push(&mut f, &m, Op::SoftmaxXentGrad, &[logits, labels], None);
    let lr = push(
        &mut f,
        &m,
        Op::Const {
            value: 0.01,
            shape: vec![],
        },
        &[],
        None,
    );
    for l in (0..3).rev() {
        let dw = push(&mut f, &m, TN, &[dz, acts[l]], None);
        let db = push(&mut f, &m, Op::ReduceSum { axes: vec![0] }, &[dz], None);
        if l > 0 {
            let da = push(&mut f, &m, NN, &[dz, ws[l]], None);
            dz = push(
                &mut f,
                &m,
                Op::UnaryGrad(Unary::Relu),
                &[da, pre[l - 1]],
                None,
            );
        }
        for (p, v, g) in [(2 * l, ws[l], dw), (2 * l + 1, bs[l], db)] {
            let step = push(&mut f, &m, Op::Scale, &[g, lr], None);
            let new = push(&mut f, &m, Op::Sub, &[v, step], None);
            push(&mut f, &m, Op::Store(ParamId(p as u32)), &[new], None);
        }
    }
    f.results = vec![loss];
    m.funcs.push(f);
    m
}

#[test]
#[ignore]
fn lenet300_train_step_time() {
    let batch = 64;
    let m = lenet300(batch);
    sparsec_ir::verify(&m).expect("valid module");
    let mut state = State::<f32>::initial(&m);
    let mut interp = Interpreter::<f32>::new(&m, "train_step").unwrap();
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
    let inputs = [Input::Float(&x[..]), Input::Int(&labels[..])];
    let first = interp.run(&mut state, &inputs).unwrap();
    let steps = 200;
    let t = Instant::now();
    let mut last = first.clone();
    for _ in 0..steps {
        last = interp.run(&mut state, &inputs).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / steps as f64;
    let loss0 = first[0].as_float().unwrap().data[0];
    let loss1 = last[0].as_float().unwrap().data[0];
    println!(
        "lenet300 train step (batch {batch}, f32, 1 thread): {:.3} ms/step, {:.1} s per 60k-sample epoch; loss {loss0} -> {loss1}",
        per * 1e3,
        per * (60_000.0 / batch as f64)
    );
}

/// LeNet-5 (conv 6@5×5 pad 2, maxpool 2, conv 16@5×5, maxpool 2, 400-120-84-10) forward,
/// loss and backward (every gradient, no update) at batch 64.
fn lenet5(batch: usize) -> Module {
    let mut m = Module::new("lenet5", sparsec_ir::Stage::Train);
    let shapes: [(&str, Vec<usize>); 10] = [
        ("conv1.weight", vec![6, 1, 5, 5]),
        ("conv1.bias", vec![6]),
        ("conv2.weight", vec![16, 6, 5, 5]),
        ("conv2.bias", vec![16]),
        ("fc1.weight", vec![120, 400]),
        ("fc1.bias", vec![120]),
        ("fc2.weight", vec![84, 120]),
        ("fc2.bias", vec![84]),
        ("fc3.weight", vec![10, 84]),
        ("fc3.bias", vec![10]),
    ];
    for (i, (name, shape)) in shapes.into_iter().enumerate() {
        m.add_param(Param {
            name: name.into(),
            ty: Type::f32(shape),
            init: Init::Uniform { lo: -0.1, hi: 0.1 },
            stream: i as u64,
            storage: Storage::Dense,
            role: Role::Weight,
        });
    }
    let mut f = Func::new("grads");
    let x = f.add_arg("x", Type::f32(vec![batch, 1, 28, 28]));
    let labels = f.add_arg("labels", Type::i32(vec![batch]));
    let p: Vec<Value> = (0..10)
        .map(|i| push(&mut f, &m, Op::Param(ParamId(i)), &[], None))
        .collect();
    let k2 = [2, 2];
    let pool = Op::MaxPool2d {
        kernel: k2,
        stride: k2,
    };
    let c1 = push(
        &mut f,
        &m,
        Op::Conv2d {
            stride: [1, 1],
            padding: [2, 2],
        },
        &[x, p[0]],
        None,
    );
    let z1 = push(&mut f, &m, Op::BiasAdd, &[c1, p[1]], None);
    let a1 = push(&mut f, &m, Op::Unary(Unary::Relu), &[z1], None);
    let p1 = push(&mut f, &m, pool.clone(), &[a1], None);
    let c2 = push(
        &mut f,
        &m,
        Op::Conv2d {
            stride: [1, 1],
            padding: [0, 0],
        },
        &[p1, p[2]],
        None,
    );
    let z2 = push(&mut f, &m, Op::BiasAdd, &[c2, p[3]], None);
    let a2 = push(&mut f, &m, Op::Unary(Unary::Relu), &[z2], None);
    let p2 = push(&mut f, &m, pool, &[a2], None);
    let flat = push(
        &mut f,
        &m,
        Op::Reshape {
            shape: vec![batch, 400],
        },
        &[p2],
        None,
    );
    let mut acts = vec![flat];
    let mut pre = Vec::new();
    for l in 0..3 {
        let h = push(&mut f, &m, NT, &[acts[l], p[4 + 2 * l]], None);
        let z = push(&mut f, &m, Op::BiasAdd, &[h, p[5 + 2 * l]], None);
        pre.push(z);
        if l < 2 {
            let a = push(&mut f, &m, Op::Unary(Unary::Relu), &[z], None);
            acts.push(a);
        }
    }
    let loss = push(&mut f, &m, Op::SoftmaxXent, &[pre[2], labels], None);
    let mut dz = push(&mut f, &m, Op::SoftmaxXentGrad, &[pre[2], labels], None);
    let mut results = vec![loss];
    for l in (0..3).rev() {
        results.push(push(&mut f, &m, TN, &[dz, acts[l]], None));
        results.push(push(
            &mut f,
            &m,
            Op::ReduceSum { axes: vec![0] },
            &[dz],
            None,
        ));
        let da = push(&mut f, &m, NN, &[dz, p[4 + 2 * l]], None);
        dz = if l > 0 {
            push(
                &mut f,
                &m,
                Op::UnaryGrad(Unary::Relu),
                &[da, pre[l - 1]],
                None,
            )
        } else {
            da
        };
    }
    let dp2 = push(
        &mut f,
        &m,
        Op::Reshape {
            shape: vec![batch, 16, 5, 5],
        },
        &[dz],
        None,
    );
    let da2 = push(
        &mut f,
        &m,
        Op::MaxPool2dGrad {
            kernel: k2,
            stride: k2,
        },
        &[dp2, a2],
        None,
    );
    let dz2 = push(&mut f, &m, Op::UnaryGrad(Unary::Relu), &[da2, z2], None);
    results.push(push(
        &mut f,
        &m,
        Op::Conv2dWeightGrad {
            stride: [1, 1],
            padding: [0, 0],
            kernel: [5, 5],
        },
        &[p1, dz2],
        None,
    ));
    let dp1 = push(
        &mut f,
        &m,
        Op::Conv2dInputGrad {
            stride: [1, 1],
            padding: [0, 0],
            input: [14, 14],
        },
        &[dz2, p[2]],
        None,
    );
    let da1 = push(
        &mut f,
        &m,
        Op::MaxPool2dGrad {
            kernel: k2,
            stride: k2,
        },
        &[dp1, a1],
        None,
    );
    let dz1 = push(&mut f, &m, Op::UnaryGrad(Unary::Relu), &[da1, z1], None);
    results.push(push(
        &mut f,
        &m,
        Op::Conv2dWeightGrad {
            stride: [1, 1],
            padding: [2, 2],
            kernel: [5, 5],
        },
        &[x, dz1],
        None,
    ));
    f.results = results;
    m.funcs.push(f);
    m
}

#[test]
#[ignore]
fn lenet5_grads_time() {
    let batch = 64;
    let m = lenet5(batch);
    sparsec_ir::verify(&m).expect("valid module");
    let mut state = State::<f32>::initial(&m);
    let mut interp = Interpreter::<f32>::new(&m, "grads").unwrap();
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
    let inputs = [Input::Float(&x[..]), Input::Int(&labels[..])];
    interp.run(&mut state, &inputs).unwrap();
    let steps = 20;
    let t = Instant::now();
    for _ in 0..steps {
        interp.run(&mut state, &inputs).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / steps as f64;
    println!(
        "lenet5 forward+backward (batch {batch}, f32, 1 thread): {:.3} ms/step",
        per * 1e3
    );
}
