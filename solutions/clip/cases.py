"""Hidden grading cases for clip: batch sizes, feature sizes, temperatures and encoders unlike the
public specs', and a training run on other seeds whose held-out labels never leave the trusted
side."""

import math

import torch

from graders.cases import Case
from graders.impl import reference

# As the public training spec; the reference scores 95.5% on this case's seed and test images.
TARGET_ACCURACY = 0.70
HELD_OUT_SEED = 2**37 + 5  # the test images' seed, too large to find by trying


def loss_and_gradients(m, image_features, text_features, logit_scale):
    """The loss and its gradients with respect to the three inputs."""
    image, text, scale = (
        t.clone().requires_grad_() for t in (image_features, text_features, logit_scale)
    )
    loss = m.clip_loss(image, text, scale)
    loss.backward()
    return {
        "loss": loss.detach(),
        "d_image_features": image.grad,
        "d_text_features": text.grad,
        "d_logit_scale": scale.grad,
    }


def classifier(m, class_names, templates, table):
    """zero_shot_classifier with a text encoder that looks each prompt up in `table`."""
    prompts = [t.format(n) for n in class_names for t in templates]

    def encode_text(texts):
        return table[[prompts.index(t) for t in texts]]

    return m.zero_shot_classifier(class_names, templates, encode_text)


def predict(m, image_features, classifier):
    return m.zero_shot_predict(image_features, classifier)


def model_outputs(m, embed_dim, weights, images, captions):
    """A new CLIP's logit_scale, then its embeddings once the given weights are loaded."""
    import torch

    clip = m.CLIP(m.ImageEncoder(hidden=64), m.TextEncoder(width=24), embed_dim=embed_dim)
    initial = clip.logit_scale.item()
    clip.load_state_dict(weights)
    clip = clip.to(images.device)
    with torch.no_grad():
        return {
            "initial logit_scale": initial,
            "encode_image": clip.encode_image(images),
            "encode_text": clip.encode_text(captions),
        }


def zero_shot_after_training(m, seed, images):
    """Train a CLIP from `seed` as the public spec does; its zero-shot classes for `images`."""
    import torch

    torch.manual_seed(seed)
    clip = m.CLIP(m.ImageEncoder(), m.TextEncoder(), embed_dim=16).to(images.device)
    m.train(clip, steps=300, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        weights = m.zero_shot_classifier(m.COMBINATIONS, m.TEMPLATES, clip.encode_text)
        return m.zero_shot_predict(clip.encode_image(images), weights)


def _features(seed, N, d, dtype, scale):
    g = torch.Generator().manual_seed(seed)
    image, text = (torch.randn(N, d, generator=g, dtype=dtype) for _ in range(2))
    text = text + 2 * image  # related pairs, as after some training
    norms = (torch.rand(2, N, 1, generator=g, dtype=dtype) * 4 - 2).exp()
    return {
        "image_features": image * norms[0],
        "text_features": text * norms[1],
        "logit_scale": torch.tensor(math.log(scale), dtype=dtype),
    }


def initial_temperature(seed):
    return _features(seed, N=40, d=24, dtype=torch.float64, scale=1 / 0.07)


def learned_temperature(seed):
    return _features(seed, N=128, d=64, dtype=torch.float32, scale=3.5)


def past_the_cap(seed):
    return _features(seed, N=20, d=10, dtype=torch.float64, scale=400.0)


def prompts(seed):
    g = torch.Generator().manual_seed(seed)
    names, templates = ["ox", "yak", "emu", "gnu", "elk", "ant", "bee"], ["{}", "an {}!", "{}s"]
    table = torch.randn(len(names) * len(templates), 12, generator=g, dtype=torch.float64)
    table = table * (torch.rand(len(table), 1, generator=g, dtype=torch.float64) * 6 - 3).exp()
    return {"class_names": names, "templates": templates, "table": table}


def predictions(seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(50, 6, generator=g, dtype=torch.float32) * 3
    weights = torch.randn(9, 6, generator=g, dtype=torch.float32)
    return {"image_features": images, "classifier": weights / weights.norm(dim=-1, keepdim=True)}


def small_model(seed):
    ref = reference("clip")
    torch.manual_seed(seed)
    clip = ref.CLIP(ref.ImageEncoder(hidden=64), ref.TextEncoder(width=24), embed_dim=12)
    with torch.no_grad():
        for p in clip.parameters():
            p.normal_(0, 0.3)
    g = torch.Generator().manual_seed(seed)
    names = [ref.COMBINATIONS[i] for i in torch.randint(36, (7,), generator=g)]
    return {
        "embed_dim": 12,
        "weights": dict(clip.state_dict()),
        "images": ref.draw_images(names, g),
        "captions": [*ref.draw_captions(names, g), "an unknown word: zebra"],
    }


def _held_out(n):
    ref = reference("clip")
    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    names = [ref.HELD_OUT[i] for i in torch.randint(len(ref.HELD_OUT), (n,), generator=g)]
    labels = torch.tensor([ref.COMBINATIONS.index(name) for name in names])
    return ref.draw_images(names, g), labels


def training(seed):
    return {"seed": seed, "images": _held_out(400)[0]}


def accuracy_bar(actual, expected, inputs):
    labels = _held_out(400)[1]
    if not isinstance(actual, torch.Tensor) or tuple(actual.shape) != tuple(labels.shape):
        return f"expected {len(labels)} predicted classes, got {actual!r:.80}"
    accuracy = (actual.cpu().long() == labels).double().mean().item()
    if accuracy < TARGET_ACCURACY:
        return (
            f"trained on the 30 seen combinations, your CLIP classifies {accuracy:.1%} of 400 "
            f"images of the 6 unseen ones zero-shot; the bar is {TARGET_ACCURACY:.0%}"
        )
    return None


CASES = [
    Case(
        "loss and gradients at the initial temperature, 40 pairs, float64",
        call=loss_and_gradients,
        inputs=initial_temperature,
        points=2,
        seed=101,
        rtol=1e-9,
        atol=1e-12,
    ),
    Case(
        "loss and gradients at a learned temperature, 128 pairs, float32",
        call=loss_and_gradients,
        inputs=learned_temperature,
        points=1,
        seed=202,
        rtol=1e-4,
        atol=1e-6,
    ),
    Case(
        "a temperature past the cap of 100",
        call=loss_and_gradients,
        inputs=past_the_cap,
        points=1,
        seed=303,
        rtol=1e-9,
        atol=1e-12,
    ),
    Case(
        "zero-shot classifier over 7 classes and 3 templates",
        call=classifier,
        inputs=prompts,
        points=2,
        seed=404,
        rtol=1e-9,
        atol=1e-12,
    ),
    Case("zero-shot predictions, 50 images, 9 classes", call=predict, inputs=predictions, seed=505),
    Case(
        "CLIP's projections and initial temperature, other encoder sizes",
        call=model_outputs,
        inputs=small_model,
        points=1,
        seed=606,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "trained on other seeds, unseen combinations classified zero-shot",
        call=zero_shot_after_training,
        inputs=training,
        points=3,
        seed=701,
        compare=accuracy_bar,
        timeout=300,
    ),
]
