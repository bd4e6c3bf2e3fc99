"""The shipped demo speech set and the audio data views."""
import ast
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from surf_mini import audio_data as A


def test_demo_set_ships_with_disjoint_speaker_splits():
    with open(os.path.join(A.DEMO_DIR, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    train = {r["speaker"] for r in rows if r["split"] == "train"}
    test = {r["speaker"] for r in rows if r["split"] == "test"}
    assert len(train) >= 20 and len(test) >= 4 and not train & test
    assert all(os.path.isfile(os.path.join(A.DEMO_DIR, r["file"])) for r in rows)
    info = sf.info(os.path.join(A.DEMO_DIR, rows[0]["file"]))
    assert info.samplerate == 16000 and info.channels == 1


def test_clip_mixer_and_the_mixtures_only_view():
    clips = A.load_clips(A.DEMO_DIR, 8000, "test")
    mixer = A.ClipMixer(clips, 2, 4000, torch.Generator().manual_seed(0))
    m, s = mixer.batch(4)
    assert m.shape == (4, 1, 4000) and s.shape == (4, 2, 4000)
    assert torch.allclose(s.sum(1, keepdim=True), m)
    view = A.MixtureView(mixer=mixer)
    assert list(vars(view)) == ["mixtures"] and view.mixtures(3).shape == (3, 1, 4000)
    with pytest.raises(A.AudioDataError, match="at least 3 speakers"):
        A.ClipMixer({"a": clips[next(iter(clips))]}, 3, 4000, torch.Generator())


def test_mixture_folder_and_errors(tmp_path):
    for i in range(2):
        sf.write(tmp_path / f"mix{i}.wav", np.random.default_rng(i).standard_normal((3000, 2)) * 0.1, 16000)
    view = A.MixtureView(folder=str(tmp_path), sample_rate=8000, length=1000,
                         generator=torch.Generator().manual_seed(0))
    assert view.mixtures(2).shape == (2, 1, 1000)
    with pytest.raises(A.AudioDataError, match="no such folder"):
        A.list_audio(str(tmp_path / "nope"))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(A.AudioDataError, match="not readable audio"):
        A.read_audio(str(tmp_path / "bad.wav"), 16000)


def test_librimix_metadata(tmp_path):
    path = tmp_path / "mixture_train_mix_clean.csv"
    path.write_text("mixture_ID,mixture_path,source_1_path,source_2_path,length\n"
                    "a_b,/x/mix/a_b.wav,/x/s1/a_b.wav,/x/s2/a_b.wav,16000\n")
    assert A.librimix_items(str(path)) == [{"mixture": "/x/mix/a_b.wav",
                                            "sources": ["/x/s1/a_b.wav", "/x/s2/a_b.wav"]}]
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(A.AudioDataError, match="not a LibriMix"):
        A.librimix_items(str(bad))


def test_augmented_sources_still_sum_to_the_mixture():
    """SURF (1) under augmentation: every source is augmented before the sum."""
    clips = A.load_clips(A.DEMO_DIR, 8000, "train")
    plain = A.ClipMixer(clips, 2, 8000, torch.Generator().manual_seed(3))
    aug = A.ClipMixer(clips, 2, 8000, torch.Generator().manual_seed(3), augment_rate=8000)
    m, s = aug.batch(6)
    assert s.shape == (6, 2, 8000) and torch.allclose(s.sum(1, keepdim=True), m)
    assert torch.isfinite(s).all()
    m0, _ = plain.batch(6)
    assert not torch.allclose(m0, m)                      # the augmentation did something
    m2, s2 = A.ClipMixer(clips, 2, 8000, torch.Generator().manual_seed(3), augment_rate=8000).batch(6)
    assert torch.equal(m2, m) and torch.equal(s2, s)     # and is seeded


def test_speed_by_resampling_moves_the_pitch():
    sr, f = 8000, 200.0
    x = torch.sin(2 * torch.pi * f * torch.arange(sr) / sr)
    assert torch.equal(A.speed(x, 1.0), x)
    for factor in (0.9, 1.1):
        y = A.speed(x, factor)
        assert y.shape == x.shape
        peak = torch.fft.rfft(y[: int(sr / 1.1)]).abs().argmax().item() * sr / int(sr / 1.1)
        assert abs(peak - f * factor) < 3.0, (factor, peak)


def test_light_reverb_keeps_the_dry_signal_and_adds_a_quiet_tail():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8000)
    x[100] = 1.0                                          # an impulse: the output is 1 + the tail
    y = A.light_reverb(x, 8000, g, wet=(0.2, 0.2))
    tail = y - x
    assert tail[:100].abs().max() < 1e-6                  # causal
    assert abs(tail.pow(2).sum().item() / x.pow(2).sum().item() - 0.2) < 1e-4
    assert abs(y[100].item() - 1.0) < 0.5                 # the direct path is still there


def _imports(path):
    """The absolute module names ``path`` imports, at any depth (function-level imports too)."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_the_library_imports_nothing_from_prepare():
    """The data builders in prepare/ use the library, never the other way round: importing
    audio_data in a fresh process loads no prepare module, no module of surf_mini/ imports
    one, and audio_data has no command line to reach back into them."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(A.__file__)))
    code = ("import sys, surf_mini.audio_data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prepare'))")
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"                          # prepare/ is importable from there, yet not loaded
    package = os.path.join(root, "surf_mini")
    found = {(f, m) for f in sorted(os.listdir(package)) if f.endswith(".py")
             for m in _imports(os.path.join(package, f)) if m.split(".")[0] == "prepare"}
    assert found == set()
    assert "prepare.common" in set(_imports(os.path.join(root, "prepare", "speech.py")))   # the check sees them
    tree = ast.parse(open(os.path.join(package, "audio_data.py")).read())
    assert not any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
