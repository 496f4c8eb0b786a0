"""The user-facing kernel language: ``@vg.kernel``, ``@vg.func``, ``@vg.reduction``.

Decisions (a CuPy / Numba / Warp user would ask):

* **Compiled lazily, once per device**: the first launch (or ``.source()``/``.compile()``)
  parses the function (like Numba), so a kernel may use ``@vg.func`` s defined below it.
  Global constants are frozen at that moment. Kernels are monomorphic (every parameter is
  annotated), so there is one compiled program per device.
* **Where a launch runs**: ``k[n](args)`` runs on the device of its array arguments (they
  must all live on one device: :class:`~vgpu_nb.errors.DeviceMismatch` otherwise, arrays
  never move implicitly); a kernel without array arguments runs on the default device.
  ``k.launch(n, *args, device=...)`` names the device; ``device="auto"`` (or the default
  device ``"auto"``, ``vg.use("auto")``) lets the scheduler choose, and it moves the
  arrays there (:mod:`vgpu_nb.scheduler.auto`).
* **Arguments are checked, not coerced**: an array must be a ``vg.Array`` of exactly the
  annotated dtype and dimensions (``x.astype(vg.f32)`` converts explicitly); Python
  numbers convert to a scalar parameter's type if they fit (a float for an int parameter
  is an error).
* **Launches are asynchronous** on GPUs, like CuPy; results are read by ``y.numpy()``.
  ``k.launch(...)`` returns a :class:`LaunchRecord` whose times resolve when read.
* **Cost**: flops and bytes per thread come from the IR (loops over shapes or scalar
  arguments count exactly; data-dependent loops count one iteration and are flagged
  ``estimated``) unless given: ``@vg.kernel(flops=..., bytes=...)`` (per thread).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import scheduler as _SCHED
from ..array import Array, _Spilled
from ..backends.base import CompiledKernel, Device
from ..devices import AUTO, auto_requested, default_device, get_device
from ..dtypes import ArrayType, DType, as_dtype, bool_, i64
from ..errors import (
    AxisOutOfRange,
    CannotSplit,
    DeviceMismatch,
    KernelSyntaxError,
    KernelTypeError,
    ShapeMismatch,
    UnsupportedOnBackend,
)
from ..memory.manager import _now
from ..memory.stream import streaming
from ..scheduler import auto as _auto
from ..scheduler import current_policy as _current_policy
from ..scheduler import partition as _partition
from ..scheduler.auto import stay as _auto_stay
from ..scheduler.auto import timed as _auto_timed
from ..telemetry import BUS, recorded
from ..telemetry.records import LaunchRecord, OpRecord
from ..telemetry.runs import CLOCK_EVERY, RUNS, TIME_EVERY
from ..telemetry.runs import MAX_COUNT as _RUN_MAX
from ..telemetry.runs import MAX_SPAN_S as _RUN_SPAN
from . import builtins as kbuiltins
from . import frontend, ir
from . import trace as _trace
from .trace import MAX_THREADS, Trace

#: source(): languages accepted as the names of their backends
_LANGS = {"wgsl": "wgpu", "python": "numpy"}

_INT_LIMITS = {
    "i32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u64": (0, 2**64 - 1),
}
_MAX_DIM = 2**31 - 1
#: auto splits (vg.scheduler.split = True) only launches and reductions at least this big
SPLIT_MIN = 1 << 20


# ---- argument checking -----------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    name: str
    array: bool
    dtype: DType
    ndim: int
    np_type: Any


def _specs(fn: ir.Function) -> tuple[_Spec, ...]:
    out = []
    for p in fn.params:
        t = p.type
        if isinstance(t, ArrayType):
            out.append(_Spec(p.name, True, t.dtype, t.ndim, None))
        else:
            out.append(_Spec(p.name, False, t, 0, t.np.type))
    return tuple(out)


def _domain(
    value: Any, ndim: int | None, where: str, fn: ir.Function | None = None
) -> tuple[int, ...]:
    """``n`` or ``(ny, nx)`` → a tuple of ints, checked against the kernel's vg.tid()."""
    dims = tuple(value) if isinstance(value, tuple | list) else (value,)
    try:
        dims = tuple(int(operator_index(d)) for d in dims)
    except TypeError as exc:
        raise KernelTypeError(
            f"launch domain must be an int or a tuple of 2 ints, got {value!r}",
            fix="k[n](...) or k[(ny, nx)](...)",
        ) from exc
    if not 1 <= len(dims) <= 2:
        raise KernelTypeError(f"launch domains are 1-D or 2-D, got {len(dims)}-D ({value!r})")
    if ndim is not None and len(dims) != ndim:
        use = "i = vg.tid()" if ndim == 1 else "i, j = vg.tid()"
        raise KernelTypeError(
            f"{where} uses {use} ({ndim}-D) but was launched over a {len(dims)}-D domain {value!r}",
            fix="k[n](...) for 1-D kernels, k[(ny, nx)](...) for 2-D ones",
            **(frontend.use_site(fn, "tid") if fn is not None else {}),
        )
    for d in dims:
        if d < 0 or d > _MAX_DIM:
            raise KernelTypeError(
                f"launch dimension {d} is out of range [0, 2**31)",
                fix="split the launch, or loop inside the kernel",
            )
    return dims


def operator_index(v: Any) -> int:
    if isinstance(v, Array):
        return int(v)
    import operator

    return operator.index(v)


