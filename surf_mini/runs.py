"""Run folders: the results tables of several runs and their learning curves.

Every training run writes ``<out>/results.json`` (its rows, stages and validation curves);
``read_results`` reads a folder of runs, ``collect_rows`` makes one table of them in the
order of SURF's tables, and ``plot_curves`` draws the validation curves (matplotlib, imported
only then). The commands are ``python -m surf_mini.image_eval collect DIR`` and
``python -m surf_mini.audio_eval collect DIR``.
"""
from __future__ import annotations

import os

def read_results(folder: str) -> list[dict]:
    """Every ``folder/*/results.json``, in path order (what ``--collect`` tabulates and plots)."""
    import glob
    import json
    results = []
    for path in sorted(glob.glob(os.path.join(folder, "*", "results.json"))):
        with open(path) as f:
            res = json.load(f)
        res["run"] = os.path.basename(os.path.dirname(path))   # in memory only: an A/B's name
        results.append(res)
    return results


def collect_rows(folder: str, order: list[str], results: list[dict] | None = None) -> list[dict]:
    """The rows of every ``folder/*/results.json`` (or of ``results``, ``read_results(folder)``
    already read), in ``order``.

    The "its MixIT teacher" rows of the remixing runs are left out: the MixIT run has its own.
    A method found in several runs (an A/B: two recipes of one mode side by side) keeps every
    run's rows, each method name followed by its run folder, ``"supervised flow [x1-near0]"``.
    """
    results = read_results(folder) if results is None else results
    runs_of = {}                                           # method -> the runs that score it
    for res in results:
        for r in res["rows"]:
            runs_of.setdefault(r["method"], set()).add(res.get("run"))
    ranked, seen = [], set()                               # (place of the method in order, row)
    for res in results:
        for r in res["rows"]:
            key = (r["method"], r["grouping"], res.get("run"))
            if r["method"] == "its MixIT teacher" or key in seen:
                continue
            seen.add(key)
            label = r["method"] + (f" [{res['run']}]" if len(runs_of[r["method"]]) > 1 else "")
            rank = order.index(r["method"]) if r["method"] in order else len(order)
            ranked.append((rank, dict(r, method=label, budget=res["budget"])))
    if not results:
        raise SystemExit(f"error: no */results.json under {folder!r}")
    ranked.sort(key=lambda x: x[0])                        # stable: runs keep their path order
    return [row for _, row in ranked]


def curves_by_mode(results: list[dict]) -> dict[str, list[tuple[str, list]]]:
    """The validation curves of ``read_results``, as mode -> [(run folder, curve), ...].

    Every run's own stage is kept, so two runs of one mode (an A/B) draw two lines. A
    student run also holds the curve of the MixIT teacher it trained first; that one is used
    only when no run of its own draws ``mixit``, and then once.
    """
    curves = {}
    for res in results:                                    # each run's own stage first
        for st in res["stages"]:
            if st.get("curve") and st["stage"] == res.get("mode"):
                curves.setdefault(st["stage"], []).append((res.get("run"), st["curve"]))
    for res in results:                                    # then teachers no run of their own has
        for st in res["stages"]:
            if st.get("curve") and st["stage"] not in curves:
                curves[st["stage"]] = [(res.get("run"), st["curve"])]
    return curves


def plot_curves(results: list[dict], path: str, key: str, ylabel: str, modes: tuple, names: dict,
                merged: tuple = (), flows: tuple = ()) -> None:
    """Validation score ``key`` against steps, one line per run of a method (``curves_by_mode``;
    a method with several runs names each line by its run folder; the ``merged`` modes' curves
    are their merged outputs, what a student is fed), from ``read_results``; solid lines for
    ``flows``. matplotlib is imported here only: training never needs it. The PNG is written
    atomically."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib: pip install matplotlib") from None
    curves = curves_by_mode(results)
    if not curves:
        raise SystemExit("error: no validation curves in the results.json files")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for mode in [m for m in modes if m in curves]:
        for run, curve in curves[mode]:
            c = [p for p in curve if key in p]
            label = names[mode] + (" (merged)" if mode in merged else "")
            label += f" [{run}]" if len(curves[mode]) > 1 else ""
            ax.plot([p["step"] for p in c], [p[key] for p in c], "-" if mode in flows else "--",
                    marker="o", ms=3, label=label)
    ax.set_xlabel("optimizer steps of the method's own stage")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, path)
    print(f"wrote {path}")


def in_table_order(rows: list[dict]) -> list[dict]:
    """``rows`` in the order of SURF's tables (methods.METHOD_NAMES), others last; stable."""
    from .methods import METHOD_NAMES
    order = list(METHOD_NAMES.values())
    return sorted(rows, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))


def checkpoint_budget(ckpt: dict) -> str:
    """The budget column of a re-scored checkpoint: its steps (and its MixIT teacher's), from
    the options it carries (``trained_with`` when exported, ``args`` for a run's own), and the
    batch (audio: with the crops' length)."""
    from .methods import NEEDS_TEACHER
    a = ckpt.get("trained_with") or ckpt.get("args") or {}
    own = f"{ckpt['step']} steps"
    if ckpt["stage"] in NEEDS_TEACHER and a.get("teacher_steps"):
        own = f"{a['teacher_steps']} MixIT + {own}"
    if not a.get("batch"):
        return own
    return own + f", B={a['batch']}" + (f" x {a['seconds']:g} s" if a.get("seconds") else "")


def run_record(args, net, logs: list[dict], rows: list[dict], budget: str, t_start: float,
               t_eval: float, device, world: int = 1, **fields) -> dict:
    """What a run's ``results.json`` holds: ``fields`` (the domain's: dataset or task), the
    mode, the network's size, the budget, every stage's log and curve, the timings, the
    table's rows and every option."""
    import time

    import torch
    size = sum(p.numel() for p in net.parameters())
    out = dict(fields, mode=args.mode, net=args.net, parameters=size,
               budget=budget, stages=logs, eval_seconds=round(time.time() - t_eval, 1),
               total_seconds=round(time.time() - t_start, 1), device=str(device),
               torch_threads=torch.get_num_threads(), rows=rows, args=vars(args))
    if world > 1:
        out["processes"] = world
    if torch.device(device).type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def write_results(folder: str, result: dict, table: str | None = None) -> None:
    """``results.json`` (and ``results.md``, the table), each written atomically."""
    import json

    from .checkpoints import write_text
    write_text(os.path.join(folder, "results.json"), json.dumps(result, indent=1))
    if table is not None:
        write_text(os.path.join(folder, "results.md"), table)
