"""The detection pipeline: every enabled detector plus the linker, cut at event-time ticks.

Replay and the stream workers both drive a :class:`Pipeline`. The watermark (the newest
event time so far, in sequence order) is cut at a fixed grid, ``linking.tick_s``. A tick
is complete once an event of a later tick arrives; the events of all complete ticks in a
batch go to every detector in ONE call (detectors vectorise over a batch, so big calls
are cheap and tiny ones dear), the events of the open tick wait for the next batch. The
alerts are then put in one order, (tick of the watermark they were decided at, detector,
group id, revision), and linked in it; before a tick's alerts are linked the linker forgets
alerts that ended ``linking.memory_s`` before the tick began. Detectors are batch-
independent (their conformance test) and every key of that order is a function of the
event sequence, so the output is byte-identical however the input was batched (file
chunks, Kafka fetches, a restart in between). The cost is up to one tick of latency.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from detectors.base import Alert, Detector
from detectors.events import Event, event_to_json, parse_event
from detectors.linker import Linker
from detectors.params import LinkingParams
from sketches.errors import IncompatibleSketchError
from sketches.protocol import pack, unpack

STATE_VERSION = 1

#: Generation-0 threshold while a pipeline runs (CPython's default is 700).
GC_GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """Collect garbage rarely: detector state is millions of long-lived small objects.

    With the default thresholds the cyclic collector rescans that state over and over:
    measured here it took ~70 % of a replay's time (co_action on the synthetic stream:
    18k events/s before, 56k after). Objects alive now are frozen out of collection too.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)


class DetectorConfig(Protocol):
    """What the pipeline needs of the root config (``streams.config.Config`` fits)."""

    linking: LinkingParams


def detector_classes() -> dict[str, type[Detector[Any]]]:
    """Config section name → detector class, in the order their alerts are emitted."""
    from detectors.burst import BurstDetector
    from detectors.co_action import CoActionDetector
    from detectors.near_duplicate import NearDuplicateDetector

    return {"co_action": CoActionDetector, "near_duplicate": NearDuplicateDetector, "burst": BurstDetector}


class Pipeline:
    def __init__(self, detectors: Sequence[Detector[Any]], linking: LinkingParams) -> None:
        self.detectors = list(detectors)
        self.linking = linking
        self.linker = Linker(linking.memory_s, linking.min_shared_accounts)
        self._buffer: list[Event] = []
        self._tick = -math.inf  # index of the tick the buffer belongs to

    @classmethod
    def from_config(cls, config: DetectorConfig) -> Pipeline:
        """One detector per enabled config section."""
        dets = [
            klass(getattr(config, name))
            for name, klass in detector_classes().items()
            if getattr(config, name).enabled
        ]
        return cls(dets, config.linking)

    # -- driving ---------------------------------------------------------------------
    def process(self, events: Sequence[Event]) -> list[Alert]:
        if not events:
            return []
        ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
        ticks = np.maximum(np.floor(np.maximum.accumulate(ts) / self.linking.tick_s), self._tick)
        last = float(ticks[-1])
        if last == self._tick:  # the open tick goes on
            self._buffer.extend(events)
            return []
        cut = int(np.searchsorted(ticks, last))  # the first event of the new open tick
        ready, self._buffer = [*self._buffer, *events[:cut]], list(events[cut:])
        self._tick = last
        return self._link(self._detect(ready))

    def advance(self, watermark: float) -> list[Alert]:
        """Event time reached ``watermark``: close the open tick if it is over, close windows.

        ``advance(math.inf)`` flushes everything (end of a replay).
        """
        found: list[Alert] = []
        step = self.linking.tick_s
        if watermark == math.inf or math.floor(watermark / step) > self._tick:
            ready, self._buffer = self._buffer, []
            found = self._detect(ready)
        else:  # the open tick's events are still to come for the detectors: time stops at its start
            watermark = min(watermark, self._tick * step)
        found += [a for d in self.detectors for a in d.advance(watermark)]
        return self._link(found)

    def _detect(self, batch: list[Event]) -> list[Alert]:
        return [a for d in self.detectors for a in d.process(batch)] if batch else []

    def _link(self, alerts: list[Alert]) -> list[Alert]:
        """``alerts`` in the pipeline's order, each linked to the earlier ones."""
        if not alerts:
            return alerts
        step = self.linking.tick_s
        order = {d.NAME: i for i, d in enumerate(self.detectors)}
        alerts.sort(key=lambda a: (math.floor(a.at / step) if a.at < math.inf else math.inf,
                                   order[a.type], a.group_id, a.revision))  # fmt: skip
        linked = []
        for a in alerts:
            if a.at < math.inf:
                self.linker.expire(math.floor(a.at / step) * step)
            linked.append(self.linker.link(a))
        return linked

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {d.NAME: dict(d.stats) for d in self.detectors}

    # -- state -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """All state: each detector's snapshot, the linker index and the unflushed buffer."""
        header = {
            "kind": "pipeline",
            "version": STATE_VERSION,
            "detectors": [d.NAME for d in self.detectors],
            "tick": None if self._tick == -math.inf else self._tick,
            "linker": self.linker.state(),
        }
        arrays = [np.frombuffer(d.snapshot(), dtype=np.uint8) for d in self.detectors]
        buffered = b"\n".join(event_to_json(e) for e in self._buffer)
        return pack(header, [*arrays, np.frombuffer(buffered, dtype=np.uint8)])

    def restore(self, data: bytes) -> None:
        """Resume from :meth:`snapshot` bytes (same detectors and params, or an error)."""
        header, arrays = unpack(data, kind="pipeline", version=STATE_VERSION)
        names = [d.NAME for d in self.detectors]
        if header["detectors"] != names:
            raise IncompatibleSketchError(
                f"pipeline snapshot has detectors {header['detectors']}, this config runs {names}"
            )
        self.detectors = [
            type(d).restore(d.params, arr.tobytes()) for d, arr in zip(self.detectors, arrays)
        ]
        self._tick = -math.inf if header["tick"] is None else header["tick"]
        self.linker = Linker(self.linking.memory_s, self.linking.min_shared_accounts)
        self.linker.load_state(header["linker"])
        raw = arrays[-1].tobytes()
        self._buffer = [parse_event(line) for line in raw.split(b"\n")] if raw else []  # type: ignore[misc]
