"""FLOSS start state, path, losses and sampler; SURF Prop C.1 (docs/math.md, section 8)."""
import math

import pytest
import torch
from scipy.stats import chisquare

from surf_mini import flow
from surf_mini.flow import (clean_estimate, euler_sample, flow_loss, floss_loss, initial_state,
                            interpolate, sample_time, step_sizes, zero_sum)
from surf_mini.pit import apply_permutation, best_permutation

SHAPES = [(800,), (3, 8, 8)]  # an audio clip and a colour image


@pytest.mark.parametrize("S", SHAPES)
@pytest.mark.parametrize("shaping", ["plain", "active", "envelope"])
@pytest.mark.parametrize("K", [2, 4])
def test_start_state_is_mixture_consistent(gen, S, shaping, K):
    m = torch.randn(3, 1, *S, generator=gen, dtype=torch.float64)
    x0 = initial_state(m, K, shaping=shaping, generator=gen)
    assert x0.shape == (3, K) + S
    torch.testing.assert_close(x0.sum(1, keepdim=True), m, rtol=0, atol=1e-12)
    assert zero_sum(x0).abs().mean() > 1e-3  # the zero-sum part really holds noise


def test_envelope_noise_follows_the_mixture(gen):
    # A mixture that is silent in its second half: shaped noise must be far smaller there.
    m = torch.zeros(1, 1, 4000, dtype=torch.float64)
    m[..., :2000] = torch.randn(2000, generator=gen, dtype=torch.float64)
    noise = zero_sum(initial_state(m, 2, shaping="envelope", generator=gen, window=101))
    loud = noise[..., :1800].pow(2).mean()
    quiet = noise[..., 2200:].pow(2).mean()
    assert quiet < 1e-3 * loud
    plain = zero_sum(initial_state(m, 2, shaping="plain", generator=gen))
    assert plain[..., 2200:].pow(2).mean() > 0.1  # the control: plain noise is not shaped


def test_active_level_scales_with_the_mixture(gen):
    m = torch.randn(2, 1, 1000, generator=gen, dtype=torch.float64)
    a1 = flow.active_level(m)
    torch.testing.assert_close(flow.active_level(3 * m), 3 * a1)
    assert flow.active_level(torch.zeros(1, 1, 100)).item() == 0.0


def test_interpolate_and_clean_estimate_identity(gen):
    # SURF (18)-(19): with the path's own velocity x1 - x0, the clean estimate is x1.
    x0 = torch.randn(5, 2, 30, generator=gen, dtype=torch.float64)
    x1 = torch.randn(5, 2, 30, generator=gen, dtype=torch.float64)
    t = torch.rand(5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(5, dtype=torch.float64)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(5, dtype=torch.float64)), x1)
    x_t = interpolate(x0, x1, t)
    torch.testing.assert_close(clean_estimate(x_t, x1 - x0, t), x1)
    # and with any other velocity the error of the estimate is (1 - t) times the residual
    v = torch.randn_like(x0)
    err = clean_estimate(x_t, v, t) - x1
    torch.testing.assert_close(err, (1 - t)[:, None, None] * (v - (x1 - x0)))


def test_sample_time_weights(gen):
    t = sample_time(200_000, "delta", p_zero=0.01, generator=gen)
    frac_zero = (t == 0).float().mean().item()
    assert abs(frac_zero - 0.01) < 0.002
    assert t.min() >= 0 and t.max() <= 1
    assert abs(t[t > 0].mean().item() - 0.5) < 0.01
    s = sample_time(200_000, "logsnr", p_zero=0.0, generator=gen)
    # r ~ U[-80, 100]: P(r < 0) = 80/180, and r < 0 <=> t < 1/2
    assert abs((s < 0.5).float().mean().item() - 80 / 180) < 0.01
    # near0: t = u^3, so P(t < 1/8) = P(u < 1/2) = 1/2 and E[t] = 1/4 (uniform: 1/8 and 1/2)
    n = sample_time(200_000, "near0", p_zero=0.0, generator=gen)
    assert abs((n < 0.125).float().mean().item() - 0.5) < 0.01 and abs(n.mean().item() - 0.25) < 0.01
    with pytest.raises(ValueError, match="time weighting"):
        sample_time(3, "cosine")


