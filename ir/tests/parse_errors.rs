//! Every parse error is located (its span points at the offending token) and says what is wrong.

use sparsec_ir::{parse_module, print_module};

/// Parse `text`, expect an error whose message contains `fragment` and whose span covers
/// `at` (the first occurrence of that substring in the text, or the end of the text for `""`).
#[track_caller]
fn expect_error(text: &str, fragment: &str, at: &str) {
    let err = match parse_module(text) {
        Ok(_) => panic!("expected an error containing {fragment:?}, but it parsed:\n{text}"),
        Err(e) => e,
    };
    assert!(
        err.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        err.message
    );
    let start = if at.is_empty() {
        text.len()
    } else {
        text.find(at)
            .unwrap_or_else(|| panic!("{at:?} not in the text"))
    };
    assert!(
        err.span.start <= start && start <= err.span.end && err.span.end <= text.len(),
        "span {:?} ({:?}) does not cover {at:?} at {start}; message: {}",
        err.span,
        text.get(err.span.clone()),
        err.message
    );
    // Display and line/column never panic.
    let _ = err.to_string();
    let _ = err.line_col(text);
}

const BASE: &str = "\
# RUN: sparsec emit --stage ir %s
sparsec-ir 2 stage=ir
module m

param @w : f32[3, 4] init=uniform(-0.5, 0.5) stream=0 storage=dense

func @f(%x: f32[2, 4]) -> (f32[2, 3]) {
  %0 = param @w : f32[3, 4]
  %1 = matmul_nt %x, %0 : f32[2, 3]  loc(fc)
  return %1
}
";

fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_parses() {
    let m = parse_module(BASE).unwrap();
    assert_eq!(parse_module(&print_module(&m)).unwrap(), m);
}

#[test]
fn unknown_op_suggests_a_close_name() {
    expect_error(
        &base_with("matmul_nt %x", "matmull_nt %x"),
        "unknown op `matmull_nt` (did you mean `matmul_nt`?)",
        "matmull_nt",
    );
    expect_error(
        &base_with("matmul_nt %x", "conv2 %x"),
        "did you mean `conv2d`",
        "conv2 %x",
    );
    expect_error(
        &base_with("matmul_nt %x", "relu_grd %x"),
        "did you mean `relu_grad`",
        "relu_grd",
    );
    let text = base_with("matmul_nt %x", "frobnicate %x");
    expect_error(&text, "unknown op `frobnicate`", "frobnicate");
    assert!(!parse_module(&text)
        .unwrap_err()
        .message
        .contains("did you mean"));
}

#[test]
fn undefined_values() {
    expect_error(
        &base_with("%x, %0", "%x, %7"),
        "undefined value %7: only %0 is defined here",
        "%7",
    );
    expect_error(&base_with("%x, %0", "%y, %0"), "undefined value %y", "%y");
    expect_error(
        &base_with("return %1", "return %2"),
        "undefined value %2",
        "%2\n",
    );
    // A value used by the instruction that defines it is not defined yet.
    expect_error(&base_with("%x, %0", "%x, %1"), "undefined value %1", "%1 :");
    expect_error(
        &base_with(
            "  %0 = param @w",
            "  %0 = relu %0 : f32[2, 4]\n  %9 = param @w",
        ),
        "no instruction of @f is defined yet",
        "%0 :",
    );
}

#[test]
fn wrong_numbering() {
    let text = base_with("%1 = matmul_nt", "%5 = matmul_nt");
    expect_error(&text, "must be numbered %1, not %5", "%5 =");
    expect_error(
        &base_with("%1 = matmul_nt", "%x = matmul_nt"),
        "this must be %1",
        "%x =",
    );
    expect_error(
        &base_with("%1 = matmul_nt", "%99999999999999999999999 = matmul_nt"),
        "number too large",
        "%9999",
    );
}

