"""``kernel.trace(n, *args)``: per-thread access traces on the NumPy backend (issue 6).

Exact read and write sets of small kernels (map, guarded, stencil, 2-D, atomic histogram,
device functions), the user's arrays untouched, the score's counts, the picture, the
reprs, and the same errors as a launch."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
import pytest

import vgpu_nb as vg
from vgpu_nb.errors import KernelRuntimeError, KernelTypeError, TraceTooLarge
from vgpu_nb.kernel import pyrt
from vgpu_nb.kernel.trace import PLOT_THREADS, Trace

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
matplotlib.use("Agg")


# ---- kernels -----------------------------------------------------------------------------
@vg.kernel
def add_one(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = x[i] + 1.0


@vg.kernel
def guarded(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    if i < x.shape[0]:
        y[i] = x[i] * 2.0


@vg.kernel
def stencil(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    if i > 0 and i < x.shape[0] - 1:
        y[i] = x[i - 1] + x[i] + x[i + 1]


@vg.kernel
def transpose(a: vg.f32[:, :], b: vg.f32[:, :]):
    i, j = vg.tid()
    b[j, i] = a[i, j]


@vg.kernel
def histogram(x: vg.i32[:], bins: vg.i32[:]):
    i = vg.tid()
    vg.atomic_add(bins, x[i], 1)


@vg.kernel
def scaled(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.func
def pair_sum(x, i):
    return x[i] + x[i + 1]


@vg.kernel
def via_func(x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = pair_sum(x, i)


@vg.kernel
def row_sums(m: vg.f32[:, :], out: vg.f32[:]):
    i = vg.tid()
    s = 0.0
    for j in range(m.shape[1]):
        s += m[i, j]
    out[i] = s


def arr(values, dtype=vg.f32, device="numpy"):
    return vg.asarray(np.asarray(values, dtype=dtype.np), device=device)


def accesses(df: pd.DataFrame) -> set[tuple]:
    return {(t, a, i) for t, a, i in zip(df["thread"], df["array"], df["index"], strict=True)}


# ---- read and write sets -------------------------------------------------------------------
def test_map_each_thread_reads_and_writes_its_element_once():
    x, y = arr(np.arange(8)), arr(np.zeros(8))
    t = add_one.trace(8, x, y)
    assert isinstance(t, Trace)
    assert list(t.reads.columns) == ["thread", "array", "index", "atomic"]
    assert t.reads["thread"].tolist() == list(range(8))  # execution order: launch order
    assert accesses(t.reads) == {(i, "x", i) for i in range(8)}
    assert accesses(t.writes) == {(i, "y", i) for i in range(8)}
    assert not t.reads["atomic"].any() and not t.writes["atomic"].any()
    s = t.score(summary=False)
    assert s["reads"].tolist() == [1] * 8 and s["writes"].tolist() == [1] * 8
    assert s["x reads"].tolist() == [1] * 8 and s["y writes"].tolist() == [1] * 8
    assert s["x writes"].sum() == 0 and s["y reads"].sum() == 0
    np.testing.assert_array_equal(t.arrays["y"], np.arange(8, dtype=np.float32) + 1)


def test_guarded_threads_beyond_the_data_do_nothing():
    x, y = arr(np.arange(5)), arr(np.zeros(5))
    t = guarded.trace(8, x, y)
    assert accesses(t.reads) == {(i, "x", i) for i in range(5)}
    assert accesses(t.writes) == {(i, "y", i) for i in range(5)}
    s = t.score(summary=False)
    assert len(s) == 8  # every thread has a row, idle ones too
    assert s.loc[[5, 6, 7], ["reads", "writes"]].to_numpy().sum() == 0
    assert s.loc[[0, 4], "reads"].tolist() == [1, 1]


def test_stencil_exact_read_sets():
    n = 6
    x, y = arr(np.arange(n)), arr(np.zeros(n))
    t = stencil.trace(n, x, y)
    reads = t.reads
    for i in range(n):
        mine = reads[reads["thread"] == i]
        want = [i - 1, i, i + 1] if 0 < i < n - 1 else []
        assert mine["index"].tolist() == want, i  # in program order
        assert set(mine["array"]) <= {"x"}
    assert accesses(t.writes) == {(i, "y", i) for i in range(1, n - 1)}
    s = t.score()
    assert s.loc["max", "reads"] == 3 and s.loc["max", "writes"] == 1
    assert s.loc["total", "reads"] == 3 * (n - 2) == t.total_reads
    # element x[2] is read by threads 1, 2, 3
    assert sorted(reads.loc[reads["index"] == 2, "thread"]) == [1, 2, 3]


def test_two_d_kernel_threads_and_indices_are_pairs():
    a = arr(np.arange(6).reshape(2, 3))
    b = arr(np.zeros((3, 2)))
    t = transpose.trace((2, 3), a, b)
    assert t.threads == 6 and t.domain == (2, 3)
    assert accesses(t.reads) == {((i, j), "a", (i, j)) for i in range(2) for j in range(3)}
    assert accesses(t.writes) == {((i, j), "b", (j, i)) for i in range(2) for j in range(3)}
    s = t.score(summary=False)
    assert s.index.tolist() == [(i, j) for i in range(2) for j in range(3)]
    assert s.loc[[(1, 2)], "reads"].tolist() == [1]
    np.testing.assert_array_equal(t.arrays["b"], np.arange(6, dtype=np.float32).reshape(2, 3).T)


def test_loop_over_a_row_reads_every_column():
    m = arr(np.arange(12).reshape(3, 4))
    out = arr(np.zeros(3))
    t = row_sums.trace(3, m, out)
    r = t.reads
    for i in range(3):
        assert r.loc[r["thread"] == i, "index"].tolist() == [(i, j) for j in range(4)]
    assert t.max_reads == 4 and t.max_writes == 1
    np.testing.assert_array_equal(t.arrays["out"], np.arange(12).reshape(3, 4).sum(1))


def test_atomic_histogram_counts_read_and_write():
    keys = [0, 1, 1, 3, 3, 3, 2, 0]
    x, bins = arr(keys, vg.i32), arr(np.zeros(4), vg.i32)
    t = histogram.trace(8, x, bins)
    w = t.writes
    assert accesses(w) == {(i, "bins", k) for i, k in enumerate(keys)}
    assert w["atomic"].all()
    r = t.reads
    assert accesses(r[r["array"] == "bins"]) == {(i, "bins", k) for i, k in enumerate(keys)}
    assert r.loc[r["array"] == "bins", "atomic"].all()
    assert not r.loc[r["array"] == "x", "atomic"].any()
    s = t.score()
    assert s.loc["max", "reads"] == 2 and s.loc["max", "writes"] == 1  # x[i] + the atomic
    assert s.loc["total", "bins reads"] == 8 and s.loc["total", "bins writes"] == 8
    np.testing.assert_array_equal(t.arrays["bins"], [2, 2, 1, 3])
    # three threads wrote bin 3 (the plot's red ×3)
    assert sorted(w.loc[w["index"] == 3, "thread"]) == [3, 4, 5]


def test_accesses_inside_device_functions_are_recorded():
    x, y = arr(np.arange(5)), arr(np.zeros(4))
    t = via_func.trace(4, x, y)
    assert accesses(t.reads) == {(i, "x", k) for i in range(4) for k in (i, i + 1)}
    assert t.total_reads == 8


def test_scalar_arguments_and_read_modify_write():
    x, y = arr([1, 2, 3]), arr([10, 20, 30])
    t = scaled.trace(3, 2.0, x, y)
    assert accesses(t.reads) == {(i, a, i) for i in range(3) for a in ("x", "y")}
    np.testing.assert_array_equal(t.arrays["y"], [12, 24, 36])


# ---- the user's data -------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["numpy", "numba"])
def test_users_arrays_are_unchanged(device):
    keys = np.array([0, 1, 1, 3], np.int32)
    x, bins = arr(keys, vg.i32, device), arr(np.zeros(4), vg.i32, device)
    t = histogram.trace(4, x, bins)
    np.testing.assert_array_equal(bins.numpy(), np.zeros(4, np.int32))
    np.testing.assert_array_equal(x.numpy(), keys)
    np.testing.assert_array_equal(t.arrays["bins"], [1, 2, 0, 1])
    assert not np.shares_memory(t.arrays["bins"], bins.numpy())


def test_same_array_twice_shares_one_copy():
    x = arr([1, 2, 3])
    t = add_one.trace(3, x, x)  # y[i] = x[i] + 1 in place
    assert t.arrays["x"] is t.arrays["y"]
    np.testing.assert_array_equal(t.arrays["y"], [2, 3, 4])
    np.testing.assert_array_equal(x.numpy(), [1, 2, 3])


def test_normal_launches_are_unaffected():
    keys = arr([0, 0, 1], vg.i32)
    bins = arr(np.zeros(2), vg.i32)
    histogram.trace(3, keys, bins)
    assert pyrt.STATE.thread == ()
    histogram[3](keys, bins)
    np.testing.assert_array_equal(bins.numpy(), [2, 1])
    ck = histogram._compiled[vg.get_device("numpy")]
    assert ck.handle.__globals__["atomic"] is pyrt.atomic  # the cached program untouched


# ---- score, reprs, plot -----------------------------------------------------------------------
def test_score_totals_match_the_access_tables():
    x, y = arr(np.arange(10)), arr(np.zeros(10))
    t = stencil.trace(10, x, y)
    s = t.score()
    assert s.index[-2:].tolist() == ["max", "total"]
    assert s.loc["total", "reads"] == len(t.reads) == t.total_reads == 24
    assert s.loc["total", "writes"] == len(t.writes) == t.total_writes == 8
    per_thread = t.score(summary=False)
    assert (per_thread.sum() == s.loc["total"]).all()
    assert (per_thread.max() == s.loc["max"]).all()
    assert s.loc["total", "x reads"] + s.loc["total", "y reads"] == s.loc["total", "reads"]


def test_repr_and_html_show_the_numbers():
    x, y = arr(np.arange(6)), arr(np.zeros(6))
    t = stencil.trace(6, x, y)
    text = repr(t)
    for part in ("stencil", "6 threads", "12 reads", "4 writes", "3 reads, 1 writes"):
        assert part in text, (part, text)
    h = t._repr_html_()
    assert "<table" in h and "stencil[6]" in h
    assert "<td>12</td>" in h and "<td>3</td>" in h and "<td>4</td>" in h
    assert "max per thread" in h and "total" in h


def test_plot_returns_a_figure():
    from matplotlib.figure import Figure

    x, bins = arr([0, 1, 1, 3], vg.i32), arr(np.zeros(4), vg.i32)
    fig = histogram.trace(4, x, bins).plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "8 reads, 4 writes" in ax.get_title()  # x[i] and the atomic read; the atomic write
    writers = [t.get_text() for t in ax.texts if t.get_gid() == "writer"]
    assert writers == ["0", "×2", "3"]  # bins 0, 1 (two threads), 3; bin 2 untouched
    fig.canvas.draw()  # renders without error (Agg)


def test_plot_on_given_axes_two_d():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    a, b = arr(np.arange(6).reshape(2, 3)), arr(np.zeros((3, 2)))
    out = transpose.trace((2, 3), a, b).plot(ax=ax)
    assert out is fig
    writers = [t.get_text() for t in ax.texts if t.get_gid() == "writer"]
    assert writers == ["0,0", "1,0", "0,1", "1,1", "0,2", "1,2"]  # b[j, i] by thread (i, j)


def test_plot_large_launch_draws_the_first_threads_and_says_so():
    n = 100
    x, y = arr(np.arange(n)), arr(np.zeros(n))
    fig = add_one.trace(n, x, y).plot()
    title = fig.axes[0].get_title()
    assert f"first {PLOT_THREADS} of {n} threads" in title
    writers = [int(t.get_text()) for t in fig.axes[0].texts if t.get_gid() == "writer"]
    assert writers == list(range(PLOT_THREADS))  # y[i] written by thread i, i < 64 only


def test_empty_domain():
    x, y = arr(np.arange(3)), arr(np.zeros(3))
    t = add_one.trace(0, x, y)
    assert t.threads == 0 and t.total_reads == 0 and len(t.reads) == 0
    assert t.score().loc["total", "reads"] == 0
    assert "0 threads" in repr(t)


# ---- errors ----------------------------------------------------------------------------------
def same_error(launch, trace) -> None:
    with pytest.raises(Exception) as a:
        launch()
    with pytest.raises(Exception) as b:
        trace()
    assert type(a.value) is type(b.value) and str(a.value) == str(b.value)


def test_bad_arguments_raise_what_a_launch_raises():
    x, y = arr(np.arange(4)), arr(np.zeros(4))
    xi = arr(np.arange(4), vg.i32)
    same_error(lambda: add_one[4](x), lambda: add_one.trace(4, x))
    same_error(lambda: add_one[4](xi, y), lambda: add_one.trace(4, xi, y))
    same_error(lambda: add_one[4](np.zeros(4), y), lambda: add_one.trace(4, np.zeros(4), y))
    same_error(lambda: add_one[(2, 2)](x, y), lambda: add_one.trace((2, 2), x, y))
    same_error(lambda: scaled[4](1.5j, x, y), lambda: scaled.trace(4, 1.5j, x, y))
    with pytest.raises(KernelTypeError):
        transpose.trace(4, arr(np.zeros((2, 2))), arr(np.zeros((2, 2))))


def test_out_of_range_names_the_thread():
    x, y = arr(np.arange(4)), arr(np.zeros(4))
    with pytest.raises(KernelRuntimeError, match=r"thread \(4\)"):
        add_one.trace(5, x, y)
    np.testing.assert_array_equal(y.numpy(), np.zeros(4))


def test_too_many_threads_is_a_named_error():
    x, y = arr(np.arange(4)), arr(np.zeros(4))
    with pytest.raises(TraceTooLarge, match="max_threads=3"):
        guarded.trace(4, x, y, max_threads=3)
    t = guarded.trace(4, x, y, max_threads=None)
    assert t.total_writes == 4
