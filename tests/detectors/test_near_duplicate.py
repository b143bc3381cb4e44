"""near_duplicate on small hand-built streams: edited copies cluster, memes and short texts
do not alert, waves alert by density or by repeat posters; determinism, snapshot, memory."""

from __future__ import annotations

import math
import random

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from detectors.base import Alert
from detectors.events import Event
from detectors import parts
from detectors.nd_bands import BandMatcher, Bands, NearDuplicatePart
from detectors.near_duplicate import NearDuplicateDetector, NearDuplicateParts
from detectors.params import NearDuplicateParams
from detectors.schema import alert_errors
from tests.helpers import apart

TEMPLATE = (
    "the city council quietly approved the new surveillance cameras on every corner "
    "while nobody was watching share this before they delete it"
)
OTHER = (
    "our brave farmers are being crushed by the new import rules and the ministry "
    "refuses to answer any questions about who profits from the deal"
)
WORDS = [f"w{i}" for i in range(400)]


def ev(ts: float, account: str, text: str, eid: str | None = None, action: str = "post") -> Event:
    return Event(float(ts), account, action, eid or f"{account}@{ts:.3f}", text, (), None, (), {})


def edit(text: str, rng: random.Random, edits: int = 1) -> str:
    """Word swapped, dropped or added, case changed, emoji or hashtag appended."""
    toks = text.split()
    for _ in range(edits):
        op, i = rng.randrange(6), rng.randrange(len(toks))
        if op == 0:
            toks[i] = rng.choice(WORDS)
        elif op == 1:
            del toks[i]
        elif op == 2:
            toks.insert(i, rng.choice(WORDS))
        elif op == 3:
            toks = [t.upper() for t in toks]
        elif op == 4:
            toks.append("🔥👇")
        else:
            toks.append("#" + rng.choice(WORDS))
    return " ".join(toks)


def wave(template: str, accounts: list[str], t0: float, spread_s: float, seed: int, edits: int = 1) -> list[Event]:
    rng = random.Random(seed)
    return [ev(t0 + rng.uniform(0, spread_s), a, edit(template, rng, edits)) for a in accounts]


def background(t0: float, t1: float, rate: float, seed: int) -> list[Event]:
    rng = random.Random(seed)
    n = int((t1 - t0) * rate)
    return [
        ev(rng.uniform(t0, t1), f"bg{rng.randrange(5000)}", " ".join(rng.choices(WORDS, k=rng.randrange(6, 30))))
        for _ in range(n)
    ]


def ordered(*parts: list[Event]) -> list[Event]:
    return sorted((e for p in parts for e in p), key=lambda e: (e.ts, e.event_id))


def run(events: list[Event], batch: int | None = None, **params: object) -> list[Alert]:
    det = NearDuplicateDetector(NearDuplicateParams.model_validate(params))
    step = batch or max(1, len(events))
    out: list[Alert] = []
    for i in range(0, len(events), step):
        out += det.process(events[i : i + step])
    out += det.advance(math.inf)
    for a in out:
        assert alert_errors(orjson.loads(a.to_json())) == []
    return out


def flagged(alerts: list[Alert]) -> set[str]:
    return {acc for a in alerts for acc in a.accounts}


def campaign_stream() -> list[Event]:
    """Background, a meme over hours, a dense wave and a sparse campaign in three waves."""
    meme_rng = np.random.default_rng(5)
    meme = [
        ev(1000 + 6 * 3600 * float(x), f"meme{k}", edit(OTHER, random.Random(k), 1))
        for k, x in enumerate(meme_rng.beta(1.6, 2.0, 150))
    ]
    members = [f"cp{k}" for k in range(8)]
    waves = [wave([TEMPLATE, OTHER][w % 2] + " now", members, 2000 + 2400 * w, 600, seed=w) for w in range(3)]
    dense = wave(TEMPLATE, [f"d{k}" for k in range(15)], 15_000, 60, seed=9, edits=2)
    return ordered(background(0, 25_000, 0.2, 1), meme, *waves, dense)


