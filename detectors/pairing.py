"""Pairing actions on shared objects, a batch at a time (numpy; no Python work per action).

An *action* is (object, participant, ts, position): one account acting on one object,
``position`` its place in the event sequence (a global counter). A new action pairs with an
earlier one (lower position) on the same object by another participant when their times are
at most ``window_s`` apart, either way (late actions pair backwards exactly like on-time
ones). Time is continuous: there are no bins.

**Fan-out** (``fanout = k > 0``): an object keeps, like an LRU of size k, the latest action of
each of the k participants that acted on it most recently (by position); a new action pairs
only with those. So a viral object costs O(k) per action, and a ring, whose members act on
each of its objects within seconds of each other, still pairs member with member. With
``fanout = 0`` every earlier action in the window pairs, repeats of one participant
included (the peers' batch semantics).

**Vectorised LRU.** Sort the tail (what may still pair) and the batch by (object, position)
and step back d = 1, 2, ... positions from every new action at once. The action d back is in
the new action's LRU iff it is its participant's latest before the new one (the next action
of the same participant on the object comes later, or never) and at most k such latest
actions lie between them (counted while stepping). A row stops when its object's group ends,
its LRU is full, or the earlier action is more than ``keep_s = window_s + allowed lateness``
older: an action is never later than ``lateness`` behind the watermark, so nothing further
back can be within the window.

**Tail.** After a batch an object keeps its LRU entries (fan-out) or all its actions
(``fanout = 0``), minus the leading ones (lowest positions) older than ``watermark -
keep_s``: those can never pair again, and dropping the oldest entries changes no later
entry's LRU rank. That is exact whatever the batching; memory is O(k) per object active in
the last ``keep_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Pairs:
    """Pairs of one batch, ordered by (new position, partner position).

    ``new``: index of the new action in the batch; ``ref``, ``part``, ``ts``: the partner's
    position, participant and time (a batch or tail action)."""

    new: np.ndarray
    ref: np.ndarray
    part: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.new.size)


def _empty(dtype: type) -> np.ndarray:
    return np.empty(0, dtype=dtype)


class Pairer:
    """The per-object memory of recent actions, and the pairing of a batch against it."""

    def __init__(self, window_s: float, keep_s: float, fanout: int) -> None:
        self.window_s, self.keep_s, self.fanout = window_s, keep_s, fanout
        self.obj = _empty(np.uint64)
        self.part = _empty(np.int64)
        self.ts = _empty(np.float64)
        self.ref = _empty(np.int64)

    def __len__(self) -> int:
        return int(self.ref.size)

    def pair(
        self, obj: np.ndarray, part: np.ndarray, ts: np.ndarray, ref: np.ndarray, watermark: float,
        quiet: np.ndarray | None = None,
    ) -> Pairs:
        """Pair a batch of actions (in position order) with the tail and with each other;
        the tail then keeps what may pair after ``watermark``. ``quiet`` actions pair with
        nothing earlier (later actions may still pair with them)."""
        nt = self.ref.size
        O = np.concatenate((self.obj, obj))  # noqa: E741 - short names for the sorted columns
        P = np.concatenate((self.part, part))
        T = np.concatenate((self.ts, ts))
        R = np.concatenate((self.ref, ref))
        order = np.lexsort((R, O))
        O, P, T, R = O[order], P[order], T[order], R[order]
        n = O.size
        head = np.ones(n, dtype=bool)
        head[1:] = O[1:] != O[:-1]
        start = np.maximum.accumulate(np.where(head, np.arange(n), 0))  # first index of each row's object
        # the position of the same participant's next action on the same object
        by_part = np.lexsort((R, P, O))
        same = (O[by_part[1:]] == O[by_part[:-1]]) & (P[by_part[1:]] == P[by_part[:-1]])
        nxt = np.full(n, _NEVER, dtype=np.int64)
        nxt[by_part[:-1][same]] = R[by_part[1:][same]]

        new = order >= nt  # the new actions, in sorted index space
        if quiet is not None:
            new[new] = ~quiet[order[new] - nt]
        rows = np.flatnonzero(new)
        pairs = self._scan(rows, start, P, T, R, nxt)
        self._keep(O, P, T, R, nxt, head, watermark)
        new_sorted, j = pairs
        new = order[new_sorted] - nt
        by = np.lexsort((R[j], new))
        return Pairs(new[by], R[j][by], P[j][by], T[j][by])

    def _scan(
        self, rows: np.ndarray, start: np.ndarray, P: np.ndarray, T: np.ndarray, R: np.ndarray, nxt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step back from every new action at once; (new, partner) sorted indices of the pairs."""
        window, reach, k = self.window_s, self.keep_s, self.fanout
        me, lo, t, r, p = rows, start[rows], T[rows], R[rows], P[rows]
        held = np.zeros(rows.size, dtype=np.int64)  # LRU entries met so far
        found_i: list[np.ndarray] = []
        found_j: list[np.ndarray] = []
        d = 1
        while me.size:
            j = me - d
            go = j >= lo
            if not go.all():
                me, lo, t, r, p, held, j = me[go], lo[go], t[go], r[go], p[go], held[go], j[go]
            dt = t - T[j]
            if k:
                latest = nxt[j] >= r  # j is its participant's latest action before the new one
                held += latest
                hit = latest & (held <= k) & (nxt[j] != r) & (np.abs(dt) <= window)
                go = (held < k) & (dt <= reach)
            else:
                hit = (P[j] != p) & (np.abs(dt) <= window)
                go = dt <= reach
            if hit.any():
                found_i.append(me[hit])
                found_j.append(j[hit])
            if not go.all():
                me, lo, t, r, p, held = me[go], lo[go], t[go], r[go], p[go], held[go]
            d += 1
        if not found_i:
            return _empty(np.int64), _empty(np.int64)
        return np.concatenate(found_i), np.concatenate(found_j)

    def _keep(
        self, O: np.ndarray, P: np.ndarray, T: np.ndarray, R: np.ndarray, nxt: np.ndarray, head: np.ndarray,
        watermark: float,
    ) -> None:
        """The new tail: LRU entries (or every action), without each object's leading old ones."""
        keep = np.ones(O.size, dtype=bool)
        if self.fanout:
            keep = nxt == _NEVER  # the latest action of its participant on the object
            group = np.cumsum(head) - 1
            latest = keep.astype(np.int64)
            ends = np.flatnonzero(np.append(head[1:], True))  # last index of each object
            total = np.cumsum(latest)
            after = total[ends][group] - total  # LRU entries after this one
            keep &= after < self.fanout
        young = T >= watermark - self.keep_s
        # drop an object's leading kept entries while they are old: count young kept ones so far
        seen = np.cumsum(keep & young)
        base = np.concatenate(([0], seen))[np.maximum.accumulate(np.where(head, np.arange(O.size), 0))]
        keep &= (seen - base) > 0
        self.obj, self.part, self.ts, self.ref = O[keep], P[keep], T[keep], R[keep]

    # -- state -----------------------------------------------------------------------
    def arrays(self) -> list[np.ndarray]:
        return [self.obj, self.part, self.ts, self.ref]

    def load(self, arrays: list[np.ndarray]) -> None:
        self.obj, self.part, self.ts, self.ref = (
            a.astype(d) for a, d in zip(arrays, (np.uint64, np.int64, np.float64, np.int64))
        )
