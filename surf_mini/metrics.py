"""Evaluation metrics and the matching of outputs to references (docs/math.md, section 5).

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

Audio (SURF D.2): SI-SDR and its improvement over the mixture (Le Roux et al. 2019), PESQ
wide-band (``pesq``) and ESTOI (``pystoi``, extended=True). None of them returns NaN or raises
on silence; what each returns for a silent (all-zero) reference or estimate is stated in its
docstring. ``fuss_scores`` gives the FUSS multi-source scores (Wisdom et al. 2021, SURF D.2):
1S, 2Si-4Si and the under/equal/over separation counts.

DNSMOS P.835, the reference-free speech-quality score, is its own module (dnsmos.py, an
optional extra); ``audio_scores(..., dnsmos=True)`` adds its columns.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

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


def match_images(est: torch.Tensor, sources: torch.Tensor, grouping: str = "merged",
                 merge_rule: str = "loudest"):
    """Estimates and references as images in [0, 1], estimate k facing reference k.

    est: [B, M, C, H, W] and sources [B, K, C, H, W], both on the halved scale of the
    mixtures. M > K is reduced with ``grouping`` ("merged" with ``mixit.merge_outputs``'s
    ``merge_rule``, or "oracle", see the module docstring). Returns ``(est_images, ref_images)``, each [B, K, C, H, W].
    """
    K = sources.shape[1]
    if est.shape[1] > K:
        if grouping == "oracle":
            est = oracle_grouping(est, sources)
        elif grouping == "merged":
            est = merge_outputs(est, K, merge_rule)
        else:
            raise ValueError(f"grouping must be 'merged' or 'oracle', got {grouping!r}")
    elif est.shape[1] < K:
        raise ValueError(f"{est.shape[1]} outputs cannot be matched to {K} references")
    ref = to_images(sources)
    return match_by_psnr(to_images(est), ref), ref


def image_scores(est: torch.Tensor, sources: torch.Tensor, grouping: str = "merged",
                 merge_rule: str = "loudest") -> dict:
    """PSNR / SSIM per image after ``match_images``: ``{"psnr": [B, K], "ssim": [B, K]}``."""
    est, ref = match_images(est, sources, grouping, merge_rule)
    return {"psnr": psnr(est, ref), "ssim": ssim(est, ref)}


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------

SI_SDR_FLOOR = 1e-10        # regularizer of the cosine form: SI-SDR lies in [-100, 100] dB


def si_sdr(est: torch.Tensor, ref: torch.Tensor, zero_mean: bool = True) -> torch.Tensor:
    """Scale-invariant SDR in dB.  Le Roux et al. (2019), eq. (3); SURF D.2.

    est, ref: [..., T] -> [...]. With alpha = <est, ref> / ||ref||^2 (the optimal scale),
    ||alpha ref||^2 / ||alpha ref - est||^2 = rho^2 / (1 - rho^2), rho the cosine similarity
    of est and ref. We compute that cosine form, the robust one FUSS uses (Wisdom et al.
    2021): 10 log10((rho^2 + f) / (1 - rho^2 + f)), f = 1e-10, so the value lies in
    [-100, 100] dB and is exactly invariant to rescaling either signal.
    Silence: an all-zero estimate or reference has rho = 0 and scores -100 dB (nothing of the
    reference is recovered; a silent reference makes the metric undefined, and FUSS-style
    scoring leaves such references out). Means are removed first (``zero_mean``).
    """
    if est.shape != ref.shape:
        raise ValueError(f"est and ref must have the same shape [..., T], got "
                         f"{tuple(est.shape)} and {tuple(ref.shape)}")
    est, ref = est.double(), ref.double()          # long signals: float32 sums lose digits
    if zero_mean:
        est = est - est.mean(-1, keepdim=True)
        ref = ref - ref.mean(-1, keepdim=True)
    cross = (est * ref).sum(-1)
    energy = est.pow(2).sum(-1) * ref.pow(2).sum(-1)
    rho2 = (cross.pow(2) / energy.clamp_min(1e-300)).clamp(0.0, 1.0)   # a silent signal: cross = 0
    return (10 * torch.log10((rho2 + SI_SDR_FLOOR) / (1 - rho2 + SI_SDR_FLOOR))).float()


def si_sdr_improvement(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """SI-SDRi = SI-SDR(est, ref) - SI-SDR(mix, ref).  SURF D.2 (FUSS "KSi").

    est, ref: [B, K, T]; mix: [B, 1, T] (broadcast over K) -> [B, K].
    """
    return si_sdr(est, ref) - si_sdr(mix.expand_as(ref), ref)


def _silent(x: np.ndarray) -> bool:
    return not np.isfinite(x).all() or float(np.abs(x).max(initial=0.0)) == 0.0


PESQ_FLOOR = 1.0            # below the wide-band MOS-LQO range (about 1.04 to 4.64)


def pesq_wb(est: torch.Tensor, ref: torch.Tensor, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2) of one estimate against its reference, via ``pesq``.

    est, ref: [T] at 16 kHz (the only rate wide-band PESQ defines; resample first). Returns
    the MOS-LQO. Silence: when either signal is all-zero, or PESQ finds no utterance in the
    reference, returns ``PESQ_FLOOR`` = 1.0 (the bottom of the scale) instead of raising.
    """
    import pesq as _pesq
    if sample_rate != 16000:
        raise ValueError(f"wide-band PESQ needs 16 kHz audio, got {sample_rate} Hz; resample first")
    e, r = est.detach().cpu().double().numpy(), ref.detach().cpu().double().numpy()
    if e.shape != r.shape or e.ndim != 1:
        raise ValueError(f"est and ref must be 1-D signals of one length, got {e.shape} and {r.shape}")
    if _silent(e) or _silent(r):
        return PESQ_FLOOR
    try:
        return float(_pesq.pesq(16000, r, e, "wb"))
    except Exception:            # NoUtterancesError and friends: nothing PESQ can score
        return PESQ_FLOOR


