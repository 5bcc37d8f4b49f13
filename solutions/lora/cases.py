"""Hidden grading cases for lora: shapes, ranks, alphas and models unlike the public specs'."""

import torch

from graders.cases import Case


def fresh_layer(m, weight, bias, x, r, alpha):
    """A new LoRALinear: does it equal its base, is B zero, is A random?"""
    import torch
    from torch import nn

    torch.manual_seed(0)
    base = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.dtype)
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
    layer = m.LoRALinear(base, r, alpha)
    with torch.no_grad():
        out, want = layer(x), base(x)
    return {
        "equals its base": bool(torch.allclose(out, want, rtol=1e-5, atol=1e-6)),
        "B is zero": bool((layer.lora_B == 0).all()),
        "A is random (not zero)": bool((layer.lora_A != 0).any()),
        "A has shape (r, in)": tuple(layer.lora_A.shape) == (r, weight.shape[1]),
        "B has shape (out, r)": tuple(layer.lora_B.shape) == (weight.shape[0], r),
    }


def forward(m, weight, bias, A, B, x, alpha):
    """base(x) + (alpha / r) x A^T B^T with A and B given."""
    import torch
    from torch import nn

    base = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.dtype)
    layer = m.LoRALinear(base, A.shape[0], alpha)
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
        return layer(x)


def merge_unmerge(m, weight, bias, A, B, x, alpha):
    """Outputs and weights after merge() and after unmerge()."""
    import torch
    from torch import nn

    base = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.dtype)
    layer = m.LoRALinear(base, A.shape[0], alpha)
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
        layer.merge()
        merged_out, merged_weight = layer(x), base.weight.clone()
        layer.unmerge()
        return {
            "output after merge": merged_out,
            "base weight after merge": merged_weight,
            "base weight after unmerge": base.weight.clone(),
            "output after unmerge": layer(x),
        }


def dropout_structure(m, d_in, d_out, p, rows):
    """With A = I and B = ones, dropout on the input gives each row one update for every output."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out, bias=False).double()
    layer = m.LoRALinear(base, d_in, 2.0 * d_in, dropout=p)  # scale 2
    with torch.no_grad():
        layer.lora_A.copy_(torch.eye(d_in, dtype=torch.float64))
        layer.lora_B.fill_(1.0)
        x = torch.ones(rows, d_in, dtype=torch.float64)
        layer.train()
        update = layer(x) - base(x)
        kept = update * (1 - p) / 2  # inputs kept, per row
        layer.eval()
        evaluated = layer(x) - base(x)
    return {
        "one update per row": bool((update.max(-1).values - update.min(-1).values).max() < 1e-9),
        "updates count kept inputs": bool((kept - kept.round()).abs().max() < 1e-9),
        "some inputs dropped": bool((kept < d_in - 0.5).any()),
        "no dropout in eval": bool(torch.allclose(evaluated, torch.full_like(evaluated, 2 * d_in))),
    }


def gpt_like(m, targets, r):
    """apply_lora on a GPT-2-like stack: which layers are wrapped, and does a typo raise?"""
    import torch
    from torch import nn

    class Attn(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    class Mlp(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc, self.proj_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    class Layer(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.attn, self.mlp, self.ln = Attn(d), Mlp(d), nn.LayerNorm(d)

    torch.manual_seed(0)
    model = nn.Sequential(*(Layer(5) for _ in range(3)))
    model.add_module("lm_head", nn.Linear(5, 11, bias=False))
    returned = m.apply_lora(model, targets, r=r, alpha=1.0)
    try:
        m.apply_lora(nn.Sequential(Layer(5)), ["qkv_typo"], r=r, alpha=1.0)
        raised = False
    except ValueError:
        raised = True
    return {
        "returns the model": returned is model,
        "wrapped": sorted(n for n, x in model.named_modules() if isinstance(x, m.LoRALinear)),
        "ValueError when nothing matches": raised,
    }


def trainable(m, targets, r):
    """mark_only_lora_as_trainable, count_trainable_parameters and lora_state_dict on one model."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "encoder": nn.ModuleDict({"key": nn.Linear(7, 9), "value": nn.Linear(7, 9)}),
            "norm": nn.LayerNorm(9),
            "classifier": nn.Linear(9, 3),
        }
    )
    m.apply_lora(model, targets, r=r, alpha=2.0 * r)
    m.mark_only_lora_as_trainable(model)
    state = m.lora_state_dict(model)
    return {
        "count": int(m.count_trainable_parameters(model)),
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "state keys": sorted(state),
        "state numbers": int(sum(v.numel() for v in state.values())),
    }


