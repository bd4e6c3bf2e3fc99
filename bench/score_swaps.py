"""How much of a speech separator's loss is speaker swaps: outputs that follow one voice for a
while and then the other.

    python bench/score_swaps.py CKPT [CKPT ...] --data ~/data/speech4        # the real-voice test set
    python bench/score_swaps.py CKPT --data ~/data/speech4 --windows 2 1 0.5

The test mixtures are those of ``python -m surf_mini.audio_eval evaluate`` with the same ``--eval-*``
options (default: 200 mixtures of 4 s at 0 dB). Each checkpoint separates them as
``--evaluate`` does (a 4-output MixIT network merged to 2 without references). Then the
outputs are put in order against the references twice:
- once for the whole mixture (PIT; the figure every table reports), and
- once per window of W seconds, each window on its own (an *oracle*: it uses the references).

SI-SDRi is computed over the whole mixture both times. If the second figure is much higher,
the network separates locally but does not keep a voice in one output: it swaps. If both are
low, it does not separate at all. The window order is the permutation with the largest sum of
inner products between outputs and references, so a rescaled output counts the same.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from surf_mini import audio_eval as E  # noqa: E402
from surf_mini.checkpoints import audio_network  # noqa: E402
from surf_mini import audio_data as A  # noqa: E402
from surf_mini.metrics import si_sdr_improvement  # noqa: E402
from surf_mini.mixit import merge_outputs  # noqa: E402


def order_by_window(est: torch.Tensor, ref: torch.Tensor, window: int) -> torch.Tensor:
    """est, ref: [N, K, T] -> est [N, K, T] with each ``window`` samples put in the order of
    ``ref`` on their own (the permutation with the largest sum of inner products)."""
    K = ref.shape[1]
    perms = torch.tensor(list(itertools.permutations(range(K))))              # [P, K]
    out = torch.empty_like(est)
    for s in range(0, est.shape[-1], window):
        e, r = est[..., s:s + window], ref[..., s:s + window]
        gram = torch.einsum("nkt,njt->nkj", e.double(), r.double())            # output k . reference j
        score = gram[:, perms, torch.arange(K)].sum(-1)                       # [N, P]
        pick = perms[score.argmax(1)]                                         # [N, K]: output for ref j
        out[..., s:s + window] = torch.gather(e, 1, pick[..., None].expand(-1, -1, e.shape[-1]))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True, help="a corpus folder (python prepare/speech.py DIR)")
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--eval-seconds", type=float, default=4.0)
    p.add_argument("--eval-snr", type=float, default=0.0)
    p.add_argument("--windows", type=float, nargs="+", default=[2.0, 1.0, 0.5, 0.25],
                   help="window lengths (s) of the oracle re-ordering")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ckpts, sr = E.read_checkpoints(a.checkpoints, "score")
    # the mixtures of `python -m surf_mini.audio_eval evaluate` with these --eval-* options
    spec = argparse.Namespace(task="speech", data=a.data, eval_csv=None, eval_size=a.eval_size,
                              eval_seconds=a.eval_seconds, eval_snr=a.eval_snr)
    try:
        m, ref = E.test_set(spec, sr)                               # [N, 1, T], [N, 2, T]
    except A.AudioDataError as e:
        raise SystemExit(f"error: {e}") from None
    rows = []
    for path, ckpt in ckpts:
        est = E.separate(audio_network(ckpt, "ema", path), m, "cpu", 0)
        est = merge_outputs(est, ref.shape[1]) if est.shape[1] > ref.shape[1] else est
        cells = [order_by_window(est, ref, est.shape[-1])]                    # whole mixture: PIT
        cells += [order_by_window(est, ref, max(1, int(w * sr))) for w in a.windows]
        label = "/".join(os.path.abspath(path).split(os.sep)[-3:-1])
        rows.append((label, [si_sdr_improvement(c, ref, m).mean().item() for c in cells]))
    print(f"\nSI-SDRi (dB) on {a.eval_size} test mixtures of {a.eval_seconds:g} s at {a.eval_snr:g} dB "
          f"from {a.data}: outputs ordered once per mixture (PIT), then per window (oracle)\n")
    print("| checkpoint | whole mixture (PIT) | " + " | ".join(f"every {w:g} s" for w in a.windows) + " |")
    print("|---|---|" + "---|" * len(a.windows))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
