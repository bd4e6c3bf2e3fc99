"""What the data builders in prepare/ share: Debian packages, audio pieces, atomic writes.

The builders (``speech.py``, ``fuss.py``, ``demo.py``) run once, offline, to make the data sets
that ``surf_mini`` reads at train time (``audio_data.load_clips``, ``fuss_data.load_events``).
They live outside the package, as nanoGPT keeps its ``data/<name>/prepare.py``: nothing in
``surf_mini/`` imports from here. What they have in common:

  * Debian packages: which of a list are installed (``missing_packages``, ``check_packages``),
    the audio files a package holds (``audio_files``; ``file_bytes`` and ``zip_member`` read
    one when it is needed), and the licence and copyright holders of each from the package's
    ``debian/copyright`` (``dep5``, ``copyright_of``);
  * audio pieces: read at 16 kHz, trimmed of silence, resampled (``read_16k``, ``trim``,
    ``resample``), and the word list that every synthetic voice reads from (``WORDS``);
  * atomic writes (a temporary file, then ``os.replace``), so that an interrupted build
    leaves no half-written file: ``write_flac``, ``write_text``, ``write_csv``; and
    ``make_out_dir`` with its one-line error.

A failure a user can fix (a missing package, an unusable folder) raises ``BuildError``, whose
message the builders print as one ``error: ...`` line.
"""
from __future__ import annotations

import csv
import fnmatch
import os
import re
import shutil
from typing import Callable

import numpy as np

from surf_mini.audio_data import SAMPLE_RATE, read_audio   # the builders put the repository on sys.path

# The words that synthetic voices read (the demo set's sentences; the speech corpus adds more).
WORDS = ("the a one two red blue green small large old new quick slow happy quiet little "
         "house river garden window morning evening letter music paper number table city "
         "walks reads sings finds opens carries watches brings keeps follows builds paints "
         "under over near behind across before after with without and but then").split()


class BuildError(RuntimeError):
    """Missing packages or an unusable output folder; the message says what to do."""


# --------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------

def missing_packages(root: str, packages: dict, programs: tuple = ()) -> list[str]:
    """The Debian packages of ``packages`` (package -> what shows it is installed) that are not
    installed: checked by a path under ``root`` (folder or file), or, for a name in
    ``programs``, by that program on PATH."""
    def present(what: str) -> bool:
        return shutil.which(what) is not None if what in programs else os.path.exists(os.path.join(root, what))
    return [pkg for pkg, what in packages.items() if not present(what)]


def check_packages(root: str, packages: dict, programs: tuple = ()) -> None:
    """``BuildError`` naming the missing packages and the command that installs them."""
    missing = missing_packages(root, packages, programs)
    if missing:
        raise BuildError(f"missing Debian packages: {' '.join(missing)}; "
                         f"apt-get install {' '.join(missing)}")


def audio_files(folder: str, ext: str | tuple, skip: tuple = (), name: str | None = None) -> list[str]:
    """Files under ``folder`` ending in ``ext`` (one or a tuple; or named exactly ``name``),
    outside ``skip`` folders, sorted."""
    return sorted(os.path.join(r, f) for r, ds, fs in os.walk(folder) for f in fs
                  if (f == name if name else f.endswith(ext)) and not any(s in r.split(os.sep) for s in skip))


def file_bytes(path: str) -> Callable[[], bytes]:
    """A reader of a packaged file's bytes, called when they are needed (a build lists tens of
    thousands of clips and keeps only some)."""
    def read():
        with open(path, "rb") as f:
            return f.read()
    return read


def zip_member(archive: str, member: str) -> Callable[[], bytes]:
    """A reader of one member of a zip archive (UFO:AI's ``.pk3``), like ``file_bytes``."""
    def read():
        import zipfile
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    return read


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


# --------------------------------------------------------------------------------------
# Audio pieces
# --------------------------------------------------------------------------------------

def read_16k(path: str) -> np.ndarray:
    """Mono float32 at 16 kHz (``audio_data.read_audio``); a few packaged files are empty."""
    return read_audio(path, SAMPLE_RATE).numpy()


def resample(x: np.ndarray, sr: int) -> np.ndarray:
    """``x`` at ``sr`` Hz resampled to 16 kHz (torchaudio's windowed sinc)."""
    if sr == SAMPLE_RATE:
        return x
    import torch
    import torchaudio
    return torchaudio.functional.resample(torch.from_numpy(x).float(), sr, SAMPLE_RATE).numpy()


def trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing samples below 2 % of the peak (empty when all of x is silent)."""
    loud = np.nonzero(np.abs(x) > 0.02 * (np.abs(x).max(initial=0.0) + 1e-9))[0]
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


# --------------------------------------------------------------------------------------
# Atomic writes: a temporary file beside the target, then os.replace
# --------------------------------------------------------------------------------------

def _tmp(path: str) -> str:
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")


def write_flac(path: str, x: np.ndarray, sr: int) -> None:
    """``x`` [n] as 16-bit FLAC."""
    import soundfile as sf
    sf.write(_tmp(path), x, sr, format="FLAC", subtype="PCM_16")
    os.replace(_tmp(path), path)


def write_text(path: str, text: str) -> None:
    with open(_tmp(path), "w") as f:
        f.write(text)
    os.replace(_tmp(path), path)


def write_csv(path: str, columns: list, rows: list[dict]) -> None:
    """``rows`` under a header of ``columns`` (a data set's manifest.csv)."""
    with open(_tmp(path), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(_tmp(path), path)


def make_out_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise BuildError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
