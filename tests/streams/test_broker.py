"""Broker glue on the real embedded broker: start/stop, clear failures, topics, client
settings, ``coordwatch produce`` envelopes and the ``coordwatch alerts`` view."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from detectors.base import Alert
from tests.helpers import read_topic as read_records
from streams.alerts_view import Filter, show
from streams.broker import (
    BrokerError,
    EmbeddedBroker,
    aiokafka_settings,
    answers_metadata,
    bootstrap_servers,
    describe,
    ensure_topics,
    faust_settings,
    free_port,
    kafka_python_settings,
)
from streams.config import Config, load
from streams.produce import produce

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)




def config_for(broker: EmbeddedBroker, *sets: str) -> Config:
    return load(sets=[f'kafka.broker="{broker.url}"', *sets], environ={}).config


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    return e


def fresh(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


# -- addresses and settings ------------------------------------------------------------
def test_bootstrap_servers():
    assert bootstrap_servers("kafka://127.0.0.1:9092") == ["127.0.0.1:9092"]
    assert bootstrap_servers("kafka://a:1;b:2;kafka://c:3") == ["a:1", "b:2", "c:3"]


def test_credentials_reach_the_clients_but_never_the_log_line():
    c = load(
        sets=[
            'kafka.broker="kafka://k1:9093;k2:9093"', 'kafka.security_protocol="SASL_PLAINTEXT"',
            'kafka.sasl_mechanism="SCRAM-SHA-512"', 'kafka.sasl_username="det"', 'kafka.sasl_password="s3cret"',
        ],
        environ={},
    ).config  # fmt: skip
    for settings in (aiokafka_settings(c.kafka), kafka_python_settings(c.kafka)):
        assert settings["bootstrap_servers"] == ["k1:9093", "k2:9093"]
        assert settings["sasl_plain_password"] == "s3cret"
        assert settings["sasl_mechanism"] == "SCRAM-SHA-512"
    f = faust_settings(c.kafka)
    assert f["broker"] == ["kafka://k1:9093", "kafka://k2:9093"]
    assert f["broker_credentials"].password == "s3cret"
    assert "s3cret" not in repr(f["broker_credentials"])
    assert "s3cret" not in describe(c.kafka) and "det" in describe(c.kafka)


# -- the embedded broker ------------------------------------------------------------------
def test_ensure_topics_is_idempotent(broker):
    c = config_for(broker)
    a, b = fresh("a"), fresh("b")
    assert ensure_topics(c, [a, b], partitions=3) == [a, b]
    assert ensure_topics(c, [a, b, a]) == []
    admin = KafkaAdminClient(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    try:
        (desc,) = admin.describe_topics([a])
    finally:
        admin.close()
    assert len(desc["partitions"]) == 3


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(s.getsockname()[1]).start()


def test_an_early_exit_is_a_clear_error():
    class Failing(EmbeddedBroker):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; sys.exit(3)"]

    with pytest.raises(BrokerError, match=r"exited at start \(code 3\)"):
        Failing(0).start(timeout_s=10)


def test_broker_command_serves_until_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--port", str(port)],
        cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = ""
        while "broker ready" not in line:
            line = proc.stderr.readline()
            assert line, "coordwatch broker exited before it was ready"
        assert f"kafka://127.0.0.1:{port}" in line
        assert answers_metadata([f"127.0.0.1:{port}"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not answers_metadata([f"127.0.0.1:{port}"], timeout_s=0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- produce ------------------------------------------------------------------------------
def read_all(broker: EmbeddedBroker, topic: str) -> list[object]:
    return read_records(broker.port, topic)


def test_produce_sends_envelopes_in_file_order_to_one_partition(broker, tmp_path):
    topic = fresh("events")
    c = config_for(broker, f'topics.events=["{topic}"]')
    lines = [orjson.dumps({"ts": 1_700_000_000 + i, "account_id": f"a{i}", "action": "post"}) for i in range(250)]
    lines[7] = b"not json"
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines[:100]) + b"\n\n" + b"\n".join(lines[100:]) + b"\n")
    summary = produce(c, path, envelope=100)
    assert summary.events == 250
    records = read_all(broker, topic)
    assert len({r.partition for r in records}) == 1 and all(r.key == b"events.jsonl" for r in records)
    sent: list[bytes] = []
    sizes = []
    for r in records:
        if r.value.startswith(b"["):
            sent += [orjson.dumps(o) for o in orjson.loads(r.value)]
        else:
            sent.append(r.value)
        sizes.append(len(sent) - sum(sizes))
    assert sent == lines  # blank lines skipped, the bad line alone, order kept
    assert sizes == [7, 1, 100, 100, 42]


def test_produce_rate_limits(broker, tmp_path):
    c = config_for(broker, f'topics.events=["{fresh("events")}"]')
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"ts": 1, "account_id": "a", "action": "post"}) + b"\n" for _ in range(1000)))
    summary = produce(c, path, envelope=10, rate=2000)
    assert summary.messages == 100
    assert 0.45 <= summary.seconds < 5


# -- the alerts view ----------------------------------------------------------------------
def alert(group: str, kind: str, score: float, revision: int = 0) -> Alert:
    return Alert(kind, group, revision, score, 1_700_000_000.0, 1_700_000_060.0, ("u1", "u2", "u3", "u4"), 4,
                 ("https://example.org/x",), {}, {}, 1_700_000_060.0)  # fmt: skip


def test_alerts_view_and_topic_reads_get_all_of_a_last_batch_of_many_records(broker):
    """Tansu 0.6 puts the end of a partition whose last write was a multi-record batch at that
    batch's base offset + 1: a reader stopping there stopped after its first poll (500 records)."""
    topic = fresh("alerts")
    c = config_for(broker, f'topics.alerts="{topic}"')
    ensure_topics(c, [topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], linger_ms=500, batch_size=4 << 20)
    for i in range(3):  # three one-record batches, then one of 1200
        producer.send(topic, value=alert(f"a{i}", "burst", 0.5).to_json()).get(timeout=10)
    for i in range(1200):
        producer.send(topic, value=alert(f"g{i}", "burst", 0.5).to_json())
    producer.flush()
    producer.close()

    assert len(read_records(broker.port, topic)) == 1203
    lines: list[str] = []
    assert show(c, lines.append, as_json=True) == 1203
    assert len({orjson.loads(x)["group_id"] for x in lines}) == 1203


