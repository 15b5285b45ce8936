//! Tensor types: element type, static shape and storage encoding.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        }
    }

    pub fn size_bytes(self) -> usize {
        4
    }
}

/// How a value is represented in memory. The encoding is part of the type, as in MLIR's
/// sparse_tensor dialect, so a dump shows at a glance what is materialised and what is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Every element stored, row-major.
    Dense,
    /// Never stored: each element is regenerated from the parameter's seed when read.
    Regen,
    /// At most `capacity` (sorted flat index, value) pairs; the rest are zero.
    Sparse { capacity: u64 },
    /// Never stored: its one reader (`topk_select`) remakes it, tile by tile, in each pass
    /// it makes over it. Dropback's scores under a memory budget that cannot hold them.
    Streamed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub encoding: Encoding,
}

impl Type {
    pub fn dense(dtype: DType, shape: impl Into<Vec<usize>>) -> Type {
        Type {
            dtype,
            shape: shape.into(),
            encoding: Encoding::Dense,
        }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Type {
        Type::dense(DType::F32, shape)
    }

    pub fn i32(shape: impl Into<Vec<usize>>) -> Type {
        Type::dense(DType::I32, shape)
    }

    pub fn scalar_f32() -> Type {
        Type::f32(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of logical elements (1 for a scalar). Saturates instead of overflowing: shapes are
    /// bounded by the checker and the verifier long before this matters.
    pub fn num_elements(&self) -> usize {
        self.shape
            .iter()
            .fold(1usize, |acc, &d| acc.saturating_mul(d))
    }

    pub fn is_dense(&self) -> bool {
        self.encoding == Encoding::Dense
    }

    /// The same shape and element type with another encoding.
    pub fn with_encoding(&self, encoding: Encoding) -> Type {
        Type {
            encoding,
            ..self.clone()
        }
    }
}

/// `f32[64, 784]`, `f32[]`, `f32[300, 784]{regen}`, `f32[300, 784]{sparse 10664}`.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")?;
        match self.encoding {
            Encoding::Dense => Ok(()),
            Encoding::Regen => write!(f, "{{regen}}"),
            Encoding::Streamed => write!(f, "{{streamed}}"),
            Encoding::Sparse { capacity } => write!(f, "{{sparse {capacity}}}"),
        }
    }
}
