//! Dropback end to end (docs/methods.md §1 invariants): at most k weights away from their
//! regenerated initial values after every step, checked in the interpreter's state and from a
//! checkpoint alone; k ≥ N equals dense SGD bit for bit; O(k) weight state; exact resumption with
//! every option (per-layer budgets, freezing, decaying initial values).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use sparsec_ir::interp::{initial_value, Input, Interpreter, State};

mod run_dir;

use run_dir::{fresh_dir, ok, sparsec, summary};
use sparsec_test_support::examples;
use sparsec_test_support::rng::Rng;

/// The LeNet-300-100 Dropback example on the bundled subset, with another `k` (or, with
/// `None`, without its method block: the paired dense baseline).
fn example_source(k: Option<u64>) -> String {
    let text = examples::example("lenet300_dropback");
    let text = text.replace(
        r#"data fashion_mnist { dir: "/usr/share/datasets/fashion-mnist" }"#,
        "data fashion_mnist",
    );
    match k {
        Some(k) => text.replace("k: 10_664", &format!("k: {k}")),
        None => text[..text.find("method dropback").expect("method block")].to_owned(),
    }
}

fn write_model(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.net"));
    std::fs::write(&path, text).unwrap();
    path
}

fn latest(dir: &Path) -> PathBuf {
    dir.join(std::fs::read_to_string(dir.join("latest")).unwrap().trim())
}

/// Weights of tracked parameters that differ (bitwise) from their initial values.
fn moved(m: &sparsec_ir::Module, state: &State<f32>) -> Vec<usize> {
    (0..m.params.len())
        .map(|p| match &state.tracked[p] {
            None => 0,
            Some(_) => {
                let w0: Vec<f32> = initial_value(m, p, state.init_scale);
                state
                    .dense_value(m, p)
                    .iter()
                    .zip(&w0)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count()
            }
        })
        .collect()
}

/// After every step, at most k weights differ from their regenerated initial values, for both
/// scopes; the state holds exactly those (and per layer, each within its share).
#[test]
fn every_step_keeps_at_most_k_weights_away_from_their_initial_values() {
    for (k, scope) in [(300u64, "global"), (1000, "per_layer")] {
        let text = example_source(Some(k)).replace("scope: global", &format!("scope: {scope}"));
        let program = sparsec::driver::program_from_source("t.net", text, false, &[])
            .unwrap_or_else(|_| panic!("compiles"));
        let m = sparsec::driver::train_step_module(&program).unwrap_or_else(|_| panic!("step"));
        let budgets = sparsec_ir::dropback::budgets(&m.params);
        let mut step = Interpreter::<f32>::new(&m, "train_step").unwrap();
        let mut state = State::<f32>::initial(&m);
        let mut rng = Rng::xorshift(7);
        let mut images = vec![0f32; 100 * 784];
        let mut labels = vec![0i32; 100];
        for t in 0..6 {
            for x in &mut images {
                *x = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            }
            for l in &mut labels {
                *l = (rng.next_u64() % 10) as i32;
            }
            step.run(
                &mut state,
                &[
                    Input::Float(&images),
                    Input::Int(&labels),
                    Input::Float(&[0.4]),
                ],
            )
            .unwrap();
            let moved = moved(&m, &state);
            let total: usize = moved.iter().sum();
            assert!(total as u64 <= k, "{scope} step {t}: {total} > {k}");
            assert!(total > 0, "{scope} step {t}: nothing trained");
            for (p, &n) in moved.iter().enumerate() {
                assert_eq!(state.stored_len(p), n, "stored = moved");
                if scope == "per_layer" {
                    let (_, share) = budgets.iter().find(|(id, _)| id.0 as usize == p).unwrap();
                    assert!(n as u64 <= *share, "{}: {n} > {share}", m.params[p].name);
                }
            }
            if scope == "global" {
                // The budget is used up at once: every step moves well over k weights.
                assert_eq!(total as u64, k, "step {t}");
            }
        }
    }
}

