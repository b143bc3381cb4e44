"""Split detectors: parts that each run a piece of a detector over every event, and their merge.

A detector whose groups can join any keys (co_action's accounts over any objects,
near_duplicate's clusters over any texts) does not split into independent shards. It can
still split the part of its work that is per key: co_action's per-object pairing
(:mod:`detectors.co_objects`), near_duplicate's per-band LSH lookups
(:mod:`detectors.nd_bands`). Each part (a :class:`PartDetector`, a worker's work partition)
reads every event in the detection's canonical sequence and hands each batch's findings on
as :class:`Segment` s; the merge (:class:`PartsMerge`, another work partition) feeds the
stretch of events every part has sent to the detector proper, which finds the whole's
alerts.

Every part sees the same events in the same order, so a segment names its events by their
place in that sequence (``start``), however each part's batches were cut. A segment's
payload covers its events and can be cut to any stretch of them (``cut(lo, hi)``, positions
counted from the segment's first event), so the merge cuts where the shortest part's
segment ends.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from collections.abc import Callable, Sequence

import numpy as np

from detectors.base import Alert, Detector, P
from detectors.events import Event
from sketches.errors import CoordwatchError
from sketches.protocol import pack, unpack

#: a segment's size, about: a worker sends each as a message, which must stay below the work
#: topic's message limit
SEGMENT_BYTES = 1 << 20


class Payload(Protocol):
    """What a part found in a stretch of events (its segment's content)."""

    SEGMENT_KIND: ClassVar[str]  # the kind of the segments carrying it (sketches.protocol)

    def cut(self, lo: int, hi: int) -> Self:
        """The findings of the events ``lo`` to ``hi`` (counted from the first)."""
        ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self: ...


T = TypeVar("T", bound=Payload)


@dataclass(frozen=True)
class Segment(Generic[T]):
    """What a part hands on per call: a batch (``start``: events before it in the stream; the
    events' ``times``; what it found, ``payload``), or an advance (no events; ``horizon``: the
    event time reached). ``seq`` numbers a part's segments."""

    seq: int
    start: int
    times: np.ndarray
    payload: T
    horizon: float = -math.inf

    @property
    def end(self) -> int:
        return self.start + int(self.times.size)

    def to_bytes(self) -> bytes:
        h = self.horizon
        head = {"kind": self.payload.SEGMENT_KIND, "version": 1, "seq": self.seq, "start": self.start,
                "horizon": None if h == -math.inf else "inf" if h == math.inf else h}  # fmt: skip
        return pack(head, [self.times, np.frombuffer(self.payload.to_bytes(), dtype=np.uint8)])

    @classmethod
    def from_bytes(cls, data: bytes, payload: type[T]) -> Segment[T]:
        head, (times, body) = unpack(data, kind=payload.SEGMENT_KIND, version=1)
        h = head["horizon"]
        horizon = -math.inf if h is None else math.inf if h == "inf" else float(h)
        return cls(head["seq"], head["start"], times.astype(np.float64), payload.from_bytes(body.tobytes()), horizon)


class Finder(Protocol):
    """The state a part keeps to find its piece of the work (co_action's ``ObjectActions``,
    near_duplicate's ``BandMatcher``)."""

    def state(self) -> tuple[dict[str, Any], list[np.ndarray]]: ...

    def load(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None: ...


class PartDetector(Detector[P], Generic[P, T]):
    """Part ``shard = (s, n)`` of a split detector as a detector of its own: it alerts
    nothing, and hands every batch's findings and every advance to :attr:`outbox` for the
    merge to take (the caller sends and clears it)."""

    SPLITS = True
    LABEL: ClassVar[str]  # what its parts split by, in a work unit's name (co_action.objects.0) and its state
    FINDER: ClassVar[Callable[[Any, tuple[int, int]], Finder]]  # the part's state, of (params, shard)

    def __init__(self, params: P, shard: tuple[int, int]) -> None:
        super().__init__(params, shard)
        self.finder = self.FINDER(params, shard)
        self.count = 0  # events handed on
        self.seq = 0  # segments handed on
        self.outbox: list[Segment[T]] = []

    @abstractmethod
    def _find(self, events: Sequence[Event]) -> tuple[T, np.ndarray]:
        """A batch's findings, and about how many bytes each event adds to them."""

    @abstractmethod
    def _empty(self) -> T:
        """The payload of an advance (no events)."""

    def _process(self, events: Sequence[Event]) -> list[Alert]:
        """Hand on a batch's findings, cut into segments of about SEGMENT_BYTES: a batch may
        hold hours of a backlog."""
        payload, cost = self._find(events)
        piece = np.floor((np.cumsum(cost) - cost) / SEGMENT_BYTES)
        cuts = [0, *(np.flatnonzero(np.diff(piece)) + 1).tolist(), cost.size]
        for lo, hi in zip(cuts, cuts[1:]):
            self._out(self.count + lo, self.times[lo:hi], payload.cut(lo, hi), -math.inf)
        self.count += cost.size
        return []

    def _advance(self, watermark: float) -> list[Alert]:
        self._out(self.count, np.empty(0), self._empty(), watermark)
        return []

    def _out(self, start: int, times: np.ndarray, payload: T, horizon: float) -> None:
        self.outbox.append(Segment(self.seq, start, times, payload, horizon))
        self.seq += 1

    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        head, arrays = self.finder.state()
        return {self.LABEL: head, "count": self.count, "seq": self.seq}, arrays

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self.finder.load(state[self.LABEL], arrays)
        self.count, self.seq = state["count"], state["seq"]


class MergingDetector(Detector[P]):
    """A split detector proper: besides ``process``, it takes what its parts found elsewhere
    (:meth:`process_parts`, driven by a :class:`PartsMerge`)."""

    def process_parts(self, times: np.ndarray, found: Sequence[Any]) -> list[Alert]:
        """A batch of events (their times, in sequence order) whose split-off work the parts
        did elsewhere (one finding per part, in part order, event positions counted from the
        batch's first event): what :meth:`process` does with the events. The parts saw the
        events with the late ones dropped already."""
        if not times.size:
            return []
        self.marks = np.maximum.accumulate(np.maximum(times, self.watermark))
        self.times = times
        self.stats["events"] += times.size
        alerts = self._take(found)
        self.watermark = float(self.marks[-1])
        return alerts

    @abstractmethod
    def _take(self, found: Sequence[Any]) -> list[Alert]:
        """The parts' findings for the batch of :attr:`marks` (``_process`` runs its own parts
        in-process and hands their findings here too)."""


class PartsMerge(Generic[T]):
    """A split detector whose ``parts`` parts run elsewhere, merged here.

    :meth:`offer` takes the parts' segments in any interleaving (each part's in order; one
    taken before is dropped: a part resumed from an older snapshot sends it again), runs the
    detector over the stretch of events every part has sent (cut where the shortest part's
    segment ends: :meth:`MergingDetector.process_parts`), and advances it to a part's horizon once the
    events before that are in.
    So it finds the whole's alerts (tested against one detector, per split detector)."""

    KIND: ClassVar[str]  # its state's kind
    PAYLOAD: ClassVar[type]  # its parts' payload class

    def __init__(self, detector: MergingDetector[Any], parts: int) -> None:
        self.detector = detector
        self.queues: list[list[Segment[T]]] = [[] for _ in range(parts)]
        self.expect = [0] * parts  # the next segment of each part
        self.done = 0  # events taken
        self.horizon = -math.inf  # advanced to

    @abstractmethod
    def _restore(self, data: bytes) -> MergingDetector[Any]:
        """The detector of its snapshot bytes."""

    def segment(self, data: bytes) -> Segment[T]:
        """A segment of this merge's parts from its bytes."""
        return Segment.from_bytes(data, self.PAYLOAD)

    def offer(self, part: int, seg: Segment[T]) -> list[Alert]:
        """Part ``part``'s next segment: the alerts it lets the detector find."""
        if seg.seq < self.expect[part]:
            return []
        if seg.seq > self.expect[part]:
            raise CoordwatchError(f"{self.KIND} part {part}: segment {seg.seq} came before {self.expect[part]}")
        self.expect[part] += 1
        self.queues[part].append(seg)
        alerts: list[Alert] = []
        while True:
            horizon = self.horizon
            for q in self.queues:  # segments whose events are taken: their horizons hold
                while q and q[0].end <= self.done:
                    horizon = max(horizon, q.pop(0).horizon)
            if horizon > self.horizon:
                self.horizon = horizon
                alerts += self.detector.advance(horizon)
            if not all(self.queues):
                return alerts
            end = min(q[0].end for q in self.queues)
            lo = self.done
            first = self.queues[0][0]
            found = [q[0].payload.cut(lo - q[0].start, end - q[0].start) for q in self.queues]
            alerts += self.detector.process_parts(first.times[lo - first.start : end - first.start], found)
            self.done = end

    @property
    def waiting(self) -> int:
        """Events the faster parts have sent that wait for the slowest (0 when every part is level)."""
        return max((q[-1].end for q in self.queues if q), default=self.done) - self.done

    def state(self) -> bytes:
        h = self.horizon
        head = {"kind": self.KIND, "version": 1, "expect": self.expect, "done": self.done,
                "horizon": h if math.isfinite(h) else None, "queued": [len(q) for q in self.queues]}  # fmt: skip
        segs = [np.frombuffer(x.to_bytes(), dtype=np.uint8) for q in self.queues for x in q]
        return pack(head, [np.frombuffer(self.detector.snapshot(), dtype=np.uint8), *segs])

    def load(self, data: bytes) -> None:
        head, (det, *segs) = unpack(data, kind=self.KIND, version=1)
        self.detector = self._restore(det.tobytes())
        self.expect, self.done = head["expect"], head["done"]
        self.horizon = -math.inf if head["horizon"] is None else head["horizon"]
        it = iter(segs)
        self.queues = [[self.segment(next(it).tobytes()) for _ in range(n)] for n in head["queued"]]
