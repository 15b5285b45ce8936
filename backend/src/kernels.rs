//! The compiled kernels behind a safe API: [`Kernels`] compiles the standalone kernels into one
//! [`Jit`] and checks each call's slices before it fills the [`Args`] block and enters the code
//! through `Jit::call`, whose contract each method meets as its `SAFETY` comment says.

use cranelift_module::FuncId;

use crate::abi::Args;
use crate::codegen::chacha::emit_regen;
use crate::codegen::elementwise::{emit_bias_add, emit_map, Map};
use crate::codegen::gemm::{emit_gemm, Layout, NR};
use crate::jit::{Jit, JitError};

/// A seeded uniform parameter: element `i` is `regen::uniform_at(seed, stream, i, lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uniform {
    pub seed: u64,
    pub stream: u64,
    pub lo: f32,
    pub hi: f32,
}

/// The standalone kernels (the element-wise maps, `bias_add`, regeneration and the product in
/// each layout), compiled for the host. Its products run the Cranelift tile at every size;
/// only the runtime's programs hand large products to the imported GEMM.
#[derive(Debug)]
pub struct Kernels {
    jit: Jit,
    maps: Vec<(Map, FuncId)>,
    bias_add: FuncId,
    regen: FuncId,
    gemm: Vec<(Layout, FuncId)>,
}

const LAYOUTS: [Layout; 4] = [Layout::Nn, Layout::Nt, Layout::Tn, Layout::NtRegen];

fn addr(s: &[f32]) -> usize {
    s.as_ptr() as usize
}

fn addr_mut(s: &mut [f32]) -> usize {
    s.as_mut_ptr() as usize
}

/// Panics unless `len(s) == want`.
fn check(what: &str, got: usize, want: usize) {
    assert!(
        got == want,
        "{what}: {got} elements where the kernel needs {want}"
    );
}

fn product(a: usize, b: usize) -> usize {
    a.checked_mul(b).expect("tensor size overflows usize")
}

impl Kernels {
    /// Compile all kernels (a few milliseconds in a release build).
    pub fn new() -> Result<Kernels, JitError> {
        let mut jit = Jit::new()?;
        let mut maps = Vec::new();
        for op in Map::ALL {
            maps.push((op, jit.define(op.name(), |fx| emit_map(fx, op))?));
        }
        let bias_add = jit.define("bias_add", emit_bias_add)?;
        let regen = jit.define("regen_uniform", emit_regen)?;
        let mut gemm = Vec::new();
        for layout in LAYOUTS {
            gemm.push((
                layout,
                jit.define(layout.name(), |fx| emit_gemm(fx, layout))?,
            ));
        }
        jit.finalize()?;
        Ok(Kernels {
            jit,
            maps,
            bias_add,
            regen,
            gemm,
        })
    }

    /// The JIT holding the kernels (for [`Jit::has_fma`] and [`Jit::clif`]).
    pub fn jit(&self) -> &Jit {
        &self.jit
    }

    fn map_id(&self, op: Map) -> FuncId {
        self.maps
            .iter()
            .find(|(o, _)| *o == op)
            .expect("compiled")
            .1
    }

    fn gemm_id(&self, layout: Layout) -> FuncId {
        self.gemm
            .iter()
            .find(|(l, _)| *l == layout)
            .expect("compiled")
            .1
    }

    fn map(&self, op: Map, a: &[f32], b: Option<&[f32]>, s: f32, out: &mut [f32]) {
        assert_eq!(b.is_some(), op.binary(), "{}: operand count", op.name());
        check(op.name(), a.len(), out.len());
        let mut args = Args::default();
        args.ptr[0] = addr(a);
        if let Some(b) = b {
            check(op.name(), b.len(), out.len());
            args.ptr[1] = addr(b);
        }
        args.ptr[2] = addr_mut(out);
        args.int[0] = out.len() as u64;
        args.f32[0] = s;
        // SAFETY: a `Map` kernel touches `int[0]` elements of `a`, of `b` when it is binary
        // (asserted to be given then) and of `out`; all are borrowed slices of exactly that
        // length (checked), alive for the call. `out` is `&mut`, so it overlaps neither input
        // and nothing else touches it; the inputs are shared borrows, so nothing writes them.
        unsafe { self.jit.call(self.map_id(op), &args) };
    }

    /// `out = a + b`.
    pub fn add(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map(Map::Add, a, Some(b), 0.0, out);
    }

    /// `out = a − b`.
    pub fn sub(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map(Map::Sub, a, Some(b), 0.0, out);
    }

    /// `out = a · b` element-wise.
    pub fn mul(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.map(Map::Mul, a, Some(b), 0.0, out);
    }

    /// `out = x · s`.
    pub fn scale(&self, x: &[f32], s: f32, out: &mut [f32]) {
        self.map(Map::Scale, x, None, s, out);
    }

    /// `out = relu(x)`.
    pub fn relu(&self, x: &[f32], out: &mut [f32]) {
        self.map(Map::Relu, x, None, 0.0, out);
    }

