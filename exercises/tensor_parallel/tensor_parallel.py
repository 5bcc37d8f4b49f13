"""Megatron-style tensor parallelism (Shoeybi et al., 2019).

A transformer layer is split across `world_size` ranks inside its matrix products. The first
linear layer of a pair is split by output columns, the second by input rows, so the pair needs no
communication in between: one all-reduce joins the partial results at the end of the forward
pass, and one more joins the input's gradient at the start of the backward pass. The paper calls
the two conjugate operators f (identity forward, all-reduce backward) and g (all-reduce forward,
identity backward).

Every layer takes its `rank` and `world_size` explicitly and is built from the unsharded module's
weights with a `from_...` class method. Collectives go through `all_reduce`, which is a no-op when
no process group is initialised, so a layer with world_size == 1 is an ordinary layer.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ColumnParallelLinear",
    "CopyToRanks",
    "ParallelMLP",
    "ParallelSelfAttention",
    "ReduceFromRanks",
    "RowParallelLinear",
    "all_reduce",
    "copy_to_ranks",
    "reduce_from_ranks",
    "shard_slice",
]


def all_reduce(t: Tensor) -> Tensor:
    """Sum `t` in place over all ranks and return it; a no-op without a process group.

    Given. It looks `torch.distributed.all_reduce` up when called, so the specs can count and
    simulate your collectives: call it (or `dist.all_reduce`) rather than an imported name.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def shard_slice(n: int, rank: int, world_size: int) -> slice:
    """The contiguous block of `range(n)` that `rank` owns: n // world_size items. Given."""
    if n % world_size:
        raise ValueError(f"{n} does not split evenly over world_size={world_size}")
    size = n // world_size
    return slice(rank * size, (rank + 1) * size)


class CopyToRanks(torch.autograd.Function):
    """The paper's f: identity in the forward pass, all-reduce of the gradient in the backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        # YOUR CODE HERE
        raise NotImplementedError(
            "CopyToRanks.forward: not implemented yet; see exercises/tensor_parallel/README.md"
        )

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # YOUR CODE HERE
        raise NotImplementedError(
            "CopyToRanks.backward: not implemented yet; see exercises/tensor_parallel/README.md"
        )


class ReduceFromRanks(torch.autograd.Function):
    """The paper's g: all-reduce in the forward pass, identity in the backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        # YOUR CODE HERE
        raise NotImplementedError(
            "ReduceFromRanks.forward: not implemented yet; see exercises/tensor_parallel/README.md"
        )

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # YOUR CODE HERE
        raise NotImplementedError(
            "ReduceFromRanks.backward: not implemented yet; see exercises/tensor_parallel/README.md"
        )


def copy_to_ranks(x: Tensor) -> Tensor:
    """f(x): x unchanged; its gradient is all-reduced over the ranks. Any shape. Given."""
    return CopyToRanks.apply(x)


def reduce_from_ranks(x: Tensor) -> Tensor:
    """g(x): x summed over the ranks; its gradient passes through unchanged. Any shape. Given."""
    return ReduceFromRanks.apply(x)


