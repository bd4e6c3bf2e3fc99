"""Remixing: the batch shuffle Pi, its inverse, and the four remixing losses.

SURF sections 2.3 and 3 (Algorithm 1): teacher estimates of a batch are shuffled across the
whole batch by Pi ~ U(S_BK), regrouped into new mixtures, and a student learns from them.
  * regression ReMixIT        SURF (14)-(16)   ``remixit_loss``
  * regression Self-Remixing  SURF (17)        ``self_remixing_loss``
  * SURF-ReMixIT  (RM-FM)     SURF (20)-(24)   ``surf_loss(..., mode="rm")``
  * SURF-Self-Remixing (SR-FM) SURF (30)       ``surf_loss(..., mode="sr")``

Notation. A batch of estimates X [B, K, *S] is the papers' BK x d matrix with row
b*K + k = X[b, k]. Pi acts on those BK rows; Upsilon = blkdiag(sigma_1..sigma_B) acts within
each group of K rows (``pit.apply_permutation``). (I_B (x) 1^T) X, "sum each group of K
rows", is ``mix``.

The ``Example:`` block at the end of a docstring is run by tests/test_doctests.py in this
module's namespace; to try one in a REPL, first ``import torch`` and
``from surf_mini.remix import *``.

References
    [SURF]     arXiv 2606.04921, equations (14)-(30), Algorithm 1/2, code listing 1.
    [ReMixIT]  E. Tzinis et al., "ReMixIT: continual self-training of speech enhancement
               models via bootstrapped remixing", IEEE JSTSP 2022.
    [SelfRemix] K. Saijo, T. Ogawa, "Self-Remixing: unsupervised speech separation via
               separation and remixing", ICASSP 2023.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .flow import (VelocityFn, flow_loss, in_x1_space, initial_state, interpolate, pit_at_zero,
                   sample_time)
from .pit import apply_permutation, best_permutation, invert_permutation, pit_loss


def mix(x: torch.Tensor) -> torch.Tensor:
    """Sum over the source axis: (I_B (x) 1^T) X.  SURF (1), (15).

    x: [B, K, *S] -> [B, 1, *S].

    Example:
        >>> x = torch.arange(8.).reshape(2, 2, 2)              # B = 2, K = 2: rows r0..r3
        >>> mix(x).shape
        torch.Size([2, 1, 2])
        >>> mix(x).squeeze(1)                                  # SURF (1): r0 + r1, r2 + r3
        tensor([[ 2.,  4.],
                [10., 12.]])
        >>> pi = torch.tensor([0, 2, 1, 3])                    # a shuffle Pi of the 4 rows
        >>> mix(x.flatten(0, 1)[pi].reshape(x.shape)).squeeze(1)   # SURF (15): r0 + r2, r1 + r3
        tensor([[ 4.,  6.],
                [ 8., 10.]])
    """
    return x.sum(dim=1, keepdim=True)


def shuffle_sources(x: torch.Tensor, generator: torch.Generator | None = None):
    """X_tilde = Pi X with Pi ~ U(S_BK): shuffle all B*K rows of the batch.  SURF (14).

    x: [B, K, *S] -> (x_shuffled [B, K, *S], pi [B*K] long) with
    ``x_shuffled.flatten(0, 1) == x.flatten(0, 1)[pi]``. New mixtures are ``mix(x_shuffled)``
    (SURF (15)). Pi is uniform over all (BK)! orderings, so a new mixture may hold two
    estimates of the same original mixture, as in the paper (code listing 1).

    Example:
        >>> x = torch.arange(6.).reshape(3, 2, 1)              # B = 3, K = 2: rows 0..5
        >>> x_tilde, pi = shuffle_sources(x, torch.Generator().manual_seed(0))
        >>> sorted(pi.tolist())                                # a permutation of all B*K rows
        [0, 1, 2, 3, 4, 5]
        >>> torch.equal(x_tilde.flatten(0, 1), x.flatten(0, 1)[pi])
        True
        >>> torch.equal(mix(x_tilde).sum(), mix(x).sum())      # every row used exactly once
        True
    """
    B, K = x.shape[:2]
    device = generator.device if generator is not None else x.device
    pi = torch.randperm(B * K, generator=generator, device=device).to(x.device)
    return x.flatten(0, 1)[pi].reshape(x.shape), pi


def unshuffle_sources(x_shuffled: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """Pi^{-1}: put every row back in its original mixture's slot.  SURF (17), (30).

    x_shuffled: [B, K, *S]; pi: [B*K] from ``shuffle_sources`` -> [B, K, *S].
    ``unshuffle_sources(shuffle_sources(x)[0], pi) == x`` exactly.

    Example:
        >>> x = torch.arange(6.).reshape(3, 2, 1)              # B = 3, K = 2
        >>> x_tilde, pi = shuffle_sources(x, torch.Generator().manual_seed(0))
        >>> torch.equal(unshuffle_sources(x_tilde, pi), x)     # Pi^{-1} Pi X = X
        True
        >>> torch.equal(mix(unshuffle_sources(x_tilde, pi)), mix(x))   # back to the mixtures
        True
    """
    if pi.shape != (x_shuffled.shape[0] * x_shuffled.shape[1],):
        raise ValueError(f"pi must have shape [{x_shuffled.shape[0] * x_shuffled.shape[1]}], "
                         f"got {tuple(pi.shape)}")
    return x_shuffled.flatten(0, 1)[invert_permutation(pi)].reshape(x_shuffled.shape)


# --------------------------------------------------------------------------------------
# Regression remixing (the baselines)
# --------------------------------------------------------------------------------------

def remixit_loss(est: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Regression ReMixIT: ||X_hat - Upsilon X_tilde||^2 with Upsilon by PIT.  SURF (16).

    est: student outputs on the remixed mixtures M_tilde = mix(targets), [B, K, *S];
    targets: the shuffled teacher estimates X_tilde, [B, K, *S] -> per-example loss [B]
    (mean over elements).
    """
    return pit_loss(est, targets, kind="mse")                            # PIT, then (16)


