"""Replay: every line is an alert's input, a rejected line or a late event, and nothing else."""

from __future__ import annotations

from pathlib import Path

import orjson

from detectors.replay import rejects_path, replay
from detectors.synthetic import SyntheticStream
from streams.config import Config


def write(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def test_late_and_bad_lines_go_to_the_rejects_file_and_change_nothing_else(tmp_path: Path) -> None:
    events = list(SyntheticStream(seed=1, hours=2, rate=3, accounts=8000).events())
    rows = [orjson.dumps(e) for e in events]
    late = dict(events[10], event_id="late-one", ts=events[-1]["ts"] - 3600)
    config = Config()
    clean = replay(write(tmp_path / "clean.jsonl", rows), tmp_path / "a.jsonl", config, batch_size=5000,
                   max_event_bytes=config.events.max_event_bytes)  # fmt: skip
    dirty_rows = [*rows[: len(rows) - 10], b"{not json", orjson.dumps(late), *rows[len(rows) - 10 :]]
    dirty = replay(write(tmp_path / "dirty.jsonl", dirty_rows), tmp_path / "b.jsonl", config, batch_size=5000,
                   max_event_bytes=config.events.max_event_bytes)  # fmt: skip
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert dirty.rejected == {"not_json": 1, "late": 1} and dirty.events == clean.events
    rejects = [orjson.loads(x) for x in rejects_path(tmp_path / "b.jsonl").read_bytes().splitlines()]
    assert [(r["reason"], r["line"]) for r in rejects] == [("not_json", len(rows) - 9), ("late", None)]
    assert orjson.loads(rejects[1]["raw"])["event_id"] == "late-one"