# -- what clusters and what alerts ----------------------------------------------------
def test_a_dense_wave_of_edited_copies_alerts_with_evidence():
    accounts = [f"a{k}" for k in range(14)]
    alerts = run(ordered(wave(TEMPLATE, accounts, 100, 60, seed=1, edits=2), background(0, 400, 1, 2)))
    first = alerts[0]
    assert (first.type, first.status, first.revision) == ("near_duplicate", "open", 0)
    assert first.account_count >= 10 and first.keys[0].startswith("text:") and len(first.keys[0]) == 21
    ev_ = first.evidence
    assert ev_["documents"] >= 10 and 0.5 <= ev_["mean_jaccard"] <= 1
    assert {"account", "ts", "event_id", "text"} <= set(ev_["sample_texts"][0])
    assert len({s["account"] for s in ev_["sample_texts"]}) == len(ev_["sample_texts"]) == 5
    assert flagged(alerts) == set(accounts)  # every edited copy ends up in the one cluster
    assert {a.group_id for a in alerts} == {first.group_id}
    assert alerts[-1].score > first.score > 0


def test_one_account_repeating_itself_or_short_texts_never_alert():
    spam = [ev(100 + k, "spammer", TEMPLATE) for k in range(30)]
    short = [ev(200 + k, f"s{k}", "good morning everyone") for k in range(30)]
    assert run(ordered(spam, short)) == []


def test_only_text_actions_are_compared():
    retweets = wave(TEMPLATE, [f"r{k}" for k in range(20)], 100, 60, seed=3)
    assert run([e._replace(action="retweet") for e in retweets]) == []


def test_a_meme_posted_once_each_over_hours_does_not_alert():
    rng = np.random.default_rng(0)
    meme = [
        ev(6 * 3600 * float(x), f"m{k}", edit(TEMPLATE, random.Random(k), 1))
        for k, x in enumerate(rng.beta(1.6, 2.0, 150))
    ]
    assert run(ordered(meme, background(0, 6 * 3600, 0.2, 4))) == []


def test_sparse_waves_alert_through_repeat_posters_not_on_the_first_wave():
    members = [f"cp{k}" for k in range(8)]
    # 8 accounts within 10 minutes: never 10 within burst_span_s, so the density path stays silent.
    waves = [wave([TEMPLATE, OTHER][w % 2], members, 2400 * w, 600, seed=w) for w in range(3)]
    alerts = run(ordered(*waves))
    assert alerts and min(a.window_start for a in alerts) >= 2400  # not before the second wave
    assert flagged(alerts) == set(members)
    assert all(a.evidence["repeat_accounts"] >= 0.3 * a.account_count for a in alerts)
    assert run(waves[0]) == []


def test_updates_come_when_the_cluster_grew_and_at_most_once_per_burst_span():
    first = wave(TEMPLATE, [f"a{k}" for k in range(12)], 0, 30, seed=1)
    late = wave(TEMPLATE, [f"b{k}" for k in range(8)], 400, 30, seed=2)
    alerts = run(ordered(first, late, background(0, 900, 0.5, 3)))
    assert [a.revision for a in alerts] == list(range(len(alerts))) and len(alerts) >= 2
    assert len({a.group_id for a in alerts}) == 1 and len({a.alert_id for a in alerts}) == len(alerts)
    assert [a.status for a in alerts[:2]] == ["open", "update"]
    counts = [a.account_count for a in alerts]
    assert all(b >= 1.2 * a for a, b in zip(counts, counts[1:])) and counts[-1] == 20
    sent = [a.evidence["as_of_ts"] for a in alerts]
    assert all(b - a >= 120 for a, b in zip(sent, sent[1:]))


def test_clusters_expire_with_the_window():
    a = wave(TEMPLATE, [f"a{k}" for k in range(12)], 0, 30, seed=1)
    b = wave(TEMPLATE, [f"b{k}" for k in range(12)], 5 * 3600, 30, seed=2)
    alerts = run(ordered(a, b))
    assert len({x.group_id for x in alerts}) == 2
    assert all(x.account_count <= 12 for x in alerts)


# -- determinism, state, memory -------------------------------------------------------
def test_alerts_do_not_depend_on_batching():
    events = campaign_stream()
    straight = [a.to_json() for a in run(events)]
    assert len(straight) >= 3
    for batch in (1, 7):
        assert [a.to_json() for a in run(events, batch)] == straight


def assert_resumes_identically(events: list[Event], shares: tuple[tuple[int, int], ...]) -> None:
    """Snapshot after each share ``(n, d)`` of ``events``, restore, go on: the alerts of one straight run."""
    params = NearDuplicateParams()
    straight = [a.to_json() for a in run(events)]
    for n, d in shares:
        cut = n * len(events) // d
        det = NearDuplicateDetector(params)
        out = det.process(events[:cut])
        data = det.snapshot()
        resumed = NearDuplicateDetector.restore(params, data)
        assert resumed.snapshot() == data
        out += resumed.process(events[cut:]) + resumed.advance(math.inf)
        assert [a.to_json() for a in out] == straight


