"""Builds the offline speech corpus (a larger stand-in for LibriMix) from Debian packages.

    apt-get install $(python prepare/speech.py packages)   # Debian bookworm, about 810 MB installed
    python prepare/speech.py ~/data/speech                  # about 20 minutes on one core

The command takes the output folder, or the word ``packages`` (print the Debian packages the
corpus needs), with ``--root`` (another file-system root to find the packages under; the tests
build from a tiny fake package tree), ``--tts-seconds`` (speech per synthetic voice) and
``--seed``.

No speech corpus can be downloaded where this project is built (docs/speech.md), and the
demo set (``prepare/demo.py``, 200 s of 25 speakers) is far too small to learn a
separator that works on new voices. This script assembles a few hours of single-speaker
speech from what installs from the Debian archive, with speaker-disjoint splits:

  * real recorded voices:
      - the Asterisk telephone prompts: Allison Smith (US English and Mexican Spanish, one
        speaker), June Wallack (Canadian French), Carlo (Italian), Menardi (Italian) and an
        IVR voice (Russian); each about 25 minutes of phrases at 8 kHz, CC-BY-SA-3.0;
      - KLettres: one native speaker per language saying letters and syllables (20
        languages, 0.4-21 minutes each, GPL-2+);
      - two older Asterisk prompt sets in GSM 6.10: July Jimenez (Colombian Spanish, 10
        minutes, GPL-2) and Armelle Desjardins (French, 15 minutes, BSD-style);
      - gcin-voice: Mandarin syllables, one file per syllable from each of two speakers
        (Edward Liu, GPL-3/LGPL-3, 8 minutes; Chu Lo, CC-BY-3.0, 6 minutes);
      - Tux Paint's stamp descriptions: short read sentences ("A penny is a coin ..."), one
        volunteer per language, 5-30 minutes each in 7 languages (GPL-2);
      - KTuberling's spoken words (its stamp names), one volunteer per language, 1-4.5
        minutes each in 10 languages (GPL-2+);
  * synthetic voices reading random sentences: flite (5 CMU voices), espeak-ng (12 voice
    and variant pairs) and festival (12 festvox voices).

Pieces (a prompt file, a syllable, a synthesized sentence) are trimmed of silence, resampled
to 16 kHz and joined, with short random pauses, into clips of 4-8 s of one speaker; every
piece is used once. The test split holds **real recorded voices only**, of speakers used in
no other split (the question issue 10 asks: does it separate voices it has never heard?);
the validation split is real voices too, also unseen, for curves and choices.

The result has the demo set's layout (FLAC clips + ``manifest.csv`` with file, speaker,
origin, split, seconds, licence), so ``train_audio.py --data DIR`` reads it
(``surf_mini.audio_data.load_clips``), plus ``SOURCES.md`` with the make-up (speakers, hours
per split, real share, licences). The build is deterministic given the same packages (seeded
choices). The FUSS-like sound-event set is built the same way by ``prepare/fuss.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prepare.common import (WORDS, BuildError, audio_files, check_packages, make_out_dir,  # noqa: E402
                            read_16k, trim, write_csv, write_flac, write_text)
from surf_mini.audio_data import SAMPLE_RATE  # noqa: E402

ASTERISK = "usr/share/asterisk/sounds"
KLETTRES = "usr/share/klettres"
FESTIVAL_VOICES = "usr/share/festival/voices"

# Asterisk prompt folders -> speaker. Allison Smith recorded both the English and the
# Spanish prompts: one speaker, two folders.
ASTERISK_SPEAKERS = {
    "en_US_f_Allison": ("asterisk-allison", "asterisk-core-sounds-en-wav"),
    "es_MX_f_Allison": ("asterisk-allison", "asterisk-core-sounds-es-wav"),
    "fr_CA_f_June": ("asterisk-june", "asterisk-core-sounds-fr-wav"),
    "it_IT_m_Carlo": ("asterisk-carlo", "asterisk-core-sounds-it-wav"),
    "it_IT_f_Menardi": ("asterisk-menardi", "asterisk-prompt-it-menardi-wav"),
    "ru_RU_f_IvrvoiceRU": ("asterisk-ivrvoice", "asterisk-core-sounds-ru-wav"),
}
# Older prompt sets in GSM 6.10 (8 kHz), in the language folders of Asterisk's pre-1.4 layout:
# speaker -> (package, folders under ASTERISK). Every file there is that one speaker's.
ASTERISK_GSM_SPEAKERS = {
    "asterisk-july": ("asterisk-prompt-es-co", ("es",)),
    "asterisk-armelle": ("asterisk-prompt-fr-armelle",
                         ("fr", "dictate/fr", "digits/fr", "letters/fr", "phonetic/fr")),
}
# gcin-voice: one folder per Mandarin syllable, one file in it per speaker (44.1 kHz Ogg).
GCIN = "usr/share/gcin-voice/ogg"
GCIN_SPEAKERS = {"3.ogg": "gcin-liu", "5.ogg": "gcin-lo"}
# Tux Paint's spoken stamp descriptions (``<stamp>_desc_<lang>.ogg``, 44.1 kHz). One speaker per
# language: each language's median pitch over 40 files has a narrow spread (e.g. bg 110-133 Hz,
# es 235-276 Hz, 10th-90th percentile), so one volunteer read it. Left out: fr, ru and nl, the
# languages of the validation and test speakers (a translator may have recorded both Tux Paint
# and KLettres, and a voice heard in training must not be in the test), and lt, ml (< 1 minute).
TUXPAINT = "usr/share/tuxpaint/stamps"
TUXPAINT_LANGUAGES = ("be", "bg", "ca", "da", "el", "es", "ro")
# KTuberling's spoken words (``sounds/<lang>/<word>.ogg``), one folder per language. Left out as
# above: the validation and test speakers' languages (fr, ru, de, it, nl; KTuberling and KLettres
# are both KDE-edu, the likeliest place for one voice in both) and the ones under a minute.
# Nynorsk (nn) ships Ogg Opus, the others Ogg Vorbis.
KTUBERLING = "usr/share/ktuberling/sounds"
KTUBERLING_LANGUAGES = ("ca", "da", "el", "en", "gl", "lt", "nn", "sl", "uk", "wa")
FLITE_VOICES = ("awb", "rms", "slt", "kal16", "kal")
ESPEAK_VOICES = ("en+m3", "en+f2", "en-us+m1", "en-us+f4", "en+Alex", "en+Andrea", "de+m1",
                 "fr+f3", "es+m2", "it+f1", "pt+m4", "nl+f5")
# festvox voice folder -> festival voice command. The Indic NSK voices crash festival 2.5
# on English text, so they are not used.
FESTIVAL = {"kal_diphone": "voice_kal_diphone", "ked_diphone": "voice_ked_diphone",
            "cmu_us_slt_arctic_hts": "voice_cmu_us_slt_arctic_hts", "lp_diphone": "voice_lp_diphone",
            "pc_diphone": "voice_pc_diphone", "msu_ru_nsh_clunits": "voice_msu_ru_nsh_clunits",
            "suo_fi_lj_diphone": "voice_suo_fi_lj_diphone", "hy_fi_mv_diphone": "voice_hy_fi_mv_diphone",
            "czech_dita": "voice_czech_dita", "czech_machac": "voice_czech_machac",
            "czech_ph": "voice_czech_ph", "upc_ca_ona_hts": "voice_upc_ca_ona_hts"}

# Debian package -> what shows it is installed: a folder under --root, or a program on PATH.
PACKAGES = {
    "klettres-data": KLETTRES,
    **{pkg: f"{ASTERISK}/{folder}" for folder, (_, pkg) in ASTERISK_SPEAKERS.items()},
    "asterisk-prompt-es-co": f"{ASTERISK}/es/digits",
    "asterisk-prompt-fr-armelle": f"{ASTERISK}/letters/fr",
    "gcin-voice": GCIN,
    "tuxpaint-stamps-default": TUXPAINT,
    "ktuberling-data": KTUBERLING,
    "flite": "flite", "espeak-ng": "espeak-ng", "festival": "festival",
    "festvox-kallpc16k": f"{FESTIVAL_VOICES}/english/kal_diphone",
    "festvox-kdlpc16k": f"{FESTIVAL_VOICES}/english/ked_diphone",
    "festvox-us-slt-hts": f"{FESTIVAL_VOICES}/us/cmu_us_slt_arctic_hts",
    "festvox-italp16k": f"{FESTIVAL_VOICES}/italian/lp_diphone",
    "festvox-itapc16k": f"{FESTIVAL_VOICES}/italian/pc_diphone",
    "festvox-ru": f"{FESTIVAL_VOICES}/russian/msu_ru_nsh_clunits",
    "festvox-suopuhe-lj": f"{FESTIVAL_VOICES}/finnish/suo_fi_lj_diphone",
    "festvox-suopuhe-mv": f"{FESTIVAL_VOICES}/finnish/hy_fi_mv_diphone",
    "festvox-czech-dita": f"{FESTIVAL_VOICES}/czech/czech_dita",
    "festvox-czech-machac": f"{FESTIVAL_VOICES}/czech/czech_machac",
    "festvox-czech-ph": f"{FESTIVAL_VOICES}/czech/czech_ph",
    "festvox-ca-ona-hts": f"{FESTIVAL_VOICES}/catalan/upc_ca_ona_hts",
}
PROGRAMS = ("flite", "espeak-ng", "festival")

# Speaker-disjoint splits. Test and validation: real recorded voices only, a phrase speaker
# (Asterisk) and syllable speakers (KLettres) in each; everyone else trains.
TEST_SPEAKERS = ("asterisk-carlo", "asterisk-ivrvoice", "klettres-it", "klettres-nl", "klettres-ru")
VALID_SPEAKERS = ("asterisk-june", "klettres-de", "klettres-hu", "klettres-cs")
LICENCES = {"asterisk": "CC-BY-SA-3.0", "klettres": "GPL-2+", "tuxpaint": "GPL-2", "ktuberling": "GPL-2+",
            "flite": "BSD-style (CMU)", "espeak": "GPL-3+", "festival": "festvox voice licences (free, see /usr/share/doc)"}
# Speakers whose licence is not their family's (from each package's debian/copyright).
SPEAKER_LICENCES = {"asterisk-july": "GPL-2", "asterisk-armelle": "BSD-style (Michel Gutierrez 2006)",
                    "gcin-liu": "GPL-3 or LGPL-3", "gcin-lo": "CC-BY-3.0"}
MORE_WORDS = ("people water children family evening friend school winter summer animal yellow "
              "orange purple silver golden bright dark warm cold early late always never often "
              "today tomorrow yesterday ticket station market doctor teacher kitchen bottle "
              "picture mountain island forest ocean bridge street corner middle").split()
COLUMNS = ["file", "speaker", "origin", "split", "seconds", "licence"]


@dataclass
class Speaker:
    name: str
    origin: str                     # "real" or "synthetic"
    source: str                     # package family, the key of LICENCES
    pieces: Callable[[random.Random], list]   # -> trimmed 16 kHz pieces [n] (numpy)


def _recorded(folders: list[str], ext: str | tuple, name: str | None = None,
              unique: bool = False) -> Callable[[random.Random], list]:
    """Pieces of one recorded speaker, in a seeded order. ``unique``: keep one file of each
    content (Tux Paint ships one description under several stamps' names)."""
    def pieces(rng):
        files = [f for d in folders for f in audio_files(d, ext, skip=("silence",), name=name)]
        if unique:
            first: dict = {}
            for f in files:                                  # sorted: the first name of each content
                first.setdefault(_digest(f), f)
            files = list(first.values())
        rng.shuffle(files)
        return [p for p in (trim(read_16k(f)) for f in files) if len(p) > 0.1 * SAMPLE_RATE]
    return pieces


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def sentence(rng: random.Random) -> str:
    """6-14 random words: the text every synthetic voice reads (no quotes, no digits)."""
    words = WORDS + MORE_WORDS
    return " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) + "."


def _tts(run_batch: Callable[[list, str], list[str]], seconds: float) -> Callable[[random.Random], list]:
    """Pieces of a synthetic voice: sentences until about ``seconds`` of speech.
    ``run_batch(texts, tmpdir)`` synthesizes them and returns one wav path per text."""
    def pieces(rng):
        texts = [sentence(rng) for _ in range(max(1, int(seconds / 3.0)))]   # ~3 s a sentence
        with tempfile.TemporaryDirectory() as tmp:
            paths = run_batch(texts, tmp)
            out = [trim(read_16k(p)) for p in paths if os.path.isfile(p)]
        return [p for p in out if len(p) > 0.1 * SAMPLE_RATE]
    return pieces


def _flite(voice: str):
    def run(texts, tmp):
        paths = []
        for i, t in enumerate(texts):
            paths.append(os.path.join(tmp, f"{i}.wav"))
            subprocess.run(["flite", "-voice", voice, "-t", t, "-o", paths[-1]], check=True, capture_output=True)
        return paths
    return run


def _espeak(voice: str, rng_speed: random.Random):
    def run(texts, tmp):
        paths = []
        for i, t in enumerate(texts):
            paths.append(os.path.join(tmp, f"{i}.wav"))
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng_speed.randint(140, 180)),
                            "-w", paths[-1], t], check=True, capture_output=True)
        return paths
    return run


