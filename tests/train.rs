//! Training end to end through the `sparsec` binary, on the bundled Fashion-MNIST subset and on
//! synthetic data: smoke runs, exact resumption, divergence handling, evaluation.

use std::path::Path;

mod run_dir;

use run_dir::{fresh_dir, ok, sparsec, summary};

#[test]
fn lenet300_one_epoch_on_the_bundled_subset_learns() {
    let dir = fresh_dir("smoke-lenet300");
    let out = sparsec(&[
        "train",
        "examples/lenet300.net",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "epochs=1",
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subset") || stderr.contains("fashion"),
        "data line: {stderr}"
    );
    let s = summary(&dir);
    // 6,000 training images, one epoch: far above the 10 % of guessing.
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.65, "test accuracy {acc}");
    assert_eq!(s["params_total"], 266_610);
    assert_eq!(s["steps"], 6000 / 64);
    for key in [
        "model",
        "method",
        "backend",
        "epochs",
        "steps",
        "test_accuracy",
        "train_loss",
        "samples_per_sec",
        "params_total",
        "weights_stored",
        "weight_state_bytes",
        "peak_rss_bytes",
        "seed",
        "compile_ms",
        "wall_seconds",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}");
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let epoch_line = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "epoch")
        .expect("an epoch line");
    assert!(epoch_line["sparsity"]["fc1.weight"].is_number());
    // eval agrees with the run's own final evaluation.
    let eval = ok(&sparsec(&[
        "eval",
        "examples/lenet300.net",
        "--weights",
        dir.to_str().unwrap(),
    ]));
    assert!(
        eval.contains(&format!("{:.2}%", 100.0 * acc)),
        "eval says {eval}, the run said {acc}"
    );
}

/// A run stopped by max_steps and resumed ends with the same bytes as one never stopped.
#[test]
fn a_stopped_and_resumed_run_equals_an_uninterrupted_one() {
    let model = "tests/train/tiny_momentum.net";
    let whole = fresh_dir("resume-whole");
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        whole.to_str().unwrap(),
    ]));

    let parts = fresh_dir("resume-parts");
    let p = parts.to_str().unwrap();
    // Stop mid-epoch (16 steps per epoch), then twice more, then to the end.
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        p,
        "--set",
        "max_steps=21",
    ]));
    assert_eq!(summary(&parts)["steps"], 21);
    ok(&sparsec(&["train", "--resume", p, "--set", "max_steps=40"]));
    ok(&sparsec(&["train", "--resume", p]));

    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(parts.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    assert_eq!(metrics(&whole), metrics(&parts), "metrics differ");
    assert_eq!(
        summary(&whole)["test_accuracy"],
        summary(&parts)["test_accuracy"]
    );
}

/// A run's metrics lines without their wall-clock times.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("wall");
            v
        })
        .collect()
}

#[test]
fn max_steps_zero_writes_the_initial_checkpoint() {
    let dir = fresh_dir("initial");
    ok(&sparsec(&[
        "train",
        "tests/train/tiny_momentum.net",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "max_steps=0",
    ]));
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    assert_eq!(latest.trim(), "checkpoints/step-00000000");
    assert_eq!(summary(&dir)["steps"], 0);
}