class Kernel:
    """A ``@vg.kernel`` function. Launch with ``k[n](args)`` / ``k[(ny, nx)](args)`` or
    ``k.launch(n, *args, device=...)``; ``k.source(backend)`` shows the generated code."""

    def __init__(
        self,
        pyfunc: Callable[..., Any],
        *,
        flops: float | None = None,
        bytes: float | None = None,  # noqa: A002  (the user-facing name)
    ):
        if not inspect.isfunction(pyfunc):
            raise KernelSyntaxError(
                f"@vg.kernel needs a def function, got {type(pyfunc).__name__}",
                fix="decorate a def statement",
            )
        functools.update_wrapper(self, pyfunc)  # type: ignore[arg-type]
        self.pyfunc = pyfunc
        self.flops, self.bytes = flops, bytes
        self._ir: ir.Function | None = None
        self._specs: tuple[_Spec, ...] = ()
        self._compiled: dict[Device, CompiledKernel] = {}
        self._direct: dict[Device, Callable[[tuple[int, ...], Any], None]] = {}
        self._launchers: dict[Any, _Launch] = {}
        self._fast: Callable[[tuple[Any, ...]], Any] = lambda args: None
        self._tel: tuple[str, str, float, float] | None = None  # (see the ir property)

    def __repr__(self) -> str:
        return f"<vg.kernel {self.__name__}>"

    @property
    def ir(self) -> ir.Function:
        """The typed IR (parsed on first use)."""
        if self._ir is None:
            fn = frontend.parse_kernel(self.pyfunc)
            self._specs = _specs(fn)  # (the user's parameter names, for messages)
            self._fast = _fast_checker(self._specs)
            ir.sanitize(fn)
            self._ir = fn
            c = ir.cost(fn)
            if not c.estimated or (self.flops is not None and self.bytes is not None):
                # the per-thread cost does not depend on the arguments: recorded launches
                # need no cost analysis (telemetry's fast path)
                dts = "/".join(sorted({s.dtype.name for s in self._specs if s.array}))
                self._tel = (
                    self.__name__, dts,
                    self.flops if self.flops is not None else c.flops,
                    self.bytes if self.bytes is not None else c.bytes,
                )  # fmt: skip
        return self._ir

    # ---- code -------------------------------------------------------------------------
    def source(self, backend: str | Device = "numba") -> str:
        """The generated code for ``backend`` ("numpy", "numba", "cuda", "wgpu" or a
        device; the languages "python", "wgsl" name them too). Works without the device:
        generating code needs no GPU."""
        fn = self.ir
        if isinstance(backend, Device):
            return backend.kernel_source(fn)
        name = _LANGS.get(n := backend.split(":")[0].lower(), n)
        if name in ("numba", "numpy"):
            from . import codegen_numba

            return codegen_numba.kernel_source(fn, "numba" if name == "numba" else "python")
        if name == "cuda":
            from . import codegen_cuda

            return codegen_cuda.kernel_source(fn)
        if name == "wgpu":
            from . import codegen_wgsl

            return codegen_wgsl.kernel_source(fn, codegen_wgsl.ALL_FEATURES).code
        raise KernelTypeError(
            f"unknown backend {backend!r} for source()", fix="use numpy, numba, cuda or wgpu"
        )

    def compile(self, device: str | Device | None = None) -> CompiledKernel:
        """Compile for ``device`` now (launches do it on first use)."""
        return self._compile(get_device(device))

    def _compile(self, dev: Device) -> CompiledKernel:
        ck = self._compiled.get(dev)
        if ck is None:
            fn = self.ir
            why = dev.kernel_unsupported(fn)
            if why:
                raise UnsupportedOnBackend(
                    f"kernel {self.__name__!r} cannot run on {dev.name}: {why}",
                    where=frontend.format_site(_culprit(fn, why)),
                    fix="launch it on another device (move the arrays with x.to(...))",
                )
            ck = dev.compile_kernel(fn)
            self._compiled[dev] = ck
            self._direct[dev] = dev.fast_launcher(ck)
        return ck

    # ---- launching ----------------------------------------------------------------------
    def __getitem__(self, domain: Any) -> _Launch:
        try:
            return self._launchers[domain]  # the common case: a domain seen before
        except (KeyError, TypeError):  # new, or unhashable (a list)
            pass
        hit = _Launch(self, _domain(domain, self.ir.ndim, f"kernel {self.__name__!r}", self.ir))
        if isinstance(domain, int | tuple):
            if len(self._launchers) >= 64:
                self._launchers.clear()
            self._launchers[domain] = hit
        return hit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise KernelTypeError(
            f"a kernel is launched over a domain: {self.__name__}[n](...) or "
            f"{self.__name__}.launch(n, ...)",
            fix="give the number of threads in brackets, e.g. saxpy[x.size](2.0, x, y)",
        )

    def launch(
        self, domain: Any, *args: Any, device: str | Device | None = None, split: bool = False
    ) -> LaunchRecord:
        """Launch and return its :class:`LaunchRecord` (device time resolves when read).
        ``split=True`` spreads it over several devices (:mod:`vgpu_nb.scheduler.partition`)."""
        dims = _domain(domain, self.ir.ndim, f"kernel {self.__name__!r}", self.ir)
        if split:
            return self._run_split(dims, args, force=True, record=True)  # type: ignore[return-value]
        return self._run(dims, args, device, record=True)  # type: ignore[return-value]

    def trace(self, domain: Any, *args: Any, max_threads: int | None = MAX_THREADS) -> Trace:
        """Run the kernel over ``domain`` (as ``k[domain]``) on the NumPy backend, thread by
        thread, recording which thread reads and writes which element of each array: a
        :class:`~vgpu_nb.kernel.trace.Trace` (``.reads``, ``.writes``, ``.score()``,
        ``.plot()``). The arrays' data is copied to the host first: **the arguments are
        not modified** (the traced run's results are in ``trace.arrays``). Arguments are
        checked as a launch checks them; more than ``max_threads`` threads raises
        ``vg.errors.TraceTooLarge`` (``None``: no limit). See :mod:`vgpu_nb.kernel.trace`."""
        return _trace.run(self, domain, args, max_threads)

    def _args(
        self, args: Sequence[Any], same_device: bool = True, native: bool = True
    ) -> tuple[list[Any], Device | None]:
        specs = self._specs
        if len(args) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise KernelTypeError(
                f"kernel {self.__name__}({names}) takes {len(specs)} argument"
                f"{'s' if len(specs) != 1 else ''}, got {len(args)}",
                fix=f"launch it as {self.__name__}[n]({names})",
                **frontend.signature_site(self.pyfunc),
            )
        out: list[Any] = []
        dev: Device | None = None
        for s, a in zip(specs, args):  # noqa: B905  (lengths checked above)
            if s.array:
                if not isinstance(a, Array):
                    self._bad_arg(s, a)
                if a.dtype is not s.dtype or len(a.shape) != s.ndim:
                    self._bad_arg(s, a)
                if dev is None:
                    dev = a.device
                elif a.device is not dev and same_device:
                    raise DeviceMismatch(
                        f"kernel {self.__name__!r}: array {s.name!r} is on {a.device.name} "
                        f"but earlier arrays are on {dev.name}",
                        fix=f"move it explicitly: {s.name} = {s.name}.to({dev.name!r})",
                    )
                if native:  # (reading _buf brings a spilled array back)
                    out.append((a._buf, a.shape))
                    a._st.last = _now()  # LRU: a use
            else:
                out.append(self._scalar(s, a))
        return out, dev

    def _scalar(self, s: _Spec, a: Any) -> Any:
        t = s.dtype
        if isinstance(a, Array) or isinstance(a, np.ndarray):
            self._bad_arg(s, a)
        if t is bool_:
            if not isinstance(a, bool | np.bool_ | int | np.integer):
                self._bad_arg(s, a)
            return np.bool_(a)
        if t.is_float:
            if not isinstance(a, float | int | np.floating | np.integer) or isinstance(a, bool):
                self._bad_arg(s, a)
            return s.np_type(a)
        if not isinstance(a, int | np.integer) or isinstance(a, bool):
            self._bad_arg(s, a)
        lo, hi = _INT_LIMITS[t.name]
        if not lo <= int(a) <= hi:
            self._bad_arg(s, a, f"{a} does not fit in {t.name}")
        return s.np_type(a)

    def _bad_arg(self, s: _Spec, a: Any, why: str | None = None) -> None:
        want = f"vg.{s.dtype.name}[{', '.join(':' * s.ndim)}]" if s.array else f"vg.{s.dtype}"
        if isinstance(a, Array):
            got = f"a {a.ndim}-D {a.dtype.name} vg.Array"
        elif isinstance(a, np.ndarray):
            got = f"a NumPy array ({a.dtype}, {a.ndim}-D)"
        else:
            got = f"{type(a).__name__} {a!r}"
        if s.array and isinstance(a, np.ndarray):
            fix = f"wrap it: vg.asarray({s.name}, dtype=vg.{s.dtype.name}, device=...)"
        elif s.array and isinstance(a, Array) and a.dtype is not s.dtype:
            fix = f"convert explicitly: {s.name}.astype(vg.{s.dtype.name})"
        else:
            fix = f"pass {want}"
        raise KernelTypeError(
            f"argument {s.name!r} of kernel {self.__name__!r} must be {want}, got {got}"
            + (f" ({why})" if why else ""),
            fix=fix,
            **frontend.signature_site(self.pyfunc, s.name),
        )

    def _run(
        self,
        dims: tuple[int, ...],
        args: Sequence[Any],
        device: str | Device | None,
        record: bool = False,
    ) -> LaunchRecord | None:
        fn = self.ir
        if device == "auto" or (device is None and AUTO[0] and auto_requested()):
            if not _auto.inside():
                return self._run_auto(dims, args, record)
            device = None
        if any(type(a) is _Spilled for a in args):
            done = self._run_streamed(dims, args, device)
            if done:
                return None
        native, dev = self._args(args)
        if device is not None and device != "auto":
            want = get_device(device)
            if dev is not None and dev is not want:
                raise DeviceMismatch(
                    f"kernel {self.__name__!r} launched on {want.name} but its arrays are "
                    f"on {dev.name}",
                    fix=f"move them first: x = x.to({want.name!r})",
                )
            dev = want
        elif dev is None:
            dev = default_device()
        fresh = dev not in self._compiled
        ck = self._compile(dev)
        if not (record or BUS.active):
            if math.prod(dims):
                dev.launch_kernel(ck, dims, native)
            return None
        stop = dev.start_timer()
        t0 = time.perf_counter()
        if math.prod(dims):
            dev.launch_kernel(ck, dims, native)
        host = time.perf_counter() - t0
        rec = self._record(fn, dev, dims, args, host, ck, fresh)
        rec._device_timer = stop() if stop is not None else None
        BUS.emit(rec)
        return rec

    def _run_auto(
        self, dims: tuple[int, ...], args: Sequence[Any], record: bool, may_split: bool = True
    ) -> LaunchRecord | None:
        """``device="auto"``: the scheduler picks the device and moves the arrays there."""
        self._args(args, same_device=False, native=False)  # (precise errors, nothing moved)
        arrays = [a for s, a in zip(self._specs, args, strict=True) if s.array]
        if (
            may_split
            and _SCHED.split
            and math.prod(dims) >= SPLIT_MIN
            and self._splittable(dims, args) is None
        ):
            return self._run_split(dims, args, force=False, record=record)
        work = self._work(dims, args, arrays)
        return _auto.run(work, _current_policy(), lambda d: self._run(dims, args, d, record))

    def _work(self, dims: tuple[int, ...], args: Sequence[Any], arrays: list[Array]) -> Any:
        fn = self.ir
        return _auto.Work(
            self.__name__,
            (self, math.prod(dims).bit_length()),
            lambda: self._cost(dims, args)[:2],
            arrays,
            lambda d: d.kernel_unsupported(fn),
            language=True,
            latency="enqueue_us",
        )

    def _splittable(self, dims: tuple[int, ...], args: Sequence[Any]) -> str | None:
        """Why this launch cannot be split, or None if it can."""
        from ..ops.streamed import tid_indexed

        if len(dims) != 1:
            return "it is a 2-D launch"
        ok = tid_indexed(self.ir)
        if ok is None:
            return "it uses vg.tid() for more than indexing its arrays x[i]"
        for s, a in zip(self._specs, args, strict=True):
            if s.array and (s.name not in ok or a.ndim != 1 or a.shape[0] != dims[0]):
                return (f"array {s.name!r} is not indexed only as {s.name}[i] (i = vg.tid()) "
                        "over the launch's length")  # fmt: skip
        return None

    def _run_split(
        self, dims: tuple[int, ...], args: Sequence[Any], force: bool, record: bool = False
    ) -> LaunchRecord | None:
        """Spread the launch over several devices (:mod:`vgpu_nb.scheduler.partition`)."""
        self._args(args, same_device=False, native=False)
        why = self._splittable(dims, args)
        if why:
            if not force:
                return self._run_auto(dims, args, record, may_split=False)
            raise CannotSplit(
                f"kernel {self.__name__!r} cannot be split: {why}",
                fix="launch it without split=True (device='auto' still picks the best device)",
            )
        arrays = [a for s, a in zip(self._specs, args, strict=True) if s.array]
        work = self._work(dims, args, arrays)
        t0 = time.perf_counter()
        written = ir.usage(self.ir).written
        specs = self._specs

        def task(dev: Device, lo: int, hi: int, hosts: list[Any]) -> None:
            m = hi - lo
            ck = self._compile(dev)
            native: list[Any] = []
            back: list[tuple[Any, np.ndarray, DType]] = []
            k = 0
            for s, a in zip(specs, args, strict=True):
                if not s.array:
                    native.append(self._scalar(s, a))
                    continue
                view = hosts[k].view[lo:hi]
                buf = hosts[k].share(dev, lo, hi)
                k += 1
                native.append((buf, (m,)))
                if s.name in written and not dev.host_is_device:
                    back.append((buf, view, s.dtype))
            dev.launch_kernel(ck, (m,), native)
            for buf, view, dt in back:
                dev.download_into(view, buf, dt)
            dev.sync()

        back = [a for s, a in zip(specs, args, strict=True) if s.array and s.name in written]
        _, d, ran = _partition.run(work, dims[0], force, task, lambda parts: None, back=back)
        if not ran:
            return self._run_auto(dims, args, record, may_split=False)
        if not (record or BUS.active):
            return None
        host = time.perf_counter() - t0
        flops, nbytes, estimated = self._cost(dims, args)
        rec = LaunchRecord(
            op=self.__name__, device=d.choice, shape=dims,
            dtype="/".join(sorted({s.dtype.name for s in specs if s.array})),
            bytes=int(nbytes), flops=int(flops), host_s=host, t_start=time.time() - host,
            estimated=estimated,
        )  # fmt: skip
        BUS.emit(rec)
        return rec

    def _cost(self, dims: tuple[int, ...], args: Sequence[Any]) -> tuple[float, float, bool]:
        """(flops, bytes, estimated?) of a launch over ``dims`` with these arguments."""
        env: dict[Any, Any] = {}
        for s, a in zip(self._specs, args):  # noqa: B905
            if s.array:
                for d, n in enumerate(a.shape):
                    env[("shape", s.name, d)] = n
            else:
                env[s.name] = a
        c = ir.cost(self.ir, env)
        threads = math.prod(dims)
        flops = (self.flops if self.flops is not None else c.flops) * threads
        nbytes = (self.bytes if self.bytes is not None else c.bytes) * threads
        return flops, nbytes, c.estimated and (self.flops is None or self.bytes is None)

    def _run_streamed(
        self, dims: tuple[int, ...], args: Sequence[Any], device: str | Device | None
    ) -> bool:
        """Out-of-core launch (array arguments larger than the device budget together):
        chunk by chunk through :mod:`vgpu_nb.ops.streamed`; False when it fits after all."""
        arrays = [a for a in args if isinstance(a, Array)]
        dev = arrays[0].device
        if device is not None and device != "auto" and get_device(device) is not dev:
            return False  # the normal path raises the precise DeviceMismatch
        if any(a.device is not dev for a in arrays) or not streaming(arrays, dev):
            return False
        specs = self._specs
        native: list[Any] = []
        for s, a in zip(specs, args, strict=False):
            if s.array:
                if not isinstance(a, Array) or a.dtype is not s.dtype or a.ndim != s.ndim:
                    self._bad_arg(s, a)
                native.append(a)
            else:
                native.append(self._scalar(s, a))
        if len(native) != len(specs) or len(dims) != 1:
            return False
        from ..ops.streamed import launch

        ck = self._compile(dev)
        c = ir.cost(self.ir)
        n = dims[0]
        dts = "/".join(sorted({a.dtype.name for a in arrays}))
        recorded(
            dev,
            self.__name__,
            dims,
            dts,
            int(c.bytes * n),
            int(c.flops * n),
            lambda: launch(dev, self.ir, ck, n, native, f"kernel {self.__name__}"),
        )
        return True

    def _record(
        self,
        fn: ir.Function,
        dev: Device,
        dims: tuple[int, ...],
        args: Sequence[Any],
        host: float,
        ck: CompiledKernel,
        fresh: bool,
    ) -> LaunchRecord:
        flops, nbytes, estimated = self._cost(dims, args)
        dts = sorted({s.dtype.name for s in self._specs if s.array})
        return LaunchRecord(
            op=self.__name__,
            device=dev.name,
            shape=dims,
            dtype="/".join(dts),
            bytes=int(nbytes),
            flops=int(flops),
            host_s=host,
            t_start=time.time() - host,
            compile_s=ck.compile_s if fresh else 0.0,
            cache_hit=ck.cache_hit if fresh else True,
            estimated=estimated,
        )


