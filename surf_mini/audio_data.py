"""Audio data: the small speech demo set that ships with the repository, and the mixtures
made from it or from any folder of clips, a built corpus or LibriMix.

The demo set (``assets/demo_speech``, ``DEMO_DIR``) holds 120 single-speaker clips of 30
speakers, 25 in ``train`` and 5 held out in ``test``: real voices from Debian's
``klettres-data`` and synthetic ones from ``flite`` and ``espeak-ng``, 16 kHz mono 16-bit FLAC,
with a ``manifest.csv`` (file, speaker, origin, split). ``prepare/demo.py`` built it, and the
README's demo mixture ``assets/demo_mix.wav`` (the sum of ``demo_mixture_sources``); the larger
speech corpus, which has the same layout, is built by ``prepare/speech.py`` (docs/speech.md).
Nothing here builds data: this module reads it.

Mixtures are made on the fly from single-speaker clips (``load_clips``, ``ClipMixer``; the
supervised baselines and the evaluation sets need the references, the unsupervised methods
see only the mixtures, ``MixtureView``), with optional augmentation of each source before
the sum, so that the mixture stays the sum of its sources (SURF (1)).
"""
from __future__ import annotations

import csv
import os

SAMPLE_RATE = 16000            # the demo set's and the speech corpus's rate


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
