"""The seven methods of SURF's tables, written once for images and audio: what each mode trains on.

    mode       what one training step fits                                   paper
    sup-reg    regression f(m) -> K sources, against the references          SURF (3)
    sup-flow   flow matching from noise to the references, PIT at t = 0      FLOSS (17)
    mixit      M outputs on a mixture of two mixtures, best regrouping       Wisdom et al. 2020
    remixit    regression student on remixed estimates of its EMA teacher    SURF (14)-(16)
    selfremix  the same, its loss taken on the observed mixtures             SURF (17)
    rm         SURF, Algorithm 1 with the ReMixIT flow loss RM-FM            SURF (24)
    sr         SURF, Algorithm 1 with the Self-Remixing flow loss SR-FM      SURF (30)

``stage_loss`` below is the whole of it, one branch per mode; the rest of a training run (the
loop, EMA, checkpoints) is training.py's. What differs between the two domains is data, a
``Recipe``: the number of outputs K and M, the loss kinds (images: squared errors, SURF D.4;
audio: 10 log10 and SNR forms, SURF D.5), the flows' noise shaping (FLOSS 3.4), the rule that
merges the MixIT teacher's M outputs to K (mixit.merge_weights) and how the regression
students pick their teacher. ``image_network`` and ``audio_network`` say which network each
mode trains in each domain.

Silent references (FUSS, K = 4: a mixture of n < 4 sources has 4 - n all-zero slots). Every
loss here measures its error against the energy of a whole K-tuple or of a mixture, never of
one reference, and a FUSS mixture always holds its background, so each stays finite with zero
slots (tests/test_train_fuss.py; docs/fuss.md, "Silent references and outputs", gives the
forms rejected).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from . import training
from .ema import beta_at, hybrid_teacher_sample
from .flow import floss_loss
from .mixit import merge_outputs, mixit_loss, output_sparsity
from .pit import pit_loss
from .remix import mix, remixit_loss, self_remixing_loss, shuffle_sources, surf_loss

MODES = ("sup-reg", "sup-flow", "mixit", "remixit", "selfremix", "rm", "sr")
METHOD_NAMES = {"sup-reg": "supervised regression", "sup-flow": "supervised flow",
                "mixit": "MixIT", "remixit": "ReMixIT (regression)",
                "selfremix": "Self-Remixing (regression)", "rm": "SURF (ReMixIT)",
                "sr": "SURF (Self-Remixing)"}
NEEDS_TEACHER = ("remixit", "selfremix", "rm", "sr")      # a MixIT teacher stage runs first
SUPERVISED = ("sup-reg", "sup-flow")                     # the only modes that see references
FLOWS = ("sup-flow", "rm", "sr")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a domain passes in: the methods' choices that differ between images and audio."""
    K: int                      # outputs of the flows and of supervised regression
    M: int                      # outputs of the MixIT teacher (2K: a mixture of two mixtures)
    regression_loss: str        # pit.pit_loss kind: "mse" (images) or "log", SURF (3) (audio)
    mixit_loss: str             # mixit.mixit_loss kind: "mse" (images) or "snr" (audio)
    flow_loss: str              # FLOSS (16) "mse", (18) "normalized" or (19) "db"
    time: str                   # training-time law, flow.sample_time (FLOSS 3.2)
    shaping: str = "plain"      # x_0 noise: "plain" (images) or "envelope" (audio, FLOSS 3.4)
    loss_space: str = "velocity"                         # flow.in_x1_space
    merge: str = "loudest"      # the teacher's M outputs -> K, mixit.merge_weights
    mixit_sparsity: float = 0.0  # weight of mixit.output_sparsity (Wisdom et al. 2021)
    beta_steps: int = 1000      # the hybrid teacher's beta decays 1 -> 0 over these (SURF D.3)
    # The regression students (remixit, selfremix). Images: initialised from the MixIT teacher
    # (their papers), so their EMA copy teaches from step 0. Audio: a locoformer cannot start
    # from the ConvTasNet's weights, so a per-batch coin with probability beta takes the frozen
    # teacher's merged estimates instead of the EMA copy's (our choice; README, "Choices").
    teacher_coin: bool = False


@dataclasses.dataclass
class Batches:
    """What a stage may draw. The unsupervised stages get ``mixtures`` and ``mixit_pair`` only;
    ``sources`` (references) exists for the supervised ones alone."""
    mixtures: Callable[[int], torch.Tensor]              # B -> m [B, 1, *S]
    mixit_pair: Callable[[int], tuple]                   # B -> (m_a, m_b), each [B, 1, *S]
    sources: Callable[[int], tuple] | None = None        # B -> (m [B, 1, *S], x [B, K, *S])


