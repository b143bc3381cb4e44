"""The detection pipeline: every enabled detector plus the linker, over one canonical sequence.

Replay and the stream workers both drive a :class:`Pipeline`. Event time is cut into ticks of
``linking.tick_s`` by each event's own time. A tick closes once the watermark has passed its
end by the lateness bound (the largest ``allowed_lateness_s`` of the enabled detectors); its
events are then sorted by (ts, event id, account, action) and go, with every other tick
closed at the same time, to each detector in ONE call (detectors vectorise over a batch), and
each detector is then told that event time reached the end of the last closed tick. An event
for a tick already closed is late: it is never processed, but kept in :attr:`Pipeline.late`
for the caller to report (replay's rejects file, a worker's dead-letter topic).

So the detectors see one time-sorted sequence, the same however the input was batched, in
whatever order it arrived within the lateness bound, and however it was spread over Kafka
partitions: the watermark only decides *when* a tick is handled, never what is in it. The
alerts are put in one order, (tick of the watermark they were decided at, detector, group id,
revision), and linked in it; before a tick's alerts are linked the linker forgets alerts that
ended ``linking.memory_s`` before the tick began. The cost is latency: a tick is handled
``allowed_lateness_s`` after it ends.

``process(events)`` buffers a batch and closes what its newest event time allows (one input
in sequence order: replay); a worker fed by several partitions calls ``add`` and then
``advance`` with the least of their watermarks.
"""

from __future__ import annotations

import gc
import math
from operator import attrgetter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from detectors.base import Alert, Detector
from detectors.events import Event, Rejection, event_to_json, parse_event
from detectors.linker import Linker
from detectors.params import LinkingParams
from sketches.errors import IncompatibleSketchError
from sketches.protocol import pack, unpack

STATE_VERSION = 2

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


_ORDER = attrgetter("ts", "event_id", "account_id", "action")
_TS = attrgetter("ts")


def _canonical(events: list[Event], ts: np.ndarray) -> tuple[list[Event], np.ndarray]:
    """``events`` (times ``ts``) sorted by (ts, event id, account, action), and their times: by
    time in numpy, then only runs of equal times by the whole key (a key tuple per event cost
    5 % of a replay)."""
    order = np.argsort(ts, kind="stable")
    out, ts = [events[i] for i in order.tolist()], ts[order]
    same = np.diff(np.concatenate(([0], (np.diff(ts) == 0).view(np.int8), [0])))
    for lo, hi in zip(np.flatnonzero(same == 1).tolist(), (np.flatnonzero(same == -1) + 1).tolist()):
        out[lo:hi] = sorted(out[lo:hi], key=_ORDER)
    return out, ts


class Pipeline:
    def __init__(self, detectors: Sequence[Detector[Any]], linking: LinkingParams) -> None:
        self.detectors = list(detectors)
        self.linking = linking
        self.linker = Linker(linking.memory_s, linking.min_shared_accounts)
        self.lateness = max((d.params.allowed_lateness_s for d in self.detectors), default=0.0)
        self.late: list[Event] = []  # process()'s late events, for the caller to report and clear
        self._open: list[Event] = []  # events of open ticks, in arrival order
        self._open_ts = np.empty(0)  # their times
        self._closed = -math.inf  # ticks up to this index are closed
        self._newest = -math.inf  # the newest event time added

    @classmethod
    def from_config(cls, config: DetectorConfig) -> Pipeline:
        """One detector per enabled config section."""
        dets = [
            klass(getattr(config, name))
            for name, klass in detector_classes().items()
            if getattr(config, name).enabled
        ]
        return cls(dets, config.linking)

    @property
    def newest(self) -> float:
        """The newest event time added (the watermark of one input read in order)."""
        return self._newest

    # -- driving ---------------------------------------------------------------------
    def process(self, events: Sequence[Event]) -> list[Alert]:
        """Add a batch (late events into :attr:`late`) and close the ticks its newest event time allows."""
        self.late += self.add(events)
        return self.advance(self._newest)

    def add(self, events: Sequence[Event]) -> list[Event]:
        """Buffer events into their ticks; returns the late ones (their tick is closed)."""
        if not events:
            return []
        ts = np.fromiter(map(_TS, events), dtype=np.float64, count=len(events))
        self._newest = max(self._newest, float(ts.max()))
        is_late = np.floor(ts / self.linking.tick_s) <= self._closed
        late: list[Event] = []
        if is_late.any():
            late = [events[i] for i in np.flatnonzero(is_late).tolist()]
            events = [events[i] for i in np.flatnonzero(~is_late).tolist()]
            ts = ts[~is_late]
        self._open += events
        self._open_ts = np.concatenate((self._open_ts, ts))
        return late

    def late_rejection(self, e: Event) -> Rejection:
        """What a late event becomes for the rejects file or the dead-letter topic."""
        return Rejection(
            "late",
            f"ts {e.ts} is in a tick closed at watermark {self._newest} (more than "
            f"{self.lateness:g} s late): never processed",
            event_to_json(e),
        )

    def advance(self, watermark: float) -> list[Alert]:
        """Event time reached ``watermark``: handle the ticks it closes. ``advance(math.inf)``
        closes everything (the end of a replay)."""
        step = self.linking.tick_s
        upto = math.inf if watermark == math.inf else math.floor((watermark - self.lateness) / step) - 1
        if upto <= self._closed:
            return []
        due = np.floor(self._open_ts / step) <= upto
        if due.all():
            batch, ts, self._open, self._open_ts = self._open, self._open_ts, [], np.empty(0)
        else:
            batch = [self._open[i] for i in np.flatnonzero(due).tolist()]
            ts = self._open_ts[due]
            self._open = [self._open[i] for i in np.flatnonzero(~due).tolist()]
            self._open_ts = self._open_ts[~due]
        batch, ts = _canonical(batch, ts)
        self._closed = upto
        horizon = math.inf if upto == math.inf else (upto + 1) * step
        found: list[Alert] = []
        for d in self.detectors:
            if batch:
                found += d.process(batch, ts)
            found += d.advance(horizon)
        return self._link(found)

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
        """All state: each detector's snapshot, the linker index and the open ticks' events."""
        header = {
            "kind": "pipeline",
            "version": STATE_VERSION,
            "detectors": [d.NAME for d in self.detectors],
            "closed": None if self._closed == -math.inf else self._closed,
            "newest": None if self._newest == -math.inf else self._newest,
            "linker": self.linker.state(),
        }
        arrays = [np.frombuffer(d.snapshot(), dtype=np.uint8) for d in self.detectors]
        ticks = np.floor(self._open_ts / self.linking.tick_s)
        order = np.argsort(ticks, kind="stable").tolist()  # by tick, arrival order within
        buffered = b"\n".join(event_to_json(self._open[i]) for i in order)
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
        self._closed = -math.inf if header["closed"] is None else header["closed"]
        self._newest = -math.inf if header["newest"] is None else header["newest"]
        self.linker = Linker(self.linking.memory_s, self.linking.min_shared_accounts)
        self.linker.load_state(header["linker"])
        raw = arrays[-1].tobytes()
        self._open, self._open_ts = [], np.empty(0)
        self.add([parse_event(line) for line in raw.split(b"\n")] if raw else [])  # type: ignore[misc]
