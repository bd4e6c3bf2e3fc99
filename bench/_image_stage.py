"""The image training stage as train_image.py builds it, for the benchmarks (bench_step.py, gpu_check.py).

The benches time exactly what a training run steps (``methods.stage_loss`` through
``training.optimizer_step``), but no file outside tests/ imports a training script, so this
mirrors train_image.py's ``recipe`` and ``stage`` on the library's pieces, with the script's
defaults for every option a bench does not set. tests/test_bench_stage.py checks that the two
agree: the same Recipe, the same network config and the same first loss, flag for flag.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini import data as D  # noqa: E402
from surf_mini import methods  # noqa: E402
from surf_mini.checkpoints import IMAGE_KIND  # noqa: E402
from surf_mini.ncsn import NCSN  # noqa: E402

K, M = 2, 4
GPU_BATCH = 128             # train_image.py's GPU budget batch (PRESETS["gpu"]["batch"])
# train_image.py's CPU defaults and option defaults (its DEFAULTS and parse_args)
DEFAULTS = dict(dataset="mnist", mode="sr", net="cpu", nf=None, res_blocks=None, flow_head="velocity",
                teacher_steps=1000, steps=1000, batch=32, lr=2e-3, warmup=100, ema=0.99, beta_steps=1000,
                flow_loss="normalized", loss_space="velocity", time="delta", mixit_sparsity=1e-3,
                merge="balanced", precision="fp32", compile=False, tf32=False, seed=0, minutes=None,
                val_every=500, ckpt_every=500, out=None, device="cpu", cpu_ok=False)


def step_args(flags: list[str]) -> argparse.Namespace:
    """train_image.py-style flags (the subset the benches pass) over the script's defaults."""
    p = argparse.ArgumentParser(prog="bench")
    for name in ("--mode", "--net", "--dataset", "--out", "--device", "--precision", "--flow-head"):
        p.add_argument(name)
    for name in ("--nf", "--res-blocks", "--batch"):
        p.add_argument(name, type=int)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction)
    p.add_argument("--cpu-ok", action="store_true")
    given = {k: v for k, v in vars(p.parse_args(flags)).items() if v is not None}
    args = argparse.Namespace(**dict(DEFAULTS, **given))
    args.out = args.out or tempfile.mkdtemp()
    return args


def recipe(args) -> methods.Recipe:
    """train_image.recipe: squared-error losses, plain noise, the flow loss and merge rule asked."""
    return methods.Recipe(K=K, M=M, regression_loss="mse", mixit_loss="mse", flow_loss=args.flow_loss,
                          time=args.time, loss_space=args.loss_space, merge=args.merge,
                          mixit_sparsity=args.mixit_sparsity, beta_steps=args.beta_steps)


def network_config(mode: str, args, channels: int):
    return methods.image_network(mode, args.net, channels, K, M, args.flow_head, nf=args.nf,
                                 num_res_blocks=args.res_blocks)


def image_stage(mode: str, args, device, images, teacher=None):
    """train_image.stage: mode ``mode``'s stage on ``images`` (unsupervised: mixtures only)."""
    config = network_config(mode, args, images.shape[1])

    def batches(g):
        mixtures = D.MixtureSampler(images, g)
        sources = D.SourceSampler(images, g).batch if mode in methods.SUPERVISED else None
        return methods.Batches(mixtures.mixtures, mixtures.mixit_pair, sources)
    return methods.make_stage(mode, lambda: NCSN(config), args, device, recipe(args), batches,
                              kind=IMAGE_KIND, teacher=teacher, init=methods.start_student(mode, teacher))
