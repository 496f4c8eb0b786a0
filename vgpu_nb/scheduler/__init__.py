"""The scheduler (issue 5, in progress): calibration of every device, the cost model
(roofline + robust history), the policies that turn predictions into a decision with its
reason, and the decision log. Wiring ``device="auto"`` into the launch paths and
splitting come next.

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
from .log import clear, explain, log, record
from .policy import POLICIES, Decision, choose

__all__ = [
    "POLICIES", "Calibration", "Decision", "History", "Prediction", "cached", "calibrate",
    "choose", "clear", "current_policy", "explain", "fingerprint", "log", "policy", "record",
    "roofline",
]  # fmt: skip

_default = "performance"
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


sys.modules[__name__].__class__ = _Module
