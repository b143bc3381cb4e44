"""The Faust app: raw input messages in, dead letters and alerts out, state snapshotted.

Ingest: the agent reads the event topics as raw bytes, parses every message with
:func:`~detectors.events.parse_message` (single events and envelopes), sends each
:class:`~detectors.events.Rejection` to the dead-letter topic (the rejected bytes, the
source message's key, headers ``source_topic``, ``source_partition``, ``source_offset``,
``reason``, ``detail`` and ``index`` for an envelope element) and hands valid events,
``kafka.batch_messages`` messages at a time, to ONE :class:`~detectors.pipeline.Pipeline`
for everything this worker consumes. Alerts go to the alerts topic, key ``group_id``,
value ``Alert.to_json()``. (A pipeline per partition later: key ``self.pipeline`` by
``tp``; offsets already are.) Parsing and detection run on one dedicated thread, which
alone touches the pipeline: on the event loop they starved Faust's consumer thread.

Recovery: snapshots, not re-reading. Re-reading the window's span cannot reproduce the
state (a pipeline started mid-stream makes other groups and revisions), and a co_action
window is hours long. Every ``snapshot_interval_s`` the worker writes
``Pipeline.snapshot()`` together with, per input partition, the next offset not yet in
that state and the alerts topic's end offsets, to its own topic
``<app_id>.snapshots.<worker_id>`` (one partition, chunks of 512 KiB, read from the tail).
Input messages are acked to Faust only once a snapshot holding them is written, so the
committed offset never passes the snapshot. A restarted worker restores the newest
complete snapshot, skips input below its offsets (and anything it has processed since,
should a rebalance deliver it again), and reads the alerts topic from the recorded
offsets into a seen-id set: replaying up to one interval of input re-derives the same
alerts (ids are deterministic from group and revision), and those already published are
not sent again. Dead letters are at-least-once: a crash may repeat up to one interval's.
A graceful stop is treated like a crash (no final snapshot: agents are cancelled mid-batch).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP, EventT, StreamT
from prometheus_client import Counter, Gauge

from detectors.base import Alert
from detectors.events import Rejection, parse_message
from detectors.pipeline import Pipeline, tune_gc
from streams.broker import aiokafka_settings, faust_settings
from streams.config import Config
from streams.worker import fatal, started_ago

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
#: dead letters larger than this are cut (header ``truncated_from``): Kafka's default
#: message limit is 1 MB and the DLQ must never fail on the message it exists for.
DLQ_MAX_BYTES = 900 * 1024
SNAPSHOT_VERSION = 1
T = TypeVar("T")

EVENTS = Counter("coordwatch_events", "valid events handed to the pipeline")
MESSAGES = Counter("coordwatch_messages", "input messages consumed (skipped re-deliveries excluded)")
REJECTED = Counter("coordwatch_rejected", "rejected input sent to the dead-letter topic", ["reason"])
ALERTS = Counter("coordwatch_alerts", "alerts published", ["type"])
SUPPRESSED = Counter("coordwatch_alerts_suppressed", "alerts not re-published after a restart (already on the topic)")
LAG = Gauge("coordwatch_lag", "messages behind the partition end", ["topic", "partition"])
STATE_BYTES = Gauge("coordwatch_pipeline_state_bytes", "size of the last pipeline snapshot")
SNAPSHOT_SECONDS = Gauge("coordwatch_snapshot_seconds", "time the last snapshot took")
WATERMARK = Gauge("coordwatch_event_time", "newest event time seen (unix seconds)")


def worker_dir(config: Config, worker_id: str) -> Path:
    return Path(config.kafka.data_dir) / worker_id


def snapshot_topic(config: Config, worker_id: str) -> str:
    return f"{config.kafka.app_id}.snapshots.{worker_id}"


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
    """A worker's snapshots on its own single-partition topic, read back from the tail."""

    def __init__(self, config: Config, worker_id: str, app: faust.App) -> None:
        self.config = config
        self.topic = snapshot_topic(config, worker_id)
        self.app = app
        self.client_id = f"coordwatch-{worker_id}-state"
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


