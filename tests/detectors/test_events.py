"""Event contract: every rejection reason, normalisation and extraction, envelopes, derived
ids (stable across processes), round-trips, the real coord_eval datasets, and a fuzz test
that the parser never raises. The fast paths are checked against their references: the
string-method canonical_url against urllib, parse_messages against parse_message message
by message, and replay's block reader against reading line by line."""

from __future__ import annotations

import ast
import gzip
import io
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detectors import events as events_module
from detectors.events import (
    MAX_EVENT_BYTES,
    Event,
    Rejection,
    canonical_url,
    event_to_json,
    pack_events,
    parse_event,
    parse_message,
    parse_messages,
    parse_obj,
    parse_with_origins,
    unpack_events,
    url_domain,
)
from detectors.replay import ReplaySummary, _batches, open_events
from sketches.hashing import hash_string

REPO = Path(__file__).resolve().parents[2]
# ../shared beside the repository (CI and developers have it; its absence must fail, not skip)
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "data" / "coord_eval" / "datasets"
BASE = {"ts": 1631900000, "account_id": "a", "action": "post"}


def ev(**fields: object) -> Event:
    """The Event parsed from BASE with ``fields`` merged in; fails on a rejection."""
    out = parse_event(with_(**fields))
    assert isinstance(out, Event), out
    return out


def reason(raw: bytes, **kw: int) -> str:
    out = parse_event(raw, **kw)
    assert isinstance(out, Rejection), out
    assert out.raw == raw and out.index is None
    return out.reason


def with_(**fields: object) -> bytes:
    return orjson.dumps({**BASE, **fields})


# --- normalisation --------------------------------------------------------------------


def test_minimal_event_and_types():
    e = parse_event(b'{"ts": 1631900000, "account_id": 4711, "action": "post", "object_id": 99}')
    assert e == Event(1631900000.0, "4711", "post", e.event_id, None, (), "99", (), {})
    assert type(e.ts) is float and e.account_id == "4711" and e.object_id == "99"
    assert e.event_id.startswith("d:") and len(e.event_id) == 18
    assert ev(event_id=12345678901234567890).event_id == "12345678901234567890"
    assert ev(object_id="").object_id is None
    assert ev(action="quote_tweet").action == "quote_tweet"


def test_iso_timestamps():
    assert ev(ts="2021-01-17T07:56:00Z").ts == 1610870160.0
    assert ev(ts="2021-01-17T09:56:00+02:00").ts == 1610870160.0
    assert ev(ts="2021-01-17T07:56:00.250Z").ts == 1610870160.25
    assert ev(ts=0).ts == 0.0 and ev(ts=4102444800).ts == 4102444800.0


def test_unknown_fields_kept_untouched():
    extra = {"lang": "de", "meta": {"a": [1, 2.5, None, True]}, "n": -3}
    assert ev(**extra).extra == extra


def test_null_optional_fields_are_absent():
    raw = with_(text=None, url=None, urls=None, object_id=None, hashtags=None, event_id=None)
    e = parse_event(raw)
    assert isinstance(e, Event)
    assert (e.text, e.urls, e.object_id, e.hashtags, e.extra) == (None, (), None, (), {})


# --- extraction -------------------------------------------------------------------------


def test_urls_merge_extract_dedupe_in_order():
    e = ev(
        url="https://a.example/1",
        urls=["https://b.example/2", "https://a.example/1", ""],
        text="see https://c.example/3. and (https://b.example/2) or Https://D.example/4, ok",
    )
    assert e.urls == (
        "https://a.example/1",
        "https://b.example/2",
        "https://c.example/3",
        "https://d.example/4",
    )
    assert ev(urls="url_34110").urls == ("url_34110",)  # opaque tokens kept
    assert ev(text="no links here, only ftp://x and http:// alone").urls == ()


def test_hashtags_merge_extract_casefold_dedupe():
    e = ev(hashtags=["#Wahl2021", "Klima", "#", ""], text="#KLIMA jetzt! #BTW21, #Straße #1 #wahl2021")
    assert e.hashtags == ("wahl2021", "klima", "btw21", "strasse")
    not_tags = "mail#x http://x.example/#frag page#top &#x27; ##double /#/route #123"
    assert ev(text=not_tags).hashtags == ()
    assert ev(text="(#Paren) #_x #über").hashtags == ("paren", "_x", "über")


