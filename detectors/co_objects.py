"""co_action's per-object part: a batch's actions on the objects of one part, and their pairs.

Everything here depends only on the actions of one object at a time: which objects an event
acts on, the object's load (``max_object_actions``) and its tail of recent actions
(:class:`~detectors.pairing.Pairer`). So co_action's objects split by their seeded hash into
``n`` parts (:class:`ObjectActions` with ``part = (s, n)``), each of which sees every event of
a batch but keeps only the actions on its own objects, and
:class:`~detectors.co_action.CoActionDetector` merges the parts' output into the whole's
action order, which is (event, ``object_fields`` order, place in the field): a part tags each
action with its event and its (field, place) rank, so the merge is a sort. A part numbers its
own actions (its *local* positions): the pairer compares positions only within an object, so
local order is all it needs, and the detector maps local positions to global ones.

Object hashes mix in a hash of the object's kind name (``url``, ``hashtag``, ``domain``, an
``object_type``), never a number given in order of appearance, so every part, and whoever
routes events to parts, hashes an object alike.

``one_object_actions`` keeps an action only if its post had no action in the last ``keep_s``
over *all* objects; a post's objects fall in different parts, so that mode runs as one part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np

from detectors.base import WHOLE, Shard
from detectors.co_weights import fast_weights
from detectors.events import Event
from detectors.pairing import Pairer
from detectors.parts import PartDetector
from detectors.params import CoActionParams
from sketches.hashing import hash_string, hash_strings, hash_u64
from sketches.protocol import pack, unpack

SEED_ACCOUNT, SEED_OBJECT, SEED_POST = 0xC0AC7, 0x0B1EC7, 0x9057
_SEED_KIND = 0x4B1D
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_OBJECT_ID = "object_id"  # the object_fields entry whose kind is the event's object_type
_FIELD = 32  # rank = field number << _FIELD | place in the field
#: the Event columns an action is read from: a map of itemgetter per column is ~4x faster
#: than transposing the batch with ``zip(*events)`` (which makes a 10 k-argument call)
_READ = tuple(itemgetter(Event._fields.index(f))
              for f in ("account_id", "action", "event_id", "urls", "object_id", "hashtags", "extra"))  # fmt: skip
_ACTION_BYTES = 9 * 8 + 64  # an action in a segment, about: its numbers, name and event id


def kind_code(name: str) -> int:
    """The number an object kind mixes into its objects' hashes: a hash of its name."""
    return hash_string(name, _SEED_KIND)


def part_of(obj: np.ndarray, n: int) -> np.ndarray:
    """The part (of ``n``) each object hash belongs to."""
    return (obj % np.uint64(n)).astype(np.int64)


