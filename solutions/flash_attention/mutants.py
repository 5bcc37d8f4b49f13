"""Common mistakes in FlashAttention, each replacing one function of the reference."""

import math

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("flash_attention")


def _tiled_forward(q, k, v, is_causal, block_q, block_k, rescale=True, lse_with_max=True):
    """The reference's forward with two of its steps optional (for the mutants below)."""
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    outs, lses = [], []
    for i0 in range(0, T_q, block_q):
        i1 = min(i0 + block_q, T_q)
        qi = q[..., i0:i1, :] / math.sqrt(d)
        m = torch.full(qi.shape[:-1], -math.inf, dtype=q.dtype, device=q.device)
        total = torch.zeros_like(m)
        acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        for j0 in range(0, min(T_k, i1) if is_causal else T_k, block_k):
            j1 = min(j0 + block_k, T_k)
            s = qi @ k[..., j0:j1, :].transpose(-2, -1)
            if is_causal:
                s = s.masked_fill(~ref._causal_mask(i0, i1, j0, j1, q.device), -math.inf)
            m_new = torch.maximum(m, s.amax(-1))
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(m - m_new)
            total = alpha * total + p.sum(-1)
            acc = (alpha[..., None] if rescale else 1.0) * acc + p @ v[..., j0:j1, :]
            m = m_new
        outs.append(acc / total[..., None])
        lses.append(m + torch.log(total) if lse_with_max else torch.log(total))
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


@mutant(
    "flash_attention_forward",
    "the running output is not rescaled by exp(m_old - m_new) when a tile raises the maximum",
)
def output_not_rescaled(q, k, v, is_causal=False, block_q=64, block_k=64):
    return _tiled_forward(q, k, v, is_causal, block_q, block_k, rescale=False)


@mutant(
    "flash_attention_forward",
    "lse is log(l) without the running maximum m: it must be m + log(l)",
)
def lse_without_max(q, k, v, is_causal=False, block_q=64, block_k=64):
    return _tiled_forward(q, k, v, is_causal, block_q, block_k, lse_with_max=False)


@mutant(
    "flash_attention_forward", "the scores are divided by d instead of sqrt(d)"
)  # fmt: skip
def scale_one_over_d(q, k, v, is_causal=False, block_q=64, block_k=64):
    return ref.flash_attention_forward(
        q / math.sqrt(q.shape[-1]), k, v, is_causal, block_q, block_k
    )


@mutant("_causal_mask", "the causal mask is off by one: each query also sees the next key")
def causal_off_by_one(i0, i1, j0, j1, device):
    rows = torch.arange(i0, i1, device=device)[:, None]
    return torch.arange(j0, j1, device=device)[None, :] <= rows + 1


@mutant(
    "flash_attention_forward",
    "the forward builds the whole T_q x T_k score matrix: FlashAttention only ever holds a tile",
)
def forward_materialises_scores(q, k, v, is_causal=False, block_q=64, block_k=64):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        s = s.masked_fill(~ref._causal_mask(0, q.shape[-2], 0, k.shape[-2], q.device), -math.inf)
    return torch.softmax(s, dim=-1) @ v, s.logsumexp(-1)


@mutant(
    "flash_attention_backward",
    "the backward recomputes the whole softmax matrix instead of tiles from lse",
)
def backward_materialises_scores(do, q, k, v, o, lse, is_causal=False, block_q=64, block_k=64):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        s = s.masked_fill(~ref._causal_mask(0, q.shape[-2], 0, k.shape[-2], q.device), -math.inf)
    p = torch.softmax(s, dim=-1)
    dp = do @ v.transpose(-2, -1)
    ds = p * (dp - (do * o).sum(-1, keepdim=True))
    scale = 1 / math.sqrt(q.shape[-1])
    return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, p.transpose(-2, -1) @ do


@mutant(
    "flash_attention_backward",
    "dS = P * dP forgets to subtract D_i = rowsum(dO * O), the softmax's own derivative",
)
def backward_without_D(do, q, k, v, o, lse, is_causal=False, block_q=64, block_k=64):
    # With o = 0, D_i = rowsum(dO * O) is 0: exactly the subtraction left out.
    no_o = torch.zeros_like(o)
    return ref.flash_attention_backward(do, q, k, v, no_o, lse, is_causal, block_q, block_k)


@mutant(
    "flash_attention_forward",
    "one query row at a time in a Python loop: process block_q queries together",
    slow=True,
)
def one_query_row_at_a_time(q, k, v, is_causal=False, block_q=64, block_k=64):
    return ref.flash_attention_forward(q, k, v, is_causal, 1, block_k)
