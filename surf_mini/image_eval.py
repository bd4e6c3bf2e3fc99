"""Scoring image separators: SURF Table 1's PSNR / SSIM rows, the results table and the picture grid.

    python -m surf_mini.image_eval evaluate surf_mini/assets/mnist/*.pt    # re-score checkpoints
    python -m surf_mini.image_eval collect runs/mnist --plot curves.png    # one table from runs

train_image.py scores its networks at the end of a run with the same functions, so a
re-scored checkpoint gives the run's own figures. Test mixtures are ``data.test_mixtures``
(fixed seed, held-out test split). A flow samples with FLOSS's 5-step Euler schedule
(SURF's; ``--eval-steps``) and is also scored with ``--also-steps`` linear steps, a column
beside it; a 4-output MixIT network is scored after the reference-free merge to 2 outputs
("merged", mixit.merge_outputs) and with the oracle grouping; 2 outputs after PIT. MNIST rows
also get two sharpness columns of the shipped digit classifier (classifier.py: digit
agreement with the reference, a Frechet distance in its features; not Inception FID).
``--paper-metrics`` adds FID, IS and LPIPS from torchmetrics (optional extra).
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys

import torch

from . import data as D
from . import options, runs
from .checkpoints import IMAGE_KIND, image_network, read_checkpoint
from .classifier import DEFAULT_PATH as CLASSIFIER_PATH
from .classifier import image_feature_scores, load_classifier
from .flow import estimate_sources
from .methods import FLOWS, METHOD_NAMES, MODES
from .mixit import MERGE_RULES
from .metrics import image_scores, match_images, psnr, ssim

K = 2                       # sources per test mixture


@torch.no_grad()
def separate(net, m: torch.Tensor, device, seed: int, batch: int = 250,
             schedule: int | str = "floss5") -> torch.Tensor:
    """Estimates for [N, 1, C, H, W] mixtures: regression f(m), or Euler for flows (SURF's
    FLOSS 5-step schedule unless ``schedule`` says otherwise)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([estimate_sources(net, m[i:i + batch].to(device), schedule, generator=g).cpu()
                      for i in range(0, len(m), batch)])


def validator(m: torch.Tensor, sources: torch.Tensor, size: tuple[int, int], device, seed: int,
              merge: str = "loudest", also_steps: int = 0):
    """The learning-curve scorer: PSNR / SSIM of a stage's EMA network on fixed validation
    mixtures (merged outputs for a 4-output network, what a SURF student is fed, plus the oracle
    grouping; PIT for 2 outputs). A flow is also scored with ``also_steps`` linear Euler steps
    (``psnr_alt``), the test table's second sampler, so a curve can be read with either."""
    ref = D.crop_center(sources, size)

    def validate(stage) -> dict:
        est = D.crop_center(separate(stage.ema, m, device, seed), size)
        s = image_scores(est, ref, "merged", merge)
        out = {"psnr": round(s["psnr"].mean().item(), 3), "ssim": round(s["ssim"].mean().item(), 4)}
        if est.shape[1] > K:
            out["psnr_oracle"] = round(image_scores(est, ref, "oracle")["psnr"].mean().item(), 3)
        if also_steps and stage.ema.flow:
            alt = D.crop_center(separate(stage.ema, m, device, seed, schedule=also_steps), size)
            out["psnr_alt"] = round(image_scores(alt, ref, "PIT")["psnr"].mean().item(), 3)
        return out
    return validate


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """The shipped MNIST classifier (surf_mini/classifier.py), loaded once; None without it."""
    return load_classifier() if os.path.isfile(CLASSIFIER_PATH) else None


