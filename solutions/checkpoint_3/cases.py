"""Hidden cases of checkpoint 3: the learner's pieces, together, on the shipped sweep of tiny GPT
runs, with questions the public specs do not ask (a smaller fit, another compute budget,
other model shapes).

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue it
runs, so the checkpoint is defined once; the trusted side runs the same glue on the references.
"""

import json

import numpy as np

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute

SPEC = kit_root() / "exercises" / "checkpoint_3" / "test_checkpoint_3.py"
SWEEP = kit_root() / "data" / "checkpoint_3" / "sweep.json"
glue = execute(SPEC, "ladder.checkpoint_3.glue")  # the trusted side's copy of the same glue


def counts(folder, spec, runs):
    import numpy as np

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_3.py")
    N, C = ns["sizes_and_compute"](own, runs)
    forward = [
        own.scaling_laws.forward_flops_per_token(r["n_layer"], r["d_model"], r["n_ctx"])
        for r in runs
    ]
    return {"N": N, "C": C, "forward": np.array(forward, dtype=np.float64)}


def prediction(folder, spec, runs):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_3.py")
    return list(ns["predict_widest"](own, runs))


def split(folder, spec, runs, budget):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_3.py")
    n_opt, d_opt, _ = ns["compute_optimal_split"](own, runs, budget)
    return [n_opt, d_opt]


def valley(folder, spec, runs, budget):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_3.py")
    _, _, surface = ns["compute_optimal_split"](own, runs, budget)
    return list(ns["isoflop_valley"](own, surface, budget))


def runs():
    return json.loads(SWEEP.read_text())["runs"]


def shape_inputs(seed):
    rng = np.random.default_rng(seed)
    shapes = [
        (int(layers), int(width))
        for layers, width in zip(rng.integers(1, 48, 6), 64 * rng.integers(1, 80, 6), strict=True)
    ]
    contexts = 2 ** rng.integers(7, 14, 6)
    made_up = [
        {"n_layer": n, "d_model": d, "n_ctx": int(c), "tokens": int(t)}
        for (n, d), c, t in zip(shapes, contexts, rng.integers(10**6, 10**11, 6), strict=True)
    ]
    return {"spec": SPEC.read_text(), "runs": made_up}


def narrower_inputs(seed):
    # Without the widest model, the glue predicts the next widest from the three narrower ones.
    widest = max(r["d_model"] for r in runs())
    return {"spec": SPEC.read_text(), "runs": [r for r in runs() if r["d_model"] != widest]}


def budget_inputs(seed):
    return {"spec": SPEC.read_text(), "runs": runs(), "budget": float(seed)}


def within_ratio(actual, expected, inputs):
    for name, got, want in zip(("N_opt", "D_opt"), actual, expected, strict=True):
        got, want = float(got), float(want)
        if not (
            np.isfinite(got) and got > 0 and max(got / want, want / got) <= glue.MAX_SPLIT_RATIO
        ):
            return (
                f"for C = {inputs['budget']:g} FLOPs your pieces give {name} = {got:.4g}, the "
                f"reference's {want:.4g} (the bar: within a factor {glue.MAX_SPLIT_RATIO}): run "
                "`pytest exercises/checkpoint_3` and `ladder check chinchilla`"
            )
    return None


def valley_within_ratio(actual, expected, inputs):
    for name, got, want in zip(("the valley", "N_opt"), actual, expected, strict=True):
        got, want = float(got), float(want)
        if not (
            np.isfinite(got) and got > 0 and max(got / want, want / got) <= glue.MAX_VALLEY_RATIO
        ):
            return (
                f"on your surface at C = {inputs['budget']:g} FLOPs your pieces put {name} at "
                f"N = {got:.4g}, the reference's at {want:.4g} (the bar: within a factor "
                f"{glue.MAX_VALLEY_RATIO}): run `pytest exercises/checkpoint_3` and "
                "`ladder check chinchilla`"
            )
    return None


CASES = [
    Case(
        "your parameter, training FLOP and forward FLOP counts of six made-up models",
        call=counts,
        inputs=shape_inputs,
        points=1,
        seed=31,
        rtol=1e-12,
        atol=0,
    ),
    Case(
        "your pieces predict the second widest run from the three narrower ones",
        call=prediction,
        inputs=narrower_inputs,
        points=2,
        seed=41,
        rtol=1e-6,
        atol=0,
    ),
    Case(
        "your pieces split a budget of 1e15 FLOPs as the reference does",
        call=split,
        inputs=budget_inputs,
        points=2,
        seed=10**15,
        compare=within_ratio,
    ),
    Case(
        "your isoFLOP valley at 1e14 FLOPs agrees with the reference's",
        call=valley,
        inputs=budget_inputs,
        points=1,
        seed=10**14,
        compare=valley_within_ratio,
    ),
]
