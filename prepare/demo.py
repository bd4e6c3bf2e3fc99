"""Builds the shipped demo audio: the demo speech set and the README's demo mixture.

    apt-get install $(python prepare/demo.py packages)     # Debian bookworm: flite espeak-ng klettres-data
    python prepare/demo.py speech surf_mini/assets/demo_speech
    python prepare/demo.py mix surf_mini/assets/demo_mix.wav

Subcommands: ``speech OUT_DIR`` (the demo set), ``mix OUT.wav`` (the demo mixture, made from
the demo set's two held-out voices) and ``packages`` (print the Debian packages ``speech``
needs).

No speech corpus can be downloaded where this project is built, so the demo set is made from
what installs from Debian (docs/installing.md):

  * real recorded voices: ``klettres-data`` (KDE's KLettres: letters and syllables spoken by
    one native speaker per language, OGG, GPL-2+). A "sentence" is a run of 4-9 random
    clips of one speaker with short random pauses, which keeps the speaker's voice and gives
    speech-like syllable rhythm;
  * synthetic voices: ``flite`` (CMU voices awb, rms, slt, kal16) and ``espeak-ng`` (a few
    languages and voice variants) reading sentences drawn from a small word list
    (``common.WORDS``).

Every clip is one speaker, 16 kHz mono, peak-normalized to -3 dBFS after trimming, written as
16-bit FLAC; ``manifest.csv`` lists file, speaker, origin and split. Speakers, not clips,
are split: the ``test`` speakers never occur in ``train``. ``surf_mini.audio_data`` reads the
set (``load_clips``, ``DEMO_DIR``) and makes the mixtures on the fly. Both commands are
deterministic given the same Debian packages (seeded choices). The larger speech corpus is
``prepare/speech.py``'s.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prepare.common import WORDS, BuildError, make_out_dir, resample, trim, write_csv, write_flac  # noqa: E402
from surf_mini.audio_data import DEMO_MIX_SPEAKERS, SAMPLE_RATE, demo_mixture_sources  # noqa: E402

KLETTRES = "/usr/share/klettres"
FLITE_VOICES = ("awb", "rms", "slt", "kal16")
ESPEAK_VOICES = ("en+m3", "en-us+f2", "de+m1", "fr+f3", "es+m2", "it+f1")
PACKAGES = ("flite", "espeak-ng", "klettres-data")
# Held-out speakers (evaluation only): 3 real voices, 1 flite voice, 1 espeak voice.
TEST_SPEAKERS = {"klettres-it", "klettres-nl", "klettres-ru", "flite-slt", "espeak-fr+f3"}


def _finish(x: np.ndarray, seconds: float) -> np.ndarray:
    """Trim leading/trailing near-silence, crop or zero-pad to ``seconds``, peak -3 dBFS."""
    x = trim(np.asarray(x, dtype=np.float32))
    n = int(seconds * SAMPLE_RATE)
    x = x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))
    return (x / (np.abs(x).max() + 1e-9) * 10 ** (-3 / 20)).astype(np.float32)


def _klettres_clip(files: list[str], rng: random.Random, seconds: float) -> np.ndarray:
    """4-9 random clips of one speaker (``files``, sorted), trimmed, with short pauses."""
    import soundfile as sf
    pieces = []
    for path in rng.sample(files, min(len(files), rng.randint(4, 9))):
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        pieces.append(trim(resample(x.mean(1), sr)))
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
    return _finish(resample(x.mean(1), sr), seconds)


def speakers() -> dict:
    """name -> (origin, clip maker) for every speaker the installed packages provide."""
    out = {}
    if os.path.isdir(KLETTRES):
        for lang in sorted(os.listdir(KLETTRES)):
            d = os.path.join(KLETTRES, lang)
            files = sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".ogg"))
            if files:
                out[f"klettres-{lang}"] = ("klettres-data (GPL-2+)",
                                           lambda rng, s, files=files: _klettres_clip(files, rng, s))
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
    found = speakers()
    if not found:
        raise BuildError(f"no voices found; apt-get install {' '.join(PACKAGES)}")
    make_out_dir(out_dir)
    rows = []
    for name, (origin, make) in sorted(found.items()):
        rng = random.Random(f"{seed}-{name}")
        split = "test" if name in TEST_SPEAKERS else "train"
        for i in range(clips_per_speaker):
            x = make(rng, seconds)
            fname = f"{name}_{i}.flac"
            write_flac(os.path.join(out_dir, fname), x, SAMPLE_RATE)
            rows.append({"file": fname, "speaker": name, "origin": origin, "split": split})
    write_csv(os.path.join(out_dir, "manifest.csv"), ["file", "speaker", "origin", "split"], rows)
    print(f"wrote {len(rows)} clips of {len(found)} speakers to {out_dir}")


def make_demo_mixture(path: str, speakers: tuple = DEMO_MIX_SPEAKERS, gap: float = 0.15) -> None:
    """Write the README's example input: ``audio_data.demo_mixture_sources`` summed, 16 kHz,
    16-bit wav (the sources stay in the library: ``bench/score_demo_mix.py`` scores against them)."""
    import soundfile as sf
    voices = demo_mixture_sources(speakers, gap)
    make_out_dir(os.path.dirname(path) or ".")
    tmp = path + ".tmp.wav"
    sf.write(tmp, (voices[0] + voices[1]).numpy(), SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)
    print(f"wrote {voices.shape[1] / SAMPLE_RATE:.1f} s of {' + '.join(speakers)} to {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python prepare/demo.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("speech", help="build the demo speech set into OUT_DIR").add_argument("out_dir")
    sub.add_parser("mix", help="write the demo mixture of two held-out demo voices to OUT.wav").add_argument("out")
    sub.add_parser("packages", help="print the Debian packages the demo set needs")
    args = p.parse_args(argv)
    if args.what == "packages":
        print(" ".join(PACKAGES))
        return
    try:
        if args.what == "speech":
            make_demo(args.out_dir)
        else:
            make_demo_mixture(args.out)
    except BuildError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
