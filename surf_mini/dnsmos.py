"""DNSMOS P.835, offline: the reference-free SIG / BAK / OVRL speech-quality score (Reddy et al. 2022).

An optional extra (``pip install -r requirements-dnsmos.txt``): onnxruntime and speechmos's
ONNX model are imported only when a score is asked for; without them every entry point raises
``DNSMOSMissing``, whose one-line message is the install command. ``dnsmos(wave, rate)``
scores one signal, ``dnsmos_file(path)`` a file read window by window, ``dnsmos_scores(x,
rate)`` a batch [B, K, T] (metrics.audio_scores' DNSMOS columns). Used by separate.py
``--score`` and the audio tables' ``--dnsmos`` (docs/speech.md, "DNSMOS").
"""
from __future__ import annotations

import numpy as np
import torch

#
# DNSMOS P.835 (Reddy, Gopal and Cutler, ICASSP 2022) is a reference-free speech-quality
# model: a CNN trained on listeners' ITU-T P.835 ratings predicts, from the signal alone,
#   SIG   the quality of the speech itself (1-5),
#   BAK   how intrusive the background noise is (1-5, higher is quieter),
#   OVRL  the overall quality (1-5).
# It needs no reference, so it scores the input mixture and every separated output alike,
# and the references themselves (train_audio.py --dnsmos's ceiling row).
#
# What runs here is the ONNX model that Microsoft ships in the ``speechmos`` wheel
# (``speechmos/dnsmos_models/sig_bak_ovr.onnx``), called through onnxruntime with the
# windowing and the polynomial mapping of speechmos's ``dnsmos.run`` (the same as the DNS
# Challenge's ``dnsmos_local.py``); tests/test_dnsmos.py checks the numbers against
# speechmos's own. We do not call ``speechmos.dnsmos.run`` itself because it
#   * imports librosa (seconds, and numba) only for the P.808 side model we do not report,
#   * builds its ONNX sessions with onnxruntime's default thread pool (every core),
#   * refuses samples outside [-1, 1] (separate.py's float outputs may exceed full scale),
#   * loops forever on an empty signal and copies a short one by repeated np.append.
# The rule, as in the reference implementation:
#   * the model takes 16 kHz audio in windows of 9.01 s (144160 samples); other rates are
#     resampled to 16 kHz first with torchaudio.functional.resample (the project's speech
#     models run at 8 kHz: their 8 kHz signals hold nothing above 4 kHz, and DNSMOS hears
#     that band as missing, so 8 kHz speech scores below the same speech recorded at 16 kHz);
#   * a signal shorter than 9.01 s is repeated (doubled until it is at least 9.01 s long);
#   * windows start every second: int(floor(n / 16000) - 9.01) + 1 of them for n samples
#     (so the last second or so of a long signal is never scored, as in the reference);
#   * each window's three raw outputs go through DNSMOS's fitted polynomials (below), and
#     the scores are the means over the windows.
# Cost (docs/benchmarks.md): about 0.75 s of one CPU core per window, so DNSMOS is slow next
# to the other metrics; it is only computed when asked (separate.py --score,
# train_audio.py --dnsmos).

DNSMOS_RATE = 16000                     # the model's sample rate
DNSMOS_WINDOW_S = 9.01                  # its input length in seconds (reference: INPUT_LENGTH)
DNSMOS_WINDOW = int(DNSMOS_WINDOW_S * DNSMOS_RATE)      # 144160 samples
DNSMOS_HOP = DNSMOS_RATE                # one window a second
DNSMOS_INSTALL = "pip install -r requirements-dnsmos.txt"
# The polynomials that map the model's raw outputs to P.835 MOS (highest power first), the
# non-personalized ones of speechmos / dnsmos_local.py (``get_polyfit_val``).
DNSMOS_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439),
               "bak": (-0.13166888, 1.60915514, -0.39604546),
               "ovrl": (-0.06766283, 1.11546468, 0.04602535)}

_DNSMOS_SESSIONS: dict = {}             # intra-op threads -> onnxruntime.InferenceSession


class DNSMOSMissing(ImportError):
    """The optional DNSMOS extra (speechmos's ONNX model, onnxruntime) is not installed.
    Its message is the one line to show: what is missing and the install command."""

    def __init__(self, what: str = "speechmos and onnxruntime"):
        super().__init__(f"DNSMOS needs the optional extra ({what} not found): {DNSMOS_INSTALL}")


