"""The SURF teacher: EMA of the student, and the hybrid MixIT/flow sampler.

SURF Algorithm 1 line 16 updates the teacher as an exponential moving average of the student,
theta_T <- alpha theta_T + (1 - alpha) theta (alpha = 0.999 is best, SURF Table 9). While that
teacher is young, Appendix D.3 samples from a hybrid velocity field that follows the frozen
MixIT separator for t < beta and the EMA flow for t >= beta, with beta decaying linearly from
1 to 0 over the first N iterations (200k in the paper).

Both networks are passed in as callables, so this works for any architecture:
    mixit_fn(m) -> [B, K, *S]              (reduce M > K outputs with mixit.merge_outputs)
    flow_fn(x_t, t, m) -> [B, K, *S]

The ``Example:`` block at the end of a docstring is run by tests/test_doctests.py in this
module's namespace; to try one in a REPL, first ``import torch`` and
``from surf_mini.ema import *``.

References
    [SURF] arXiv 2606.04921, Algorithm 1, Appendix D.3, Table 9.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .flow import VelocityFn, euler_sample, initial_state
from .mixit import mixture_consistency


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """theta_T <- alpha theta_T + (1 - alpha) theta, in place.  SURF Algorithm 1, line 16.

    Floating-point parameters and buffers are averaged; integer buffers (counters) are
    copied. ``alpha = 0`` copies the student, ``alpha = 1`` freezes the teacher. Either
    module may be a ``torch.compile`` wrapper.

    Example:
        >>> teacher, student = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        >>> teacher.weight.data[:] = 0.0; student.weight.data[:] = 1.0
        >>> ema_update(teacher, student, alpha=0.5)            # halfway to the student
        >>> teacher.weight.item()
        0.5
        >>> ema_update(teacher, student, alpha=1.0)            # alpha = 1: frozen
        >>> teacher.weight.item()
        0.5
        >>> ema_update(teacher, student, alpha=0.0)            # alpha = 0: a copy
        >>> torch.equal(teacher.weight, student.weight), torch.equal(teacher.bias, student.bias)
        (True, True)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"EMA decay alpha must be in [0, 1], got {alpha}")
    # torch.compile wraps a module and prefixes its parameter names with "_orig_mod."
    teacher = getattr(teacher, "_orig_mod", teacher)
    student = getattr(student, "_orig_mod", student)
    t_params = dict(teacher.named_parameters())
    for name, p in student.named_parameters():
        t_params[name].lerp_(p.detach(), 1.0 - alpha)
    t_bufs = dict(teacher.named_buffers())
    for name, b in student.named_buffers():
        if b.is_floating_point():
            t_bufs[name].lerp_(b, 1.0 - alpha)
        else:
            t_bufs[name].copy_(b)


def beta_at(step: int, decay_steps: int) -> float:
    """Hybrid-teacher threshold beta: linear from 1 at step 0 to 0 at ``decay_steps``, then 0.

    SURF Appendix D.3 (decay_steps = 200k in the paper). ``decay_steps = 0`` means beta = 0
    from the start (pure EMA flow teacher).

    Example:
        >>> [beta_at(step, decay_steps=4) for step in range(6)]    # linear, then 0
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
        >>> beta_at(0, decay_steps=0)                          # no MixIT phase at all
        0.0
    """
    if decay_steps <= 0:
        return 0.0
    return max(0.0, 1.0 - step / decay_steps)


def hybrid_velocity(mixit_estimate: torch.Tensor, x0: torch.Tensor, flow_fn: VelocityFn,
                    beta: float) -> VelocityFn:
    """v_beta(x_t, t, m) = f_MixIT(m) - x_0 if t < beta, else v_theta_T(x_t, t, m).  SURF D.3.

    mixit_estimate: f_MixIT(m), [B, K, *S], computed once per batch; x0: the sampler's start
    state [B, K, *S]. For t < beta the sampler moves on the straight line from x_0 to the
    MixIT estimate; the flow network is not called for those steps.
    """
    straight = mixit_estimate - x0                                       # [B, K, *S]

    def velocity(x_t: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        below = t < beta                                                 # [B]
        if bool(below.all()):
            return straight
        v = flow_fn(x_t, t, m)
        if not bool(below.any()):
            return v
        return torch.where(below.reshape(-1, *([1] * (v.dim() - 1))), straight, v)

    return velocity


@torch.no_grad()
def hybrid_teacher_sample(mixit_fn: Callable[[torch.Tensor], torch.Tensor], flow_fn: VelocityFn,
                          m: torch.Tensor, K: int, beta: float,
                          schedule: int | str | Sequence[float] = "floss5",
                          x0: torch.Tensor | None = None, **start_kwargs) -> torch.Tensor:
    """Teacher estimates X_bar ~ p_theta_T(. | M) with the hybrid teacher.  SURF Alg. 1 line 4, D.3.

    m: [B, 1, *S] -> [B, K, *S], mixture-consistent. The MixIT estimate is projected to be
    mixture-consistent first (so the straight segment stays in the affine set sum_k x_k = m).
    beta = 1: every step follows the MixIT line, and the result is that estimate (up to
    float rounding of the step sizes). beta = 0: exactly ``euler_sample(flow_fn, ...)``.
    """
    if x0 is None:
        x0 = initial_state(m, K, **start_kwargs)
    if beta <= 0:
        return euler_sample(flow_fn, m, K, schedule, x0=x0)
    est = mixit_fn(m)
    if est.shape != x0.shape:
        raise ValueError(f"the MixIT teacher returned {tuple(est.shape)}, the flow needs "
                         f"{tuple(x0.shape)}; reduce its outputs with mixit.merge_outputs")
    est = mixture_consistency(est, m)
    return euler_sample(hybrid_velocity(est, x0, flow_fn, beta), m, K, schedule, x0=x0)
