"""``coordwatch demo``: broker, worker and generator on one machine, alerts live.

What it starts, in order, and stops in reverse (Ctrl-C, SIGTERM or the end of the run):

1. the embedded broker (Tansu, 127.0.0.1), only if ``kafka.broker`` is the default
   embedded address (or ``--port`` is given) and nothing answers there; a broker that
   answers, or one configured elsewhere, is used as it is and left running;
2. a worker (``coordwatch worker``) with a fresh worker id and a temporary data
   directory (removed at the end), logging to a file there;
3. the generator (``coordwatch generate --to-kafka --spread``: round robin over the input
   topic's partitions, as a busy bus spreads its input), once the worker has joined its
   group, so the figures are live from the first event.

Every run uses fresh names (app id ``coordwatch-demo-<run>``, topics
``coordwatch-demo-<run>.events|alerts|dlq``): a second demo on a still-running broker
never reads the first one's events or alerts. The user's ``--config``/``--preset``/
``--set`` reach both children unchanged (secrets included, never printed), followed by
the demo's own ``--set`` for broker, app id, topics and data directory.

The screen: one table line per new alert (read from the alerts topic, each id once) and
every :data:`STATUS_EVERY_S` a status line: events produced (the generator's own count)
and detected (the worker's ``coordwatch_events_total``), both per second over the last
interval, the lag between them (events sent but not yet through the detectors), alerts
so far, the event time reached and, for a broker started here, its resident memory.

Memory. The embedded broker keeps every message in RAM (no retention). Measured here
(Tansu 0.6): ~155 MB per million generator events in 100-event envelopes for the input
alone (0.69 M events -> +108 MB, 3.46 M -> +535 MB), ~310 MB with the work topic's
compressed copy per detector (0.69 M events: input +102 MB, after a worker took them in
+112 MB; +320 MB before frames were compressed), and one set of
stage snapshots per ``kafka.snapshot_interval_s``, together the whole detection state
zstd-compressed (the state: 30 MB after 2 h of event time at the generator's density,
52 MB at 14:00, and the longest windows are 6 h). A 10-minute default run at the worker's
default 30 s interval ended at 520 MB, ~266 MB of it 21 snapshot sets (~13 MB a set; 993 MB
before snapshots were compressed, 85 % of it snapshots). So the demo's worker snapshots
about :data:`SNAPSHOTS_PER_RUN` times a run: every 30 s in the default run, less often in a
longer one (unless ``kafka.snapshot_interval_s`` is configured). :func:`plan_run` holds the
model (:data:`BROKER_BASE_MB`, :data:`BROKER_MB_PER_M_EVENTS`,
:data:`BROKER_MB_PER_SNAPSHOT`). On a broker that may be the embedded one (started
here, or answering at the embedded address) a run is cut to fit
:data:`BROKER_BUDGET_MB`; the start-up lines say how long it runs and why; and it stops
early should a broker started here grow past the budget anyway.

Children get SIGTERM if the demo itself dies without cleaning up (Linux
``PR_SET_PDEATHSIG``, set by a tiny exec shim), so not even ``kill -9`` of the demo
leaves a broker holding gigabytes.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson

from sketches.errors import CoordwatchError
from streams.broker import (
    BrokerError,
    EmbeddedBroker,
    answers_metadata,
    bootstrap_servers,
    describe,
    ensure_topics,
    port_in_use,
    terminate,
)
from streams.config import DEFAULT_BROKER, Config, Loaded
from streams.worker import fetch_metrics

#: events/s sent and minutes run by default: the generator's default day (24 h of event
#: time, 691 k events, its 20 campaigns) in 9.6 minutes, about one alert a second, which
#: a person can still read; the broker ends near 520 MB of its budget (see the docstring)
DEFAULT_RATE = 1200.0
DEFAULT_MINUTES = 10.0
#: the embedded broker's memory a run may use
BROKER_BUDGET_MB = 1536.0
#: measured (see the module docstring): the idle broker with the demo's topics, growth
#: per million input events (100-event envelopes, with the work topic's copy per detector),
#: and per set of stage snapshots (the detection state at the generator's density,
#: compressed: ~13 MB a set measured over a default run, 15 with a margin)
BROKER_BASE_MB = 40.0
BROKER_MB_PER_M_EVENTS = 310.0
BROKER_MB_PER_SNAPSHOT = 15.0
#: unless kafka.snapshot_interval_s is configured, the demo's worker snapshots about
#: SNAPSHOTS_PER_RUN times a run, every 30 s (the worker's default, and the default run's)
#: to 10 minutes
SNAPSHOTS_PER_RUN = 20
SNAPSHOT_INTERVAL_RANGE_S = (30.0, 600.0)
#: events per hour of event time of the generator at its default density (24 h: 691 k)
EVENTS_PER_HOUR = 28_800.0
STATUS_EVERY_S = 5.0
WORKER_READY_TIMEOUT_S = 90.0
GRACE_S = 20.0

_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"  # the parent died before prctl
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _with_parent_death_signal(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM when this process dies (Linux; else as is)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *cmd]


class _DemoBroker(EmbeddedBroker):
    """The embedded broker, tied to this process's life (see the module docstring)."""

    def command(self) -> list[str]:
        return _with_parent_death_signal(super().command())