def _festival(command: str):
    """One festival process per voice (its start-up costs seconds): a Scheme script that
    synthesizes every sentence and saves each as a RIFF wav."""
    def run(texts, tmp):
        paths = [os.path.join(tmp, f"{i}.wav") for i in range(len(texts))]
        script = os.path.join(tmp, "say.scm")
        with open(script, "w") as f:
            f.write(f"({command})\n")
            for t, p in zip(texts, paths):
                f.write(f'(utt.save.wave (utt.synth (Utterance Text "{t}")) "{p}" \'riff)\n')
        subprocess.run(["festival", "-b", script], check=False, capture_output=True, timeout=3600)
        return paths
    return run


def speakers(root: str = "/", tts_seconds: float = 120.0) -> list[Speaker]:
    """Every speaker the installed packages provide, in a fixed order."""
    out: dict[str, Speaker] = {}
    folders: dict[str, list] = {}
    for folder, (name, _) in ASTERISK_SPEAKERS.items():
        d = os.path.join(root, ASTERISK, folder)
        if os.path.isdir(d):
            folders.setdefault(name, []).append(d)
    for name, ds in folders.items():
        out[name] = Speaker(name, "real", "asterisk", _recorded(ds, ".wav"))
    for name, (_, subs) in ASTERISK_GSM_SPEAKERS.items():
        ds = [os.path.join(root, ASTERISK, d) for d in subs if os.path.isdir(os.path.join(root, ASTERISK, d))]
        if ds:
            out[name] = Speaker(name, "real", "asterisk", _recorded(ds, ".gsm"))
    if os.path.isdir(os.path.join(root, GCIN)):
        for file, name in GCIN_SPEAKERS.items():
            out[name] = Speaker(name, "real", "gcin", _recorded([os.path.join(root, GCIN)], ".ogg", name=file))
    for lang in TUXPAINT_LANGUAGES if os.path.isdir(os.path.join(root, TUXPAINT)) else ():
        out[f"tuxpaint-{lang}"] = Speaker(f"tuxpaint-{lang}", "real", "tuxpaint",
                                          _recorded([os.path.join(root, TUXPAINT)], f"_desc_{lang}.ogg",
                                                    unique=True))
    for lang in KTUBERLING_LANGUAGES:
        if os.path.isdir(os.path.join(root, KTUBERLING, lang)):
            out[f"ktuberling-{lang}"] = Speaker(f"ktuberling-{lang}", "real", "ktuberling",
                                                _recorded([os.path.join(root, KTUBERLING, lang)],
                                                          (".ogg", ".opus"), unique=True))
    kl = os.path.join(root, KLETTRES)
    for lang in sorted(os.listdir(kl)) if os.path.isdir(kl) else []:
        if audio_files(os.path.join(kl, lang), ".ogg"):
            out[f"klettres-{lang}"] = Speaker(f"klettres-{lang}", "real", "klettres",
                                              _recorded([os.path.join(kl, lang)], ".ogg"))
    if shutil.which("flite"):
        for v in FLITE_VOICES:
            out[f"flite-{v}"] = Speaker(f"flite-{v}", "synthetic", "flite", _tts(_flite(v), tts_seconds))
    if shutil.which("espeak-ng"):
        for v in ESPEAK_VOICES:
            out[f"espeak-{v}"] = Speaker(f"espeak-{v}", "synthetic", "espeak",
                                         _tts(_espeak(v, random.Random(v)), tts_seconds))
    if shutil.which("festival"):
        for lang in sorted(os.listdir(os.path.join(root, FESTIVAL_VOICES))) \
                if os.path.isdir(os.path.join(root, FESTIVAL_VOICES)) else []:
            for v in sorted(os.listdir(os.path.join(root, FESTIVAL_VOICES, lang))):
                if v in FESTIVAL:
                    out[f"festival-{v}"] = Speaker(f"festival-{v}", "synthetic", "festival",
                                                   _tts(_festival(FESTIVAL[v]), tts_seconds))
    return list(out.values())


