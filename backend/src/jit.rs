//! The JIT module wrapper: one [`Jit`] owns a Cranelift [`JITModule`] and every function compiled
//! into it, and hands out its entry points (`Jit::entry`); `Entry::call` is the only place
//! where generated code is entered.
//!
//! - Target: the host ISA from `cranelift_native` (its CPU features detected at run time), with
//!   `opt_level=speed`; the verifier runs in debug builds.
//! - Entry points all have ONE signature, `extern "C" fn(args: *const Args)` ([`crate::abi`]).
//! - Imported symbols: only those in [`imports`] are registered (`JITBuilder::symbol`), and the
//!   process-wide `dlsym` fallback of `cranelift-jit` is shut off: any other name a function
//!   refers to (a libcall Cranelift chose, a typo) makes [`Jit::finalize`] fail and names it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cranelift_codegen::ir::{types, AbiParam, FuncRef, InstBuilder, Signature, Type};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};

use sparsec_ir::interp::{gemm_f32, gemm_f32_panels};

use crate::abi::{Args, EntryFn};
use crate::codegen::gemm::GEMM_IMPORT;
use crate::codegen::math::{EXP_IMPORT, LN_IMPORT, TANH_IMPORT};
use crate::codegen::FnCtx;

/// The symbols generated code may import, by name, and nothing else: `sparsec_gemm_f32`
/// (the interpreter's GEMM, for the large products and the convolutions, see `codegen::gemm`
/// and `codegen::conv`) and the interpreter's `exp`, `ln` and `tanh` (`sparsec_exp_f32`,
/// `sparsec_ln_f32`, `sparsec_tanh_f32`, see `codegen::math`).
pub fn imports() -> Vec<(&'static str, *const u8)> {
    vec![
        (GEMM_IMPORT, sparsec_gemm_f32 as *const u8),
        (EXP_IMPORT, sparsec_exp_f32 as *const u8),
        (LN_IMPORT, sparsec_ln_f32 as *const u8),
        (TANH_IMPORT, sparsec_tanh_f32 as *const u8),
    ]
}

/// `x.exp()`: the interpreter's `Float::exp` of `f32` for generated code, registered as
/// [`EXP_IMPORT`] (an approximation in Cranelift IR would not give the same bits).
///
/// # Safety
///
/// None needed: a safe function of one `f32` by value that touches no memory; it is
/// `extern "C"` only so that generated code can call it with the host's C convention
/// (`fn(f32) -> f32`, as `codegen::math` declares it).
extern "C" fn sparsec_exp_f32(x: f32) -> f32 {
    x.exp()
}

/// `x.ln()`: the interpreter's `Float::ln` of `f32`, registered as [`LN_IMPORT`].
///
/// # Safety
///
/// None needed, as for [`sparsec_exp_f32`].
extern "C" fn sparsec_ln_f32(x: f32) -> f32 {
    x.ln()
}

/// `x.tanh()`: the interpreter's `Float::tanh` of `f32`, registered as [`TANH_IMPORT`].
///
/// # Safety
///
/// None needed, as for [`sparsec_exp_f32`].
extern "C" fn sparsec_tanh_f32(x: f32) -> f32 {
    x.tanh()
}

