"""co_action: accounts that act on the same objects within seconds of each other, again and again.

**Pairs.** Every action on an object (a URL, a retweeted/liked/replied post = ``object_id``,
a hashtag, a domain; config ``object_fields``, optionally only some ``object_types``) is kept
in a per-object buffer for ``pair_window_s + allowed_lateness_s`` of event time. A new
action pairs with every buffered action of *another* account on the object whose time is
within ``pair_window_s`` of its own (``|dt| <= pair_window_s``, either direction, so late
events pair exactly like on-time ones). Time is continuous: two shares 1 s apart pair
wherever they fall, there are no bins.

**Weights** accumulate over a sliding ``memory_s``; a co-action is forgotten ``memory_s``
after it was seen (seen = the watermark when it paired, which never decreases, so the
expiry queue is a FIFO). ``weight_mode``:

* ``share_pairs``: weight = number of share pairs of the two accounts (CooRTweet);
* ``distinct_contents``: weight u->v = number of distinct posts of u (``content_id``, else
  the event id) that have a co-share by v; the pair weighs max(u->v, v->u)
  (coordination-network-toolkit).

State expires with event time: buffers and posts after ``pair_window_s +
allowed_lateness_s``, co-actions and participation counts after ``memory_s``; idle
accounts' ids are recycled. Memory follows the activity of the last ``memory_s``, not the
length of the stream.

``min_participation`` (CooRTweet's): a pair counts only if both accounts made at least that
many object actions in memory and one of them made that many in co-actions with such
accounts (rows of posts that paired). ``participation_scope = "object_type"`` counts this,
and the pair weights it gates, per object type.

**Fan-out.** A viral object shared by n unrelated accounts inside one window would make
n^2/2 pairs. With ``max_fanout = k > 0`` the buffer keeps one action (the latest) of at
most k distinct accounts, so a new action pairs with at most the k most recent accounts:
O(k) time and memory per object, O(k n) pairs overall. This keeps viral objects harmless
without hiding rings: a pair's weight grows about once per *object* the two co-share, and a
viral object pairs each sharer with the k random people who shared just before it, a
different crowd for every viral object, so one random pair meets again on other objects
only by chance and stays far below ``min_weight``. A ring's members share each object
within seconds of each other, so they are each other's most recent sharers on object after
object and their weights climb with every one. ``max_fanout = 0`` pairs everything (the
peers' batch semantics, used for parity).

**Groups.** Pairs whose weight is at least ``min_weight`` and (if ``edge_weight_quantile``
is set) strictly above that quantile (R type 7, as CooRTweet) of all current pair weights
form the graph. Event time is cut at multiples of ``eval_interval_s``; when the watermark
crosses one, the graph is updated (only edges whose weight or participation changed) and
connected groups are examined, before the event that crossed it is handled. Components
are kept in a union-find; one is examined when it is new with at least ``min_group_size``
accounts or has grown by ``update_growth_fraction`` since it was last examined (edge
removals rebuild the union-find). Components above ``split_above_accounts`` are split into
Louvain communities (networkx, seed 7). A group is matched to the known group most of its
members belong to; otherwise it is new and its id is ``stable_id("ca-", smallest
account, floor(window start / memory_s))``, fixed for its life, so growth never renames
it. A new group raises ``open`` (revision 0); a known one ``update`` (revision + 1) once it
has ``update_growth_fraction`` (20 %) more members than at its last alert. A group not
examined for ``memory_s`` is forgotten.

**Alert.** ``accounts``: most central first (weighted degree inside the group, then id),
capped at ``max_alert_accounts``; ``score`` = mean edge weight x log2(size) (higher = more
co-actions per pair, in a larger group); ``window``: first to last co-action of the
group's edges; ``keys``: the objects most members co-shared (from the last 8 co-actions
kept per account); evidence ``edges`` (heaviest pairs with median and min time delta of
their last 15 co-actions), ``top_objects``, ``sample_posts``, ``min_edge_weight``.

**Peer quirks** (``streams/presets/coortweet.toml``, ``cnt.toml``; checked exactly in
``tests/detectors/test_peer_parity.py``):

* CooRTweet counts ``min_participation`` rows per input table, and was run once per object
  type (url, phash) with the results joined: ``participation_scope = "object_type"``.
  A post with two objects is two rows (both count toward participation, both can pair);
  self pairs and same-post pairs are dropped (an account never pairs with itself).
* coordination-network-toolkit's co-retweet keeps one ``repost_id`` per message, so the
  converter dropped a retweet's second object: ``one_object_actions = ["retweet"]``. Its
  co-link messages are posts with all their URLs: ``distinct_contents`` counts a post once
  however many of its objects are co-shared. Loops are not exported; pairs are collapsed
  to max(u->v, v->u).
* Duplicate rows (one in russian_coord_tweets) are already gone from the JSONL, which has
  unique event ids; the peers' outputs with and without it are identical.

:meth:`CoActionDetector.weighted_edges` reads the current weighted graph (as of the last
evaluation; ``advance(math.inf)`` evaluates at the last event).

**Cost.** Accounts (per object type when scoped) are interned to ints, pair keys are ints
``p << 32 | q``; an event costs a few dict operations and a scan of its object's buffer, a
pair about ten more, and graph work happens only at ticks, only where something changed.
Measured on one core, pre-parsed events, CPU time: russian_coord_tweets (35 k retweets)
0.19 s with the default config (~185 k events/s); ten time-shifted copies (351 k events)
1.9 s default, 2.6 s ``coortweet``, 1.9 s ``cnt``. cProfile (default config): the per-event
loop ~45 %, dropping expired buffers, posts and participants ~15 %, reading the objects of
an event ~15 %, pairing, expiry and graph updates the rest.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np

from detectors.base import Alert, Detector, stable_id
from detectors.events import Event
from detectors.params import CoActionParams

LOUVAIN_SEED = 7
SAMPLES = 8  # recent co-actions kept per participant (evidence: objects, sample posts)
DELTAS = 15  # recent co-action time deltas kept per pair (evidence: median, min)
TOP = 10  # edges and objects listed in evidence and keys
SAMPLE_POSTS = 5
_LOW = (1 << 32) - 1
Sample = tuple[float, str, str]  # (ts, event id, object) of one side of a co-action


class _Post:
    """One post of one participant: its rows (objects) and live co-action partners."""

    __slots__ = ("key", "partners", "pid", "rows")

    def __init__(self, key: tuple[str, int], pid: int, rows: int = 0) -> None:
        self.key = key
        self.pid = pid
        self.rows = rows
        self.partners: dict[int, int] | None = None  # partner pid -> live pairs with this post


def _ukey(p: int, q: int) -> int:
    return p << 32 | q if p < q else q << 32 | p


def _grew(n: int, before: int, fraction: float) -> bool:
    """``n`` is at least ``fraction`` more than ``before`` (with float slack: 10 * 1.2 is 12.000000000000002)."""
    return n >= before * (1 + fraction) - 1e-9


def _table(rows: Any, width: int, dtype: type = np.int64) -> np.ndarray:
    """Rows of numbers as a 2-D array (also when empty)."""
    return np.array(list(rows), dtype=dtype).reshape(-1, width)


def _fin(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unfin(x: float | None) -> float:
    return -math.inf if x is None else x


def quantile7(hist: dict[int, int], q: float) -> float:
    """R's ``quantile(x, q, type = 7)`` of the multiset ``{value: count}``, in the same double arithmetic."""
    n = sum(hist.values())
    index = 1 + (n - 1) * q
    lo, hi = math.floor(index), math.ceil(index)
    x_lo: int | None = None
    x_hi = seen = 0
    for value in sorted(hist):  # the lo-th and hi-th smallest values (1-based)
        seen += hist[value]
        if x_lo is None and seen >= lo:
            x_lo = value
        if seen >= hi:
            x_hi = value
            break
    assert x_lo is not None
    if index > lo and x_hi != x_lo:
        h = index - lo
        return (1 - h) * x_lo + h * x_hi
    return float(x_lo)