def test_url_helpers():
    assert canonical_url("HTTPS://WWW.Example.de/a?utm_source=tw&id=7#top") == "https://www.example.de/a?id=7"
    assert canonical_url("http://x.example?b=1&fbclid=z&a=%20&gclid=q") == "http://x.example/?b=1&a=%20"
    assert canonical_url("url_34110") == "url_34110"
    assert canonical_url("http://[broken") == "http://[broken"
    assert url_domain("https://WWW.Example.de:8080/x") == "example.de"
    assert [url_domain(u) for u in ("url_1", "http://[broken", "file:///tmp/x")] == [None, None, None]
    e = ev(urls=["https://www.a.example/1", "http://a.example/2", "https://b.example", "url_7"])
    assert e.domains == ("a.example", "b.example")


# --- rejections -------------------------------------------------------------------------


CASES = [
    (b'{"ts": 1, "text": "\xff"}', "not_utf8"),
    (b"\xed\xa0\x80", "not_utf8"),
    (b'{"ts": 1,', "not_json"),
    (b"", "not_json"),
    (b"NaN", "not_json"),
    (b'{"text": "\\ud800"}', "not_json"),
    (b'"hello"', "not_object"),
    (b"[" * 2000, "not_json"),  # deeper than orjson's recursion limit
    (b'[{"ts": 1, "account_id": "a", "action": "post"}]', "not_object"),  # parse_event: no envelopes
    (b'{"account_id": "a", "action": "post"}', "missing_field:ts"),
    (with_(ts=None), "missing_field:ts"),
    (with_(account_id=None), "missing_field:account_id"),
    (b'{"ts": 1, "account_id": "a"}', "missing_field:action"),
    (with_(ts=True), "bad_type:ts"),
    (with_(ts=[1]), "bad_type:ts"),
    (with_(account_id=1.5), "bad_type:account_id"),
    (with_(account_id=False), "bad_type:account_id"),
    (with_(action=3), "bad_type:action"),
    (with_(event_id=[]), "bad_type:event_id"),
    (with_(event_id=True), "bad_type:event_id"),
    (with_(url=7), "bad_type:url"),
    (with_(urls=[None]), "bad_type:urls"),
    (with_(urls={"u": 1}), "bad_type:urls"),
    (with_(hashtags="x"), "bad_type:hashtags"),
    (with_(hashtags=["a", 1]), "bad_type:hashtags"),
    (with_(text={}), "bad_type:text"),
    (with_(object_id=2.5), "bad_type:object_id"),
    (with_(object_id=True), "bad_type:object_id"),
    (with_(account_id=""), "bad_value:account_id"),
    (with_(action="Retweet"), "bad_value:action"),
    (with_(action=""), "bad_value:action"),
    (with_(action="re-tweet"), "bad_value:action"),
    (with_(action="_post"), "bad_value:action"),
    (with_(event_id=""), "bad_value:event_id"),
    (with_(ts="2021-01-17T07:56:00"), "bad_ts"),
    (with_(ts="2021-01-17"), "bad_ts"),
    (with_(ts="yesterday"), "bad_ts"),
    (with_(ts="1631900000"), "bad_ts"),
    (with_(ts=-1), "bad_ts"),
    (with_(ts=-0.5), "bad_ts"),
    (with_(ts=1631900000000), "bad_ts"),
    (with_(ts=4102444800.5), "bad_ts"),
    (with_(ts="1969-12-31T23:59:59Z"), "bad_ts"),
    (with_(ts="2100-01-01T00:00:01Z"), "bad_ts"),
    (with_(ts="0001-01-01T00:00:00+14:00"), "bad_ts"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_rejection_reasons(raw: bytes, expected: str):
    assert reason(raw) == expected


def test_too_large_is_checked_before_parsing():
    big = with_(text="x" * 200)
    assert reason(big, max_bytes=100) == "too_large"
    assert reason(b"\xff" * 101, max_bytes=100) == "too_large"
    assert isinstance(parse_event(big, max_bytes=len(big)), Event)
    assert MAX_EVENT_BYTES == 1 << 20
    assert reason(with_(text="x" * MAX_EVENT_BYTES)) == "too_large"
    [r] = parse_message(b"[" + big + b"]", max_bytes=100)
    assert (r.reason, r.index) == ("too_large", None)


def test_millisecond_ts_detail_hints_at_units():
    r = parse_event(with_(ts=1631900000000))
    assert isinstance(r, Rejection) and "milliseconds" in r.detail


def test_parse_obj_rejections():
    nan = {**BASE, "ts": float("nan")}
    for obj, expected in [(NotImplemented, "not_object"), ([BASE], "not_object"), (nan, "bad_ts")]:
        r = parse_obj(obj)
        assert isinstance(r, Rejection) and r.reason == expected and r.index is None
    r = parse_obj({**BASE, "ts": float("inf")})
    assert isinstance(r, Rejection) and (r.reason, r.raw) == ("bad_ts", b'{"ts":null,"account_id":"a","action":"post"}')
    r = parse_obj({**BASE, "blob": {1, 2}})  # cannot be serialised, so no id can be derived
    assert isinstance(r, Rejection) and (r.reason, r.raw) == ("not_json", b"")
    assert isinstance(parse_obj({**BASE, "event_id": "e", "blob": {1, 2}}), Event)
    obj = {**BASE, "extra": 1}
    assert parse_obj(obj) == parse_event(orjson.dumps(obj)) and obj == {**BASE, "extra": 1}  # input untouched


def test_docs_table_examples_give_their_reason():
    """Each row of the reasons table in docs/events.md; the table lists exactly the codes tested."""
    section = (REPO / "docs/events.md").read_text().split("## Rejection reasons")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z0-9_:]+)` \| (.*?) \|", section, re.M)
    documented = {r for r, _ in rows}
    assert len(documented) >= 20
    for code, shown in rows:
        if shown.startswith("`b'"):
            results = parse_message(ast.literal_eval(shown.strip("`")))
            assert [r.reason for r in results if isinstance(r, Rejection)] == [code], shown
    assert documented == {code for _, code in CASES} | {"too_large", "empty_envelope", "future_ts"}


