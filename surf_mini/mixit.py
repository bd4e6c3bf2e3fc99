"""Mixture invariant training (MixIT): the unsupervised teacher.

A separator with M outputs sees the sum of two mixtures, m_bar = m_a + m_b, and is trained
so that some split of its outputs into two groups rebuilds m_a and m_b:
    L_MixIT = min_A sum_i l(m_i, (A x_hat)_i),   A in {0,1}^{2 x M}, one 1 per column.
It never sees a source. SURF uses it as the frozen teacher (SURF section 5, Appendix D.3-D.5).

Speed. All 2^M assignments are scored at once from three small tensors computed in one pass
over the signals (docs/math.md, 3.3): the outputs' Gram matrix G [B, M, M], their inner
products with the two mixtures c [B, 2, M] and the mixtures' energies e [B, 2]. With the
0/1 selection s of mixture i,
    ||m_i - sum_j s_j x_j||^2 = e_i - 2 s.c_i + s^T G s.
The best assignment is picked on those [B, 2^M] scores (no gradient); the loss (and its
gradient) is then computed exactly at signal level for that one assignment, so there is no
2^M-fold broadcast of the signals and no rounding from the expansion in the gradient.

The ``Example:`` block at the end of a docstring is run by tests/test_doctests.py in this
module's namespace; to try one in a REPL, first ``import torch`` and
``from surf_mini.mixit import *``.

References
    [MixIT] S. Wisdom et al., "Unsupervised sound separation using mixture invariant
            training", NeurIPS 2020.
    [SURF]  arXiv 2606.04921, Appendix D.4 (image recipe), D.5 (audio recipe).
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import torch

# Negative thresholded SNR soft threshold tau = 10^(-SNR_max/10) with SNR_max = 30 dB
# (Wisdom et al. 2020).
DEFAULT_TAU = 10 ** (-30 / 10)


@lru_cache(maxsize=None)
def _assignments(M: int) -> torch.Tensor:
    """All 2^M assignments as a float tensor [2^M, M]; entry 1 sends output j to mixture b."""
    codes = torch.arange(2 ** M)
    return ((codes[:, None] >> torch.arange(M)[None, :]) & 1).float()


def _check(est: torch.Tensor, mix_a: torch.Tensor, mix_b: torch.Tensor) -> None:
    if est.dim() < 3:
        raise ValueError(f"est must have shape [B, M, *S], got {tuple(est.shape)}")
    want = (est.shape[0], 1) + tuple(est.shape[2:])
    for name, m in (("mix_a", mix_a), ("mix_b", mix_b)):
        if tuple(m.shape) != want:
            raise ValueError(f"{name} must have shape {want} to match est, got {tuple(m.shape)}")
    if est.shape[1] > 16:
        raise ValueError(f"MixIT enumerates 2^M assignments; M = {est.shape[1]} is too many")


def neg_thresholded_snr(ref: torch.Tensor, est: torch.Tensor,
                        tau: float = DEFAULT_TAU, eps: float = 1e-8) -> torch.Tensor:
    """-10 log10(||y||^2 / (||y - y_hat||^2 + tau ||y||^2)), per example.  MixIT loss.

    ref, est: [B, ...] -> [B]. Bounded below by 10 log10(tau) = -30 dB, so perfectly fitted
    examples stop dominating the gradient.
    """
    y = ref.flatten(1).pow(2).sum(1)
    err = (ref - est).flatten(1).pow(2).sum(1)
    return -10 * torch.log10((y + eps) / (err + tau * y + eps))


@torch.no_grad()
def assignment_scores(est: torch.Tensor, mix_a: torch.Tensor, mix_b: torch.Tensor,
                      kind: str = "snr", tau: float = DEFAULT_TAU) -> torch.Tensor:
    """Loss of every one of the 2^M assignments, from Gram statistics.  MixIT, docs/math.md 3.3.

    est: [B, M, *S]; mix_a, mix_b: [B, 1, *S] -> scores [B, 2^M]; row r of
    ``_assignments(M)`` is the assignment scored in column r.
    """
    _check(est, mix_a, mix_b)
    B, M = est.shape[:2]
    x = est.flatten(2)                                                   # [B, M, D]
    mixes = torch.cat([mix_a, mix_b], dim=1).flatten(2)                  # [B, 2, D]
    gram = torch.bmm(x, x.transpose(1, 2))                               # [B, M, M]
    cross = torch.bmm(mixes, x.transpose(1, 2))                          # [B, 2, M]
    energy = mixes.pow(2).sum(-1)                                        # [B, 2]
    a = _assignments(M).to(est)                                          # [R, M]
    sel = torch.stack([1 - a, a], dim=1)                                 # [R, 2, M]
    quad = torch.einsum("rim,bmn,rin->bri", sel, gram, sel)              # [B, R, 2]
    lin = torch.einsum("rim,bim->bri", sel, cross)                       # [B, R, 2]
    err = (energy[:, None, :] - 2 * lin + quad).clamp_min(0)             # [B, R, 2]
    if kind == "mse":
        return err.sum(-1)
    if kind == "snr":
        e = energy[:, None, :]
        return (-10 * torch.log10((e + 1e-8) / (err + tau * e + 1e-8))).sum(-1)
    raise ValueError(f"unknown MixIT loss {kind!r}; use 'snr' (audio) or 'mse' (images)")


def remix_outputs(est: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """A x_hat: sum the outputs sent to each mixture (the remix inside the MixIT loss).

    est: [B, M, *S]; assignment: [B, M] in {0, 1} (1 = mixture b) -> [B, 2, *S].
    """
    a = assignment.to(est.dtype).reshape(assignment.shape + (1,) * (est.dim() - 2))
    return torch.cat([((1 - a) * est).sum(1, keepdim=True), (a * est).sum(1, keepdim=True)], 1)


def mixit_loss(est: torch.Tensor, mix_a: torch.Tensor, mix_b: torch.Tensor, kind: str = "snr",
               tau: float = DEFAULT_TAU):
    """MixIT loss min_A sum_i l(m_i, (A x_hat)_i) over all 2^M assignments.  Wisdom et al. (2020).

    est: [B, M, *S] separator outputs for m_a + m_b; mix_a, mix_b: [B, 1, *S].
    ``kind``: "snr" (negative thresholded SNR, audio) or "mse" (squared error as a mean over
    elements, images; SURF D.4). Returns ``(loss [B], assignment [B, M] long)``, assignment
    1 meaning "output j rebuilds mix_b".

    Example:
        >>> est = torch.diag(torch.tensor([1., 2., 3., 4.]))[None]   # B = 1, M = 4 outputs
        >>> mix_a = est[:, 0:1] + est[:, 2:3]                  # m_a = outputs 0 + 2
        >>> mix_b = est[:, 1:2] + est[:, 3:4]                  # m_b = outputs 1 + 3
        >>> loss, assignment = mixit_loss(est, mix_a, mix_b, kind="mse")
        >>> assignment                                         # 1: "rebuilds mix_b"
        tensor([[0, 1, 0, 1]])
        >>> loss
        tensor([0.])
    """
    best = assignment_scores(est, mix_a, mix_b, kind, tau).argmin(dim=1)      # [B]
    assignment = _assignments(est.shape[1]).to(est.device)[best].long()      # [B, M]
    remixed = remix_outputs(est, assignment)                                 # [B, 2, *S]
    if kind == "mse":
        loss = (remixed - torch.cat([mix_a, mix_b], 1)).pow(2).flatten(1).mean(1)
    else:
        loss = (neg_thresholded_snr(mix_a, remixed[:, :1], tau)
                + neg_thresholded_snr(mix_b, remixed[:, 1:], tau))
    return loss, assignment


def output_sparsity(est: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """l1/l2 ratio of the outputs' RMS levels: 1 when one output is active, sqrt(M) when all
    M are equally loud.  Wisdom et al. (2021), "Sparse, efficient, and semantic MixIT", §2.2.

    est: [B, M, *S] -> [B]. Added to the MixIT loss with a small weight it favours fewer active
    outputs, against MixIT's tendency to over-separate (a two-source input spread over three or
    four outputs), which is what a reference-free reduction of M outputs to K then has to undo.
    Scale-invariant, so the weight does not depend on the signal level.

    Example:
        >>> one = torch.tensor([[[1., 1.], [0., 0.], [0., 0.], [0., 0.]]])   # [1, 4, 2]
        >>> round(output_sparsity(one).item(), 4)
        1.0
        >>> round(output_sparsity(torch.ones(1, 4, 2)).item(), 4)          # sqrt(4)
        2.0
    """
    rms = est.flatten(2).pow(2).mean(-1).add(eps).sqrt()                 # [B, M]; eps: silent outputs
    return rms.sum(1) / rms.pow(2).sum(1).sqrt()


def mixture_consistency(est: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Project estimates so they sum to the mixture: x_hat + (m - sum_k x_hat_k)/K.

    est: [B, K, *S]; m: [B, 1, *S] -> [B, K, *S] with ``out.sum(1) == m``. This is the
    orthogonal projection onto {x : sum_k x_k = m} (Wisdom et al. 2019, unweighted).

    Example:
        >>> est = torch.tensor([[[1., 1.], [2., 0.]]])         # sums to [3, 1]
        >>> m = torch.tensor([[[4., 4.]]])                     # but the mixture is [4, 4]
        >>> out = mixture_consistency(est, m)                  # each gets half of [1, 3]
        >>> out
        tensor([[[1.5000, 2.5000],
                 [2.5000, 1.5000]]])
        >>> torch.equal(out.sum(1, keepdim=True), m)
        True
    """
    if m.shape[1] != 1 or m.shape[0] != est.shape[0] or m.shape[2:] != est.shape[2:]:
        raise ValueError(f"m must have shape [B, 1, *S] matching est {tuple(est.shape)}, "
                         f"got {tuple(m.shape)}")
    return est + (m - est.sum(1, keepdim=True)) / est.shape[1]


