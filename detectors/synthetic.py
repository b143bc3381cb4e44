"""A labelled synthetic event stream: organic background, hard negatives, injected campaigns.

Real datasets carry no account-level ground truth, so detectors are tuned and regression-
tested here: every coordinated account and every look-alike-but-innocent account is known.

* **Organic background** (a Poisson stream of ``rate`` events/s on a daily sine rhythm,
  peak 15:00 UTC, trough 03:00): account activity is lognormal (heavy-tailed: the top 1 %
  make ~20 % of events); retweets, likes, replies and quotes target earlier posts of the
  stream, shares target URLs of a catalogue on a few hundred domains, both picked by a
  Pareto appeal times an age decay, so a few objects are popular at any moment and
  organic accounts co-share them by chance. Texts are 8-40 words of a Zipf vocabulary of
  4,000 synthetic words, sometimes with hashtags (Zipf) or a URL inside.
* **Hard negatives** (``labels["organic_hard"]``, must not be flagged): a viral URL shared
  once each by 400 unrelated accounts within an hour, a meme text posted once each (with
  small edits) by 150 people over up to 6 h, a live-event hashtag used by 400 accounts
  within 30 min.
* **Campaigns** (``labels["campaigns"]``, :data:`STYLE_COUNTS` of each style, strengths
  strong/medium/weak in turn, see :data:`STRENGTH_PARAMS`). Members are ordinary accounts of
  the population, so they also act organically.

  - ``copy_paste``: waves of 1-3 template texts (often carrying a new hashtag or URL), each
    wave posted with a few random edits by most members within minutes;
  - ``link_ring``: new URLs, each shared by most members within 10-60 s;
  - ``retweet_ring`` / ``like_ring``: members' posts, retweeted (liked) by the other members
    5-300 s later, within 5-40 s of each other;
  - ``hashtag_push``: a new hashtag posted 1-3 times by every member within 10-30 min
    (visible only as a burst of the hashtag);
  - ``slow_ring``: 2-4 new URLs an hour over 8-16 h, each shared by members 1-5 s apart.

``labels.json``: ``campaigns`` ``{id: {style, strength, accounts (those that took part),
keys (URLs, seed-post event ids, hashtags, "tpl:" fingerprints of copy_paste templates),
t0, t1 (first and last event), events, style parameters}}``, ``organic_hard`` ``{name:
{kind, accounts, keys, t0, t1, events}}`` and ``params`` (arguments and parameter tables).

Defaults (:func:`generate`): 24 h at 8 organic events/s over 20,000 accounts: 0.69 M
events (about 11k of them injected) and 20 campaigns, written in about 3.5 s. ``rate`` is
the mean before an account's repeated like/retweet/share/follow of one target is dropped
(2 % of events at the default rate, 7 % at 50/s). Measured: ``rate=11.8`` gives 1.0 M events
in 4.5 s (82 MB peak RSS), ``rate=50`` 4.0 M in 19.5 s (190 MB). Everything comes from one
``numpy`` PCG64 seed and seeded hashing (never Python's ``hash()``), so the same arguments
give byte-identical files. The organic stream is generated and written in 5-minute chunks,
so memory does not grow with the stream's length (72 h at the default rate: 86 MB).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from sketches.hashing import hash_string, hash_u64, splitmix64

DEFAULT_SEED = 0
DEFAULT_HOURS = 24.0
DEFAULT_RATE = 8.0  # mean organic events/s (before repeated likes/shares are dropped)
DEFAULT_ACCOUNTS = 20_000
DEFAULT_START = 1_700_006_400  # 2023-11-15T00:00:00Z

#: Campaigns of each style; the i-th of a style has strength STRENGTHS[i % 3].
STYLE_COUNTS = {"copy_paste": 4, "link_ring": 4, "retweet_ring": 3, "like_ring": 3, "hashtag_push": 3, "slow_ring": 3}
STRENGTHS = ("strong", "medium", "weak")
#: Per strength: group size range, share of the group taking part in each repetition,
#: repetitions (waves / URLs / seed posts), timing spread in seconds (copy_paste: a wave
#: is posted within it; link_ring: shares of one URL fall within it; rings: actions on one
#: post fall within it), mean edits per copy_paste text, slow_ring objects per hour and
#: hashtag_push span (s) and group size.
STRENGTH_PARAMS: dict[str, dict[str, Any]] = {
    "strong": {"size": (35, 60), "p": 0.9, "reps": 40, "waves": 8, "spread_s": 120, "ring_spread_s": 5,
               "link_spread_s": 10, "edits": 1.0, "per_hour": 4, "push_span_s": 600, "push_size": 60},
    "medium": {"size": (15, 35), "p": 0.7, "reps": 20, "waves": 5, "spread_s": 300, "ring_spread_s": 15,
               "link_spread_s": 30, "edits": 2.0, "per_hour": 3, "push_span_s": 1200, "push_size": 40},
    "weak": {"size": (8, 15), "p": 0.5, "reps": 10, "waves": 3, "spread_s": 900, "ring_spread_s": 40,
             "link_spread_s": 60, "edits": 3.5, "per_hour": 2, "push_span_s": 1800, "push_size": 25},
}
#: Campaign duration range in hours on a 24 h stream (shorter streams scale it down).
DURATION_H = {
    "copy_paste": (3, 10), "link_ring": (3, 10), "retweet_ring": (2, 8), "like_ring": (2, 8), "slow_ring": (8, 16),
}
HARD_SIZES = {"viral_url": 400, "meme_text": 150, "live_hashtag": 400}

ACTIONS = ("post", "share", "retweet", "like", "reply", "quote", "follow")
_ACTION_P = np.array([0.28, 0.14, 0.22, 0.24, 0.07, 0.02, 0.03])
_POST, _SHARE, _RETWEET, _LIKE, _REPLY, _QUOTE, _FOLLOW = range(7)
_ENGAGE = np.array([_RETWEET, _LIKE, _REPLY, _QUOTE])
_ONCE = np.array([_RETWEET, _LIKE, _SHARE, _FOLLOW])  # an account does these once per target
_ACTION_CUM = np.cumsum(_ACTION_P)
_ACTION_NAMES = np.array(ACTIONS, dtype=object)
_CHUNK_MS = 300_000
_POST_TAU_MS, _POST_LOOKBACK_MS = 2 * 3_600_000, 8 * 3_600_000
_URL_TAU_MS, _URL_LOOKBACK_MS = 4 * 3_600_000, 12 * 3_600_000
_SHARES_PER_URL = 6.0
_VOCAB, _TAGS, _DOMAINS = 4_000, 1_500, 300
_EMOJI = ("🔥", "👉", "‼️", "💯", "🙏", "😡", "👇", "🚨")
_SECTIONS = ("news", "politics", "world", "opinion", "video", "story", "p")
_UTM = "?utm_source=tw&utm_medium=social"


def _zipf_cum(n: int, s: float = 1.07, q: float = 2.7) -> np.ndarray:
    """Cumulative Zipf-Mandelbrot weights of ranks 0..n-1 (rank 0 most frequent)."""
    return np.cumsum(1.0 / (np.arange(n) + q) ** s)


def _draw(rng: np.random.Generator, cum: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices drawn with the weights whose cumulative sum is ``cum``."""
    if not size:
        return np.zeros(0, dtype=np.int64)
    idx = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(idx, cum.size - 1)


