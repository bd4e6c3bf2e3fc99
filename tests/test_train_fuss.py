"""train_audio.py --task fuss on the committed FUSS-like sample: every mode with K = 4 (the
MixIT teacher with M = 8), the FUSS table, no references for the unsupervised stages, every
loss finite with silent reference slots, and separate.py with a K = 4 model."""
import json
import math
import os

import pytest
import soundfile as sf
import torch

import separate
import train_audio
from surf_mini import audio_eval, methods, runs
from surf_mini import checkpoints as C
from surf_mini import fuss_data as F
from surf_mini.flow import floss_loss
from surf_mini.mixit import merge_outputs, mixit_loss, output_sparsity
from surf_mini.pit import pit_loss
from surf_mini.remix import mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss


def run(out, *extra):
    argv = ["--task", "fuss", "--net", "cpu", "--teacher-steps", "2", "--steps", "2", "--batch", "2",
            "--seconds", "0.5", "--eval-size", "4", "--eval-seconds", "0.5", "--warmup", "1",
            "--threads", "1", "--out", str(out), *extra]
    return train_audio.main(argv)


def _finite_or_none(v) -> bool:
    return v is None or math.isfinite(v)


def read(path) -> dict:
    return C.read_checkpoint(str(path), C.AUDIO_KIND, "audio")


@pytest.mark.parametrize("mode", methods.MODES)
def test_every_mode_trains_and_writes_the_fuss_table(tmp_path, mode):
    res = run(tmp_path, "--mode", mode)
    rows = res["rows"]
    name = methods.METHOD_NAMES[mode]
    mine = [(r["outputs"], r["grouping"]) for r in rows if r["method"] == name]
    assert mine == ([(8, "raw"), (4, "merged")] if mode == "mixit" else [(4, "raw")])
    teacher = [(r["outputs"], r["grouping"]) for r in rows if r["method"] == "its MixIT teacher"]
    assert teacher == ([(8, "raw"), (4, "merged")] if mode in methods.NEEDS_TEACHER else [])
    for r in rows:
        assert all(_finite_or_none(r[k]) for k in audio_eval.FUSS_KEYS), r
        assert any(r[k] is not None for k in audio_eval.FUSS_KEYS), r
        assert math.isclose(r["under"] + r["equal"] + r["over"], 1.0), r
        assert sum(b["mixtures"] for b in r["by_count"].values()) == r["n"] == 4
    ckpt = read(tmp_path / f"{mode}.pt")
    net = C.audio_network(ckpt)
    assert separate.outputs_of(net) == (8 if mode == "mixit" else 4)
    if mode in methods.NEEDS_TEACHER:
        assert read(tmp_path / "mixit.pt")["config"]["num_outputs"] == 8
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert saved["task"] == "fuss" and saved["rows"] == json.loads(json.dumps(rows))
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("| method |") and "MSi (dB)" in md and "| sources |" in md
    assert (tmp_path / "examples" / "00_ref4.wav").is_file() and (tmp_path / "examples" / "00_est4.wav").is_file()
    assert not list(tmp_path.glob("*.tmp*"))                              # atomic writes only
    # noisy speech (Table 3, right): the network and its teacher, scored on the speech alone
    noisy = res["noisy_speech"]
    assert [r["method"] for r in noisy] == [name] + (["its MixIT teacher"] if mode in methods.NEEDS_TEACHER else [])
    assert all(math.isfinite(r["si_sdri"]) and r["n"] == 4 for r in noisy) and saved["noisy_speech"]
    assert "Noisy speech" in md


def test_unsupervised_fuss_stages_are_given_no_sources(tmp_path):
    args = train_audio.parse_args(["--task", "fuss", "--out", str(tmp_path)])
    assert (args.K, args.M, args.data, args.eval_seconds) == (4, 8, F.FUSS_SAMPLE_DIR, F.CPU_SECONDS)
    data = train_audio.training_data(args, 8000)
    for mode in methods.MODES:
        stage = train_audio.stage(mode, args, torch.device("cpu"), data)
        batches = stage.batches
        assert (batches.sources is not None) == (mode in methods.SUPERVISED), mode
        for draw in (batches.mixtures, batches.mixit_pair):              # plain functions of B,
            assert not hasattr(draw, "__self__")                          # no mixer object behind
        assert batches.mixtures(2).shape == (2, 1, 8000)
        if batches.sources is not None:
            assert batches.sources(2)[1].shape == (2, 4, 8000)
        expected = methods.audio_network(mode, "cpu", K=4, M=8)           # K = 4, the teacher M = 8
        outputs = getattr(expected, "num_sources", None) or expected.num_outputs
        assert stage.net.config == expected and outputs == (8 if mode == "mixit" else 4), mode


