"""The FUSS-like sound-event set: its builder (prepare/fuss.py) on a tiny fake package tree,
the committed sample, and the mixtures of surf_mini.fuss_data.

No Debian package is needed: the fake tree holds short tones where the 11 packages keep their
clips (a folder, UFO:AI's .pk3 zip archive, OpenTTD's .cat file).
"""
import csv
import io
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from prepare import common
from prepare import fuss as P
from surf_mini import fuss_data as F
from surf_mini.audio_data import AudioDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}


def _tone(seconds, freq, sr, channels=1, silence=0.0):
    """A tone of ``seconds`` between ``silence`` seconds of zeros: [n, channels] float32."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    pad = np.zeros(int(silence * sr))
    return np.tile(np.concatenate([pad, x, pad])[:, None], (1, channels)).astype("float32")


def _write(path, x, sr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, sr, format=FORMATS[os.path.splitext(path)[1]])


def _wav_bytes(x, sr):
    b = io.BytesIO()
    sf.write(b, x, sr, format="WAV")
    return b.getvalue()


def write_cat(path, entries):
    """OpenTTD's sample.cat: (offset | 1 << 31, size) pairs, then per entry a length byte, the
    NUL-terminated description and the wav bytes."""
    table, body = b"", b""
    for text, wav in entries:
        e = bytes([len(text) + 1]) + text.encode() + b"\0" + wav
        table += struct.pack("<II", (8 * len(entries) + len(body)) | 0x80000000, len(e))
        body += e
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(table + body)


SONIC_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Sonic Pi

Files: *
Copyright: 2016 Samuel Aaron
License: MIT

Files:
 etc/samples/ambi_*
Copyright: 2013 Someone On Freesound
License: CC0

License: MIT
 Permission is hereby granted...
"""


@pytest.fixture
def fake_root(tmp_path):
    """Two clips (1.2 s and 0.6 s, distinct tones, 22.05/44.1 kHz, some stereo) for every rule
    of every ``P.EVENT_SOURCES`` entry, named by replacing the rule's ``*`` with ``t0``/``t1``;
    plus, in wordwarvi's folder, a 12 s clip (3 events), a silent clip and a 0.1 s clip (no
    events) and a byte copy of another clip (dropped as a duplicate); a 25 s background in
    hedgewars' Music (3 pieces); and a DEP-5 copyright for sonic-pi-samples."""
    root = tmp_path / "root"
    freq = iter(range(200, 20000, 37))
    for src in P.EVENT_SOURCES:
        where = str(root / src.path)
        clips = []
        for pattern, _, _ in src.rules:
            for j, seconds in enumerate((1.2, 0.6)):
                name = pattern.replace("*", f"t{j}")
                if os.path.splitext(name)[1] not in FORMATS:
                    name += ".wav"
                sr = 22050 if j else 44100
                clips.append((name, _tone(seconds, next(freq), sr, channels=1 + j), sr))
        if src.path.endswith(".cat"):
            write_cat(where, [(f'"Sound {i}". By Someone. License: Creative Commons '
                               f'{"Zero 1.0" if i % 2 else "Attribution 3.0 Unported"}.', _wav_bytes(x, sr))
                              for i, (_, x, sr) in enumerate(clips)] + [("Unused/Nothing", b"")])
        elif src.path.endswith(".pk3"):
            os.makedirs(os.path.dirname(where), exist_ok=True)
            with zipfile.ZipFile(where, "w") as z:
                for name, x, sr in clips:
                    z.writestr(name, _wav_bytes(x, sr))
                z.writestr("maps/readme.txt", "not audio")
        else:
            for name, x, sr in clips:
                _write(os.path.join(where, name), x, sr)
        if src.marker:                                   # what shows the package is installed
            _write(str(root / src.marker), _tone(0.8, next(freq), 44100), 44100)
    wordwarvi = root / "usr/share/wordwarvi/sounds"
    _write(str(wordwarvi / "long.ogg"), _tone(12.0, 440.0, 44100, silence=0.5), 44100)
    _write(str(wordwarvi / "silent.ogg"), np.zeros((22050, 1), "float32"), 22050)
    _write(str(wordwarvi / "short.ogg"), _tone(0.1, 880.0, 22050), 22050)
    (wordwarvi / "zcopy.ogg").write_bytes((wordwarvi / "t0.ogg").read_bytes())
    _write(str(root / "usr/share/games/hedgewars/Data/Music/long.ogg"), _tone(25.0, 330.0, 22050), 22050)
    doc = root / "usr/share/doc/sonic-pi-samples"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(SONIC_COPYRIGHT)
    return str(root)


