//! Layers whose output never reaches the loss.

use crate::ast::*;
use crate::check::text::list_names;
use crate::check::Checker;
use crate::diag::{error, DiagExt};
use std::collections::{HashMap, HashSet};

impl Checker {
    /// Reports layers whose output reaches neither another layer nor the loss.
    pub(super) fn dead_layers(
        &mut self,
        m: &Model,
        defs: &HashMap<&str, (usize, Span)>,
        reads: &[(String, Vec<String>)],
        used: &HashSet<String>,
        logits: &str,
    ) {
        // Reads graph over first definitions: layer name → names it reads.
        let mut graph: HashMap<&str, Vec<&str>> = HashMap::new();
        for (n, r) in reads {
            graph
                .entry(n.as_str())
                .or_default()
                .extend(r.iter().map(String::as_str));
        }
        let mut live: HashSet<&str> = HashSet::new();
        let mut stack = vec![logits];
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                if let Some(rs) = graph.get(n) {
                    stack.extend(rs.iter().copied());
                }
            }
        }
        for (i, s) in m.stmts.iter().enumerate() {
            let Stmt::Layer { name, .. } = s else {
                continue;
            };
            if defs.get(name.text.as_str()).is_none_or(|&(j, _)| j != i) {
                continue;
            }
            if used.contains(&name.text) || name.text == logits {
                continue;
            }
            // Dead ancestors only this sink keeps "alive".
            let mut dead: Vec<&str> = Vec::new();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut stack: Vec<&str> = graph.get(name.text.as_str()).cloned().unwrap_or_default();
            while let Some(n) = stack.pop() {
                if dead.len() > 12 {
                    break; // enough for the note; keeps this linear
                }
                if live.contains(n) || !seen.insert(n) || !defs.contains_key(n) {
                    continue;
                }
                dead.push(n);
                if let Some(rs) = graph.get(n) {
                    stack.extend(rs.iter().copied());
                }
            }
            let mut d = error(
                "E0210",
                format!("layer `{}` is never used", name.text),
                name.span,
                "its output is never read",
            )
            .note(format!(
                "only layers that feed the loss (through `{logits}`) take part in training"
            ));
            if !dead.is_empty() {
                dead.sort_by_key(|n| defs.get(n).map_or(0, |d| d.0));
                d = d.note(format!(
                    "so these layers do not contribute to the loss either: {}",
                    list_names(dead)
                ));
            }
            self.push(d.help("remove it, or read it in another layer or in the loss"));
        }
    }
}
