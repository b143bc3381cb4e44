"""co_action: accounts that act on the same objects within seconds of each other, again and again.

**Actions.** Every event acts on objects (a URL, a retweeted/liked/replied post = ``object_id``,
a hashtag, a domain; config ``object_fields``, optionally only some ``object_types``): one
*action* per (event, object), numbered in sequence order. Accounts (per object type when
``participation_scope = "object_type"``) and objects are seeded 64-bit hashes (objects are never
stored as strings); accounts are interned to small ids, recycled when idle.

**Pairs** (:mod:`detectors.pairing`, vectorised over a batch): a new action pairs with an earlier
action of another account on the same object whose time is within ``pair_window_s`` of its own,
either way; with ``max_fanout = k > 0`` only with the latest action of each of the k accounts
that acted on the object most recently. A viral object shared by n unrelated accounts in one
window would make n^2/2 pairs; with the fan-out it makes at most k n, O(k) time and memory per
object. That keeps viral objects harmless without hiding rings: a pair's weight grows about once
per *object* the two co-share, and a viral object pairs each sharer with the k people who shared
just before it, a different crowd on every viral object, so a chance pair meets again only by
chance; a ring's members share each object within seconds, so they are each other's latest
sharers object after object. ``max_fanout = 0`` pairs everything (the peers' semantics).

**Weights** (:mod:`detectors.co_weights`) accumulate over a sliding ``memory_s``: a pair is
forgotten ``memory_s`` after it was seen (the watermark at its newer action, so expiry is a
FIFO). ``weight_mode``: ``distinct_objects`` (default) = the number of distinct objects the two
accounts co-acted on (a like, a retweet and a reply of one post by one side are one co-action:
on the generator's organic traffic, heavy users' several actions on one viral post made weight-2
"pairs" with light users out of a single coincidence); ``share_pairs`` = the number of share
pairs (CooRTweet); ``distinct_contents`` = max over the two directions of the distinct posts of
one with a co-share by the other (coordination-network-toolkit). ``min_participation``
(CooRTweet's) optionally gates pairs on both accounts' activity.

**Edges: weight and chance.** Heavy users co-act on popular objects by chance, so a pair is an
edge of the alert graph only if its weight ``w >= min_weight`` (and, with
``edge_weight_quantile``, strictly above that quantile of all weights, as CooRTweet) and ``w``
is improbable by chance: ``P(X >= w) <= max_p_value`` for ``X ~ Poisson(λ)``, ``λ = n_a n_b ρ``,
where ``n`` is an account's object actions in memory and ``ρ = 2 W / (N^2 - Σ n^2)`` the
stream's chance rate (W the network's total weight, N actions): the expected co-actions of two
accounts acting independently at their rates. The tail is bounded above in closed form
(``pmf(w) / (1 - λ/(w+1))``, exact to a small factor where it matters), so the test is
vectorised over all candidate pairs at every evaluation. ``max_p_value = 1`` turns it off (the
peers' presets). Measured, generator default streams (24 h, seeds 0/1/2, all detectors,
``min_weight = 2``, ``distinct_objects``), with a 60 s ``pair_window_s``: ``max_p_value`` 1e-5
gave precision 0.958 / 0.826 / 0.769; 1e-6: 0.993 / 0.994 / 0.974; 1e-7: 1.000 / 1.000 /
1.000 with recall 0.949 / 0.932 / 0.934, but campaigns 20 / 20 / 19 (seed 2's weak like ring,
8 accounts with no pair above weight 2, is lost among chance pairs); 1e-8: recall 0.938 / 0.918
/ 0.913. With ``share_pairs`` the same tests gave precision 0.935-0.966 at 1e-8 (the
repeated-action pairs above). The false groups at 1e-5 co-acted with median time deltas of
20-55 s (chance is uniform over the window), the rings' with 1-20 s: **a 30 s window halves the
chance rate ρ while keeping the rings' pairs, so the default is 30 s with 1e-6**: precision
1.000 / 1.000 / 1.000, recall 0.973 / 0.934 / 0.962, campaigns 20 / 20 / 20; on seeds 3 and 4
(not used to choose) 1.000 / 0.993, recall 0.966 / 0.946, 20 / 20 each; hard negatives 0.
20 s with 1e-6 also caught 20 / 20 / 20; 15 s with 1e-7 lost two weak rings (one link ring).

**Groups.** Event time is cut at multiples of ``eval_interval_s``; when the watermark crosses
one, the pairs and actions before the crossing event are in, expired ones out, and the graph is
updated where something changed (evaluations with nothing to do are skipped: they change
nothing). Connected groups are kept in a union-find; one is examined when it is new with at
least ``min_group_size`` accounts or has grown by ``update_growth_fraction`` since it was last
examined (edge removals rebuild the union-find over the alert graph). Components above
``split_above_accounts`` are split into Louvain communities (networkx, seed 7). A group is
matched to the live known group most of its members belong to; otherwise it is new and its id is
``stable_id("ca-", smallest account, floor(window start / memory_s))``, fixed for its life. A new
group raises ``open`` (revision 0); a known one ``update`` (revision + 1) once it has
``update_growth_fraction`` more members than at its last alert. A group not examined for
``memory_s`` is forgotten.

**Alert.** ``accounts``: most central first (weighted degree inside the group, then id), capped
at ``max_alert_accounts``; ``score`` = mean edge weight x log2(size); ``window``: first to last
live co-action on the group's edges; ``keys``: the objects most members co-shared on them;
evidence ``edges`` (heaviest pairs with median and min time delta of their last 15 co-actions),
``top_objects``, ``sample_posts`` (each central member's latest co-action), ``min_edge_weight``.
Evidence is read from the live pairs when an alert is made, so nothing is kept per pair for it.

**Peer quirks** (``streams/presets/coortweet.toml``, ``cnt.toml``; checked edge for edge in
``tests/detectors/test_peer_parity.py``): CooRTweet counts ``min_participation`` rows per input
table and was run once per object type (``participation_scope = "object_type"``); a post with two
objects is two rows; self pairs and same-post pairs are dropped. coordination-network-toolkit
keeps one ``repost_id`` per retweet (``one_object_actions = ["retweet"]``: an action of such an
event counts only if its post, ``content_id`` and account, had no action in the last
``pair_window_s + allowed_lateness_s``); its co-link messages are posts with all their URLs
(``distinct_contents`` counts a post once).

:meth:`CoActionDetector.weighted_edges` reads the network (as of the last evaluation;
``advance(math.inf)`` evaluates at the last event).

**Cost.** Python work per event is reading its objects; per pair one dict operation when added
and one when expired (:class:`~detectors.co_weights.Counting`); everything else is numpy over a
batch, or happens at evaluations where something changed. Memory follows the last ``memory_s``
of pairs and actions, not the stream's length.

**Split by object** (``parts = n``; :mod:`detectors.co_objects`). Reading a batch's objects,
hashing, ``max_object_actions`` and pairing depend only on one object at a time, so they run
in object parts (:class:`~detectors.co_objects.ObjectActions`, by the object's seeded hash);
the rest (interning, the store, activity rows, weights, evaluations, alerts) needs every action
and stays here, fed the parts' actions merged in the whole's order (event, ``object_fields``
order, place in the field). What keeps one part's alerts equal to n parts', byte for byte
(tested, and on 11 replays of the generator mix and the peers' datasets with 3 and 7 parts):

* a part numbers its own actions; the pairer compares positions only within an object, and
  the detector maps a part's positions to its own (:class:`_RefMap`);
* object hashes mix in a hash of the kind's name, not a number of first appearance;
* a sweep keeps the ids of every action's participants from the parts' oldest tail position
  on (a superset of the pairers' tails, which only the parts see; the whole follows it too);
* ``one_object_actions`` needs a post's objects in one place: that mode runs as one part.

Run apart (a stream worker's work partitions, ``work.shards = {co_action = n}``), each part is a
:class:`~detectors.co_objects.CoActionPart` that reads every event and hands on *segments* (a
batch's actions and event times, or an advance), and :class:`CoActionParts` merges them: every
part sees the same canonical event sequence, so a segment's events are named by their place in
it, however each part's batches were cut; the merge runs the detector over the stretch every
part has sent and advances it once a part vouches for the event time. Measured in-process
(``coordwatch bench shards``, generator mix, 0.69 M events parsed once, segments through
bytes): the busiest of 2 parts costs 0.42x the whole's CPU, of 4 0.36x (each part reads every
event's objects), and their merge 0.66-0.68x: most of co_action is the network (evaluations
and weights, a dict operation per pair), which a split by object cannot cut. A whole in a
worker also parses every event; the merge parses nothing.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from detectors.alert_graph import AlertGraph
from detectors.base import WHOLE, Alert, Shard, stable_id
from detectors.co_objects import Actions, ObjectActions
from detectors.co_weights import Counting, Links, Weights, fast_weights
from detectors.events import Event
from detectors.params import CoActionParams
from detectors.parts import MergingDetector, PartsMerge
from sketches.errors import CoordwatchError
from sketches.hashing import hash_u64

LOUVAIN_SEED = 7
DELTAS = 15  # recent co-action time deltas per pair in the evidence (median, min)
TOP = 10  # edges and objects listed in evidence and keys
SAMPLE_POSTS = 5
#: A sweep (freeing idle ids, old actions, posts and groups) costs about the state's size, so it
#: waits for this many actions as well as 4 x keep_s of event time: sparse streams with months
#: between bursts would otherwise sweep an empty state thousands of times.
SWEEP_ACTIONS = 4096
_LOW = (1 << 32) - 1
_NONE = np.empty(0, dtype=np.int64)
_FEW = 32  # below this many changed candidates a Python loop beats numpy's per-call cost


def _grew(n: int, before: int, fraction: float) -> bool:
    """``n`` is at least ``fraction`` more than ``before`` (with float slack: 10 * 1.2 is 12.000000000000002)."""
    return n >= before * (1 + fraction) - 1e-9


def _fin(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unfin(x: float | None) -> float:
    return -math.inf if x is None else x


def _keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`~detectors.co_weights.pair_key` of id arrays."""
    return np.minimum(a, b) << 32 | np.maximum(a, b)


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


