"""How well separate.py separates the README's demo mixture, scored against its two voices.

    python bench/score_demo_mix.py                       # the shipped checkpoints
    python bench/score_demo_mix.py runs/x/sup-reg.pt ...  # others (a 4-output MixIT one is merged to 2)

``surf_mini/assets/demo_mix.wav`` is the sum of two held-out speakers (KLettres Italian and
Russian, also test speakers of the speech corpus) at 0 dB; ``audio_data.demo_mixture_sources``
rebuilds the two voices it was made from. Each checkpoint separates the wav exactly as a user
would (separate.py: 4 s chunks, PIT-aligned overlap-add, level normalisation), and the
two written files are scored with PIT: SI-SDR improvement over the mixture, ESTOI, PESQ.
A number is no listening test, but it says whether the voices came apart.
"""
from __future__ import annotations

import argparse
import os
import sys
import subprocess
import tempfile

import soundfile as sf
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from surf_mini import audio_data as A  # noqa: E402
from surf_mini.checkpoints import AUDIO_KIND, read_checkpoint  # noqa: E402
from surf_mini.metrics import audio_scores  # noqa: E402

MIX = os.path.join(ROOT, "surf_mini", "assets", "demo_mix.wav")
SHIPPED = [os.path.join(ROOT, "surf_mini", "assets", f) for f in ("sup_reg_speech.pt", "surf_sr_speech.pt")]


def score(checkpoint: str, threads: int) -> dict:
    ref = A.demo_mixture_sources().double()                              # [2, T]
    m = torch.from_numpy(sf.read(MIX)[0])                                # [T]
    config = read_checkpoint(checkpoint, AUDIO_KIND, "audio")["config"]
    outputs = config.get("num_sources") or config["num_outputs"]
    extra = ["--num-sources", "2"] if outputs > 2 else []
    with tempfile.TemporaryDirectory() as d:                             # the command, as a user runs it
        subprocess.run([sys.executable, os.path.join(ROOT, "separate.py"), MIX, "--checkpoint", checkpoint,
                        "--out-dir", d, "--threads", str(threads), "--keep-silent", *extra],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        est = torch.stack([torch.from_numpy(sf.read(os.path.join(d, f"demo_mix_s{k}.wav"))[0]) for k in (1, 2)])
    T = min(est.shape[1], ref.shape[1])
    s = audio_scores(est[None, :, :T], ref[None, :, :T], m[None, None, :T], A.SAMPLE_RATE)
    return {"si_sdri": s["si_sdri"].mean().item(), "each": s["si_sdri"][0].tolist(),
            "estoi": s["estoi"].mean().item(), "pesq": s["pesq"].mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="*", default=SHIPPED)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    rows = [(c, score(c, a.threads)) for c in a.checkpoints]
    print("\nseparate.py on surf_mini/assets/demo_mix.wav (8.6 s, two held-out voices at 0 dB), PIT\n")
    print("| checkpoint | SI-SDRi (dB) | per voice (dB) | ESTOI | PESQ |")
    print("|---|---|---|---|---|")
    for c, r in rows:
        name = os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
        print(f"| {name} | {r['si_sdri']:.2f} | {r['each'][0]:.2f} / {r['each'][1]:.2f} | "
              f"{r['estoi']:.3f} | {r['pesq']:.2f} |")


if __name__ == "__main__":
    main()
