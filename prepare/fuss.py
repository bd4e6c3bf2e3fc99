"""Builds the FUSS-like sound-event set (a stand-in for FUSS, SURF Table 3) from Debian packages.

    apt-get install $(python prepare/fuss.py packages)     # Debian bookworm, 11 packages, ~660 MiB
    python prepare/fuss.py ~/data/fuss                      # events/, manifest.csv, SOURCES.md
    python prepare/fuss.py sample ~/data/fuss surf_mini/assets/fuss_sample   # the committed sample

The command takes the output folder (options ``--root``, ``--max-per-class``, ``--seed``), or
the word ``packages`` (print the Debian packages the set needs), or ``sample FULL OUT`` (copy a
small redistributable sample of the built set FULL into OUT; ``--rate``, ``--seed``).

The sound-event set does for FUSS what the speech corpus (``prepare/speech.py``) does for
LibriMix. FUSS's events are Freesound clips of any kind; here they are the sound effects,
samples and voices of 11 Debian packages (games' sound effects, Sonic Pi's samples, Tux
Paint's animal sounds and spoken descriptions, desktop alert sounds), read from folders, a
``.pk3`` zip and OpenTTD's ``.cat``; each clip mixed to mono, resampled to 16 kHz, trimmed, cut
into events of at most 5 s (backgrounds 10 s) and stored with its licence and credit from the
package's ``debian/copyright`` (DEP-5, last match wins). Byte copies of one clip are kept once.

Splits are clip-disjoint: a hash of the original file's path picks its split, so every piece
of one file lands in the same one. ``surf_mini.fuss_data`` reads the set (``load_events``) and
makes the mixtures. See docs/fuss.md.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import math
import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prepare.common import (BuildError, audio_files, check_packages, copyright_of, dep5,  # noqa: E402
                            file_bytes, make_out_dir, resample, trim, write_csv, write_flac, write_text,
                            zip_member)
from surf_mini.audio_data import SAMPLE_RATE, read_audio  # noqa: E402

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


def opensfx_entries(data: bytes) -> list[tuple[str, bytes]]:
    """(description, RIFF wav bytes) of each sound in OpenTTD's sample.cat format: a table of
    (offset, size) little-endian uint32 pairs (bit 31 of the offsets flags the new format),
    each entry a length-prefixed description followed by the wav file."""
    if len(data) < 8:
        raise BuildError("opensfx.cat: not an OpenTTD sound file (too short)")
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
            raise BuildError(f"{where}: not a zip archive; reinstall {src.package}") from None
        return [Clip(f"{src.path}:{n}", n, zip_member(where, n), *holders(n)) for n in names]
    return [Clip(os.path.relpath(path, root).replace(os.sep, "/"), os.path.relpath(path, where).replace(os.sep, "/"),
                 file_bytes(path), *holders(os.path.relpath(path, where).replace(os.sep, "/")))
            for path in audio_files(where, AUDIO_EXT)]


def split_for(origin: str) -> str:
    """train / valid / test (80 / 10 / 10 %) from a hash of the original file's path: every
    piece of one file lands in the same split, whatever the order or seed of the build."""
    u = _unit_hash(origin)
    return "test" if u < 0.1 else "valid" if u < 0.2 else "train"


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0 ** 64


def _to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """``common.resample``, except at odd rates (Tux Paint's 11127 Hz, UFO:AI's 8012 Hz),
    where torchaudio's kernel, [16000/g, sr/g] for g = gcd(sr, 16000), would take gigabytes;
    scipy's polyphase filter does those."""
    g = math.gcd(sr, SAMPLE_RATE)
    if sr // g <= 1000:
        return resample(x, sr)
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
    y = trim(np.ascontiguousarray(x.mean(1), dtype=np.float32))
    peak = float(np.abs(y).max(initial=0.0))
    if peak < 1e-4:                                          # silent (or empty after trimming)
        return []
    longest = int((FG_SECONDS if kind == FOREGROUND else BG_SECONDS) * sr)
    out = []
    for piece in np.array_split(y, -(-len(y) // longest)):   # ceil(n / longest) equal pieces
        p = trim(_to_16k(piece, sr))
        if len(p) >= MIN_SECONDS * SAMPLE_RATE and np.abs(p).max() >= peak * 10 ** (-QUIET_DB / 20):
            out.append((p / np.abs(p).max() * 10 ** (-3 / 20)).astype(np.float32))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(text)[0].replace("/", "_")).strip("-")[:60]


def build_fuss(out_dir: str, root: str = "/", seed: int = 0, max_per_class: int = MAX_PER_CLASS,
               progress: bool = True) -> dict:
    """Write the sound-event set (events/<class>/*.flac, manifest.csv, SOURCES.md) into
    ``out_dir``; return its totals. Within each class, clips are read in an order drawn from
    ``seed`` (a hash of seed and path) until the class holds ``max_per_class`` events."""
    import io
    import soundfile as sf
    from tqdm import tqdm
    check_packages(root, FUSS_PACKAGES)
    make_out_dir(out_dir)
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
                write_flac(os.path.join(out_dir, rel), x, SAMPLE_RATE)
                rows.append({"file": rel, "source": package, "class": cls, "kind": kind,
                             "split": split_for(clip.origin), "seconds": f"{len(x) / SAMPLE_RATE:.3f}",
                             "licence": clip.licence, "origin": clip.origin, "credit": clip.credit})
            n += min(len(events), max_per_class - n)
    totals = fuss_summary(rows)
    write_text(os.path.join(out_dir, "SOURCES.md"), fuss_sources_markdown(rows, totals, max_per_class))
    write_csv(os.path.join(out_dir, "manifest.csv"), FUSS_COLUMNS, rows)   # last: a set is whole or absent
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
        "# FUSS-like sound-event set built by `python prepare/fuss.py`", "",
        f"{totals['events']} events from {totals['clips']} clips, {totals['hours']:.2f} hours: "
        f"{totals.get(FOREGROUND, {}).get('events', 0)} foreground, "
        f"{totals.get(BACKGROUND, {}).get('events', 0)} background. Splits (by original clip): {split}.",
        f"At most {max_per_class} events per class. 16 kHz mono FLAC, each event peak -3 dBFS.", "",
        "Licences and credits per event are in manifest.csv (from each package's debian/copyright;",
        "OpenSFX's from its sound descriptions). This set is for local use; the committed sample",
        "(`python prepare/fuss.py sample`) copies only clips whose licence allows it with attribution.", "",
        "| class | kind | packages | events | clips | minutes | licences |", "|---|---|---|---|---|---|---|",
        *table("class"), "",
        "| package | kind | classes | events | clips | minutes | licences |", "|---|---|---|---|---|---|---|",
        *table("source")]) + "\n"