def _culprit(fn: ir.Function, why: str) -> dict[str, Any]:
    """The user's line behind a backend's refusal (print(), a 64-bit type), if we can tell."""
    if "print" in why:
        return frontend.use_site(fn, "print")
    from ..dtypes import f64, u64

    for t in (f64, i64, u64):
        if t.name in why or ("float64" in why and t is f64) or ("int64" in why and t is i64):
            return frontend.use_site(fn, t)
    return {}


class _Launch:
    """``k[n]``: a kernel bound to a domain, waiting for its arguments.

    The common case — plain arrays on one device, nobody listening on the bus, already
    compiled there — takes a straight-line path (the kernel's generated argument checker,
    then the backend's launcher): it is what ``k[n](...)`` costs against a raw CuPy
    launch. Anything else (errors included) goes through :meth:`Kernel._run`."""

    __slots__ = ("kernel", "dims", "empty", "key", "big", "run", "left")

    def __init__(self, kernel: Kernel, dims: tuple[int, ...]):
        self.kernel, self.dims = kernel, dims
        #: while telemetry records a run of this launch (vgpu_nb.telemetry.runs): its
        #: device, and the launches before the next timed one
        self.run: Device | None = None
        self.left = 0
        self.empty = math.prod(dims) == 0
        self.key = (kernel, math.prod(dims).bit_length())  # the scheduler's key (auto)
        self.big = math.prod(dims) >= SPLIT_MIN  # (auto may split it: vg.scheduler.split)

    def __call__(self, *args: Any, device: str | Device | None = None, split: bool = False) -> None:
        k = self.kernel
        if split:
            k._run_split(self.dims, args, force=True)
            return
        if device is None and not AUTO[0]:
            hit = k._fast(args)
            if hit is not None:
                launch = k._direct.get(hit[1])
                if launch is not None:
                    if not BUS._subs:
                        if not self.empty:
                            launch(self.dims, hit[0])
                        return
                    if self.run is hit[1]:  # one more launch in this launch's run
                        left = self.left - 1
                        if left:
                            launch(self.dims, hit[0])
                            self.left = left
                            return
                        self._timed(launch, hit[0], hit[1])
                        return
                    tel = k._tel
                    if tel is not None and not self.empty:  # recorded, without the slow path
                        self._recorded(launch, hit[0], hit[1], tel)
                        return
        elif (
            not BUS._subs
            and not (self.big and _SCHED.split)
            and (device == "auto" or (device is None and auto_requested()))
        ):
            # auto, and the decision in use keeps it where its arrays are: one lookup more
            hit = k._fast(args)
            if hit is not None:
                launch = k._direct.get(hit[1])
                if launch is not None:
                    how = _auto_stay(self.key, hit[1])
                    if how == 1:
                        if not self.empty:
                            launch(self.dims, hit[0])
                        return
                    if how == 2:  # a sampled launch: teach the scheduler's history
                        _auto_timed(self.key, hit[1], lambda: launch(self.dims, hit[0]))
                        return
                hit = None  # (its buffers would pin the arrays: the scheduler may move them)
        k._run(self.dims, args, device)

    def _timed(self, launch: Any, native: Any, dev: Device) -> None:
        """Every ``TIME_EVERY``-th launch of a run: timed (on a GPU, now and then, with a
        device timer too), the run's counts brought up to date."""
        runs = RUNS
        if runs.key is not self:  # (ended by another thread meanwhile)
            self.run = None
            launch(self.dims, native)
            return
        self.left = TIME_EVERY
        c = runs.count = runs.count + TIME_EVERY
        if runs.clocks is not None and not runs.nsamp & _CLOCK_MASK:
            stop = dev.start_timer()
            t0 = _perf()
            launch(self.dims, native)
            t1 = _perf()
            runs.clock(stop)
        else:
            t0 = _perf()
            launch(self.dims, native)
            t1 = _perf()
        runs.busy += t1 - t0
        runs.nsamp += 1
        if c >= _RUN_MAX or t1 - runs.first >= _RUN_SPAN:
            runs.flush()

    def _recorded(self, launch: Any, native: Any, dev: Device, tel: Any) -> None:
        """A launch while someone listens begins a run (:mod:`vgpu_nb.telemetry.runs`): the
        next identical launches extend it inline; on a GPU it starts with a device timer."""
        perf = time.perf_counter
        RUNS.flush()  # (the run in progress ends before this launch: a GPU run's clocks too)
        stop = dev.start_timer() if dev.device_clock else None
        t0 = perf()
        launch(self.dims, native)
        t1 = perf()
        RUNS.start(self, dev, tel, self.dims, t0, t1, stop() if stop is not None else None)


