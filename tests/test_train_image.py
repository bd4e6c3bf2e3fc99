"""train_image.py end to end on a tiny CIFAR-10-format folder: every mode, resume, bad input."""
import json
import os

import pytest
import torch

import train_image
from surf_mini import training
from tests.test_data_metrics import write_tiny_cifar


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_tiny_cifar(str(root), n_train=8, n_test=6)
    return str(root)


def run(cifar, out, *extra):
    argv = ["--dataset", "cifar10", "--data-dir", cifar, "--net", "cpu", "--teacher-steps", "2",
            "--steps", "2", "--batch", "3", "--eval-size", "4", "--warmup", "1", "--threads", "1",
            "--out", str(out), *extra]
    return train_image.main(argv)


@pytest.mark.parametrize("mode", train_image.MODES)
def test_every_mode_trains_and_evaluates(cifar, tmp_path, mode):
    res = run(cifar, tmp_path, "--mode", mode)
    for name in ("results.json", "results.md", "grid.png"):
        assert os.path.getsize(tmp_path / name) > 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows[0]["method"] == train_image.METHOD_NAMES[mode]
    assert all(r["n"] == 4 and 0 < r["psnr"] <= 100 and -1 <= r["ssim"] <= 1 for r in rows)
    stages = [s["stage"] for s in res["stages"]]
    assert stages == (["mixit", mode] if mode in train_image.NEEDS_TEACHER else [mode])
    ckpt = torch.load(tmp_path / f"{mode}.pt", weights_only=False)
    assert ckpt["kind"] == train_image.CKPT_KIND and ckpt["step"] == 2
    net = train_image.network_from(ckpt)                                 # self-describing
    assert net.config.mode == ("flow" if mode in ("sup-flow", "rm", "sr") else "regression")
    assert not list(tmp_path.glob("*.tmp*"))                              # atomic writes only


def test_resume_continues_where_it_stopped(cifar, tmp_path, monkeypatch):
    full = tmp_path / "full"
    run(cifar, full, "--mode", "sr", "--steps", "4", "--ckpt-every", "2")

    # Kill the second run right after its step-2 checkpoint of the SURF stage.
    real_save = training.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["stage"] == "sr" and state["step"] == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cifar, cut, "--mode", "sr", "--steps", "4", "--ckpt-every", "2")
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    res = run(cifar, cut, "--mode", "sr", "--steps", "4", "--ckpt-every", "2", "--resume")

    assert [s["steps_this_run"] for s in res["stages"]] == [0, 2]        # nothing redone
    a = torch.load(full / "sr.pt", weights_only=False)
    b = torch.load(cut / "sr.pt", weights_only=False)
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"


def test_teacher_checkpoint_is_reused_and_checked(cifar, tmp_path, capsys):
    run(cifar, tmp_path / "mixit", "--mode", "mixit")
    res = run(cifar, tmp_path / "rm", "--mode", "rm", "--teacher", str(tmp_path / "mixit" / "mixit.pt"))
    assert [s["stage"] for s in res["stages"]] == ["rm"]                  # no teacher retraining
    with pytest.raises(SystemExit, match="not a MixIT one"):
        run(cifar, tmp_path / "x", "--mode", "sr", "--teacher", str(tmp_path / "rm" / "rm.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        run(cifar, tmp_path / "y", "--mode", "sr", "--teacher", str(bad))
    with pytest.raises(SystemExit, match="not found"):
        run(cifar, tmp_path / "z", "--mode", "sr", "--teacher", str(tmp_path / "missing.pt"))


def test_missing_cifar_stops_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        train_image.main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--mode", "sr",
                          "--out", str(tmp_path / "o")])
    msg = str(e.value)
    assert msg.startswith("error: CIFAR-10 not found") and "--data-dir" in msg and "\n" not in msg


def test_collect_merges_runs(cifar, tmp_path, capsys):
    run(cifar, tmp_path / "a", "--mode", "sup-reg")
    run(cifar, tmp_path / "b", "--mode", "sup-flow")
    capsys.readouterr()
    train_image.main(["--collect", str(tmp_path)])
    table = capsys.readouterr().out
    assert "supervised regression" in table and "supervised flow" in table


def test_unsupervised_stages_are_given_no_sources(cifar, tmp_path):
    args = train_image.parse_args(["--dataset", "cifar10", "--data-dir", cifar, "--out", str(tmp_path)])
    images = torch.rand(6, 3, 32, 32)
    for mode in train_image.MODES:
        cfg = train_image.network_config(mode, "cpu", 3)
        stage = train_image.Stage(mode, cfg, args, torch.device("cpu"), images)
        supervised = mode.startswith("sup")
        assert (stage.sources is not None) == supervised, mode
        assert not any(isinstance(v, torch.Tensor) for v in vars(stage.mixtures).values())
