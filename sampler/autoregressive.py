"""The autoregressive reference: the teacher's backbone with causal attention and a next-token loss.

A user who wants samples of text would otherwise train this model, so it is the yardstick a masked
diffusion teacher and its students are read against.  It reuses `TransformerDenoiser` with
`DenoiserConfig(causal=True)` (same embedding, blocks, rotary positions and head; parameter count
equal to the teacher's) and reads its logits directly, without the SUBS readout.

Inputs are the sequence shifted right by one with a start id in front: the model's extra input id
(`mask_id` = K, which a causal model never sees otherwise) serves as the start token, so

    log p(x) = Σ_l log softmax(head(h_l))[x_l],   h = hidden([K, x_0, …, x_{L−2}]),

and h_l depends on x_{<l} only.  `nll_per_sequence` is the exact −log p(x)/L: the AR model's recall.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .model import TransformerDenoiser
from .sampling import check_temperature


def check_autoregressive(model: TransformerDenoiser) -> None:
    """ValueError unless `model` was built with causal attention (DenoiserConfig(causal=True))."""
    if not getattr(getattr(model, "config", None), "causal", False):
        raise ValueError("model must be a TransformerDenoiser built with DenoiserConfig(causal=True) "
                         "(a bidirectional model would see the token it predicts)")


def shifted_inputs(x: Int[Tensor, "B L"], start_id: int) -> Int[Tensor, "B L"]:
    """[start_id, x_0, …, x_{L−2}] per row: position l of the input holds the token before x_l."""
    start = torch.full_like(x[:, :1], start_id)
    return torch.cat((start, x[:, :-1]), dim=1)


def token_log_probs(model: TransformerDenoiser, x: Int[Tensor, "B L"]) -> Float[Tensor, "B L"]:
    """log p(x_l | x_{<l}) at every position (float32 logits, log_softmax in float64)."""
    check_autoregressive(model)
    logits = model.logits(model.hidden(shifted_inputs(x, model.mask_id)))
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, x[..., None].long())[..., 0]


def next_token_loss(forward: Callable[[Tensor], Tensor], mask_id: int, x: Int[Tensor, "B L"]) -> Tensor:
    """The training loss: mean over tokens of −log p(x_l | x_{<l}) in nats/token.  `forward` is the causal
    model or its DDP / compiled wrapper (a causal model's forward returns next-token log-probs)."""
    log_probs = forward(shifted_inputs(x, mask_id))
    return -log_probs.float().gather(-1, x[..., None].long()).mean()


def nll_per_sequence(model: TransformerDenoiser, x: Int[Tensor, "B L"], batch_size: int = 256) -> Float[Tensor, " B"]:
    """−log p(x)/L of each row, exact (no bound), under no_grad, in chunks of `batch_size` rows."""
    with torch.no_grad():
        parts = [-token_log_probs(model, chunk).sum(dim=1) / x.shape[1] for chunk in x.split(batch_size)]
    return torch.cat(parts)


@torch.no_grad()
def sample(
    model: TransformerDenoiser, *, num_samples: int, seq_len: int, generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Int[Tensor, "N L"]:
    """Ancestral sampling x_l ~ softmax(logits_l / T), one position at a time (seq_len forward passes;
    categorical draws in float64)."""
    check_autoregressive(model)
    temperature = check_temperature(temperature)
    device = next(model.parameters()).device
    x = torch.zeros(num_samples, seq_len, dtype=torch.long)
    for position in range(seq_len):
        logits = model.logits(model.hidden(shifted_inputs(x[:, : position + 1], model.mask_id).to(device)))[:, -1]
        probs = torch.softmax(logits.double().cpu() / temperature, dim=-1)
        x[:, position] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return x


__all__ = ["check_autoregressive", "shifted_inputs", "token_log_probs", "nll_per_sequence", "next_token_loss", "sample"]
