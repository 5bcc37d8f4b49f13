"""Specs for gpt: `pytest exercises/gpt` (`--impl=solutions`: the reference).

The model is checked against a functional GPT written below from the README's equations (weights
loaded through the documented state_dict), the loss against F.cross_entropy, clipping against
torch.nn.utils.clip_grad_norm_, and generation against a greedy loop over the functional GPT.
Nothing here is statistical except the initialisation spec, whose chance of a false failure is
stated beside it.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# Each hypothesis spec starts with an explicit @example: it runs first and is not shrunk, so a
# typical mistake fails at once on a small, readable input.

# Float64 models: a few hundred products per logit lose about 1e-14; any real mistake is far larger.
TOL64 = 1e-9

# ---------------------------------------------------------------------------- a functional GPT


def rope_halves(x, positions, base=10000.0):
    """RoPE with feature i paired with feature i + D/2 (the README's convention)."""
    D = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)
    angles = positions.to(torch.float64)[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def gqa_attention(q, k, v, is_causal):
    """softmax(q k^T / sqrt(D) + mask aligned to the end) v; query head h reads kv head h // r."""
    r = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    T_q, T_k = q.shape[-2], k.shape[-2]
    mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask if is_causal else None)


def layer_norm(x, weight, bias, eps):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def functional_gpt(w, cfg, idx, rope=rope_halves, attention=gqa_attention, norm=layer_norm):
    """Logits (B, T, V) of the README's GPT with weights w (a state_dict), from position 0."""
    B, T = idx.shape
    H, G, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["d_model"] // cfg["n_heads"]
    eps = cfg.get("norm_eps", 1e-5)
    positions = torch.arange(T, device=idx.device)
    x = w["tok_emb.weight"][idx]
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        h = norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        q = (h @ w[p + "attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (h @ w[p + "attn.k_proj.weight"].T).view(B, T, G, D).transpose(1, 2)
        v = (h @ w[p + "attn.v_proj.weight"].T).view(B, T, G, D).transpose(1, 2)
        y = attention(rope(q, positions), rope(k, positions), v, is_causal=True)
        x = x + y.transpose(1, 2).reshape(B, T, H * D) @ w[p + "attn.out_proj.weight"].T
        h = norm(x, w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        x = (
            x
            + F.gelu(h @ w[p + "mlp.fc.weight"].T, approximate="tanh") @ w[p + "mlp.proj.weight"].T
        )
    return norm(x, w["norm_f.weight"], w["norm_f.bias"], eps) @ w["tok_emb.weight"].T


def layout(cfg):
    """The documented state_dict: name -> shape."""
    V, d = cfg["vocab_size"], cfg["d_model"]
    kv = cfg["n_kv_heads"] * (d // cfg["n_heads"])
    shapes = {"tok_emb.weight": (V, d)}
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        shapes |= {
            p + "norm1.weight": (d,),
            p + "norm1.bias": (d,),
            p + "attn.q_proj.weight": (d, d),
            p + "attn.k_proj.weight": (kv, d),
            p + "attn.v_proj.weight": (kv, d),
            p + "attn.out_proj.weight": (d, d),
            p + "norm2.weight": (d,),
            p + "norm2.bias": (d,),
            p + "mlp.fc.weight": (4 * d, d),
            p + "mlp.proj.weight": (d, 4 * d),
        }
    return shapes | {"norm_f.weight": (d,), "norm_f.bias": (d,), "lm_head.weight": (V, d)}


def random_weights(cfg, seed, device):
    """Weights far from any initialisation, so that every parameter's role shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape in layout(cfg).items():
        if (
            name.endswith("norm1.weight")
            or name.endswith("norm2.weight")
            or name == "norm_f.weight"
        ):
            t = 1 + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif name.endswith("bias"):
            t = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif name == "lm_head.weight":
            continue
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float64) / (
                1 if name == "tok_emb.weight" else shape[1] ** 0.5
            )
        w[name] = t.to(device)
    w["lm_head.weight"] = w["tok_emb.weight"]  # tied
    return w


def build(impl, cfg, device, seed=0, parts=None):
    """The learner's GPT in float64 on `device`, holding random_weights(cfg, seed)."""
    config = impl.GPTConfig(**cfg)
    model = impl.GPT(config) if parts is None else impl.GPT(config, parts)
    check_layout(model, cfg)
    w = random_weights(cfg, seed, device)
    model = model.to(device=device, dtype=torch.float64)
    model.load_state_dict(w)
    return model, w


def check_layout(model, cfg):
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = layout(cfg)
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    wrong = [
        f"{k} {actual[k]} (expected {expected[k]})"
        for k in expected
        if actual.get(k) not in (None, expected[k])
    ]
    if missing or unexpected or wrong:
        fail(
            f"GPT(GPTConfig({', '.join(f'{k}={v}' for k, v in cfg.items())})).state_dict() does "
            f"not follow the README's layout: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"wrong shapes {wrong[:4]}"
        )


def config(V=17, block=12, L=2, H=4, G=2, D=4):
    return dict(vocab_size=V, block_size=block, n_layers=L, n_heads=H, n_kv_heads=G, d_model=H * D)


configs = st.builds(
    config,
    V=st.integers(3, 20),
    block=st.just(10),
    L=st.integers(1, 2),
    H=st.sampled_from([1, 2, 4]),
    G=st.sampled_from([1, 2, 4]),
    D=st.sampled_from([2, 4]),
).filter(lambda c: c["n_heads"] % c["n_kv_heads"] == 0)


def tokens(cfg, B, T, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(cfg["vocab_size"], (B, T), generator=g).to(device)


def name(cfg):
    return "GPT(" + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ")"


# ---------------------------------------------------------------------------- training pieces


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    V=st.integers(2, 40),
    seed=st.integers(0, 2**16),
)
@example(lead=[2, 3], V=7, seed=0)
def test_lm_loss_matches_cross_entropy(impl, device, dtype, lead, V, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(*lead, V, generator=g, dtype=dtype)).to(device)
    targets = torch.randint(V, tuple(lead), generator=g).to(device)
    mine, torch_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = impl.lm_loss(mine, targets)
    expected = F.cross_entropy(torch_logits.reshape(-1, V), targets.reshape(-1))
    what = f"lm_loss({describe(logits=logits, targets=targets)})"
    rtol = atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_close(loss, expected, what=what, rtol=rtol, atol=atol)
    loss.backward()
    expected.backward()
    assert_close(mine.grad, torch_logits.grad, what=f"the gradient of {what}", rtol=rtol, atol=atol)


def test_lm_loss_large_logits_stay_finite(impl, device):
    g = torch.Generator().manual_seed(7)
    logits = (1e4 * torch.randn(3, 5, 11, generator=g)).to(device)  # exp(1e4) overflows
    targets = torch.randint(11, (3, 5), generator=g).to(device)
    assert_close(
        impl.lm_loss(logits, targets),
        F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)),
        what=f"lm_loss({describe(logits=logits, targets=targets)}) with logits near 1e4",
        rtol=1e-5,
        atol=1e-2,
    )


@given(
    N=st.integers(2, 60),
    block=st.integers(1, 12),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
@example(N=20, block=5, batch=3, seed=0)
def test_get_batch_windows_and_targets(impl, device, N, block, batch, seed):
    block = min(block, N - 1)
    data = 100 + torch.arange(N, device=device)  # token n is 100 + n: a window shows its start
    x, y = impl.get_batch(data, block, batch, torch.Generator().manual_seed(seed))
    what = f"get_batch(tokens ({N},), block_size={block}, batch_size={batch})"
    for t, label in ((x, "x"), (y, "y")):
        if tuple(t.shape) != (batch, block) or t.dtype != data.dtype or t.device != data.device:
            fail(
                f"{what}: {label} is {t.dtype} {tuple(t.shape)} on {t.device}; expected "
                f"{data.dtype} {(batch, block)} on {data.device}"
            )
    starts = x[:, 0] - 100
    if (starts < 0).any() or (starts > N - block - 1).any():
        fail(f"{what}: a window starts at {starts.tolist()}; starts lie in 0 .. {N - block - 1}")
    window = starts[:, None] + torch.arange(block, device=device) + 100
    if not torch.equal(x, window):
        fail(f"{what}: each row of x should be block_size consecutive tokens; got {x.tolist()}")
    if not torch.equal(y, window + 1):
        fail(
            f"{what}: y should be x shifted by one (the next token of each x); x = {x.tolist()}, "
            f"y = {y.tolist()}"
        )


def test_get_batch_draws_as_documented(impl, device):
    data = torch.randint(50, (40,), generator=torch.Generator().manual_seed(1)).to(device)
    block, batch = 8, 64
    x, _ = impl.get_batch(data, block, batch, torch.Generator().manual_seed(2))
    starts = torch.randint(40 - block, (batch,), generator=torch.Generator().manual_seed(2))
    expected = torch.stack([data[s : s + block] for s in starts.tolist()])
    assert_close(
        x,
        expected,
        what=f"get_batch(tokens (40,), block_size={block}, batch_size={batch}): the windows "
        "drawn with torch.randint(N - block_size, (batch_size,), generator=generator)",
    )


def cosine_formula(step, max_lr, warmup, max_steps, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step >= max_steps:
        return min_lr
    p = (step - warmup) / (max_steps - warmup)
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * p)) / 2


@given(
    max_lr=st.floats(1e-4, 1.0),
    warmup=st.integers(0, 20),
    decay=st.integers(0, 50),
    floor=st.floats(0.0, 0.5),
)
@example(max_lr=0.1, warmup=3, decay=10, floor=0.1)
def test_cosine_lr_matches_formula(impl, max_lr, warmup, decay, floor):
    max_steps, min_lr = warmup + decay, floor * max_lr
    for step in range(max_steps + 3):
        actual = impl.cosine_lr(step, max_lr, warmup, max_steps, min_lr)
        expected = cosine_formula(step, max_lr, warmup, max_steps, min_lr)
        if not isinstance(actual, float) or abs(actual - expected) > 1e-12 * max_lr:
            fail(
                f"cosine_lr(step={step}, max_lr={max_lr:g}, warmup_steps={warmup}, "
                f"max_steps={max_steps}, min_lr={min_lr:g}) = {actual!r}; expected the float "
                f"{expected!r}"
            )


def test_cosine_lr_warms_up_then_decays(impl):
    lrs = [impl.cosine_lr(s, 1.0, 4, 20, 0.1) for s in range(23)]
    checks = [
        (lrs[0], 0.2, "step 0 is the first of warm-up: max_lr * 1 / (warmup_steps + 1)"),
        (lrs[4], 1.0, "warm-up ends at step warmup_steps, at max_lr"),
        (lrs[12], 0.55, "half-way through the decay the cosine is at 0, so lr = (max + min) / 2"),
        (lrs[20], 0.1, "the decay ends at max_steps, at min_lr"),
        (lrs[22], 0.1, "after max_steps the learning rate stays at min_lr"),
    ]
    for actual, expected, why in checks:
        if not isinstance(actual, float) or abs(actual - expected) > 1e-12:
            fail(
                f"cosine_lr(step, max_lr=1, warmup_steps=4, max_steps=20, min_lr=0.1) for steps "
                f"0..22 gave {[round(lr, 4) for lr in lrs]}: {why} ({expected})"
            )


def grads_of(shapes, scale, seed, device, none_at=None):
    g = torch.Generator().manual_seed(seed)
    params = [
        torch.zeros(s, dtype=torch.float64, device=device, requires_grad=True) for s in shapes
    ]
    for i, p in enumerate(params):
        grad = scale * torch.randn(p.shape, generator=g, dtype=torch.float64)
        if i != none_at:
            p.grad = grad.to(device)
    return params


@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0]),
    max_norm=st.sampled_from([0.5, 1.0, 5.0]),
    seed=st.integers(0, 2**16),
)
@example(shapes=[[3], [2, 2]], scale=1.0, max_norm=0.5, seed=2)
def test_clip_grad_norm_matches_torch(impl, device, shapes, scale, max_norm, seed):
    none_at = seed % (len(shapes) + 1)  # sometimes one parameter has no gradient
    mine = grads_of(shapes, scale, seed, device, none_at)
    theirs = grads_of(shapes, scale, seed, device, none_at)
    if all(p.grad is None for p in mine):
        return
    norm = impl.clip_grad_norm_(mine, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    what = f"clip_grad_norm_({len(shapes)} parameters of shapes {shapes}, max_norm={max_norm})"
    assert_close(norm, expected, what=what + ": the returned norm", rtol=1e-12, atol=1e-12)
    for i, (a, e) in enumerate(zip(mine, theirs, strict=True)):
        if e.grad is None:
            if a.grad is not None:
                fail(f"{what}: parameter {i} had no gradient and should keep none")
            continue
        assert_close(a.grad, e.grad, what=f"{what}: gradient {i}", rtol=1e-12, atol=1e-12)


def test_clip_grad_norm_is_global(impl, device):
    a = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64, device=device)
    b.grad = torch.tensor([0.0, 4.0], dtype=torch.float64, device=device)
    norm = impl.clip_grad_norm_([a, b], 1.0)
    if abs(float(norm) - 5.0) > 1e-12:
        fail(f"clip_grad_norm_ on gradients [3, 0] and [0, 4]: the global norm is 5; got {norm}")
    expected = (
        torch.tensor([0.6, 0.0], dtype=torch.float64, device=device) * (5 / (5 + 1e-6)),
        torch.tensor([0.0, 0.8], dtype=torch.float64, device=device) * (5 / (5 + 1e-6)),
    )
    for p, e, label in ((a, expected[0], "[3, 0]"), (b, expected[1], "[0, 4]")):
        assert_close(
            p.grad,
            e,
            what=f"clip_grad_norm_([{label} and the other], max_norm=1): gradient {label} "
            "(one scale for all: 1 / 5, not each tensor to norm 1)",
            rtol=1e-12,
            atol=1e-12,
        )


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    "cfg", [config(), config(V=11, L=3, H=4, G=1, D=2), config(V=5, L=1, H=2, G=2, D=6)]
)
def test_state_dict_layout(impl, device, cfg):
    check_layout(impl.GPT(impl.GPTConfig(**cfg)).to(device), cfg)