def test_snapshot_restore_mid_stream_continues_identically():
    assert_resumes_identically(campaign_stream(), ((1, 3), (1, 2), (2, 3)))


def test_memory_follows_the_window_not_the_stream():
    det = NearDuplicateDetector(NearDuplicateParams(window_s=600))
    sizes, live = [], []
    for w in range(20):  # 20 windows of background plus a copy-paste wave each
        t0 = w * 600
        events = ordered(background(t0, t0 + 600, 2, w), wave(TEMPLATE, [f"a{w}-{k}" for k in range(12)], t0, 30, w))
        det.process(events)
        sizes.append(det.nbytes)
        live.append(det.live_documents)
    assert max(live) <= 2 * 1212 + 100
    assert max(sizes[3:]) <= 1.3 * sizes[2]
    assert len(det._clu) <= 2 * det.live_documents + 4096
    assert det._matcher is not None and len(det._matcher._ev) <= 2 * det.live_documents + 4096


def test_burst_span_must_fit_in_the_window():
    with pytest.raises(ValidationError, match="burst_span_s"):
        NearDuplicateParams(window_s=60, burst_span_s=120)


def test_the_end_of_the_stream_sends_pending_updates():
    det = NearDuplicateDetector(NearDuplicateParams())
    opened = det.process(wave(TEMPLATE, [f"a{k}" for k in range(14)], 100, 60, seed=1))
    assert [a.revision for a in opened] == [0] and opened[0].account_count < 14
    assert det.advance(10_000) == []  # a finite watermark sends nothing: only documents do
    (final,) = det.advance(math.inf)
    assert (final.revision, final.account_count, final.evidence["as_of_ts"]) == (1, 14, det._newest)


@pytest.mark.parametrize("part", [(0, 1), (1, 3)])
def test_signatures_completed_on_demand_are_datasketchs_full_signatures(part: tuple[int, int]):
    """A matcher (of every band, or of some) keeps its bands' columns of every document and
    all columns of those in a pair: datasketch's values."""
    from detectors.nd_bands import BandMatcher
    from sketches.minhash import minhasher
    from sketches.shingling import shingle_batch

    events = campaign_stream()
    m = BandMatcher(NearDuplicateParams(), part)
    cols = m._cols
    assert (cols.start, cols.stop) == ((0, 30) if part == (0, 1) else (9, 18))  # 10 bands x 3 rows: 3 + 3 + 4 bands
    for lo in range(0, len(events), 500):
        m.match(events[lo : lo + 500])
        live = range(m.head, m.next)
        done = [s for s in live if m._has[s % m._has.size]]
        assert done  # the wave documents in candidate pairs
        texts = [m._ev[s - m._base].text for s in done]
        sh = shingle_batch(texts)  # type: ignore[arg-type]
        full = minhasher(128, 1).signatures(sh.hashes, sh.offsets).values
        assert np.array_equal(m._sig[np.array(done) % m._has.size], full)
        band = [s for s in live if not m._has[s % m._has.size]][:50]
        sh = shingle_batch([m._ev[s - m._base].text for s in band])  # type: ignore[arg-type]
        expected = minhasher(128, 1).signatures(sh.hashes, sh.offsets).values[:, cols]
        assert np.array_equal(m._sig[np.array(band, dtype=np.int64) % m._has.size, cols], expected)


# -- linked waves: a campaign whose waves are each too small --------------------------
THIRD = (
    "they raised the water bills again this winter while the reservoir company paid record "
    "dividends to its owners ask your mayor why nobody stopped it"
)


def weak_campaign() -> tuple[list[Event], list[list[str]]]:
    """Seven accounts, three waves of four over 4 h (each a different text, 3.5 edits per
    copy), more than a window apart: no wave has min_accounts accounts."""
    waves = [["w1", "w2", "w3", "w4"], ["w2", "w3", "w5", "w6"], ["w1", "w3", "w6", "w7"]]
    texts = [TEMPLATE, OTHER, THIRD]
    events = [e for k, who in enumerate(waves) for e in wave(texts[k], who, 5000 * k, 900, seed=20 + k, edits=2)]
    return ordered(events, background(0, 12_000, 0.2, 7)), waves


