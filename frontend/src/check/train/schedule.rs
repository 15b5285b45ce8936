//! `schedule: constant | step(...) | multistep(...)`.

use crate::ast::*;
use crate::check::opts::Opts;
use crate::check::{Checker, Listing};
use sparsec_ir::spec::Schedule;

const SCHEDULES: &[&str] = &["constant", "step", "multistep"];

impl Checker {
    pub(super) fn schedule(&mut self, v: &Value) -> Option<Schedule> {
        let (func, args): (&Name, &[Arg]) = match &v.kind {
            ValueKind::Call { func, args } => (func, args),
            ValueKind::Ident(n) => {
                return match n.as_str() {
                    "constant" => Some(Schedule::Constant),
                    "step" => {
                        self.missing(
                            v.span,
                            "arguments of `step`",
                            "write `step(every: 10, gamma: 0.1)`",
                        );
                        None
                    }
                    "multistep" => {
                        self.missing(
                            v.span,
                            "arguments of `multistep`",
                            "write `multistep(milestones: [10, 15], gamma: 0.1)`",
                        );
                        None
                    }
                    _ => {
                        self.unknown_schedule(n, v.span);
                        None
                    }
                };
            }
            _ => {
                self.wrong_type(
                    v,
                    "a schedule (`constant`, `step(...)` or `multistep(...)`)",
                    "the learning-rate schedule",
                );
                return None;
            }
        };
        let gamma = |cx: &mut Checker, opts: &Opts<'_>| match opts.get("gamma") {
            Some(v) => cx.float_in(
                v,
                "gamma",
                |x| x > 0.0 && x <= 1.0,
                "`gamma` must be in 0 < gamma ≤ 1",
            ),
            None => {
                if !opts.had_positional {
                    cx.missing(
                        func.span,
                        format!("`gamma` for `{}`", func.text).as_str(),
                        "e.g. `gamma: 0.1`",
                    );
                }
                None
            }
        };
        match func.text.as_str() {
            "constant" => {
                self.call_opts(func, args, &[], "`constant`");
                Some(Schedule::Constant)
            }
            "step" => {
                let opts = self.call_opts(func, args, &["every", "gamma"], "`step`");
                let every = match opts.get("every") {
                    Some(v) => self.uint(v, "every", 1),
                    None => {
                        if !opts.had_positional {
                            self.missing(
                                func.span,
                                "`every` for `step`",
                                "e.g. `step(every: 10, gamma: 0.1)`",
                            );
                        }
                        None
                    }
                };
                let gamma = gamma(self, &opts);
                Some(Schedule::Step {
                    every: every?,
                    gamma: gamma?,
                })
            }
            "multistep" => {
                let opts = self.call_opts(func, args, &["milestones", "gamma"], "`multistep`");
                let milestones = match opts.get("milestones") {
                    Some(v) => self.epoch_list(v, "milestones", None),
                    None => {
                        if !opts.had_positional {
                            self.missing(
                                func.span,
                                "`milestones` for `multistep`",
                                "e.g. `multistep(milestones: [10, 15], gamma: 0.1)`",
                            );
                        }
                        None
                    }
                };
                let gamma = gamma(self, &opts);
                Some(Schedule::MultiStep {
                    milestones: milestones?,
                    gamma: gamma?,
                })
            }
            other => {
                self.unknown_schedule(other, func.span);
                None
            }
        }
    }

    /// Both spellings of a schedule (`step` and `step(...)`) report an unknown one alike.
    fn unknown_schedule(&mut self, name: &str, span: Span) {
        self.unknown(
            "E0410",
            format!("unknown schedule `{name}`"),
            (name, span),
            "unknown schedule",
            SCHEDULES.iter().copied(),
            Listing::Always(format!("schedules: {}", SCHEDULES.join(", "))),
        );
    }
}
