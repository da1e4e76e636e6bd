"""The teacher denoiser: shapes, the SUBS parameterisation, bidirectionality, time conditioning, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from jaxtyping import TypeCheckError
from hypothesis import strategies as st

from sampler.model import DenoiserConfig, TransformerDenoiser, apply_rotary, rotary_tables, rotate_queries_keys

K, L = 11, 12


def small_model(time_conditioning: bool = False, seed: int = 0) -> TransformerDenoiser:
    torch.manual_seed(seed)
    cfg = DenoiserConfig(vocab_size=K, seq_len=L, d_model=32, n_layers=2, n_heads=2, time_conditioning=time_conditioning)
    return TransformerDenoiser(cfg).eval()


MODEL = small_model()


@settings(max_examples=25)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, L),
    mask_rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_subs_output_is_a_distribution_that_copies_visible_tokens(batch: int, length: int, mask_rate: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (batch, length), generator=gen)
    masked = torch.rand(batch, length, generator=gen) < mask_rate
    z = torch.where(masked, torch.full_like(x, MODEL.mask_id), x)
    with torch.no_grad():
        log_probs = MODEL(z, torch.rand(batch, generator=gen))
    assert log_probs.shape == (batch, length, K)  # K outputs: the mask is never predicted
    assert log_probs.dtype == torch.float32
    total = torch.logsumexp(log_probs, dim=-1)
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-5, rtol=0)
    # visible positions: log p = 0 on the visible token, −inf on every other token
    picked = log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    assert (picked[~masked] == 0).all()
    # every one of the K − 1 other tokens is −inf (not just one of them)
    assert (torch.isneginf(log_probs[~masked]).sum(-1) == K - 1).all()
    # masked positions: finite log-probs everywhere
    assert torch.isfinite(log_probs[masked]).all()


def test_attention_is_bidirectional() -> None:
    """The prediction at position 0 depends on a token to its right (no causal mask)."""
    z = torch.full((1, L), MODEL.mask_id)
    z2 = z.clone()
    z2[0, L - 1] = 3
    with torch.no_grad():
        a, b = MODEL(z, None), MODEL(z2, None)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6


def test_positions_matter() -> None:
    """Rotary positions: the same visible token at a different distance changes the prediction."""
    z = torch.full((1, L), MODEL.mask_id)
    z_near, z_far = z.clone(), z.clone()
    z_near[0, 1], z_far[0, L - 1] = 5, 5
    with torch.no_grad():
        near, far = MODEL(z_near, None), MODEL(z_far, None)
    assert (near[0, 0] - far[0, 0]).abs().max() > 1e-6


def test_rotary_preserves_norm_and_relative_angle() -> None:
    cos, sin = rotary_tables(8, 4, 10000.0)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 4, generator=gen).expand(1, 1, 8, 4)
    k = torch.randn(1, 1, 1, 4, generator=gen).expand(1, 1, 8, 4)
    rq, rk = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # <R_i q, R_j k> depends on i − j only
    dots = torch.einsum("d,ld->l", rq[0, 0, 2], rk[0, 0])  # i = 2 against all j
    dots_shift = torch.einsum("d,ld->l", rq[0, 0, 5], rk[0, 0])  # i = 5
    torch.testing.assert_close(dots[:5], dots_shift[3:8], atol=1e-5, rtol=1e-5)


def test_rotating_queries_and_keys_in_place_is_apply_rotary_bit_for_bit() -> None:
    """The attention's token-major rotation of q and k equals apply_rotary on the head-major views it replaced,
    exactly (so a checkpoint's outputs did not move), and leaves the value slice out."""
    cos, sin = rotary_tables(8, 6, 10000.0)
    qkv = torch.randn(3, 8, 3, 2, 6, generator=torch.Generator().manual_seed(0))  # [B, L, q/k/v, H, D/H]
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)
    rotated_q, rotated_k = rotate_queries_keys(qkv, cos, sin).permute(2, 0, 3, 1, 4)
    assert torch.equal(rotated_q, apply_rotary(q, cos, sin)) and torch.equal(rotated_k, apply_rotary(k, cos, sin))


def test_time_conditioning_uses_t_only_when_on() -> None:
    z = torch.full((2, L), MODEL.mask_id)
    z[:, 3] = 1
    t1, t2 = torch.tensor([0.1, 0.1]), torch.tensor([0.9, 0.9])
    with torch.no_grad():
        assert torch.equal(MODEL(z, t1), MODEL(z, t2))
        model = small_model(time_conditioning=True)
        for p in model.parameters():  # the modulation starts at zero: perturb it so t has an effect
            p.add_(0.05 * torch.randn_like(p))
        masked = z == model.mask_id
        assert (model(z, t1)[masked] - model(z, t2)[masked]).abs().max() > 1e-5
    with pytest.raises(ValueError, match="t is required"):
        model(z, None)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="exceeds the model's seq_len"):
        MODEL(torch.zeros(1, L + 1, dtype=torch.long), None)
    with pytest.raises(ValueError, match="token ids in"):
        MODEL(torch.full((1, 3), K + 1), None)
    with pytest.raises(ValueError, match="token ids in"):
        MODEL(torch.full((1, 3), -1), None)
    # shape errors: TypeCheckError from the runtime annotation checks in tests, ValueError without them
    with pytest.raises((ValueError, TypeCheckError)):
        MODEL(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3))


def test_config_validation_presets_and_round_trip() -> None:
    cfg = DenoiserConfig.preset("tiny", vocab_size=48, seq_len=64)
    assert cfg.mask_id == 48
    assert DenoiserConfig.from_dict(cfg.to_dict()) == cfg
    small = DenoiserConfig.preset("small", vocab_size=50257, seq_len=1024)
    assert small.d_model > cfg.d_model and small.n_layers > cfg.n_layers
    with pytest.raises(ValueError, match="size"):
        DenoiserConfig.preset("huge", 4, 4)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        DenoiserConfig(vocab_size=4, seq_len=4, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        DenoiserConfig(vocab_size=0, seq_len=4)
    with pytest.raises(ValueError, match="unknown keys"):
        DenoiserConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_initial_prediction_is_near_uniform() -> None:
    """Small init: an untrained model's masked-position loss is ≈ log K (a sanity check on init scale)."""
    z = torch.full((4, L), MODEL.mask_id)
    with torch.no_grad():
        log_probs = MODEL(z, None)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    assert abs(float(entropy) - math.log(K)) < 0.05
