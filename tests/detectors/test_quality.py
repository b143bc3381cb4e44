"""Detection quality of the default config on a labelled synthetic stream (all detectors).

The issue's targets on full default streams (24 h, three seeds) are precision >= 0.95, recall
>= 0.90, every campaign caught and <= 1 % of hard-negative accounts flagged; they are measured
with ``coordwatch generate`` / ``replay`` / ``evaluate`` (see the issue note). This 6 h stream is
smaller and harder for the weakest campaigns (fewer repetitions in memory): measured precision
1.000, recall 0.905, 19 of 20 campaigns caught, no hard negative flagged. Precision and hard
negatives are asserted at the target; recall and campaigns caught at floors just under the
measurement, against regressions.
"""

from __future__ import annotations

import math

import orjson

from detectors.evaluate import evaluate
from detectors.events import Event, parse_obj
from detectors.pipeline import Pipeline
from detectors.schema import alert_errors
from detectors.synthetic import SyntheticStream
from streams.config import load

RECALL_FLOOR = 0.89  # measured 0.905 on this stream (0.888 with the earlier 60 s window and 1e-7)
CAUGHT_FLOOR = 19  # measured 19 of 20 (a 6 h stream gives the weak campaigns fewer repetitions)


def test_default_config_on_a_labelled_stream():
    stream = SyntheticStream(seed=0, hours=6, rate=4, accounts=10_000)
    events = [parse_obj(d) for d in stream.events()]
    assert all(isinstance(e, Event) for e in events)
    pipeline = Pipeline.from_config(load(environ={}).config)
    alerts = []
    for i in range(0, len(events), 5_000):
        alerts += pipeline.process(events[i : i + 5_000])  # type: ignore[arg-type]
    alerts += pipeline.advance(math.inf)
    dicts = [orjson.loads(a.to_json()) for a in alerts]
    assert all(alert_errors(d) == [] for d in dicts)
    assert {d["type"] for d in dicts} == {"co_action", "near_duplicate", "burst"}

    report = evaluate(stream.labels, dicts)
    assert report.precision is not None and report.precision >= 0.95
    assert report.hard_negatives_all.share <= 0.01
    assert report.recall is not None and report.recall >= RECALL_FLOOR
    assert report.caught >= CAUGHT_FLOOR
