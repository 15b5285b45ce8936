//! A run across sessions, through the `sparsec` binary: interrupted by a signal, checkpointed
//! every N steps, extended after it finished, restarted from another run's weights; a run that
//! diverges or learns nothing; and the command line's consistency (the environment's thread
//! count, options that contradict each other, standard input, data paths).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod run_dir;

use run_dir::{fresh_dir, ok, sparsec, summary, write_file};

const TINY: &str = "tests/train/tiny_momentum.net";

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Ctrl-C stops a run at a step boundary with a checkpoint, a summary that says so, the resume
/// command and exit code 130; resumed, it ends with the bits of a run never interrupted.
#[test]
fn an_interrupted_run_checkpoints_and_resumes_exactly() {
    let dir = fresh_dir("interrupted");
    let d = dir.to_str().unwrap();
    let root = sparsec_test_support::repo_root();
    let child = Command::new(env!("CARGO_BIN_EXE_sparsec"))
        .args(["train", TINY, "--out", d, "--set", "epochs=100000"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it trains (its first checkpoint is in place), then interrupt it.
    let started = Instant::now();
    while !dir.join("latest").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("resume with: sparsec train --resume {d}")),
        "{stderr}"
    );
    let stopped = summary(&dir);
    assert_eq!(stopped["status"], "interrupted");
    let steps = stopped["steps"].as_u64().unwrap();
    assert!(steps > 0);
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    assert_eq!(latest.trim(), format!("checkpoints/step-{steps:08}"));

    // Resumed to a few steps past the interruption, it equals a run stopped there directly.
    let end = (steps + 7).to_string();
    ok(&sparsec(&[
        "train",
        "--resume",
        d,
        "--set",
        &format!("max_steps={end}"),
    ]));
    let whole = fresh_dir("interrupted-whole");
    ok(&sparsec(&[
        "train",
        TINY,
        "--out",
        whole.to_str().unwrap(),
        "--set",
        "epochs=100000",
        "--set",
        &format!("max_steps={end}"),
    ]));
    assert!(
        bytes(&dir.join("model.safetensors")) == bytes(&whole.join("model.safetensors")),
        "the resumed run's weights differ from the uninterrupted run's"
    );
}

/// `checkpoint_every` adds checkpoints between epoch ends (16 steps per epoch here), and a run
/// resumed from one of them is exact.
#[test]
fn checkpoints_every_n_steps() {
    let dir = fresh_dir("every");
    let d = dir.to_str().unwrap();
    ok(&sparsec(&[
        "train",
        TINY,
        "--out",
        d,
        "--set",
        "checkpoint_every=5",
        "--set",
        "max_steps=12",
    ]));
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "step-00000000",
            "step-00000005",
            "step-00000010",
            "step-00000012"
        ]
    );
    // Not recorded with the run: a resumed run is given it afresh, or not.
    ok(&sparsec(&["train", "--resume", d]));
    let whole = fresh_dir("every-whole");
    ok(&sparsec(&["train", TINY, "--out", whole.to_str().unwrap()]));
    assert!(bytes(&dir.join("model.safetensors")) == bytes(&whole.join("model.safetensors")));
    let unused = fresh_dir("every-bad");
    for bad in ["checkpoint_every=0", "checkpoint_every=3h"] {
        let out = sparsec(&[
            "train",
            TINY,
            "--set",
            bad,
            "--out",
            unused.to_str().unwrap(),
        ]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("checkpoint_every must be"), "{stderr}");
    }
}

