"""Masked language modelling (Devlin, Chang, Lee and Toutanova, 2019): BERT's pre-training task.

A bidirectional encoder cannot be trained to predict the next token, because every position
already sees it. BERT hides a random 15% of the tokens instead and trains the encoder to recover
them from the context on both sides. Of the chosen tokens, 80% become [MASK], 10% a random token
and 10% stay as they are, so that the encoder cannot count on [MASK], a token it never meets when
it is fine-tuned, to tell it where the work is.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mask_tokens", "mlm_loss"]

IGNORE_INDEX = -100  # the label of a position with nothing to predict (F.cross_entropy's default)


def mask_tokens(
    ids: Tensor,
    mask_id: int,
    vocab_size: int,
    special_mask: Tensor,
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Choose tokens for the masked-LM task and corrupt them with BERT's 80/10/10 rule.

    ids: int64 (...), any shape, e.g. (B, T); ids are in 0 .. vocab_size - 1. special_mask: bool,
    ids' shape, True at tokens that must never be chosen ([CLS], [SEP], padding). Each other token
    is chosen independently with probability p. A chosen token becomes mask_id with probability
    0.8, a token drawn uniformly from 0 .. vocab_size - 1 with probability 0.1 (it may happen to be
    the original), and stays unchanged with probability 0.1. generator: a torch.Generator on ids'
    device; every random draw uses it. ids is not modified.

    Returns (inputs, labels), both int64 of ids' shape on ids' device: inputs is the corrupted
    sequence the encoder reads; labels holds the original id where a token was chosen and
    IGNORE_INDEX (-100) everywhere else.
    """
    if special_mask.shape != ids.shape or special_mask.dtype != torch.bool:
        raise ValueError(
            f"mask_tokens: special_mask must be a bool tensor of ids' shape {tuple(ids.shape)}; "
            f"got {special_mask.dtype} {tuple(special_mask.shape)}"
        )
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask_tokens: p must lie in [0, 1]; got {p}")
    ### BEGIN SOLUTION
    # 1. Choose: every ordinary token with probability p, special tokens never. The choice is
    # drawn afresh at every call ("dynamic" masking): the same sentence is masked differently at
    # each epoch.
    chosen = (torch.rand(ids.shape, generator=generator, device=ids.device) < p) & ~special_mask
    # The loss looks only at the chosen positions; the label elsewhere says "nothing to predict".
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    # 2. Corrupt the chosen: one more uniform splits them 80 / 10 / 10.
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(chosen & (u < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    # The last 10% keep their token: the encoder must predict every token of its input well,
    # since it cannot tell a kept token that will be graded from one that will not.
    return inputs, labels
    ### END SOLUTION


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The masked-LM loss: mean cross-entropy over the positions whose label is not IGNORE_INDEX.

    logits: float (..., V), the encoder's scores for every position; labels: int64 (...), the same
    leading shape, from mask_tokens. Returns a scalar of logits' dtype: the average over the
    labelled positions of -log softmax(logits)[label], every labelled position of the batch
    weighted alike. With no labelled position at all the loss is 0 (not NaN), so that a batch in
    which nothing was chosen trains nothing instead of breaking the run.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"mlm_loss: logits {tuple(logits.shape)} need one row per label {tuple(labels.shape)}"
        )
    ### BEGIN SOLUTION
    # log_softmax subtracts each row's maximum before exponentiating: no overflow.
    log_probs = torch.log_softmax(logits, dim=-1)
    labelled = labels != IGNORE_INDEX
    # Gather each position's log-probability of its label (a dummy 0 where there is none).
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll = torch.where(labelled, -picked, 0.0)
    return nll.sum() / labelled.sum().clamp(min=1)
    ### END SOLUTION
