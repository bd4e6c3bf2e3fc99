"""NCSN-style U-Net for image separation: an equivariant velocity network and a regression separator.

SURF Appendix D.4 / Table 6 uses a conditional NCSN++ (Song et al. 2021) for every image
model: as the flow velocity v(x_t, t, m) and, with time and noise inputs off, as the
regression separator (MixIT teacher, ReMixIT, Self-Remixing, supervised regression). This
module is a pure-PyTorch U-Net in that spirit (GroupNorm, swish, residual blocks with skip
rescale, self-attention at the low resolutions, Gaussian Fourier time embedding of scale 16),
without the compiled FIR resampling ops of score_sde: strided convolutions down, nearest
neighbour + convolution up.

Permutation equivariance over the K sources (FLOSS (20), needed by SURF Prop C.1) holds by
construction in flow mode:
  * every convolution, norm and time embedding is applied to each source with shared weights
    (the source axis is folded into the batch);
  * sources interact only through operations that treat them as a set: a DeepSets term
    (the mean over sources, projected, added back to every source) in each residual block,
    and self-attention over all (source, pixel) tokens with no source positional code;
  * the mixture m enters every source identically (concatenated to its input channels);
  * the output is projected by P_perp (FLOSS (14)), so Euler samples stay mixture-consistent.

Regression mode breaks the symmetry on purpose (docs/math.md, 3.1): every output k starts
from the same mixture but adds its own learned embedding e_k, so the K outputs can differ;
an optional mixture-consistency projection makes them sum to m.

References
    [NCSN++] Y. Song et al., "Score-based generative modeling through stochastic
             differential equations", ICLR 2021.
    [SURF]   arXiv 2606.04921, Appendix D.4, Table 6.
    [FLOSS]  WASPAA 2025, equations (14), (20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .flow import zero_sum
from .mixit import mixture_consistency


@dataclass
class NCSNConfig:
    """Architecture of ``NCSN``; it travels inside checkpoints (``dataclasses.asdict``).

    channels:     image channels C (1 for MNIST, 3 for CIFAR-10).
    num_sources:  K, the number of outputs.
    mode:         "flow" (v(x_t, t, m), equivariant, P_perp output) or "regression"
                  (f(m), per-output embeddings).
    nf:           base number of filters.
    ch_mult:      channel multiplier per resolution level; len(ch_mult) - 1 downsamplings,
                  so H and W must be divisible by 2^(len(ch_mult) - 1).
    num_res_blocks: residual blocks per level.
    attn_levels:  levels (0 = full resolution) with source-pixel self-attention.
    dropout:      dropout in the residual blocks.
    fourier_scale: standard deviation of the Gaussian Fourier time features.
    consistency:  regression mode only: project outputs to sum to the mixture.
    head:         flow mode only. "velocity": the U-Net output, projected by P_perp, is the
                  velocity (FLOSS (14); every checkpoint before 2026-12-02). "x1": the output
                  is read as the clean sources, made to sum to the mixture
                  (x1_hat = m/K + P_perp out, the form of SURF (4)), and the velocity is
                  derived from it, v = (x1_hat - x_t) / (1 - t), the inverse of SURF (18)-(19).
                  A small network learns a clean image more easily than a velocity that
                  carries the start noise (Li and He 2025, "Back to Basics").
    x1_clamp:     "x1" head, training only: 1 - t is clamped from below to this in forward passes
                  that build a graph, so a velocity-space loss stays finite near t = 1. Under
                  no_grad (sampling, PIT, teachers) the inverse is exact (1e-6), so Euler's
                  steps near t = 1 (FLOSS 5's 0.99, 0.999, 0.9999) still land on x1_hat.
    """
    channels: int = 1
    num_sources: int = 2
    mode: str = "flow"
    nf: int = 64
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_levels: tuple = (1, 2)
    dropout: float = 0.1
    fourier_scale: float = 16.0
    consistency: bool = True
    head: str = "velocity"
    x1_clamp: float = 0.05

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: 2 per downsampling, len(ch_mult) - 1 of them."""
        return 2 ** (len(self.ch_mult) - 1)


PRESETS = {
    # SURF Table 6: ch_mult (1, 2, 2, 2), 64 filters, 4 residual blocks, attention at 16 and 8
    # (levels 1 and 2 for 32x32 CIFAR-10), dropout 0.1, Fourier scale 16.
    "paper": dict(nf=64, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_levels=(1, 2), dropout=0.1),
    # Trains in minutes on 2 CPU cores: 28x28 MNIST -> 14 -> 7, attention at 7x7 only.
    "cpu": dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,), dropout=0.0),
    # The same U-Net at twice the width (1.15M parameters instead of 0.29M): under bf16 autocast
    # on AMX cores a step costs about 1.5x the "cpu" one (docs/benchmarks.md, bench_step --widths).
    "cpu32": dict(nf=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,), dropout=0.0),
}


