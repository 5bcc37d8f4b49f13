"""A decoder-only transformer language model: GPT (Radford et al., 2018 and 2019).

A GPT reads a sequence of tokens left to right and, at every position, predicts the next token. It
is a stack of identical blocks (causal self-attention, then a small MLP, each wrapped in a residual
connection with a layer norm in front: GPT-2's pre-norm), between a token embedding and an output
layer that reuses the embedding matrix (weight tying). This model swaps in two later refinements
that every recent open model uses: rotary position embeddings (RoPE) instead of learned positions,
and grouped-query attention (several query heads share one key/value head). Attention, RoPE and
the layer norm come in as `Parts`, so your own versions from other exercises can be plugged in.

Around the model: the loss (`lm_loss`), random training windows (`get_batch`), GPT's learning-rate
schedule (`cosine_lr`), global-norm gradient clipping (`clip_grad_norm_`), and generation with a
KV cache (`generate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GPT",
    "MLP",
    "Attention",
    "Block",
    "GPTConfig",
    "KVCache",
    "LayerNorm",
    "Parts",
    "clip_grad_norm_",
    "cosine_lr",
    "generate",
    "get_batch",
    "greedy",
    "lm_loss",
    "torch_attention",
    "torch_layer_norm",
    "torch_rope",
]

ROPE_BASE = 10000.0


@dataclass(frozen=True)
class GPTConfig:
    """The sizes of a GPT (given): vocab_size=256, block_size=64 (the longest sequence),
    n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, norm_eps=1e-5 by default.

    head_dim = d_model // n_heads must be even; n_kv_heads must divide n_heads (n_kv_heads ==
    n_heads: multi-head attention; n_kv_heads == 1: multi-query attention).
    """

    vocab_size: int = 256
    block_size: int = 64  # the longest sequence the model reads: positions 0 .. block_size - 1
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_model: int = 64
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"GPTConfig: d_model={self.d_model} must split into n_heads={self.n_heads} heads "
                "of an even size (RoPE rotates pairs of features)"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"GPTConfig: n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# ------------------------------------------------------------------ the swappable parts (given)


def torch_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool) -> Tensor:
    """Grouped-query attention with torch's kernel: the default `Parts.attention` (given).

    Shapes: q (B, H, T_q, D), k and v (B, G, T_k, D) with G dividing H -> (B, H, T_q, D). Query head
    h reads key/value head h // (H // G). is_causal: query i (of T_q) sees keys 0 .. i + T_k - T_q,
    the causal mask aligned to the end, so that T_q new queries after T_k - T_q cached positions
    see the whole past and themselves.
    """
    H, G = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
    mask = None
    if is_causal:
        T_q, T_k = q.shape[-2], k.shape[-2]
        mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def torch_rope(x: Tensor, positions: Tensor) -> Tensor:
    """Rotary position embedding: the default `Parts.rope` (given).

    Shapes: x (B, H, T, D) with D even, positions (T,) int64 -> (B, H, T, D), x's dtype. Feature i
    is paired with feature i + D/2 (the GPT-NeoX / LLaMA "rotate half" layout), and the pair is
    rotated by the angle positions[t] * ROPE_BASE ** (-2i / D).
    """
    D = x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)  # angles in at least float32
    inv_freq = ROPE_BASE ** (-torch.arange(0, D, 2, device=x.device, dtype=dtype) / D)
    angles = positions.to(dtype)[:, None] * inv_freq  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., : D // 2].to(dtype), x[..., D // 2 :].to(dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def torch_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Layer norm over the last axis: the default `Parts.norm` (given). x (..., d) -> (..., d)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


@dataclass(frozen=True)
class Parts:
    """The pieces a GPT is built from (given): swap in your own with the same signatures.

    attention(q, k, v, is_causal=...) -> out, as `torch_attention`; rope(x, positions) -> x
    rotated, as `torch_rope`; norm(x, weight, bias, eps) -> x normalised, as `torch_layer_norm`.
    """

    attention: Callable[..., Tensor] = torch_attention
    rope: Callable[[Tensor, Tensor], Tensor] = torch_rope
    norm: Callable[[Tensor, Tensor, Tensor, float], Tensor] = torch_layer_norm


# ------------------------------------------------------------------ the model


class KVCache:
    """The keys and values of every position a model has processed, layer by layer.

    k[i] and v[i] are layer i's (B, G, T_past, D) tensors, keys after RoPE, or None before the
    first forward pass. len(cache) is T_past, the number of positions held (read from layer 0).
    """

    def __init__(self, n_layers: int) -> None:
        self.k: list[Tensor | None] = [None] * n_layers
        self.v: list[Tensor | None] = [None] * n_layers

    def __len__(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[-2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, G, T_new, D) to layer `layer`'s; return all of them, each (B, G,
        T_past + T_new, D)."""
        ### BEGIN SOLUTION
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=-2)
            v = torch.cat([self.v[layer], v], dim=-2)
        self.k[layer], self.v[layer] = k, v
        return k, v
        ### END SOLUTION


