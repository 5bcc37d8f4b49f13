"""Hidden grading cases for rlhf: shapes, dtypes, masks and seeds unlike the public specs'.

Every case is deterministic. The training case runs the learner's three pieces inside the given PPO
loop with the adaptive KL controller (the public specs keep beta fixed) on a seed the specs never
use, and asks for the README's stated bounds.
"""

import torch

from graders.cases import Case

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def shaped(m, scores, logp_policy, logp_ref, mask, beta):
    return m.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, beta)


def shaped_summary(m, scores, logp_policy, logp_ref, mask, beta):
    rewards = m.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, beta)
    return {"rows": rewards[::1001], "row_sums": rewards.sum(dim=1)[::7]}


def kl(m, logp_policy, logp_ref, mask):
    return m.sequence_kl(logp_policy, logp_ref, mask)


def controller(m, init_beta, target, horizon, kls, n_steps):
    c = m.AdaptiveKLController(init_beta, target, horizon)
    return [float(c.update(k, n)) for k, n in zip(kls, n_steps, strict=True)] + [float(c.value)]


def train_adaptive(m, seed, iterations, target_kl):
    result = m.train_rlhf(seed=seed, iterations=iterations, target_kl=target_kl, device="cpu")
    return {
        "score_before": float(result["score_before"]),
        "score_after": float(result["score_after"]),
        "kl_after": float(result["kl_after"]),
        "beta_last": float(result["beta"][-1]),
    }


# -- inputs: built on the trusted side from a seed ---------------------------------------------


def _batch(seed, B, T, dtype, mask_kind):
    g = torch.Generator().manual_seed(seed)
    logp_policy = -torch.rand(B, T, generator=g, dtype=dtype) * 5
    logp_ref = logp_policy + torch.randn(B, T, generator=g, dtype=dtype)
    scores = torch.randn(B, generator=g, dtype=dtype) * 3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    if mask_kind == "left":
        mask = mask.flip(1)
    elif mask_kind == "float":
        mask = mask.to(dtype)
    return {"scores": scores, "logp_policy": logp_policy, "logp_ref": logp_ref, "mask": mask}


def right_padded(seed):
    return {**_batch(seed, 9, 13, torch.float64, "right"), "beta": 0.05}


def left_padded_float32(seed):
    return {**_batch(seed, 12, 10, torch.float32, "left"), "beta": 0.3}


def float_mask(seed):
    return {**_batch(seed, 5, 7, torch.float64, "float"), "beta": 1.5}


def large(seed):
    return {**_batch(seed, 16384, 256, torch.float32, "right"), "beta": 0.1}


def kl_inputs(seed):
    inputs = _batch(seed, 10, 11, torch.float64, "left")
    return {k: inputs[k] for k in ("logp_policy", "logp_ref", "mask")}


def controller_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    kls = (torch.rand(14, generator=g, dtype=torch.float64) * 12).tolist()
    return {
        "init_beta": 0.05,
        "target": 4.0,
        "horizon": 3000.0,
        "kls": [4.0, 0.0, 50.0, *kls],
        "n_steps": [64, 128, 256, *torch.randint(16, 600, (14,), generator=g).tolist()],
    }


def training(seed):
    return {"seed": seed, "iterations": 20, "target_kl": 1.0}


# -- comparisons -------------------------------------------------------------------------------

SCORE_GAIN, KL_BOUND = 0.8, 1.8  # over seeds 20..31 the reference gains 1.0 to 1.6 at KL 0.6-1.4


def adaptive_run(actual, expected, inputs):
    keys = {"score_before", "score_after", "kl_after", "beta_last"}
    if not isinstance(actual, dict) or set(actual) != keys:
        return f"train_rlhf returned {actual!r}; expected the README's keys"
    gain, kl_after = actual["score_after"] - actual["score_before"], actual["kl_after"]
    if not (gain >= SCORE_GAIN and kl_after <= KL_BOUND and actual["beta_last"] > 0.4):
        return (
            f"train_rlhf(seed={inputs['seed']}, iterations={inputs['iterations']}, target_kl="
            f"{inputs['target_kl']}): score {actual['score_before']:.2f} -> "
            f"{actual['score_after']:.2f}, KL {kl_after:.2f} nats, last beta "
            f"{actual['beta_last']:.3f}; expected a gain of at least {SCORE_GAIN}, a KL of at most "
            f"{KL_BOUND} nats, and the controller to have raised beta above 0.4 (from 0.2)"
        )
    return None


CASES = [
    Case(
        "kl_shaped_rewards, float64, 9 completions of up to 13 tokens",
        call=shaped,
        inputs=right_padded,
        points=2,
        seed=101,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "kl_shaped_rewards, float32, left padding",
        call=shaped,
        inputs=left_padded_float32,
        points=2,
        seed=102,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "kl_shaped_rewards with a 0/1 float mask and beta 1.5",
        call=shaped,
        inputs=float_mask,
        points=1,
        seed=103,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "sequence_kl, left padding",
        call=kl,
        inputs=kl_inputs,
        points=2,
        seed=104,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "AdaptiveKLController over 17 updates",
        call=controller,
        inputs=controller_inputs,
        points=2,
        seed=105,
        rtol=1e-12,
        atol=0,
    ),
    Case(
        "kl_shaped_rewards over 16384 completions of 256 tokens (speed)",
        call=shaped_summary,
        inputs=large,
        points=1,
        seed=106,
        rtol=1e-5,
        atol=1e-5,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case(
        "PPO with the adaptive controller: the score rises, the KL settles near its target",
        call=train_adaptive,
        inputs=training,
        points=3,
        seed=2025,
        compare=adaptive_run,
        timeout=300,
    ),
]
