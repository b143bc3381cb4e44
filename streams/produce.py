"""Feed events into the input topic as batch envelopes: from a JSONL(.gz) file
(``coordwatch produce``) or straight from the synthetic generator (``coordwatch generate
--to-kafka``). Both go through one sending function, :func:`send`.

An envelope is a JSON array of up to N events (default 100): Faust costs ~120 µs per
message whatever the agent does, so one event per message caps a worker near 8k
events/s, while envelopes of 100 reach ~275k. Envelopes are also cut before they would
exceed ``events.max_event_bytes`` (the worker rejects larger messages whole).

Partitions: by default every message of one run carries the same key (``--key``, default
the file's name), so the whole file lands on one partition, in file order. With ``spread``
(``--spread``) the messages go round robin over the topic's partitions, unkeyed, as a busy
bus spreads its input: each partition holds its share in file order, and the workers judge
lateness per partition (``streams.stages.DetectStage``), so a file whose events are in
order within the lateness bound gives the alerts of ``coordwatch replay`` either way.

A line that is not a JSON object (bad JSON, an array, a number...) is sent alone, as it
is, so the worker rejects exactly that line, as replay does, and not its neighbours.

Pacing (``rate``): every message carries a *clock*, a position in the stream counted in
events; it is sent ``clock / rate`` seconds after the start. A file's clock is the number
of lines sent so far (a steady rate). The generator's clock follows event time: within
each 5-minute chunk of event time the clock moves with the events' timestamps, and it
reaches the chunk's event count at the chunk's end. So the stream plays at ``rate``
events/s on average, its event time compressed by a factor that follows the stream's
density chunk by chunk, and a campaign wave stays a wave. Without ``rate``: as fast as
the broker takes it. Memory stays flat either way: the generator yields 5 minutes of
event time at a time and the client's send buffer is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from detectors.replay import open_events
from streams.broker import ensure_topics, kafka_python_settings, partition_counts
from streams.config import Config

if TYPE_CHECKING:
    from detectors.synthetic import SyntheticStream

#: (message value, events in it, clock: the stream position in events once it is sent)
Message = tuple[bytes, int, float]


@dataclass
class ProduceSummary:
    events: int = 0  # lines sent (valid or not)
    messages: int = 0
    seconds: float = 0.0
    event_time: float | None = None  # newest event time sent (generator only)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def format(self) -> str:
        return (
            f"{self.events} events in {self.messages} messages, {self.seconds:.2f} s, "
            f"{self.events_per_s:,.0f} events/s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "messages": self.messages, "seconds": round(self.seconds, 3),
                "event_time": self.event_time}  # fmt: skip


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


def file_messages(lines: Iterable[bytes], size: int, max_bytes: int) -> Iterator[Message]:
    """A file's envelopes, clocked by the lines sent so far (a steady rate)."""
    clock = 0
    for message, n in envelopes(lines, size, max_bytes):
        clock += n
        yield message, n, float(clock)


def stream_messages(
    chunks: Iterable[list[dict[str, Any]]], size: int, max_bytes: int, start_ts: float,
    times: list[float] | None = None,
) -> Iterator[Message]:
    """Envelopes of generated events (chunks in event-time order), clocked by event time.

    Within a chunk, a message's clock is the events before the chunk plus the chunk's
    event count times how far its last event lies between the previous chunk's last
    event time (``start_ts`` for the first) and this chunk's. If ``times`` is given, the
    newest event time sent is kept in ``times[0]``.
    """
    base, prev_ts = 0, start_ts
    for chunk in chunks:
        if not chunk:
            continue
        n_chunk, last_ts = len(chunk), chunk[-1]["ts"]
        span = last_ts - prev_ts
        done = 0
        for message, n, ts in _pack_events(chunk, size, max_bytes):
            done += n
            at = n_chunk * (ts - prev_ts) / span if span > 0 else done
            if times is not None:
                times[:] = [ts]
            yield message, n, base + min(max(at, 0.0), float(n_chunk))
        base += n_chunk
        prev_ts = last_ts