def self_remixing_loss(est: torch.Tensor, targets: torch.Tensor, pi: torch.Tensor,
                       m: torch.Tensor) -> torch.Tensor:
    """Regression Self-Remixing: ||(I_B (x) 1^T) Pi^{-1} Upsilon^{-1} X_hat - M||^2.  SURF (17).

    est: student outputs on M_tilde, [B, K, *S]; targets: X_tilde (used only to route the
    outputs, Upsilon by PIT as in (16)); pi: the shuffle; m: the observed mixtures
    [B, 1, *S] -> per-example loss [B] (mean over elements). The student's estimates are
    sent back to the original mixtures they came from and must sum to the observed ones.
    """
    upsilon = best_permutation(est, targets)                             # [B, K]
    routed = apply_permutation(est, invert_permutation(upsilon))         # Upsilon^{-1} X_hat
    remixed = mix(unshuffle_sources(routed, pi))                         # [B, 1, *S]
    return (remixed - m).pow(2).flatten(1).mean(1)


# --------------------------------------------------------------------------------------
# SURF: remixing flow matching
# --------------------------------------------------------------------------------------

def rm_fm_loss(residual: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """SURF-ReMixIT loss L_RM-FM = ||R_t||^2.  SURF (24).

    residual R_t and target velocity Upsilon X_tilde_1 - X_tilde_0: [B, K, *S] -> [B].
    ``kind`` as in ``flow.flow_loss`` ("db" is the FLOSS (19) log loss used for audio).
    """
    return flow_loss(residual, target, kind)


def sr_fm_loss(residual: torch.Tensor, target: torch.Tensor, upsilon: torch.Tensor,
               pi: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """SURF-Self-Remixing loss L_SR-FM = ||(I_B (x) 1^T) Pi^{-1} Upsilon^{-1} R_t||^2.  SURF (30).

    residual R_t, target velocity Upsilon X_tilde_1 - X_tilde_0: [B, K, *S] (rows in the
    student's output order); upsilon [B, K]; pi [B*K] -> [B].
    Undo the PIT alignment, undo the shuffle so each row is back in its original mixture's
    slot, sum each original mixture's K rows: the mixture residual of SURF (82), up to the
    (1 - t) factor that (30) drops from (29). For ``kind="normalized"/"db"`` the same map is
    applied to the target velocity and used as the normaliser (Decision: the papers give the
    log loss for RM-FM only; this is its direct analogue).
    """
    def to_mixture(y: torch.Tensor) -> torch.Tensor:
        return mix(unshuffle_sources(apply_permutation(y, invert_permutation(upsilon)), pi))

    return flow_loss(to_mixture(residual), to_mixture(target), kind)


class SurfStep(NamedTuple):
    """Everything one SURF step computes (for logging and tests)."""
    loss: torch.Tensor        # [B] per-(new-)mixture loss
    residual: torch.Tensor    # R_t, [B, K, *S]                  SURF (23)
    target: torch.Tensor      # Upsilon X_tilde_1 - X_tilde_0    SURF (23)
    x1: torch.Tensor          # X_tilde_1 = Pi X_bar (unaligned)  SURF (14)
    x0: torch.Tensor          # X_tilde_0                         SURF (4)
    m_tilde: torch.Tensor     # M_tilde, [B, 1, *S]               SURF (15)
    pi: torch.Tensor          # [B*K]
    upsilon: torch.Tensor     # [B, K]                            SURF (21)
    t: torch.Tensor           # [B]


def surf_loss(velocity_fn: VelocityFn, teacher_estimates: torch.Tensor, mode: str = "sr",
              kind: str = "mse", time_kind: str = "delta", shaping: str = "plain",
              sigma: float = 1.0, generator: torch.Generator | None = None,
              space: str = "velocity") -> SurfStep:
    """Steps 2-6 of SURF Algorithm 1 for teacher estimates X_bar of a batch.

    teacher_estimates: [B, K, *S] (no gradient needed; step 1, the teacher's sampling, is
    the caller's) -> ``SurfStep`` with the per-example loss in ``.loss``.
      2. Pi ~ U(S_BK); X_tilde_1 = Pi X_bar; M_tilde = (I_B (x) 1^T) X_tilde_1   SURF (14)-(15)
      3. t ~ lambda; X_tilde_0 = (1/K)(I_B (x) 1) M_tilde + (I_B (x) P_perp) Z     SURF (4)
      4. Upsilon = argmin ||v(X_tilde_0, 0, M_tilde) - (Gamma X_tilde_1 - X_tilde_0)||^2  (21)
      5. X_tilde_t = (1-t) X_tilde_0 + t Upsilon X_tilde_1;  R_t = v(X_tilde_t, t, M_tilde)
         - (Upsilon X_tilde_1 - X_tilde_0)                                       SURF (20), (23)
      6. mode "rm": ||R_t||^2 (24);  mode "sr": ||(I_B (x) 1^T) Pi^{-1} Upsilon^{-1} R_t||^2 (30)
    ``space="x1"`` measures both on (1 - t) R_t, the clean-estimate error of SURF (28); for
    "sr" that is the (1 - t)^2-weighted SR-FM loss of SURF (29).
    """
    if mode not in ("rm", "sr"):
        raise ValueError(f"unknown SURF mode {mode!r}; use 'rm' (SURF (24)) or 'sr' (SURF (30))")
    B, K = teacher_estimates.shape[:2]
    x1, pi = shuffle_sources(teacher_estimates.detach(), generator)      # [B, K, *S]
    m_tilde = mix(x1)                                                    # [B, 1, *S]
    t = sample_time(B, time_kind, generator=generator, device=x1.device, dtype=x1.dtype)
    x0 = initial_state(m_tilde, K, shaping, sigma, generator)            # [B, K, *S]
    upsilon = pit_at_zero(velocity_fn, x0, x1, m_tilde)                  # [B, K]
    x1_aligned = apply_permutation(x1, upsilon)                          # Upsilon X_tilde_1
    target = x1_aligned - x0
    residual = velocity_fn(interpolate(x0, x1_aligned, t), t, m_tilde) - target
    r, tg = in_x1_space(residual, target, t, space)
    if mode == "rm":
        loss = rm_fm_loss(r, tg, kind)
    else:
        loss = sr_fm_loss(r, tg, upsilon, pi, kind)
    return SurfStep(loss, residual, target, x1, x0, m_tilde, pi, upsilon, t)
