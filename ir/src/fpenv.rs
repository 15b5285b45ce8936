//! Subnormal floats are flushed to zero in every thread that trains: both backends, every thread
//! count.
//!
//! A run whose gradients vanish (dead units, a decayed learning rate) lets its momentum buffers
//! decay geometrically into subnormal floats, and on x86 every operation on a subnormal takes a
//! microcode assist of a hundred cycles or more: a LeNet-300-100 step at batch 1 ran 25–30×
//! slower once most of its momentum was subnormal. With FTZ (results that would be subnormal are
//! zero) and DAZ (subnormal inputs read as zero) set in MXCSR, as PyTorch's
//! `set_flush_denormal(True)` does, those values become exact zeros instead.
//!
//! The same bits in both backends and for any thread count need the same environment wherever
//! the arithmetic runs: [`flushing_subnormals`] sets it around a run on the calling thread (every
//! `Interpreter::run`, `f32` or `f64`, and every run of the JIT) and restores the caller's afterwards, and the JIT's
//! pool workers set it once when they start ([`flush_subnormals_in_this_thread`]). The
//! interpreter's scalar `f32` arithmetic, the JIT's code, the `gemm` crate's AVX kernels and
//! the math functions they call all read MXCSR, so they flush alike.
//!
//! The caveat: the compiler assumes the default environment when it folds constants, so a
//! constant expression in Rust that yields a subnormal keeps it. No kernel folds float
//! constants of the data, so results computed at run time all see the same environment.
//!
//! On targets other than x86-64 these functions do nothing.

#[cfg(target_arch = "x86_64")]
mod mxcsr {
    use std::arch::asm;

    /// Flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    pub const FLUSH: u32 = (1 << 15) | (1 << 6);

    pub fn get() -> u32 {
        let mut value: u32 = 0;
        // SAFETY: `stmxcsr` stores the 32-bit MXCSR register into the 4 bytes at the address,
        // which is a live, aligned, exclusively borrowed `u32`.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags));
        }
        value
    }

    pub fn set(value: u32) {
        // SAFETY: `ldmxcsr` loads MXCSR from a live, aligned `u32`. Only the flush bits are
        // changed by callers (every other bit is the value just read), so rounding mode and
        // exception masks stay as the program set them: no exception can be unmasked here.
        unsafe {
            asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, readonly, preserves_flags));
        }
    }
}

/// Run `f` with subnormals flushed to zero on this thread, then restore the thread's previous
/// setting (also when `f` panics).
pub fn flushing_subnormals<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                mxcsr::set(self.0);
            }
        }
        let before = mxcsr::get();
        let _restore = Restore(before);
        mxcsr::set(before | mxcsr::FLUSH);
        f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        f()
    }
}

/// Flush subnormals to zero on this thread for good: for threads that only run kernels (the
/// JIT's pool workers).
pub fn flush_subnormals_in_this_thread() {
    #[cfg(target_arch = "x86_64")]
    mxcsr::set(mxcsr::get() | mxcsr::FLUSH);
}

/// Whether this thread flushes subnormals now.
pub fn flushes_subnormals() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr::get() & mxcsr::FLUSH == mxcsr::FLUSH
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