def test_weights_are_tied(impl, device):
    cfg = config(V=50, H=4, G=2, D=4)
    model = impl.GPT(impl.GPTConfig(**cfg)).to(device)
    check_layout(model, cfg)
    state = model.state_dict()
    if state["lm_head.weight"].data_ptr() != state["tok_emb.weight"].data_ptr():
        fail(
            f"{name(cfg)}: lm_head.weight and tok_emb.weight should be one tensor (weight tying: "
            "lm_head.weight = tok_emb.weight); they are two"
        )
    expected = sum(math.prod(s) for k, s in layout(cfg).items() if k != "lm_head.weight")
    count = sum(p.numel() for p in model.parameters())
    if count != expected:
        fail(f"{name(cfg)} has {count} parameters; the README's layout, tied, has {expected}")


def test_initialisation_follows_gpt2(impl, device):
    cfg = config(V=256, block=16, L=2, H=4, G=2, D=16)
    torch.manual_seed(0)
    model = impl.GPT(impl.GPTConfig(**cfg)).to(device)
    check_layout(model, cfg)
    state = model.state_dict()
    residual = ("attn.out_proj.weight", "mlp.proj.weight")
    groups = {
        "tok_emb.weight": ([state["tok_emb.weight"]], 0.02),
        "q/k/v_proj and mlp.fc weights": (
            [
                v
                for k, v in state.items()
                if k.endswith(("_proj.weight", "fc.weight")) and not k.endswith(residual)
            ],
            0.02,
        ),
        "attn.out_proj and mlp.proj weights": (
            [v for k, v in state.items() if k.endswith(residual)],
            0.02 / math.sqrt(2 * cfg["n_layers"]),
        ),
    }
    # Each group has at least 16384 entries: a sample std is within 0.6% of the true one (one
    # standard error), so the 10% bound below fails a correct initialisation with a chance far
    # below 1e-6 (more than 15 standard errors).
    for group, (tensors, std) in groups.items():
        flat = torch.cat([t.flatten() for t in tensors]).double()
        if abs(flat.std().item() / std - 1) > 0.1 or abs(flat.mean().item()) > 0.1 * std:
            fail(
                f"{name(cfg)} at initialisation: {group} have mean {flat.mean().item():.4g} and "
                f"std {flat.std().item():.4g}; GPT-2 initialises them ~ N(0, {std:.4g}²)"
            )
    for k, v in state.items():
        if "norm" in k and not torch.equal(v, torch.full_like(v, float(k.endswith("weight")))):
            fail(f"{name(cfg)} at initialisation: {k} should be all {int(k.endswith('weight'))}")
    idx = tokens(cfg, 4, 16, 1, device)
    targets = tokens(cfg, 4, 16, 2, device)
    with torch.no_grad():
        logits = model(idx)
    loss = F.cross_entropy(logits.flatten(0, 1).double(), targets.flatten()).item()
    if abs(loss - math.log(cfg["vocab_size"])) > 0.1:
        fail(
            f"{name(cfg)} at initialisation: loss {loss:.4f} on random targets; a fresh model "
            f"should be nearly uniform, near ln {cfg['vocab_size']} = "
            f"{math.log(cfg['vocab_size']):.4f}"
        )


