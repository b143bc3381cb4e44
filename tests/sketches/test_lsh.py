"""Windowed LSH: recall against exact Jaccard, candidates against brute-force banding,
expiry in insertion order, bounded memory, bytes round trip, merge, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from sketches.errors import IncompatibleSketchError
from sketches.lsh import BandIndex, WindowedLSH, band_keys, choose_bands
from sketches.minhash import Signatures, minhasher


def pairs_with_known_jaccard(
    rng: np.random.Generator, n_pairs: int, size: int = 60
) -> tuple[Signatures, np.ndarray]:
    """Documents (2p, 2p+1) share k of their ``size`` elements: J = k / (2 size - k), 0.5..1."""
    target = rng.uniform(0.5, 1.0, n_pairs)
    shared = np.round(2 * size * target / (1 + target)).astype(int)
    docs: list[np.ndarray] = []
    for k in shared:
        a = rng.integers(0, 2**64 - 1, size, dtype=np.uint64)
        docs += [a, np.concatenate([a[:k], rng.integers(0, 2**64 - 1, size - k, dtype=np.uint64)])]
    offsets = np.arange(0, (2 * n_pairs + 1) * size, size)
    return minhasher(128, 1).signatures(np.concatenate(docs), offsets), shared / (2 * size - shared)


def candidate_pairs(lsh: WindowedLSH, sigs: Signatures, **kw: object) -> dict[tuple[int, int], float]:
    found = {}
    for i, ids, est in lsh.insert_and_query(sigs, np.zeros(len(sigs)), **kw):  # type: ignore[arg-type]
        for j, e in zip(ids.tolist(), est.tolist()):
            found[j, i] = e
    return found


def test_default_bands_favour_recall_at_08():
    bands, rows = choose_bands(0.8, 128)
    assert (bands, rows) == (16, 8)
    even_bands, even_rows = choose_bands(0.8, 128, 0.5, 0.5)  # datasketch's default weights
    assert 1 - (1 - 0.8**even_rows) ** even_bands < 0.5 < 1 - (1 - 0.8**rows) ** bands
    js = np.linspace(0.8, 1.0, 201)
    assert (1 - (1 - js**rows) ** bands).mean() > 0.98  # expected recall of J >= 0.8
    assert 1 - (1 - 0.8**rows) ** bands > 0.94  # even at exactly 0.8


def test_recall_against_exact_jaccard():
    sigs, true_j = pairs_with_known_jaccard(np.random.default_rng(0), 1500)
    found = candidate_pairs(WindowedLSH(3600), sigs)
    similar = true_j >= 0.8
    hit = np.array([(2 * p, 2 * p + 1) in found for p in range(true_j.size)])
    estimate_hit = np.array([found.get((2 * p, 2 * p + 1), 0.0) >= 0.8 for p in range(true_j.size)])
    true_positives = sum(1 for (a, b) in found if b == a + 1 and a % 2 == 0 and true_j[a // 2] >= 0.8)
    recall = hit[similar].mean()
    print(
        f"16x8 recall of J>=0.8 pairs: {recall:.3f} (after estimate >= 0.8: {estimate_hit[similar].mean():.3f});"
        f" precision of candidates: {true_positives / len(found):.3f} of {len(found)};"
        f" pairs with J in [0.5, 0.6) found: {hit[true_j < 0.6].mean():.3f}"
    )
    assert recall >= 0.95
    assert hit[true_j < 0.6].mean() < 0.2
    old = candidate_pairs(WindowedLSH(3600, bands=9, rows=13), sigs)
    assert np.mean([(2 * p, 2 * p + 1) in old for p in np.flatnonzero(similar)]) < 0.9


def test_candidates_are_exactly_the_items_sharing_a_band_with_their_estimates():
    rng = np.random.default_rng(1)
    sigs, _ = pairs_with_known_jaccard(rng, 60, size=20)
    lsh = WindowedLSH(3600, num_perm=128, bands=20, rows=4)
    keys = band_keys(sigs.values, 20, 4)
    ids = rng.integers(0, 2**40, len(sigs))
    results = {}
    for lo in range(0, len(sigs), 37):  # several batches
        batch = slice(lo, lo + 37)
        for i, cands, est in lsh.insert_and_query(sigs.values[batch], np.zeros(37)[: len(ids[batch])], ids[batch]):
            results[lo + i] = (cands, est)
    for i in range(len(sigs)):
        earlier = np.flatnonzero((keys[:i] == keys[i]).any(axis=1))
        cands, est = results.get(i, (np.empty(0, dtype=np.int64), np.empty(0)))
        assert np.array_equal(cands, ids[earlier])
        assert np.array_equal(est, sigs.jaccard_many(np.full(earlier.size, i), earlier))


def test_min_jaccard_and_max_per_bucket():
    same = np.repeat(minhasher().signatures(np.arange(30, dtype=np.uint64), np.array([0, 30])).values, 6, axis=0)
    other = np.random.default_rng(2).integers(0, 2**32, (1, 128)).astype(np.uint32)
    sigs = np.concatenate([same, other])
    assert [len(c) for _, c, _ in WindowedLSH(60).insert_and_query(sigs, np.zeros(7))] == [1, 2, 3, 4, 5]
    limited = WindowedLSH(60).insert_and_query(sigs, np.zeros(7), max_per_bucket=2)
    assert [c.tolist() for _, c, _ in limited][-1] == [3, 4]  # the most recent two
    lsh = WindowedLSH(60)
    lsh.insert_and_query(sigs[:6], np.zeros(6))
    near = sigs[:1].copy()
    near[0, :40] += 1  # estimated Jaccard 88/128 with the six copies
    [(_, cands, est)] = lsh.insert_and_query(near, [1.0])
    assert len(cands) == 6 and np.allclose(est, 88 / 128)
    [(_, cands, est)] = lsh.insert_and_query(near, [1.0], min_jaccard=0.8)
    assert cands.tolist() == [6] and est.tolist() == [1.0]  # only the first near copy passes


def test_expiry_follows_event_time_in_insertion_order():
    sig = minhasher().signatures(np.arange(10, dtype=np.uint64), np.array([0, 10])).values
    lsh = WindowedLSH(10.0)
    # One batch spanning more than a window: each item sees only what is live at its time.
    res = lsh.insert_and_query(np.repeat(sig, 5, axis=0), [0.0, 4.0, 8.0, 12.0, 16.0])
    assert [c.tolist() for _, c, _ in res] == [[0], [0, 1], [1, 2], [2, 3]]
    assert len(lsh) == 3  # ts 8, 12, 16 (8 >= 16 - 10)
    # A late item (ts 3) stays behind the items inserted before it.
    lsh.insert_and_query(sig, [3.0])
    assert len(lsh) == 4
    lsh.expire(20.0)  # cutoff 10: items 8 and then the late 3 leave, 12 stays
    assert len(lsh) == 3
    [(_, cands, _)] = lsh.insert_and_query(sig, [20.5])
    assert cands.tolist() == [3, 4, 5]
    lsh.expire(100.0)
    assert len(lsh) == 0 and not lsh._index.entries().key.size  # no live band entry left


def test_memory_does_not_grow_with_stream_length():
    rng = np.random.default_rng(3)
    per_window, window_s = 400, 100.0
    lsh = WindowedLSH(window_s, num_perm=64)
    sizes = []
    for w in range(20):
        sigs = rng.integers(0, 2**32, (per_window, 64)).astype(np.uint32)
        sigs[::4] = sigs[0]  # a campaign: a quarter of each window identical
        ts = w * window_s + np.sort(rng.uniform(0, window_s, per_window))
        for lo in range(0, per_window, 100):
            lsh.insert_and_query(sigs[lo : lo + 100], ts[lo : lo + 100], max_per_bucket=20)
        assert len(lsh) <= 2 * per_window
        sizes.append(lsh.nbytes)
    assert max(sizes[5:]) <= 1.3 * sizes[2]
    assert lsh._ts.size <= 2048


def test_bytes_round_trip_restores_state_and_behaviour():
    rng = np.random.default_rng(4)
    sigs, _ = pairs_with_known_jaccard(rng, 700, size=30)
    ts = np.arange(len(sigs), dtype=np.float64)
    lsh = WindowedLSH(300.0)
    lsh.insert_and_query(sigs.values[:1000], ts[:1000], ts[:1000].astype(np.int64) * 7)  # wraps the ring
    back = WindowedLSH.from_bytes(lsh.to_bytes())
    assert back == lsh and len(back) == len(lsh) == 301
    assert back.params() == lsh.params()
    live = [i.entries() for i in (back._index, lsh._index)]
    assert all(np.array_equal(a, b) for a, b in zip(*live))  # band index rebuilt from the signatures
    for a, b in zip(lsh.insert_and_query(sigs.values[1000:], ts[1000:]), back.insert_and_query(sigs.values[1000:], ts[1000:])):
        assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert back == lsh


def test_merge_unites_live_items_in_event_time_order():
    sig = minhasher().signatures(np.arange(10, dtype=np.uint64), np.array([0, 10])).values
    a, b = WindowedLSH(10.0), WindowedLSH(10.0)
    a.update(np.repeat(sig, 2, axis=0), [1.0, 5.0], [100, 101])
    b.update(np.repeat(sig, 2, axis=0), [3.0, 12.0], [200, 201])
    a.merge(b)
    assert len(a) == 3  # ts 1 fell out of the window ending at 12
    [(_, cands, _)] = a.insert_and_query(sig, [12.0], [300])
    assert cands.tolist() == [200, 101, 201]


def test_parameter_and_input_checks_name_both_values():
    with pytest.raises(IncompatibleSketchError, match=r"window_s: 60.0 vs 30.0"):
        WindowedLSH(60).merge(WindowedLSH(30))
    other_seed = minhasher(128, 2).signatures(np.arange(5, dtype=np.uint64), np.array([0, 5]))
    with pytest.raises(IncompatibleSketchError, match=r"seed: 1 vs 2"):
        WindowedLSH(60).insert_and_query(other_seed, [0.0])
    with pytest.raises(IncompatibleSketchError, match="uint32"):
        WindowedLSH(60).insert_and_query(np.zeros((1, 128), dtype=np.uint64), [0.0])
    with pytest.raises(ValueError, match="timestamps"):
        WindowedLSH(60).insert_and_query(np.zeros((2, 128), dtype=np.uint32), [0.0])
    with pytest.raises(ValueError, match="num_perm"):
        WindowedLSH(60, num_perm=64, bands=16, rows=8)
    with pytest.raises(ValueError, match="both"):
        WindowedLSH(60, bands=16)


def reference_candidates(
    keys: np.ndarray, ts: np.ndarray, window_s: float, limit: int | None
) -> tuple[list[set[int]], list[int]]:
    """Plain-Python band dicts (the definition BandIndex computes a batch at a time): buckets
    of live items in insertion order; an item advancing the clock first expires, in
    insertion order, the oldest items while their ts < clock - window_s."""
    tables: list[dict[int, list[int]]] = [{} for _ in range(keys.shape[1])]
    live: list[int] = []
    head, newest, out, heads = 0, -np.inf, [], []
    for i, (t, row) in enumerate(zip(ts.tolist(), keys.tolist())):
        if t > newest:
            newest = t
            while head < len(live) and ts[live[head]] < t - window_s:
                for table, key in zip(tables, keys[live[head]].tolist()):
                    table[key].remove(live[head])
                head += 1
        found: set[int] = set()
        for table, key in zip(tables, row):
            bucket = table.setdefault(key, [])
            found.update(bucket if limit is None else bucket[-limit:])
            bucket.append(i)
        live.append(i)
        out.append(found)
        heads.append(head)
    return out, heads


@pytest.mark.parametrize(("limit", "window_s"), [(None, 25.0), (1, 25.0), (3, 25.0), (3, 400.0)])
def test_band_index_matches_plain_band_dicts_in_any_batching(limit: int | None, window_s: float):
    rng = np.random.default_rng(7)
    n, bands = 3000, 4
    # A small key space (crowded buckets), spread over 64 bits; pairs of keys that differ
    # only in their lowest bit share their top half (the index sorts by it first).
    keys = rng.integers(0, 12, (n, bands)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys ^= rng.integers(0, 2, (n, bands)).astype(np.uint64)
    ts = np.cumsum(rng.exponential(1.0, n))
    late = rng.random(n) < 0.1
    ts[late] -= rng.uniform(0, 40, late.sum())  # late and too-old items
    expected, expected_heads = reference_candidates(keys, ts, window_s, limit)
    for batch in (1, 17, 500, n):  # its two sorted levels, small batches and big ones
        index = BandIndex(window_s, bands)
        got: list[set[int]] = [set() for _ in range(n)]
        heads: list[int] = []
        for lo in range(0, n, batch):
            new, old, at = index.insert(keys[lo : lo + batch], ts[lo : lo + batch], limit)
            for i, j in zip(new.tolist(), old.tolist()):
                got[lo + i].add(j)
            heads += at.tolist()
        assert got == expected, batch
        assert heads == expected_heads, batch
        entries = sum(run.key.size for run, _ in index._runs)
        assert entries <= 2 * bands * len(index) + 4096 + bands * batch
        assert index._entries == entries and index._count.sum() == entries
