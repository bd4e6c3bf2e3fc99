"""Train and evaluate speech separators on two-speaker mixtures (SURF section 5.2, Table 4),
or universal sound separators on FUSS-like mixtures of 1-4 sound events (``--task fuss``, Table 3).

    python train_audio.py --preset quick                        # demo speech, SURF-SR, CPU
    python train_audio.py --mode rm --teacher runs/x/mixit.pt   # reuse a trained MixIT teacher
    python train_audio.py --mode sr --mixtures my_mixtures/     # mixture recordings only
    python train_audio.py --mode sr --librimix train-360.csv    # CUDA: the GPU budget, a few hours
    python train_audio.py --mode sr --librimix train-360.csv --preset paper   # the paper (GPU)
    torchrun --nproc_per_node 8 train_audio.py --mode sr --librimix train-360.csv   # 8 GPUs, DDP
    python train_audio.py --collect runs/audio                  # one table from several runs
    python train_audio.py --export runs/audio-sr/sr.pt model.pt # small checkpoint for separate.py
    python train_audio.py --task fuss --mode sr                 # FUSS-like sample, K = 4 (docs/fuss.md)

Modes (as train_image.py; SURF Table 4 has all but sup-reg):
    sup-reg    supervised regression locoformer, PIT on 10 log10 ||x - x_hat||^2   SURF (3)
    sup-flow   supervised flow matching (FLOSS), PIT at t = 0, L^dB loss           FLOSS (17), (19)
    mixit      ConvTasNet MixIT teacher, M = 4 (fuss: 8), neg. thresholded SNR     Wisdom et al. 2020
    remixit    regression ReMixIT locoformer student, MSE                          SURF (16)
    selfremix  regression Self-Remixing locoformer student, MSE                    SURF (17)
    rm         SURF (ReMixIT): Algorithm 1 with RM-FM, L^dB                        SURF (24)
    sr         SURF (Self-Remixing): Algorithm 1 with SR-FM, L^dB                  SURF (30)

Networks (SURF D.5): the frozen teacher is a ConvTasNet (real masks, STFT front end) trained
with MixIT on mixtures of two two-speaker mixtures; every other model is an MB-TFLocoformer,
in flow mode or in regression mode (mixture in, K outputs). Training data, one of:
  * ``--data DIR`` single-speaker clips mixed on the fly (default: the shipped demo set, its
    ``train`` speakers); the unsupervised stages see only the mixtures (``MixtureView``);
  * ``--mixtures DIR`` a folder of mixture recordings, no references at all (unsupervised
    modes only);
  * ``--librimix CSV`` LibriMix metadata (mixtures for the unsupervised stages, sources for
    the supervised ones).
Evaluation: ``--eval-size`` fixed two-speaker mixtures of the held-out speakers of ``--data``
(or the mixtures of ``--eval-csv``), SI-SDR, SI-SDRi, ESTOI and wide-band PESQ; flows sample
with 5-step Euler. ``results.json``, ``results.md`` and ``examples/*.wav`` go to ``--out``.
``--dnsmos`` (optional extra, ``pip install -r requirements-dnsmos.txt``; docs/speech.md, "DNSMOS")
adds the reference-free DNSMOS P.835 SIG / BAK / OVRL of the separated sources (resampled to
16 kHz) and a ceiling row, the references' own DNSMOS, to the speech and noisy-speech tables.

Where it runs (docs/training-on-gpus.md). With ``--librimix`` (or ``--net paper``) on a CUDA GPU
the defaults are the GPU budget (``PRESETS["gpu"]``: the paper networks, 20k MixIT + 15k steps
of 8 two-second crops) run in bf16 autocast, compiled, with TF32. Without a GPU, ``--librimix``
alone says in one line that it is a GPU job (``--cpu-ok`` or ``--net cpu`` run it anyway); the
demo set and ``--mixtures`` keep the CPU defaults. Under ``torchrun`` each process trains its
share of every global batch with DistributedDataParallel and rank 0 writes checkpoints and
results (surf_mini/training.py).

Choices where the papers are silent (README, "Choices"):
  * K = 2 everywhere but the teacher, whose M = 4 outputs are merged to 2 with
    ``mixit.merge_outputs`` (no reference) before any remixing, as for images.
  * The locoformer students cannot start from the ConvTasNet's weights; they start fresh.
    SURF's hybrid teacher (D.3) bridges the gap for the flows. For the regression students
    the same role is played by a per-batch coin: with probability beta (1 -> 0 over
    ``--beta-steps``) the batch's teacher estimates come from the frozen MixIT teacher,
    otherwise from the student's EMA copy.
  * Every network keeps an EMA copy, which is what is evaluated and what teaches.

``--task fuss`` (docs/fuss.md, "Training on it"): the same seven modes on FUSS-like mixtures
(``surf_mini.fuss_data``; ``--data`` defaults to the committed 36-event sample) with K = 4
outputs for every locoformer and M = 8 for the MixIT teacher, whose outputs are merged to 4 for
the students. Silent reference slots (mixtures of fewer than 4 sources) are exactly zero; every
loss used sees them through whole-tuple energies (``stage_loss``). Evaluation: the FUSS scores
(``metrics.fuss_scores``): 1S, 2Si-4Si, MSi and the under / equal / over separation rates.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from surf_mini import audio_data as A
from surf_mini import fuss_data as F
from surf_mini import training
from surf_mini.checkpoints import load_network
from surf_mini.convtasnet import ConvTasNet, ConvTasNetConfig
from surf_mini.convtasnet import make_config as tasnet_config
from surf_mini.ema import beta_at, hybrid_teacher_sample
from surf_mini.flow import estimate_sources, floss_loss
from surf_mini.locoformer import LocoformerConfig, MBTFLocoformer
from surf_mini.locoformer import make_config as loco_config
from surf_mini.metrics import audio_scores, fuss_scores, oracle_grouping
from surf_mini.mixit import merge_outputs, mixit_loss, output_sparsity
from surf_mini.pit import pit_loss
from surf_mini.remix import mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss
from surf_mini.training import write_text

MODES = ("sup-reg", "sup-flow", "mixit", "remixit", "selfremix", "rm", "sr")
METHOD_NAMES = {"sup-reg": "supervised regression", "sup-flow": "supervised flow",
                "mixit": "MixIT", "remixit": "ReMixIT (regression)",
                "selfremix": "Self-Remixing (regression)", "rm": "SURF (ReMixIT)",
                "sr": "SURF (Self-Remixing)"}
NEEDS_TEACHER = ("remixit", "selfremix", "rm", "sr")
SUPERVISED = ("sup-reg", "sup-flow")
MIXIT_OUTPUTS = 4           # M: a mixture of two two-speaker mixtures holds 4 (SURF D.5)
K = 2                       # speakers per mixture
# The two tasks: K outputs of every locoformer, M of the MixIT teacher (a mixture of two
# mixtures holds up to 2K sources: SURF D.5, Wisdom et al. 2020), the default --data and the
# default length of the test mixtures. FUSS: up to 4 sources (fuss_data.MAX_SOURCES), test
# mixtures of fuss_data's CPU length (4 s).
TASKS = {"speech": dict(K=K, M=MIXIT_OUTPUTS, data=A.DEMO_DIR, eval_seconds=2.0),
         "fuss": dict(K=F.MAX_SOURCES, M=2 * F.MAX_SOURCES, data=F.FUSS_SAMPLE_DIR,
                      eval_seconds=F.CPU_SECONDS)}
CKPT_KIND = "surf_mini.audio"
# x_0 noise shaped by the mixture's energy envelope, FLOSS section 3.4 (its best, Table 1 #3):
# the noise then has the level of the speech whatever the recording gain.
SHAPING = "envelope"
EVAL_SEED = 12345

PRESETS = {
    # The README's audio job on 2 CPU cores: cpu locoformer (8 kHz), one-second crops.
    "quick": dict(mode="sr", net="cpu", teacher_steps=3000, steps=1000, batch=8, seconds=1.0,
                  lr=2e-3, warmup=100, ema=0.99, beta_steps=500, eval_size=100),
    # SURF D.5 / Table 7 and FLOSS section 4 (a GPU job): 16 kHz, the 33M locoformer, the
    # 5.5M ConvTasNet, 250k steps, lr 1e-4 after a 25k ramp, EMA 0.999, beta over 200k steps.
    "paper": dict(net="paper", teacher_steps=250_000, steps=250_000, batch=16, seconds=4.0,
                  lr=1e-4, warmup=25_000, ema=0.999, beta_steps=200_000, eval_size=3000),
    # The GPU budget: the defaults for --librimix (or --net paper) on a CUDA GPU without
    # --preset. The paper networks at the paper's lr (its 25k ramp cut to 2k), 20k ConvTasNet
    # MixIT + 15k locoformer steps of 8 two-second crops, EMA 0.999, beta over 80 % of the
    # steps. --mode sr: about 3.2 EFLOP (the 33M locoformer costs 1.5 TFLOP per second of
    # audio), an *estimate* (no GPU was lent to measure it) of 2-6 h on an H100
    # (docs/training-on-gpus.md).
    "gpu": dict(net="paper", teacher_steps=20_000, steps=15_000, batch=8, seconds=2.0,
                lr=1e-4, warmup=2_000, ema=0.999, beta_steps=12_000, eval_size=1000),
}
# The CPU defaults (the shipped demo speech, --net cpu): the small networks, float32, uncompiled.
DEFAULTS = dict(mode="sr", net="cpu", teacher_steps=1000, steps=1000, batch=8, seconds=1.0, lr=2e-3,
                warmup=100, ema=0.99, beta_steps=1000, eval_size=100, eval_seconds=2.0,
                precision="fp32", compile=False, tf32=False)
# How the paper networks run on CUDA unless told otherwise (--precision fp32, --no-compile,
# --no-tf32): bf16 autocast, torch.compile on the trained, EMA and teacher networks, TF32.
GPU_SPEED = dict(precision="bf16", compile=True, tf32=True)

# Forward FLOPs of the paper networks per second of 16 kHz audio (torch.utils.flop_counter,
# torch 2.11, 2 s and 4 s crops: linear in the length): MB-TFLocoformer (K = 2) 1.47 TFLOP,
# ConvTasNet (M = 4) 0.46 GFLOP. A step's cost per example in (locoformer, ConvTasNet) forwards,
# a backward costing two: SURF runs the EMA teacher's 5 Euler steps, the PIT forward at t = 0,
# the loss's forward and backward (9) and the frozen MixIT teacher (1).
FWD_FLOPS_PER_SECOND = (1.47e12, 0.46e9)
STEP_FORWARDS = {"sup-reg": (3, 0), "sup-flow": (4, 0), "mixit": (0, 3), "remixit": (4, 1),
                 "selfremix": (4, 1), "rm": (9, 1), "sr": (9, 1)}


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named settings (others override them)")
    p.add_argument("--task", choices=sorted(TASKS), default="speech",
                   help="speech: two-speaker mixtures, K = 2; fuss: FUSS-like sound mixtures, K = 4")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--net", choices=("cpu", "paper"), help="locoformer and ConvTasNet presets")
    p.add_argument("--steps", type=int, help="optimizer steps of the mode's own stage")
    p.add_argument("--teacher-steps", type=int, help="optimizer steps of the MixIT teacher stage")
    p.add_argument("--teacher", help="MixIT checkpoint to use instead of training one")
    p.add_argument("--batch", type=int, help="mixtures per step (B)")
    p.add_argument("--seconds", type=float, help="length of the training crops")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine decay")
    p.add_argument("--ema", type=float, help="EMA decay alpha (paper: 0.999)")
    p.add_argument("--beta-steps", type=int, help="hybrid-teacher beta decays 1 -> 0 over these steps")
    p.add_argument("--data", help="speech: folder of single-speaker clips (default: the shipped demo "
                                  "set); fuss: a set built by python -m surf_mini.corpus fuss DIR "
                                  "(default: the committed sample, fuss_data.FUSS_SAMPLE_DIR)")
    p.add_argument("--noisy-speech", metavar="DIR",
                   help="fuss: also score the models on held-out speech of DIR (its test split) over "
                        "the test backgrounds, SURF Table 3's noisy speech (default: the shipped demo "
                        "speech)")
    p.add_argument("--mixtures", help="folder of mixture recordings to train the unsupervised modes on")
    p.add_argument("--librimix", help="LibriMix metadata CSV to train on")
    p.add_argument("--eval-csv", help="LibriMix metadata CSV of the test set (default: held-out --data speakers)")
    p.add_argument("--eval-size", type=int, help="held-out test mixtures to score (0: train only, "
                   "score the checkpoints later with --evaluate)")
    p.add_argument("--eval-seconds", type=float, help="length of the test mixtures")
    p.add_argument("--eval-snr", type=float, default=5.0,
                   help="test (and validation) mixtures: the second speaker's level is drawn in "
                        "+-SNR/2 dB around the first (0: every mixture at 0 dB)")
    p.add_argument("--val-every", type=int, default=500,
                   help="score validation mixtures every N steps (0: never); needs a 'valid' split in --data")
    p.add_argument("--val-size", type=int, default=100, help="validation mixtures")
    p.add_argument("--time", default="delta", choices=("delta", "logsnr", "near0", "uniform"),
                   help="flows: training-time law, FLOSS 3.2 (delta: 1%% at t = 0, else uniform; "
                        "near0: t = u^3, most training near t = 0, flow.sample_time)")
    p.add_argument("--flow-head", choices=("compressed", "x1"), default="compressed",
                   help="flow locoformer head: masks on compressed spectra giving the velocity, or on "
                        "linear spectra giving a clean estimate (locoformer.py; docs/speech.md)")
    p.add_argument("--mixit-sparsity", type=float, default=0.0,
                   help="weight of the l1/l2 output-sparsity term added to the MixIT loss (dB scale; 0: "
                        "none, the default; for FUSS, where the teacher over-separates; mixit.output_sparsity)")
    p.add_argument("--reg-net", choices=("locoformer", "convtasnet"), default="locoformer",
                   help="network of the regression modes (sup-reg, remixit, selfremix): the regression "
                        "locoformer (SURF D.5), or a ConvTasNet with K outputs like the MixIT teacher's")
    p.add_argument("--augment", action="store_true",
                   help="augment each training source on the fly: speed/pitch, random EQ, light "
                        "reverberation (audio_data.augment); mixtures stay the sum of their sources")
    p.add_argument("--out", help="run folder (default runs/audio-<mode>)")
    p.add_argument("--resume", action="store_true", help="continue the stages found in --out")
    p.add_argument("--ckpt-every", type=int, default=200, help="checkpoint period in steps")
    p.add_argument("--minutes", type=float,
                   help="wall-clock budget of each training stage: after its first 50 steps the step "
                        "count is cut to what fits (never raised above --steps / --teacher-steps)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="forward passes in float32, or under bf16 autocast (training only; "
                        "default bf16 for --net paper on CUDA, else fp32)")
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
    p.add_argument("--collect", metavar="DIR", help="print one table from DIR/*/results.json and exit")
    p.add_argument("--plot", metavar="PNG", help="with --collect: also plot the validation curves (matplotlib)")
    p.add_argument("--export", nargs=2, metavar=("CKPT", "OUT"),
                   help="write CKPT's EMA network alone (what separate.py needs) to OUT and exit")
    p.add_argument("--evaluate", nargs="+", metavar="CKPT",
                   help="score checkpoints (full or --export-ed) on the test mixtures of --data "
                        "(--eval-size, --eval-seconds, --eval-snr), print the table, exit")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="with --evaluate: the EMA copy (what a run is scored on) or the trained "
                        "weights themselves (full checkpoints only; early in a run the EMA copy "
                        "still holds much of the initialisation)")
    p.add_argument("--dnsmos", action="store_true",
                   help="also score DNSMOS P.835 SIG/BAK/OVRL (reference-free; mean over the separated "
                        "sources, resampled to 16 kHz) plus a ceiling row of the references' own, in the "
                        "speech and noisy-speech tables (--evaluate and the end-of-run scoring; about 3 s "
                        "of CPU per 4 s source; optional extra: pip install -r requirements-dnsmos.txt)")
    args = p.parse_args(argv)
    if args.plot and not args.collect:
        p.error("--plot goes with --collect DIR")
    if args.collect or args.export:
        training.single_process(p, "--collect" if args.collect else "--export")
        return args
    if args.weights != "ema" and not args.evaluate:
        p.error("--weights goes with --evaluate")
    if args.evaluate:
        training.single_process(p, "--evaluate")
    training.pick_device(p, args)                                          # the defaults depend on it
    cuda = args.device.startswith("cuda")
    # --librimix (the paper's corpus) on a machine without a GPU and no --net / --preset: main()
    # says in one line that it is a GPU job and stops. The demo set and --mixtures folders keep
    # the CPU defaults (the demo's minutes of speech are no job for the 33M locoformer).
    args.gpu_notice = (not cuda and args.preset is None and args.net is None
                       and args.librimix is not None and not args.cpu_ok)
    defaults = dict(DEFAULTS)
    if args.preset:
        defaults.update(PRESETS[args.preset])
    elif args.net != "cpu" and (args.librimix or args.net == "paper") and \
            (cuda or args.cpu_ok or args.gpu_notice):
        defaults.update(PRESETS["gpu"])
    if cuda and (args.net or defaults["net"]) == "paper":
        defaults.update(GPU_SPEED)
    task = TASKS[args.task]
    defaults.update(data=task["data"], eval_seconds=task["eval_seconds"])
    training.fill_defaults(args, defaults)
    args.K, args.M = task["K"], task["M"]                    # outputs: locoformers, MixIT teacher
    if args.task == "fuss":
        args.noisy_speech = args.noisy_speech or A.DEMO_DIR
    elif args.noisy_speech:
        p.error("--noisy-speech goes with --task fuss")
    if args.task == "fuss" and (args.librimix or args.eval_csv or args.augment):
        p.error("--librimix, --eval-csv and --augment are speech options; --task fuss takes --data "
                "(a FUSS-like set) or --mixtures")
    if args.teacher and args.mode not in NEEDS_TEACHER:
        p.error(f"--teacher is only used by modes {', '.join(NEEDS_TEACHER)}")
    if args.mixtures and args.librimix:
        p.error("give at most one of --mixtures and --librimix")
    if args.mixtures and args.mode in SUPERVISED:
        p.error(f"--mode {args.mode} needs references; --mixtures gives mixtures only (use --data)")
    if min(args.steps, args.teacher_steps, args.batch) < 1 or \
            min(args.seconds, args.eval_seconds) <= 0:
        p.error("--steps, --teacher-steps, --batch, --seconds and --eval-seconds must be positive")
    if args.eval_size < (1 if args.evaluate else 0):
        p.error("--eval-size must be positive (0, train only, is for training runs)")
    if args.minutes is not None and args.minutes <= 0:
        p.error("--minutes must be positive")
    if not 0.0 <= args.ema <= 1.0:
        p.error("--ema must be in [0, 1]")
    training.check_batch(p, args.batch)
    args.out = args.out or os.path.join("runs", f"audio-{args.mode}")
    return args


def budget_flops(args) -> float:
    """Training FLOPs of a run with the paper networks (``STEP_FORWARDS``): the notice's estimate."""
    def stage(mode: str, steps: int) -> float:
        loco, tasnet = STEP_FORWARDS[mode]
        return steps * args.batch * args.seconds * (loco * FWD_FLOPS_PER_SECOND[0] +
                                                    tasnet * FWD_FLOPS_PER_SECOND[1])
    teacher = args.mode in NEEDS_TEACHER and not args.teacher
    return stage(args.mode, args.steps) + (stage("mixit", args.teacher_steps) if teacher else 0.0)


