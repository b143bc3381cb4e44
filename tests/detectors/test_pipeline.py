"""The pipeline: all detectors plus linking, byte-identical however the input is batched or resumed."""

from __future__ import annotations

import functools
import math
from operator import attrgetter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import orjson

from detectors import pipeline
from detectors.events import Event, parse_obj
from detectors.pipeline import AlertOrder, Detection, Pipeline, _canonical, enabled_detectors, lateness_of
from detectors.synthetic import SyntheticStream
from streams.config import Config


@functools.cache
def stream() -> list[Event]:
    return [parse_obj(d) for d in SyntheticStream(seed=5, hours=4, rate=3, accounts=8000).events()]  # type: ignore[misc]


def run(pipe: Pipeline, events: list[Event], batch: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(events), batch):
        out += [a.to_json() for a in pipe.process(events[i : i + batch])]
    return out + [a.to_json() for a in pipe.advance(math.inf)]


@functools.cache
def straight() -> tuple[bytes, ...]:
    return tuple(run(Pipeline.from_config(Config()), stream(), len(stream())))


def test_every_detector_alerts_and_some_alerts_are_linked() -> None:
    alerts = [orjson.loads(a) for a in straight()]
    assert {a["type"] for a in alerts} == {"co_action", "near_duplicate", "burst"}
    linked = [a for a in alerts if a["related"]]
    assert linked, "no alert was linked to another detector's"
    for a in linked:
        for r in a["related"]:
            assert r["type"] != a["type"] and r["shared_accounts"] >= Config().linking.min_shared_accounts


def test_output_does_not_depend_on_batching() -> None:
    for batch in (3, 250, 4000):
        assert tuple(run(Pipeline.from_config(Config()), stream(), batch)) == straight(), f"batches of {batch}"


def test_a_detector_is_handed_at_most_process_events_at_once(monkeypatch) -> None:
    """However many events one advance closes, each detector gets them in slices of at most
    PROCESS_EVENTS (its arrays stay that small), and the alerts are the same."""
    monkeypatch.setattr(pipeline, "PROCESS_EVENTS", 1000)
    pipe = Pipeline.from_config(Config())
    sizes: list[int] = []
    for d in pipe.detection.detectors:
        process = d.process
        monkeypatch.setattr(d, "process", lambda evs, ts=None, f=process: sizes.append(len(evs)) or f(evs, ts))
    assert tuple(run(pipe, stream(), len(stream()))) == straight()
    assert max(sizes) == 1000 and sum(sizes) == 3 * len(stream())


def test_watermarks_between_batches_do_not_change_output() -> None:
    pipe, out, evs = Pipeline.from_config(Config()), [], stream()
    for i in range(0, len(evs), 500):
        out += [a.to_json() for a in pipe.process(evs[i : i + 500])]
        out += [a.to_json() for a in pipe.advance(evs[i + 499].ts if i + 499 < len(evs) else evs[-1].ts)]
    out += [a.to_json() for a in pipe.advance(math.inf)]
    assert tuple(out) == straight()


def test_one_detection_per_detector_linked_by_one_order_is_the_pipeline() -> None:
    """What the stream workers run: each detector in its own Detection, fed its own batches
    (so each closes ticks at its own pace), the alerts of all linked by one AlertOrder that
    is snapshotted and restored on the way: the pipeline's bytes."""
    config, evs = Config(), stream()
    dets = enabled_detectors(config)
    units = {d.NAME: Detection([d], config.linking.tick_s, lateness_of(d.params for d in dets)) for d in dets}
    order = AlertOrder(list(units), list(units), config.linking)
    out: list[bytes] = []
    for k, (name, unit) in enumerate(units.items()):
        batch = (700, 3000, 11000)[k]
        for i in range(0, len(evs), batch):
            unit.add(evs[i : i + batch])
            out += [a.to_json() for a in order.offer(name, unit.closed, unit.advance(unit.newest))]
            if k == 2 and i == 11000 * 10:
                assert order._held, "the restore should carry held alerts"
                data, order = order.snapshot(), AlertOrder(list(units), list(units), config.linking)
                order.restore(data)
                assert order.snapshot() == data
    for name, unit in units.items():
        found = unit.advance(math.inf)
        out += [a.to_json() for a in order.offer(name, unit.closed, found)]
    assert tuple(out) == straight()


def test_snapshot_restore_mid_tick_continues_identically() -> None:
    evs = stream()
    cut = len(evs) // 3 + 7  # inside a tick: the snapshot holds buffered events
    pipe = Pipeline.from_config(Config())
    first = [a.to_json() for a in pipe.process(evs[:cut])]
    assert pipe.detection._open, "the cut should leave open ticks"
    data = pipe.snapshot()
    resumed = Pipeline.from_config(Config())
    resumed.restore(data)
    assert resumed.snapshot() == data
    assert tuple(first + run(resumed, evs[cut:], 1000)) == straight()


