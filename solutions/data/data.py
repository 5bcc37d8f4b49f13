"""Data at scale: deduplication, MinHash, quality filters and mixtures (Lee et al., 2022).

A language model learns what its corpus repeats. Web text repeats a great deal: boilerplate,
mirrors, templated pages, copies with a word changed. This module builds the cleaning pipeline of
a modern pre-training corpus: exact deduplication on normalised text, near-duplicate detection
with MinHash (Broder, 1997) and locality-sensitive hashing, Gopher's quality rules (Rae et al.,
2021), sampling from a weighted mixture of sources (The Pile, Gao et al., 2020) and LAION's CLIP
filter for image-text pairs (Schuhmann et al., 2022).
"""

from __future__ import annotations

import hashlib
import string
import unicodedata
import zlib
from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "clip_score_filter",
    "exact_dedup",
    "gopher_quality_filter",
    "jaccard",
    "lsh_candidate_pairs",
    "lsh_probability",
    "minhash_signatures",
    "mixture_sample",
    "near_duplicates",
    "normalize",
    "shingles",
]

MERSENNE_PRIME = (1 << 31) - 1  # p, the modulus of MinHash's universal hashing
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's eight
BULLETS = ("•", "●", "○", "◦", "▪", "■", "‣", "-", "*")  # a line "starts with a bullet point"
ELLIPSES = ("...", "…")  # three dots, or the single character U+2026


# -- exact duplicates ---------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The canonical form two documents must share to count as exact duplicates.

    In this order: Unicode NFKC (full-width letters, ligatures and the like become their plain
    forms), lower case (str.lower), every punctuation character removed (Unicode category P*:
    ASCII and non-ASCII alike, such as curly quotes and dashes; symbols such as $ or + stay), then
    every run of whitespace becomes one space and the ends are stripped.
    "  Hello,\tWORLD!! " -> "hello world".
    """
    ### BEGIN SOLUTION
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())
    ### END SOLUTION


def exact_dedup(docs: Sequence[str]) -> list[int]:
    """The indices of the documents to keep: the first of each group with equal normalize(doc).

    docs: D strings -> sorted list of indices into docs. ["a", "B", "A!", "b"] -> [0, 1].
    """
    ### BEGIN SOLUTION
    seen, kept = set(), []
    for i, doc in enumerate(docs):
        # A short fingerprint stands for the whole text: at scale only hashes fit in memory.
        key = hashlib.sha256(normalize(doc).encode("utf-8")).digest()
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept
    ### END SOLUTION


# -- near duplicates: MinHash and LSH ------------------------------------------------------------


def shingles(text: str, ngram: int = 5) -> set[str]:
    """The set of word n-grams of normalize(text), each as its words joined by single spaces.

    With words = normalize(text).split(): the len(words) - ngram + 1 n-grams words[i : i + ngram];
    a text of 1 to ngram words has one shingle, all its words; an empty text has none.
    shingles("The cat sat on the mat", 3) -> {"the cat sat", "cat sat on", "sat on the",
    "on the mat"}.
    """
    ### BEGIN SOLUTION
    words = normalize(text).split()
    if len(words) <= ngram:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}
    ### END SOLUTION


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|, the Jaccard similarity of two sets; 1.0 when both are empty."""
    ### BEGIN SOLUTION
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
    ### END SOLUTION