_perf = time.perf_counter
_CLOCK_MASK = CLOCK_EVERY // TIME_EVERY - 1  # (of a run's timed launches)


def _fast_checker(specs: tuple[_Spec, ...]) -> Callable[[tuple[Any, ...]], Any]:
    """A generated, straight-line ``check(args) -> (native args, device) | None``: None
    whenever anything is unusual (then the slow path raises the precise error). Arrays
    must be plain, materialised ``vg.Array`` s (pending expressions take the slow path,
    which evaluates them); scalars plain Python or NumPy numbers of an accepted kind."""
    env: dict[str, Any] = {"Array": Array, "now": _now}
    lines = ["def check(args):", f"    if len(args) != {len(specs)}:", "        return None"]
    touch = ["    t = now()"]  # LRU stamps of the arrays (vgpu_nb.memory), once checked
    names = [f"a{k}" for k in range(len(specs))]
    if names:
        lines.append(f"    {', '.join(names)}, = args")
    out, dev = [], None
    for k, s in enumerate(specs):
        a = names[k]
        if s.array:
            env[f"D{k}"] = s.dtype
            lines += [
                f"    if {a}.__class__ is not Array or {a}.dtype is not D{k} or "
                f"len({a}.shape) != {s.ndim}:",
                "        return None",
            ]
            if dev is None:
                dev = f"{a}.device"
                lines.append(f"    dev = {dev}")
            else:
                lines += [f"    if {a}.device is not dev:", "        return None"]
            out.append(f"({a}._buf, {a}.shape)")
            touch.append(f"    {a}._st.last = t")
        else:
            env[f"T{k}"], env[f"M{k}"] = s.np_type, {}
            ok = {"f": "(float, int, T{k})", "i": "(int, T{k})", "u": "(int, T{k})"}.get(
                s.dtype.np.kind, "(bool, T{k})"
            ).format(k=k)
            lines += [f"    if {a}.__class__ not in {ok}:", "        return None"]
            if s.dtype.is_int:
                lo, hi = _INT_LIMITS[s.dtype.name]
                lines += [f"    if not {lo} <= {a} <= {hi}:", "        return None"]
            # NumPy scalar construction costs more than the rest of a launch: memoise
            lines += [
                f"    c{k} = M{k}.get({a})",
                f"    if c{k} is None:",
                f"        c{k} = T{k}({a})",
                f"        if len(M{k}) < 1024:",
                f"            M{k}[{a}] = c{k}",
            ]
            out.append(f"c{k}")
    if dev is None:
        return lambda args: None  # no arrays: the default device decides (slow path)
    lines += touch
    lines.append(f"    return ({', '.join(out)},), dev")
    exec("\n".join(lines), env)  # noqa: S102  (generated from the kernel's signature only)
    return env["check"]


