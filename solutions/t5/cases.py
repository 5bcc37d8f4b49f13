"""Hidden grading cases for t5.

Inputs differ from the public specs': other lengths, densities and span lengths, T5's own
vocabulary size (32,100, whose last 100 ids are the sentinels <extra_id_0> = 32099, ...), and
masks with long spans and clean endings. Whatever is deterministic for a correct implementation is
compared exactly: T5's counts, the sentinel layout for given masks, and, for random masks, the
lengths of inputs and targets and the round trip. The one statistical case reduces many masks to
counts and compares them with the reference's by a two-sample test, so the learner's order of
random draws does not matter, and the same test names a known mistake from its counts.
"""

import math

import torch

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7  # the false-failure chance of the statistical case
T5_VOCAB = 32100  # 32,000 SentencePiece ids and 100 sentinels


def _t5_counts(length, density, mean):
    noise = min(max(round(length * density), 1), length - 1)
    return noise, min(max(round(noise / mean), 1), length - noise)


def _no_tie(x):
    return abs(x - math.floor(x) - 0.5) > 1e-6


# ---------------------------------------------------------------- counts, exact


def mask_counts(m, settings, seed):
    """[noise tokens, noise spans, first token is noise, last token is noise] per setting."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    out = []
    for length, density, mean in settings:
        mask = torch.as_tensor(m.random_spans_noise_mask(int(length), density, mean, generator=g))
        mask = mask.bool().cpu()
        starts = mask & ~torch.cat([mask.new_zeros(1), mask[:-1]])
        out.append([int(mask.sum()), int(starts.sum()), int(mask[0]), int(mask[-1])])
    return out


def count_settings(seed):
    g = torch.Generator().manual_seed(seed)
    settings = [[2, 0.5, 1.0], [3, 0.1, 3.0], [4, 0.9, 2.0], [7, 0.97, 1.0], [9, 0.6, 1.0]]
    while len(settings) < 40:
        length = int(torch.randint(5, 2000, (1,), generator=g))
        density = round(float(torch.rand(1, generator=g)) * 0.6 + 0.02, 3)
        mean = round(float(torch.rand(1, generator=g)) * 9 + 1, 2)
        noise, _ = _t5_counts(length, density, mean)
        if _no_tie(length * density) and _no_tie(noise / mean):  # keep clear of rounding ties
            settings.append([length, density, mean])
    return {"settings": settings, "seed": seed}


def compare_counts(actual, expected, inputs):
    if not isinstance(actual, list) or len(actual) != len(expected):
        return "random_spans_noise_mask: the counts could not be read"
    for (length, density, mean), got, want in zip(
        inputs["settings"], actual, expected, strict=True
    ):
        if got != want:
            what = f"random_spans_noise_mask({length}, {density}, {mean})"
            if got[:2] != want[:2]:
                return (
                    f"{what} has {got[0]} noise tokens in {got[1]} spans; T5's rule gives "
                    f"{want[0]} in {want[1]}"
                )
            return (
                f"{what} starts with {'noise' if got[2] else 'a clean token'} and ends with "
                f"{'noise' if got[3] else 'a clean token'}; T5's mask starts clean and ends noisy"
            )
    return None


# ---------------------------------------------------------------- span lengths, statistical


def span_features(m, length, density, mean, n_masks, seed):
    """Counts {name: [k, n]} over n_masks masks: how many have T5's counts and layout, and the
    lengths of the first noise span and of the first clean span."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    masks = torch.stack(
        [
            torch.as_tensor(m.random_spans_noise_mask(int(length), density, mean, generator=g))
            for _ in range(int(n_masks))
        ]
    )
    masks = masks.bool().cpu()  # (n_masks, length)
    noise = min(max(round(length * density), 1), length - 1)
    spans = min(max(round(noise / mean), 1), length - noise)
    starts = masks & ~torch.cat([masks.new_zeros(len(masks), 1), masks[:, :-1]], dim=1)
    layout = {
        "T5's noise count": masks.sum(1) == noise,
        "T5's span count": starts.sum(1) == spans,
        "a clean start": ~masks[:, 0],
        "a noisy end": masks[:, -1],
    }
    out = {"layout": {f"masks with {k}": [int(v.sum()), int(n_masks)] for k, v in layout.items()}}
    out["lengths"] = {}
    position = torch.arange(length)

    def first_index(flags):  # per row, the first True (length if none)
        return torch.where(flags.any(1), flags.int().argmax(1), length)

    for name, inside in (("first noise span", masks), ("first clean span", ~masks)):
        begin = first_index(inside)
        end = first_index(~inside & (position >= begin[:, None]))
        hist = torch.bincount(end - begin, minlength=length + 1).tolist()
        for n, k in enumerate(hist):
            out["lengths"][f"masks whose {name} has length {n}"] = [k, int(n_masks)]
    return out


