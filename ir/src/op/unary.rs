//! The element-wise activations, defined once.
//!
//! One row of `unary_ops!` is everything sparsec knows about an activation: its variant, its
//! text name (also its name in the model language), the name of its gradient op, which value the
//! gradient reads (the activation's input `x` or its output `y`), its reference semantics on one
//! scalar and its derivative. From the table come [`Op::Unary`](super::Op::Unary) and
//! [`Op::UnaryGrad`](super::Op::UnaryGrad), their text form and typing, the interpreter's
//! kernels, the autodiff rule (`dy ↦ grad(dy, x or y)`), the FLOP count and the activations the
//! model language accepts. A backend adds its own code for a row (the JIT emits each activation
//! in Cranelift IR, backend/src/codegen/chain.rs).
//!
//! The scalar functions are generic over the interpreter's element type and use only its own
//! IEEE operations, so `f32` results are the bits every backend must reproduce.

use crate::interp::Float;

/// Which value an activation's gradient reads besides `dy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradInput {
    /// The activation's input `x` (`relu_grad(dy, x)`).
    Input,
    /// The activation's output `y` (`tanh_grad(dy, y)`: cheaper than recomputing from `x`).
    Output,
}

/// PyTorch's default `negative_slope` for `leaky_relu`.
pub const LEAKY_RELU_SLOPE: f32 = 0.01;

macro_rules! unary_ops {
    ($(
        $(#[$doc:meta])*
        $variant:ident {
            name: $name:literal,
            grad: $grad:literal,
            reads: $reads:ident,
            activation: $activation:literal,
            apply: |$x:ident| $apply:expr,
            derivative: |$dy:ident, $v:ident| $derivative:expr $(,)?
        }
    )*) => {
        /// An element-wise activation (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Unary {
            $($(#[$doc])* $variant,)*
        }

        impl Unary {
            /// Every row, in table order.
            pub const ALL: &'static [Unary] = &[$(Unary::$variant,)*];

            /// Whether the row is an activation: a layer of the model language. The others
            /// (`sqrt`) exist for the passes that write them (PruneTrain's group norms).
            pub fn is_activation(self) -> bool {
                match self {
                    $(Unary::$variant => $activation,)*
                }
            }

            /// The op's text name, and the activation's name in the model language.
            pub fn name(self) -> &'static str {
                match self {
                    $(Unary::$variant => $name,)*
                }
            }

            /// The text name of the gradient op.
            pub fn grad_name(self) -> &'static str {
                match self {
                    $(Unary::$variant => $grad,)*
                }
            }

            /// Which value the gradient op takes as its second operand.
            pub fn grad_reads(self) -> GradInput {
                match self {
                    $(Unary::$variant => GradInput::$reads,)*
                }
            }

            /// The reference semantics on one element.
            #[inline(always)]
            pub fn apply<T: Float>(self, x: T) -> T {
                match self {
                    $(Unary::$variant => { let $x = x; $apply })*
                }
            }

            /// The gradient on one element: `dy` and the value [`Unary::grad_reads`] names.
            #[inline(always)]
            pub fn derivative<T: Float>(self, dy: T, v: T) -> T {
                match self {
                    $(Unary::$variant => { let ($dy, $v) = (dy, v); $derivative })*
                }
            }
        }
    };
}

unary_ops! {
    /// `max(x, 0)` (`relu(NaN) = NaN`).
    Relu {
        name: "relu",
        grad: "relu_grad",
        reads: Input,
        activation: true,
        apply: |x| if x <= T::zero() { T::zero() } else { x },
        derivative: |dy, x| if x > T::zero() { dy } else { T::zero() },
    }
    /// `x` for `x > 0`, else `0.01·x` (PyTorch's default slope).
    LeakyRelu {
        name: "leaky_relu",
        grad: "leaky_relu_grad",
        reads: Input,
        activation: true,
        apply: |x| if x > T::zero() { x } else { x * T::from_f32(LEAKY_RELU_SLOPE) },
        derivative: |dy, x| if x > T::zero() { dy } else { dy * T::from_f32(LEAKY_RELU_SLOPE) },
    }
    Tanh {
        name: "tanh",
        grad: "tanh_grad",
        reads: Output,
        activation: true,
        apply: |x| x.tanh(),
        derivative: |dy, y| dy * (T::one() - y * y),
    }
    /// `1 / (1 + e^−x)`.
    Sigmoid {
        name: "sigmoid",
        grad: "sigmoid_grad",
        reads: Output,
        activation: true,
        apply: |x| T::one() / (T::one() + (-x).exp()),
        derivative: |dy, y| dy * y * (T::one() - y),
    }
    /// `√x` (NaN below 0): the group norms of PruneTrain's penalty, not a layer.
    Sqrt {
        name: "sqrt",
        grad: "sqrt_grad",
        reads: Output,
        activation: false,
        apply: |x| x.sqrt(),
        derivative: |dy, y| dy / (y + y),
    }
}

impl Unary {
    /// The rows that are activations, in table order (the model language's layers).
    pub fn activations() -> impl Iterator<Item = Unary> {
        Unary::ALL.iter().copied().filter(|u| u.is_activation())
    }

    /// The activation whose op (or model-language) name is `name`.
    pub fn by_name(name: &str) -> Option<Unary> {
        Unary::ALL.iter().copied().find(|u| u.name() == name)
    }

    /// The activation whose gradient op is named `name`.
    pub fn by_grad_name(name: &str) -> Option<Unary> {
        Unary::ALL.iter().copied().find(|u| u.grad_name() == name)
    }
}
