"""The Faust app: input in, the detectors spread over the workers, alerts out, state snapshotted.

Three stages, each on its own topic, so that N workers in one group compute exactly what one does:

* **ingest** reads the event topics (raw bytes, any number of partitions and workers) with
  aiokafka in a consumer group of its own, not through a Faust agent, which costs ~100 µs a
  message (:mod:`streams.ingest`). It frames the input messages of a batch with their
  offsets into frames per input partition (at most ``FRAME_BYTES``, a quarter if it routes)
  and sends each work partition its part of the frame, zstd-compressed once
  (:class:`~streams.stages.Framer`), then lets the reader commit the input.
  If a detector is split into shards, ingest parses each frame to route its events (on the
  worker's CPU thread, into the parse cache its detect stages share) and sends the
  rejections to the dead-letter topic (headers ``source_topic``, ``source_partition``,
  ``source_offset``, ``reason``, ``detail``, and ``index`` for an envelope element); else
  the stage of work partition 0 does. Messages larger than ``events.max_event_bytes`` go
  straight to the dead-letter topic. Every frame carries the high watermarks of all input
  partitions of this ingest, and every ``REPORT_EVERY_S`` ingest sends them alone (an empty
  frame): how the detect stages tell a partition that may still send older events from one
  with nothing new (``DetectStage``).
* **detect** (a Faust agent) reads the work topic: partition ``u`` is the ``u``-th work unit
  (:func:`~streams.stages.work_units`): a detector of :data:`~streams.stages.WORK_ORDER`
  (near_duplicate, co_action, burst) as one :class:`~detectors.pipeline.Detection` over
  every event, in event time, which gets the whole frame and parses it again unless its
  worker's ingest just did; or a shard of a keyed detector (``work.shards``: burst, by key),
  which gets only the events of its keys, already parsed, with the times of all; or a part
  of a split detector (``detectors.parts``: ``work.shards = {co_action = n}``, each part the
  actions on its objects; ``{near_duplicate = n}``, each part the LSH lookups of its bands),
  which reads every frame and sends its segments (a batch's findings, or an advance) to the
  partition merging the parts (:class:`~streams.stages.MergeStage`: a co_action group can
  join any objects, a near_duplicate cluster any texts, so that part is one unit). The stage skips input already in its
  state, and each time it closes ticks sends their alerts, unlinked, to the *link topic*
  ``<app_id>.link`` (one partition), stamped with its work offset (a merge: each time its
  parts' segments let it find alerts or move on). Late events are dead-lettered by each
  unit that never processed them (header ``detector``: ``burst``, ``burst.1`` for a shard,
  ``co_action`` once for all its parts).
* **link** (a Faust agent) reads the link topic: one :class:`~detectors.pipeline.AlertOrder` links the
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
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, EventT, StreamT

from detectors.events import parse_message
from detectors.pipeline import tune_gc
from streams.broker import aiokafka_settings, faust_settings
from streams.config import Config
from streams.ingest import InputReader, Records
from streams.metrics import (
    ALERTS,
    HELD,
    LAG,
    MERGE_WAITING,
    MESSAGES,
    MISSING,
    OUT_OF_ORDER,
    SNAPSHOT_SECONDS,
    STATE_BYTES,
    STORED_BYTES,
)
from streams.snapshots import Snapshot
from streams.stages import (
    FRAME_CODEC,
    FRAME_SPAN,
    DetectStage,
    Framer,
    LinkStage,
    MergeStage,
    ParseCache,
    Send,
    Stage,
    chunks,
    dead_letter,
    link_topic,
    max_message_bytes,
    pack_frames,
    pack_highwaters,
    pack_span,
    work_topic,
    work_units,
)
from streams.worker import fatal, started_ago

log = logging.getLogger(__name__)

#: the detect and link agents' batch wait: Faust's take waits this long for a full batch, and
#: a frame already holds one (waiting for 100 frames held one worker at 40 k events/s, 60 %
#: busy; 300 k events; 0.02 s: 60 k)
STAGE_WITHIN_S = 0.005
#: ... and takes at most this many work or link messages (``kafka.batch_messages`` if fewer):
#: a batch holds the stages' lock, which a rebalance's revocation waits for
STAGE_TAKE = 1000
#: how often ingest reports each of its input partitions' high watermark to the detect stages
#: (``streams.stages.DetectStage``: a partition with nothing new then holds back no tick)
REPORT_EVERY_S = 1.0
#: a stage whose new input changed no detection state (reports only) is snapshotted this rarely
IDLE_SNAPSHOT_S = 300.0
#: the fetch long poll of Faust's consumer (work and link topics): see :class:`_ConsumerThread`
FETCH_WAIT_MS = 100
#: a stage that skipped a message ahead of its next offset has Faust read the partition again
#: from that offset; if the gap is still there this long after, it asks again
REFETCH_S = 5.0
T = TypeVar("T")


def _first_input(kind: str) -> None:
    log.info("%s: first input consumed %.2f s after process start (event loop: %s)", kind, started_ago(),
             type(asyncio.get_running_loop()).__module__)  # fmt: skip


def worker_dir(config: Config, worker_id: str) -> Path:
    return Path(config.kafka.data_dir) / worker_id


class Runner:
    """The worker's stages (one per assigned work or link partition), their one CPU thread, snapshots."""

    def __init__(self, config: Config, worker_id: str, app: faust.App, sources: Sequence[tuple[str, int]]) -> None:
        self.config, self.worker_id, self.app = config, worker_id, app
        self.sources = list(sources)  # every input partition
        self.stages: dict[TP, Stage] = {}
        self.streams: dict[str, StreamT] = {}
        self.work_partitions = len(work_units(config))
        self.parse = ParseCache(config.events.max_event_bytes, config.events.max_ahead_s)
        self.framer = Framer(config, self.parse)
        self.input = InputReader(config, f"{config.kafka.app_id}-{worker_id}-ingest")
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")  # the only one touching state
        self._refetch: dict[TP, tuple[int, float]] = {}  # partition -> (offset sought, when)
        self._beyond: dict[TP, tuple[int, int]] = {}  # partition -> (its gap's first offset, the first message past it)
        tune_gc()

    # -- ingest ----------------------------------------------------------------------
    async def read_input(self) -> None:
        """Ingest's loop: batches of input records (:mod:`streams.ingest`, started with the
        app), framed and sent."""
        first = True
        # one batch in flight: the next is fetched and framed while the broker takes the last
        # (each waiting for the other, the detect stages ran short of frames)
        inflight: tuple[Awaitable[Any], Records] | None = None
        while True:
            records = await self.input.take()
            delivered = None
            if records:
                if first:
                    _first_input("ingest")
                    first = False
                delivered = asyncio.gather(*await self.ingest(records))
            if inflight is not None:
                await inflight[0]
                self.input.sent(inflight[1])
            inflight = (delivered, records) if delivered is not None else None
            await self.input.commit_due()  # also when idle: take returns within batch_within_s

    async def ingest(self, records: Records) -> list[Awaitable[Any]]:
        """Frame a batch of input records per partition, send a copy to every detector; the
        deliveries to wait for."""
        max_bytes = self.config.events.max_event_bytes
        futures: list[Awaitable[Any]] = []
        MESSAGES.inc(sum(map(len, records.values())))
        highwaters = await self.input.highwaters()
        for tp, batch in records.items():
            src = (tp.topic, tp.partition)
            offsets: list[int] = []
            keys: list[bytes | None] = []
            values: list[bytes] = []
            times: list[int] = []  # the records' timestamps (ms): events dated far after them are future_ts
            for msg in batch:
                value = msg.value or b""
                if len(value) > max_bytes:  # never framed: the work topic's messages stay bounded
                    (r,) = parse_message(value, max_bytes)
                    futures.append(await self._send(dead_letter(self.config, src, msg.offset, msg.key, None, r)))  # type: ignore[arg-type]
                    continue
                offsets.append(msg.offset)
                keys.append(msg.key)
                values.append(value)
                times.append(-1 if msg.timestamp is None else msg.timestamp)
            for lo, hi in chunks([len(v) + len(k or b"") for k, v in zip(keys, values)], self.framer.frame_bytes):
                part = (src, offsets[lo:hi], keys[lo:hi], values[lo:hi], times[lo:hi])
                # on the stages' thread if it parses (their parse cache), else here: zstd releases
                # the GIL, so here it compresses beside the detection, not after it
                frames, dead = await self._cpu(self.framer, *part) if self.framer.parses else self.framer(*part)
                futures += [await self._send(d) for d in dead]
                futures += await self._frame(frames, tp, highwaters, part[1])
            end = highwaters.get(src, (batch[-1].offset + 1,))[0]
            LAG.labels(tp.topic, str(tp.partition)).set(max(end - batch[-1].offset - 1, 0))
        return futures

    async def report(self) -> None:
        """The input partitions' high watermarks alone (an empty frame of no partition), for
        the detect stages to tell a partition with nothing new from one whose input is coming."""
        if highwaters := await self.input.highwaters():  # none if no input partition is assigned here
            empty = self.framer.alike(pack_frames([], [], [], []))
            await asyncio.gather(*await self._frame(empty, None, highwaters))

    async def _frame(self, frames: list[bytes | None], tp: TP | None,
                     highwaters: dict[tuple[str, int], tuple[int, float]],
                     offsets: list[int] | None = None) -> list[Awaitable[Any]]:  # fmt: skip
        """Send ``frames[u]`` (of the messages at ``offsets`` of input partition ``tp``:
        :class:`~streams.stages.Framer`) to work partition ``u``, with the high watermarks of
        this ingest's partitions (:meth:`InputReader.highwaters`): data fetched for one
        partition may come with news that another has more."""
        headers = [("highwaters", pack_highwaters(highwaters))]
        if tp is not None:  # a report carries no frame
            headers += [("source_topic", tp.topic.encode()), ("source_partition", str(tp.partition).encode()),
                        FRAME_CODEC, (FRAME_SPAN, pack_span(offsets or []))]  # fmt: skip
        topic = work_topic(self.config)
        return [await self._send((topic, None, frame, u, headers)) for u, frame in enumerate(frames) if frame is not None]

    # -- detect and link -------------------------------------------------------------
    async def handle(self, kind: str, events: Sequence[EventT]) -> None:
        """A batch of work or link messages: each to the stage of its partition, in order."""
        async with self._lock:
            todo: list[tuple[Stage, Any, bytes]] = []
            expect: dict[TP, int] = {}
            gaps: dict[TP, int] = {}
            for ev in events:
                msg = ev.message
                stage = self.stages.get(msg.tp) or await self._start(kind, msg.tp)
                if stage is None:
                    continue  # the partition was revoked while the message waited
                nxt = expect.get(msg.tp, stage.next_offset)
                if stage.fresh:  # no snapshot, nothing taken yet: the log starts here
                    nxt, stage.fresh = msg.offset, False
                if msg.offset > nxt:
                    if not await self._not_in_log(msg.tp, nxt, msg.offset):
                        OUT_OF_ORDER.inc()  # messages before it did not come: read them again
                        gaps.setdefault(msg.tp, nxt)
                        continue
                    nxt = msg.offset
                stage.pending.append(ev)
                if msg.offset == nxt:  # else: in the restored state already
                    todo.append((stage, msg, ev.value or b""))
                    expect[msg.tp] = nxt + 1
            await self._read_again(gaps)
            outs = await self._cpu(lambda: [(st, st.handle(m, v)) for st, m, v in in_step(todo)])
            for stage, out in outs:
                for send in out.sends:
                    stage.sent.append(await self._send(send))
                for a in out.alerts:
                    ALERTS.labels(a.type).inc()
                    stage.sent.append(
                        await self._send((self.config.topics.alerts, a.group_id.encode(), a.to_json(), None, None))
                    )

    async def _read_again(self, gaps: dict[TP, int]) -> None:
        """Seek each partition of ``gaps`` back to the offset its stage takes next. Faust drops
        messages it has fetched when a rebalance cuts in (it then re-reads from the committed
        offset), but it dropped some without one too (the bench's two workers: one run in ~10,
        155 messages skipped and the stage stuck for good). Messages fetched before the seek
        still come and are skipped; one seek per gap, again after ``REFETCH_S``. Offsets the
        log does not hold, the stage goes on without (:meth:`_not_in_log`)."""
        now = time.monotonic()
        for tp, offset in gaps.items():
            last = self._refetch.get(tp)
            if (last is None or last[0] != offset or now - last[1] >= REFETCH_S) and tp in self.app.consumer.assignment():
                log.warning("%s[%d]: offset %d never came, later ones did: reading on again from it",
                            tp.topic, tp.partition, offset)  # fmt: skip
                self._refetch[tp] = (offset, now)
                await self.app.consumer.seek(tp, offset)

    async def _not_in_log(self, tp: TP, nxt: int, offset: int) -> bool:
        """Whether the log holds no record from ``nxt`` to the message at ``offset`` that came
        in its place: asked only when that message comes again after a read from ``nxt``
        (:meth:`_read_again`), then checked with a fetch of our own, as Faust's drops look the
        same. Such offsets are a transaction's markers, or records removed by retention or
        compaction: the stage goes on without them (an error and ``coordwatch_missing_total``),
        where it would wait for them for good."""
        first = self._beyond.get(tp)
        if first is None or first[0] != nxt or offset < first[1]:
            self._beyond[tp] = (nxt, offset)  # the first message past the gap
            return False
        if offset > first[1]:  # still one fetched before the read from nxt
            return False
        found = await self._first_offset(tp, nxt)
        if found is None or found < offset:
            return False
        del self._beyond[tp]
        MISSING.inc(offset - nxt)
        log.error("%s[%d]: offsets %d to %d are not in the log (transaction markers, or records removed by "
                  "retention or compaction): going on from %d without them", tp.topic, tp.partition, nxt,
                  offset - 1, offset)  # fmt: skip
        return True

    async def _first_offset(self, tp: TP, offset: int) -> int | None:
        """The offset of the first record at or after ``offset`` on ``tp`` (None if none came
        within ``REFETCH_S``), read by a consumer of its own."""
        reader = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=1 << 20,
                                  client_id=f"{self.config.kafka.app_id}-{self.worker_id}-gap",
                                  **aiokafka_settings(self.config.kafka))  # fmt: skip
        await reader.start()
        try:
            part = AIOTopicPartition(tp.topic, tp.partition)
            reader.assign([part])
            reader.seek(part, offset)
            got = await reader.getmany(part, timeout_ms=int(REFETCH_S * 1000), max_records=1)
            records = got.get(part, [])
            return records[0].offset if records else None
        finally:
            await reader.stop()

    async def _start(self, kind: str, tp: TP) -> Stage | None:
        """The stage of a newly assigned partition, from its newest snapshot (or a first one)."""
        if tp not in self.app.consumer.assignment():
            return None
        stage: Stage
        if kind == "link":
            stage = LinkStage(self.config, tp, self.app)
        elif work_units(self.config)[tp.partition].role == "merge":
            stage = MergeStage(self.config, tp, self.app)
        else:
            stage = DetectStage(self.config, tp, self.app, self.parse, self.sources)
        t0 = time.perf_counter()
        await stage.store.start()
        snap = await stage.store.load()
        if snap is None:
            alert_offsets = await stage.alert_offsets()
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
                    for gauge in (STATE_BYTES, STORED_BYTES, SNAPSHOT_SECONDS, HELD, MERGE_WAITING):
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
            if not stage.dirty and time.monotonic() - stage.saved_at < IDLE_SNAPSHOT_S:
                return  # only reports came: nothing a restart would miss (it reads them again)
            # before capturing: alerts of later input land after these offsets
            alert_offsets = await stage.alert_offsets()
            covered, stage.pending = stage.pending, []
            sent, stage.sent = stage.sent, []
            snap = Snapshot(await self._cpu(stage.state), dict(stage.offsets), alert_offsets, self._meta(stage))
            await asyncio.gather(*sent)  # what the covered input caused is stored first (or this raises)
            size = await stage.store.save(snap)  # under the lock: never after the partition is revoked
            stage.dirty, stage.saved_at = False, time.monotonic()
        stream = self.streams[stage.KIND]
        for ev in covered:
            await stream.ack(ev)
        STATE_BYTES.labels(stage.name).set(len(snap.state))
        STORED_BYTES.labels(stage.name).set(size)
        SNAPSHOT_SECONDS.labels(stage.name).set(time.perf_counter() - t0)
        LAG.labels(tp.topic, str(tp.partition)).set(max(self.app.consumer.highwater(tp) - stage.next_offset, 0))

    async def stop(self) -> None:
        for stage in self.stages.values():
            await stage.store.stop()
        await self.input.stop()

    async def _send(self, send: Send) -> Awaitable[Any]:
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


