"""Remixing round trips and the SURF identities (28), (77), (82) (docs/math.md, section 8)."""
import pytest
import torch

from surf_mini import remix
from surf_mini.flow import clean_estimate, interpolate, zero_sum
from surf_mini.pit import apply_permutation, invert_permutation
from surf_mini.remix import (mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss,
                             unshuffle_sources)


def consistent_teacher(gen, B=6, K=3, S=(2, 4, 4)):
    """Teacher estimates that sum exactly to the observed mixtures."""
    x_bar = torch.randn(B, K, *S, generator=gen, dtype=torch.float64)
    return x_bar, mix(x_bar)


def test_shuffle_round_trip_and_remixed_mixtures(gen):
    x, m = consistent_teacher(gen)
    x_tilde, pi = shuffle_sources(x, gen)
    assert sorted(pi.tolist()) == list(range(x.shape[0] * x.shape[1]))
    assert not torch.equal(x_tilde, x)                       # it really moved rows
    torch.testing.assert_close(x_tilde.flatten(0, 1), x.flatten(0, 1)[pi], rtol=0, atol=0)
    assert torch.equal(unshuffle_sources(x_tilde, pi), x)    # Pi^{-1} Pi = id
    # M_tilde is the sum of each group of K shuffled rows (SURF (15))
    m_tilde = mix(x_tilde)
    torch.testing.assert_close(m_tilde[:, 0], x_tilde.sum(1))
    # SR's key identity: (I_B (x) 1^T) Pi^{-1} X_tilde_1 == M for a consistent teacher
    torch.testing.assert_close(mix(unshuffle_sources(x_tilde, pi)), m)


def test_shuffle_not_inverted_is_caught(gen):
    """Negative control: 'unshuffling' with pi itself instead of its inverse is detected."""
    x, m = consistent_teacher(gen, B=8)
    x_tilde, pi = shuffle_sources(x, gen)
    wrong = x_tilde.flatten(0, 1)[pi].reshape(x.shape)
    assert not torch.allclose(mix(wrong), m)


def test_regression_losses_vanish_for_perfect_students(gen):
    x, m = consistent_teacher(gen)
    x_tilde, pi = shuffle_sources(x, gen)
    # a student that outputs the remixed sources in some per-mixture order
    order = torch.stack([torch.randperm(3, generator=gen) for _ in range(6)])
    est = apply_permutation(x_tilde, order)
    assert remixit_loss(est, x_tilde).max() < 1e-24                      # SURF (16)
    assert self_remixing_loss(est, x_tilde, pi, m).max() < 1e-24         # SURF (17)
    # Self-Remixing regresses on M only: a consistent error that swaps energy between
    # the K outputs of one new mixture but keeps their sum still remixes to M exactly
    # when routed back; ReMixIT sees it.
    delta = zero_sum(torch.randn_like(est)) * 0.1
    assert remixit_loss(est + delta, x_tilde).min() > 1e-4
    # negative control: a broken un-shuffle makes the SR loss non-zero
    bad_pi = torch.roll(pi, 1)
    assert self_remixing_loss(est, x_tilde, bad_pi, m).max() > 1e-2