def test_flow_losses_known_values():
    target = torch.full((2, 2, 4), 2.0)
    residual = torch.full((2, 2, 4), 0.2)
    torch.testing.assert_close(flow_loss(residual, target, "mse"), torch.full((2,), 0.04))
    torch.testing.assert_close(flow_loss(residual, target, "normalized"), torch.full((2,), 0.01))
    torch.testing.assert_close(flow_loss(residual, target, "db"), torch.full((2,), -20.0))


def test_step_sizes():
    torch.testing.assert_close(step_sizes("floss5"),
                               torch.tensor([0.95, 4e-2, 9e-3, 9e-4, 1e-4], dtype=torch.float64))
    assert step_sizes(25).shape == (25,) and math.isclose(step_sizes(25).sum().item(), 1.0)
    assert step_sizes(1).tolist() == [1.0] == step_sizes("one").tolist()
    assert flow.time_grid("floss5")[-1].item() == 1.0
    for bad in (0, [0.5, 0.4], "cosine"):
        with pytest.raises(ValueError):
            step_sizes(bad)


@pytest.mark.parametrize("schedule", ["floss5", 1, 25])
@pytest.mark.parametrize("S", SHAPES)
def test_euler_known_integrals(gen, schedule, S):
    m = torch.randn(2, 1, *S, generator=gen, dtype=torch.float64)
    x0 = initial_state(m, 3, generator=gen)
    # a constant (zero-sum) velocity c integrates to x0 + c over t in [0, 1]
    c = zero_sum(torch.randn(2, 3, *S, generator=gen, dtype=torch.float64))
    out = euler_sample(lambda x, t, m_: c, m, 3, schedule, x0=x0)
    torch.testing.assert_close(out, x0 + c)
    # the straight line to a fixed consistent target y ends exactly at y for any schedule
    y = x0 + c
    out = euler_sample(lambda x, t, m_: (y - x) / (1 - t)[:, None].reshape(-1, *[1] * (x.dim() - 1)),
                       m, 3, schedule, x0=x0)
    torch.testing.assert_close(out, y)


@pytest.mark.parametrize("schedule", ["floss5", 4])
def test_consistency_after_every_euler_step(gen, schedule):
    m = torch.randn(4, 1, 3, 6, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 6, 6, generator=gen, dtype=torch.float64)

    def not_zero_sum(x, t, m_):  # a velocity that would leave the mixture's affine set
        return torch.tanh(x) + w

    _, traj = euler_sample(not_zero_sum, m, 3, schedule, generator=gen, return_trajectory=True)
    assert len(traj) == len(step_sizes(schedule)) + 1
    for x in traj:
        torch.testing.assert_close(x.sum(1, keepdim=True), m, rtol=0, atol=1e-10)
    # negative control: without the P_perp projection (FLOSS (14)) consistency is lost
    _, traj = euler_sample(not_zero_sum, m, 3, schedule, generator=gen, project=False,
                           return_trajectory=True)
    assert (traj[-1].sum(1, keepdim=True) - m).abs().max() > 0.1


def toy_sources(gen, B, K=2, A=6, D=24, s=0.02):
    atoms = torch.randn(A, D, generator=gen, dtype=torch.float64)
    idx = torch.stack([torch.randperm(A, generator=gen)[:K] for _ in range(B)])
    x1 = atoms[idx] + s * torch.randn(B, K, D, generator=gen, dtype=torch.float64)
    return atoms, x1


def test_exact_velocity_separates_a_toy_mixture(gen):
    atoms, x1 = toy_sources(gen, 16)
    m = x1.sum(1, keepdim=True)
    out = euler_sample(flow.gmm_velocity(atoms, 0.02), m, 2, 25, generator=gen)
    aligned = apply_permutation(x1, best_permutation(out, x1))
    snr = 10 * torch.log10(x1.pow(2).sum() / (out - aligned).pow(2).sum())
    assert snr > 30


