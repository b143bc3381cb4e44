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
from operator import attrgetter
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
Buffered = tuple[float, int, "_Post", Sample]  # (ts, pid, post, its sample) of an action in an object's buffer


class _Post:
    """One post of one participant: its rows (objects) and live co-action partners."""

    __slots__ = ("key", "partners", "pid", "rows")

    def __init__(self, key: tuple[str, int], pid: int, rows: int = 0) -> None:
        self.key = key
        self.pid = pid
        self.rows = rows
        self.partners: dict[int, int] | None = None  # partner pid -> live pairs with this post


class _Link:
    """The live co-actions of two participants, one record for both directions: a pair
    costs one lookup, and expiry reaches it from the pair queue without any."""

    __slots__ = ("counted", "deltas", "dirty", "edge", "first", "key", "last", "n", "p_posts", "q_posts")

    def __init__(self, key: int, first: float, last: float, deltas: list[float]) -> None:
        self.key = key  # p << 32 | q, p < q
        self.first, self.last = first, last  # watermarks of its first and latest pair
        self.deltas = deltas  # |dt| of its latest DELTAS pairs
        self.n = 0  # live share pairs
        self.p_posts = self.q_posts = 0  # distinct_contents: posts of p co-shared by q, of q co-shared by p
        self.counted = 0  # its weight in the graph as of the last evaluation (0 = fails participation)
        self.edge: _Edge | None = None  # the account pair's graph edge while counted
        self.dirty = False  # in _dirty_edges


class _Edge:
    """An edge of the account graph, one object for both directions: a weight change is one write."""

    __slots__ = ("a", "b", "w")

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b, self.w = a, b, 0


_KEY = attrgetter("key")


def _ukey(p: int, q: int) -> int:
    return p << 32 | q if p < q else q << 32 | p


def _grew(n: int, before: int, fraction: float) -> bool:
    """``n`` is at least ``fraction`` more than ``before`` (with float slack: 10 * 1.2 is 12.000000000000002)."""
    return n >= before * (1 + fraction) - 1e-9


def _table(rows: Any, width: int, dtype: type = np.int64) -> np.ndarray:
    """Rows of numbers as a 2-D array (also when empty)."""
    return np.array(list(rows), dtype=dtype).reshape(-1, width)


