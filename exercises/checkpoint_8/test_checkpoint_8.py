"""Checkpoint 8, "the top of the ladder": your diffusion pieces learn a 2-D distribution and sample
it, and your CLIP pieces name colour-shape combinations they never saw.

Run `pytest exercises/checkpoint_8`. Every piece comes from your own exercises (`load_impl`), so
this passes once they all work; the first four specs referee the pieces without training, so that
a failure says which one to look at, the last two train.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graders.checks import assert_close, fail

PIECES = ("diffusion", "clip")
T, SAMPLE_STEPS = 100, 50  # diffusion steps (Ho et al.'s linear schedule, rescaled) and DDIM's
MIXTURE_BAR = 0.06  # the exact denoiser's samples: 0.03 to 0.04; two fresh samples, 0.03
MOONS_BAR = (
    0.12  # two fresh samples of the moons are 0.03 apart, the reference 0.07, a Gaussian 0.2
)
CLIP_STEPS, TEST_IMAGES, TARGET_ACCURACY = 300, 600, 0.75


@pytest.fixture(scope="module")
def own(load_impl):
    return SimpleNamespace(**{name: load_impl(name) for name in PIECES})


# ---------------------------------------------------------------------------- diffusion glue


def schedule(own):
    """Your Schedule of your linear schedule over T steps."""
    return own.diffusion.Schedule(own.diffusion.linear_beta_schedule(T))


def mmd(x, y, bandwidth=0.3):
    """The kernel distance of two samples: sqrt of the (biased) squared MMD, Gaussian kernel."""
    xy = torch.cat([x, y]).double()
    k = torch.exp(-torch.cdist(xy, xy).square() / (2 * bandwidth**2))
    n = len(x)
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).clamp(min=0).sqrt().item()


# Three Gaussians in the plane: weights, centres, spreads.
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
CENTRES = torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]], dtype=torch.float64)
SPREADS = torch.tensor([0.4, 0.3, 0.5], dtype=torch.float64)


def mixture(n, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return (
        CENTRES[k] + SPREADS[k, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    ).float()


def mixture_denoiser(betas):
    """The exact E[noise | x_t] for data from the mixture: the best model there can be."""
    alpha_bars = torch.cumprod(1 - betas.double(), 0)

    def model(x, t):
        a = alpha_bars[t][:, None, None]  # (B, 1, 1)
        var = a * SPREADS[None, :, None] ** 2 + 1 - a  # (B, K, 1): x_t's variance per component
        d = x.double()[:, None, :] - a.sqrt() * CENTRES[None]  # (B, K, 2)
        logits = WEIGHTS.log() - d.square().sum(-1) / (2 * var[..., 0]) - var[..., 0].log()
        resp = torch.softmax(logits, dim=1)[..., None]
        x0 = (resp * (CENTRES + a.sqrt() * SPREADS[None, :, None] ** 2 * d / var)).sum(1)
        return ((x.double() - a[:, 0].sqrt() * x0) / (1 - a[:, 0]).sqrt()).to(x.dtype)

    return model


def sample_mixture(own, n, seed):
    """n samples from the exact mixture denoiser by each of your samplers: DDIM (eta = 0,
    SAMPLE_STEPS steps) and DDPM (x_T, then p_sample at every step)."""
    s = schedule(own)
    model = mixture_denoiser(s.betas)
    ddim = own.diffusion.ddim_sample(
        model, (n, 2), s, SAMPLE_STEPS, 0.0, torch.Generator().manual_seed(seed)
    )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 2, generator=g)
    for t in reversed(range(T)):
        x = own.diffusion.p_sample(model, x, t, s, g)
    return {"ddim": ddim, "ddpm": x}


class Denoiser(nn.Module):
    """A small MLP noise guesser: x (B, 2) and t (B,) in, noise (B, 2) out, with sines and cosines
    of x and of t / T at four frequencies as extra inputs."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(4))
        self.net = nn.Sequential(
            nn.Linear(2 * 9 + 8, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x, t):
        ux = (x[..., None] * self.freqs).flatten(1)
        ut = (t.to(x.dtype) / T * math.pi)[:, None] * self.freqs
        return self.net(torch.cat([x, ux.sin(), ux.cos(), ut.sin(), ut.cos()], dim=1))


def train_and_sample(own, data, n_samples, seed, steps=600, lr=1e-2, batch_size=512):
    """Your ddpm_loss trains a Denoiser on data (N, 2) with Adam (cosine-decayed learning rate);
    your ddim_sample draws n_samples. Returns the samples and the last loss."""
    s = schedule(own)
    torch.manual_seed(seed)
    model = Denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows = torch.randint(0, len(data), (batch_size,), generator=g)
        loss = own.diffusion.ddpm_loss(model, data[rows], s, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(seed + 1)
    samples = own.diffusion.ddim_sample(model, (n_samples, 2), s, SAMPLE_STEPS, 0.0, g)
    return samples, loss.item()


def moons(n, seed):
    """Two interleaved half circles, a little blurred."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, u.cos(), 1 - u.cos())
    y = torch.where(upper, u.sin(), 0.5 - u.sin())
    return 1.6 * torch.stack([x - 0.5, y - 0.25], 1) + 0.08 * torch.randn(n, 2, generator=g)


# ---------------------------------------------------------------------------- CLIP glue


def train_clip(own, seed, steps=CLIP_STEPS, lr=5e-3, weight_decay=0.5):
    """Your CLIP (tiny given encoders, embed_dim 16) trained with your clip_loss by AdamW: each
    step shows the 30 seen colour-shape combinations once, with random captions."""
    clip = own.clip
    torch.manual_seed(seed)
    model = clip.CLIP(clip.ImageEncoder(), clip.TextEncoder(), embed_dim=16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        names = [clip.SEEN[i] for i in torch.randperm(len(clip.SEEN), generator=g)]
        images, captions = clip.draw_images(names, g), clip.draw_captions(names, g)
        loss = clip.clip_loss(
            model.encode_image(images), model.encode_text(captions), model.logit_scale
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, loss.item()


def held_out_images(own, n, seed):
    """n images of the combinations never shown in training, and their labels in COMBINATIONS."""
    clip = own.clip
    g = torch.Generator().manual_seed(seed)
    names = [clip.HELD_OUT[i] for i in torch.randint(len(clip.HELD_OUT), (n,), generator=g)]
    return clip.draw_images(names, g), torch.tensor([clip.COMBINATIONS.index(x) for x in names])


def predict(own, model, images):
    """Zero-shot: the class among all 36 combinations, each named by your prompt ensemble."""
    clip = own.clip
    with torch.no_grad():
        classifier = clip.zero_shot_classifier(clip.COMBINATIONS, clip.TEMPLATES, model.encode_text)
        return clip.zero_shot_predict(model.encode_image(images), classifier)


# ---------------------------------------------------------------------------- the referees


def test_your_samplers_draw_a_known_mixture(own):
    reference = mixture(2000, seed=2)
    for sampler, samples in sample_mixture(own, 2000, seed=1).items():
        distance = mmd(samples, reference)
        if not distance < MIXTURE_BAR:
            how = "ddim_sample (eta = 0)" if sampler == "ddim" else "x_T and p_sample at every step"
            fail(
                f"given the exact denoiser of a mixture of three Gaussians, your {how} lands at "
                f"kernel distance {distance:.3f} from the mixture; the bar is {MIXTURE_BAR}. Look "
                "at linear_beta_schedule, Schedule and the sampler (ladder check diffusion)"
            )


def test_your_ddpm_loss_scores_the_exact_denoiser(own):
    # Data N(0, s^2 I) in the plane: the best noise guess is sqrt(1 - a) x_t / (a s^2 + 1 - a),
    # with a = alpha_bar_t, and its squared error has mean v_t = a s^2 / (a s^2 + 1 - a) per value.
    # Over B examples of 2 values with uniform t, the loss has mean E[v] and variance
    # (E[v^2] (1 + 2/2) - E[v]^2) / B; 6 of its standard deviations fail a correct ddpm_loss
    # with chance below 2e-9.
    B, spread = 20_000, 0.5
    s = schedule(own)
    a = torch.cumprod(1 - own.diffusion.linear_beta_schedule(T).double(), 0)
    v = a * spread**2 / (a * spread**2 + 1 - a)
    mean, sd = v.mean().item(), math.sqrt(((v**2).mean() * 2 - v.mean() ** 2).item() / B)

    def best(x, t):
        at = a[t].to(x.dtype)[:, None]
        return (1 - at).sqrt() * x / (at * spread**2 + 1 - at)

    x0 = spread * torch.randn(B, 2, generator=torch.Generator().manual_seed(3))
    loss = float(own.diffusion.ddpm_loss(best, x0, s, torch.Generator().manual_seed(4)))
    if abs(loss - mean) > 6 * sd:
        fail(
            f"your ddpm_loss gives the exact denoiser of N(0, {spread}^2 I) a loss of {loss:.4f} "
            f"on {B} examples; the mean of its squared error over uniform steps is {mean:.4f} "
            f"(within {6 * sd:.4f}). Look at q_sample and ddpm_loss (ladder check diffusion)"
        )


def test_your_clip_loss_is_the_symmetric_cross_entropy(own):
    g = torch.Generator().manual_seed(5)
    images, texts = torch.randn(12, 16, generator=g), torch.randn(12, 16, generator=g)
    logit_scale = torch.tensor(math.log(20.0))
    logits = 20.0 * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    target = torch.arange(12)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert_close(
        own.clip.clip_loss(images, texts, logit_scale).detach(),
        expected,
        rtol=1e-5,
        atol=1e-6,
        what="your clip_loss on 12 pairs at temperature 1/20 (the mean of the cross-entropies "
        "of images over texts and texts over images, on cosine similarities); ladder check clip",
    )


def test_your_zero_shot_classifier_ensembles_prompts(own):
    clip = own.clip
    prompts = [t.format(name) for name in clip.COMBINATIONS for t in clip.TEMPLATES]
    g = torch.Generator().manual_seed(6)
    table = dict(zip(prompts, torch.randn(len(prompts), 8, generator=g).exp(), strict=True))

    def encode_text(texts):  # a made-up text encoder: a fixed vector per prompt
        return torch.stack([table[text] for text in texts])

    classifier = clip.zero_shot_classifier(clip.COMBINATIONS, clip.TEMPLATES, encode_text)
    rows = [F.normalize(encode_text([t.format(n) for t in clip.TEMPLATES]), dim=-1).mean(0)
            for n in clip.COMBINATIONS]  # fmt: skip
    assert_close(
        classifier,
        F.normalize(torch.stack(rows), dim=-1),
        rtol=1e-5,
        atol=1e-6,
        what="your zero_shot_classifier over the 36 combinations and the 6 templates (the "
        "normalised mean of each class's normalised prompt embeddings); ladder check clip",
    )
    images = torch.randn(50, 8, generator=g)
    expected = (F.normalize(images, dim=-1) @ F.normalize(classifier, dim=-1).T).argmax(-1)
    assert_close(
        clip.zero_shot_predict(images, classifier),
        expected,
        what="your zero_shot_predict on 50 images and 36 classes: the class of highest cosine "
        "similarity per image; ladder check clip",
    )


# ---------------------------------------------------------------------------- the tasks


def test_a_diffusion_model_learns_two_moons(own):
    samples, loss = train_and_sample(own, moons(20_000, seed=7), 2000, seed=8)
    distance = mmd(samples, moons(2000, seed=9))
    if not distance < MOONS_BAR:
        fail(
            f"a denoiser trained 600 steps with your ddpm_loss and sampled with your ddim_sample "
            f"({SAMPLE_STEPS} steps, eta = 0) lands at kernel distance {distance:.3f} from the "
            f"two moons; the bar is {MOONS_BAR} (last training loss {loss:.3f})"
        )


def test_clip_names_unseen_combinations_zero_shot(own):
    model, loss = train_clip(own, seed=10)
    images, labels = held_out_images(own, TEST_IMAGES, seed=11)
    accuracy = (predict(own, model, images) == labels).double().mean().item()
    if not accuracy >= TARGET_ACCURACY:
        fail(
            f"after {CLIP_STEPS} steps on the 30 seen combinations, your zero-shot classifier "
            f"over all 36 names gets {accuracy:.1%} of {TEST_IMAGES} images of the 6 unseen "
            f"ones right; the bar is {TARGET_ACCURACY:.0%} (last training loss {loss:.3f})"
        )
