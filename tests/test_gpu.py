"""CUDA-only checks (issue 11): the card's defaults resolve to the GPU budget, both paper velocity
networks train a few compiled bf16 steps, and (with two GPUs) NCCL runs train like one process.

Skipped without a CUDA GPU, the reason printed in pytest's summary (``-rs``, as .ci/run runs it).
Nothing here has run on the machine this project is developed on: it has no GPU.
"""
import os
import subprocess
import sys

import pytest
import torch

import train_audio
import train_image
from tests.test_distributed import ROOT, assert_same_weights, load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU: the compile / bf16 / TF32 / NCCL paths need one")


def test_the_card_command_resolves_to_the_gpu_budget(tmp_path):
    args = train_image.parse_args(["--dataset", "cifar10", "--mode", "sr", "--out", str(tmp_path)])
    gpu = train_image.PRESETS["gpu"]
    assert args.device == "cuda" and not args.gpu_notice
    assert {k: getattr(args, k) for k in gpu} == gpu
    assert (args.precision, args.compile, args.tf32) == ("bf16", True, True)
    paper = train_image.parse_args(["--dataset", "cifar10", "--preset", "paper"])
    assert (paper.steps, paper.batch, paper.compile, paper.precision) == (250_000, 256, True, "bf16")
    small = train_image.parse_args(["--dataset", "cifar10", "--net", "cpu"])   # as on a CPU
    assert (small.steps, small.precision, small.compile) == (1000, "fp32", False)
    audio = train_audio.parse_args(["--librimix", "train.csv"])
    assert {k: getattr(audio, k) for k in train_audio.PRESETS["gpu"]} == train_audio.PRESETS["gpu"]
    assert (audio.precision, audio.compile, audio.tf32) == ("bf16", True, True)


def test_compiled_bf16_steps_of_the_paper_ncsn(cifar, tmp_path):
    res = train_image.main(["--dataset", "cifar10", "--data-dir", cifar, "--mode", "sup-flow",
                            "--net", "paper", "--steps", "3", "--batch", "4", "--eval-size", "4",
                            "--val-every", "0", "--out", str(tmp_path)])
    a = res["args"]
    assert (a["compile"], a["precision"], a["tf32"]) == (True, "bf16", True)
    assert torch.backends.cuda.matmul.allow_tf32
    assert res["stages"][0]["final_loss"] == res["stages"][0]["final_loss"]   # finite, not NaN
    ckpt = load(tmp_path / "sup-flow.pt")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in ckpt["model"].values())


def test_compiled_bf16_steps_of_the_paper_locoformer(tmp_path):
    res = train_audio.main(["--mode", "sup-flow", "--net", "paper", "--steps", "3", "--batch", "2",
                            "--seconds", "1", "--eval-size", "2", "--eval-seconds", "1",
                            "--out", str(tmp_path)])
    assert (res["args"]["compile"], res["args"]["precision"]) == (True, "bf16")
    ckpt = load(tmp_path / "sup-flow.pt")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA GPUs: no NCCL run")
def test_two_gpus_train_like_one(cifar, tmp_path):
    argv = ["--dataset", "cifar10", "--data-dir", cifar, "--mode", "sup-reg", "--net", "cpu",
            "--steps", "3", "--batch", "4", "--eval-size", "4", "--warmup", "1", "--lr", "5e-4",
            "--val-every", "0", "--device", "cuda", "--precision", "fp32", "--no-compile", "--no-tf32"]
    train_image.main(argv + ["--out", str(tmp_path / "one")])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "train_image.py", *argv, "--out", str(tmp_path / "two")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert_same_weights(load(tmp_path / "one" / "sup-reg.pt"), load(tmp_path / "two" / "sup-reg.pt"))
