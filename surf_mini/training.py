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
  * checkpoints are surf_mini/checkpoints.py's (plain data, atomic writes, the safe reader);
    ``save_checkpoint``, ``write_text`` and ``read_checkpoint`` are re-exported here.
  * several processes (``torchrun``): ``init_distributed`` joins torchrun's process group and
    the trained network's forward/backward goes through DistributedDataParallel; everything
    else (EMA, teachers, checkpoints) stays plain. A plain ``python train_*.py`` makes no
    process group at all and runs exactly as before (see the section's comment and
    docs/training-on-gpus.md).

Each script supplies what differs: how its network is built and which loss a stage computes.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from .checkpoints import read_checkpoint, save_checkpoint, write_text  # noqa: F401  (re-exported)
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


# --------------------------------------------------------------------------------------
# Several processes: torchrun and DistributedDataParallel
# --------------------------------------------------------------------------------------
# `torchrun --nproc_per_node W train_image.py ...` starts W copies of a script with RANK,
# WORLD_SIZE and LOCAL_RANK set; a plain `python train_image.py` sets none of them, and then
# nothing below makes a process group: every helper is the one-process identity, so a
# single-process run is bit for bit what it was before this section existed.
#
# How a step is shared (docs/training-on-gpus.md says the same for users):
#   * data: every rank draws the same *global* batch of B mixtures from the data stream g_data
#     (one seed on every rank) and keeps its own rows [r B/W, (r+1) B/W) (``Stage.mine``). The
#     ranks' rows together are the one-process batch, and g_data is in the same state on every
#     rank, so rank 0's checkpoint restores it for any number of processes.
#   * noise: the algorithm's noise / t / shuffles (g_alg) and dropout draw from one stream per
#     rank (``stream_seed``); rank 0 keeps the one-process seeds.
#   * gradients: each rank's loss is the mean over its B/W rows and DDP averages the gradients
#     over the W ranks: the gradient of the mean over all B rows. Clipping and AdamW run after
#     that all-reduce, on identical gradients, so the weights stay identical on every rank.
#   * the EMA copy, the frozen teacher and the hybrid teacher's sampling use the plain modules
#     on every rank (same weights everywhere); only the trained network's forward and backward
#     go through DDP.
#   * rank 0 alone reads (and sends) checkpoints, writes them, shows progress and evaluates.

@dataclasses.dataclass
class World:
    """This process's place among torchrun's: rank, number of processes, rank on its node."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owned: bool = False          # this module made the process group (so it destroys it)


WORLD = World()                  # one process until ``init_distributed`` says otherwise


def world_size_from_env() -> int:
    """Processes torchrun started (1 without torchrun); readable before any process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed() -> bool:
    return WORLD.size > 1


def is_main() -> bool:
    """Rank 0: the process that writes files, prints and evaluates."""
    return WORLD.rank == 0


