"""vg.memory.report() and vg.memory.trace(): the report shows what stats() says, the trace
collects memory events in order and closes its subscription."""

from __future__ import annotations

import gc

import matplotlib
import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.memory import human
from vgpu_nb.memory.report import MemoryReport, MemoryTrace
from vgpu_nb.telemetry.bus import BUS

matplotlib.use("Agg")

KiB = 1 << 10
N = 128 * KiB // 4  # float32 elements in 128 KiB


@pytest.fixture(autouse=True)
def _reset_budgets():
    yield
    vg.memory.reset()


@pytest.fixture
def small(tmp_path):
    """numba with room for two 128 KiB arrays on the device and four in host memory."""
    vg.memory.configure(device=256 * KiB, host=512 * KiB, spill_dir=tmp_path, devices="numba")
    return vg.get_device("numba")


def _arr(value: float) -> vg.Array:
    return vg.asarray(np.full(N, value, np.float32), device="numba")


def _ids(*arrays: vg.Array) -> set[int]:
    return {a._st.id for a in arrays}


# ---- report --------------------------------------------------------------------------------
def test_report_reflects_stats_after_spills(small):
    xs = [_arr(k) for k in range(8)]  # 1 MiB: 2 on the device, 4 in host memory, 2 on disk
    vg.memory.spill(xs[-1], "disk")
    assert [x.tier for x in xs].count("disk") >= 2
    rep = vg.memory.report(device="numba")
    stats = vg.memory.stats().loc["numba"]
    assert stats.loc["device", "spills"] >= 6 and stats.loc["host", "spills"] >= 2

    text = str(rep)
    assert text == repr(rep) == repr(vg.memory.report(device="numba"))  # deterministic
    lines = text.splitlines()
    assert lines[0] == "vg.memory.report()" and lines[1] == "numba"
    assert lines[2].split() == ["tier", "capacity", "used", "peak", "arrays", "spills",
                                "unspills", "prefetches", "evictions", "spilled"]  # fmt: skip
    rows = {ln.split()[0]: ln for ln in lines[3:6]}
    assert list(rows) == ["device", "host", "disk"]
    for tier, line in rows.items():
        row = stats.loc[tier]
        counts = [int(row[k]) for k in ("arrays", "spills", "unspills", "prefetches", "evictions")]
        tok = line.split()  # ... five counts, then the spilled size (two tokens)
        assert [int(v) for v in tok[-7:-2]] == counts
        assert " ".join(tok[-2:]) == human(row["spilled_bytes"])
        assert human(row["used"]) in line and human(row["peak"]) in line
    assert rows["device"].split()[1:3] == ["256", "KiB"]  # the budget
    assert rows["host"].split()[1:3] == ["512", "KiB"]
    assert "[#####.....]  50%" in rows["device"]  # one array: xs[-1] went to disk
    assert "no budget" in rows["disk"]
    assert lines[-1].startswith("disk tier: no budget; ") and lines[-1].endswith(" free")

    page = rep._repr_html_()
    assert page.count("<table") == 1 and ">numba</caption>" in page
    for head in ("tier", "capacity", "used", "peak", "arrays", "spills", "unspills",
                 "prefetches", "evictions", "spilled"):  # fmt: skip
        assert f">{head}</th>" in page
    assert ">256 KiB</td>" in page and ">512 KiB</td>" in page
    assert "width:50.0%" in page  # the device bar
    assert f">{int(stats.loc['device', 'spills'])}</td>" in page
    assert f">{human(stats.loc['device', 'spilled_bytes'])}</td>" in page
    assert page == vg.memory.report(device="numba")._repr_html_()


def test_report_of_nothing():
    empty = MemoryReport(vg.memory.stats().iloc[0:0], None)
    assert str(empty) == "vg.memory.report()\n  no arrays made yet"
    assert "no arrays made yet" in empty._repr_html_()


def test_report_all_devices_lists_each_device_once(small):
    _keep = _arr(1.0), vg.asarray(np.ones(4), device="numpy")
    text = str(vg.memory.report())
    names = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "vg.", "disk"))]
    assert names == sorted(set(names)) and {"numba", "numpy"} <= set(names)


