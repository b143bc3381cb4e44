"""Workers as real processes on the real embedded broker (Tansu, 127.0.0.1, a free port).

Every test uses its own app id and topics (the broker never deletes anything), runs
``python -m streams worker`` in ``tmp_path`` and kills whatever it started, pass or fail.

The stream is SyntheticStream(seed=3, hours=3, rate=3, accounts=8000) followed by two
quiet sentinel events a day apart: a live worker closes a window when later events
arrive, while a replay closes them all at the end of its file (``advance(inf)``); the
sentinels close every window in both, so the alert sets must be equal.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from detectors.burst import BurstDetector
from detectors.events import Rejection, parse_message, parse_obj
from detectors.params import BurstParams
from detectors.synthetic import SyntheticStream
from tests.helpers import read_topic as read_records
from streams.broker import EmbeddedBroker
from streams.produce import envelopes
from streams.worker import fetch_metrics

REPO = Path(__file__).resolve().parents[2]
COORD_EVAL = REPO.parent / "shared" / "data" / "coord_eval"
MAX_EVENT_BYTES = 4096
pytestmark = pytest.mark.timeout(180)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "events.jsonl"
    events = list(SyntheticStream(seed=3, hours=3, rate=3, accounts=8000).events())
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events + sentinels(max(e["ts"] for e in events))))
    return path


def sentinels(last: float) -> list[dict[str, Any]]:
    """Two posts a day and two days after ``last``: a day later every window is over, and a
    post (a document: near_duplicate sends due updates at documents) makes the stream close
    them as a replay's end of file does."""
    return [{"ts": last + d * 86_400, "account_id": "sentinel", "action": "post",
             "text": f"sentinel post number {d} after the end of the test stream"} for d in (1, 2)]  # fmt: skip


@pytest.fixture(scope="module")
def expected(stream_file: Path) -> set[tuple[Any, ...]]:
    """The alert set of ``coordwatch replay`` on the same file."""
    out = stream_file.with_name("replay-alerts.jsonl")
    run = subprocess.run(
        [sys.executable, "-m", "streams", "replay", str(stream_file), "--out", str(out), "--set", "replay.progress=false"],
        cwd=stream_file.parent, env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    alerts = summarise(out.read_bytes().splitlines())
    assert alerts, "replay found no alerts in a stream with injected campaigns"
    return alerts


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


# -- helpers -----------------------------------------------------------------------------
def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    return e


def summarise(lines: list[bytes]) -> set[tuple[Any, ...]]:
    out = set()
    for line in lines:
        a = orjson.loads(line)
        out.add((a["alert_id"], a["type"], tuple(a["accounts"])))
    return out


class Setup:
    """One test's config file, topics and worker processes."""

    def __init__(self, broker: EmbeddedBroker, tmp: Path, procs: list[subprocess.Popen[bytes]],
                 shards: dict[str, int] | None = None, **kafka: Any) -> None:  # fmt: skip
        self.broker, self.tmp, self.procs = broker, tmp, procs
        tag = f"t{uuid.uuid4().hex[:10]}"
        self.app_id = tag
        self.events, self.alerts, self.dlq = f"{tag}.events", f"{tag}.alerts", f"{tag}.dlq"
        settings = {
            "broker": broker.url, "app_id": tag, "session_timeout_s": 6, "commit_interval_s": 1,
            "snapshot_interval_s": 1, "data_dir": str(tmp / "data"), "batch_messages": 20, **kafka,
        }  # fmt: skip
        lines = ["[kafka]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()]
        lines += ["[topics]", f'events = ["{self.events}"]', f'alerts = "{self.alerts}"', f'dead_letter = "{self.dlq}"']
        lines += ["[events]", f"max_event_bytes = {MAX_EVENT_BYTES}", "[replay]", "progress = false"]
        if shards:
            lines += ["[work]", "shards = {" + ", ".join(f"{k} = {n}" for k, n in shards.items()) + "}"]
        self.config = tmp / "coordwatch.toml"
        self.config.write_text("\n".join(lines) + "\n")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [sys.executable, "-m", "streams", *args, "--config", str(self.config)],
            cwd=self.tmp, env=env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return run

    def start_worker(self, name: str = "w1") -> Worker:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "--config", str(self.config), "--worker-id", name],
                cwd=self.tmp, env=env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        worker = Worker(proc, self.tmp / "data" / name, log)
        worker.wait_for(lambda: "Worker ready" in worker.log_text(), 60, "the worker to join its group")
        return worker

    def produce_live(self, stream_file: Path) -> subprocess.Popen[bytes]:
        """``coordwatch produce --spread`` of the file at 6,000 events/s over the four input
        partitions, in the background."""
        producer = subprocess.Popen(
            [sys.executable, "-m", "streams", "produce", str(stream_file), "--rate", "6000", "--spread",
             "--config", str(self.config)],  # fmt: skip
            cwd=self.tmp, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append(producer)
        return producer

    def assert_alerts_once(self, expected: set[tuple[Any, ...]]) -> None:
        """The alerts topic holds exactly ``expected``, no id twice (given 2 s to show one),
        and the clean stream sent nothing to the dead letters (no event judged late)."""
        time.sleep(2)
        got = self.alert_values()
        assert len(got) == len(set(got)), "an alert id was published twice"
        # first, as an event judged late changes the alerts: the reasons say why they differ
        dead = read_topic(self.broker, self.dlq)[1]
        assert not dead, f"{len(dead)} dead letters, reasons {Counter(dict(r.headers).get('reason') for r in dead)}"
        assert summarise(got) == expected

    def alert_values(self) -> list[bytes]:
        """Every alert on the topic, duplicates included."""
        return read_topic(self.broker, self.alerts)[0]


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], folder: Path, log: Path) -> None:
        self.proc, self.folder, self.log = proc, folder, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        return fetch_metrics("127.0.0.1", int((self.folder / "metrics.port").read_text().strip()), timeout_s=5)

    def metric(self, name: str) -> float:
        try:
            return self.metrics().get(name, 0.0)
        except OSError:
            return 0.0

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited ({self.proc.returncode}) waiting for {what}:\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def read_topic(broker: EmbeddedBroker, topic: str) -> tuple[list[bytes], list[Any]]:
    """(values, records) of every message on ``topic``, in partition then offset order."""
    records = read_records(broker.port, topic)
    return [r.value for r in records], records


