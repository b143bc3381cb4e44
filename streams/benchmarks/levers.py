"""``coordwatch bench levers``: what each Faust lever is worth, measured one at a time.

The issue behind the stream design names the levers: batching, serializers, uvloop, acking
and envelopes. Each is measured here in the same run, on the embedded broker, as a change
of one setting of the variant before it:

* **A bare Faust agent** (own process, :func:`agent_main`; no detection, each message
  decoded once) reads a topic of single-event messages from the start, timed from its
  first message to its last (start-up and group join apart):

  1. per message (``async for value in stream``), Faust's ``json`` value serializer:
     how a Faust app is usually written;
  2. the same with the ``raw`` serializer and ``orjson.loads`` in the agent (*serializer*);
  3. ``stream.take(100, within)``: a batch per step (*batching*);
  4. ``stream.noack_take``, never acked: what Faust's per-message acking costs (*acking*;
     the worker acks only what a snapshot covers, in one pass per snapshot);
  5. the same on uvloop (*uvloop*);
  6. the same on 100-event envelopes (*envelopes*: events/s; the worker's stream below).

  Each is reported beside a plain aiokafka consumer reading and decoding the same topic
  (``raw``) and beside the variant before it.
* **The worker**: ``coordwatch worker`` end to end (as ``coordwatch bench stream`` times
  one worker, interleaved rounds) on the 1 M events in envelopes and on the single-event
  messages: its defaults, uvloop, and the ingest batch sizes before this bench
  (``batch_messages`` 100 from fetches of ``max_poll_records`` 200). The worker's serializer
  (raw) is its design, and so is its acking (ingest acks what it has framed and sent; the
  stages ack once a snapshot covers their input). Faust costs ~100 µs per input message
  whatever the batch, and every frame costs each stage a call per detector, so batches of
  100 single events made frames of 100 events. Taking 1000 messages at a time made the
  worker 1.22x faster on envelopes and 1.17x on single events (best of 2 each, same run;
  an earlier pair of runs: 1.13-1.23x and 1.4-1.6x), hence the defaults then. Now ingest
  takes up to 20 000 messages or 16 MiB (``streams.ingest.TAKE_BYTES``): frames of single
  events hold ~16 k events instead of 1000 (``coordwatch bench stream``, alternating
  ``batch_messages`` 1000 and 20 000: single events 1.24-1.36x, envelopes unchanged).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.benchmarks.common import Row
from streams.benchmarks.stream import (
    FULL_EVENTS,
    QUICK_EVENTS,
    Bench,
    _env,
    create_topic,
    plain_loop,
    produce,
    raw_consume,
    stream_envelopes,
    stream_lines,
)

TAKE = 100
WITHIN_S = 0.005  # the worker's stage batch wait (streams.app.STAGE_WITHIN_S)
FULL_SINGLES, QUICK_SINGLES = 60_000, 5_000


@dataclass(frozen=True)
class Variant:
    """One bare-agent setting: how it iterates, decodes, acks, and on which loop."""

    name: str
    lever: str  # what changed from the variant before
    serializer: str = "json"  # "json": Faust decodes; "raw": bytes, orjson.loads in the agent
    take: int = 0  # 0: one message per step
    ack: bool = True
    loop: str = "asyncio"
    envelopes: bool = False


VARIANTS = (
    Variant("per message, Faust's json serializer", "(how Faust apps are usually written)"),
    Variant("per message, raw serializer + orjson.loads", "serializer", serializer="raw"),
    Variant(f"take({TAKE}, within={WITHIN_S}), raw", "batching", serializer="raw", take=TAKE),
    Variant(f"noack_take({TAKE}), raw, never acked", "acking", serializer="raw", take=TAKE, ack=False),
    Variant(f"noack_take({TAKE}), raw, never acked, uvloop", "uvloop", serializer="raw", take=TAKE, ack=False,
            loop="uvloop"),
    Variant(f"the same on {TAKE}-event envelopes", "envelopes", serializer="raw", take=TAKE, ack=False,
            loop="uvloop", envelopes=True),
)  # fmt: skip


@dataclass(frozen=True)
class WorkerVariant:
    """A ``coordwatch worker`` setting, beside another (``beside``) of the same run."""

    name: str
    key: str
    loop: str = "asyncio"
    batches: tuple[str, ...] = ()  # batch-size overrides
    envelopes: bool = True
    beside: str | None = None

    @property
    def sets(self) -> list[str]:
        return [f"kafka.event_loop={self.loop}", *self.batches]


#: the defaults before this bench: the ingest took 100 messages at a time from fetches of 200
_SMALL = ("kafka.batch_messages=100", "kafka.max_poll_records=200")
WORKERS = (
    WorkerVariant("envelopes, defaults", "envelopes"),
    WorkerVariant("envelopes, event_loop=uvloop", "uvloop_vs_asyncio", loop="uvloop", beside="envelopes, defaults"),
    WorkerVariant("envelopes, batch_messages=100, max_poll_records=200", "small_batches_vs_defaults",
                  batches=_SMALL, beside="envelopes, defaults"),
    WorkerVariant("single events, defaults", "singles_vs_envelopes", envelopes=False, beside="envelopes, defaults"),
    WorkerVariant("single events, batch_messages=100, max_poll_records=200", "singles_small_batches_vs_defaults",
                  batches=_SMALL, envelopes=False, beside="single events, defaults"),
)  # fmt: skip


def agent_main(servers: str, topic: str, messages: int, variant: Variant, datadir: str) -> None:
    """A bare Faust agent (this process) reads ``messages`` messages of ``topic`` and writes
    ``datadir/result.json``: seconds from the first message to the last, messages, events,
    CPU seconds."""
    if variant.loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")
    import faust

    app = faust.App(
        f"lever-{uuid.uuid4().hex[:8]}", broker=f"kafka://{servers}", datadir=datadir, web_enabled=False,
        store="memory://", autodiscover=False, broker_session_timeout=6.0, broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest", topic_partitions=1,
    )  # fmt: skip
    source = app.topic(topic, key_serializer="raw", value_serializer=variant.serializer)
    loads = orjson.loads
    seen = {"messages": 0, "events": 0}
    clock: dict[str, float] = {}

    def took(values: list[Any]) -> None:
        if not clock:
            clock["t0"], clock["c0"] = time.perf_counter(), time.process_time()
        for v in values:
            obj = loads(v) if variant.serializer == "raw" else v
            seen["events"] += len(obj) if type(obj) is list else 1
        seen["messages"] += len(values)
        if seen["messages"] >= messages:
            out = {"seconds": time.perf_counter() - clock["t0"], "cpu_s": time.process_time() - clock["c0"], **seen}
            Path(datadir, "result.json").write_bytes(orjson.dumps(out))
            os._exit(0)

    async def agent(stream: Any) -> None:
        if variant.take == 0:
            async for value in stream:
                took([value])
        elif variant.ack:
            async for values in stream.take(variant.take, within=WITHIN_S):
                took(values)
        else:
            async for events in stream.noack_take(variant.take, within=WITHIN_S):
                took([ev.value for ev in events])

    app.agent(source, name="lever")(agent)
    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


def _agent_run(servers: str, topic: str, messages: int, variant: Variant, tmp: Path) -> dict[str, float]:
    data = tempfile.mkdtemp(dir=tmp)
    res = subprocess.run(
        [sys.executable, "-m", "streams.benchmarks.levers", servers, topic, str(messages),
         orjson.dumps(variant.__dict__).decode(), data],
        capture_output=True, env=_env(), cwd=tmp, check=False, timeout=600,
    )  # fmt: skip
    result = Path(data, "result.json")
    if res.returncode or not result.exists():
        raise RuntimeError(f"bare agent {variant.name!r} failed:\n{(res.stdout + res.stderr).decode(errors='replace')[-3000:]}")
    return orjson.loads(result.read_bytes())  # type: ignore[no-any-return]


async def _run(quick: bool, repeat: int | None, out: Any) -> list[Row]:
    say = lambda msg: print(msg, file=out, flush=True)  # noqa: E731
    runs = repeat or (1 if quick else 2)  # the bare agents get a round more (not quick): they are short
    n_single = QUICK_SINGLES if quick else FULL_SINGLES
    n_events = QUICK_EVENTS if quick else FULL_EVENTS
    tmp = Path(tempfile.mkdtemp(prefix="coordwatch-bench-levers-"))
    try:
        return await _measure(Bench(tmp), runs, runs if quick else runs + 1, n_single, n_events, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _measure(bench: Bench, runs: int, rounds: int, n_single: int, n_events: int, say: Any) -> list[Row]:
    rows: list[Row] = []
    with bench as b:
        singles = stream_lines(n_single)
        big = stream_envelopes(n_events)
        topics = {False: f"{b.tag}.single", True: f"{b.tag}.events"}
        for envelopes, msgs in ((False, singles), (True, big)):
            await create_topic(b.servers, topics[envelopes], 1)
            await produce(b.servers, topics[envelopes], [msgs])
        raw_s = min([(await raw_consume(b.servers, topics[False], 1, len(singles)))[0] for _ in range(3)])
        raw_eps = len(singles) / raw_s
        say(f"bench levers: {len(singles)} single-event messages; raw aiokafka consume {raw_eps:,.0f} messages/s")
        rows.append(Row(f"raw aiokafka consume + orjson.loads, {len(singles)} single-event messages", raw_eps,
                        "events/s", key="raw_events_per_s"))  # fmt: skip
        best: dict[str, float] = {}
        for _ in range(rounds):  # rounds of every variant: a change in the machine's load hits all
            for v in VARIANTS:
                r = _agent_run(b.servers, topics[v.envelopes], len(big if v.envelopes else singles), v, b.tmp)
                eps = r["events"] / r["seconds"]
                best[v.name] = max(best.get(v.name, 0.0), eps)
                say(f"  {v.name}: {eps:,.0f} events/s ({r['seconds']:.2f} s, {r['cpu_s'] / r['seconds']:.2f} cores)")
        before = None
        for v in VARIANTS:
            eps = best[v.name]
            rows.append(Row(f"bare Faust agent: {v.name}", eps, "events/s", "raw aiokafka consume (same run)", raw_eps,
                            key=f"agent_{v.lever}_vs_raw" if before else "agent_default_vs_raw", figure="ratio"))
            if before is not None:
                rows.append(Row(f"  lever: {v.lever}", eps, "events/s", f"bare agent: {before.name}",
                                best[before.name], key=f"lever_{v.lever}", figure="ratio"))  # fmt: skip
            before = v

        loops = {env: plain_loop(b.servers, topics[env], 1, len(big if env else singles)) for env in (False, True)}
        worker: dict[str, float] = {}
        for i in range(runs):
            for j, w in enumerate(WORKERS):  # interleaved; each run a fresh app id
                env = w.envelopes
                r = await b.run_one(topics[env], n_events if env else len(singles), f"w{i}-{j}",
                                    60 + n_events / 5_000, int(loops[env]["alerts"]), sets=w.sets)  # fmt: skip
                if f"(event loop: {w.loop}" not in r.log:
                    raise RuntimeError(f"the worker {w.name} did not run on {w.loop}:\n{r.log[-2000:]}")
                worker[w.name] = max(worker.get(w.name, 0.0), r.events_per_s)
                say(f"  worker, {w.name}, run {i + 1}: {r.events_per_s:,.0f} events/s, {r.alerts} alerts, "
                    "cores " + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items()))
        for w in WORKERS:
            name = f"worker end to end, {w.name}" + (f" ({n_events} events)" if w.envelopes else f" ({len(singles)})")
            if w.beside is None:
                rows.append(Row(name, worker[w.name], "events/s", key=f"worker_{w.key}_events_per_s"))
            else:
                rows.append(Row(f"  {name}", worker[w.name], "events/s", f"worker, {w.beside} (same run)",
                                worker[w.beside], key=f"worker_{w.key}", figure="ratio"))  # fmt: skip
    return rows


def run(quick: bool = False, repeat: int | None = None, out: Any = None) -> list[Row]:
    """The suite's rows; progress lines go to ``out`` (default stderr)."""
    return asyncio.run(_run(quick, repeat, out or sys.stderr))


if __name__ == "__main__":  # one bare agent (_agent_run): SERVERS TOPIC MESSAGES VARIANT_JSON DATADIR
    agent_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Variant(**orjson.loads(sys.argv[4])), sys.argv[5])
