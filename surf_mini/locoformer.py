"""MB-TFLocoformer: the permutation-equivariant audio velocity network of FLOSS section 3.3.

FLOSS (Scheibler et al. 2025) section 3.3, Figs. 2-3, and SURF Tables 7-8. The network maps
a noisy source array x_t [B, K, T], the time t [B] and the mixture m [B, 1, T] to a velocity
v [B, K, T] with

  * an encoder applied to every source with shared weights: STFT (20 ms frames, 10 ms hop,
    energy-normalized Hamming window), magnitude compression |X|^0.33 e^{i angle X}, and a
    learnable mel-band split (one linear layer per band, band membership from torchaudio's
    mel filters) -> tokens [B, S, T', N_bands, D], then a global RMS normalization;
  * the mixture as one more "source" token (S = K + 1) carrying its own learned positional
    code, so the network can tell it apart while the K sources stay interchangeable;
  * blocks that alternate band-source joint attention (BSJA: per frame, attention over all
    (band, source) tokens) and time-source parallel attention (TSPA: per band, attention
    over time within each source, in parallel with attention over sources at each
    time-band point). Attention over sources never sees a source positional code, so every
    block is equivariant to a permutation of the K sources (FLOSS (20));
  * convolutional multi-head self-attention (CMHSA): the Q, K, V projections are
    convolutions along time (BSJA, kernel 5) or time x band (TSPA, kernel (5, 3));
  * RMSGroupNorm and Conv-SwishGLU feed-forward layers (TF-Locoformer, Saijo et al. 2024)
    with convolutions along time (after BSJA) or bands (after TSPA);
  * DiT-style conditioning on t: every sub-layer's norm is followed by a scale and shift,
    and its residual by a gate, all predicted from the time embedding (Peebles & Xie 2023);
  * a hybrid mask head: the band-unsplit output has 3 parts per source, a mapping, a mask on
    the (compressed) spectrum of P_perp x_t and a mask on the mixture's; their combination is
    decompressed, inverted by the iSTFT and projected by P_perp (FLOSS (14)). Choice (config
    ``head="x1"``): the masks act on the *linear* spectra and the result is a clean estimate,
    turned into a velocity by SURF (18) read backwards, v = P_perp(x_hat_1 - x_t) / (1 - t).
    FLOSS does not say in which domain the masks act; the velocity holds the start noise,
    which a sum of masked *compressed* spectra cannot reproduce exactly (docs/speech.md).

Regression mode (the remixing baselines, SURF D.5): the only input is the mixture; the K
output tokens start from the mixture's encoding plus a learned per-output embedding (which
breaks the symmetry on purpose), there is no t, and the head has no x_t mask.

Choices where the papers are silent are marked "Choice:" in the code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .flow import zero_sum
from .mixit import mixture_consistency


@dataclass
class LocoformerConfig:
    """Architecture of ``MBTFLocoformer``; travels inside checkpoints (``dataclasses.asdict``)."""
    num_sources: int = 2
    mode: str = "flow"                  # "flow" v(x_t, t, m) or "regression" f(m)
    sample_rate: int = 16000
    frame_ms: float = 20.0
    hop_ms: float = 10.0
    compress: float = 0.33
    n_bands: int = 80
    dim: int = 192                      # D, feature embedding
    blocks: int = 6                     # each block = one BSJA + one TSPA
    heads: int = 4
    bsja_kernel: int = 5                # CMHSA kernel along time in BSJA
    tspa_kernel: tuple = (5, 3)         # CMHSA kernel (time, band) in TSPA
    ffn_mult: int = 2                   # Conv-SwishGLU hidden = ffn_mult * D
    ffn_kernel: int = 3
    norm_groups: int = 4
    consistency: bool = True            # regression mode: project outputs to sum to m
    # Flow mode's head (see ``MBTFLocoformer.forward``): "compressed" combines the mapping and
    # both masks in the compressed spectrum and returns that as the velocity (the head every
    # checkpoint before 2026-11-25 has); "x1" applies the masks to linear spectra, reads the
    # result as a clean estimate x_hat_1 and returns v = P_perp(x_hat_1 - x_t) / (1 - t).
    head: str = "compressed"

    @property
    def n_fft(self) -> int:
        return int(round(self.sample_rate * self.frame_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))


PRESETS = {
    # SURF Table 7 (Libri2Mix): D = 192, 6 blocks, 80 mel bands, kernels 5 and (5, 3).
    "paper": dict(dim=192, blocks=6, heads=4, n_bands=80, ffn_mult=4),
    # Trains on 2 CPU cores: 8 kHz, 32 ms frames with a 16 ms hop, 16 bands, D = 32, 2 blocks
    # (B = 8 one-second examples: 0.13 s forward, 0.42 s forward + backward on this CPU;
    # 20 ms / 10 ms and 24 bands took 4.3 s for two-second examples).
    "cpu": dict(sample_rate=8000, frame_ms=32.0, hop_ms=16.0, dim=32, blocks=2, heads=2, n_bands=16,
                ffn_mult=2),
}


def make_config(preset: str, num_sources: int, mode: str, **overrides) -> LocoformerConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown locoformer preset {preset!r}; use one of {sorted(PRESETS)}")
    return LocoformerConfig(**dict(PRESETS[preset], num_sources=num_sources, mode=mode, **overrides))


# --------------------------------------------------------------------------------------
# Mel bands: which STFT bins each band holds
# --------------------------------------------------------------------------------------

def mel_band_bins(n_freqs: int, n_bands: int, sample_rate: int) -> list[torch.Tensor]:
    """Bins of each band: where torchaudio's triangular mel filter is non-zero.

    Choice: low mel filters can be narrower than a bin and hold none; such a band gets the
    bin nearest its centre. Bins no filter covers (the top and the very bottom) join the
    nearest band, so every bin is covered and split/unsplit is the identity.
    """
    import warnings

    import torchaudio
    with warnings.catch_warnings():              # torchaudio warns about the empty filters we fix
        warnings.simplefilter("ignore")
        fb = torchaudio.functional.melscale_fbanks(n_freqs, 0.0, sample_rate / 2, n_bands, sample_rate,
                                                   norm=None, mel_scale="htk")          # [F, N]
    bands = [torch.nonzero(fb[:, b] > 0).flatten() for b in range(n_bands)]
    centre = fb.argmax(0)                                                              # [N]
    bands = [b if len(b) else centre[i:i + 1] for i, b in enumerate(bands)]
    covered = torch.zeros(n_freqs, dtype=torch.bool)
    for b in bands:
        covered[b] = True
    for f in torch.nonzero(~covered).flatten().tolist():
        i = int((centre - f).abs().argmin())
        bands[i] = torch.cat([bands[i], torch.tensor([f])]).sort().values
    return bands


def band_split(spec: torch.Tensor, bands: list[torch.Tensor]) -> list[torch.Tensor]:
    """[..., F] -> list of [..., n_b]: the bins of each band (a band may share bins)."""
    return [spec[..., b] for b in bands]


def band_unsplit(parts: list[torch.Tensor], bands: list[torch.Tensor], n_freqs: int) -> torch.Tensor:
    """Inverse of ``band_split``: bins shared by several bands get the mean of their values."""
    out = parts[0].new_zeros(parts[0].shape[:-1] + (n_freqs,))
    count = torch.zeros(n_freqs, dtype=parts[0].real.dtype, device=parts[0].device)
    for p, b in zip(parts, bands):
        out = out.index_add(-1, b.to(p.device), p)
        count[b] += 1
    return out / count


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------

class RMSGroupNorm(nn.Module):
    """RMS normalization over groups of channels of the last axis (TF-Locoformer)."""

    def __init__(self, dim: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.unflatten(-1, (self.groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2) * self.gain


class ConvSwishGLU(nn.Module):
    """Conv -> SwishGLU -> Conv along one axis (time or bands). x: [N, L, D] -> [N, L, D]."""

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        self.up = nn.Conv1d(dim, 2 * hidden, kernel, padding=kernel // 2)
        self.down = nn.Conv1d(hidden, dim, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.up(x.transpose(1, 2)).chunk(2, dim=1)
        return self.down(a * nn.functional.silu(gate)).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention over the second-to-last axis. [N, L, D]."""
    split = lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2)      # noqa: E731  [N, h, L, d]
    out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).flatten(-2)


