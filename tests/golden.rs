//! Golden tests: every input under `tests/golden/` names, on its first line, the command that
//! runs it (`# RUN: sparsec emit --stage ir %s`; `%s` is the file's own path). The command's exit
//! code, stdout and stderr are compared with the `.out` file beside the input.
//!
//! Inputs are model files (`.net`), IR dumps (`.ir`) and command files (`.run`, a RUN line and
//! nothing else, for commands on files kept elsewhere such as `examples/`).
//!
//! Re-bless after an intended change: `SPARSEC_BLESS=1 cargo test --test golden`, then review
//! the diff with `git diff tests/golden`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INPUT_EXTENSIONS: &[&str] = &["net", "ir", "run"];
/// No command in a golden test may take longer than this (a hang is a bug).
const TIME_LIMIT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_inputs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| INPUT_EXTENSIONS.contains(&e))
            {
                out.push(path);
            }
        }
    }
    let mut inputs = Vec::new();
    walk(&repo_root().join("tests/golden"), &mut inputs);
    inputs
}

/// The path as the RUN line sees it: relative to the repository root, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn run_line(input: &Path) -> Vec<String> {
    let bytes = std::fs::read(input).expect("read golden input");
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    let command = first.strip_prefix("# RUN: ").unwrap_or_else(|| {
        panic!(
            "{}: the first line must be `# RUN: sparsec ...`",
            relative(input)
        )
    });
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.replace("%s", &relative(input)))
        .collect();
    assert_eq!(
        words.first().map(String::as_str),
        Some("sparsec"),
        "{}: RUN line must start with `sparsec`",
        relative(input)
    );
    words[1..].to_vec()
}

/// Run the command and render what it did as the `.out` file's text.
fn run(args: &[String]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparsec"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("SPARSEC_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sparsec");
    let started = Instant::now();
    // Drain the pipes on threads so a large output cannot block the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sparsec") {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            child.kill().ok();
            panic!(
                "`sparsec {}` ran longer than {TIME_LIMIT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
    let code = status
        .code()
        .map_or_else(|| "killed by a signal".to_owned(), |c| c.to_string());
    let mut text = format!("exit {code}\n");
    for (name, body) in [("stdout", stdout), ("stderr", stderr)] {
        if !body.is_empty() {
            text.push_str(&format!("--- {name}\n{body}"));
            if !body.ends_with('\n') {
                text.push_str("\n--- (no newline at end)\n");
            }
        }
    }
    text
}

fn expected_path(input: &Path) -> PathBuf {
    input.with_extension("out")
}

#[test]
fn golden_outputs_match() {
    let bless = std::env::var_os("SPARSEC_BLESS").is_some();
    let inputs = golden_inputs();
    assert!(!inputs.is_empty(), "no golden inputs found");
    let mut failures = Vec::new();
    for input in &inputs {
        let args = run_line(input);
        let actual = run(&args);
        let expected_file = expected_path(input);
        if bless {
            std::fs::write(&expected_file, &actual).expect("write .out");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual)
                .unified_diff()
                .header("expected", "actual")
                .to_string();
            failures.push(format!("--- {}\n{diff}", relative(input)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden tests differ (re-bless with SPARSEC_BLESS=1 cargo test --test golden):\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_output_has_an_input() {
    let inputs: Vec<PathBuf> = golden_inputs().iter().map(|i| expected_path(i)).collect();
    let mut stale = Vec::new();
    let mut stack = vec![repo_root().join("tests/golden")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list golden dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "out") && !inputs.contains(&path) {
                stale.push(relative(&path));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "expected outputs without an input: {stale:?}"
    );
}

/// The IR text form is a contract: every IR dump among the goldens parses back and prints
/// byte for byte the same.
#[test]
fn ir_goldens_round_trip_through_the_parser() {
    let mut checked = 0;
    for input in golden_inputs() {
        let Ok(expected) = std::fs::read_to_string(expected_path(&input)) else {
            continue;
        };
        let Some(stdout) = section(&expected, "stdout") else {
            continue;
        };
        if !stdout.starts_with("sparsec-ir ") {
            continue;
        }
        let module = sparsec_ir::parse::parse_module(&stdout)
            .unwrap_or_else(|e| panic!("{}: {e}", relative(&input)));
        sparsec_ir::verify::verify(&module)
            .unwrap_or_else(|e| panic!("{}: {:?}", relative(&input), e));
        assert_eq!(
            sparsec_ir::print::print_module(&module),
            stdout,
            "{}: printing the parsed dump changes it",
            relative(&input)
        );
        checked += 1;
    }
    assert!(checked > 0, "no IR goldens found");
}

/// The body of a `--- NAME` section of an `.out` file.
fn section(out: &str, name: &str) -> Option<String> {
    let marker = format!("--- {name}\n");
    let start = out.find(&marker)? + marker.len();
    let rest = &out[start..];
    let end = rest.find("\n--- ").map_or(rest.len(), |i| i + 1);
    Some(rest[..end].to_owned())
}
