"""near_duplicate's matching, by LSH band: which documents are near-duplicates of which.

Everything here depends on the documents alone, never on clusters: which events are
documents (text actions with a text of at least ``min_tokens`` tokens, numbered in sequence
order), their band keys, the band index's candidates and live head, and the Jaccard
estimates of the candidate pairs. A pair is a candidate if the two share a bucket in *any*
band, and the index caps candidates per band bucket (``max_bucket_candidates``), so the bands
split: band part ``s`` of ``n`` (:class:`BandMatcher` with ``part = (s, n)``) MinHashes every
text on its bands' columns only, keeps its bands' index and finds the pairs they give; the
union over the parts is the pairs of all bands. Each part estimates its pairs' Jaccard from
all ``num_perm`` columns (completed from the shingles it keeps), so a pair found by two parts
has the same estimate in both. :class:`~detectors.near_duplicate.NearDuplicateDetector` runs
one matcher of every band, or merges the parts' :class:`Bands` (``NearDuplicateParts``).

Every part still shingles every text and MinHashes it on its own bands' columns: what a part
saves is the rest of its share of the bands (their MinHash columns, index entries and
lookups), never the shingling (``coordwatch bench shards``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np

from detectors.base import WHOLE, Shard
from detectors.events import Event, pack_events, unpack_events
from detectors.params import NearDuplicateParams
from detectors.parts import PartDetector
from sketches.errors import CoordwatchError
from sketches.lsh import BandIndex, band_keys, choose_bands
from sketches.minhash import minhasher
from sketches.protocol import pack, unpack
from sketches.ring import grow_ring
from sketches.shingling import shingle_batch

TRIM = 4096  # document stores drop expired entries in blocks of at least this many
_INITIAL_CAPACITY = 1024  # signature ring (documents), doubled when a batch does not fit
_ACTION, _TEXT, _TS = (itemgetter(Event._fields.index(f)) for f in ("action", "text", "ts"))  # faster than attributes
_I64 = np.empty(0, dtype=np.int64)
_NAMED_BYTES = 256  # a named event in a segment beside its text (JSON: account, id, time), at most about


def _slim(e: Event) -> Event:
    """What clustering needs of a document's event (its account, id, text and time)."""
    return Event(e.ts, e.account_id, e.action, e.event_id, e.text, (), None, (), {})


def lsh_shape(p: NearDuplicateParams) -> tuple[int, int]:
    """(bands, rows): as set, or chosen from threshold with bands capped at max_lsh_bands."""
    if p.lsh_bands is not None and p.lsh_rows is not None:
        return p.lsh_bands, p.lsh_rows
    bands, rows = choose_bands(p.threshold, p.num_perm)
    return min(bands, p.max_lsh_bands), rows


def band_range(bands: int, part: Shard) -> tuple[int, int]:
    """The bands ``[lo, hi)`` of part ``(s, n)``: consecutive ones, as many to each part as can be."""
    s, n = part
    return s * bands // n, (s + 1) * bands // n


