"""The ``numpy`` backend: reference semantics on the host, one NumPy call per primitive.

It is the oracle the other backends are tested against, and the debugging backend of the
kernel language (kernels run thread by thread there, bounds-checked).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from ..dtypes import DType
from .base import CompiledKernel, Device, DeviceInfo, ReduceRequest


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_model() -> str | None:
    """The CPU's marketing name (Linux /proc/cpuinfo, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def discover() -> list[DeviceInfo]:
    return [
        DeviceInfo(
            name="numpy",
            backend="numpy",
            adapter=f"NumPy {np.__version__} (host, 1 thread + BLAS)",
            kind="cpu",
            memory_bytes=host_memory_bytes(),
            compute_units=1,
        )
    ]


def open_device(info: DeviceInfo) -> NumpyDevice:
    return NumpyDevice(info)


def reduce_host(req: ReduceRequest, x: np.ndarray, y: np.ndarray | None, center: Any) -> Any:
    """Reference implementation of a :class:`ReduceRequest` on host arrays."""
    kind, axis = req.kind, req.axis
    if kind in ("argmin", "argmax"):
        return np.asarray(getattr(np, kind)(x, axis=axis), dtype=np.int64)
    if kind in ("min", "max"):
        return np.asarray(getattr(np, kind)(x, axis=axis))
    acc = req.acc.np
    xa = x.astype(acc, copy=False)
    if kind == "sum":
        r = np.sum(xa, axis=axis, dtype=acc)
    elif kind == "prod":
        r = np.prod(xa, axis=axis, dtype=acc)
    elif kind == "sumsq":
        r = np.sum(xa * xa, axis=axis, dtype=acc)
    elif kind == "dot":
        r = np.sum(xa * y.astype(acc, copy=False), axis=axis, dtype=acc)
    elif kind == "sqdev":
        c = np.asarray(center, dtype=acc)
        if axis == 1:
            c = c[:, None]
        d = xa - c
        r = np.sum(d * d, axis=axis, dtype=acc)
    else:
        raise ValueError(f"unknown reduction kind {kind!r}")
    return post_host(req, np.asarray(r))


def post_host(req: ReduceRequest, r: np.ndarray) -> np.ndarray:
    """The shared epilogue: ``/ divisor`` in acc, ``sqrt``, cast to ``out``."""
    acc = req.acc.np
    if req.divisor is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.true_divide(r, acc.type(req.divisor), dtype=acc)
    if req.sqrt:
        r = np.sqrt(r)
    return np.asarray(r).astype(req.out.np, copy=False)


class NumpyDevice(Device):
    backend = "numpy"
    host_is_device = True

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, copy=True, order="C")

    def to_numpy(self, buf: np.ndarray, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        return buf

    def reshape(self, buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return buf.reshape(shape)

    def copy(self, buf: np.ndarray, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        return buf.copy()

    def empty(self, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        return np.empty(shape, dtype.np)

    def full(self, shape: tuple[int, ...], value: Any, dtype: DType) -> np.ndarray:
        return np.full(shape, value, dtype.np)

    def astype(self, buf: np.ndarray, shape: tuple[int, ...], src: DType, dst: DType) -> Any:
        return buf.astype(dst.np)

    def reduce(self, req: ReduceRequest) -> np.ndarray:
        return reduce_host(req, req.x, req.y, req.center)

    def matmul(self, a: Any, b: Any, m: int, k: int, n: int, dtype: DType) -> np.ndarray:
        return np.matmul(a.reshape(m, k), b.reshape(k, n))

    # ---- the kernel language: thread by thread in Python (the debugging backend) ---------
    #: which program codegen_numba emits for this backend
    target = "python"

    def kernel_source(self, fn: Any) -> str:
        from ..kernel import codegen_numba

        return codegen_numba.kernel_source(fn, self.target)

    def compile_kernel(self, fn: Any) -> CompiledKernel:
        from ..kernel import pyload

        t0 = time.perf_counter()
        src = self.kernel_source(fn)
        mod, hit = pyload.load(src, self.target)
        return CompiledKernel(src, getattr(mod, fn.name), time.perf_counter() - t0, hit,
                              {"kernel": fn.py_name, "filename": fn.filename})  # fmt: skip

    def launch_kernel(self, ck: CompiledKernel, domain: tuple[int, ...], args: Any) -> None:
        from ..kernel.pyrt import STATE

        n0, n1 = (domain[0], 1) if len(domain) == 1 else domain
        STATE.kernel, STATE.filename = ck.extra["kernel"], ck.extra["filename"]
        native = [a[0] if isinstance(a, tuple) else a for a in args]
        with np.errstate(all="ignore"):
            ck.handle(n0, n1, *native)

    def reduction_source(self, red: Any) -> str:
        from ..kernel import codegen_numba

        return codegen_numba.reduction_source(red, self.target)

    def compile_reduction(self, red: Any) -> CompiledKernel:
        from ..kernel import pyload

        t0 = time.perf_counter()
        src = self.reduction_source(red)
        mod, hit = pyload.load(src, self.target)
        return CompiledKernel(src, mod, time.perf_counter() - t0, hit, {"red": red})

    def run_reduction(
        self, cr: CompiledKernel, inputs: Any, shape: tuple[int, ...], axis: int | None
    ) -> np.ndarray:
        from ..kernel.codegen_numba import partial_shape

        red = cr.extra["red"]
        mod = cr.handle
        flat = [np.ascontiguousarray(x).reshape(-1) for x in inputs]
        if axis is None:
            rows, cols, ax = 1, flat[0].size, 1
        else:
            rows, cols, ax = shape[0], shape[1], axis  # 1: along rows, 0: down columns
        P = np.empty(partial_shape(self.target, rows, cols, ax), red.acc.np)
        with np.errstate(all="ignore"):
            (mod.rows if ax == 1 else mod.cols)(*flat, rows, cols, P)
            out = np.empty(P.shape[0] if ax == 1 else P.shape[1], red.out.np)
            mod.finish(P, ax, cols if ax == 1 else rows, out)
        return out.reshape(()) if axis is None else out
