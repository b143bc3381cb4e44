"""Count-min and sliding count-min: upper bounds, the epsilon*N bound, merge, bytes, panes,
determinism across processes."""

from __future__ import annotations

from collections import Counter
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import outputs_under_two_hash_seeds
from sketches.countmin import CountMinSketch, SlidingCountMin
from sketches.errors import SketchParamError
from sketches.errors import CoordwatchError, IncompatibleSketchError, SketchFormatError
from sketches.hashing import hash_u64
from sketches.protocol import Sketch



def keys_of(ids: list[int] | np.ndarray) -> np.ndarray:
    return hash_u64(np.asarray(ids, dtype=np.uint64), seed=3)


# -- plain count-min ---------------------------------------------------------------------
batches_st = st.lists(st.lists(st.integers(0, 40), max_size=60), max_size=5)


@settings(max_examples=80, deadline=None)
@given(batches=batches_st, weighted=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_never_undercounts_plain_or_conservative(batches, weighted, seed):
    # width 8, depth 2 over 41 keys: collisions in every row are the normal case
    plain = CountMinSketch(0.5, 0.2, seed=seed)
    cons = CountMinSketch(0.5, 0.2, seed=seed, conservative=True)
    truth: Counter[int] = Counter()
    for b in batches:
        counts = np.arange(len(b), dtype=np.int64) % 3 if weighted else None  # zeros too
        for i, k in enumerate(b):
            truth[k] += 1 if counts is None else int(counts[i])
        plain.update(keys_of(b), counts)
        cons.update(keys_of(b), counts)
    ids = np.arange(41)
    true = np.array([truth[int(i)] for i in ids], dtype=np.uint64)
    p, c = plain.query(keys_of(ids)), cons.query(keys_of(ids))
    assert np.all(p >= true) and np.all(c >= true)
    assert np.all(c <= p)  # conservative cells never exceed plain ones
    assert plain.total == cons.total == sum(truth.values())


@pytest.mark.parametrize("conservative", [False, True])
def test_overcount_within_epsilon_n_for_all_but_delta_of_keys(conservative):
    eps, delta = 0.006, 0.02  # width 512, depth 4
    rng = np.random.default_rng(5)
    ids = rng.zipf(1.3, 100_000)
    sk = CountMinSketch(eps, delta, seed=11, conservative=conservative)
    for chunk in np.array_split(ids, 7):
        sk.update(keys_of(chunk))
    distinct, true = np.unique(ids, return_counts=True)
    unseen = np.arange(2000) + ids.max() + 1
    q = np.concatenate([distinct, unseen])
    t = np.concatenate([true, np.zeros(unseen.size, dtype=np.int64)])
    over = sk.query(keys_of(q)).astype(np.int64) - t
    assert over.min() >= 0
    bad = np.mean(over > eps * sk.total)
    assert bad <= delta, f"{bad:.4f} of {q.size} keys over-counted by more than eps*N"
    # the error is real (so the bound is being exercised), mostly from the heavy keys
    assert over.max() > 0


def test_merge_equals_sketch_of_union():
    rng = np.random.default_rng(1)
    a_ids, b_ids = rng.zipf(1.2, 5000), rng.integers(0, 300, 4000)
    a, b, u = (CountMinSketch(0.01, 0.01, seed=9) for _ in range(3))
    a.update(keys_of(a_ids))
    b.update(keys_of(b_ids), counts=np.full(b_ids.size, 2))
    u.update(keys_of(a_ids))
    u.update(keys_of(b_ids), counts=np.full(b_ids.size, 2))
    a.merge(b)
    assert a == u and np.array_equal(a.table, u.table) and a.total == u.total


def test_conservative_merge_is_an_upper_bound_and_below_plain_union():
    rng = np.random.default_rng(2)
    a_ids, b_ids = rng.zipf(1.2, 3000), rng.zipf(1.5, 3000)
    ca, cb = CountMinSketch(0.05, 0.01, conservative=True), CountMinSketch(0.05, 0.01, conservative=True)
    plain = CountMinSketch(0.05, 0.01)
    ca.update(keys_of(a_ids))
    cb.update(keys_of(b_ids))
    plain.update(keys_of(np.concatenate([a_ids, b_ids])))
    ca.merge(cb)
    ids, true = np.unique(np.concatenate([a_ids, b_ids]), return_counts=True)
    est = ca.query(keys_of(ids))
    assert np.all(est >= true) and np.all(est <= plain.query(keys_of(ids)))


def test_bytes_round_trip_and_protocol():
    for sk in (CountMinSketch(0.01, 0.01), CountMinSketch(0.01, 0.01, conservative=True)):
        sk.update(keys_of(np.arange(1000) % 97))
        back = CountMinSketch.from_bytes(sk.to_bytes())
        assert back == sk and back.to_bytes() == sk.to_bytes() and back.total == sk.total
        back.update(keys_of([5]))  # a loaded sketch keeps working, independently
        sk.update(keys_of([5]))
        assert back == sk
        assert isinstance(sk, Sketch) and sk.copy() == sk and sk.copy() is not sk
        assert sk.nbytes >= sk.width * sk.depth * 8


def test_different_epsilon_or_seed_is_refused_with_both_values():
    a = CountMinSketch(0.01, 0.01, seed=1)
    with pytest.raises(IncompatibleSketchError, match=r"epsilon: 0\.01 vs 0\.001"):
        CountMinSketch.from_bytes(a.to_bytes(), expect=CountMinSketch(0.001, 0.01, seed=1).params())
    with pytest.raises(IncompatibleSketchError, match=r"seed: 1 vs 2"):
        a.merge(CountMinSketch(0.01, 0.01, seed=2))
    with pytest.raises(IncompatibleSketchError, match=r"conservative: False vs True"):
        a.merge(CountMinSketch(0.01, 0.01, seed=1, conservative=True))
    with pytest.raises(IncompatibleSketchError):
        a.merge(SlidingCountMin(1, 2, 0.01, 0.01, seed=1))  # type: ignore[arg-type]
    with pytest.raises(SketchFormatError):
        SlidingCountMin.from_bytes(a.to_bytes())


def test_bad_parameters_are_coordwatch_value_errors():
    for make in (
        lambda: CountMinSketch(0.0, 0.1),
        lambda: CountMinSketch(0.1, 1.0),
        lambda: SlidingCountMin(10, 25),
        lambda: SlidingCountMin(0, 10),
    ):
        with pytest.raises(SketchParamError) as info:
            make()
        assert isinstance(info.value, ValueError) and isinstance(info.value, CoordwatchError)
    with pytest.raises(SketchParamError):
        CountMinSketch().update(np.array([1.5]))
    with pytest.raises(SketchParamError):
        CountMinSketch().update(keys_of([1]), counts=[-1])
    with pytest.raises(SketchParamError):
        SlidingCountMin(1, 2).update(keys_of([1]), np.array([np.nan]))


# -- sliding count-min -------------------------------------------------------------------
def model(events: list[tuple[int, float]], n: int, pane_s: float, weights: list[int] | None = None):
    """Per-event reference: (per-pane counts of the window, dropped_late, newest pane).

    An event advances time even with weight 0 (its timestamp was seen)."""
    newest = None
    late = 0
    window: Counter[tuple[int, int]] = Counter()
    for i, (k, t) in enumerate(events):
        c = 1 if weights is None else weights[i]
        pid = int(np.floor(t / pane_s))
        newest = pid if newest is None else max(newest, pid)
        if pid <= newest - n:
            late += c
        else:
            window[(k, pid)] += c
    window = Counter({kp: c for kp, c in window.items() if newest is not None and kp[1] > newest - n})
    return +window, late, newest


events_st = st.lists(
    st.tuples(st.integers(0, 20), st.floats(0, 200, allow_nan=False)), max_size=80
)


@settings(max_examples=60, deadline=None)
@given(events=events_st, cuts=st.lists(st.integers(0, 80), max_size=4))
def test_sliding_matches_per_event_model_whatever_the_batching(events, cuts):
    n, pane_s = 3, 10.0
    sk = SlidingCountMin(pane_s, n * pane_s, 1e-4, 0.05, seed=4)  # wide: no collisions
    bounds = sorted({0, len(events), *[min(c, len(events)) for c in cuts]})
    for lo, hi in zip(bounds, bounds[1:]):
        chunk = events[lo:hi]
        sk.update(keys_of([k for k, _ in chunk]), np.array([t for _, t in chunk], dtype=np.float64))
    window, late, newest = model(events, n, pane_s)
    assert sk.dropped_late == late and sk.newest_pane == newest
    ids = np.arange(21)
    per = sk.query_panes(keys_of(ids))
    expected = np.zeros((21, n), dtype=np.uint64)
    if newest is not None:
        for (k, p), c in window.items():
            expected[k, p - (newest - n + 1)] = c
    assert np.array_equal(per, expected)
    assert np.array_equal(sk.query(keys_of(ids)), expected.sum(axis=1))
    assert np.array_equal(sk.pane_totals, expected.sum(axis=0))
    assert sk.window_total == sum(window.values())


@settings(max_examples=40, deadline=None)
@given(events=events_st, seed=st.integers(0, 2**64 - 1), weighted=st.booleans())
def test_sliding_never_undercounts_with_collisions(events, seed, weighted):
    n, pane_s = 3, 10.0
    w = [i % 3 if weighted else 1 for i in range(len(events))]  # weights include zeros
    window, late, _ = model(events, n, pane_s, w)
    ids = np.arange(21)
    truth = np.array([sum(c for (k, _), c in window.items() if k == i) for i in ids])
    for conservative in (False, True):
        sk = SlidingCountMin(pane_s, n * pane_s, 0.5, 0.2, seed=seed, conservative=conservative)
        ts = np.array([t for _, t in events], dtype=np.float64)
        sk.update(keys_of([k for k, _ in events]), ts, counts=np.array(w, dtype=np.int64))
        assert np.all(sk.query(keys_of(ids)) >= truth)
        assert sk.window_total == sum(window.values()) and sk.dropped_late == late


def test_old_keys_expire_and_memory_does_not_grow():
    sk = SlidingCountMin(10, 30, 0.001, 0.01)  # 4096 x 5: 20 live keys cannot cover a key
    old = keys_of([10**9, 10**9 + 1])
    sk.update(old, np.array([0.0, 5.0]))
    assert np.all(sk.query(old) >= 1)
    rng = np.random.default_rng(3)
    sizes = set()
    for i in range(300):  # 3000 s of stream, 100x the window
        ts = 10.0 * i + rng.uniform(0, 10, 500)
        sk.update(keys_of(rng.integers(0, 20, 500)), ts)
        if i % 50 == 0:
            sizes.add((sk.nbytes, len(sk.to_bytes())))
    assert len(sizes) == 1
    assert np.all(sk.query(old) == 0) and not sk.query_panes(old).any()
    assert sk.window_total == 1500 and np.array_equal(sk.pane_totals, [500, 500, 500])
    assert sk.dropped_late == 0
    # the running window sum is exactly the sum of the live panes (expiry subtracts exactly)
    panes, window_sum, _, _ = sk._arrays()
    assert np.array_equal(window_sum, panes.sum(axis=0, dtype=np.uint64))
    assert sk.nbytes == SlidingCountMin(10, 30, 0.001, 0.01).nbytes


def test_window_boundary_is_inclusive_at_oldest_pane_start():
    sk = SlidingCountMin(10, 60, 0.01, 0.01)  # 6 panes
    a, b, c = keys_of([1]), keys_of([2]), keys_of([3])
    sk.update(a, np.array([0.0]))  # pane 0
    sk.update(b, np.array([59.999]))  # pane 5: window is [0, 60), a still in
    assert sk.query(a)[0] == 1 and sk.newest_pane == 5
    sk.update(c, np.array([60.0]))  # exactly window_s after a: pane 6 starts, pane 0 leaves
    assert sk.query(a)[0] == 0 and sk.query(b)[0] == 1 and sk.query(c)[0] == 1
    sk.update(a, np.array([10.0]))  # exactly the new window's start: counted
    sk.update(a, np.array([9.999]))  # just before it: late
    assert sk.query(a)[0] == 1 and sk.dropped_late == 1
    assert sk.query_panes(a)[0].tolist() == [1, 0, 0, 0, 0, 0]


def test_out_of_order_within_window_and_late_events():
    sk = SlidingCountMin(10, 60, 0.01, 0.01)
    k = keys_of([7])
    sk.update(np.repeat(k, 5), np.array([55.0, 12.0, 30.0, 5.0, 31.0]))
    assert sk.query_panes(k)[0].tolist() == [1, 1, 0, 2, 0, 1]
    sk.update(np.repeat(k, 4), np.array([100.0, 3.0, 52.0, 49.9]), counts=[1, 4, 2, 8])
    # newest is pane 10 -> window panes 5..10: 52.0 (pane 5) counts, 3.0 and 49.9 are late
    assert sk.dropped_late == 12
    assert sk.query_panes(k)[0].tolist() == [3, 0, 0, 0, 0, 1]
    assert sk.query(k)[0] == 4 and sk.window_total == 4


def test_batch_longer_than_window_expires_rather_than_drops():
    sk = SlidingCountMin(10, 30, 0.01, 0.01)
    ts = np.arange(0.0, 100.0, 1.0)  # in order, spanning 10 panes
    sk.update(keys_of(np.arange(100)), ts)
    assert sk.dropped_late == 0 and sk.window_total == 30 and sk.newest_pane == 9


def test_advance_expires_without_events():
    sk = SlidingCountMin(10, 30, 0.01, 0.01)
    k = keys_of([1, 2])
    sk.update(k, np.array([0.0, 15.0]))
    sk.advance(25.0)  # window panes 0..2: nothing expires
    assert sk.window_total == 2
    sk.advance(30.0)  # pane 3: pane 0 leaves
    assert sk.query(k).tolist() == [0, 1] and sk.window_total == 1
    sk.advance(5.0)  # time never goes back
    assert sk.newest_pane == 3
    sk.advance(1000.0)
    assert sk.window_total == 0 and not sk._sum.any() and not sk._panes.any()


def _sliding_stream(seed: int, t0: float, t1: float, n: int):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(t0, t1, n))
    return keys_of(rng.integers(0, 200, n)), ts