def committed(broker: EmbeddedBroker, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic``, by partition (a consumer that only asks)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], group_id=group, enable_auto_commit=False)
    try:
        got = {p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic) or ()}
    finally:
        consumer.close()
    return {p: o for p, o in got.items() if o is not None}


def write_oldest_snapshot_again(broker: EmbeddedBroker, topic: str) -> None:
    """Produce the first complete snapshot on ``topic`` again (its chunks, keys and headers):
    it becomes the newest, older than the offsets its stage's group has committed since."""
    from kafka import KafkaProducer

    _, records = read_topic(broker, topic)
    first = records[0].key
    chunks = [r for r in records if r.key == first]
    assert [dict(r.headers)["chunk"] for r in chunks] == [f"{i}/{len(chunks)}".encode() for i in range(len(chunks))]
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], max_request_size=8 << 20)
    for r in chunks:
        producer.send(topic, key=r.key, value=r.value, headers=list(r.headers)).get(10)
    producer.close()


def counts(stream_file: Path) -> tuple[int, int]:
    """(messages, valid events) that ``coordwatch produce`` makes of the file."""
    with open(stream_file, "rb") as f:
        msgs = list(envelopes(f, 100, MAX_EVENT_BYTES))
    valid = sum(1 for m, _ in msgs for item in parse_message(m, MAX_EVENT_BYTES) if not isinstance(item, Rejection))
    return len(msgs), valid


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [None, {"burst": 2}], ids=["whole", "burst-in-2-shards"])
def test_bad_input_goes_to_the_dead_letter_topic_and_the_worker_keeps_running(broker, tmp_path, procs, shards):
    """Reported by the first detect stage, or with shards by ingest, which then parses."""
    s = Setup(broker, tmp_path, procs, shards)
    good = b'{"ts": 1700000000, "account_id": "a1", "action": "post", "text": "hello"}'
    inputs = [
        good,
        b"this is not json",
        b'{"ts": 1700000001, "action": "post"}',
        b'{"ts": "yesterday", "account_id": "a2", "action": "post"}',
        b'{"ts": 1700000002, "account_id": ["x"], "action": "post"}',
        b'{"ts": 1700000003, "account_id": "a3", "action": "post", "text": "' + b"x" * MAX_EVENT_BYTES + b'"}',
        b'[' + good + b', {"ts": 1700000004, "account_id": "b"}, ' + good.replace(b"a1", b"a4") + b"]",
        b"[]",
        b"\xff\xfe{",
        b"42",
        orjson.dumps({"ts": time.time() + 86_400, "account_id": "a7", "action": "post", "text": "a clock ahead"}),
        good.replace(b"a1", b"a5"),
    ]
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    from streams.broker import ensure_topics
    from streams.config import load

    ensure_topics(load(s.config).config, [s.events])
    sent = [producer.send(s.events, key=b"k", value=v).get(10) for v in inputs]
    producer.close()
    want = []
    n_valid = 0
    for meta, value in zip(sent, inputs, strict=True):  # events.max_ahead_s (60) after the record's timestamp
        for item in parse_message(value, MAX_EVENT_BYTES, meta.timestamp / 1000 + 60):
            if isinstance(item, Rejection):
                want.append((meta.partition, meta.offset, item.reason, item.index, item.raw))
            else:
                n_valid += 1
    assert {w[2] for w in want} >= {"not_json", "missing_field:account_id", "bad_ts", "bad_type:account_id",
                                    "too_large", "missing_field:action", "empty_envelope", "not_utf8", "not_object",
                                    "future_ts"}  # fmt: skip

    w = s.start_worker()
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= len(inputs), 30, "all input messages")
    w.wait_for(lambda: len(read_topic(broker, s.dlq)[0]) >= len(want), 20, "the dead letters")
    _, records = read_topic(broker, s.dlq)
    got = []
    for r in records:
        h = {k: v.decode() for k, v in r.headers}
        assert h["source_topic"] == s.events and h["detail"]
        index = int(h["index"]) if "index" in h else None
        got.append((int(h["source_partition"]), int(h["source_offset"]), h["reason"], index, r.value))
        assert r.key == b"k"
    assert sorted(got) == sorted(want)

    # ingest dead-letters what it cannot parse; the events reach the detect stages after
    w.wait_for(lambda: w.metric("coordwatch_events_total") >= n_valid, 20, "the valid events detected")
    m = w.metrics()
    for reason in {x[2] for x in want}:
        assert m[f"coordwatch_rejected_total{{reason={reason}}}"] == sum(1 for x in want if x[2] == reason)
    assert m["coordwatch_events_total"] == n_valid
    # still alive and still consuming
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    producer.send(s.events, key=b"k", value=good.replace(b"a1", b"a6")).get(10)
    producer.close()
    w.wait_for(lambda: w.metric("coordwatch_events_total") == n_valid + 1, 20, "the event after the bad ones")
    assert w.proc.poll() is None


