"""The analysts' view of the alerts topic: a live table, or JSON lines for scripts.

Like ``tail``: without ``--follow`` it prints what is on the topic and exits; with
``--follow`` it prints new alerts as they arrive (and, with ``--from-beginning``, the
existing ones first). It reads every partition itself (no consumer group: no join
wait, no committed offsets to disturb) and shows each ``alert_id`` once, since a worker
restart may publish an alert again in rare races.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.broker import BrokerError, end_offsets, kafka_python_settings
from streams.config import Config

COLUMNS = (
    ("time (UTC)", 19), ("type", 14), ("status", 6), ("score", 7), ("accounts", 8), ("top accounts", 34), ("keys", 0),
)  # fmt: skip
#: ``coordwatch demo``'s narrower table (about 120 characters): the time of day only
COMPACT = (
    ("time", 8), ("type", 14), ("status", 6), ("score", 7), ("accounts", 8), ("top accounts", 24), ("keys", 44),
)  # fmt: skip


@dataclass(frozen=True)
class Filter:
    types: frozenset[str] = frozenset()
    min_score: float | None = None

    def __call__(self, alert: dict[str, Any]) -> bool:
        if self.types and alert.get("type") not in self.types:
            return False
        return self.min_score is None or float(alert.get("score", 0.0)) >= self.min_score


def read_alerts(
    config: Config, *, follow: bool, from_beginning: bool, idle_timeout_s: float | None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[bytes]:
    """Raw alert values, each ``alert_id`` once, until the end (or idle, with ``follow``,
    or once ``stop()`` is true: it is asked at least every 0.2 s)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = config.topics.alerts
    consumer = KafkaConsumer(
        **kafka_python_settings(config.kafka), group_id=None, enable_auto_commit=False, client_id="coordwatch-alerts"
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(f"no topic {topic!r} on the broker (no worker has run yet?)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = end_offsets(consumer, tps)
        starts = consumer.beginning_offsets(tps) if from_beginning or not follow else ends
        for tp, start in starts.items():
            consumer.seek(tp, start)
        seen: set[str] = set()
        last_new = time.monotonic()
        while True:
            if not follow and all(consumer.position(tp) >= ends[tp] for tp in tps):
                return
            if idle_timeout_s is not None and time.monotonic() - last_new > idle_timeout_s:
                return
            if stop is not None and stop():
                return
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    alert_id = orjson.loads(rec.value).get("alert_id")
                    if alert_id in seen:
                        continue
                    seen.add(alert_id)
                    last_new = time.monotonic()
                    yield rec.value
    finally:
        consumer.close()


def header(compact: bool = False) -> str:
    columns = COMPACT if compact else COLUMNS
    return "  ".join(f"{name:<{width}}" if width else name for name, width in columns).rstrip()


def row(alert: dict[str, Any], compact: bool = False) -> str:
    end = alert.get("window", {}).get("end")
    fmt = "%H:%M:%S" if compact else "%Y-%m-%d %H:%M:%S"
    when = datetime.fromtimestamp(end, UTC).strftime(fmt) if end is not None else "-"
    top = ",".join(alert.get("accounts", [])[:3])
    keys = ",".join(alert.get("keys", [])[:3])
    cells = (when, alert.get("type", "?"), alert.get("status", ""), f"{alert.get('score', 0):.3f}",
             str(alert.get("account_count", "")), top, keys)  # fmt: skip
    return "  ".join(_fit(c, w) for c, (_, w) in zip(cells, COMPACT if compact else COLUMNS, strict=True)).rstrip()


def _fit(text: str, width: int) -> str:
    if not width:
        return text[:80]
    return f"{text[: width - 1] + '…' if len(text) > width else text:<{width}}"


def show(
    config: Config,
    echo: Callable[[str], None],
    *,
    follow: bool = False,
    from_beginning: bool = False,
    keep: Filter = Filter(),
    as_json: bool = False,
    idle_timeout_s: float | None = None,
) -> int:
    """Print the alerts that pass ``keep``; returns how many were printed."""
    shown = 0
    for raw in read_alerts(config, follow=follow, from_beginning=from_beginning, idle_timeout_s=idle_timeout_s):
        alert = orjson.loads(raw)
        if not keep(alert):
            continue
        if as_json:
            echo(raw.decode())
        else:
            if not shown:
                echo(header())
            echo(row(alert))
        shown += 1
    return shown
