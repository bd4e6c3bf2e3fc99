"""Several processes: torchrun and DistributedDataParallel, the plumbing both training scripts share.

A plain ``python train_image.py`` makes no process group, and every helper here is then the
one-process identity (``mine`` keeps all rows, ``from_main`` just calls), so a single-process
run is bit for bit what it would be without this module. docs/training-on-gpus.md says the
same for users.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from typing import Callable

import torch

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
