"""Windowed MinHash LSH: near-duplicate candidates among the posts of the last ``window_s``.

Banding: each signature's first ``bands * rows`` values are cut into ``bands`` bands of
``rows`` values; a 64-bit hash of each band (computed for a whole batch with numpy) is its
key in that band's dict, which maps key → the ids of the live items with that band, in
insertion order. Two items are candidates when they share a key in at least one band,
which happens with probability ``1 - (1 - J**rows)**bands`` for Jaccard ``J``.

Buckets are Python lists, not deques: a one-item deque takes 760 bytes and a one-item
list 64, and nearly every bucket holds one item. Items leave in insertion order, so an
expiring item is always the first entry of each of its buckets.

Signatures, event times and payload ids sit in ring buffers indexed by ``sequence number
% capacity``; the capacity grows (doubling) only when a batch would not fit beside the
live items, so memory follows the number of live items, not the stream. A deque of
(ts, band keys) per live item drives expiry without a numpy call per item (that took
40% of insert time).
"""

from __future__ import annotations

import sys
from collections import deque
from functools import lru_cache
from typing import Self

import numpy as np
from datasketch.lsh import _optimal_param

from sketches.errors import IncompatibleSketchError, SketchFormatError
from sketches.hashing import fmix64, splitmix64
from sketches.minhash import Signatures, _check_scheme
from sketches.protocol import Params, SketchBase

#: Default weights of false positives / false negatives in :func:`choose_bands`. With
#: datasketch's (0.5, 0.5), threshold 0.8 and 128 permutations give 9 bands x 13 rows,
#: which finds a pair at J = 0.8 with probability 0.40 (0.76 recall of J >= 0.8 pairs on
#: the stream); (0.05, 0.95) gives 16 x 8: 0.95 at J = 0.8, 0.24 at J = 0.6, 0.06 at 0.5.
FP_WEIGHT, FN_WEIGHT = 0.05, 0.95
_KEY_SEED = splitmix64(0xBA4D)
_INITIAL_CAPACITY = 1024
_PAIR_BLOCK_BYTES = 16 << 20  # bounds the (pairs x num_perm) comparison block


@lru_cache(maxsize=64)
def choose_bands(
    threshold: float = 0.8,
    num_perm: int = 128,
    fp_weight: float = FP_WEIGHT,
    fn_weight: float = FN_WEIGHT,
) -> tuple[int, int]:
    """(bands, rows) minimising ``fp_weight * FP + fn_weight * FN`` (datasketch's optimiser).

    FP and FN are the areas under the candidate-probability curve below and above
    ``threshold``. The default weights favour recall: coordinated copies missed are worse
    than candidates dropped by the Jaccard check that follows.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    bands, rows = _optimal_param(threshold, num_perm, fp_weight, fn_weight)
    return int(bands), int(rows)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: a chained 64-bit mix of each band's ``rows`` values."""
    x = sigs[:, : bands * rows].reshape(sigs.shape[0], bands, rows).astype(np.uint64)
    h = np.full((sigs.shape[0], bands), _KEY_SEED, dtype=np.uint64)
    for j in range(rows):
        h = fmix64(h ^ x[:, :, j])
    return h


Candidates = list[tuple[int, np.ndarray, np.ndarray]]


