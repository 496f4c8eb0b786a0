"""The ``cuda`` backend: NVIDIA GPUs through CuPy (cuBLAS for matmul, CUB/NVRTC for
built-in reductions, and our generated CUDA C for the kernel language).

Host↔device copies go through pinned staging buffers, double-buffered, because pageable
copies crawl (≈2 GB/s seen on the lent H200) while pinned ones run at link speed.

Kernels (:mod:`vgpu_nb.kernel.codegen_cuda` writes the C) are compiled by NVRTC for the
device's own architecture (a cubin; PTX for the newest architecture NVRTC knows when it
predates the GPU), cached in :data:`vgpu_nb.kernel.cache.CACHE` (memory + disk) and, once
loaded, per device. A launch is one generated Python function that unpacks the arguments
and calls the CuPy ``Function`` directly: everything else is decided at compile time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dtypes import DType
from ..errors import BackendError, KernelCompileError, UnsupportedOnBackend
from ..kernel import codegen_cuda, ir
from ..kernel.cache import CACHE, make_key
from .base import CompiledKernel, Device, DeviceInfo, ReduceRequest, StopTimer

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
    device_clock = True
    timer_covers_launch = True

    def __init__(self, info: DeviceInfo):
        super().__init__(info)
        import cupy

        self.cp = cupy
        self.index = int(info.name.split(":")[1])
        self._dev = cupy.cuda.Device(self.index)
        self._kernels: dict[tuple, Any] = {}
        self._pinned: list[Any] = []
        self._modules: dict[str, Any] = {}  # cache key → loaded cupy Module (this device)
        self._target: tuple[str, bool, str] | None = None  # (arch, cubin?, nvrtc version)
        # one GPU in the process: it is always the current one, no switch needed at launch
        self._only_device = cupy.cuda.runtime.getDeviceCount() == 1

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

    # ---- memory tiers: the host tier of a CUDA array is pinned, so spills, unspills and
    # streamed chunks go at link speed with one DMA (no staging copy) ---------------------
    def held_bytes(self, buf: Any) -> int:
        mem = getattr(buf.data, "mem", None)
        return int(getattr(mem, "size", buf.nbytes))

    def host_empty(self, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        n = max(1, int(np.prod(shape)) * dtype.itemsize)
        mem = self.cp.cuda.alloc_pinned_memory(n)
        return (
            np.frombuffer(mem, np.uint8, count=n)[: int(np.prod(shape)) * dtype.itemsize]
            .view(dtype.np)
            .reshape(shape)
        )

    def _pinned_ptr(self, host: np.ndarray) -> bool:
        rt = self.cp.cuda.runtime
        try:
            return rt.pointerGetAttributes(host.ctypes.data).type == rt.memoryTypeHost
        except Exception:  # noqa: BLE001  (unregistered pageable memory on old runtimes)
            return False

    def _dma(self, dst: int, src: int, n: int, to_device: bool) -> None:
        rt = self.cp.cuda.runtime
        kind = rt.memcpyHostToDevice if to_device else rt.memcpyDeviceToHost
        rt.memcpyAsync(dst, src, n, kind, self.cp.cuda.get_current_stream().ptr)

    def to_host_tier(self, buf: Any, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        out = self.host_empty(shape, dtype)
        if out.nbytes:
            with self._dev:
                self._dma(out.ctypes.data, buf.data.ptr, out.nbytes, to_device=False)
                self.cp.cuda.get_current_stream().synchronize()
        return out

    def download_into(self, host: np.ndarray, buf: Any, dtype: DType) -> None:
        """Straight into ``host``: one DMA when it is pinned (a host-tier array), else through
        the staging buffers (no temporary array, no second host copy)."""
        if not host.nbytes or host.nbytes < _SMALL or not host.flags.c_contiguous:
            super().download_into(host, buf, dtype)
            return
        with self._dev:
            if self._pinned_ptr(host):
                self._dma(host.ctypes.data, buf.data.ptr, host.nbytes, to_device=False)
                self.cp.cuda.get_current_stream().synchronize()
            else:
                self._copy_staged(buf.data.ptr, host, to_device=False)

    def from_host_tier(self, host: np.ndarray) -> Any:
        if not host.nbytes or not self._pinned_ptr(host):
            return self.from_numpy(host)
        with self._dev:
            out = self.cp.empty(host.shape, host.dtype)
            self._dma(out.data.ptr, host.ctypes.data, host.nbytes, to_device=True)
            self.cp.cuda.get_current_stream().synchronize()
            return out

    def upload_into(self, dst: Any, host: np.ndarray) -> None:
        """Queued on the current stream; ``host`` must stay untouched until it is done
        (the streaming engine records an event and waits before reusing its buffer)."""
        if not host.nbytes:
            return
        with self._dev:
            if self._pinned_ptr(host):
                self._dma(dst.data.ptr, host.ctypes.data, host.nbytes, to_device=True)
            else:
                self._copy_staged(dst.data.ptr, np.ascontiguousarray(host), to_device=True)

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

    # ---- the kernel language ------------------------------------------------------------
    def kernel_unsupported(self, fn: ir.Function) -> str | None:
        if ir.usage(fn).prints:
            return "print() only runs on the numpy backend"
        return None

    def kernel_source(self, fn: ir.Function) -> str:
        return codegen_cuda.kernel_source(fn)

    def compile_kernel(self, fn: ir.Function) -> CompiledKernel:
        t0 = time.perf_counter()
        reason = self.kernel_unsupported(fn)
        if reason:
            raise UnsupportedOnBackend(
                f"kernel {fn.py_name or fn.name!r} cannot run on {self.name}: {reason}",
                fix="remove the print() calls, or run it on device='numpy' to debug",
            )
        gen = codegen_cuda.generate_kernel(fn)
        module, hit, key = self._module(gen.source, fn.py_name or fn.name)
        launch = _make_launcher(gen, module.get_function(gen.entry))
        return CompiledKernel(
            source=gen.source,
            handle=launch,
            compile_s=time.perf_counter() - t0,
            cache_hit=hit,
            extra={"key": key, "entry": gen.entry, "arch": self._nvrtc_target()[0]},
        )

    def launch_kernel(
        self, ck: CompiledKernel, domain: tuple[int, ...], args: Sequence[Any]
    ) -> None:
        try:
            if self._only_device or self.cp.cuda.runtime.getDevice() == self.index:
                ck.handle(domain, args)
            else:
                with self._dev:
                    ck.handle(domain, args)
        except self.cp.cuda.driver.CUDADriverError as exc:
            raise BackendError(f"CUDA kernel launch failed: {exc}", where=self.name) from exc

    def fast_launcher(self, ck: CompiledKernel) -> Any:
        """The generated launcher itself when this is the only GPU (no current-device
        check needed); launch errors surface at the next sync anyway, as in CuPy."""
        if self._only_device:
            return ck.handle
        return super().fast_launcher(ck)

    # ---- native kernels: the user's own CUDA C (vgpu_nb.kernel.native) --------------------
    def compile_native(self, source: str, entry: str, what: str) -> CompiledKernel:
        """NVRTC-compile user-written CUDA C for this device (through the kernel cache, as
        generated code is) and look up its ``extern "C"`` kernel ``entry``; compile errors
        are :class:`KernelCompileError` with NVRTC's log."""
        t0 = time.perf_counter()
        module, hit, key = self._module(source, what, native=True)
        try:
            func = module.get_function(entry)
        except self.cp.cuda.driver.CUDADriverError as exc:
            raise KernelCompileError(
                f"{what}: the compiled module has no kernel named {entry!r} ({exc})",
                where=self.name,
                fix=f'declare it extern "C" __global__ void {entry}(...)',
            ) from exc
        return CompiledKernel(
            source=source,
            handle=func,
            compile_s=time.perf_counter() - t0,
            cache_hit=hit,
            extra={"key": key, "entry": entry, "arch": self._nvrtc_target()[0]},
        )

    def launch_native(
        self,
        ck: CompiledKernel,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: Sequence[Any],
        shared_mem: int = 0,
    ) -> None:
        """Enqueue ``func<<<grid, block, shared_mem>>>(args)`` (CuPy arrays and NumPy
        scalars of the parameters' types) on the current stream."""
        func = ck.handle
        try:
            if self._only_device or self.cp.cuda.runtime.getDevice() == self.index:
                func(grid, block, tuple(args), shared_mem=shared_mem)
            else:
                with self._dev:
                    func(grid, block, tuple(args), shared_mem=shared_mem)
        except self.cp.cuda.driver.CUDADriverError as exc:
            raise BackendError(
                f"CUDA launch of native kernel {ck.extra.get('entry')!r} failed: {exc}",
                where=self.name,
                fix="check the grid/block sizes and the dynamic shared memory it asks for",
            ) from exc

    def reduction_source(self, red: ir.Reduction) -> str:
        return codegen_cuda.reduction_source(red)

    def compile_reduction(self, red: ir.Reduction) -> CompiledKernel:
        t0 = time.perf_counter()
        source = codegen_cuda.reduction_source(red)
        module, hit, key = self._module(source, red.name)
        width = codegen_cuda.reduction_vector_width(red.inputs)
        plan = _ReductionPlan(
            funcs={e: module.get_function(e) for e in codegen_cuda.REDUCTION_ENTRIES},
            aligns=tuple(width * t.itemsize for t in red.inputs) if width > 1 else None,
            acc=red.acc.np,
            out=red.out.np,
            sms=int(self.info.compute_units or 1),
        )
        return CompiledKernel(
            source=source,
            handle=plan,
            compile_s=time.perf_counter() - t0,
            cache_hit=hit,
            extra={"key": key, "arch": self._nvrtc_target()[0], "vector_width": width},
        )

    def run_reduction(
        self,
        cr: CompiledKernel,
        inputs: Sequence[Any],
        shape: tuple[int, ...],
        axis: int | None,
    ) -> Any:
        plan: _ReductionPlan = cr.handle
        aligned = plan.aligns is not None and all(
            x.data.ptr % a == 0 for x, a in zip(inputs, plan.aligns, strict=True)
        )
        steps = plan.steps.get((shape, axis, aligned)) or plan.prepare(shape, axis, aligned)
        try:
            if self._only_device or self.cp.cuda.runtime.getDevice() == self.index:
                return plan.run(steps, inputs)
            with self._dev:
                return plan.run(steps, inputs)
        except self.cp.cuda.driver.CUDADriverError as exc:
            raise BackendError(
                f"CUDA reduction {cr.extra.get('key', '')[:8]} failed: {exc}", where=self.name
            ) from exc

    # ---- NVRTC and the module cache --------------------------------------------------------
    def _nvrtc_target(self) -> tuple[str, bool, str]:
        """(``--gpu-architecture`` value, whether it gives a cubin, NVRTC version). A GPU
        newer than NVRTC gets PTX for the newest architecture NVRTC knows (the driver
        compiles it at load time)."""
        if self._target is None:
            from cupy.cuda import nvrtc

            major, minor = (int(x) for x in (self.info.extra.get("cc") or "0.0").split("."))
            cc = major * 10 + minor
            try:
                archs = sorted(int(a) for a in nvrtc.getSupportedArchs())
            except Exception:  # older CuPy: assume NVRTC knows the GPU
                archs = [cc]
            version = ".".join(str(v) for v in nvrtc.getVersion())
            if cc in archs and hasattr(nvrtc, "getCUBIN"):
                self._target = (f"sm_{cc}", True, version)
            else:
                known = [a for a in archs if a <= cc] or archs[:1]
                self._target = (f"compute_{known[-1]}", False, version)
        return self._target

    def _module(self, source: str, what: str, native: bool = False) -> tuple[Any, bool, str]:
        """The loaded module for ``source``: from this device's table, else the kernel
        cache (memory, then disk), else NVRTC. Returns (module, cache hit, key).
        ``native``: the user wrote the source (compile errors say so)."""
        arch, cubin, version = self._nvrtc_target()
        key = make_key(source, "cuda", arch, version, " ".join(_nvrtc_options(arch)))
        module = self._modules.get(key)
        if module is not None:
            return module, True, key
        payload = CACHE.get("cuda", key)
        module = self._load(payload) if payload is not None else None
        hit = module is not None
        if module is None:
            payload = self._nvrtc(source, what, arch, cubin, version, native)
            CACHE.put("cuda", key, payload)
            module = self._load(payload)
            if module is None:
                raise BackendError(
                    f"the CUDA driver could not load the code compiled for {what!r}",
                    where=self.name,
                )
        self._modules[key] = module
        return module, hit, key

    def _load(self, payload: bytes) -> Any:
        """A cupy Module from a cubin/PTX, or None if the driver refuses it (a stale or
        foreign cache entry: the caller recompiles)."""
        from cupy.cuda import function

        module = function.Module()
        try:
            with self._dev:
                module.load(payload)
        except self.cp.cuda.driver.CUDADriverError:
            return None
        return module

    def _nvrtc(
        self, source: str, what: str, arch: str, cubin: bool, version: str, native: bool = False
    ) -> bytes:
        from cupy.cuda import nvrtc

        prog = nvrtc.createProgram(source, f"{_c_name(what)}.cu", [], [])
        try:
            try:
                nvrtc.compileProgram(prog, list(_nvrtc_options(arch)))
            except nvrtc.NVRTCError as exc:
                log = nvrtc.getProgramLog(prog)
                fix = (
                    "fix the CUDA source (NVRTC's line numbers are the source's own)"
                    if native
                    else "this is a vgpu_nb bug (or a limit of NVRTC): please report it with "
                    "kernel.source('cuda'); meanwhile run the kernel on another device"
                )
                raise KernelCompileError(
                    _compile_message(what, source, log, native),
                    where=f"{self.name}, NVRTC {version}, {arch}",
                    fix=fix,
                ) from exc
            return nvrtc.getCUBIN(prog) if cubin else nvrtc.getPTX(prog).encode() + b"\0"
        finally:
            nvrtc.destroyProgram(prog)

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


