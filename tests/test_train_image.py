"""train_image.py end to end on a tiny CIFAR-10-format folder: every mode, resume, bad input;
the GPU defaults and the CPU notice, CIFAR-10's download, --paper-metrics (issue 11); its
checkpoints re-scored and collected by ``python -m surf_mini.image_eval`` and exported by
``python -m surf_mini.checkpoints export``."""
import json
import os
import sys
import types
import urllib.error

import pytest
import torch

import train_image
from surf_mini import checkpoints as C
from surf_mini import image_eval, methods, runs, training
from tests.test_data_metrics import write_tiny_cifar


def run(cifar, out, *extra):
    argv = ["--dataset", "cifar10", "--data-dir", cifar, "--net", "cpu", "--teacher-steps", "2",
            "--steps", "2", "--batch", "3", "--eval-size", "4", "--warmup", "1", "--threads", "1",
            "--out", str(out), *extra]
    return train_image.main(argv)


@pytest.mark.parametrize("mode", methods.MODES)
def test_every_mode_trains_and_evaluates(cifar, tmp_path, mode):
    res = run(cifar, tmp_path, "--mode", mode)
    for name in ("results.json", "results.md", "grid.png"):
        assert os.path.getsize(tmp_path / name) > 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows[0]["method"] == methods.METHOD_NAMES[mode]
    assert all(r["n"] == 4 and 0 < r["psnr"] <= 100 and -1 <= r["ssim"] <= 1 for r in rows)
    stages = [s["stage"] for s in res["stages"]]
    assert stages == (["mixit", mode] if mode in methods.NEEDS_TEACHER else [mode])
    ckpt = torch.load(tmp_path / f"{mode}.pt", weights_only=True)
    assert ckpt["kind"] == C.IMAGE_KIND and ckpt["step"] == 2
    net = C.image_network(ckpt)                                           # self-describing
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
    a = torch.load(full / "sr.pt", weights_only=True)
    b = torch.load(cut / "sr.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"


def test_teacher_checkpoint_is_reused_and_checked(cifar, tmp_path, capsys):
    run(cifar, tmp_path / "mixit", "--mode", "mixit")
    res = run(cifar, tmp_path / "rm", "--mode", "rm", "--teacher", str(tmp_path / "mixit" / "mixit.pt"),
              "--teacher-steps", "9")                                      # unused with --teacher
    assert [s["stage"] for s in res["stages"]] == ["rm"]                  # no teacher retraining
    # the provenance is the reused teacher's own step count, not the unused option
    ckpt = torch.load(tmp_path / "rm" / "rm.pt", weights_only=True)
    assert ckpt["args"]["teacher_steps"] == 2
    assert runs.checkpoint_budget(ckpt) == "2 MixIT + 2 steps, B=3"
    with pytest.raises(SystemExit, match="not a MixIT one"):
        run(cifar, tmp_path / "x", "--mode", "sr", "--teacher", str(tmp_path / "rm" / "rm.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        run(cifar, tmp_path / "y", "--mode", "sr", "--teacher", str(bad))
    with pytest.raises(SystemExit, match="not found"):
        run(cifar, tmp_path / "z", "--mode", "sr", "--teacher", str(tmp_path / "missing.pt"))


def test_missing_cifar_stops_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:                                  # --no-download: no network
        train_image.main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--mode", "sr",
                          "--net", "cpu", "--no-download", "--out", str(tmp_path / "o")])
    msg = str(e.value)
    assert msg.startswith("error: CIFAR-10 not found") and "--data-dir" in msg and "\n" not in msg


def test_collect_merges_runs(cifar, tmp_path, capsys):
    run(cifar, tmp_path / "a", "--mode", "sup-reg")
    run(cifar, tmp_path / "b", "--mode", "sup-flow")
    capsys.readouterr()
    image_eval.main(["collect", str(tmp_path)])
    table = capsys.readouterr().out
    assert "| supervised regression | 2 |" in table and "| supervised flow | 2 |" in table
    run(cifar, tmp_path / "c", "--mode", "sup-flow", "--seed", "1")     # an A/B: one mode, two runs
    capsys.readouterr()
    image_eval.main(["collect", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    flows = [ln.split(" | ")[0] for ln in lines if "supervised flow" in ln]
    assert flows == ["| supervised flow [b]", "| supervised flow [c]"]    # both kept, each named
    assert any(ln.startswith("| supervised regression | 2 |") for ln in lines)   # unique: no name


def test_curves_by_mode_keeps_every_run_and_a_teacher_once():
    def res(run, mode, *stages):
        return {"run": run, "mode": mode, "stages": [{"stage": s, "curve": [{"step": 1, "psnr": i}]}
                                                     for i, s in enumerate(stages)]}
    got = runs.curves_by_mode([res("a", "sup-flow", "sup-flow"), res("b", "sup-flow", "sup-flow"),
                               res("r", "rm", "mixit", "rm"), res("s", "sr", "mixit", "sr")])
    assert [run for run, _ in got["sup-flow"]] == ["a", "b"]
    assert [run for run, _ in got["mixit"]] == ["r"]                   # a teacher inside a student: once
    got = runs.curves_by_mode([res("r", "rm", "mixit", "rm"), res("t", "mixit", "mixit")])
    assert [run for run, _ in got["mixit"]] == ["t"]                   # the teacher's own run wins


def test_unsupervised_stages_are_given_no_sources(cifar, tmp_path):
    args = train_image.parse_args(["--dataset", "cifar10", "--data-dir", cifar, "--out", str(tmp_path)])
    images = torch.rand(6, 3, 32, 32)
    for mode in methods.MODES:
        stage = train_image.stage(mode, args, torch.device("cpu"), images)
        data = stage.batches
        assert isinstance(data, methods.Batches)
        assert (data.sources is not None) == (mode in methods.SUPERVISED) == mode.startswith("sup"), mode
        assert not any(isinstance(v, torch.Tensor) for v in vars(data).values())
        for draw in (data.mixtures, data.mixit_pair):                    # plain functions of B,
            assert not hasattr(draw, "__self__")                          # no sampler object behind
        assert data.mixtures(2).shape == (2, 1, 3, 32, 32)
        assert [x.shape for x in data.mixit_pair(2)] == [(2, 1, 3, 32, 32)] * 2
        if data.sources is not None:
            assert data.sources(2)[1].shape == (2, 2, 3, 32, 32)


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
    ckpt = torch.load(tmp_path / "sr.pt", weights_only=True)
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
        C.main(["export", str(tmp_path / mode / f"{mode}.pt"), str(tmp_path / f"{mode}.pt")])
    small = torch.load(tmp_path / "mixit.pt", weights_only=True)
    assert set(small) >= {"config", "ema", "stage", "step", "trained_with"} and "opt" not in small
    paths = [str(tmp_path / f"{m}.pt") for m in ("sup-flow", "mixit", "sup-reg")]
    out = image_eval.main(["evaluate", *paths, "--data-dir", cifar, "--eval-size", "4", "--threads", "1"])
    got = {(r["method"], r["grouping"]): r["psnr"] for r in out}
    want = {(r["method"], r["grouping"]): r["psnr"] for m in rows for r in rows[m]}
    assert got == pytest.approx(want, abs=1e-5)                            # same mixtures, same seed
    assert [r["method"] for r in out][0] == "supervised regression"      # Table 1 order
    assert "| MixIT | 4 | oracle |" in capsys.readouterr().out


SHIPPED = os.path.join(os.path.dirname(train_image.__file__), "surf_mini", "assets", "mnist")


def test_shipped_mnist_checkpoints_rescore_on_the_test_mixtures(capsys):
    """The long table's shipped EMA weights (surf_mini/assets/mnist/<mode>.pt) re-score on MNIST
    test mixtures in seconds. On the 1000 test mixtures every row is at 23.4-26.2 dB
    (docs/results-mnist.md); 16 of them give about the same, which an untrained or wrongly
    loaded network (about 8-12 dB) cannot reach. Each row says its 10k-step budget."""
    modes = sorted(f[:-3] for f in os.listdir(SHIPPED) if f.endswith(".pt"))   # the seven rows
    assert set(modes) == set(methods.MODES)                              # all seven rows ship
    out = image_eval.main(["evaluate", *(os.path.join(SHIPPED, f"{m}.pt") for m in modes),
                           "--eval-size", "16", "--merge", "loudest", "--threads", "1"])
    got = {}
    for r in out:
        got.setdefault(r["method"], []).append(r)
    assert set(got) == {methods.METHOD_NAMES[m] for m in modes}
    for m in modes:
        rows = got[methods.METHOD_NAMES[m]]
        assert [r["grouping"] for r in rows] == (["merged", "oracle"] if m in ("mixit", "remixit", "selfremix")
                                                 else ["PIT"]), m
        want = "10000 MixIT + 10000 steps, B=32" if m in methods.NEEDS_TEACHER else "10000 steps, B=32"
        assert all(r["psnr"] > 21.0 and r["budget"] == want for r in rows), rows
    assert "| supervised flow | 2 | PIT |" in capsys.readouterr().out


def test_evaluate_and_export_reject_bad_checkpoints(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not found"):
        image_eval.main(["evaluate", str(tmp_path / "missing.pt")])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        C.main(["export", str(tmp_path / "junk.pt"), str(tmp_path / "out.pt")])
    assert not (tmp_path / "out.pt").exists()
    with pytest.raises(SystemExit, match="is already exported"):          # a shipped, exported one
        C.main(["export", os.path.join(SHIPPED, "sup-reg.pt"), str(tmp_path / "out.pt")])
    assert not (tmp_path / "out.pt").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:                                   # scoring needs mixtures
        image_eval.main(["evaluate", os.path.join(SHIPPED, "sup-reg.pt"), "--eval-size", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: --eval-size must be positive" in err and "Traceback" not in err


def test_bf16_precision_trains(cifar, tmp_path):
    res = run(cifar, tmp_path, "--mode", "sr", "--precision", "bf16")
    assert all(s["final_loss"] is not None and s["final_loss"] == s["final_loss"] for s in res["stages"])
    run(cifar, tmp_path / "fp32", "--mode", "sr")
    a = torch.load(tmp_path / "sr.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "fp32" / "sr.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)                    # autocast took effect
    assert all(v.dtype == torch.float32 for v in a.values())               # weights stay fp32


def test_collect_plots_the_curves(cifar20, tmp_path):
    pytest.importorskip("matplotlib")
    for mode in ("sup-reg", "sup-flow"):
        run(cifar20, tmp_path / mode, "--mode", mode, "--val-every", "1", "--val-size", "3")
    image_eval.main(["collect", str(tmp_path), "--plot", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------
# The card's command: GPU budget, CPU notice, CIFAR-10 download, --paper-metrics (issue 11)
# --------------------------------------------------------------------------------------

def test_the_card_command_on_a_cpu_is_a_one_line_gpu_notice(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_image.main(["--dataset", "cifar10", "--mode", "sr", "--device", "cpu", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPU job" in err and "days" in err
    assert "--preset quick" in err and "--cpu-ok" in err and "--net cpu" in err
    assert not os.listdir(tmp_path)                                       # nothing read or written


def test_cpu_commands_keep_their_defaults():
    base = dict(net="cpu", steps=1000, batch=32, lr=2e-3, precision="fp32", compile=False, tf32=False)
    for argv in (["--mode", "mixit", "--steps", "1000"],                     # MNIST: no notice
                 ["--dataset", "cifar10", "--net", "cpu"],                    # --net cpu: runs
                 ["--dataset", "cifar10", "--net", "cpu", "--download"]):     # the old flag still works
        args = train_image.parse_args(argv + ["--device", "cpu"])
        assert not args.gpu_notice and {k: getattr(args, k) for k in base} == base, argv
    quick = train_image.parse_args(["--preset", "quick", "--device", "cpu"])
    assert (quick.steps, quick.net, quick.precision, quick.compile) == (600, "cpu", "fp32", False)


def test_cpu_ok_runs_the_gpu_budget_in_float32():
    args = train_image.parse_args(["--dataset", "cifar10", "--mode", "sr", "--device", "cpu", "--cpu-ok"])
    gpu = train_image.PRESETS["gpu"]
    assert not args.gpu_notice and args.net == "paper"
    assert (args.steps, args.teacher_steps, args.batch, args.lr) == \
        (gpu["steps"], gpu["teacher_steps"], gpu["batch"], gpu["lr"])
    assert (args.precision, args.compile) == ("fp32", False)              # CPU: no bf16, no compile
    assert 1e18 < train_image.budget_flops(args) < 1.3e18                  # the stated ~1.1 EFLOP


def test_missing_cifar_is_downloaded_by_torchvision(tmp_path, monkeypatch):
    import torchvision
    calls = []

    class FakeCIFAR10:                                  # what torchvision's download leaves behind
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_tiny_cifar(root, n_train=8, n_test=6)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = tmp_path / "data"
    run(str(data), tmp_path / "o", "--mode", "sup-reg")
    assert calls and calls[0] == (str(data), True)
    assert (tmp_path / "o" / "results.json").is_file()


def test_offline_download_names_the_folder_to_fill(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(SystemExit) as e:
        run(str(tmp_path / "data"), tmp_path / "o", "--mode", "sup-reg")
    msg = str(e.value)
    folder = os.path.join(str(tmp_path / "data"), "cifar-10-batches-py")
    assert msg.startswith("error: CIFAR-10 not found") and "URLError" in msg and "\n" not in msg
    assert f"fill {folder}/" in msg


def fake_torchmetrics(monkeypatch, make):
    """Install a stand-in ``torchmetrics.image`` whose three classes come from ``make(name)``."""
    image = types.ModuleType("torchmetrics.image")
    for name in ("FrechetInceptionDistance", "InceptionScore", "LearnedPerceptualImagePatchSimilarity"):
        setattr(image, name, make(name))
    root = types.ModuleType("torchmetrics")
    root.image = image
    monkeypatch.setitem(sys.modules, "torchmetrics", root)
    monkeypatch.setitem(sys.modules, "torchmetrics.image", image)


def test_paper_metrics_without_torchmetrics_is_one_line(cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)                 # import fails, installed or not
    monkeypatch.setitem(sys.modules, "torchmetrics.image", None)
    res = run(cifar, tmp_path, "--mode", "sup-reg", "--paper-metrics")
    err = [line for line in capsys.readouterr().err.splitlines() if "--paper-metrics" in line]
    assert len(err) == 1 and "pip install 'torchmetrics[image]'" in err[0]
    assert "fid" not in res["rows"][0] and (tmp_path / "results.md").is_file()


def test_paper_metrics_offline_is_one_line(cifar, tmp_path, monkeypatch, capsys):
    def make(name):
        def offline(*a, **k):
            raise urllib.error.URLError("no network")                      # weights fetched at build
        return offline
    fake_torchmetrics(monkeypatch, make)
    res = run(cifar, tmp_path, "--mode", "sup-reg", "--paper-metrics")
    err = [line for line in capsys.readouterr().err.splitlines() if "--paper-metrics" in line]
    assert len(err) == 1 and "cannot be fetched (URLError)" in err[0]
    assert "fid" not in res["rows"][0]


def test_paper_metrics_fill_their_columns(cifar, tmp_path, monkeypatch):
    seen = []

    def make(name):
        class Metric:
            def __init__(self, **kw):
                self.kw = kw

            def to(self, device):
                return self

            def reset(self):
                pass

            def update(self, *images, real=None):
                seen.append((name, [tuple(x.shape) for x in images], min(x.min().item() for x in images),
                             max(x.max().item() for x in images)))

            def compute(self):
                value = {"FrechetInceptionDistance": 12.5, "InceptionScore": 3.0}.get(name, 0.25)
                return (torch.tensor(value), torch.tensor(0.1)) if name == "InceptionScore" else torch.tensor(value)
        return Metric
    fake_torchmetrics(monkeypatch, make)
    res = run(cifar, tmp_path, "--mode", "mixit", "--paper-metrics")
    assert all((r["lpips"], r["fid"], r["is"]) == (0.25, 12.5, 3.0) for r in res["rows"])
    assert "| LPIPS | FID | IS |" in (tmp_path / "results.md").read_text()
    for name, shapes, lo, hi in seen:                                      # RGB images in [0, 1]
        assert all(s[1] == 3 for s in shapes) and 0 <= lo <= hi <= 1
        if name == "LearnedPerceptualImagePatchSimilarity":
            assert all(s[-2:] == (64, 64) for s in shapes)                # upsampled for AlexNet
        else:
            assert all(s[-2:] == (32, 32) for s in shapes)