#[test]
fn type_mismatch_is_caught_by_the_verifier() {
    let text =
        base_with("%0 : f32[2, 3]", "%0 : f32[2, 4]").replace("-> (f32[2, 3])", "-> (f32[2, 4])");
    expect_error(
        &text,
        "@f %1: `matmul_nt` produces f32[2, 3], but the instruction says f32[2, 4]",
        "f32[2, 4]  loc",
    );
    // Only the instruction's type changed: the verifier's message, not the result check's.
    expect_error(
        &base_with("%0 : f32[2, 3]", "%0 : f32[2, 4]"),
        "@f %1: `matmul_nt` produces f32[2, 3], but the instruction says f32[2, 4]",
        "f32[2, 4]  loc",
    );
    // Without verification the same text parses.
    assert!(sparsec_ir::parse_module_unverified(&text).is_ok());
    let e = sparsec_ir::parse_module_unverified(&base_with("-> (f32[2, 3])", "-> (f32[3, 2])"));
    assert!(e.unwrap_err().message.contains("declared f32[3, 2]"));
    // Ill-typed operands: located at the instruction.
    expect_error(
        &base_with("matmul_nt %x, %0", "matmul %x, %0"),
        "inner dimensions differ",
        "%1 = matmul",
    );
    // Declared and returned result types must agree.
    expect_error(
        &base_with("-> (f32[2, 3])", "-> (f32[3, 2])"),
        "declared f32[3, 2]",
        "%1\n}",
    );
    expect_error(
        &base_with("-> (f32[2, 3])", "-> ()"),
        "declares 0 result(s) but returns 1",
        "return",
    );
    // Other verifier errors point at their line.
    expect_error(
        &base_with("uniform(-0.5, 0.5)", "uniform(0.5, -0.5)"),
        "lo < hi",
        "param @w :",
    );
}

#[test]
fn bad_attributes() {
    let conv = "\
sparsec-ir 2 stage=ir
module m
func @f(%x: f32[1, 1, 4, 4], %w: f32[1, 1, 3, 3]) -> (f32[1, 1, 2, 2]) {
  %0 = conv2d %x, %w {stride=[1, 1], padding=[0, 0]} : f32[1, 1, 2, 2]
  return %0
}
";
    assert!(parse_module(conv).is_ok());
    let with = |from: &str, to: &str| conv.replacen(from, to, 1);
    expect_error(
        &with("padding=[0, 0]", "padding=[0]"),
        "must have two entries",
        "{stride",
    );
    expect_error(
        &with("padding=[0, 0]", "pad=[0, 0]"),
        "needs attribute `padding`",
        "{stride",
    );
    expect_error(
        &with("padding=[0, 0]", "padding=[0, 0], dilation=[1, 1]"),
        "no attribute `dilation`",
        "{stride",
    );
    expect_error(
        &with("padding=[0, 0]", "padding=0"),
        "must be a list of integers",
        "{stride",
    );
    expect_error(
        &with("padding=[0, 0]", "padding=[0, 0"),
        "expected `,` or `]`",
        "}",
    );
    expect_error(
        &with("padding=[0, 0]", "padding=[0, -1]"),
        "expected an integer",
        "-1",
    );
    expect_error(
        &with(" {stride=[1, 1], padding=[0, 0]}", ""),
        "needs attribute `stride`",
        "conv2d",
    );
    expect_error(
        &base_with("matmul_nt %x, %0", "matmul_nt %x, %0 {k=1}"),
        "has no attribute `k`",
        "{k=1}",
    );
    expect_error(
        &base_with("matmul_nt %x, %0", "matmul_nt %x"),
        "takes 2 operand(s), found 1",
        "%x :",
    );
    expect_error(
        &base_with("matmul_nt %x, %0", "matmul_nt %x, %0, %0"),
        "takes 2 operand(s), found 3",
        "%x, %0, %0",
    );
}

#[test]
fn truncated_files() {
    expect_error("", "expected the header line", "");
    expect_error("# only a comment\n", "expected the header line", "");
    expect_error("sparsec-ir 2 stage=ir\n", "expected `module`", "");
    expect_error(
        "sparsec-ir 3 stage=ir\nmodule m\n",
        "unsupported format version 3",
        "3 stage",
    );
    expect_error(
        "sparsec-ir 2 stage=optimised\nmodule m\n",
        "unknown stage `optimised` (expected ir, train, opt)",
        "optimised",
    );
    let cut = BASE.find("  return").unwrap();
    expect_error(
        &BASE[..cut],
        "expected an instruction `%N = ...` or `return`",
        "",
    );
    let cut = BASE.find("}\n").unwrap();
    expect_error(&BASE[..cut], "expected `}` after `return`", "");
    let cut = BASE.find("f32[2, 3]  loc").unwrap() + 5;
    expect_error(&BASE[..cut], "expected `,` or `]`", "");
    expect_error(
        &base_with("storage=dense", "storage=den"),
        "unknown storage `den`",
        "den\n",
    );
    expect_error(
        &base_with("-> (f32[2, 3]) {", "-> (f32[2, 3])"),
        "expected `{`",
        "\n  %0",
    );
    expect_error(
        "sparsec-ir 2 stage=ir\nmodule \"m\n",
        "unterminated string",
        "\"m",
    );
}