def test_identities_28_77_82(gen):
    B, K = 6, 3
    x_bar, m = consistent_teacher(gen, B, K)
    x1, pi = shuffle_sources(x_bar, gen)
    m_tilde = mix(x1)
    x0 = m_tilde / K + zero_sum(torch.randn_like(x1))
    upsilon = torch.stack([torch.randperm(K, generator=gen) for _ in range(B)])
    t = torch.rand(B, generator=gen, dtype=torch.float64)
    x1u = apply_permutation(x1, upsilon)                       # Upsilon X_tilde_1
    x_t = interpolate(x0, x1u, t)                              # (20)
    v = torch.randn_like(x1)                                   # any student velocity
    r = v - (x1u - x0)                                         # (23)
    x_hat = clean_estimate(x_t, v, t)                          # (25)
    w = (1 - t)[:, None, None, None, None]
    inv = invert_permutation(upsilon)
    # (77): x_hat - x_tilde = (1 - t) (v - (x_tilde - x_tilde_0))
    torch.testing.assert_close(x_hat - x1u, w * r)
    # (28): Upsilon^{-1} X_hat - X_tilde_1 = (1 - t) Upsilon^{-1} R_t
    torch.testing.assert_close(apply_permutation(x_hat, inv) - x1,
                               w * apply_permutation(r, inv))
    # (82): the remixed clean estimates miss M by (1 - t) times the mixture residual
    m_hat = mix(unshuffle_sources(apply_permutation(x_hat, inv), pi))
    back = unshuffle_sources(apply_permutation(w * r, inv), pi)   # rows keep their own (1 - t)
    torch.testing.assert_close(m_hat - m, mix(back))


@pytest.mark.parametrize("mode", ["rm", "sr"])
def test_surf_loss_matches_its_regression_form(gen, monkeypatch, mode):
    """(1-t)^2 times (24) / (30) is the regression loss (16) / (17) on the clean estimates (25).

    The rows of one original mixture come from different new mixtures, so for (30) the
    identity is exact when the whole batch shares one t (as in SURF's code listing 1).
    """
    B, K, t0 = 8, 2, 0.3
    x_bar, m = consistent_teacher(gen, B, K, S=(40,))
    lin = torch.randn(40, 40, generator=gen, dtype=torch.float64) / 7

    def student(x, t, m_):  # an arbitrary (equivariant) velocity
        return zero_sum(torch.tanh(x @ lin) + m_ @ lin)

    monkeypatch.setattr(remix, "sample_time",
                        lambda B_, *a, **k: torch.full((B_,), t0, dtype=torch.float64))
    step = surf_loss(student, x_bar, mode=mode, generator=gen)
    x1u = apply_permutation(step.x1, step.upsilon)
    x_t = interpolate(step.x0, x1u, step.t)
    x_hat = clean_estimate(x_t, student(x_t, step.t, step.m_tilde), step.t)
    if mode == "rm":
        expect = (x_hat - x1u).pow(2).flatten(1).mean(1)                       # (16)
    else:
        routed = apply_permutation(x_hat, invert_permutation(step.upsilon))
        expect = (mix(unshuffle_sources(routed, step.pi)) - m).pow(2).flatten(1).mean(1)  # (17)
    torch.testing.assert_close(step.loss * (1 - t0) ** 2, expect)


def test_surf_loss_pit_picks_the_students_arrangement(gen):
    """A student that always proposes a fixed arrangement of the targets gets zero RM loss."""
    B, K = 8, 2
    x_bar, _ = consistent_teacher(gen, B, K, S=(16,))
    captured = {}

    def oracle(x, t, m_):
        # knows the shuffled targets (captured below) and heads along the line to their
        # reversed order: PIT must discover that order
        goal = captured["x1"].flip(1)
        return (goal - x) / (1 - t)[:, None, None]

    orig = remix.shuffle_sources

    def spy(x, generator=None):
        out = orig(x, generator)
        captured["x1"] = out[0]
        return out

    try:
        remix.shuffle_sources = spy
        step = surf_loss(oracle, x_bar, mode="rm", generator=gen)
    finally:
        remix.shuffle_sources = orig
    assert torch.equal(step.upsilon, torch.tensor([[1, 0]]).expand(B, 2))
    assert step.loss.max() < 1e-20


def test_bad_inputs():
    with pytest.raises(ValueError, match="SURF mode"):
        surf_loss(lambda x, t, m: x, torch.zeros(2, 2, 4), mode="xx")
    with pytest.raises(ValueError, match="pi must have shape"):
        unshuffle_sources(torch.zeros(2, 2, 4), torch.arange(3))
