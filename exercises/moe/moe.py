"""Sparsely-gated mixtures of experts: noisy top-k gating (Shazeer et al., 2017), top-2 dispatch
with expert capacity (GShard, Lepikhin et al., 2021) and Switch routing (Fedus, Zoph and Shazeer,
2022).

A mixture-of-experts layer holds many feed-forward networks (the experts) and a small router that
sends each token to only a few of them. The parameters grow with the number of experts while the
work per token stays that of one or two feed-forward layers. Each expert takes at most `capacity`
tokens per batch, so that every expert's work has a fixed shape; a token that finds its expert
full is dropped, and the residual connection carries it past the layer unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MoELayer", "SwitchRoute", "load_balancing_loss", "noisy_top_k_gating", "switch_route"]


def noisy_top_k_gating(
    x: Tensor,
    w_gate: Tensor,
    w_noise: Tensor,
    k: int,
    train: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Shazeer et al.'s noisy top-k gate: G(x) = softmax(KeepTopK(H(x), k)).

    Shapes: x (N, d), w_gate (d, E), w_noise (d, E) -> gates (N, E), of x's dtype and device.
    H(x) = x @ w_gate + eps * softplus(x @ w_noise) when train is True, where eps (N, E) is
    standard normal noise, one independent draw per token and expert, drawn from `generator` (a
    torch.Generator on x's device; None: torch's default one). When train is False,
    H(x) = x @ w_gate and nothing is drawn. KeepTopK keeps each row's k largest entries of H and
    sets the others to -inf, so that after the softmax over each row the k kept experts share
    weight 1 and the others get exactly 0. Differentiable with respect to x, w_gate and w_noise.
    1 <= k <= E.
    """
    if not 1 <= k <= w_gate.shape[-1]:
        raise ValueError(f"noisy_top_k_gating: k={k} must lie in 1 .. {w_gate.shape[-1]}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "noisy_top_k_gating: not implemented yet; see exercises/moe/README.md"
    )


class SwitchRoute(NamedTuple):
    """What switch_route returns, for N tokens and E experts.

    expert_index (N,) int64: the expert each token is sent to, the argmax of its logits.
    position (N,) int64: the token's place in its expert's queue: how many earlier tokens (lower
        index) chose the same expert. Defined for every token, kept or not.
    keep (N,) bool: position < capacity; False for a token dropped because its expert was full.
    gate (N,) float: the router probability softmax(logits)[t, expert_index[t]] of a kept token,
        the weight that scales its expert's output; 0 for a dropped token. Logits' dtype.
    capacity (int): the number of tokens each expert takes, ceil(capacity_factor * N / E).
    """

    expert_index: Tensor
    position: Tensor
    keep: Tensor
    gate: Tensor
    capacity: int


def switch_route(logits: Tensor, capacity_factor: float) -> SwitchRoute:
    """Switch Transformer routing: each token to its single best expert, at most `capacity` each.

    Shapes: logits (N, E) -> SwitchRoute (see its docstring), on logits' device.
    capacity = ceil(capacity_factor * N / E). Tokens claim places in token order (position order):
    when more than `capacity` tokens choose one expert, the first `capacity` of them (lowest index)
    are kept and the later ones dropped, whatever their probabilities. A dropped token is not
    processed by any expert; the layer's residual connection carries it forward unchanged.
    """
    # YOUR CODE HERE
    raise NotImplementedError("switch_route: not implemented yet; see exercises/moe/README.md")


def load_balancing_loss(router_probs: Tensor, expert_index: Tensor) -> Tensor:
    """The Switch Transformer's auxiliary loss: E * sum_i f_i * P_i.

    Shapes: router_probs (N, E), each row a softmax over the E experts; expert_index (N,) int64,
    the expert each token was sent to -> a scalar tensor of router_probs' dtype.
    f_i is the fraction of the N tokens sent to expert i (counted, so not differentiable) and P_i
    the mean over tokens of router_probs[:, i] (differentiable). It equals 1 when tokens and
    probabilities are spread uniformly, and E when everything goes to one expert with certainty.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "load_balancing_loss: not implemented yet; see exercises/moe/README.md"
    )


class MoELayer(nn.Module):
    """A feed-forward sublayer of E experts with GShard's top-2 routing, residual included.

    Parameters: router, an nn.Linear(d_model, E, bias=False); each expert e is a two-layer ReLU
    network FFN_e(x) = relu(x @ w1[e] + b1[e]) @ w2[e] + b2[e], its weights stacked over experts:
    w1 (E, d_model, d_ff), b1 (E, d_ff), w2 (E, d_ff, d_model), b2 (E, d_model).

    forward(x) with x (..., d_model) -> (y like x, aux_loss a scalar). The N tokens of x (all
    leading dimensions flattened, in order) are routed together:
    - p = softmax(router(x)) (N, E); each token's two most probable experts e1 (first choice) and
      e2 (second), with weights g1 = p[e1] / (p[e1] + p[e2]) and g2 = p[e2] / (p[e1] + p[e2]).
    - Each expert takes capacity = ceil(capacity_factor * 2 * N / E) tokens. First choices claim
      places before any second choice does: all first choices in token order, then all second
      choices in token order. A choice that finds its expert full is dropped; the weight of the
      other choice is not changed (g1 and g2 are computed before any dropping).
    - y = x + sum over the kept choices of g * FFN_e(x): a token whose two choices were both
      dropped comes out as x. With capacity_factor >= E / 2 nothing is ever dropped.
    - aux_loss = load_balancing_loss(p, e1).
    """

    def __init__(
        self, d_model: int, d_ff: int, n_experts: int, capacity_factor: float = 1.25
    ) -> None:
        super().__init__()
        if n_experts < 2:
            raise ValueError(f"MoELayer routes to two experts; n_experts={n_experts} is too few")
        self.d_model, self.d_ff, self.n_experts = d_model, d_ff, n_experts
        self.capacity_factor = capacity_factor
        # YOUR CODE HERE
        raise NotImplementedError(
            "MoELayer.__init__: not implemented yet; see exercises/moe/README.md"
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (..., d_model) -> (y (..., d_model), aux_loss ()); see the class docstring."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "MoELayer.forward: not implemented yet; see exercises/moe/README.md"
        )
