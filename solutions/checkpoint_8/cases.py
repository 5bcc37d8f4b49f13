"""Hidden cases of checkpoint 8: the learner's diffusion and CLIP pieces on data they have not seen.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the denoiser, the training loops, the zero-shot classifier) it runs, so the checkpoint is defined
once. What the samples are compared with, and the labels of the held-out images, never leave the
trusted side: the sandbox returns samples and predictions, and the comparisons score them.
"""

import math
from types import SimpleNamespace

import torch

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute, reference

SPEC = kit_root() / "exercises" / "checkpoint_8" / "test_checkpoint_8.py"
glue = execute(SPEC, "ladder.checkpoint_8.glue")  # the trusted side's copy of the same glue
HELD_OUT_SEED = 2**41 + 88  # too large to find by trying seeds against what is sent
RING_BAR = 0.12  # eight Gaussians: the reference lands at 0.04 to 0.06, a Gaussian blob at 0.2


def referees(folder, spec, features, logit_scale, prompt_vectors, seed):
    """Your ddpm_loss on the exact denoiser, your clip_loss and your zero-shot classifier."""
    import torch

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_8.py")
    T, spread = ns["T"], 0.5
    a = torch.cumprod(1 - own.diffusion.linear_beta_schedule(T).double(), 0)

    def best(x, t):  # the exact noise guess for data N(0, spread^2 I)
        at = a[t].to(x.dtype)[:, None]
        return (1 - at).sqrt() * x / (at * spread**2 + 1 - at)

    g = torch.Generator().manual_seed(int(seed))
    x0 = spread * torch.randn(20_000, 2, generator=g)
    loss = own.diffusion.ddpm_loss(best, x0, ns["schedule"](own), g)
    clip = own.clip
    table = dict(
        zip(
            [t.format(n) for n in clip.COMBINATIONS for t in clip.TEMPLATES],
            torch.as_tensor(prompt_vectors).cpu(),
            strict=True,
        )
    )
    classifier = clip.zero_shot_classifier(
        clip.COMBINATIONS, clip.TEMPLATES, lambda texts: torch.stack([table[x] for x in texts])
    )
    images, texts = torch.as_tensor(features).cpu()  # the glue runs on the CPU
    return {
        "ddpm_loss": float(loss),
        "clip_loss": float(clip.clip_loss(images, texts, torch.as_tensor(logit_scale).cpu())),
        "classifier": classifier,
    }


def referee_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    clip = reference("clip")
    n_prompts = len(clip.COMBINATIONS) * len(clip.TEMPLATES)
    return {
        "spec": SPEC.read_text(),
        "features": torch.randn(2, 20, 12, generator=g),
        "logit_scale": torch.tensor(math.log(30.0)),
        "prompt_vectors": torch.randn(n_prompts, 12, generator=g),
        "seed": seed,
    }


def compare_referees(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != set(expected):
        return f"expected a dict with keys {sorted(expected)}"
    # The loss is random: its mean over uniform steps and its standard deviation, as in the spec.
    spread, B = 0.5, 20_000
    a = torch.cumprod(1 - reference("diffusion").linear_beta_schedule(glue.T), 0)
    v = a * spread**2 / (a * spread**2 + 1 - a)
    mean, sd = v.mean().item(), math.sqrt(((v**2).mean() * 2 - v.mean() ** 2).item() / B)
    if not abs(float(actual["ddpm_loss"]) - mean) <= 6 * sd:
        return (
            f"your ddpm_loss gives the exact denoiser of N(0, 0.25 I) the loss "
            f"{float(actual['ddpm_loss']):.4f}; it should be {mean:.4f} within {6 * sd:.4f}: run "
            "`ladder check diffusion`"
        )
    if not math.isclose(float(actual["clip_loss"]), expected["clip_loss"], rel_tol=1e-5):
        return (
            f"your clip_loss on 20 pairs is {float(actual['clip_loss']):.6g}; expected "
            f"{expected['clip_loss']:.6g}: run `ladder check clip`"
        )
    mine, theirs = torch.as_tensor(actual["classifier"]), torch.as_tensor(expected["classifier"])
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6):
        return "your zero_shot_classifier differs from the prompt ensemble: run `ladder check clip`"
    return None


