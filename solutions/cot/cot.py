"""Chain-of-thought prompting (Wei et al., 2022) and self-consistency (Wang et al., 2023).

A few worked examples in the prompt, each showing its reasoning before its answer, lead a large
language model to write out its own reasoning before answering, and that makes it far better at
multi-step problems. Sampling several such reasoning paths and taking a majority vote over their
final answers (self-consistency) is better still: right paths tend to agree on one answer, wrong
ones scatter.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

__all__ = [
    "ToyReasoner",
    "build_cot_prompt",
    "extract_answer",
    "majority_accuracy",
    "self_consistency",
]

# A sampler, as self_consistency sees it: (prompt, generator) -> one completion of the prompt.
SampleFn = Callable[[str, random.Random], str]


def _words(text: str) -> str:
    return " ".join(text.split())


class ToyReasoner:
    """A stochastic toy language model that solves arithmetic word problems (given).

    ToyReasoner(problems, slip=0.1, trap=0.4). problems: dicts with "question" (str), "start"
    (int) and "steps" (a list of [op, b], op one of "+", "-", "*"), as in data/cot/problems.json.
    model(prompt, generator) finds the question after the prompt's last "Q:" (up to "\\nA:") and
    returns a completion (str) that continues the prompt's final "A:". generator: a random.Random
    to sample with, or None for greedy decoding (the most likely line at every step). A question
    it does not know gets " I do not know."

    With a worked exemplar in the prompt (a line "A: ..." that does not start with "The answer
    is") it thinks aloud, one sentence per step, then ends with "The answer is N.":
      + and -: "x + b = y." with probability 1 - slip, else a carry slip "x + b = y+10.";
      *:       two right routes, "x × b = y." and "x + x + ... + x = y." (b terms), each with
               probability (1 - trap) / 2, else the trap, adding the factor: "x + b = x+b.".
    Each step starts from the number the previous one wrote. Without a worked exemplar it
    answers at once, " The answer is N.", taking the same steps silently with every mistake
    twice as likely (at most 1). Greedy decoding takes the single most likely line (the first
    on ties), so it falls into the trap whenever trap > (1 - trap) / 2, i.e. trap > 1/3.
    """

    def __init__(self, problems: Sequence[dict], slip: float = 0.1, trap: float = 0.4) -> None:
        self.problems = {_words(p["question"]): p for p in problems}
        self.slip, self.trap = slip, trap

    def __call__(self, prompt: str, generator: random.Random | None = None) -> str:
        question = prompt.rsplit("Q:", 1)[-1].split("\nA:", 1)[0]
        problem = self.problems.get(_words(question))
        if problem is None:
            return " I do not know."
        aloud = re.search(r"^A: (?!The answer is)\S", prompt, flags=re.M) is not None
        x, written = problem["start"], []
        for op, b in problem["steps"]:
            options = self._options(x, op, b, 1.0 if aloud else 2.0)
            if generator is None:
                text, x, _ = max(options, key=lambda option: option[2])
            else:
                u, total = generator.random(), 0.0
                for text, x, probability in options:  # noqa: B007 (the chosen option stays bound)
                    total += probability
                    if u < total:
                        break
            written.append(text)
        thoughts = " ".join(written) + " " if aloud else ""
        return f" {thoughts}The answer is {x}."

    def _options(self, x: int, op: str, b: int, scale: float) -> list[tuple[str, int, float]]:
        """(sentence, the number it writes, probability) for every way of taking one step."""
        if op == "*":
            trap, y = min(1.0, scale * self.trap), x * b
            return [
                (f"{x} × {b} = {y}.", y, (1 - trap) / 2),
                (" + ".join([str(x)] * b) + f" = {y}.", y, (1 - trap) / 2),
                (f"{x} + {b} = {x + b}.", x + b, trap),
            ]
        if op not in ("+", "-"):
            raise ValueError(f"ToyReasoner: unknown operation {op!r}; use '+', '-' or '*'")
        slip, y = min(1.0, scale * self.slip), x + b if op == "+" else x - b
        return [(f"{x} {op} {b} = {y}.", y, 1 - slip), (f"{x} {op} {b} = {y + 10}.", y + 10, slip)]


def build_cot_prompt(exemplars: Sequence[tuple[str, str, object]], question: str) -> str:
    """A few-shot chain-of-thought prompt, in Wei et al.'s Q/A format.

    exemplars: (question, reasoning, answer) triples, any number (0 gives a zero-shot prompt);
    question: the question to answer. Each exemplar becomes the block

        Q: <question>
        A: <reasoning> The answer is <answer>.

    (with an empty reasoning, "A: The answer is <answer>.": standard few-shot prompting), then
    comes "Q: <question>\\nA:". Blocks are separated by one blank line; questions and reasoning
    are stripped of surrounding whitespace, answers written with str(). No trailing space or
    newline after the final "A:": the model writes from there.
    """
    ### BEGIN SOLUTION
    blocks = []
    for exemplar_question, reasoning, answer in exemplars:
        # The innovation is this one field: the exemplar shows its working before its answer,
        # so the model imitates the working too.
        thoughts = f"{reasoning.strip()} " if reasoning.strip() else ""
        blocks.append(f"Q: {exemplar_question.strip()}\nA: {thoughts}The answer is {answer}.")
    blocks.append(f"Q: {question.strip()}\nA:")
    return "\n\n".join(blocks)
    ### END SOLUTION


def extract_answer(text: str) -> Fraction | None:
    """The final answer in a completion, as an exact Fraction; None when it holds no number.

    Numbers: integers ("42"), with thousands separators ("1,234"), a currency sign ("$1,234"),
    a sign written against the digits ("-3", "= -3", "−3"; in "5 - 3" the 3 is positive),
    decimals ("2.5", while the period that ends "42." is not part of the number) and fractions
    ("3/4"). If the text says "The answer is" (any case), the answer is the first number after
    its last occurrence; otherwise, or when no number follows it, the last number in the text.
    """
    ### BEGIN SOLUTION
    # A number, not glued to a word, a decimal point or a slash before it: a sign written against
    # it (ASCII or Unicode minus), a dollar sign, digits (with thousands separators only in
    # groups of three), decimals and a denominator, all but the digits optional.
    number = r"(?<![\w./])([-−])?\$?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(\d+))?(?:/(\d*[1-9]\d*))?"
    numbers = list(re.finditer(number, text))
    if not numbers:
        return None
    said = [m.end() for m in re.finditer(r"the answer is", text, flags=re.I)]
    after = [m for m in numbers if said and m.start() >= said[-1]]
    sign, whole, decimals, denominator = (after or numbers[::-1])[0].groups()
    value = Fraction(whole.replace(",", "") + (f".{decimals}" if decimals else ""))
    if denominator:
        value /= int(denominator)
    return -value if sign else value
    ### END SOLUTION


def self_consistency(
    sample_fn: SampleFn, prompt: str, n: int, generator: random.Random
) -> Fraction | None:
    """Wang et al.'s self-consistency: the majority answer of n sampled reasoning paths.

    Calls sample_fn(prompt, generator) exactly n times, extracts each completion's answer with
    extract_answer, and returns the answer (a Fraction) given most often. Completions without an
    answer do not vote; if none has one, returns None. Ties go to the tied answer that was
    sampled first.
    """
    if n < 1:
        raise ValueError(f"self_consistency: n must be at least 1; got {n}")
    ### BEGIN SOLUTION
    answers = [extract_answer(sample_fn(prompt, generator)) for _ in range(n)]
    # Marginalise the reasoning paths out: only the final answers are counted.
    votes = Counter(answer for answer in answers if answer is not None)
    if not votes:
        return None
    # A Counter remembers the order answers were first seen, and max() keeps the first of equal
    # counts: a tie goes to the answer sampled first.
    return max(votes, key=votes.__getitem__)
    ### END SOLUTION


def majority_accuracy(p: float, n: int) -> float:
    """The chance that a vote of n samples is right when each is right with chance p (binary).

    Each sample is independently right (chance p) or gives the same wrong answer. The vote is
    right when more than n/2 samples are; for even n a tie (exactly n/2) is won by whichever
    answer came first, which is the right one with chance 1/2. 0 <= p <= 1, n >= 1 (up to
    thousands: keep every term finite, e.g. in log space).
    """
    if not 0.0 <= p <= 1.0 or n < 1:
        raise ValueError(f"majority_accuracy: need 0 <= p <= 1 and n >= 1; got p={p}, n={n}")
    ### BEGIN SOLUTION
    if p in (0.0, 1.0):
        return p

    def binomial(k: int) -> float:  # P(exactly k of n right), in log space: C(n, k) has 600
        # digits at n = 2000, and p^k underflows long before that.
        log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        return math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))

    wins = [binomial(k) for k in range(n // 2 + 1, n + 1)]
    if n % 2 == 0:
        # Which of the two tied answers came first is a fair coin: by symmetry the first
        # sample is as likely to be one of the n/2 right ones as one of the n/2 wrong ones.
        wins.append(binomial(n // 2) / 2)
    return math.fsum(wins)
    ### END SOLUTION
