"""Device discovery, names and the default device.

Names: ``"numpy"``, ``"numba"``, ``"cuda:N"``, ``"wgpu:N"``; ``"cuda"`` and ``"wgpu"``
mean index 0. WebGPU adapters are ordered real GPUs first (discrete, integrated, then
CPU-emulated), so ``"wgpu"`` is the best adapter on the machine.

The default device is ``"numba"`` (the CPU "virtual GPU", always installed) unless the
environment variable ``VGPU_NB_DEVICE`` names another; ``vg.use(...)`` changes it and
``with vg.device(...):`` changes it for a block (per thread/async task). Discovery is lazy
and cached: importing vgpu_nb imports no GPU library.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from .backends.base import Device, DeviceInfo
from .errors import DeviceUnavailable, UnknownDevice

BACKENDS: tuple[str, ...] = ("numpy", "numba", "cuda", "wgpu")

_lock = threading.RLock()
_infos: dict[str, list[DeviceInfo]] = {}
_open: dict[str, Device] = {}
_default_name = os.environ.get("VGPU_NB_DEVICE", "numba")
_scoped: contextvars.ContextVar[Device | None] = contextvars.ContextVar("vg_device", default=None)


def _module(backend: str) -> Any:
    return importlib.import_module(f"vgpu_nb.backends.{backend}_backend")


def discover(backend: str) -> list[DeviceInfo]:
    """Rows for one backend (cached after the first call)."""
    with _lock:
        if backend not in _infos:
            try:
                _infos[backend] = list(_module(backend).discover())
            except Exception as exc:  # discovery must never take the whole table down
                _infos[backend] = [
                    DeviceInfo(
                        name=backend,
                        backend=backend,
                        adapter="?",
                        kind="?",
                        available=False,
                        why_not=f"discovery failed: {exc!r}",
                    )
                ]
        return _infos[backend]


def all_infos() -> list[DeviceInfo]:
    return [info for b in BACKENDS for info in discover(b)]


def devices() -> Any:
    """A pandas DataFrame with one row per device, available or not (with ``why_not``);
    once ``vg.calibrate()`` has run on this machine, also its measured peaks (read GB/s,
    f32 GFLOPS, launch µs)."""
    import pandas as pd

    rows = []
    for i in all_infos():
        rows.append(
            {
                "device": i.name,
                "backend": i.backend,
                "adapter": i.adapter,
                "kind": i.kind,
                "memory_GiB": round(i.memory_bytes / 2**30, 1) if i.memory_bytes else None,
                "compute_units": i.compute_units,
                "available": i.available,
                "why_not": i.why_not or "",
            }
        )
    from .scheduler.calibration import cached

    cals = {row["device"]: cached(row["device"]) for row in rows}
    if any(cals.values()):  # calibrated peaks, once vg.calibrate() has measured this machine
        for row in rows:
            cal = cals[row["device"]]
            row["GB/s"] = round(cal.read_gbps, 1) if cal else None
            row["GFLOPS"] = round(cal.gflops, 1) if cal else None
            row["launch_us"] = round(cal.launch_us, 1) if cal else None
    df = pd.DataFrame(rows).set_index("device")
    df["compute_units"] = df["compute_units"].astype("Int64")
    return df


def _canonical(name: str) -> tuple[str, str]:
    """``"CUDA"`` → ("cuda", "cuda:0"); validates the backend part."""
    key = name.strip().lower()
    backend, _, idx = key.partition(":")
    if backend not in BACKENDS:
        raise UnknownDevice(
            f"unknown device {name!r}",
            fix=f"use one of {', '.join(BACKENDS)} (with ':N' for cuda/wgpu); "
            "vg.devices() lists what this machine has",
        )
    if backend in ("numpy", "numba"):
        if idx not in ("", "0"):
            raise UnknownDevice(f"unknown device {name!r}", fix=f"use {backend!r}")
        return backend, backend
    if idx and not idx.isdigit():
        raise UnknownDevice(f"unknown device {name!r}", fix=f"use {backend}:0, {backend}:1, …")
    return backend, f"{backend}:{idx or 0}"


def get_device(spec: str | Device | None = None) -> Device:
    """Resolve a device spec (name, Device, or None for the current default)."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        scoped = _scoped.get()
        if scoped is not None:
            return scoped if scoped is not _AUTO else get_device(HOME)
        spec = _default_name
    if spec == "auto":  # (new arrays, and code that needs one device: host memory)
        spec = HOME
    if not isinstance(spec, str):
        raise UnknownDevice(
            f"device must be a name like 'numba' or 'cuda:0', got {spec!r}",
            fix="vg.devices() lists the names of this machine's devices",
        )
    backend, name = _canonical(spec)
    with _lock:
        dev = _open.get(name)
        if dev is not None:
            return dev
        infos = discover(backend)
        match = [i for i in infos if i.name == name]
        if not match:
            have = ", ".join(i.name for i in infos if i.available) or "none"
            if all(not i.available for i in infos) and infos:
                raise DeviceUnavailable(
                    f"device {spec!r} is not available: {infos[0].why_not}",
                    fix="vg.devices() shows what is usable here",
                )
            raise UnknownDevice(
                f"device {spec!r} does not exist on this machine (available {backend} "
                f"devices: {have})",
                fix="vg.devices() lists every device",
            )
        info = match[0]
        if not info.available:
            raise DeviceUnavailable(
                f"device {spec!r} is not available: {info.why_not}",
                fix="vg.devices() shows what is usable here",
            )
        dev = _module(backend).open_device(info)
        _open[name] = dev
        return dev


