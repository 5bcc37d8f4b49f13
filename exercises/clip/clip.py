"""CLIP, contrastive language-image pre-training (Radford et al., 2021), in miniature.

An image encoder and a text encoder are trained together so that an image and its caption land
close on the unit sphere and mismatched pairs land apart. Classifying an image then needs no
labelled training data: write each class as a caption, embed the captions, and pick the class
whose caption is nearest the image.

The kit gives the world (small images of coloured shapes with templated captions), the two tiny
encoders and the training loop; you write the loss, the model's projections and learned
temperature, and the zero-shot classifier.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CLIP",
    "ImageEncoder",
    "TextEncoder",
    "clip_loss",
    "draw_captions",
    "draw_images",
    "tokenize",
    "train",
    "zero_shot_classifier",
    "zero_shot_predict",
]

# ---------------------------------------------------------------------------------------------
# The world: six colours times six shapes. Six combinations are never shown during training; the
# zero-shot test asks for them by name.

COLOURS = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "magenta": (0.9, 0.1, 0.9),
    "cyan": (0.1, 0.9, 0.9),
}
SHAPES = ("circle", "square", "triangle", "cross", "bar", "ring")
COMBINATIONS = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)  # 36 classes
# One combination per colour and per shape, so every word is still seen in training.
HELD_OUT = ("red square", "green triangle", "blue cross", "yellow bar", "magenta ring",
            "cyan circle")  # fmt: skip
SEEN = tuple(name for name in COMBINATIONS if name not in HELD_OUT)  # 30 training classes
# Caption templates: training captions and zero-shot prompts both fill "{}" with a class name.
TEMPLATES = ("a {}.", "a photo of a {}.", "a drawing of a {}.", "a small {}.",
             "a picture of the {}.", "the {}.")  # fmt: skip
VOCAB = ("<pad>", "<unk>", "a", "drawing", "of", "photo", "picture", "small", "the",
         *COLOURS, *SHAPES)  # fmt: skip
CONTEXT = 8  # tokens per caption; longer captions are cut
IMAGE_SIZE = 16


def draw_images(names: Sequence[str], generator: torch.Generator | None = None) -> Tensor:
    """One image per class name ("red circle"): a float32 tensor (len(names), 3, 16, 16).

    Each shape is drawn on black at a random position (within 1.5 pixels of the centre), with a
    random radius (4.5 to 6 pixels) and brightness (0.7 to 1 of its colour), from `generator`.
    """
    n = len(names)
    colour = torch.tensor([COLOURS[name.split()[0]] for name in names]).view(n, 3, 1, 1)
    shape = torch.tensor([SHAPES.index(name.split()[1]) for name in names])
    centre = (IMAGE_SIZE - 1) / 2 + 3 * torch.rand(n, 2, 1, 1, generator=generator) - 1.5
    r = 4.5 + 1.5 * torch.rand(n, 1, 1, generator=generator)
    brightness = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    dy, dx = grid.view(1, -1, 1) - centre[:, 0], grid.view(1, 1, -1) - centre[:, 1]
    ady, adx, dist = dy.abs(), dx.abs(), (dx**2 + dy**2).sqrt()
    masks = torch.stack(  # (n, 6, 16, 16), in the order of SHAPES
        [
            dist <= r,
            torch.maximum(adx, ady) <= 0.8 * r,
            (dy <= 0.6 * r) & (adx <= 0.65 * (dy + r)),
            ((adx <= 0.3 * r) & (ady <= r)) | ((ady <= 0.3 * r) & (adx <= r)),
            (adx <= r) & (ady <= 0.35 * r),
            (dist <= r) & (dist >= 0.55 * r),
        ],
        dim=1,
    )
    mask = masks[torch.arange(n), shape].unsqueeze(1)
    return mask * colour * brightness


def draw_captions(names: Sequence[str], generator: torch.Generator | None = None) -> list[str]:
    """One caption per class name, each from a random template: "a photo of a red ring."."""
    picks = torch.randint(len(TEMPLATES), (len(names),), generator=generator)
    return [TEMPLATES[i].format(name) for i, name in zip(picks.tolist(), names, strict=True)]


@cache
def _token_ids(text: str) -> tuple[int, ...]:
    words = re.findall(r"[a-z]+", text.lower())[:CONTEXT]
    ids = [VOCAB.index(w) if w in VOCAB else 1 for w in words]
    return tuple(ids) + (0,) * (CONTEXT - len(ids))


def tokenize(texts: Sequence[str]) -> Tensor:
    """Word ids, int64 (len(texts), 8): lower-cased words of VOCAB, 1 for others, 0 pads."""
    return torch.tensor([_token_ids(t) for t in texts], dtype=torch.long).view(-1, CONTEXT)


class ImageEncoder(nn.Module):
    """A tiny image encoder, a two-layer perceptron over the pixels (CLIP used a ResNet or a ViT).

    Shapes: images (B, 3, 16, 16) -> features (B, out_features).
    """

    def __init__(self, hidden: int = 256, out_features: int = 32) -> None:
        super().__init__()
        self.out_features = out_features
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * IMAGE_SIZE**2, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class TextEncoder(nn.Module):
    """A tiny text encoder: the mean of the word embeddings, then a two-layer perceptron (CLIP
    used a Transformer over byte-pair tokens).

    Shapes: texts, a list of B strings -> features (B, out_features).
    """

    def __init__(self, width: int = 32, out_features: int = 32) -> None:
        super().__init__()
        self.out_features = out_features
        self.embed = nn.Embedding(len(VOCAB), width, padding_idx=0)
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids = tokenize(texts).to(self.embed.weight.device)
        words = (ids != 0).unsqueeze(-1).to(self.embed.weight.dtype)
        mean = (self.embed(ids) * words).sum(1) / words.sum(1).clamp(min=1)
        return self.net(mean)


# ---------------------------------------------------------------------------------------------
# Your part.


class CLIP(nn.Module):
    """The two encoders, each followed by a linear projection (no bias) into a shared embedding
    space of embed_dim, and the learned temperature.

    Attributes: image_encoder, text_encoder (as given), image_projection
    nn.Linear(image_encoder.out_features, embed_dim, bias=False), text_projection
    nn.Linear(text_encoder.out_features, embed_dim, bias=False), and logit_scale, a 0-dim
    nn.Parameter holding log(1 / temperature), initialised to log(1 / 0.07).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 16):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        # YOUR CODE HERE
        raise NotImplementedError(
            "CLIP.__init__: not implemented yet; see exercises/clip/README.md"
        )

    def encode_image(self, images: Tensor) -> Tensor:
        """Image embeddings (B, embed_dim), not normalised: the projected encoder features."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "CLIP.encode_image: not implemented yet; see exercises/clip/README.md"
        )

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Text embeddings (B, embed_dim) of B strings, not normalised."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "CLIP.encode_text: not implemented yet; see exercises/clip/README.md"
        )


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric contrastive loss over a batch of N matching (image, text) pairs.

    Shapes: image_features (N, d), text_features (N, d), logit_scale a 0-dim tensor holding
    log(1 / temperature) -> a 0-dim tensor. Row i of each is pair i. The logits are the cosine
    similarities times exp(logit_scale), capped at 100; the loss is the mean of the cross-entropy
    of each image over the N texts and of each text over the N images, the matching one being
    the target.
    """
    # YOUR CODE HERE
    raise NotImplementedError("clip_loss: not implemented yet; see exercises/clip/README.md")


