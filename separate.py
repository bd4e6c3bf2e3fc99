"""Separate the speakers of audio files with a trained model (default: the shipped SURF-SR one).

    python separate.py mix.wav                      # writes mix_s1.wav, mix_s2.wav beside it
    python separate.py a.wav b.flac recordings/ --out-dir separated/
    python separate.py mix.wav --checkpoint runs/audio-sr/sr.pt --steps 25 --device cuda

Any sample rate (resampled with torchaudio to the model's rate and back), any channel count
(mixed down to mono, with a note), any length: the signal is cut into overlapping chunks of
``--chunk`` seconds, each chunk is separated on its own (flows: Euler from a fresh x_0,
SURF (4) and FLOSS (7); regression models: one pass), the outputs of each chunk are put in
the order of the previous chunk's by PIT on their overlap (SURF (3) with the overlap as the
reference), and the chunks are cross-faded with weights that sum to one, so the outputs still
add up to the mixture (SURF (1)). Memory depends on the chunk, not on the file's length
(apart from the signal itself).

The input level is normalized to the level the model was trained at (the flows' x_0 noise
has a fixed scale, SURF (4)) and restored on output. Outputs quieter than ``--silence-db``
relative to the mixture are not written (FUSS's rule for "no source here"), unless
``--keep-silent``; ``--num-sources N`` merges the outputs down to N first
(``mixit.merge_outputs``, which keeps their sum).

Every output goes to a temporary file first and is renamed once all outputs of that input are
written: an error leaves no partial file. Bad input gives one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CHECKPOINT = os.path.join(HERE, "surf_mini", "assets", "surf_sr_demo.pt")
TRAINING_RMS = 0.1 * 2 ** 0.5      # audio_data.ClipMixer: two sources at RMS 0.1 each
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


class SeparationError(Exception):
    """A problem with one input or the output folder; the message is the one line shown."""


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

def load_model(path: str, device: str = "cpu"):
    """(network, sample_rate) from a train_audio.py checkpoint (full or ``--export``-ed)."""
    import train_audio
    ckpt = train_audio.read_checkpoint(path)               # one-line SystemExit when unusable
    net = train_audio.network_from(ckpt).to(device).eval().requires_grad_(False)
    net.shaping = ckpt.get("shaping", "plain")             # how x_0's noise was shaped in training
    return net, int(ckpt["sample_rate"])


def is_flow(net) -> bool:
    return getattr(net.config, "mode", "regression") == "flow"


def outputs_of(net) -> int:
    c = net.config
    return getattr(c, "num_sources", None) or c.num_outputs


# --------------------------------------------------------------------------------------
# Chunked separation
# --------------------------------------------------------------------------------------

def _crossfade(n: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """Weights of one chunk [n]: linear ramps over the overlaps, so neighbours sum to 1."""
    w = torch.ones(n, dtype=torch.float64)
    ramp = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
    if overlap and not first:
        w[:overlap] = ramp
    if overlap and not last:
        w[n - overlap:] = ramp.flip(0)
    return w


@torch.no_grad()
def separate_signal(net, x: torch.Tensor, sample_rate: int, steps="floss5", chunk_s: float = 4.0,
                    overlap_s: float = 1.0, batch: int = 4, seed: int = 0,
                    device: str = "cpu") -> torch.Tensor:
    """Separate one mono signal at the model's rate: x [T] -> [K, T], summing to x.

    Chunks of ``chunk_s`` seconds hop by ``chunk_s - overlap_s``; a signal shorter than a
    chunk is padded to one. ``batch`` chunks are separated at a time (memory is set by
    ``chunk_s`` and ``batch``, not by T).
    """
    from surf_mini.flow import euler_sample, initial_state
    from surf_mini.pit import apply_permutation, best_permutation
    T = x.shape[-1]
    n = max(int(round(chunk_s * sample_rate)), getattr(net.config, "n_fft", 0) or 1)
    ov = min(int(round(overlap_s * sample_rate)), n // 2)
    hop = n - ov
    count = 1 if T <= n else 1 + -(-(T - n) // hop)                          # ceil
    total = (count - 1) * hop + n
    padded = torch.nn.functional.pad(x.double(), (0, total - T))
    starts = [i * hop for i in range(count)]
    K = outputs_of(net)
    out = torch.zeros(K, total, dtype=torch.float64)
    g = torch.Generator(device=device).manual_seed(seed)
    prev = None                                                              # previous chunk [K, n]
    for b in range(0, count, batch):
        group = starts[b:b + batch]
        m = torch.stack([padded[s:s + n] for s in group])[:, None].float().to(device)   # [b, 1, n]
        if is_flow(net):
            x0 = initial_state(m, K, getattr(net, "shaping", "plain"), generator=g)   # SURF (4)
            est = euler_sample(net, m, K, steps, x0=x0)                       # FLOSS (7)
        else:
            est = net(m)
        est = est.double().cpu()                                              # [b, K, n]
        for j, s in enumerate(group):
            e = est[j]
            if prev is not None and ov:                                       # PIT on the overlap
                perm = best_permutation(prev[None, :, hop:], e[None, :, :ov])
                e = apply_permutation(e[None], perm)[0]
            idx = b + j
            out[:, s:s + n] += e * _crossfade(n, ov, idx == 0, idx == count - 1)
            prev = e
    return out[:, :T]


def _read(path: str) -> tuple[torch.Tensor, int, int]:
    """(mono float64 [T], sample rate, channel count), or SeparationError with one line."""
    import soundfile as sf
    if not os.path.isfile(path):
        raise SeparationError(f"{path}: no such file")
    try:
        data, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception:
        raise SeparationError(f"{path}: not an audio file soundfile can read "
                              f"(wav, flac, ogg, ...)") from None
    if data.shape[0] == 0:
        raise SeparationError(f"{path}: the file holds no samples")
    finite = np.isfinite(data)
    if not finite.any():
        raise SeparationError(f"{path}: every sample is NaN or infinite")
    if not finite.all():
        print(f"note: {path}: {int((~finite).sum())} NaN/infinite samples set to 0", file=sys.stderr)
        data = np.where(finite, data, 0.0)
    return torch.from_numpy(data.mean(1)), sr, data.shape[1]


def _level(x: torch.Tensor, sr: int) -> float:
    """RMS over the 100 ms frames within 40 dB of the loudest one (pauses don't count)."""
    f = max(1, sr // 10)
    frames = torch.nn.functional.pad(x, (0, (-len(x)) % f)).reshape(-1, f).pow(2).mean(1)
    active = frames[frames >= frames.max() * 1e-4]
    return float(active.mean().sqrt())


def separate_file(net, model_sr: int, path: str, out_dir: str | None, args) -> list[str]:
    """Separate one file and write ``<name>_sN.wav``; returns the paths written."""
    import soundfile as sf
    import torchaudio
    from surf_mini.mixit import merge_outputs
    x, sr, channels = _read(path)
    if channels > 1:
        print(f"note: {path}: {channels} channels mixed down to mono", file=sys.stderr)
    level = _level(x, sr)
    if level == 0.0:
        raise SeparationError(f"{path}: the file is silent; nothing to separate")
    y = x / level * TRAINING_RMS
    if sr != model_sr:
        y = torchaudio.functional.resample(y.float(), sr, model_sr).double()
    est = separate_signal(net, y, model_sr, args.steps, args.chunk, args.overlap, args.batch,
                          args.seed, args.device)                                # [K, T']
    if args.num_sources and args.num_sources < est.shape[0]:
        est = merge_outputs(est[None], args.num_sources)[0]
    if sr != model_sr:
        est = torchaudio.functional.resample(est.float(), model_sr, sr).double()
    est = torch.nn.functional.pad(est, (0, max(0, len(x) - est.shape[-1])))[:, :len(x)]
    est = est * (level / TRAINING_RMS)                                          # restore the level
    power = est.pow(2).mean(1)
    keep = list(range(est.shape[0])) if args.keep_silent else \
        [k for k in range(est.shape[0]) if power[k] > x.pow(2).mean() * 10 ** (args.silence_db / 10)]
    dropped = est.shape[0] - len(keep)
    if dropped:
        print(f"note: {path}: {dropped} silent output(s) not written (--keep-silent writes them)",
              file=sys.stderr)
    folder = out_dir or os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    finals, temps = [], []
    try:
        for i, k in enumerate(keep):
            final = os.path.join(folder, f"{stem}_s{i + 1}.wav")
            tmp = os.path.join(folder, f".{stem}_s{i + 1}.tmp{os.getpid()}.wav")
            sig = est[k].numpy()
            subtype = "PCM_16" if np.abs(sig).max() <= 1.0 else "FLOAT"         # no clipping
            temps.append(tmp)
            sf.write(tmp, sig, sr, subtype=subtype)
            finals.append(final)
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    except OSError as e:
        raise SeparationError(f"{folder}: cannot write the outputs ({e.strerror or e})") from None
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return finals


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

def inputs_from(paths: list[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(AUDIO_EXTENSIONS)
                           and not f.startswith("."))
            if not found:
                raise SeparationError(f"{p}: no audio files in this folder")
            files += found
        else:
            files.append(p)
    return files


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="audio files and/or folders of audio files")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="train_audio.py checkpoint (default: the shipped SURF-SR demo model)")
    p.add_argument("--out-dir", help="where to write <name>_sN.wav (default: beside each input)")
    p.add_argument("--steps", type=int, default=5,
                   help="Euler steps for flow models (5: FLOSS's 5-step schedule; N: N equal steps)")
    p.add_argument("--num-sources", type=int, help="merge the outputs down to this many")
    p.add_argument("--keep-silent", action="store_true", help="also write outputs that are silent")
    p.add_argument("--silence-db", type=float, default=-30.0,
                   help="an output this far below the mixture's power counts as silent")
    p.add_argument("--chunk", type=float, default=4.0, help="chunk length in seconds")
    p.add_argument("--overlap", type=float, default=1.0, help="overlap of neighbouring chunks in seconds")
    p.add_argument("--batch", type=int, default=4, help="chunks separated at a time")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the flows' starting noise")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.chunk <= 0 or args.overlap < 0 or args.overlap >= args.chunk:
        p.error("need --steps >= 1, --batch >= 1, --chunk > 0 and 0 <= --overlap < --chunk")
    if args.num_sources is not None and args.num_sources < 1:
        p.error("--num-sources must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    args.steps = "floss5" if args.steps == 5 else args.steps
    return args


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    written, failed = [], 0
    try:
        files = inputs_from(args.inputs)
        for f in files:                                       # every input checked before any work
            if not os.path.isfile(f):
                raise SeparationError(f"{f}: no such file")
        if args.out_dir:
            try:
                os.makedirs(args.out_dir, exist_ok=True)
            except OSError as e:
                raise SeparationError(f"{args.out_dir}: cannot create the output folder ({e.strerror})") from None
            if not os.access(args.out_dir, os.W_OK):
                raise SeparationError(f"{args.out_dir}: the output folder is not writable")
    except SeparationError as e:
        raise SystemExit(f"error: {e}") from None
    net, model_sr = load_model(args.checkpoint, args.device)
    if args.num_sources and args.num_sources > outputs_of(net):
        raise SystemExit(f"error: --num-sources {args.num_sources} but the model has "
                         f"{outputs_of(net)} outputs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                paths = separate_file(net, model_sr, f, args.out_dir, args)
                written += paths
                print(f"{f} -> {', '.join(paths)}")
            except SeparationError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
    if failed:
        raise SystemExit(1)
    return written


if __name__ == "__main__":
    main()
