"""The plain training loop both scripts share: one network, its EMA copy, AdamW, checkpoints.

No separation math lives here (that is flow/pit/remix/mixit/ema, and which loss each method
trains on is methods.py); this is the plumbing of FLOSS section 4 / SURF D.3 training:

  * ``Stage``: one network being trained, with its EMA copy (SURF Alg. 1 line 16), AdamW,
    two random generators (data draws, and the algorithm's noise / t / shuffles) and a step
    counter; ``state()`` / ``load()`` turn it into a self-describing checkpoint and back,
    RNGs and optimizer included, so a resumed run continues bit for bit.
  * ``optimizer_step`` / ``train_stage``: lr schedule, loss (optionally under bf16 autocast),
    finite check, backward, clip, AdamW, EMA update; the loop with tqdm, periodic atomic
    checkpoints (checkpoints.py) and a validation score every ``--val-every`` steps (the
    learning curve, kept in the checkpoint so a resumed run continues it).
  * several processes (``torchrun``, distributed.py): the trained network's forward/backward
    goes through DistributedDataParallel; everything else (EMA, teachers, checkpoints) stays
    plain.
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

from .checkpoints import read_checkpoint, save_checkpoint
from .distributed import (WORLD, barrier, distributed, from_main, gather_objects, is_main,
                          mean_over_ranks, stream_seed, to_device)
from .ema import ema_update


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
    initialization depends on the seed only (and is the same on every rank). ``init(net)``
    (optional) then loads starting weights, before the EMA copy is taken. ``teacher`` is a frozen
    network stored inside the checkpoint so a stage can be resumed or evaluated without the run
    that made it.

    Forward passes go through ``fwd`` (the trained network: DDP-wrapped under torchrun, then
    compiled with ``--compile``), ``ema_fwd`` and ``teacher_fwd`` (compiled with ``--compile``);
    weights, EMA updates and checkpoints use the plain ``net``, ``ema`` and ``teacher``.
    ``find_unused_parameters``: the network has parameters its forward never uses (DDP must
    then look for them every step). ``meta``: fields the checkpoint carries besides the stage's
    own (audio: the architecture's name, the sample rate, the noise shaping, the input level).
    """

    def __init__(self, name: str, build: Callable[[], torch.nn.Module], *, kind: str, args,
                 device: torch.device, total: int, seed: int, teacher: torch.nn.Module | None = None,
                 init: Callable[[torch.nn.Module], object] | None = None,
                 find_unused_parameters: bool = False, meta: dict | None = None):
        self.meta = dict(meta or {})                # extra checkpoint fields (audio: arch, rate)
        self.name, self.kind, self.args, self.device, self.total = name, kind, args, device, total
        self.asked = total                          # the step count asked for (--minutes may cut total)
        self.seed = seed
        self.path = os.path.join(args.out, f"{name}.pt")
        torch.manual_seed(seed + 2)                                         # init, dropout
        self.net = build().to(device)
        self.teacher = teacher
        self.step = 0
        self.curve: list[dict] = []                                         # validation scores
        self.g_data = torch.Generator().manual_seed(seed)                  # data draws (CPU), shared
        self.g_alg = torch.Generator(device=device).manual_seed(           # noise, t, shuffles
            stream_seed(seed + 1, WORLD.rank))
        if init is not None:
            init(self.net)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        if WORLD.rank > 0:
            torch.manual_seed(stream_seed(seed + 2, WORLD.rank))            # this rank's dropout
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=args.lr, weight_decay=0.01)
        trained = self.net
        if distributed():
            # Buffers are constants here (no batch norm): no need to broadcast them every step.
            trained = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=find_unused_parameters)
        compiled = lambda net: torch.compile(net) if args.compile and net is not None else net  # noqa: E731
        self.fwd = compiled(trained)                                        # compile(DDP(net))
        self.ema_fwd = compiled(self.ema)
        self.teacher_fwd = compiled(teacher)

    def mine(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch, on the device: rows [r B/W, (r+1) B/W) of rank r
        (all of them for one process)."""
        b = len(batch) // WORLD.size
        return to_device(batch[WORLD.rank * b:(WORLD.rank + 1) * b], self.device)

    def _own_rng(self) -> dict:
        """This rank's noise and dropout streams (g_data is the same on every rank)."""
        return {"alg": self.g_alg.get_state(), "torch": torch.get_rng_state(),    # dropout (CPU)
                "cuda": self._cuda_rng()}                                          # dropout (GPU)

    def _cuda_rng(self):
        if self.device.type != "cuda":
            return None
        if distributed():                                   # this rank's GPU only
            return [torch.cuda.get_rng_state(self.device)]
        return torch.cuda.get_rng_state_all()

    def state(self) -> dict:
        """The checkpoint. Under torchrun every rank must call it (it gathers the ranks' noise
        streams); rank 0 writes it."""
        rng = {"data": self.g_data.get_state(), **self._own_rng()}
        if distributed():
            rng["ranks"] = gather_objects(self._own_rng())   # [W] streams: exact same-W resume
        return {"kind": self.kind, "stage": self.name, "config": dataclasses.asdict(self.net.config),
                "model": self.net.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step, "total_steps": self.total,
                "curve": self.curve,
                "args": dict(vars(self.args)),
                "teacher": None if self.teacher is None else
                {"config": dataclasses.asdict(self.teacher.config), "ema": self.teacher.state_dict()},
                "rng": rng, **self.meta}

    def load(self, ckpt: dict) -> None:
        """Continue from ``ckpt``, on any number of processes. The data stream is the same on
        every rank and always restored. The noise streams are restored rank by rank when the
        checkpoint was written by as many processes; otherwise rank 0 takes the saved one and
        the others derive fresh streams from (seed, rank, step)."""
        # A config saved before a field was added (e.g. NCSN's head) means that field's default.
        saved = dataclasses.asdict(type(self.net.config)(**ckpt["config"]))
        if ckpt["stage"] != self.name or saved != dataclasses.asdict(self.net.config):
            raise SystemExit(f"error: {self.path!r} holds stage {ckpt['stage']!r} with another "
                             f"network; use a fresh --out or drop --resume")
        self.net.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["opt"])
        self.step = ckpt["step"]
        self.curve = list(ckpt.get("curve", []))                          # older checkpoints: none
        rng = ckpt["rng"]
        self.g_data.set_state(rng["data"])
        ranks = rng.get("ranks")
        if ranks is not None and len(ranks) == WORLD.size:
            own = ranks[WORLD.rank]
        else:
            own = rng if WORLD.rank == 0 else None
        if own is None:
            self.g_alg.manual_seed(stream_seed(self.seed + 1, WORLD.rank, self.step))
            torch.manual_seed(stream_seed(self.seed + 2, WORLD.rank, self.step))
            return
        self.g_alg.set_state(own["alg"])
        torch.set_rng_state(own["torch"])
        if self.device.type == "cuda" and own.get("cuda") is not None:
            if distributed():
                torch.cuda.set_rng_state(own["cuda"][0], self.device)
            else:
                torch.cuda.set_rng_state_all(own["cuda"])                  # dropout (GPU)


