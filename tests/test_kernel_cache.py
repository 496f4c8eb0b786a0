"""The compiled-kernel cache: in memory, on disk, across processes, and never trusting a
damaged entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vgpu_nb as vg
from vgpu_nb.kernel.cache import KernelCache, make_key


@vg.kernel
def scale(a: vg.f32, x: vg.f32[:]):
    i = vg.tid()
    x[i] = a * x[i]


def test_cache_roundtrip(tmp_path):
    c = KernelCache(tmp_path)
    key = make_key("source", "numba")
    assert c.get("numba", key) is None
    c.put("numba", key, b"payload")
    c.clear_memory()
    assert c.get("numba", key) == b"payload"
    p = c.path("numba", key)
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert oct(p.parent.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "garbage"])
def test_damaged_entry_is_ignored_and_removed(tmp_path, damage):
    c = KernelCache(tmp_path)
    key, other = make_key("a"), make_key("b")
    c.put("cuda", key, b"x" * 100)
    c.put("cuda", other, b"y" * 100)
    c.clear_memory()
    p = c.path("cuda", key)
    data = p.read_bytes()
    if damage == "flip":
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif damage == "truncate":
        data = data[:20]
    elif damage == "foreign":  # another key's entry copied under this name
        data = c.path("cuda", other).read_bytes()
    else:
        data = b"not a cache entry at all"
    p.write_bytes(data)
    assert c.get("cuda", key) is None
    assert not p.exists()
    assert c.rejected == 1


def test_second_launch_compiles_nothing(device):
    x = vg.ones(16, device=device)
    first = scale.launch(16, 2.0, x)
    second = scale.launch(16, 2.0, x)
    assert second.compile_s == 0.0 and second.cache_hit
    assert first.compile_s >= 0.0
    assert x.numpy().tolist() == [4.0] * 16


def test_redefined_kernel_hits_the_cache(device):
    """Re-running a notebook cell makes a new Kernel object with the same code: nothing
    is generated or compiled again (the in-process cache serves it)."""
    ns = {}
    src = textwrap.dedent(
        """
        import vgpu_nb as vg
        def twice(x: vg.f32[:]):
            i = vg.tid()
            x[i] = x[i] * 2.0
        """
    )
    path = Path(__file__).with_name("_tmp_twice.py")
    try:
        path.write_text(src)
        code = compile(src, str(path), "exec")
        exec(code, ns)  # noqa: S102
        k1 = vg.kernel(ns["twice"])
        x = vg.ones(4, device=device)
        k1.launch(4, x)
        exec(code, ns)  # noqa: S102
        k2 = vg.kernel(ns["twice"])
        rec = k2.launch(4, x)
    finally:
        path.unlink()
    assert rec.cache_hit
    assert x.numpy().tolist() == [4.0] * 4


_CHILD = """
import json, sys, numpy as np
sys.path.insert(0, {root!r})
import vgpu_nb as vg

@vg.kernel
def saxpy_cache_probe(a: vg.f32, x: vg.f32[:], y: vg.f32[:]):
    i = vg.tid()
    y[i] = a * x[i] + y[i]

x = vg.ones(1000, device={dev!r}); y = vg.ones(1000, device={dev!r})
rec = saxpy_cache_probe.launch(1000, 3.0, x, y)
print(json.dumps({{"hit": rec.cache_hit, "compile_s": rec.compile_s,
                   "ok": bool((y.numpy() == 4).all())}}))
"""


def _child(tmp: Path, dev: str) -> dict:
    env = dict(os.environ, VGPU_NB_CACHE_DIR=str(tmp))
    code = _CHILD.format(root=str(Path(__file__).parents[1]), dev=dev)
    script = tmp / "child.py"  # a real file: kernels need their source
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_reuses_the_disk_cache(tmp_path, device):
    if device.backend == "numpy":
        pytest.skip("the numpy backend compiles nothing (it runs Python)")
    first = _child(tmp_path, device.name)
    second = _child(tmp_path, device.name)
    assert first["ok"] and second["ok"]
    assert not first["hit"]
    assert second["hit"], second  # (times: too small and noisy on wgpu to compare)


def test_corrupted_numba_program_is_rebuilt(tmp_path):
    first = _child(tmp_path, "numba")
    progs = list((tmp_path / "numba").glob("*.py"))
    assert progs
    for p in progs:
        p.write_text(p.read_text() + "\nraise RuntimeError('tampered')\n")
    second = _child(tmp_path, "numba")
    assert first["ok"] and second["ok"] and not second["hit"]
    assert "tampered" not in progs[0].read_text()


def test_cache_dir_env(tmp_path, monkeypatch):
    from vgpu_nb.kernel.cache import cache_dir

    monkeypatch.setenv("VGPU_NB_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VGPU_NB_CACHE_DIR")
    assert cache_dir().name == "vgpu_nb"
