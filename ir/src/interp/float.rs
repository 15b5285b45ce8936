//! The element type of the interpreter: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A floating-point element type. Every operation is the type's own IEEE operation (no hidden
/// widening: `f32` arithmetic is done in `f32`), and no fused multiply-add is ever used, except
/// inside the GEMM library that large `f32` products call (`super::gemm`).
pub trait Float:
    Copy
    + PartialOrd
    + PartialEq
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// Whether `f32` (the GEMM kernel picks its tile width from this).
    const IS_F32: bool;
    fn zero() -> Self;
    fn one() -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// An integer count (a batch size, a window size) as this type, rounded to nearest.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn is_nan(self) -> bool;
    /// The slice as `f32`s when `Self` is `f32` (the GEMM library path), else `None`.
    fn as_f32s(s: &[Self]) -> Option<&[f32]>;
    fn as_f32s_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

fn some_f32s(s: &[f32]) -> Option<&[f32]> {
    Some(s)
}

fn some_f32s_mut(s: &mut [f32]) -> Option<&mut [f32]> {
    Some(s)
}

fn no_f32s<T>(_: &[T]) -> Option<&[f32]> {
    None
}

fn no_f32s_mut<T>(_: &mut [T]) -> Option<&mut [f32]> {
    None
}

/// The two impls differ only in the type, `IS_F32` and the `f32` views; `as` between f32 and f64 is exact
/// widening or round-to-nearest narrowing, as `From`/casts would be.
macro_rules! impl_float {
    ($t:ident, $is_f32:expr, $as_f32s:expr, $as_f32s_mut:expr) => {
        impl Float for $t {
            const IS_F32: bool = $is_f32;
            #[inline(always)]
            fn zero() -> Self {
                0.0
            }
            #[inline(always)]
            fn one() -> Self {
                1.0
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            fn as_f32s(s: &[Self]) -> Option<&[f32]> {
                $as_f32s(s)
            }
            fn as_f32s_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32s_mut(s)
            }
        }
    };
}

impl_float!(f32, true, some_f32s, some_f32s_mut);
impl_float!(f64, false, no_f32s, no_f32s_mut);