# ---- kernel-language helpers ----------------------------------------------------------------
def _nvrtc_options(arch: str) -> tuple[str, ...]:
    """NVRTC flags: the device's architecture, C++17, IEEE division/sqrt (no fast math)."""
    return (f"--gpu-architecture={arch}", "-std=c++17")


def _c_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text) or "kernel"


def _compile_message(what: str, source: str, log: str, native: bool = False) -> str:
    """NVRTC's log, plus the source lines it points at (``name.cu(12): error: ...``)."""
    lines = source.splitlines()
    shown: list[str] = []
    for m in re.finditer(r"\((\d+)\): (?:error|catastrophic error)", log):
        k = int(m.group(1))
        if 1 <= k <= len(lines) and f"{k:5d} |" not in "".join(shown):
            shown.append(f"{k:5d} | {lines[k - 1]}")
    code = "CUDA source of" if native else "CUDA code generated for"
    msg = f"NVRTC could not compile the {code} {what!r}:\n{log.strip()}"
    if shown:
        msg += ("\nsource:\n" if native else "\ngenerated source:\n") + "\n".join(shown)
    return msg


#: int32 scalars by value: NumPy scalar creation is the slowest step of a launch
_INT32: dict[int, np.int32] = {}


def _int32(v: int) -> np.int32:
    """``np.int32(v)``, remembered in :data:`_INT32` (bounded)."""
    if len(_INT32) > 4096:
        _INT32.clear()
    r = _INT32[v] = np.int32(v)
    return r


