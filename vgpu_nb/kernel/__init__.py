"""The portable kernel language: frontend (Python AST → typed IR), one emitter per target
(CUDA C, WGSL, Python/Numba), the compiled-kernel cache and the user API."""
