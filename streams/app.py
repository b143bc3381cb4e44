"""The Faust app: input in, the detectors spread over the workers, alerts out, state snapshotted.

Three agents, each on its own topic, so that N workers in one group compute exactly what one does:

* **ingest** reads the event topics (raw bytes, any number of partitions and workers). It
  does not parse: it frames the input messages of a batch with their offsets into one
  message per input partition (at most 512 KiB) and sends a copy to every partition of the
  *work topic* ``<app_id>.work``, then acks the input. Messages larger than
  ``events.max_event_bytes`` go straight to the dead-letter topic.
* **detect** reads the work topic: partition ``u`` is the ``u``-th enabled detector
  (co_action, near_duplicate, burst) as one :class:`~detectors.pipeline.Detection` over every
  event, in event time. The work is cut by detector, not by object or LSH band: a co_action
  group or a near_duplicate cluster can join any two objects or texts, so cutting their state
  by key would change what they find. The stage parses (the first detector's stage sends the
  rejections to the dead-letter topic, headers ``source_topic``, ``source_partition``,
  ``source_offset``, ``reason``, ``detail``, and ``index`` for an envelope element), skips
  input already in its state, and each time it closes ticks sends their alerts, unlinked, to
  the *link topic* ``<app_id>.link`` (one partition), stamped with its work offset. Late
  events are dead-lettered by each detector that never processed them (header ``detector``).
* **link** reads the link topic: one :class:`~detectors.pipeline.AlertOrder` links the
  alerts of all detectors once each has closed the tick and publishes them to the alerts
  topic (key ``group_id``, value ``Alert.to_json()``). A re-sent stage message (an offset
  not above the last one taken from that detector) is skipped.

Every message of a partition is handled on its own, in offset order, and what it yields
depends only on the stage's state and the message. So a stage resumed from a snapshot re-sends
what it sent before, and the alerts are the same whichever worker runs which partition and
however many workers there are (replay runs the same detectors in one Detection: the same
alerts, tested). Parsing and detection run on one dedicated thread, which alone touches stage
state: on the event loop they starved Faust's consumer thread.

Recovery: snapshots, not re-reading. Re-reading the window's span cannot reproduce the state
(a pipeline started mid-stream makes other groups and revisions), and a co_action window is
hours long. Each stage (``detect-<detector>``, ``link``) belongs to its partition and
snapshots to its own topic ``<app_id>.snapshots.<stage>`` (one partition, chunks of 512 KiB,
read from the tail) every ``snapshot_interval_s``, with the next offset of each partition it
has taken input from (its own, and for a detector the event partitions behind it) and, for
link, the alerts topic's end offsets. Input is acked to Faust only once a snapshot holding it
is written, so the committed offset never passes the snapshot. When a rebalance revokes a
partition its stage is dropped at once (under the lock snapshots take, so none is written
after), and whichever worker gets the partition restores the newest snapshot, skips input
below its offsets and (link) reads the alerts topic from the recorded offsets into a seen-id
set: alert ids are deterministic from group and revision, so those already published are not
sent again. Dead letters are at-least-once: a crash may repeat up to one interval's. A
graceful stop is treated like a crash (no final snapshot: agents are cancelled mid-batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import faust
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP, EventT, StreamT
from prometheus_client import Counter, Gauge

from detectors.base import Alert
from detectors.events import Event, Rejection, parse_message, parse_messages
from detectors.pipeline import AlertOrder, Detection, enabled_detectors, json_tick, lateness_of, tick_json, tune_gc
from streams.broker import aiokafka_settings, faust_settings
from streams.config import Config
from streams.worker import fatal, started_ago

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
#: the most input bytes framed into one work-topic message: a detector's cost per call falls
#: with the batch (in-process, 300 k events: 1.89 s in batches of 10 k events, 2.61 s of 1.7 k)
FRAME_BYTES = 4 << 20
STAGE_WITHIN_S = 0.005  # the detect and link agents' batch wait (see create_app)
def max_message_bytes(config: Config) -> int:
    """The largest message the worker sends: a frame of ``FRAME_BYTES`` plus one input message."""
    return FRAME_BYTES + config.events.max_event_bytes + (64 << 10)


#: dead letters larger than this are cut (header ``truncated_from``): Kafka's default
#: message limit is 1 MB and the DLQ must never fail on the message it exists for.
DLQ_MAX_BYTES = 900 * 1024
SNAPSHOT_VERSION = 2
T = TypeVar("T")

EVENTS = Counter("coordwatch_events", "valid events handed to the detectors (counted once, by the first detector's stage)")
MESSAGES = Counter("coordwatch_messages", "input messages ingested (after a crash, re-read ones count again)")
REJECTED = Counter("coordwatch_rejected", "rejected input sent to the dead-letter topic", ["reason"])
ALERTS = Counter("coordwatch_alerts", "alerts published", ["type"])
SUPPRESSED = Counter("coordwatch_alerts_suppressed", "alerts not re-published after a restart (already on the topic)")
OUT_OF_ORDER = Counter("coordwatch_out_of_order", "stage input skipped ahead of its next offset (re-read in order)")
LAG = Gauge("coordwatch_lag", "messages behind the partition end", ["topic", "partition"])
STATE_BYTES = Gauge("coordwatch_pipeline_state_bytes", "size of the last snapshot, per stage", ["stage"])
SNAPSHOT_SECONDS = Gauge("coordwatch_snapshot_seconds", "time the last snapshot took, per stage", ["stage"])
WATERMARK = Gauge("coordwatch_event_time", "newest event time seen (unix seconds)")


def worker_dir(config: Config, worker_id: str) -> Path:
    return Path(config.kafka.data_dir) / worker_id


def snapshot_topic(config: Config, stage: str) -> str:
    return f"{config.kafka.app_id}.snapshots.{stage}"


@dataclass
class Snapshot:
    """Pipeline state plus where it stands: input offsets and the alerts topic's end."""

    state: bytes
    offsets: dict[tuple[str, int], int]  # (topic, partition) -> next offset not in ``state``
    alert_offsets: dict[int, int]  # alerts partition -> end offset before the state was taken
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        head = orjson.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
                "alert_offsets": {str(p): o for p, o in self.alert_offsets.items()},
                **self.meta,
            }
        )
        return struct.pack(">I", len(head)) + head + self.state

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        (n,) = struct.unpack_from(">I", data)
        head = orjson.loads(data[4 : 4 + n])
        if head.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {head.get('version')} (this worker reads {SNAPSHOT_VERSION})")
        offsets = {(t, p): o for t, p, o in head.pop("offsets")}
        alert_offsets = {int(p): o for p, o in head.pop("alert_offsets").items()}
        return cls(data[4 + n :], offsets, alert_offsets, head)