def sample_mixtures_of_mixtures(signals: torch.Tensor, recipe: str = "image",
                                generator: torch.Generator | None = None):
    """Build MixIT training inputs from four independent signals per example.

    signals: [B, 4, *S], already scaled as the task's sources (halved images for the
    averaged image mixtures, so that the sum rule SURF (1) holds). Returns
    ``(mix_a, mix_b, n_sources)`` with mix_a, mix_b [B, 1, *S] and n_sources [B, 2] long.
      * ``"image"`` (SURF D.4, Wisdom et al.): each mixture is one signal or the sum of two
        with probability 1/2, so m_a + m_b has 2, 3 or 4 sources w.p. 25/50/25 %.
      * ``"audio"`` (SURF D.5): both mixtures hold two sources; no single-source mixture.
    """
    if signals.dim() < 3 or signals.shape[1] != 4:
        raise ValueError(f"signals must have shape [B, 4, *S], got {tuple(signals.shape)}")
    B = signals.shape[0]
    if recipe == "image":
        second = torch.rand(B, 2, generator=generator, device=signals.device) < 0.5
    elif recipe == "audio":
        second = torch.ones(B, 2, dtype=torch.bool, device=signals.device)
    else:
        raise ValueError(f"unknown recipe {recipe!r}; use 'image' or 'audio'")
    keep = second.to(signals.dtype).reshape(B, 2, *([1] * (signals.dim() - 2)))
    mix_a = signals[:, 0:1] + keep[:, 0:1] * signals[:, 1:2]
    mix_b = signals[:, 2:3] + keep[:, 1:2] * signals[:, 3:4]
    return mix_a, mix_b, 1 + second.long()


