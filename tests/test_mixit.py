"""MixIT: vectorised assignment search equals brute force; consistency; recipes."""
import pytest
import torch

from surf_mini.mixit import (assignment_scores, merge_outputs, mixit_loss, mixture_consistency,
                             neg_thresholded_snr, sample_mixtures_of_mixtures)


def brute_force(est, mix_a, mix_b, kind):
    """Loop over every assignment at signal level: the plain approach."""
    M = est.shape[1]
    out = []
    for code in range(2 ** M):
        a = torch.tensor([(code >> j) & 1 for j in range(M)], dtype=est.dtype)
        a = a.reshape(1, M, *([1] * (est.dim() - 2)))
        ya, yb = ((1 - a) * est).sum(1, keepdim=True), (a * est).sum(1, keepdim=True)
        if kind == "mse":
            out.append((ya - mix_a).pow(2).flatten(1).sum(1) + (yb - mix_b).pow(2).flatten(1).sum(1))
        else:
            out.append(neg_thresholded_snr(mix_a, ya) + neg_thresholded_snr(mix_b, yb))
    return torch.stack(out, 1)


@pytest.mark.parametrize("kind", ["snr", "mse"])
@pytest.mark.parametrize("M", [2, 4, 8])
def test_gram_scores_match_brute_force(gen, kind, M):
    est = torch.randn(5, M, 3, 4, 4, generator=gen, dtype=torch.float64)
    mix_a = torch.randn(5, 1, 3, 4, 4, generator=gen, dtype=torch.float64)
    mix_b = torch.randn(5, 1, 3, 4, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(assignment_scores(est, mix_a, mix_b, kind),
                               brute_force(est, mix_a, mix_b, kind))


@pytest.mark.parametrize("kind", ["snr", "mse"])
def test_mixit_loss_is_the_minimum_and_differentiable(gen, kind):
    est = torch.randn(6, 4, 50, generator=gen, dtype=torch.float64, requires_grad=True)
    mix_a = torch.randn(6, 1, 50, generator=gen, dtype=torch.float64)
    mix_b = torch.randn(6, 1, 50, generator=gen, dtype=torch.float64)
    loss, assignment = mixit_loss(est, mix_a, mix_b, kind)
    best = brute_force(est.detach(), mix_a, mix_b, kind).min(1).values
    if kind == "mse":
        best = best / (2 * 50)  # mixit_loss reports a mean over elements
    torch.testing.assert_close(loss, best)
    assert assignment.shape == (6, 4) and set(assignment.unique().tolist()) <= {0, 1}
    loss.sum().backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_mixit_finds_the_true_split(gen):
    # Four sources, two per mixture; outputs are the sources in scrambled order.
    src = torch.randn(8, 4, 100, generator=gen, dtype=torch.float64)
    mix_a, mix_b = src[:, :2].sum(1, keepdim=True), src[:, 2:].sum(1, keepdim=True)
    order = torch.tensor([3, 0, 2, 1])
    loss, assignment = mixit_loss(src[:, order], mix_a, mix_b, "mse")
    assert loss.max() < 1e-24
    assert torch.equal(assignment, torch.tensor([[1, 0, 1, 0]]).expand(8, 4))
    loss, _ = mixit_loss(src[:, order], mix_a, mix_b, "snr")
    torch.testing.assert_close(loss, torch.full((8,), 2 * 10 * torch.log10(torch.tensor(1e-3)).item(),
                                                dtype=torch.float64), atol=1e-4, rtol=0)


def test_mixture_consistency(gen):
    est = torch.randn(3, 4, 2, 5, generator=gen, dtype=torch.float64)
    m = torch.randn(3, 1, 2, 5, generator=gen, dtype=torch.float64)
    proj = mixture_consistency(est, m)
    torch.testing.assert_close(proj.sum(1, keepdim=True), m)
    torch.testing.assert_close(mixture_consistency(proj, m), proj)     # a projection
    assert not torch.allclose(est.sum(1, keepdim=True), m)             # the control
    with pytest.raises(ValueError, match="must have shape"):
        mixture_consistency(est, m[:, :, :1])


def test_mixture_of_mixtures_recipes(gen):
    sig = torch.randn(40_000, 4, 3, generator=gen, dtype=torch.float64)
    mix_a, mix_b, n = sample_mixtures_of_mixtures(sig, "image", gen)
    total = n.sum(1)
    frac = torch.bincount(total, minlength=5)[2:].double() / len(total)
    torch.testing.assert_close(frac, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64),
                               atol=0.01, rtol=0)
    one = n[:, 0] == 1
    torch.testing.assert_close(mix_a[one, 0], sig[one, 0])
    torch.testing.assert_close(mix_a[~one, 0], sig[~one, 0] + sig[~one, 1])
    mix_a, mix_b, n = sample_mixtures_of_mixtures(sig, "audio", gen)
    assert (n == 2).all()
    torch.testing.assert_close(mix_b[:, 0], sig[:, 2] + sig[:, 3])
    with pytest.raises(ValueError, match="recipe"):
        sample_mixtures_of_mixtures(sig, "video")