def in_step(todo: list[tuple[Stage, Any, bytes]]) -> list[tuple[Stage, Any, bytes]]:
    """A batch's messages, each stage's in order, the stages interleaved by when their messages
    were sent. Ingest sends a frame to every work partition at once, so the stages of a worker
    take each frame one after another, while their parse cache holds it; in Faust's order they
    took runs of 5-10 frames each (one worker, 1 M events in envelopes: 64 parses of 41
    frames, parse 31 % of its GIL time). The stages are independent, so their order within a
    batch changes nothing they send."""
    runs: dict[int, list[tuple[Stage, Any, bytes]]] = {}
    for item in todo:
        runs.setdefault(id(item[0]), []).append(item)
    if len(runs) < 2:
        return todo
    return list(heapq.merge(*runs.values(), key=lambda item: item[1].timestamp))


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer with a fetch long poll of :data:`FETCH_WAIT_MS`: Faust fixes 1500 ms,
    and Tansu answers a waiting fetch up to half its wait after data came (aiokafka, 25
    messages into a waiting fetch: 238 ms median, 748 ms at most; with 100 ms: 12 and 43 ms),
    so each internal hop (work, link) added up to 0.75 s, and a worker's first frame waited
    0.75 s before its stages got it. A broker that answers at once (Kafka) is not slower."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS  # read by its fetcher, made in start()
        return consumer