@given(cfg=configs, B=st.integers(1, 2), T=st.integers(1, 10), seed=st.integers(0, 2**16))
@example(cfg=config(V=11, L=2, H=4, G=2, D=4), B=2, T=7, seed=0)
def test_forward_matches_functional_gpt(impl, device, cfg, B, T, seed):
    model, w = build(impl, cfg, device, seed)
    idx = tokens(cfg, B, T, seed, device)
    with torch.no_grad():
        actual = model(idx)
    assert_close(
        actual,
        functional_gpt(w, cfg, idx),
        what=f"{name(cfg)}(idx {(B, T)}) with the spec's weights, float64",
        rtol=TOL64,
        atol=TOL64,
    )


@given(cfg=configs, cut=st.integers(0, 8))
@example(cfg=config(V=11, L=2, H=4, G=2, D=4), cut=3)
def test_forward_is_causal(impl, device, cfg, cut):
    model, _ = build(impl, cfg, device)
    idx = tokens(cfg, 2, 10, 3, device)
    changed = idx.clone()
    changed[:, cut + 1 :] = (changed[:, cut + 1 :] + 1) % cfg["vocab_size"]
    with torch.no_grad():
        before, after = model(idx)[:, : cut + 1], model(changed)[:, : cut + 1]
    assert_close(
        after,
        before,
        what=f"{name(cfg)}: logits at positions 0..{cut} after changing the tokens after {cut} "
        "(a position may read itself and the past, never the future)",
        rtol=0,
        atol=1e-12,
    )


