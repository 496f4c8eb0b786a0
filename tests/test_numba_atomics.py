"""Numba atomics (``vgpu_nb.kernel.numba_atomics``): results under real thread contention
inside ``prange`` match NumPy references, returned old values are right, integers wrap,
float min/max keep Python's NaN rule, bad types fail at compile time, and a
``@njit(parallel=True, cache=True)`` user loads from Numba's cache in a fresh process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from numba import njit, prange  # noqa: E402
from numba.core.errors import TypingError  # noqa: E402

from vgpu_nb.kernel import numba_atomics as na  # noqa: E402
from vgpu_nb.kernel.numba_atomics import atomic_add, atomic_max, atomic_min  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = [np.int32, np.uint32, np.float32]
N = 10**6
BINS = 64


@pytest.fixture(autouse=True)
def _all_threads() -> None:
    """Use every Numba thread: another test may have lowered the count."""
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def _needs_threads() -> None:
    """Contention tests prove nothing on one thread; the cache test covers that case too."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("NUMBA_NUM_THREADS < 2: no concurrency in this process")


@njit(parallel=True)
def _histogram(keys: np.ndarray, out: np.ndarray, tids: np.ndarray) -> None:
    for i in prange(keys.size):
        atomic_add(out, keys[i], 1)
        tids[i] = numba.get_thread_id()


