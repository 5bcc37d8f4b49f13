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
    ### BEGIN SOLUTION
    # The outermost quantiles of N(0, 1) are infinite, so the grid of probabilities stops at
    # delta = 1 - (1/32 + 1/30) / 2 instead of 1: the average of the tail's probabilities for a
    # 32-level and a 30-level grid, as the paper does.
    delta = 1 - 0.5 * (1 / 32 + 1 / 30)
    # 2^(k-1) = 8 levels above zero, 2^(k-1) - 1 = 7 below: together with zero that is 16 values,
    # and zero is represented exactly (padding and zero weights stay zero).
    positive = torch.special.ndtri(torch.linspace(delta, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(delta, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (values / values.max()).float()
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    flat = w.detach().reshape(-1).float()
    blocks = F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)
    # One scale per block: an outlier only costs precision inside its own 64 weights.
    absmax = blocks.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    x = blocks / scale[:, None]  # in [-1, 1]
    # The nearest of 16 sorted values: count how many midpoints between neighbours lie below x.
    values = nf4_values().to(w.device)
    codes = torch.bucketize(x, (values[1:] + values[:-1]) / 2).to(torch.uint8).view(-1, 2)
    packed = (codes[:, 0] << 4) | codes[:, 1]
    return packed, absmax
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).view(-1, block_size).long()
    values = nf4_values().to(packed.device)
    blocks = values[codes] * absmax.float()[:, None]
    return blocks.view(-1)[: math.prod(shape)].view(shape).to(dtype)
    ### END SOLUTION


def double_quantize(absmax: Tensor, block_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Quantise the quantisation constants: absmax (n,) -> (codes, scales, mean).

    mean: () float32, the mean of absmax (the constants are all positive; centring them on zero
    uses the 8-bit grid's negative half too). The centred constants absmax - mean are cut into
    groups of block_size (the last one may be short); scales: (ceil(n / block_size),) float32, each
    group's largest |absmax - mean|; codes: (n,) int8, round(127 * (absmax - mean) / scale) (an
    all-zero group uses the scale 1).
    """
    ### BEGIN SOLUTION
    absmax = absmax.float()
    n = absmax.numel()
    mean = absmax.mean()
    groups = F.pad(absmax - mean, (0, (-n) % block_size)).view(-1, block_size)
    scales = groups.abs().amax(dim=1)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round(groups / safe[:, None] * 127).to(torch.int8)
    return codes.view(-1)[:n], scales, mean
    ### END SOLUTION


def dequantize_absmax(codes: Tensor, scales: Tensor, mean: Tensor, block_size: int = 256) -> Tensor:
    """Undo double_quantize: codes (n,) int8, scales (n_groups,), mean () -> absmax (n,) float32."""
    ### BEGIN SOLUTION
    n = codes.numel()
    groups = F.pad(codes.float(), (0, (-n) % block_size)).view(-1, block_size)
    centred = groups / 127 * scales.float()[:, None]
    return centred.view(-1)[:n] + mean.float()
    ### END SOLUTION


def bits_per_parameter(double_quant: bool, block_size: int = 64, dq_block_size: int = 256) -> float:
    """Average bits of storage per weight: the 4-bit code plus its share of the constants.

    Without double quantisation each block of block_size weights carries one float32 absmax;
    with it, one 8-bit code per block plus one float32 scale per dq_block_size blocks (the single
    mean of a whole tensor is not counted).
    """
    ### BEGIN SOLUTION
    if not double_quant:
        return 4 + 32 / block_size
    return 4 + 8 / block_size + 32 / (block_size * dq_block_size)
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        packed, absmax = quantize_nf4(base.weight, block_size)
        self.register_buffer("packed", packed)
        if double_quant:
            codes, scales, mean = double_quantize(absmax)
            self.register_buffer("absmax_codes", codes)
            self.register_buffer("absmax_scales", scales)
            self.register_buffer("absmax_mean", mean)
        else:
            self.register_buffer("absmax", absmax)
        bias = None if base.bias is None else base.bias.detach().clone()
        self.register_buffer("bias", bias)
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        # LoRA: the update to W is B A, of rank r. B = 0 at the start, so fine-tuning starts from
        # exactly the (quantised) pretrained model; A is random so that B's gradient is not zero.
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **like))
        ### END SOLUTION

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The base weight as the layer sees it: (out_features, in_features) in `dtype`."""
        ### BEGIN SOLUTION
        if self.double_quant:
            absmax = dequantize_absmax(self.absmax_codes, self.absmax_scales, self.absmax_mean)
        else:
            absmax = self.absmax
        shape = (self.out_features, self.in_features)
        return dequantize_nf4(self.packed, absmax, shape, self.block_size, dtype)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        ### BEGIN SOLUTION
        # The base is stored in 4 bits and only expanded for this product; the gradient still
        # flows through it to x (and so to the adapters of earlier layers), never into it.
        bias = None if self.bias is None else self.bias.to(x.dtype)
        base = F.linear(x, self.dequantized_weight(x.dtype), bias)
        lora = (x @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype)
        return base + (self.alpha / self.r) * lora
        ### END SOLUTION


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
