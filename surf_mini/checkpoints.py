"""Checkpoints as data: how surf_mini writes, reads and checks its ``.pt`` files.

A checkpoint is a dict of tensors and plain data (numbers, strings, lists, tuples, dicts,
None): the network's config, its weights, the optimizer state, the learning curve, the run's
options. Nothing in it needs code to rebuild, so it is read with
``torch.load(..., weights_only=True)``, PyTorch's restricted unpickler, which refuses any
other object instead of running it. A pickle is a program: a ``.pt`` file downloaded from a
model hub or a colleague's folder can otherwise run any command the moment it is loaded.

  * ``to_plain`` / ``save_checkpoint``: every checkpoint is checked to be plain data before it
    is written (an argparse Namespace becomes a dict, numpy scalars become Python numbers), and
    written atomically (temporary file, then rename), so a killed run leaves the last complete
    checkpoint, never a truncated one (a stale ``*.tmp<pid>`` beside it is ignored).
  * ``read_checkpoint``: the one reader every entry point uses (separate.py, ``--evaluate``,
    ``--teacher``, ``--resume``, ``--export``, bench/). Every failure is one line naming the file
    and what is wrong: not found, truncated or corrupt, unsafe content refused, wrong kind.
  * ``load_network``: rebuild a network from the config inside a checkpoint and load its
    weights, with one line for a config that builds no network, weights that do not fit, or
    weights (or an ``input_level``) that are NaN or infinite.
  * ``image_network`` / ``audio_network``: the network of an image or audio checkpoint, the
    one way every entry point (separate.py, the evaluation commands, bench/) rebuilds one.
  * ``python -m surf_mini.checkpoints export RUN.pt SMALL.pt``: keep what separation and
    evaluation need (config, EMA weights, provenance, learning curve), a few hundred kB to a
    few MB; ``check FILE...`` says what each file is.
  * ``python -m surf_mini.checkpoints convert --i-trust-this-file OLD NEW``: the one explicit,
    documented way to read a checkpoint written before 2026-12-02 (those held an argparse
    Namespace in a few cases) with the unrestricted unpickler. It runs whatever the file holds,
    so it refuses without the flag: use it only on files you made yourself.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pickle
import sys
from typing import Any, Callable

import torch

PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as plain data the restricted unpickler reads back; ValueError for anything else.

    Containers are walked; argparse Namespaces and dataclasses become dicts and numpy scalars
    and arrays become Python numbers and tensors, so what goes into a checkpoint never needs
    ``weights_only=False`` to come out.
    """
    if type(obj) in PLAIN or isinstance(obj, (torch.Tensor, torch.Size)):
        return obj
    for base in (bool, int, float, str):       # subclasses (torch.__version__ is one) as the base
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    module = type(obj).__module__
    if module == "numpy":
        import numpy as np
        if isinstance(obj, np.ndarray):
            return torch.from_numpy(obj.copy())
        if isinstance(obj, np.generic):
            return obj.item()
    raise ValueError(f"{where} holds a {module}.{type(obj).__name__}, which is not plain data; "
                     f"store numbers, strings, lists, dicts or tensors")


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic ``torch.save`` of plain data: a crash mid-write never leaves a truncated file."""
    state = to_plain(state)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Write a results file atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _fail(path: str, what: str) -> SystemExit:
    return SystemExit(f"error: checkpoint {path!r} {what}")


def read_checkpoint(path: str, kind: str | None = None, what: str = "") -> dict:
    """Load a checkpoint safely; its ``kind`` field must be ``kind`` (any when None).

    Uses the restricted unpickler (``weights_only=True``): tensors and plain data only, so
    loading never runs code from the file. Every failure is a one-line SystemExit.
    """
    if not os.path.isfile(path):
        raise _fail(path, "not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():         # a class or function the file asks to call
            raise _fail(path, "refused: it holds objects other than tensors and plain data, "
                              "which could run code when loaded (convert it only if you trust it, "
                              "e.g. you wrote it yourself with an older surf_mini: python -m "
                              "surf_mini.checkpoints convert --i-trust-this-file "
                              f"{path} NEW.pt, which runs that code)") from None
        raise _fail(path, f"is not a readable checkpoint: truncated or corrupt ({type(e).__name__})") from None
    except Exception as e:                  # zip/EOF/runtime errors of a cut or foreign file
        raise _fail(path, f"is not a readable checkpoint: truncated or corrupt ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise _fail(path, "is not a surf_mini checkpoint (no 'kind' field)")
    if kind is not None and ckpt["kind"] != kind:
        raise _fail(path, f"is a {ckpt['kind']!r} checkpoint, not a surf_mini {what or kind} checkpoint")
    return ckpt


def load_network(path: str, ckpt: dict, build: Callable[[dict], torch.nn.Module],
                 which: str = "ema") -> torch.nn.Module:
    """``build(ckpt)`` (a network from the config inside) with ``ckpt[which]`` loaded into it;
    one line when the config builds no network or the weights' names or shapes do not fit."""
    try:
        net = build(ckpt)
    except (TypeError, ValueError, KeyError) as e:
        raise _fail(path, f"has a config that builds no network ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt.get(which), dict):
        raise _fail(path, f"holds no {which!r} weights")
    try:
        net.load_state_dict(ckpt[which])
    except (RuntimeError, KeyError, TypeError) as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = first[1] if len(first) > 1 else (first[0] if first else type(e).__name__)
        raise _fail(path, f"has {which!r} weights that do not fit its config ({detail[:160]})") from None
    check_finite(path, ckpt, which)
    return net


def check_finite(path: str, ckpt: dict, which: str = "ema") -> None:
    """One line when ``ckpt[which]``'s weights or its ``input_level`` hold NaN or Inf. Such a
    network turns every input into NaN, which separate.py used to drop as "silent" (exit 0,
    nothing written) and the evaluation commands met as a traceback; a diverged run's last
    checkpoint is the usual source."""
    bad = [k for k, v in ckpt[which].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise _fail(path, f"has NaN or infinite {which!r} weights ({len(bad)} tensor(s), first "
                          f"{bad[0]}): the run diverged; use an earlier checkpoint or retrain with a lower --lr")
    level = ckpt.get("input_level")
    if level is not None and not (math.isfinite(float(level)) and float(level) > 0):
        raise _fail(path, f"has input_level {float(level)!r}, not a finite positive level; "
                          f"the level inputs are brought to is unknown; give another checkpoint or retrain")


IMAGE_KIND = "surf_mini.ncsn"           # train_image.py's checkpoints (NCSN++ networks)
AUDIO_KIND = "surf_mini.audio"          # train_audio.py's (ConvTasNet or MB-TFLocoformer)


def build_image(ckpt: dict) -> torch.nn.Module:
    from .ncsn import NCSN, NCSNConfig
    return NCSN(NCSNConfig(**ckpt["config"]))


def build_audio(ckpt: dict) -> torch.nn.Module:
    """``ckpt["arch"]`` names the class, ``ckpt["config"]`` its config."""
    from .convtasnet import ConvTasNet, ConvTasNetConfig
    from .locoformer import LocoformerConfig, MBTFLocoformer
    arch = {"convtasnet": (ConvTasNet, ConvTasNetConfig), "locoformer": (MBTFLocoformer, LocoformerConfig)}
    cls, config = arch[ckpt["arch"]]
    return cls(config(**ckpt["config"]))


def image_network(ckpt: dict, which: str = "ema", path: str = "checkpoint") -> torch.nn.Module:
    """The NCSN an image checkpoint describes, with its ``which`` weights ("ema" or "model")."""
    return load_network(path, ckpt, build_image, which)


def audio_network(ckpt: dict, which: str = "ema", path: str = "checkpoint") -> torch.nn.Module:
    """The ConvTasNet or locoformer an audio checkpoint describes, with its ``which`` weights."""
    return load_network(path, ckpt, build_audio, which)


# What an exported checkpoint keeps besides its weights: the fields separation and evaluation
# read, and from the run's options the ones that say how it was trained (its provenance).
EXPORT_FIELDS = ("kind", "arch", "stage", "config", "ema", "sample_rate", "shaping", "input_level",
                 "step", "curve")
PROVENANCE = ("task", "dataset", "mode", "net", "reg_net", "steps", "teacher_steps", "batch", "seconds",
              "lr", "warmup", "ema", "beta_steps", "precision", "merge", "mixit_sparsity", "time",
              "flow_loss", "flow_head", "loss_space", "nf", "res_blocks", "augment", "data", "mixtures",
              "librimix", "seed")


def export(src: str, dst: str) -> None:
    """Write ``src``'s EMA network, config and provenance alone to ``dst`` (atomic): what
    separate.py and the evaluation commands need, without the optimizer or the raw weights."""
    ckpt = read_checkpoint(src)
    if "args" not in ckpt:
        raise _fail(src, "is already exported (it holds no run options); copy it instead")
    small = {k: ckpt[k] for k in EXPORT_FIELDS if k in ckpt}
    small["trained_with"] = {k: ckpt["args"].get(k) for k in PROVENANCE if k in ckpt["args"]}
    save_checkpoint(dst, small)
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e6:.2f} MB): {ckpt['stage']} at step {ckpt['step']}")


