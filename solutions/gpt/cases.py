"""Hidden grading cases for gpt: sizes, dtypes and seeds unlike the public specs'.

Models are built by the learner's GPT(GPTConfig(...)) and given weights drawn here through the
README's state_dict layout, so the logits can be compared with the reference's. The one
statistical case (initialisation) compares standard deviations over at least 65536 weights; its
chance of failing a correct initialisation is below 1e-9.
"""

import torch

from graders.cases import Case

# ---------------------------------------------------------------------------- inputs


def config(V, block, L, H, G, D):
    return dict(vocab_size=V, block_size=block, n_layers=L, n_heads=H, n_kv_heads=G, d_model=H * D)


def weights(cfg, seed, dtype):
    """A state_dict in the README's layout, far from any initialisation, the head tied."""
    g = torch.Generator().manual_seed(seed)
    V, d = cfg["vocab_size"], cfg["d_model"]
    kv = cfg["n_kv_heads"] * (d // cfg["n_heads"])

    def matrix(rows, cols):
        return (torch.randn(rows, cols, generator=g, dtype=torch.float64) / cols**0.5).to(dtype)

    def vector(center):
        return (center + 0.2 * torch.randn(d, generator=g, dtype=torch.float64)).to(dtype)

    w = {"tok_emb.weight": torch.randn(V, d, generator=g, dtype=torch.float64).to(dtype)}
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        w |= {
            p + "norm1.weight": vector(1.0),
            p + "norm1.bias": vector(0.0),
            p + "attn.q_proj.weight": matrix(d, d),
            p + "attn.k_proj.weight": matrix(kv, d),
            p + "attn.v_proj.weight": matrix(kv, d),
            p + "attn.out_proj.weight": matrix(d, d),
            p + "norm2.weight": vector(1.0),
            p + "norm2.bias": vector(0.0),
            p + "mlp.fc.weight": matrix(4 * d, d),
            p + "mlp.proj.weight": matrix(d, 4 * d),
        }
    w |= {"norm_f.weight": vector(1.0), "norm_f.bias": vector(0.0)}
    w["lm_head.weight"] = w["tok_emb.weight"]
    return w


def model_inputs(cfg, seed, dtype, B, T):
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randint(cfg["vocab_size"], (B, T), generator=g)
    return {"config": cfg, "weights": weights(cfg, seed, dtype), "idx": idx}


def mqa_float64(seed):
    return model_inputs(config(V=41, block=32, L=3, H=6, G=1, D=6), seed, torch.float64, 2, 29)


def gqa_float32(seed):
    return model_inputs(config(V=64, block=24, L=2, H=8, G=4, D=4), seed, torch.float32, 3, 24)


def cache_inputs(seed):
    cfg = config(V=30, block=20, L=2, H=4, G=2, D=6)
    return {**model_inputs(cfg, seed, torch.float64, 2, 18), "chunks": [7, 1, 4, 1, 1, 2, 2]}


def parts_inputs(seed):
    return model_inputs(config(V=25, block=16, L=2, H=6, G=3, D=4), seed, torch.float64, 2, 11)


def generate_inputs(seed):
    cfg = config(V=37, block=40, L=2, H=4, G=1, D=8)
    return {**model_inputs(cfg, seed, torch.float64, 3, 6), "max_new_tokens": 20}


def calls_inputs(seed):
    return {**generate_inputs(seed), "max_new_tokens": 6}


# ---------------------------------------------------------------------------- calls (sandboxed)


def logits(m, config, weights, idx):
    import torch

    model = m.GPT(m.GPTConfig(**config))
    model = model.to(device=idx.device, dtype=weights["tok_emb.weight"].dtype)
    model.load_state_dict(weights)
    with torch.no_grad():
        return model(idx)


def cached_logits(m, config, weights, idx, chunks):
    import torch

    model = m.GPT(m.GPTConfig(**config))
    model = model.to(device=idx.device, dtype=weights["tok_emb.weight"].dtype)
    model.load_state_dict(weights)
    cache, pieces, start = m.KVCache(config["n_layers"]), [], 0
    with torch.no_grad():
        for size in chunks:
            pieces.append(model(idx[:, start : start + size], cache))
            start += size
    return {"logits": torch.cat(pieces, dim=1), "cached": len(cache)}


def logits_with_parts(m, config, weights, idx):
    import torch

    def attention(q, k, v, is_causal=False):  # causal attention with a temperature of 2
        r = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        scores = q @ k.transpose(-2, -1) / (2 * q.shape[-1] ** 0.5)
        T_q, T_k = scores.shape[-2:]
        keep = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
        return torch.softmax(scores.masked_fill(~keep, float("-inf")), -1) @ v

    def rope(x, positions):  # a learned-free "rotation": a per-position phase on every feature
        return x * torch.cos(0.3 * positions.to(x.dtype))[:, None] + 0.1 * x.flip(-1)

    def norm(x, weight, bias, eps):  # RMS norm, keeping the bias
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight + bias

    model = m.GPT(m.GPTConfig(**config), m.Parts(attention=attention, rope=rope, norm=norm))
    model = model.to(device=idx.device, dtype=weights["tok_emb.weight"].dtype)
    model.load_state_dict(weights)
    with torch.no_grad():
        return model(idx)


def tying(m, config):
    import torch

    torch.manual_seed(0)
    model = m.GPT(m.GPTConfig(**config))
    state = model.state_dict()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tied": state["lm_head.weight"].data_ptr() == state["tok_emb.weight"].data_ptr(),
    }


