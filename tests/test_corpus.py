"""The offline speech corpus builder (prepare/speech.py) on a tiny fake package tree.

No Debian package is needed: the tree holds a few short tones where the packages put their
recordings, and three fake programs stand in for flite, espeak-ng and festival.
"""
import csv
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from prepare import common
from prepare import speech as S
from surf_mini import audio_data as A

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_TTS = r'''#!{python}
# Fake flite / espeak-ng / festival: write a 1 s tone (pitch from the voice name) per request.
import os, re, sys, zlib
import numpy as np, soundfile as sf

def tone(path, name):
    f = 120 + zlib.crc32(name.encode()) % 200
    t = np.arange(16000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * f * t)).astype("float32"), 16000)

prog, a = os.path.basename(sys.argv[0]), sys.argv[1:]
if prog == "flite":
    tone(a[a.index("-o") + 1], a[a.index("-voice") + 1])
elif prog == "espeak-ng":
    tone(a[a.index("-w") + 1], a[a.index("-v") + 1])
else:                                                     # festival -b script.scm
    text = open(a[-1]).read()
    voice = re.match(r"\((\w+)\)", text).group(1)
    for path in re.findall(r'"([^"]+\.wav)" \'riff', text):
        tone(path, voice)
'''


def _tone(path, seconds, freq, sr, fmt=None, subtype=None):
    t = np.arange(int(seconds * sr)) / sr
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32"), sr, format=fmt, subtype=subtype)


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """Every package of ``S.PACKAGES``: 3 one-second prompts per Asterisk folder (plus a
    5 s file in a ``silence`` folder, which must be skipped, and an empty file), 4 syllables
    per KLettres language, empty festvox voice folders, and the fake TTS programs on PATH."""
    root = tmp_path / "root"
    for i, folder in enumerate(S.ASTERISK_SPEAKERS):
        d = root / S.ASTERISK / folder
        for j in range(3):
            _tone(str(d / f"p{j}.wav"), 1.0, 200 + 50 * i + 10 * j, 8000)
        _tone(str(d / "silence" / "5.wav"), 5.0, 1000, 8000)
        sf.write(str(d / "empty.wav"), np.zeros(0, np.float32), 8000)
    for i, (pkg, subs) in enumerate(S.ASTERISK_GSM_SPEAKERS.values()):   # raw GSM 6.10, 8 kHz
        for sub in subs + (("es/digits",) if pkg == "asterisk-prompt-es-co" else ()):
            _tone(str(root / S.ASTERISK / sub / "p.gsm"), 1.0, 500 + 50 * i, 8000, "RAW", "GSM610")
    for j, syllable in enumerate(("ba", "ma")):       # gcin-voice: one file per speaker per syllable
        for k, file in enumerate(S.GCIN_SPEAKERS):
            _tone(str(root / S.GCIN / syllable / file), 0.5, 700 + 40 * j + 100 * k, 44100, "OGG")
    # Tux Paint: two descriptions per language, one of them shipped again under a second stamp's
    # name (same bytes: must count once), a stamp's own sound and the left-out languages' files
    for i, lang in enumerate(S.TUXPAINT_LANGUAGES + ("fr", "ru")):
        for j, stamp in enumerate(("animals/cat", "food/apple")):
            _tone(str(root / S.TUXPAINT / f"{stamp}_desc_{lang}.ogg"), 1.0, 250 + 30 * i + 10 * j, 44100, "OGG")
        dup = root / S.TUXPAINT / "food" / f"pear_desc_{lang}.ogg"
        dup.write_bytes((root / S.TUXPAINT / f"food/apple_desc_{lang}.ogg").read_bytes())
    _tone(str(root / S.TUXPAINT / "animals" / "cat.ogg"), 1.0, 900, 44100, "OGG")
    # KTuberling: three words per kept language (one a byte copy under another name) and a
    # left-out language's folder
    for i, lang in enumerate(S.KTUBERLING_LANGUAGES + ("fr",)):
        ext, sr, sub = (".opus", 48000, "OPUS") if lang == "nn" else (".ogg", 44100, None)   # as shipped
        for j, word in enumerate(("eye", "hat")):
            _tone(str(root / S.KTUBERLING / lang / f"{word}{ext}"), 0.5, 400 + 20 * i + 7 * j, sr, "OGG", sub)
        (root / S.KTUBERLING / lang / f"hat2{ext}").write_bytes((root / S.KTUBERLING / lang / f"hat{ext}").read_bytes())
    for i, lang in enumerate(("it", "nl", "ru", "de", "hu", "cs", "en", "fr")):
        for j in range(4):
            _tone(str(root / S.KLETTRES / lang / "alpha" / f"{j}.ogg"), 0.5, 300 + 20 * i + 5 * j, 22050, "OGG")
    for pkg, what in S.PACKAGES.items():
        if what.startswith(S.FESTIVAL_VOICES):
            os.makedirs(root / what, exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in S.PROGRAMS:
        p = bin_dir / prog
        p.write_text(FAKE_TTS.replace("{python}", sys.executable))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return str(root)


def _manifest(folder):
    with open(os.path.join(folder, "manifest.csv")) as f:
        return list(csv.DictReader(f))


def test_builds_speaker_disjoint_splits_with_real_only_test(fake_root, tmp_path):
    out = str(tmp_path / "corpus")
    totals = S.build_speech(out, root=fake_root, tts_seconds=6.0, progress=False)
    rows = _manifest(out)
    split = {r["speaker"]: r["split"] for r in rows}
    origin = {r["speaker"]: r["origin"] for r in rows}
    # 5 + 2 Asterisk speakers (Allison's two folders are one), 2 gcin, 7 Tux Paint, 10 KTuberling,
    # 8 KLettres, 5 + 12 + 12 synthetic
    assert totals["speakers"] == len(split) == 5 + 2 + 2 + 7 + 10 + 8 + len(S.FLITE_VOICES) \
        + len(S.ESPEAK_VOICES) + len(S.FESTIVAL)
    assert {s for s, v in split.items() if v == "test"} == set(S.TEST_SPEAKERS)
    assert {s for s, v in split.items() if v == "valid"} == set(S.VALID_SPEAKERS)
    assert all(origin[s] == "real" for s, v in split.items() if v != "train")
    assert {origin[s] for s, v in split.items() if v == "train"} == {"real", "synthetic"}
    for r in rows:                                               # every file there, 16 kHz mono
        info = sf.info(os.path.join(out, r["file"]))
        assert info.samplerate == S.SAMPLE_RATE and info.channels == 1
        assert abs(info.frames / info.samplerate - float(r["seconds"])) < 0.01
    # the 5 s file in "silence/" is skipped: Allison has 2 x 3 one-second prompts and pauses
    allison = sum(float(r["seconds"]) for r in rows if r["speaker"] == "asterisk-allison")
    assert 5.5 < allison < 8.0
    assert "asterisk-allison" in open(os.path.join(out, "SOURCES.md")).read()
    # Armelle's five folders are one speaker (5 one-second GSM prompts), July's two another; each
    # gcin speaker has only its own file of each syllable (2 x 0.5 s, one pause); own licences
    seconds = lambda who: sum(float(r["seconds"]) for r in rows if r["speaker"] == who)   # noqa: E731
    assert 5.0 < seconds("asterisk-armelle") < 6.5 and 2.0 < seconds("asterisk-july") < 2.4   # es/, es/digits/
    assert 0.9 < seconds("gcin-liu") < 1.4 and 0.9 < seconds("gcin-lo") < 1.4
    licence = {r["speaker"]: r["licence"] for r in rows}
    assert licence["gcin-lo"] == "CC-BY-3.0" and licence["asterisk-allison"] == "CC-BY-SA-3.0"
    # Tux Paint: one speaker per kept language, its 2 distinct descriptions once each (2 x 1 s and
    # a pause; the duplicate would make it 3 s), no stamp sound, no fr / ru (valid and test languages)
    tux = sorted(s for s in split if s.startswith("tuxpaint-"))
    assert tux == [f"tuxpaint-{lang}" for lang in sorted(S.TUXPAINT_LANGUAGES)]
    assert all(2.0 < seconds(s) < 2.4 and split[s] == "train" and licence[s] == "GPL-2" for s in tux), \
        {s: seconds(s) for s in tux}
    # KTuberling: one speaker per kept language, its 2 distinct words (2 x 0.5 s and a pause), no fr
    kt = sorted(s for s in split if s.startswith("ktuberling-"))
    assert kt == [f"ktuberling-{lang}" for lang in sorted(S.KTUBERLING_LANGUAGES)]
    assert all(1.0 < seconds(s) < 1.4 and split[s] == "train" and licence[s] == "GPL-2+" for s in kt), \
        {s: seconds(s) for s in kt}
    # the loader reads it like the demo set
    assert set(A.load_clips(out, 8000, "test")) == set(S.TEST_SPEAKERS)


def test_build_is_deterministic(fake_root, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    S.build_speech(a, root=fake_root, tts_seconds=6.0, progress=False)
    S.build_speech(b, root=fake_root, tts_seconds=6.0, progress=False)
    assert _manifest(a) == _manifest(b)
    f = _manifest(a)[0]["file"]
    assert np.array_equal(sf.read(os.path.join(a, f))[0], sf.read(os.path.join(b, f))[0])


def test_missing_packages_are_named_in_one_line(fake_root, tmp_path, capsys):
    os.rename(os.path.join(fake_root, S.KLETTRES), os.path.join(fake_root, "elsewhere"))
    assert common.missing_packages(fake_root, S.PACKAGES, S.PROGRAMS) == ["klettres-data"]
    out = str(tmp_path / "corpus")
    run = subprocess.run([sys.executable, os.path.join("prepare", "speech.py"), out, "--root", fake_root],
                         cwd=ROOT, capture_output=True, text=True)                # the command itself
    assert run.returncode == 1 and run.stderr == ("error: missing Debian packages: klettres-data; "
                                                  "apt-get install klettres-data\n")
    assert not os.path.exists(os.path.join(out, "manifest.csv"))
    run = subprocess.run([sys.executable, os.path.join("prepare", "speech.py"), "packages"],
                         cwd=ROOT, capture_output=True, text=True, check=True)   # what apt-get installs
    assert run.stdout.split() == list(S.PACKAGES)


def test_join_pieces_respects_lengths_and_uses_every_piece():
    import random
    sr = S.SAMPLE_RATE
    pieces = [np.full(sr // 2, 0.1 * (i + 1), np.float32) for i in range(30)]   # 15 s in all
    clips = S.join_pieces(pieces, random.Random(0), low=4.0, high=8.0)
    assert all(len(c) <= 8.5 * sr for c in clips) and all(len(c) >= 4.0 * sr for c in clips[:-1])
    speech = sum(int((np.abs(c) > 0).sum()) for c in clips)
    assert speech == 30 * (sr // 2)                             # every piece once, pauses are zeros
    assert all(abs(np.abs(c).max() - 10 ** (-3 / 20)) < 1e-5 for c in clips)
