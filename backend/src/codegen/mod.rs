//! Codegen helpers shared by every kernel: the function context ([`FnCtx`]), counted loops and
//! vector-with-scalar-tail loops ([`loops`]), the ChaCha8 generator ([`chacha`]), the matrix
//! product ([`gemm`]), the imported transcendentals ([`math`]) and the kernels built on them:
//! softmax cross-entropy ([`softmax`]), max pooling ([`pool`]) and convolutions ([`conv`]).
//!
//! Conventions: indices and sizes are `i64` values of the pointer type (the host is 64-bit),
//! counted in elements; [`FnCtx::elem`] turns `base + index` into an address. Float arithmetic is
//! emitted one IEEE operation at a time (`fadd`, `fmul`, ...): Cranelift never contracts a
//! product and a sum into an FMA, so the generated code rounds exactly like the interpreter.

pub mod chacha;
pub mod chain;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod loops;
pub mod math;
pub mod pool;
pub mod softmax;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::immediates::Offset32;
use cranelift_codegen::ir::{
    types, ConstantData, Endianness, FuncRef, InstBuilder, MemFlagsData, StackSlot, StackSlotData,
    StackSlotKind, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use crate::abi::Args;

/// `f32x4`, the only vector type the kernels use for floats.
pub const F32X4: Type = types::F32X4;
/// `i32x4`, the ChaCha8 state lanes.
pub const I32X4: Type = types::I32X4;

/// Flags for loads and stores the kernels do: within buffers the wrappers checked, so they
/// cannot trap; not marked aligned (vectors are at any `f32` boundary).
pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The function context: the builder plus the values every kernel uses.
pub struct FnCtx<'a> {
    pub b: FunctionBuilder<'a>,
    /// The pointer type (`i64`).
    pub ptr: Type,
    /// The `*const Args` parameter.
    pub args: Value,
    /// Whether the host has FMA (reported only: no kernel emits `fma`, see `Jit::has_fma`).
    pub has_fma: bool,
    /// Callees declared by `Jit::define_with_imports`, in its order.
    pub imports: Vec<FuncRef>,
}

impl<'a> FnCtx<'a> {
    pub fn new(b: FunctionBuilder<'a>, ptr: Type, args: Value, has_fma: bool) -> FnCtx<'a> {
        FnCtx {
            b,
            ptr,
            args,
            has_fma,
            imports: Vec::new(),
        }
    }

    /// An integer constant of the pointer type.
    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(self.ptr, v)
    }

    pub fn f32const(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    /// `v` (an `f32`) in all four lanes.
    pub fn splat(&mut self, v: Value) -> Value {
        let ty = self.b.func.dfg.value_type(v);
        let vty = ty.by(4).expect("a 4-lane vector of a scalar type");
        self.b.ins().splat(vty, v)
    }

    /// A 128-bit vector constant from four 32-bit lanes.
    pub fn vconst32(&mut self, ty: Type, lanes: [u32; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|l| l.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    /// Buffer pointer `i` of the argument block.
    pub fn arg_ptr(&mut self, i: usize) -> Value {
        let off = Args::PTR_OFFSET + 8 * i as i32;
        self.b.ins().load(self.ptr, mem(), self.args, off)
    }

    /// Integer slot `i` of the argument block (`i64`).
    pub fn arg_int(&mut self, i: usize) -> Value {
        let off = Args::INT_OFFSET + 8 * i as i32;
        self.b.ins().load(types::I64, mem(), self.args, off)
    }

    /// `f32` slot `i` of the argument block.
    pub fn arg_f32(&mut self, i: usize) -> Value {
        let off = Args::F32_OFFSET + 4 * i as i32;
        self.b.ins().load(types::F32, mem(), self.args, off)
    }

    /// The address of `f32` element `index` of `base`.
    pub fn elem(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_u(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// Load a `ty` (`f32` or `f32x4`) at `base[index]` (+ `offset` bytes).
    pub fn load_at(&mut self, ty: Type, base: Value, index: Value, offset: i32) -> Value {
        let addr = self.elem(base, index);
        self.b.ins().load(ty, mem(), addr, Offset32::new(offset))
    }

    /// Store `v` at `base[index]` (+ `offset` bytes).
    pub fn store_at(&mut self, v: Value, base: Value, index: Value, offset: i32) {
        let addr = self.elem(base, index);
        self.b.ins().store(mem(), v, addr, Offset32::new(offset));
    }

    /// `min(a, b)` of two unsigned integers.
    pub fn umin(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().umin(a, b)
    }

    /// Unsigned `a < b` as a branch condition.
    pub fn ult(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().icmp(IntCC::UnsignedLessThan, a, b)
    }

    /// A variable of type `ty` holding `init`.
    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// A stack buffer of `bytes` bytes aligned to 16.
    pub fn stack_buffer(&mut self, bytes: u32) -> StackSlot {
        self.b
            .create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4))
    }

    pub fn stack_addr(&mut self, slot: StackSlot) -> Value {
        self.b.ins().stack_addr(self.ptr, slot, 0)
    }

    /// Reinterpret the bits of a 128-bit vector as another 128-bit vector type.
    pub fn vbitcast(&mut self, ty: Type, v: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(ty, flags, v)
    }

    /// Lane shuffle of two vectors of four 32-bit lanes: result lane `i` is lane `lanes[i]` of
    /// `a ++ b`, as type `ty` (`I32X4` or `F32X4`).
    pub fn shuffle32(&mut self, ty: Type, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let mask: Vec<u8> = lanes
            .iter()
            .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(mask));
        let a8 = self.vbitcast(types::I8X16, a);
        let b8 = self.vbitcast(types::I8X16, b);
        let r = self.b.ins().shuffle(a8, b8, mask);
        self.vbitcast(ty, r)
    }
}