def rms_norm(x, weight, bias, eps):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight + bias


def rope_interleaved(x, positions):
    """Another rotary convention (pairs 2i, 2i + 1), so a model that ignores parts.rope shows."""
    D = x.shape[-1]
    angles = positions.to(x.dtype)[:, None] * 0.5 ** torch.arange(D // 2, device=x.device)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def test_parts_are_used(impl, device):
    cfg = config(V=13, L=2, H=4, G=2, D=4)
    calls = []

    def attention(q, k, v, is_causal=False):
        calls.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), is_causal))
        r = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        scores = q @ k.transpose(-2, -1) / 3.0  # another scale: the model must not bypass the part
        T_q, T_k = scores.shape[-2:]
        if is_causal:
            keep = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.softmax(scores, -1) @ v

    parts = impl.Parts(attention=attention, rope=rope_interleaved, norm=rms_norm)
    model, w = build(impl, cfg, device, seed=4, parts=parts)
    idx = tokens(cfg, 2, 7, 5, device)
    with torch.no_grad():
        actual = model(idx)
    B, T, H, G, D = 2, 7, 4, 2, 4
    want = [((B, H, T, D), (B, G, T, D), (B, G, T, D), True)] * cfg["n_layers"]
    if calls != want:
        fail(
            f"{name(cfg)}(idx {(B, T)}) with Parts(attention=...): the attention part should be "
            f"called once per layer as attention(q, k, v, is_causal=True) with shapes {want[0][:3]}"
            f"; the calls were {calls}"
        )
    expected = functional_gpt(w, cfg, idx, rope_interleaved, attention, rms_norm)
    assert_close(
        actual,
        expected,
        what=f"{name(cfg)}(idx {(B, T)}) built with Parts(attention, rope, norm) of the spec's own "
        "(every norm, rotation and attention must go through the parts)",
        rtol=TOL64,
        atol=TOL64,
    )