class SnapshotStore:
    """A stage's snapshots on its own single-partition topic, read back from the tail."""

    def __init__(self, config: Config, stage: str, app: faust.App) -> None:
        self.config = config
        self.topic = snapshot_topic(config, stage)
        self.app = app
        self.client_id = f"coordwatch-{stage}-state"
        self.reader: AIOKafkaConsumer = None  # type: ignore[assignment]  # needs the running loop
        self.alert_partitions: list[TopicPartition] = []

    async def start(self) -> None:
        self.reader = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, client_id=self.client_id,
            fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20,
            **aiokafka_settings(self.config.kafka),
        )  # fmt: skip
        await self.reader.start()
        # now, while nothing is assigned: afterwards the client's metadata covers only
        # the assigned topics. (Partitions added to the alerts topic later are not seen.)
        await self.reader.topics()
        topic = self.config.topics.alerts
        self.alert_partitions = [
            TopicPartition(topic, p) for p in sorted(self.reader.partitions_for_topic(topic) or ())
        ]
        if not self.alert_partitions:
            raise RuntimeError(f"no partitions found for the alerts topic {topic!r}")

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()

    async def save(self, snap: Snapshot) -> int:
        """Write ``snap`` as chunks ``i/n`` of one id; returns its size once it is stored."""
        data = snap.to_bytes()
        sid = uuid.uuid4().hex.encode()
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        futures = [
            await self.app.producer.send(
                self.topic, sid, chunk, 0, None, [("sid", sid), ("chunk", f"{i}/{len(chunks)}".encode())]
            )
            for i, chunk in enumerate(chunks)
        ]
        await asyncio.gather(*futures)
        return len(data)

    async def load(self) -> Snapshot | None:
        """The newest complete snapshot (a torn write at the tail is stepped over)."""
        tp = TopicPartition(self.topic, 0)
        self.reader.assign([tp])
        last = await self._end(tp) - 1
        while last >= 0:
            (tail,) = await self._read(tp, last, 1)
            i, n = _chunk(tail)
            if i == n - 1 and last - i >= 0:
                msgs = await self._read(tp, last - i, n)
                if [_chunk(m) for m in msgs] == [(k, n) for k in range(n)] and len({m.key for m in msgs}) == 1:
                    return Snapshot.from_bytes(b"".join(m.value or b"" for m in msgs))
            last -= i + 1
        return None

    async def _end(self, tp: TopicPartition) -> int:
        """The end offset, confirmed by reading: Tansu 0.6 reports the end of a partition
        whose last write was a multi-record batch as that batch's base offset + 1."""
        end = (await self.reader.end_offsets([tp]))[tp]
        if end:
            self.reader.seek(tp, end - 1)
            while batch := await self.reader.getmany(tp, timeout_ms=300):
                end = batch[tp][-1].offset + 1
        return end

    async def _read(self, tp: TopicPartition, start: int, n: int) -> list[Any]:
        self.reader.seek(tp, start)
        out: list[Any] = []
        while len(out) < n:
            batch = await self.reader.getmany(tp, timeout_ms=10_000, max_records=n - len(out))
            if not batch:
                raise RuntimeError(f"{self.topic}: no message at offset {start + len(out)} within 10 s")
            out += batch[tp]
        return out

    async def alert_end_offsets(self) -> dict[int, int]:
        ends = await self.reader.end_offsets(self.alert_partitions)
        return {tp.partition: o for tp, o in ends.items()}

    async def alert_ids_since(self, offsets: dict[int, int]) -> set[str]:
        """Ids of the alerts published at or after ``offsets`` (to the current end)."""
        ends = await self.reader.end_offsets(self.alert_partitions)
        todo = {tp: offsets.get(tp.partition, 0) for tp, end in ends.items() if offsets.get(tp.partition, 0) < end}
        seen: set[str] = set()
        if not todo:
            return seen
        self.reader.assign(list(todo))
        for tp, start in todo.items():
            self.reader.seek(tp, start)
        while todo:
            for tp, msgs in (await self.reader.getmany(*todo, timeout_ms=10_000)).items():
                seen.update(orjson.loads(m.value)["alert_id"] for m in msgs)
                if msgs[-1].offset + 1 >= ends[tp]:
                    todo.pop(tp, None)
        return seen


