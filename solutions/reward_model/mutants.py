"""Common mistakes in reward modelling, each replacing one function or method of the reference."""

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("reward_model")


@mutant(
    "sample_preferences",
    "the labels are not random: the higher true reward always wins, so there is no "
    "Bradley-Terry noise",
)
def labels_without_noise(r_a, r_b, generator):
    return r_a > r_b


@mutant("sample_preferences", "the labels are flipped: True must mean a is preferred")
def labels_reversed(r_a, r_b, generator):
    return ~ref.sample_preferences(r_a, r_b, generator)


@mutant("preference_probability", "the difference is the wrong way round: that is P(b preferred)")
def probability_reversed(r_a, r_b):
    return torch.sigmoid(r_b - r_a)


@mutant(
    "preference_probability",
    "rewards used as strengths, r_a / (r_a + r_b): they are log-strengths, so take a sigmoid of "
    "r_a - r_b",
)
def probability_from_ratio(r_a, r_b):
    return r_a / (r_a + r_b)


@mutant(
    "train_reward_model",
    "the model is trained to prefer the rejected items: chosen and rejected are swapped (in the "
    "batch or in the loss)",
)
def train_pairs_swapped(model, chosen, rejected, generator, steps=300, lr=1e-2, batch_size=256):
    return ref.train_reward_model(model, rejected, chosen, generator, steps, lr, batch_size)


@mutant(
    "train_reward_model",
    "the gradients are never zeroed: each step adds to the last ones (optimizer.zero_grad())",
)
def train_without_zero_grad(model, chosen, rejected, generator, steps=300, lr=1e-2, batch_size=256):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(chosen.shape[0], (batch_size,), generator=generator).to(chosen.device)
        loss = ref.bradley_terry_loss(model(chosen[idx]), model(rejected[idx]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@mutant(
    "bradley_terry_loss",
    "log(sigmoid(d)) underflows to log(0) = -inf for large negative margins: use softplus(-d)",
)
def loss_without_softplus(r_chosen, r_rejected):
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


@mutant("bradley_terry_loss", "the loss is summed over pairs, not averaged")
def loss_summed(r_chosen, r_rejected):
    return F.softplus(r_rejected - r_chosen).sum()


@mutant(
    "bradley_terry_loss",
    "the margin is the wrong way round: -log sigmoid(r_rejected - r_chosen) favours the rejected",
)
def loss_reversed(r_chosen, r_rejected):
    return F.softplus(r_chosen - r_rejected).mean()


@mutant(
    "bradley_terry_loss",
    "the minus sign is missing: that is the log-likelihood, which training should maximise",
)
def loss_not_negated(r_chosen, r_rejected):
    return F.logsigmoid(r_chosen - r_rejected).mean()


@mutant(
    "bayes_optimal_accuracy",
    "the absolute value is missing: the best guess is right with chance sigmoid(|r_a - r_b|)",
)
def bayes_without_abs(r_a, r_b):
    return torch.sigmoid(r_a - r_b).mean()


@mutant("RewardModel.forward", "the head's last axis of size 1 is not squeezed: (B, 1), not (B,)")
def reward_not_squeezed(self, x):
    return self.net(x)