# --- envelopes --------------------------------------------------------------------------


def test_envelope_mixed_good_and_bad_elements():
    good = {**BASE, "event_id": "e0"}
    bad_ts = {**BASE, "ts": "later"}
    raw = orjson.dumps([good, 42, bad_ts, {**BASE, "text": "#Hi"}, [good]])
    out = parse_message(raw)
    assert [type(r).__name__ for r in out] == ["Event", "Rejection", "Rejection", "Event", "Rejection"]
    assert out[0] == parse_event(orjson.dumps(good))
    assert (out[1].reason, out[1].index, out[1].raw) == ("not_object", 1, b"42")
    assert (out[2].reason, out[2].index, out[2].raw) == ("bad_ts", 2, orjson.dumps(bad_ts))
    assert out[3].hashtags == ("hi",) and out[3].event_id.startswith("d:")
    assert (out[4].reason, out[4].index) == ("not_object", 4)
    assert [r.reason for r in parse_message(b"[]")] == ["empty_envelope"]
    assert [r.reason for r in parse_message(b"3")] == ["not_object"]
    [single] = parse_message(orjson.dumps(good))
    assert single == out[0]


# --- derived ids and round-trips ----------------------------------------------------------


def test_derived_id_follows_documented_rule_everywhere():
    obj = {"ts": 1631900000, "account_id": "acc_1", "action": "post"}
    expected = "d:%016x" % hash_string(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode())
    assert expected == "d:3b26d7ac6a837d1f"  # the example in docs/events.md
    assert parse_event(orjson.dumps(obj)).event_id == expected
    assert parse_event(orjson.dumps({"action": "post", "event_id": None, **obj})).event_id == expected
    assert parse_obj(obj).event_id == expected
    batch = parse_message(orjson.dumps([obj, {**obj, "account_id": "acc_2"}, obj]))
    assert batch[0].event_id == batch[2].event_id == expected != batch[1].event_id


