"""Burst detector: the Poisson tail, the alert rules, hard negatives, determinism, state."""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors.base import Alert
from detectors.burst import BurstDetector, critical_count, poisson_logsf
from detectors.events import Event, parse_obj
from detectors.params import BurstParams
from detectors.schema import alert_errors
from sketches.errors import IncompatibleSketchError
from sketches.hashing import hash_string
from sketches.shingling import normalize

PANE = 300.0
T0 = 1_700_000_100.0  # a pane boundary (5_666_667 * 300)
WARM = 4 * PANE  # background before anything happens: more than min_history_panes


def ev(ts: float, account: str, tags: tuple[str, ...] = (), **fields: Any) -> Event:
    e = parse_obj({"ts": ts, "account_id": account, "action": "post", "hashtags": list(tags), **fields})
    assert isinstance(e, Event)
    return e


def background(
    rng: np.random.Generator, start: float, end: float, per_s: float, tags: int = 50, zipf: bool = True
) -> list[Event]:
    """Organic posts: Poisson arrivals, 2000 accounts, a Zipf-ish (or uniform) pick of ``tags`` hashtags."""
    n = int(rng.poisson(per_s * (end - start)))
    ts = np.sort(rng.uniform(start, end, n))
    accounts = rng.integers(0, 2000, n)
    picks = np.minimum(rng.zipf(1.5, n), tags) - 1 if zipf else rng.integers(0, tags, n)
    return [ev(t, f"o{a}", (f"tag{k}",)) for t, a, k in zip(ts.tolist(), accounts.tolist(), picks.tolist())]


def push(rng: np.random.Generator, tag: str, start: float, span: float, accounts: list[str]) -> list[Event]:
    ts = np.sort(rng.uniform(start, start + span, len(accounts)))
    return [ev(float(t), a, (tag,), text=f"everyone post #{tag} now") for t, a in zip(ts.tolist(), accounts)]


def run(events: list[Event], params: BurstParams | None = None, batch: int = 1000) -> list[Alert]:
    det = BurstDetector(params or BurstParams())
    out: list[Alert] = []
    for i in range(0, len(events), batch):
        out += det.process(events[i : i + batch])
    return out + det.advance(math.inf)


def by_ts(*streams: list[Event]) -> list[Event]:
    return sorted((e for s in streams for e in s), key=lambda e: e.ts)


def assert_valid(alerts: list[Alert]) -> None:
    for a in alerts:
        assert alert_errors(a.to_dict()) == []


# -- the statistic ----------------------------------------------------------------------


def exact_logsf(c: int, lam: float) -> float:
    """ln P(X >= c) with 60-digit decimals: the upper tail summed until it stops changing."""
    with localcontext() as ctx:
        ctx.prec = 60
        lam_d = Decimal(lam)
        term = (-lam_d).exp() * lam_d**c / math.factorial(c)
        total, k = Decimal(0), c
        while term > total * Decimal("1e-40"):
            total += term
            k += 1
            term = term * lam_d / k
        return float(total.ln())


@pytest.mark.parametrize("lam", [0.05, 0.5, 1.0, 2.5, 10.0, 60.0, 1000.0, 12345.6])
def test_poisson_logsf_matches_exact_sum(lam: float) -> None:
    s = math.sqrt(lam)
    near = {int(lam), int(lam) + 1, int(lam + 3 * s), int(lam + 10 * s) + 3, max(1, int(lam - 3 * s))}
    cs = {1, 2, 5, 20, 100, 400} | near
    for c in sorted(cs):
        ref = exact_logsf(c, lam)
        assert poisson_logsf(c, lam) == pytest.approx(ref, rel=1e-9, abs=1e-12), (c, lam)
    assert poisson_logsf(0, lam) == 0.0


@given(st.integers(0, 3000), st.floats(0.01, 5000))
def test_poisson_logsf_is_a_falling_log_probability(c: int, lam: float) -> None:
    assert poisson_logsf(c + 1, lam) <= poisson_logsf(c, lam) <= 0.0


