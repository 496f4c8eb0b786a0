"""The one event bus: everything observable (op records, later memory moves and scheduler
decisions) is an event emitted here; profiles and dashboards only subscribe.

Subscribers run synchronously on the emitting thread, so they must be cheap (append to a
list or queue; render elsewhere). A subscriber that raises is reported once as a warning
and never breaks the computation that emitted the event.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

Callback = Callable[[Any], None]


class Subscription:
    """Handle returned by :meth:`EventBus.subscribe`; ``close()`` (or leaving a ``with``
    block) unsubscribes."""

    def __init__(self, bus: EventBus, fn: Callback, kinds: frozenset[str] | None):
        self.bus, self.fn, self.kinds = bus, fn, kinds
        self._warned = False

    def close(self) -> None:
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()  # copy-on-write: emit never locks
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True when someone listens; emitters skip building records otherwise."""
        return bool(self._subs)

    def subscribe(self, fn: Callback, kinds: Iterable[str] | None = None) -> Subscription:
        sub = Subscription(self, fn, frozenset(kinds) if kinds is not None else None)
        with self._lock:
            self._subs = (*self._subs, sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def emit(self, event: Any) -> None:
        kind = getattr(event, "kind", None)
        for sub in self._subs:
            if sub.kinds is not None and kind not in sub.kinds:
                continue
            try:
                sub.fn(event)
            except Exception as exc:  # a broken dashboard must not break a launch
                if not sub._warned:
                    sub._warned = True
                    warnings.warn(
                        f"telemetry subscriber {sub.fn!r} raised {exc!r}; later errors "
                        "from it are ignored",
                        RuntimeWarning,
                        stacklevel=2,
                    )


BUS = EventBus()
