"""vg.Array behaviour, the default device, and the telemetry bus / vg.profile()."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.telemetry import BUS


def test_metadata_and_interop(device):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = vg.asarray(a, device=device)
    assert (x.shape, x.ndim, x.size, x.nbytes, len(x)) == ((3, 4), 2, 12, 48, 3)
    assert x.dtype is vg.f32 and x.device is device
    np.testing.assert_array_equal(np.asarray(x), a)
    y = x.reshape(-1)
    assert y.shape == (12,)
    np.testing.assert_array_equal(y.numpy(), a.ravel())
    assert x.reshape(2, 6).numpy().tolist() == a.reshape(2, 6).tolist()
    r = vg.sum(x)
    assert r.shape == () and float(r) == 66.0 and r.item() == 66.0
    assert "66" in repr(r) and device.name in repr(r)


def test_astype_and_copy(device):
    x = vg.asarray([1.5, -2.5, 3.0], dtype=vg.f32, device=device)
    np.testing.assert_array_equal(x.astype(vg.i32).numpy(), np.array([1, -2, 3], np.int32))
    c = x.copy()
    assert c.device is device and c.numpy().tolist() == [1.5, -2.5, 3.0]


def test_asarray_follows_numpy_dtype_rules():
    assert vg.asarray([1.0, 2.0], device="numpy").dtype is vg.f64
    assert vg.asarray([1, 2], device="numpy").dtype is vg.i64
    assert vg.asarray([True], device="numpy").dtype is vg.bool
    assert vg.arange(5, device="numpy").dtype is vg.i64
    assert vg.zeros(3, device="numpy").dtype is vg.f32  # creation default, like Warp


def test_cuda_interop_attributes_only_on_cuda():
    x = vg.ones(3, device="numpy")
    assert not hasattr(x, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="only available on CUDA arrays"):
        x.__dlpack__  # noqa: B018


def test_default_device_scoping():
    before = vg.default_device()
    with vg.device("numpy") as d:
        assert d.name == "numpy" and vg.zeros(2).device.name == "numpy"
        seen = []
        t = threading.Thread(target=lambda: seen.append(vg.default_device().name))
        t.start()
        t.join()
        assert seen == [before.name]  # the scope is per thread / task
    assert vg.default_device() is before
    vg.use("numpy")
    try:
        assert vg.ones(1).device.name == "numpy"
    finally:
        vg.use(before)


def test_devices_table():
    df = vg.devices()
    assert {"numpy", "numba"} <= set(df.index)
    assert {"backend", "adapter", "kind", "available", "why_not"} <= set(df.columns)
    assert df.loc["numpy", "available"]
    for name, row in df.iterrows():
        assert row["available"] or row["why_not"], f"{name} is unavailable without a reason"


def test_profile_records_ops(device):
    x = vg.asarray(np.ones(1000, np.float32), device=device)
    m = vg.ones((16, 16), device=device)
    with vg.profile() as p:
        vg.sum(x)
        vg.var(x)
        vg.matmul(m, m)
    df = p.table()
    assert list(df["op"]) == ["sum", "var", "matmul"]
    assert set(df["device"]) == {device.name}
    assert list(df["bytes"]) == [4000 + 4, 2 * 4000 + 4, 3 * 16 * 16 * 4]
    assert list(df["flops"]) == [1000, 4000, 2 * 16**3]
    assert (df["host_ms"] > 0).all() and (df["GB/s"] > 0).all()
    if device.backend in ("numpy", "numba"):
        assert df["device_ms"].isna().all()  # host time is the device time there
    assert not BUS.active  # leaving the block unsubscribed


def test_no_records_without_subscribers(device):
    x = vg.ones(10, device=device)
    got = []
    sub = BUS.subscribe(got.append)
    sub.close()
    vg.sum(x)
    assert got == []


def test_broken_subscriber_does_not_break_ops():
    def bad(_):
        raise RuntimeError("boom")

    x = vg.ones(10, device="numpy")
    with BUS.subscribe(bad), pytest.warns(RuntimeWarning, match="subscriber"):
        assert float(vg.sum(x)) == 10.0
        assert float(vg.sum(x)) == 10.0  # warned once, still computing


def test_subscription_filters_kinds():
    got = []
    x = vg.ones(10, device="numpy")
    with BUS.subscribe(got.append, kinds=("memory",)):
        vg.sum(x)
    assert got == []
