"""The stages the workers share: what a detect or link partition holds and does per message.

No Faust here beyond the message objects handed in: :class:`streams.app.Runner` feeds the
stages, sends what they return and snapshots them. The topology is described in
:mod:`streams.app`.
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

import faust
import numpy as np
import orjson
import zstandard
from faust.types import TP, EventT

from detectors.base import WHOLE, Alert, Shard
from detectors.events import Event, Rejection, future_limits, pack_events, parse_with_origins, unpack_events
from detectors.parts import PartDetector
from detectors.pipeline import (
    AlertOrder,
    Detection,
    detector_parts,
    enabled_detectors,
    enabled_names,
    json_tick,
    keyed_router,
    lateness_of,
    part_merges,
    tick_json,
)
from sketches.errors import CoordwatchError
from sketches.protocol import pack, unpack
from streams.config import Config
from streams.metrics import EVENTS, HELD, MERGE_WAITING, REJECTED, SUPPRESSED, WATERMARK
from streams.snapshots import Snapshot, SnapshotStore, snapshot_topic

log = logging.getLogger(__name__)

#: the most input bytes framed into one work-topic message: a detector's cost per call falls
#: with the batch (in-process, 300 k events: 1.89 s in batches of 10 k events, 2.61 s of 1.7 k)
FRAME_BYTES = 4 << 20
#: the header of a work message whose frame is zstd-compressed (every frame :class:`Framer`
#: makes); a frame without it is read as it is (as workers sent them before). Compressed once
#: and sent to every work partition, a frame of JSON events is ~3.2x smaller, which is what the
#: worker's producer, its consumer's CRC checks and copies, and the broker spend on the work
#: topic (``coordwatch bench stream``, one worker: 1.21x events/s, broker CPU 0.25 -> 0.09 cores)
FRAME_CODEC = ("codec", b"zstd")
#: the header naming the input messages a frame holds, ``first:last:count`` of their offsets
#: (:class:`Frame`); a frame without it (as workers sent them before) names them once decoded
FRAME_SPAN = "span"
#: dead letters larger than this are cut (header ``truncated_from``): Kafka's default
#: message limit is 1 MB and the DLQ must never fail on the message it exists for.
DLQ_MAX_BYTES = 900 * 1024


def max_message_bytes(config: Config) -> int:
    """The largest message a worker sends: a frame of ``FRAME_BYTES`` plus one input message,
    compressed (zstd's bound: ``n + n / 256`` and a few bytes more for ``n`` above 128 KiB)."""
    n = FRAME_BYTES + config.events.max_event_bytes
    return n + (n >> 8) + (64 << 10)


def work_topic(config: Config) -> str:
    return f"{config.kafka.app_id}.work"


def link_topic(config: Config) -> str:
    return f"{config.kafka.app_id}.link"


#: The work partitions' detectors, heaviest second. Faust (an app without tables) assigns
#: with aiokafka's round robin over all the group's partitions in order, so two workers get
#: work partitions {0, 2} and {1} whatever precedes them: co_action, about half of the
#: detection CPU, then has a worker to itself (in config order it shared one with burst:
#: ``coordwatch bench stream --workers 2``, 0.82 and 0.46 worker cores).
WORK_ORDER = ("near_duplicate", "co_action", "burst")


class Unit(NamedTuple):
    """What a work partition runs (``role``): a detector over every event (``whole``), a shard
    of a keyed one over the events of its keys (``shard``: ``work.shards``, see
    ``detectors.base``), or a part of a split detector over every event (``part``:
    ``detectors.parts``, co_action's objects or near_duplicate's bands), its output to the
    partition that merges the parts (``merge``)."""

    detector: str
    shard: Shard
    role: str = "whole"

    @property
    def name(self) -> str:
        s, n = self.shard
        if self.role == "part":
            return f"{self.detector}.{detector_parts()[self.detector].LABEL}.{s}"  # type: ignore[attr-defined]
        return self.detector if n == 1 else f"{self.detector}.{s}"

    @property
    def sharded(self) -> bool:
        """Ingest routes it the events of its keys."""
        return self.role == "shard"

    @property
    def alerts(self) -> bool:
        """It sends alerts to the link partition (a part sends its merge its findings)."""
        return self.role != "part"

    @property
    def framed(self) -> bool:
        """Ingest sends it frames (the merge gets the parts' output instead)."""
        return self.role != "merge"


def work_units(config: Config) -> list[Unit]:
    """The enabled detectors in work-partition order, a split one as its shards (or parts,
    then their merge): partition ``u`` runs the ``u``-th."""
    units = []
    for name in sorted(enabled_names(config), key=WORK_ORDER.index):
        n = config.work.shards.get(name, 1)
        if n == 1:
            units.append(Unit(name, WHOLE))
        elif name in detector_parts():
            units += [*(Unit(name, (s, n), "part") for s in range(n)), Unit(name, WHOLE, "merge")]
        else:
            units += [Unit(name, (s, n), "shard") for s in range(n)]
    return units


def merge_partition(config: Config, detector: str) -> int:
    """The work partition merging ``detector``'s parts."""
    return next(u for u, unit in enumerate(work_units(config)) if unit.detector == detector and unit.role == "merge")


def stage_names(config: Config) -> list[str]:
    return [f"detect-{u.name}" for u in work_units(config)] + ["link"]


def internal_topics(config: Config) -> list[tuple[list[str], int, dict[str, str]]]:
    """The topics between and beside the agents, as (names, partitions, topic configs): only
    the newest snapshot is ever read, so a real cluster may drop old ones (Tansu keeps all)."""
    keep_ms = str(int(max(3600, 20 * config.kafka.snapshot_interval_s) * 1000))
    large = {"max.message.bytes": str(max_message_bytes(config))}
    return [
        ([work_topic(config)], len(work_units(config)), large),
        ([link_topic(config)], 1, large),
        ([snapshot_topic(config, s) for s in stage_names(config)], 1, {"retention.ms": keep_ms}),
    ]


# -- frames: input messages with their offsets, keys and times, one work-topic message ----
_HEAD = struct.Struct(">I")
#: set in a frame's count when the frame holds its messages' timestamps (an older worker's
#: frames do not: their timestamps read as unknown, so their events are not checked for
#: future_ts)
_TIMED = 1 << 31

#: a frame's messages: offsets, keys, values and Kafka timestamps (ms, -1 if not known)
Parts = tuple[list[int], list[bytes | None], list[bytes], list[int]]


def pack_frames(offsets: Sequence[int], keys: Sequence[bytes | None], values: Sequence[bytes],
                times: Sequence[int]) -> bytes:  # fmt: skip
    """``n`` (with :data:`_TIMED`), ``n`` offsets (int64), key and value lengths (uint32; a
    missing key is 0xFFFFFFFF), timestamps (int64 ms), then the keys and the values back to back."""
    klen = [0xFFFFFFFF if k is None else len(k) for k in keys]
    head = b"".join(np.array(x, dtype=d).tobytes() for x, d in
                    ((offsets, ">i8"), (klen, ">u4"), ([len(v) for v in values], ">u4"), (times, ">i8")))  # fmt: skip
    return _HEAD.pack(len(values) | _TIMED) + head + b"".join(k or b"" for k in keys) + b"".join(values)


def unpack_frames(data: bytes) -> Parts:
    (n,) = _HEAD.unpack_from(data)
    timed, n = bool(n & _TIMED), n & ~_TIMED
    offsets = np.frombuffer(data, dtype=">i8", count=n, offset=4).tolist()
    klen = np.frombuffer(data, dtype=">u4", count=n, offset=4 + 8 * n).astype(np.int64)
    vlen = np.frombuffer(data, dtype=">u4", count=n, offset=4 + 12 * n).astype(np.int64)
    times = np.frombuffer(data, dtype=">i8", count=n, offset=4 + 16 * n).tolist() if timed else [-1] * n
    none = klen == 0xFFFFFFFF
    klen[none] = 0
    ends = np.cumsum(np.concatenate((klen, vlen))).tolist()
    base = 4 + (24 if timed else 16) * n
    parts = [data[base + a : base + b] for a, b in zip([0, *ends[:-1]], ends)]
    keys = [None if nk else k for nk, k in zip(none.tolist(), parts[:n])]
    return offsets, keys, parts[n:], times


Span = tuple[int, int, int]  # a frame's first and last input offsets, and how many messages
_EMPTY_SPAN: Span = (0, -1, 0)


def span_of(offsets: Sequence[int]) -> Span:
    return (offsets[0], offsets[-1], len(offsets)) if offsets else _EMPTY_SPAN


def pack_span(offsets: Sequence[int]) -> bytes:
    """The :data:`FRAME_SPAN` header of a frame of the messages at ``offsets``."""
    return ":".join(map(str, span_of(offsets))).encode()


def parse_span(header: bytes) -> Span:
    first, last, n = (int(x) for x in header.split(b":"))
    return first, last, n


class Frame:
    """A frame's input messages: which ones (``span``) at once, their bytes only when asked
    for, decompressed and unpacked then. The detect stages of a worker share a frame's parse
    (:class:`ParseCache`), so all but one need only its span: for a frame of 20 000 single
    events, decompressing took 4 ms and unpacking 8 ms, each stage."""

    def __init__(self, span: Span | None, read: Callable[[], bytes]) -> None:
        self._span, self._read = span, read
        self._data: bytes | None = None
        self._parts: Parts | None = None

    @classmethod
    def of(cls, offsets: list[int], keys: list[bytes | None], values: list[bytes], times: list[int]) -> Frame:
        frame = cls(span_of(offsets), lambda: pack_frames(offsets, keys, values, times))
        frame._parts = (offsets, keys, values, times)
        return frame

    @classmethod
    def received(cls, data: bytes, headers: dict[str, bytes], unzstd: zstandard.ZstdDecompressor) -> Frame:
        """The frame of a work message (``headers``: its :data:`FRAME_CODEC` and :data:`FRAME_SPAN`)."""
        codec = headers.get(FRAME_CODEC[0])
        if codec is not None and codec != FRAME_CODEC[1]:  # a newer worker's
            raise CoordwatchError(f"work message has codec {codec!r}, not zstd")
        span = headers.get(FRAME_SPAN)
        return cls(parse_span(span) if span else None,
                   (lambda: data) if codec is None else (lambda: unzstd.decompress(data)))  # fmt: skip

    @property
    def data(self) -> bytes:
        """The frame's bytes (:func:`pack_frames`, or :func:`pack_routed` for a shard)."""
        if self._data is None:
            self._data = self._read()
        return self._data

    @property
    def parts(self) -> Parts:
        """Its messages' offsets, keys, values and timestamps."""
        if self._parts is None:
            self._parts = unpack_frames(self.data)
        return self._parts

    @property
    def span(self) -> Span:
        if self._span is None:
            self._span = span_of(self.parts[0])
        return self._span

    def since(self, done: int) -> Frame | None:
        """The messages at offset ``done`` and later (None if there are none)."""
        first, last, _ = self.span
        if first >= done:
            return self
        if last < done:
            return None
        keep = [i for i, o in enumerate(self.parts[0]) if o >= done]
        return Frame.of(*([x[i] for i in keep] for x in self.parts))


# -- routed frames: a shard's events of a frame, with the offsets and times of all its events --
_ROUTED = struct.Struct(">qII")


def pack_routed(next_offset: int, offsets: np.ndarray, times: np.ndarray, members: np.ndarray,
                events: Sequence[Event]) -> bytes:  # fmt: skip
    """The offset after the frame's last input message, ``n`` and ``m``, then per event of the
    frame its message's offset (int64) and its time (float64), the positions of the shard's
    ``m`` events among them (uint32), and those events (:func:`~detectors.events.pack_events`)."""
    head = _ROUTED.pack(next_offset, len(offsets), len(members))
    parts = (np.asarray(offsets, ">i8"), np.asarray(times, ">f8"), np.asarray(members, ">u4"))
    return head + b"".join(x.tobytes() for x in parts) + pack_events(events)


def unpack_routed(data: bytes) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, list[Event]]:
    nxt, n, m = _ROUTED.unpack_from(data)
    at = _ROUTED.size
    offsets = np.frombuffer(data, ">i8", n, at).astype(np.int64)
    times = np.frombuffer(data, ">f8", n, at + 8 * n).astype(np.float64)
    members = np.frombuffer(data, ">u4", m, at + 16 * n).astype(np.int64)
    return nxt, offsets, times, members, unpack_events(data[at + 16 * n + 4 * m :])


