"""Timing helpers and the result row shared by every benchmark."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of a benchmark table: a measured rate beside its same-run baseline."""

    name: str  # what was measured, e.g. "count-min batch update"
    value: float  # the measured figure (higher is better unless unit says otherwise)
    unit: str  # e.g. "updates/s", "bytes/doc"
    baseline_name: str = ""  # what it was compared against in the same run
    baseline_value: float = 0.0
    key: str = ""  # name of the key=value figure printed on the last line ("" = none)
    figure: str = "value"  # "value": print the value (and its ratio); "ratio": print value/baseline

    def figures(self) -> dict[str, float]:
        """The ``key=value`` figures of this row for the benchmark's last line."""
        if not self.key:
            return {}
        if self.figure == "ratio":
            return {self.key: self.ratio}
        if not self.baseline_value:
            return {self.key: self.value}
        return {self.key: self.value, f"{self.key}_vs_baseline": self.ratio}

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


def best_time(fn: Callable[[], object], *, repeat: int = 5, min_total_s: float = 0.0) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs (and until ``min_total_s`` has passed).

    The best, not the mean: on a shared machine the minimum is the least disturbed run.
    The garbage collector is paused while timing, as the hot paths run with it frozen.
    """
    best = float("inf")
    spent = 0.0
    runs = 0
    gc.collect()
    gc.disable()
    try:
        while runs < repeat or spent < min_total_s:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best = min(best, dt)
            spent += dt
            runs += 1
    finally:
        gc.enable()
    return best