# --------------------------------------------------------------------------------------
# Networks and checkpoints
# --------------------------------------------------------------------------------------

def network_config(mode: str, net: str, head: str = "compressed", k: int = K, m: int = MIXIT_OUTPUTS,
                   reg_net: str = "locoformer"):
    """ConvTasNet (M = ``m`` outputs: 4 speech, 8 fuss) for MixIT, regression locoformer
    (K = ``k``: 2 speech, 4 fuss; or a K-output ConvTasNet, ``reg_net``) for sup-reg and the
    regression remixing students, flow locoformer (K = ``k``, its ``head``) otherwise."""
    if mode == "mixit":
        return tasnet_config(net, m)
    if mode in ("sup-reg", "remixit", "selfremix"):
        return tasnet_config(net, k) if reg_net == "convtasnet" else loco_config(net, k, "regression")
    return loco_config(net, k, "flow", head=head)


def sample_rate_of(net: str) -> int:
    return loco_config(net, K, "flow").sample_rate


def build(config) -> torch.nn.Module:
    return ConvTasNet(config) if isinstance(config, ConvTasNetConfig) else MBTFLocoformer(config)


def network_from(ckpt: dict, which: str = "ema", path: str = "checkpoint") -> torch.nn.Module:
    """Rebuild the network a checkpoint describes (``arch`` + ``config``) and load ``which``;
    one line (naming ``path``) when the config or the weights do not fit."""
    def make(c: dict) -> torch.nn.Module:
        cls = {"convtasnet": ConvTasNetConfig, "locoformer": LocoformerConfig}[c["arch"]]
        return build(cls(**c["config"]))
    return load_network(path, ckpt, make, which)


