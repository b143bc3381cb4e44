"""The ``coordwatch`` command."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import click
import orjson

from sketches.errors import ConfigError, CoordwatchError
from streams import config as cfg

CONFIG_ERROR_EXIT = 2


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--config``, ``--preset`` and ``--set``: the same on every command that takes a config."""

    @click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
    @click.option("--preset", help="A named preset shipped with coordwatch (applied before --config).")
    @click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one key (repeatable); the value is read as a TOML literal.",
    )
    @functools.wraps(fn)
    def wrapper(config_file: str | None, preset: str | None, sets: tuple[str, ...], **kw: Any) -> Any:
        return fn(loaded=cfg.load(config_file, preset=preset, sets=sets), **kw)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """coordwatch: streaming detection of coordinated inauthentic behaviour."""


# -- config --------------------------------------------------------------------------
@cli.group("config")
def config_group() -> None:
    """Show or check configuration."""


@config_group.command("show")
@config_options
@click.option("--no-sources", is_flag=True, help="Omit the '# source' annotations.")
def config_show(loaded: cfg.Loaded, no_sources: bool) -> None:
    """Print the effective config (TOML) and where each value came from."""
    click.echo(cfg.to_toml(loaded, with_sources=not no_sources), nl=False)


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--preset", help="Check FILE layered over this preset.")
def config_check(file: str, preset: str | None) -> None:
    """Validate FILE (with the environment's COORDWATCH_* overrides); exit 2 if invalid."""
    cfg.load(file, preset=preset)
    click.echo(f"{file}: ok")


@config_group.command("presets")
def config_presets() -> None:
    """List the shipped presets."""
    for name in cfg.presets():
        click.echo(name)


