"""The detection pipeline: every enabled detector plus the linker, over one canonical sequence.

Two parts, so the stream workers can run them on different machines (see ``streams.app``):

* :class:`Detection` drives detectors over event time. Event time is cut into ticks of
  ``linking.tick_s`` by each event's own time. A tick closes once the watermark has passed
  its end by the lateness bound (the largest ``allowed_lateness_s`` of the enabled
  detectors, even when a Detection runs only some of them); its events are then sorted by
  (ts, event id, account, action) and go, with every other tick closed at the same time, to
  each detector in ONE call (detectors vectorise over a batch), and each detector is then
  told that event time reached the end of the last closed tick. Input comes from one or
  more *sources* (Kafka partitions), each read in its order: an event more than the bound
  behind an earlier event of its own source, or for a tick already closed, is late. It is
  never processed, but returned for the caller to report (replay's rejects file, a worker's
  dead-letter topic). Closing ticks only up to the slowest source keeps the late events a
  function of each source's sequence (:meth:`Detection.add`).
* :class:`AlertOrder` links the alerts of one or more Detections in ONE order: (tick of
  ``at``, detector, group id, revision). It releases an alert once every source has closed
  its tick, so the order, and with it ``related``, is the same however the sources' ticks
  were grouped into calls. Before an alert is linked the linker forgets alerts that ended
  ``linking.memory_s`` before the alert's tick began.

So the detectors see one time-sorted sequence, the same however the input was batched, in
whatever order it arrived within the lateness bound, and however its sources interleaved or
were spread over workers: the watermark only decides *when* a tick is handled, never what is
in it. The cost is latency: a tick is handled ``allowed_lateness_s`` after it ends, and its
alerts are linked once the next tick has closed too (an alert decided at the end of a tick
belongs to the next one).

:class:`Pipeline` is one Detection of every enabled detector feeding one AlertOrder (replay,
tests). ``process(events)`` buffers a batch and closes what its newest event time allows (one
input in sequence order).
"""

from __future__ import annotations

import gc
import math
from operator import attrgetter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from detectors.base import WHOLE, Alert, Detector, KeyedDetector, Router, Shard
from detectors.events import Event, Rejection, event_to_json, parse_event
from detectors.linker import Linker
from detectors.params import LinkingParams
from detectors.parts import PartsMerge
from sketches.errors import CoordwatchError, IncompatibleSketchError
from sketches.protocol import pack, unpack

STATE_VERSION = 4

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


def detector_parts() -> dict[str, type[Detector[Any]]]:
    """Config section name → the detector that runs one part of it apart (a split detector
    whose parts alert nothing but feed a merge, ``detectors.parts``: co_action's object parts,
    near_duplicate's band parts)."""
    from detectors.co_objects import CoActionPart
    from detectors.nd_bands import NearDuplicatePart

    return {"co_action": CoActionPart, "near_duplicate": NearDuplicatePart}


def part_merges() -> dict[str, type[PartsMerge[Any]]]:
    """Config section name → what merges its parts (:func:`detector_parts`)."""
    from detectors.co_action import CoActionParts
    from detectors.near_duplicate import NearDuplicateParts

    return {"co_action": CoActionParts, "near_duplicate": NearDuplicateParts}


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


#: the most events a detector is handed at once: its arrays of a batch stay this small,
#: however many ticks one advance closes (a worker on many input partitions closes ~100 k
#: events at a time; a replay of 100 k-event batches peaked at 566 MB whole and 375 MB in
#: these, as fast). The alerts are the same: a detector's do not depend on its batching.
PROCESS_EVENTS = 1 << 14


