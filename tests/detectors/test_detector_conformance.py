"""Every detector through the one protocol (River-style generic checks over all of them).

Input is a small labelled synthetic stream, so every detector has something to find.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import orjson
import pytest

from detectors.base import Alert, Detector
from detectors.events import Event, parse_obj
from detectors.pipeline import detector_classes
from detectors.schema import alert_errors
from detectors.synthetic import SyntheticStream
from sketches.errors import IncompatibleSketchError, SketchFormatError
from streams.config import SECTIONS

NAMES = list(detector_classes())


@functools.cache
def stream() -> list[Event]:
    evs = [parse_obj(d) for d in SyntheticStream(seed=3, hours=3, rate=3, accounts=8000).events()]
    assert all(isinstance(e, Event) for e in evs)
    return evs  # type: ignore[return-value]


def make(name: str, **overrides: Any) -> Detector[Any]:
    params = SECTIONS[name].model_validate(overrides)
    return detector_classes()[name](params)


def run(det: Detector[Any], events: list[Event], batch: int) -> list[Alert]:
    out: list[Alert] = []
    for i in range(0, len(events), batch):
        out += det.process(events[i : i + batch])
    return out + det.advance(math.inf)


@functools.cache
def straight_alerts(name: str) -> tuple[Alert, ...]:
    return tuple(run(make(name), stream(), len(stream())))


def straight(name: str) -> tuple[bytes, ...]:
    return tuple(a.to_json() for a in straight_alerts(name))


pytestmark = pytest.mark.parametrize("name", NAMES)


def test_finds_something_and_every_alert_validates(name: str):
    alerts = straight(name)
    assert alerts, f"{name} found nothing in a stream with injected campaigns"
    for raw in alerts:
        alert = orjson.loads(raw)
        assert alert_errors(alert) == [], alert_errors(alert)
        assert alert["type"] == name
        assert alert["account_count"] >= len(alert["accounts"])


def test_alerts_do_not_depend_on_batching(name: str):
    for batch in (1, 97, 5000):
        alerts = run(make(name), stream(), batch)
        assert tuple(a.to_json() for a in alerts) == straight(name), f"batches of {batch} changed {name}'s alerts"
        assert [a.at for a in alerts] == [a.at for a in straight_alerts(name)], f"batches of {batch} changed `at`"


def test_alerts_carry_the_event_time_they_were_decided_at(name: str):
    """``at`` never decreases and lies within the stream (inf only for the final flush)."""
    ats = [a.at for a in straight_alerts(name)]
    finite = [t for t in ats if math.isfinite(t)]
    assert finite == sorted(finite) and ats[: len(finite)] == finite
    assert all(t <= max(e.ts for e in stream()) for t in finite)


def test_alert_ids_are_unique(name: str):
    ids = [orjson.loads(a)["alert_id"] for a in straight(name)]
    assert len(ids) == len(set(ids))


def test_snapshot_restore_mid_stream_continues_identically(name: str):
    evs = stream()
    half = len(evs) // 2
    det = make(name)
    first = [a.to_json() for a in det.process(evs[:half])]
    data = det.snapshot()
    resumed = type(det).restore(det.params, data)
    assert resumed.snapshot() == data, "restore(snapshot()) must reproduce the state exactly"
    rest = [a.to_json() for a in run(resumed, evs[half:], len(evs))]
    assert tuple(first + rest) == straight(name)


def test_restore_refuses_other_params_and_other_detectors(name: str):
    det = make(name)
    det.process(stream()[:2000])
    data = det.snapshot()
    other = SECTIONS[name].model_validate({"allowed_lateness_s": 1.0})
    with pytest.raises(IncompatibleSketchError, match="allowed_lateness_s"):
        type(det).restore(other, data)
    for other_name in NAMES:
        if other_name != name:
            with pytest.raises(SketchFormatError):
                type(make(other_name)).restore(make(other_name).params, data)


def test_late_events_are_counted_and_dropped(name: str):
    det = make(name, allowed_lateness_s=10.0)
    evs = stream()[:3000]
    det.process(evs)
    late = [e._replace(ts=det.watermark - 11.0, event_id=f"late-{i}") for i, e in enumerate(evs[:50])]
    on_time = [e._replace(ts=det.watermark - 9.0, event_id=f"ok-{i}") for i, e in enumerate(evs[:5])]
    before = det.stats["events"]
    det.process(late + on_time)
    assert det.stats["late_dropped"] == 50
    assert det.stats["events"] == before + 5
