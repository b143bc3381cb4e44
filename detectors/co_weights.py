"""co_action pair weights: live share pairs in, account-pair weights (the network) out.

Two implementations of one small protocol (:class:`Weights`), both fed by the detector with
segments of new and expired pairs (and, for participation, of actions):

* :class:`Counting` — no participation rules, accounts as participants: an edge's weight is
  its number of live share pairs (``share_pairs``) or of distinct objects with a live share
  pair (``distinct_objects``). One or two dict operations per pair: the default's hot path.
* :class:`Links` — everything else, exactly as the peers define it: ``distinct_contents``
  (weight u->v = distinct posts of u with a live pair with v; the pair weighs the larger
  direction), CooRTweet's ``min_participation`` (a pair counts only if both participants
  have that many object actions in memory and one of them that many in posts that paired
  with such participants), per-object-type participants summed into account edges, and the
  weight histogram that ``edge_weight_quantile`` reads. Per-pair Python work; the peers'
  presets run here.

``tests/detectors/test_co_action.py`` checks that both give the same network where both apply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from detectors.params import CoActionParams

_LOW = (1 << 32) - 1


def fast_weights(p: CoActionParams) -> bool:
    """Whether an edge's weight is just its live share pairs (:class:`Counting`)."""
    return (p.weight_mode != "distinct_contents" and p.min_participation == 1 and p.participation_scope == "all"
            and p.edge_weight_quantile is None)  # fmt: skip


def pair_key(p: int, q: int) -> int:
    """One int for an unordered pair of ids below 2**32."""
    return p << 32 | q if p < q else q << 32 | p


class Segment(Protocol):
    """Python lists of one run of pairs (the detector's FIFO rows): ``ek`` account-pair keys,
    ``eo`` (account pair, object) keys, ``uk`` participant-pair keys, ``pn``/``po``
    participants and ``sn``/``so`` posts of the new and the older action."""

    ek: Sequence[int]
    eo: Sequence[int]
    uk: Sequence[int]
    pn: Sequence[int]
    po: Sequence[int]
    sn: Sequence[int]
    so: Sequence[int]


class Weights(Protocol):
    ew: dict[int, int]  # account-pair key -> weight in the network (0 = absent)
    total: int  # the sum of ew's weights
    hist: dict[int, int] | None  # weight -> edges, when edge_weight_quantile reads it

    def add(self, seg: Segment) -> None: ...

    def remove(self, seg: Segment) -> None: ...

    def refresh(self, rows: np.ndarray) -> list[int]:
        """Bring ``ew`` up to date (``rows``: object actions in memory per participant); the
        edges whose weight changed and that weigh, or weighed, at least ``min_weight``."""
        ...

    def release(self, pids: Iterable[int]) -> None:
        """Participant ids about to be reused (they have no rows and no pairs)."""
        ...


def _firsts(live: dict[int, int], keys: Sequence[int], values: Sequence[int]) -> list[int]:
    """Count each of ``keys`` in ``live``; the ``values`` of those counted for the first time."""
    out = []
    get = live.get
    for k, v in zip(keys, values):
        c = get(k, 0)
        live[k] = c + 1
        if not c:
            out.append(v)
    return out


def _lasts(live: dict[int, int], keys: Sequence[int], values: Sequence[int]) -> list[int]:
    """Uncount each of ``keys``; the ``values`` of those no longer counted."""
    out = []
    for k, v in zip(keys, values):
        c = live[k] - 1
        if c:
            live[k] = c
        else:
            del live[k]
            out.append(v)
    return out


