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

import functools
import math
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np

from detectors.base import Alert, Detector, stable_id
from detectors.events import Event, event_to_json, parse_event, url_domain
from detectors.params import BurstParams
from sketches.countmin import SlidingCountMin
from sketches.hashing import hash_strings
from sketches.shingling import shingle_batch

_TEXT_CHARS = 200  # sample post text is cut to this many characters
_TOP_EVIDENCE = 10  # accounts with their post counts in the evidence
_WHOLE_TEXT = 1 << 30  # a word n-gram longer than any text: its one shingle is the whole text
_REL_TOL = 1e-17  # series stop when a term no longer changes the sum

_domain = functools.lru_cache(maxsize=1 << 16)(url_domain)  # domains repeat; urlsplit is slow


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


class _Key:
    """Exact state of one key in the current pane."""

    __slots__ = ("count", "accounts", "samples", "alerted", "test")

    def __init__(self) -> None:
        self.count = 0
        self.accounts: dict[str, int] = {}  # account -> posts, first-seen order
        self.samples: list[Event] = []  # the key's first events in the pane
        self.alerted = False
        self.test: tuple[float, list[int], int] | None = None  # λ, baseline counts, critical count


class BurstDetector(Detector[BurstParams]):
    NAME: ClassVar[str] = "burst"
    STATE_VERSION: ClassVar[int] = 1

    def __init__(self, params: BurstParams) -> None:
        super().__init__(params)
        self._cms = SlidingCountMin(
            params.pane_s, params.window_s, params.cms_epsilon, params.cms_delta,
            conservative=params.conservative_update,
        )  # fmt: skip
        self._pane: int | None = None  # current pane id
        self._first_pane = 0
        self._armed = False  # min_history_panes earlier panes seen
        self._keys: dict[str, _Key] = {}  # keys active in the current pane
        self._late: list[tuple[str, int]] = []  # (key, pane) of events late for an earlier pane
        self._groups: dict[str, list[int]] = {}  # key -> [first pane, revision, pane of last alert]

    # -- driving ---------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        """One pass over the key occurrences in sequence order; dict work on current keys only.

        Tick batches hold a couple of events on sparse streams, where a per-batch numpy
        set-up (grouping keys by hash) cost 37 us per 2-event call against 3 us for this
        loop; on dense ones the per-key Python work dominated anyway. Panes advance with
        the events that carry keys (and with watermarks); the others do not concern a burst.
        """
        p = self.params
        pane_s, min_count, min_accounts, max_samples = p.pane_s, p.min_count, p.min_accounts, p.max_samples
        pane, state = self._pane, self._keys
        alerts: list[Alert] = []
        marks = self.marks
        last, late, q, a, e = -1, False, 0, "", events[0]
        for i, k in self._occurrences(events):
            if i != last:
                last, e = i, events[i]
                q, a = math.floor(e.ts / pane_s), e.account_id
                if pane is None or q > pane:
                    self._roll(q)
                    pane, state = q, self._keys
                late = q < pane
            if late:
                self._late.append((k, q))
                continue
            st = state.get(k)
            if st is None:
                st = state[k] = _Key()
            st.count += 1
            acc = st.accounts
            acc[a] = acc.get(a, 0) + 1
            if len(st.samples) < max_samples:
                st.samples.append(e)
            if st.count >= min_count and len(acc) >= min_accounts and self._armed and not st.alerted:
                if st.test is None:
                    st.test = self._test(k)
                if st.count >= st.test[2]:
                    alerts.append(self._alert(k, st, e.ts, float(marks[i])))
        return alerts

    def _advance(self, watermark: float) -> list[Alert]:
        """Alerts are decided at events; a watermark in a later pane only closes the pane."""
        if math.isfinite(watermark) and self._pane is not None:
            pane = math.floor(watermark / self.params.pane_s)
            if pane > self._pane:
                self._roll(pane)
        return []

    # -- internals -------------------------------------------------------------------
    def _occurrences(self, events: Sequence[Event]) -> list[tuple[int, str]]:
        """Every (event index, key) of the batch in sequence order: one comprehension per kind."""
        kinds = self.params.key_kinds
        occ: list[tuple[int, str]] = []
        if "hashtag" in kinds:
            occ += [(i, "hashtag:" + h) for i, e in enumerate(events) if e.hashtags for h in e.hashtags]
        if "url" in kinds:
            occ += [(i, "url:" + u) for i, e in enumerate(events) if e.urls for u in e.urls]
        if "domain" in kinds:
            occ += [
                (i, "domain:" + d)
                for i, e in enumerate(events) if e.urls
                for d in dict.fromkeys(map(_domain, e.urls)) if d
            ]  # fmt: skip
        if "object" in kinds:
            occ += [(i, "object:" + e.object_id) for i, e in enumerate(events) if e.object_id is not None]
        if "text" in kinds:
            with_text = [i for i, e in enumerate(events) if e.text]
            sh = shingle_batch([events[i].text or "" for i in with_text], "word", _WHOLE_TEXT)
            has = np.flatnonzero(np.diff(sh.offsets)).tolist()  # texts with at least one word
            occ += [(with_text[d], f"text:{h:016x}") for d, h in zip(has, sh.hashes.tolist())]
        if len(kinds) > 1:
            occ.sort(key=itemgetter(0))  # stable: merges the per-kind runs
        return occ

    def _test(self, key: str) -> tuple[float, list[int], int]:
        """λ, baseline counts (oldest first) and critical count of a key for the current pane.

        The count-min changes only at pane boundaries, so this is the same whenever asked.
        """
        p = self.params
        n = self._cms.n_panes
        k = min(n - 1, self._pane - self._first_pane)  # type: ignore[operator]
        base = self._cms.query_panes(hash_strings([key]))[0, n - 1 - k : n - 1].tolist()
        lam = max(sum(base) / k, p.prior_rate_per_pane)
        return lam, base, critical_count(lam, p.max_p_value, p.min_count)

    def _alert(self, key: str, st: _Key, ts: float, at: float) -> Alert:
        p = self.params
        pane = self._pane
        assert st.test is not None and pane is not None
        st.alerted = True
        lam, base, crit = st.test
        g = self._groups.get(key)
        if g is not None and g[2] == pane - 1:
            g[1] += 1
            g[2] = pane
        else:
            g = self._groups[key] = [pane, 0, pane]
        logp = poisson_logsf(st.count, lam)
        top = sorted(st.accounts.items(), key=lambda kv: (-kv[1], kv[0]))
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
                "count": st.count,
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
                    for e in st.samples
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
            keys = [*self._keys, *(k for k, _ in self._late)]
            panes = np.array([self._pane] * len(self._keys) + [q for _, q in self._late], dtype=np.float64)
            counts = np.array([st.count for st in self._keys.values()] + [1] * len(self._late), dtype=np.uint64)
            self._cms.update(hash_strings(keys), (panes + 0.5) * p.pane_s, counts)
            self._keys, self._late = {}, []
            self._groups = {k: g for k, g in self._groups.items() if g[2] >= pane - 1}
        self._cms.advance((pane + 0.5) * p.pane_s)
        self._open(pane)

    def _open(self, pane: int) -> None:
        self._pane = pane
        self._armed = min(self._cms.n_panes - 1, pane - self._first_pane) >= self.params.min_history_panes

    # -- state -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        state = {
            "pane": self._pane,
            "first_pane": self._first_pane,
            "keys": [
                [k, st.count, list(st.accounts.items()), [event_to_json(x).decode() for x in st.samples], st.alerted]
                for k, st in self._keys.items()
            ],
            "late": self._late,
            "groups": self._groups,
        }
        return state, [np.frombuffer(self._cms.to_bytes(), dtype=np.uint8)]

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self._cms = SlidingCountMin.from_bytes(arrays[0].tobytes(), expect=self._cms.params())
        self._first_pane = state["first_pane"]
        if state["pane"] is not None:
            self._open(state["pane"])
        for key, count, accounts, samples, alerted in state["keys"]:
            st = self._keys[key] = _Key()
            st.count, st.accounts, st.alerted = count, dict(accounts), alerted
            st.samples = [parse_event(s.encode()) for s in samples]  # type: ignore[misc]
        self._late = [(k, q) for k, q in state["late"]]
        self._groups = state["groups"]
