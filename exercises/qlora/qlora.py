"""QLoRA: a frozen 4-bit NormalFloat base under a trainable LoRA adapter (Dettmers et al., 2023).

Pretrained weights are roughly normal, so a 4-bit code whose 16 values sit at equal-area quantiles
of N(0, 1) spends its levels where the weights are. Each block of 64 weights is scaled by its own
absolute maximum into [-1, 1] and every weight is replaced by the nearest of the 16 values: two
codes fit in a byte. Double quantisation stores the per-block scales themselves in 8 bits. Only the
small LoRA matrices are trained; the base is dequantised on the fly in each forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "QLoRALinear",
    "bits_per_parameter",
    "dequantize_absmax",
    "dequantize_nf4",
    "double_quantize",
    "nf4_values",
    "quantize_nf4",
    "swap_in_qlora",
]


def nf4_values() -> Tensor:
    """The 16 values of NormalFloat4, sorted ascending: (16,) float32 on the CPU.

    Built as the paper builds them: 8 positive and 7 negative equal-area quantiles of N(0, 1),
    plus an exact zero (index 7), divided by the largest so that they span [-1, 1].
    """
    # YOUR CODE HERE
    raise NotImplementedError("nf4_values: not implemented yet; see exercises/qlora/README.md")


def quantize_nf4(w: Tensor, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """Quantise w blockwise to NF4: (packed, absmax).

    w (any shape) is flattened row-major, padded with zeros to a multiple of block_size and cut
    into n_blocks = ceil(w.numel() / block_size) blocks; computations run in float32.
    absmax: (n_blocks,) float32, each block's largest |w|. Each weight becomes the index (0..15) of
    the NF4 value nearest to w / absmax (an all-zero block uses the scale 1).
    packed: (n_blocks * block_size // 2,) uint8, two codes per byte: the first code (even
    position) in the high nibble, the second in the low nibble: byte = code[2i] << 4 | code[2i+1].
    dequantize_nf4 needs w.shape back, since the padding hides it.
    """
    if block_size <= 0 or block_size % 2:
        raise ValueError(f"block_size must be a positive even number, got {block_size}")
    # YOUR CODE HERE
    raise NotImplementedError("quantize_nf4: not implemented yet; see exercises/qlora/README.md")


def dequantize_nf4(
    packed: Tensor,
    absmax: Tensor,
    shape: tuple[int, ...] | torch.Size,
    block_size: int = 64,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Undo quantize_nf4: packed (n_blocks * block_size // 2,) uint8, absmax (n_blocks,) -> shape.

    Each code becomes nf4_values()[code] * absmax of its block; the padding is dropped and the
    result reshaped to `shape` and cast to `dtype`.
    """
    # YOUR CODE HERE
    raise NotImplementedError("dequantize_nf4: not implemented yet; see exercises/qlora/README.md")


def double_quantize(absmax: Tensor, block_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Quantise the quantisation constants: absmax (n,) -> (codes, scales, mean).

    mean: () float32, the mean of absmax (the constants are all positive; centring them on zero
    uses the 8-bit grid's negative half too). The centred constants absmax - mean are cut into
    groups of block_size (the last one may be short); scales: (ceil(n / block_size),) float32, each
    group's largest |absmax - mean|; codes: (n,) int8, round(127 * (absmax - mean) / scale) (an
    all-zero group uses the scale 1).
    """
    # YOUR CODE HERE
    raise NotImplementedError("double_quantize: not implemented yet; see exercises/qlora/README.md")


def dequantize_absmax(codes: Tensor, scales: Tensor, mean: Tensor, block_size: int = 256) -> Tensor:
    """Undo double_quantize: codes (n,) int8, scales (n_groups,), mean () -> absmax (n,) float32."""
    # YOUR CODE HERE
    raise NotImplementedError(
        "dequantize_absmax: not implemented yet; see exercises/qlora/README.md"
    )


def bits_per_parameter(double_quant: bool, block_size: int = 64, dq_block_size: int = 256) -> float:
    """Average bits of storage per weight: the 4-bit code plus its share of the constants.

    Without double quantisation each block of block_size weights carries one float32 absmax;
    with it, one 8-bit code per block plus one float32 scale per dq_block_size blocks (the single
    mean of a whole tensor is not counted).
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "bits_per_parameter: not implemented yet; see exercises/qlora/README.md"
    )


class QLoRALinear(nn.Module):
    """A drop-in replacement for nn.Linear: frozen NF4 base weight plus a trainable LoRA adapter.

    Shapes: x (..., in_features) -> (..., out_features).
    y = x W_nf4^T + bias + (alpha / r) * x A^T B^T, where W_nf4 is base.weight quantised blockwise
    (flattened row-major, blocks of block_size) and dequantised in every forward pass, to x's dtype.
    The base (packed codes, constants, bias) is kept in buffers, never as a parameter, and no
    full-size floating copy of the weight is kept. The only parameters, both trainable and in
    base.weight's dtype and device:
      lora_A: (r, in_features), initialised like nn.Linear's weight (Kaiming uniform);
      lora_B: (out_features, r), initialised to zero, so the layer starts as the quantised base.
    double_quant=True stores the absmax constants with double_quantize (groups of 256).
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        block_size: int = 64,
        double_quant: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.block_size, self.double_quant = r, alpha, block_size, double_quant
        # YOUR CODE HERE
        raise NotImplementedError(
            "QLoRALinear.__init__: not implemented yet; see exercises/qlora/README.md"
        )

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The base weight as the layer sees it: (out_features, in_features) in `dtype`."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "QLoRALinear.dequantized_weight: not implemented yet; see exercises/qlora/README.md"
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "QLoRALinear.forward: not implemented yet; see exercises/qlora/README.md"
        )


def swap_in_qlora(
    model: nn.Module,
    r: int,
    alpha: float,
    block_size: int = 64,
    double_quant: bool = True,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """Replace every nn.Linear of model (in place) by a QLoRALinear and freeze everything else.

    Given, not an exercise. `skip` lists qualified names (as in model.named_modules()) to leave
    alone, for instance a language-model head whose weight is tied to the embedding. Afterwards the
    only trainable parameters are the adapters' lora_A and lora_B. Returns model.
    """
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear) and name not in skip
    ]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, QLoRALinear(linear, r, alpha, block_size, double_quant))
    for name, p in model.named_parameters():
        p.requires_grad_(name.rpartition(".")[2] in ("lora_A", "lora_B"))
    return model
