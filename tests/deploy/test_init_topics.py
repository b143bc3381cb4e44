"""deploy/init_topics.py (the compose file's topic-init) against the real embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from streams.broker import EmbeddedBroker, bootstrap_servers

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "init_topics.py"
TOPICS = ["coordwatch.alerts", "coordwatch.events", "dlq.coordwatch.events"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(0, log_file=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    try:
        yield b
    finally:
        b.stop()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("COORDWATCH_")} | env
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=120)


def partitions(broker: EmbeddedBroker, names: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers(broker.url))
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()


def test_creates_the_configured_topics_with_the_configured_partitions_once(broker: EmbeddedBroker) -> None:
    env = {"COORDWATCH_KAFKA__BROKER": broker.url, "COORDWATCH_TOPICS__PARTITIONS": "3"}
    first = run(env, "--alerts-retention-ms", "604800000")
    assert first.returncode == 0, first.stderr
    assert "created: coordwatch.events, coordwatch.alerts, dlq.coordwatch.events" in first.stdout
    assert partitions(broker, TOPICS) == dict.fromkeys(TOPICS, 3)

    again = run(env)
    assert again.returncode == 0, again.stderr
    assert "created: none" in again.stdout

    other = run(env, "--set", "topics.partitions=5")  # an existing topic is never changed, but reported
    assert other.returncode == 0, other.stderr
    assert other.stdout.count("topics.partitions is 5; the existing topic was left as it is") == 3
    assert partitions(broker, TOPICS) == dict.fromkeys(TOPICS, 3)


def test_topic_names_come_from_the_config(broker: EmbeddedBroker) -> None:
    env = {
        "COORDWATCH_KAFKA__BROKER": broker.url,
        "COORDWATCH_TOPICS__EVENTS": '["in.a", "in.b"]',
        "COORDWATCH_TOPICS__ALERTS": "out.alerts",
        "COORDWATCH_TOPICS__DEAD_LETTER": "out.dlq",
    }
    done = run(env)
    assert done.returncode == 0, done.stderr
    assert partitions(broker, ["in.a", "in.b", "out.alerts", "out.dlq"]) == dict.fromkeys(
        ["in.a", "in.b", "out.alerts", "out.dlq"], 4
    )


def test_exit_codes_for_an_unreachable_broker_and_an_invalid_config() -> None:
    away = run({"COORDWATCH_KAFKA__BROKER": "kafka://127.0.0.1:1"}, "--wait-s", "0")
    assert away.returncode == 1
    assert "cannot reach the broker at 127.0.0.1:1" in away.stderr
    bad = run({"COORDWATCH_TOPICS__PARTITIONS": "0"})
    assert bad.returncode == 2
    assert "topics.partitions = 0" in bad.stderr and "env COORDWATCH_TOPICS__PARTITIONS" in bad.stderr
