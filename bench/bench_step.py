"""Time of one training step of train_image.py for every mode, and SURF's cost over its floor.

    python bench/bench_step.py [--net cpu] [--batch 32] [--variant-modes sup-flow,sr] [--no-compile]

A step is exactly what train_image.py runs (``optimizer_step``: ``stage_loss``, backward,
clipping, AdamW, EMA update), on random MNIST-shaped images (28x28, padded to the network's multiple; speed does
not depend on the pixels). SURF modes are timed at beta = 0, the steady state where the
teacher is the EMA flow (5 Euler forwards); while beta > 0 the teacher is cheaper.

SURF's floor, timed separately in the same run on the same batch:
  teacher sampling  5-step Euler of the EMA flow under no_grad      (Algorithm 1, line 4)
  PIT forward       one no_grad forward of the student at t = 0      (line 8, SURF (21))
  forward/backward  one forward and backward of the student          (lines 10-15)
ratio = step / (sum of the three): what the remixing, PIT search and bookkeeping add.

Speed-ups, measured side by side in the same run against the eager float32 step (issue 9,
"learn more per CPU-second"), for ``--variant-modes``:
  bf16           ``--precision bf16``: forward passes under bf16 autocast (AVX-512 BF16 / CUDA)
  channels_last  networks and batches in channels-last memory format
  1 thread       torch.set_num_threads(1): what each of two one-thread runs side by side gets
  compile        ``--compile`` (torch.compile on the trained and EMA networks); the first
                 compiled steps' time is reported apart from the steady state
A ratio above 1 is faster than eager float32.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _image_stage as S  # noqa: E402
from _timing import median_time  # noqa: E402
from surf_mini import methods, training  # noqa: E402
from surf_mini.data import pad_to_multiple  # noqa: E402
from surf_mini.flow import euler_sample, initial_state  # noqa: E402
from surf_mini.ncsn import NCSN  # noqa: E402


def build(mode: str, args_list: list, images: torch.Tensor, device, compile_: bool = False,
          extra: tuple = ()):
    args = S.step_args(["--mode", mode, *args_list, *extra] + (["--compile"] if compile_ else []))
    C = images.shape[1]
    teacher = None
    if mode in methods.NEEDS_TEACHER:
        teacher = NCSN(S.network_config("mixit", args, C)).to(device)
        teacher = teacher.eval().requires_grad_(False)
    stage = S.image_stage(mode, args, device, images, teacher)
    stage.step = args.beta_steps                                          # beta = 0 for SURF
    return stage


def to_channels_last(stage):
    for net in (stage.net, stage.ema, stage.teacher):
        if net is not None:
            net.to(memory_format=torch.channels_last)
    return stage


def step_fn(stage):
    def step():
        training.optimizer_step(stage, methods.stage_loss)   # stage.step stays put: beta = 0
        if stage.device.type == "cuda":
            torch.cuda.synchronize()
    return step


def floor_parts(stage, B: int):
    """The three timed pieces of SURF's floor on one batch of mixtures."""
    m = stage.batches.mixtures(B).to(stage.device)
    K = stage.net.config.num_sources
    sync = torch.cuda.synchronize if stage.device.type == "cuda" else (lambda: None)

    def teacher():
        with torch.no_grad():
            euler_sample(stage.ema_fwd, m, K, "floss5", x0=initial_state(m, K))
        sync()

    def pit_forward():
        with torch.no_grad():
            stage.fwd(initial_state(m, K), torch.zeros(B, device=m.device), m)
        sync()

    def fwd_bwd():
        x = initial_state(m, K)
        stage.fwd(x, torch.rand(B, device=m.device), m).pow(2).mean().backward()
        stage.net.zero_grad(set_to_none=True)
        sync()
    return {"teacher sampling (5 fwd)": teacher, "PIT forward": pit_forward, "fwd/bwd": fwd_bwd}


