"""Compiled-kernel cache: in memory (per process) and on disk.

Disk entries live in ``$VGPU_NB_CACHE_DIR`` (default ``~/.cache/vgpu_nb``), one file per
(backend, key) where the key hashes everything that determines the compiled artifact:
the generated source (which embeds the argument types), the backend, the target (GPU
architecture, adapter) and :data:`FORMAT` / the vgpu_nb version. Each file carries a magic
header, its own key and a SHA-256 of the payload; an entry that is truncated, corrupted
or written for another key is ignored, deleted and rebuilt — never executed blindly.
Writes go to a temporary file renamed into place (atomic), mode 0600 in 0700 directories.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

FORMAT = "vgpu_nb-kernel-cache-1"
_MAGIC = b"VGNBKC1\n"


def cache_dir() -> Path:
    env = os.environ.get("VGPU_NB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vgpu_nb"


def make_key(*parts: str | bytes) -> str:
    """A hex SHA-256 over ``parts`` (and the cache format and vgpu_nb version)."""
    from .. import __version__

    h = hashlib.sha256()
    for p in (FORMAT, __version__, *parts):
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class KernelCache:
    """``get``/``put`` of opaque payloads per (backend, key); ``stats`` counts hits."""

    def __init__(self, root: Path | None = None):
        self._root = root
        self._mem: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # corrupt or foreign entries thrown away

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else cache_dir()

    def path(self, backend: str, key: str, suffix: str = ".bin") -> Path:
        return self.root / backend / f"{key}{suffix}"

    def _dir(self, backend: str) -> Path:
        d = self.root / backend
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def get(self, backend: str, key: str) -> bytes | None:
        """The payload stored for (backend, key), validated; None if absent or bad."""
        with self._lock:
            hit = self._mem.get((backend, key))
        if hit is not None:
            self.hits += 1
            return hit
        p = self.path(backend, key)
        try:
            data = p.read_bytes()
        except OSError:
            self.misses += 1
            return None
        payload = self._validate(data, key)
        if payload is None:
            self.rejected += 1
            self.misses += 1
            try:
                p.unlink()
            except OSError:
                pass
            return None
        with self._lock:
            self._mem[(backend, key)] = payload
        self.hits += 1
        return payload

    @staticmethod
    def _validate(data: bytes, key: str) -> bytes | None:
        kb = key.encode()
        head = len(_MAGIC) + 32 + 2 + len(kb)
        if len(data) < head or not data.startswith(_MAGIC):
            return None
        digest = data[len(_MAGIC) : len(_MAGIC) + 32]
        klen = int.from_bytes(data[len(_MAGIC) + 32 : len(_MAGIC) + 34], "little")
        if klen != len(kb) or data[len(_MAGIC) + 34 : head] != kb:
            return None
        payload = data[head:]
        if hashlib.sha256(payload).digest() != digest:
            return None
        return payload

    def put(self, backend: str, key: str, payload: bytes) -> None:
        """Store (memory always; disk best-effort: a read-only cache dir is not an error)."""
        with self._lock:
            self._mem[(backend, key)] = payload
        kb = key.encode()
        blob = _MAGIC + hashlib.sha256(payload).digest() + len(kb).to_bytes(2, "little") + kb
        blob += payload
        try:
            d = self._dir(backend)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path(backend, key))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass

    def clear_memory(self) -> None:
        """Forget the in-memory copies (tests use it to exercise the disk path)."""
        with self._lock:
            self._mem.clear()


CACHE = KernelCache()
