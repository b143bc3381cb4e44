"""Burst: a key used far more than its recent baseline predicts.

Keys are typed strings: ``hashtag:foo``, ``url:https://x/y``, ``domain:x``, ``object:123``,
``text:<16 hex>`` (the seeded hash of :func:`sketches.shingling.normalize` of the text).

**Statistic.** Time is cut into panes of ``pane_s``; the window holds the current pane and
``window_s / pane_s - 1`` earlier ones. A count ``c`` is judged against
``λ = max(mean count per earlier pane, prior_rate_per_pane)`` by the Poisson upper tail
``P(X ≥ c | λ)`` (:func:`poisson_logsf`, summed in log space, no scipy); the score is
``-log10 p``. An exact tail rather than MIDAS's χ² score, because χ² is an approximation
that fails where bursts start, at small counts against near-zero baselines, and its value
is not a probability that ``max_p_value`` could bound. Three tests use it, by key kind:

* **pane** (hashtags, texts): ``c`` = the key's count in the current pane.
* **wave** (``wave_kinds``: URLs, posts, domains): the same bar (λ and critical count of the
  pane), but ``c`` = the key's count in the trailing ``wave_s`` (120 s) of the pane. Rings
  act on a URL or post within seconds (the generator's link rings within 10-60 s,
  retweet/like rings 5-40 s); organic popularity accrues over minutes.
* **span** (``span_kinds``: hashtags): ``c`` = the exact count of the last ``span_panes``
  (6) panes, the current one included, against ``span_panes x λ`` with λ from the window
  panes *before* the span, and also ``c ≥ span_min_ratio (5) x`` that: a push spread thinly
  over 30 minutes (the generator's weak one: 25 accounts, 1-3 posts each, ~8 per pane, below
  ``min_count``) shows, while organic tags, which drift with the daily rhythm by x1.3-4
  within an hour (15 Poisson "outliers" at 1e-6 on seeds 0-2 without the ratio), do not.
  It fires once per key and span: not while an alert of the key lies within the span, so a
  fast burst is followed by pane tests only (its updates need a fresh per-pane burst).

**Prior.** ``prior_rate_per_pane`` (0.5) floors λ: a key unseen for ``k`` panes has a 95 %
upper rate of ``3/k`` per pane (rule of three), 1.0 at the 3 panes of the warm-up and 0.27 at
the 11 of a full default window. As a floor it also keeps a rare key from being judged against
a near-zero mean; at λ = 0.5 the tail is below 1e-6 from 8 events on, so a new key alerts on
volume and breadth (``min_count``, ``min_accounts``), which is what a novelty burst is.

**Exact now, sketched before.** Counts, accounts and sample posts of the current pane (and,
for span kinds, of the span's earlier panes) are exact. Baselines are count-min estimates,
which only over-count: an inflated baseline raises λ and p, so a collision can hide a burst
but never make one, and a key without events in the current pane is never tested. A pane's
exact counts enter the count-min when it closes, in one update with the events that arrived
late for earlier panes: conservative update depends on how keys are grouped into batches, so
updating at pane boundaries only keeps the sketch (and every baseline) a function of the
event sequence, and fixes λ for the whole pane. Late events count in baselines, not in the
exact counts of a pane or span.

**Timing.** A key alerts at the very event that makes a test cross the bar — ``c ≥`` its
critical count (the smallest ``c ≥ min_count`` with ``p ≤ max_p_value``, computed once per key
and pane, as λ is fixed) with at least ``min_accounts`` distinct accounts (in the pane, the
wave, the span) — not at pane close: an always-on tool should page within seconds, and the
crossing event is a property of the event sequence, so every batching yields the same
alerts. One alert per key and pane; crossing again in the next pane is an ``update`` of the
same group (``stable_id("bu-", key, pane of its first alert)``). No alerts until
``min_history_panes`` earlier panes were seen (span test: before the span): on a cold start
every key would look new.

**Alert volume (measured).** On the generator mix (24 h, 0.69 M events; seeds 0 / 1 / 2) the
pane test on hashtag, url, domain and object raised 522 / 576 / 493 alerts a day. By the
labels: 192 / 237 / 226 were organic keys (popular posts 117 / 150 / 148, URLs 38 / 43 / 41,
domains 37 / 44 / 37, mostly ``update`` chains of a viral post re-alerting every pane against
a baseline that still holds its pre-birth zeros), 97 / 101 / 57 were the domain of a ring's URL,
225 / 230 / 202 campaign keys (ring URLs and posts, copy-paste and push hashtags) and 8 the hard
negatives (live_hashtag 4, viral_url 4); the weak hashtag push was missed on all three. Domain
alerts came, 131 of 134 on seed 0, with an alert on a URL of that domain in the same pane, and
no campaign needed one, so ``domain`` is opt-in. The wave test keeps every ring URL and post
alert (108 / 99 / 103 and 96 / 116 / 84) and cuts organic ones from 155 / 193 / 189 to 29 / 53 /
38 (a 60 s wave: to ~11 / 17 / 11 in an offline estimate, keeping these rings too, but a wave
spread over two minutes, 20 shares 6 s apart, would no longer show). Now: 264 /
291 / 248 alerts a day (hashtag 28 / 20 / 20, url 120 / 115 / 110, object 116 / 156 / 118); every
campaign key that alerted before still does (plus the weak pushes), every hashtag push is
caught, the weak one by the span test 10-14 minutes after it began, at 20 posts from 13-18
accounts of its ~48.

**Speed.** Vectorised over the batch (the pipeline hands over every complete 10 s tick at
once): occurrences are built per kind with C-level passes (``map``, ``compress``,
``chain``), their keys hashed in one :func:`~sketches.hashing.hash_strings` call (raw values,
mixed with the kind: no ``kind:value`` strings), cut into segments where the pane changes,
and counted per pane with one sort per segment; Python touches only keys at their critical
count. Burst alone on the seed-0 mix (``/tmp/prof/prof.py``-style: pre-parsed events, batches
of 10k, pipeline included), CPU seconds, best of 3, same run on a shared 2-core machine:
2.03-2.37 before, 0.66-0.71 now (the pane-test-only version: 0.90). Of the detector's ~0.6 s:
occurrence extraction ~0.13 (C-level passes over the events, the floor of this design),
hashing ~0.07, per-segment counting and tests ~0.15 (exact counts 0.03, count-min queries and
critical counts 0.05), closing panes ~0.11 (count-min update 0.055). Tried and dropped: a
hash cache for hashtags and URLs (no faster than hashing), zeroing only touched cells at
expiry (slower than the 17 us fill), a full-table subtract for the window sum (now rebuilt
on demand, see :class:`~sketches.countmin.SlidingCountMin`).

**Evidence** (at the crossing event): ``test`` (pane, wave, span), ``count``, ``expected``
(λ, scaled for a span), ``critical_count``, ``baseline_mean`` and ``baseline_counts`` (the
baseline panes, oldest first), ``p_value`` (0.0 when below float range; the score keeps the
magnitude), ``distinct_accounts``, ``top_accounts``, ``sample_posts`` (the key's first posts
in the pane, wave or span), ``pane`` and ``detected_at``; a wave adds ``wave`` and
``pane_count``, a span ``span`` and ``span_counts`` (exact, oldest first).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import is_, itemgetter
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from detectors.base import WHOLE, Alert, KeyedDetector, Shard, stable_id
from detectors.events import Event, event_to_json, parse_event, url_domain
from detectors.params import BurstParams
from sketches.countmin import SlidingCountMin
from sketches.hashing import fmix64, hash_strings, splitmix64
from sketches.shingling import shingle_batch

_TEXT_CHARS = 200  # sample post text is cut to this many characters
_TOP_EVIDENCE = 10  # accounts with their post counts in the evidence
_WHOLE_TEXT = 1 << 30  # a word n-gram longer than any text: its one shingle is the whole text
_REL_TOL = 1e-17  # series stop when a term no longer changes the sum
_KINDS = ("hashtag", "url", "domain", "object", "text")  # kind code = index; also the order within an event
_CACHE_MAX = 1 << 16  # entries of the URL -> domain and λ -> critical count caches before they are cleared
U64 = np.uint64
#: Mixed into the hash of a raw value per kind, so "foo" the hashtag and "foo" the object differ.
_KIND_SALT = np.array([splitmix64(0xB0_5E_ED ^ (k + 1)) for k in range(len(_KINDS))], dtype=U64)
_NETLOC_END = re.compile(r"[/?#]")
# Event fields by position (an Event is a NamedTuple; itemgetter is ~25 % cheaper than attrgetter)
_ts, _tags, _urls, _obj = (itemgetter(Event._fields.index(f)) for f in ("ts", "hashtags", "urls", "object_id"))
_EMPTY_U64 = np.empty(0, dtype=U64)
_EMPTY_I64 = np.empty(0, dtype=np.int64)


def poisson_logsf(c: int, lam: float) -> float:
    """``ln P(X ≥ c)`` for ``X ~ Poisson(lam)``, to ~1e-10 relative, never underflowing.

    The pmf terms are summed outward from ``c``, where they shrink geometrically: upwards
    (``pmf(c) * Σ Π lam/(c+j)``) when ``c > lam``, else ``1 - P(X ≤ c-1)`` summed downwards.
    """
    if c <= 0:
        return 0.0
    if c > lam:
        k, term, total = c, 1.0, 1.0
        while term > total * _REL_TOL:
            k += 1
            term *= lam / k
            total += term
        return -lam + c * math.log(lam) - math.lgamma(c + 1) + math.log(total)
    k, term, total = c - 1, 1.0, 1.0
    while k > 0 and term > total * _REL_TOL:
        term *= k / lam
        k -= 1
        total += term
    cdf = math.exp(-lam + (c - 1) * math.log(lam) - math.lgamma(c) + math.log(total))
    return math.log1p(-min(cdf, 1.0))


def critical_count(lam: float, max_p: float, min_count: int) -> int:
    """Smallest ``c ≥ min_count`` with ``P(X ≥ c | lam) ≤ max_p`` (the tail falls as c grows).

    An exact search, started at a normal-approximation guess (``lam + z sqrt(lam) +
    (z² + 2) / 6``, z the upper ``max_p`` quantile): galloping from the guess, then
    bisection. The guess is within a few counts, so this takes ~3 tail evaluations
    instead of the ~9 of a search started at ``min_count``.
    """
    target = math.log(max_p)
    lo = min_count
    if poisson_logsf(lo, lam) <= target:
        return lo
    z = _upper_z(max_p)
    guess = max(lo + 1, math.ceil(lam + z * math.sqrt(lam) + (z * z + 2) / 6))
    if poisson_logsf(guess, lam) <= target:  # the answer is in (lo, guess]: gallop down
        hi, step = guess, 1
        while hi - step > lo:
            if poisson_logsf(hi - step, lam) > target:
                lo = hi - step
                break
            hi -= step
            step *= 2
    else:  # in (guess, ...): gallop up
        lo, step = guess, 1
        while poisson_logsf(lo + step, lam) > target:
            lo += step
            step *= 2
        hi = lo + step
    while hi - lo > 1:  # invariant: lo fails, hi passes
        mid = (lo + hi) // 2
        if poisson_logsf(mid, lam) <= target:
            hi = mid
        else:
            lo = mid
    return hi


@functools.lru_cache(maxsize=64)
def _upper_z(p: float) -> float:
    """z with P(Z ≥ z) = p for a standard normal Z."""
    return -NormalDist().inv_cdf(p)


def _key(kind: int, value: Any) -> str:
    """The typed key string: ``hashtag:foo``, ``text:<16 hex>``, ..."""
    return f"text:{value:016x}" if _KINDS[kind] == "text" else f"{_KINDS[kind]}:{value}"


def _spread(tuples: list[tuple[str, ...]], n: int) -> tuple[np.ndarray, list[str]]:
    """Event index of every item of the events' tuples (``tuples[i]`` of event ``i``), and the items."""
    with_items = list(compress(range(n), tuples))  # most events carry none
    if not with_items:
        return _EMPTY_I64, []
    some = list(compress(tuples, tuples))
    idx = np.repeat(np.array(with_items, dtype=np.int64), np.fromiter(map(len, some), dtype=np.int64, count=len(some)))
    return idx, list(chain.from_iterable(some))


