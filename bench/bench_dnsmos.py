"""DNSMOS P.835 cost: seconds of compute per minute of 8 kHz audio, resampling included.

    python bench/bench_dnsmos.py [--threads 1] [--minutes 1]

Needs the optional extra (pip install -r requirements-dnsmos.txt). ``surf_mini.dnsmos.dnsmos``
resamples to 16 kHz (torchaudio) and scores 9.01 s windows one second apart (the reference
rule), a short signal repeated first, so the cost depends on how the minute is cut:
  * one file of ``--minutes`` minutes: about one window per second of audio;
  * 4 s clips (train_audio.py's test mixtures, --eval-seconds 4): each repeated to 16 s, 7
    windows of which 4 hold distinct samples (windows a period apart are scored once);
  * 1 s clips: repeated to 16 s, every window the same samples, one model call a clip.
CPU seconds are this process's (time.process_time), so they hold on a shared machine; wall
seconds are what it took here. The resampling alone is timed apart (the per-window
resampling of the long file). Prints a markdown table (docs/benchmarks.md has the figures).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini import dnsmos as M  # noqa: E402

SR = 8000


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--minutes", type=float, default=1.0, help="minutes of audio per row")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    try:
        M.dnsmos_session(a.threads)
    except M.DNSMOSMissing as e:
        raise SystemExit(f"error: {e}") from None
    rng = np.random.default_rng(0)
    seconds = a.minutes * 60
    x = (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)   # cost does not depend on content
    M.dnsmos(x[:SR], SR, a.threads)                                          # warm-up: session, torchaudio

    rows = []
    # the resampling alone, as dnsmos does it for a long file: each window on its own
    _, cpu, wall = timed(lambda: sum(1 for _ in M._dnsmos_windows(lambda s, n: x[s:s + n], len(x), SR)))
    windows = sum(1 for _ in M._dnsmos_windows(lambda s, n: x[s:s + n], len(x), SR))
    rows.append((f"resampling only, one {seconds:g} s file (8 -> 16 kHz, per window)", windows, "", cpu, wall))
    for clip in (seconds, 4.0, 1.0):
        n = int(clip * SR)
        clips = [x[i:i + n] for i in range(0, len(x) - n + 1, n)]
        calls = [0]

        def run():
            for c in clips:
                rs = M.dnsmos_stream(lambda s, k, c=c: c[s:s + k], len(c), SR, a.threads)
                calls[0] += len(rs)
        distinct = sum(len({k for k, _ in M._dnsmos_windows(lambda s, k, c=c: c[s:s + k], len(c), SR)})
                       for c in clips)
        _, cpu, wall = timed(run)
        what = f"one {clip:g} s file" if clip == seconds else f"{len(clips)} clips of {clip:g} s"
        rows.append((what, calls[0], distinct, cpu, wall))
    cpu_name = platform.processor() or platform.machine()
    try:                                                   # Linux: the CPU's own name and vector units
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu_name = info.split("model name")[1].split(":", 1)[1].split("\n")[0].strip()
        flags = info.split("flags")[1].split("\n")[0].split()
        cpu_name += ", " + ", ".join(v for v in ("avx2", "avx512f") if v in flags)
    except (OSError, IndexError):
        pass
    print(f"DNSMOS P.835 (sig_bak_ovr.onnx via onnxruntime, {a.threads} intra-op thread(s)), "
          f"{seconds:g} s of {SR} Hz audio per row, {os.cpu_count()} CPUs ({cpu_name}):\n")
    print("| audio | windows | model calls | CPU s | wall s | CPU s per minute of audio | CPU s per call |")
    print("|---|---|---|---|---|---|---|")
    for what, win, distinct, cpu, wall in rows:
        per_call = f"{cpu / distinct:.2f}" if distinct else ""
        print(f"| {what} | {win} | {distinct} | {cpu:.1f} | {wall:.1f} | {cpu * 60 / seconds:.1f} | {per_call} |")


if __name__ == "__main__":
    main()
