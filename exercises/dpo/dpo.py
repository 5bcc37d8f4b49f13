"""Direct preference optimisation (Rafailov et al., 2023) and IPO (Azar et al., 2023).

RLHF fits a reward model to preference pairs, then runs reinforcement learning to maximise that
reward while a KL penalty keeps the policy near a reference model. That KL-regularised problem has
a closed-form answer, pi*(y) proportional to pi_ref(y) exp(r(y) / beta), so the reward can be
written through the policy: r(y) = beta log(pi(y) / pi_ref(y)) + a constant per prompt. Putting
that into the Bradley-Terry likelihood gives a classification loss on the policy itself: no reward
model, no sampling, no RL loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dpo_loss", "ipo_loss", "sequence_logprobs"]


def sequence_logprobs(logits: Tensor, labels: Tensor, loss_mask: Tensor) -> Tensor:
    """log pi(response | prompt): the sum of the masked tokens' log-probabilities, per sequence.

    Shapes: logits (B, T, V) float, labels (B, T) int64, loss_mask (B, T) bool -> (B,), logits'
    dtype, differentiable. Row t of logits is the distribution of labels[:, t]: shift before the
    call (for a causal LM run on input_ids: logits[:, :-1], input_ids[:, 1:]). Only positions where
    loss_mask is True count; labels elsewhere may hold anything (-100, say) and are never read.
    """
    # YOUR CODE HERE
    raise NotImplementedError("sequence_logprobs: not implemented yet; see exercises/dpo/README.md")


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss: mean(-log sigmoid(beta * (log-ratio of chosen - log-ratio of rejected))).

    Shapes: four (N,) float tensors of sequence log-probabilities (sequence_logprobs) under the
    policy and the frozen reference, for the chosen and the rejected response of N pairs; beta > 0.
    Returns (loss, chosen_rewards, rejected_rewards): loss a 0-dim tensor, differentiable in the
    policy's log-probabilities; the implicit rewards beta * (policy - ref), each (N,) and detached
    (for logging and accuracy: the policy prefers the chosen response where chosen_rewards >
    rejected_rewards).
    """
    # YOUR CODE HERE
    raise NotImplementedError("dpo_loss: not implemented yet; see exercises/dpo/README.md")


def ipo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """The IPO loss: mean((h - 1 / (2 * beta))^2), h = log-ratio of chosen - log-ratio of rejected.

    Same arguments and returns as dpo_loss (beta plays IPO's tau, the regularisation strength;
    rewards are beta * (policy - ref), detached). Unlike DPO's, the loss is minimised at a finite
    gap h = 1 / (2 * beta), so the policy cannot run off to infinity on pairs that are always
    ordered the same way.
    """
    # YOUR CODE HERE
    raise NotImplementedError("ipo_loss: not implemented yet; see exercises/dpo/README.md")