def _chunk(msg: Any) -> tuple[int, int]:
    value = dict(msg.headers or ()).get("chunk", b"0/0").decode()
    i, n = value.split("/")
    return int(i), int(n)




def work_topic(config: Config) -> str:
    return f"{config.kafka.app_id}.work"


def link_topic(config: Config) -> str:
    return f"{config.kafka.app_id}.link"


def detector_names(config: Config) -> list[str]:
    """The enabled detectors: work partition ``u`` is the ``u``-th."""
    return [d.NAME for d in enabled_detectors(config)]


def stage_names(config: Config) -> list[str]:
    return [f"detect-{name}" for name in detector_names(config)] + ["link"]


def internal_topics(config: Config) -> dict[str, int]:
    """Topic name -> partitions of the topics between and beside the agents."""
    return {
        work_topic(config): len(detector_names(config)),
        link_topic(config): 1,
        **{snapshot_topic(config, s): 1 for s in stage_names(config)},
    }


# -- frames: input messages with their offsets and keys, one work-topic message ----------
_HEAD = struct.Struct(">I")


def pack_frames(offsets: Sequence[int], keys: Sequence[bytes | None], values: Sequence[bytes]) -> bytes:
    """``n``, ``n`` offsets (int64), key and value lengths (uint32; a missing key is
    0xFFFFFFFF), then the keys and the values back to back."""
    klen = [0xFFFFFFFF if k is None else len(k) for k in keys]
    head = b"".join(np.array(x, dtype=d).tobytes() for x, d in
                    ((offsets, ">i8"), (klen, ">u4"), ([len(v) for v in values], ">u4")))  # fmt: skip
    return _HEAD.pack(len(values)) + head + b"".join(k or b"" for k in keys) + b"".join(values)


