"""``kernel.trace(n, *args)``: which thread reads and writes which element, GPU-Puzzles style.

Why: the fastest way to understand (or debug) a kernel is to *see* its threads. A trace is
the teaching view of any user kernel — a map, a stencil, a transpose, a histogram — with
no change to the kernel: who touches what (``reads`` / ``writes``), how much work each
thread does (``score()``, the "score" of Sasha Rush's GPU-Puzzles: reads and writes of
the busiest thread, and in total) and a picture of it (``plot()``).

How: the kernel runs on the NumPy backend, whose generated program already executes the
kernel thread by thread in Python (:mod:`.codegen_numba`, target ``python``) and keeps the
running thread's id in :data:`.pyrt.STATE`. The trace calls that very program — the
launcher normal launches use, rebound to a private namespace — with every array argument
replaced by a small recording proxy (``__getitem__`` / ``__setitem__`` / ``shape`` over a
host copy of the data) that logs ``(thread, array, index)``. Nothing in the generated code
or in normal launches changes (no hook, no cost). Atomics (``vg.atomic_add/min/max``) are
one read and one write of their element, flagged ``atomic``.

Decisions:

* **The user's arrays are not modified**: each array argument's data is copied to the host
  first (wherever it lives: any device, spilled or pending) and the kernel runs on the
  copies; the results of the traced run are in ``Trace.arrays``. Passing the *same*
  ``vg.Array`` for two parameters gives both one shared copy (as on a device).
* **Arguments are checked as a launch checks them** (count, dtype, dimensions, scalar
  ranges, the launch domain against ``vg.tid()``): the same :mod:`vgpu_nb.errors`. The
  arrays may live on different devices (the trace reads them all to the host). An index
  out of range raises the NumPy backend's :class:`~vgpu_nb.errors.KernelRuntimeError`
  naming the thread, array, index and line. A trace is not a launch: no telemetry record.
* **Size**: tracing runs in Python, a few microseconds per access; a domain of more than
  ``max_threads`` threads (default :data:`MAX_THREADS`) raises
  :class:`~vgpu_nb.errors.TraceTooLarge` (trace a smaller problem, or raise the limit;
  ``max_threads=None``: no limit).
* ``reads`` / ``writes`` are **pandas DataFrames**, one row per access in execution order
  (threads run one after another, in launch order), columns ``thread`` (the global thread
  index: an ``int``, or an ``(i, j)`` tuple for 2-D kernels), ``array`` (the parameter's
  name), ``index`` (an ``int`` for 1-D arrays, an ``(i, j)`` tuple for 2-D ones) and
  ``atomic`` (bool).
* ``score()`` is a DataFrame with one row per thread of the domain (threads that touch
  nothing included), columns ``reads``, ``writes`` and ``"<array> reads"`` / ``"<array>
  writes"`` per array parameter, followed by two rows ``"max"`` (the busiest thread: the
  GPU-Puzzles score) and ``"total"``; ``score(summary=False)`` leaves them out.
* ``plot()`` draws each array parameter as a row of cells (1-D, wrapped every 32 cells)
  or a grid (2-D): a written cell is filled with its writer's colour and labelled with
  its thread id (``×k`` in red when k threads wrote it: atomics or a race; these labels
  carry the gid ``"writer"``); each thread reading a cell leaves a dot of its colour.
  Only the first :data:`PLOT_THREADS` threads are drawn (the title says so); large arrays
  are clipped (the label says so).
"""

from __future__ import annotations

import html
import math
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import TraceTooLarge
from . import pyrt

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .api import Kernel

#: default ``max_threads`` of :meth:`Kernel.trace`
MAX_THREADS = 1 << 16
#: ``plot()`` draws the accesses of this many threads at most (the first ones)
PLOT_THREADS = 64
#: ``plot()``: 1-D arrays wrap every WRAP cells and show CLIP_1D elements at most; 2-D
#: arrays show CLIP_2D × CLIP_2D elements at most
WRAP, CLIP_1D, CLIP_2D = 32, 256, 32

_STATE = pyrt.STATE  # the running thread's id, set by the NumPy backend's launcher
_READ, _WRITE, _ATOMIC = 0, 1, 2  # access kinds in the log (kind & 1: write; kind & 2: atomic)


