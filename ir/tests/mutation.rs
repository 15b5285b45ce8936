//! Mutated dumps never make the parser panic or hang, and whatever parses is a fixed point of
//! print ∘ parse and verifies.

use sparsec_ir::{parse_module, print_module, verify};
use sparsec_test_support::modules;
use sparsec_test_support::rng::Rng;

/// Bytes worth inserting: the grammar's punctuation, digits, and some that are never valid.
const INTERESTING: &[u8] = b"%@=:,()[]{}\"\\#-.0123456789e \n\tazAZ_\x00\x7f\xff\xc3";

fn mutate(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if t.is_empty() {
            break;
        }
        match rng.below(7) {
            // Truncate.
            0 => t.truncate(rng.below(t.len())),
            // Replace a byte.
            1 | 2 => {
                let i = rng.below(t.len());
                t[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            // Insert a byte.
            3 => {
                let i = rng.below(t.len());
                t.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            // Delete a byte range.
            4 => {
                let i = rng.below(t.len());
                let n = 1 + rng.below(8);
                t.drain(i..(i + n).min(t.len()));
            }
            // Delete a line.
            5 => {
                let lines: Vec<&[u8]> = t.split(|&b| b == b'\n').collect();
                let skip = rng.below(lines.len());
                t = lines
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != skip)
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join(&b'\n');
            }
            // Duplicate a line.
            _ => {
                let lines: Vec<&[u8]> = t.split(|&b| b == b'\n').collect();
                let dup = rng.below(lines.len());
                let mut out: Vec<&[u8]> = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    out.push(l);
                    if i == dup {
                        out.push(l);
                    }
                }
                t = out.join(&b'\n');
            }
        }
    }
    t
}

#[test]
fn mutated_dumps_never_panic() {
    let start = std::time::Instant::now();
    let dumps: Vec<String> = [modules::mlp(), modules::conv_net(), modules::odd_module()]
        .iter()
        .map(print_module)
        .collect();
    let mut rng = Rng::xorshift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    let per_dump = 4000;
    for dump in &dumps {
        for _ in 0..per_dump {
            let bytes = mutate(&mut rng, dump.as_bytes());
            let text = String::from_utf8_lossy(&bytes);
            match parse_module(&text) {
                Ok(m) => {
                    accepted += 1;
                    assert_eq!(verify(&m), Ok(()));
                    let printed = print_module(&m);
                    let again = parse_module(&printed)
                        .unwrap_or_else(|e| panic!("reparse failed: {e}\n{printed}"));
                    assert_eq!(again, m);
                    assert_eq!(print_module(&again), printed);
                }
                Err(e) => {
                    assert!(e.span.start <= e.span.end && e.span.end <= text.len());
                    assert!(!e.message.is_empty());
                    let _ = e.line_col(&text);
                }
            }
        }
    }
    // Some mutations (inside comments-free whitespace, names, numbers) keep the text valid.
    assert!(accepted > 0);
    assert!(
        start.elapsed().as_secs() < 30,
        "mutation test took {:?}",
        start.elapsed()
    );
}

/// Every prefix of a dump is handled (the truncated-file case, exhaustively).
#[test]
fn every_prefix_is_handled() {
    let text = print_module(&modules::conv_net());
    for end in 0..=text.len() {
        if let Ok(m) = parse_module(&text[..end]) {
            // Only cuts that drop nothing but trailing text can parse.
            assert_eq!(print_module(&m), text[..end].trim_end().to_string() + "\n");
        }
    }
}

/// Arbitrary byte soup, including invalid UTF-8 turned into replacement characters.
#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::xorshift(42);
    for _ in 0..2000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
        let mut text = String::from("sparsec-ir 2 stage=ir\nmodule m\n");
        if rng.below(2) == 0 {
            text.clear();
        }
        text.push_str(&String::from_utf8_lossy(&bytes));
        let _ = parse_module(&text);
    }
}
