"""Benchmarks of tiered memory and out-of-core streaming (``vg.memory``), against raw
copies measured in the same process.

Targets (f32; medians of ``--repeat`` runs; sizes from ``--budget`` and ``--disk-gib``):

* ``host_stream``: ``vg.sum`` of a host-tier array 4 × the device budget on cuda (it is
  pinned and streams through two device slots) ≥ 0.8 × the **pinned host→device copy
  bandwidth**: raw ``cudaMemcpyAsync`` of the same bytes, from the array's own pinned
  host buffer, in 64 MiB chunks into one device buffer, one stream, synchronized. On CPU
  devices (context, no target): over the backend's one-pass sum of the same memory (the
  host tier is used in place there, so this is the chunking overhead); on wgpu over its
  own chunked uploads.
* ``disk_stream``: ``vg.sum`` of a disk-tier array (a ``.npy`` in the spill directory,
  ``--disk-gib`` large) ≥ 0.8 × a plain ``np.fromfile`` of that very file (its data
  offset), on numba and cuda. Both read through the **warm page cache** (the file was just
  written; the two contenders run alternately so they see the same cache state);
  ``--drop-caches`` (root only) adds a cold-cache figure: caches dropped before every run.
  Context: a sequential ``pread`` of the file into one reused 64 MiB buffer (the read
  ceiling without np.fromfile's fresh-memory page faults).
* ``spill``: a sequential pipeline over K arrays of S bytes, K·S = 4 × the device budget,
  held in host + device memory, touched in order twice around (every touch brings one
  array back and spills the least recently used one): time ≤ 1.10 × the **transfer-bound
  minimum** = bytes brought back / H2D bandwidth + bytes spilled / D2H bandwidth (both
  from ``vg.memory.stats()`` deltas; bandwidths of raw pinned copies of S bytes measured
  in the same run) + the time of the same ops on resident data. Ops: an in-place
  ``@vg.kernel`` (``x[i] = x[i] * s``) and ``vg.sum``. GPU devices only: on a CPU device a
  device→host spill is a relabel of the same RAM, there is no transfer to bound (skipped
  with that reason). On wgpu the bandwidths are the backend's own ``from_numpy`` /
  ``to_numpy`` (its host tier is not pinned memory).

Every result is checked (``vg.sum`` against NumPy's float64 sum, kernels element-wise).

    python bench/bench_memory.py                                    # cuda:0 + numba, or numba
    python bench/bench_memory.py --budget 64MiB --disk-gib 0.5 --label vm-2core \\
        --out bench/results/memory_vm-2core.json
    python bench/bench_memory.py --devices cuda:0,wgpu:0 --parts spill

Defaults: devices ``cuda:0,numba`` when CUDA is available, else ``numba``; ``--budget``
1 GiB on GPUs, 128 MiB on CPU devices; ``--disk-gib`` 2 with CUDA, else 1; spill
directory: a fresh temporary directory (``--spill-dir`` sets its parent), removed at the
end. Budgets are reset at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

import vgpu_nb as vg  # noqa: E402
from bench.common import machine as machine_info  # noqa: E402
from bench.common import write_json  # noqa: E402
from vgpu_nb.memory import human, parse_size  # noqa: E402
from vgpu_nb.memory import spill_dir as _disk  # noqa: E402
from vgpu_nb.memory.budgets import ram_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MiB, GiB = 1 << 20, 1 << 30
COPY_CHUNK = 64 * MiB  # raw copy baseline: chunk per cudaMemcpyAsync (as the stream's slots)
SUM_RTOL = 1e-4  # f32 accumulation over chunks vs NumPy's float64 sum

#: id → (what, comparison, threshold, unit)
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "host_stream_cuda": ("vg.sum of a host-tier array (4x budget) / pinned H2D", ">=", 0.8, "x"),
    "disk_stream_numba": ("vg.sum of a disk-tier array / np.fromfile of its file", ">=", 0.8, "x"),
    "disk_stream_cuda": ("vg.sum of a disk-tier array / np.fromfile of its file", ">=", 0.8, "x"),
    "spill_cuda": ("pipeline over 4x budget, time over transfer-bound minimum", "<=", 10.0, "%"),
}  # fmt: skip


# ---- timing ----------------------------------------------------------------------------------
def med(ts: list[float]) -> float:
    return statistics.median(ts)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of ``fn()`` (``fn`` synchronizes itself)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(
    contenders: dict[str, Callable[[], Any]],
    repeat: int,
    warmup: int = 1,
    before: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per run of each contender, interleaved so drifts (and the page cache) hit
    all alike; ``before()`` runs untimed before every sample."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeat):
        for k, fn in contenders.items():
            if before is not None:
                before()
            out[k].append(timed(fn))
    return out


def figures(ts: list[float], nbytes: int) -> dict[str, Any]:
    return {
        "times_s": [round(t, 6) for t in ts],
        "median_s": med(ts),
        "min_s": min(ts),
        "GBps": nbytes / med(ts) / 1e9,
    }


def verdict(tid: str, value: float | None) -> dict[str, Any]:
    what, op, thr, unit = TARGETS[tid]
    met = None if value is None else (value >= thr if op == ">=" else value <= thr)
    return {"target_id": tid, "target": f"{op} {thr:g} {unit}", "target_what": what, "met": met}


# ---- devices and data ------------------------------------------------------------------------
def cuda_available() -> bool:
    try:
        vg.get_device("cuda:0")
        return True
    except Exception:  # noqa: BLE001  (no CuPy / no GPU: the cuda parts are skipped)
        return False


def is_cpu(dev: Any) -> bool:
    return bool(dev.host_is_device)


def ctx(dev: Any) -> Any:
    """``with`` the CuPy device of a cuda device (a no-op elsewhere)."""
    if dev.backend != "cuda":
        return contextlib.nullcontext()
    import cupy as cp

    return cp.cuda.Device(int(dev.name.split(":")[1]) if ":" in dev.name else 0)


def data(nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(nbytes // 4, dtype=np.float32)


def exact_sum(h: np.ndarray) -> float:
    return float(np.sum(h, dtype=np.float64))


def check_sum(what: str, got: float, ref: float) -> float:
    err = abs(got - ref) / max(abs(ref), 1e-30)
    if err > SUM_RTOL:
        raise AssertionError(f"{what}: vg.sum {got!r} vs NumPy float64 {ref!r} (rel err {err:.2e})")
    return err


def stats_bytes(dev: Any) -> dict[str, int]:
    """spilled / unspilled bytes of ``dev`` so far, over all its tiers."""
    df = vg.memory.stats()
    if dev.name not in df.index.get_level_values(0):
        return {"spilled": 0, "unspilled": 0, "spills": 0, "unspills": 0}
    d = df.loc[dev.name]
    return {
        "spilled": int(d["spilled_bytes"].sum()),
        "unspilled": int(d["unspilled_bytes"].sum()),
        "spills": int(d["spills"].sum()),
        "unspills": int(d["unspills"].sum()),
    }


def storage(x: Any) -> Any:
    """The array's storage (internal: the spill file path and offset, the pinned host copy)."""
    return x._st


