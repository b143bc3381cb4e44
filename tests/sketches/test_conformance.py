"""Every sketch through the one protocol (River-style generic checks over all implementations).

Each entry says how to build an empty sketch, an incompatible one, and how to feed it a
random batch; the checks themselves are the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from sketches.countmin import CountMinSketch, SlidingCountMin
from sketches.errors import CoordwatchError, IncompatibleSketchError, SketchFormatError
from sketches.hll import HyperLogLog
from sketches.lsh import WindowedLSH
from sketches.minhash import Signatures, minhasher
from sketches.protocol import Sketch, SketchBase
from tests.helpers import concrete_subclasses


def _keys(rng: np.random.Generator, n: int = 500) -> np.ndarray:
    return rng.zipf(1.3, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def _docs(rng: np.random.Generator, n: int = 20, num_perm: int = 64, seed: int = 1) -> Signatures:
    lengths = rng.integers(0, 30, n)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    hashes = rng.integers(0, 2**63, int(offsets[-1]), dtype=np.uint64)
    return minhasher(num_perm, seed).signatures(hashes, offsets)


@dataclass(frozen=True)
class Case:
    make: Callable[[], SketchBase]
    make_incompatible: Callable[[], SketchBase]
    feed: Callable[[SketchBase, np.random.Generator], Any]
    differing_param: str  # named in the incompatibility message


def _feed_lsh(s: SketchBase, rng: np.random.Generator) -> None:
    sigs = _docs(rng, num_perm=64)
    ts = np.sort(rng.uniform(0, 100, len(sigs)))
    s.update(sigs, ts, rng.integers(0, 2**40, len(sigs)))


CASES: dict[str, Case] = {
    "countmin": Case(
        lambda: CountMinSketch(0.01, 0.01, seed=7),
        lambda: CountMinSketch(0.02, 0.01, seed=7),
        lambda s, rng: s.update(_keys(rng)),
        "epsilon",
    ),
    "countmin_conservative": Case(
        lambda: CountMinSketch(0.01, 0.01, seed=7, conservative=True),
        lambda: CountMinSketch(0.01, 0.01, seed=8, conservative=True),
        lambda s, rng: s.update(_keys(rng)),
        "seed",
    ),
    "sliding_countmin": Case(
        lambda: SlidingCountMin(10, 60, 0.01, 0.01, seed=7),
        lambda: SlidingCountMin(20, 60, 0.01, 0.01, seed=7),
        lambda s, rng: s.update(_keys(rng), np.sort(rng.uniform(0, 50, 500))),
        "pane_s",
    ),
    "hll": Case(
        lambda: HyperLogLog(p=10),
        lambda: HyperLogLog(p=12),
        lambda s, rng: s.update(_keys(rng)),
        "p",
    ),
    "minhash_signatures": Case(
        lambda: Signatures(num_perm=64, seed=1),
        lambda: Signatures(num_perm=64, seed=2),
        lambda s, rng: s.update(_docs(rng, num_perm=64, seed=1)),
        "seed",
    ),
    "windowed_lsh": Case(
        lambda: WindowedLSH(3600, threshold=0.8, num_perm=64),
        lambda: WindowedLSH(1800, threshold=0.8, num_perm=64),
        _feed_lsh,
        "window_s",
    ),
}

each = pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())


def _fed(case: Case, seed: int = 0) -> SketchBase:
    s = case.make()
    case.feed(s, np.random.default_rng(seed))
    return s


@each
def test_implements_the_protocol(case: Case):
    s = case.make()
    assert isinstance(s, Sketch)
    assert isinstance(s.nbytes, int) and s.nbytes >= 0
    assert _fed(case).nbytes >= s.nbytes
    assert isinstance(s.params(), dict) and s.params()


@each
def test_bytes_round_trip_is_exact_and_deterministic(case: Case):
    s = _fed(case)
    data = s.to_bytes()
    back = type(s).from_bytes(data)
    assert back == s
    assert back.to_bytes() == data
    assert _fed(case).to_bytes() == data, "same input and seed must give the same bytes"


@each
def test_copy_is_equal_and_independent(case: Case):
    s = _fed(case)
    c = s.copy()
    assert c == s and c is not s
    case.feed(c, np.random.default_rng(99))
    assert c != s
    assert s == _fed(case), "feeding the copy changed the original"


@each
def test_update_changes_state(case: Case):
    assert _fed(case) != case.make()


@each
def test_merge_refuses_other_parameters_naming_both_values(case: Case):
    s, other = case.make(), case.make_incompatible()
    with pytest.raises(IncompatibleSketchError) as err:
        s.merge(other)
    msg = str(err.value)
    assert case.differing_param in msg
    a, b = s.params()[case.differing_param], other.params()[case.differing_param]
    assert repr(a) in msg and repr(b) in msg


@each
def test_merge_takes_in_both_streams_in_any_order(case: Case):
    """A merge that did nothing, kept one side or depended on which side it ran on fails this."""
    a, b, c = (_fed(case, seed) for seed in (0, 1, 2))
    ab, ba = a.copy(), b.copy()
    ab.merge(b)
    ba.merge(a)
    assert ab == ba
    assert ab != a and ab != b
    left, right = ab.copy(), b.copy()
    left.merge(c)
    right.merge(c)
    a.merge(right)
    assert left == a


def test_every_sketch_has_a_case():
    assert concrete_subclasses(SketchBase, "sketches") == {type(c.make()) for c in CASES.values()}


@each
def test_load_with_expected_parameters(case: Case):
    s = _fed(case)
    assert type(s).from_bytes(s.to_bytes(), expect=s.params()) == s
    with pytest.raises(IncompatibleSketchError, match=case.differing_param):
        type(s).from_bytes(s.to_bytes(), expect=case.make_incompatible().params())


@each
def test_bad_bytes_raise_format_errors(case: Case):
    s = _fed(case)
    data = s.to_bytes()
    for bad in (data[:-1], data + b"\0", b"XXXX" + data[4:], data[:6], b""):
        with pytest.raises(SketchFormatError):
            type(s).from_bytes(bad)
    other_kind = next(c for c in CASES.values() if type(c.make()) is not type(s)).make()
    with pytest.raises(SketchFormatError, match="not"):
        type(s).from_bytes(other_kind.to_bytes())


@each
def test_errors_share_the_project_root(case: Case):
    with pytest.raises(CoordwatchError):
        type(case.make()).from_bytes(b"nonsense")
