"""Loading the Python programs of :mod:`.codegen_numba` for the numpy and numba backends.

* ``python`` programs are executed into a fresh module (source registered in
  :mod:`linecache`, so tracebacks through generated code show it).
* ``numba`` programs are written to ``<cache dir>/numba/<key>.py`` and imported from
  there, so Numba's own ``cache=True`` keeps the machine code beside them: a fresh process
  imports the file and loads compiled code instead of compiling. A file whose content does
  not match the source (corrupted, or written by someone else) is rewritten first.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import sys
import tempfile
import time
import types
from typing import Any

from ..dtypes import DType
from .cache import CACHE, make_key

_loaded: dict[str, types.ModuleType] = {}


def _runtime_version() -> str:
    """Numba caches machine code per generated file and does not see changes to the
    helpers it inlines (:mod:`.numba_atomics`): their source is part of the key."""
    global _RUNTIME
    if _RUNTIME is None:
        from pathlib import Path

        _RUNTIME = (Path(__file__).with_name("numba_atomics.py")).read_text(encoding="utf-8")
    return _RUNTIME


_RUNTIME: str | None = None


def load(source: str, target: str) -> tuple[types.ModuleType, bool]:
    """(module, cache_hit) for a generated program."""
    key = make_key(source, target, _runtime_version() if target == "numba" else "")
    mod = _loaded.get(key)
    if mod is not None:
        return mod, True
    name = f"vgpu_nb_jit_{target}_{key[:24]}"
    if target == "python":
        filename = f"<vgpu_nb {name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        mod = types.ModuleType(name)
        mod.__file__ = filename
        exec(compile(source, filename, "exec"), mod.__dict__)  # noqa: S102
        _loaded[key] = mod
        return mod, False
    path = CACHE.path("numba", key, ".py")
    hit = False
    try:
        hit = path.read_text(encoding="utf-8") == source
    except OSError:
        pass
    if not hit:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _loaded[key] = mod
    return mod, hit


def numba_type(t: Any) -> Any:
    """Numba type of a scalar DType or of ``(DType, ndim)`` (a C-contiguous array)."""
    from numba import types as nt

    scalar = {
        "f32": nt.float32, "f64": nt.float64, "i32": nt.int32, "u32": nt.uint32,
        "i64": nt.int64, "u64": nt.uint64, "bool": nt.boolean,
    }  # fmt: skip
    if isinstance(t, tuple):
        dt, nd = t
        return nt.Array(scalar[dt.name], nd, "C")
    assert isinstance(t, DType)
    return scalar[t.name]


def compile_numba(dispatcher: Any, sig: tuple[Any, ...]) -> tuple[float, bool]:
    """Compile (or load from Numba's disk cache) one signature now: (seconds, cache hit)."""
    t0 = time.perf_counter()
    if any(tuple(k) == tuple(sig) for k in dispatcher.overloads):
        return 0.0, True  # compiled earlier in this process
    before = sum(dispatcher.stats.cache_hits.values())
    dispatcher.compile(sig)
    hit = sum(dispatcher.stats.cache_hits.values()) > before
    return time.perf_counter() - t0, hit