@given(
    cfg=configs,
    chunks=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
@example(cfg=config(V=11, L=2, H=4, G=2, D=4), chunks=[4, 1, 2, 1], seed=0)
def test_kv_cache_matches_full_forward(impl, device, cfg, chunks, seed):
    model, _ = build(impl, cfg, device, seed)
    T = min(sum(chunks), cfg["block_size"])
    idx = tokens(cfg, 2, T, seed, device)
    cache = impl.KVCache(cfg["n_layers"])
    pieces, start = [], 0
    with torch.no_grad():
        full = model(idx)
        for size in chunks:
            if start >= T:
                break
            pieces.append(model(idx[:, start : start + size], cache))
            start += size
    fed = [p.shape[1] for p in pieces]
    assert_close(
        torch.cat(pieces, dim=1),
        full,
        what=f"{name(cfg)}: logits fed through a KVCache in chunks of {fed} tokens, against one "
        f"forward pass over all {T} (chunk positions continue where the cache ends)",
        rtol=TOL64,
        atol=TOL64,
    )
    if len(cache) != T:
        fail(
            f"after feeding {T} tokens through a KVCache, len(cache) is {len(cache)}; expected {T}"
        )


# ---------------------------------------------------------------------------- generation


def multinomial(logits, generator):
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@pytest.mark.parametrize("G", [1, 2])
def test_generate_with_cache_gives_the_same_tokens(impl, device, G):
    cfg = config(V=19, block=24, L=2, H=4, G=G, D=4)
    model, _ = build(impl, cfg, device, seed=6)
    prompt = tokens(cfg, 3, 5, 7, device)
    out = {}
    for use_cache in (True, False):
        gen = torch.Generator(device=device).manual_seed(8)
        out[use_cache] = impl.generate(model, prompt, 19, multinomial, gen, use_cache=use_cache)
    what = f"generate({name(cfg)}, idx (3, 5), max_new_tokens=19, multinomial sampler"
    for use_cache, seq in out.items():
        if tuple(seq.shape) != (3, 24) or not torch.equal(seq[:, :5], prompt):
            fail(
                f"{what}, use_cache={use_cache}) should return (3, 24), the prompt first; got "
                f"{tuple(seq.shape)}"
            )
    if not torch.equal(out[True], out[False]):
        t = int((out[True] != out[False]).any(0).nonzero()[0])
        fail(
            f"{what}, same seed): with the cache the tokens differ from without it, first at "
            f"position {t}: {out[True][:, t].tolist()} vs {out[False][:, t].tolist()}"
        )


def test_generate_greedy_matches_functional_gpt(impl, device):
    cfg = config(V=23, block=20, L=2, H=4, G=2, D=4)
    model, w = build(impl, cfg, device, seed=9)
    prompt = tokens(cfg, 2, 4, 10, device)
    expected = prompt
    for _ in range(16):
        logits = functional_gpt(w, cfg, expected)[:, -1]
        expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    for use_cache in (True, False):
        actual = impl.generate(model, prompt, 16, use_cache=use_cache)
        assert_close(
            actual,
            expected,
            what=f"generate({name(cfg)}, idx (2, 4), max_new_tokens=16, use_cache={use_cache}) "
            "with the default sampler: each new token is the argmax of the last position's logits",
        )


def test_generate_calls_the_model_as_documented(impl, device):
    cfg = config(V=9, block=16, L=2, H=2, G=1, D=4)
    model, _ = build(impl, cfg, device, seed=11)
    prompt = tokens(cfg, 2, 3, 12, device)
    for use_cache in (True, False):
        fed, seen = [], []

        def hook(module, args, kwargs, fed=fed):
            cache = args[1] if len(args) > 1 else kwargs.get("cache")
            fed.append((tuple((args[0] if args else kwargs["idx"]).shape), cache is not None))

        def sampler(logits, generator, seen=seen):
            seen.append((tuple(logits.shape), generator))
            return logits.argmax(-1)

        gen = torch.Generator(device=device)
        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            impl.generate(model, prompt, 5, sampler, gen, use_cache=use_cache)
        finally:
            handle.remove()
        if use_cache:
            expected = [((2, 3), True)] + [((2, 1), True)] * 4
        else:
            expected = [((2, 3 + i), False) for i in range(5)]
        what = f"generate(model, idx (2, 3), max_new_tokens=5, use_cache={use_cache})"
        if fed != expected:
            fail(
                f"{what} should call the model 5 times with (input shape, cache given) "
                f"{expected}; the calls were {fed}"
            )
        if seen != [((2, cfg["vocab_size"]), gen)] * 5:
            fail(
                f"{what} should call sample_fn(logits (2, {cfg['vocab_size']}), generator) once "
                f"per token with the generator it was given; the calls were "
                f"{[(s, 'the generator' if g is gen else g) for s, g in seen]}"
            )


# ---------------------------------------------------------------------------- all together


def test_overfits_one_batch(impl, device):
    cfg = config(V=32, block=16, L=2, H=4, G=2, D=8)
    torch.manual_seed(0)
    model = impl.GPT(impl.GPTConfig(**cfg)).to(device)
    stream = torch.randint(32, (200,), generator=torch.Generator().manual_seed(1)).to(device)
    x, y = impl.get_batch(stream, 16, 4, torch.Generator().manual_seed(2))
    # Adam (Kingma and Ba, 2015) written out: torch.optim's first step imports torch's compiler,
    # seconds of start-up that this spec does not need.
    params = list(model.parameters())
    means, squares = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps, losses = 40, []
    for step in range(steps):
        lr = impl.cosine_lr(step, 2e-2, 10, steps, 2e-3)
        loss = impl.lm_loss(model(x), y)
        for p in params:
            p.grad = None
        loss.backward()
        impl.clip_grad_norm_(params, 1.0)
        with torch.no_grad():
            for p, m, v in zip(params, means, squares, strict=True):
                m.mul_(0.9).add_(p.grad, alpha=0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                m_hat, v_hat = m / (1 - 0.9 ** (step + 1)), v / (1 - 0.999 ** (step + 1))
                p -= lr * m_hat / (v_hat.sqrt() + 1e-8)
        losses.append(loss.item())
    if not losses[-1] < 0.3:
        fail(
            f"training {name(cfg)} on one batch of 4 x 16 random tokens for {steps} steps "
            f"(Adam, lr from cosine_lr, gradients through clip_grad_norm_, loss from lm_loss) "
            f"should memorise it (loss < 0.3); the loss went "
            f"{[round(v, 3) for v in losses[::10]]} ... {losses[-1]:.3f}"
        )
