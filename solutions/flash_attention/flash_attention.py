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
    ### BEGIN SOLUTION
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    acc_dtype = torch.promote_types(q.dtype, torch.float32)  # statistics never in half precision
    scale = 1 / math.sqrt(d)
    outs, lses = [], []
    for i0 in range(0, T_q, block_q):
        i1 = min(i0 + block_q, T_q)
        qi = q[..., i0:i1, :].to(acc_dtype) * scale
        m = torch.full(qi.shape[:-1], -math.inf, dtype=acc_dtype, device=q.device)  # running max
        total = torch.zeros_like(m)  # running sum of exp(s - m)
        acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=acc_dtype, device=q.device)
        # With a causal mask, keys after the tile's last query are never seen: stop there.
        for j0 in range(0, min(T_k, i1) if is_causal else T_k, block_k):
            j1 = min(j0 + block_k, T_k)
            s = qi @ k[..., j0:j1, :].to(acc_dtype).transpose(-2, -1)  # (..., i1-i0, j1-j0)
            if is_causal:
                s = s.masked_fill(~_causal_mask(i0, i1, j0, j1, q.device), -math.inf)
            m_new = torch.maximum(m, s.amax(-1))
            p = torch.exp(s - m_new[..., None])
            # The old sum and output were taken relative to the old maximum: rescale them.
            alpha = torch.exp(m - m_new)
            total = alpha * total + p.sum(-1)
            acc = alpha[..., None] * acc + p @ v[..., j0:j1, :].to(acc_dtype)
            m = m_new
        outs.append((acc / total[..., None]).to(q.dtype))
        lses.append(m + torch.log(total))  # log sum_j exp(s_j), the only statistic backward needs
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    T_q, d = q.shape[-2:]
    T_k = k.shape[-2]
    acc_dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1 / math.sqrt(d)
    do, o, lse = do.to(acc_dtype), o.to(acc_dtype), lse.to(acc_dtype)
    # dS = P * (dP - D) with D_i = sum_j P_ij dP_ij = rowsum(dO * O): one number per query.
    D = (do * o).sum(-1)
    dq = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
    dks, dvs = [], []
    for j0 in range(0, T_k, block_k):
        j1 = min(j0 + block_k, T_k)
        kj, vj = k[..., j0:j1, :].to(acc_dtype), v[..., j0:j1, :].to(acc_dtype)
        dk = torch.zeros(kj.shape, dtype=acc_dtype, device=q.device)
        dv = torch.zeros(vj.shape, dtype=acc_dtype, device=q.device)
        # With a causal mask, queries before key j0 never see this tile: start at j0's tile.
        for i0 in range((j0 // block_q) * block_q if is_causal else 0, T_q, block_q):
            i1 = min(i0 + block_q, T_q)
            qi, doi = q[..., i0:i1, :].to(acc_dtype), do[..., i0:i1, :]
            s = qi @ kj.transpose(-2, -1) * scale
            if is_causal:
                s = s.masked_fill(~_causal_mask(i0, i1, j0, j1, q.device), -math.inf)
            p = torch.exp(s - lse[..., i0:i1, None])  # the forward's probabilities, recomputed
            dv += p.transpose(-2, -1) @ doi
            dp = doi @ vj.transpose(-2, -1)
            ds = p * (dp - D[..., i0:i1, None])
            dq[..., i0:i1, :] += ds @ kj * scale
            dk += ds.transpose(-2, -1) @ qi * scale
        dks.append(dk)
        dvs.append(dv)
    dk, dv = torch.cat(dks, dim=-2), torch.cat(dvs, dim=-2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
    ### END SOLUTION


class FlashAttention(torch.autograd.Function):
    """Autograd over the two passes: saves q, k, v, o and lse (never the probabilities)."""

    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, is_causal: bool, block_q: int, block_k: int
    ) -> Tensor:
        """q (B, H, T_q, d), k (B, H, T_k, d), v (B, H, T_k, d_v) -> o (B, H, T_q, d_v)."""
        ### BEGIN SOLUTION
        o, lse = flash_attention_forward(q, k, v, is_causal, block_q, block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (is_causal, block_q, block_k)
        return o
        ### END SOLUTION

    @staticmethod
    def backward(ctx, do: Tensor) -> tuple[Tensor | None, ...]:
        """do (B, H, T_q, d_v) -> (dq, dk, dv, None, None, None)."""
        ### BEGIN SOLUTION
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(do, q, k, v, o, lse, *ctx.args)
        return dq, dk, dv, None, None, None
        ### END SOLUTION


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
    ### BEGIN SOLUTION
    bh = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    dims, dims_v = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(
        Q + bh * stride_qb + rows[:, None] * stride_qt + dims[None, :],
        mask=(rows[:, None] < T_q) & (dims[None, :] < d),
        other=0.0,
    )
    m = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    end = T_k
    if IS_CAUSAL:
        end = tl.minimum(T_k, (tl.program_id(0) + 1) * BLOCK_Q)
    for j0 in range(0, end, BLOCK_K):
        cols = j0 + tl.arange(0, BLOCK_K)
        kt = tl.load(  # the tile of keys, transposed: (BLOCK_D, BLOCK_K)
            K + bh * stride_kb + cols[None, :] * stride_kt + dims[:, None],
            mask=(cols[None, :] < T_k) & (dims[:, None] < d),
            other=0.0,
        )
        s = tl.dot(q, kt, input_precision="ieee") * scale
        seen = cols[None, :] < T_k
        if IS_CAUSAL:
            seen = seen & (cols[None, :] <= rows[:, None])
        s = tl.where(seen, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)  # rescales what was summed against the old maximum
        total = alpha * total + tl.sum(p, 1)
        vj = tl.load(
            V + bh * stride_vb + cols[:, None] * stride_vt + dims_v[None, :],
            mask=(cols[:, None] < T_k) & (dims_v[None, :] < d_v),
            other=0.0,
        )
        acc = alpha[:, None] * acc + tl.dot(p.to(vj.dtype), vj, input_precision="ieee")
        m = m_new
    out = rows[:, None] < T_q
    tl.store(
        Out + bh * stride_ob + rows[:, None] * stride_ot + dims_v[None, :],
        (acc / total[:, None]).to(Out.dtype.element_ty),
        mask=out & (dims_v[None, :] < d_v),
    )
    tl.store(LSE + bh * T_q + rows, m + tl.log(total), mask=rows < T_q)
    ### END SOLUTION


def triton_flash_forward(
    q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, block_q: int = 64, block_k: int = 64
) -> tuple[Tensor, Tensor]:
    """flash_attention_forward as one Triton kernel: (o, lse) as flash_attention_forward returns.

    Shapes as flash_attention_forward; lse is float32. block_q and block_k are powers of two, at
    least 16. On CUDA tensors the kernel is compiled for the GPU; on CPU tensors (no GPU here)
    Triton's interpreter runs it. float16, bfloat16 and float32 inputs.
    """
    ### BEGIN SOLUTION
    if triton is None:
        raise ImportError("triton_flash_forward needs Triton: pip install -e '.[triton]'")
    *batch, T_q, d = q.shape
    T_k, d_v = k.shape[-2], v.shape[-1]
    # One (batch x head) axis, contiguous rows: the kernel indexes row * stride + column.
    q3, k3, v3 = (t.reshape(-1, *t.shape[-2:]).contiguous() for t in (q, k, v))
    o = torch.empty(*q3.shape[:-1], d_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(q3.shape[:-1], dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(T_q, block_q), q3.shape[0])
    _flash_forward_kernel[grid](
        q3, k3, v3, o, lse,
        q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
        v3.stride(0), v3.stride(1), o.stride(0), o.stride(1),
        T_q, T_k, d, d_v, 1 / math.sqrt(d),
        IS_CAUSAL=is_causal, BLOCK_Q=block_q, BLOCK_K=block_k,
        BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(d_v)),
    )  # fmt: skip
    return o.reshape(*batch, T_q, d_v), lse.reshape(*batch, T_q)
    ### END SOLUTION