def _pack_events(events: list[dict[str, Any]], size: int, max_bytes: int) -> Iterator[tuple[bytes, int, float]]:
    """``(message, events in it, time of its last event)``: envelopes of up to ``size``
    events and ``max_bytes``; an event too large for any envelope (or ``size == 1``) alone."""
    batch: list[bytes] = []
    nbytes, batch_ts = 2, 0.0
    for ev in events:
        line = orjson.dumps(ev)
        if size == 1 or len(line) + 2 > max_bytes:
            if batch:
                yield b"[" + b",".join(batch) + b"]", len(batch), batch_ts
                batch, nbytes = [], 2
            yield line, 1, ev["ts"]
            continue
        if len(batch) >= size or nbytes + len(line) + 1 > max_bytes:
            yield b"[" + b",".join(batch) + b"]", len(batch), batch_ts
            batch, nbytes = [], 2
        batch.append(line)
        nbytes += len(line) + 1
        batch_ts = ev["ts"]
    if batch:
        yield b"[" + b",".join(batch) + b"]", len(batch), batch_ts


def send(
    config: Config,
    messages: Iterable[Message],
    *,
    key: bytes | None,
    spread: bool = False,
    rate: float | None = None,
    topic: str | None = None,
    progress: Callable[[ProduceSummary], None] | None = None,
    progress_every_s: float = 1.0,
    event_time: Callable[[], float | None] | None = None,
) -> ProduceSummary:
    """Send ``messages`` to ``topic`` (default the first input topic), each once its clock
    is due at ``rate`` events/s (or at once without a rate), with ``key``, or with
    ``spread`` round robin over the partitions; waits for delivery.
    ``progress`` is called with the running summary every ``progress_every_s`` and at the
    end (after delivery)."""
    from kafka import KafkaProducer

    topic = topic or config.topics.events[0]
    ensure_topics(config, [topic])
    partitions = partition_counts(config, [topic])[topic] if spread else 0
    max_bytes = config.events.max_event_bytes
    producer = KafkaProducer(
        **kafka_python_settings(config.kafka),
        client_id="coordwatch-produce",
        acks=1,
        linger_ms=5,
        batch_size=1 << 20,
        max_request_size=max(max_bytes, 1 << 20) + (64 << 10),
    )
    out = ProduceSummary()
    t0 = time.perf_counter()
    next_report = t0 + progress_every_s
    try:
        for message, n, clock in messages:
            if spread:
                producer.send(topic, value=message, partition=out.messages % partitions)
            else:
                producer.send(topic, value=message, key=key)
            out.events += n
            out.messages += 1
            now = time.perf_counter()
            if rate:
                ahead = t0 + clock / rate - now
                if ahead > 0:
                    time.sleep(ahead)
                    now = time.perf_counter()
            if progress is not None and now >= next_report:
                out.seconds = now - t0
                out.event_time = event_time() if event_time else None
                progress(out)
                next_report = now + progress_every_s
        producer.flush()
    finally:
        producer.close()
    out.seconds = time.perf_counter() - t0
    out.event_time = event_time() if event_time else None
    if progress is not None:
        progress(out)
    return out


def produce(
    config: Config,
    path: Path,
    *,
    envelope: int = 100,
    rate: float | None = None,
    key: str | None = None,
    spread: bool = False,
    topic: str | None = None,
) -> ProduceSummary:
    """Send ``path`` to ``topic`` (default the first input topic); waits for delivery."""
    with open_events(path) as lines:
        messages = file_messages(lines, envelope, config.events.max_event_bytes)
        return send(config, messages, key=(key or path.name).encode(), spread=spread, rate=rate, topic=topic)


def produce_stream(
    config: Config,
    stream: SyntheticStream,
    *,
    envelope: int = 100,
    rate: float | None = None,
    key: str | None = None,
    spread: bool = False,
    topic: str | None = None,
    progress: Callable[[ProduceSummary], None] | None = None,
    progress_every_s: float = 1.0,
) -> ProduceSummary:
    """Send a :class:`~detectors.synthetic.SyntheticStream` to ``topic`` as it is
    generated (nothing written, memory flat), event time compressed to play at ``rate``
    events/s; waits for delivery. Key default: ``synthetic-<seed>`` (one partition);
    ``spread``: round robin over the partitions."""
    times: list[float] = []
    messages = stream_messages(
        stream.chunks(), envelope, config.events.max_event_bytes, stream.start_ms / 1000, times
    )
    key = key or f"synthetic-{stream.labels['params']['seed']}"
    return send(config, messages, key=key.encode(), spread=spread, rate=rate, topic=topic, progress=progress,
                progress_every_s=progress_every_s, event_time=lambda: times[0] if times else None)  # fmt: skip
