//! The checked model: what the checker hands to lowering. Shapes are per sample (no batch
//! dimension); every layer's inputs are defined before it, in declaration order.

use sparsec_ir::op::Unary;
use sparsec_ir::spec::{DataSpec, MethodSpec, TrainSpec};

#[derive(Clone, Debug, PartialEq)]
pub struct CheckedModel {
    pub name: String,
    pub input: InputDecl,
    /// Layers in declaration order.
    pub layers: Vec<Layer>,
    /// The layer whose output feeds the loss (its output is `[classes]`).
    pub logits: String,
    pub classes: usize,
    pub data: DataSpec,
    pub train: TrainSpec,
    pub method: Option<MethodSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: String,
    /// Shape of one sample.
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Names of the values read: the input or earlier layers.
    pub inputs: Vec<String>,
    /// Shape of the first input, per sample.
    pub in_shape: Vec<usize>,
    /// Output shape, per sample.
    pub out_shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Dense {
        inputs: usize,
        outputs: usize,
        bias: bool,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        bias: bool,
    },
    MaxPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    Flatten,
    /// An element-wise activation of the IR's table.
    Activation(Unary),
    Add,
}

impl LayerKind {
    /// The op name as written in a model file (`dense`, `conv2d`, ...).
    pub fn op_name(&self) -> &'static str {
        match self {
            LayerKind::Dense { .. } => "dense",
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::MaxPool2d { .. } => "maxpool2d",
            LayerKind::AvgPool2d { .. } => "avgpool2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Activation(u) => u.name(),
            LayerKind::Add => "add",
        }
    }
}

impl Layer {
    /// Whether the layer owns parameters (`NAME.weight`, maybe `NAME.bias`).
    pub fn has_params(&self) -> bool {
        matches!(
            self.kind,
            LayerKind::Dense { .. } | LayerKind::Conv2d { .. }
        )
    }

    /// Shape of `NAME.weight` in PyTorch layout (`[out, in]` or `[out, in, kh, kw]`).
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match &self.kind {
            LayerKind::Dense {
                inputs, outputs, ..
            } => Some(vec![*outputs, *inputs]),
            LayerKind::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => Some(vec![*out_channels, *in_channels, kernel[0], kernel[1]]),
            _ => None,
        }
    }

    /// Shape of `NAME.bias`, when the layer has one.
    pub fn bias_shape(&self) -> Option<Vec<usize>> {
        match &self.kind {
            LayerKind::Dense {
                outputs,
                bias: true,
                ..
            } => Some(vec![*outputs]),
            LayerKind::Conv2d {
                out_channels,
                bias: true,
                ..
            } => Some(vec![*out_channels]),
            _ => None,
        }
    }

    /// Number of parameters (weight + bias). The checker guarantees this does not overflow.
    pub fn param_count(&self) -> u64 {
        let count = |s: Option<Vec<usize>>| {
            s.map_or(0u64, |s| s.iter().map(|&d| d as u64).product::<u64>())
        };
        count(self.weight_shape()).saturating_add(count(self.bias_shape()))
    }
}

impl CheckedModel {
    /// Total parameters of the network.
    pub fn param_count(&self) -> u64 {
        self.layers
            .iter()
            .map(Layer::param_count)
            .fold(0u64, u64::saturating_add)
    }

    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }
}
