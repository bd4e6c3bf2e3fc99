"""DNSMOS P.835 (Reddy et al. 2022), the optional extra (requirements-dnsmos.txt):
``dnsmos.dnsmos`` against speechmos's own figures, its 16 kHz resampling and its windowing,
the one-line message when the extra is missing, ``separate.py --score`` and
``python -m surf_mini.audio_eval evaluate --dnsmos``, with the extra and without it.

The tests that run the model skip (saying why) when speechmos / onnxruntime are not
installed; the windowing and the missing-extra tests run everywhere. DNSMOS costs about
0.75 s of one core per 9.01 s window, so the signals here are chosen to need few windows
(a 1 s signal is repeated to 16 s: 7 windows, all the same samples, scored once).
"""
import builtins
import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import separate
from surf_mini import audio_data as A
from surf_mini import audio_eval
from surf_mini import dnsmos as M

DEMO = os.path.join(separate.HERE, "surf_mini", "assets", "demo_mix.wav")


def need_extra():
    pytest.importorskip("onnxruntime", reason="DNSMOS extra not installed: pip install -r requirements-dnsmos.txt")
    pytest.importorskip("speechmos", reason="DNSMOS extra not installed: pip install -r requirements-dnsmos.txt")


def voice(sr: int, seconds: float) -> np.ndarray:
    """Held-out demo speech at ``sr``: test-split clips joined to ``seconds``, float32."""
    clips = [c for cs in A.load_clips(A.DEMO_DIR, sr, "test").values() for c in cs]
    x = torch.cat(clips)[: int(seconds * sr)].numpy().astype(np.float32)
    assert len(x) == int(seconds * sr)
    return x


