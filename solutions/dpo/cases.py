"""Hidden grading cases for dpo: shapes, dtypes, betas and policies unlike the public specs'.

Every case is deterministic (inputs from a fixed seed, outputs compared within a tolerance), so
none can fail by chance.
"""

import torch

from graders.cases import Case

TIGHT = {"rtol": 1e-10, "atol": 1e-10}

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def logprobs_and_gradient(m, logits, labels, loss_mask):
    import torch

    logits = logits.clone().requires_grad_()
    out = m.sequence_logprobs(logits, labels, loss_mask)
    (out * torch.arange(1, len(out) + 1, dtype=out.dtype, device=out.device)).sum().backward()
    return {"logprobs": out.detach(), "grad": logits.grad}


def logprobs(m, logits, labels, loss_mask):
    return m.sequence_logprobs(logits, labels, loss_mask)


def loss_and_gradients(m, name, pc, pr, rc, rr, beta):
    pc, pr = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    loss, chosen_rewards, rejected_rewards = getattr(m, name)(pc, pr, rc, rr, beta)
    loss.backward()
    return {
        "loss": loss.detach(),
        "chosen_rewards": chosen_rewards.detach(),
        "rejected_rewards": rejected_rewards.detach(),
        "grad_chosen": pc.grad,
        "grad_rejected": pr.grad,
    }


def categorical_optimum(m, name, ref_logits, rewards, beta):
    """The policy over K outcomes that minimises the learner's loss, in expectation over all
    ordered pairs labelled by Bradley-Terry from `rewards` (each pair through the loss alone)."""
    import torch

    K = len(rewards)
    loss_fn = getattr(m, name)
    ref_logp = torch.log_softmax(ref_logits, 0)
    pairs = [(i, j) for i in range(K) for j in range(K) if i != j]
    weights = [torch.sigmoid(rewards[i] - rewards[j]).item() / len(pairs) for i, j in pairs]
    theta = ref_logits.clone().requires_grad_()
    optimizer = torch.optim.LBFGS(
        [theta],
        max_iter=300,
        tolerance_grad=1e-12,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        logp = torch.log_softmax(theta, 0)
        total = 0.0
        for (i, j), w in zip(pairs, weights, strict=True):
            a, b = slice(i, i + 1), slice(j, j + 1)
            total = total + w * loss_fn(logp[a], logp[b], ref_logp[a], ref_logp[b], beta)[0]
        total.backward()
        return total

    optimizer.step(closure)
    return torch.softmax(theta.detach(), 0)


# -- inputs: built on the trusted side from a seed ---------------------------------------------


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def prompt_and_response(seed, B=3, T=11, V=13, dtype=torch.float64, masked_label=None):
    """Labels everywhere (as in input_ids[:, 1:]), a mask on each row's response span."""
    g = _generator(seed)
    logits = 1.5 * torch.randn(B, T, V, generator=g, dtype=dtype)
    labels = torch.randint(V, (B, T), generator=g)
    starts = torch.randint(1, T // 2, (B,), generator=g)
    ends = torch.randint(T // 2 + 1, T + 1, (B,), generator=g)
    position = torch.arange(T)
    mask = (position >= starts[:, None]) & (position < ends[:, None])
    if masked_label is not None:
        labels = labels.masked_fill(~mask, masked_label)
    return {"logits": logits, "labels": labels, "loss_mask": mask}


def ignored_labels(seed):
    return prompt_and_response(seed, B=4, T=20, V=50, dtype=torch.float32, masked_label=-100)


def many_tokens(seed):
    return prompt_and_response(seed, B=64, T=512, V=256, dtype=torch.float32, masked_label=-100)


def _pairs(seed, n, dtype, name, beta, scale=1.0):
    g = _generator(seed)
    lp = -40 + 8 * torch.randn(4, n, generator=g, dtype=dtype)
    lp[2:] = lp[:2] + scale * torch.randn(2, n, generator=g, dtype=dtype)
    pc, pr, rc, rr = lp
    return {"name": name, "pc": pc, "pr": pr, "rc": rc, "rr": rr, "beta": beta}


def dpo_pairs(seed):
    return _pairs(seed, 33, torch.float64, "dpo_loss", 0.3, scale=2.0)


def dpo_huge_margins(seed):
    return _pairs(seed, 16, torch.float32, "dpo_loss", 1.0, scale=400.0)


def ipo_pairs(seed):
    return _pairs(seed, 29, torch.float64, "ipo_loss", 0.7, scale=2.0)


def _categorical(seed, name, beta):
    g = _generator(seed)
    return {
        "name": name,
        "ref_logits": torch.randn(6, generator=g, dtype=torch.float64),
        "rewards": 1.5 * torch.randn(6, generator=g, dtype=torch.float64),
        "beta": beta,
    }


def dpo_categorical(seed):
    return _categorical(seed, "dpo_loss", 0.25)


def ipo_categorical(seed):
    return _categorical(seed, "ipo_loss", 0.4)


CASES = [
    Case(
        "sequence_logprobs and its gradient, response spans inside 11 positions, float64",
        call=logprobs_and_gradient,
        inputs=prompt_and_response,
        points=2,
        seed=101,
        **TIGHT,
    ),
    Case(
        "sequence_logprobs with -100 at masked labels, V=50, float32",
        call=logprobs_and_gradient,
        inputs=ignored_labels,
        points=1,
        seed=202,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "dpo_loss, its rewards and gradients on 33 pairs, beta=0.3, float64",
        call=loss_and_gradients,
        inputs=dpo_pairs,
        points=2,
        seed=303,
        **TIGHT,
    ),
    Case(
        "dpo_loss at margins of several hundred, float32",
        call=loss_and_gradients,
        inputs=dpo_huge_margins,
        points=1,
        seed=404,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "ipo_loss, its rewards and gradients on 29 pairs, beta=0.7, float64",
        call=loss_and_gradients,
        inputs=ipo_pairs,
        points=2,
        seed=505,
        **TIGHT,
    ),
    Case(
        "DPO's optimum over 6 outcomes, beta=0.25",
        call=categorical_optimum,
        inputs=dpo_categorical,
        points=1,
        seed=606,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "IPO's optimum over 6 outcomes, beta=0.4",
        call=categorical_optimum,
        inputs=ipo_categorical,
        points=1,
        seed=707,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "speed: sequence_logprobs on 64 x 512 tokens over 256 words, float32",
        call=logprobs,
        inputs=many_tokens,
        points=0.5,
        seed=808,
        rtol=1e-4,
        atol=1e-3,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