def compare_span_features(actual, expected, inputs):
    """The layout counts are all or nothing for T5's rule, so where `expected` has all (or none)
    they must match exactly. Every other count, k1 of n1 (learner) against k2 of n2: given the
    pooled k1 + k2, k1 is hypergeometric, and Chernoff's bound (valid without replacement,
    Hoeffding 1963) gives P(n1 KL(k1 / n1 || r) >= c) <= 2 exp(-c), r = (k1 + k2) / (n1 + n2).
    With c = ln(2 cells / DELTA), the union bound keeps a false failure below DELTA = 1e-7."""
    if not isinstance(actual, dict) or set(actual) != set(expected):
        return "random_spans_noise_mask: the masks could not be read"
    what = f"random_spans_noise_mask({inputs['length']}, {inputs['density']}, {inputs['mean']})"
    cells = len(expected["layout"]) + len(expected["lengths"])
    for group in ("layout", "lengths"):
        for name, (k2, n2) in expected[group].items():
            k1, n1 = actual[group][name]
            if group == "layout" and k2 in (0, n2):
                if k1 != k2:
                    return f"{what}: {k1} of {n1} {name}; expected {k2}"
                continue
            r = (k1 + k2) / (n1 + n2)
            if 0 < r < 1 and chernoff_gap(k1, n1, r, cells, DELTA):
                return (
                    f"{what}: {k1} of {n1} {name} ({k1 / n1:.2%}); the reference has {k2} of {n2} "
                    f"({k2 / n2:.2%}), a gap with a chance below {DELTA:g} for a correct "
                    "implementation: cut the spans uniformly at random"
                )
    return None


def span_statistics(seed):
    # 12 noise tokens in 5 spans, 48 clean tokens in 5 spans.
    return {"length": 60, "density": 0.2, "mean": 2.5, "n_masks": 1000, "seed": seed}


# ---------------------------------------------------------------- span_corrupt, exact


def corrupt_given(m, docs, masks, vocab_size):
    import torch

    inputs, targets = [], []
    for ids, mask in zip(docs, masks, strict=True):
        i, t = m.span_corrupt(ids, vocab_size, noise_mask=mask)
        inputs.append(torch.as_tensor(i))
        targets.append(torch.as_tensor(t))
    return {"inputs": inputs, "targets": targets}


def given_masks(seed):
    g = torch.Generator().manual_seed(seed)
    layouts = [
        ".x",
        "..xxxxxxxxxx",  # one long span at the end
        ".x.x.x.x.x.x.",  # single-token spans, ending clean: a closing sentinel
        "........",  # no noise at all: the targets are one sentinel
        "...xx....xxx.....x..xxxx...",
    ]
    masks = [torch.tensor([c == "x" for c in layout]) for layout in layouts]
    long = torch.rand(300, generator=g) < 0.3
    long[0] = False
    masks.append(long)
    docs = [torch.randint(0, T5_VOCAB - 100, mask.shape, generator=g) for mask in masks]
    return {"docs": docs, "masks": masks, "vocab_size": T5_VOCAB}