/// Regenerate every weight from the checkpoint's metadata alone (seed, stream, lo, hi) and
/// count those that differ: never more than k; the tracked entries in train_state are exactly
/// those weights.
#[test]
fn a_checkpoint_regenerates_to_at_most_k_changed_weights() {
    let k = 500;
    let model = write_model("db-k500", &example_source(Some(k)));
    let dir = fresh_dir("db-regen");
    ok(&sparsec(&[
        "train",
        model.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "max_steps=7",
    ]));
    let ckpt = latest(&dir);
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["sparsec"]).unwrap();
    assert_eq!(meta["step"], 7);
    let state_bytes = std::fs::read(ckpt.join("train_state.safetensors")).unwrap();
    let train_state = SafeTensors::deserialize(&state_bytes).unwrap();
    let mut changed_total = 0;
    for rec in meta["params"].as_array().unwrap() {
        let name = rec["name"].as_str().unwrap();
        let t = st.tensor(name).unwrap();
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (seed, stream) = (
            rec["seed"].as_u64().unwrap(),
            rec["stream"].as_u64().unwrap(),
        );
        let (lo, hi) = (
            rec["lo"].as_f64().unwrap() as f32,
            rec["hi"].as_f64().unwrap() as f32,
        );
        let changed: Vec<i32> = values
            .iter()
            .enumerate()
            .filter(|&(i, v)| {
                let w0 = match rec["init"].as_str().unwrap() {
                    "zeros" => 0.0,
                    _ => sparsec_ir::regen::uniform_at(seed, stream, i as u64, lo, hi),
                };
                v.to_bits() != w0.to_bits()
            })
            .map(|(i, _)| i as i32)
            .collect();
        let indices: Vec<i32> = train_state
            .tensor(&format!("{name}.tracked_indices"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(indices, changed, "{name}");
        changed_total += changed.len();
    }
    assert!(
        changed_total as u64 <= k && changed_total > 0,
        "{changed_total}"
    );
    assert_eq!(summary(&dir)["weights_stored"], changed_total as u64);
    let s = summary(&dir);
    assert_eq!(s["tracked"]["total"], changed_total as u64);
    assert!(s["tracked"]["layers"]["fc1"].is_u64(), "{s}");
}

fn tensors(path: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| (name, v.data().to_vec()))
        .collect()
}

/// k = N tracks everything: the run equals plain SGD bit for bit. k = N/25 keeps the weight
/// state under a tenth of the dense run's.
#[test]
fn dropback_with_k_n_is_dense_sgd_and_k_n_over_25_stores_a_tenth() {
    let n = 266_610;
    let steps = "max_steps=12";
    let run = |name: &str, k: Option<u64>| {
        let model = write_model(name, &example_source(k));
        let dir = fresh_dir(name);
        ok(&sparsec(&[
            "train",
            model.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--set",
            steps,
        ]));
        dir
    };
    let dense = run("db-dense", None);
    let all = run("db-all", Some(n));
    let a = tensors(&dense.join("model.safetensors"));
    let b = tensors(&all.join("model.safetensors"));
    assert_eq!(a.len(), 6);
    assert!(a == b, "k = N differs from dense SGD");
    assert_eq!(summary(&dense)["test_loss"], summary(&all)["test_loss"]);
    // Everything is tracked, but only weights that moved are stored (the corner pixels of
    // Fashion-MNIST are 0, so their weights never get a gradient).
    let stored = summary(&all)["weights_stored"].as_u64().unwrap();
    assert!(stored <= n && stored > n / 2, "{stored}");

    let sparse = run("db-25x", Some(n / 25));
    let (sd, ss) = (summary(&dense), summary(&sparse));
    assert_eq!(sd["weights_stored"], n);
    let stored = ss["weights_stored"].as_u64().unwrap();
    assert!(stored <= n / 25 && stored > 0, "{stored}");
    let (bd, bs) = (
        sd["weight_state_bytes"].as_u64().unwrap(),
        ss["weight_state_bytes"].as_u64().unwrap(),
    );
    assert_eq!(bd, 4 * n);
    assert_eq!(bs, 8 * stored);
    assert!(bs * 10 <= bd, "{bs} vs {bd}");
}