def test_derived_id_is_stable_across_processes():
    raw = with_(text="same content #x", lang="de")
    code = "import sys; from detectors.events import parse_event as p; print(p(sys.stdin.buffer.read()).event_id)"
    ids = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, input=raw, capture_output=True, env=env, check=True, cwd=REPO)
        ids.add(out.stdout.decode().strip())
    assert ids == {parse_event(raw).event_id}


def test_event_to_json_round_trip():
    e = ev(ts="2021-09-20T18:30:00+02:00", account_id=4711, text="#A https://x.example/a", hashtags=["B"], m={"k": 1})
    raw = event_to_json(e)
    assert raw == orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)  # canonical
    assert parse_event(raw) == e
    assert event_to_json(parse_event(raw)) == raw


# --- the real datasets --------------------------------------------------------------------


def _head(path: Path, n: int = 2000) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return list(itertools.islice(f, n))


def test_real_datasets_parse_without_rejections():
    files = sorted(DATASETS.glob("*.jsonl.gz"))
    assert len(files) >= 3
    for path in files:
        lines = _head(path)
        events = [parse_event(line) for line in lines]
        rejected = [r for r in events if isinstance(r, Rejection)]
        assert not rejected, (path.name, rejected[:3])
        for line, e in zip(lines, events):
            obj = orjson.loads(line)
            for field in ("event_id", "ts", "account_id", "action", "object_id"):
                assert getattr(e, field) == obj[field]
            assert set(e.extra) == set(obj) - {"ts", "account_id", "action", "event_id", "text", "url", "object_id"}

    url_post = parse_event(_head(DATASETS / "german_elections.jsonl.gz", 2)[1])
    assert url_post == Event(
        1629064892.0,
        "tw_49523",
        "post",
        "144021:url_34110",
        None,
        ("url_34110",),
        "url_34110",
        (),
        {"object_type": "url", "content_id": "144021", "platform": "tw", "dataset": "german_elections"},
    )
    retweet = parse_event(_head(DATASETS / "russian_coord_tweets.jsonl.gz", 1)[0])
    assert isinstance(retweet, Event)
    assert (retweet.event_id, retweet.ts, retweet.account_id, retweet.action, retweet.object_id) == (
        "030b27d6e4f5e99578eb60967650b8db",
        1610870193.0,
        "a2083f9029abae609a42adabbd18a76a",
        "retweet",
        "cd16b4850f31f8b75a163363e844fc3e",
    )
    assert retweet.urls == () and retweet.extra["platform"] == "twitter"


# --- fuzz: never raises; valid events round-trip ------------------------------------------

FIELDS = ["ts", "account_id", "action", "event_id", "text", "url", "urls", "object_id", "hashtags", "other"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=10,
)
texts = st.lists(
    st.sampled_from(["#Tag", "#ß", "#1", "x#y", "https://a.example/p?q=1", "HTTP://B.example.", "(", " ", "é", "&#x27;"])
    | st.text(max_size=5),
    max_size=8,
).map("".join)
field_values = json_values | texts | st.sampled_from(
    ["post", "Like", "", "2021-01-17T07:56:00Z", "2021-01-17T07:56:00", 1e13, -1, 1631900000.5]
)
contract_dicts = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=10)
valid_dicts = st.fixed_dictionaries(
    {
        "ts": st.floats(0, 4102444800) | st.integers(0, 4102444800),
        "account_id": st.text(min_size=1, max_size=8) | st.integers(0, 2**63),
        "action": st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True),
    },
    optional={
        "event_id": st.text(min_size=1, max_size=8),
        "text": texts,
        "url": st.text(max_size=10),
        "urls": st.lists(st.text(max_size=10), max_size=3),
        "object_id": st.text(max_size=8) | st.integers(0, 99),
        "hashtags": st.lists(st.text(max_size=6), max_size=3),
        "other": json_values,
    },
)


def _check(results: list[Event | Rejection], n: int) -> None:
    assert len(results) == n
    for r in results:
        assert isinstance(r, (Event, Rejection))
        if isinstance(r, Event):
            assert parse_event(event_to_json(r)) == r
        else:
            assert r.reason and isinstance(r.raw, bytes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_never_raise(raw: bytes):
    _check([parse_event(raw)], 1)
    parse_message(raw)
    parse_message(raw, max_bytes=16)


@settings(max_examples=300, deadline=None)
@given(json_values | contract_dicts)
def test_fuzz_json_values_never_raise(value: object):
    _check([parse_obj(value)], 1)
    raw = orjson.dumps(value)
    _check([parse_event(raw)], 1)
    if isinstance(value, dict):
        assert parse_event(raw) == parse_obj(value)
    _check(parse_message(orjson.dumps([value, value])), 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_dicts, min_size=1, max_size=4))
