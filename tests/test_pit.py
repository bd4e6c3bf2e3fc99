"""PIT returns the true optimum, its permutations invert exactly (docs/math.md, section 8)."""
import itertools

import pytest
import torch

from surf_mini import pit
from surf_mini.pit import apply_permutation, best_permutation, invert_permutation, pairwise_cost


def brute_force_best_cost(est, ref):
    """min over all K! arrangements of ref of ||est - arrangement||^2, per example."""
    K = est.shape[1]
    costs = [((est - ref[:, list(p)]) ** 2).flatten(1).sum(1)
             for p in itertools.permutations(range(K))]
    return torch.stack(costs, 1).min(1).values


def test_pairwise_cost_matches_broadcast(gen):
    est = torch.randn(4, 3, 2, 5, 5, generator=gen, dtype=torch.float64)
    ref = torch.randn(4, 3, 2, 5, 5, generator=gen, dtype=torch.float64)
    direct = ((est[:, :, None] - ref[:, None, :]) ** 2).flatten(3).sum(-1)
    torch.testing.assert_close(pairwise_cost(est, ref), direct)


@pytest.mark.parametrize("K", [2, 3, 4, 5, 6, 7])
def test_best_permutation_is_the_optimum(gen, K):
    # K <= 5 exercises the exhaustive search, K > 5 the Hungarian path.
    est = torch.randn(16, K, 12, generator=gen, dtype=torch.float64)
    ref = torch.randn(16, K, 12, generator=gen, dtype=torch.float64)
    perm = best_permutation(est, ref)
    found = ((est - apply_permutation(ref, perm)) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(found, brute_force_best_cost(est, ref))


@pytest.mark.parametrize("K", [2, 3, 5, 6, 8])
def test_pit_recovers_a_known_permutation_exactly(gen, K):
    # Asteroid-style: references are constants 0..K-1, estimates a permuted copy.
    B = 10
    ref = torch.arange(K, dtype=torch.float32)[None, :, None, None].expand(B, K, 3, 4).clone()
    true = torch.stack([torch.randperm(K, generator=gen) for _ in range(B)])
    est = apply_permutation(ref, true)
    perm = best_permutation(est, ref)
    assert torch.equal(perm, true)
    assert torch.equal(apply_permutation(ref, perm), est)


def test_hungarian_agrees_with_exhaustive(gen, monkeypatch):
    est = torch.randn(32, 5, 20, generator=gen, dtype=torch.float64)
    ref = torch.randn(32, 5, 20, generator=gen, dtype=torch.float64)
    exhaustive = best_permutation(est, ref)
    monkeypatch.setattr(pit, "EXHAUSTIVE_MAX_K", 1)
    assert torch.equal(best_permutation(est, ref), exhaustive)


def test_a_wrong_search_is_caught(gen, monkeypatch):
    """Negative control: a search that returns the identity fails the optimum check."""
    est = torch.randn(16, 3, 12, generator=gen, dtype=torch.float64)
    ref = torch.randn(16, 3, 12, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(pit, "solve_assignment",
                        lambda cost: torch.arange(3).expand(cost.shape[0], 3))
    perm = pit.best_permutation(est, ref)
    found = ((est - apply_permutation(ref, perm)) ** 2).flatten(1).sum(1)
    assert not torch.allclose(found, brute_force_best_cost(est, ref))


def test_permutation_round_trip(gen):
    x = torch.randn(6, 4, 3, 8, 8, generator=gen)
    perm = torch.stack([torch.randperm(4, generator=gen) for _ in range(6)])
    back = apply_permutation(apply_permutation(x, perm), invert_permutation(perm))
    assert torch.equal(back, x)
    assert torch.equal(apply_permutation(x, invert_permutation(invert_permutation(perm))),
                       apply_permutation(x, perm))


def test_apply_permutation_is_differentiable(gen):
    x = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    perm = torch.tensor([[2, 0, 1], [1, 2, 0]])
    (apply_permutation(x, perm) * torch.arange(3.0)[None, :, None]).sum().backward()
    # the row sent to slot k gets gradient k
    expect = torch.empty(2, 3)
    for b in range(2):
        for k in range(3):
            expect[b, perm[b, k]] = k
    torch.testing.assert_close(x.grad[..., 0], expect)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        pairwise_cost(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="perm must have shape"):
        apply_permutation(torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long))


def test_pit_loss_is_the_minimum_over_permutations(gen):
    est = torch.randn(8, 3, 20, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(8, 3, 20, generator=gen, dtype=torch.float64)
    best = brute_force_best_cost(est.detach(), ref)
    torch.testing.assert_close(pit.pit_loss(est, ref, "log"), 10 * torch.log10(best + 1e-8))
    torch.testing.assert_close(pit.pit_loss(est, ref, "mse"), best / 60)
    pit.pit_loss(est, ref).sum().backward()
    assert est.grad.abs().sum() > 0
    # a permuted exact copy has zero error
    perm = torch.tensor([[1, 2, 0]]).expand(8, 3)
    assert pit.pit_loss(apply_permutation(ref, perm), ref, "mse").max() == 0
    with pytest.raises(ValueError, match="PIT loss"):
        pit.pit_loss(est, ref, "l1")
