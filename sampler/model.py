"""The teacher: a bidirectional transformer denoiser with the SUBS parameterisation.

One file, readable in one sitting (in the spirit of nanoGPT).

Input  z_t : Int[B, L]   tokens in {0..K-1} or the mask id m = K
       t   : Float[B]    diffusion time in [0, 1] (used only with time conditioning)
Output log p_θ(x0 | z_t) : Float[B, L, K] over the K real tokens, with the SUBS
parameterisation (MDLM):
  - the mask is never predicted (the output has no mask coordinate),
  - visible positions are copied: log p = 0 on z_l, −inf elsewhere.

Architecture: token embedding (K + 1 ids, the mask included) -> n pre-LayerNorm blocks
of [rotary multi-head self-attention (no causal mask; `causal=True` for the autoregressive
reference) + GELU MLP] -> LayerNorm -> linear
head to K logits -> log_softmax.  Rotary positions matter here: with learned absolute
positions the same small model stalled at the unigram loss on a Markov chain source.
Optional time conditioning adds an MLP of sinusoidal features of t to the residual stream
(adaptive scale/shift of each LayerNorm, as in DiT / MDLM).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from .names import PRESETS  # noqa: F401  (the size presets, re-exported)


@dataclass(frozen=True)
class DenoiserConfig:
    """Shape of a TransformerDenoiser.  `mask_id` is `vocab_size` (the extra input id)."""

    vocab_size: int
    seq_len: int
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    time_conditioning: bool = False
    dropout: float = 0.0
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    causal: bool = False  # causal attention: the autoregressive reference (sampler.autoregressive), not a denoiser

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads} with an even head size (rotary)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @classmethod
    def preset(cls, name: str, vocab_size: int, seq_len: int, **overrides: Any) -> "DenoiserConfig":
        """A named size (a key of PRESETS) for a vocabulary and sequence length."""
        if name not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(vocab_size=vocab_size, seq_len=seq_len, **{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DenoiserConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"model_config has unknown keys {sorted(unknown)}")
        return cls(**d)


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos, sin of angle l·θ_i, θ_i = base^(−2i/head_dim): each Float[L, head_dim/2]."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Float[Tensor, "B H L D"], cos: Float[Tensor, "L D2"], sin: Float[Tensor, "L D2"]) -> Float[Tensor, "B H L D"]:
    """Rotate each pair (x_{2i}, x_{2i+1}) ≅ (first half, second half) by angle l·θ_i."""
    return _rotate_halves(x, cos.to(x.dtype), sin.to(x.dtype))


def _rotate_halves(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(x1·cos − x2·sin, x1·sin + x2·cos) of the halves x1, x2 of the last axis; cos and sin broadcast against them."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def rotate_queries_keys(qkv: Float[Tensor, "B L 3 H D"], cos: Float[Tensor, "L D2"],
                        sin: Float[Tensor, "L D2"]) -> Float[Tensor, "B L 2 H D"]:
    """`apply_rotary` of the query and key slices of a fused q/k/v projection, in its token-major layout: the same
    products elementwise (bit for bit), without the strided passes over permuted views (the costlier half of a
    small model's attention on CPU)."""
    return _rotate_halves(qkv[:, :, :2], cos.to(qkv.dtype)[:, None, None, :], sin.to(qkv.dtype)[:, None, None, :])


class SelfAttention(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.causal = cfg.causal

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads)
        q, k = rotate_queries_keys(qkv, cos, sin).permute(2, 0, 3, 1, 4)  # each [B, H, L, D/H]
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """x += attn(LN(x)); x += mlp(LN(x)); with time conditioning LN(x)·(1 + scale) + shift."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1 = nn.LayerNorm(d, elementwise_affine=not cfg.time_conditioning)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=not cfg.time_conditioning)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d), nn.Dropout(cfg.dropout)
        )
        self.modulation = nn.Linear(d, 4 * d) if cfg.time_conditioning else None
        if self.modulation is not None:  # start as the unconditioned block
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cond: Tensor | None) -> Tensor:
        if self.modulation is None or cond is None:
            x = x + self.attn(self.ln1(x), cos, sin)
            return x + self.mlp(self.ln2(x))
        scale1, shift1, scale2, shift2 = self.modulation(cond)[:, None, :].chunk(4, dim=-1)
        x = x + self.attn(self.ln1(x) * (1 + scale1) + shift1, cos, sin)
        return x + self.mlp(self.ln2(x) * (1 + scale2) + shift2)


def time_features(t: Float[Tensor, "B"], dim: int) -> Float[Tensor, "B dim"]:
    """Sinusoidal features [cos(1000·t·f_i), sin(1000·t·f_i)], f_i = 10^(−4i/dim)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device, dtype=torch.float32) / (dim // 2))
    angles = 1000.0 * t.float()[:, None] * freqs[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class TransformerDenoiser(nn.Module):
    """x0-predictor p_θ(x0 | z_t) with SUBS; see the module docstring."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size + 1, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size, bias=False)
        self.drop = nn.Dropout(config.dropout)
        self.time_mlp = (
            nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d)) if config.time_conditioning else None
        )
        cos, sin = rotary_tables(config.seq_len, d // config.n_heads, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2 style scaled init of residual projections
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * config.n_layers))
            if block.modulation is not None:
                nn.init.zeros_(block.modulation.weight)
                nn.init.zeros_(block.modulation.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_input(self, z: Tensor, t: Tensor | None) -> None:
        """ValueError on a sequence longer than the model, ids outside 0..K, or t of the wrong shape."""
        if z.dim() != 2:
            raise ValueError(f"z must have shape (batch, length), got shape {tuple(z.shape)}")
        if z.shape[1] > self.config.seq_len:
            raise ValueError(f"sequence length {z.shape[1]} exceeds the model's seq_len={self.config.seq_len}")
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > self.mask_id):
            raise ValueError(
                f"z must hold token ids in [0, {self.mask_id}] (mask_id={self.mask_id}), "
                f"got values in [{int(z.min())}, {int(z.max())}]"
            )
        if t is not None and tuple(t.shape) != (z.shape[0],):
            raise ValueError(f"t must have shape ({z.shape[0]},), got {tuple(t.shape)}")

    def forward(
        self, z: Int[Tensor, "B L"], t: Float[Tensor, "B"] | None = None, input_offset: Float[Tensor, "B L D"] | None = None,
    ) -> Float[Tensor, "B L K"]:
        """log p_θ(x0 | z_t) over the K real tokens (float32), SUBS-parameterised: readout(hidden(z, t), z).
        `input_offset`, when given, is added to the token embeddings (the shadow student's noise input,
        sampler.shadow.student).  A causal model (config.causal, the autoregressive reference) returns
        log_softmax(logits) at every position instead: its next-token distribution, no SUBS copy."""
        hidden = self.hidden(z, t, input_offset)
        if self.config.causal:
            return torch.log_softmax(self.logits(hidden), dim=-1)
        return self.readout(hidden, z)

    def hidden(
        self, z: Int[Tensor, "B L"], t: Float[Tensor, "B"] | None = None, input_offset: Float[Tensor, "B L D"] | None = None,
    ) -> Float[Tensor, "B L D"]:
        """The final hidden states h (after the last block, before ln_f and the output head)."""
        if not torch.compiler.is_compiling():
            self.check_input(z, t)
        L = z.shape[1]
        embedded = self.embed(z)
        x = self.drop(embedded if input_offset is None else embedded + input_offset.to(embedded.dtype))
        cond = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("t is required when time_conditioning is on")
            cond = self.time_mlp(time_features(t, self.config.d_model))
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        for block in self.blocks:
            x = block(x, cos, sin, cond)
        return x

    def logits(self, hidden: Float[Tensor, "*B D"]) -> Float[Tensor, "*B K"]:
        """head(ln_f(h)) in float32: the unnormalised scores of the K real tokens at hidden states h."""
        return self.head(self.ln_f(hidden)).float()

    def readout(self, hidden: Float[Tensor, "B L D"], z: Int[Tensor, "B L"]) -> Float[Tensor, "B L K"]:
        """SUBS log-probs from the hidden states: subs_log_probs(logits(h), z, mask_id)."""
        return subs_log_probs(self.logits(hidden), z, self.mask_id)


def subs_log_probs(logits: Float[Tensor, "B L K"], z: Int[Tensor, "B L"], mask_id: int) -> Float[Tensor, "B L K"]:
    """SUBS: log_softmax(logits) at masked positions; at visible ones 0 on z_l and −inf elsewhere."""
    log_probs = torch.log_softmax(logits, dim=-1)
    visible = z != mask_id
    copied = torch.full_like(log_probs, float("-inf"))
    copied.scatter_(-1, torch.where(visible, z, 0).unsqueeze(-1), 0.0)
    return torch.where(visible.unsqueeze(-1), copied, log_probs)
