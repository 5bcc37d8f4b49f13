"""Hidden cases of checkpoint 6: the same model, sharded, at sizes and rank counts the public specs
never use.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the model, the training loop, the runs on each rank) it runs, so the checkpoint is defined once.
A call travels as source to a sandbox, where a spawned process could not import it, so the ranks
are simulated: `graders.distributed.simulate_ranks` runs each rank in a thread of the sandbox's
process with torch.distributed's collectives faked exactly (the public specs' second level; the real
processes of the third level run the same rank functions). The call returns the run's losses and
its parameters after training, put back together; the trusted side compares them with the same
run of the reference pieces, which the one-process model matches to ~1e-11.
"""

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute

SPEC = kit_root() / "exercises" / "checkpoint_6" / "test_checkpoint_6.py"
glue = execute(SPEC, "ladder.checkpoint_6.glue")  # the trusted side's copy of the same glue

# float64, as the public specs: rounding moves a few parameters by ~1e-10 here (Adam magnifies
# the rounding of the key bias's gradient, zero in exact arithmetic); each mistake moves one by
# 1e-4 or more.
TOL = dict(rtol=1e-8, atol=1e-8)


def run_in_one_process(folder, spec, config):
    """The model with the learner's FlashAttention, trained in one process."""
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_6.py")
    return ns["one_process"](config, flash=own.flash_attention)


def run_on_simulated_ranks(folder, spec, config, world_size, name):
    """One sharded run (`name`, as the spec's every_run names it) on simulated ranks:
    {"losses", "params"} put back together, and for ZeRO what each rank held."""
    from graders.cases import spec_glue
    from graders.distributed import simulate_ranks

    ns, own = spec_glue(spec, folder, "test_checkpoint_6.py")
    per_rank = simulate_ranks(ns["every_run"], world_size, own, config, (name,))
    results = ns["outcome"](per_rank, name, "simulated ranks")
    if name.startswith("tensor_parallel"):
        return {
            "losses": results[0]["losses"],
            "params": ns["unshard"](results, config),
            "replicated on every rank": [r["whole"] for r in results],
        }
    import torch

    return {
        "losses": torch.stack([r["losses"] for r in results]).mean(0),
        "params": [r["params"] for r in results],
        "held between steps": [r["memory"] for r in results],
    }


def one_process_inputs(config):
    return lambda seed: {"spec": SPEC.read_text(), "config": dict(config, seed=seed)}


def ranks_inputs(config, world_size, name):
    def inputs(seed):
        return {
            "spec": SPEC.read_text(),
            "config": dict(config, seed=seed),
            "world_size": world_size,
            "name": name,
        }

    return inputs


# Sizes unlike the public specs': 6 heads over 3 ranks, blocks that do not divide the context,
# 3 layers; ZeRO on 3 ranks with a flat size that is no multiple of 3 (padding matters).
TP3 = dict(
    glue.CONFIG, vocab=50, context=12, d_model=24, n_heads=6, n_layers=3, d_hidden=72, batch=3,
    steps=5, block_q=5, block_k=3,
)  # fmt: skip
FLASH = dict(TP3, n_heads=3, n_layers=2, context=13, block_q=4, block_k=6)
TP2_FLASH = dict(TP3, n_heads=4, d_model=20, d_hidden=40, block_q=3, block_k=5)
ZERO3 = dict(TP3, d_model=20, n_heads=4, n_layers=2, d_hidden=44, batch=6, steps=4)

CASES = [
    Case(
        "your FlashAttention gives the same training run (13 positions, tiles of 4 x 6)",
        call=run_in_one_process,
        inputs=one_process_inputs(FLASH),
        points=2,
        seed=601,
        **TOL,
    ),
    Case(
        "your tensor-parallel model on 3 ranks (6 heads, 3 layers) trains as one process",
        call=run_on_simulated_ranks,
        inputs=ranks_inputs(TP3, 3, "tensor_parallel"),
        points=3,
        seed=602,
        **TOL,
    ),
    Case(
        "your FlashAttention inside your tensor-parallel model on 2 ranks",
        call=run_on_simulated_ranks,
        inputs=ranks_inputs(TP2_FLASH, 2, "tensor_parallel+flash"),
        points=1,
        seed=603,
        **TOL,
    ),
    *(
        Case(
            f"your ZeRO stage {stage} on 3 ranks trains as one process and holds only its share",
            call=run_on_simulated_ranks,
            inputs=ranks_inputs(ZERO3, 3, f"zero stage {stage}"),
            points=1,
            seed=603 + stage,
            **TOL,
        )
        for stage in glue.STAGES
    ),
]
