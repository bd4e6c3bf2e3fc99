"""bench/_image_stage.py mirrors train_image.py's recipe and stage (the benches time exactly a
training step but may not import the script): the two must agree, flag for flag."""
import os
import sys

import pytest
import torch

import train_image
from surf_mini import methods, training
from surf_mini.data import pad_to_multiple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import _image_stage as S  # noqa: E402


def first_loss(stage) -> float:
    torch.manual_seed(0)
    return training.optimizer_step(stage, methods.stage_loss).item()


@pytest.mark.parametrize("flags", [["--mode", "sr"], ["--mode", "sup-flow", "--flow-head", "x1", "--nf", "8"],
                                   ["--mode", "mixit"], ["--mode", "selfremix", "--res-blocks", "2"]])
def test_bench_stage_is_the_training_scripts(flags, tmp_path):
    images, _ = pad_to_multiple(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)), 4)
    common = ["--net", "cpu", "--batch", "4", "--device", "cpu", "--out", str(tmp_path)]
    ours, theirs = train_image.parse_args(flags + common), S.step_args(flags + common)
    assert S.recipe(theirs) == train_image.recipe(ours)
    for k in ("lr", "warmup", "ema", "steps", "teacher_steps", "precision", "compile", "seed", "batch"):
        assert getattr(theirs, k) == getattr(ours, k), k
    mode = ours.mode
    assert S.network_config(mode, theirs, 1) == train_image.network_config(mode, ours, 1)
    teacher = None
    if mode in methods.NEEDS_TEACHER:
        teacher = methods.image_network("mixit", "cpu", 1, nf=ours.nf, num_res_blocks=ours.res_blocks)
        from surf_mini.ncsn import NCSN
        teacher = NCSN(teacher).eval().requires_grad_(False)
    a = train_image.stage(mode, ours, torch.device("cpu"), images, teacher)
    b = S.image_stage(mode, theirs, torch.device("cpu"), images, teacher)
    assert first_loss(a) == first_loss(b)


def test_a_bench_stage_that_drifts_from_the_script_is_caught(tmp_path):
    """The negative case: the mirror with another flow loss gives another Recipe."""
    flags = ["--mode", "sr", "--net", "cpu", "--device", "cpu", "--out", str(tmp_path)]
    drifted = S.step_args(flags)
    drifted.flow_loss = "mse"
    assert S.recipe(drifted) != train_image.recipe(train_image.parse_args(flags))


def test_the_gpu_batch_is_the_scripts():
    assert S.GPU_BATCH == train_image.PRESETS["gpu"]["batch"]
