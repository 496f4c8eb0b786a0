"""The wgpu backend beyond the conformance suite: discovery, restricted devices (the
no-f64 / no-int64 / no-subgroup paths, runnable on llvmpipe), size limits, binding
windows, timestamps, matmul edges and errors.

Runs on whatever WebGPU adapters the machine has (in CI: Mesa llvmpipe, Vulkan and GL).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.dtypes import as_dtype
from vgpu_nb.ops.reductions import roles

wb = pytest.importorskip("vgpu_nb.backends.wgpu_backend")
pytest.importorskip("wgpu")

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
ROWS = [r for r in wb.discover() if r.available]
if not ROWS:
    pytest.skip("no WebGPU adapter on this machine", allow_module_level=True)

NAMES = [r.name for r in ROWS]
# the first adapter with every optional feature (llvmpipe-Vulkan in CI): restricted devices
# are opened on it, so that each fallback path runs next to the full one
FULL = next(
    (r for r in ROWS if set(r.extra["compute_features"]) == set(wb.OPTIONAL_FEATURES)), None
)


def _conformance():
    sys.path.insert(0, os.path.dirname(__file__))
    import test_conformance

    return test_conformance


# ---- discovery ------------------------------------------------------------------------------
def test_discovery_rows():
    rows = wb.discover()
    assert [r.name for r in rows] == [f"wgpu:{i}" for i in range(len(rows))]
    for r in rows:
        assert r.backend == "wgpu"
        # usable, or refused with a reason (an OpenGL context too old for compute shaders)
        assert r.available == (r.why_not is None)
        if not r.available:
            assert r.extra["backend_type"] == "OpenGL" and "compute shaders" in r.why_not
        backend = r.extra["backend_type"]
        assert r.adapter.split(" / ")[1].startswith(backend)
        assert r.kind == ("cpu-emulated gpu" if r.extra["adapter_type"] == "CPU" else "gpu")
        assert r.adapter.endswith("(CPU-emulated)") == (r.kind == "cpu-emulated gpu")
        assert set(r.extra["compute_features"]) <= set(wb.OPTIONAL_FEATURES)
        assert r.extra["limits"]["max-storage-buffer-binding-size"] > 0
    # real GPUs first, then Vulkan > Metal > D3D12 > OpenGL
    keys = [wb._adapter_key(a) for a in wb.adapters()]
    assert keys == sorted(keys)
    assert wb.adapters() is wb.adapters()  # enumerated once per process


def test_discovery_without_wgpu_py():
    """With wgpu-py not importable: one unavailable row with the install hint."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["wgpu"] = None  # what an environment without wgpu-py looks like
        from vgpu_nb.backends import wgpu_backend
        (row,) = wgpu_backend.discover()
        print(row.name, row.available, row.why_not, sep="|")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, available, why = out.stdout.strip().split("|")
    assert (name, available) == ("wgpu", "False")
    assert why == "wgpu-py is not installed: pip install 'vgpu-nb[wgpu]'"


# ---- restricted devices: the fallback paths -------------------------------------------------
RESTRICTED = {
    "no-subgroup": ("shader-f64", "shader-int64", "timestamp-query"),
    "f64-no-int64": ("shader-f64",),
    "bare": (),
}


@pytest.fixture(scope="module", params=list(RESTRICTED), ids=list(RESTRICTED))
def restricted(request: pytest.FixtureRequest) -> vg.Device:
    if FULL is None:
        pytest.skip("no adapter with all optional features")
    dev = wb.open_device(FULL, features=RESTRICTED[request.param])
    assert dev.features == set(RESTRICTED[request.param])
    return dev


def _subset():
    """Every op × dtype on small and odd shapes, the big prime size for a few ops."""
    tc = _conformance()
    return [
        c
        for c in tc.CASES
        if max(c[2], default=0) <= 1000 or (c[0] in ("sum", "argmax", "var") and c[3] != 0)
    ]


def test_restricted_device_conformance(restricted):
    """Workgroup-memory trees instead of subgroups, and UnsupportedOnBackend wherever a
    dtype needs a missing feature (run_case checks both)."""
    tc = _conformance()
    for case in _subset():
        tc.run_case(restricted, *case)
    rng = np.random.default_rng(0)
    for dt in tc.DTYPES:
        for n in (1, 1000, 1_000_003):
            tc.test_dot(restricted, dt, n, rng)


