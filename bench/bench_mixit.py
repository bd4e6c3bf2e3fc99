"""MixIT speed: surf_mini.mixit.mixit_loss against the plain approaches, side by side.

    python bench/bench_mixit.py [--batch 128] [--repeats 3]

Timed: loss forward + backward for one batch (what a training step pays), negative
thresholded SNR, for M = 4 and 8 outputs on a CIFAR-sized image (3x32x32) and 2 s of 8 kHz
audio:
  * surf_mini:  all 2^M assignments scored from the Gram matrix [B, M, M], the mixtures'
                inner products [B, 2, M] and energies; the loss of the best one at signal
                level (surf_mini/mixit.py);
  * loop:       a Python loop over the 2^M assignments, each remixed at signal length
                (vectorised over the batch, no grad), then the loss of the best with grad;
  * broadcast:  all 2^M remixes at once, [B, 2^M, 2, *S] (the usual public-code approach).
"largest tensor" is the biggest intermediate each approach allocates (computed from shapes).
All three give the same loss (checked). Ratios are baseline time / surf_mini time.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402
from surf_mini.mixit import _assignments, mixit_loss, neg_thresholded_snr  # noqa: E402


def loop_loss(est, mix_a, mix_b):
    """Search the 2^M assignments in a Python loop at signal length (no grad, else the graph
    of every remix is kept: 50 GB at M = 8 on audio), then the loss of the best with grad."""
    M = est.shape[1]
    shape = (1, M) + (1,) * (est.dim() - 2)

    def loss_of(a):
        ya, yb = ((1 - a) * est).sum(1, keepdim=True), (a * est).sum(1, keepdim=True)
        return neg_thresholded_snr(mix_a, ya) + neg_thresholded_snr(mix_b, yb)

    with torch.no_grad():
        scores = torch.stack([loss_of(a.reshape(shape)) for a in _assignments(M)], 1)
    best = _assignments(M)[scores.argmin(1)]                           # [B, M]
    return loss_of(best.reshape(best.shape + (1,) * (est.dim() - 2)))


def broadcast_loss(est, mix_a, mix_b, tau=1e-3):
    M = est.shape[1]
    a = _assignments(M)                                                # [R, M]
    A = torch.stack([1 - a, a], 1)                                     # [R, 2, M]
    remix = torch.einsum("rim,bmd->brid", A, est.flatten(2))           # [B, R, 2, D]
    ref = torch.cat([mix_a, mix_b], 1).flatten(2)[:, None]             # [B, 1, 2, D]
    y = ref.pow(2).sum(-1)
    err = (ref - remix).pow(2).sum(-1)
    snr = -10 * torch.log10((y + 1e-8) / (err + tau * y + 1e-8))       # [B, R, 2]
    return snr.sum(-1).min(1).values


def step(fn, est, mix_a, mix_b):
    est.grad = None
    loss = fn(est, mix_a, mix_b)
    if isinstance(loss, tuple):
        loss = loss[0]
    loss.sum().backward()
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-gib", type=float, default=8.0,
                   help="skip the broadcast baseline when its estimated peak exceeds this")
    args = p.parse_args()
    torch.manual_seed(0)
    B = args.batch
    print(f"MixIT loss forward + backward, batch {B}, float32, {torch.get_num_threads()} CPU "
          f"threads, torch {torch.__version__}; median wall time per call")
    print("| signal | M | surf_mini (ms) | loop (ms) | broadcast (ms) | loop / surf_mini "
          "| broadcast / surf_mini | largest tensor: surf_mini / broadcast |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape in (("image 3x32x32", (3, 32, 32)), ("audio 2 s @ 8 kHz", (16000,))):
        D = 1
        for s in shape:
            D *= s
        for M in (4, 8):
            est = torch.randn(B, M, *shape, requires_grad=True)
            mix_a, mix_b = torch.randn(B, 1, *shape), torch.randn(B, 1, *shape)
            big_ours = 4 * B * max(M, 2) * D / 2 ** 20            # est itself / the 2 remixes
            big_bc = 4 * B * 2 ** M * 2 * D / 2 ** 20             # [B, 2^M, 2, D] float32
            # remix, difference, square and their gradients: about 4 such tensors at the peak
            run_bc = 4 * big_bc / 1024 <= args.max_gib
            ours = mixit_loss(est, mix_a, mix_b)[0]
            others = [loop_loss(est, mix_a, mix_b)]
            if run_bc:
                others.append(broadcast_loss(est, mix_a, mix_b))
            for other in others:
                assert torch.allclose(ours, other, atol=1e-3), "methods disagree"
            t_ours = median_time(lambda: step(mixit_loss, est, mix_a, mix_b), args.repeats)
            t_loop = median_time(lambda: step(loop_loss, est, mix_a, mix_b), args.repeats)
            if run_bc:
                t_bc = median_time(lambda: step(broadcast_loss, est, mix_a, mix_b), args.repeats)
                bc_time, bc_ratio = f"{1e3 * t_bc:.1f}", f"{t_bc / t_ours:.1f}x"
            else:
                bc_time, bc_ratio = f"skipped (~{4 * big_bc / 1024:.0f} GiB > --max-gib)", "-"
            print(f"| {name} | {M} | {1e3 * t_ours:.1f} | {1e3 * t_loop:.1f} | {bc_time} "
                  f"| {t_loop / t_ours:.1f}x | {bc_ratio} "
                  f"| {big_ours:.0f} MiB / {big_bc:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