def stage_loss(stage: training.Stage) -> torch.Tensor:
    """One batch's loss for the stage's method, the mean over the batch.

    ``stage.recipe`` is the domain's ``Recipe`` and ``stage.batches`` its ``Batches``. Data
    draws are always the global batch of B = ``--batch``; ``stage.mine`` keeps this process's
    B/W rows under torchrun (all of them in one process) and moves them to the device.
    """
    r, B, name = stage.recipe, stage.args.batch, stage.name
    g, net, data = stage.g_alg, stage.fwd, stage.batches
    if name == "sup-reg":                                                  # SURF (3)
        m, x = (stage.mine(t) for t in data.sources(B))                    # [B, 1, *S], [B, K, *S]
        return pit_loss(net(m), x, kind=r.regression_loss).mean()
    if name == "sup-flow":                                                 # FLOSS (17)
        _, x = data.sources(B)
        return floss_loss(net, stage.mine(x), kind=r.flow_loss, time_kind=r.time, shaping=r.shaping,
                          generator=g, space=r.loss_space).mean()
    if name == "mixit":                                                    # Wisdom et al. (2020)
        mix_a, mix_b = (stage.mine(t) for t in data.mixit_pair(B))
        est = net(mix_a + mix_b)                                           # [B, M, *S]
        loss = mixit_loss(est, mix_a, mix_b, kind=r.mixit_loss)[0]
        if r.mixit_sparsity:                                               # Wisdom et al. (2021)
            loss = loss + r.mixit_sparsity * output_sparsity(est)
        return loss.mean()

    m = stage.mine(data.mixtures(B))                                       # [B/W, 1, *S]
    beta = beta_at(stage.step, training.share_of_stage(r.beta_steps, stage))   # SURF D.3
    frozen = lambda mm: merge_outputs(stage.teacher_fwd(mm), r.K, r.merge)  # noqa: E731  [B, K, *S]
    if name in ("remixit", "selfremix"):
        with torch.no_grad():
            use_frozen = False                             # images: the EMA copy always
            if r.teacher_coin:                             # audio: the frozen teacher w.p. beta
                use_frozen = float(torch.rand(1, generator=g, device=stage.device)) < beta
            x_bar = frozen(m) if use_frozen else stage.ema_fwd(m)          # teacher estimates
        x_tilde, pi = shuffle_sources(x_bar, g)                            # SURF (14)
        est = net(mix(x_tilde))                                            # on M_tilde, SURF (15)
        if name == "remixit":
            return remixit_loss(est, x_tilde).mean()                       # SURF (16)
        return self_remixing_loss(est, x_tilde, pi, m).mean()              # SURF (17)
    # SURF, Algorithm 1: the hybrid teacher samples (line 4, D.3), then remix, PIT at t = 0
    # and RM-FM or SR-FM (lines 5-14, remix.surf_loss).
    with torch.no_grad():
        x_bar = hybrid_teacher_sample(frozen, stage.ema_fwd, m, r.K, beta, shaping=r.shaping,
                                      generator=g)
    return surf_loss(net, x_bar, mode=name, kind=r.flow_loss, time_kind=r.time, shaping=r.shaping,
                     generator=g, space=r.loss_space).loss.mean()


def start_student(name: str, teacher: torch.nn.Module | None):
    """How a stage's network starts (``training.Stage``'s ``init``): the regression remixing
    students as a copy of their MixIT teacher (same shape: M outputs), a SURF flow from the
    teacher's weights wherever names and shapes agree (SURF D.4: "the teacher model is then used
    to initialize the initial student"), everything else fresh."""
    if teacher is None:
        return None

    def init(net: torch.nn.Module) -> None:
        if name in ("remixit", "selfremix"):
            net.load_state_dict(teacher.state_dict())
        else:
            training.init_from(net, teacher)
    return init


def make_stage(name: str, build: Callable[[], torch.nn.Module], args, device, recipe: Recipe,
               batches: Callable[[torch.Generator], Batches], *, kind: str, teacher=None,
               init=None, **stage_kwargs) -> training.Stage:
    """A ``training.Stage`` for mode ``name`` with its recipe and its data (``batches(g_data)``:
    the draws come from the stage's own data stream, so a resumed stage draws on)."""
    stage = training.Stage(name, build, kind=kind, args=args, device=device,
                           total=args.steps if name == args.mode else args.teacher_steps,
                           seed=args.seed * 100 + MODES.index(name), teacher=teacher, init=init,
                           **stage_kwargs)
    stage.recipe, stage.batches = recipe, batches(stage.g_data)
    return stage


def run_stage(stage: training.Stage, resume: bool, validate=None) -> dict:
    """Train (or resume) ``stage`` to its step count with ``stage_loss``; returns its log."""
    return training.resume_or_start(stage, resume, stage_loss, validate)


# --------------------------------------------------------------------------------------
# Which network each mode trains
# --------------------------------------------------------------------------------------

def image_network(mode: str, net: str, channels: int, K: int = 2, M: int = 4,
                  head: str = "velocity", **overrides):
    """NCSN++ (ncsn.py; SURF D.4): M-output regression for MixIT and the regression remixing
    students, K-output regression for sup-reg, a K-output flow with ``head`` for the flows.
    ``overrides`` (nf, num_res_blocks; None = the preset's) change every mode alike."""
    from .ncsn import make_config
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if mode in ("mixit", "remixit", "selfremix"):
        return make_config(net, channels, M, "regression", **overrides)
    if mode == "sup-reg":
        return make_config(net, channels, K, "regression", **overrides)
    return make_config(net, channels, K, "flow", head=head, **overrides)


def audio_network(mode: str, net: str, K: int = 2, M: int = 4, head: str = "compressed",
                  reg_net: str = "locoformer"):
    """SURF D.5: a ConvTasNet MixIT teacher (M outputs), the MB-TFLocoformer in regression mode
    (K outputs; or a K-output ConvTasNet, ``reg_net``) for sup-reg and the regression remixing
    students, the flow locoformer (``head``) for the flows."""
    from .convtasnet import make_config as tasnet_config
    from .locoformer import make_config as loco_config
    if mode == "mixit":
        return tasnet_config(net, M)
    if mode in ("sup-reg", "remixit", "selfremix"):
        if reg_net == "convtasnet":
            return tasnet_config(net, K)
        return loco_config(net, K, "regression")
    return loco_config(net, K, "flow", head=head)