class _Session:
    """The log of one traced run (shared by the proxies of its arrays)."""

    __slots__ = ("log", "base")

    def __init__(self) -> None:
        self.log: list[tuple[tuple[int, ...], int, Any, int]] = []
        self.base = _READ  # _ATOMIC while inside vg.atomic_*


class _Traced:
    """An array argument as the traced kernel sees it: indexing logs the access (with
    the running thread's id, kept by the NumPy backend's launcher in ``pyrt.STATE``)."""

    __slots__ = ("_a", "_k", "_s", "shape", "ndim", "dtype")

    def __init__(self, a: np.ndarray, k: int, s: _Session):
        self._a, self._k, self._s = a, k, s
        self.shape, self.ndim, self.dtype = a.shape, a.ndim, a.dtype

    def __getitem__(self, idx: Any) -> Any:
        s = self._s
        s.log.append((_STATE.thread, self._k, idx, s.base))
        return self._a[idx]

    def __setitem__(self, idx: Any, value: Any) -> None:
        s = self._s
        s.log.append((_STATE.thread, self._k, idx, s.base | _WRITE))
        self._a[idx] = value


def run(kernel: Kernel, domain: Any, args: Sequence[Any], max_threads: int | None) -> Trace:
    """Run ``kernel`` over ``domain`` on host copies of ``args``, recording every access."""
    from ..devices import get_device
    from .api import _domain

    fn = kernel.ir
    dims = _domain(domain, fn.ndim, f"kernel {kernel.__name__!r}", fn)
    kernel._args(args, same_device=False, native=False)  # the launch's errors, nothing moved
    n = math.prod(dims)
    if max_threads is not None and n > max_threads:
        raise TraceTooLarge(
            f"kernel {kernel.__name__!r}: tracing {n} threads (domain {dims}) is above "
            f"max_threads={max_threads}; a trace runs every thread in Python and records "
            "every access",
            fix="trace a smaller problem (the access pattern is the same), or pass "
            "max_threads=None to trace it anyway",
        )
    ck = kernel._compile(get_device("numpy"))
    session = _Session()
    native: list[Any] = []
    names: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    copies: dict[int, np.ndarray] = {}  # id(vg.Array) → its host copy (aliases share one)
    for s, a in zip(kernel._specs, args, strict=True):
        if not s.array:
            native.append(kernel._scalar(s, a))
            continue
        host = copies.get(id(a))
        if host is None:
            host = np.array(a.numpy(), dtype=s.dtype.np, order="C", copy=True)
            copies[id(a)] = host
        arrays[s.name] = host
        native.append(_Traced(host, len(names), session))
        names.append(s.name)
    if n:
        launcher = _rebound(ck.handle, session)
        n0, n1 = (dims[0], 1) if len(dims) == 1 else dims
        _STATE.kernel, _STATE.filename = ck.extra["kernel"], ck.extra["filename"]
        try:
            with np.errstate(all="ignore"):
                launcher(n0, n1, *native)
        finally:
            _STATE.thread = ()
    return Trace(kernel.__name__, dims, fn.ndim == 2, names, arrays, session.log)


def _rebound(launcher: types.FunctionType, session: _Session) -> Any:
    """The NumPy backend's launcher and its program's functions, rebound to a private copy
    of the program's globals in which ``atomic`` flags its accesses: the cached program
    itself (what normal launches run) is left untouched."""
    g = launcher.__globals__
    ns = dict(g)
    for name, v in g.items():
        if isinstance(v, types.FunctionType) and v.__globals__ is g:
            ns[name] = types.FunctionType(v.__code__, ns, v.__name__, v.__defaults__, v.__closure__)
    inner = pyrt.atomic

    def atomic(op: str, arr: Any, idx: tuple[Any, ...], value: Any) -> Any:
        session.base = _ATOMIC
        try:
            return inner(op, arr, idx, value)
        finally:
            session.base = _READ

    ns["atomic"] = atomic
    return ns[launcher.__name__]


def _index(idx: Any) -> int | tuple[int, ...]:
    if isinstance(idx, tuple):
        return int(idx[0]) if len(idx) == 1 else tuple(int(v) for v in idx)
    return int(idx)


