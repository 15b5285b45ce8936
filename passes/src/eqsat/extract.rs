//! DAG-aware extraction. The train step shares sub-terms between forward and backward, so a
//! node used twice must be paid for once: tree extraction (egg's `Extractor`) would double-count
//! it and can pick the wrong program. We start from the tree extraction and improve it greedily
//! on the true DAG cost (each needed e-class paid once), one e-class at a time, until no single
//! change helps. With a memory budget, we start from the least-memory program instead and only
//! accept changes that stay within the budget. If the improvement cannot run (a pass limit), the
//! tree extraction is used and the dump says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use egg::{CostFunction, EGraph, Extractor, Id, Language};

use super::analysis::{param_leaf, ValueFacts};
use super::cost::{op_cost, CostModel, NodeCost};
use super::lang::{Node, ROOTS};

/// How a program was extracted, for the dump header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Greedy improvement of the DAG cost converged.
    DagGreedy,
    /// The improvement hit its pass limit; the tree extraction was kept.
    TreeFallback,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::DagGreedy => "dag-greedy",
            Method::TreeFallback => "tree-fallback",
        }
    }
}

pub struct Extraction {
    pub choice: HashMap<Id, Node>,
    pub cost: NodeCost,
    pub method: Method,
}

/// The cost of an e-node alone.
pub fn node_cost(egraph: &EGraph<Node, ValueFacts>, model: &CostModel, node: &Node) -> NodeCost {
    match node {
        Node::Leaf(_) => NodeCost::default(),
        Node::Op(key, _) if key.as_str() == ROOTS => NodeCost::default(),
        Node::Op(key, children) => {
            let (op, operands) = egraph
                .analysis
                .op_of(*key, children, |c| param_leaf(egraph, c), None)
                .unwrap_or_else(|e| panic!("extraction: {e}"));
            let types: Vec<_> = operands
                .iter()
                .filter_map(|&c| egraph[c].data.ty.as_ref())
                .collect();
            let result = egraph[egraph.lookup(node.clone()).expect("node in graph")]
                .data
                .ty
                .clone()
                .expect("an op has a value");
            op_cost(model, &op, &types, &result, egraph.analysis.params())
        }
    }
}

/// Tree cost, lexicographic in the order given (time first, or memory first). With
/// `sharing`, a child's cost is divided among the e-nodes that could use it: an optimistic
/// view of sharing that lets the search start from programs which compute a value once for
/// many users (a stored weight) rather than once per user (a regenerated one).
struct TreeCost<'a> {
    egraph: &'a EGraph<Node, ValueFacts>,
    model: CostModel,
    memory_first: bool,
    sharing: Option<&'a HashMap<Id, u64>>,
}

impl CostFunction<Node> for TreeCost<'_> {
    type Cost = (u64, u64);

    fn cost<C>(&mut self, enode: &Node, mut costs: C) -> Self::Cost
    where
        C: FnMut(Id) -> Self::Cost,
    {
        let own = node_cost(self.egraph, &self.model, enode);
        let own = if self.memory_first {
            (own.memory, own.time)
        } else {
            (own.time, own.memory)
        };
        let sharing = self.sharing;
        enode.fold(own, |(a, b), id| {
            let (x, y) = costs(id);
            let users = sharing
                .and_then(|s| s.get(&id))
                .copied()
                .unwrap_or(1)
                .max(1);
            (a.saturating_add(x / users), b.saturating_add(y / users))
        })
    }
}

/// The classes reachable from `root` under `choice`, or `None` if the choice has a cycle.
fn reachable(
    egraph: &EGraph<Node, ValueFacts>,
    choice: &HashMap<Id, Node>,
    root: Id,
) -> Option<BTreeSet<Id>> {
    // Iterative DFS with colours to detect cycles.
    let mut state: HashMap<Id, u8> = HashMap::new(); // 1 = on stack, 2 = done
    let mut stack = vec![(egraph.find(root), false)];
    while let Some((c, done)) = stack.pop() {
        if done {
            state.insert(c, 2);
            continue;
        }
        match state.get(&c) {
            Some(2) => continue,
            Some(1) => return None,
            _ => {}
        }
        state.insert(c, 1);
        stack.push((c, true));
        let node = choice.get(&c)?;
        for &child in node.children() {
            let child = egraph.find(child);
            match state.get(&child) {
                Some(2) => {}
                Some(1) => return None,
                _ => stack.push((child, false)),
            }
        }
    }
    Some(state.into_keys().collect())
}