@pytest.fixture
def no_extra(monkeypatch):
    """The extra as if not installed: importing onnxruntime fails, no session is cached."""
    monkeypatch.setattr(M, "_DNSMOS_SESSIONS", {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)        # `import onnxruntime` -> ImportError


# --------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------

def test_dnsmos_scores_a_short_signal_and_hears_noise():
    """Three P.835 scores in [1, 5] for 1 s of demo speech (8 kHz, the models' rate); white
    noise at 0 dB SNR lowers BAK (background) and OVRL, as DNSMOS should."""
    need_extra()
    x = voice(8000, 1.0)
    clean = M.dnsmos(x, 8000)
    assert set(clean) == {"sig", "bak", "ovrl"}
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * np.std(x)
    noisy = M.dnsmos(x + noise, 8000)
    assert noisy["bak"] < clean["bak"] - 0.5 and noisy["ovrl"] < clean["ovrl"]
    assert M.dnsmos(torch.from_numpy(x).double(), 8000) == pytest.approx(clean, abs=1e-6)  # torch in


def test_dnsmos_equals_speechmos_own_figures():
    """The same SIG / BAK / OVRL as ``speechmos.dnsmos.run`` (the reference: Microsoft's DNSMOS
    P.835 script) on 16 kHz speech, short (0.6 s, doubled to 9.6 s: one window) and long
    (10.5 s: one window, the last 1.49 s unscored, as in the reference). Up to 1e-5: speechmos
    runs onnxruntime on every core, and another thread split can change a sum's last bits."""
    need_extra()
    sm = pytest.importorskip("speechmos.dnsmos", reason="speechmos needs librosa and requests "
                                                        "(pip install -r requirements-dnsmos.txt)")
    for seconds in (0.6, 10.5):
        x = voice(16000, seconds) * 0.9
        ref = sm.run(x, 16000)
        ours = M.dnsmos(x, 16000)
        for k in ("sig", "bak", "ovrl"):
            assert ours[k] == pytest.approx(float(ref[f"{k}_mos"]), abs=1e-5), (seconds, k)


def test_other_rates_are_resampled_to_16k_first():
    """An 8 kHz signal scores what the same signal resampled to 16 kHz by hand
    (torchaudio.functional.resample) scores: a short one (read whole) and a long one (each
    window resampled on its own)."""
    need_extra()
    import torchaudio
    for seconds in (1.0, 10.2):
        x = voice(8000, seconds)
        by_hand = torchaudio.functional.resample(torch.from_numpy(x), 8000, 16000).numpy()
        assert M.dnsmos(x, 8000) == pytest.approx(M.dnsmos(by_hand, 16000), abs=1e-6), seconds


def test_a_long_signal_is_scored_in_9_01_s_windows_one_second_apart():
    """12.5 s at 16 kHz: int(floor(12.5) - 9.01) + 1 = 3 windows, starting at 0, 1 and 2 s; the
    score is the mean of the three windows scored on their own (each exactly 9.01 s long)."""
    need_extra()
    x = voice(16000, 12.5)
    rows = M.dnsmos_stream(lambda s, n: x[s:s + n], len(x), 16000)
    assert len(rows) == 3
    one = [M.dnsmos(x[s * 16000:s * 16000 + M.DNSMOS_WINDOW], 16000) for s in range(3)]
    for k in ("sig", "bak", "ovrl"):
        assert [r[k] for r in rows] == pytest.approx([o[k] for o in one], abs=1e-9)
    assert M._dnsmos_mean(rows) == pytest.approx({k: np.mean([o[k] for o in one]) for k in one[0]}, abs=1e-9)
    every_2nd = M.dnsmos_stream(lambda s, n: x[s:s + n], len(x), 16000, hop=2)   # windows at 0 and 2 s
    assert [r["ovrl"] for r in every_2nd] == pytest.approx([one[0]["ovrl"], one[2]["ovrl"]], abs=1e-9)


@pytest.mark.parametrize("sr", [8000, 44100])
def test_windows_read_one_at_a_time_equal_the_whole_signal_resampled(sr):
    """No model needed: the 16 kHz windows of a long signal, each read and resampled on its
    own (with context), equal the windows of the whole signal resampled at once, and no read
    asks for more than one window plus its context; the count is the reference's rule."""
    import torchaudio
    x = np.random.default_rng(1).standard_normal(int(20.5 * sr)).astype(np.float32) * 0.1
    asked = []

    def read(s, n):
        asked.append(n)
        return x[s:s + n]
    whole = torchaudio.functional.resample(torch.from_numpy(x), sr, 16000).numpy()
    windows = list(M._dnsmos_windows(read, len(x), sr))
    assert len(windows) == int(np.floor(len(whole) / 16000) - 9.01) + 1 == 11
    for key, w in windows:
        assert w.shape == (M.DNSMOS_WINDOW,)
        np.testing.assert_allclose(w, whole[key:key + M.DNSMOS_WINDOW], atol=2e-6)
    assert max(asked) <= -(-M.DNSMOS_WINDOW * sr // 16000) + 2 * M._resample_margin(sr) < len(x) / 2


def test_a_short_signal_is_repeated_as_the_reference_does():
    """No model needed: 4 s at 16 kHz is doubled to 16 s (7 windows); windows a period apart
    hold the same samples and share a key, so each distinct window is scored once."""
    x = np.arange(64000, dtype=np.float32) / 64000
    windows = list(M._dnsmos_windows(lambda s, n: x[s:s + n], len(x), 16000))
    assert len(windows) == 7 and len({k for k, _ in windows}) == 4
    tiled = np.tile(x, 4)
    for i, (key, w) in enumerate(windows):
        assert key == (i * 16000) % 64000
        np.testing.assert_array_equal(w, tiled[i * 16000:i * 16000 + M.DNSMOS_WINDOW])
    with pytest.raises(ValueError, match="no samples"):
        list(M._dnsmos_windows(lambda s, n: x[:0], 0, 16000))


def test_missing_extra_gives_one_line_naming_the_install_command(no_extra, monkeypatch):
    for missing in ("onnxruntime", "speechmos"):
        if missing == "speechmos":                                  # onnxruntime back, speechmos gone
            monkeypatch.delitem(sys.modules, "onnxruntime")
            real_import = builtins.__import__

            def fake_import(name, *a, **kw):
                if name == "onnxruntime":
                    return type(sys)("onnxruntime")                # found, but never used
                return real_import(name, *a, **kw)
            monkeypatch.setattr(builtins, "__import__", fake_import)
            monkeypatch.setitem(sys.modules, "speechmos", None)
        with pytest.raises(M.DNSMOSMissing) as e:
            M.dnsmos(np.zeros(8000, np.float32), 8000)
        msg = str(e.value)
        assert "\n" not in msg and msg.endswith("pip install -r requirements-dnsmos.txt") and missing in msg
        assert isinstance(e.value, ImportError) and not M.dnsmos_available()


# --------------------------------------------------------------------------------------
# separate.py --score, audio_eval evaluate --dnsmos
# --------------------------------------------------------------------------------------

@pytest.fixture
def short_mix(tmp_path):
    """The first second of the demo file (16 kHz): one distinct DNSMOS window per signal."""
    x, sr = sf.read(DEMO, dtype="float32")
    path = tmp_path / "mix.wav"
    sf.write(path, x[sr:2 * sr], sr)
    return path


def test_separate_score_prints_the_table_and_writes_the_json(short_mix, tmp_path, capsys):
    need_extra()
    out = tmp_path / "out"
    written = separate.main([str(short_mix), "--out-dir", str(out), "--score", "--threads", "1"])
    report = json.loads((out / "mix_dnsmos.json").read_text())
    assert [r["signal"] for r in report["scores"]] == ["mixture"] + [os.path.basename(p) for p in written]
    assert report["scores"][0]["file"] == str(short_mix)
    mix = M.dnsmos_file(str(short_mix), hop=9)            # --score's default: windows 9 s apart
    assert {k: report["scores"][0][k] for k in mix} == pytest.approx(mix, abs=1e-9)
    assert "9 s apart" in report["metric"]
    printed = capsys.readouterr().out
    assert "| signal | SIG | BAK | OVRL |" in printed and "| mixture |" in printed
    assert f"| mix_s1.wav | {report['scores'][1]['sig']:.2f} |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["mix_dnsmos.json", "mix_s1.wav", "mix_s2.wav"]  # no temp left


def test_separate_score_hop_1_is_the_reference_rule(short_mix, tmp_path):
    need_extra()
    separate.main([str(short_mix), "--out-dir", str(tmp_path), "--score", "--score-hop", "1", "--threads", "1"])
    report = json.loads((tmp_path / "mix_dnsmos.json").read_text())
    mix = M.dnsmos(sf.read(short_mix, dtype="float32")[0], 16000)        # speechmos's rule
    assert {k: report["scores"][0][k] for k in mix} == pytest.approx(mix, abs=1e-9)
    with pytest.raises(SystemExit):
        separate.main([str(short_mix), "--out-dir", str(tmp_path), "--score", "--score-hop", "0"])


def test_separate_score_without_the_extra_still_separates(no_extra, short_mix, tmp_path, capsys):
    out = tmp_path / "out"
    written = separate.main([str(short_mix), "--out-dir", str(out), "--score", "--threads", "1"])
    assert len(written) == 2 and all(os.path.isfile(p) for p in written)
    assert not (out / "mix_dnsmos.json").exists()
    err = [line for line in capsys.readouterr().err.splitlines() if "DNSMOS" in line]
    assert len(err) == 1 and "pip install -r requirements-dnsmos.txt" in err[0]


@pytest.mark.filterwarnings("ignore:std")                  # one test mixture: no standard error
def test_audio_eval_dnsmos_columns_and_ceiling(capsys):
    """evaluate --dnsmos: each row gets SIG / BAK / OVRL, the mean over its separated sources;
    a ceiling row holds the references' own; the printed table has the three columns."""
    need_extra()
    import train_audio
    argv = ["--eval-size", "1", "--eval-seconds", "1", "--threads", "1", "--device", "cpu"]
    res = audio_eval.main(["evaluate", separate.DEFAULT_CHECKPOINT, *argv, "--dnsmos"])
    row, ceiling = res["rows"][0], res["dnsmos_ceiling"]["rows"][0]
    assert ceiling["method"] == audio_eval.DNSMOS_CEILING and ceiling["si_sdr"] is None
    m, ref = audio_eval.test_set(train_audio.parse_args(argv), 8000)    # the test set a run scores on
    assert ceiling["dnsmos_ovrl"] == pytest.approx(np.mean([M.dnsmos(ref[0, k], 8000)["ovrl"] for k in range(2)]))
    assert all(1.0 <= row[k] <= 5.0 for k in audio_eval.DNSMOS_KEYS)
    out = capsys.readouterr().out
    assert "DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL" in out and audio_eval.DNSMOS_CEILING in out


@pytest.mark.filterwarnings("ignore:std")
def test_audio_eval_dnsmos_without_the_extra_goes_on(no_extra, capsys):
    res = audio_eval.main(["evaluate", separate.DEFAULT_CHECKPOINT, "--eval-size", "1", "--eval-seconds", "1",
                           "--threads", "1", "--device", "cpu", "--dnsmos"])
    assert "dnsmos_ovrl" not in res["rows"][0] and "dnsmos_ceiling" not in res
    cap = capsys.readouterr()
    assert "DNSMOS SIG" not in cap.out
    assert len([line for line in cap.err.splitlines() if "requirements-dnsmos.txt" in line]) == 1