def test_fuss_rejects_speech_only_options_and_collect_reads_the_task(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        train_audio.parse_args(["--task", "fuss", "--librimix", "x.csv"])
    res = {"task": "fuss", "budget": "b", "rows": [audio_eval.fuss_row(
        "MixIT", torch.randn(4, 8, 400), *_silent_slot_batch(400)[::-1], "raw")]}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(res))
    capsys.readouterr()
    audio_eval.main(["collect", str(tmp_path)])
    assert "| MSi (dB) |" in capsys.readouterr().out
    # --plot: a FUSS curve is the raw outputs' MSi, and the axis and legend must say so
    seen = {}
    monkeypatch.setattr(runs, "plot_curves",
                        lambda *a, **kw: seen.update(ylabel=a[3], merged=kw["merged"]))
    audio_eval.main(["collect", str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert "MSi" in seen["ylabel"] and seen["merged"] == ()


# --------------------------------------------------------------------------------------
# Silent references: every loss of the fuss path, finite values and gradients
# --------------------------------------------------------------------------------------

def _silent_slot_batch(T: int = 2000):
    """(m [4, 1, T], x [4, 4, T]) of FUSS mixtures with 1 or 2 sources: slots 2, 3 (at least)
    exactly zero."""
    pool = F.load_events(F.FUSS_SAMPLE_DIR, 8000, "train")
    m, x, n = F.fuss_mixtures(pool, 4, T, torch.Generator().manual_seed(0), counts=(0.5, 0.5, 0, 0))
    assert (x[:, 2:] == 0).all() and (n <= 2).all()
    return m, x


class Tiny(torch.nn.Module):
    """A differentiable stand-in for the networks: regression outputs gain * m / K + w * noise,
    velocity a * x_t + c * m / K. Its outputs start near zero in the silent slots too."""

    def __init__(self, K: int = 4, T: int = 2000):
        super().__init__()
        self.w = torch.nn.Parameter(0.01 * torch.randn(1, K, T, generator=torch.Generator().manual_seed(1)))
        self.a = torch.nn.Parameter(torch.tensor(0.5))
        self.c = torch.nn.Parameter(torch.tensor(0.5))

    def regress(self, m):                                               # [B, 1, T] -> [B, K, T]
        return m / self.w.shape[1] + self.w

    def velocity(self, x_t, t, m):                                      # [B, K, T]
        return self.a * x_t + self.c * m / x_t.shape[1]


def test_mixit_sparsity_term_reaches_the_teacher_training(tmp_path):
    """--mixit-sparsity adds Wisdom et al.'s l1/l2 output term to the audio MixIT loss: the same
    seed then gives other weights; 0 (the default) gives the very same ones."""
    def weights(out, *extra):
        run(out, "--mode", "mixit", "--seed", "3", *extra)
        return read(out / "mixit.pt")["model"]
    plain, zero, sparse = (weights(tmp_path / d, *e) for d, e in
                           (("plain", ()), ("zero", ("--mixit-sparsity", "0")), ("sparse", ("--mixit-sparsity", "5"))))
    assert all(torch.equal(plain[k], zero[k]) for k in plain)
    assert any(not torch.equal(plain[k], sparse[k]) for k in plain)
    C.export(str(tmp_path / "sparse" / "mixit.pt"), str(tmp_path / "small.pt"))
    assert read(tmp_path / "small.pt")["trained_with"]["mixit_sparsity"] == 5


def _check_finite(loss: torch.Tensor, net: Tiny) -> None:
    assert torch.isfinite(loss).all(), loss
    net.zero_grad()
    loss.mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_every_fuss_loss_is_finite_with_silent_references():
    m, x = _silent_slot_batch()
    g = torch.Generator().manual_seed(0)
    net = Tiny()
    _check_finite(pit_loss(net.regress(m), x, kind="log"), net)                                   # sup-reg
    _check_finite(floss_loss(net.velocity, x, kind="db", shaping="envelope", generator=g), net)   # sup-flow
    est8 = torch.cat([net.regress(m + m.roll(1, 0)), torch.zeros(4, 4, x.shape[-1])], 1)  # 4 silent outputs
    _check_finite(mixit_loss(est8, m, m.roll(1, 0), kind="snr")[0], net)                          # mixit
    _check_finite(output_sparsity(est8), net)                               # --mixit-sparsity term
    teacher = merge_outputs(torch.cat([x, torch.zeros_like(x)], 1), 4)   # silent teacher outputs
    assert (teacher == 0).any()
    x_tilde, pi = shuffle_sources(teacher, g)
    est = net.regress(mix(x_tilde))
    _check_finite(remixit_loss(est, x_tilde), net)                                                # remixit
    est = net.regress(mix(x_tilde))
    _check_finite(self_remixing_loss(est, x_tilde, pi, m), net)                                   # selfremix
    for mode in ("rm", "sr"):
        step = surf_loss(net.velocity, teacher, mode=mode, kind="db", shaping="envelope", generator=g)
        _check_finite(step.loss, net)                                                             # rm, sr


def test_the_rejected_per_source_snr_is_infinite_on_a_silent_reference():
    """Negative case of the Choice in ``methods.stage_loss``: a per-source negative SNR
    without a threshold divides by the silent reference's zero energy."""
    m, x = _silent_slot_batch()
    net = Tiny()
    est = net.regress(m)
    per_source = -10 * torch.log10(x.pow(2).sum(-1) / (x - est).pow(2).sum(-1))   # [B, K]
    assert torch.isinf(per_source[:, 2:]).all()
    assert torch.isfinite(pit_loss(est, x, kind="log")).all()           # the whole-tuple loss kept


# --------------------------------------------------------------------------------------
# separate.py with a K = 4 model
# --------------------------------------------------------------------------------------

def test_separate_py_with_a_k4_model_drops_silent_outputs(tmp_path, monkeypatch):
    run(tmp_path / "run", "--mode", "sup-reg")
    small = tmp_path / "fuss4.pt"
    C.main(["export", str(tmp_path / "run" / "sup-reg.pt"), str(small)])
    m, x, n = F.fuss_mixtures(F.load_events(F.FUSS_SAMPLE_DIR, 8000, "test"), 1, 8000,
                              torch.Generator().manual_seed(3), counts=(0, 1, 0, 0))
    wav = tmp_path / "fuss_mix.wav"
    sf.write(wav, m[0, 0].numpy(), 8000, subtype="FLOAT")
    every = separate.main([str(wav), "--checkpoint", str(small), "--out-dir", str(tmp_path / "all"),
                           "--keep-silent", "--chunk", "0.5", "--overlap", "0.1"])
    assert len(every) == 4
    outs = torch.stack([torch.from_numpy(sf.read(p, dtype="float64")[0]) for p in every])     # [4, T]
    mixture = torch.from_numpy(sf.read(wav, dtype="float64")[0])
    assert torch.allclose(outs.sum(0), mixture, atol=1e-5)              # SURF (1): they sum to the input
    power = outs.pow(2).mean(1)
    audible = power > mixture.pow(2).mean() * 10 ** (-30 / 10)           # separate.py's -30 dB rule
    kept = separate.main([str(wav), "--checkpoint", str(small), "--out-dir", str(tmp_path / "some"),
                          "--chunk", "0.5", "--overlap", "0.1"])
    assert len(kept) == int(audible.sum()) >= 1
    got = torch.stack([torch.from_numpy(sf.read(p, dtype="float64")[0]) for p in kept])
    assert torch.allclose(got, outs[audible], atol=1e-6)                # the audible ones, unchanged
    # what is written sums to the input up to the dropped outputs, each below -30 dB
    assert torch.allclose(got.sum(0) + outs[~audible].sum(0), mixture, atol=1e-5)
    # the exported model carries its training mixtures' level, which separate.py brings every
    # input to: FUSS-like mixtures sit about 10 dB below the speech ones
    net, _ = separate.load_model(str(small))
    assert 0.01 < net.input_level < 0.08 and net.input_level < separate.TRAINING_RMS / 2
    src = separate._Input(str(wav), net.input_level)
    seen = src.read(0, src.T)                                           # what the model is given
    assert abs(separate.active_level(separate.frame_powers(seen, 800)) / net.input_level - 1) < 1e-6
    targets = []

    class Spy(separate._Input):
        def __init__(self, path, target_level=None):
            targets.append(target_level)
            super().__init__(path, target_level)
    monkeypatch.setattr(separate, "_Input", Spy)
    separate.main([str(wav), "--checkpoint", str(small), "--out-dir", str(tmp_path / "spy")])
    assert targets == [net.input_level]


def test_noisy_speech_scores_the_speech_with_its_outputs_summed():
    """The noisy-speech row groups the outputs onto (speech, background) with the references
    and sums each group: speech split over two outputs still scores as the speech; a model
    that leaves the speech in the background output scores as the mixture's SI-SDR does."""
    g = torch.Generator().manual_seed(0)
    pool = F.load_events(F.FUSS_SAMPLE_DIR, 8000, "test")
    speech = {"a": [torch.randn(6000, generator=g)], "b": [torch.randn(3000, generator=g)]}
    m, x = F.noisy_speech(speech, pool, 3, 4000, torch.Generator().manual_seed(1))
    z = torch.zeros_like(x[:, :1])
    half = (torch.arange(m.shape[-1]) < m.shape[-1] // 2).float()              # the speech cut in two in time
    split = torch.cat([x[:, 1:], x[:, :1] * half, x[:, :1] * (1 - half), z], 1)  # [3, 4, T]
    good = audio_eval.noisy_speech_row("split", split, x, m, 8000)
    assert good["si_sdr"] > 60 and good["outputs"] == 4
    lumped = torch.cat([m, z, z, z], 1)                                         # no separation
    bad = audio_eval.noisy_speech_row("none", lumped, x, m, 8000)
    assert abs(bad["si_sdri"]) < 1e-6


SHIPPED_FUSS = os.path.join(os.path.dirname(separate.__file__), "surf_mini", "assets", "fuss")
FUSS_TABLE_MODES = ("mixit", "remixit", "selfremix", "rm", "sr", "sup-flow")   # README's FUSS rows


def test_shipped_fuss_checkpoints_rescore_with_their_budgets(capsys):
    """Every row of the README's FUSS table ships (surf_mini/assets/fuss/<mode>.pt) and re-scores
    with ``audio_eval evaluate`` on the committed sample: one FUSS row per network (the teacher
    also merged to 4), one noisy-speech row each, every score finite, and each row's budget the
    table's (a file of another run, or a full training checkpoint, would say otherwise)."""
    modes = sorted(f[:-3] for f in os.listdir(SHIPPED_FUSS) if f.endswith(".pt"))
    assert set(modes) == set(FUSS_TABLE_MODES)
    out = audio_eval.main(["evaluate", *(os.path.join(SHIPPED_FUSS, f"{m}.pt") for m in modes),
                           "--task", "fuss", "--eval-size", "3", "--eval-seconds", "1", "--threads", "1"])
    want = {"mixit": "4000 steps", "sup-flow": "500 steps", "rm": "4000 MixIT + 400 steps"}
    for m in modes:
        name = methods.METHOD_NAMES[m]
        rows = [r for r in out["rows"] if r["method"] == name]
        noisy = [r for r in out["noisy_speech"] if r["method"] == name]
        assert [r["grouping"] for r in rows] == (["raw", "merged"] if m == "mixit" else ["raw"]), m
        assert len(noisy) == 1 and math.isfinite(noisy[0]["si_sdri"]), m
        assert all(math.isfinite(r["MSi"]) for r in rows if r["MSi"] is not None), m
        budget = want.get(m, "4000 MixIT + 500 steps") + ", B=8 x 1 s"
        assert all(r["budget"] == budget for r in rows + noisy), (m, rows[0]["budget"])
        ckpt = C.read_checkpoint(os.path.join(SHIPPED_FUSS, f"{m}.pt"), C.AUDIO_KIND, "audio")
        assert "model" not in ckpt and ckpt["trained_with"]["task"] == "fuss"          # exported
    assert "| ReMixIT (regression) | 4 | raw |" in capsys.readouterr().out