/// `c[i·ldc + j] = Σ_kk op(a)(i, kk)·op(b)(kk, j)` for `i < m`, `j < n`: the interpreter's
/// `sparsec_ir::interp::gemm_f32` for generated code, registered as [`GEMM_IMPORT`]: the same
/// calls, so the same bits, as the interpreter's. `flags` bit 0: `a` is `[k, m]` (transposed),
/// else `[m, k]`; bit 1: `op(b)(kk, j) = b[j·ldb + kk]`, else `b[kk·ldb + j]`; bit 2: add to the
/// old `c` (`accumulate`) instead of overwriting it; bit 3: these are columns of a larger
/// product that runs in the GEMM library (`gemm_f32_panels`, the product kernels' calls),
/// rather than a whole product of this shape (the convolutions' calls).
///
/// # Safety
///
/// The pointers must be valid for the extents these sizes describe (`a`: `m·k` floats; `b`:
/// `(n−1)·ldb + k` or `(k−1)·ldb + n`; `c`: `(m−1)·ldc + n`, writable), `c` must not overlap `a`
/// or `b`, and no other thread may access the written elements of `c` meanwhile. Only generated code
/// calls it, with extents within the buffers of its argument block (the contract of
/// [`Entry::call`]); two threads pass disjoint column ranges of `c`, each starting at a multiple
/// of `sparsec_ir::interp::GEMM_PANEL`.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn sparsec_gemm_f32(
    m: u64,
    n: u64,
    k: u64,
    flags: u64,
    a: *const f32,
    b: *const f32,
    ldb: u64,
    c: *mut f32,
    ldc: u64,
) {
    let (m, n, k, ldb, ldc) = (
        m as usize,
        n as usize,
        k as usize,
        ldb as usize,
        ldc as usize,
    );
    if m == 0 || n == 0 {
        return;
    }
    let (ta, tb, accumulate) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    let b_len = match (k, tb) {
        (0, _) => 0,
        (_, true) => (n - 1) * ldb + k,
        (_, false) => (k - 1) * ldb + n,
    };
    // SAFETY: the caller's contract above: every pointer is valid (and `c` exclusively
    // ours) for exactly these extents during the call; empty slices are never built from the
    // pointers (which may then be null).
    let (a, b, c) = unsafe {
        (
            if k == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(a, m * k)
            },
            if k == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(b, b_len)
            },
            std::slice::from_raw_parts_mut(c, (m - 1) * ldc + n),
        )
    };
    if flags & 8 != 0 {
        gemm_f32_panels(m, n, k, ta, a, tb, b, ldb, c, ldc, accumulate);
    } else {
        gemm_f32(m, n, k, ta, a, tb, b, ldb, c, ldc, accumulate);
    }
}

/// An error while building the JIT or compiling into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitError(pub String);

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JitError {}

fn err(what: &str, e: impl fmt::Display) -> JitError {
    JitError(format!("{what}: {e}"))
}

/// What an unregistered symbol resolves to: never called, because [`Jit::finalize`] refuses to
/// hand out code that refers to one.
extern "C" fn unregistered_symbol() {
    std::process::abort()
}

/// A Cranelift JIT module and the functions compiled into it.
pub struct Jit {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    has_fma: bool,
    /// Functions defined since the last [`Jit::finalize`] (not callable yet).
    pending: Vec<FuncId>,
    /// Finalized, callable functions.
    ready: Vec<FuncId>,
    /// The CLIF text of every defined function, by name (before optimisation).
    clif: HashMap<String, String>,
    /// Names that generated code referred to but that are not in [`imports`].
    unresolved: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for Jit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jit")
            .field("has_fma", &self.has_fma)
            .field("functions", &self.clif.len())
            .finish()
    }
}

