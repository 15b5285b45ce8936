//! A module from hand-written IR text whose values have names instead of numbers, for tests
//! that write small programs by hand (the gradient checks of each op).

use sparsec_ir::{parse_module, Module};

/// A module from hand-written IR whose instructions are named instead of numbered:
/// `h = matmul_nt %x, %w0 : f32[2, 3]` lines; `%name` refers to an earlier line or an argument.
/// `params` are `name : type` lines (uniform(-1, 1) init, streams in order).
pub fn ir_module(params: &str, args: &str, body: &str, loss: &str, logits: &str) -> Module {
    let mut text = String::from(
        "sparsec-ir 2 stage=ir\nmodule t\ntrain epochs=1 batch=2 seed=3 log_every=1 \
         optimizer=sgd(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=false) schedule=constant\n\n",
    );
    for (i, p) in params
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        text += &format!("param @{p} init=uniform(-1.0, 1.0) stream={i} storage=dense\n");
    }
    let mut names: Vec<(String, String)> = Vec::new(); // (name, type)
    let mut insts = String::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, rest) = line.split_once('=').expect("`name = op ...`");
        let mut rest = format!(" {}", rest.trim());
        // Longest names first so `%h1` is not replaced inside `%h10`.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(names[i].0.len()));
        for i in order {
            rest = replace_value(&rest, &names[i].0, &format!("{i}"));
        }
        let ty = rest.rsplit_once(" : ").expect("a type").1.trim();
        let ty = ty.split("  loc(").next().unwrap().to_owned();
        insts += &format!("  %{} ={rest}\n", names.len());
        names.push((name.trim().to_owned(), ty));
    }
    let find = |n: &str| {
        names
            .iter()
            .position(|(m, _)| m == n)
            .unwrap_or_else(|| panic!("no value {n}"))
    };
    let (l, g) = (find(loss), find(logits));
    text += &format!(
        "\nfunc @forward({args}) -> ({}, {}) {{\n{insts}  return %{l}, %{g}\n}}\n",
        names[l].1, names[g].1
    );
    parse_module(&text).unwrap_or_else(|e| panic!("{}\n{text}", e.message))
}

/// Replace the value reference `%name` (a whole word) by `%new`.
fn replace_value(s: &str, name: &str, new: &str) -> String {
    let pat = format!("%{name}");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = &rest[i + pat.len()..];
        let boundary = !after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        out += &rest[..i];
        out += if boundary { "%" } else { &pat };
        if boundary {
            out += new;
        }
        rest = after;
    }
    out + rest
}