@dataclass(frozen=True)
class Actions:
    """One part's actions of a batch, in its position order, and their pairs (``pair_*``,
    ordered by new action, then partner). ``ev``: the action's event in the batch; ``rank``:
    its (field, place) within the event; ``ah``/``ph``: account and participant hashes (the
    same when participants are accounts); ``names``, ``eids``, ``objs``: account, event id and
    object strings; ``ref0``: the local position of the first; ``pair_new``: each pair's new
    action (index here); ``pair_ref``, ``pair_ts``: its partner's local position and time;
    ``oldest``: the lowest local position the part may still pair with later (its tail's, else
    the next); ``viral``: actions over ``max_object_actions``."""

    ev: np.ndarray
    rank: np.ndarray
    obj: np.ndarray
    objs: np.ndarray
    ah: np.ndarray
    ph: np.ndarray
    names: np.ndarray
    eids: np.ndarray
    post: np.ndarray
    ref0: int
    pair_new: np.ndarray
    pair_ref: np.ndarray
    pair_ts: np.ndarray
    oldest: int | None  # None in a cut that is not the batch's end: unknown there
    viral: int

    SEGMENT_KIND: ClassVar[str] = "co_action.segment"

    def __len__(self) -> int:
        return int(self.ev.size)

    @classmethod
    def empty(cls, ref0: int, oldest: int | None) -> Actions:
        i, u, o = np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, dtype=object)
        return cls(i, i, u, o, u, u, o, o, u, ref0, i, i, np.empty(0), oldest, 0)

    def cut(self, lo: int, hi: int) -> Actions:
        """The actions of the batch's events ``lo`` to ``hi`` (``ev`` counted from ``lo``), with
        their pairs; ``oldest`` and ``viral`` only if the cut reaches the batch's last action."""
        a, b = (int(x) for x in np.searchsorted(self.ev, [lo, hi]))
        p, q = (int(x) for x in np.searchsorted(self.pair_new, [a, b]))
        end = b == self.ev.size
        return Actions(self.ev[a:b] - lo, *(x[a:b] for x in (self.rank, self.obj, self.objs, self.ah, self.ph,
                       self.names, self.eids, self.post)), self.ref0 + a, self.pair_new[p:q] - a,
                       self.pair_ref[p:q], self.pair_ts[p:q], self.oldest if end else None,
                       self.viral if end else 0)  # fmt: skip

    def to_bytes(self) -> bytes:
        """:mod:`sketches.protocol`'s layout: the strings in the header, the columns as arrays."""
        head = {"kind": "co_action.actions", "version": 1, "ref0": self.ref0, "oldest": self.oldest,
                "viral": self.viral, "objs": self.objs.tolist(), "names": self.names.tolist(),
                "eids": self.eids.tolist()}  # fmt: skip
        return pack(head, [getattr(self, c) for c in _COLUMNS])

    @classmethod
    def from_bytes(cls, data: bytes) -> Actions:
        head, arrays = unpack(data, kind="co_action.actions", version=1)
        cols = dict(zip(_COLUMNS, (a.astype(d) for a, d in zip(arrays, _COLUMN_TYPES))))
        strings = {k: np.array(head[k], dtype=object) for k in ("objs", "names", "eids")}
        return cls(**cols, **strings, ref0=head["ref0"], oldest=head["oldest"], viral=head["viral"])


_COLUMNS = ("ev", "rank", "obj", "ah", "ph", "post", "pair_new", "pair_ref", "pair_ts")
_COLUMN_TYPES = (np.int64, np.int64, np.uint64, np.uint64, np.uint64, np.uint64, np.int64, np.int64, np.float64)


