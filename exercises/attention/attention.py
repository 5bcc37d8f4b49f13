"""Scaled dot-product attention and multi-head attention (Vaswani et al., 2017).

Every query asks "which keys look like me?", turns the answer into weights with a softmax, and
returns the weighted average of the values. Multi-head attention runs several such lookups in
parallel, each in its own learned subspace.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "scaled_dot_product_attention"]


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, with torch's conventions.

    Shapes: q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v) -> (..., T_q, d_v).
    mask: boolean, broadcastable to (..., T_q, T_k); True means the key takes part.
    is_causal: query i sees keys 0..i only (the top-left aligned lower triangle).
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "scaled_dot_product_attention: not implemented yet; see exercises/attention/README.md"
    )


class MultiHeadAttention(nn.Module):
    """n_heads attention lookups in parallel, each over d_model // n_heads dimensions.

    Shapes: x (B, T, d_model) -> (B, T, d_model). Heads are laid out contiguously in the
    projections: head h owns features h * d_head ... (h + 1) * d_head - 1, as nn.MultiheadAttention.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        # YOUR CODE HERE
        raise NotImplementedError(
            "MultiHeadAttention.__init__: not implemented yet; see exercises/attention/README.md"
        )

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention over x (B, T, d_model); mask broadcastable to (B, n_heads, T, T)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "MultiHeadAttention.forward: not implemented yet; see exercises/attention/README.md"
        )
