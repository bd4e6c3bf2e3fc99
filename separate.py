"""Separate the speakers of audio files with a trained model (default: the shipped demo one).

    python separate.py mix.wav                      # writes mix_s1.wav, mix_s2.wav beside it
    python separate.py a.wav b.flac recordings/ --out-dir separated/
    python separate.py mix.wav --checkpoint runs/audio-sr/sr.pt --steps 25 --device cuda

Any sample rate (resampled with torchaudio to the model's rate and back), any channel count
(mixed down to mono, with a note), any length: the signal is cut into overlapping chunks of
``--chunk`` seconds, each chunk is separated on its own (flows: Euler from a fresh x_0,
SURF (4) and FLOSS (7); regression models: one pass), the outputs of each chunk are put in
the order of the previous chunk's by PIT on their overlap (SURF (3) with the overlap as the
reference), and the chunks are cross-faded with weights that sum to one, so the outputs still
add up to the mixture (SURF (1)). The file is read chunk by chunk and the outputs are written
as the chunks come, so memory depends on the chunk, not on the file's length.

The input level is normalized to the level the model was trained at and restored on output.
Outputs quieter than ``--silence-db`` relative to the mixture are not written (FUSS's rule
for "no source here"), unless ``--keep-silent``; ``--num-sources N`` merges the outputs down
to N (``mixit.merge_weights``, the rule of ``merge_outputs``, which keeps their sum).

Outputs are 32-bit float wav (never clipped). Every output goes to a temporary file first and
all outputs of one input are renamed together once all are written: an error, an output that is
NaN or infinite, or SIGTERM / Ctrl-C (exit status 128 + the signal's number) leaves none of that
input's outputs and no temporary file. Nothing is overwritten unless asked: if an output of an
input (``<name>_sN.wav``, ``<name>_dnsmos.json``) already exists, nothing is done until
``--overwrite`` is given (demucs' and asteroid's policy), which replaces every earlier output of
that input, so a rerun that writes fewer outputs leaves no stale ``_s2`` behind. Two inputs
whose outputs would have the same name (``a/mix.wav b/mix.wav --out-dir o``) are refused
rather than renamed. Bad input gives one line on stderr and exit status 1.

``--score`` (the optional DNSMOS extra, ``pip install -r requirements-dnsmos.txt``): after each
input's outputs are written, DNSMOS P.835 (Reddy et al. 2022; reference-free SIG / BAK / OVRL,
``dnsmos.dnsmos_file``: 16 kHz, other rates resampled) of the input mixture and of each
output, printed as a table and written to ``<name>_dnsmos.json`` beside the outputs
(temporary file, then rename). Without the extra: one line saying how to install it, and the
separation goes on unscored. DNSMOS costs about 0.35-0.75 s of CPU per 9.01 s window
(docs/benchmarks.md). Choice: the reference implementation slides its window a second at a
time (a short file is repeated to 18 s first: 8 windows for 8.6 s of audio); ``--score``
takes every 9th of those windows (``--score-hop 9``: 9 s apart, each second scored about
once), a ninth of the cost; ``--score-hop 1`` gives the reference's own figures, as the audio
tables' ``--dnsmos`` does. On the demo file the two differ by at most 0.12 (docs/speech.md).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import warnings

import torch

from surf_mini.audio_data import active_level, frame_powers
from surf_mini.checkpoints import AUDIO_KIND, audio_network, read_checkpoint
from surf_mini.flow import estimate_sources, is_flow_network

HERE = os.path.dirname(os.path.abspath(__file__))
# The default is the model that scores best on the real-voice test set of the speech corpus
# (issue 10's rule; docs/speech.md has every run's row): a supervised ConvTasNet trained on 66
# speakers, 37 of them real. Every other model scores lower there. The best SURF flow,
# surf_sr_speech.pt (SURF-SR on the same corpus, 2780 MixIT + 1500 steps), scores 0.17 dB: it
# sits at the even split m/2, below its MixIT teacher's 0.25; the flows do not separate yet at
# this budget. (surf_sr_demo.pt, the older demo-set SURF-SR flow, stays for docs/audio.md's table.)
DEFAULT_CHECKPOINT = os.path.join(HERE, "surf_mini", "assets", "sup_reg_speech.pt")
SURF_CHECKPOINT = os.path.join(HERE, "surf_mini", "assets", "surf_sr_speech.pt")
# The level inputs are brought to (``audio_data.active_level``): the checkpoint's
# ``input_level`` (the median level of its training mixtures), else this, the level of the
# demo speech mixtures (audio_data.ClipMixer: two sources at RMS 0.1 each).
TRAINING_RMS = 0.1 * 2 ** 0.5
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


class SeparationError(Exception):
    """A problem with one input or the output folder; the message is the one line shown."""


# --------------------------------------------------------------------------------------
# Outputs: their names, the temporary files, and how they replace earlier ones
# --------------------------------------------------------------------------------------

# This process's temporary files not yet renamed or removed: what the SIGTERM / SIGINT handler
# deletes before it exits, so a killed run leaves no hidden 12 MB .tmp<pid>.wav behind.
_PENDING: set[str] = set()


def _stop(signum, frame):
    """SIGTERM / SIGINT: delete the pending temporaries, then exit with 128 + the signal's number
    (the shell's convention); the SystemExit unwinds through the ``finally`` blocks, which close
    the open files."""
    for path in list(_PENDING):
        with contextlib.suppress(OSError):
            os.remove(path)
    _PENDING.clear()
    print(f"error: stopped by {signal.Signals(signum).name}; the outputs of the file being "
          f"separated were not written", file=sys.stderr)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _cleanup_on_signals():
    """``_stop`` handles SIGTERM and SIGINT for the duration (the handlers before are restored
    after, so a test calling ``main`` keeps its own); Python allows handlers in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def output_place(path: str, out_dir: str | None) -> tuple[str, str]:
    """(folder, name stem) of an input's outputs: ``<folder>/<stem>_sN.wav``."""
    return out_dir or os.path.dirname(os.path.abspath(path)), os.path.splitext(os.path.basename(path))[0]


def earlier_outputs(folder: str, stem: str) -> list[str]:
    """Everything in ``folder`` named like an output of ``stem`` (``<stem>_s<N>.wav``,
    ``<stem>_dnsmos.json``): from an earlier run, or an unrelated file that happens to match."""
    if not os.path.isdir(folder):
        return []
    pattern = re.compile(re.escape(stem) + r"(_s[0-9]+\.wav|_dnsmos\.json)")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if pattern.fullmatch(f))


