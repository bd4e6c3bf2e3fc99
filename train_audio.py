"""Train speech separators on two-speaker mixtures (SURF section 5.2, Table 4), or universal sound
separators on FUSS-like mixtures of 1-4 events (``--task fuss``, Table 3), then score them.

    python train_audio.py --preset quick                        # demo speech, SURF-SR, CPU
    python train_audio.py --mode sr --data ~/data/speech        # the speech corpus (prepare/)
    python train_audio.py --mode rm --teacher runs/x/mixit.pt   # reuse a trained MixIT teacher
    python train_audio.py --mode sr --mixtures my_mixtures/     # mixture recordings only
    python train_audio.py --mode sr --librimix train-360.csv    # CUDA: the GPU budget, a few hours
    torchrun --nproc_per_node 8 train_audio.py --mode sr --librimix train-360.csv   # 8 GPUs, DDP
    python train_audio.py --task fuss --mode sr                 # FUSS-like sample (docs/fuss.md)

The seven ``--mode``s are surf_mini/methods.py's. Networks (SURF D.5): the frozen MixIT teacher
is a ConvTasNet; every other model an MB-TFLocoformer, in flow or regression mode. A run is:
options, data, the MixIT teacher stage (for remixit, selfremix, rm, sr), the mode's own stage,
then the evaluation (audio_eval.py): ``results.json``, ``results.md`` and ``examples/*.wav`` in
``--out``. Re-scoring, collecting and exporting are ``python -m surf_mini.audio_eval
evaluate|collect`` and ``python -m surf_mini.checkpoints export`` (README, "Commands").

Choices where the papers are silent (README, "Choices"): K = 2 (fuss: 4) outputs everywhere but
the teacher, whose M = 2K outputs are merged to K without references before any remixing; the
locoformer students start fresh (a ConvTasNet's weights do not fit them), the flows bridged by
SURF's hybrid teacher (D.3), the regression students by a per-batch coin with probability beta
between the frozen teacher and their EMA copy (methods.Recipe.teacher_coin).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from surf_mini import audio_data as A
from surf_mini import audio_eval as E
from surf_mini import distributed, methods, options, runs
from surf_mini import fuss_data as F
from surf_mini.checkpoints import AUDIO_KIND, audio_network, read_checkpoint
from surf_mini.convtasnet import ConvTasNet, ConvTasNetConfig
from surf_mini.locoformer import MBTFLocoformer
from surf_mini.methods import METHOD_NAMES, MODES, NEEDS_TEACHER, SUPERVISED

# Presets: the README's CPU job (8 kHz, one-second crops), the paper (SURF D.5 / Table 7: 16 kHz,
# the 33M locoformer and 5.5M ConvTasNet; a GPU job) and the GPU budget, the default for
# --librimix or --net paper on CUDA: 20k + 15k steps of 8 two-second crops, about 3.2 EFLOP for
# --mode sr (docs/training-on-gpus.md).
PRESETS = {
    "quick": dict(mode="sr", net="cpu", teacher_steps=3000, steps=1000, batch=8, seconds=1.0,
                  lr=2e-3, warmup=100, ema=0.99, beta_steps=500, eval_size=100),
    "paper": dict(net="paper", teacher_steps=250_000, steps=250_000, batch=16, seconds=4.0,
                  lr=1e-4, warmup=25_000, ema=0.999, beta_steps=200_000, eval_size=3000),
    "gpu": dict(net="paper", teacher_steps=20_000, steps=15_000, batch=8, seconds=2.0,
                lr=1e-4, warmup=2_000, ema=0.999, beta_steps=12_000, eval_size=1000),
}
DEFAULTS = dict(mode="sr", net="cpu", teacher_steps=1000, steps=1000, batch=8, seconds=1.0, lr=2e-3,
                warmup=100, ema=0.99, beta_steps=1000, eval_size=100, precision="fp32",
                compile=False, tf32=False)
GPU_SPEED = dict(precision="bf16", compile=True, tf32=True)   # the paper networks on CUDA
# Forward FLOPs of the paper networks per second of 16 kHz audio (locoformer K = 2, ConvTasNet
# M = 4), and a step's forwards per mode (a backward costs two).
FWD_FLOPS_PER_SECOND = (1.47e12, 0.46e9)
STEP_FORWARDS = {"sup-reg": (3, 0), "sup-flow": (4, 0), "mixit": (0, 3), "remixit": (4, 1),
                 "selfremix": (4, 1), "rm": (9, 1), "sr": (9, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    # what to train, on what
    add("--preset", choices=sorted(PRESETS), help="named settings (other options override them)")
    add("--task", choices=sorted(E.TASKS), default="speech", help="speech (K = 2) or fuss (K = 4)")
    add("--mode", choices=MODES, help="the method (surf_mini/methods.py)")
    add("--data", help="speech: folder of single-speaker clips (default: the shipped demo set); "
                       "fuss: a FUSS-like set (default: the committed sample)")
    add("--mixtures", help="a folder of mixture recordings (unsupervised modes only)")
    add("--librimix", help="LibriMix metadata CSV to train on")
    add("--augment", action="store_true", help="speed, pitch, EQ, reverb (audio_data.augment)")
    # the networks (locoformer.PRESETS, convtasnet.PRESETS)
    add("--net", choices=("cpu", "paper"), help="network presets")
    add("--flow-head", choices=("compressed", "x1"), default="compressed",
        help="locoformer.py's two heads")
    add("--reg-net", choices=("locoformer", "convtasnet"), default="locoformer",
        help="network of sup-reg, remixit and selfremix")
    add("--seconds", type=float, help="length of the training crops")
    # the methods' choices (methods.Recipe)
    add("--time", default="delta", choices=("delta", "logsnr", "near0", "uniform"),
        help="the law of t, FLOSS 3.2")
    add("--mixit-sparsity", type=float, default=0.0, help="weight of mixit.output_sparsity")
    # evaluation (audio_eval.py) and validation
    add("--eval-size", type=int, help="held-out test mixtures (0: train only)")
    E.add_eval_options(p)
    add("--val-every", type=int, default=500, help="validation every N steps (a valid split)")
    add("--val-size", type=int, default=100, help="validation mixtures")
    # the budget, the optimiser, where and how it runs: every training run's (options.py)
    add("--out", help="run folder (default runs/audio-<mode>)")
    options.add_training_options(p, ckpt_every=200)
    args = p.parse_args(argv)

    options.pick_device(p, args)
    cuda = args.device.startswith("cuda")
    # --librimix without a GPU (and no --net / --preset) is stopped by a one-line notice.
    args.gpu_notice = (not cuda and args.preset is None and args.net is None
                       and args.librimix is not None and not args.cpu_ok)
    task = E.TASKS[args.task]
    gpu_budget = args.net != "cpu" and (args.librimix or args.net == "paper") and \
        (cuda or args.cpu_ok or args.gpu_notice)
    defaults = dict(DEFAULTS, data=task["data"], eval_seconds=task["eval_seconds"])
    options.apply_presets(args, defaults, PRESETS, gpu_budget, GPU_SPEED)
    args.K, args.M = task["K"], task["M"]                    # outputs: locoformers, MixIT teacher
    if args.task == "fuss":
        args.noisy_speech = args.noisy_speech or A.DEMO_DIR
    elif args.noisy_speech:
        p.error("--noisy-speech goes with --task fuss")
    if args.task == "fuss" and (args.librimix or args.eval_csv or args.augment):
        p.error("--librimix, --eval-csv and --augment are speech options; --task fuss takes --data "
                "(a FUSS-like set) or --mixtures")
    if args.mixtures and args.librimix:
        p.error("give at most one of --mixtures and --librimix")
    if args.mixtures and args.mode in SUPERVISED:
        p.error(f"--mode {args.mode} needs references; --mixtures gives mixtures only (use --data)")
    args.out = args.out or os.path.join("runs", f"audio-{args.mode}")
    options.check_training_options(p, args, NEEDS_TEACHER)
    if min(args.seconds, args.eval_seconds) <= 0 or args.eval_size < 0:
        p.error("--seconds and --eval-seconds must be positive, --eval-size at least 0")
    return args


def recipe(args) -> methods.Recipe:
    """Audio: 10 log10 / SNR losses, FLOSS's L^dB, envelope-shaped noise (SURF D.5)."""
    return methods.Recipe(K=args.K, M=args.M, regression_loss="log", mixit_loss="snr",
                          flow_loss="db", time=args.time, shaping=E.SHAPING, merge="loudest",
                          mixit_sparsity=args.mixit_sparsity, beta_steps=args.beta_steps,
                          teacher_coin=True)


