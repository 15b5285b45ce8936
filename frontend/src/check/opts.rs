//! `key: value` options of blocks and calls: unknown keys, duplicates, positional arguments.

use super::{Checker, Listing};
use crate::ast::*;
use crate::diag::{error, DiagExt};

/// A set of `key: value` options, checked against the allowed keys.
pub(super) struct Opts<'a> {
    items: Vec<(&'a str, &'a Value, Span)>,
    /// A call had positional arguments (already reported): "missing" errors would be noise.
    pub(super) had_positional: bool,
}

impl<'a> Opts<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| *v)
    }
}

impl Checker {
    /// Collects options, reporting unknown (E0401) and duplicate (E0405) keys.
    pub(super) fn opts<'a>(
        &mut self,
        items: Vec<(&'a Name, &'a Value)>,
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let mut out: Vec<(&'a str, &'a Value, Span)> = Vec::new();
        for (key, value) in items {
            if key.text.is_empty() {
                continue; // recovered syntax error
            }
            if !allowed.contains(&key.text.as_str()) {
                let listing = if allowed.is_empty() {
                    format!("{ctx} takes no options")
                } else {
                    format!("{ctx} options: {}", allowed.join(", "))
                };
                self.unknown(
                    "E0401",
                    format!("unknown option `{}` for {ctx}", key.text),
                    (&key.text, key.span),
                    "unknown option",
                    allowed.iter().copied(),
                    Listing::Always(listing),
                );
                continue;
            }
            if let Some((_, _, first)) = out.iter().find(|(k, _, _)| *k == key.text) {
                let first = *first;
                self.push(
                    error(
                        "E0405",
                        format!("option `{}` is given more than once", key.text),
                        key.span,
                        "given again here",
                    )
                    .secondary(first, "first given here"),
                );
                continue;
            }
            out.push((key.text.as_str(), value, key.span));
        }
        Opts {
            items: out,
            had_positional: false,
        }
    }

    pub(super) fn block_opts<'a>(
        &mut self,
        block: Option<&'a Block>,
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let items = block.map_or_else(Vec::new, |b| {
            b.opts.iter().map(|o| (&o.key, &o.value)).collect()
        });
        self.opts(items, allowed, ctx)
    }

    /// Arguments of a call that takes only named options (`sgd(lr: 0.1)`).
    pub(super) fn call_opts<'a>(
        &mut self,
        func: &Name,
        args: &'a [Arg],
        allowed: &[&str],
        ctx: &str,
    ) -> Opts<'a> {
        let mut items = Vec::new();
        let mut had_positional = false;
        for a in args {
            match &a.key {
                Some(k) => items.push((k, &a.value)),
                None => {
                    had_positional = true;
                    if matches!(a.value.kind, ValueKind::Error) {
                        continue;
                    }
                    let mut d = error(
                        "E0412",
                        format!("`{}` takes only named arguments", func.text),
                        a.span,
                        "positional argument",
                    );
                    if let Some(first) = allowed.first() {
                        d = d.help(format!("name it, e.g. `{}({first}: ...)`", func.text));
                    }
                    self.push(d);
                }
            }
        }
        let mut opts = self.opts(items, allowed, ctx);
        opts.had_positional = had_positional;
        opts
    }
}