def test_alerts_view_and_topic_reads_end_at_a_transactions_commit_marker(broker):
    """A transactional producer's commit leaves a control record at the end of the partition:
    no record is there to confirm the end by, the fetch's high watermark does."""
    topic = fresh("alerts")
    c = config_for(broker, f'topics.alerts="{topic}"')
    ensure_topics(c, [topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], transactional_id=topic,
                             enable_idempotence=True)  # fmt: skip
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(3):
        producer.send(topic, value=alert(f"a{i}", "burst", 0.5).to_json())
    producer.commit_transaction()
    producer.close()

    assert [r.offset for r in read_records(broker.port, topic)] == [0, 1, 2]  # the marker at 3
    lines: list[str] = []
    assert show(c, lines.append, as_json=True) == 3


def test_alerts_view_filters_dedupes_and_prints(broker, tmp_path):
    topic = fresh("alerts")
    c = config_for(broker, f'topics.alerts="{topic}"')
    ensure_topics(c, [topic])
    alerts = [alert("g1", "co_action", 0.9), alert("g2", "burst", 0.3), alert("g1", "co_action", 0.9), alert("g3", "near_duplicate", 0.7)]
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    for a in alerts:
        producer.send(topic, key=a.group_id.encode(), value=a.to_json())
    producer.flush()
    producer.close()

    lines: list[str] = []
    assert show(c, lines.append, as_json=True) == 3  # g1 once
    assert sorted(lines) == sorted({a.to_json().decode() for a in alerts})
    lines.clear()
    assert show(c, lines.append, keep=Filter(frozenset({"co_action", "burst"}), 0.5)) == 1
    assert lines[0].startswith("time (UTC)") and "co_action" in lines[1] and "u1,u2,u3" in lines[1]
    t0 = time.monotonic()
    lines.clear()
    assert show(c, lines.append, follow=True, idle_timeout_s=1.0) == 0, lines  # only new ones: none
    assert 0.9 <= time.monotonic() - t0 < 10

    run = subprocess.run(
        [sys.executable, "-m", "streams", "alerts", "--follow", "--from-beginning", "--json", "--idle-timeout", "1",
         "--min-score", "0.5", "--set", f'kafka.broker="{broker.url}"', "--set", f'topics.alerts="{topic}"'],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(orjson.loads(x)["group_id"] for x in run.stdout.splitlines()) == ["g1", "g3"]


def test_fausts_consumer_long_polls_for_fetch_wait_ms_not_fausts_fixed_1500():
    """The worker's Faust consumer is built through Faust's own code with its fetch long poll
    replaced (``streams.app._ConsumerThread``): a Faust release that builds it elsewhere
    fails here rather than silently bringing back the 1.5 s wait."""
    from aiokafka import AIOKafkaConsumer

    from streams.app import FETCH_WAIT_MS, create_app  # the app imports Faust: only here

    async def go() -> tuple[type, int]:
        app, _ = create_app(Config(), "w1", [("ev", 0)])
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return type(consumer), consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(go()) == (AIOKafkaConsumer, FETCH_WAIT_MS)
