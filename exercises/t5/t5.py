"""Span corruption (Raffel et al., 2020): T5's pre-training objective.

Instead of hiding single tokens, as BERT does, T5 hides short spans: about 15% of the tokens, in
spans of about 3. Each span is replaced in the input by one sentinel token, and the target lists
the sentinels, each followed by the tokens it hid. The targets are short (about a quarter of the
input's length at these settings), so pre-training is cheap, and the task is text-to-text: the
same encoder-decoder later maps any input text to any output text.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_spans_noise_mask", "span_corrupt"]


def random_spans_noise_mask(
    length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """T5's noise mask: which of `length` tokens to corrupt, in spans, with T5's counts.

    num_noise_tokens = round(length * noise_density), clipped to [1, length - 1];
    num_noise_spans = round(num_noise_tokens / mean_noise_span_length), at least 1 and at most
    length - num_noise_tokens (so that every span is non-empty). round is Python's (on floats;
    half to even). The noise tokens are cut into num_noise_spans non-empty spans and the others
    into as many non-empty spans, each cut drawn uniformly among all the ways to cut; the spans
    alternate, starting with a non-noise span and ending with a noise span.

    length >= 2; 0 < noise_density < 1; mean_noise_span_length >= 1. generator: a torch.Generator;
    every random draw uses it. Returns a bool tensor (length,) on the generator's device (CPU
    without one), True at the noise tokens.
    """
    if length < 2 or not 0.0 < noise_density < 1.0 or mean_noise_span_length < 1.0:
        raise ValueError(
            "random_spans_noise_mask: need length >= 2, 0 < noise_density < 1 and "
            f"mean_noise_span_length >= 1; got {length}, {noise_density}, {mean_noise_span_length}"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "random_spans_noise_mask: not implemented yet; see exercises/t5/README.md"
    )


def span_corrupt(
    ids: Tensor,
    vocab_size: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    generator: torch.Generator | None = None,
    noise_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's span corruption of one sequence: (inputs, targets) with sentinels.

    ids: int64 (T,), T >= 2, one example; the top ids of the vocabulary (vocab_size - 1,
    vocab_size - 2, ...) are the sentinels and do not occur in ids. noise_mask: bool (T,), the
    tokens to hide; it must start with a non-noise token. Without one, the mask is
    random_spans_noise_mask(T, noise_density, mean_noise_span_length, generator).

    inputs: ids with each noise span replaced by one sentinel, the k-th span (from 0) by
    vocab_size - 1 - k. targets: ids with each non-noise span replaced by one sentinel, counted
    the same way; since the mask starts with a non-noise span, targets read: sentinel 0, the
    tokens of noise span 0, sentinel 1, the tokens of noise span 1, ... (and one closing sentinel
    when the sequence ends with non-noise tokens). Both int64 on ids' device; ids is not modified.
    """
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"span_corrupt: ids must be one sequence (T,), T >= 2; got {ids.shape}")
    if noise_mask is not None and (
        noise_mask.shape != ids.shape or noise_mask.dtype != torch.bool or noise_mask[0]
    ):
        raise ValueError(
            "span_corrupt: noise_mask must be a bool tensor of ids' shape whose first token is not "
            f"noise; got {noise_mask.dtype} {tuple(noise_mask.shape)}"
        )
    # YOUR CODE HERE
    raise NotImplementedError("span_corrupt: not implemented yet; see exercises/t5/README.md")