def test_fuzz_valid_events_parse_and_round_trip(objs: list[dict]):
    out = parse_message(orjson.dumps(objs))
    assert all(isinstance(e, Event) for e in out), out
    _check(out, len(objs))
    assert [parse_obj(o) for o in objs] == out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(valid_dicts, max_size=3) | contract_dicts | json_values, max_size=8))
def test_events_handed_on_come_back_equal_and_know_their_message(values: list[object]):
    """``pack_events`` / ``unpack_events`` (how a worker hands parsed events to a shard) give
    back equal events, and ``parse_with_origins`` names each event's message."""
    msgs = [orjson.dumps(v) for v in values]
    events, rejected, origins = parse_with_origins(msgs)
    assert (events, rejected) == parse_messages(msgs)
    assert unpack_events(pack_events(events)) == events
    counts = [sum(isinstance(x, Event) for x in parse_message(m)) for m in msgs]
    assert origins.tolist() == [i for i, c in enumerate(counts) for _ in range(c)]


# --- fast paths against their references ----------------------------------------------------

url_pieces = st.lists(
    st.sampled_from(
        ["http://", "https://", "HTTP://", "Https://", "://", "/", "?", "#", "&", "&&", "=", "utm_source=x",
         "UTM_Medium=1", "fbclid=z", "GCLID=q", "gclid", "a=1", "x.example", "WWW.Ex.DE", ":8080", "user:Pw@",
         "[", "]", "[::1]", "%20", ".", ";p", "\\", "é", "İ", "\u212a", "\u2100", "\ufb01", "\u00a0",
         " ", "\t", "\n", "\x00", "\x1f"]
    )
    | st.text(max_size=3),
    max_size=10,
).map("".join)


TRICKY_URLS = [
    "https://h.example/?&a=1", "https://h.example/?a=1&", "https://h.example/?a&&b", "https://h.example?",
    "https://h.example?x=1/y", "https://h.example/p?UTM_x=1", "https://h.example/p?a=utm_x", "https://h.example/p?FbClId",
    "https://H.example:80", "https://u:P@H.example/", "https://[::1]:8/x", "https://[::1/x", "https://h/\tx",
    "https://h/x y ", "https://exa\u2100mple/", "https://h/#frag", "https://", "https:///p", "https:////p", "https://?q", "http://h",
]


@settings(max_examples=1000, deadline=None)
@given(url_pieces, st.sampled_from(["", "http://", "https://", "HTTPS://", " https://"]))
@example("", "").via("the tricky URLs below")
def test_canonical_url_fast_path_equals_urllib(rest: str, prefix: str):
    for url in TRICKY_URLS:
        assert events_module._canonical_url_fast(url) == events_module._canonical_url_urllib(url), url
    url = prefix + rest
    assert events_module._canonical_url_fast(url) == events_module._canonical_url_urllib(url)
    assert canonical_url(url) == canonical_url(url) == events_module._canonical_url_urllib(url)  # memo hit too


def test_canonical_url_memo_is_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(events_module, "_CANONICAL_MEMO_MAX", 4)
    urls = [f"HTTPS://Host{i}.example/p?utm_x={i}&k={i}" for i in range(10)]
    assert [canonical_url(u) for u in urls * 2] == [f"https://host{i}.example/p?k={i}" for i in range(10)] * 2
    assert len(events_module._canonical_memo) <= 4


def test_canonical_url_fast_path_on_real_urls():
    """Every URL of the coord_eval datasets (fields and text) and of a generated stream."""
    urls = set()
    for path in sorted(DATASETS.glob("*.jsonl.gz")):
        for line in _head(path, 20_000):
            obj = orjson.loads(line)
            for field in ("url", "urls"):
                v = obj.get(field)
                urls.update([v] if isinstance(v, str) else v if isinstance(v, list) else [])
            if isinstance(obj.get("text"), str):
                urls.update(events_module._URL_ANYCASE_RE.findall(obj["text"]))
    urls |= {f"https://{d}/{s}/{n}?utm_source=tw&utm_medium=social" for d in ("www.a.example", "b.example.org")
             for s in ("news", "video") for n in (1, 22)}
    assert len(urls) > 100
    for url in urls:
        assert events_module._canonical_url_fast(url) == events_module._canonical_url_urllib(url), url