@dataclass(frozen=True)
class Bands:
    """One batch's documents and the near-duplicate pairs some bands found among them (a
    band part's segment payload). ``ev``: each document's event in the batch (documents in
    sequence order, the first is document ``doc0``); ``heads``: the index's live head as of
    each; ``new``, ``old``, ``agree``: the pairs (a document of the batch, an earlier live
    one, their equal signature values) whose estimated Jaccard is ``>= threshold``, sorted by
    (new, old); ``seqs``, ``events``: the documents of those pairs named here for the first
    time, with their events (whoever clusters them keeps those); ``short``: the events whose
    text was too short."""

    ev: np.ndarray
    doc0: int
    heads: np.ndarray
    new: np.ndarray
    old: np.ndarray
    agree: np.ndarray
    seqs: np.ndarray
    events: list[Event]
    short: np.ndarray

    SEGMENT_KIND: ClassVar[str] = "near_duplicate.segment"

    @classmethod
    def empty(cls, doc0: int, short: np.ndarray = _I64) -> Bands:
        return cls(_I64, doc0, _I64, _I64, _I64, _I64, _I64, [], short)

    def cut(self, lo: int, hi: int) -> Bands:
        """The documents of the batch's events ``lo`` to ``hi`` (``ev`` counted from ``lo``),
        their pairs, and the events named among them; the first cut (``lo = 0``) also names
        the earlier documents. A segment's cuts are taken in order (:mod:`detectors.parts`),
        so each document is named before a pair needs it, and once."""
        a, b = (int(x) for x in np.searchsorted(self.ev, [lo, hi]))
        d0, d1 = self.doc0 + a, self.doc0 + b
        p, q = (int(x) for x in np.searchsorted(self.new, [d0, d1]))
        k0, k1 = (int(x) for x in np.searchsorted(self.seqs, [d0, d1]))
        if lo == 0:
            k0 = 0
        s0, s1 = (int(x) for x in np.searchsorted(self.short, [lo, hi]))
        return Bands(self.ev[a:b] - lo, d0, self.heads[a:b], self.new[p:q], self.old[p:q], self.agree[p:q],
                     self.seqs[k0:k1], self.events[k0:k1], self.short[s0:s1] - lo)  # fmt: skip

    @classmethod
    def union(cls, parts: Sequence[Bands]) -> Bands:
        """The pairs of all parts over the same events (each part numbers the documents alike)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        if any(b.doc0 != first.doc0 or b.ev.size != first.ev.size for b in parts):
            raise CoordwatchError("near_duplicate band parts numbered the documents apart: are their params the same?")
        new, old, agree = (np.concatenate([getattr(b, f) for b in parts]) for f in ("new", "old", "agree"))
        order = np.lexsort((old, new))
        new, old, agree = new[order], old[order], agree[order]
        keep = np.ones(new.size, dtype=bool)
        keep[1:] = (new[1:] != new[:-1]) | (old[1:] != old[:-1])  # a pair two parts' bands found
        named: dict[int, Event] = {}
        for b in parts:
            named.update(zip(b.seqs.tolist(), b.events))
        seqs = sorted(named)
        return Bands(first.ev, first.doc0, first.heads, new[keep], old[keep], agree[keep],
                     np.array(seqs, dtype=np.int64), [named[s] for s in seqs], first.short)  # fmt: skip

    def to_bytes(self) -> bytes:
        head = {"kind": "near_duplicate.bands", "version": 1, "doc0": self.doc0}
        body = np.frombuffer(pack_events(self.events), dtype=np.uint8)
        return pack(head, [*(getattr(self, c) for c in _COLUMNS), body])

    @classmethod
    def from_bytes(cls, data: bytes) -> Bands:
        head, arrays = unpack(data, kind="near_duplicate.bands", version=1)
        cols = dict(zip(_COLUMNS, (a.astype(np.int64) for a in arrays)))
        return cls(**cols, doc0=head["doc0"], events=unpack_events(arrays[-1].tobytes()))


_COLUMNS = ("ev", "heads", "new", "old", "agree", "seqs", "short")


class BandMatcher:
    """The documents, band index and signatures of band part ``part`` (module docstring)."""

    def __init__(self, params: NearDuplicateParams, part: Shard = WHOLE) -> None:
        p = params
        bands, rows = lsh_shape(p)
        if part[1] > bands:
            raise ValueError(f"near_duplicate has {bands} LSH bands: it splits into at most {bands} parts")
        lo, hi = band_range(bands, part)
        self.params = p
        self._actions = frozenset(p.text_actions)
        self._bands, self._rows = hi - lo, rows
        self._cols = slice(lo * rows, hi * rows)  # the signature columns its bands use
        self._hasher = minhasher(p.num_perm, p.seed)
        self._index = BandIndex(p.window_s, self._bands)
        # Live documents by seq - base ([head, next) are live, as in the index); signatures by
        # seq % capacity: its bands' columns of every document, the others only once it is in
        # a pair (_has); whether its event was handed on (_sent); shingles to complete them.
        self._ev: list[Event] = []
        self._base = self._next = 0
        self._sig = np.empty((_INITIAL_CAPACITY, p.num_perm), dtype=np.uint32)
        self._has = np.zeros(_INITIAL_CAPACITY, dtype=bool)
        self._sent = np.zeros(_INITIAL_CAPACITY, dtype=bool)
        # Per batch: (first seq, hashes, offsets (n + 1) or (2, n) start and end per document).
        self._shingles: deque[tuple[int, np.ndarray, np.ndarray]] = deque()

    @property
    def head(self) -> int:
        """The first live document (the band index's head)."""
        return self._index.head

    @property
    def next(self) -> int:
        """The next document's seq."""
        return self._next

    def _select(self, events: Sequence[Event]) -> tuple[list[Event], np.ndarray, list[str]]:
        """The events with a text of a text action, their positions in the batch, their texts."""
        ok = np.fromiter(map(self._actions.__contains__, map(_ACTION, events)), dtype=bool, count=len(events))
        docs = list(compress(events, ok.tolist()))
        where = np.flatnonzero(ok)
        texts = list(map(_TEXT, docs))
        if None in texts:
            has = [t is not None for t in texts]
            docs, texts, where = list(compress(docs, has)), list(compress(texts, has)), where[np.flatnonzero(has)]
        return docs, where, texts

    def match(self, events: Sequence[Event]) -> Bands:
        """A batch's documents and their pairs in this part's bands."""
        p = self.params
        docs, where, texts = self._select(events)
        if not docs:
            return Bands.empty(self._next)
        sh = shingle_batch(texts, p.shingle_kind, p.shingle_n)
        # Band columns of every text: MinHash of the few short ones costs less than cutting
        # them out of the shingle arrays (a pass over all shingles).
        band = self._hasher.values(sh.hashes, sh.offsets, self._cols)
        keep = sh.token_counts >= p.min_tokens
        rows, short = None, _I64
        if not keep.all():
            rows, short = np.flatnonzero(keep), where[~keep]
            docs, where, band = list(compress(docs, keep.tolist())), where[rows], band[rows]
            if not docs:
                return Bands.empty(self._next, short)
        first, live = self._next, self.head  # the batch's first documents may pair with all live now
        ts = np.fromiter(map(_TS, docs), dtype=np.float64, count=len(docs))
        new, old, heads = self._index.insert(band_keys(band, self._bands, self._rows), ts, p.max_bucket_candidates)
        self._store(docs, sh.hashes, sh.offsets, rows, band, live)
        new, old, agree = self._near(first + new, old)
        seqs = np.unique(np.concatenate((new, old)))
        seqs = seqs[~self._sent[seqs % self._sent.size]]
        self._sent[seqs % self._sent.size] = True
        named = [_slim(self._ev[s - self._base]) for s in seqs.tolist()]
        self._trim()
        return Bands(where, first, heads, new, old, agree, seqs, named, short)

    def _store(self, docs: list[Event], hashes: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None,
               band: np.ndarray, live: int) -> None:  # fmt: skip
        """Append a batch's documents: their band columns, and for the other columns their
        shingles (document k of the batch is row ``rows[k]`` of hashes/offsets, if given),
        keeping those from ``live`` on."""
        m, first = len(docs), self._next
        self._reserve(live, self._next - live + m)
        slots = np.arange(first, first + m) % self._has.size
        self._sig[slots, self._cols] = band
        self._has[slots] = self._sent[slots] = False
        self._shingles.append((first, hashes, offsets if rows is None else np.stack((offsets[rows], offsets[rows + 1]))))
        self._ev += docs
        self._next += m

    def _reserve(self, live: int, needed: int) -> None:
        """Grow the signature ring to hold ``needed`` documents from ``live`` on (:func:`~sketches.ring.grow_ring`)."""
        if (grown := grow_ring((self._sig, self._has, self._sent), live, self._next, needed)) is not None:
            self._sig, self._has, self._sent = grown

    def _complete(self, seqs: np.ndarray) -> None:
        """Compute the signature columns of other bands and beyond the bands where missing."""
        cap = self._has.size
        missing = seqs[~self._has[seqs % cap]]
        if not missing.size:
            return
        firsts = np.array([f for f, _, _ in self._shingles], dtype=np.int64)
        chunk = np.searchsorted(firsts, missing, "right") - 1
        parts, sizes = [], []
        for c in np.unique(chunk).tolist():
            f, hashes, offsets = self._shingles[c]
            local = missing[chunk == c] - f
            if offsets.ndim == 1:
                lo, size = offsets[local], offsets[local + 1] - offsets[local]
            else:
                lo, size = offsets[0, local], offsets[1, local] - offsets[0, local]
            out_start = np.cumsum(size) - size
            parts.append(hashes[np.repeat(lo - out_start, size) + np.arange(int(size.sum()))])
            sizes.append(size)
        hashes, bounds = np.concatenate(parts), np.concatenate(([0], np.cumsum(np.concatenate(sizes))))
        slots = missing % cap
        for cols in (slice(0, self._cols.start), slice(self._cols.stop, self.params.num_perm)):
            if cols.stop > cols.start:
                self._sig[slots, cols] = self._hasher.values(hashes, bounds, cols)
        self._has[slots] = True

    def _near(self, new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The band candidate pairs (seqs) whose estimated Jaccard is ``>= threshold``, and
        their equal signature values."""
        if not new.size:
            return new, old, _I64
        p, cap = self.params, self._has.size
        self._complete(np.unique(np.concatenate((new, old))))
        agree = np.count_nonzero(self._sig[new % cap] == self._sig[old % cap], axis=1)
        keep = agree / p.num_perm >= p.threshold
        return new[keep], old[keep], agree[keep].astype(np.int64)

    def _trim(self) -> None:
        """Drop expired documents from the store in blocks; shingles of expired batches."""
        head = self.head
        k = head - self._base
        if k >= TRIM and 2 * k >= len(self._ev):
            del self._ev[:k]
            self._base = head
        chunks = self._shingles
        while len(chunks) > 1 and chunks[1][0] <= head:
            chunks.popleft()

    # -- state -----------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Approximate memory: the band index, signatures, shingles and live documents."""
        arrays = self._index.nbytes + self._sig.nbytes + self._has.nbytes + self._sent.nbytes
        arrays += sum(h.nbytes + o.nbytes for _, h, o in self._shingles)
        live = self._ev[self.head - self._base :]
        strings = sum(sys.getsizeof(e) + sys.getsizeof(e.account_id) + sys.getsizeof(e.event_id)
                      + sys.getsizeof(e.text) for e in live)  # fmt: skip
        return arrays + sys.getsizeof(self._ev) + strings

    def state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Live documents (the index and signatures are rebuilt from their texts)."""
        head = self.head
        live = self._ev[head - self._base :]
        state = {
            "head": head,
            "newest": None if self._index.newest == -np.inf else self._index.newest,
            "accounts": [e.account_id for e in live],
            "event_ids": [e.event_id for e in live],
            "texts": [e.text for e in live],
        }
        sent = self._sent[np.arange(head, self._next) % self._sent.size]
        return state, [np.array([e.ts for e in live], dtype=np.float64), sent.astype(np.uint8)]

    def load(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        ts, sent = arrays
        p, head = self.params, state["head"]
        newest = -np.inf if state["newest"] is None else state["newest"]
        docs = [Event(t, a, "post", e, x, (), None, (), {})
                for t, a, e, x in zip(ts.tolist(), state["accounts"], state["event_ids"], state["texts"])]  # fmt: skip
        self._base = self._next = head
        if docs:
            sh = shingle_batch([e.text for e in docs], p.shingle_kind, p.shingle_n)  # type: ignore[misc]
            band = self._hasher.values(sh.hashes, sh.offsets, self._cols)
            self._index.load(band_keys(band, self._bands, self._rows), ts, head, newest)
            self._store(docs, sh.hashes, sh.offsets, None, band, head)
            self._sent[np.arange(head, self._next) % self._sent.size] = sent.astype(bool)
        else:
            self._index.load(np.empty((0, self._bands), dtype=np.uint64), ts, head, newest)


class NearDuplicatePart(PartDetector[NearDuplicateParams, Bands]):
    """Band part ``shard = (s, n)`` of a split near_duplicate (:mod:`detectors.parts`): every
    batch's documents and the pairs its bands find, for the near_duplicate that merges the
    parts (:class:`~detectors.near_duplicate.NearDuplicateParts`)."""

    NAME = "near_duplicate.bands"
    STATE_VERSION = 1
    LABEL = "bands"

    FINDER = BandMatcher
    finder: BandMatcher

    def _find(self, events: Sequence[Event]) -> tuple[Bands, np.ndarray]:
        found = self.finder.match(events)
        self.stats["documents"] += found.ev.size
        # bytes per event, at most: its time, a document's event and head, a pair, an event named
        cost = np.full(len(events), 8.0)
        cost[found.ev] += 16
        np.add.at(cost, found.ev[found.new - found.doc0], 24)
        named = found.seqs - found.doc0
        size = np.fromiter((_NAMED_BYTES + 4 * len(e.text) for e in found.events), np.float64,  # type: ignore[arg-type]
                           len(found.events))  # fmt: skip
        np.add.at(cost, found.ev[named[named >= 0]], size[named >= 0])
        cost[0] += size[named < 0].sum()  # earlier documents named here: in every piece
        return found, cost

    def _empty(self) -> Bands:
        return Bands.empty(self.finder.next)
