"""Speculative decoding (Leviathan, Kalman and Matias, 2023; Chen et al., 2023).

A cheap draft model guesses the next gamma tokens one by one; the expensive target model scores
all the guesses in a single forward pass; a rejection-sampling rule keeps a prefix of the guesses
and draws one more token. The tokens that come out follow the target model's distribution exactly,
while the target runs once for every 1 ... gamma + 1 tokens instead of once per token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ToyLM", "expected_tokens_per_step", "speculative_generate", "toy_models", "verify"]

# A language model, as speculative_generate sees it: tokens (T,) int64 -> probs (T, V), where row t
# is the distribution of the token that follows tokens[0 .. t].
Model = Callable[[Tensor], Tensor]


class ToyLM:
    """A tiny deterministic language model (given): the next token depends on the last two.

    ToyLM(logits) with logits (V, V, V). model(tokens), for tokens (T,) int64 with T >= 1, returns
    probs (T, V): row t = softmax(logits[tokens[t - 1], tokens[t]]) is the distribution of the
    token after tokens[0 .. t] (row 0 reads tokens[0] as its own predecessor). One call scores every
    prefix, like a causal transformer's forward pass. probs has the dtype and device of logits.
    """

    def __init__(self, logits: Tensor) -> None:
        """logits (V, V, V): logits[a, b] scores the token that follows the pair (a, b)."""
        V = logits.shape[0]
        if logits.shape != (V, V, V):
            raise ValueError(f"ToyLM: logits must be (V, V, V); got {tuple(logits.shape)}")
        self.logits, self.vocab_size = logits, V
        self.table = torch.softmax(logits, dim=-1)

    def __call__(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError(f"ToyLM: tokens must be a non-empty (T,); got {tuple(tokens.shape)}")
        previous = torch.cat([tokens[:1], tokens[:-1]])
        return self.table[previous, tokens]

    def to(self, device: str | torch.device) -> ToyLM:
        """The same model with its table on `device`."""
        return ToyLM(self.logits.to(device))


def toy_models(vocab_size: int = 8, seed: int = 0, device: str = "cpu") -> tuple[ToyLM, ToyLM]:
    """(target, draft): two ToyLMs over vocab_size tokens, float64, built from `seed` (given).

    The draft is a blurred and perturbed copy of the target (half its logits plus noise), so it
    agrees with the target often but not always: sum_x min(p(x), q(x)), the chance that a draft
    is accepted, averages about 0.7 over the contexts and ranges from about 0.4 to 0.9.
    """
    g = torch.Generator().manual_seed(seed)
    V = vocab_size
    logits = 2.0 * torch.randn(V, V, V, generator=g, dtype=torch.float64)
    noise = torch.randn(V, V, V, generator=g, dtype=torch.float64)
    return ToyLM(logits).to(device), ToyLM(0.5 * logits + 0.6 * noise).to(device)


def verify(
    draft_tokens: Tensor, draft_probs: Tensor, target_probs: Tensor, uniforms: Tensor
) -> tuple[int, Tensor]:
    """One round of speculative sampling's accept/reject step: a pure function.

    Shapes: draft_tokens (gamma,) int64, the drafted tokens x_0 .. x_{gamma-1}; draft_probs
    (gamma, V), row i = q_i, the draft's distribution that x_i was drawn from; target_probs
    (gamma + 1, V), row i = p_i, the target's distribution for the same position (row gamma: the
    position after the last draft); uniforms (gamma,), u_i in [0, 1).

    Token i is accepted while uniforms[i] < min(1, p_i(x_i) / q_i(x_i)) (strictly); the first
    rejection ends the round. Returns (n_accepted, next_probs): n_accepted, a Python int in
    0 .. gamma, counts the accepted leading tokens; next_probs (V,), with target_probs' dtype and
    device, is the distribution of the token that follows them: the normalised residual
    max(0, p_n - q_n) / sum(max(0, p_n - q_n)) after a rejection at n, or p_gamma when all gamma
    drafts were accepted.
    """
    gamma = draft_tokens.shape[0]
    if draft_probs.shape[0] != gamma or target_probs.shape[0] != gamma + 1:
        raise ValueError(
            f"verify: with {gamma} draft tokens, draft_probs needs {gamma} rows and target_probs "
            f"{gamma + 1}; got {tuple(draft_probs.shape)} and {tuple(target_probs.shape)}"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "verify: not implemented yet; see exercises/speculative_decoding/README.md"
    )


def speculative_generate(
    target: Model,
    draft: Model,
    prompt: Tensor,
    max_new_tokens: int,
    gamma: int,
    generator: torch.Generator,
) -> Tensor:
    """Sample max_new_tokens tokens after prompt from `target`, `draft` proposing gamma at a time.

    target, draft: models, tokens (T,) int64 -> probs (T, V) (see ToyLM). prompt (T0,) int64,
    T0 >= 1. generator: a torch.Generator on prompt's device; every random draw is made with it.
    Each round drafts gamma tokens with `draft` (one call per token), calls `target` exactly once on
    the sequence plus all the drafts, runs `verify`, and appends the accepted drafts and one token
    drawn from next_probs: 1 to gamma + 1 tokens per round. Returns the new tokens only, int64
    (max_new_tokens,) on prompt's device (the last round's surplus is cut off).
    """
    if prompt.ndim != 1 or len(prompt) == 0:
        raise ValueError(f"speculative_generate: prompt must be (T0,), T0 >= 1; got {prompt.shape}")
    if gamma < 1 or max_new_tokens < 0:
        raise ValueError(
            f"speculative_generate: need gamma >= 1 and max_new_tokens >= 0; got "
            f"gamma={gamma}, max_new_tokens={max_new_tokens}"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "speculative_generate: not implemented yet; see exercises/speculative_decoding/README.md"
    )


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """The expected number of tokens one round produces: (1 - alpha**(gamma+1)) / (1 - alpha).

    alpha in [0, 1] is the chance that a drafted token is accepted (taken independent across
    positions), gamma >= 0 the number of drafts. At alpha = 1 the value is its limit, gamma + 1.
    """
    if not 0.0 <= alpha <= 1.0 or gamma < 0:
        raise ValueError(
            f"expected_tokens_per_step: need 0 <= alpha <= 1 and gamma >= 0; got "
            f"alpha={alpha}, gamma={gamma}"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "expected_tokens_per_step: not implemented yet; "
        "see exercises/speculative_decoding/README.md"
    )
