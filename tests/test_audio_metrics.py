"""Audio metrics: SI-SDR against a hand computation, scale invariance, silence, PESQ/ESTOI."""
import math

import pytest
import torch

from surf_mini import metrics as M
from surf_mini.metrics import PESQ_FLOOR, estoi, pesq_wb, si_sdr, si_sdr_improvement


def le_roux(est, ref):
    """SI-SDR as Le Roux et al. (2019) eq. (3) writes it, with the optimal scale alpha."""
    est, ref = est.double() - est.double().mean(), ref.double() - ref.double().mean()
    alpha = (est @ ref) / (ref @ ref)
    return 10 * math.log10((alpha * ref).pow(2).sum() / (alpha * ref - est).pow(2).sum())


def test_si_sdr_matches_the_projection_formula(gen):
    ref = torch.randn(3, 4000, generator=gen)
    est = 0.7 * ref + 0.3 * torch.randn(3, 4000, generator=gen) + 0.2
    got = si_sdr(est, ref)
    for b in range(3):
        assert got[b].item() == pytest.approx(le_roux(est[b], ref[b]), abs=1e-4)


def test_si_sdr_is_scale_invariant_where_snr_is_not(gen):
    ref = torch.randn(2, 4000, generator=gen)
    est = ref + 0.5 * torch.randn(2, 4000, generator=gen)
    assert torch.allclose(si_sdr(est, ref), si_sdr(0.01 * est, ref), atol=1e-4)
    assert torch.allclose(si_sdr(est, ref), si_sdr(est, 50 * ref), atol=1e-4)

    def snr(e, r):                                   # the check must be able to fail: plain SNR
        return 10 * torch.log10(r.pow(2).sum(-1) / (r - e).pow(2).sum(-1))
    assert (snr(est, ref) - snr(0.01 * est, ref)).abs().min() > 1.0


def test_si_sdr_on_silence_is_finite_and_documented(gen):
    x = torch.randn(4000, generator=gen)
    z = torch.zeros(4000)
    for est, ref in ((z, x), (x, z), (z, z)):
        assert si_sdr(est, ref).item() == -100.0
    assert si_sdr(x, x).item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="same shape"):
        si_sdr(x, x[:10])


def test_si_sdr_improvement_of_the_mixture_is_zero(gen):
    src = torch.randn(2, 2, 4000, generator=gen)
    mix = src.sum(1, keepdim=True)
    assert torch.allclose(si_sdr_improvement(mix.expand(-1, 2, -1), src, mix), torch.zeros(2, 2), atol=1e-5)
    assert (si_sdr_improvement(src, src, mix) > 50).all()


def test_pesq_and_estoi_rank_and_survive_silence(gen):
    t = torch.arange(16000) / 16000
    ref = torch.sin(2 * math.pi * 220 * t) * (torch.sin(2 * math.pi * 3 * t) > 0)   # bursts, "voiced"
    ref = ref + 0.05 * torch.randn(16000, generator=gen)
    light = ref + 0.05 * torch.randn(16000, generator=gen)
    heavy = ref + 1.0 * torch.randn(16000, generator=gen)
    assert pesq_wb(light, ref) > pesq_wb(heavy, ref)
    assert estoi(light, ref) > estoi(heavy, ref)
    z = torch.zeros(16000)
    assert pesq_wb(z, ref) == pesq_wb(ref, z) == pesq_wb(z, z) == PESQ_FLOOR
    assert estoi(z, ref) == estoi(ref, z) == 0.0
    with pytest.raises(ValueError, match="16 kHz"):
        pesq_wb(ref, ref, sample_rate=8000)


def test_fuss_scores_follow_the_rules(gen):
    from surf_mini.metrics import fuss_scores
    T = 8000
    ref = torch.randn(4, 3, T, generator=gen)
    ref[0, 1:] = 0                                     # 1 active source
    ref[1, 2:] = 0                                     # 2 active sources
    mix = ref.sum(1, keepdim=True)
    z = torch.zeros(T)
    est = torch.stack([
        torch.stack([z, ref[0, 0], z, z]),                               # 1S, equal, permuted
        torch.stack([ref[1, 1], z, ref[1, 0], z]),                        # 2 of 2, equal
        torch.stack([ref[2, 0] + ref[2, 1], ref[2, 2], z, z]),           # 3 refs, 2 outputs: under
        torch.stack([ref[3, 0] / 2, ref[3, 0] / 2, ref[3, 1], ref[3, 2]]),   # a split: over
    ])
    out = fuss_scores(est, ref, mix)
    assert out["n"] == {"1S": 1, "2Si": 1, "3Si": 2, "under": 1, "equal": 2, "over": 1, "silent": 0}
    assert out["1S"] == pytest.approx(100.0, abs=1e-3)                   # perfect, after matching
    assert out["2Si"] > 90                                                # inactive ref left out
    assert out["under"] == out["over"] == 0.25 and out["equal"] == 0.5
    # per source count: the 3-source mixtures are one under and one over, the others equal
    assert out["by_count"] == {1: {"mixtures": 1, "under": 0.0, "equal": 1.0, "over": 0.0},
                               2: {"mixtures": 1, "under": 0.0, "equal": 1.0, "over": 0.0},
                               3: {"mixtures": 2, "under": 0.5, "equal": 0.0, "over": 0.5}}
    # all-silent estimates: finite, every mixture under-separated
    silent = fuss_scores(torch.zeros_like(est), ref, mix)
    assert silent["under"] == 1.0 and all(math.isfinite(silent[k]) for k in ("1S", "2Si", "3Si"))
    # a mixture with no active reference is counted, not scored
    empty = fuss_scores(est[:1], torch.zeros_like(ref[:1]), mix[:1])
    assert empty["n"]["silent"] == 1 and empty["1S"] is None


def test_audio_scores_match_outputs_to_references(gen):
    ref = torch.randn(3, 2, 8000, generator=gen, dtype=torch.float64) * 0.1
    mix = ref.sum(1, keepdim=True)
    swapped = ref.flip(1)                                                # outputs in the other order
    s = M.audio_scores(swapped, ref, mix, 8000, perceptual=False)
    assert (s["si_sdr"] > 90).all() and s["estoi"] is None
    assert torch.allclose(s["si_sdri"], s["si_sdr"] - M.si_sdr(mix.expand_as(ref), ref))
    # Four outputs, each reference split in two halves of its energy: the oracle grouping
    # rebuilds the references exactly; "merged" may not, but never beats the oracle.
    four = torch.cat([0.5 * ref, 0.5 * ref], 1)[:, [0, 2, 1, 3]]
    oracle = M.audio_scores(four, ref, mix, 8000, "oracle", perceptual=False)
    merged = M.audio_scores(four, ref, mix, 8000, "merged", perceptual=False)
    assert (oracle["si_sdr"] > 90).all() and (merged["si_sdr"] <= oracle["si_sdr"] + 1e-9).all()
    p = M.audio_scores(ref + 0.01 * torch.randn(ref.shape, generator=gen, dtype=torch.float64),
                       ref, mix, 8000)                                   # 8 kHz -> PESQ at 16 kHz
    assert p["pesq"].shape == (3, 2) and (p["pesq"] > 1.0).all() and (p["estoi"] > 0.5).all()
    with pytest.raises(ValueError, match="M >= K"):
        M.audio_scores(ref[:, :1], ref, mix, 8000)