def score(name: str, est: torch.Tensor, sources: torch.Tensor, grouping: str, note: str = "",
          paper=None, merge: str = "loudest") -> dict:
    """One table row: PSNR / SSIM (and the ``paper_metrics`` scores when given) after matching;
    "merged" reduces 4 outputs to 2 with ``mixit.merge_outputs``'s rule ``merge``."""
    matched = match_images(est, sources, grouping, merge)                # (est, ref) images
    p = psnr(*matched)                                                    # [N, K]
    row = {"method": name, "psnr": p.mean().item(), "ssim": ssim(*matched).mean().item(),
           "psnr_sem": (p.mean(1).std() / math.sqrt(len(est))).item(),
           "n": len(est), "outputs": est.shape[1], "grouping": grouping if est.shape[1] > K else "PIT",
           "note": note}
    if paper is not None:
        row.update(paper(*matched))
    digits = digit_classifier() if matched[0].shape[-3:] == (1, 28, 28) else None
    if digits is not None:                               # MNIST: the offline sharpness columns
        row.update(image_feature_scores(*matched, digits))
    return row


def method_rows(name: str, est: torch.Tensor, ref: torch.Tensor, paper=None,
                merge: str = "loudest") -> list[dict]:
    """A method's table rows: merged and oracle for a 4-output network, PIT for 2 outputs."""
    if est.shape[1] > K:
        return [score(name, est, ref, "merged", paper=paper, merge=merge),
                score(name, est, ref, "oracle", paper=paper)]
    return [score(name, est, ref, "PIT", paper=paper)]


def network_rows(name: str, net, m: torch.Tensor, ref: torch.Tensor, size, device, opts,
                 paper=None) -> tuple[list[dict], torch.Tensor]:
    """``method_rows`` of one network on padded mixtures ``m`` (cropped back to ``size``); a
    flow's row also carries the ``opts.also_steps`` sampler's PSNR (FLOSS reports 25 steps).
    Returns the rows and the (cropped) estimates of the main sampler."""
    crop = lambda x: D.crop_center(x, size)                               # noqa: E731
    est = crop(separate(net, m, device, opts.seed, schedule=opts.eval_steps))
    rows = method_rows(name, est, ref, paper, opts.merge)
    steps = getattr(opts, "also_steps", 0)
    if net.flow and steps and steps != opts.eval_steps:
        alt = score(name, crop(separate(net, m, device, opts.seed, schedule=steps)), ref, "PIT")
        rows[0] = dict(rows[0], psnr_alt=alt["psnr"], psnr_alt_sem=alt["psnr_sem"], ssim_alt=alt["ssim"],
                       alt_steps=steps)
    return rows, est


def paper_metrics(device):
    """FID and Inception Score (SURF Table 2) and LPIPS (SURF Table 1), from torchmetrics' image
    metrics, imported here only (``pip install 'torchmetrics[image]'``).

    Returns ``scores(est, ref) -> {"lpips", "fid", "is"}`` for matched images [N, K, C, H, W] in
    [0, 1] (estimate k facing reference k): FID between the N K estimated and the N K reference
    images, Inception Score of the estimates, LPIPS (AlexNet) of each matched pair, averaged.
    Grey images are repeated to RGB; LPIPS sees images under 64 pixels upsampled (bilinear) to
    64, the size its AlexNet needs. Returns None after one line on stderr when the extra is not
    installed or its network weights cannot be fetched (offline): the run goes on with PSNR/SSIM.
    """
    try:
        from torchmetrics.image import (FrechetInceptionDistance, InceptionScore,
                                        LearnedPerceptualImagePatchSimilarity)
        fid = FrechetInceptionDistance(feature=2048, normalize=True).to(device)
        inception = InceptionScore(normalize=True).to(device)
        lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
    except ImportError:
        print("--paper-metrics needs torchmetrics' image metrics: pip install 'torchmetrics[image]'; "
              "continuing with PSNR/SSIM", file=sys.stderr)
        return None
    except Exception as e:                   # torch-fidelity / torchvision fetch weights on first use
        print(f"--paper-metrics: the FID/IS/LPIPS network weights cannot be fetched ({type(e).__name__}); "
              f"continuing with PSNR/SSIM", file=sys.stderr)
        return None

    @torch.no_grad()
    def scores(est: torch.Tensor, ref: torch.Tensor, chunk: int = 500) -> dict:
        est, ref = (x.flatten(0, 1).clamp(0, 1) for x in (est, ref))      # [N K, C, H, W]
        if est.shape[1] == 1:
            est, ref = est.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
        for metric in (fid, inception, lpips):
            metric.reset()
        for i in range(0, len(est), chunk):
            e, r = est[i:i + chunk].to(device), ref[i:i + chunk].to(device)
            fid.update(r, real=True)
            fid.update(e, real=False)
            inception.update(e)
            if min(e.shape[-2:]) < 64:
                e, r = (torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear",
                                                        align_corners=False) for x in (e, r))
            lpips.update(e, r)
        return {"lpips": lpips.compute().item(), "fid": fid.compute().item(),
                "is": inception.compute()[0].item()}
    return scores


