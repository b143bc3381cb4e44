"""Count-min and HyperLogLog batch update rates, each beside a same-run Python baseline.

* ``cms_updates_per_s``: :class:`~sketches.countmin.SlidingCountMin` (epsilon=1e-4,
  delta=1e-3, 10 s panes, 60 s window) fed batches of 10k Zipf(1.1) keys whose event
  times advance across panes (so panes expire as it runs), vs a plain ``dict`` counter
  loop over the same keys (which neither windows nor bounds its memory: it is the floor a
  sketch must beat to be worth it in Python, not an equivalent). A second, unkeyed row
  gives the conservative-update variant.
* ``hll_updates_per_s``: :class:`~sketches.hll.HyperLogLog` (p=14) batch update vs
  ``datasketch.HyperLogLog.update`` called once per hash, producing the same registers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from datasketch import HyperLogLog as DatasketchHLL

from sketches.countmin import SlidingCountMin
from sketches.hashing import hash_u64
from sketches.hll import HyperLogLog
from streams.benchmarks.common import Row, best_time

BATCH = 10_000


def _stream(n_batches: int, seed: int = 7) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Zipf(1.1) keys hashed to uint64; event times ~1000 events/s with 2 s of jitter."""
    rng = np.random.default_rng(seed)
    n = n_batches * BATCH
    keys = hash_u64(rng.zipf(1.1, n).astype(np.uint64))
    ts = 1.7e9 + np.arange(n) / 1000.0 + rng.uniform(-2.0, 0.0, n)
    return np.split(keys, n_batches), np.split(ts, n_batches)


def _cms_rows(n_batches: int, repeat: int) -> list[Row]:
    keys, ts = _stream(n_batches)
    n = n_batches * BATCH
    span = float(ts[-1][-1] - ts[0][0]) + 120.0

    def feeder(conservative: bool) -> Callable[[], None]:
        sketch = SlidingCountMin(10.0, 60.0, 1e-4, 1e-3, conservative=conservative)
        runs = [0]

        def feed() -> None:  # steady state: one warm sketch, each run later in event time
            shift = span * runs[0]
            runs[0] += 1
            for k, t in zip(keys, ts, strict=True):
                sketch.update(k, t + shift)

        feed()  # warm-up: touch every pane's pages once
        return feed

    lists = [k.tolist() for k in keys]

    def dict_counter() -> None:
        counts: dict[int, int] = {}
        for batch in lists:
            for k in batch:
                counts[k] = counts.get(k, 0) + 1

    t_plain = best_time(feeder(False), repeat=repeat)
    t_cons = best_time(feeder(True), repeat=repeat)
    t_dict = best_time(dict_counter, repeat=repeat)
    what = "count-min update (eps 1e-4, delta 1e-3, 6x10s panes)"
    return [
        Row(f"sliding {what}", n / t_plain, "updates/s", "python dict +=1", n / t_dict,
            key="cms_updates_per_s"),
        Row(f"sliding conservative {what}", n / t_cons, "updates/s", "python dict +=1", n / t_dict),
    ]  # fmt: skip


def _hll_row(n_sketch: int, n_loop: int, repeat: int) -> Row:
    rng = np.random.default_rng(11)
    hashes = hash_u64(rng.integers(0, 1 << 62, n_sketch))
    low32 = (hashes[:n_loop] & np.uint64(0xFFFFFFFF)).tolist()

    def ours() -> None:
        h = HyperLogLog(14)
        for s in range(0, n_sketch, BATCH):
            h.update(hashes[s : s + BATCH])

    def datasketch_loop() -> None:
        h = DatasketchHLL(14, hashfunc=int)
        for v in low32:
            h.update(v)

    t_ours = best_time(ours, repeat=repeat)
    t_ds = best_time(datasketch_loop, repeat=max(1, repeat // 2))
    return Row(
        "HyperLogLog update (p=14)",
        n_sketch / t_ours,
        "updates/s",
        "datasketch.HyperLogLog.update loop",
        n_loop / t_ds,
        key="hll_updates_per_s",
    )


def run(quick: bool = False) -> list[Row]:
    """Measure the rates (about 1 s with ``quick``, 4 s without)."""
    if quick:
        return [*_cms_rows(20, 3), _hll_row(200_000, 20_000, 3)]
    return [*_cms_rows(100, 5), _hll_row(1_000_000, 100_000, 5)]


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(f"{row.name}: {row.value:,.0f} {row.unit}; {row.baseline_name}: "
              f"{row.baseline_value:,.0f} ({row.ratio:.1f}x) {row.figures()}")  # fmt: skip
