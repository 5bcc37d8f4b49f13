"""Hidden grading cases for data: texts, corpora and settings unlike the public specs'.

Every case but one is exact: the functions are deterministic, and MinHash's hash family is fixed
by the README, so outputs are compared for equality (floats within 1e-12). The mixture case is
statistical: it checks the learner's draws against the exact law computed here from the inputs,
never against the reference's draws, so any order of random calls passes; its chance of failing a
correct sampler is below 1e-7. Speed is graded on MinHash alone, the one computation whose cost a
learner's choice changes by a large factor.
"""

import numpy as np

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7  # the false-failure chance of the statistical case
EXACT = {"rtol": 0.0, "atol": 0.0}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def normalize_texts(m, texts):
    return [m.normalize(t) for t in texts]


def dedup(m, docs):
    return [int(i) for i in m.exact_dedup(docs)]


def shingle_lists(m, texts, ngrams):
    return [sorted(m.shingles(t, n)) for t, n in zip(texts, ngrams, strict=True)]


def jaccards(m, pairs):
    return [float(m.jaccard(set(a), set(b))) for a, b in pairs]


def signatures(m, docs, num_perm, ngram, seed):
    """As int64 (every entry is below 2**31), so that differences print as numbers."""
    import numpy as np

    return np.asarray(m.minhash_signatures(docs, num_perm, ngram, seed)).astype(np.int64)


def signature_rows(m, docs, num_perm, ngram, seed):
    """Every tenth row, as int64: the time is the computation's, not that of writing the array."""
    import numpy as np

    return np.asarray(m.minhash_signatures(docs, num_perm, ngram, seed))[::10].astype(np.int64)


def candidate_pairs(m, signatures, settings):
    return [
        [[int(i), int(j)] for i, j in m.lsh_candidate_pairs(signatures, bands, rows)]
        for bands, rows in settings
    ]


def probabilities(m, s, settings):
    import numpy as np

    return np.stack([np.asarray(m.lsh_probability(s, b, r), dtype=np.float64) for b, r in settings])


def near_pairs(m, docs, threshold, num_perm, bands, rows, ngram, seed):
    pairs = m.near_duplicates(docs, threshold, num_perm, bands, rows, ngram, seed)
    return [[int(i), int(j)] for i, j in pairs]


def gopher(m, docs):
    return [bool(m.gopher_quality_filter(d)) for d in docs]


def mixture(m, sizes, weights, n, seed):
    import numpy as np

    sources = [[f"source {k} document {i}" for i in range(s)] for k, s in enumerate(sizes)]
    return np.asarray(m.mixture_sample(sources, weights, n, np.random.default_rng(seed)))


def clip(m, image_embs, text_embs, thresholds):
    """The masks as 0/1 integers (the grader's comparison reports differences in numbers)."""
    import numpy as np

    masks = [m.clip_score_filter(image_embs, text_embs)]
    masks += [m.clip_score_filter(image_embs, text_embs, t) for t in thresholds]
    return np.stack([np.asarray(mask).astype(np.int64) for mask in masks])


# -- inputs: built on the trusted side from a seed ----------------------------------------------


VOCABULARY = [f"{chr(97 + i % 26)}{chr(97 + (i * 7) % 26)}{i}" for i in range(3000)]


def _words(rng, n, size=400):
    """n words drawn from the first `size` of VOCABULARY."""
    return [VOCABULARY[int(i)] for i in rng.integers(0, size, n)]


def tricky_texts(seed):
    return {
        "texts": [
            "«Bonjour», dit-il. ¿Qué? ¡Sí!",
            "ＨＥＬＬＯ，　ｗｏｒｌｄ！",  # full-width letters, comma, space and exclamation mark
            "C++ & C# cost $3 (approx.) — 100%",
            "line one\r\nline\u00a0two\u2003three\x0bfour",
            "Ⅻ chapters; x² and ½ … «end»",
            "O'Neil's   \"quoted\" [text] {braces} <tags> @user #tag",
            "ǅemal ﬂoor ẞig ΣΊΣΥΦΟΣ",
            "\t\n  ",
        ]
    }