@pytest.mark.parametrize(
    ("lam", "max_p", "min_count"), [(0.5, 1e-6, 1), (0.5, 1e-6, 20), (60.0, 1e-6, 20), (4e4, 1e-9, 5)]
)
def test_critical_count_is_the_first_count_below_max_p(lam: float, max_p: float, min_count: int) -> None:
    c = critical_count(lam, max_p, min_count)
    assert c >= min_count and poisson_logsf(c, lam) <= math.log(max_p)
    assert c == min_count or poisson_logsf(c - 1, lam) > math.log(max_p)


# -- the alert rules ----------------------------------------------------------------------


def test_new_hashtag_pushed_by_50_accounts_alerts_at_the_crossing_event() -> None:
    rng = np.random.default_rng(1)
    start = T0 + WARM
    bg = background(rng, T0, start + 2 * PANE, 1.0)
    pushed = push(rng, "newtag", start, PANE, [f"p{i}" for i in range(50)])
    alerts = run(by_ts(bg, pushed))
    assert_valid(alerts)
    [a] = [a for a in alerts if a.keys == ("hashtag:newtag",)]
    ev_ = a.evidence
    # no history: λ = prior, so min_count (20) and min_accounts (10) set the bar, and the
    # alert is raised by the 20th post, not at the end of the pane
    assert (a.status, ev_["count"], ev_["critical_count"], ev_["expected"]) == ("open", 20, 20, 0.5)
    assert ev_["baseline_counts"] == [0, 0, 0, 0] and ev_["baseline_mean"] == 0
    assert ev_["distinct_accounts"] == a.account_count == 20
    assert ev_["p_value"] == pytest.approx(math.exp(poisson_logsf(20, 0.5)))
    assert a.score == pytest.approx(-math.log10(ev_["p_value"]))
    assert ev_["detected_at"] == pushed[19].ts
    assert [s["event_id"] for s in ev_["sample_posts"]] == [e.event_id for e in pushed[:5]]
    assert ev_["sample_posts"][0]["text"] == "everyone post #newtag now"
    assert (a.window_start, a.window_end) == (start, start + PANE)


def test_the_same_50_events_from_3_accounts_do_not_alert() -> None:
    rng = np.random.default_rng(1)
    start = T0 + WARM
    bg = background(rng, T0, start + 2 * PANE, 1.0)
    alerts = run(by_ts(bg, push(rng, "newtag", start, PANE, [f"p{i % 3}" for i in range(50)])))
    assert [a for a in alerts if a.keys == ("hashtag:newtag",)] == []


def test_no_alerts_before_min_history_panes() -> None:
    rng = np.random.default_rng(2)
    bg = background(rng, T0, T0 + 3 * PANE, 1.0)
    alerts = run(by_ts(bg, push(rng, "early", T0 + PANE, 60, [f"p{i}" for i in range(80)])))
    assert alerts == []


def test_steady_popular_hashtag_is_quiet_and_a_live_event_spike_is_a_burst_with_updates() -> None:
    """The hard negatives of the synthetic data: a live-event hashtag (400 accounts within
    30 min, front-loaded) is a real burst; a hashtag used 60 times per pane all day is not."""
    rng = np.random.default_rng(3)
    end = T0 + 6 * 3600
    steady_ts = np.sort(rng.uniform(T0, end, rng.poisson(0.2 * (end - T0))))
    steady = [ev(float(t), f"s{rng.integers(500)}", ("popular",)) for t in steady_ts.tolist()]
    live_at = T0 + 3 * 3600
    live = []
    for i in range(400):
        for _ in range(1 if rng.random() < 0.7 else 2):
            live.append(ev(live_at + 1800 * float(rng.beta(1.3, 3.0)), f"l{i}", ("final",)))
    alerts = run(by_ts(background(rng, T0, end, 1.0), steady, live))
    assert_valid(alerts)
    assert [a for a in alerts if a.keys == ("hashtag:popular",)] == []
    final = [a for a in alerts if a.keys == ("hashtag:final",)]
    assert len(final) >= 2
    assert {a.group_id for a in final} == {final[0].group_id}
    assert [a.revision for a in final] == list(range(len(final)))
    assert [a.status for a in final] == ["open"] + ["update"] * (len(final) - 1)
    assert final[0].window_start <= live_at < final[0].window_end
    panes = [a.evidence["pane"]["start"] for a in final]
    assert panes == [panes[0] + i * PANE for i in range(len(final))]  # one per pane, consecutive
    assert all(a.window_start == final[0].window_start for a in final)
    # later panes are judged against a baseline that now holds the burst
    assert final[1].evidence["baseline_mean"] > 0


