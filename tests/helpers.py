"""Helpers shared by several test files (imported as ``tests.helpers`` from the repo root)."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def outputs_under_two_hash_seeds(code: str) -> list[str]:
    """stdout of ``python -c code`` in two processes with different PYTHONHASHSEED.

    Equal outputs show a result does not follow Python's salted ``hash()``.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return outs


def concrete_subclasses(base: type, package: str) -> set[type]:
    """Every non-abstract subclass of ``base`` defined in ``package``'s modules (all imported
    first), so a conformance test's list of implementations can be checked for gaps."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, f"{package}."):
        importlib.import_module(info.name)
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if not inspect.isabstract(sub) and sub.__module__.startswith(f"{package}."):
                found.add(sub)
    return found


def read_topic(port: int, topic: str) -> list[Any]:
    """Every record on ``topic`` of the broker at 127.0.0.1:``port``, by partition then offset."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.broker import end_offsets

    consumer = KafkaConsumer(bootstrap_servers=[f"127.0.0.1:{port}"], group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        ends = end_offsets(consumer, tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def apart(part_cls: type, merge: Any, params: Any, evs: list[Any], n: int, seed: int) -> tuple[bytes, ...]:
    """A split detector in ``n`` parts (``part_cls``, ``detectors.parts``), each a detector fed
    its own batches and advanced after each (the second restored from its snapshot half-way),
    their segments through bytes, interleaved at random with some sent twice, into ``merge``
    (a fresh ``PartsMerge`` of ``n`` parts, itself restored half-way): its alerts."""
    import math
    import random

    sent: list[list[Any]] = []
    for s in range(n):
        batch = (1000, 7, 333)[s % 3]
        part, mine = part_cls(params, (s, n)), []
        for i in range(0, len(evs), batch):
            if s == 1 and i == batch * (len(evs) // batch // 2):
                part = part_cls.restore(params, part.snapshot(), (s, n))
            part.process(evs[i : i + batch])
            part.advance(part.watermark)
            mine += part.outbox
            part.outbox.clear()
        part.advance(math.inf)
        sent.append(mine + part.outbox)
    rng = random.Random(seed)
    heads, order = [0] * n, []
    while any(h < len(x) for h, x in zip(heads, sent)):
        s = rng.choice([k for k in range(n) if heads[k] < len(sent[k])])
        order.append((s, sent[s][heads[s]]))
        if heads[s] and rng.random() < 0.05:
            order.append((s, sent[s][heads[s] - 1]))  # again: dropped
        heads[s] += 1
    join, found = merge(), []
    for k, (s, seg) in enumerate(order):
        if k == len(order) // 2:
            state, join = join.state(), merge()
            join.load(state)
        found += [a.to_json() for a in join.offer(s, join.segment(seg.to_bytes()))]
    assert join.waiting == 0 and join.done == len(evs)
    return tuple(found)
