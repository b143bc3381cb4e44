"""``coordwatch bench stream``: end-to-end worker throughput beside same-run baselines.

One run, all on this machine: the embedded broker (Tansu) on a free 127.0.0.1 port, fresh
topic names, a synthetic stream (:class:`~detectors.synthetic.SyntheticStream`, 11.8
events/s of event time: ~1 M events in 24 h; the first 100 k with ``--quick``) produced
(aiokafka, acks=1) to the input topic as 100-event envelopes on ONE partition, as
``coordwatch produce`` sends a file (file order: the worker sees replay's sequence). Then:

* **raw baseline** (``raw_consume_events_per_s``): a plain aiokafka consumer reads the
  topic end to end and decodes every envelope with ``orjson.loads`` (the JSON work the
  worker does too), best of a few. For reference, the same over single-event messages.
* **plain loop** (``loop_events_per_s``, own process): the worker's work -- parse and
  one :class:`~detectors.pipeline.Pipeline` -- in an aiokafka ``getmany`` loop, no Faust.
  This, not the raw rate, is what one worker can reach: the detection core costs ~10x
  the consume + decode. The loop also times its two parts in CPU seconds: the events per
  CPU second of the parse alone (``parse_ceiling_events_per_s``) and of the detectors alone
  (``detect_ceiling_events_per_s``) are what no worker on one core can beat, each beside the
  raw rate.
* **end to end, 1 worker** (``stream_events_per_s``): a ``coordwatch worker`` process (a
  fresh app id = consumer group, fresh alerts topic, its own ``--worker-id`` and data dir
  under a temp dir), timed from its first input consumed (from its log line; its start-up,
  spawn -> first input, is reported apart: imports, Faust's 1 s wait for tables and the
  group join, ~session_timeout/2) until its Prometheus ``coordwatch_events_total`` (plus
  rejects) reaches the produced count and it has published as many alerts as the plain
  loop made of the same stream (then quiet: the alerts topic's end offsets unchanged for
  ``QUIET_S``; the end is the last change; short of them for ``SHORT_S``, the bench fails).
  The metrics are scraped every ``METRICS_POLL_S``, and every ``POLL_S`` in the last
  stretch before the count is reached: a scrape costs the worker GIL time.
  Best of a few.
  ``stream_vs_raw`` and ``stream_vs_loop`` are its ratios to the two baselines;
  ``stream_vs_loop_per_core`` compares events per CPU second of the worker and of the loop
  (below 1: what Faust, the work topic and the threads cost the worker beyond the loop's work).
* **single-event input** (``single_vs_raw_single``, ``single_vs_envelopes``): the same worker
  on a stream of one message per event, beside the raw consume of those messages and beside
  the worker on envelopes.

``--workers N`` (N > 1) runs N workers in one group against ONE worker by the same
protocol, on one stream of the same events on one input partition (``--partitions P``: round
robin over P, so the workers share ingest too and the detect stages wait for the slowest
partition, ``streams.stages.DetectStage``): the workers share the
detector stages (see ``streams.app``: a work partition per detector and one link partition),
so the N-worker run does the same work as the lone one, spread. The workers join their group
on an EMPTY topic; once a marker (``[]``, a rejection) has reached every detector stage (each
has logged its start) the assignment is settled, they are paused (SIGSTOP), the stream is
produced, they are resumed (SIGCONT), and the clock starts at the first new input -- so no
rebalance falls inside the timed span and nothing is processed twice. ``two_vs_one`` is
bounded by the largest stage's share of the work (the detectors are the unit of
parallelism); ``two_vs_one_per_core`` (events per CPU second of the workers, N against 1)
would be 1 if spreading the stages cost nothing, whatever else the machine runs.

CPU (psutil) of the broker, every worker, this process and everything else on the
machine is reported over each timed span: on a shared 2-core machine "other processes"
says how much was left. Figures are rates; only the same-run ratios mean much.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.benchmarks.common import Row
from streams.worker import fetch_metrics

RATE = 11.8  # organic events/s of event time: 1.0 M events in 24 h (detectors.synthetic)
ENVELOPE = 100
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 100_000
SEED = 0
QUIET_S = 1.5  # "alerts stopped growing": nothing new on the alerts topic for this long
#: with the alert count known (the plain loop's), how long the alerts may stay short of it
#: once every event is in: a stage waiting for input that never comes, or lost alerts
SHORT_S = 60.0
POLL_S = 0.05  # the alerts topic's end offsets (the broker answers: free for the workers)
#: the workers' metrics endpoints, except in the last stretch before the events count is
#: reached (then every POLL_S, so the end is as sharp): a scrape costs a worker a few ms of
#: its GIL (py-spy: ~6 % of a lone worker's samples when scraped every POLL_S; its events/s
#: changed less than the spread between runs)
METRICS_POLL_S = 0.5
REPO = Path(__file__).resolve().parents[2]


# -- input -----------------------------------------------------------------------------
def stream_envelopes(n_events: int, seed: int = SEED, rate: float = RATE) -> list[bytes]:
    """The first ``n_events`` of a synthetic stream, as JSON arrays of ``ENVELOPE`` events."""
    lines = stream_lines(n_events, seed, rate)
    return [b"[" + b",".join(lines[i : i + ENVELOPE]) + b"]" for i in range(0, len(lines), ENVELOPE)]


def stream_lines(n_events: int, seed: int = SEED, rate: float = RATE) -> list[bytes]:
    """The first ``n_events`` of a synthetic stream, one JSON object each."""
    from detectors.synthetic import SyntheticStream

    # at least a day (the stream starts at night, on a daily rhythm), then cut: the
    # generator is lazy, so events past the cut cost nothing
    hours = max(24.0, n_events / (rate * 3600) * 1.2)
    lines: list[bytes] = []
    for chunk in SyntheticStream(seed=seed, hours=hours, rate=rate).chunks():
        lines.extend(map(orjson.dumps, chunk))
        if len(lines) >= n_events:
            break
    del lines[n_events:]
    return lines


def envelope_events(envelopes: Sequence[bytes]) -> int:
    return sum(len(orjson.loads(m)) for m in envelopes)


async def create_topic(servers: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(servers: str, topic: str, by_partition: Sequence[Sequence[bytes]]) -> float:
    """Send ``by_partition[p]`` to partition ``p`` (aiokafka, acks=1); seconds until all acked."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks=1, linger_ms=5, max_batch_size=1 << 20,
        max_request_size=4 << 20, client_id="coordwatch-bench-produce",
    )  # fmt: skip
    await producer.start()
    try:
        t0 = time.perf_counter()
        pending = []
        key = b"bench"
        for p, msgs in enumerate(by_partition):
            for m in msgs:
                pending.append(await producer.send(topic, m, key=key, partition=p))
                if len(pending) >= 2000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


