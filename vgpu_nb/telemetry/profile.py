"""``vg.profile()``: collect the records of a block of code into a table."""

from __future__ import annotations

from typing import Any

from .bus import BUS, Subscription
from .records import OpRecord


class Profile:
    """Context manager that subscribes to the bus while open.

    >>> with vg.profile() as p:
    ...     vg.sum(x)
    >>> p.table()          # one row per op: device, bytes, flops, ms, GB/s, GFLOPS
    """

    def __init__(self) -> None:
        self.records: list[OpRecord] = []
        self._sub: Subscription | None = None

    def __enter__(self) -> Profile:
        self._sub = BUS.subscribe(self.records.append, kinds=("op",))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def table(self) -> Any:
        """A pandas DataFrame, one row per record (device times resolved now)."""
        import pandas as pd

        cols = ["op", "device", "shape", "dtype", "bytes", "flops", "host_ms", "device_ms"]
        cols += ["GB/s", "GFLOPS"]
        return pd.DataFrame([r.as_dict() for r in self.records], columns=cols + ["t_start"])[
            cols
        ]

    def to_pandas(self) -> Any:
        return self.table()

    def __len__(self) -> int:
        return len(self.records)

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __repr__(self) -> str:
        return f"<vg.Profile: {len(self.records)} records>"


def profile() -> Profile:
    return Profile()