def unpack_frames(data: bytes) -> tuple[list[int], list[bytes | None], list[bytes]]:
    (n,) = _HEAD.unpack_from(data)
    offsets = np.frombuffer(data, dtype=">i8", count=n, offset=4).tolist()
    klen = np.frombuffer(data, dtype=">u4", count=n, offset=4 + 8 * n).astype(np.int64)
    vlen = np.frombuffer(data, dtype=">u4", count=n, offset=4 + 12 * n).astype(np.int64)
    none = klen == 0xFFFFFFFF
    klen[none] = 0
    ends = np.cumsum(np.concatenate((klen, vlen))).tolist()
    base = 4 + 16 * n
    parts = [data[base + a : base + b] for a, b in zip([0, *ends[:-1]], ends)]
    keys = [None if nk else k for nk, k in zip(none.tolist(), parts[:n])]
    return offsets, keys, parts[n:]


def _header(msg: Any, name: str) -> bytes:
    return dict(msg.headers or ()).get(name, b"")


@dataclass
class Out:
    """What handling input produced, to send from the event loop: (topic, key, value, partition, headers)."""

    sends: list[tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Stage:
    """One partition's state (a detector, or the linking), snapshotted to its own topic."""

    def __init__(self, config: Config, name: str, tp: TP, app: faust.App) -> None:
        self.config, self.name, self.tp, self.app = config, name, tp, app
        self.store = SnapshotStore(config, name, app)
        self.offsets: dict[tuple[str, int], int] = {}  # next offset not in the state, per partition read
        self.pending: list[EventT] = []  # consumed, in the state, not yet in a snapshot: unacked
        self.sent: list[Awaitable[Any]] = []  # deliveries caused by pending input
        self.fresh = False  # started without a snapshot and has taken nothing yet

    @property
    def next_offset(self) -> int:
        return self.offsets.get((self.tp.topic, self.tp.partition), 0)

    def handle(self, msg: Any, value: bytes) -> Out:
        """One input message (already known to be new): the state moves on."""
        self.offsets[(self.tp.topic, self.tp.partition)] = msg.offset + 1
        return self._handle(msg, value)

    def _handle(self, msg: Any, value: bytes) -> Out:
        raise NotImplementedError

    def state(self) -> bytes:
        raise NotImplementedError

    def load(self, state: bytes) -> None:
        raise NotImplementedError

    async def restored(self, snap: Snapshot | None) -> None:
        """After :meth:`load` (or with nothing to load): anything more to fetch."""

    def alert_offsets_needed(self) -> bool:
        return False

    @property
    def stats(self) -> Any:
        return {}


Parsed = tuple[list[Event], list[tuple[int, Rejection]]]
Parse = Callable[[tuple[str, int], list[int], list[bytes]], Parsed]


class ParseCache:
    """The parse of the last few frames: every detector stage gets a copy of each frame, and
    those on one worker parse it once (parsing was 42 % of a worker's CPU with three parses)."""

    SIZE = 64

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._done: OrderedDict[tuple[Any, ...], Parsed] = OrderedDict()

    def __call__(self, src: tuple[str, int], offsets: list[int], values: list[bytes]) -> Parsed:
        key = (src, offsets[0], offsets[-1], len(offsets))
        if (hit := self._done.get(key)) is not None:
            self._done.move_to_end(key)
            return hit
        parsed = self._done[key] = parse_messages(values, self.max_bytes)  # type: ignore[assignment]
        if len(self._done) > self.SIZE:
            self._done.popitem(last=False)
        return parsed


class DetectStage(Stage):
    """Work partition ``u``: detector ``u`` over every event; the first one also dead-letters rejections."""

    def __init__(self, config: Config, tp: TP, app: faust.App, parse: Parse) -> None:
        dets = enabled_detectors(config)
        det = dets[tp.partition]
        super().__init__(config, f"detect-{det.NAME}", tp, app)
        self.detector = det.NAME
        self.parse = parse
        self.primary = tp.partition == 0  # counts events and reports rejections, once
        self.detection = Detection([det], config.linking.tick_s, lateness_of(dets))

    def _handle(self, msg: Any, value: bytes) -> Out:
        src = (_header(msg, "source_topic").decode(), int(_header(msg, "source_partition") or 0))
        offsets, keys, values = unpack_frames(value)
        done = self.offsets.get(src, 0)
        if offsets and offsets[0] < done:  # re-sent by an ingest that restarted: take the new part
            keep = [i for i, o in enumerate(offsets) if o >= done]
            offsets, keys, values = ([x[i] for i in keep] for x in (offsets, keys, values))
        out = Out()
        if not offsets:
            return out
        self.offsets[src] = offsets[-1] + 1
        events, rejected = self.parse(src, offsets, values)
        if self.primary:
            EVENTS.inc(len(events))
            for i, r in rejected:
                out.sends.append(dead_letter(self.config, src, offsets[i], keys[i], None, r))
        late = self.detection.add(events)  # type: ignore[arg-type]
        for e in late:
            r = self.detection.late_rejection(e)
            out.sends.append(dead_letter(self.config, src, None, None, self.detector, r))
        before = self.detection.closed
        found = self.detection.advance(self.detection.newest)
        if self.primary and events:
            WATERMARK.set(self.detection.newest)
        if self.detection.closed > before:
            # a JSON head line, then one alert per line (their canonical bytes, as published)
            head = {"detector": self.detector, "offset": msg.offset, "closed": tick_json(self.detection.closed),
                    "at": [a.at for a in found]}  # fmt: skip
            body = b"\n".join([orjson.dumps(head), *(a.to_json() for a in found)])
            out.sends.append((link_topic(self.config), self.detector.encode(), body, 0, None))
        return out

    def state(self) -> bytes:
        return self.detection.snapshot()

    def load(self, state: bytes) -> None:
        self.detection.restore(state)

    @property
    def stats(self) -> Any:
        return self.detection.stats


class LinkStage(Stage):
    """The link partition: every detector's alerts, linked in one order, published once."""

    def __init__(self, config: Config, tp: TP, app: faust.App) -> None:
        super().__init__(config, "link", tp, app)
        names = detector_names(config)
        self.work = work_topic(config)
        self.partition_of = {name: u for u, name in enumerate(names)}
        self.order = AlertOrder(names, names, config.linking)
        self.seen: set[str] = set()  # alert ids already on the alerts topic (after a restart)

    def _handle(self, msg: Any, value: bytes) -> Out:
        lines = value.split(b"\n")
        body = orjson.loads(lines[0])
        source = (self.work, self.partition_of[body["detector"]])
        out = Out()
        if body["offset"] < self.offsets.get(source, 0):
            return out  # sent again by a detector stage resumed from an older snapshot
        self.offsets[source] = body["offset"] + 1
        found = [Alert.from_json(a, at) for a, at in zip(lines[1:], body["at"])]
        out.alerts = self.order.offer(body["detector"], json_tick(body["closed"]), found)
        return out

    def state(self) -> bytes:
        return self.order.snapshot()

    def load(self, state: bytes) -> None:
        self.order.restore(state)

    async def restored(self, snap: Snapshot | None) -> None:
        if snap is not None:
            self.seen = await self.store.alert_ids_since(snap.alert_offsets)
            log.info("link: %d alert ids already published after the snapshot", len(self.seen))

    def alert_offsets_needed(self) -> bool:
        return True


def dead_letter(
    config: Config, src: tuple[str, int], offset: int | None, key: bytes | None, detector: str | None, r: Rejection
) -> tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]]]:
    """A rejection as a dead-letter send (the rejected bytes, cut at ``DLQ_MAX_BYTES``)."""
    REJECTED.labels(r.reason).inc()
    value = r.raw
    headers = [("source_topic", src[0].encode()), ("source_partition", str(src[1]).encode())]
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


