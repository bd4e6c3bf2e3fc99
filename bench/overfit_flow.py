"""Can the audio flow fit one fixed batch? The diagnosis of docs/speech.md (issue 10).

Trains the supervised flow (FLOSS (17)) of the ``cpu`` MB-TFLocoformer on ONE fixed batch of
8 one-second two-speaker mixtures of the demo set at 8 kHz, and prints the SI-SDR (PIT) of
its samples against that batch's own sources. It measures what the network and recipe can
fit, not generalization. The regression locoformer on the same batch is the yardstick
(``--regression``).

    python bench/overfit_flow.py                                  # today's head and recipe
    python bench/overfit_flow.py --head x1                        # masks on linear spectra
    python bench/overfit_flow.py --head x1 --fixed-t 0.5 --steps 150   # only t = 0.5: scores x_hat_1 there
    python bench/overfit_flow.py --align euc --sigma 0.1 --p-zero 0.5  # FLOSS Table 1 #4, less noise, more t = 0
    python bench/overfit_flow.py --head x1 --t-power 3                # t = u^3: most training near t = 0

The loss is written out from flow.py's small functions, so each option changes one line of
FLOSS (17): the start state (``--sigma``), the alignment (``--align``: PIT on the network's
t = 0 prediction, or Euclidean to x_0), the time law (``--p-zero``, ``--fixed-t``) and the
loss (``--loss``), or the time law (``--t-power``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from surf_mini import audio_data as A                                       # noqa: E402
from surf_mini import flow as F                                             # noqa: E402
from surf_mini.locoformer import MBTFLocoformer, make_config                # noqa: E402
from surf_mini.metrics import si_sdr                                        # noqa: E402
from surf_mini.pit import apply_permutation, best_permutation, pit_loss     # noqa: E402

SR, K, SHAPING = 8000, 2, "envelope"


def flow_loss(net, x1, args, g):
    """FLOSS (17) with the options spelled out. x1: [B, K, T] -> per-example loss [B]."""
    m = x1.sum(1, keepdim=True)                                           # SURF (1)
    x0 = F.initial_state(m, K, SHAPING, args.sigma, g)                    # SURF (4)
    perm = F.pit_at_zero(net, x0, x1, m) if args.align == "pit" else best_permutation(x0, x1)
    x1 = apply_permutation(x1, perm)
    if args.fixed_t is not None:
        t = torch.full((len(x1),), args.fixed_t)
    else:
        t = F.sample_time(len(x1), "delta", p_zero=args.p_zero, generator=g) ** args.t_power
    target = x1 - x0
    return F.flow_loss(net(F.interpolate(x0, x1, t), t, m) - target, target, args.loss)   # FLOSS (16)-(19)


@torch.no_grad()
def scores(net, m, x, args) -> str:
    if args.regression:
        est = net(m)
        return f"SI-SDR {si_sdr(apply_permutation(est, best_permutation(est, x)), x).mean():.2f} dB"
    out = []
    if args.fixed_t is not None:                       # the clean estimate at that t, SURF (18)
        g = torch.Generator().manual_seed(5)
        x0 = F.initial_state(m, K, SHAPING, args.sigma, g)
        x1 = apply_permutation(x, F.pit_at_zero(net, x0, x, m))
        t = torch.full((len(m),), args.fixed_t)
        xt = F.interpolate(x0, x1, t)
        out.append(f"x_hat_1 at t={args.fixed_t}: {si_sdr(F.clean_estimate(xt, net(xt, t, m), t), x1).mean():.2f} dB "
                   f"(x_t itself {si_sdr(xt, x1).mean():.2f})")
    for sched in (1, "floss5", 25):
        est = F.euler_sample(net, m, K, sched, shaping=SHAPING, sigma=args.sigma,
                             generator=torch.Generator().manual_seed(1))
        out.append(f"{sched}-step {si_sdr(apply_permutation(est, best_permutation(est, x)), x).mean():.2f}")
    return ", ".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--head", choices=("compressed", "x1"), default="compressed")
    p.add_argument("--regression", action="store_true", help="the regression locoformer instead (yardstick)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loss", choices=("mse", "normalized", "db"), default="db")
    p.add_argument("--p-zero", type=float, default=0.01, help="mass of t = 0 (FLOSS: 0.01)")
    p.add_argument("--fixed-t", type=float, help="train at this t only")
    p.add_argument("--t-power", type=float, default=1.0,
                   help="t = u ** POWER: above 1 puts more training near t = 0 (where the flows fail)")
    p.add_argument("--align", choices=("pit", "euc"), default="pit")
    p.add_argument("--sigma", type=float, default=1.0, help="start noise scale (times the envelope)")
    p.add_argument("--every", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m, x = A.ClipMixer(A.load_clips(A.DEMO_DIR, SR, "train"), K, SR, g).batch(8)    # the fixed batch
    mode = "regression" if args.regression else "flow"
    net = MBTFLocoformer(make_config("cpu", K, mode, **({} if args.regression else {"head": args.head})))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        loss = (pit_loss(net(m), x, kind="log") if args.regression else flow_loss(net, x, args, g)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():7.2f}  {scores(net, m, x, args)}  ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