def near_copies(seed):
    rng = np.random.default_rng(seed)
    base = [" ".join(_words(rng, 12)) for _ in range(7)]
    variants = [
        lambda s: s,
        lambda s: s.upper(),
        lambda s: "— " + s.replace(" ", " … ") + " —",
        lambda s: s.title().replace(" ", "\u3000"),  # ideographic spaces
        lambda s: "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" else c for c in s),
        lambda s: s + " extra",
    ]
    docs = [
        variants[int(rng.integers(len(variants)))](base[int(rng.integers(7))]) for _ in range(40)
    ]
    return {"docs": docs}


def shingle_inputs(seed):
    rng = np.random.default_rng(seed)
    texts = [
        " ".join(_words(rng, 20)),
        "“Good” morning, Dr. Smith — how are you?",
        " ".join(_words(rng, 7)),
        " ".join(_words(rng, 3)),
        "same same same same same same",
        "",
    ]
    return {"texts": texts, "ngrams": [3, 2, 7, 4, 2, 3]}


def set_pairs(seed):
    rng = np.random.default_rng(seed)
    pairs = [[[], []], [[1], []], [[1, 2, 3], [1, 2, 3]]]
    for _ in range(20):
        a = rng.choice(30, size=int(rng.integers(1, 20)), replace=False).tolist()
        b = rng.choice(30, size=int(rng.integers(1, 20)), replace=False).tolist()
        pairs.append([a, b])
    return {"pairs": pairs}


def minhash_corpus(seed):
    rng = np.random.default_rng(seed)
    base = _words(rng, 50)
    docs = [" ".join(base), " ".join(base[:45] + _words(rng, 5)), "", "Short — “text”!"]
    docs += [" ".join(_words(rng, int(rng.integers(1, 40)))) for _ in range(8)]
    return {"docs": docs, "num_perm": 48, "ngram": 3, "seed": 20220714}


def speed_corpus(seed):
    rng = np.random.default_rng(seed)
    docs = [" ".join(_words(rng, int(rng.integers(40, 80)), 3000)) for _ in range(300)]
    return {"docs": docs, "num_perm": 256, "ngram": 5, "seed": seed}


def banded_signatures(seed):
    rng = np.random.default_rng(seed)
    # Values from {0, 1, 2}: bands of 2 collide often, within a band and across bands.
    return {
        "signatures": rng.integers(0, 3, size=(30, 13)).astype(np.uint64),
        "settings": [[6, 2], [4, 3], [1, 5], [3, 1]],
    }


def probability_grid(seed):
    return {"s": np.linspace(0.0, 1.0, 21), "settings": [[20, 5], [450, 20], [3, 7], [1, 1]]}


def near_corpus(seed):
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(5):
        base = _words(rng, 40)
        for changes in (0, 1, 2, 4, 8):
            copy = list(base)
            for i in rng.choice(40, size=changes, replace=False):
                copy[int(i)] = _words(rng, 1)[0]
            docs.append(" ".join(copy).capitalize() + ".")
    return {
        "docs": docs,
        "threshold": 0.6,
        "num_perm": 96,
        "bands": 24,
        "rows": 4,
        "ngram": 4,
        "seed": 11,
    }


def gopher_docs(seed):
    rng = np.random.default_rng(seed)
    sentence = "A careful reader will find that the garden behind the house grows with the seasons"
    words = sentence.split()

    def text(n, per_line=12):
        ws = [words[i % len(words)] for i in range(n)]
        return "\n".join(" ".join(ws[i : i + per_line]) for i in range(0, n, per_line))

    return {
        "docs": [
            text(80),
            text(51),
            " ".join(["And", "The", "garden", "grows"] * 20),  # stop words capitalised only
            " ".join(["ox", "is", "to", "be", "an", "the", "and", "ax"] * 10),  # mean length 2.25
            " ".join(["the", "and", "characteristically", "x" * 15] * 15),  # mean length 10
            text(70) + " ###",
            "\n".join("* " + line for line in text(96, 8).splitlines()),
            text(64, 8) + "\nwait…\nand…",
            " ".join(
                str(int(v)) if i % 3 else "the and" for i, v in enumerate(rng.integers(0, 99, 90))
            ),
            text(60).replace("the", "th#"),
        ]
    }


def mixture_inputs(seed):
    return {"sizes": [7, 150, 40, 2], "weights": [4.0, 3.0, 2.5, 0.5], "n": 30_000, "seed": seed}