def read_fuss_manifest(folder: str) -> list[dict]:
    """The rows of ``folder``/manifest.csv (a set built by ``build_fuss`` or its sample)."""
    path = os.path.join(folder, "manifest.csv")
    if not os.path.isfile(path):
        raise BuildError(f"{folder}: no manifest.csv; build the set with python prepare/fuss.py {folder}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(FUSS_COLUMNS) - set(rows[0]):
        raise BuildError(f"{path}: not a sound-event manifest (columns {', '.join(FUSS_COLUMNS)})")
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
    make_out_dir(out_dir)
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
        write_flac(os.path.join(out_dir, r["file"]), x.to(torch.float32).numpy(), sample_rate)
        out_rows.append(dict(r, seconds=f"{len(x) / sample_rate:.3f}"))
    lines = ["# fuss_sample: how it was made, and licences", "",
             f"{len(out_rows)} events ({sum(r['kind'] == FOREGROUND for r in out_rows)} foreground, "
             f"{sum(r['kind'] == BACKGROUND for r in out_rows)} background) of the FUSS-like sound-event set "
             f"(docs/fuss.md), {sample_rate} Hz mono 16-bit FLAC, made on Debian bookworm by", "",
             "    apt-get install $(python prepare/fuss.py packages)",
             "    python prepare/fuss.py ~/data/fuss",
             f"    python prepare/fuss.py sample ~/data/fuss {out_dir}",
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
    write_text(os.path.join(out_dir, "SOURCES.md"), "\n".join(lines) + "\n")
    write_csv(os.path.join(out_dir, "manifest.csv"), FUSS_COLUMNS, out_rows)
    return out_rows


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sample"]:
        p = argparse.ArgumentParser(prog="python prepare/fuss.py sample",
                                    description="copy a small redistributable sample of a built set FULL into OUT")
        p.add_argument("full")
        p.add_argument("out")
        p.add_argument("--rate", type=int, default=8000, help="sample rate of the sample")
        p.add_argument("--seed", type=int, default=0)
        args = p.parse_args(argv[1:])
        try:
            rows = build_fuss_sample(args.full, args.out, args.rate, args.seed)
        except BuildError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"wrote {len(rows)} events ({sum(float(r['seconds']) for r in rows):.1f} s) to {args.out}")
        return
    p = argparse.ArgumentParser(prog="python prepare/fuss.py", description=__doc__.split("\n")[0],
                                epilog="or: python prepare/fuss.py sample FULL OUT [--rate R] [--seed S]")
    p.add_argument("dir", help="the output folder; or the word 'packages': print the Debian packages it needs")
    p.add_argument("--root", default="/", help="file-system root to find the packages under")
    p.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS, help="events per class at most")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.dir == "packages":
        print(" ".join(FUSS_PACKAGES))
        return
    try:
        t = build_fuss(args.dir, args.root, args.seed, args.max_per_class)
    except BuildError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {t['events']} events ({t.get(FOREGROUND, {}).get('events', 0)} foreground, "
          f"{t.get(BACKGROUND, {}).get('events', 0)} background) from {t['clips']} clips, "
          f"{t['hours']:.2f} h, to {args.dir} ("
          + ", ".join(f"{k} {t[k]['events']}" for k in ("train", "valid", "test") if k in t) + ")")


if __name__ == "__main__":
    main()
