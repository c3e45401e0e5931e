"""Vision Mamba (Zhu et al., 2024) as a 4-scale feature extractor, in plain PyTorch.

Patch tokens pass through bidirectional Mamba blocks: each block scans the token sequence forwards
and backwards with input-dependent (selective) state-space models, as in the paper's "Vim" design.
The isotropic stride-16 token map is turned into a stride 4/8/16/32 pyramid the way ViTDet does for
plain backbones: features taken after each quarter of the blocks are resampled by transposed
convolutions (x4, x2), identity and max-pooling (/2). Vim's class token is not used: the network
consumes dense features only.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, resample_abs_pos_embed, trunc_normal_

from .selective_scan import selective_scan


class SelectiveSSM(nn.Module):
    """One scan direction of a Mamba mixer: causal depthwise conv, then a selective state-space scan.

    delta, B and C are computed from the input at every position (the "selective" part); A and D are
    learned per channel. Initialisation follows the Mamba reference implementation.
    """

    def __init__(self, d_inner: int, d_state: int = 16, d_conv: int = 4, dt_rank: int = 16,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        # S4D-real initialisation: A = -[1, 2, ..., N] for every channel, stored as log(-A).
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))

        dt_std = dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        # Bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], so initial step sizes span
        # short and long memories.
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: [B, D, L] (z is the gate branch) -> [B, D, L]."""
        length = x.shape[-1]
        x = F.silu(self.conv1d(x)[..., :length])  # causal: drop the right padding
        dt, b, c = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # [B, D, L]; bias goes in as delta_bias
        return selective_scan(
            x, delta, -torch.exp(self.A_log.float()), b.transpose(1, 2), c.transpose(1, 2),
            self.D.float(), z, self.dt_proj.bias.float(),
        )


class BidirectionalMamba(nn.Module):
    """Vim's bidirectional Mamba mixer: shared input projection, separate forward and backward SSMs."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        d_inner = expand * d_model
        dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.forward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank)
        self.backward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, L, C] -> [B, L, C]."""
        x, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)  # each [B, D, L]
        y_forward = self.forward_ssm(x, z)
        y_backward = self.backward_ssm(x.flip(-1), z.flip(-1)).flip(-1)
        return self.out_proj(((y_forward + y_backward) / 2).transpose(1, 2))


class VimBlock(nn.Module):
    """Pre-norm residual block: x + DropPath(BidirectionalMamba(RMSNorm(x)))."""

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.mixer = BidirectionalMamba(dim, d_state=d_state)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x)))


def _upsampler(dim: int, factor: int) -> nn.Module:
    """ViTDet-style learned upsampling by 2 or 4 with stride-2 transposed convolutions."""
    if factor == 2:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)
    return nn.Sequential(
        nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
        nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
    )


class VisionMambaFeatures(nn.Module):
    """Vision Mamba encoder returning 4 NCHW maps at strides 4, 8, 16, 32.

    Channels are [dim/4, dim/2, dim, dim]. Inputs of any size divisible by ``patch_size`` work: the
    learned position embedding (defined for ``img_size``) is resampled to the token grid.
    """

    def __init__(self, embed_dim: int, depth: int, patch_size: int = 16, img_size: int = 224,
                 d_state: int = 16, drop_path_rate: float = 0.1, pretrained: bool = False):
        super().__init__()
        if pretrained:
            raise ValueError(
                "Vision Mamba has no pretrained weights on the timm hub; set MODEL.pretrained=false "
                "to train it from scratch, or pick a timm backbone for ImageNet initialisation"
            )
        if depth % 4:
            raise ValueError(f"Vision Mamba depth must be divisible by 4 (one pyramid level per quarter), got {depth}")
        self.patch_size = patch_size
        self.grid_size = (img_size // patch_size,) * 2
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(VimBlock(embed_dim, d_state, rate) for rate in rates)
        self.tap_indices = [depth // 4 * (i + 1) - 1 for i in range(4)]
        self.tap_norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in self.tap_indices)
        self.resamplers = nn.ModuleList([
            _upsampler(embed_dim, 4), _upsampler(embed_dim, 2), nn.Identity(), nn.MaxPool2d(2),
        ])
        self.feature_channels = [embed_dim // 4, embed_dim // 2, embed_dim, embed_dim]

    def no_weight_decay(self) -> set[str]:
        """Parameters the Mamba and ViT recipes exclude from weight decay."""
        names = {"pos_embed"}
        names.update(n for n, _ in self.named_parameters() if n.endswith(("A_log", ".D")))
        return names

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B, 3, H, W] -> [B, C_i, H/s_i, W/s_i] for strides s = 4, 8, 16, 32."""
        tokens = self.patch_embed(x)                                   # [B, C, h, w]
        grid = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)                     # [B, h*w, C], row-major order
        tokens = tokens + resample_abs_pos_embed(self.pos_embed, list(grid), list(self.grid_size),
                                                 num_prefix_tokens=0)
        taps = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.tap_indices:
                taps.append(tokens)
        features = []
        for tap, norm, resample in zip(taps, self.tap_norms, self.resamplers):
            fmap = norm(tap).transpose(1, 2).reshape(x.shape[0], -1, *grid)
            features.append(resample(fmap))
        return features
