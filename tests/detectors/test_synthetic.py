"""The labelled synthetic stream: determinism, the event contract, labels consistent with the
events, hard negatives of the promised shape, heavy-tailed organic activity, speed."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.events import Event, parse_obj
from detectors.synthetic import STYLE_COUNTS, SyntheticStream, generate

SMALL: dict[str, Any] = {"seed": 3, "hours": 6.0, "rate": 3.0, "accounts": 5000}


@pytest.fixture(scope="module")
def small() -> tuple[SyntheticStream, list[Event]]:
    stream = SyntheticStream(**SMALL)
    parsed = [parse_obj(e) for e in stream.events()]
    assert all(isinstance(e, Event) for e in parsed), "every generated event must parse"
    return stream, parsed  # type: ignore[return-value]


def words(text: str) -> set[str]:
    return set(text.casefold().split())


def jaccard(a: str, b: str) -> float:
    x, y = words(a), words(b)
    return len(x & y) / len(x | y)


def test_same_args_same_bytes(tmp_path: Path) -> None:
    args: dict[str, Any] = {"seed": 5, "hours": 2.0, "rate": 3.0, "accounts": 5000}
    a = generate(tmp_path / "a", **args)
    b = generate(tmp_path / "b", **args)
    generate(tmp_path / "c", **{**args, "seed": 6})
    assert a["events"] == b["events"] > 20_000
    for name in ("events.jsonl", "labels.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    lines = (tmp_path / "a" / "events.jsonl").read_bytes().splitlines()
    assert [orjson.dumps(e) for e in SyntheticStream(**args).events()] == lines
    assert orjson.loads((tmp_path / "a" / "labels.json").read_bytes()) == orjson.loads(
        orjson.dumps(SyntheticStream(**args).labels))


def test_events_follow_the_contract(small: tuple[SyntheticStream, list[Event]]) -> None:
    stream, events = small
    keys = [(e.ts, e.event_id) for e in events]
    assert keys == sorted(keys) and len({e.event_id for e in events}) == len(events)
    assert stream.start_ms / 1000 <= events[0].ts and events[-1].ts < stream.end_ms / 1000
    assert set(Counter(e.action for e in events)) == {"post", "share", "retweet", "like", "reply", "quote", "follow"}
    post_ts = {e.event_id: e.ts for e in events if e.action == "post"}
    engagements = [e for e in events if e.action in ("retweet", "like", "reply", "quote")]
    assert all(post_ts[e.object_id] < e.ts for e in engagements)  # type: ignore[index]
    # nobody likes/retweets the same post, or shares the same URL, twice
    once = Counter((e.account_id, e.action, e.object_id or e.urls[0]) for e in events
                   if e.action in ("retweet", "like", "share"))
    assert once.most_common(1)[0][1] == 1
    assert sum(1 for e in events if e.hashtags) > 0.1 * sum(1 for e in events if e.action == "post")


def test_labels_match_events(small: tuple[SyntheticStream, list[Event]]) -> None:
    stream, events = small
    campaigns, hard = stream.labels["campaigns"], stream.labels["organic_hard"]
    assert Counter(c["style"] for c in campaigns.values()) == STYLE_COUNTS
    groups = [set(c["accounts"]) for c in (*campaigns.values(), *hard.values())]
    assert sum(map(len, groups)) == len(set().union(*groups)), "label groups share accounts"
    by_account: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_account[e.account_id].append(e)
    outside = 0
    for cid, c in campaigns.items():
        assert 3 <= len(c["accounts"]) <= 60 and c["t0"] < c["t1"], cid
        acts = [e for a in c["accounts"] for e in by_account[a] if c["t0"] <= e.ts <= c["t1"]]
        assert {e.account_id for e in acts} == set(c["accounts"]), cid
        used = {k for e in acts for k in (*e.urls, e.object_id, *e.hashtags)}
        templates = {k for k in c["keys"] if k.startswith("tpl:")}
        assert set(c["keys"]) - templates <= used, cid
        for tpl in c.get("templates", []):
            assert sum(jaccard(tpl, e.text or "") >= 0.5 for e in acts) >= 3, cid
        assert len(templates) == len(c.get("templates", []))
        outside += sum(any(not c["t0"] <= e.ts <= c["t1"] for e in by_account[a]) for a in c["accounts"])
    # campaign accounts also act organically, outside their campaign
    assert outside > 0.5 * sum(len(c["accounts"]) for c in campaigns.values())


def test_hard_negatives_shape(small: tuple[SyntheticStream, list[Event]]) -> None:
    stream, events = small
    hard = stream.labels["organic_hard"]

    viral = [e for e in events if hard["viral_url"]["keys"][0] in e.urls]
    accounts = {e.account_id for e in viral}
    assert len(accounts) == len(viral) >= 200 and accounts == set(hard["viral_url"]["accounts"])
    assert viral[-1].ts - viral[0].ts <= 3600

    meme_text = hard["meme_text"]["texts"][0]
    meme = [e for e in events if e.action == "post" and jaccard(meme_text, e.text or "") >= 0.5]
    assert len(meme) == len({e.account_id for e in meme}) >= 100
    assert {e.account_id for e in meme} == set(hard["meme_text"]["accounts"])
    assert meme[-1].ts - meme[0].ts >= 3 * 3600

    live = [e for e in events if hard["live_hashtag"]["keys"][0] in e.hashtags]
    assert len({e.account_id for e in live}) >= 200 and live[-1].ts - live[0].ts <= 1800


def test_heavy_tailed_activity_and_chance_co_actions(small: tuple[SyntheticStream, list[Event]]) -> None:
    stream, events = small
    labelled = set().union(*(set(g["accounts"]) for part in ("campaigns", "organic_hard")
                             for g in stream.labels[part].values()))
    organic = [e for e in events if e.account_id not in labelled]
    counts = sorted(Counter(e.account_id for e in organic).values(), reverse=True)
    top = counts[: SMALL["accounts"] // 100]
    assert sum(top) > 0.12 * sum(counts)  # uniform activity would give ~0.01
    # unlabelled accounts co-act on popular objects within 60 s by chance
    last: dict[str, tuple[float, str]] = {}
    chance = 0
    for e in organic:
        if e.action in ("retweet", "like", "share"):
            key = e.object_id or e.urls[0]
            prev = last.get(key)
            chance += prev is not None and e.ts - prev[0] <= 60 and prev[1] != e.account_id
            last[key] = (e.ts, e.account_id)
    assert chance > 100


def test_small_stream_is_fast(tmp_path: Path) -> None:
    t = time.perf_counter()
    summary = generate(tmp_path, seed=1, hours=2.0, rate=8.0, accounts=5000)
    assert time.perf_counter() - t < 3.0
    assert summary["events"] > 30_000 and summary["campaigns"] == sum(STYLE_COUNTS.values())
    assert summary["events"] == summary["organic_events"] + summary["campaign_events"] + summary["hard_negative_events"]


def test_rejects_too_few_accounts() -> None:
    with pytest.raises(ValueError, match="accounts = 1000 is too few"):
        SyntheticStream(accounts=1000)
