"""Multi-query and grouped-query attention, with a KV cache (Shazeer, 2019; Ainslie et al., 2023).

When a language model writes text one token at a time, each step must read the keys and values of
every earlier token. Multi-head attention keeps a key and a value per head; multi-query attention
shares one key/value head among all query heads; grouped-query attention sits between the two:
G key/value heads, each shared by a group of H / G query heads. The cache shrinks by H / G, and so
does the memory traffic that bounds the speed of decoding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "GroupedQueryAttention",
    "KVCache",
    "grouped_query_attention",
    "kv_cache_bytes",
    "mean_pool_heads",
]


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False) -> Tensor:
    """Attention where H query heads share G key/value heads: head h reads group h // (H // G).

    Shapes: q (..., H, T_q, D), k (..., G, T_k, D), v (..., G, T_k, D_v) -> (..., H, T_q, D_v),
    with G dividing H. G == H is multi-head attention, G == 1 multi-query attention.
    is_causal: the mask is aligned to the END, as when T_q new queries follow T_k - T_q cached
    keys: query i sees keys 0 .. T_k - T_q + i (for T_q == T_k, the usual lower triangle).
    """
    H, T_q = q.shape[-3], q.shape[-2]
    G, T_k = k.shape[-3], k.shape[-2]
    if H % G:
        raise ValueError(f"{H} query heads cannot be split into {G} key/value groups")
    if is_causal and T_q > T_k:
        raise ValueError(f"is_causal needs T_q <= T_k; got T_q={T_q}, T_k={T_k}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "grouped_query_attention: not implemented yet; see exercises/gqa/README.md"
    )


class KVCache:
    """The keys and values that one attention layer has computed so far, for incremental decoding.

    Attributes k and v hold the cached keys and values, (B, G, T, D) each, or None before the
    first update; len(cache) is T, the number of cached positions.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, G, T_new, D) along the time axis; return all of them, (B, G, T, D).

        T = len(self) afterwards: the positions cached before plus the T_new new ones.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "KVCache.update: not implemented yet; see exercises/gqa/README.md"
        )


class GroupedQueryAttention(nn.Module):
    """Self-attention with n_heads query heads and n_kv_heads key/value heads.

    Shapes: x (B, T, d_model) -> (B, T, d_model); head size D = d_model // n_heads. Layers:
    q_proj (d_model -> d_model), k_proj and v_proj (d_model -> n_kv_heads * D), out_proj
    (d_model -> d_model). Heads are contiguous: head h owns features h * D ... (h + 1) * D - 1.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, bias: bool = False) -> None:
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"need n_kv_heads | n_heads | d_model; got d_model={d_model}, "
                f"n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        # YOUR CODE HERE
        raise NotImplementedError(
            "GroupedQueryAttention.__init__: not implemented yet; see exercises/gqa/README.md"
        )

    def forward(self, x: Tensor, is_causal: bool = False, cache: KVCache | None = None) -> Tensor:
        """Attend over x (B, T, d_model) and, with a cache, over the positions cached before.

        With a cache, the keys and values of x are appended to it, and x's T positions follow the
        cached ones (is_causal aligns the mask to the end). Decoding token by token with a cache
        gives the same outputs as one causal forward over the whole sequence.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "GroupedQueryAttention.forward: not implemented yet; see exercises/gqa/README.md"
        )


def mean_pool_heads(w: Tensor, n_heads: int, n_kv_heads: int) -> Tensor:
    """Convert a multi-head key or value projection to n_kv_heads heads by averaging each group.

    Shapes: w (n_heads * D, ...) -> (n_kv_heads * D, ...): a k_proj/v_proj weight
    (n_heads * D, d_model) or bias (n_heads * D,). Group g pools the consecutive heads
    g * (n_heads // n_kv_heads) ... (g + 1) * (n_heads // n_kv_heads) - 1.
    """
    if w.shape[0] % n_heads or n_heads % n_kv_heads:
        raise ValueError(
            f"w has {w.shape[0]} rows; need n_heads={n_heads} | rows and n_kv_heads={n_kv_heads} "
            "| n_heads"
        )
    # YOUR CODE HERE
    raise NotImplementedError("mean_pool_heads: not implemented yet; see exercises/gqa/README.md")


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    seq_len: int,
    batch: int = 1,
    dtype: torch.dtype = torch.float16,
) -> int:
    """Bytes a KV cache takes: a key and a value of head_dim numbers per layer, key/value head,
    position and sequence, each number stored in `dtype`.
    """
    # YOUR CODE HERE
    raise NotImplementedError("kv_cache_bytes: not implemented yet; see exercises/gqa/README.md")
