"""near_duplicate: copy-paste campaigns, i.e. many accounts posting edited copies of one text.

**Matching** (vectorised per batch; Python work only for texts that matched): texts of
``text_actions`` events (retweets and shares repeat their source by design) with at least
``min_tokens`` tokens are normalised, cut into word 2-grams and MinHashed (128 permutations,
datasketch's values); a pair is a near-duplicate when its estimated Jaccard is
``>= threshold``. Pairs from the same account are ignored. Per batch:

1. the text events are picked with C-level ``map``/``compress`` (no Python loop per event);
2. one :func:`~sketches.shingling.shingle_batch` call for all texts;
3. only the band columns (``bands x rows`` = 30 of the 128 permutations) are MinHashed
   for every text: the LSH needs nothing else, and the other 98 columns are computed, from
   the shingles kept per batch, only for the documents in a band-candidate pair (2.3 % of
   the documents on the generator mix, plus the earlier documents they pair with);
4. a :class:`~sketches.lsh.BandIndex` (sorted arrays of band keys in runs, the LSH's
   windowed band dictionary without a Python call per item) gives each document's
   candidates among the documents live at its insertion and the live head as of each
   document, so the store below expires with it without a loop over documents;
5. the Jaccard estimates of all candidate pairs at once; Python runs only for the
   documents with a near-duplicate.

Steps 1-5 are :class:`~detectors.nd_bands.BandMatcher`'s, which depend on the documents alone;
they split by LSH band (``work.shards = {near_duplicate = n}``: band parts, each a
:class:`~detectors.nd_bands.NearDuplicatePart`, merged by :class:`NearDuplicateParts`), and
what follows here (clusters, repeat posters, links, alerts) is fed their
:class:`~detectors.nd_bands.Bands` alike whether one matcher of every band runs in-process or
the parts run elsewhere. This part keeps only the events of documents in a pair.

Measured on the generator mix (691 k events, 258 k texts; ``/tmp/prof/prof.py``: this
detector alone, pre-parsed events, replay-sized batches; wall seconds, best of 3 beside the
code before in the same run, one other job on the 2-core machine): 3.36 s before -> 1.07 s
(1.10 s in a second such run against 3.55 s). The vectorising alone left the alerts
byte-identical; the linked waves below change them on purpose. Where it goes now (CPU s, a stage
timer): shingling 0.38 (one ``_prepare`` call per post 0.14, numpy tokenising 0.11, n-gram
spans and hashing 0.13), band index 0.26, MinHash 0.19 (band columns 0.14, completion
0.05), picking text events 0.10, band keys 0.03, storing documents 0.03, the rest of the
batch loop 0.1, and 0.1 outside this detector (the pipeline's and base class's pass over
every event for its timestamp). Before (3.6 CPU s): the WindowedLSH 1.9 (its per-item
Python loop over dict buckets, insertion and expiry), shingling 0.7, MinHash of all 128
columns 0.56, per-document Python lists 0.35. Small batches: 200 k events in calls of 50
events cost 2.5 CPU s (2.2 s before: the numpy calls per batch), of 1000 events 0.52 s
(1.03 s before).

**Defaults, measured** on the synthetic generator (6 seeds x 24 h, 142 copy_paste waves;
"capture" = share of a wave's texts in its largest cluster, strong / medium / weak waves):

* word 2-grams at 0.5: capture 0.998 / 0.997 / 0.955; at 0.6: 0.995 / 0.976 / 0.82; at 0.8
  (the old default): 0.89 / 0.73 / 0.27. Word 1-grams at 0.7 capture as well (1.0 / 0.997 /
  0.95), but same-topic posts share twice as many 1-grams (max exact J 0.29 vs 0.14 for
  2-grams, ``tests/sketches/test_shingling.py``), which feeds the LSH more candidates on a
  topical real stream; word 3-grams (0.99 / 0.95 / 0.65) and char 4-grams at 0.6 (0.999 /
  0.993 / 0.90, 5x the shingles) do worse. Random organic pairs reach J 0.22 at most (2-grams,
  3 M pairs), so 0.5 leaves a wide margin; pairs of weak-wave copies (3.5 edits each) are
  >= 0.5 in 78 % of cases, and one match per copy suffices to join the cluster.
* bands: ``choose_bands(0.5)`` gives 26 x 3; each band costs 3 MinHash columns for every
  text and 1 entry per text in the band index (it was ~1.3 us per text of dict work when
  this was measured), so bands are capped at ``max_lsh_bands`` = 10 (rows stay 3). 10 x 3
  finds a J = 0.5 pair with probability 0.74 instead of 0.97, yet captures waves the same
  (0.997 / 0.995 / 0.955) at 2.4x the speed: 93 k vs 39 k texts/s of CPU (8 x 3: capture
  0.934 on weak waves).

**Clusters**: union of the documents of near-duplicate pairs (a merge keeps the identity of an
alerted cluster, else of the oldest). A cluster's live accounts, repeats and burst count are
over its live documents; documents expire with the window in exactly the index's order, and
a cluster with no live document stops matching (it is not split when a bridging document
expires). Its *accounts* are its live ones plus the *remembered* ones: accounts whose
documents in it expired less than ``repeat_memory_s`` ago, and those of linked earlier waves.

**Meme vs campaign.** Both are many accounts posting edited copies; a meme trickles in over
hours (each person once), a campaign comes in waves within minutes, the same accounts again
in each wave. A cluster alerts when either

* *wave*: it has ``>= min_accounts`` live accounts, ``>= min_burst_accounts`` of them posted
  within ``burst_span_s`` and they are ``>= min_burst_share`` of its live accounts. The share
  keeps a popular meme out: the generator's meme (150 people over 6 h) reaches 8-12 accounts
  in 300 s (median, max of 2000 simulations), so a count alone would fire; 10 within 120 s
  that are half the cluster fires in 0 of 2000 (0.5 % when squeezed into 2.25 h), while
  strong waves put 30-54 accounts within 120 s;
* *repeat posters*: ``>= min_repeat_share`` of its accounts are repeats, i.e. their
  clustered posts (in any cluster) within ``repeat_memory_s`` span at least ``burst_span_s``,
  counted over its live accounts (``>= min_accounts`` of them) or over all its accounts,
  remembered ones included. An account counts as a repeat in the cluster its later post
  joins. A meme has none; later waves of a campaign consist of them, so sparse waves
  (medium / weak) alert from the second wave on. The first wave of a sparse campaign is not
  distinguishable from a meme's start.

**Linked waves** (the weak campaigns). A weak campaign (generator: 8-15 accounts, half of
them in each of 3 waves spread over 3-10 h, 900 s per wave, 3.5 edits per copy, often a
different text per wave) has waves of 3-7 accounts: below ``min_accounts``, and each wave's
cluster has expired (``window_s``) before the next wave, so the repeat posters of a later wave
were counted but the cluster never had enough accounts (copy_paste-3 of seed 0: waves of 4, 3
and 4 accounts, 7 in all). Repeat posters also say *which* earlier cluster a wave continues:
every account remembers the cluster of its last clustered post (``repeat_memory_s``); once
``min_link_accounts`` accounts of a cluster come from the same earlier cluster and they are
``min_link_share`` of that cluster's own accounts, the cluster is linked to it and
*inherits* its accounts (its own, remembered and inherited ones, those posted within
``repeat_memory_s``) and their repeat flags. Expired clusters are kept for this while an
account remembers them. The share is of the *earlier* cluster, so a big organic cluster is
never inherited through a few of its posters (the 150-account meme would need 38 of them).

Measured (near_duplicate alone; "caught" = at least half the accounts flagged; weak
recall = mean share of a weak campaign's accounts flagged; false positives = flagged
accounts in no campaign):

=============================  =========================  ============================
setting                        seeds 0-2 (rate 8): weak   seeds 10-29 (rate 1): weak
=============================  =========================  ============================
before (no links, no memory)   2/3 caught, recall 0.39    16/20 caught, recall 0.63
links 2 accounts, share 0.25   3/3, 0.90 (seed 0: 5/7)    19/20, 0.89
links 1 account, share 0.25    3/3, 1.00                  20/20, 0.93
links 2 accounts, share 0.30   3/3, 0.78                  19/20, 0.89
links 3 accounts, share 0.25   (not run)                  19/20, 0.85
=============================  =========================  ============================

Every setting run: strong and medium campaigns all caught with recall 1.000 (before: 1.000
and 0.989 on seeds 10-29, where a few late joiners missed the 20 % update), 0 false
positives, 0 hard-negative accounts; the same on seeds 3-5 (rate 8) with the default and with
one linking account (weak recall 0.75 and 0.85; 0.64 before). One linking account would catch the one more
weak campaign (seed 16: 7 accounts, waves of 4, 4 and 3 joined by single accounts), but it
lets a single account pull a small unrelated cluster (up to 4 accounts: say two people
quoting the same headline) into an alert; the default keeps 2.

**Alerts** (group ``stable_id("nd-", origin event id, account, ts)``, the origin being the
cluster's first document): open at the document that qualifies the cluster; then an update
(revision + 1) once the cluster's accounts not yet alerted reach ``update_growth`` (20 %) of
its live accounts alerted, checked at most once per ``burst_span_s`` after it (a two-minute
wave gives an open and one update with the full wave), at the first document at or after
that time, or at ``advance(inf)``; fewer new accounts than that are sent by a closing update
when the cluster's newest document leaves the window (or at ``advance(inf)``), so no
member of an alerted cluster goes unnamed. Accounts: most live posts first, then the
remembered ones, capped at ``max_alert_accounts``. Keys: ``text:<16 hex>`` of the origin's
normalised text (as burst's text keys). Score = accounts x mean Jaccard x max(peak burst
accounts / accounts (<= 1), repeat share): the size of the group times how copied and how
coordinated. Evidence adds ``remembered_accounts`` and ``linked_waves`` (group ids of the
linked earlier clusters) when there are any.

**Determinism and memory.** Every decision is taken at a document, with the state as of that
document (matches and due updates are interleaved in document order), so alerts do not
depend on batching. State: live documents (the index's window), their clusters, for accounts
with clustered posts in the last ``repeat_memory_s`` two timestamps and that post's cluster,
and the expired clusters those point to (their accounts, for links).
"""