# -- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    rate: float
    minutes: float
    hours: float  # event time the generator produces (whole days, at least one)
    events: int  # expected events sent in the run
    broker_mb: float | None  # expected broker memory at the end (None: no bound applies)
    why: str


def broker_mb(events: float, minutes: float, snapshot_interval_s: float) -> float:
    """The embedded broker's expected memory after ``events`` in ``minutes`` (MB)."""
    snapshots = math.floor(minutes * 60 / snapshot_interval_s) + 1  # one at the worker's start
    return BROKER_BASE_MB + BROKER_MB_PER_M_EVENTS * events / 1e6 + BROKER_MB_PER_SNAPSHOT * snapshots


def demo_snapshot_interval_s(minutes: float) -> float:
    lo, hi = SNAPSHOT_INTERVAL_RANGE_S
    return min(max(minutes * 60 / SNAPSHOTS_PER_RUN, lo), hi)


def plan_run(rate: float, minutes: float, *, bounded: bool, snapshot_interval_s: float | None = None) -> Plan:
    """How long to run and how much event time to generate; cut to the memory budget if
    ``bounded`` (the broker may be the embedded one)."""
    snapshot_interval_s = snapshot_interval_s or demo_snapshot_interval_s(minutes)

    def need(m: float) -> float:
        return broker_mb(rate * 60 * m, m, snapshot_interval_s)

    model = (
        f"the embedded broker keeps every message in RAM: ~{BROKER_MB_PER_M_EVENTS:.0f} MB per million events "
        f"+ ~{BROKER_MB_PER_SNAPSHOT:.0f} MB per worker snapshot (every {snapshot_interval_s:g} s)"
    )
    why = f"--minutes {minutes:g} at --rate {rate:,.0f} events/s"
    if bounded and need(minutes) > BROKER_BUDGET_MB:
        fit = 0.1
        while need(fit + 0.1) <= BROKER_BUDGET_MB:
            fit = round(fit + 0.1, 1)
        why = (f"cut from {minutes:g} min: {model}, so {minutes:g} min at {rate:,.0f} events/s would need "
               f"~{need(minutes):,.0f} MB; the budget is {BROKER_BUDGET_MB:,.0f} MB")  # fmt: skip
        minutes = fit
    elif bounded:
        why += f"; {model}: ~{need(minutes):,.0f} MB at the end, within the {BROKER_BUDGET_MB:,.0f} MB budget"
    events = rate * 60 * minutes
    # whole days, so the generator's daily rhythm averages out; a stream up to 5 % short
    # of the run ends it early (the default: one day, 9.6 min) rather than doubling it
    hours = 24.0 * max(1, math.ceil(events / EVENTS_PER_HOUR / 24 - 0.05))
    expected = min(events, hours * EVENTS_PER_HOUR)
    return Plan(rate, minutes, hours, round(expected), need(minutes) if bounded else None, why)


