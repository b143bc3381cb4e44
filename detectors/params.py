"""Validated parameters of each detector, of the event parser and of replay.

Each section is a frozen pydantic model: every key has a default, a unit in its name
(``_s`` seconds, ``_bytes``) and a description that says what it does and what is
allowed; the descriptions feed ``coordwatch config show`` and error messages. The root
config (with ``[kafka]`` and ``[topics]``) is assembled in :mod:`streams.config`, because
those sections belong to the streaming layer.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

ObjectField = Literal["object_id", "urls", "domains", "hashtags"]
BurstKeyKind = Literal["hashtag", "url", "domain", "object", "text"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class EventsParams(Section):
    max_event_bytes: int = Field(
        1_048_576, ge=64, description="larger messages are rejected as too_large (bytes)"
    )


class CoActionParams(Section):
    enabled: bool = Field(True, description="run the co_action (coordinated sharing) detector")
    pair_window_s: float = Field(
        60.0, gt=0, description="two accounts acting on the same object within this many seconds form a pair"
    )
    memory_s: float = Field(
        21_600.0, gt=0, description="pair weights accumulate over this sliding span (seconds); >= pair_window_s"
    )
    min_weight: int = Field(3, ge=1, description="pairs with at least this many co-actions form graph edges")
    min_participation: int = Field(
        2, ge=1, description="accounts with fewer object actions than this are ignored (CooRTweet min_participation)"
    )
    edge_weight_quantile: float | None = Field(
        None, ge=0, le=1, description="if set, keep only edges strictly above this quantile of all pair weights (CooRTweet edge_weight)"
    )
    min_group_size: int = Field(3, ge=2, description="connected groups smaller than this raise no alert")
    max_fanout: int = Field(
        50, ge=1, description="a new action pairs with at most this many earlier distinct accounts on the object (bounds viral objects)"
    )
    object_fields: list[ObjectField] = Field(
        default_factory=lambda: ["object_id", "urls"],
        min_length=1,
        description="which event fields name the shared object: object_id, urls, domains, hashtags",
    )
    max_alert_accounts: int = Field(500, ge=1, description="alerts list at most this many member accounts")
    allowed_lateness_s: float = Field(60.0, ge=0, description="events up to this late are handled; later ones are counted and dropped")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _require(
            self.memory_s >= self.pair_window_s,
            f"co_action.memory_s = {self.memory_s} is shorter than co_action.pair_window_s = "
            f"{self.pair_window_s}: set memory_s >= pair_window_s",
        )
        return self


class NearDuplicateParams(Section):
    enabled: bool = Field(True, description="run the near_duplicate (copy-paste) detector")
    window_s: float = Field(3_600.0, gt=0, description="documents within this many seconds of each other are compared")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity at or above which two texts are near-duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations per signature")
    shingle_kind: Literal["word", "char"] = Field("word", description="shingle over words or characters")
    shingle_n: int = Field(2, ge=1, le=16, description="shingle length (words or characters)")
    min_tokens: int = Field(6, ge=1, description="texts with fewer tokens are skipped (short texts would flood it)")
    min_accounts: int = Field(5, ge=2, description="a cluster needs this many distinct accounts to raise an alert")
    lsh_bands: int | None = Field(None, ge=1, description="LSH bands; unset = chosen from threshold (set with lsh_rows)")
    lsh_rows: int | None = Field(None, ge=1, description="LSH rows per band; unset = chosen from threshold (set with lsh_bands)")
    max_samples: int = Field(5, ge=1, description="sample posts carried as evidence in an alert")
    seed: int = Field(1, ge=0, description="MinHash permutation seed (stored with every signature)")
    allowed_lateness_s: float = Field(60.0, ge=0, description="events up to this late are handled; later ones are counted and dropped")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _require(
            (self.lsh_bands is None) == (self.lsh_rows is None),
            f"near_duplicate.lsh_bands = {self.lsh_bands} and near_duplicate.lsh_rows = "
            f"{self.lsh_rows}: set both or neither",
        )
        if self.lsh_bands is not None and self.lsh_rows is not None:
            _require(
                self.lsh_bands * self.lsh_rows <= self.num_perm,
                f"near_duplicate.lsh_bands * lsh_rows = {self.lsh_bands * self.lsh_rows} exceeds "
                f"near_duplicate.num_perm = {self.num_perm}: lower bands/rows or raise num_perm",
            )
        return self


class BurstParams(Section):
    enabled: bool = Field(True, description="run the burst detector")
    pane_s: float = Field(300.0, gt=0, description="counting pane (seconds): the current pane is tested against earlier ones")
    window_s: float = Field(3_600.0, gt=0, description="span of panes kept (current + baseline), a multiple of pane_s")
    key_kinds: list[BurstKeyKind] = Field(
        default_factory=lambda: ["hashtag", "url", "domain", "object"],
        min_length=1,
        description="what is counted: hashtag, url, domain, object, text (fingerprint)",
    )
    min_count: int = Field(20, ge=1, description="a burst needs at least this many events in the current pane")
    min_accounts: int = Field(10, ge=1, description="a burst needs at least this many distinct accounts")
    max_p_value: float = Field(1e-6, gt=0, lt=1, description="alert when the count's tail probability under the baseline is below this")
    prior_rate_per_pane: float = Field(0.5, gt=0, description="expected count per pane for keys with no history")
    cms_epsilon: float = Field(1e-4, gt=0, lt=1, description="count-min over-count bound as a share of the window's events")
    cms_delta: float = Field(1e-3, gt=0, lt=1, description="probability that a count exceeds the epsilon bound")
    conservative_update: bool = Field(True, description="count-min conservative update (smaller over-counts)")
    hll_precision: int = Field(10, ge=4, le=16, description="HyperLogLog precision for distinct accounts per key")
    allowed_lateness_s: float = Field(60.0, ge=0, description="events up to this late are handled; later ones are counted and dropped")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _require(
            self.pane_s <= self.window_s,
            f"burst.pane_s = {self.pane_s} is longer than burst.window_s = {self.window_s}: "
            "pane_s must be <= window_s",
        )
        panes = self.window_s / self.pane_s
        _require(
            abs(panes - round(panes)) < 1e-9 and round(panes) >= 2,
            f"burst.window_s = {self.window_s} is not a multiple (>= 2x) of burst.pane_s = "
            f"{self.pane_s}: the window is a whole number of panes (current + baseline)",
        )
        return self


class ReplayParams(Section):
    batch_size: int = Field(10_000, ge=1, description="events handed to the detectors per batch")
    progress: bool = Field(True, description="show a progress bar on stderr")


class LinkingParams(Section):
    tick_s: float = Field(
        10.0, gt=0, description="event-time step at which detector outputs are collected, ordered and linked"
    )
    min_shared_accounts: int = Field(
        3, ge=1, description="alerts of different detectors sharing this many accounts are linked (related)"
    )
    memory_s: float = Field(86_400.0, gt=0, description="how long an alert stays linkable (event time, seconds)")