@pytest.mark.parametrize("conservative", [False, True])
def test_sliding_merge_aligns_panes_by_absolute_id(conservative):
    ka, ta = _sliding_stream(1, 0, 60, 2000)  # worker A: panes 0..5
    kb, tb = _sliding_stream(2, 30, 95, 2000)  # worker B: panes 3..9
    a, b, u = (SlidingCountMin(10, 40, 0.01, 0.01, conservative=conservative) for _ in range(3))
    a.update(ka, ta)
    b.update(kb, tb)
    a.merge(b)
    order = np.argsort(np.concatenate([ta, tb]), kind="stable")
    u.update(np.concatenate([ka, kb])[order], np.concatenate([ta, tb])[order])
    assert a.newest_pane == u.newest_pane == 9 and a.dropped_late == u.dropped_late == 0
    assert np.array_equal(a.pane_totals, u.pane_totals) and a.window_total == u.window_total
    if not conservative:
        assert a == u
        return
    # conservative: an upper bound of the window's counts, below the plain sketch of the union
    live = np.concatenate([ta, tb]) >= 60.0  # window panes 6..9
    truth = Counter(np.concatenate([ka, kb])[live].tolist())
    q = np.array(sorted(truth), dtype=np.uint64)
    plain = SlidingCountMin(10, 40, 0.01, 0.01)
    plain.update(np.concatenate([ka, kb])[order], np.concatenate([ta, tb])[order])
    est = a.query(q)
    assert np.all(est >= np.array([truth[k] for k in q.tolist()])) and np.all(est <= plain.query(q))


