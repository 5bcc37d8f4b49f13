"""Hidden cases of checkpoint 1: the learner's pieces, together, on spirals they have not seen.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(network, loss, training loop) it runs, so the checkpoint is defined once. The held-out labels
never leave the trusted side: the sandbox returns predictions, and the comparison scores them.
"""

import numpy as np

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute

SPEC = kit_root() / "exercises" / "checkpoint_1" / "test_checkpoint_1.py"
glue = execute(SPEC, "ladder.checkpoint_1.glue")  # the trusted side's copy of the same glue
HELD_OUT_SEED = 2**41 + 17  # too large to find by trying seeds against the points sent


def loss_and_gradients(folder, spec, n_per_class, data_seed, weight_seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_1.py")
    x, labels = ns["spirals"](n_per_class, data_seed)
    loss, grads = ns["loss_and_gradients"](own, x, labels, weight_seed)
    return {"loss": float(loss), **grads}


def held_out_predictions(folder, spec, n_per_class, data_seed, train_seed, x_test):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_1.py")
    x, labels = ns["spirals"](n_per_class, data_seed)
    params, _ = ns["train"](own, x, labels, train_seed)
    return ns["predict"](own, params, x_test)


def gradient_inputs(seed):
    return {
        "spec": SPEC.read_text(),
        "n_per_class": 25,
        "data_seed": seed,
        "weight_seed": seed + 1,
    }


def training_inputs(seed):
    x_test, _ = glue.spirals(100, HELD_OUT_SEED)
    return {
        "spec": SPEC.read_text(),
        "n_per_class": 300,
        "data_seed": seed,
        "train_seed": seed + 1,
        "x_test": x_test,
    }


def accuracy_bar(actual, expected, inputs):
    _, labels = glue.spirals(100, HELD_OUT_SEED)
    predictions = np.asarray(actual)
    if predictions.shape != labels.shape:
        return f"expected {labels.shape[0]} predictions, got an array of shape {predictions.shape}"
    accuracy = float((predictions == labels).mean())
    if accuracy < glue.TARGET_ACCURACY:
        return (
            f"your trained network classifies {accuracy:.1%} of 300 unseen spiral points; the bar "
            f"is {glue.TARGET_ACCURACY:.0%}: run `pytest exercises/checkpoint_1` and the pieces' "
            "own specs"
        )
    return None


CASES = [
    Case(
        "your pieces give the reference's loss and gradients on a new network",
        call=loss_and_gradients,
        inputs=gradient_inputs,
        points=2,
        seed=101,
        rtol=1e-7,
        atol=1e-10,
    ),
    Case(
        "your pieces train a network that classifies unseen spirals",
        call=held_out_predictions,
        inputs=training_inputs,
        points=3,
        seed=211,
        compare=accuracy_bar,
        timeout=300,
    ),
]
