"""Audio metrics: SI-SDR against a hand computation, scale invariance, silence, PESQ/ESTOI."""
import math

import pytest
import torch

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
