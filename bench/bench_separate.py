"""Real-time factor and peak memory of separate.py with the shipped checkpoints.

    python bench/bench_separate.py                 # 10 s (RTF), 1 min and 10 min inputs
    python bench/bench_separate.py --minutes 1 2   # other lengths

Both shipped models are timed: the default (``sup_reg_speech.pt``, a regression
model: one network pass per chunk) and the SURF-SR flow (5-step Euler: five passes per chunk).

Each input is a 16 kHz mono wav of held-out demo speech mixtures laid end to end; each
measurement runs separate.py in its own fresh Python process, which reports its wall
time and its peak resident memory (``ru_maxrss``). A second process per length loads the same
modules and the model but separates nothing: the difference is what separation itself costs.
Flat memory means that difference stays (almost) the same from 1 to 10 minutes; what still
grows is the signal itself (input, resampled copy, K outputs: tens of bytes per sample).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from surf_mini import audio_data as A  # noqa: E402
from surf_mini.checkpoints import AUDIO_KIND, read_checkpoint  # noqa: E402
from surf_mini.methods import METHOD_NAMES  # noqa: E402

# The child runs separate.py as the command line does (runpy, as __main__), or only loads the
# model the way it does, to time and measure what the model load alone costs.
CHILD = r"""
import json, resource, runpy, sys, time
sys.path.insert(0, {root!r})
argv = {argv!r}
t0 = time.time()
if {work!r}:
    sys.argv = ["separate.py", *argv]
    runpy.run_path({script!r}, run_name="__main__")
else:
    from surf_mini.checkpoints import AUDIO_KIND, audio_network, read_checkpoint
    path = argv[argv.index("--checkpoint") + 1]
    audio_network(read_checkpoint(path, AUDIO_KIND, "audio"), "ema", path)
print(json.dumps({{"seconds": time.time() - t0,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_input(path: str, seconds: float, sr: int = 16000) -> None:
    g = torch.Generator().manual_seed(0)
    mixer = A.ClipMixer(A.load_clips(A.DEMO_DIR, sr, "test"), 2, 2 * sr, g)
    n = int(seconds * sr)
    x = np.concatenate([mixer.batch(1)[0][0, 0].numpy() for _ in range(-(-n // (2 * sr)))])[:n]
    sf.write(path, x, sr, subtype="PCM_16")


def child(argv: list[str], work: bool, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    code = CHILD.format(root=ROOT, argv=argv, work=work, script=os.path.join(ROOT, "separate.py"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"error: the separate.py run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def describe(checkpoint: str) -> str:
    """'<method>, <network>, <passes>' from what the checkpoint says of itself."""
    ckpt = read_checkpoint(checkpoint, AUDIO_KIND, "audio")
    flow = ckpt["config"].get("mode") == "flow"
    return (f"{METHOD_NAMES.get(ckpt['stage'], ckpt['stage'])}, {ckpt['arch']}, "
            + ("5-step Euler" if flow else "1 pass"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rtf-seconds", type=float, default=10.0, help="length of the RTF input")
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    default, surf = (os.path.join(ROOT, "surf_mini", "assets", f) for f in ("sup_reg_speech.pt", "surf_sr_speech.pt"))
    models = [(describe(default) + " (default)", default), (describe(surf), surf)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds in [(f"{a.rtf_seconds:g} s", a.rtf_seconds)] + \
                [(f"{m:g} min", 60 * m) for m in a.minutes]:
            wav = os.path.join(tmp, "in.wav")
            make_input(wav, seconds)
            for name, ckpt in models:
                argv = [wav, "--checkpoint", ckpt, "--out-dir", os.path.join(tmp, "out"),
                        "--threads", str(a.threads), "--overwrite"]        # one out-dir for every row
                run = child(argv, True, a.threads)
                base = child(argv, False, a.threads)
                rows.append((name, label, run["seconds"], (run["seconds"] - base["seconds"]) / seconds,
                             run["peak_mb"], run["peak_mb"] - base["peak_mb"]))
    print(f"\nseparate.py with the shipped checkpoints, 16 kHz input, 4 s chunks / 1 s overlap, "
          f"CPU, {a.threads} threads\n")
    print("| model | input | wall (s) | real-time factor (model load excluded) | peak RSS (MB) | "
          "peak RSS over model loaded (MB) |")
    print("|---|---|---|---|---|---|")
    for name, label, wall, rtf, peak, extra in rows:
        print(f"| {name} | {label} | {wall:.1f} | {rtf:.3f} | {peak:.0f} | {extra:.0f} |")


if __name__ == "__main__":
    main()
