//! The entry-point ABI: what generated code and the Rust that calls it agree on.
//!
//! Every generated function is `extern "C" fn(args: *const Args)`: the host's C calling
//! convention, one pointer, no result, on 64-bit hosts only ([`crate::Jit::new`] refuses
//! others, since buffer addresses and sizes are 64-bit slots). One signature for every kernel
//! keeps the single place that jumps into generated code (`jit::Entry::call`) simple, and a
//! kernel that fuses more operands gets more slots, not a new calling convention.
//!
//! This module depends on nothing else in the crate, so the code generator (which loads from
//! the offsets below) and the JIT and runtime (which fill the block and make the call) both
//! import it instead of each other.

/// Buffer-address slots in [`Args::ptr`].
pub const PTR_SLOTS: usize = 12;
/// 64-bit integer slots in [`Args::int`].
pub const INT_SLOTS: usize = 8;
/// `f32` slots in [`Args::f32`].
pub const F32_SLOTS: usize = 4;

/// The argument block every entry point receives, by pointer.
///
/// What each slot means is fixed per kernel and documented with the kernel's builder in
/// `codegen` (`elementwise`, `chacha`, `gemm`, `chain`, `softmax`, `pool`, `conv`), together
/// with the extent each buffer must have; a kernel ignores the slots it does not document.
/// Addresses are plain integers so that a block is ordinary data: building, copying and
/// splitting one between threads is safe, and only entering generated code with it is not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Args {
    /// Buffer addresses: `f32` arrays, and for some kernels `i32` labels, `u32` entry indices
    /// or `u64` bounds.
    pub ptr: [usize; PTR_SLOTS],
    /// Sizes, seeds, streams, offsets and ranges.
    pub int: [u64; INT_SLOTS],
    /// `f32` scalars.
    pub f32: [f32; F32_SLOTS],
}

impl Args {
    /// Byte offsets of the three arrays, which generated code loads from; `#[repr(C)]` fixes
    /// them (0, 96 and 160: the block is 176 bytes).
    pub const PTR_OFFSET: i32 = std::mem::offset_of!(Args, ptr) as i32;
    pub const INT_OFFSET: i32 = std::mem::offset_of!(Args, int) as i32;
    pub const F32_OFFSET: i32 = std::mem::offset_of!(Args, f32) as i32;
}

/// A finalized entry point's type. `unsafe` because the code trusts every address and size in
/// its block: calling it is `jit::Entry::call`, under that function's contract.
pub type EntryFn = unsafe extern "C" fn(*const Args);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arg_block_layout_is_fixed() {
        assert_eq!(Args::PTR_OFFSET, 0);
        assert_eq!(Args::INT_OFFSET, 96);
        assert_eq!(Args::F32_OFFSET, 160);
        assert_eq!(std::mem::size_of::<Args>(), 176);
    }
}
