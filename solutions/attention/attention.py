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
    ### BEGIN SOLUTION
    # Dividing by sqrt(d) keeps the logits' variance near 1 whatever the head size, so the
    # softmax does not saturate and its gradients do not vanish.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        T_q, T_k = scores.shape[-2:]
        causal = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    # The softmax runs over the keys: each query's weights sum to one. torch's softmax subtracts
    # the row maximum first, so large logits cannot overflow.
    weights = torch.softmax(scores, dim=-1)
    return weights @ v
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        ### END SOLUTION

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention over x (B, T, d_model); mask broadcastable to (B, n_heads, T, T)."""
        ### BEGIN SOLUTION
        B, T, _ = x.shape

        def split_heads(t: Tensor) -> Tensor:  # (B, T, d_model) -> (B, n_heads, T, d_head)
            return t.view(B, T, self.n_heads, -1).transpose(1, 2)

        q, k, v = (
            split_heads(self.q_proj(x)),
            split_heads(self.k_proj(x)),
            split_heads(self.v_proj(x)),
        )
        heads = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
        # Concatenate the heads again and mix them with the output projection.
        return self.out_proj(heads.transpose(1, 2).reshape(B, T, self.d_model))
        ### END SOLUTION
