"""Normalisation and batch shingling: examples, a plain-Python reference, and which
shingle length separates edited copies from other posts on the same topic."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches import shingling
from sketches.hashing import hash_strings
from sketches.minhash import minhasher
from sketches.shingling import MENTION_TOKEN, normalize, shingle_batch

# Eight posts on one local topic, 25-26 words each: they share stop words and topic words.
TOPIC = [
    "The city council voted last night to delay the new bus lanes on Main Street until the traffic study is finished next spring at the earliest",
    "Residents packed the council meeting to complain that the new bus lanes on Main Street will hurt small shops and take away parking spaces downtown",
    "I support the new bus lanes because our buses are always late and the traffic on Main Street gets worse every single year in this city",
    "The mayor says the bus lane plan will cut commute times in half but nobody outside city hall has seen the study the council paid for",
    "Small business owners on Main Street are worried that losing parking for the bus lanes will push their customers to the big mall out of town",
    "Why did the council spend two million dollars on a traffic study when the buses in this city still do not run on time most days",
    "Cyclists want the Main Street plan to include protected bike lanes next to the bus lanes before the council votes on it again in the spring",
    "The transit agency promised faster buses on Main Street but drivers say the new lanes only moved the same traffic jam two blocks further south",
]


# -- normalize ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Vote NOW for Change", "vote now for change"),
        ("ＶＯＴＥ ｎｏｗ", "vote now"),  # full-width letters (NFKC)
        ("𝐕𝐨𝐭𝐞 now", "vote now"),  # mathematical bold
        ("Straße", "STRASSE"),  # casefold, not lower()
        ("Read https://news.example.com/a?utm_source=tw&id=1", "read http://www.NEWS.example.com/b?utm_source=fb"),
        ("thanks @alice for this", "thanks @bob_99 for this"),
        ("Stop the lanes", "Stop the lanes 🚌🔥🔥"),
        ("stop, the... lanes!!!", "stop the lanes"),
        ("  spaced\t\nout  ", "spaced out"),
        ("#MainStreet forever", "mainstreet forever"),
        ("don't", "dont"),
    ],
)
def test_normalize_makes_cosmetic_variants_equal(a: str, b: str):
    assert normalize(a) == normalize(b)


def test_normalize_tokens():
    assert normalize("Read https://www.News.Example.com/a?x=1, now") == "read url_news_example_com now"
    assert normalize("@alice and @bob") == f"{MENTION_TOKEN} and {MENTION_TOKEN}"
    assert normalize("mail bob@example.com") == "mail bob example com"  # not a mention
    assert normalize("#StopTheLanes now") == "stopthelanes now"
    assert normalize("नमस्ते दुनिया") == "नमस्ते दुनिया"  # combining marks stay inside words
    assert normalize("😀 !!! …") == ""
    assert normalize("") == ""


def test_different_hosts_stay_different():
    assert normalize("see https://a.example.com/x") != normalize("see https://b.example.com/x")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalize_is_idempotent_and_space_separated(text: str):
    out = normalize(text)
    assert normalize(out) == out
    assert out == " ".join(out.split(" ")) and "  " not in out and out == out.strip()


# -- shingle_batch -----------------------------------------------------------------------
def reference_shingles(text: str, kind: str, n: int) -> list[str]:
    """Plain-Python shingles of one text, the definition shingle_batch must match."""
    norm = normalize(text)
    units = norm.split() if kind == "word" else list(norm)
    if not units:
        return []
    sep = " " if kind == "word" else ""
    return [sep.join(units[i : i + n]) for i in range(max(1, len(units) - n + 1))]


post_text = st.lists(
    st.sampled_from(["the", "Bus", "lanes", "@x", "#Tag", "😀", "ＦＵＬＬ", "https://ex.com/?q=1", "it's", "!!", "é"]),
    max_size=12,
).map(" ".join)


@settings(max_examples=100, deadline=None)
@given(st.lists(post_text, max_size=8), st.sampled_from(["word", "char"]), st.integers(1, 4))
def test_shingle_batch_matches_reference(texts: list[str], kind: str, n: int):
    got = shingle_batch(texts, kind, n)
    assert got.hashes.dtype == np.uint64 and got.offsets.dtype == np.int64
    assert got.offsets.shape == (len(texts) + 1,) and got.offsets[0] == 0
    for d, text in enumerate(texts):
        expected = reference_shingles(text, kind, n)
        doc = got.hashes[got.offsets[d] : got.offsets[d + 1]]
        assert np.array_equal(doc, hash_strings(expected)), (text, expected)
        assert got.token_counts[d] == len(normalize(text).split())


@settings(max_examples=100, deadline=None)
@given(st.lists(post_text, max_size=12), st.sampled_from(["word", "char"]), st.integers(1, 4), st.integers(1, 40))
def test_shingle_batch_in_runs_equals_one_run(texts: list[str], kind: str, n: int, run: int):
    """A batch is shingled in runs of RUN_CODEPOINTS (to stay in the cache): however short
    the runs (down to one text each), the result is that of one pass over the whole batch."""
    whole = shingle_batch(texts, kind, n)
    assert len(shingling._runs(texts)) == 1  # these batches are far smaller than a run
    with mock.patch.object(shingling, "RUN_CODEPOINTS", run):
        runs = shingling._runs(texts)
        cut = shingle_batch(texts, kind, n)
    assert runs[0][0] == 0 and runs[-1][1] == len(texts) and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    for got, want in zip(cut, whole):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_short_and_empty_documents():
    got = shingle_batch(["one two", "", "just", "😀"], "word", 3)
    assert np.diff(got.offsets).tolist() == [1, 0, 1, 0]  # fewer than n tokens: one shingle
    assert got.hashes[0] == hash_strings(["one two"])[0]
    assert got.token_counts.tolist() == [2, 0, 1, 0]
    empty = shingle_batch([], "char", 5)
    assert empty.hashes.size == 0 and empty.offsets.tolist() == [0]


def test_a_documents_shingles_do_not_depend_on_its_batch():
    alone = shingle_batch([TOPIC[3]], "word", 2).hashes
    batch = shingle_batch(TOPIC, "word", 2)
    assert np.array_equal(batch.hashes[batch.offsets[3] : batch.offsets[4]], alone)


def test_seed_changes_hashes():
    assert not np.array_equal(
        shingle_batch(TOPIC, "word", 2, seed=1).hashes, shingle_batch(TOPIC, "word", 2, seed=2).hashes
    )


@pytest.mark.parametrize(("kind", "n"), [("line", 2), ("word", 0)])
def test_bad_arguments(kind: str, n: int):
    with pytest.raises(ValueError):
        shingle_batch(TOPIC, kind, n)  # type: ignore[arg-type]


# -- edited copies vs same-topic posts ---------------------------------------------------
def edited_copies(text: str, rng: np.random.Generator) -> list[str]:
    """A word swapped, dropped, added, hashtag + emoji appended, and all of these at once."""
    w = text.split()
    i = int(rng.integers(2, len(w) - 2))
    j = int(rng.integers(2, len(w) - 3))
    every = w[:i] + ["honestly"] + w[i + 1 :]
    every = every[:j] + every[j + 1 :] + ["#MainStreet", "🚌🔥"]
    variants = [
        w[:i] + ["really"] + w[i + 1 :],
        w[:i] + w[i + 1 :],
        w[:i] + ["honestly"] + w[i:],
        w + ["#MainStreet", "🚌🔥"],
        every,
    ]
    return [" ".join(v) for v in variants]


def _separation(kind: str, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Estimated Jaccard of (original, edited copy) pairs and exact gap to same-topic pairs."""
    rng = np.random.default_rng(0)
    docs = list(TOPIC)
    copies = []
    for k, text in enumerate(TOPIC):
        for e in edited_copies(text, rng):
            copies.append((k, len(docs)))
            docs.append(e)
    unrelated = [(a, b) for a in range(len(TOPIC)) for b in range(a + 1, len(TOPIC))]
    sh = shingle_batch(docs, kind, n)
    sets = [set(sh.hashes[sh.offsets[d] : sh.offsets[d + 1]].tolist()) for d in range(len(docs))]

    def exact(pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.array([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs])

    sigs = minhasher(128, 1).signatures(sh.hashes, sh.offsets)
    estimated = sigs.jaccard_many(*np.array(copies).T)
    gap = float(exact(copies).min() - exact(unrelated).max())
    return estimated, exact(unrelated), gap


def test_edited_copies_score_above_half_and_word_bigrams_separate_best():
    gaps = {}
    for kind, n in [("word", 1), ("word", 2), ("word", 3), ("char", 5)]:
        estimated, unrelated, gaps[kind, n] = _separation(kind, n)
        print(
            f"{kind} {n}-grams: edited copies est. J min {estimated.min():.2f} mean {estimated.mean():.2f};"
            f" same-topic exact J max {unrelated.max():.2f}; gap {gaps[kind, n]:.2f}"
        )
        if kind == "word" and n <= 2:
            assert estimated.min() > 0.5
    assert gaps["word", 2] > 0.45
    assert gaps["word", 2] >= max(gaps["word", 1], gaps["word", 3])