def zero_shot_classifier(
    class_names: Sequence[str], templates: Sequence[str], encode_text: Callable[..., Tensor]
) -> Tensor:
    """Zero-shot classifier weights (C, d), one unit-norm row per class name.

    Each template ("a photo of a {}.") is filled with each class name; encode_text maps a list of
    strings to embeddings (len, d). A class's row is the mean of its prompts' normalised
    embeddings, normalised again (the paper's prompt ensembling).
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "zero_shot_classifier: not implemented yet; see exercises/clip/README.md"
    )


def zero_shot_predict(image_features: Tensor, classifier: Tensor) -> Tensor:
    """The class (int64, shape (B,)) whose classifier row has the highest cosine similarity with
    each image's features (B, d); classifier (C, d) as zero_shot_classifier returns it."""
    # YOUR CODE HERE
    raise NotImplementedError(
        "zero_shot_predict: not implemented yet; see exercises/clip/README.md"
    )


# ---------------------------------------------------------------------------------------------
# Training, given: each step shows every seen combination once, in a random order.


def train(
    model: CLIP,
    steps: int = 300,
    lr: float = 3e-3,
    weight_decay: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train `model` with AdamW on fresh batches of the 30 SEEN combinations; the loss per step.

    Every batch holds each seen combination once (a random template for its caption), so no two
    pairs of a batch say the same thing. Images and captions come from `generator`; the model
    stays on its device.
    """
    device = next(model.parameters()).device
    # Decay on every parameter, the temperature included: on a world this small, a temperature
    # left free sharpens onto the 30 seen combinations and generalises worse to the unseen ones.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        names = [SEEN[i] for i in torch.randperm(len(SEEN), generator=generator)]
        images = draw_images(names, generator).to(device)
        captions = draw_captions(names, generator)
        loss = clip_loss(model.encode_image(images), model.encode_text(captions), model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
