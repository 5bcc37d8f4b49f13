"""Hidden cases of checkpoint 4: the learner's pieces, together, on a new batch and new pairs.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the tiny language model, the labeller, the reward model's training, DPO) it runs, so the
checkpoint is defined once. The sandbox returns tables of numbers only: the trained reward model's
reward and the tuned policy's log-probability for every (prompt, response). The held-out pairs,
and so the accuracies and the KL, are computed on the trusted side, from the trusted reference.
"""

import torch

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute

SPEC = kit_root() / "exercises" / "checkpoint_4" / "test_checkpoint_4.py"
glue = execute(SPEC, "ladder.checkpoint_4.glue")  # the trusted side's copy of the same glue
HELD_OUT_SEED = 2**41 + 29  # too large to find by trying seeds


def scores(folder, spec, seed):
    import torch

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_4.py")
    model = ns["reference_model"](seed)
    prompt, a, b = ns["draw_pairs"](model, 48, seed + 1)
    with torch.no_grad():
        logp_a = ns["response_logprobs"](own, model, prompt, a)
        logp_b = ns["response_logprobs"](own, model, prompt, b)
    shift = torch.randn(2, 48, generator=torch.Generator().manual_seed(seed + 2))
    loss, chosen, rejected = own.dpo.dpo_loss(
        logp_a + 2 * shift[0], logp_b + 2 * shift[1], logp_a, logp_b, beta=0.3
    )
    return {
        "logp_a": logp_a,
        "logp_b": logp_b,
        "loss": loss.detach(),
        "chosen_rewards": chosen,
        "rejected_rewards": rejected,
    }


def aligned_tables(folder, spec, data_seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_4.py")
    rm, policy = ns["align"](own, data_seed)
    return {"rewards": ns["reward_table"](rm), "policy": ns["logprob_table"](policy)}


def score_inputs(seed):
    return {"spec": SPEC.read_text(), "seed": seed}


def align_inputs(seed):
    return {"spec": SPEC.read_text(), "data_seed": seed}


def aligned_bars(actual, expected, inputs):
    shape = (len(glue.PROMPTS), glue.WORDS**glue.LENGTH)
    if not isinstance(actual, dict) or sorted(actual) != ["policy", "rewards"]:
        return "expected a dict of the 'policy' and 'rewards' tables"
    tables = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in actual.items()}
    for name, table in tables.items():
        if tuple(table.shape) != shape or not torch.isfinite(table).all():
            return f"the {name} table should be finite, of shape {shape}; got {tuple(table.shape)}"
    reference, values = glue.reference_model(), glue.taste()
    reference_table = glue.logprob_table(reference)
    held_out = glue.draw_pairs(reference, glue.HELD_OUT_PAIRS, HELD_OUT_SEED)
    rm_accuracy = glue.preference_accuracy(tables["rewards"], values, held_out)
    if rm_accuracy < glue.RM_BAR:
        return (
            f"your reward model ranks {rm_accuracy:.1%} of unseen pairs as the hidden taste does; "
            f"the bar is {glue.RM_BAR:.0%}: run `pytest exercises/checkpoint_4` and "
            "`ladder check reward_model`"
        )
    policy = tables["policy"]
    accuracy = glue.preference_accuracy(policy - reference_table, values, held_out)
    kl = glue.kl_per_prompt(policy, reference_table)
    if accuracy < glue.POLICY_BAR:
        return (
            f"your tuned policy's implicit reward ranks {accuracy:.1%} of unseen pairs as the "
            f"hidden taste does; the bar is {glue.POLICY_BAR:.0%}: run `pytest "
            "exercises/checkpoint_4` and `ladder check dpo`"
        )
    if not kl.max() <= glue.KL_BOUND:
        return (
            f"your tuned policy drifted {float(kl.max()):.2f} nats from the reference on one "
            f"prompt; the bound is {glue.KL_BOUND}: run `ladder check dpo`"
        )
    return None


CASES = [
    Case(
        "your pieces score a new batch of the tiny language model as the reference does",
        call=scores,
        inputs=score_inputs,
        points=2,
        seed=401,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "your pieces align the tiny language model on new pairs: accuracy up, KL bounded",
        call=aligned_tables,
        inputs=align_inputs,
        points=3,
        seed=1009,
        compare=aligned_bars,
        timeout=300,
    ),
]