# ---- raw copies (the baselines) --------------------------------------------------------------
class CudaCopier:
    """Raw ``cudaMemcpyAsync`` between pinned host memory and a device buffer, one stream."""

    def __init__(self, dev: Any, dev_bytes: int):
        import cupy as cp

        self.cp, self.rt = cp, cp.cuda.runtime
        with ctx(dev):
            self.dbuf = cp.empty(dev_bytes, np.uint8)
            self.stream = cp.cuda.Stream(non_blocking=True)

    def h2d(self, src: np.ndarray, chunk: int) -> None:
        """All of ``src`` (pinned) into the device buffer, ``chunk`` bytes per copy."""
        rt, base, nb = self.rt, src.ctypes.data, src.nbytes
        for off in range(0, nb, chunk):
            m = min(chunk, nb - off)
            rt.memcpyAsync(self.dbuf.data.ptr, base + off, m, rt.memcpyHostToDevice,
                           self.stream.ptr)  # fmt: skip
        self.stream.synchronize()

    def d2h(self, dst: np.ndarray, chunk: int) -> None:
        rt, base, nb = self.rt, dst.ctypes.data, dst.nbytes
        for off in range(0, nb, chunk):
            m = min(chunk, nb - off)
            rt.memcpyAsync(base + off, self.dbuf.data.ptr, m, rt.memcpyDeviceToHost,
                           self.stream.ptr)  # fmt: skip
        self.stream.synchronize()