class Counting:
    """Edge weight = live share pairs of the two accounts, or the distinct objects they are on."""

    def __init__(self, min_weight: int, per_object: bool) -> None:
        self.min_weight = min_weight
        self.ew: dict[int, int] = {}
        self.total = 0
        self.hist = None
        self._objects: dict[int, int] | None = {} if per_object else None  # (pair, object) -> live pairs
        self._changed: list[int] = []  # edges at or above min_weight before or after a change

    def add(self, seg: Segment) -> None:
        keys = seg.ek if self._objects is None else _firsts(self._objects, seg.eo, seg.ek)
        ew, changed, minw = self.ew, self._changed, self.min_weight
        get = ew.get
        for k in keys:
            n = get(k, 0) + 1
            ew[k] = n
            if n >= minw:
                changed.append(k)
        self.total += len(keys)

    def remove(self, seg: Segment) -> None:
        keys = seg.ek if self._objects is None else _lasts(self._objects, seg.eo, seg.ek)
        ew, changed, minw = self.ew, self._changed, self.min_weight
        for k in keys:
            n = ew[k] - 1
            if n:
                ew[k] = n
            else:
                del ew[k]
            if n + 1 >= minw:
                changed.append(k)
        self.total -= len(keys)

    def refresh(self, rows: np.ndarray) -> list[int]:
        out, self._changed = self._changed, []
        return out

    def release(self, pids: Iterable[int]) -> None:
        """Nothing is kept per participant."""

    # -- state: a pure function of the live pairs, but for what changed since the last refresh
    def state(self) -> dict[str, Any]:
        return {"changed": self._changed}

    def load(self, state: dict[str, Any], live: Segment) -> None:
        self.add(live)
        self._changed = list(state["changed"])


class _Link:
    """Live co-actions of two participants, both directions."""

    __slots__ = ("counted", "dirty", "key", "n", "p_posts", "q_posts")  # n: share pairs, or distinct objects

    def __init__(self, key: int) -> None:
        self.key = key  # p << 32 | q, p < q
        self.n = 0  # live share pairs
        self.p_posts = self.q_posts = 0  # distinct_contents: posts of p co-shared by q, of q by p
        self.counted = 0  # its weight in the network as of the last refresh (0 = fails participation)
        self.dirty = False