class ObjectActions:
    """Reads, hashes and pairs the actions on the objects of part ``part`` (module docstring)."""

    def __init__(self, params: CoActionParams, part: Shard = WHOLE) -> None:
        p = params
        s, n = part
        if not 0 <= s < n:
            raise ValueError(f"co_action has no object part {s} of {n}")
        if n > 1 and p.one_object_actions:
            raise ValueError("co_action with one_object_actions runs as one part: a post's objects fall in several")
        self.params, self.part = p, part
        self._keep_s = p.pair_window_s + p.allowed_lateness_s
        self._per_type = p.participation_scope == "object_type"
        self._types = None if p.object_types is None else frozenset(p.object_types)
        self._one = frozenset(p.one_object_actions)
        self._posts_matter = bool(self._one) or not fast_weights(p)  # distinct posts, participation
        self._fields = [(f, None if f == _OBJECT_ID else kind_code(f[:-1])) for f in p.object_fields]
        self._kinds: dict[Any, int] = {}  # object_type -> kind code, or -1 if object_types excludes it
        self._pairer = Pairer(p.pair_window_s, self._keep_s, p.max_fanout)
        self._load = ObjectLoad(p.memory_s)
        self._posts: dict[int, float] = {}  # one_object_actions: post -> watermark of its first action
        self.next_ref = 0  # local position of the next action

    def actions(self, events: Sequence[Event], marks: np.ndarray, times: np.ndarray) -> Actions:
        """The batch's actions on this part's objects (``marks``/``times``: each event's watermark
        and time), paired, the tail moved on to the batch's last watermark."""
        found = self._read(events, marks, times)
        return Actions.empty(self.next_ref, self.oldest) if found is None else found

    def _read(self, events: Sequence[Event], marks: np.ndarray, times: np.ndarray) -> Actions | None:
        acc_c, act_c, eid_c, urls_c, oid_c, tags_c, extra_c = (list(map(g, events)) for g in _READ)
        evs: list[np.ndarray] = []
        ranks: list[np.ndarray] = []
        kinds: list[np.ndarray] = []
        vals: list[str] = []
        for f_no, (field, kind) in enumerate(self._fields):
            if kind is None:
                idx = [i for i, v in enumerate(oid_c) if v is not None]
                otypes = [extra_c[i].get("object_type") for i in idx]
                kind_of = {o: self._object_kind(o) for o in set(otypes)}
                ks = [kind_of[o] for o in otypes]
                idx, ks = [i for i, k in zip(idx, ks) if k >= 0], [k for k in ks if k >= 0]
                ev_f = np.array(idx, dtype=np.int64)
                place = np.zeros(ev_f.size, dtype=np.int64)
                kinds.append(np.array(ks, dtype=np.uint64))
                vals += [oid_c[i] for i in idx]
            else:
                col = urls_c if field == "urls" else tags_c if field == "hashtags" else [e.domains for e in events]
                ev_f = np.array([i for i, xs in enumerate(col) for _ in xs], dtype=np.int64)
                place = np.arange(ev_f.size) - np.searchsorted(ev_f, ev_f)  # entries are in event order
                kinds.append(np.full(ev_f.size, kind, dtype=np.uint64))
                vals += [x for xs in col for x in xs]
            evs.append(ev_f)
            ranks.append(place | f_no << _FIELD)
        ev = np.concatenate(evs) if evs else np.empty(0, dtype=np.int64)
        if not ev.size:
            return None
        rank, kind_a = np.concatenate(ranks), np.concatenate(kinds)
        obj = hash_u64(hash_strings(vals, SEED_OBJECT) ^ (kind_a * _GOLDEN), SEED_OBJECT)
        sel = np.arange(ev.size)
        s, n = self.part
        if n > 1:
            sel = np.flatnonzero(part_of(obj, n) == s)
        order = sel[np.lexsort((rank[sel], ev[sel]))]  # event order, then field and place
        srt = order[np.lexsort((obj[order], ev[order]))]  # stable: the first of each (event, object) first
        dup = np.zeros(ev.size, dtype=bool)
        dup[srt[1:]] = (ev[srt][1:] == ev[srt][:-1]) & (obj[srt][1:] == obj[srt][:-1])
        order = order[~dup[order]]  # one action per (event, object)
        if not order.size:
            return None
        ev, rank, obj, kind_a = ev[order], rank[order], obj[order], kind_a[order]
        objs = np.array(vals, dtype=object)[order]  # C-level takes, not a list comprehension
        ah = hash_strings(acc_c, SEED_ACCOUNT)[ev]
        ph = hash_u64(ah ^ (kind_a + np.uint64(1)) * np.uint64(0xBF58476D1CE4E5B9), SEED_ACCOUNT) \
            if self._per_type else ah  # fmt: skip
        post = np.zeros(ev.size, dtype=np.uint64)
        if self._posts_matter:
            cids = [x.get("content_id") or e for x, e in zip(extra_c, eid_c)]
            if any(type(c) is not str for c in cids):
                cids = [str(c) for c in cids]
            post = hash_u64(hash_strings(cids, SEED_POST)[ev] ^ ph, SEED_POST)
        wm = marks[ev]
        if self._one:
            one = np.fromiter(map(self._one.__contains__, act_c), dtype=bool, count=len(act_c))[ev]
            keep = self._first_of_post(post, wm, one.tolist())
            if not keep.all():
                ev, rank, obj, objs, ah, ph, post, wm = (x[keep] for x in (ev, rank, obj, objs, ah, ph, post, wm))
            if not ev.size:
                return None
        ts = times[ev]
        refs = np.arange(self.next_ref, self.next_ref + ev.size, dtype=np.int64)
        self.next_ref += ev.size
        quiet, viral = None, 0
        if self.params.max_object_actions:
            quiet = self._load.counts(obj, wm) >= self.params.max_object_actions
            viral = int(quiet.sum())
        pairs = self._pairer.pair(obj, ph.view(np.int64), ts, refs, float(marks[-1]), quiet)
        return Actions(ev, rank, obj, objs, ah, ph, np.array(acc_c, dtype=object)[ev], np.array(eid_c, dtype=object)[ev],
                       post, int(refs[0]), pairs.new, pairs.ref, pairs.ts, self.oldest, viral)  # fmt: skip

    @property
    def oldest(self) -> int:
        """The lowest local position a later pair may name (its tail's oldest, else the next)."""
        return int(self._pairer.ref.min()) if len(self._pairer) else self.next_ref

    def _object_kind(self, otype: Any) -> int:
        """The kind code of an object_id with this object_type, or -1 if object_types excludes it."""
        k = self._kinds.get(otype)
        if k is None:
            excluded = self._types is not None and otype not in self._types
            k = self._kinds[otype] = -1 if excluded else kind_code(otype if type(otype) is str else "object")
        return k

    def _first_of_post(self, post: np.ndarray, wm: np.ndarray, one: list[bool]) -> np.ndarray:
        """one_object_actions: keep an action of such an event only if its post had no action
        in the last keep_s (every action registers its post)."""
        keep = np.ones(post.size, dtype=bool)
        posts, window = self._posts, self._keep_s
        for i, (s, w, o) in enumerate(zip(post.tolist(), wm.tolist(), one)):
            first = posts.get(s)
            if first is None or first < w - window:
                posts[s] = w
            elif o:
                keep[i] = False
        return keep

    def forget(self, t: float) -> None:
        """Drop the posts registry's entries no action at or after ``t - keep_s`` can meet."""
        if self._posts:
            lo = t - self._keep_s
            self._posts = {s: w for s, w in self._posts.items() if w >= lo}

    # -- state -----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        arrays = self._pairer.arrays()
        head = {"next_ref": self.next_ref, "posts": list(self._posts.items()), "load": self._load.state(),
                "arrays": len(arrays)}  # fmt: skip
        return head, arrays

    def load(self, head: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self.next_ref = head["next_ref"]
        self._posts = dict(map(tuple, head["posts"]))  # type: ignore[arg-type]
        self._load.load(head["load"])
        self._pairer.load(arrays)


class ObjectLoad:
    """Actions per object over the last ``span_s``, exactly, as whole panes of ``span_s /
    PANES`` plus the current pane. Each pane and their sum are sorted key and count arrays, so
    a batch costs a few numpy merges and lookups, never a Python call per object; memory
    follows the objects of the span."""

    PANES = 6

    def __init__(self, span_s: float) -> None:
        self.pane_s = span_s / self.PANES
        self.pane = -math.inf  # the current pane
        self.current = _EMPTY_COUNTS
        self.history: list[tuple[float, _Counts]] = []  # closed panes of the span, oldest first
        self.window = _EMPTY_COUNTS  # their sum

    def counts(self, obj: np.ndarray, wm: np.ndarray) -> np.ndarray:
        """Each action's count of earlier actions on its object in the span (actions in
        position order, ``wm`` their watermarks), then counts them in."""
        out = np.empty(obj.size, dtype=np.int64)
        panes = np.floor(wm / self.pane_s)
        runs = np.flatnonzero(np.diff(panes)) + 1
        for lo, hi in zip([0, *runs.tolist()], [*runs.tolist(), obj.size]):
            if panes[lo] > self.pane:
                self._roll(float(panes[lo]))
            o = obj[lo:hi]
            uniq, inverse, n = np.unique(o, return_inverse=True, return_counts=True)
            base = _lookup(self.window, uniq) + _lookup(self.current, uniq)
            order = np.argsort(inverse, kind="stable")  # each object's actions, in position order
            rank = np.empty(o.size, dtype=np.int64)
            rank[order] = np.arange(o.size) - np.repeat(np.cumsum(n) - n, n)
            out[lo:hi] = base[inverse] + rank
            self.current = _merge(self.current, (uniq, n))
        return out

    def _roll(self, pane: float) -> None:
        if self.current[0].size:
            self.history.append((self.pane, self.current))
            self.window = _merge(self.window, self.current)
        self.current, self.pane = _EMPTY_COUNTS, pane
        while self.history and self.history[0][0] <= pane - self.PANES:
            keys, n = self.history.pop(0)[1]
            wk, wn = self.window
            wn = wn.copy()
            wn[np.searchsorted(wk, keys)] -= n  # a pane's keys are all in the window
            keep = wn > 0
            self.window = (wk[keep], wn[keep])

    def state(self) -> dict[str, Any]:
        return {"pane": None if self.pane == -math.inf else self.pane, "current": _items(self.current),
                "history": [[p, _items(c)] for p, c in self.history]}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        self.pane = -math.inf if state["pane"] is None else state["pane"]
        self.current = _from_items(state["current"])
        self.history = [(p, _from_items(c)) for p, c in state["history"]]
        self.window = _EMPTY_COUNTS
        for _, c in self.history:
            self.window = _merge(self.window, c)


_Counts = tuple[np.ndarray, np.ndarray]  # sorted unique uint64 keys, their int64 counts
_EMPTY_COUNTS: _Counts = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))