def test_pit_at_zero_is_the_argmin_of_surf_21(gen):
    """sigma = argmin_Gamma ||v(x0, 0, m) - (Gamma x1 - x0)||^2, checked against brute force."""
    import itertools
    B, K = 32, 3
    x1 = torch.randn(B, K, 10, generator=gen, dtype=torch.float64)
    m = x1.sum(1, keepdim=True)
    x0 = initial_state(m, K, sigma=3.0, generator=gen)     # large noise: x0 matters
    v0 = zero_sum(torch.randn(B, K, 10, generator=gen, dtype=torch.float64))
    perm = flow.pit_at_zero(lambda x, t, m_: v0, x0, x1, m)
    cost = torch.stack([(v0 - (x1[:, list(p)] - x0)).pow(2).flatten(1).sum(1)
                        for p in itertools.permutations(range(K))], 1)
    found = (v0 - (apply_permutation(x1, perm) - x0)).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(found, cost.min(1).values)


def test_floss_loss_is_zero_for_the_straight_line_to_a_permutation(gen):
    # The velocity of the straight line to sigma* x1 is the exact target once PIT at t = 0
    # has picked sigma*; any other choice of permutation leaves a residual.
    _, x1 = toy_sources(gen, 8, K=3)
    swap = torch.tensor([2, 0, 1]).expand(8, 3)
    goal = apply_permutation(x1, swap)

    def line(x, t, m):
        return (goal - x) / (1 - t)[:, None, None]

    loss = floss_loss(line, x1, kind="mse", generator=gen)
    assert loss.max() < 1e-20
    # negative control: skipping PIT (training on x1 as given) leaves a large loss
    orig = flow.pit_at_zero
    try:
        flow.pit_at_zero = lambda v, x0, x1_, m: torch.arange(3).expand(8, 3)
        assert floss_loss(line, x1, kind="mse", generator=gen).min() > 1e-2
    finally:
        flow.pit_at_zero = orig


# ---------------------------------------------------------------------------------------
# SURF Proposition C.1: the PIT choice at t = 0 is uniform when v(., 0) is equivariant
# ---------------------------------------------------------------------------------------

class SmallEquivariantNet(torch.nn.Module):
    """v(x, t, m): weights shared across sources, interaction only through a mean over them."""

    def __init__(self, D, gen):
        super().__init__()
        def w(*s):
            return torch.randn(*s, generator=gen, dtype=torch.float64) / math.sqrt(s[0])
        self.w_self, self.w_pool, self.w_mix, self.w_out = w(D, 32), w(32, 32), w(D, 32), w(32, D)

    def __call__(self, x, t, m):
        h = torch.tanh(x @ self.w_self)                                # per source
        h = h + torch.tanh(h.mean(1, keepdim=True) @ self.w_pool)     # symmetric pooling
        h = torch.tanh(h + m @ self.w_mix)                             # conditioning
        return zero_sum(h @ self.w_out)


def pit_choices(v, x1, gen, n=6000):
    """Index (into itertools order) of sigma(x0, x1) for n fresh start states x0."""
    K = x1.shape[1]
    x1 = x1.expand(n, *x1.shape[1:])
    m = x1.sum(1, keepdim=True)
    x0 = initial_state(m, K, generator=gen)
    perm = best_permutation(x0 + v(x0, torch.zeros(n, dtype=x0.dtype), m), x1)
    codes = (perm * torch.tensor([K ** i for i in range(K)])).sum(1)
    return torch.unique(codes, return_counts=True)[1], perm


def test_pit_choice_is_uniform_for_an_equivariant_velocity(gen):
    D, K = 6, 3
    x1 = torch.randn(1, K, D, generator=gen, dtype=torch.float64)
    net = SmallEquivariantNet(D, gen)
    # equivariance of the test net itself
    x = torch.randn(4, K, D, generator=gen, dtype=torch.float64)
    m = torch.randn(4, 1, D, generator=gen, dtype=torch.float64)
    p = torch.tensor([2, 0, 1]).expand(4, 3)
    torch.testing.assert_close(net(apply_permutation(x, p), 0, m), apply_permutation(net(x, 0, m), p))

    counts, _ = pit_choices(net, x1, gen)
    assert len(counts) == 6
    assert chisquare(counts.numpy()).pvalue > 1e-3

    # negative control: a fixed per-slot offset breaks equivariance, and uniformity with it
    offset = zero_sum(3 * torch.randn(1, K, D, generator=gen, dtype=torch.float64))
    counts_bad, _ = pit_choices(lambda x_, t_, m_: net(x_, t_, m_) + offset, x1, gen)
    full = torch.zeros(6, dtype=torch.long)
    full[: len(counts_bad)] = counts_bad
    assert chisquare(full.numpy()).pvalue < 1e-6


