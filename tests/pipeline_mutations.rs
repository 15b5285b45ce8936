//! Whatever the checker accepts must lower to IR that verifies and round-trips through the text
//! form. Mutating the examples explores many accepted variants (other widths, kernels, options)
//! and many rejected ones; the parsers' own mutation tests cover the rejected side in depth.

use sparsec_test_support::examples::example_files;
use sparsec_test_support::rng::Rng;

/// Replace one number in the text by another small one: most such files still check, with
/// different shapes and options, which is what exercises lowering.
fn mutate_number(text: &str, rng: &mut Rng) -> String {
    let numbers: Vec<(usize, usize)> = {
        let bytes = text.as_bytes();
        let mut spans = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                    i += 1;
                }
                spans.push((start, i));
            } else {
                i += 1;
            }
        }
        spans
    };
    if numbers.is_empty() {
        return text.to_owned();
    }
    let (start, end) = numbers[rng.below(numbers.len())];
    let replacement = [0, 1, 2, 3, 5, 7, 16, 28, 100, 1000][rng.below(10)].to_string();
    format!("{}{}{}", &text[..start], replacement, &text[end..])
}

/// Swap two lines: reorders layers and options.
fn swap_lines(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
    lines.swap(a, b);
    lines.join("\n")
}

#[test]
fn accepted_models_lower_verify_and_round_trip() {
    let mut rng = Rng::xorshift(0x5eed_1234_abcd_0001);
    let mut accepted = 0;
    for (name, text) in example_files() {
        for case in 0..150 {
            let mutated = match case % 3 {
                0 => mutate_number(&text, &mut rng),
                1 => swap_lines(&text, &mut rng),
                _ => mutate_number(&mutate_number(&text, &mut rng), &mut rng),
            };
            let Ok(model) = sparsec_frontend::check_source(&mutated) else {
                continue;
            };
            accepted += 1;
            let mut module = sparsec_frontend::lower::lower(&model)
                .unwrap_or_else(|e| panic!("{name} case {case}: lowering failed: {e}\n{mutated}"));
            sparsec_passes::methods::assign_storage(&mut module)
                .unwrap_or_else(|e| panic!("{name} case {case}: storage failed: {e}\n{mutated}"));
            if let Err(errors) = sparsec_ir::verify::verify(&module) {
                panic!("{name} case {case}: verifier: {errors:?}\n{mutated}");
            }
            let printed = sparsec_ir::print::print_module(&module);
            let parsed = sparsec_ir::parse::parse_module(&printed)
                .unwrap_or_else(|e| panic!("{name} case {case}: reparse: {e}\n{printed}"));
            assert_eq!(parsed, module, "{name} case {case}: parse(print(m)) != m");
            assert_eq!(sparsec_ir::print::print_module(&parsed), printed);
        }
    }
    // The test is only meaningful if a good share of the mutants is accepted.
    assert!(accepted > 100, "only {accepted} mutants were accepted");
}