class Trace:
    """The accesses of one traced run of a kernel (see :mod:`vgpu_nb.kernel.trace`).

    ``reads`` / ``writes`` (DataFrames, one row per access), ``score()`` (per thread),
    ``plot()``; ``arrays`` holds the traced run's results (host copies; the user's arrays
    are untouched). ``threads`` is the number of threads, ``domain`` the launch domain."""

    def __init__(
        self,
        kernel: str,
        domain: tuple[int, ...],
        two_d: bool,
        names: list[str],
        arrays: dict[str, np.ndarray],
        log: list[tuple[tuple[int, ...], int, Any, int]],
    ):
        self.kernel = kernel
        self.domain = domain
        self.threads = math.prod(domain)
        self.arrays = arrays
        self._two_d = two_d  # thread ids are (i, j) (the kernel uses i, j = vg.tid())
        self._names = names
        self._log = log
        n1 = domain[1] if len(domain) == 2 else 1
        # per access: the thread's flat number (launch order), array number, kind
        if log:
            tids = np.fromiter(
                ((t[0] * n1 + t[1]) if len(t) == 2 else t[0] for t, _, _, _ in log),
                np.int64,
                len(log),
            )
            arr = np.fromiter((k for _, k, _, _ in log), np.int64, len(log))
            kind = np.fromiter((c for _, _, _, c in log), np.int64, len(log))
        else:
            tids = arr = kind = np.zeros(0, np.int64)
        self._tid, self._arr, self._kind = tids, arr, kind
        self._frames: dict[int, pd.DataFrame] = {}
        self._count_cache: dict[str, np.ndarray] | None = None

    # ---- the accesses ---------------------------------------------------------------------
    def _label(self, flat: int) -> int | tuple[int, int]:
        if self._two_d:
            n1 = self.domain[1]
            return (flat // n1, flat % n1)
        return flat

    def _frame(self, write: int) -> pd.DataFrame:
        df = self._frames.get(write)
        if df is None:
            import pandas as pd

            rows = [
                (self._label(int(t)), self._names[k], _index(idx), bool(c & _ATOMIC))
                for (_, k, idx, c), t in zip(self._log, self._tid, strict=True)
                if c & _WRITE == write
            ]
            df = pd.DataFrame(rows, columns=["thread", "array", "index", "atomic"])
            df = df.astype({"atomic": bool})
            self._frames[write] = df
        return df.copy()

    @property
    def reads(self) -> pd.DataFrame:
        """Every read, in execution order: columns thread, array, index, atomic."""
        return self._frame(0)

    @property
    def writes(self) -> pd.DataFrame:
        """Every write, in execution order: columns thread, array, index, atomic."""
        return self._frame(1)

    # ---- counts -------------------------------------------------------------------------------
    def _counts(self) -> dict[str, np.ndarray]:
        """Per-thread counts: "reads", "writes", "<array> reads", "<array> writes"."""
        if self._count_cache is None:
            self._count_cache = self._count()
        return self._count_cache

    def _count(self) -> dict[str, np.ndarray]:
        n = self.threads
        w = (self._kind & _WRITE).astype(bool)
        out = {
            "reads": np.bincount(self._tid[~w], minlength=n),
            "writes": np.bincount(self._tid[w], minlength=n),
        }
        for k, name in enumerate(self._names):
            mine = self._arr == k
            out[f"{name} reads"] = np.bincount(self._tid[mine & ~w], minlength=n)
            out[f"{name} writes"] = np.bincount(self._tid[mine & w], minlength=n)
        return out

    @property
    def total_reads(self) -> int:
        return int(np.count_nonzero((self._kind & _WRITE) == 0))

    @property
    def total_writes(self) -> int:
        return int(np.count_nonzero(self._kind & _WRITE))

    @property
    def max_reads(self) -> int:
        """Reads of the busiest thread (GPU-Puzzles' score)."""
        c = self._counts()["reads"]
        return int(c.max()) if c.size else 0

    @property
    def max_writes(self) -> int:
        """Writes of the busiest thread."""
        c = self._counts()["writes"]
        return int(c.max()) if c.size else 0

    def score(self, summary: bool = True) -> pd.DataFrame:
        """Reads and writes per thread (rows; index "thread"), in total and per array; with
        ``summary`` two more rows: ``"max"`` (any thread's most: the GPU-Puzzles score)
        and ``"total"``."""
        import pandas as pd

        counts = self._counts()
        labels: list[Any] = [self._label(t) for t in range(self.threads)]
        data = {c: v.astype(np.int64) for c, v in counts.items()}
        if summary:
            labels += ["max", "total"]
            data = {
                c: np.concatenate([v, [v.max() if v.size else 0, v.sum()]]).astype(np.int64)
                for c, v in data.items()
            }
        index = pd.Index(labels, dtype=object, tupleize_cols=False, name="thread")
        if not summary and not self._two_d:
            index = pd.Index(np.arange(self.threads, dtype=np.int64), name="thread")
        return pd.DataFrame(data, index=index)

    # ---- views ----------------------------------------------------------------------------
    def _summary_rows(self) -> tuple[list[str], list[int], list[int]]:
        c = self._counts()
        cols = list(c)
        return (
            cols,
            [int(v.max()) if v.size else 0 for v in c.values()],
            [int(v.sum()) for v in c.values()],
        )

    def __repr__(self) -> str:
        return (
            f"<Trace of kernel {self.kernel!r} over {self._domain_text()}: {self.threads} "
            f"threads, {self.total_reads} reads, {self.total_writes} writes; max per thread: "
            f"{self.max_reads} reads, {self.max_writes} writes>"
        )

    def _domain_text(self) -> str:
        d = self.domain
        return str(d[0]) if len(d) == 1 else f"({d[0]}, {d[1]})"

    def _repr_html_(self) -> str:
        cols, mx, tot = self._summary_rows()
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        row_max = "".join(f"<td>{v}</td>" for v in mx)
        row_tot = "".join(f"<td>{v}</td>" for v in tot)
        return (
            f"<div><b>trace of <code>{esc(self.kernel)}[{esc(self._domain_text())}]</code>"
            f"</b>: {self.threads} threads, {self.total_reads} reads, {self.total_writes} "
            "writes"
            '<table style="font-size:90%"><thead><tr><th></th>'
            f"{head}</tr></thead><tbody>"
            f"<tr><th>max per thread</th>{row_max}</tr>"
            f"<tr><th>total</th>{row_tot}</tr></tbody></table>"
            "<small>trace.score(): one row per thread; trace.reads / trace.writes: every "
            "access; trace.plot(): the picture</small></div>"
        )

    # ---- the picture --------------------------------------------------------------------
    def plot(self, ax: Axes | None = None) -> Figure:
        """Each array parameter as a row of cells (1-D, wrapped every 32) or a grid (2-D);
        written cells filled with the writer's colour and labelled with its thread id (a
        red ``×k`` when k threads wrote it), a dot of each reading thread's colour. The
        first :data:`PLOT_THREADS` threads are drawn. Returns the Figure (``ax``'s if
        given: everything is drawn on that one Axes)."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import BoundaryNorm, ListedColormap
        from matplotlib.patches import Rectangle

        from ..telemetry.profile import _one_axes

        shown = min(self.threads, PLOT_THREADS)
        colours = _colours(shown)
        keep = self._tid < shown
        # per array: cell → (writer threads, reader threads), in first-access order
        cells: list[dict[Any, tuple[list[int], list[int]]]] = [{} for _ in self._names]
        for (_, k, idx, c), t, ok in zip(self._log, self._tid, keep, strict=True):
            if not ok:
                continue
            w, r = cells[k].setdefault(_index(idx), ([], []))
            lst = w if c & _WRITE else r
            t = int(t)
            if t not in lst:
                lst.append(t)
        # layout: arrays stacked top to bottom, one unit per cell
        blocks = []
        y0, width = 0.0, 1
        for k, name in enumerate(self._names):
            a = self.arrays[name]
            if a.ndim == 1:
                m = min(a.shape[0], CLIP_1D)
                wrap = max(1, min(m, WRAP))
                rows, cols = max(1, -(-m // wrap)), wrap
                clipped = m < a.shape[0]
            else:
                rows, cols = min(a.shape[0], CLIP_2D), min(a.shape[1], CLIP_2D)
                clipped = rows < a.shape[0] or cols < a.shape[1]
            blocks.append((k, name, a, y0, rows, cols, clipped))
            width = max(width, cols)
            y0 += rows + (1.2 if a.ndim == 1 else 1.6)
        height = max(y0 - 1.0, 1.0)
        size = (min(max(6.5, 2.5 + 0.42 * width), 18.0), min(max(2.8, 1.6 + 0.42 * height), 16.0))
        fig, ax = _one_axes(ax, size)
        fs = 7.0 if width <= 24 else 5.5
        dots: tuple[list[float], list[float], list[Any]] = ([], [], [])
        for k, name, a, top, rows, cols, clipped in blocks:
            label = f"{name}\n{tuple(a.shape)}" + ("\n(clipped)" if clipped else "")
            lx = -0.8 if a.ndim == 1 else -1.1
            ax.text(lx, top + rows / 2 - 0.5, label, ha="right", va="center", fontsize=8)
            if a.ndim == 2:
                for j in range(cols):
                    ax.text(j, top - 0.75, str(j), ha="center", va="bottom", fontsize=5,
                            color="0.45")  # fmt: skip
                for i in range(rows):
                    ax.text(-0.62, top + i, str(i), ha="right", va="center", fontsize=5,
                            color="0.45")  # fmt: skip
            ncell = rows * cols if a.ndim == 2 else min(a.shape[0], CLIP_1D)
            for e in range(ncell):
                if a.ndim == 1:
                    x, y, key = e % cols, top + e // cols, e
                else:
                    x, y, key = e % cols, top + e // cols, (e // cols, e % cols)
                writers, readers = cells[k].get(key, ([], []))
                face = colours[writers[0]] if writers else "white"
                many = len(writers) > 1
                ax.add_patch(
                    Rectangle(
                        (x - 0.5, y - 0.5), 1, 1, facecolor=face,
                        alpha=0.55 if writers else 1.0,
                        edgecolor="red" if many else "0.35", linewidth=1.6 if many else 0.6,
                    )
                )  # fmt: skip
                if a.ndim == 1:
                    ax.text(x - 0.44, y - 0.44, str(e), ha="left", va="top", fontsize=4.5,
                            color="0.45")  # fmt: skip
                if writers:
                    text = f"×{len(writers)}" if many else _short(self._label(writers[0]))
                    ax.text(x, y - 0.08, text, ha="center", va="center", fontsize=fs,
                            color="red" if many else "black", gid="writer")  # fmt: skip
                if readers:
                    _dots(ax, dots, x, y, [colours[t] for t in readers])
        if dots[0]:
            ax.scatter(*dots[:2], s=9, c=dots[2], edgecolors="black", linewidths=0.3, zorder=3)
        ax.set_xlim(-3.2, width - 0.3)
        ax.set_ylim(height - 0.3, -1.2)
        ax.set_aspect("equal")
        ax.axis("off")
        title = (
            f"{self.kernel}[{self._domain_text()}]: {self.total_reads} reads, "
            f"{self.total_writes} writes (max per thread {self.max_reads} R / "
            f"{self.max_writes} W)"
        )
        if shown < self.threads:
            title += f"\nonly the first {shown} of {self.threads} threads drawn"
        ax.set_title(title, fontsize=9)
        ax.text(
            0.0, -0.01,
            "fill + id: written by that thread; red ×k: k threads wrote it; dots: read by "
            "those threads",
            transform=ax.transAxes, fontsize=6.5, color="0.3", va="top",
        )  # fmt: skip
        if shown:
            cmap = ListedColormap(colours)
            norm = BoundaryNorm(np.arange(shown + 1) - 0.5, shown)
            bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.8, pad=0.02)
            step = max(1, -(-shown // 16))
            ticks = list(range(0, shown, step))
            bar.set_ticks(ticks)
            bar.set_ticklabels([_short(self._label(t)) for t in ticks])
            bar.ax.tick_params(labelsize=6)
            bar.set_label("thread" + (" (i, j)" if self._two_d else ""), fontsize=7)
        return fig


def _short(label: Any) -> str:
    return f"{label[0]},{label[1]}" if isinstance(label, tuple) else str(label)


def _colours(n: int) -> list[Any]:
    """One distinct colour per thread (tab10 / tab20, then a sampled turbo map)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _dots(
    ax: Axes, dots: tuple[list[float], list[float], list[Any]], x: float, y: float, c: list[Any]
) -> None:
    """Up to 8 reader dots in the lower half of a cell (4 per line), then ``+k``."""
    show = c if len(c) <= 8 else c[:7]
    for n, colour in enumerate(show):
        line, pos = divmod(n, 4)
        dots[0].append(x - 0.33 + pos * 0.22)
        dots[1].append(y + 0.2 + line * 0.2)
        dots[2].append(colour)
    if len(c) > len(show):
        ax.text(x + 0.33, y + 0.4, f"+{len(c) - len(show)}", ha="center", va="center",
                fontsize=4.5)  # fmt: skip


__all__ = ["MAX_THREADS", "PLOT_THREADS", "Trace", "run"]
