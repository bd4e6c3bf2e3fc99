"""FUSS-like mixtures: events, counts, levels, onsets (universal sound separation, SURF Table 3).

FUSS [2] mixes sound events of any kind, and a separator must also get their number right.
This module draws such mixtures from the offline sound-event set that
``python prepare/fuss.py DIR`` builds from Debian packages (docs/fuss.md; a 36-event
sample ships in ``assets/fuss_sample``). The recipe follows FUSS's scaper script [3]:

  * every mixture has **one background**, a long clip that spans the whole mixture (random
    start; looped if shorter, as scaper does), and ``randint(0, 3)`` **foreground** events:
    1-4 sources, each count with probability 1/4 (``FUSS_COUNTS``);
  * foreground levels: SNR uniform in [-5, 25] dB against the background (scaper measures
    LUFS; here the RMS of each event's own samples), the background at ``REF_DB``;
  * foreground onsets: anywhere the whole event fits (scaper draws the onset uniformly in
    [0, 10 s) and pulls a late event back so that it ends with the mixture, which piles
    onsets at the end; here every fitting onset is equally likely). An event longer than
    the mixture is cut at a random start (scaper's ``source_time``).

The sources of a mixture come from distinct original clips, so two pieces of one recording
never play against each other. Returned: the mixture ``[B, 1, T]``, the references
``[B, 4, T]`` and the number of sources ``[B]``. Slot 0 holds the background (when the mixture
has one), the foreground events follow in draw order, and the remaining slots are exactly
zero. The mixture is the sum of the references, SURF (1), exactly: it is computed as that sum
after every gain (including the anti-clipping one) has been applied.

Length: FUSS uses 10 s at 16 kHz. The CPU default here is 4 s at 8 kHz (``CPU_SECONDS``,
``CPU_SAMPLE_RATE``): 8 kHz is the rate of the CPU locoformer preset, and 4 s, 12.5 times
fewer samples than FUSS, still holds several 0.25-5 s events with their onsets and offsets
inside the mixture, which is what makes the task one of counting as well as separating.

References
  [1] SURF, "Separation via Unsupervised Remixing Flow" (arXiv 2606.04921): (1) m = sum_k x_k.
  [2] S. Wisdom, H. Erdogan, D. P. W. Ellis, R. Serizel, N. Turpault, E. Fonseca, J. Salamon,
      P. Seetharaman, J. R. Hershey, "What's All the FUSS About Free Universal Sound
      Separation Data?", ICASSP 2021.
  [3] github.com/google-research/sound-separation, datasets/fuss/make_ss_examples.py:
      ``num_bg_events = 1``, ``np.random.randint(min_fg_events=0, max_fg_events + 1 = 4)``,
      ``snr_spec = ('uniform', -5, 25)``, ``ref_db = -55``, ``duration = 10.0``,
      ``event_time_spec = ('uniform', 0.0, duration)``, ``sample_rate = 16000``; and the
      FUSS README: "Each 10 second mixture contains between 1 and 4 sources ... Every
      mixture contains one background source, which is active for the entire duration."
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import torch

from surf_mini.audio_data import AudioDataError, read_audio

MAX_SOURCES = 4
FUSS_COUNTS = (0.25, 0.25, 0.25, 0.25)     # P(1, 2, 3, 4 sources): 1 background + randint(0, 3) events [3]
FUSS_SNR_DB = (-5.0, 25.0)                 # foreground level against the background [3]
REF_DB = -40.0                             # background RMS in dBFS (scaper: -55 LUFS; only ratios matter)
FUSS_SECONDS, FUSS_SAMPLE_RATE = 10.0, 16000
CPU_SECONDS, CPU_SAMPLE_RATE = 4.0, 8000
FUSS_SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "fuss_sample")


@dataclass
class EventPool:
    """Events grouped by original clip: ``foreground[i]`` / ``background[i]`` are the pieces
    (tensors [T_j]) of one recording, ``*_origin[i]`` its path in the Debian package."""
    foreground: list
    background: list
    foreground_origin: list
    background_origin: list
    sample_rate: int


def load_events(folder: str = FUSS_SAMPLE_DIR, sample_rate: int = CPU_SAMPLE_RATE,
                split: str | None = None) -> EventPool:
    """The events of a built set (or the shipped sample) listed in ``folder``/manifest.csv,
    read at ``sample_rate``; only the rows of ``split`` ("train", "valid", "test") if given."""
    manifest = os.path.join(folder, "manifest.csv")
    if not os.path.isfile(manifest):
        raise AudioDataError(f"{folder}: no manifest.csv; build the set with python prepare/fuss.py DIR")
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if split is None or r["split"] == split]
    if not rows:
        raise AudioDataError(f"{folder}: no events for split {split!r}")
    groups: dict = {"foreground": {}, "background": {}}
    for r in rows:
        if r.get("kind") not in groups:
            raise AudioDataError(f"{manifest}: kind must be foreground or background, not {r.get('kind')!r}")
        groups[r["kind"]].setdefault(r["origin"], []).append(read_audio(os.path.join(folder, r["file"]), sample_rate))
    fg, bg = groups["foreground"], groups["background"]
    return EventPool([fg[o] for o in fg], [bg[o] for o in bg], list(fg), list(bg), sample_rate)


def _check_recipe(pool: EventPool, counts, p_background: float) -> torch.Tensor:
    probs = torch.as_tensor(counts, dtype=torch.float64)
    if probs.shape != (MAX_SOURCES,) or (probs < 0).any() or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError(f"counts must be {MAX_SOURCES} probabilities of 1..{MAX_SOURCES} sources summing to 1, "
                         f"got {list(map(float, probs.flatten()))}")
    if not 0.0 <= p_background <= 1.0:
        raise ValueError(f"p_background must be in [0, 1], got {p_background}")
    if p_background > 0 and not pool.background:
        raise AudioDataError("the event pool has no background clips; use p_background=0")
    need = MAX_SOURCES - (1 if p_background == 1.0 else 0)
    if len(pool.foreground) < need:
        raise AudioDataError(f"need at least {need} foreground clips to mix, found {len(pool.foreground)}")
    return probs


def _pick(clips: list, g: torch.Generator) -> torch.Tensor:
    return clips[int(torch.randint(len(clips), (1,), generator=g))]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt().clamp_min(1e-8)


def _audible_start(x: torch.Tensor, T: int, g: torch.Generator) -> int:
    """A random start for a T-sample cut of ``x`` (len(x) >= T) whose first sample is not
    silent, so the cut is never all-zero (a silent slot would miscount the sources)."""
    starts = torch.nonzero(x[:len(x) - T + 1]).squeeze(1)
    if len(starts) == 0:                        # silent up to len(x) - T: start at the last start
        return len(x) - T
    return int(starts[torch.randint(len(starts), (1,), generator=g)])


def _background(x: torch.Tensor, T: int, g: torch.Generator) -> torch.Tensor:
    """A background [T]: looped if shorter than T (as scaper loops it), then cut at a random start."""
    if len(x) < T:
        x = x.repeat(-(-T // len(x)) + 1)                                    # one more: any phase can start
    start = _audible_start(x, T, g)
    return x[start:start + T]


def _event(x: torch.Tensor, T: int, g: torch.Generator) -> torch.Tensor:
    """A foreground event that fits in T samples: cut at a random start if longer (scaper's
    ``source_time``)."""
    if len(x) <= T:
        return x
    start = _audible_start(x, T, g)
    return x[start:start + T]


def _background_at(pool: EventPool, T: int, g: torch.Generator, ref: float) -> torch.Tensor:
    """A random piece of a random background clip as a [T] background at RMS ``ref`` ([3] ref_db)."""
    bg = _background(_pick(_pick(pool.background, g), g), T, g)
    return bg * (ref / _rms(bg))


def _fix_clipping(x: torch.Tensor) -> torch.Tensor:
    """Scale the sources [B, S, T] of a mixture that would clip so that its peak is 1, all
    sources alike (scaper's ``fix_clipping``); the others are left as they are."""
    peak = x.sum(1).abs().amax(-1).clamp_min(1.0)                            # [B]; > 1 only if it would clip
    return x / peak[:, None, None]


def fuss_mixtures(pool: EventPool, B: int, length: int, generator: torch.Generator,
                  counts=FUSS_COUNTS, p_background: float = 1.0, snr_db: tuple = FUSS_SNR_DB,
                  ref_db: float = REF_DB):
    """``B`` FUSS-like mixtures of ``length`` samples -> (m [B, 1, T], x [B, 4, T], n [B]).

    ``n`` (long) is the number of sources, drawn from ``counts`` (probabilities of 1..4; FUSS:
    1/4 each). With probability ``p_background`` (FUSS: 1) one of them is a background in slot
    0; the others are foreground events at ``snr_db`` against ``ref_db``, at onsets where they
    fit; the recipe of FUSS's scaper script [3], levels as RMS instead of LUFS. Unused slots
    are exactly zero and m == x.sum(1, keepdim=True) exactly, SURF (1). Every random choice
    comes from ``generator``: the same generator state gives the same batch.
    """
    probs = _check_recipe(pool, counts, p_background)
    if B < 1 or length < 1:
        raise ValueError(f"B and length must be positive, got B={B}, length={length}")
    g, T = generator, length
    ref = 10 ** (ref_db / 20)
    lo, hi = snr_db
    x = torch.zeros(B, MAX_SOURCES, T)                                       # [B, 4, T]
    n = torch.multinomial(probs, B, replacement=True, generator=g) + 1       # [B], in 1..4
    for b in range(B):
        slot = 0
        if float(torch.rand(1, generator=g)) < p_background:
            x[b, 0] = _background_at(pool, T, g, ref)
            slot = 1
        for i in torch.randperm(len(pool.foreground), generator=g)[:int(n[b]) - slot].tolist():  # distinct clips
            ev = _event(_pick(pool.foreground[i], g), T, g)
            snr = lo + (hi - lo) * float(torch.rand(1, generator=g))
            onset = int(torch.randint(T - len(ev) + 1, (1,), generator=g))  # every onset where it fits
            x[b, slot, onset:onset + len(ev)] = ev * (ref * 10 ** (snr / 20) / _rms(ev))   # [3] snr_spec
            slot += 1
    x = _fix_clipping(x)
    return x.sum(1, keepdim=True), x, n


# Noisy speech, SURF section 5.2 (Table 3, right): "We mix samples from the LibriSpeech
# test-clean set with the background source in each FUSS mixture, at a randomly chosen SNR
# between (-5, 15) dB". Here: held-out speech over a background of the test events.
NOISY_SPEECH_SNR_DB = (-5.0, 15.0)


def noisy_speech(speech: dict, pool: EventPool, B: int, length: int, generator: torch.Generator,
                 snr_db: tuple = NOISY_SPEECH_SNR_DB, ref_db: float = REF_DB):
    """``B`` mixtures of one speech crop over one FUSS-like background -> (m [B, 1, T],
    x [B, 2, T]): slot 0 the speech, slot 1 the background, m == x.sum(1) exactly, SURF (1).

    ``speech``: {speaker: [clips [T_j]]} at the pool's rate (``audio_data.load_clips``); a
    random speaker, clip and crop (zero-padded when shorter). The background is drawn as in
    ``fuss_mixtures`` and set to ``ref_db``, the speech to an SNR uniform in ``snr_db`` over it:
    the level the universal models were trained at. The paper then peak-normalizes to (-1, 1);
    here only a mixture that would clip is scaled down (SI-SDR does not see the level, and a
    separator trained at ``ref_db`` is not shown a level it never saw).
    """
    from surf_mini.audio_data import _crop
    if not pool.background:
        raise AudioDataError("the event pool has no background clips to put speech over")
    names = sorted(speech)
    if not names or B < 1 or length < 1:
        raise ValueError(f"need speech clips, B >= 1 and length >= 1; got {len(names)} speakers, "
                         f"B={B}, length={length}")
    g, T, ref = generator, length, 10 ** (ref_db / 20)
    x = torch.zeros(B, 2, T)                                                 # [B, 2, T]
    for b in range(B):
        x[b, 1] = _background_at(pool, T, g, ref)
        s = _crop(_pick(speech[names[int(torch.randint(len(names), (1,), generator=g))]], g), T, g)
        snr = snr_db[0] + (snr_db[1] - snr_db[0]) * float(torch.rand(1, generator=g))
        x[b, 0] = s * (ref * 10 ** (snr / 20) / _rms(s))
    x = _fix_clipping(x)
    return x.sum(1, keepdim=True), x


def active_sources(x: torch.Tensor) -> torch.Tensor:
    """Number of references [B, K, T] that are not all-zero -> [B] long."""
    if x.dim() != 3:
        raise ValueError(f"references must be [B, K, T], got shape {list(x.shape)}")
    return (x != 0).any(-1).sum(1)


def count_proportions(n: torch.Tensor, max_sources: int = MAX_SOURCES) -> torch.Tensor:
    """Share of mixtures with 1..max_sources sources, from counts ``n`` [B] -> [max_sources]."""
    return torch.bincount(n.long() - 1, minlength=max_sources)[:max_sources].double() / max(len(n), 1)


class FussMixer:
    """``fuss_mixtures`` with a fixed pool, length and generator, for training loops:
    ``batch(B)`` -> (m [B, 1, T], references [B, 4, T]) like ``audio_data.ClipMixer`` (wrap it
    in ``audio_data.MixtureView`` for the unsupervised stages); the number of sources of the
    last batch is in ``last_counts`` (and ``active_sources(references)`` recomputes it)."""

    def __init__(self, pool: EventPool, length: int, generator: torch.Generator, **recipe):
        _check_recipe(pool, recipe.get("counts", FUSS_COUNTS), recipe.get("p_background", 1.0))
        self.pool, self.length, self.g, self.recipe = pool, length, generator, recipe
        self.K = MAX_SOURCES
        self.last_counts = None

    def batch(self, B: int):
        m, x, self.last_counts = fuss_mixtures(self.pool, B, self.length, self.g, **self.recipe)
        return m, x
