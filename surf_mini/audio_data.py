"""Audio data: the small speech demo set that ships with the repository, and how it was made.

No speech corpus can be downloaded where this project is built, so the demo set is made from
what installs from Debian (docs/installing.md):

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


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing samples below 2 % of the peak (empty when all of x is silent)."""
    loud = np.nonzero(np.abs(x) > 0.02 * (np.abs(x).max(initial=0.0) + 1e-9))[0]
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def _finish(x: np.ndarray, seconds: float) -> np.ndarray:
    """Trim leading/trailing near-silence, crop or zero-pad to ``seconds``, peak -3 dBFS."""
    x = _trim(np.asarray(x, dtype=np.float32))
    n = int(seconds * SAMPLE_RATE)
    x = x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))
    return (x / (np.abs(x).max() + 1e-9) * 10 ** (-3 / 20)).astype(np.float32)


def _klettres_clip(files: list[str], rng: random.Random, seconds: float) -> np.ndarray:
    """4-9 random clips of one speaker (``files``, sorted), trimmed, with short pauses."""
    import soundfile as sf
    pieces = []
    for path in rng.sample(files, min(len(files), rng.randint(4, 9))):
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        pieces.append(_trim(_resample(x.mean(1), sr)))
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


# --------------------------------------------------------------------------------------
# Loading for training and evaluation
# --------------------------------------------------------------------------------------

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "demo_speech")


class AudioDataError(RuntimeError):
    """A folder or file that cannot be used; the message says what to do."""


def read_audio(path: str, sample_rate: int):
    """Mono float32 torch tensor [T] at ``sample_rate`` (mixed down and resampled if needed)."""
    import soundfile as sf
    import torch
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioDataError(f"{path}: not readable audio ({type(e).__name__})") from None
    x = torch.from_numpy(x.mean(1))
    if sr != sample_rate and len(x):                       # an empty file stays empty
        import torchaudio
        x = torchaudio.functional.resample(x, sr, sample_rate)
    return x


def frame_powers(x, frame: int):
    """Mean square of each ``frame``-sample frame of a signal [T] (the last one zero-padded) -> [F]."""
    import torch
    return torch.nn.functional.pad(x, (0, (-len(x)) % frame)).reshape(-1, frame).pow(2).mean(1)


def active_level(powers) -> float:
    """RMS over the frames within 40 dB of the loudest (``frame_powers``): a signal's level with
    its pauses left out (0.0 for silence). ``separate.py`` brings every input to the level its
    model was trained at by this measure."""
    if float(powers.max()) <= 0.0:
        return 0.0
    return float(powers[powers >= powers.max() * 1e-4].mean().sqrt())


