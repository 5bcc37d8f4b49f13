"""Hidden grading cases for toolformer: other calls, shapes, thresholds, corpora and texts."""

import torch

from graders.cases import Case


def formatted(m, calls):
    return [m.format_api_call(name, args, result) for name, args, result in calls]


def call_inputs(seed):
    return {
        "calls": [
            ["WikiSearch", "Brown Act", None],
            ["MT", "tortuga", "turtle"],
            ["Calendar", "", "Today is Friday, 1 March 2024."],
            ["QA", "Where was Joe Biden born?", None],
            ["Calculator", "27 + 4 * 2", "35"],
        ]
    }


def weighted(m, token_losses, start):
    return m.weighted_loss(token_losses, start)


def long_losses(seed):
    g = torch.Generator().manual_seed(seed)
    return {"token_losses": torch.rand(4, 3, 20, generator=g, dtype=torch.float64) * 8, "start": 6}


def losses_at_the_end(seed):
    g = torch.Generator().manual_seed(seed)
    return {"token_losses": torch.rand(5, 9, generator=g) * 4, "start": 7}


def kept(m, loss_plain, loss_call_no_result, loss_call_with_result, tau):
    return m.keep_api_call(loss_plain, loss_call_no_result, loss_call_with_result, tau)


def filter_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    plain, no_result, with_result = (
        torch.rand(3, 40, generator=g, dtype=torch.float64) * 4 for _ in range(3)
    )
    # Exact ties with tau = 0.75: min(L-) - L+ = 0.75 in binary arithmetic.
    plain[:, :4], no_result[:, :4], with_result[:, :4] = 2.0, 2.5, 1.25
    no_result[:, 4:8], plain[:, 4:8], with_result[:, 4:8] = 1.0, 3.0, 0.25
    return {
        "loss_plain": plain,
        "loss_call_no_result": no_result,
        "loss_call_with_result": with_result,
        "tau": 0.75,
    }


def augmented(m, text, candidates, corpus_size, corpus_seed, tau):
    lm = m.CacheLM(m.arithmetic_corpus(corpus_size, seed=corpus_seed))
    positions = [tuple(c) for c in candidates]
    return m.augment(text, positions, lm, {"Calculator": m.calculator}, tau)


TEXT = (
    "she had 40 stamps and gave away 17 , so 23 stamps are left . "
    "there are 16 boxes with 25 shells each , so 400 shells in all . "
    "the shop sold 33 cards today and 29 cards yesterday ."
)
# words: she0 had1 40 2 stamps3 and4 gave5 away6 17 7 ,8 so9 23 10 ... 400 at 25, 33 at 33, 29 at 37


def augment_inputs(seed):
    return {
        "text": TEXT,
        "candidates": [
            [2, "Calculator", "23 + 17"],
            [10, "Calculator", "40 - 17"],
            [10, "Calculator", "46 / 2"],
            [25, "Calculator", "16 * 25"],
            [25, "Calculator", "400 * 1"],
            [33, "Calculator", "30 + 3"],
            [37, "Calculator", "33 - 4"],
            [7, "Calculator", "5 + 5"],
            [23, "Calculator", "16 * 25"],  # its result comes two words later: a small gain
        ],
        "corpus_size": 400,
        "corpus_seed": seed,
        "tau": 2.3 if seed % 2 else 0.05,
    }


CASES = [
    Case("format_api_call on five tools' calls", call=formatted, inputs=call_inputs, points=1),
    Case(
        "weighted_loss, (4, 3, 20) float64, start 6",
        call=weighted,
        inputs=long_losses,
        points=2,
        seed=11,
    ),
    Case(
        "weighted_loss, 2 tokens left, float32",
        call=weighted,
        inputs=losses_at_the_end,
        points=1,
        seed=12,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "keep_api_call on (3, 40) losses with exact ties",
        call=kept,
        inputs=filter_inputs,
        points=2,
        seed=13,
    ),
    Case(
        "augment a 3-sentence text, tau 2.3",
        call=augmented,
        inputs=augment_inputs,
        points=2,
        seed=21,
    ),
    Case(
        "augment a 3-sentence text, tau 0.05",
        call=augmented,
        inputs=augment_inputs,
        points=2,
        seed=22,
    ),
]