def test_restricted_device_refuses(restricted):
    feats = restricted.features
    f64 = vg.asarray(np.arange(5.0), device=restricted)
    i32 = vg.asarray(np.arange(5, dtype=np.int32), device=restricted)
    if "shader-f64" not in feats:
        with pytest.raises(vg.UnsupportedOnBackend, match="shader-f64"):
            vg.sum(f64)
    if "shader-int64" not in feats:
        with pytest.raises(vg.UnsupportedOnBackend, match="shader-int64"):
            vg.sum(i32)  # int32 sums are int64
        if "shader-f64" in feats:  # NaN detection on f64 needs 64-bit bitcasts
            with pytest.raises(vg.UnsupportedOnBackend, match="NaN"):
                vg.max(f64)
        assert int(vg.argmax(i32)) == 4  # the int64 index itself needs no int64 support
        b = vg.asarray(np.array([0, 1, 1], bool), device=restricted)
        assert bool(vg.dot(b, b)) is True  # bool · bool is any(x & y)
    if "timestamp-query" not in feats:
        assert restricted.start_timer() is None


def test_unsupported_reasons():
    dev = vg.get_device(NAMES[0])
    f32, f64, i64 = (as_dtype(d) for d in ("f32", "f64", "i64"))
    assert "f32-only" in dev.unsupported("matmul", [f64], f64)
    assert dev.unsupported("matmul", [f32, f32], f32) is None
    assert dev.unsupported("argmin", [f32], i64, f32) is None  # index output only
    with pytest.raises(vg.UnsupportedOnBackend, match="f32-only"):
        vg.matmul(vg.ones((2, 2), vg.f64, device=dev), vg.ones((2, 2), vg.f64, device=dev))


# ---- NaN and ties along an axis -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("op", ["min", "max", "argmin", "argmax"])
def test_axis_nan_and_ties(name, op):
    dev = vg.get_device(name)
    rng = np.random.default_rng(3)
    for shape in [(5, 300), (300, 5), (2000, 3), (3, 2000)]:
        a = rng.integers(-3, 3, shape).astype(np.float32)  # many ties
        a[1, 2] = a[2, 1] = a[2, 2] = np.nan
        x = vg.asarray(a, device=dev)
        for axis in (0, 1):
            got = getattr(vg, op)(x, axis=axis).numpy()
            np.testing.assert_array_equal(got, getattr(np, op)(a, axis=axis))


@pytest.mark.parametrize("name", NAMES)
def test_axis_reductions_split_into_slices(name, monkeypatch):
    """Few outputs: the reduced axis is cut into slices and a gather pass combines them
    (forced here with a huge thread target, so that llvmpipe runs that path too)."""
    from vgpu_nb.backends.wgsl import reduce as wred

    monkeypatch.setattr(wred, "AXIS_TARGET_THREADS_CPU", 1 << 30)
    monkeypatch.setattr(wred, "AXIS_TARGET_THREADS_GPU", 1 << 30)
    monkeypatch.setattr(wred, "AXIS_MIN_SLICE", 4)
    dev = vg.get_device(name)
    tc = _conformance()
    shapes = [(40, 1000), (1000, 40), (3, 5000), (5000, 3)]
    plans = {wred.axis_plan(ax, *s, 1 << 30) for s in shapes for ax in (0, 1)}
    assert {mode for mode, slices in plans if slices > 1} == set(wred.AXIS_MODES)
    for op in ("sum", "max", "argmin", "argmax", "var", "norm"):
        for dt in ("f32", "i32", "bool", "f64"):
            for shape in shapes:
                for axis in (0, 1):
                    tc.run_case(dev, op, dt, shape, axis)


@pytest.mark.parametrize("name", NAMES)
def test_many_outputs_use_2d_dispatch(name):
    """More than 65535 workgroups: the grid is folded into two dimensions."""
    dev = vg.get_device(name)
    limit = dev.limits["max-compute-workgroups-per-dimension"]
    a = np.random.default_rng(4).random((limit + 7, 256), dtype=np.float32)
    got = vg.max(vg.asarray(a, device=dev), axis=1).numpy()
    np.testing.assert_array_equal(got, a.max(axis=1))


def test_mixed_dtype_dot():
    dev = vg.get_device(NAMES[0])
    rng = np.random.default_rng(5)
    for da, db in [("u32", "i32"), ("f32", "f64"), ("bool", "i32")]:
        a = rng.integers(0, 1000, 1001).astype(as_dtype(da).np)
        b = rng.integers(-1000, 1000, 1001).astype(as_dtype(db).np)
        x, y = vg.asarray(a, device=dev), vg.asarray(b, device=dev)
        ref = np.dot(a, b)
        if dev.unsupported("dot", *roles("dot", x.dtype, y.dtype)):
            continue
        got = vg.dot(x, y).numpy()
        assert got.dtype == ref.dtype and got == ref


