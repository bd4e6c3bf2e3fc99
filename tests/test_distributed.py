"""Several processes train like one (issue 11): torchrun, gloo on the CPU, 2 processes.

Each test starts ``python -m torch.distributed.run --standalone --nproc_per_node 2`` (torchrun's
module form, so this environment's python runs it) on a tiny CIFAR-10-format folder or the
shipped demo speech, a few steps at ``--threads 1``, and compares rank 0's checkpoint with a
one-process run of the same global batch, run here in-process. ``--device cpu`` everywhere:
gloo, whatever GPUs the machine has (tests/test_gpu.py has the NCCL check).

Compared modes: ``sup-reg`` and ``mixit`` for images, ``mixit`` (the ConvTasNet, with its
unused parameters) for audio. Their losses draw no algorithm noise, so with every rank taking
its slice of the same global batch the two runs see the same examples and only rounding (other
batch sizes inside the convolutions) separates them. The SURF modes draw noise per rank; the
resume test runs ``sr`` across 1 -> 2 processes and checks what must be exact there.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import train_audio
import train_image
from surf_mini import audio_eval, distributed, image_eval, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR, STEPS = 5e-4, 3


def torchrun(script: str, *argv) -> subprocess.CompletedProcess:
    """``script`` under torchrun with 2 CPU processes; fails the test with the output's tail."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           script, *map(str, argv)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:] + p.stderr[-3000:])
    return p


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(one: dict, two: dict, lr: float = LR, steps: int = STEPS) -> None:
    """Weights and EMA weights of two checkpoints agree to float tolerance.

    AdamW moves every weight by about ``lr`` per step, whatever the size of its gradient. Where
    a gradient is rounding noise (the attention key biases, which the softmax ignores; the
    output bias, which the zero-sum projection cancels) rounding picks the direction, so those
    few weights may differ by up to ``lr`` per step. Hence: all but 0.1 % of the weights agree
    to 1e-5, and none is further apart than ``lr * steps``. (A rank training alone on its half
    of the batch fails this for over 90 % of the weights: ``test_the_check_catches_a_lone_rank``.)
    """
    for key in ("model", "ema"):
        d = torch.cat([(one[key][n].float() - two[key][n].float()).abs().flatten() for n in one[key]])
        assert (d > 1e-5).float().mean() < 1e-3, f"{key}: {(d > 1e-5).float().mean():.1%} of weights differ"
        assert d.max() <= lr * steps, f"{key}: max difference {d.max():.2e}"


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def image_argv(cifar, out, *extra):
    return ["--dataset", "cifar10", "--data-dir", cifar, "--net", "cpu", "--steps", STEPS, "--batch", 4,
            "--eval-size", 4, "--warmup", 1, "--lr", LR, "--threads", 1, "--val-every", 0,
            "--device", "cpu", *extra, "--out", out]


@pytest.mark.parametrize("mode", ["sup-reg", "mixit"])
def test_two_processes_train_like_one(cifar, tmp_path, mode):
    train_image.main([str(a) for a in image_argv(cifar, tmp_path / "one", "--mode", mode)])
    torchrun("train_image.py", *image_argv(cifar, tmp_path / "two", "--mode", mode))
    one, two = load(tmp_path / "one" / f"{mode}.pt"), load(tmp_path / "two" / f"{mode}.pt")
    assert two["step"] == STEPS and len(two["rng"]["ranks"]) == 2
    assert torch.equal(one["rng"]["data"], two["rng"]["data"])           # the same global batches
    assert_same_weights(one, two)
    res = json.loads((tmp_path / "two" / "results.json").read_text())     # rank 0 wrote it, once
    assert res["processes"] == 2 and res["rows"][0]["n"] == 4
    assert not list((tmp_path / "two").glob("*.tmp*"))