impl Jit {
    /// A JIT for the host CPU, with `opt_level=speed`.
    pub fn new() -> Result<Jit, JitError> {
        let mut flags = settings::builder();
        flags
            .set("opt_level", "speed")
            .map_err(|e| err("opt_level", e))?;
        // Cranelift's verifier checks every function before code generation, in every build
        // (its default): a codegen bug surfaces as an error naming the kernel, not as wrong
        // numbers. It costs a fraction of the compile time, which is milliseconds.
        flags
            .set("enable_verifier", "true")
            .map_err(|e| err("enable_verifier", e))?;
        // As `JITBuilder::with_flags` does: absolute, non-PIC relocations.
        flags
            .set("use_colocated_libcalls", "false")
            .map_err(|e| err("use_colocated_libcalls", e))?;
        flags.set("is_pic", "false").map_err(|e| err("is_pic", e))?;
        let isa = cranelift_native::builder()
            .map_err(|e| err("host ISA", e))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| err("host ISA", e))?;
        if isa.pointer_type() != types::I64 {
            return Err(JitError(format!(
                "unsupported host: {}-bit pointers (the kernels assume 64)",
                isa.pointer_bits()
            )));
        }
        let has_fma = isa.has_native_fma();
        let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        for (name, ptr) in imports() {
            builder.symbol(name, ptr);
        }
        let unresolved = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&unresolved);
        // Tried before the dlsym fallback, and always answers: so nothing is ever resolved
        // from the process's symbol table behind our back.
        builder.symbol_lookup_fn(Box::new(move |name: &str| {
            if let Ok(mut v) = sink.lock() {
                v.push(name.to_owned());
            }
            Some(unregistered_symbol as *const u8)
        }));
        let module = JITModule::new(builder);
        let ctx = module.make_context();
        Ok(Jit {
            module,
            ctx,
            fctx: FunctionBuilderContext::new(),
            has_fma,
            pending: Vec::new(),
            ready: Vec::new(),
            clif: HashMap::new(),
            unresolved,
        })
    }

    /// Whether the host has fused multiply-add (x86 `fma`, always on AArch64). Only reported:
    /// the JIT's own code never emits `fma`, so that it rounds like the interpreter's single
    /// operations; a run's FMA is inside the `gemm` crate, which both backends call.
    pub fn has_fma(&self) -> bool {
        self.has_fma
    }

    /// The CLIF text of the function `name` as generated (before Cranelift's optimisations).
    pub fn clif(&self, name: &str) -> Option<&str> {
        self.clif.get(name).map(String::as_str)
    }

    /// Declare the imported function `name` (which must be in [`imports`]) with the C calling
    /// convention and the given parameter and result types, for [`Jit::define_with_imports`].
    pub fn declare_import(
        &mut self,
        name: &str,
        params: &[Type],
        returns: &[Type],
    ) -> Result<FuncId, JitError> {
        if !imports().iter().any(|(n, _)| *n == name) {
            return Err(JitError(format!(
                "`{name}` is not a registered import (see sparsec_backend::jit::imports)"
            )));
        }
        self.declare_import_unchecked(name, params, returns)
    }

    fn declare_import_unchecked(
        &mut self,
        name: &str,
        params: &[Type],
        returns: &[Type],
    ) -> Result<FuncId, JitError> {
        let mut sig = Signature::new(self.module.target_config().default_call_conv);
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns
            .extend(returns.iter().map(|&t| AbiParam::new(t)));
        self.module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| err(name, e))
    }

    /// Define a function `name` with the entry signature; `build` emits its body into a fresh
    /// [`FnCtx`] (the final `return` is added here). Call [`Jit::finalize`] before calling it.
    pub fn define(
        &mut self,
        name: &str,
        build: impl FnOnce(&mut FnCtx<'_>),
    ) -> Result<FuncId, JitError> {
        self.define_with_imports(name, &[], build)
    }

    /// [`Jit::define`] for a function that calls the imported functions `imports` (from
    /// [`Jit::declare_import`]): `fx.imports[i]` is the callee of `imports[i]`.
    pub fn define_with_imports(
        &mut self,
        name: &str,
        imports: &[FuncId],
        build: impl FnOnce(&mut FnCtx<'_>),
    ) -> Result<FuncId, JitError> {
        let ptr = self.module.target_config().pointer_type();
        let mut sig = Signature::new(self.module.target_config().default_call_conv);
        sig.params.push(AbiParam::new(ptr));
        let id = self
            .module
            .declare_function(name, Linkage::Local, &sig)
            .map_err(|e| err(name, e))?;
        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature = sig;
        let refs: Vec<FuncRef> = imports
            .iter()
            .map(|&f| self.module.declare_func_in_func(f, &mut self.ctx.func))
            .collect();
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let args = b.block_params(entry)[0];
            let mut fx = FnCtx::new(b, ptr, args, self.has_fma);
            fx.imports = refs;
            build(&mut fx);
            fx.b.ins().return_(&[]);
            fx.b.seal_all_blocks();
            fx.b.finalize(self.module.target_config());
        }
        self.clif
            .insert(name.to_owned(), self.ctx.func.display().to_string());
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| err(name, format!("{e:?}")))?;
        self.module.clear_context(&mut self.ctx);
        self.pending.push(id);
        Ok(id)
    }

    /// Resolve relocations and make every defined function callable. Fails, naming them, when
    /// the code refers to symbols that are not in [`imports`]; those functions stay uncallable.
    pub fn finalize(&mut self) -> Result<(), JitError> {
        self.module
            .finalize_definitions()
            .map_err(|e| err("finalize", e))?;
        let unresolved: Vec<String> = match self.unresolved.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => vec!["<poisoned>".into()],
        };
        if !unresolved.is_empty() {
            self.pending.clear();
            return Err(JitError(format!(
                "generated code refers to unregistered symbols: {}",
                unresolved.join(", ")
            )));
        }
        self.ready.append(&mut self.pending);
        Ok(())
    }

    /// Run the finalized function `id` of this JIT on `args`, for [`crate::Kernels`].
    ///
    /// Panics if `id` is not a finalized function of this JIT.
    ///
    /// # Safety
    ///
    /// `args` meets, for the kernel `id` was defined as, what [`Entry::call`] requires of the
    /// argument block (its points 2 to 5); point 1 is checked and kept here.
    pub(crate) unsafe fn call(&self, id: FuncId, args: &Args) {
        // SAFETY: `entry` hands out only functions that `define` declared with the entry
        // signature and `finalize` made callable, and the `Entry` borrows `self`, so the code
        // outlives the call (point 1); the caller vouches for `args` (points 2 to 5). Subnormals
        // are zero in the call, as in every run of the runtime and the interpreter
        // (`sparsec_ir::fpenv`).
        sparsec_ir::fpenv::flushing_subnormals(|| unsafe { self.entry(id).call(args) })
    }

    /// The entry point of the finalized function `id`, callable from any thread (the runtime
    /// runs one kernel on several threads at once, each on its own disjoint output range).
    ///
    /// Panics if `id` is not a finalized function of this JIT.
    pub(crate) fn entry(&self, id: FuncId) -> Entry<'_> {
        assert!(
            self.ready.contains(&id),
            "function {id:?} is not a finalized function of this JIT"
        );
        let code = self.module.get_finalized_function(id);
        // SAFETY: `code` is the finalized machine code of a function that `define` declared with
        // the signature `fn(ptr)` in the host's default calling convention, i.e. exactly
        // `EntryFn` on the (64-bit) host; it is in `ready`, so its relocations are resolved and it
        // refers to no unregistered symbol. The code lives as long as `self.module` (and is in
        // fact never unmapped), and the returned `Entry` borrows `self`. Calling it is a separate
        // `unsafe` step, `Entry::call`, whose contract covers the memory behind `Args`.
        let f: EntryFn = unsafe { std::mem::transmute::<*const u8, EntryFn>(code) };
        Entry {
            f,
            _jit: std::marker::PhantomData,
        }
    }
}

