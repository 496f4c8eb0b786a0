"""The disk tier: a private spill directory of ``.npy`` files.

The directory is made with :func:`tempfile.mkdtemp` (mode 0700) inside the configured
parent (``vg.memory.configure(spill_dir=...)``, ``VGPU_NB_SPILL_DIR``, else the system
temp dir); files are created 0600 with ``O_EXCL``. Everything is removed when its array
dies, on ``vg.memory.clear()`` (when no array needs it) and at interpreter exit.

``.npy`` was chosen over raw files so a spilled array can be inspected (``np.load``) and
so chunks can be read with one ``readinto`` at ``header + offset`` (no parsing per chunk).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading

import numpy as np

from ..errors import SpillFailed

_CHUNK = 64 << 20  # bytes per write() call


class SpillDir:
    """One process-private directory; thread-safe."""

    def __init__(self) -> None:
        self.parent: str | None = None
        self.path: str | None = None
        self.made: list[str] = []  # every directory made (a re-configured parent leaves one)
        self._n = itertools.count()
        self._lock = threading.Lock()
        atexit.register(self.remove)

    def set_parent(self, parent: str | None) -> None:
        """Use ``parent`` for later spills (existing files stay where they are; the old
        directory goes as soon as it is empty, at the latest at exit)."""
        with self._lock:
            if self.path is not None and os.path.isdir(self.path) and not os.listdir(self.path):
                os.rmdir(self.path)
            self.parent = parent
            self.path = None

    def _dir(self) -> str:
        with self._lock:
            if self.path is None or not os.path.isdir(self.path):
                parent = self.parent
                try:
                    if parent is not None:
                        os.makedirs(parent, exist_ok=True)
                    self.path = tempfile.mkdtemp(prefix="vgpu_nb-spill-", dir=parent)
                    self.made.append(self.path)
                except OSError as exc:
                    where = parent or tempfile.gettempdir()
                    raise SpillFailed(
                        f"cannot create the spill directory in {where!r}: {exc.strerror or exc}",
                        fix="vg.memory.configure(spill_dir=...) with a writable directory "
                        "that has free space",
                    ) from exc
            return self.path

    def new_path(self, tag: str) -> str:
        return os.path.join(self._dir(), f"{tag}-{next(self._n)}.npy")

    def create(self, shape: tuple[int, ...], dtype: np.dtype, tag: str) -> tuple[str, int]:
        """An empty ``.npy`` file of ``shape`` (sparse: no bytes written); returns the path
        and the byte offset of the data."""
        path = self.new_path(tag)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f,
                    {
                        "descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False,
                        "shape": shape,
                    },  # fmt: skip
                )
                offset = f.tell()
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                f.truncate(offset + nbytes)
        except OSError as exc:
            _unlink(path)
            raise _failed(exc, path) from exc
        return path, offset

    def write(self, a: np.ndarray, tag: str) -> tuple[str, int]:
        """Write ``a`` (C-contiguous) to a new file; on any error the partial file is
        removed and :class:`SpillFailed` raised (the caller still holds ``a``)."""
        path, offset = self.create(a.shape, a.dtype, tag)
        try:
            write_at(path, offset, a)
        except OSError as exc:
            _unlink(path)
            raise _failed(exc, path) from exc
        except BaseException:  # KeyboardInterrupt mid-write: no partial file left behind
            _unlink(path)
            raise
        return path, offset

    def remove(self) -> None:
        """Delete every directory we made (exit, or ``clear()`` with no spilled array)."""
        with self._lock:
            for path in self.made:
                shutil.rmtree(path, ignore_errors=True)
            self.made.clear()
            self.path = None

    def is_empty(self) -> bool:
        with self._lock:
            return self.path is None or not os.path.isdir(self.path) or not os.listdir(self.path)


def write_at(path: str, offset: int, a: np.ndarray) -> None:
    """Write the bytes of ``a`` into ``path`` at ``offset`` (``OSError`` propagates)."""
    raw = memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    fd = os.open(path, os.O_WRONLY)
    try:
        for k in range(0, len(raw), _CHUNK):
            part = raw[k : k + _CHUNK]
            done = 0
            while done < len(part):
                done += os.pwrite(fd, part[done:], offset + k + done)
    finally:
        os.close(fd)


def read_into(path: str, offset: int, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous, any dtype) from ``path`` at ``offset``."""
    raw = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < len(raw):
            n = os.preadv(fd, [raw[done:]], offset + done)
            if n == 0:
                raise OSError(f"{path} is shorter than expected (truncated spill file)")
            done += n
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def unlink(path: str | None) -> None:
    if path is not None:
        _unlink(path)


def _failed(exc: OSError, path: str) -> SpillFailed:
    import errno

    why = exc.strerror or str(exc)
    fix = "vg.memory.configure(spill_dir=...) with a writable directory that has free space"
    if exc.errno == errno.ENOSPC:
        why = f"the disk is full ({why})"
        fix = "free disk space, or point spill_dir at a larger disk; or raise the host budget"
    return SpillFailed(f"writing spill file {path!r} failed: {why}", fix=fix)


#: the process's spill directory
SPILL = SpillDir()
