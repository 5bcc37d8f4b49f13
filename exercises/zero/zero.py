"""ZeRO: the Zero Redundancy Optimizer (Rajbhandari, Rasley, Ruwase and He, 2020).

Data parallelism copies the whole training state onto every device: parameters, gradients and
the optimizer's moments. ZeRO keeps the data-parallel computation but stops the copying. Flatten
every parameter into one vector, pad it to a multiple of the number of ranks, and give each rank
one contiguous shard. Stage 1 keeps only the rank's shard of the optimizer state (the fp32 master
parameters and Adam's two moments) and all-gathers the updated parameters after each step.
Stage 2 also shards the gradients: a reduce-scatter hands each rank the average of its own shard
of the gradient and nothing else. Stage 3 shards the parameters too: they are all-gathered just
before they are used and freed right after.

Collectives go through a small object (`Collectives` over torch.distributed, or any object with
the same four members), so that the same optimizer runs on real processes or on ranks simulated
in one process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "Collectives",
    "ZeroAdamW",
    "adamw_shard_step",
    "partition_flat",
    "zero_memory_bytes",
]


def partition_flat(tensors: list[Tensor], world_size: int) -> list[Tensor]:
    """Flatten, concatenate, zero-pad and split `tensors` into `world_size` equal shards.

    Shapes: tensors of any shapes holding N elements in all (one dtype, one device)
    -> world_size 1-D tensors, each of length ceil(N / world_size). Shard r holds elements
    r * S ... (r + 1) * S - 1 of the flat vector (S the shard length), in the order of
    `tensors`, each flattened row-major; the last S * world_size - N elements are zeros.
    Returns new tensors: the inputs are left untouched, and the shards carry no autograd history.
    """
    if world_size < 1:
        raise ValueError(f"partition_flat: world_size must be at least 1; got {world_size}")
    # YOUR CODE HERE
    raise NotImplementedError("partition_flat: not implemented yet; see exercises/zero/README.md")


def adamw_shard_step(
    shard: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> None:
    """One AdamW step (as torch.optim.AdamW takes it) on one rank's shard, in place.

    Shapes: shard, grad, exp_avg and exp_avg_sq all (S,). step is the number of this step,
    counted from 1. Updates shard, exp_avg and exp_avg_sq in place; returns nothing:
        shard *= 1 - lr * weight_decay
        exp_avg    = beta1 * exp_avg    + (1 - beta1) * grad
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad**2
        shard -= lr * (exp_avg / (1 - beta1**step)) / (sqrt(exp_avg_sq / (1 - beta2**step)) + eps)
    """
    if step < 1:
        raise ValueError(f"adamw_shard_step: step counts from 1; got {step}")
    # YOUR CODE HERE
    raise NotImplementedError("adamw_shard_step: not implemented yet; see exercises/zero/README.md")


def zero_memory_bytes(n_params: float, n_devices: int, stage: int, k: float = 12) -> float:
    """Bytes of model states per device with mixed-precision Adam (the paper's Figure 1).

    Per parameter: 2 bytes of fp16 parameter, 2 of fp16 gradient and k of optimizer state
    (k = 12 for Adam: fp32 parameter, momentum and variance). Stage 0 is plain data parallelism;
    stage 1 shards the optimizer state over n_devices, stage 2 also the gradients, stage 3 also
    the parameters. Example: 7.5e9 parameters on 64 devices: 120e9, 31.4e9, 16.6e9, 1.9e9 bytes.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_memory_bytes: stage is 0, 1, 2 or 3; got {stage}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "zero_memory_bytes: not implemented yet; see exercises/zero/README.md"
    )


