"""Sharpness of separated digits, measured offline: a small MNIST classifier as the feature net.

SURF Table 1 scores separated images with FID (Heusel et al. 2017), the Fréchet distance
between Gaussians fitted to Inception-v3 features of generated and real images. The Inception
weights cannot be downloaded here, so this module gives two offline stand-ins built on a small
CNN trained on MNIST's labelled training split (``prepare/mnist_classifier.py`` builds the
shipped ``surf_mini/assets/mnist_classifier.pt``):

  * ``"fd"``: the same Fréchet distance (Heusel et al. 2017, FID, eq. (6)), computed on this
    network's 128-d penultimate features instead of Inception's 2048-d pool features. It is
    NOT Inception FID: its numbers are on another scale and are not comparable to the paper's
    figure, only to each other (same classifier, same number of images). Like FID it is biased
    upward at small sample sizes (Chong and Forsyth 2020), so compare runs at equal N K.
  * ``"cls_agree"``: the fraction of separated digits the classifier puts in the class it puts
    their reference in. It needs no labels, which is the point: the data pipeline keeps the
    source images of a mixture but not their digit labels (``data.test_mixtures``). A blurred
    or two-digit ghost of a "3" tends to be read as something else; a crisp one is not.

Shapes: images are [N, 1, 28, 28] in [0, 1] (clamped on the way in, as when saving); separated
and reference sets are [N, K, 1, 28, 28], already matched (est[:, k] estimates ref[:, k], the
output of ``metrics.match_images``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import nn

from .checkpoints import load_network, read_checkpoint

KIND = "surf_mini.classifier"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                            "mnist_classifier.pt")
BUILD_HINT = "python prepare/mnist_classifier.py"


@dataclass
class ClassifierConfig:
    """Architecture of ``MNISTClassifier``; travels inside its checkpoint (``dataclasses.asdict``).

    conv1, conv2: channels of the two 3x3 convolutions (no padding, each followed by ReLU and a
                  2x2 max-pool: 28 -> 26 -> 13 -> 11 -> 5).
    features:     width of the penultimate linear layer, the features ``frechet_distance`` sees.
    num_classes:  10 digits.
    image_size:   H = W of the input (28 for MNIST).
    """
    conv1: int = 32
    conv2: int = 64
    features: int = 128
    num_classes: int = 10
    image_size: int = 28

    def flat_size(self) -> int:
        side = ((self.image_size - 2) // 2 - 2) // 2
        if side < 1:
            raise ValueError(f"image_size {self.image_size} is too small for two conv/pool stages")
        return self.conv2 * side * side


class MNISTClassifier(nn.Module):
    """conv -> ReLU -> pool -> conv -> ReLU -> pool -> linear (features) -> ReLU -> linear (logits)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = c = config or ClassifierConfig()
        self.body = nn.Sequential(
            nn.Conv2d(1, c.conv1, 3), nn.ReLU(), nn.MaxPool2d(2),        # [N, 32, 13, 13]
            nn.Conv2d(c.conv1, c.conv2, 3), nn.ReLU(), nn.MaxPool2d(2),  # [N, 64, 5, 5]
            nn.Flatten(), nn.Linear(c.flat_size(), c.features))          # [N, 128]
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(c.features, c.num_classes))  # [N, 10]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] -> [N, 128], taken before the ReLU: a ReLU'd unit that is dead on a
        whole set has zero variance, which makes the covariance of the Fréchet distance singular."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))                                    # logits [N, 10]


def load_classifier(path: str = DEFAULT_PATH, device: str | torch.device = "cpu") -> MNISTClassifier:
    """The classifier of a ``surf_mini.classifier`` checkpoint, in eval mode, frozen, on ``device``.

    Read with the safe loader (``checkpoints.read_checkpoint``: tensors and plain data only);
    a missing, corrupt, foreign or ill-fitting file is a one-line SystemExit.
    """
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path!r} not found (build it with {BUILD_HINT})")
    ckpt = read_checkpoint(path, KIND, "classifier")
    net = load_network(path, ckpt, lambda c: MNISTClassifier(ClassifierConfig(**c["config"])),
                       "weights")
    return net.eval().requires_grad_(False).to(device)