def test_an_event_produced_twice_is_dead_lettered_once_by_each_detect_stage(broker, tmp_path, procs):
    """A producer's retry: the same envelope sent twice, then an event a day later that closes
    their tick. Each detect stage detects the events once and dead-letters the copies
    (reason duplicate, its unit in the header, no source partition: the copy and its twin may
    come from any two partitions)."""
    s = Setup(broker, tmp_path, procs)
    from streams.broker import ensure_topics
    from streams.config import load

    ensure_topics(load(s.config).config, [s.events])
    envelope = orjson.dumps([{"ts": 1_700_000_000 + i, "account_id": f"a{i}", "action": "post", "text": f"post {i}"}
                             for i in range(3)])  # fmt: skip
    later = orjson.dumps({"ts": 1_700_086_400, "account_id": "z", "action": "post", "text": "a day later"})
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    for value in (envelope, envelope, later):
        producer.send(s.events, key=b"k", value=value).get(10)
    producer.close()
    w = s.start_worker()
    w.wait_for(lambda: len(read_topic(broker, s.dlq)[0]) >= 9, 30, "the copies' dead letters")
    time.sleep(1)  # time to show one too many
    _, records = read_topic(broker, s.dlq)
    got = sorted((dict(r.headers)["reason"], dict(r.headers)["detector"], "source_topic" in dict(r.headers),
                  orjson.loads(r.value)["account_id"]) for r in records)  # fmt: skip
    units = (b"burst", b"co_action", b"near_duplicate")
    assert got == sorted((b"duplicate", u, False, f"a{i}") for u in units for i in range(3))
    assert w.metric("coordwatch_rejected_total{reason=duplicate}") == 9


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_stream_gives_the_same_alerts_as_replay(broker, tmp_path, procs, stream_file, expected, loop):
    s = Setup(broker, tmp_path, procs, event_loop=loop)
    t0 = time.monotonic()
    s.cli("produce", str(stream_file))
    w = s.start_worker()
    messages, valid = counts(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages, 60, "the whole stream")
    w.wait_for(lambda: len(s.alert_values()) >= len(expected), 20, "the alerts")
    print(f"stream of {valid} events: produced, worker started and all alerts out in {time.monotonic() - t0:.1f} s")
    assert "first input consumed" in w.log_text() and f"(event loop: {loop}" in w.log_text()
    assert w.metric("coordwatch_events_total") == valid
    got = s.alert_values()
    assert len(got) == len(set(got))
    assert summarise(got) == expected
    # ingest's own group commits the input it has framed (within commit_interval_s), so a
    # restart reads on from there
    _, records = read_topic(broker, s.events)
    ends = {p: max(r.offset for r in records if r.partition == p) + 1 for p in {r.partition for r in records}}
    w.wait_for(lambda: committed(broker, f"{s.app_id}.ingest", s.events) == ends, 10, "ingest's commit of the input")