def _manifest(folder):
    with open(os.path.join(folder, "manifest.csv"), newline="") as f:
        return list(csv.DictReader(f))


def leaks(rows):
    """Original clips whose events sit in more than one split."""
    splits = {}
    for r in rows:
        splits.setdefault(r["origin"], set()).add(r["split"])
    return {o for o, s in splits.items() if len(s) > 1}


def prepare_fuss(*args):
    """``python prepare/fuss.py ARGS`` as a user runs it, from the repository root."""
    return subprocess.run([sys.executable, os.path.join("prepare", "fuss.py"), *args], cwd=ROOT,
                          capture_output=True, text=True)


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------

def test_builder_makes_trimmed_16k_events_with_classes_and_licences(fake_root, tmp_path):
    out = str(tmp_path / "fuss")
    totals = P.build_fuss(out, root=fake_root, progress=False)
    rows = _manifest(out)
    assert totals["events"] == len(rows) > 40 and list(rows[0]) == P.FUSS_COLUMNS
    by_origin = {}
    for r in rows:
        by_origin.setdefault(r["origin"], []).append(r)
        info = sf.info(os.path.join(out, r["file"]))
        assert info.samplerate == 16000 and info.channels == 1
        seconds = info.frames / info.samplerate
        assert abs(seconds - float(r["seconds"])) < 1e-3
        assert P.MIN_SECONDS <= seconds <= (P.FG_SECONDS if r["kind"] == P.FOREGROUND else P.BG_SECONDS)
        assert r["file"].startswith(f"events/{r['class']}/")
    # the kind and class of every row is the one its source's rules give
    for src in P.EVENT_SOURCES:
        for r in (r for r in rows if r["source"] == src.package):
            name = r["origin"].split(":", 1)[1] if ":" in r["origin"] else os.path.relpath(r["origin"], src.path)
            assert P.classify(src, name) == (r["class"], r["kind"])
    # the 12 s clip (11.9 s after trimming its 0.5 s silences) is 3 events of 4.0 s; the 25 s
    # background 3 pieces of 8.3 s; silent, too short, duplicate and excluded (music) clips: none
    long = by_origin["usr/share/wordwarvi/sounds/long.ogg"]
    assert len(long) == 3 and all(abs(float(r["seconds"]) - 4.0) < 0.01 for r in long)
    assert len(by_origin["usr/share/games/hedgewars/Data/Music/long.ogg"]) == 3
    assert "usr/share/wordwarvi/sounds/t0.ogg" in by_origin                 # the first copy stays
    for gone in ("silent.ogg", "short.ogg", "zcopy.ogg", "t0mono.ogg", "highscoremusic.ogg"):
        assert f"usr/share/wordwarvi/sounds/{gone}" not in by_origin
    # licences: DEP-5 paragraphs (last match wins), the fixed one, OpenSFX's descriptions
    sonic = {r["origin"].rsplit("/", 1)[1]: r for r in rows if r["source"] == "sonic-pi-samples"}
    assert (sonic["ambi_t0.wav"]["licence"], sonic["ambi_t0.wav"]["credit"]) == ("CC0", "2013 Someone On Freesound")
    assert sonic["bd_t0.wav"]["licence"] == "MIT"
    assert {r["licence"] for r in rows if r["source"] == "wesnoth-1.16-data"} == {"GPL-2+"}
    sfx = {r["origin"]: r["licence"] for r in rows if r["source"] == "openttd-opensfx"}
    assert sfx[f"{P.FUSS_PACKAGES['openttd-opensfx']}:00"] == "CC-BY-3.0"
    assert sfx[f"{P.FUSS_PACKAGES['openttd-opensfx']}:01"] == "CC0-1.0"
    assert "hedgewars/voices" in open(os.path.join(out, "SOURCES.md")).read()