def kernel(
    fn: Callable[..., Any] | None = None,
    *,
    flops: float | None = None,
    bytes: float | None = None,  # noqa: A002
) -> Any:
    """Decorator: ``@vg.kernel`` or ``@vg.kernel(flops=..., bytes=...)`` (per thread)."""
    if fn is None:
        return lambda f: Kernel(f, flops=flops, bytes=bytes)
    return Kernel(fn)


def func(fn: Callable[..., Any]) -> frontend.Func:
    """Decorator: a device function, callable from kernels, reductions and other device
    functions (inlined; no recursion). Parameters may be annotated (arguments convert to
    the annotation) or left generic (specialised on the caller's types)."""
    return frontend.Func(fn)


# ---- reductions -----------------------------------------------------------------------------
class ReductionFunction:
    """A ``@vg.reduction``: ``r(x)`` / ``r(x, y)`` (zip) / ``r(m, axis=1)``.

    Results are ``vg.Array`` s on the inputs' device (0-d for full reductions, like the
    built-ins). ``deterministic=True`` (the default, and currently the only behaviour on
    every backend) gives bit-identical results run to run: each backend reduces in a
    fixed order that depends on the shape only."""

    def __init__(
        self,
        pyfunc: Callable[..., Any],
        identity: Any,
        combine: str | Callable[..., Any],
        post: Callable[..., Any] | None = None,
        deterministic: bool = True,
    ):
        if not inspect.isfunction(pyfunc):
            raise KernelSyntaxError("@vg.reduction needs a def function")
        functools.update_wrapper(self, pyfunc)  # type: ignore[arg-type]
        self.pyfunc = pyfunc
        self.map = frontend.Func(pyfunc)
        b = kbuiltins.lookup(combine) if not isinstance(combine, str) else None
        if b is not None and b.kind in ("py", "math") and b.name in ("min", "max"):
            combine = b.name  # the builtins min / max
        if isinstance(combine, str):
            if combine not in ir.COMBINES:
                raise KernelSyntaxError(
                    f"unknown combine {combine!r}",
                    fix=f"use one of {', '.join(ir.COMBINES)} or a @vg.func of two arguments",
                )
            self.combine: str | frontend.Func = combine
        else:
            self.combine = combine if isinstance(combine, frontend.Func) else frontend.Func(combine)
        self.post: frontend.Func | str | None = None
        if post is not None:
            b = kbuiltins.lookup(post)
            if b is not None and b.kind == "math" and ir.MATH_FUNCS.get(b.name) == 1:
                self.post = b.name  # math.sqrt, vg.exp …: one-argument builtins
            else:
                self.post = post if isinstance(post, frontend.Func) else frontend.Func(post)
        self.identity = identity
        self.deterministic = deterministic
        self._irs: dict[tuple[DType, ...], ir.Reduction] = {}
        self._compiled: dict[tuple[Device, tuple[DType, ...]], CompiledKernel] = {}
        self._nin = len(inspect.signature(pyfunc).parameters)

    def __repr__(self) -> str:
        return f"<vg.reduction {self.__name__}>"

    def specialize(self, dtypes: Sequence[DType]) -> ir.Reduction:
        key = tuple(dtypes)
        red = self._irs.get(key)
        if red is None:
            red = self._build(key)
            self._irs[key] = red
        return red

    def _build(self, dtypes: tuple[DType, ...]) -> ir.Reduction:
        program = frontend._Program()
        src = frontend.Source(self.pyfunc)
        for (pname, ann, anode), dt in zip(
            frontend._signature(src, frontend._globals_of(self.pyfunc)), dtypes, strict=True
        ):
            t = frontend.annotation_type(ann) if ann is not None else dt
            if t is not dt:
                src.error(
                    f"reduction {self.__name__!r}: parameter {pname!r} is annotated {t} but "
                    f"the array is {dt.name}",
                    anode,
                    KernelTypeError,
                    fix=f"convert the array (x.astype({t!r})) or change the annotation",
                )
        m = frontend.specialize(self.map, dtypes, program)
        if m.ret is None:
            src.error(f"reduction {self.__name__!r} must return a value", src.tree)
        acc: DType = m.ret
        comb: str | ir.Function
        if isinstance(self.combine, str):
            comb = self.combine
            if comb in ("and", "or") and acc.is_float:
                raise KernelTypeError(
                    f"combine={comb!r} needs bool or integer values; {self.__name__!r} "
                    f"returns {acc.name}",
                    fix="return a bool (e.g. v > 0) or use min/max",
                )
        else:
            comb = frontend.specialize(self.combine, (acc, acc), program)
            if comb.ret is not acc:
                raise KernelTypeError(
                    f"the combine function {self.combine.__name__!r} must return {acc.name} "
                    f"(the reduction's type), it returns {comb.ret}",
                    fix=f"annotate it: def {self.combine.__name__}(a: vg.{acc.name}, "
                    f"b: vg.{acc.name}) -> vg.{acc.name}",
                )
        post_fn, takes_n, out = None, False, acc
        if isinstance(self.post, str):
            post_fn = _builtin_post(self.post, acc, program)
            out = post_fn.ret  # type: ignore[assignment]
        elif self.post is not None:
            nargs = len(inspect.signature(self.post.pyfunc).parameters)
            if nargs not in (1, 2):
                raise KernelTypeError("post takes (value) or (value, n)")
            takes_n = nargs == 2
            post_fn = frontend.specialize(self.post, (acc, i64) if takes_n else (acc,), program)
            if post_fn.ret is None:
                raise KernelTypeError(f"post function {self.post.__name__!r} must return a value")
            out = post_fn.ret
        ident = self.identity
        if isinstance(ident, Array):
            ident = ident.item()
        try:
            value = acc.np.type(ident).item()
        except (TypeError, ValueError, OverflowError) as exc:
            raise KernelTypeError(
                f"identity {self.identity!r} is not a valid {acc.name}", fix="give a number"
            ) from exc
        name = f"{self.__name__}_" + "_".join(d.name for d in dtypes)
        for f in program.order:
            ir.sanitize(f)
        return ir.Reduction(
            name=name,
            map=m,
            combine=comb,
            identity=ir.Const(acc, value),
            post=post_fn,
            post_takes_n=takes_n,
            inputs=dtypes,
            acc=acc,
            out=out,
            funcs=list(program.order),
        )

    def source(self, backend: str = "numba", dtypes: Sequence[Any] | None = None) -> str:
        """Generated code for ``backend`` and input ``dtypes`` (default: the annotations)."""
        if dtypes is None:
            sig = inspect.signature(self.pyfunc).parameters.values()
            dtypes = [p.annotation for p in sig]
            if any(d is inspect.Parameter.empty for d in dtypes):
                raise KernelTypeError("give dtypes=[...] for an unannotated reduction")
        red = self.specialize([as_dtype(d) for d in dtypes])
        name = _LANGS.get(n := backend.split(":")[0].lower(), n)
        if name in ("numba", "numpy"):
            from . import codegen_numba

            return codegen_numba.reduction_source(red, "numba" if name == "numba" else "python")
        if name == "cuda":
            from . import codegen_cuda

            return codegen_cuda.reduction_source(red)
        if name == "wgpu":
            from . import codegen_wgsl

            shaders = codegen_wgsl.reduction_source(red, codegen_wgsl.ALL_FEATURES)
            return "\n\n".join(s.code for s in shaders)
        raise KernelTypeError(f"unknown backend {backend!r}")

    def __call__(self, *arrays: Any, axis: Any = None, split: bool = False) -> Array:
        if split:
            return self._call_split(arrays, axis, force=True)
        if AUTO[0] and auto_requested():
            if not _auto.inside() and arrays and all(isinstance(a, Array) for a in arrays):
                if (
                    _SCHED.split
                    and axis is None
                    and arrays[0].size >= SPLIT_MIN
                    and all(type(a) is Array for a in arrays)
                ):
                    return self._call_split(arrays, axis, force=False)
                return self._call_auto(arrays, axis)
        return self._call_here(arrays, axis)

    def _call_split(self, arrays: tuple[Any, ...], axis: Any, force: bool) -> Array:
        """Shares on several devices (:mod:`vgpu_nb.scheduler.partition`), partials folded with
        the reduction's own combine and post, as a streamed reduction folds its chunks."""
        from ..ops.streamed import _result, finish_custom, part_reduction

        if axis is not None:
            raise CannotSplit(
                f"reduction {self.__name__!r} cannot be split along an axis",
                fix="split=True works for reductions over all elements (axis=None)",
            )
        if len(arrays) != self._nin or not all(isinstance(a, Array) for a in arrays):
            return self._call_here(arrays, axis)  # (the precise error)
        if any(a.shape != arrays[0].shape for a in arrays):
            return self._call_here(arrays, axis)
        n = arrays[0].size
        if n == 0:
            return self._call_here(arrays, axis)
        dtypes = tuple(a.dtype for a in arrays)
        red = self.specialize(dtypes)
        c = ir.cost(red.map)
        work = _auto.Work(
            self.__name__, (self, dtypes, None, n.bit_length()),
            lambda: ((c.flops + 1) * n, sum(a.nbytes for a in arrays)), arrays,
            lambda d: d.reduction_unsupported(red), language=True,
        )  # fmt: skip

        def task(dev: Device, lo: int, hi: int, hosts: list[Any]) -> np.ndarray:
            m = hi - lo
            cr = part_reduction(self, red, dev)
            bufs = [h.share(dev, lo, hi) for h in hosts]
            return np.asarray(dev.to_numpy(dev.run_reduction(cr, bufs, (m,), None), (), red.acc))

        def combine(parts: list[np.ndarray]) -> np.ndarray:
            return finish_custom(red, np.stack(parts).reshape(1, -1), 1, n)

        t0 = time.perf_counter()
        res, d, ran = _partition.run(work, n, force, task, combine)
        if not ran:
            return self._call_auto(arrays, axis)
        if BUS.active:  # one record for the whole split op, named after all its devices
            flops, nbytes = work.cost()
            host = time.perf_counter() - t0
            dts = "/".join(dt.name for dt in dtypes)
            BUS.emit(OpRecord(self.__name__, d.choice, arrays[0].shape, dts, int(nbytes),
                              int(flops), host, time.time() - host))  # fmt: skip
        return _result(arrays[0].device, np.asarray(res), ())

    def _call_auto(self, arrays: tuple[Array, ...], axis: Any) -> Array:
        """Under ``auto``: the scheduler picks the device (and moves the arrays there)."""
        a0 = arrays[0]
        dtypes = (a0.dtype,) if len(arrays) == 1 else tuple(a.dtype for a in arrays)
        key = (self, dtypes, axis, a0.size.bit_length())

        def work() -> _auto.Work:
            red = self.specialize(dtypes)
            c = ir.cost(red.map)
            n = a0.size
            return _auto.Work(
                self.__name__, key, lambda: ((c.flops + 1) * n, sum(a.nbytes for a in arrays)),
                arrays, lambda d: d.reduction_unsupported(red), language=True, readback=True,
            )  # fmt: skip

        return _auto.route(key, arrays, work, lambda d: self._call_here(arrays, axis), True)

    def _call_here(self, arrays: tuple[Any, ...], axis: Any) -> Array:
        if len(arrays) != self._nin:
            raise KernelTypeError(
                f"reduction {self.__name__!r} takes {self._nin} array"
                f"{'s' if self._nin != 1 else ''}, got {len(arrays)}"
            )
        for a in arrays:
            if not isinstance(a, Array):
                raise KernelTypeError(
                    f"reduction {self.__name__!r} takes vg.Array arguments, got {type(a).__name__}",
                    fix="wrap host data first: vg.asarray(x, device=...)",
                )
        dev = arrays[0].device
        shape = arrays[0].shape
        for a in arrays[1:]:
            if a.device is not dev:
                raise DeviceMismatch(
                    f"reduction {self.__name__!r} got arrays on {dev.name} and {a.device.name}",
                    fix=f"move them explicitly: y = y.to({dev.name!r})",
                )
            if a.shape != shape:
                raise ShapeMismatch(
                    f"reduction {self.__name__!r}: shapes {shape} and {a.shape} differ",
                    fix="zip arrays of the same shape",
                )
        shape2, ax, out_shape = _layout(self.__name__, shape, axis)
        dtypes = tuple(a.dtype for a in arrays)
        red = self.specialize(dtypes)
        length = math.prod(shape2) if ax is None else shape2[ax]
        if math.prod(out_shape) == 0:
            return Array(dev.empty(out_shape, red.out), out_shape, red.out, dev)
        if length == 0:
            return self._empty(red, dev, out_shape)
        if any(type(a) is _Spilled for a in arrays) and streaming(arrays, dev):
            why = dev.reduction_unsupported(red)
            if why:
                raise UnsupportedOnBackend(
                    f"reduction {self.__name__!r} cannot run on {dev.name}: {why}",
                    fix="move the data to another device (x.to('numba'))",
                )
            from ..ops.streamed import reduce_custom

            return reduce_custom(self, arrays, red, shape2, ax, out_shape)
        key = (dev, dtypes)
        cr = self._compiled.get(key)
        if cr is None:
            why = dev.reduction_unsupported(red)
            if why:
                raise UnsupportedOnBackend(
                    f"reduction {self.__name__!r} cannot run on {dev.name}: {why}",
                    fix="move the data to another device (x.to('numba'))",
                )
            cr = dev.compile_reduction(red)
            self._compiled[key] = cr
        bufs = [a._buf if shape2 == a.shape else dev.reshape(a._buf, shape2) for a in arrays]
        t = _now()
        for a in arrays:  # LRU: a use
            a._st.last = t

        def compute() -> Any:
            return dev.run_reduction(cr, bufs, shape2, ax)

        if BUS.active:
            nbytes = sum(a.nbytes for a in arrays) + math.prod(out_shape) * red.out.itemsize
            c = ir.cost(red.map)
            n = math.prod(shape)
            flops = int((c.flops + (1 if red.acc.is_float else 0)) * n)
            dts = "/".join(d.name for d in dtypes)
            buf = recorded(dev, self.__name__, shape, dts, nbytes, flops, compute)
        else:
            buf = compute()
        return Array(buf, out_shape, red.out, dev)

    def _empty(self, red: ir.Reduction, dev: Device, out_shape: tuple[int, ...]) -> Array:
        """Zero elements: ``post(identity)`` (computed by the NumPy backend's code)."""
        from . import codegen_numba

        ns: dict[str, Any] = {}
        exec(compile(codegen_numba.reduction_source(red, "python"), "<empty>", "exec"), ns)  # noqa: S102
        with np.errstate(all="ignore"):
            v = ns["_post"](red.acc.np.type(red.identity.value), 0)
        return Array(dev.full(out_shape, v, red.out), out_shape, red.out, dev)


