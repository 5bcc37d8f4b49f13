"""Common mistakes in DPO and IPO, each replacing one function of the reference."""

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("dpo")


@mutant(
    "sequence_logprobs",
    "the log-probabilities are averaged over the response's tokens, not summed",
)
def logprobs_averaged(logits, labels, loss_mask):
    return ref.sequence_logprobs(logits, labels, loss_mask) / loss_mask.sum(-1)


@mutant(
    "sequence_logprobs",
    "the loss mask is ignored: the prompt's (or padding's) tokens are counted too",
)
def mask_ignored(logits, labels, loss_mask):
    everything = torch.ones_like(loss_mask)
    return ref.sequence_logprobs(logits, labels.clamp(min=0), everything)


@mutant(
    "sequence_logprobs",
    "logits and labels are shifted again inside: row t already scores labels[:, t]",
)
def shifted_twice(logits, labels, loss_mask):
    return ref.sequence_logprobs(logits[:, :-1], labels[:, 1:], loss_mask[:, 1:])


@mutant(
    "sequence_logprobs",
    "the raw logits are gathered without log_softmax: they are not log-probabilities",
)
def logits_not_normalised(logits, labels, loss_mask):
    tokens = labels.masked_fill(~loss_mask, 0).unsqueeze(-1)
    return logits.gather(-1, tokens).squeeze(-1).masked_fill(~loss_mask, 0.0).sum(-1)


# The loss mutants take the reference's arguments positionally: pc, pr (policy, chosen and
# rejected), rc, rr (reference), beta.


@mutant(
    "dpo_loss",
    "beta multiplies the loss, beta * -log sigmoid(h), instead of the margin inside the sigmoid",
)
def beta_outside_the_sigmoid(pc, pr, rc, rr, beta=0.1):
    chosen, rejected = pc - rc, pr - rr
    loss = beta * F.softplus(-(chosen - rejected)).mean()
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


@mutant(
    "dpo_loss",
    "the reference is left out: the margin must use log-ratios policy - ref, not policy alone",
)
def no_reference(pc, pr, rc, rr, beta=0.1):
    zero = torch.zeros_like(rc)
    return ref.dpo_loss(pc, pr, zero, zero, beta)


@mutant(
    "dpo_loss",
    "the reference's log-ratio is added, not subtracted: (pc - pr) + (rc - rr)",
)
def reference_sign_flipped(pc, pr, rc, rr, beta=0.1):
    return ref.dpo_loss(pc, pr, -rc, -rr, beta)


@mutant(
    "dpo_loss",
    "chosen and rejected are swapped: the loss pushes the policy towards the rejected response",
)
def chosen_rejected_swapped(pc, pr, rc, rr, beta=0.1):
    loss, rejected_rewards, chosen_rewards = ref.dpo_loss(pr, pc, rr, rc, beta)
    return loss, chosen_rewards, rejected_rewards


@mutant(
    "dpo_loss",
    "log(sigmoid(m)) underflows to log(0) = -inf for large negative margins: use F.logsigmoid",
)
def log_of_sigmoid(pc, pr, rc, rr, beta=0.1):
    chosen, rejected = pc - rc, pr - rr
    loss = -torch.log(torch.sigmoid(beta * (chosen - rejected))).mean()
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


@mutant(
    "dpo_loss",
    "the rewards are the bare log-ratios: DPO's implicit reward is beta * (policy - ref)",
)
def rewards_without_beta(pc, pr, rc, rr, beta=0.1):
    loss, _, _ = ref.dpo_loss(pc, pr, rc, rr, beta)
    return loss, (pc - rc).detach(), (pr - rr).detach()


@mutant("ipo_loss", "the target gap is 1 / beta: IPO regresses h onto 1 / (2 * beta)")
def ipo_target_one_over_beta(pc, pr, rc, rr, beta=0.1):
    _, chosen_rewards, rejected_rewards = ref.ipo_loss(pc, pr, rc, rr, beta)
    h = (pc - rc) - (pr - rr)
    return ((h - 1 / beta) ** 2).mean(), chosen_rewards, rejected_rewards


@mutant(
    "ipo_loss",
    "beta scales the gap as in DPO, (beta * h - 1/2)^2: IPO's loss is (h - 1 / (2 * beta))^2",
)
def ipo_beta_inside(pc, pr, rc, rr, beta=0.1):
    _, chosen_rewards, rejected_rewards = ref.ipo_loss(pc, pr, rc, rr, beta)
    h = (pc - rc) - (pr - rr)
    return ((beta * h - 0.5) ** 2).mean(), chosen_rewards, rejected_rewards


@mutant("ipo_loss", "the IPO loss is summed over pairs, not averaged")
def ipo_summed(pc, pr, rc, rr, beta=0.1):
    loss, chosen_rewards, rejected_rewards = ref.ipo_loss(pc, pr, rc, rr, beta)
    return loss * pc.shape[0], chosen_rewards, rejected_rewards
