"""Scoring audio separators: SURF Tables 3-4's rows (SI-SDRi, ESTOI, PESQ, DNSMOS; the FUSS scores).

    python -m surf_mini.audio_eval evaluate surf_mini/assets/sup_reg_speech.pt --data ~/data/speech
    python -m surf_mini.audio_eval evaluate CKPT --task fuss --data ~/data/fuss     # FUSS table
    python -m surf_mini.audio_eval collect runs/audio --plot curves.png             # one table from runs

train_audio.py scores its networks at the end of a run with these functions and these test
mixtures, so a re-scored checkpoint gives the run's own figures. Speech: ``--eval-size`` fixed
two-speaker mixtures of the held-out ``test`` speakers of ``--data`` (or the mixtures of
``--eval-csv``); SI-SDR, SI-SDRi, ESTOI and wide-band PESQ (metrics.audio_scores), flows
sampled with 5-step Euler; a 4-output MixIT network merged to 2 (reference-free) and with the
oracle grouping. ``--dnsmos`` (optional extra, dnsmos.py) adds DNSMOS P.835 SIG / BAK / OVRL
of the separated sources, resampled to 16 kHz, and a ceiling row, the references' own.
FUSS (``--task fuss``, K = 4): metrics.fuss_scores' 1S, 2Si-4Si, MSi and under / equal /
over rates, and SURF Table 3's noisy speech (held-out speech over test backgrounds).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from . import audio_data as A
from . import fuss_data as F
from . import options, runs
from .checkpoints import AUDIO_KIND, audio_network, read_checkpoint
from .flow import estimate_sources
from .methods import FLOWS, METHOD_NAMES, MODES
from .metrics import audio_scores, fuss_scores, oracle_grouping
from .mixit import merge_outputs

K = 2                       # speakers per speech mixture
# The two tasks: K outputs of every locoformer, M of the MixIT teacher (a mixture of two
# mixtures holds up to 2K sources: SURF D.5), the default --data and test-mixture length.
TASKS = {"speech": dict(K=K, M=2 * K, data=A.DEMO_DIR, eval_seconds=2.0),
         "fuss": dict(K=F.MAX_SOURCES, M=2 * F.MAX_SOURCES, data=F.FUSS_SAMPLE_DIR,
                      eval_seconds=F.CPU_SECONDS)}
# x_0 noise shaped by the mixture's energy envelope, FLOSS section 3.4 (its best, Table 1 #3):
# the noise then has the level of the speech whatever the recording gain.
SHAPING = "envelope"
EVAL_SEED = 12345
# --dnsmos: three more columns in the speech and noisy-speech rows (not in FUSS's sound-event
# table: DNSMOS rates speech), and a ceiling row, the references' own DNSMOS.
DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
DNSMOS_CEILING = "references (DNSMOS ceiling)"
FUSS_KEYS = ("1S", "2Si", "3Si", "4Si", "MSi")


# --------------------------------------------------------------------------------------
# The test, validation and noisy-speech mixtures
# --------------------------------------------------------------------------------------

def splits_of(folder: str) -> set[str]:
    """The splits a ``manifest.csv`` names (the demo set and corpora built by
    ``prepare/speech.py`` have one); a plain folder of clips has none."""
    import csv
    manifest = os.path.join(folder, "manifest.csv")
    if not os.path.isfile(manifest):
        return set()
    with open(manifest) as f:
        return {row["split"] for row in csv.DictReader(f)}


def clip_split(folder: str, name: str) -> str | None:
    """``name`` where the folder is split by a manifest (load_clips then says if that split is
    empty); None for a plain folder, whose clips are all used."""
    return name if splits_of(folder) else None


def test_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed evaluation mixtures [N, 1, T] and references [N, K, T] of held-out speakers
    (fuss: of the test events, 1-4 sources, silent slots zero)."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    length = int(round(args.eval_seconds * sr))
    if args.task == "fuss":
        return F.FussMixer(F.load_events(args.data, sr, "test"), length, g).batch(args.eval_size)
    if args.eval_csv:
        return A.LibriMixSampler(A.librimix_items(args.eval_csv), sr, length, g).batch(args.eval_size)
    clips = A.load_clips(args.data, sr, clip_split(args.data, "test"))
    return A.ClipMixer(clips, K, length, g, snr_db=args.eval_snr).batch(args.eval_size)


def validation_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fixed validation mixtures of the ``valid`` speakers of ``--data`` (a corpus built by
    ``prepare/speech.py`` has them; the demo set and LibriMix runs have none: no curve)."""
    if args.val_every <= 0 or args.librimix or "valid" not in splits_of(args.data):
        return None
    g = torch.Generator().manual_seed(EVAL_SEED + 1)
    length = int(round(args.eval_seconds * sr))
    if args.task == "fuss":
        return F.FussMixer(F.load_events(args.data, sr, "valid"), length, g).batch(args.val_size)
    clips = A.load_clips(args.data, sr, "valid")
    return A.ClipMixer(clips, K, length, g, snr_db=args.eval_snr).batch(args.val_size)


