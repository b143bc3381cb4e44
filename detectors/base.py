"""The one detector protocol and the alert it emits.

A detector is driven the same way by replay (a file, in-process) and by the Faust
agents (a partition of a topic):

* ``process(events)`` — a batch in event-time order → alerts it can already decide;
* ``advance(watermark)`` — event time has reached ``watermark`` (no more events before
  it, bar lateness) → alerts of windows that closed; ``advance(math.inf)`` flushes;
* ``snapshot()`` / ``restore(params, data)`` — all state as versioned bytes (the
  :mod:`sketches.protocol` layout, never pickle), so a restarted worker resumes.

A *keyed* detector (:class:`KeyedDetector`: its alerts are per key, and keys never meet) can
be split into ``n`` shards, ``shard = (s, n)``: shard ``s`` handles only the keys whose
seeded hash is ``s`` modulo ``n``, and its ``router(params).route(events, n)`` says which
events carry keys of which shard, so a worker can send each shard only its events. The
shards together find what one detector finds, given two things the caller keeps: each
shard's events are judged late and cut into ticks with the times of *every* event
(``detectors.pipeline.Detection.add``), and ``begin(t)`` tells each shard the time of the
stream's first event, which may come before any of its own.

Time is event time only. The base class keeps the watermark (the newest event time
seen) and drops events older than ``watermark - allowed_lateness_s``, counting them in
``stats["late_dropped"]``; subclasses see only events they must handle, and
``self.marks[i]`` is the watermark as of the i-th of them.

Every alert carries ``at``: the event time it was decided at (``self.marks[i]`` of the
event that decided it, or the evaluation time it belongs to, or ``inf`` for the final flush).
It is a function of the event sequence, never decreases along a detector's output, and lets
the pipeline put the alerts of all detectors into one order however the input was batched.

Determinism rule for every detector: alerts are a function of the event *sequence* and
the params, never of how it was cut into batches (replay uses large batches, a worker
small ones, a restart cuts anywhere). A detector that decides at event-time ticks must
split a batch at the tick, not at the batch end; a conformance test feeds every detector
one stream in several batchings and requires byte-identical alerts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel

from sketches.errors import IncompatibleSketchError
from sketches.hashing import hash_string
from sketches.protocol import pack, unpack

if TYPE_CHECKING:
    from detectors.events import Event

SCHEMA = "coordwatch.alert/1"
_ID_SEED = 0xA1E47
_TS = attrgetter("ts")


def stable_id(prefix: str, *parts: object) -> str:
    """A deterministic id from its parts (seeded 64-bit hash; never Python's ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts)
    return f"{prefix}{hash_string(text, _ID_SEED):016x}"


@dataclass(frozen=True)
class Alert:
    """One alert (output contract ``coordwatch.alert/1``; see ``schemas/alert.schema.json``).

    ``group_id`` names the group/key across its life; ``alert_id`` names this revision of
    it, so re-emitting the same state after a restart gives the same id (idempotent),
    while a grown group gives a new id with ``status = "update"``.
    """

    type: str
    group_id: str
    revision: int
    score: float
    window_start: float
    window_end: float
    accounts: tuple[str, ...]  # capped at the detector's max; account_count is the full size
    account_count: int
    keys: tuple[str, ...]
    evidence: dict[str, Any]
    detector_params: dict[str, Any]
    at: float  # the watermark when it was decided (not serialised: ordering only)
    related: tuple[dict[str, Any], ...] = ()

    @property
    def alert_id(self) -> str:
        return stable_id("al-", self.group_id, self.revision)

    @property
    def status(self) -> str:
        return "open" if self.revision == 0 else "update"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "alert_id": self.alert_id,
            "group_id": self.group_id,
            "type": self.type,
            "status": self.status,
            "revision": self.revision,
            "score": round(float(self.score), 6),
            "window": {"start": self.window_start, "end": self.window_end},
            "accounts": list(self.accounts),
            "account_count": self.account_count,
            "keys": list(self.keys),
            "evidence": self.evidence,
            "detector": {"name": self.type, "params": self.detector_params},
            "related": list(self.related),
        }

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, so the same alert is the same bytes everywhere."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, data: bytes, at: float) -> Alert:
        """The alert of :meth:`to_json` bytes (``at`` is not in them); ``to_json`` gives the same bytes back."""
        d = orjson.loads(data)
        return cls(
            d["type"], d["group_id"], d["revision"], d["score"], d["window"]["start"], d["window"]["end"],
            tuple(d["accounts"]), d["account_count"], tuple(d["keys"]), d["evidence"], d["detector"]["params"],
            at, tuple(d["related"]),
        )  # fmt: skip


P = TypeVar("P", bound=BaseModel)
#: a detector's part of the keys: shard ``s`` of ``n`` (``(0, 1)``: all of them)
Shard = tuple[int, int]
WHOLE: Shard = (0, 1)


