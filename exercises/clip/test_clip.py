"""Specs for clip: `pytest exercises/clip` (`--impl=solutions`: the reference).

The loss is checked against torch's own cosine similarity and cross-entropy, then property by
property (symmetry, pairs permuted together, cosine not dot product, the temperature stored as a
log and capped at 100, gradients); the model's layout, the zero-shot classifier and prediction
next; the last spec trains the tiny CLIP and asks it for combinations it never saw.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd.gradcheck import GradcheckError

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
# The loss is a sum of N log-sum-exps over logits up to 100: float32 keeps about 1e-6 relative.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}
TEMPERATURE = 0.07  # the paper's initial temperature
STEPS, TEST_IMAGES, TARGET_ACCURACY = 300, 600, 0.70


def features(N, d, dtype, device, seed, spread=1.0):
    """Image and text features (N, d) with row norms from exp(-spread) to exp(spread)."""
    g = torch.Generator().manual_seed(seed)
    image, text = (torch.randn(N, d, generator=g, dtype=dtype) for _ in range(2))
    norms = (spread * (2 * torch.rand(2, N, 1, generator=g, dtype=dtype) - 1)).exp()
    return (image * norms[0]).to(device), (text * norms[1]).to(device)


def log_scale(scale, dtype, device):
    return torch.tensor(math.log(scale), dtype=dtype, device=device)


def expected_loss(image, text, scale):
    """The paper's loss, from torch's cosine similarity and cross-entropy; scale is the cap's
    result, a number."""
    cosine = F.cosine_similarity(image[:, None, :], text[None, :, :], dim=-1)  # (N, N)
    logits = scale * cosine
    targets = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def check_scalar(loss, what):
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        fail(f"{what} should return a 0-dim tensor (the batch's mean loss); got {shape}")


pairs = st.tuples(st.integers(1, 12), st.integers(2, 16), st.integers(0, 2**16))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=pairs, scale=st.floats(1.0, 99.0))
def test_loss_matches_the_formula(impl, device, dtype, shape, scale):
    N, d, seed = shape
    image, text = features(N, d, dtype, device, seed)
    what = (
        f"clip_loss({describe(image_features=image, text_features=text)}, "
        f"logit_scale=log({scale:.4g}))"
    )
    loss = impl.clip_loss(image, text, log_scale(scale, dtype, device))
    check_scalar(loss, what)
    rtol, atol = TOL[dtype]
    assert_close(loss, expected_loss(image, text, scale), what=what, rtol=rtol, atol=atol)


@given(shape=pairs)
def test_loss_is_symmetric_in_images_and_texts(impl, device, shape):
    N, d, seed = shape
    image, text = features(N, d, torch.float64, device, seed)
    scale = log_scale(1 / TEMPERATURE, torch.float64, device)
    assert_close(
        impl.clip_loss(text, image, scale),
        impl.clip_loss(image, text, scale),
        rtol=1e-10,
        atol=1e-10,
        what=f"clip_loss(texts, images) against clip_loss(images, texts) for N={N} pairs (the "
        "loss averages the image-to-text and the text-to-image cross-entropies, so it is "
        "symmetric)",
    )


@given(shape=pairs)
def test_permuting_the_pairs_together_changes_nothing(impl, device, shape):
    N, d, seed = shape
    image, text = features(N, d, torch.float64, device, seed)
    scale = log_scale(1 / TEMPERATURE, torch.float64, device)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed)).to(device)
    assert_close(
        impl.clip_loss(image[perm], text[perm], scale),
        impl.clip_loss(image, text, scale),
        rtol=1e-10,
        atol=1e-10,
        what=f"clip_loss with the {N} (image, text) pairs permuted together (pair i stays pair i, "
        "wherever it sits in the batch)",
    )
    if N >= 2:  # texts equal to their images: breaking the pairs must cost something
        matched = impl.clip_loss(image, image, scale)
        broken = impl.clip_loss(image, image.roll(1, 0), scale)
        if not matched < broken:
            fail(
                f"clip_loss(x, x) = {matched.item():.4g} should be below clip_loss(x, x rolled by "
                f"one row) = {broken.item():.4g} for x {tuple(x for x in image.shape)}: the "
                "target of row i is column i, the matching text"
            )


@given(shape=pairs)
def test_loss_uses_cosine_similarity(impl, device, shape):
    N, d, seed = shape
    image, text = features(N, d, torch.float64, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    stretch = (4 * torch.rand(2, N, 1, generator=g, dtype=torch.float64) - 2).exp().to(device)
    scale = log_scale(1 / TEMPERATURE, torch.float64, device)
    assert_close(
        impl.clip_loss(image * stretch[0], text * stretch[1], scale),
        impl.clip_loss(image, text, scale),
        rtol=1e-10,
        atol=1e-10,
        what=f"clip_loss with each of the {N} rows multiplied by a positive number from 0.14 "
        "to 7.4 (cosine similarities ignore lengths: normalise both sides)",
    )


@pytest.mark.parametrize("scale", [1.0, 1 / TEMPERATURE, 50.0, 100.0, 400.0, 1e4])
def test_temperature_is_a_log_capped_at_100(impl, device, scale):
    image, text = features(6, 5, torch.float64, device, seed=3)
    capped = min(scale, 100.0)
    assert_close(
        impl.clip_loss(image, text, log_scale(scale, torch.float64, device)),
        expected_loss(image, text, capped),
        rtol=1e-10,
        atol=1e-10,
        what=f"clip_loss(6 pairs, logit_scale=log({scale:.4g})): the logits are the cosines "
        f"times exp(logit_scale) capped at 100, here {capped:.4g}",
    )


def test_loss_gradients_match_finite_differences(impl, device):
    image, text = features(5, 4, torch.float64, device, seed=7)
    scale = log_scale(20.0, torch.float64, device)
    inputs = [t.clone().requires_grad_() for t in (image, text, scale)]
    loss = impl.clip_loss(*inputs)
    check_scalar(loss, "clip_loss(5 pairs of 4 features, logit_scale=log(20))")
    if not loss.requires_grad:
        fail(
            "clip_loss returned a loss without a gradient: keep the computation in torch "
            "operations on the inputs (no .item(), no numpy, no torch.tensor(...) re-wrapping)"
        )
    try:
        torch.autograd.gradcheck(impl.clip_loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    except GradcheckError as err:
        fail(
            "clip_loss: the gradients with respect to image_features, text_features and "
            f"logit_scale disagree with finite differences:\n{str(err)[:600]}"
        )


def model(impl, embed_dim=8):
    return impl.CLIP(impl.ImageEncoder(), impl.TextEncoder(), embed_dim=embed_dim)


def test_model_layout_and_initial_temperature(impl, device):
    torch.manual_seed(0)
    clip = model(impl, embed_dim=8).to(device)
    for name, n_in in [("image_projection", 32), ("text_projection", 32)]:
        layer = getattr(clip, name, None)
        if not isinstance(layer, torch.nn.Linear) or tuple(layer.weight.shape) != (8, n_in):
            fail(
                f"CLIP(ImageEncoder(), TextEncoder(), embed_dim=8).{name} should be an "
                f"nn.Linear({n_in}, 8, bias=False); found {layer!r}"
            )
        if layer.bias is not None:
            fail(f"CLIP.{name} should have no bias (CLIP's projections are plain matrices)")
    scale = getattr(clip, "logit_scale", None)
    if not isinstance(scale, torch.nn.Parameter) or scale.dim() != 0:
        fail(
            "CLIP.logit_scale should be a 0-dim nn.Parameter (learned with the rest); found "
            f"{scale!r}"
        )
    if not any(p is scale for p in clip.parameters()):
        fail("CLIP.logit_scale is not among model.parameters(): the optimiser would not learn it")
    expected = math.log(1 / TEMPERATURE)
    if abs(scale.item() - expected) > 1e-6:
        fail(
            f"CLIP.logit_scale starts at {scale.item():.6g}; it stores log(1 / temperature) with "
            f"the paper's temperature 0.07: log(1 / 0.07) = {expected:.6f}"
        )


def test_encoders_project_into_the_shared_space(impl, device):
    torch.manual_seed(1)
    clip = model(impl, embed_dim=8).to(device)
    g = torch.Generator().manual_seed(2)
    names = [impl.COMBINATIONS[i] for i in torch.randint(36, (5,), generator=g)]
    images = impl.draw_images(names, g).to(device)
    captions = impl.draw_captions(names, g)
    with torch.no_grad():
        assert_close(
            clip.encode_image(images),
            clip.image_projection(clip.image_encoder(images)),
            what=f"CLIP.encode_image({describe(images=images)}): image_projection of the image "
            "encoder's features, not normalised",
        )
        assert_close(
            clip.encode_text(captions),
            clip.text_projection(clip.text_encoder(captions)),
            what=f"CLIP.encode_text({len(captions)} captions): text_projection of the text "
            "encoder's features, not normalised",
        )


def prompt_table(C, T, d, dtype, device, seed):
    """Class names, templates, and a fake text encoder that looks each prompt up in a table of
    random embeddings (norms from 0.05 to 20, so that lengths matter unless normalised)."""
    names = [f"class{c}" for c in range(C)]
    templates = [f"template {t} of a {{}}." for t in range(T)]
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(C, T, d, generator=g, dtype=dtype)
    table = table * (6 * torch.rand(C, T, 1, generator=g, dtype=dtype) - 3).exp()
    table = table.to(device)
    rows = {t.format(n): table[c, i] for c, n in enumerate(names) for i, t in enumerate(templates)}

    def encode_text(texts):
        return torch.stack([rows[t] for t in texts])

    return names, templates, encode_text, table


@pytest.mark.parametrize("dtype", DTYPES)
@given(C=st.integers(1, 6), T=st.integers(1, 5), d=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_zero_shot_classifier_matches_the_formula(impl, device, dtype, C, T, d, seed):
    names, templates, encode_text, table = prompt_table(C, T, d, dtype, device, seed)
    expected = F.normalize(F.normalize(table, dim=-1).mean(1), dim=-1)
    rtol, atol = TOL[dtype]
    assert_close(
        impl.zero_shot_classifier(names, templates, encode_text),
        expected,
        rtol=rtol,
        atol=atol,
        what=f"zero_shot_classifier({C} class names, {T} templates, encode_text -> {d} features "
        "per prompt)",
    )


@given(C=st.integers(1, 6), T=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_every_prompt_counts_the_same(impl, device, C, T, seed):
    names, templates, encode_text, _ = prompt_table(C, T, 6, torch.float64, device, seed)

    def loud_first_template(texts):  # the first template's embeddings 1000 times longer
        out = encode_text(texts)
        loud = torch.tensor([t.startswith("template 0 ") for t in texts], device=device)
        return torch.where(loud[:, None], 1000 * out, out)

    assert_close(
        impl.zero_shot_classifier(names, templates, loud_first_template),
        impl.zero_shot_classifier(names, templates, encode_text),
        rtol=1e-10,
        atol=1e-10,
        what=f"zero_shot_classifier({C} classes, {T} templates) with the first template's "
        "embeddings made 1000 times longer (normalise each prompt's embedding before the mean)",
    )


@given(C=st.integers(1, 6), T=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_classifier_rows_have_unit_length(impl, device, C, T, seed):
    names, templates, encode_text, _ = prompt_table(C, T, 6, torch.float64, device, seed)
    classifier = impl.zero_shot_classifier(names, templates, encode_text)
    if not isinstance(classifier, torch.Tensor) or tuple(classifier.shape) != (C, 6):
        shape = tuple(classifier.shape) if isinstance(classifier, torch.Tensor) else classifier
        fail(f"zero_shot_classifier({C} classes, 6 features) returned {shape}; expected (C, 6)")
    assert_close(
        classifier.norm(dim=-1),
        torch.ones(C, dtype=torch.float64, device=device),
        rtol=1e-10,
        atol=1e-10,
        what=f"the row lengths of zero_shot_classifier({C} classes, {T} templates) (a mean of "
        "unit vectors is shorter than 1: normalise it again)",
    )


@given(B=st.integers(1, 20), C=st.integers(1, 8), d=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_zero_shot_predict_picks_the_nearest_class(impl, device, B, C, d, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, d, generator=g, dtype=torch.float64)
    images = images * (4 * torch.rand(B, 1, generator=g, dtype=torch.float64) - 2).exp()
    classifier = F.normalize(torch.randn(C, d, generator=g, dtype=torch.float64), dim=-1)
    images, classifier = images.to(device), classifier.to(device)
    expected = F.cosine_similarity(images[:, None], classifier[None], dim=-1).argmax(-1)
    assert_close(
        impl.zero_shot_predict(images, classifier),
        expected,
        what=f"zero_shot_predict({describe(image_features=images, classifier=classifier)}): the "
        "class of highest cosine similarity for each image, as int64",
    )


def held_out_images(impl, n, seed):
    """n images of the held-out combinations and their labels, indices into COMBINATIONS."""
    g = torch.Generator().manual_seed(seed)
    names = [impl.HELD_OUT[i] for i in torch.randint(len(impl.HELD_OUT), (n,), generator=g)]
    labels = torch.tensor([impl.COMBINATIONS.index(name) for name in names])
    return impl.draw_images(names, g), labels


def test_zero_shot_on_unseen_combinations(impl, device):
    # Deterministic: fixed seeds for the weights, the batches and the test images. The reference
    # scores 97.8% here and from 83% to 100% over 41 other training seeds: the bar of 70% leaves
    # room for a sound implementation whose rounding takes another path.
    torch.manual_seed(0)
    clip = model(impl, embed_dim=16).to(device)
    losses = impl.train(clip, steps=STEPS, generator=torch.Generator().manual_seed(0))
    images, labels = held_out_images(impl, TEST_IMAGES, seed=1)
    with torch.no_grad():
        classifier = impl.zero_shot_classifier(impl.COMBINATIONS, impl.TEMPLATES, clip.encode_text)
        predictions = impl.zero_shot_predict(clip.encode_image(images.to(device)), classifier)
    accuracy = (predictions.cpu() == labels).double().mean().item()
    if not accuracy >= TARGET_ACCURACY:
        fail(
            f"after {STEPS} training steps on the 30 seen combinations, the zero-shot classifier "
            f"over all 36 class names gets {accuracy:.1%} of {TEST_IMAGES} images of the 6 unseen "
            f"ones right; the bar is {TARGET_ACCURACY:.0%} (training loss {losses[0]:.3f} at the "
            f"first step, {losses[-1]:.3f} at the last)"
        )
