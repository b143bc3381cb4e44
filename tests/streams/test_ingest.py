"""Ingest's reader on the real embedded broker: how much one take holds."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker, aiokafka_settings, ensure_topics
from streams.config import load
from streams.ingest import TAKE_BYTES, InputReader
from streams.stages import max_message_bytes

pytestmark = pytest.mark.timeout(90)


def test_a_take_is_bounded_by_count_and_by_bytes(broker: EmbeddedBroker) -> None:
    """Small messages fill a take to ``kafka.batch_messages``; large ones stop it soon after
    ``TAKE_BYTES`` (a take of 20 000 envelopes would hold hundreds of MB); nothing is
    skipped or taken twice."""
    topic = f"ingest-{uuid.uuid4().hex[:10]}"
    config = load(sets=[f'kafka.broker="{broker.url}"', f"kafka.app_id={topic}", f'topics.events=["{topic}"]',
                        "kafka.session_timeout_s=6", "kafka.batch_messages=3000"], environ={}).config  # fmt: skip
    ensure_topics(config, [topic], partitions=1)
    small, large = 5000, 120  # 100-byte messages, then 120 of 256 KiB (30 MiB)

    async def go() -> list[list[int]]:
        producer = AIOKafkaProducer(**aiokafka_settings(config.kafka), linger_ms=20, max_request_size=4 << 20)
        await producer.start()
        try:
            for _ in range(small):
                await producer.send(topic, b"s" * 100)
            for _ in range(large):
                await producer.send(topic, b"L" * (256 << 10))
            await producer.flush()
        finally:
            await producer.stop()
        reader = InputReader(config, "test-ingest")
        takes: list[list[int]] = []
        try:
            while sum(map(len, takes)) < small + large:
                records = await reader.take()
                takes += [[r.offset for r in rs] for rs in records.values()]
        finally:
            await reader.stop()
        return takes

    takes = asyncio.run(go())
    offsets = [o for t in takes for o in t]
    assert offsets == list(range(small + large))
    assert len(takes[0]) == 3000  # the count bound
    fetch = max_message_bytes(config)
    sizes = [sum(100 if o < small else 256 << 10 for o in t) for t in takes]
    assert len(takes) >= 3 and all(s <= TAKE_BYTES + fetch for s in sizes), sizes  # one take of all: 31.7 MB
