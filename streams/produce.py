"""Feed a JSONL(.gz) file of events into the input topic, as batch envelopes.

An envelope is a JSON array of up to N events (default 100): Faust costs ~120 µs per
message whatever the agent does, so one event per message caps a worker near 8k
events/s, while envelopes of 100 reach ~275k. Envelopes are also cut before they would
exceed ``events.max_event_bytes`` (the worker rejects larger messages whole).

Key: every message of one run carries the same key (``--key``, default the file's
name), so the whole file lands on one partition, in file order. A worker runs one
pipeline over what it consumes and drops events later than the allowed lateness; only
file order gives it exactly the sequence ``coordwatch replay`` sees, hence the same
alerts. (Spreading one source over partitions comes with keyed repartitioning.)

A line that is not a JSON object (bad JSON, an array, a number...) is sent alone, as it
is, so the worker rejects exactly that line, as replay does, and not its neighbours.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from detectors.replay import open_events
from streams.broker import ensure_topics, kafka_python_settings
from streams.config import Config


@dataclass
class ProduceSummary:
    events: int = 0  # lines sent (valid or not)
    messages: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def format(self) -> str:
        return (
            f"{self.events} events in {self.messages} messages, {self.seconds:.2f} s, "
            f"{self.events_per_s:,.0f} events/s"
        )


def envelopes(lines: Iterable[bytes], size: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """``(message, lines in it)`` in file order; ``size == 1`` sends each line as it is."""
    batch: list[bytes] = []
    nbytes = 2  # "[" and "]"
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if size > 1 and len(line) + 2 <= max_bytes and _is_object(line):
            if len(batch) >= size or nbytes + len(line) + 1 > max_bytes:
                yield b"[" + b",".join(batch) + b"]", len(batch)
                batch, nbytes = [], 2
            batch.append(line)
            nbytes += len(line) + 1
            continue
        if batch:
            yield b"[" + b",".join(batch) + b"]", len(batch)
            batch, nbytes = [], 2
        yield line, 1
    if batch:
        yield b"[" + b",".join(batch) + b"]", len(batch)


def _is_object(line: bytes) -> bool:
    if not line.lstrip().startswith(b"{"):
        return False
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def produce(
    config: Config,
    path: Path,
    *,
    envelope: int = 100,
    rate: float | None = None,
    key: str | None = None,
    topic: str | None = None,
) -> ProduceSummary:
    """Send ``path`` to ``topic`` (default the first input topic); waits for delivery."""
    from kafka import KafkaProducer

    topic = topic or config.topics.events[0]
    ensure_topics(config, [topic])
    max_bytes = config.events.max_event_bytes
    producer = KafkaProducer(
        **kafka_python_settings(config.kafka),
        client_id="coordwatch-produce",
        acks=1,
        linger_ms=5,
        batch_size=1 << 20,
        max_request_size=max(max_bytes, 1 << 20) + (64 << 10),
    )
    key_bytes = (key or path.name).encode()
    out = ProduceSummary()
    t0 = time.perf_counter()
    try:
        with open_events(path) as lines:
            for message, n in envelopes(lines, envelope, max_bytes):
                producer.send(topic, value=message, key=key_bytes)
                out.events += n
                out.messages += 1
                if rate:
                    ahead = t0 + out.events / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    out.seconds = time.perf_counter() - t0
    return out