TRUST_FLAG = "--i-trust-this-file"       # convert's acknowledgement that it runs the file's code


def convert(src: str, dst: str) -> None:
    """Re-save a checkpoint of an older surf_mini as plain data. UNSAFE for files you did not
    make: this one read uses the unrestricted unpickler, which runs what the file holds."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)     # the trust step, explicit
    save_checkpoint(dst, ckpt)
    read_checkpoint(dst)                                                # it now loads safely
    print(f"wrote {dst}: plain data, loads with weights_only=True")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m surf_mini.checkpoints",
                                description="Check, export or convert surf_mini checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="read each file with the safe loader and say what it is")
    c.add_argument("paths", nargs="+")
    e = sub.add_parser("export", help="keep the EMA network, config and provenance of a run's checkpoint")
    e.add_argument("src")
    e.add_argument("dst")
    v = sub.add_parser("convert", help="UNSAFE for files you did not make: re-save an older "
                                       f"checkpoint as plain data (needs {TRUST_FLAG})")
    v.add_argument("src")
    v.add_argument("dst")
    v.add_argument(TRUST_FLAG, dest="trusted", action="store_true",
                   help="acknowledge that convert runs whatever code the file holds")
    a = p.parse_args(argv)
    if a.cmd == "check":
        for path in a.paths:
            ckpt = read_checkpoint(path)
            print(f"{path}: {ckpt['kind']}, stage {ckpt.get('stage')}, step {ckpt.get('step')}")
    elif a.cmd == "export":
        export(a.src, a.dst)
    else:
        if not os.path.isfile(a.src):
            raise _fail(a.src, "not found")
        if not a.trusted:                      # the one unsafe read must be asked for by name
            raise _fail(a.src, f"not converted: convert runs any code the file holds; add {TRUST_FLAG} "
                               f"only if you trust it (e.g. you wrote it yourself)")
        convert(a.src, a.dst)


if __name__ == "__main__":
    sys.exit(main())