class Collectives:
    """The collectives ZeRO needs, over torch.distributed's default process group (given).

    Each returns a new tensor and leaves its input untouched; every rank must call the same
    collectives in the same order, with tensors of the same size.
      rank, world_size       this process's rank and the number of ranks
      all_reduce(t)          the elementwise sum of t over all ranks
      reduce_scatter(flat)   flat (world_size * S,): this rank's S-long chunk of the sum over ranks
      all_gather(shard)      shard (S,): every rank's shard, in rank order: (world_size * S,)
    """

    def __init__(self) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def all_reduce(self, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    def reduce_scatter(self, flat: Tensor) -> Tensor:
        chunks = list(flat.chunk(self.world_size))
        out = torch.empty_like(chunks[0])
        try:
            dist.reduce_scatter(out, chunks)
        except RuntimeError:  # gloo before torch 2.7 has no reduce_scatter: same sum, 2x traffic
            out = self.all_reduce(flat).chunk(self.world_size)[self.rank].clone()
        return out

    def all_gather(self, shard: Tensor) -> Tensor:
        parts = [torch.empty_like(shard) for _ in range(self.world_size)]
        dist.all_gather(parts, shard.contiguous())
        return torch.cat(parts)


class ZeroAdamW:
    """AdamW with ZeRO stage 0 (plain data parallelism), 1, 2 or 3, over `comm`'s ranks.

    Every rank builds it on the same parameters (same shapes, same initial values, one dtype and
    device) and calls the same methods in the same order; each rank's gradients come from its own
    share of the batch, and the step uses their average over ranks. A training step:

        opt.zero_grad()
        with opt.gathered():          # stage 3: the parameters exist only inside this block
            loss_fn(model(x_rank), y_rank).backward()
        opt.step()

    Public state, on each rank (S = ceil(N / world_size), N the number of elements of all params):
      shard                 this rank's fp32-master slice of the padded flat parameters: (S,),
                            or (N,) in stage 0, where nothing is sharded
      exp_avg, exp_avg_sq   Adam's moments for exactly the elements of `shard`, same shape
    Between uses (after step(), outside gathered()): in stages 0-2 every parameter holds its full
    updated value; in stage 3 every parameter is freed (numel() == 0) and only `shard` remains.
    In stages 2 and 3, step() leaves every p.grad None: only the gradient shard was kept.
    `comm` defaults to Collectives() (torch.distributed's default group).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        stage: int = 1,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        comm: object | None = None,
    ) -> None:
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"ZeroAdamW: stage is 0, 1, 2 or 3; got {stage}")
        self.params = list(params)
        if len({(p.dtype, p.device) for p in self.params}) != 1:
            raise ValueError("ZeroAdamW: the parameters must share one dtype and one device")
        self.stage, self.lr, self.betas = stage, lr, betas
        self.eps, self.weight_decay = eps, weight_decay
        self.comm = comm if comm is not None else Collectives()
        self.shapes = [p.shape for p in self.params]  # kept for _load, which restores them
        # YOUR CODE HERE
        raise NotImplementedError(
            "ZeroAdamW.__init__: not implemented yet; see exercises/zero/README.md"
        )

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set it to None)."""
        for p in self.params:
            p.grad = None

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Stage 3: all-gather the full parameters for the block's duration and free them after.

        In stages 0-2 the parameters are always whole, and this does nothing.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "ZeroAdamW.gathered: not implemented yet; see exercises/zero/README.md"
        )

    def step(self) -> None:
        """One AdamW step on the gradients averaged over ranks (each rank's p.grad, full shape)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "ZeroAdamW.step: not implemented yet; see exercises/zero/README.md"
        )

    # Helpers for the parameters' storage (given).

    def _load(self, flat: Tensor) -> None:
        """Make every parameter a full tensor again, filled from flat (N or more elements)."""
        offset = 0
        with torch.no_grad():
            for p, shape in zip(self.params, self.shapes, strict=True):
                n = shape.numel()
                p.data = flat[offset : offset + n].view(shape).clone()
                offset += n

    def _free(self) -> None:
        """Drop every parameter's full value (stage 3 between uses): each holds 0 elements."""
        for p in self.params:
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
