"""The numba backend beyond the conformance suite: discovery, the work grid's edges (chunk,
lane, row-block and column-tile boundaries), integer wrap-around, first-index/NaN rules in
2-D, and bit-for-bit determinism whatever the number of threads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.backends import numba_backend as nb
from vgpu_nb.dtypes import as_dtype

numba = pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]
C, L, RB, CT = nb.CHUNK, nb.LANES, nb.ROW_BLOCK, nb.COL_TILE
# lengths at and around every edge of the row grid (lanes, chunks, several chunks + tail)
EDGE_SIZES = [1, 2, L - 1, L, L + 1, C - 1, C, C + 1, 3 * C + L + 5]
# 2-D shapes x axes reaching several row blocks and column tiles, short and single rows/cols
SHAPES_2D = [
    ((2 * RB + 3, CT + 77), 0), ((2 * RB + 3, CT + 77), 1), ((2 * RB + 3, CT + 77), None),
    ((1, 300), 0), ((300, 1), 0), ((3, 3 * C + 5), 0), ((3, 3 * C + 5), 1),
    ((5000, 3), 1), ((5000, 3), 0), ((7, L + 1), 1),
]  # fmt: skip


def _data(dt: str, shape: tuple[int, ...], op: str = "sum") -> np.ndarray:
    """Reproducible data; factors near 1 (floats) or in ±1..3 (integers) for products."""
    rng = np.random.default_rng(zlib.crc32(repr((dt, shape, op)).encode()))
    n = math.prod(shape)
    if dt == "bool":
        a = rng.random(n) < 0.5
    elif dt in ("f32", "f64"):
        a = 1 + (rng.random(n) - 0.5) * 1e-3 if op == "prod" else rng.uniform(-1, 1, n)
    elif op == "prod":
        a = rng.choice([1, 2, 3] if dt == "u32" else [-3, -2, -1, 1, 2, 3], n)
    else:
        a = rng.integers(0 if dt == "u32" else -1000, 1000, n)
    return np.asarray(a).astype(as_dtype(dt).np).reshape(shape)


def _same(op: str, got: np.ndarray, ref: np.ndarray) -> None:
    """Exact for integers, booleans and min/max/arg*; floats to a few hundred ulp of the
    sums involved (NumPy's own summation order differs from ours)."""
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, ref.dtype)
    if got.dtype.kind != "f" or op in ("min", "max"):
        np.testing.assert_array_equal(got, ref)
    else:
        rtol = 1e-4 if got.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)


@pytest.fixture(scope="module")
def dev() -> vg.Device:
    return vg.get_device("numba")


def test_discover_row() -> None:
    (info,) = nb.discover()
    assert (info.name, info.backend, info.kind, info.available) == ("numba", "numba", "cpu", True)
    assert info.adapter.startswith(f"Numba {'.'.join(numba.__version__.split('.')[:2])} / LLVM on")
    assert info.compute_units == numba.config.NUMBA_NUM_THREADS
    assert info.memory_bytes and info.memory_bytes > 2**28
    assert isinstance(vg.get_device("numba"), nb.NumbaDevice)


def test_without_numba_the_row_says_why() -> None:
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from vgpu_nb.backends import numba_backend as nb\n"
        "(i,) = nb.discover(); print(i.available, '|', i.why_not)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False | Numba is not installed: pip install numba"


@pytest.mark.parametrize("dt", ["f32", "i32", "u32", "bool"])
def test_row_grid_edges_match_numpy(dev: vg.Device, dt: str) -> None:
    ref_dev = vg.get_device("numpy")
    for n in EDGE_SIZES:
        for op in ("sum", "prod", "min", "max", "argmin", "argmax", "mean", "var", "norm"):
            a = _data(dt, (n,), op)
            got = getattr(vg, op)(vg.asarray(a, device=dev)).numpy()
            ref = getattr(vg, op)(vg.asarray(a, device=ref_dev)).numpy()
            _same(op, got, ref)


