"""The ``cuda`` backend: NVIDIA GPUs through CuPy (cuBLAS for matmul, CUB/NVRTC for
reductions; our own generated CUDA C arrives with the kernel language).

Host↔device copies go through pinned staging buffers, double-buffered, because pageable
copies crawl (≈2 GB/s seen on the lent H200) while pinned ones run at link speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType
from ..errors import BackendError
from .base import Device, DeviceInfo, ReduceRequest, StopTimer

_FIX_CUPY = (
    "CuPy is not installed: pip install 'vgpu-nb[cuda]' (CUDA 12 wheels, also fine on CUDA 13 "
    "drivers) or 'vgpu-nb[cuda13]'"
)
_STAGE_BYTES = 32 << 20  # per pinned staging buffer (two of them)
_SMALL = 1 << 20  # below this, a plain (pageable) copy: latency-bound anyway

_C_TYPES = {
    "f32": "float",
    "f64": "double",
    "i32": "int",
    "u32": "unsigned int",
    "i64": "long long",
    "u64": "unsigned long long",
    "bool": "bool",
}


def discover() -> list[DeviceInfo]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install
        why = _FIX_CUPY if isinstance(exc, ImportError) else f"CuPy failed to import: {exc}"
        return [DeviceInfo("cuda", "cuda", "-", "gpu", available=False, why_not=why)]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return [
            DeviceInfo(
                "cuda",
                "cuda",
                "-",
                "gpu",
                available=False,
                why_not=f"no usable NVIDIA driver/GPU ({exc}); install the NVIDIA driver "
                "(nvidia-smi must list a GPU), or use 'wgpu' / 'numba'",
            )
        ]
    if count == 0:
        return [
            DeviceInfo("cuda", "cuda", "-", "gpu", available=False, why_not="no NVIDIA GPU found")
        ]
    rt = cupy.cuda.runtime.runtimeGetVersion()
    rows = []
    for i in range(count):
        p = cupy.cuda.runtime.getDeviceProperties(i)
        name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        rows.append(
            DeviceInfo(
                name=f"cuda:{i}",
                backend="cuda",
                adapter=f"{name} / CUDA {rt // 1000}.{rt % 1000 // 10} (CuPy {cupy.__version__})",
                kind="gpu",
                memory_bytes=int(p["totalGlobalMem"]),
                compute_units=int(p["multiProcessorCount"]),
                extra={"cc": f"{p['major']}.{p['minor']}", "l2_bytes": int(p["l2CacheSize"])},
            )
        )
    return rows


def open_device(info: DeviceInfo) -> CudaDevice:
    return CudaDevice(info)


class CudaDevice(Device):
    backend = "cuda"

    def __init__(self, info: DeviceInfo):
        super().__init__(info)
        import cupy

        self.cp = cupy
        self.index = int(info.name.split(":")[1])
        self._dev = cupy.cuda.Device(self.index)
        self._kernels: dict[tuple, Any] = {}
        self._pinned: list[Any] = []

    # ---- memory --------------------------------------------------------------------
    def _staging(self) -> list[tuple[np.ndarray, Any]]:
        """Two pinned host buffers (as uint8 arrays) with an event each, made once."""
        if not self._pinned:
            cp = self.cp
            for _ in range(2):
                mem = cp.cuda.alloc_pinned_memory(_STAGE_BYTES)
                view = np.frombuffer(mem, dtype=np.uint8, count=_STAGE_BYTES)
                self._pinned.append((view, cp.cuda.Event(disable_timing=True), mem))
        return [(v, e) for v, e, _ in self._pinned]

    def _copy_staged(self, dev_ptr: int, host: np.ndarray, to_device: bool) -> None:
        """Chunked copy through pinned memory; chunk k+1 is packed while k is in flight."""
        cp = self.cp
        rt = cp.cuda.runtime
        stream = cp.cuda.get_current_stream()
        flat = host.reshape(-1).view(np.uint8)
        stage = self._staging()
        kind = rt.memcpyHostToDevice if to_device else rt.memcpyDeviceToHost
        pending: list[tuple[int, int, int] | None] = [None, None]
        for k, off in enumerate(range(0, flat.size, _STAGE_BYTES)):
            view, ev = stage[k % 2]
            n = min(_STAGE_BYTES, flat.size - off)
            ev.synchronize()  # the previous copy through this buffer is done
            if not to_device and pending[k % 2] is not None:
                o, m, _ = pending[k % 2]  # type: ignore[misc]
                flat[o : o + m] = view[:m]
            if to_device:
                view[:n] = flat[off : off + n]
                rt.memcpyAsync(dev_ptr + off, view.ctypes.data, n, kind, stream.ptr)
            else:
                rt.memcpyAsync(view.ctypes.data, dev_ptr + off, n, kind, stream.ptr)
            ev.record(stream)
            pending[k % 2] = (off, n, k)
        stream.synchronize()
        if not to_device:
            for p, (view, _) in zip(pending, stage, strict=True):
                if p is not None:
                    o, m, _k = p
                    flat[o : o + m] = view[:m]

    def from_numpy(self, a: np.ndarray) -> Any:
        with self._dev:
            out = self.cp.empty(a.shape, a.dtype)
            if a.nbytes < _SMALL:
                out.set(np.ascontiguousarray(a))
            else:
                self._copy_staged(out.data.ptr, np.ascontiguousarray(a), to_device=True)
            return out

    def to_numpy(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        host = np.empty(shape, dtype.np)
        with self._dev:
            if host.nbytes < _SMALL:
                return buf.reshape(shape).get()
            self._copy_staged(buf.data.ptr, host, to_device=False)
        return host

    def empty(self, shape: tuple[int, ...], dtype: DType) -> Any:
        with self._dev:
            return self.cp.empty(shape, dtype.np)

    def full(self, shape: tuple[int, ...], value: Any, dtype: DType) -> Any:
        with self._dev:
            return self.cp.full(shape, value, dtype.np)

    def reshape(self, buf: Any, shape: tuple[int, ...]) -> Any:
        return buf.reshape(shape)

    def copy(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> Any:
        with self._dev:
            return buf.copy()

    def astype(self, buf: Any, shape: tuple[int, ...], src: DType, dst: DType) -> Any:
        with self._dev:
            return buf.astype(dst.np)

    def sync(self) -> None:
        self._dev.synchronize()

    # ---- compute ---------------------------------------------------------------------
    def _kernel(self, kind: str, req: ReduceRequest) -> Any:
        """Fused map-reduce kernels (one pass, no temporaries) through CuPy/NVRTC."""
        key = (kind, req.dtype, req.y_dtype, req.acc)
        k = self._kernels.get(key)
        if k is None:
            # parameters are declared with NumPy dtype names, casts are C
            xi, xa, ca = req.dtype.np.name, req.acc.np.name, _C_TYPES[req.acc.name]
            if kind == "sumsq":
                params, body = f"{xi} x", f"(({ca})x) * (({ca})x)"
            elif kind == "sqdev":
                params, body = f"{xi} x, {xa} c", f"(({ca})x - c) * (({ca})x - c)"
            else:  # dot
                params = f"{xi} x, {req.y_dtype.np.name} y"  # type: ignore[union-attr]
                body = f"(({ca})x) * (({ca})y)"
            k = self.cp.ReductionKernel(
                params, f"{xa} out", body, "a + b", "out = a", "0", f"vg_{kind}", reduce_type=ca
            )
            self._kernels[key] = k
        return k

    def reduce(self, req: ReduceRequest) -> Any:
        try:
            with self._dev:
                return self._reduce(req)
        except self.cp.cuda.runtime.CUDARuntimeError as exc:
            raise BackendError(f"CUDA failed in {req.kind}: {exc}", where=self.name) from exc

    def _reduce(self, req: ReduceRequest) -> Any:
        cp, x, axis, kind = self.cp, req.x, req.axis, req.kind
        if kind in ("argmin", "argmax"):
            idx = getattr(cp, kind)(x, axis=axis)
            if req.dtype.is_float:  # NumPy: the first NaN wins
                nan = cp.isnan(x)
                idx = cp.where(nan.any(axis=axis), cp.argmax(nan, axis=axis), idx)
            return idx.astype(np.int64, copy=False)
        if kind in ("min", "max"):
            return getattr(cp, kind)(x, axis=axis)
        acc = req.acc.np
        if kind == "sum":  # (no dtype= when it changes nothing: CuPy's fastest path)
            r = cp.sum(x, axis=axis, dtype=None if req.acc is req.dtype else acc)
        elif kind == "prod" and req.acc.name == "f32":
            # float products drift (10⁶ factors near 1: 1e-3 relative in f32): multiply in
            # f64 and round once, as the numba backend does
            r = cp.prod(x, axis=axis, dtype=np.float64).astype(acc)
        elif kind == "prod":
            r = cp.prod(x, axis=axis, dtype=acc)
        elif kind == "sumsq":
            r = self._kernel(kind, req)(x, axis=axis)
        elif kind == "dot":
            r = self._kernel(kind, req)(x, req.y, axis=axis)
        else:  # sqdev
            c = req.center[:, None] if axis == 1 else req.center
            r = self._kernel(kind, req)(x, c, axis=axis)
        if req.divisor is not None:
            r = cp.true_divide(r, acc.type(req.divisor), dtype=acc)
        if req.sqrt:
            r = cp.sqrt(r)
        return r if r.dtype == req.out.np else r.astype(req.out.np)

    def matmul(self, a: Any, b: Any, m: int, k: int, n: int, dtype: DType) -> Any:
        with self._dev:
            return self.cp.matmul(a.reshape(m, k), b.reshape(k, n))

    # ---- timing ----------------------------------------------------------------------
    def start_timer(self) -> StopTimer:
        cp = self.cp
        with self._dev:
            start = cp.cuda.Event()
            start.record()

        def stop() -> Any:
            with self._dev:
                end = cp.cuda.Event()
                end.record()

            def resolve() -> float:
                end.synchronize()
                return cp.cuda.get_elapsed_time(start, end) / 1e3

            return resolve

        return stop
