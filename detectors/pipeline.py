"""The detection pipeline: every enabled detector plus the linker, cut at event-time ticks.

Replay and the stream workers both drive a :class:`Pipeline`. Input batches are re-cut
at a fixed event-time grid (``linking.tick_s``): events are buffered until an event of a
later tick arrives (in sequence order), then the buffered events go to every detector as
one batch, their alerts are ordered (detector order, group id, revision) and linked.
Because the cut points depend only on the event sequence, the detectors see the same
batches, and the output is byte-identical, however the input was batched (file chunks,
Kafka fetches, a restart in between). The cost is up to one tick of event-time latency.
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
        ticks = np.floor(np.maximum.accumulate(ts) / self.linking.tick_s)
        ticks = np.maximum(ticks, self._tick)
        prev = np.concatenate(([self._tick], ticks[:-1]))
        cuts = np.flatnonzero(ticks > prev)
        alerts: list[Alert] = []
        start = 0
        for i in cuts.tolist():
            self._buffer.extend(events[start:i])
            alerts += self._flush()
            self._tick = float(ticks[i])
            start = i
        self._buffer.extend(events[start:])
        return alerts

    def advance(self, watermark: float) -> list[Alert]:
        """Event time reached ``watermark``: flush a finished tick, close windows.

        ``advance(math.inf)`` flushes everything (end of a replay).
        """
        alerts: list[Alert] = []
        if watermark == math.inf or math.floor(watermark / self.linking.tick_s) > self._tick:
            alerts += self._flush()
        found = [a for d in self.detectors for a in d.advance(watermark)]
        alerts += self._link(found, watermark)
        return alerts

    def _flush(self) -> list[Alert]:
        batch, self._buffer = self._buffer, []
        if not batch:
            return []
        found = [a for d in self.detectors for a in d.process(batch)]
        return self._link(found, max(e.ts for e in batch))

    def _link(self, alerts: list[Alert], watermark: float) -> list[Alert]:
        if not alerts:
            self.linker.expire(watermark)
            return alerts
        order = {d.NAME: i for i, d in enumerate(self.detectors)}
        alerts.sort(key=lambda a: (order[a.type], a.group_id, a.revision))
        linked = [self.linker.link(a) for a in alerts]
        self.linker.expire(watermark)
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
