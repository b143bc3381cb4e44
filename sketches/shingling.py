"""Text → shingle hashes: the one pipeline every near-duplicate detector uses.

Normalisation maps a post to its tokens joined by single spaces, so that cosmetic edits
(case, full-width letters, tracking links, who is @mentioned, emoji, punctuation) do not
change the shingles. It runs a batch at a time, in runs of about :data:`RUN_CODEPOINTS`
code points (so that the arrays stay in the cache): a few C-level string calls per post
(NFKC, casefold, and URL/@mention rewriting only where the post has one), then the run
is joined into one code-point buffer and tokens are found with numpy: a token is a run of
letters, digits, combining marks and ``_`` (apostrophes inside a word are dropped:
``don't`` → ``dont``). Per-token regex matching cost 3x the rest of the pipeline.

Every shingle is then a span of the normalised buffer hashed with
:func:`sketches.hashing.hash_spans`: a word n-gram is the span from its first token's
start to its last token's end, i.e. the hash of the string ``"w1 w2 ... wn"``; a char
n-gram is a span of n code points of the normalised text (spaces included).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from sketches.hashing import DEFAULT_SEED, codepoints, hash_spans, prefix_hashes

#: Placeholder token for every @mention: campaigns rotate the accounts they tag.
MENTION_TOKEN = "_mention_"

# Both patterns start with a literal and only run on posts containing it.
_URL = re.compile(r"(?:https?://|www\.)(?:[^\s/@]*@)?(?:www\.)?([\w.-]+)\S*")
_MENTION = re.compile(r"@(?<![\w.]@)\w+")  # not an e-mail address
_SPACE = np.uint32(ord(" "))


def _is_word_char(c: int) -> bool:
    return c == 0x5F or unicodedata.category(chr(c))[0] in "LNM"


# Looked up per code point; the supplementary planes (mostly emoji) are classified per
# distinct code point in a batch, as a full table would take 65 ms to build at import.
_BMP_WORD = np.array([_is_word_char(c) for c in range(0x10000)], dtype=bool)


_NON_WORD = re.compile(r"\W")


def _url_token(match: re.Match[str]) -> str:
    return " url_" + _NON_WORD.sub("_", match.group(1).strip(".-")) + " "


def _prepare(text: str) -> str:
    """The per-post string work: NFKC + casefold, then URLs and @mentions to tokens."""
    if text.isascii():  # NFKC is the identity on ASCII, casefold is lower-casing
        s = text.lower()
    else:
        s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    if "://" in s or "www." in s:
        s = _URL.sub(_url_token, s)
    if "@" in s:
        s = _MENTION.sub(" " + MENTION_TOKEN + " ", s)
    return s


def _prepare_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """Code points of the prepared texts joined by spaces, each one's length, and whether
    the result may hold code points beyond ASCII and apostrophes (else passes are skipped).

    One :func:`_prepare` call per post (an ASCII post is only lower-cased there). Doing
    the string work on the joined batch instead (one ``lower()``, then ``_prepare`` only
    for the posts with a URL, @mention or non-ASCII character, spliced back) measured
    slower: 165 vs 135 ms on the generator mix's 258 k posts, as finding those posts took
    a pass over the batch's 21 M code points.
    """
    pieces = list(map(_prepare, texts))
    joined = " ".join(pieces)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    return codepoints(joined), lengths, not joined.isascii(), "'" in joined or "\u2019" in joined


class _Normalised(NamedTuple):
    buf: np.ndarray  # uint32 code points: every token of the batch, one space between
    tok_start: np.ndarray  # int64 span of each token in buf
    tok_end: np.ndarray
    token_counts: np.ndarray  # int64 tokens per document (a document's tokens are consecutive)


def _normalise_batch(texts: Sequence[str]) -> _Normalised:
    """Tokens of every text, found with a few whole-buffer numpy passes.

    The buffer is compacted in one boolean selection: the word characters plus, after
    every token but the last, the (non-word) character that ends it, overwritten with a
    space. (Inserting the spaces with ``np.insert`` sorted the insertion points and cost
    40 % of the batch.) The spans in the compacted buffer follow from the token lengths.
    """
    codes, lengths, wide, apostrophes = _prepare_batch(texts)
    size = codes.size
    word = _BMP_WORD.take(codes, mode="clip")  # beyond the BMP -> U+FFFF, not a word character
    sup = np.flatnonzero(codes > 0xFFFF) if wide else np.empty(0, dtype=np.int64)
    if sup.size:
        values, inverse = np.unique(codes[sup], return_inverse=True)
        word[sup] = np.array([_is_word_char(int(c)) for c in values], dtype=bool)[inverse]
    inner = np.empty(0, dtype=np.int64)  # apostrophes between two word characters
    if apostrophes:
        marks = np.flatnonzero((codes == 0x27) | (codes == 0x2019))
        marks = marks[(marks > 0) & (marks < size - 1)]
        inner = marks[word[marks - 1] & word[marks + 1]]
    in_token = word
    if inner.size:
        in_token = word.copy()
        in_token[inner] = True  # an inner apostrophe does not split a token
    edges = np.zeros(size + 2, dtype=bool)
    edges[1:-1] = in_token
    change = np.flatnonzero(edges[1:] != edges[:-1])
    starts, ends = change[0::2], change[1::2]  # token spans [start, end) in codes
    doc_start = np.cumsum(lengths + 1) - lengths - 1
    token_counts = np.diff(np.searchsorted(starts, np.append(doc_start, size)))
    tok_len = ends - starts
    if inner.size:
        tok_len -= np.bincount(np.searchsorted(starts, inner, "right") - 1, minlength=starts.size)
    keep = word  # word characters (inner apostrophes are dropped) ...
    keep[ends[:-1]] = True  # ... and the character after each token: its separating space
    buf = codes[keep]
    tok_start = np.cumsum(tok_len + 1) - (tok_len + 1)
    tok_end = tok_start + tok_len
    buf[tok_end[:-1]] = _SPACE
    return _Normalised(buf, tok_start, tok_end, token_counts.astype(np.int64))


def normalize(text: str) -> str:
    """The tokens of ``text`` after NFKC + casefold, joined by single spaces.

    A URL becomes one token for its host (``https://www.Example.com/a?utm=x`` →
    ``url_example_com``), an @mention becomes ``_mention_``, a hashtag keeps its word,
    apostrophes inside words are dropped; everything that is not a letter, digit,
    combining mark or ``_`` (emoji, punctuation) separates tokens. Idempotent.
    """
    return _normalise_batch([text]).buf.tobytes().decode("utf-32-le")


class Shingles(NamedTuple):
    """Shingle hashes of a batch: doc ``d`` has ``hashes[offsets[d]:offsets[d + 1]]``."""

    hashes: np.ndarray  # uint64, in text order (repeats kept)
    offsets: np.ndarray  # int64, len(texts) + 1
    token_counts: np.ndarray  # int64, tokens per normalised document (to skip short posts)


def shingle_batch(
    texts: Sequence[str],
    kind: Literal["word", "char"] = "word",
    n: int = 2,
    seed: int = DEFAULT_SEED,
) -> Shingles:
    """Normalise and shingle a batch of texts, a few numpy passes per run of texts (:func:`_runs`).

    ``kind="word"``: n-grams of tokens; ``kind="char"``: n-grams of code points of the
    normalised text. A document with fewer than ``n`` units yields one shingle of all of
    them; an empty one yields none. Repeated shingles are kept, in text order: MinHash
    ignores repeats, and on 2000 posts a per-document sort + dedup cost 5.5 ms (word
    1-grams, 16% repeats) and 7.6 ms (2-grams, 0.5%) but saved only 2.9 ms and 0.2 ms of
    MinHash time. Callers wanting sets use ``np.unique`` per document.
    """
    if kind not in ("word", "char"):
        raise ValueError(f"kind must be 'word' or 'char', got {kind!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    runs = _runs(texts)
    if len(runs) == 1:
        return _shingle_run(texts, kind, n, seed)
    parts = [_shingle_run(texts[lo:hi], kind, n, seed) for lo, hi in runs]
    bases = np.cumsum([0] + [p.hashes.size for p in parts[:-1]])
    offsets = [np.zeros(1, dtype=np.int64), *(p.offsets[1:] + base for p, base in zip(parts, bases))]
    return Shingles(np.concatenate([p.hashes for p in parts]), np.concatenate(offsets),
                    np.concatenate([p.token_counts for p in parts]))  # fmt: skip


#: shingle_batch works through its texts in runs of about this many code points, so that a
#: run's arrays stay in the cache: 100 k posts of the stream bench (7.9 M code points) took
#: 0.26–0.85 s at once and 0.19–0.22 s in runs of 2**16 to 2**20 (a worker on 12 input
#: partitions closes ticks of ~100 k events at a time, and spent 2.7x as long shingling)
RUN_CODEPOINTS = 1 << 18


def _runs(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive (lo, hi) slices of ``texts``: a run ends where the total length passes a
    multiple of :data:`RUN_CODEPOINTS`."""
    total = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))) // RUN_CODEPOINTS
    cuts = (np.flatnonzero(np.diff(total)) + 1).tolist()
    return list(zip([0, *cuts], [*cuts, len(texts)]))


