"""Hidden grading cases for `cot`: other exemplars, other completions, other votes and sizes."""

import json
import math

from graders.cases import Case
from graders.checks import chernoff_gap
from graders.curriculum import kit_root

DELTA = 1e-7  # the chance that the statistical case fails a correct vote


def prompts(m, exemplars, question):
    """Prompts from every prefix of the exemplars: zero-shot up to all of them."""
    exemplars = [tuple(e) for e in exemplars]
    return [m.build_cot_prompt(exemplars[:k], question) for k in range(len(exemplars) + 1)]


def prompt_inputs(seed):
    return {
        "exemplars": [
            ["  Liam reads 12 pages a day for 5 days. How many pages? ", " 12 × 5 = 60. ", 60],
            ["A bus holds 40. 13 get off and 9 get on. How many now?",
             "40 - 13 = 27.\n27 + 9 = 36.", 36],
            ["What is half of 9?", "", "9/2"],
            ["\tA tank loses 3 litres an hour for 6 hours from 50. What is left?",
             "3 × 6 = 18. 50 - 18 = 32.", 32],
            ["The temperature was 4 and fell by 10. What is it now?", "4 - 10 = -6.", -6],
            ["How many legs do 3 spiders have?", "Each has 8 legs. 3 × 8 = 24.", 24],
            ["Pens cost $1,250 per box. What do 2 boxes cost?", "2 × 1,250 = 2,500.", "$2,500"],
            ["Is 7 prime?", "   ", "yes"],
        ],
        "question": "  Sam has 3 boxes of 12 eggs and breaks 5. How many eggs are left?  ",
    }  # fmt: skip


def answers(m, texts):
    """extract_answer on each text: a Fraction written 'n/d', None, or the type and value."""
    from fractions import Fraction

    out = []
    for text in texts:
        a = m.extract_answer(text)
        if a is None or isinstance(a, Fraction):
            out.append(None if a is None else f"{a.numerator}/{a.denominator}")
        else:
            out.append(f"{type(a).__name__} {a!r}")
    return out


def answer_inputs(seed):
    return {
        "texts": [
            " 15 − 8 = 7. 7 × 3 = 21. The answer is 21.",
            "Total: £3,450,000.",
            "The answer is -12 degrees; yesterday it was 4.",
            "The answer is 7/8 of the cake, not 1/8.",
            "He ran 10.25 km, then 3.75 km, for a total of 14 km",
            "the ANSWER IS 1,024 bytes",
            "We get 5,000 - 1,250 = 3,750",
            "x = −0.75",
            "The answer is 12. Wait, no. The answer is 13.",
            "Roughly 2 of every 3 people, i.e. 2/3",
            "It leaves her $-4.50 in debt",
            "Nothing to see here.",
            "The answer is (B).",
            "step 1: 3 + 4 = 7\nstep 2: 7 × 2 = 14",
            "The answer is 100%",
            "1/3 + 1/6 = 1/2",
            "The answer is 0.",
            "−5 − −3 = −2",
            "The answer is 3,600.",
            "The answer is 12,345.678 grams",
            "He is 7 years old. The answer is seven.",
            "-$20 + $35 = $15",
            "So 2 × 0.3 = 0.6",
            "The answer is 4,5 or 6",
        ]
    }


def votes(m, scenarios):
    """self_consistency over scripted completions: the answers and the number of calls."""
    results, calls = [], []
    for completions in scenarios:
        made = []

        def sample(prompt, generator, completions=completions, made=made):
            made.append(prompt)
            return completions[len(made) - 1]

        a = m.self_consistency(sample, "Q: ?\nA:", len(completions), None)
        results.append(None if a is None else str(a))
        calls.append(len(made))
    return {"answers": results, "calls": calls}


def vote_inputs(seed):
    return {
        "scenarios": [
            ["The answer is 3.", "3", "4", "4.0", "4/1", "3", "no idea"],
            ["7", "8", "8", "7", "9", "9"],
            ["?", "no clue", "n/a", "The answer is 1/2", "I think 0.5", "hmm"],
            ["nothing", "still nothing"],
            ["10", "10 ", "ten is 10", " 10", "twenty 20", "twenty 20", "twenty 20"],
            ["The answer is 99."],
            ["-1", "1", "1", "-1", "-1"],
        ]
    }