#: a message to produce: (topic, key, value, partition or None, headers or None)
Send = tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]


@dataclass
class Out:
    """What handling input produced, for the event loop to send (alerts: to publish, not yet on the topic)."""

    sends: list[Send] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Stage(ABC):
    """One partition's state (a detector, or the linking), snapshotted to its own topic."""

    KIND: str  # the agent feeding it: "detect" or "link"
    PUBLISHES = False  # sends alerts: its snapshots record the alerts topic's end offsets

    def __init__(self, config: Config, name: str, tp: TP, app: faust.App) -> None:
        self.config, self.name, self.tp, self.app = config, name, tp, app
        self.store = SnapshotStore(config, name, app)
        self.offsets: dict[tuple[str, int], int] = {}  # next offset not in the state, per partition read
        self.pending: list[EventT] = []  # consumed, in the state, not yet in a snapshot: unacked
        self.sent: list[Awaitable[Any]] = []  # deliveries caused by pending input
        self.fresh = False  # started without a snapshot and has taken nothing yet
        self.dirty = False  # pending input changed more than soft state (see DetectStage.reports)
        self.saved_at = -math.inf  # monotonic time of the last snapshot written

    @property
    def next_offset(self) -> int:
        return self.offsets.get((self.tp.topic, self.tp.partition), 0)

    def handle(self, msg: Any, value: bytes) -> Out:
        """One input message (already known to be new): the state moves on."""
        self.offsets[(self.tp.topic, self.tp.partition)] = msg.offset + 1
        return self._handle(msg, value)

    @abstractmethod
    def _handle(self, msg: Any, value: bytes) -> Out:
        """:meth:`handle` once the stage's own offset has moved (sets :attr:`dirty` if it
        changed more than soft state)."""

    @abstractmethod
    def state(self) -> bytes:
        """All state but the offsets (which the snapshot holds beside it)."""

    @abstractmethod
    def load(self, state: bytes) -> None:
        """Inverse of :meth:`state` on a fresh stage."""

    async def alert_offsets(self) -> dict[int, int]:
        """For a snapshot: the alerts topic's end offsets if this stage publishes (else none)."""
        return await self.store.alert_end_offsets() if self.PUBLISHES else {}

    async def restored(self, snap: Snapshot | None) -> None:
        """After :meth:`load` (or with nothing to load): anything more to fetch."""

    @property
    def stats(self) -> Any:
        return {}


