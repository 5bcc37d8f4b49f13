"""Common mistakes in moe, each replacing one function or method of the reference."""

import math

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("moe")


# -- noisy_top_k_gating ----------------------------------------------------------------------


def _gating(x, w_gate, w_noise, k, train, generator, *, noise_scale=F.softplus, renorm=True):
    logits = x @ w_gate
    if train:
        eps = torch.randn(logits.shape, generator=generator, dtype=x.dtype, device=x.device)
        logits = logits + eps * noise_scale(x @ w_noise)
    if not renorm:  # softmax over all E, then the top k kept as they are
        probs = torch.softmax(logits, dim=-1)
        top, index = probs.topk(k, dim=-1)
        return torch.zeros_like(probs).scatter(-1, index, top)
    top, index = logits.topk(k, dim=-1)
    return torch.softmax(torch.full_like(logits, float("-inf")).scatter(-1, index, top), dim=-1)


@mutant("noisy_top_k_gating", "noise is added at evaluation too; with train=False H(x) = x W_g")
def noise_at_evaluation(x, w_gate, w_noise, k, train, generator=None):
    return _gating(x, w_gate, w_noise, k, True, generator)


@mutant(
    "noisy_top_k_gating",
    "the noise is scaled by x W_noise itself, not by softplus(x W_noise), which keeps it positive",
)
def noise_without_softplus(x, w_gate, w_noise, k, train, generator=None):
    return _gating(x, w_gate, w_noise, k, train, generator, noise_scale=lambda s: s)


@mutant(
    "noisy_top_k_gating",
    "the softmax runs over all experts before the top k are kept: the k gates do not sum to 1",
)
def softmax_before_top_k(x, w_gate, w_noise, k, train, generator=None):
    return _gating(x, w_gate, w_noise, k, train, generator, renorm=False)


# -- switch_route ----------------------------------------------------------------------------


def _route(
    logits, capacity_factor, *, rounding=math.ceil, by_probability=False, shift=1, unit=False
):
    N, E = logits.shape
    capacity = rounding(capacity_factor * N / E)
    probs = torch.softmax(logits, dim=-1)
    gate, expert_index = probs.max(dim=-1)
    order = torch.arange(N, device=logits.device)
    if by_probability:  # queue each expert's tokens by falling probability, not by position
        order = torch.sort(gate, descending=True, stable=True).indices
    one_hot = F.one_hot(expert_index[order], E)
    ranked = one_hot.cumsum(0).gather(1, expert_index[order][:, None])[:, 0] - shift
    position = torch.empty_like(ranked).scatter(0, order, ranked)
    keep = position < capacity
    gate = torch.ones_like(gate) if unit else gate
    return ref.SwitchRoute(expert_index, position, keep, gate * keep, capacity)


@mutant(
    "switch_route",
    "capacity is rounded down (floor); it is ceil(capacity_factor * tokens / experts)",
)
def capacity_floor(logits, capacity_factor):
    return _route(logits, capacity_factor, rounding=math.floor)


@mutant(
    "switch_route",
    "overflow is dropped by probability (the most confident tokens kept), not in position order",
)
def dropped_by_probability(logits, capacity_factor):
    return _route(logits, capacity_factor, by_probability=True)


@mutant(
    "switch_route",
    "positions count from 1, not 0: each expert keeps one token fewer than its capacity",
)
def positions_from_one(logits, capacity_factor):
    return _route(logits, capacity_factor, shift=0)


@mutant(
    "switch_route",
    "the gate is 1 (renormalised over the single chosen expert), not the router probability",
)
def switch_gate_is_one(logits, capacity_factor):
    return _route(logits, capacity_factor, unit=True)


@mutant(
    "switch_route",
    "positions are counted by a Python loop over tokens; a cumulative sum does it at once",
    slow=True,
)
def switch_loop_over_tokens(logits, capacity_factor):
    N, E = logits.shape
    capacity = math.ceil(capacity_factor * N / E)
    probs = torch.softmax(logits, dim=-1)
    gate, expert_index = probs.max(dim=-1)
    counts = torch.zeros(E, dtype=torch.long, device=logits.device)
    position = torch.empty_like(expert_index)
    for t in range(N):
        e = expert_index[t]
        position[t] = counts[e]
        counts[e] += 1
    keep = position < capacity
    return ref.SwitchRoute(expert_index, position, keep, gate * keep, capacity)


# -- load_balancing_loss ---------------------------------------------------------------------


@mutant("load_balancing_loss", "the factor n_experts is missing: uniform routing should give 1")
def loss_without_n_experts(router_probs, expert_index):
    return ref.load_balancing_loss(router_probs, expert_index) / router_probs.shape[-1]