class _Ids:
    """Interned ids for 64-bit keys (accounts or participants), names kept, freed ids reused."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.keys: list[int | None] = []
        self.names: list[str | None] = []
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.keys)

    def intern(self, keys: np.ndarray, name: Callable[[int], str]) -> np.ndarray:
        """Ids of ``keys`` (a new one is named ``name(i)``, i the index of its first occurrence)."""
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        index, ks = self.index, uniq.tolist()
        out = list(map(index.get, ks))  # the known ones at C speed; new ones (None) below, in key order
        if None in out:
            firsts = first.tolist()
            for j in [j for j, i in enumerate(out) if i is None]:
                k, f = ks[j], firsts[j]
                if self.free:
                    i = self.free.pop()
                    self.keys[i], self.names[i] = k, name(f)
                else:
                    i = len(self.keys)
                    self.keys.append(k)
                    self.names.append(name(f))
                out[j] = index[k] = i
        return np.array(out, dtype=np.int64)[inverse]

    def release(self, ids: Sequence[int]) -> None:
        for i in ids:
            del self.index[self.keys[i]]  # type: ignore[arg-type]
            self.keys[i] = self.names[i] = None
            self.free.append(i)

    def state(self) -> dict[str, Any]:
        return {"keys": self.keys, "names": self.names, "free": self.free}

    def load(self, state: dict[str, Any]) -> None:
        self.keys, self.names, self.free = state["keys"], state["names"], state["free"]
        self.index = {k: i for i, k in enumerate(self.keys) if k is not None}


def _locate(bases: list[int], refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chunk (of chunks starting at positions ``bases``) holding each position, and the place in it."""
    b = np.array(bases, dtype=np.int64)
    chunk = np.searchsorted(b, refs, side="right") - 1
    return chunk, refs - b[chunk]


def _dead(bases: list[int], lowest: int) -> int:
    """How many leading chunks (starting at positions ``bases``) hold only positions below ``lowest``."""
    k = 0
    while k + 1 < len(bases) and bases[k + 1] <= lowest:
        k += 1
    return k


def _gather(bases: list[int], chunks: list[np.ndarray], refs: np.ndarray, dtype: type) -> np.ndarray:
    """``chunks``' values at positions ``refs``."""
    out = np.empty(refs.size, dtype=dtype)
    chunk, at = _locate(bases, refs)
    for c in np.unique(chunk).tolist():
        sel = chunk == c
        out[sel] = chunks[c][at[sel]]
    return out