def split_of(name: str) -> str:
    return "test" if name in TEST_SPEAKERS else "valid" if name in VALID_SPEAKERS else "train"


def join_pieces(pieces: list, rng: random.Random, low: float = 4.0, high: float = 8.0) -> list:
    """Clips of one speaker: consecutive pieces joined with 0.1-0.3 s pauses until each clip
    reaches a random length in [low, high] s (the last one may be shorter); peak -3 dBFS."""
    clips, cur, target = [], [], rng.uniform(low, high) * SAMPLE_RATE
    for p in pieces:
        cur += [p, np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), np.float32)]
        if sum(map(len, cur)) >= target:
            clips.append(np.concatenate(cur[:-1]))
            cur, target = [], rng.uniform(low, high) * SAMPLE_RATE
    if cur:
        clips.append(np.concatenate(cur[:-1]))
    return [(c / (np.abs(c).max() + 1e-9) * 10 ** (-3 / 20)).astype(np.float32) for c in clips]


def write_speaker(out_dir: str, spk: Speaker, seed: int = 0) -> list[dict]:
    """One speaker's clips as FLAC under ``out_dir/<name>/``; their manifest rows. Its draws are
    seeded by (seed, name) alone, so a speaker's clips do not depend on who else is built."""
    rng = random.Random(f"{seed}-{spk.name}")
    rows = []
    os.makedirs(os.path.join(out_dir, spk.name), exist_ok=True)
    for i, x in enumerate(join_pieces(spk.pieces(rng), rng)):
        rel = os.path.join(spk.name, f"{i:04d}.flac")
        write_flac(os.path.join(out_dir, rel), x, SAMPLE_RATE)
        rows.append({"file": rel, "speaker": spk.name, "origin": spk.origin,
                     "split": split_of(spk.name), "seconds": f"{len(x) / SAMPLE_RATE:.2f}",
                     "licence": SPEAKER_LICENCES.get(spk.name) or LICENCES[spk.source]})
    return rows