def minhash_signatures(
    docs: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 0
) -> np.ndarray:
    """MinHash signatures: uint64 (D, num_perm), one row per document.

    The hash family, exactly (so that signatures can be compared between implementations):
      - each shingle s of shingles(doc, ngram) has h(s) = zlib.crc32(s.encode("utf-8")), < 2**32;
      - with p = MERSENNE_PRIME = 2**31 - 1 and rng = np.random.default_rng(seed), draw
        a = rng.integers(1, p, size=num_perm, dtype=np.uint64), then
        b = rng.integers(0, p, size=num_perm, dtype=np.uint64);
      - signature[d, k] = min over the shingles s of doc d of (a[k] * h(s) + b[k]) % p.
    a[k] * h(s) < 2**63, so uint64 arithmetic is exact. A document without shingles (no words)
    gets p in every entry. Two documents agree in entry k with probability close to the Jaccard
    similarity of their shingle sets.

    Vectorise over the permutations (compute all num_perm hashes of a document's shingles as one
    array): a Python loop over the num_perm hash functions is graded as too slow.
    """
    ### BEGIN SOLUTION
    p = MERSENNE_PRIME
    rng = np.random.default_rng(seed)
    a = rng.integers(1, p, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, p, size=num_perm, dtype=np.uint64)
    signatures = np.full((len(docs), num_perm), p, dtype=np.uint64)
    for d, doc in enumerate(docs):
        h = np.array([zlib.crc32(s.encode("utf-8")) for s in shingles(doc, ngram)], dtype=np.uint64)
        if h.size:
            # Each (a, b) is a random "permutation" of the hash values; the min under it is the
            # first shingle in that order. (n, 1) * (num_perm,) -> (n, num_perm), min over n.
            signatures[d] = ((h[:, None] * a + b) % p).min(axis=0)
    return signatures
    ### END SOLUTION


def lsh_candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> list[tuple[int, int]]:
    """The pairs of documents whose signatures agree on every entry of at least one band.

    signatures (D, num_perm), with bands * rows <= num_perm; band k is the columns
    k * rows ... (k + 1) * rows - 1 (columns past bands * rows are unused). A document only meets
    the same band of another document. Returns the sorted list of distinct pairs (i, j), i < j.
    """
    if bands * rows > signatures.shape[1]:
        raise ValueError(
            f"lsh_candidate_pairs: {bands} bands of {rows} rows need {bands * rows} signature "
            f"columns; signatures has {signatures.shape[1]}"
        )
    ### BEGIN SOLUTION
    pairs = set()
    for k in range(bands):
        # One hash table per band: documents land in the same bucket only when all `rows`
        # values of this band agree, which happens with probability about s ** rows.
        buckets: dict[bytes, list[int]] = {}
        block = np.ascontiguousarray(signatures[:, k * rows : (k + 1) * rows])
        for d in range(len(block)):
            buckets.setdefault(block[d].tobytes(), []).append(d)
        for members in buckets.values():
            pairs.update(combinations(members, 2))
    return sorted(pairs)
    ### END SOLUTION


def lsh_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """The chance that two documents of Jaccard similarity s become a candidate pair.

    1 - (1 - s**rows)**bands: a band matches with probability s**rows, and the pair is a candidate
    unless all `bands` bands miss. s: a float or an array of them (the result has its shape).
    """
    ### BEGIN SOLUTION
    return 1.0 - (1.0 - s**rows) ** bands
    ### END SOLUTION


def near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int = 32,
    rows: int = 4,
    ngram: int = 5,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """The pairs (i, j), i < j, that are LSH candidates and have jaccard >= threshold.

    Signatures come from minhash_signatures(docs, num_perm, ngram, seed), candidates from
    lsh_candidate_pairs(signatures, bands, rows); each candidate is then checked with the exact
    Jaccard similarity of shingles(doc, ngram). Sorted, like lsh_candidate_pairs.
    """
    ### BEGIN SOLUTION
    signatures = minhash_signatures(docs, num_perm, ngram, seed)
    sets = [shingles(doc, ngram) for doc in docs]
    # LSH only proposes; the exact similarity of the few candidates decides (false positives go).
    return [
        (i, j)
        for i, j in lsh_candidate_pairs(signatures, bands, rows)
        if jaccard(sets[i], sets[j]) >= threshold
    ]
    ### END SOLUTION


# -- quality ------------------------------------------------------------------------------------