@njit(parallel=True)
def _bucket_min_max(keys: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    for i in prange(keys.size):
        atomic_min(lo, keys[i], vals[i])
        atomic_max(hi, keys[i], vals[i])


@njit(parallel=True)
def _hand_out_slots(counter: np.ndarray, slots: np.ndarray) -> None:
    for i in prange(slots.size):
        slots[i] = atomic_add(counter, 0, 1)


@njit
def _add(a: np.ndarray, i: Any, v: Any) -> Any:
    return atomic_add(a, i, v)


@njit
def _min(a: np.ndarray, i: Any, v: Any) -> Any:
    return atomic_min(a, i, v)


@njit
def _max(a: np.ndarray, i: Any, v: Any) -> Any:
    return atomic_max(a, i, v)


@njit(parallel=True)
def _flat_2d(keys: np.ndarray, grid: np.ndarray) -> None:
    flat = grid.reshape(grid.size)  # how the code generator passes 2-D arrays
    for i in prange(keys.size):
        atomic_add(flat, keys[i], 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_histogram_matches_bincount(dtype: type, rng: np.random.Generator) -> None:
    _needs_threads()
    keys = rng.integers(0, BINS, N)
    out = np.zeros(BINS, dtype)
    tids = np.full(N, -1, np.int64)
    _histogram(keys, out, tids)
    np.testing.assert_array_equal(out, np.bincount(keys, minlength=BINS).astype(dtype))
    assert len(np.unique(tids)) >= 2, "the prange loop did not run on several threads"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_min_max_per_bucket(dtype: type, rng: np.random.Generator) -> None:
    _needs_threads()
    keys = rng.integers(0, BINS, N)
    if dtype is np.float32:
        vals = (rng.standard_normal(N) * 1e3).astype(np.float32)
        lo, hi = np.full(BINS, np.inf, dtype), np.full(BINS, -np.inf, dtype)
    else:
        info = np.iinfo(dtype)  # full range: negatives for int32, >= 2**31 for uint32
        vals = rng.integers(info.min, info.max, N, endpoint=True, dtype=dtype)
        lo, hi = np.full(BINS, info.max, dtype), np.full(BINS, info.min, dtype)
    ref_lo, ref_hi = lo.copy(), hi.copy()
    np.minimum.at(ref_lo, keys, vals)
    np.maximum.at(ref_hi, keys, vals)
    _bucket_min_max(keys, vals, lo, hi)
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(hi, ref_hi)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_old_values_hand_out_unique_slots(dtype: type) -> None:
    _needs_threads()
    n = 300_000  # < 2**24, so float32 counts exactly
    counter = np.zeros(1, dtype)
    slots = np.full(n, -1, np.int64)
    _hand_out_slots(counter, slots)
    assert counter[0] == n
    np.testing.assert_array_equal(np.sort(slots), np.arange(n))


@pytest.mark.parametrize("fadd", [True, False], ids=["atomicrmw-fadd", "cmpxchg-loop"])
def test_float32_add_of_ones_is_exact(fadd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """All threads hit one element; both code paths for float add must count every 1.0."""
    _needs_threads()
    monkeypatch.setattr(na, "_FADD_OVERRIDE", fadd)

    @njit(parallel=True)  # a fresh function, so it is compiled under the override
    def hammer(a: np.ndarray, n: int) -> float:
        s = 0.0
        for _ in prange(n):
            s += atomic_add(a, 0, np.float32(1.0))
        return s

    a = np.zeros(1, np.float32)
    old_sum = hammer(a, N)
    assert a[0] == np.float32(N)
    assert old_sum == N * (N - 1) / 2  # the old values are 0, 1, ..., N-1 in some order


def test_integer_wraparound() -> None:
    u = np.array([2**32 - 1, 0], np.uint32)
    assert _add(u, 0, 1) == 2**32 - 1 and u[0] == 0
    assert _add(u, 1, -1) == 0 and u[1] == 2**32 - 1  # -1 converts to 0xFFFFFFFF
    assert _add(u, 1, 2**32 + 5) == 2**32 - 1 and u[1] == 4  # value truncated to 32 bits
    s = np.array([2**31 - 1], np.int32)
    assert _add(s, 0, 1) == 2**31 - 1 and s[0] == -(2**31)


def test_min_max_signedness() -> None:
    u = np.array([5, 5], np.uint32)
    assert _min(u, 0, 2**31) == 5 and u[0] == 5  # unsigned: 2**31 is large, not negative
    assert _max(u, 1, 2**31) == 5 and u[1] == 2**31
    s = np.array([5, 5], np.int32)
    assert _min(s, 0, -7) == 5 and s[0] == -7
    assert _max(s, 1, -7) == 5 and s[1] == 5


def test_float_min_max_old_values_and_nan_rule() -> None:
    a = np.array([1.0, 1.0, np.nan, 0.0], np.float32)
    assert _min(a, 0, 0.5) == 1.0 and a[0] == 0.5
    assert _min(a, 0, 2.0) == 0.5 and a[0] == 0.5
    assert _max(a, 1, 3.0) == 1.0 and a[1] == 3.0
    assert _min(a, 1, np.nan) == 3.0 and a[1] == 3.0  # a NaN value never replaces
    assert _max(a, 1, np.nan) == 3.0 and a[1] == 3.0
    assert np.isnan(_min(a, 2, -1.0)) and np.isnan(a[2])  # a stored NaN stays
    assert np.isnan(_max(a, 2, 1.0)) and np.isnan(a[2])
    assert _min(a, 3, -0.0) == 0.0 and not np.signbit(a[3])  # -0.0 < 0.0 is False


def test_value_and_index_conversions() -> None:
    f = np.zeros(4, np.float32)
    assert _add(f, np.uint64(1), 2.5) == 0.0 and f[1] == np.float32(2.5)  # f64 value, u64 index
    assert _add(f, np.int8(2), 3) == 0.0 and f[2] == 3.0  # int value into float32
    assert _add(f, np.uint8(3), True) == 0.0 and f[3] == 1.0  # bool value
    i = np.zeros(2, np.int32)
    assert _add(i, np.int16(0), 2.9) == 0 and i[0] == 2  # float -> int truncates like Numba
    assert _max(i, 1, np.int64(-3)) == 0 and i[1] == 0
    assert isinstance(_add(i, 0, 1), int) and isinstance(_add(f, 0, 1), float)


def test_flattened_2d_and_strided_views(rng: np.random.Generator) -> None:
    grid = np.zeros((8, 16), np.int32)
    keys = rng.integers(0, grid.size, 10_000)
    _flat_2d(keys, grid)
    np.testing.assert_array_equal(grid.ravel(), np.bincount(keys, minlength=grid.size))
    base = np.zeros(10, np.uint32)
    _add(base[1::3], 2, 7)  # a strided 1-D view: element 2 is base[7]
    assert base[7] == 7 and base.sum() == 7


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros(4, np.int64), "int32, uint32 or float32"),
        (np.zeros(4, np.float64), "int32, uint32 or float32"),
        (np.zeros((2, 2), np.int32), "1-D"),
        (_read_only(np.zeros(4, np.int32)), "writable"),
    ],
    ids=["int64", "float64", "2-D", "read-only"],
)
def test_bad_array_types_fail_at_compile_time(arr: np.ndarray, match: str) -> None:
    with pytest.raises(TypingError, match=match):
        _add(arr, 0, 1)