def _flat(q: Sequence[Any], width: int) -> np.ndarray:
    """A flat FIFO of numbers as a 2-D float array, one entry per row."""
    return np.array(q, dtype=np.float64).reshape(-1, width)


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
        # FIFOs are flat deques, a fixed number of items per entry: no tuple per entry for the
        # garbage collector to scan again and again
        self._touch_q: deque[Any] = deque()  # watermark, pid per action: finds idle ones
        self._idle: list[int] = []  # participants whose last rows or pairs expired: free them if idle
        self._free: list[int] = []
        self._kinds: list[str] = []
        self._kind: dict[str, int] = {}
        self._bufs: list[dict[str, list[Buffered]]] = []  # kind -> object -> actions
        self._fields = [(f, -1 if f == "object_id" else self._kind_of(f[:-1])) for f in params.object_fields]
        self._posts: dict[tuple[str, int], _Post] = {}  # posts that may still get rows
        self._post_q: deque[Any] = deque()  # watermark, post
        self._rows: dict[int, int] = {}  # pid -> object actions in memory
        self._rows_q: deque[Any] = deque()  # watermark, pid per row
        self._pairs_q: deque[Any] = deque()  # watermark, post, post, link per live share pair
        self._links: dict[int, _Link] = {}  # ukey -> live link, in order of creation
        self._adj: dict[int, dict[int, _Link]] = {}  # pid -> partner pid -> link
        self._partners = self._distinct or params.min_participation > 1  # posts track their partners
        self._paired: dict[int, dict[_Post, None]] = {}  # pid -> its posts with partners
        self._samples: dict[int, deque[Sample]] = {}  # pid -> its latest co-actions
        self._counted: dict[int, _Link] = {}  # ukey -> link with a weight in the graph, in order of entry
        self._graph: dict[str, dict[str, _Edge]] = {}  # account -> account -> edge
        self._hist: dict[int, int] = {}  # weight -> account pairs (kept only for edge_weight_quantile)
        self._cut = params.min_weight  # graph edges weigh at least this
        self._quantile = params.edge_weight_quantile is not None  # the cut follows the weights
        self._coord: set[int] = set()  # participants passing the co-action part of min_participation
        # participants whose posts gained (lost) partners or rows: only they may become (stop being) coordinated
        self._grown: set[int] = set()
        self._shrunk: set[int] = set()
        # participants with pairs whose rows rose to (fell below) min_participation
        self._rose: set[int] = set()
        self._fell: set[int] = set()
        self._dirty_edges: list[_Link] = []  # links whose weight may have changed
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
        step, minp, per_type, one_actions = p.eval_interval_s, p.min_participation, self._per_type, self._one
        oid_only, types, kinds = p.object_fields == ["object_id"], self._types, self._kind
        pids, plast, posts, rows, bufs, adj = self._pid, self._plast, self._posts, self._rows, self._bufs, self._adj
        touch, post_q, rows_q = self._touch_q.append, self._post_q.append, self._rows_q.append
        wm, tick = self._wm, self._next_tick
        pairs = 0
        for e in events:
            ts = e.ts
            if ts > wm:
                if ts >= tick:  # the watermark crosses a tick: evaluate before this event
                    t = math.floor(ts / step) * step
                    alerts += self._evaluate(t, ts)
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
                    touch(wm)
                    touch(pid)
                elif plast[pid] != wm:
                    plast[pid] = wm
                    touch(wm)
                    touch(pid)
                ck = (cid, pid)
                post = posts.get(ck)
                if post is None:
                    post = posts[ck] = _Post(ck, pid)
                    post_q(wm)
                    post_q(post)
                elif one:
                    continue
                post.rows += 1
                if minp > 1:
                    if post.partners is not None:  # more co-action rows for the participant
                        self._grown.add(pid)
                    n = rows.get(pid, 0) + 1
                    rows[pid] = n
                    rows_q(wm)
                    rows_q(pid)
                    if n == minp and pid in adj:  # without pairs its status matters to nobody yet
                        self._rose.add(pid)
                entry = (ts, pid, post, (ts, eid, value))
                objmap = bufs[kind]
                buf = objmap.get(value)
                if buf is None:
                    objmap[value] = [entry]
                else:
                    pairs += self._scan(buf, entry, wm)
        self._wm = wm
        if pairs:
            self.stats["pairs"] += pairs
        return alerts

    def _objects(self, e: Event) -> list[tuple[int, str]]:
        """(kind, object) pairs the event acts on, per ``object_fields``, without repeats."""
        out: list[tuple[int, str]] = []
        for field, kind in self._fields:
            if kind < 0:  # object_id: its kind is the event's object_type
                value = e.object_id
                if value is not None:
                    otype = e.extra.get("object_type")
                    if self._types is None or otype in self._types:
                        name = otype if type(otype) is str else "object"
                        k = self._kind.get(name)
                        out.append((self._kind_of(name) if k is None else k, value))
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
    def _scan(self, buf: list[Buffered], entry: Buffered, now: float) -> int:
        """Pair a new action with its object's buffer, then buffer it; the number of pairs."""
        lo = now - self._keep_s
        if buf[0][0] < lo:
            i = 1
            while i < len(buf) and buf[i][0] < lo:
                i += 1
            del buf[:i]
        ts, pid, post, sample = entry
        window, fanout = self.params.pair_window_s, self.params.max_fanout
        if fanout:  # one action per account, of the latest k accounts
            hits = []
            own = -1
            for j, x in enumerate(buf):
                if x[1] == pid:
                    own = j
                elif -window <= ts - x[0] <= window:
                    hits.append(x)
            if own >= 0:
                del buf[own]
            buf.append(entry)
            if len(buf) > fanout:
                del buf[0]
        else:
            hits = [x for x in buf if x[1] != pid and -window <= ts - x[0] <= window]
            buf.append(entry)
        if hits:
            self._pair(entry, hits, now)
        return len(hits)

    def _pair(self, new: Buffered, hits: list[Buffered], now: float) -> None:
        """The ``new`` action co-acted with each of ``hits`` (buffered actions of other participants)."""
        ts, pa, a, sample_a = new
        links, samples, queue, dirty = self._links, self._samples, self._pairs_q.append, self._dirty_edges.append
        partner = self._partner if self._partners else None
        grown = self._grown if self.params.min_participation > 1 else None
        for t2, pb, b, sample_b in hits:
            uk = pa << 32 | pb if pa < pb else pb << 32 | pa
            link = links.get(uk)
            if link is None:
                link = links[uk] = _Link(uk, now, now, [abs(ts - t2)])
                self._adjoin(pa, pb, link, sample_a)
                self._adjoin(pb, pa, link, sample_b)
            else:
                link.last = now
                deltas = link.deltas
                deltas.append(abs(ts - t2))
                if len(deltas) > DELTAS:
                    del deltas[0]
                samples[pa].append(sample_a)
                samples[pb].append(sample_b)
            link.n += 1
            queue(now)
            queue(a)
            queue(b)
            queue(link)
            if not link.dirty:
                link.dirty = True
                dirty(link)
            if partner is not None:
                partner(a, pb, link)
                partner(b, pa, link)
            if grown is not None:
                grown.add(pb)
        if grown is not None:
            grown.add(pa)

    def _adjoin(self, p: int, q: int, link: _Link, sample: Sample) -> None:
        """``p``'s first live pair with ``q``."""
        mine = self._adj.get(p)
        if mine is None:
            self._adj[p] = {q: link}
            self._samples[p] = deque((sample,), maxlen=SAMPLES)
        else:
            mine[q] = link
            self._samples[p].append(sample)

    def _partner(self, post: _Post, other: int, link: _Link) -> None:
        """One more live pair of ``post`` with participant ``other``."""
        part = post.partners
        if part is None:
            post.partners = {other: 1}
            mine = self._paired.get(post.pid)
            if mine is None:
                self._paired[post.pid] = {post: None}
            else:
                mine[post] = None
        elif other in part:
            part[other] += 1
            return
        else:
            part[other] = 1
        if self._distinct:
            if post.pid < other:
                link.p_posts += 1
            else:
                link.q_posts += 1

    def _unpair(self, a: _Post, b: _Post, link: _Link) -> None:
        """An expired pair of posts ``a`` and ``b``."""
        pa, pb = a.pid, b.pid
        if self._partners:
            self._unpartner(a, pb, link)
            self._unpartner(b, pa, link)
            if self.params.min_participation > 1:
                self._shrunk.add(pa)
                self._shrunk.add(pb)
        link.n -= 1
        if not link.n:
            del self._links[link.key]
            for p, q in ((pa, pb), (pb, pa)):
                mine = self._adj[p]
                del mine[q]
                if not mine:
                    del self._adj[p], self._samples[p]
                    self._idle.append(p)
        if not link.dirty:
            link.dirty = True
            self._dirty_edges.append(link)

    def _unpartner(self, post: _Post, other: int, link: _Link) -> None:
        part = post.partners
        assert part is not None
        n = part[other] - 1
        if n:
            part[other] = n
            return
        del part[other]
        if self._distinct:
            if post.pid < other:
                link.p_posts -= 1
            else:
                link.q_posts -= 1
        if not part:
            post.partners = None
            mine = self._paired[post.pid]
            del mine[post]
            if not mine:
                del self._paired[post.pid]

    # -- evaluation ------------------------------------------------------------------
    def _advance(self, watermark: float) -> list[Alert]:
        if watermark == math.inf:  # end of the stream: evaluate as of the last event
            return self._evaluate(self._wm, watermark) if self._wm > -math.inf else []
        if watermark < self._next_tick:
            return []
        t = math.floor(watermark / self.params.eval_interval_s) * self.params.eval_interval_s
        self._next_tick = t + self.params.eval_interval_s
        return self._evaluate(t, watermark)

    def _evaluate(self, t: float, at: float) -> list[Alert]:
        """Expire, update the graph where it changed, examine grown components, sweep (decided at watermark ``at``)."""
        self._expire(t - self.params.memory_s)
        alerts: list[Alert] = []
        if self._dirty_edges or self._grown or self._shrunk or self._rose or self._fell:
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
            alerts = self._examine(roots, t, at)
        if t - self._swept >= 4 * self._keep_s:
            self._sweep(t)
        return alerts

    def _expire(self, cutoff: float) -> None:
        rows, minp = self._rows, self.params.min_participation
        q = self._rows_q
        while q and q[0] < cutoff:
            q.popleft()
            pid = q.popleft()
            n = rows[pid] - 1
            if n == minp - 1 and pid in self._adj:
                self._fell.add(pid)
            if n:
                rows[pid] = n
            else:
                del rows[pid]
                self._idle.append(pid)
        pq = self._pairs_q
        pop = pq.popleft
        while pq and pq[0] < cutoff:
            pop()
            self._unpair(pop(), pop(), pop())

    def _refresh(self) -> list[tuple[str, str]]:
        """Recompute changed edges' graph weights; return account pairs that reached the cut."""
        minp = self.params.min_participation
        if minp > 1:
            self._requalify()
        rows, coord, counted, distinct, bump = self._rows, self._coord, self._counted, self._distinct, self._bump
        ups: list[tuple[str, str]] = []
        dirty = self._dirty_edges
        dirty.sort(key=_KEY)
        for link in dirty:
            link.dirty = False
            w = (link.p_posts if link.p_posts > link.q_posts else link.q_posts) if distinct else link.n
            if w and minp > 1:
                p, q = link.key >> 32, link.key & _LOW
                if not (rows.get(p, 0) >= minp and rows.get(q, 0) >= minp and (p in coord or q in coord)):
                    w = 0
            old = link.counted
            if w != old:
                link.counted = w
                if not old:
                    counted[link.key] = link
                elif not w:
                    del counted[link.key]
                bump(link, w - old, ups)
        for pending in (dirty, self._grown, self._shrunk, self._rose, self._fell):
            pending.clear()  # in place: _process holds references
        return ups

    def _requalify(self) -> None:
        """Update who passes the co-action part of min_participation; mark the edges of those who changed.

        :meth:`_coordinated` only grows with more partners, rows and partners' rows, so only
        checks that can flip are made: a participant that only gained (lost) is checked if
        it fails (passes). A participant crossing min_participation changes its edges."""
        dirty, adj, coord, rose, fell = self._dirty_edges, self._adj, self._coord, self._rose, self._fell
        check = {p for p in self._grown if p not in coord}
        check.update(p for p in self._shrunk if p in coord)
        for p in rose | fell:
            gain, loss = p in rose, p in fell
            for q, link in adj.get(p, {}).items():
                if not link.dirty:
                    link.dirty = True
                    dirty.append(link)
                if loss if q in coord else gain:
                    check.add(q)
        for p in check:
            now = self._coordinated(p)
            if now != (p in coord):
                (coord.add if now else coord.discard)(p)
                for link in adj.get(p, {}).values():
                    if not link.dirty:
                        link.dirty = True
                        dirty.append(link)

    def _coordinated(self, p: int) -> bool:
        """CooRTweet's participation rule: has p min_participation rows in posts paired with
        participating accounts? (A pair counts if both participate and one is coordinated.)"""
        rows, minp = self._rows, self.params.min_participation
        n = 0
        for post in self._paired.get(p, ()):
            for x in post.partners:  # type: ignore[union-attr]
                if rows.get(x, 0) >= minp:
                    n += post.rows
                    if n >= minp:
                        return True
                    break
        return False

    def _bump(self, link: _Link, delta: int, ups: list[tuple[str, str]]) -> None:
        """Change the account-level weight of ``link``'s accounts by ``delta`` (``link.counted`` is already new)."""
        edge = link.edge
        if edge is None:
            edge = link.edge = self._edge(link.key)
        old = edge.w
        new = edge.w = old + delta
        if not link.counted:
            link.edge = None
        if self._quantile:
            self._reweigh(old, new)
        if not new:
            self._drop(edge)
        if old < self._cut <= new:
            ups.append((edge.a, edge.b))
        elif new < self._cut <= old:
            self._stale = True

    def _edge(self, uk: int) -> _Edge:
        """The graph edge of the accounts of participants ``uk``, added (weight 0) if missing."""
        a, b = self._pacc[uk >> 32], self._pacc[uk & _LOW]
        if a > b:  # type: ignore[operator]
            a, b = b, a
        graph = self._graph
        ga = graph.get(a)  # type: ignore[arg-type]
        edge = ga.get(b) if ga else None  # type: ignore[arg-type]
        if edge is None:
            edge = _Edge(a, b)  # type: ignore[arg-type]
            for x, y in ((a, b), (b, a)):
                gx = graph.get(x)  # type: ignore[arg-type]
                if gx is None:
                    graph[x] = {y: edge}  # type: ignore[index, dict-item]
                else:
                    gx[y] = edge  # type: ignore[index]
        return edge

    def _drop(self, edge: _Edge) -> None:
        for x, y in ((edge.a, edge.b), (edge.b, edge.a)):
            gx = self._graph[x]
            del gx[y]
            if not gx:
                del self._graph[x]

    def _reweigh(self, old: int, new: int) -> None:
        """One account pair moves from weight ``old`` to ``new`` in the histogram the quantile reads."""
        hist = self._hist
        self._reweighed = True
        if old:
            hist[old] -= 1
            if not hist[old]:
                del hist[old]
        if new:
            hist[new] = hist.get(new, 0) + 1

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
            for b, edge in nb.items():
                if a < b and edge.w >= cut:
                    self._union(a, b)
        self._seen = {a: n for a, n in self._seen.items() if a in self._parent}
        for a, n in self._seen.items():
            r = self._find(a)
            if n > self._evald.get(r, 0):
                self._evald[r] = n
        return {a for a, r in self._parent.items() if a == r}

    def _examine(self, roots: set[str], t: float, at: float) -> list[Alert]:
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
                    alert = self._match(part, t, claimed, at)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _component(self, root: str) -> list[str]:
        cut, graph = self._cut, self._graph
        seen = {root}
        todo = [root]
        while todo:
            a = todo.pop()
            for b, edge in graph.get(a, {}).items():
                if edge.w >= cut and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return sorted(seen)

    def _edges(self, members: list[str]) -> list[tuple[int, str, str]]:
        """Graph edges inside ``members`` as (weight, a, b), a < b, heaviest first."""
        inside = set(members)
        cut = self._cut
        edges = [
            (e.w, a, b) for a in members for b, e in self._graph.get(a, {}).items() if a < b and e.w >= cut and b in inside
        ]
        edges.sort(key=lambda x: (-x[0], x[1], x[2]))
        return edges

    def _communities(self, members: list[str]) -> list[list[str]]:
        g = nx.Graph()
        g.add_nodes_from(members)
        g.add_weighted_edges_from((a, b, w) for w, a, b in sorted(self._edges(members), key=lambda x: (x[1], x[2])))
        found = nx.community.louvain_communities(g, weight="weight", seed=LOUVAIN_SEED)
        return [sorted(c) for c in found]

    def _match(self, part: list[str], t: float, claimed: set[str], at: float) -> Alert | None:
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
        return self._alert(gid, rec[0], part, edges, t, at) if grown else None

    def _pids(self, acc: str) -> list[int]:
        keys: list[Any] = [(acc, k) for k in range(len(self._kinds))] if self._per_type else [acc]
        return [self._pid[k] for k in keys if k in self._pid]

    def _pair_meta(self, a: str, b: str) -> tuple[float, float, list[float]]:
        first, last, deltas = math.inf, -math.inf, []
        for pa in self._pids(a):
            for pb in self._pids(b):
                link = self._links.get(_ukey(pa, pb))
                if link is not None:
                    first, last = min(first, link.first), max(last, link.last)
                    deltas += link.deltas
        return first, last, deltas

    def _window(self, edges: list[tuple[int, str, str]], t: float) -> tuple[float, float]:
        spans = [self._pair_meta(a, b)[:2] for _, a, b in edges]
        start = max(min(s for s, _ in spans), t - self.params.memory_s)
        return start, max(e for _, e in spans)

    def _alert(
        self, gid: str, revision: int, part: list[str], edges: list[tuple[int, str, str]], t: float, at: float
    ) -> Alert:
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
            at=at,
        )

    def _sweep(self, t: float) -> None:
        """Drop what nothing can reach any more: old buffers and posts, idle participants, old groups."""
        self._swept = t
        lo = t - self._keep_s
        for objmap in self._bufs:
            gone = []
            for value, buf in objmap.items():
                if buf[0][0] < lo:
                    buf[:] = [x for x in buf if x[0] >= lo]
                    if not buf:
                        gone.append(value)
            for value in gone:
                del objmap[value]
        q = self._post_q
        while q and q[0] < lo:
            q.popleft()
            post = q.popleft()
            if self._posts.get(post.key) is post:
                del self._posts[post.key]
        touch, idle, plast = self._touch_q, self._idle, self._plast
        while touch and touch[0] < lo:
            w, pid = touch.popleft(), touch.popleft()
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
        return {(a, b): e.w for a, nb in self._graph.items() for b, e in nb.items() if a < b and e.w >= lo}

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

        it = iter(self._post_q)
        post_q = [x for w, p in zip(it, it) for x in (w, ix(p))]
        posts = [ix(p) for p in self._posts.values()]
        bufs = [[[v, [[t, pid, ix(p), s[1]] for t, pid, p, s in buf]] for v, buf in m.items()] for m in self._bufs]
        it = iter(self._pairs_q)
        pairs = [(w, ix(a), ix(b)) for w, a, b, _ in zip(it, it, it, it)]
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
            "dirty": sorted(self._grown | self._shrunk),
            "flip": sorted(self._rose | self._fell),
            "dirty_edges": sorted(link.key for link in self._dirty_edges),
            "parent": list(self._parent.items()),
            "size": list(self._size.items()),
            "evald": list(self._evald.items()),
            "seen": list(self._seen.items()),
            "groups": [[g, *rec] for g, rec in self._groups.items()],
            "member": list(self._member.items()),
        }
        links = self._links.values()
        arrays = [
            np.array(self._plast, dtype=np.float64),
            _flat(post_q, 2),
            _flat(self._rows_q, 2),
            _flat(self._touch_q, 2),
            _table(pairs, 3, np.float64),
            _table([(p.pid, p.rows) for p in table], 2),
            _table(self._rows.items(), 2),
            _table(((uk, link.counted) for uk, link in self._counted.items()), 2),
            np.array(list(self._links), dtype=np.int64),
            _table([(link.first, link.last) for link in links], 2, np.float64),
            np.array([len(link.deltas) for link in links], dtype=np.int64),
            np.array([d for link in links for d in link.deltas], dtype=np.float64),
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
        self._post_q = deque(x for w, i in post_q for x in (w, table[int(i)]))
        self._posts = {table[i].key: table[i] for i in state["posts"]}
        self._bufs = [
            {v: [(t, pid, table[i], (t, e, v)) for t, pid, i, e in buf] for v, buf in m} for m in state["bufs"]
        ]
        self._rows_q = deque(x for w, p in rows_q for x in (w, int(p)))
        self._touch_q = deque(x for w, p in touch_q for x in (w, int(p)))
        ends = np.cumsum(mlen).tolist()
        self._links = {
            k: _Link(k, first, last, deltas[e - n : e]) for k, (first, last), n, e in zip(mkeys, mspan, mlen, ends)
        }
        self._pairs_q = deque()
        for w, i, j in pairs:  # live pairs: link counts, adjacency, partners
            a, b = table[int(i)], table[int(j)]
            link = self._links[_ukey(a.pid, b.pid)]
            link.n += 1
            self._pairs_q.extend((w, a, b, link))
            self._adj.setdefault(a.pid, {})[b.pid] = link
            self._adj.setdefault(b.pid, {})[a.pid] = link
            if self._partners:
                self._partner(a, b.pid, link)
                self._partner(b, a.pid, link)
        self._rows = dict(rows)
        ups: list[tuple[str, str]] = []  # the account graph and its histogram, from the counted weights
        for uk, w in counted:
            link = self._counted[uk] = self._links[uk]
            link.counted = w
            self._bump(link, w, ups)
        self._reweighed = False
        self._samples = {p: deque(map(tuple, s), maxlen=SAMPLES) for p, s in state["samples"]}  # type: ignore[misc]
        self._coord = set(state["coord"])
        self._grown, self._shrunk = set(state["dirty"]), set(state["dirty"])  # gained or lost: check them all
        self._rose, self._fell = set(state["flip"]), set(state["flip"])
        self._dirty_edges = [self._links.get(uk) or _Link(uk, 0.0, 0.0, []) for uk in state["dirty_edges"]]
        for link in self._dirty_edges:
            link.dirty = True
        self._parent, self._size = dict(state["parent"]), dict(state["size"])
        self._evald, self._seen = dict(state["evald"]), dict(state["seen"])
        self._groups = {g: rec for g, *rec in state["groups"]}
        self._member = dict(state["member"])
