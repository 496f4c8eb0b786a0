"""Bad input: each case gets a named vgpu_nb error whose message says what, where and what
to do instead — and still matches the built-in exception NumPy users catch."""

from __future__ import annotations

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import discover


def _available(backend: str) -> list[str]:
    return [i.name for i in discover(backend) if i.available]


def test_mismatched_devices_dot():
    x = vg.ones(4, device="numpy")
    y = vg.ones(4, device="numba")
    with pytest.raises(vg.DeviceMismatch, match=r"different devices.*'numpy'.*'numba'") as e:
        vg.dot(x, y)
    assert "y.to('numpy')" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_mismatched_devices_matmul():
    with pytest.raises(vg.DeviceMismatch, match="matmul"):
        vg.matmul(vg.ones((2, 2), device="numba"), vg.ones((2, 2), device="numpy"))


@pytest.mark.parametrize("dt", [np.complex64, np.float16, np.int8, "U3"])
def test_unsupported_dtype(dt):
    with pytest.raises((vg.UnsupportedDType, vg.NotAnArray)) as e:
        vg.asarray(np.zeros(3, dtype=dt))
    assert isinstance(e.value, TypeError)
    assert "f32" in str(e.value) or "numbers" in str(e.value)


def test_unsupported_dtype_name():
    with pytest.raises(vg.UnsupportedDType, match="float16.*not supported"):
        vg.zeros(3, dtype="float16")


def test_matmul_shape_mismatch():
    with pytest.raises(vg.ShapeMismatch, match=r"\(3, 4\) @ \(5, 2\).*4 ≠ 5") as e:
        vg.matmul(vg.ones((3, 4), device="numpy"), vg.ones((5, 2), device="numpy"))
    assert "transpose" in str(e.value)


def test_dot_shape_mismatch():
    with pytest.raises(vg.ShapeMismatch, match="not aligned"):
        vg.dot(vg.ones(3, device="numpy"), vg.ones(4, device="numpy"))


@pytest.mark.parametrize("bad", [[1, 2, 3], np.ones(3), 3.0, None])
def test_non_array_input(bad):
    with pytest.raises(vg.NotAnArray, match=r"vg\.Array operands.*") as e:
        vg.sum(bad)
    assert "vg.asarray" in str(e.value)


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, [[1, 2], [3]]])
def test_asarray_rejects_non_numbers(bad):
    with pytest.raises(vg.NotAnArray):
        vg.asarray(bad, device="numpy")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "numpy:1", "", 3])
def test_unknown_device(name):
    with pytest.raises(vg.UnknownDevice) as e:
        vg.asarray([1.0], device=name)
    assert "vg.devices()" in str(e.value) or "use" in str(e.value)


def test_device_index_out_of_range():
    with pytest.raises((vg.UnknownDevice, vg.DeviceUnavailable), match="wgpu:99"):
        vg.zeros(3, device="wgpu:99")


@pytest.mark.skipif(bool(_available("cuda")), reason="a CUDA GPU is present here")
def test_unavailable_device_says_why():
    with pytest.raises(vg.DeviceUnavailable) as e:
        vg.zeros(3, device="cuda")
    msg = str(e.value)
    assert "not available" in msg and ("CuPy" in msg or "driver" in msg or "GPU" in msg)


def test_axis_out_of_range():
    x = vg.ones((3, 4), device="numpy")
    with pytest.raises(vg.AxisOutOfRange, match="axis 2 is out of bounds.*dimension 2"):
        vg.sum(x, axis=2)


def test_empty_max_is_value_error():
    with pytest.raises(ValueError, match="zero-size array to reduction operation maximum"):
        vg.max(vg.zeros(0, device="numpy"))


def test_bad_shapes():
    with pytest.raises(vg.ShapeMismatch, match="negative"):
        vg.zeros((2, -1))
    with pytest.raises(vg.ShapeMismatch, match="cannot reshape an array of size 6"):
        vg.zeros(6, device="numpy").reshape(4, 2)


@pytest.mark.skipif(not _available("wgpu"), reason="no WebGPU adapter here")
def test_wgpu_buffer_over_adapter_limit():
    dev = vg.get_device("wgpu")
    limit = dev.info.extra.get("limits", {}).get("max-buffer-size", 2**31)
    n = limit // 4 + 1024
    with pytest.raises(vg.BufferTooLarge, match="max-buffer-size") as e:
        vg.empty(n, dtype=vg.f32, device=dev)
    assert isinstance(e.value, ValueError)


@pytest.mark.skipif(not _available("wgpu"), reason="no WebGPU adapter here")
def test_wgpu_matmul_f64_unsupported():
    a = vg.ones((4, 4), dtype=vg.i32, device="wgpu")
    with pytest.raises(vg.UnsupportedOnBackend, match="matmul.*wgpu") as e:
        vg.matmul(a, a)
    assert "numba" in str(e.value)