def check_outputs(files: list[str], out_dir: str | None, overwrite: bool) -> None:
    """Before any work: no two inputs may write the same names (one would silently replace the
    other's outputs; refused rather than renamed, so every output name says its input), and
    nothing named like an output may exist unless ``overwrite``, nor a folder in its place."""
    seen, inputs = {}, {os.path.realpath(f): f for f in files}
    for f in files:
        folder, stem = output_place(f, out_dir)
        key = (os.path.realpath(folder), stem)
        if key in seen:
            raise SeparationError(f"{seen[key]} and {f} would both write {stem}_sN.wav in {folder}; "
                                  f"separate them in two calls with different --out-dir")
        seen[key] = f
        found = earlier_outputs(folder, stem)
        clash = [p for p in found if os.path.realpath(p) in inputs]
        if clash:                      # e.g. a folder separated twice: its outputs are inputs now
            raise SeparationError(f"{clash[0]} is an input and also named like an output of {f}; "
                                  f"give --out-dir, or leave earlier outputs out of the inputs")
        blocked = [p for p in found if not os.path.isfile(p)]
        if blocked:
            raise SeparationError(f"{blocked[0]} is in the way of an output of {f} and is not a file; "
                                  f"move it or give another --out-dir")
        if found and not overwrite:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise SeparationError(f"{found[0]} already exists{more}; add --overwrite to replace the "
                                  f"outputs of {f}, or give another --out-dir")


