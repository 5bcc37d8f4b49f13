"""FlashAttention (Dao et al., 2022; FlashAttention-2, Dao, 2023): exact attention, tile by tile.

Attention never needs the whole T_q x T_k score matrix at once. Walk over the keys in tiles, keep
for each query a running maximum m, a running sum of exponentials l and a running output, and
rescale them whenever the maximum grows (the online softmax). The backward pass recomputes each
tile's probabilities from the saved log-sum-exp instead of storing them. Memory grows with T, not
T^2, and on a GPU the tiles live in fast on-chip memory.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

try:  # the advanced part: a Triton kernel (pip install -e '.[triton]')
    if not torch.cuda.is_available():
        # No GPU: Triton's interpreter runs the kernel on CPU tensors, with numpy, one program
        # at a time. It is chosen when a kernel is decorated, so it is set before that.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None

__all__ = [
    "FlashAttention",
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_forward",
    "triton_flash_forward",
]


def _causal_mask(i0: int, i1: int, j0: int, j1: int, device: torch.device) -> Tensor:
    """(i1 - i0, j1 - j0) booleans, True where query i may see key j (j <= i, top-left aligned)."""
    rows = torch.arange(i0, i1, device=device)[:, None]
    cols = torch.arange(j0, j1, device=device)[None, :]
    return cols <= rows


def flash_attention_forward(
    q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, block_q: int = 64, block_k: int = 64
) -> tuple[Tensor, Tensor]:
    """Exact softmax(q k^T / sqrt(d)) v, computed tile by tile with an online softmax.

    Shapes: q (B, H, T_q, d), k (B, H, T_k, d), v (B, H, T_k, d_v) (any leading dimensions) ->
    o (B, H, T_q, d_v) in q's dtype and lse (B, H, T_q), the log-sum-exp of each query's scaled
    scores, in float32 for half-precision inputs and in q's dtype otherwise.
    is_causal: query i sees keys 0..i (top-left aligned, as F.scaled_dot_product_attention).
    No tensor of T_q x T_k elements is created: a score tile holds block_q x block_k per head.
    Block sizes need not divide T_q or T_k; the last tiles are shorter.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "flash_attention_forward: not implemented yet; see exercises/flash_attention/README.md"
    )


def flash_attention_backward(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    is_causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of attention, recomputing each tile's probabilities from lse.

    Shapes: do and o (B, H, T_q, d_v), q (B, H, T_q, d), k (B, H, T_k, d), v (B, H, T_k, d_v),
    lse (B, H, T_q) as flash_attention_forward returns it -> (dq, dk, dv) shaped and typed as
    (q, k, v). No tensor of T_q x T_k elements is created.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "flash_attention_backward: not implemented yet; see exercises/flash_attention/README.md"
    )


class FlashAttention(torch.autograd.Function):
    """Autograd over the two passes: saves q, k, v, o and lse (never the probabilities)."""

    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, is_causal: bool, block_q: int, block_k: int
    ) -> Tensor:
        """q (B, H, T_q, d), k (B, H, T_k, d), v (B, H, T_k, d_v) -> o (B, H, T_q, d_v)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "FlashAttention.forward: not implemented yet; see exercises/flash_attention/README.md"
        )

    @staticmethod
    def backward(ctx, do: Tensor) -> tuple[Tensor | None, ...]:
        """do (B, H, T_q, d_v) -> (dq, dk, dv, None, None, None)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "FlashAttention.backward: not implemented yet; see exercises/flash_attention/README.md"
        )


def flash_attention(
    q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, block_q: int = 64, block_k: int = 64
) -> Tensor:
    """Attention that autograd can differentiate, in O(T) memory: FlashAttention.apply(...)."""
    return FlashAttention.apply(q, k, v, is_causal, block_q, block_k)


def _jit(fn):
    """Triton's compiler (or its interpreter) where Triton is installed; else the plain function."""
    return fn if triton is None else triton.jit(fn)


@_jit
def _flash_forward_kernel(
    # pointers: q (BH, T_q, d), k (BH, T_k, d), v (BH, T_k, d_v), out (BH, T_q, d_v), lse (BH, T_q)
    Q, K, V, Out, LSE,
    stride_qb, stride_qt, stride_kb, stride_kt, stride_vb, stride_vt, stride_ob, stride_ot,
    T_q, T_k, d, d_v, scale,
    IS_CAUSAL: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """One program: one tile of BLOCK_Q queries of one (batch, head), all its keys in tiles.

    The last dimension of every tensor is contiguous (stride 1); d and d_v are padded to the
    powers of two BLOCK_D and BLOCK_DV with zeros.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "_flash_forward_kernel: not implemented yet; see exercises/flash_attention/README.md"
    )


def triton_flash_forward(
    q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, block_q: int = 64, block_k: int = 64
) -> tuple[Tensor, Tensor]:
    """flash_attention_forward as one Triton kernel: (o, lse) as flash_attention_forward returns.

    Shapes as flash_attention_forward; lse is float32. block_q and block_k are powers of two, at
    least 16. On CUDA tensors the kernel is compiled for the GPU; on CPU tensors (no GPU here)
    Triton's interpreter runs it. float16, bfloat16 and float32 inputs.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "triton_flash_forward: not implemented yet; see exercises/flash_attention/README.md"
    )
