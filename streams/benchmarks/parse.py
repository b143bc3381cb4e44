"""Event parsing throughput: :func:`detectors.events.parse_message` (one call per message)
and :func:`detectors.events.parse_messages` (many messages per call: what replay and the
worker's batches use) beside bare ``orjson.loads`` over the same lines in the same run (the
ratio is our per-event overhead). The events are kept per chunk, as replay keeps a batch:
allocating memory that stays alive costs more than the recycled memory of results dropped
at once.

The sample is real JSONL (the german_elections dataset, when /work/shared is mounted) mixed
with synthetic events whose text carries hashtags and URLs, so extraction is exercised; a
tenth of the synthetic events have no ``event_id``, so id derivation is too.
"""

from __future__ import annotations

import gzip
import itertools
import random
from collections.abc import Callable
from pathlib import Path

import orjson

from detectors.events import parse_message, parse_messages
from streams.benchmarks.common import Row, best_time

#: ../shared beside the repository (a developer checkout); the benchmark falls back to generated events.
DATASET = Path(__file__).resolve().parents[3] / "shared" / "data" / "coord_eval" / "datasets" / "german_elections.jsonl.gz"
_WORDS = "wahl bundestag klima heute alle jetzt teilen news video lesen morgen".split()
_TAGS = ["#Wahl2021", "#BTW21", "#Klima", "#AfD", "#Laschet", "#Baerbock", "#Scholz"]
_SITES = ["https://www.example.de", "https://news.example.com", "http://blog.example.org"]
#: Messages per parse_messages call (replay parses a 1 MiB block at once: ~7000 lines).
CHUNK = 5_000


def run(quick: bool = False) -> list[Row]:
    n_real, n_synth = (4_000, 1_000) if quick else (20_000, 5_000)
    lines = _real_lines(n_real)
    n_synth += n_real - len(lines)  # all synthetic when the dataset is not mounted
    lines += _synthetic_lines(n_synth, seed=7)
    random.Random(1).shuffle(lines)
    envelopes = [b"[" + b",".join(lines[i : i + 100]) + b"]" for i in range(0, len(lines), 100)]
    repeat = 5 if quick else 7
    n = len(lines)

    def ours() -> None:
        for line in lines:
            parse_message(line)

    def bare() -> None:
        for line in lines:
            orjson.loads(line)

    def ours_env() -> None:
        for env in envelopes:
            parse_message(env)

    def bare_env() -> None:
        for env in envelopes:
            orjson.loads(env)

    chunks = [lines[i : i + CHUNK] for i in range(0, n, CHUNK)]
    ours_many, bare_many = _batched(chunks)
    frames = [envelopes[i : i + CHUNK // 100] for i in range(0, len(envelopes), CHUNK // 100)]
    ours_frames, bare_frames = _batched(frames)

    assert sum(len(parse_message(line)) for line in lines) == n  # one result per line
    assert sum(len(parse_messages(chunk)[0]) for chunk in chunks) == n  # and all of them events
    what = f"{n} events, {n_synth} synthetic with text"

    def row(label: str, ours: Callable[[], None], baseline: str, bare: Callable[[], None], key: str = "") -> Row:
        return Row(label, n / best_time(ours, repeat=repeat), "events/s", baseline, n / best_time(bare, repeat=repeat),
                   key=key)  # fmt: skip

    return [
        row(f"parse_message, one event per message ({what})", ours, "orjson.loads, same lines", bare,
            key="parse_events_per_s"),
        row("parse_message, envelopes of 100 events", ours_env, "orjson.loads, same envelopes", bare_env),
        row(f"parse_messages, {CHUNK} messages per call, events kept per call", ours_many,
            "orjson.loads, same lines, objects kept per chunk", bare_many, key="parse_messages_events_per_s"),
        row(f"parse_messages, {CHUNK // 100} envelopes of 100 per call (a worker's frames), events kept", ours_frames,
            "orjson.loads, same envelopes, objects kept per call", bare_frames, key="parse_envelopes_events_per_s"),
    ]  # fmt: skip


def _batched(batches: list[list[bytes]]) -> tuple[Callable[[], None], Callable[[], None]]:
    """``parse_messages`` per batch, and its baseline: ``orjson.loads`` of each message of it."""

    def ours() -> None:
        for batch in batches:
            parse_messages(batch)

    def bare() -> None:
        loads = orjson.loads
        for batch in batches:
            [loads(m) for m in batch]

    return ours, bare


def _real_lines(n: int) -> list[bytes]:
    """The first ``n`` lines of the real dataset, or none when it is not mounted."""
    if not DATASET.exists():
        return []
    with gzip.open(DATASET, "rb") as f:
        return [line.rstrip(b"\n") for line in itertools.islice(f, n)]


def _synthetic_lines(n: int, seed: int) -> list[bytes]:
    """Posts and shares whose text holds hashtags and (tracking-tagged) URLs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(_WORDS, k=rng.randint(5, 25))
        words += rng.sample(_TAGS, rng.randint(0, 3))
        if rng.random() < 0.6:
            words.append(f"{rng.choice(_SITES)}/a/{rng.randint(1, 500)}?utm_source=tw")
        rng.shuffle(words)
        ev = {
            "ts": 1_629_000_000 + i * 0.7,
            "account_id": f"acc_{rng.randint(1, 3000)}",
            "action": rng.choice(("post", "share", "retweet", "reply")),
            "text": " ".join(words),
            "lang": "de",
        }
        if rng.random() < 0.9:
            ev["event_id"] = f"s{i}"
        if rng.random() < 0.3:
            ev["object_id"] = f"post_{rng.randint(1, 2000)}"
        out.append(orjson.dumps(ev))
    return out