#: a frame's events, its rejections (with their message's position) and each event's message's position
Parsed = tuple[list[Event], list[tuple[int, Rejection]], np.ndarray]
Parse = Callable[[tuple[str, int], Frame], Parsed]


class ParseCache:
    """The parse of the last frames: the detect stages of whole detectors get a copy of each
    frame (and ingest parses it too when it routes events to shards); those on one worker
    parse it once (one worker, 300 k events in 100-event envelopes: parsing was 42 %
    of its CPU with three parses). Bounded by the frames' bytes, as the stages on one worker
    read their partitions at their own pace."""

    MAX_BYTES = 48 << 20

    def __init__(self, max_bytes: int, max_ahead_s: float) -> None:
        self.max_bytes, self.max_ahead_s = max_bytes, max_ahead_s
        self._done: OrderedDict[tuple[Any, ...], tuple[Parsed, int]] = OrderedDict()
        self._bytes = 0

    def __call__(self, src: tuple[str, int], frame: Frame) -> Parsed:
        key = (src, *frame.span)
        if (hit := self._done.get(key)) is not None:
            self._done.move_to_end(key)
            return hit[0]
        _, _, values, times = frame.parts
        limits = future_limits(np.array(times, dtype=np.float64) / 1000, self.max_ahead_s)  # -1: not known
        parsed = parse_with_origins(values, self.max_bytes, limits)
        size = sum(map(len, values))
        self._done[key] = (parsed, size)
        self._bytes += size
        while self._bytes > self.MAX_BYTES and len(self._done) > 1:
            self._bytes -= self._done.popitem(last=False)[1][1]
        return parsed