class Links:
    """Participant-pair links, optional participation rule, summed into account edges."""

    def __init__(self, min_weight: int, min_participation: int, mode: str, account_of: Callable[[int], int],
                 histogram: bool) -> None:  # fmt: skip
        self.min_weight, self.minp = min_weight, min_participation
        self.distinct = mode == "distinct_contents"
        self._objects: dict[int, int] | None = {} if mode == "distinct_objects" else None
        self.account_of = account_of  # participant -> account id
        self.ew: dict[int, int] = {}
        self.total = 0
        self.hist: dict[int, int] | None = {} if histogram else None  # weight -> edges
        self.links: dict[int, _Link] = {}
        self.adj: dict[int, dict[int, _Link]] = {}  # participant -> partner -> link
        self._track = self.distinct or min_participation > 1  # posts know their partners
        self.partners: dict[int, dict[int, int]] = {}  # post -> partner participant -> live pairs
        self.post_of: dict[int, int] = {}  # post -> its participant (posts with partners)
        self.paired: dict[int, dict[int, None]] = {}  # participant -> its posts with partners
        self.post_rows: dict[int, list[Any]] = {}  # post -> [object actions (rows), watermark of the last]
        self._post_q: deque[tuple[float, int]] = deque()  # (watermark, post) per row: finds posts to forget
        self.coord: set[int] = set()  # participants passing the co-action part of min_participation
        # participants whose posts gained (lost) partners or rows; with pairs whose rows rose to (fell below) minp
        self.grown: set[int] = set()
        self.shrunk: set[int] = set()
        self.rose: set[int] = set()
        self.fell: set[int] = set()
        self.dirty: list[_Link] = []

    # -- input -----------------------------------------------------------------------
    def acted(self, pids: Iterable[int], posts: Iterable[int], marks: Iterable[float]) -> None:
        """Object actions (rows) of posts at watermarks ``marks``; only participation reads them."""
        rows, partners, grown, queue = self.post_rows, self.partners, self.grown, self._post_q
        for p, s, w in zip(pids, posts, marks):
            rec = rows.get(s)
            if rec is None:
                rows[s] = [1, w]
            else:
                rec[0] += 1
                rec[1] = w
            queue.append((w, s))
            if s in partners:
                grown.add(p)

    def release(self, pids: Iterable[int]) -> None:
        """Participants whose ids are freed (no rows, no pairs): they start afresh if reused."""
        self.coord.difference_update(pids)

    def crossed(self, rose: Iterable[int], fell: Iterable[int]) -> None:
        """Participants whose rows rose to (fell below) min_participation."""
        adj = self.adj
        self.rose.update(p for p in rose if p in adj)
        self.fell.update(p for p in fell if p in adj)

    def add(self, seg: Segment) -> None:
        links, dirty, track, grown = self.links, self.dirty, self._track, self.minp > 1
        counts = [1] * len(seg.uk) if self._objects is None else self._object_steps(seg, _firsts)
        for uk, pn, po, sn, so, c in zip(seg.uk, seg.pn, seg.po, seg.sn, seg.so, counts):
            link = links.get(uk)
            if link is None:
                link = links[uk] = _Link(uk)
                self.adj.setdefault(pn, {})[po] = link
                self.adj.setdefault(po, {})[pn] = link
            link.n += c
            if not link.dirty:
                link.dirty = True
                dirty.append(link)
            if track:
                self._partner(sn, pn, po, link)
                self._partner(so, po, pn, link)
                if grown:
                    self.grown.add(pn)
                    self.grown.add(po)

    def _object_steps(self, seg: Segment, step: Callable[..., list[int]]) -> list[int]:
        """distinct_objects: 1 for the pairs that start (end) their link's count on an object, else 0."""
        assert self._objects is not None  # eo names the link too: participants and objects share a kind
        hit = set(step(self._objects, seg.eo, range(len(seg.eo))))
        return [1 if i in hit else 0 for i in range(len(seg.eo))]

    def remove(self, seg: Segment) -> None:
        links, dirty, track, shrunk = self.links, self.dirty, self._track, self.minp > 1
        counts = [1] * len(seg.uk) if self._objects is None else self._object_steps(seg, _lasts)
        for uk, pn, po, sn, so, c in zip(seg.uk, seg.pn, seg.po, seg.sn, seg.so, counts):
            link = links[uk]
            if track:
                self._unpartner(sn, pn, po, link)
                self._unpartner(so, po, pn, link)
                if shrunk:
                    self.shrunk.add(pn)
                    self.shrunk.add(po)
            link.n -= c
            if not link.n:
                del links[uk]
                for p, q in ((pn, po), (po, pn)):
                    mine = self.adj[p]
                    del mine[q]
                    if not mine:
                        del self.adj[p]
            if not link.dirty:
                link.dirty = True
                dirty.append(link)

    def _partner(self, post: int, p: int, other: int, link: _Link) -> None:
        """One more live pair of ``post`` (participant ``p``) with participant ``other``."""
        part = self.partners.get(post)
        if part is None:
            self.partners[post] = {other: 1}
            self.post_of[post] = p
            self.paired.setdefault(p, {})[post] = None
        elif other in part:
            part[other] += 1
            return
        else:
            part[other] = 1
        if self.distinct:
            if p < other:
                link.p_posts += 1
            else:
                link.q_posts += 1

    def _unpartner(self, post: int, p: int, other: int, link: _Link) -> None:
        part = self.partners[post]
        n = part[other] - 1
        if n:
            part[other] = n
            return
        del part[other]
        if self.distinct:
            if p < other:
                link.p_posts -= 1
            else:
                link.q_posts -= 1
        if not part:
            del self.partners[post], self.post_of[post]
            rec = self.post_rows.get(post)
            if rec is not None:
                self._post_q.append((rec[1], post))  # may be forgotten now
            mine = self.paired[p]
            del mine[post]
            if not mine:
                del self.paired[p]

    def forget(self, cutoff: float) -> None:
        """Drop the rows of posts without partners whose last row is older than ``cutoff`` (they
        can pair no more); a post that loses its last partner later is queued again."""
        rows, partners, queue = self.post_rows, self.partners, self._post_q
        while queue and queue[0][0] < cutoff:
            w, s = queue.popleft()
            rec = rows.get(s)
            if rec is not None and rec[1] == w and s not in partners:
                del rows[s]

    # -- output ----------------------------------------------------------------------
    def refresh(self, rows: np.ndarray) -> list[int]:
        minp, distinct = self.minp, self.distinct
        if minp > 1:
            self._requalify(rows)
        coord, changed = self.coord, []
        dirty = self.dirty
        dirty.sort(key=lambda link: link.key)
        for link in dirty:
            link.dirty = False
            w = (link.p_posts if link.p_posts > link.q_posts else link.q_posts) if distinct else link.n
            if w and minp > 1:
                p, q = link.key >> 32, link.key & _LOW
                if not (rows[p] >= minp and rows[q] >= minp and (p in coord or q in coord)):
                    w = 0
            if w != link.counted:
                ek = self._bump(link.key, w - link.counted)
                link.counted = w
                if ek is not None:
                    changed.append(ek)
        for pending in (dirty, self.grown, self.shrunk, self.rose, self.fell):
            pending.clear()
        return changed

    def _bump(self, uk: int, delta: int) -> int | None:
        """Add ``delta`` to the account edge of link ``uk``; its key if it is or was >= min_weight."""
        ek = pair_key(self.account_of(uk >> 32), self.account_of(uk & _LOW))
        old = self.ew.get(ek, 0)
        new = old + delta
        self.total += delta
        if new:
            self.ew[ek] = new
        else:
            del self.ew[ek]
        if self.hist is not None:
            hist = self.hist
            if old:
                hist[old] -= 1
                if not hist[old]:
                    del hist[old]
            if new:
                hist[new] = hist.get(new, 0) + 1
        return ek if max(old, new) >= self.min_weight else None

    def _requalify(self, rows: np.ndarray) -> None:
        """Update who passes the co-action part of min_participation; mark the links of those
        who changed. :meth:`_coordinated` only grows with more partners, rows and partners'
        rows, so only checks that can flip are made."""
        dirty, adj, coord = self.dirty, self.adj, self.coord
        check = {p for p in self.grown if p not in coord}
        check.update(p for p in self.shrunk if p in coord)
        for p in self.rose | self.fell:
            gain = p in self.rose
            for q, link in adj.get(p, {}).items():
                if not link.dirty:
                    link.dirty = True
                    dirty.append(link)
                if (not gain) if q in coord else gain:
                    check.add(q)
        for p in check:
            now = self._coordinated(p, rows)
            if now != (p in coord):
                (coord.add if now else coord.discard)(p)
                for link in adj.get(p, {}).values():
                    if not link.dirty:
                        link.dirty = True
                        dirty.append(link)

    def _coordinated(self, p: int, rows: np.ndarray) -> bool:
        """CooRTweet's rule: p has min_participation rows in posts paired with participating
        participants (a pair counts if both participate and one is coordinated)."""
        minp, post_rows, n = self.minp, self.post_rows, 0
        for post in self.paired.get(p, ()):
            for x in self.partners[post]:
                if rows[x] >= minp:
                    rec = post_rows.get(post)
                    n += rec[0] if rec else 0
                    if n >= minp:
                        return True
                    break
        return False

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "counted": sorted([k, w] for k, w in {x.key: x.counted for x in [*self.links.values(), *self.dirty]}.items() if w),
            "post_rows": [[s, n, w] for s, (n, w) in self.post_rows.items()],
            "post_q": [list(x) for x in self._post_q],
            "coord": sorted(self.coord),
            "dirty": [link.key for link in self.dirty],
            "grown": sorted(self.grown),
            "shrunk": sorted(self.shrunk),
            "rose": sorted(self.rose),
            "fell": sorted(self.fell),
        }

    def load(self, state: dict[str, Any], live: Segment) -> None:
        """The state of :meth:`state` over the live pairs ``live`` (replayed, in order)."""
        self.post_rows = {s: [n, w] for s, n, w in state["post_rows"]}
        self._post_q = deque((w, s) for w, s in state["post_q"])
        self.add(live)
        for link in self.dirty:
            link.dirty = False
        self.dirty = []
        orphans: dict[int, _Link] = {}  # counted links whose pairs all expired since the last refresh
        for k, w in state["counted"]:
            link = self.links.get(k) or orphans.setdefault(k, _Link(k))
            link.counted = w
            self._bump(k, w)
        for k in state["dirty"]:
            link = self.links.get(k) or orphans.setdefault(k, _Link(k))
            link.dirty = True
            self.dirty.append(link)
        self.coord = set(state["coord"])
        self.grown, self.shrunk = set(state["grown"]), set(state["shrunk"])
        self.rose, self.fell = set(state["rose"]), set(state["fell"])
