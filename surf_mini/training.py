"""What train_image.py and train_audio.py share: the plain training loop and its checkpoints.

No separation math lives here (that is flow/pit/remix/mixit/ema); this is the plumbing of
FLOSS section 4 / SURF D.3 training as both scripts run it:

  * ``Stage``: one network being trained, with its EMA copy (SURF Alg. 1 line 16), AdamW,
    two random generators (data draws, and the algorithm's noise / t / shuffles) and a step
    counter; ``state()`` / ``load()`` turn it into a self-describing checkpoint and back,
    RNGs and optimizer included, so a resumed run continues bit for bit.
  * ``optimizer_step`` / ``train_stage``: lr schedule, loss (optionally under bf16 autocast),
    finite check, backward, clip, AdamW, EMA update; the loop with tqdm, periodic atomic
    checkpoints and a validation score every ``--val-every`` steps (the learning curve,
    kept in the checkpoint so a resumed run continues it).
  * ``save_checkpoint`` / ``write_text`` (temporary file, then rename) and ``read_checkpoint``
    with a one-line error for a missing, unreadable or foreign file.

Each script supplies what differs: how its network is built and which loss a stage computes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from .ema import ema_update


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic ``torch.save``: a crash mid-write never leaves a truncated checkpoint."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Write a results file atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_checkpoint(path: str, kind: str, what: str) -> dict:
    """Load a checkpoint whose ``kind`` field must be ``kind``; SystemExit with one line otherwise."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise SystemExit(f"error: {path!r} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise SystemExit(f"error: {path!r} is not a surf_mini {what} checkpoint")
    return ckpt


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay (FLOSS section 4: ramp, then cosine)."""
    ramp = min(1.0, (step + 1) / max(1, warmup))
    return peak * ramp * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def init_from(student: torch.nn.Module, source: torch.nn.Module) -> int:
    """Copy every parameter whose name and shape agree; returns how many tensors were copied."""
    own = student.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(shared)
    student.load_state_dict(own)
    return len(shared)


class Stage:
    """One training loop's state: network, EMA copy, optimizer, RNGs, step counter.

    ``build()`` makes the network; it runs right after ``torch.manual_seed(seed + 2)`` so the
    initialization depends on the seed only. ``init(net)`` (optional) then loads starting
    weights, before the EMA copy is taken. ``teacher`` is a frozen network stored inside the
    checkpoint so a stage can be resumed or evaluated without the run that made it.
    """

    def __init__(self, name: str, build: Callable[[], torch.nn.Module], *, kind: str, args,
                 device: torch.device, total: int, seed: int, teacher: torch.nn.Module | None = None,
                 init: Callable[[torch.nn.Module], object] | None = None):
        self.name, self.kind, self.args, self.device, self.total = name, kind, args, device, total
        self.path = os.path.join(args.out, f"{name}.pt")
        torch.manual_seed(seed + 2)                                         # init, dropout
        self.net = build().to(device)
        self.teacher = teacher
        self.step = 0
        self.curve: list[dict] = []                                         # validation scores
        self.g_data = torch.Generator().manual_seed(seed)                  # data draws (CPU)
        self.g_alg = torch.Generator(device=device).manual_seed(seed + 1)  # noise, t, shuffles
        if init is not None:
            init(self.net)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=args.lr, weight_decay=0.01)
        self.fwd = torch.compile(self.net) if args.compile else self.net
        self.ema_fwd = torch.compile(self.ema) if args.compile else self.ema

    def state(self) -> dict:
        return {"kind": self.kind, "stage": self.name, "config": dataclasses.asdict(self.net.config),
                "model": self.net.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step, "total_steps": self.total,
                "curve": self.curve,
                "args": dict(vars(self.args)),
                "teacher": None if self.teacher is None else
                {"config": dataclasses.asdict(self.teacher.config), "ema": self.teacher.state_dict()},
                "rng": {"data": self.g_data.get_state(), "alg": self.g_alg.get_state(),
                        "torch": torch.get_rng_state(),                        # dropout (CPU)
                        "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}}

    def load(self, ckpt: dict) -> None:
        if ckpt["stage"] != self.name or ckpt["config"] != dataclasses.asdict(self.net.config):
            raise SystemExit(f"error: {self.path!r} holds stage {ckpt['stage']!r} with another "
                             f"network; use a fresh --out or drop --resume")
        self.net.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["opt"])
        self.step = ckpt["step"]
        self.curve = list(ckpt.get("curve", []))                          # older checkpoints: none
        self.g_data.set_state(ckpt["rng"]["data"])
        self.g_alg.set_state(ckpt["rng"]["alg"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])                 # dropout (GPU)


def autocast(stage: Stage):
    """bf16 autocast of the forward passes when ``--precision bf16`` (CPU with AVX-512 BF16, or
    CUDA); a no-op context for fp32. Parameters, optimizer state and the EMA stay float32."""
    bf16 = getattr(stage.args, "precision", "fp32") == "bf16"
    return torch.autocast(stage.device.type, dtype=torch.bfloat16, enabled=bf16)


def optimizer_step(stage: Stage, loss_fn: Callable[[Stage], torch.Tensor]) -> torch.Tensor:
    """Loss, AdamW step (lr from the schedule, gradients clipped at 1), EMA update."""
    a = stage.args
    for group in stage.opt.param_groups:
        group["lr"] = lr_at(stage.step, stage.total, a.lr, a.warmup)
    with autocast(stage):
        loss = loss_fn(stage).float()
    if not torch.isfinite(loss):
        raise SystemExit(f"error: non-finite loss at step {stage.step} of {stage.name}; lower --lr")
    stage.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(stage.net.parameters(), 1.0)
    stage.opt.step()
    ema_update(stage.ema, stage.net, a.ema)                                # SURF Alg. 1, line 16
    return loss


Validator = Callable[[Stage], dict]


def validate_now(stage: Stage, validate: Validator | None) -> None:
    """Append ``validate(stage)`` (scores of the EMA network on the validation mixtures) to the
    stage's learning curve when the step is a multiple of ``--val-every`` or the last one."""
    every = getattr(stage.args, "val_every", 0) or 0
    if validate is None or every <= 0 or stage.step == 0:
        return
    if stage.step % every == 0 or stage.step == stage.total:
        if not stage.curve or stage.curve[-1]["step"] != stage.step:
            stage.curve.append({"step": stage.step, **validate(stage)})
        stage.net.train()