from __future__ import annotations

import heapq
import math
import sys
from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from detectors.base import WHOLE, Alert, Shard, stable_id
from detectors.events import Event
from detectors.nd_bands import TRIM, Bands, BandMatcher
from detectors.params import NearDuplicateParams
from detectors.parts import MergingDetector, PartsMerge
from sketches.errors import CoordwatchError
from sketches.hashing import hash_string
from sketches.shingling import normalize

_TEXT_CHARS = 200  # sample texts are cut to this many characters (as burst's sample posts)

Sample = tuple[int, str, float, str, str]  # (seq, account, ts, event_id, text)


@dataclass(eq=False, slots=True)
class _Cluster:
    """Documents joined by near-duplicate pairs from distinct accounts; state of live documents
    only (accounts, repeats, burst), plus running totals (documents, Jaccard, time span)."""

    revision: int = -1  # of its last alert; -1: never alerted
    docs: list[int] = field(default_factory=list)  # seqs of its documents; expired ones pruned lazily
    live: int = 0
    documents: int = 0  # ever joined
    accounts: Counter[str] = field(default_factory=Counter)  # live documents per account
    repeats: set[str] = field(default_factory=set)  # live accounts that joined in a later wave
    reported: set[str] = field(default_factory=set)  # live accounts already alerted
    recent: list[tuple[float, int, str]] = field(default_factory=list)  # (ts, seq, account) of the last burst_span_s
    burst: Counter[str] = field(default_factory=Counter)  # documents of `recent` per account
    peak: int = 0  # most distinct accounts seen within burst_span_s
    agree: int = 0  # equal MinHash values summed over its pairs: mean Jaccard = agree / (pairs * num_perm)
    pairs: int = 0
    t_first: float = math.inf
    t_last: float = -math.inf
    samples: list[Sample] = field(default_factory=list)  # first documents of distinct accounts; [0] is the origin
    alert_ts: float = -math.inf  # event time of its last alert
    due: float | None = None  # when a pending update is checked (its heap entry)
    closing: bool = False  # that check is the closing one (see _due)
    # Lineage: earlier clusters its repeat posters came from (see "Linked waves").
    members: dict[str, float] = field(default_factory=dict)  # every account that joined -> its last ts
    ever_repeats: set[str] = field(default_factory=set)  # accounts that joined as repeats (kept after expiry)
    inherited: dict[str, float] = field(default_factory=dict)  # accounts of linked earlier clusters -> last ts
    inherited_repeats: set[str] = field(default_factory=set)
    bridges: dict[int, set[str]] = field(default_factory=dict)  # earlier cluster (origin seq) -> accounts in both
    linked: dict[int, str] = field(default_factory=dict)  # linked earlier clusters: origin seq -> group id
    forward: _Cluster | None = None  # the cluster that absorbed it in a merge

    def order(self) -> tuple[bool, int]:
        """Which cluster's identity survives a merge: an alerted one, then the oldest origin."""
        return (self.revision < 0, self.samples[0][0])


