"""The one sketch protocol and its byte layout.

Every sketch in :mod:`sketches` is a value-like object (modelled on datasketch):

* ``update(batch)``: a batch update (numpy arrays in; never one Python call per item),
* ``merge(other)``: in place; the result summarises both inputs' streams,
* ``copy()``: an independent deep copy,
* ``to_bytes()`` / ``from_bytes(data)``: the layout below,
* ``nbytes``: memory held by the sketch's arrays,
* ``params()``: the parameters that must agree for two sketches to merge.

Merging, or loading bytes, with parameters that differ raises
:class:`~sketches.errors.IncompatibleSketchError` naming both values.

Byte layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"CWSK"
    4       1     layout version (1)
    5       4     u32 header length H
    9       H     header: UTF-8 JSON, keys sorted:
                    {"kind": str, "version": int, "params": {...},
                     "arrays": [{"dtype": "<u4", "shape": [..]}, ...]}
    9+H     ...   the arrays' raw bytes, C order, in header order

``kind`` names the sketch class, ``version`` its state format; a reader refuses a kind or
version it does not know rather than guess.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import orjson

from sketches.errors import IncompatibleSketchError, SketchFormatError

MAGIC = b"CWSK"
LAYOUT_VERSION = 1
_PREFIX = struct.Struct("<4sBI")

Params = dict[str, Any]


@runtime_checkable
class Sketch(Protocol):
    """What every sketch provides (checked over all of them by a conformance test)."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int]

    def params(self) -> Params: ...

    def update(self, *batch: Any) -> Any: ...

    def merge(self, other: Self) -> None: ...

    def copy(self) -> Self: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self: ...

    @property
    def nbytes(self) -> int: ...


class SketchBase(ABC):
    """Shared codec, copy, equality and compatibility checks.

    A subclass declares ``KIND`` and ``VERSION`` and implements ``params()``,
    ``_arrays()`` (its state, in a fixed order) and ``_from_state(params, arrays)``.
    """

    KIND: ClassVar[str]
    VERSION: ClassVar[int]

    @abstractmethod
    def params(self) -> Params:
        """The parameters that must agree for a merge (JSON-serialisable)."""

    @abstractmethod
    def _arrays(self) -> list[np.ndarray]:
        """The sketch's state, in a fixed order."""

    @classmethod
    @abstractmethod
    def _from_state(cls, params: Params, arrays: list[np.ndarray]) -> Self:
        """Rebuild a sketch from ``params()`` and ``_arrays()``."""

    # -- compatibility -------------------------------------------------------------
    def check_compatible(self, other: Params | SketchBase, what: str = "merge") -> None:
        """Raise :class:`IncompatibleSketchError` naming every parameter that differs."""
        if isinstance(other, SketchBase):
            if type(other) is not type(self):
                raise IncompatibleSketchError(
                    f"cannot {what} {type(self).__name__} with {type(other).__name__}"
                )
            other = other.params()
        mine = self.params()
        diffs = [
            f"{k}: {mine.get(k)!r} vs {other.get(k)!r}"
            for k in sorted(set(mine) | set(other))
            if mine.get(k) != other.get(k)
        ]
        if diffs:
            raise IncompatibleSketchError(
                f"cannot {what} {self.KIND} sketches with different parameters ("
                + "; ".join(diffs)
                + ")"
            )

    # -- value semantics -----------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._arrays()))

    def copy(self) -> Self:
        return self._from_state(dict(self.params()), [a.copy() for a in self._arrays()])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SketchBase)
        return self.params() == other.params() and all(
            a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(self._arrays(), other._arrays(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable value

    # -- bytes ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return pack({"kind": self.KIND, "version": self.VERSION, "params": self.params()}, self._arrays())

    @classmethod
    def from_bytes(cls, data: bytes, expect: Params | None = None) -> Self:
        """Load a sketch; with ``expect``, also require those parameters."""
        header, arrays = unpack(data, kind=cls.KIND, version=cls.VERSION)
        sketch = cls._from_state(header["params"], arrays)
        if expect is not None:
            sketch.check_compatible(expect, what="load")
        return sketch


def pack(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    """Bytes in the layout above; ``header`` must hold ``kind`` and ``version``.

    Also used for detector snapshots, so all coordwatch state has one layout.
    """
    arrays = [np.ascontiguousarray(a) for a in arrays]
    for a in arrays:
        if a.dtype.byteorder == ">" or a.dtype.hasobject:
            raise SketchFormatError(f"dtype {a.dtype} is not part of the layout")
    head = orjson.dumps(
        {**header, "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]},
        option=orjson.OPT_SORT_KEYS,
    )
    return b"".join([_PREFIX.pack(MAGIC, LAYOUT_VERSION, len(head)), head] + [a.tobytes() for a in arrays])


def unpack(data: bytes, *, kind: str, version: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Header and arrays of bytes that must hold state of ``kind`` at format ``version``.

    A reader refuses another kind or version rather than guess.
    """
    header, arrays = decode(data)
    if header.get("kind") != kind:
        raise SketchFormatError(f"bytes hold {header.get('kind')!r} state, not {kind!r}")
    if header.get("version") != version:
        raise SketchFormatError(
            f"{kind} state format version {header.get('version')} is not supported "
            f"(this build reads version {version})"
        )
    return header, arrays


def decode(data: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Split bytes in the layout above into the header and (writable) arrays."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise SketchFormatError(f"{len(view)} bytes is too short for a sketch")
    magic, layout, hlen = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise SketchFormatError(f"not a coordwatch sketch (magic {bytes(magic)!r})")
    if layout != LAYOUT_VERSION:
        raise SketchFormatError(f"sketch layout version {layout} is not supported")
    start = _PREFIX.size
    try:
        header = orjson.loads(view[start : start + hlen])
    except orjson.JSONDecodeError as exc:
        raise SketchFormatError(f"corrupt sketch header: {exc}") from exc
    offset = start + hlen
    arrays = []
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if offset + size > len(view):
            raise SketchFormatError("sketch bytes are truncated")
        arrays.append(np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(shape).copy())
        offset += size
    if offset != len(view):
        raise SketchFormatError(f"{len(view) - offset} trailing bytes after the sketch")
    return header, arrays
