//! What a name read by a statement refers to.

use super::{Avail, LayerCx};
use crate::ast::*;
use crate::check::text::list_names;
use crate::check::{Checker, Listing};
use crate::diag::{error, DiagExt};

impl Checker {
    /// Resolves a value name read by a statement. `Err(true)` when an error was reported,
    /// `Err(false)` when the value failed earlier (skip silently).
    pub(super) fn resolve(
        &mut self,
        v: &Value,
        cx: &LayerCx<'_>,
    ) -> Result<(String, Vec<usize>, Span, Option<usize>), bool> {
        let ValueKind::Ident(name) = &v.kind else {
            self.wrong_type(
                v,
                "a value name",
                "expected the name of the input or of an earlier layer",
            );
            return Err(true);
        };
        match cx.values.get(name.as_str()) {
            Some(Avail::Ok { shape, span, layer }) => {
                Ok((name.clone(), shape.clone(), *span, *layer))
            }
            Some(Avail::Failed) => Err(false),
            None => {
                if let Some(&(j, def)) = cx.defs.get(name.as_str()) {
                    if j >= cx.index {
                        self.push(
                            error(
                                "E0203",
                                format!("`{name}` is used before its definition"),
                                v.span,
                                "used here",
                            )
                            .secondary(def, format!("`{name}` is defined here"))
                            .help("a value must be defined above the statements that read it"),
                        );
                    }
                    // A definition that is not in `values` and not later failed silently.
                    return Err(j >= cx.index);
                }
                if !cx.has_input {
                    return Err(false); // E0205 explains it
                }
                let defined = (!cx.values.is_empty() && cx.values.len() <= 12).then(|| {
                    let mut sorted: Vec<&str> = cx.values.keys().map(String::as_str).collect();
                    sorted.sort_unstable();
                    format!("values defined so far: {}", list_names(sorted))
                });
                self.unknown(
                    "E0202",
                    format!("cannot find value `{name}`"),
                    (name, v.span),
                    "not defined",
                    cx.values.keys().map(String::as_str),
                    Listing::Otherwise(defined),
                );
                Err(true)
            }
        }
    }
}