def noisy_speech_set(args, sr: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """fuss: fixed noisy-speech mixtures [N, 1, T] and references [N, 2, T] (speech, background):
    the test speakers of ``--noisy-speech`` over backgrounds of the test events (SURF Table 3,
    right; ``fuss_data.noisy_speech``). None for the speech task."""
    if args.task != "fuss":
        return None
    g = torch.Generator().manual_seed(EVAL_SEED + 2)
    speech = A.load_clips(args.noisy_speech, sr, clip_split(args.noisy_speech, "test"))
    pool = F.load_events(args.data, sr, "test")
    return F.noisy_speech(speech, pool, args.eval_size, int(round(args.eval_seconds * sr)), g)


# --------------------------------------------------------------------------------------
# Separating and scoring
# --------------------------------------------------------------------------------------

@torch.no_grad()
def separate(net: torch.nn.Module, m: torch.Tensor, device, seed: int, batch: int = 16,
             steps="floss5") -> torch.Tensor:
    """Estimates for [N, 1, T] mixtures: regression f(m), or Euler sampling for flows (5-step)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([estimate_sources(net, m[i:i + batch].to(device), steps, SHAPING, g).cpu()
                      for i in range(0, len(m), batch)])


def validator(m: torch.Tensor, ref: torch.Tensor, sr: int, device, seed: int, k: int = K,
              task: str = "speech"):
    """The learning-curve scorer: SI-SDRi of a stage's EMA network on the validation mixtures
    (merged outputs for the 4-output MixIT network, what a student is fed, plus the oracle
    grouping; PIT for 2 outputs). ESTOI and PESQ are left to the final evaluation (slow).
    FUSS: the MSi of the raw outputs (``fuss_row``) under the same key, so curves plot alike."""
    def validate(stage) -> dict:
        est = separate(stage.ema, m, device, seed)
        if task == "fuss":
            msi = fuss_row("", est, ref, m, "raw")["MSi"]
            return {"si_sdri": None if msi is None else round(msi, 3)}
        out = {"si_sdri": round(audio_scores(est, ref, m, sr, "merged", perceptual=False)["si_sdri"].mean().item(), 3)}
        if est.shape[1] > k:
            out["si_sdri_oracle"] = round(
                audio_scores(est, ref, m, sr, "oracle", perceptual=False)["si_sdri"].mean().item(), 3)
        return out
    return validate


def score(name: str, est, ref, m, sr: int, grouping: str, note: str = "", k: int = K,
          dnsmos: bool = False) -> dict:
    """One speech row. ``dnsmos`` (``--dnsmos``): also DNSMOS P.835 SIG / BAK / OVRL, the mean
    over every separated source (after the grouping; resampled to 16 kHz, ``dnsmos.dnsmos``)."""
    s = audio_scores(est, ref, m, sr, grouping, dnsmos=dnsmos)
    sem = lambda x: (x.mean(1).std() / math.sqrt(len(x))).item()        # noqa: E731
    row = {"method": name, "si_sdr": s["si_sdr"].mean().item(), "si_sdri": s["si_sdri"].mean().item(),
           "si_sdri_sem": sem(s["si_sdri"]), "estoi": s["estoi"].mean().item(),
           "pesq": s["pesq"].mean().item(), "n": len(est), "outputs": est.shape[1],
           "grouping": grouping if est.shape[1] > k else "PIT", "note": note}
    if dnsmos:
        row.update({key: s[key].mean().item() for key in DNSMOS_KEYS})
    return row


def dnsmos_wanted(args) -> bool:
    """``--dnsmos`` and the extra installed; else one line (the install command), and False:
    the run goes on without the DNSMOS columns."""
    if not getattr(args, "dnsmos", False):
        return False
    from .dnsmos import DNSMOSMissing, dnsmos_session
    try:
        dnsmos_session()
        return True
    except DNSMOSMissing as e:
        print(f"note: --dnsmos: {e}; scoring without the DNSMOS columns", file=sys.stderr)
        return False


def dnsmos_ceiling_row(ref, sr: int) -> dict:
    """The references' own DNSMOS (ref [N, K, T] at ``sr``, resampled to 16 kHz), as a row."""
    from .dnsmos import dnsmos_scores
    s = dnsmos_scores(ref, sr)
    return {"method": DNSMOS_CEILING, "si_sdr": None, "si_sdri": None, "si_sdri_sem": None,
            "estoi": None, "pesq": None, "n": len(ref), "outputs": ref.shape[1], "grouping": "–",
            "note": "the references themselves", "budget": "",
            **{f"dnsmos_{k}": v.mean().item() for k, v in s.items()}}


def dnsmos_ceilings(args, ref, noisy, sr: int) -> dict:
    """--dnsmos's ceiling rows, kept apart from "rows" (``--collect`` reads those as methods):
    "rows" the speech references (speech task), "noisy_speech" the clean speech of the
    noisy-speech set (FUSS task); each a one-row list."""
    out = {}
    if args.task != "fuss" and ref is not None:
        out["rows"] = [dnsmos_ceiling_row(ref, sr)]
    if noisy is not None:
        out["noisy_speech"] = [dnsmos_ceiling_row(noisy[1][:, :1], sr)]
    return out


def fuss_row(name: str, est, ref, m, grouping: str, note: str = "") -> dict:
    """One FUSS row (Wisdom et al. 2021, SURF Table 3): ``metrics.fuss_scores`` on est [N, M, T]
    (M = 4 or the teacher's raw 8; "merged": reduced to K = 4 by ``merge_outputs`` first),
    references [N, 4, T] with silent slots, mixtures [N, 1, T].

    1S: SI-SNR of the one source; nSi: SI-SNRi over the mixture, mean over the n matched active
    references; MSi: the mean of the nSi over every multi-source mixture (the nSi weighted by
    their mixture counts); under / equal / over: the shares of mixtures with fewer / as many /
    more produced outputs (power above -30 dB re the mixture, separate.py's rule) than active
    references. ``by_count`` repeats the scores for the mixtures of each source count 1..4.
    """
    if grouping == "merged" and est.shape[1] > ref.shape[1]:
        est = merge_outputs(est, ref.shape[1])                           # [N, 4, T], no reference
    s = fuss_scores(est, ref, m)
    multi = [(s[k], s["n"][k]) for k in FUSS_KEYS[1:4] if s[k] is not None]
    s["MSi"] = sum(v * c for v, c in multi) / sum(c for _, c in multi) if multi else None
    by_count = {}
    for c, b in s["by_count"].items():                  # a mixture of c sources is scored under one key
        key = "1S" if c == 1 else f"{c}Si"
        by_count[str(c)] = {"mixtures": b["mixtures"], key: s[key], **{r: b[r] for r in ("under", "equal", "over")}}
    return {"method": name, **{k: s[k] for k in FUSS_KEYS}, "under": s["under"], "equal": s["equal"],
            "over": s["over"], "counts": s["n"], "by_count": by_count, "n": len(est),
            "outputs": est.shape[1], "grouping": grouping, "note": note}


def method_rows(name: str, est, ref, m, sr: int, task: str = "speech", k: int = K,
                dnsmos: bool = False) -> list[dict]:
    """A network's own rows: FUSS raw (+ merged to K when it has more outputs); speech PIT for
    K outputs, else merged (reference-free, what a student is fed) and the oracle grouping.
    ``dnsmos``: the speech rows get the DNSMOS columns (FUSS's rows never do)."""
    if task == "fuss":
        return [fuss_row(name, est, ref, m, "raw")] + \
            ([fuss_row(name, est, ref, m, "merged")] if est.shape[1] > k else [])
    if est.shape[1] > k:
        return [score(name, est, ref, m, sr, "merged", dnsmos=dnsmos),
                score(name, est, ref, m, sr, "oracle", dnsmos=dnsmos)]
    return [score(name, est, ref, m, sr, "PIT", dnsmos=dnsmos)]


def run_rows(args, device, main, teacher, m, ref, sr) -> tuple[list[dict], torch.Tensor]:
    """The table's rows and the main network's estimates. FUSS: the MixIT networks (M = 8) are
    scored on their raw outputs, as FUSS evaluates a separator (each active reference gets its
    own best output; extra outputs count only for over-separation), and merged to 4, what a
    student is fed; the K = 4 networks as they are ("raw")."""
    rows = []
    dnsmos = getattr(args, "dnsmos", False)
    if teacher is not None:
        t_est = separate(teacher, m, device, args.seed)
        rows = [dict(r, note="what the student is fed") if r["grouping"] == "merged" else r
                for r in method_rows("its MixIT teacher", t_est, ref, m, sr, args.task, args.K, dnsmos)]
    est = separate(main, m, device, args.seed)
    return method_rows(METHOD_NAMES[args.mode], est, ref, m, sr, args.task, args.K, dnsmos) + rows, est


def noisy_speech_row(name: str, est, ref, m, sr: int, note: str = "", dnsmos: bool = False) -> dict:
    """SURF Table 3's noisy speech: the outputs [N, M, T] grouped onto (speech, background)
    [N, 2, T] with the references (``oracle_grouping``: each output goes to the one it helps,
    FUSS style, and the outputs of each are summed), then SI-SDR(i), ESTOI and PESQ of the
    speech alone (and with ``dnsmos`` its DNSMOS)."""
    speech = oracle_grouping(est.double(), ref.double())[:, :1]                 # [N, 1, T]
    row = score(name, speech, ref[:, :1], m, sr, "oracle", note, k=1, dnsmos=dnsmos)
    return dict(row, outputs=est.shape[1], grouping="oracle, speech / background")


def noisy_speech_rows(nets: list, m, ref, sr: int, device, seed: int, dnsmos: bool = False) -> list[dict]:
    """``noisy_speech_row`` for each (name, network) on the noisy-speech mixtures."""
    return [noisy_speech_row(name, separate(net, m, device, seed), ref, m, sr, dnsmos=dnsmos)
            for name, net in nets]


# --------------------------------------------------------------------------------------
# Tables and examples
# --------------------------------------------------------------------------------------

def markdown(rows: list[dict], budget: str = "") -> str:
    # DNSMOS columns (--dnsmos) when any row has them; a row without them shows "–" there, and
    # the ceiling row (the references' own DNSMOS) shows "–" in the reference-based columns
    dns = any("dnsmos_ovrl" in r for r in rows)
    lines = ["| method | outputs | matching | SI-SDR (dB) | SI-SDRi (dB) | ESTOI | PESQ | "
             + ("DNSMOS SIG | DNSMOS BAK | DNSMOS OVRL | " if dns else "") + "n | budget |",
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if dns else "") + "---|---|"]
    for r in rows:
        if r["si_sdr"] is None:                                              # the DNSMOS ceiling
            scores = "– | – | – | – | "
        else:
            scores = (f"{r['si_sdr']:.2f} | {r['si_sdri']:.2f} ± {r['si_sdri_sem']:.2f} | "
                      f"{r['estoi']:.3f} | {r['pesq']:.2f} | ")
        if dns:
            scores += "".join(f"{_db(r.get(k))} | " for k in DNSMOS_KEYS)
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {scores}"
                     f"{r['n']} | {r.get('budget', budget)} |")
    return "\n".join(lines) + "\n"