def rejections_at_ingest(config: Config) -> bool:
    """Whether ingest reports the parse rejections: only if it parses, to route events to a
    shard; else the first detect stage does, as it parses the frames anyway. Not both: in a
    backlog ingest runs far ahead of the stages, and the parse it left in the cache is gone
    by the time a stage reads the frame (one parse more per frame)."""
    return any(u.sharded for u in work_units(config))


class Framer:
    """What ingest sends for a frame of input partition ``src``: to each work partition the
    frame itself (a whole detector parses it there, in its worker's :class:`ParseCache`), or
    to a shard of a keyed detector only the events of its keys, with the offsets and times
    of all the frame's events (:func:`pack_routed`), each compressed (:data:`FRAME_CODEC`);
    and, if it parsed, the rejections as dead letters (:func:`rejections_at_ingest`)."""

    def __init__(self, config: Config, parse: Parse) -> None:
        self.config, self.parse = config, parse
        self.units = work_units(config)
        self.routers = {u.detector: keyed_router(config, u.detector) for u in self.units if u.sharded}
        self.parses = rejections_at_ingest(config)
        # the input bytes of a frame: a shard's part of one may be larger than the input (the
        # urls and hashtags found in a text are added beside it, an id derived, 16 bytes per
        # event of the frame: at most ~2.4x), so a routed frame of a quarter stays within
        # max_message_bytes (tested)
        self.frame_bytes = FRAME_BYTES // 4 if self.parses else FRAME_BYTES
        self._zstd = zstandard.ZstdCompressor(level=1)  # 3.2x on JSON events at ~300 MB/s (level 3: 3.5x, 170 MB/s)

    def __call__(self, src: tuple[str, int], offsets: list[int], keys: list[bytes | None],
                 values: list[bytes], times: list[int]) -> tuple[list[bytes | None], list[Send]]:  # fmt: skip
        """Per work partition its frame (None: the partition takes no frames), and the dead letters."""
        frame = self._zstd.compress(pack_frames(offsets, keys, values, times))
        if not self.parses:
            return self.alike(frame), []
        events, rejected, origins = self.parse(src, Frame.of(offsets, keys, values, times))
        dead = [dead_letter(self.config, src, offsets[i], keys[i], None, r) for i, r in rejected]
        at = np.asarray(offsets, dtype=np.int64)[origins]
        times = np.fromiter(map(attrgetter("ts"), events), dtype=np.float64, count=len(events))
        routes = {name: r.route(events, self.config.work.shards[name]) for name, r in self.routers.items()}
        out = self.alike(frame)
        for k, u in enumerate(self.units):
            if u.sharded:
                idx = routes[u.detector][u.shard[0]]
                routed = pack_routed(offsets[-1] + 1, at, times, idx, [events[i] for i in idx.tolist()])
                out[k] = self._zstd.compress(routed)
        return out, dead

    def alike(self, frame: bytes) -> list[bytes | None]:
        """``frame`` for every work partition that takes frames."""
        return [frame if u.framed else None for u in self.units]