def commit(pairs: list[tuple[str, str]], earlier: list[str]) -> None:
    """Rename each (temporary, final) pair, all or none: the ``earlier`` outputs are moved aside
    first and put back if any rename fails, and what was renamed is removed again, so a failure
    leaves the folder as it was; they are deleted once every new output is in place."""
    aside = [os.path.join(os.path.dirname(e), f".{os.path.basename(e)}.old{os.getpid()}") for e in earlier]
    moved, placed = [], []
    try:
        for e, a in zip(earlier, aside):
            os.replace(e, a)
            moved.append((e, a))
        for tmp, final in pairs:
            os.replace(tmp, final)
            placed.append(final)
    except OSError:
        for final in placed:
            with contextlib.suppress(OSError):
                os.remove(final)
        for e, a in moved:
            with contextlib.suppress(OSError):
                os.replace(a, e)
        raise
    for _, a in moved:
        os.remove(a)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

def load_model(path: str, device: str = "cpu"):
    """(network, sample_rate) from a train_audio.py checkpoint (full or exported)."""
    ckpt = read_checkpoint(path, AUDIO_KIND, "audio")     # one-line SystemExit when unusable
    net = audio_network(ckpt, "ema", path).to(device).eval().requires_grad_(False)
    net.shaping = ckpt.get("shaping", "plain")             # how x_0's noise was shaped in training
    net.input_level = ckpt.get("input_level")              # its training mixtures' level (older: none)
    return net, int(ckpt["sample_rate"])


is_flow = is_flow_network          # flow model (Euler sampling) or regression model (one pass)


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


