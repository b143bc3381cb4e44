"""Burst: a key used far more in the current pane than its recent baseline predicts.

Keys are typed strings: ``hashtag:foo``, ``url:https://x/y``, ``domain:x``, ``object:123``,
``text:<16 hex>`` (the seeded hash of :func:`sketches.shingling.normalize` of the text).

**Statistic.** Time is cut into panes of ``pane_s``; the window holds the current pane and
``window_s / pane_s - 1`` earlier ones. For a key with exact count ``c`` in the current pane,
``λ = max(mean count per earlier pane, prior_rate_per_pane)`` and the p-value is the Poisson
upper tail ``P(X ≥ c | λ)`` (:func:`poisson_logsf`, summed in log space, no scipy); the
score is ``-log10 p``. An exact tail rather than MIDAS's χ² score, because χ² is an
approximation that fails where bursts start, at small counts against near-zero baselines,
and its value is not a probability that ``max_p_value`` could bound.

**Prior.** ``prior_rate_per_pane`` (0.5) floors λ: a key unseen for ``k`` panes has a 95 %
upper rate of ``3/k`` per pane (rule of three), 1.0 at the 3 panes of the warm-up and 0.27 at
the 11 of a full default window. As a floor it also keeps a rare key from being judged against
a near-zero mean; at λ = 0.5 the tail is below 1e-6 from 8 events on, so a new key alerts on
volume and breadth (``min_count``, ``min_accounts``), which is what a novelty burst is.

**Exact now, sketched before.** ``c``, the accounts and sample posts are exact, kept only for
keys active in the current pane (memory: one pane's activity plus the count-min ring). Earlier
panes are count-min estimates, which only over-count: an inflated baseline raises λ and p, so
a collision can hide a burst but never make one, and a key without events in the current pane
is never tested. A pane's exact counts enter the count-min when it closes, in one update with
the events that arrived late for earlier panes: conservative update depends on how keys are
grouped into batches, so updating at pane boundaries only keeps the sketch (and every
baseline) a function of the event sequence, and fixes λ for the whole pane.

**Timing.** A key alerts at the very event that makes it cross the bar — ``c ≥`` its critical
count (the smallest ``c ≥ min_count`` with ``p ≤ max_p_value``, computed once per key and
pane, as λ is fixed) with at least ``min_accounts`` distinct accounts — not at pane close: an
always-on tool should page within seconds, not up to ``pane_s`` later, and the crossing event
is a property of the event sequence, so every batching yields the same alerts. One alert per
key and pane; crossing again in the next pane is an ``update`` of the same group
(``stable_id("bu-", key, first pane)``). No alerts until ``min_history_panes`` earlier panes
were seen: on a cold start every key would look new.

**Evidence** (at the crossing event): ``count``, ``expected`` (λ), ``critical_count``,
``baseline_mean`` and ``baseline_counts`` (earlier panes, oldest first), ``p_value`` (0.0 when
below float range; the score keeps the magnitude), ``distinct_accounts``, ``top_accounts``,
``sample_posts`` (the key's first posts in the pane), ``pane`` and ``detected_at``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np

from detectors.base import Alert, Detector, stable_id
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
_ts = attrgetter("ts")
_tags = attrgetter("hashtags")
_urls = attrgetter("urls")
_obj = attrgetter("object_id")


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
    """Smallest ``c ≥ min_count`` with ``P(X ≥ c | lam) ≤ max_p`` (the tail falls as c grows)."""
    target = math.log(max_p)
    lo = min_count
    if poisson_logsf(lo, lam) <= target:
        return lo
    step = max(1, math.isqrt(int(lam)))
    hi = max(lo, int(lam)) + step
    while poisson_logsf(hi, lam) > target:  # invariant: lo fails, hi passes after the loop
        lo, step = hi, 2 * step
        hi += step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if poisson_logsf(mid, lam) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def _key(kind: int, value: Any) -> str:
    """The typed key string: ``hashtag:foo``, ``text:<16 hex>``, ..."""
    return f"text:{value:016x}" if _KINDS[kind] == "text" else f"{_KINDS[kind]}:{value}"


def _run_starts(s: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in ``s``."""
    first = np.empty(s.size, dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return np.flatnonzero(first)


class _Pane:
    """Exact on-time occurrences of one pane, in sequence order, and its per-key counts.

    One chunk per batch: the batch's events (a reference, not a copy), the occurrences'
    key hashes and event indices into it. ``uk`` / ``cnt`` are the distinct key hashes
    (sorted) and their counts so far.
    """

    __slots__ = ("pid", "_chunks", "_flat", "size", "uk", "cnt", "alerted", "tests")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._chunks: list[tuple[Sequence[Event], np.ndarray, np.ndarray]] = []
        self._flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.size = 0
        self.uk = np.empty(0, dtype=U64)
        self.cnt = np.empty(0, dtype=np.int64)
        self.alerted: set[int] = set()  # key hashes that alerted in this pane
        self.tests: dict[int, tuple[float, list[int], int]] = {}  # key hash -> λ, baseline, critical count

    def add(self, events: Sequence[Event], kh: np.ndarray, ev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append occurrences (``ev`` indexes ``events``); returns the distinct keys added and
        their new totals in the pane."""
        self._chunks.append((events, kh, ev))
        self._flat = None
        self.size += kh.size
        s = np.sort(kh)
        st = _run_starts(s)
        u, c = s[st], np.diff(st, append=s.size)
        if self.uk.size:
            both = np.concatenate((self.uk, u))
            order = np.argsort(both, kind="stable")
            srt = both[order]
            st = _run_starts(srt)
            self.uk = srt[st]
            self.cnt = np.add.reduceat(np.concatenate((self.cnt, c))[order], st)
            return u, self.cnt[np.searchsorted(self.uk, u)]
        self.uk, self.cnt = u, c
        return u, c

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key hashes, event indices (within their chunk) and chunk start offsets."""
        if self._flat is None:
            ch = self._chunks
            if not ch:
                return np.empty(0, dtype=U64), np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
            sizes = [c[1].size for c in ch]
            starts = np.cumsum([0, *sizes[:-1]])
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

    def export(self) -> tuple[list[Event], np.ndarray, np.ndarray]:
        """The events that carry occurrences (in order), key hashes, event indices into them."""
        kh, ev, starts = self.flat()
        events: list[Event] = []
        remap = np.empty(ev.size, dtype=np.int64)
        for (evs, k, e), s0 in zip(self._chunks, starts.tolist()):
            st = _run_starts(e)
            remap[s0 : s0 + e.size] = np.repeat(np.arange(len(events), len(events) + st.size), np.diff(st, append=e.size))
            events += [evs[i] for i in e[st].tolist()]
        return events, kh, remap


class BurstDetector(Detector[BurstParams]):
    NAME: ClassVar[str] = "burst"
    STATE_VERSION: ClassVar[int] = 2

    def __init__(self, params: BurstParams) -> None:
        super().__init__(params)
        self._cms = SlidingCountMin(
            params.pane_s, params.window_s, params.cms_epsilon, params.cms_delta,
            conservative=params.conservative_update,
        )  # fmt: skip
        self._kinds = [k for k in _KINDS if k in params.key_kinds]
        self._pane: int | None = None  # current pane id
        self._first_pane = 0
        self._armed = False  # min_history_panes earlier panes seen
        self._cur = _Pane(0)  # occurrences of the current pane
        self._late_k: list[np.ndarray] = []  # key hashes of occurrences late for an earlier pane
        self._late_q: list[np.ndarray] = []  # ... and their panes
        self._groups: dict[str, list[int]] = {}  # key -> [first pane, revision, pane of last alert]
        self._domains: dict[str, str | None] = {}  # URL -> domain (a cache: urlsplit is slow)
        self._hosts: dict[str, str | None] = {}  # scheme://netloc -> domain
        self._crit: dict[float, int] = {}  # λ -> critical count (a cache of a pure function)

    # -- driving ---------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        """Vectorised over the batch; Python work only for keys that reach the bar.

        The occurrences (event, key) of the batch are put in sequence order as arrays; the
        pane of each comes from the running maximum of the panes of the events that carry
        keys (events without keys do not move a burst's pane, watermarks do). The batch is
        cut where that pane changes; per segment, the on-time occurrences are appended to
        the pane and its exact per-key counts updated with one sort, the late ones queued
        for the count-min. Only keys whose pane count reaches ``min_count`` get a test
        (one batched count-min query for the new ones, λ fixed for the pane) and only
        those at or above their critical count are walked in Python, occurrence by
        occurrence, to find the crossing event (the count and the distinct accounts).
        """
        ev_idx, kh, kind, kid, vals = self._occurrences(events)
        if ev_idx.size == 0:
            return []
        p = self.params
        st = _run_starts(ev_idx)  # events that carry keys, their panes, and each occurrence's
        ke = ev_idx[st]
        ts = np.fromiter(map(_ts, events), dtype=np.float64, count=len(events))
        q_ev = np.floor(ts[ke] / p.pane_s).astype(np.int64)
        run = np.maximum.accumulate(q_ev)
        if self._pane is not None:
            np.maximum(run, self._pane, out=run)
        reps = np.diff(st, append=ev_idx.size)
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
        u, tot = cur.add(events, kh[on], ev_idx[on])
        if not self._armed:
            return []
        reach = tot >= p.min_count
        if not reach.any():
            return []
        tot_of = dict(zip(u[reach].tolist(), tot[reach].tolist()))
        cand = [k for k in tot_of if k not in cur.alerted]
        missing = [k for k in cand if k not in cur.tests]
        if missing:
            self._tests(missing)
        hot = [k for k in cand if tot_of[k] >= cur.tests[k][2]]
        if not hot:
            return []
        marks = self.marks
        out = []
        for k in hot:
            crit = cur.tests[k][2]
            pos = cur.positions(k)
            evs = cur.events_at(pos)
            accounts: dict[str, int] = {}
            for j, e in enumerate(evs):
                acc = e.account_id
                accounts[acc] = accounts.get(acc, 0) + 1
                if j + 1 >= crit and len(accounts) >= p.min_accounts:
                    at = int(on[int(pos[j]) - offset])  # batch position of the crossing occurrence
                    i = int(ev_idx[at])
                    key = _key(int(kind[at]), vals[int(kid[at])])
                    out.append((at, self._alert(key, k, j + 1, accounts, evs[: p.max_samples], e.ts, float(marks[i]))))
                    break
        return out

    def _advance(self, watermark: float) -> list[Alert]:
        """Alerts are decided at events; a watermark in a later pane only closes the pane."""
        if math.isfinite(watermark) and self._pane is not None:
            pane = math.floor(watermark / self.params.pane_s)
            if pane > self._pane:
                self._roll(pane)
        return []

    # -- internals -------------------------------------------------------------------
    def _occurrences(
        self, events: Sequence[Event]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """Every (event, key) of the batch, in sequence order (by event, then kind in
        :data:`_KINDS` order, then position in the event): event indices, key hashes, kind
        codes and ``kid`` indexing ``vals`` (the raw values, grouped by kind).

        A key hash is the seeded hash of the raw value (hashtag, URL, domain, object id;
        a text's fingerprint is already one) mixed with its kind, so no ``kind:value``
        string is built for the ~680k occurrences a day of the generator mix; the string
        is made for alerting keys only.
        """
        idx: list[list[int]] = []
        strs: list[str] = []  # values hashed as strings (every kind but text)
        vals: list[Any] = []
        codes: list[int] = []
        text_h = None
        urls = ui = uv = None
        for code, kind in enumerate(_KINDS):
            if kind not in self._kinds:
                continue
            if kind == "hashtag":
                tags = list(map(_tags, events))
                ii = [i for i, t in enumerate(tags) if t for _ in t]
                vv = [h for t in tags if t for h in t]
            elif kind in ("url", "domain"):
                if urls is None:
                    urls = list(map(_urls, events))
                    ui = [i for i, t in enumerate(urls) if t for _ in t]
                    uv = [u for t in urls if t for u in t]
                assert ui is not None and uv is not None
                if kind == "url":
                    ii, vv = ui, uv
                else:
                    get = self._domains.get
                    dv = [get(u, "") for u in uv]
                    if "" in dv:
                        dv = [d if d != "" else self._domain(u) for u, d in zip(uv, dv)]
                    pairs = [(i, d) for i, d in zip(ui, dv) if d]
                    if len(set(ui)) < len(ui):  # an event with several URLs: its distinct domains
                        pairs = list(dict.fromkeys(pairs))
                    ii, vv = [i for i, _ in pairs], [d for _, d in pairs]
            elif kind == "object":
                objs = list(map(_obj, events))
                ii = [i for i, o in enumerate(objs) if o is not None]
                vv = [o for o in objs if o is not None]
            else:
                with_text = [i for i, e in enumerate(events) if e.text]
                sh = shingle_batch([events[i].text or "" for i in with_text], "word", _WHOLE_TEXT)
                has = np.flatnonzero(np.diff(sh.offsets)).tolist()  # texts with at least one word
                ii = [with_text[d] for d in has]
                text_h = sh.hashes
                vv = text_h.tolist()
            idx.append(ii)
            vals += vv
            codes.append(code)
            if kind != "text":
                strs += vv
        n_per = [len(ii) for ii in idx]
        kinds = np.repeat(np.array(codes, dtype=np.int64), n_per)
        raw = hash_strings(strs)
        if text_h is not None:
            raw = np.concatenate((raw, text_h))  # text is the last kind
        kh = fmix64(raw ^ _KIND_SALT[kinds])
        ev_idx = np.concatenate([np.array(ii, dtype=np.int64) for ii in idx])
        if len(idx) > 1:
            kid = np.argsort(ev_idx, kind="stable")  # stable: merges the per-kind runs
            return ev_idx[kid], kh[kid], kinds[kid], kid, vals
        return ev_idx, kh, kinds, np.arange(ev_idx.size), vals

    def _domain(self, url: str) -> str | None:
        """:func:`url_domain`, cached per URL and per ``scheme://netloc`` prefix (the host
        depends on nothing else, and urlsplit costs ~10 us: 12k distinct URLs a day here)."""
        d = self._domains.get(url, "")
        if d != "":
            return d
        if len(self._domains) > _CACHE_MAX:
            self._domains.clear()
            self._hosts.clear()
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
        self._domains[url] = d
        return d

    def _tests(self, hashes: list[int]) -> None:
        """λ, baseline counts (oldest first) and critical count of keys for the current pane.

        The count-min changes only at pane boundaries, so these are the same whenever asked.
        """
        p = self.params
        n = self._cms.n_panes
        k = min(n - 1, self._pane - self._first_pane)  # type: ignore[operator]
        base = self._cms.query_panes(np.array(hashes, dtype=U64))[:, n - 1 - k : n - 1].tolist()
        crit = self._crit
        if len(crit) > _CACHE_MAX:
            crit.clear()
        tests = self._cur.tests
        for h, b in zip(hashes, base):
            lam = max(sum(b) / k, p.prior_rate_per_pane)
            c = crit.get(lam)
            if c is None:
                c = crit[lam] = critical_count(lam, p.max_p_value, p.min_count)
            tests[h] = (lam, b, c)

    def _alert(
        self, key: str, kh: int, count: int, accounts: dict[str, int], samples: list[Event], ts: float, at: float
    ) -> Alert:
        p = self.params
        pane = self._pane
        assert pane is not None
        self._cur.alerted.add(kh)
        lam, base, crit = self._cur.tests[kh]
        g = self._groups.get(key)
        if g is not None and g[2] == pane - 1:
            g[1] += 1
            g[2] = pane
        else:
            g = self._groups[key] = [pane, 0, pane]
        logp = poisson_logsf(count, lam)
        top = sorted(accounts.items(), key=lambda kv: (-kv[1], kv[0]))
        return Alert(
            type=self.NAME,
            group_id=stable_id("bu-", key, g[0]),
            revision=g[1],
            score=-logp / math.log(10),
            window_start=g[0] * p.pane_s,
            window_end=(pane + 1) * p.pane_s,
            accounts=tuple(a for a, _ in top[: p.max_alert_accounts]),
            account_count=len(top),
            keys=(key,),
            evidence={
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
            },
            detector_params=p.model_dump(mode="json"),
            at=at,
        )

    def _roll(self, pane: int) -> None:
        """Close the current pane: its exact counts and the late events go into the count-min."""
        p = self.params
        if self._pane is None:
            self._first_pane = pane
        else:
            cur = self._cur
            late_k = np.concatenate(self._late_k) if self._late_k else np.empty(0, dtype=U64)
            late_q = np.concatenate(self._late_q) if self._late_q else np.empty(0, dtype=np.int64)
            keys = np.concatenate((cur.uk, late_k))
            if keys.size:
                panes = np.concatenate((np.full(cur.uk.size, self._pane, dtype=np.int64), late_q))
                counts = np.concatenate((cur.cnt, np.ones(late_k.size, dtype=np.int64))).astype(U64)
                self._cms.update(keys, (panes + 0.5) * p.pane_s, counts)
            self._late_k, self._late_q = [], []
            self._groups = {k: g for k, g in self._groups.items() if g[2] >= pane - 1}
        self._cms.advance((pane + 0.5) * p.pane_s)
        self._open(pane)
        self._cur = _Pane(pane)

    def _open(self, pane: int) -> None:
        self._pane = pane
        self._armed = min(self._cms.n_panes - 1, pane - self._first_pane) >= self.params.min_history_panes

    # -- state -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        cur = self._cur
        events, fkh, fev = cur.export()
        state = {
            "pane": self._pane,
            "first_pane": self._first_pane,
            "events": [event_to_json(x).decode() for x in events],
            "groups": self._groups,
        }
        late_k = np.concatenate(self._late_k) if self._late_k else np.empty(0, dtype=U64)
        late_q = np.concatenate(self._late_q) if self._late_q else np.empty(0, dtype=np.int64)
        alerted = np.array(sorted(cur.alerted), dtype=U64)
        arrays = [np.frombuffer(self._cms.to_bytes(), dtype=np.uint8), fkh, fev.astype(np.int64), late_k, late_q, alerted]
        return state, arrays

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        cms, fkh, fev, late_k, late_q, alerted = arrays
        self._cms = SlidingCountMin.from_bytes(cms.tobytes(), expect=self._cms.params())
        self._first_pane = state["first_pane"]
        if state["pane"] is not None:
            self._open(state["pane"])
            cur = self._cur = _Pane(state["pane"])
            events = [parse_event(s.encode()) for s in state["events"]]
            if fkh.size:
                cur.add(events, fkh, fev)  # type: ignore[arg-type]
            cur.alerted = set(alerted.tolist())
        self._late_k = [late_k] if late_k.size else []
        self._late_q = [late_q] if late_q.size else []
        self._groups = state["groups"]