class CoActionDetector(Detector[CoActionParams]):
    NAME = "co_action"
    STATE_VERSION = 1

    def __init__(self, params: CoActionParams) -> None:
        super().__init__(params)
        self._keep_s = params.pair_window_s + params.allowed_lateness_s  # how long an action can still pair
        self._distinct = params.weight_mode == "distinct_contents"
        self._per_type = params.participation_scope == "object_type"
        self._types = None if params.object_types is None else frozenset(params.object_types)
        self._one = frozenset(params.one_object_actions)
        self._params_json = params.model_dump(mode="json")
        # participants: an account, or (account, object type) when participation is per type
        self._pid: dict[Any, int] = {}
        self._pkey: list[Any] = []  # pid -> intern key, None when free
        self._pacc: list[str | None] = []  # pid -> account
        self._plast: list[float] = []  # pid -> watermark at its last action
        self._touch_q: deque[tuple[float, int]] = deque()  # (watermark, pid) per action: finds idle ones
        self._idle: list[int] = []  # participants whose last rows or pairs expired: free them if idle
        self._free: list[int] = []
        self._kinds: list[str] = []
        self._kind: dict[str, int] = {}
        self._bufs: list[dict[str, list[tuple[float, int, _Post, str]]]] = []  # kind -> object -> actions
        self._fields = [(f, -1 if f == "object_id" else self._kind_of(f[:-1])) for f in params.object_fields]
        self._posts: dict[tuple[str, int], _Post] = {}  # posts that may still get rows
        self._post_q: deque[tuple[float, _Post]] = deque()
        self._rows: dict[int, int] = {}  # pid -> object actions in memory
        self._rows_q: deque[tuple[float, int]] = deque()
        self._pairs_q: deque[tuple[float, _Post, _Post]] = deque()  # live share pairs, FIFO
        self._adj: dict[int, dict[int, int]] = {}  # pid -> pid -> live share pairs
        self._wd: dict[int, int] = {}  # p << 32 | q -> distinct posts of p co-shared by q
        self._paired: dict[int, dict[_Post, None]] = {}  # pid -> its posts with partners
        self._meta: dict[int, list[Any]] = {}  # ukey -> [first seen, last seen, recent |dt|]
        self._samples: dict[int, deque[Sample]] = {}  # pid -> its latest co-actions
        self._counted: dict[int, int] = {}  # ukey -> weight in the graph (0 = fails participation)
        self._graph: dict[str, dict[str, int]] = {}  # account -> account -> weight
        self._hist: dict[int, int] = {}  # weight -> account pairs
        self._cut = params.min_weight  # graph edges weigh at least this
        self._coord: set[int] = set()  # participants passing the co-action part of min_participation
        self._dirty: set[int] = set()  # participants whose posts' partners or rows changed
        self._flip: set[int] = set()  # participants crossing min_participation
        self._dirty_edges: set[int] = set()
        self._parent: dict[str, str] = {}  # union-find over graph edges
        self._size: dict[str, int] = {}
        self._evald: dict[str, int] = {}  # root -> size when last examined
        self._seen: dict[str, int] = {}  # account -> size of its component when last examined
        self._stale = False  # an edge left the graph: rebuild the union-find
        self._reweighed = False  # the weight histogram changed: recompute the cut
        # gid -> [revision, size at its last alert, last examined, members], least recently examined first
        self._groups: dict[str, list[Any]] = {}
        self._member: dict[str, str] = {}  # account -> gid
        self._wm = -math.inf
        self._next_tick = -math.inf
        self._swept = -math.inf

    # -- events ----------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        alerts: list[Alert] = []
        p = self.params
        step, window, keep, fanout = p.eval_interval_s, p.pair_window_s, self._keep_s, p.max_fanout
        minp, per_type, one_actions = p.min_participation, self._per_type, self._one
        pids, plast, posts, post_q, rows, rows_q, bufs, flip = (
            self._pid, self._plast, self._posts, self._post_q, self._rows, self._rows_q, self._bufs, self._flip,
        )
        touch_q, kinds, types, adj = self._touch_q, self._kind, self._types, self._adj
        oid_only = p.object_fields == ["object_id"]
        wm, tick = self._wm, self._next_tick
        for e in events:
            ts = e.ts
            if ts > wm:
                if ts >= tick:  # the watermark crosses a tick: evaluate before this event
                    t = math.floor(ts / step) * step
                    alerts += self._evaluate(t)
                    tick = self._next_tick = t + step
                wm = ts
            if oid_only:  # the common case, inlined
                value = e.object_id
                if value is None:
                    continue
                otype = e.extra.get("object_type")
                if types is not None and otype not in types:
                    continue
                name = otype if type(otype) is str else "object"
                kind = kinds.get(name)
                objs: Sequence[tuple[int, str]] = ((self._kind_of(name) if kind is None else kind, value),)
            else:
                objs = self._objects(e)
                if not objs:
                    continue
            acc, eid = e.account_id, e.event_id
            cid = e.extra.get("content_id") or eid
            if type(cid) is not str:
                cid = str(cid)
            one = e.action in one_actions
            for kind, value in objs:
                pk = (acc, kind) if per_type else acc
                pid = pids.get(pk)
                if pid is None:
                    pid = self._intern(pk, acc, wm)
                    touch_q.append((wm, pid))
                elif plast[pid] != wm:
                    plast[pid] = wm
                    touch_q.append((wm, pid))
                ck = (cid, pid)
                post = posts.get(ck)
                if post is None:
                    post = posts[ck] = _Post(ck, pid)
                    post_q.append((wm, post))
                elif one:
                    continue
                post.rows += 1
                if minp > 1:
                    if post.partners is not None:  # more co-action rows for the participant
                        self._dirty.add(pid)
                    n = rows.get(pid, 0) + 1
                    rows[pid] = n
                    rows_q.append((wm, pid))
                    if n == minp and pid in adj:  # without pairs its status matters to nobody yet
                        flip.add(pid)
                entry = (ts, pid, post, eid)
                objmap = bufs[kind]
                buf = objmap.get(value)
                if buf is None:
                    objmap[value] = [entry]
                    continue
                if buf[0][0] < wm - keep:
                    lo = wm - keep
                    i = 1
                    while i < len(buf) and buf[i][0] < lo:
                        i += 1
                    del buf[:i]
                if fanout:  # one action per account, of the latest k accounts
                    own = -1
                    for j, (t2, p2, post2, e2) in enumerate(buf):
                        if p2 == pid:
                            own = j
                        elif -window <= ts - t2 <= window:
                            self._pair(post, post2, ts - t2, (ts, eid, value), (t2, e2, value), wm)
                    if own >= 0:
                        del buf[own]
                    buf.append(entry)
                    if len(buf) > fanout:
                        del buf[0]
                else:
                    for t2, p2, post2, e2 in buf:
                        if p2 != pid and -window <= ts - t2 <= window:
                            self._pair(post, post2, ts - t2, (ts, eid, value), (t2, e2, value), wm)
                    buf.append(entry)
        self._wm = wm
        return alerts

    def _objects(self, e: Event) -> list[tuple[int, str]]:
        """(kind, object) pairs the event acts on, per ``object_fields``, without repeats."""
        out: list[tuple[int, str]] = []
        for field, kind in self._fields:
            if kind < 0:  # object_id: its kind is the event's object_type
                otype = e.extra.get("object_type")
                if e.object_id is not None and (self._types is None or otype in self._types):
                    out.append((self._kind_of(otype if type(otype) is str else "object"), e.object_id))
                continue
            for value in getattr(e, field):
                item = (kind, value)
                if item not in out:
                    out.append(item)
        return out

    def _kind_of(self, name: str) -> int:
        k = self._kind.get(name)
        if k is None:
            k = self._kind[name] = len(self._kinds)
            self._kinds.append(name)
            self._bufs.append({})
        return k

    def _intern(self, key: Any, acc: str, wm: float) -> int:
        if self._free:
            pid = self._free.pop()
            self._pkey[pid], self._pacc[pid], self._plast[pid] = key, acc, wm
        else:
            pid = len(self._pkey)
            self._pkey.append(key)
            self._pacc.append(acc)
            self._plast.append(wm)
        self._pid[key] = pid
        return pid

    # -- pairs -----------------------------------------------------------------------
    def _pair(self, a: _Post, b: _Post, dt: float, sample_a: Sample, sample_b: Sample, now: float) -> None:
        """Posts ``a`` (the new action) and ``b`` co-acted ``dt`` seconds apart; samples are (ts, event id, object)."""
        pa, pb = a.pid, b.pid
        self.stats["pairs"] += 1
        self._pairs_q.append((now, a, b))
        self._partner(a, pb)
        self._partner(b, pa)
        adj, samples = self._adj, self._samples
        for p, q, sample in ((pa, pb, sample_a), (pb, pa, sample_b)):
            mine = adj.get(p)
            if mine is None:
                adj[p] = {q: 1}
                samples[p] = deque((sample,), maxlen=SAMPLES)
            else:
                mine[q] = mine.get(q, 0) + 1
                samples[p].append(sample)
        uk = pa << 32 | pb if pa < pb else pb << 32 | pa
        meta = self._meta.get(uk)
        if meta is None:
            self._meta[uk] = [now, now, [abs(dt)]]
        else:
            meta[1] = now
            deltas = meta[2]
            deltas.append(abs(dt))
            if len(deltas) > DELTAS:
                del deltas[0]
        self._dirty_edges.add(uk)
        if self.params.min_participation > 1:
            self._dirty.add(pa)
            self._dirty.add(pb)

    def _partner(self, post: _Post, other: int) -> None:
        """One more live pair of ``post`` with participant ``other``."""
        part = post.partners
        if part is None:
            post.partners = {other: 1}
            self._paired.setdefault(post.pid, {})[post] = None
            n = 0
        else:
            n = part.get(other, 0)
            part[other] = n + 1
        if not n and self._distinct:
            k = post.pid << 32 | other
            self._wd[k] = self._wd.get(k, 0) + 1

    def _unpair(self, a: _Post, b: _Post) -> None:
        pa, pb = a.pid, b.pid
        for post, other in ((a, pb), (b, pa)):
            part = post.partners
            assert part is not None
            n = part[other] - 1
            if n:
                part[other] = n
                continue
            del part[other]
            if self._distinct:
                k = post.pid << 32 | other
                w = self._wd[k] - 1
                if w:
                    self._wd[k] = w
                else:
                    del self._wd[k]
            if not part:
                post.partners = None
                mine = self._paired[post.pid]
                del mine[post]
                if not mine:
                    del self._paired[post.pid]
        for p, q in ((pa, pb), (pb, pa)):
            adj = self._adj[p]
            n = adj[q] - 1
            if n:
                adj[q] = n
            else:
                del adj[q]
                if not adj:
                    del self._adj[p], self._samples[p]
                    self._idle.append(p)
        uk = _ukey(pa, pb)
        if pb not in self._adj.get(pa, ()):
            del self._meta[uk]
        self._dirty_edges.add(uk)
        if self.params.min_participation > 1:
            self._dirty.add(pa)
            self._dirty.add(pb)

    # -- evaluation ------------------------------------------------------------------
    def _advance(self, watermark: float) -> list[Alert]:
        if watermark == math.inf:  # end of the stream: evaluate as of the last event
            return self._evaluate(self._wm) if self._wm > -math.inf else []
        if watermark < self._next_tick:
            return []
        t = math.floor(watermark / self.params.eval_interval_s) * self.params.eval_interval_s
        self._next_tick = t + self.params.eval_interval_s
        return self._evaluate(t)

    def _evaluate(self, t: float) -> list[Alert]:
        """Expire, update the graph where it changed, examine grown components, sweep."""
        self._expire(t - self.params.memory_s)
        alerts: list[Alert] = []
        if self._dirty_edges or self._dirty or self._flip:
            ups = self._refresh()
            if self._reweighed:
                self._reweighed = False
                cut = self._current_cut()
                if cut != self._cut:
                    self._cut, self._stale = cut, True
            if self._stale:
                roots = self._rebuild()
            else:
                for a, b in ups:
                    self._union(a, b)
                roots = {self._find(a) for a, _ in ups}
            alerts = self._examine(roots, t)
        if t - self._swept >= 4 * self._keep_s:
            self._sweep(t)
        return alerts

    def _expire(self, cutoff: float) -> None:
        rows, minp = self._rows, self.params.min_participation
        q = self._rows_q
        while q and q[0][0] < cutoff:
            pid = q.popleft()[1]
            n = rows[pid] - 1
            if n == minp - 1 and pid in self._adj:
                self._flip.add(pid)
            if n:
                rows[pid] = n
            else:
                del rows[pid]
                self._idle.append(pid)
        pq = self._pairs_q
        while pq and pq[0][0] < cutoff:
            _, a, b = pq.popleft()
            self._unpair(a, b)

    def _refresh(self) -> list[tuple[str, str]]:
        """Recompute changed edges' graph weights; return account pairs that reached the cut."""
        edges, adj = self._dirty_edges, self._adj
        minp = self.params.min_participation
        if minp > 1:
            coord = self._coord
            check = set(self._dirty)
            for p in self._flip:  # p's pairs (dis)qualify, and so may its partners' co-actions
                for q in adj.get(p, ()):
                    edges.add(_ukey(p, q))
                    check.add(q)
            for p in check:
                now = self._coordinated(p)
                if now != (p in coord):
                    (coord.add if now else coord.discard)(p)
                    edges.update(_ukey(p, q) for q in adj.get(p, ()))
        rows, coord, wd = self._rows, self._coord, self._wd
        ups: list[tuple[str, str]] = []
        for uk in sorted(edges):
            p, q = uk >> 32, uk & _LOW
            if self._distinct:
                w = max(wd.get(uk, 0), wd.get(q << 32 | p, 0))
            else:
                w = adj[p].get(q, 0) if p in adj else 0
            if w and minp > 1 and not (
                rows.get(p, 0) >= minp and rows.get(q, 0) >= minp and (p in coord or q in coord)
            ):
                w = 0
            old = self._counted.get(uk, 0)
            if w != old:
                if w:
                    self._counted[uk] = w
                else:
                    del self._counted[uk]
                self._bump(self._pacc[p], self._pacc[q], w - old, ups)  # type: ignore[arg-type]
        for pending in (self._dirty_edges, self._dirty, self._flip):
            pending.clear()  # in place: _process holds a reference to _flip
        return ups

    def _coordinated(self, p: int) -> bool:
        """CooRTweet's participation rule: has p min_participation rows in posts paired with
        participating accounts? (A pair counts if both participate and one is coordinated.)"""
        rows, minp = self._rows, self.params.min_participation
        n = 0
        for post in self._paired.get(p, ()):
            if any(rows.get(x, 0) >= minp for x in post.partners):  # type: ignore[union-attr]
                n += post.rows
                if n >= minp:
                    return True
        return False

    def _bump(self, a: str, b: str, delta: int, ups: list[tuple[str, str]]) -> None:
        """Change the account-level weight of (a, b) by ``delta``."""
        if a > b:
            a, b = b, a
        ga = self._graph.get(a)
        old = ga.get(b, 0) if ga else 0
        new = old + delta
        hist = self._hist
        self._reweighed = True
        if old:
            hist[old] -= 1
            if not hist[old]:
                del hist[old]
        if new:
            hist[new] = hist.get(new, 0) + 1
            self._graph.setdefault(a, {})[b] = new
            self._graph.setdefault(b, {})[a] = new
        else:
            for x, y in ((a, b), (b, a)):
                gx = self._graph[x]
                del gx[y]
                if not gx:
                    del self._graph[x]
        if old < self._cut <= new:
            ups.append((a, b))
        elif new < self._cut <= old:
            self._stale = True

    def _current_cut(self) -> int:
        q = self.params.edge_weight_quantile
        if q is None or not self._hist:
            return self.params.min_weight
        return max(self.params.min_weight, math.floor(quantile7(self._hist, q)) + 1)

    def _find(self, a: str) -> str:
        parent = self._parent
        if a not in parent:
            parent[a] = a
            self._size[a] = 1
            return a
        r = a
        while parent[r] != r:
            r = parent[r]
        while parent[a] != r:
            parent[a], a = r, parent[a]
        return r

    def _union(self, a: str, b: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if (self._size[ra], rb) < (self._size[rb], ra):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size.pop(rb)
        e = self._evald.pop(rb, 0)
        if e > self._evald.get(ra, 0):
            self._evald[ra] = e

    def _rebuild(self) -> set[str]:
        """Union-find from scratch (an edge left the graph); examined sizes carry over per account."""
        self._stale = False
        self._parent, self._size, self._evald = {}, {}, {}
        cut = self._cut
        for a, nb in self._graph.items():
            for b, w in nb.items():
                if a < b and w >= cut:
                    self._union(a, b)
        self._seen = {a: n for a, n in self._seen.items() if a in self._parent}
        for a, n in self._seen.items():
            r = self._find(a)
            if n > self._evald.get(r, 0):
                self._evald[r] = n
        return {a for a, r in self._parent.items() if a == r}

    def _examine(self, roots: set[str], t: float) -> list[Alert]:
        """Alerts of the components (or their communities) that are new or grew enough."""
        p = self.params
        comps: list[list[str]] = []
        for r in roots:
            n, e = self._size[r], self._evald.get(r, 0)
            if n < p.min_group_size or (e and not _grew(n, e, p.update_growth_fraction)):
                continue
            comps.append(self._component(r))
            self._evald[r] = n
        alerts: list[Alert] = []
        claimed: set[str] = set()
        for members in sorted(comps):
            for m in members:
                self._seen[m] = len(members)
            parts = [members] if len(members) <= p.split_above_accounts else self._communities(members)
            for part in sorted(parts, key=lambda x: (-len(x), x[0])):
                if len(part) >= p.min_group_size:
                    alert = self._match(part, t, claimed)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _component(self, root: str) -> list[str]:
        cut, graph = self._cut, self._graph
        seen = {root}
        todo = [root]
        while todo:
            a = todo.pop()
            for b, w in graph.get(a, {}).items():
                if w >= cut and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return sorted(seen)

    def _edges(self, members: list[str]) -> list[tuple[int, str, str]]:
        """Graph edges inside ``members`` as (weight, a, b), a < b, heaviest first."""
        inside = set(members)
        cut = self._cut
        edges = [
            (w, a, b) for a in members for b, w in self._graph.get(a, {}).items() if a < b and w >= cut and b in inside
        ]
        edges.sort(key=lambda x: (-x[0], x[1], x[2]))
        return edges

    def _communities(self, members: list[str]) -> list[list[str]]:
        g = nx.Graph()
        g.add_nodes_from(members)
        g.add_weighted_edges_from((a, b, w) for w, a, b in sorted(self._edges(members), key=lambda x: (x[1], x[2])))
        found = nx.community.louvain_communities(g, weight="weight", seed=LOUVAIN_SEED)
        return [sorted(c) for c in found]

    def _match(self, part: list[str], t: float, claimed: set[str]) -> Alert | None:
        """Tie ``part`` to the known group most of it belongs to, or open a new one."""
        edges = self._edges(part)
        if not edges:  # a community without inner edges
            return None
        votes = Counter(g for m in part if (g := self._member.get(m)) is not None and g not in claimed)
        if votes:
            gid = min(votes, key=lambda g: (-votes[g], g))
            rec = self._groups.pop(gid)  # re-inserted below: the dict stays in order of examination
            self._groups[gid] = rec
            inside = set(part)
            for m in rec[3]:
                if m not in inside and self._member.get(m) == gid:
                    del self._member[m]
            grown = _grew(len(part), rec[1], self.params.update_growth_fraction)
            rec[2], rec[3] = t, part
            if grown:
                rec[0] += 1
                rec[1] = len(part)
        else:
            gid = stable_id("ca-", part[0], math.floor(self._window(edges, t)[0] / self.params.memory_s))
            while gid in self._groups:  # same smallest account and bucket as a live group: derive another
                gid = stable_id("ca-", gid)
            rec = self._groups[gid] = [0, len(part), t, part]
            grown = True
        for m in part:
            self._member[m] = gid
        claimed.add(gid)
        return self._alert(gid, rec[0], part, edges, t) if grown else None

    def _pids(self, acc: str) -> list[int]:
        keys: list[Any] = [(acc, k) for k in range(len(self._kinds))] if self._per_type else [acc]
        return [self._pid[k] for k in keys if k in self._pid]

    def _pair_meta(self, a: str, b: str) -> tuple[float, float, list[float]]:
        first, last, deltas = math.inf, -math.inf, []
        for pa in self._pids(a):
            for pb in self._pids(b):
                m = self._meta.get(_ukey(pa, pb))
                if m is not None:
                    first, last = min(first, m[0]), max(last, m[1])
                    deltas += m[2]
        return first, last, deltas

    def _window(self, edges: list[tuple[int, str, str]], t: float) -> tuple[float, float]:
        spans = [self._pair_meta(a, b)[:2] for _, a, b in edges]
        start = max(min(s for s, _ in spans), t - self.params.memory_s)
        return start, max(e for _, e in spans)

    def _alert(self, gid: str, revision: int, part: list[str], edges: list[tuple[int, str, str]], t: float) -> Alert:
        degree: Counter[str] = Counter()
        for w, a, b in edges:
            degree[a] += w
            degree[b] += w
        order = sorted(part, key=lambda a: (-degree[a], a))
        start, end = self._window(edges, t)
        top_edges = []
        for w, a, b in edges[:TOP]:
            deltas = self._pair_meta(a, b)[2]
            top_edges.append(
                {"accounts": [a, b], "weight": w, "median_dt_s": statistics.median(deltas), "min_dt_s": min(deltas)}
            )
        sharers: dict[str, set[str]] = {}
        samples: list[tuple[str, Sample]] = []
        for a in order:
            mine = sorted((s for p in self._pids(a) for s in self._samples.get(p, ())), reverse=True)
            for s in mine:
                sharers.setdefault(s[2], set()).add(a)
            if mine and len(samples) < SAMPLE_POSTS:
                samples.append((a, mine[0]))
        objects = sorted(sharers.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP]
        return Alert(
            type=self.NAME,
            group_id=gid,
            revision=revision,
            score=sum(w for w, _, _ in edges) / len(edges) * math.log2(len(part)),
            window_start=start,
            window_end=end,
            accounts=tuple(order[: self.params.max_alert_accounts]),
            account_count=len(part),
            keys=tuple(o for o, _ in objects),
            evidence={
                "edges": top_edges,
                "top_objects": [{"object": o, "accounts": len(s)} for o, s in objects],
                "sample_posts": [{"event_id": e, "account_id": a, "ts": ts, "object": o} for a, (ts, e, o) in samples],
                "min_edge_weight": self._cut,
            },
            detector_params=self._params_json,
        )

    def _sweep(self, t: float) -> None:
        """Drop what nothing can reach any more: old buffers and posts, idle participants, old groups."""
        self._swept = t
        lo = t - self._keep_s
        for objmap in self._bufs:
            for value, buf in list(objmap.items()):
                if buf[0][0] < lo:
                    buf[:] = [x for x in buf if x[0] >= lo]
                    if not buf:
                        del objmap[value]
        q = self._post_q
        while q and q[0][0] < lo:
            post = q.popleft()[1]
            if self._posts.get(post.key) is post:
                del self._posts[post.key]
        touch, idle, plast = self._touch_q, self._idle, self._plast
        while touch and touch[0][0] < lo:
            w, pid = touch.popleft()
            if plast[pid] == w:  # its last action
                idle.append(pid)
        for pid in idle:  # free it unless it acted again or still has rows or pairs (they re-add it when gone)
            key = self._pkey[pid]
            if key is not None and plast[pid] < lo and pid not in self._adj and pid not in self._rows:
                del self._pid[key]
                self._pkey[pid] = self._pacc[pid] = None
                self._coord.discard(pid)
                self._free.append(pid)
        idle.clear()
        groups = self._groups  # least recently examined first
        while groups and (rec := next(iter(groups.values())))[2] < t - self.params.memory_s:
            gid = next(iter(groups))
            for m in rec[3]:
                if self._member.get(m) == gid:
                    del self._member[m]
            del groups[gid]

    # -- reading -----------------------------------------------------------------------
    def weighted_edges(self, *, thresholded: bool = False) -> dict[tuple[str, str], int]:
        """Account pairs ``(a, b)``, ``a < b``, with their weight, as of the last evaluation.

        Every pair that passes the participation rules (the peers' full network), or with
        ``thresholded`` only the alert graph's edges (``>= min_weight``, above the quantile).
        """
        lo = self._cut if thresholded else 1
        return {(a, b): w for a, nb in self._graph.items() for b, w in nb.items() if a < b and w >= lo}

    @property
    def edge_cut(self) -> int:
        """The smallest weight of an alert-graph edge (min_weight, raised by the quantile)."""
        return self._cut

    # -- state -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        index: dict[int, int] = {}
        table: list[_Post] = []

        def ix(post: _Post) -> int:
            i = index.get(id(post))
            if i is None:
                i = index[id(post)] = len(table)
                table.append(post)
            return i

        post_q = [(w, ix(p)) for w, p in self._post_q]
        posts = [ix(p) for p in self._posts.values()]
        bufs = [[[v, [[t, pid, ix(p), e] for t, pid, p, e in buf]] for v, buf in m.items()] for m in self._bufs]
        pairs = [(w, ix(a), ix(b)) for w, a, b in self._pairs_q]
        state = {
            "wm": _fin(self._wm),
            "next_tick": _fin(self._next_tick),
            "swept": _fin(self._swept),
            "idle": self._idle,
            "cut": self._cut,
            "stale": self._stale,
            "kinds": self._kinds,
            "pkey": self._pkey,
            "pacc": self._pacc,
            "free": self._free,
            "post_ids": [p.key[0] for p in table],
            "posts": posts,
            "bufs": bufs,
            "samples": [[p, list(s)] for p, s in self._samples.items()],
            "coord": sorted(self._coord),
            "dirty": sorted(self._dirty),
            "flip": sorted(self._flip),
            "dirty_edges": sorted(self._dirty_edges),
            "parent": list(self._parent.items()),
            "size": list(self._size.items()),
            "evald": list(self._evald.items()),
            "seen": list(self._seen.items()),
            "groups": [[g, *rec] for g, rec in self._groups.items()],
            "member": list(self._member.items()),
        }
        meta = self._meta.values()
        arrays = [
            np.array(self._plast, dtype=np.float64),
            _table(post_q, 2, np.float64),
            _table(self._rows_q, 2, np.float64),
            _table(self._touch_q, 2, np.float64),
            _table(pairs, 3, np.float64),
            _table([(p.pid, p.rows) for p in table], 2),
            _table(self._rows.items(), 2),
            _table(self._counted.items(), 2),
            np.array(list(self._meta), dtype=np.int64),
            _table([(m[0], m[1]) for m in meta], 2, np.float64),
            np.array([len(m[2]) for m in meta], dtype=np.int64),
            np.array([d for m in meta for d in m[2]], dtype=np.float64),
        ]
        return state, arrays

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        plast, post_q, rows_q, touch_q, pairs, table_a, rows, counted, mkeys, mspan, mlen, deltas = (
            list(zip(*(c.tolist() for c in a.T))) if a.ndim == 2 else a.tolist() for a in arrays
        )
        key = tuple if self._per_type else (lambda k: k)
        self._wm, self._next_tick = _unfin(state["wm"]), _unfin(state["next_tick"])
        self._swept, self._idle = _unfin(state["swept"]), state["idle"]
        self._cut, self._stale = state["cut"], state["stale"]
        for name in state["kinds"]:
            self._kind_of(name)
        self._pkey = [None if k is None else key(k) for k in state["pkey"]]
        self._pacc, self._plast, self._free = state["pacc"], plast, state["free"]
        self._pid = {k: pid for pid, k in enumerate(self._pkey) if k is not None}
        table = [_Post((cid, pid), pid, n) for cid, (pid, n) in zip(state["post_ids"], table_a)]
        self._post_q = deque((w, table[int(i)]) for w, i in post_q)
        self._posts = {table[i].key: table[i] for i in state["posts"]}
        self._bufs = [{v: [(t, pid, table[i], e) for t, pid, i, e in buf] for v, buf in m} for m in state["bufs"]]
        self._rows_q = deque((w, int(p)) for w, p in rows_q)
        self._touch_q = deque((w, int(p)) for w, p in touch_q)
        self._pairs_q = deque((w, table[int(a)], table[int(b)]) for w, a, b in pairs)
        for _, a, b in self._pairs_q:  # partners, per-participant pairs, distinct-post weights
            self._partner(a, b.pid)
            self._partner(b, a.pid)
            for p, q in ((a.pid, b.pid), (b.pid, a.pid)):
                mine = self._adj.setdefault(p, {})
                mine[q] = mine.get(q, 0) + 1
        self._rows, self._counted = dict(rows), dict(counted)
        ups: list[tuple[str, str]] = []  # the account graph and its histogram, from the counted weights
        for uk, w in self._counted.items():
            self._bump(self._pacc[uk >> 32], self._pacc[uk & _LOW], w, ups)  # type: ignore[arg-type]
        self._reweighed = False
        ends = np.cumsum(mlen).tolist()
        self._meta = {k: [first, last, deltas[e - n : e]] for k, (first, last), n, e in zip(mkeys, mspan, mlen, ends)}
        self._samples = {p: deque(map(tuple, s), maxlen=SAMPLES) for p, s in state["samples"]}  # type: ignore[misc]
        self._coord, self._dirty = set(state["coord"]), set(state["dirty"])
        self._flip, self._dirty_edges = set(state["flip"]), set(state["dirty_edges"])
        self._parent, self._size = dict(state["parent"]), dict(state["size"])
        self._evald, self._seen = dict(state["evald"]), dict(state["seen"])
        self._groups = {g: rec for g, *rec in state["groups"]}
        self._member = dict(state["member"])
