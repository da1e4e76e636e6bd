"""The causal noise head of the shadow student (`ShadowConfig(head="causal")`): noise read only from tokens
revealed earlier, so the noise-shared sampler's law has a sequential importance bound
(`sampler.shadow.recall`).

The base TransformerDenoiser runs once on (z_t, t) without noise and gives its final hidden states h.  At each
position l masked in z_t the head adds

    Δ_l = W_out g_l,        log p_l = SUBS(head(ln_f(h_l + Δ_l))),

where g is a small two-stream attention stack (width W = `causal_width`, `causal_layers` layers,
`causal_heads` heads):

- query stream  g_l⁰ = A [h_l, φ(τ_l), φ(t − τ_l)]            (no noise of token l itself);
- key stream    k_j = g_j + e_j,  e_j = B [h_j, φ(c_j), φ(τ_j)] + E_draft[d_j]   (token j's own noise);
- each layer:   g_l ← g_l + Attn(query g_l; keys/values k_j for j ∈ V(l) and a learned null key/value;
                rotary positions on queries and keys, so a token knows how far j is from it),
                g_l ← g_l + MLP(g_l),   with V(l) = { j masked in z_t : τ_j > τ_l } (strict: never l itself,
                never a tie);

d_j = sorted_quantile_draw(log p_base(· | z_t)_j, c_j) is j's provisional value (from the same base pass), φ
the scalar Fourier features of `fourier_features` (below), τ a token's reveal time (visible at t
iff t < τ).  By induction over layers g_l depends on (z_t, t, all τ) and {c_j, d_j : τ_j > τ_l} only (the
key at j adds j's own noise to g_j, which reads only tokens before j), so p_l never reads c_l nor the noise of
a token revealed after l.  W_out is zero-initialised: a fresh head adds exactly 0 and the student is its base.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from sampler.model import DenoiserConfig, apply_rotary, rotary_tables

SCALAR_FEATURES_QUERY = 2  # τ, t − τ
SCALAR_FEATURES_KEY = 2  # c, τ


def earlier_reveal_mask(masked: Bool[Tensor, "B L"], tau: Float[Tensor, "B L"]) -> Bool[Tensor, "B L L"]:
    """visible[b, l, j] = masked[b, j] and τ[b, j] > τ[b, l] (strictly): the keys that query l may read."""
    return masked.unsqueeze(1) & (tau.unsqueeze(1) > tau.unsqueeze(2))


def fourier_features(values: Float[Tensor, "*b"], count: int) -> Float[Tensor, "*b F"]:
    """[v, sin(πkv), cos(πkv) for k = 1..count] (float32): 2·count + 1 features of a scalar in about [0, 1]."""
    freqs = math.pi * torch.arange(1, count + 1, device=values.device, dtype=torch.float64)
    angles = values.double().unsqueeze(-1) * freqs
    return torch.cat((values.double().unsqueeze(-1), angles.sin(), angles.cos()), dim=-1).float()


class CausalAttentionLayer(nn.Module):
    """One two-stream layer: queries from the query stream, keys/values from the key stream under a
    visibility mask, plus an always-visible learned null key/value (an empty set attends to it alone)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_query = nn.LayerNorm(width)
        self.norm_key = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.null_key = nn.Parameter(torch.randn(width) * 0.02)
        self.null_value = nn.Parameter(torch.randn(width) * 0.02)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, query_stream: Float[Tensor, "B L W"], key_stream: Float[Tensor, "B L W"],
                visible: Bool[Tensor, "B L L"], cos: Float[Tensor, "L R"], sin: Float[Tensor, "L R"]) -> Float[Tensor, "B L W"]:
        batch, length, width = query_stream.shape
        keys_in = self.norm_key(key_stream)
        q = self.query(self.norm_query(query_stream))
        k = torch.cat((self.null_key.expand(batch, 1, width).to(q.dtype), self.key(keys_in)), dim=1)
        v = torch.cat((self.null_value.expand(batch, 1, width).to(q.dtype), self.value(keys_in)), dim=1)
        split = lambda a: a.reshape(batch, a.shape[1], self.heads, width // self.heads).transpose(1, 2)  # noqa: E731
        q, k = apply_rotary(split(q), cos, sin), split(k)
        k = torch.cat((k[:, :, :1], apply_rotary(k[:, :, 1:], cos, sin)), dim=2)  # the null key has no position
        allowed = torch.cat((visible.new_ones(batch, length, 1), visible), dim=-1).unsqueeze(1)
        attended = F.scaled_dot_product_attention(q, k, split(v), attn_mask=allowed)
        out = query_stream + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return out + self.mlp(self.norm_mlp(out))


class CausalNoiseHead(nn.Module):
    """Δ [B, L, D] added to the base's final hidden states at masked positions (module docstring)."""

    def __init__(self, config: DenoiserConfig, fourier: int, width: int, layers: int, heads: int, draft: bool):
        super().__init__()
        self.fourier = fourier
        scalar = 2 * fourier + 1
        self.query_in = nn.Linear(config.d_model + SCALAR_FEATURES_QUERY * scalar, width)
        self.key_in = nn.Linear(config.d_model + SCALAR_FEATURES_KEY * scalar, width)
        self.draft_embed = nn.Embedding(config.vocab_size, width) if draft else None
        if (width // heads) % 2:
            raise ValueError(f"causal_width / causal_heads = {width // heads} must be even (rotary positions)")
        self.layers = nn.ModuleList(CausalAttentionLayer(width, heads) for _ in range(layers))
        cos, sin = rotary_tables(config.seq_len, width // heads, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, config.d_model)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def output_is_zero(self) -> bool:
        return not bool(self.out.weight.any()) and not bool(self.out.bias.any())

    def forward(
        self, hidden: Float[Tensor, "B L D"], masked: Bool[Tensor, "B L"], t: Float[Tensor, " B"],
        tau: Float[Tensor, "B L"], category: Float[Tensor, "B L"], draft: Int[Tensor, "B L"],
    ) -> Float[Tensor, "B L D"]:
        phi = lambda v: fourier_features(v, self.fourier)  # noqa: E731
        tau = tau.double()
        gap = t.double().unsqueeze(-1) - tau
        h = hidden.float()
        query_stream = self.query_in(torch.cat((h, phi(tau), phi(gap)), dim=-1))
        own = self.key_in(torch.cat((h, phi(category.double()), phi(tau)), dim=-1))
        if self.draft_embed is not None:
            own = own + self.draft_embed(draft)
        visible = earlier_reveal_mask(masked, tau)
        length = hidden.shape[1]
        cos, sin = self.rope_cos[:length], self.rope_sin[:length]
        for layer in self.layers:
            query_stream = layer(query_stream, query_stream + own, visible, cos, sin)
        delta = self.out(self.norm_out(query_stream))
        return delta * masked.unsqueeze(-1).to(delta.dtype)

