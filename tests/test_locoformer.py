"""MB-TFLocoformer: equivariance, mixture consistency, band split/unsplit, STFT round trip."""
import pytest
import torch

from surf_mini.flow import euler_sample
from surf_mini.locoformer import (MBTFLocoformer, band_split, band_unsplit, make_config,
                                  mel_band_bins)

T = 1600                                               # 0.2 s at 8 kHz


def tiny(mode="flow", K=3, **kw):
    torch.manual_seed(0)
    net = MBTFLocoformer(make_config("cpu", K, mode, dim=16, blocks=1, heads=2, n_bands=8, **kw)).double()
    with torch.no_grad():                              # adaLN-Zero starts every block as the identity:
        for p in net.parameters():                     # wake the blocks so the test exercises them
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return net


def equivariance_error(net, gen, t):
    B, K = 2, net.config.num_sources
    x = torch.randn(B, K, T, generator=gen, dtype=torch.float64)
    m = torch.randn(B, 1, T, generator=gen, dtype=torch.float64)
    tt = torch.full((B,), t, dtype=torch.float64) if t is not None else torch.rand(B, generator=gen, dtype=torch.float64)
    v = net(x, tt, m)
    err = 0.0
    for _ in range(3):
        perm = torch.randperm(K, generator=gen)
        err = max(err, (net(x[:, perm], tt, m) - v[:, perm]).abs().max().item() / v.abs().max().item())
    return err


@pytest.mark.parametrize("head", ["compressed", "x1"])
@pytest.mark.parametrize("t", [0.0, None])
def test_flow_locoformer_is_equivariant(gen, t, head):
    assert equivariance_error(tiny(head=head), gen, t) < 1e-10


def test_the_check_catches_a_source_positional_code(gen):
    net = tiny()
    code = torch.randn(3, 16, generator=gen, dtype=torch.float64)
    encode = net.encode
    net.encode = lambda spec: encode(spec) + torch.cat([code, torch.zeros(1, 16, dtype=torch.float64)])[None, :, None, None]
    assert equivariance_error(net, gen, 0.3) > 1e-3


@pytest.mark.parametrize("head", ["compressed", "x1"])
def test_output_is_zero_sum_and_samples_stay_consistent(gen, head):
    net = tiny(K=2, head=head)
    m = torch.randn(2, 1, T, generator=gen, dtype=torch.float64)
    v = net(torch.randn(2, 2, T, generator=gen, dtype=torch.float64), torch.rand(2, dtype=torch.float64), m)
    assert v.sum(1).abs().max() < 1e-10
    with torch.no_grad():
        _, traj = euler_sample(net, m, 2, "floss5", generator=gen, project=False, return_trajectory=True)
    for x in traj:
        assert (x.sum(1, keepdim=True) - m).abs().max() < 1e-10


def test_regression_locoformer_breaks_symmetry_and_sums_to_the_mixture(gen):
    net = tiny("regression", K=3)
    m = torch.randn(2, 1, T, generator=gen, dtype=torch.float64)
    y = net(m)
    assert y.shape == (2, 3, T)
    assert (y[:, 0] - y[:, 1]).abs().max() > 1e-3
    assert (y.sum(1, keepdim=True) - m).abs().max() < 1e-10


def test_mel_split_then_unsplit_is_the_identity(gen):
    for n_freqs, n_bands, sr in ((81, 8, 8000), (161, 80, 16000)):
        bands = mel_band_bins(n_freqs, n_bands, sr)
        assert len(bands) == n_bands
        covered = torch.zeros(n_freqs, dtype=torch.bool)
        for b in bands:
            covered[b] = True
        assert covered.all()
        spec = torch.randn(3, 5, n_freqs, dtype=torch.complex128, generator=gen)
        assert torch.allclose(band_unsplit(band_split(spec, bands), bands, n_freqs), spec)
    # overlapping bands really overlap (so the averaging in unsplit is exercised)
    assert sum(len(b) for b in bands) > n_freqs


def test_stft_with_compression_round_trips(gen):
    net = tiny()
    x = torch.randn(2, 3, T, generator=gen, dtype=torch.float64)
    assert torch.allclose(net.istft(net.stft(x), T), x, atol=1e-6)


def test_bad_inputs_get_clear_errors():
    net = tiny(K=2)
    m = torch.zeros(1, 1, T, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x_t must have shape \[B, 2"):
        net(torch.zeros(1, 3, T, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), m)
    with pytest.raises(ValueError, match=r"mixture must have shape \[B, 1, T\]"):
        net(torch.zeros(1, 2, T, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), m[:, 0])
    with pytest.raises(ValueError, match="at least"):
        net(torch.zeros(1, 2, 10, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), m[..., :10])



def test_x1_head_returns_the_velocity_to_its_clean_estimate(gen):
    """head="x1": the head's output is a clean estimate x_hat_1 and x_t + (1 - t) v gives it
    back (SURF (18)) for a mixture-consistent x_t. With the mapping and input mask at 0 and
    mixture masks 0.3 and 0.7, x_hat_1 = (0.3 m, 0.7 m)."""
    net = tiny(K=2, head="x1")
    m = torch.randn(2, 1, T, generator=gen, dtype=torch.float64)
    noise = torch.randn(2, 2, T, generator=gen, dtype=torch.float64)
    x_t = m / 2 + noise - noise.mean(1, keepdim=True)                       # sums to m
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    zeros = lambda h: torch.zeros(2, 2, h.shape[2], net.n_freqs, dtype=torch.complex128)   # noqa: E731
    net.decode = lambda h: (zeros(h), zeros(h), zeros(h) + w[None, :, None, None])
    for t in (0.0, 0.7):
        tt = torch.full((2,), t, dtype=torch.float64)
        assert torch.allclose(x_t + (1 - t) * net(x_t, tt, m), w[None, :, None] * m, atol=1e-6)
    net.config.head = "compressed"                                         # the other head does not
    assert not torch.allclose(x_t + 0.3 * net(x_t, torch.full((2,), 0.7, dtype=torch.float64), m),
                              w[None, :, None] * m, atol=1e-2)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="head must be"):
        tiny(head="velocity")