class _ReductionPlan:
    """What :meth:`CudaDevice.run_reduction` needs: the module's functions, the alignment
    each input needs for the vectorised pass (None: no such pass), dtypes, SM count, and
    the launches per (shape, axis, aligned) already resolved (functions, int scalars)."""

    def __init__(
        self,
        funcs: dict[str, Any],
        aligns: tuple[int, ...] | None,
        acc: np.dtype,
        out: np.dtype,
        sms: int,
    ):
        self.funcs, self.aligns, self.acc, self.out, self.sms = funcs, aligns, acc, out, sms
        self.steps: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def prepare(self, shape: tuple[int, ...], axis: int | None, aligned: bool) -> tuple[Any, ...]:
        """(output shape, scratch elements, [(function, grid, block, args)]) with the int
        arguments as NumPy scalars and "inputs"/"partial"/"out" left as placeholders."""
        launches = codegen_cuda.reduction_launches(shape, axis, self.sms, aligned)
        out_shape = () if axis is None or len(shape) == 1 else (shape[1 - axis],)
        calls = []
        for ln in launches:
            args = tuple(
                a if isinstance(a, str) else (np.int32 if a[0] == "i32" else np.int64)(a[1])
                for a in ln.args
            )
            calls.append((self.funcs[ln.entry], ln.grid, ln.block, args))
        if len(self.steps) > 256:
            self.steps.clear()
        steps = self.steps[(shape, axis, aligned)] = (out_shape, launches[0].partials, calls)
        return steps

    def run(self, steps: tuple[Any, ...], inputs: Sequence[Any]) -> Any:
        import cupy

        out_shape, partials, calls = steps
        out = cupy.empty(out_shape, self.out)
        scratch = cupy.empty(partials, self.acc) if partials else out
        for func, grid, block, template in calls:
            args: list[Any] = []
            for a in template:
                if type(a) is not str:
                    args.append(a)  # an int scalar
                elif a == "inputs":
                    args.extend(inputs)
                else:
                    args.append(scratch if a == "partial" else out)
            func(grid, block, tuple(args))
        return out


