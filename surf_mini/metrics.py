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

DNSMOS P.835 (Reddy et al. 2022; last section, an optional extra: ``pip install -r
requirements-dnsmos.txt``): ``dnsmos(wave, sample_rate)`` gives the reference-free SIG / BAK /
OVRL of one signal, resampled to 16 kHz, in the model's own 9.01 s windows one second apart
(the reference implementation's rule; equal to speechmos's figures, tested). onnxruntime and
speechmos's ONNX model are imported only when it is called; without them it raises
``DNSMOSMissing``, whose one-line message is that install command.
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
        out.update({f"dnsmos_{k}": v for k, v in dnsmos_scores(est, sample_rate).items()})
    return out


# --------------------------------------------------------------------------------------
# DNSMOS P.835 (optional extra: pip install -r requirements-dnsmos.txt)
# --------------------------------------------------------------------------------------
#
# DNSMOS P.835 (Reddy, Gopal and Cutler, ICASSP 2022) is a reference-free speech-quality
# model: a CNN trained on listeners' ITU-T P.835 ratings predicts, from the signal alone,
#   SIG   the quality of the speech itself (1-5),
#   BAK   how intrusive the background noise is (1-5, higher is quieter),
#   OVRL  the overall quality (1-5).
# It needs no reference, so it scores the input mixture and every separated output alike,
# and the references themselves (train_audio.py --dnsmos's ceiling row).
#
# What runs here is the ONNX model that Microsoft ships in the ``speechmos`` wheel
# (``speechmos/dnsmos_models/sig_bak_ovr.onnx``), called through onnxruntime with the
# windowing and the polynomial mapping of speechmos's ``dnsmos.run`` (the same as the DNS
# Challenge's ``dnsmos_local.py``); tests/test_dnsmos.py checks the numbers against
# speechmos's own. We do not call ``speechmos.dnsmos.run`` itself because it
#   * imports librosa (seconds, and numba) only for the P.808 side model we do not report,
#   * builds its ONNX sessions with onnxruntime's default thread pool (every core),
#   * refuses samples outside [-1, 1] (separate.py's float outputs may exceed full scale),
#   * loops forever on an empty signal and copies a short one by repeated np.append.
# The rule, as in the reference implementation:
#   * the model takes 16 kHz audio in windows of 9.01 s (144160 samples); other rates are
#     resampled to 16 kHz first with torchaudio.functional.resample (the project's speech
#     models run at 8 kHz: their 8 kHz signals hold nothing above 4 kHz, and DNSMOS hears
#     that band as missing, so 8 kHz speech scores below the same speech recorded at 16 kHz);
#   * a signal shorter than 9.01 s is repeated (doubled until it is at least 9.01 s long);
#   * windows start every second: int(floor(n / 16000) - 9.01) + 1 of them for n samples
#     (so the last second or so of a long signal is never scored, as in the reference);
#   * each window's three raw outputs go through DNSMOS's fitted polynomials (below), and
#     the scores are the means over the windows.
# Cost (docs/benchmarks.md): about 0.75 s of one CPU core per window, so DNSMOS is slow next
# to the other metrics; it is only computed when asked (separate.py --score,
# train_audio.py --dnsmos).

DNSMOS_RATE = 16000                     # the model's sample rate
DNSMOS_WINDOW_S = 9.01                  # its input length in seconds (reference: INPUT_LENGTH)
DNSMOS_WINDOW = int(DNSMOS_WINDOW_S * DNSMOS_RATE)      # 144160 samples
DNSMOS_HOP = DNSMOS_RATE                # one window a second
DNSMOS_INSTALL = "pip install -r requirements-dnsmos.txt"
# The polynomials that map the model's raw outputs to P.835 MOS (highest power first), the
# non-personalized ones of speechmos / dnsmos_local.py (``get_polyfit_val``).
DNSMOS_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439),
               "bak": (-0.13166888, 1.60915514, -0.39604546),
               "ovrl": (-0.06766283, 1.11546468, 0.04602535)}

_DNSMOS_SESSIONS: dict = {}             # intra-op threads -> onnxruntime.InferenceSession


class DNSMOSMissing(ImportError):
    """The optional DNSMOS extra (speechmos's ONNX model, onnxruntime) is not installed.
    Its message is the one line to show: what is missing and the install command."""

    def __init__(self, what: str = "speechmos and onnxruntime"):
        super().__init__(f"DNSMOS needs the optional extra ({what} not found): {DNSMOS_INSTALL}")