def list_audio(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise AudioDataError(f"{folder}: no such folder")
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if f.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise AudioDataError(f"{folder}: no {'/'.join(AUDIO_EXTENSIONS)} files")
    return files


def load_clips(folder: str, sample_rate: int, split: str | None = None) -> dict:
    """Single-source clips grouped by speaker: {speaker: [tensor [T], ...]}.

    With a ``manifest.csv`` (the demo set), speakers and ``split`` come from it; otherwise
    every file is its own speaker (``split`` must then be None).
    """
    manifest = os.path.join(folder, "manifest.csv")
    out: dict = {}
    if os.path.isfile(manifest):
        with open(manifest) as f:
            for row in csv.DictReader(f):
                if split is None or row["split"] == split:
                    out.setdefault(row["speaker"], []).append(
                        read_audio(os.path.join(folder, row["file"]), sample_rate))
    else:
        if split is not None:
            raise AudioDataError(f"{folder}: no manifest.csv, so no {split!r} split")
        for path in list_audio(folder):
            out[path] = [read_audio(path, sample_rate)]
    if not out:
        raise AudioDataError(f"{folder}: no clips for split {split!r}")
    return out


# --------------------------------------------------------------------------------------
# On-the-fly augmentation of single sources (before they are summed, so SURF (1) holds)
# --------------------------------------------------------------------------------------

# Speed/pitch factors of ``augment``. A factor f > 1 shortens a crop to 1/f of its length, so
# ClipMixer crops CROP_HEADROOM times the length it needs before augmenting (>= the fastest
# factor, or the sped-up source would end in zeros).
SPEED_RANGE = (0.9, 1.1)
CROP_HEADROOM = 1.12
assert CROP_HEADROOM >= SPEED_RANGE[1]


def speed(x, factor: float):
    """Play ``x`` [T] ``factor`` times faster (tempo and pitch together), by resampling:
    ``factor`` * T samples in -> T out (cropped or zero-padded to exactly ``len(x)``)."""
    import torch
    import torchaudio
    n = len(x)
    num = int(round(100 * factor))                           # rates 100 : num keep the kernel small
    y = torchaudio.functional.resample(x[None], num, 100)[0] if num != 100 else x
    return y[:n] if len(y) >= n else torch.nn.functional.pad(y, (0, n - len(y)))


def random_eq(x, sample_rate: int, g):
    """One peaking biquad at a random centre (150 Hz .. 0.4 fs), gain +-6 dB, Q 0.5-2."""
    import torch
    import torchaudio
    u = torch.rand(3, generator=g).tolist()
    centre = 150.0 * (0.4 * sample_rate / 150.0) ** u[0]     # log-uniform
    return torchaudio.functional.equalizer_biquad(x, sample_rate, centre, 12 * u[1] - 6, 0.5 + 1.5 * u[2])


def light_reverb(x, sample_rate: int, g, rt60: tuple = (0.1, 0.4), wet: tuple = (0.1, 0.4)):
    """x plus a quiet tail: x convolved with exponentially decaying noise (RT60 drawn from
    ``rt60`` s), mixed in at a ``wet`` ratio of its energy; the dry path is kept whole."""
    import torch
    u = torch.rand(2, generator=g).tolist()
    t60 = rt60[0] + (rt60[1] - rt60[0]) * u[0]
    n = int(t60 * sample_rate)
    decay = torch.exp(-6.9 * torch.arange(n) / n)            # -60 dB at n samples
    rir = torch.randn(n, generator=g) * decay
    L = len(x) + n
    tail = torch.fft.irfft(torch.fft.rfft(x, L) * torch.fft.rfft(rir, L), L)[:len(x)]
    ratio = wet[0] + (wet[1] - wet[0]) * u[1]
    return x + tail * (ratio * x.pow(2).sum() / (tail.pow(2).sum() + 1e-12)).sqrt()


def augment(x, sample_rate: int, g, speed_range: tuple = SPEED_RANGE, p_eq: float = 0.5,
            p_reverb: float = 0.3):
    """One random view of a single source [T] (same length): speed/pitch by resampling, then
    with probability ``p_eq`` a random EQ and with ``p_reverb`` a light reverberation. Level
    and mixing SNR are the mixer's (``ClipMixer``). Applied to each source *before* the sum,
    so the mixture is still the sum of its sources, SURF (1)."""
    import torch
    lo, hi = speed_range
    x = speed(x, lo + (hi - lo) * float(torch.rand(1, generator=g)))
    if float(torch.rand(1, generator=g)) < p_eq:
        x = random_eq(x, sample_rate, g)
    if float(torch.rand(1, generator=g)) < p_reverb:
        x = light_reverb(x, sample_rate, g)
    return x


def _crop(x, n: int, rng):
    import torch
    if len(x) <= n:
        return torch.nn.functional.pad(x, (0, n - len(x)))
    start = int(torch.randint(len(x) - n + 1, (1,), generator=rng))
    return x[start:start + n]


class ClipMixer:
    """Mixtures made on the fly from single-speaker clips: K distinct speakers per mixture,
    each at a random level in [-snr_db/2, snr_db/2] dB around the first, random crops;
    with ``augment_rate`` (the sample rate) each source is first ``augment``-ed.

    ``batch(B)`` -> (m [B, 1, T], sources [B, K, T]) for supervised training and evaluation.
    """

    def __init__(self, clips: dict, K: int, length: int, generator, snr_db: float = 5.0,
                 augment_rate: int | None = None):
        if len(clips) < K:
            raise AudioDataError(f"need at least {K} speakers to mix, found {len(clips)}")
        self.clips, self.K, self.length, self.g, self.snr_db = clips, K, length, generator, snr_db
        self.names = sorted(clips)
        self.augment_rate = augment_rate         # sample rate: augment each source (``augment``)

    def batch(self, B: int):
        import torch
        srcs = []
        for _ in range(B):
            who = torch.randperm(len(self.names), generator=self.g)[:self.K]
            row = []
            for j, i in enumerate(who.tolist()):
                pool = self.clips[self.names[i]]
                n = int(self.length * CROP_HEADROOM) if self.augment_rate else self.length   # room for speed-up
                x = _crop(pool[int(torch.randint(len(pool), (1,), generator=self.g))], n, self.g)
                if self.augment_rate:
                    x = augment(x, self.augment_rate, self.g)[:self.length]
                x = x / (x.pow(2).mean().sqrt() + 1e-8)                     # unit RMS
                gain_db = 0.0 if j == 0 else float(torch.empty(1).uniform_(
                    -self.snr_db / 2, self.snr_db / 2, generator=self.g))
                row.append(x * 10 ** (gain_db / 20))
            srcs.append(torch.stack(row))
        sources = torch.stack(srcs) * 0.1                                  # headroom
        return sources.sum(1, keepdim=True), sources


class MixtureView:
    """The unsupervised view: ``mixtures(B)`` -> [B, 1, T] and nothing else.

    Built either from a ``ClipMixer`` (references exist but stay hidden) or from a folder of
    mixture recordings (the real unsupervised case, no references at all).
    """

    def __init__(self, mixer: ClipMixer | None = None, folder: str | None = None,
                 sample_rate: int = 16000, length: int = 32000, generator=None):
        if (mixer is None) == (folder is None):
            raise ValueError("give exactly one of mixer or folder")
        if mixer is not None:
            def mixtures(B: int):
                return mixer.batch(B)[0]
        else:
            import torch
            recs = [read_audio(p, sample_rate) for p in list_audio(folder)]

            def mixtures(B: int):
                picks = torch.randint(len(recs), (B,), generator=generator).tolist()
                return torch.stack([_crop(recs[i], length, generator) for i in picks])[:, None]
        self.mixtures = mixtures


def librimix_items(csv_path: str) -> list[dict]:
    """Rows of a LibriMix metadata CSV (``mixture_path``, ``source_1_path``, ... columns).

    Returns [{"mixture": path, "sources": [paths]}]. Relative paths are taken from the CSV's
    folder's parent layout as LibriMix writes them (absolute in the official scripts).
    """
    if not os.path.isfile(csv_path):
        raise AudioDataError(f"{csv_path}: no such LibriMix metadata file")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows or "mixture_path" not in rows[0]:
        raise AudioDataError(f"{csv_path}: not a LibriMix metadata CSV (no mixture_path column)")
    keys = sorted((k for k in rows[0] if k.startswith("source_") and k.endswith("_path")),
                  key=lambda k: int(k.split("_")[1]))
    return [{"mixture": r["mixture_path"], "sources": [r[k] for k in keys]} for r in rows]



class LibriMixSampler:
    """Random crops of LibriMix mixtures and their sources, read from disk on demand.

    ``items`` from ``librimix_items``. ``batch(B)`` -> (m [B, 1, T], sources [B, K, T]) like
    ``ClipMixer``; the mixture is the sum of the (resampled) sources, so SURF (1) holds exactly
    whatever noise the LibriMix recipe added to its own mixture file. Wrap it in a
    ``MixtureView`` for the unsupervised stages.
    """

    def __init__(self, items: list[dict], sample_rate: int, length: int, generator):
        if not items:
            raise AudioDataError("LibriMix metadata lists no mixtures")
        self.items, self.sr, self.length, self.g = items, sample_rate, length, generator

    def batch(self, B: int):
        import torch
        rows = []
        for _ in range(B):
            item = self.items[int(torch.randint(len(self.items), (1,), generator=self.g))]
            srcs = [read_audio(path, self.sr) for path in item["sources"]]
            n = min(len(x) for x in srcs)
            start = int(torch.randint(max(1, n - self.length + 1), (1,), generator=self.g))
            crops = [x[start:start + self.length] for x in srcs]            # one start for all
            rows.append(torch.stack([torch.nn.functional.pad(c, (0, self.length - len(c))) for c in crops]))
        sources = torch.stack(rows)
        return sources.sum(1, keepdim=True), sources


DEMO_MIX_SPEAKERS = ("klettres-it", "klettres-ru")


def demo_mixture_sources(speakers: tuple = DEMO_MIX_SPEAKERS, gap: float = 0.15):
    """The two voices of the README's example input [2, T] at 16 kHz: two held-out speakers,
    each speaking all of its demo clips back to back (with ``gap`` seconds of silence between
    them), cut to the shorter one and set to RMS 0.1 each (0 dB). They are the references
    ``demo_mix.wav`` can be scored against (it is their sum, as 16-bit PCM)."""
    import torch
    clips = load_clips(DEMO_DIR, SAMPLE_RATE, "test")
    pause = torch.zeros(int(gap * SAMPLE_RATE))
    voices = [torch.cat([torch.cat([c, pause]) for c in clips[s]]) for s in speakers]
    n = min(len(v) for v in voices)
    return torch.stack([v[:n] / v[:n].pow(2).mean().sqrt() * 0.1 for v in voices])   # 0 dB, RMS 0.1 each


def make_demo_mixture(path: str, speakers: tuple = DEMO_MIX_SPEAKERS, gap: float = 0.15) -> None:
    """Write the README's example input: ``demo_mixture_sources`` summed, 16 kHz, 16-bit wav."""
    import soundfile as sf
    voices = demo_mixture_sources(speakers, gap)
    tmp = path + ".tmp.wav"
    sf.write(tmp, (voices[0] + voices[1]).numpy(), SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "build-corpus":        # the speech corpus, corpus.py
        from surf_mini import corpus
        corpus.main(["speech"] + sys.argv[2:])
        sys.exit(0)
    if len(sys.argv) != 3 or sys.argv[1] not in ("make-demo", "make-mix"):
        raise SystemExit("usage: python -m surf_mini.audio_data make-demo OUT_DIR | make-mix OUT.wav "
                         "| build-corpus OUT_DIR")
    (make_demo if sys.argv[1] == "make-demo" else make_demo_mixture)(sys.argv[2])
