"""Train image separators on two-image mixtures (SURF section 5.1, Table 1), then score them.

    python train_image.py --preset quick                       # MNIST, SURF-SR, CPU, < 15 min
    python train_image.py --dataset cifar10 --mode sr          # CUDA: the GPU budget, a few hours
    python train_image.py --dataset cifar10 --mode sr --preset paper   # the paper's setting (GPU)
    torchrun --nproc_per_node 8 train_image.py --dataset cifar10 --mode sr   # 8 GPUs, DDP
    python train_image.py --mode rm --teacher runs/x/mixit.pt  # reuse a trained MixIT teacher

The seven ``--mode``s are surf_mini/methods.py's (the rows of SURF Table 1). A run is: options,
data, the MixIT teacher stage (for remixit, selfremix, rm, sr; skipped with ``--teacher``), the
mode's own stage, then the evaluation on held-out test mixtures: ``results.json``,
``results.md`` and ``grid.png`` in ``--out``. Each stage is a plain loop (training.py) writing
``<out>/<stage>.pt`` and a validation score every ``--val-every`` steps. Re-scoring, collecting
and exporting are ``python -m surf_mini.image_eval evaluate|collect`` and
``python -m surf_mini.checkpoints export`` (README, "Commands").

Choices where the papers are silent (README, "Choices"): MixIT has M = 4 outputs; ReMixIT and
Self-Remixing keep 4 (initialised from the teacher, as in their papers); SURF's flow has K = 2,
fed the teacher's outputs merged to 2 (``--merge``, reference-free) and started from the
teacher's weights where shapes agree (SURF D.4). Every network keeps an EMA copy, which is what
is evaluated and what teaches (SURF Alg. 1 line 16).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from surf_mini import data as D
from surf_mini import distributed, methods, options, runs
from surf_mini import image_eval as E
from surf_mini.checkpoints import IMAGE_KIND, image_network, read_checkpoint
from surf_mini.methods import METHOD_NAMES, MODES, NEEDS_TEACHER
from surf_mini.ncsn import NCSN

K, M = 2, 4                 # sources per mixture; MixIT outputs (a mixture of mixtures holds 4)

# Presets: the README's CPU job, the paper (SURF D.3-D.4, Tables 6 and 9; a GPU job) and the GPU
# budget, the default on a CUDA GPU: the paper network with NCSN++'s CIFAR-10 optimizer setting
# for 50k + 50k steps, about 1.1 EFLOP for --mode sr (docs/training-on-gpus.md). Short runs need
# a faster EMA and a shorter beta decay than the paper's 250k-step runs.
PRESETS = {
    "quick": dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=700, steps=600, batch=32,
                  lr=2e-3, warmup=100, ema=0.99, beta_steps=300, eval_size=1000),
    "paper": dict(net="paper", teacher_steps=250_000, steps=250_000, batch=256, lr=1e-4,
                  warmup=25_000, ema=0.999, beta_steps=200_000, eval_size=5000),
    "gpu": dict(net="paper", teacher_steps=50_000, steps=50_000, batch=128, lr=2e-4,
                warmup=5_000, ema=0.999, beta_steps=40_000, eval_size=5000),
}
DEFAULTS = dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=1000, steps=1000, batch=32,
                lr=2e-3, warmup=100, ema=0.99, beta_steps=1000, eval_size=1000, precision="fp32",
                compile=False, tf32=False)
GPU_SPEED = dict(precision="bf16", compile=True, tf32=True)   # the paper network on CUDA
# Forward FLOPs per example of the paper NCSN at 32x32 with (K = 2, M = 4) outputs, and a step's
# forwards per mode (a backward costs two; SURF: 5 Euler teacher steps, PIT, loss, frozen teacher).
FWD_FLOPS = (10.3e9, 20.4e9)
# Images in each dataset's test split, the most --eval-size may ask for: a constant, so a bad
# value is refused before anything is loaded (1e8 test mixtures trained first, then ran the
# machine out of memory). The evaluation draws its mixtures from these images.
TEST_IMAGES = {"mnist": 10_000, "cifar10": 10_000}
STEP_FORWARDS = {"sup-reg": (3, 0), "sup-flow": (4, 0), "mixit": (0, 3), "remixit": (0, 4),
                 "selfremix": (0, 4), "rm": (9, 1), "sr": (9, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    # what to train
    add("--preset", choices=sorted(PRESETS), help="named settings (other options override them)")
    add("--dataset", choices=("mnist", "cifar10"))
    add("--mode", choices=MODES, help="the method (surf_mini/methods.py)")
    # the networks (ncsn.PRESETS)
    add("--net", choices=("cpu", "cpu32", "paper"), help="NCSN preset")
    add("--nf", type=int, help="base width of every network of the run")
    add("--res-blocks", type=int, help="residual blocks per level")
    add("--flow-head", default="velocity", choices=("velocity", "x1"), help="ncsn.velocity_from_x1")
    # the methods' choices (methods.Recipe)
    add("--flow-loss", default="normalized", choices=("mse", "normalized", "db"),
        help="FLOSS (16), (18), (19)")
    add("--loss-space", default="velocity", choices=("velocity", "x1"), help="flow.in_x1_space")
    add("--time", default="delta", choices=("delta", "logsnr", "near0", "uniform"),
        help="the law of t, FLOSS 3.2")
    add("--mixit-sparsity", type=float, default=1e-3, help="weight of mixit.output_sparsity")
    # evaluation (image_eval.py) and validation
    add("--eval-size", type=int, help="held-out test mixtures")
    E.add_eval_options(p)
    add("--val-every", type=int, default=500, help="validation score every N steps (0: never)")
    add("--val-size", type=int, default=200, help="validation mixtures (held-out training images)")
    # the budget, the optimiser, where and how it runs: every training run's (options.py)
    add("--out", help="run folder (default runs/<dataset>-<mode>)")
    options.add_training_options(p, ckpt_every=500)
    args = p.parse_args(argv)

    options.pick_device(p, args)
    cuda = args.device.startswith("cuda")
    # The card's `--dataset cifar10 --mode sr` without a GPU is stopped by a one-line notice.
    args.gpu_notice = (not cuda and args.preset is None and args.net is None
                       and args.dataset == "cifar10" and not args.cpu_ok)
    gpu_budget = args.net != "cpu" and (cuda or args.cpu_ok or args.gpu_notice)
    options.apply_presets(args, DEFAULTS, PRESETS, gpu_budget, GPU_SPEED)
    args.out = args.out or os.path.join("runs", f"{args.dataset}-{args.mode}")
    options.check_training_options(p, args, NEEDS_TEACHER)
    if not 1 <= args.eval_size <= TEST_IMAGES[args.dataset]:
        p.error(f"--eval-size must be between 1 and {TEST_IMAGES[args.dataset]} (the size of "
                f"{args.dataset}'s test split), not {args.eval_size}")
    return args


def recipe(args) -> methods.Recipe:
    """Images: squared-error losses (SURF D.4), plain noise, the flow loss and merge rule asked."""
    return methods.Recipe(K=K, M=M, regression_loss="mse", mixit_loss="mse",
                          flow_loss=args.flow_loss, time=args.time, loss_space=args.loss_space,
                          merge=args.merge, mixit_sparsity=args.mixit_sparsity,
                          beta_steps=args.beta_steps)


def network_config(mode: str, args, channels: int):
    return methods.image_network(mode, args.net, channels, K, M, args.flow_head, nf=args.nf,
                                 num_res_blocks=args.res_blocks)


def stage(name: str, args, device, images: torch.Tensor, teacher=None):
    """Mode ``name``'s stage on ``images``: the unsupervised stages draw mixtures only."""
    config = network_config(name, args, images.shape[1])

    def batches(g):
        mixtures = D.MixtureSampler(images, g)
        sources = D.SourceSampler(images, g).batch if name in methods.SUPERVISED else None
        return methods.Batches(mixtures.mixtures, mixtures.mixit_pair, sources)
    return methods.make_stage(name, lambda: NCSN(config), args, device, recipe(args), batches,
                              kind=IMAGE_KIND, teacher=teacher,
                              init=methods.start_student(name, teacher))