# ---- trace ---------------------------------------------------------------------------------
def test_trace_collects_kinds_in_order(small):
    with vg.memory.trace() as t:
        a, b = _arr(1.0), _arr(2.0)  # fill the device budget
        c = _arr(3.0)  # LRU: a goes to host memory first
        vg.memory.spill(b, "disk")  # device → host → disk
        assert a.tier == "host" and b.tier == "disk" and c.tier == "device"
        vg.memory.prefetch(a)  # there is room for it: back in the background
        assert vg.memory.wait(10)
        assert a.tier == "device"
        vg.memory.spill(c)
        c_copy = c.copy()  # touching c brings it back
        ids = _ids(a, b, c)
        del b
        gc.collect()
    mine = [e for e in t.events if e.array in ids]
    got = [(e.kind, e.src, e.dst) for e in mine]
    assert got[:8] == [
        ("alloc", None, "device"),
        ("alloc", None, "device"),
        ("spill", "device", "host"),
        ("alloc", None, "device"),
        ("spill", "device", "host"),
        ("spill", "host", "disk"),
        ("prefetch", "host", "device"),
        ("spill", "device", "host"),
    ]
    assert ("unspill", "host", "device") in got[8:]
    assert got[-1] == ("free", "disk", None)
    assert all(e.bytes == 128 * KiB and e.device == "numba" for e in mine)
    assert all(set(e.used) == {"device", "host", "disk"} for e in t.events)
    assert c_copy.tier == "device"
    assert len(t) == len(t.events)
    assert repr(t).startswith("<vg.memory.trace (closed): ")


def test_trace_to_pandas_and_summary(small):
    with vg.memory.trace() as t:
        xs = [_arr(k) for k in range(4)]
        vg.memory.spill(xs[0], "disk")
    df = t.to_pandas()
    for col in ("t_rel", "event", "array", "device", "bytes", "from", "to", "ms", "GB/s",
                "reason", "t", "device_used", "host_used", "disk_used"):  # fmt: skip
        assert col in df.columns
    assert len(df) == len(t.events) and (df["t_rel"] >= 0).all()
    assert df["t_rel"].is_monotonic_increasing
    assert list(df["event"]) == [e.kind for e in t.events]
    assert (df["disk_used"].iloc[-1], df["event"].iloc[-1]) == (128 * KiB, "spill")

    s = t.summary()
    assert list(s.index.names) == ["event", "from", "to"]
    assert list(s.columns) == ["count", "bytes"]
    assert s["count"].sum() == len(t.events) and s["bytes"].sum() == df["bytes"].sum()
    assert s.loc[("spill", "host", "disk"), "count"] == 1
    assert s.loc[("alloc", "-", "device"), "count"] >= 4
    assert list(s.index.get_level_values("event"))[0] == "alloc"


def test_trace_plot_returns_axes_with_lines(small):
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    with vg.memory.trace() as t:
        xs = [_arr(k) for k in range(4)]
        float(vg.sum(xs[0]))  # brings xs[0] back: an unspill
    ax = t.plot()
    try:
        assert isinstance(ax, Axes)
        labels = [ln.get_label() for ln in ax.lines]
        assert {"device (numba)", "host", "disk", "spill", "unspill"} <= set(labels)
        top = next(ln for ln in ax.lines if ln.get_label() == "disk").get_ydata()
        assert max(top) > 0  # bytes were held
        _fig, ax2 = plt.subplots()
        assert ax.get_xlabel() == "seconds since the trace started"
        assert t.plot(ax=ax2, x="event") is ax2 and ax2.lines
        assert ax2.get_xlabel() == "event"
        assert max(ax2.lines[0].get_xdata()) == len(t.events) + 1  # start, events, end
        with pytest.raises(ValueError):
            t.plot(ax=ax2, x="bytes")
    finally:
        plt.close("all")


def test_trace_subscription_is_closed_after_with(small):
    with vg.memory.trace() as t:
        sub = t._sub
        assert sub in BUS._subs and not t.closed
        assert sub.fn == t.events.append  # the callback only appends
        a = _arr(1.0)
    assert t.closed and sub not in BUS._subs
    n = len(t.events)
    b = _arr(2.0)
    vg.memory.spill(a)
    assert len(t.events) == n  # nothing collected after the block
    del b


def test_trace_without_with(small):
    t = vg.memory.trace()
    assert isinstance(t, MemoryTrace) and not t.closed
    a = _arr(1.0)
    t.close()
    t.close()  # idempotent
    assert t.closed and [e.kind for e in t.events if e.array == a._st.id] == ["alloc"]


def test_empty_trace():
    import matplotlib.pyplot as plt

    with vg.memory.trace() as t:
        pass
    assert len(t.to_pandas()) == 0 and "t_rel" in t.to_pandas().columns
    assert len(t.summary()) == 0
    assert repr(t) == "<vg.memory.trace (closed): 0 events>"
    t.plot()
    plt.close("all")
