"""Drawing the dashboard's charts in a helper process.

Why: matplotlib holds the GIL while it draws (~0.1 s a frame here), and the kernel's
launching thread needs the GIL for every launch, so a render thread in the kernel's own
process slowed a loop of tiny launches by ~15 % on a 2-core machine while it redrew
(``bench/bench_dashboard.py``). Here the dashboard's thread only builds a small
:class:`~vgpu_nb.notebook.charts.ChartData`, sends it to one process shared by every
dashboard of this Python process, and waits for the frame without holding the GIL.

The process is started with ``spawn`` (no fork of a kernel holding CUDA / Vulkan / thread
pools) on a dashboard's first render, imports matplotlib once, keeps one figure per dpi (its
axes kept: :func:`~vgpu_nb.notebook.charts.draw_charts`), and ends with this process. If it
cannot be started or dies, :func:`frame` raises :class:`RenderWorkerError` and the dashboard
draws in its thread instead (and says so). ``VGPU_NB_RENDER=thread`` skips the process.

Each frame comes back with the helper's CPU time for it, so that the dashboard can keep
its drawing to a share of the machine (:data:`vgpu_nb.notebook.dashboard.SHARE`). (A lower
CPU priority for the helper was tried: where Numba's launches keep every core busy, a
``nice``'d helper drew no frame at all for seconds.)
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout  # (not the builtin before 3.11)
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .charts import ChartData

#: seconds a frame may take (the first includes starting the process and importing matplotlib)
TIMEOUT_S = 60.0

_figures: dict[float, Any] = {}  # (in the helper) dpi → figure, axes kept between frames


def _draw(data: ChartData, fmt: str, dpi: float) -> tuple[bytes, tuple[int, int] | None, float]:
    """(Runs in the helper.) The frame — PNG bytes, or RGBA bytes and (height, width) — and
    the CPU seconds it took."""
    from .charts import chart_figure, render_png, render_rgba

    t = time.process_time()
    fig = _figures.get(dpi)
    if fig is None:
        fig = _figures[dpi] = chart_figure(dpi)
    if fmt == "png":
        frame, shape = render_png(data, fig), None
    else:
        frame, shape = render_rgba(data, fig)
    return frame, shape, time.process_time() - t


def _pid() -> int:
    return os.getpid()


class RenderWorkerError(RuntimeError):
    """The helper process could not draw (not started, died, or too slow)."""


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            return self._pool

    def call(self, fn: Any, *args: Any) -> Any:
        try:
            return self._get().submit(fn, *args).result(timeout=TIMEOUT_S)
        except (BrokenProcessPool, OSError, FutureTimeout, TimeoutError, RuntimeError) as exc:
            self.shutdown()  # (a next call starts a new one)
            raise RenderWorkerError(f"the chart process failed: {exc!r}") from exc

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_WORKER = _Worker()
atexit.register(_WORKER.shutdown)


def enabled() -> bool:
    """False where ``VGPU_NB_RENDER=thread`` asks to draw in the dashboard's thread."""
    return os.environ.get("VGPU_NB_RENDER", "").strip().lower() != "thread"


def frame(data: ChartData, fmt: str = "png", dpi: float = 80.0) -> tuple[bytes, Any, float]:
    """Draw ``data`` in the helper process: ``(png, None, cpu_s)`` for ``fmt="png"``,
    ``(rgba, (height, width), cpu_s)`` for ``fmt="rgba"``; ``cpu_s`` is the helper's CPU
    time for it. Raises :class:`RenderWorkerError`."""
    return _WORKER.call(_draw, data, fmt, dpi)


def pid() -> int:
    """The helper process's id (starting it if needed)."""
    return _WORKER.call(_pid)


def shutdown() -> None:
    """Stop the helper process (a later frame starts a new one)."""
    _WORKER.shutdown()
