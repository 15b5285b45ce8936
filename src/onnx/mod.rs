//! `sparsec export RUN_DIR --onnx FILE`: the trained network's inference graph as ONNX.
//!
//! The graph is translated from the program's own `@forward` function, op by op, so it is the
//! network the run ended with, whatever its method did: Dropback's effective weights, ADMM's
//! masked (zeroed) weights, the narrower layers activation density or PruneTrain left. Only what
//! the logits depend on is written (the loss and the labels are not). A product or convolution
//! followed by its bias becomes one `Gemm` or `Conv`; the batch dimension is symbolic
//! (`batch`), so the model takes any batch size. Outputs: `logits` and their `softmax`,
//! `probabilities`.

mod proto;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use sparsec_ir::func_names::FORWARD;
use sparsec_ir::op::Unary;
use sparsec_ir::{Func, Module, Op, Value};

use crate::driver::Failure;
use crate::runner::Backend;
use crate::trained;
use proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, TypeValue,
    ValueInfoProto,
};

/// The size limit of one protobuf message, which an ONNX model without external data is.
const ONNX_PROTOBUF_LIMIT: u64 = 1 << 31;

fn fail(message: impl Into<String>) -> Failure {
    Failure::Message(message.into())
}

/// Write the ONNX model of the run in `run_dir` to `out` (atomically: a temporary file renamed
/// into place). Returns the line to print.
pub fn export(run_dir: &Path, out: &Path) -> Result<String, Failure> {
    let trained = trained::load_run(run_dir, Backend::Interp)?;
    let module = &trained.program.module;
    // Every weight goes into the file densely, inside one protobuf message, which ONNX's
    // readers refuse past 2 GiB (weights as external data are not written).
    let dense: u64 = module
        .params
        .iter()
        .map(|p| 4 * p.ty.num_elements() as u64)
        .sum();
    if dense >= ONNX_PROTOBUF_LIMIT {
        return Err(fail(format!(
            "`{}` cannot be exported: its weights take {dense} bytes densely, and an ONNX file \
             holds less than 2 GiB (weights as external data are not written)",
            run_dir.display()
        )));
    }
    let weights: Vec<Vec<f32>> = (0..module.params.len())
        .map(|i| trained.state.dense_value(module, i))
        .collect();
    let doc = format!(
        "{} trained by sparsec, weights from step {} of {}",
        module.name,
        trained.meta.step,
        run_dir.display()
    );
    let model = to_onnx(module, &weights, &doc)
        .map_err(|e| fail(format!("`{}` cannot be exported: {e}", run_dir.display())))?;
    let bytes = model.encode_to_vec();
    crate::checkpoint::write_atomically(out, &bytes)
        .map_err(|e| fail(format!("cannot write `{}`: {e}", out.display())))?;
    let graph = model.graph.as_ref();
    Ok(format!(
        "{}: {} nodes, {} weights ({} bytes) written to {}\n",
        module.name,
        graph.map_or(0, |g| g.node.len()),
        graph.map_or(0, |g| g.initializer.len()),
        bytes.len(),
        out.display()
    ))
}

/// The ONNX model of `module`'s `@forward`, with parameter values `weights` (by parameter index,
/// dense, row-major).
pub fn to_onnx(module: &Module, weights: &[Vec<f32>], doc: &str) -> Result<ModelProto, String> {
    let forward = module
        .func(FORWARD)
        .ok_or_else(|| "the program has no @forward".to_owned())?;
    let graph = Translation::new(module, forward, weights)?.run()?;
    Ok(ModelProto {
        ir_version: proto::IR_VERSION,
        producer_name: "sparsec".to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        doc_string: doc.to_owned(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: proto::OPSET,
        }],
    })
}

/// One `@forward` being written as a graph: the names given to its values, the nodes so far.
struct Translation<'a> {
    module: &'a Module,
    func: &'a Func,
    weights: &'a [Vec<f32>],
    /// The value the logits are.
    logits: Value,
    /// Which instructions the logits depend on.
    live: Vec<bool>,
    /// How many live instructions read each instruction's result.
    uses: Vec<usize>,
    names: HashMap<Value, String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// A `Gemm` or `Conv` node without bias, by the instruction it computes: a `bias_add` that
    /// is its only reader joins it as the third input.
    open_bias: HashMap<u32, usize>,
}

fn attr_ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        ints: values.iter().map(|&v| v as i64).collect(),
        r#type: proto::ATTR_INTS,
        ..AttributeProto::default()
    }
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        i: value,
        r#type: proto::ATTR_INT,
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        f: value,
        r#type: proto::ATTR_FLOAT,
        ..AttributeProto::default()
    }
}