def make_config(preset: str, channels: int, num_sources: int, mode: str, **overrides) -> NCSNConfig:
    """Build a config from a named preset ("paper" or "cpu") plus overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown NCSN preset {preset!r}; use one of {sorted(PRESETS)}")
    kw = dict(PRESETS[preset], channels=channels, num_sources=num_sources, mode=mode)
    kw.update(overrides)
    return NCSNConfig(**kw)


def velocity_from_x1(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, m: torch.Tensor,
                     clamp: float = 0.05) -> torch.Tensor:
    """The "x1" head: network output read as clean sources, turned into a velocity.

    out, x_t: [B, K, *S]; t: [B]; m: [B, 1, *S] -> v [B, K, *S].
    x1_hat = m/K + P_perp out sums to m over the sources (as x_0 of SURF (4) does), so
    x1_hat - x_t sums to 0 whenever x_t is mixture-consistent; v = (x1_hat - x_t)/(1 - t)
    inverts the clean estimate of SURF (18)-(19), x1_hat = x_t + (1 - t) v, exactly for
    1 - t >= ``clamp``. The final P_perp (FLOSS (14)) keeps every Euler step consistent even
    if x_t drifted. Elementwise in the source axis, so permutation-equivariant. An Euler step
    of size h moves x_t the fraction h / max(1 - t, clamp) of the way to x1_hat: the last step
    (h = 1 - t) lands on it when 1 - t >= clamp.
    """
    K = out.shape[1]
    x1_hat = m / K + zero_sum(out)                                      # [B, K, *S], sums to m
    one_minus_t = (1 - t).clamp_min(clamp).view(-1, *([1] * (out.dim() - 1)))
    return zero_sum((x1_hat - x_t) / one_minus_t)


def _groups(ch: int) -> int:
    """GroupNorm groups: 32 when the channel count allows it (NCSN++), fewer for small nets."""
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class FourierEmbedding(nn.Module):
    """Gaussian Fourier features of t: [sin(2 pi W t), cos(2 pi W t)], W ~ N(0, scale^2) fixed."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:               # [B] -> [B, dim]
        proj = 2 * math.pi * t[:, None] * self.W[None, :]
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, time added in between, DeepSets source mixing, skip rescale.

    Works on [B*K, ch, H, W] with the K sources of an example adjacent (``K`` given at call).
    """

    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(ch_in), ch_in)
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, ch_out)
        self.norm2 = nn.GroupNorm(_groups(ch_out), ch_out)
        self.pool = nn.Conv2d(ch_out, ch_out, 1)      # DeepSets: projects the mean over sources
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor, K: int) -> torch.Tensor:
        x = self.conv1(nn.functional.silu(self.norm1(h)))              # [BK, co, H, W]
        x = x + self.emb(nn.functional.silu(emb))[:, :, None, None]
        x = nn.functional.silu(self.norm2(x))
        pooled = x.unflatten(0, (-1, K)).mean(1)                       # [B, co, H, W]
        x = x + self.pool(pooled).repeat_interleave(K, dim=0)          # same for every source
        x = self.conv2(self.drop(x))
        return (self.skip(h) + x) / math.sqrt(2.0)                     # skip rescale


class SourcePixelAttention(nn.Module):
    """Self-attention over all K*H*W (source, pixel) tokens of an example, no positional code.

    Attention is equivariant to any permutation of its tokens, so in particular to a
    permutation of the sources; convolutions before it already encode the pixel positions.
    """

    def __init__(self, ch: int, heads: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)

    def forward(self, h: torch.Tensor, K: int) -> torch.Tensor:
        BK, C, H, W = h.shape
        tokens = self.norm(h).unflatten(0, (-1, K))                    # [B, K, C, H, W]
        tokens = tokens.permute(0, 1, 3, 4, 2).reshape(BK // K, K * H * W, C)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)  # [B, KHW, C]
        out = out.reshape(BK // K, K, H, W, C).permute(0, 1, 4, 2, 3).reshape(BK, C, H, W)
        return (h + out) / math.sqrt(2.0)


class NCSN(nn.Module):
    """The U-Net. ``forward(x_t, t, m)`` in flow mode, ``forward(m)`` in regression mode.

    Shapes: x_t [B, K, C, H, W], t [B], m [B, 1, C, H, W] -> [B, K, C, H, W].
    """

    def __init__(self, config: NCSNConfig):
        super().__init__()
        if config.mode not in ("flow", "regression"):
            raise ValueError(f"NCSN mode must be 'flow' or 'regression', got {config.mode!r}")
        if config.head not in ("velocity", "x1"):
            raise ValueError(f"NCSN head must be 'velocity' or 'x1', got {config.head!r}")
        if not 0.0 < config.x1_clamp <= 1.0:
            raise ValueError(f"NCSN x1_clamp must be in (0, 1], got {config.x1_clamp}")
        self.config = config
        c, nf, K = config.channels, config.nf, config.num_sources
        emb_dim = 4 * nf
        self.flow = config.mode == "flow"
        if self.flow:
            self.time = FourierEmbedding(nf, config.fourier_scale)
            in_ch = 2 * c                                             # x_t,k and m
        else:
            self.source_embedding = nn.Parameter(torch.randn(K, emb_dim))   # breaks symmetry
            in_ch = c                                                 # m only
        self.emb_mlp = nn.Sequential(nn.Linear(nf if self.flow else emb_dim, emb_dim), nn.SiLU(),
                                     nn.Linear(emb_dim, emb_dim))
        self.head = nn.Conv2d(in_ch, nf, 3, padding=1)
        chans = [nf * mult for mult in config.ch_mult]
        self.down = nn.ModuleList()
        skips, ch = [nf], nf
        for level, ch_out in enumerate(chans):
            for _ in range(config.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(ch, ch_out, emb_dim, config.dropout)])
                if level in config.attn_levels:
                    blocks.append(SourcePixelAttention(ch_out))
                self.down.append(blocks)
                ch = ch_out
                skips.append(ch)
            if level < len(chans) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout), SourcePixelAttention(ch),
                                  ResBlock(ch, ch, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            ch_out = chans[level]
            for _ in range(config.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(ch + skips.pop(), ch_out, emb_dim, config.dropout)])
                if level in config.attn_levels:
                    blocks.append(SourcePixelAttention(ch_out))
                self.up.append(blocks)
                ch = ch_out
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.tail = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, c, 3, padding=1))

    @staticmethod
    def _layer(blk: nn.Module, h: torch.Tensor, emb: torch.Tensor, K: int) -> torch.Tensor:
        """One layer of the body: residual blocks take the embedding, attention takes K."""
        if isinstance(blk, ResBlock):
            return blk(h, emb, K)
        if isinstance(blk, SourcePixelAttention):
            return blk(h, K)
        return blk(h)                                                  # resampling

    def _run(self, h: torch.Tensor, emb: torch.Tensor, K: int) -> torch.Tensor:
        """The U-Net body on [B*K, in_ch, H, W] with per-row embeddings emb [B*K, E]."""
        h = self.head(h)
        hs = [h]
        for blocks in self.down:
            for blk in blocks:
                h = self._layer(blk, h, emb, K)
            hs.append(h)
        for blk in self.mid:
            h = self._layer(blk, h, emb, K)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):                        # U-Net skip connection
                h = torch.cat([h, hs.pop()], dim=1)
            for blk in blocks:
                h = self._layer(blk, h, emb, K)
        return self.tail(h)

    def _check(self, m: torch.Tensor) -> None:
        c = self.config.channels
        if m.dim() != 5 or m.shape[1] != 1 or m.shape[2] != c:
            raise ValueError(f"mixture must have shape [B, 1, {c}, H, W], got {tuple(m.shape)}")
        div = self.config.size_multiple
        if m.shape[-1] % div or m.shape[-2] % div:
            raise ValueError(f"image size {tuple(m.shape[-2:])} must be divisible by {div} for "
                             f"ch_mult {self.config.ch_mult}; pad or change ch_mult")

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.flow:
            x_t, t, m = args
            self._check(m)
            B, K = x_t.shape[:2]
            if K != self.config.num_sources or x_t.shape[2:] != m.shape[2:]:
                raise ValueError(f"x_t must have shape [B, {self.config.num_sources}, "
                                 f"{', '.join(map(str, m.shape[2:]))}], got {tuple(x_t.shape)}")
            t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(B)
            emb = self.emb_mlp(self.time(t)).repeat_interleave(K, dim=0)     # [BK, E]
            inp = torch.cat([x_t, m.expand_as(x_t)], dim=2).flatten(0, 1)     # [BK, 2C, H, W]
            out = self._run(inp, emb, K).unflatten(0, (B, K))                # [B, K, C, H, W]
            if self.config.head == "velocity":
                return zero_sum(out)                                          # FLOSS (14)
            clamp = self.config.x1_clamp if torch.is_grad_enabled() else 1e-6   # see NCSNConfig
            return velocity_from_x1(out, x_t, t, m, clamp)
        (m,) = args
        self._check(m)
        B, K = m.shape[0], self.config.num_sources
        emb = self.emb_mlp(self.source_embedding).repeat(B, 1)               # [BK, E], k-th row e_k
        inp = m.repeat_interleave(K, dim=0)[:, 0]                             # [BK, C, H, W]
        est = self._run(inp, emb, K).unflatten(0, (B, K))                    # [B, K, C, H, W]
        return mixture_consistency(est, m) if self.config.consistency else est

