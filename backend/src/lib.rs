//! Native code generation for sparsec (Cranelift JIT of fused training kernels).
//! Empty until the native-speed issue lands; the crate exists so the dependency
//! direction (backend → ir) is fixed from the start.