# --------------------------------------------------------------------------------------
# Tables and pictures
# --------------------------------------------------------------------------------------

def markdown(rows: list[dict], budget: str = "") -> str:
    """The results table; LPIPS / FID / IS columns when ``--paper-metrics`` produced them."""
    paper = any("fid" in r for r in rows)
    alt = next((r["alt_steps"] for r in rows if "alt_steps" in r), None)   # the flows' second sampler
    digits = any("fd" in r for r in rows)              # MNIST: classifier agreement, its FD
    extra = " LPIPS | FID | IS |" if paper else ""
    alt_head = f" PSNR, {alt} steps |" if alt else ""
    digit_head = " digit agreement | FD (classifier) |" if digits else ""
    lines = [f"| method | outputs | matching | PSNR (dB) | SSIM |{alt_head}{digit_head}{extra} n | budget |",
             "|---|---|---|---|---|" + ("---|" if alt else "") + ("---|---|" if digits else "")
             + ("---|---|---|" if paper else "") + "---|---|"]
    for r in rows:
        cells = (" " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("lpips", "fid", "is")) + " |"
                 if paper else "")
        alt_cell = ((f" {r['psnr_alt']:.2f} ± {r['psnr_alt_sem']:.2f} |" if "psnr_alt" in r else " |")
                    if alt else "")
        digit_cell = (f" {r['cls_agree']:.3f} | {r['fd']:.1f} |" if "fd" in r else " | |") if digits else ""
        lines.append(f"| {r['method']} | {r['outputs']} | {r['grouping']} | {r['psnr']:.2f} ± "
                     f"{r['psnr_sem']:.2f} | {r['ssim']:.3f} |{alt_cell}{digit_cell}{cells} {r['n']} | "
                     f"{r.get('budget', budget)} |")
    return "\n".join(lines) + "\n"


def save_grid(path: str, m: torch.Tensor, sources: torch.Tensor, est: torch.Tensor, n: int = 8,
              scale: int = 4, merge: str = "loudest") -> None:
    """PNG grid, one column per test mixture and one labelled row each for the mixture, the two
    references and the two matched estimates; pixels enlarged ``scale`` times (nearest), so a
    28-pixel digit is 112 pixels on screen. Written atomically."""
    import torchvision
    from PIL import Image, ImageDraw, ImageFont
    est, ref = match_images(est[:n], sources[:n], "merged", merge)
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


# --------------------------------------------------------------------------------------
# The commands: evaluate checkpoints, collect runs
# --------------------------------------------------------------------------------------