class Modulation(nn.Module):
    """DiT adaLN: (shift, scale, gate) for n sub-layers from the conditioning vector."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(dim, 3 * n * dim)
        nn.init.zeros_(self.proj.weight)            # DiT "adaLN-Zero": blocks start as identity
        nn.init.zeros_(self.proj.bias)

    def forward(self, c: torch.Tensor) -> list[torch.Tensor]:     # c [B, D] -> 3n x [B, D]
        return list(self.proj(nn.functional.silu(c)).chunk(3 * self.n, dim=-1))


def _mod(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, S, T, N, D] modulated by per-example shift/scale [B, D]."""
    return x * (1 + scale[:, None, None, None]) + shift[:, None, None, None]


class _DualPathBlock(nn.Module):
    """What BSJA and TSPA share: two RMSGroupNorms, a CMHSA projection ``qkv`` and output
    projection ``out`` (their shapes differ), a Conv-SwishGLU, and adaLN for both sub-layers."""

    def __init__(self, c: LocoformerConfig, qkv: nn.Module, out: nn.Module):
        super().__init__()
        D = c.dim
        self.heads = c.heads
        self.norm1, self.norm2 = RMSGroupNorm(D, c.norm_groups), RMSGroupNorm(D, c.norm_groups)
        self.qkv, self.out = qkv, out
        self.ffn = ConvSwishGLU(D, c.ffn_mult * D, c.ffn_kernel)
        self.mod = Modulation(D, 2)