/// A float tensor's type with a symbolic batch dimension first.
fn batched_type(shape: &[usize]) -> TypeProto {
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            value: Some(if i == 0 {
                DimensionValue::DimParam("batch".to_owned())
            } else {
                DimensionValue::DimValue(d as i64)
            }),
        })
        .collect();
    TypeProto {
        value: Some(TypeValue::TensorType(TensorTypeProto {
            elem_type: proto::FLOAT,
            shape: Some(TensorShapeProto { dim }),
        })),
    }
}

impl<'a> Translation<'a> {
    fn new(module: &'a Module, func: &'a Func, weights: &'a [Vec<f32>]) -> Result<Self, String> {
        // @forward returns (loss, logits).
        let logits = *func
            .results
            .get(1)
            .ok_or("@forward does not return logits (its second result)")?;
        let n = func.insts.len();
        let mut live = vec![false; n];
        let mut uses = vec![0usize; n];
        if let Value::Inst(i) = logits {
            live[i as usize] = true;
        }
        for i in (0..n).rev() {
            if !live[i] {
                continue;
            }
            for operand in &func.insts[i].operands {
                if let Value::Inst(j) = *operand {
                    live[j as usize] = true;
                    uses[j as usize] += 1;
                }
            }
        }
        Ok(Translation {
            module,
            func,
            weights,
            logits,
            live,
            uses,
            names: HashMap::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            open_bias: HashMap::new(),
        })
    }

    fn name(&self, v: Value) -> Result<String, String> {
        self.names
            .get(&v)
            .cloned()
            .ok_or_else(|| format!("{v:?} is read before it is written"))
    }