def autocast(stage: Stage):
    """bf16 autocast of the forward passes when ``--precision bf16`` (CPU with AVX-512 BF16, or
    CUDA); a no-op context for fp32. Parameters, optimizer state and the EMA stay float32."""
    bf16 = getattr(stage.args, "precision", "fp32") == "bf16"
    return torch.autocast(stage.device.type, dtype=torch.bfloat16, enabled=bf16)


def optimizer_step(stage: Stage, loss_fn: Callable[[Stage], torch.Tensor]) -> torch.Tensor:
    """Loss, AdamW step (lr from the schedule, gradients clipped at 1), EMA update. Returns the
    batch's loss (averaged over the ranks under torchrun), detached."""
    a = stage.args
    for group in stage.opt.param_groups:
        group["lr"] = lr_at(stage.step, stage.total, a.lr, share_of_stage(a.warmup, stage))
    with autocast(stage):
        loss = loss_fn(stage).float()                                      # this rank's rows
    shown = mean_over_ranks(loss.detach())      # the whole batch's loss, the same on every rank,
    if not torch.isfinite(shown):               # so all ranks stop together
        raise SystemExit(f"error: non-finite loss at step {stage.step} of {stage.name}; lower --lr")
    stage.opt.zero_grad(set_to_none=True)
    loss.backward()                                                        # DDP: averaged over ranks
    torch.nn.utils.clip_grad_norm_(stage.net.parameters(), 1.0)
    stage.opt.step()
    ema_update(stage.ema, stage.net, a.ema)                                # SURF Alg. 1, line 16
    return shown


Validator = Callable[[Stage], dict]


def validate_now(stage: Stage, validate: Validator | None) -> None:
    """Append ``validate(stage)`` (scores of the EMA network on the validation mixtures) to the
    stage's learning curve when the step is a multiple of ``--val-every`` or the last one.
    Rank 0 only: its curve is the one its checkpoints keep."""
    every = getattr(stage.args, "val_every", 0) or 0
    if validate is None or every <= 0 or stage.step == 0 or not is_main():
        return
    if stage.step % every == 0 or stage.step == stage.total:
        if not stage.curve or stage.curve[-1]["step"] != stage.step:
            stage.curve.append({"step": stage.step, **validate(stage)})    # the EMA copy: net untouched


