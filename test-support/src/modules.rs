//! IR modules built by hand with `Func::push` (between them they use every op, storage, init,
//! spec line and quoting case, for the IR's round trip, verifier, interpreter and mutation
//! tests), the builders they are made with, and tweaks of a module (another optimizer, its
//! weights).

use sparsec_ir::op::Hw;
use sparsec_ir::op::Unary;
use sparsec_ir::spec::{
    DataSpec, DropbackScope, KeepRatio, Method, MethodSpec, Optimizer, Schedule, TrainSpec,
};
use sparsec_ir::{Encoding, Func, Init, Module, Op, Param, ParamId, Role, Storage, Type, Value};

/// A weight (`Role::Weight`, `f32`) of the given shape, init, stream and storage.
pub fn param(name: &str, shape: &[usize], init: Init, stream: u64, storage: Storage) -> Param {
    Param {
        name: name.into(),
        ty: Type::f32(shape.to_vec()),
        init,
        stream,
        storage,
        role: Role::Weight,
    }
}

fn uniform(bound: f32) -> Init {
    Init::Uniform {
        lo: -bound,
        hi: bound,
    }
}

/// Push or panic with the op's name.
pub fn push(f: &mut Func, m: &Module, op: Op, operands: &[Value], loc: Option<&str>) -> Value {
    let name = op.name();
    f.push(&m.params, op, operands, loc)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn p(f: &mut Func, m: &Module, name: &str) -> Value {
    let id = m.param_by_name(name).expect("param");
    push(f, m, Op::Param(id), &[], None)
}

/// 10 epochs of batch 4, seed 1, SGD with lr 0.1 and momentum 0.9, on `schedule`.
pub fn train_spec(schedule: Schedule) -> TrainSpec {
    TrainSpec {
        epochs: 10,
        batch: 4,
        seed: 1,
        log_every: 100,
        optimizer: Optimizer {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
        schedule,
    }
}

/// A two-layer MLP: `forward`, and `train_step` with a hand-written backward pass and SGD update.
/// Together with [`conv_net`] it uses every op in `Op::names()`.
pub fn mlp() -> Module {
    let mut m = Module::new("mlp", sparsec_ir::Stage::Ir);
    m.data = Some(DataSpec::FashionMnist { dir: None });
    m.train = Some(train_spec(Schedule::Constant));
    m.method = Some(MethodSpec {
        method: Method::Dropback {
            k: 100,
            scope: DropbackScope::Global,
            freeze_after: Some(5),
            decay_init: Some(0.9),
        },
        layers: vec!["fc1".into(), "fc2".into()],
    });
    m.add_param(param(
        "fc1.weight",
        &[8, 16],
        uniform(0.25),
        0,
        Storage::Seeded,
    ));
    m.add_param(param(
        "fc1.bias",
        &[8],
        Init::Zeros,
        1,
        Storage::Tracked { budget: 8 },
    ));
    m.add_param(param(
        "fc2.weight",
        &[3, 8],
        uniform(0.35355338),
        2,
        Storage::Dense,
    ));
    m.add_param(param(
        "fc2.bias",
        &[3],
        Init::Zeros,
        3,
        Storage::Masked { nnz: 2 },
    ));
    let mut momentum = param(
        "fc1.weight.momentum",
        &[8, 16],
        Init::Zeros,
        4,
        Storage::Dense,
    );
    momentum.role = Role::Momentum(ParamId(0));
    m.add_param(momentum);
    // fc2.bias is `masked`: its mask follows it.
    let mut mask = param("fc2.bias.mask", &[3], Init::Ones, 5, Storage::Dense);
    mask.role = Role::Mask(ParamId(3));
    m.add_param(mask);

    for name in ["forward", "train_step"] {
        let mut f = Func::new(name);
        let x = f.add_arg("x", Type::f32(vec![4, 1, 4, 4]));
        let labels = f.add_arg("labels", Type::i32(vec![4]));
        let flat = push(
            &mut f,
            &m,
            Op::Reshape { shape: vec![4, 16] },
            &[x],
            Some("flat"),
        );
        let w1 = p(&mut f, &m, "fc1.weight");
        let h1 = push(
            &mut f,
            &m,
            Op::MatMul {
                ta: false,
                tb: true,
            },
            &[flat, w1],
            Some("fc1"),
        );
        let b1 = p(&mut f, &m, "fc1.bias");
        let z1 = push(&mut f, &m, Op::BiasAdd, &[h1, b1], Some("fc1"));
        let a1 = push(&mut f, &m, Op::Unary(Unary::Relu), &[z1], None);
        let a2 = push(&mut f, &m, Op::Unary(Unary::Tanh), &[a1], None);
        let a3 = push(&mut f, &m, Op::Unary(Unary::Sigmoid), &[a2], None);
        let w2 = p(&mut f, &m, "fc2.weight");
        let h2 = push(
            &mut f,
            &m,
            Op::MatMul {
                ta: false,
                tb: true,
            },
            &[a3, w2],
            Some("fc2"),
        );
        let b2 = p(&mut f, &m, "fc2.bias");
        let logits = push(&mut f, &m, Op::BiasAdd, &[h2, b2], Some("fc2"));
        let loss = push(&mut f, &m, Op::SoftmaxXent, &[logits, labels], Some("loss"));
        if name == "forward" {
            let pred = push(&mut f, &m, Op::Argmax, &[logits], None);
            f.results = vec![loss, logits, pred];
        } else {
            let g = push(
                &mut f,
                &m,
                Op::SoftmaxXentGrad,
                &[logits, labels],
                Some("loss"),
            );
            let dw2 = push(
                &mut f,
                &m,
                Op::MatMul {
                    ta: true,
                    tb: false,
                },
                &[g, a3],
                None,
            );
            let db2 = push(&mut f, &m, Op::ReduceSum { axes: vec![0] }, &[g], None);
            let da3 = push(
                &mut f,
                &m,
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                &[g, w2],
                None,
            );
            let da3t = push(
                &mut f,
                &m,
                Op::MatMul { ta: true, tb: true },
                &[w2, g],
                None,
            );
            let da3tt = push(&mut f, &m, Op::Reshape { shape: vec![4, 8] }, &[da3t], None);
            let da3 = push(&mut f, &m, Op::Add, &[da3, da3tt], None);
            let da2 = push(&mut f, &m, Op::UnaryGrad(Unary::Sigmoid), &[da3, a3], None);
            let da1 = push(&mut f, &m, Op::UnaryGrad(Unary::Tanh), &[da2, a2], None);
            let dz1 = push(&mut f, &m, Op::UnaryGrad(Unary::Relu), &[da1, z1], None);
            // The table's other activation, so that every op is exercised (results unused).
            let leaky = push(&mut f, &m, Op::Unary(Unary::LeakyRelu), &[z1], None);
            push(
                &mut f,
                &m,
                Op::UnaryGrad(Unary::LeakyRelu),
                &[leaky, z1],
                None,
            );
            let dw1 = push(
                &mut f,
                &m,
                Op::MatMul {
                    ta: true,
                    tb: false,
                },
                &[dz1, flat],
                None,
            );
            let db1 = push(&mut f, &m, Op::ReduceSum { axes: vec![0] }, &[dz1], None);
            let lr = push(
                &mut f,
                &m,
                Op::Const {
                    value: 0.1,
                    shape: vec![],
                },
                &[],
                None,
            );
            let step = push(&mut f, &m, Op::Scale, &[dw1, lr], Some("sgd"));
            let new_w1 = push(&mut f, &m, Op::Sub, &[w1, step], Some("sgd"));
            let new_w1 = push(&mut f, &m, Op::Store(ParamId(0)), &[new_w1], Some("sgd"));
            let buf = push(&mut f, &m, Op::Param(ParamId(4)), &[], None);
            let buf = push(&mut f, &m, Op::Add, &[buf, step], None);
            push(&mut f, &m, Op::Store(ParamId(4)), &[buf], None);
            let sq = push(&mut f, &m, Op::Mul, &[dw2, dw2], None);
            let half = push(
                &mut f,
                &m,
                Op::Const {
                    value: -0.035714287,
                    shape: vec![3, 8],
                },
                &[],
                None,
            );
            let sq = push(&mut f, &m, Op::Mul, &[sq, half], None);
            let tiny = push(
                &mut f,
                &m,
                Op::Const {
                    value: 1e-8,
                    shape: vec![],
                },
                &[],
                None,
            );
            let db2 = push(&mut f, &m, Op::Scale, &[db2, tiny], None);
            // Dropback on the tracked bias: score, one top-k over it and another score tensor,
            // apply, store; and the frozen form through `tracked_set`.
            let nb1 = push(&mut f, &m, Op::Sub, &[b1, db1], Some("dropback"));
            let s1 = push(&mut f, &m, Op::DropbackScore(ParamId(1)), &[nb1], None);
            let sel = push(&mut f, &m, Op::TopkSelect { k: 5 }, &[s1, sq], None);
            let ap = push(
                &mut f,
                &m,
                Op::DropbackApply {
                    param: ParamId(1),
                    offset: 0,
                },
                &[nb1, sel],
                None,
            );
            push(&mut f, &m, Op::Store(ParamId(1)), &[ap], None);
            let ts = push(&mut f, &m, Op::TrackedSet(ParamId(1)), &[], None);
            let frozen = push(
                &mut f,
                &m,
                Op::DropbackApply {
                    param: ParamId(1),
                    offset: 0,
                },
                &[nb1, ts],
                None,
            );
            f.results = vec![loss, new_w1, db1, sq, db2, sel, frozen];
        }
        m.funcs.push(f);
    }
    m
}

fn conv_weight_init() -> Init {
    uniform(1.0 / 3.0)
}

/// A small conv net with conv2d / maxpool2d / avgpool2d and their gradients.
pub fn conv_net() -> Module {
    let mut m = Module::new("lenet", sparsec_ir::Stage::Train);
    m.header = vec![
        ("iterations".into(), "12".into()),
        ("eclasses".into(), "340".into()),
        ("stop".into(), "saturated".into()),
        ("extraction".into(), "ast-size".into()),
    ];
    m.data = Some(DataSpec::Synthetic {
        train_samples: 1024,
        test_samples: 256,
        seed: 0,
    });
    m.train = Some(train_spec(Schedule::Step {
        every: 5,
        gamma: 0.1,
    }));
    m.add_param(param(
        "conv1.weight",
        &[4, 1, 3, 3],
        conv_weight_init(),
        0,
        Storage::Dense,
    ));
    m.add_param(param("conv1.bias", &[4], Init::Zeros, 1, Storage::Dense));
    m.add_param(param(
        "fc.weight",
        &[3, 16],
        uniform(0.25),
        2,
        Storage::Dense,
    ));
    let s: Hw = [1, 1];
    let pad: Hw = [1, 1];
    let k2: Hw = [2, 2];

    let mut f = Func::new("train_step");
    let x = f.add_arg("x", Type::f32(vec![2, 1, 8, 8]));
    let labels = f.add_arg("labels", Type::i32(vec![2]));
    let w = p(&mut f, &m, "conv1.weight");
    let c = push(
        &mut f,
        &m,
        Op::Conv2d {
            stride: s,
            padding: pad,
        },
        &[x, w],
        Some("conv1"),
    );
    let b = p(&mut f, &m, "conv1.bias");
    let z = push(&mut f, &m, Op::BiasAdd, &[c, b], Some("conv1"));
    let r = push(&mut f, &m, Op::Unary(Unary::Relu), &[z], Some("conv1"));
    let mp = push(
        &mut f,
        &m,
        Op::MaxPool2d {
            kernel: k2,
            stride: k2,
        },
        &[r],
        Some("pool1"),
    );
    let ap = push(
        &mut f,
        &m,
        Op::AvgPool2d {
            kernel: k2,
            stride: k2,
        },
        &[mp],
        Some("pool2"),
    );
    let flat = push(&mut f, &m, Op::Reshape { shape: vec![2, 16] }, &[ap], None);
    let fw = p(&mut f, &m, "fc.weight");
    let logits = push(
        &mut f,
        &m,
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[flat, fw],
        Some("fc"),
    );
    let loss = push(&mut f, &m, Op::SoftmaxXent, &[logits, labels], None);
    let g = push(&mut f, &m, Op::SoftmaxXentGrad, &[logits, labels], None);
    let dflat = push(
        &mut f,
        &m,
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[g, fw],
        None,
    );
    let dap = push(
        &mut f,
        &m,
        Op::Reshape {
            shape: vec![2, 4, 2, 2],
        },
        &[dflat],
        None,
    );
    let dmp = push(
        &mut f,
        &m,
        Op::AvgPool2dGrad {
            kernel: k2,
            stride: k2,
            input: [4, 4],
        },
        &[dap],
        Some("pool2"),
    );
    let dr = push(
        &mut f,
        &m,
        Op::MaxPool2dGrad {
            kernel: k2,
            stride: k2,
        },
        &[dmp, r],
        Some("pool1"),
    );
    let dz = push(&mut f, &m, Op::UnaryGrad(Unary::Relu), &[dr, z], None);
    let dw = push(
        &mut f,
        &m,
        Op::Conv2dWeightGrad {
            stride: s,
            padding: pad,
            kernel: [3, 3],
        },
        &[x, dz],
        Some("conv1"),
    );
    let db = push(
        &mut f,
        &m,
        Op::ReduceSum {
            axes: vec![0, 2, 3],
        },
        &[dz],
        None,
    );
    let dx = push(
        &mut f,
        &m,
        Op::Conv2dInputGrad {
            stride: s,
            padding: pad,
            input: [8, 8],
        },
        &[dz, w],
        None,
    );
    // A strided, unpadded convolution whose input size the gradient must be told.
    let w2 = push(
        &mut f,
        &m,
        Op::Const {
            value: 0.5,
            shape: vec![2, 1, 3, 3],
        },
        &[],
        None,
    );
    let y2 = push(
        &mut f,
        &m,
        Op::Conv2d {
            stride: [2, 2],
            padding: [0, 0],
        },
        &[x, w2],
        None,
    );
    let dx2 = push(
        &mut f,
        &m,
        Op::Conv2dInputGrad {
            stride: [2, 2],
            padding: [0, 0],
            input: [8, 8],
        },
        &[y2, w2],
        None,
    );
    f.results = vec![loss, dw, db, dx, dx2];
    m.funcs.push(f);
    m
}

/// Names and strings that need quoting, encoded argument types, empty functions.
pub fn odd_module() -> Module {
    let mut m = Module::new("réseau \"v2\"", sparsec_ir::Stage::Opt);
    m.header = vec![
        ("stop".into(), "node limit".into()),
        ("weird key".into(), "a\"b\\c\nd\te\u{1}".into()),
        ("empty".into(), String::new()),
        ("neg".into(), "-3.5".into()),
    ];
    m.data = Some(DataSpec::Idx {
        dir: "/data/with space/\"quoted\"".into(),
    });
    m.train = Some(train_spec(Schedule::MultiStep {
        milestones: vec![3, 6],
        gamma: 0.1,
    }));
    m.method = Some(MethodSpec {
        method: Method::Admm {
            keep: KeepRatio::PerLayer(vec![("conv1".into(), 0.2), ("0".into(), 0.009)]),
            rho: 0.0015,
            rho_growth: 1.3,
            rounds: 3,
            epochs_per_round: 1,
            retrain_epochs: 2,
            stages: vec![10.0, 30.0],
            at: Some(sparsec_ir::admm::Phase::Admm { stage: 2, round: 3 }),
        },
        layers: vec!["conv1".into(), "0".into(), "has space".into()],
    });
    m.add_param(param("0", &[2, 3], uniform(1e-8), 7, Storage::Dense));
    m.add_param(param(
        "has space.weight",
        &[],
        Init::Zeros,
        3,
        Storage::Seeded,
    ));
    let mut f = Func::new("fn with space");
    let a = f.add_arg("0", Type::f32(vec![2, 3]));
    let r = f.add_arg(
        "regen",
        Type::f32(vec![300, 784]).with_encoding(Encoding::Regen),
    );
    let s = f.add_arg(
        "sp",
        Type::f32(vec![300, 784]).with_encoding(Encoding::Sparse { capacity: 10664 }),
    );
    let w = push(
        &mut f,
        &m,
        Op::Param(sparsec_ir::ParamId(0)),
        &[],
        Some("layer \"q\""),
    );
    let sum = push(&mut f, &m, Op::Add, &[a, w], Some("0"));
    let big = push(
        &mut f,
        &m,
        Op::Const {
            value: 3.4028235e38,
            shape: vec![2, 3],
        },
        &[],
        None,
    );
    let sum = push(&mut f, &m, Op::Sub, &[sum, big], None);
    // The unary rows that are not activations (PruneTrain's group norms).
    let root = push(&mut f, &m, Op::Unary(Unary::Sqrt), &[a], None);
    let droot = push(&mut f, &m, Op::UnaryGrad(Unary::Sqrt), &[a, root], None);
    f.results = vec![sum, r, s, a, droot];
    m.funcs.push(f);
    m.funcs.push(Func::new("empty"));
    m
}

/// Every `DataSpec`, `Schedule` and `Method` variant, on copies of the MLP.
pub fn spec_variants() -> Vec<Module> {
    let datas = [
        None,
        Some(DataSpec::FashionMnist { dir: None }),
        Some(DataSpec::FashionMnist {
            dir: Some("data/fashion".into()),
        }),
        Some(DataSpec::Idx {
            dir: "mnist".into(),
        }),
        Some(DataSpec::Synthetic {
            train_samples: 1024,
            test_samples: 256,
            seed: u64::MAX,
        }),
    ];
    let schedules = [
        Schedule::Constant,
        Schedule::Step {
            every: 5,
            gamma: 0.1,
        },
        Schedule::MultiStep {
            milestones: vec![3, 6],
            gamma: 0.5,
        },
        Schedule::MultiStep {
            milestones: vec![],
            gamma: 1e-8,
        },
    ];
    let layers = vec!["fc1".to_string(), "fc2".to_string()];
    let methods = [
        None,
        Some(Method::Dropback {
            k: 10664,
            scope: DropbackScope::Global,
            freeze_after: None,
            decay_init: None,
        }),
        Some(Method::Dropback {
            // k ≥ 8 keeps `fc1.bias`'s budget at its 8 elements, as its functions are typed.
            k: 8,
            scope: DropbackScope::PerLayer,
            freeze_after: Some(5),
            decay_init: None,
        }),
        Some(Method::Dropback {
            // k ≥ 8 keeps `fc1.bias`'s budget at its 8 elements, as its functions are typed.
            k: 8,
            scope: DropbackScope::PerLayer,
            freeze_after: None,
            decay_init: Some(0.9),
        }),
        Some(Method::Admm {
            keep: KeepRatio::All(0.1),
            rho: 0.0015,
            rho_growth: 1.3,
            rounds: 3,
            epochs_per_round: 1,
            retrain_epochs: 2,
            stages: vec![10.0, 30.0],
            at: Some(sparsec_ir::admm::Phase::Retrain { stage: 1 }),
        }),
        Some(Method::Admm {
            keep: KeepRatio::PerLayer(vec![]),
            rho: f64::MIN_POSITIVE,
            rho_growth: 1.0,
            rounds: 1,
            epochs_per_round: 1,
            retrain_epochs: 0,
            stages: vec![],
            at: None,
        }),
        Some(Method::PruneTrain {
            ratio: 0.25,
            interval: 2,
            threshold: 0.0001,
            lambda: Some(0.003),
        }),
        Some(Method::ActivationDensity {
            resize_at: vec![2, 4],
            min_width: 1,
        }),
        Some(Method::ActivationDensity {
            resize_at: vec![],
            min_width: 0,
        }),
    ];
    let mut out = Vec::new();
    for (i, data) in datas.iter().enumerate() {
        for (j, schedule) in schedules.iter().enumerate() {
            for (k, method) in methods.iter().enumerate() {
                // Not the full product: enough that every variant meets the others.
                if (i + j + k) % 3 != 0 && i != 0 {
                    continue;
                }
                let mut m = mlp();
                m.data = data.clone();
                m.train = if j == 3 && k == 0 {
                    None
                } else {
                    let mut t = train_spec(schedule.clone());
                    t.optimizer.nesterov = k % 2 == 1;
                    t.optimizer.weight_decay = 5e-4;
                    Some(t)
                };
                m.method = method.clone().map(|method| MethodSpec {
                    method,
                    layers: layers.clone(),
                });
                out.push(m);
            }
        }
    }
    out
}

/// A module with no parameters and no functions.
pub fn bare() -> Module {
    Module::new("bare", sparsec_ir::Stage::Ir)
}

/// [`mlp`], [`conv_net`], [`odd_module`], [`bare`] and the [`spec_variants`].
pub fn all_modules() -> Vec<Module> {
    let mut v = vec![mlp(), conv_net(), odd_module(), bare()];
    v.extend(spec_variants());
    v
}

/// The forms equality saturation introduces (regeneration, sparse corrections, fused Dropback
/// products and updates) on one tracked weight, and the sparse products of a masked one.
pub fn opt_forms() -> Module {
    let mut m = Module::new("opt_forms", sparsec_ir::Stage::Opt);
    m.train = Some(train_spec(Schedule::Constant));
    let tracked = Storage::Tracked { budget: 5 };
    m.method = Some(MethodSpec {
        method: Method::Dropback {
            k: 5,
            scope: DropbackScope::Global,
            freeze_after: None,
            decay_init: None,
        },
        layers: vec!["fc".into()],
    });
    let w = m.add_param(param("fc.weight", &[4, 3], uniform(0.5), 0, tracked));
    let fm = m.add_param(param(
        "fm.weight",
        &[4, 3],
        uniform(0.5),
        1,
        Storage::Masked { nnz: 6 },
    ));
    let mut mask = param("fm.weight.mask", &[4, 3], Init::Ones, 2, Storage::Dense);
    mask.role = Role::Mask(fm);
    let mask = m.add_param(mask);
    let mut f = Func::new("train_step");
    let x = f.add_arg("x", Type::f32(vec![2, 3]));
    let dy = f.add_arg("dy", Type::f32(vec![2, 4]));
    let lr = f.add_arg("lr", Type::scalar_f32());
    let r = push(&mut f, &m, Op::Regen(w), &[], None);
    let t = push(&mut f, &m, Op::Tracked(w), &[], None);
    let c = push(&mut f, &m, Op::Correction(w), &[], None);
    let eff = push(&mut f, &m, Op::Overlay, &[r, t], None);
    let nt = Op::MatMul {
        ta: false,
        tb: true,
    };
    let y_dense = push(&mut f, &m, nt.clone(), &[x, eff], None);
    let y_regen = push(&mut f, &m, nt.clone(), &[x, r], None);
    let y_corr = push(&mut f, &m, nt, &[x, c], None);
    let y_dist = push(&mut f, &m, Op::Add, &[y_regen, y_corr], None);
    let y_fused = push(&mut f, &m, Op::MatMulNtWeight(w), &[x], Some("fc"));
    let dx = push(&mut f, &m, Op::MatMulWeight(w), &[dy], Some("fc"));
    let score = push(&mut f, &m, Op::DropbackScoreSgd(w), &[dy, x, lr], None);
    let sel = push(&mut f, &m, Op::TopkSelect { k: 5 }, &[score], None);
    let new = push(
        &mut f,
        &m,
        Op::DropbackApplySgd {
            param: w,
            offset: 0,
        },
        &[dy, x, lr, sel],
        None,
    );
    push(&mut f, &m, Op::Store(w), &[new], None);
    let idx = push(&mut f, &m, Op::MaskIndex(mask), &[], None);
    let y_masked = push(&mut f, &m, Op::MaskedMatMulNt(fm), &[x, idx], Some("fm"));
    let dx_masked = push(&mut f, &m, Op::MaskedMatMul(fm), &[dy, idx], Some("fm"));
    let g_masked = push(&mut f, &m, Op::MaskedGrad, &[dy, x, idx], None);
    f.results = vec![y_dense, y_dist, y_fused, dx, y_masked, dx_masked, g_masked];
    m.funcs.push(f);
    // The least-memory forms: scores remade by their selection, entries made directly.
    let mut s = Func::new("streamed");
    let x = s.add_arg("x", Type::f32(vec![2, 3]));
    let dy = s.add_arg("dy", Type::f32(vec![2, 4]));
    let lr = s.add_arg("lr", Type::scalar_f32());
    let score = push(&mut s, &m, Op::DropbackScoreStream(w), &[dy, x, lr], None);
    let sel = push(&mut s, &m, Op::TopkSelect { k: 5 }, &[score], None);
    let entries = push(
        &mut s,
        &m,
        Op::DropbackUpdateSgd {
            param: w,
            offset: 0,
        },
        &[dy, x, lr, sel],
        None,
    );
    push(&mut s, &m, Op::Store(w), &[entries], None);
    s.results = vec![sel];
    m.funcs.push(s);
    // The masked convolutions, on a masked filter bank.
    let cm = m.add_param(param(
        "cm.weight",
        &[2, 1, 2, 2],
        uniform(0.5),
        3,
        Storage::Masked { nnz: 3 },
    ));
    let mut cmask = param(
        "cm.weight.mask",
        &[2, 1, 2, 2],
        Init::Ones,
        4,
        Storage::Dense,
    );
    cmask.role = Role::Mask(cm);
    let cmask = m.add_param(cmask);
    let mut g = Func::new("masked_conv");
    let x = g.add_arg("x", Type::f32(vec![1, 1, 3, 3]));
    let dy = g.add_arg("dy", Type::f32(vec![1, 2, 2, 2]));
    let (stride, padding) = ([1, 1], [0, 0]);
    let idx = push(&mut g, &m, Op::MaskIndex(cmask), &[], None);
    let y = push(
        &mut g,
        &m,
        Op::MaskedConv2d {
            param: cm,
            stride,
            padding,
        },
        &[x, idx],
        Some("cm"),
    );
    let dx = push(
        &mut g,
        &m,
        Op::MaskedConv2dInputGrad {
            param: cm,
            stride,
            padding,
            input: [3, 3],
        },
        &[dy, idx],
        Some("cm"),
    );
    let dw = push(
        &mut g,
        &m,
        Op::MaskedConv2dWeightGrad {
            stride,
            padding,
            kernel: [2, 2],
        },
        &[x, dy, idx],
        None,
    );
    g.results = vec![y, dx, dw];
    m.funcs.push(g);
    m
}

// ---------------------------------------------------------------------------------------------
// Tweaks of a module

/// The same module with another optimizer.
pub fn with_optimizer(
    m: &Module,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
) -> Module {
    let mut m = m.clone();
    m.train.as_mut().expect("train spec").optimizer = Optimizer {
        lr,
        momentum,
        weight_decay,
        nesterov,
    };
    m
}

/// Plain SGD: the update is `W − lr·dW`, so with lr = 1 the gradient is `W − W'`.
pub fn plain_sgd(m: &Module) -> Module {
    with_optimizer(m, 1.0, 0.0, 0.0, false)
}

/// Indices of the weights (`Role::Weight`) of a module.
pub fn weights(m: &Module) -> Vec<usize> {
    (0..m.params.len())
        .filter(|&i| m.params[i].role == Role::Weight)
        .collect()
}
