"""``coordwatch bench replay``: whole-replay throughput and memory, each beside a same-run baseline.

Every replay runs in its own process (``coordwatch replay --summary-json``), so its peak RSS
is its own. Baselines in the same run: the same file with every detector disabled (parse +
pipeline plumbing only) for events/s and RSS, each detector alone beside all of them (a work
unit's ceiling: the worker holding it parses every event and runs that one detector, so the
slowest unit bounds what any number of workers detects), and the peers' recorded timings for the
russian data x10 (coordination-network-toolkit 13.6 s, CooRTweet 862 s on this kind of
machine, from ``../shared/data/coord_eval/peer_results``).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from detectors.pipeline import detector_classes
from streams.benchmarks.common import Row

COORD_EVAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "coord_eval"
RUSSIAN = COORD_EVAL / "datasets" / "russian_coord_tweets.jsonl.gz"
CNT_X10_S = 13.56  # peer_results/cnt_russian_x10_tw60/summary.json: peer_wall_s_total
COORTWEET_X10_S = 862.0  # ct_russian_x10_tw60: read + detect_groups + generate_network
DETECTORS = tuple(detector_classes())
OFF = [arg for name in DETECTORS for arg in ("--set", f"{name}.enabled=false")]


def only(name: str) -> list[str]:
    """The replay arguments that leave detector ``name`` the only one enabled."""
    return [arg for other in DETECTORS if other != name for arg in ("--set", f"{other}.enabled=false")]


def replay(events: Path, *args: str) -> dict[str, Any]:
    """One replay in a fresh process; its summary (events/s, seconds, peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        subprocess.run(
            [sys.executable, "-m", "streams", "replay", str(events), "--out", str(Path(tmp) / "alerts.jsonl"),
             "--summary-json", str(summary), "--set", "replay.progress=false", *args],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        return orjson.loads(summary.read_bytes())  # type: ignore[no-any-return]


def generate(out: Path, hours: float, rate: float) -> Path:
    subprocess.run(
        [sys.executable, "-m", "streams", "generate", "--out", str(out), "--hours", str(hours),
         "--rate", str(rate), "--no-progress"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return out / "events.jsonl"


def replicate(src: Path, dst: Path, copies: int) -> Path:
    """``copies`` time-shifted copies of ``src`` with suffixed ids (the peers' x10 data)."""
    lines = [orjson.loads(x) for x in gzip.open(src, "rb")]
    span = max(e["ts"] for e in lines) - min(e["ts"] for e in lines) + 86_400
    with open(dst, "wb") as out:
        for k in range(copies):
            for e in lines:
                e2 = dict(e, ts=e["ts"] + k * span, account_id=f"{e['account_id']}~{k}",
                          event_id=f"{e['event_id']}~{k}")
                if e.get("object_id"):
                    e2["object_id"] = f"{e['object_id']}~{k}"
                out.write(orjson.dumps(e2) + b"\n")
    return dst


def run(quick: bool = False) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        mix = generate(base / "mix", hours=6 if quick else 24, rate=8)
        ours, plain = replay(mix), replay(mix, *OFF)
        rows.append(Row(f"replay, generator mix ({ours['events']} events), all detectors",
                        ours["events_per_s"], "events/s", "same file, detectors off", plain["events_per_s"],
                        key="replay_events_per_s"))
        rows.append(Row("peak RSS of that replay", ours["peak_rss_mb"], "MB (lower is better)",
                        "same file, detectors off", plain["peak_rss_mb"], key="replay_peak_rss_mb"))
        alone = {name: replay(mix, *only(name))["events_per_s"] for name in DETECTORS}
        for name, rate in alone.items():
            rows.append(Row(f"  {name} alone (its work unit on one core)", rate, "events/s",
                            "all detectors, same file", ours["events_per_s"], key=f"unit_{name}_vs_all", figure="ratio"))
        slowest = min(alone, key=alone.__getitem__)
        rows.append(Row(f"  the slowest unit ({slowest}): the most any number of workers detects", alone[slowest],
                        "events/s", "all detectors, same file", ours["events_per_s"], key="scaleout_ceiling",
                        figure="ratio"))  # fmt: skip

        x10 = replicate(RUSSIAN, base / "russian_x10.jsonl", 2 if quick else 10)
        cnt, bare = replay(x10, "--preset", "cnt"), replay(x10, "--preset", "cnt", *OFF)
        rows.append(Row(f"russian x{2 if quick else 10} ({cnt['events']} events), preset cnt: seconds",
                        cnt["seconds"], "s (lower is better)", "coordination-network-toolkit (recorded)",
                        CNT_X10_S / (1 if not quick else 5), key="russian_x10_s"))
        rows.append(Row("  the same, beside parse-only in this run", cnt["seconds"], "s (lower is better)",
                        "same file, detectors off", bare["seconds"]))
        rows.append(Row("  the same, beside CooRTweet (recorded)", cnt["seconds"], "s (lower is better)",
                        "CooRTweet 2.1.3 (recorded)", COORTWEET_X10_S / (1 if not quick else 5)))

        if not quick:
            # the same rate for 4x as long: windows must expire, so state should not grow
            one = replay(generate(base / "m1", hours=24, rate=11.8))
            four = replay(generate(base / "m4", hours=96, rate=11.8))
            rows.append(Row(f"peak RSS at {four['events']} events", four["peak_rss_mb"], "MB (lower is better)",
                            f"peak RSS at {one['events']} events", one["peak_rss_mb"], key="rss_4m_over_1m",
                            figure="ratio"))
            rows.append(Row(f"peak RSS at {one['events']} events", one["peak_rss_mb"], "MB (lower is better)",
                            "", 0.0, key="rss_1m_mb"))
    return rows