    /// `out = if x > 0 { dy } else { 0 }`.
    pub fn relu_grad(&self, dy: &[f32], x: &[f32], out: &mut [f32]) {
        self.map(Map::ReluGrad, dy, Some(x), 0.0, out);
    }

    /// `out = w − (g · lr)`: one SGD step, rounded as `scale` then `sub`.
    pub fn sgd(&self, w: &[f32], g: &[f32], lr: f32, out: &mut [f32]) {
        self.map(Map::Sgd, w, Some(g), lr, out);
    }

    /// `out[o, c, j] = x[o, c, j] + bias[c]` with `x: [outer, bias.len(), inner]`.
    pub fn bias_add(&self, x: &[f32], bias: &[f32], inner: usize, out: &mut [f32]) {
        check("bias_add", x.len(), out.len());
        let plane = product(bias.len(), inner);
        let outer = x.len().checked_div(plane).unwrap_or(0);
        check("bias_add", x.len(), product(outer, plane));
        let mut args = Args { ..Args::default() };
        args.ptr[..3].copy_from_slice(&[addr(x), addr(bias), addr_mut(out)]);
        args.int[..3].copy_from_slice(&[outer as u64, bias.len() as u64, inner as u64]);
        // SAFETY: the kernel reads `outer·channels·inner` elements of `x` and writes as many of
        // `out` (both checked to be that long) and reads `channels` = `bias.len()` biases; `out`
        // is `&mut`, so it aliases neither input, and the borrows last for the call.
        unsafe { self.jit.call(self.bias_add, &args) };
    }

    /// `out[i] = uniform_at(seed, stream, start + i, lo, hi)`, bit for bit.
    pub fn regen(&self, u: Uniform, start: u64, out: &mut [f32]) {
        start
            .checked_add(out.len() as u64)
            .expect("word positions beyond 2^64");
        let mut args = Args::default();
        args.ptr[0] = addr_mut(out);
        args.int[..4].copy_from_slice(&[u.seed, u.stream, start, out.len() as u64]);
        args.f32[..3].copy_from_slice(&[u.lo, u.hi, 1.0]);
        // SAFETY: the kernel writes `len` = `out.len()` elements of `out` (the stream position
        // `start` only seeds the values) and reads no buffer; `out` is an exclusive borrow that
        // lasts for the call.
        unsafe { self.jit.call(self.regen, &args) };
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        layout: Layout,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        weight: Option<Uniform>,
        c: &mut [f32],
    ) {
        let name = layout.name();
        check(name, a.len(), product(m, k));
        if weight.is_none() {
            check(name, b.len(), product(n, k));
        }
        check(name, c.len(), product(m, n));
        let mut scratch = vec![0.0f32; product(2 * NR, k)];
        let mut args = Args { ..Args::default() };
        args.ptr[..4].copy_from_slice(&[addr(a), addr(b), addr_mut(c), addr_mut(&mut scratch)]);
        args.int[..3].copy_from_slice(&[m as u64, n as u64, k as u64]);
        // All panels; no epilogue (the other output slots are never written).
        args.int[5] = 0;
        args.int[6] = n as u64;
        args.f32[2] = 1.0;
        if let Some(u) = weight {
            args.int[3] = u.seed;
            args.int[4] = u.stream;
            args.f32[..2].copy_from_slice(&[u.lo, u.hi]);
        }
        // SAFETY: the plain product kernel reads `m·k` elements of `a` and `n·k` of `b` (for
        // `NtRegen` none: it regenerates B's rows into the scratch instead), writes `m·n` of `c`
        // over the column range `0 .. n` and uses `2·NR·k` of scratch, exactly the lengths
        // checked or allocated above; it has no epilogue or overlay, so it touches no other
        // slot. `c` is `&mut` and the scratch our own, so neither aliases an input or the other.
        unsafe { self.jit.call(self.gemm_id(layout), &args) };
    }

    /// `c[m, n] = a[m, k] · b[k, n]` (the IR's `matmul`).
    pub fn matmul(&self, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        self.gemm(Layout::Nn, (m, n, k), a, b, None, c);
    }

    /// `c[m, n] = a[m, k] · b[n, k]ᵀ` (the IR's `matmul_nt`).
    pub fn matmul_nt(&self, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        self.gemm(Layout::Nt, (m, n, k), a, b, None, c);
    }

    /// `c[m, n] = a[k, m]ᵀ · b[k, n]` (the IR's `matmul_tn`).
    pub fn matmul_tn(&self, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        self.gemm(Layout::Tn, (m, n, k), a, b, None, c);
    }

    /// `c[m, n] = a[m, k] · W[n, k]ᵀ` where `W` is the seeded uniform weight `w` (element
    /// `j·k + kk` is word `j·k + kk` of its stream), regenerated `NR` rows at a time and never
    /// materialised: `matmul_nt_weight` of an untracked (all-initial) weight.
    pub fn matmul_nt_regen(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        w: Uniform,
        c: &mut [f32],
    ) {
        self.gemm(Layout::NtRegen, (m, n, k), a, &[], Some(w), c);
    }
}