def build_speech(out_dir: str, root: str = "/", tts_seconds: float = 120.0, seed: int = 0,
                 progress: bool = True) -> dict:
    """Write the corpus (FLAC clips, manifest.csv, SOURCES.md) into ``out_dir``; return totals."""
    from tqdm import tqdm
    check_packages(root, PACKAGES, PROGRAMS)
    make_out_dir(out_dir)
    rows = []
    for spk in tqdm(speakers(root, tts_seconds), desc="speakers", disable=not progress):
        rows += write_speaker(out_dir, spk, seed)
    totals = summary(rows)
    write_csv(os.path.join(out_dir, "manifest.csv"), COLUMNS, rows)    # after the clips: a corpus is whole or absent
    write_text(os.path.join(out_dir, "SOURCES.md"), sources_markdown(rows, totals))
    return totals


def summary(rows: list[dict]) -> dict:
    """Hours and speakers per split and origin."""
    t: dict = {"hours": 0.0, "speakers": len({r["speaker"] for r in rows}), "clips": len(rows)}
    for r in rows:
        h = float(r["seconds"]) / 3600
        t["hours"] += h
        for key in (r["split"], r["origin"]):
            t.setdefault(key, {"hours": 0.0, "speakers": set()})
            t[key]["hours"] += h
            t[key]["speakers"].add(r["speaker"])
    for key, v in t.items():
        if isinstance(v, dict):
            v["speakers"] = len(v["speakers"])
    return t