MERGE_RULES = ("loudest", "balanced")


def _splits(M: int, K: int) -> torch.Tensor:
    """Every way of sending M outputs to K non-empty groups, each counted once, one-hot [A, M, K].

    Groups are numbered in order of first appearance (output 0 is in group 0, ...), so the K!
    relabelings of one split are not repeated: 7 splits for M = 4, K = 2.
    """
    routes = [r for r in itertools.product(range(K), repeat=M)
              if len(set(r)) == K and all(r[i] <= max(r[:i], default=-1) + 1 for i in range(M))]
    return torch.nn.functional.one_hot(torch.tensor(routes), K)


def merge_weights(gram: torch.Tensor, K: int, rule: str = "loudest", cos_weight: float = 0.5) -> torch.Tensor:
    """Which group each of M outputs joins, from their Gram matrix alone.

    gram: [B, M, M] inner products of the outputs -> one-hot weights [B, M, K]. Only inner
    products are needed, so the statistics of a long recording can be gathered chunk by chunk.
      * ``"loudest"``: the K most energetic outputs (largest diagonal) are kept, in their
        original order; every other output goes to the kept output it is most similar to
        (cosine similarity).
      * ``"balanced"``: of all splits into K non-empty groups, the one whose group sums are
        most alike in energy and least alike in shape: it minimises the largest group's share
        of the energy plus ``cos_weight`` times the largest cosine between two group sums.
        It fits mixtures of sources at similar levels (two digits, two speakers at 0 dB) and
        undoes a MixIT teacher's over-separation better than "loudest" when the two loudest
        outputs are pieces of one source (docs/results-mnist.md, bench/bench_merge.py).
    """
    B, M = gram.shape[:2]
    if rule == "balanced":
        onehot = _splits(M, K).to(gram)                                  # [A, M, K]
        G = torch.einsum("amk,bmn,anl->bakl", onehot, gram, onehot)      # [B, A, K, K] group sums
        energy = torch.diagonal(G, dim1=2, dim2=3).clamp_min(0)         # [B, A, K]
        share = energy.amax(-1) / (energy.sum(-1) + 1e-12)               # 1/K .. 1
        cos = G / (energy[..., :, None].sqrt() * energy[..., None, :].sqrt() + 1e-12)
        off = ~torch.eye(K, dtype=torch.bool, device=gram.device)
        score = share + cos_weight * cos[..., off].amax(-1)              # [B, A]
        return onehot[score.argmin(1)]
    if rule != "loudest":
        raise ValueError(f"unknown merge rule {rule!r}; use one of {MERGE_RULES}")
    energy = torch.diagonal(gram, dim1=1, dim2=2)                        # [B, M]
    keep = energy.topk(K, dim=1).indices.sort(dim=1).values              # [B, K]
    sim = torch.gather(gram, 2, keep[:, None, :].expand(-1, M, -1))      # [B, M, K]
    sim = sim / (torch.gather(energy, 1, keep).clamp_min(0).sqrt()[:, None, :] + 1e-12)
    route = sim.argmax(dim=-1)                                           # [B, M]
    route.scatter_(1, keep, torch.arange(K, device=gram.device).expand(B, K))  # kept -> self
    return torch.nn.functional.one_hot(route, K).to(gram.dtype)


