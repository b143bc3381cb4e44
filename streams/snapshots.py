"""Stage snapshots on single-partition topics: state plus the offsets it stands at.

A snapshot is written as chunks of ``CHUNK_BYTES`` under one id and read back from the
topic's tail, stepping over a torn write (a crash mid-save). Only the newest complete one
is ever read, so a real cluster may drop old ones (retention; Tansu keeps all).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import zstandard
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.broker import aiokafka_settings
from streams.config import Config

CHUNK_BYTES = 512 * 1024
#: 4: the state zstd-compressed (level 1; the generator mix's stages: co_action 3.2-4.3x,
#: burst 19-39x, near_duplicate 2.3x, ~70 ms for all three). Version 3 (the state as it is)
#: is still read, so workers upgrade in place.
SNAPSHOT_VERSION = 4
READS_VERSIONS = (3, SNAPSHOT_VERSION)
#: the store reader's fetch long poll: it reads only while it loads, and a fetch in flight holds
#: the reader's later requests on that connection behind it (see :class:`SnapshotStore`)
READ_WAIT_MS = 20


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
        """The header's length (uint32), the header (JSON) and the compressed state."""
        head = orjson.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
                "alert_offsets": {str(p): o for p, o in self.alert_offsets.items()},
                **self.meta,
            }
        )
        return struct.pack(">I", len(head)) + head + zstandard.ZstdCompressor(level=1).compress(self.state)

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        (n,) = struct.unpack_from(">I", data)
        head = orjson.loads(data[4 : 4 + n])
        version = head.pop("version", None)
        if version not in READS_VERSIONS:
            raise ValueError(f"snapshot version {version} (this worker reads {', '.join(map(str, READS_VERSIONS))})")
        offsets = {(t, p): o for t, p, o in head.pop("offsets")}
        alert_offsets = {int(p): o for p, o in head.pop("alert_offsets").items()}
        state = data[4 + n :]
        if version > 3:  # compressed from version 4 on
            state = zstandard.ZstdDecompressor().decompress(state)
        return cls(state, offsets, alert_offsets, head)


class SnapshotStore:
    """A stage's snapshots on its own single-partition topic, read back from the tail.

    Its reader holds an assignment only while it reads (:meth:`load`,
    :meth:`alert_ids_since`): an assigned consumer keeps a fetch in flight, a long poll of
    ``fetch_max_wait_ms``, and the broker answers a connection's requests in order, so the
    end-offsets query each link snapshot makes under the runner's lock waited behind it
    (Tansu, aiokafka's default 500 ms: 0.5 s a query, 1.0 s the first, every detect stage
    held up meanwhile)."""

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
            fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, fetch_max_wait_ms=READ_WAIT_MS,
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
        """Write ``snap`` as chunks ``i/n`` of one id; returns its stored size once it is stored."""
        data = await asyncio.to_thread(snap.to_bytes)  # zstd lets go of the GIL: beside the detection
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
        with self._reading([tp]):
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

    @contextlib.contextmanager
    def _reading(self, tps: list[TopicPartition]) -> Iterator[None]:
        """The reader assigned ``tps`` for a read, and nothing once it is done (see the class)."""
        self.reader.assign(tps)
        try:
            yield
        finally:
            self.reader.unsubscribe()

    async def _end(self, tp: TopicPartition) -> int:
        """The end offset, confirmed by reading up to the high watermark of a fetch: Tansu
        0.6 reports the end of a partition whose last write was a multi-record batch as that
        batch's base offset + 1 (the aiokafka side of :func:`streams.broker.end_offsets`)."""
        end = (await self.reader.end_offsets([tp]))[tp]
        if end:
            self.reader.seek(tp, end - 1)
            while (high := self.reader.highwater(tp)) is None or end < high:
                if not (batch := await self.reader.getmany(tp, timeout_ms=10_000)):
                    raise RuntimeError(f"{self.topic}: no message at offset {end - 1} within 10 s")
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
        with self._reading(list(todo)):
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