def _ids(kind: int, counters: np.ndarray, seed: int) -> np.ndarray:
    """Event ids: a seeded bijection of (counter, kind), so ids are unique and carry no
    hint of whether an event is organic (kind 0) or injected (kind 1)."""
    return hash_u64(counters.astype(np.uint64) * np.uint64(2) + np.uint64(kind), seed)


class _World:
    """The static catalogue: accounts and their activity, vocabulary, hashtags, domains and
    the URL catalogue (URLs are born over time and shared while fresh)."""

    def __init__(self, rng: np.random.Generator, accounts: int, start_ms: int, end_ms: int, rate: float) -> None:
        width = len(str(accounts - 1))
        self.names = np.array([f"u{i:0{width}d}" for i in range(accounts)], dtype=object)
        self.activity_cum = np.cumsum(np.exp(1.6 * np.clip(rng.standard_normal(accounts), -3.5, 3.5)))
        self.words = sorted(_pseudo_words(rng, _VOCAB, 1, 4), key=len)  # frequent words are short
        self.word_cum = _zipf_cum(_VOCAB)
        self.tags = _pseudo_words(rng, _TAGS, 2, 4)
        self.tag_cum = _zipf_cum(_TAGS, s=1.2, q=1.0)
        tlds = ("example", "example.com", "example.org", "example.net")
        self.domains = [("www." if i % 3 == 0 else "") + f"{w}.{tlds[i % 4]}"
                        for i, w in enumerate(_pseudo_words(rng, _DOMAINS, 2, 3))]
        self.domain_cum = _zipf_cum(_DOMAINS, s=1.0, q=1.0)
        lo = start_ms - _URL_LOOKBACK_MS
        n_urls = max(1, int(rng.poisson(rate * _ACTION_P[_SHARE] / _SHARES_PER_URL * (end_ms - lo) / 1000)))
        self.url_born = np.sort(rng.integers(lo, end_ms, n_urls))
        self.url_appeal = rng.pareto(1.2, n_urls) + 0.1
        self.urls = np.array([self.url(int(d), int(n)) for d, n in zip(
            _draw(rng, self.domain_cum, n_urls), rng.integers(10**6, 10**7, n_urls))], dtype=object)
        self.urls_utm = np.array([u + _UTM for u in self.urls], dtype=object)
        tokens = self.words + ["#" + t for t in self.tags] + list(self.urls)
        self.tok_space = np.array([t + " " for t in tokens], dtype=object)
        self.tok_end = np.array([t + "\n" for t in tokens], dtype=object)

    def url(self, domain: int, number: int) -> str:
        return f"https://{self.domains[domain]}/{_SECTIONS[number % len(_SECTIONS)]}/{number}"

    def texts(
        self, rng: np.random.Generator, lengths: np.ndarray, n_tags: np.ndarray, url_idx: np.ndarray
    ) -> list[str]:
        """Texts of ``lengths`` Zipf words, then ``n_tags`` hashtags, then the catalogue URL
        ``url_idx`` (-1: none), built in one join instead of a Python loop per text."""
        extra = n_tags + (url_idx >= 0)
        sizes = lengths + extra
        starts = np.cumsum(sizes) - sizes
        seg = np.repeat(np.arange(sizes.size), sizes)
        pos = np.arange(seg.size) - starts[seg]
        codes = np.empty(seg.size, dtype=np.int64)
        words = pos < lengths[seg]
        tags = ~words & (pos < (lengths + n_tags)[seg])
        urls = ~words & ~tags
        codes[words] = _draw(rng, self.word_cum, int(words.sum()))
        codes[tags] = _VOCAB + _draw(rng, self.tag_cum, int(tags.sum()))
        codes[urls] = _VOCAB + _TAGS + url_idx[seg[urls]]
        last = pos == sizes[seg] - 1
        joined = "".join(np.where(last, self.tok_end[codes], self.tok_space[codes]).tolist())
        return joined.split("\n")[:-1]