class Ingest:
    """The agent's work: parse, dead-letter, detect, publish, snapshot, restore."""

    def __init__(self, config: Config, worker_id: str, app: faust.App) -> None:
        self.config = config
        self.worker_id = worker_id
        self.app = app
        self.store = SnapshotStore(config, worker_id, app)
        self.pipeline = Pipeline.from_config(config)
        tune_gc()
        self.done: dict[TP, int] = {}  # next offset not yet in the pipeline, per input partition
        self.pending: list[EventT] = []  # consumed, in the pipeline, not yet in a snapshot: unacked
        self.sent: list[Awaitable[Any]] = []  # deliveries (alerts, dead letters) of pending input
        self.seen: set[str] = set()  # alert ids already on the alerts topic (after a restart)
        self.stream: StreamT | None = None
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")  # the only one touching it

    async def restore(self) -> None:
        """Resume from the newest snapshot, or write a first one (it fixes where the
        alerts topic stood, so a crash before the next snapshot still dedupes)."""
        await self.store.start()
        t0 = time.perf_counter()
        snap = await self.store.load()
        if snap is None:
            alert_offsets = await self.store.alert_end_offsets()
            state = await self._cpu(self.pipeline.snapshot)
            await self.store.save(Snapshot(state, {}, alert_offsets, self._meta()))
            log.info("no snapshot on %s: starting empty", self.store.topic)
        else:
            await self._cpu(self.pipeline.restore, snap.state)
            self.done = {TP(t, p): o for (t, p), o in snap.offsets.items()}
            self.seen = await self.store.alert_ids_since(snap.alert_offsets)
            log.info(
                "restored %s (%d bytes, %d partitions, %d alert ids already published) in %.2f s",
                self.store.topic, len(snap.state), len(snap.offsets), len(self.seen), time.perf_counter() - t0,
            )  # fmt: skip
        self.ready.set()

    async def handle(self, events: Sequence[EventT]) -> None:
        """One batch of input messages (left unacked until a snapshot covers them)."""
        async with self._lock:
            todo = []
            for ev in events:
                self.pending.append(ev)
                msg = ev.message
                if msg.offset < self.done.get(msg.tp, 0):
                    continue  # in the restored state already, or a re-delivery
                self.done[msg.tp] = msg.offset + 1
                todo.append((msg, ev.value or b""))
            MESSAGES.inc(len(todo))
            rejected, alerts = await self._cpu(self._detect, todo)
            for msg, r in rejected:
                await self._dead_letter(msg, r)
            await self._publish(alerts)

    def _detect(self, todo: list[tuple[Any, bytes]]) -> tuple[list[tuple[Any, Rejection]], list[Alert]]:
        """Parse and detect (on the pipeline thread); rejects and late events with their message."""
        rejected = []
        max_bytes = self.config.events.max_event_bytes
        pipeline, n = self.pipeline, 0
        for msg, value in todo:
            events = []
            for item in parse_message(value, max_bytes):
                if type(item) is Rejection:
                    rejected.append((msg, item))
                else:
                    events.append(item)
            n += len(events)
            rejected += [(msg, pipeline.late_rejection(e)) for e in pipeline.add(events)]  # type: ignore[arg-type]
        if not n:
            return rejected, []
        EVENTS.inc(n)
        WATERMARK.set(pipeline.newest)
        return rejected, pipeline.advance(pipeline.newest)

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run pipeline work on its one thread, so Faust's fetcher keeps reading ahead (up
        to ``stream_buffer_maxsize`` messages) while it runs. On the event loop it starves:
        records aiokafka holds longer than its ``prefetch_backoff`` (0.1 s) let it send the
        next fetch for the other partition of the node, Faust's empty
        ``<app>-__assignor-__leader``, which the broker long-polls for Faust's hard-coded
        ``fetch_max_wait_ms=1500`` while the input partition waits (traced: ~1 s with 0
        records every 4-5 batches). Measured, 100-event envelopes, same runs: 1 M events,
        on the loop 25 k events/s at 0.38 cores, here 70 k at 0.9; 300 k events, on the
        loop 26 k, on the loop with fetch_max_wait_ms=20 73 k (``coordwatch bench stream``)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _dead_letter(self, msg: Any, r: Rejection) -> None:
        REJECTED.labels(r.reason).inc()
        value = r.raw
        headers = [
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
            ("reason", r.reason.encode()),
            ("detail", r.detail.encode()),
        ]
        if r.index is not None:
            headers.append(("index", str(r.index).encode()))
        if len(value) > DLQ_MAX_BYTES:
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[:DLQ_MAX_BYTES]
        self.sent.append(
            await self.app.producer.send(self.config.topics.dead_letter, msg.key, value, None, None, headers)
        )

    async def _publish(self, alerts: list[Alert]) -> None:
        for a in alerts:
            if a.alert_id in self.seen:
                SUPPRESSED.inc()
                continue
            ALERTS.labels(a.type).inc()
            self.sent.append(
                await self.app.producer.send(
                    self.config.topics.alerts, a.group_id.encode(), a.to_json(), None, None, None
                )
            )

    async def checkpoint(self) -> None:
        """Snapshot state + offsets, then ack the input it covers (Faust commits it)."""
        if not self.ready.is_set() or self.stream is None:
            return
        t0 = time.perf_counter()
        try:  # before capturing: alerts of later input land after these offsets
            alert_offsets = await self.store.alert_end_offsets()
        except KafkaError as exc:  # the broker is away: keep the input unacked, try next time
            log.warning("snapshot skipped, broker not answering: %r", exc)
            return
        async with self._lock:
            if not self.pending:
                return
            covered, self.pending = self.pending, []
            sent, self.sent = self.sent, []
            state = await self._cpu(self.pipeline.snapshot)
            snap = Snapshot(
                state, {(tp.topic, tp.partition): o for tp, o in self.done.items()}, alert_offsets, self._meta()
            )
        await asyncio.gather(*sent)  # the covered input's alerts are stored first (or this raises)
        size = await self.store.save(snap)
        for ev in covered:
            await self.stream.ack(ev)
        STATE_BYTES.set(size)
        SNAPSHOT_SECONDS.set(time.perf_counter() - t0)
        for tp, nxt in self.done.items():
            LAG.labels(tp.topic, str(tp.partition)).set(max(self.app.consumer.highwater(tp) - nxt, 0))

    def _meta(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "written": time.time(), "stats": self.pipeline.stats}


def create_app(config: Config, worker_id: str) -> tuple[faust.App, Ingest]:
    """The Faust app for one worker (its agent, snapshot timer and settings)."""
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
        producer_max_request_size=2 * CHUNK_BYTES,
        producer_linger=0.005,
    )
    ingest = Ingest(config, worker_id, app)
    source = app.topic(*config.topics.events, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="coordwatch.ingest")
    async def ingest_agent(stream: StreamT) -> None:
        try:
            ingest.stream = stream
            await ingest.restore()
            first = True
            async for events in stream.noack_take(k.batch_messages, within=k.batch_within_s):
                if first:
                    log.info("first input consumed %.2f s after process start", started_ago())
                    first = False
                await ingest.handle(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(exc)

    @app.timer(interval=k.snapshot_interval_s)
    async def snapshot_timer() -> None:
        try:
            await ingest.checkpoint()
        except Exception as exc:
            fatal(exc)

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **_: Any) -> None:
        await ingest.store.stop()

    return app, ingest