@config_group.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown, every key) rendered from the config model: docs/config.md."""
    from streams.config_reference import render

    click.echo(render(), nl=False)


# -- detection core --------------------------------------------------------------------
@cli.command("replay")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Alerts JSONL.")
@click.option(
    "--summary-json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the summary as JSON."
)
@config_options
def replay_cmd(loaded: cfg.Loaded, events: Path, out: Path, summary_json: Path | None) -> None:
    """Replay EVENTS.jsonl[.gz] through the detectors; alerts to --out, rejects beside it."""
    from detectors.replay import rejects_path, replay

    c = loaded.config
    summary = replay(
        events,
        out,
        c,
        batch_size=c.replay.batch_size,
        max_event_bytes=c.events.max_event_bytes,
        max_ahead_s=c.events.max_ahead_s,
        progress=c.replay.progress,
    )
    click.echo(summary.format(), err=True)
    click.echo(f"alerts: {out}  rejects: {rejects_path(out)}", err=True)
    if summary_json:
        summary_json.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))


@cli.command("generate")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (or --to-kafka).")
@click.option("--to-kafka", is_flag=True,
              help="Stream the events into the input topic (topics.events[0]) as they are generated; no files.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--hours", default=24.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Hours of event time.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="With --out: mean organic events per second of event time (default 8). With --to-kafka: events "
                   "sent per second (default: as fast as possible); the stream keeps the default density and its "
                   "event time is compressed to play at this rate.")
@click.option("--accounts", default=20_000, show_default=True, type=click.IntRange(min=1))
@click.option("--envelope", type=click.IntRange(min=1),
              help="With --to-kafka: events per message (default 100; 1 = one plain event per message).")
@click.option("--spread", is_flag=True,
              help="With --to-kafka: unkeyed, round robin over the topic's partitions (default: one key, one partition).")
@click.option("--progress/--no-progress", default=True, help="Progress on stderr.")
@click.option("--json-status", is_flag=True, hidden=True,
              help="With --to-kafka: a JSON status line on stdout every second and at the end (for coordwatch demo).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="With --to-kafka: TOML config file.")
@click.option("--preset", help="With --to-kafka: a named preset (applied before --config).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="With --to-kafka: override one key (repeatable); the value is read as a TOML literal.")
def generate_cmd(out: Path | None, to_kafka: bool, seed: int, hours: float, rate: float | None, accounts: int,
                 envelope: int | None, spread: bool, progress: bool, json_status: bool, config_file: str | None,
                 preset: str | None, sets: tuple[str, ...]) -> None:
    """A labelled synthetic stream: DIR/events.jsonl and DIR/labels.json, or (--to-kafka)
    sent to the input topic as batch envelopes at --rate events/s; prints events/s."""
    if to_kafka == (out is not None):
        raise click.UsageError("give either --out DIR or --to-kafka")
    if not to_kafka:
        unused = [name for name, v in (("--envelope", envelope), ("--spread", spread or None), ("--config", config_file),
                                       ("--preset", preset), ("--set", sets or None),
                                       ("--json-status", json_status or None)) if v]  # fmt: skip
        if unused:
            raise click.UsageError(f"{', '.join(unused)}: only with --to-kafka")
        from detectors.synthetic import DEFAULT_RATE, generate

        assert out is not None
        try:
            summary = generate(out, seed=seed, hours=hours, rate=rate or DEFAULT_RATE, accounts=accounts,
                               progress=progress)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        click.echo(
            f"{summary['events']} events ({summary['campaign_events']} injected, {summary['campaigns']} campaigns) "
            f"from {summary['active_accounts']} accounts in {summary['seconds']:.1f} s -> {out}",
            err=True,
        )
        return
    _generate_to_kafka(cfg.load(config_file, preset=preset, sets=sets).config, seed=seed, hours=hours, rate=rate,
                       accounts=accounts, envelope=envelope or 100, spread=spread, progress=progress,
                       json_status=json_status)  # fmt: skip


def _generate_to_kafka(config: cfg.Config, *, seed: int, hours: float, rate: float | None, accounts: int,
                       envelope: int, spread: bool, progress: bool, json_status: bool) -> None:
    import time
    from datetime import UTC, datetime

    from detectors.synthetic import SyntheticStream
    from streams.broker import describe
    from streams.produce import ProduceSummary, produce_stream

    try:
        stream = SyntheticStream(seed=seed, hours=hours, accounts=accounts)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    topic = config.topics.events[0]
    pace = f"{rate:,.0f} events/s" if rate else "as fast as possible"
    click.echo(f"generate: {hours:g} h of event time (seed {seed}, {len(stream.labels['campaigns'])} campaigns) "
               f"-> {topic} on {describe(config.kafka)}, {pace}", err=True)
    last_line = [time.monotonic()]

    def report(s: ProduceSummary) -> None:
        if json_status:
            click.echo(orjson.dumps(s.to_dict()).decode())
        if progress and time.monotonic() - last_line[0] >= 5:
            last_line[0] = time.monotonic()
            when = datetime.fromtimestamp(s.event_time, UTC).strftime("%Y-%m-%d %H:%M") if s.event_time else "-"
            click.echo(f"generate: {s.events:,} events sent ({s.events_per_s:,.0f}/s), event time {when} UTC", err=True)

    summary = produce_stream(config, stream, envelope=envelope, rate=rate, spread=spread, topic=topic,
                             progress=report if (json_status or progress) else None)
    span_s = (stream.end_ms - stream.start_ms) / 1000
    click.echo(f"{summary.format()}; {hours:g} h of event time in {summary.seconds:.1f} s "
               f"(x{span_s / summary.seconds:,.0f}) -> {topic}", err=True)


@cli.command("evaluate")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--alerts", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate_cmd(labels: Path, alerts: Path, as_json: bool) -> None:
    """Account precision/recall, campaigns caught and hard negatives flagged."""
    from detectors.evaluate import evaluate_files, format_report

    report = evaluate_files(labels, alerts)
    if as_json:
        click.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))


# -- streaming -------------------------------------------------------------------------
@cli.command("broker")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen port (default: kafka.broker's port; 0 = any free).")
@config_options
def broker_cmd(loaded: cfg.Loaded, port: int | None) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) on 127.0.0.1 until Ctrl-C."""
    import signal as sig

    from streams.broker import EmbeddedBroker, bootstrap_servers

    if port is None:
        port = int(bootstrap_servers(loaded.config.kafka.broker)[0].rpartition(":")[2])
    broker = EmbeddedBroker(port).start()
    click.echo(f"broker ready: --set kafka.broker={broker.url}  (Ctrl-C stops it)", err=True)
    try:  # blocked only now: the broker must not inherit a mask hiding SIGTERM
        sig.pthread_sigmask(sig.SIG_BLOCK, {sig.SIGINT, sig.SIGTERM})
        sig.sigwait({sig.SIGINT, sig.SIGTERM})
    finally:
        broker.stop()


