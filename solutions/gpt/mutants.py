"""Common mistakes in gpt, each replacing one function or method of the reference."""

import math

import torch
from torch import nn

from graders.impl import reference
from graders.mutants import mutant

ref = reference("gpt")


@mutant(
    "Attention.forward",
    "heads are split with a view to (B, H, T, D) and no transpose, mixing positions across heads",
)
def heads_not_transposed(self, x, positions, cache=None):
    B, T, _ = x.shape
    H, G, D = self.config.n_heads, self.config.n_kv_heads, self.config.head_dim
    q = self.q_proj(x).reshape(B, H, T, D)
    k = self.k_proj(x).reshape(B, G, T, D)
    v = self.v_proj(x).reshape(B, G, T, D)
    q, k = self.parts.rope(q, positions), self.parts.rope(k, positions)
    if cache is not None:
        k, v = cache.update(self.layer, k, v)
    y = self.parts.attention(q, k, v, is_causal=True)
    return self.out_proj(y.transpose(1, 2).reshape(B, T, H * D))


@mutant(
    "Block.forward",
    "post-norm (the 2017 Transformer's norm(x + sublayer(x))) instead of GPT-2's pre-norm "
    "x + sublayer(norm(x))",
)
def post_norm(self, x, positions, cache=None):
    x = self.norm1(x + self.attn(x, positions, cache))
    return self.norm2(x + self.mlp(x))


@mutant("GPT.forward", "the final layer norm (norm_f) is not applied before the output layer")
def no_final_norm(self, idx, cache=None):
    start = 0 if cache is None else len(cache)
    positions = torch.arange(start, start + idx.shape[1], device=idx.device)
    x = self.tok_emb(idx)
    for block in self.blocks:
        x = block(x, positions, cache)
    return self.lm_head(x)


@mutant(
    "GPT.forward",
    "with a KV cache the positions restart at 0: new tokens must continue at len(cache)",
)
def positions_restart_with_cache(self, idx, cache=None):
    positions = torch.arange(idx.shape[1], device=idx.device)
    x = self.tok_emb(idx)
    for block in self.blocks:
        x = block(x, positions, cache)
    return self.lm_head(self.norm_f(x))


@mutant(
    "KVCache.update",
    "the cache keeps only the newest keys and values instead of appending them to the past",
)
def cache_overwrites(self, layer, k, v):
    self.k[layer], self.v[layer] = k, v
    return k, v


def _gpt_init(self, config, parts, tied, residual_scale):
    nn.Module.__init__(self)
    self.config, self.parts = config, parts or ref.Parts()
    c = config
    self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
    self.blocks = nn.ModuleList(ref.Block(c, self.parts, i) for i in range(c.n_layers))
    self.norm_f = ref.LayerNorm(c.d_model, self.parts.norm, c.norm_eps)
    self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
    if tied:
        self.lm_head.weight = self.tok_emb.weight
    for name, p in self.named_parameters():
        if p.dim() == 2:
            residual = name.endswith(("attn.out_proj.weight", "mlp.proj.weight"))
            std = 0.02 / math.sqrt(2 * c.n_layers) if residual and residual_scale else 0.02
            nn.init.normal_(p, mean=0.0, std=std)


@mutant(
    "GPT.__init__",
    "the output layer has its own weight: lm_head.weight should be tok_emb.weight (tied)",
)
def untied_head(self, config, parts=None):
    _gpt_init(self, config, parts, tied=False, residual_scale=True)


@mutant(
    "GPT.__init__",
    "the residual projections (attn.out_proj, mlp.proj) are not scaled by 1/sqrt(2 n_layers) "
    "at initialisation",
)
def residual_init_unscaled(self, config, parts=None):
    _gpt_init(self, config, parts, tied=True, residual_scale=False)


@mutant("lm_loss", "the loss is summed over positions instead of averaged")
def loss_summed(logits, targets):
    return ref.lm_loss(logits, targets) * targets.numel()


@mutant(
    "lm_loss",
    "log-sum-exp without subtracting the maximum first: exp overflows for large logits",
)
def loss_without_max_shift(logits, targets):
    log_z = logits.exp().sum(dim=-1).log()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (log_z - picked).mean()


@mutant("get_batch", "the targets y are x itself; they should be x shifted by one token")
def targets_not_shifted(tokens, block_size, batch_size, generator):
    x, _ = ref.get_batch(tokens, block_size, batch_size, generator)
    return x, x.clone()


@mutant(
    "cosine_lr",
    "warm-up starts at 0 (max_lr * step / warmup_steps): step 0 is wasted",
)
def warmup_from_zero(step, max_lr, warmup_steps, max_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return ref.cosine_lr(step, max_lr, warmup_steps, max_steps, min_lr)


@mutant("cosine_lr", "the cosine decays to 0 instead of to min_lr")
def decays_to_zero(step, max_lr, warmup_steps, max_steps, min_lr=0.0):
    return ref.cosine_lr(step, max_lr, warmup_steps, max_steps, 0.0)


@mutant(
    "cosine_lr",
    "the cosine's progress runs over all max_steps instead of the steps after warm-up",
)
def cosine_over_all_steps(step, max_lr, warmup_steps, max_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * step / max_steps))


@mutant(
    "clip_grad_norm_",
    "each gradient is clipped to max_norm on its own; the norm must be global over all of them",
)
def clip_per_tensor(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.mul_(torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0))
    return norm


@mutant(
    "clip_grad_norm_",
    "gradients are always rescaled to max_norm, even when their norm is already below it",
)
def clip_always_rescales(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.mul_(max_norm / (norm + 1e-6))
    return norm


@mutant(
    "generate",
    "the next token is sampled from the first position's logits, not the last one's",
)
@torch.no_grad()
def samples_from_first_position(
    model, idx, max_new_tokens, sample_fn=None, generator=None, use_cache=True
):
    sample_fn = sample_fn or ref.greedy
    cache = ref.KVCache(model.config.n_layers) if use_cache else None
    new = idx
    for _ in range(max_new_tokens):
        logits = model(new, cache) if use_cache else model(idx)
        next_id = sample_fn(logits[:, 0, :], generator)
        idx = torch.cat([idx, next_id[:, None].to(idx.dtype)], dim=1)
        new = idx[:, -1:]
    return idx


@mutant(
    "generate",
    "the KV cache is never used: every step runs the model over the whole sequence again",
)
@torch.no_grad()
def cache_unused(model, idx, max_new_tokens, sample_fn=None, generator=None, use_cache=True):
    return ref.generate(model, idx, max_new_tokens, sample_fn, generator, use_cache=False)
