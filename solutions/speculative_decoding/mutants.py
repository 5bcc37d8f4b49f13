"""Common mistakes in speculative decoding, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("speculative_decoding")


def _accept_and_residual(draft_tokens, draft_probs, target_probs, uniforms, ratio):
    """The reference's verify with the acceptance test `uniforms < ratio(p, q)` swapped in."""
    gamma = draft_tokens.shape[0]
    rows = torch.arange(gamma, device=draft_tokens.device)
    p, q = target_probs[rows, draft_tokens], draft_probs[rows, draft_tokens]
    n = int(ratio(uniforms, p, q).long().cumprod(0).sum())
    if n == gamma:
        return n, target_probs[gamma]
    residual = torch.clamp(target_probs[n] - draft_probs[n], min=0.0)
    return n, residual / residual.sum()


@mutant(
    "verify",
    "after a rejection the next token is drawn from p, not from the residual max(0, p - q)",
)
def resample_from_target(draft_tokens, draft_probs, target_probs, uniforms):
    n, _ = ref.verify(draft_tokens, draft_probs, target_probs, uniforms)
    return n, target_probs[n]


@mutant("verify", "the acceptance ratio is upside down: accept with min(1, q/p), not min(1, p/q)")
def accept_with_q_over_p(draft_tokens, draft_probs, target_probs, uniforms):
    return _accept_and_residual(
        draft_tokens, draft_probs, target_probs, uniforms, lambda u, p, q: u < q / p
    )


@mutant("verify", "the test is u <= p/q: at u == p/q, or when p(x) = 0 and u = 0, reject instead")
def accept_with_less_or_equal(draft_tokens, draft_probs, target_probs, uniforms):
    return _accept_and_residual(
        draft_tokens, draft_probs, target_probs, uniforms, lambda u, p, q: u <= p / q
    )


@mutant("verify", "the residual max(0, p - q) is returned without dividing by its sum")
def residual_not_normalised(draft_tokens, draft_probs, target_probs, uniforms):
    n, next_probs = ref.verify(draft_tokens, draft_probs, target_probs, uniforms)
    if n == draft_tokens.shape[0]:
        return n, next_probs
    return n, torch.clamp(target_probs[n] - draft_probs[n], min=0.0)


@mutant(
    "verify", "every accepted token is counted, not only the leading run before the first rejection"
)
def counts_all_acceptances(draft_tokens, draft_probs, target_probs, uniforms):
    gamma = draft_tokens.shape[0]
    rows = torch.arange(gamma, device=draft_tokens.device)
    p, q = target_probs[rows, draft_tokens], draft_probs[rows, draft_tokens]
    accepted = uniforms < torch.clamp(p / q, max=1.0)
    n = int(accepted.sum())
    if n == gamma:
        return n, target_probs[gamma]
    residual = torch.clamp(target_probs[n] - draft_probs[n], min=0.0)
    return n, residual / residual.sum()


def _generate(
    target,
    draft,
    prompt,
    max_new_tokens,
    gamma,
    generator,
    *,
    target_rows=None,
    bonus=True,
    greedy=False,
    per_position=False,
):
    """The reference's loop with one of the mistakes below switched on."""
    tokens = prompt
    while len(tokens) - len(prompt) < max_new_tokens:
        T = len(tokens)
        sequence, q_rows = tokens, []
        for _ in range(gamma):
            q = draft(sequence)[-1]
            x = q.argmax().view(1) if greedy else torch.multinomial(q, 1, generator=generator)
            sequence = torch.cat([sequence, x])
            q_rows.append(q)
        if per_position:
            p_rows = torch.stack([target(sequence[: t + 1])[-1] for t in range(T - 1, T + gamma)])
        elif target_rows is not None:
            p_rows = target_rows(target(sequence), T, gamma)
        else:
            p_rows = target(sequence)[T - 1 :]
        uniforms = torch.rand(gamma, generator=generator, device=prompt.device, dtype=p_rows.dtype)
        n, next_probs = ref.verify(sequence[T:], torch.stack(q_rows), p_rows, uniforms)
        if n == gamma and not bonus:
            tokens = sequence
            continue
        next_token = torch.multinomial(next_probs, 1, generator=generator)
        tokens = torch.cat([sequence[: T + n], next_token])
    return tokens[len(prompt) : len(prompt) + max_new_tokens]


@mutant(
    "speculative_generate",
    "after all gamma drafts are accepted, the free bonus token from p_gamma is not drawn",
)
def no_bonus_token(target, draft, prompt, max_new_tokens, gamma, generator):
    return _generate(target, draft, prompt, max_new_tokens, gamma, generator, bonus=False)


@mutant(
    "speculative_generate",
    "target rows off by one: row t scores the token after position t, so use rows T-1 .. T+gamma-1",
)
def target_rows_off_by_one(target, draft, prompt, max_new_tokens, gamma, generator):
    def shifted(probs, T, gamma):  # rows T .. T + gamma, with the last one repeated at the end
        return torch.cat([probs[T:], probs[-1:]])

    return _generate(target, draft, prompt, max_new_tokens, gamma, generator, target_rows=shifted)


@mutant("speculative_generate", "the draft picks its most likely token instead of sampling from q")
def greedy_draft(target, draft, prompt, max_new_tokens, gamma, generator):
    return _generate(target, draft, prompt, max_new_tokens, gamma, generator, greedy=True)


@mutant(
    "speculative_generate",
    "the target is called once per drafted position, not once per round on all of them",
)
def target_called_per_position(target, draft, prompt, max_new_tokens, gamma, generator):
    return _generate(target, draft, prompt, max_new_tokens, gamma, generator, per_position=True)


@mutant(
    "expected_tokens_per_step", "the exponent is gamma, not gamma + 1: the bonus token is left out"
)
def exponent_gamma(alpha, gamma):
    return float(gamma) if alpha == 1.0 else (1.0 - alpha**gamma) / (1.0 - alpha)
