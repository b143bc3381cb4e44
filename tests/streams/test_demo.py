"""``coordwatch demo`` and ``coordwatch generate --to-kafka`` on the real embedded broker.

The demo runs as a real process with real children (Tansu, a Faust worker, the
generator); the tests watch its output and then check with psutil that every process it
started is gone and its broker port is free. No test binds 9092: the demo gets
``--port`` with a free port, or the module's broker.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from detectors.synthetic import SyntheticStream
from streams.broker import EmbeddedBroker, answers_metadata, free_port, port_in_use
from streams.demo import BROKER_BUDGET_MB, plan_run
from streams.produce import stream_messages
from tests.helpers import read_topic

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

ALERT_ROW = re.compile(r"^\S+\s+(burst|co_action|near_duplicate)\s+(open|update)\s+\d+\.\d{3}\s+\d+\s")
STATUS = re.compile(
    r"^\[\d\d:\d\d\]\s+produced ([\d,]+) \(([\d,]+)/s\).*detected ([\d,]+) \(([\d,]+)/s\)\s+lag ([\d,]+) events"
)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    e["PYTHONUNBUFFERED"] = "1"
    return {k: v for k, v in e.items() if not k.startswith("COORDWATCH_")}


def number(text: str) -> int:
    return int(text.replace(",", ""))


class Running:
    """A ``coordwatch demo`` process whose output lines are collected as they come."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "demo", *args],
            cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while not cond():
            if self.proc.poll() is not None:
                time.sleep(0.2)
                pytest.fail(f"demo exited ({self.proc.returncode}) waiting for {what}:\n{self.output()[-4000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{self.output()[-4000:]}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in self.children():
                child.kill()
            self.proc.kill()
            self.proc.wait(10)

    def state_dir(self) -> Path:
        (match,) = re.findall(r"state in (\S+)", self.output())
        return Path(match)


@pytest.fixture
def demos() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for d in started:
        d.kill()


def assert_all_gone(children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"


# -- the demo ------------------------------------------------------------------------------
def test_demo_shows_alerts_and_throughput_live_and_ctrl_c_stops_everything(tmp_path, demos):
    port = free_port()
    t0 = time.monotonic()
    demo = Running(tmp_path, "--port", str(port), "--minutes", "1")
    demos.append(demo)
    demo.wait_for(lambda: "worker ready" in demo.output(), 60, "the worker")
    started = time.monotonic()
    waited = demo.wait_for(lambda: any(ALERT_ROW.match(x) for x in demo.lines), 60, "a first alert row")
    demo.wait_for(
        lambda: any((m := STATUS.match(x)) and number(m[4]) > 0 and number(m[2]) > 0 for x in demo.lines),
        20, "a status line with non-zero throughput",
    )  # fmt: skip
    print(f"worker ready {started - t0:.1f} s after start; first alert {waited:.1f} s later")
    children = demo.children()
    cmdlines = [" ".join(p.cmdline()) for p in children]
    assert any("tansu" in c and f"127.0.0.1:{port}" in c for c in cmdlines), cmdlines
    assert any(" worker " in c for c in cmdlines) and any("generate --to-kafka" in c for c in cmdlines), cmdlines
    assert port_in_use(port)
    state = demo.state_dir()
    assert state.is_dir()

    t_stop = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.finish(60) == 0, demo.output()[-3000:]
    print(f"stopped {time.monotonic() - t_stop:.1f} s after SIGINT")
    assert_all_gone(children)
    assert not port_in_use(port)
    assert not state.exists()
    out = demo.output()
    assert "stopped (SIGINT)" in out and "stopped generator, worker, broker; nothing left running" in out
    assert "runs 1 min (or until the stream ends) at 1,200 events/s" in out
    status = [m for x in demo.lines if (m := STATUS.match(x))]
    assert all("broker" in x for x in demo.lines if STATUS.match(x))  # the broker started here: its RSS shown
    assert number(status[-1][3]) > 0


def test_demo_on_an_existing_broker_stops_at_the_end_and_leaves_the_broker(tmp_path, demos, broker):
    demo = Running(tmp_path, "--set", f'kafka.broker="{broker.url}"', "--minutes", "0.2", "--rate", "2000")
    demos.append(demo)
    # the line is printed just before the generator is spawned: wait for the process too
    demo.wait_for(lambda: "starting the generator" in demo.output() and len(demo.children()) >= 2, 60, "the generator")
    children = demo.children()
    assert len(children) == 2  # worker and generator, no broker
    assert demo.finish(60) == 0, demo.output()[-3000:]
    out = demo.output()
    assert "configured broker" in out and "0.2 min are up" in out
    assert "stopped generator, worker; nothing left running" in out
    assert_all_gone(children)
    assert answers_metadata([f"127.0.0.1:{broker.port}"])  # not ours: left running
    (produced,) = re.findall(r"stopped \(0\.2 min are up\): ([\d,]+) events produced", out)
    print(f"{produced} events produced in 0.2 min at 2000/s")
    assert 0.6 * 2000 * 12 <= number(produced) <= 1.05 * 2000 * 12  # 12 s at 2000/s (the generator starts in ~1 s)


def test_sigterm_during_start_up_stops_what_was_started(tmp_path, demos):
    port = free_port()
    demo = Running(tmp_path, "--port", str(port))
    demos.append(demo)
    demo.wait_for(lambda: "starting the worker" in demo.output(), 30, "the worker to be started")
    children = demo.children()
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.finish(40) == 0, demo.output()[-3000:]
    assert_all_gone(children)
    assert not port_in_use(port)
    assert "nothing left running" in demo.output()


def test_a_demo_too_big_for_the_embedded_broker_is_cut_to_fit():
    p = plan_run(20_000, 60, bounded=True)
    assert p.minutes < 60 and p.broker_mb is not None and p.broker_mb <= BROKER_BUDGET_MB
    assert "cut from 60 min" in p.why
    assert plan_run(20_000, 60, bounded=False).minutes == 60  # a real cluster has retention
    default = plan_run(1200, 10, bounded=True)
    assert default.minutes == 10 and default.hours == 24  # the default day, whole


# -- generate --to-kafka ----------------------------------------------------------------------
@pytest.mark.parametrize("spread", [False, True])
def test_generate_to_kafka_sends_the_generator_stream_in_order(tmp_path, broker: EmbeddedBroker, spread: bool):
    topic = f"gen.{uuid.uuid4().hex[:10]}"
    run = subprocess.run(
        [sys.executable, "-m", "streams", "generate", "--to-kafka", "--hours", "1", "--seed", "3", "--envelope", "50",
         "--rate", "20000", "--set", f'kafka.broker="{broker.url}"', "--set", f'topics.events=["{topic}"]',
         *(["--spread"] if spread else [])],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    want = [orjson.dumps(e) for e in SyntheticStream(seed=3, hours=1).events()]
    m = re.search(r"^(\d+) events in (\d+) messages, ([\d.]+) s, ([\d,]+) events/s", run.stderr, re.M)
    assert m, run.stderr
    assert int(m[1]) == len(want)
    assert 0.6 * 20_000 <= number(m[4]) <= 1.02 * 20_000  # paced: never faster than --rate
    records = read_topic(broker.port, topic)
    assert len(records) == int(m[2]) and len({r.partition for r in records}) == (4 if spread else 1)
    got = []
    for r in sorted(records, key=lambda r: (r.offset, r.partition)):  # spread: message i on partition i % 4
        events = orjson.loads(r.value)
        assert isinstance(events, list) and 1 <= len(events) <= 50
        got += [orjson.dumps(e) for e in events]
    assert got == want


def test_generate_without_to_kafka_still_needs_out(tmp_path):
    run = subprocess.run([sys.executable, "-m", "streams", "generate", "--hours", "1"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert run.returncode != 0 and "--out DIR or --to-kafka" in run.stderr
    run = subprocess.run([sys.executable, "-m", "streams", "generate", "--out", "g", "--envelope", "5"], cwd=tmp_path,
                         env=env(), capture_output=True, text=True, timeout=30)  # fmt: skip
    assert run.returncode != 0 and "only with --to-kafka" in run.stderr


def test_stream_messages_are_lazy_and_clocked_by_event_time():
    def chunks() -> Iterator[list[dict[str, object]]]:  # endless: nothing may be materialised
        for k in itertools.count():
            base = 1000.0 + 300 * k
            # 10 events in the chunk's first 30 s, 10 spread over the rest
            ts = [base + 3 * i for i in range(10)] + [base + 30 + 27 * i for i in range(1, 11)]
            yield [{"ts": t, "account_id": "a", "action": "post"} for t in ts]

    messages = list(itertools.islice(stream_messages(chunks(), 5, 1 << 20, 1000.0), 12))
    assert [n for _, n, _ in messages] == [5] * 12
    clocks = [c for _, _, c in messages]
    assert clocks == sorted(clocks)
    assert clocks[3] == pytest.approx(20) and clocks[7] == pytest.approx(40)  # each chunk ends at its count
    assert clocks[1] < 2.5  # the first 10 events take 30 s of the chunk's 300: a tenth of its wall time
    events = [e for m, _, _ in messages for e in orjson.loads(m)]
    assert [e["ts"] for e in events][:20] == [e["ts"] for e in next(chunks())]


# -- the alerts view's parts the demo uses -----------------------------------------------------
def test_alert_rows_show_the_status_and_the_compact_row_fits_a_terminal():
    from detectors.base import Alert
    from streams.alerts_view import header, row

    keys = tuple(f"https://www.example.org/politics/{i:07d}" for i in range(3))
    a = orjson.loads(Alert("co_action", "g1", 1, 12.5, 1_700_000_000.0, 1_700_000_060.0,
                           tuple(f"u{i:05d}" for i in range(40)), 40, keys, {}, {}, 1_700_000_060.0).to_json())  # fmt: skip
    assert a["status"] == "update"
    for compact in (False, True):
        line = row(a, compact=compact)
        assert re.search(r"co_action\s+update\s+12\.500\s+40\s+u00000,u00001,u00002", line), line
        assert " type " in header(compact) and " status " in header(compact)
    assert len(row(a, compact=True)) <= 125 and ALERT_ROW.match(row(a, compact=True))


def test_following_the_alerts_topic_ends_when_asked(broker):
    from streams.alerts_view import read_alerts
    from streams.broker import ensure_topics
    from streams.config import load

    topic = f"alerts.{uuid.uuid4().hex[:10]}"
    c = load(sets=[f'kafka.broker="{broker.url}"', f'topics.alerts="{topic}"'], environ={}).config
    ensure_topics(c, [topic])
    t0 = time.monotonic()
    assert list(read_alerts(c, follow=True, from_beginning=True, idle_timeout_s=None,
                            stop=lambda: time.monotonic() - t0 > 1)) == []  # fmt: skip
    assert 1 <= time.monotonic() - t0 < 10
