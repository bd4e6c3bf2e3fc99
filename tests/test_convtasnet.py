"""The Conv-TasNet MixIT teacher: shapes, mixture consistency, outputs differ, size, errors."""
import pytest
import torch

from surf_mini.convtasnet import ConvTasNet, make_config
from surf_mini.mixit import mixit_loss


def test_outputs_sum_to_the_mixture_and_differ(gen):
    torch.manual_seed(0)
    net = ConvTasNet(make_config("cpu", 4)).double()
    m = torch.randn(2, 1, 2000, generator=gen, dtype=torch.float64)
    y = net(m)
    assert y.shape == (2, 4, 2000)
    assert (y.sum(1, keepdim=True) - m).abs().max() < 1e-10
    assert (y[:, 0] - y[:, 1]).abs().max() > 1e-4


def test_unprojected_masks_rebuild_the_mixture_when_they_sum_to_one(gen):
    """Real masks keep the mixture phase: masks of 1/M each give m/M per output after iSTFT."""
    torch.manual_seed(0)
    net = ConvTasNet(make_config("cpu", 2, consistency=False)).double()
    with torch.no_grad():
        last = net.mask[1]
        last.weight.zero_()
        last.bias.zero_()                               # sigmoid(0) = 1/2 for both outputs
    m = torch.randn(1, 1, 2000, generator=gen, dtype=torch.float64)
    assert torch.allclose(net(m), m.expand(-1, 2, -1) / 2, atol=1e-8)


def test_a_mixit_step_reduces_the_loss(gen):
    torch.manual_seed(0)
    net = ConvTasNet(make_config("cpu", 4))
    a = torch.randn(4, 1, 2000, generator=gen)
    b = torch.randn(4, 1, 2000, generator=gen) * torch.linspace(0, 1, 2000)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    first = None
    for _ in range(20):
        loss = mixit_loss(net(a + b), a, b, kind="snr")[0].mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0                    # dB: it learns on a fixed batch


def test_paper_preset_size_and_bad_input():
    n = sum(p.numel() for p in ConvTasNet(make_config("paper", 4)).parameters())
    assert 4e6 < n < 7e6                                # "about 5M" (FLOSS 4.1)
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        ConvTasNet(make_config("cpu", 4))(torch.zeros(1, 2, 4000))