def gopher_quality_filter(doc: str) -> bool:
    """True to keep the document, False when one of Gopher's quality rules removes it.

    Words are doc.split(); lines are doc.splitlines() that hold more than whitespace. Keep a
    document only if all hold:
      1. 50 <= number of words <= 100_000;
      2. 3 <= mean word length (characters per word) <= 10;
      3. doc.count("#") / number of words <= 0.1;
      4. (occurrences of "..." plus of "…") / number of words <= 0.1;
      5. at most 90% of lines start with a bullet (line.lstrip().startswith(BULLETS));
      6. at most 30% of lines end with an ellipsis (line.rstrip().endswith(ELLIPSES));
      7. at least 80% of words hold an alphabetic character (str.isalpha on some character);
      8. at least two different STOP_WORDS appear among the words, each compared lower-cased
         and with string.punctuation stripped from its ends ("The," counts as "the").
    """
    ### BEGIN SOLUTION
    words = doc.split()
    n = len(words)
    if not 50 <= n <= 100_000:
        return False
    if not 3 <= sum(len(w) for w in words) / n <= 10:
        return False
    # Symbol-heavy text: hashtag lists, truncated snippets ending in "...".
    if doc.count("#") / n > 0.1 or sum(doc.count(e) for e in ELLIPSES) / n > 0.1:
        return False
    lines = [line for line in doc.splitlines() if line.strip()]
    if sum(line.lstrip().startswith(BULLETS) for line in lines) > 0.9 * len(lines):
        return False
    if sum(line.rstrip().endswith(ELLIPSES) for line in lines) > 0.3 * len(lines):
        return False
    if sum(any(c.isalpha() for c in w) for w in words) < 0.8 * n:
        return False
    # Real English prose uses function words; keyword lists and tables do not.
    found = {w.strip(string.punctuation).lower() for w in words} & STOP_WORDS
    return len(found) >= 2
    ### END SOLUTION


# -- mixtures -----------------------------------------------------------------------------------


def mixture_sample(
    sources: Sequence[Sequence], weights: Sequence[float], n: int, generator: np.random.Generator
) -> np.ndarray:
    """n draws from a weighted mixture of sources: int64 (n, 2), row t = (k, i), sources[k][i].

    Each draw picks source k with probability weights[k] / sum(weights) (weights >= 0, not all 0),
    independently of the others. Within a source the draws walk through its documents in a random
    order, a fresh permutation for every pass (epoch): a source drawn more often than it has
    documents repeats them evenly, one never repeats before all have come out. All randomness
    comes from `generator`, so the same generator state gives the same draws.
    """
    ### BEGIN SOLUTION
    p = np.asarray(weights, dtype=np.float64)
    which = generator.choice(len(sources), size=n, p=p / p.sum())
    out = np.empty((n, 2), dtype=np.int64)
    out[:, 0] = which
    for k, source in enumerate(sources):
        picked = np.flatnonzero(which == k)
        if picked.size:
            # A source with more draws than documents is seen for several epochs (The Pile ran
            # Wikipedia three times); each epoch is a new shuffle, so repeats spread out evenly.
            epochs = -(-picked.size // len(source))
            order = np.concatenate([generator.permutation(len(source)) for _ in range(epochs)])
            out[picked, 1] = order[: picked.size]
    return out
    ### END SOLUTION


# -- image-text pairs ---------------------------------------------------------------------------


def clip_score_filter(
    image_embs: np.ndarray, text_embs: np.ndarray, threshold: float = 0.28
) -> np.ndarray:
    """LAION's rule: keep pair i when the cosine similarity of its two embeddings >= threshold.

    image_embs (N, d), text_embs (N, d): row i of each is pair i (CLIP ViT-B/32 embeddings in
    LAION; any vectors here, of any length). Returns a bool (N,) mask, True = keep.
    """
    ### BEGIN SOLUTION
    image = image_embs / np.linalg.norm(image_embs, axis=1, keepdims=True)
    text = text_embs / np.linalg.norm(text_embs, axis=1, keepdims=True)
    return np.sum(image * text, axis=1) >= threshold
    ### END SOLUTION