@cli.command("worker")
@config_options
@click.option("--worker-id", help="Names this worker's data directory and metrics port file (default: the host name); unique per live worker on a host.")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker_cmd(loaded: cfg.Loaded, worker_id: str | None, loglevel: str) -> None:
    """Run a detection worker: events topics in, alerts and dead letters out."""
    from streams.worker import run

    run(loaded.config, worker_id, loglevel)


@cli.command("produce")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second (default: as fast as possible).")
@click.option("--envelope", default=100, show_default=True, type=click.IntRange(min=1),
              help="Events per message (1 = one plain event per message).")
@click.option("--key", help="Message key of every message (default: the file name: one partition, file order).")
@click.option("--spread", is_flag=True, help="Unkeyed, round robin over the topic's partitions (not with --key).")
@click.option("--topic", help="Target topic (default: the first of topics.events).")
@config_options
def produce_cmd(loaded: cfg.Loaded, events: Path, rate: float | None, envelope: int, key: str | None,
                spread: bool, topic: str | None) -> None:
    """Send EVENTS.jsonl[.gz] to the input topic as batch envelopes; prints events/s."""
    from streams.produce import produce

    if spread and key:
        raise click.UsageError("--spread sends unkeyed messages: drop --key")
    summary = produce(loaded.config, events, envelope=envelope, rate=rate, key=key, spread=spread, topic=topic)
    click.echo(summary.format(), err=True)


from streams.demo import DEFAULT_MINUTES, DEFAULT_RATE  # noqa: E402  (light: no Kafka or Faust import)