def _db(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def fuss_markdown(rows: list[dict], budget: str = "") -> str:
    """The FUSS table (SURF Table 3's columns plus the separation-count rates), then the
    breakdown per source count: each count's own score and its under / equal / over rates."""
    lines = ["| method | outputs | matching | 1S (dB) | 2Si (dB) | 3Si (dB) | 4Si (dB) | MSi (dB) | "
             "under | equal | over | n | budget |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | "
                     + " | ".join(_db(r[k]) for k in FUSS_KEYS)
                     + f" | {r['under']:.2f} | {r['equal']:.2f} | {r['over']:.2f} | {r['n']} | "
                       f"{r.get('budget', budget)} |")
    lines += ["", "| method | outputs | matching | sources | mixtures | 1S / nSi (dB) | under | equal | over |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for c, b in r["by_count"].items():
            key = "1S" if c == "1" else f"{c}Si"
            lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {c} | {b['mixtures']} | "
                         f"{_db(b[key])} | {b['under']:.2f} | {b['equal']:.2f} | {b['over']:.2f} |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict], budget: str = "") -> str:
    """The speech table, or the FUSS one for rows of ``fuss_row``."""
    return fuss_markdown(rows, budget) if rows and "MSi" in rows[0] else markdown(rows, budget)


def noisy_speech_text(rows: list[dict], noisy, args, sr: int) -> str:
    if not rows:
        return ""
    return (f"\nNoisy speech (SURF Table 3, right): {len(noisy[0])} held-out speech crops of "
            f"{args.noisy_speech} over test backgrounds, SNR {F.NOISY_SPEECH_SNR_DB[0]:g} to "
            f"{F.NOISY_SPEECH_SNR_DB[1]:g} dB, {args.eval_seconds:g} s at {sr} Hz; scores of the speech:\n\n"
            + markdown(rows))


def test_set_header(n: int, args, sr: int, how: str) -> str:
    """The line above every test table: what was scored, and how."""
    what = "FUSS-like (1-4 sources)" if args.task == "fuss" else "two-speaker"
    return f"\n{n} held-out {what} test mixtures of {args.eval_seconds:g} s at {sr} Hz, {how}:\n"


def write_examples(folder: str, m, ref, est, sr: int, n: int = 3, k: int = K) -> None:
    """The first test mixtures, their references and the (merged to ``k``) estimates as wav
    files (fuss: all 4 reference slots, the silent ones too)."""
    import soundfile as sf
    os.makedirs(folder, exist_ok=True)
    est = merge_outputs(est[:n], k) if est.shape[1] > k else est[:n]
    peak = max(m[:n].abs().max().item(), 1e-8) / 0.9
    for i in range(min(n, len(m))):
        signals = {"mix": m[i, 0], **{f"ref{j + 1}": ref[i, j] for j in range(ref.shape[1])},
                   **{f"est{j + 1}": est[i, j] for j in range(k)}}
        for tag, x in signals.items():
            path = os.path.join(folder, f"{i:02d}_{tag}.wav")
            tmp = path + ".tmp.wav"
            sf.write(tmp, (x / peak).clamp(-1, 1).numpy(), sr, subtype="PCM_16")
            os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# The commands: evaluate checkpoints, collect runs
# --------------------------------------------------------------------------------------

def read_checkpoints(paths: list[str], verb: str) -> tuple[list[tuple[str, dict]], int]:
    """[(path, checkpoint)] and their one sample rate, for tools that score several models on
    the same mixtures (``evaluate``, bench/score_*.py); one-line SystemExit otherwise."""
    ckpts = [(path, read_checkpoint(path, AUDIO_KIND, "audio")) for path in paths]
    rates = {c["sample_rate"] for _, c in ckpts}
    if len(rates) > 1:
        raise SystemExit(f"error: the checkpoints run at different sample rates {sorted(rates)}; "
                         f"{verb} them separately")
    return ckpts, rates.pop()


def evaluate_checkpoints(args) -> dict:
    """``evaluate``: score each checkpoint's EMA network on the same test mixtures (those a run
    on ``--data`` with these ``--eval-*`` options is scored on) and print the table. The config
    and the sample rate travel in the checkpoint; no run folder is needed."""
    device = torch.device(args.device)
    ckpts, sr = read_checkpoints(args.checkpoints, "evaluate")
    for path, c in ckpts:
        task = (c.get("trained_with") or c.get("args") or {}).get("task") or "speech"
        if task != args.task:
            raise SystemExit(f"error: {path} was trained for --task {task}; evaluate it with --task {task}")
    args.dnsmos = dnsmos_wanted(args)                # the extra missing: one line, no DNSMOS columns
    dnsmos = args.dnsmos
    try:
        m, ref = test_set(args, sr)
        noisy = noisy_speech_set(args, sr)
    except A.AudioDataError as e:
        raise SystemExit(f"error: {e}") from None
    rows, noisy_rows = [], []
    which = "model" if args.weights == "raw" else "ema"
    for path, ckpt in ckpts:
        if which not in ckpt:
            raise SystemExit(f"error: {path} holds no trained weights (an exported checkpoint keeps "
                             f"the EMA copy only); drop --weights raw or give the run's own checkpoint")
        net, name = audio_network(ckpt, which, path).to(device), METHOD_NAMES.get(ckpt["stage"], ckpt["stage"])
        name += " (raw weights)" if which == "model" else ""
        est = separate(net, m, device, args.seed)
        for r in method_rows(name, est, ref, m, sr, args.task, args.K, dnsmos):
            rows.append(dict(r, budget=runs.checkpoint_budget(ckpt), checkpoint=path))
        if noisy is not None:
            r = noisy_speech_rows([(name, net)], *noisy, sr, device, args.seed, dnsmos)[0]
            noisy_rows.append(dict(r, budget=runs.checkpoint_budget(ckpt), checkpoint=path))
    rows = runs.in_table_order(rows)
    ceilings = dnsmos_ceilings(args, ref, noisy, sr) if dnsmos else {}
    what = "trained (raw) weights" if which == "model" else "EMA weights"
    print(test_set_header(len(m), args, sr, f"from {args.data}, 5-step Euler for flows, {what}"))
    print(table(rows + ceilings.get("rows", [])) +
          noisy_speech_text(noisy_rows + ceilings.get("noisy_speech", []), noisy, args, sr), end="")
    out = {"rows": rows, "noisy_speech": noisy_rows} if noisy is not None else {"rows": rows}
    if ceilings:
        out["dnsmos_ceiling"] = ceilings
    return out


def collect(folder: str, plot: str | None = None) -> None:
    """One table from DIR/*/results.json; each results.json says its task (speech when absent,
    the runs from before --task), and each task present gets its own table."""
    every = runs.read_results(folder)
    results = [r for r in every if "dataset" not in r]  # audio runs only
    if not every:
        raise SystemExit(f"error: no */results.json under {folder!r}")
    if not results:
        raise SystemExit(f"error: no audio runs under {folder!r} (image runs: python -m "
                         f"surf_mini.image_eval collect {folder})")
    by_task = {}
    for res in results:
        by_task.setdefault(res.get("task", "speech"), []).append(res)
    for i, (task, group) in enumerate(sorted(by_task.items(), key=lambda kv: kv[0] != "speech")):
        if i:
            print(f"\n{task}:\n")
        rows = runs.collect_rows(folder, list(METHOD_NAMES.values()), group)         # Table order
        print(table(rows) if rows else "(no scored rows: runs trained with --eval-size 0; score them "
              "with python -m surf_mini.audio_eval evaluate)\n", end="")
    if plot:
        # a FUSS validator stores the MSi of the raw outputs under the same key (``validator``):
        # say so on the axis, and do not call the MixIT curve merged
        fuss = set(by_task) == {"fuss"}
        ylabel = ("validation MSi (dB, raw outputs, EMA weights)" if fuss
                  else "validation SI-SDRi (dB, EMA weights)")
        runs.plot_curves(results, plot, "si_sdri", ylabel, MODES, METHOD_NAMES,
                         merged=() if fuss else ("mixit",), flows=FLOWS)


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """The test-set options, shared with train_audio.py's end-of-run scoring."""
    p.add_argument("--eval-csv", help="LibriMix metadata CSV of the test set (default: held-out --data speakers)")
    p.add_argument("--eval-seconds", type=float, help="length of the test mixtures")
    p.add_argument("--eval-snr", type=float, default=5.0,
                   help="the second speaker's level in +-SNR/2 dB around the first (0: all at 0 dB)")
    p.add_argument("--noisy-speech", metavar="DIR", help="fuss: held-out speech of DIR for the noisy-speech "
                                                         "rows (default: the shipped demo speech)")
    p.add_argument("--dnsmos", action="store_true", help="also DNSMOS SIG/BAK/OVRL and a ceiling row "
                                                         "(optional extra: pip install -r requirements-dnsmos.txt)")


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(prog="python -m surf_mini.audio_eval", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="score checkpoints on the test mixtures and print the table")
    e.add_argument("checkpoints", nargs="+", metavar="CKPT", help="full or exported audio checkpoints")
    e.add_argument("--task", choices=sorted(TASKS), default="speech")
    e.add_argument("--data", help="speech: clips with a test split (default: the shipped demo set); "
                                  "fuss: a FUSS-like set (default: the committed sample)")
    e.add_argument("--eval-size", type=int, default=100, help="test mixtures")
    add_eval_options(e)
    e.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="the EMA copy (what a run is scored on) or the trained weights (full checkpoints)")
    e.add_argument("--seed", type=int, default=0, help="seed of the flows' noise")
    e.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    e.add_argument("--threads", type=int, help="torch CPU threads")
    c = sub.add_parser("collect", help="one table from DIR/*/results.json")
    c.add_argument("dir")
    c.add_argument("--plot", metavar="PNG", help="also plot the validation curves (matplotlib)")
    a = p.parse_args(argv)
    options.single_process(p, f"python -m surf_mini.audio_eval {a.cmd}")
    if a.cmd == "collect":
        return collect(a.dir, a.plot)
    task = TASKS[a.task]
    a.data = a.data or task["data"]
    a.eval_seconds = a.eval_seconds or task["eval_seconds"]
    a.K, a.M = task["K"], task["M"]
    if a.task == "fuss":
        a.noisy_speech = a.noisy_speech or A.DEMO_DIR
    elif a.noisy_speech:
        p.error("--noisy-speech goes with --task fuss")
    if a.eval_size < 1 or a.eval_seconds <= 0:
        p.error("--eval-size and --eval-seconds must be positive")
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    return evaluate_checkpoints(a)


if __name__ == "__main__":
    main()
