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
        # YOUR CODE HERE
        raise NotImplementedError(
            "LoRALinear.__init__: not implemented yet; see exercises/lora/README.md"
        )

    def reset_parameters(self) -> None:
        """A random (kaiming-uniform, as nn.Linear), B zero: the layer starts equal to its base."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "LoRALinear.reset_parameters: not implemented yet; see exercises/lora/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "LoRALinear.forward: not implemented yet; see exercises/lora/README.md"
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold (alpha/r) B A into base.weight, so forward is one plain matmul. Twice = once."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "LoRALinear.merge: not implemented yet; see exercises/lora/README.md"
        )

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take (alpha/r) B A back out of base.weight (undoes merge; does nothing if unmerged)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "LoRALinear.unmerge: not implemented yet; see exercises/lora/README.md"
        )


def matches_target(name: str, target_modules: Iterable[str]) -> bool:
    """Whether the module at dotted path `name` is a target: its own name (the last part, e.g.
    "q_proj" in "blocks.0.attn.q_proj") is one of target_modules. "q_proj_head" is not "q_proj"."""
    # YOUR CODE HERE
    raise NotImplementedError("matches_target: not implemented yet; see exercises/lora/README.md")


def apply_lora(
    model: nn.Module, target_modules: Iterable[str], r: int, alpha: float, dropout: float = 0.0
) -> nn.Module:
    """Replace, in place, every nn.Linear whose name matches_target by a LoRALinear wrapping it.

    Returns the model. Raises ValueError when no module matches. Other parameters are left as
    they are: call mark_only_lora_as_trainable to freeze them.
    """
    # YOUR CODE HERE
    raise NotImplementedError("apply_lora: not implemented yet; see exercises/lora/README.md")


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    """Freeze every parameter (weights, biases, norms) except the LoRA matrices A and B."""
    # YOUR CODE HERE
    raise NotImplementedError(
        "mark_only_lora_as_trainable: not implemented yet; see exercises/lora/README.md"
    )


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA matrices only, under their model.state_dict() keys (for load_state_dict with
    strict=False on a model that holds the same base weights)."""
    # YOUR CODE HERE
    raise NotImplementedError("lora_state_dict: not implemented yet; see exercises/lora/README.md")


def count_trainable_parameters(model: nn.Module) -> int:
    """How many numbers an optimiser would update: r (in + out) per adapted layer after
    mark_only_lora_as_trainable."""
    # YOUR CODE HERE
    raise NotImplementedError(
        "count_trainable_parameters: not implemented yet; see exercises/lora/README.md"
    )
