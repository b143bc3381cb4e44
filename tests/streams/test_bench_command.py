"""``coordwatch bench sketches`` runs end to end and ends with the promised key=value figures."""

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