#: a source's report (its high watermark, and when the ingest reading it learnt it from a
#: fetch: every frame carries those of all its ingest's partitions, and ingest sends them
#: alone every ``REPORT_EVERY_S``, ``streams.app``) counts for this long, by the work
#: messages' timestamps: a source whose ingest stopped, or stopped fetching, soon holds again
REPORT_VALID_S = 10.0
#: how long a source behind its high watermark holds without progress (a new frame or a new
#: high watermark): one whose ingest stopped fetching it, or whose frames are lost, delays
#: the ticks this long (ingest reads every partition it has at once, so a partition with
#: input does not go this long without a frame; one that ends in a transaction marker
#: reports its last record's end instead: :meth:`streams.ingest.InputReader.highwaters`)
STALL_S = 60.0

#: an input partition's high watermark and the time (unix seconds) its ingest learnt it
Report = tuple[int, float]


def source_key(src: tuple[str, int]) -> str:
    """A Detection source name for an input partition (Kafka topic names have no ':')."""
    return f"{src[0]}:{src[1]}"


def pack_highwaters(reports: dict[tuple[str, int], Report]) -> bytes:
    """The ``highwaters`` header: ``topic:partition=offset@milliseconds`` for each, comma-separated."""
    return ",".join(f"{source_key(tp)}={h}@{round(t * 1000)}" for tp, (h, t) in sorted(reports.items())).encode()


def parse_highwaters(header: bytes) -> list[tuple[tuple[str, int], Report]]:
    out = []
    for item in filter(None, header.decode().split(",")):
        key, _, report = item.rpartition("=")
        topic, _, partition = key.rpartition(":")
        highwater, _, ms = report.partition("@")
        out.append(((topic, int(partition)), (int(highwater), int(ms) / 1000)))
    return out