/// A finished run given more epochs goes on as if it had been asked for them from the start;
/// a method whose schedule is laid out from the run's end refuses.
#[test]
fn a_finished_run_extends_exactly() {
    let three = fresh_dir("extend-3");
    let t = three.to_str().unwrap();
    ok(&sparsec(&["train", TINY, "--out", t]));
    ok(&sparsec(&["train", "--resume", t, "--set", "epochs=5"]));
    let five = fresh_dir("extend-5");
    ok(&sparsec(&[
        "train",
        TINY,
        "--out",
        five.to_str().unwrap(),
        "--set",
        "epochs=5",
    ]));
    assert!(bytes(&three.join("model.safetensors")) == bytes(&five.join("model.safetensors")));
    assert_eq!(summary(&three)["epochs_completed"], 5);
    // It stays a run of 5: resumed again without settings, it has nothing left to do.
    ok(&sparsec(&["train", "--resume", t]));
    assert_eq!(summary(&three)["steps"], summary(&five)["steps"]);
    // Fewer epochs than it has done is refused.
    let out = sparsec(&["train", "--resume", t, "--set", "epochs=2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));

    let admm = fresh_dir("extend-admm");
    let model = write_file(
        &admm,
        "mlp.net",
        "model mlp {
            input x: [1, 4, 4]
            flat = flatten(x)
            fc1 = dense(flat, 6)
            h1 = relu(fc1)
            fc2 = dense(h1, 3)
            loss softmax_cross_entropy(fc2)
        }
        data synthetic { train_samples: 32, test_samples: 8, seed: 1 }
        train { epochs: 4, batch: 4, seed: 5, optimizer: sgd(lr: 0.1, momentum: 0.9) }
        method admm { keep: { fc1: 0.25 }, rho: 0.05, rounds: 1, epochs_per_round: 1, retrain_epochs: 1 }
        ",
    );
    let run = admm.join("run");
    let r = run.to_str().unwrap();
    ok(&sparsec(&["train", model.to_str().unwrap(), "--out", r]));
    let out = sparsec(&["train", "--resume", r, "--set", "epochs=8"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("lays its schedule out from the run's end"),
        "{stderr}"
    );
}

/// `--init-from RUN` starts a new run from RUN's weights (same test accuracy at step 0) with new
/// settings; other settings on a resumed run are refused with a pointer to it.
#[test]
fn a_new_run_starts_from_another_runs_weights() {
    let first = fresh_dir("init-first");
    let f = first.to_str().unwrap();
    ok(&sparsec(&["train", TINY, "--out", f]));
    let second = fresh_dir("init-second");
    let s = second.to_str().unwrap();
    ok(&sparsec(&[
        "train",
        "--init-from",
        f,
        "--out",
        s,
        "--set",
        "lr=0.01",
        "--set",
        "max_steps=0",
    ]));
    let accuracy = |run: &str| {
        let out = ok(&sparsec(&["eval", "--weights", run]));
        out.split("test accuracy ").nth(1).unwrap().to_owned()
    };
    assert_eq!(accuracy(f), accuracy(s));
    let run_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("run.json")).unwrap()).unwrap();
    assert!(run_file["init_from"]["weights"]
        .as_str()
        .unwrap()
        .ends_with("model.safetensors"));
    // The new run trains on from there.
    ok(&sparsec(&["train", "--resume", s]));
    let out = sparsec(&["train", "--resume", f, "--set", "lr=0.01"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--init-from"), "{stderr}");
    let out = sparsec(&["train", "--resume", f, "--init-from", f]);
    assert_eq!(out.status.code(), Some(2));
}

/// A loss that grows by orders of magnitude stops the run like a NaN does; a run that ends at
/// chance accuracy is told so, with the likely cause, in its output and summary.
#[test]
fn diverging_and_dead_runs_are_reported() {
    let dir = fresh_dir("grows");
    let out = sparsec(&[
        "train",
        TINY,
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "lr=500",
    ]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the run is diverging"), "{stderr}");
    assert!(stderr.contains("--init-from"), "{stderr}");

    let dir = fresh_dir("overshoots");
    let out = sparsec(&[
        "train",
        TINY,
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "lr=50",
    ]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: the run learned nothing"),
        "{stderr}"
    );
    assert!(summary(&dir)["warning"]
        .as_str()
        .unwrap()
        .contains("learning rate too large"));

    let dir = fresh_dir("learns");
    let out = sparsec(&["train", TINY, "--out", dir.to_str().unwrap()]);
    assert!(!stderr_of(&out).contains("warning"));
    assert!(summary(&dir).get("warning").is_none());
}

/// The environment's thread count is checked like `--threads`; `--out` does not go with
/// `--resume`; `-` reads the model from standard input; a file given as `--data` says so.
#[test]
fn the_command_line_is_consistent() {
    let root = sparsec_test_support::repo_root();
    let run = |args: &[&str], env: Option<&str>, stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparsec"));
        cmd.args(args)
            .current_dir(root)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(threads) = env {
            cmd.env("SPARSEC_THREADS", threads);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let dir = fresh_dir("cli");
    let d = dir.to_str().unwrap();
    for threads in ["abc", "0", "99", ""] {
        let out = run(&["train", TINY, "--out", d], Some(threads), None);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{threads:?}: {stderr}");
        assert!(stderr.contains("SPARSEC_THREADS"), "{stderr}");
    }
    assert!(!dir.exists(), "a refused run wrote its directory");
    ok(&run(
        &["train", TINY, "--out", d, "--set", "max_steps=1"],
        Some("1"),
        None,
    ));
    let out = run(&["train", "--resume", d, "--out", "elsewhere"], None, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--out elsewhere with --resume"));

    let source = std::fs::read_to_string(root.join(TINY)).unwrap();
    let out = run(&["check", "-"], None, Some(&source));
    assert!(ok(&out).contains("ok: model `tiny`"));
    let dump = ok(&run(&["emit", "--stage", "ir", TINY], None, None));
    let out = run(&["emit", "--stage", "opt", "-"], None, Some(&dump));
    assert!(ok(&out).starts_with("sparsec-ir"));
    let out = run(&["check", "-"], None, Some("model broken {"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("<stdin>"), "{}", stderr_of(&out));

    let unused = fresh_dir("cli-data");
    let out = run(
        &[
            "train",
            "examples/lenet300.net",
            "--data",
            TINY,
            "--out",
            unused.to_str().unwrap(),
        ],
        None,
        None,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a file"), "{stderr}");
}

/// A network far larger than any machine is refused before anything is allocated, with the
/// estimate and what the machine has, and writes no run directory; printing its kernels
/// allocates none of their buffers.
#[test]
fn a_program_too_large_for_the_machine_is_refused_before_allocating() {
    let dir = fresh_dir("too-large");
    // 4·10⁹ weights, each tensor under the IR's 2³¹-element limit.
    let model = write_file(
        &dir,
        "huge.net",
        "model huge {
            input x: [1, 28, 28]
            flat = flatten(x)
            fc1 = dense(flat, 2700000)
            h = relu(fc1)
            fc2 = dense(h, 700)
            loss softmax_cross_entropy(fc2)
        }
        data synthetic { train_samples: 64, test_samples: 16, seed: 1 }
        train { epochs: 1, batch: 16, optimizer: sgd(lr: 0.1, momentum: 0.9) }
        ",
    );
    let m = model.to_str().unwrap();
    let run = dir.join("run");
    let out = sparsec(&["train", m, "--out", run.to_str().unwrap()]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs about") && stderr.contains("available"),
        "{stderr}"
    );
    assert!(!run.exists(), "a refused run wrote its directory");
    let kernels = ok(&sparsec(&["emit", "--stage", "kernels", m]));
    assert!(kernels.contains("kernels @train_step"));

    let data = dir.join("data.net");
    std::fs::write(
        &data,
        std::fs::read_to_string(sparsec_test_support::repo_root().join(TINY))
            .unwrap()
            .replace("train_samples: 256", "train_samples: 100000000000"),
    )
    .unwrap();
    let out = sparsec(&[
        "train",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the synthetic data needs about"),
        "{stderr}"
    );
}
