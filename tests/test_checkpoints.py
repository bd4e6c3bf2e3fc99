"""Checkpoints are data, never code (issue 27): every entry point reads them with the safe
loader, refuses a pickle that would run code, and answers every bad file in one line."""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_audio
import train_image
from surf_mini import audio_eval, image_eval
from surf_mini import checkpoints as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_CKPT = os.path.join(ROOT, "surf_mini", "assets", "mnist", "sup-reg.pt")
AUDIO_CKPT = os.path.join(ROOT, "surf_mini", "assets", "sup_reg_speech.pt")


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path, marker, kind="surf_mini.ncsn"):
    torch.save({"kind": kind, "stage": "mixit", "config": {}, "ema": {}, "x": _RunsCode(marker)}, path)
    return str(path)


def one_line_exit(fn, *args):
    with pytest.raises(SystemExit) as e:
        fn(*args)
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith("error:"), msg
    return msg


def test_the_evil_file_really_runs_code_with_the_unsafe_loader(tmp_path):
    """Negative control: the marker test can fail. Today's loader before issue 27
    (weights_only=False) runs the file's command; the safe reader does not."""
    marker = tmp_path / "ran"
    path = write_evil(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    assert "refused" in one_line_exit(C.read_checkpoint, path, "surf_mini.ncsn", "image")
    assert not marker.exists()


def _entry_points(tmp_path, evil_image, evil_audio, cifar):
    """(name, callable) for every way a checkpoint comes into the project."""
    img = ["--dataset", "cifar10", "--data-dir", cifar, "--net", "cpu", "--steps", "1", "--batch", "3",
           "--eval-size", "2", "--threads", "1"]
    aud = ["--net", "cpu", "--steps", "1", "--batch", "2", "--seconds", "0.5", "--eval-size", "2",
           "--eval-seconds", "0.5", "--threads", "1"]
    img_run, aud_run = tmp_path / "img_run", tmp_path / "aud_run"
    img_run.mkdir()
    aud_run.mkdir()
    write_evil(img_run / "sup-reg.pt", tmp_path / "marker", "surf_mini.ncsn")
    write_evil(aud_run / "sup-reg.pt", tmp_path / "marker", "surf_mini.audio")
    return [
        ("image_eval evaluate", lambda: image_eval.main(["evaluate", evil_image, "--data-dir", cifar,
                                                         "--eval-size", "2", "--threads", "1"])),
        ("train_image --teacher", lambda: train_image.main(["--mode", "rm", "--teacher", evil_image,
                                                            "--out", str(tmp_path / "i1"), *img])),
        ("train_image --resume", lambda: train_image.main(["--mode", "sup-reg", "--resume",
                                                           "--out", str(img_run), *img])),
        ("checkpoints export", lambda: C.main(["export", evil_image, str(tmp_path / "x.pt")])),
        ("checkpoints check", lambda: C.main(["check", evil_audio])),
        ("audio_eval evaluate", lambda: audio_eval.main(["evaluate", evil_audio, "--eval-size", "2",
                                                         "--eval-seconds", "0.5", "--threads", "1"])),
        ("train_audio --teacher", lambda: train_audio.main(["--mode", "rm", "--teacher", evil_audio,
                                                            "--out", str(tmp_path / "a1"), *aud])),
        ("train_audio --resume", lambda: train_audio.main(["--mode", "sup-reg", "--resume",
                                                           "--out", str(aud_run), *aud])),
    ]


def test_no_entry_point_runs_code_from_a_checkpoint(tmp_path, cifar):
    marker = tmp_path / "marker"
    evil_image = write_evil(tmp_path / "evil_image.pt", marker, "surf_mini.ncsn")
    evil_audio = write_evil(tmp_path / "evil_audio.pt", marker, "surf_mini.audio")
    for name, call in _entry_points(tmp_path, evil_image, evil_audio, cifar):
        msg = one_line_exit(call)
        assert "refused" in msg, (name, msg)
        assert not marker.exists(), f"{name} ran the checkpoint's code"


def test_separate_refuses_an_evil_checkpoint_in_one_line(tmp_path):
    """The CLI itself: exit status 1, one line on stderr, no traceback, no output file."""
    marker = tmp_path / "marker"
    evil = write_evil(tmp_path / "evil.pt", marker, "surf_mini.audio")
    out = tmp_path / "sep"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "separate.py"),
                        os.path.join(ROOT, "surf_mini", "assets", "demo_mix.wav"),
                        "--checkpoint", evil, "--out-dir", str(out), "--threads", "1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "refused" in r.stderr
    assert not marker.exists()
    assert not out.exists() or not os.listdir(out)


def test_truncated_checkpoint_is_one_line(tmp_path):
    data = open(IMAGE_CKPT, "rb").read()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in one_line_exit(C.read_checkpoint, str(cut), C.IMAGE_KIND, "image")
    assert "not found" in one_line_exit(C.read_checkpoint, str(tmp_path / "nope.pt"), C.IMAGE_KIND, "image")