class _Store:
    """Time, event id, object, post and participant of the actions live pairs and the object
    parts may still name, in chunks by position."""

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.ts: list[np.ndarray] = []
        self.eids: list[np.ndarray] = []  # object arrays of str
        self.objs: list[np.ndarray] = []
        self.posts: list[np.ndarray] = []
        self.pids: list[np.ndarray] = []

    def add(self, base: int, ts: np.ndarray, eids: np.ndarray, objs: np.ndarray, posts: np.ndarray,
            pids: np.ndarray) -> None:  # fmt: skip
        for col, x in ((self.bases, base), (self.ts, ts), (self.eids, eids), (self.objs, objs), (self.posts, posts),
                       (self.pids, pids)):  # fmt: skip
            col.append(x)  # type: ignore[attr-defined]

    def post(self, refs: np.ndarray) -> np.ndarray:
        return _gather(self.bases, self.posts, refs, np.uint64)

    def pid(self, refs: np.ndarray) -> np.ndarray:
        return _gather(self.bases, self.pids, refs, np.int64)

    def pids_since(self, ref: int) -> np.ndarray:
        """The participants of the actions at and after position ``ref``."""
        if not self.bases:
            return _NONE
        c, at = (int(x[0]) for x in _locate(self.bases, np.array([ref], dtype=np.int64)))
        c = max(c, 0)
        return np.concatenate([self.pids[c][max(at, 0) :], *self.pids[c + 1 :]])

    def get(self, refs: Sequence[int]) -> list[tuple[float, str, str]]:
        """(ts, event id, object) of each action."""
        chunk, at = _locate(self.bases, np.asarray(refs, dtype=np.int64))
        return [(float(self.ts[c][i]), self.eids[c][i], self.objs[c][i]) for c, i in zip(chunk.tolist(), at.tolist())]

    def trim(self, lowest: int) -> None:
        """Drop chunks holding only positions below ``lowest``."""
        k = _dead(self.bases, lowest)
        for col in (self.bases, self.ts, self.eids, self.objs, self.posts, self.pids):
            del col[:k]

    def state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        sizes = [len(e) for e in self.eids]
        head = {"bases": self.bases, "sizes": sizes, "eids": [e.tolist() for e in self.eids],
                "objs": [o.tolist() for o in self.objs]}
        return head, [_cat(self.ts, np.float64), _cat(self.posts, np.uint64), _cat(self.pids, np.int64)]

    def load(self, head: dict[str, Any], arrays: list[np.ndarray]) -> None:
        ends = np.cumsum(head["sizes"]).tolist()
        starts = [e - n for e, n in zip(ends, head["sizes"])]
        self.bases = head["bases"]
        self.eids = [np.array(e, dtype=object) for e in head["eids"]]
        self.objs = [np.array(o, dtype=object) for o in head["objs"]]
        ts, posts, pids = arrays
        self.ts = [ts[a:b] for a, b in zip(starts, ends)]
        self.posts = [posts[a:b].astype(np.uint64) for a, b in zip(starts, ends)]
        self.pids = [pids[a:b].astype(np.int64) for a, b in zip(starts, ends)]


def _cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.empty(0, dtype=dtype)


class _RefMap:
    """An object part's local positions -> the detector's (global) positions, in chunks by
    local position, for those the part may still name."""

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.refs: list[np.ndarray] = []

    def add(self, base: int, refs: np.ndarray) -> None:
        self.bases.append(base)
        self.refs.append(refs)

    def __call__(self, local: np.ndarray) -> np.ndarray:
        return _gather(self.bases, self.refs, local, np.int64) if local.size else _NONE

    def trim(self, lowest: int) -> None:
        """Drop chunks holding only local positions below ``lowest``."""
        k = _dead(self.bases, lowest)
        del self.bases[:k], self.refs[:k]

    def state(self) -> tuple[list[int], np.ndarray]:
        return self.bases, _cat(self.refs, np.int64)

    def load(self, bases: list[int], refs: np.ndarray) -> None:
        """Inverse of :meth:`state`: a part's positions are contiguous, so each chunk ends where the next begins."""
        self.bases = list(bases)
        cuts = [b - bases[0] for b in bases[1:]]
        self.refs = [x.astype(np.int64) for x in np.split(refs, cuts)] if bases else []


_PAIR_COLS = ("seen", "rn", "ro", "pn", "po", "an", "ao", "dt", "sn", "so", "ob", "ek")
_PAIR_TYPES = (np.float64, *[np.int64] * 6, np.float64, np.uint64, np.uint64, np.uint64, np.int64)


class _Seg:
    """One run of live pairs, its columns as Python lists on demand (what
    :class:`~detectors.co_weights.Weights` reads)."""

    def __init__(self, chunk: dict[str, np.ndarray], lo: int, hi: int) -> None:
        self._chunk, self._lo, self._hi = chunk, lo, hi

    def _col(self, name: str) -> np.ndarray:
        return self._chunk[name][self._lo : self._hi]

    def _list(self, name: str) -> list[int]:
        return self._col(name).tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def ek(self) -> list[int]:
        return self._col("ek").tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def uk(self) -> list[int]:
        return _keys(self._col("pn"), self._col("po")).tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def eo(self) -> list[int]:
        """One key per (account pair, object)."""
        ek = self._col("ek").astype(np.uint64)
        return hash_u64(ek * np.uint64(0x9E3779B97F4A7C15) ^ self._col("ob")).tolist()  # type: ignore[no-any-return]

    pn = functools.cached_property(lambda self: self._list("pn"))
    po = functools.cached_property(lambda self: self._list("po"))
    sn = functools.cached_property(lambda self: self._list("sn"))
    so = functools.cached_property(lambda self: self._list("so"))