def compare_mixture(actual, expected, inputs):
    """The draws against the exact law: source counts (Chernoff) and no repeat within an epoch."""
    sizes, weights, n = inputs["sizes"], np.asarray(inputs["weights"]), inputs["n"]
    out = np.asarray(actual)
    if out.shape != (n, 2) or out.dtype.kind not in "iu":
        return f"mixture_sample should return int ({n}, 2); got {out.dtype} {out.shape}"
    k, i = out[:, 0], out[:, 1]
    if k.min() < 0 or k.max() >= len(sizes) or i.min() < 0 or (i >= np.asarray(sizes)[k]).any():
        return "mixture_sample returned a source or document index out of range"
    probs, counts = weights / weights.sum(), np.bincount(k, minlength=len(sizes))
    for source, (count, p) in enumerate(zip(counts, probs, strict=True)):
        a = count / n
        if chernoff_gap(count, n, p, len(sizes), DELTA):
            return (
                f"mixture_sample: source {source} was drawn {count} times in {n} ({a:.4f}); its "
                f"weight gives probability {p:.4f}, a gap with a chance below {DELTA:g}"
            )
    for source, size in enumerate(sizes):
        drawn = i[k == source]
        for start in range(0, len(drawn), size):
            epoch = drawn[start : start + size]
            if len(np.unique(epoch)) != len(epoch):
                return (
                    f"mixture_sample: draws {start} .. {start + len(epoch) - 1} of source "
                    f"{source} ({size} documents) repeat a document within one epoch"
                )
    return None


def clip_inputs(seed):
    rng = np.random.default_rng(seed)
    n, d = 400, 48
    image = rng.normal(size=(n, d)) * rng.uniform(0.05, 20.0, size=(n, 1))
    unit = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = (rng.uniform(0, 0.9, size=(n, 1)) * unit + rng.normal(size=(n, d)) / 12) * rng.uniform(
        0.05, 20.0, size=(n, 1)
    )
    cosine = np.sum(unit * text, axis=1) / np.linalg.norm(text, axis=1)
    thresholds = [0.1, 0.26, 0.3, 0.5]
    ties = np.min(np.abs(cosine[:, None] - np.array([0.28, *thresholds])), axis=1) < 1e-9
    return {"image_embs": image[~ties], "text_embs": text[~ties], "thresholds": thresholds}


CASES = [
    Case(
        "normalize: Unicode punctuation, NFKC, odd whitespace",
        call=normalize_texts,
        inputs=tricky_texts,
        points=1,
    ),
    Case(
        "exact_dedup on 40 copies of 7 texts in 6 disguises",
        call=dedup,
        inputs=near_copies,
        points=1,
        seed=3,
    ),
    Case(
        "shingles with ngram 2 to 7, short and empty texts",
        call=shingle_lists,
        inputs=shingle_inputs,
        points=1,
        seed=5,
    ),
    Case(
        "jaccard on 23 pairs of sets",
        call=jaccards,
        inputs=set_pairs,
        points=1,
        seed=7,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "minhash_signatures, num_perm 48, ngram 3, 12 documents",
        call=signatures,
        inputs=minhash_corpus,
        points=2,
        seed=9,
        **EXACT,
    ),
    Case(
        "lsh_candidate_pairs on (30, 13) signatures, four settings",
        call=candidate_pairs,
        inputs=banded_signatures,
        points=2,
        seed=13,
    ),
    Case(
        "lsh_probability on a grid of s, four settings",
        call=probabilities,
        inputs=probability_grid,
        points=1,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "near_duplicates, threshold 0.6, 24 bands of 4",
        call=near_pairs,
        inputs=near_corpus,
        points=2,
        seed=17,
    ),
    Case(
        "gopher_quality_filter on 10 documents", call=gopher, inputs=gopher_docs, points=2, seed=19
    ),
    Case(
        "mixture_sample: 30000 draws from 4 sources (statistical)",
        call=mixture,
        inputs=mixture_inputs,
        compare=compare_mixture,
        points=2,
        seed=23,
    ),
    Case(
        "clip_score_filter on 400 pairs, five thresholds",
        call=clip,
        inputs=clip_inputs,
        points=1,
        seed=29,
    ),
    Case(
        "speed: minhash_signatures of 300 documents, num_perm 256",
        call=signature_rows,
        inputs=speed_corpus,
        points=1,
        seed=31,
        speed_ratio=4.0,
        speed_points=2,
        **EXACT,
    ),
]
