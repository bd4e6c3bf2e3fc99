"""Command-line helpers of the training scripts: defaults, the device, torchrun, the GPU notice.

Each script keeps its own flat option list; what they share (how unset options take the
preset's or the defaults' values, which device, the single-process rule, the notice that
stops a GPU budget on a CPU) is here, once.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import sys

import torch

from .distributed import world_size_from_env

def fill_defaults(args, defaults: dict) -> None:
    """Options left unset take ``defaults`` (the chosen preset over the script's defaults)."""
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def pick_device(parser, args) -> None:
    """``--device`` default: CUDA when torch sees a GPU; asking for CUDA without one is an error."""
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")


def check_batch(parser, batch: int) -> None:
    """Under torchrun the global batch is split evenly over the processes."""
    W = world_size_from_env()
    if batch % W:
        parser.error(f"--batch {batch} must be a multiple of the {W} processes "
                     f"(each takes batch/{W} rows)")


def single_process(parser, what: str) -> None:
    """Evaluating and collecting are not training: one process runs them (``image_eval``,
    ``audio_eval``); under torchrun they stop with one line."""
    if world_size_from_env() > 1:
        parser.error(f"{what} is a single-process command: run it with python, not torchrun")


# The CPU time in the GPU notice. The paper networks ran at about 87 GFLOP/s on one core of the
# machine this project is developed on (Intel Xeon, torch 2.11, float32, 2026-11-25): one forward
# of the paper NCSN on 8 CIFAR-10 flows (82 GFLOP by torch.utils.flop_counter) took 0.94 s, one
# forward of the paper locoformer on a 2 s 16 kHz flow (2.9 TFLOP) 33.9 s.
CPU_FLOPS = 87e9


def gpu_job_notice(job: str, flops: float) -> None:
    """Stop a GPU budget started on a machine without a GPU: one line on stderr, exit status 2."""
    days = flops / CPU_FLOPS / 86400
    print(f"{job} is a GPU job: its default budget ({flops / 1e15:,.0f} PFLOP) would take about "
          f"{days:,.0f} days on one CPU core (~{CPU_FLOPS / 1e9:.0f} GFLOP/s measured); try "
          f"--preset quick, or run it here anyway with --cpu-ok (this budget, float32) or --net cpu "
          f"(the small network)",
          file=sys.stderr)
    raise SystemExit(2)


def apply_presets(args, defaults: dict, presets: dict, gpu_budget: bool, gpu_speed: dict) -> None:
    """Fill the options left unset, from one table: the ``--preset``'s values if one is named,
    else the GPU budget (``presets["gpu"]``) when ``gpu_budget``, else the CPU ``defaults``;
    the paper network on CUDA also takes ``gpu_speed`` (bf16, compiled, TF32) unless told
    otherwise. docs/training-on-gpus.md lists what each resolves to."""
    chosen = dict(defaults)
    if args.preset:
        chosen.update(presets[args.preset])
    elif gpu_budget:
        chosen.update(presets["gpu"])
    if args.device.startswith("cuda") and (args.net or chosen["net"]) == "paper":
        chosen.update(gpu_speed)
    fill_defaults(args, chosen)


def add_training_options(p: argparse.ArgumentParser, ckpt_every: int) -> None:
    """The options every training run has, whatever its domain: the stages' budget and
    optimiser, and where and how the run goes (unset ones come from the script's presets)."""
    add = p.add_argument
    add("--teacher", help="a MixIT checkpoint to use instead of training one")
    add("--steps", type=int, help="steps of the mode's own stage")
    add("--teacher-steps", type=int, help="steps of the MixIT teacher stage")
    add("--batch", type=int, help="mixtures per step, B")
    add("--lr", type=float, help="peak AdamW learning rate")
    add("--warmup", type=int, help="linear warm-up steps, then cosine decay")
    add("--ema", type=float, help="EMA decay alpha (paper: 0.999)")
    add("--beta-steps", type=int, help="the hybrid teacher's beta decays 1 -> 0 over these steps")
    add("--minutes", type=float, help="cut each stage's steps to a wall-clock budget")
    add("--resume", action="store_true", help="continue the stages found in --out")
    add("--ckpt-every", type=int, default=ckpt_every, help="checkpoint period in steps")
    add("--device", help="cuda or cpu (default: cuda when available)")
    add("--precision", choices=("fp32", "bf16"), help="training forwards under bf16 autocast")
    add("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the networks")
    add("--tf32", action=argparse.BooleanOptionalAction, help="TF32 matmuls on CUDA")
    add("--cpu-ok", action="store_true", help="run the GPU budget without a GPU")
    add("--threads", type=int, help="torch CPU threads")
    add("--seed", type=int, default=0)


def check_training_options(p: argparse.ArgumentParser, args, needs_teacher: tuple) -> None:
    """The checks of ``add_training_options``' values, one ``parser.error`` line each, made
    before any data is read: a bad value stops the run at once instead of as a traceback (or a
    quietly different run) minutes in. ``args.out`` must be set (the script's default) first."""
    if args.teacher and args.mode not in needs_teacher:
        p.error(f"--teacher is only used by modes {', '.join(needs_teacher)}")
    if min(args.steps, args.teacher_steps, args.batch) < 1:
        p.error("--steps, --teacher-steps and --batch must be positive")
    # math.isfinite first: NaN fails every comparison, so "nan <= 0" alone lets it through
    # (--minutes nan quietly cut the run; --lr nan trained NaNs).
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite positive number, not {args.lr:g}")
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        p.error(f"--minutes must be a finite positive number, not {args.minutes:g}")
    if not (math.isfinite(args.ema) and 0.0 <= args.ema <= 1.0):
        p.error(f"--ema must be a number in [0, 1], not {args.ema:g}")
    if args.warmup < 0:
        p.error(f"--warmup must be at least 0 (0: no warm-up), not {args.warmup}")
    if args.ckpt_every < 1:                      # the loop takes step % ckpt_every
        p.error(f"--ckpt-every must be at least 1, not {args.ckpt_every}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, not {args.threads}")
    check_run_folder(p, args.out, args.resume)
    check_batch(p, args.batch)


def check_run_folder(p: argparse.ArgumentParser, out: str, resume: bool) -> None:
    """``--out`` must be a folder (or not exist yet), and ``--resume`` needs a stage checkpoint
    in it: resuming a folder without one would quietly start a fresh run instead."""
    if os.path.exists(out) and not os.path.isdir(out):
        p.error(f"--out {out} is an existing file, not a folder; give a folder for the run")
    if resume and not glob.glob(os.path.join(glob.escape(out), "*.pt")):
        p.error(f"--resume: {out} holds no stage checkpoint (*.pt) to resume; drop --resume to "
                f"start a fresh run there")


def training_plan(args, flops: float, networks: str, needs_teacher: tuple, world: int = 1) -> str:
    """One line: what a run with the paper networks will train, and its FLOPs."""
    teacher = args.mode in needs_teacher and not args.teacher
    stages = f"{args.teacher_steps} MixIT + " if teacher else ""
    speed = f"{args.precision}, {'compiled' if args.compile else 'eager'}"
    crops = f" x {args.seconds:g} s" if getattr(args, "seconds", None) else ""
    procs = f" over {world} processes" if world > 1 else ""
    return (f"{stages}{args.steps} {args.mode} steps at batch {args.batch}{crops}{procs}, "
            f"{networks}, {speed}, about {flops / 1e18:.2f} EFLOP")