def pinned(dev: Any, nbytes: int) -> np.ndarray:
    import cupy as cp

    with ctx(dev):
        mem = cp.cuda.alloc_pinned_memory(nbytes)
    return np.frombuffer(mem, np.uint8, count=nbytes)


def is_pinned(dev: Any, a: np.ndarray) -> bool:
    rt = dev.cp.cuda.runtime
    try:
        return rt.pointerGetAttributes(a.ctypes.data).type == rt.memoryTypeHost
    except Exception:  # noqa: BLE001
        return False


def transfer_bw(dev: Any, nbytes: int, repeat: int) -> dict[str, Any]:
    """H2D and D2H bandwidth of one ``nbytes`` copy (the granularity of an unspill / a
    spill): raw pinned cudaMemcpyAsync on cuda, the backend's own copies elsewhere."""
    out: dict[str, Any] = {"bytes": nbytes}
    if dev.backend == "cuda":
        cop = CudaCopier(dev, nbytes)
        host = pinned(dev, nbytes)
        host[:] = 1
        s = alternate({"h2d": lambda: cop.h2d(host, nbytes), "d2h": lambda: cop.d2h(host, nbytes)},
                      repeat)  # fmt: skip
        out["how"] = "raw cudaMemcpyAsync, cupy.cuda.alloc_pinned_memory host buffer, one copy"
        del cop, host
    else:
        dt = vg.f32
        h = np.ones(nbytes // 4, np.float32)
        buf = dev.from_numpy(h)
        dev.sync()

        def up() -> None:
            dev.from_numpy(h)
            dev.sync()

        s = alternate({"h2d": up, "d2h": lambda: dev.to_numpy(buf, h.shape, dt)}, repeat)
        out["how"] = f"{dev.backend} backend from_numpy / to_numpy (+ sync)"
        del buf
    for k, ts in s.items():
        out[k] = figures(ts, nbytes)
    return out


# ---- 1. streaming a host-tier array ----------------------------------------------------------
def bench_host_stream(dev: Any, budget: int, args: argparse.Namespace) -> dict[str, Any]:
    nbytes = 4 * budget
    vg.memory.configure(device=budget, host=max(ram_bytes() // 2, 2 * nbytes))
    h = data(nbytes, seed=1)
    ref = exact_sum(h)
    x = vg.asarray(h, device=dev)
    del h
    if x.tier != "host":
        raise AssertionError(f"a {human(nbytes)} array landed in the {x.tier} tier, not host")
    st = storage(x)
    err = check_sum(f"host-tier sum on {dev.name}", float(vg.sum(x)), ref)  # warm-up too
    row: dict[str, Any] = {
        "bench": "host_stream",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "device_budget": budget,
        "bytes": nbytes,
        "dtype": "f32",
        "tier": x.tier,
        "max_rel_err": err,
    }
    ours = {"vg.sum (streamed)": lambda: float(vg.sum(x))}
    notes = []
    if dev.backend == "cuda":
        src = st.host.reshape(-1).view(np.uint8) if st.host is not None else None
        if src is None or not is_pinned(dev, src):
            notes.append("host tier not pinned: the baseline copies from a fresh pinned buffer")
            src = pinned(dev, nbytes)
        cop = CudaCopier(dev, COPY_CHUNK)
        base = "pinned H2D cudaMemcpyAsync"
        contenders = ours | {base: lambda: cop.h2d(src, COPY_CHUNK)}
        notes.append(
            "baseline: raw cudaMemcpyAsync of the array's own pinned host buffer, "
            f"{human(COPY_CHUNK)} per copy into one device buffer, one stream, synced"
        )
        tid: str | None = "host_stream_cuda"
        # context: what a pageable copy would give (the reason the host tier is pinned)
        pg = np.ones(min(nbytes, 256 * MiB), np.uint8)
        ts = [timed(lambda: cop.h2d(pg, COPY_CHUNK)) for _ in range(3)]
        row["context_pageable_h2d_GBps"] = pg.nbytes / med(ts) / 1e9
        del pg
    elif is_cpu(dev):
        # a resident array this large cannot exist under this budget (and raising it would
        # make vg.sum take x in whole): the backend's one-pass sum over the same memory
        from vgpu_nb.backends.base import ReduceRequest

        flat = st.host.reshape(-1)
        req = ReduceRequest("sum", flat, flat.shape, vg.f32, None, vg.f32, vg.f32)
        base = "one-pass backend sum, same memory"
        contenders = ours | {base: lambda: float(np.asarray(dev.reduce(req)))}
        notes.append(
            "CPU device: the host tier is used in place; baseline: dev.reduce over the whole "
            "buffer at once (what vg.sum of a resident array runs); context only (no target)"
        )
        tid = None
    else:  # wgpu: its host tier is plain RAM; the ceiling is the queue's upload rate
        chunk = COPY_CHUNK // 4
        slot = dev.empty((chunk,), vg.f32)
        flat = st.host.reshape(-1)

        def upload() -> None:
            for o in range(0, flat.size, chunk):
                dev.upload_into(slot, flat[o : o + chunk])
            dev.sync()

        base = f"{dev.backend} upload_into ({human(COPY_CHUNK)} chunks) + sync"
        contenders = ours | {base: upload}
        notes.append("wgpu: baseline is the backend's own chunked upload; context only")
        tid = None
    samples = alternate(contenders, args.repeat)
    if x.tier != "host":  # it must have streamed, not moved onto the device
        raise AssertionError(f"the array moved to the {x.tier} tier while timing")
    name = "vg.sum (streamed)"
    row |= {"ours": name, "baseline": base, "notes": notes}
    row["contenders"] = {k: figures(v, nbytes) for k, v in samples.items()}
    row["ratio"] = row["contenders"][name]["GBps"] / row["contenders"][base]["GBps"]
    row["ratio_of_min_times"] = min(samples[base]) / min(samples[name])
    if tid:
        row |= verdict(tid, row["ratio"])
    return row  # (x and the pinned buffers go with this frame)


# ---- 2. streaming a disk-tier array ----------------------------------------------------------
def drop_caches() -> str | None:
    """Drop the page cache (root); the reason it could not, else None."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as exc:
        return f"cannot drop caches: {exc.strerror or exc}"


def bench_disk_stream(dev: Any, budget: int, nbytes: int, args: argparse.Namespace) -> dict:
    vg.memory.configure(device=budget, host=nbytes // 2)
    h = data(nbytes, seed=2)
    ref = exact_sum(h)
    x = vg.asarray(h, device=dev)
    del h
    gc.collect()
    if x.tier != "disk":
        raise AssertionError(f"a {human(nbytes)} array landed in the {x.tier} tier, not disk")
    st = storage(x)
    path, off = st.path, st.offset
    fsize = os.path.getsize(path)
    err = check_sum(f"disk-tier sum on {dev.name}", float(vg.sum(x)), ref)

    def fromfile() -> None:
        a = np.fromfile(path, np.float32, offset=off)
        if a.nbytes != nbytes:
            raise AssertionError(f"np.fromfile read {a.nbytes} bytes, expected {nbytes}")
        del a

    name, base = "vg.sum (streamed from disk)", "np.fromfile"
    contenders = {name: lambda: float(vg.sum(x)), base: fromfile}
    samples = alternate(contenders, args.repeat)
    if x.tier != "disk":
        raise AssertionError(f"the array moved to the {x.tier} tier while timing")
    notes = [
        "warm page cache: the spill file was just written and both contenders read it "
        "alternately (same cache state)",
        "baseline reads the array's own spill file at its data offset, into fresh memory",
    ]
    row: dict[str, Any] = {
        "bench": "disk_stream",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "device_budget": budget,
        "host_budget": nbytes // 2,
        "bytes": nbytes,
        "file_bytes": fsize,
        "dtype": "f32",
        "tier": x.tier,
        "spill_file": path,
        "max_rel_err": err,
        "page_cache": "warm",
        "ours": name,
        "baseline": base,
        "contenders": {k: figures(v, nbytes) for k, v in samples.items()},
        "notes": notes,
    }
    c = row["contenders"]
    row["ratio"] = c[name]["GBps"] / c[base]["GBps"]
    row["ratio_of_min_times"] = min(samples[base]) / min(samples[name])
    # context: the read ceiling without allocation (sequential pread into one reused buffer)
    buf = np.empty(COPY_CHUNK, np.uint8)

    def pread() -> None:
        for o in range(0, fsize - off, COPY_CHUNK):
            m = min(COPY_CHUNK, fsize - off - o)
            _disk.read_into(path, off + o, buf[:m])

    pr = [timed(pread) for _ in range(max(3, args.repeat // 2))]
    row["context_pread_reused_64MiB"] = figures(pr, nbytes)
    row |= (
        verdict(f"disk_stream_{dev.backend}", row["ratio"])
        if dev.backend in ("numba", "cuda")
        else {}
    )
    if args.drop_caches:
        why = drop_caches() if os.geteuid() == 0 else "not root: cannot drop caches"
        if why is None:
            cold = alternate(contenders, max(3, args.repeat // 2), warmup=0, before=drop_caches)
            row["cold"] = {k: figures(v, nbytes) for k, v in cold.items()}
            row["cold_ratio"] = row["cold"][name]["GBps"] / row["cold"][base]["GBps"]
            notes.append("cold: the page cache was dropped before every run (--drop-caches)")
        else:
            row["cold_skipped"] = why
    return row


# ---- 3. spill overhead of a sequential pipeline ----------------------------------------------
@vg.kernel
def scale(s: vg.f32, x: vg.f32[:]):
    i = vg.tid()
    x[i] = x[i] * s


def bench_spill(dev: Any, budget: int, op: str, args: argparse.Namespace) -> dict[str, Any]:
    S = budget // args.spill_parts
    K = 4 * budget // S
    n = S // 4
    vg.memory.configure(device=budget, host=max(ram_bytes() // 2, 2 * K * S))
    hs = [data(S, seed=100 + k) for k in range(K)]
    arrays = [vg.asarray(h, device=dev) for h in hs]  # making them spills the older ones
    tiers0 = [a.tier for a in arrays]
    s = np.float32(1.0)  # values unchanged: checkable, and every touch still dirties

    if op == "scale":
        launch = scale[n]

        def touch(a: Any) -> None:
            launch(s, a)

    else:
        sums: list[float] = []

        def touch(a: Any) -> None:
            sums.append(float(vg.sum(a)))

    def pipeline() -> None:
        for _ in range(2):
            for a in arrays:
                touch(a)
        dev.sync()

    with ctx(dev):
        pipeline()  # warm-up: compile, pinned pools, the LRU cycle settles
        # check: values are intact after being moved around
        for a, h in zip(arrays[:2] + arrays[-1:], hs[:2] + hs[-1:], strict=True):
            if not np.array_equal(a.numpy(), h):
                raise AssertionError(f"spill pipeline on {dev.name}: an array came back changed")
        if op == "sum":
            for got, h in zip(sums[:K], hs, strict=True):
                check_sum(f"spill pipeline vg.sum on {dev.name}", got, exact_sum(h))
        del hs
        gc.collect()
        times, moved = [], []
        for _ in range(args.repeat):
            b0 = stats_bytes(dev)
            times.append(timed(pipeline))
            b1 = stats_bytes(dev)
            moved.append({k: b1[k] - b0[k] for k in b0})
        # the same 2K ops on resident data (the last touched array is on the device)
        last = arrays[-1]
        if last.tier != "device":
            raise AssertionError(f"the last touched array is in the {last.tier} tier")

        def resident() -> None:
            for _ in range(2 * K):
                touch(last)
            dev.sync()

        b0 = stats_bytes(dev)
        comp = [timed(resident) for _ in range(args.repeat)]
        if stats_bytes(dev) != b0:
            raise AssertionError("the resident ops moved memory: the compute figure is not pure")
        bw = transfer_bw(dev, S, args.repeat)
    mv = moved[len(moved) // 2]  # all runs move the same; recorded per run below
    t_h2d = mv["unspilled"] / (bw["h2d"]["GBps"] * 1e9)
    t_d2h = mv["spilled"] / (bw["d2h"]["GBps"] * 1e9)
    minimum = t_h2d + t_d2h + med(comp)
    measured = med(times)
    overhead = (measured / minimum - 1) * 100
    row: dict[str, Any] = {
        "bench": "spill",
        "device": dev.name,
        "adapter": dev.info.adapter,
        "op_id": op,
        "op": "in-place @vg.kernel x[i] = x[i] * s" if op == "scale" else "vg.sum",
        "device_budget": budget,
        "arrays": K,
        "array_bytes": S,
        "total_bytes": K * S,
        "touches_per_run": 2 * K,
        "tiers_after_creation": tiers0,
        "times_s": [round(t, 6) for t in times],
        "median_s": measured,
        "moved_per_run": moved,
        "unspilled_bytes": mv["unspilled"],
        "spilled_bytes": mv["spilled"],
        "transfer_GBps": (mv["unspilled"] + mv["spilled"]) / measured / 1e9,
        "bandwidth": bw,
        "compute_resident_s": [round(t, 6) for t in comp],
        "compute_median_s": med(comp),
        "min_h2d_s": t_h2d,
        "min_d2h_s": t_d2h,
        "minimum_s": minimum,
        "overhead_pct": overhead,
        "notes": [
            "minimum = unspilled/H2D + spilled/D2H (stats deltas, raw copy bandwidths of one "
            "array) + the same ops on a resident array; no transfer/compute overlap assumed"
        ],
    }
    if dev.backend == "cuda":
        row |= verdict("spill_cuda", overhead)
    return row


def judged(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per target: its value and verdict, or why it was not measured."""
    out = []
    for tid, (what, op, thr, unit) in TARGETS.items():
        base = {"id": tid, "what": what, "target": f"{op} {thr:g} {unit}", "unit": unit}
        hits = [r for r in rows if r.get("target_id") == tid]
        for r in hits:
            value = r["overhead_pct"] if r["bench"] == "spill" else r["ratio"]
            extra = {"op": r["op_id"]} if r["bench"] == "spill" else {}
            out.append(base | {"device": r["device"], "value": value, "met": r["met"]} | extra)
        if not hits:
            bench, backend = tid.rsplit("_", 1)[0].split("_")[0], tid.rsplit("_", 1)[1]
            why = [
                f"{s['bench']} on {s['device']}: {s.get('reason') or s.get('error')}"
                for s in skipped
                if s["device"].startswith(backend) and s["bench"].split(":")[0] in (bench, "*")
            ]
            out.append(base | {"device": "-", "value": None, "met": None,
                               "why_not": why or [f"no {backend} device in this run"]})  # fmt: skip
    return out


# ---- driver ----------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    v: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                         "vgpu_nb": vg.__version__}  # fmt: skip
    for mod in ("numba", "cupy", "wgpu"):
        m = sys.modules.get(mod)
        if m is not None:
            v[mod] = getattr(m, "__version__", "?")
    if "numba" in sys.modules:
        with contextlib.suppress(ValueError):  # no parallel function ran
            v["numba_threading_layer"] = sys.modules["numba"].threading_layer()
        v["numba_threads"] = sys.modules["numba"].config.NUMBA_NUM_THREADS
    env = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")
    v["env"] = {k: os.environ[k] for k in env if k in os.environ}
    if "cupy" in sys.modules:
        rt = sys.modules["cupy"].cuda.runtime
        with contextlib.suppress(Exception):
            v["cuda_runtime"], v["cuda_driver"] = rt.runtimeGetVersion(), rt.driverGetVersion()
    return v


def gbps(row: dict[str, Any], key: str) -> str:
    return f"{row['contenders'][row[key]]['GBps']:7.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'bench':12s} {'device':7s} {'size':>9s} {'ours GB/s':>9s} {'baseline':40s} "
          f"{'base GB/s':>9s} {'ratio/ovh':>10s} {'target':>9s}  met")  # fmt: skip
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r.get("met")]
        tgt = r.get("target", "-")
        if r["bench"] == "spill":
            base = f"minimum {r['minimum_s'] * 1e3:.1f} ms"
            ours = f"{r['transfer_GBps']:7.2f}"
            line = (f"{'spill:' + r['op_id']:12s} {r['device']:7s} "
                    f"{human(r['total_bytes']):>9s} {ours:>9s} {base:40s} "
                    f"{'':>9s} {r['overhead_pct']:+9.1f}% {tgt:>9s}  {met}")  # fmt: skip
            print(line + f"   (run {r['median_s'] * 1e3:.1f} ms)")
            continue
        print(
            f"{r['bench']:12s} {r['device']:7s} {human(r['bytes']):>9s} {gbps(r, 'ours'):>9s} "
            f"{r['baseline']:40s} {gbps(r, 'baseline'):>9s} {r['ratio']:9.3f}x {tgt:>9s}  {met}"
        )
        if "cold" in r:
            c = r["cold"]
            print(
                f"{'  (cold)':12s} {r['device']:7s} {'':>9s} {c[r['ours']]['GBps']:9.2f} "
                f"{r['baseline']:40s} {c[r['baseline']]['GBps']:9.2f} {r['cold_ratio']:9.3f}x"
            )


PARTS = ("host", "disk", "spill")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="", help="comma list (default: cuda:0,numba or numba)")
    ap.add_argument("--budget", help='device budget, e.g. "1GiB" (default 1GiB GPU, 128MiB CPU)')
    ap.add_argument(
        "--disk-gib", type=float, help="disk-tier array size (default 2 w/ CUDA, else 1)"
    )
    ap.add_argument("--spill-parts", type=int, default=4, help="arrays per device budget (spill)")
    ap.add_argument("--spill-ops", default="scale,sum", help="ops of the spill pipeline")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per contender")
    ap.add_argument(
        "--drop-caches", action="store_true", help="also a cold-cache disk figure (root)"
    )
    ap.add_argument("--spill-dir", help="parent of the temporary spill directory")
    ap.add_argument("--label", default=socket.gethostname(), help="results file suffix")
    ap.add_argument("--out", help="JSON path (default bench/results/memory_<label>.json)")
    args = ap.parse_args(argv)
    if args.repeat < 3:
        ap.error("--repeat must be >= 3 (figures are medians)")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := set(parts) - set(PARTS):
        ap.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    has_cuda = cuda_available()
    names = [d.strip() for d in args.devices.split(",") if d.strip()]
    names = names or (["cuda:0", "numba"] if has_cuda else ["numba"])
    disk_bytes = int((args.disk_gib if args.disk_gib is not None else 2 if has_cuda else 1) * GiB)
    disk_bytes -= disk_bytes % 4096

    spill_parent = tempfile.mkdtemp(prefix="vgpu_nb-bench-mem-", dir=args.spill_dir)
    vg.memory.configure(spill_dir=spill_parent)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    devs = []
    if "cuda:0" not in names and not any(n.startswith("cuda") for n in names):
        why = "cuda not in --devices" if has_cuda else "no cuda device (CuPy/GPU missing)"
        for p, tid in (("host", "host_stream_cuda"), ("disk", "disk_stream_cuda"),
                       ("spill", "spill_cuda")):  # fmt: skip
            if p in parts:
                skipped.append({"device": "cuda", "bench": p, "target_id": tid, "reason": why})
                print(f"skip   {p} on cuda: {why}")
    for name in names:
        try:
            devs.append(vg.get_device(name))
        except Exception as exc:  # noqa: BLE001
            skipped.append({"device": name, "bench": "*", "reason": str(exc).splitlines()[0]})
            print(f"skip   {name}: {str(exc).splitlines()[0]}")

    try:
        for dev in devs:
            budget = parse_size(args.budget) if args.budget else (128 * MiB if is_cpu(dev) else GiB)
            jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
            if "host" in parts:
                jobs.append(("host", lambda d=dev, b=budget: bench_host_stream(d, b, args)))
            if "disk" in parts:
                jobs.append(
                    ("disk", lambda d=dev, b=budget: bench_disk_stream(d, b, disk_bytes, args))
                )
            if "spill" in parts:
                for op in [o.strip() for o in args.spill_ops.split(",") if o.strip()]:
                    job = lambda d=dev, b=budget, o=op: bench_spill(d, b, o, args)  # noqa: E731
                    jobs.append((f"spill:{op}", job))
            for what, job in jobs:
                if what.startswith("spill") and is_cpu(dev):
                    why = ("CPU device: a device→host spill is a relabel of the same RAM, no "
                           "transfer to bound; measured on cuda (and wgpu) only")  # fmt: skip
                    skipped.append({"device": dev.name, "bench": what, "reason": why})
                    print(f"skip   {what} on {dev.name}: {why}")
                    continue
                t0 = time.perf_counter()
                try:
                    with ctx(dev):
                        row = job()
                    row["wall_s"] = time.perf_counter() - t0
                    row["loadavg_1min_after"] = os.getloadavg()[0]
                    rows.append(row)
                    print_table([row])
                except Exception as exc:  # record, keep going
                    skipped.append({"device": dev.name, "bench": what, "error": repr(exc)})
                    print(f"FAILED {what} on {dev.name}: {exc!r}")
                    traceback.print_exc()
                finally:
                    gc.collect()
                    vg.memory.configure(host=ram_bytes() // 2)
    finally:
        gc.collect()
        vg.memory.clear()
        vg.memory.reset()
        shutil.rmtree(spill_parent, ignore_errors=True)

    print("\nsummary (warm page cache for disk; GB/s = bytes / median time):")
    print_table(rows)
    for s in skipped:
        print(f"  skipped {s['bench']} on {s['device']}: {s.get('reason') or s.get('error')}")
    targets = judged(rows, skipped)
    print("\ntargets:")
    for t in targets:
        v = "-" if t["value"] is None else f"{t['value']:.3f} {t['unit']}"
        word = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  {t['id']:18s} {t['device']:7s} {v:>12s}  target {t['target']:10s} {word}")
    report = {
        "benchmark": "memory",
        "machine": machine_info() | {"ram_bytes": ram_bytes()},
        "versions": versions(),
        "devices": [
            {"name": d.name, "backend": d.backend, "adapter": d.info.adapter, "kind": d.info.kind}
            for d in devs
        ],  # fmt: skip
        "repeat": args.repeat,
        "disk_bytes": disk_bytes,
        "budget_arg": args.budget,
        "targets": targets,
        "loadavg_1_5_15min": {"start": load0, "end": os.getloadavg()},
        "total_wall_s": time.perf_counter() - t_start,
        "results": rows,
        "skipped": skipped,
    }
    path = write_json(args.out or RESULTS / f"memory_{args.label}.json", report)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
