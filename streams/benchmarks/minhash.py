"""Batch MinHash vs datasketch's per-document ``MinHash.update`` loop, same bytes, same run.

Posts are synthetic but shaped like the stream: 20-40 tokens drawn from a Zipf-distributed
vocabulary (so stop-word repeats occur), with @mentions, hashtags, tracking links and
emoji; a share of them are edited copies of campaign templates (for the LSH benchmark).
"""

from __future__ import annotations

import time

import datasketch
import numpy as np

from sketches.minhash import minhasher
from sketches.shingling import shingle_batch
from streams.benchmarks.common import Row, best_time

NUM_PERM = 128
SEED = 1
KIND, N = "word", 2  # the default shingling (see tests/sketches/test_shingling.py)
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "da", "pe", "gu", "shi", "an", "or", "el"]
_EMOJI = ["😀", "🔥", "🇺🇸", "👇", "‼️", "🙏"]


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Distinct pseudo-words of 1-4 syllables."""
    words: set[str] = set()
    while len(words) < size:
        k = int(rng.integers(1, 5))
        words.add("".join(rng.choice(_SYLLABLES, k)))
    return list(rng.permutation(sorted(words)))  # frequency rank unrelated to spelling


def make_posts(
    n: int, seed: int = 0, campaign_share: float = 0.2, templates: int = 20
) -> list[str]:
    """``n`` tweet-like posts; ``campaign_share`` of them are edited copies of templates."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(5000, rng)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    draws = iter(np.searchsorted(cdf, rng.random((n + templates) * 64)).tolist())  # Zipf ranks, drawn at once

    def post() -> list[str]:
        words = [vocab[next(draws)] for _ in range(int(rng.integers(20, 41)))]
        if rng.random() < 0.5:
            words.insert(int(rng.integers(len(words))), f"@user{rng.integers(10**6)}")
        if rng.random() < 0.5:
            words.append(f"#{vocab[next(draws) % 200]}")
        if rng.random() < 0.3:
            words.append(f"https://news{rng.integers(50)}.example.com/a?utm_id={rng.integers(10**9)}")
        return words

    bases = [post() for _ in range(templates)]
    out = []
    for _ in range(n):
        if rng.random() < campaign_share:
            words = list(bases[int(rng.integers(templates))])
            for _ in range(int(rng.integers(0, 3))):  # a word swapped, dropped or added
                i = int(rng.integers(len(words)))
                op = rng.integers(3)
                if op == 0:
                    words[i] = vocab[next(draws)]
                elif op == 1:
                    del words[i]
                else:
                    words.insert(i, vocab[next(draws)])
        else:
            words = post()
        if rng.random() < 0.3:
            words.append(_EMOJI[int(rng.integers(len(_EMOJI)))])
        out.append(" ".join(words).capitalize() + ("!" if rng.random() < 0.3 else ""))
    return out


def datasketch_signatures(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The baseline: one datasketch MinHash per document, ``update`` per shingle."""
    low32 = (hashes & np.uint64(0xFFFFFFFF)).tolist()
    rows = []
    for d in range(offsets.size - 1):
        m = datasketch.MinHash(NUM_PERM, SEED, scheme="affine32", hashfunc=lambda x: x)
        for h in low32[offsets[d] : offsets[d + 1]]:
            m.update(h)
        rows.append(m.hashvalues)
    return np.array(rows, dtype=np.uint32).reshape(-1, NUM_PERM)


def datasketch_batch_signatures(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """datasketch at its fastest: shared permutations and one ``update_batch`` per document."""
    low32 = (hashes & np.uint64(0xFFFFFFFF)).tolist()
    perms = datasketch.MinHash(NUM_PERM, SEED, scheme="affine32").permutations
    rows = []
    for d in range(offsets.size - 1):
        m = datasketch.MinHash(
            NUM_PERM, SEED, scheme="affine32", hashfunc=lambda x: x, permutations=perms
        )
        m.update_batch(low32[offsets[d] : offsets[d + 1]])
        rows.append(m.hashvalues)
    return np.array(rows, dtype=np.uint32).reshape(-1, NUM_PERM)


def run(quick: bool = False) -> list[Row]:
    n_docs = 500 if quick else 2000
    posts = make_posts(n_docs)
    shingles = shingle_batch(posts, KIND, N)
    hasher = minhasher(NUM_PERM, SEED, "affine32")
    ours = hasher.signatures(shingles.hashes, shingles.offsets).values
    t0 = time.perf_counter()
    theirs = datasketch_signatures(shingles.hashes, shingles.offsets)
    t_theirs = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs_batch = datasketch_batch_signatures(shingles.hashes, shingles.offsets)
    t_batch = time.perf_counter() - t0
    if not (np.array_equal(ours, theirs) and np.array_equal(ours, theirs_batch)):
        raise AssertionError("batch MinHash differs from datasketch's")
    t_ours = best_time(lambda: hasher.signatures(shingles.hashes, shingles.offsets), repeat=5)
    t_shingle = best_time(lambda: shingle_batch(posts, KIND, N), repeat=3)
    return [
        Row(
            f"MinHash signatures, {n_docs} posts, {NUM_PERM} perms (batch vs per-doc update)",
            n_docs / t_ours,
            "docs/s",
            "datasketch MinHash.update loop",
            n_docs / t_theirs,
            key="minhash_speedup",
            figure="ratio",
        ),
        Row(
            f"MinHash signatures, {n_docs} posts (batch vs datasketch's fastest path)",
            n_docs / t_ours,
            "docs/s",
            "datasketch update_batch, shared permutations",
            n_docs / t_batch,
        ),
        Row(
            f"normalise + {KIND} {N}-gram shingling, {n_docs} posts (vs MinHash alone)",
            n_docs / t_shingle,
            "docs/s",
            "batch MinHash signatures",
            n_docs / t_ours,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:,.0f} {row.unit} vs {row.baseline_value:,.0f} ({row.ratio:.1f}x)")
