"""Common mistakes in LoRA, each replacing one function or method of the reference."""

import math

import torch
from torch import nn

from graders.impl import reference
from graders.mutants import mutant

ref = reference("lora")


def _init(self, base, r, alpha, dropout, scaling, freeze=True):
    """The reference's __init__ with the scale and the freezing as arguments."""
    nn.Module.__init__(self)
    self.base, self.r, self.alpha, self.merged = base, r, alpha, False
    w = base.weight
    self.scaling = scaling
    self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
    self.lora_B = nn.Parameter(torch.empty(base.out_features, r, dtype=w.dtype, device=w.device))
    self.dropout = nn.Dropout(dropout)
    if freeze:
        base.requires_grad_(False)
    self.reset_parameters()


@mutant(
    "LoRALinear.reset_parameters",
    "B starts random, not zero: the layer does not start equal to its pretrained base",
)
def b_random_init(self):
    nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
    nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))


@mutant(
    "LoRALinear.reset_parameters",
    "A starts at zero as well as B: both gradients are zero and the adapter never learns",
)
def a_zero_init(self):
    nn.init.zeros_(self.lora_A)
    nn.init.zeros_(self.lora_B)


@mutant("LoRALinear.__init__", "the update is scaled by alpha instead of alpha / r")
def scale_alpha(self, base, r, alpha, dropout=0.0):
    _init(self, base, r, alpha, dropout, scaling=alpha)


@mutant("LoRALinear.merge", "merge() adds B A without the scale alpha / r")
def merge_without_scale(self):
    with torch.no_grad():
        if not self.merged:
            self.base.weight += self.lora_B @ self.lora_A
            self.merged = True


@mutant(
    "LoRALinear.forward",
    "after merge() the forward still adds the update: B A is counted twice",
)
def merged_forward_adds_twice(self, x):
    return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)


@mutant(
    "LoRALinear.unmerge",
    "unmerge() only clears the flag: B A stays inside the base weight",
)
def unmerge_does_not_restore(self):
    self.merged = False


@mutant("LoRALinear.__init__", "LoRALinear does not freeze its base layer: W0 trains too")
def base_not_frozen(self, base, r, alpha, dropout=0.0):
    _init(self, base, r, alpha, dropout, scaling=alpha / r, freeze=False)


@mutant(
    "mark_only_lora_as_trainable",
    "mark_only_lora_as_trainable leaves the biases trainable",
)
def biases_left_trainable(model):
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "bias"))


@mutant(
    "lora_state_dict",
    "lora_state_dict returns the whole state dict, base weights included",
)
def state_dict_saves_everything(model):
    return dict(model.state_dict())


@mutant(
    "LoRALinear.forward",
    "dropout is applied to the adapter's output instead of its input",
)
def dropout_on_output(self, x):
    if self.merged:
        return self.base(x)
    return self.base(x) + self.dropout(self.scaling * (x @ self.lora_A.T @ self.lora_B.T))


@mutant(
    "LoRALinear.forward",
    "dropout is applied to x before both paths: the frozen base must see the input unchanged",
)
def dropout_on_both_paths(self, x):
    if self.merged:
        return self.base(x)
    x = self.dropout(x)
    return self.base(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)


@mutant(
    "matches_target",
    "target names are matched as substrings: 'proj' also wraps 'proj_out'",
)
def targets_matched_by_substring(name, target_modules):
    return any(t in name for t in target_modules)
