"""train_audio.py end to end on the shipped demo speech: every mode, mixtures-only data,
resume, teacher reuse; its checkpoints exported (``python -m surf_mini.checkpoints export``),
re-scored and collected (``python -m surf_mini.audio_eval evaluate|collect``)."""
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import train_audio
from surf_mini import audio_data as A
from surf_mini import audio_eval, methods, training
from surf_mini import checkpoints as C


def run(out, *extra):
    argv = ["--net", "cpu", "--teacher-steps", "2", "--steps", "2", "--batch", "2", "--seconds", "0.5",
            "--eval-size", "2", "--eval-seconds", "0.5", "--warmup", "1", "--threads", "1",
            "--out", str(out), *extra]
    return train_audio.main(argv)


def read(path) -> dict:
    return C.read_checkpoint(str(path), C.AUDIO_KIND, "audio")


@pytest.mark.parametrize("mode", methods.MODES)
def test_every_mode_trains_and_scores(tmp_path, mode):
    res = run(tmp_path, "--mode", mode)
    rows = res["rows"]
    assert rows[0]["method"] == methods.METHOD_NAMES[mode]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("si_sdr", "si_sdri", "estoi", "pesq")), r
    stages = [s["stage"] for s in res["stages"]]
    assert stages == (["mixit", mode] if mode in methods.NEEDS_TEACHER else [mode])
    ckpt = read(tmp_path / f"{mode}.pt")
    assert ckpt["step"] == 2 and ckpt["sample_rate"] == 8000 and ckpt["shaping"] == "envelope"
    net = C.audio_network(ckpt)                                           # self-describing
    assert type(net).__name__ == ("ConvTasNet" if mode == "mixit" else "MBTFLocoformer")
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "results.md").read_text().startswith("| method |")
    assert (tmp_path / "examples" / "00_mix.wav").is_file()
    assert not list(tmp_path.glob("*.tmp*"))                              # atomic writes only


def test_unsupervised_stages_are_given_no_sources(tmp_path):
    args = train_audio.parse_args(["--out", str(tmp_path)])
    data = train_audio.training_data(args, 8000)
    for mode in methods.MODES:
        stage = train_audio.stage(mode, args, torch.device("cpu"), data)
        batches = stage.batches
        assert (batches.sources is not None) == (mode in methods.SUPERVISED), mode
        for draw in (batches.mixtures, batches.mixit_pair):              # plain functions of B,
            assert not hasattr(draw, "__self__")                          # no mixer object behind
        assert batches.mixtures(2).shape == (2, 1, 8000)                 # 1 s at 8 kHz
        assert [x.shape for x in batches.mixit_pair(2)] == [(2, 1, 8000)] * 2
        if batches.sources is not None:
            assert batches.sources(2)[1].shape == (2, 2, 8000)