def budget_flops(args) -> float:
    """Training FLOPs of a run with the paper network: the GPU notice's estimate."""
    def flops(mode: str, steps: int) -> float:
        k2, m4 = STEP_FORWARDS[mode]
        return steps * args.batch * (k2 * FWD_FLOPS[0] + m4 * FWD_FLOPS[1])
    teacher = args.mode in NEEDS_TEACHER and not args.teacher
    return flops(args.mode, args.steps) + (flops("mixit", args.teacher_steps) if teacher else 0.0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_notice:
        options.gpu_job_notice(f"train_image.py --dataset cifar10 --mode {args.mode}",
                               budget_flops(args))
    with distributed.process_group(args):       # torchrun: join its process group; else nothing
        return train_and_evaluate(args)


def train_and_evaluate(args) -> dict:
    device = torch.device(args.device)
    distributed.setup_cuda(args)
    t_start = time.time()
    if distributed.is_main() and args.net == "paper":
        plan = options.training_plan(args, budget_flops(args), "paper network", NEEDS_TEACHER,
                                     distributed.WORLD.size)
        print(f"budget: {plan} (docs/training-on-gpus.md)", file=sys.stderr)

    # ---- data: training, validation (held-out training images) and test images, padded
    def load_data():
        try:
            train, valid = D.train_and_validation(args.dataset, args.data_dir, args.download)
            return train, valid, D.load_images(args.dataset, "test", args.data_dir, args.download)
        except D.DataError as e:
            raise SystemExit(f"error: {e}") from None
    train_images, valid_images, test_images = distributed.in_turn(load_data)  # rank 0 first
    div = network_config(args.mode, args, train_images.shape[1]).size_multiple
    train_images, size = D.pad_to_multiple(train_images, div)
    test_images, _ = D.pad_to_multiple(test_images, div)
    valid_images, _ = D.pad_to_multiple(valid_images, div)
    validate = None
    if args.val_every > 0 and args.val_size > 0 and len(valid_images) >= K:
        validate = E.validator(*D.test_mixtures(valid_images, args.val_size, seed=777), size,
                               device, args.seed, args.merge, args.also_steps)
    os.makedirs(args.out, exist_ok=True)

    # ---- the MixIT teacher: trained here, or read from --teacher
    logs, teacher, teacher_steps = [], None, 0
    if args.mode in NEEDS_TEACHER:
        if args.teacher:
            ckpt = distributed.from_main(lambda: read_checkpoint(args.teacher, IMAGE_KIND, "image"))
            if ckpt["stage"] != "mixit":
                raise SystemExit(f"error: --teacher {args.teacher!r} is a {ckpt['stage']!r} "
                                 f"checkpoint, not a MixIT one")
            teacher = image_network(ckpt, "ema", args.teacher).to(device)
            teacher_steps = ckpt["step"]
            args.teacher_steps = teacher_steps   # the run's provenance: the reused teacher's budget
        else:
            mixit = stage("mixit", args, device, train_images)
            logs.append(methods.run_stage(mixit, args.resume, validate))
            teacher, teacher_steps = mixit.ema, mixit.step
        teacher = teacher.eval().requires_grad_(False)

    # ---- the mode's own stage
    own = stage(args.mode, args, device, train_images, teacher)
    logs.append(methods.run_stage(own, args.resume, validate))
    if not distributed.is_main():
        return {}                                # rank 0 evaluates and writes the results

    # ---- evaluation on the test mixtures (image_eval.py), then the results files
    t_eval = time.time()
    m, src = D.test_mixtures(test_images, args.eval_size, seed=args.eval_seed)
    ref = D.crop_center(src, size)
    paper = E.paper_metrics(device) if args.paper_metrics else None
    rows, est = E.network_rows(METHOD_NAMES[args.mode], own.ema, m, ref, size, device, args, paper)
    if args.mode in ("rm", "sr"):                # the SURF student beside its teacher
        t_est = E.separate(teacher, m, device, args.seed, schedule=args.eval_steps)
        t_est = D.crop_center(t_est, size)
        rows += [E.score("its MixIT teacher", t_est, ref, "merged", "what the student is fed",
                         paper, args.merge),
                 E.score("its MixIT teacher", t_est, ref, "oracle", paper=paper)]
    budget = f"{teacher_steps} MixIT + " if teacher_steps else ""
    budget += f"{args.steps} steps, B={args.batch}"
    for r in rows:
        r["budget"] = budget
    result = runs.run_record(args, own.net, logs, rows, budget, t_start, t_eval, device,
                             distributed.WORLD.size, dataset=args.dataset)
    table = E.markdown(rows, budget)
    runs.write_results(args.out, result, table)
    E.save_grid(os.path.join(args.out, "grid.png"), D.crop_center(m, size), ref, est,
                merge=args.merge)
    print(f"\n{args.dataset}, {args.eval_size} held-out test mixtures, 5-step Euler for flows, "
          f"{result['total_seconds']:.0f} s on {device}:\n")
    print(table)
    print(f"wrote {args.out}/results.json, results.md, grid.png")
    return result


if __name__ == "__main__":
    main()
