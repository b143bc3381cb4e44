"""The event topics, read with aiokafka's ``getmany`` rather than through a Faust agent.

Faust hands every message to an agent through its queues, ~100 µs a message whatever the
agent does (``coordwatch bench levers``): single-event input ran at 7.5–13.8 k events/s a
worker that way, a tenth of what the same worker does on 100-event envelopes. aiokafka
returns a thousand buffered messages in one call, so ingest costs per frame, not per
message. The internal topics (work, link) stay with Faust's agents: they carry frames of
thousands of events, one message each.

The reader is a consumer group of its own, ``<app_id>.ingest`` (Faust's group, ``<app_id>``,
uses Faust's assignor protocol, which a plain aiokafka member cannot join), with aiokafka's
round-robin assignment over the event topics' partitions. At-least-once: an offset is
committed only once the frames of the input below it are on the broker, at most every
``kafka.commit_interval_s``; what a restart or a new owner re-reads
the detect stages skip, as they hold the input offsets they have taken
(:class:`~streams.stages.DetectStage`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from streams.broker import aiokafka_settings
from streams.config import Config
from streams.stages import FRAME_BYTES, max_message_bytes

log = logging.getLogger(__name__)

AIOKAFKA_FETCH_MAX_BYTES = 52428800  # aiokafka's default
Records = dict[TopicPartition, list[Any]]  # aiokafka ConsumerRecords by partition, in offset order
#: a take stops once it holds this many input bytes (and a fetch more at most): four frames'
#: worth, so that ``kafka.batch_messages`` can be large enough for frames of small messages
#: without a take of envelopes holding hundreds of MB
TAKE_BYTES = 4 * FRAME_BYTES


def ingest_group(config: Config) -> str:
    return f"{config.kafka.app_id}.ingest"


class InputReader(ConsumerRebalanceListener):  # type: ignore[misc]
    """The worker's consumer of the event topics: batches of records, commits of what ingest has sent."""

    def __init__(self, config: Config, client_id: str) -> None:
        self.config, self.client_id = config, client_id
        self.consumer: AIOKafkaConsumer | None = None  # made in start(): aiokafka wants the running loop
        self._started: asyncio.Future[None] | None = None
        self._sent: dict[TopicPartition, int] = {}  # next offset per partition whose frames are on the broker
        self._taken: dict[TopicPartition, int] = {}  # the offset after the last record take() returned
        self._committed_at = time.monotonic()

    def start(self) -> None:
        """Create the consumer and start joining its group (on the running loop)."""
        if self.consumer is not None:  # started before (Faust may restart the app)
            return
        k = self.config.kafka
        self.consumer = AIOKafkaConsumer(
            group_id=ingest_group(self.config),
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # an aborted transaction's events never happened
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, k.session_timeout_s / 3) * 1000),
            # an input message of up to events.max_event_bytes must fit in one fetch (take()
            # asks for batch_messages records, so the consumer's max_poll_records is not used)
            fetch_max_bytes=max(AIOKAFKA_FETCH_MAX_BYTES, max_message_bytes(self.config)),
            max_partition_fetch_bytes=max_message_bytes(self.config),
            **aiokafka_settings(k),
        )
        self.consumer.subscribe(list(self.config.topics.events), listener=self)
        # aiokafka's start waits for the group join (~session_timeout/2 on Tansu): in the
        # background, so that Faust's own join runs beside it; take() waits for it
        self._started = asyncio.ensure_future(self.consumer.start())

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def take(self) -> Records:
        """Up to ``kafka.batch_messages`` records or :data:`TAKE_BYTES`, or what came
        within ``kafka.batch_within_s``."""
        if self._started is None:
            self.start()
        await self._started  # type: ignore[misc]
        k = self.config.kafka
        deadline = time.monotonic() + k.batch_within_s
        out: Records = {}
        n = size = 0
        while n < k.batch_messages and size < TAKE_BYTES:
            wait = deadline - time.monotonic()
            got = await self.consumer.getmany(timeout_ms=max(int(wait * 1000), 0), max_records=k.batch_messages - n)
            for tp, records in got.items():
                out.setdefault(tp, []).extend(records)
                self._taken[tp] = records[-1].offset + 1
                n += len(records)
                size += sum(len(r.value or b"") for r in records)
            if wait <= 0 or (not got and out):
                break
        return out

    def sent(self, records: Records) -> None:
        """The frames of ``records`` are on the broker: their offsets may be committed."""
        for tp, rs in records.items():
            self._sent[tp] = rs[-1].offset + 1

    async def commit_due(self) -> None:
        """Commit what was sent, if ``kafka.commit_interval_s`` has passed since the last commit."""
        if self._sent and time.monotonic() - self._committed_at >= self.config.kafka.commit_interval_s:
            await self.commit()

    async def commit(self) -> None:
        """Commit what ingest has sent of the partitions still assigned here; on a broker
        error keep it for the next time (at-least-once: the stages skip what comes again)."""
        self._committed_at = time.monotonic()
        mine = self.consumer.assignment()
        offsets = {tp: o for tp, o in self._sent.items() if tp in mine}
        self._sent = {}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            for tp, o in offsets.items():  # unless newer input was sent meanwhile
                self._sent.setdefault(tp, o)
            log.warning("input offsets not committed yet (a restart now would read them again): %r", exc)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to hand over: what was sent and not yet committed, the new owner reads
        again and the stages skip (no commit here: one waiting on the commit lock while a
        commit of the loop waits for the rebalance would hold both). What another owner takes
        meanwhile is not known here: a partition it gets back reports its end from the group's
        committed offset until it takes a record again (:meth:`highwaters`)."""
        for tp in revoked:
            self._taken.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("ingest: input partitions %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def highwaters(self) -> dict[tuple[str, int], tuple[int, float]]:
        """Where each input partition assigned here ends, as far as the consumer knows, and when
        it learnt it (aiokafka's time of the partition's last fetch response).

        The end is the high watermark, unless the consumer has read up to it: then it is the
        offset after the last record taken (none taken since the partition was assigned: the
        group's committed offset, below which the input was sent before). The offsets between
        are not events (a transaction's commit marker, aborted records), and a detect stage
        that has the records taken counts the partition as caught up
        (:meth:`streams.stages.DetectStage.watermark`), not as behind for good."""
        out: dict[tuple[str, int], tuple[int, float]] = {}
        if self.consumer is None:  # not started yet
            return out
        for tp in self.consumer.assignment():
            try:
                highwater, ms = self.consumer.highwater(tp), self.consumer.last_poll_timestamp(tp)
                if highwater is not None and await self.consumer.position(tp) >= highwater:
                    if tp not in self._taken:
                        self._taken[tp] = await self.consumer.committed(tp) or 0
                    highwater = self._taken[tp]
            except (AssertionError, IllegalStateError):  # revoked meanwhile
                continue
            except KafkaError as exc:  # the committed offset not known now: the high watermark
                log.debug("input end of %s: committed offset not read (%r)", tp, exc)
            if highwater is not None and ms is not None:
                out[(tp.topic, tp.partition)] = (highwater, ms / 1000)
        return out