def test_checkpoint_of_the_other_domain_is_one_line(tmp_path):
    msg = one_line_exit(C.read_checkpoint, AUDIO_CKPT, C.IMAGE_KIND, "image")
    assert "'surf_mini.audio' checkpoint, not a surf_mini image checkpoint" in msg
    msg = one_line_exit(C.read_checkpoint, IMAGE_CKPT, C.AUDIO_KIND, "audio")
    assert "not a surf_mini audio checkpoint" in msg
    not_ours = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, not_ours)
    assert "no 'kind' field" in one_line_exit(C.read_checkpoint, str(not_ours), C.IMAGE_KIND, "image")
    # the evaluation commands read with the kind of their domain
    assert "not a surf_mini image checkpoint" in one_line_exit(image_eval.main, ["evaluate", AUDIO_CKPT])
    assert "not a surf_mini audio checkpoint" in one_line_exit(audio_eval.main, ["evaluate", IMAGE_CKPT])


def test_config_or_weights_that_do_not_fit_are_one_line(tmp_path):
    ckpt = C.read_checkpoint(IMAGE_CKPT, C.IMAGE_KIND, "image")
    bad = dict(ckpt, config=dict(ckpt["config"], nf=24))       # weights are nf 16's
    assert "do not fit" in one_line_exit(C.image_network, bad, "ema", "x.pt")
    bad = dict(ckpt, config=dict(ckpt["config"], mode="diffusion"))
    assert "builds no network" in one_line_exit(C.image_network, bad, "ema", "x.pt")
    bad = dict(ckpt, config=dict(ckpt["config"], colour=True))  # unknown field
    assert "builds no network" in one_line_exit(C.image_network, bad, "ema", "x.pt")
    a = C.read_checkpoint(AUDIO_CKPT, C.AUDIO_KIND, "audio")
    assert "builds no network" in one_line_exit(C.audio_network, dict(a, arch="rnn"), "ema", "y.pt")
    assert "holds no 'model' weights" in one_line_exit(C.audio_network, a, "model", "y.pt")   # exported
    assert C.image_network(ckpt).config.nf == 16               # the good one still builds


def test_what_goes_in_is_plain_data(tmp_path):
    state = {"args": argparse.Namespace(lr=1e-3, net="cpu"), "curve": [np.float32(1.5)],
             "w": np.arange(3), "t": (1, 2), "v": torch.__version__}
    plain = C.to_plain(state)
    assert plain["args"] == {"lr": 1e-3, "net": "cpu"} and type(plain["curve"][0]) is float
    assert torch.equal(plain["w"], torch.arange(3)) and plain["t"] == (1, 2)
    assert type(plain["v"]) is str                              # a str subclass would be refused
    C.save_checkpoint(str(tmp_path / "ok.pt"), {"kind": "k", **state})
    assert torch.load(tmp_path / "ok.pt", weights_only=True)["args"]["net"] == "cpu"
    with pytest.raises(ValueError, match="not plain data"):
        C.save_checkpoint(str(tmp_path / "bad.pt"), {"kind": "k", "obj": object()})
    assert not os.path.exists(tmp_path / "bad.pt")


def test_every_shipped_checkpoint_loads_with_the_safe_loader():
    assets = os.path.join(ROOT, "surf_mini", "assets")
    paths = [os.path.join(d, f) for d, _, fs in os.walk(assets) for f in fs if f.endswith(".pt")]
    assert len(paths) >= 11
    for p in paths:
        torch.load(p, map_location="cpu", weights_only=True)     # raises on anything unsafe
        assert C.read_checkpoint(p)["kind"] in ("surf_mini.ncsn", "surf_mini.audio", "surf_mini.classifier")


def test_a_run_checkpoint_is_plain_and_a_stale_temp_file_does_not_stop_resume(cifar, tmp_path):
    argv = ["--dataset", "cifar10", "--data-dir", cifar, "--net", "cpu", "--mode", "sup-reg",
            "--steps", "2", "--batch", "3", "--eval-size", "2", "--warmup", "1", "--threads", "1",
            "--ckpt-every", "1", "--out", str(tmp_path)]
    train_image.main(argv)
    ckpt = torch.load(tmp_path / "sup-reg.pt", weights_only=True)   # the full training checkpoint
    # a checkpoint written before NCSNConfig had the x1 head fields still resumes
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("head", "x1_clamp")}
    C.save_checkpoint(str(tmp_path / "sup-reg.pt"), ckpt)
    (tmp_path / "sup-reg.pt.tmp99999").write_bytes(b"half a checkpoint from a killed run")
    res = train_image.main(argv + ["--steps", "3", "--resume"])      # the last --steps counts
    assert C.read_checkpoint(str(tmp_path / "sup-reg.pt"), C.IMAGE_KIND, "image")["step"] == 3
    assert res["rows"]


def test_convert_is_explicit_and_its_output_is_safe(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"kind": "surf_mini.ncsn", "args": argparse.Namespace(lr=0.1), "step": 3}, old)
    assert "refused" in one_line_exit(C.read_checkpoint, str(old))
    C.main(["convert", "--i-trust-this-file", str(old), str(tmp_path / "new.pt")])
    assert C.read_checkpoint(str(tmp_path / "new.pt"))["args"] == {"lr": 0.1}
