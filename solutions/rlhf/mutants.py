"""Common mistakes in RLHF's reward shaping and KL control, each replacing one piece of the
reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("rlhf")


def _shaped(scores, logp_policy, logp_ref, mask, beta, last=None, sign=-1.0, penalty_mask=True):
    """The reference's rewards with one piece swapped: the mistakes below differ in one line."""
    m = mask.to(logp_policy.dtype)
    rewards = sign * beta * (logp_policy - logp_ref).detach() * (m if penalty_mask else 1.0)
    if last is None:
        last = (m * torch.arange(1, m.shape[1] + 1, device=m.device)).argmax(dim=1)
    rewards[torch.arange(len(last), device=m.device), last] += scores.to(rewards.dtype)
    return rewards


# -- kl_shaped_rewards -----------------------------------------------------------------------


@mutant(
    "kl_shaped_rewards",
    "the penalty has the wrong sign: the policy is paid for drifting away from the reference",
)
def penalty_sign_flipped(scores, logp_policy, logp_ref, mask, beta):
    return _shaped(scores, logp_policy, logp_ref, mask, beta, sign=1.0)


@mutant(
    "kl_shaped_rewards",
    "the score is put on the first token of each completion instead of its last",
)
def score_on_first_token(scores, logp_policy, logp_ref, mask, beta):
    first = torch.zeros(len(scores), dtype=torch.long, device=mask.device)
    return _shaped(scores, logp_policy, logp_ref, mask, beta, last=first)


@mutant(
    "kl_shaped_rewards",
    "the score is put on the last column for every row, on padding when a completion is short",
)
def score_on_last_column(scores, logp_policy, logp_ref, mask, beta):
    last = torch.full((len(scores),), mask.shape[1] - 1, device=mask.device)
    return _shaped(scores, logp_policy, logp_ref, mask, beta, last=last)


@mutant(
    "kl_shaped_rewards",
    "the last token is taken as mask.sum(1) - 1, which is only right when padding comes last",
)
def last_from_length(scores, logp_policy, logp_ref, mask, beta):
    last = mask.long().sum(dim=1) - 1
    return _shaped(scores, logp_policy, logp_ref, mask, beta, last=last)


@mutant(
    "kl_shaped_rewards",
    "the score is added to every token of the completion, not once at its end",
)
def score_on_every_token(scores, logp_policy, logp_ref, mask, beta):
    m = mask.to(logp_policy.dtype)
    return (-beta * (logp_policy - logp_ref).detach() + scores[:, None]) * m


@mutant(
    "kl_shaped_rewards",
    "the padding is penalised too: the penalty is not multiplied by the mask",
)
def padding_penalised(scores, logp_policy, logp_ref, mask, beta):
    return _shaped(scores, logp_policy, logp_ref, mask, beta, penalty_mask=False)


@mutant(
    "kl_shaped_rewards",
    "a Python loop over the completions: right, but far slower than one indexed addition",
    slow=True,
)
def loop_over_completions(scores, logp_policy, logp_ref, mask, beta):
    m = mask.to(logp_policy.dtype)
    rewards = -beta * (logp_policy - logp_ref).detach() * m
    for i in range(rewards.shape[0]):
        last = int(torch.nonzero(mask[i])[-1])
        rewards[i, last] += scores[i]
    return rewards


# -- sequence_kl -----------------------------------------------------------------------------


@mutant(
    "sequence_kl",
    "the log-ratios are averaged over a completion's tokens instead of summed",
)
def kl_token_mean(logp_policy, logp_ref, mask):
    m = mask.to(logp_policy.dtype)
    return ((logp_policy - logp_ref) * m).sum(dim=1) / m.sum(dim=1)


@mutant(
    "sequence_kl",
    "the log-ratio is taken the wrong way round: log pi_ref - log pi",
)
def kl_reversed(logp_policy, logp_ref, mask):
    return ref.sequence_kl(logp_ref, logp_policy, mask)


@mutant("sequence_kl", "the padding's log-ratios are summed too: the mask is ignored")
def kl_unmasked(logp_policy, logp_ref, mask):
    return (logp_policy - logp_ref).sum(dim=1)


# -- AdaptiveKLController --------------------------------------------------------------------


@mutant(
    "AdaptiveKLController.update",
    "the error kl / target - 1 is not clipped to [-0.2, 0.2]: one bad batch swings beta",
)
def error_not_clipped(self, kl, n_steps):
    self.value *= 1 + (kl / self.target - 1) * n_steps / self.horizon
    return self.value


@mutant(
    "AdaptiveKLController.update",
    "beta moves the wrong way: it falls when the KL is above target",
)
def controller_backwards(self, kl, n_steps):
    error = min(max(kl / self.target - 1, -0.2), 0.2)
    self.value *= 1 - error * n_steps / self.horizon
    return self.value


@mutant(
    "AdaptiveKLController.update",
    "beta is changed by adding error * n_steps / horizon instead of multiplying by 1 + that",
)
def additive_update(self, kl, n_steps):
    error = min(max(kl / self.target - 1, -0.2), 0.2)
    self.value += error * n_steps / self.horizon
    return self.value