def dnsmos_session(threads: int = 1):
    """The ONNX session of DNSMOS P.835's SIG/BAK/OVRL model, created once per thread count.

    Imports onnxruntime and finds speechmos's model file only now (the extra is optional: a
    plain install never imports either); raises ``DNSMOSMissing`` when they are absent.
    ``threads``: onnxruntime's intra-op threads (1 by default, so that DNSMOS beside a
    training or a separation takes one core; onnxruntime's own default is every core).
    """
    if threads in _DNSMOS_SESSIONS:
        return _DNSMOS_SESSIONS[threads]
    try:
        import onnxruntime as ort
    except (ImportError, OSError):
        raise DNSMOSMissing("onnxruntime") from None
    try:
        import speechmos                    # an empty package: only the model files are used
    except ImportError:
        raise DNSMOSMissing("speechmos") from None
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(speechmos.__file__)), "dnsmos_models",
                        "sig_bak_ovr.onnx")
    if not os.path.isfile(path):
        raise DNSMOSMissing(f"speechmos's {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3             # errors only: no provider chatter on stderr
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    _DNSMOS_SESSIONS[threads] = session
    return session


def dnsmos_available(threads: int = 1) -> bool:
    """True when ``dnsmos`` can run (the extra is installed; the session is then cached)."""
    try:
        dnsmos_session(threads)
        return True
    except DNSMOSMissing:
        return False


def _resample_margin(sample_rate: int) -> int:
    """Input samples of context on each side of a window resampled on its own, so that its
    16 kHz samples equal those of resampling the whole signal at once. torchaudio's sinc
    resampler reads ``width`` input samples on each side of an output (width <=
    ceil(6 * orig / (0.99 * min(orig, new))), rates divided by their gcd) and works on frames
    of ``orig`` input samples; the margin is a whole number of frames, two more than needed."""
    import math
    g = math.gcd(sample_rate, DNSMOS_RATE)
    orig, new = sample_rate // g, DNSMOS_RATE // g
    width = math.ceil(6 * orig / (0.99 * min(orig, new)))
    return orig * (-(-width // orig) + 2)


def _resample16(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 [n] at ``sample_rate`` -> float32 at 16 kHz (torchaudio.functional.resample)."""
    if sample_rate == DNSMOS_RATE:
        return x
    import torchaudio
    return torchaudio.functional.resample(torch.from_numpy(x), sample_rate, DNSMOS_RATE).numpy()


def _dnsmos_windows(read, length: int, sample_rate: int):
    """The 16 kHz windows DNSMOS scores, one at a time, as (key, float32 [144160]).

    ``read(start, n)`` returns up to ``n`` float32 samples of the signal from ``start`` (at
    ``sample_rate``). Windows with the same key hold the same samples (a short signal,
    repeated: windows a whole period apart), so a caller may reuse that window's scores.

    A signal of at least 9.01 s at 16 kHz is never held whole: each window is read (and
    resampled, with ``_resample_margin`` samples of context) on its own, so memory is a
    window, whatever the length. A shorter one is read whole and repeated, as the reference
    does (by doubling until it is at least 9.01 s long).
    """
    if length <= 0:
        raise ValueError("DNSMOS: the signal holds no samples")
    n16 = -(-length * DNSMOS_RATE // sample_rate)          # torchaudio's output length, ceil
    if n16 < DNSMOS_WINDOW:                                 # short: read whole, repeat
        x16 = _resample16(np.ascontiguousarray(read(0, length), dtype=np.float32), sample_rate)[:n16]
        period, copies = len(x16), 1
        while period * copies < DNSMOS_WINDOW:
            copies *= 2
        tiled = np.tile(x16, copies)                        # the reference's doubled signal
        total = len(tiled)
        get = lambda s: (s % period, tiled[s:s + DNSMOS_WINDOW])              # noqa: E731
    else:
        total = n16
        margin = _resample_margin(sample_rate)              # 0 is never used at 16 kHz
        n_in = -(-DNSMOS_WINDOW * sample_rate // DNSMOS_RATE)  # input samples of one window

        def get(s):
            if sample_rate == DNSMOS_RATE:
                return s, np.ascontiguousarray(read(s, DNSMOS_WINDOW), dtype=np.float32)
            start = s // DNSMOS_RATE * sample_rate - margin  # window s starts at second s/16000
            seg = np.zeros(n_in + 2 * margin, np.float32)   # zeros outside the signal, as torchaudio pads
            lo = max(0, start)
            got = np.asarray(read(lo, len(seg) - (lo - start)), dtype=np.float32)
            seg[lo - start:lo - start + len(got)] = got
            off = margin * DNSMOS_RATE // sample_rate       # a whole number of output frames
            return s, _resample16(seg, sample_rate)[off:off + DNSMOS_WINDOW]
    hops = int(np.floor(total / DNSMOS_RATE) - DNSMOS_WINDOW_S) + 1   # the reference's count
    for idx in range(hops):
        s = idx * DNSMOS_HOP
        if s + DNSMOS_WINDOW > total:                       # the reference skips a short window
            continue
        yield get(s)


def _dnsmos_mos(raw) -> dict:
    """The model's three raw outputs -> P.835 MOS through DNSMOS's polynomials (the same
    np.poly1d on the same float32 values as the reference, so the same float64 result)."""
    return {k: np.poly1d(DNSMOS_POLY[k])(v) for k, v in zip(("sig", "bak", "ovrl"), raw)}


def dnsmos_stream(read, length: int, sample_rate: int, threads: int = 1) -> list[dict]:
    """DNSMOS of each window of a signal given by ``read(start, n)`` (see ``_dnsmos_windows``)
    of ``length`` samples at ``sample_rate``: a list of {"sig", "bak", "ovrl"}, one per window."""
    session = dnsmos_session(threads)
    name = session.get_inputs()[0].name                    # "input_1": float32 [N, 144160]
    rows, seen = [], {}
    for key, window in _dnsmos_windows(read, length, sample_rate):
        if key not in seen:                                 # same samples, same scores
            seen[key] = _dnsmos_mos(session.run(None, {name: window[None]})[0][0])
        rows.append(seen[key])
    return rows


def _dnsmos_mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in ("sig", "bak", "ovrl")}


def dnsmos(wave, sample_rate: int, threads: int = 1) -> dict:
    """DNSMOS P.835 of one signal: ``{"sig", "bak", "ovrl"}``, each the mean over its windows.

    wave: a 1-D numpy array or torch tensor at ``sample_rate`` (any level; speechmos refuses
    samples outside [-1, 1], this scores them as they are). Other rates than 16 kHz are
    resampled to 16 kHz with torchaudio.functional.resample (the model's rate; the project's
    speech models run at 8 kHz). Scored in DNSMOS's own 9.01 s windows, one a second, a short
    signal repeated first, as the reference implementation (speechmos / the DNS Challenge's
    dnsmos_local.py) does; a long signal is read window by window (each window converted to
    float32 and resampled on its own), so it is never held twice. Needs the optional extra
    (``DNSMOSMissing``, whose message is the install line, otherwise); onnxruntime runs on
    ``threads`` intra-op threads, its session created once.
    """
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu()
        read = lambda s, n: wave[s:s + n].float().numpy()           # noqa: E731
    else:
        wave = np.asarray(wave)
        read = lambda s, n: wave[s:s + n].astype(np.float32)          # noqa: E731
    if wave.ndim != 1:
        raise ValueError(f"dnsmos takes one 1-D signal, got shape {tuple(wave.shape)}")
    return _dnsmos_mean(dnsmos_stream(read, len(wave), int(sample_rate), threads))


def dnsmos_file(path: str, threads: int = 1) -> dict:
    """``dnsmos`` of an audio file, read window by window from disk (soundfile; several
    channels are averaged to mono and non-finite samples set to 0, as separate.py reads)."""
    import soundfile as sf
    with sf.SoundFile(path) as f:
        def read(start: int, n: int) -> np.ndarray:
            f.seek(start)
            x = f.read(n, dtype="float32", always_2d=True)
            return np.where(np.isfinite(x), x, 0.0).mean(1).astype(np.float32)
        return _dnsmos_mean(dnsmos_stream(read, f.frames, f.samplerate, threads))


def dnsmos_scores(x: torch.Tensor, sample_rate: int, threads: int = 1) -> dict:
    """``dnsmos`` of every signal of x [B, K, T]: ``{"sig", "bak", "ovrl"}``, each [B, K]."""
    rows = [[dnsmos(x[b, k], sample_rate, threads) for k in range(x.shape[1])] for b in range(x.shape[0])]
    return {key: torch.tensor([[r[key] for r in row] for row in rows], dtype=torch.float64)
            for key in ("sig", "bak", "ovrl")}