def test_a_key_bursting_again_after_a_quiet_pane_opens_a_new_group() -> None:
    rng = np.random.default_rng(4)
    start = T0 + WARM
    first = push(rng, "again", start, 120, [f"a{i}" for i in range(30)])
    second = push(rng, "again", start + 6 * PANE, 120, [f"b{i}" for i in range(200)])
    alerts = run(by_ts(background(rng, T0, start + 8 * PANE, 1.0), first, second))
    alerts = [a for a in alerts if a.keys == ("hashtag:again",)]
    assert [a.revision for a in alerts] == [0, 0]
    assert alerts[0].group_id != alerts[1].group_id


def test_count_min_over_count_only_suppresses() -> None:
    """A tiny count-min (width 8, plain update) inflates every baseline to ~1/8 of a pane's
    events; the current counts stay exact, so it hides bursts but never makes one."""
    rng = np.random.default_rng(5)
    start = T0 + WARM
    events = by_ts(
        background(rng, T0, start + 4 * PANE, 4.0, tags=400, zipf=False),
        push(rng, "real", start + PANE, 200, [f"p{i}" for i in range(50)]),
        push(rng, "huge", start + 2 * PANE, 200, [f"h{i}" for i in range(400)]),
    )
    params = BurstParams(
        cms_epsilon=0.5, conservative_update=False, min_count=10, min_accounts=5, max_p_value=1e-3
    )
    tiny = run(events, params)
    big = run(events, params.model_copy(update={"cms_epsilon": 1e-4}))
    assert_valid(tiny)
    assert {a.keys[0] for a in tiny} == {"hashtag:huge"}  # "real" is hidden by the inflated λ
    assert {"hashtag:real", "hashtag:huge"} <= {a.keys[0] for a in big}
    tiny_found = {(a.keys, a.evidence["pane"]["start"]) for a in tiny}
    assert tiny_found <= {(a.keys, a.evidence["pane"]["start"]) for a in big}
    for a in tiny:  # p-values come from exact current counts and the sketched baseline
        e = a.evidence
        key, pane = a.keys[0], e["pane"]["start"]
        mine = [x for x in events if "hashtag:" + x.hashtags[0] == key]
        exact_now = sum(pane <= x.ts <= e["detected_at"] for x in mine)
        assert e["count"] == exact_now == e["critical_count"] and e["expected"] > 100
        assert e["p_value"] == pytest.approx(math.exp(poisson_logsf(exact_now, e["expected"])))
        for i, sketched in enumerate(reversed(e["baseline_counts"])):  # newest earlier pane first
            assert sketched >= sum(pane - (i + 1) * PANE <= x.ts < pane - i * PANE for x in mine)