def test_bad_index_and_value_types() -> None:
    a = np.zeros(4, np.int32)
    with pytest.raises(TypingError, match="index must be an integer"):
        _min(a, 1.0, 1)
    with pytest.raises(TypingError, match="value must be"):
        _max(a, 0, 1j)


def test_pure_python_call_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="not usable in pure-python"):
        atomic_add(np.zeros(1, np.int32), 0, 1)


_CACHED_MODULE = """
import numba
import numpy as np
from numba import njit, prange

from vgpu_nb.kernel.numba_atomics import atomic_add, atomic_max, atomic_min


@njit(parallel=True, cache=True)
def kernel(keys, vals, hist, lo, hi, tids):
    for i in prange(keys.size):
        k = keys[i]
        atomic_add(hist, k, np.float32(1.0))
        atomic_min(lo, k, vals[i])
        atomic_max(hi, k, vals[i])
        tids[i] = numba.get_thread_id()


def run():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 64, 10**6)
    vals = rng.integers(-(2**31), 2**31, 10**6).astype(np.int32)
    hist = np.zeros(64, np.float32)
    lo = np.full(64, 2**31 - 1, np.int32)
    hi = np.full(64, -(2**31), np.int32)
    tids = np.full(keys.size, -1, np.int64)
    ref_lo, ref_hi = lo.copy(), hi.copy()
    kernel(keys, vals, hist, lo, hi, tids)
    np.minimum.at(ref_lo, keys, vals)
    np.maximum.at(ref_hi, keys, vals)
    stats = kernel.stats
    return {
        "ok": bool(
            (hist == np.bincount(keys, minlength=64)).all()
            and (lo == ref_lo).all()
            and (hi == ref_hi).all()
        ),
        "threads": len(np.unique(tids)),
        "hits": sum(stats.cache_hits.values()),
        "misses": sum(stats.cache_misses.values()),
    }
"""


def test_parallel_cached_function_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod_name = "vgpu_atomics_cached_user"
    (tmp_path / f"{mod_name}.py").write_text(textwrap.dedent(_CACHED_MODULE))

    spec = importlib.util.spec_from_file_location(mod_name, tmp_path / f"{mod_name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    # Registered before running, as `import` does: outside sys.modules Numba names the module
    # "<dynamic>" and writes cache entries that a fresh process then fails to load.
    monkeypatch.setitem(sys.modules, mod_name, mod)
    spec.loader.exec_module(mod)
    first = mod.run()
    assert first["ok"] and first["hits"] == 0 and first["misses"] == 1
    assert list((tmp_path / "__pycache__").glob(f"{mod_name}.kernel-*.nbi")), "no cache index"

    # a fresh process, forced to 4 threads so it is concurrent even on a 1-core machine
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    code = f"import json, {mod_name} as m; print(json.dumps(m.run()))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert second == {"ok": True, "threads": second["threads"], "hits": 1, "misses": 0}
    assert second["threads"] >= 2
