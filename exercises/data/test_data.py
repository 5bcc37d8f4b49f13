"""Public specs for `data`: `pytest exercises/data` (`--impl=solutions`: the reference).

Oracles: worked examples; properties (hypothesis); the MinHash hash family computed here with
Python's exact integers, one shingle and one hash function at a time; brute force over all pairs
for LSH and near duplicates; the exact laws of the mixture and of LSH's S-curve for the statistical
specs. Statistical specs use fixed seeds; each states its chance of failing a correct
implementation, always below 1e-7.
"""

import math
import unicodedata
import zlib
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, fail

P = (1 << 31) - 1  # the MinHash modulus, MERSENNE_PRIME
DELTA = 1e-7  # the false-failure chance each statistical spec allows itself
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def vocabulary(size, seed):
    """`size` distinct lower-case pseudo-words, on which normalize is the identity."""
    rng = np.random.default_rng(seed)
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(list(LETTERS), size=int(rng.integers(2, 9)))))
    return sorted(words)


def edited(words, fraction, rng, vocab):
    """A copy of `words` with about `fraction` of them replaced by other words of `vocab`."""
    out = list(words)
    for i in rng.choice(len(out), size=round(fraction * len(out)), replace=False):
        out[i] = vocab[int(rng.integers(len(vocab)))]
    return out


def grams(words, ngram):
    """The spec's own shingles of a list of already normalised words."""
    if len(words) <= ngram:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def exact_jaccard(a, b):
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def as_pairs(pairs, what):
    """The learner's pairs as a list of (int, int), after checking their form."""
    try:
        out = [(int(i), int(j)) for i, j in pairs]
    except (TypeError, ValueError):
        fail(f"{what} should return a list of pairs (i, j) of ints; got {pairs!r:.200}")
    if out != sorted(set(out)) or any(i >= j for i, j in out):
        fail(f"{what} should return distinct pairs (i, j) with i < j, sorted; got {out[:10]}")
    return out


def chernoff_check(counts, probs, what, cells):
    """Fail when some cell's count is too unlikely under `probs`.

    For a count k of N with cell probability p and p^ = k / N, Chernoff's bound gives
    P(N KL(p^ || p) >= c) <= 2 exp(-c) for both tails together; over `cells` cells the union
    bound makes the chance of any false failure at most 2 * cells * exp(-c) = DELTA.
    """
    N = int(np.sum(counts))
    for index in np.ndindex(np.shape(probs)):
        k, p = int(counts[index]), float(probs[index])
        a = k / N
        if chernoff_gap(k, N, p, cells, DELTA):
            fail(
                f"{what}: cell {index} came out {k} times in {N} ({a:.4f}), where the law gives "
                f"probability {p:.4f}; a gap this large has a chance below {DELTA:g}"
            )


# -- normalize and exact deduplication ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "why"),
    [
        ("  Hello,\tWORLD!! ", "hello world", "lower case, punctuation gone, whitespace collapsed"),
        ("one\n\ntwo   three ", "one two three", "every run of whitespace becomes one space"),
        ("“Quoted” — and ‘single’…", "quoted and single", "Unicode punctuation goes too"),
        ("Ｆｕｌｌ－ｗｉｄｔｈ ﬁle", "fullwidth file", "NFKC turns full-width letters and ﬁ plain"),
        ("$5 + 3 = 8 | a<b ~c^d`", "$5 + 3 = 8 | a<b ~c^d`", "symbols (category S) stay"),
        ("don't e-mail me_now", "dont email menow", "apostrophes, hyphens, underscores go"),
        ("Straße ÉCOLE", "straße école", "str.lower, letters with accents kept"),
        ("", "", "the empty text"),
        (" .,;!? ", "", "punctuation only"),
    ],
)
def test_normalize_examples(impl, text, expected, why):
    got = impl.normalize(text)
    if got != expected:
        fail(f"normalize({text!r}) returned {got!r}; expected {expected!r} ({why})")


TEXT = st.text(
    alphabet=st.sampled_from(list("aBcDé ÆßＺﬁ\t\n.,!?'\"-–—“”‘’…()[]$+<=>^`|~#%&*_0129")),
    max_size=40,
)


