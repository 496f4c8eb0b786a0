"""The one event bus: everything observable (op records, later memory moves and scheduler
decisions) is an event emitted here; profiles and dashboards only subscribe.

Subscribers run synchronously on the emitting thread, so they must be cheap (append to a
list or queue; render elsewhere). A subscriber that raises is reported once as a warning
and never breaks the computation that emitted the event.

Emitting sits on every launch's path while anyone listens, so the bus does the routing
work at (un)subscribe time: per event kind it keeps a ready tuple of ``(subscription,
callback)`` pairs, and ``emit`` is one dict lookup and the calls. ``active`` and ``_subs``
are plain attributes (hot paths test them with nobody subscribed).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

Callback = Callable[[Any], None]
_Route = tuple[tuple["Subscription", Callback], ...]


class Subscription:
    """Handle returned by :meth:`EventBus.subscribe`; ``close()`` (or leaving a ``with``
    block) unsubscribes."""

    def __init__(self, bus: EventBus, fn: Callback, kinds: frozenset[str] | None):
        self.bus, self.fn, self.kinds = bus, fn, kinds
        self._warned = False

    def close(self) -> None:
        self.bus.flush()  # (runs of launches in progress reach this subscriber first)
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()  # copy-on-write: emit never locks
        self._routes: dict[Any, _Route] = {}  # event kind → its subscribers, built lazily
        self._lock = threading.Lock()
        #: True when someone listens; emitters skip building records otherwise.
        self.active = False
        #: objects holding events not emitted yet (runs of launches, :mod:`.runs`): their
        #: ``flush()`` emits them; ``count`` says whether they hold anything
        self._flushers: list[Any] = []

    def flush(self) -> None:
        """Emit whatever is held back (a run of identical launches in progress)."""
        for f in self._flushers:
            if f.count:
                f.flush()

    def subscribe(self, fn: Callback, kinds: Iterable[str] | None = None) -> Subscription:
        self.flush()  # (a run of launches from before belongs to the earlier listeners)
        sub = Subscription(self, fn, frozenset(kinds) if kinds is not None else None)
        with self._lock:
            self._set((*self._subs, sub))
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._set(tuple(s for s in self._subs if s is not sub))

    def _set(self, subs: tuple[Subscription, ...]) -> None:
        """(Lock held.) A fresh routes dict, not a cleared one: an emit racing with this
        keeps iterating the old, consistent routes."""
        self._subs = subs
        self._routes = {}
        self.active = bool(subs)

    def _route(self, kind: Any) -> _Route:
        """The subscribers of ``kind``, computed once per kind and subscription change."""
        with self._lock:
            route = tuple((s, s.fn) for s in self._subs if s.kinds is None or kind in s.kinds)
            self._routes[kind] = route
        return route

    def emit(self, event: Any) -> None:
        for f in self._flushers:  # (events stay in order: a run in progress goes first)
            if f.count:
                f.flush()
        kind = getattr(event, "kind", None)
        route = self._routes.get(kind)
        if route is None:
            route = self._route(kind)
        for sub, fn in route:
            try:
                fn(event)
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