def merge_outputs(est: torch.Tensor, K: int, rule: str = "loudest") -> torch.Tensor:
    """Reduce M outputs to K, keeping their sum: the K-against-M choice of docs/math.md, section 7.

    est: [B, M, *S] -> [B, K, *S] with ``out.sum(1) == est.sum(1)``. With ``rule="loudest"``
    the K most energetic outputs are kept (in their original order) and every other output is
    added to the kept output it is most similar to (cosine similarity); ``rule="balanced"``
    picks the split into K groups of similar energy and unlike shape; see ``merge_weights``.
    A MixIT teacher with M = 4 outputs can so feed a K = 2 flow and the remixing of SURF
    Algorithm 1.

    Example:
        >>> est = torch.tensor([[[4., 0.], [0., 3.], [1., .5], [.5, 1.]]])   # M = 4 outputs
        >>> out = merge_outputs(est, K=2)    # keeps outputs 0 and 1; 2 joins 0, 3 joins 1
        >>> out
        tensor([[[5.0000, 0.5000],
                 [0.5000, 4.0000]]])
        >>> torch.allclose(out.sum(1), est.sum(1))             # the sum (the mixture) is kept
        True
    """
    B, M = est.shape[:2]
    if K > M:
        raise ValueError(f"cannot merge {M} outputs into K = {K} > M")
    if K == M:
        return est
    x = est.flatten(2)                                                   # [B, M, D]
    weights = merge_weights(torch.bmm(x, x.transpose(1, 2)), K, rule)    # [B, M, K]
    return torch.einsum("bmk,bmd->bkd", weights, x).reshape(B, K, *est.shape[2:])
