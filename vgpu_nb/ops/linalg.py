"""Matrix product on every backend: BLAS through NumPy (numpy, numba), cuBLAS through CuPy
(cuda), our register-blocked tiled WGSL shader (wgpu, f32)."""

from __future__ import annotations

import numpy as np

from ..array import Array, _Spilled, check_same_device
from ..devices import AUTO, auto_requested
from ..dtypes import as_dtype
from ..errors import ShapeMismatch
from ..memory.manager import _now
from ..memory.stream import streaming
from ..scheduler import auto
from ..telemetry import recorded


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` for 1-D and 2-D operands with NumPy's rules (a 1-D left operand is a row,
    a 1-D right operand a column, and that dimension is dropped from the result)."""
    if AUTO[0] and auto_requested() and not auto.inside():
        check_same_device("matmul", a)
        check_same_device("matmul", b)
        m, k = (1, a.shape[0]) if a.ndim == 1 else a.shape[:2] if a.ndim == 2 else (0, 0)
        n = 1 if b.ndim == 1 else b.shape[-1] if b.ndim else 0
        key = ("matmul", a.dtype, b.dtype, (m * n * k).bit_length())

        def work() -> auto.Work:
            out = as_dtype(np.result_type(a.dtype.np, b.dtype.np))
            return auto.Work(
                "vg.matmul", key,
                lambda: (2 * m * n * k, (m * k + k * n + m * n) * out.itemsize), (a, b),
                lambda d: d.unsupported("matmul", (a.dtype, b.dtype), out), peak="matmul_gflops",
                latency="enqueue_us",
            )  # fmt: skip

        return auto.route(key, (a, b), work, lambda d: _matmul_here(a, b))
    return _matmul_here(a, b)


def _matmul_here(a: Array, b: Array) -> Array:
    dev = check_same_device("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeMismatch("matmul: 0-d operands are not allowed", fix="multiply instead")
    if a.ndim > 2 or b.ndim > 2:
        raise ShapeMismatch(
            f"matmul: batched (n-D) operands {a.shape} @ {b.shape} are not supported yet",
            fix="loop over the batch, or reshape to 2-D",
        )
    m, k = (1, a.shape[0]) if a.ndim == 1 else a.shape
    k2, n = (b.shape[0], 1) if b.ndim == 1 else b.shape
    if k != k2:
        raise ShapeMismatch(
            f"matmul: {a.shape} @ {b.shape}: inner dimensions differ ({k} ≠ {k2})",
            fix="check the operand order, or transpose one operand",
        )
    out = as_dtype(np.result_type(a.dtype.np, b.dtype.np))
    dev.require("matmul", (a.dtype, b.dtype), out)
    shape = tuple(s for s, keep in ((m, a.ndim == 2), (n, b.ndim == 2)) if keep)
    if m * n == 0 or k == 0:
        return Array(dev.full(shape, 0, out), shape, out, dev)
    a = a if a.dtype == out else a.astype(out)
    b = b if b.dtype == out else b.astype(out)
    if (type(a) is _Spilled or type(b) is _Spilled) and streaming(
        (a, b), dev, m * n * out.itemsize
    ):
        from .streamed import matmul as streamed_matmul

        return streamed_matmul(a, b, m, k, n, out, shape)

    def compute():  # noqa: ANN202
        ab, bb = a._buf, b._buf  # (evaluates pending operands first)
        a._st.last = b._st.last = _now()  # LRU: a use
        return dev.matmul(ab, bb, m, k, n, out)

    nbytes = (m * k + k * n + m * n) * out.itemsize
    buf = recorded(dev, "matmul", (m, k, n), out.name, nbytes, 2 * m * n * k, compute)
    return Array(dev.reshape(buf, shape), shape, out, dev)