/// `--profile` says where the step's time went, kernel by kernel, without changing a bit.
#[test]
fn a_profiled_run_reports_its_kernels_and_trains_the_same_bits() {
    let plain = fresh_dir("profile-plain");
    let profiled = fresh_dir("profile-on");
    let model = "tests/train/tiny_momentum.net";
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        plain.to_str().unwrap(),
    ]));
    let out = ok(&sparsec(&[
        "train",
        model,
        "--out",
        profiled.to_str().unwrap(),
        "--profile",
    ]));
    assert!(out.contains("profile of @train_step"), "{out}");
    assert!(out.contains("ms/run"), "{out}");
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(profiled.join("profile.json")).unwrap())
            .unwrap();
    let step = &profile["functions"]["train_step"];
    assert_eq!(step["runs"], summary(&profiled)["steps"]);
    let kernels = step["kernels"].as_array().unwrap();
    assert!(kernels
        .iter()
        .any(|k| k["kernel"].as_str().unwrap().starts_with("gemm")
            && k["layers"].as_str().unwrap().contains('h')));
    let sum: f64 = kernels.iter().map(|k| k["seconds"].as_f64().unwrap()).sum();
    assert!(sum > 0.0 && (sum - step["seconds"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(
        std::fs::read(plain.join("model.safetensors")).unwrap(),
        std::fs::read(profiled.join("model.safetensors")).unwrap()
    );
    // The interpreter has no kernels to time: a usage error, before anything is written.
    let interp = fresh_dir("profile-interp");
    let out = sparsec(&[
        "train",
        model,
        "--out",
        interp.to_str().unwrap(),
        "--profile",
        "--backend",
        "interp",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--profile"));
    assert!(!interp.exists());
}

#[test]
fn a_diverging_run_stops_with_a_message_and_keeps_its_checkpoint() {
    let dir = fresh_dir("diverge");
    let out = sparsec(&[
        "train",
        "tests/train/tiny_momentum.net",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "lr=1e30",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the loss became"), "{stderr}");
    assert!(dir
        .join("checkpoints/step-00000000/model.safetensors")
        .is_file());
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_requests_are_refused_without_touching_the_run() {
    let dir = fresh_dir("refuse");
    ok(&sparsec(&[
        "train",
        "tests/train/tiny_momentum.net",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "max_steps=3",
    ]));
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();
    // The run directory exists: training into it again is refused (exit 2).
    let again = sparsec(&[
        "train",
        "tests/train/tiny_momentum.net",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    // Unknown setting, bad value: exit 2.
    assert_eq!(
        sparsec(&["train", "tests/train/tiny_momentum.net", "--set", "epoch=3"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        sparsec(&["train", "tests/train/tiny_momentum.net", "--set", "lr=-1"])
            .status
            .code(),
        Some(2)
    );
    // Resuming with a changed setting: exit 2.
    assert_eq!(
        sparsec(&[
            "train",
            "--resume",
            dir.to_str().unwrap(),
            "--set",
            "lr=0.5"
        ])
        .status
        .code(),
        Some(2)
    );
    // A data directory without the files: exit 1 with a message.
    let out = sparsec(&[
        "train",
        "examples/lenet300.net",
        "--data",
        "/nonexistent",
        "--out",
        fresh_dir("nodata").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        before
    );
}

/// Every method the model language accepts is carried out by `sparsec train` (none is trained
/// densely behind the user's back, and none is refused): each example's method has a run side.
#[test]
fn every_example_method_has_a_run_side() {
    let mut methods = Vec::new();
    let root = sparsec_test_support::repo_root();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "net") {
            continue;
        }
        let Ok(program) = sparsec::driver::load_program(&path, &[]) else {
            panic!("{} compiles", path.display())
        };
        if let Err(e) = sparsec::methods::run_side(program.module.method.as_ref()) {
            panic!("{}: {e}", path.display());
        }
        if let Some(m) = &program.module.method {
            methods.push(m.method.name());
        }
    }
    methods.sort();
    methods.dedup();
    assert_eq!(
        methods,
        ["activation_density", "admm", "dropback", "prunetrain"],
        "an example per method"
    );
}

/// A checkpoint whose recorded `--set` overrides hold a key this build does not know (another
/// build's, or an edited file) is refused with a message, not a crash.
#[test]
fn an_unknown_recorded_override_is_refused_on_resume() {
    let dir = fresh_dir("unknown-set");
    let out = sparsec(&[
        "train",
        "examples/lenet300.net",
        "--set",
        "epochs=1",
        "--set",
        "max_steps=0",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path().join("train_state.safetensors"))
        .find(|p| p.exists())
        .unwrap();
    // Same length, so the safetensors header stays valid.
    let bytes = std::fs::read(&state).unwrap();
    let (from, to) = (r#"\"epochs\",\"1\""#, r#"\"epochx\",\"1\""#);
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("the recorded override is in the metadata");
    let mut edited = bytes.clone();
    edited[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(&state, &edited).unwrap();
    // The checksum refuses the edited file as it stands...
    let out = sparsec(&["train", "--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match its checksum"), "{stderr}");
    // ...and with its checksum and the run's fingerprint forged to match, the unknown key is
    // still refused, not a panic.
    reseal(&dir, &state, |run| {
        run["sets"][0][0] = "epochx".into();
    });
    let out = sparsec(&["train", "--resume", dir.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert_ne!(out.status.code(), Some(101), "not a panic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `epochx`"), "{stderr}");
}

/// What a forger would do after editing `state` (a checkpoint's train_state): record its new
/// checksum in the checkpoint's manifest, edit `run.json` with `edit` and give it the
/// fingerprint of the edited run.
fn reseal(run: &Path, state: &Path, edit: impl Fn(&mut serde_json::Value)) {
    use sparsec::checkpoint::{fingerprint, sha256_hex};
    let manifest_path = state.with_file_name("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["files"]["train_state.safetensors"] =
        sha256_hex(&std::fs::read(state).unwrap()).into();
    let mut run_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    edit(&mut run_file);
    let sets: Vec<(String, String)> = serde_json::from_value(run_file["sets"].clone()).unwrap();
    let source = std::fs::read_to_string(run.join("model.net")).unwrap();
    let print = fingerprint(&source, false, &sets);
    run_file["fingerprint"] = print.clone().into();
    manifest["run"]["fingerprint"] = print.into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    std::fs::write(run.join("run.json"), run_file.to_string()).unwrap();
}

/// A checkpoint is used only as it was written, by its own run: one flipped byte, a file from
/// another run, another run's whole checkpoint or a format this build does not read are each
/// refused with the file named, by resume, eval and report alike.
#[test]
fn a_tampered_or_foreign_checkpoint_is_refused() {
    let model = "tests/train/tiny_momentum.net";
    let root = fresh_dir("tampered");
    let run = |name: &str, seed: &str| {
        let dir = root.join(name);
        ok(&sparsec(&[
            "train",
            model,
            "--out",
            dir.to_str().unwrap(),
            "--set",
            "max_steps=5",
            "--set",
            seed,
        ]));
        dir
    };
    let ours = run("ours", "seed=11");
    let theirs = run("theirs", "seed=12");
    // The same model and settings, another run: only its id tells it apart.
    let twin = run("twin", "seed=11");
    let step = "checkpoints/step-00000005";
    let pristine = root.join("pristine");
    copy_dir(&ours, &pristine);
    let restore = || {
        std::fs::remove_dir_all(&ours).unwrap();
        copy_dir(&pristine, &ours);
    };
    let refused = |what: &str, expect: &str| {
        for args in [
            vec!["train", "--resume", ours.to_str().unwrap()],
            vec!["eval", "--weights", ours.to_str().unwrap()],
            vec!["report", ours.to_str().unwrap()],
        ] {
            let out = sparsec(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what}, {args:?}: {stderr}");
            assert!(stderr.contains(expect), "{what}, {args:?}: {stderr}");
        }
        restore();
    };

    let weights = ours.join(step).join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, bytes).unwrap();
    refused(
        "a flipped bit",
        "model.safetensors` does not match its checksum",
    );

    std::fs::copy(
        theirs.join(step).join("train_state.safetensors"),
        ours.join(step).join("train_state.safetensors"),
    )
    .unwrap();
    refused(
        "another run's state",
        "train_state.safetensors` does not match",
    );

    for other in [&theirs, &twin] {
        std::fs::remove_dir_all(ours.join(step)).unwrap();
        copy_dir(&other.join(step), &ours.join(step));
        refused("another run's checkpoint", "belongs to another run");
    }

    let run_file = ours.join("run.json");
    let text = std::fs::read_to_string(&run_file).unwrap();
    std::fs::write(&run_file, text.replace("\"format\": 2", "\"format\": 9")).unwrap();
    refused(
        "a newer format",
        "has checkpoint format 9; this build reads format 2",
    );

    std::fs::remove_file(ours.join(step).join("manifest.json")).unwrap();
    refused("no manifest", "manifest.json");

    // Untouched, it resumes.
    ok(&sparsec(&["train", "--resume", ours.to_str().unwrap()]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A run killed while it wrote its first checkpoint (no `latest` yet, a half-written checkpoint
/// directory) is started again in place by `--resume`, and ends as an uninterrupted run does.
#[test]
fn a_run_killed_before_its_first_checkpoint_starts_again_in_place() {
    let model = "tests/train/tiny_momentum.net";
    let whole = fresh_dir("first-whole");
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        whole.to_str().unwrap(),
    ]));
    let killed = fresh_dir("first-killed");
    let k = killed.to_str().unwrap();
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        k,
        "--set",
        "max_steps=0",
    ]));
    // What a kill during the first save leaves: the claim, run.json, a temporary directory.
    for gone in ["latest", "summary.json", "model.safetensors", "report.txt"] {
        let _ = std::fs::remove_file(killed.join(gone));
    }
    std::fs::rename(
        killed.join("checkpoints/step-00000000"),
        killed.join("checkpoints/.tmp-step-00000000"),
    )
    .unwrap();
    std::fs::remove_file(killed.join("checkpoints/.tmp-step-00000000/manifest.json")).unwrap();
    // A new run cannot take the directory...
    let out = sparsec(&["train", model, "--out", k]);
    assert_eq!(out.status.code(), Some(2));
    // ...the run itself starts again there.
    let out = sparsec(&["train", "--resume", k]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting it again in place"));
    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "the restarted run's weights differ from an uninterrupted run's"
    );
    assert!(!killed.join("checkpoints/.tmp-step-00000000").exists());
}

/// A model file saved with a byte-order mark or old Mac line endings is read as text, and a path
/// that never ends (`/dev/zero`) is refused after a bounded read, not read until memory runs out.
#[test]
fn model_files_are_read_as_text_and_within_bounds() {
    let dir = fresh_dir("odd-text");
    std::fs::create_dir_all(&dir).unwrap();
    let source =
        std::fs::read_to_string(sparsec_test_support::repo_root().join("examples/lenet300.net"))
            .unwrap();
    for (name, text) in [
        ("bom.net", format!("\u{feff}{source}")),
        ("cr.net", source.replace('\n', "\r")),
        ("crlf.net", source.replace('\n', "\r\n")),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = sparsec(&["check", path.to_str().unwrap()]);
        assert!(ok(&out).contains("ok: model `lenet300`"), "{name}");
    }
    if std::path::Path::new("/dev/zero").exists() {
        let out = sparsec(&["check", "/dev/zero"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("more than 64 MiB"), "{stderr}");
    }
}

/// A run directory's `latest` names one of its own checkpoints, nothing else: not a path that
/// leaves the run, not whatever a link to a device yields.
#[test]
fn latest_must_name_a_checkpoint_of_the_run() {
    let dir = fresh_dir("latest-outside");
    std::fs::create_dir_all(&dir).unwrap();
    for pointer in [
        "../other-run/checkpoints/step-00000001",
        "/etc",
        "checkpoints/step-1/../..",
    ] {
        std::fs::write(dir.join("latest"), format!("{pointer}\n")).unwrap();
        let out = sparsec(&["eval", "--weights", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{pointer}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("must name a checkpoint of this run"),
            "{pointer}: {stderr}"
        );
    }
}

/// Runs started at once into one directory: exactly one trains there, the others refuse (a
/// default, one-second name would get a suffix instead: `claim_run_dir`).
#[test]
fn a_run_directory_belongs_to_one_run() {
    let dir = fresh_dir("claimed");
    let model = sparsec_test_support::repo_root().join("examples/lenet300.net");
    let model = model.to_str().unwrap();
    let out = dir.join("run");
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let out = out.to_str().unwrap().to_owned();
            let model = model.to_owned();
            std::thread::spawn(move || {
                sparsec(&["train", &model, "--set", "max_steps=1", "--out", &out])
            })
        })
        .collect();
    let codes: Vec<Option<i32>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().status.code())
        .collect();
    assert_eq!(
        codes.iter().filter(|&&c| c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(summary(&out)["steps"], 1);
}

/// A file with hundreds of errors gets the first 50 and a count of the rest, not megabytes of
/// diagnostics.
#[test]
fn diagnostics_are_capped() {
    let dir = fresh_dir("many-errors");
    std::fs::create_dir_all(&dir).unwrap();
    let body: String = (0..300).map(|i| format!(" a{i} = bogus(x)\n")).collect();
    let path = dir.join("many.net");
    std::fs::write(
        &path,
        format!("model m {{\n input x: [4]\n{body} loss softmax_cross_entropy(x)\n}}\n"),
    )
    .unwrap();
    let out = sparsec(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("\nerror").count() + usize::from(stderr.starts_with("error")),
        50
    );
    assert!(stderr.contains("more diagnostics not shown"), "{stderr}");
}

/// `check` runs the validation `train` runs: a model `train` refuses (Dropback with momentum) is
/// not "ok" to `check`.
#[test]
fn check_refuses_what_train_refuses() {
    let dir = fresh_dir("check-validates");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dropback_momentum.net");
    std::fs::write(
        &path,
        "model m { input x: [784]\n fc = dense(x, 10)\n loss softmax_cross_entropy(fc) }\n\
         train { optimizer: sgd(lr: 0.1, momentum: 0.9) }\nmethod dropback { k: 100 }\n",
    )
    .unwrap();
    let out = sparsec(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set momentum to 0"), "{stderr}");
}

/// The tensor names of a safetensors file.
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    names
}

/// A Dropback run whose memory budget its dense weights do not fit: the step streams them, the
/// weights files keep the tracked weights only as entries (in the training state), and the run
/// trains, resumes, evaluates and reports exactly as the same run without a budget.
#[test]
fn a_run_within_a_budget_below_its_weights_keeps_them_as_entries() {
    let model = "tests/train/dropback_streamed.net";
    let budget = "memory_budget=120000";
    let free = fresh_dir("streamed-free");
    ok(&sparsec(&["train", model, "--out", free.to_str().unwrap()]));
    let tight = fresh_dir("streamed-tight");
    let t = tight.to_str().unwrap();
    ok(&sparsec(&[
        "train",
        model,
        "--out",
        t,
        "--set",
        budget,
        "--set",
        "max_steps=21",
    ]));
    ok(&sparsec(&["train", "--resume", t]));

    // The state_dict holds the untracked weights only (here: none), and says where the rest is.
    assert!(tensor_names(&free.join("model.safetensors")).contains(&"fc1.weight".to_owned()));
    assert!(tensor_names(&tight.join("model.safetensors")).is_empty());
    let latest = std::fs::read_to_string(tight.join("latest")).unwrap();
    let checkpoint = tight.join(latest.trim());
    assert!(tensor_names(&checkpoint.join("train_state.safetensors"))
        .contains(&"fc1.weight.tracked_values".to_owned()));

    // The same training, bit for bit: the same metrics and the same evaluation.
    assert_eq!(metrics(&free), metrics(&tight));
    let eval = |d: &Path| {
        let out = ok(&sparsec(&["eval", "--weights", d.to_str().unwrap()]));
        out.split_once("test accuracy").unwrap().1.to_owned()
    };
    assert_eq!(eval(&free), eval(&tight));
    let report = |d: &Path| ok(&sparsec(&["report", d.to_str().unwrap()]));
    assert_eq!(report(&free), report(&tight));

    // The state_dict alone cannot give the tracked weights: a clear refusal, not a guess.
    let out = sparsec(&[
        "eval",
        model,
        "--weights",
        tight.join("model.safetensors").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train_state.safetensors"), "{err}");
}