class BSJA(_DualPathBlock):
    """Band-source joint attention: per frame, attention over all (source, band) tokens.

    CMHSA: Q, K, V come from a convolution along time (kernel ``k``) of each (source, band)
    stream; the feed-forward Conv-SwishGLU convolves along time too. No source code enters
    the attention, so it is equivariant to permuting sources (bands are told apart by their
    own split layers).
    """

    def __init__(self, c: LocoformerConfig):
        super().__init__(c, nn.Conv1d(c.dim, 3 * c.dim, c.bsja_kernel, padding=c.bsja_kernel // 2),
                         nn.Linear(c.dim, c.dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, S, T, N, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.mod(cond)
        h = _mod(self.norm1(x), sh1, sc1)
        seq = h.permute(0, 1, 3, 2, 4).reshape(B * S * N, T, D)             # each stream over time
        q, k, v = self.qkv(seq.transpose(1, 2)).transpose(1, 2).chunk(3, dim=-1)
        to_frames = lambda z: z.reshape(B, S, N, T, D).permute(0, 3, 1, 2, 4).reshape(B * T, S * N, D)  # noqa: E731
        a = self.out(_attend(to_frames(q), to_frames(k), to_frames(v), self.heads))   # [BT, SN, D]
        x = x + g1[:, None, None, None] * a.reshape(B, T, S, N, D).permute(0, 2, 1, 3, 4)
        h = _mod(self.norm2(x), sh2, sc2)
        f = self.ffn(h.permute(0, 1, 3, 2, 4).reshape(B * S * N, T, D))       # along time
        return x + g2[:, None, None, None] * f.reshape(B, S, N, T, D).permute(0, 1, 3, 2, 4)


class TSPA(_DualPathBlock):
    """Time-source parallel attention: per band, attention over time within each source, in
    parallel with attention over the sources at each (time, band) point.

    Choice: "parallel" read as two attentions on the same normalized input, sharing one CMHSA
    projection (a 2-D convolution over (time, band), kernel (5, 3)), their outputs
    concatenated and projected back to D. The feed-forward Conv-SwishGLU convolves along bands.
    """

    def __init__(self, c: LocoformerConfig):
        kt, kf = c.tspa_kernel
        super().__init__(c, nn.Conv2d(c.dim, 3 * c.dim, (kt, kf), padding=(kt // 2, kf // 2)),  # both paths
                         nn.Linear(2 * c.dim, c.dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, S, T, N, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.mod(cond)
        h = _mod(self.norm1(x), sh1, sc1)
        proj = self.qkv(h.reshape(B * S, T, N, D).permute(0, 3, 1, 2))        # [BS, 3D, T, N]
        q, k, v = proj.permute(0, 2, 3, 1).reshape(B, S, T, N, 3 * D).chunk(3, dim=-1)
        over_time = lambda z: z.permute(0, 1, 3, 2, 4).reshape(B * S * N, T, D)  # noqa: E731
        over_src = lambda z: z.permute(0, 2, 3, 1, 4).reshape(B * T * N, S, D)   # noqa: E731
        at = _attend(over_time(q), over_time(k), over_time(v), self.heads)
        at = at.reshape(B, S, N, T, D).permute(0, 1, 3, 2, 4)
        as_ = _attend(over_src(q), over_src(k), over_src(v), self.heads)
        as_ = as_.reshape(B, T, N, S, D).permute(0, 3, 1, 2, 4)
        x = x + g1[:, None, None, None] * self.out(torch.cat([at, as_], dim=-1))
        h = _mod(self.norm2(x), sh2, sc2)
        f = self.ffn(h.reshape(B * S * T, N, D))                              # along bands
        return x + g2[:, None, None, None] * f.reshape(B, S, T, N, D)


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------

class MBTFLocoformer(nn.Module):
    """``forward(x_t, t, m)`` in flow mode, ``forward(m)`` in regression mode; [B, K, T] out."""

    def __init__(self, config: LocoformerConfig):
        super().__init__()
        if config.mode not in ("flow", "regression"):
            raise ValueError(f"locoformer mode must be 'flow' or 'regression', got {config.mode!r}")
        if config.head not in ("compressed", "x1"):
            raise ValueError(f"locoformer head must be 'compressed' or 'x1', got {config.head!r}")
        self.config = c = config
        self.flow = c.mode == "flow"
        self.n_freqs = c.n_fft // 2 + 1
        w = torch.hamming_window(c.n_fft, periodic=True)
        self.register_buffer("window", w / w.pow(2).sum().sqrt(), persistent=False)  # unit energy
        self.bands = mel_band_bins(self.n_freqs, c.n_bands, c.sample_rate)
        for i, b in enumerate(self.bands):
            self.register_buffer(f"band{i}", b, persistent=False)
        D = c.dim
        self.split = nn.ModuleList(nn.Linear(2 * len(b), D) for b in self.bands)   # re, im -> D
        self.unsplit = nn.ModuleList(nn.Linear(D, 3 * 2 * len(b)) for b in self.bands)
        self.mix_code = nn.Parameter(torch.randn(D) * 0.02)       # the mixture's own position
        self.norm_gain = nn.Parameter(torch.ones(D))
        if self.flow:
            self.time = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        else:
            self.output_code = nn.Parameter(torch.randn(c.num_sources, D))   # breaks symmetry
            self.cond = nn.Parameter(torch.zeros(D))
        self.blocks = nn.ModuleList()
        for _ in range(c.blocks):
            self.blocks.append(BSJA(c))
            self.blocks.append(TSPA(c))
        self.final_norm = RMSGroupNorm(D, c.norm_groups)

    # -- encoder / decoder ---------------------------------------------------------------
    def _bands(self) -> list[torch.Tensor]:
        return [getattr(self, f"band{i}") for i in range(len(self.bands))]

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """[..., T] -> compressed complex spectrum [..., T', F].  FLOSS 3.3 encoder."""
        c = self.config
        X = torch.stft(x.reshape(-1, x.shape[-1]), c.n_fft, c.hop, window=self.window.to(x.dtype),
                       return_complex=True, center=True)                       # [*, F, T']
        X = X.transpose(-1, -2).reshape(x.shape[:-1] + (X.shape[-1], X.shape[-2]))
        mag = X.abs()
        return X * (mag + 1e-8).pow(c.compress - 1)            # |X|^0.33 e^{i angle X}

    def istft(self, Y: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of ``stft``: decompress, then overlap-add. [..., T', F] -> [..., T]."""
        c = self.config
        mag = Y.abs()
        Y = Y * (mag + 1e-8).pow(1 / c.compress - 1)
        flat = Y.reshape((-1,) + Y.shape[-2:]).transpose(-1, -2)
        y = torch.istft(flat, c.n_fft, c.hop, window=self.window.to(flat.real.dtype), center=True,
                        length=length)
        return y.reshape(Y.shape[:-2] + (length,))

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """Band split: [B, S, T', F] complex -> [B, S, T', N, D]."""
        parts = band_split(spec, self._bands())
        return torch.stack([lin(torch.view_as_real(p).flatten(-2)) for lin, p in zip(self.split, parts)], -2)

    def decode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Band unsplit: [B, S, T', N, D] -> mapping, input mask, mixture mask, each [B, S, T', F] complex."""
        outs = [lin(h[..., i, :]) for i, lin in enumerate(self.unsplit)]     # [B, S, T', 6 n_b]
        three = [band_unsplit([torch.view_as_complex(o.unflatten(-1, (3, -1, 2))[..., j, :, :].contiguous())
                               for o in outs], self._bands(), self.n_freqs) for j in range(3)]
        return three[0], three[1], three[2]

    # -- forward -------------------------------------------------------------------------
    def _check(self, m: torch.Tensor) -> None:
        if m.dim() != 3 or m.shape[1] != 1:
            raise ValueError(f"mixture must have shape [B, 1, T], got {tuple(m.shape)}")
        if m.shape[-1] < self.config.n_fft:
            raise ValueError(f"signals need at least {self.config.n_fft} samples, got {m.shape[-1]}")

    def _time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        D = self.config.dim
        freqs = torch.exp(-math.log(10000.0) * torch.arange(D // 2, device=t.device, dtype=t.dtype) / (D // 2))
        ang = 1000.0 * t[:, None] * freqs[None]                  # sinusoidal, as in DiT
        return self.time(torch.cat([ang.sin(), ang.cos()], -1))

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        c, K = self.config, self.config.num_sources
        if self.flow:
            x_t, t, m = args
            self._check(m)
            if x_t.dim() != 3 or x_t.shape[1] != K or x_t.shape[-1] != m.shape[-1]:
                raise ValueError(f"x_t must have shape [B, {K}, {m.shape[-1]}], got {tuple(x_t.shape)}")
            B, T = m.shape[0], m.shape[-1]
            t = torch.as_tensor(t, dtype=m.dtype, device=m.device).expand(B)
            xp = zero_sum(x_t)                                   # P_perp x_t: what the x_t mask acts on
            spec = self.stft(torch.cat([x_t, m], 1))            # [B, K+1, T', F]
            h = self.encode(spec)                               # [B, K+1, T', N, D]
            cond = self._time_embedding(t)                      # [B, D]
            x_spec = self.stft(xp)
        else:
            (m,) = args
            self._check(m)
            B, T = m.shape[0], m.shape[-1]
            spec = self.stft(m)                                 # [B, 1, T', F]
            hm = self.encode(spec)                              # [B, 1, T', N, D]
            h = torch.cat([hm.expand(-1, K, -1, -1, -1) + self.output_code[None, :, None, None], hm], 1)
            cond = self.cond.expand(B, -1)
            x_spec = None
        h = torch.cat([h[:, :K], h[:, K:] + self.mix_code], 1)  # the mixture's positional code
        # Global normalization (one RMS per example over every token: a symmetric statistic).
        h = h * torch.rsqrt(h.pow(2).mean((1, 2, 3, 4), keepdim=True) + 1e-5) * self.norm_gain
        for blk in self.blocks:
            h = blk(h, cond)
        mapping, in_mask, mix_mask = self.decode(self.final_norm(h[:, :K]))   # the K source tokens
        m_spec = spec[:, K:] if self.flow else spec             # [B, 1, T', F]
        if self.flow and c.head == "x1":
            lin = lambda Y: Y * (Y.abs() + 1e-8).pow(1 / c.compress - 1)     # noqa: E731  decompress
            Y = lin(mapping) + in_mask * lin(x_spec) + mix_mask * lin(m_spec)  # x_hat_1, linear spectra
            flat = Y.reshape((-1,) + Y.shape[-2:]).transpose(-1, -2)
            x1_hat = torch.istft(flat, c.n_fft, c.hop, window=self.window.to(flat.real.dtype), center=True,
                                 length=T).reshape(B, K, T)                   # [B, K, T]
            # SURF (18) backwards: x_hat_1 = x_t + (1 - t) v  =>  v = (x_hat_1 - x_t) / (1 - t), P_perp'd
            return zero_sum(x1_hat - x_t) / (1 - t).clamp_min(1e-5)[:, None, None]
        Y = mapping + mix_mask * m_spec                         # hybrid mask head, FLOSS 3.3
        if x_spec is not None:
            Y = Y + in_mask * x_spec
        y = self.istft(Y, T)                                    # [B, K, T]
        if self.flow:
            return zero_sum(y)                                  # FLOSS (14)
        return mixture_consistency(y, m) if c.consistency else y
