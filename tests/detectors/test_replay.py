"""Replay: every line is an alert's input, a rejected line, a late event or a copy, and nothing else."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import orjson

from detectors.replay import rejects_path, replay
from detectors.synthetic import SyntheticStream
from streams.config import Config


def write(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def test_late_future_repeated_and_bad_lines_go_to_the_rejects_file_and_change_nothing_else(tmp_path: Path) -> None:
    """Also an event dated a week after the replay's start (a clock ahead), early in the file
    (kept, it would make nearly every later event late: test_a_clock_ahead_...), and a line
    sent twice."""
    events = list(SyntheticStream(seed=1, hours=2, rate=3, accounts=8000).events())
    rows = [orjson.dumps(e) for e in events]
    late = dict(events[10], event_id="late-one", ts=events[-1]["ts"] - 3600)
    ahead = dict(events[20], event_id="clock-ahead", ts=time.time() + 7 * 86400)
    config = Config()
    run = functools.partial(replay, config=config, batch_size=5000, max_event_bytes=config.events.max_event_bytes,
                            max_ahead_s=config.events.max_ahead_s)  # fmt: skip
    clean = run(write(tmp_path / "clean.jsonl", rows), tmp_path / "a.jsonl")
    dirty_rows = [*rows[:100], orjson.dumps(ahead), *rows[100:500], rows[499], *rows[500 : len(rows) - 10],
                  b"{not json", orjson.dumps(late), *rows[len(rows) - 10 :]]  # fmt: skip
    dirty = run(write(tmp_path / "dirty.jsonl", dirty_rows), tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert dirty.rejected == {"future_ts": 1, "duplicate": 1, "not_json": 1, "late": 1} and dirty.events == clean.events
    rejects = [orjson.loads(x) for x in rejects_path(tmp_path / "b.jsonl").read_bytes().splitlines()]
    assert sorted((r["reason"], r["line"] or 0) for r in rejects) == [
        ("duplicate", 0), ("future_ts", 101), ("late", 0), ("not_json", len(rows) - 7)]  # fmt: skip
    assert {r["reason"]: orjson.loads(r["raw"])["event_id"] for r in rejects if r["line"] is None} == {
        "late": "late-one", "duplicate": events[499]["event_id"]}  # fmt: skip


def test_a_clock_ahead_kept_makes_the_on_time_events_after_it_late(tmp_path: Path) -> None:
    """What future_ts guards against: with the check off the same file loses its alerts."""
    events = list(SyntheticStream(seed=1, hours=2, rate=3, accounts=8000).events())
    rows = [orjson.dumps(e) for e in events]
    ahead = orjson.dumps(dict(events[20], event_id="clock-ahead", ts=time.time() + 7 * 86400))
    config = Config()
    off = replay(write(tmp_path / "dirty.jsonl", [*rows[:100], ahead, *rows[100:]]), tmp_path / "b.jsonl", config,
                 batch_size=5000, max_event_bytes=config.events.max_event_bytes, max_ahead_s=0)  # fmt: skip
    assert off.rejected["late"] > 0.95 * len(rows) and not sum(off.alerts.values())