class LayerNorm(nn.Module):
    """A layer norm's parameters, weight (d,) = 1 and bias (d,) = 0 at first, applied by the
    `norm` part: forward(x (..., d)) = norm(x, weight, bias, eps) (given)."""

    def __init__(self, d: int, norm: Callable[..., Tensor], eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.norm, self.eps = norm, eps

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Causal self-attention with n_heads query heads and n_kv_heads key/value heads (GQA).

    Linear layers without bias: q_proj (d_model -> n_heads * head_dim), k_proj and v_proj
    (d_model -> n_kv_heads * head_dim), out_proj (d_model -> d_model). Head h owns features
    h * head_dim ... (h + 1) * head_dim - 1 of its projection. `layer` is this block's index, its
    slot in a KVCache.
    """

    def __init__(self, config: GPTConfig, parts: Parts, layer: int) -> None:
        super().__init__()
        self.config, self.parts, self.layer = config, parts, layer
        ### BEGIN SOLUTION
        d, D = config.d_model, config.head_dim
        self.q_proj = nn.Linear(d, config.n_heads * D, bias=False)
        # Fewer key/value heads than query heads: the KV cache shrinks by n_heads / n_kv_heads.
        self.k_proj = nn.Linear(d, config.n_kv_heads * D, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * D, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        ### END SOLUTION

    def forward(self, x: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        """x (B, T, d_model), positions (T,) int64 (the absolute positions of x's tokens) ->
        (B, T, d_model). With a cache, the new keys and values join the cached ones first."""
        ### BEGIN SOLUTION
        B, T, _ = x.shape
        H, G, D = self.config.n_heads, self.config.n_kv_heads, self.config.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        v = self.v_proj(x).view(B, T, G, D).transpose(1, 2)
        # RoPE rotates queries and keys by their absolute positions, so that the score q_i . k_j
        # depends on i - j only. Keys are cached rotated: a cached key never moves again.
        q, k = self.parts.rope(q, positions), self.parts.rope(k, positions)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        y = self.parts.attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * D))
        ### END SOLUTION


class MLP(nn.Module):
    """The position-wise feed-forward layer: fc (d_model -> 4 d_model), GELU (tanh form, as GPT-2),
    proj (4 d_model -> d_model); linear layers without bias."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=False)
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=False)
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model)."""
        ### BEGIN SOLUTION
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))
        ### END SOLUTION


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Submodules: norm1 and norm2 (`LayerNorm` over d_model, with parts.norm and config.norm_eps),
    attn (`Attention`), mlp (`MLP`).
    """

    def __init__(self, config: GPTConfig, parts: Parts, layer: int) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.norm1 = LayerNorm(config.d_model, parts.norm, config.norm_eps)
        self.attn = Attention(config, parts, layer)
        self.norm2 = LayerNorm(config.d_model, parts.norm, config.norm_eps)
        self.mlp = MLP(config)
        ### END SOLUTION

    def forward(self, x: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        """x (B, T, d_model), positions (T,) -> (B, T, d_model)."""
        ### BEGIN SOLUTION
        # Pre-norm (GPT-2): each sub-layer reads a normalised copy and adds its output to a
        # residual stream that nothing rescales, so the gradient reaches every layer intact.
        x = x + self.attn(self.norm1(x), positions, cache)
        return x + self.mlp(self.norm2(x))
        ### END SOLUTION


class GPT(nn.Module):
    """The decoder-only language model.

    Submodules (their names make the state_dict): tok_emb (nn.Embedding(vocab_size, d_model)),
    blocks (nn.ModuleList of n_layers `Block`s, block i built with layer=i), norm_f (the final
    `LayerNorm`), lm_head (nn.Linear(d_model, vocab_size, bias=False)) whose weight *is*
    tok_emb.weight (tied). No position embedding: RoPE places the tokens. Initialisation as GPT-2:
    every weight matrix and the embedding ~ N(0, 0.02²), except the two that write into the
    residual stream (attn.out_proj and mlp.proj), ~ N(0, (0.02 / sqrt(2 n_layers))²); the layer
    norms start at weight 1 and bias 0. parts=None means Parts(): torch's attention, RoPE and layer
    norm.
    """

    def __init__(self, config: GPTConfig, parts: Parts | None = None) -> None:
        super().__init__()
        self.config, self.parts = config, parts or Parts()
        ### BEGIN SOLUTION
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(Block(c, self.parts, i) for i in range(c.n_layers))
        self.norm_f = LayerNorm(c.d_model, self.parts.norm, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        # Weight tying: one matrix reads tokens in and scores them out. Similar tokens get similar
        # vectors for both jobs, and the model saves vocab_size x d_model parameters.
        self.lm_head.weight = self.tok_emb.weight
        # GPT-2 scales the layers that write into the residual stream by 1/sqrt(N), N = 2 n_layers
        # of them, so the stream's variance does not grow with depth at initialisation.
        for name, p in self.named_parameters():  # the tied matrix comes once, as tok_emb.weight
            if p.dim() == 2:
                residual = name.endswith(("attn.out_proj.weight", "mlp.proj.weight"))
                std = 0.02 / math.sqrt(2 * c.n_layers) if residual else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
        ### END SOLUTION

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """idx (B, T) int64 token ids -> logits (B, T, vocab_size): row t scores the token after
        idx[:, :t + 1].

        With a cache holding T_past positions, idx holds the tokens at positions T_past ..
        T_past + T - 1, and the cache is extended by them; without one, idx starts at position 0.
        """
        start = 0 if cache is None else len(cache)
        if start + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"GPT: positions {start} .. {start + idx.shape[1] - 1} do not fit in block_size="
                f"{self.config.block_size}"
            )
        ### BEGIN SOLUTION
        positions = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, positions, cache)
        # GPT-2 adds a last layer norm: the residual stream has grown through every block.
        return self.lm_head(self.norm_f(x))
        ### END SOLUTION