# -- the broker -----------------------------------------------------------------------------
@dataclass
class BrokerChoice:
    url: str
    started: EmbeddedBroker | None  # started by the demo (stopped at the end)
    bounded: bool  # in-memory broker (or may be): the run is cut to the budget
    note: str


def choose_broker(loaded: Loaded, port: int | None, log_file: Path) -> BrokerChoice:
    """Use the configured broker, or one that answers at the embedded address, or start
    the embedded one (see the module docstring)."""
    configured = loaded.config.kafka.broker
    if port is not None:
        if loaded.sources.get("kafka.broker", "default") != "default" and configured != DEFAULT_BROKER:
            raise CoordwatchError(
                f"--port starts the embedded broker, but kafka.broker is set to {configured} "
                f"({loaded.sources['kafka.broker']}): drop one of them"
            )
    elif configured != DEFAULT_BROKER:
        return BrokerChoice(configured, None, False, f"configured broker {describe(loaded.config.kafka)}")
    else:
        port = int(bootstrap_servers(DEFAULT_BROKER)[0].rpartition(":")[2])
    address = f"127.0.0.1:{port}"
    if port and answers_metadata([address], timeout_s=2.0):
        return BrokerChoice(
            f"kafka://{address}", None, True,
            f"the broker already answering on {address} (left running; if it is an embedded one, it keeps "
            "this run's messages in RAM until it stops)",
        )  # fmt: skip
    if port and port_in_use(port):
        raise BrokerError(
            f"port 127.0.0.1:{port} is taken by something that is not a Kafka broker: stop it, or use "
            "coordwatch demo --port N (0 = any free port)"
        )
    broker = _DemoBroker(port, log_file=log_file).start()
    return BrokerChoice(broker.url, broker, True, f"embedded broker on 127.0.0.1:{broker.port} (started here)")


# -- figures ---------------------------------------------------------------------------------
@dataclass
class Figures:
    """What the status line shows, and the deltas for its rates."""

    produced: int = 0
    detected: int = 0
    alerts: int = 0
    alerts_by_type: dict[str, int] = field(default_factory=dict)
    event_time: float | None = None
    generator_done: bool = False
    broker_rss_mb: float | None = None
    _last: tuple[float, int, int] | None = None

    def status(self, elapsed_s: float, now: float) -> str:
        if self._last is None:
            prev_t, prev_p, prev_d = now - elapsed_s, 0, 0
        else:
            prev_t, prev_p, prev_d = self._last
        dt = max(now - prev_t, 1e-9)
        self._last = (now, self.produced, self.detected)
        lag = max(self.produced - self.detected, 0)
        when = datetime.fromtimestamp(self.event_time, UTC).strftime("%m-%d %H:%M") if self.event_time else "-"
        parts = [
            f"[{int(elapsed_s) // 60:02d}:{int(elapsed_s) % 60:02d}]",
            f"produced {self.produced:,} ({(self.produced - prev_p) / dt:,.0f}/s)"
            + (" done" if self.generator_done else ""),
            f"detected {self.detected:,} ({(self.detected - prev_d) / dt:,.0f}/s)",
            f"lag {lag:,} events",
            f"alerts {self.alerts}",
            f"event time {when}",
        ]
        if self.broker_rss_mb is not None:
            parts.append(f"broker {self.broker_rss_mb:,.0f} MB")
        return "  ".join(parts)


