//! Source-to-source edits of a model file: a run's final architecture written back as a model
//! file (`sparsec emit --stage model RUN_DIR`), every byte the edits do not touch kept as the
//! user wrote it (comments, layout, option order).

use std::collections::BTreeMap;

use crate::ast::{Item, Stmt, ValueKind};
use crate::parse;

/// `source` with the width of every `dense` or `conv2d` layer named in `widths` set to its
/// `(inputs, outputs)` (`dense(x, OUT)` keeps that form, `dense(x, IN -> OUT)` gets both), and
/// its `method` block replaced by the comment lines `method_note`: what remains is the
/// architecture alone, trained densely if given to `sparsec train`.
pub fn with_widths(
    source: &str,
    widths: &BTreeMap<String, (usize, usize)>,
    method_note: &str,
) -> Result<String, String> {
    let (file, diags) = parse(source);
    let file = match file {
        Some(f) if diags.is_empty() => f,
        _ => return Err("the model file does not parse".into()),
    };
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut found: Vec<&str> = Vec::new();
    for item in &file.items {
        match item {
            Item::Model(model) => {
                for stmt in &model.stmts {
                    let Stmt::Layer { name, op, args, .. } = stmt else {
                        continue;
                    };
                    let Some(&(inputs, outputs)) = widths.get(&name.text) else {
                        continue;
                    };
                    if op.text != "dense" && op.text != "conv2d" {
                        return Err(format!(
                            "`{}` is a `{}` layer, with no width",
                            name.text, op.text
                        ));
                    }
                    let width = args
                        .iter()
                        .filter(|a| a.key.is_none())
                        .nth(1)
                        .ok_or_else(|| format!("`{}` has no width argument", name.text))?;
                    let text = match &width.value.kind {
                        ValueKind::Pair { .. } => format!("{inputs} -> {outputs}"),
                        _ => outputs.to_string(),
                    };
                    edits.push((width.value.span.start, width.value.span.end, text));
                    found.push(&name.text);
                }
            }
            Item::Method(method) => {
                let note: String = method_note.lines().map(|l| format!("# {l}\n")).collect();
                edits.push((
                    method.span.start,
                    method.span.end,
                    note.trim_end().to_owned(),
                ));
            }
            _ => {}
        }
    }
    let missing: Vec<&str> = widths
        .keys()
        .map(String::as_str)
        .filter(|l| !found.contains(l))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the model file does not define every resized layer (missing: {})",
            missing.join(", ")
        ));
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    for (start, end, text) in edits {
        out.push_str(&source[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&source[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::with_widths;
    use std::collections::BTreeMap;

    #[test]
    fn widths_change_and_nothing_else_does() {
        let source = "model m {\n    input x: [1, 4, 4]\n    flat = flatten(x)  # keep me\n    \
                      fc1 = dense(flat, 16 -> 30)\n    h = relu(fc1)\n    fc2 = dense(h, 3)\n    \
                      loss softmax_cross_entropy(fc2)\n}\ndata synthetic\ntrain { epochs: 1, optimizer: sgd(lr: \
                      0.1) }\nmethod activation_density { resize_at: [1] }\n";
        let widths = BTreeMap::from([("fc1".to_owned(), (16, 7)), ("fc2".to_owned(), (7, 3))]);
        let out = with_widths(source, &widths, "resized by a run").unwrap();
        assert!(out.contains("fc1 = dense(flat, 16 -> 7)"), "{out}");
        assert!(out.contains("fc2 = dense(h, 3)"), "{out}");
        assert!(out.contains("flatten(x)  # keep me"), "{out}");
        assert!(out.contains("# resized by a run"), "{out}");
        assert!(!out.contains("method activation_density"), "{out}");
        assert!(crate::check_source(&out).is_ok(), "{out}");
    }
}
