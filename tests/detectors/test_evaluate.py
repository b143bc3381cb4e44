"""Evaluation against hand-made labels and alerts with known scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from detectors.evaluate import evaluate, evaluate_files, format_report

LABELS = {
    "campaigns": {
        "cp": {"style": "copy_paste", "strength": "strong", "accounts": ["a1", "a2", "a3", "a4"], "keys": ["tpl:1"]},
        "lr": {"style": "link_ring", "strength": "weak", "accounts": ["b1", "b2"], "keys": ["https://x.example/1"]},
        "rr": {"style": "retweet_ring", "accounts": ["r1", "r2", "r3"], "keys": ["p1"]},
        "hp": {"style": "hashtag_push", "accounts": ["h1", "h2", "h3"], "keys": ["pushtag"]},
        "hp2": {"style": "hashtag_push", "accounts": ["h4", "h5"], "keys": ["othertag"]},
    },
    "organic_hard": {
        "viral_url": {"accounts": ["v1", "v2", "v3", "v4"], "keys": ["https://viral.example/1"]},
        "meme_text": {"accounts": ["m1", "m2"], "keys": ["tpl:2"]},
    },
    "params": {},
}


def alert(type_: str, accounts: list[str], keys: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    return {"type": type_, "accounts": accounts, "keys": list(keys)}


ALERTS = [
    alert("co_action", ["a1", "a2", "b1", "v1", "x9"]),
    alert("near_duplicate", ["a3", "h1", "m1"]),
    alert("co_action", ["r1"]),
    # burst: names the pushed hashtag (any case, with '#'); its accounts flag nobody,
    # and a burst on a link_ring URL catches nothing
    alert("burst", ["h2", "v2", "r2", "r3"], ["#PushTag", "https://x.example/1"]),
]


def test_known_precision_recall_and_caught() -> None:
    r = evaluate(LABELS, ALERTS)
    # positives: a1-a4, b1-b2, r1-r3 (hashtag_push accounts are neutral)
    assert r.positives == 9
    assert r.flagged == 9  # a1 a2 a3 b1 r1 v1 x9 m1 h1
    assert (r.true_positives, r.false_positives, r.neutral_flagged) == (5, 3, 1)
    assert r.precision == 5 / 8
    assert r.recall == 5 / 9
    by_id = {c.id: c for c in r.campaigns}
    assert {k: (c.flagged, c.caught, c.by_burst) for k, c in by_id.items()} == {
        "cp": (3, True, False),  # 3/4
        "lr": (1, True, False),  # exactly half is enough
        "rr": (1, False, False),  # 1/3 is not, and burst keys do not count for rings
        "hp": (1, True, True),  # caught by the burst on its hashtag
        "hp2": (0, False, False),
    }
    assert by_id["cp"].recall == 0.75
    assert r.caught == 3
    styles = {s.style: (s.campaigns, s.caught, s.mean_recall) for s in r.styles}
    assert styles == {
        "copy_paste": (1, 1, 0.75),
        "hashtag_push": (2, 1, (1 / 3 + 0.0) / 2),
        "link_ring": (1, 1, 0.5),
        "retweet_ring": (1, 0, 1 / 3),
    }
    assert r.alerts == {"burst": 1, "co_action": 2, "near_duplicate": 1}


def test_hard_negative_share() -> None:
    r = evaluate(LABELS, ALERTS)
    assert {h.name: (h.accounts, h.flagged, h.share) for h in r.hard_negatives} == {
        "meme_text": (2, 1, 0.5),
        "viral_url": (4, 1, 0.25),  # v2 is only named by a burst alert
    }
    assert (r.hard_negatives_all.accounts, r.hard_negatives_all.flagged) == (6, 2)
    assert r.hard_negatives_all.share == 2 / 6


def test_burst_key_forms_and_revisions() -> None:
    alerts = [
        alert("burst", [], ["hashtag:OTHERTAG"]),
        alert("burst", [], ["pushtag"]),
        # two revisions of one group: the union of their accounts counts
        alert("co_action", ["b1"]),
        alert("co_action", ["b1", "b2", "r1", "r2"]),
    ]
    r = evaluate(LABELS, alerts)
    caught = {c.id: c.caught for c in r.campaigns}
    assert caught == {"cp": False, "hp": True, "hp2": True, "lr": True, "rr": True}
    assert (r.precision, r.recall) == (1.0, 4 / 9)


def test_nothing_flagged_is_undefined_precision() -> None:
    r = evaluate(LABELS, [])
    assert r.precision is None and r.recall == 0.0 and r.caught == 0
    assert r.to_dict()["accounts"]["precision"] is None
    assert evaluate({"campaigns": {}, "organic_hard": {}}, []).recall is None


def test_files_dict_and_text(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_bytes(orjson.dumps(LABELS))
    (tmp_path / "alerts.jsonl").write_bytes(b"\n".join(map(orjson.dumps, ALERTS)) + b"\n\n")
    r = evaluate_files(tmp_path / "labels.json", tmp_path / "alerts.jsonl")
    assert r == evaluate(LABELS, ALERTS)
    d = orjson.loads(orjson.dumps(r.to_dict()))
    assert d["accounts"]["precision"] == 5 / 8 and d["campaigns_caught"] == 3
    assert d["hard_negatives"][-1] == {"name": "all", "accounts": 6, "flagged": 2, "share": 2 / 6}
    text = format_report(r)
    assert "precision 0.625   recall 0.556" in text
    assert "campaigns caught: 3 / 5" in text
    assert "hp                hashtag_push  -                 3        1   0.333  burst" in text
    assert "viral_url                 4        1   0.250" in text
    assert "alerts: 4 (burst 1, co_action 2, near_duplicate 1)" in text
