"""The vectorised pairer equals a plain per-action LRU model, and the object load a plain
count, whatever the batching."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.co_objects import ObjectLoad
from detectors.pairing import Pairer

WINDOW, LATE = 10.0, 5.0


def model(actions: list[tuple[int, int, float]], fanout: int) -> set[tuple[int, int]]:
    """Per object a list of (position, participant, ts): with fan-out the latest action of the
    ``fanout`` most recent participants (an LRU), else every action; (new, earlier) positions."""
    bufs: dict[int, list[tuple[int, int, float]]] = {}
    out = set()
    for pos, (obj, part, ts) in enumerate(actions):
        buf = bufs.setdefault(obj, [])
        for r, p, t in buf:
            if p != part and abs(ts - t) <= WINDOW:
                out.add((pos, r))
        if fanout:
            buf[:] = [x for x in buf if x[1] != part]
        buf.append((pos, part, ts))
        if fanout and len(buf) > fanout:
            del buf[0]
    return out


def stream(draw: st.DrawFn) -> list[tuple[int, int, float]]:
    n = draw(st.integers(1, 120))
    out, wm = [], 0.0
    for _ in range(n):
        wm += draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 12.0]))
        late = draw(st.sampled_from([0.0, 0.0, 0.0, 2.0, LATE]))  # never later than the lateness
        out.append((draw(st.integers(0, 3)), draw(st.integers(0, 5)), wm - late))
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[int, int, float]], int, list[int]]:
    acts = stream(draw)
    cuts = sorted(draw(st.lists(st.integers(0, len(acts)), max_size=6)))
    return acts, draw(st.sampled_from([0, 1, 2, 3])), cuts


@settings(max_examples=300, deadline=None)
@given(cases())
def test_pairs_equal_the_lru_model_in_any_batching(case: tuple[list[tuple[int, int, float]], int, list[int]]):
    acts, fanout, cuts = case
    pairer = Pairer(WINDOW, WINDOW + LATE, fanout)
    got: set[tuple[int, int]] = set()
    wm = -np.inf
    for lo, hi in zip([0, *cuts], [*cuts, len(acts)]):
        batch = acts[lo:hi]
        if not batch:
            continue
        obj = np.array([a[0] for a in batch], dtype=np.uint64)
        part = np.array([a[1] for a in batch], dtype=np.int64)
        ts = np.array([a[2] for a in batch])
        wm = max(wm, ts.max())
        pairs = pairer.pair(obj, part, ts, np.arange(lo, hi, dtype=np.int64), wm)
        news = (pairs.new + lo).tolist()
        assert news == sorted(news), "pairs come in position order"
        for i, r, p, t in zip(news, pairs.ref.tolist(), pairs.part.tolist(), pairs.ts.tolist()):
            assert (p, t) == (acts[r][1], acts[r][2])
            got.add((i, r))
    assert got == model(acts, fanout)


def test_tail_stays_bounded_by_fanout_and_expires():
    pairer = Pairer(WINDOW, WINDOW + LATE, 3)
    n = 1000
    ts = np.arange(n, dtype=np.float64) / 10
    pairer.pair(np.zeros(n, dtype=np.uint64), np.arange(n, dtype=np.int64), ts, np.arange(n, dtype=np.int64), ts[-1])
    assert len(pairer) == 3
    pairer.pair(np.ones(1, dtype=np.uint64), np.zeros(1, dtype=np.int64), np.array([1000.0]), np.array([n]), 1000.0)
    assert pairer.ref.tolist() == [n]  # object 0 is older than keep_s: gone


def load_model(actions: list[tuple[int, float]], pane_s: float, panes: int) -> list[int]:
    """Each action's count of earlier actions on its object whose pane (``floor(wm / pane_s)``)
    is one of the last ``panes``, its own included."""
    out = []
    for i, (obj, wm) in enumerate(actions):
        pane = math.floor(wm / pane_s)
        out.append(sum(1 for o, w in actions[:i] if o == obj and math.floor(w / pane_s) > pane - panes))
    return out


@st.composite
def load_cases(draw: st.DrawFn) -> tuple[list[tuple[int, float]], list[int]]:
    n = draw(st.integers(1, 150))
    acts, wm = [], 0.0
    for _ in range(n):
        wm += draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 4.0, 13.0]))  # watermarks never go back
        acts.append((draw(st.integers(0, 4)), wm))
    return acts, sorted(draw(st.lists(st.integers(0, n), max_size=6)))


@settings(max_examples=300, deadline=None)
@given(load_cases(), st.booleans())
def test_object_load_counts_equal_a_plain_count_in_any_batching(case, restore: bool):
    acts, cuts = case
    span = 6 * 2.0  # panes of 2 s
    load, got = ObjectLoad(span), []
    for lo, hi in zip([0, *cuts], [*cuts, len(acts)]):
        if lo < hi:
            obj = np.array([a[0] for a in acts[lo:hi]], dtype=np.uint64)
            got += load.counts(obj, np.array([a[1] for a in acts[lo:hi]])).tolist()
            if restore:  # the state round trip in between changes nothing
                load, state = ObjectLoad(span), load.state()
                load.load(state)
    assert got == load_model(acts, 2.0, ObjectLoad.PANES)