def use(spec: str | Device) -> Device:
    """Set the default device for this session (validated now, not at first use).
    ``vg.use("auto")`` lets the scheduler place every op (see :mod:`vgpu_nb.scheduler`);
    new arrays are then made in host memory (the :data:`HOME` device) and move to
    wherever the scheduler sends their work. Returns the device new arrays go to."""
    global _default_name
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        _default_name = "auto"
        _count_auto()
        return get_device(HOME)
    dev = get_device(spec)
    _default_name = dev.name
    _count_auto()
    return dev


#: where new arrays are made when the default device is "auto": host memory
HOME = "numba"
#: [n]: how many "auto" settings are in force (the default, plus open with-blocks). The
#: launch fast paths read it: 0 means no op anywhere needs to ask the scheduler.
AUTO = [1 if _default_name == "auto" else 0]
_blocks = [0]


def _count_auto() -> None:
    AUTO[0] = (_default_name == "auto") + _blocks[0]


class _Auto:
    """The value of a ``with vg.device("auto"):`` block."""

    def __repr__(self) -> str:
        return "<vg.device auto>"


_AUTO = _Auto()


def auto_requested(spec: Any = None) -> bool:
    """True if ``spec`` (an op's ``device=``) or, for None, the default device in force here
    is ``"auto"``."""
    if spec is not None:
        return isinstance(spec, str) and spec == "auto"
    scoped = _scoped.get()
    if scoped is not None:
        return scoped is _AUTO
    return _default_name == "auto"


def default_device() -> Device:
    return get_device(None)


@contextlib.contextmanager
def device(spec: str | Device) -> Iterator[Device]:
    """``with vg.device("wgpu"):`` — default device for the block only (``"auto"``: the
    scheduler places the block's ops; the block yields the device new arrays go to)."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        token = _scoped.set(_AUTO)  # type: ignore[arg-type]
        with _lock:
            _blocks[0] += 1
            _count_auto()
        try:
            yield get_device(HOME)
        finally:
            _scoped.reset(token)
            with _lock:
                _blocks[0] -= 1
                _count_auto()
        return
    token = _scoped.set(get_device(spec))
    try:
        yield _scoped.get()  # type: ignore[misc]
    finally:
        _scoped.reset(token)
