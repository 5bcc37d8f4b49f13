"""Common mistakes in QLoRA, each replacing one function or method of the reference."""

import math

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("qlora")


@mutant(
    "nf4_values",
    "the 16 values are spread evenly over [-1, 1] (no normal quantiles, and no exact zero)",
)
def evenly_spaced_values():
    return torch.linspace(-1, 1, 16)


@mutant(
    "quantize_nf4",
    "each weight is rounded down to the NF4 value below it instead of to the nearest one",
)
def rounds_down(w, block_size=64):
    flat = w.detach().reshape(-1).float()
    blocks = F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    x = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    values = ref.nf4_values().to(w.device)
    codes = (torch.bucketize(x, values, right=True) - 1).clamp(0, 15).to(torch.uint8).view(-1, 2)
    return (codes[:, 0] << 4) | codes[:, 1], absmax


@mutant(
    "quantize_nf4",
    "one absmax for the whole tensor instead of one per block: an outlier blurs every block",
)
def absmax_per_tensor(w, block_size=64):
    flat = w.detach().reshape(-1).float()
    blocks = F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax().expand(blocks.shape[0]).clone()
    x = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    values = ref.nf4_values().to(w.device)
    codes = torch.bucketize(x, (values[1:] + values[:-1]) / 2).to(torch.uint8).view(-1, 2)
    return (codes[:, 0] << 4) | codes[:, 1], absmax


@mutant(
    "dequantize_nf4",
    "the nibbles are read in the wrong order: the first code of a byte is its high nibble",
)
def nibbles_swapped(packed, absmax, shape, block_size=64, dtype=torch.float32):
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).view(-1, block_size).long()
    blocks = ref.nf4_values().to(packed.device)[codes] * absmax.float()[:, None]
    return blocks.view(-1)[: math.prod(shape)].view(shape).to(dtype)


@mutant(
    "dequantize_absmax",
    "the mean subtracted by double_quantize is not added back when the constants are restored",
)
def mean_not_added_back(codes, scales, mean, block_size=256):
    return ref.dequantize_absmax(codes, scales, mean * 0, block_size)


@mutant(
    "bits_per_parameter",
    "the float32 second-level constant is shared by dq_block_size blocks, not by one block",
)
def second_level_per_block(double_quant, block_size=64, dq_block_size=256):
    if not double_quant:
        return 4 + 32 / block_size
    return 4 + 8 / block_size + 32 / block_size


@mutant(
    "QLoRALinear.__init__",
    "the base weight is kept as a trainable float parameter: QLoRA freezes it, in 4 bits only",
)
def base_left_trainable(self, base, r, alpha, block_size=64, double_quant=True):
    torch.nn.Module.__init__(self)
    self.in_features, self.out_features = base.in_features, base.out_features
    self.r, self.alpha, self.block_size, self.double_quant = r, alpha, block_size, double_quant
    packed, absmax = ref.quantize_nf4(base.weight, block_size)
    self.register_buffer("packed", packed)
    if double_quant:
        codes, scales, mean = ref.double_quantize(absmax)
        self.register_buffer("absmax_codes", codes)
        self.register_buffer("absmax_scales", scales)
        self.register_buffer("absmax_mean", mean)
    else:
        self.register_buffer("absmax", absmax)
    self.register_buffer("bias", None if base.bias is None else base.bias.detach().clone())
    like = {"dtype": base.weight.dtype, "device": base.weight.device}
    self.lora_A = torch.nn.Parameter(torch.empty(r, self.in_features, **like))
    torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
    self.lora_B = torch.nn.Parameter(torch.zeros(self.out_features, r, **like))
    self.weight = torch.nn.Parameter(base.weight.detach().clone())  # the mistake: kept, trainable


@mutant("QLoRALinear.forward", "the LoRA path is not multiplied by alpha / r")
def no_alpha_over_r(self, x):
    bias = None if self.bias is None else self.bias.to(x.dtype)
    base = F.linear(x, self.dequantized_weight(x.dtype), bias)
    return base + (x @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype)


@mutant(
    "QLoRALinear.forward",
    "the dequantised weight is cached in a plain attribute after the first call: the layer "
    "then holds a full float copy of the base, which QLoRA exists to avoid",
)
def caches_the_dequantized_weight(self, x):
    w = getattr(self, "_weight", None)
    if w is None or w.dtype != x.dtype:
        self._weight = w = self.dequantized_weight(x.dtype)  # the mistake: kept after the call
    bias = None if self.bias is None else self.bias.to(x.dtype)
    lora = (x @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype)
    return F.linear(x, w, bias) + (self.alpha / self.r) * lora


@mutant(
    "quantize_nf4",
    "a Python loop over the blocks (and weights): right answers, far too slowly",
    slow=True,
)
def loop_over_blocks(w, block_size=64):
    flat = w.detach().reshape(-1).float()
    blocks = F.pad(flat, (0, (-flat.numel()) % block_size)).view(-1, block_size)
    values = ref.nf4_values().to(w.device)
    mids = (values[1:] + values[:-1]) / 2
    absmax = torch.empty(blocks.shape[0], device=w.device)
    codes = torch.empty(blocks.shape, dtype=torch.uint8, device=w.device)
    for b in range(blocks.shape[0]):
        absmax[b] = blocks[b].abs().max()
        scale = absmax[b] if absmax[b] > 0 else 1.0
        codes[b] = torch.bucketize(blocks[b] / scale, mids).to(torch.uint8)
    codes = codes.view(-1, 2)
    return (codes[:, 0] << 4) | codes[:, 1], absmax
