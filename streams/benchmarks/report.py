"""Runs a set of benchmark modules and prints their table and ``key=value`` last line."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from streams.benchmarks.common import Row

#: ``coordwatch bench NAME`` → the modules (each with ``run(quick) -> list[Row]``) it runs.
SUITES: dict[str, tuple[str, ...]] = {
    "sketches": (
        "streams.benchmarks.minhash",
        "streams.benchmarks.cms",
        "streams.benchmarks.lsh",
        "streams.benchmarks.parse",
    ),
    "replay": ("streams.benchmarks.replay",),
    "stream": ("streams.benchmarks.stream",),
    "shards": ("streams.benchmarks.shards",),
    "partitions": ("streams.benchmarks.partitions",),
    "levers": ("streams.benchmarks.levers",),
}


def run_suite(name: str, *, quick: bool = False, out: TextIO = sys.stdout, **options: Any) -> dict[str, float]:
    """Run every module of suite ``name`` (``options`` go to each ``run``); print a table,
    then the figures on one line."""
    rows: list[Row] = []
    for module in SUITES[name]:
        rows.extend(importlib.import_module(module).run(quick=quick, **options))
    out.write(format_table(rows) + "\n")
    figures: dict[str, float] = {}
    for row in rows:
        figures.update(row.figures())
    out.write(" ".join(f"{k}={_num(v)}" for k, v in figures.items()) + "\n")
    return figures


def format_table(rows: Sequence[Row]) -> str:
    head = ("measured", "value", "unit", "baseline (same run)", "baseline", "ratio")
    body = [
        (
            r.name,
            _num(r.value),
            r.unit,
            r.baseline_name,
            _num(r.baseline_value) if r.baseline_name else "",
            f"{r.ratio:.2f}x" if r.baseline_name else "",
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def _num(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"
