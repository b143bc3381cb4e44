"""HyperLogLog with numpy batch updates and datasketch's registers and estimates.

The registers are exactly those of ``datasketch.HyperLogLog(p, hashfunc=...)`` fed the low
32 bits of our 64-bit hashes one at a time (register ``hv & (m - 1)``, rank
``32 - p - bit_length(hv >> p) + 1``), so a state can be handed to datasketch and back and
``count()`` is datasketch's own estimator, not a re-implementation that could drift.

The batch update is ``np.maximum.at`` over the register indices; ``bit_length`` is the
exponent from ``np.frexp`` (exact: the values are < 2**32, well inside float64). Measured
(numpy 2.4, p=14) per batch of 10k: ``np.maximum.at`` 10 us vs a sort-based segmented max
67 us. Batches are cut into chunks of 16k hashes: at 1M hashes that took 2.2 ms instead of
8.0 ms, as the temporaries stay small enough to be reused instead of freshly mapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from sketches.errors import SketchParamError
from sketches.errors import SketchFormatError
from sketches.protocol import Params, SketchBase

if TYPE_CHECKING:
    import datasketch

_CHUNK = 1 << 14
_HASH_BITS = 32  # datasketch.HyperLogLog._hash_range_bit


class HyperLogLog(SketchBase):
    """Distinct-count sketch with ``m = 2**p`` int8 registers (relative error ~1.04/sqrt(m))."""

    KIND: ClassVar[str] = "hll"
    VERSION: ClassVar[int] = 1

    def __init__(self, p: int = 14) -> None:
        if not (isinstance(p, int) and 4 <= p <= 16):
            raise SketchParamError(f"p must be an int in [4, 16] (datasketch's range), got {p!r}")
        self.p = p
        self.reg = np.zeros(1 << p, dtype=np.int8)

    def params(self) -> Params:
        return {"p": self.p}

    def _arrays(self) -> list[np.ndarray]:
        return [self.reg]

    @classmethod
    def _from_state(cls, params: Params, arrays: list[np.ndarray]) -> Self:
        sk = cls(int(params["p"]))
        (reg,) = arrays
        if reg.shape != sk.reg.shape or reg.dtype != np.int8:
            raise SketchFormatError(f"hll registers {reg.dtype}{reg.shape} are not int8[{sk.reg.size}]")
        sk.reg = reg
        return sk

    def update(self, hashes: Any) -> None:
        """Add a batch of uint64 hashes (only their low 32 bits are used, as in datasketch)."""
        h = np.asarray(hashes).reshape(-1)
        if h.dtype.kind not in "ui":
            raise SketchParamError(f"hashes must be an integer array, got dtype {h.dtype}")
        p, mask = self.p, np.uint32((1 << self.p) - 1)
        top = _HASH_BITS - p + 1
        for s in range(0, h.size, _CHUNK):
            hv = h[s : s + _CHUNK].astype(np.uint32)  # low 32 bits (C cast wraps)
            _, bit_length = np.frexp((hv >> np.uint32(p)).astype(np.float64))
            hv &= mask
            np.maximum.at(self.reg, hv, (top - bit_length).astype(np.int8))

    def count(self) -> float:
        """datasketch's estimate for these registers."""
        return float(self.to_datasketch(copy=False).count())

    def to_datasketch(self, copy: bool = True) -> datasketch.HyperLogLog:
        """A datasketch HyperLogLog on these registers (a copy unless ``copy=False``)."""
        # imported here: ``import datasketch`` pulls in scipy (0.45 s), which a worker that
        # only updates sketches should not pay
        from datasketch import HyperLogLog as DatasketchHLL

        return DatasketchHLL(reg=self.reg.copy() if copy else self.reg)

    def merge(self, other: Self) -> None:
        """Union: register-wise max (same ``p`` required)."""
        self.check_compatible(other)
        np.maximum(self.reg, other.reg, out=self.reg)
