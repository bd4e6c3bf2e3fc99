"""Audio data: the small speech demo set that ships with the repository, and how it was made.

No speech corpus can be downloaded where this project is built, so the demo set is made from
what installs from Debian (SPEC.md section 10):

  * real recorded voices: ``klettres-data`` (KDE's KLettres: letters and syllables spoken by
    one native speaker per language, OGG, GPL-2+). A "sentence" is a run of 4-9 random
    clips of one speaker with short random pauses, which keeps the speaker's voice and gives
    speech-like syllable rhythm;
  * synthetic voices: ``flite`` (CMU voices awb, rms, slt, kal16) and ``espeak-ng`` (a few
    languages and voice variants) reading sentences drawn from a small word list written here.

Every clip is one speaker, 16 kHz mono, peak-normalized to -3 dBFS after trimming, written as
16-bit FLAC; ``manifest.csv`` lists file, speaker, origin and split. Speakers, not clips,
are split: the ``test`` speakers never occur in ``train``. Mixtures are made on the fly from
these single-speaker clips (the supervised baselines and the evaluation sets need the
references; the unsupervised methods see only the mixtures).

    apt-get install flite espeak-ng klettres-data       # Debian bookworm
    python -m surf_mini.audio_data make-demo surf_mini/assets/demo_speech

The command is deterministic given the same Debian packages (seeded choices).
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SAMPLE_RATE = 16000
KLETTRES = "/usr/share/klettres"
FLITE_VOICES = ("awb", "rms", "slt", "kal16")
ESPEAK_VOICES = ("en+m3", "en-us+f2", "de+m1", "fr+f3", "es+m2", "it+f1")
# Held-out speakers (evaluation only): 3 real voices, 1 flite voice, 1 espeak voice.
TEST_SPEAKERS = {"klettres-it", "klettres-nl", "klettres-ru", "flite-slt", "espeak-fr+f3"}
WORDS = ("the a one two red blue green small large old new quick slow happy quiet little "
         "house river garden window morning evening letter music paper number table city "
         "walks reads sings finds opens carries watches brings keeps follows builds paints "
         "under over near behind across before after with without and but then").split()


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return x
    import torch
    import torchaudio
    return torchaudio.functional.resample(torch.from_numpy(x).float(), sr, SAMPLE_RATE).numpy()


def _finish(x: np.ndarray, seconds: float) -> np.ndarray:
    """Trim leading/trailing near-silence, crop or zero-pad to ``seconds``, peak -3 dBFS."""
    x = np.asarray(x, dtype=np.float32)
    loud = np.nonzero(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9))[0]
    if len(loud):
        x = x[loud[0]:loud[-1] + 1]
    n = int(seconds * SAMPLE_RATE)
    x = x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))
    return (x / (np.abs(x).max() + 1e-9) * 10 ** (-3 / 20)).astype(np.float32)


def _klettres_clip(lang_dir: str, rng: random.Random, seconds: float) -> np.ndarray:
    import soundfile as sf
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(lang_dir) for f in fs if f.endswith(".ogg"))
    pieces = []
    for path in rng.sample(files, min(len(files), rng.randint(4, 9))):
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = _resample(x.mean(1), sr)
        loud = np.nonzero(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9))[0]
        if len(loud):
            pieces.append(x[loud[0]:loud[-1] + 1])
        pieces.append(np.zeros(int(rng.uniform(0.05, 0.15) * SAMPLE_RATE), np.float32))
    return _finish(np.concatenate(pieces), seconds)


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 10))) + "."


def _tts_clip(cmd: list, rng: random.Random, seconds: float) -> np.ndarray:
    import soundfile as sf
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "x.wav")
        text = _sentence(rng)
        full = [a.replace("{wav}", wav).replace("{text}", text) for a in cmd]
        subprocess.run(full, check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return _finish(_resample(x.mean(1), sr), seconds)


def speakers() -> dict:
    """name -> (origin, clip maker) for every speaker the installed packages provide."""
    out = {}
    if os.path.isdir(KLETTRES):
        for lang in sorted(os.listdir(KLETTRES)):
            d = os.path.join(KLETTRES, lang)
            if os.path.isdir(d) and any(f.endswith(".ogg") for _, _, fs in os.walk(d) for f in fs):
                out[f"klettres-{lang}"] = ("klettres-data (GPL-2+)",
                                           lambda rng, s, d=d: _klettres_clip(d, rng, s))
    if shutil.which("flite"):
        for v in FLITE_VOICES:
            out[f"flite-{v}"] = ("flite", lambda rng, s, v=v: _tts_clip(
                ["flite", "-voice", v, "-t", "{text}", "-o", "{wav}"], rng, s))
    if shutil.which("espeak-ng"):
        for v in ESPEAK_VOICES:
            out[f"espeak-{v}"] = ("espeak-ng", lambda rng, s, v=v: _tts_clip(
                ["espeak-ng", "-v", v, "-s", str(rng.randint(140, 180)), "-w", "{wav}", "{text}"], rng, s))
    return out


def make_demo(out_dir: str, clips_per_speaker: int = 4, seconds: float = 2.0, seed: int = 0) -> None:
    """Write the demo set (FLAC clips + manifest.csv) into ``out_dir``."""
    import soundfile as sf
    found = speakers()
    if not found:
        raise SystemExit("error: no voices found; apt-get install flite espeak-ng klettres-data")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for name, (origin, make) in sorted(found.items()):
        rng = random.Random(f"{seed}-{name}")
        split = "test" if name in TEST_SPEAKERS else "train"
        for i in range(clips_per_speaker):
            x = make(rng, seconds)
            fname = f"{name}_{i}.flac"
            tmp = os.path.join(out_dir, f".{fname}.tmp")
            sf.write(tmp, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            os.replace(tmp, os.path.join(out_dir, fname))
            rows.append({"file": fname, "speaker": name, "origin": origin, "split": split})
    with open(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "speaker", "origin", "split"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} clips of {len(found)} speakers to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make-demo":
        raise SystemExit("usage: python -m surf_mini.audio_data make-demo OUT_DIR")
    make_demo(sys.argv[2])