def test_a_real_dataset_streamed_gives_the_bytes_of_its_replay(broker, tmp_path, procs):
    """german_elections (252 k events of coordinated url and phash sharing, ``../shared``),
    produced in envelopes: one worker publishes exactly the alerts replay writes, byte for
    byte (a real stream's keys, times and volumes, not only the generator's)."""
    with gzip.open(COORD_EVAL / "datasets" / "german_elections.jsonl.gz") as f:
        lines = f.read().splitlines()
    last = max(orjson.loads(line)["ts"] for line in lines)
    path = tmp_path / "german_elections.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines + [orjson.dumps(e) for e in sentinels(last)]))
    s = Setup(broker, tmp_path, procs, batch_messages=1000, snapshot_interval_s=30)
    out = tmp_path / "replay.jsonl"
    s.cli("replay", str(path), "--out", str(out), timeout=120)
    want = out.read_bytes().splitlines()
    assert len(want) > 500  # co_action's url and phash rings, bursts
    s.cli("produce", str(path))
    w = s.start_worker()
    messages, valid = counts(path)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages, 120, "the whole dataset")
    w.wait_for(lambda: len(s.alert_values()) >= len(want), 60, "the alerts")
    time.sleep(2)  # time to show one alert too many
    assert w.metric("coordwatch_events_total") == valid == len(lines) + 2
    assert sorted(s.alert_values()) == sorted(want)  # every alert once (the alerts topic has partitions)


def test_a_backlog_spread_over_four_partitions_gives_the_same_alerts_and_no_late_event(
    broker, tmp_path, procs, stream_file, expected
):
    """Ingest reads the partitions' backlogs in whatever interleaving its fetches make, hours
    of event time apart: the ticks wait for the slowest partition, so nothing is late."""
    s = Setup(broker, tmp_path, procs)
    s.cli("produce", str(stream_file), "--spread")
    _, records = read_topic(broker, s.events)
    assert {r.partition for r in records} == {0, 1, 2, 3}
    w = s.start_worker()
    messages, valid = counts(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages, 60, "the whole stream")
    w.wait_for(lambda: len(s.alert_values()) >= len(expected), 30, "the alerts")
    assert w.metric("coordwatch_events_total") == valid
    s.assert_alerts_once(expected)