def sample_rate_of(net: str) -> int:
    return methods.audio_network("sup-flow", net).sample_rate


def training_data(args, sr: int) -> dict:
    """How stages draw data: ``sampler(g)`` -> an object with ``batch(B)`` (None for
    ``--mixtures``) and ``view(sampler, g)`` -> a ``MixtureView`` (mixtures only)."""
    length = int(round(args.seconds * sr))
    if args.mixtures:
        A.list_audio(args.mixtures)                              # fail early, one line
        return {"sample_rate": sr, "sampler": lambda g: None, "input_level": None,
                "view": lambda s, g: A.MixtureView(folder=args.mixtures, sample_rate=sr,
                                                   length=length, generator=g)}
    if args.task == "fuss":
        pool = F.load_events(args.data, sr, "train")
        sampler = lambda g: F.FussMixer(pool, length, g)                    # noqa: E731
    elif args.librimix:
        items = A.librimix_items(args.librimix)
        sampler = lambda g: A.LibriMixSampler(items, sr, length, g)          # noqa: E731
    else:
        clips = A.load_clips(args.data, sr, E.clip_split(args.data, "train"))
        aug = sr if args.augment else None
        sampler = lambda g: A.ClipMixer(clips, E.K, length, g, augment_rate=aug)   # noqa: E731
    return {"sample_rate": sr, "sampler": sampler, "view": lambda s, g: A.MixtureView(mixer=s),
            "input_level": training_level(sampler, sr)}


