//! Robustness: thousands of deterministic mutations of every example must never panic or hang in
//! `parse`, `check_source`, `print_ast` or `render`. Plus a few pathological inputs.

use sparsec_frontend::diag::ColorChoice;
use sparsec_frontend::{check_source, parse, print_ast, render};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Tiny xorshift64* PRNG: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const INSERTS: &[&str] = &[
    "99999999999999999999999",
    "18446744073709551616",
    "18446744073709551615",
    "4294967296",
    "2147483648",
    "0",
    "-0",
    "-1",
    "1e999",
    "-1e999",
    "1e-999",
    "0.0",
    "1e",
    "1.",
    ".5",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ":",
    ",",
    "=",
    "->",
    "-",
    "*",
    "@",
    "@dense",
    "@relu",
    "@nope",
    "fc*",
    "*",
    "\"",
    "\"str\"",
    "\"a\\qb\"",
    "#",
    "//",
    "model",
    "input",
    "loss",
    "data",
    "train",
    "method",
    "true",
    "false",
    "x",
    "fc1",
    "dense",
    "conv2d",
    "add",
    "kernel:",
    "on:",
    "k:",
    "é",
    "\u{0}",
    "\t",
    "\n",
    "\r\n",
];

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "net") {
            let src = std::fs::read_to_string(&path).expect("read");
            out.push((path.display().to_string(), src));
        }
    }
    out.sort();
    assert!(!out.is_empty());
    out
}

fn char_boundaries(s: &str) -> Vec<usize> {
    let mut v: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    v.push(s.len());
    v
}