class Detection:
    """Detectors over closed ticks (unlinked alerts out)."""

    def __init__(self, detectors: Sequence[Detector[Any]], tick_s: float, lateness: float) -> None:
        self.detectors = list(detectors)
        self.tick_s = tick_s
        self.lateness = lateness
        # the open ticks' events in arrival order, and their times, by tick: an advance takes
        # the ticks it closes, whatever the others hold (a partition read hours ahead of the
        # slowest leaves its events open through many advances)
        self._open: dict[float, list[Event]] = {}
        self._open_ts: dict[float, list[np.ndarray]] = {}
        self._closed = -math.inf  # ticks up to this index are closed
        self._newest: dict[str, float] = {}  # the newest event time added, per source
        self._first = math.inf  # the oldest on-time event time (of all events, for a shard)
        self._begun = False  # the detectors were told it (Detector.begin)
        self.repeated: list[Event] = []  # advance()'s dropped copies, for the caller to report and clear

    @property
    def newest(self) -> float:
        """The newest event time added from any source (the watermark of one input read in order)."""
        return max(self._newest.values(), default=-math.inf)

    def newest_of(self, source: str) -> float:
        """The newest event time added from ``source`` (``-inf`` before any)."""
        return self._newest.get(source, -math.inf)

    @property
    def closed(self) -> float:
        """The index of the last closed tick (``-inf`` before any, ``inf`` at the end)."""
        return self._closed

    def add(self, events: Sequence[Event], source: str = "", times: np.ndarray | None = None,
            members: np.ndarray | None = None) -> list[Event]:  # fmt: skip
        """Buffer events of ``source`` (read in its order) into their ticks; returns the late ones.

        An event is late if its tick is one that the newest event *before it in its source*
        closes (with :meth:`advance`'s rule), or that is closed already. The first test is a
        function of the source's sequence alone, so however sources interleave, and however
        their events are batched, the same events are late, as long as the ticks are closed
        only up to the slowest source's newest event (:meth:`advance` with :meth:`newest_of`'s
        minimum): then the second test catches nothing more.

        A shard of keyed detectors (``detectors.base``) gets only the events of its keys, but
        judges them as the whole would: ``times`` are the times of all the source's events here,
        in order, and ``members`` the positions of ``events`` among them.
        """
        if times is None:
            times = np.fromiter(map(_TS, events), dtype=np.float64, count=len(events))
        if not times.size:
            return []
        before = np.maximum.accumulate(np.concatenate(([self.newest_of(source)], times[:-1])))
        self._newest[source] = max(float(before[-1]), float(times[-1]))
        tick = np.floor(times / self.tick_s)
        is_late = (tick <= np.floor((before - self.lateness) / self.tick_s) - 1) | (tick <= self._closed)
        if not is_late.all():
            self._first = min(self._first, float(times[~is_late].min()))
        ts = times
        if members is not None:
            ts, is_late = times[members], is_late[members]
        late: list[Event] = []
        if is_late.any():
            late = [events[i] for i in np.flatnonzero(is_late).tolist()]
            events = [events[i] for i in np.flatnonzero(~is_late).tolist()]
            ts = ts[~is_late]
        self._keep(events, ts)
        return late

    def _keep(self, events: Sequence[Event], ts: np.ndarray) -> None:
        """Buffer on-time events (times ``ts``) in their ticks, in arrival order."""
        if not ts.size:
            return
        tick = np.floor(ts / self.tick_s)
        if (tick[1:] < tick[:-1]).any():  # else (a partition read in time order) already by tick
            order = np.argsort(tick, kind="stable")
            events, ts, tick = [events[i] for i in order.tolist()], ts[order], tick[order]
        cuts = [0, *(np.flatnonzero(tick[1:] != tick[:-1]) + 1).tolist(), len(tick)]
        for lo, hi in zip(cuts, cuts[1:]):
            t = float(tick[lo])
            self._open.setdefault(t, []).extend(events[lo:hi])
            self._open_ts.setdefault(t, []).append(ts[lo:hi])

    def late_rejection(self, e: Event) -> Rejection:
        """What a late event becomes for the rejects file or the dead-letter topic."""
        return Rejection(
            "late",
            f"ts {e.ts} is in a tick already closed: more than {self.lateness:g} s behind an event "
            "before it in its partition (or its partition was idle while the others moved on): never processed",
            event_to_json(e),
        )

    def advance(self, watermark: float) -> list[Alert]:
        """Event time reached ``watermark``: handle the ticks it closes (unlinked alerts;
        :attr:`closed` tells up to where). ``advance(math.inf)`` closes everything."""
        step = self.tick_s
        if watermark == -math.inf:  # no event yet
            return []
        upto = math.inf if watermark == math.inf else math.floor((watermark - self.lateness) / step) - 1
        if upto <= self._closed:
            return []
        due = sorted(t for t in self._open if t <= upto)
        batch = [e for t in due for e in self._open.pop(t)]
        ts = np.concatenate([x for t in due for x in self._open_ts.pop(t)]) if due else np.empty(0)
        batch, ts = self._once(*_canonical(batch, ts))
        self._closed = upto
        horizon = math.inf if upto == math.inf else (upto + 1) * step
        # the first event is in the first tick closed with any event: none older is on time after
        if not self._begun and self._first < math.inf and math.floor(self._first / step) <= upto:
            self._begun = True
            for d in self.detectors:
                d.begin(self._first)
        found: list[Alert] = []
        for d in self.detectors:
            for lo in range(0, len(batch), PROCESS_EVENTS):
                found += d.process(batch[lo : lo + PROCESS_EVENTS], ts[lo : lo + PROCESS_EVENTS])
            found += d.advance(horizon)
        return found

    def _once(self, batch: list[Event], ts: np.ndarray) -> tuple[list[Event], np.ndarray]:
        """The closing ticks' events (in canonical order) each once: a copy of an event that came
        again (the same time, id, account and action: a producer's retry, a redelivery, a
        message sent twice) goes to :attr:`repeated`. Copies sort next to each other, so only
        neighbours of equal time are compared; a copy that comes after its tick closed is late."""
        same = np.flatnonzero(ts[1:] == ts[:-1]).tolist()
        again = [i + 1 for i in same if _ORDER(batch[i + 1]) == _ORDER(batch[i])]
        if not again:
            return batch, ts
        self.repeated += [batch[i] for i in again]
        keep = np.ones(len(batch), dtype=bool)
        keep[again] = False
        return [e for e, k in zip(batch, keep.tolist()) if k], ts[keep]

    def repeated_rejection(self, e: Event) -> Rejection:
        """What a dropped copy (:attr:`repeated`) becomes for the rejects file or the dead-letter topic."""
        return Rejection("duplicate", "the same event (ts, event_id, account_id, action) came before it, from this "
                         "partition or another: detected once", event_to_json(e))  # fmt: skip

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {d.NAME: dict(d.stats) for d in self.detectors}

    def snapshot(self) -> bytes:
        """All state: each detector's snapshot and the open ticks' events."""
        header = {
            "kind": "detection",
            "version": STATE_VERSION,
            "detectors": [d.NAME for d in self.detectors],
            "closed": tick_json(self._closed),
            "newest": self._newest,
            "first": tick_json(self._first),
            "begun": self._begun,
        }
        arrays = [np.frombuffer(d.snapshot(), dtype=np.uint8) for d in self.detectors]
        buffered = b"\n".join(event_to_json(e) for t in sorted(self._open) for e in self._open[t])  # by tick
        return pack(header, [*arrays, np.frombuffer(buffered, dtype=np.uint8)])

    def restore(self, data: bytes) -> None:
        """Resume from :meth:`snapshot` bytes (same detectors and params, or an error)."""
        header, arrays = unpack(data, kind="detection", version=STATE_VERSION)
        names = [d.NAME for d in self.detectors]
        if header["detectors"] != names:
            raise IncompatibleSketchError(f"snapshot has detectors {header['detectors']}, this config runs {names}")
        self.detectors = [type(d).restore(d.params, arr.tobytes(), d.shard) for d, arr in zip(self.detectors, arrays)]
        self._closed = json_tick(header["closed"])
        self._newest = dict(header["newest"])
        # absent before shards: a detector that has had events ignores begin()
        self._first, self._begun = json_tick(header.get("first", "inf")), header.get("begun", False)
        raw = arrays[-1].tobytes()
        events: list[Event] = [parse_event(line) for line in raw.split(b"\n")] if raw else []  # type: ignore[misc]
        self._open, self._open_ts = {}, {}
        self._keep(events, np.fromiter(map(_TS, events), dtype=np.float64, count=len(events)))