def _make_launcher(
    gen: codegen_cuda.GeneratedKernel, func: Any
) -> Callable[[tuple[int, ...], Sequence[Any]], None]:
    """A Python function ``launch(domain, args)`` specialised for one kernel's parameter
    list, built from source so that a launch is straight-line code: unpack the arguments,
    look up the grid and the int32 scalars (memoised: creating a NumPy scalar costs more
    than the rest of the launch), call ``func(grid, block, args)``."""
    body = ["def launch(domain, args):"]
    names = [f"a{k}" for k in range(len(gen.params))]
    if names:
        body.append(f"    {', '.join(names)}, = args")
    body += [
        "    cfg = configs.get(domain)",
        "    if cfg is None:",
        "        cfg = configure(domain)",
    ]
    call = ["cfg[2]", "cfg[3]"] if gen.ndim == 2 else ["cfg[2]"]
    for k, (p, dims) in enumerate(zip(gen.params, gen.shape_dims, strict=True)):
        if p.is_array:
            body.append(f"    b{k}, s{k} = a{k}")
            call.append(f"b{k}")
            call += [f"(ints.get(s{k}[{d}]) or int32(s{k}[{d}]))" for d in dims]
        else:
            call.append(f"a{k}")
    body.append(f"    func(cfg[0], cfg[1], ({', '.join(call)},))")

    configs: dict[tuple[int, ...], tuple[Any, ...]] = {}

    def configure(domain: tuple[int, ...]) -> tuple[Any, ...]:
        """(grid, block, n0[, n1]) for a domain, memoised (a few hundred at most)."""
        if len(configs) > 256:
            configs.clear()
        if gen.ndim is None:  # no vg.tid(): one thread per point, launched flat
            total = domain[0] if len(domain) == 1 else domain[0] * domain[1]
            if total >= 2**31:
                raise too_big(total)
            dims: tuple[int, ...] = (total,)
        else:
            if len(domain) != gen.ndim:
                raise UnsupportedOnBackend(
                    f"a {len(domain)}-D launch of a kernel written for {gen.ndim}-D "
                    f"(vg.tid() gives {gen.ndim} index{'es' if gen.ndim == 2 else ''})"
                )
            dims = domain
        grid, block = codegen_cuda.launch_config(gen.ndim, dims)
        cfg = configs[domain] = (grid, block, *(np.int32(d) for d in dims))
        return cfg

    def too_big(n: int) -> Exception:
        return UnsupportedOnBackend(
            f"a launch of {n} threads: kernels that do not call vg.tid() run one flat launch "
            "of at most 2**31 - 1 threads on CUDA",
            fix="launch fewer threads, or use vg.tid() (each dimension may then reach 2**31 - 1)",
        )

    env: dict[str, Any] = {
        "func": func,
        "configs": configs,
        "configure": configure,
        "ints": _INT32,
        "int32": _int32,
    }
    exec("\n".join(body), env)  # noqa: S102 (our own generated code: no user text in it)
    launch = env["launch"]
    launch.__doc__ = "\n".join(body)  # the generated code, for debugging
    return launch
