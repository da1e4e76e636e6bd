"""Contracts of the transformer denoiser that the shape tests do not pin: rotary attention.

Rotary position embedding rotates BOTH queries and keys, pair (u_i, u_{i+D/2}) of a head
vector at position l by the angle l·θ_i, θ_i = base^(−2i/D), so that the attention score
<R_i q, R_j k> depends on positions only through i − j.  Planted bug these tests catch: the
rotation applied to the queries only (the scores then depend on absolute positions).
"""

from __future__ import annotations

import math

import torch

# Library names in one place (re-point here when the modules move).
from sampler.model import DenoiserConfig, TransformerDenoiser

K, L, SHIFT = 7, 6, 5


def tiny_model(seq_len: int, seed: int = 0) -> TransformerDenoiser:
    """A random 2-layer model with sharpened attention and head, so outputs vary visibly with positions."""
    torch.manual_seed(seed)
    model = TransformerDenoiser(DenoiserConfig(vocab_size=K, seq_len=seq_len, d_model=16, n_layers=2, n_heads=2)).eval()
    with torch.no_grad():
        model.head.weight.mul_(40.0)
        for block in model.blocks:
            block.attn.qkv.weight.mul_(10.0)
    return model


def rotation_matrices(length: int, head_dim: int, base: float, offset: int = 0) -> torch.Tensor:
    """R_l for l = offset..offset+length−1: the rotation by l·θ_i in the plane of coordinates (i, i + D/2).

    Float64[length, D, D], built entry by entry (independent of sampler.model's rotary code).
    """
    half = head_dim // 2
    out = torch.zeros(length, head_dim, head_dim, dtype=torch.float64)
    for row, position in enumerate(range(offset, offset + length)):
        for i in range(half):
            angle = position * base ** (-2.0 * i / head_dim)
            c, s = math.cos(angle), math.sin(angle)
            out[row, i, i], out[row, i, i + half] = c, -s
            out[row, i + half, i], out[row, i + half, i + half] = s, c
    return out


def reference_attention(attn: torch.nn.Module, x: torch.Tensor, n_heads: int, base: float) -> torch.Tensor:
    """Bidirectional multi-head attention with rotary q and k, in float64 from the module's weights:

        y_i = Σ_j softmax_j(<R_i q_i, R_j k_j> / √D) v_j  per head, then the output projection.
    """
    B, length, d_model = x.shape
    head_dim = d_model // n_heads
    qkv = x.double() @ attn.qkv.weight.double().T
    q, k, v = qkv.view(B, length, 3, n_heads, head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, L, D)
    rotations = rotation_matrices(length, head_dim, base)
    q_rot = torch.einsum("lde,bhle->bhld", rotations, q)
    k_rot = torch.einsum("lde,bhle->bhld", rotations, k)
    scores = torch.einsum("bhid,bhjd->bhij", q_rot, k_rot) / math.sqrt(head_dim)
    y = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
    return y.transpose(1, 2).reshape(B, length, d_model) @ attn.proj.weight.double().T


def test_attention_matches_brute_force_rotary_reference() -> None:
    model = tiny_model(L)
    attn = model.blocks[0].attn
    x = torch.randn(3, L, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = attn(x, model.rope_cos[:L], model.rope_sin[:L])
    expected = reference_attention(attn, x, model.config.n_heads, model.config.rope_base)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-4)


def test_denoiser_depends_on_relative_positions_only() -> None:
    """Shifting every position by SHIFT (rotary tables read from SHIFT on) leaves the output unchanged.

    Non-vacuous: doubling every distance (tables read at positions 0, 2, 4, ...) does change it.
    """
    model = tiny_model(2 * L + SHIFT)
    cos, sin = model.rope_cos.clone(), model.rope_sin.clone()
    z = torch.tensor([[K, 3, K, K, 1, K], [2, K, K, 5, K, K]])  # K is the mask id
    with torch.no_grad():
        at_zero = model(z)
        model.rope_cos, model.rope_sin = cos[SHIFT:], sin[SHIFT:]
        shifted = model(z)
        model.rope_cos, model.rope_sin = cos[::2], sin[::2]
        stretched = model(z)
    masked = z == K  # visible positions are copied (−inf off the token): compare the predictions
    torch.testing.assert_close(shifted[masked], at_zero[masked], atol=1e-5, rtol=1e-5)
    assert (stretched[masked] - at_zero[masked]).abs().max() > 0.1