def test_late_events() -> None:
    """Beyond allowed_lateness_s: counted and dropped; within it but for an earlier pane:
    into that pane's baseline, not the current count."""
    rng = np.random.default_rng(6)
    start = T0 + WARM
    bg = background(rng, T0, start + 3 * PANE, 1.0)
    opener = ev(start + 10, "x", ("opener",))  # the current pane is now `start`
    late_ok = [ev(start - 5 - i, f"l{i}", ("latetag",)) for i in range(4)]  # 15 s late at most
    too_late = ev(start - 200, "z", ("latetag",))
    burst = push(rng, "latetag", start + PANE, 100, [f"p{i}" for i in range(30)])
    head = [e for e in bg if e.ts <= start + 10]
    tail = [e for e in bg if e.ts > start + 10]
    events = [*head, opener, *late_ok, too_late, *by_ts(tail, burst)]
    det = BurstDetector(BurstParams())
    alerts = det.process(events) + det.advance(math.inf)
    assert det.stats["late_dropped"] == 1
    [a] = [a for a in alerts if a.keys == ("hashtag:latetag",)]
    assert a.evidence["baseline_counts"][-2:] == [4, 0]  # pane start - PANE holds the 4 late posts
    assert a.evidence["count"] == 20
    without = [*head, opener, *late_ok, *by_ts(tail, burst)]
    assert [x.to_json() for x in run(without, batch=len(without))] == [x.to_json() for x in alerts]


def test_key_kinds_url_domain_object_text() -> None:
    rng = np.random.default_rng(7)
    start = T0 + WARM
    texts = ["Vote NOW for the plan!!", "vote now for the plan", "VOTE now, for the PLAN"]
    link = " https://WWW.Example.com/a?utm_source=x"
    shared = [ev(start + 3 * i, f"p{i}", text=texts[i % 3] + link, object_id=f"post{i % 2}") for i in range(40)]
    params = BurstParams(key_kinds=["hashtag", "url", "domain", "object", "text"])
    alerts = run(by_ts(background(rng, T0, start + PANE, 1.0), shared), params, batch=7)
    assert_valid(alerts)
    norm = {normalize(e.text or "") for e in shared}
    assert norm == {"vote now for the plan url_example_com"}
    fingerprint = f"text:{hash_string(norm.pop()):016x}"
    assert sorted(k for a in alerts for k in a.keys) == sorted(
        ["url:https://www.example.com/a", "domain:example.com", "object:post0", "object:post1", fingerprint]
    )


# -- determinism and state ------------------------------------------------------------


@functools.cache
def mixed_stream() -> tuple[Event, ...]:
    """Background, a push, a live spike and late events over 2.5 h, all key kinds."""
    rng = np.random.default_rng(8)
    end = T0 + 9000
    bg = background(rng, T0, end, 2.0)
    links = [
        ev(t, f"u{rng.integers(300)}", urls=[f"https://site{rng.integers(5)}.example/{rng.integers(20)}"])
        for t in rng.uniform(T0, end, 3000).tolist()
    ]
    spike = [ev(T0 + 5000 + 1800 * float(rng.beta(1.3, 3.0)), f"l{i}", ("live",)) for i in range(300)]
    pushed = push(rng, "pushtag", T0 + 2000, 400, [f"p{i}" for i in range(60)])
    return tuple(_interleave(by_ts(bg, links, spike, pushed), 97))


def _interleave(events: list[Event], every: int) -> list[Event]:
    """``events`` with every ``every``-th one also re-sent 40 s late right after it."""
    out: list[Event] = []
    for i, e in enumerate(events):
        out.append(e)
        if i % every == 0:
            out.append(e._replace(ts=e.ts - 40, event_id=e.event_id + ":late"))
    return out


MIXED = BurstParams(key_kinds=["hashtag", "url", "domain", "object", "text"])


def test_batching_does_not_change_alerts() -> None:
    events = list(mixed_stream())
    runs = [[a.to_json() for a in run(events, MIXED, batch=b)] for b in (1, 13, len(events))]
    assert len(runs[0]) >= 3
    assert runs[0] == runs[1] == runs[2]


