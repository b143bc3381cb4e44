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
    max_ahead_s: float = Field(
        60.0, ge=0, description="events dated more than this after their message was received (its Kafka timestamp; "
        "replay: its start) are rejected as future_ts: kept, one would make the on-time events after it late. At most "
        "the detectors' allowed_lateness_s; 0 = no check (seconds)",
    )


class CoActionParams(Section):
    enabled: bool = Field(True, description="run the co_action (coordinated sharing) detector")
    pair_window_s: float = Field(
        30.0, gt=0, description="two accounts acting on the same object within this many seconds form a pair"
    )
    memory_s: float = Field(
        21_600.0, gt=0, description="pair weights accumulate over this sliding span (seconds); >= pair_window_s"
    )
    min_weight: int = Field(2, ge=1, description="pairs with at least this many co-actions may form graph edges ...")
    max_p_value: float = Field(
        1e-6,
        gt=0,
        le=1,
        description="... if that many are improbable by chance: Poisson tail P(X >= weight) with mean n_a * n_b * rho "
        "(each account's object actions in memory, rho the stream's chance pair rate) at most this; 1 = off",
    )
    min_participation: int = Field(
        1,
        ge=1,
        description="a pair counts only if both accounts have this many object actions in memory and one of them this "
        "many in co-actions (CooRTweet min_participation; with participation_scope); 1 = off",
    )
    edge_weight_quantile: float | None = Field(
        None, ge=0, le=1, description="if set, keep only edges strictly above this quantile of all pair weights (CooRTweet edge_weight)"
    )
    min_group_size: int = Field(3, ge=2, description="connected groups smaller than this raise no alert")
    max_fanout: int = Field(
        50,
        ge=0,
        description="a new action pairs with at most this many most-recent distinct accounts on the object "
        "(bounds viral objects); 0 = every action in the window (peer parity)",
    )
    max_object_actions: int = Field(
        1000,
        ge=0,
        description="an object with this many actions in the last memory_s is viral: its further actions pair with "
        "nobody (bounds one object's pairs to about this x max_fanout); 0 = no cap (peer parity)",
    )
    object_fields: list[ObjectField] = Field(
        default_factory=lambda: ["object_id", "urls"],
        min_length=1,
        description="which event fields name the shared object: object_id, urls, domains, hashtags",
    )
    object_types: list[str] | None = Field(
        None, description="if set, object_id counts only for events whose object_type is listed (e.g. [\"url\", \"phash\"])"
    )
    weight_mode: Literal["distinct_objects", "share_pairs", "distinct_contents"] = Field(
        "distinct_objects",
        description="distinct_objects: a pair's weight counts the objects both acted on within pair_window_s (a like, "
        "a retweet and a reply of one post are one); share_pairs: pairs of shares (CooRTweet); distinct_contents: the "
        "larger of the two accounts' counts of distinct posts co-shared with the other (coordination-network-toolkit)",
    )
    participation_scope: Literal["all", "object_type"] = Field(
        "all",
        description="count min_participation over all objects, or per object_type (CooRTweet run once per object type)",
    )
    one_object_actions: list[str] = Field(
        default_factory=list,
        description="events with these actions count only the first object of their post (content_id); a retweet "
        "reposts one post (coordination-network-toolkit keeps one repost_id per message)",
    )
    eval_interval_s: float = Field(
        60.0, gt=0, description="groups are evaluated when event time crosses a multiple of this many seconds"
    )
    split_above_accounts: int = Field(
        200, ge=2, description="connected groups larger than this are split into Louvain communities (fixed seed)"
    )
    update_growth_fraction: float = Field(
        0.2, gt=0, description="a known group is re-alerted (revision + 1) once it has this share more members than at its last alert"
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
    window_s: float = Field(
        3_600.0, gt=0, description="documents within this many seconds of each other are compared; clusters expire with it"
    )
    threshold: float = Field(
        0.5, gt=0, le=1, description="estimated Jaccard similarity (of shingle sets) at or above which two texts are near-duplicates"
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations per signature")
    shingle_kind: Literal["word", "char"] = Field("word", description="shingle over words or characters")
    shingle_n: int = Field(2, ge=1, le=16, description="shingle length (words or characters)")
    min_tokens: int = Field(6, ge=1, description="texts with fewer tokens are skipped (short texts would flood it)")
    text_actions: list[str] = Field(
        default_factory=lambda: ["post", "reply", "quote", "comment"],
        min_length=1,
        description="actions whose text is compared (retweets and shares repeat their source's text by design)",
    )
    min_accounts: int = Field(5, ge=2, description="a cluster needs this many distinct accounts to raise an alert")
    burst_span_s: float = Field(
        120.0, gt=0, description="a wave: the cluster's distinct accounts within this many seconds (<= window_s)"
    )
    min_burst_accounts: int = Field(
        10, ge=2, description="a wave alerts when at least this many distinct accounts post within burst_span_s ..."
    )
    min_burst_share: float = Field(
        0.5, ge=0, le=1, description="... and they are at least this share of the cluster's accounts (a meme trickles, a wave does not)"
    )
    repeat_memory_s: float = Field(
        21_600.0, gt=0, description="an account's near-duplicate posts are remembered this long (seconds) to spot repeat posters"
    )
    min_repeat_share: float = Field(
        0.3, gt=0, le=1, description="or the cluster alerts when this share of its accounts also posted near-duplicates in an earlier wave"
    )
    min_link_accounts: int = Field(
        2,
        ge=1,
        description="a cluster is linked to an earlier one within repeat_memory_s (and counts its accounts) once this "
        "many accounts posted in both ...",
    )
    min_link_share: float = Field(
        0.25, gt=0, le=1, description="... and they are at least this share of the earlier cluster's own accounts"
    )
    update_growth: float = Field(
        0.2, gt=0, description="an alerted cluster is re-sent (revision + 1) once its accounts not yet alerted reach this share of those alerted"
    )
    lsh_bands: int | None = Field(
        None, ge=1, description="LSH bands; unset = chosen from threshold, at most max_lsh_bands (set with lsh_rows)"
    )
    lsh_rows: int | None = Field(None, ge=1, description="LSH rows per band; unset = chosen from threshold (set with lsh_bands)")
    max_lsh_bands: int = Field(
        10, ge=1, description="cap on the bands chosen from threshold: each band costs rows MinHash columns per text; rows keep their chosen value"
    )
    max_bucket_candidates: int = Field(
        16, ge=1, description="a new text is compared with at most this many most recent texts of each LSH bucket it shares"
    )
    max_samples: int = Field(5, ge=1, description="sample posts carried as evidence in an alert")
    max_alert_accounts: int = Field(500, ge=1, description="alerts list at most this many accounts (most posts first)")
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
        _require(
            self.burst_span_s <= self.window_s,
            f"near_duplicate.burst_span_s = {self.burst_span_s} is longer than near_duplicate.window_s = "
            f"{self.window_s}: a wave must fit in the window",
        )
        return self


class BurstParams(Section):
    enabled: bool = Field(True, description="run the burst detector")
    pane_s: float = Field(300.0, gt=0, description="counting pane (seconds): the current pane is tested against earlier ones")
    window_s: float = Field(3_600.0, gt=0, description="span of panes kept (current + baseline), a multiple of pane_s")
    key_kinds: list[BurstKeyKind] = Field(
        default_factory=lambda: ["hashtag", "url", "object"],
        min_length=1,
        description="what is counted: hashtag, url, domain, object, text (fingerprint); domain is opt-in: on the "
        "generator mix 131 of its 134 alerts a day came with an alert on a URL of that domain in the same pane",
    )
    min_count: int = Field(
        20, ge=1, description="a burst needs at least this many events in the current pane (its wave, its span)"
    )
    min_accounts: int = Field(10, ge=1, description="a burst needs at least this many distinct accounts")
    max_p_value: float = Field(
        1e-6, gt=0, lt=1, description="alert when the count's Poisson tail probability under the baseline is at or below this"
    )
    prior_rate_per_pane: float = Field(
        0.5,
        gt=0,
        description="floor of the expected count per pane (events), used for keys with no or little history: "
        "0.5 lies between the 95% upper rates of a key unseen for 3 panes (1.0) and for 11 panes (0.27)",
    )
    min_history_panes: int = Field(
        3, ge=1, description="no alerts until this many earlier panes were seen (on a cold start every key looks new)"
    )
    wave_kinds: list[BurstKeyKind] = Field(
        default_factory=lambda: ["url", "domain", "object"],
        description="key kinds whose pane test counts only the key's trailing wave_s (within the pane): the "
        "critical count must come as a wave (rings act on a URL or post within seconds, organic popularity "
        "accrues over minutes)",
    )
    wave_s: float = Field(120.0, gt=0, description="span of the wave test (seconds), at most pane_s")
    span_panes: int = Field(
        6,
        ge=1,
        description="span test: the exact count of the last span_panes panes (the current one included) against "
        "span_panes x the per-pane baseline of the window panes before them, so a push spread thinly over "
        "span_panes x pane_s shows; 1 turns it off",
    )
    span_min_ratio: float = Field(
        5.0,
        ge=1,
        description="the span test also needs the span count to be at least this many times its expected count: "
        "organic hashtags drift with the daily rhythm by more than a Poisson allows (x1.3-4 within an hour here)",
    )
    span_kinds: list[BurstKeyKind] = Field(
        default_factory=lambda: ["hashtag"],
        description="key kinds that also get the span test (organic posts and URLs accumulate slowly by nature)",
    )
    cms_epsilon: float = Field(1e-4, gt=0, lt=1, description="count-min over-count bound as a share of the window's events")
    cms_delta: float = Field(1e-3, gt=0, lt=1, description="probability that a count exceeds the epsilon bound")
    conservative_update: bool = Field(True, description="count-min conservative update (smaller over-counts)")
    max_samples: int = Field(5, ge=1, description="sample posts carried as evidence in an alert")
    max_alert_accounts: int = Field(100, ge=1, description="alerts list at most this many accounts (most posts first)")
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
        _require(
            self.min_history_panes < round(panes),
            f"burst.min_history_panes = {self.min_history_panes} needs more baseline panes than "
            f"burst.window_s / pane_s - 1 = {round(panes) - 1}: lower it or widen the window",
        )
        _require(
            self.wave_s <= self.pane_s,
            f"burst.wave_s = {self.wave_s} is longer than burst.pane_s = {self.pane_s}: a wave lies within a pane",
        )
        _require(
            self.span_panes == 1 or self.span_panes + self.min_history_panes <= round(panes),
            f"burst.span_panes = {self.span_panes} leaves fewer than min_history_panes = {self.min_history_panes} "
            f"baseline panes before the span in burst.window_s / pane_s = {round(panes)} panes: "
            "lower one of them or widen the window",
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
