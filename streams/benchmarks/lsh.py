"""Windowed LSH vs datasketch's MinHashLSH doing the same work, in the same run.

Both index a stream of posts (a fifth of them edited copies of campaign templates) with
a window holding ~2000 posts, 16 bands x 8 rows, and for each post: expire the posts that
left the window, query the candidates, estimate their Jaccard, insert. datasketch does
this per post (``remove``, ``query``, ``LeanMinHash.jaccard``, ``insert``); ours per batch
of 500 posts. The candidate sets are asserted equal; times are the best of 3 runs.

Memory is the tracemalloc-traced size held once the window is full (current traced bytes
after the run minus before it, garbage collected, divided by the live posts); for
datasketch it counts the index plus the LeanMinHash kept per live post (needed for the
Jaccard estimates that our index computes from its own signature store).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import deque
from collections.abc import Callable

import datasketch
import numpy as np

from sketches.lsh import WindowedLSH
from sketches.minhash import minhasher
from sketches.shingling import shingle_batch
from streams.benchmarks.common import Row, best_time
from streams.benchmarks.minhash import KIND, N, NUM_PERM, SEED, make_posts

BANDS, ROWS = 16, 8
PER_WINDOW = 2000
BATCH = 500


def _stream(n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    shingles = shingle_batch(make_posts(n_docs, seed=1), KIND, N)
    sigs = minhasher(NUM_PERM, SEED, "affine32").signatures(shingles.hashes, shingles.offsets).values
    return sigs, np.arange(n_docs, dtype=np.float64)  # one post per second


def ours(sigs: np.ndarray, ts: np.ndarray, found: list[set[int]] | None = None) -> WindowedLSH:
    """Index the stream with :class:`WindowedLSH`; record each post's candidates in ``found``."""
    lsh = WindowedLSH(PER_WINDOW, num_perm=NUM_PERM, bands=BANDS, rows=ROWS, seed=SEED)
    for lo in range(0, ts.size, BATCH):
        if found is not None:
            found.extend(set() for _ in range(min(BATCH, ts.size - lo)))
        for i, cands, _est in lsh.insert_and_query(sigs[lo : lo + BATCH], ts[lo : lo + BATCH]):
            if found is not None:
                found[lo + i] = set(cands.tolist())
    return lsh


def theirs(
    sigs: np.ndarray,
    ts: np.ndarray,
    make: Callable[[int], datasketch.LeanMinHash],
    found: list[set[int]] | None = None,
) -> tuple[datasketch.MinHashLSH, dict[int, datasketch.LeanMinHash]]:
    """The same with datasketch, one post at a time."""
    lsh = datasketch.MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS))
    store: dict[int, datasketch.LeanMinHash] = {}
    live: deque[tuple[float, int]] = deque()
    for key, t in enumerate(ts.tolist()):
        while live and live[0][0] < t - PER_WINDOW:
            _, old = live.popleft()
            lsh.remove(old)
            del store[old]
        m = make(key)
        cands = lsh.query(m)
        _est = [m.jaccard(store[c]) for c in cands]
        lsh.insert(key, m, check_duplication=False)
        store[key] = m
        live.append((t, key))
        if found is not None:
            found.append(set(cands))
    return lsh, store


def _traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def run(quick: bool = False) -> list[Row]:
    n_docs = 4000 if quick else 20000
    sigs, ts = _stream(n_docs)
    lean = [datasketch.LeanMinHash(seed=SEED, hashvalues=s, scheme="affine32") for s in sigs]

    found_ours: list[set[int]] = []
    found_theirs: list[set[int]] = []
    ours(sigs, ts, found_ours)
    theirs(sigs, ts, lean.__getitem__, found_theirs)
    if found_ours != found_theirs:
        raise AssertionError("windowed LSH candidates differ from datasketch's")
    repeat = 1 if quick else 3
    t_ours = best_time(lambda: ours(sigs, ts), repeat=repeat)
    t_theirs = best_time(lambda: theirs(sigs, ts, lean.__getitem__), repeat=repeat)
    del lean

    n_mem = 3 * PER_WINDOW
    mem_ours, lsh = _traced_bytes(lambda: ours(sigs[:n_mem], ts[:n_mem]))
    live = len(lsh)  # type: ignore[arg-type]
    del lsh
    mem_theirs, _ = _traced_bytes(
        lambda: theirs(
            sigs[:n_mem],
            ts[:n_mem],
            lambda k: datasketch.LeanMinHash(seed=SEED, hashvalues=sigs[k], scheme="affine32"),
        )
    )
    return [
        Row(
            f"windowed LSH insert+query+expire, {n_docs} posts, window {PER_WINDOW}, {BANDS}x{ROWS}",
            n_docs / t_ours,
            "posts/s",
            "datasketch MinHashLSH + LeanMinHash.jaccard",
            n_docs / t_theirs,
            key="lsh_ops_per_s",
        ),
        Row(
            f"windowed LSH memory per live post ({live} live, tracemalloc)",
            mem_ours / live,
            "bytes/doc (lower is better)",
            "datasketch MinHashLSH + LeanMinHash per post",
            mem_theirs / live,
            key="lsh_bytes_per_doc",
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:,.0f} {row.unit} vs {row.baseline_value:,.0f} ({row.ratio:.2f}x)")
