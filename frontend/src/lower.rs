//! Lowering a checked model to the IR: one `@forward` function computing the loss and the
//! logits of a batch, and the parameter table in PyTorch `state_dict` names and layouts.
//!
//! Every parameter is lowered with dense storage; the sparse-training method then gives the
//! parameters it selects their own storage (`sparsec_passes::methods::assign_storage`), so that
//! lowering knows nothing of any method.

use sparsec_ir::func_names::FORWARD;
use sparsec_ir::{Func, Init, Module, Op, Param, Role, Stage, Storage, Type, Value};

use crate::model::{CheckedModel, Layer, LayerKind};

/// Lower a checked model. The batch size comes from the training spec; the checker has already
/// bounded every shape, so a failure here is a compiler bug and is reported as such.
pub fn lower(model: &CheckedModel) -> Result<Module, String> {
    let mut module = Module::new(&model.name, Stage::Ir);
    module.data = Some(model.data.clone());
    module.train = Some(model.train.clone());
    module.method = model.method.clone();
    declare_params(model, &mut module);

    let batch = usize::try_from(model.train.batch).map_err(|_| "batch size too large")?;
    let mut func = Func::new(FORWARD);
    let mut input_shape = vec![batch];
    input_shape.extend(&model.input.shape);
    let x = func.add_arg(
        &model.input.name,
        sparsec_ir::op::checked_type(sparsec_ir::DType::F32, input_shape)?,
    );
    let labels = func.add_arg("labels", Type::i32(vec![batch]));

    // Values by the name the model file gives them.
    let mut values: Vec<(&str, Value)> = vec![(model.input.name.as_str(), x)];
    for layer in &model.layers {
        let inputs = layer
            .inputs
            .iter()
            .map(|name| lookup(&values, name))
            .collect::<Result<Vec<_>, _>>()?;
        let out = lower_layer(&module, &mut func, layer, &inputs, batch)
            .map_err(|e| format!("internal error lowering layer `{}`: {e}", layer.name))?;
        values.push((layer.name.as_str(), out));
    }
    let logits = lookup(&values, &model.logits)?;
    let loss = func.push(
        &module.params,
        Op::SoftmaxXent,
        &[logits, labels],
        Some("loss"),
    )?;
    func.results = vec![loss, logits];
    module.funcs.push(func);
    Ok(module)
}

fn lookup(values: &[(&str, Value)], name: &str) -> Result<Value, String> {
    values
        .iter()
        .rev()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
        .ok_or_else(|| format!("internal error: `{name}` is not defined"))
}

/// Parameters in declaration order (weight, then bias), each with its own regeneration stream.
fn declare_params(model: &CheckedModel, module: &mut Module) {
    let mut stream = 0u64;
    let mut add = |module: &mut Module, name: String, shape: Vec<usize>, init: Init| {
        module.add_param(Param {
            name,
            ty: Type::f32(shape),
            init,
            stream,
            storage: Storage::Dense,
            role: Role::Weight,
        });
        stream += 1;
    };
    for layer in &model.layers {
        let (weight_shape, fan_in, out, bias) = match layer.kind {
            LayerKind::Dense {
                inputs,
                outputs,
                bias,
            } => (vec![outputs, inputs], inputs, outputs, bias),
            LayerKind::Conv2d {
                in_channels,
                out_channels,
                kernel,
                bias,
                ..
            } => (
                vec![out_channels, in_channels, kernel[0], kernel[1]],
                in_channels * kernel[0] * kernel[1],
                out_channels,
                bias,
            ),
            _ => continue,
        };
        add(
            module,
            format!("{}.weight", layer.name),
            weight_shape,
            uniform_init(fan_in),
        );
        if bias {
            // Zero biases (not PyTorch's uniform): Dropback scores a bias by |b| and resets an
            // untracked one to 0, so its initial value must be 0; every method shares this so
            // paired dense baselines start from the same point.
            add(
                module,
                format!("{}.bias", layer.name),
                vec![out],
                Init::Zeros,
            );
        }
    }
}

/// PyTorch's default for `nn.Linear` and `nn.Conv2d` weights: kaiming_uniform with a = √5,
/// which is U(−1/√fan_in, 1/√fan_in).
fn uniform_init(fan_in: usize) -> Init {
    let bound = (1.0 / (fan_in.max(1) as f64).sqrt()) as f32;
    Init::Uniform {
        lo: -bound,
        hi: bound,
    }
}

fn lower_layer(
    module: &Module,
    func: &mut Func,
    layer: &Layer,
    inputs: &[Value],
    batch: usize,
) -> Result<Value, String> {
    let params = &module.params;
    let loc = Some(layer.name.as_str());
    let param = |func: &mut Func, suffix: &str| -> Result<Option<Value>, String> {
        match module.param_by_name(&format!("{}.{suffix}", layer.name)) {
            Some(id) => func.push(params, Op::Param(id), &[], loc).map(Some),
            None => Ok(None),
        }
    };
    let x = *inputs.first().ok_or("layer has no input")?;
    let out = match &layer.kind {
        LayerKind::Dense { .. } => {
            let w = param(func, "weight")?.ok_or("dense layer without weight")?;
            let y = func.push(
                params,
                Op::MatMul {
                    ta: false,
                    tb: true,
                },
                &[x, w],
                loc,
            )?;
            match param(func, "bias")? {
                Some(b) => func.push(params, Op::BiasAdd, &[y, b], loc)?,
                None => y,
            }
        }
        LayerKind::Conv2d {
            stride, padding, ..
        } => {
            let w = param(func, "weight")?.ok_or("conv layer without weight")?;
            let op = Op::Conv2d {
                stride: *stride,
                padding: *padding,
            };
            let y = func.push(params, op, &[x, w], loc)?;
            match param(func, "bias")? {
                Some(b) => func.push(params, Op::BiasAdd, &[y, b], loc)?,
                None => y,
            }
        }
        LayerKind::MaxPool2d { kernel, stride } => func.push(
            params,
            Op::MaxPool2d {
                kernel: *kernel,
                stride: *stride,
            },
            &[x],
            loc,
        )?,
        LayerKind::AvgPool2d { kernel, stride } => func.push(
            params,
            Op::AvgPool2d {
                kernel: *kernel,
                stride: *stride,
            },
            &[x],
            loc,
        )?,
        LayerKind::Flatten => {
            let mut shape = vec![batch];
            shape.extend(&layer.out_shape);
            func.push(params, Op::Reshape { shape }, &[x], loc)?
        }
        LayerKind::Activation(u) => func.push(params, Op::Unary(*u), &[x], loc)?,
        LayerKind::Add => {
            let y = *inputs.get(1).ok_or("add needs two inputs")?;
            func.push(params, Op::Add, &[x, y], loc)?
        }
    };
    // The checker computed every layer's shape; the IR's typing rules must agree with it.
    let got = &func.value_type(out).shape[1..];
    if got != layer.out_shape.as_slice() {
        return Err(format!(
            "checker gives shape {:?}, IR gives {:?}",
            layer.out_shape, got
        ));
    }
    Ok(out)
}
