"""Offline corpora built from Debian packages: the speech corpus (a larger stand-in for LibriMix)
and the FUSS-like sound-event set (a stand-in for FUSS, SURF Table 3).

No speech corpus can be downloaded where this project is built (docs/speech.md), and the
demo set (``audio_data.make_demo``, 200 s of 25 speakers) is far too small to learn a
separator that works on new voices. This module assembles a few hours of single-speaker
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

    apt-get install $(python -m surf_mini.corpus packages)
    python -m surf_mini.corpus speech ~/data/speech     # about 10 minutes on one core

The result has the demo set's layout (FLAC clips + ``manifest.csv`` with file, speaker,
origin, split, seconds, licence), so ``train_audio.py --data DIR`` reads it, plus
``SOURCES.md`` with the make-up (speakers, hours per split, real share, licences). The
build is deterministic given the same packages (seeded choices). ``--root`` points at
another file-system root (the tests build from a tiny fake package tree).

The sound-event set (``fuss``; docs/fuss.md) does for FUSS what the speech corpus does for
LibriMix. FUSS's events are Freesound clips of any kind; here they are the sound effects,
samples and voices of 11 Debian packages (games' sound effects, Sonic Pi's samples, Tux
Paint's animal sounds and spoken descriptions, desktop alert sounds), each clip mixed to
mono, resampled to 16 kHz, trimmed, cut into events of at most 5 s (backgrounds 10 s) and
stored with its licence and credit from the package's ``debian/copyright``:

    apt-get install $(python -m surf_mini.corpus fuss-packages)
    python -m surf_mini.corpus fuss ~/data/fuss                     # events/, manifest.csv, SOURCES.md
    python -m surf_mini.corpus fuss-sample ~/data/fuss surf_mini/assets/fuss_sample

Splits are clip-disjoint: a hash of the original file's path picks its split, so every piece
of one file lands in the same one. ``surf_mini.fuss_data`` makes the mixtures.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from surf_mini.audio_data import SAMPLE_RATE, WORDS, _resample, _trim, read_audio

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


class CorpusError(RuntimeError):
    """Missing packages or an unusable output folder; the message says what to do."""


@dataclass
class Speaker:
    name: str
    origin: str                     # "real" or "synthetic"
    source: str                     # package family, the key of LICENCES
    pieces: Callable[[random.Random], list]   # -> trimmed 16 kHz pieces [n] (numpy)


def missing_packages(root: str = "/", packages: dict | None = None) -> list[str]:
    """Debian packages of ``packages`` (default: the speech corpus's ``PACKAGES``) that are not
    installed, checked by a path under ``root`` (folder or file) or a program on PATH."""
    def present(what: str) -> bool:
        return shutil.which(what) is not None if what in PROGRAMS else os.path.exists(os.path.join(root, what))
    return [pkg for pkg, what in (PACKAGES if packages is None else packages).items() if not present(what)]


def _read(path: str) -> np.ndarray:
    """Mono float32 at 16 kHz (``audio_data.read_audio``); a few packaged files are empty."""
    return read_audio(path, SAMPLE_RATE).numpy()


def _files(folder: str, ext: str | tuple, skip: tuple = (), name: str | None = None) -> list[str]:
    """Files under ``folder`` ending in ``ext`` (one or a tuple; or named exactly ``name``),
    outside ``skip`` folders."""
    return sorted(os.path.join(r, f) for r, ds, fs in os.walk(folder) for f in fs
                  if (f == name if name else f.endswith(ext)) and not any(s in r.split(os.sep) for s in skip))


def _recorded(folders: list[str], ext: str | tuple, name: str | None = None,
              unique: bool = False) -> Callable[[random.Random], list]:
    """Pieces of one recorded speaker, in a seeded order. ``unique``: keep one file of each
    content (Tux Paint ships one description under several stamps' names)."""
    def pieces(rng):
        files = [f for d in folders for f in _files(d, ext, skip=("silence",), name=name)]
        if unique:
            first: dict = {}
            for f in files:                                  # sorted: the first name of each content
                first.setdefault(_digest(f), f)
            files = list(first.values())
        rng.shuffle(files)
        return [p for p in (_trim(_read(f)) for f in files) if len(p) > 0.1 * SAMPLE_RATE]
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
            out = [_trim(_read(p)) for p in paths if os.path.isfile(p)]
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
        if _files(os.path.join(kl, lang), ".ogg"):
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
    import soundfile as sf
    rng = random.Random(f"{seed}-{spk.name}")
    rows = []
    os.makedirs(os.path.join(out_dir, spk.name), exist_ok=True)
    for i, x in enumerate(join_pieces(spk.pieces(rng), rng)):
        rel = os.path.join(spk.name, f"{i:04d}.flac")
        tmp = os.path.join(out_dir, spk.name, f".{i:04d}.tmp.flac")
        sf.write(tmp, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, os.path.join(out_dir, rel))
        rows.append({"file": rel, "speaker": spk.name, "origin": spk.origin,
                     "split": split_of(spk.name), "seconds": f"{len(x) / SAMPLE_RATE:.2f}",
                     "licence": SPEAKER_LICENCES.get(spk.name) or LICENCES[spk.source]})
    return rows


def build_speech(out_dir: str, root: str = "/", tts_seconds: float = 120.0, seed: int = 0,
                 progress: bool = True) -> dict:
    """Write the corpus (FLAC clips, manifest.csv, SOURCES.md) into ``out_dir``; return totals."""
    from tqdm import tqdm
    missing = missing_packages(root)
    if missing:
        raise CorpusError(f"missing Debian packages: {' '.join(missing)}; "
                          f"apt-get install {' '.join(missing)}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    rows = []
    for spk in tqdm(speakers(root, tts_seconds), desc="speakers", disable=not progress):
        rows += write_speaker(out_dir, spk, seed)
    totals = summary(rows)
    tmp = os.path.join(out_dir, ".manifest.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "speaker", "origin", "split", "seconds", "licence"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, os.path.join(out_dir, "manifest.csv"))          # last: a corpus is whole or absent
    with open(os.path.join(out_dir, "SOURCES.md"), "w") as f:
        f.write(sources_markdown(rows, totals))
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
    lines = ["# Speech corpus built by `python -m surf_mini.corpus speech`", "",
             f"{totals['hours']:.2f} hours, {totals['speakers']} speakers, {totals['clips']} clips; "
             f"real recorded: {totals.get('real', {}).get('hours', 0):.2f} h "
             f"({totals.get('real', {}).get('speakers', 0)} speakers).", "",
             "| speaker | split | origin | minutes | clips | licence |", "|---|---|---|---|---|---|"]
    for name, p in sorted(per.items(), key=lambda kv: (kv[1]["split"], kv[0])):
        lines.append(f"| {name} | {p['split']} | {p['origin']} | {p['seconds'] / 60:.1f} | {p['clips']} | "
                     f"{p['licence']} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The FUSS-like sound-event set
# --------------------------------------------------------------------------------------

FOREGROUND, BACKGROUND = "foreground", "background"
FG_SECONDS, BG_SECONDS, MIN_SECONDS = 5.0, 10.0, 0.25   # longest event / background piece; shortest kept
QUIET_DB = 30.0            # a piece of a long clip this far below the clip's peak is a tail, not an event
MAX_PER_CLASS = 200        # events per class, so that no class (voices, music) swamps the others
FUSS_COLUMNS = ["file", "source", "class", "kind", "split", "seconds", "licence", "origin", "credit"]
AUDIO_EXT = (".wav", ".ogg", ".oga", ".flac")
# Licences under which a clip may be copied into the repository (the committed sample): they
# ask for attribution at most, which the sample's SOURCES.md gives.
REDISTRIBUTABLE = ("CC0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "public-domain")


@dataclass(frozen=True)
class EventSource:
    """One package's clips. ``rules``: (glob on a clip's path under ``path``, class, kind); the
    first matching rule wins, and a clip that matches none, or a rule whose kind is None, is
    not used."""
    package: str
    path: str                        # under --root: a folder, a .pk3 (zip) archive, or OpenTTD's .cat
    rules: tuple
    upstream: str = ""               # ``path`` as the Files: patterns of debian/copyright spell it
    licence: str = ""                # for a debian/copyright that is not machine-readable
    marker: str = ""                 # what shows the package is installed, if not ``path``


EVENT_SOURCES = (
    EventSource("sonic-pi-samples", "usr/share/sonic-pi/samples", upstream="etc/samples", rules=(
        ("ambi_*", "sonic-pi/ambient", BACKGROUND), ("loop_*", "sonic-pi/loops", BACKGROUND),
        ("bd_*", "sonic-pi/percussion", FOREGROUND), ("sn_*", "sonic-pi/percussion", FOREGROUND),
        ("drum_*", "sonic-pi/percussion", FOREGROUND), ("perc_*", "sonic-pi/percussion", FOREGROUND),
        ("tabla_*", "sonic-pi/percussion", FOREGROUND), ("bass_*", "sonic-pi/instruments", FOREGROUND),
        ("guit_*", "sonic-pi/instruments", FOREGROUND), ("misc_*", "sonic-pi/misc", FOREGROUND),
        ("vinyl_*", "sonic-pi/misc", FOREGROUND), ("*.flac", "sonic-pi/electronic", FOREGROUND))),
    # OpenSFX: real recordings from Freesound (vehicles, animals, machines, crowds); each
    # entry of the .cat names its author and licence.
    EventSource("openttd-opensfx", "usr/share/games/openttd/baseset/opensfx/opensfx.cat",
                rules=(("*", "opensfx/effects", FOREGROUND),)),
    EventSource("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps", upstream="stamps", rules=(
        ("*_desc*.ogg", "tuxpaint/speech", FOREGROUND),            # spoken descriptions, 13 languages
        ("symbols/*.ogg", "tuxpaint/speech", FOREGROUND),          # spoken letters and numbers
        ("animals/*.ogg", "tuxpaint/animals", FOREGROUND), ("*.ogg", "tuxpaint/objects", FOREGROUND))),
    EventSource("hedgewars-data", "usr/share/games/hedgewars/Data", upstream="share/hedgewars/Data", rules=(
        ("Sounds/voices/*", "hedgewars/voices", FOREGROUND), ("Sounds/*", "hedgewars/effects", FOREGROUND),
        ("Music/*", "hedgewars/music", BACKGROUND))),
    EventSource("ufoai-sound", "usr/share/games/ufoai/base/0snd.pk3", upstream="base", rules=(
        ("sound/ambience/*", "ufoai/ambience", BACKGROUND), ("sound/weapons/*", "ufoai/weapons", FOREGROUND),
        ("sound/footsteps/*", "ufoai/footsteps", FOREGROUND), ("sound/aliens/*", "ufoai/creatures", FOREGROUND),
        ("sound/soldiers/*", "ufoai/creatures", FOREGROUND), ("sound/civilians/*", "ufoai/creatures", FOREGROUND),
        ("sound/*", "ufoai/misc", FOREGROUND))),
    EventSource("wesnoth-1.16-data", "usr/share/games/wesnoth/1.16", licence="GPL-2+", rules=(
        ("data/core/sounds/ambient/*", "wesnoth/ambient", BACKGROUND),
        ("data/core/sounds/horn-signals/*", "wesnoth/horns", FOREGROUND),
        ("data/core/sounds/*", "wesnoth/battle", FOREGROUND), ("sounds/*", "wesnoth/interface", FOREGROUND))),
    EventSource("minetest-data", "usr/share/games/minetest/games/minetest_game/mods", upstream="mtg/mods", rules=(
        ("env_sounds/sounds/*", "minetest/ambient", BACKGROUND), ("*/sounds/*", "minetest/effects", FOREGROUND))),
    EventSource("wordwarvi-sound", "usr/share/wordwarvi/sounds", upstream="sounds", rules=(
        ("*mono*", None, None), ("highscoremusic.ogg", None, None), ("destiny_facedown.ogg", None, None),  # music
        ("*.ogg", "wordwarvi/effects", FOREGROUND))),
    EventSource("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", upstream="stereo",
                rules=(("*.oga", "desktop/alerts", FOREGROUND),)),
    EventSource("oxygen-sounds", "usr/share/sounds", marker="usr/share/sounds/Oxygen-Sys-Warning.ogg",
                rules=(("Oxygen-*.ogg", "desktop/alerts", FOREGROUND),)),
    EventSource("sound-icons", "usr/share/sounds/sound-icons", rules=(("*.wav", "desktop/sound-icons", FOREGROUND),)),
)
FUSS_PACKAGES = {s.package: s.marker or s.path for s in EVENT_SOURCES}


@dataclass
class Clip:
    origin: str                      # path under --root; an archive member after ':'
    name: str                        # path under its source's ``path`` (what the rules match)
    data: Callable[[], bytes]        # the audio file's bytes
    licence: str
    credit: str


def classify(src: EventSource, name: str) -> tuple:
    """(class, kind) of a clip by the first rule whose glob matches its name; (None, None) if unused."""
    for pattern, cls, kind in src.rules:
        if fnmatch.fnmatchcase(name, pattern):
            return cls, kind
    return None, None


def dep5(text: str) -> list[tuple] | None:
    """The Files paragraphs of a machine-readable debian/copyright, in order: (patterns,
    licence, copyright). None if the text is not in that format (it has no Format: field)."""
    if not re.match(r"\s*Format:", text):
        return None
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields:
            out.append((fields["files"].split(), fields.get("license", "").split("\n")[0].strip(),
                        " ".join(fields.get("copyright", "").split())))
    return out


def copyright_of(paragraphs: list[tuple] | None, path: str, fallback: str) -> tuple[str, str]:
    """(licence, copyright holders) of ``path`` (as debian/copyright spells it): the last
    Files paragraph with a matching pattern wins (the DEP-5 rule; ``*`` also matches ``/``)."""
    found = (fallback or "unknown", "")
    for patterns, licence, holders in paragraphs or []:
        if any(fnmatch.fnmatchcase(path, p) for p in patterns):
            found = (licence or found[0], holders)
    return found


def opensfx_entries(data: bytes) -> list[tuple[str, bytes]]:
    """(description, RIFF wav bytes) of each sound in OpenTTD's sample.cat format: a table of
    (offset, size) little-endian uint32 pairs (bit 31 of the offsets flags the new format),
    each entry a length-prefixed description followed by the wav file."""
    if len(data) < 8:
        raise CorpusError("opensfx.cat: not an OpenTTD sound file (too short)")
    n = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(n):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        nl = data[off]
        out.append((data[off + 1:off + 1 + nl].rstrip(b"\0").decode("utf-8", "replace"),
                    data[off + 1 + nl:off + size]))
    return out


def opensfx_licence(description: str) -> str:
    """The licence an OpenSFX description names ("License: Creative Commons Zero 1.0.")."""
    text = description.split("License:")[-1]
    for words, spdx in (("Zero", "CC0-1.0"), ("Attribution-ShareAlike 3.0", "CC-BY-SA-3.0"),
                        ("Attribution 3.0", "CC-BY-3.0")):
        if words in text:
            return spdx
    return "CC-BY-SA-3.0"              # the collection's licence (debian/copyright, src/wav/*)


def _file_bytes(path: str) -> Callable[[], bytes]:
    def read():
        with open(path, "rb") as f:
            return f.read()
    return read


def _zip_member(archive: str, member: str) -> Callable[[], bytes]:
    def read():
        import zipfile
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    return read


def source_clips(src: EventSource, root: str) -> list[Clip]:
    """Every clip ``src`` holds under ``root`` (its rules not yet applied), in path order, with
    its licence and credit."""
    import zipfile
    where = os.path.join(root, src.path)
    copyright_file = os.path.join(root, "usr/share/doc", src.package, "copyright")
    paragraphs = dep5(open(copyright_file, errors="replace").read()) if os.path.isfile(copyright_file) else None

    def holders(name):
        return copyright_of(paragraphs, f"{src.upstream}/{name}" if src.upstream else name, src.licence)
    if src.path.endswith(".cat"):
        with open(where, "rb") as f:
            entries = opensfx_entries(f.read())
        return [Clip(f"{src.path}:{i:02d}", f"{i:02d}", lambda wav=wav: wav, opensfx_licence(text), text)
                for i, (text, wav) in enumerate(entries) if wav]
    if src.path.endswith(".pk3"):
        try:
            with zipfile.ZipFile(where) as z:
                names = sorted(n for n in z.namelist() if n.lower().endswith(AUDIO_EXT))
        except zipfile.BadZipFile:
            raise CorpusError(f"{where}: not a zip archive; reinstall {src.package}") from None
        return [Clip(f"{src.path}:{n}", n, _zip_member(where, n), *holders(n)) for n in names]
    return [Clip(os.path.relpath(path, root).replace(os.sep, "/"), os.path.relpath(path, where).replace(os.sep, "/"),
                 _file_bytes(path), *holders(os.path.relpath(path, where).replace(os.sep, "/")))
            for path in _files(where, AUDIO_EXT)]


def split_for(origin: str) -> str:
    """train / valid / test (80 / 10 / 10 %) from a hash of the original file's path: every
    piece of one file lands in the same split, whatever the order or seed of the build."""
    u = _unit_hash(origin)
    return "test" if u < 0.1 else "valid" if u < 0.2 else "train"


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0 ** 64


def _to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """``audio_data._resample``, except at odd rates (Tux Paint's 11127 Hz, UFO:AI's 8012 Hz),
    where torchaudio's kernel, [16000/g, sr/g] for g = gcd(sr, 16000), would take gigabytes;
    scipy's polyphase filter does those."""
    g = math.gcd(sr, SAMPLE_RATE)
    if sr // g <= 1000:
        return _resample(x, sr)
    from scipy.signal import resample_poly
    return resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)


def clip_events(x: np.ndarray, sr: int, kind: str) -> list[np.ndarray]:
    """The events of one clip ``x`` [n, channels] at ``sr`` Hz: mono, trimmed of silence, cut
    into equal pieces of at most 5 s (backgrounds 10 s), each resampled to 16 kHz and trimmed
    again; pieces shorter than 0.25 s or ``QUIET_DB`` below the clip's peak are dropped
    (fade-outs, pauses); every event is peak-normalized to -3 dBFS. Cutting before resampling
    keeps the memory of a 6-minute music file at that of one piece."""
    if len(x) == 0:
        return []
    y = _trim(np.ascontiguousarray(x.mean(1), dtype=np.float32))
    peak = float(np.abs(y).max(initial=0.0))
    if peak < 1e-4:                                          # silent (or empty after trimming)
        return []
    longest = int((FG_SECONDS if kind == FOREGROUND else BG_SECONDS) * sr)
    out = []
    for piece in np.array_split(y, -(-len(y) // longest)):   # ceil(n / longest) equal pieces
        p = _trim(_to_16k(piece, sr))
        if len(p) >= MIN_SECONDS * SAMPLE_RATE and np.abs(p).max() >= peak * 10 ** (-QUIET_DB / 20):
            out.append((p / np.abs(p).max() * 10 ** (-3 / 20)).astype(np.float32))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(text)[0].replace("/", "_")).strip("-")[:60]


def _write_flac(path: str, x: np.ndarray, sr: int) -> None:
    import soundfile as sf
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    sf.write(tmp, x, sr, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_manifest(out_dir: str, rows: list[dict]) -> None:
    tmp = os.path.join(out_dir, ".manifest.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FUSS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, os.path.join(out_dir, "manifest.csv"))      # last: a set is whole or absent


def _out_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None


def build_fuss(out_dir: str, root: str = "/", seed: int = 0, max_per_class: int = MAX_PER_CLASS,
               progress: bool = True) -> dict:
    """Write the sound-event set (events/<class>/*.flac, manifest.csv, SOURCES.md) into
    ``out_dir``; return its totals. Within each class, clips are read in an order drawn from
    ``seed`` (a hash of seed and path) until the class holds ``max_per_class`` events."""
    import io
    import soundfile as sf
    from tqdm import tqdm
    missing = missing_packages(root, FUSS_PACKAGES)
    if missing:
        raise CorpusError(f"missing Debian packages: {' '.join(missing)}; "
                          f"apt-get install {' '.join(missing)}")
    _out_dir(out_dir)
    if os.path.exists(os.path.join(out_dir, "manifest.csv")):
        os.remove(os.path.join(out_dir, "manifest.csv"))        # a rebuild is whole or absent too
    by_class: dict = {}
    seen = set()          # packages repeat files (Tux Paint's letter variants, symlinks): keep the first copy
    for src in tqdm(EVENT_SOURCES, desc="listing", disable=not progress):
        for clip in source_clips(src, root):
            cls, kind = classify(src, clip.name)
            if kind is None:
                continue
            digest = hashlib.sha1(clip.data()).digest()
            if digest not in seen:
                seen.add(digest)
                by_class.setdefault(cls, []).append((clip, kind, src.package))
    rows = []
    for cls in tqdm(sorted(by_class), desc="classes", disable=not progress):
        os.makedirs(os.path.join(out_dir, "events", cls), exist_ok=True)
        n = 0
        for clip, kind, package in sorted(by_class[cls], key=lambda c: _unit_hash(f"{seed}:{c[0].origin}")):
            if n >= max_per_class:
                break
            try:
                events = clip_events(*sf.read(io.BytesIO(clip.data()), dtype="float32", always_2d=True), kind)
            except (RuntimeError, ValueError) as e:        # a broken packaged file is skipped, not fatal
                print(f"skipped {clip.origin}: {type(e).__name__}", file=sys.stderr)
                continue
            tag = hashlib.sha1(clip.origin.encode()).hexdigest()[:6]
            for k, x in enumerate(events[:max_per_class - n]):
                rel = f"events/{cls}/{_slug(clip.name)}-{tag}-{k}.flac"
                _write_flac(os.path.join(out_dir, rel), x, SAMPLE_RATE)
                rows.append({"file": rel, "source": package, "class": cls, "kind": kind,
                             "split": split_for(clip.origin), "seconds": f"{len(x) / SAMPLE_RATE:.3f}",
                             "licence": clip.licence, "origin": clip.origin, "credit": clip.credit})
            n += min(len(events), max_per_class - n)
    totals = fuss_summary(rows)
    _write_text(os.path.join(out_dir, "SOURCES.md"), fuss_sources_markdown(rows, totals, max_per_class))
    _write_manifest(out_dir, rows)
    return totals


def fuss_summary(rows: list[dict]) -> dict:
    """Events, original clips and hours: in all, per kind and per split."""
    t: dict = {"events": len(rows), "clips": len({r["origin"] for r in rows}),
               "hours": sum(float(r["seconds"]) for r in rows) / 3600}
    for r in rows:
        for key in (r["kind"], r["split"]):
            t.setdefault(key, {"events": 0, "hours": 0.0})
            t[key]["events"] += 1
            t[key]["hours"] += float(r["seconds"]) / 3600
    return t


def fuss_sources_markdown(rows: list[dict], totals: dict, max_per_class: int) -> str:
    def table(key):
        per: dict = {}
        for r in rows:
            p = per.setdefault(r[key], {"kind": set(), "other": set(), "licences": set(), "events": 0,
                                        "clips": set(), "seconds": 0.0})
            p["kind"].add(r["kind"])
            p["other"].add(r["source"] if key == "class" else r["class"])
            p["licences"].add(r["licence"])
            p["events"] += 1
            p["clips"].add(r["origin"])
            p["seconds"] += float(r["seconds"])
        return [f"| {name} | {'/'.join(sorted(p['kind']))} | {', '.join(sorted(p['other']))} | {p['events']} | "
                f"{len(p['clips'])} | {p['seconds'] / 60:.1f} | {', '.join(sorted(p['licences']))} |"
                for name, p in sorted(per.items())]
    split = ", ".join(f"{s} {totals[s]['events']} events ({totals[s]['hours']:.2f} h)"
                      for s in ("train", "valid", "test") if s in totals)
    return "\n".join([
        "# FUSS-like sound-event set built by `python -m surf_mini.corpus fuss`", "",
        f"{totals['events']} events from {totals['clips']} clips, {totals['hours']:.2f} hours: "
        f"{totals.get(FOREGROUND, {}).get('events', 0)} foreground, "
        f"{totals.get(BACKGROUND, {}).get('events', 0)} background. Splits (by original clip): {split}.",
        f"At most {max_per_class} events per class. 16 kHz mono FLAC, each event peak -3 dBFS.", "",
        "Licences and credits per event are in manifest.csv (from each package's debian/copyright;",
        "OpenSFX's from its sound descriptions). This set is for local use; the committed sample",
        "(`fuss-sample`) copies only clips whose licence allows it with attribution.", "",
        "| class | kind | packages | events | clips | minutes | licences |", "|---|---|---|---|---|---|---|",
        *table("class"), "",
        "| package | kind | classes | events | clips | minutes | licences |", "|---|---|---|---|---|---|---|",
        *table("source")]) + "\n"


def read_fuss_manifest(folder: str) -> list[dict]:
    """The rows of ``folder``/manifest.csv (a set built by ``build_fuss`` or its sample)."""
    path = os.path.join(folder, "manifest.csv")
    if not os.path.isfile(path):
        raise CorpusError(f"{folder}: no manifest.csv; build the set with python -m surf_mini.corpus fuss {folder}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(FUSS_COLUMNS) - set(rows[0]):
        raise CorpusError(f"{path}: not a sound-event manifest (columns {', '.join(FUSS_COLUMNS)})")
    return rows


def _round_robin(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` of ``rows``, one per original clip, the classes taking turns (seeded orders)."""
    pool: dict = {}
    for r in sorted(rows, key=lambda r: _unit_hash(f"{seed}:{r['file']}")):
        pool.setdefault(r["class"], []).append(r)
    order = sorted(pool, key=lambda c: _unit_hash(f"{seed}:{c}"))
    out, seen = [], set()
    while len(out) < n and any(pool.values()):
        for cls in order:
            while pool[cls] and pool[cls][0]["origin"] in seen:
                pool[cls].pop(0)
            if pool[cls] and len(out) < n:
                out.append(pool[cls].pop(0))
                seen.add(out[-1]["origin"])
    return out


def build_fuss_sample(full_dir: str, out_dir: str, sample_rate: int = 8000, seed: int = 0,
                      foreground: tuple = (("train", 16), ("valid", 6), ("test", 8)),
                      background: tuple = (("train", 3), ("valid", 1), ("test", 2)),
                      bg_seconds: float = 4.0) -> list[dict]:
    """The small sample that ships in the repository: from the built set in ``full_dir``, per
    split the given numbers of foreground and background events, one per original clip, taken
    round-robin over the classes (seeded order) among clips whose licence allows copying
    (``REDISTRIBUTABLE``); resampled to ``sample_rate``, backgrounds cut to their first
    ``bg_seconds``. Writes events/, manifest.csv and SOURCES.md (every file's credit)."""
    import torch
    rows = [r for r in read_fuss_manifest(full_dir) if r["licence"].startswith(REDISTRIBUTABLE)]
    _out_dir(out_dir)
    if os.path.exists(os.path.join(out_dir, "manifest.csv")):
        os.remove(os.path.join(out_dir, "manifest.csv"))
    picked = [r for kind, quota in ((FOREGROUND, foreground), (BACKGROUND, background)) for split, n in quota
              for r in _round_robin([r for r in rows if r["kind"] == kind and r["split"] == split], n, seed)]
    out_rows = []
    for r in picked:
        x = read_audio(os.path.join(full_dir, r["file"]), sample_rate)
        if r["kind"] == BACKGROUND:
            x = x[:int(bg_seconds * sample_rate)]
        x = x / x.abs().max().clamp_min(1e-9) * 10 ** (-3 / 20)     # resampling moves the peak
        os.makedirs(os.path.join(out_dir, os.path.dirname(r["file"])), exist_ok=True)
        _write_flac(os.path.join(out_dir, r["file"]), x.to(torch.float32).numpy(), sample_rate)
        out_rows.append(dict(r, seconds=f"{len(x) / sample_rate:.3f}"))
    lines = ["# fuss_sample: how it was made, and licences", "",
             f"{len(out_rows)} events ({sum(r['kind'] == FOREGROUND for r in out_rows)} foreground, "
             f"{sum(r['kind'] == BACKGROUND for r in out_rows)} background) of the FUSS-like sound-event set "
             f"(docs/fuss.md), {sample_rate} Hz mono 16-bit FLAC, made on Debian bookworm by", "",
             "    apt-get install $(python -m surf_mini.corpus fuss-packages)",
             "    python -m surf_mini.corpus fuss ~/data/fuss",
             f"    python -m surf_mini.corpus fuss-sample ~/data/fuss {out_dir}",
             "", "Per split (kept from the full set), a fixed number of events, one per original clip, taken "
             "round-robin over the classes in a seeded order, among clips licensed "
             f"{', '.join(REDISTRIBUTABLE)} only; backgrounds cut to their first {bg_seconds:g} s; each event "
             "peak -3 dBFS. The clips were resampled, mixed to mono, trimmed, cut and normalized here; "
             "the originals are in the Debian packages named below.", "",
             "| file | split | licence | Debian package: original "
             "| credit (debian/copyright or the sound's description) |",
             "|---|---|---|---|---|"]
    for r in out_rows:
        lines.append(f"| {r['file']} | {r['split']} | {r['licence']} | {r['source']}: /{r['origin']} | "
                     f"{r['credit'].replace('|', '/') or 'see the package copyright'} |")
    _write_text(os.path.join(out_dir, "SOURCES.md"), "\n".join(lines) + "\n")
    _write_manifest(out_dir, out_rows)
    return out_rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m surf_mini.corpus", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speech", help="build the speech corpus into DIR")
    s.add_argument("dir")
    s.add_argument("--root", default="/", help="file-system root to find the packages under")
    s.add_argument("--tts-seconds", type=float, default=120.0, help="speech per synthetic voice")
    s.add_argument("--seed", type=int, default=0)
    sub.add_parser("packages", help="print the Debian packages the speech corpus needs")
    f = sub.add_parser("fuss", help="build the FUSS-like sound-event set into DIR")
    f.add_argument("dir")
    f.add_argument("--root", default="/", help="file-system root to find the packages under")
    f.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS, help="events per class at most")
    f.add_argument("--seed", type=int, default=0)
    sub.add_parser("fuss-packages", help="print the Debian packages the sound-event set needs")
    fs = sub.add_parser("fuss-sample", help="copy a small redistributable sample of a built set FULL into OUT")
    fs.add_argument("full")
    fs.add_argument("out")
    fs.add_argument("--rate", type=int, default=8000, help="sample rate of the sample")
    fs.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.what in ("packages", "fuss-packages"):
        print(" ".join(PACKAGES if args.what == "packages" else FUSS_PACKAGES))
        return
    try:
        if args.what == "fuss":
            t = build_fuss(args.dir, args.root, args.seed, args.max_per_class)
            print(f"wrote {t['events']} events ({t.get(FOREGROUND, {}).get('events', 0)} foreground, "
                  f"{t.get(BACKGROUND, {}).get('events', 0)} background) from {t['clips']} clips, "
                  f"{t['hours']:.2f} h, to {args.dir} ("
                  + ", ".join(f"{k} {t[k]['events']}" for k in ("train", "valid", "test") if k in t) + ")")
            return
        if args.what == "fuss-sample":
            rows = build_fuss_sample(args.full, args.out, args.rate, args.seed)
            print(f"wrote {len(rows)} events ({sum(float(r['seconds']) for r in rows):.1f} s) to {args.out}")
            return
        t = build_speech(args.dir, args.root, args.tts_seconds, args.seed)
    except CorpusError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {t['clips']} clips, {t['hours']:.2f} h of {t['speakers']} speakers to {args.dir} "
          f"(real: {t.get('real', {}).get('hours', 0):.2f} h of {t.get('real', {}).get('speakers', 0)} speakers; "
          + ", ".join(f"{k} {t[k]['hours']:.2f} h / {t[k]['speakers']} spk" for k in ("train", "valid", "test") if k in t)
          + ")")


if __name__ == "__main__":
    main(sys.argv[1:])