# -- the raw baseline ------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def from_start(servers: str, topic: str, partitions: int, client_id: str) -> AsyncIterator[Any]:
    """A plain aiokafka consumer (no group) at the start of every partition of ``topic``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False, client_id=client_id)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer
    finally:
        await consumer.stop()


async def raw_consume(servers: str, topic: str, partitions: int, messages: int) -> tuple[float, int, int]:
    """A plain aiokafka consumer reads ``topic`` from the start, ``orjson.loads`` on every
    message: (seconds, messages, events)."""
    async with from_start(servers, topic, partitions, "coordwatch-bench-raw") as consumer:
        loads = orjson.loads
        n_msgs = n_events = 0
        t0 = time.perf_counter()
        while n_msgs < messages:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                raise RuntimeError(f"raw consume: no message after {n_msgs} of {messages} within 1 s")
            for records in batch.values():
                for r in records:
                    n_events += len(loads(r.value))
                n_msgs += len(records)
        return time.perf_counter() - t0, n_msgs, n_events


def loop_main(servers: str, topic: str, partitions: int, messages: int) -> None:
    """The detection core in a plain aiokafka ``getmany`` loop, no Faust (run in its own
    process by :func:`plain_loop`): the worker's work (``parse_messages`` + one pipeline)
    at the worker's fetch size, on the main thread. Prints a JSON result line."""
    from detectors.events import parse_messages
    from detectors.pipeline import Pipeline, tune_gc
    from streams.config import load

    config = load(environ={}).config
    pipeline = Pipeline.from_config(config)
    tune_gc()
    max_bytes = config.events.max_event_bytes

    async def go() -> dict[str, float]:
        async with from_start(servers, topic, partitions, "coordwatch-bench-loop") as consumer:
            n_msgs = n_events = n_alerts = 0
            parse_s = detect_s = 0.0  # CPU seconds of the two parts every worker must do
            clock = time.thread_time  # this thread's: nothing else it runs is counted in a part
            t0 = time.perf_counter()
            c0 = time.process_time()
            while n_msgs < messages:
                batch = await consumer.getmany(timeout_ms=1000, max_records=config.kafka.max_poll_records)
                if not batch:
                    raise RuntimeError(f"plain loop: no message after {n_msgs} of {messages} within 1 s")
                for records in batch.values():
                    c1 = clock()
                    events, _ = parse_messages([r.value for r in records], max_bytes)
                    c2 = clock()
                    n_alerts += len(pipeline.process(events))
                    parse_s += c2 - c1
                    detect_s += clock() - c2
                    n_events += len(events)
                    n_msgs += len(records)
            return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "parse_cpu_s": parse_s,
                    "detect_cpu_s": detect_s, "events": n_events, "alerts": n_alerts}

    print(orjson.dumps(asyncio.run(go())).decode(), flush=True)