class AlertOrder:
    """The alerts of named sources (Detections), linked in one order once all have closed their tick."""

    def __init__(self, sources: Sequence[str], detectors: Sequence[str], linking: LinkingParams) -> None:
        self.sources = list(sources)
        self.linking = linking
        self._rank = {name: i for i, name in enumerate(detectors)}
        self.linker = Linker(linking.memory_s, linking.min_shared_accounts)
        self.closed = dict.fromkeys(self.sources, -math.inf)  # each source's last closed tick
        self.released = -math.inf  # alerts up to this tick are out
        self._held: list[Alert] = []

    def offer(self, source: str, closed: float, alerts: Sequence[Alert]) -> list[Alert]:
        """``source`` closed its ticks up to ``closed`` and found ``alerts``: the alerts now
        due, linked, in order."""
        self.closed[source] = max(self.closed[source], closed)
        self._held += alerts
        upto = min(self.closed.values())
        if upto <= self.released or not self._held:
            self.released = max(self.released, upto)
            return []
        self.released = upto
        step = self.linking.tick_s
        tick = [math.floor(a.at / step) if a.at < math.inf else math.inf for a in self._held]
        due = [(t, self._rank[a.type], a.group_id, a.revision, a) for t, a in zip(tick, self._held) if t <= upto]
        self._held = [a for t, a in zip(tick, self._held) if t > upto]
        due.sort(key=lambda x: x[:4])
        linked = []
        for t, _, _, _, a in due:
            if t < math.inf:
                self.linker.expire(t * step)
            linked.append(self.linker.link(a))
        return linked

    def snapshot(self) -> bytes:
        header = {
            "kind": "alert_order",
            "version": STATE_VERSION,
            "closed": [[s, tick_json(c)] for s, c in self.closed.items()],
            "released": tick_json(self.released),
            "linker": self.linker.state(),
        }
        held = b"\n".join(a.to_json() for a in self._held)
        ats = np.array([a.at for a in self._held], dtype=np.float64)
        return pack(header, [ats, np.frombuffer(held, dtype=np.uint8)])

    def restore(self, data: bytes) -> None:
        header, (ats, held) = unpack(data, kind="alert_order", version=STATE_VERSION)
        stored = [s for s, _ in header["closed"]]
        if stored != self.sources:
            raise IncompatibleSketchError(f"alert order snapshot has sources {stored}, this config runs {self.sources}")
        self.closed = {s: json_tick(c) for s, c in header["closed"]}
        self.released = json_tick(header["released"])
        self.linker = Linker(self.linking.memory_s, self.linking.min_shared_accounts)
        self.linker.load_state(header["linker"])
        raw = held.tobytes()
        self._held = [Alert.from_json(line, float(at)) for line, at in zip(raw.split(b"\n"), ats)] if raw else []


