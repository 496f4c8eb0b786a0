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
        return pd.DataFrame([r.as_dict() for r in self.records], columns=cols + ["t_start"])[cols]

    def to_pandas(self) -> Any:
        return self.table()

    def report(self) -> Any:
        """The table with units, for reading (and for notebooks, whose timing columns a
        sanitizer can recognise by their units)."""
        t = self.table()
        fmt = {
            "host_ms": lambda v: f"{v:.3f} ms",
            "device_ms": lambda v: "-" if v != v else f"{v:.3f} ms",
            "GB/s": lambda v: f"{v:.2f} GB/s",
            "GFLOPS": lambda v: f"{v:.2f} GFLOPS",
        }
        for col, f in fmt.items():
            t[col] = t[col].map(f)
        return t.rename(columns={"host_ms": "host", "device_ms": "device time"})

    def __len__(self) -> int:
        return len(self.records)

    def _repr_html_(self) -> str:
        return self.report().to_html()

    def __repr__(self) -> str:
        # one unpadded line per op: measured values never shift the facts' columns
        lines = [f"vg.Profile: {len(self.records)} ops"]
        for r in self.report().itertuples(index=False):
            shape = "x".join(map(str, r.shape)) or "()"
            lines.append(
                f"  {r.op:8s} {r.device:8s} {shape:>14s} {r.dtype:4s} {r.bytes:>12d} B "
                f"{r.flops:>12d} flop  host {r.host}  device {r[7]}  {r[8]}  {r.GFLOPS}"
            )
        return "\n".join(lines)


def profile() -> Profile:
    return Profile()
