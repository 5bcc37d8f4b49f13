"""Common mistakes in CLIP, each replacing one function or method of the reference."""

import torch
import torch.nn.functional as F
from torch import nn

from graders.mutants import mutant


def _symmetric(logits):
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@mutant(
    "clip_loss",
    "the features are not normalised: the logits are dot products, not cosine similarities",
)
def dot_products(image_features, text_features, logit_scale):
    scale = logit_scale.exp().clamp(max=100)
    return _symmetric(scale * image_features @ text_features.T)


@mutant(
    "clip_loss",
    "only the image-to-text cross-entropy is taken; CLIP averages it with the text-to-image one",
)
def one_direction(image_features, text_features, logit_scale):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image_features @ text_features.T
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


@mutant(
    "clip_loss",
    "logit_scale is used as the scale itself; it stores log(1 / temperature): use its exp",
)
def scale_not_exponentiated(image_features, text_features, logit_scale):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    return _symmetric(logit_scale.clamp(max=100) * image_features @ text_features.T)


@mutant(
    "clip_loss",
    "the cosines are divided by exp(logit_scale), which is 1 / temperature: multiply by it",
)
def divided_by_scale(image_features, text_features, logit_scale):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    return _symmetric(image_features @ text_features.T / logit_scale.exp().clamp(max=100))


@mutant("clip_loss", "exp(logit_scale) is not capped at 100, as the paper caps it")
def scale_not_capped(image_features, text_features, logit_scale):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    return _symmetric(logit_scale.exp() * image_features @ text_features.T)


@mutant(
    "zero_shot_classifier",
    "the prompts' embeddings are averaged before they are normalised: long ones outweigh others",
)
def mean_before_normalising(class_names, templates, encode_text):
    rows = [encode_text([t.format(name) for t in templates]).mean(0) for name in class_names]
    return F.normalize(torch.stack(rows), dim=-1)


@mutant(
    "zero_shot_classifier",
    "the mean of the normalised prompt embeddings is not normalised again",
)
def mean_not_renormalised(class_names, templates, encode_text):
    rows = [
        F.normalize(encode_text([t.format(name) for t in templates]), dim=-1).mean(0)
        for name in class_names
    ]
    return torch.stack(rows)


@mutant("zero_shot_predict", "the argmax runs over the images (dim 0) instead of the classes")
def argmax_over_images(image_features, classifier):
    similarity = F.normalize(image_features, dim=-1) @ F.normalize(classifier, dim=-1).T
    return similarity.argmax(dim=0)


@mutant(
    "CLIP.__init__",
    "logit_scale starts at 1 / 0.07 itself; it holds the log of that: log(1 / 0.07)",
)
def scale_initialised_without_log(self, image_encoder, text_encoder, embed_dim=16):
    nn.Module.__init__(self)
    self.image_encoder, self.text_encoder = image_encoder, text_encoder
    self.image_projection = nn.Linear(image_encoder.out_features, embed_dim, bias=False)
    self.text_projection = nn.Linear(text_encoder.out_features, embed_dim, bias=False)
    self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07))
