"""Conformance of the kernel language: every kernel and reduction here runs on every device
of the machine (the ``device`` fixture) and is compared with a NumPy computation of the
same thing.

Tolerances (stated once, here): integers and bools are **exact** (wrap-around, floor
division and modulo by zero included); f32 results match to ``rtol=1e-5, atol=1e-6``
(math functions may differ by a few ulp between backends: CUDA's and WGSL's f32 ``exp``,
``sin`` … are not correctly rounded), f64 to ``1e-12``. A device that cannot represent a
kernel's types (f64 on a WebGPU adapter without ``shader-f64``) must raise
``UnsupportedOnBackend`` instead of answering.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg

RTOL = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-12)}


# ---- kernels ------------------------------------------------------------------------------
@vg.kernel
def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def daxpy(a: vg.f64, x: vg.f64[:], y: vg.f64[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]


@vg.kernel
def int_wrap(a: vg.i32[:], b: vg.i32[:], out: vg.i32[:]):
    i = vg.tid()
    out[i] = a[i] * b[i] + a[i] - b[i] * 7


@vg.kernel
def uint_wrap(a: vg.u32[:], b: vg.u32[:], out: vg.u32[:]):
    i = vg.tid()
    out[i] = a[i] - b[i] + a[i] * 3


@vg.kernel
def int_floor(a: vg.i32[:], b: vg.i32[:], q: vg.i32[:], r: vg.i32[:]):
    i = vg.tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


@vg.kernel
def float_floor(a: vg.f32[:], b: vg.f32[:], q: vg.f32[:], r: vg.f32[:]):
    i = vg.tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


@vg.kernel
def laplace(u: vg.f32[:, :], out: vg.f32[:, :]):
    i, j = vg.tid()
    if i == 0 or j == 0 or i == u.shape[0] - 1 or j == u.shape[1] - 1:
        out[i, j] = u[i, j]
        return
    out[i, j] = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j]


@vg.kernel
def transpose(a: vg.f32[:, :], out: vg.f32[:, :]):
    i, j = vg.tid()
    out[j, i] = a[i, j]


@vg.kernel
def matmul_naive(a: vg.f32[:, :], b: vg.f32[:, :], c: vg.f32[:, :]):
    i, j = vg.tid()
    s = 0.0
    for k in range(a.shape[1]):
        s += a[i, k] * b[k, j]
    c[i, j] = s


@vg.kernel
def reverse_weights(x: vg.f32[:], out: vg.f32[:], n: vg.i32):
    i = vg.tid()
    s = 0.0
    w = 1.0
    for k in range(n - 1, -1, -2):  # negative step
        s += w * x[(i + k) % x.shape[0]]
        w = w * 0.5
    out[i] = s


@vg.kernel
def collatz(start: vg.i32[:], steps: vg.i32[:]):
    i = vg.tid()
    v = start[i]
    c = 0
    while v != 1:
        v = v // 2 if v % 2 == 0 else 3 * v + 1
        c += 1
    steps[i] = c


@vg.kernel
def break_continue(x: vg.i32[:], out: vg.i32[:]):
    i = vg.tid()
    total = 0
    for k in range(20):
        if k % 3 == 1:
            continue
        if k * x[i] > 60:
            break
        total += k
    out[i] = total


@vg.kernel
def piecewise(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    v = x[i]
    if v < -1.0:
        out[i] = -1.0
    elif v < 0.0:
        out[i] = v * v
    elif v < 1.0:
        out[i] = 2.0 * v
    else:
        out[i] = 3.0


@vg.kernel
def ternary(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = x[i] if x[i] > y[i] else y[i] * 2.0


@vg.func
def lerp(a: vg.f32, b: vg.f32, t: vg.f32) -> vg.f32:
    return a + (b - a) * t


@vg.func
def clamp(v, lo, hi):
    return min(max(v, lo), hi)


@vg.func
def smooth(a, b, t):
    return lerp(a, b, clamp(t, 0.0, 1.0))


@vg.kernel
def device_funcs(a: vg.f32[:], b: vg.f32[:], t: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = smooth(a[i], b[i], t[i])


@vg.func
def neighbour_sum(x: vg.f32[:], i: vg.i32) -> vg.f32:
    left = x[i - 1] if i > 0 else 0.0
    right = x[i + 1] if i < x.shape[0] - 1 else 0.0
    return left + right


@vg.func
def blur_at(x, i):
    return (neighbour_sum(x, i) + x[i]) / 3.0


@vg.kernel
def array_func(x: vg.f32[:], out: vg.f32[:]):
    i = vg.tid()
    out[i] = blur_at(x, i)


@vg.kernel
def unary_math(x: vg.f32[:], out: vg.f32[:, :]):
    i = vg.tid()
    v = x[i]
    out[i, 0] = vg.sqrt(v)
    out[i, 1] = math.exp(v * 0.1)
    out[i, 2] = vg.log(v)
    out[i, 3] = math.sin(v)
    out[i, 4] = vg.cos(v)
    out[i, 5] = vg.tanh(v * 0.3)
    out[i, 6] = vg.erf(v * 0.2 - 1.0)
    out[i, 7] = math.floor(v)
    out[i, 8] = vg.ceil(v)
    out[i, 9] = abs(-v)
    out[i, 10] = math.atan(v)
    out[i, 11] = vg.exp2(v * 0.25)
    out[i, 12] = vg.log2(v)
    out[i, 13] = vg.trunc(-v)
    out[i, 14] = vg.round(v)


@vg.kernel
def binary_math(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:, :]):
    i = vg.tid()
    out[i, 0] = vg.pow(x[i], y[i])
    out[i, 1] = math.atan2(x[i], y[i] - 1.0)
    out[i, 2] = math.fmod(x[i] * 7.0, y[i])
    out[i, 3] = min(x[i], y[i])
    out[i, 4] = max(x[i], y[i], 1.0)
    out[i, 5] = x[i] ** 3
    out[i, 6] = x[i] ** 0.5
    out[i, 7] = vg.fma(x[i], y[i], 1.0)


@vg.kernel
def casts(x: vg.f32[:], n: vg.i32[:], fi: vg.i32[:], nf: vg.f32[:], b: vg.i32[:]):
    i = vg.tid()
    fi[i] = vg.i32(x[i])  # truncates toward zero
    nf[i] = vg.f32(n[i]) / 4.0
    b[i] = vg.i32(vg.bool(n[i])) + int(x[i] > 0.0)


@vg.kernel
def bool_mask(x: vg.f32[:], mask: vg.bool[:], out: vg.i32[:]):
    i = vg.tid()
    m = x[i] > 0.25 and not x[i] > 0.75
    mask[i] = m
    out[i] = 1 if m else 0


@vg.kernel
def histogram(x: vg.i32[:], bins: vg.i32[:]):
    i = vg.tid()
    vg.atomic_add(bins, x[i] % bins.shape[0], 1)


@vg.kernel
def atomic_float_sum(x: vg.f32[:], total: vg.f32[:]):
    i = vg.tid()
    vg.atomic_add(total, 0, x[i])


@vg.kernel
def atomic_extremes(x: vg.i32[:], u: vg.u32[:], f: vg.f32[:], lo: vg.i32[:], hi: vg.u32[:],
                    flo: vg.f32[:], fhi: vg.f32[:]):  # fmt: skip
    i = vg.tid()
    vg.atomic_min(lo, i % 4, x[i])
    vg.atomic_max(hi, i % 4, u[i])
    vg.atomic_min(flo, i % 4, f[i])
    vg.atomic_max(fhi, i % 4, f[i])


@vg.kernel
def row_sums(m: vg.f32[:, :], out: vg.f32[:]):
    i = vg.tid()
    s = 0.0
    for j in range(m.shape[1]):
        s += m[i, j]
    out[i] = s


@vg.kernel
def scalar_params(out: vg.f32[:], k: vg.i32, u: vg.u32, flag: vg.bool, s: vg.f32):
    i = vg.tid()
    v = s * vg.f32(i) + vg.f32(k)
    if flag:
        v = v + vg.f32(u % 7)
    out[i] = v


@vg.kernel
def single_thread(out: vg.i32[:], n: vg.i32):
    out[0] = n * 2
    out[1] = n - 1


@vg.kernel
def bits(a: vg.u32[:], b: vg.i32[:], out: vg.u32[:], sout: vg.i32[:]):
    i = vg.tid()
    out[i] = (a[i] & 0xF0F0) | (a[i] ^ 0x0FF0) ^ (a[i] << 3) ^ (a[i] >> 5) ^ ~a[i]
    sout[i] = (b[i] >> 2) ^ (b[i] << 1)


@vg.kernel
def swap_aug(x: vg.i32[:], y: vg.i32[:]):
    i = vg.tid()
    a = x[i]
    b = y[i]
    a, b = b, a
    a += 3
    b *= 2
    a -= b
    x[i] = a
    y[i] = b


@vg.kernel
def guarded(x: vg.f32[:], out: vg.f32[:], limit: vg.f32):
    i = vg.tid()
    if x[i] > limit:
        return
    out[i] = x[i] * 10.0


@vg.kernel
def int_power(x: vg.i32[:], out: vg.i32[:]):
    i = vg.tid()
    out[i] = x[i] ** 3 + x[i] ** 2 - x[i] ** 0


@vg.kernel
def predicates(x: vg.f32[:], out: vg.i32[:]):
    i = vg.tid()
    v = x[i]
    out[i] = int(vg.isnan(v)) + 2 * int(vg.isinf(v)) + 4 * int(vg.isfinite(v))


@vg.kernel
def grid2d_nonsquare(out: vg.i32[:, :]):
    i, j = vg.tid()
    out[i, j] = i * 1000 + j


# ---- cases --------------------------------------------------------------------------------
@dataclass
class Case:
    kernel: Any
    domain: Callable[[dict[str, np.ndarray]], Any]
    inputs: Callable[[np.random.Generator], dict[str, Any]]  # name → array or scalar
    expected: Callable[[dict[str, Any]], dict[str, np.ndarray]]  # output name → values
    exact: bool = False


def _f32(rng, n, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, n).astype(np.float32)


def _laplace(u):
    out = u.copy()
    out[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    return out


def _floor(a, b):
    with np.errstate(all="ignore"):
        q = np.where(b == 0, 0, np.floor_divide(a, np.where(b == 0, 1, b)))
        r = np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b)))
    return q.astype(a.dtype), r.astype(a.dtype)


def _collatz(v):
    c = 0
    while v != 1:
        v = v // 2 if v % 2 == 0 else 3 * v + 1
        c += 1
    return c


def _break_continue(x):
    total = 0
    for k in range(20):
        if k % 3 == 1:
            continue
        if k * x > 60:
            break
        total += k
    return total


def _reverse(x, n):
    out = np.zeros_like(x)
    for i in range(x.size):
        s, w = np.float32(0), np.float32(1)
        for k in range(n - 1, -1, -2):
            s = np.float32(s + w * x[(i + k) % x.size])
            w = np.float32(w * np.float32(0.5))
        out[i] = s
    return out


def _smooth(a, b, t):
    t = np.minimum(np.maximum(t, np.float32(0)), np.float32(1))
    return (a + (b - a) * t).astype(np.float32)


def _blur(x):
    left = np.concatenate([[0], x[:-1]]).astype(np.float32)
    right = np.concatenate([x[1:], [0]]).astype(np.float32)
    return ((left + right + x) / np.float32(3)).astype(np.float32)


def _unary(x):
    cols = [
        np.sqrt(x), np.exp(x * 0.1), np.log(x), np.sin(x), np.cos(x), np.tanh(x * 0.3),
        np.array([math.erf(v) for v in (x * np.float32(0.2) - 1).astype(np.float64)]),
        np.floor(x), np.ceil(x), np.abs(x), np.arctan(x), np.exp2(x * 0.25), np.log2(x),
        np.trunc(-x), np.rint(x),
    ]  # fmt: skip
    return np.stack([np.asarray(c, np.float32) for c in cols], axis=1)


def _binary(x, y):
    cols = [
        np.power(x, y), np.arctan2(x, y - 1), np.fmod(x * 7, y), np.minimum(x, y),
        np.maximum(np.maximum(x, y), 1), x**3, np.sqrt(x),
        (x.astype(np.float64) * y + 1),
    ]  # fmt: skip
    return np.stack([np.asarray(c, np.float32) for c in cols], axis=1)


def _bits(a, b):
    out = (a & 0xF0F0) | (a ^ 0x0FF0) ^ (a << 3) ^ (a >> 5) ^ ~a
    return out.astype(np.uint32), ((b >> 2) ^ (b << 1)).astype(np.int32)


def _wrap(f, dtype):
    with np.errstate(all="ignore"):
        return np.asarray(f(), dtype=dtype)


N = 1000

CASES: dict[str, Case] = {
    "saxpy": Case(
        saxpy, lambda d: d["x"].size,
        lambda r: {"a": 2.5, "x": _f32(r, N), "y": _f32(r, N)},
        lambda d: {"y": (np.float32(d["a"]) * d["x"] + d["y"]).astype(np.float32)},
    ),
    "daxpy": Case(
        daxpy, lambda d: d["x"].size,
        lambda r: {"a": 2.5, "x": r.uniform(-1, 1, N), "y": r.uniform(-1, 1, N)},
        lambda d: {"y": d["a"] * d["x"] + d["y"]},
    ),
    "int_wrap": Case(
        int_wrap, lambda d: d["a"].size,
        lambda r: {"a": r.integers(-(2**31), 2**31, N, dtype=np.int64).astype(np.int32),
                   "b": r.integers(-(2**31), 2**31, N, dtype=np.int64).astype(np.int32),
                   "out": np.zeros(N, np.int32)},
        lambda d: {"out": _wrap(lambda: d["a"] * d["b"] + d["a"] - d["b"] * np.int32(7),
                                np.int32)},
        exact=True,
    ),
    "uint_wrap": Case(
        uint_wrap, lambda d: d["a"].size,
        lambda r: {"a": r.integers(0, 2**32, N, dtype=np.int64).astype(np.uint32),
                   "b": r.integers(0, 2**32, N, dtype=np.int64).astype(np.uint32),
                   "out": np.zeros(N, np.uint32)},
        lambda d: {"out": _wrap(lambda: d["a"] - d["b"] + d["a"] * np.uint32(3), np.uint32)},
        exact=True,
    ),
    "int_floor": Case(
        int_floor, lambda d: d["a"].size,
        lambda r: {"a": r.integers(-50, 50, N).astype(np.int32),
                   "b": r.integers(-5, 6, N).astype(np.int32),
                   "q": np.zeros(N, np.int32), "r": np.zeros(N, np.int32)},
        lambda d: dict(zip(("q", "r"), _floor(d["a"], d["b"]), strict=True)),
        exact=True,
    ),
    "float_floor": Case(
        float_floor, lambda d: d["a"].size,
        lambda r: {"a": _f32(r, N, -50, 50), "b": np.where(_f32(r, N) > 0, 2.5, -1.5)
                   .astype(np.float32), "q": np.zeros(N, np.float32),
                   "r": np.zeros(N, np.float32)},
        lambda d: {"q": np.floor_divide(d["a"], d["b"]), "r": np.mod(d["a"], d["b"])},
    ),
    "laplace": Case(
        laplace, lambda d: d["u"].shape,
        lambda r: {"u": _f32(r, 23 * 17).reshape(23, 17), "out": np.zeros((23, 17), np.float32)},
        lambda d: {"out": _laplace(d["u"])},
    ),
    "transpose": Case(
        transpose, lambda d: d["a"].shape,
        lambda r: {"a": _f32(r, 9 * 14).reshape(9, 14), "out": np.zeros((14, 9), np.float32)},
        lambda d: {"out": d["a"].T},
        exact=True,
    ),
    "matmul_naive": Case(
        matmul_naive, lambda d: d["c"].shape,
        lambda r: {"a": _f32(r, 12 * 7).reshape(12, 7), "b": _f32(r, 7 * 5).reshape(7, 5),
                   "c": np.zeros((12, 5), np.float32)},
        lambda d: {"c": d["a"] @ d["b"]},
    ),
    "reverse_weights": Case(
        reverse_weights, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, 200), "out": np.zeros(200, np.float32), "n": 9},
        lambda d: {"out": _reverse(d["x"], d["n"])},
    ),
    "collatz": Case(
        collatz, lambda d: d["start"].size,
        lambda r: {"start": r.integers(1, 300, 200).astype(np.int32),
                   "steps": np.zeros(200, np.int32)},
        lambda d: {"steps": np.array([_collatz(int(v)) for v in d["start"]], np.int32)},
        exact=True,
    ),
    "break_continue": Case(
        break_continue, lambda d: d["x"].size,
        lambda r: {"x": r.integers(0, 30, 200).astype(np.int32), "out": np.zeros(200, np.int32)},
        lambda d: {"out": np.array([_break_continue(int(v)) for v in d["x"]], np.int32)},
        exact=True,
    ),
    "piecewise": Case(
        piecewise, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N, -2, 2), "out": np.zeros(N, np.float32)},
        lambda d: {"out": np.select([d["x"] < -1, d["x"] < 0, d["x"] < 1],
                                    [-1.0, d["x"] * d["x"], 2 * d["x"]], 3.0)},
    ),
    "ternary": Case(
        ternary, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N), "y": _f32(r, N), "out": np.zeros(N, np.float32)},
        lambda d: {"out": np.where(d["x"] > d["y"], d["x"], d["y"] * 2)},
    ),
    "device_funcs": Case(
        device_funcs, lambda d: d["a"].size,
        lambda r: {"a": _f32(r, N), "b": _f32(r, N), "t": _f32(r, N, -0.5, 1.5),
                   "out": np.zeros(N, np.float32)},
        lambda d: {"out": _smooth(d["a"], d["b"], d["t"])},
    ),
    "array_func": Case(
        array_func, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N), "out": np.zeros(N, np.float32)},
        lambda d: {"out": _blur(d["x"])},
    ),
    "unary_math": Case(
        unary_math, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, 500, 0.05, 9.5), "out": np.zeros((500, 15), np.float32)},
        lambda d: {"out": _unary(d["x"])},
    ),
    "binary_math": Case(
        binary_math, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, 500, 0.1, 3), "y": _f32(r, 500, 0.5, 2),
                   "out": np.zeros((500, 8), np.float32)},
        lambda d: {"out": _binary(d["x"], d["y"])},
    ),
    "casts": Case(
        casts, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N, -100, 100), "n": r.integers(-3, 4, N).astype(np.int32),
                   "fi": np.zeros(N, np.int32), "nf": np.zeros(N, np.float32),
                   "b": np.zeros(N, np.int32)},
        lambda d: {"fi": np.trunc(d["x"]).astype(np.int32), "nf": d["n"] / np.float32(4),
                   "b": (d["n"] != 0).astype(np.int32) + (d["x"] > 0)},
    ),
    "bool_mask": Case(
        bool_mask, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N - 3, 0, 1), "mask": np.zeros(N - 3, bool),
                   "out": np.zeros(N - 3, np.int32)},
        lambda d: {"mask": (d["x"] > 0.25) & ~(d["x"] > 0.75),
                   "out": ((d["x"] > 0.25) & ~(d["x"] > 0.75)).astype(np.int32)},
        exact=True,
    ),
    "histogram": Case(
        histogram, lambda d: d["x"].size,
        lambda r: {"x": r.integers(0, 10_000, 5000).astype(np.int32),
                   "bins": np.zeros(37, np.int32)},
        lambda d: {"bins": np.bincount(d["x"] % 37, minlength=37).astype(np.int32)},
        exact=True,
    ),
    "atomic_float_sum": Case(
        atomic_float_sum, lambda d: d["x"].size,
        lambda r: {"x": r.integers(-8, 9, 3000).astype(np.float32),
                   "total": np.zeros(1, np.float32)},
        lambda d: {"total": np.array([d["x"].sum()], np.float32)},  # small ints: exact
        exact=True,
    ),
    "atomic_extremes": Case(
        atomic_extremes, lambda d: d["x"].size,
        lambda r: {"x": r.integers(-1000, 1000, 999).astype(np.int32),
                   "u": r.integers(0, 2**32, 999, dtype=np.int64).astype(np.uint32),
                   "f": _f32(r, 999, -50, 50),
                   "lo": np.full(4, 2**31 - 1, np.int32), "hi": np.zeros(4, np.uint32),
                   "flo": np.full(4, np.inf, np.float32), "fhi": np.full(4, -np.inf, np.float32)},
        lambda d: {"lo": np.array([d["x"][k::4].min() for k in range(4)], np.int32),
                   "hi": np.array([d["u"][k::4].max() for k in range(4)], np.uint32),
                   "flo": np.array([d["f"][k::4].min() for k in range(4)], np.float32),
                   "fhi": np.array([d["f"][k::4].max() for k in range(4)], np.float32)},
        exact=True,
    ),
    "row_sums": Case(
        row_sums, lambda d: d["out"].size,
        lambda r: {"m": _f32(r, 30 * 41).reshape(30, 41), "out": np.zeros(30, np.float32)},
        lambda d: {"out": d["m"].sum(axis=1)},
    ),
    "scalar_params": Case(
        scalar_params, lambda d: d["out"].size,
        lambda r: {"out": np.zeros(100, np.float32), "k": -7, "u": 4_000_000_000,
                   "flag": True, "s": 0.5},
        lambda d: {"out": (np.float32(0.5) * np.arange(100, dtype=np.float32) - 7
                           + np.float32(4_000_000_000 % 7)).astype(np.float32)},
    ),
    "single_thread": Case(
        single_thread, lambda d: 1,
        lambda r: {"out": np.zeros(2, np.int32), "n": 21},
        lambda d: {"out": np.array([42, 20], np.int32)},
        exact=True,
    ),
    "bits": Case(
        bits, lambda d: d["a"].size,
        lambda r: {"a": r.integers(0, 2**32, N, dtype=np.int64).astype(np.uint32),
                   "b": r.integers(-(2**31), 2**31, N, dtype=np.int64).astype(np.int32),
                   "out": np.zeros(N, np.uint32), "sout": np.zeros(N, np.int32)},
        lambda d: dict(zip(("out", "sout"), _bits(d["a"], d["b"]), strict=True)),
        exact=True,
    ),
    "swap_aug": Case(
        swap_aug, lambda d: d["x"].size,
        lambda r: {"x": r.integers(-100, 100, N).astype(np.int32),
                   "y": r.integers(-100, 100, N).astype(np.int32)},
        lambda d: {"x": (d["y"] + 3 - 2 * d["x"]).astype(np.int32),
                   "y": (2 * d["x"]).astype(np.int32)},
        exact=True,
    ),
    "guarded": Case(
        guarded, lambda d: d["x"].size,
        lambda r: {"x": _f32(r, N), "out": np.full(N, -5, np.float32), "limit": 0.3},
        lambda d: {"out": np.where(d["x"] > np.float32(0.3), -5, d["x"] * np.float32(10))},
    ),
    "int_power": Case(
        int_power, lambda d: d["x"].size,
        lambda r: {"x": r.integers(-1000, 1000, N).astype(np.int32), "out": np.zeros(N, np.int32)},
        lambda d: {"out": _wrap(lambda: d["x"] ** 3 + d["x"] ** 2 - 1, np.int32)},
        exact=True,
    ),
    "predicates": Case(
        predicates, lambda d: d["x"].size,
        lambda r: {"x": np.array([0.0, 1.5, np.inf, -np.inf, np.nan, -0.0, 3e38], np.float32),
                   "out": np.zeros(7, np.int32)},
        lambda d: {"out": (np.isnan(d["x"]) + 2 * np.isinf(d["x"]) + 4 * np.isfinite(d["x"]))
                   .astype(np.int32)},
        exact=True,
    ),
    "grid2d_nonsquare": Case(
        grid2d_nonsquare, lambda d: d["out"].shape,
        lambda r: {"out": np.zeros((3, 70_000), np.int32)},
        lambda d: {"out": (np.arange(3)[:, None] * 1000 + np.arange(70_000)[None, :])
                   .astype(np.int32)},
        exact=True,
    ),
}  # fmt: skip

#: cases too slow for the NumPy backend's thread-by-thread Python (it is the debugging
#: backend, not a fast one)
SLOW_ON_NUMPY = {"grid2d_nonsquare"}


#: cases whose math is held to WGSL's absolute error bounds on GPU Vulkan drivers (sin/cos:
#: 2**-11 on [-pi, pi]; results near 0 miss any relative tolerance there)
VULKAN_ATOL = {"unary_math": 2.0**-11}


def _compare(
    name: str, got: np.ndarray, want: np.ndarray, exact: bool, atol_floor: float = 0.0
) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if exact or got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=name)
    else:
        rtol, atol = RTOL[got.dtype.name]
        atol = max(atol, atol_floor)
        np.testing.assert_allclose(got, want.astype(got.dtype), rtol=rtol, atol=atol,
                                   err_msg=name)  # fmt: skip


def _run_case(case: Case, device: vg.Device, seed: int) -> None:
    rng = np.random.default_rng(seed)
    host = case.inputs(rng)
    args = []
    dev_arrays = {}
    for p in case.kernel.ir.params:
        v = host[p.name]
        if isinstance(v, np.ndarray):
            a = vg.asarray(v, device=device)
            dev_arrays[p.name] = a
            args.append(a)
        else:
            args.append(v)
    why = device.kernel_unsupported(case.kernel.ir)
    if why:
        with pytest.raises(vg.UnsupportedOnBackend, match="cannot run"):
            case.kernel[case.domain(host)](*args)
        return
    case.kernel[case.domain(host)](*args)
    expected = case.expected({k: (v.copy() if isinstance(v, np.ndarray) else v)
                              for k, v in host.items()})  # fmt: skip
    vulkan = device.backend == "wgpu" and device.info.kind == "gpu"
    floor = VULKAN_ATOL.get(case.kernel.__name__, 0.0) if vulkan else 0.0
    for name, want in expected.items():
        got = dev_arrays[name].numpy()
        _compare(f"{case.kernel.__name__}.{name}", got, want, case.exact, floor)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel(device, name):
    if device.backend == "numpy" and name in SLOW_ON_NUMPY:
        pytest.skip("thread-by-thread Python is too slow for this domain (by design)")
    _run_case(CASES[name], device, seed=zlib.crc32(name.encode()))  # (same data every run)


def test_unary_math_near_multiples_of_pi(device):
    """sin/cos where the result is near 0: GPU Vulkan drivers meet WGSL's *absolute* error
    bound for sin/cos (2**-11 on [-pi, pi]), not a relative one, so hardware WebGPU
    adapters are held to that bound there; every other backend to the usual tolerance."""
    x = np.float32([math.pi - 1e-3, math.pi + 5e-4, math.pi / 2 + 1e-3, 2 * math.pi - 1e-3])
    out = vg.zeros((x.size, 15), device=device)
    unary_math[x.size](vg.asarray(x, device=device), out)
    got = out.numpy()[:, 3:5]
    want = np.stack([np.sin(x.astype(np.float64)), np.cos(x.astype(np.float64))], axis=1)
    hardware_vulkan = device.backend == "wgpu" and device.info.kind == "gpu"
    atol = 2.0**-11 if hardware_vulkan else 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


def test_conformance_has_enough_kernels():
    assert len(CASES) >= 25


# ---- reductions -----------------------------------------------------------------------------
@vg.reduction(identity=0.0, combine="add")
def sumsq(v: vg.f32) -> vg.f32:
    return v * v


@vg.reduction(identity=0, combine="add")
def count_positive(v: vg.i32) -> vg.i64:
    return vg.i64(1 if v > 0 else 0)


@vg.reduction(identity=1.0, combine="mul")
def product(v):
    return v


@vg.reduction(identity=math.inf, combine="min")
def fmin(v: vg.f32) -> vg.f32:
    return v


@vg.reduction(identity=-math.inf, combine="max")
def fmax(v: vg.f32) -> vg.f32:
    return v


@vg.reduction(identity=0, combine="max")
def imax(v: vg.i32) -> vg.i32:
    return v


@vg.reduction(identity=True, combine="and")
def all_positive(v: vg.f32) -> vg.bool:
    return v > 0.0


@vg.reduction(identity=False, combine="or")
def any_big(v: vg.f32) -> vg.bool:
    return v > 0.99


@vg.reduction(identity=0, combine="or")
def bit_or(v: vg.u32) -> vg.u32:
    return v


@vg.func
def absmax(a, b):
    return max(abs(a), abs(b))


@vg.reduction(identity=0.0, combine=absmax)
def max_abs(v: vg.f32) -> vg.f32:
    return v


@vg.reduction(identity=0.0, combine="add")
def dot(a: vg.f32, b: vg.f32) -> vg.f32:
    return a * b


@vg.func
def mean_post(s, n):
    return s / vg.f32(n) if n > 0 else 0.0


@vg.reduction(identity=0.0, combine="add", post=mean_post)
def mean(v: vg.f32) -> vg.f32:
    return v


@vg.reduction(identity=0.0, combine="add", post=math.sqrt)
def l2(v: vg.f32) -> vg.f32:
    return v * v


def _post_sqrt(v):
    return vg.sqrt(v)


RED_SHAPES = [(1,), (7,), (1000,), (5003,), (1, 9), (33, 17), (8, 3000), (2500, 3)]


def _red_inputs(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    n = math.prod(shape)
    if name == "count_positive" or name == "imax":
        return [rng.integers(-100, 100, n).astype(np.int32).reshape(shape)]
    if name == "bit_or":
        return [(np.uint32(1) << rng.integers(0, 32, n).astype(np.uint32)).reshape(shape)]
    if name == "product":
        return [(1 + (rng.random(n) - 0.5) * 1e-3).astype(np.float32).reshape(shape)]
    if name == "all_positive":
        return [rng.uniform(0.001, 1, n).astype(np.float32).reshape(shape)]
    if name == "dot":
        return [_f32(rng, n).reshape(shape), _f32(rng, n).reshape(shape)]
    return [_f32(rng, n).reshape(shape)]


def _red_expected(name: str, xs: list[np.ndarray], axis: int | None) -> tuple[np.ndarray, float]:
    """(expected, absolute tolerance) in float64 where it matters."""
    x = xs[0]
    x64 = x.astype(np.float64)
    if name == "sumsq":
        return (x64 * x64).sum(axis=axis), 1e-5 * (x64 * x64).sum(axis=axis).max() + 1e-6
    if name == "count_positive":
        return (x > 0).sum(axis=axis), 0
    if name == "product":
        p = x64.prod(axis=axis)
        return p, 1e-4 * np.abs(p).max()  # f32 products drift (as the built-in's rtol)
    if name in ("fmin", "fmax", "imax"):
        f = {"fmin": np.min, "fmax": np.max, "imax": np.max}[name]
        return f(np.maximum(x, 0) if name == "imax" else x, axis=axis), 0
    if name == "all_positive":
        return (x > 0).all(axis=axis), 0
    if name == "any_big":
        return (x > 0.99).any(axis=axis), 0
    if name == "bit_or":
        return np.bitwise_or.reduce(x, axis=axis), 0
    if name == "max_abs":
        return np.abs(x).max(axis=axis), 0
    if name == "dot":
        y64 = xs[1].astype(np.float64)
        return (x64 * y64).sum(axis=axis), 1e-5 * np.abs(x64 * y64).sum(axis=axis).max() + 1e-6
    if name == "mean":
        return x64.mean(axis=axis), 1e-5 * np.abs(x64).mean(axis=axis).max() + 1e-6
    if name == "l2":
        r = np.sqrt((x64 * x64).sum(axis=axis))
        return r, 1e-5 * r.max()
    raise KeyError(name)


REDUCTIONS = {
    "sumsq": sumsq, "count_positive": count_positive, "product": product, "fmin": fmin,
    "fmax": fmax, "imax": imax, "all_positive": all_positive, "any_big": any_big,
    "bit_or": bit_or, "max_abs": max_abs, "dot": dot, "mean": mean, "l2": l2,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction(device, name):
    red = REDUCTIONS[name]
    rng = np.random.default_rng(hash(name) % 2**32)
    shapes = RED_SHAPES if device.backend != "numpy" else RED_SHAPES[:6]
    for shape in shapes:
        xs = _red_inputs(name, shape, rng)
        arrays = [vg.asarray(x, device=device) for x in xs]
        why = device.reduction_unsupported(red.specialize([a.dtype for a in arrays]))
        if why:
            with pytest.raises(vg.UnsupportedOnBackend):
                red(*arrays)
            return
        axes = [None] if len(shape) == 1 else [None, 0, 1]
        for axis in axes:
            got = red(*arrays, axis=axis)
            want, tol = _red_expected(name, xs, axis)
            assert got.shape == np.shape(want), (shape, axis)
            g = got.numpy()
            if tol == 0:
                np.testing.assert_array_equal(g, want, err_msg=f"{name} {shape} axis={axis}")
            else:
                np.testing.assert_allclose(g, want, rtol=0, atol=tol,
                                           err_msg=f"{name} {shape} axis={axis}")  # fmt: skip


def test_reduction_nan_propagates(device):
    x = np.array([1, 2, np.nan, -5, 3], np.float32)
    a = vg.asarray(x, device=device)
    assert math.isnan(float(fmin(a)))
    assert math.isnan(float(fmax(a)))


def test_reduction_deterministic(device):
    rng = np.random.default_rng(0)
    x = vg.asarray(rng.standard_normal(300_001).astype(np.float32), device=device)
    if device.backend == "numpy":
        x = vg.asarray(rng.standard_normal(3001).astype(np.float32), device=device)
    first = sumsq(x).numpy().tobytes()
    for _ in range(3):
        assert sumsq(x).numpy().tobytes() == first


def test_reduction_empty(device):
    e = vg.zeros(0, device=device)
    assert float(sumsq(e)) == 0.0
    assert float(mean(e)) == 0.0
    assert float(l2(e)) == 0.0
    assert sumsq(vg.zeros((0, 3), device=device), axis=0).numpy().tolist() == [0, 0, 0]
    assert sumsq(vg.zeros((0, 3), device=device), axis=1).shape == (0,)