def test_input_from_a_transactional_producer_gives_replays_alerts_and_holds_no_tick_past_idle_s(
    broker, tmp_path, procs, stream_file, expected
):
    """A transactional producer (as Kafka Streams or Flink write) over the four partitions:
    each commit leaves a control record at the end of the partition, so the newest offset a
    worker reads stays one below the high watermark. A partition caught up that way still
    counts as caught up: once quiet for ``work.idle_s`` (5 s) it holds the others' ticks no
    more, so the last alerts come out in seconds, not after a stalled source's 60 s; also
    once the worker is restarted with nothing new to read."""
    s = Setup(broker, tmp_path, procs)
    from streams.broker import ensure_topics
    from streams.config import load

    ensure_topics(load(s.config).config, [s.events])
    with open(stream_file, "rb") as f:
        msgs = [m for m, _ in envelopes(f, 100, MAX_EVENT_BYTES)]
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], transactional_id=s.app_id,
                             enable_idempotence=True)  # fmt: skip
    producer.init_transactions()
    for lo in range(0, len(msgs), 25):
        producer.begin_transaction()
        for i in range(lo, min(lo + 25, len(msgs))):
            producer.send(s.events, value=msgs[i], partition=i % 4)
        producer.commit_transaction()
    producer.close()
    _, records = read_topic(broker, s.events)
    assert len(records) == len(msgs) and {r.partition for r in records} == {0, 1, 2, 3}
    ends = {p: max(r.offset for r in records if r.partition == p) + 1 for p in range(4)}
    w = s.start_worker()
    _, valid = counts(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_events_total") >= valid, 60, "the whole stream")
    t0 = time.monotonic()

    def holding(worker: Worker) -> dict[str, float]:
        return {k: v for k, v in worker.metrics().items() if k.startswith("coordwatch_partitions_holding{")}

    w.wait_for(lambda: len(holding(w)) == 3 and not any(holding(w).values()), 20, "no partition holding the ticks")
    print(f"no partition holding {time.monotonic() - t0:.1f} s after the last event was taken")
    w.wait_for(lambda: len(s.alert_values()) >= len(expected), 10, "the alerts")
    s.assert_alerts_once(expected)
    # ingest commits the offset after each partition's last record (the marker after it is skipped)
    w.wait_for(lambda: committed(broker, f"{s.app_id}.ingest", s.events) == ends, 10, "ingest's commit of the input")
    # restarted with nothing new to read, ingest reports each partition's end from that commit
    time.sleep(2)  # a snapshot after the commit
    w.kill()
    w2 = s.start_worker()
    time.sleep(12)  # past REPORT_VALID_S: the reports from before the restart no longer count
    w2.wait_for(lambda: len(holding(w2)) == 3 and not any(holding(w2).values()), 8, "no partition holding, restarted")
    s.assert_alerts_once(expected)


SPLITS = [None, {"burst": 2}, {"co_action": 2}, {"near_duplicate": 2}]
SPLIT_IDS = ["whole", "burst-in-2-shards", "co_action-in-2-object-parts", "near_duplicate-in-2-band-parts"]


@pytest.mark.parametrize("shards", SPLITS, ids=SPLIT_IDS)
def test_sigkill_mid_stream_then_restart_loses_nothing_and_duplicates_nothing(
    broker, tmp_path, procs, stream_file, expected, shards
):
    s = Setup(broker, tmp_path, procs, shards, batch_messages=2)
    messages, _ = counts(stream_file)
    w = s.start_worker()
    producer = s.produce_live(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages * 0.4, 60, "40% of the stream")
    w.wait_for(lambda: len(s.alert_values()) >= 3, 60, "some alerts")  # killed with alerts out
    w.kill()
    before, live = len(s.alert_values()), producer.poll() is None
    assert producer.wait(60) == 0
    w2 = s.start_worker()
    w2.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 60, "the rest of the alerts")
    print(f"{before} of {len(expected)} alerts out at the kill, producer still running: {live}; restarted worker "
          f"suppressed {w2.metric('coordwatch_alerts_suppressed_total'):.0f}")
    s.assert_alerts_once(expected)
    assert "restored" in w2.log_text(), "the restarted worker should resume its stages from their snapshots"


def test_a_stage_handed_messages_past_a_gap_has_them_read_again_from_its_offset(
    broker, tmp_path, procs, stream_file, expected
):
    """Faust hands a stage messages from beyond the offset it takes next (seen without a
    rebalance: Faust dropped messages it had fetched, and the stage waited for good; here its
    oldest snapshot is written again while the worker is down, so it restores to offsets
    below those its group committed since): the stage has Faust read its partition again
    from its own offset, and the alerts are replay's, each once."""
    s = Setup(broker, tmp_path, procs, batch_messages=2)
    messages, _ = counts(stream_file)
    w = s.start_worker()
    producer = s.produce_live(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages * 0.6, 60, "60% of the stream")
    w.kill()
    write_oldest_snapshot_again(broker, f"{s.app_id}.snapshots.detect-co_action")
    assert producer.wait(60) == 0
    w2 = s.start_worker()
    w2.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 60, "the rest of the alerts")
    s.assert_alerts_once(expected)
    assert "restored" in w2.log_text()
    assert w2.metric("coordwatch_out_of_order_total") > 0 and "never came, later ones did" in w2.log_text()


