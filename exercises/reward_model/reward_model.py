"""Reward models from pairwise preferences (Christiano et al., 2017; Stiennon et al., 2020).

People find it hard to score an answer on an absolute scale but easy to say which of two answers
is better. The Bradley-Terry model links the two: each item y has a hidden reward r(y), and y_a is
preferred to y_b with probability sigmoid(r(y_a) - r(y_b)). Fitting r by maximum likelihood on
such comparisons turns a pile of "A is better than B" labels into a scalar reward, which a policy
can then be optimised against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RewardModel",
    "bayes_optimal_accuracy",
    "bradley_terry_loss",
    "preference_probability",
    "sample_preferences",
    "train_reward_model",
]


def preference_probability(r_a: Tensor, r_b: Tensor) -> Tensor:
    """P(a is preferred to b) under Bradley-Terry: sigmoid(r_a - r_b), elementwise.

    Shapes: r_a, r_b broadcastable floating tensors of rewards -> their broadcast shape, same
    dtype. Only the difference of the rewards matters.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "preference_probability: not implemented yet; see exercises/reward_model/README.md"
    )


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """The Bradley-Terry loss: the mean of -log sigmoid(r_chosen - r_rejected) over pairs.

    Shapes: r_chosen, r_rejected (N,) rewards of the preferred and the other item of N pairs
    -> a 0-dim tensor of their dtype, differentiable. Stays finite for any finite margin.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "bradley_terry_loss: not implemented yet; see exercises/reward_model/README.md"
    )


def sample_preferences(r_a: Tensor, r_b: Tensor, generator: torch.Generator) -> Tensor:
    """Noisy labels from true rewards: True where a is preferred, with chance sigmoid(r_a - r_b).

    Shapes: r_a, r_b (N,) floating, on one device -> bool (N,) on that device. The labeller
    prefers b to a sometimes even when r_b < r_a: that noise is what the model is fitted to.
    generator: a torch.Generator on the rewards' device; every draw uses it.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "sample_preferences: not implemented yet; see exercises/reward_model/README.md"
    )


def bayes_optimal_accuracy(r_a: Tensor, r_b: Tensor) -> Tensor:
    """The best expected accuracy any model can reach on labels drawn from these true rewards.

    Shapes: r_a, r_b (N,) true rewards of N pairs -> a 0-dim tensor of their dtype: the mean over
    pairs of max(p, 1 - p) with p = sigmoid(r_a - r_b), i.e. mean(sigmoid(|r_a - r_b|)).
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "bayes_optimal_accuracy: not implemented yet; see exercises/reward_model/README.md"
    )


class RewardModel(nn.Module):
    """A small reward model: an MLP with a scalar head, one reward per item.

    RewardModel(d_in, d_hidden): Linear(d_in, d_hidden), ReLU, Linear(d_hidden, d_hidden), ReLU,
    Linear(d_hidden, 1). Shapes: x (..., d_in) -> rewards (...): the head's last axis of size 1 is
    squeezed away.
    """

    def __init__(self, d_in: int, d_hidden: int = 64) -> None:
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError(
            "RewardModel.__init__: not implemented yet; see exercises/reward_model/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        # YOUR CODE HERE
        raise NotImplementedError(
            "RewardModel.forward: not implemented yet; see exercises/reward_model/README.md"
        )


def train_reward_model(
    model: nn.Module,
    chosen: Tensor,
    rejected: Tensor,
    generator: torch.Generator,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 256,
) -> list[float]:
    """Fit `model` to N preference pairs by minimising bradley_terry_loss with AdamW.

    chosen, rejected: (N, ...) items on the model's device; row i of chosen was preferred to row i
    of rejected. model maps a batch of items (B, ...) to rewards (B,). Each of `steps` steps draws
    batch_size pair indices uniformly with replacement (torch.randint on the CPU with `generator`,
    a CPU torch.Generator), takes one torch.optim.AdamW step (learning rate lr, torch's other
    defaults) on the loss of those pairs, and records the loss. Returns the `steps` losses, as
    Python floats, in order.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "train_reward_model: not implemented yet; see exercises/reward_model/README.md"
    )