def _run_starts(s: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in ``s``."""
    first = np.empty(s.size, dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return np.flatnonzero(first)


def _run_lengths(starts: np.ndarray, n: int) -> np.ndarray:
    """Lengths of the runs starting at ``starts`` in an array of ``n`` (``np.diff`` with
    ``append``, without its ~20 us of Python overhead per call)."""
    out = np.empty(starts.size, dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=out[:-1])
    out[-1:] = n - starts[-1:]
    return out


class _Pane:
    """Exact on-time occurrences of one pane, in sequence order, and its per-key counts.

    One chunk per batch: the batch's events and the occurrences' key hashes, event
    indices into them and kind codes. ``uk`` / ``cnt`` are the distinct key hashes
    (sorted) and their counts so far.
    """

    __slots__ = ("pid", "_chunks", "_flat", "size", "uk", "cnt", "alerted", "tests")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._chunks: list[tuple[Sequence[Event], np.ndarray, np.ndarray, np.ndarray]] = []
        self._flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.size = 0
        self.uk = _EMPTY_U64
        self.cnt = _EMPTY_I64
        self.alerted: set[int] = set()  # key hashes that alerted in this pane
        self.tests: dict[tuple[int, int], tuple[float, list[int], int]] = {}  # (test, key) -> λ, baseline, crit

    def add(
        self, events: Sequence[Event], kh: np.ndarray, ev: np.ndarray, kind: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append occurrences (``ev`` indexes ``events``, in order); returns the distinct keys
        added, their new totals in the pane and their kinds. The chunk refers to the batch
        (the current pane's batches stay alive until it closes; the span's history keeps
        only its events, :meth:`only`)."""
        self._chunks.append((events, kh, ev, kind))
        self._flat = None
        self.size += kh.size
        order = np.argsort(kh)
        s = kh[order]
        st = _run_starts(s)
        u, c, uknd = s[st], _run_lengths(st, s.size), kind[order[st]]
        if self.uk.size:
            both = np.concatenate((self.uk, u))
            order = np.argsort(both, kind="stable")
            srt = both[order]
            st = _run_starts(srt)
            self.uk = srt[st]
            self.cnt = np.add.reduceat(np.concatenate((self.cnt, c))[order], st)
            return u, self.cnt[np.searchsorted(self.uk, u)], uknd
        self.uk, self.cnt = u, c
        return u, c, uknd

    def count(self, keys: np.ndarray) -> np.ndarray:
        """Exact counts of ``keys`` (0 for keys not in the pane)."""
        if not self.uk.size:
            return np.zeros(keys.size, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.uk, keys), self.uk.size - 1)
        return np.where(self.uk[pos] == keys, self.cnt[pos], 0)

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key hashes, event indices (within their chunk) and chunk start offsets."""
        if self._flat is None:
            ch = self._chunks
            if not ch:
                return _EMPTY_U64, _EMPTY_I64, np.zeros(1, dtype=np.int64)
            starts = np.cumsum([0, *(c[1].size for c in ch[:-1])])
            kh = ch[0][1] if len(ch) == 1 else np.concatenate([c[1] for c in ch])
            ev = ch[0][2] if len(ch) == 1 else np.concatenate([c[2] for c in ch])
            self._flat = (kh, ev, starts)
        return self._flat

    def positions(self, key: int) -> np.ndarray:
        """Indices (into :meth:`flat`) of the occurrences of ``key``, in sequence order."""
        return np.flatnonzero(self.flat()[0] == U64(key))

    def events_at(self, pos: np.ndarray) -> list[Event]:
        _, ev, starts = self.flat()
        chunk = np.searchsorted(starts, pos, side="right") - 1
        ch = self._chunks
        return [ch[c][0][i] for c, i in zip(chunk.tolist(), ev[pos].tolist())]

    def only(self, keep_kind: np.ndarray) -> _Pane:
        """A pane holding only the occurrences whose kind code has ``keep_kind`` set."""
        out = _Pane(self.pid)
        for events, kh, ev, kind in self._chunks:
            m = keep_kind[kind]
            if m.any():
                ev = ev[m]
                st = _run_starts(ev)
                compact = [events[i] for i in ev[st].tolist()]  # not the whole batch
                out.add(compact, kh[m], np.repeat(np.arange(st.size), _run_lengths(st, ev.size)), kind[m])
        return out

    def export(self) -> tuple[list[Event], np.ndarray, np.ndarray, np.ndarray]:
        """The events that carry occurrences (in order), key hashes, event indices into
        those events and kind codes."""
        events: list[Event] = []
        kh, ev, kind = [], [], []
        for evs, k, e, kd in self._chunks:
            st = _run_starts(e)
            ev.append(np.repeat(np.arange(len(events), len(events) + st.size), _run_lengths(st, e.size)))
            events += [evs[i] for i in e[st].tolist()]
            kh.append(k)
            kind.append(kd)
        cat = lambda a, empty: np.concatenate(a) if a else empty  # noqa: E731
        return events, cat(kh, _EMPTY_U64), cat(ev, _EMPTY_I64), cat(kind, _EMPTY_I64)


_PANE, _SPAN, _WAVE = 0, 1, 2  # the three tests
_TEST_NAMES = ("pane", "span", "wave")


class BurstKeys:
    """The keys of events, as burst counts them: the kinds it is configured for, and caches
    of the URL -> domain step. A detector holds one; a worker's ingest holds one alone to
    route events to shards (``BurstDetector.router``), without a detector's sketches."""

    def __init__(self, params: BurstParams) -> None:
        self._kinds = [k for k in _KINDS if k in params.key_kinds]
        self._domains: dict[str, str] = {}  # URL -> domain, "" for none (a cache: urlsplit is slow)
        self._hosts: dict[str, str | None] = {}  # scheme://netloc -> domain

    def occurrences(
        self, events: Sequence[Event], shard: Shard = WHOLE
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """Every (event, key) of the batch whose key is ``shard``'s, in sequence order (by
        event, then kind in :data:`_KINDS` order, then position in the event): event indices,
        key hashes, kind codes and ``kid`` indexing ``vals`` (the raw values, grouped by kind).

        A key hash is the seeded hash of the raw value (hashtag, URL, domain, object id;
        a text's fingerprint is already one) mixed with its kind, so no ``kind:value``
        string is built for the ~680k occurrences a day of the generator mix; the string
        is made for alerting keys only.
        """
        n = len(events)
        idx: list[np.ndarray] = []
        strs: list[str] = []  # values hashed as strings (every kind but text)
        vals: list[Any] = []
        codes: list[int] = []
        text_h = None
        ui: np.ndarray | None = None
        uv: list[str] = []
        for code, kind in enumerate(_KINDS):
            if kind not in self._kinds:
                continue
            if kind == "hashtag":
                tags = list(map(_tags, events))
                ii, vv = _spread(tags, n)
            elif kind in ("url", "domain"):
                if ui is None:
                    urls = list(map(_urls, events))
                    ui, uv = _spread(urls, n)
                if kind == "url":
                    ii, vv = ui, uv
                else:
                    if len(self._domains) > _CACHE_MAX:  # bounded; cleared between batches only
                        self._domains.clear()
                        self._hosts.clear()
                    get = self._domains.get
                    dv = list(map(get, uv))  # domain, "" for none; None: not cached
                    if None in dv:
                        for u in dict.fromkeys(compress(uv, map(is_, dv, repeat(None)))):
                            self._domain(u)
                        dv = list(map(get, uv))
                    if ui.size > 1 and bool((ui[1:] == ui[:-1]).any()):  # an event with several URLs: distinct domains
                        pairs = list(dict.fromkeys((i, d) for i, d in zip(ui.tolist(), dv) if d))
                        ii = np.array([i for i, _ in pairs], dtype=np.int64)
                        vv = [d for _, d in pairs]
                    else:
                        has = np.fromiter(map(bool, dv), dtype=bool, count=len(dv))
                        ii, vv = ui[has], list(filter(None, dv))
            elif kind == "object":
                objs = list(map(_obj, events))  # the parser makes an empty object_id None
                ii = np.flatnonzero(np.fromiter(map(bool, objs), dtype=bool, count=n))
                vv = list(filter(None, objs))
            else:
                with_text = [i for i, e in enumerate(events) if e.text]
                sh = shingle_batch([events[i].text or "" for i in with_text], "word", _WHOLE_TEXT)
                has = np.flatnonzero(np.diff(sh.offsets)).tolist()  # texts with at least one word
                ii = np.array([with_text[d] for d in has], dtype=np.int64)
                text_h = sh.hashes
                vv = text_h.tolist()
            idx.append(ii)
            vals += vv
            codes.append(code)
            if kind != "text":
                strs += vv
        kinds = np.repeat(np.array(codes, dtype=np.int64), [ii.size for ii in idx])
        raw = hash_strings(strs)
        if text_h is not None:
            raw = np.concatenate((raw, text_h))  # text is the last kind
        kh = fmix64(raw ^ _KIND_SALT[kinds])
        ev_idx = np.concatenate(idx) if len(idx) > 1 else idx[0]
        kid = np.argsort(ev_idx, kind="stable") if len(idx) > 1 else np.arange(ev_idx.size)  # stable: merges the per-kind runs
        s, n = shard
        if n > 1:  # this shard's keys only
            kid = kid[kh[kid] % U64(n) == s]
        return ev_idx[kid], kh[kid], kinds[kid], kid, vals

    def route(self, events: Sequence[Event], n: int) -> list[np.ndarray]:
        """The events that carry a key of each of ``n`` shards (an event with keys in several
        goes to each of them; an event without keys to none)."""
        ev_idx, kh, _, _, _ = self.occurrences(events)
        shard = (kh % U64(n)).astype(np.int64)
        return [np.unique(ev_idx[shard == s]) for s in range(n)]

    def _domain(self, url: str) -> str:
        """:func:`url_domain` ("" for none), cached per URL and per ``scheme://netloc`` prefix
        (the host depends on nothing else, and urlsplit costs ~10 us: 12k distinct URLs a
        day in the generator mix)."""
        at = url.find("://")
        if at < 0:
            d = None
        else:
            m = _NETLOC_END.search(url, at + 3)
            prefix = url if m is None else url[: m.start()]
            if prefix.isprintable() and " " not in prefix:
                d = self._hosts.get(prefix, "")
                if d == "":
                    d = self._hosts[prefix] = url_domain(prefix)
            else:
                d = url_domain(url)
        self._domains[url] = d = d or ""
        return d


class BurstDetector(KeyedDetector[BurstParams]):  # a key's counts, baseline and alerts are its own
    NAME: ClassVar[str] = "burst"
    STATE_VERSION: ClassVar[int] = 2

    def __init__(self, params: BurstParams, shard: Shard = WHOLE) -> None:
        super().__init__(params, shard)
        self._cms = SlidingCountMin(
            params.pane_s, params.window_s, params.cms_epsilon, params.cms_delta,
            conservative=params.conservative_update,
        )  # fmt: skip
        self._keys = BurstKeys(params)
        self._wave_kind = np.array([k in params.wave_kinds for k in _KINDS])  # wave test instead of pane test
        self._span_kind = np.array([k in params.span_kinds and params.span_panes > 1 for k in _KINDS])
        self._params_json = params.model_dump(mode="json")  # shared by every alert: read-only
        self._pane: int | None = None  # current pane id
        self._first_pane = 0
        self._armed = False  # min_history_panes earlier panes seen
        self._span_armed = False  # ... and min_history_panes before the span
        self._cur = _Pane(0)  # occurrences of the current pane
        self._hist: list[_Pane] = []  # the span's earlier panes (span kinds only), oldest first
        self._late_k: list[np.ndarray] = []  # key hashes of occurrences late for an earlier pane
        self._late_q: list[np.ndarray] = []  # ... and their panes
        # key -> [first alert pane (the group id), revision, pane of the last alert, window start pane]
        self._groups: dict[str, list[int]] = {}
        self._crit: dict[float, int] = {}  # λ -> critical count (a cache of a pure function)
        self._recent: dict[int, int] = {}  # key hash -> pane of its last alert, if within the span

    # -- driving ---------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        """Vectorised over the batch; Python work only for keys that reach the bar.

        The occurrences (event, key) of the batch are put in sequence order as arrays; the
        pane of each comes from the running maximum of the panes of the events that carry
        keys (events without keys do not move a burst's pane, watermarks do). The batch is
        cut where that pane changes; per segment, the on-time occurrences are appended to
        the pane and its exact per-key counts updated with one sort, the late ones queued
        for the count-min. Only keys whose count reaches ``min_count`` get a test (one
        batched count-min query for the new ones, λ fixed for the pane) and only those at
        or above their critical count are walked in Python, occurrence by occurrence, to
        find the crossing event (the count and the distinct accounts).
        """
        ev_idx, kh, kind, kid, vals = self._keys.occurrences(events, self.shard)
        if ev_idx.size == 0:
            return []
        p = self.params
        st = _run_starts(ev_idx)  # events that carry keys, their panes, and each occurrence's
        ke = ev_idx[st]
        ts = self.times
        q_ev = np.floor(ts[ke] / p.pane_s).astype(np.int64)
        run = np.maximum.accumulate(q_ev)
        if self._pane is not None:
            np.maximum(run, self._pane, out=run)
        reps = _run_lengths(st, ev_idx.size)
        o_q, o_run = np.repeat(q_ev, reps), np.repeat(run, reps)
        late = o_q < o_run
        found: list[tuple[int, Alert]] = []
        bounds = _run_starts(o_run).tolist() + [ev_idx.size]
        for a, b in zip(bounds[:-1], bounds[1:]):
            pane = int(o_run[a])
            if self._pane is None or pane > self._pane:
                self._roll(pane)
            lm = late[a:b]
            if lm.any():
                self._late_k.append(kh[a:b][lm])
                self._late_q.append(o_q[a:b][lm])
                on = np.flatnonzero(~lm) + a
            else:
                on = np.arange(a, b)
            if on.size:
                found += self._segment(events, ev_idx, kh, kind, kid, vals, on)
        if len(found) > 1:
            found.sort(key=lambda x: x[0])
        return [al for _, al in found]

    def _segment(
        self, events: Sequence[Event], ev_idx: np.ndarray, kh: np.ndarray, kind: np.ndarray, kid: np.ndarray,
        vals: list[Any], on: np.ndarray,
    ) -> list[tuple[int, Alert]]:
        """Add the on-time occurrences ``on`` (batch positions) to the current pane; alerts."""
        p = self.params
        cur = self._cur
        offset = cur.size
        u, tot, ukind = cur.add(events, kh[on], ev_idx[on], kind[on])
        hot: dict[int, dict[int, tuple[int, int]]] = {}  # key -> {test: (critical count, span count before)}
        alerted = cur.alerted
        if self._armed:
            reach = tot >= p.min_count
            if reach.any():
                keys = u[reach].tolist()
                self._need(_PANE, keys)
                tests = cur.tests
                wave = self._wave_kind[ukind[reach]].tolist()
                for k, c, w in zip(keys, tot[reach].tolist(), wave):
                    crit = tests[_PANE, k][2]
                    if c >= crit and k not in alerted:
                        hot[k] = {_WAVE if w else _PANE: (crit, 0)}
        if self._span_armed:
            sk = self._span_kind[ukind]
            if sk.any():
                us, ts_ = u[sk], tot[sk]
                before = np.zeros(us.size, dtype=np.int64)
                for h in self._hist:
                    before += h.count(us)
                span = ts_ + before
                reach = span >= p.min_count
                if reach.any():
                    keys = us[reach].tolist()
                    self._need(_SPAN, keys)
                    tests, recent = cur.tests, self._recent
                    for k, c, b in zip(keys, span[reach].tolist(), before[reach].tolist()):
                        crit = tests[_SPAN, k][2]
                        if c >= crit and k not in alerted and k not in recent:
                            hot.setdefault(k, {})[_SPAN] = (crit, b)
        out = []
        for k, tests_ in hot.items():
            crossing = self._walk(k, tests_, offset)
            if crossing is None:
                continue
            j, test, count, accounts, samples, extra = crossing
            at = int(on[j - offset])  # batch position of the crossing occurrence
            i = int(ev_idx[at])
            key = _key(int(kind[at]), vals[int(kid[at])])
            alert = self._alert(key, k, test, count, accounts, samples, extra, events[i].ts, float(self.marks[i]))
            out.append((at, alert))
        return out

    def _walk(
        self, k: int, tests: dict[int, tuple[int, int]], offset: int
    ) -> tuple[int, int, int, dict[str, int], list[Event], dict[str, Any]] | None:
        """The first occurrence of key ``k`` in the current pane at or after ``offset`` (its
        index there) where one of ``tests`` crosses: the test, its count, accounts, sample
        posts and test-specific evidence. Earlier occurrences did not cross when they came
        (they were walked then, and a test at an occurrence sees only what came before it),
        so they only add to the counts."""
        cur = self._cur
        pos = cur.positions(k)
        evs = cur.events_at(pos)
        first = int(np.searchsorted(pos, offset))
        found = []
        if _WAVE in tests:
            found.append(self._walk_wave(evs, first, tests[_WAVE][0]))
        if _PANE in tests or _SPAN in tests:
            found.append(self._walk_counts(k, evs, first, tests))
        hits = [f for f in found if f is not None]
        if not hits:
            return None
        j, test, count, accounts, samples, extra = min(hits, key=lambda f: (f[0], f[1]))
        return int(pos[j]), test, count, accounts, samples, extra

    def _walk_counts(
        self, k: int, evs: list[Event], first: int, tests: dict[int, tuple[int, int]]
    ) -> tuple[int, int, int, dict[str, int], list[Event], dict[str, Any]] | None:
        """Pane and span tests: the count (of the pane, of the span) and distinct accounts."""
        p = self.params
        cur = self._cur
        min_acc = p.min_accounts
        acc_pane: dict[str, int] = {}
        acc_span: dict[str, int] = {}
        earlier: list[Event] = []
        span_counts: list[int] = []
        pane_crit = tests[_PANE][0] if _PANE in tests else None
        span_crit, before_n = tests.get(_SPAN, (None, 0))
        if span_crit is not None:
            by_pid = {}
            for h in self._hist:
                e = h.events_at(h.positions(k))
                by_pid[h.pid] = len(e)
                earlier += e
            span_counts = [by_pid.get(q, 0) for q in range(cur.pid - p.span_panes + 1, cur.pid)]
            for e in earlier:
                acc_span[e.account_id] = acc_span.get(e.account_id, 0) + 1
        for j, e in enumerate(evs):
            a = e.account_id
            acc_pane[a] = acc_pane.get(a, 0) + 1
            if span_crit is not None:
                acc_span[a] = acc_span.get(a, 0) + 1
            if j < first:
                continue
            if pane_crit is not None and j + 1 >= pane_crit and len(acc_pane) >= min_acc:
                return j, _PANE, j + 1, acc_pane, evs[: min(j + 1, p.max_samples)], {}
            if span_crit is not None and before_n + j + 1 >= span_crit and len(acc_span) >= min_acc:
                samples = (earlier + evs[: j + 1])[: p.max_samples]
                span = {"start": (cur.pid - p.span_panes + 1) * p.pane_s, "end": (cur.pid + 1) * p.pane_s}
                return j, _SPAN, before_n + j + 1, acc_span, samples, {"span": span, "span_counts": [*span_counts, j + 1]}
        return None

    def _walk_wave(
        self, evs: list[Event], first: int, crit: int
    ) -> tuple[int, int, int, dict[str, int], list[Event], dict[str, Any]] | None:
        """Wave test: the key's occurrences in ``(ts - wave_s, ts]`` among those so far (the
        pane's) reach ``crit``, from ``min_accounts`` distinct accounts."""
        p = self.params
        w = p.wave_s
        ts = np.fromiter(map(_ts, evs), dtype=np.float64, count=len(evs))
        ordered = ts.size < 2 or bool(np.all(ts[1:] >= ts[:-1]))
        if ordered:
            lo = np.searchsorted(ts, ts - w, side="right")
            trail = np.arange(1, ts.size + 1) - lo
        else:  # out of order (late events within the lateness bound): count each prefix
            trail = np.array([int(np.count_nonzero(ts[: j + 1] > ts[j] - w)) for j in range(ts.size)])
        for j in (np.flatnonzero(trail[first:] >= crit) + first).tolist():
            window = evs[int(lo[j]) : j + 1] if ordered else [e for e in evs[: j + 1] if e.ts > ts[j] - w]
            accounts: dict[str, int] = {}
            for e in window:
                accounts[e.account_id] = accounts.get(e.account_id, 0) + 1
            if len(accounts) >= p.min_accounts:
                extra = {"wave": {"start": float(ts[j]) - w, "end": float(ts[j])}, "pane_count": j + 1}
                return j, _WAVE, int(trail[j]), accounts, window[: p.max_samples], extra
        return None

    def _advance(self, watermark: float) -> list[Alert]:
        """Alerts are decided at events; a watermark in a later pane only closes the pane."""
        if math.isfinite(watermark) and self._pane is not None:
            pane = math.floor(watermark / self.params.pane_s)
            if pane > self._pane:
                self._roll(pane)
        return []

    # -- internals -------------------------------------------------------------------
    @classmethod
    def router(cls, params: BurstParams) -> BurstKeys:
        return BurstKeys(params)

    def begin(self, t: float) -> None:
        if self._pane is None:  # what the first event would do (``_process``): the warm-up counts from here
            self._roll(math.floor(t / self.params.pane_s))

    def _need(self, test: int, keys: list[int]) -> None:
        """λ, baseline counts (oldest first) and critical count of ``keys`` for ``test`` in
        the current pane, for those that have none yet.

        Pane test: the mean of the window's earlier panes. Span test: ``span_panes`` x the
        mean of the earlier panes before the span. The count-min changes only at pane
        boundaries, so these are the same whenever asked within a pane.
        """
        tests = self._cur.tests
        missing = [k for k in keys if (test, k) not in tests]
        if not missing:
            return
        p = self.params
        n = self._cms.n_panes
        k = min(n - 1, self._pane - self._first_pane)  # type: ignore[operator]
        if test == _SPAN:
            lo, hi, scale = n - 1 - k, n - p.span_panes, p.span_panes
        else:
            lo, hi, scale = n - 1 - k, n - 1, 1
        base = self._cms.query_panes(np.array(missing, dtype=U64))[:, lo:hi].tolist()
        crit = self._crit
        if len(crit) > _CACHE_MAX:
            crit.clear()
        width = hi - lo
        for h, b in zip(missing, base):
            lam = max(sum(b) / width, p.prior_rate_per_pane)
            lam = lam if scale == 1 else scale * lam
            c = crit.get(lam)
            if c is None:
                c = crit[lam] = critical_count(lam, p.max_p_value, p.min_count)
            if test == _SPAN:
                c = max(c, math.ceil(p.span_min_ratio * lam))
            tests[test, h] = (lam, b, c)

    def _alert(
        self, key: str, kh: int, test: int, count: int, accounts: dict[str, int], samples: list[Event],
        extra: dict[str, Any], ts: float, at: float,
    ) -> Alert:
        p = self.params
        pane = self._pane
        assert pane is not None
        self._cur.alerted.add(kh)
        self._recent[kh] = pane
        lam, base, crit = self._cur.tests[_SPAN if test == _SPAN else _PANE, kh]  # a wave has the pane's bar
        g = self._groups.get(key)
        if g is not None and g[2] == pane - 1:
            g[1] += 1
            g[2] = pane
        else:
            start = pane
            if test == _SPAN:  # the window starts with the key's first pane in the span
                counts = extra["span_counts"]
                start = pane - len(counts) + 1 + next(i for i, c in enumerate(counts) if c)
            g = self._groups[key] = [pane, 0, pane, start]
        logp = poisson_logsf(count, lam)
        top = sorted(accounts.items(), key=lambda kv: (-kv[1], kv[0]))
        evidence = {
            "test": _TEST_NAMES[test],
            "count": count,
            "expected": lam,
            "critical_count": crit,
            "baseline_mean": sum(base) / len(base),
            "baseline_counts": base,
            "p_value": math.exp(logp),
            "distinct_accounts": len(top),
            "top_accounts": [{"account_id": a, "posts": c} for a, c in top[:_TOP_EVIDENCE]],
            "sample_posts": [
                {"event_id": e.event_id, "account_id": e.account_id, "ts": e.ts,
                 "text": None if e.text is None else e.text[:_TEXT_CHARS]}
                for e in samples
            ],  # fmt: skip
            "pane": {"start": pane * p.pane_s, "end": (pane + 1) * p.pane_s},
            "detected_at": ts,
        }
        evidence.update(extra)
        return Alert(
            type=self.NAME,
            group_id=stable_id("bu-", key, g[0]),
            revision=g[1],
            score=-logp / math.log(10),
            window_start=g[3] * p.pane_s,
            window_end=(pane + 1) * p.pane_s,
            accounts=tuple(a for a, _ in top[: p.max_alert_accounts]),
            account_count=len(top),
            keys=(key,),
            evidence=evidence,
            detector_params=self._params_json,
            at=at,
        )

    def _roll(self, pane: int) -> None:
        """Close the current pane: its exact counts and the late events go into the
        count-min; its span-kind occurrences join the span's history."""
        p = self.params
        if self._pane is None:
            self._first_pane = pane
        else:
            cur = self._cur
            late_k = np.concatenate(self._late_k) if self._late_k else _EMPTY_U64
            late_q = np.concatenate(self._late_q) if self._late_q else _EMPTY_I64
            keys = np.concatenate((cur.uk, late_k))
            if keys.size:
                panes = np.concatenate((np.full(cur.uk.size, self._pane, dtype=np.int64), late_q))
                counts = np.concatenate((cur.cnt, np.ones(late_k.size, dtype=np.int64))).astype(U64)
                self._cms.update(keys, (panes + 0.5) * p.pane_s, counts)
            self._late_k, self._late_q = [], []
            self._groups = {k: g for k, g in self._groups.items() if g[2] >= pane - 1}
            self._recent = {k: q for k, q in self._recent.items() if q > pane - p.span_panes}
            if self._span_kind.any():
                kept = cur.only(self._span_kind)
                self._hist = [h for h in [*self._hist, kept] if h.pid > pane - p.span_panes and h.size]
        self._cms.advance((pane + 0.5) * p.pane_s)
        self._open(pane)
        self._cur = _Pane(pane)

    def _open(self, pane: int) -> None:
        self._pane = pane
        p = self.params
        seen = min(self._cms.n_panes - 1, pane - self._first_pane)
        self._armed = seen >= p.min_history_panes
        self._span_armed = bool(self._span_kind.any()) and seen - (p.span_panes - 1) >= p.min_history_panes

    # -- state -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        panes = []
        arrays = [np.frombuffer(self._cms.to_bytes(), dtype=np.uint8)]
        for pane in [*self._hist, self._cur]:
            events, kh, ev, kind = pane.export()
            panes.append({"pid": pane.pid, "events": [event_to_json(x).decode() for x in events]})
            arrays += [kh, ev, kind, np.array(sorted(pane.alerted), dtype=U64)]
        late_k = np.concatenate(self._late_k) if self._late_k else _EMPTY_U64
        late_q = np.concatenate(self._late_q) if self._late_q else _EMPTY_I64
        state = {"pane": self._pane, "first_pane": self._first_pane, "panes": panes, "groups": self._groups}
        recent_k = np.array(list(self._recent), dtype=U64)
        recent_q = np.array(list(self._recent.values()), dtype=np.int64)
        return state, [*arrays, late_k, late_q, recent_k, recent_q]

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self._cms = SlidingCountMin.from_bytes(arrays[0].tobytes(), expect=self._cms.params())
        self._first_pane = state["first_pane"]
        loaded = []
        for i, meta in enumerate(state["panes"]):  # arrays: count-min, 4 per pane, late, recent
            kh, ev, kind, alerted = arrays[1 + 4 * i : 5 + 4 * i]
            pane = _Pane(meta["pid"])
            events = [parse_event(s.encode()) for s in meta["events"]]
            if kh.size:
                pane.add(events, kh, ev, kind)  # type: ignore[arg-type]
            pane.alerted = set(alerted.tolist())
            loaded.append(pane)
        *self._hist, self._cur = loaded
        if state["pane"] is not None:
            self._open(state["pane"])
        late_k, late_q, recent_k, recent_q = arrays[-4:]
        self._recent = dict(zip(recent_k.tolist(), recent_q.tolist()))
        self._late_k = [late_k] if late_k.size else []
        self._late_q = [late_q] if late_q.size else []
        self._groups = state["groups"]
