"""Known mistakes for zero: each replaces one function or method of the reference."""

from contextlib import contextmanager

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("zero")


@mutant(
    "partition_flat",
    "the flat vector is split without padding, so the shards have uneven lengths; pad with zeros "
    "to world_size * ceil(N / world_size) first, so every rank owns a shard of the same length",
)
def partition_flat_without_padding(tensors, world_size):
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    return [shard.clone() for shard in flat.tensor_split(world_size)]


@mutant(
    "adamw_shard_step",
    "exp_avg_sq is not bias-corrected, so the first steps are far too long; divide it by "
    "1 - beta2**step before the square root",
)
def adamw_without_second_bias_correction(
    shard, grad, exp_avg, exp_avg_sq, step, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=1e-2,
):  # fmt: skip
    beta1, beta2 = betas
    with torch.no_grad():
        shard.mul_(1 - lr * weight_decay)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        shard.addcdiv_(exp_avg, exp_avg_sq.sqrt() + eps, value=-lr / (1 - beta1**step))


@mutant(
    "adamw_shard_step",
    "the weight decay is added to the gradient (Adam with L2), so Adam divides it by sqrt(v); "
    "AdamW decays the weights themselves: shard *= 1 - lr * weight_decay",
)
def adamw_decay_in_the_gradient(
    shard, grad, exp_avg, exp_avg_sq, step, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=1e-2,
):  # fmt: skip
    ref.adamw_shard_step(
        shard, grad + weight_decay * shard, exp_avg, exp_avg_sq, step,
        lr=lr, betas=betas, eps=eps, weight_decay=0.0,
    )  # fmt: skip


def _step(self, *, summed=False, wrong_rank=False, all_reduce_in_stage_2=False):
    """The reference's step with one mistake switched on."""
    self.steps += 1
    world, rank = self.comm.world_size, self.comm.rank
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
    divide = 1 if summed else world
    if self.stage == 0:
        grad = self.comm.all_reduce(ref.partition_flat(grads, 1)[0]) / divide
    elif self.stage == 1 or (self.stage == 2 and all_reduce_in_stage_2):
        mine = (rank + 1) % world if wrong_rank else rank
        grad = self.comm.all_reduce(torch.cat(ref.partition_flat(grads, world))).chunk(world)[mine]
        grad = grad / divide
    else:
        grad = self.comm.reduce_scatter(torch.cat(ref.partition_flat(grads, world))) / divide
        self.zero_grad()
    ref.adamw_shard_step(
        self.shard, grad, self.exp_avg, self.exp_avg_sq, self.steps,
        lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
    )  # fmt: skip
    if self.stage == 0:
        self._load(self.shard)
    elif self.stage in (1, 2):
        self._load(self.comm.all_gather(self.shard))


@mutant(
    "ZeroAdamW.step",
    "the gradients are summed over ranks, not averaged, so exp_avg is world_size times too "
    "large; divide the all-reduced (or reduce-scattered) sum by world_size",
)
def gradients_summed_not_averaged(self):
    _step(self, summed=True)


@mutant(
    "ZeroAdamW.step",
    "stage 1 updates its shard with another rank's part of the gradient; rank r takes chunk r "
    "of the padded, all-reduced flat gradient, the same elements as its parameter shard",
)
def gradient_shard_of_the_wrong_rank(self):
    _step(self, wrong_rank=True)


@mutant(
    "ZeroAdamW.step",
    "stage 2 all-reduces the whole gradient and keeps it, which is stage 1's memory; "
    "reduce-scatter the flat gradient so each rank receives only its shard, and drop p.grad",
)
def stage_2_all_reduces_the_gradient(self):
    _step(self, all_reduce_in_stage_2=True)


@mutant(
    "ZeroAdamW.gathered",
    "stage 3 keeps the gathered parameters after use; free them when the block ends, so that "
    "between uses a rank holds only its shard",
)
@contextmanager
def gathered_never_frees(self):
    if self.stage == 3:
        self._load(self.comm.all_gather(self.shard))
    yield


@mutant(
    "zero_memory_bytes",
    "the optimizer state's K bytes are counted on every device; stages 1-3 divide them by N_d "
    "(stage 1: 2Ψ + 2Ψ + KΨ/N_d)",
)
def optimizer_state_on_every_device(n_params, n_devices, stage, k=12):
    psi, nd = n_params, n_devices
    grads = 2 * psi / nd if stage >= 2 else 2 * psi
    params = 2 * psi / nd if stage == 3 else 2 * psi
    return params + grads + k * psi