def tying_inputs(seed):
    return {"config": config(V=100, block=8, L=3, H=2, G=1, D=8)}


def init_stats(m, config, seed):
    import torch

    torch.manual_seed(seed)
    state = m.GPT(m.GPTConfig(**config)).state_dict()
    residual = ("attn.out_proj.weight", "mlp.proj.weight")

    def std(names):
        return torch.cat([state[k].flatten().double() for k in names]).std().item()

    matrices = [k for k in state if k.endswith(("_proj.weight", "fc.weight"))]
    return {
        "tok_emb": std(["tok_emb.weight"]),
        "q, k, v and fc": std([k for k in matrices if not k.endswith(residual)]),
        "out_proj and mlp.proj": std([k for k in matrices if k.endswith(residual)]),
        "norms at 1 and 0": all(
            bool((v == float(k.endswith("weight"))).all()) for k, v in state.items() if "norm" in k
        ),
    }


def init_inputs(seed):
    return {"config": config(V=512, block=8, L=4, H=4, G=2, D=32), "seed": seed}


def compare_init(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != set(expected):
        return f"init statistics: expected the keys {sorted(expected)}"
    if actual["norms at 1 and 0"] != expected["norms at 1 and 0"]:
        return "at initialisation every layer norm's weight should be 1 and its bias 0"
    # Each std is taken over >= 65536 weights: one standard error is under 0.3%, so 5% is more
    # than 12 standard errors of the difference (a false failure has a chance below 1e-9).
    for key in ("tok_emb", "q, k, v and fc", "out_proj and mlp.proj"):
        if abs(actual[key] / expected[key] - 1) > 0.05:
            return (
                f"GPT({inputs['config']}) at initialisation: the {key} weights have std "
                f"{actual[key]:.5f}; GPT-2's initialisation gives {expected[key]:.5f}"
            )
    return None


def loss_and_grad(m, logits, targets):
    logits = logits.clone().requires_grad_()
    loss = m.lm_loss(logits, targets)
    loss.backward()
    return {"loss": loss.detach(), "grad": logits.grad}


def loss_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": 4 * torch.randn(4, 9, 70, generator=g, dtype=torch.float64),
        "targets": torch.randint(70, (4, 9), generator=g),
    }


def loss_value(m, logits, targets):
    return m.lm_loss(logits, targets)


def huge_logit_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": 3e4 * torch.randn(33, 100, generator=g),
        "targets": torch.randint(100, (33,), generator=g),
    }


def batch(m, tokens, block_size, batch_size, seed):
    import torch

    x, y = m.get_batch(tokens, block_size, batch_size, torch.Generator().manual_seed(seed))
    return {"x": x, "y": y}


def batch_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "tokens": torch.randint(1000, (500,), generator=g),
        "block_size": 32,
        "batch_size": 12,
        "seed": seed,
    }


def schedules(m, runs):
    return [[float(m.cosine_lr(s, *run)) for s in range(run[2] + 4)] for run in runs]


def schedule_inputs(seed):
    # (max_lr, warmup_steps, max_steps, min_lr): one without warm-up, one that is all warm-up.
    return {"runs": [(6e-4, 7, 31, 6e-5), (0.3, 0, 12, 0.03), (1.0, 5, 5, 0.5), (2e-3, 3, 40, 0.0)]}


def clipped(m, grads, none_at, max_norm):
    import torch

    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if i != none_at:
            p.grad = g.clone()
    norm = m.clip_grad_norm_(params, max_norm)
    return {
        "norm": torch.as_tensor(norm).detach(),
        "grads": [p.grad if p.grad is not None else "none" for p in params],
    }


