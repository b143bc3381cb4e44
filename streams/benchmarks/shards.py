"""``coordwatch bench shards``: what splitting a detector buys, in-process.

For each keyed detector (burst) on the generator mix (24 h, 0.69 M events; 6 h with
``--quick``), parsed once, in batches of 10 k events as a worker frames them: the CPU time
of the whole detector in a :class:`~detectors.pipeline.Detection`, beside the CPU time of
its busiest shard of ``n`` (fed only the events ``route`` gives it, with the times of all:
what a work partition of a worker runs), the shards' sum, and the routing, which ingest
pays. For each split detector (co_action by object, near_duplicate by LSH band:
``detectors.parts``): the whole beside the busiest of its ``n`` parts (each reads every
event) and their merge. Every split must find the whole's alerts, or the benchmark fails.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import Alert, Detector, KeyedDetector
from detectors.events import Event, parse_messages
from detectors.params import LinkingParams
from detectors.parts import PartDetector
from detectors.pipeline import Detection, detector_classes, detector_parts, part_merges, tune_gc
from streams.benchmarks.common import Row
from streams.benchmarks.replay import generate
from streams.config import SECTIONS

BATCH = 10_000
SHARDS = (2, 4)
REPEAT = 2


def _run(det: Detector, batches: Sequence[tuple[list[Event], np.ndarray]],
         routes: Sequence[np.ndarray] | None) -> tuple[float, list[bytes]]:  # fmt: skip
    """CPU seconds of one detector (or shard) over the batches, and its alerts (sorted)."""
    d = Detection([det], LinkingParams().tick_s, det.params.allowed_lateness_s)
    found: list[Alert] = []
    t0 = time.process_time()
    for k, (part, times) in enumerate(batches):
        idx = None if routes is None else routes[k]
        mine = part if idx is None else [part[i] for i in idx.tolist()]
        d.add(mine, "s", times, idx)
        found += d.advance(d.newest)
    found += d.advance(math.inf)
    return time.process_time() - t0, sorted(a.to_json() for a in found)


def run(quick: bool = False) -> list[Row]:
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        mix = generate(Path(tmp), hours=6 if quick else 24, rate=8)
        events, _ = parse_messages(mix.read_bytes().splitlines())
    batches = [(events[i : i + BATCH], np.array([e.ts for e in events[i : i + BATCH]]))
               for i in range(0, len(events), BATCH)]  # fmt: skip
    rows = []
    for name, cls in detector_classes().items():
        if not issubclass(cls, KeyedDetector):
            continue
        params = SECTIONS[name]()
        whole_s, want = min(_run(cls(params), batches, None) for _ in range(REPEAT))
        rows.append(Row(f"{name} whole, {len(events)} events (CPU)", whole_s, "s (lower is better)"))
        for n in SHARDS:
            router = cls.router(params)
            t0 = time.process_time()
            routes = [router.route(part, n) for part, _ in batches]
            route_s = time.process_time() - t0
            shard_s, found = [], []
            for s in range(n):
                best, got = min(_run(cls(params, (s, n)), batches, [r[s] for r in routes]) for _ in range(REPEAT))
                shard_s.append(best)
                found += got
            if sorted(found) != want:
                raise AssertionError(f"{name} in {n} shards found {len(found)} alerts, whole {len(want)}")
            rows += [
                Row(f"  busiest of {n} shards (a work partition's CPU)", max(shard_s), "s (lower is better)",
                    f"{name} whole (same run)", whole_s, key=f"{name}_shard_of_{n}_vs_whole", figure="ratio"),
                Row(f"  all {n} shards together", sum(shard_s), "s (lower is better)", f"{name} whole (same run)",
                    whole_s, key=f"{name}_{n}_shards_sum_vs_whole", figure="ratio"),
                Row(f"  routing into {n} shards (ingest's CPU)", route_s, "s (lower is better)",
                    f"{name} whole (same run)", whole_s, key=f"{name}_route_{n}_vs_whole", figure="ratio"),
            ]
    rows += _split_parts(batches, len(events))
    return rows


def _parts_run(name: str, params: Any, n: int, batches: Sequence[tuple[list[Event], np.ndarray]]
               ) -> tuple[list[float], float, list[bytes]]:  # fmt: skip
    """Split detector ``name`` in ``n`` parts, each in a Detection of its own (a work
    partition), and their merge fed the parts' segments batch by batch, through bytes as a
    worker sends them: each part's CPU seconds, the merge's, and the alerts (sorted)."""
    tick = LinkingParams().tick_s
    cls = detector_parts()[name]
    parts = [Detection([cls(params, (s, n))], tick, params.allowed_lateness_s) for s in range(n)]
    merge = part_merges()[name](params, n)
    part_s, merge_s, found, sent = [0.0] * n, 0.0, [], [[] for _ in range(n)]
    for k in [*range(len(batches)), None]:
        for s, d in enumerate(parts):
            t0 = time.process_time()
            if k is None:
                d.advance(math.inf)
            else:
                d.add(batches[k][0], "s", batches[k][1])
                d.advance(d.newest)
            part = d.detectors[0]
            assert isinstance(part, PartDetector)
            sent[s] = [seg.to_bytes() for seg in part.outbox]
            part.outbox.clear()
            part_s[s] += time.process_time() - t0
        t0 = time.process_time()
        for s, segs in enumerate(sent):
            for seg in segs:
                found += merge.offer(s, merge.segment(seg))
        merge_s += time.process_time() - t0
    return part_s, merge_s, sorted(a.to_json() for a in found)


def _split_parts(batches: Sequence[tuple[list[Event], np.ndarray]], n_events: int) -> list[Row]:
    """Each split detector whole beside its parts and their merge (each part reads every event)."""
    rows = []
    for name, part in detector_parts().items():
        params = SECTIONS[name]()
        whole_s, want = min(_run(detector_classes()[name](params), batches, None) for _ in range(REPEAT))
        rows.append(Row(f"{name} whole, {n_events} events (CPU)", whole_s, "s (lower is better)"))
        for n in SHARDS:
            part_s, merge_s, found = min(_parts_run(name, params, n, batches) for _ in range(REPEAT))
            if found != want:
                raise AssertionError(f"{name} in {n} {part.LABEL} parts found {len(found)} alerts, whole {len(want)}")
            rows += [
                Row(f"  busiest of {n} {part.LABEL} parts (a work partition's CPU)", max(part_s), "s (lower is better)",
                    f"{name} whole (same run)", whole_s, key=f"{name}_part_of_{n}_vs_whole", figure="ratio"),
                Row("  their merge (a work partition's CPU)", merge_s, "s (lower is better)",
                    f"{name} whole (same run)", whole_s, key=f"{name}_merge_of_{n}_vs_whole", figure="ratio"),
            ]
    return rows
