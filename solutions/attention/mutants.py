"""Common mistakes in attention, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("attention")


@mutant(
    "scaled_dot_product_attention", "the logits are not divided by sqrt(d): the softmax saturates"
)
def no_scale(q, k, v, mask=None, is_causal=False):
    return ref.scaled_dot_product_attention(q * q.shape[-1] ** 0.5, k, v, mask, is_causal)


@mutant("scaled_dot_product_attention", "the softmax is taken over the query axis, not the keys")
def softmax_over_queries(q, k, v, mask=None, is_causal=False):
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if is_causal:
        scores = scores.masked_fill(
            ~torch.ones_like(scores, dtype=torch.bool).tril(), float("-inf")
        )
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-2).nan_to_num() @ v


@mutant(
    "scaled_dot_product_attention",
    "the causal mask is off by one: each query also sees the next key",
)
def causal_off_by_one(q, k, v, mask=None, is_causal=False):
    if is_causal:
        T_q, T_k = q.shape[-2], k.shape[-2]
        mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(1)
    return ref.scaled_dot_product_attention(q, k, v, mask)


@mutant(
    "scaled_dot_product_attention", "the boolean mask is inverted: True should mean 'takes part'"
)
def mask_inverted(q, k, v, mask=None, is_causal=False):
    return ref.scaled_dot_product_attention(q, k, v, None if mask is None else ~mask, is_causal)


@mutant(
    "scaled_dot_product_attention",
    "the maximum logit is not subtracted before exp: large logits overflow",
)
def softmax_without_max_shift(q, k, v, mask=None, is_causal=False):
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if is_causal:
        scores = scores.masked_fill(
            ~torch.ones_like(scores, dtype=torch.bool).tril(), float("-inf")
        )
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = scores.exp()
    return e / e.sum(-1, keepdim=True) @ v


@mutant(
    "MultiHeadAttention.forward",
    "heads are split with a reshape and no transpose, mixing positions across heads",
)
def heads_not_transposed(self, x, mask=None, is_causal=False):
    B, T, _ = x.shape
    q, k, v = (
        p(x).reshape(B, self.n_heads, T, -1) for p in (self.q_proj, self.k_proj, self.v_proj)
    )
    heads = ref.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    return self.out_proj(heads.transpose(1, 2).reshape(B, T, self.d_model))