def resumed(events: list[Event], k: int) -> list[bytes]:
    """The alerts of a run snapshotted after ``events[:k]`` and restored for the rest (the
    restored detector snapshots back to the same bytes)."""
    det = BurstDetector(MIXED)
    first = det.process(events[:k])
    snap = det.snapshot()
    again = BurstDetector.restore(MIXED, snap)
    assert again.snapshot() == snap
    second = again.process(events[k:]) + again.advance(math.inf)
    return [a.to_json() for a in first + second]


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.77])
def test_snapshot_restore_mid_stream_equals_a_straight_run(cut: float) -> None:
    events = list(mixed_stream())
    straight = [a.to_json() for a in run(events, MIXED, batch=500)]
    assert resumed(events, int(len(events) * cut)) == straight


def test_restore_refuses_other_params() -> None:
    det = BurstDetector(MIXED)
    det.process(list(mixed_stream())[:100])
    with pytest.raises(IncompatibleSketchError, match="min_count"):
        BurstDetector.restore(MIXED.model_copy(update={"min_count": 3}), det.snapshot())


def test_every_alert_of_the_mixed_stream_is_schema_valid() -> None:
    alerts = run(list(mixed_stream()), MIXED)
    assert {a.keys[0] for a in alerts} >= {"hashtag:pushtag", "hashtag:live"}
    assert_valid(alerts)


# -- the span test (slow pushes) and the wave test (URLs, posts) ---------------------------


def slow_push(rng: np.random.Generator, tag: str, start: float, span: float, n: int) -> list[Event]:
    """The generator's weak hashtag push: every one of ``n`` accounts posts the tag 1-3 times
    at uniform times over ``span`` seconds."""
    out = [
        ev(start + float(rng.uniform(0, span)), f"w{i}", (tag,), text=f"so true #{tag}")
        for i in range(n) for _ in range(int(rng.integers(1, 4)))
    ]  # fmt: skip
    return sorted(out, key=lambda e: e.ts)


def test_a_weak_push_spread_over_30_minutes_is_caught_by_the_span_test() -> None:
    rng = np.random.default_rng(11)
    start = T0 + 9 * PANE + 100  # the span test needs min_history_panes panes before its 6
    weak = slow_push(rng, "slowtag", start, 1800, 25)
    panes = np.bincount(np.floor([(e.ts - T0) / PANE for e in weak]).astype(int))
    assert panes.max() < BurstParams().min_count  # no pane of it reaches min_count
    events = by_ts(background(rng, T0, start + 2400, 1.0), weak)
    alerts = run(events)
    assert_valid(alerts)
    [a] = [a for a in alerts if a.keys == ("hashtag:slowtag",)]  # one alert: the span test fires once per span
    e = a.evidence
    cross = next(i for i in range(len(weak)) if i + 1 >= 20 and len({x.account_id for x in weak[: i + 1]}) >= 10)
    assert (e["test"], a.status, e["count"], e["critical_count"]) == ("span", "open", cross + 1, cross + 1)
    assert e["expected"] == 6 * 0.5  # span_panes x the prior: the tag is new
    assert e["detected_at"] == weak[cross].ts
    assert e["distinct_accounts"] == a.account_count == len({x.account_id for x in weak[: cross + 1]})
    assert sum(e["span_counts"]) == cross + 1 and len(e["span_counts"]) == 6
    assert e["span"]["end"] == e["pane"]["end"] and e["span"]["start"] == e["pane"]["end"] - 6 * PANE
    assert a.window_start == math.floor(weak[0].ts / PANE) * PANE  # from the push's first pane
    assert [s["event_id"] for s in e["sample_posts"]] == [x.event_id for x in weak[:5]]
    # one pane at a time it is invisible
    assert not [a for a in run(events, BurstParams(span_panes=1)) if a.keys == ("hashtag:slowtag",)]


