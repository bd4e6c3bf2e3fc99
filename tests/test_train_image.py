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


# --------------------------------------------------------------------------------------
# Learning curves, --export / --evaluate, --precision (issue 9)
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar20(tmp_path_factory):
    """100 training images (20 per batch file): a fifth is held out as validation images."""
    root = tmp_path_factory.mktemp("cifar20")
    write_tiny_cifar(str(root), n_train=20, n_test=6)
    return str(root)


def test_validation_curve_is_scored_and_kept(cifar20, tmp_path):
    res = run(cifar20, tmp_path, "--mode", "sr", "--steps", "4", "--teacher-steps", "3",
              "--val-every", "2", "--val-size", "3")
    curves = {s["stage"]: s["curve"] for s in res["stages"]}
    assert [p["step"] for p in curves["mixit"]] == [2, 3]                 # every 2, and the last
    assert [p["step"] for p in curves["sr"]] == [2, 4]
    assert all(0 < p["psnr"] <= 100 for c in curves.values() for p in c)
    assert "psnr_oracle" in curves["mixit"][0] and "psnr_oracle" not in curves["sr"][0]
    ckpt = torch.load(tmp_path / "sr.pt", weights_only=False)
    assert ckpt["curve"] == curves["sr"]                                  # resumable with its curve
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [s["curve"] for s in saved["stages"]] == [curves["mixit"], curves["sr"]]


def test_validation_images_are_held_out_of_training(cifar20):
    from surf_mini import data as D
    train, valid = D.train_and_validation("cifar10", cifar20)
    everything = D.load_images("cifar10", "train", cifar20)
    assert len(train) == 80 and len(valid) == 20
    assert torch.equal(torch.cat([train, valid]), everything)            # disjoint, nothing lost


def test_evaluate_rescores_exported_checkpoints_like_the_run(cifar, tmp_path, capsys):
    rows = {}
    for mode in ("sup-reg", "mixit", "sup-flow"):
        res = run(cifar, tmp_path / mode, "--mode", mode)
        rows[mode] = res["rows"]
        train_image.main(["--export", str(tmp_path / mode / f"{mode}.pt"), str(tmp_path / f"{mode}.pt")])
    small = torch.load(tmp_path / "mixit.pt", weights_only=False)
    assert set(small) >= {"config", "ema", "stage", "step", "trained_with"} and "opt" not in small
    paths = [str(tmp_path / f"{m}.pt") for m in ("sup-flow", "mixit", "sup-reg")]
    out = train_image.main(["--evaluate", *paths, "--data-dir", cifar, "--eval-size", "4", "--threads", "1"])
    got = {(r["method"], r["grouping"]): r["psnr"] for r in out["rows"]}
    want = {(r["method"], r["grouping"]): r["psnr"] for m in rows for r in rows[m]}
    assert got == pytest.approx(want, abs=1e-5)                            # same mixtures, same seed
    assert [r["method"] for r in out["rows"]][0] == "supervised regression"  # Table 1 order
    assert "| MixIT | 4 | oracle |" in capsys.readouterr().out


def test_evaluate_and_export_reject_bad_checkpoints(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        train_image.main(["--evaluate", str(tmp_path / "missing.pt")])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        train_image.main(["--export", str(tmp_path / "junk.pt"), str(tmp_path / "out.pt")])
    assert not (tmp_path / "out.pt").exists()


def test_bf16_precision_trains(cifar, tmp_path):
    res = run(cifar, tmp_path, "--mode", "sr", "--precision", "bf16")
    assert all(s["final_loss"] is not None and s["final_loss"] == s["final_loss"] for s in res["stages"])
    run(cifar, tmp_path / "fp32", "--mode", "sr")
    a = torch.load(tmp_path / "sr.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "fp32" / "sr.pt", weights_only=False)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)                    # autocast took effect
    assert all(v.dtype == torch.float32 for v in a.values())               # weights stay fp32


def test_collect_plots_the_curves(cifar20, tmp_path):
    pytest.importorskip("matplotlib")
    for mode in ("sup-reg", "sup-flow"):
        run(cifar20, tmp_path / mode, "--mode", mode, "--val-every", "1", "--val-size", "3")
    train_image.main(["--collect", str(tmp_path), "--plot", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