@given(text=TEXT)
def test_normalize_properties(impl, text):
    got = impl.normalize(text)
    what = f"normalize({text!r}) = {got!r}"
    if not isinstance(got, str):
        fail(f"normalize({text!r}) should return a str; got {type(got).__name__}")
    left = [ch for ch in got if unicodedata.category(ch).startswith("P")]
    if left:
        fail(f"{what} still holds punctuation {left} (Unicode category P*)")
    if got != got.lower():
        fail(f"{what} is not lower case")
    if got != " ".join(got.split()):
        fail(f"{what}: whitespace must be single spaces, none at the ends")
    if impl.normalize(got) != got:
        fail(f"{what}, but normalize of that is {impl.normalize(got)!r}: it should change nothing")


def test_exact_dedup_keeps_the_first_copy(impl):
    docs = [
        "The cat sat.",
        "A dog ran!",
        "the  CAT sat",  # the first document, normalised
        "The cat sat on the mat.",
        "a dog, ran",  # the second
        "THE CAT SAT!!",  # the first again
    ]
    got = impl.exact_dedup(docs)
    if list(got) != [0, 1, 3]:
        fail(
            f"exact_dedup({docs}) returned {got}; expected [0, 1, 3]: documents 2 and 5 normalise "
            "to document 0's text and 4 to document 1's, and the first of each group stays"
        )


BASE_TEXTS = [" ".join(vocabulary(18, 1)[3 * k : 3 * k + 3]) for k in range(6)]
VARIANTS = [
    lambda s: s,
    str.upper,
    lambda s: "  " + s.replace(" ", "\n ") + "\t",
    lambda s: s.replace(" ", ", ") + "!",
    lambda s: "“" + s.title() + "”",
]


@given(
    picks=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, len(VARIANTS) - 1)), min_size=0, max_size=20
    )
)
def test_exact_dedup_groups_by_normalized_text(impl, picks):
    docs = [VARIANTS[v](BASE_TEXTS[k]) for k, v in picks]
    got = impl.exact_dedup(docs)
    first = {}
    for i, (k, _) in enumerate(picks):
        first.setdefault(k, i)
    expected = sorted(first.values())
    if list(got) != expected:
        fail(
            f"exact_dedup(docs) on {len(docs)} documents returned {list(got)}; expected "
            f"{expected}, the first copy of each text. docs = {docs}"
        )


# -- shingles and jaccard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ngram", "expected"),
    [
        ("The cat sat on the mat", 3, {"the cat sat", "cat sat on", "sat on the", "on the mat"}),
        ("a b c d e f", 5, {"a b c d e", "b c d e f"}),
        ("a b c d e", 5, {"a b c d e"}),
        ("Hello, world!", 5, {"hello world"}),
        ("to be or not to be", 2, {"to be", "be or", "or not", "not to"}),
        ("Word", 1, {"word"}),
        ("  ...  ", 3, set()),
    ],
)
def test_shingles_examples(impl, text, ngram, expected):
    got = impl.shingles(text, ngram)
    if not isinstance(got, set | frozenset) or set(got) != expected:
        fail(f"shingles({text!r}, ngram={ngram}) returned {got!r}; expected {expected!r}")


@given(length=st.integers(0, 30), ngram=st.integers(1, 8), seed=st.integers(0, 1000))
def test_shingles_count_and_content(impl, length, ngram, seed):
    words = vocabulary(30, seed)[:length]  # distinct words: no shingle repeats
    text = " ".join(words)
    got = impl.shingles(text, ngram)
    expected = grams(words, ngram)
    if set(got) != expected:
        missing, extra = sorted(expected - set(got)), sorted(set(got) - expected)
        fail(
            f"shingles(text of {length} distinct words, ngram={ngram}) returned {len(got)} "
            f"shingles; expected {len(expected)} (max(1, words - ngram + 1) for a non-empty "
            f"text). Missing: {missing[:3]}; unexpected: {extra[:3]}"
        )


SETS = st.sets(st.integers(0, 12), max_size=10)


