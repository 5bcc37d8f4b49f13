"""Public specs for `cot`: run `pytest exercises/cot` (`--impl=solutions`: the reference).

Oracles: prompts and answers worked out by hand, the prompt format written out here, every
outcome of a small vote enumerated, exact integer arithmetic for long votes, and the toy reasoner
whose chance of being right is known exactly. The one statistical spec uses fixed seeds; its
chance of failing a correct implementation is below 1e-7 (see the README).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import chernoff_gap, fail
from graders.curriculum import kit_root

DELTA = 1e-7  # the false-failure chance the statistical spec allows itself
PROBLEMS = json.loads((kit_root() / "data" / "cot" / "problems.json").read_text(encoding="utf-8"))

EXEMPLARS = [
    ("Roger has 5 balls. He buys 2 cans of 3 balls. How many balls?", "2 × 3 = 6. 5 + 6 = 11.", 11),
    ("There were 9 computers. 5 more came each day for 4 days. How many now?", "", 29),
]
QUESTION = "A shop had 23 apples. It used 20 and bought 6 more. How many apples?"
WEI_PROMPT = (
    "Q: Roger has 5 balls. He buys 2 cans of 3 balls. How many balls?\n"
    "A: 2 × 3 = 6. 5 + 6 = 11. The answer is 11.\n"
    "\n"
    "Q: There were 9 computers. 5 more came each day for 4 days. How many now?\n"
    "A: The answer is 29.\n"
    "\n"
    "Q: A shop had 23 apples. It used 20 and bought 6 more. How many apples?\n"
    "A:"
)


def test_prompt_matches_wei_et_al_format(impl):
    prompt = impl.build_cot_prompt(EXEMPLARS, QUESTION)
    if prompt != WEI_PROMPT:
        fail(
            "build_cot_prompt(two exemplars, one with reasoning and one without, question) "
            f"returned\n{prompt!r}\nexpected\n{WEI_PROMPT!r}\n(one blank line between blocks, "
            "'A: <reasoning> The answer is <answer>.', and the prompt ends with 'A:')"
        )
    zero_shot = impl.build_cot_prompt([], QUESTION)
    if zero_shot != f"Q: {QUESTION}\nA:":
        fail(
            f"build_cot_prompt([], question) returned {zero_shot!r}; with no exemplars the prompt "
            f"is only {f'Q: {QUESTION}' + chr(10) + 'A:'!r}"
        )


line = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30)


@given(
    exemplars=st.lists(st.tuples(line, line, st.integers(-(10**6), 10**6)), max_size=5),
    question=line,
)
def test_prompt_holds_every_exemplar_in_order(impl, exemplars, question):
    blocks = []
    for q, reasoning, answer in exemplars:
        thoughts = f"{reasoning.strip()} " if reasoning.strip() else ""
        blocks.append(f"Q: {q.strip()}\nA: {thoughts}The answer is {answer}.")
    expected = "\n\n".join([*blocks, f"Q: {question.strip()}\nA:"])
    prompt = impl.build_cot_prompt(exemplars, question)
    if prompt != expected:
        fail(
            f"build_cot_prompt({exemplars!r}, {question!r}) returned\n{prompt!r}\nexpected\n"
            f"{expected!r}\n(strip each question and reasoning; leave out an empty reasoning)"
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 5 + 6 = 11. The answer is 11.", Fraction(11)),
        ("The answer is 42.", Fraction(42)),
        ("So the temperature drops to 2 - 5 = -3", Fraction(-3)),
        ("For 3 bikes the answer is $1,234.", Fraction(1234)),
        ("Each gets 3/4 of a pie.", Fraction(3, 4)),
        ("It costs 2.50 dollars", Fraction(5, 2)),
        ("The answer is 0.1, since 1 / 10 = 0.1", Fraction(1, 10)),
        ("The answer is 12. Check: 7 + 5 = 12, and 12 is not 15.", Fraction(12)),
        ("There are 20 - 4 = 16 left", Fraction(16)),
        ("The answer is −7.", Fraction(-7)),
        ("The Answer Is 1,000,000 exactly; 999,999 was a typo", Fraction(1000000)),
        ("the answer is unknown, though we found 8", Fraction(8)),
    ],
)
def test_extract_answer_formats(impl, text, expected):
    got = impl.extract_answer(text)
    if not isinstance(got, Fraction) or got != expected:
        fail(
            f"extract_answer({text!r}) returned {got!r} ({type(got).__name__}); expected "
            f"{expected!r} (a fractions.Fraction, so that 0.1 stays exact and equal answers vote "
            "together)"
        )


@pytest.mark.parametrize(
    "text", ["", "I do not know.", "The answer is unknown.", "Version v2 of file a3b", "., / $ -"]
)
def test_extract_answer_is_none_without_a_number(impl, text):
    got = impl.extract_answer(text)
    if got is not None:
        fail(f"extract_answer({text!r}) returned {got!r}; the text holds no number: return None")


def written(value: Fraction, style: int) -> str:
    """`value` as a completion might write it: plain, with separators, in dollars, as a fraction
    or as a decimal (when it has a finite one)."""
    sign = "-" if value < 0 else ""
    a = abs(value)
    if a.denominator != 1:
        d = a.denominator
        while d % 2 == 0:
            d //= 2
        while d % 5 == 0:
            d //= 5
        if d == 1 and style % 2:  # a finite decimal
            places = 0
            while (a * 10**places).denominator != 1:
                places += 1
            digits = str(int(a * 10**places)).rjust(places + 1, "0")
            return f"{sign}{digits[:-places]}.{digits[-places:]}"
        return f"{sign}{a.numerator}/{a.denominator}"
    n = int(a)
    return [f"{sign}{n}", f"{sign}{n:,}", f"{sign}${n:,}", f"{sign}${n}"][style]


values = st.one_of(
    st.integers(-(10**9), 10**9).map(Fraction),
    st.fractions(max_denominator=64).filter(lambda f: abs(f) < 10**6),
    st.decimals(-1000, 1000, places=3).map(Fraction),
)


@given(value=values, style=st.integers(0, 3), before=st.integers(0, 999), said=st.booleans())
def test_extract_answer_finds_any_number(impl, value, style, before, said):
    answer = written(value, style)
    if said:  # numbers before and after; the phrase decides
        text = f"We had {before} of them, so 3 + 4 = 7. The answer is {answer}. (Not {before}.)"
    else:  # no phrase: the last number is the answer
        text = f"We had {before} of them, so in the end = {answer}"
    got = impl.extract_answer(text)
    if not isinstance(got, Fraction) or got != value:
        fail(
            f"extract_answer({text!r}) returned {got!r} ({type(got).__name__}); expected "
            f"Fraction({value}), the number written {answer!r}"
        )


class Script:
    """A sampler that returns its completions in turn, recording how it was called."""

    def __init__(self, completions):
        self.completions, self.calls = list(completions), []

    def __call__(self, prompt, generator):
        self.calls.append((prompt, generator))
        return self.completions[len(self.calls) - 1]


def check_vote(impl, completions, expected, why):
    answer = impl.self_consistency(Script(completions), "Q: ?\nA:", len(completions), None)
    if answer != expected or (expected is not None and not isinstance(answer, Fraction)):
        fail(
            f"self_consistency over {len(completions)} completions {completions!r} returned "
            f"{answer!r}; expected {expected!r} ({why})"
        )


def test_self_consistency_takes_the_majority(impl):
    check_vote(
        impl,
        [" 6 + 4 = 10. The answer is 10.", " 6 × 4 = 24. The answer is 24.",
         " 6 + 4 = 10. The answer is 10.", " 6 + 6 + 6 + 6 = 24. The answer is 24.",
         " The answer is $24."],
        Fraction(24),
        "three paths reach 24 in different words: vote on the extracted answers, not the texts",
    )  # fmt: skip
    check_vote(
        impl,
        [" 1/2 of it", " half: 0.5", " The answer is 2/4.", " The answer is 3."],
        Fraction(1, 2),
        "1/2, 0.5 and 2/4 are the same answer",
    )


def test_self_consistency_breaks_ties_by_first_answer(impl):
    check_vote(
        impl,
        [" The answer is 9.", " The answer is 4.", " The answer is 4.", " The answer is 9."],
        Fraction(9),
        "9 and 4 tie with two votes each; the tie goes to 9, the answer sampled first",
    )
    check_vote(
        impl,
        [" The answer is 30.", " The answer is 7.", " The answer is 12."],
        Fraction(30),
        "three answers with one vote each: the first one sampled wins",
    )


def test_self_consistency_ignores_completions_without_an_answer(impl):
    check_vote(
        impl,
        [" I do not know.", " The answer is 5.", " Hmm.", " No idea.", " 3 + 2 = 5"],
        Fraction(5),
        "completions without a number do not vote, however many there are",
    )
    check_vote(impl, [" I do not know."] * 3, None, "no completion has an answer: return None")


def test_self_consistency_calls_the_sampler_n_times(impl):
    generator, prompt = random.Random(0), "Q: What is 2 + 2?\nA:"
    for n in (1, 4, 7):
        sampler = Script([" The answer is 4."] * 10)
        answer = impl.self_consistency(sampler, prompt, n, generator)
        if len(sampler.calls) != n:
            fail(
                f"self_consistency(sample_fn, prompt, n={n}, generator) called sample_fn "
                f"{len(sampler.calls)} times; expected exactly {n}"
            )
        if any(p != prompt or g is not generator for p, g in sampler.calls):
            fail(
                "self_consistency must call sample_fn(prompt, generator) with the prompt and the "
                "generator it was given (so that one seed reproduces the whole vote)"
            )
        if answer != 4:
            fail(f"self_consistency with every sample saying 4 returned {answer!r}")


def enumerated(p: float, n: int) -> float:
    """The chance that the vote is right, summed over all 2^n outcomes: the first sample breaks
    a tie, exactly as self_consistency does."""
    total = 0.0
    for outcome in itertools.product([True, False], repeat=n):
        right = sum(outcome)
        wins = right > n - right or (right == n - right and outcome[0])
        if wins:
            total += p**right * (1 - p) ** (n - right)
    return total


@given(p=st.floats(0, 1), n=st.integers(1, 10))
def test_majority_accuracy_matches_enumeration(impl, p, n):
    got, expected = impl.majority_accuracy(p, n), enumerated(p, n)
    if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
        tie = " (n is even: count a tie as half a win)" if n % 2 == 0 else ""
        fail(
            f"majority_accuracy(p={p!r}, n={n}) returned {got!r}; summing over all 2^{n} "
            f"outcomes gives {expected!r}{tie}"
        )


def exact_accuracy(right: int, wrong: int, n: int) -> float:
    """majority_accuracy for p = right / (right + wrong), in exact integer arithmetic."""
    term = wrong**n  # C(n, k) right^k wrong^(n - k), from k = 0 up
    wins = ties = 0
    for k in range(n + 1):
        if 2 * k > n:
            wins += term
        elif 2 * k == n:
            ties = term
        term = term * (n - k) * right // ((k + 1) * wrong)
    return float(Fraction(2 * wins + ties, 2 * (right + wrong) ** n))


@pytest.mark.parametrize(
    ("right", "wrong", "n"), [(11, 9, 2000), (49, 51, 1001), (1, 1, 2001), (3, 1, 1500)]
)
def test_majority_accuracy_for_large_n(impl, right, wrong, n):
    p = right / (right + wrong)
    try:
        got = impl.majority_accuracy(p, n)
    except (OverflowError, ValueError, ZeroDivisionError) as err:
        fail(
            f"majority_accuracy(p={p}, n={n}) raised {type(err).__name__}: {err}; C(n, k) has "
            "hundreds of digits and p^k underflows: add the logarithms, then exponentiate"
        )
    expected = exact_accuracy(right, wrong, n)
    if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
        fail(
            f"majority_accuracy(p={p}, n={n}) returned {got!r}; exact arithmetic gives {expected!r}"
        )


def test_voting_accuracy_matches_theory(impl):
    # Statistical. A one-step problem with a trap: the toy reasoner is right with chance exactly
    # p = 1 - trap and otherwise always gives the same wrong answer, which is the binary case
    # that majority_accuracy describes. For each (p, n), `trials` votes of n samples each; the
    # count of right votes k is checked against the exact chance a = majority_accuracy(p, n)
    # (computed here) with Chernoff's bound P(trials KL(k/trials || a) >= c) <= 2 exp(-c) and
    # c = log(2 * settings / DELTA): a correct vote fails with chance below DELTA = 1e-7.
    problem = {
        "question": "Zoe has 7 coins. Then she ends up with three times as many. How many now?",
        "start": 7,
        "steps": [["*", 3]],
    }
    prompt = (
        "Q: Max has 5 cards. Then he ends up with twice as many. How many now?\n"
        f"A: 5 × 2 = 10. The answer is 10.\n\nQ: {problem['question']}\nA:"
    )
    settings, trials = [(0.6, 4), (0.55, 5), (0.7, 6)], 1000
    for seed, (p, n) in enumerate(settings):
        model = impl.ToyReasoner([problem], trap=1 - p)
        generator = random.Random(seed)
        right = sum(impl.self_consistency(model, prompt, n, generator) == 21 for _ in range(trials))
        a, share = enumerated(p, n), right / trials
        if chernoff_gap(right, trials, a, len(settings), DELTA):
            fail(
                f"self_consistency with n={n} samples, each right with chance p={p}, was right in "
                f"{right} of {trials} votes ({share:.3f}); theory says {a:.3f} "
                f"(majority_accuracy({p}, {n})), and a gap this large has a chance below "
                f"{DELTA:g} for a correct vote. Check the tie rule (first answer sampled wins) "
                "and that you vote on extracted answers"
            )


def test_prompt_drives_the_toy_reasoner(impl):
    exemplars = [(e["question"], e["reasoning"], e["answer"]) for e in PROBLEMS["exemplars"]]
    careful = impl.ToyReasoner(PROBLEMS["problems"], slip=0.0, trap=0.0)
    for problem in PROBLEMS["problems"][:20]:
        prompt = impl.build_cot_prompt(exemplars, problem["question"])
        completion = careful(prompt, None)
        if "I do not know" in completion or "=" not in completion:
            fail(
                f"the toy reasoner, given build_cot_prompt(4 worked exemplars, "
                f"{problem['question']!r}), answered {completion!r}: it did not find the question "
                "after the last 'Q:', or saw no worked exemplar"
            )
        answer = impl.extract_answer(completion)
        if answer != problem["answer"]:
            fail(
                f"extract_answer({completion!r}) returned {answer!r}; the careful toy reasoner's "
                f"answer is {problem['answer']}"
            )