# -- the run ---------------------------------------------------------------------------------
class Demo:
    """One demo run: :meth:`run` returns the exit code; everything started is stopped."""

    def __init__(self, loaded: Loaded, *, rate: float, minutes: float, port: int | None, seed: int,
                 config_args: Sequence[str], echo: Callable[[str], None]) -> None:
        self.loaded, self.rate, self.minutes, self.port, self.seed = loaded, rate, minutes, port, seed
        self.config_args = list(config_args)
        self.echo = echo
        self.run_id = uuid.uuid4().hex[:8]
        self.app_id = f"coordwatch-demo-{self.run_id}"
        self.worker_id = f"demo-{self.run_id}"
        self.stop = threading.Event()
        self.stop_reason = ""
        self.tmp: Path | None = None
        self.broker: BrokerChoice | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.generator: subprocess.Popen[bytes] | None = None
        self.reader: threading.Thread | None = None
        self.alerts_q: queue.Queue[bytes | BaseException] = queue.Queue()
        self.figures = Figures()
        self._logs: list[IO[bytes]] = []
        self.metrics_host = "127.0.0.1"

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.stop_reason = f"{signal.Signals(signum).name}"
        self.stop.set()

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            code = self._run()
        except CoordwatchError as exc:
            self.echo(f"coordwatch demo: {exc}")
            code = 1
        finally:
            self._shutdown()
            for s, h in old.items():
                signal.signal(s, h)
        return code

    # -- start -------------------------------------------------------------------------------
    def _run(self) -> int:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"coordwatch-demo-{self.run_id}-"))
        self.broker = choose_broker(self.loaded, self.port, self.tmp / "broker.log")
        if self.stop.is_set():
            return 0
        plan = plan_run(self.rate, self.minutes, bounded=self.broker.bounded,
                        snapshot_interval_s=self.snapshot_interval_s)
        t = self.topics
        self.echo(f"coordwatch demo {self.run_id}: {self.broker.note}")
        self.echo(
            f"  runs {plan.minutes:g} min (or until the stream ends) at {plan.rate:,.0f} events/s: ~{plan.events:,} "
            f"events of the synthetic stream (seed {self.seed}, {plan.hours:g} h of event time, 20 campaigns), "
            "then stops"
        )
        self.echo(f"  why: {plan.why}")
        self.echo(f"  topics {t['events']}, {t['alerts']}, {t['dead_letter']} (fresh for this run); "
                  f"worker {self.worker_id}, state in {self.tmp}")  # fmt: skip
        self.echo("  Ctrl-C stops everything it started.")
        config = self.child_config()
        ensure_topics(config, [t["events"], t["alerts"], t["dead_letter"]])
        if self.stop.is_set():
            return 0

        join_s = config.kafka.session_timeout_s / 2
        self.echo(f"starting the worker (joining its consumer group takes ~{join_s:g} s)...")
        self.worker = self._spawn(["worker", "--worker-id", self.worker_id], self.tmp / "worker.log")
        t0 = time.monotonic()
        metrics_port = self._wait_worker_ready(config)
        if metrics_port is None:
            return 0 if self.stop.is_set() else 1
        self.metrics_host = config.kafka.web_host
        self.echo(f"worker ready in {time.monotonic() - t0:.1f} s "
                  f"(metrics http://{self.metrics_host}:{metrics_port}/metrics); starting the generator")  # fmt: skip
        self.reader = threading.Thread(target=self._read_alerts, args=(config,), name="alerts", daemon=True)
        self.reader.start()
        self.generator = self._spawn(
            ["generate", "--to-kafka", "--rate", f"{plan.rate:g}", "--hours", f"{plan.hours:g}", "--seed",
             str(self.seed), "--spread", "--no-progress", "--json-status"],
            self.tmp / "generator.log", stdout=subprocess.PIPE,
        )  # fmt: skip
        threading.Thread(target=self._read_generator, name="generator-status", daemon=True).start()
        return self._watch(plan, metrics_port)

    @property
    def snapshot_interval_s(self) -> float:
        if self.loaded.sources.get("kafka.snapshot_interval_s", "default") == "default":
            return demo_snapshot_interval_s(self.minutes)
        return self.loaded.config.kafka.snapshot_interval_s

    @property
    def topics(self) -> dict[str, str]:
        prefix = self.app_id
        return {"events": f"{prefix}.events", "alerts": f"{prefix}.alerts", "dead_letter": f"{prefix}.dlq"}

    def demo_sets(self) -> list[str]:
        assert self.broker is not None and self.tmp is not None
        t = self.topics
        values: dict[str, Any] = {
            "kafka.broker": self.broker.url, "kafka.app_id": self.app_id, "kafka.data_dir": str(self.tmp / "data"),
            "topics.events": [t["events"]], "topics.alerts": t["alerts"], "topics.dead_letter": t["dead_letter"],
            "kafka.snapshot_interval_s": self.snapshot_interval_s,
        }  # fmt: skip
        return [f"{k}={orjson.dumps(v).decode()}" for k, v in values.items()]

    def child_config(self) -> Config:
        from streams import config as cfg

        file, preset, sets = _split_config_args(self.config_args)
        return cfg.load(file, preset=preset, sets=[*sets, *self.demo_sets()]).config

    def _spawn(self, args: list[str], log: Path, stdout: int | None = None) -> subprocess.Popen[bytes]:
        extra = [a for s in self.demo_sets() for a in ("--set", s)]
        out = open(log, "ab")
        self._logs.append(out)
        return subprocess.Popen(
            _with_parent_death_signal([sys.executable, "-m", "streams", *args, *self.config_args, *extra]),
            stdin=subprocess.DEVNULL, stdout=stdout if stdout is not None else out, stderr=out,
            start_new_session=True,  # Ctrl-C reaches the demo only: it stops them in order
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def _wait_worker_ready(self, config: Config) -> int | None:
        assert self.worker is not None and self.tmp is not None
        log = self.tmp / "worker.log"
        port_file = Path(config.kafka.data_dir) / self.worker_id / "metrics.port"  # streams.worker.serve_metrics
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not self.stop.is_set():
            if self.worker.poll() is not None:
                self._fail("the worker exited at start", log)
                return None
            if port_file.exists() and "Worker ready" in log.read_text(errors="replace"):
                return int(port_file.read_text().strip())
            if time.monotonic() > deadline:
                self._fail(f"the worker was not ready within {WORKER_READY_TIMEOUT_S:.0f} s", log)
                return None
            time.sleep(0.1)
        return None

    def _fail(self, what: str, log: Path) -> None:
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        self.echo(f"coordwatch demo: {what}; the last lines of {log.name}:")
        for line in tail:
            self.echo(f"  | {line}")
        self.stop_reason = self.stop_reason or what

    # -- threads --------------------------------------------------------------------------
    def _read_alerts(self, config: Config) -> None:
        from streams.alerts_view import read_alerts

        try:
            for raw in read_alerts(config, follow=True, from_beginning=True, idle_timeout_s=None,
                                   stop=self.stop.is_set):  # fmt: skip
                self.alerts_q.put(raw)
        except Exception as exc:  # reported by the main loop (unless stopping anyway)
            self.alerts_q.put(exc)

    def _read_generator(self) -> None:
        assert self.generator is not None and self.generator.stdout is not None
        for line in self.generator.stdout:
            try:
                status = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            self.figures.produced = int(status["events"])
            self.figures.event_time = status.get("event_time")

    # -- the live loop ---------------------------------------------------------------------
    def _watch(self, plan: Plan, metrics_port: int) -> int:
        from streams.alerts_view import header, row

        assert self.worker is not None and self.generator is not None and self.tmp is not None
        rss = self._broker_rss()
        start = time.monotonic()
        deadline = start + plan.minutes * 60
        next_status = start + STATUS_EVERY_S
        caught_up_since: float | None = None
        shown = 0
        while not self.stop.is_set():
            try:
                item = self.alerts_q.get(timeout=0.25)
            except queue.Empty:
                item = None
            while item is not None:
                if isinstance(item, BaseException):
                    raise CoordwatchError(f"reading the alerts topic failed: {item!r}")
                alert = orjson.loads(item)
                if not shown:
                    self.echo(header(compact=True))
                shown += 1
                kind = alert.get("type", "?")
                self.figures.alerts += 1
                self.figures.alerts_by_type[kind] = self.figures.alerts_by_type.get(kind, 0) + 1
                self.echo(row(alert, compact=True))
                try:
                    item = self.alerts_q.get_nowait()
                except queue.Empty:
                    item = None
            now = time.monotonic()
            if self.worker.poll() is not None:
                self._fail(f"the worker exited (code {self.worker.returncode})", self.tmp / "worker.log")
                return 1
            code = self.generator.poll()
            if code is not None and not self.figures.generator_done:
                if code != 0:
                    self._fail(f"the generator exited (code {code})", self.tmp / "generator.log")
                    return 1
                self.figures.generator_done = True
            if now >= next_status:
                next_status += STATUS_EVERY_S
                try:
                    m = fetch_metrics(self.metrics_host, metrics_port)
                    self.figures.detected = int(m.get("coordwatch_events_total", 0))
                except OSError:
                    pass
                self.figures.broker_rss_mb = rss() if rss else None
                self.echo(self.figures.status(now - start, now))
                if self.figures.generator_done and self.figures.detected >= self.figures.produced:
                    caught_up_since = caught_up_since or now
                    if now - caught_up_since >= STATUS_EVERY_S:  # alerts of the last events are out
                        self.stop_reason = "the stream ended and the worker caught up"
                        break
                if self.figures.broker_rss_mb is not None and self.figures.broker_rss_mb > BROKER_BUDGET_MB:
                    self.stop_reason = (f"the broker holds {self.figures.broker_rss_mb:,.0f} MB, over the "
                                        f"{BROKER_BUDGET_MB:,.0f} MB budget")  # fmt: skip
                    break
            if now >= deadline:
                self.stop_reason = f"{plan.minutes:g} min are up"
                break
        return 0

    def _broker_rss(self) -> Callable[[], float] | None:
        if self.broker is None or self.broker.started is None or self.broker.started.proc is None:
            return None
        import psutil

        proc = psutil.Process(self.broker.started.proc.pid)

        def rss() -> float:
            try:
                return float(proc.memory_info().rss) / 1e6
            except psutil.Error:
                return float("nan")

        return rss

    # -- stop -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Generator, then worker, then the alert reader, then the broker (last)."""
        self.stop.set()
        stopped = []
        for name, proc in (("generator", self.generator), ("worker", self.worker)):
            if proc is not None:
                _terminate(proc, GRACE_S)
                stopped.append(name)
        if self.reader is not None:
            self.reader.join(5)
        if self.broker is not None and self.broker.started is not None:
            self.broker.started.stop()
            stopped.append("broker")
        for f in self._logs:
            f.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        f = self.figures
        if self.generator is not None:
            by_type = ", ".join(f"{k} {v}" for k, v in sorted(f.alerts_by_type.items())) or "none"
            self.echo(f"stopped ({self.stop_reason or 'done'}): {f.produced:,} events produced, {f.detected:,} "
                      f"detected, {f.alerts} alerts ({by_type})")  # fmt: skip
        if stopped:
            self.echo(f"stopped {', '.join(stopped)}; nothing left running")


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    terminate(proc, grace_s)
    if proc.stdout is not None:
        proc.stdout.close()


def _split_config_args(args: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    file = preset = None
    sets = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag == "--config":
            file = value
        elif flag == "--preset":
            preset = value
        else:
            sets.append(value)
    return file, preset, sets


def config_args(config_file: str | None, preset: str | None, sets: Sequence[str]) -> list[str]:
    """The command-line form of the user's config layers, for the children."""
    out = []
    if config_file:
        out += ["--config", str(Path(config_file).resolve())]
    if preset:
        out += ["--preset", preset]
    for s in sets:
        out += ["--set", s]
    return out

