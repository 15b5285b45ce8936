//! Native code generation for sparsec: Cranelift JIT of fused training kernels.
//!
//! - [`partition`] and [`kernel_ir`]: a function of the optimised graph as fused kernels
//!   (products with their regeneration prologue and bias/relu epilogue, element-wise chains,
//!   reductions, softmax cross-entropy, max pooling, convolutions, Dropback ops, interpreter
//!   fallbacks), printable.
//! - [`runtime`]: [`JitProgram`], a function compiled once and run with the interpreter's
//!   contract, its kernels split over up to two threads with identical results.
//!
//! - [`jit`]: [`Jit`] owns a Cranelift JIT module and its functions, and is the one place where
//!   generated code is entered.
//! - [`codegen`]: the function context, loops, `f32x4` main loops with scalar tails, ChaCha8
//!   and the matrix products, in Cranelift IR.
//! - [`kernels`]: [`Kernels`], every kernel compiled for the host behind a safe, slice-checked
//!   API.
//!
//! # Entry-point ABI
//!
//! Every generated function is `extern "C" fn(args: *const Args)` (the host's C calling
//! convention; 64-bit hosts only). [`Args`] is a `#[repr(C)]` block of four buffer addresses,
//! six 64-bit integers and four `f32`s; each kernel documents which slots it reads (see
//! [`codegen::elementwise`], [`codegen::chacha`], [`codegen::gemm`]). One signature keeps the
//! single `unsafe` call site simple, and a kernel that fuses more operands gets a bigger
//! block, not a new calling convention.
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
//! Every kernel here returns the same bits as the reference (`sparsec_ir::interp`,
//! `sparsec_ir::regen`), on every CPU:
//! - element-wise: the same single IEEE operations (`fadd`, `fsub`, `fmul`, compare-and-select
//!   for `relu`/`relu_grad`); lanes are independent, so `f32x4` changes nothing;
//! - regeneration: ChaCha8 is integer arithmetic, and the word → `f32` map is an exact
//!   conversion and scaling, then `hi − lo`, the product and the sum each rounded once, as in
//!   `regen::word_to_f32`;
//! - matrix products: vectorised over output columns, each element still summed one product
//!   at a time in ascending `k` from `+0`, the interpreter's documented order;
//! - `exp`, `ln`, `tanh` (softmax cross-entropy, `sigmoid`, `tanh`): calls to the interpreter's
//!   own `f32` functions through registered imports ([`codegen::math`]), never approximations;
//!   the reductions around them in the interpreter's order;
//! - convolutions: the data movement (`im2col`, `col2im`) is copies and the interpreter's
//!   scatter-add order, and every product is the imported GEMM called with exactly the
//!   interpreter's shapes, layouts and accumulate flag ([`codegen::conv`]), so the bits do not
//!   depend on how that GEMM sums.
//! - No FMA: Cranelift never contracts `fmul` + `fadd`, and no kernel emits `fma`
//!   ([`Jit::has_fma`] reports whether the host could, for kernels that will opt in and be tested
//!   against an FMA reference).

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
pub use runtime::{default_threads, JitProgram};
