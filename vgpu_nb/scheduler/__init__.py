"""The scheduler: calibration of every device (:mod:`.calibration`), the cost model
(roofline + robust history, :mod:`.cost`), the policies that turn predictions into a
decision with its reason (:mod:`.policy`), ``device="auto"`` in every launch path
(:mod:`.auto`), splitting one op over several devices (:mod:`.partition`) and the
decision log (:mod:`.log`).

``vg.scheduler.policy`` is the default policy: assign a name
(``vg.scheduler.policy = "locality"``) or use it for a block
(``with vg.scheduler.policy("cpu_only"): ...``).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import types
from collections.abc import Iterator

from .calibration import Calibration, cached, calibrate, fingerprint
from .cost import History, Prediction, roofline
from .log import clear, decisions, explain, log, record
from .policy import POLICIES, Decision, choose

__all__ = [
    "POLICIES", "Calibration", "Decision", "History", "Prediction", "cached", "calibrate",
    "choose", "clear", "current_policy", "decisions", "explain", "fingerprint", "log", "policy",
    "record", "roofline", "split",
]  # fmt: skip

_default = "performance"
_split = [False]
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("vg_policy", default=None)


def _check(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: use one of {', '.join(POLICIES)}")
    return name


def current_policy() -> str:
    """The policy in force here (a ``with`` block's, else the default)."""
    return _scoped.get() or _default


class _Policy(str):
    """The value of ``vg.scheduler.policy``: the current policy's name, and callable as a
    context manager for a block (``with vg.scheduler.policy("locality"):``)."""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[str]:
        token = _scoped.set(_check(name))
        try:
            yield name
        finally:
            _scoped.reset(token)


class _Module(types.ModuleType):
    @property
    def policy(self) -> _Policy:
        return _Policy(current_policy())

    @policy.setter
    def policy(self, name: str) -> None:
        global _default
        _default = _check(str(name))

    @property
    def split(self) -> bool:
        """``auto`` may split large elementwise kernels and reductions over several
        devices when the prediction says it pays (default False). ``split=True`` on one
        op asks for it there, whatever this says."""
        return _split[0]

    @split.setter
    def split(self, value: bool) -> None:
        _split[0] = bool(value)


sys.modules[__name__].__class__ = _Module
