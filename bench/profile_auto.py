"""Where ``device="auto"`` spends its time: one op, its data resident on one device, called
directly and under ``vg.use("auto")`` (after the scheduler has learnt it), timed in
alternating rounds; then a cProfile of the auto calls and the decision log. A diagnostic
for the regret benchmark (bench_scheduler.py), not a result of its own.

    python bench/profile_auto.py --op sumsq --device cuda:0 --sizes 1e4 1e5 1e9
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vgpu_nb as vg  # noqa: E402
from bench.bench_scheduler import Case  # noqa: E402
from vgpu_nb.scheduler import auto  # noqa: E402


def _round(fn: Any, dev: Any, reps: int) -> float:
    dev.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    dev.sync()
    return (time.perf_counter() - t0) / reps


def _bisect(dev: Any, st: tuple[Any, ...], reps: int) -> None:
    """Which part of a reduction under auto costs what: the same array, in alternating
    rounds, through (a) the op with ``dev`` as default, (b) the op under ``auto``, (c) the
    device-bound implementation under ``auto``, (d) the auto route with ``dev`` default."""
    from bench.bench_scheduler import sumsq

    x = (st[0],)
    ways = {
        "a op, default dev": (dev, lambda: float(sumsq(*x))),
        "b op, default auto": ("auto", lambda: float(sumsq(*x))),
        "c _call_here, default auto": ("auto", lambda: float(sumsq._call_here(x, None))),
        "d _call_auto, default dev": (dev, lambda: float(sumsq._call_auto(x, None))),
        "e _call_here + numpy(), default dev": (dev, lambda: sumsq._call_here(x, None).numpy()),
    }
    t: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(5):
        for k, (use, fn) in ways.items():
            vg.use(use)
            t[k].append(_round(fn, dev, reps))
    for k, v in t.items():
        print(f"  bisect {k:38s} {statistics.median(v) * 1e6:8.2f} µs", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", default="sumsq", choices=("saxpy", "sumsq", "matmul"))
    ap.add_argument("--device", default="numba")
    ap.add_argument("--sizes", nargs="+", default=["1e4"])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--learn", type=int, default=64)
    ap.add_argument("--bisect", action="store_true", help="sumsq: time the auto path's parts")
    args = ap.parse_args(argv)
    dev = vg.get_device(args.device)
    rng = np.random.default_rng(0)
    for s in args.sizes:
        size = int(float(s))
        case = Case(args.op, size, rng)
        st = case.make(dev)
        reps = max(3, min(args.reps, int(0.3 / max(size * 4 / 1e11, 1e-6))))

        direct = functools.partial(case.call, st, False)
        on_auto = functools.partial(case.call, st, True)

        direct()
        auto.reset()
        vg.scheduler.clear()
        vg.use("auto")
        try:
            for _ in range(args.learn):
                on_auto()
            t_d, t_a = [], []
            for _ in range(5):  # alternating rounds: the same machine state for both
                vg.use(dev)
                t_d.append(_round(direct, dev, reps))
                vg.use("auto")
                t_a.append(_round(on_auto, dev, reps))
            d, a = statistics.median(t_d), statistics.median(t_a)
            if args.bisect and args.op == "sumsq":
                _bisect(dev, st, reps)
            print(f"{args.op} {size:.0e} on {dev.name}: direct {d * 1e6:.2f} µs, auto "
                  f"{a * 1e6:.2f} µs (+{(a - d) * 1e6:.2f} µs, x{a / d:.3f}); "
                  f"now on {st[0].device.name}", flush=True)  # fmt: skip
            profs = {}
            for name, fn, use in (("direct", direct, dev), ("auto", on_auto, "auto")):
                vg.use(use)
                prof = profs[name] = cProfile.Profile()
                t0 = time.perf_counter()
                prof.enable()
                for _ in range(reps):
                    fn()
                dev.sync()
                prof.disable()
                print(f"cProfile {name}: {(time.perf_counter() - t0) / reps * 1e6:.2f} µs/call "
                      f"(profiled)")  # fmt: skip
        finally:
            vg.use("numba")
        for name, prof in profs.items():  # (the two side by side: what auto adds)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
            print(f"--- {name}, {reps} calls")
            print("\n".join(buf.getvalue().splitlines()[4:24]))
        log = vg.scheduler.log()
        if len(log):
            cols = [c for c in ("choice", "launches", "measured", "predicted_ms", "actual_ms",
                                "reason") if c in log.columns]  # fmt: skip
            print(log[cols].to_string(max_colwidth=90))
        for k, e in list(auto._ENTRIES.items()):
            print("entry", [h.name for h in k[2]], "->", e.device.name, "left", e.left,
                  "count", e.count, "warm", e.warm)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
