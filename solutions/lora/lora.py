"""Low-rank adaptation, LoRA (Hu et al., 2022).

Fine-tuning changes a pretrained weight W0 by some ΔW. LoRA bets that ΔW has low rank, writes it
as B A with B (d_out, r) and A (r, d_in), freezes W0, and trains only A and B: r (d_in + d_out)
numbers per layer instead of d_in d_out. B starts at zero, so training starts from the pretrained
model exactly; after training, B A can be folded into W0, so inference costs nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = [
    "LoRALinear",
    "apply_lora",
    "count_trainable_parameters",
    "lora_state_dict",
    "mark_only_lora_as_trainable",
    "matches_target",
]


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = base(x) + (alpha/r) B A dropout(x).

    Shapes: x (..., in_features) -> (..., out_features). Attributes: `base` (the wrapped
    nn.Linear, frozen), `lora_A` (nn.Parameter (r, in_features)), `lora_B` (nn.Parameter
    (out_features, r)), `scaling` (alpha / r), `merged` (bool); the specs read and write `base`,
    `lora_A` and `lora_B` by these names.
    A is initialised like nn.Linear's weight (kaiming-uniform, a = sqrt(5)), B with zeros; both
    are created with the base weight's dtype and device.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRALinear: the rank r must be at least 1, got {r}")
        self.base, self.r, self.alpha = base, r, alpha
        self.merged = False
        ### BEGIN SOLUTION
        weight = base.weight
        # Dividing by r means that changing the rank needs no new learning rate (section 4.1).
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(
            torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.empty(base.out_features, r, dtype=weight.dtype, device=weight.device)
        )
        self.dropout = nn.Dropout(dropout)
        # The pretrained weights stay fixed: only A and B learn.
        base.requires_grad_(False)
        self.reset_parameters()
        ### END SOLUTION

    def reset_parameters(self) -> None:
        """A random (kaiming-uniform, as nn.Linear), B zero: the layer starts equal to its base."""
        ### BEGIN SOLUTION
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # B = 0 makes B A = 0: fine-tuning starts from the pretrained function exactly.
        nn.init.zeros_(self.lora_B)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        ### BEGIN SOLUTION
        if self.merged:  # B A is already inside base.weight
            return self.base(x)
        # Two thin products, x A^T then B^T: never form the (out, in) matrix B A while training.
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        return self.base(x) + self.scaling * update
        ### END SOLUTION

    @torch.no_grad()
    def merge(self) -> None:
        """Fold (alpha/r) B A into base.weight, so forward is one plain matmul. Twice = once."""
        ### BEGIN SOLUTION
        if not self.merged:
            self.base.weight += self.scaling * (self.lora_B @ self.lora_A)
            self.merged = True
        ### END SOLUTION

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take (alpha/r) B A back out of base.weight (undoes merge; does nothing if unmerged)."""
        ### BEGIN SOLUTION
        if self.merged:
            self.base.weight -= self.scaling * (self.lora_B @ self.lora_A)
            self.merged = False
        ### END SOLUTION


def matches_target(name: str, target_modules: Iterable[str]) -> bool:
    """Whether the module at dotted path `name` is a target: its own name (the last part, e.g.
    "q_proj" in "blocks.0.attn.q_proj") is one of target_modules. "q_proj_head" is not "q_proj"."""
    ### BEGIN SOLUTION
    return name.split(".")[-1] in target_modules
    ### END SOLUTION


def apply_lora(
    model: nn.Module, target_modules: Iterable[str], r: int, alpha: float, dropout: float = 0.0
) -> nn.Module:
    """Replace, in place, every nn.Linear whose name matches_target by a LoRALinear wrapping it.

    Returns the model. Raises ValueError when no module matches. Other parameters are left as
    they are: call mark_only_lora_as_trainable to freeze them.
    """
    ### BEGIN SOLUTION
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    # Collect first, then replace: the module tree must not change while we walk it.
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and matches_target(name, targets)
    ]
    if not found:
        raise ValueError(f"apply_lora: no nn.Linear named one of {sorted(targets)} in the model")
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(module, r, alpha, dropout))
    return model
    ### END SOLUTION


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    """Freeze every parameter (weights, biases, norms) except the LoRA matrices A and B."""
    ### BEGIN SOLUTION
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B"))
    ### END SOLUTION


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA matrices only, under their model.state_dict() keys (for load_state_dict with
    strict=False on a model that holds the same base weights)."""
    ### BEGIN SOLUTION
    return {
        k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
    }
    ### END SOLUTION


def count_trainable_parameters(model: nn.Module) -> int:
    """How many numbers an optimiser would update: r (in + out) per adapted layer after
    mark_only_lora_as_trainable."""
    ### BEGIN SOLUTION
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
    ### END SOLUTION