def test_splits_are_clip_disjoint(fake_root, tmp_path):
    out = str(tmp_path / "fuss")
    P.build_fuss(out, root=fake_root, progress=False)
    rows = _manifest(out)
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    assert all(r["split"] == P.split_for(r["origin"]) for r in rows)
    assert leaks(rows) == set()
    # the check can fail: move one piece of the long clip to another split
    moved = [dict(r) for r in rows]
    piece = next(r for r in moved if r["origin"].endswith("wordwarvi/sounds/long.ogg"))
    piece["split"] = "test" if piece["split"] != "test" else "train"
    assert leaks(moved) == {"usr/share/wordwarvi/sounds/long.ogg"}


def test_build_is_deterministic_and_capped(fake_root, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    P.build_fuss(a, root=fake_root, max_per_class=2, progress=False)
    P.build_fuss(b, root=fake_root, max_per_class=2, progress=False)
    rows = _manifest(a)
    assert rows == _manifest(b)
    per_class = {}
    for r in rows:
        per_class[r["class"]] = per_class.get(r["class"], 0) + 1
    assert max(per_class.values()) == 2
    f = rows[0]["file"]
    assert np.array_equal(sf.read(os.path.join(a, f))[0], sf.read(os.path.join(b, f))[0])


def test_missing_package_is_named_in_one_line(fake_root, tmp_path):
    os.remove(os.path.join(fake_root, P.FUSS_PACKAGES["ufoai-sound"]))
    assert common.missing_packages(fake_root, P.FUSS_PACKAGES) == ["ufoai-sound"]
    out = str(tmp_path / "fuss")
    run = prepare_fuss(out, "--root", fake_root)
    assert run.returncode == 1
    assert run.stderr == "error: missing Debian packages: ufoai-sound; apt-get install ufoai-sound\n"
    assert not os.path.exists(os.path.join(out, "manifest.csv"))


def test_dep5_last_matching_paragraph_wins():
    paragraphs = common.dep5(SONIC_COPYRIGHT)
    assert common.copyright_of(paragraphs, "etc/samples/ambi_x.flac", "") == ("CC0", "2013 Someone On Freesound")
    assert common.copyright_of(paragraphs, "etc/samples/bd_x.flac", "") == ("MIT", "2016 Samuel Aaron")
    assert common.dep5("This package was debianized by ...\nLicense: GPL") is None
    assert common.copyright_of(None, "x.ogg", "GPL-2+") == ("GPL-2+", "")


# --------------------------------------------------------------------------------------
# The committed sample
# --------------------------------------------------------------------------------------

def test_sample_command_copies_redistributable_events_only(fake_root, tmp_path):
    """``prepare/fuss.py sample`` on a built fake set: only CC0 / CC-BY clips (Sonic Pi's
    ambient samples, OpenSFX), at 8 kHz, one event per clip, splits kept, backgrounds cut to
    4 s, every file credited in SOURCES.md; the same bytes as ``build_fuss_sample`` again."""
    full, out = str(tmp_path / "full"), str(tmp_path / "sample")
    P.build_fuss(full, root=fake_root, progress=False)
    run = prepare_fuss("sample", full, out)
    assert run.returncode == 0 and run.stdout.startswith("wrote "), run.stderr
    rows = _manifest(out)
    assert list(rows[0]) == P.FUSS_COLUMNS and len(rows) == len({r["origin"] for r in rows})
    # the 2 + 2 clips that allow copying (the quotas are larger); every other licence left out
    free = {r["origin"] for r in _manifest(full) if r["licence"].startswith(P.REDISTRIBUTABLE)}
    assert {r["origin"] for r in rows} == free and len(free) == 4
    assert {(r["source"], r["kind"]) for r in rows} == {("sonic-pi-samples", P.BACKGROUND),
                                                        ("openttd-opensfx", P.FOREGROUND)}
    sources = open(os.path.join(out, "SOURCES.md")).read()
    for r in rows:
        assert r["licence"].startswith(P.REDISTRIBUTABLE) and r["split"] == P.split_for(r["origin"])
        info = sf.info(os.path.join(out, r["file"]))
        assert info.samplerate == 8000 and info.channels == 1 and r["file"] in sources
        assert info.frames <= (4.0 if r["kind"] == P.BACKGROUND else P.FG_SECONDS) * 8000
    again = str(tmp_path / "again")
    P.build_fuss_sample(full, again)
    for r in rows:
        assert open(os.path.join(out, r["file"]), "rb").read() == open(os.path.join(again, r["file"]), "rb").read()
    run = prepare_fuss("sample", str(tmp_path / "nothing"), out)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and run.stderr.count("\n") == 1


def test_committed_sample_is_consistent_and_redistributable():
    folder = F.FUSS_SAMPLE_DIR
    rows = _manifest(folder)
    on_disk = {os.path.relpath(os.path.join(r, f), folder).replace(os.sep, "/")
               for r, _, fs in os.walk(folder) for f in fs if f.endswith(".flac")}
    assert on_disk == {r["file"] for r in rows} and len(rows) == len(on_disk)
    assert 20 <= len(rows) <= 40
    assert sum(os.path.getsize(os.path.join(folder, f)) for f in on_disk) < 1_000_000
    sources = open(os.path.join(folder, "SOURCES.md")).read()
    for r in rows:
        info = sf.info(os.path.join(folder, r["file"]))
        assert info.samplerate == 8000 and info.channels == 1
        assert abs(info.frames / 8000 - float(r["seconds"])) < 1e-3
        assert r["licence"].startswith(P.REDISTRIBUTABLE) and r["file"] in sources
    assert leaks(rows) == set()
    for split in ("train", "valid", "test"):
        pool = F.load_events(folder, 8000, split)
        assert len(pool.foreground) >= 3 and len(pool.background) >= 1


# --------------------------------------------------------------------------------------
# The mixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_pool():
    return F.load_events(F.FUSS_SAMPLE_DIR, 8000)


def close_to(props, counts, tol=0.03):
    """Histogram ``props`` within ``tol`` of the proportions ``counts`` in every bin (4000
    draws: binomial sd at most 0.008, so 0.03 is about 4 sd)."""
    return bool((props - torch.tensor(counts, dtype=torch.float64)).abs().max() <= tol)


def _counts(pool, draws, gen, **recipe):
    n = [F.fuss_mixtures(pool, 500, 200, gen, **recipe)[2] for _ in range(draws // 500)]
    return F.count_proportions(torch.cat(n))


def test_source_counts_follow_fuss_proportions(sample_pool, gen):
    props = _counts(sample_pool, 4000, gen)
    assert close_to(props, F.FUSS_COUNTS)
    assert not close_to(props, (0.4, 0.3, 0.2, 0.1))          # the comparison rejects other proportions
    other = _counts(sample_pool, 4000, gen, counts=(0.4, 0.3, 0.2, 0.1), p_background=0.5)
    assert close_to(other, (0.4, 0.3, 0.2, 0.1)) and not close_to(other, F.FUSS_COUNTS)


def test_mixture_is_the_sum_of_references_with_silent_slots(sample_pool, gen):
    m, x, n = F.fuss_mixtures(sample_pool, 64, 8000, gen)
    assert m.shape == (64, 1, 8000) and x.shape == (64, 4, 8000) and n.shape == (64,)
    assert torch.equal(m, x.sum(1, keepdim=True))                           # SURF (1), exactly
    assert torch.equal(F.active_sources(x), n)                              # absent slots exactly zero
    slot = torch.arange(4)[None, :, None]
    assert (x.masked_select(slot >= n[:, None, None]) == 0).all()           # ... and they come last
    assert (x[:, 0] != 0).any(-1).all()                                     # FUSS: a background every time
    broken = x.clone()
    broken[0, 3, 100] += 1e-3
    assert not torch.equal(m, broken.sum(1, keepdim=True))
    assert not torch.equal(F.active_sources(broken), n) or n[0] == 4
    again = F.fuss_mixtures(sample_pool, 64, 8000, torch.Generator().manual_seed(1234))
    assert torch.equal(again[0], m)                                         # seeded: the same batch


def test_levels_and_onsets_on_events_with_known_answers(gen):
    """Constant events (known RMS, known length) against a constant background: each event
    keeps its whole length inside the mixture, at an SNR within [-5, 25] dB."""
    lengths = [300, 500, 700, 900, 1100]
    pool = F.EventPool([[torch.full((L,), 0.5)] for L in lengths], [[torch.full((50,), -0.3)]],
                       [str(L) for L in lengths], ["bg"], 8000)
    m, x, n = F.fuss_mixtures(pool, 200, 2000, gen)
    assert torch.equal(m, x.sum(1, keepdim=True))
    bg = x[:, 0]
    snrs, onsets = [], []
    for b in range(200):
        for k in range(1, int(n[b])):
            on = torch.nonzero(x[b, k]).squeeze(1)
            assert int(on[-1] - on[0] + 1) in lengths and len(on) in lengths      # whole event, no gap
            onsets.append(int(on[0]))
            snrs.append(20 * torch.log10(x[b, k, on].pow(2).mean().sqrt() / bg[b].pow(2).mean().sqrt()))
    snrs = torch.stack(snrs)
    assert snrs.min() >= -5 - 1e-3 and snrs.max() <= 25 + 1e-3 and snrs.max() - snrs.min() > 20
    assert min(onsets) == 0 or min(onsets) < 50 and max(onsets) > 1500          # onsets spread over the clip


def test_bad_recipes_fail_in_one_line(sample_pool, gen):
    with pytest.raises(ValueError, match="counts must be 4 probabilities"):
        F.fuss_mixtures(sample_pool, 2, 100, gen, counts=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"references must be \[B, K, T\]"):
        F.active_sources(torch.zeros(4, 100))
    tiny = F.EventPool([[torch.ones(10)]] * 2, [], ["a", "b"], [], 8000)
    with pytest.raises(AudioDataError, match="no background clips"):
        F.fuss_mixtures(tiny, 2, 100, gen)
    with pytest.raises(AudioDataError, match="need at least 4 foreground clips"):
        F.fuss_mixtures(tiny, 2, 100, gen, p_background=0.0)
    with pytest.raises(AudioDataError, match="no manifest.csv"):
        F.load_events(os.path.dirname(F.FUSS_SAMPLE_DIR))


def test_noisy_speech_mixtures():
    """SURF Table 3's noisy speech: slot 0 speech at -5..15 dB over the background in slot 1,
    the mixture their exact sum, the same generator state giving the same batch."""
    import math
    pool = F.load_events(F.FUSS_SAMPLE_DIR, 8000, "test")
    g = torch.Generator().manual_seed(0)
    speech = {"a": [torch.randn(9000, generator=g)], "b": [0.01 * torch.randn(2000, generator=g)]}
    m, x = F.noisy_speech(speech, pool, 16, 4000, torch.Generator().manual_seed(3))
    assert m.shape == (16, 1, 4000) and x.shape == (16, 2, 4000)
    assert torch.equal(m, x.sum(1, keepdim=True))
    snr = 10 * torch.log10(x[:, 0].pow(2).mean(-1) / x[:, 1].pow(2).mean(-1))
    assert snr.min() >= -5 - 1e-3 and snr.max() <= 15 + 1e-3 and snr.max() - snr.min() > 5
    assert all(math.isclose(float(x[b, 1].pow(2).mean().sqrt()), 10 ** (F.REF_DB / 20), rel_tol=1e-3)
               for b in range(16) if float(m[b].abs().max()) < 1.0)   # the background at the training level
    m2, x2 = F.noisy_speech(speech, pool, 16, 4000, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2)
    with pytest.raises(F.AudioDataError, match="no background"):
        F.noisy_speech(speech, F.EventPool([], [], [], [], 8000), 1, 100, g)