def test_arrival_order_within_the_lateness_bound_does_not_matter() -> None:
    """Events shuffled within 30 s blocks (lateness 60 s), as two Kafka partitions interleave:
    the same alerts, byte for byte, and nothing late."""
    evs = stream()
    rng = np.random.default_rng(4)
    blocks: dict[int, list[Event]] = {}
    for e in evs:
        blocks.setdefault(int(e.ts // 30), []).append(e)
    shuffled = [blocks[k][i] for k in sorted(blocks) for i in rng.permutation(len(blocks[k])).tolist()]
    assert shuffled != evs
    pipe = Pipeline.from_config(Config())
    assert tuple(run(pipe, shuffled, 997)) == straight()
    assert pipe.late == []


def test_copies_of_events_are_detected_once_and_reported(monkeypatch) -> None:
    """A producer's retry or a redelivery: every 7th event comes twice (next to itself, or thirty
    events later, as another partition would bring it), and the last one again at the end.
    The alerts of the stream without copies, byte for byte, and every copy in
    :attr:`repeated`; kept, the copies would have changed the alerts."""
    evs = stream()
    at = [(float(i), e) for i, e in enumerate(evs)]  # a copy 30 events later: ~15 s later
    at += [(i + (0.5 if i % 2 else 30.5), evs[i]) for i in range(0, len(evs), 7)] + [(len(evs), evs[-1])]
    copies = [e for _, e in sorted(at, key=lambda x: x[0])]
    extra = len(copies) - len(evs)
    pipe = Pipeline.from_config(Config())
    assert tuple(run(pipe, copies, 997)) == straight()
    assert pipe.late == [] and len(pipe.repeated) == extra
    assert [pipe.repeated_rejection(e).reason for e in pipe.repeated[:1]] == ["duplicate"]
    assert {name: s["events"] for name, s in pipe.stats.items()} == {d.NAME: len(evs) for d in pipe.detectors}
    monkeypatch.setattr(Detection, "_once", lambda self, batch, ts: (batch, ts))
    assert tuple(run(Pipeline.from_config(Config()), copies, 997)) != straight()


def test_advancing_before_any_event_closes_nothing() -> None:
    pipe = Pipeline.from_config(Config())
    assert pipe.process([]) == [] and pipe.advance(pipe.newest) == []
    assert pipe.detection.closed == -math.inf
    assert tuple(run(pipe, stream(), 4000)) == straight()


def test_events_later_than_the_lateness_bound_are_kept_aside_not_processed() -> None:
    evs = stream()[:20_000]
    pipe = Pipeline.from_config(Config())
    pipe.process(evs)
    old = evs[100]._replace(event_id="late-1", ts=evs[-1].ts - pipe.detection.lateness - 3 * Config().linking.tick_s)
    pipe.process([old])
    assert pipe.late == [old]
    pipe.advance(math.inf)
    assert {name: s["events"] for name, s in pipe.stats.items()} == {d.NAME: len(evs) for d in pipe.detectors}


def test_an_event_is_late_against_the_events_before_it_in_its_source_however_batched() -> None:
    """The same events are late in one batch as one by one: only the events before each in its
    own source count, and another source far ahead makes none late while the ticks close
    only up to the slowest source."""
    evs = stream()[:20_000]
    lateness, tick = Pipeline.from_config(Config()).detection.lateness, Config().linking.tick_s
    # late-k goes right after evs[100 k + 99], more than the bound behind it
    old = [evs[100 * k]._replace(event_id=f"late-{k}", ts=evs[100 * k + 99].ts - lateness - 3 * tick)
           for k in range(1, 150)]  # fmt: skip
    mixed = list(evs)
    for k in range(149, 0, -1):
        mixed.insert(100 * k + 100, old[k - 1])

    def late(batches: list[list[Event]], sources: list[str]) -> list[Event]:
        d = Detection(enabled_detectors(Config(), ["burst"]), tick, lateness)
        out: list[Event] = []
        for batch, src in zip(batches, sources):
            out += d.add(batch, src)
            d.advance(min(map(d.newest_of, set(sources))))
        return out

    assert late([mixed], ["a"]) == late([[e] for e in mixed], ["a"] * len(mixed)) == old
    # source "b" runs a day ahead: "a"'s events are judged against "a"'s alone
    ahead = [e._replace(event_id=f"b-{e.event_id}", ts=e.ts + 86_400) for e in evs]
    chunks = [mixed[i : i + 500] for i in range(0, len(mixed), 500)]
    assert late([ahead, *chunks], ["b", *["a"] * len(chunks)]) == old


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from("abc"), st.sampled_from("xy"), st.sampled_from(["post", "like"])),
                max_size=40))  # fmt: skip
def test_canonical_order_is_the_full_key_sort(rows: list[tuple[int, str, str, str]]) -> None:
    """The numpy time sort with tie runs re-sorted equals sorting by the whole key (ties in
    time are common: the russian data has whole-second times); duplicates keep arrival order."""
    events = [parse_obj({"ts": float(t) / 2, "event_id": e, "account_id": a, "action": x, "n": i})
              for i, (t, e, a, x) in enumerate(rows)]  # fmt: skip
    ordered, ts = _canonical(list(events), np.array([e.ts for e in events]))
    assert ordered == sorted(events, key=attrgetter("ts", "event_id", "account_id", "action"))
    assert ts.tolist() == [e.ts for e in ordered]
