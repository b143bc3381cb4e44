"""Create coordwatch's topics before any worker starts (the compose file's ``topic-init``).

    python deploy/init_topics.py [--config FILE] [--preset P] [--set section.key=value ...]
                                 [--alerts-retention-ms MS] [--dead-letter-retention-ms MS]

The input topics (``topics.events``), the alerts topic and the dead-letter topic are made
with ``topics.partitions`` partitions and ``topics.replication_factor`` replicas, by the same
:func:`streams.broker.ensure_topics` the worker calls at start; the configuration comes from
the usual layers (``COORDWATCH_*`` environment variables in a container). A topic that
exists is left as it is (Kafka cannot shrink partitions, and growing them moves keys), and a
partition count other than the configured one is reported. Retention options apply only to
topics this run creates; alter an existing topic with ``kafka-configs.sh``. The topics between
the agents (``<app_id>.work``, ``.link``, ``.snapshots.*``) are created by the worker.

Exit codes: 0 done, 1 the broker did not answer within ``--wait-s``, 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from sketches.errors import ConfigError
from streams import config as cfg
from streams.broker import BrokerError, bootstrap_servers, describe, ensure_topics, partition_counts


def reachable(broker: str, timeout_s: float = 2.0) -> bool:
    """Whether some bootstrap server accepts a TCP connection (kafka-python would spend
    ~30 s retrying a refused one before it gives up)."""
    for server in bootstrap_servers(broker):
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return True
        except OSError:
            continue
    return False


def init_topics(
    config: cfg.Config, *, alerts_retention_ms: int | None = None, dead_letter_retention_ms: int | None = None
) -> tuple[list[str], dict[str, int]]:
    """Create the missing topics; returns (created, partitions of every topic)."""
    t = config.topics
    groups = [
        (list(t.events), None),
        ([t.alerts], alerts_retention_ms),
        ([t.dead_letter], dead_letter_retention_ms),
    ]
    created: list[str] = []
    for names, retention in groups:
        configs = {"retention.ms": str(retention)} if retention is not None else None
        created += ensure_topics(config, names, configs=configs)
    return created, partition_counts(config, [*t.events, t.alerts, t.dead_letter])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="init_topics.py", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", help="TOML config file")
    ap.add_argument("--preset", help="a shipped preset (applied before --config)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--alerts-retention-ms", type=int, help="retention.ms of the alerts topic, if this run creates it")
    ap.add_argument("--dead-letter-retention-ms", type=int, help="retention.ms of the dead-letter topic, if created")
    ap.add_argument("--wait-s", type=float, default=120.0, help="keep trying to reach the broker this long")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = cfg.load(args.config, preset=args.preset, sets=args.sets).config
    except ConfigError as exc:
        print(f"init_topics: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait_s
    while True:
        try:
            if not reachable(config.kafka.broker):
                raise BrokerError(f"cannot reach the broker at {describe(config.kafka)}: connection failed")
            created, counts = init_topics(
                config,
                alerts_retention_ms=args.alerts_retention_ms,
                dead_letter_retention_ms=args.dead_letter_retention_ms,
            )
            break
        except BrokerError as exc:
            if time.monotonic() > deadline:
                print(f"init_topics: {exc}", file=sys.stderr)
                return 1
            print(f"init_topics: broker not ready ({exc}); retrying", file=sys.stderr)
            time.sleep(2)
    want = config.topics.partitions
    print(f"init_topics: broker {describe(config.kafka)}; created: {', '.join(created) or 'none'}")
    for name, n in sorted(counts.items()):
        note = "" if n == want else f"  <- topics.partitions is {want}; the existing topic was left as it is"
        print(f"  {name}: {n} partitions{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