def dnsmos_session(threads: int = 1):
    """The ONNX session of DNSMOS P.835's SIG/BAK/OVRL model, created once per thread count.

    Imports onnxruntime and finds speechmos's model file only now (the extra is optional: a
    plain install never imports either); raises ``DNSMOSMissing`` when they are absent.
    ``threads``: onnxruntime's intra-op threads (1 by default, so that DNSMOS beside a
    training or a separation takes one core; onnxruntime's own default is every core).
    """
    if threads in _DNSMOS_SESSIONS:
        return _DNSMOS_SESSIONS[threads]
    try:
        import onnxruntime as ort
    except (ImportError, OSError):
        raise DNSMOSMissing("onnxruntime") from None
    try:
        import speechmos                    # an empty package: only the model files are used
    except ImportError:
        raise DNSMOSMissing("speechmos") from None
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(speechmos.__file__)), "dnsmos_models",
                        "sig_bak_ovr.onnx")
    if not os.path.isfile(path):
        raise DNSMOSMissing(f"speechmos's {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3             # errors only: no provider chatter on stderr
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    _DNSMOS_SESSIONS[threads] = session
    return session


def dnsmos_available(threads: int = 1) -> bool:
    """True when ``dnsmos`` can run (the extra is installed; the session is then cached)."""
    try:
        dnsmos_session(threads)
        return True
    except DNSMOSMissing:
        return False


def _resample_margin(sample_rate: int) -> int:
    """Input samples of context on each side of a window resampled on its own, so that its
    16 kHz samples equal those of resampling the whole signal at once. torchaudio's sinc
    resampler reads ``width`` input samples on each side of an output (width <=
    ceil(6 * orig / (0.99 * min(orig, new))), rates divided by their gcd) and works on frames
    of ``orig`` input samples; the margin is a whole number of frames, two more than needed."""
    import math
    g = math.gcd(sample_rate, DNSMOS_RATE)
    orig, new = sample_rate // g, DNSMOS_RATE // g
    width = math.ceil(6 * orig / (0.99 * min(orig, new)))
    return orig * (-(-width // orig) + 2)


def _resample16(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 [n] at ``sample_rate`` -> float32 at 16 kHz (torchaudio.functional.resample)."""
    if sample_rate == DNSMOS_RATE:
        return x
    import torchaudio
    return torchaudio.functional.resample(torch.from_numpy(x), sample_rate, DNSMOS_RATE).numpy()


def _dnsmos_windows(read, length: int, sample_rate: int, hop: int = 1):
    """The 16 kHz windows DNSMOS scores, one at a time, as (key, float32 [144160]).

    ``read(start, n)`` returns up to ``n`` float32 samples of the signal from ``start`` (at
    ``sample_rate``). Windows with the same key hold the same samples (a short signal,
    repeated: windows a whole period apart), so a caller may reuse that window's scores.

    A signal of at least 9.01 s at 16 kHz is never held whole: each window is read (and
    resampled, with ``_resample_margin`` samples of context) on its own, so memory is a
    window, whatever the length. A shorter one is read whole and repeated, as the reference
    does (by doubling until it is at least 9.01 s long).
    """
    if length <= 0:
        raise ValueError("DNSMOS: the signal holds no samples")
    n16 = -(-length * DNSMOS_RATE // sample_rate)          # torchaudio's output length, ceil
    if n16 < DNSMOS_WINDOW:                                 # short: read whole, repeat
        x16 = _resample16(np.ascontiguousarray(read(0, length), dtype=np.float32), sample_rate)[:n16]
        period, copies = len(x16), 1
        while period * copies < DNSMOS_WINDOW:
            copies *= 2
        tiled = np.tile(x16, copies)                        # the reference's doubled signal
        total = len(tiled)
        get = lambda s: (s % period, tiled[s:s + DNSMOS_WINDOW])              # noqa: E731
    else:
        total = n16
        margin = _resample_margin(sample_rate)              # 0 is never used at 16 kHz
        n_in = -(-DNSMOS_WINDOW * sample_rate // DNSMOS_RATE)  # input samples of one window

        def get(s):
            if sample_rate == DNSMOS_RATE:
                return s, np.ascontiguousarray(read(s, DNSMOS_WINDOW), dtype=np.float32)
            start = s // DNSMOS_RATE * sample_rate - margin  # window s starts at second s/16000
            seg = np.zeros(n_in + 2 * margin, np.float32)   # zeros outside the signal, as torchaudio pads
            lo = max(0, start)
            got = np.asarray(read(lo, len(seg) - (lo - start)), dtype=np.float32)
            seg[lo - start:lo - start + len(got)] = got
            off = margin * DNSMOS_RATE // sample_rate       # a whole number of output frames
            return s, _resample16(seg, sample_rate)[off:off + DNSMOS_WINDOW]
    hops = int(np.floor(total / DNSMOS_RATE) - DNSMOS_WINDOW_S) + 1   # the reference's count
    for idx in range(0, hops, hop):                         # hop 1: every one of them
        s = idx * DNSMOS_HOP
        if s + DNSMOS_WINDOW > total:                       # the reference skips a short window
            continue
        yield get(s)


def _dnsmos_mos(raw) -> dict:
    """The model's three raw outputs -> P.835 MOS through DNSMOS's polynomials (the same
    np.poly1d on the same float32 values as the reference, so the same float64 result)."""
    return {k: np.poly1d(DNSMOS_POLY[k])(v) for k, v in zip(("sig", "bak", "ovrl"), raw)}


def dnsmos_stream(read, length: int, sample_rate: int, threads: int = 1, hop: int = 1) -> list[dict]:
    """DNSMOS of each window of a signal given by ``read(start, n)`` (see ``_dnsmos_windows``)
    of ``length`` samples at ``sample_rate``: a list of {"sig", "bak", "ovrl"}, one per window.
    ``hop``: score every hop-th of the reference's windows (one a second); 1 is the reference,
    9 windows that barely overlap (9 s apart), a ninth of the cost (``dnsmos_file``)."""
    session = dnsmos_session(threads)
    name = session.get_inputs()[0].name                    # "input_1": float32 [N, 144160]
    rows, seen = [], {}
    for key, window in _dnsmos_windows(read, length, sample_rate, hop):
        if key not in seen:                                 # same samples, same scores
            seen[key] = _dnsmos_mos(session.run(None, {name: window[None]})[0][0])
        rows.append(seen[key])
    return rows


def _dnsmos_mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in ("sig", "bak", "ovrl")}


def dnsmos(wave, sample_rate: int, threads: int = 1) -> dict:
    """DNSMOS P.835 of one signal: ``{"sig", "bak", "ovrl"}``, each the mean over its windows.

    wave: a 1-D numpy array or torch tensor at ``sample_rate`` (any level; speechmos refuses
    samples outside [-1, 1], this scores them as they are). Other rates than 16 kHz are
    resampled to 16 kHz with torchaudio.functional.resample (the model's rate; the project's
    speech models run at 8 kHz). Scored in DNSMOS's own 9.01 s windows, one a second, a short
    signal repeated first, as the reference implementation (speechmos / the DNS Challenge's
    dnsmos_local.py) does; a long signal is read window by window (each window converted to
    float32 and resampled on its own), so it is never held twice. Needs the optional extra
    (``DNSMOSMissing``, whose message is the install line, otherwise); onnxruntime runs on
    ``threads`` intra-op threads, its session created once.
    """
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu()
        read = lambda s, n: wave[s:s + n].float().numpy()           # noqa: E731
    else:
        wave = np.asarray(wave)
        read = lambda s, n: wave[s:s + n].astype(np.float32)          # noqa: E731
    if wave.ndim != 1:
        raise ValueError(f"dnsmos takes one 1-D signal, got shape {tuple(wave.shape)}")
    return _dnsmos_mean(dnsmos_stream(read, len(wave), int(sample_rate), threads))


def dnsmos_file(path: str, threads: int = 1, hop: int = 1) -> dict:
    """``dnsmos`` of an audio file, read window by window from disk (soundfile; several
    channels are averaged to mono and non-finite samples set to 0, as separate.py reads).
    ``hop`` > 1 scores every hop-th of the reference's windows only (``dnsmos_stream``)."""
    import soundfile as sf
    with sf.SoundFile(path) as f:
        def read(start: int, n: int) -> np.ndarray:
            f.seek(start)
            x = f.read(n, dtype="float32", always_2d=True)
            return np.where(np.isfinite(x), x, 0.0).mean(1).astype(np.float32)
        return _dnsmos_mean(dnsmos_stream(read, f.frames, f.samplerate, threads, hop))


def dnsmos_scores(x: torch.Tensor, sample_rate: int, threads: int = 1) -> dict:
    """``dnsmos`` of every signal of x [B, K, T]: ``{"sig", "bak", "ovrl"}``, each [B, K]."""
    rows = [[dnsmos(x[b, k], sample_rate, threads) for k in range(x.shape[1])] for b in range(x.shape[0])]
    return {key: torch.tensor([[r[key] for r in row] for row in rows], dtype=torch.float64)
            for key in ("sig", "bak", "ovrl")}
