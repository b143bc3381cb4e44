"""The worker's Prometheus metrics (served by :func:`streams.worker.serve_metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("coordwatch_events", "valid events handed to the detectors (counted once, by work partition 0's stage)")
MESSAGES = Counter("coordwatch_messages", "input messages ingested (after a crash, re-read ones count again)")
REJECTED = Counter("coordwatch_rejected", "rejected input sent to the dead-letter topic", ["reason"])
ALERTS = Counter("coordwatch_alerts", "alerts published", ["type"])
SUPPRESSED = Counter("coordwatch_alerts_suppressed", "alerts not re-published after a restart (already on the topic)")
OUT_OF_ORDER = Counter("coordwatch_out_of_order", "stage input skipped ahead of its next offset (re-read in order)")
MISSING = Counter("coordwatch_missing", "work or link offsets a stage went on without: not in the log (markers, retention)")
LAG = Gauge("coordwatch_lag", "messages behind the partition end", ["topic", "partition"])
STATE_BYTES = Gauge("coordwatch_pipeline_state_bytes", "size of the last snapshot's state, per stage", ["stage"])
STORED_BYTES = Gauge("coordwatch_snapshot_stored_bytes", "size of the last snapshot on its topic (compressed), per stage",
                     ["stage"])
SNAPSHOT_SECONDS = Gauge("coordwatch_snapshot_seconds", "time the last snapshot took, per stage", ["stage"])
WATERMARK = Gauge("coordwatch_event_time", "newest event time seen (unix seconds)")
HELD = Gauge("coordwatch_partitions_holding", "input partitions that may still send older events, holding back "
             "a detect stage's ticks (not reported, behind their high watermark, or a stale report)", ["stage"])
MERGE_WAITING = Gauge("coordwatch_merge_waiting_events", "events a merge of a split detector's parts holds from its faster "
                      "parts until the slowest has sent them too (one part lagging: this grows)", ["stage"])
