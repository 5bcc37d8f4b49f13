"""Toolformer: language models can teach themselves to use tools (Schick et al., 2023).

A language model annotates its own training text with API calls. Candidate calls are sampled at
promising positions, executed, and kept only where they help: where the call *with its result*
makes the next few tokens easier to predict than both no call and the call without its result.
Fine-tuning on the kept calls teaches the model when and how to call the tools. This module holds
the filtering step; the sampling is done for you, and the language model is a small given one.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "CacheLM",
    "arithmetic_corpus",
    "augment",
    "calculator",
    "format_api_call",
    "keep_api_call",
    "weighted_loss",
]

# A tool, as augment sees it: its input (str) -> its result (str).
Tool = Callable[[str], str]
WINDOW = 5  # w~_t = max(0, 1 - 0.2 t) is zero from t = 5 on


def format_api_call(name: str, args: str, result: str | None = None) -> str:
    """An API call in the paper's bracket notation.

    e(c) = "[name(args)]" when result is None; e(c, r) = "[name(args) -> result]" otherwise.
    The paper writes <API>, </API> and the arrow with the tokens "[", "]" and "->".
    Example: format_api_call("Calculator", "400 / 1400", "0.29")
    == "[Calculator(400 / 1400) -> 0.29]".
    """
    ### BEGIN SOLUTION
    if result is None:
        return f"[{name}({args})]"
    return f"[{name}({args}) -> {result}]"
    ### END SOLUTION


def weighted_loss(token_losses: Tensor, start: int) -> Tensor:
    """The weighted loss L_i of the tokens from position `start` on: sum_j w_(j - start) loss_j.

    token_losses (..., n): -log p(x_j | context, x_1..x_(j-1)) for j = 0..n-1. Returns (...):
    sum over j >= start of w_(j - start) * token_losses[..., j], with w_t = w~_t / sum_s w~_s,
    w~_t = max(0, 1 - 0.2 t). The normaliser runs over every t >= 0 (it is 3), also when the text
    ends before t = 4. Keeps token_losses' dtype and device; autograd follows.
    """
    if not 0 <= start <= token_losses.shape[-1]:
        raise ValueError(f"weighted_loss: start={start} is outside 0..{token_losses.shape[-1]}")
    ### BEGIN SOLUTION
    # The call should help the next few tokens most: weight 1 on the first, then 0.8, 0.6, ...
    t = torch.arange(WINDOW, dtype=token_losses.dtype, device=token_losses.device)
    w = (1 - 0.2 * t).clamp(min=0)
    w = w / w.sum()
    window = token_losses[..., start : start + WINDOW]
    return (window * w[: window.shape[-1]]).sum(-1)
    ### END SOLUTION


def keep_api_call(
    loss_plain: Tensor | float,
    loss_call_no_result: Tensor | float,
    loss_call_with_result: Tensor | float,
    tau: float,
) -> Tensor:
    """Toolformer's filter: keep a call when L-  -  L+ >= tau, elementwise.

    L+ = loss_call_with_result (the call and its result as prefix), L- = min(loss_plain (no call),
    loss_call_no_result (the call without its result)). Arguments broadcast together (floats or
    tensors); returns a bool tensor of the broadcast shape, on the tensors' device.
    """
    ### BEGIN SOLUTION
    # as_tensor turns a float into a 0-d CPU tensor, which torch lets mix with any device.
    plain, no_result, with_result = (
        torch.as_tensor(x) for x in (loss_plain, loss_call_no_result, loss_call_with_result)
    )
    # The result must help more than the call alone: a call whose *input* already gives the
    # answer away (or that helps nothing) teaches the model nothing about using the tool.
    return torch.minimum(plain, no_result) - with_result >= tau
    ### END SOLUTION


def augment(
    text: str,
    positions: Sequence[tuple[int, str, str]],
    lm: CacheLM,
    tools: Mapping[str, Tool],
    tau: float,
) -> str:
    """Annotate `text` with the helpful API calls among the candidates, as Toolformer does.

    text: words separated by spaces; word i is x_i (0-based). positions: the sampled candidates,
    (i, tool name, args): call tools[name](args) just before word i (0 <= i < number of words).
    For each candidate, with r its result and x = lm.tokenize(text):
      L+ = L_i(e(c, r)), L- = min(L_i(no prefix), L_i(e(c))),
    where L_i(z) = weighted_loss(lm(lm.tokenize(z) + x)[len(lm.tokenize(z)):], i): the call is a
    prefix of the whole text, as in the paper. A candidate is kept when keep_api_call(..., tau).
    At most one call per position: the kept one with the largest L- - L+ (the first on a tie).
    Returns the words with each kept e(c, r) inserted as one more space-separated piece just
    before word i; the text itself when nothing is kept.
    """
    ### BEGIN SOLUTION
    x = lm.tokenize(text)

    def loss(i: int, prefix: str) -> Tensor:  # L_i(z): the text's loss from word i, z first
        z = lm.tokenize(prefix)
        return weighted_loss(lm(z + x)[len(z) :], i)

    best: dict[int, tuple[float, str]] = {}  # position -> (L- - L+, e(c, r))
    for i, name, args in positions:
        result = tools[name](args)
        with_result = loss(i, format_api_call(name, args, result))
        plain, no_result = loss(i, ""), loss(i, format_api_call(name, args))
        if keep_api_call(plain, no_result, with_result, tau):
            gain = (torch.minimum(plain, no_result) - with_result).item()
            if i not in best or gain > best[i][0]:
                best[i] = (gain, format_api_call(name, args, result))
    words = text.split()
    # Insert from the back, so that the positions still to come keep their meaning.
    for i in sorted(best, reverse=True):
        words.insert(i, best[i][1])
    return " ".join(words)
    ### END SOLUTION


TOKEN = re.compile(r"->|\d+(?:\.\d+)?|\w+|\S")


class CacheLM:
    """A tiny count-based language model with a cache (given): the language model M.

    CacheLM(corpus) counts the unigrams and bigrams of lm.tokenize(s) for s in corpus. Then
    p(w | h) = (1 - lam) * p_bigram(w | h[-1]) + lam * (count of w in h) / len(h), where
    p_bigram(w | v) = (c(v, w) + alpha * p_uni(w)) / (c(v) + alpha) and
    p_uni(w) = (c(w) + 1) / (N + vocab_size) (any token has some probability); with an empty
    history h, p(w) = p_uni(w). The cache lets it copy what its context says, an API result
    included: a call helps it exactly when its result is used in the next words.

    lm.tokenize(text) -> list of str: "->", numbers ("0.29"), words, and single other characters.
    lm(tokens) -> float64 tensor (len(tokens),): -log p(tokens[j] | tokens[:j]).
    """

    def __init__(
        self, corpus: Sequence[str], lam: float = 0.3, alpha: float = 2.0, vocab_size: int = 10_000
    ) -> None:
        self.lam, self.alpha, self.vocab_size = lam, alpha, vocab_size
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[tuple[str, str]] = Counter()
        for sentence in corpus:
            tokens = self.tokenize(sentence)
            self.unigrams.update(tokens)
            self.bigrams.update(itertools.pairwise(tokens))
        self.total = sum(self.unigrams.values())
        self.follows = Counter(v for v, _ in self.bigrams.elements())

    def tokenize(self, text: str) -> list[str]:
        return TOKEN.findall(text)

    def p_uni(self, w: str) -> float:
        return (self.unigrams[w] + 1) / (self.total + self.vocab_size)

    def __call__(self, tokens: Sequence[str]) -> Tensor:
        losses, seen = [], Counter()
        for j, w in enumerate(tokens):
            if j == 0:
                p = self.p_uni(w)
            else:
                v = tokens[j - 1]
                bigram = (self.bigrams[v, w] + self.alpha * self.p_uni(w)) / (
                    self.follows[v] + self.alpha
                )
                p = (1 - self.lam) * bigram + self.lam * seen[w] / j
            losses.append(-math.log(p))
            seen[w] += 1
        return torch.tensor(losses, dtype=torch.float64)


def calculator(expression: str) -> str:
    """The calculator tool (given): "a op b" with op one of + - * /, rounded to 2 decimals.

    Whole results are written without a point ("84"), others with up to 2 decimals ("0.29").
    """
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)\s*", expression)
    if m is None:
        raise ValueError(f"calculator: cannot evaluate {expression!r}")
    a, op, b = float(m[1]), m[2], float(m[3])
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.nan}[op]
    return f"{round(value, 2):.2f}".rstrip("0").rstrip(".")


def arithmetic_corpus(n: int, seed: int = 0) -> list[str]:
    """n short sentences about counting things (given): the corpus the specs train CacheLM on."""
    rng = random.Random(seed)
    things = ["apples", "books", "coins", "stamps", "shells", "cards"]
    out = []
    for _ in range(n):
        a, b, thing = rng.randint(2, 12), rng.randint(2, 12), rng.choice(things)
        out.append(
            rng.choice(
                [
                    f"there are {a} boxes with {b} {thing} each , so {a * b} {thing} in all .",
                    f"she had {a + b} {thing} and gave away {b} , so {a} {thing} are left .",
                    f"the shop sold {a} {thing} today and {b} {thing} yesterday .",
                ]
            )
        )
    return out
