"""PIT speed: surf_mini.pit.best_permutation against the plain approaches, side by side.

    python bench/bench_pit.py [--batch 128] [--repeats 5]

For each K and signal shape (a CIFAR-sized image 3x32x32, 2 s of 8 kHz audio), one batch of
estimates and references is timed with
  * surf_mini:  one bmm for the [B, K, K] costs, then exhaustive search (K <= 5) or
                Hungarian (K > 5) on that tiny tensor (surf_mini/pit.py);
  * loop:       a Python loop over itertools.permutations, each permutation's squared error
                computed at signal length (vectorised over the batch);
  * hungarian:  per example, the K x K cost matrix by broadcasting at signal length, then
                scipy.optimize.linear_sum_assignment.
All three return the same optimum (checked). Ratios are baseline time / surf_mini time.
"""
import argparse
import itertools
import os
import sys

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402
from surf_mini.pit import apply_permutation, best_permutation  # noqa: E402


def pit_loop(est, ref):
    K = est.shape[1]
    perms = list(itertools.permutations(range(K)))
    costs = torch.stack([(est - ref[:, list(p)]).pow(2).flatten(1).sum(1) for p in perms], 1)
    return torch.tensor(perms)[costs.argmin(1)]


def pit_hungarian(est, ref):
    B, K = est.shape[:2]
    out = np.empty((B, K), dtype=np.int64)
    for b in range(B):
        cost = (est[b, :, None] - ref[b, None, :]).pow(2).flatten(2).sum(-1)
        rows, cols = linear_sum_assignment(cost.numpy())
        out[b, rows] = cols
    return torch.from_numpy(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"PIT, batch {args.batch}, float32, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}; median wall time per call")
    print("| signal | K | surf_mini (ms) | loop (ms) | hungarian (ms) | loop / surf_mini | hungarian / surf_mini |")
    print("|---|---|---|---|---|---|---|")
    for name, shape in (("image 3x32x32", (3, 32, 32)), ("audio 2 s @ 8 kHz", (16000,))):
        for K in (2, 3, 4, 6):
            est = torch.randn(args.batch, K, *shape)
            ref = torch.randn(args.batch, K, *shape)
            ours = best_permutation(est, ref)
            for other in (pit_loop(est, ref), pit_hungarian(est, ref)):
                a = (est - apply_permutation(ref, ours)).pow(2).flatten(1).sum(1)
                b = (est - apply_permutation(ref, other)).pow(2).flatten(1).sum(1)
                assert torch.allclose(a, b, rtol=1e-4), "methods disagree on the optimum"
            t_ours = median_time(lambda: best_permutation(est, ref), args.repeats)
            t_loop = median_time(lambda: pit_loop(est, ref), args.repeats)
            t_hung = median_time(lambda: pit_hungarian(est, ref), args.repeats)
            print(f"| {name} | {K} | {1e3 * t_ours:.2f} | {1e3 * t_loop:.1f} | {1e3 * t_hung:.1f} "
                  f"| {t_loop / t_ours:.1f}x | {t_hung / t_ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