def test_merge_outputs_keeps_the_sum_and_the_loud_outputs(gen):
    loud = torch.randn(5, 2, 30, generator=gen, dtype=torch.float64)
    faint = 0.05 * loud.flip(1) + 0.001 * torch.randn(5, 2, 30, generator=gen, dtype=torch.float64)
    est = torch.cat([faint[:, :1], loud[:, :1], faint[:, 1:], loud[:, 1:]], 1)  # [f0, L0, f1, L1]
    out = merge_outputs(est, 2)
    torch.testing.assert_close(out.sum(1), est.sum(1))
    # faint copy of L1 went into L1, faint copy of L0 into L0
    torch.testing.assert_close(out[:, 0], loud[:, 0] + faint[:, 1])
    torch.testing.assert_close(out[:, 1], loud[:, 1] + faint[:, 0])
    assert merge_outputs(est, 4) is est


def test_output_sparsity_prefers_fewer_active_outputs(gen):
    from surf_mini.mixit import output_sparsity
    x = torch.randn(3, 1, 50, generator=gen, dtype=torch.float64)
    spread = torch.cat([x / 2, x / 2, torch.zeros_like(x), torch.zeros_like(x)], 1)  # 2 active
    single = torch.cat([x, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)], 1)
    assert torch.allclose(output_sparsity(single), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(output_sparsity(spread), torch.full((3,), 2 ** 0.5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(output_sparsity(7.0 * spread), output_sparsity(spread))  # scale-free
    est = spread.clone().requires_grad_(True)
    output_sparsity(est).sum().backward()
    assert torch.isfinite(est.grad).all()                                 # silent outputs too


def test_balanced_merge_undoes_an_over_separation_that_loudest_gets_wrong():
    from surf_mini.mixit import _splits, merge_weights
    assert len(_splits(4, 2)) == 7 and len(_splits(3, 3)) == 1                 # each split once
    a = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)                 # two orthogonal
    b = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)                 # sources
    # The louder source came out in two halves, the quieter one in two smaller halves.
    est = torch.stack([0.5 * a, 0.5 * a, 0.4 * b, 0.4 * b])[None]               # [1, 4, 4]
    truth = torch.stack([a, 0.8 * b])[None]
    loud = merge_outputs(est, 2, rule="loudest")
    bal = merge_outputs(est, 2, rule="balanced")
    assert torch.allclose(bal.sum(1), est.sum(1)) and torch.allclose(loud.sum(1), est.sum(1))
    assert torch.allclose(bal, truth)                                          # {0, 1}, {2, 3}
    assert not torch.allclose(loud, truth)                                     # keeps 0 and 1 apart
    gram = torch.bmm(est, est.transpose(1, 2))
    w = merge_weights(gram, 2, rule="balanced")
    assert w.shape == (1, 4, 2) and torch.equal(w.sum(-1), torch.ones(1, 4, dtype=w.dtype))
    with pytest.raises(ValueError, match="merge rule"):
        merge_weights(gram, 2, rule="nearest")