def vote_accuracy(m, p, n, trials, seed):
    """Votes of n samples from a binary sampler (right with chance p): how many were right."""
    import random

    def sample(prompt, generator):
        right = generator.random() < p
        return " 4 × 3 = 12. The answer is 12." if right else " 4 + 3 = 7. The answer is 7."

    generator = random.Random(seed)
    return sum(m.self_consistency(sample, "Q: ?\nA:", n, generator) == 12 for _ in range(trials))


def accuracy_inputs(seed):
    return {"p": 0.7, "n": 6, "trials": 1500, "seed": seed}


def compare_accuracy(actual, expected, inputs):
    """The count of right votes against the exact binary law (Chernoff bound, DELTA)."""
    p, n, trials = inputs["p"], inputs["n"], inputs["trials"]
    if not isinstance(actual, int) or not 0 <= actual <= trials:
        return f"expected a count of right votes in 0 .. {trials}; got {actual!r}"
    a = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n // 2 + 1, n + 1))
    a += math.comb(n, n // 2) * (p * (1 - p)) ** (n // 2) / 2 if n % 2 == 0 else 0.0
    share = actual / trials
    if chernoff_gap(actual, trials, a, 1, DELTA):
        return (
            f"self_consistency with n={n} samples, each right with chance {p}, was right in "
            f"{actual} of {trials} votes ({share:.3f}); theory says {a:.3f}, and a gap this large "
            f"has a chance below {DELTA:g} for a correct vote"
        )
    return None


def accuracies(m, points):
    return [float(m.majority_accuracy(float(p), int(n))) for p, n in points]


def small_points(seed):
    return {
        "points": [[0.3, 1], [0.51, 7], [0.8, 10], [0.65, 12], [0.5, 40], [0.99, 3], [0.0, 5],
                   [1.0, 4], [0.6, 2], [0.35, 6], [0.9, 16]]
    }  # fmt: skip


def large_points(seed):
    return {"points": [[0.45, 2000], [0.52, 1999], [0.501, 3000], [0.7, 2500]]}


def toy_votes(m, problems, exemplars, n, seed):
    """Self-consistency over the toy reasoner, on shipped problems, with the learner's prompt."""
    import random

    model = m.ToyReasoner(problems)
    generator = random.Random(seed)
    exemplars = [(e["question"], e["reasoning"], e["answer"]) for e in exemplars]
    out = []
    for problem in problems:
        a = m.self_consistency(
            model, m.build_cot_prompt(exemplars, problem["question"]), n, generator
        )
        out.append(None if a is None else str(a))
    return out


def toy_inputs(seed):
    data = json.loads((kit_root() / "data" / "cot" / "problems.json").read_text(encoding="utf-8"))
    return {"problems": data["problems"][20:44], "exemplars": data["exemplars"][::-1], "n": 9,
            "seed": seed}  # fmt: skip


CASES = [
    Case(
        "build_cot_prompt with 0 to 8 untidy exemplars",
        call=prompts,
        inputs=prompt_inputs,
        points=2,
    ),
    Case("extract_answer on 24 completions", call=answers, inputs=answer_inputs, points=3),
    Case("self_consistency on 7 scripted votes", call=votes, inputs=vote_inputs, points=2),
    Case(
        "self_consistency: 1500 votes of 6 samples match majority_accuracy (statistical)",
        call=vote_accuracy,
        inputs=accuracy_inputs,
        compare=compare_accuracy,
        points=2,
        seed=31,
    ),
    Case("majority_accuracy at 11 small (p, n)", call=accuracies, inputs=small_points, points=1),
    Case(
        "majority_accuracy for n in the thousands",
        call=accuracies,
        inputs=large_points,
        points=1,
    ),
    Case(
        "self_consistency over the toy reasoner on 24 shipped problems, n=9",
        call=toy_votes,
        inputs=toy_inputs,
        points=2,
        seed=7,
    ),
]