def _shingle_run(texts: Sequence[str], kind: str, n: int, seed: int) -> Shingles:
    """:func:`shingle_batch` of one run of texts, in one numpy pass."""
    norm = _normalise_batch(texts)
    counts = norm.token_counts
    if kind == "word":
        starts, ends, offsets = _word_spans(norm.tok_start, norm.tok_end, counts, n)
    else:
        first_tok = np.cumsum(counts) - counts
        has = counts > 0
        doc_lo = np.zeros(counts.size, dtype=np.int64)
        doc_hi = np.zeros(counts.size, dtype=np.int64)
        doc_lo[has] = norm.tok_start[first_tok[has]]
        doc_hi[has] = norm.tok_end[first_tok[has] + counts[has] - 1]
        chars = np.arange(norm.buf.size + 1)
        starts, ends, offsets = _ngram_spans(chars[:-1], chars[1:], doc_lo, doc_hi - doc_lo, n)
    hashes = hash_spans(prefix_hashes(norm.buf, seed), starts, ends, seed)
    return Shingles(hashes, offsets, counts)


def _word_spans(
    tok_start: np.ndarray, tok_end: np.ndarray, counts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_ngram_spans` for tokens, which cover every document back to back: an n-gram
    starts at each token with no document end among it and its next n - 2, plus the first
    token of each document shorter than n (one shingle of all of it). Marking document ends
    costs a few passes over the tokens instead of a per-shingle document lookup (1.6x)."""
    per_doc = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    total = tok_start.size
    ends = np.cumsum(counts)
    is_last = np.zeros(total, dtype=bool)
    is_last[ends[counts > 0] - 1] = True
    if n == 1:
        return tok_start, tok_end, offsets
    if n == 2:
        start = ~is_last
    else:
        lasts = np.zeros(total + 1, dtype=np.int64)
        np.cumsum(is_last, out=lasts[1:])
        t = np.arange(total)
        start = lasts[np.minimum(t + n - 1, total)] == lasts[t]
    short = (counts > 0) & (counts < n)
    short_first = (ends - counts)[short]
    start[short_first] = True
    g = np.flatnonzero(start)
    last = g + (n - 1)
    if short_first.size:
        last[np.searchsorted(g, short_first)] = ends[short] - 1
    return tok_start[g], tok_end[last], offsets


def _ngram_spans(
    unit_start: np.ndarray, unit_end: np.ndarray, first: np.ndarray, counts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buffer spans of every n-gram of consecutive units; doc d has units first[d] + [0, counts[d])."""
    per_doc = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    doc = np.repeat(np.arange(counts.size), per_doc)
    g = first[doc] + np.arange(offsets[-1]) - offsets[doc]
    last = np.minimum(g + n - 1, first[doc] + counts[doc] - 1)
    return unit_start[g], unit_end[last], offsets