def _pseudo_words(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    """``n`` distinct pronounceable words of ``lo``..``hi`` consonant-vowel syllables."""
    cons, vows = np.array(list("bcdfghjklmnprstvz")), np.array(list("aeiouy"))
    out: dict[str, None] = {}
    while len(out) < n:
        m = 2 * n
        syl = np.char.add(rng.choice(cons, (m, hi)), rng.choice(vows, (m, hi)))
        tail = np.where(rng.random(m) < 0.4, rng.choice(cons, m), "")
        k = rng.integers(lo, hi + 1, m)
        for row, kk, t in zip(syl.tolist(), k.tolist(), tail.tolist()):
            out.setdefault("".join(row[:kk]) + t, None)
    return list(out)[:n]


class _Planner:
    """Plans hard negatives and campaigns up front (they are small) as one event table, and
    builds the labels from it."""

    def __init__(self, rng: np.random.Generator, world: _World, start_ms: int, end_ms: int, id_seed: int) -> None:
        self.rng, self.w, self.start_ms, self.end_ms, self.id_seed = rng, world, start_ms, end_ms, id_seed
        self.span_s = (end_ms - start_ms) / 1000
        self.cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])  # ts_ms acc action text url obj source
        self.source = -1  # index of the label group being planned (hard negatives, then campaigns)
        self.free = list(rng.permutation(len(world.names)).tolist())
        self.used = set(world.tags) | set(world.urls.tolist())  # new tags and URLs must be new

    # -- helpers --------------------------------------------------------------------------
    def add(self, ts: float, acc: int, action: str, text: str | None = None, url: str | None = None,
            obj: str | None = None) -> str:
        """Record one event; returns its event id (so rings can reference a seed post)."""
        k = len(self.cols[0])
        ts_ms = min(max(round(ts * 1000), self.start_ms), self.end_ms - 1)
        for col, v in zip(self.cols, (ts_ms, acc, action, text, url, obj, self.source)):
            col.append(v)
        return f"{int(_ids(1, np.array([k]), self.id_seed)[0]):016x}"

    def take(self, n: int) -> np.ndarray:
        """``n`` accounts not yet used by another campaign or hard-negative set."""
        out, self.free = self.free[:n], self.free[n:]
        return np.array(out, dtype=np.int64)

    def place(self, dur_s: float) -> float:
        """A start time such that ``dur_s`` fits in the stream, 2 % margins."""
        room = max(0.0, 0.96 * self.span_s - dur_s)
        return self.start_ms / 1000 + 0.02 * self.span_s + self.rng.uniform(0, room)

    def duration(self, style: str) -> float:
        lo, hi = DURATION_H[style]
        return self.rng.uniform(lo, hi) * 3600 * min(1.0, self.span_s / 86_400)

    def subset(self, members: np.ndarray, p: float, at_least: int) -> np.ndarray:
        """Members taking part in one repetition: each with probability ``p``, at least ``at_least``."""
        mask = self.rng.random(members.size) < p
        if mask.sum() < at_least:
            mask[self.rng.choice(members.size, min(at_least, members.size), replace=False)] = True
        return self.rng.permutation(members[mask])

    def words(self, lo: int, hi: int) -> str:
        n = int(self.rng.integers(lo, hi + 1))
        return " ".join(self.w.words[i] for i in _draw(self.rng, self.w.word_cum, n).tolist())

    def new_tag(self) -> str:
        """A hashtag never used before (two vocabulary words, like organic compound tags)."""
        while (tag := self.words(2, 2).replace(" ", "")) in self.used:
            pass
        self.used.add(tag)
        return tag

    def new_url(self, domain: int) -> str:
        """A URL outside the organic catalogue and not used by another campaign."""
        while (url := self.w.url(domain, int(self.rng.integers(10**6, 10**7)))) in self.used:
            pass
        self.used.add(url)
        return url

    def share_url(self, url: str) -> str:
        """``url`` as a member shares it: a third add tracking parameters (same canonical URL)."""
        return url + _UTM if self.rng.random() < 0.3 else url

    def mutate(self, text: str, mean_edits: float) -> str:
        """``text`` with a Poisson number of edits: word swapped, dropped or added, case
        changed, emoji or hashtag appended (URLs are left intact)."""
        rng, toks = self.rng, text.split(" ")
        for _ in range(int(rng.poisson(mean_edits))):
            op, i = int(rng.integers(6)), int(rng.integers(len(toks)))
            if "://" in toks[i] and op < 3:
                continue
            if op == 0:
                toks[i] = self.words(1, 1)
            elif op == 1 and len(toks) > 6:
                del toks[i]
            elif op == 2:
                toks.insert(i, self.words(1, 1))
            elif op == 3:
                case = (str.upper, str.lower, str.capitalize)[int(rng.integers(3))]
                toks = [t if "://" in t else case(t) for t in toks]
            elif op == 4:
                toks.append(_EMOJI[int(rng.integers(len(_EMOJI)))])
            else:
                toks.append("#" + self.w.tags[int(_draw(rng, self.w.tag_cum, 1)[0])])
        return " ".join(toks)

    def begin(self) -> None:
        """Start the next label group: the events added from now on belong to it."""
        self.source += 1

    # -- hard negatives -------------------------------------------------------------------
    def hard_negatives(self) -> dict[str, dict[str, Any]]:
        rng, span, t_start = self.rng, self.span_s, self.start_ms / 1000
        out: dict[str, dict[str, Any]] = {}

        self.begin()
        url = self.new_url(int(rng.integers(10)))
        t = t_start + 0.35 * span
        for a in self.take(HARD_SIZES["viral_url"]).tolist():  # truncated exponential, mean ~14 min
            dt = -900 * math.log(1 - rng.random() * (1 - math.exp(-3500 / 900)))
            self.add(t + dt, a, "share", self.words(3, 12) if rng.random() < 0.5 else None, self.share_url(url))
        out["viral_url"] = {"kind": "one URL shared once each by unrelated accounts within an hour", "keys": [url]}

        self.begin()
        meme = self.words(12, 20)
        length = min(6 * 3600.0, 0.75 * span)
        t = t_start + 0.2 * (span - length)
        for a in self.take(HARD_SIZES["meme_text"]).tolist():
            self.add(t + length * rng.beta(1.6, 2.0), a, "post", self.mutate(meme, 0.7))
        out["meme_text"] = {"kind": "a meme posted once each, with small edits, over hours",
                            "keys": [_fingerprint(meme)], "texts": [meme]}

        self.begin()
        tag = self.new_tag()
        t = t_start + 0.7 * span
        for a in self.take(HARD_SIZES["live_hashtag"]).tolist():
            for _ in range(1 if rng.random() < 0.7 else 2):
                self.add(t + 1800 * rng.beta(1.3, 3.0), a, "post", f"{self.words(6, 20)} #{tag}")
        out["live_hashtag"] = {"kind": "a live-event hashtag used by many accounts within 30 min", "keys": [tag]}
        return out

    # -- campaigns ------------------------------------------------------------------------
    def campaign(self, style: str, strength: str) -> dict[str, Any]:
        """Add one campaign's events; returns its label without accounts/t0/t1 (filled later)."""
        rng, sp = self.rng, STRENGTH_PARAMS[strength]
        if style == "hashtag_push":
            size = sp["push_size"]
        elif style == "slow_ring":
            size = int(rng.integers(8, 16))
        else:
            size = int(rng.integers(sp["size"][0], sp["size"][1] + 1))
        members = self.take(size)
        keys: list[str] = []
        info: dict[str, Any] = {}
        if style == "copy_paste":
            dur, p = self.duration(style), sp["p"]
            templates = []
            for _ in range(int(rng.integers(1, 4))):
                tpl = self.words(14, 28)
                if rng.random() < 0.6:
                    keys.append(self.new_tag())
                    tpl += " #" + keys[-1]
                if rng.random() < 0.4:
                    keys.append(self.new_url(int(rng.integers(50, _DOMAINS))))
                    tpl += " " + keys[-1]
                templates.append(tpl)
            t0 = self.place(dur)
            for w, tw in enumerate(np.sort(rng.uniform(t0, t0 + dur, sp["waves"])).tolist()):
                template = templates[w % len(templates)]
                for a in self.subset(members, p, 3).tolist():
                    self.add(tw + rng.uniform(0, sp["spread_s"]), a, "post", self.mutate(template, sp["edits"]))
            keys += [_fingerprint(t) for t in templates]
            info = {"templates": templates, "waves": sp["waves"], "spread_s": sp["spread_s"], "mean_edits": sp["edits"],
                    "participation": p}
        elif style in ("link_ring", "slow_ring"):
            dur = self.duration(style)
            slow = style == "slow_ring"
            n = max(3, round(sp["per_hour"] * dur / 3600)) if slow else sp["reps"]
            domains = rng.integers(20, _DOMAINS, 2)
            t0 = self.place(dur)
            for tu in np.sort(rng.uniform(t0, t0 + dur, n)).tolist():
                url = self.new_url(int(domains[len(keys) % 2]))
                keys.append(url)
                who = self.subset(members, sp["p"], 3 if slow else 2)
                gaps = rng.uniform(1, 5, who.size) if slow else np.sort(rng.uniform(1, sp["link_spread_s"], who.size))
                offsets = np.cumsum(gaps) - gaps[0] if slow else np.concatenate(([0.0], gaps[1:]))
                for a, o in zip(who.tolist(), offsets.tolist()):
                    self.add(tu + o, a, "share", self.words(3, 10) if rng.random() < 0.4 else None, self.share_url(url))
            info = ({"objects_per_hour": sp["per_hour"], "gap_s": [1, 5]} if slow
                    else {"urls": n, "spread_s": sp["link_spread_s"]})
            info["participation"] = sp["p"]
        elif style in ("retweet_ring", "like_ring"):
            dur, action = self.duration(style), style.split("_")[0]
            t0 = self.place(dur)
            for tp in np.sort(rng.uniform(t0, t0 + dur, sp["reps"])).tolist():
                author = int(rng.choice(members))
                post_id = self.add(tp, author, "post", self.words(8, 30))
                keys.append(post_id)
                first = tp + rng.uniform(5, 300)
                for a in self.subset(members[members != author], sp["p"], 2).tolist():
                    self.add(first + rng.uniform(0, sp["ring_spread_s"]), a, action, obj=post_id)
            info = {"posts": sp["reps"], "spread_s": sp["ring_spread_s"], "participation": sp["p"]}
        elif style == "hashtag_push":
            tag = self.new_tag()
            keys.append(tag)
            t0 = self.place(sp["push_span_s"])
            for a in members.tolist():
                for _ in range(int(rng.integers(1, 4))):
                    self.add(t0 + rng.uniform(0, sp["push_span_s"]), a, "post", f"{self.words(8, 20)} #{tag}")
            info = {"span_s": sp["push_span_s"], "posts_per_account": [1, 3]}
        else:
            raise ValueError(f"unknown campaign style {style!r}")
        return {"style": style, "strength": strength, "keys": keys, **info}

    def table(self) -> tuple[np.ndarray, ...]:
        """The planned events sorted by time: ts_ms, account, action, text, url, object, id."""
        ts = np.array(self.cols[0], dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        ids = _ids(1, np.arange(ts.size), self.id_seed)
        objs = [np.array(c, dtype=object)[order] for c in self.cols[2:6]]
        return (ts[order], np.array(self.cols[1], dtype=np.int64)[order], *objs, ids[order])

    def extent(self, source: int) -> tuple[list[str], float, float, int]:
        """Accounts (sorted ids), first and last time (s) and event count of one source."""
        src = np.array(self.cols[6])
        sel = src == source
        ts = np.array(self.cols[0], dtype=np.int64)[sel]
        accs = np.unique(np.array(self.cols[1], dtype=np.int64)[sel])
        return sorted(self.w.names[accs].tolist()), int(ts.min()) / 1000, int(ts.max()) / 1000, int(sel.sum())


def _fingerprint(text: str) -> str:
    """Label key of a template text (stable, seeded; not Python's hash())."""
    return f"tpl:{hash_string(text):016x}"


class _Organic:
    """The organic background, 5 minutes at a time. Kept between chunks: the recent posts
    (what retweets, likes, replies and quotes target) and, per hour, the (account, action,
    target) keys of retweets, likes, shares and follows, so nobody likes the same post or
    shares the same URL twice (heavy users would otherwise, and co-act with themselves)."""

    def __init__(self, world: _World, rng: np.random.Generator, rate: float, id_seed: int) -> None:
        self.w, self.rng, self.rate, self.id_seed = world, rng, rate, id_seed
        self.post_born = np.empty(0, dtype=np.int64)
        self.post_appeal = np.empty(0)
        self.post_id = np.empty(0, dtype=np.uint64)
        self.seen: list[tuple[int, np.ndarray]] = []  # (hour start ms, sorted keys)
        self.counter = 0

    def chunk(self, c0: int, c1: int) -> tuple[np.ndarray, ...]:
        """Columns ts_ms, account, action name, id, text, url, object of [c0, c1)."""
        rng, w = self.rng, self.w
        mid = (c0 + c1) / 2
        rhythm = 1 + 0.6 * math.sin(2 * math.pi * ((mid / 1000 % 86_400) / 86_400 - 9 / 24))
        n = int(rng.poisson(self.rate * rhythm * (c1 - c0) / 1000))
        ts = np.sort(rng.integers(c0, c1, n))
        acc = _draw(rng, w.activity_cum, n)
        act = _draw(rng, _ACTION_CUM, n)
        ids = _ids(0, np.arange(self.counter, self.counter + n), self.id_seed)
        self.counter += n
        keep = self.post_born >= c0 - _POST_LOOKBACK_MS
        self.post_born, self.post_appeal, self.post_id = (
            x[keep] for x in (self.post_born, self.post_appeal, self.post_id))
        u_lo, u_hi = np.searchsorted(w.url_born, [c0 - _URL_LOOKBACK_MS, c0])

        def pick_url(k: int) -> np.ndarray:  # catalogue indices of URLs born in the lookback
            return u_lo + _pick(rng, w.url_born[u_lo:u_hi], w.url_appeal[u_lo:u_hi], mid, _URL_TAU_MS, k)

        engage = np.isin(act, _ENGAGE)
        if not self.post_born.size:  # the first minutes: nothing to engage with yet
            act[engage] = _POST
            engage[:] = False
        if u_hi == u_lo:
            act[act == _SHARE] = _POST
        share, follow = act == _SHARE, act == _FOLLOW
        target = np.zeros(n, dtype=np.int64)  # post, URL or account index, by action
        target[engage] = _pick(rng, self.post_born, self.post_appeal, mid, _POST_TAU_MS, int(engage.sum()))
        target[share] = pick_url(int(share.sum()))
        target[follow] = _draw(rng, w.activity_cum, int(follow.sum()))
        target[follow & (target == acc)] += 1  # nobody follows themselves
        target[follow] %= w.names.size
        kept = ~self._repeated(c0, ts, acc, act, target, engage)
        ts, acc, act, ids, target, engage, share, follow = (
            x[kept] for x in (ts, acc, act, ids, target, engage, share, follow))
        n = ts.size

        obj = np.full(n, None, dtype=object)
        obj[engage] = [f"{x:016x}" for x in self.post_id[target[engage]].tolist()]
        obj[follow] = w.names[target[follow]]
        url = np.full(n, None, dtype=object)
        url[share] = np.where(rng.random(int(share.sum())) < 0.2, w.urls_utm[target[share]], w.urls[target[share]])
        text = np.full(n, None, dtype=object)
        texted = (act == _POST) | (act == _REPLY) | (act == _QUOTE) | (share & (rng.random(n) < 0.3))
        m = int(texted.sum())
        if m:
            post_like = act[texted] == _POST
            lengths = np.where(post_like, rng.integers(8, 41, m), rng.integers(3, 16, m))
            n_tags = _draw(rng, np.cumsum([0.8, 0.15, 0.05]), m)
            url_idx = np.full(m, -1)
            with_url = post_like & (rng.random(m) < 0.05) & (u_hi > u_lo)
            url_idx[with_url] = pick_url(int(with_url.sum()))
            text[texted] = _object_array(w.texts(rng, lengths, n_tags, url_idx))
        posts = act == _POST
        self.post_born = np.concatenate((self.post_born, ts[posts]))
        self.post_appeal = np.concatenate((self.post_appeal, rng.pareto(1.3, int(posts.sum())) + 0.1))
        self.post_id = np.concatenate((self.post_id, ids[posts]))
        return ts, acc, _ACTION_NAMES[act], ids, text, url, obj

    def _repeated(self, c0: int, ts: np.ndarray, acc: np.ndarray, act: np.ndarray, target: np.ndarray,
                  engage: np.ndarray) -> np.ndarray:
        """Mask of retweets, likes, shares and follows whose (account, action, target) came
        earlier (in this chunk, in time order, or in the last 12 h); remembers the others."""
        once = np.flatnonzero(np.isin(act, _ONCE))
        what = hash_u64(target[once], 1)  # URL or account index
        posts = engage[once]
        what[posts] = self.post_id[target[once][posts]]
        keys = hash_u64(what ^ hash_u64(acc[once] * 8 + act[once], 2), 3)
        _, first = np.unique(keys, return_index=True)  # ts is sorted: the first is the earliest
        fresh = np.zeros(keys.size, dtype=bool)
        fresh[first] = True
        for _, known in self.seen:
            pos = np.minimum(np.searchsorted(known, keys), known.size - 1)
            fresh &= known[pos] != keys
        hour = c0 - c0 % 3_600_000
        self.seen = [(h, k) for h, k in self.seen if h >= hour - _URL_LOOKBACK_MS]
        if self.seen and self.seen[-1][0] == hour:
            self.seen[-1] = (hour, np.sort(np.concatenate((self.seen[-1][1], keys[fresh]))))
        else:
            self.seen.append((hour, np.sort(keys[fresh])))
        out = np.zeros(ts.size, dtype=bool)
        out[once[~fresh]] = True
        return out


class SyntheticStream:
    """One labelled stream, fixed by its arguments. ``labels`` is ready at construction;
    :meth:`events` regenerates the events lazily (same dicts every time) in (ts, event_id)
    order, so small streams can be used in memory and large ones written chunk by chunk."""

    def __init__(self, *, seed: int = DEFAULT_SEED, hours: float = DEFAULT_HOURS, rate: float = DEFAULT_RATE,
                 accounts: int = DEFAULT_ACCOUNTS, start: int = DEFAULT_START) -> None:
        if not (hours > 0 and rate > 0 and seed >= 0):
            raise ValueError(f"need hours > 0, rate > 0, seed >= 0; got hours={hours}, rate={rate}, seed={seed}")
        largest = max(max(sp["size"][1], sp["push_size"]) for sp in STRENGTH_PARAMS.values())
        needed = sum(HARD_SIZES.values()) + largest * sum(STYLE_COUNTS.values())
        if accounts < 2 * needed:
            raise ValueError(f"accounts = {accounts} is too few: campaigns and hard negatives may take {needed} "
                             f"accounts and at least as many must stay purely organic; use >= {2 * needed}")
        self.rate = rate
        self.start_ms, self.end_ms = start * 1000, start * 1000 + round(hours * 3_600_000)
        world_ss, plan_ss, self._organic_ss = np.random.SeedSequence(seed).spawn(3)
        self._id_seed = splitmix64(seed)
        self.world = _World(np.random.Generator(np.random.PCG64(world_ss)), accounts, self.start_ms, self.end_ms, rate)
        planner = _Planner(
            np.random.Generator(np.random.PCG64(plan_ss)), self.world, self.start_ms, self.end_ms, self._id_seed
        )
        hard = planner.hard_negatives()
        campaigns: dict[str, dict[str, Any]] = {}
        for style, count in STYLE_COUNTS.items():
            for i in range(count):
                cid = f"{style}-{i + 1}"
                planner.begin()
                campaigns[cid] = planner.campaign(style, STRENGTHS[i % len(STRENGTHS)])
        for source, (name, label) in enumerate([*hard.items(), *campaigns.items()]):
            accs, t0, t1, n = planner.extent(source)
            label.update(accounts=accs, t0=t0, t1=t1, events=n)
        self._planned = planner.table()
        self.labels: dict[str, Any] = {
            "campaigns": campaigns,
            "organic_hard": hard,
            "params": {"seed": seed, "hours": hours, "rate": rate, "accounts": accounts, "start": start,
                       "end": self.end_ms / 1000, "style_counts": STYLE_COUNTS, "strengths": STRENGTH_PARAMS},
        }

    @property
    def planned_events(self) -> int:
        return int(self._planned[0].size)

    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """The events, 5 minutes of event time at a time."""
        organic = _Organic(self.world, np.random.Generator(np.random.PCG64(self._organic_ss)), self.rate, self._id_seed)
        p_ts, p_acc, p_act, p_text, p_url, p_obj, p_id = self._planned
        for c0 in range(self.start_ms, self.end_ms, _CHUNK_MS):
            c1 = min(c0 + _CHUNK_MS, self.end_ms)
            ts, acc, act, ids, text, url, obj = organic.chunk(c0, c1)
            a, b = np.searchsorted(p_ts, [c0, c1])
            all_ts = np.concatenate((ts, p_ts[a:b]))
            all_id = np.concatenate((ids, p_id[a:b]))
            order = np.lexsort((all_id, all_ts))
            cols = (
                (all_ts[order] / 1000).tolist(),
                self.world.names[np.concatenate((acc, p_acc[a:b]))[order]].tolist(),
                np.concatenate((act, p_act[a:b]))[order].tolist(),
                [f"{x:016x}" for x in all_id[order].tolist()],
                np.concatenate((text, p_text[a:b]))[order].tolist(),
                np.concatenate((url, p_url[a:b]))[order].tolist(),
                np.concatenate((obj, p_obj[a:b]))[order].tolist(),
            )
            yield [_event(*row) for row in zip(*cols)]

    def events(self) -> Iterator[dict[str, Any]]:
        """All events in (ts, event_id) order (for tests and small streams)."""
        for chunk in self.chunks():
            yield from chunk


def _event(ts: float, account: str, action: str, event_id: str, text: str | None, url: str | None,
           obj: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"ts": ts, "account_id": account, "action": action, "event_id": event_id}
    if text is not None:
        d["text"] = text
    if url is not None:
        d["url"] = url
    if obj is not None:
        d["object_id"] = obj
    return d


def _object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _pick(
    rng: np.random.Generator, born: np.ndarray, appeal: np.ndarray, now_ms: float, tau_ms: float, n: int
) -> np.ndarray:
    """``n`` indices into ``born``: weight = appeal x exp(-age / tau), so fresh appealing
    objects draw most actions (popularity is heavy-tailed at every moment)."""
    return _draw(rng, np.cumsum(appeal * np.exp((born - now_ms) / tau_ms)), n)


def generate(out_dir: str | Path, *, seed: int = DEFAULT_SEED, hours: float = DEFAULT_HOURS, rate: float = DEFAULT_RATE,
             accounts: int = DEFAULT_ACCOUNTS, progress: bool = False) -> dict[str, Any]:
    """Write ``events.jsonl`` (orjson, one event per line, (ts, event_id) order) and
    ``labels.json`` into ``out_dir``; returns a summary. Memory stays flat: the stream is
    written 5 minutes of event time at a time."""
    t = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = SyntheticStream(seed=seed, hours=hours, rate=rate, accounts=accounts)
    events = 0
    active = np.zeros(accounts, dtype=bool)
    n_chunks = math.ceil((stream.end_ms - stream.start_ms) / _CHUNK_MS)
    with open(out / "events.jsonl", "wb") as f:
        for chunk in tqdm(stream.chunks(), total=n_chunks, unit="chunk", disable=not progress):
            events += len(chunk)
            active[[int(e["account_id"][1:]) for e in chunk]] = True
            f.write(b"\n".join(map(orjson.dumps, chunk)) + b"\n" if chunk else b"")
    (out / "labels.json").write_bytes(orjson.dumps(stream.labels, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    campaign_events = sum(c["events"] for c in stream.labels["campaigns"].values())
    return {
        "events": events,
        "organic_events": events - stream.planned_events,
        "campaign_events": campaign_events,
        "hard_negative_events": stream.planned_events - campaign_events,
        "accounts": accounts,
        "active_accounts": int(active.sum()),
        "campaigns": len(stream.labels["campaigns"]),
        "hours": hours,
        "seconds": round(time.perf_counter() - t, 2),
        "events_path": str(out / "events.jsonl"),
        "labels_path": str(out / "labels.json"),
    }