fn mutate(rng: &mut Rng, src: &str) -> String {
    match rng.below(10) {
        // Truncate at a random char boundary.
        0 => {
            let b = char_boundaries(src);
            src[..b[rng.below(b.len())]].to_string()
        }
        // Delete, repeat or swap whitespace-separated tokens.
        1..=3 => {
            let mut toks: Vec<&str> = src.split_whitespace().collect();
            if toks.is_empty() {
                return src.to_string();
            }
            let i = rng.below(toks.len());
            match rng.below(3) {
                0 => {
                    toks.remove(i);
                }
                1 => {
                    let t = toks[i];
                    for _ in 0..=rng.below(3) {
                        toks.insert(i, t);
                    }
                }
                _ => {
                    let j = rng.below(toks.len());
                    toks.swap(i, j);
                }
            }
            let sep = if rng.below(4) == 0 { " " } else { "\n" };
            toks.join(sep)
        }
        // Replace random characters with random ASCII (control characters included).
        4 | 5 => {
            let mut chars: Vec<char> = src.chars().collect();
            for _ in 0..=rng.below(8) {
                if chars.is_empty() {
                    break;
                }
                let i = rng.below(chars.len());
                chars[i] = char::from((rng.next() % 128) as u8);
            }
            chars.into_iter().collect()
        }
        // Insert a nasty token at a random boundary.
        6 | 7 => {
            let b = char_boundaries(src);
            let at = b[rng.below(b.len())];
            let ins = rng.pick(INSERTS);
            format!("{} {ins} {}", &src[..at], &src[at..])
        }
        // Deep nesting.
        8 => {
            let b = char_boundaries(src);
            let at = b[rng.below(b.len())];
            let open = rng.pick(&["[", "(", "{", "[(", "{["]);
            format!("{}{}{}", &src[..at], open.repeat(100), &src[at..])
        }
        // Replace a number with a huge or degenerate one.
        _ => {
            let toks: Vec<&str> = src.split(' ').collect();
            let nums: Vec<usize> = (0..toks.len())
                .filter(|&i| toks[i].starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            if nums.is_empty() {
                return src.to_string();
            }
            let i = nums[rng.below(nums.len())];
            let mut owned: Vec<String> = toks.iter().map(|s| s.to_string()).collect();
            owned[i] = rng
                .pick(&[
                    "99999999999999999999999,",
                    "0,",
                    "4294967296,",
                    "1e999,",
                    "0",
                    "3037000500",
                    "65536",
                ])
                .to_string();
            owned.join(" ")
        }
    }
}

fn exercise(src: &str) {
    let (file, diags) = parse(src);
    if let Some(f) = &file {
        let _ = print_ast(f, src);
    }
    let _ = render(&diags, "m.net", src, ColorChoice::Never);
    match check_source(src) {
        Ok(m) => {
            let _ = m.param_count();
        }
        Err(d) => {
            assert!(!d.is_empty(), "an error result must carry a diagnostic");
            let _ = render(&d, "m.net", src, ColorChoice::Never);
        }
    }
}

fn run_guarded(src: &str, what: &str) {
    let r = std::panic::catch_unwind(|| exercise(src));
    if r.is_err() {
        panic!("panic on {what}; input:\n-----\n{src}\n-----");
    }
}

#[test]
fn thousands_of_mutations_never_panic() {
    let examples = examples();
    // SPARSEC_MUTATIONS=N runs a longer sweep (e.g. in release builds).
    let total: usize = std::env::var("SPARSEC_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let per_example = total / examples.len().max(1) + 1;
    let seed: u64 = std::env::var("SPARSEC_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    let mut rng = Rng(seed | 1);
    let mut count = 0;
    for (name, src) in &examples {
        for i in 0..per_example {
            let mut s = mutate(&mut rng, src);
            // Sometimes stack a few mutations.
            for _ in 0..rng.below(3) {
                s = mutate(&mut rng, &s);
            }
            run_guarded(&s, &format!("{name} mutation {i}"));
            count += 1;
        }
    }
    assert!(count >= total);
    if total <= 4000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "mutations took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn pathological_inputs() {
    let mb = 1 << 20;
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("only comments", "# a\n// b\n#\n".repeat(100)),
        ("1 MB of [", "[".repeat(mb)),
        ("1 MB of (", "(".repeat(mb)),
        ("1 MB of {", "{".repeat(mb)),
        ("1 MB of ]", "]".repeat(mb)),
        (
            "nested model",
            format!("model m {{ input x: {} }}", "[".repeat(mb / 2)),
        ),
        ("1 MB of $", "$".repeat(mb)),
        ("1 MB of \"", "\"".repeat(mb)),
        ("1 MB identifier", "a".repeat(mb)),
        ("1 MB number", "9".repeat(mb)),
        ("1 MB of tokens", "model m { ".repeat(mb / 10)),
        (
            "huge shape",
            "model m { input x: [4294967296, 4294967296, 10] }".to_string(),
        ),
        (
            "huge ints",
            "train { epochs: 99999999999999999999999, optimizer: sgd(lr: 1e999) }".to_string(),
        ),
        ("bad utf8-ish", "model é { input ü: [1] }".to_string()),
        ("nul bytes", "model\0m { \0 }".to_string()),
    ];
    for (what, src) in &cases {
        let t = Instant::now();
        run_guarded(src, what);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn large_models_check_in_linear_time() {
    // 20,000 chained layers (valid), then 20,000 reads of undefined names.
    let n = 20_000;
    let mut s = String::from("model big {\n input x: [16]\n h0 = dense(x, 16)\n");
    for i in 1..n {
        s.push_str(&format!(" h{i} = relu(h{})\n", i - 1));
    }
    s.push_str(&format!(
        " out = dense(h{}, 10)\n loss softmax_cross_entropy(out)\n}}\n",
        n - 1
    ));
    s.push_str(
        "data synthetic\ntrain { optimizer: sgd(lr: 0.1) }\nmethod dropback { k: 10, on: * }\n",
    );
    let t = Instant::now();
    let m = check_source(&s).unwrap_or_else(|d| panic!("{:?}", d.first()));
    assert_eq!(m.layers.len(), n + 1);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "valid big model took {:?}",
        t.elapsed()
    );

    let mut s = String::from("model big {\n input x: [16]\n");
    for i in 0..n {
        s.push_str(&format!(" a{i} = relu(undefined_{i})\n"));
    }
    s.push_str("}\n");
    let t = Instant::now();
    let d = check_source(&s).expect_err("undefined names");
    assert!(d.len() >= n);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "many errors took {:?}",
        t.elapsed()
    );
}