class DetectStage(Stage):
    """Work partition ``u``: unit ``u`` (:func:`work_units`), a detector over every event of
    the frames, or a shard of a keyed one over the events of its keys (the frames routed by
    :class:`Framer`: judged late and cut into ticks by the times of all events, so the
    shards together find what the whole detector does). Its late events are dead-lettered
    with header ``detector`` = the unit's name (``burst.1``); the first stage also counts
    the events and, unless ingest does, dead-letters the parse rejections.

    Each input partition is a source of the :class:`Detection`, so an event is late only
    against the events before it in its own partition. Ticks close only as far as no
    partition may still send older events. A partition *holds* at its newest event time if
    it has not reported (``sources``: every input partition, from the broker), if its report
    is older than ``REPORT_VALID_S``, if its frames are behind the high watermark it reported
    (unless neither has moved for ``STALL_S``), or if it is caught up but had new input less
    than ``work.idle_s`` ago (a producer still writing a backlog: its batch for one partition
    can be minutes of event time ahead of another's). A partition caught up and idle that
    long holds at what it has vouched for: the newest event time of the frames sent before
    its ingest learnt its high watermark (data sent to it after that is unknown). So a
    backlog read in any interleaving, arriving on every partition at once, read by several
    ingests or still being written, makes no late event, and an idle or empty partition
    stops the others for ``work.idle_s`` only. The parts of a split detector read the frames
    in different interleavings, so they agree on which events are late only because none
    is late but by its own partition's order. Every input to that rule (frames, reports,
    the work messages' timestamps) is on the work topic: a restarted stage decides the same.
    """

    KIND = "detect"

    def __init__(self, config: Config, tp: TP, app: faust.App, parse: Parse,
                 sources: Sequence[tuple[str, int]]) -> None:  # fmt: skip
        self.unit = work_units(config)[tp.partition]
        self.detector = self.unit.detector
        super().__init__(config, f"detect-{self.unit.name}", tp, app)
        self.parse = parse
        self.primary = tp.partition == 0  # counts the events and sets the watermark gauge, once
        self.rejects = self.primary and not rejections_at_ingest(config)  # dead-letters the parse rejections
        lateness = lateness_of(getattr(config, name) for name in enabled_names(config))  # the pipeline's
        if self.unit.role == "part":  # one part of a split detector: its late events are the detector's
            detectors = [detector_parts()[self.detector](getattr(config, self.detector), self.unit.shard)]
            self.merge = merge_partition(config, self.detector)
            self.late_as = self.detector if self.unit.shard[0] == 0 else None
        else:
            detectors = enabled_detectors(config, [self.detector], self.unit.shard)
            self.late_as = self.unit.name
        self.detection = Detection(detectors, config.linking.tick_s, lateness)
        self.sources = {source_key(s): s for s in sources}
        self.idle_s = config.work.idle_s
        self.reports: dict[str, Report] = {}
        self.progress: dict[str, float] = {}  # source -> timestamp of its last new input or new report
        self.history: list[tuple[float, float]] = []  # (frame timestamp, newest event time after it), recent
        self._unzstd = zstandard.ZstdDecompressor()
        self._zstd = zstandard.ZstdCompressor(level=1)

    def _handle(self, msg: Any, value: bytes) -> Out:
        now, headers = float(msg.timestamp), dict(msg.headers or ())
        for src, report in parse_highwaters(headers.get("highwaters", b"")):
            key = source_key(src)
            self.sources.setdefault(key, src)
            last = self.reports.get(key)
            if last is None or last[0] != report[0] or last[1] < now - REPORT_VALID_S:
                self.progress[key] = now  # more input to wait for (or a restarted ingest)
            if last is None or report[1] >= last[1]:
                self.reports[key] = report
        out = Out()
        if topic := headers.get("source_topic"):  # else a report alone
            try:
                frame = Frame.received(value, headers, self._unzstd)
            except CoordwatchError as e:
                raise CoordwatchError(f"{self.name}: work message {msg.offset}: {e}") from None
            self._take((topic.decode(), int(headers["source_partition"])), frame, now, out)
        before = self.detection.closed
        found = self.detection.advance(self.watermark(now))
        if self.detection.closed > before:
            self.dirty = True
            if self.unit.alerts:
                out.sends.append(link_message(self.config, self.unit.name, msg.offset, self.detection.closed, found))
            else:  # a part: its segments to the partition merging the parts
                part = self.detection.detectors[0]
                assert isinstance(part, PartDetector)
                headers = [("part", str(self.unit.shard[0]).encode()), FRAME_CODEC]
                out.sends += [(work_topic(self.config), None, self._zstd.compress(seg.to_bytes()), self.merge, headers)
                              for seg in part.outbox]  # fmt: skip
                part.outbox.clear()
        if self.late_as is not None:  # a copy of an event: from no one partition
            out.sends += [dead_letter(self.config, None, None, None, self.late_as, self.detection.repeated_rejection(e))
                          for e in self.detection.repeated]  # fmt: skip
        self.detection.repeated.clear()
        return out

    def _take(self, src: tuple[str, int], frame: Frame, now: float, out: Out) -> None:
        """The new input of a frame of input partition ``src`` into the detection (a frame
        re-sent by an ingest that restarted: its new part)."""
        key = source_key(src)
        self.sources.setdefault(key, src)
        done = self.offsets.get(src, 0)
        times = members = None
        if self.unit.sharded:
            nxt, at, times, members, events = unpack_routed(frame.data)
            if nxt <= done:
                return
            if at.size and at[0] < done:
                cut = int(np.searchsorted(at, done))  # the first event of a new message
                keep = members >= cut
                events = [e for e, k in zip(events, keep.tolist()) if k]
                times, members = times[cut:], members[keep] - cut
        else:
            new = frame.since(done)
            if new is None or not new.span[2]:
                return
            nxt = new.span[1] + 1
            events, rejected, _ = self.parse(src, new)
            if self.rejects and rejected:
                offsets, keys = new.parts[:2]
                out.sends += [dead_letter(self.config, src, offsets[i], keys[i], None, r) for i, r in rejected]
        self.offsets[src] = nxt
        self.progress[key] = now
        self.dirty = True
        for e in self.detection.add(events, key, times, members):
            if self.late_as is not None:
                r = self.detection.late_rejection(e)
                out.sends.append(dead_letter(self.config, src, None, None, self.late_as, r))
        if count := len(events) if times is None else times.size:  # the newest event time may have moved
            if self.primary:
                EVENTS.inc(count)
                WATERMARK.set(self.detection.newest)
            self.history.append((now, self.detection.newest))
        # a usable cover is at most REPORT_VALID_S old: keep the entry before that, and later ones
        old = bisect.bisect_right(self.history, (now - REPORT_VALID_S, math.inf)) - 1
        if old > 0:
            del self.history[:old]

    def watermark(self, now: float) -> float:
        """The event time the ticks may close up to at a work message stamped ``now``."""
        wm, holding, cover = self.detection.newest, 0, math.inf
        for key, src in self.sources.items():
            highwater, known = self.reports.get(key, (None, -math.inf))
            behind = highwater is not None and self.offsets.get(src, 0) < highwater
            quiet = now - self.progress.get(key, -math.inf)  # since its last new input or new high watermark
            if highwater is None or known < now - REPORT_VALID_S or quiet <= (STALL_S if behind else self.idle_s):
                wm = min(wm, self.detection.newest_of(key))
                holding += 1
            else:
                cover = min(cover, known)
        if cover < math.inf:  # the newest event time of the frames sent before ``cover``
            at = bisect.bisect_right(self.history, (cover, math.inf)) - 1
            wm = min(wm, self.history[at][1] if at >= 0 else -math.inf)
        HELD.labels(self.name).set(holding)
        return wm

    def state(self) -> bytes:
        header = {"kind": "detect_stage", "version": 1, "reports": sorted([k, *v] for k, v in self.reports.items()),
                  "progress": self.progress, "history": self.history}  # fmt: skip
        return pack(header, [np.frombuffer(self.detection.snapshot(), dtype=np.uint8)])

    def load(self, state: bytes) -> None:
        header, (detection,) = unpack(state, kind="detect_stage", version=1)
        self.reports = {k: (h, known) for k, h, known in header["reports"]}
        self.progress = dict(header["progress"])
        self.history = [(t, n) for t, n in header["history"]]
        self.detection.restore(detection.tobytes())

    @property
    def stats(self) -> Any:
        return self.detection.stats


