"""Each ``coordwatch bench`` command runs end to end and ends with the promised key=value figures.

Smoke runs: the figures are the benchmarks' to report (a shared, noisy machine), so these
check that every figure is there and the relations that hold however noisy the run."""

from __future__ import annotations

import subprocess
import sys


def test_bench_sketches_quick_prints_table_and_figures():
    res = subprocess.run(
        [sys.executable, "-m", "streams", "bench", "sketches", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[0] == "measured"
    figures = dict(item.split("=", 1) for item in lines[-1].split())
    for key in ("minhash_speedup", "cms_updates_per_s", "lsh_ops_per_s", "lsh_bytes_per_doc", "parse_events_per_s"):
        assert float(figures[key]) > 0, key
    for key in ("cms_updates_per_s_vs_baseline", "lsh_ops_per_s_vs_baseline", "parse_events_per_s_vs_baseline"):
        assert float(figures[key]) > 0, key


def test_bench_stream_quick_prints_table_and_figures():
    """The embedded broker, a produced stream, the baselines, one real worker process, then
    two workers in one group beside one, and the worker on single-event messages (about 75 s)."""
    res = subprocess.run(
        [sys.executable, "-m", "streams", "bench", "stream", "--quick", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[0] == "measured"
    figures = dict(item.split("=", 1) for item in lines[-1].split())
    for key in ("stream_events_per_s", "raw_consume_events_per_s", "stream_vs_raw", "produce_events_per_s",
                "loop_events_per_s", "stream_vs_loop", "stream_vs_loop_per_core", "worker_startup_s",
                "stream2_events_per_s", "stream1_events_per_s", "two_vs_one", "two_vs_one_per_core", "parse_ceiling_events_per_s",
                "detect_ceiling_events_per_s", "single_vs_raw_single", "single_vs_envelopes"):
        assert float(figures[key]) > 0, key
    # every event is parsed and detected, so neither part alone is slower than the loop
    for key in ("parse_ceiling_events_per_s", "detect_ceiling_events_per_s"):
        assert float(figures[key]) > float(figures["loop_events_per_s"]), key
    # the worker consumes what the raw consumer does, and parses and detects it too
    assert float(figures["stream_events_per_s"]) < float(figures["raw_consume_events_per_s"])
    # one message an event: the worker does at least the raw consume of each and the detection
    assert float(figures["single_vs_raw_single"]) < 1


def test_bench_replay_quick_prints_table_and_figures():
    """Replays in their own processes: all detectors, none, each alone, and the peers' data."""
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "replay", "--quick"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    figures = {k: float(v) for k, v in (item.split("=", 1) for item in res.stdout.strip().splitlines()[-1].split())}
    for key in ("replay_events_per_s", "replay_peak_rss_mb", "russian_x10_s", "scaleout_ceiling"):
        assert figures[key] > 0, key
    # a detector alone does a strict part of all three's work, and the ceiling is the slowest of them
    units = [figures[f"unit_{name}_vs_all"] for name in ("co_action", "near_duplicate", "burst")]
    assert min(units) > 1 and figures["scaleout_ceiling"] == min(units)


def test_bench_partitions_quick_prints_table_and_figures():
    """The tick buffer fed 12 partitions in step, then with one far behind (in-process)."""
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "partitions", "--quick"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    figures = dict(item.split("=", 1) for item in res.stdout.strip().splitlines()[-1].split())
    assert float(figures["behind_vs_in_step"]) > 0


def test_bench_shards_quick_prints_table_and_figures():
    """Burst whole and in 2 and 4 shards, co_action in 2 and 4 object parts, near_duplicate in
    2 and 4 band parts, and their merges, in-process (the bench fails if the shards' or the merge's alerts differ from the whole's)."""
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "shards", "--quick"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    figures = dict(item.split("=", 1) for item in res.stdout.strip().splitlines()[-1].split())
    for n in (2, 4):
        for key in (f"burst_shard_of_{n}_vs_whole", f"burst_{n}_shards_sum_vs_whole", f"burst_route_{n}_vs_whole",
                    f"co_action_part_of_{n}_vs_whole", f"co_action_merge_of_{n}_vs_whole",
                    f"near_duplicate_part_of_{n}_vs_whole", f"near_duplicate_merge_of_{n}_vs_whole"):
            assert float(figures[key]) > 0, key


def test_bench_levers_quick_prints_every_lever():
    """Bare Faust agents, one per lever, and the worker on each event loop, batch size and
    input shape (the bench fails if a worker runs on another loop than configured, or
    publishes fewer alerts than the plain loop)."""
    res = subprocess.run([sys.executable, "-m", "streams", "bench", "levers", "--quick"],
                         capture_output=True, text=True, timeout=400)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    figures = dict(item.split("=", 1) for item in res.stdout.strip().splitlines()[-1].split())
    for lever in ("serializer", "batching", "acking", "uvloop", "envelopes"):
        assert float(figures[f"lever_{lever}"]) > 0, lever
        assert float(figures[f"agent_{lever}_vs_raw"]) > 0, lever
    for key in ("worker_envelopes_events_per_s", "worker_uvloop_vs_asyncio", "worker_small_batches_vs_defaults",
                "worker_singles_vs_envelopes", "worker_singles_small_batches_vs_defaults"):
        assert float(figures[key]) > 0, key
    # a message costs a bare agent far more than its bytes: envelopes must show it
    assert float(figures["lever_envelopes"]) > 5
