"""Conformance: every reduction × dtype × size × layout on every device, against NumPy.

Tolerances (stated once, here):
* integer and boolean results, min/max/argmin/argmax of anything: **exact** (==, NaN-aware);
* float results: ``|got − exact| ≤ rtol · scale`` where *exact* is computed in float64 from
  the same data (``math.fsum`` for f64 sums) and *scale* is the sum of the magnitudes the
  op adds up (Σ|x| for sum/mean, Σx² for norm, Σ(x−μ)² for var, Σ|x·y| for dot, |result|
  for prod); rtol = 1e-4 for f32 (≈ 840 ulp: any summation order within a few hundred
  sequential adds passes) and 1e-12 for f64.
* If a device says it cannot compute an op exactly (``device.unsupported``), the op must
  raise ``UnsupportedOnBackend`` — never return an answer.
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from contextlib import contextmanager

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.dtypes import as_dtype
from vgpu_nb.ops.reductions import roles

SIZES = [0, 1, 7, 1000, 1_000_003]
DTYPES = ["f32", "f64", "i32", "u32", "i64", "bool"]
OPS = ["sum", "prod", "min", "max", "argmin", "argmax", "mean", "var", "std", "norm"]
RTOL = {"f32": 1e-4, "f64": 1e-12}


def shapes_for(n: int) -> list[tuple[int, ...]]:
    """1-D plus 2-D layouts with n elements (n = 10⁶+3 is prime: 1×n, n×1)."""
    two_d = {0: [(0, 3), (3, 0)], 1: [(1, 1)], 7: [(1, 7), (7, 1)], 1000: [(25, 40), (40, 25)]}
    return [(n,)] + two_d.get(n, [(1, n), (n, 1)])


@functools.lru_cache(maxsize=64)
def data(op: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(repr((op, dtype, shape)).encode()))
    n = math.prod(shape)
    npd = as_dtype(dtype).np
    if dtype == "bool":
        a = rng.random(n) < (0.999 if op == "prod" else 0.5)
    elif dtype in ("f32", "f64"):
        a = 1 + (rng.random(n) - 0.5) * 1e-3 if op == "prod" else rng.uniform(-1, 1, n)
    elif op == "prod":
        a = rng.choice([-3, -2, -1, 1, 2, 3] if dtype != "u32" else [1, 2, 3], n)
    elif op in ("min", "max", "argmin", "argmax"):
        a = rng.integers(0 if dtype == "u32" else -50, 50, n)  # many ties: first index wins
    else:
        lo, hi = {"i32": (-(2**31), 2**31), "u32": (0, 2**32), "i64": (-(2**40), 2**40)}[dtype]
        a = rng.integers(lo, hi, n, dtype=np.int64)
    return np.asarray(a).astype(npd).reshape(shape)


def np_op(op: str, a: np.ndarray, axis: int | None):
    if op == "norm":
        return (
            np.linalg.norm(a, axis=axis) if a.ndim == 1 or axis is not None else np.linalg.norm(a)
        )
    return getattr(np, op)(a, axis=axis)


def exact_and_scale(op: str, a: np.ndarray, axis: int | None):
    """Float64 'exact' value and the magnitude the op accumulates, per output element."""
    x = a.astype(np.float64)
    if op in ("sum", "mean"):
        s = np.sum(np.abs(x), axis=axis)
        if axis is None and a.dtype == np.float64:
            exact = math.fsum(x.ravel())
            exact = exact / max(x.size, 1) if op == "mean" else exact
        else:
            exact = np.sum(x, axis=axis) if op == "sum" else np.mean(x, axis=axis)
        return exact, (s / max(x.size if axis is None else x.shape[axis], 1) if op == "mean" else s)
    if op == "prod":
        p = np.prod(x, axis=axis)
        return p, np.abs(p)
    if op == "norm":
        return np_op("norm", x, axis), np_op("norm", x, axis)
    v = np.var(x, axis=axis)
    if op == "var":
        return v, v
    return np.std(x, axis=axis), np.std(x, axis=axis)


def check(op: str, got: np.ndarray, a: np.ndarray, axis: int | None) -> None:
    ref = np_op(op, a, axis)
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    assert got.dtype == np.asarray(ref).dtype, (got.dtype, np.asarray(ref).dtype)
    if got.dtype.kind != "f" or op in ("min", "max"):
        np.testing.assert_array_equal(got, ref)
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))  # empty mean/var → NaN
    exact, scale = exact_and_scale(op, a, axis)
    rtol = RTOL["f32" if got.dtype == np.float32 else "f64"]
    err = np.abs(got.astype(np.float64) - exact)
    bound = rtol * np.asarray(scale) + np.finfo(got.dtype).tiny
    assert np.all((err <= bound) | np.isnan(ref)), f"max err {np.max(err)} > bound {np.min(bound)}"


CASES = [
    (op, dt, shape, axis)
    for op in OPS
    for dt in DTYPES
    for n in SIZES
    for shape in shapes_for(n)
    for axis in ([None] if len(shape) == 1 else [None, 0, 1])
]


def run_case(device, op, dt, shape, axis):
    a = data(op, dt, shape)
    x = vg.asarray(a, device=device)
    fn = getattr(vg, op)
    reason = device.unsupported(op, *roles(op, as_dtype(dt)))
    if reason:
        with pytest.raises(vg.UnsupportedOnBackend):
            fn(x, axis=axis)
        return
    try:
        with _nowarn():
            np_op(op, a, axis)
    except ValueError:  # NumPy refuses (max of nothing): so must we, with our named error
        with pytest.raises(vg.EmptyReduction):
            fn(x, axis=axis)
        return
    with _nowarn():
        r = fn(x, axis=axis)
        assert r.device is device
        check(op, np.asarray(r.numpy()), a, axis)


@contextmanager
def _nowarn():
    """Empty means/variances warn like NumPy; the value is what we check here."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@pytest.mark.parametrize(
    "op,dt,shape,axis",
    CASES,
    ids=[f"{o}-{d}-{'x'.join(map(str, s))}-ax{a}" for o, d, s, a in CASES],
)
def test_reduction(device, op, dt, shape, axis):
    run_case(device, op, dt, shape, axis)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_dot(device, dt, n, rng):
    a, b = data("sum", dt, (n,)), data("mean", dt, (n,))[::-1].copy()
    x, y = vg.asarray(a, device=device), vg.asarray(b, device=device)
    ref = np.dot(a, b)
    if device.unsupported("dot", *roles("dot", x.dtype, y.dtype)):
        with pytest.raises(vg.UnsupportedOnBackend):
            vg.dot(x, y)
        return
    got = vg.dot(x, y).numpy()
    assert got.dtype == ref.dtype
    if ref.dtype.kind != "f":
        assert got == ref
    else:
        xa, ya = a.astype(np.float64), b.astype(np.float64)
        exact, scale = math.fsum(xa * ya), np.sum(np.abs(xa * ya))
        assert abs(float(got) - exact) <= RTOL[dt] * scale + 1e-300