def _resolve(c: _Cluster) -> _Cluster:
    """The cluster ``c`` was merged into (itself if it was not)."""
    while c.forward is not None:
        c = c.forward
    return c


def _view(c: _Cluster) -> set[str]:
    """A cluster's accounts: those of its live documents and those inherited from linked waves."""
    return set(c.accounts).union(c.inherited) if c.inherited else set(c.accounts)


def _drop(counts: Counter[str], key: str) -> int:
    """Decrement ``key``, deleting it at zero (a Counter's size is its distinct keys); the new count."""
    n = counts[key] - 1
    if n:
        counts[key] = n
    else:
        del counts[key]
    return n


class NearDuplicateDetector(MergingDetector[NearDuplicateParams]):
    NAME: ClassVar[str] = "near_duplicate"
    STATE_VERSION: ClassVar[int] = 3

    def __init__(self, params: NearDuplicateParams, shard: Shard = WHOLE) -> None:
        super().__init__(params, shard)
        p = params
        self._dump = p.model_dump(mode="json")
        self._matcher: BandMatcher | None = BandMatcher(p)  # None in the merge of band parts
        # Documents by seq - base; seqs [head, next) are live, as in the band index. Only the
        # documents of near-duplicate pairs have their event here.
        self._ev: list[Event | None] = []
        self._clu: list[_Cluster | None] = []
        self._base = self._head = self._next = 0
        self._newest = -math.inf  # the index's clock: newest ts inserted
        self._clustered: list[int] = []  # heap of the seqs of clustered live documents (expiry)
        self._seen: dict[str, tuple[float, float]] = {}  # account -> first, last ts of its clustered posts
        self._seen_queue: deque[tuple[float, str]] = deque()  # (last, account), for forgetting
        # Alerted clusters that changed: (due, origin seq, push count, cluster); stale entries are skipped.
        self._pending: list[tuple[float, int, int, _Cluster]] = []
        self._pushes = 0

    @classmethod
    def merging(cls, params: NearDuplicateParams) -> NearDuplicateDetector:
        """The detector of a near_duplicate whose band parts run elsewhere: fed their
        :class:`~detectors.nd_bands.Bands` (``process_parts``)."""
        det = cls(params)
        det._matcher = None
        return det

    # -- processing ------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        if self._matcher is None:
            raise CoordwatchError("this near_duplicate merges band parts run elsewhere: feed it process_parts")
        return self._take([self._matcher.match(events)])

    def _take(self, found: Sequence[Bands]) -> list[Alert]:
        """A batch's documents and near-duplicate pairs (found by one matcher of every band,
        or by band parts): clusters joined, alerts decided."""
        b = Bands.union(found)
        self.stats["short_texts"] += b.short.size
        m, first = b.ev.size, b.doc0
        if not m:
            return []
        if first != self._next:
            raise CoordwatchError(f"near_duplicate: documents from {first} came, {self._next} was next")
        self.stats["documents"] += m
        self._ev += [None] * m
        self._clu += [None] * m
        self._next += m
        base, ev = self._base, self._ev
        for seq, e in zip(b.seqs.tolist(), b.events):
            if seq >= self._head and ev[seq - base] is None:
                ev[seq - base] = e
        matches = _by_document(b)
        heads = b.heads
        now = np.maximum.accumulate(np.maximum(self.times[b.ev], self._newest))  # the index's clock as of each document
        at = self.marks[b.ev]  # the watermark as of each document (alerts decided there carry it)

        # Matches and due updates in document order, each with the state as of its document.
        alerts: list[Alert] = []
        mi, cur = 0, -1
        while True:
            nxt = matches[mi][0] if mi < len(matches) else m
            if self._pending:
                k = max(int(np.searchsorted(now, self._pending[0][0])), cur)
                if k < m and k <= nxt:
                    if k > cur:
                        self._expire(int(heads[k]))
                        cur = k
                    alerts += self._due(float(now[k]), float(now[k]), float(at[k]))
                    continue
            if mi == len(matches):
                break
            i, cands, agree = matches[mi]
            mi, cur = mi + 1, i
            self._expire(int(heads[i]))
            cluster = self._match(first + i, cands, agree)
            if cluster is not None:
                alerts += self._changed(cluster, float(now[i]), float(at[i]))
        self._newest = float(now[-1])
        self._expire(int(heads[-1]))  # the index's head after the batch
        self._trim()
        self._forget()
        return alerts

    def _advance(self, watermark: float) -> list[Alert]:
        """Only the end of the stream sends pending updates: other watermarks depend on the
        driver, documents do not (a live stream reaches a due update with its next post)."""
        return self._due(math.inf, self._newest, watermark) if watermark == math.inf else []

    def _match(self, seq: int, cands: list[int], agrees: list[int]) -> _Cluster | None:
        """Join document ``seq`` with its near-duplicates from other accounts."""
        base, ev, clu = self._base, self._ev, self._clu
        account = ev[seq - base].account_id  # type: ignore[union-attr]
        clusters: list[_Cluster] = []
        singles: list[int] = []
        agree = pairs = 0
        for c, a in zip(cands, agrees):
            if ev[c - base].account_id == account:  # type: ignore[union-attr]
                continue
            pairs += 1
            agree += a
            k = clu[c - base]
            if k is None:
                singles.append(c)
            elif k not in clusters:
                clusters.append(k)
        if not pairs:
            return None
        if clusters:
            clusters.sort(key=_Cluster.order)
            cluster = clusters[0]
            for other in clusters[1:]:
                cluster = self._merge(cluster, other)
        else:
            cluster = _Cluster()
        for c in singles:
            self._attach(cluster, c)
        self._attach(cluster, seq)
        cluster.agree += agree
        cluster.pairs += pairs
        return cluster

    def _attach(self, c: _Cluster, seq: int) -> None:
        p, i = self.params, seq - self._base
        e = self._ev[i]
        assert e is not None  # a document of a pair
        t, account = e.ts, e.account_id
        if self._clu[i] is None:
            heapq.heappush(self._clustered, seq)
        self._clu[i] = c
        c.docs.append(seq)
        c.live += 1
        c.documents += 1
        c.accounts[account] += 1
        c.members[account] = max(c.members.get(account, t), t)
        earlier = self._seen_again(account, t, c)
        first, last, _ = self._seen[account]
        if last - first >= p.burst_span_s:
            c.repeats.add(account)
            c.ever_repeats.add(account)
        if earlier is not None:
            self._bridge(c, earlier, account, t)
        c.t_first = min(c.t_first, t)
        if t > c.t_last:
            c.t_last = t
            self._prune_recent(c)
        if t >= c.t_last - p.burst_span_s:
            insort(c.recent, (t, seq, account))
            c.burst[account] += 1
            c.peak = max(c.peak, len(c.burst))
        if len(c.samples) < p.max_samples and all(s[1] != account for s in c.samples):
            c.samples.append((seq, account, t, e.event_id, e.text))  # type: ignore[arg-type]

    def _seen_again(self, account: str, t: float, c: _Cluster) -> _Cluster | None:
        """Record a clustered post (in ``c``); the other cluster of the account's last one, if
        it is remembered (within repeat_memory_s). The account is a repeat poster if its
        remembered clustered posts span at least burst_span_s."""
        p = self.params
        rec = self._seen.get(account)
        if rec is None or rec[1] < t - p.repeat_memory_s:
            rec, earlier = (t, t, c), None
        else:
            earlier = _resolve(rec[2])
            last = max(rec[1], t)
            rec = (min(rec[0], t), last, c if t >= rec[1] else earlier)
        self._seen[account] = rec
        self._seen_queue.append((rec[1], account))
        return earlier if earlier is not None and earlier is not c else None

    def _bridge(self, c: _Cluster, earlier: _Cluster, account: str, t: float) -> None:
        """``account`` posted in ``earlier`` and now in ``c``: once min_link_accounts such
        accounts, min_link_share of ``earlier``'s own accounts, bridge the two, ``c``
        inherits ``earlier``'s accounts (its own and inherited ones, within repeat_memory_s)."""
        p = self.params
        origin = earlier.samples[0]
        if origin[0] in c.linked:
            return
        both = c.bridges.setdefault(origin[0], set())
        both.add(account)
        if len(both) < p.min_link_accounts or len(both) < p.min_link_share * len(earlier.members):
            return
        del c.bridges[origin[0]]
        c.linked[origin[0]] = stable_id("nd-", origin[3], origin[1], origin[2])
        since = t - p.repeat_memory_s
        for src in (earlier.members, earlier.inherited):
            for a, last in src.items():
                if last >= since and c.inherited.get(a, -math.inf) < last:
                    c.inherited[a] = last
        c.inherited_repeats |= (earlier.ever_repeats | earlier.inherited_repeats) & c.inherited.keys()

    def _prune_recent(self, c: _Cluster) -> None:
        k = bisect_left(c.recent, (c.t_last - self.params.burst_span_s,))
        for _, _, account in c.recent[:k]:
            _drop(c.burst, account)
        del c.recent[:k]

    def _merge(self, keep: _Cluster, other: _Cluster) -> _Cluster:
        """One cluster with ``keep``'s identity; the object with more documents absorbs the other."""
        dst, src = (keep, other) if len(keep.docs) >= len(other.docs) else (other, keep)
        head, base, clu = self._head, self._base, self._clu
        moved = [s for s in src.docs if s >= head]
        for s in moved:
            clu[s - base] = dst
        dst.docs += moved
        dst.live += src.live
        dst.documents += src.documents
        dst.accounts.update(src.accounts)
        dst.repeats |= src.repeats
        dst.reported |= src.reported
        dst.agree += src.agree
        dst.pairs += src.pairs
        dst.t_first = min(dst.t_first, src.t_first)
        dst.t_last = max(dst.t_last, src.t_last)
        dst.recent = sorted(dst.recent + src.recent)
        dst.burst = Counter(a for _, _, a in dst.recent)
        self._prune_recent(dst)
        dst.peak = max(dst.peak, src.peak, len(dst.burst))
        names = {s[1] for s in keep.samples}
        extra = [s for s in other.samples if s[1] not in names]
        dst.samples = (keep.samples + extra)[: self.params.max_samples]
        dst.revision, dst.alert_ts = keep.revision, keep.alert_ts
        dst.due = src.due = None  # re-queued by _changed; src is gone
        dst.closing = src.closing = False
        for a, t in src.members.items():
            dst.members[a] = max(dst.members.get(a, t), t)
        dst.ever_repeats |= src.ever_repeats
        for a, t in src.inherited.items():
            dst.inherited[a] = max(dst.inherited.get(a, t), t)
        dst.inherited_repeats |= src.inherited_repeats
        for k, both in src.bridges.items():
            dst.bridges.setdefault(k, set()).update(both)
        for k, g in src.linked.items():
            dst.linked.setdefault(k, g)
        for k in dst.linked:
            dst.bridges.pop(k, None)
        src.live = 0
        src.forward = dst
        return dst

    def _changed(self, c: _Cluster, now: float, at: float) -> list[Alert]:
        """Open an alert at the document that qualifies the cluster; queue a later update."""
        p, n = self.params, len(c.accounts)
        if c.revision >= 0:
            if c.due is None or c.closing:
                c.closing = False
                c.due = c.alert_ts + p.burst_span_s
                self._pushes += 1
                heapq.heappush(self._pending, (c.due, c.samples[0][0], self._pushes, c))
            return []
        burst = len(c.burst)
        wave = burst >= p.min_burst_accounts and burst >= p.min_burst_share * n
        if n >= p.min_accounts and (wave or len(c.repeats) >= p.min_repeat_share * n):
            return [self._alert(c, now, at)]
        if c.inherited:  # with its remembered accounts and those of the linked earlier waves
            self._prune(c, now)
            view = len(_view(c))
            if view >= p.min_accounts and len(c.repeats | c.inherited_repeats) >= p.min_repeat_share * view:
                return [self._alert(c, now, at)]
        return []

    def _due(self, limit: float, now: float, at: float) -> list[Alert]:
        """Updates due by ``limit``, sent as of ``now``: clusters with update_growth more
        accounts than their last alert; a cluster with fewer new accounts than that is
        checked once more when its newest document leaves the window (the closing check),
        and then sends any account not yet alerted."""
        p = self.params
        out: list[Alert] = []
        heap = self._pending
        while heap and heap[0][0] <= limit:
            due, _, _, c = heapq.heappop(heap)
            if c.due != due or c.forward is not None or not (c.live or c.closing):
                continue  # stale: re-queued or merged away
            c.due = None
            self._prune(c, now)
            new = len(_view(c)) - len(c.reported)
            if c.closing:
                c.closing = False
                if new > 0:
                    out.append(self._alert(c, now, at))
                continue
            # Growth of the accounts not yet alerted against the cluster's own alerted ones:
            # remembered accounts (never new again) would otherwise hide a wave's growth.
            alerted = len(c.reported) if not c.inherited else sum(1 for a in c.reported if a in c.accounts)
            if new >= max(1.0, p.update_growth * alerted):
                out.append(self._alert(c, now, at))
            elif new > 0:
                c.closing, c.due = True, c.t_last + p.window_s
                self._pushes += 1
                heapq.heappush(heap, (c.due, c.samples[0][0], self._pushes, c))
        return out

    def _prune(self, c: _Cluster, now: float) -> None:
        """Forget remembered and inherited accounts whose last post is older than repeat_memory_s."""
        since = now - self.params.repeat_memory_s
        if c.inherited and min(c.inherited.values()) < since:
            c.inherited = {a: t for a, t in c.inherited.items() if t >= since}
            c.inherited_repeats &= c.inherited.keys()
            c.reported = {a for a in c.reported if a in c.accounts or a in c.inherited}

    def _alert(self, c: _Cluster, now: float, at: float) -> Alert:
        p = self.params
        self._prune(c, now)
        c.revision += 1
        c.reported = _view(c)
        c.alert_ts = now
        ranked = sorted(c.accounts.items(), key=lambda kv: (-kv[1], kv[0]))
        ranked += sorted((a, 0) for a in c.inherited if a not in c.accounts)  # only in linked earlier waves
        n = len(ranked)
        repeats = c.repeats | c.inherited_repeats if c.inherited else c.repeats
        mean_j = c.agree / (c.pairs * p.num_perm)
        density, repeat_share = min(1.0, c.peak / n), len(repeats) / n
        origin = c.samples[0]
        return Alert(
            type=self.NAME,
            group_id=stable_id("nd-", origin[3], origin[1], origin[2]),
            revision=c.revision,
            score=n * mean_j * max(density, repeat_share),
            window_start=c.t_first,
            window_end=c.t_last,
            accounts=tuple(a for a, _ in ranked[: p.max_alert_accounts]),
            account_count=n,
            keys=(f"text:{hash_string(normalize(origin[4])):016x}",),
            evidence={
                "sample_texts": [
                    {"account": a, "ts": t, "event_id": eid, "text": text[:_TEXT_CHARS]}
                    for _, a, t, eid, text in c.samples
                ],
                "mean_jaccard": round(mean_j, 4),
                "documents": c.documents,
                "live_documents": c.live,
                "distinct_accounts": n,
                "span_s": c.t_last - c.t_first,
                "peak_burst_accounts": c.peak,
                "burst_span_s": p.burst_span_s,
                "repeat_accounts": len(repeats),
                "as_of_ts": now,
                **(
                    {"remembered_accounts": n - len(c.accounts), "linked_waves": sorted(c.linked.values())}
                    if n > len(c.accounts) or c.linked
                    else {}
                ),
            },
            detector_params=self._dump,
            at=at,
        )

    # -- expiry ----------------------------------------------------------------------
    def _expire(self, head: int) -> None:
        """Documents before ``head`` (the index's live head) leave their clusters, in order."""
        heap, base, clu, ev = self._clustered, self._base, self._clu, self._ev
        while heap and heap[0] < head:
            seq = heapq.heappop(heap)
            self._head = seq + 1
            self._leave(clu[seq - base], ev[seq - base].account_id)  # type: ignore[arg-type, union-attr]
        self._head = max(self._head, head)

    def _trim(self) -> None:
        """Drop expired documents from the store in blocks."""
        k = self._head - self._base
        if k >= TRIM and 2 * k >= len(self._clu):
            del self._ev[:k]
            del self._clu[:k]
            self._base = self._head

    def _leave(self, c: _Cluster, account: str) -> None:
        c.live -= 1
        if not _drop(c.accounts, account):
            # Remembered after its documents expired (repeat_memory_s): still one of the cluster's accounts.
            if account in c.repeats:
                c.repeats.discard(account)
                c.inherited_repeats.add(account)
            last = c.members[account]
            if c.inherited.get(account, -math.inf) < last:
                c.inherited[account] = last
        if len(c.docs) > 2 * c.live + 16:
            c.docs = [s for s in c.docs if s >= self._head]

    def _forget(self) -> None:
        """Drop accounts whose clustered posts no future post can be compared with."""
        p = self.params
        cutoff = self._newest - p.repeat_memory_s - p.allowed_lateness_s
        q, seen = self._seen_queue, self._seen
        while q and q[0][0] < cutoff:
            last, account = q.popleft()
            rec = seen.get(account)
            if rec is not None and rec[1] == last:
                del seen[account]

    # -- state -----------------------------------------------------------------------
    @property
    def live_documents(self) -> int:
        return self._next - self._head

    @property
    def nbytes(self) -> int:
        """Approximate memory: the band matching (index, signatures, shingles, documents), the
        documents of pairs, clusters and the repeat memory."""
        lo = self._head - self._base
        named = [e for e in self._ev[lo:] if e is not None]
        store = sum(map(sys.getsizeof, (self._ev, self._clu))) + sum(map(sys.getsizeof, named))
        if self._matcher is not None:  # the strings of named events are the matcher's too
            store += self._matcher.nbytes
        else:
            store += sum(sys.getsizeof(e.account_id) + sys.getsizeof(e.event_id) + sys.getsizeof(e.text) for e in named)
        clusters = {id(c): c for c in self._clu[lo:] if c is not None}
        clusters.update((id(c), c) for c in map(_resolve, (rec[2] for rec in self._seen.values())))  # expired ones too
        per_cluster = sum(
            sum(map(sys.getsizeof, (c.docs, c.accounts, c.recent, c.members, c.inherited, c.ever_repeats))) + 200
            for c in clusters.values()
        )
        seen = sys.getsizeof(self._seen) + 72 * len(self._seen) + 64 * len(self._seen_queue)
        return store + per_cluster + seen

    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The band matching's live documents (see ``BandMatcher.state``), the documents of
        pairs, clusters, the repeat memory."""
        lo, hi = self._head - self._base, self._next - self._base
        index: dict[int, int] = {}
        clusters: list[_Cluster] = []
        refs = np.full(hi - lo, -1, dtype=np.int64)
        for k, c in enumerate(self._clu[lo:hi]):
            if c is not None:
                if id(c) not in index:
                    index[id(c)] = len(clusters)
                    clusters.append(c)
                refs[k] = index[id(c)]
        seen = []
        for a, (first, last, c) in sorted(self._seen.items()):
            c = _resolve(c)  # clusters of remembered posts: live ones, or expired ones kept for links
            if id(c) not in index:
                index[id(c)] = len(clusters)
                clusters.append(c)
            seen.append([a, first, last, index[id(c)]])
        for due, _, _, c in sorted(self._pending, key=lambda e: e[:2]):  # a closing check of an expired cluster
            if c.due == due and c.forward is None and id(c) not in index:
                index[id(c)] = len(clusters)
                clusters.append(c)
        named = [(seq, e) for seq, e in enumerate(self._ev[lo:hi], start=self._head) if e is not None]
        matcher, arrays = (None, []) if self._matcher is None else self._matcher.state()
        state = {
            "matcher": matcher,
            "head": self._head,
            "next": self._next,
            "newest": None if self._newest == -math.inf else self._newest,
            "accounts": [e.account_id for _, e in named],
            "event_ids": [e.event_id for _, e in named],
            "texts": [e.text for _, e in named],
            "clusters": [
                {
                    "revision": c.revision,
                    "documents": c.documents,
                    "repeats": sorted(c.repeats),
                    "reported": sorted(c.reported),
                    "recent": c.recent,
                    "peak": c.peak,
                    "agree": c.agree,
                    "pairs": c.pairs,
                    "t_first": c.t_first,
                    "t_last": c.t_last,
                    "samples": c.samples,
                    "alert_ts": None if c.revision < 0 else c.alert_ts,
                    "due": c.due,
                    "closing": c.closing,
                    "members": sorted(c.members.items()),
                    "ever_repeats": sorted(c.ever_repeats),
                    "inherited": sorted(c.inherited.items()),
                    "inherited_repeats": sorted(c.inherited_repeats),
                    "bridges": sorted([k, sorted(v)] for k, v in c.bridges.items()),
                    "linked": sorted(c.linked.items()),
                }
                for c in clusters
            ],
            "seen": seen,
            "seen_queue": list(self._seen_queue),
        }
        seqs = np.array([q for q, _ in named], dtype=np.int64)
        ts = np.array([e.ts for _, e in named], dtype=np.float64)
        return state, [refs, seqs, ts, *arrays]

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        refs, seqs, ts, *matcher = arrays
        clusters = [
            _Cluster(
                revision=d["revision"],
                documents=d["documents"],
                repeats=set(d["repeats"]),
                reported=set(d["reported"]),
                recent=[(t, s, a) for t, s, a in d["recent"]],
                peak=d["peak"],
                agree=d["agree"],
                pairs=d["pairs"],
                t_first=d["t_first"],
                t_last=d["t_last"],
                samples=[(s, a, t, e, x) for s, a, t, e, x in d["samples"]],
                alert_ts=-math.inf if d["alert_ts"] is None else d["alert_ts"],
                due=d["due"],
                closing=d["closing"],
                members=dict(d["members"]),
                ever_repeats=set(d["ever_repeats"]),
                inherited=dict(d["inherited"]),
                inherited_repeats=set(d["inherited_repeats"]),
                bridges={k: set(v) for k, v in d["bridges"]},
                linked={k: g for k, g in d["linked"]},
            )
            for d in state["clusters"]
        ]
        self._pending = [(c.due, c.samples[0][0], k, c) for k, c in enumerate(clusters) if c.due is not None]
        heapq.heapify(self._pending)
        self._pushes = len(clusters)
        for c in clusters:
            c.burst.update(a for _, _, a in c.recent)
        if state["matcher"] is None:
            self._matcher = None
        else:
            assert self._matcher is not None
            self._matcher.load(state["matcher"], matcher)
        head = state["head"]
        self._base = self._head = head
        self._next = state["next"]
        self._newest = -math.inf if state["newest"] is None else state["newest"]
        self._ev = [None] * (self._next - head)
        for seq, t, a, e, x in zip(seqs.tolist(), ts.tolist(), state["accounts"], state["event_ids"], state["texts"]):
            self._ev[seq - head] = Event(t, a, "post", e, x, (), None, (), {})
        self._clu = [None if r < 0 else clusters[r] for r in refs.tolist()]
        for seq, (k, e) in enumerate(zip(self._clu, self._ev), start=head):
            if k is not None:
                k.docs.append(seq)
                k.live += 1
                k.accounts[e.account_id] += 1  # type: ignore[union-attr]
                self._clustered.append(seq)
        self._seen = {a: (first, last, clusters[k]) for a, first, last, k in state["seen"]}
        self._seen_queue = deque((last, a) for last, a in state["seen_queue"])


def _by_document(b: Bands) -> list[tuple[int, list[int], list[int]]]:
    """A batch's pairs per new document: (its index in the batch, the earlier documents'
    seqs, their equal signature values), in document order."""
    if not b.new.size:
        return []
    items, starts = np.unique(b.new, return_index=True)
    bounds = np.append(starts, b.new.size).tolist()
    olds, agrees = b.old.tolist(), b.agree.tolist()
    return [(i - b.doc0, olds[lo:hi], agrees[lo:hi]) for i, lo, hi in zip(items.tolist(), bounds[:-1], bounds[1:])]


class NearDuplicateParts(PartsMerge[Bands]):
    """near_duplicate whose ``parts`` band parts run elsewhere, each a
    :class:`~detectors.nd_bands.NearDuplicatePart` (a worker's work partition), merged here
    (:class:`~detectors.parts.PartsMerge`): the documents, and the pairs of every band."""

    KIND = "near_duplicate.parts"
    PAYLOAD = Bands

    def __init__(self, params: NearDuplicateParams, parts: int) -> None:
        super().__init__(NearDuplicateDetector.merging(params), parts)

    def _restore(self, data: bytes) -> NearDuplicateDetector:
        return NearDuplicateDetector.restore(self.detector.params, data)
