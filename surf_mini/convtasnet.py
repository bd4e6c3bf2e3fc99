"""The audio MixIT teacher: a small Conv-TasNet with an STFT front end and real-valued masks.

FLOSS section 4.1 and SURF Appendix D.5 train the frozen MixIT teacher of audio SURF as a
Conv-TasNet (Luo & Mesgarani 2019) whose learned encoder/decoder are replaced by an STFT
(frame 768, half overlap) and its inverse, with 384 channels, 8 blocks, real-valued masks and
about 5M parameters. Structure:

  m [B, 1, T] -> STFT -> compressed magnitude |X|^0.33 [B, F, T'] -> 1x1 conv to the
  bottleneck (N channels) -> temporal convolutional network (X blocks per repeat, dilations
  1, 2, ..., 2^(X-1); each block: 1x1 conv N -> H, PReLU, global layer norm, depthwise
  dilated conv, PReLU, norm, 1x1 convs H -> N for the residual and for the skip sum) ->
  PReLU, 1x1 conv to M masks per bin, sigmoid -> masked complex STFT -> iSTFT -> M outputs,
  projected to sum to the mixture (mixture consistency, Wisdom et al. 2019).

The masks are real (one gain per time-frequency bin per output) and act on the complex
spectrum, so every output keeps the mixture's phase.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .mixit import mixture_consistency


@dataclass
class ConvTasNetConfig:
    num_outputs: int = 4                # M (MixIT: 4 on mixtures of two 2-source mixtures)
    n_fft: int = 768
    hop: int = 384                      # half overlap
    bottleneck: int = 384               # N, "384 channels"
    hidden: int = 512                   # H, per-block channels
    kernel: int = 3
    blocks: int = 8                     # X, dilations 1 .. 2^(X-1)
    repeats: int = 1                    # R
    compress: float = 0.33
    consistency: bool = True


PRESETS = {
    "paper": dict(n_fft=768, hop=384, bottleneck=384, hidden=512, blocks=8, repeats=1),
    # 1.7M: a MixIT step on B = 8 one-second 8 kHz mixtures of mixtures takes ~0.35 s on one
    # CPU thread. (A 0.2M version, 128-sample hop and 6 blocks, levelled off at a MixIT loss
    # of -8.8 dB in 1500 steps; this one reaches -9.6 dB in 3000.)
    "cpu": dict(n_fft=256, hop=64, bottleneck=128, hidden=256, blocks=8, repeats=2),
}


def make_config(preset: str, num_outputs: int, **overrides) -> ConvTasNetConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown ConvTasNet preset {preset!r}; use one of {sorted(PRESETS)}")
    return ConvTasNetConfig(**dict(PRESETS[preset], num_outputs=num_outputs, **overrides))


class GlobalLayerNorm(nn.Module):
    """gLN of Conv-TasNet: normalize over channels and time together, per example."""

    def __init__(self, ch: int, eps: float = 1e-8):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, ch, 1))
        self.bias = nn.Parameter(torch.zeros(1, ch, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:              # [B, C, T']
        mean = x.mean((1, 2), keepdim=True)
        var = (x - mean).pow(2).mean((1, 2), keepdim=True)
        return self.gain * (x - mean) / (var + self.eps).sqrt() + self.bias


class TCNBlock(nn.Module):
    """1x1 conv -> PReLU -> gLN -> depthwise dilated conv -> PReLU -> gLN -> residual, skip."""

    def __init__(self, N: int, H: int, kernel: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(N, H, 1), nn.PReLU(), GlobalLayerNorm(H),
            nn.Conv1d(H, H, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2, groups=H),
            nn.PReLU(), GlobalLayerNorm(H))
        self.res = nn.Conv1d(H, N, 1)
        self.skip = nn.Conv1d(H, N, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return x + self.res(h), self.skip(h)


class ConvTasNet(nn.Module):
    """``forward(m [B, 1, T]) -> [B, M, T]``, a regression separator for MixIT."""

    def __init__(self, config: ConvTasNetConfig):
        super().__init__()
        self.config = c = config
        F = c.n_fft // 2 + 1
        w = torch.hann_window(c.n_fft, periodic=True)
        self.register_buffer("window", w, persistent=False)
        self.inp = nn.Sequential(GlobalLayerNorm(F), nn.Conv1d(F, c.bottleneck, 1))
        self.tcn = nn.ModuleList(TCNBlock(c.bottleneck, c.hidden, c.kernel, 2 ** i)
                                 for _ in range(c.repeats) for i in range(c.blocks))
        self.mask = nn.Sequential(nn.PReLU(), nn.Conv1d(c.bottleneck, c.num_outputs * F, 1))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        c = self.config
        if m.dim() != 3 or m.shape[1] != 1:
            raise ValueError(f"mixture must have shape [B, 1, T], got {tuple(m.shape)}")
        if m.shape[-1] < c.n_fft:
            raise ValueError(f"signals need at least {c.n_fft} samples, got {m.shape[-1]}")
        B, T = m.shape[0], m.shape[-1]
        win = self.window.to(m.dtype)
        X = torch.stft(m[:, 0], c.n_fft, c.hop, window=win, return_complex=True, center=True)   # [B, F, T']
        h = self.inp(X.abs().pow(c.compress))                                # [B, N, T']
        skips = 0
        for blk in self.tcn:
            h, s = blk(h)
            skips = skips + s
        masks = torch.sigmoid(self.mask(skips)).unflatten(1, (c.num_outputs, -1))   # [B, M, F, T'] real
        Y = masks * X[:, None]                                                # keeps the mixture phase
        y = torch.istft(Y.flatten(0, 1), c.n_fft, c.hop, window=win, center=True, length=T)
        y = y.unflatten(0, (B, c.num_outputs))                               # [B, M, T]
        return mixture_consistency(y, m) if c.consistency else y