def read_checkpoint(path: str) -> dict:
    return training.read_checkpoint(path, CKPT_KIND, "audio")


def read_checkpoints(paths: list[str], verb: str) -> tuple[list[tuple[str, dict]], int]:
    """[(path, checkpoint)] and their one sample rate, for tools that score several models on
    the same mixtures (``--evaluate``, bench/score_*.py); one-line SystemExit otherwise."""
    ckpts = [(path, read_checkpoint(path)) for path in paths]
    rates = {c["sample_rate"] for _, c in ckpts}
    if len(rates) > 1:
        raise SystemExit(f"error: the checkpoints run at different sample rates {sorted(rates)}; "
                         f"{verb} them separately")
    return ckpts, rates.pop()


def export(src: str, dst: str) -> None:
    """Keep only what separation needs (config, EMA weights, rate, provenance); atomic."""
    ckpt = read_checkpoint(src)
    small = {k: ckpt[k] for k in ("kind", "arch", "stage", "config", "ema", "sample_rate", "shaping", "step")}
    small["input_level"] = ckpt.get("input_level")                      # separate.py's input level
    small["curve"] = ckpt.get("curve")                                  # the validation curve, for --collect
    small["trained_with"] = {k: ckpt["args"].get(k) for k in
                             ("task", "mode", "net", "reg_net", "time", "flow_head", "augment", "steps",
                              "teacher_steps", "batch", "seconds", "lr", "ema", "beta_steps", "mixit_sparsity",
                              "data", "mixtures", "librimix", "seed")}
    training.save_checkpoint(dst, small)
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e6:.1f} MB): {ckpt['stage']} at step {ckpt['step']}")