@mutant(
    "load_balancing_loss",
    "P_i is the fraction of argmax choices too, not the mean router probability: no gradient",
)
def loss_argmax_fraction_twice(router_probs, expert_index):
    E = router_probs.shape[-1]
    f = torch.bincount(expert_index, minlength=E).to(router_probs.dtype) / expert_index.shape[0]
    return E * (f * f).sum() + 0 * router_probs.sum()


# -- MoELayer.forward ------------------------------------------------------------------------


def _forward(self, x, *, renorm="before", residual=True, interleave=False, slots_per_token=2):
    """The reference's forward with one of the mistakes below switched on."""
    flat = x.reshape(-1, self.d_model)
    N, E = flat.shape[0], self.n_experts
    probs = torch.softmax(self.router(flat), dim=-1)
    top_p, top_e = probs.topk(2, dim=-1)
    weights = top_p / top_p.sum(dim=-1, keepdim=True) if renorm == "before" else top_p
    if interleave:  # token 0's two choices, then token 1's, ...: no priority for first choices
        expert, token = top_e.reshape(-1), torch.arange(N).repeat_interleave(2)
        weight = weights.reshape(-1)
    else:
        expert, token = top_e.T.reshape(-1), torch.arange(N).repeat(2)
        weight = weights.T.reshape(-1)
    token = token.to(x.device)
    one_hot = F.one_hot(expert, E)
    position = one_hot.cumsum(0).gather(1, expert[:, None])[:, 0] - 1
    capacity = math.ceil(self.capacity_factor * slots_per_token * N / E)
    keep = position < capacity
    if renorm == "after":  # the kept gates of each token rescaled to sum to 1
        kept_sum = torch.zeros(N, dtype=flat.dtype, device=x.device).index_add(
            0, token, weight * keep
        )
        weight = weight / kept_sum[token].clamp_min(1e-30)
    expert, token, weight, position = expert[keep], token[keep], weight[keep], position[keep]
    slot = expert * capacity + position
    buffer = flat.new_zeros(E * capacity, self.d_model).index_copy(0, slot, flat[token])
    hidden = torch.relu(buffer.view(E, capacity, -1) @ self.w1 + self.b1[:, None])
    out = (hidden @ self.w2 + self.b2[:, None]).reshape(E * capacity, -1)
    y = flat.index_add(0, token, out[slot] * weight[:, None])
    if not residual:  # a token that no expert took comes out as zeros
        served = torch.zeros(N, dtype=torch.bool, device=x.device).index_fill(0, token, True)
        y = y * served[:, None]
    return y.view_as(x), ref.load_balancing_loss(probs, top_e[:, 0])


@mutant(
    "MoELayer.forward",
    "the two gates are the raw softmax probabilities; GShard renormalises them to sum to 1",
)
def top2_not_renormalised(self, x):
    return _forward(self, x, renorm="none")


@mutant(
    "MoELayer.forward",
    "the gates are renormalised after dropping; GShard divides by p1 + p2 before capacity drops",
)
def renormalised_after_dropping(self, x):
    return _forward(self, x, renorm="after")


@mutant(
    "MoELayer.forward",
    "a token dropped by both experts is zeroed; it should pass through on the residual (y = x)",
)
def dropped_tokens_zeroed(self, x):
    return _forward(self, x, residual=False)


@mutant(
    "MoELayer.forward",
    "places are claimed token by token; all first choices should come before any second choice",
)
def second_choices_interleaved(self, x):
    return _forward(self, x, interleave=True)


@mutant(
    "MoELayer.forward",
    "capacity is ceil(factor * N / E); with two choices per token it is ceil(factor * 2N / E)",
)
def capacity_not_doubled(self, x):
    return _forward(self, x, slots_per_token=1)


@mutant(
    "MoELayer.forward",
    "tokens are dispatched and combined by a Python loop; index them all at once instead",
    slow=True,
)
def moe_loop_over_tokens(self, x):
    flat = x.reshape(-1, self.d_model)
    N, E = flat.shape[0], self.n_experts
    probs = torch.softmax(self.router(flat), dim=-1)
    top_p, top_e = probs.topk(2, dim=-1)
    weights = top_p / top_p.sum(dim=-1, keepdim=True)
    capacity = math.ceil(self.capacity_factor * 2 * N / E)
    buffer = flat.new_zeros(E, capacity, self.d_model)
    counts = [0] * E
    placed = []
    for choice in range(2):
        for t in range(N):
            e = int(top_e[t, choice])
            if counts[e] < capacity:
                buffer[e, counts[e]] = flat[t]
                placed.append((t, e, counts[e], weights[t, choice]))
            counts[e] += 1
    out = torch.relu(buffer @ self.w1 + self.b1[:, None]) @ self.w2 + self.b2[:, None]
    y = flat.clone()
    for t, e, p, w in placed:
        y[t] = y[t] + w * out[e, p]
    return y.view_as(x), ref.load_balancing_loss(probs, top_e[:, 0])