# ------------------------------------------------------------------ training


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The language-modelling loss: the mean over positions of -log softmax(logits)[target].

    Shapes: logits (..., V) float, targets (...) int64 -> a 0-dim tensor of logits' dtype (for a
    GPT, logits (B, T, V) and targets (B, T), the next tokens). Stable for logits of any size.
    """
    ### BEGIN SOLUTION
    # log softmax(z)_y = z_y - log sum_j exp(z_j); subtracting the row maximum m first keeps every
    # exponent <= 0: log sum_j exp(z_j) = m + log sum_j exp(z_j - m).
    m = logits.max(dim=-1, keepdim=True).values.detach()
    log_z = m.squeeze(-1) + (logits - m).exp().sum(dim=-1).log()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (log_z - picked).mean()
    ### END SOLUTION


def get_batch(
    tokens: Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """batch_size random training windows from a long stream of tokens.

    tokens (N,) integer ids, N > block_size. Draw the starts exactly as
    `torch.randint(N - block_size, (batch_size,), generator=generator, device=generator.device)`
    (every start 0 .. N - block_size - 1 has the same chance). Returns (x, y), each (batch_size,
    block_size) with tokens' dtype and device: x[b] = tokens[s_b : s_b + block_size] and y[b] =
    tokens[s_b + 1 : s_b + block_size + 1], the token that follows each of x's.
    """
    if tokens.ndim != 1 or len(tokens) <= block_size:
        raise ValueError(
            f"get_batch: tokens must be (N,) with N > block_size={block_size}; "
            f"got {tuple(tokens.shape)}"
        )
    ### BEGIN SOLUTION
    N = len(tokens)
    starts = torch.randint(
        N - block_size, (batch_size,), generator=generator, device=generator.device
    )
    index = starts.to(tokens.device)[:, None] + torch.arange(block_size, device=tokens.device)
    return tokens[index], tokens[index + 1]
    ### END SOLUTION


def cosine_lr(
    step: int, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0
) -> float:
    """The learning rate at `step` (0, 1, 2, ...): linear warm-up, then a cosine decay.

    step < warmup_steps: max_lr * (step + 1) / (warmup_steps + 1), rising towards max_lr.
    warmup_steps <= step <= max_steps: min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2 with
    p = (step - warmup_steps) / (max_steps - warmup_steps), from max_lr down to min_lr.
    step > max_steps: min_lr. Returns a Python float.
    """
    if not 0 <= warmup_steps <= max_steps:
        raise ValueError(
            f"cosine_lr: need 0 <= warmup_steps <= max_steps; got {warmup_steps}, {max_steps}"
        )
    ### BEGIN SOLUTION
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    ### END SOLUTION


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale all the gradients together, in place, so that their global L2 norm is <= max_norm.

    The global norm is the norm of every gradient flattened into one vector (parameters whose
    .grad is None are skipped). When it exceeds max_norm, every gradient is multiplied by
    max_norm / (norm + 1e-6); otherwise nothing changes. Returns the norm before clipping, a 0-dim
    tensor (as torch.nn.utils.clip_grad_norm_).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    ### BEGIN SOLUTION
    # One norm over everything: clipping keeps the update's direction and shortens only its length.
    norm = torch.stack([g.norm() for g in grads]).norm()
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return norm
    ### END SOLUTION


# ------------------------------------------------------------------ generation


def greedy(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The default sampler (given): the most likely token. logits (B, V) -> (B,) int64."""
    return logits.argmax(dim=-1)