def corrupt_random(m, docs, settings, vocab_size, seed):
    """Per document: [len(inputs), len(targets), merged back == ids, sentinels count down from
    vocab_size - 1, ids unchanged]."""
    import torch

    g = torch.Generator(device=docs[0].device).manual_seed(int(seed))
    out = []
    for ids, (density, mean) in zip(docs, settings, strict=True):
        before = ids.clone()
        inputs, targets = m.span_corrupt(ids, vocab_size, density, mean, generator=g)
        inputs, targets = torch.as_tensor(inputs).tolist(), torch.as_tensor(targets).tolist()
        first_sentinel = vocab_size - 100
        hidden, current = {}, None
        for t in targets:
            if t >= first_sentinel:
                current = hidden.setdefault(t, [])
            elif current is not None:
                current.append(t)
        merged = []
        for t in inputs:
            if t >= first_sentinel:
                merged.extend(hidden.get(t, []))
            else:
                merged.append(t)
        sentinels = [t for t in inputs if t >= first_sentinel]
        counting_down = sentinels == list(
            range(vocab_size - 1, vocab_size - 1 - len(sentinels), -1)
        )
        out.append(
            [
                len(inputs),
                len(targets),
                merged == before.tolist(),
                counting_down,
                torch.equal(ids, before),
            ]
        )
    return out


def random_docs(seed):
    g = torch.Generator().manual_seed(seed)
    docs, settings = [], []
    while len(docs) < 24:
        length = int(torch.randint(2, 700, (1,), generator=g))
        density = [0.15, 0.15, 0.3, 0.5][len(docs) % 4]
        mean = [3.0, 8.0, 1.0, 2.5][len(docs) // 6 % 4]
        noise, _ = _t5_counts(length, density, mean)
        if _no_tie(length * density) and _no_tie(noise / mean):
            docs.append(torch.randint(0, T5_VOCAB - 100, (length,), generator=g))
            settings.append([density, mean])
    return {"docs": docs, "settings": settings, "vocab_size": T5_VOCAB, "seed": seed}


def compare_random_corruption(actual, expected, inputs):
    if not isinstance(actual, list) or len(actual) != len(expected):
        return "span_corrupt: the outputs could not be read"
    for ids, (density, mean), got, want in zip(
        inputs["docs"], inputs["settings"], actual, expected, strict=True
    ):
        what = f"span_corrupt(ids ({len(ids)},), {inputs['vocab_size']}, {density}, {mean})"
        if got[:2] != want[:2]:
            return (
                f"{what}: inputs has {got[0]} tokens and targets {got[1]}; with T5's counts "
                f"expect {want[0]} and {want[1]}"
            )
        for i, message in (
            (4, "changed ids in place"),
            (3, "does not number the sentinels of inputs vocab_size - 1, vocab_size - 2, ..."),
            (2, "gives inputs and targets that do not merge back into ids"),
        ):
            if got[i] != want[i]:
                return f"{what} {message}"
    return None


CASES = [
    Case(
        "T5's counts and layout on 40 (length, density, mean) settings",
        call=mask_counts,
        inputs=count_settings,
        compare=compare_counts,
        points=2,
        seed=1,
    ),
    Case(
        "span lengths: a uniformly random cut, 1000 masks of length 60 (statistical)",
        call=span_features,
        inputs=span_statistics,
        compare=compare_span_features,
        points=3,
        seed=2,
    ),
    Case(
        "span_corrupt with given masks, T5's vocabulary of 32,100",
        call=corrupt_given,
        inputs=given_masks,
        points=3,
        seed=3,
    ),
    Case(
        "span_corrupt with T5's random masks on 24 documents: lengths and round trip",
        call=corrupt_random,
        inputs=random_docs,
        compare=compare_random_corruption,
        points=2,
        seed=4,
    ),
]