def test_the_check_catches_a_lone_rank(cifar, tmp_path, monkeypatch):
    """The negative case: rank 0 training on its half of each batch without the all-reduce."""
    argv = [str(a) for a in image_argv(cifar, tmp_path / "one", "--mode", "sup-reg")]
    train_image.main(argv)
    monkeypatch.setattr(training.Stage, "mine", lambda self, batch: batch[:len(batch) // 2].to(self.device))
    train_image.main(argv[:-1] + [str(tmp_path / "lone")])
    with pytest.raises(AssertionError):
        assert_same_weights(load(tmp_path / "one" / "sup-reg.pt"), load(tmp_path / "lone" / "sup-reg.pt"))


def test_resume_from_one_process_on_two(cifar, tmp_path, monkeypatch):
    """SURF-SR cut after its step-2 checkpoint in one process, resumed by two: it goes on from
    step 2 (the finished MixIT stage is not redone) and its data stream is exactly where an
    uninterrupted one-process run's is."""
    argv = image_argv(cifar, tmp_path / "cut", "--mode", "sr", "--teacher-steps", 2, "--steps", 4,
                      "--ckpt-every", 2)
    full = [str(a) for a in argv[:-1]] + [str(tmp_path / "full")]
    train_image.main(full)
    real_save = training.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["stage"] == "sr" and state["step"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_image.main([str(a) for a in argv])
    monkeypatch.setattr(training, "save_checkpoint", real_save)

    p = torchrun("train_image.py", *argv, "--resume")
    assert "resuming sr at step 2/4" in p.stderr
    res = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [s["steps_this_run"] for s in res["stages"]] == [0, 2]
    a, b = load(tmp_path / "full" / "sr.pt"), load(tmp_path / "cut" / "sr.pt")
    assert b["step"] == 4 and len(b["rng"]["ranks"]) == 2
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert all(torch.isfinite(v).all() for v in b["model"].values())


def test_batch_must_split_evenly_and_evaluation_is_single_process(cifar, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        train_image.parse_args(["--dataset", "cifar10", "--net", "cpu", "--batch", "3"])
    assert "error: --batch 3 must be a multiple of the 2 processes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_audio.parse_args(["--net", "cpu", "--batch", "5"])
    assert "must be a multiple of the 2 processes" in capsys.readouterr().err
    # scoring and collecting are the evaluation commands', one process each, never torchrun's
    for main, argv in ((image_eval.main, ["evaluate", "x.pt"]), (image_eval.main, ["collect", "runs"]),
                       (audio_eval.main, ["evaluate", "x.pt"]), (audio_eval.main, ["collect", "runs"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"{argv[0]} is a single-process command" in err, (argv, err)
    for parse in (train_image.parse_args, train_audio.parse_args):       # no longer the scripts' options
        for option in ("--evaluate", "--collect", "--export"):
            with pytest.raises(SystemExit):
                parse(["--net", "cpu", "--batch", "4", option, "x.pt"])
            assert f"unrecognized arguments: {option}" in capsys.readouterr().err


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = type("Args", (), {"device": "cuda"})()
    with pytest.raises(SystemExit, match="error: process 1 of this node needs GPU 1, but torch sees 1"):
        distributed.init_distributed(args)
    assert not distributed.distributed()                                   # no process group made


def test_noise_streams_differ_per_rank_and_rank_0_keeps_its_seed():
    assert distributed.stream_seed(7, 0) == 7                              # one process unchanged
    seeds = {distributed.stream_seed(7, r) for r in range(1, 8)} | {distributed.stream_seed(7, 1, step=2)}
    assert len(seeds) == 8 and 7 not in seeds and all(0 <= s < 2 ** 63 for s in seeds)


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------

def test_two_processes_train_audio_like_one(tmp_path):
    argv = ["--net", "cpu", "--mode", "mixit", "--steps", STEPS, "--batch", 4, "--seconds", 0.5,
            "--eval-size", 2, "--eval-seconds", 0.5, "--warmup", 1, "--lr", LR, "--threads", 1,
            "--device", "cpu"]
    train_audio.main([str(a) for a in argv + ["--out", tmp_path / "one"]])
    torchrun("train_audio.py", *argv, "--out", tmp_path / "two")
    one, two = load(tmp_path / "one" / "mixit.pt"), load(tmp_path / "two" / "mixit.pt")
    assert torch.equal(one["rng"]["data"], two["rng"]["data"])
    assert_same_weights(one, two)
    assert (tmp_path / "two" / "examples" / "00_mix.wav").is_file()