def sources_markdown(rows: list[dict], totals: dict) -> str:
    per: dict = {}
    for r in rows:
        p = per.setdefault(r["speaker"], {"split": r["split"], "origin": r["origin"],
                                          "licence": r["licence"], "seconds": 0.0, "clips": 0})
        p["seconds"] += float(r["seconds"])
        p["clips"] += 1
    lines = ["# Speech corpus built by `python prepare/speech.py`", "",
             f"{totals['hours']:.2f} hours, {totals['speakers']} speakers, {totals['clips']} clips; "
             f"real recorded: {totals.get('real', {}).get('hours', 0):.2f} h "
             f"({totals.get('real', {}).get('speakers', 0)} speakers).", "",
             "| speaker | split | origin | minutes | clips | licence |", "|---|---|---|---|---|---|"]
    for name, p in sorted(per.items(), key=lambda kv: (kv[1]["split"], kv[0])):
        lines.append(f"| {name} | {p['split']} | {p['origin']} | {p['seconds'] / 60:.1f} | {p['clips']} | "
                     f"{p['licence']} |")
    return "\n".join(lines) + "\n"



def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python prepare/speech.py", description=__doc__.split("\n")[0])
    p.add_argument("dir", help="the output folder; or the word 'packages': print the Debian packages it needs")
    p.add_argument("--root", default="/", help="file-system root to find the packages under")
    p.add_argument("--tts-seconds", type=float, default=120.0, help="speech per synthetic voice")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.dir == "packages":
        print(" ".join(PACKAGES))
        return
    try:
        t = build_speech(args.dir, args.root, args.tts_seconds, args.seed)
    except BuildError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {t['clips']} clips, {t['hours']:.2f} h of {t['speakers']} speakers to {args.dir} "
          f"(real: {t.get('real', {}).get('hours', 0):.2f} h of {t.get('real', {}).get('speakers', 0)} speakers; "
          + ", ".join(f"{k} {t[k]['hours']:.2f} h / {t[k]['speakers']} spk" for k in ("train", "valid", "test") if k in t)
          + ")")


if __name__ == "__main__":
    main(sys.argv[1:])