class Stage(training.Stage):
    """A ``training.Stage`` on audio with its data: unsupervised stages get the mixtures-only
    ``MixtureView`` and nothing else; supervised ones a source sampler."""

    def __init__(self, name: str, config, args, device, data, teacher=None):
        tasnet = isinstance(config, ConvTasNetConfig)
        # The ConvTasNet's last TCN block feeds only its skip output: its residual 1x1 conv gets
        # no gradient, which DDP must be told about.
        super().__init__(name, lambda: build(config), kind=CKPT_KIND, args=args, device=device,
                         total=args.steps if name == args.mode else args.teacher_steps,
                         seed=args.seed * 100 + MODES.index(name), teacher=teacher,
                         find_unused_parameters=tasnet)
        self.arch = "convtasnet" if tasnet else "locoformer"
        self.sample_rate, self.input_level = data["sample_rate"], data.get("input_level")
        sampler = data["sampler"](self.g_data)                   # None for --mixtures
        self.sources = sampler if name in SUPERVISED else None
        self.mixtures = data["view"](sampler, self.g_data)

    def state(self) -> dict:
        return dict(super().state(), arch=self.arch, sample_rate=self.sample_rate, shaping=SHAPING,
                    input_level=self.input_level)


def splits_of(folder: str) -> set[str]:
    """The splits a ``manifest.csv`` names (the demo set and corpora built by
    ``surf_mini.corpus`` have one); a plain folder of clips has none."""
    import csv
    manifest = os.path.join(folder, "manifest.csv")
    if not os.path.isfile(manifest):
        return set()
    with open(manifest) as f:
        return {row["split"] for row in csv.DictReader(f)}


def _split(folder: str, name: str) -> str | None:
    """``name`` where the folder is split by a manifest (load_clips then says if that split is
    empty); None for a plain folder, whose clips are all used."""
    return name if splits_of(folder) else None


def training_data(args, sr: int) -> dict:
    """How stages draw data: ``sampler(g)`` -> object with ``batch(B)`` or None, and
    ``view(sampler, g)`` -> ``MixtureView`` (mixtures only). FUSS: a ``FussMixer`` on the
    train events (references [B, 4, T], silent slots zero), hidden behind the same view."""
    length = int(round(args.seconds * sr))
    if args.mixtures:
        A.list_audio(args.mixtures)                              # fail early, one line
        return {"sample_rate": sr, "sampler": lambda g: None, "input_level": None,
                "view": lambda s, g: A.MixtureView(folder=args.mixtures, sample_rate=sr, length=length,
                                                   generator=g)}
    if args.task == "fuss":
        pool = F.load_events(args.data, sr, "train")
        sampler = lambda g: F.FussMixer(pool, length, g)                    # noqa: E731
    elif args.librimix:
        items = A.librimix_items(args.librimix)
        sampler = lambda g: A.LibriMixSampler(items, sr, length, g)          # noqa: E731
    else:
        clips = A.load_clips(args.data, sr, _split(args.data, "train"))
        aug = sr if args.augment else None
        sampler = lambda g: A.ClipMixer(clips, K, length, g, augment_rate=aug)   # noqa: E731
    return {"sample_rate": sr, "sampler": sampler, "view": lambda s, g: A.MixtureView(mixer=s),
            "input_level": training_level(sampler, sr)}


