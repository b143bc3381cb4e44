"""``coordwatch bench partitions``: the detection's tick buffer when its input partitions are
read apart, in-process.

A :class:`~detectors.pipeline.Detection` with no detector (only its buffering of open ticks
and their closing) is fed the generator mix split round robin over 12 input partitions,
frame by frame, and advanced after each frame as a detect stage does (to the newest event
time of the slowest partition). Partitions read in step are the baseline; the same stream
with one partition read 40 frames behind the others is the measured run. There, the
partitions ahead keep most events open through many advances.

The buffer holds the open events by tick, so an advance takes the ticks it closes and
touches nothing else. Before, it held them in one list, and every advance rebuilt that list
from the events still open. On the 0.69 M-event mix (two runs, alternating builds) that took
2.35 s with one partition behind against 0.11 s in step (21x). Now it takes 0.19 s against
0.16 s (1.2x). Sorting a frame's events into their ticks costs ~0.07 us an event in step.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from detectors.events import Event, parse_messages
from detectors.params import LinkingParams
from detectors.pipeline import Detection, tune_gc
from streams.benchmarks.common import Row
from streams.benchmarks.replay import generate

PARTITIONS = 12
FRAME_EVENTS = 500
BEHIND_FRAMES = 40
REPEAT = 3


def _feed(parts: Sequence[Sequence[Event]], behind: int) -> float:
    """CPU seconds of a Detection fed ``parts`` a frame each in turn, partition 0 starting
    ``behind`` rounds late (or once the others are done), advanced after every frame."""
    d = Detection([], LinkingParams().tick_s, 60.0)
    names = [str(p) for p in range(len(parts))]
    pos = [0] * len(parts)
    t0 = time.process_time()
    rounds = 0
    while any(pos[p] < len(parts[p]) for p in range(len(parts))):
        others_left = any(pos[q] < len(parts[q]) for q in range(1, len(parts)))
        for p, part in enumerate(parts):
            if p == 0 and rounds < behind and others_left or pos[p] >= len(part):
                continue
            d.add(part[pos[p] : pos[p] + FRAME_EVENTS], names[p])
            pos[p] += FRAME_EVENTS
            d.advance(min(map(d.newest_of, names)))
        rounds += 1
    d.advance(math.inf)
    return time.process_time() - t0


def run(quick: bool = False) -> list[Row]:
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        mix = generate(Path(tmp), hours=6 if quick else 24, rate=8)
        events, _ = parse_messages(mix.read_bytes().splitlines())
    parts = [events[p::PARTITIONS] for p in range(PARTITIONS)]
    in_step = min(_feed(parts, 0) for _ in range(REPEAT))
    apart = min(_feed(parts, BEHIND_FRAMES) for _ in range(REPEAT))
    return [
        Row(f"tick buffer, {len(events)} events on {PARTITIONS} partitions read in step (CPU)", in_step,
            "s (lower is better)"),  # fmt: skip
        Row(f"  the same, partition 0 read {BEHIND_FRAMES} frames of {FRAME_EVENTS} behind", apart,
            "s (lower is better)", "in step (same run)", in_step, key="behind_vs_in_step", figure="ratio"),  # fmt: skip
    ]
