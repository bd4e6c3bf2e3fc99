"""The NCSN velocity network is permutation-equivariant and mixture-consistent (docs/math.md, section 8)."""
import pytest
import torch

from surf_mini.flow import euler_sample
from surf_mini.ncsn import NCSN, make_config
from surf_mini.pit import apply_permutation


def small(mode, K=3, channels=1, **kw):
    torch.manual_seed(0)
    cfg = make_config("cpu", channels, K, mode, nf=8, **kw)
    return NCSN(cfg).double().eval()   # eval: dropout would draw different masks per source


def equivariance_error(v, gen, K=3, C=1, H=8, t=None):
    """max |v(pi x, t, m) - pi v(x, t, m)| over a batch of random permutations."""
    B = 4
    x = torch.randn(B, K, C, H, H, generator=gen, dtype=torch.float64)
    m = torch.randn(B, 1, C, H, H, generator=gen, dtype=torch.float64)
    t = torch.rand(B, generator=gen, dtype=torch.float64) if t is None else torch.full((B,), t, dtype=torch.float64)
    perm = torch.stack([torch.randperm(K, generator=gen) for _ in range(B)])
    with torch.no_grad():
        return (v(apply_permutation(x, perm), t, m) - apply_permutation(v(x, t, m), perm)).abs().max().item()


@pytest.mark.parametrize("t", [0.0, None])
def test_flow_network_is_equivariant(gen, t):
    net = small("flow")
    assert equivariance_error(net, gen, t=t) < 1e-10


def test_the_equivariance_check_catches_a_source_positional_code(gen):
    """Negative control: a per-slot input offset (a 'source position') breaks equivariance."""
    net = small("flow")
    offset = torch.randn(1, 3, 1, 1, 1, generator=gen, dtype=torch.float64)
    assert equivariance_error(lambda x, t, m: net(x + offset, t, m), gen) > 1e-3


def test_flow_output_is_zero_sum_and_euler_sample_is_consistent(gen):
    net = small("flow", K=2, channels=3)
    m = torch.randn(2, 1, 3, 8, 8, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 2, 3, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert net(x, torch.rand(2, generator=gen, dtype=torch.float64), m).sum(1).abs().max() < 1e-12
    # project=False: consistency must come from the network's own P_perp (FLOSS (14))
    _, traj = euler_sample(net, m, 2, "floss5", generator=gen, project=False, return_trajectory=True)
    for state in traj:
        torch.testing.assert_close(state.sum(1, keepdim=True), m, rtol=0, atol=1e-10)


def test_regression_network_is_not_symmetric(gen):
    net = small("regression", K=4)
    m = torch.randn(2, 1, 1, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = net(m)
    assert out.shape == (2, 4, 1, 8, 8)
    # identical inputs to an equivariant net would give identical outputs; these differ
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3
    torch.testing.assert_close(out.sum(1, keepdim=True), m)          # consistency projection
    raw = small("regression", K=4, consistency=False)
    with torch.no_grad():
        assert (raw(m).sum(1, keepdim=True) - m).abs().max() > 1e-3


def test_presets_and_bad_inputs():
    assert sum(p.numel() for p in NCSN(make_config("cpu", 1, 2, "flow")).parameters()) < 1_000_000
    net = small("flow", K=2)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 2, 1, 10, 10, dtype=torch.float64), torch.zeros(1), torch.zeros(1, 1, 1, 10, 10))
    with pytest.raises(ValueError, match="mixture must have shape"):
        net(torch.zeros(1, 2, 1, 8, 8), torch.zeros(1), torch.zeros(1, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="preset"):
        make_config("huge", 1, 2, "flow")


# --- the "x1" head (issue 25): the network predicts clean sources, the velocity is derived ---

@pytest.mark.parametrize("t", [0.0, None])
def test_x1_head_is_equivariant(gen, t):
    net = small("flow", head="x1")
    assert equivariance_error(net, gen, t=t) < 1e-10


def test_x1_head_equivariance_check_catches_a_slot_offset(gen):
    """Negative control for the x1 head: a per-slot offset on its clean estimate breaks it."""
    net = small("flow", head="x1")
    offset = torch.randn(1, 3, 1, 1, 1, generator=gen, dtype=torch.float64)
    assert equivariance_error(lambda x, t, m: net(x, t, m) + offset, gen) > 1e-3


def test_x1_head_clean_estimate_sums_to_the_mixture_and_inverts_18(gen):
    """x1_hat = x_t + (1 - t) v (SURF (18)-(19)) sums to m, and Euler samples stay consistent."""
    from surf_mini.flow import clean_estimate, initial_state, interpolate
    from surf_mini.ncsn import velocity_from_x1
    net = small("flow", head="x1")
    B, K = 4, 3
    m = torch.randn(B, 1, 1, 8, 8, generator=gen, dtype=torch.float64)
    x0 = initial_state(m, K, generator=gen)
    x1 = initial_state(m, K, generator=gen)                        # any consistent target
    t = torch.tensor([0.0, 0.3, 0.7, 0.9], dtype=torch.float64)
    x_t = interpolate(x0, x1, t)
    with torch.no_grad():
        v = net(x_t, t, m)
    x1_hat = clean_estimate(x_t, v, t)
    assert torch.allclose(x1_hat.sum(1, keepdim=True), m, atol=1e-10)
    assert torch.allclose(v.sum(1), torch.zeros_like(v.sum(1)), atol=1e-10)
    # the derived velocity is exactly (out's consistent version - x_t) / (1 - t) below the clamp
    out = torch.randn(B, K, 1, 8, 8, generator=gen, dtype=torch.float64)
    v = velocity_from_x1(out, x_t, t, m, clamp=0.05)
    want = m / K + out - out.mean(1, keepdim=True)
    assert torch.allclose(clean_estimate(x_t, v, t), want, atol=1e-10)
    # negative case: without the m/K + P_perp step the estimate would not sum to m
    assert not torch.allclose(out.sum(1, keepdim=True), m, atol=1e-3)
    sample = euler_sample(net, m, K, schedule=5, generator=gen)
    assert torch.allclose(sample.sum(1, keepdim=True), m, atol=1e-10)


def test_x1_head_config_is_checked_and_old_configs_build():
    with pytest.raises(ValueError, match="head"):
        NCSN(make_config("cpu", 1, 2, "flow", head="noise"))
    cfg = make_config("cpu", 1, 2, "flow").__dict__
    old = {k: v for k, v in cfg.items() if k not in ("head", "x1_clamp")}   # a pre-2026-12-02 config
    from surf_mini.ncsn import NCSNConfig
    assert NCSNConfig(**old).head == "velocity"
