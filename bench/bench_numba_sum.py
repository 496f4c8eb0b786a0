"""Benchmark: ``vg.sum`` of float32 on the numba device against a hand-written Numba sum.

The baseline is the loop a Numba user would write first::

    @njit(parallel=True)
    def baseline(x):
        s = 0.0
        for i in prange(x.size):
            s += x[i]
        return s

Contenders, all reading the same buffer in the same process: the baseline, ``vg.sum(x)``
through the public API (wrapper, request building and epilogue included), the numba
device's ``reduce`` alone (our kernel plus its host-side combine), and for context ``np.sum``
(one thread) and a float32 ``fastmath`` prange sum (vectorised and reordered by LLVM, so not
reproducible: roughly the memory-bandwidth ceiling). Compilation (or loading from Numba's
disk cache) is excluded: one warm-up call each, reported as ``first_call_ms``. Then the
contenders run round-robin, ``--repeat`` times each, so slow drifts of the machine hit
them alike. Reported: median and min wall time, GB/s (bytes of the input
per median second), and ``ratio`` = baseline median / ``vg.sum`` median (> 1: vg.sum is
faster; the target is >= 0.9).

    python bench/bench_numba_sum.py                  # 2^24 and 2^28 elements
    python bench/bench_numba_sum.py --log2n 24       # quick, on small machines
    python bench/bench_numba_sum.py --log2n 26 28 --repeat 20 --label ci-2core

Writes ``bench/results/numba_sum_<label>.json`` (label: the host name unless given).
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vgpu_nb as vg  # noqa: E402
from bench.common import machine as machine_info  # noqa: E402
from bench.common import write_json  # noqa: E402
from vgpu_nb.backends.base import ReduceRequest  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@njit(parallel=True)
def baseline_sum(x: np.ndarray) -> float:
    """The hand-written parallel sum (float64 accumulator, as a user writes ``s = 0.0``)."""
    s = 0.0
    for i in prange(x.size):
        s += x[i]
    return s


@njit(parallel=True, fastmath=True)
def fastmath_sum(x: np.ndarray) -> float:
    """Reference only: a float32 ``fastmath`` sum LLVM may reorder freely (vectorised, not
    reproducible) — about what the memory system allows."""
    s = np.float32(0)
    for i in prange(x.size):
        s += x[i]
    return s


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_size(log2n: int, repeat: int, seed: int) -> dict[str, Any]:
    n = 1 << log2n
    dev = vg.get_device("numba")
    x = vg.asarray(np.random.default_rng(seed).random(n, dtype=np.float32), device="numba")
    buf = x.numpy()  # the device memory itself (host backend): every contender reads it
    req = ReduceRequest(
        kind="sum", x=buf, shape=(n,), dtype=vg.f32, axis=None, acc=vg.f32, out=vg.f32
    )
    contenders: dict[str, Callable[[], Any]] = {
        "baseline_prange": lambda: baseline_sum(buf),
        "vg.sum": lambda: vg.sum(x),
        "numba_device.reduce": lambda: dev.reduce(req),
        "np.sum_1thread": lambda: np.sum(buf),
        "fastmath_prange_ref": lambda: fastmath_sum(buf),
    }
    first = {name: timed(fn) for name, fn in contenders.items()}  # compile + warm caches
    values = {
        "baseline_prange": float(baseline_sum(buf)),
        "vg.sum": float(vg.sum(x)),
        "exact_f64": float(np.sum(buf, dtype=np.float64)),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            samples[name].append(timed(fn))
    out: dict[str, Any] = {"log2n": log2n, "n": n, "bytes": 4 * n, "values": values}
    out["contenders"] = list(contenders)
    for name, ts in samples.items():
        med = statistics.median(ts)
        out[name] = {
            "median_ms": med * 1e3,
            "min_ms": min(ts) * 1e3,
            "GB_per_s": 4 * n / med / 1e9,
            "first_call_ms": first[name] * 1e3,
            "samples_ms": [round(t * 1e3, 4) for t in ts],
        }
    base, ours = out["baseline_prange"]["median_ms"], out["vg.sum"]["median_ms"]
    out["ratio_vg_sum_vs_baseline"] = base / ours
    out["ratio_kernel_vs_baseline"] = base / out["numba_device.reduce"]["median_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log2n", type=int, nargs="+", default=[24, 28], help="sizes, as log2")
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per contender (>= 10)")
    ap.add_argument("--label", default=socket.gethostname(), help="results file suffix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON path (default bench/results/numba_sum_<label>.json)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    args = ap.parse_args(argv)
    if args.repeat < 10:
        ap.error("--repeat must be >= 10 (the figure is a median of at least 10 runs)")

    machine = machine_info() | {"numba_threads": numba.config.NUMBA_NUM_THREADS}
    sizes = [bench_size(k, args.repeat, args.seed) for k in args.log2n]
    report = {
        "benchmark": "numba_sum",
        "machine": machine,
        "versions": {
            "python": platform.python_version(),
            "numba": numba.__version__,
            "numpy": np.__version__,
            "vgpu_nb": vg.__version__,
            "threading_layer": numba.threading_layer(),
        },
        "device": vg.get_device("numba").info.adapter,
        "repeat": args.repeat,
        "sizes": sizes,
    }

    print(f"{machine['cpu_model']}, {machine['cpus']} CPUs, numba {numba.__version__} "
          f"({numba.threading_layer()}, {machine['numba_threads']} threads)")  # fmt: skip
    print(f"{'n':>6} {'contender':<21} {'median ms':>10} {'min ms':>9} {'GB/s':>7} {'first ms':>9}")
    for s in sizes:
        for name in s["contenders"]:
            r, size = s[name], f"2^{s['log2n']}"
            print(f"{size:>6} {name:<21} {r['median_ms']:>10.3f} {r['min_ms']:>9.3f} "
                  f"{r['GB_per_s']:>7.2f} {r['first_call_ms']:>9.1f}")  # fmt: skip
        print(f"{'':>6} ratio baseline/vg.sum = {s['ratio_vg_sum_vs_baseline']:.2f} "
              f"(kernel alone {s['ratio_kernel_vs_baseline']:.2f}; target >= 0.9)")  # fmt: skip
    if not args.no_write:
        path = write_json(args.out or RESULTS / f"numba_sum_{args.label}.json", report)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