class Runner:
    """The worker's stages (one per assigned work or link partition), their one CPU thread, snapshots."""

    def __init__(self, config: Config, worker_id: str, app: faust.App) -> None:
        self.config, self.worker_id, self.app = config, worker_id, app
        self.stages: dict[TP, Stage] = {}
        self.streams: dict[str, StreamT] = {}
        self.parse = ParseCache(config.events.max_event_bytes)
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")  # the only one touching state
        tune_gc()

    # -- ingest ----------------------------------------------------------------------
    async def ingest(self, events: Sequence[EventT]) -> None:
        """Frame a batch of input messages per partition, send a copy to every detector, ack."""
        by_tp: dict[TP, tuple[list[int], list[bytes | None], list[bytes]]] = {}
        max_bytes = self.config.events.max_event_bytes
        futures: list[Awaitable[Any]] = []
        MESSAGES.inc(len(events))
        for ev in events:
            msg, value = ev.message, ev.value or b""
            if len(value) > max_bytes:  # never framed: the work topic's messages stay bounded
                (r,) = parse_message(value, max_bytes)
                futures.append(await self._send(dead_letter(self.config, (msg.topic, msg.partition), msg.offset, msg.key, None, r)))  # type: ignore[arg-type]
                continue
            offsets, keys, values = by_tp.setdefault(msg.tp, ([], [], []))
            offsets.append(msg.offset)
            keys.append(msg.key)
            values.append(value)
        topic, parts = work_topic(self.config), len(detector_names(self.config))
        for tp, (offsets, keys, values) in by_tp.items():
            headers = [("source_topic", tp.topic.encode()), ("source_partition", str(tp.partition).encode())]
            for lo, hi in _chunks([len(v) + len(k or b"") for k, v in zip(keys, values)], FRAME_BYTES):
                frame = pack_frames(offsets[lo:hi], keys[lo:hi], values[lo:hi])
                for u in range(parts):
                    futures.append(await self._send((topic, None, frame, u, headers)))
            LAG.labels(tp.topic, str(tp.partition)).set(max(self.app.consumer.highwater(tp) - offsets[-1] - 1, 0))
        await asyncio.gather(*futures)
        stream = self.streams["ingest"]
        for ev in events:
            await stream.ack(ev)

    # -- detect and link -------------------------------------------------------------
    async def handle(self, kind: str, events: Sequence[EventT]) -> None:
        """A batch of work or link messages: each to the stage of its partition, in order."""
        async with self._lock:
            todo: list[tuple[Stage, Any, bytes]] = []
            expect: dict[TP, int] = {}
            for ev in events:
                msg = ev.message
                stage = self.stages.get(msg.tp) or await self._start(kind, msg.tp)
                if stage is None:
                    continue  # the partition was revoked while the message waited
                nxt = expect.get(msg.tp, stage.next_offset)
                if stage.fresh:  # no snapshot, nothing taken yet: the log starts here
                    nxt, stage.fresh = msg.offset, False
                if msg.offset > nxt:
                    # fetched before a rebalance gave the partition back to this worker: Faust
                    # re-reads from the committed offset, so it comes again, in order
                    OUT_OF_ORDER.inc()
                    continue
                stage.pending.append(ev)
                if msg.offset == nxt:  # else: in the restored state already
                    todo.append((stage, msg, ev.value or b""))
                    expect[msg.tp] = nxt + 1
            outs = await self._cpu(lambda: [(st, st.handle(m, v)) for st, m, v in todo])
            for stage, out in outs:
                for send in out.sends:
                    stage.sent.append(await self._send(send))
                for a in out.alerts:
                    if isinstance(stage, LinkStage) and a.alert_id in stage.seen:
                        SUPPRESSED.inc()
                        continue
                    ALERTS.labels(a.type).inc()
                    stage.sent.append(
                        await self._send((self.config.topics.alerts, a.group_id.encode(), a.to_json(), None, None))
                    )

    async def _start(self, kind: str, tp: TP) -> Stage | None:
        """The stage of a newly assigned partition, from its newest snapshot (or a first one)."""
        if tp not in self.app.consumer.assignment():
            return None
        stage: Stage = (DetectStage(self.config, tp, self.app, self.parse) if kind == "detect"
                        else LinkStage(self.config, tp, self.app))  # fmt: skip
        t0 = time.perf_counter()
        await stage.store.start()
        snap = await stage.store.load()
        if snap is None:
            alert_offsets = await stage.store.alert_end_offsets() if stage.alert_offsets_needed() else {}
            await stage.store.save(Snapshot(await self._cpu(stage.state), {}, alert_offsets, self._meta(stage)))
            stage.fresh = True
            log.info("%s: no snapshot on %s, starting empty", stage.name, stage.store.topic)
        else:
            await self._cpu(stage.load, snap.state)
            stage.offsets = dict(snap.offsets)
            log.info("%s: restored %s (%d bytes) in %.2f s", stage.name, stage.store.topic, len(snap.state),
                     time.perf_counter() - t0)  # fmt: skip
        await stage.restored(snap)
        self.stages[tp] = stage
        return stage

    async def revoked(self, tps: set[TP]) -> None:
        """Drop the stages of revoked partitions: their new owner resumes from the last snapshot."""
        async with self._lock:
            for tp in tps:
                stage = self.stages.pop(tp, None)
                if stage is not None:
                    log.info("%s: partition %s revoked, state dropped", stage.name, tp)
                    await stage.store.stop()
                    for gauge in (STATE_BYTES, SNAPSHOT_SECONDS):
                        with contextlib.suppress(KeyError):
                            gauge.remove(stage.name)

    async def checkpoint(self) -> None:
        """Snapshot each stage with new input, then ack the input it covers (Faust commits it)."""
        for tp in list(self.stages):
            try:
                await self._checkpoint(tp)
            except KafkaError as exc:  # the broker is away: keep the input unacked, try next time
                log.warning("snapshot skipped, broker not answering: %r", exc)
                return

    async def _checkpoint(self, tp: TP) -> None:
        t0 = time.perf_counter()
        async with self._lock:
            stage = self.stages.get(tp)
            if stage is None or not stage.pending:
                return
            # before capturing: alerts of later input land after these offsets
            alert_offsets = await stage.store.alert_end_offsets() if stage.alert_offsets_needed() else {}
            covered, stage.pending = stage.pending, []
            sent, stage.sent = stage.sent, []
            snap = Snapshot(await self._cpu(stage.state), dict(stage.offsets), alert_offsets, self._meta(stage))
            await asyncio.gather(*sent)  # what the covered input caused is stored first (or this raises)
            size = await stage.store.save(snap)  # under the lock: never after the partition is revoked
        stream = self.streams["link" if isinstance(stage, LinkStage) else "detect"]
        for ev in covered:
            await stream.ack(ev)
        STATE_BYTES.labels(stage.name).set(size)
        SNAPSHOT_SECONDS.labels(stage.name).set(time.perf_counter() - t0)
        LAG.labels(tp.topic, str(tp.partition)).set(max(self.app.consumer.highwater(tp) - stage.next_offset, 0))

    async def stop(self) -> None:
        for stage in self.stages.values():
            await stage.store.stop()

    async def _send(self, send: tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]) -> Awaitable[Any]:
        topic, key, value, partition, headers = send
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run stage work on its one thread, so Faust's fetcher keeps reading ahead (up
        to ``stream_buffer_maxsize`` messages) while it runs. On the event loop it starves:
        records aiokafka holds longer than its ``prefetch_backoff`` (0.1 s) let it send the
        next fetch for the other partition of the node, Faust's empty
        ``<app>-__assignor-__leader``, which the broker long-polls for Faust's hard-coded
        ``fetch_max_wait_ms=1500`` while the input partition waits (traced: ~1 s with 0
        records every 4-5 batches). Measured, 100-event envelopes, same runs: 1 M events,
        on the loop 25 k events/s at 0.38 cores, here 70 k at 0.9; 300 k events, on the
        loop 26 k, on the loop with fetch_max_wait_ms=20 73 k (``coordwatch bench stream``)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _meta(self, stage: Stage) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "stage": stage.name, "written": time.time(), "stats": stage.stats}