#[test]
fn garbage() {
    expect_error(
        "\u{0}\u{1}\u{ff}garbage",
        "unexpected character '\\0'",
        "\u{0}",
    );
    expect_error(
        &base_with("module m", "module m ☃"),
        "unexpected character '☃'",
        "☃",
    );
    expect_error(
        &base_with("%x, %0", "%x, %0 ∑"),
        "unexpected character",
        "∑",
    );
    expect_error(
        "sparsec-ir 2 stage=ir\nmodule m\nfrobnicate\n",
        "expected `data`, `train`, `method`, `param` or `func`",
        "frobnicate",
    );
    expect_error(&base_with("module m", "module 3m"), "must be quoted", "3m");
    expect_error(
        &base_with("module m", "module m\nmodule n"),
        "a second `module` line",
        "module n",
    );
    expect_error(
        &base_with("module m\n", "module m\ndata fashion_mnist\ntrain epochs=1 batch=1 seed=1 log_every=1 optimizer=sgd(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=false) schedule=constant\ndata fashion_mnist\n"),
        "out of place",
        "data fashion_mnist\n\n",
    );
    expect_error(
        &base_with("module m\n", "module m\ndata mnist\n"),
        "unknown data source `mnist`",
        "mnist",
    );
    expect_error(
        &base_with("param @w :", "param @w : f32[1]\nparam @w :"),
        "expected `init=`, found end of line",
        "\nparam @w : f32[3",
    );
    expect_error(
        &base_with("loc(fc)", "loc(fc"),
        "expected `)`, found end of line",
        "\n  return",
    );
    expect_error(
        &base_with("loc(fc)", "loc(\"fc\\q\")"),
        "unknown escape in string",
        "\\q",
    );
    expect_error(
        &base_with("loc(fc)", "loc(\"\\u{d800}\")"),
        "not a Unicode scalar value",
        "\\u{d800}",
    );
    expect_error(
        &base_with("loc(fc)", "loc(\"\\u{1234567}\")"),
        "bad `\\u{...}` escape",
        "\\u{123",
    );
}

#[test]
fn names_and_references() {
    expect_error(
        &base_with("param @w : f32[3, 4]\n", "param @v : f32[3, 4]\n"),
        "unknown parameter @v",
        "@v :",
    );
    expect_error(
        &base_with(
            "stream=0 storage=dense\n",
            "stream=0 storage=dense\nparam @w : f32[1] init=zeros stream=1 storage=dense\n",
        ),
        "duplicate parameter @w",
        "@w : f32[1]",
    );
    expect_error(
        &base_with("(%x: f32[2, 4])", "(%x: f32[2, 4], %x: f32[1])"),
        "duplicate argument %x",
        "x: f32[1]",
    );
    expect_error(
        &base_with("(%x: f32[2, 4])", "(%0: f32[2, 4])"),
        "argument names cannot be numbers",
        "0: f32",
    );
    expect_error(
        &base_with("%1\n}", "%1\n}\n\nfunc @f() -> () {\n  return\n}"),
        "duplicate function name",
        "@f() -> ()",
    );
}

