"""Permutation invariant training (PIT): the best arrangement of references for each example.

SURF (3), (7)-(9), (21)-(22) and FLOSS (16)-(17) all pick, per example, the permutation of
the K reference rows closest to K estimate rows. This module is the only place that does it.

How: the K x K squared-error costs of every (estimate, reference) pair come from one batched
matrix product, ||e||^2 + ||r||^2 - 2 e.r (docs/math.md, 3.2); the search over permutations
then runs on that tiny [B, K, K] tensor, never on the signals.
  * K <= 5: exhaustive, vectorised over the batch and all K! permutations at once.
  * K >  5: the Hungarian algorithm (scipy.optimize.linear_sum_assignment) per example.

Convention (used everywhere in surf_mini): ``perm[b, k] = j`` means output slot k of example
b takes reference row j, so ``apply_permutation(ref, perm)[b, k] == ref[b, perm[b, k]]``.

The ``Example:`` block at the end of a docstring is run by tests/test_doctests.py in this
module's namespace; to try one in a REPL, first ``import torch`` and
``from surf_mini.pit import *``.

References
    [PIT]  M. Kolbaek et al., "Multitalker speech separation with utterance-level
           permutation invariant training", IEEE/ACM TASLP 2017.
    [SURF] arXiv 2606.04921, equations (3), (7)-(9), (21)-(22).
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

# Above this many sources the K! table gets large (6! = 720 rows); Hungarian is exact too.
EXHAUSTIVE_MAX_K = 5


def _check_pair(est: torch.Tensor, ref: torch.Tensor) -> None:
    if est.dim() < 2 or est.shape != ref.shape:
        raise ValueError(f"est and ref must both have shape [B, K, *S], got "
                         f"{tuple(est.shape)} and {tuple(ref.shape)}")


def pairwise_cost(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Squared errors of every (estimate, reference) pair.  SURF (3) with l = ||.||^2.

    est, ref: [B, K, *S] -> cost [B, K, K], ``cost[b, i, j] = ||est[b, i] - ref[b, j]||^2``.
    Computed as ||e||^2 + ||r||^2 - 2 e.r with one ``bmm`` (no [B, K, K, *S] broadcast).
    Clamped at 0: the expansion can go slightly negative by rounding.

    Example:
        >>> est = torch.tensor([[[0., 0.], [1., 1.]]])         # B = 1, K = 2, S = (2,)
        >>> ref = torch.tensor([[[1., 1.], [3., 0.]]])
        >>> pairwise_cost(est, ref)                            # ||est[b, i] - ref[b, j]||^2
        tensor([[[2., 9.],
                 [0., 5.]]])
    """
    _check_pair(est, ref)
    e = est.flatten(2)                                                   # [B, K, D]
    r = ref.flatten(2)                                                   # [B, K, D]
    cross = torch.bmm(e, r.transpose(1, 2))                              # [B, K, K]
    cost = e.pow(2).sum(-1)[:, :, None] + r.pow(2).sum(-1)[:, None, :] - 2 * cross
    return cost.clamp_min(0)


@lru_cache(maxsize=None)
def _all_permutations(K: int) -> torch.Tensor:
    """All K! permutations of range(K) as a long tensor [K!, K] (cached, on the CPU)."""
    return torch.tensor(list(itertools.permutations(range(K))), dtype=torch.long)