def evaluate_checkpoints(opts) -> list[dict]:
    """Score each checkpoint's EMA network on the same test mixtures and print the table in SURF
    Table 1 order. Needs no run folder: the config travels in the checkpoint."""
    device = torch.device(opts.device)
    ckpts = [(path, read_checkpoint(path, IMAGE_KIND, "image")) for path in opts.checkpoints]
    datasets = {(c.get("trained_with") or c.get("args") or {}).get("dataset", "mnist") for _, c in ckpts}
    if len(datasets) > 1:
        raise SystemExit(f"error: the checkpoints were trained on different datasets {sorted(datasets)}; "
                         f"evaluate them separately")
    dataset = datasets.pop()
    try:
        images = D.load_images(dataset, "test", opts.data_dir, opts.download)
    except D.DataError as e:
        raise SystemExit(f"error: {e}") from None
    m, src = D.test_mixtures(images, opts.eval_size, seed=opts.eval_seed)
    paper = paper_metrics(device) if opts.paper_metrics else None
    rows = []
    for path, ckpt in ckpts:
        net = image_network(ckpt, "ema", path).to(device)
        padded, size = D.pad_to_multiple(m, net.config.size_multiple)
        name = METHOD_NAMES.get(ckpt["stage"], ckpt["stage"])
        for r in network_rows(name, net, padded, src, size, device, opts, paper)[0]:
            rows.append(dict(r, budget=runs.checkpoint_budget(ckpt), checkpoint=path))
    rows = runs.in_table_order(rows)
    sched = "FLOSS 5-step" if opts.eval_steps == "floss5" else f"{opts.eval_steps}-step"
    print(f"\n{dataset}, {opts.eval_size} test mixtures (seed {opts.eval_seed}), {sched} Euler for flows, "
          f"EMA weights:\n")
    print(markdown(rows), end="")
    return rows


def collect(folder: str, plot: str | None = None) -> None:
    """One table (and the validation curves) from ``folder/*/results.json``."""
    every = runs.read_results(folder)
    results = [r for r in every if "dataset" in r]     # image runs only
    if not every:
        raise SystemExit(f"error: no */results.json under {folder!r}")
    if not results:
        raise SystemExit(f"error: no image runs under {folder!r} (audio runs: python -m "
                         f"surf_mini.audio_eval collect {folder})")
    print(markdown(runs.collect_rows(folder, list(METHOD_NAMES.values()), results)), end="")
    if plot:
        runs.plot_curves(results, plot, "psnr", "validation PSNR (dB, EMA weights)", MODES,
                         METHOD_NAMES, merged=("mixit", "remixit", "selfremix"), flows=FLOWS)


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """The test-set options, shared with train_image.py's end-of-run scoring."""
    p.add_argument("--eval-seed", type=int, default=12345, help="seed of the test mixtures")
    p.add_argument("--eval-steps", default="floss5", type=lambda s: int(s) if s.isdigit() else s,
                   help="Euler schedule for flows: floss5 (FLOSS 5-step, SURF's) or N linear steps")
    p.add_argument("--also-steps", type=int, default=25,
                   help="flows are also scored with this many linear Euler steps (0: off)")
    p.add_argument("--merge", default="balanced", choices=MERGE_RULES,
                   help="reference-free reduction of 4 outputs to 2 (mixit.merge_weights)")
    p.add_argument("--paper-metrics", action="store_true",
                   help="also FID, IS and LPIPS: pip install 'torchmetrics[image]'")
    p.add_argument("--data-dir", help="torchvision dataset folder (default ./data)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction,
                   help="let torchvision download a missing dataset (default: CIFAR-10 yes, MNIST no)")


def main(argv=None) -> list[dict] | None:
    p = argparse.ArgumentParser(prog="python -m surf_mini.image_eval", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="score checkpoints on the test mixtures and print the table")
    e.add_argument("checkpoints", nargs="+", metavar="CKPT", help="full or exported image checkpoints")
    e.add_argument("--eval-size", type=int, default=1000, help="test mixtures")
    add_eval_options(e)
    e.add_argument("--seed", type=int, default=0, help="seed of the flows' noise")
    e.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    e.add_argument("--threads", type=int, help="torch CPU threads")
    c = sub.add_parser("collect", help="one table from DIR/*/results.json")
    c.add_argument("dir")
    c.add_argument("--plot", metavar="PNG", help="also plot the validation curves (matplotlib)")
    a = p.parse_args(argv)
    options.single_process(p, f"python -m surf_mini.image_eval {a.cmd}")
    if a.cmd == "collect":
        return collect(a.dir, a.plot)
    if a.eval_size < 1:
        p.error("--eval-size must be positive")
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    return evaluate_checkpoints(a)


if __name__ == "__main__":
    main()