def _fit(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad or crop the last axis to ``length`` samples."""
    return torch.nn.functional.pad(x, (0, max(0, length - x.shape[-1])))[..., :length]


def _resample(x: torch.Tensor, src: int, dst: int, length: int) -> torch.Tensor:
    """Resample along the last axis and pad/crop to ``length`` samples."""
    if src != dst:
        import torchaudio
        x = torchaudio.functional.resample(x, src, dst)
    return _fit(x, length)


@torch.no_grad()
def separate_stream(net, read, T: int, sr: int, model_sr: int, steps="floss5", chunk_s: float = 4.0,
                    overlap_s: float = 1.0, batch: int = 4, seed: int = 0, device: str = "cpu"):
    """Separate a signal of T samples at rate ``sr`` chunk by chunk; yields final [K, L] blocks.

    ``read(start, n)`` returns the mono input samples [n] from ``start`` (zero past T). Each
    chunk is resampled to the model's rate, separated, resampled back, put in the previous
    chunk's order by PIT on their overlap (SURF (3)), weighted by a cross-fade that sums to one
    with its neighbours and added up; every part no later chunk touches is yielded at once,
    so memory is set by ``chunk_s`` and ``batch``, not by T. The blocks, concatenated, are
    [K, T] and sum to the input (exactly when ``sr == model_sr``).
    """
    from surf_mini.pit import apply_permutation, best_permutation
    n_fft = getattr(net.config, "n_fft", 1)
    n = max(int(round(chunk_s * sr)), -(-n_fft * sr // model_sr) + 1)          # input samples
    n_model = -(-n * model_sr // sr)                                          # model samples
    ov = min(int(round(overlap_s * sr)), n // 2)
    hop = n - ov
    count = 1 if T <= n else 1 + -(-(T - n) // hop)                          # ceil
    g = torch.Generator(device=device).manual_seed(seed)
    prev_tail, carry, done = None, None, 0
    for b in range(0, count, batch):
        starts = [i * hop for i in range(b, min(b + batch, count))]
        m = torch.stack([read(s, n) for s in starts]).float()                # [b, n]
        m = _resample(m, sr, model_sr, n_model)[:, None].to(device)          # [b, 1, n_model]
        est = estimate_sources(net, m, steps, getattr(net, "shaping", "plain"), g)   # SURF (4), FLOSS (7)
        est = _resample(est.float().cpu(), model_sr, sr, n).double()           # [b, K, n]
        for j, s in enumerate(starts):
            i, e = b + j, est[j]
            if prev_tail is not None and ov:                                  # PIT on the overlap
                e = apply_permutation(e[None], best_permutation(prev_tail[None], e[None, :, :ov]))[0]
            prev_tail = e[:, n - ov:]
            we = e * _crossfade(n, ov, i == 0, i == count - 1)
            if carry is not None:
                we[:, :ov] += carry
            final = we if i == count - 1 else we[:, :n - ov]
            carry = None if i == count - 1 else we[:, n - ov:]
            final = final[:, :max(0, T - done)]                               # drop the end padding
            done += final.shape[1]
            if final.shape[1]:
                yield final


def separate_signal(net, x: torch.Tensor, sample_rate: int, steps="floss5", chunk_s: float = 4.0,
                    overlap_s: float = 1.0, batch: int = 4, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """``separate_stream`` on a signal in memory at the model's rate: x [T] -> [K, T]."""
    x = x.double()
    read = lambda s, n: _fit(x[s:s + n], n)                                   # noqa: E731
    return torch.cat(list(separate_stream(net, read, len(x), sample_rate, sample_rate, steps, chunk_s,
                                          overlap_s, batch, seed, device)), dim=1)


class _Input:
    """An audio file read block by block as mono float64: its level and NaN count come from a
    first pass, so nothing holds the whole signal. ``read`` serves ``separate_stream`` with the
    samples scaled by ``gain`` to the level the model was trained at."""

    def __init__(self, path: str, target_level: float | None = None):
        import soundfile as sf
        target_level = target_level or TRAINING_RMS
        if not os.path.isfile(path):
            raise SeparationError(f"{path}: no such file")
        try:
            self.f = sf.SoundFile(path)
        except Exception:
            raise SeparationError(f"{path}: not an audio file soundfile can read "
                                  f"(wav, flac, ogg, ...)") from None
        self.path, self.sr, self.channels, self.T = path, self.f.samplerate, self.f.channels, self.f.frames
        if self.T == 0:
            raise SeparationError(f"{path}: the file holds no samples")
        frame = max(1, self.sr // 10)
        powers, bad, total = [], 0, 0.0
        for start in range(0, self.T, frame * 100):                        # 10 s blocks
            raw = self._block(start, frame * 100)
            bad += int((~torch.isfinite(raw)).sum())
            x = self._mono(raw)
            total += float(x.pow(2).sum())
            powers.append(frame_powers(x, frame))
        if bad == self.T * self.channels:
            raise SeparationError(f"{path}: every sample is NaN or infinite")
        if bad:
            print(f"note: {path}: {bad} NaN/infinite samples set to 0", file=sys.stderr)
        if self.channels > 1:
            print(f"note: {path}: {self.channels} channels mixed down to mono", file=sys.stderr)
        self.level = active_level(torch.cat(powers))                       # frames within 40 dB of the loudest
        self.power = total / self.T                                         # mean square of the mixture
        if self.level == 0.0:
            raise SeparationError(f"{path}: the file is silent; nothing to separate")
        self.gain = target_level / self.level

    def _block(self, start: int, n: int) -> torch.Tensor:
        self.f.seek(start)
        return torch.from_numpy(self.f.read(n, dtype="float64", always_2d=True))   # [<=n, C]

    @staticmethod
    def _mono(raw: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.isfinite(raw), raw, 0.0).mean(1)

    def read(self, start: int, n: int) -> torch.Tensor:
        return _fit(self._mono(self._block(start, n)) * self.gain if start < self.T else torch.zeros(0), n)


def separate_file(net, model_sr: int, path: str, out_dir: str | None, args) -> list[str]:
    """Separate one file and write ``<name>_sN.wav``; returns the paths written.

    Outputs are streamed to temporary files as the chunks come; merging (``--num-sources``)
    and the silence test use statistics gathered on the way (``mixit.merge_weights`` needs
    only the outputs' Gram matrix), then a second pass writes the merged outputs.
    """
    import soundfile as sf
    from surf_mini.mixit import merge_weights
    src = _Input(path, getattr(net, "input_level", None))
    K = outputs_of(net)
    folder, stem = output_place(path, out_dir)
    temps = [os.path.join(folder, f".{stem}_o{k + 1}.tmp{os.getpid()}.wav") for k in range(K)]
    _PENDING.update(temps)                                                     # SIGTERM deletes them
    finals = []
    try:
        writers = [sf.SoundFile(t, "w", src.sr, 1, subtype="FLOAT") for t in temps]
        gram = torch.zeros(K, K, dtype=torch.float64)
        for block in separate_stream(net, src.read, src.T, src.sr, model_sr, args.steps, args.chunk,
                                     args.overlap, args.batch, args.seed, args.device):
            if not torch.isfinite(block).all():      # would be dropped as "silent", or a NaN file
                raise SeparationError(f"{path}: the model's output is NaN or infinite; nothing written "
                                      f"(the checkpoint does not work on this input; try another --checkpoint)")
            block = block / src.gain                                           # restore the level
            gram += block @ block.T
            for k, w in enumerate(writers):
                w.write(block[k].numpy())
        for w in writers:
            w.close()
        N = args.num_sources if args.num_sources and args.num_sources < K else K
        weights = merge_weights(gram[None], N)[0] if N < K else torch.eye(K, dtype=torch.float64)  # [K, N]
        power = torch.diagonal(weights.T @ gram @ weights) / src.T              # each final output's
        keep = [k for k in range(N) if args.keep_silent or power[k] > src.power * 10 ** (args.silence_db / 10)]
        if len(keep) < N:
            print(f"note: {path}: {N - len(keep)} silent output(s) not written (--keep-silent writes them)",
                  file=sys.stderr)
        outs = [os.path.join(folder, f".{stem}_s{i + 1}.tmp{os.getpid()}.wav") for i in range(len(keep))]
        if N < K or len(keep) < K:                                             # second pass: merge, select
            readers = [sf.SoundFile(t) for t in temps]
            temps += outs
            _PENDING.update(outs)
            writers = [sf.SoundFile(o, "w", src.sr, 1, subtype="FLOAT") for o in outs]
            for _ in range(0, src.T, 1 << 16):
                x = torch.stack([torch.from_numpy(r.read(1 << 16, dtype="float64")) for r in readers])  # [K, L]
                y = weights.T @ x                                               # [N, L]
                for w, k in zip(writers, keep):
                    w.write(y[k].numpy())
            for f in readers + writers:
                f.close()
        else:
            outs = temps[:K]
        finals = [os.path.join(folder, f"{stem}_s{i + 1}.wav") for i in range(len(keep))]
        # all of this input's outputs or none; --overwrite: the earlier ones go (main refused them
        # otherwise), so a rerun that writes fewer outputs leaves no stale _s2 beside the new _s1
        commit(list(zip(outs, finals)), earlier_outputs(folder, stem) if args.overwrite else [])
    except (OSError, sf.SoundFileError) as e:                                 # I/O only: model errors propagate
        raise SeparationError(f"{folder}: cannot write the outputs ({getattr(e, 'strerror', None) or e})") from None
    finally:
        src.f.close()
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
        _PENDING.difference_update(temps)
    return finals


# --------------------------------------------------------------------------------------
# --score: DNSMOS P.835 of the input and of its outputs (optional extra)
# --------------------------------------------------------------------------------------

def score_file(path: str, outputs: list[str], out_dir: str | None, threads: int = 1,
               hop: int = 9) -> tuple[str, str]:
    """DNSMOS SIG / BAK / OVRL (``dnsmos.dnsmos_file``: read from disk window by window, 16 kHz)
    of the input mixture ``path`` and of each written output; writes ``<name>_dnsmos.json``
    beside the outputs (temporary file, then rename) and returns (the table, the JSON path)."""
    import json
    from surf_mini.dnsmos import DNSMOS_WINDOW_S, dnsmos_file
    rows = [dict(signal="mixture", file=path, **dnsmos_file(path, threads, hop))]
    rows += [dict(signal=os.path.basename(o), file=o, **dnsmos_file(o, threads, hop)) for o in outputs]
    folder = out_dir or os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    final = os.path.join(folder, f"{stem}_dnsmos.json")
    tmp = os.path.join(folder, f".{stem}_dnsmos.tmp{os.getpid()}.json")
    _PENDING.add(tmp)
    report = {"input": path, "metric": f"DNSMOS P.835 (Reddy et al. 2022), reference-free, at 16 kHz "
                                      f"(other rates resampled), means over {DNSMOS_WINDOW_S} s windows "
                                      f"{hop} s apart (surf_mini.dnsmos; 1 s: the reference's rule)",
              "scores": rows}
    try:
        with open(tmp, "w") as fh:
            json.dump(report, fh, indent=1)
        os.replace(tmp, final)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise SeparationError(f"{folder}: cannot write {os.path.basename(final)} ({e.strerror})") from None
    finally:
        _PENDING.discard(tmp)
    lines = [f"DNSMOS P.835 of {path} (reference-free, 16 kHz):", "| signal | SIG | BAK | OVRL |",
             "|---|---|---|---|"]
    lines += [f"| {r['signal']} | {r['sig']:.2f} | {r['bak']:.2f} | {r['ovrl']:.2f} |" for r in rows]
    return "\n".join(lines), final


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
                   help="train_audio.py checkpoint (default: surf_mini/assets/sup_reg_speech.pt, the "
                        "best on unseen real voices; the best SURF flow is surf_sr_speech.pt)")
    p.add_argument("--out-dir", help="where to write <name>_sN.wav (default: beside each input)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the earlier outputs of an input (<name>_sN.wav, <name>_dnsmos.json); "
                        "without it, existing outputs stop the run before any work")
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
    p.add_argument("--threads", type=int, help="torch CPU threads (and DNSMOS's, with --score; default: every core, as torch)")
    p.add_argument("--score", action="store_true",
                   help="also print DNSMOS P.835 SIG/BAK/OVRL of the input and of each output and write "
                        "them to <name>_dnsmos.json (optional extra: pip install -r requirements-dnsmos.txt)")
    p.add_argument("--score-hop", type=int, default=9,
                   help="with --score: seconds between DNSMOS windows (1: the reference's rule, 9x the cost)")
    args = p.parse_args(argv)
    if args.score_hop < 1:
        p.error("--score-hop must be at least 1")
    if args.steps < 1 or args.batch < 1 or args.chunk <= 0 or args.overlap < 0 or args.overlap >= args.chunk:
        p.error("need --steps >= 1, --batch >= 1, --chunk > 0 and 0 <= --overlap < --chunk")
    if args.num_sources is not None and args.num_sources < 1:
        p.error("--num-sources must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, not {args.threads}")
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
        check_outputs(files, args.out_dir, args.overwrite)    # nothing overwritten unless asked
        if args.out_dir:
            try:
                os.makedirs(args.out_dir, exist_ok=True)
            except OSError as e:
                raise SeparationError(f"{args.out_dir}: cannot create the output folder ({e.strerror})") from None
            if not os.access(args.out_dir, os.W_OK):
                raise SeparationError(f"{args.out_dir}: the output folder is not writable")
    except SeparationError as e:
        raise SystemExit(f"error: {e}") from None
    if args.score:                         # the optional extra: checked once, before any work
        from surf_mini.dnsmos import DNSMOSMissing, dnsmos_session
        try:
            dnsmos_session(args.threads or os.cpu_count() or 1)
        except DNSMOSMissing as e:
            print(f"note: --score: {e}; separating without scores", file=sys.stderr)
            args.score = False
    net, model_sr = load_model(args.checkpoint, args.device)
    if args.num_sources and args.num_sources > outputs_of(net):
        raise SystemExit(f"error: --num-sources {args.num_sources} but the model has "
                         f"{outputs_of(net)} outputs")
    with warnings.catch_warnings(), _cleanup_on_signals():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                paths = separate_file(net, model_sr, f, args.out_dir, args)
                written += paths
                print(f"{f} -> {', '.join(paths)}")
                if args.score:
                    text, report = score_file(f, paths, args.out_dir, args.threads or os.cpu_count() or 1,
                                              args.score_hop)
                    print(f"{text}\nwrote {report}")
            except SeparationError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
    if failed:
        raise SystemExit(1)
    return written


if __name__ == "__main__":
    main()