def test_weak_waves_too_small_alone_alert_through_links_with_the_earlier_waves_accounts():
    events, waves = weak_campaign()
    everyone = {a for w in waves for a in w}
    alerts = run(events)
    assert alerts and flagged(alerts) == everyone
    assert min(a.window_start for a in alerts) >= 5000  # not on the first wave
    last = alerts[-1].evidence
    assert last["linked_waves"] and last["remembered_accounts"] >= 1
    assert run(events, min_link_accounts=100) == []  # each wave alone is below min_accounts
    assert [a.to_json() for a in run(events, batch=3)] == [a.to_json() for a in alerts]


def test_a_meme_that_campaign_members_also_post_is_not_linked_in():
    events, waves = weak_campaign()
    rng = np.random.default_rng(3)
    posters = [f"meme{k}" for k in range(150)] + ["w2", "w3", "w6"]  # three members post the meme too
    meme = [
        ev(6000 + 4 * 3600 * float(x), a, edit(
            "the new bridge downtown looks amazing at night with all the lights on share your photos",
            random.Random(k), 1))
        for k, (a, x) in enumerate(zip(posters, rng.beta(1.6, 2.0, len(posters))))
    ]
    alerts = run(ordered(events, meme))
    assert not any(a.startswith("meme") for a in flagged(alerts))
    assert flagged(alerts) >= {a for w in waves for a in w} - {"w4"}


def test_snapshot_restore_keeps_links_and_expired_clusters():
    assert_resumes_identically(weak_campaign()[0], ((1, 3), (1, 2), (3, 4)))


# -- band parts: near_duplicate split by LSH band ---------------------------------------
@pytest.mark.parametrize(("stream", "n"), [("campaign", 2), ("campaign", 3), ("campaign", 10), ("weak", 3)])
def test_band_parts_run_apart_find_what_one_detector_finds(stream: str, n: int, monkeypatch: pytest.MonkeyPatch):
    """n band parts (each its bands' index) run apart, their batches cut into segments of a
    few kB, merged: the one detector's alerts, byte for byte."""
    monkeypatch.setattr(parts, "SEGMENT_BYTES", 4096)
    events = campaign_stream() if stream == "campaign" else weak_campaign()[0]
    params = NearDuplicateParams()
    want = tuple(a.to_json() for a in run(events))
    assert len(want) >= 3
    assert apart(NearDuplicatePart, lambda: NearDuplicateParts(params, n), params, events, n, n) == want


def test_each_band_part_finds_only_some_pairs_and_their_union_is_all():
    """The split is real: every part alone misses pairs that only other bands find."""
    events = campaign_stream()
    params = NearDuplicateParams()
    whole = BandMatcher(params).match(events)
    found = [BandMatcher(params, (s, 3)).match(events) for s in range(3)]
    pairs = [set(zip(b.new.tolist(), b.old.tolist())) for b in found]
    everything = set(zip(whole.new.tolist(), whole.old.tolist()))
    assert all(p < everything for p in pairs)
    united = Bands.union(found)
    assert (united.new.tolist(), united.old.tolist(), united.agree.tolist()) == (
        whole.new.tolist(), whole.old.tolist(), whole.agree.tolist())
    assert united.seqs.tolist() == whole.seqs.tolist() and united.events == whole.events


def test_a_part_for_more_parts_than_bands_is_refused():
    with pytest.raises(ValueError, match="10 LSH bands"):
        NearDuplicatePart(NearDuplicateParams(), (0, 11))


def test_a_band_parts_segments_stay_near_their_size_in_a_copy_paste_storm():
    """3000 long copies in one batch, every one in pairs: the part cuts its output into
    several segments, none much above SEGMENT_BYTES (a worker sends each as one message)."""
    long_text = " ".join([TEMPLATE] * 8)
    storm = wave(long_text, [f"s{k}" for k in range(3000)], 1000, 60, seed=4)
    part = NearDuplicatePart(NearDuplicateParams(), (0, 2))
    part.process(storm)
    sizes = [len(seg.to_bytes()) for seg in part.outbox]
    assert len(sizes) >= 3 and max(sizes) <= parts.SEGMENT_BYTES + 16_384
    assert sum(seg.payload.ev.size for seg in part.outbox) == len(storm)