def width_table(a, device) -> None:
    """``--widths``: ms per training step of the flow and regression NCSN per width and depth,
    in fp32 and bf16 autocast, each eager and compiled (issue 25: the widest network per
    CPU-second). bf16 pays only where the CPU has bf16 matrix units (AVX-512 BF16, AMX); the
    cpu flags this machine reports are printed with the table."""
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        words = open("/proc/cpuinfo").read().split()
        flags = " ".join(sorted({w for w in words if w.startswith(("amx", "avx512_bf16", "avx512f", "avx2"))}))
    print(f"\n# width sweep: B={a.batch}, K=2, 28x28 (padded to 28 = 4 x 7), "
          f"{torch.get_num_threads()} threads, {device}, torch {torch.__version__}, cpu flags: {flags}\n")
    cols = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    if a.no_compile:
        cols = [c for c in cols if not c[1]]
    print("| mode | nf | blocks | parameters | " + " | ".join(
        f"{p}{' + compile' if c else ''} (ms)" for p, c in cols) + " | fp32 / bf16 |")
    print("|---|---|---|---|" + "---|" * len(cols) + "---|")
    images, _ = pad_to_multiple(torch.rand(512, 1, 28, 28), 4)
    out = tempfile.mkdtemp()
    for blocks in [int(b) for b in a.blocks.split(",")]:
        for nf in [int(w) for w in a.widths.split(",")]:
            for mode in a.modes.split(","):
                common = ["--net", "cpu", "--nf", str(nf), "--res-blocks", str(blocks),
                          "--batch", str(a.batch), "--out", out, "--device", a.device]
                t, n = {}, 0
                for prec, comp in cols:
                    if prec == "bf16" and nf > a.bf16_max_nf:
                        t[(prec, comp)] = float("nan")
                        continue
                    stage = build(mode, common + ["--precision", prec, "--compile" if comp else "--no-compile"],
                                  images, device)
                    n = sum(p.numel() for p in stage.net.parameters())
                    t[(prec, comp)] = median_time(step_fn(stage), a.repeats, warmup=3 if comp else 2)
                ratio = t[("fp32", False)] / t[("bf16", False)]
                print(f"| {mode} | {nf} | {blocks} | {n / 1e6:.2f}M | " +
                      " | ".join(f"{1e3 * t[c]:.0f}" for c in cols) + f" | {ratio:.2f}x |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", default="cpu", choices=("cpu", "paper"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--modes", default=",".join(methods.MODES))
    p.add_argument("--variant-modes", default="sup-flow,mixit,sr",
                   help="modes timed with each speed-up (comma list, or '' for none)")
    p.add_argument("--no-compile", action="store_true", help="leave out the (slow to build) compile column")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--widths", help="comma list of nf: time the width sweep (with --blocks) instead")
    p.add_argument("--blocks", default="1", help="with --widths: residual blocks per level, comma list")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--bf16-max-nf", type=int, default=1024,
                   help="with --widths: skip bf16 above this width (slow where bf16 is emulated)")
    a = p.parse_args()
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.widths:
        a.modes = a.modes if a.modes != ",".join(methods.MODES) else "sup-flow,sup-reg"
        return width_table(a, device)
    torch.manual_seed(0)
    images, _ = pad_to_multiple(torch.rand(512, 1, 28, 28),
                                methods.image_network("sr", a.net, 1).size_multiple)
    out = tempfile.mkdtemp()
    common = ["--net", a.net, "--batch", str(a.batch), "--out", out, "--device", a.device,
              "--precision", "fp32", "--no-compile"]          # the baseline: eager float32
    print(f"# one training step, MNIST-shaped, net={a.net}, B={a.batch}, {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| mode | step (ms) | floor (ms) | step / floor | floor parts (ms) |")
    print("|---|---|---|---|---|")
    eager = {}
    for mode in a.modes.split(","):
        stage = build(mode, common, images, device, False)
        eager[mode] = median_time(step_fn(stage), a.repeats, warmup=2)
        floor, parts = "", ""
        if mode in ("rm", "sr"):
            t = {k: median_time(fn, a.repeats, warmup=2) for k, fn in floor_parts(stage, a.batch).items()}
            total = sum(t.values())
            floor = f"{1e3 * total:.0f} | {eager[mode] / total:.2f}"
            parts = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in t.items())
        else:
            floor = "- | -"
        print(f"| {mode} | {1e3 * eager[mode]:.0f} | {floor} | {parts} |", flush=True)

    modes = [m for m in a.variant_modes.split(",") if m]
    if modes:
        print("\n| mode | fp32 eager (ms) | bf16 autocast | channels_last | 1 thread | compile | "
              "first compiled steps (s) |")
        print("|---|---|---|---|---|---|---|")
    threads = torch.get_num_threads()
    for mode in modes:
        base = eager.get(mode) or median_time(step_fn(build(mode, common, images, device)), a.repeats, 2)
        bf16 = median_time(step_fn(build(mode, common, images, device, extra=("--precision", "bf16"))),
                           a.repeats, warmup=2)
        cl = median_time(step_fn(to_channels_last(build(mode, common, images, device))), a.repeats, 2)
        torch.set_num_threads(1)
        one = median_time(step_fn(build(mode, common, images, device)), a.repeats, warmup=2)
        torch.set_num_threads(threads)
        comp, first = float("nan"), float("nan")
        if not a.no_compile:
            step = step_fn(build(mode, common, images, device, True))
            t0 = time.perf_counter()
            step()
            step()                               # both train and no_grad graphs are compiled
            first = time.perf_counter() - t0
            comp = median_time(step, a.repeats, warmup=1)
        print(f"| {mode} | {1e3 * base:.0f} | {base / bf16:.2f}x | {base / cl:.2f}x | {base / one:.2f}x | "
              f"{base / comp:.2f}x | {first:.0f} |", flush=True)

if __name__ == "__main__":
    main()