def _builtin_post(name: str, acc: DType, program: frontend._Program) -> ir.Function:
    """A one-line device function applying the math builtin ``name`` (post=math.sqrt)."""
    t = acc if acc.is_float else ir.true_div_type(acc)
    v: ir.Expr = ir.Var(acc, "v")
    if t is not acc:
        v = ir.Cast(t, v)
    body: list[ir.Stmt] = [ir.Return(0, ir.Math(t, name, (v,)))]
    fn = ir.Function(program.unique(f"post_{name}"), (ir.Param("v", acc),), {"v": acc}, body, t)
    program.order.append(fn)
    return fn


def _layout(
    name: str, shape: tuple[int, ...], axis: Any
) -> tuple[tuple[int, ...], int | None, tuple[int, ...]]:
    """(shape seen by the backend, its axis, result shape) for 1-D/2-D/n-D inputs."""
    nd = len(shape)
    if axis is None:
        return (math.prod(shape),), None, ()
    if not isinstance(axis, int | np.integer) or not -max(nd, 1) <= axis < max(nd, 1):
        raise AxisOutOfRange(
            f"{name}: axis {axis!r} is out of bounds for an array of dimension {nd}",
            fix="use axis=None, 0 or 1",
        )
    axis = int(axis) % max(nd, 1)
    if nd <= 1:
        return (math.prod(shape),), None, ()
    if nd > 2:
        raise AxisOutOfRange(
            f"{name}: axis= on a {nd}-D array is not supported",
            fix="reshape to 2-D so that the axis is first or last",
        )
    return shape, axis, (shape[1 - axis],)


def reduction(
    fn: Callable[..., Any] | None = None,
    *,
    identity: Any = 0,
    combine: str | Callable[..., Any] = "add",
    post: Callable[..., Any] | None = None,
    deterministic: bool = True,
) -> Any:
    """Decorator: ``@vg.reduction(identity=0.0, combine="add", post=None)`` over a map
    function of one or several scalars (one per input array)."""

    def wrap(f: Callable[..., Any]) -> ReductionFunction:
        return ReductionFunction(f, identity, combine, post, deterministic)

    return wrap if fn is None else wrap(fn)


__all__ = ["Kernel", "ReductionFunction", "func", "kernel", "reduction"]