def _merge(a: _Counts, b: _Counts) -> _Counts:
    """The sum of two count tables."""
    if not a[0].size:
        return b
    keys, inverse = np.unique(np.concatenate((a[0], b[0])), return_inverse=True)
    n = np.bincount(inverse, weights=np.concatenate((a[1], b[1])), minlength=keys.size)
    return keys, n.astype(np.int64)  # float64 sums of counts: exact below 2**53


def _lookup(table: _Counts, keys: np.ndarray) -> np.ndarray:
    """The counts of ``keys`` in ``table`` (0 where absent)."""
    tk, tn = table
    if not tk.size:
        return np.zeros(keys.size, dtype=np.int64)
    i = np.minimum(np.searchsorted(tk, keys), tk.size - 1)
    return np.where(tk[i] == keys, tn[i], 0)


def _items(table: _Counts) -> list[tuple[int, int]]:
    return list(zip(table[0].tolist(), table[1].tolist()))


def _from_items(items: list[list[int]]) -> _Counts:
    if not items:
        return _EMPTY_COUNTS
    keys, n = zip(*items)
    return np.array(keys, dtype=np.uint64), np.array(n, dtype=np.int64)


class CoActionPart(PartDetector[CoActionParams, Actions]):
    """Object part ``shard = (s, n)`` of a split co_action (:mod:`detectors.parts`): every
    batch's actions on its objects, for the co_action that merges the parts
    (:class:`~detectors.co_action.CoActionParts`)."""

    NAME = "co_action.objects"
    STATE_VERSION = 1
    LABEL = "objects"

    FINDER = ObjectActions
    finder: ObjectActions

    def _find(self, events: Sequence[Event]) -> tuple[Actions, np.ndarray]:
        acts = self.finder.actions(events, self.marks, self.times)
        cost = np.bincount(acts.ev, weights=_ACTION_BYTES + np.fromiter(map(len, acts.objs), np.float64, len(acts)),
                           minlength=len(events)) + 8  # fmt: skip
        return acts, cost

    def _empty(self) -> Actions:
        return Actions.empty(self.finder.next_ref, None)