fn dag_cost(
    costs: &BTreeMap<(Id, usize), NodeCost>,
    egraph: &EGraph<Node, ValueFacts>,
    choice: &HashMap<Id, Node>,
    index: &HashMap<Id, usize>,
    root: Id,
) -> Option<NodeCost> {
    let classes = reachable(egraph, choice, root)?;
    let mut total = NodeCost::default();
    for c in classes {
        let cost = costs[&(c, index[&c])];
        total.time = total.time.saturating_add(cost.time);
        total.memory = total.memory.saturating_add(cost.memory);
    }
    Some(total)
}

/// Extract the cheapest program under the DAG cost, within `memory_budget` bytes if given.
///
/// Two starting points (plain tree extraction, and tree extraction with shared costs divided
/// among potential users) are each improved greedily; the cheaper result wins.
pub fn extract(
    egraph: &EGraph<Node, ValueFacts>,
    root: Id,
    model: &CostModel,
    memory_budget: Option<u64>,
) -> Result<Extraction, String> {
    let root = egraph.find(root);
    let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    classes.sort();
    let mut costs: BTreeMap<(Id, usize), NodeCost> = BTreeMap::new();
    let mut users: HashMap<Id, u64> = HashMap::new();
    for &c in &classes {
        for (i, node) in egraph[c].nodes.iter().enumerate() {
            costs.insert((c, i), node_cost(egraph, model, node));
            for &child in node.children() {
                *users.entry(egraph.find(child)).or_default() += 1;
            }
        }
    }
    let mut best: Option<Extraction> = None;
    let mut last_error = None;
    for sharing in [None, Some(&users)] {
        let extractor = Extractor::new(
            egraph,
            TreeCost {
                egraph,
                model: *model,
                memory_first: memory_budget.is_some(),
                sharing,
            },
        );
        let mut choice: HashMap<Id, Node> = HashMap::new();
        let mut index: HashMap<Id, usize> = HashMap::new();
        for &c in &classes {
            let node = extractor.find_best_node(c).clone();
            let i = egraph[c].nodes.iter().position(|n| *n == node).unwrap_or(0);
            choice.insert(c, node);
            index.insert(c, i);
        }
        match improve(egraph, root, &costs, choice, index, memory_budget) {
            Ok(found) => {
                let better = best.as_ref().is_none_or(|b| {
                    (found.cost.time, found.cost.memory) < (b.cost.time, b.cost.memory)
                });
                if better {
                    best = Some(found);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    best.ok_or_else(|| last_error.unwrap_or_else(|| "no extraction".into()))
}

/// Greedy improvement of one starting selection on the DAG cost.
fn improve(
    egraph: &EGraph<Node, ValueFacts>,
    root: Id,
    costs: &BTreeMap<(Id, usize), NodeCost>,
    mut choice: HashMap<Id, Node>,
    mut index: HashMap<Id, usize>,
    memory_budget: Option<u64>,
) -> Result<Extraction, String> {
    let start_choice = choice.clone();
    let start_index = index.clone();
    let mut current =
        dag_cost(costs, egraph, &choice, &index, root).ok_or("the tree extraction has a cycle")?;
    if let Some(budget) = memory_budget {
        if current.memory > budget {
            return Err(format!(
                "no program fits a memory budget of {budget} bytes: the smallest needs {} bytes",
                current.memory
            ));
        }
    }
    const MAX_PASSES: usize = 16;
    let better = |new: NodeCost, old: NodeCost| match memory_budget {
        Some(budget) => new.memory <= budget && (new.time, new.memory) < (old.time, old.memory),
        None => (new.time, new.memory) < (old.time, old.memory),
    };
    for _ in 0..MAX_PASSES {
        let mut improved = false;
        let needed = reachable(egraph, &choice, root).ok_or("cycle")?;
        for &c in &needed {
            let nodes = &egraph[c].nodes;
            if nodes.len() < 2 {
                continue;
            }
            for (i, node) in nodes.iter().enumerate() {
                if i == index[&c] {
                    continue;
                }
                let old_node = choice.insert(c, node.clone()).expect("chosen");
                let old_index = index.insert(c, i).expect("indexed");
                match dag_cost(costs, egraph, &choice, &index, root) {
                    Some(cost) if better(cost, current) => {
                        current = cost;
                        improved = true;
                    }
                    _ => {
                        choice.insert(c, old_node);
                        index.insert(c, old_index);
                    }
                }
            }
        }
        if !improved {
            let needed = reachable(egraph, &choice, root).ok_or("cycle")?;
            choice.retain(|c, _| needed.contains(c));
            return Ok(Extraction {
                choice,
                cost: current,
                method: Method::DagGreedy,
            });
        }
    }
    // The improvement did not settle: keep the starting (tree) selection.
    let cost = dag_cost(costs, egraph, &start_choice, &start_index, root).ok_or("cycle")?;
    Ok(Extraction {
        choice: start_choice,
        cost,
        method: Method::TreeFallback,
    })
}
