"""Common mistakes in tensor parallelism, each replacing one function or method of the reference."""

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("tensor_parallel")


@mutant(
    "copy_to_ranks",
    "f and g are swapped: the input is all-reduced in the forward pass (each rank's copy counted "
    "world_size times) and its gradient is never summed",
)
def f_and_g_swapped(x):
    return ref.ReduceFromRanks.apply(x)


@mutant(
    "CopyToRanks.backward",
    "f has no all-reduce in the backward pass: the input's gradient holds only this rank's share",
)
@staticmethod
def no_backward_all_reduce(ctx, grad):
    return grad


@mutant(
    "RowParallelLinear.forward",
    "the bias is added on every rank before the all-reduce, so it is counted world_size times",
)
def row_bias_before_reduce(self, x):
    return ref.reduce_from_ranks(F.linear(x, self.weight, self.bias))


@mutant(
    "RowParallelLinear.from_linear",
    "the row-parallel weight is split with a stride (every world_size-th input feature), not in "
    "the contiguous block the column-parallel layer's output holds",
)
@classmethod
def row_split_strided(cls, linear, rank, world_size):
    layer = ref.RowParallelLinear.from_linear(linear, rank, world_size)
    with torch.no_grad():
        layer.weight.copy_(linear.weight[:, rank::world_size])
    return layer


@mutant(
    "ParallelSelfAttention.from_multihead_attention",
    "the fused [W_q; W_k; W_v] weight is cut into one block per rank, so a rank gets another "
    "rank's queries as its keys; split each of W_q, W_k and W_v by heads",
)
@classmethod
def qkv_cut_as_one_block(cls, mha, rank, world_size):
    attn = ref.ParallelSelfAttention.from_multihead_attention(mha, rank, world_size)
    rows = ref.shard_slice(3 * mha.embed_dim, rank, world_size)
    with torch.no_grad():
        attn.qkv_proj.weight.copy_(mha.in_proj_weight[rows])
        if mha.in_proj_bias is not None:
            attn.qkv_proj.bias.copy_(mha.in_proj_bias[rows])
    return attn


@mutant(
    "ParallelSelfAttention.forward",
    "each rank splits its local projections into all n_heads heads instead of its "
    "n_heads / world_size heads, so the heads are too narrow",
)
def all_heads_on_every_rank(self, x, is_causal=False):
    B, T, _ = x.shape
    q, k, v = self.qkv_proj(x).chunk(3, dim=-1)

    def split_heads(t):
        return t.reshape(B, T, self.n_heads, -1).transpose(1, 2)

    heads = F.scaled_dot_product_attention(
        split_heads(q), split_heads(k), split_heads(v), is_causal=is_causal
    )
    return self.out_proj(heads.transpose(1, 2).reshape(B, T, -1))


@mutant(
    "ParallelSelfAttention.forward",
    "queries, keys and values each pass through their own f: three all-reduces in the backward "
    "pass where the paper needs one",
)
def three_fs_in_attention(self, x, is_causal=False):
    B, T, _ = x.shape
    w = self.qkv_proj.weight.chunk(3)
    b = self.qkv_proj.bias.chunk(3) if self.qkv_proj.bias is not None else (None,) * 3
    q, k, v = (F.linear(ref.copy_to_ranks(x), wi, bi) for wi, bi in zip(w, b, strict=True))

    def split_heads(t):
        return t.view(B, T, self.local_heads, self.d_head).transpose(1, 2)

    heads = F.scaled_dot_product_attention(
        split_heads(q), split_heads(k), split_heads(v), is_causal=is_causal
    )
    return self.out_proj(heads.transpose(1, 2).reshape(B, T, -1))