def test_offsets_missing_from_a_work_partition_are_gone_past_not_waited_for(broker, tmp_path, procs, stream_file,
                                                                              expected):  # fmt: skip
    """A gap that is really in the log (here a transaction's commit marker on work partition
    0, after an empty message: a report of nothing; retention or compaction leave the same):
    the stage reads the partition again from the missing offset, gets the same later message,
    checks with a fetch of its own that nothing is there, and goes on. Replay's alerts, each
    once; waiting for the offset, detect-near_duplicate stalled for good."""
    s = Setup(broker, tmp_path, procs, batch_messages=2)
    messages, _ = counts(stream_file)
    w = s.start_worker()
    producer = s.produce_live(stream_file)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= messages * 0.3, 60, "30% of the stream")
    tx = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"], transactional_id=s.app_id,
                       enable_idempotence=True)  # fmt: skip
    tx.init_transactions()
    tx.begin_transaction()
    tx.send(f"{s.app_id}.work", value=b"", partition=0)
    tx.commit_transaction()
    tx.close()
    assert producer.wait(60) == 0
    w.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 60, "the alerts")
    s.assert_alerts_once(expected)
    assert w.metric("coordwatch_missing_total") == 1 and "are not in the log" in w.log_text()


def test_broker_paused_30s_worker_waits_and_resumes_without_loss(broker, tmp_path, procs, stream_file, expected):
    s = Setup(broker, tmp_path, procs)
    lines = stream_file.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(lines[: len(lines) // 2]))
    second.write_bytes(b"".join(lines[len(lines) // 2 :]))
    _, valid = counts(stream_file)
    w = s.start_worker()
    s.cli("produce", str(first), "--key", "k")
    first_messages, _ = counts(first)
    w.wait_for(lambda: w.metric("coordwatch_messages_total") >= first_messages, 60, "the first half")
    broker.signal(signal.SIGSTOP)
    try:
        time.sleep(30)
    finally:
        broker.signal(signal.SIGCONT)
    assert w.proc.poll() is None, w.log_text()[-4000:]
    s.cli("produce", str(second), "--key", "k")
    w.wait_for(lambda: w.metric("coordwatch_events_total") >= valid, 90, "the second half")
    w.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 30, "the alerts")
    time.sleep(1)
    assert w.metric("coordwatch_events_total") == valid, "an event was processed twice"
    got = s.alert_values()
    assert len(got) == len(set(got))
    assert summarise(got) == expected
    assert w.proc.poll() is None


def stages(w: Worker) -> set[str]:
    """The stages a worker holds and has snapshotted (a revoked one stops reporting)."""
    prefix = "coordwatch_pipeline_state_bytes{stage="
    return {k[len(prefix) : -1] for k in w.metrics() if k.startswith(prefix)}


@pytest.mark.parametrize("shards", SPLITS, ids=SPLIT_IDS)
def test_two_workers_give_the_same_alerts_as_one(broker, tmp_path, procs, stream_file, expected, shards):
    """Idle workers, then the whole stream at once on four partitions, two per worker's ingest:
    each detect stage waits until both ingests have seen their partitions' backlog. Also with
    burst split by key into two shards (five work partitions), or co_action into two object
    parts and their merge (five), or near_duplicate into two band parts and their merge
    (five): the alerts of replay, which runs them whole."""
    s = Setup(broker, tmp_path, procs, shards)
    w1, w2 = s.start_worker("w1"), s.start_worker("w2")
    s.cli("produce", str(stream_file), "--spread")
    w1.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 90, "the alerts")
    s.assert_alerts_once(expected)
    held = [stages(w1), stages(w2)]
    print(f"stages: w1 {sorted(held[0])}, w2 {sorted(held[1])}")
    assert all(held), "one worker held no stage: the work was not shared"


def test_a_second_worker_joining_mid_stream_changes_no_alert(broker, tmp_path, procs, stream_file, expected):
    s = Setup(broker, tmp_path, procs, batch_messages=2)
    messages, _ = counts(stream_file)
    w1 = s.start_worker("w1")
    producer = s.produce_live(stream_file)
    w1.wait_for(lambda: w1.metric("coordwatch_messages_total") >= messages * 0.4, 60, "40% of the stream")
    w2 = s.start_worker("w2")
    assert producer.wait(60) == 0
    w2.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 90, "the rest of the alerts")
    s.assert_alerts_once(expected)
    assert stages(w2), "the joining worker took no stage over"
    assert "restored" in w2.log_text(), "the joining worker should resume a stage from its snapshot"


def test_sigkill_one_of_two_workers_the_other_takes_its_stages_over(broker, tmp_path, procs, stream_file, expected):
    s = Setup(broker, tmp_path, procs, batch_messages=2)
    messages, _ = counts(stream_file)
    w1, w2 = s.start_worker("w1"), s.start_worker("w2")
    producer = s.produce_live(stream_file)
    w1.wait_for(lambda: w1.metric("coordwatch_messages_total") + w2.metric("coordwatch_messages_total")
                >= messages * 0.4, 60, "40% of the stream")  # fmt: skip
    lost = stages(w2)
    assert lost, "the worker to kill held no stage"
    w2.kill()
    assert producer.wait(60) == 0
    w1.wait_for(lambda: len(set(s.alert_values())) >= len(expected), 90, "the rest of the alerts")
    s.assert_alerts_once(expected)
    assert lost <= stages(w1), f"w1 holds {sorted(stages(w1))}, not all of w2's {sorted(lost)}"


def test_a_work_topic_made_for_another_detector_set_stops_the_worker_at_start(broker, tmp_path, procs):
    s = Setup(broker, tmp_path, procs)
    from streams.broker import ensure_topics
    from streams.config import load

    ensure_topics(load(s.config).config, [f"{s.app_id}.work"], partitions=2)  # as if two detectors ran
    run = subprocess.run(
        [sys.executable, "-m", "streams", "worker", "--config", str(s.config), "--worker-id", "w1"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"kafka.app_id = '{s.app_id}'" in run.stderr and "2 partitions" in run.stderr
    assert "use a new kafka.app_id" in run.stderr


@pytest.mark.parametrize("shards", [None, {"burst": 3, "co_action": 2, "near_duplicate": 2}],
                         ids=["whole", "burst-in-3-co_action-and-near_duplicate-in-2"])
def test_a_late_event_is_dead_lettered_by_every_detector_that_never_saw_it(broker, tmp_path, procs, shards):
    """Once per detector, or per shard of burst that its keys go to (co_action and
    near_duplicate once, whatever their parts)."""
    s = Setup(broker, tmp_path, procs, shards)
    base = 1_700_000_000.0
    on_time = [{"ts": base + i, "account_id": f"a{i % 7}", "action": "post", "text": f"post number {i}"} for i in range(0, 7200, 3)]
    late = {"ts": base + 60, "account_id": "late-one", "action": "post", "text": "an hour too late #toolate", "event_id": "late-1"}
    if shards:
        routes = BurstDetector.router(BurstParams()).route([parse_obj(late)], shards["burst"])  # type: ignore[list-item]
        bursts = [f"burst.{k}" for k, idx in enumerate(routes) if idx.size]
    else:
        bursts = ["burst"]
    w = s.start_worker()
    producer = KafkaProducer(bootstrap_servers=[f"127.0.0.1:{broker.port}"])
    for i in range(0, len(on_time), 10):  # envelopes within max_event_bytes
        producer.send(s.events, key=b"k", value=orjson.dumps(on_time[i : i + 10]))
    producer.send(s.events, key=b"k", value=orjson.dumps(late)).get(10)
    producer.close()
    w.wait_for(lambda: w.metric("coordwatch_rejected_total{reason=late}") >= 2 + len(bursts), 30, "the late dead letters")
    time.sleep(2)
    _, records = read_topic(broker, s.dlq)
    heads = [{k: v.decode() for k, v in r.headers} for r in records]
    assert bursts and sorted(h["detector"] for h in heads) == sorted([*bursts, "co_action", "near_duplicate"])
    assert {(h["reason"], h["source_topic"]) for h in heads} == {("late", s.events)}
    assert all(orjson.loads(r.value)["event_id"] == "late-1" for r in records)
