"""Seeded, vectorised 64-bit hashing: the one source of hash values in coordwatch.

Python's ``hash()`` is salted per process, so nothing here uses it: every value is a
function of the input and an explicit integer seed, identical across runs, processes,
machines and restarts (alerts are compared byte for byte).

Strings are hashed a batch at a time without a Python call per string: the batch is
joined and viewed as UTF-32 code points, a polynomial prefix sum over the whole buffer
(``H[i] = sum_{j<i} c_j * P**j mod 2**64``, with wrap-around uint64 arithmetic and an odd,
seed-derived base ``P``) gives the hash of any span as ``(H[e] - H[s]) * P**-s`` in O(1),
and a MurmurHash3 finaliser (``fmix64``) mixed with the seed and the span length spreads
the result. Spans can be whole strings (:func:`hash_strings`) or any sub-spans of one
buffer (:func:`hash_spans`, used for character n-grams).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

U64 = np.uint64
MASK64 = (1 << 64) - 1

#: Default seed for every hash in coordwatch (configurable where it matters).
DEFAULT_SEED = 0x5EED_C00D

_C1 = U64(0xFF51AFD7ED558CCD)
_C2 = U64(0xC4CEB9FE1A85EC53)
_S33 = U64(33)
_LEN_MUL = U64(0x9E3779B97F4A7C15)


def splitmix64(x: int) -> int:
    """One step of SplitMix64 on a Python int: derives well-spread constants from a seed."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, element-wise: an avalanching bijection on uint64."""
    h = np.asarray(h, dtype=U64)
    h = h ^ (h >> _S33)
    h = h * _C1
    h = h ^ (h >> _S33)
    h = h * _C2
    return h ^ (h >> _S33)


def hash_u64(values: np.ndarray, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Seeded hash of integer values (e.g. to combine an existing hash with a new seed)."""
    return fmix64(np.asarray(values).astype(U64, copy=False) ^ U64(splitmix64(seed)))


class _Powers:
    """Cached powers ``P**j`` and ``P**-j`` (mod 2**64) for one seed, grown on demand."""

    __slots__ = ("base", "inv", "pw", "ipw")

    def __init__(self, seed: int) -> None:
        self.base = splitmix64(seed ^ 0x5A5A5A5A) | 1  # odd: invertible mod 2**64
        self.inv = pow(self.base, -1, 1 << 64)
        self.pw = np.ones(1, dtype=U64)
        self.ipw = np.ones(1, dtype=U64)

    def ensure(self, n: int) -> None:
        if self.pw.size >= n:
            return
        n = max(n, 2 * self.pw.size, 1024)
        self.pw = _power_table(self.base, n)
        self.ipw = _power_table(self.inv, n)


def _power_table(base: int, n: int) -> np.ndarray:
    table = np.full(n, base, dtype=U64)
    table[0] = 1
    return np.cumprod(table, dtype=U64)


_POWERS: dict[int, _Powers] = {}


def _powers(seed: int, n: int) -> _Powers:
    p = _POWERS.get(seed)
    if p is None:
        p = _POWERS[seed] = _Powers(seed)
    p.ensure(n)
    return p


def codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as uint32 (lone surrogates kept, never an error)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def prefix_hashes(codes: np.ndarray, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``H`` with ``H[0] = 0`` and ``H[i+1] = H[i] + codes[i] * P**i`` (mod 2**64)."""
    n = codes.size
    pw = _powers(seed, n + 1).pw
    out = np.empty(n + 1, dtype=U64)
    out[0] = 0
    np.cumsum(codes.astype(U64) * pw[:n], dtype=U64, out=out[1:])
    return out


def hash_spans(
    prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """Hashes of spans ``[starts[k], ends[k])`` of the buffer that ``prefix`` was built on.

    Equal spans get equal hashes wherever they sit in the buffer (the position factor is
    divided out), so a token hashes the same in any batch.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    ipw = _powers(seed, int(prefix.size)).ipw
    raw = (prefix[ends] - prefix[starts]) * ipw[starts]
    lengths = (ends - starts).astype(U64)
    return fmix64(raw ^ (lengths * _LEN_MUL) ^ U64(splitmix64(seed)))


def hash_strings(strings: Sequence[str], seed: int = DEFAULT_SEED) -> np.ndarray:
    """Seeded 64-bit hashes of a batch of strings, one numpy pass over all of them."""
    n = len(strings)
    if n == 0:
        return np.empty(0, dtype=U64)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    codes = codepoints("".join(strings))
    return hash_spans(prefix_hashes(codes, seed), starts, ends, seed)


def hash_string(s: str, seed: int = DEFAULT_SEED) -> int:
    """Scalar convenience over :func:`hash_strings` (same value as in a batch)."""
    return int(hash_strings([s], seed)[0])
