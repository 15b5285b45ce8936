//! Equality saturation over the train step (egg): rewrite dense reads of tracked weights into
//! seeded regeneration plus sparse corrections, offer fused forms, and extract the cheapest
//! program under an analytic cost, DAG-aware, optionally within a memory budget.
//!
//! Deterministic: egg's `deterministic` feature, a simple scheduler, iteration and node limits
//! and no time limit, and an extractor that visits e-classes in id order.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

use std::time::Duration;

use analysis::ValueFacts;
use egg::{Runner, SimpleScheduler, StopReason};
use lang::Node;
use sparsec_ir::module::MEMORY_BUDGET_HEADER;
use sparsec_ir::{Module, Stage};

pub use cost::CostModel;
use rules::{Phase, RuleSource};

/// Limits and choices for one optimisation.
#[derive(Clone, Debug)]
pub struct Options {
    pub iter_limit: usize,
    pub node_limit: usize,
    pub cost: CostModel,
    /// Bytes the materialised values of a function may take in all; `None`: no limit.
    pub memory_budget: Option<u64>,
    /// The rules to saturate with; `None`: those of the module's method.
    pub rules: Option<RuleSource>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iter_limit: 32,
            node_limit: 100_000,
            cost: CostModel::default(),
            memory_budget: None,
            rules: None,
        }
    }
}

/// What saturation did in one phase of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseReport {
    pub phase: &'static str,
    pub iterations: usize,
    pub eclasses: usize,
    pub enodes: usize,
    pub stop: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncReport {
    pub func: String,
    pub phases: Vec<PhaseReport>,
    pub extraction: &'static str,
    pub time_cost: u64,
    pub memory_bytes: u64,
}

fn stop_name(reason: &Option<StopReason>) -> String {
    match reason {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(_)) => "iteration-limit".into(),
        Some(StopReason::NodeLimit(_)) => "node-limit".into(),
        Some(StopReason::TimeLimit(_)) => "time-limit".into(),
        Some(StopReason::Other(s)) => s.replace(' ', "-"),
        None => "none".into(),
    }
}

/// Optimise every function of a module (stage `train` or later). The result is at stage `opt`,
/// its header carries the saturation statistics and the extraction method of each function.
pub fn optimize(module: &Module, options: &Options) -> Result<(Module, Vec<FuncReport>), String> {
    let rule_source = match options.rules {
        Some(source) => source,
        None => crate::methods::compile_side(module.method.as_ref()).eqsat_rules(),
    };
    let mut out = module.clone();
    out.stage = Stage::Opt;
    let mut reports = Vec::new();
    for (fi, func) in module.funcs.iter().enumerate() {
        let mut graph = convert::func_to_graph(module, func)?;
        let mut phases = Vec::new();
        for phase in Phase::ALL {
            let rules = rule_source(phase, &mut graph.egraph);
            let runner: Runner<Node, ValueFacts, ()> = Runner::new(graph.egraph.analysis.clone())
                .with_egraph(graph.egraph)
                .with_iter_limit(options.iter_limit)
                .with_node_limit(options.node_limit)
                // No time limit: the result must not depend on the machine's speed.
                .with_time_limit(Duration::from_secs(u64::from(u32::MAX)))
                .with_scheduler(SimpleScheduler)
                .run(&rules);
            phases.push(PhaseReport {
                phase: phase.name(),
                iterations: runner.iterations.len(),
                eclasses: runner.egraph.number_of_classes(),
                enodes: runner.egraph.total_number_of_nodes(),
                stop: stop_name(&runner.stop_reason),
            });
            graph.egraph = runner.egraph;
        }
        let extraction = extract::extract(
            &graph.egraph,
            graph.roots,
            &options.cost,
            options.memory_budget,
        )
        .map_err(|e| format!("@{}: {e}", func.name))?;
        out.funcs[fi] = convert::graph_to_func(&graph, func, &extraction.choice)
            .map_err(|e| format!("@{}: {e}", func.name))?;
        reports.push(FuncReport {
            func: func.name.clone(),
            phases,
            extraction: extraction.method.name(),
            time_cost: extraction.cost.time,
            memory_bytes: extraction.cost.memory,
        });
    }
    let header = &mut out.header;
    for (k, v) in options.cost.entries() {
        header.push((format!("cost.{k}"), v.to_string()));
    }
    if let Some(budget) = options.memory_budget {
        header.push((MEMORY_BUDGET_HEADER.into(), budget.to_string()));
    }
    for r in &reports {
        for p in &r.phases {
            let at = format!("{}.{}", r.func, p.phase);
            header.push((format!("{at}.iterations"), p.iterations.to_string()));
            header.push((format!("{at}.eclasses"), p.eclasses.to_string()));
            header.push((format!("{at}.enodes"), p.enodes.to_string()));
            header.push((format!("{at}.stop"), p.stop.clone()));
        }
        header.push((format!("{}.extraction", r.func), r.extraction.to_string()));
        header.push((format!("{}.cost", r.func), r.time_cost.to_string()));
        header.push((format!("{}.memory", r.func), r.memory_bytes.to_string()));
    }
    Ok((out, reports))
}
