"""Common mistakes in GRPO, each replacing one function of the reference."""

import re

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("grpo")


# -- verifiable_reward -----------------------------------------------------------------------


@mutant(
    "verifiable_reward",
    "the answer block is searched for inside the completion instead of matching all of it: "
    "text around it, or a second answer, still earns the reward",
)
def search_not_fullmatch(completion, answer):
    match = re.search(r"<answer>\s*(-?\d+)\s*</answer>", completion)
    if match is None:
        return 0.0
    return ref.CORRECT_REWARD if int(match.group(1)) == answer else ref.FORMAT_REWARD


@mutant(
    "verifiable_reward",
    "a well-formed but wrong answer earns 0: the format reward (0.1) is missing",
)
def no_format_reward(completion, answer):
    return 1.0 if ref.verifiable_reward(completion, answer) == 1.0 else 0.0


@mutant(
    "verifiable_reward",
    "the numbers are compared as strings: '007' or ' 7' is not the integer 7",
)
def compared_as_strings(completion, answer):
    match = re.fullmatch(r"\s*<answer>(\s*-?\d+\s*)</answer>\s*", completion)
    if match is None:
        return 0.0
    return ref.CORRECT_REWARD if match.group(1) == str(answer) else ref.FORMAT_REWARD


# -- group_advantages ------------------------------------------------------------------------


@mutant(
    "group_advantages",
    "the baseline is the mean (and std) of the whole batch, not of each question's own group",
)
def batch_baseline(rewards, group_size, normalize_std=True, eps=1e-6):
    advantages = rewards - rewards.mean()
    return advantages / (rewards.std() + eps) if normalize_std else advantages


@mutant(
    "group_advantages",
    "groups are taken with a stride (view(group_size, -1)) instead of as contiguous runs",
)
def strided_groups(rewards, group_size, normalize_std=True, eps=1e-6):
    groups = rewards.view(group_size, -1)
    advantages = groups - groups.mean(dim=0, keepdim=True)
    if normalize_std:
        advantages = advantages / (groups.std(dim=0, keepdim=True) + eps)
    return advantages.reshape(-1)


@mutant(
    "group_advantages",
    "eps is left out: a group whose rewards are all equal gets 0 / 0 = NaN",
)
def no_eps(rewards, group_size, normalize_std=True, eps=1e-6):
    groups = rewards.view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if normalize_std:
        advantages = advantages / groups.std(dim=1, keepdim=True)
    return advantages.view(-1)


@mutant(
    "group_advantages",
    "the population standard deviation (divide by G) is used instead of the unbiased one (G - 1)",
)
def population_std(rewards, group_size, normalize_std=True, eps=1e-6):
    groups = rewards.view(-1, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if normalize_std:
        advantages = advantages / (groups.std(dim=1, correction=0, keepdim=True) + eps)
    return advantages.view(-1)


@mutant(
    "group_advantages",
    "a Python loop over the groups: right, but far slower than one reshaped tensor operation",
    slow=True,
)
def loop_over_groups(rewards, group_size, normalize_std=True, eps=1e-6):
    out = torch.empty_like(rewards)
    for start in range(0, rewards.shape[0], group_size):
        group = rewards[start : start + group_size]
        a = group - group.mean()
        out[start : start + group_size] = a / (group.std() + eps) if normalize_std else a
    return out


# -- grpo_loss -------------------------------------------------------------------------------


def _loss(logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta, **changes):
    """The reference's loss with one piece swapped: the mistakes below differ in one line each."""
    ratio = torch.exp(logp_new - changes.get("logp_base", logp_old))
    a = advantages.unsqueeze(-1)
    pick = changes.get("pick", torch.minimum)
    surrogate = pick(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    log_r = changes.get("log_r", logp_ref - logp_new)
    kl = torch.exp(log_r) - log_r - 1
    per_token = surrogate - beta * kl
    mask = mask.to(per_token.dtype)
    if changes.get("token_mean"):
        return -(per_token * mask).sum() / mask.sum()
    return -((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


@mutant(
    "grpo_loss",
    "the loss is the objective itself, not its negative: minimising it unlearns good answers",
)
def objective_not_negated(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    return -ref.grpo_loss(logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)


@mutant(
    "grpo_loss",
    "max instead of min between the clipped and unclipped terms: the bound is optimistic",
)
def max_not_min(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    return _loss(*args, pick=torch.maximum)


@mutant(
    "grpo_loss",
    "only the clipped term is kept, without the min: a ratio that has moved the wrong way "
    "gets no gradient",
)
def clipped_term_only(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    return _loss(*args, pick=lambda unclipped, clipped: clipped)


@mutant(
    "grpo_loss",
    "the ratio is taken against the reference policy instead of the policy that sampled",
)
def ratio_to_reference(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    return _loss(*args, logp_base=logp_ref)


@mutant(
    "grpo_loss",
    "k3 uses pi_theta / pi_ref instead of pi_ref / pi_theta: it no longer estimates KL(pi||ref)",
)
def k3_ratio_inverted(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    return _loss(*args, log_r=logp_new - logp_ref)


@mutant(
    "grpo_loss",
    "the padding is not masked: tokens after a completion's end count in its mean",
)
def mask_ignored(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, torch.ones_like(mask), clip_eps, beta)
    return _loss(*args)


@mutant(
    "grpo_loss",
    "one mean over all tokens of the batch: long completions weigh more than short ones "
    "(GRPO averages each completion over its own tokens first)",
)
def token_mean(logp_new, logp_old, logp_ref, advantages, mask, clip_eps=0.2, beta=0.04):
    args = (logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    return _loss(*args, token_mean=True)
