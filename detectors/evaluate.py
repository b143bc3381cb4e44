"""Score alerts against the labels of a synthetic stream (:mod:`detectors.synthetic`).

The rules, and why:

* An account is **flagged** when any alert other than ``burst`` (any revision) lists it in
  ``accounts``. A burst names a key (a hashtag, a URL), not culprits: hundreds of people
  using a trending hashtag are not each suspects, so burst alerts flag no account.
* **Positives** are the accounts of every campaign except ``hashtag_push``. A hashtag push
  is coordinated but, by design, visible only as a burst of its hashtag, so its accounts are
  neutral: flagging them costs no precision, missing them costs no recall.
  precision = flagged positives / flagged non-neutral accounts;
  recall = flagged positives / positives. Undefined values (nothing flagged, no positives)
  are ``None``.
* A campaign is **caught** when at least half its accounts are flagged, or, for
  ``hashtag_push`` only, when a burst alert's ``keys`` name one of its hashtags. Burst keys
  may be written ``tag``, ``#tag`` or ``hashtag:tag`` (case-insensitive).
* **Hard negatives**: the share of each ``organic_hard`` set's accounts that is flagged, and
  of their union. Every flagged one is also a false positive in precision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

BURST = "burst"
PUSH = "hashtag_push"


@dataclass(frozen=True)
class CampaignScore:
    id: str
    style: str
    strength: str | None
    accounts: int
    flagged: int
    caught: bool
    by_burst: bool  # caught through a burst alert on its hashtag

    @property
    def recall(self) -> float:
        return self.flagged / self.accounts if self.accounts else 0.0


@dataclass(frozen=True)
class StyleScore:
    style: str
    campaigns: int
    caught: int
    mean_recall: float


@dataclass(frozen=True)
class HardScore:
    name: str
    accounts: int
    flagged: int

    @property
    def share(self) -> float:
        return self.flagged / self.accounts if self.accounts else 0.0


@dataclass(frozen=True)
class Report:
    alerts: dict[str, int]  # alerts per type
    positives: int
    flagged: int  # every flagged account, neutral ones included
    true_positives: int
    false_positives: int
    neutral_flagged: int  # flagged hashtag_push accounts (not scored)
    campaigns: tuple[CampaignScore, ...]
    hard_negatives: tuple[HardScore, ...]
    hard_negatives_all: HardScore

    @property
    def precision(self) -> float | None:
        scored = self.true_positives + self.false_positives
        return self.true_positives / scored if scored else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.positives if self.positives else None

    @property
    def caught(self) -> int:
        return sum(c.caught for c in self.campaigns)

    @property
    def styles(self) -> tuple[StyleScore, ...]:
        by: dict[str, list[CampaignScore]] = {}
        for c in self.campaigns:
            by.setdefault(c.style, []).append(c)
        return tuple(
            StyleScore(style, len(cs), sum(c.caught for c in cs), sum(c.recall for c in cs) / len(cs))
            for style, cs in sorted(by.items())
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "accounts": {
                "positives": self.positives,
                "flagged": self.flagged,
                "true_positives": self.true_positives,
                "false_positives": self.false_positives,
                "neutral_flagged": self.neutral_flagged,
                "precision": self.precision,
                "recall": self.recall,
            },
            "campaigns_caught": self.caught,
            "campaigns": [asdict(c) | {"recall": c.recall} for c in self.campaigns],
            "styles": [asdict(s) for s in self.styles],
            "hard_negatives": [asdict(h) | {"share": h.share} for h in (*self.hard_negatives, self.hard_negatives_all)],
        }


def _hashtag(key: str) -> str:
    key = key.casefold()
    return key.removeprefix("hashtag:").removeprefix("#")


def evaluate(labels: dict[str, Any], alerts: Iterable[dict[str, Any]]) -> Report:
    """Score ``alerts`` (alert dicts, as written by replay) against ``labels`` (labels.json)."""
    types: Counter[str] = Counter()
    flagged: set[str] = set()
    burst_keys: set[str] = set()
    for alert in alerts:
        types[alert["type"]] += 1
        if alert["type"] == BURST:
            burst_keys.update(_hashtag(k) for k in alert.get("keys", ()))
        else:
            flagged.update(alert.get("accounts", ()))

    campaigns = labels.get("campaigns", {})
    positives: set[str] = set()
    neutral: set[str] = set()
    scores = []
    for cid, c in sorted(campaigns.items()):
        members = set(c["accounts"])
        (neutral if c["style"] == PUSH else positives).update(members)
        by_burst = c["style"] == PUSH and any(_hashtag(k) in burst_keys for k in c["keys"])
        hit = len(members & flagged)
        caught = by_burst or (bool(members) and 2 * hit >= len(members))
        scores.append(CampaignScore(cid, c["style"], c.get("strength"), len(members), hit, caught, by_burst))
    neutral -= positives

    hard = []
    union: set[str] = set()
    for name, h in sorted(labels.get("organic_hard", {}).items()):
        members = set(h["accounts"])
        union |= members
        hard.append(HardScore(name, len(members), len(members & flagged)))

    return Report(
        alerts=dict(sorted(types.items())),
        positives=len(positives),
        flagged=len(flagged),
        true_positives=len(flagged & positives),
        false_positives=len(flagged - positives - neutral),
        neutral_flagged=len(flagged & neutral),
        campaigns=tuple(scores),
        hard_negatives=tuple(hard),
        hard_negatives_all=HardScore("all", len(union), len(union & flagged)),
    )


def evaluate_files(labels_path: str | Path, alerts_path: str | Path) -> Report:
    """:func:`evaluate` on a ``labels.json`` and an alerts JSONL file (blank lines skipped)."""
    labels = orjson.loads(Path(labels_path).read_bytes())
    with open(alerts_path, "rb") as f:
        return evaluate(labels, (orjson.loads(line) for line in f if line.strip()))


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_report(report: Report) -> str:
    """The report as plain-text tables."""
    r = report
    lines = [
        f"accounts: {r.positives} positives, {r.flagged} flagged ({r.true_positives} true, "
        f"{r.false_positives} false, {r.neutral_flagged} hashtag_push not scored)",
        f"precision {_fmt(r.precision)}   recall {_fmt(r.recall)}",
        f"campaigns caught: {r.caught} / {len(r.campaigns)}",
        "",
        f"{'style':<16}{'campaigns':>10}{'caught':>8}{'mean recall':>13}",
    ]
    lines += [f"{s.style:<16}{s.campaigns:>10}{s.caught:>8}{s.mean_recall:>13.3f}" for s in r.styles]
    lines += ["", f"{'campaign':<18}{'style':<14}{'strength':<10}{'accounts':>9}{'flagged':>9}{'recall':>8}  caught"]
    lines += [
        f"{c.id:<18}{c.style:<14}{c.strength or '-':<10}{c.accounts:>9}{c.flagged:>9}{c.recall:>8.3f}  "
        + ("burst" if c.by_burst else "yes" if c.caught else "no")
        for c in r.campaigns
    ]
    lines += ["", f"{'hard negatives':<18}{'accounts':>9}{'flagged':>9}{'share':>8}"]
    hard = (*r.hard_negatives, r.hard_negatives_all)
    lines += [f"{h.name:<18}{h.accounts:>9}{h.flagged:>9}{h.share:>8.3f}" for h in hard]
    alerts = ", ".join(f"{t} {n}" for t, n in r.alerts.items()) or "none"
    lines += ["", f"alerts: {sum(r.alerts.values())} ({alerts})"]
    return "\n".join(lines)