def test_aligned_targets_keep_the_law_of_x1(gen):
    # p1 permutation invariant: x1 is a random ordering of three fixed rows. Then sigma x1
    # must have the same law: each row lands in slot 0 a third of the time.
    D, K, n = 6, 3, 6000
    rows = torch.randn(K, D, generator=gen, dtype=torch.float64)
    order = torch.stack([torch.randperm(K, generator=gen) for _ in range(n)])
    x1 = rows[order]                                                   # [n, K, D]
    net = SmallEquivariantNet(D, gen)
    m = x1.sum(1, keepdim=True)

    def slot0_counts(v):
        x0 = initial_state(m, K, generator=gen)
        perm = best_permutation(x0 + v(x0, torch.zeros(n, dtype=x0.dtype), m), x1)
        first_row = torch.gather(order, 1, perm)[:, 0]
        return torch.bincount(first_row, minlength=K)

    assert chisquare(slot0_counts(net).numpy()).pvalue > 1e-3
    offset = zero_sum(3 * torch.randn(1, K, D, generator=gen, dtype=torch.float64))
    biased = slot0_counts(lambda x_, t_, m_: net(x_, t_, m_) + offset)
    assert chisquare(biased.numpy()).pvalue < 1e-6


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[B, 1, \*S\]"):
        initial_state(torch.zeros(2, 3, 10), 2)
    with pytest.raises(ValueError, match="noise shaping"):
        initial_state(torch.zeros(2, 1, 10), 2, shaping="pink")


def test_x1_space_loss_is_the_clean_estimate_error():
    """(1 - t) (v - (x1 - x0)) = x1_hat - x1 (SURF (18)-(19)); 'velocity' leaves it unchanged."""
    from surf_mini.flow import clean_estimate, in_x1_space, initial_state, interpolate
    g = torch.Generator().manual_seed(3)
    m = torch.randn(5, 1, 7, generator=g, dtype=torch.float64)
    x0, x1 = initial_state(m, 2, generator=g), initial_state(m, 2, generator=g)
    t = torch.rand(5, generator=g, dtype=torch.float64)
    x_t = interpolate(x0, x1, t)
    v = torch.randn(5, 2, 7, generator=g, dtype=torch.float64)
    r, target = in_x1_space(v - (x1 - x0), x1 - x0, t, "x1")
    assert torch.allclose(r, clean_estimate(x_t, v, t) - x1, atol=1e-12)
    r_v, _ = in_x1_space(v - (x1 - x0), x1 - x0, t, "velocity")
    assert torch.equal(r_v, v - (x1 - x0))
    assert not torch.allclose(r_v, r)                       # the two spaces differ (t < 1)
    with pytest.raises(ValueError, match="loss space"):
        in_x1_space(r, target, t, "noise")
    # the normalised loss keeps the (1 - t)^2 weight (scaling the target too would cancel it)
    sq = flow_loss(*in_x1_space(v - (x1 - x0), x1 - x0, t, "x1"), "normalized")
    sv = flow_loss(v - (x1 - x0), x1 - x0, "normalized")
    assert torch.allclose(sq, (1 - t) ** 2 * sv) and not torch.allclose(sq, sv)


def test_euler_with_the_x1_head_lands_on_its_clean_estimate():
    """FLOSS 5's last steps (t = 0.99, 0.999, 0.9999) land on x1_hat when the inverse is exact;
    a training-time clamp of 0.05 would stop short (the negative case)."""
    from surf_mini.ncsn import velocity_from_x1
    g = torch.Generator().manual_seed(5)
    m = torch.randn(3, 1, 6, generator=g, dtype=torch.float64)
    out = torch.randn(3, 2, 6, generator=g, dtype=torch.float64)          # a fixed "network output"
    want = m / 2 + out - out.mean(1, keepdim=True)
    exact = euler_sample(lambda x, t, mm: velocity_from_x1(out, x, t, mm, 1e-6), m, 2, "floss5", generator=g)
    assert torch.allclose(exact, want, atol=1e-8)
    short = euler_sample(lambda x, t, mm: velocity_from_x1(out, x, t, mm, 0.05), m, 2, "floss5", generator=g)
    assert (short - want).abs().max() > 1e-3