def init_distributed(args) -> None:
    """Join torchrun's process group when it started several processes; otherwise do nothing.

    NCCL when ``args.device`` is CUDA (each process then takes GPU ``LOCAL_RANK``: ``args.device``
    becomes ``cuda:<LOCAL_RANK>``), gloo on the CPU. Several nodes are torchrun's business
    (``--nnodes``, ``--rdzv-endpoint``): the variables it sets are all this reads.
    """
    size = world_size_from_env()
    if size <= 1:
        return
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(args.device).startswith("cuda")
    if cuda:
        if local >= torch.cuda.device_count():
            raise SystemExit(f"error: process {local} of this node needs GPU {local}, but torch sees "
                             f"{torch.cuda.device_count()}; start at most that many (--nproc_per_node) "
                             f"or pass --device cpu")
        args.device = f"cuda:{local}"
        torch.cuda.set_device(local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo")
    WORLD.rank, WORLD.size, WORLD.local_rank, WORLD.owned = rank, size, local, owned


def destroy_distributed() -> None:
    """Leave the process group ``init_distributed`` made (no-op for one process)."""
    if WORLD.owned:
        import torch.distributed as dist
        dist.destroy_process_group()
    WORLD.rank, WORLD.size, WORLD.local_rank, WORLD.owned = 0, 1, 0, False


@contextlib.contextmanager
def process_group(args):
    """``with process_group(args): ...`` runs the body inside torchrun's process group (joined by
    ``init_distributed``, left afterwards even on an error); one process: nothing happens."""
    init_distributed(args)
    try:
        yield
    finally:
        destroy_distributed()


def barrier() -> None:
    if distributed():
        import torch.distributed as dist
        dist.barrier()


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over the ranks (the tensor itself for one process)."""
    if not distributed():
        return x
    import torch.distributed as dist
    x = x.clone()
    dist.all_reduce(x)
    return x / WORLD.size


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for one process)."""
    if not distributed():
        return [obj]
    import torch.distributed as dist
    out = [None] * WORLD.size
    dist.all_gather_object(out, obj)
    return out


def _agree(error: str | None) -> None:
    """Collective: if any rank met a one-line error, every rank stops with the first one (a
    rank stopping alone would leave the others waiting in the next collective)."""
    errors = [e for e in gather_objects(error) if e is not None]
    if errors:
        raise SystemExit(errors[0])


def in_turn(fn: Callable[[], object]):
    """``fn()`` on every rank: rank 0 first, then the first process of every other node, then the
    rest. A dataset download into a shared folder so happens once (the others find it there),
    and once per node on separate disks. A ``SystemExit`` on any rank stops all of them."""
    if not distributed():
        return fn()
    out, error = None, None
    for turn in (is_main(), not is_main() and WORLD.local_rank == 0, WORLD.local_rank != 0):
        if turn:
            try:
                out = fn()
            except SystemExit as e:
                error = str(e)
        _agree(error)
    return out


def from_main(fn: Callable[[], object]):
    """``fn()`` on rank 0 alone, its result sent to every rank: a checkpoint is read by rank 0 and
    broadcast, so ``--out`` need only exist on the first node. Its ``SystemExit`` stops all."""
    if not distributed():
        return fn()
    import torch.distributed as dist
    box = [None, None]
    if is_main():
        try:
            box[0] = fn()
        except SystemExit as e:
            box[1] = str(e)
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise SystemExit(box[1])
    return box[0]


def stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of rank ``rank``'s noise or dropout stream: ``seed`` itself on rank 0 (one process is
    unchanged), a hash of (seed, rank, step) elsewhere, so the ranks draw independent noise.
    ``step`` > 0 re-derives a stream afresh when a run resumes on another number of processes."""
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"surf_mini/{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1                      # in [0, 2**63)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch from host memory to ``device``; on CUDA through pinned memory and an
    asynchronous copy (the caching host allocator keeps the pinned block until the copy ends)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def setup_cuda(args) -> None:
    """TF32 matmuls on CUDA when ``args.tf32`` (float32 matmuls on tensor cores, 10-bit mantissa:
    what the bf16 budget's float32 parts, the EMA update and evaluation, can afford)."""
    if str(args.device).startswith("cuda") and getattr(args, "tf32", False):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
    then look for them every step).
    """

    def __init__(self, name: str, build: Callable[[], torch.nn.Module], *, kind: str, args,
                 device: torch.device, total: int, seed: int, teacher: torch.nn.Module | None = None,
                 init: Callable[[torch.nn.Module], object] | None = None,
                 find_unused_parameters: bool = False):
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
                "rng": rng}

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
        group["lr"] = lr_at(stage.step, stage.total, a.lr, a.warmup)
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
    without it): the hybrid teacher's beta then decays over the same share of a cut stage."""
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


def check_batch(parser, batch: int) -> None:
    """Under torchrun the global batch is split evenly over the processes."""
    W = world_size_from_env()
    if batch % W:
        parser.error(f"--batch {batch} must be a multiple of the {W} processes (each takes batch/{W} rows)")


def single_process(parser, what: str) -> None:
    """``--collect``, ``--export`` and ``--evaluate`` are not training: one process runs them."""
    if world_size_from_env() > 1:
        parser.error(f"{what} is a single-process command: run it with python, not torchrun")


# The CPU time in the GPU notice. The paper networks ran at about 87 GFLOP/s on one core of the
# machine this project is developed on (Intel Xeon, torch 2.11, float32, 2026-11-25): one forward
# of the paper NCSN on 8 CIFAR-10 flows (82 GFLOP by torch.utils.flop_counter) took 0.94 s, one
# forward of the paper locoformer on a 2 s 16 kHz flow (2.9 TFLOP) 33.9 s.
CPU_FLOPS = 87e9


def gpu_job_notice(job: str, flops: float) -> None:
    """Stop a GPU budget started on a machine without a GPU: one line on stderr, exit status 2."""
    days = flops / CPU_FLOPS / 86400
    print(f"{job} is a GPU job: its default budget ({flops / 1e15:,.0f} PFLOP) would take about "
          f"{days:,.0f} days on one CPU core (~{CPU_FLOPS / 1e9:.0f} GFLOP/s measured); try --preset quick, "
          f"or run it here anyway with --cpu-ok (this budget, float32) or --net cpu (the small network)",
          file=sys.stderr)
    raise SystemExit(2)


def read_results(folder: str) -> list[dict]:
    """Every ``folder/*/results.json``, in path order (what ``--collect`` tabulates and plots)."""
    import glob
    import json
    results = []
    for path in sorted(glob.glob(os.path.join(folder, "*", "results.json"))):
        with open(path) as f:
            res = json.load(f)
        res["run"] = os.path.basename(os.path.dirname(path))   # in memory only: names a repeated mode
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