class Detector(ABC, Generic[P]):
    """Base of every detector: lateness, watermark, stats and the snapshot envelope."""

    NAME: ClassVar[str]
    STATE_VERSION: ClassVar[int]
    SPLITS: ClassVar[bool] = False  # it runs as shard s of n > 1 (a keyed detector; co_action's object parts)

    def __init__(self, params: P, shard: Shard = WHOLE) -> None:
        s, n = shard
        if not 0 <= s < n or (n > 1 and not self.SPLITS):
            raise ValueError(f"{self.NAME} cannot run as shard {s} of {n}")
        self.params = params
        self.shard = shard
        self.watermark = -math.inf
        self.stats: Counter[str] = Counter()
        self.marks = np.empty(0)  # the watermark as of each event of the batch in _process
        self.times = np.empty(0)  # and each event's ts

    # -- driving ---------------------------------------------------------------------
    def process(self, events: Sequence[Event], ts: np.ndarray | None = None) -> list[Alert]:
        """Handle a batch (event-time order); events later than the lateness bound are dropped.

        Lateness is judged per event against the watermark *as of that event in the
        sequence*, so the result never depends on where batch boundaries fall. ``ts``: the
        events' times, if the caller has them already (the pipeline does).
        """
        if not events:
            return []
        late = self.params.allowed_lateness_s  # type: ignore[attr-defined]
        if ts is None:
            ts = np.fromiter(map(_TS, events), dtype=np.float64, count=len(events))
        marks = np.maximum.accumulate(np.maximum(ts, self.watermark))
        before = np.concatenate(([self.watermark], marks[:-1]))
        keep = ts >= before - late
        newest = float(marks[-1])
        kept: Sequence[Event] = events
        if not keep.all():
            idx = np.flatnonzero(keep)
            kept = [events[i] for i in idx.tolist()]
            marks, ts = marks[idx], ts[idx]
            self.stats["late_dropped"] += len(events) - len(kept)
        self.stats["events"] += len(kept)
        self.marks, self.times = marks, ts
        alerts = self._process(kept) if kept else []
        self.watermark = newest
        return alerts

    def begin(self, t: float) -> None:
        """The stream's first event is at ``t``, before any of ``process``: a shard may get its
        own first event later, and a detector whose warm-up counts from the first event
        (burst) must count from the stream's."""

    def advance(self, watermark: float) -> list[Alert]:
        """Event time has reached ``watermark``: close windows, return their alerts."""
        if watermark > self.watermark:
            self.watermark = watermark
        return self._advance(self.watermark)

    @abstractmethod
    def _process(self, events: Sequence[Event]) -> list[Alert]:
        """Detector-specific handling of on-time events."""

    @abstractmethod
    def _advance(self, watermark: float) -> list[Alert]:
        """Detector-specific window closing."""

    # -- state -----------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """JSON-able state and numpy arrays (sketch bytes go in as uint8 arrays)."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any], arrays: list[np.ndarray]) -> None:
        """Inverse of :meth:`_state` on a freshly constructed detector."""

    def snapshot(self) -> bytes:
        state, arrays = self._state()
        header = {
            "kind": f"detector:{self.NAME}",
            "version": self.STATE_VERSION,
            "params": self.params.model_dump(mode="json"),
            "shard": list(self.shard),
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "stats": dict(self.stats),
            "state": state,
        }
        return pack(header, arrays)

    @classmethod
    def restore(cls, params: P, data: bytes, shard: Shard = WHOLE) -> Self:
        """A detector with ``params`` (and ``shard``) resuming from ``snapshot()`` bytes.

        The stored parameters must equal ``params``: state built under other windows or
        thresholds (or for other keys) is not silently reused.
        """
        header, arrays = unpack(data, kind=f"detector:{cls.NAME}", version=cls.STATE_VERSION)
        given = params.model_dump(mode="json")
        if header["params"] != given:
            diffs = sorted(
                f"{k}: stored {header['params'].get(k)!r} vs given {given.get(k)!r}"
                for k in set(given) | set(header["params"])
                if header["params"].get(k) != given.get(k)
            )
            raise IncompatibleSketchError(
                f"{cls.NAME} snapshot was taken with other parameters ({'; '.join(diffs)})"
            )
        stored = tuple(header.get("shard", WHOLE))  # absent before shards: whole
        if stored != shard:
            raise IncompatibleSketchError(
                f"{cls.NAME} snapshot was taken as shard {list(stored)} (shard, of), this is {list(shard)}"
            )
        det = cls(params, shard)
        det.watermark = -math.inf if header["watermark"] is None else header["watermark"]
        det.stats = Counter(header["stats"])
        det._load_state(header["state"], arrays)
        return det


class Router(Protocol):
    """Which events carry keys of which shard (``KeyedDetector.router``)."""

    def route(self, events: Sequence[Event], n: int) -> list[np.ndarray]:
        """For each of ``n`` shards, the indices of the events that carry its keys."""
        ...


class KeyedDetector(Detector[P]):
    """A detector whose alerts are per key, and keys never meet: it splits into shards by key
    (module docstring)."""

    SPLITS = True

    @classmethod
    @abstractmethod
    def router(cls, params: P) -> Router:
        """The key extraction alone, for whoever sends each shard its events (a worker's
        ingest): none of a detector's state or sketches (a whole burst detector holds a
        12.8 MB count-min by default)."""