@given(a=SETS, b=SETS)
def test_jaccard_examples_and_properties(impl, a, b):
    for x, y, want in [({1, 2, 3}, {2, 3, 4}, 0.5), ({"a"}, {"b"}, 0.0), (set(), set(), 1.0)]:
        got = impl.jaccard(x, y)
        if not math.isclose(got, want, abs_tol=1e-12):
            fail(f"jaccard({x}, {y}) returned {got!r}; expected {want} (|a & b| / |a | b|)")
    got, back = impl.jaccard(a, b), impl.jaccard(b, a)
    expected = exact_jaccard(a, b)
    if not math.isclose(got, expected, abs_tol=1e-12) or not math.isclose(back, got):
        fail(
            f"jaccard({sorted(a)}, {sorted(b)}) returned {got!r} (and {back!r} the other way "
            f"round); expected {expected!r}: {len(a & b)} shared / {len(a | b)} in the union"
        )


# -- MinHash ------------------------------------------------------------------------------------


def signature_by_hand(words, num_perm, ngram, seed):
    """The README's hash family, one hash function and one shingle at a time, in exact integers."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, P, size=num_perm, dtype=np.uint64).tolist()
    b = rng.integers(0, P, size=num_perm, dtype=np.uint64).tolist()
    hashes = [zlib.crc32(s.encode("utf-8")) for s in grams(words, ngram)]
    return [
        min(((ak * h + bk) % P for h in hashes), default=P) for ak, bk in zip(a, b, strict=True)
    ]


@pytest.mark.parametrize(("num_perm", "ngram", "seed"), [(16, 5, 0), (7, 2, 123), (40, 3, 9)])
def test_minhash_follows_the_hash_family(impl, num_perm, ngram, seed):
    vocab = vocabulary(50, 2)
    rng = np.random.default_rng(seed)
    docs = [list(rng.choice(vocab, size=n)) for n in (12, 3, 30, 1)]
    got = impl.minhash_signatures([" ".join(d) for d in docs], num_perm, ngram, seed)
    # Compared as int64 (every entry is below 2**31), so that differences print as numbers.
    expected = np.array([signature_by_hand(d, num_perm, ngram, seed) for d in docs], np.int64)
    assert_close(
        np.asarray(got).astype(np.int64),
        expected,
        what=(
            f"minhash_signatures(4 documents of 12, 3, 30 and 1 words, num_perm={num_perm}, "
            f"ngram={ngram}, seed={seed}) (a then b from default_rng(seed), crc32 of each "
            "shingle, min over shingles of (a * h + b) % p)"
        ),
        rtol=0,
        atol=0,
    )


def test_minhash_shapes_and_edge_cases(impl):
    text = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox!"
    docs = [text, "", text.upper().replace(",", ""), "   ", "fox"]
    sig = impl.minhash_signatures(docs, num_perm=24, ngram=3, seed=5)
    what = "minhash_signatures(5 documents, num_perm=24, ngram=3, seed=5)"
    if not isinstance(sig, np.ndarray) or sig.shape != (5, 24) or sig.dtype != np.uint64:
        fail(
            f"{what} should return a uint64 array of shape (5, 24); got "
            f"{type(sig).__name__} {getattr(sig, 'dtype', '')} {getattr(sig, 'shape', '')}"
        )
    for row in (1, 3):
        if not (sig[row] == P).all():
            fail(f"{what}: document {row} has no words, so its row must be p = {P} everywhere")
    if not (sig[0] == sig[2]).all():
        fail(f"{what}: documents 0 and 2 normalise alike, so their signatures must be equal")
    if (sig[[0, 4]] >= P).any():
        fail(f"{what}: every entry of a document with shingles is (a * h + b) % p < p")
    empty = impl.minhash_signatures([], num_perm=8)
    if np.shape(empty) != (0, 8):
        fail(f"minhash_signatures([], num_perm=8) should have shape (0, 8); got {np.shape(empty)}")


def test_minhash_estimates_jaccard(impl):
    # Statistical. With 2000 hash functions the share of equal entries estimates the Jaccard
    # similarity; Hoeffding bounds a miss by more than 0.1 by 2 exp(-2 * 2000 * 0.01) < 1e-17
    # per pair (for truly min-wise hashing; this universal family is close to it).
    vocab = vocabulary(400, 3)
    rng = np.random.default_rng(4)
    base = list(rng.choice(vocab, size=80))
    docs = [base] + [edited(base, f, rng, vocab) for f in (0.02, 0.1, 0.3, 1.0)]
    sig = np.asarray(impl.minhash_signatures([" ".join(d) for d in docs], 2000, 3, 11))
    for k in range(1, len(docs)):
        truth = exact_jaccard(grams(docs[0], 3), grams(docs[k], 3))
        estimate = float(np.mean(sig[0] == sig[k]))
        if abs(estimate - truth) > 0.1:
            fail(
                f"minhash_signatures(num_perm=2000, ngram=3): documents 0 and {k} agree in "
                f"{estimate:.3f} of the entries, but the Jaccard similarity of their shingles is "
                f"{truth:.3f}; each entry should be the min over the shingles, per hash function"
            )


# -- LSH ----------------------------------------------------------------------------------------


def test_lsh_probability_formula(impl):
    cases = [
        (0.8, 20, 5, 1 - (1 - 0.8**5) ** 20),
        (0.5, 32, 4, 1 - (1 - 0.5**4) ** 32),
        (0.8, 450, 20, 1 - (1 - 0.8**20) ** 450),  # Lee et al.'s 9000 hashes
        (0.0, 10, 3, 0.0),
        (1.0, 10, 3, 1.0),
    ]
    for s, bands, rows, want in cases:
        got = impl.lsh_probability(s, bands, rows)
        if not math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-12):
            fail(
                f"lsh_probability({s}, bands={bands}, rows={rows}) returned {float(got):.6g}; "
                f"expected 1 - (1 - s**rows)**bands = {want:.6g}"
            )
    s = np.linspace(0.0, 1.0, 11)
    assert_close(
        np.asarray(impl.lsh_probability(s, 8, 6)),
        1 - (1 - s**6) ** 8,
        what="lsh_probability(s (11,) float64, bands=8, rows=6)",
        rtol=1e-9,
        atol=1e-12,
    )


def test_lsh_candidate_pairs_by_hand(impl):
    sig = np.array(
        [
            [1, 2, 3, 4, 5, 6, 9],  # 0
            [1, 2, 7, 7, 7, 7, 9],  # 1: band 0 equals document 0's band 0
            [3, 4, 1, 2, 0, 0, 9],  # 2: its band 1 is document 0's band 0, its band 0 is 0's band 1
            [8, 8, 8, 8, 5, 6, 0],  # 3: band 2 equals document 0's (column 6 is past the bands)
            [1, 2, 3, 4, 5, 6, 1],  # 4: every band equals document 0's
            [1, 9, 3, 9, 5, 9, 9],  # 5: one value of every band equals document 0's
        ],
        dtype=np.uint64,
    )
    got = as_pairs(impl.lsh_candidate_pairs(sig, 3, 2), "lsh_candidate_pairs(sig (6, 7), 3, 2)")
    expected = [(0, 1), (0, 3), (0, 4), (1, 4), (3, 4)]
    if got != expected:
        fail(
            f"lsh_candidate_pairs(sig (6, 7) uint64, bands=3, rows=2) returned {got}; expected "
            f"{expected}. A pair needs every value of one band equal in the same band: document "
            "2 shares values with 0 only in other bands, 5 matches no band completely"
        )


@given(
    n=st.integers(1, 9),
    bands=st.integers(1, 4),
    rows=st.integers(1, 3),
    extra=st.integers(0, 2),
    seed=st.integers(0, 10_000),
)
def test_lsh_candidate_pairs_match_brute_force(impl, n, bands, rows, extra, seed):
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2, size=(n, bands * rows + extra)).astype(np.uint64)
    got = as_pairs(impl.lsh_candidate_pairs(sig, bands, rows), "lsh_candidate_pairs")
    expected = [
        (i, j)
        for i, j in combinations(range(n), 2)
        if any(
            (sig[i, k * rows : (k + 1) * rows] == sig[j, k * rows : (k + 1) * rows]).all()
            for k in range(bands)
        )
    ]
    if got != expected:
        fail(
            f"lsh_candidate_pairs(sig {sig.shape} of 0s and 1s, bands={bands}, rows={rows}) "
            f"returned {got}; expected {expected} (all pairs agreeing on one whole band)\n"
            f"sig = {sig.tolist()}"
        )


def test_lsh_candidates_follow_the_s_curve(impl):
    # Statistical. 2000 pairs of synthetic signatures whose entries agree independently with
    # probability s; the number of candidate pairs is binomial(2000, lsh_probability(s)), checked
    # with Chernoff's bound (false-failure chance below 1e-7 over the 5 values of s).
    bands, rows, pairs = 6, 4, 2000
    rng = np.random.default_rng(12)
    for s in (0.3, 0.5, 0.6, 0.7, 0.9):
        first = rng.integers(0, 2**31, size=(pairs, bands * rows))
        second = np.where(rng.random(first.shape) < s, first, first + 2**31)
        sig = np.empty((2 * pairs, bands * rows), dtype=np.uint64)
        sig[0::2], sig[1::2] = first, second  # pair t is documents 2t and 2t + 1
        got = as_pairs(impl.lsh_candidate_pairs(sig, bands, rows), "lsh_candidate_pairs")
        hits = sum(1 for i, j in got if i % 2 == 0 and j == i + 1)
        law = 1 - (1 - s**rows) ** bands
        chernoff_check(
            np.array([hits, pairs - hits]),
            np.array([law, 1 - law]),
            f"lsh_candidate_pairs(bands={bands}, rows={rows}) on {pairs} pairs agreeing per entry "
            f"with probability {s}: {hits} candidates, expected about {law * pairs:.0f}",
            cells=10,
        )


def test_near_duplicates_finds_edited_copies(impl):
    vocab = vocabulary(300, 5)
    rng = np.random.default_rng(6)
    words = []
    for _ in range(6):
        base = list(rng.choice(vocab, size=60))
        words += [base, edited(base, 0.01, rng, vocab), edited(base, 0.05, rng, vocab)]
        words.append(edited(base, 0.12, rng, vocab))  # similarity around 0.5: LSH proposes it
    docs = [" ".join(w) for w in words]
    sets = [grams(w, 5) for w in words]
    expected = [
        (i, j)
        for i, j in combinations(range(len(docs)), 2)
        if exact_jaccard(sets[i], sets[j]) >= 0.7
    ]
    what = f"near_duplicates({len(docs)} documents of 60 words, threshold=0.7)"
    got = as_pairs(impl.near_duplicates(docs, threshold=0.7), what)
    if got != expected:
        extra = [
            (i, j, round(exact_jaccard(sets[i], sets[j]), 3))
            for i, j in sorted(set(got) - set(expected))
        ]
        fail(
            f"{what} returned {len(got)} pairs; expected the {len(expected)} pairs of Jaccard "
            f">= 0.7. Missing: {sorted(set(expected) - set(got))[:5]}; unexpected (with their "
            f"Jaccard similarity): {extra[:5]}"
        )


# -- Gopher's quality rules ---------------------------------------------------------------------

PROSE_TEXT = (
    "the old mill stands near a quiet river and its wheel turns with patience through every "
    "season of rain while children gather stones from the shallow bank to build small towers "
    "that have lasted until morning"
)
PROSE = PROSE_TEXT.split()


def prose(n_words, per_line=10, start="", end=""):
    """n_words of ordinary prose in lines of per_line words, each line wrapped in start/end."""
    words = [PROSE[i % len(PROSE)] for i in range(n_words)]
    lines = [" ".join(words[i : i + per_line]) for i in range(0, n_words, per_line)]
    return "\n".join(start + line + end for line in lines)


def replace_words(n_words, every, word):
    """n_words of prose (on one line) with every `every`-th word, from the first, replaced."""
    words = prose(n_words, per_line=n_words).split()
    return " ".join(word if i % every == 0 else w for i, w in enumerate(words))


GOPHER = [
    ("ordinary prose, 60 words", prose(60), True),
    ("50 words (the lower bound)", prose(50), True),
    ("49 words", prose(49), False),
    ("100_001 words", prose(100_001, per_line=1000), False),
    ("mean word length 3.0", " ".join(["abc", "the", "and", "one"] * 15), True),
    ("mean word length 2.4", " ".join(["ab", "the", "and", "to", "of"] * 12), False),
    ("mean word length 10.25", " ".join(["the", "and", "extraordinarily", "x" * 20] * 15), False),
    ("6 hashes in 60 words (0.1)", prose(54) + " #a #b #c #d #e #f", True),
    ("7 hashes in 61 words", prose(54) + " #a #b #c #d #e #f #g", False),
    ("7 ellipses in 60 words", prose(53) + " more... and... so... on... it... goes… on…", False),
    ("9 of 10 lines start with a bullet", prose(90, per_line=9, start="• ")[2:], True),
    ("10 of 10 lines start with a bullet", prose(90, per_line=9, start="- "), False),
    ("3 of 10 lines end with an ellipsis", prose(63, 9) + "\ndone ..." * 3, True),
    ("4 of 10 lines end with an ellipsis", prose(60, 10) + "\nnow…" * 4, False),
    ("80% of words have a letter", replace_words(60, 5, "1999"), True),
    ("75% of words have a letter", replace_words(60, 4, "42,"), False),
    ("only one stop word", " ".join(["the", "river", "turns", "slowly"] * 15), False),
    ("stop words only capitalised", " ".join(["The", "river", "turns", "And"] * 15), True),
    ("stop words with punctuation", " ".join(["river,", "(the", "mill", "and."] * 15), True),
]


@pytest.mark.parametrize(("name", "doc", "keep"), GOPHER, ids=[g[0] for g in GOPHER])
def test_gopher_quality_filter_rules(impl, name, doc, keep):
    got = impl.gopher_quality_filter(doc)
    if not isinstance(got, bool | np.bool_):
        fail(f"gopher_quality_filter should return a bool; got {type(got).__name__}")
    if bool(got) != keep:
        words = doc.split()
        lines = [line for line in doc.splitlines() if line.strip()]
        fail(
            f"gopher_quality_filter(document: {name}) returned {bool(got)}; expected {keep}. "
            f"It has {len(words)} words of mean length "
            f"{sum(map(len, words)) / max(len(words), 1):.3f} and {len(lines)} non-blank "
            f"line(s); it starts {doc[:60]!r}"
        )


# -- mixtures -----------------------------------------------------------------------------------


def check_draws(out, sizes, n, what):
    out = np.asarray(out)
    if out.shape != (n, 2) or out.dtype.kind not in "iu":
        fail(f"{what} should return an int array of shape ({n}, 2); got {out.dtype} {out.shape}")
    k, i = out[:, 0], out[:, 1]
    if (k < 0).any() or (k >= len(sizes)).any():
        fail(f"{what}: a source index is outside 0 .. {len(sizes) - 1}")
    if (i < 0).any() or (i >= np.asarray(sizes)[k]).any():
        fail(f"{what}: a document index is outside its source (sources of sizes {sizes})")
    return out


def test_mixture_sample_shape_and_reproducibility(impl):
    sources = [["a", "b", "c"], ["x"] * 7, ["only"]]
    what = "mixture_sample(3 sources of sizes [3, 7, 1], weights [1, 2, 1], 100, generator)"
    first = impl.mixture_sample(sources, [1, 2, 1], 100, np.random.default_rng(3))
    check_draws(first, [3, 7, 1], 100, what)
    again = impl.mixture_sample(sources, [1, 2, 1], 100, np.random.default_rng(3))
    if not np.array_equal(np.asarray(first), np.asarray(again)):
        fail(f"{what} gave other draws from another default_rng(3): use only `generator`")
    if set(np.asarray(first)[:, 0].tolist()) != {0, 1, 2}:
        # A source of weight 1/4 is missing from 100 draws with chance 0.75**100 < 1e-12.
        fail(f"{what}: in 100 draws every source should appear")
    zero = check_draws(
        impl.mixture_sample(sources, [0, 1, 0], 20, np.random.default_rng(4)), [3, 7, 1], 20, what
    )
    if (zero[:, 0] != 1).any():
        fail("mixture_sample with weights [0, 1, 0] drew from a source of weight 0")


def test_mixture_sample_follows_the_weights(impl):
    # Statistical: the source counts of 20000 draws against the multinomial law of the
    # normalised weights (Chernoff, false-failure chance below 1e-7). The sources differ in size,
    # so weighing them by their sizes is caught.
    sizes, weights, n = [5, 200, 40, 1], [0.5, 0.2, 0.2, 0.1], 20_000
    sources = [list(range(s)) for s in sizes]
    what = f"mixture_sample(sources of sizes {sizes}, weights {weights}, {n}, generator)"
    out = check_draws(
        impl.mixture_sample(sources, weights, n, np.random.default_rng(7)), sizes, n, what
    )
    counts = np.bincount(out[:, 0], minlength=4)
    chernoff_check(counts, np.array(weights), f"{what}: source counts {counts.tolist()}", 4)
    doubled = check_draws(
        impl.mixture_sample(sources, [2 * w for w in weights], n, np.random.default_rng(8)),
        sizes,
        n,
        what,
    )
    counts = np.bincount(doubled[:, 0], minlength=4)
    chernoff_check(counts, np.array(weights), f"{what} with doubled weights (normalise them)", 4)


def test_mixture_sample_epochs_do_not_repeat(impl):
    sizes = [12, 30, 3]
    sources = [[f"doc {k}.{i}" for i in range(s)] for k, s in enumerate(sizes)]
    what = f"mixture_sample(sources of sizes {sizes}, weights [3, 2, 1], 400, generator)"
    out = check_draws(
        impl.mixture_sample(sources, [3, 2, 1], 400, np.random.default_rng(9)), sizes, 400, what
    )
    for k, size in enumerate(sizes):
        drawn = out[out[:, 0] == k, 1]
        for start in range(0, len(drawn), size):
            epoch = drawn[start : start + size]
            if len(set(epoch.tolist())) != len(epoch):
                fail(
                    f"{what}: draws {start} .. {start + len(epoch) - 1} from source {k} (of "
                    f"{size} documents) repeat a document: {epoch.tolist()}; each pass over a "
                    "source must show every document once before any repeats"
                )


def test_mixture_sample_shuffles(impl):
    # Statistical: over 600 generators, the first document drawn from a source of 6 is uniform
    # (Chernoff over 6 cells, false-failure chance below 1e-7); walking 0, 1, 2, ... fails.
    firsts = np.zeros(6, dtype=np.int64)
    for seed in range(600):
        out = np.asarray(impl.mixture_sample([range(6)], [1.0], 2, np.random.default_rng(seed)))
        firsts[out[0, 1]] += 1
    chernoff_check(
        firsts,
        np.full(6, 1 / 6),
        f"mixture_sample([range(6)], [1.0], 2, default_rng(seed)) for 600 seeds: the first "
        f"document drawn came out {firsts.tolist()} times (each epoch is a random permutation)",
        6,
    )


# -- LAION's CLIP filter ------------------------------------------------------------------------


@given(n=st.integers(1, 12), d=st.integers(2, 16), seed=st.integers(0, 10_000))
def test_clip_score_filter_matches_cosine(impl, n, d, seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))
    text = 0.6 * image / np.linalg.norm(image, axis=1, keepdims=True) + rng.normal(size=(n, d)) / 4
    text *= rng.uniform(0.1, 10, size=(n, 1))
    cosine = np.sum(image * text, 1) / np.linalg.norm(image, axis=1) / np.linalg.norm(text, axis=1)
    threshold = float(rng.uniform(0.1, 0.6))
    keep = np.abs(cosine - threshold) > 1e-9  # no pair that rounding decides
    got = np.asarray(impl.clip_score_filter(image[keep], text[keep], threshold))
    what = (
        f"clip_score_filter(image_embs ({keep.sum()}, {d}), text_embs, threshold={threshold:.4f})"
    )
    if got.dtype != np.bool_ or got.shape != (int(keep.sum()),):
        fail(
            f"{what} should return a bool array of shape ({keep.sum()},); got {got.dtype} "
            f"{got.shape}"
        )
    expected = cosine[keep] >= threshold
    if not np.array_equal(got, expected):
        i = int(np.argmax(got != expected))
        fail(
            f"{what}: pair {i} has cosine similarity {cosine[keep][i]:.4f} and norms "
            f"{np.linalg.norm(image[keep][i]):.3g}, {np.linalg.norm(text[keep][i]):.3g}; "
            f"expected keep={expected[i]}, got {got[i]} (normalise each row, then compare)"
        )


def test_clip_score_filter_default_threshold(impl):
    angles = np.arccos([0.27, 0.279, 0.281, 0.3, 0.9, -0.5])
    image = np.tile([[2.0, 0.0, 0.0]], (6, 1))
    text = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1) * 3.0
    got = np.asarray(impl.clip_score_filter(image, text))
    expected = np.array([False, False, True, True, True, False])
    if not np.array_equal(got, expected):
        fail(
            "clip_score_filter(image_embs (6, 3), text_embs (6, 3)) with cosine similarities "
            f"[0.27, 0.279, 0.281, 0.3, 0.9, -0.5] returned {got.tolist()}; expected "
            f"{expected.tolist()} (LAION's English threshold, the default, is 0.28)"
        )
