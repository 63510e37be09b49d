"""The HMDiff denoiser g(h_k, k, f_I) over mesh points, built for real time on a CPU.

Points are the coarse vertices plus the joints (P = 625 for the default asset). To keep the
attention cheap, points are read into **part tokens**: each point gets its own learned
linear embedding of its noisy coordinates (plus a learned per-point bias), and the points of
a body region (a fixed clustering of the coarse mesh; every joint is its own region) are
averaged into one token. Then, as in the paper: vertex self-attention blocks -> vertex-image
cross-attention blocks (queries: part tokens; keys/values: f_I) -> a linear head, read back
per point with a per-point linear map from its region's token. The timestep enters as a
sinusoidal embedding added to every token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DenoiserConfig:
    width: int = 128  # token width D
    heads: int = 4
    self_blocks: int = 4  # vertex self-attention blocks
    cross_blocks: int = 2  # vertex-image cross-attention blocks
    mlp_ratio: float = 2.0
    vertex_groups: int = 40  # regions of the coarse mesh, one token each (joints add their own)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.self_blocks < 0 or self.cross_blocks < 1:
            raise ValueError("need self_blocks >= 0 and cross_blocks >= 1")
        if self.vertex_groups < 1:
            raise ValueError(f"vertex_groups must be >= 1, got {self.vertex_groups}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of (float) timesteps ``(B,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: attention (self, or cross to ``context``) + MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.norm1 = nn.LayerNorm(width)
        self.norm_ctx = nn.LayerNorm(width) if cross else None
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def attention(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``self.attn`` (its weights) written out: plain MatMul/Softmax, so the graph exports
        to ONNX and TensorRT the same with or without autograd (PyTorch's fused inference path
        has no ONNX form)."""
        attn = self.attn
        d, heads = attn.embed_dim, attn.num_heads  # ints, not sizes read from q: the weight slices fold into constants
        w, b = attn.in_proj_weight, attn.in_proj_bias
        split = lambda t: t.reshape(kv.shape[0], -1, heads, d // heads).transpose(1, 2)  # noqa: E731
        if q is kv:  # self-attention: the three projections as one product
            qh, kh, vh = (split(t) for t in nn.functional.linear(q, w, b).chunk(3, dim=-1))
        else:  # q (B*M, T, D) against kv (B, N, D): the M query sets of an input read its kv together
            qh = split(nn.functional.linear(q, w[:d], b[:d]))  # (B, heads, M*T, d/heads)
            kh, vh = (split(t) for t in nn.functional.linear(kv, w[d:], b[d:]).chunk(2, dim=-1))
        weights = torch.softmax(qh @ kh.transpose(-1, -2) * (1.0 / math.sqrt(d // heads)), dim=-1)
        out = (weights @ vh).transpose(1, 2).reshape(q.shape[0], -1, d)
        return attn.out_proj(out)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        kv = self.norm_ctx(context) if self.cross else q
        x = x + self.attention(q, kv)
        return x + self.mlp(self.norm2(x))


class Denoiser(nn.Module):
    """``g(h_k, k, f_I)``: noisy points ``(B, P, 3)``, steps ``(B,)``, image tokens ``(B, N, D)``
    -> network output ``(B, P, 3)`` (ε, x_0 or v, as the scheduler's prediction type says).

    ``groups`` ``(P,)``: the region (token) index of every point, ``0 .. T-1``.
    """

    def __init__(self, cfg: DenoiserConfig, groups: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        num_points = len(groups)
        num_tokens = int(groups.max()) + 1
        self.register_buffer("groups", groups.long())
        counts = torch.bincount(groups.long(), minlength=num_tokens).clamp(min=1).float()
        self.register_buffer("inv_counts", 1.0 / counts)  # (T,)
        pool = torch.zeros(num_tokens, num_points)
        pool[groups.long(), torch.arange(num_points)] = 1.0
        # (T, P) region means as one product: exports to ONNX/TensorRT as a plain MatMul
        self.register_buffer("pool", pool / counts[:, None], persistent=False)
        self.point_in = nn.Parameter(torch.randn(num_points, 3, d) / math.sqrt(3))  # per-point embedding
        self.point_bias = nn.Parameter(torch.zeros(num_points, d))  # learned per-point embedding
        self.token_embed = nn.Parameter(torch.zeros(num_tokens, d))
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.self_blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, False) for _ in range(cfg.self_blocks))
        self.cross_blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, True) for _ in range(cfg.cross_blocks))
        self.norm_out = nn.LayerNorm(d)
        self.point_out = nn.Parameter(torch.zeros(num_points, d, 3))  # per-point linear head
        self.point_out_bias = nn.Parameter(torch.zeros(num_points, 3))
        nn.init.normal_(self.token_embed, std=0.02)
        nn.init.normal_(self.point_out, std=0.02 / math.sqrt(d))

    @property
    def num_tokens(self) -> int:
        return len(self.inv_counts)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """``image_tokens`` ``(B, N, D)`` or, for M samples of each input next to each other in
        ``sample`` ``(B*M, P, 3)``, one set per input ``(B, N, D)``: the cross-attention then
        reads each set once for its M samples."""
        b, p, d = sample.shape[0], sample.shape[1], self.point_in.shape[-1]
        # per-point embeddings and region means as batched products over the points, (P, B, ·):
        # a plain MatMul each in an ONNX graph (ONNX Runtime's Einsum is several times slower)
        feat = torch.matmul(sample.transpose(0, 1), self.point_in) + self.point_bias[:, None]  # (P, B, D)
        tokens = torch.matmul(self.pool.to(feat.dtype), feat.reshape(p, -1)).reshape(-1, b, d)  # (T, B, D)
        temb = self.time_mlp(timestep_embedding(timestep.expand(b) if timestep.dim() == 0 else timestep, d))
        x = tokens.transpose(0, 1) + self.token_embed + temb[:, None]  # (B, T, D)
        for block in self.self_blocks:
            x = block(x, x)
        for block in self.cross_blocks:
            x = block(x, image_tokens)
        x = self.norm_out(x).transpose(0, 1).index_select(0, self.groups)  # (P, B, D): each point reads its region
        return (torch.matmul(x, self.point_out) + self.point_out_bias[:, None]).transpose(0, 1)  # (B, P, 3)
