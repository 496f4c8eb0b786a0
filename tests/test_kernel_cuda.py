"""The CUDA target of the kernel language (:mod:`vgpu_nb.kernel.codegen_cuda`).

Without a GPU (CI): every kernel of a zoo, and a set of reductions, is generated and compiled
by ``nvcc -ptx -arch=sm_90`` (skipped, with the reason, when nvcc is not on PATH), and the
semantic helpers (floor division, shifts, range trip counts …) are compiled for the host
and compared with NumPy. On a CUDA GPU (``-m gpu``, on the lent machine): the same kernels
run through ``CudaDevice.compile_kernel``/``launch_kernel`` and reductions through
``compile_reduction``/``run_reduction``, each compared with NumPy; plus determinism, the
kernel cache (memory hit, corrupted disk entry rebuilt), compile errors and launch cost.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import vgpu_nb as vg
from vgpu_nb.devices import discover
from vgpu_nb.dtypes import DType, bool_, f32, f64, i32, i64, u32
from vgpu_nb.kernel import codegen_cuda, ir
from vgpu_nb.kernel.builtins import atomic_add, atomic_max, atomic_min, tid
from vgpu_nb.kernel.frontend import Func, parse_func, parse_kernel

NVCC = shutil.which("nvcc")
_CUDA = [i for i in discover("cuda") if i.available]
_NO_CUDA = f"no CUDA device: {discover('cuda')[0].why_not}"


# ==== the zoo: kernels written with the frontend ==============================================
@Func
def sq(v):
    return v * v


@Func
def hyp(a, b):
    return math.sqrt(sq(a) + sq(b))


@Func
def get2(a, i, j):
    return a[i, j]


@Func
def put(out, i, v):
    out[i] = v


@Func
def row_total(a, i):
    s = a[i, 0] - a[i, 0]
    for j in range(a.shape[1]):
        s += get2(a, i, j)
    return s


def saxpy(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = tid()
    y[i] = a * x[i] + y[i]


def poly64(x: vg.f64[:], out: vg.f64[:]):
    i = tid()
    v = x[i]
    out[i] = 3.0 * v * v - 0.5 * v + 1.0


def lcg(seed: vg.i32[:], out: vg.i32[:]):
    i = tid()
    out[i] = seed[i] * 1103515245 + 12345


def bits(x: vg.u32[:], out: vg.u32[:]):
    i = tid()
    v = x[i]
    out[i] = ((v << 3) ^ (v >> 2)) | (~v & 0xFF)


def logic(x: vg.f32[:], m: vg.bool[:], out: vg.bool[:]):
    i = tid()
    out[i] = (x[i] > 0.0 and not m[i]) or x[i] < -1.0


def add2d(a: vg.f32[:, :], b: vg.f32[:, :], c: vg.f32[:, :]):
    i, j = tid()
    c[i, j] = a[i, j] + 2 * b[i, j]


def matmul(a: vg.f32[:, :], b: vg.f32[:, :], c: vg.f32[:, :]):
    i, j = tid()
    acc = 0.0
    for k in range(a.shape[1]):
        acc += a[i, k] * b[k, j]
    c[i, j] = acc


def suffix_sum(x: vg.i32[:], out: vg.i32[:]):
    i = tid()
    s = 0
    for k in range(x.shape[0] - 1, i - 1, -1):
        s += x[k]
    out[i] = s


def first_big(x: vg.f32[:, :], thresh: vg.f32, out: vg.i32[:]):
    i = tid()
    found = -1
    for j in range(x.shape[1]):
        if x[i, j] < 0.0:
            continue
        if x[i, j] > thresh:
            found = j
            break
    out[i] = found


def collatz(x: vg.u32[:], steps: vg.i32[:]):
    i = tid()
    v = x[i]
    n = 0
    while v != 1 and n < 1000:
        if v % 2 == 0:
            v = v // 2
        else:
            v = 3 * v + 1
        n += 1
    steps[i] = n


def classify(x: vg.f64[:], out: vg.i32[:]):
    i = tid()
    v = x[i]
    if v < -1.0:
        out[i] = -2
    elif v < 0.0:
        out[i] = -1
    elif v == 0.0:
        out[i] = 0
    else:
        out[i] = 1


def hypot_k(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:]):
    i = tid()
    out[i] = hyp(x[i], y[i])


def rowsum(a: vg.f64[:, :], out: vg.f64[:]):
    i = tid()
    put(out, i, row_total(a, i))


def math32(v: vg.f32[:], w: vg.f32[:], out: vg.f32[:, :]):
    i = tid()
    x = v[i]
    y = w[i]
    out[i, 0] = math.sqrt(x)
    out[i, 1] = math.exp(-x)
    out[i, 2] = math.log(x)
    out[i, 3] = math.sin(y) + math.cos(y)
    out[i, 4] = math.tan(y)
    out[i, 5] = math.tanh(y)
    out[i, 6] = math.floor(y) + 10.0 * math.ceil(y)
    out[i, 7] = math.erf(y)
    out[i, 8] = math.atan(y) + math.asin(y * 0.25) + math.acos(y * 0.25)
    out[i, 9] = math.sinh(y) + math.cosh(y)
    out[i, 10] = math.exp2(y)
    out[i, 11] = math.log2(x) + math.log10(x)
    out[i, 12] = math.trunc(y)
    out[i, 13] = round(y)
    out[i, 14] = math.pow(x, y)
    out[i, 15] = math.atan2(y, x)
    out[i, 16] = math.fmod(y, 0.7)
    out[i, 17] = vg.fma(x, y, 1.0)
    out[i, 18] = abs(y)


def math64(v: vg.f64[:], w: vg.f64[:], out: vg.f64[:, :]):
    i = tid()
    x = v[i]
    y = w[i]
    out[i, 0] = math.sqrt(x) + math.exp(y) + math.log(x)
    out[i, 1] = math.sin(y) * math.cos(y) + math.tanh(y)
    out[i, 2] = math.floor(y) + math.ceil(y) + math.trunc(y) + round(y)
    out[i, 3] = math.pow(x, y) + math.atan2(y, x) + math.fmod(y, 0.3)
    out[i, 4] = math.erf(y) + math.exp2(y) + math.log2(x) + math.log10(x)


def preds(x: vg.f32[:], out: vg.i32[:]):
    i = tid()
    v = x[i]
    out[i] = vg.i32(math.isnan(v)) + 2 * vg.i32(math.isinf(v)) + 4 * vg.i32(math.isfinite(v))


def casts(
    x: vg.f32[:],
    k: vg.i32[:],
    out_i: vg.i32[:],
    out_f: vg.f64[:],
    out_b: vg.bool[:],
    out_u: vg.u32[:],
):
    i = tid()
    out_i[i] = vg.i32(x[i]) + vg.i32(x[i] > 0.0)
    out_f[i] = vg.f64(k[i]) / 3.0 + vg.f64(vg.f32(k[i]) * 0.5)
    out_b[i] = vg.bool(k[i])
    out_u[i] = vg.u32(k[i])


def hist(x: vg.i32[:], counts: vg.i32[:]):
    i = tid()
    atomic_add(counts, x[i] % counts.shape[0], 1)


def fsum(x: vg.f32[:], total: vg.f32[:]):
    i = tid()
    atomic_add(total, 0, x[i])


def minmax_i(x: vg.i32[:], lo: vg.i32[:], hi: vg.i32[:], ticket: vg.i32[:], order: vg.i32[:]):
    i = tid()
    atomic_min(lo, 0, x[i])
    atomic_max(hi, 0, x[i])
    order[i] = atomic_add(ticket, 0, 1)


def minmax_u(x: vg.u32[:], lo: vg.u32[:], hi: vg.u32[:]):
    i = tid()
    atomic_min(lo, 0, x[i])
    atomic_max(hi, 0, x[i])


def minmax_f(x: vg.f32[:], lo: vg.f32[:], hi: vg.f32[:], seen: vg.f32[:]):
    i = tid()
    seen[i] = atomic_min(lo, 0, x[i])
    atomic_max(hi, 0, x[i])


def divmod_i(a: vg.i32[:], b: vg.i32[:], q: vg.i32[:], r: vg.i32[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def divmod_f(a: vg.f32[:], b: vg.f32[:], q: vg.f32[:], r: vg.f32[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def divmod_d(a: vg.f64[:], b: vg.f64[:], q: vg.f64[:], r: vg.f64[:]):
    i = tid()
    q[i] = a[i] // b[i]
    r[i] = a[i] % b[i]


def select_k(x: vg.f32[:], y: vg.f32[:], k: vg.i32[:], out: vg.f32[:], outk: vg.i32[:]):
    i = tid()
    out[i] = x[i] if x[i] > y[i] else 2 * y[i]
    outk[i] = max(abs(k[i]), 3) + min(k[i], -k[i], 7)


def count_threads(counter: vg.i32[:]):
    atomic_add(counter, 0, 1)


def wide(x: vg.i32[:], out: vg.i64[:]):
    i = tid()
    acc: vg.i64 = 1
    for k in range(5):
        acc = acc * vg.i64(x[i]) + k
    out[i] = acc


def strided(x: vg.f32[:], step: vg.i32, out: vg.f32[:]):
    i = tid()
    if i >= x.shape[0] // 2:
        return
    s = 0.0
    for k in range(i, -1, step):
        s += x[k]
    out[i] = s


def collide(new: vg.f32[:], this: vg.f32[:], n0: vg.i32):
    i = tid()
    tid0 = i
    sqrtf = 2.0
    register = new[tid0] * sqrtf
    vg_row = n0
    this[i] = register + vg.f32(vg_row)


def double(x: vg.f32[:]):
    i = tid()
    x[i] = x[i] * 2


def powers(x: vg.f32[:], y: vg.f32[:], out: vg.f32[:, :]):
    i = tid()
    out[i, 0] = x[i] ** 3
    out[i, 1] = x[i] ** 0.5
    out[i, 2] = x[i] ** y[i]


def shifts(x: vg.i32[:], s: vg.i32[:], lo: vg.i32[:], hi: vg.i32[:], ur: vg.u32[:]):
    i = tid()
    a, b = x[i], s[i]
    lo[i] = a << b
    hi[i] = a >> b
    ur[i] = vg.u32(a) >> vg.u32(b)


def hist2d(x: vg.i32[:], y: vg.i32[:], h: vg.u32[:, :]):
    i = tid()
    atomic_add(h, (x[i], y[i]), 1)


def scalars(flag: vg.bool, k: vg.u32, d: vg.f64, out: vg.f64[:]):
    i = tid()
    out[i] = d * vg.f64(k) if flag else -d


def inrange(x: vg.i32[:], out: vg.bool[:]):
    i = tid()
    out[i] = 0 <= x[i] < 10


# ---- cases: inputs and the NumPy answer ----------------------------------------------------
Want = dict[str, np.ndarray] | Callable[[dict[str, np.ndarray]], None]


@dataclass
class Case:
    """A zoo kernel and ``make(rng) -> (domain, args, want)``: arrays in ``args`` are NumPy
    arrays (copied to the GPU), ``want`` maps output names to NumPy's answer, or is a
    function that checks the outputs (atomics' old values, which NumPy cannot state)."""

    fn: Callable[..., Any]
    make: Callable[[np.random.Generator], tuple[tuple[int, ...], dict[str, Any], Want]]
    rtol: float = 0.0
    atol: float = 0.0


CASES: dict[str, Case] = {}


def case(fn: Callable[..., Any], name: str | None = None, rtol: float = 0.0, atol: float = 0.0):
    def register(make: Any) -> Any:
        CASES[name or fn.__name__] = Case(fn, make, rtol, atol)
        return make

    return register


def _f32(rng: np.random.Generator, n: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def _i32(rng: np.random.Generator, n: int, lo: int = -1000, hi: int = 1000) -> np.ndarray:
    return rng.integers(lo, hi, n, dtype=np.int32)


def _full_i32(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32)


def _zeros(n: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(n, dtype)


@case(saxpy, rtol=1e-6, atol=1e-7)
def _saxpy(r: np.random.Generator) -> Any:
    n = 100_003
    a = {"a": np.float32(1.5), "x": _f32(r, n), "y": _f32(r, n)}
    return (n,), a, {"y": a["a"] * a["x"] + a["y"]}


@case(poly64, rtol=1e-14)
def _poly64(r: np.random.Generator) -> Any:
    x = r.standard_normal(3001)
    return (3001,), {"x": x, "out": _zeros(3001, np.float64)}, {"out": 3.0 * x * x - 0.5 * x + 1}


@case(lcg)
def _lcg(r: np.random.Generator) -> Any:
    s = _full_i32(r, 999)
    want = (s.astype(np.int64) * 1103515245 + 12345).astype(np.int32)  # wraps, as C int32
    return (999,), {"seed": s, "out": _zeros(999, np.int32)}, {"out": want}


@case(bits)
def _bits(r: np.random.Generator) -> Any:
    x = r.integers(0, 2**32, 777, dtype=np.uint32)
    three, two, ff = np.uint32(3), np.uint32(2), np.uint32(0xFF)
    want = ((x << three) ^ (x >> two)) | (~x & ff)
    return (777,), {"x": x, "out": _zeros(777, np.uint32)}, {"out": want}


@case(logic)
def _logic(r: np.random.Generator) -> Any:
    x, m = _f32(r, 500, -2, 2), r.random(500) < 0.5
    want = ((x > 0) & ~m) | (x < -1)
    return (500,), {"x": x, "m": m, "out": _zeros(500, bool)}, {"out": want}


def _add2d(r: np.random.Generator, ny: int, nx: int) -> Any:
    a, b = _f32(r, ny * nx).reshape(ny, nx), _f32(r, ny * nx).reshape(ny, nx)
    return (ny, nx), {"a": a, "b": b, "c": _zeros((ny, nx))}, {"c": a + 2 * b}


case(add2d)(lambda r: _add2d(r, 37, 45))
case(add2d, "add2d_tall")(lambda r: _add2d(r, 3000, 3))  # narrow blocks (4 × 64)


@case(matmul, rtol=1e-5, atol=1e-5)
def _matmul(r: np.random.Generator) -> Any:
    a, b = _f32(r, 33 * 50).reshape(33, 50), _f32(r, 50 * 70).reshape(50, 70)
    want = a.astype(np.float64) @ b.astype(np.float64)
    return (33, 70), {"a": a, "b": b, "c": _zeros((33, 70))}, {"c": want}


@case(suffix_sum)
def _suffix_sum(r: np.random.Generator) -> Any:
    x = _i32(r, 200)
    want = np.cumsum(x[::-1])[::-1].astype(np.int32)
    return (200,), {"x": x, "out": _zeros(200, np.int32)}, {"out": want}


@case(first_big)
def _first_big(r: np.random.Generator) -> Any:
    x = _f32(r, 64 * 20).reshape(64, 20)
    want = np.array([next((j for j, v in enumerate(row) if v > 0.9), -1) for row in x], np.int32)
    args = {"x": x, "thresh": np.float32(0.9), "out": _zeros(64, np.int32)}
    return (64,), args, {"out": want}


def _collatz(v: int) -> int:
    n = 0
    while v != 1 and n < 1000:
        v = v // 2 if v % 2 == 0 else 3 * v + 1
        n += 1
    return n


@case(collatz)
def _collatz_case(r: np.random.Generator) -> Any:
    x = r.integers(1, 1000, 300, dtype=np.uint32)
    want = np.array([_collatz(int(v)) for v in x], np.int32)
    return (300,), {"x": x, "steps": _zeros(300, np.int32)}, {"steps": want}


@case(classify)
def _classify(r: np.random.Generator) -> Any:
    x = np.concatenate([r.uniform(-3, 3, 390), np.zeros(10)])
    want = np.select([x < -1, x < 0, x == 0], [-2, -1, 0], 1).astype(np.int32)
    return (400,), {"x": x, "out": _zeros(400, np.int32)}, {"out": want}


@case(hypot_k, rtol=2e-6)
def _hypot(r: np.random.Generator) -> Any:
    x, y = _f32(r, 1000), _f32(r, 1000)
    return (1000,), {"x": x, "y": y, "out": _zeros(1000)}, {"out": np.hypot(x, y)}


@case(rowsum, rtol=1e-12, atol=1e-12)
def _rowsum(r: np.random.Generator) -> Any:
    a = r.standard_normal((50, 30))
    return (50,), {"a": a, "out": _zeros(50, np.float64)}, {"out": a.sum(axis=1)}


def _erf(v: np.ndarray) -> np.ndarray:
    return np.array([math.erf(t) for t in v])


@case(math32, rtol=3e-6, atol=2e-6)
def _math32(r: np.random.Generator) -> Any:
    v, w = _f32(r, 512, 0.1, 4), _f32(r, 512, -1.4, 1.4)
    w[:8] = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.0, -0.0]  # round() ties go to even
    x, y = v.astype(np.float64), w.astype(np.float64)
    cols = [
        np.sqrt(x),
        np.exp(-x),
        np.log(x),
        np.sin(y) + np.cos(y),
        np.tan(y),
        np.tanh(y),
        np.floor(y) + 10 * np.ceil(y),
        _erf(y),
        np.arctan(y) + np.arcsin(y * 0.25) + np.arccos(y * 0.25),
        np.sinh(y) + np.cosh(y),
        np.exp2(y),
        np.log2(x) + np.log10(x),
        np.trunc(y),
        np.rint(y),
        np.power(x, y),
        np.arctan2(y, x),
        np.fmod(y, np.float32(0.7)),
        x * y + 1,
        np.abs(y),
    ]
    want = np.stack(cols, axis=1).astype(np.float32)
    return (512,), {"v": v, "w": w, "out": _zeros((512, 19))}, {"out": want}


@case(math64, rtol=1e-13, atol=1e-13)
def _math64(r: np.random.Generator) -> Any:
    x = r.uniform(0.1, 4, 300)
    y = np.concatenate([[0.5, -0.5, 1.5, 2.5], r.uniform(-3, 3, 296)])
    cols = [
        np.sqrt(x) + np.exp(y) + np.log(x),
        np.sin(y) * np.cos(y) + np.tanh(y),
        np.floor(y) + np.ceil(y) + np.trunc(y) + np.rint(y),
        np.power(x, y) + np.arctan2(y, x) + np.fmod(y, 0.3),
        _erf(y) + np.exp2(y) + np.log2(x) + np.log10(x),
    ]
    args = {"v": x, "w": y, "out": _zeros((300, 5), np.float64)}
    return (300,), args, {"out": np.stack(cols, axis=1)}


@case(preds)
def _preds(r: np.random.Generator) -> Any:
    x = np.array([0, 1, -np.inf, np.inf, np.nan, -np.nan, 3e38, 1e-45], np.float32)
    want = (np.isnan(x) + 2 * np.isinf(x) + 4 * np.isfinite(x)).astype(np.int32)
    return (8,), {"x": x, "out": _zeros(8, np.int32)}, {"out": want}


@case(casts, rtol=1e-15)
def _casts(r: np.random.Generator) -> Any:
    x, k = _f32(r, 600, -100, 100), _i32(r, 600, -5, 5)
    outs = {"out_i": np.int32, "out_f": np.float64, "out_b": bool, "out_u": np.uint32}
    want = {
        "out_i": x.astype(np.int32) + (x > 0),
        "out_f": k / 3.0 + (k.astype(np.float32) * np.float32(0.5)).astype(np.float64),
        "out_b": k != 0,
        "out_u": k.astype(np.uint32),
    }
    return (600,), {"x": x, "k": k} | {o: _zeros(600, t) for o, t in outs.items()}, want


@case(hist)
def _hist(r: np.random.Generator) -> Any:
    x = _i32(r, 5000)
    want = np.bincount(x % 17, minlength=17).astype(np.int32)
    return (5000,), {"x": x, "counts": _zeros(17, np.int32)}, {"counts": want}


@case(fsum)
def _fsum(r: np.random.Generator) -> Any:
    x = r.integers(-50, 50, 20000).astype(np.float32)  # integers: exact in any order
    want = np.array([x.sum(dtype=np.float64)], np.float32)
    return (20000,), {"x": x, "total": _zeros(1)}, {"total": want}


@case(minmax_i)
def _minmax_i(r: np.random.Generator) -> Any:
    n = 3000
    x = _full_i32(r, n)
    args = {
        "x": x,
        "lo": np.array([2**31 - 1], np.int32),
        "hi": np.array([-(2**31)], np.int32),
        "ticket": _zeros(1, np.int32),
        "order": _zeros(n, np.int32),
    }

    def check(got: dict[str, np.ndarray]) -> None:
        assert got["lo"][0] == x.min() and got["hi"][0] == x.max()
        assert np.array_equal(np.sort(got["order"]), np.arange(n))  # atomic_add's old values
        assert got["ticket"][0] == n

    return (n,), args, check


@case(minmax_u)
def _minmax_u(r: np.random.Generator) -> Any:
    x = r.integers(0, 2**32, 3000, dtype=np.uint32)
    args = {"x": x, "lo": np.array([2**32 - 1], np.uint32), "hi": _zeros(1, np.uint32)}
    return (3000,), args, {"lo": x.min(keepdims=True), "hi": x.max(keepdims=True)}


@case(minmax_f)
def _minmax_f(r: np.random.Generator) -> Any:
    x = _f32(r, 3000, -1e3, 1e3)
    lo, hi = np.array([np.inf], np.float32), np.array([-np.inf], np.float32)
    args = {"x": x, "lo": lo, "hi": hi, "seen": _zeros(3000)}

    def check(got: dict[str, np.ndarray]) -> None:
        assert got["lo"][0] == x.min() and got["hi"][0] == x.max()
        # each old value is the initial +inf or an element, never below the final minimum
        seen = got["seen"]
        assert np.all(np.isin(seen, np.concatenate([x, lo]))) and np.all(seen >= x.min())

    return (3000,), args, check


def _divmod_want(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(all="ignore"):
        return {"q": np.floor_divide(a, b), "r": np.remainder(a, b)}


@case(divmod_i)
def _divmod_i(r: np.random.Generator) -> Any:
    sa = [7, -7, 7, -7, 5, -(2**31), -(2**31), 0, 2**31 - 1, -1]
    sb = [2, 2, -2, -2, 0, -1, 1, 3, -1, 3]  # x // 0 == 0, MIN // -1 wraps (as NumPy)
    a = np.concatenate([sa, _i32(r, 1000)]).astype(np.int32)
    b = np.concatenate([sb, _i32(r, 1000, -9, 9)]).astype(np.int32)
    args = {"a": a, "b": b, "q": _zeros(a.size, np.int32), "r": _zeros(a.size, np.int32)}
    return (a.size,), args, _divmod_want(a, b)


def _special_div(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Float floor division's corner cases: signs, zero divisors, infinities, NaN."""
    a = [7, -7, 7, -7, 0.5, -0.5, 1, -1, 0, np.inf, -np.inf, 1, -1, 3, np.nan, 6, -6, 1e-30]
    b = [2, 2, -2, -2, 0.25, 0.3, 0, 0, 0, 1, 3, np.inf, np.inf, np.nan, 1, -3, 3, 1e30]
    return np.array(a, dtype), np.array(b, dtype)


def _divmod_float(dtype: type) -> Callable[[np.random.Generator], Any]:
    def make(r: np.random.Generator) -> Any:
        sa, sb = _special_div(dtype)
        a = np.concatenate([sa, r.uniform(-50, 50, 500).astype(dtype)])
        b = np.concatenate([sb, r.uniform(-5, 5, 500).astype(dtype)])
        args = {"a": a, "b": b, "q": np.zeros_like(a), "r": np.zeros_like(a)}
        return (a.size,), args, _divmod_want(a, b)

    return make


case(divmod_f)(_divmod_float(np.float32))
case(divmod_d)(_divmod_float(np.float64))


@case(select_k)
def _select(r: np.random.Generator) -> Any:
    x, y, k = _f32(r, 700), _f32(r, 700), _i32(r, 700)
    want = {
        "out": np.where(x > y, x, 2 * y),
        "outk": np.maximum(np.abs(k), 3) + np.minimum(np.minimum(k, -k), 7),
    }
    args = {"x": x, "y": y, "k": k, "out": _zeros(700), "outk": _zeros(700, np.int32)}
    return (700,), args, want


@case(count_threads)
def _count_threads(r: np.random.Generator) -> Any:  # a 2-D domain, launched flat
    return (30, 7), {"counter": _zeros(1, np.int32)}, {"counter": np.array([210], np.int32)}


@case(wide)
def _wide(r: np.random.Generator) -> Any:
    x = _full_i32(r, 300)
    acc = np.ones(300, np.int64)
    with np.errstate(all="ignore"):
        for k in range(5):
            acc = acc * x.astype(np.int64) + k  # wraps at 64 bits
    return (300,), {"x": x, "out": _zeros(300, np.int64)}, {"out": acc}


@case(strided, rtol=1e-5, atol=1e-6)
def _strided(r: np.random.Generator) -> Any:
    x = _f32(r, 101)
    want = [x[i::-2].sum(dtype=np.float64) if i < 50 else 0 for i in range(101)]
    args = {"x": x, "step": np.int32(-2), "out": _zeros(101)}
    return (101,), args, {"out": np.array(want, np.float32)}


@case(collide)
def _collide(r: np.random.Generator) -> Any:
    x = _f32(r, 100)
    args = {"new": x, "this": _zeros(100), "n0": np.int32(7)}
    return (100,), args, {"this": x * 2 + 7}


@case(double)
def _double(r: np.random.Generator) -> Any:
    x = _f32(r, 100)
    return (100,), {"x": x}, {"x": x * 2}


@case(powers, rtol=2e-6)
def _powers(r: np.random.Generator) -> Any:
    x, y = _f32(r, 256, 0.1, 3), _f32(r, 256, -2, 2)
    want = np.stack([x**3, np.sqrt(x), x**y], axis=1)
    return (256,), {"x": x, "y": y, "out": _zeros((256, 3))}, {"out": want}


@case(shifts)
def _shifts(r: np.random.Generator) -> Any:
    x, s = _full_i32(r, 300), _i32(r, 300, -2, 40)  # counts < 0 or ≥ 32 included
    outs = {"lo": _zeros(300, np.int32), "hi": _zeros(300, np.int32), "ur": _zeros(300, np.uint32)}
    want = {
        "lo": np.left_shift(x, s),
        "hi": np.right_shift(x, s),
        "ur": np.right_shift(x.astype(np.uint32), s.astype(np.uint32)),
    }
    return (300,), {"x": x, "s": s} | outs, want


@case(hist2d)
def _hist2d(r: np.random.Generator) -> Any:
    x, y = _i32(r, 4000, 0, 5), _i32(r, 4000, 0, 9)
    want = np.zeros((5, 9), np.uint32)
    np.add.at(want, (x, y), 1)
    return (4000,), {"x": x, "y": y, "h": _zeros((5, 9), np.uint32)}, {"h": want}


@case(scalars)
def _scalars(r: np.random.Generator) -> Any:
    args = {"flag": np.bool_(True), "k": np.uint32(3), "d": np.float64(0.25)}
    return (10,), args | {"out": _zeros(10, np.float64)}, {"out": np.full(10, 0.75)}


@case(inrange)
def _inrange(r: np.random.Generator) -> Any:
    x = _i32(r, 100, -20, 20)
    return (100,), {"x": x, "out": _zeros(100, bool)}, {"out": (x >= 0) & (x < 10)}


# ---- reductions ----------------------------------------------------------------------------
def _ident(v):
    return v


def _to_f64(v):
    return vg.f64(v)


def _to_i64(v):
    return vg.i64(v)


def _sq(v):
    return v * v


def _dot(a, b):
    return vg.f64(a) * b


def _user_add(a, b):
    return a + b


def _user_max(a, b):
    return a if a > b else b


def _mean(a, n: vg.i64):
    return a / vg.f64(n)


def _root(a):
    return math.sqrt(a)


@dataclass
class Red:
    """A reduction built by hand (``ir.Reduction``) and its NumPy meaning."""

    red: ir.Reduction
    make: Callable[[np.random.Generator, tuple[int, ...]], list[np.ndarray]]
    ref: Callable[[list[np.ndarray], int | None], np.ndarray]
    float_tol: float = 0.0


def reduction(
    name: str,
    map_fn: Callable[..., Any],
    inputs: list[DType],
    combine: str | Callable[..., Any],
    identity: float | int | bool,
    acc: DType,
    out: DType | None = None,
    post: Callable[..., Any] | None = None,
    post_n: bool = False,
) -> ir.Reduction:
    """An ``ir.Reduction`` from plain Python functions (as ``@vg.reduction`` builds one)."""
    m = parse_func(Func(map_fn), inputs)
    comb = parse_func(Func(combine), [acc, acc]) if callable(combine) else combine
    p = parse_func(Func(post), [acc, i64] if post_n else [acc]) if post is not None else None
    out = out or (p.ret if p is not None else acc)
    funcs = [m, *([comb] if isinstance(comb, ir.Function) else []), *([p] if p else [])]
    return ir.Reduction(
        name, m, comb, ir.Const(acc, identity), p, post_n, tuple(inputs), acc, out, funcs
    )


def _uniform32(r: np.random.Generator, shape: tuple[int, ...]) -> list[np.ndarray]:
    return [r.uniform(-1, 1, shape).astype(np.float32)]


def _with_nan(r: np.random.Generator, shape: tuple[int, ...]) -> list[np.ndarray]:
    x = r.uniform(-1e3, 1e3, shape).astype(np.float32)
    if x.size > 10:
        x.reshape(-1)[r.integers(0, x.size)] = np.nan
    return [x]


def _npred(fn: Callable[..., Any]) -> Callable[[list[np.ndarray], int | None], np.ndarray]:
    return lambda xs, axis: np.asarray(fn(xs[0], axis=axis))


REDS: dict[str, Red] = {
    "sum_f32": Red(
        reduction("sum_f32", _ident, [f32], "add", 0.0, f32),
        _uniform32,
        lambda xs, axis: xs[0].sum(axis=axis, dtype=np.float64).astype(np.float32),
        float_tol=1e-6,
    ),
    "mean_f64": Red(
        reduction("mean_f64", _to_f64, [f32], "add", 0.0, f64, post=_mean, post_n=True),
        _uniform32,
        lambda xs, axis: xs[0].astype(np.float64).mean(axis=axis),
        float_tol=1e-13,
    ),
    "prod_f64": Red(
        reduction("prod_f64", _ident, [f64], "mul", 1.0, f64),
        lambda r, s: [r.uniform(0.9999, 1.0001, s)],
        lambda xs, axis: xs[0].prod(axis=axis),
        float_tol=1e-12,
    ),
    "min_f32": Red(
        reduction("min_f32", _ident, [f32], "min", np.inf, f32), _with_nan, _npred(np.min)
    ),
    "max_f32": Red(
        reduction("max_f32", _ident, [f32], "max", -np.inf, f32), _with_nan, _npred(np.max)
    ),
    "min_i32": Red(
        reduction("min_i32", _ident, [i32], "min", 2**31 - 1, i32),
        lambda r, s: [r.integers(-(2**31), 2**31 - 1, s, dtype=np.int32)],
        _npred(np.min),
    ),
    "max_u32": Red(
        reduction("max_u32", _ident, [u32], "max", 0, u32),
        lambda r, s: [r.integers(0, 2**32, s, dtype=np.uint32)],
        _npred(np.max),
    ),
    "all": Red(
        reduction("all", _ident, [bool_], "and", True, bool_),
        lambda r, s: [r.random(s) < 0.9999],
        _npred(np.all),
    ),
    "any": Red(
        reduction("any", _ident, [bool_], "or", False, bool_),
        lambda r, s: [r.random(s) < 0.0001],
        _npred(np.any),
    ),
    "or_u32": Red(
        reduction("or_u32", _ident, [u32], "or", 0, u32),
        lambda r, s: [np.left_shift(np.uint32(1), r.integers(0, 32, s, dtype=np.uint32))],
        lambda xs, axis: np.bitwise_or.reduce(xs[0], axis=axis),
    ),
    "and_i32": Red(
        reduction("and_i32", _ident, [i32], "and", -1, i32),
        lambda r, s: [~np.left_shift(np.int32(1), r.integers(0, 31, s, dtype=np.int32))],
        lambda xs, axis: np.bitwise_and.reduce(xs[0], axis=axis),
    ),
    "count": Red(
        reduction("count", _to_i64, [bool_], "add", 0, i64),
        lambda r, s: [r.random(s) < 0.3],
        lambda xs, axis: np.count_nonzero(xs[0], axis=axis).astype(np.int64),
    ),
    "sum_i32_wraps": Red(
        reduction("sum_i32_wraps", _ident, [i32], "add", 0, i32),
        lambda r, s: [r.integers(-(2**31), 2**31 - 1, s, dtype=np.int32)],
        lambda xs, axis: xs[0].sum(axis=axis, dtype=np.int32),
    ),
    "dot_mixed": Red(
        reduction("dot_mixed", _dot, [f32, f64], "add", 0.0, f64),
        lambda r, s: [r.uniform(-1, 1, s).astype(np.float32), r.uniform(-1, 1, s)],
        lambda xs, axis: (xs[0].astype(np.float64) * xs[1]).sum(axis=axis),
        float_tol=1e-13,
    ),
    "user_add": Red(
        reduction("user_add", _ident, [f64], _user_add, 0.0, f64),
        lambda r, s: [r.uniform(-1, 1, s)],
        lambda xs, axis: xs[0].sum(axis=axis),
        float_tol=1e-13,
    ),
    "user_max": Red(
        reduction("user_max", _ident, [i32], _user_max, -(2**31), i32),
        lambda r, s: [r.integers(-(2**31), 2**31 - 1, s, dtype=np.int32)],
        _npred(np.max),
    ),
    "norm": Red(
        reduction("norm", _sq, [f32], "add", 0.0, f32, post=_root),
        _uniform32,
        lambda xs, axis: np.sqrt(np.square(xs[0], dtype=np.float64).sum(axis=axis)),
        float_tol=1e-6,
    ),
}


# ==== without a GPU: generate, compile with nvcc ===============================================
def _nvcc(source: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cu")
        with open(path, "w") as f:
            f.write(source)
        p = subprocess.run(
            [NVCC, "-ptx", "-arch=sm_90", "-std=c++17", "-o", os.devnull, path],  # type: ignore[list-item]
            capture_output=True,
            text=True,
        )
        return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def nvcc_results() -> dict[str, tuple[int, str, str]]:
    """name → (nvcc exit code, nvcc output, source) for every zoo kernel and reduction,
    compiled in parallel (nvcc takes ~1 s each)."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH: cannot check that the generated CUDA C compiles")
    sources = {
        f"kernel:{k}": codegen_cuda.kernel_source(parse_kernel(c.fn)) for k, c in CASES.items()
    }  # noqa: E501
    sources |= {f"reduction:{k}": codegen_cuda.reduction_source(r.red) for k, r in REDS.items()}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        done = dict(zip(sources, pool.map(_nvcc, sources.values()), strict=True))
    return {k: (rc, out, sources[k]) for k, (rc, out) in done.items()}


@pytest.mark.parametrize("name", [f"kernel:{k}" for k in CASES] + [f"reduction:{k}" for k in REDS])
def test_generated_cuda_compiles(nvcc_results: dict[str, tuple[int, str, str]], name: str):
    rc, out, source = nvcc_results[name]
    numbered = "\n".join(f"{i + 1:4d} {line}" for i, line in enumerate(source.splitlines()))
    assert rc == 0, f"nvcc failed on {name}:\n{out}\n{numbered}"
    assert "warning" not in out, f"nvcc warned on {name}:\n{out}\n{numbered}"


def test_zoo_is_big_enough():
    assert len({c.fn for c in CASES.values()}) >= 25


def test_source_is_nvrtc_friendly_and_readable():
    src = codegen_cuda.kernel_source(parse_kernel(saxpy))
    assert "#include" not in src
    assert 'extern "C" __global__' in src and " saxpy(" in src
    # the parameter convention: domain, then arguments (arrays: const when only read)
    params = "int n0,\n    float a,\n    const float* __restrict__ x,\n    float* __restrict__ y)"
    assert params in src
    assert "y[i] = a * x[i] + y[i];" in src


def test_parameter_convention_2d_and_shapes():
    gen = codegen_cuda.generate_kernel(parse_kernel(matmul))
    assert gen.ndim == 2 and gen.entry == "matmul"
    # a is indexed and a.shape[1] read; b, c are indexed: each needs its row length only
    assert gen.shape_dims == ((1,), (1,), (1,))
    assert "int n0,\n    int n1,\n    const float* __restrict__ a,\n    int a_shape1," in gen.source
    gen = codegen_cuda.generate_kernel(parse_kernel(rowsum))  # shapes used inside a @vg.func
    assert gen.shape_dims == ((1,), ())
    gen = codegen_cuda.generate_kernel(parse_kernel(count_threads))
    assert gen.ndim is None and "int n0" in gen.source


def test_names_that_clash_with_c_are_renamed():
    gen = codegen_cuda.generate_kernel(parse_kernel(collide))
    for decl in ("float* __restrict__ new_", "float* __restrict__ this_", "int n0_"):
        assert decl in gen.source
    assert "sqrtf_ = 2.0f;" in gen.source and "uvg_row = n0_;" in gen.source
    assert codegen_cuda.generate_kernel(parse_kernel(double)).entry == "double_"


def test_print_is_reported_unsupported():
    def talk(x: vg.f32[:]):
        i = tid()
        print("x is", x[i])

    fn = parse_kernel(talk)
    assert ir.usage(fn).prints
    assert "omitted: print() only runs on the numpy backend" in codegen_cuda.kernel_source(fn)


@pytest.mark.parametrize(
    "value, t, text",
    [
        (0.1, f32, "0.1f"),
        (-2.5, f64, "(-2.5)"),
        (float("inf"), f32, "__int_as_float(0x7f800000)"),
        (float("-inf"), f64, "(-__longlong_as_double(0x7ff0000000000000LL))"),
        (float("nan"), f32, "__int_as_float(0x7fc00000)"),
        (-(2**31), i32, "(-2147483647 - 1)"),
        (-(2**63), i64, "(-9223372036854775807LL - 1)"),
        (2**32 - 1, u32, "4294967295u"),
        (1e20, f32, "1e+20f"),
        (True, bool_, "true"),
    ],
)
def test_constants_are_exact(value: Any, t: DType, text: str):
    assert codegen_cuda.c_const(value, t) == text


def test_launch_config_covers_big_domains():
    grid, block = codegen_cuda.launch_config(1, (2**31 - 1,))
    assert block == (256, 1, 1) and grid[0] * 256 >= 2**31 - 1
    for ny, nx in ((2**31 - 1, 1), (3, 2**31 - 1), (10**6, 33), (7, 5)):
        (gx, gy, gz), (bx, by, bz) = codegen_cuda.launch_config(2, (ny, nx))
        assert bx * by == 256 and gy <= 65535 and gz <= 65535
        assert gx * bx >= nx and gy * gz * by >= ny
        assert (gy * gz * by) < 2**32  # row index computed in unsigned int
    assert codegen_cuda.launch_config(None, (30, 7)) == ((1, 1, 1), (256, 1, 1))


@pytest.mark.parametrize(
    "shape, axis",
    [((1,), None), ((10**7,), None), ((4, 5), None), ((3, 10**6), 1), ((10**5, 40), 1),
     ((10**5, 3), 1), ((10**6, 3), 0), ((3, 10**6), 0), ((1, 1), 0), ((1, 1), 1)],
)  # fmt: skip
def test_reduction_launches_partition_the_work(shape: tuple[int, ...], axis: int | None):
    launches = codegen_cuda.reduction_launches(shape, axis, sms=132, vectorised=False)
    assert 1 <= len(launches) <= 2
    assert launches == codegen_cuda.reduction_launches(shape, axis, sms=132, vectorised=False)
    for ln in launches:
        assert ln.entry in codegen_cuda.REDUCTION_ENTRIES
        assert all(0 < g for g in ln.grid) and ln.grid[1] <= 65535 and ln.grid[2] <= 65535
        assert ln.block[0] * ln.block[1] * ln.block[2] == 256
    if len(launches) == 2:
        assert launches[0].partials == launches[1].partials > 0


@pytest.mark.parametrize(
    "shape, axis, entries",
    [
        ((1000,), None, ["vg_full_part"]),  # one block: one launch, post applied there
        ((10**7,), None, ["vg_full_part", "vg_full_final"]),
        ((10**6, 9), 1, ["vg_rows_thread"]),
        ((10**5, 20), 1, ["vg_rows_group"]),
        ((10**5, 200), 1, ["vg_rows_warp"]),
        ((3, 10**6), 1, ["vg_rows_part", "vg_rows_final"]),
        ((10**6, 3), 0, ["vg_cols_part", "vg_cols_final"]),
        ((16, 10**6), 0, ["vg_cols_part"]),
    ],
)
def test_reduction_kernel_choice(shape: tuple[int, ...], axis: int | None, entries: list[str]):
    launches = codegen_cuda.reduction_launches(shape, axis, sms=132, vectorised=False)
    assert [ln.entry for ln in launches] == entries


# ---- the semantic helpers, compiled for the host and compared with NumPy --------------------
_HOST_DRIVER = r"""
#include <cmath>
#include <cstdio>
#include <cstring>
using namespace std;
#define __device__
#define __forceinline__ inline
static float from_bits(unsigned int b) { float f; memcpy(&f, &b, 4); return f; }
static unsigned int to_bits(float f) { unsigned int b; memcpy(&b, &f, 4); return b; }
HELPERS
int main() {
    int ia[] = IA, ib[] = IB;
    for (int k = 0; k < (int)(sizeof ia / sizeof *ia); ++k)
        printf("%d %d\n", vg_floordiv_i32(ia[k], ib[k]), vg_mod_i32(ia[k], ib[k]));
    unsigned int ua[] = UA, ub[] = UB;
    for (int k = 0; k < (int)(sizeof ua / sizeof *ua); ++k)
        printf("%u %u\n", vg_floordiv_u32(ua[k], ub[k]), vg_mod_u32(ua[k], ub[k]));
    float fa[] = FA, fb[] = FB;
    for (int k = 0; k < (int)(sizeof fa / sizeof *fa); ++k)
        printf("%u %u\n", to_bits(vg_floordiv_f32(fa[k], fb[k])),
               to_bits(vg_mod_f32(fa[k], fb[k])));
    int sx[] = SX; long long sc[] = SC;
    for (int k = 0; k < (int)(sizeof sx / sizeof *sx); ++k)
        printf("%d %d\n", vg_shl_i32(sx[k], sc[k]), vg_shr_i32(sx[k], sc[k]));
    int t0[] = T0, t1[] = T1, t2[] = T2;
    for (int k = 0; k < (int)(sizeof t0 / sizeof *t0); ++k)
        printf("%u\n", vg_trips(t0[k], t1[k], t2[k]));
    printf("%d %d %d %d\n", vg_add(2147483647, 1), vg_mul(65536, 65536),
           vg_neg(-2147483647 - 1), vg_abs(-2147483647 - 1));
    return 0;
}
"""


def _c_array(values: Any, t: DType) -> str:
    lits = (codegen_cuda.c_const(v, t) for v in np.asarray(values).tolist())
    return "{" + ", ".join(x.replace("__int_as_float", "from_bits") for x in lits) + "}"


def test_semantic_helpers_match_numpy_on_the_host():
    """The helpers that give C Python's semantics (floor division, shifts, range trip
    counts, wrapping arithmetic), compiled for the CPU: the same IEEE arithmetic as the
    GPU's, compared bit for bit with NumPy/Python."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to run the helpers")
    names = ["floordiv_i32", "mod_i32", "floordiv_u32", "mod_u32", "floordiv_f32", "mod_f32"]
    names += ["shl_i32", "shr_i32", "trips_i32", "add_i32", "mul_i32", "neg_i32", "abs_i32"]
    ia = np.array([7, -7, 7, -7, 5, -(2**31), -(2**31), 0, 2**31 - 1, -1, 13, -13], np.int32)
    ib = np.array([2, 2, -2, -2, 0, -1, 1, 3, -1, 3, -5, 5], np.int32)
    ua, ub = np.array([7, 0, 2**32 - 1], np.uint32), np.array([2, 0, 10], np.uint32)
    fa, fb = _special_div(np.float32)
    sx = np.array([1, -8, 5, -(2**31), 7, -1], np.int32)
    sc = np.array([40, 40, -1, 1, 32, 3], np.int32)
    trips = [(0, 10, 1), (10, 0, -1), (0, 10, 3), (-5, 5, 2), (2147483000, 2**31 - 1, 1000)]
    trips += [(-(2**31) + 1, 2**31 - 1, 65536), (3, 3, -1)]
    t0, t1, t2 = zip(*trips, strict=True)
    src = _HOST_DRIVER.replace("HELPERS", "\n".join(codegen_cuda._HELPERS[n] for n in names))
    for key, values, t in (
        ("IA", ia, i32), ("IB", ib, i32), ("UA", ua, u32), ("UB", ub, u32), ("FA", fa, f32),
        ("FB", fb, f32), ("SX", sx, i32), ("SC", sc, i64), ("T0", t0, i32), ("T1", t1, i32),
        ("T2", t2, i32),
    ):  # fmt: skip
        src = src.replace(key, _c_array(values, t))
    with tempfile.TemporaryDirectory() as d:
        path, exe = os.path.join(d, "h.cpp"), os.path.join(d, "h")
        with open(path, "w") as f:
            f.write(src)
        p = subprocess.run([cxx, "-O2", "-std=c++17", "-o", exe, path], capture_output=True)
        assert p.returncode == 0, p.stderr.decode() + src
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    rows = iter([[int(v) for v in line.split()] for line in out.splitlines()])
    with np.errstate(all="ignore"):
        for want in zip(np.floor_divide(ia, ib), np.remainder(ia, ib), strict=True):
            assert next(rows) == list(want)
        for want in zip(np.floor_divide(ua, ub), np.remainder(ua, ub), strict=True):
            assert next(rows) == list(want)
        q, r = np.floor_divide(fa, fb), np.remainder(fa, fb)
        for k in range(fa.size):
            got = np.array(next(rows), np.uint32).view(np.float32)
            for g, w in zip(got, (q[k], r[k]), strict=True):
                same = (np.isnan(g) and np.isnan(w)) or (g == w and np.signbit(g) == np.signbit(w))
                assert same, f"{fa[k]} // {fb[k]}: got {got}, NumPy {q[k]}, {r[k]}"
        for want in zip(np.left_shift(sx, sc), np.right_shift(sx, sc), strict=True):
            assert next(rows) == list(want)
    for t in trips:
        assert next(rows) == [len(range(*t))]
    assert next(rows) == [-(2**31), 0, -(2**31), -(2**31)]


# ==== on a CUDA GPU ===========================================================================
@pytest.fixture(scope="module")
def cuda() -> Any:
    if not _CUDA:
        pytest.skip(_NO_CUDA)
    return vg.get_device("cuda")


def _launch(dev: Any, fn: Any, domain: tuple[int, ...], args: dict[str, Any]) -> dict[str, Any]:
    """Compile and launch ``fn`` on ``dev``; returns every array argument back on the host."""
    import cupy as cp

    ir_fn = parse_kernel(fn)
    ck = dev.compile_kernel(ir_fn)
    bufs = {k: cp.asarray(v) for k, v in args.items() if isinstance(v, np.ndarray)}
    launch_args = [
        (bufs[p.name], bufs[p.name].shape) if p.is_array else args[p.name] for p in ir_fn.params
    ]  # noqa: E501
    dev.launch_kernel(ck, domain, launch_args)
    dev.sync()
    return {k: cp.asnumpy(v) for k, v in bufs.items()}


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_numpy(cuda: Any, name: str, rng: np.random.Generator):
    case = CASES[name]
    domain, args, want = case.make(rng)
    got = _launch(cuda, case.fn, domain, args)
    if callable(want):
        want(got)
        return
    for out, expected in want.items():
        g, msg = got[out], f"{name}: {out}"
        assert g.dtype == args[out].dtype, msg
        if g.dtype.kind == "f":
            tol = {"rtol": case.rtol, "atol": case.atol}
            np.testing.assert_allclose(g, expected, **tol, equal_nan=True, err_msg=msg)
        else:
            np.testing.assert_array_equal(g, expected, err_msg=msg)


_FULL_SIZES = [1, 5, 1000, 2048 + 7, 300_001, 2**22 + 3]
# (every reduction kernel and partition: thread/group/split rows, columns with and without
# block rows, one pass and two)
_AXIS_SHAPES = [(1, 1), (5, 7), (3, 100_000), (100_000, 3), (1000, 1000), (40_000, 33),
                (2, 5000), (7000, 9), (20_000, 20), (16, 300_000), (5000, 130)]  # fmt: skip


def _check_reduction(r: Red, got: np.ndarray, xs: list[np.ndarray], axis: int | None) -> None:
    want = r.ref(xs, axis)
    assert got.dtype == r.red.out.np and got.shape == np.shape(want), (got.dtype, got.shape)
    if r.float_tol:
        # float sums: the error scales with the sum of magnitudes, not with the result
        scale = 1.0 if r.red.name in ("prod_f64", "norm") else np.abs(xs[0]).sum(axis=axis)
        atol = r.float_tol * np.max(scale)
        np.testing.assert_allclose(got, want, rtol=r.float_tol, atol=atol, err_msg=r.red.name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=r.red.name)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
@pytest.mark.parametrize("name", list(REDS))
def test_reduction_matches_numpy(cuda: Any, name: str, rng: np.random.Generator):
    import cupy as cp

    r = REDS[name]
    cr = cuda.compile_reduction(r.red)
    for n in _FULL_SIZES:
        xs = r.make(rng, (n,))
        got = cuda.run_reduction(cr, [cp.asarray(x) for x in xs], (n,), None)
        _check_reduction(r, cp.asnumpy(got), xs, None)
    for shape in _AXIS_SHAPES:
        xs = r.make(rng, shape)
        dev_xs = [cp.asarray(x) for x in xs]
        for axis in (None, 0, 1):
            got = cuda.run_reduction(cr, dev_xs, shape, axis)
            _check_reduction(r, cp.asnumpy(got), xs, axis)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_reduction_vectorised_and_misaligned_agree(cuda: Any, rng: np.random.Generator):
    """A view that starts 4 bytes in takes the scalar pass; both give the sum."""
    import cupy as cp

    cr = cuda.compile_reduction(REDS["sum_f32"].red)
    assert cr.extra["vector_width"] == 4
    x = cp.asarray(rng.uniform(-1, 1, 2**20 + 1).astype(np.float32))
    want = cp.asnumpy(x[1:]).astype(np.float64).sum()
    for view in (x[1:], x[1:].copy()):
        assert abs(float(cuda.run_reduction(cr, [view], (2**20,), None)) - want) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_reductions_are_deterministic(cuda: Any, rng: np.random.Generator):
    import cupy as cp

    x32 = cp.asarray(rng.standard_normal((3000, 1500)).astype(np.float32))
    for name, x in (("sum_f32", x32), ("norm", x32), ("user_add", x32.astype(cp.float64))):
        cr = cuda.compile_reduction(REDS[name].red)
        for axis in (None, 0, 1):
            a = cp.asnumpy(cuda.run_reduction(cr, [x], x.shape, axis))
            b = cp.asnumpy(cuda.run_reduction(cr, [x], x.shape, axis))
            assert a.tobytes() == b.tobytes(), (name, axis)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_second_compile_hits_the_cache(cuda: Any):
    cuda.compile_kernel(parse_kernel(saxpy))
    again = cuda.compile_kernel(parse_kernel(saxpy))
    assert again.cache_hit and again.compile_s < 0.05
    cuda.compile_reduction(REDS["sum_f32"].red)
    assert cuda.compile_reduction(REDS["sum_f32"].red).cache_hit


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_corrupted_disk_entry_is_rebuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Any):
    from vgpu_nb.backends import cuda_backend
    from vgpu_nb.kernel.cache import CACHE

    monkeypatch.setenv("VGPU_NB_CACHE_DIR", str(tmp_path))
    fn = parse_kernel(double)
    CACHE.clear_memory()
    first = cuda_backend.open_device(_CUDA[0]).compile_kernel(fn)  # (fresh device: no modules)
    assert not first.cache_hit
    path = CACHE.path("cuda", first.extra["key"])
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte of the cubin
    path.write_bytes(bytes(blob))
    CACHE.clear_memory()
    dev = cuda_backend.open_device(_CUDA[0])
    assert not dev.compile_kernel(fn).cache_hit  # rejected, compiled again, rewritten
    assert CACHE.get("cuda", first.extra["key"]) is not None
    got = _launch(dev, double, (5,), {"x": np.arange(5, dtype=np.float32)})
    np.testing.assert_array_equal(got["x"], np.arange(5) * 2)
    CACHE.clear_memory()
    assert cuda_backend.open_device(_CUDA[0]).compile_kernel(fn).cache_hit  # from disk


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_nvrtc_error_shows_log_and_line(cuda: Any):
    source = 'extern "C" __global__ void broken(int n0) {\n    int x = undefined_name;\n}\n'
    with pytest.raises(vg.errors.KernelCompileError) as info:
        cuda._module(source, "broken")
    msg = str(info.value)
    assert "undefined_name" in msg and "    2 |     int x = undefined_name;" in msg


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_print_kernel_refused(cuda: Any):
    def talk(x: vg.f32[:]):
        i = tid()
        print(x[i])

    fn = parse_kernel(talk)
    assert "numpy" in cuda.kernel_unsupported(fn)
    with pytest.raises(vg.errors.UnsupportedOnBackend):
        cuda.compile_kernel(fn)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason=_NO_CUDA)
def test_launch_overhead_close_to_rawkernel(cuda: Any):
    """Host time per launch against CuPy's RawKernel on the same code with ready-made
    arguments (the target is ≤ 1.2×; the assertion leaves room for a noisy machine)."""
    import cupy as cp

    n = 1 << 10
    ck = cuda.compile_kernel(parse_kernel(saxpy))
    x, y = cp.ones(n, cp.float32), cp.ones(n, cp.float32)
    args = [np.float32(2), (x, (n,)), (y, (n,))]
    raw = cp.RawKernel(ck.source, ck.extra["entry"])
    raw_args = (np.int32(n), np.float32(2), x, y)
    grid = ((n + 255) // 256,)
    runs = {
        "ours": lambda: cuda.launch_kernel(ck, (n,), args),
        "raw": lambda: raw(grid, (256,), raw_args),
    }
    best: dict[str, float] = {}
    for name in ["ours", "raw"] * 3:
        f = runs[name]
        for _ in range(200):
            f()
        cuda.sync()
        t0 = time.perf_counter()
        for _ in range(2000):
            f()
        t = (time.perf_counter() - t0) / 2000
        cuda.sync()
        best[name] = min(best.get(name, t), t)
    ratio = best["ours"] / best["raw"]
    print(f"launch: ours {best['ours'] * 1e6:.2f} us, RawKernel {best['raw'] * 1e6:.2f} us")
    print(f"launch ratio {ratio:.2f}")
    assert ratio < 1.5