def _init_(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """nn.Linear's default init for a shard: uniform in +-1/sqrt(fan_in of the whole layer)."""
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


class ColumnParallelLinear(nn.Module):
    """y = x A^T + b with A (out_features, in_features) split by output rows over the ranks.

    Rank r holds weight A[shard_slice(out_features, r, world_size)], shape
    (out_features // world_size, in_features), and the same block of the bias. Input x
    (..., in_features), the same on every rank; output (..., out_features // world_size): this
    rank's columns of y, in order, with no communication in the forward pass. The input passes
    through f, so its gradient is summed over the ranks in the backward pass.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        world_size: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        local = shard_slice(out_features, rank, world_size)
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.world_size = rank, world_size
        size = local.stop - local.start
        self.weight = nn.Parameter(torch.empty(size, in_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(size, dtype=dtype, device=device)) if bias else None
        _init_(self.weight, self.bias, in_features)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, world_size: int) -> ColumnParallelLinear:
        """Rank `rank`'s shard of `linear`, with linear's dtype and device (weights copied)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ColumnParallelLinear.from_linear: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> this rank's (..., out_features // world_size)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ColumnParallelLinear.forward: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )


class RowParallelLinear(nn.Module):
    """y = x A^T + b with A (out_features, in_features) split by input columns over the ranks.

    Rank r holds weight A[:, shard_slice(in_features, r, world_size)], shape
    (out_features, in_features // world_size), and the whole bias (out_features,). Input: this
    rank's block of x's features, (..., in_features // world_size), as a ColumnParallelLinear
    returns it. Output (..., out_features): the whole y, the same on every rank. The partial
    products pass through g (one all-reduce in the forward pass); the bias is added once.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        world_size: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        local = shard_slice(in_features, rank, world_size)
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.world_size = rank, world_size
        size = local.stop - local.start
        self.weight = nn.Parameter(torch.empty(out_features, size, dtype=dtype, device=device))
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype, device=device)) if bias else None
        )
        _init_(self.weight, self.bias, in_features)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, world_size: int) -> RowParallelLinear:
        """Rank `rank`'s shard of `linear`, with linear's dtype and device (weights copied)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "RowParallelLinear.from_linear: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        """this rank's x (..., in_features // world_size) -> the whole y (..., out_features)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "RowParallelLinear.forward: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )


class ParallelMLP(nn.Module):
    """The transformer's MLP, Y = GeLU(X A^T + a) B^T + b, split over the ranks (paper, Fig. 3a).

    fc1 (A, a) is a ColumnParallelLinear(d_model, d_hidden), fc2 (B, b) a
    RowParallelLinear(d_hidden, d_model). GeLU is elementwise, so each rank applies it to its own
    columns of X A^T. x (..., d_model) -> (..., d_model), the same on every rank; one all-reduce in
    the forward pass (g, in fc2) and one in the backward pass (f, in fc1). GeLU is the exact
    (erf) form, as nn.GELU().
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        rank: int,
        world_size: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kw = dict(bias=bias, dtype=dtype, device=device)
        self.fc1 = ColumnParallelLinear(d_model, d_hidden, rank, world_size, **kw)
        self.fc2 = RowParallelLinear(d_hidden, d_model, rank, world_size, **kw)

    @classmethod
    def from_linears(
        cls, fc1: nn.Linear, fc2: nn.Linear, rank: int, world_size: int
    ) -> ParallelMLP:
        """Rank `rank`'s shard of fc2(GeLU(fc1(x))): fc1 (d_model -> d_hidden), fc2 back."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ParallelMLP.from_linears: not implemented yet; see exercises/tensor_parallel/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_model) -> (..., d_model), identical on every rank."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ParallelMLP.forward: not implemented yet; see exercises/tensor_parallel/README.md"
        )


class ParallelSelfAttention(nn.Module):
    """Multi-head self-attention with the heads split over the ranks (paper, Fig. 3b).

    n_heads must be a multiple of world_size; rank r computes heads
    shard_slice(n_heads, r, world_size), i.e. features shard_slice(d_model, r, world_size) of the
    query, key and value projections. `qkv_proj` is a ColumnParallelLinear(d_model, 3 * d_model)
    whose local output (..., 3 * d_model // world_size) holds this rank's queries, then keys, then
    values; `out_proj` a RowParallelLinear(d_model, d_model). x (B, T, d_model) -> (B, T, d_model),
    the same on every rank; one all-reduce in the forward pass and one in the backward pass.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        rank: int,
        world_size: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads or n_heads % world_size:
            raise ValueError(
                f"d_model={d_model}, n_heads={n_heads}: need n_heads | d_model and "
                f"world_size={world_size} | n_heads"
            )
        self.d_model, self.n_heads = d_model, n_heads
        self.rank, self.world_size = rank, world_size
        self.local_heads, self.d_head = n_heads // world_size, d_model // n_heads
        kw = dict(bias=bias, dtype=dtype, device=device)
        # Built as one shard of a (3 * d_model)-wide layer, so one f covers q, k and v.
        self.qkv_proj = ColumnParallelLinear(d_model, 3 * d_model, rank, world_size, **kw)
        self.out_proj = RowParallelLinear(d_model, d_model, rank, world_size, **kw)

    @classmethod
    def from_multihead_attention(
        cls, mha: nn.MultiheadAttention, rank: int, world_size: int
    ) -> ParallelSelfAttention:
        """Rank `rank`'s heads of `mha` (in_proj_weight rows are [W_q; W_k; W_v], torch's layout).

        The result, called on x (B, T, d_model), equals mha(x, x, x) with batch_first=True.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "ParallelSelfAttention.from_multihead_attention: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )

    def forward(self, x: Tensor, is_causal: bool = False) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model); is_causal: position i sees 0..i only."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ParallelSelfAttention.forward: not implemented yet; "
            "see exercises/tensor_parallel/README.md"
        )