valid_lines = valid_dicts.map(orjson.dumps)
messages = st.one_of(
    valid_lines,
    valid_lines,
    contract_dicts.map(orjson.dumps),
    st.lists(valid_dicts | contract_dicts | json_values, max_size=4).map(orjson.dumps),  # envelopes, [] too
    json_values.map(orjson.dumps),
    st.binary(max_size=40),
    st.sampled_from([b"", b"  ", b"\t", b'{"ts": 1,', b"\xff", b'{"ts": 1, "text": "\xff"}', b"[]", b"null",
                     b'{"ts":1,"account_id":"a","action":"post","x":' + b"[" * 300 + b"]" * 300 + b"}"]),
)


def _one_by_one(msgs: list[bytes], max_bytes: int,
                limits: list[float] | None = None) -> tuple[list[Event], list[tuple[int, Rejection]]]:  # fmt: skip
    events: list[Event] = []
    rejected: list[tuple[int, Rejection]] = []
    for i, m in enumerate(msgs):
        for item in parse_message(m, max_bytes, math.inf if limits is None else limits[i]):
            if isinstance(item, Rejection):
                rejected.append((i, item))
            else:
                events.append(item)
    return events, rejected


@settings(max_examples=250, deadline=None)
@given(st.lists(st.tuples(messages, st.sampled_from([math.inf, 1631900000.0, 1631899999.5, 0.0])), max_size=12),
       st.sampled_from([MAX_EVENT_BYTES, 60]))  # fmt: skip
def test_parse_messages_equals_parse_message_one_by_one(msgs: list[tuple[bytes, float]], max_bytes: int):
    """Same events (derived ids included), same rejections with their message's position;
    also with each message's latest ``ts`` (future_ts)."""
    raw, limits = [m for m, _ in msgs], [t for _, t in msgs]
    assert parse_messages(raw, max_bytes) == _one_by_one(raw, max_bytes)
    assert parse_messages(raw, max_bytes, limits) == _one_by_one(raw, max_bytes, limits)


def test_an_event_dated_after_its_messages_limit_is_future_ts_whole_or_in_an_envelope():
    """The row of the docs' reasons table, and future_limits: events.max_ahead_s after when
    a message was received (0: no limit; an unknown time, negative: no limit)."""
    early, late = with_(ts=1631900060), with_(ts=1631900061)
    limits = events_module.future_limits(np.array([1631900000, 1631900000, -1, -0.001]), 60)
    assert limits == [1631900060, 1631900060, math.inf, math.inf]
    assert events_module.future_limits(np.array([1631900000.0]), 0) == [math.inf]
    assert isinstance(parse_message(early, limit=limits[0])[0], Event)
    (r,) = parse_message(late, limit=limits[0])
    assert (r.reason, r.raw, r.index) == ("future_ts", late, None) and "2021-09-17T17:34:20Z" in r.detail
    env = b"[" + early + b"," + late + b"]"
    assert [getattr(x, "reason", None) for x in parse_message(env, limit=limits[0])] == [None, "future_ts"]
    events, rejected = parse_messages([late, env, late], limits=[limits[2], limits[0], limits[1]])
    assert [(i, r.reason, r.index) for i, r in rejected] == [(1, "future_ts", 1), (2, "future_ts", None)]
    assert [e.ts for e in events] == [1631900061.0, 1631900060.0]


