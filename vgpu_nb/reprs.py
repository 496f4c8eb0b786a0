"""Compact HTML for notebooks (``_repr_html_`` of arrays, records and decisions): one small
table each, escaped, no styling beyond what JupyterLab, Notebook 7 and VS Code already give
tables. Plain ``__repr__`` stays the text form for consoles and logs."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def esc(v: Any) -> str:
    return html.escape(str(v))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], bold_row: int = -1) -> str:
    """``<table>`` with a header row; row ``bold_row`` (e.g. a decision's choice) in bold."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cells = "".join(
            f"<td><b>{esc(c)}</b></td>" if k == bold_row else f"<td>{esc(c)}</td>" for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def titled(title: str, body: str) -> str:
    return f"<div><b>{esc(title)}</b>{body}</div>"


def num(v: float, fmt: str = ".3g") -> str:
    """A measured value; "–" for NaN (not measured). Callers append the unit."""
    return "–" if v != v else format(v, fmt)