def test_a_drifting_organic_hashtag_does_not_pass_the_span_ratio() -> None:
    """A tag tripling its rate (2 -> 6 posts per pane) is a Poisson outlier over 30 minutes,
    but daily rhythms do that; the span test also needs span_min_ratio (5) x expected."""
    rng = np.random.default_rng(12)
    end = T0 + 6000
    calm = [ev(t, f"d{i}", ("drift",)) for i, t in enumerate(np.arange(T0, T0 + 3600, 150.0).tolist())]
    busy = [ev(t, f"b{i}", ("drift",)) for i, t in enumerate(np.arange(T0 + 3600, end, 50.0).tolist())]
    events = by_ts(background(rng, T0, end, 1.0), calm, busy)
    assert not [a for a in run(events) if a.keys == ("hashtag:drift",)]
    loose = [a for a in run(events, BurstParams(span_min_ratio=1)) if a.keys == ("hashtag:drift",)]
    assert loose and loose[0].evidence["test"] == "span"
    assert loose[0].evidence["count"] < 5 * loose[0].evidence["expected"]


def test_url_bursts_must_come_as_a_wave() -> None:
    """40 shares of a URL over 273 s (never 20 within 120 s) is organic popularity; 25
    within 36 s is a wave. Counted over the whole pane, both would alert."""
    rng = np.random.default_rng(13)
    start = T0 + WARM
    slow = [ev(start + 7.0 * i, f"s{i}", urls=["https://slow.example/a"]) for i in range(40)]
    fast = [ev(start + 1 + 1.5 * i, f"f{i}", urls=["https://fast.example/b"]) for i in range(25)]
    events = by_ts(background(rng, T0, start + PANE, 1.0), slow, fast)
    alerts = run(events)
    assert_valid(alerts)
    [a] = [a for a in alerts if a.keys[0].startswith("url:")]
    e = a.evidence
    assert a.keys == ("url:https://fast.example/b",)
    assert (e["test"], e["count"], e["critical_count"], e["pane_count"]) == ("wave", 20, 20, 20)
    assert e["wave"] == {"start": fast[19].ts - 120.0, "end": fast[19].ts} and e["detected_at"] == fast[19].ts
    assert e["distinct_accounts"] == 20
    plain = {a.keys[0] for a in run(events, BurstParams(wave_kinds=[]))}
    assert {"url:https://slow.example/a", "url:https://fast.example/b"} <= plain


def test_domains_are_opt_in() -> None:
    assert "domain" not in BurstParams().key_kinds


@functools.cache
def span_stream() -> tuple[Event, ...]:
    """A slow push, URL waves, a live spike and late re-sends over 2 h 20 min, all key kinds."""
    rng = np.random.default_rng(14)
    end = T0 + 8400
    bg = background(rng, T0, end, 2.0)
    weak = slow_push(rng, "slowtag", T0 + 9 * PANE + 100, 1800, 25)
    waves = [
        ev(t0 + float(rng.uniform(0, 30)), f"r{i}", urls=[f"https://ring.example/{w}"], object_id=f"post{w}")
        for w, t0 in enumerate([T0 + 4000, T0 + 5500, T0 + 6900]) for i in range(30)
    ]  # fmt: skip
    spike = [ev(T0 + 6000 + 1800 * float(rng.beta(1.3, 3.0)), f"l{i}", ("live",)) for i in range(300)]
    return tuple(_interleave(by_ts(bg, weak, waves, spike), 89))


def test_span_and_wave_alerts_do_not_depend_on_batching_or_restarts() -> None:
    events = list(span_stream())
    runs = [[a.to_json() for a in run(events, MIXED, batch=b)] for b in (1, 13, len(events))]
    tests = {orjson.loads(x)["evidence"]["test"] for x in runs[0]}
    assert tests == {"pane", "span", "wave"}
    assert runs[0] == runs[1] == runs[2]
    for cut in (0.3, 0.45, 0.6):  # the push is under way at 0.3-0.45: the span's panes are state
        assert resumed(events, int(len(events) * cut)) == runs[2]


def test_span_and_wave_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="span_panes"):
        BurstParams(span_panes=10)  # 10 + min_history_panes 3 > the window's 12 panes
    with pytest.raises(ValueError, match="wave_s"):
        BurstParams(wave_s=400)
    assert BurstParams(span_panes=9).span_panes == 9
