"""Every detector through the one protocol (River-style generic checks over all of them).

Input is a small labelled synthetic stream, so every detector has something to find.
"""

from __future__ import annotations

import functools
import math
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.base import Alert, Detector, KeyedDetector, Router
from detectors.events import Event, parse_obj
from detectors.pipeline import Detection, detector_classes, detector_parts
from detectors.schema import alert_errors
from detectors.synthetic import SyntheticStream
from sketches.errors import IncompatibleSketchError, SketchFormatError
from streams.config import SECTIONS
from tests.helpers import concrete_subclasses

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


each = pytest.mark.parametrize("name", NAMES)


def test_every_detector_is_in_the_pipeline():
    """Or runs a part of one apart (whose merge is tested with its detector)."""
    assert concrete_subclasses(Detector, "detectors") == {*detector_classes().values(), *detector_parts().values()}


@each
def test_finds_something_and_every_alert_validates(name: str):
    alerts = straight(name)
    assert alerts, f"{name} found nothing in a stream with injected campaigns"
    for raw in alerts:
        alert = orjson.loads(raw)
        assert alert_errors(alert) == [], alert_errors(alert)
        assert alert["type"] == name
        assert alert["account_count"] >= len(alert["accounts"])


@each
def test_alerts_do_not_depend_on_batching(name: str):
    for batch in (1, 97, 5000):
        alerts = run(make(name), stream(), batch)
        assert tuple(a.to_json() for a in alerts) == straight(name), f"batches of {batch} changed {name}'s alerts"
        assert [a.at for a in alerts] == [a.at for a in straight_alerts(name)], f"batches of {batch} changed `at`"


@each
def test_alerts_carry_the_event_time_they_were_decided_at(name: str):
    """``at`` never decreases and lies within the stream (inf only for the final flush)."""
    ats = [a.at for a in straight_alerts(name)]
    finite = [t for t in ats if math.isfinite(t)]
    assert finite == sorted(finite) and ats[: len(finite)] == finite
    assert all(t <= max(e.ts for e in stream()) for t in finite)


@each
def test_alert_ids_are_unique(name: str):
    ids = [orjson.loads(a)["alert_id"] for a in straight(name)]
    assert len(ids) == len(set(ids))


@each
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


@each
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


@each
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


def _detection_run(dets: list[Detector[Any]], route: Router | None, events: list[Event],
                   batch: int) -> tuple[list[Alert], set[str]]:  # fmt: skip
    """Each detector in its own Detection (one tick rule), fed ``events`` in batches: all of
    them, or with ``route`` the events of its shard and the times of all. Alerts and late event ids."""
    lateness = max(d.params.allowed_lateness_s for d in dets)
    runs = [Detection([d], 10.0, lateness) for d in dets]
    alerts: list[Alert] = []
    late: set[str] = set()
    for i in range(0, len(events), batch):
        part = events[i : i + batch]
        times = np.array([e.ts for e in part])
        routes = route.route(part, len(dets)) if route else [None] * len(dets)
        for run_, idx in zip(runs, routes):
            mine = part if idx is None else [part[j] for j in idx.tolist()]
            late |= {e.event_id for e in run_.add(mine, "s", times, idx)}
            alerts += run_.advance(run_.newest)
    for run_ in runs:
        alerts += run_.advance(math.inf)
    return alerts, late


def _with_key(name: str, n: int, shard: int, ts: float, event_id: str) -> Event:
    """An event at ``ts`` whose one key (an object id) is of ``shard`` of ``n``."""
    base = stream()[0]._replace(text=None, urls=(), hashtags=())
    router = detector_classes()[name].router(SECTIONS[name]())
    for i in range(1000):
        e = base._replace(ts=ts, event_id=event_id, object_id=f"{event_id}-{i}")
        if [s for s, idx in enumerate(router.route([e], n)) if idx.size] == [shard]:
            return e
    raise AssertionError("no such key")


@each
def test_a_keyed_detectors_router_routes_as_its_shards_count_and_holds_no_sketch(name: str):
    """What a worker's ingest keeps per keyed detector: a router that sends every event with
    keys to the shards of its keys, and allocates none of a detector's state (a whole burst
    detector: a 12.8 MB count-min). That the shards then find what the whole does: below."""
    cls = detector_classes()[name]
    if not issubclass(cls, KeyedDetector):
        assert not hasattr(cls, "router")
        return
    params = make(name).params
    tracemalloc.start()
    try:
        router = cls.router(params)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert held < 64 << 10, f"{name}'s router allocated {held} bytes"
    evs = stream()[:3000]
    (keyed,) = router.route(evs, 1)  # one shard: every event that carries a key
    assert 0 < keyed.size < len(evs)
    for n in (2, 5):
        routes = router.route(evs, n)
        assert len(routes) == n and all(bool(np.all(np.diff(r) > 0)) for r in routes)  # in order, once
        assert np.array_equal(np.unique(np.concatenate(routes)), keyed)  # in the shards of its keys


@each
def test_keyed_detectors_split_into_shards_find_what_one_finds(name: str):
    """Shard ``s`` of ``n`` over the events ``route`` gives it, judged by the times of all,
    finds exactly the whole's alerts, decided at the same event times, and the same late
    events; a detector that is not keyed refuses to split. The stream has the edges where a
    shard alone would judge otherwise: a first event two hours ahead of the rest, of shard 0
    (the warm-up counts from it: ``begin``); an event of shard 1 late only behind one of
    shard 0; and every 61st event set an hour back."""
    cls = detector_classes()[name]
    params = make(name).params
    if not issubclass(cls, KeyedDetector):
        with pytest.raises(ValueError, match="cannot run as shard"):
            cls(params, (0, 2))
        return
    body = [e._replace(ts=e.ts - 3600) if i % 61 == 60 else e for i, e in enumerate(stream())]
    key = lambda a: (a.at, a.to_json())  # noqa: E731
    for n in (2, 3):
        t0, t1 = body[0].ts, max(e.ts for e in body)
        evs = [_with_key(name, n, 0, t0 - 7200, "lead"), *body,
               _with_key(name, n, 0, t1 + 1000, "ahead"), _with_key(name, n, 1, t1 + 910, "behind")]  # fmt: skip
        whole, whole_late = _detection_run([make(name)], None, evs, 4000)
        assert min(a.at for a in whole) < t0 + 900 and "behind" in whole_late  # the edges matter
        shards = [cls(params, (s, n)) for s in range(n)]
        split, late = _detection_run(shards, cls.router(params), evs, 4000)
        assert sorted(map(key, split)) == sorted(map(key, whole)), f"{n} shards changed {name}'s alerts"
        routed = np.unique(np.concatenate(cls.router(params).route(evs, n))).tolist()
        assert late == whole_late & {evs[j].event_id for j in routed}
        data = shards[1].snapshot()
        assert cls.restore(params, data, (1, n)).snapshot() == data
        with pytest.raises(IncompatibleSketchError, match="shard"):
            cls.restore(params, data, (0, n))
        with pytest.raises(IncompatibleSketchError, match=r"shard \[0, 1\]"):  # a whole detector's
            cls.restore(params, make(name).snapshot(), (1, n))