#[test]
fn numbers_and_limits() {
    expect_error(
        &base_with("f32[2, 4])", "f32[2, 99999999999999999999])"),
        "number too large",
        "99999",
    );
    expect_error(
        &base_with("f32[2, 4])", "f32[65536, 65536])"),
        "more than 2^31 elements",
        "f32[65536",
    );
    expect_error(
        &base_with("f32[2, 4])", "f32[4294967296, 4294967296, 4294967296])"),
        "more than 2^31 elements",
        "f32[4294967296",
    );
    let deep = format!("f32[{}])", vec!["1"; 40].join(", "));
    expect_error(
        &base_with("f32[2, 4])", &deep),
        "rank exceeds the limit of 16",
        "[1, 1",
    );
    expect_error(
        &base_with("uniform(-0.5,", "uniform(-1e999,"),
        "number too large",
        "-1e999",
    );
    expect_error(
        &base_with("uniform(-0.5,", "uniform(-0.5.5,"),
        "expected a number",
        "-0.5.5",
    );
    expect_error(
        &base_with("stream=0", "stream=18446744073709551616"),
        "number too large",
        "1844",
    );
    assert!(parse_module(&base_with("stream=0", "stream=18446744073709551615")).is_ok());
    expect_error(
        &base_with("stream=0", "stream=-1"),
        "expected an integer",
        "-1",
    );
    expect_error(
        &base_with("f32[3, 4] init", "f64[3, 4] init"),
        "unknown element type `f64`",
        "f64",
    );
    expect_error(
        &base_with("f32[3, 4] init", "f32[3, 4]{dense} init"),
        "unknown encoding `dense`",
        "dense}",
    );
    expect_error(
        &base_with("f32[3, 4] init", "f32[3, 4]{regen} init"),
        "must be dense",
        "param @w",
    );
}

/// Hostile inputs: huge lines, deep brackets, long numbers. None may panic or take long.
#[test]
fn hostile_inputs_are_rejected_quickly() {
    let start = std::time::Instant::now();
    let ten_mb = 10 << 20;
    // Inputs that get far into the parser are smaller, to keep debug builds quick.
    let two_mb = 2 << 20;
    let inputs = [
        "[".repeat(ten_mb),
        "(".repeat(ten_mb),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f() -> ({}", "[".repeat(ten_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f(%x: f32[{}]) -> () {{\n  return\n}}\n", "1, ".repeat(ten_mb / 3)),
        format!("sparsec-ir {}", "9".repeat(ten_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nparam @w : f32[1] init=uniform(0.{}1, 1.0) stream=0 storage=dense\n", "0".repeat(two_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nparam @w : f32[1] init=uniform({}, 1.0) stream=0 storage=dense\n", "9".repeat(two_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule \"{}", "x".repeat(ten_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule m\n{}", "\n".repeat(two_mb)),
        format!("sparsec-ir 2 stage=ir\nmodule m\n{}", "# comment\n".repeat(ten_mb / 10)),
        format!("sparsec-ir 2 stage=ir {}", "k=v ".repeat(two_mb / 4)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nmethod activation_density(resize_at=[{}1], min_width=1) on=[a]\n", "1, ".repeat(two_mb / 3)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f(%x: f32[1]) -> () {{\n  %0 = relu %x {{{}b=1.5}} : f32[1]\n  return\n}}\n", "a=[1], ".repeat(two_mb / 7)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f(%x: f32[1, 1, 4, 4], %w: f32[1, 1, 1, 1]) -> () {{\n  %0 = conv2d %x, %w {{{}stride=[1, 1]}} : f32[1, 1, 4, 4]\n  return\n}}\n", "padding=[0, 0], ".repeat(two_mb / 16)),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f(%x: f32[1]) -> (f32[1]) {{\n{}  return %x\n}}\n", (0..50_000).map(|i| format!("  %{i} = relu %x : f32[1]\n")).collect::<String>()),
        format!("sparsec-ir 2 stage=ir\nmodule m\nfunc @f(%x: f32[1]) -> () {{\n  %0 = {} %x : f32[1]\n  return\n}}\n", "r".repeat(ten_mb)),
        "\u{10ffff}".repeat(ten_mb / 4),
    ];
    for (i, text) in inputs.iter().enumerate() {
        let t = std::time::Instant::now();
        let result = parse_module(text);
        assert!(
            t.elapsed().as_secs() < 5,
            "input {i} took {:?}",
            t.elapsed()
        );
        if let Err(e) = &result {
            assert!(
                e.span.end <= text.len() && e.span.start <= e.span.end,
                "input {i}"
            );
            let _ = e.line_col(text);
        }
    }
    // The header with many extra entries and the long comment/blank runs are valid.
    assert!(start.elapsed().as_secs() < 30);
}