def link_message(config: Config, unit: str, offset: int, closed: float, found: Sequence[Alert]) -> Send:
    """What a unit sends the link partition: a JSON head line (the unit, its work offset, the
    tick it has closed up to, each alert's ``at``), then one alert per line (their canonical
    bytes, as published)."""
    head = {"detector": unit, "offset": offset, "closed": tick_json(closed), "at": [a.at for a in found]}
    body = b"\n".join([orjson.dumps(head), *(a.to_json() for a in found)])
    return link_topic(config), unit.split(".")[0].encode(), body, 0, None


class MergeStage(Stage):
    """The work partition merging a split detector's parts (:func:`~detectors.pipeline.part_merges`:
    :class:`~detectors.parts.PartsMerge`): the parts' segments in (each part's in order,
    the parts interleaved as they came, a segment re-sent after a part's restart dropped), its
    alerts to the link partition, with the tick up to which the parts have vouched for the
    event time."""

    KIND = "detect"

    def __init__(self, config: Config, tp: TP, app: faust.App) -> None:
        self.unit = work_units(config)[tp.partition]
        super().__init__(config, f"detect-{self.unit.name}", tp, app)
        name = self.unit.detector
        self.parts = part_merges()[name](getattr(config, name), config.work.shards[name])
        self._unzstd = zstandard.ZstdDecompressor()

    def _handle(self, msg: Any, value: bytes) -> Out:
        headers, out = dict(msg.headers or ()), Out()
        if (part := headers.get("part")) is None:
            return out  # nothing else is sent here
        if headers.get(FRAME_CODEC[0]) == FRAME_CODEC[1]:
            value = self._unzstd.decompress(value)
        before = self.parts.horizon
        found = self.parts.offer(int(part), self.parts.segment(value))
        self.dirty = True
        MERGE_WAITING.labels(self.name).set(self.parts.waiting)
        if found or self.parts.horizon > before:
            h, step = self.parts.horizon, self.config.linking.tick_s
            closed = h if math.isinf(h) else round(h / step) - 1  # the horizon is where the next tick starts
            out.sends.append(link_message(self.config, self.unit.name, msg.offset, closed, found))
        return out

    def state(self) -> bytes:
        return self.parts.state()

    def load(self, state: bytes) -> None:
        self.parts.load(state)

    @property
    def stats(self) -> Any:
        return {self.unit.detector: dict(self.parts.detector.stats)}


