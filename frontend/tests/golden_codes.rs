//! The golden error cases under tests/golden/check: each `eNNNN_*.net` reports code ENNNN, each
//! `ok_*.net` checks, every file starts with its `# RUN:` line, and every code in `CODES` has a
//! golden case. (The expected outputs themselves are compared by the workspace's golden harness.)

use sparsec_frontend::{check_source, parse, print_ast, CODES};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn golden(dir: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "net") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            out.push((name, std::fs::read_to_string(&path).expect("read")));
        }
    }
    out.sort();
    out
}

#[test]
fn check_cases_report_their_codes() {
    let cases = golden("check");
    assert!(cases.len() >= 30, "only {} golden check cases", cases.len());
    let mut covered = BTreeSet::new();
    for (name, src) in &cases {
        assert_eq!(
            src.lines().next(),
            Some("# RUN: sparsec check %s"),
            "{name}: first line"
        );
        let result = check_source(src);
        let codes: Vec<String> = match &result {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().filter_map(|d| d.code.clone()).collect(),
        };
        covered.extend(codes.iter().cloned());
        if name.starts_with("ok_") {
            assert!(result.is_ok(), "{name} should check, got {codes:?}");
        } else if let Some(code) = name.get(..5).filter(|c| c.starts_with('e')) {
            let code = code.to_uppercase();
            assert!(
                codes.contains(&code),
                "{name} should report {code}, got {codes:?}"
            );
            assert!(result.is_err());
        } else {
            assert!(!codes.is_empty(), "{name} should report errors");
        }
    }
    let missing: Vec<&str> = CODES
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !covered.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a golden case: {missing:?}"
    );
}

#[test]
fn ast_cases_parse() {
    let cases = golden("ast");
    assert!(cases.len() >= 3);
    for (name, src) in &cases {
        assert_eq!(
            src.lines().next(),
            Some("# RUN: sparsec emit --stage ast %s"),
            "{name}: first line"
        );
        let (file, diags) = parse(src);
        assert!(diags.is_empty(), "{name}: {diags:?}");
        let out = print_ast(&file.expect("ast"), src);
        assert!(out.starts_with("File @"), "{name}");
        // Deterministic.
        assert_eq!(out, print_ast(&parse(src).0.expect("ast"), src));
    }
}