@torch.no_grad()
def generate(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    sample_fn: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Extend idx (B, T0) int64 by max_new_tokens tokens; return (B, T0 + max_new_tokens).

    Each step calls the model once and sample_fn once: sample_fn(logits (B, V), generator) -> (B,)
    ids, where logits are the model's scores for the next token (default: `greedy`). With
    use_cache, the first call is model(idx, cache) on the whole prompt with a fresh
    KVCache(n_layers), and every later call model(new (B, 1), cache) on the newest token only;
    without it, each call is model(whole sequence so far). Both give the same tokens.
    """
    if idx.shape[1] + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"generate: {idx.shape[1]} + {max_new_tokens} tokens do not fit in "
            f"block_size={model.config.block_size}"
        )
    sample_fn = sample_fn or greedy
    ### BEGIN SOLUTION
    cache = KVCache(model.config.n_layers) if use_cache else None
    new = idx
    for _ in range(max_new_tokens):
        # With a cache the model has already seen every token but the newest: feed only that one.
        logits = model(new, cache) if use_cache else model(idx)
        next_id = sample_fn(logits[:, -1, :], generator)
        idx = torch.cat([idx, next_id[:, None].to(idx.dtype)], dim=1)
        new = idx[:, -1:]
    return idx
    ### END SOLUTION