class LinkStage(Stage):
    """The link partition: every detector's alerts, linked in one order, published once."""

    KIND = "link"
    PUBLISHES = True

    def __init__(self, config: Config, tp: TP, app: faust.App) -> None:
        super().__init__(config, "link", tp, app)
        units = work_units(config)
        names = [u.name for u in units if u.alerts]
        self.work = work_topic(config)
        self.partition_of = {u.name: k for k, u in enumerate(units) if u.alerts}
        # alerts in the pipeline's order (config order), whatever the partitions' order
        self.order = AlertOrder(names, enabled_names(config), config.linking)
        self.seen: set[str] = set()  # alert ids already on the alerts topic (after a restart)

    def _handle(self, msg: Any, value: bytes) -> Out:
        self.dirty = True
        lines = value.split(b"\n")
        body = orjson.loads(lines[0])
        source = (self.work, self.partition_of[body["detector"]])
        out = Out()
        if body["offset"] < self.offsets.get(source, 0):
            return out  # sent again by a detector stage resumed from an older snapshot
        self.offsets[source] = body["offset"] + 1
        found = [Alert.from_json(a, at) for a, at in zip(lines[1:], body["at"])]
        for a in self.order.offer(body["detector"], json_tick(body["closed"]), found):
            if a.alert_id in self.seen:
                SUPPRESSED.inc()
            else:
                out.alerts.append(a)
        return out

    def state(self) -> bytes:
        return self.order.snapshot()

    def load(self, state: bytes) -> None:
        self.order.restore(state)

    async def restored(self, snap: Snapshot | None) -> None:
        if snap is not None:
            self.seen = await self.store.alert_ids_since(snap.alert_offsets)
            log.info("link: %d alert ids already published after the snapshot", len(self.seen))


def dead_letter(
    config: Config, src: tuple[str, int] | None, offset: int | None, key: bytes | None, detector: str | None,
    r: Rejection,
) -> Send:
    """A rejection as a dead-letter send (the rejected bytes, cut at ``DLQ_MAX_BYTES``);
    ``src``: the input partition it came from, if one."""
    REJECTED.labels(r.reason).inc()
    value = r.raw
    headers = [] if src is None else [("source_topic", src[0].encode()), ("source_partition", str(src[1]).encode())]
    if offset is not None:
        headers.append(("source_offset", str(offset).encode()))
    headers += [("reason", r.reason.encode()), ("detail", r.detail.encode())]
    if r.index is not None:
        headers.append(("index", str(r.index).encode()))
    if detector is not None:
        headers.append(("detector", detector.encode()))
    if len(value) > DLQ_MAX_BYTES:
        headers.append(("truncated_from", str(len(value)).encode()))
        value = value[:DLQ_MAX_BYTES]
    return config.topics.dead_letter, key, value, None, headers


def chunks(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Cut a run of values into consecutive (lo, hi) slices of at most ``limit`` bytes (a larger value alone)."""
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > limit:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    out.append((lo, len(sizes)))
    return out