def training_level(sampler, sr: int, n: int = 64) -> float:
    """The median level of ``n`` training mixtures (a sampler of its own seed: the run's data
    stream is untouched). It travels in the checkpoint; separate.py brings its inputs to it."""
    m, _ = sampler(torch.Generator().manual_seed(E.EVAL_SEED + 3)).batch(n)           # [n, 1, T]
    levels = torch.tensor([A.active_level(A.frame_powers(x[0], max(1, sr // 10))) for x in m])
    return round(float(levels.median()), 6)


def stage(name: str, args, device, data: dict, teacher=None):
    """Mode ``name``'s stage: the unsupervised stages see the mixtures-only view."""
    config = methods.audio_network(name, args.net, args.K, args.M, args.flow_head, args.reg_net)
    tasnet = isinstance(config, ConvTasNetConfig)

    def batches(g):
        sampler = data["sampler"](g)
        view = data["view"](sampler, g)
        sources = sampler.batch if name in SUPERVISED else None
        pair = lambda B: (view.mixtures(B), view.mixtures(B))          # noqa: E731  two draws
        return methods.Batches(view.mixtures, pair, sources)
    # The ConvTasNet's last TCN block feeds only its skip output: its residual 1x1 conv gets no
    # gradient, which DDP must be told about.
    meta = dict(arch="convtasnet" if tasnet else "locoformer", shaping=E.SHAPING,
                sample_rate=data["sample_rate"], input_level=data.get("input_level"))
    return methods.make_stage(name, lambda: (ConvTasNet if tasnet else MBTFLocoformer)(config),
                              args, device, recipe(args), batches, kind=AUDIO_KIND,
                              teacher=teacher, find_unused_parameters=tasnet, meta=meta)


def budget_flops(args) -> float:
    """Training FLOPs of a run with the paper networks: the GPU notice's estimate."""
    def flops(mode: str, steps: int) -> float:
        loco, tasnet = STEP_FORWARDS[mode]
        return steps * args.batch * args.seconds * (loco * FWD_FLOPS_PER_SECOND[0] +
                                                    tasnet * FWD_FLOPS_PER_SECOND[1])
    teacher = args.mode in NEEDS_TEACHER and not args.teacher
    return flops(args.mode, args.steps) + (flops("mixit", args.teacher_steps) if teacher else 0.0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_notice:
        options.gpu_job_notice(f"train_audio.py --librimix ... --mode {args.mode}",
                               budget_flops(args))
    with distributed.process_group(args):       # torchrun: join its process group; else nothing
        return train_and_evaluate(args)


def train_and_evaluate(args) -> dict:
    device = torch.device(args.device)
    distributed.setup_cuda(args)
    main_rank = distributed.is_main()
    if main_rank and args.eval_size:             # --dnsmos without the extra: said now, in one line
        args.dnsmos = E.dnsmos_wanted(args)
    if main_rank and args.net == "paper":
        plan = options.training_plan(args, budget_flops(args), "paper networks", NEEDS_TEACHER,
                                     distributed.WORLD.size)
        print(f"budget: {plan} (docs/training-on-gpus.md)", file=sys.stderr)
    t_start = time.time()
    sr = sample_rate_of(args.net)

    # ---- data: training draws, validation, test and (fuss) noisy-speech mixtures
    def load_data():
        try:
            data, val = training_data(args, sr), E.validation_set(args, sr)
            if not args.eval_size:                                         # train only
                return data, (None, None), val, None
            return data, E.test_set(args, sr), val, E.noisy_speech_set(args, sr)
        except A.AudioDataError as e:
            raise SystemExit(f"error: {e}") from None
    data, (m, ref), val, noisy = distributed.in_turn(load_data)
    validate = None if val is None else E.validator(*val, sr, device, args.seed, args.K, args.task)
    os.makedirs(args.out, exist_ok=True)

    # ---- the MixIT teacher: trained here, or read from --teacher
    logs, teacher, teacher_steps = [], None, 0
    if args.mode in NEEDS_TEACHER:
        if args.teacher:
            ckpt = distributed.from_main(lambda: read_checkpoint(args.teacher, AUDIO_KIND, "audio"))
            outputs = ckpt["config"].get("num_outputs")
            if ckpt["stage"] != "mixit" or ckpt["sample_rate"] != sr or outputs != args.M:
                got = f"{ckpt['stage']!r} checkpoint at {ckpt['sample_rate']} Hz, {outputs} outputs"
                raise SystemExit(f"error: --teacher {args.teacher!r} is a {got}; need a MixIT one "
                                 f"at {sr} Hz with M = {args.M} (--task {args.task})")
            teacher = audio_network(ckpt, "ema", args.teacher).to(device)
            teacher_steps = ckpt["step"]
            args.teacher_steps = teacher_steps   # the run's provenance: the reused teacher's budget
        else:
            mixit = stage("mixit", args, device, data)
            logs.append(methods.run_stage(mixit, args.resume, validate))
            teacher, teacher_steps = mixit.ema, mixit.step
        teacher = teacher.eval().requires_grad_(False)

    # ---- the mode's own stage
    own = stage(args.mode, args, device, data, teacher)
    logs.append(methods.run_stage(own, args.resume, validate))
    if not main_rank:
        return {}                                # rank 0 evaluates and writes the results

    # ---- evaluation (audio_eval.py), then the results files
    t_eval = time.time()
    budget = stage_budget(teacher_steps, own.step, args)
    dnsmos = getattr(args, "dnsmos", False)
    rows, noisy_rows = [], []                    # --eval-size 0: train only, the stages' curves
    if args.eval_size:
        scored_teacher = teacher if args.mode in NEEDS_TEACHER else None
        rows, est = E.run_rows(args, device, own.ema, scored_teacher, m, ref, sr)
    if noisy is not None:
        nets = [(METHOD_NAMES[args.mode], own.ema)] + \
            ([("its MixIT teacher", teacher)] if args.mode in NEEDS_TEACHER else [])
        noisy_rows = E.noisy_speech_rows(nets, *noisy, sr, device, args.seed, dnsmos)
    for r in rows + noisy_rows:
        r["budget"] = budget
    ceilings = E.dnsmos_ceilings(args, ref if args.eval_size else None, noisy, sr) if dnsmos else {}
    result = runs.run_record(args, own.net, logs, rows, budget, t_start, t_eval, device,
                             distributed.WORLD.size, task=args.task, sample_rate=sr)
    if noisy is not None:
        result["noisy_speech"] = noisy_rows
    if ceilings:
        result["dnsmos_ceiling"] = ceilings
    if not args.eval_size:
        runs.write_results(args.out, result)
        print(f"trained, not scored (--eval-size 0): python -m surf_mini.audio_eval evaluate "
              f"{os.path.join(args.out, args.mode + '.pt')} --data {args.data}")
        return result
    text = E.table(rows + ceilings.get("rows", []), budget) + \
        E.noisy_speech_text(noisy_rows + ceilings.get("noisy_speech", []), noisy, args, sr)
    runs.write_results(args.out, result, text)
    E.write_examples(os.path.join(args.out, "examples"), m, ref, est, sr, k=args.K)
    how = f"5-step Euler for flows, {result['total_seconds']:.0f} s on {device}"
    print(E.test_set_header(len(m), args, sr, how))
    print(text)
    print(f"wrote {args.out}/results.json, results.md, examples/")
    return result


def stage_budget(teacher_steps: int, steps: int, args) -> str:
    """The budget column: the steps trained (under --minutes, what fitted), the batch."""
    own = f"{teacher_steps} MixIT + {steps} steps" if teacher_steps else f"{steps} steps"
    return own + f", B={args.batch} x {args.seconds:g} s"


if __name__ == "__main__":
    main()