# ---- limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_buffer_over_max_buffer_size(name):
    """Refused before allocation (asking for 4× the limit would otherwise fail in wgpu)."""
    dev = vg.get_device(name)
    limit = dev.limits["max-buffer-size"]
    with pytest.raises(vg.BufferTooLarge, match="max-buffer-size") as err:
        vg.zeros(limit + 1, vg.bool, device=dev)
    assert str(limit) in str(err.value) and str(limit + 1) in str(err.value)
    with pytest.raises(vg.BufferTooLarge):
        dev.empty((limit,), as_dtype("f32"))


@pytest.fixture(scope="module")
def big():
    """40 M float32 = 160 MB: above llvmpipe's 128 MiB storage binding limit."""
    dev = vg.get_device(NAMES[0])
    a = np.random.default_rng(6).uniform(-1, 1, 40_000_000).astype(np.float32)
    a[39_999_998] = 7.0
    a[1234] = -7.0
    if a.nbytes <= dev.limits["max-storage-buffer-binding-size"]:
        pytest.skip("this adapter binds 160 MB at once; no windows needed")
    return a, vg.asarray(a, device=dev)


def test_full_reduction_in_binding_windows(big):
    a, x = big
    exact = np.sum(a, dtype=np.float64)
    assert abs(float(vg.sum(x)) - exact) <= 1e-4 * np.sum(np.abs(a, dtype=np.float64))
    assert int(vg.argmax(x)) == 39_999_998 and int(vg.argmin(x)) == 1234
    assert float(vg.max(x)) == 7.0 and float(vg.min(x)) == -7.0
    np.testing.assert_allclose(float(vg.std(x)), np.std(a, dtype=np.float64), rtol=1e-4)


def test_axis_reduction_over_binding_limit(big):
    a, x = big
    with pytest.raises(vg.BufferTooLarge, match="max-storage-buffer-binding-size"):
        vg.sum(x.reshape(2, -1), axis=1)


# ---- timing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_timestamp_timer(name):
    dev = vg.get_device(name)
    x = vg.asarray(np.ones(1 << 20, np.float32), device=dev)
    if dev.start_timer() is None:
        pytest.skip(f"{name} has no timestamp-query")
    with vg.profile() as p:
        vg.var(x)  # two reductions, four dispatches
        m = vg.matmul(vg.ones((64, 64), device=dev), vg.ones((64, 64), device=dev))
    assert float(m.numpy()[0, 0]) == 64.0
    assert len(p.records) == 2
    for rec in p.records:
        assert rec.device_s is not None and 0 < rec.device_s < 60


# ---- matmul ---------------------------------------------------------------------------------
SHAPES = [(1, 1, 1), (7, 5, 3), (200, 3, 170), (129, 130, 131), (128, 128, 128), (5, 8, 8),
          (256, 8, 4), (3, 1000, 2), (130, 12, 128), (1, 64, 257)]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_matmul_odd_shapes(name):
    dev = vg.get_device(name)
    rng = np.random.default_rng(7)
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        got = vg.matmul(vg.asarray(a, device=dev), vg.asarray(b, device=dev)).numpy()
        ref = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        assert got.shape == (m, n)
        assert np.all(np.abs(got - ref) <= 4 * np.finfo(np.float32).eps * k * scale), (m, k, n)


def test_matmul_over_binding_limit():
    dev = vg.get_device(NAMES[0])
    limit = dev.limits["max-storage-buffer-binding-size"]
    rows = limit // 4 + 16
    if rows * 4 > dev.limits["max-buffer-size"]:
        pytest.skip("no buffer can exceed the binding limit on this adapter")
    a = vg.zeros((rows, 1), device=dev)  # allocated (zeroed), never bound
    with pytest.raises(vg.BufferTooLarge, match="max-storage-buffer-binding-size"):
        vg.matmul(a, vg.ones((1, 1), device=dev))


# ---- errors and caching ---------------------------------------------------------------------
def test_backend_error_keeps_the_wgpu_message():
    from vgpu_nb.backends.wgsl import Shader

    dev = vg.get_device(NAMES[0])
    bad = Shader("@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }", (), (), 1)
    with pytest.raises(vg.BackendError, match="compiling a WGSL shader") as err:
        dev._pipeline(bad)
    assert "wgsl" in str(err.value).lower() and err.value.__cause__ is not None


def test_pipelines_are_cached():
    dev = vg.get_device(NAMES[0])
    x = vg.asarray(np.arange(100, dtype=np.float32), device=dev)
    vg.sum(x)
    n = len(dev._pipelines)
    for _ in range(3):
        assert float(vg.sum(x)) == 4950.0
    assert len(dev._pipelines) == n
