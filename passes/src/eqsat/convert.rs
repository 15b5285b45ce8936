//! Between IR functions and e-graphs. A function becomes one e-graph whose `roots` node lists
//! its results and then its stores (the effects), in order; an extracted selection (one e-node
//! per needed e-class) becomes a function again, instructions in post-order from the roots.

use std::collections::HashMap;

use egg::{EGraph, Id, Symbol};
use sparsec_ir::{Func, Module, Op, Value};

use super::analysis::{param_leaf, ValueFacts};
use super::lang::{op_key, Leaf, Node, ROOTS};

/// A function as an e-graph.
pub struct Graph {
    pub egraph: EGraph<Node, ValueFacts>,
    pub roots: Id,
    pub results: usize,
    /// The source location of the first instruction of each e-class (by the id it had when
    /// added; look up through `find`).
    pub locs: Vec<(Id, String)>,
}

pub fn func_to_graph(module: &Module, func: &Func) -> Result<Graph, String> {
    let arg_types = func
        .args
        .iter()
        .map(|a| (Symbol::from(a.name.as_str()), a.ty.clone()))
        .collect();
    let mut egraph = EGraph::new(ValueFacts::new(module, arg_types));
    let args: Vec<Id> = func
        .args
        .iter()
        .map(|a| egraph.add(Node::Leaf(Leaf::Arg(Symbol::from(a.name.as_str())))))
        .collect();
    let mut ids: Vec<Id> = Vec::with_capacity(func.insts.len());
    let mut locs = Vec::new();
    let mut stores = Vec::new();
    let value_id = |ids: &[Id], v: Value| match v {
        Value::Arg(i) => args[i as usize],
        Value::Inst(i) => ids[i as usize],
    };
    for inst in &func.insts {
        let key = op_key(&inst.op);
        egraph.analysis.remember(key, &inst.op);
        let mut children = Vec::new();
        if let Some(pid) = inst.op.param() {
            let name = &module.param(pid).name;
            children.push(egraph.add(Node::Leaf(Leaf::Param(Symbol::from(name.as_str())))));
        }
        children.extend(inst.operands.iter().map(|&v| value_id(&ids, v)));
        let id = egraph.add(Node::Op(key, children));
        if let Some(loc) = &inst.loc {
            locs.push((id, loc.clone()));
        }
        if matches!(inst.op, Op::Store(_)) {
            stores.push(id);
        }
        ids.push(id);
    }
    let mut roots: Vec<Id> = func.results.iter().map(|&v| value_id(&ids, v)).collect();
    let results = roots.len();
    roots.extend(stores);
    let roots = egraph.add(Node::Op(Symbol::from(ROOTS), roots));
    egraph.rebuild();
    Ok(Graph {
        egraph,
        roots,
        results,
        locs,
    })
}

/// Rebuild a function from a selection: for every e-class needed, the e-node chosen for it.
pub fn graph_to_func(
    graph: &Graph,
    template: &Func,
    choice: &HashMap<Id, Node>,
) -> Result<Func, String> {
    let egraph = &graph.egraph;
    let mut locs: HashMap<Id, &str> = HashMap::new();
    for (id, loc) in &graph.locs {
        locs.entry(egraph.find(*id)).or_insert(loc.as_str());
    }
    let mut func = Func::new(template.name.clone());
    func.args = template.args.clone();
    let arg_index: HashMap<Symbol, u32> = template
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| (Symbol::from(a.name.as_str()), i as u32))
        .collect();
    let mut emitted: HashMap<Id, Value> = HashMap::new();
    let roots = match &egraph[egraph.find(graph.roots)].nodes[..] {
        [Node::Op(_, children)] => children.clone(),
        _ => return Err("the roots e-class changed".into()),
    };
    let params = egraph.analysis.params().to_vec();
    // Iterative post-order: (class, children pushed yet?).
    let mut outputs = Vec::new();
    let mut visiting = std::collections::HashSet::new();
    for root in &roots {
        let mut stack = vec![(egraph.find(*root), false)];
        while let Some((class, expanded)) = stack.pop() {
            if emitted.contains_key(&class) {
                continue;
            }
            if !expanded && !visiting.insert(class) {
                return Err(format!("the selection has a cycle through e-class {class}"));
            }
            let node = choice
                .get(&class)
                .ok_or_else(|| format!("no e-node chosen for e-class {class}"))?;
            match node {
                Node::Leaf(Leaf::Arg(name)) => {
                    let i = arg_index
                        .get(name)
                        .ok_or_else(|| format!("unknown argument %{name}"))?;
                    emitted.insert(class, Value::Arg(*i));
                }
                Node::Leaf(Leaf::Param(_)) => {
                    return Err("a parameter leaf is not a value".into());
                }
                Node::Op(key, children) => {
                    let (op, operands) = egraph.analysis.op_of(
                        *key,
                        children,
                        |c| param_leaf(egraph, c),
                        egraph[class].data.ty.as_ref(),
                    )?;
                    let operands: Vec<Id> = operands.iter().map(|&c| egraph.find(c)).collect();
                    if !expanded {
                        stack.push((class, true));
                        for &c in operands.iter().rev() {
                            if !emitted.contains_key(&c) {
                                stack.push((c, false));
                            }
                        }
                        continue;
                    }
                    let values = operands
                        .iter()
                        .map(|c| {
                            emitted
                                .get(c)
                                .copied()
                                .ok_or_else(|| "a cycle in the selection".to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    // A node the rules introduced has no source location; one that names a
                    // parameter belongs to that parameter's layer (`fc1` for `@fc1.bias`).
                    let loc = locs.get(&class).copied().map(str::to_owned).or_else(|| {
                        op.param().map(|id| {
                            let name = &params[id.0 as usize].name;
                            name.rsplit_once('.')
                                .map_or(name.as_str(), |(l, _)| l)
                                .to_owned()
                        })
                    });
                    let v = func.push(&params, op, &values, loc.as_deref())?;
                    emitted.insert(class, v);
                }
            }
        }
        outputs.push(emitted[&egraph.find(*root)]);
    }
    func.results = outputs[..graph.results].to_vec();
    Ok(func)
}