@cli.command("demo")
@click.option("--rate", default=DEFAULT_RATE, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Events per second sent to the worker.")
@click.option("--minutes", default=DEFAULT_MINUTES, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="How long to stream (cut to what the embedded broker's memory budget allows).")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Embedded broker port on 127.0.0.1 (0 = any free port; default: kafka.broker's, 9092).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Generator seed.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--preset", help="A named preset shipped with coordwatch (applied before --config).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one key (repeatable); the value is read as a TOML literal.")
def demo_cmd(rate: float, minutes: float, port: int | None, seed: int, config_file: str | None,
             preset: str | None, sets: tuple[str, ...]) -> None:
    """The live demo: embedded broker, a worker and the generator; alerts as they arrive,
    throughput and lag every few seconds. Ctrl-C stops everything it started."""
    from streams.demo import Demo, config_args

    loaded = cfg.load(config_file, preset=preset, sets=sets)  # invalid config: exit 2 before anything starts
    demo = Demo(loaded, rate=rate, minutes=minutes, port=port, seed=seed,
                config_args=config_args(config_file, preset, sets), echo=click.echo)
    code = demo.run()
    if code:
        sys.exit(code)


@cli.command("alerts")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new alerts (only new ones unless --from-beginning).")
@click.option("--from-beginning", is_flag=True, help="With --follow: print the alerts already on the topic first.")
@click.option("--type", "types", multiple=True, help="Only this alert type (repeatable).")
@click.option("--min-score", type=float, help="Only alerts scoring at least this.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, as published.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), help="Exit after this many seconds without a new alert.")
@config_options
def alerts_cmd(loaded: cfg.Loaded, follow: bool, from_beginning: bool, types: tuple[str, ...],
               min_score: float | None, as_json: bool, idle_timeout: float | None) -> None:
    """Show alerts: a table (default) or JSON lines; each alert id once. Without --follow,
    what is on the topic now."""
    from streams.alerts_view import Filter, show

    try:
        show(loaded.config, lambda line: click.echo(line), follow=follow, from_beginning=from_beginning,
             keep=Filter(frozenset(types), min_score), as_json=as_json, idle_timeout_s=idle_timeout)
    except KeyboardInterrupt:
        pass


# -- bench ---------------------------------------------------------------------------
@cli.group("bench")
def bench_group() -> None:
    """Benchmarks; each figure is a ratio against a baseline measured in the same run."""


#: the benchmarks with no option beyond --quick: (name, what it measures, what --quick does)
_SUITES = (
    ("sketches", "Sketch layer and event parser: table, then key=value figures on the last line.",
     "Smaller inputs (a smoke run, not for reporting)."),
    ("replay", "Whole replays (generator mix, russian x10, RSS at 1 M vs 4 M events) against same-run baselines.",
     "Smaller inputs (a smoke run, not for reporting)."),
    ("shards", "A keyed detector split by key (work.shards), in-process: a shard's CPU and the routing beside the whole's.",
     "6 h of the generator mix instead of 24 h (a smoke run, not for reporting)."),
    ("partitions", "The detection's tick buffer, in-process: input partitions read in step beside one read far behind.",
     "6 h of the generator mix instead of 24 h (a smoke run, not for reporting)."),
)


def _suite_command(name: str, summary: str, quick_help: str) -> None:
    @bench_group.command(name, help=summary)
    @click.option("--quick", is_flag=True, help=quick_help)
    def command(quick: bool) -> None:
        from streams.benchmarks.report import run_suite

        run_suite(name, quick=quick)


for _suite in _SUITES:
    _suite_command(*_suite)


@bench_group.command("stream")
@click.option("--quick", is_flag=True, help="~100 k events and one run each (a smoke run, not for reporting).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Also run this many workers in one group (one partition each) and compare with one.")
@click.option("--events", type=click.IntRange(min=1000),
              help="Events to generate (default 1 M; 100 k with --quick).")
@click.option("--repeat", type=click.IntRange(min=1), help="Worker runs per setting, best taken (default 3; 1 with --quick).")
@click.option("--partitions", default=1, show_default=True, type=click.IntRange(1, 64),
              help="With --workers: the stream round robin over this many input partitions.")
@click.option("--split", "splits", multiple=True, metavar="DETECTOR=N",
              help="The workers run DETECTOR split into N (work.shards: burst=4 by key, co_action=2 into "
                   "object parts and their merge, near_duplicate=2 into band parts and their merge); repeatable.")
def bench_stream(quick: bool, workers: int, events: int | None, repeat: int | None, partitions: int,
                 splits: tuple[str, ...]) -> None:  # fmt: skip
    """End to end on the embedded broker: produce, raw aiokafka consume, worker(s); events/s beside the raw rate."""
    from streams.benchmarks.report import run_suite
    from streams.config import WorkParams

    shards: dict[str, int] = {}
    for item in splits:
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise click.BadParameter(f"{item!r}: expected DETECTOR=N, e.g. co_action=2", param_hint="--split")
        shards[name] = int(n)
    try:
        WorkParams(shards=shards)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--split") from exc
    run_suite("stream", quick=quick, workers=workers, events=events, repeat=repeat, partitions=partitions,
              shards=shards)


@bench_group.command("levers")
@click.option("--quick", is_flag=True, help="5 k messages and 100 k events, one run each (a smoke run, not for reporting).")
@click.option("--repeat", type=click.IntRange(min=1), help="Worker runs per variant, best taken (default 2; 1 with --quick); the bare agents get one round more unless --quick.")
def bench_levers(quick: bool, repeat: int | None) -> None:
    """Faust's levers one at a time (serializer, batching, acking, uvloop, envelopes) on a bare agent, and the worker on each event loop."""
    from streams.benchmarks.report import run_suite

    run_suite("levers", quick=quick, repeat=repeat)


def main(argv: list[str] | None = None) -> None:
    """Entry point: project errors become one clear line and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="coordwatch", standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"coordwatch: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    except CoordwatchError as exc:
        click.echo(f"coordwatch: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