class _Consumer(aiokafka_driver.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(aiokafka_driver.Transport):  # type: ignore[misc]
    Consumer = _Consumer


class _Tables(TableManager):  # type: ignore[misc]
    """Faust's table manager without the 1 s sleep it starts with (time for agents to
    register tables): this app has none (the stages snapshot to topics of their own,
    :mod:`streams.snapshots`), and the sleep held Faust's group join a second behind
    ingest's (first input 6.2 -> 5.2 s after process start)."""

    async def on_start(self) -> None:
        await self._update_channels()
        await self.recovery.start()


class _App(faust.App):
    """Faust's app, starting ingest's reader beside its own consumer: Faust runs app tasks only
    once its group has joined, and ingest's join after that added ~session_timeout/2 to every
    start (measured: first input 12.0 s after process start, 7.2 s with both joins at once).
    Its consumer is :class:`_ConsumerThread`'s."""

    runner: Runner | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        if self.runner is not None:
            self.runner.input.start()


def create_app(config: Config, worker_id: str, sources: Sequence[tuple[str, int]]) -> tuple[faust.App, Runner]:
    """The Faust app for one worker (its three agents, timers and settings); ``sources``:
    every partition of the event topics."""
    k = config.kafka
    app = _App(
        k.app_id,
        **faust_settings(k),
        autodiscover=False,
        datadir=str(worker_dir(config, worker_id) / "faust"),
        web_enabled=False,  # metrics are served by prometheus-client (see streams.worker)
        store="memory://",
        TableManager=_Tables,
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
    runner = app.runner = Runner(config, worker_id, app, sources)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    work = app.topic(work_topic(config), partitions=runner.work_partitions, internal=True, **raw)
    link = app.topic(link_topic(config), partitions=1, internal=True, **raw)

    def agent(kind: str) -> Callable[[StreamT], Awaitable[None]]:
        async def run(stream: StreamT) -> None:
            try:
                runner.streams[kind] = stream
                first = True
                async for events in stream.noack_take(min(k.batch_messages, STAGE_TAKE), within=STAGE_WITHIN_S):
                    if first:
                        _first_input(kind)
                        first = False
                    await runner.handle(kind, events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fatal(exc)

        return run

    app.agent(work, name="coordwatch.detect")(agent("detect"))
    app.agent(link, name="coordwatch.link")(agent("link"))

    @app.task
    async def read_input() -> None:
        try:
            await runner.read_input()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(exc)

    @app.timer(interval=k.snapshot_interval_s)
    async def snapshot_timer() -> None:
        try:
            await runner.checkpoint()
        except Exception as exc:
            fatal(exc)

    @app.timer(interval=REPORT_EVERY_S)
    async def report_timer() -> None:
        try:
            await runner.report()
        except KafkaError as exc:  # the broker is away: the reports go stale, the stages hold
            log.warning("input report skipped, broker not answering: %r", exc)
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