def clip_inputs(scale):
    def inputs(seed):
        g = torch.Generator().manual_seed(seed)
        shapes = [(7, 3), (11,), (), (2, 2, 5), (4,)]
        grads = [scale * torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        return {"grads": grads, "none_at": 3, "max_norm": 2.5}

    return inputs


def generations(m, config, weights, idx, max_new_tokens):
    """Greedy with and without the cache, and top-3 sampling with the cache."""
    import torch

    model = m.GPT(m.GPTConfig(**config))
    model = model.to(device=idx.device, dtype=weights["tok_emb.weight"].dtype)
    model.load_state_dict(weights)

    def top3(logits, generator):
        top = logits.topk(3, dim=-1)
        pick = torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)
        return top.indices.gather(-1, pick).squeeze(-1)

    generator = torch.Generator(device=idx.device).manual_seed(5)
    return {
        "greedy, cache": m.generate(model, idx, max_new_tokens, use_cache=True),
        "greedy, no cache": m.generate(model, idx, max_new_tokens, use_cache=False),
        "top-3, cache": m.generate(model, idx, max_new_tokens, top3, generator, use_cache=True),
    }


def model_calls(m, config, weights, idx, max_new_tokens):
    """The input length of each model call during generation, and whether a cache came with it."""

    model = m.GPT(m.GPTConfig(**config))
    model = model.to(device=idx.device, dtype=weights["tok_emb.weight"].dtype)
    model.load_state_dict(weights)
    calls = {}
    for use_cache in (True, False):
        fed = []

        def hook(module, args, kwargs, fed=fed):
            tokens = args[0] if args else kwargs["idx"]
            cache = args[1] if len(args) > 1 else kwargs.get("cache")
            fed.append([int(tokens.shape[1]), cache is not None])

        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            m.generate(model, idx, max_new_tokens, use_cache=use_cache)
        finally:
            handle.remove()
        calls["cache" if use_cache else "no cache"] = fed
    return calls


CASES = [
    Case(
        "logits of a 3-layer GPT with one key/value head (MQA), float64",
        call=logits,
        inputs=mqa_float64,
        points=3,
        seed=101,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "logits of a GPT with 8 query heads over 4 key/value heads, a full block, float32",
        call=logits,
        inputs=gqa_float32,
        points=2,
        seed=202,
        rtol=1e-4,
        atol=1e-4,
    ),
    Case(
        "logits through a KV cache, fed 7, 1, 4, 1, 1, 2, 2 tokens at a time",
        call=cached_logits,
        inputs=cache_inputs,
        points=2,
        seed=303,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "the model uses the attention, rope and norm it is given in Parts",
        call=logits_with_parts,
        inputs=parts_inputs,
        points=2,
        seed=404,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case("tied weights: lm_head.weight is tok_emb.weight", call=tying, inputs=tying_inputs),
    Case(
        "GPT-2's initialisation (residual projections scaled by 1/sqrt(2 n_layers))",
        call=init_stats,
        inputs=init_inputs,
        compare=compare_init,
        seed=505,
    ),
    Case(
        "lm_loss and its gradient on (4, 9, 70) logits, float64",
        call=loss_and_grad,
        inputs=loss_inputs,
        seed=606,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "lm_loss on (33, 100) logits near 3e4, float32",
        call=loss_value,
        inputs=huge_logit_inputs,
        seed=707,
        rtol=1e-5,
        atol=1e-2,
    ),
    Case("get_batch: 12 windows of 32 from 500 tokens", call=batch, inputs=batch_inputs, seed=808),
    Case(
        "cosine_lr over four schedules (no warm-up, all warm-up, min_lr 0)",
        call=schedules,
        inputs=schedule_inputs,
        rtol=1e-12,
        atol=1e-15,
    ),
    Case(
        "clip_grad_norm_ on five gradients above max_norm (one missing)",
        call=clipped,
        inputs=clip_inputs(1.0),
        seed=909,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "clip_grad_norm_ leaves gradients below max_norm alone",
        call=clipped,
        inputs=clip_inputs(0.05),
        seed=910,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "generate: greedy with and without the cache, top-3 sampling with it",
        call=generations,
        inputs=generate_inputs,
        points=3,
        seed=111,
    ),
    Case(
        "generate calls the model on the prompt, then on one new token at a time",
        call=model_calls,
        inputs=calls_inputs,
        points=1,
        seed=112,
    ),
]
