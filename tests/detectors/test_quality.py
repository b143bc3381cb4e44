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

import functools
import math
from typing import Any

import orjson
import pytest

from detectors.evaluate import evaluate
from detectors.events import Event, parse_obj
from detectors.pipeline import Pipeline
from detectors.schema import alert_errors
from detectors.synthetic import SyntheticStream
from streams.config import load

RECALL_FLOOR = 0.89  # measured 0.905 on this stream (0.888 with the earlier 60 s window and 1e-7)
CAUGHT_FLOOR = 19  # measured 19 of 20 (a 6 h stream gives the weak campaigns fewer repetitions)


@functools.cache
def labelled_run() -> tuple[SyntheticStream, tuple[dict[str, Any], ...]]:
    """The labelled 6 h stream and the default pipeline's alerts on it (as published)."""
    stream = SyntheticStream(seed=0, hours=6, rate=4, accounts=10_000)
    events = [parse_obj(d) for d in stream.events()]
    assert all(isinstance(e, Event) for e in events)
    pipeline = Pipeline.from_config(load(environ={}).config)
    alerts = []
    for i in range(0, len(events), 5_000):
        alerts += pipeline.process(events[i : i + 5_000])  # type: ignore[arg-type]
    alerts += pipeline.advance(math.inf)
    return stream, tuple(orjson.loads(a.to_json()) for a in alerts)


def test_default_config_on_a_labelled_stream():
    stream, dicts = labelled_run()
    assert all(alert_errors(d) == [] for d in dicts)
    assert {d["type"] for d in dicts} == {"co_action", "near_duplicate", "burst"}

    report = evaluate(stream.labels, list(dicts))
    assert report.precision is not None and report.precision >= 0.95
    assert report.hard_negatives_all.share <= 0.01
    assert report.recall is not None and report.recall >= RECALL_FLOOR
    assert report.caught >= CAUGHT_FLOOR


#: the campaign styles each detector is for (the generator's, detectors.synthetic)
STYLES = {
    "co_action": {"like_ring", "link_ring", "retweet_ring", "slow_ring"},
    "near_duplicate": {"copy_paste"},
    "burst": {"hashtag_push"},
}
#: campaigns of its styles a detector may miss here: co_action the weak slow ring (measured),
#: which the whole pipeline misses too (CAUGHT_FLOOR)
MAY_MISS = {"co_action": 1, "near_duplicate": 0, "burst": 0}


@pytest.mark.parametrize("detector", STYLES)
def test_each_detector_catches_the_campaigns_it_is_for_and_no_others(detector: str):
    """Scored on its own alerts: every campaign of its styles (but MAY_MISS), none of
    another's, and no wrong account."""
    stream, dicts = labelled_run()
    report = evaluate(stream.labels, [d for d in dicts if d["type"] == detector])
    mine = [c for c in report.campaigns if c.style in STYLES[detector]]
    assert mine and all(c.style in STYLES[detector] for c in report.campaigns if c.caught)
    missed = [c.id for c in mine if not c.caught]
    assert len(missed) <= MAY_MISS[detector], missed
    assert report.false_positives == 0