def _chunks(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Cut a run of values into consecutive (lo, hi) slices of at most ``limit`` bytes (a larger value alone)."""
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > limit:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    out.append((lo, len(sizes)))
    return out


def short_fetch_polls(wait_ms: int) -> None:
    """Make Faust's worker consumer long-poll ``wait_ms``, not its fixed 1500 ms.

    A fetch asks for the assigned partitions whose records the app has taken; those the agents
    still hold are left out. With three agents on five topics, a fetch often covers only
    partitions with nothing new (the link topic between ticks, Faust's assignor topic), and
    the broker holds it for the whole wait, during which nothing is fetched for the others
    (Tansu answers at the end of the wait, not when data arrives). Measured with ``coordwatch
    bench stream --quick``: one worker at 0.55 cores and 22 k events/s with 1500 ms."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    create = getattr(thread, "_coordwatch_create", thread._create_worker_consumer)

    def _create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts its fetcher
        return consumer

    thread._coordwatch_create = create  # type: ignore[attr-defined]
    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def create_app(config: Config, worker_id: str) -> tuple[faust.App, Runner]:
    """The Faust app for one worker (its three agents, snapshot timer and settings)."""
    k = config.kafka
    app = faust.App(
        k.app_id,
        **faust_settings(k),
        autodiscover=False,
        datadir=str(worker_dir(config, worker_id) / "faust"),
        web_enabled=False,  # metrics are served by prometheus-client (see streams.worker)
        store="memory://",
        processing_guarantee="at_least_once",
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=min(3.0, k.session_timeout_s / 3),
        broker_commit_interval=k.commit_interval_s,
        broker_max_poll_records=k.max_poll_records,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # input stays unacked until the next snapshot: never wait for it
        topic_partitions=config.topics.partitions,
        topic_replication_factor=config.topics.replication_factor,
        producer_max_request_size=max_message_bytes(config),
        consumer_max_fetch_size=max_message_bytes(config),
        producer_linger=0.005,
    )
    short_fetch_polls(k.fetch_max_wait_ms)
    runner = Runner(config, worker_id, app)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(*config.topics.events, **raw)
    work = app.topic(work_topic(config), partitions=len(detector_names(config)), internal=True, **raw)
    link = app.topic(link_topic(config), partitions=1, internal=True, **raw)

    def agent(kind: str, handle: Callable[[Sequence[EventT]], Awaitable[None]],
              within: float) -> Callable[[StreamT], Awaitable[None]]:  # fmt: skip
        async def run(stream: StreamT) -> None:
            try:
                runner.streams[kind] = stream
                first = True
                async for events in stream.noack_take(k.batch_messages, within=within):
                    if first:
                        log.info("%s: first input consumed %.2f s after process start", kind, started_ago())
                        first = False
                    await handle(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fatal(exc)

        return run

    # Faust's take waits ``within`` for a full batch. Ingest batches input for the frames; the
    # stages take what has come: a frame already holds a batch, and waiting for 100 of them
    # held one worker at 40 k events/s, 60 % busy (300 k events; 0.02 s: 60 k)
    app.agent(source, name="coordwatch.ingest")(agent("ingest", runner.ingest, k.batch_within_s))
    app.agent(work, name="coordwatch.detect")(agent("detect", functools.partial(runner.handle, "detect"), STAGE_WITHIN_S))
    app.agent(link, name="coordwatch.link")(agent("link", functools.partial(runner.handle, "link"), STAGE_WITHIN_S))

    @app.timer(interval=k.snapshot_interval_s)
    async def snapshot_timer() -> None:
        try:
            await runner.checkpoint()
        except Exception as exc:
            fatal(exc)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: faust.App, revoked: set[TP], **_: Any) -> None:
        try:
            await runner.revoked(revoked)
        except Exception as exc:
            fatal(exc)

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **_: Any) -> None:
        await runner.stop()

    return app, runner