def solve_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Minimum-cost permutation for each [K, K] cost matrix.

    cost: [B, K, K] (cost[b, i, j]: output i takes reference j) -> perm [B, K] long with
    ``perm = argmin_p sum_i cost[b, i, p[i]]``. Exhaustive for K <= 5, Hungarian beyond.
    Any cost works (squared error, negative SI-SDR, ...); ties go to the lexicographically
    first permutation in the exhaustive case.
    """
    if cost.dim() != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape [B, K, K], got {tuple(cost.shape)}")
    B, K, _ = cost.shape
    if K <= EXHAUSTIVE_MAX_K:
        perms = _all_permutations(K).to(cost.device)                     # [P, K]
        # total[b, p] = sum_i cost[b, i, perms[p, i]]
        rows = torch.arange(K, device=cost.device)
        total = cost[:, rows[None, :], perms].sum(-1)                    # [B, P]
        return perms[total.argmin(dim=1)]                                # [B, K]
    cost_np = cost.detach().double().cpu().numpy()
    perm = np.empty((B, K), dtype=np.int64)
    for b in range(B):
        rows, cols = linear_sum_assignment(cost_np[b])
        perm[b, rows] = cols
    return torch.from_numpy(perm).to(cost.device)


@torch.no_grad()
def best_permutation(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The arrangement of ``ref`` closest to ``est`` in squared error.  SURF (3), (22).

    est, ref: [B, K, *S] -> perm [B, K] long, such that ``apply_permutation(ref, perm)``
    minimises ``||est - apply_permutation(ref, perm)||^2`` per example. No gradient.

    Example:
        >>> ref = torch.arange(6.).reshape(2, 3, 1)            # B = 2, K = 3 constant sources
        >>> shuffle = torch.tensor([[2, 0, 1], [1, 2, 0]])
        >>> est = apply_permutation(ref, shuffle) + 0.1        # shuffled and slightly off
        >>> best_permutation(est, ref)                         # PIT finds the shuffle
        tensor([[2, 0, 1],
                [1, 2, 0]])
    """
    return solve_assignment(pairwise_cost(est, ref))


def apply_permutation(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder the source axis per example: ``out[b, k] = x[b, perm[b, k]]``.

    x: [B, K, *S]; perm: [B, K] long -> [B, K, *S]. Differentiable in x (torch.gather).
    In the papers' notation this is Upsilon x (block-diagonal permutation, SURF (20)).

    Example:
        >>> x = torch.tensor([[[10.], [20.], [30.]]])          # B = 1, K = 3, S = (1,)
        >>> apply_permutation(x, torch.tensor([[2, 0, 1]])).flatten()
        tensor([30., 10., 20.])
    """
    if perm.shape != x.shape[:2]:
        raise ValueError(f"perm must have shape {tuple(x.shape[:2])}, got {tuple(perm.shape)}")
    index = perm.reshape(perm.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.gather(x, 1, index)


def invert_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch of permutations: ``apply_permutation(apply_permutation(x, p),
    invert_permutation(p)) == x``.  Upsilon^{-1} in SURF (16), (17), (30).

    perm: [B, K] (or [N]) long -> same shape.

    Example:
        >>> perm = torch.tensor([[2, 0, 1], [1, 0, 2]])
        >>> inv = invert_permutation(perm)
        >>> inv
        tensor([[1, 2, 0],
                [1, 0, 2]])
        >>> apply_permutation(perm, inv)                       # perm after inv: the identity
        tensor([[0, 1, 2],
                [0, 1, 2]])
        >>> x = torch.arange(24.).reshape(2, 3, 4)
        >>> torch.equal(apply_permutation(apply_permutation(x, perm), inv), x)
        True
    """
    return torch.argsort(perm, dim=-1)


def pit_loss(est: torch.Tensor, ref: torch.Tensor, kind: str = "log",
             eps: float = 1e-8) -> torch.Tensor:
    """Supervised PIT loss L(x, x_hat) = min_sigma l(x_hat, sigma x).  SURF (3).

    est, ref: [B, K, *S] -> per-example loss [B].
      * ``"log"``: l = 10 log10 ||x - x_hat||^2 over the whole K-tuple, the supervised
                   regression baseline of SURF section 5.1 (its argmin is the squared-error
                   one, so ``best_permutation`` finds it);
      * ``"mse"``: l = ||x - x_hat||^2 as a mean over elements.
    """
    aligned = apply_permutation(ref, best_permutation(est, ref))        # sigma x
    sq = (est - aligned).pow(2).flatten(1)
    if kind == "mse":
        return sq.mean(1)
    if kind == "log":
        return 10 * torch.log10(sq.sum(1) + eps)
    raise ValueError(f"unknown PIT loss {kind!r}; use 'log' or 'mse'")