def test_parse_messages_inlined_usual_event_equals_parse_message():
    """parse_messages inlines the usual event: every field value around that path (absent,
    null, empty, another type, URLs and tags in text, extra fields) gives what parse_message does."""
    variants = {
        "ts": [1631900000.5, 1631900000, -1.0, 5e12, "2021-09-17T17:33:20Z", None, True],
        "account_id": ["a", "", 7, None, ["a"]],
        "action": ["post", "like", "boost", "Post", None, ["post"]],
        "event_id": ["e1", "", 5, None, {"x": 1}],
        "text": ["plain words", "see https://X.example/a?utm_x=1 and http://y.example/", "HTTPS://Z.example/b #Tag #tag",
                 "#one", "", None, 3],
        "url": ["https://x.example/p?fbclid=1", "", None, ["https://a.example/"], 4],
        "object_id": ["o1", "", 12, None, 1.5],
        "urls": [["https://b.example/"], "https://c.example/", None],
        "hashtags": [["#Tag", "x"], None, "t"],
        "extra": [1, None],
    }
    base = {"ts": 1631900000.5, "account_id": "a", "action": "post", "event_id": "e1"}
    msgs = []
    for field, values in variants.items():
        for v in values:
            for other in ("text", "url", "object_id"):  # beside another optional field, in both orders
                o = {**base, other: "https://u.example/#x" if other == "url" else "o2" if other == "object_id" else "t #h"}
                msgs.append(orjson.dumps({**o, field: v}))
                msgs.append(orjson.dumps({field: v, **o}))
            msgs.append(orjson.dumps({**base, field: v}))
    absent = {k: v for k, v in base.items() if k != "event_id"}
    msgs += [orjson.dumps(absent), orjson.dumps({**absent, "text": "x"}), orjson.dumps({"text": "only"})]
    assert parse_messages(msgs) == _one_by_one(msgs, MAX_EVENT_BYTES)
    limits = [1631900000.2] * len(msgs)  # the float ts of base is after it, the int one not
    assert parse_messages(msgs, limits=limits) == _one_by_one(msgs, MAX_EVENT_BYTES, limits)
    assert any(r.reason == "future_ts" for _, r in parse_messages(msgs, limits=limits)[1])


def test_parse_messages_one_bad_line_among_good_ones():
    lines = [with_(event_id=f"e{i}", text=f"#t{i} https://x.example/{i}?utm_a=1") for i in range(50)]
    lines[17] = b'{"ts": 1631900000, "account_id": "a",'
    lines[30] = with_(ts="yesterday")
    lines[31] = with_(event_id=None, text="derived")
    events, rejected = parse_messages(lines)
    assert [(i, r.reason, r.raw) for i, r in rejected] == [(17, "not_json", lines[17]), (30, "bad_ts", lines[30])]
    assert events == [parse_event(x) for j, x in enumerate(lines) if j not in (17, 30)]
    assert events[29].event_id == parse_event(lines[31]).event_id and events[29].event_id.startswith("d:")
    assert events[0].urls == ("https://x.example/0",) and events[0].hashtags == ("t0",)


def test_envelope_rejection_raw_is_the_element_as_sent():
    """Elements are consumed into their events; a rejected one is re-serialised as it came."""
    bad = {"ts": 1631900000, "account_id": "a", "action": "post", "text": "t", "url": "u", "object_id": 2.5, "k": 1}
    raw = orjson.dumps([bad, BASE, {**bad, "event_id": None, "hashtags": "x"}])
    out = parse_message(raw)
    assert [(r.reason, r.index, r.raw) for r in out if isinstance(r, Rejection)] == [
        ("bad_type:object_id", 0, orjson.dumps(bad)),
        ("bad_type:hashtags", 2, orjson.dumps({**bad, "event_id": None, "hashtags": "x"})),
    ]


def test_parse_messages_envelopes_give_each_element_its_index():
    """The batch path validates envelope elements itself: equal scalar elements (one object
    to orjson), bad and good ones mixed, in envelopes among single events, index each
    rejection as parse_message does and keep every event's message position."""
    bad = {**BASE, "event_id": "b", "ts": "yesterday"}
    msgs = [
        orjson.dumps([1, 1, BASE, bad, None, {**BASE, "event_id": "c"}, bad, 1]),
        orjson.dumps({**BASE, "event_id": "single"}),
        orjson.dumps([{**BASE, "event_id": None}, 1, {**BASE, "event_id": "d"}]),
        b"[]",
    ]
    events, rejected, origins = parse_with_origins(msgs)
    assert (events, rejected) == _one_by_one(msgs, MAX_EVENT_BYTES)
    assert [(i, r.index) for i, r in rejected] == [(0, 0), (0, 1), (0, 3), (0, 4), (0, 6), (0, 7), (2, 1), (3, None)]
    assert origins.tolist() == [0, 0, 1, 2, 2]