def mixture_samples(folder, spec, n, seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_8.py")
    return ns["sample_mixture"](own, int(n), int(seed))


def mixture_inputs(seed):
    return {"spec": SPEC.read_text(), "n": 2000, "seed": seed}


def close_to_the_mixture(actual, expected, inputs):
    held_out = glue.mixture(2000, HELD_OUT_SEED)
    for sampler in ("ddim", "ddpm"):
        samples = torch.as_tensor(actual.get(sampler)) if isinstance(actual, dict) else None
        if samples is None or samples.shape != (2000, 2) or not torch.isfinite(samples).all():
            return f"your {sampler} sampler should return 2000 finite points (2000, 2)"
        distance = glue.mmd(samples.float(), held_out)
        if not distance < glue.MIXTURE_BAR:
            return (
                f"given the exact denoiser of a mixture of three Gaussians, your {sampler} "
                f"sampler lands at kernel distance {distance:.3f}; the bar is {glue.MIXTURE_BAR}"
            )
    return None


def trained_samples(folder, spec, data, seed):
    import torch

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_8.py")
    samples, _ = ns["train_and_sample"](own, torch.as_tensor(data).cpu(), 2000, int(seed))
    return samples


def turned_ring(n, seed):
    """Eight Gaussians (spread 0.12) on a circle of radius 1.8, turned by pi / 8."""
    g = torch.Generator().manual_seed(seed)
    angle = (torch.randint(0, 8, (n,), generator=g) + 0.5) * math.pi / 4
    centres = 1.8 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.12 * torch.randn(n, 2, generator=g)


def training_inputs(seed):
    return {"spec": SPEC.read_text(), "data": turned_ring(20_000, seed), "seed": seed + 1}


def close_to_the_ring(actual, expected, inputs):
    samples = torch.as_tensor(actual)
    if samples.shape != (2000, 2) or not torch.isfinite(samples).all():
        return f"expected 2000 finite samples (2000, 2), got {tuple(samples.shape)}"
    distance = glue.mmd(samples.float(), turned_ring(2000, HELD_OUT_SEED))
    if not distance < RING_BAR:
        return (
            f"a denoiser trained with your ddpm_loss and sampled with your ddim_sample lands at "
            f"kernel distance {distance:.3f} from eight Gaussians on a ring; the bar is "
            f"{RING_BAR}: run `pytest exercises/checkpoint_8` and the pieces' own specs"
        )
    return None


def zero_shot_predictions(folder, spec, seed, images):
    import torch

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_8.py")
    model, _ = ns["train_clip"](own, int(seed))
    return ns["predict"](own, model, torch.as_tensor(images).cpu())


def held_out():
    return glue.held_out_images(SimpleNamespace(clip=reference("clip")), 600, HELD_OUT_SEED)


def clip_inputs(seed):
    images, _ = held_out()
    return {"spec": SPEC.read_text(), "seed": seed, "images": images}


def accuracy_bar(actual, expected, inputs):
    _, labels = held_out()
    predictions = torch.as_tensor(actual)
    if predictions.shape != labels.shape:
        return f"expected {len(labels)} predictions, got shape {tuple(predictions.shape)}"
    accuracy = (predictions == labels).double().mean().item()
    if accuracy < glue.TARGET_ACCURACY:
        return (
            f"your CLIP, trained on the 30 seen combinations, names {accuracy:.1%} of 600 images "
            f"of the 6 unseen ones; the bar is {glue.TARGET_ACCURACY:.0%}: run `pytest "
            "exercises/checkpoint_8` and the pieces' own specs"
        )
    return None


CASES = [
    Case(
        "your ddpm_loss, clip_loss and zero-shot classifier on new inputs",
        call=referees,
        inputs=referee_inputs,
        points=2,
        seed=101,
        compare=compare_referees,
    ),
    Case(
        "your samplers draw a mixture of Gaussians given its exact denoiser",
        call=mixture_samples,
        inputs=mixture_inputs,
        points=2,
        seed=202,
        compare=close_to_the_mixture,
    ),
    Case(
        "your pieces train a denoiser that samples eight Gaussians on a ring",
        call=trained_samples,
        inputs=training_inputs,
        points=3,
        seed=303,
        compare=close_to_the_ring,
        timeout=300,
    ),
    Case(
        "your CLIP names unseen colour-shape combinations zero-shot",
        call=zero_shot_predictions,
        inputs=clip_inputs,
        points=3,
        seed=404,
        compare=accuracy_bar,
        timeout=300,
    ),
]