def plain_loop(servers: str, topic: str, partitions: int, messages: int) -> dict[str, float]:
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from streams.benchmarks.stream import loop_main; "
         "loop_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))",
         servers, topic, str(partitions), str(messages)],
        capture_output=True, env=_env(), cwd=REPO, check=False, timeout=1800,
    )  # fmt: skip
    if res.returncode:
        raise RuntimeError(f"plain loop failed:\n{res.stderr.decode(errors='replace')[-3000:]}")
    return orjson.loads(res.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# -- workers ---------------------------------------------------------------------------------
def worker_command(worker_id: str, sets: Sequence[str]) -> list[str]:
    """The command line of one worker (a function, so an experiment can run another one)."""
    args = [sys.executable, "-m", "streams", "worker", "--worker-id", worker_id, "--loglevel", "info"]
    for s in sets:
        args += ["--set", s]
    return args


def handled(m: dict[str, float]) -> float:
    """Input events a worker is done with: handed to the pipeline or rejected (a late event
    is both, so it counts once)."""
    return (m.get("coordwatch_events_total", 0.0) + m.get("coordwatch_rejected_total", 0.0)
            - m.get("coordwatch_rejected_total{reason=late}", 0.0))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class Worker:
    worker_id: str
    proc: subprocess.Popen[bytes]
    folder: Path
    log: Path
    spawned: float  # time.monotonic() at spawn
    _port: int | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> dict[str, float] | None:
        if self._port is None:
            try:
                self._port = int((self.folder / "metrics.port").read_text().strip())
            except (OSError, ValueError):
                return None
        try:
            return fetch_metrics("127.0.0.1", self._port, timeout_s=5)
        except OSError:
            return None

    def startup_s(self) -> float | None:
        """Start-up as the worker logs it: its process start to its first input consumed."""
        m = re.search(r"first input consumed ([0-9.]+) s after process start", self.log_text())
        return float(m.group(1)) if m else None

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.worker_id} exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")


@dataclass
class StreamRun:
    events: int
    seconds: float  # first input consumed (or resume) -> last event in and alerts quiet
    startup_s: float  # worker spawn -> first input consumed (the slowest worker)
    alerts: int
    cpu: dict[str, float] = field(default_factory=dict)  # process -> cores over the timed span
    detail: str = ""
    log: str = ""  # the lone worker's log (run_one)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def events_per_worker_core_s(self) -> float:
        """Events per CPU second of the workers: what the workers did with the CPU they
        got, whatever else the machine was running."""
        cores = sum(v for k, v in self.cpu.items() if k.startswith("worker "))
        return self.events / (self.seconds * cores) if self.seconds and cores else 0.0


