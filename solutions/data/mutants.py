"""Common mistakes in a data pipeline, each replacing one function of the reference.

The reference's later functions call the earlier ones through the module (near_duplicates calls
shingles, jaccard, minhash_signatures and lsh_candidate_pairs), so a mistake in an early function
carries into them; the order below puts the early functions first, so that the diagnosis names the
mistake at its source.
"""

import string
import unicodedata
import zlib

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("data")


@mutant(
    "normalize",
    "normalize removes only ASCII punctuation (string.punctuation): curly quotes, dashes and other "
    "Unicode punctuation stay, and ASCII symbols such as $ + < = > ^ ` | ~ go; remove exactly the "
    "characters whose unicodedata.category starts with 'P'",
)
def punctuation_ascii_only(text):
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


@mutant(
    "exact_dedup",
    "exact_dedup keeps the last copy of each document ({normalize(doc): i} overwrites earlier "
    "indices); keep the first one and return the indices in order",
)
def dedup_keeps_last(docs):
    return sorted({ref.normalize(doc): i for i, doc in enumerate(docs)}.values())


@mutant(
    "shingles",
    "shingles stops one n-gram early: range(len(words) - ngram) misses the last n-gram; there are "
    "len(words) - ngram + 1 of them",
)
def shingles_drop_the_last(text, ngram=5):
    words = ref.normalize(text).split()
    if len(words) <= ngram:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram)}


@mutant(
    "jaccard",
    "jaccard divides by |a| + |b|, which counts the shared elements twice; divide by the size of "
    "the union, |a | b| = |a| + |b| - |a & b|",
)
def jaccard_over_the_sum_of_sizes(a, b):
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / (len(a) + len(b))


@mutant(
    "minhash_signatures",
    "minhash_signatures loops over the hash functions in Python, drawing each (a, b) pair in turn: "
    "draw all of a, then all of b, as arrays of num_perm, and hash every shingle under every "
    "function in one array operation (the loop is also far too slow)",
)
def minhash_loops_over_permutations(docs, num_perm=128, ngram=5, seed=0):
    p = ref.MERSENNE_PRIME
    rng = np.random.default_rng(seed)
    hashes = [
        np.array([zlib.crc32(s.encode("utf-8")) for s in ref.shingles(doc, ngram)], np.uint64)
        for doc in docs
    ]
    signatures = np.full((len(docs), num_perm), p, dtype=np.uint64)
    for k in range(num_perm):
        a = rng.integers(1, p, dtype=np.uint64)
        b = rng.integers(0, p, dtype=np.uint64)
        for d, h in enumerate(hashes):
            if h.size:
                signatures[d, k] = ((a * h + b) % p).min()
    return signatures


@mutant(
    "lsh_candidate_pairs",
    "lsh_candidate_pairs puts every band in one hash table, so band 1 of one document can meet "
    "band 2 of another; keep one table per band (or put the band's index in the key)",
)
def lsh_buckets_shared_across_bands(signatures, bands, rows):
    buckets = {}
    for k in range(bands):
        block = np.ascontiguousarray(signatures[:, k * rows : (k + 1) * rows])
        for d in range(len(block)):
            buckets.setdefault(block[d].tobytes(), set()).add(d)
    pairs = set()
    for members in buckets.values():
        pairs.update((i, j) for i in members for j in members if i < j)
    return sorted(pairs)


@mutant(
    "lsh_probability",
    "lsh_probability swaps bands and rows: a band matches with probability s**rows (all its rows "
    "agree), and a pair is missed only if all bands miss: 1 - (1 - s**rows)**bands",
)
def lsh_probability_swapped(s, bands, rows):
    return 1.0 - (1.0 - s**bands) ** rows


@mutant(
    "near_duplicates",
    "near_duplicates returns every LSH candidate; candidates are only proposals, keep those whose "
    "exact Jaccard similarity of shingles reaches the threshold",
)
def near_duplicates_unverified(
    docs, threshold=0.8, num_perm=128, bands=32, rows=4, ngram=5, seed=0
):
    signatures = ref.minhash_signatures(docs, num_perm, ngram, seed)
    return ref.lsh_candidate_pairs(signatures, bands, rows)


def _gopher(doc, *, lower_stop_words=True, length_with_spaces=False):
    """The reference's eight rules with one of the mistakes below switched on."""
    words = doc.split()
    n = len(words)
    if not 50 <= n <= 100_000:
        return False
    mean_length = len(doc) / n if length_with_spaces else sum(len(w) for w in words) / n
    if not 3 <= mean_length <= 10:
        return False
    if doc.count("#") / n > 0.1 or sum(doc.count(e) for e in ref.ELLIPSES) / n > 0.1:
        return False
    lines = [line for line in doc.splitlines() if line.strip()]
    if sum(line.lstrip().startswith(ref.BULLETS) for line in lines) > 0.9 * len(lines):
        return False
    if sum(line.rstrip().endswith(ref.ELLIPSES) for line in lines) > 0.3 * len(lines):
        return False
    if sum(any(c.isalpha() for c in w) for w in words) < 0.8 * n:
        return False
    stripped = (w.strip(string.punctuation) for w in words)
    found = {w.lower() if lower_stop_words else w for w in stripped} & ref.STOP_WORDS
    return len(found) >= 2


@mutant(
    "gopher_quality_filter",
    "gopher_quality_filter compares stop words without lower-casing them, so 'The' and 'And' do "
    "not count; lower-case each word (and strip its punctuation) before looking it up",
)
def stop_words_case_sensitive(doc):
    return _gopher(doc, lower_stop_words=False)


@mutant(
    "gopher_quality_filter",
    "gopher_quality_filter takes the mean word length as len(doc) / words, which counts spaces and "
    "newlines; average the lengths of the words themselves",
)
def mean_word_length_counts_spaces(doc):
    return _gopher(doc, length_with_spaces=True)


@mutant(
    "mixture_sample",
    "mixture_sample draws documents with replacement, so a source repeats documents before it has "
    "shown them all; walk a fresh permutation of each source for every epoch",
)
def mixture_with_replacement(sources, weights, n, generator):
    p = np.asarray(weights, dtype=np.float64)
    which = generator.choice(len(sources), size=n, p=p / p.sum())
    out = np.empty((n, 2), dtype=np.int64)
    out[:, 0] = which
    for k, source in enumerate(sources):
        picked = np.flatnonzero(which == k)
        out[picked, 1] = generator.integers(0, len(source), size=picked.size)
    return out


@mutant(
    "mixture_sample",
    "mixture_sample weighs each source by weight times its number of documents (The Pile's epochs "
    "times size); here weights are the sampling probabilities themselves, once normalised",
)
def mixture_weights_times_sizes(sources, weights, n, generator):
    sized = [w * len(s) for w, s in zip(weights, sources, strict=True)]
    return ref.mixture_sample(sources, sized, n, generator)


@mutant(
    "clip_score_filter",
    "clip_score_filter thresholds the raw dot product; LAION's score is the cosine similarity, so "
    "divide each embedding by its norm first",
)
def clip_dot_product(image_embs, text_embs, threshold=0.28):
    return np.sum(image_embs * text_embs, axis=1) >= threshold