def test_a_folder_of_mixtures_only(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mixtures"
    folder.mkdir()
    for i in range(3):                                                    # 44.1 kHz stereo: resampled, mixed down
        sf.write(folder / f"m{i}.wav", 0.1 * rng.standard_normal((44100, 2)), 44100)
    res = run(tmp_path / "o", "--mode", "sr", "--mixtures", str(folder))
    assert [s["stage"] for s in res["stages"]] == ["mixit", "sr"]
    with pytest.raises(SystemExit):                                       # supervised needs references
        run(tmp_path / "p", "--mode", "sup-flow", "--mixtures", str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="error: .*no .*files"):
        run(tmp_path / "q", "--mode", "sr", "--mixtures", str(tmp_path / "empty"))


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch):
    full = tmp_path / "full"
    run(full, "--mode", "sr", "--steps", "4", "--ckpt-every", "2")
    real_save = training.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["stage"] == "sr" and state["step"] == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cut, "--mode", "sr", "--steps", "4", "--ckpt-every", "2")
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    res = run(cut, "--mode", "sr", "--steps", "4", "--ckpt-every", "2", "--resume")
    assert [s["steps_this_run"] for s in res["stages"]] == [0, 2]        # nothing redone
    a = torch.load(full / "sr.pt", weights_only=True)
    b = torch.load(cut / "sr.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"


def test_teacher_reuse_and_export(tmp_path, capsys):
    run(tmp_path / "mixit", "--mode", "mixit")
    res = run(tmp_path / "rm", "--mode", "rm", "--teacher", str(tmp_path / "mixit" / "mixit.pt"),
              "--teacher-steps", "9")                                      # unused with --teacher
    assert [s["stage"] for s in res["stages"]] == ["rm"]
    assert read(tmp_path / "rm" / "rm.pt")["args"]["teacher_steps"] == 2
    with pytest.raises(SystemExit, match="need a MixIT one"):
        run(tmp_path / "x", "--mode", "sr", "--teacher", str(tmp_path / "rm" / "rm.pt"))
    C.main(["export", str(tmp_path / "rm" / "rm.pt"), str(tmp_path / "small.pt")])
    small = read(tmp_path / "small.pt")
    assert "opt" not in small and "model" not in small and small["trained_with"]["mode"] == "rm"
    # the recipe travels with the weights: the flow's time law and the regression net too
    assert {"time", "flow_head", "reg_net", "augment"} <= set(small["trained_with"])
    assert os.path.getsize(tmp_path / "small.pt") < os.path.getsize(tmp_path / "rm" / "rm.pt") / 2
    capsys.readouterr()
    audio_eval.main(["collect", str(tmp_path)])
    table = capsys.readouterr().out
    assert "SURF (ReMixIT)" in table and "| MixIT |" in table

    # evaluate re-scores the exported student and the full teacher checkpoint on the same test
    # mixtures the run was scored on: the same figures as the run's own table.
    ev = audio_eval.main(["evaluate", str(tmp_path / "small.pt"), str(tmp_path / "mixit" / "mixit.pt"),
                          "--eval-size", "2", "--eval-seconds", "0.5", "--threads", "1"])["rows"]
    assert [(r["method"], r["grouping"]) for r in ev] == \
        [("MixIT", "merged"), ("MixIT", "oracle"), ("SURF (ReMixIT)", "PIT")]
    assert "| SURF (ReMixIT) | 2 | PIT |" in capsys.readouterr().out
    trained = {(r["method"], r["grouping"]): r["si_sdri"] for r in res["rows"]}
    assert ev[2]["si_sdri"] == pytest.approx(trained[("SURF (ReMixIT)", "PIT")], abs=1e-6)
    assert ev[0]["si_sdri"] == pytest.approx(trained[("its MixIT teacher", "merged")], abs=1e-6)
    with pytest.raises(SystemExit, match="--task speech"):
        audio_eval.main(["evaluate", str(tmp_path / "small.pt"), "--task", "fuss", "--eval-size", "2"])


def test_librimix_sampler_reads_aligned_crops(tmp_path, gen):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(2):                          # source 2 is source 1 doubled (and 500 samples longer)
        x = 0.1 * rng.standard_normal(16000)
        paths = [str(tmp_path / f"s{i}{k}.wav") for k in range(2)]
        sf.write(paths[0], x, 16000, subtype="FLOAT")
        sf.write(paths[1], np.concatenate([2 * x, np.zeros(500)]), 16000, subtype="FLOAT")
        rows.append({"mixture": "", "sources": paths})
    m, s = A.LibriMixSampler(rows, 8000, 3000, gen).batch(3)
    assert m.shape == (3, 1, 3000) and s.shape == (3, 2, 3000)
    assert torch.allclose(s.sum(1, keepdim=True), m)
    assert torch.allclose(s[:, 1], 2 * s[:, 0], atol=1e-6)               # one crop start for all


# --------------------------------------------------------------------------------------
# GPU budget and CPU notice (issue 11)
# --------------------------------------------------------------------------------------

def test_librimix_on_a_cpu_is_a_one_line_gpu_notice(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_audio.main(["--librimix", str(tmp_path / "train.csv"), "--device", "cpu",
                          "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPU job" in err and "--preset quick" in err and "--cpu-ok" in err
    assert not (tmp_path / "o").exists()


def test_cpu_commands_keep_their_defaults(tmp_path):
    base = dict(net="cpu", steps=1000, batch=8, seconds=1.0, precision="fp32", compile=False)
    for extra in ([], ["--mixtures", str(tmp_path)], ["--librimix", "x.csv", "--net", "cpu"]):
        args = train_audio.parse_args(extra + ["--device", "cpu"])
        assert not args.gpu_notice and {k: getattr(args, k) for k in base} == base, extra
    args = train_audio.parse_args(["--librimix", "x.csv", "--device", "cpu", "--cpu-ok"])
    gpu = train_audio.PRESETS["gpu"]
    assert (args.net, args.steps, args.batch, args.seconds) == ("paper", gpu["steps"], gpu["batch"], gpu["seconds"])
    assert (args.precision, args.compile) == ("fp32", False)
    assert 3e18 < train_audio.budget_flops(args) < 3.5e18                 # the stated ~3.2 EFLOP


def _corpus_like(tmp_path):
    """The demo clips with a corpus-style manifest: 3 speakers moved to a 'valid' split."""
    import csv
    import shutil
    folder = tmp_path / "corpus"
    shutil.copytree(A.DEMO_DIR, folder)
    with open(folder / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    valid = sorted({r["speaker"] for r in rows if r["split"] == "train"})[:3]
    for r in rows:
        if r["speaker"] in valid:
            r["split"] = "valid"
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def test_validation_curve_augmentation_and_plot(tmp_path):
    """With a 'valid' split the run scores validation mixtures every --val-every steps (MixIT:
    merged and oracle), keeps the curve in results.json, and --collect --plot draws it."""
    data = _corpus_like(tmp_path)
    out = tmp_path / "run"
    res = run(out, "--mode", "mixit", "--data", str(data), "--steps", "4", "--val-every", "2",
              "--val-size", "3", "--augment", "--eval-snr", "0")
    curve = res["stages"][0]["curve"]
    assert [p["step"] for p in curve] == [2, 4]
    assert all(math.isfinite(p["si_sdri"]) and math.isfinite(p["si_sdri_oracle"]) for p in curve)
    assert res["args"]["augment"] and res["args"]["eval_snr"] == 0
    png = tmp_path / "curves.png"
    audio_eval.main(["collect", str(tmp_path), "--plot", str(png)])
    assert png.stat().st_size > 1000
    # the demo set has no 'valid' split: no curve, and the run still completes
    res = run(tmp_path / "demo", "--mode", "sup-reg", "--val-every", "1")
    assert res["stages"][0]["curve"] == []


def test_flow_head_x1_trains_and_travels_in_the_checkpoint(tmp_path):
    res = run(tmp_path, "--mode", "sup-flow", "--flow-head", "x1", "--time", "near0")
    assert all(math.isfinite(r["si_sdri"]) for r in res["rows"])
    ckpt = read(tmp_path / "sup-flow.pt")
    assert ckpt["config"]["head"] == "x1" and C.audio_network(ckpt).config.head == "x1"
    assert ckpt["args"]["time"] == "near0"


def test_reg_net_convtasnet_trains_and_separates(tmp_path):
    """--reg-net convtasnet: supervised regression with a K-output ConvTasNet; the checkpoint
    says so, and separate.py loads it and keeps the sum (SURF (1))."""
    import separate
    res = run(tmp_path, "--mode", "sup-reg", "--reg-net", "convtasnet")
    assert [(r["outputs"], r["grouping"]) for r in res["rows"]] == [(2, "PIT")]
    ckpt = read(tmp_path / "sup-reg.pt")
    assert ckpt["arch"] == "convtasnet" and ckpt["config"]["num_outputs"] == 2
    net, sr = separate.load_model(str(tmp_path / "sup-reg.pt"))
    x = torch.randn(3 * sr, generator=torch.Generator().manual_seed(0)).double() * 0.1
    est = separate.separate_signal(net, x, sr)
    assert est.shape == (2, len(x)) and torch.allclose(est.sum(0), x, atol=1e-4)


def test_minutes_cuts_a_stage_to_what_fits_and_beta_follows(tmp_path, capsys):
    # --minutes: after FIT_FROM + FIT_OVER steps the step count becomes what the time left
    # allows. A budget far below one step's time cuts the stage right there; with it ignored
    # the stage would run its 60 steps.
    n = training.FIT_FROM + training.FIT_OVER
    res = run(tmp_path, "--mode", "sup-reg", "--steps", "60", "--minutes", "1e-6")
    assert res["stages"][0]["steps"] == n and res["stages"][0]["steps_this_run"] == n
    ckpt = read(tmp_path / "sup-reg.pt")
    assert ckpt["step"] == ckpt["total_steps"] == n
    assert res["budget"].startswith(f"{n} steps")                       # what was trained, not asked
    assert f"--minutes 1e-06 -> {n} steps (asked 60)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_audio.parse_args(["--minutes", "0"])


def test_steps_that_fit_never_exceeds_the_ask_nor_undoes_steps():
    stage = type("S", (), {})()
    stage.name, stage.step, stage.total, stage.asked = "x", 50, 1000, 1000
    stage.args = type("A", (), {"minutes": 1.0})()
    # 100 s left at 0.1 s a step: 1000 steps would fit, FIT_MARGIN keeps 900 of them
    assert training.steps_that_fit(stage, 100.0, 0.1) == 50 + int(training.FIT_MARGIN * 1000)
    assert training.steps_that_fit(stage, 1e6, 0.1) == 1000                    # never raised
    assert training.steps_that_fit(stage, -5.0, 0.1) == 50                     # time already up
    stage.total = 400                                                          # cut to 40 % ...
    assert training.share_of_stage(2000, stage) == 800                         # ... beta's too


def test_eval_size_zero_trains_only(tmp_path, capsys):
    res = run(tmp_path / "t", "--mode", "mixit", "--eval-size", "0")
    assert res["rows"] == [] and res["stages"][0]["steps"] == 2
    assert (tmp_path / "t" / "mixit.pt").is_file() and not (tmp_path / "t" / "examples").exists()
    ckpt = str(tmp_path / "t" / "mixit.pt")
    said = capsys.readouterr().out
    assert f"python -m surf_mini.audio_eval evaluate {ckpt} --data " in said   # the command to score it
    with open(tmp_path / "t" / "results.json") as f:
        assert json.load(f)["budget"].startswith("2 steps")
    audio_eval.main(["collect", str(tmp_path)])                                # such runs collect too
    assert "no scored rows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:                                       # scoring needs mixtures
        audio_eval.main(["evaluate", ckpt, "--eval-size", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: --eval-size and --eval-seconds must be positive" in err and "Traceback" not in err
    with pytest.raises(SystemExit):                                            # not a training option
        train_audio.parse_args(["--evaluate", ckpt])
    assert "unrecognized arguments: --evaluate" in capsys.readouterr().err


def test_evaluate_raw_weights_scores_the_trained_network(tmp_path):
    res = run(tmp_path, "--mode", "sup-reg", "--ema", "0.9")              # EMA far from the weights
    ev = lambda *x: audio_eval.main(["evaluate", *x, "--eval-size", "2", "--eval-seconds", "0.5",  # noqa: E731
                                     "--threads", "1"])["rows"][0]
    ckpt = str(tmp_path / "sup-reg.pt")
    ema, raw = ev(ckpt), ev(ckpt, "--weights", "raw")
    assert ema["si_sdri"] == pytest.approx(res["rows"][0]["si_sdri"], abs=1e-6)    # the run's own row
    assert raw["method"] == "supervised regression (raw weights)"
    assert abs(raw["si_sdri"] - ema["si_sdri"]) > 1e-4                          # another network
    C.export(ckpt, str(tmp_path / "small.pt"))
    with pytest.raises(SystemExit, match="no trained weights"):
        ev(str(tmp_path / "small.pt"), "--weights", "raw")
    with pytest.raises(SystemExit):
        train_audio.parse_args(["--weights", "raw"])                            # only with evaluate