def test_sliding_bytes_round_trip_and_incompatible_params():
    sk = SlidingCountMin(10, 30, 0.01, 0.01, seed=5)
    k, t = _sliding_stream(4, 0, 50, 500)
    sk.update(k, t)
    sk.update(keys_of([1]), np.array([0.0]))  # one late event, kept in the state
    back = SlidingCountMin.from_bytes(sk.to_bytes())
    assert back == sk and back.dropped_late == 1 and back.to_bytes() == sk.to_bytes()
    assert isinstance(sk, Sketch) and sk.copy() == sk
    with pytest.raises(IncompatibleSketchError, match=r"pane_s: 10\.0 vs 5\.0"):
        sk.merge(SlidingCountMin(5, 30, 0.01, 0.01, seed=5))
    with pytest.raises(IncompatibleSketchError, match=r"epsilon: 0\.01 vs 0\.02"):
        SlidingCountMin.from_bytes(
            sk.to_bytes(), expect=SlidingCountMin(10, 30, 0.02, 0.01, seed=5).params()
        )


# -- determinism ---------------------------------------------------------------------------
_BUILD = """
import hashlib, numpy as np
from sketches.countmin import CountMinSketch, SlidingCountMin
from sketches.hashing import hash_u64
rng = np.random.default_rng(123)
keys = hash_u64(rng.zipf(1.2, 20000).astype(np.uint64))
ts = np.sort(rng.uniform(0, 100, 20000))
out = hashlib.sha256()
for sk in (CountMinSketch(0.01, 0.01), CountMinSketch(0.01, 0.01, conservative=True)):
    sk.update(keys)
    out.update(sk.to_bytes())
for cons in (False, True):
    sk = SlidingCountMin(10, 30, 0.01, 0.01, conservative=cons)
    sk.update(keys, ts)
    out.update(sk.to_bytes())
print(out.hexdigest())
"""