def layer_trainable(m, d_in, d_out, r):
    """A LoRALinear alone: which of its parameters train."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer = m.LoRALinear(nn.Linear(d_in, d_out), r, 1.0)
    return {
        "trainable": sorted(n for n, p in layer.named_parameters() if p.requires_grad),
        "count": int(m.count_trainable_parameters(layer)),
    }


def fine_tune(m, state, A, x, y, steps):
    """Fine-tune a LoRA tanh MLP with given A for `steps` Adam steps; the loss every 10 steps."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 1)
    ).double()
    model.load_state_dict(state)
    m.apply_lora(model, ["0", "2", "4"], r=2, alpha=4.0)
    for i, name in enumerate(["0", "2", "4"]):
        with torch.no_grad():
            model.get_submodule(name).lora_A.copy_(A[i])
    m.mark_only_lora_as_trainable(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(steps + 1):
        loss = (model(x).squeeze(-1) - y).pow(2).mean()
        if step % 10 == 0:
            losses.append(loss.item())
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    frozen = all(
        torch.equal(model.get_submodule(f"{n}.base").get_parameter(k), v)
        for key, v in state.items()
        for n, k in [key.split(".")]
    )
    return {"losses": torch.tensor(losses, dtype=torch.float64), "base unchanged": frozen}


def _linear(g, d_in, d_out, dtype):
    w = torch.randn(d_out, d_in, generator=g, dtype=dtype) / d_in**0.5
    return w, torch.randn(d_out, generator=g, dtype=dtype)


def fresh_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    weight, bias = _linear(g, 13, 7, torch.float32)
    return {
        "weight": weight,
        "bias": bias,
        "x": torch.randn(2, 5, 13, generator=g),
        "r": 3,
        "alpha": 6.0,
    }


def adapter_inputs(d_in, d_out, r, alpha, dtype, lead):
    def build(seed):
        g = torch.Generator().manual_seed(seed)
        weight, bias = _linear(g, d_in, d_out, dtype)
        return {
            "weight": weight,
            "bias": bias,
            "A": torch.randn(r, d_in, generator=g, dtype=dtype),
            "B": torch.randn(d_out, r, generator=g, dtype=dtype),
            "x": torch.randn(*lead, d_in, generator=g, dtype=dtype),
            "alpha": alpha,
        }

    return build


def fine_tune_inputs(seed):
    # A random tanh MLP is the "pretrained" model; the new task is the same MLP with a rank-1
    # change of its first weight, which a rank-2 adapter can learn.
    g = torch.Generator().manual_seed(seed)
    shapes = {"0": (24, 6), "2": (24, 24), "4": (1, 24)}
    state = {}
    for name, (d_out, d_in) in shapes.items():
        w, b = _linear(g, d_in, d_out, torch.float64)
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b * 0.1
    x = torch.randn(128, 6, generator=g, dtype=torch.float64)
    u = torch.randn(24, 1, generator=g, dtype=torch.float64)
    v = torch.randn(1, 6, generator=g, dtype=torch.float64)
    w1 = state["0.weight"] + 0.5 * u @ v / 6**0.5
    h = torch.tanh(x @ w1.T + state["0.bias"])
    h = torch.tanh(h @ state["2.weight"].T + state["2.bias"])
    y = (h @ state["4.weight"].T + state["4.bias"]).squeeze(-1)
    A = [
        torch.randn(2, d_in, generator=g, dtype=torch.float64) * 0.3 for _, d_in in shapes.values()
    ]
    return {"state": state, "A": A, "x": x, "y": y, "steps": 60}


CASES = [
    Case(
        "a fresh LoRALinear(13 -> 7, r=3) equals its base",
        call=fresh_layer,
        inputs=fresh_inputs,
        points=2,
        seed=11,
    ),
    Case(
        "forward with given A, B: float64, r=5, alpha=3, input (4, 3, 10)",
        call=forward,
        inputs=adapter_inputs(10, 14, 5, 3.0, torch.float64, (4, 3)),
        points=2,
        seed=22,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "forward with given A, B: float32, r=7, alpha=32",
        call=forward,
        inputs=adapter_inputs(20, 9, 7, 32.0, torch.float32, (6,)),
        points=1,
        seed=33,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "merge() then unmerge(): float64, r=3, alpha=12",
        call=merge_unmerge,
        inputs=adapter_inputs(11, 6, 3, 12.0, torch.float64, (2, 5)),
        points=3,
        seed=44,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "dropout 0.3 on the adapter's input",
        call=dropout_structure,
        inputs=lambda seed: {"d_in": 10, "d_out": 5, "p": 0.3, "rows": 80},
        points=2,
        seed=55,
    ),
    Case(
        "apply_lora on a GPT-2-like stack, targets qkv and proj",
        call=gpt_like,
        inputs=lambda seed: {"targets": ["qkv", "proj"], "r": 2},
        points=2,
        seed=66,
    ),
    Case(
        "only A and B train; count and lora_state_dict",
        call=trainable,
        inputs=lambda seed: {"targets": ["key", "value"], "r": 3},
        points=2,
        seed=77,
    ),
    Case(
        "a LoRALinear freezes its base",
        call=layer_trainable,
        inputs=lambda seed: {"d_in": 9, "d_out": 4, "r": 2},
        points=1,
        seed=88,
    ),
    Case(
        "60 Adam steps of LoRA (r=2) on a rank-1 task shift, A given",
        call=fine_tune,
        inputs=fine_tune_inputs,
        points=3,
        seed=99,
        rtol=1e-6,
        atol=1e-9,
    ),
]
