"""Batch MinHash: bit-identical to datasketch, Jaccard as datasketch estimates it, the
Signatures value (append, merge, bytes), and determinism across processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import datasketch
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sketches.minhash as minhash_module
from sketches.errors import IncompatibleSketchError
from sketches.minhash import MinHasher, Signatures, minhasher
from sketches.shingling import shingle_batch

ROOT = Path(__file__).resolve().parents[2]

docs_strategy = st.lists(
    st.lists(st.integers(0, 2**64 - 1), max_size=25),  # includes empty and 1-element docs
    min_size=1,
    max_size=12,
)


def flatten(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    return np.array([h for d in docs for h in d], dtype=np.uint64), offsets


def datasketch_minhash(values: list[int], num_perm: int, seed: int, scheme: str) -> datasketch.MinHash:
    m = datasketch.MinHash(num_perm, seed, scheme=scheme, hashfunc=lambda x: x)
    for v in values:
        m.update(v & 0xFFFFFFFF if scheme == "affine32" else v)
    return m


@settings(max_examples=60, deadline=None)
@given(docs_strategy, st.sampled_from([1, 16, 128]), st.integers(0, 2**32 - 1), st.sampled_from(["affine32", "affine64"]))
def test_bit_identical_to_datasketch(docs: list[list[int]], num_perm: int, seed: int, scheme: str):
    sigs = MinHasher(num_perm, seed, scheme).signatures(*flatten(docs))
    assert sigs.values.shape == (len(docs), num_perm)
    for d, values in enumerate(docs):
        expected = datasketch_minhash(values, num_perm, seed, scheme).hashvalues
        assert sigs.values.dtype == expected.dtype
        assert np.array_equal(sigs.values[d], expected), f"document {d} ({len(values)} values)"


def test_chunking_does_not_change_signatures(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 40, 200)
    lengths[[0, 7, -1]] = 0
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    hashes = rng.integers(0, 2**64 - 1, int(offsets[-1]), dtype=np.uint64)
    whole = MinHasher(64, 3).signatures(hashes, offsets)
    monkeypatch.setattr(minhash_module, "CHUNK_BYTES", 64 * 4 * 7)  # 7 shingles per chunk
    assert np.array_equal(MinHasher(64, 3).signatures(hashes, offsets).values, whole.values)


def test_empty_document_is_datasketchs_empty_minhash():
    sigs = MinHasher(32, 1).signatures(np.empty(0, dtype=np.uint64), np.array([0, 0]))
    assert np.array_equal(sigs.values[0], datasketch.MinHash(32, 1, scheme="affine32").hashvalues)
    assert sigs.jaccard(0, 0) == 1.0


def test_other_schemes_are_refused_clearly():
    with pytest.raises(ValueError, match="legacy"):
        MinHasher(scheme="legacy")
    with pytest.raises(ValueError, match="offsets"):
        MinHasher().signatures(np.arange(3, dtype=np.uint64), np.array([0, 2]))
    with pytest.raises(ValueError, match="non-decreasing"):
        MinHasher().signatures(np.arange(3, dtype=np.uint64), np.array([0, 2, 1, 3]))


# -- Signatures --------------------------------------------------------------------------
def random_signatures(rng: np.random.Generator, n: int = 30, num_perm: int = 128, seed: int = 1) -> Signatures:
    """Documents sharing a random part of a common pool, so Jaccard spans 0..1."""
    pool = rng.integers(0, 2**64 - 1, 80, dtype=np.uint64)
    docs = [rng.choice(pool, int(rng.integers(0, 60)), replace=False).tolist() for _ in range(n)]
    return minhasher(num_perm, seed).signatures(*flatten(docs))


def test_jaccard_equals_datasketchs_estimate():
    sigs = random_signatures(np.random.default_rng(1))
    left, right = np.triu_indices(len(sigs), 1)
    many = sigs.jaccard_many(left, right)
    for k, (i, j) in enumerate(zip(left.tolist(), right.tolist())):
        theirs = sigs.to_datasketch(i).jaccard(sigs.to_datasketch(j))
        assert sigs.jaccard(i, j) == theirs == many[k]
    assert many.min() == 0.0 and 0.4 < many.max() <= 1.0  # estimates across the range


def test_to_datasketch_keeps_values_seed_and_scheme():
    sigs = random_signatures(np.random.default_rng(2), seed=9)
    lean = sigs.to_datasketch(4)
    assert isinstance(lean, datasketch.LeanMinHash)
    assert lean.seed == 9 and lean.scheme == "affine32"
    assert np.array_equal(lean.hashvalues, sigs.values[4])


def test_merge_is_the_signature_of_the_union():
    rng = np.random.default_rng(3)
    a = [rng.integers(0, 2**64 - 1, int(k), dtype=np.uint64).tolist() for k in rng.integers(0, 30, 10)]
    b = [rng.integers(0, 2**64 - 1, int(k), dtype=np.uint64).tolist() for k in rng.integers(0, 30, 10)]
    hasher = minhasher(64, 1)
    merged = hasher.signatures(*flatten(a))
    merged.merge(hasher.signatures(*flatten(b)))
    union = hasher.signatures(*flatten([x + y for x, y in zip(a, b)]))
    assert merged == union


def test_merge_refuses_mismatches_naming_both_values():
    rng = np.random.default_rng(4)
    with pytest.raises(IncompatibleSketchError, match=r"seed: 1 vs 2"):
        random_signatures(rng, seed=1).merge(random_signatures(rng, seed=2))
    with pytest.raises(IncompatibleSketchError, match=r"num_perm: 128 vs 64"):
        random_signatures(rng).merge(random_signatures(rng, num_perm=64))
    with pytest.raises(IncompatibleSketchError, match=r"30 vs 5 documents"):
        random_signatures(rng, n=30).merge(random_signatures(rng, n=5))
    with pytest.raises(IncompatibleSketchError, match=r"seed: 1 vs 2"):
        random_signatures(rng, seed=1).update(random_signatures(rng, seed=2))


def test_update_appends_signatures_or_computes_them():
    texts = ["the new bus lanes on main street", "", "bus lanes", "a completely different post"]
    sh = shingle_batch(texts, "word", 2)
    direct = minhasher().signatures(sh.hashes, sh.offsets)
    acc = Signatures()
    acc.update(sh.hashes[: sh.offsets[2]], sh.offsets[:3])
    acc.update(minhasher().signatures(sh.hashes[sh.offsets[2] :], sh.offsets[2:] - sh.offsets[2]))
    assert acc == direct and len(acc) == 4
    with pytest.raises(TypeError):
        acc.update(sh.hashes)


def test_bytes_round_trip_and_nbytes():
    sigs = random_signatures(np.random.default_rng(6), seed=7)
    back = Signatures.from_bytes(sigs.to_bytes())
    assert back == sigs and back.params() == {"num_perm": 128, "seed": 7, "scheme": "affine32"}
    assert sigs.nbytes == len(sigs) * 128 * 4
    copy = sigs.copy()
    copy.values[0, 0] = 0
    assert copy != sigs


def test_values_must_match_the_scheme():
    with pytest.raises(ValueError, match="uint32"):
        Signatures(np.zeros((2, 128), dtype=np.uint64))


_SUBPROCESS = """
import hashlib
from sketches.minhash import minhasher
from sketches.shingling import shingle_batch
texts = ["Vote for the new bus lanes!", "", "ＦＵＬＬ width @someone https://x.example/?a=1 😀"] * 3
sh = shingle_batch(texts, "word", 2)
print(hashlib.sha256(minhasher(128, 1).signatures(sh.hashes, sh.offsets).to_bytes()).hexdigest())
"""


def test_signatures_are_identical_across_processes():
    texts = ["Vote for the new bus lanes!", "", "ＦＵＬＬ width @someone https://x.example/?a=1 😀"] * 3
    sh = shingle_batch(texts, "word", 2)
    here = hashlib.sha256(minhasher(128, 1).signatures(sh.hashes, sh.offsets).to_bytes()).hexdigest()
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here


def test_some_permutations_are_the_same_columns_of_the_signatures():
    rng = np.random.default_rng(8)
    lengths = rng.integers(0, 30, 50)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    hashes = rng.integers(0, 2**64 - 1, int(offsets[-1]), dtype=np.uint64)
    hasher = MinHasher(128, 5)
    whole = hasher.signatures(hashes, offsets).values
    assert np.array_equal(hasher.values(hashes, offsets), whole)
    parts = [hasher.values(hashes, offsets, slice(lo, hi)) for lo, hi in [(0, 30), (30, 31), (31, 128)]]
    assert np.array_equal(np.hstack(parts), whole)
    assert hasher.values(hashes, offsets, slice(0, 0)).shape == (50, 0)
