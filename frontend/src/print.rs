//! The stable AST printer behind `sparsec emit --stage ast`: an indented tree, one node per line,
//! each with its `line:col` (1-based, columns in characters). Numbers print as written, strings
//! quoted. Recursion depth is bounded by the lexer's nesting guard.

use crate::ast::*;
use crate::diag::LineIndex;
use std::fmt::Write;

pub fn print_ast(file: &File, source: &str) -> String {
    let mut p = Printer {
        out: String::new(),
        index: LineIndex::new(source),
    };
    p.line(0, "File", file.span);
    for item in &file.items {
        p.item(1, item);
    }
    p.out
}

struct Printer<'a> {
    out: String,
    index: LineIndex<'a>,
}

impl Printer<'_> {
    fn line(&mut self, depth: usize, text: &str, span: Span) {
        let (l, c) = self.index.line_col(span.start);
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        let _ = writeln!(self.out, "{text} @{l}:{c}");
    }

    fn item(&mut self, d: usize, item: &Item) {
        match item {
            Item::Model(m) => {
                self.line(d, &format!("Model {}", m.name.text), m.span);
                for s in &m.stmts {
                    self.stmt(d + 1, s);
                }
            }
            Item::Data(x) => {
                self.line(d, &format!("Data {}", x.kind.text), x.span);
                if let Some(b) = &x.block {
                    self.block(d + 1, b);
                }
            }
            Item::Train(t) => {
                self.line(d, "Train", t.span);
                self.block(d + 1, &t.block);
            }
            Item::Method(m) => {
                self.line(d, &format!("Method {}", m.kind.text), m.span);
                if let Some(b) = &m.block {
                    self.block(d + 1, b);
                }
            }
            Item::Error(s) => self.line(d, "Error", *s),
        }
    }

    fn stmt(&mut self, d: usize, s: &Stmt) {
        match s {
            Stmt::Input { name, shape, span } => {
                self.line(d, &format!("Input {}", name.text), *span);
                self.value(d + 1, shape);
            }
            Stmt::Layer {
                name,
                op,
                args,
                span,
            } => {
                self.line(d, &format!("Layer {} = {}", name.text, op.text), *span);
                self.args(d + 1, args);
            }
            Stmt::Loss {
                func, args, span, ..
            } => {
                self.line(d, &format!("Loss {}", func.text), *span);
                self.args(d + 1, args);
            }
            Stmt::Error(span) => self.line(d, "Error", *span),
        }
    }

    fn block(&mut self, d: usize, b: &Block) {
        self.line(d, "Block", b.span);
        self.opts(d + 1, &b.opts);
    }

    fn opts(&mut self, d: usize, opts: &[Opt]) {
        for o in opts {
            if matches!(o.value.kind, ValueKind::Error) && o.key.text.is_empty() {
                self.line(d, "Error", o.span);
            } else {
                self.line(d, &format!("Option {}", o.key.text), o.span);
                self.value(d + 1, &o.value);
            }
        }
    }

    fn args(&mut self, d: usize, args: &[Arg]) {
        for a in args {
            match &a.key {
                Some(k) => {
                    self.line(d, &format!("Named {}", k.text), a.span);
                    self.value(d + 1, &a.value);
                }
                None => self.value(d, &a.value),
            }
        }
    }

    fn value(&mut self, d: usize, v: &Value) {
        let sign = |neg: &bool| if *neg { "-" } else { "" };
        match &v.kind {
            ValueKind::Int { text, negative } => {
                self.line(d, &format!("Int {}{text}", sign(negative)), v.span)
            }
            ValueKind::Float { text, negative } => {
                self.line(d, &format!("Float {}{text}", sign(negative)), v.span)
            }
            ValueKind::Percent(text) => self.line(d, &format!("Percent {text}%"), v.span),
            ValueKind::Str(s) => self.line(d, &format!("Str {s:?}"), v.span),
            ValueKind::Bool(b) => self.line(d, &format!("Bool {b}"), v.span),
            ValueKind::Ident(s) => self.line(d, &format!("Name {s}"), v.span),
            ValueKind::Glob(s) => self.line(d, &format!("Glob {s}"), v.span),
            ValueKind::Kind(s) => self.line(d, &format!("Kind @{s}"), v.span),
            ValueKind::List(items) => {
                self.line(d, "List", v.span);
                for i in items {
                    self.value(d + 1, i);
                }
            }
            ValueKind::Map(opts) => {
                self.line(d, "Map", v.span);
                self.opts(d + 1, opts);
            }
            ValueKind::Call { func, args } => {
                self.line(d, &format!("Call {}", func.text), v.span);
                self.args(d + 1, args);
            }
            ValueKind::Pair { from, to } => {
                self.line(d, "Pair", v.span);
                self.value(d + 1, from);
                self.value(d + 1, to);
            }
            ValueKind::Error => self.line(d, "Error", v.span),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_positions_and_texts() {
        let src = "model m {\n  input x: [1_0]\n  y = dense(x, 10 -> 2, bias: false)\n  loss ce(y)\n}\ntrain { lr: -1.5e3, s: \"a\\\"\" }\n";
        let (file, diags) = crate::parse(src);
        assert!(diags.is_empty());
        let out = print_ast(&file.unwrap(), src);
        let expected = "\
File @1:1
  Model m @1:1
    Input x @2:3
      List @2:12
        Int 1_0 @2:13
    Layer y = dense @3:3
      Name x @3:13
      Pair @3:16
        Int 10 @3:16
        Int 2 @3:22
      Named bias @3:25
        Bool false @3:31
    Loss ce @4:3
      Name y @4:11
  Train @6:1
    Block @6:7
      Option lr @6:9
        Float -1.5e3 @6:13
      Option s @6:21
        Str \"a\\\"\" @6:24
";
        assert_eq!(out, expected);
    }
}
