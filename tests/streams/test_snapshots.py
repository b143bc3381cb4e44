"""Stage snapshots: their bytes, and the store on the real embedded broker (the newest whole
snapshot back; the alerts topic's ends answered at once after the store has read)."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker, aiokafka_settings, ensure_topics
from streams.config import Config, load
from streams.snapshots import CHUNK_BYTES, Snapshot, SnapshotStore, snapshot_topic

pytestmark = pytest.mark.timeout(60)


class _App:
    """What the store uses of a Faust app: ``producer.send`` in Faust's argument order,
    here on a real aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = self
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: float | None, headers: Any) -> Any:  # fmt: skip
        return await self._producer.send(topic, value, key=key, partition=partition, headers=headers)


def config_for(broker: EmbeddedBroker) -> Config:
    app_id = f"snap-{uuid.uuid4().hex[:10]}"
    return load(sets=[f'kafka.broker="{broker.url}"', f"kafka.app_id={app_id}", f"topics.alerts={app_id}.alerts"],
                environ={}).config  # fmt: skip


async def _with_store(broker: EmbeddedBroker, body: Any) -> Any:
    config = config_for(broker)
    ensure_topics(config, [config.topics.alerts], partitions=2)
    ensure_topics(config, [snapshot_topic(config, "detect-x")], partitions=1)
    producer = AIOKafkaProducer(**aiokafka_settings(config.kafka), linger_ms=20, max_request_size=4 << 20)
    await producer.start()
    store = SnapshotStore(config, "detect-x", _App(producer))
    await store.start()
    try:
        return await body(config, store, producer)
    finally:
        await store.stop()
        await producer.stop()


def test_load_gives_the_newest_whole_snapshot_over_a_torn_one(broker: EmbeddedBroker) -> None:
    """Chunked snapshots (the last write a batch of many records: Tansu's end offset is
    short of it), then the first chunks of one never finished: the newest whole one loads."""

    async def body(config: Config, store: SnapshotStore, producer: AIOKafkaProducer) -> None:
        assert await store.load() is None
        older = Snapshot(b"a" * 100, {("ev", 0): 7}, {0: 1, 1: 0}, {"n": 1})
        newer = Snapshot(bytes(range(256)) * (5 * CHUNK_BYTES // 256), {("ev", 0): 9}, {0: 3, 1: 2}, {"n": 2})
        await store.save(older)
        await store.save(newer)  # 6 chunks
        for i in range(2):  # chunks 0 and 1 of 3 of another id: a save cut short by a crash
            await producer.send_and_wait(store.topic, b"x" * 100, key=b"torn", partition=0,
                                         headers=[("sid", b"torn"), ("chunk", f"{i}/3".encode())])  # fmt: skip
        got = await store.load()
        assert got is not None
        assert (got.state, got.offsets, got.alert_offsets, got.meta["n"]) == (newer.state, newer.offsets, {0: 3, 1: 2}, 2)

    asyncio.run(_with_store(broker, body))


def test_alert_ends_answer_at_once_after_the_store_has_read(broker: EmbeddedBroker) -> None:
    """The link stage asks for the alerts topic's ends at every snapshot, under the lock
    every stage of the worker waits on: no fetch of the store's may hold that request back
    (it waited 0.5-1.0 s, aiokafka's fetch long poll, while the reader stayed assigned)."""

    async def body(config: Config, store: SnapshotStore, producer: AIOKafkaProducer) -> None:
        alerts = config.topics.alerts
        for i in range(5):
            await producer.send_and_wait(alerts, orjson.dumps({"alert_id": f"a{i}"}), partition=i % 2)
        await store.save(Snapshot(b"state", {}, {0: 1, 1: 0}, {}))
        snap = await store.load()
        assert snap is not None
        took = []
        for _ in range(3):
            t0 = time.perf_counter()
            assert await store.alert_end_offsets() == {0: 3, 1: 2}
            took.append(time.perf_counter() - t0)
        assert await store.alert_ids_since(snap.alert_offsets) == {"a2", "a4", "a1", "a3"}
        for _ in range(3):
            t0 = time.perf_counter()
            assert await store.alert_end_offsets() == {0: 3, 1: 2}
            took.append(time.perf_counter() - t0)
        assert max(took) < 0.2, took

    asyncio.run(_with_store(broker, body))


def test_snapshot_bytes_hold_the_state_compressed_and_version_3_still_loads() -> None:
    state = np.arange(2_000_000, dtype=np.int64).tobytes()  # 16 MB of what compresses well
    snap = Snapshot(state, {("ev", 3): 11}, {0: 5}, {"stage": "detect-burst"})
    data = snap.to_bytes()
    assert len(data) < len(state) / 4
    back = Snapshot.from_bytes(data)
    assert (back.state, back.offsets, back.alert_offsets, back.meta) == (state, snap.offsets, {0: 5}, snap.meta)
    # the layout before compression: the same header at version 3, then the state as it is
    head = orjson.dumps({"version": 3, "offsets": [["ev", 3, 11]], "alert_offsets": {"0": 5}, "stage": "detect-burst"})
    old = Snapshot.from_bytes(struct.pack(">I", len(head)) + head + state)
    assert (old.state, old.offsets, old.alert_offsets, old.meta) == (state, snap.offsets, {0: 5}, snap.meta)
    head = orjson.dumps({"version": 2, "offsets": [], "alert_offsets": {}})
    with pytest.raises(ValueError, match=r"snapshot version 2 \(this worker reads 3, 4\)"):
        Snapshot.from_bytes(struct.pack(">I", len(head)) + head + state)