/// Stopped and resumed twice equals uninterrupted, with per-layer budgets, a frozen set and
/// decaying initial values; after the freeze the tracked set never grows.
#[test]
fn tiny_dropback_resumes_exactly_and_freezes() {
    let model = "tests/train/tiny_dropback.net";
    let whole = fresh_dir("db-resume-whole");
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        whole.to_str().unwrap(),
    ]));
    let parts = fresh_dir("db-resume-parts");
    let p = parts.to_str().unwrap();
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        p,
        "--set",
        "max_steps=9",
    ]));
    ok(&sparsec(&["train", "--resume", p, "--set", "max_steps=20"]));
    ok(&sparsec(&["train", "--resume", p]));
    for file in ["model.safetensors", "summary.json"] {
        if file == "summary.json" {
            let (a, b) = (summary(&whole), summary(&parts));
            for key in [
                "test_accuracy",
                "weights_stored",
                "weight_state_bytes",
                "tracked",
            ] {
                assert_eq!(a[key], b[key], "{key}");
            }
        } else {
            let a = std::fs::read(whole.join(file)).unwrap();
            let b = std::fs::read(parts.join(file)).unwrap();
            assert!(a == b, "{file} differs after resuming");
        }
    }
    assert_eq!(
        tensors(&latest(&whole).join("train_state.safetensors")),
        tensors(&latest(&parts).join("train_state.safetensors"))
    );
    // 16 steps per epoch; the set freezes after epoch 1 (step 16).
    let ckpt = |step: u32| {
        tensors(
            &whole
                .join(format!("checkpoints/step-{step:08}"))
                .join("train_state.safetensors"),
        )
    };
    let (frozen, end) = (ckpt(16), ckpt(48));
    for (name, idx) in &end {
        if name.ends_with(".tracked_indices") {
            let set = |b: &Vec<u8>| -> Vec<i32> {
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            let before = set(&frozen[name]);
            assert!(
                set(idx).iter().all(|i| before.contains(i)),
                "{name} grew after the freeze"
            );
        }
    }
    assert!(summary(&whole)["weights_stored"].as_u64().unwrap() <= 300);
}

#[test]
fn dropback_with_momentum_and_other_methods_are_refused() {
    let dir = fresh_dir("db-momentum");
    let out = sparsec(&[
        "train",
        "tests/train/tiny_dropback.net",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "momentum=0.9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("momentum") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!dir.exists());
}

/// One Dropback step equals the dense SGD step from the same weights followed by the selection
/// written out by hand: score |W' − W0|, global top-k (ties to the lower index), reset the rest.
#[test]
fn a_dropback_step_is_dense_sgd_then_the_selection() {
    let k = 2000usize;
    let compile = |text: String| {
        let program = sparsec::driver::program_from_source("t.net", text, false, &[])
            .unwrap_or_else(|_| panic!("compiles"));
        sparsec::driver::train_step_module(&program).unwrap_or_else(|_| panic!("step"))
    };
    let db = compile(example_source(Some(k as u64)));
    let dense = compile(example_source(None));
    let mut db_step = Interpreter::<f32>::new(&db, "train_step").unwrap();
    let mut dense_step = Interpreter::<f32>::new(&dense, "train_step").unwrap();
    let mut state = State::<f32>::initial(&db);
    let mut rng = Rng::xorshift(3);
    let mut images = vec![0f32; 100 * 784];
    let mut labels = vec![0i32; 100];
    for t in 0..4 {
        for x in &mut images {
            *x = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        }
        for l in &mut labels {
            *l = (rng.next_u64() % 10) as i32;
        }
        let args = [
            Input::Float(&images),
            Input::Int(&labels),
            Input::Float(&[0.4]),
        ];
        let mut d = State::<f32>::dense(
            (0..db.params.len())
                .map(|p| state.dense_value(&db, p))
                .collect(),
        );
        dense_step.run(&mut d, &args).unwrap();
        db_step.run(&mut state, &args).unwrap();
        // By hand.
        let w0: Vec<Vec<f32>> = (0..db.params.len())
            .map(|p| initial_value(&db, p, 1.0))
            .collect();
        let mut scored: Vec<(f32, usize)> = Vec::new();
        for (p, w0p) in w0.iter().enumerate() {
            for (w1, w) in d.values[p].iter().zip(w0p) {
                scored.push(((w1 - w).abs(), scored.len()));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let selected: std::collections::HashSet<usize> =
            scored[..k].iter().map(|&(_, i)| i).collect();
        let mut offset = 0;
        for (p, w0p) in w0.iter().enumerate() {
            let want: Vec<u32> = d.values[p]
                .iter()
                .zip(w0p)
                .enumerate()
                .map(|(i, (&w1, &w))| {
                    if selected.contains(&(offset + i)) {
                        w1
                    } else {
                        w
                    }
                    .to_bits()
                })
                .collect();
            let got: Vec<u32> = state
                .dense_value(&db, p)
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert!(want == got, "step {t}: {} differs", db.params[p].name);
            offset += want.len();
        }
    }
}
