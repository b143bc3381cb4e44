"""One worker process: lock its data directory, create topics, serve metrics, run Faust.

The worker id names the worker's directory (``<data_dir>/<worker_id>/``: Faust's data and
the metrics port file), so it must be unique among live workers on a host: a lock file stops
a second process with the same id. Detection state belongs to partitions, not to workers
(``streams.app``): any worker can resume any stage. Metrics are served by prometheus-client
on ``kafka.web_host:kafka.web_port`` (port 0 = any free port; the chosen one is logged and
written to ``<data_dir>/<worker_id>/metrics.port``). Faust's own web server is off: it would
bind 0.0.0.0:6066 and collide between workers.

Any error in an agent or the snapshot timer ends the process (exit 70) rather than letting
Faust restart the agent over half-updated state: the restarted worker resumes from the
stages' last snapshots.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import IO, NoReturn

from sketches.errors import ConfigError, CoordwatchError
from streams.broker import describe, ensure_topics, partition_counts
from streams.config import Config

log = logging.getLogger("streams.worker")

FATAL_EXIT = 70
_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def default_worker_id() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "worker"


def fatal(exc: BaseException) -> NoReturn:
    """Log and leave at once: state may be half-updated, the snapshot is the truth."""
    log.critical("worker stopping on error: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(FATAL_EXIT)


def lock_dir(path: Path) -> IO[str]:
    """Hold ``path/worker.lock`` for the life of the process (released by the OS)."""
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / "worker.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CoordwatchError(
            f"{path} is in use by another worker with the same --worker-id on this host"
        ) from None
    return handle


def serve_metrics(config: Config, folder: Path) -> int:
    """Start the Prometheus endpoint; returns its port (also written to ``metrics.port``)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(config.kafka.web_port, addr=config.kafka.web_host)
    port = int(server.server_port)
    (folder / "metrics.port").write_text(f"{port}\n")
    return port


def fetch_metrics(host: str, port: int, timeout_s: float = 2.0) -> dict[str, float]:
    """A worker's Prometheus samples: ``name{k=v,...}`` (labels sorted) or ``name`` -> value;
    a labelled metric's ``name`` alone is the sum over its labels."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    text = urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s).read().decode()
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
                sums[s.name] = sums.get(s.name, 0.0) + s.value
            else:
                out[s.name] = s.value
    return sums | out


def run(config: Config, worker_id: str | None = None, loglevel: str = "info") -> NoReturn:
    """Run one worker until SIGTERM/SIGINT (or an error: exit 70)."""
    from streams.app import create_app, worker_dir

    worker_id = worker_id or default_worker_id()
    if not _ID_RE.match(worker_id):
        raise CoordwatchError(f"--worker-id {worker_id!r}: use letters, digits, '.', '_' and '-' only")
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    folder = worker_dir(config, worker_id)
    lock = lock_dir(folder)
    t = config.topics
    ensure_topics(config, [*t.events, t.alerts, t.dead_letter])
    counts = create_internal_topics(config)
    port = serve_metrics(config, folder)
    log.info(
        "worker %s: app %s, broker %s, metrics http://%s:%d/metrics",
        worker_id, config.kafka.app_id, describe(config.kafka), config.kafka.web_host, port,
    )  # fmt: skip
    if config.kafka.event_loop == "uvloop":  # before the app makes its loop
        import mode.loop

        mode.loop.use("uvloop")
    app, _ = create_app(config, worker_id, [(topic, p) for topic in t.events for p in range(counts[topic])])
    import faust

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        lock.close()


def create_internal_topics(config: Config) -> dict[str, int]:
    """Create the work, link and snapshot topics; the work topic must have one partition per
    work unit (an enabled detector, or a shard of one), or its state is another detector set's. Returns the partition counts of
    the work and event topics (one metadata call)."""
    from streams.stages import internal_topics, work_topic, work_units

    for names, partitions, configs in internal_topics(config):
        ensure_topics(config, names, partitions=partitions, configs=configs)
    work, wanted = work_topic(config), len(work_units(config))
    counts = partition_counts(config, [work, *config.topics.events])
    if (found := counts[work]) != wanted:
        raise ConfigError(
            f"kafka.app_id = {config.kafka.app_id!r}: its work topic {work} has {found} partitions, but this "
            f"config runs {wanted} work units (a partition for each detector, or shard of one: work.shards): "
            "state of another detector set; "
            "use a new kafka.app_id"
        )
    return counts


def started_ago() -> float:
    """Seconds since this process started (for the start-up figure in the log), from
    kernel uptime: wall-clock based ages break when the clock is set."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except OSError:  # not Linux
        import psutil

        return time.time() - psutil.Process().create_time()

