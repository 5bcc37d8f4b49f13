"""Decoding: turning a language model's next-token logits into text.

Greedy decoding takes the most likely token; temperature sharpens or flattens the distribution;
top-k and nucleus (top-p) sampling (Holtzman et al., 2020) cut off the unreliable tail before
sampling; beam search (Sutskever, Vinyals and Le, 2014) keeps the k most likely partial sequences,
and Wu et al. (2016)'s length penalty lets it compare finished sequences of different lengths.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "apply_temperature",
    "beam_search",
    "greedy",
    "sample",
    "top_k_filter",
    "top_p_filter",
]

# What beam search calls: tokens (n, t) int64, n prefixes of t tokens each (bos first), ->
# logits (n, V), the unnormalised scores of the token that follows each prefix.
StepFn = Callable[[Tensor], Tensor]


def greedy(logits: Tensor) -> Tensor:
    """The most likely token of each row: logits (..., V) -> int64 (...).

    Ties go to the lowest token id (as torch.argmax).
    """
    # YOUR CODE HERE
    raise NotImplementedError("greedy: not implemented yet; see exercises/decoding/README.md")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / temperature, a new tensor of the same shape, dtype and device: (..., V) -> (..., V).

    temperature > 0: below 1 sharpens softmax(logits), above 1 flattens it.
    """
    if temperature <= 0:
        raise ValueError(f"apply_temperature: temperature must be > 0; got {temperature}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "apply_temperature: not implemented yet; see exercises/decoding/README.md"
    )


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row, set the others to -inf: (..., V) -> (..., V).

    A logit equal to the k-th largest of its row is kept too (ties at the boundary survive, so a
    row may keep more than k). k >= V keeps everything. Returns a new tensor; `logits` is unchanged.
    """
    if k < 1:
        raise ValueError(f"top_k_filter: k must be >= 1; got {k}")
    # YOUR CODE HERE
    raise NotImplementedError("top_k_filter: not implemented yet; see exercises/decoding/README.md")


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p.

    Shapes: (..., V) -> (..., V), the kept logits unchanged and the others -inf. Per row, with
    probs = softmax(logits) sorted from most to least likely, the nucleus holds every token up to
    and including the first one at which the running total reaches p (>= p); it is never empty.
    A token exactly as probable as the least probable one in the nucleus is kept too (ties survive).
    0 < p <= 1. Returns a new tensor; `logits` is unchanged.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p_filter: p must be in (0, 1]; got {p}")
    # YOUR CODE HERE
    raise NotImplementedError("top_p_filter: not implemented yet; see exercises/decoding/README.md")


def sample(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row: logits (..., V) -> int64 (...), on logits' device.

    In order: divide by `temperature`, keep the `top_k` largest logits (None: all), keep the
    nucleus of mass `top_p` of what is left (None: all), then sample from the softmax of the
    result. temperature == 0 means greedy (no random draw). Every random number comes from
    `generator` (a torch.Generator on logits' device; None: torch's global one), so the same seed
    gives the same tokens.
    """
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0; got {temperature}")
    # YOUR CODE HERE
    raise NotImplementedError("sample: not implemented yet; see exercises/decoding/README.md")


def beam_search(
    step_fn: StepFn,
    bos: int,
    eos: int,
    beam_width: int,
    max_len: int,
    length_penalty: float = 0.0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, float]:
    """The best sequence that beam search finds, and its score.

    step_fn: tokens (n, t) int64 on `device`, n prefixes that all start with bos -> logits (n, V)
    for the token after each prefix (beam_search takes their log_softmax). It is called once per
    step, on every live hypothesis together: at most max_len times.

    Each step extends every live hypothesis by every token and keeps the beam_width candidates with
    the highest total log-probability (over all hypotheses together). A kept candidate ending in
    eos is finished and leaves the beam; the others form the next beam. The search stops when
    beam_width hypotheses have finished, when no live one is left, or after max_len steps, where
    the live hypotheses are finished as they are. The answer is the finished hypothesis with the
    best score log P(y) / ((5 + |y|) / 6) ** length_penalty (Wu et al., 2016), where |y| counts
    the generated tokens, eos included.

    Returns (tokens, score): tokens int64 (|y|,) on `device`, without bos (ending in eos unless
    the hypothesis reached max_len), and score, a Python float.
    """
    if beam_width < 1 or max_len < 1:
        raise ValueError(f"beam_search: beam_width={beam_width} and max_len={max_len} must be >= 1")
    # YOUR CODE HERE
    raise NotImplementedError("beam_search: not implemented yet; see exercises/decoding/README.md")