def _check_digits(images: torch.Tensor, net: MNISTClassifier) -> None:
    size = net.config.image_size
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, size, size):
        raise ValueError(f"images must be [N, 1, {size}, {size}], got {tuple(images.shape)}")


@torch.no_grad()
def _embed(net: MNISTClassifier, images: torch.Tensor, batch: int = 500):
    """(features [N, 128], predicted classes [N]) on the CPU, ``batch`` images at a time."""
    _check_digits(images, net)
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    feats, preds = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device, torch.float32).clamp(0, 1)    # [b, 1, 28, 28]
        f = net.features(x)                                               # [b, 128]
        feats.append(f.cpu())
        preds.append(net.head(f).argmax(1).cpu())                         # [b]
    net.train(was_training)
    if not feats:
        return torch.zeros(0, net.config.features), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(preds)


def features(net: MNISTClassifier, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Penultimate features of digits: [N, 1, 28, 28] in [0, 1] -> [N, 128] (CPU, float32)."""
    return _embed(net, images, batch)[0]


def predict(net: MNISTClassifier, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Predicted digit classes: [N, 1, 28, 28] in [0, 1] -> [N] (CPU, int64)."""
    return _embed(net, images, batch)[1]


def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N_a, D] and [N_b, D].

    Heusel et al. 2017, FID, eq. (6):
        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}),
    with unbiased (N - 1) covariances, in float64. The matrix square root is scipy's
    (``scipy.linalg.sqrtm``); rounding can leave it a tiny imaginary part, which is dropped, and
    when S_a S_b is too singular for it to be finite, eps I is added to both covariances first
    (what the reference FID implementations do). For 1-D Gaussians it reduces to
    (mu_a - mu_b)^2 + (s_a - s_b)^2.

    Example:
        >>> a = torch.tensor([[0.0], [2.0]])            # mean 1, s = sqrt(2)
        >>> round(frechet_distance(a, a), 6)
        0.0
        >>> round(frechet_distance(a, a + 3), 6)        # shifted by 3: (1 - 4)^2
        9.0
    """
    if feat_a.dim() != 2 or feat_b.dim() != 2 or feat_a.shape[1] != feat_b.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D, got {tuple(feat_a.shape)} "
                         f"and {tuple(feat_b.shape)}")
    if len(feat_a) < 2 or len(feat_b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 feature vectors per set")
    a = feat_a.detach().cpu().double().numpy()
    b = feat_b.detach().cpu().double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)                                     # [D]
    s_a = np.atleast_2d(np.cov(a, rowvar=False))                          # [D, D]
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(len(s_a))
        covmean = scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)
    return float(max(d2, 0.0))          # rounding can leave -1e-12 for identical sets


def image_feature_scores(est: torch.Tensor, ref: torch.Tensor, net: MNISTClassifier,
                         real: torch.Tensor | None = None, batch: int = 500) -> dict:
    """Classifier agreement and feature Fréchet distance of matched separated digits.

    est, ref: [N, K, 1, 28, 28] in [0, 1], already matched (est[:, k] estimates ref[:, k]; what
    ``metrics.match_images`` returns). real: [M, 1, 28, 28] real digits the separated ones are
    compared with, default the N K references themselves (the paper's FID compares with the
    references too).

    Returns ``{"cls_agree": float, "fd": float}``:
      cls_agree  mean over the N K separated digits of [predict(est) == predict(ref)], in [0, 1];
                 no labels needed (the pipeline does not keep them).
      fd         ``frechet_distance(features(est), features(real))`` over the N K separated
                 digits; not Inception FID, not comparable to the paper's number.
    """
    if est.shape != ref.shape or est.dim() != 5:
        raise ValueError(f"est and ref must be matched [N, K, 1, H, W] sets of the same shape, "
                         f"got {tuple(est.shape)} and {tuple(ref.shape)}")
    f_est, p_est = _embed(net, est.flatten(0, 1), batch)                  # [N K, 128], [N K]
    f_ref, p_ref = _embed(net, ref.flatten(0, 1), batch)
    f_real = f_ref if real is None else features(net, real, batch)        # [M, 128]
    return {"cls_agree": (p_est == p_ref).double().mean().item(),
            "fd": frechet_distance(f_est, f_real)}
