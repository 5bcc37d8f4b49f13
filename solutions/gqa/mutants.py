"""Common mistakes in grouped-query attention and its KV cache, each replacing one function."""

import math

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("gqa")


@mutant(
    "grouped_query_attention",
    "keys and values are tiled with .repeat, so head h reads group h % G, not h // (H / G)",
)
def repeat_not_interleave(q, k, v, is_causal=False):
    r = q.shape[-3] // k.shape[-3]
    tile = (1,) * (k.dim() - 3) + (r, 1, 1)
    return ref.grouped_query_attention(q, k.repeat(tile), v.repeat(tile), is_causal)


@mutant(
    "grouped_query_attention",
    "the causal mask is aligned to the top left: after T_k - T_q cached keys, query i must see "
    "keys up to T_k - T_q + i, not up to i",
)
def causal_top_left(q, k, v, is_causal=False):
    r = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(r, dim=-3), v.repeat_interleave(r, dim=-3)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), -math.inf)
    return torch.softmax(scores, dim=-1) @ v


@mutant("KVCache.update", "KVCache.update replaces the cached keys and values instead of appending")
def cache_overwrites(self, k, v):
    self.k, self.v = k, v
    return k, v


@mutant(
    "GroupedQueryAttention.forward",
    "the cache keeps the inputs and every step recomputes the whole prefix: decoding a token "
    "costs time that grows with the square of the length",
)
def recompute_prefix(self, x, is_causal=False, cache=None):
    T_new = x.shape[1]
    if cache is not None:  # the cache keeps the inputs so far, (B, 1, T, d_model)
        x = cache.update(x[:, None], x[:, None])[0][:, 0]
    B, T, _ = x.shape
    q, k, v = (
        p(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        for p in (self.q_proj, self.k_proj, self.v_proj)
    )
    out = ref.grouped_query_attention(q, k, v, is_causal)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, self.d_model))[:, T - T_new :]


@mutant(
    "mean_pool_heads",
    "mean_pool_heads pools heads g, g + G, g + 2G, ... (a strided view) instead of the "
    "consecutive heads of each group",
)
def pool_strided_heads(w, n_heads, n_kv_heads):
    D = w.shape[0] // n_heads
    return w.reshape(n_heads // n_kv_heads, n_kv_heads, D, *w.shape[1:]).mean(0).flatten(0, 1)


@mutant(
    "mean_pool_heads",
    "mean_pool_heads keeps the first head of each group; the paper averages all of its heads",
)
def keep_first_head(w, n_heads, n_kv_heads):
    D = w.shape[0] // n_heads
    return w.reshape(n_kv_heads, n_heads // n_kv_heads, D, *w.shape[1:])[:, 0].flatten(0, 1)


@mutant(
    "kv_cache_bytes", "kv_cache_bytes counts the keys only: the cache holds a value for each too"
)
def keys_only(n_layers, n_kv_heads, head_dim, seq_len, batch=1, dtype=torch.float16):
    return n_layers * n_kv_heads * head_dim * seq_len * batch * dtype.itemsize