@pytest.mark.parametrize("dt", ["f64", "i64", "bool"])
@pytest.mark.parametrize("shape,axis", SHAPES_2D, ids=[f"{s}-ax{a}" for s, a in SHAPES_2D])
def test_2d_layouts_match_numpy(dev: vg.Device, dt: str, shape: tuple[int, int], axis) -> None:
    for op in ("sum", "prod", "min", "max", "argmin", "argmax", "mean", "std"):
        a = _data(dt, shape, op)
        got = getattr(vg, op)(vg.asarray(a, device=dev), axis=axis).numpy()
        ref = getattr(np, op)(a, axis=axis)
        _same(op, got, np.asarray(ref))


def test_extremum_found_in_every_lane(dev: vg.Device) -> None:
    """A unique extremum (or NaN) at every lane position of a chunk and around chunk
    edges is found: each lane's running best and the fold over lanes count."""
    n = 2 * C + 3
    positions = [*range(2 * L + 1), C - 1, C, C + L - 1, 2 * C, n - 1]
    for p in positions:
        for value, ops in ((1.0, ("argmax", "max")), (-1.0, ("argmin", "min"))):
            a = np.zeros(n, np.float32)
            a[p] = value
            x = vg.asarray(a, device=dev)
            assert getattr(vg, ops[0])(x).item() == p
            assert getattr(vg, ops[1])(x).item() == value
        a = np.zeros(n, np.float32)
        a[p] = np.nan
        x = vg.asarray(a, device=dev)
        assert vg.argmin(x).item() == p and vg.argmax(x).item() == p
        assert np.isnan(vg.min(x).item()) and np.isnan(vg.max(x).item())


@pytest.mark.parametrize("axis", [0, 1, None])
def test_first_index_and_nan_in_2d(dev: vg.Device, axis) -> None:
    """Ties and NaNs placed across row blocks, chunks and lanes: the first index wins, the
    first NaN beats everything, min/max are NaN exactly where a NaN is."""
    rows, cols = 2 * RB + 9, C + 130
    a = np.zeros((rows, cols), np.float32)
    a[rows - 1, :] = 5.0  # ties: the maximum first appears in the last row...
    a[RB + 1, 7] = a[3, 7] = 5.0  # ...except in column 7 (rows 3 and RB+1)
    a[:, cols - 1] = -5.0  # a whole column of tied minima
    a[RB + 2, 11] = np.nan
    a[2 * RB + 1, 11] = np.nan  # column 11: two NaNs, the first wins
    a[0, C + 3] = np.nan  # row 0: a NaN past the first chunk
    x = vg.asarray(a, device=dev)
    for op in ("argmin", "argmax", "min", "max"):
        got = getattr(vg, op)(x, axis=axis).numpy()
        ref = np.asarray(getattr(np, op)(a, axis=axis))
        np.testing.assert_array_equal(got, ref)


def test_integer_sums_and_dots_wrap_like_numpy(dev: vg.Device) -> None:
    big = np.full(C + 7, 2**62 + 12345, np.int64)
    assert vg.sum(vg.asarray(big, device=dev)).item() == np.sum(big)  # wraps mod 2^64
    assert vg.prod(vg.asarray(big[:9], device=dev)).item() == np.prod(big[:9])
    u = np.full(3 * C, 2**32 - 1, np.uint32)
    got = vg.sum(vg.asarray(u, device=dev)).numpy()
    assert got.dtype == np.uint64 and got == np.sum(u)  # widened, no wrap at 32 bits
    for dt in (np.int32, np.uint32, np.int64):
        a = (np.arange(C + 3) * 40503 + 2**30).astype(dt)
        got = vg.dot(vg.asarray(a, device=dev), vg.asarray(a[::-1].copy(), device=dev)).numpy()
        ref = np.dot(a, a[::-1])
        assert got.dtype == ref.dtype and got == ref  # int32 · int32 wraps at 32 bits
    b = np.zeros(C + 5, bool)
    bx = vg.asarray(b, device=dev)
    assert vg.dot(bx, bx).numpy() == np.False_
    b[-1] = True
    bx = vg.asarray(b, device=dev)
    out = vg.dot(bx, bx).numpy()
    assert out.dtype == np.bool_ and out == np.True_


