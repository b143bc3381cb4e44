"""HyperLogLog: registers bit-identical to datasketch's, datasketch's estimates, merge, bytes."""

from __future__ import annotations

import hashlib

import datasketch
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import outputs_under_two_hash_seeds
from sketches.errors import SketchParamError
from sketches.errors import IncompatibleSketchError
from sketches.hashing import hash_u64
from sketches.hll import HyperLogLog
from sketches.protocol import Sketch

LOW32 = np.uint64(0xFFFFFFFF)


def datasketch_regs(p: int, hashes: np.ndarray) -> np.ndarray:
    ref = datasketch.HyperLogLog(p, hashfunc=lambda x: x)
    for v in (hashes & LOW32).tolist():  # the same 32-bit ints, one by one
        ref.update(v)
    return ref.reg


# values whose low 32 bits hit the rank edge cases: 0, all ones, a lone high bit, ...
EDGES = [0, 1, 0xFFFFFFFF, 1 << 31, (1 << 32) | 5, 0xFFFFFFFF_00000000, (1 << 64) - 1]


@settings(max_examples=60, deadline=None)
@given(
    p=st.integers(4, 16),
    values=st.lists(st.sampled_from(EDGES) | st.integers(0, 2**64 - 1), max_size=200),
)
def test_registers_bit_identical_to_datasketch(p, values):
    hashes = np.array(values, dtype=np.uint64)
    ours = HyperLogLog(p)
    ours.update(hashes)
    assert ours.reg.dtype == np.int8
    assert np.array_equal(ours.reg, datasketch_regs(p, hashes))


def test_large_batches_and_batch_splits_agree_with_datasketch():
    hashes = hash_u64(np.arange(50_000, dtype=np.uint64))  # > the 16k internal chunk
    one, split = HyperLogLog(10), HyperLogLog(10)
    one.update(hashes)
    for part in np.array_split(hashes, 7):
        split.update(part)
    assert one == split
    assert np.array_equal(one.reg, datasketch_regs(10, hashes))


def test_estimate_within_expected_error_and_is_datasketchs():
    p, n = 12, 100_000
    h = HyperLogLog(p)
    hashes = hash_u64(np.arange(n, dtype=np.uint64), seed=17)
    h.update(np.concatenate([hashes, hashes[:5000]]))  # duplicates must not count
    est = h.count()
    assert abs(est - n) / n < 4 * 1.04 / np.sqrt(1 << p)  # 4 standard errors: 6.5%
    assert est == datasketch.HyperLogLog(reg=h.reg.copy()).count()
    assert h.to_datasketch() == datasketch.HyperLogLog(reg=h.reg.copy())


def test_merge_is_union_and_refuses_other_precision():
    a_h = hash_u64(np.arange(0, 30_000, dtype=np.uint64))
    b_h = hash_u64(np.arange(20_000, 60_000, dtype=np.uint64))
    a, b, u = HyperLogLog(11), HyperLogLog(11), HyperLogLog(11)
    a.update(a_h)
    b.update(b_h)
    u.update(np.concatenate([a_h, b_h]))
    a.merge(b)
    assert a == u
    with pytest.raises(IncompatibleSketchError, match=r"p: 11 vs 12"):
        a.merge(HyperLogLog(12))
    with pytest.raises(IncompatibleSketchError, match=r"p: 11 vs 9"):
        HyperLogLog.from_bytes(a.to_bytes(), expect={"p": 9})


def test_bytes_round_trip_copy_and_protocol():
    h = HyperLogLog(8)
    h.update(hash_u64(np.arange(1000, dtype=np.uint64)))
    back = HyperLogLog.from_bytes(h.to_bytes())
    assert back == h and back.to_bytes() == h.to_bytes() and back.count() == h.count()
    c = h.copy()
    c.update(hash_u64(np.arange(1000, 5000, dtype=np.uint64)))
    assert c != h  # independent
    assert isinstance(h, Sketch) and h.nbytes == 256


def test_bad_precision_and_input():
    for p in (3, 17, 8.0):
        with pytest.raises(SketchParamError):
            HyperLogLog(p)  # type: ignore[arg-type]
    with pytest.raises(SketchParamError):
        HyperLogLog(8).update(np.array([0.5]))


def test_same_input_gives_identical_bytes_in_separate_processes():
    code = (
        "import numpy as np, hashlib\n"
        "from sketches.hll import HyperLogLog\n"
        "from sketches.hashing import hash_u64\n"
        "h = HyperLogLog(10)\n"
        "h.update(hash_u64(np.random.default_rng(3).integers(0, 1 << 40, 30000)))\n"
        "print(hashlib.sha256(h.to_bytes()).hexdigest())\n"
    )
    outs = outputs_under_two_hash_seeds(code)
    h = HyperLogLog(10)
    h.update(hash_u64(np.random.default_rng(3).integers(0, 1 << 40, 30000)))
    assert outs[0] == outs[1] == hashlib.sha256(h.to_bytes()).hexdigest()
