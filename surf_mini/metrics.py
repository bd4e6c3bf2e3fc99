"""Evaluation metrics and the matching of outputs to references (SPEC.md section 7).

Images (SURF section 5.1, Tables 1-2): PSNR and SSIM on images in [0, 1], after undoing the
halving of the averaged mixtures. Estimates are clamped to [0, 1] first, as when saving.

Matching outputs to references before scoring:
  * K outputs, K references: PIT on the metric itself (the permutation with the highest mean
    PSNR), and SSIM is scored under that same permutation.
  * M > K outputs (the MixIT separator with M = 4 on two-image mixtures), two ways:
      - "oracle grouping" (FUSS style, Wisdom et al. 2021): each output goes to one reference
        and the outputs of a reference are summed; the assignment with the lowest squared
        error over all K^M is taken. It looks at the references, so it is an upper bound on
        what the separator can deliver without them.
      - "merged": ``mixit.merge_outputs`` reduces the M outputs to K without looking at any
        reference (what SURF's teacher feeds the student), then PIT as above.

Audio metrics (SI-SDR, PESQ, ESTOI, FUSS multi-source scores) join this module with the
audio pipeline.
"""
from __future__ import annotations

import itertools

import torch

from .mixit import merge_outputs
from .pit import apply_permutation, solve_assignment


def _check_images(est: torch.Tensor, ref: torch.Tensor) -> None:
    if est.shape != ref.shape or est.dim() < 3:
        raise ValueError(f"est and ref must have the same shape [..., C, H, W], "
                         f"got {tuple(est.shape)} and {tuple(ref.shape)}")


def psnr(est: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0,
         max_db: float = 100.0) -> torch.Tensor:
    """Peak signal-to-noise ratio 10 log10(range^2 / MSE) per image.

    est, ref: [..., C, H, W] -> [...] in dB. Identical images give ``max_db`` (not inf), so
    means stay finite.
    """
    _check_images(est, ref)
    mse = (est - ref).pow(2).flatten(-3).mean(-1)
    floor = data_range ** 2 * 10 ** (-max_db / 10)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(floor))


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(est: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels.

    est, ref: [..., C, H, W] -> [...]. Gaussian window 11x11, sigma 1.5, constants
    C1 = (k1 L)^2, C2 = (k2 L)^2, statistics over "valid" windows only (no padding), as in
    the reference MATLAB code and TensorFlow's tf.image.ssim.
    """
    _check_images(est, ref)
    lead, (C, H, W) = est.shape[:-3], est.shape[-3:]
    if H < window or W < window:
        raise ValueError(f"images of {H}x{W} are smaller than the {window}x{window} SSIM window")
    x, y = est.reshape(-1, 1, H, W), ref.reshape(-1, 1, H, W)          # every channel alone
    g = _gaussian_window(window, sigma, est.dtype, est.device)

    def blur(z: torch.Tensor) -> torch.Tensor:                          # separable Gaussian
        z = torch.nn.functional.conv2d(z, g.view(1, 1, 1, -1))
        return torch.nn.functional.conv2d(z, g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).reshape(*lead, C).mean(-1)


def to_images(halved: torch.Tensor) -> torch.Tensor:
    """Undo the halving of averaged mixtures' sources and clamp to the image range [0, 1]."""
    return (2 * halved).clamp(0.0, 1.0)


def match_by_psnr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PIT on PSNR: ``est`` rearranged so that output k faces reference k.

    est, ref: [B, K, C, H, W] images in [0, 1] -> est permuted, [B, K, C, H, W].
    """
    K = est.shape[1]
    e, r = torch.broadcast_tensors(est[:, :, None], ref[:, None, :])    # [B, K(est), K(ref), C, H, W]
    scores = psnr(e, r)                                                # [B, K(est), K(ref)]
    perm = solve_assignment(-scores.transpose(1, 2))                   # [B, K]: ref k <- est perm[k]
    return apply_permutation(est, perm)


def oracle_grouping(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Sum the M outputs into K groups, one per reference, with the best of all K^M assignments.

    est: [B, M, *S], ref: [B, K, *S] (same scale) -> [B, K, *S]. FUSS-style matching for
    over-separating models; it uses the references, so it is an oracle.
    """
    B, M = est.shape[:2]
    K = ref.shape[1]
    routes = torch.tensor(list(itertools.product(range(K), repeat=M)), device=est.device)  # [K^M, M]
    onehot = torch.nn.functional.one_hot(routes, K).to(est.dtype)      # [A, M, K]
    x, r = est.flatten(2), ref.flatten(2)                               # [B, M, D], [B, K, D]
    # ||sum_m W_mk x_m - r_k||^2 from Gram statistics, for every assignment at once.
    gram = torch.bmm(x, x.transpose(1, 2))                              # [B, M, M]
    cross = torch.bmm(x, r.transpose(1, 2))                             # [B, M, K]
    err = (torch.einsum("amk,bmn,ank->ba", onehot, gram, onehot)
           - 2 * torch.einsum("amk,bmk->ba", onehot, cross))            # [B, A] (+ ||r||^2)
    best = onehot[err.argmin(1)]                                        # [B, M, K]
    return torch.einsum("bmk,bmd->bkd", best, x).reshape(B, K, *est.shape[2:])


def image_scores(est: torch.Tensor, sources: torch.Tensor, grouping: str = "merged") -> dict:
    """PSNR / SSIM of separated images against the references, after matching.

    est: [B, M, C, H, W] and sources [B, K, C, H, W], both on the halved scale of the
    mixtures. M > K is reduced with ``grouping`` ("merged" or "oracle", see the module
    docstring). Returns per-image tensors ``{"psnr": [B, K], "ssim": [B, K]}``.
    """
    K = sources.shape[1]
    if est.shape[1] > K:
        if grouping == "oracle":
            est = oracle_grouping(est, sources)
        elif grouping == "merged":
            est = merge_outputs(est, K)
        else:
            raise ValueError(f"grouping must be 'merged' or 'oracle', got {grouping!r}")
    elif est.shape[1] < K:
        raise ValueError(f"{est.shape[1]} outputs cannot be matched to {K} references")
    ref = to_images(sources)
    est = match_by_psnr(to_images(est), ref)
    return {"psnr": psnr(est, ref), "ssim": ssim(est, ref)}