def test_mixed_dtype_dot(dev: vg.Device) -> None:
    a = np.arange(1000, dtype=np.int32) - 500
    b = np.linspace(-1, 1, 1000)
    got = vg.dot(vg.asarray(a, device=dev), vg.asarray(b, device=dev)).numpy()
    assert got.dtype == np.float64
    assert abs(float(got) - math.fsum(a * b)) <= 1e-12 * np.sum(np.abs(a * b))


def test_f32_product_accumulates_in_f64(dev: vg.Device) -> None:
    """A chunked f32 product of 10^6 factors 1±5e-4 is off by ~1e-3 relative (rounding is
    biased near 1.0); ours rounds once, from float64."""
    a = (1 + (np.random.default_rng(1).random(10**6) - 0.5) * 1e-3).astype(np.float32)
    got = vg.prod(vg.asarray(a, device=dev)).numpy()
    exact = np.prod(a.astype(np.float64))
    assert got.dtype == np.float32
    assert got == np.float32(exact)


_DETERMINISM_SCRIPT = r"""
import json, sys
import numpy as np
import vgpu_nb as vg

def results():
    out = {}
    rng = np.random.default_rng(12345)
    for dt in (np.float32, np.float64):
        flat = rng.uniform(-1, 1, 1_000_003).astype(dt)
        mat = rng.uniform(-1, 1, (1500, 1100)).astype(dt)
        for name, a, axes in (("flat", flat, [None]), ("mat", mat, [None, 0, 1])):
            x = vg.asarray(a, device="numba")
            for axis in axes:
                for op in ("sum", "mean", "var", "std", "norm", "prod"):
                    r = getattr(vg, op)(x, axis=axis).numpy()
                    out[f"{op}-{np.dtype(dt).name}-{name}-{axis}"] = r.tobytes().hex()
        x, y = (vg.asarray(v, device="numba") for v in (flat, flat[::-1].copy()))
        out[f"dot-{np.dtype(dt).name}"] = vg.dot(x, y).numpy().tobytes().hex()
    return out

if __name__ == "__main__":
    import numba
    print(json.dumps({"threads": numba.get_num_threads(), "results": results()}))
"""


def test_bit_identical_across_thread_counts(tmp_path: Path) -> None:
    """Sums, variances, norms and products of f32/f64 (full, axis 0, axis 1): the same bytes
    in this process (twice) and in fresh processes with 1, 2 and 3 Numba threads."""
    script = tmp_path / "det.py"
    script.write_text(_DETERMINISM_SCRIPT)
    sys.path.insert(0, str(tmp_path))
    try:
        import det  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    here = det.results()  # compiles (and fills the disk cache) before the subprocesses run
    assert det.results() == here
    for threads in (1, 2, 3):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["threads"] == threads
        diff = [k for k in here if got["results"][k] != here[k]]
        assert not diff, f"NUMBA_NUM_THREADS={threads} changed the bits of {diff}"


def test_the_numba_device_leaves_one_core_free_on_big_machines():
    """One OpenMP worker per core stalls a launch whenever any other thread runs (6 ms for a
    20 µs reduction on a 16-vCPU VM): more than 4 cores keep one free; small machines use all,
    and NUMBA_NUM_THREADS, when the user sets it, wins."""
    import os
    import subprocess
    import sys

    from vgpu_nb.backends.numba_backend import default_threads

    assert [default_threads(n) for n in (1, 2, 4, 5, 16, 64)] == [1, 2, 4, 4, 15, 63]
    code = "import vgpu_nb as vg; print(vg.get_device('numba').info.extra['threads'])"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert int(out.stdout.split()[-1]) == default_threads()
    out = subprocess.run([sys.executable, "-c", code], env={**env, "NUMBA_NUM_THREADS": "1"},
                         capture_output=True, text=True)  # fmt: skip
    assert int(out.stdout.split()[-1]) == 1