def test_derived_id_of_a_non_serialisable_dict_is_checked_after_the_fields():
    assert parse_obj({"ts": "x", "account_id": "a", "action": "post", "s": {1}}).reason == "bad_ts"
    deep = b'{"ts":1,"account_id":"a","action":"post","x":' + b"[" * 300 + b"]" * 300 + b"}"
    assert parse_event(deep).reason == "not_json"  # orjson.dumps nests at most 255 deep
    assert isinstance(parse_event(deep[:-1] + b',"event_id":"e"}'), Event)


# --- replay reads blocks: the same as line by line ------------------------------------------


def _replay_reference(data: bytes, max_bytes: int) -> tuple[list[Event], list[bytes], int]:
    """What replay gave when it parsed ``for line in file`` one line at a time."""
    events: list[Event] = []
    rejects: list[bytes] = []
    number = 0
    for number, line in enumerate(io.BytesIO(data), 1):
        if not line.strip():
            continue
        for item in parse_message(line.rstrip(b"\r\n"), max_bytes):
            if isinstance(item, Rejection):
                rejects.append(orjson.dumps([number, item.index, item.reason, item.detail, item.raw.decode("utf-8", "backslashreplace")]))
            else:
                events.append(item)
    return events, rejects, number


def _replay_blocks(stream: io.BufferedIOBase, size: int, max_bytes: int, block: int) -> tuple[list[Event], list[bytes], ReplaySummary]:
    summary = ReplaySummary()
    out = io.BytesIO()
    batches = list(_batches(stream, size, max_bytes, math.inf, summary, out, block_bytes=block))  # type: ignore[arg-type]
    assert all(len(b) == size for b in batches[:-1]) and all(0 < len(b) <= size for b in batches[-1:])
    rejects = [orjson.loads(x) for x in out.getvalue().splitlines()]
    rows = [orjson.dumps([r["line"], r["index"], r["reason"], r["detail"], r["raw"]]) for r in rejects]
    assert summary.events == sum(map(len, batches)) and sum(summary.rejected.values()) == len(rows)
    return [e for b in batches for e in b], rows, summary


line_pool = st.one_of(
    valid_lines,
    messages,
    st.sampled_from([b"", b" ", b"\r", b"\t \x0b", b'{"a": 1}\r{"b": 2}', b'{"ts":1631900000,"account_id":"a","action":"post"}\r\r']),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(line_pool, st.sampled_from([b"\n", b"\r\n"])), max_size=15),
    st.booleans(),
    st.sampled_from([1, 7, 64, 1 << 22]),
    st.sampled_from([1, 3, 10_000]),
    st.sampled_from([MAX_EVENT_BYTES, 50]),
)
def test_replay_blocks_equal_line_by_line(lines, final_newline, block, size, max_bytes):
    """Events, rejects (line numbers, index, reason, detail, raw) and the line count, for lines
    across block edges, CRLF, blank lines and a last line without newline."""
    data = b"".join(line + end for line, end in lines)
    if lines and not final_newline:
        data = data[: -len(lines[-1][1])]
    events, rejects, summary = _replay_blocks(io.BytesIO(data), size, max_bytes, block)
    ref_events, ref_rejects, ref_lines = _replay_reference(data, max_bytes)
    assert (events, rejects, summary.lines) == (ref_events, ref_rejects, ref_lines)


def test_replay_blocks_gzip_with_two_members(tmp_path: Path):
    lines = [with_(event_id=f"e{i}") for i in range(3000)] + [b"", b"oops", with_(action="X")]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(data[:20_000]) + gzip.compress(data[20_000:]))
    with open_events(path) as stream:
        events, rejects, summary = _replay_blocks(stream, 1000, MAX_EVENT_BYTES, 4096)
    assert (events, rejects, summary.lines) == _replay_reference(data, MAX_EVENT_BYTES)
    assert [orjson.loads(r)[:3] for r in rejects] == [[3002, None, "not_json"], [3003, None, "bad_value:action"]]