@pytest.mark.parametrize("dt", ["f32", "f64"])
@pytest.mark.parametrize("op", OPS)
def test_nan_propagates(device, dt, op):
    a = data("sum", dt, (1000,)).copy()
    a[[123, 777]] = np.nan
    x = vg.asarray(a, device=device)
    if device.unsupported(op, *roles(op, as_dtype(dt))):
        pytest.skip(f"{op} on {dt} unsupported on {device.name}")
    got = getattr(vg, op)(x).numpy()
    if op in ("argmin", "argmax"):
        assert got == 123  # NumPy: the first NaN
    else:
        assert np.isnan(got)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 3, 4), (1_000_003,)])
def test_round_trip_bit_exact(device, dt, shape, rng):
    npd = as_dtype(dt).np
    raw = rng.integers(0, 256, math.prod(shape) * npd.itemsize, dtype=np.uint8)
    a = raw.view(npd).reshape(shape) if dt != "bool" else (raw % 2).astype(bool).reshape(shape)
    x = vg.asarray(a, device=device)
    assert x.shape == shape and x.dtype.np == npd and x.nbytes == a.nbytes
    back = x.numpy()
    assert back.dtype == npd and back.shape == shape
    assert back.tobytes() == a.tobytes()  # NaN payloads, -0.0 and all: bytes, not values
    for other in ("numpy", "numba"):
        y = x.to(other).to(device)
        assert y.numpy().tobytes() == a.tobytes()


@pytest.mark.parametrize("dt", DTYPES)
def test_creation(device, dt):
    d = as_dtype(dt)
    np.testing.assert_array_equal(
        vg.zeros((2, 3), d, device=device).numpy(), np.zeros((2, 3), d.np)
    )
    np.testing.assert_array_equal(vg.ones(5, d, device=device).numpy(), np.ones(5, d.np))
    np.testing.assert_array_equal(vg.full(4, 1, d, device=device).numpy(), np.full(4, 1, d.np))
    assert vg.empty((7,), d, device=device).shape == (7,)
    np.testing.assert_array_equal(
        vg.arange(10, dtype=d, device=device).numpy(), np.arange(10).astype(d.np)
    )


def test_matmul_matches_numpy(device, rng):
    for m, k, n in [(1, 1, 1), (7, 5, 3), (64, 64, 64), (65, 129, 33), (200, 3, 170)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        x, y = vg.asarray(a, device=device), vg.asarray(b, device=device)
        got = vg.matmul(x, y).numpy()
        ref = a.astype(np.float64) @ b.astype(np.float64)
        # f32 products, any summation order: |err| ≤ 1e-5·k·Σ|a||b| bound, far above real error
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        assert got.shape == (m, n) and got.dtype == np.float32
        assert np.all(np.abs(got - ref) <= 1e-5 * k * scale + 1e-30)


def test_matmul_vector_shapes(device, rng):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    v = rng.standard_normal(3).astype(np.float32)
    w = rng.standard_normal(4).astype(np.float32)
    A, V, W = (vg.asarray(t, device=device) for t in (a, v, w))
    np.testing.assert_allclose(vg.matmul(A, V).numpy(), a @ v, rtol=1e-5)
    np.testing.assert_allclose(vg.matmul(W, A).numpy(), w @ a, rtol=1e-5)
    assert vg.matmul(A, V).shape == (4,)
    np.testing.assert_allclose(vg.dot(A, V).numpy(), a @ v, rtol=1e-5)