class Cpu:
    """CPU seconds of some processes (and of the whole machine) between two samples."""

    def __init__(self, procs: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}
        self.t0 = time.monotonic()
        self.start = {name: self._cpu(p) for name, p in self.procs.items()}
        self.machine0 = self._machine()

    @staticmethod
    def _cpu(p: Any) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except Exception:  # noqa: BLE001 - a process gone: count nothing more
            return 0.0

    @staticmethod
    def _machine() -> float:
        import psutil

        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))

    def sample(self) -> tuple[float, dict[str, float]]:
        """(when, CPU seconds so far per process, for everything else and for the machine)."""
        now = time.monotonic()
        out = {name: self._cpu(p) - self.start[name] for name, p in self.procs.items()}
        machine = self._machine() - self.machine0
        out["other processes (not this bench's)"] = max(machine - sum(out.values()), 0.0)
        out["machine (all processes)"] = machine
        return now, out

    def cores(self, sample: tuple[float, dict[str, float]]) -> dict[str, float]:
        """Cores used from the start to ``sample``."""
        dt = sample[0] - self.t0
        return {name: v / dt for name, v in sample[1].items()} if dt > 0 else {}


class Bench:
    """The broker, the input topics and everything started for one ``bench stream`` run."""

    def __init__(self, tmp: Path, shards: dict[str, int] | None = None) -> None:
        from streams.broker import EmbeddedBroker
        from streams.config import Config, WorkParams
        from streams.stages import work_units

        self.tmp = tmp
        self.tag = f"bench{uuid.uuid4().hex[:8]}"
        self.broker = EmbeddedBroker(0, log_file=tmp / "tansu.log")
        self.workers: list[Worker] = []
        self.resume_lag_s = 0.0  # resume -> first new input, of the last run_many
        # the workers run the default config, split as ``shards`` says (work.shards)
        shards = shards or {}
        self.sets = ["work.shards={" + ", ".join(f"{k} = {n}" for k, n in shards.items()) + "}"] if shards else []
        # the stages a marker reaches (a merge starts at its parts' first output)
        self.units = sum(u.framed for u in work_units(Config(work=WorkParams(shards=shards))))

    @property
    def servers(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def __enter__(self) -> Bench:
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_workers()
        self.broker.stop()

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
                w.proc.kill()
                w.proc.wait(10)
        self.workers.clear()

    def start_workers(self, topic: str, n: int, run: str, partitions: int = 1,
                      sets: Sequence[str] = ()) -> tuple[list[Worker], str]:  # fmt: skip
        app_id = f"{self.tag}-{run}"
        alerts = f"{app_id}.alerts"
        data = self.tmp / app_id
        sets = [
            f"kafka.broker=kafka://{self.servers}", f"kafka.app_id={app_id}", f"kafka.data_dir={data}",
            f'topics.events=["{topic}"]', f"topics.alerts={alerts}", f"topics.dead_letter={app_id}.dlq",
            f"topics.partitions={partitions}", *self.sets, *sets,
        ]  # fmt: skip
        started = []
        for k in range(n):
            wid = f"w{k + 1}"
            log = self.tmp / f"{app_id}-{wid}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    worker_command(wid, sets), cwd=self.tmp, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            w = Worker(wid, proc, data / wid, log, time.monotonic())
            self.workers.append(w)
            started.append(w)
        return started, alerts

    async def alert_end(self, consumer: Any, alerts: str) -> int:
        from aiokafka import TopicPartition

        parts = consumer.partitions_for_topic(alerts)
        if not parts:
            await consumer.topics()  # refresh metadata: the worker creates the topic
            parts = consumer.partitions_for_topic(alerts) or set()
        if not parts:
            return 0
        ends = await consumer.end_offsets([TopicPartition(alerts, p) for p in parts])
        return sum(ends.values())

    async def watch(self, workers: list[Worker], alerts: str, events: int, started: float,
                    cpu: Cpu | None, timeout_s: float, want: int) -> StreamRun:
        """Poll until the workers hold ``events`` events and have published ``want`` alerts
        (the plain loop's: the same stream gives the same alerts), then are quiet."""
        from aiokafka import AIOKafkaConsumer

        reader = AIOKafkaConsumer(bootstrap_servers=self.servers, group_id=None, client_id="coordwatch-bench-watch")
        await reader.start()
        try:
            t_done = None  # when the events count was reached
            last_change = started
            last = -1  # the alerts topic's end offsets (summed)
            seen, n_alerts, scraped = 0.0, 0.0, -math.inf
            at_end = cpu.sample() if cpu else None  # CPU at the last change (the end, once quiet)
            deadline = started + timeout_s
            while True:
                for w in workers:
                    w.check()
                now = time.monotonic()
                rate = seen / (now - started) if seen and now > started else 0.0
                near = t_done is None and (not rate or (events - seen) / rate < 2 * METRICS_POLL_S)
                if near or now - scraped >= METRICS_POLL_S:
                    ms = [w.metrics() or {} for w in workers]
                    seen = sum(handled(m) for m in ms)
                    n_alerts = sum(m.get("coordwatch_alerts_total", 0) for m in ms)
                    scraped = now
                state = await self.alert_end(reader, alerts)
                sample = cpu.sample() if cpu else None
                if state != last:
                    last, last_change, at_end = state, now, sample
                if t_done is None and seen >= events:
                    t_done = now
                    if t_done >= last_change:
                        at_end = sample
                # the count is the metric's: Tansu 0.6 puts a partition's end at its last
                # batch's base offset + 1, so the end offsets only tell that alerts came
                if t_done is not None and now - max(t_done, last_change) >= QUIET_S and n_alerts >= want:
                    break
                if t_done is not None and now - max(t_done, last_change) >= SHORT_S:
                    raise RuntimeError(f"{n_alerts:.0f} alerts published, but the plain loop made {want} "
                                       f"of the same stream: none more for {SHORT_S:.0f} s")
                if now > deadline:
                    raise RuntimeError(f"timed out after {timeout_s:.0f} s: {seen:.0f} of {events} events consumed")
                await asyncio.sleep(POLL_S)
            end = max(t_done, last_change)
            cores = cpu.cores(at_end) if cpu and at_end else {}
            return StreamRun(int(seen), end - started, 0.0, int(n_alerts), cores)
        finally:
            await reader.stop()

    async def run_one(self, topic: str, events: int, run: str, timeout_s: float, want: int,
                      sets: Sequence[str] = ()) -> StreamRun:  # fmt: skip
        """One worker on a topic already holding ``events`` events (``sets``: config
        overrides): clock from its first input."""
        (w,), alerts = self.start_workers(topic, 1, run, sets=sets)
        try:
            while (m := w.metrics()) is None or m.get("coordwatch_messages_total", 0) == 0:
                w.check()
                if time.monotonic() - w.spawned > 120:
                    raise RuntimeError(f"worker consumed nothing within 120 s:\n{w.log_text()[-3000:]}")
                await asyncio.sleep(0.02)
            polled = time.monotonic()
            cpu = Cpu({"broker": self.broker.proc.pid, "worker w1": w.proc.pid,  # type: ignore[union-attr]
                       "bench (this process)": os.getpid()})
            logged = None
            for _ in range(50):
                if (logged := w.startup_s()) is not None:
                    break
                await asyncio.sleep(0.02)
            # the log says when the first input came (process start + start-up); the
            # poll can only be later. The clock starts at the earlier of the two.
            first = min(polled, w.spawned + logged) if logged is not None else polled
            out = await self.watch([w], alerts, events, first, cpu, timeout_s, want)
            out.startup_s = first - w.spawned
            out.detail = f"(events counted: {out.events})"
            out.log = w.log_text()
            return out
        finally:
            self.stop_workers()

    async def run_many(self, topic: str, envs: list[bytes], events: int, n: int, run: str,
                       timeout_s: float, want: int, partitions: int = 1) -> tuple[StreamRun, float]:
        """N workers on one stream (round robin over ``partitions``): join on an empty
        topic, pause, produce, resume."""
        workers, alerts = self.start_workers(topic, n, run, partitions)
        try:
            t_spawn = min(w.spawned for w in workers)
            await produce(self.servers, topic, [[b"[]"]])  # an empty envelope: a rejection
            while True:  # the marker reached every detector stage: the assignment is settled
                ms = [w.metrics() or {} for w in workers]
                started = sum(len(re.findall(r"detect-[\w.]+: no snapshot on", w.log_text())) for w in workers)
                if started >= self.units and all(ms):
                    break
                for w in workers:
                    w.check()
                if time.monotonic() - t_spawn > 120:
                    raise RuntimeError("the detector stages did not all start within 120 s: "
                                       + "; ".join(w.log_text()[-1500:] for w in workers))
                await asyncio.sleep(0.05)
            startup = time.monotonic() - t_spawn
            base = sum(handled(m) for m in ms)
            base_msgs = sum(m.get("coordwatch_messages_total", 0) for m in ms)
            for w in workers:
                w.proc.send_signal(signal.SIGSTOP)
            try:
                produced_s = await produce(self.servers, topic, [envs[p::partitions] for p in range(partitions)])
            finally:
                for w in workers:
                    w.proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            # the clock starts when the input is taken in again: a worker idle on an empty
            # partition sits in a fetch long-poll (Faust: fetch_max_wait_ms=1500) that Tansu
            # answers only at its end, not when data arrives
            while sum((w.metrics() or {}).get("coordwatch_messages_total", 0) for w in workers) <= base_msgs:
                for w in workers:
                    w.check()
                if time.monotonic() - resumed > 60:
                    raise RuntimeError("no worker consumed anything within 60 s of being resumed")
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            self.resume_lag_s = t0 - resumed
            procs = {"broker": self.broker.proc.pid} | {f"worker {w.worker_id}": w.proc.pid for w in workers}
            procs["bench (this process)"] = os.getpid()
            out = await self.watch(workers, alerts, events + base, t0, Cpu(procs), timeout_s, want)  # type: ignore[arg-type]
            out.events -= int(base)
            out.startup_s = startup
            out.detail = "stages: " + "; ".join(
                f"{w.worker_id} " + ",".join(sorted(set(re.findall(r"(detect-[\w.]+|link): (?:no snapshot|restored)",
                                                               w.log_text()))))
                for w in workers)  # fmt: skip
            return out, produced_s
        finally:
            self.stop_workers()


async def _run(quick: bool, workers: int, events: int | None, repeat: int | None, partitions: int,
               shards: dict[str, int], out: Any) -> list[Row]:  # fmt: skip
    n_events = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    runs = repeat or (1 if quick else 3)
    raw_runs = 3 if quick else 5
    loop_runs = 1 if quick else 2
    single_msgs = 50_000 if quick else 200_000
    timeout_s = 60 + n_events / 5_000
    say = lambda msg: print(msg, file=out, flush=True)  # noqa: E731
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="coordwatch-bench-stream-"))
    try:
        with Bench(tmp, shards) as b:
            t = time.perf_counter()
            envs = stream_envelopes(n_events)
            say(f"bench stream: {n_events} events in {len(envs)} envelopes generated in {time.perf_counter() - t:.1f} s; "
                f"broker {b.servers}")
            topic = f"{b.tag}.events"
            await create_topic(b.servers, topic, 1)
            produce_s = await produce(b.servers, topic, [envs])
            rows.append(Row(f"produce ({n_events} events, {ENVELOPE}-event envelopes, aiokafka, 1 partition)",
                            n_events / produce_s, "events/s", key="produce_events_per_s"))
            say(f"produced in {produce_s:.2f} s")

            raw = [await raw_consume(b.servers, topic, 1, len(envs)) for _ in range(raw_runs)]
            raw_s = min(r[0] for r in raw)
            raw_msgs, raw_events = raw[0][1], raw[0][2]
            raw_eps = raw_events / raw_s
            say(f"raw consume: best {raw_s:.2f} s of {[round(r[0], 2) for r in raw]}")
            rows.append(Row("raw aiokafka consume + orjson.loads per envelope", raw_msgs / raw_s, "messages/s"))
            rows.append(Row("raw aiokafka consume + orjson.loads per envelope", raw_eps, "events/s",
                            key="raw_consume_events_per_s"))

            # the reference figure: single-event messages (not the baseline of any ratio)
            singles = stream_lines(single_msgs)
            topic1 = f"{b.tag}.single"
            await create_topic(b.servers, topic1, 1)
            await produce(b.servers, topic1, [singles])
            single_s = min([(await raw_consume(b.servers, topic1, 1, len(singles)))[0] for _ in range(raw_runs)])
            single_raw = len(singles) / single_s
            rows.append(Row(f"  for reference: raw consume of {len(singles)} single-event messages", single_raw,
                            "messages/s", key="raw_single_msgs_per_s"))

            loops = [plain_loop(b.servers, topic, 1, len(envs)) for _ in range(loop_runs)]
            loop = min(loops, key=lambda r: r["seconds"])
            loop_eps = loop["events"] / loop["seconds"]
            say(f"plain loop (no Faust): best {loop['seconds']:.2f} s of {[round(r['seconds'], 2) for r in loops]}, "
                f"{loop['cpu_s'] / loop['seconds']:.2f} cores, {loop['alerts']} alerts")
            rows.append(Row("detection core in a plain aiokafka getmany loop (no Faust)", loop_eps, "events/s",
                            "raw aiokafka consume (same run)", raw_eps, key="loop_events_per_s"))
            # the ceilings of any worker on one core: every event is parsed, then detected
            rows.append(Row("  its parse alone: events per CPU second of parse_messages", loop["events"] / loop["parse_cpu_s"],
                            "events/s", "raw aiokafka consume (same run)", raw_eps, key="parse_ceiling_events_per_s"))
            rows.append(Row("  its detectors alone: events per CPU second of the pipeline",
                            loop["events"] / loop["detect_cpu_s"], "events/s", "raw aiokafka consume (same run)", raw_eps,
                            key="detect_ceiling_events_per_s"))

            ones: list[StreamRun] = []
            for i in range(runs):
                r = await b.run_one(topic, n_events, f"one{i}", timeout_s, int(loop["alerts"]))
                ones.append(r)
                say(f"1 worker, run {i + 1}: {r.events_per_s:,.0f} events/s ({r.seconds:.2f} s from first input), "
                    f"start-up {r.startup_s:.2f} s, {r.alerts} alerts, cores "
                    + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items()))
            one = max(ones, key=lambda r: r.events_per_s)
            rows.append(Row("end to end, 1 worker: first input -> all events in, alerts quiet", one.events_per_s,
                            "events/s", key="stream_events_per_s"))
            rows.append(Row("  the same, beside the raw consume rate", one.events_per_s, "events/s",
                            "raw aiokafka consume (same run)", raw_eps, key="stream_vs_raw", figure="ratio"))
            rows.append(Row("  worker start-up: spawn -> first input consumed", one.startup_s, "s (lower is better)",
                            key="worker_startup_s"))
            rows.append(Row("  1 worker beside the plain loop", one.events_per_s, "events/s",
                            "plain getmany loop (same run)", loop_eps, key="stream_vs_loop", figure="ratio"))
            # per CPU second: what the worker spends beyond the loop's work, whether it also waits or not
            rows.append(Row("  the same per CPU second (the worker's against the loop's)", one.events_per_worker_core_s,
                            "events/s", "plain getmany loop (same run)", loop["events"] / loop["cpu_s"],
                            key="stream_vs_loop_per_core", figure="ratio"))
            for name, cores in one.cpu.items():
                rows.append(Row(f"  CPU during that run: {name}", cores, "cores"))

            # single-event input: the same worker, one message an event
            want1 = int(plain_loop(b.servers, topic1, 1, len(singles))["alerts"])
            single_runs = [await b.run_one(topic1, len(singles), f"single{i}", timeout_s, want1) for i in range(runs)]
            single = max(single_runs, key=lambda r: r.events_per_s)
            say(f"1 worker, {len(singles)} single-event messages: "
                + ", ".join(f"{r.events_per_s:,.0f}" for r in single_runs) + " events/s")
            rows.append(Row(f"end to end, 1 worker, {len(singles)} single-event messages", single.events_per_s,
                            "events/s", "raw consume of single-event messages (same run)", single_raw,
                            key="single_vs_raw_single", figure="ratio"))
            rows.append(Row("  the same, beside the worker on 100-event envelopes", single.events_per_s, "events/s",
                            "1 worker on envelopes (same run)", one.events_per_s, key="single_vs_envelopes",
                            figure="ratio"))

            if workers > 1:
                rows += await _many(b, workers, n_events, runs, timeout_s, raw_eps, say, partitions,
                                    int(loop["alerts"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def run(quick: bool = False, workers: int = 1, events: int | None = None, repeat: int | None = None,
        partitions: int = 1, shards: dict[str, int] | None = None, out: Any = None) -> list[Row]:
    """The suite's rows; progress lines go to ``out`` (default stderr)."""
    return asyncio.run(_run(quick, workers, events, repeat, partitions, shards or {}, out or sys.stderr))


async def _many(b: Bench, workers: int, n_events: int, runs: int, timeout_s: float, raw_eps: float,
                say: Any, partitions: int, want: int) -> list[Row]:
    """``workers`` workers in one group beside ONE worker, on the same stream (its envelopes
    round robin over ``partitions`` input partitions), both by the same protocol (join on an
    empty topic, pause, produce, resume)."""
    envs = stream_envelopes(n_events)
    events = envelope_events(envs)
    results: dict[int, list[StreamRun]] = {1: [], workers: []}
    for i in range(runs):
        for n in (1, workers):  # interleaved, so a change in the machine's load hits both
            topic = f"{b.tag}.events-{n}w-{i}"
            await create_topic(b.servers, topic, partitions)
            r, p_s = await b.run_many(topic, envs, events, n, f"many{n}-{i}", timeout_s, want, partitions)
            results[n].append(r)
            say(f"{n} worker(s), run {i + 1}: {r.events_per_s:,.0f} events/s ({r.seconds:.2f} s "
                f"from the first new input, {b.resume_lag_s:.2f} s after resuming; produced while paused in "
                f"{p_s:.2f} s), join {r.startup_s:.2f} s, {r.alerts} alerts, {r.detail}, "
                "cores " + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items()))
    lone = max(results[1], key=lambda r: r.events_per_s)
    many = max(results[workers], key=lambda r: r.events_per_s)
    rows = [
        Row(f"end to end, {workers} workers in one group (one {events}-event stream on {partitions} partition(s), "
            "the detector stages shared)",
            many.events_per_s, "events/s", key=f"stream{workers}_events_per_s"),
        Row("  1 worker on the same stream (same protocol)", lone.events_per_s, "events/s",
            key="stream1_events_per_s"),
        Row(f"  {workers} workers beside 1", many.events_per_s, "events/s", "1 worker, same protocol (same run)",
            lone.events_per_s, key="two_vs_one" if workers == 2 else f"w{workers}_vs_one", figure="ratio"),
        Row(f"  the same per CPU second of the workers: {workers} workers beside 1",
            many.events_per_worker_core_s, "events/worker-CPU-s", "1 worker, same protocol (same run)",
            lone.events_per_worker_core_s, key="two_vs_one_per_core" if workers == 2 else f"w{workers}_vs_one_per_core",
            figure="ratio"),
        Row(f"  {workers} workers beside the raw consume rate", many.events_per_s, "events/s",
            "raw aiokafka consume (same run)", raw_eps, key=f"stream{workers}_vs_raw", figure="ratio"),
        Row(f"  {workers} workers: group join (spawn -> every detector stage started)", many.startup_s,
            "s (lower is better)"),
    ]
    for name, cores in many.cpu.items():
        rows.append(Row(f"  CPU during the {workers}-worker run: {name}", cores, "cores"))
    for name, cores in lone.cpu.items():
        rows.append(Row(f"  CPU during the lone-worker run: {name}", cores, "cores"))
    return rows