def estoi(est: torch.Tensor, ref: torch.Tensor, sample_rate: int = 16000) -> float:
    """Extended STOI (Jensen and Taal 2016) via ``pystoi.stoi(..., extended=True)``.

    est, ref: [T] (pystoi resamples to 10 kHz itself). Returns a value in about [-1, 1].
    Silence: when either signal is all-zero, returns 0.0 (no intelligibility) instead of the
    arbitrary small number pystoi computes on frames it could not find.
    """
    import pystoi
    e, r = est.detach().cpu().double().numpy(), ref.detach().cpu().double().numpy()
    if e.shape != r.shape or e.ndim != 1:
        raise ValueError(f"est and ref must be 1-D signals of one length, got {e.shape} and {r.shape}")
    if _silent(e) or _silent(r):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # pystoi warns on very short or quiet inputs
        value = float(pystoi.stoi(r, e, sample_rate, extended=True))
    return value if np.isfinite(value) else 0.0


def _matched(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """For each reference, the index of its estimate: Hungarian on SI-SDR. est [M, T], ref [K, T]."""
    from scipy.optimize import linear_sum_assignment
    scores = si_sdr(est[:, None].expand(-1, len(ref), -1), ref[None].expand(len(est), -1, -1))  # [M, K]
    rows, cols = linear_sum_assignment(-scores.numpy())
    order = torch.empty(len(ref), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return order


def fuss_scores(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor,
                ref_silence_db: float = -60.0, est_silence_db: float = -30.0) -> dict:
    """FUSS-style scores of mixtures with 1 to K active sources.  Wisdom et al. (2021); SURF D.2.

    est: [B, M, T] separated outputs; ref: [B, K, T] references, inactive ones (padding of
    mixtures with fewer sources) all-zero or nearly so; mix: [B, 1, T]. Rules:
      * a reference is active when its power is above ``ref_silence_db`` relative to the
        mixture's; inactive references are left out of every score (SI-SDR is undefined there);
      * an estimate counts as produced (for under/equal/over) when its power is above
        ``est_silence_db`` relative to the mixture's;
      * each active reference is matched to its own estimate (Hungarian on SI-SDR; M >= K);
      * one active source ("1S"): SI-SDR of its matched estimate; n >= 2 active sources
        ("nSi"): mean SI-SDRi of the matched estimates over the mixture;
      * under / equal / over separation: produced estimates <, =, > active references.
    Returns ``{"1S", "2Si", "3Si", "4Si", ...: mean dB or None when no mixture has that many
    sources, "under", "equal", "over": fractions of mixtures, "n": {count per key}}``.
    Mixtures with no active reference are counted in ``n["silent"]`` and scored nowhere.
    ``by_count``: for each number n of active references present, its mixtures and their own
    under / equal / over fractions (SURF Table 3's per-count columns).
    """
    if est.dim() != 3 or ref.dim() != 3 or mix.shape != (est.shape[0], 1, est.shape[-1]) \
            or ref.shape[::2] != est.shape[::2]:
        raise ValueError(f"need est [B, M, T], ref [B, K, T], mix [B, 1, T]; got {tuple(est.shape)}, "
                         f"{tuple(ref.shape)}, {tuple(mix.shape)}")
    est, ref, mix = est.detach().cpu().double(), ref.detach().cpu().double(), mix.detach().cpu().double()
    p_mix = mix.pow(2).mean(-1).clamp_min(1e-20)                        # [B, 1]
    active = ref.pow(2).mean(-1) > p_mix * 10 ** (ref_silence_db / 10)  # [B, K]
    produced = (est.pow(2).mean(-1) > p_mix * 10 ** (est_silence_db / 10)).sum(1)   # [B]
    per_key: dict = {}
    counts = {"under": 0, "equal": 0, "over": 0, "silent": 0}
    per_count: dict = {}                                                # n -> [under, equal, over]
    for b in range(est.shape[0]):
        r = ref[b][active[b]]                                           # [n, T]
        n = len(r)
        if n == 0:
            counts["silent"] += 1
            continue
        e = est[b][_matched(est[b], r)]                                 # [n, T], matched
        if n == 1:
            per_key.setdefault("1S", []).append(si_sdr(e, r).item())
        else:
            per_key.setdefault(f"{n}Si", []).append(
                si_sdr_improvement(e[None], r[None], mix[b][None]).mean().item())
        p = int(produced[b])
        verdict = 0 if p < n else 1 if p == n else 2
        counts[("under", "equal", "over")[verdict]] += 1
        per_count.setdefault(n, [0, 0, 0])[verdict] += 1
    scored = max(1, sum(counts[k] for k in ("under", "equal", "over")))
    out = {f"{k}Si" if k > 1 else "1S": None for k in range(1, ref.shape[1] + 1)}
    out.update({k: sum(v) / len(v) for k, v in per_key.items()})
    out.update({k: counts[k] / scored for k in ("under", "equal", "over")})
    out["n"] = dict({k: len(v) for k, v in per_key.items()}, **counts)
    out["by_count"] = {n: {"mixtures": sum(c), "under": c[0] / sum(c), "equal": c[1] / sum(c),
                           "over": c[2] / sum(c)} for n, c in sorted(per_count.items())}
    return out


def audio_scores(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor, sample_rate: int,
                 grouping: str = "merged", perceptual: bool = True, dnsmos: bool = False) -> dict:
    """SI-SDR, SI-SDRi, ESTOI and wide-band PESQ per source of two-speaker test mixtures.

    est: [B, M, T] (M >= K), ref: [B, K, T], mix: [B, 1, T], all at ``sample_rate``. M > K is
    reduced to K first, as for images: "merged" (``mixit.merge_outputs``, no reference used)
    or "oracle" (``oracle_grouping``). Then each reference gets its own estimate (Hungarian on
    SI-SDR, ``_matched``). PESQ is defined at 16 kHz only: estimate and reference are both
    resampled to 16 kHz for it (at 8 kHz both lack the upper band alike). ``perceptual=False``
    skips ESTOI and PESQ (they run on the CPU, about 0.1 s per signal). ``dnsmos=True`` adds
    DNSMOS P.835 of the K estimates (``dnsmos_scores``, reference-free, resampled to 16 kHz;
    the optional extra, about 0.75 s of CPU per 9 s window) as "dnsmos_sig", "dnsmos_bak" and
    "dnsmos_ovrl", each [B, K].
    Returns ``{"si_sdr", "si_sdri", "estoi", "pesq"}``, each [B, K] (the last two None when skipped).
    """
    if est.dim() != 3 or ref.dim() != 3 or mix.shape != (est.shape[0], 1, est.shape[-1]) \
            or ref.shape[::2] != est.shape[::2] or est.shape[1] < ref.shape[1]:
        raise ValueError(f"need est [B, M, T] (M >= K), ref [B, K, T], mix [B, 1, T]; got "
                         f"{tuple(est.shape)}, {tuple(ref.shape)}, {tuple(mix.shape)}")
    est, ref, mix = est.detach().cpu().double(), ref.detach().cpu().double(), mix.detach().cpu().double()
    K = ref.shape[1]
    if est.shape[1] > K:
        est = oracle_grouping(est, ref) if grouping == "oracle" else merge_outputs(est, K)
    est = torch.stack([est[b][_matched(est[b], ref[b])] for b in range(len(est))])   # [B, K, T]
    out = {"si_sdr": si_sdr(est, ref), "si_sdri": si_sdr_improvement(est, ref, mix),
           "estoi": None, "pesq": None}
    if perceptual:
        import torchaudio
        up = (lambda x: x) if sample_rate == 16000 else \
            (lambda x: torchaudio.functional.resample(x.float(), sample_rate, 16000).double())  # noqa: E731
        e16, r16 = up(est), up(ref)
        out["estoi"] = torch.tensor([[estoi(est[b, k], ref[b, k], sample_rate) for k in range(K)]
                                     for b in range(len(est))])
        out["pesq"] = torch.tensor([[pesq_wb(e16[b, k], r16[b, k]) for k in range(K)]
                                    for b in range(len(est))])
    if dnsmos:
        from .dnsmos import dnsmos_scores
        out.update({f"dnsmos_{k}": v for k, v in dnsmos_scores(est, sample_rate).items()})
    return out