/// A finalized entry point, borrowed from its [`Jit`]. Plain data (a code address), so it can
/// be copied to other threads; only [`Entry::call`] is unsafe.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    f: EntryFn,
    _jit: std::marker::PhantomData<&'a ()>,
}

impl Entry<'_> {
    /// Jump into the generated code with `args`: the one place where the crate does.
    ///
    /// # Safety
    ///
    /// Generated code checks nothing: it reads and writes wherever the addresses in `args`
    /// point, as far as the sizes in `args` and those compiled into the kernel say (and passes
    /// the same extents on to the imported GEMM). Each kernel's slots and extents are documented
    /// with its builder in `codegen`. The call is sound only if:
    ///
    /// 1. the code is a function defined with the entry signature ([`EntryFn`]) and finalized,
    ///    and the JIT module holding it is alive for the whole call. Every `Entry` meets this:
    ///    [`Jit::entry`] makes one only for such a function, and it borrows the [`Jit`];
    /// 2. every buffer slot the kernel reads or writes holds the address of a live allocation
    ///    of the element type the kernel documents (`f32`, or `i32` labels, `u32` entry indices,
    ///    `u64` bounds) and at least as long as the extent the kernel documents for these sizes;
    ///    the slots it writes (outputs, scratch) are writable;
    /// 3. no buffer the kernel writes overlaps another buffer of the call (outputs do not alias
    ///    inputs, nor each other, nor the scratch);
    /// 4. for the whole call nothing else writes the buffers, and nothing else reads or writes
    ///    the elements the call writes: two calls running at once (the runtime's threads) share
    ///    inputs but write disjoint ranges, as the kernels' range slots make them;
    /// 5. indices read from buffers are in range: labels in `0 .. classes`, a tracked weight's
    ///    entry indices sorted and below its length, with panel bounds into them.
    pub(crate) unsafe fn call(self, args: &Args) {
        // SAFETY: the caller's contract above; `args` itself is a live reference.
        unsafe { (self.f)(args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unregistered_symbol_fails_finalize_and_is_never_callable() {
        let mut jit = Jit::new().unwrap();
        assert!(jit.declare_import("not_registered", &[], &[]).is_err());
        // Past the front-door check (as a libcall Cranelift chose itself would be):
        let f = jit
            .declare_import_unchecked("not_registered", &[], &[])
            .unwrap();
        let id = jit
            .define_with_imports("calls_it", &[f], |fx| {
                let callee = fx.imports[0];
                fx.b.ins().call(callee, &[]);
            })
            .unwrap();
        let e = jit.finalize().unwrap_err();
        assert!(e.0.contains("not_registered"), "{e}");
        assert!(!jit.ready.contains(&id));
    }
}