def test_same_input_gives_identical_bytes_in_separate_processes():
    outs = outputs_under_two_hash_seeds(_BUILD)
    buf = StringIO()
    with redirect_stdout(buf):
        exec(_BUILD, {})
    assert len(outs[0]) == 64 and outs[0] == outs[1] == buf.getvalue().strip()


def test_sliding_conservative_panes_equal_a_conservative_sketch_per_pane():
    """Each pane of the sliding sketch is cell for cell the conservative count-min of that
    pane's batches (one update per pane and batch, as burst detection does)."""
    rng = np.random.default_rng(21)
    sk = SlidingCountMin(10, 40, 0.05, 0.05, seed=9, conservative=True)  # width 64: many collisions
    per_pane = {p: CountMinSketch(0.05, 0.05, seed=9, conservative=True) for p in range(4)}
    for p in range(4):
        for _ in range(3):
            ids = rng.integers(0, 300, 200)
            keys = keys_of(np.unique(ids)) if p % 2 else keys_of(ids)  # distinct+sorted hashes or not
            counts = rng.integers(1, 4, keys.size)
            sk.update(keys, np.full(keys.size, 10.0 * p + 5), counts)
            per_pane[p].update(keys, counts)
    panes, window_sum, _, _ = sk._arrays()
    for p in range(4):
        assert np.array_equal(panes[p % 4], per_pane[p].table.astype(np.uint32))
    assert np.array_equal(window_sum, sum(per_pane[p].table for p in range(4)))


def test_window_sum_is_rebuilt_after_every_change():
    """query() (the window sum) always equals the sum of the per-pane estimates, through
    updates, expiry, advance, merge and a bytes round trip."""
    rng = np.random.default_rng(22)
    ids = keys_of(np.arange(50))

    def check(sk: SlidingCountMin) -> None:
        assert np.array_equal(sk.query(ids), sk.query_panes(ids).sum(axis=1))

    for conservative in (False, True):
        sk = SlidingCountMin(10, 30, 0.01, 0.01, seed=2, conservative=conservative)
        other = SlidingCountMin(10, 30, 0.01, 0.01, seed=2, conservative=conservative)
        for t in range(0, 120, 7):
            sk.update(ids[rng.integers(0, 50, 30)], np.full(30, float(t)))
            check(sk)
            other.update(ids[rng.integers(0, 50, 10)], np.full(10, float(t) + 3))
        sk.advance(125.0)
        check(sk)
        sk.merge(other)
        check(sk)
        check(SlidingCountMin.from_bytes(sk.to_bytes()))
        sk.advance(1000.0)
        assert not sk.query(ids).any()