class _Pairs:
    """The live pairs, oldest first, in chunks: seen (watermark at the newer action), positions
    ``rn``/``ro`` of the new and the older action, participants ``pn``/``po``, accounts
    ``an``/``ao`` and their pair key ``ek``, ``dt`` = new ts - older ts, posts ``sn``/``so``, object ``ob``."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []
        self.head = 0  # expired rows at the front of the first chunk
        self.applied = 0  # rows of the last chunk fed to the weights (earlier chunks: all)
        self._by_edge: dict[int, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = {}  # on_edges' index

    def __len__(self) -> int:
        """Live pairs fed to the weights."""
        if not self.chunks:
            return 0
        return sum(len(c["seen"]) for c in self.chunks[:-1]) - self.head + self.applied

    def append(self, cols: dict[str, np.ndarray]) -> None:
        if len(cols["seen"]):
            if self.chunks and self.applied < len(self.chunks[-1]["seen"]):
                raise AssertionError("the previous chunk must be applied first")
            self.chunks.append(cols)
            self.applied = 0

    def segment(self, chunk: dict[str, np.ndarray], lo: int, hi: int) -> _Seg:
        return _Seg(chunk, lo, hi)

    def take(self, hi: int) -> _Seg:
        """Rows ``[applied, hi)`` of the newest chunk, to feed the weights."""
        seg = self.segment(self.chunks[-1], self.applied, hi)
        self.applied = hi
        return seg

    def oldest(self) -> float:
        """When the oldest live pair was seen (inf if none)."""
        while self.chunks:
            c = self.chunks[0]
            end = self.applied if len(self.chunks) == 1 else len(c["seen"])
            return float(c["seen"][self.head]) if self.head < end else math.inf
        return math.inf

    def expire(self, cutoff: float) -> list[_Seg]:
        """Drop pairs seen before ``cutoff``; the runs dropped."""
        out = []
        while self.chunks:
            c = self.chunks[0]
            last = len(self.chunks) == 1
            end = self.applied if last else len(c["seen"])
            k = self.head + int(np.searchsorted(c["seen"][self.head : end], cutoff))
            if k > self.head:
                out.append(self.segment(c, self.head, k))
                self.head = k
            if k < len(c["seen"]) or last:
                break
            self.chunks.pop(0)
            self.head = 0
        return out

    def views(self, *, applied: bool = True) -> list[dict[str, np.ndarray]]:
        """The live pairs fed to the weights (or also the rest of the batch), chunk by chunk."""
        last = len(self.chunks) - 1
        end = self.applied if applied else None
        return [{k: v[(self.head if i == 0 else 0) : (end if i == last else None)] for k, v in c.items()}
                for i, c in enumerate(self.chunks)]  # fmt: skip

    def select(self, where: Any) -> dict[str, np.ndarray]:
        """The live pairs (fed to the weights) for which ``where(chunk)`` is true, one array per column."""
        parts = [{k: v[m] for k, v in c.items()} for c in self.views() if (m := where(c)).any()]
        if not parts:
            return {k: np.empty(0, dtype=d) for k, d in zip(_PAIR_COLS, _PAIR_TYPES)}
        return {k: np.concatenate([p[k] for p in parts]) for k in _PAIR_COLS}

    def on_edges(self, wanted: np.ndarray) -> dict[str, np.ndarray]:
        """The live pairs (fed to the weights) whose ``ek`` is in ``wanted`` (sorted, unique),
        as :meth:`select` would give them: each chunk's ``ek`` order is kept while the chunk
        lives, so an alert costs a few binary searches, not a scan of every live pair."""
        parts, kept = [], {}
        last = len(self.chunks) - 1
        for i, c in enumerate(self.chunks):
            lo, hi = (self.head if i == 0 else 0), (self.applied if i == last else len(c["seen"]))
            if hi <= lo:
                continue
            ent = self._by_edge.get(id(c))
            if ent is None or ent[0] is not c:
                order = np.argsort(c["ek"], kind="stable")
                ent = (c, order, c["ek"][order])
            kept[id(c)] = ent
            _, order, sorted_ek = ent
            left, right = np.searchsorted(sorted_ek, wanted, "left"), np.searchsorted(sorted_ek, wanted, "right")
            hit = right > left
            if not hit.any():
                continue
            pos = np.sort(np.concatenate([order[a:b] for a, b in zip(left[hit].tolist(), right[hit].tolist())]))
            pos = pos[(pos >= lo) & (pos < hi)]
            if pos.size:
                parts.append({k: c[k][pos] for k in _PAIR_COLS})
        self._by_edge = kept
        if not parts:
            return {k: np.empty(0, dtype=d) for k, d in zip(_PAIR_COLS, _PAIR_TYPES)}
        return {k: np.concatenate([p[k] for p in parts]) for k in _PAIR_COLS}

    def live(self) -> dict[str, np.ndarray]:
        """Every live pair fed to the weights, one array per column."""
        return self.select(lambda c: np.ones(len(c["seen"]), dtype=bool))


class CoActionDetector(MergingDetector[CoActionParams]):
    """co_action (module docstring); ``parts = n`` reads its objects in ``n`` object parts
    (:mod:`detectors.co_objects`) whose actions it merges: the same alerts as one part. With
    ``local = False`` the parts run elsewhere (:class:`CoActionParts`) and their actions come
    through :meth:`process_parts`."""

    NAME = "co_action"
    STATE_VERSION = 3

    def __init__(self, params: CoActionParams, shard: Shard = WHOLE, parts: int = 1, local: bool = True) -> None:
        super().__init__(params, shard)
        p = params
        self._keep_s = p.pair_window_s + p.allowed_lateness_s  # how long an action can still pair
        self._per_type = p.participation_scope == "object_type"
        self._params_json = p.model_dump(mode="json")
        self._objects = [ObjectActions(p, (s, parts)) for s in range(parts)] if local else []
        self._maps = [_RefMap() for _ in range(parts)]
        self._part_oldest = [0] * parts  # each part's oldest tail position and next position (local)
        self._part_next = [0] * parts
        self._accounts = _Ids()
        self._parts = _Ids() if self._per_type else self._accounts  # participants
        self._paid = np.empty(0, dtype=np.int64)  # participant -> account (per-type scope)
        self._next_ref = 0  # position of the next action
        self._store = _Store()
        self._pairs = _Pairs()
        # activity: object actions in memory, per participant and per account (one array when the same)
        self._significance = p.max_p_value < 1
        self._track = self._significance or p.min_participation > 1
        self._rows = np.zeros(0, dtype=np.int64)
        self._acts = np.zeros(0, dtype=np.int64)
        self._row_q: list[np.ndarray] = []  # chunks of (watermark, participant, account) per action
        self._row_head = 0
        self._row_applied = 0  # rows of the last chunk counted
        self._weights: Weights
        if fast_weights(p):
            self._weights = Counting(p.min_weight, p.weight_mode == "distinct_objects")
        else:
            self._weights = Links(p.min_weight, p.min_participation, p.weight_mode, self._account_of,
                                  p.edge_weight_quantile is not None)  # fmt: skip
        self._cand = _Candidates(p.min_weight)
        self._graph = AlertGraph()
        self._cut = p.min_weight  # alert graph edges weigh at least this
        self._lgf = np.zeros(1)  # ln(w!) for the chance test
        self._pending = False  # pairs or rows changed since the last evaluation
        # gid -> [revision, size at its last alert, last examined, members], least recently examined first
        self._groups: dict[str, list[Any]] = {}
        self._member: dict[str, str] = {}  # account -> gid
        self._wm = -math.inf
        self._bucket = -math.inf  # eval_interval_s bucket of the last evaluation
        self._swept = -math.inf
        self._swept_ref = 0  # actions counted before the last sweep
        self._applied_ref = 0  # actions counted (positions below it)
        self._batch_pids = _NONE

    def _account_of(self, pid: int) -> int:
        """Participant id -> account id (the same id when participants are accounts)."""
        return int(self._paid[pid]) if self._per_type else pid

    # -- events ----------------------------------------------------------------------
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        if not self._objects:
            raise CoordwatchError("this co_action merges object parts run elsewhere: feed it process_parts")
        return self._take([o.actions(events, self.marks, self.times) for o in self._objects])

    def _take(self, found: Sequence[Actions]) -> list[Alert]:
        """The batch's actions (those of each object part): pairs and rows counted, evaluations run."""
        marks = self.marks
        acts = self._actions(found, marks)
        step = self.params.eval_interval_s
        buckets = np.floor(marks / step)
        prev = np.concatenate(([self._bucket], buckets[:-1]))
        cross = np.flatnonzero(buckets > prev)  # events crossing an evaluation time (evaluated before them)
        a_cut = np.searchsorted(acts.ev, cross) if acts is not None else np.zeros(cross.size, dtype=np.int64)
        p_cut = np.searchsorted(acts.pair_new, a_cut) if acts is not None else a_cut
        first = prev[cross] + 1  # the first evaluation time each crossing event passes (bucket index)
        last = buckets[cross]
        # only evaluations with new pairs or rows, or something expiring or to sweep, change anything
        grew = np.diff(p_cut, prepend=0) > 0
        if self._track:
            grew |= np.diff(a_cut, prepend=0) > 0
        if grew.size:
            grew[0] |= self._pending  # counted after the last evaluation of an earlier batch
        busy = np.flatnonzero(grew)
        alerts: list[Alert] = []
        k = 0
        while k < cross.size:
            nb = int(busy[np.searchsorted(busy, k)]) if busy.size and busy[-1] >= k else cross.size
            k = min(nb, k + int(np.searchsorted(last[k:] * step, self._due())))
            if k >= cross.size:
                break
            if acts is not None:
                self._apply(acts, int(a_cut[k]), int(p_cut[k]))
            alerts += self._pass(float(first[k]), float(last[k]))
            k += 1
        if cross.size:
            self._bucket = float(buckets[cross[-1]])
        if acts is not None:
            self._apply(acts, acts.n, len(acts.pair_new))
        self._wm = float(marks[-1])
        self._batch_pids = _NONE
        return alerts

    def _actions(self, parts: Sequence[Actions], marks: np.ndarray) -> _Batch | None:
        """The batch's actions of every object part, merged in position order, their pairs,
        stored and queued; None if none."""
        for k, a in enumerate(parts):
            self._part_next[k] = a.ref0 + len(a)
            if a.oldest is not None:
                self._part_oldest[k] = a.oldest
        found = [(k, a) for k, a in enumerate(parts) if len(a)]
        if not found:
            return None
        n = sum(map(len, (a for _, a in found)))
        refs = np.arange(self._next_ref, self._next_ref + n, dtype=np.int64)
        self._next_ref += n
        pair_new, pair_ref, pair_ts = [], [], []
        if len(found) == 1:
            k, a = found[0]
            ev, obj, objs, ah, ph, names, eids, post = a.ev, a.obj, a.objs, a.ah, a.ph, a.names, a.eids, a.post
            at = np.arange(n)
        else:  # the whole's order: (event, field, place); each part's actions keep theirs
            cat = lambda name: np.concatenate([getattr(a, name) for _, a in found])  # noqa: E731
            order = np.lexsort((cat("rank"), cat("ev")))
            ev, obj, objs, ah, ph, names, eids, post = (cat(c)[order] for c in
                                                        ("ev", "obj", "objs", "ah", "ph", "names", "eids", "post"))
            at = np.empty(n, dtype=np.int64)
            at[order] = np.arange(n)  # each part's actions' places in the merged order, part after part
        lo = 0
        for k, a in found:
            mine = at[lo : lo + len(a)]
            lo += len(a)
            self._maps[k].add(a.ref0, refs[mine])
            pair_new.append(mine[a.pair_new])
            pair_ref.append(self._maps[k](a.pair_ref))
            pair_ts.append(a.pair_ts)
            if a.oldest is not None:
                self._maps[k].trim(a.oldest)
            self.stats["viral_actions"] += a.viral
        new, ref, pts = (np.concatenate(x) for x in (pair_new, pair_ref, pair_ts))
        if len(found) > 1:
            by = np.lexsort((ref, new))
            new, ref, pts = new[by], ref[by], pts[by]
        aid = self._accounts.intern(ah, names.__getitem__)
        if self._per_type:
            pid = self._parts.intern(ph, names.__getitem__)
            if self._paid.size < len(self._parts):
                self._paid = np.concatenate((self._paid, np.zeros(len(self._parts) - self._paid.size, dtype=np.int64)))
            self._paid[pid] = aid
        else:
            pid = aid
        self._grow(len(self._parts), len(self._accounts))
        self._batch_pids = pid  # in use until the batch is done, whatever a sweep finds
        wm, ts = marks[ev], self.times[ev]
        self._store.add(int(refs[0]), ts, eids, objs, post, pid)
        k = int(new.size)
        self.stats["pairs"] += k
        po = self._store.pid(ref) if k else _NONE
        cols = {
            "seen": wm[new], "rn": refs[new], "ro": ref, "pn": pid[new], "po": po,
            "an": aid[new], "ao": self._account(po), "dt": ts[new] - pts,
            "sn": post[new], "so": self._store.post(ref) if k else np.empty(0, dtype=np.uint64), "ob": obj[new],
            "ek": _keys(aid[new], self._account(po)),
        }  # fmt: skip
        self._pairs.append(cols)
        if self._track:
            self._row_q.append(np.stack((wm, pid.astype(np.float64), aid.astype(np.float64))))
            self._row_applied = 0
        return _Batch(n, int(refs[0]), ev, pid, aid, post, wm, new)

    def _tail(self) -> int:
        """The lowest position an object part may still pair with (its tail's oldest, as last reported)."""
        return min((int(m(np.array([old]))[0]) if old < nxt else self._next_ref
                    for old, nxt, m in zip(self._part_oldest, self._part_next, self._maps)),
                   default=self._next_ref)  # fmt: skip

    def _account(self, pids: np.ndarray) -> np.ndarray:
        return self._paid[pids] if self._per_type else pids

    def _grow(self, parts: int, accounts: int) -> None:
        if self._rows.size < parts:
            self._rows = np.concatenate((self._rows, np.zeros(max(parts, 2 * self._rows.size) - self._rows.size, np.int64)))
        if not self._per_type:
            self._acts = self._rows
        elif self._acts.size < accounts:
            self._acts = np.concatenate((self._acts, np.zeros(max(accounts, 2 * self._acts.size) - self._acts.size, np.int64)))

    def _apply(self, acts: _Batch, a: int, q: int) -> None:
        """Count the batch's actions up to ``a`` and its pairs up to ``q`` (the newest chunk)."""
        self._applied_ref = max(self._applied_ref, acts.ref0 + a)
        if self._track and a > self._row_applied:
            lo = self._row_applied
            self._row_applied = a
            pid, aid = acts.pid[lo:a], acts.aid[lo:a]
            minp = self.params.min_participation
            if isinstance(self._weights, Links) and minp > 1:
                u = np.unique(pid)
                before = self._rows[u]
                np.add.at(self._rows, pid, 1)
                self._weights.acted(pid.tolist(), acts.post[lo:a].tolist(), acts.wm[lo:a].tolist())
                self._weights.crossed(u[(before < minp) & (self._rows[u] >= minp)].tolist(), ())
            else:
                np.add.at(self._rows, pid, 1)
            if self._per_type:
                np.add.at(self._acts, aid, 1)
            self._pending = True
        if q > self._pairs.applied:
            self._weights.add(self._pairs.take(q))
            self._pending = True

    # -- evaluation ------------------------------------------------------------------
    def _advance(self, watermark: float) -> list[Alert]:
        if watermark == math.inf:  # end of the stream: evaluate as of the last event
            return self._evaluate(self._wm, watermark) if self._wm > -math.inf else []
        bucket = math.floor(watermark / self.params.eval_interval_s)
        if bucket <= self._bucket:
            return []
        return self._pass(self._bucket + 1, float(bucket))

    def _pass(self, first: float, last: float) -> list[Alert]:
        """Event time passes the evaluation times of buckets ``first`` to ``last``: evaluate the
        first if something changed before it, then each one where something expires or a sweep
        is due (the others would change nothing)."""
        step = self.params.eval_interval_s
        alerts: list[Alert] = []
        b = first
        if self._pending or self._due() <= b * step:
            alerts += self._evaluate(b * step, b * step)
        while (due := self._due()) < math.inf and (b := max(b + 1, math.ceil(due / step))) <= last:
            alerts += self._evaluate(b * step, b * step)
        self._bucket = last
        return alerts

    def _evaluate(self, t: float, at: float) -> list[Alert]:
        """Expire, update the alert graph where it changed, examine grown components, sweep
        (decided at watermark ``at``)."""
        self._expire(t - self.params.memory_s)
        alerts: list[Alert] = []
        if self._pending:
            self._pending = False
            self._refresh()
            alerts = self._examine(self._graph.take(), t, at)
        if t - self._swept >= 4 * self._keep_s and self._applied_ref - self._swept_ref >= SWEEP_ACTIONS:
            self._sweep(t)
        return alerts

    def _due(self) -> float:
        """The earliest evaluation time at which something expires or a sweep is due, new input aside."""
        due = self._pairs.oldest() + self.params.memory_s
        if self._track:
            due = min(due, self._rows_oldest() + self.params.memory_s)
        if self._applied_ref - self._swept_ref >= SWEEP_ACTIONS:
            due = min(due, self._swept + 4 * self._keep_s)
        return float(np.nextafter(due, math.inf))  # expiry takes what is strictly older than t - memory_s

    def _expire(self, cutoff: float) -> None:
        if self._pairs.oldest() >= cutoff and not (self._track and self._rows_oldest() < cutoff):
            return
        for seg in self._pairs.expire(cutoff):
            self._weights.remove(seg)
            self._pending = True
        if self._track:
            self._expire_rows(cutoff)

    def _rows_oldest(self) -> float:
        if not self._row_q:
            return math.inf
        end = self._row_applied if len(self._row_q) == 1 else self._row_q[0].shape[1]
        return float(self._row_q[0][0, self._row_head]) if self._row_head < end else math.inf

    def _expire_rows(self, cutoff: float) -> None:
        minp, links = self.params.min_participation, self._weights
        while self._row_q:
            chunk = self._row_q[0]
            last = len(self._row_q) == 1
            end = self._row_applied if last else chunk.shape[1]
            k = self._row_head + int(np.searchsorted(chunk[0, self._row_head : end], cutoff))
            if k > self._row_head:
                pid = chunk[1, self._row_head : k].astype(np.int64)
                u = np.unique(pid)
                before = self._rows[u]
                np.subtract.at(self._rows, pid, 1)
                if self._per_type:
                    np.subtract.at(self._acts, chunk[2, self._row_head : k].astype(np.int64), 1)
                if isinstance(links, Links) and minp > 1:
                    links.crossed((), u[(before >= minp) & (self._rows[u] < minp)].tolist())
                self._row_head = k
                self._pending = True
            if k < chunk.shape[1] or last:
                break
            self._row_q.pop(0)
            self._row_head = 0

    def _refresh(self) -> None:
        """Update the network and the alert graph."""
        changed = self._weights.refresh(self._rows)
        hist = self._weights.hist
        if hist is not None:
            cut = self._current_cut(hist)
            if cut != self._cut:
                self._cut = cut
                self._cand.cut_changed()
        test = self._chance_test() if self._significance else None
        joined, parted = self._cand.update(changed, self._weights.ew, self._cut, test)
        self._graph.part([self._names(k) for k in parted])
        for k in joined:
            self._graph.join(*self._names(k), k)

    def _names(self, k: int) -> tuple[str, str]:
        """The accounts of edge key ``k``, smaller first."""
        a, b = self._accounts.names[k >> 32], self._accounts.names[k & _LOW]
        return (a, b) if a < b else (b, a)  # type: ignore[operator, return-value]

    def _chance_test(self) -> Any:
        """A vectorised test of candidate pairs: is weight ``w`` of accounts ``a``, ``b``
        improbable under Poisson(n_a n_b ρ)? (Upper bound of the tail: pmf(w) / (1 - λ/(w+1)).)"""
        n = self._acts.astype(np.float64)
        total = n.sum()
        denom = total * total - float(np.einsum("i,i", n, n))  # not BLAS: its threads stall on a busy machine
        rho = 2 * self._weights.total / denom if denom > 0 else 0.0
        log_alpha = math.log(self.params.max_p_value)

        def test(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
            top = int(w.max()) if w.size else 0
            if top >= self._lgf.size:
                self._lgf = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, 2 * top + 2)))))
            lam = n[a] * n[b] * rho
            with np.errstate(divide="ignore", invalid="ignore"):
                logp = -lam + w * np.log(lam) - self._lgf[w] - np.log1p(-lam / (w + 1))
            return (lam < w + 1) & (logp <= log_alpha)

        return test

    def _current_cut(self, hist: dict[int, int]) -> int:
        q = self.params.edge_weight_quantile
        if q is None or not hist:
            return self.params.min_weight
        return max(self.params.min_weight, math.floor(quantile7(hist, q)) + 1)

    def _examine(self, changed: list[int], t: float, at: float) -> list[Alert]:
        """Alerts of the changed components (or their communities) that are new or grew enough."""
        p, graph = self.params, self._graph
        comps: list[list[str]] = []
        for c in changed:
            n, e = len(graph.members[c]), graph.evald.get(c, 0)
            if n < p.min_group_size or (e and not _grew(n, e, p.update_growth_fraction)):
                continue
            comps.append(sorted(graph.members[c]))
            graph.examined(c)
        alerts: list[Alert] = []
        claimed: set[str] = set()
        for members in sorted(comps):
            parts = [members] if len(members) <= p.split_above_accounts else self._communities(members)
            for part in sorted(parts, key=lambda x: (-len(x), x[0])):
                if len(part) >= p.min_group_size:
                    alert = self._match(part, t, claimed, at)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _edges(self, members: list[str]) -> list[tuple[int, str, str, int]]:
        """Alert-graph edges inside ``members`` as (weight, a, b, key), a < b, heaviest first."""
        inside = set(members)
        ew = self._weights.ew
        adj = self._graph.adj
        edges = [(ew[k], a, b, k) for a in members for b, k in adj.get(a, {}).items() if a < b and b in inside]
        edges.sort(key=lambda x: (-x[0], x[1], x[2]))
        return edges

    def _communities(self, members: list[str]) -> list[list[str]]:
        g = nx.Graph()
        g.add_nodes_from(members)
        g.add_weighted_edges_from((a, b, w) for w, a, b, _ in sorted(self._edges(members), key=lambda x: (x[1], x[2])))
        found = nx.community.louvain_communities(g, weight="weight", seed=LOUVAIN_SEED)
        return [sorted(c) for c in found]

    def _match(self, part: list[str], t: float, claimed: set[str], at: float) -> Alert | None:
        """Tie ``part`` to the live known group most of it belongs to, or open a new one."""
        edges = self._edges(part)
        if not edges:  # a community without inner edges
            return None
        horizon = t - self.params.memory_s
        votes = Counter(
            g for m in part if (g := self._member.get(m)) is not None and g not in claimed
            and self._groups[g][2] >= horizon
        )  # fmt: skip
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
            start = max(self._evidence(edges).first, horizon)
            gid = stable_id("ca-", part[0], math.floor(start / self.params.memory_s))
            while gid in self._groups:  # same smallest account and bucket as a live group: derive another
                gid = stable_id("ca-", gid)
            rec = self._groups[gid] = [0, len(part), t, part]
            grown = True
        for m in part:
            self._member[m] = gid
        claimed.add(gid)
        return self._alert(gid, rec[0], part, edges, self._evidence(edges), t, at) if grown else None

    def _evidence(self, edges: list[tuple[int, str, str, int]]) -> _Evidence:
        """The live pairs on ``edges``, oldest first."""
        wanted = np.unique(np.array([e[3] for e in edges], dtype=np.int64))
        sel = self._pairs.on_edges(wanted)
        return _Evidence(sel, sel["ek"])

    def _alert(
        self, gid: str, revision: int, part: list[str], edges: list[tuple[int, str, str, int]], ev: _Evidence,
        t: float, at: float,
    ) -> Alert:
        degree: Counter[str] = Counter()
        for w, a, b, _ in edges:
            degree[a] += w
            degree[b] += w
        order = sorted(part, key=lambda a: (-degree[a], a))
        top_edges = []
        for w, a, b, k in edges[:TOP]:
            deltas = np.abs(ev.pairs["dt"][ev.keys == k])[-DELTAS:].tolist()
            top_edges.append({"accounts": [a, b], "weight": w, "median_dt_s": statistics.median(deltas),
                              "min_dt_s": min(deltas)})  # fmt: skip
        names = self._accounts.names
        sides = [(int(r), names[int(x)]) for col_r, col_a in (("rn", "an"), ("ro", "ao"))
                 for r, x in zip(ev.pairs[col_r].tolist(), ev.pairs[col_a].tolist())]  # fmt: skip
        facts = self._store.get([r for r, _ in sides])
        sharers: dict[str, set[str]] = {}
        latest: dict[str, tuple[float, str, str]] = {}
        for (_, acc), fact in zip(sides, facts):
            sharers.setdefault(fact[2], set()).add(acc)  # type: ignore[arg-type]
            if acc not in latest or fact > latest[acc]:  # type: ignore[operator]
                latest[acc] = fact  # type: ignore[index]
        samples = [(a, latest[a]) for a in order if a in latest][:SAMPLE_POSTS]
        objects = sorted(sharers.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP]
        return Alert(
            type=self.NAME,
            group_id=gid,
            revision=revision,
            score=sum(w for w, _, _, _ in edges) / len(edges) * math.log2(len(part)),
            window_start=max(ev.first, t - self.params.memory_s),
            window_end=ev.last,
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
        """Free what nothing can reach any more: idle ids, old actions, old groups and posts."""
        self._swept, self._swept_ref = t, self._applied_ref
        lo = t - self._keep_s
        views = self._pairs.views(applied=False)
        tail = self._tail()
        used = np.zeros(len(self._parts), dtype=bool)
        # the object parts' tails: the participants of every action from the oldest on (a superset)
        for col in (*(v[c] for v in views for c in ("pn", "po")), self._store.pids_since(tail), self._batch_pids):
            used[col] = True
        if self._track:
            used |= self._rows[: used.size] > 0
        idle = np.flatnonzero(~used).tolist()
        idle = [i for i in idle if self._parts.keys[i] is not None]
        if idle:
            self._weights.release(idle)
            if self._per_type:
                self._parts.release(idle)
                used_a = np.zeros(len(self._accounts), dtype=bool)
                used_a[self._paid[np.flatnonzero(used)]] = True
                gone = [i for i in np.flatnonzero(~used_a).tolist() if self._accounts.keys[i] is not None]
                self._accounts.release(gone)
            else:
                self._accounts.release(idle)
        self._store.trim(min([*(int(v["ro"].min()) for v in views if v["ro"].size), tail]))
        for o in self._objects:
            o.forget(t)
        if isinstance(self._weights, Links):
            self._weights.forget(lo)
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
        ``thresholded`` only the alert graph's edges.
        """
        ew = self._weights.ew
        if thresholded:
            return {(a, b): ew[k] for a, nb in self._graph.adj.items() for b, k in nb.items() if a < b}
        names = self._accounts.names
        out = {}
        for k, w in ew.items():
            a, b = names[k >> 32], names[k & _LOW]
            out[(a, b) if a < b else (b, a)] = w  # type: ignore[operator]
        return out  # type: ignore[return-value]

    @property
    def edge_cut(self) -> int:
        """The smallest weight of an alert-graph edge (min_weight, raised by the quantile)."""
        return self._cut

    # -- state -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        store_head, store_arrays = self._store.state()
        objects = [o.state() for o in self._objects]
        live = self._pairs.live()  # between batches every pair and row is applied
        rows_q = np.concatenate([c[:, self._row_head if i == 0 else 0 :] for i, c in enumerate(self._row_q)], axis=1) \
            if self._row_q else np.zeros((3, 0))  # fmt: skip
        state = {
            "wm": _fin(self._wm),
            "bucket": _fin(self._bucket),
            "swept": _fin(self._swept),
            "swept_ref": self._swept_ref,
            "applied_ref": self._applied_ref,
            "next_ref": self._next_ref,
            "accounts": self._accounts.state(),
            "parts": self._parts.state() if self._per_type else None,
            "store": store_head,
            "objects": [head for head, _ in objects],  # none if the parts run elsewhere
            "maps": [m.state()[0] for m in self._maps],
            "part_oldest": self._part_oldest,
            "part_next": self._part_next,
            "weights": self._weights.state(),  # type: ignore[attr-defined]
            "cand": self._cand.state(),
            "cut": self._cut,
            "pending": self._pending,
            "graph": self._graph.state(),
            "groups": [[g, *rec] for g, rec in self._groups.items()],
            "member": list(self._member.items()),
        }
        arrays = [*store_arrays, *(live[k] for k in _PAIR_COLS), self._paid, self._rows, self._acts, rows_q,
                  *self._cand.arrays(), *(m.state()[1] for m in self._maps),
                  *(a for _, xs in objects for a in xs)]  # fmt: skip
        return state, arrays

    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self._store.load(state["store"], arrays[:3])
        n_cols, n_parts = len(_PAIR_COLS), len(state["maps"])
        live = {k: a.astype(d) for k, a, d in zip(_PAIR_COLS, arrays[3 : 3 + n_cols], _PAIR_TYPES)}
        paid, rows, acts, rows_q, *rest = arrays[3 + n_cols :]
        cand, maps, tails = rest[:4], rest[4 : 4 + n_parts], rest[4 + n_parts :]
        self._objects = [ObjectActions(self.params, (s, n_parts)) for s in range(len(state["objects"]))]
        for o, head in zip(self._objects, state["objects"]):
            o.load(head, tails[: head["arrays"]])
            tails = tails[head["arrays"] :]
        self._maps = [_RefMap() for _ in range(n_parts)]
        for m, bases, refs in zip(self._maps, state["maps"], maps):
            m.load(bases, refs)
        self._part_oldest, self._part_next = list(state["part_oldest"]), list(state["part_next"])
        self._paid, self._rows, self._acts = paid.astype(np.int64), rows.astype(np.int64), acts.astype(np.int64)
        if not self._per_type:
            self._acts = self._rows
        self._cand.load(state["cand"], cand)
        self._wm, self._bucket, self._swept = _unfin(state["wm"]), _unfin(state["bucket"]), _unfin(state["swept"])
        self._swept_ref, self._applied_ref = state["swept_ref"], state["applied_ref"]
        self._next_ref = state["next_ref"]
        self._accounts.load(state["accounts"])
        if self._per_type:
            self._parts.load(state["parts"])
        n = len(live["seen"])
        self._pairs = _Pairs()
        self._pairs.chunks = [live] if n else []
        self._pairs.applied = n
        self._weights.load(state["weights"], self._pairs.segment(live, 0, n))  # type: ignore[attr-defined]
        self._row_q = [rows_q] if rows_q.shape[1] else []
        self._row_head = 0
        self._row_applied = rows_q.shape[1]
        self._cut, self._pending = state["cut"], state["pending"]
        self._graph.load(state["graph"], [(*self._names(k), k) for k in self._cand.strong_keys()])
        self._groups = {g: rec for g, *rec in state["groups"]}
        self._member = dict(state["member"])


class CoActionParts(PartsMerge[Actions]):
    """co_action whose ``parts`` object parts run elsewhere, each a
    :class:`~detectors.co_objects.CoActionPart` (a worker's work partition), merged here
    (:class:`~detectors.parts.PartsMerge`)."""

    KIND = "co_action.parts"
    PAYLOAD = Actions

    def __init__(self, params: CoActionParams, parts: int) -> None:
        super().__init__(CoActionDetector(params, parts=parts, local=False), parts)

    def _restore(self, data: bytes) -> CoActionDetector:
        return CoActionDetector.restore(self.detector.params, data)


@dataclass
class _Batch:
    """A batch's actions in position order: event index, participant, account, post, watermark;
    ``pair_new``: the new action of each of its pairs (in the pairs FIFO's newest chunk)."""

    n: int
    ref0: int  # position of the first
    ev: np.ndarray
    pid: np.ndarray
    aid: np.ndarray
    post: np.ndarray
    wm: np.ndarray
    pair_new: np.ndarray


@dataclass
class _Evidence:
    pairs: dict[str, np.ndarray]
    keys: np.ndarray

    @property
    def first(self) -> float:
        return float(self.pairs["seen"].min())

    @property
    def last(self) -> float:
        return float(self.pairs["seen"].max())


class _Candidates:
    """Account pairs weighing at least min_weight, in numpy slots, and which are alert-graph edges."""

    def __init__(self, min_weight: int) -> None:
        self.min_weight = min_weight
        self.slot: dict[int, int] = {}
        self.key = np.zeros(64, dtype=np.int64)
        self.w = np.zeros(64, dtype=np.int64)
        self.used = np.zeros(64, dtype=bool)
        self.strong = np.zeros(64, dtype=bool)
        self.free: list[int] = list(range(63, -1, -1))
        self._all = False  # the cut changed: test every slot

    def cut_changed(self) -> None:
        self._all = True

    def update(self, changed: list[int], ew: dict[int, int], cut: int, test: Any) -> tuple[list[int], list[int]]:
        """New weights of ``changed`` edges; the edges that joined and left the alert graph."""
        parted: list[int] = []
        slot, minw = self.slot, self.min_weight
        keys = list(dict.fromkeys(changed))
        w_of = np.array(list(map(ew.get, keys, itertools.repeat(0))), dtype=np.int64)
        s_of = np.array(list(map(slot.get, keys)), dtype=np.float64)  # NaN: no slot
        weighs = w_of >= minw
        # in key order, slots for the edges that came to weigh min_weight, none for those that
        # left (the only changes of the free list: the slots are what a loop over all gives)
        for j in np.flatnonzero(weighs == np.isnan(s_of)).tolist():
            k = keys[j]
            if weighs[j]:
                s_of[j] = slot[k] = self._alloc(k)
            else:
                s = int(s_of[j])
                if self.strong[s]:
                    parted.append(k)
                del slot[k]
                self.used[s] = self.strong[s] = False
                self.free.append(s)
        touched = s_of[weighs].astype(np.int64)
        self.w[touched] = w_of[weighs]
        if test is None and not self._all and touched.size <= _FEW:  # a sparse stream's few changes: no numpy
            joined = []
            for s in touched.tolist():
                now, was = bool(self.w[s] >= cut), bool(self.strong[s])
                if now != was:
                    self.strong[s] = now
                    (joined if now else parted).append(int(self.key[s]))
            return joined, parted
        if test is not None or self._all:
            sel = np.flatnonzero(self.used)
        else:
            sel = touched
        self._all = False
        if not sel.size:
            return [], parted
        w = self.w[sel]
        now = w >= cut
        if test is not None:
            now &= test(self.key[sel] >> 32, self.key[sel] & _LOW, w)
        was = self.strong[sel]
        self.strong[sel] = now
        joined = self.key[sel[now & ~was]].tolist()
        parted += self.key[sel[was & ~now]].tolist()
        return joined, parted

    def _alloc(self, k: int) -> int:
        if not self.free:
            n = self.key.size
            for name in ("key", "w", "used", "strong"):
                old = getattr(self, name)
                setattr(self, name, np.concatenate((old, np.zeros(n, dtype=old.dtype))))
            self.free = list(range(2 * n - 1, n - 1, -1))
        s = self.free.pop()
        self.key[s], self.used[s] = k, True
        return s

    def strong_keys(self) -> list[int]:
        return self.key[self.strong].tolist()  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return {"free": self.free, "all": self._all}

    def arrays(self) -> list[np.ndarray]:
        return [self.key, self.w, self.used, self.strong]

    def load(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self.key, self.w = arrays[0].astype(np.int64), arrays[1].astype(np.int64)
        self.used, self.strong = arrays[2].astype(bool), arrays[3].astype(bool)
        self.free, self._all = state["free"], state["all"]
        self.slot = {int(k): int(s) for s, k in zip(np.flatnonzero(self.used).tolist(), self.key[self.used].tolist())}