class WindowedLSH(SketchBase):
    """Near-neighbour candidates among signatures inserted in the last ``window_s`` seconds.

    Time is event time (the ``ts`` given with each item). Whenever an item (or
    :meth:`expire`) advances the clock ``newest_ts``, items leave in insertion order while
    the oldest has ``ts < newest_ts - window_s``: a late item (older ``ts`` than items
    inserted before it) stays until everything inserted before it has expired, and an
    item that arrives already too old is still queried and stays until it reaches the
    head. Memory therefore follows the live items plus at most one batch.
    """

    KIND = "windowed_lsh"
    VERSION = 1

    def __init__(
        self,
        window_s: float,
        threshold: float = 0.8,
        num_perm: int = 128,
        bands: int | None = None,
        rows: int | None = None,
        seed: int = 1,
        scheme: str = "affine32",
    ) -> None:
        self._dtype = _check_scheme(scheme)
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither (to derive them from threshold)")
        if bands is None or rows is None:
            bands, rows = choose_bands(threshold, num_perm)
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands} x {rows} must fit in num_perm = {num_perm}")
        self.window_s, self.threshold = float(window_s), float(threshold)
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self.seed, self.scheme = seed, scheme
        self._reset(_INITIAL_CAPACITY, head=0)

    def _reset(self, capacity: int, head: int) -> None:
        self._sigs = np.empty((capacity, self.num_perm), dtype=self._dtype)
        self._ts = np.empty(capacity, dtype=np.float64)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._head = self._next = head  # live items have sequence numbers [head, next)
        self._newest = -np.inf
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._live: deque[tuple[float, list[int]]] = deque()  # (ts, band keys), oldest first

    # -- protocol ----------------------------------------------------------------------
    def params(self) -> Params:
        return {
            "window_s": self.window_s,
            "threshold": self.threshold,
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "seed": self.seed,
            "scheme": self.scheme,
        }

    def _arrays(self) -> list[np.ndarray]:
        """Live items in insertion order, then [head, next] and [newest_ts]."""
        slots = np.arange(self._head, self._next) % self._ts.size
        return [
            self._sigs[slots],
            self._ts[slots],
            self._ids[slots],
            np.array([self._head, self._next], dtype=np.int64),
            np.array([self._newest], dtype=np.float64),
        ]

    @classmethod
    def _from_state(cls, params: Params, arrays: list[np.ndarray]) -> Self:
        sigs, ts, ids, counters, clock = arrays
        lsh = cls(**params)
        if counters[1] - counters[0] != ts.size:
            raise SketchFormatError("windowed_lsh state: item count does not match [head, next)")
        lsh._load(sigs, ts, ids, int(counters[0]), float(clock[0]))
        return lsh

    def _load(self, sigs: np.ndarray, ts: np.ndarray, ids: np.ndarray, head: int, newest: float) -> None:
        """Replace the state with these live items (in insertion order); rebuild the tables."""
        capacity = _INITIAL_CAPACITY
        while capacity < ts.size:
            capacity *= 2
        self._reset(capacity, head)
        keys = self._store(sigs, ts, ids).tolist()
        for seq, t, item_keys in zip(range(head, self._next), ts.tolist(), keys):
            for table, key in zip(self._tables, item_keys):
                bucket = table.get(key)
                if bucket is None:
                    table[key] = [seq]
                else:
                    bucket.append(seq)
            self._live.append((t, item_keys))
        self._newest = newest

    @property
    def nbytes(self) -> int:
        """Ring buffers plus the Python objects of the band tables and the expiry deque."""
        arrays = self._sigs.nbytes + self._ts.nbytes + self._ids.nbytes
        tables = sum(
            sys.getsizeof(t) + sum(map(sys.getsizeof, t)) + sum(map(sys.getsizeof, t.values()))
            for t in self._tables
        )
        live = sys.getsizeof(self._live) + sum(
            sys.getsizeof(entry) + sys.getsizeof(entry[0]) + sys.getsizeof(entry[1])
            for entry in self._live
        )
        return arrays + tables + live + 32 * len(self)  # + one int object per sequence number

    def update(self, sigs: Signatures | np.ndarray, ts: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Insert without querying (:meth:`insert_and_query` without the candidate work)."""
        self._insert(sigs, ts, ids, query=False)

    def merge(self, other: WindowedLSH) -> None:
        """Union of both windows' live items, re-inserted in event-time order, then expired.

        Ids are kept; default ids (sequence numbers) of the two indexes may coincide, so
        give explicit ids to indexes that will be merged.
        """
        self.check_compatible(other)
        a, b = self._arrays(), other._arrays()
        ts = np.concatenate([a[1], b[1]])
        order = np.argsort(ts, kind="stable")
        head = max(self._next, other._next)
        self._load(
            np.concatenate([a[0], b[0]])[order],
            ts[order],
            np.concatenate([a[2], b[2]])[order],
            head,
            max(self._newest, other._newest),
        )
        self._expire_before(self._newest - self.window_s)

    # -- window ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._next - self._head

    def expire(self, ts: float) -> None:
        """Advance the clock to event time ``ts`` and drop the items that fell out."""
        self._newest = max(self._newest, float(ts))
        self._expire_before(self._newest - self.window_s)

    def _expire_before(self, cutoff: float) -> None:
        live, tables = self._live, self._tables
        while live and live[0][0] < cutoff:
            for table, key in zip(tables, live.popleft()[1]):
                bucket = table[key]
                if len(bucket) == 1:
                    del table[key]
                else:
                    del bucket[0]
            self._head += 1

    # -- insert + query ----------------------------------------------------------------
    def insert_and_query(
        self,
        sigs: Signatures | np.ndarray,
        ts: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        min_jaccard: float = 0.0,
        max_per_bucket: int | None = None,
    ) -> Candidates:
        """Insert a batch; return each new item's candidates among earlier live items.

        Returns ``(i, candidate_ids, estimated_jaccard)`` for every batch item ``i`` that
        shares a band with an earlier item still live at its insertion (earlier items of
        the same batch included) and whose estimated Jaccard is ``>= min_jaccard``;
        candidates are in insertion order. Ids are the payload ``ids`` given at insertion,
        or else each item's sequence number (0, 1, ... over the index's life).

        The default ``min_jaccard=0`` returns every band candidate with its estimate: a
        cut at the LSH threshold itself drops about half of the pairs whose true Jaccard
        is exactly at it (the estimate's standard deviation is ~0.035 at J=0.8 with 128
        permutations). ``max_per_bucket`` keeps only that many most recent items of each
        shared bucket, bounding the work per post inside a large copy-paste campaign.
        """
        return self._insert(sigs, ts, ids, query=True, min_jaccard=min_jaccard, limit=max_per_bucket)

    def _insert(
        self,
        sigs: Signatures | np.ndarray,
        ts: np.ndarray,
        ids: np.ndarray | None,
        *,
        query: bool,
        min_jaccard: float = 0.0,
        limit: int | None = None,
    ) -> Candidates:
        sigs = self._checked(sigs)
        n = sigs.shape[0]
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        ids = np.arange(self._next, self._next + n) if ids is None else np.asarray(ids, dtype=np.int64)
        if ts.shape != (n,) or ids.shape != (n,):
            raise ValueError(f"{n} signatures need {n} timestamps and ids, got {ts.size} and {ids.size}")
        if limit is not None and limit < 1:
            raise ValueError(f"max_per_bucket must be >= 1, got {limit}")
        first = self._next
        # Room for the live items and the whole batch: slots stay distinct for the batch,
        # so candidates that expire during it can still be compared afterwards.
        self._reserve(len(self) + n)
        keys = self._store(sigs, ts, ids)
        cap = self._ts.size
        tables, live = self._tables, self._live
        pair_new: list[int] = []
        pair_old: list[int] = []
        for i, (t, item_keys) in enumerate(zip(ts.tolist(), keys.tolist())):
            if t > self._newest:
                self._newest = t
                self._expire_before(t - self.window_s)
            seq = first + i
            found: set[int] = set()
            for table, key in zip(tables, item_keys):
                bucket = table.get(key)
                if bucket is None:
                    table[key] = [seq]
                    continue
                if query:
                    found.update(bucket if limit is None else bucket[-limit:])
                bucket.append(seq)
            live.append((t, item_keys))
            if found:
                pair_new.extend([i] * len(found))
                pair_old.extend(found)
        if not pair_new:
            return []
        new = np.array(pair_new, dtype=np.int64)
        old = np.array(pair_old, dtype=np.int64)
        order = np.lexsort((old, new))
        new, old = new[order], old[order]
        est = self._estimate(sigs, new, old % cap)
        keep = est >= min_jaccard
        new, old, est = new[keep], old[keep], est[keep]
        items, starts = np.unique(new, return_index=True)
        bounds = np.append(starts, new.size)
        cand_ids = self._ids[old % cap]
        return [
            (int(i), cand_ids[lo:hi], est[lo:hi])
            for i, lo, hi in zip(items.tolist(), bounds[:-1].tolist(), bounds[1:].tolist())
        ]

    def _estimate(self, sigs: np.ndarray, new: np.ndarray, old_slots: np.ndarray) -> np.ndarray:
        """Estimated Jaccard of each pair (batch row, ring slot), in bounded blocks."""
        est = np.empty(new.size, dtype=np.float64)
        step = max(1, _PAIR_BLOCK_BYTES // (2 * self.num_perm * self._dtype.itemsize))
        for lo in range(0, new.size, step):
            eq = sigs[new[lo : lo + step]] == self._sigs[old_slots[lo : lo + step]]
            est[lo : lo + step] = np.count_nonzero(eq, axis=1) / self.num_perm
        return est

    def _checked(self, sigs: Signatures | np.ndarray) -> np.ndarray:
        if isinstance(sigs, Signatures):
            mine = {"num_perm": self.num_perm, "seed": self.seed, "scheme": self.scheme}
            theirs = sigs.params()
            diffs = [f"{k}: {v!r} vs {theirs[k]!r}" for k, v in mine.items() if theirs[k] != v]
            if diffs:
                raise IncompatibleSketchError(
                    f"cannot index signatures with different parameters ({'; '.join(diffs)})"
                )
            return sigs.values
        sigs = np.asarray(sigs)
        if sigs.ndim != 2 or sigs.shape[1] != self.num_perm or sigs.dtype != self._dtype:
            raise IncompatibleSketchError(
                f"signatures must be (n, {self.num_perm}) {self._dtype} for scheme {self.scheme!r}, "
                f"got {sigs.dtype} array of shape {sigs.shape}"
            )
        return sigs

    def _reserve(self, needed: int) -> None:
        """Grow the ring buffers (doubling) to hold ``needed`` items; slots move with it."""
        cap = self._ts.size
        if needed <= cap:
            return
        new_cap = cap
        while new_cap < needed:
            new_cap *= 2
        seqs = np.arange(self._head, self._next)
        old, new = seqs % cap, seqs % new_cap
        for name in ("_sigs", "_ts", "_ids"):
            arr = getattr(self, name)
            grown = np.empty((new_cap,) + arr.shape[1:], dtype=arr.dtype)
            grown[new] = arr[old]
            setattr(self, name, grown)

    def _store(self, sigs: np.ndarray, ts: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Write items into the ring after the live ones (advancing ``next``); their band keys."""
        slots = np.arange(self._next, self._next + ts.size) % self._ts.size
        self._sigs[slots], self._ts[slots], self._ids[slots] = sigs, ts, ids
        self._next += ts.size
        return band_keys(sigs, self.bands, self.rows)