    fn initializer(&mut self, name: String, dims: &[i64], data_type: i32, raw: Vec<u8>) {
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type,
            name,
            raw_data: raw,
        });
    }

    fn float_initializer(&mut self, name: String, shape: &[usize], values: &[f32]) {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, &dims, proto::FLOAT, raw);
    }

    /// A constant `Reshape` target: batch kept (`-1`), the rest given.
    fn shape_initializer(&mut self, name: String, rest: &[usize]) -> String {
        let mut dims = vec![-1i64];
        dims.extend(rest.iter().map(|&d| d as i64));
        let raw = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.initializer(name.clone(), &[dims.len() as i64], proto::INT64, raw);
        name
    }

    fn node(&mut self, op_type: &str, name: String, inputs: Vec<String>, output: String) -> usize {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output],
            name,
            op_type: op_type.to_owned(),
            attribute: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn run(mut self) -> Result<GraphProto, String> {
        let input = self.func.args.first().ok_or("@forward takes no input")?;
        let input_name = "input".to_owned();
        self.names.insert(Value::Arg(0), input_name.clone());
        for (i, inst) in self.func.insts.iter().enumerate() {
            if !self.live[i] {
                continue;
            }
            let value = Value::Inst(i as u32);
            let out = if value == self.logits {
                "logits".to_owned()
            } else {
                let layer = inst.loc.as_deref().unwrap_or("v");
                format!("{layer}/{i}")
            };
            let node_name = out.clone();
            let operands: Vec<String> = inst
                .operands
                .iter()
                .map(|&v| {
                    if v == Value::Arg(1) {
                        Err("the logits depend on the labels".to_owned())
                    } else {
                        self.name(v)
                    }
                })
                .collect::<Result<_, _>>()?;
            let single_use = self.uses[i] == 1 && value != self.logits;
            match &inst.op {
                Op::Param(p) => {
                    let param = self.module.param(*p);
                    let values = self
                        .weights
                        .get(p.0 as usize)
                        .ok_or("a parameter has no value")?;
                    if !self.initializers.iter().any(|t| t.name == param.name) {
                        self.float_initializer(param.name.clone(), &param.ty.shape, values);
                    }
                    self.names.insert(value, param.name.clone());
                    continue;
                }
                Op::Const { value: c, shape } => {
                    let values = vec![*c; shape.iter().product()];
                    self.float_initializer(out.clone(), shape, &values);
                }
                Op::Reshape { shape } => {
                    let target = self
                        .shape_initializer(format!("{out}.shape"), shape.get(1..).unwrap_or(&[]));
                    self.node(
                        "Reshape",
                        node_name,
                        vec![operands[0].clone(), target],
                        out.clone(),
                    );
                }
                Op::MatMul { ta, tb } => {
                    let k = self.node("Gemm", node_name, operands, out.clone());
                    if *ta {
                        self.nodes[k].attribute.push(attr_int("transA", 1));
                    }
                    if *tb {
                        self.nodes[k].attribute.push(attr_int("transB", 1));
                    }
                    if single_use && !ta {
                        self.open_bias.insert(i as u32, k);
                    }
                }
                Op::Conv2d { stride, padding } => {
                    let kernel = self.func.value_type(inst.operands[1]).shape.clone();
                    let k = self.node("Conv", node_name, operands, out.clone());
                    let node = &mut self.nodes[k];
                    node.attribute
                        .push(attr_ints("kernel_shape", kernel.get(2..).unwrap_or(&[])));
                    node.attribute.push(attr_ints("strides", stride));
                    node.attribute.push(attr_ints(
                        "pads",
                        &[padding[0], padding[1], padding[0], padding[1]],
                    ));
                    if single_use {
                        self.open_bias.insert(i as u32, k);
                    }
                }
                Op::BiasAdd => {
                    if let Value::Inst(j) = inst.operands[0] {
                        if let Some(k) = self.open_bias.remove(&j) {
                            // The product's only reader is this bias: one Gemm/Conv with C/B.
                            self.nodes[k].input.push(operands[1].clone());
                            self.nodes[k].output = vec![out.clone()];
                            self.names.insert(value, out);
                            continue;
                        }
                    }
                    let rank = inst.ty.shape.len();
                    let bias = if rank > 2 {
                        let target =
                            self.shape_initializer(format!("{out}.bias_shape"), &vec![1; rank - 2]);
                        let reshaped = format!("{out}.bias");
                        self.node(
                            "Reshape",
                            format!("{node_name}.bias"),
                            vec![operands[1].clone(), target],
                            reshaped.clone(),
                        );
                        reshaped
                    } else {
                        operands[1].clone()
                    };
                    self.node(
                        "Add",
                        node_name,
                        vec![operands[0].clone(), bias],
                        out.clone(),
                    );
                }
                Op::Add | Op::Sub | Op::Mul | Op::Scale => {
                    let op_type = match inst.op {
                        Op::Add => "Add",
                        Op::Sub => "Sub",
                        _ => "Mul",
                    };
                    self.node(op_type, node_name, operands, out.clone());
                }
                Op::Unary(u) => {
                    let op_type = match u {
                        Unary::Relu => "Relu",
                        Unary::LeakyRelu => "LeakyRelu",
                        Unary::Tanh => "Tanh",
                        Unary::Sigmoid => "Sigmoid",
                        Unary::Sqrt => "Sqrt",
                    };
                    let k = self.node(op_type, node_name, operands, out.clone());
                    if *u == Unary::LeakyRelu {
                        self.nodes[k]
                            .attribute
                            .push(attr_float("alpha", sparsec_ir::op::unary::LEAKY_RELU_SLOPE));
                    }
                }
                Op::MaxPool2d { kernel, stride } | Op::AvgPool2d { kernel, stride } => {
                    let op_type = if matches!(inst.op, Op::MaxPool2d { .. }) {
                        "MaxPool"
                    } else {
                        "AveragePool"
                    };
                    let k = self.node(op_type, node_name, operands, out.clone());
                    self.nodes[k]
                        .attribute
                        .push(attr_ints("kernel_shape", kernel));
                    self.nodes[k].attribute.push(attr_ints("strides", stride));
                }
                other => {
                    return Err(format!(
                        "`{}` (instruction %{i}{}) has no ONNX form here; export the run's \
                         model file rather than a later compiler stage",
                        other.name(),
                        inst.loc
                            .as_deref()
                            .map_or(String::new(), |l| format!(", layer `{l}`"))
                    ))
                }
            }
            self.names.insert(value, out);
        }
        let logits_ty = match self.logits {
            Value::Inst(i) => &self.func.insts[i as usize].ty,
            Value::Arg(_) => return Err("the logits are an argument of @forward".to_owned()),
        };
        if logits_ty.shape.len() != 2 {
            return Err(format!(
                "the logits have shape {:?}, not [batch, classes]",
                logits_ty.shape
            ));
        }
        let logits_shape = logits_ty.shape.clone();
        let k = self.node(
            "Softmax",
            "probabilities".to_owned(),
            vec!["logits".to_owned()],
            "probabilities".to_owned(),
        );
        self.nodes[k].attribute.push(attr_int("axis", 1));
        let outputs = ["logits", "probabilities"]
            .iter()
            .map(|name| ValueInfoProto {
                name: (*name).to_owned(),
                r#type: Some(batched_type(&logits_shape)),
            })
            .collect();
        Ok(GraphProto {
            node: self.nodes,
            name: self.module.name.clone(),
            initializer: self.initializers,
            doc_string: String::new(),
            input: vec![ValueInfoProto {
                name: input_name,
                r#type: Some(batched_type(&input.ty.shape)),
            }],
            output: outputs,
        })
    }
}