def train_stage(stage: Stage, loss_fn: Callable[[Stage], torch.Tensor],
                validate: Validator | None = None) -> dict:
    """The plain loop: ``optimizer_step`` until the stage's step count, a validation score every
    ``--val-every`` steps, periodic atomic checkpoints."""
    a = stage.args
    stage.net.train()
    t0, losses = time.time(), []
    bar = tqdm(total=stage.total, initial=stage.step, desc=stage.name, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)                # sparse in log files
    while stage.step < stage.total:
        loss = optimizer_step(stage, loss_fn)
        stage.step += 1
        losses.append(loss.item())
        bar.update(1)
        if stage.step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3g}")
        validate_now(stage, validate)                                      # before the save
        if stage.step % a.ckpt_every == 0 or stage.step == stage.total:
            save_checkpoint(stage.path, stage.state())
    bar.close()
    steps = len(losses)
    return {"stage": stage.name, "steps": stage.total, "steps_this_run": steps,
            "seconds": round(time.time() - t0, 1),
            "sec_per_step": round((time.time() - t0) / steps, 4) if steps else None,
            "final_loss": sum(losses[-50:]) / len(losses[-50:]) if losses else None,
            "curve": list(stage.curve)}


def resume_or_start(stage: Stage, resume: bool, loss_fn: Callable[[Stage], torch.Tensor],
                    validate: Validator | None = None) -> dict:
    """Load the stage's own checkpoint when ``resume`` and it exists, then train to the end.

    A finished stage may be resumed with a larger step count (``--steps``): it goes on from
    its step with the schedule of the new total.
    """
    if resume and os.path.isfile(stage.path):
        stage.load(read_checkpoint(stage.path, stage.kind, f"{stage.name} stage"))
        print(f"resuming {stage.name} at step {stage.step}/{stage.total}", file=sys.stderr)
    return train_stage(stage, loss_fn, validate)


def fill_defaults(args, defaults: dict) -> None:
    """Options left unset take ``defaults`` (the chosen preset over the script's defaults)."""
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def pick_device(parser, args) -> None:
    """``--device`` default: CUDA when torch sees a GPU; asking for CUDA without one is an error."""
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")


def collect_rows(folder: str, order: list[str]) -> list[dict]:
    """The rows of every ``folder/*/results.json``, each (method, matching) once, in ``order``.

    The "its MixIT teacher" rows of the remixing runs are left out: the MixIT run has its own.
    """
    import glob
    import json
    rows, seen = [], set()
    for path in sorted(glob.glob(os.path.join(folder, "*", "results.json"))):
        with open(path) as f:
            res = json.load(f)
        for r in res["rows"]:
            key = (r["method"], r["grouping"])
            if r["method"] != "its MixIT teacher" and key not in seen:
                seen.add(key)
                rows.append(dict(r, budget=res["budget"]))
    if not rows:
        raise SystemExit(f"error: no */results.json under {folder!r}")
    rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    return rows
