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
    ### BEGIN SOLUTION
    # Fold the heads of each group together, (..., G, H/G, T_q, D): head h = g * (H/G) + j is in
    # group g = h // (H/G). The keys get a size-1 axis and broadcast over the group, so the G
    # key/value heads are read, never copied H/G times.
    q = q.unflatten(-3, (G, H // G))
    k, v = k.unsqueeze(-3), v.unsqueeze(-3)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., G, H/G, T_q, T_k)
    if is_causal:
        # The T_q queries are the LAST T_q positions: query i sits at position T_k - T_q + i.
        seen = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
        scores = scores.masked_fill(~seen, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (..., G, H/G, T_q, D_v)
    return out.flatten(-4, -3)
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        # Concatenation copies the cache at each step; servers preallocate (or page) instead, but
        # the copy is linear in the length, like the attention itself.
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v
        ### END SOLUTION


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
        ### BEGIN SOLUTION
        kv_dim = n_kv_heads * self.head_dim  # smaller than d_model: fewer heads to cache
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        ### END SOLUTION

    def forward(self, x: Tensor, is_causal: bool = False, cache: KVCache | None = None) -> Tensor:
        """Attend over x (B, T, d_model) and, with a cache, over the positions cached before.

        With a cache, the keys and values of x are appended to it, and x's T positions follow the
        cached ones (is_causal aligns the mask to the end). Decoding token by token with a cache
        gives the same outputs as one causal forward over the whole sequence.
        """
        ### BEGIN SOLUTION
        B, T, _ = x.shape

        def heads(t: Tensor) -> Tensor:  # (B, T, n * D) -> (B, n, T, D)
            return t.view(B, T, -1, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if cache is not None:
            # Only the new positions are projected; the past comes from the cache, so a step of
            # decoding costs O(d_model^2 + T * d_model), not a forward over the whole prefix.
            k, v = cache.update(k, v)
        out = grouped_query_attention(q, k, v, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.d_model))
        ### END SOLUTION


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
    ### BEGIN SOLUTION
    # Ainslie et al. found the mean of a group's heads a better start for uptraining than keeping
    # one head of the group or starting from scratch: it keeps a little of every head.
    D = w.shape[0] // n_heads
    return w.reshape(n_kv_heads, n_heads // n_kv_heads, D, *w.shape[1:]).mean(1).flatten(0, 1)
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * dtype.itemsize
    ### END SOLUTION