class Pipeline:
    """Every enabled detector in one :class:`Detection`, linked by one :class:`AlertOrder`."""

    SOURCE = "all"

    def __init__(self, detectors: Sequence[Detector[Any]], linking: LinkingParams) -> None:
        self.linking = linking
        self.detection = Detection(detectors, linking.tick_s, lateness_of(d.params for d in detectors))
        self.order = AlertOrder([self.SOURCE], [d.NAME for d in detectors], linking)
        self.late: list[Event] = []  # process()'s late events, for the caller to report and clear

    @classmethod
    def from_config(cls, config: DetectorConfig) -> Pipeline:
        """One detector per enabled config section."""
        return cls(enabled_detectors(config), config.linking)

    @property
    def detectors(self) -> list[Detector[Any]]:
        return self.detection.detectors

    @property
    def newest(self) -> float:
        return self.detection.newest

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return self.detection.stats

    def process(self, events: Sequence[Event]) -> list[Alert]:
        """Add a batch (late events into :attr:`late`) and close the ticks its newest event time
        allows (copies of an event into :attr:`repeated`)."""
        self.late += self.detection.add(events)
        return self.advance(self.detection.newest)

    @property
    def repeated(self) -> list[Event]:
        """The copies of events dropped so far, for the caller to report and clear."""
        return self.detection.repeated

    def late_rejection(self, e: Event) -> Rejection:
        return self.detection.late_rejection(e)

    def repeated_rejection(self, e: Event) -> Rejection:
        return self.detection.repeated_rejection(e)

    def advance(self, watermark: float) -> list[Alert]:
        """Event time reached ``watermark``: the linked alerts of the ticks it closes.
        ``advance(math.inf)`` closes everything (the end of a replay)."""
        found = self.detection.advance(watermark)
        return self.order.offer(self.SOURCE, self.detection.closed, found)

    def snapshot(self) -> bytes:
        header = {"kind": "pipeline", "version": STATE_VERSION}
        parts = [self.detection.snapshot(), self.order.snapshot()]
        return pack(header, [np.frombuffer(b, dtype=np.uint8) for b in parts])

    def restore(self, data: bytes) -> None:
        """Resume from :meth:`snapshot` bytes (same detectors and params, or an error)."""
        _, (detection, order) = unpack(data, kind="pipeline", version=STATE_VERSION)
        self.detection.restore(detection.tobytes())
        self.order.restore(order.tobytes())


def enabled_names(config: DetectorConfig) -> list[str]:
    """The detectors of the enabled config sections, in alert order."""
    return [name for name in detector_classes() if getattr(config, name).enabled]


def enabled_detectors(config: DetectorConfig, names: Sequence[str] | None = None,
                      shard: Shard = WHOLE) -> list[Detector[Any]]:  # fmt: skip
    """A detector for each of ``names`` (default: every enabled one), with its section's
    params (as ``shard``: see ``detectors.base``)."""
    classes = detector_classes()
    return [classes[name](getattr(config, name), shard) for name in (enabled_names(config) if names is None else names)]


def keyed_router(config: DetectorConfig, name: str) -> Router:
    """The router of keyed detector ``name``, with its section's params."""
    cls = detector_classes()[name]
    if not issubclass(cls, KeyedDetector):
        raise CoordwatchError(f"{name} is not keyed: it does not split into shards")
    return cls.router(getattr(config, name))


def lateness_of(params: Iterable[Any]) -> float:
    """The lateness bound of a pipeline running detectors with these params (or any part of them)."""
    return max((p.allowed_lateness_s for p in params), default=0.0)


def tick_json(x: float) -> float | str | None:
    """A tick index for a JSON header (which has no infinities)."""
    return None if x == -math.inf else "inf" if x == math.inf else x


def json_tick(x: float | str | None) -> float:
    return -math.inf if x is None else math.inf if x == "inf" else x  # type: ignore[return-value]
