//! Native code generation for sparsec: Cranelift JIT of fused training kernels.
//!
//! - [`partition`](mod@partition) and [`kernel_ir`]: a function of the optimised graph as fused kernels
//!   (products with their regeneration prologue and bias/relu epilogue, element-wise chains,
//!   reductions, softmax cross-entropy, max pooling, convolutions, Dropback ops, interpreter
//!   fallbacks), printable.
//! - [`runtime`]: [`JitProgram`], a function compiled once and run with the interpreter's
//!   contract, its kernels split over up to two threads with identical results.
//!
//! - [`abi`]: [`Args`], the argument block of every generated function.
//! - [`jit`]: [`Jit`] owns a Cranelift JIT module and its functions, and is the one place where
//!   generated code is entered.
//! - [`codegen`]: the function context, loops, `f32x4` main loops with scalar tails, and every
//!   kernel's body in Cranelift IR (ChaCha8, matrix products, chains and reductions, softmax
//!   cross-entropy, max pooling, convolutions).
//! - [`kernels`]: [`Kernels`], the standalone kernels (element-wise, `bias_add`, regeneration,
//!   products) compiled for the host behind a safe, slice-checked API.
//!
//! # Entry-point ABI
//!
//! Every generated function is `extern "C" fn(args: *const Args)` (the host's C calling
//! convention; 64-bit hosts only), defined in [`abi`]. [`Args`] is a `#[repr(C)]` block of
//! twelve buffer addresses, eight 64-bit integers and four `f32`s (176 bytes); each kernel
//! documents which slots it uses and how long each buffer must be (see [`codegen::elementwise`],
//! [`codegen::chacha`], [`codegen::gemm`], [`codegen::chain`], [`codegen::conv`]).
//!
//! # Unsafe code
//!
//! Generated code is entered in one place, `jit::Entry::call`, an `unsafe fn` whose `# Safety`
//! section is the contract: a function of the JIT that is defined and finalized (every `Entry`
//! is one), and an argument block whose buffers are live, as long as the kernel's documented
//! extents and not aliased by what it writes. `Jit::call` and the runtime's `run_parts` pass
//! that contract on to their callers, the safe methods of [`Kernels`] and the runtime's `exec`,
//! where each call's `// SAFETY:` comment says why it holds (slice lengths checked against the
//! sizes passed; outputs that are `&mut` slices or buffers taken out of the runtime's table).
//! Besides those calls: the transmute of a finalized code pointer in `Jit::entry`, and the
//! imported GEMM (`jit::sparsec_gemm_f32`) turning the raw pointers generated code passes into
//! slices, under the same contract.
//!
//! # What is bit-exact, and why
//!
//! Every kernel returns the same bits as the reference (`sparsec_ir::interp`,
//! `sparsec_ir::regen`), whatever the thread count:
//! - element-wise: the same single IEEE operations (`fadd`, `fsub`, `fmul`, compare-and-select
//!   for `relu`/`relu_grad`); lanes are independent, so `f32x4` changes nothing;
//! - regeneration: ChaCha8 is integer arithmetic, and the word → `f32` map is an exact
//!   conversion and scaling, then `hi − lo`, the product and the sum each rounded once, as in
//!   `regen::word_to_f32`;
//! - the Cranelift product tile (the runtime's products below 2^12 multiply-adds, and every
//!   product of [`Kernels`]): vectorised over output columns, each element still summed one
//!   product at a time in ascending `k` from `−0`, the order of the interpreter's own kernel,
//!   which the interpreter runs below that size;
//! - products from 2^12 multiply-adds (`sparsec_ir::interp::LIBRARY_MIN_WORK`): the imported
//!   GEMM makes the interpreter's very calls into the `gemm` crate, one per 64-column panel,
//!   and threads split only at panel boundaries ([`codegen::gemm`]);
//! - `exp`, `ln`, `tanh` (softmax cross-entropy, `sigmoid`, `tanh`): calls to the interpreter's
//!   own `f32` functions through registered imports ([`codegen::math`]), never approximations;
//!   the reductions around them in the interpreter's order;
//! - convolutions: the data movement (`im2col`, `col2im`) is copies and the interpreter's
//!   scatter-add order, and every product is the imported GEMM called with exactly the
//!   interpreter's shapes, layouts and accumulate flag ([`codegen::conv`]), so the bits do not
//!   depend on how that GEMM sums;
//! - subnormals: flushed to zero (FTZ and DAZ) wherever a run computes, in both backends and
//!   every thread (`sparsec_ir::fpenv`), so a run whose values decay into subnormals neither slows down
//!   nor depends on which thread computed what;
//! - no FMA in the JIT's own code: Cranelift never contracts `fmul` + `fadd`, and no kernel
//!   emits `fma` ([`Jit::has_fma`] is only reported).
//!
//! The results do depend on the CPU: the `gemm` crate, which both backends call for products
//! from 2^12 multiply-adds (the JIT through its import), picks AVX-512 or AVX2 kernels with FMA
//! at run time, and their rounding differs, so those products and everything computed from
//! them differ between instruction sets (the same in both backends on one machine).

pub mod abi;
pub mod codegen;
pub mod jit;
pub mod kernel_ir;
pub mod kernels;
pub mod partition;
pub mod runtime;

pub use abi::Args;
pub use jit::{Jit, JitError};
pub use kernel_ir::KernelProgram;
pub use kernels::{Kernels, Uniform};
pub use partition::partition;
pub use runtime::{default_threads, JitProgram, KernelTime};
