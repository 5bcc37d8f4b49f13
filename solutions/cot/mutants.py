"""Known mistakes in `cot`, each a plausible slip in one function."""

import math
import re
from collections import Counter
from fractions import Fraction

from graders.impl import reference
from graders.mutants import mutant

ref = reference("cot")


@mutant(
    "build_cot_prompt",
    "the exemplars lost their reasoning: that is standard few-shot prompting, not chain of thought",
)
def reasoning_dropped(exemplars, question):
    return ref.build_cot_prompt([(q, "", a) for q, _, a in exemplars], question)


@mutant(
    "build_cot_prompt",
    "the answer comes before the reasoning; the chain of thought must lead up to the answer",
)
def answer_before_reasoning(exemplars, question):
    blocks = []
    for q, reasoning, answer in exemplars:
        thoughts = f" {reasoning.strip()}" if reasoning.strip() else ""
        blocks.append(f"Q: {q.strip()}\nA: The answer is {answer}.{thoughts}")
    return "\n\n".join([*blocks, f"Q: {question.strip()}\nA:"])


NUMBER = r"(?<![\w./])([-−])?\$?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(\d+))?(?:/(\d*[1-9]\d*))?"


def _numbers(text):
    return list(re.finditer(NUMBER, text))


def _value(match):
    sign, whole, decimals, denominator = match.groups()
    value = Fraction(whole.replace(",", "") + (f".{decimals}" if decimals else ""))
    value = value / int(denominator) if denominator else value
    return -value if sign else value


@mutant("extract_answer", "takes the first number in the text, not the final answer")
def first_number(text):
    numbers = _numbers(text)
    return _value(numbers[0]) if numbers else None


@mutant(
    "extract_answer",
    "ignores 'The answer is' and takes the last number, which may come after the answer",
)
def last_number_only(text):
    numbers = _numbers(text)
    return _value(numbers[-1]) if numbers else None


@mutant("extract_answer", "drops the minus sign: '= -3' read as 3")
def sign_dropped(text):
    answer = ref.extract_answer(text)
    return None if answer is None else abs(answer)


@mutant(
    "extract_answer",
    "reads only the digits after a thousands separator: '$1,234' read as 234",
)
def separators_split(text):
    return ref.extract_answer(re.sub(r"(?<=\d),(?=\d{3})", " ", text))


@mutant("extract_answer", "returns a float: 0.1 is not exact, and 42.0 is not the answer 42")
def float_answer(text):
    answer = ref.extract_answer(text)
    return None if answer is None else float(answer)


@mutant("self_consistency", "completions without an answer vote too (for None)")
def unanswered_vote(sample_fn, prompt, n, generator):
    answers = [ref.extract_answer(sample_fn(prompt, generator)) for _ in range(n)]
    votes = Counter(answers)
    return max(votes, key=votes.__getitem__)


@mutant("self_consistency", "a tie goes to the answer sampled last, not the one sampled first")
def ties_to_last(sample_fn, prompt, n, generator):
    answers = [ref.extract_answer(sample_fn(prompt, generator)) for _ in range(n)]
    votes = Counter(a for a in reversed(answers) if a is not None)
    return max(votes, key=votes.__getitem__) if votes else None


@mutant(
    "self_consistency",
    "votes on whole completions: paths that reach one answer in different words split its votes",
)
def votes_on_texts(sample_fn, prompt, n, generator):
    texts = [sample_fn(prompt, generator) for _ in range(n)]
    votes = Counter(t for t in texts if ref.extract_answer(t) is not None)
    return ref.extract_answer(max(votes, key=votes.__getitem__)) if votes else None


@mutant("self_consistency", "returns the first sample's answer: no vote at all")
def first_sample_only(sample_fn, prompt, n, generator):
    return ref.extract_answer(sample_fn(prompt, generator))


def _binomial(p, n, k):
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


@mutant("majority_accuracy", "for even n, a tie counts as a loss; the first sample wins half")
def ties_lost(p, n):
    if p in (0.0, 1.0):
        return p
    return math.fsum(_binomial(p, n, k) for k in range(n // 2 + 1, n + 1))


@mutant("majority_accuracy", "for even n, a tie counts as a win; the first sample wins half")
def ties_won(p, n):
    if p in (0.0, 1.0):
        return p
    return math.fsum(_binomial(p, n, k) for k in range((n + 1) // 2, n + 1))


@mutant(
    "majority_accuracy",
    "C(n, k) * p**k overflows a float for large n: add logarithms, then exponentiate",
)
def overflowing_binomial(p, n):
    wins = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n // 2 + 1, n + 1)]
    if n % 2 == 0:
        wins.append(math.comb(n, n // 2) * (p * (1 - p)) ** (n // 2) / 2)
    return math.fsum(wins)