def train_stage(stage: Stage, loss_fn: Callable[[Stage], torch.Tensor],
                validate: Validator | None = None) -> dict:
    """The plain loop: ``optimizer_step`` until the stage's step count, a validation score every
    ``--val-every`` steps, periodic atomic checkpoints (rank 0 writes them; every rank waits for
    the file before going on)."""
    a = stage.args
    stage.net.train()
    t0, losses = time.time(), []
    bar = tqdm(total=stage.total, initial=stage.step, desc=stage.name, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30,                # sparse in log files
               disable=not is_main())
    minutes, t_fit = getattr(a, "minutes", None), None
    while stage.step < stage.total:
        loss = optimizer_step(stage, loss_fn)
        stage.step += 1
        losses.append(loss.item())
        bar.update(1)
        if minutes and len(losses) == FIT_FROM:
            t_fit = time.time()                                            # compiled and warm by now
        if minutes and len(losses) == FIT_FROM + FIT_OVER:
            stage.total = from_main(lambda: steps_that_fit(stage, minutes * 60 - (time.time() - t0),
                                                           (time.time() - t_fit) / FIT_OVER))
            bar.total = stage.total
            bar.refresh()
        if stage.step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3g}")
        validate_now(stage, validate)                                      # before the save
        if stage.step % a.ckpt_every == 0 or stage.step == stage.total:
            state = stage.state()                                          # every rank (it gathers)
            if is_main():
                save_checkpoint(stage.path, state)
            barrier()
    bar.close()
    steps = len(losses)
    return {"stage": stage.name, "steps": stage.total, "steps_this_run": steps,
            "seconds": round(time.time() - t0, 1),
            "sec_per_step": round((time.time() - t0) / steps, 4) if steps else None,
            "final_loss": sum(losses[-50:]) / len(losses[-50:]) if losses else None,
            "curve": list(stage.curve)}


# ``--minutes``: the step rate is measured over FIT_OVER steps after the first FIT_FROM of a run
# (torch.compile and the first CUDA kernels make those slow), then the stage's step count is cut
# to what the time left allows. FIT_MARGIN leaves room for validations and checkpoints.
FIT_FROM, FIT_OVER, FIT_MARGIN = 10, 40, 0.9


def steps_that_fit(stage: Stage, seconds_left: float, sec_per_step: float) -> int:
    """The stage's new step count under ``--minutes``: never more than asked (``--steps``),
    never fewer than done. The schedule (``lr_at``) follows the new total from the next step,
    which is still in or near the warm-up. Printed, and kept in the checkpoint's total_steps."""
    fit = stage.step + int(FIT_MARGIN * max(0.0, seconds_left) / max(sec_per_step, 1e-9))
    total = max(stage.step, min(stage.total, fit))
    if is_main():
        print(f"\n{stage.name}: {sec_per_step:.3f} s/step, --minutes {stage.args.minutes:g} -> "
              f"{total} steps (asked {stage.total})", file=sys.stderr)
    return total


def share_of_stage(steps: int, stage: Stage) -> int:
    """``steps`` scaled by how much of the asked step count ``--minutes`` left (``steps`` itself
    without it): the warm-up and the hybrid teacher's beta then take the same share of a cut
    stage, so a wall-clock budget ends its whole schedule when its time ends."""
    return round(steps * stage.total / stage.asked)


def resume_or_start(stage: Stage, resume: bool, loss_fn: Callable[[Stage], torch.Tensor],
                    validate: Validator | None = None) -> dict:
    """Load the stage's own checkpoint when ``resume`` and it exists, then train to the end.

    A finished stage may be resumed with a larger step count (``--steps``): it goes on from
    its step with the schedule of the new total. Under torchrun rank 0 reads the checkpoint and
    sends it to the others; it may come from a run on any number of processes.
    """
    def read() -> dict | None:
        if resume and os.path.isfile(stage.path):
            return read_checkpoint(stage.path, stage.kind, f"{stage.name} stage")
        return None
    ckpt = from_main(read)
    if ckpt is not None:
        stage.load(ckpt)
        if is_main():
            saved, note = len(ckpt["rng"].get("ranks") or [None]), ""   # processes that wrote it
            if saved != WORLD.size:
                note = f" on {WORLD.size} process(es), from a checkpoint of {saved}"
                note += " (ranks >= 1 start new noise streams)" if WORLD.size > 1 else ""
            print(f"resuming {stage.name} at step {stage.step}/{stage.total}{note}", file=sys.stderr)
    return train_stage(stage, loss_fn, validate)
