"""Speech separators scored per speaker pair: which voices a model separates, and which not.

    python bench/score_pairs.py CKPT [CKPT ...] --data ~/data/speech              # test pairs
    python bench/score_pairs.py CKPT --data ~/data/speech --split valid --per-pair 12

For every pair of speakers of ``--split`` it draws ``--per-pair`` fixed two-speaker mixtures
(4 s, second voice at ``--snr`` dB, seed per pair) with ``audio_data.ClipMixer`` restricted to
the pair, separates them with each checkpoint's EMA network as ``-m surf_mini.audio_eval evaluate``
does (5-step Euler for flows) and prints one table: SI-SDRi per pair and checkpoint (a
4-output MixIT network merged to 2 without references), then each speaker's mean over its
pairs. The overall figure of ``--evaluate`` hides which voices fail; this is the diagnosis
table of docs/speech.md. Numbers over 12 mixtures are rough (about ±1 dB).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import zlib

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from surf_mini import audio_eval as E  # noqa: E402
from surf_mini.checkpoints import audio_network  # noqa: E402
from surf_mini import audio_data as A  # noqa: E402
from surf_mini.metrics import audio_scores  # noqa: E402


def pair_mixtures(clips: dict, a: str, b: str, n: int, length: int, snr: float):
    """``n`` fixed mixtures [n, 1, T] and references [n, 2, T] of speakers ``a`` and ``b``."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{a}+{b}".encode()))
    return A.ClipMixer({a: clips[a], b: clips[b]}, 2, length, g, snr_db=snr).batch(n)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True, help="a corpus folder (python prepare/speech.py DIR)")
    p.add_argument("--split", default="test", choices=("test", "valid", "train"))
    p.add_argument("--per-pair", type=int, default=12)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--snr", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ckpts, sr = E.read_checkpoints(a.checkpoints, "score")
    nets = [("/".join(os.path.abspath(path).split(os.sep)[-3:-1]),           # e.g. speech3/sup-reg
             audio_network(ckpt, "ema", path)) for path, ckpt in ckpts]
    try:
        clips = A.load_clips(a.data, sr, a.split)
    except A.AudioDataError as e:
        raise SystemExit(f"error: {e}") from None
    length = int(round(a.seconds * sr))
    table, per_speaker = [], {}
    for s1, s2 in itertools.combinations(sorted(clips), 2):
        m, ref = pair_mixtures(clips, s1, s2, a.per_pair, length, a.snr)
        cells = []
        for j, (_, net) in enumerate(nets):
            est = E.separate(net, m, "cpu", 0)
            # matched per reference (PIT), a 4-output net merged to 2 first; the table shows
            # SI-SDRi only, so ESTOI and PESQ (about 0.1 s a signal) are not computed
            score = audio_scores(est, ref, m, sr, "merged", perceptual=False)["si_sdri"].mean().item()
            cells.append(score)
            for s in (s1, s2):
                per_speaker.setdefault((s, j), []).append(score)
        table.append((f"{s1} + {s2}", cells))
    names = [n for n, _ in nets]
    print(f"\nSI-SDRi (dB) per {a.split} speaker pair: {a.per_pair} mixtures of {a.seconds:g} s at "
          f"{a.snr:g} dB each, {sr} Hz, EMA weights (4-output networks merged to 2)\n")
    print("| pair | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for pair, cells in table:
        print(f"| {pair} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    for s in sorted(clips):
        cells = [sum(per_speaker[s, j]) / len(per_speaker[s, j]) for j in range(len(nets))]
        print(f"| *{s}, mean of its pairs* | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