def training_level(sampler, sr: int, n: int = 64) -> float:
    """The median level (``audio_data.active_level``) of ``n`` training mixtures from a sampler
    of its own seed (the run's data stream is untouched). It travels in the checkpoint, and
    separate.py brings its inputs to it: FUSS-like mixtures sit far below the speech ones."""
    m, _ = sampler(torch.Generator().manual_seed(EVAL_SEED + 3)).batch(n)           # [n, 1, T]
    levels = torch.tensor([A.active_level(A.frame_powers(x[0], max(1, sr // 10))) for x in m])
    return round(float(levels.median()), 6)


def test_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed evaluation mixtures [N, 1, T] and references [N, K, T] of held-out speakers
    (fuss: of the test events, 1-4 sources, silent slots zero)."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    length = int(round(args.eval_seconds * sr))
    if args.task == "fuss":
        return F.FussMixer(F.load_events(args.data, sr, "test"), length, g).batch(args.eval_size)
    if args.eval_csv:
        return A.LibriMixSampler(A.librimix_items(args.eval_csv), sr, length, g).batch(args.eval_size)
    clips = A.load_clips(args.data, sr, _split(args.data, "test"))
    return A.ClipMixer(clips, K, length, g, snr_db=args.eval_snr).batch(args.eval_size)


def noisy_speech_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """fuss: fixed noisy-speech mixtures [N, 1, T] and references [N, 2, T] (speech, background):
    the test speakers of ``--noisy-speech`` over backgrounds of the test events (SURF Table 3,
    right; ``fuss_data.noisy_speech``). None for the speech task."""
    if args.task != "fuss":
        return None
    g = torch.Generator().manual_seed(EVAL_SEED + 2)
    speech = A.load_clips(args.noisy_speech, sr, _split(args.noisy_speech, "test"))
    pool = F.load_events(args.data, sr, "test")
    return F.noisy_speech(speech, pool, args.eval_size, int(round(args.eval_seconds * sr)), g)


def validation_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fixed validation mixtures of the ``valid`` speakers of ``--data`` (a corpus built by
    ``surf_mini.corpus`` has them; the demo set and LibriMix runs have none: no curve)."""
    if args.val_every <= 0 or args.librimix or "valid" not in splits_of(args.data):
        return None
    g = torch.Generator().manual_seed(EVAL_SEED + 1)
    length = int(round(args.eval_seconds * sr))
    if args.task == "fuss":
        return F.FussMixer(F.load_events(args.data, sr, "valid"), length, g).batch(args.val_size)
    clips = A.load_clips(args.data, sr, "valid")
    return A.ClipMixer(clips, K, length, g, snr_db=args.eval_snr).batch(args.val_size)


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------

def stage_loss(stage: Stage) -> torch.Tensor:
    """One batch's loss for the stage's method (mean over the batch).

    The data draws are always the global batch of ``--batch`` B; ``stage.mine`` keeps this
    process's B/W rows under torchrun (all B in one process) and moves them to the device.

    Silent references (``--task fuss``: a mixture of n < 4 sources has 4 - n all-zero slots).
    Choice: every loss below is the speech one, unchanged, because each already measures its
    error against the energy of a whole K-tuple or of a mixture, never of one reference, and a
    FUSS mixture always holds its background: sup-reg's 10 log10 of the PIT squared error over
    the tuple, SURF (3) (a silent slot adds ||x_hat_k||^2, pulling that output to silence);
    FLOSS's L^dB normalised by the whole target velocity X_1 - X_0 (X_0 is noise, never zero);
    MixIT's thresholded SNR on the two input mixtures; the remixing MSEs; SURF's L^dB on the
    remixed tuple (rm) or on the original mixtures (sr). All give finite losses and gradients
    with zero slots (tests/test_train_fuss.py). Rejected: a per-source negative SNR
    -10 log10(||x_k||^2 / ||x_k - x_hat_k||^2) (FUSS's supervised recipe needs a threshold tied
    to the mixture for that): it is +inf on a silent x_k (tested); MixIT's per-source
    thresholded form (tau ||x_k||^2) is finite but, with ||x_k|| = 0, reads 10 log10(err / eps),
    up to +80 dB, and would outweigh every active source.
    """
    a, dev, B, name, K = stage.args, stage.device, stage.args.batch, stage.name, stage.args.K
    g, net = stage.g_alg, stage.fwd
    if name == "sup-reg":                                                  # SURF (3)
        m, x = (stage.mine(t) for t in stage.sources.batch(B))             # [B, 1, T], [B, K, T]
        return pit_loss(net(m), x, kind="log").mean()
    if name == "sup-flow":                                                 # FLOSS (17), (19)
        _, x = stage.sources.batch(B)
        return floss_loss(net, stage.mine(x), kind="db", time_kind=a.time, shaping=SHAPING, generator=g).mean()
    if name == "mixit":                                                    # SURF D.5: two K-source
        mix_a = stage.mine(stage.mixtures.mixtures(B))                     # mixtures, no single ones
        mix_b = stage.mine(stage.mixtures.mixtures(B))
        est = net(mix_a + mix_b)                                           # [B, M, T], M = 2K outputs
        loss = mixit_loss(est, mix_a, mix_b, kind="snr")[0]
        if a.mixit_sparsity:                                               # Wisdom et al. (2021)
            loss = loss + a.mixit_sparsity * output_sparsity(est)          # fewer active outputs
        return loss.mean()
    m = stage.mine(stage.mixtures.mixtures(B))                             # [B/W, 1, T]
    beta = beta_at(stage.step, training.share_of_stage(a.beta_steps, stage))   # SURF D.3
    frozen = lambda mm: merge_outputs(stage.teacher_fwd(mm), K)           # noqa: E731  [B, M, T] -> [B, K, T]
    if name in ("remixit", "selfremix"):
        with torch.no_grad():                                 # Choice: beta coin (one per rank)
            use_frozen = float(torch.rand(1, generator=g, device=dev)) < beta
            x_bar = frozen(m) if use_frozen else stage.ema_fwd(m)          # [B, K, T]
        x_tilde, pi = shuffle_sources(x_bar, g)                            # SURF (14)
        est = net(mix(x_tilde))                                            # on M_tilde, SURF (15)
        if name == "remixit":
            return remixit_loss(est, x_tilde).mean()                       # SURF (16)
        return self_remixing_loss(est, x_tilde, pi, m).mean()              # SURF (17)
    with torch.no_grad():                                                  # Alg. 1 line 4, D.3
        x_bar = hybrid_teacher_sample(frozen, stage.ema_fwd, m, K, beta, shaping=SHAPING, generator=g)
    return surf_loss(net, x_bar, mode=name, kind="db", time_kind=a.time, shaping=SHAPING,
                     generator=g).loss.mean()  # 5-14


def run_stage(name: str, args, device, data, teacher=None, validate=None):
    """Build (or resume) a stage and train it to its step count; returns (stage, log)."""
    config = network_config(name, args.net, args.flow_head, args.K, args.M, args.reg_net)
    stage = Stage(name, config, args, device, data, teacher)
    return stage, training.resume_or_start(stage, args.resume, stage_loss, validate)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

@torch.no_grad()
def separate(net: torch.nn.Module, m: torch.Tensor, device, seed: int, batch: int = 16,
             steps="floss5") -> torch.Tensor:
    """Estimates for [N, 1, T] mixtures: regression f(m), or Euler sampling for flows (5-step)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([estimate_sources(net, m[i:i + batch].to(device), steps, SHAPING, g).cpu()
                      for i in range(0, len(m), batch)])


def validator(m: torch.Tensor, ref: torch.Tensor, sr: int, device, seed: int, k: int = K,
              task: str = "speech"):
    """The learning-curve scorer: SI-SDRi of a stage's EMA network on the validation mixtures
    (merged outputs for the 4-output MixIT network, what a student is fed, plus the oracle
    grouping; PIT for 2 outputs). ESTOI and PESQ are left to the final evaluation (slow).
    FUSS: the MSi of the raw outputs (``fuss_row``) under the same key, so curves plot alike."""
    def validate(stage) -> dict:
        est = separate(stage.ema, m, device, seed)
        if task == "fuss":
            msi = fuss_row("", est, ref, m, "raw")["MSi"]
            return {"si_sdri": None if msi is None else round(msi, 3)}
        out = {"si_sdri": round(audio_scores(est, ref, m, sr, "merged", perceptual=False)["si_sdri"].mean().item(), 3)}
        if est.shape[1] > k:
            out["si_sdri_oracle"] = round(
                audio_scores(est, ref, m, sr, "oracle", perceptual=False)["si_sdri"].mean().item(), 3)
        return out
    return validate


def score(name: str, est, ref, m, sr: int, grouping: str, note: str = "", k: int = K,
          dnsmos: bool = False) -> dict:
    """One speech row. ``dnsmos`` (``--dnsmos``): also DNSMOS P.835 SIG / BAK / OVRL, the mean
    over every separated source (after the grouping; resampled to 16 kHz, ``metrics.dnsmos``)."""
    s = audio_scores(est, ref, m, sr, grouping, dnsmos=dnsmos)
    sem = lambda x: (x.mean(1).std() / math.sqrt(len(x))).item()        # noqa: E731
    row = {"method": name, "si_sdr": s["si_sdr"].mean().item(), "si_sdri": s["si_sdri"].mean().item(),
           "si_sdri_sem": sem(s["si_sdri"]), "estoi": s["estoi"].mean().item(),
           "pesq": s["pesq"].mean().item(), "n": len(est), "outputs": est.shape[1],
           "grouping": grouping if est.shape[1] > k else "PIT", "note": note}
    if dnsmos:
        row.update({key: s[key].mean().item() for key in DNSMOS_KEYS})
    return row


# --dnsmos (the optional DNSMOS extra, metrics.dnsmos): three more columns in the speech rows
# and the noisy-speech rows (not in FUSS's sound-event table: DNSMOS rates speech), and a
# ceiling row, the references' own DNSMOS (what a perfect separator would score).
DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
DNSMOS_CEILING = "references (DNSMOS ceiling)"


def dnsmos_wanted(args) -> bool:
    """``--dnsmos`` and the extra installed; else one line (the install command), and False:
    the run goes on without the DNSMOS columns."""
    if not getattr(args, "dnsmos", False):
        return False
    from surf_mini.metrics import DNSMOSMissing, dnsmos_session
    try:
        dnsmos_session()
        return True
    except DNSMOSMissing as e:
        print(f"note: --dnsmos: {e}; scoring without the DNSMOS columns", file=sys.stderr)
        return False


def dnsmos_ceiling_row(ref, sr: int) -> dict:
    """The references' own DNSMOS (ref [N, K, T] at ``sr``, resampled to 16 kHz), as a row."""
    from surf_mini.metrics import dnsmos_scores
    s = dnsmos_scores(ref, sr)
    return {"method": DNSMOS_CEILING, "si_sdr": None, "si_sdri": None, "si_sdri_sem": None,
            "estoi": None, "pesq": None, "n": len(ref), "outputs": ref.shape[1], "grouping": "–",
            "note": "the references themselves", "budget": "",
            **{f"dnsmos_{k}": v.mean().item() for k, v in s.items()}}


FUSS_KEYS = ("1S", "2Si", "3Si", "4Si", "MSi")


def fuss_row(name: str, est, ref, m, grouping: str, note: str = "") -> dict:
    """One FUSS row (Wisdom et al. 2021, SURF Table 3): ``metrics.fuss_scores`` on est [N, M, T]
    (M = 4 or the teacher's raw 8; "merged": reduced to K = 4 by ``merge_outputs`` first),
    references [N, 4, T] with silent slots, mixtures [N, 1, T].

    1S: SI-SNR of the one source; nSi: SI-SNRi over the mixture, mean over the n matched active
    references; MSi: the mean of the nSi over every multi-source mixture (the nSi weighted by
    their mixture counts); under / equal / over: the shares of mixtures with fewer / as many /
    more produced outputs (power above -30 dB re the mixture, separate.py's rule) than active
    references. ``by_count`` repeats the scores for the mixtures of each source count 1..4.
    """
    if grouping == "merged" and est.shape[1] > ref.shape[1]:
        est = merge_outputs(est, ref.shape[1])                           # [N, 4, T], no reference
    s = fuss_scores(est, ref, m)
    multi = [(s[k], s["n"][k]) for k in FUSS_KEYS[1:4] if s[k] is not None]
    s["MSi"] = sum(v * c for v, c in multi) / sum(c for _, c in multi) if multi else None
    by_count = {}
    for c, b in s["by_count"].items():                  # a mixture of c sources is scored under one key
        key = "1S" if c == 1 else f"{c}Si"
        by_count[str(c)] = {"mixtures": b["mixtures"], key: s[key], **{r: b[r] for r in ("under", "equal", "over")}}
    return {"method": name, **{k: s[k] for k in FUSS_KEYS}, "under": s["under"], "equal": s["equal"],
            "over": s["over"], "counts": s["n"], "by_count": by_count, "n": len(est),
            "outputs": est.shape[1], "grouping": grouping, "note": note}


def evaluate(args, device, main, teacher, m, ref, sr) -> tuple[list[dict], torch.Tensor]:
    """The table's rows and the main network's estimates. FUSS: the MixIT networks (M = 8) are
    scored on their raw outputs, as FUSS evaluates a separator (each active reference gets its
    own best output; extra outputs count only for over-separation), and merged to 4, what a
    student is fed; the K = 4 networks as they are ("raw")."""
    rows = []
    dnsmos = getattr(args, "dnsmos", False)
    if teacher is not None:
        t_est = separate(teacher, m, device, args.seed)
        rows = [dict(r, note="what the student is fed") if r["grouping"] == "merged" else r
                for r in method_rows("its MixIT teacher", t_est, ref, m, sr, args.task, args.K, dnsmos)]
    est = separate(main, m, device, args.seed)
    return method_rows(METHOD_NAMES[args.mode], est, ref, m, sr, args.task, args.K, dnsmos) + rows, est


def method_rows(name: str, est, ref, m, sr: int, task: str = "speech", k: int = K,
                dnsmos: bool = False) -> list[dict]:
    """A network's own rows: FUSS raw (+ merged to K when it has more outputs); speech PIT for
    K outputs, else merged (reference-free, what a student is fed) and the oracle grouping.
    ``dnsmos``: the speech rows get the DNSMOS columns (FUSS's rows never do)."""
    if task == "fuss":
        return [fuss_row(name, est, ref, m, "raw")] + \
            ([fuss_row(name, est, ref, m, "merged")] if est.shape[1] > k else [])
    if est.shape[1] > k:
        return [score(name, est, ref, m, sr, "merged", dnsmos=dnsmos),
                score(name, est, ref, m, sr, "oracle", dnsmos=dnsmos)]
    return [score(name, est, ref, m, sr, "PIT", dnsmos=dnsmos)]


def noisy_speech_row(name: str, est, ref, m, sr: int, note: str = "", dnsmos: bool = False) -> dict:
    """SURF Table 3's noisy speech: the outputs [N, M, T] grouped onto (speech, background)
    [N, 2, T] with the references (``oracle_grouping``: each output goes to the one it helps,
    FUSS style, and the outputs of each are summed), then SI-SDR(i), ESTOI and PESQ of the
    speech alone (and with ``dnsmos`` its DNSMOS)."""
    speech = oracle_grouping(est.double(), ref.double())[:, :1]                 # [N, 1, T]
    row = score(name, speech, ref[:, :1], m, sr, "oracle", note, k=1, dnsmos=dnsmos)
    return dict(row, outputs=est.shape[1], grouping="oracle, speech / background")


def noisy_speech_rows(nets: list, m, ref, sr: int, device, seed: int, dnsmos: bool = False) -> list[dict]:
    """``noisy_speech_row`` for each (name, network) on the noisy-speech mixtures."""
    return [noisy_speech_row(name, separate(net, m, device, seed), ref, m, sr, dnsmos=dnsmos)
            for name, net in nets]


def noisy_speech_text(rows: list[dict], noisy, args, sr: int) -> str:
    if not rows:
        return ""
    return (f"\nNoisy speech (SURF Table 3, right): {len(noisy[0])} held-out speech crops of "
            f"{args.noisy_speech} over test backgrounds, SNR {F.NOISY_SPEECH_SNR_DB[0]:g} to "
            f"{F.NOISY_SPEECH_SNR_DB[1]:g} dB, {args.eval_seconds:g} s at {sr} Hz; scores of the speech:\n\n"
            + markdown(rows))


def checkpoint_budget(ckpt: dict) -> str:
    a = ckpt.get("trained_with") or ckpt.get("args") or {}
    own = f"{ckpt['step']} steps"
    if ckpt["stage"] in NEEDS_TEACHER and a.get("teacher_steps"):
        own = f"{a['teacher_steps']} MixIT + {own}"
    return own + (f", B={a['batch']} x {a['seconds']:g} s" if a.get("batch") and a.get("seconds") else "")


def evaluate_checkpoints(args) -> dict:
    """``--evaluate``: score each checkpoint's EMA network on the same test mixtures (those a run
    on ``--data`` with these ``--eval-*`` options is scored on) and print the table. The config
    and the sample rate travel in the checkpoint; no run folder is needed."""
    device = torch.device(args.device)
    ckpts, sr = read_checkpoints(args.evaluate, "evaluate")
    for path, c in ckpts:
        task = (c.get("trained_with") or c.get("args") or {}).get("task") or "speech"
        if task != args.task:
            raise SystemExit(f"error: {path} was trained for --task {task}; evaluate it with --task {task}")
    args.dnsmos = dnsmos_wanted(args)                # the extra missing: one line, no DNSMOS columns
    dnsmos = args.dnsmos
    try:
        m, ref = test_set(args, sr)
        noisy = noisy_speech_set(args, sr)
    except A.AudioDataError as e:
        raise SystemExit(f"error: {e}") from None
    rows, noisy_rows = [], []
    which = "model" if args.weights == "raw" else "ema"
    for path, ckpt in ckpts:
        if which not in ckpt:
            raise SystemExit(f"error: {path} holds no trained weights (an --export-ed checkpoint keeps "
                             f"the EMA copy only); drop --weights raw or give the run's own checkpoint")
        net, name = network_from(ckpt, which, path).to(device), METHOD_NAMES.get(ckpt["stage"], ckpt["stage"])
        name += " (raw weights)" if which == "model" else ""
        est = separate(net, m, device, args.seed)
        for r in method_rows(name, est, ref, m, sr, args.task, args.K, dnsmos):
            rows.append(dict(r, budget=checkpoint_budget(ckpt), checkpoint=path))
        if noisy is not None:
            r = noisy_speech_rows([(name, net)], *noisy, sr, device, args.seed, dnsmos)[0]
            noisy_rows.append(dict(r, budget=checkpoint_budget(ckpt), checkpoint=path))
    order = list(METHOD_NAMES.values())
    rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    ceilings = dnsmos_ceilings(args, ref, noisy, sr) if dnsmos else {}
    what = "trained (raw) weights" if which == "model" else "EMA weights"
    print(test_set_header(len(m), args, sr, f"from {args.data}, 5-step Euler for flows, {what}"))
    print(table(rows + ceilings.get("rows", [])) +
          noisy_speech_text(noisy_rows + ceilings.get("noisy_speech", []), noisy, args, sr), end="")
    out = {"rows": rows, "noisy_speech": noisy_rows} if noisy is not None else {"rows": rows}
    if ceilings:
        out["dnsmos_ceiling"] = ceilings
    return out


def dnsmos_ceilings(args, ref, noisy, sr: int) -> dict:
    """--dnsmos's ceiling rows, kept apart from "rows" (``--collect`` reads those as methods):
    "rows" the speech references (speech task), "noisy_speech" the clean speech of the
    noisy-speech set (FUSS task); each a one-row list."""
    out = {}
    if args.task != "fuss" and ref is not None:
        out["rows"] = [dnsmos_ceiling_row(ref, sr)]
    if noisy is not None:
        out["noisy_speech"] = [dnsmos_ceiling_row(noisy[1][:, :1], sr)]
    return out


def test_set_header(n: int, args, sr: int, how: str) -> str:
    """The line above every test table: what was scored, and how."""
    what = "FUSS-like (1-4 sources)" if args.task == "fuss" else "two-speaker"
    return f"\n{n} held-out {what} test mixtures of {args.eval_seconds:g} s at {sr} Hz, {how}:\n"


def write_examples(folder: str, m, ref, est, sr: int, n: int = 3, k: int = K) -> None:
    """The first test mixtures, their references and the (merged to ``k``) estimates as wav
    files (fuss: all 4 reference slots, the silent ones too)."""
    import soundfile as sf
    os.makedirs(folder, exist_ok=True)
    est = merge_outputs(est[:n], k) if est.shape[1] > k else est[:n]
    peak = max(m[:n].abs().max().item(), 1e-8) / 0.9
    for i in range(min(n, len(m))):
        signals = {"mix": m[i, 0], **{f"ref{j + 1}": ref[i, j] for j in range(ref.shape[1])},
                   **{f"est{j + 1}": est[i, j] for j in range(k)}}
        for tag, x in signals.items():
            path = os.path.join(folder, f"{i:02d}_{tag}.wav")
            tmp = path + ".tmp.wav"
            sf.write(tmp, (x / peak).clamp(-1, 1).numpy(), sr, subtype="PCM_16")
            os.replace(tmp, path)


def markdown(rows: list[dict], budget: str = "") -> str:
    # DNSMOS columns (--dnsmos) when any row has them; a row without them shows "–" there, and
    # the ceiling row (the references' own DNSMOS) shows "–" in the reference-based columns
    dns = any("dnsmos_ovrl" in r for r in rows)
    lines = ["| method | outputs | matching | SI-SDR (dB) | SI-SDRi (dB) | ESTOI | PESQ | "
             + ("DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | " if dns else "") + "n | budget |",
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if dns else "") + "---|---|"]
    for r in rows:
        if r["si_sdr"] is None:                                              # the DNSMOS ceiling
            scores = "– | – | – | – | "
        else:
            scores = (f"{r['si_sdr']:.2f} | {r['si_sdri']:.2f} ± {r['si_sdri_sem']:.2f} | "
                      f"{r['estoi']:.3f} | {r['pesq']:.2f} | ")
        if dns:
            scores += "".join(f"{_db(r.get(k))} | " for k in DNSMOS_KEYS)
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {scores}"
                     f"{r['n']} | {r.get('budget', budget)} |")
    return "\n".join(lines) + "\n"


def _db(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def fuss_markdown(rows: list[dict], budget: str = "") -> str:
    """The FUSS table (SURF Table 3's columns plus the separation-count rates), then the
    breakdown per source count: each count's own score and its under / equal / over rates."""
    lines = ["| method | outputs | matching | 1S (dB) | 2Si (dB) | 3Si (dB) | 4Si (dB) | MSi (dB) | "
             "under | equal | over | n | budget |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | "
                     + " | ".join(_db(r[k]) for k in FUSS_KEYS)
                     + f" | {r['under']:.2f} | {r['equal']:.2f} | {r['over']:.2f} | {r['n']} | "
                       f"{r.get('budget', budget)} |")
    lines += ["", "| method | outputs | matching | sources | mixtures | 1S / nSi (dB) | under | equal | over |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for c, b in r["by_count"].items():
            key = "1S" if c == "1" else f"{c}Si"
            lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {c} | {b['mixtures']} | "
                         f"{_db(b[key])} | {b['under']:.2f} | {b['equal']:.2f} | {b['over']:.2f} |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict], budget: str = "") -> str:
    """The speech table, or the FUSS one for rows of ``fuss_row``."""
    return fuss_markdown(rows, budget) if rows and "MSi" in rows[0] else markdown(rows, budget)


def collect(folder: str, plot: str | None = None) -> None:
    """One table from DIR/*/results.json; each results.json says its task (speech when absent,
    the runs from before --task), and each task present gets its own table."""
    results = training.read_results(folder)
    by_task = {}
    for res in results:
        by_task.setdefault(res.get("task", "speech"), []).append(res)
    for i, (task, group) in enumerate(sorted(by_task.items(), key=lambda kv: kv[0] != "speech")):
        if i:
            print(f"\n{task}:\n")
        rows = training.collect_rows(folder, list(METHOD_NAMES.values()), group)         # Table order
        print(table(rows) if rows else "(no scored rows: runs trained with --eval-size 0; score them "
              "with --evaluate)\n", end="")
    if plot:
        # a FUSS validator stores the MSi of the raw outputs under the same key (``validator``):
        # say so on the axis, and do not call the MixIT curve merged
        fuss = set(by_task) == {"fuss"}
        ylabel = ("validation MSi (dB, raw outputs, EMA weights)" if fuss
                  else "validation SI-SDRi (dB, EMA weights)")
        training.plot_curves(results, plot, "si_sdri", ylabel, MODES, METHOD_NAMES,
                             merged=() if fuss else ("mixit",), flows=("sup-flow", "rm", "sr"))


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
        return evaluate_checkpoints(args)
    if args.gpu_notice:
        training.gpu_job_notice(f"train_audio.py --librimix ... --mode {args.mode}", budget_flops(args))
    with training.process_group(args):       # torchrun: join its process group; else nothing
        return train_and_evaluate(args)


def train_and_evaluate(args) -> dict:
    """The run: data, the MixIT teacher stage (if the mode needs one), the mode's own stage, then
    (rank 0 only) the evaluation and the results files."""
    device = torch.device(args.device)
    training.setup_cuda(args)
    main_rank = training.is_main()
    if main_rank and args.eval_size:             # --dnsmos without the extra: said now, in one line
        args.dnsmos = dnsmos_wanted(args)
    if main_rank and args.net == "paper":
        print(f"budget: {training_plan(args)} (docs/training-on-gpus.md)", file=sys.stderr)
    t_start = time.time()
    sr = sample_rate_of(args.net)

    def load_data():
        try:
            data, val = training_data(args, sr), validation_set(args, sr)
            if not args.eval_size:                                         # train only
                return data, (None, None), val, None
            return data, test_set(args, sr), val, noisy_speech_set(args, sr)
        except A.AudioDataError as e:
            raise SystemExit(f"error: {e}") from None
    data, (m, ref), val, noisy = training.in_turn(load_data)
    validate = validator(*val, sr, device, args.seed, args.K, args.task) if val is not None else None
    os.makedirs(args.out, exist_ok=True)

    logs, teacher, teacher_steps = [], None, 0
    if args.mode in NEEDS_TEACHER:
        if args.teacher:
            ckpt = training.from_main(lambda: read_checkpoint(args.teacher))
            outputs = ckpt["config"].get("num_outputs")
            if ckpt["stage"] != "mixit" or ckpt["sample_rate"] != sr or outputs != args.M:
                raise SystemExit(f"error: --teacher {args.teacher!r} is a {ckpt['stage']!r} checkpoint "
                                 f"at {ckpt['sample_rate']} Hz with {outputs} outputs; need a MixIT one "
                                 f"at {sr} Hz with M = {args.M} (--task {args.task})")
            teacher, teacher_steps = network_from(ckpt, "ema", args.teacher).to(device), ckpt["step"]
            # the checkpoint's args are its provenance: record the reused teacher's real budget,
            # not the unused --teacher-steps default (export and --evaluate read it)
            args.teacher_steps = teacher_steps
        else:
            stage, log = run_stage("mixit", args, device, data, validate=validate)
            teacher, logs, teacher_steps = stage.ema, logs + [log], stage.step
        teacher = teacher.eval().requires_grad_(False)
    stage, log = run_stage(args.mode, args, device, data, teacher, validate)
    logs.append(log)
    if not main_rank:
        return {}                                # rank 0 evaluates and writes the results

    t_eval = time.time()
    budget = stage_budget(teacher_steps, stage.step, args)
    rows, noisy_rows = [], []                    # --eval-size 0: train only, the stages' curves
    if args.eval_size:
        rows, est = evaluate(args, device, stage.ema, teacher if args.mode in NEEDS_TEACHER else None,
                             m, ref, sr)
    if noisy is not None:
        noisy_rows = noisy_speech_rows(
            [(METHOD_NAMES[args.mode], stage.ema)] +
            ([("its MixIT teacher", teacher)] if args.mode in NEEDS_TEACHER else []), *noisy, sr, device, args.seed,
            getattr(args, "dnsmos", False))
    for r in rows + noisy_rows:
        r["budget"] = budget
    ceilings = dnsmos_ceilings(args, ref if args.eval_size else None, noisy, sr) \
        if getattr(args, "dnsmos", False) else {}
    result = {"task": args.task, "mode": args.mode, "net": args.net, "sample_rate": sr,
              "parameters": sum(p.numel() for p in stage.net.parameters()),
              "budget": budget, "stages": logs, "eval_seconds": round(time.time() - t_eval, 1),
              "total_seconds": round(time.time() - t_start, 1), "device": str(device),
              "torch_threads": torch.get_num_threads(), "rows": rows, "args": vars(args)}
    if training.WORLD.size > 1:
        result["processes"] = training.WORLD.size
    if noisy is not None:
        result["noisy_speech"] = noisy_rows
    if ceilings:
        result["dnsmos_ceiling"] = ceilings
    write_text(os.path.join(args.out, "results.json"), json.dumps(result, indent=1))
    if not args.eval_size:
        print(f"trained, not scored (--eval-size 0): python train_audio.py --evaluate "
              f"{os.path.join(args.out, args.mode + '.pt')} --data {args.data}")
        return result
    text = table(rows + ceilings.get("rows", []), budget) + \
        noisy_speech_text(noisy_rows + ceilings.get("noisy_speech", []), noisy, args, sr)
    write_text(os.path.join(args.out, "results.md"), text)
    write_examples(os.path.join(args.out, "examples"), m, ref, est, sr, k=args.K)
    print(test_set_header(len(m), args, sr, f"5-step Euler for flows, {result['total_seconds']:.0f} s on {device}"))
    print(text)
    print(f"wrote {args.out}/results.json, results.md, examples/")
    return result


def stage_budget(teacher_steps: int, steps: int, args) -> str:
    """The budget column: the steps trained (under --minutes, what fitted), the batch."""
    own = f"{teacher_steps} MixIT + {steps} steps" if teacher_steps else f"{steps} steps"
    return own + f", B={args.batch} x {args.seconds:g} s"


def training_plan(args) -> str:
    """One line: what a run with the paper networks will train, and its FLOPs."""
    stages = f"{args.teacher_steps} MixIT + " if args.mode in NEEDS_TEACHER and not args.teacher else ""
    speed = f"{args.precision}, {'compiled' if args.compile else 'eager'}"
    procs = f" over {training.WORLD.size} processes" if training.WORLD.size > 1 else ""
    return (f"{stages}{args.steps} {args.mode} steps at batch {args.batch} x {args.seconds:g} s{procs}, "
            f"paper networks, {speed}, about {budget_flops(args) / 1e18:.2f} EFLOP")


if __name__ == "__main__":
    main()
