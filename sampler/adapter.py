"""Bring your own denoiser: wrap any torch module that returns logits into a `sampler.Denoiser`.

The contract every sampler, evaluator and distiller here is written against (`sampler.protocols.Denoiser`):

    denoiser(z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K]

- z_t holds real tokens 0..K−1 and the mask id m (an id outside 0..K−1, conventionally m = K);
- t is the diffusion time in [0, 1] (α(t) = P(token visible at t) under the run's schedule);
- the output is a log-probability over the K real tokens only (no mask coordinate), normalised at
  every position, and SUBS-parameterised (MDLM): at a visible position l it is 0 on z_l and −inf
  elsewhere (the clean token is carried over).

`ModuleDenoiser(module, vocab_size, seq_len, mask_id)` turns a module returning raw logits of shape
(B, L, C) into that contract, with C = K (real tokens only) or C = K + 1 (class K is the mask class,
so mask_id must be K):

    log p(x0 = k | z_t)_l = logits_lk − logsumexp_{j<K} logits_lj        where z_l = m   (mask class dropped)
    log p(x0 = k | z_t)_l = 0 if k = z_l else −inf                        where z_l ≠ m   (carried over)

Before any sampling the constructor calls the module on two small probe batches (real tokens only;
then with the mask id) and raises ValueError naming `vocab_size`, `seq_len`, `mask_id`, `takes_time`
or `module` when the module fails on them or its output has the wrong shape, class count or NaNs.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from theory.checks import check_int

from .model import subs_log_probs

_PROBE_BATCH = 3  # rows of a probe input; not 1, so a (L, B)-for-(B, L) mix-up shows in the shape


@dataclass(frozen=True)
class ModuleDenoiserConfig:
    """What the samplers read from a denoiser's `config` (the fields a `DenoiserConfig` has too).

    `time_conditioning`: the module reads t (then the cached sampler, which assumes p(x0 | z_t)
    does not depend on t, is refused)."""

    vocab_size: int
    seq_len: int
    mask_id: int
    time_conditioning: bool
    output_classes: int  # K or K + 1, as the probe found


_positive_int = check_int


def subs_from_logits(
    logits: Float[Tensor, "B L C"], z: Int[Tensor, "B L"], vocab_size: int, mask_id: int
) -> Float[Tensor, "B L K"]:
    """SUBS log-probabilities over the K = vocab_size real tokens from logits over C = K or K + 1 classes.

    The mask class (index K when C = K + 1) is dropped before normalising, so it takes no probability:
    log p_k = logits_k − logsumexp_{j<K} logits_j at masked positions; visible positions carry z_l over
    (0 on z_l, −inf elsewhere).  Half-precision logits are promoted to float32; float64 stays float64.

    >>> z = torch.tensor([[0, 2]])                       # K = 2, mask id 2: position 1 masked
    >>> logits = torch.tensor([[[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]])
    >>> subs_from_logits(logits, z, 2, 2).exp()          # the mask logit 9.0 takes nothing
    tensor([[[1.0000, 0.0000],
             [0.5000, 0.5000]]])
    """
    if logits.shape[-1] not in (vocab_size, vocab_size + 1):
        raise ValueError(f"logits must have vocab_size={vocab_size} or vocab_size + 1 classes, got {logits.shape[-1]}")
    if logits.shape[-1] == vocab_size + 1 and mask_id != vocab_size:
        raise ValueError(f"with vocab_size + 1 = {vocab_size + 1} classes class {vocab_size} is the mask class, "
                         f"so mask_id must be {vocab_size}, got {mask_id}")
    real = logits[..., :vocab_size]
    if real.dtype != torch.float64:
        real = real.float()
    return subs_log_probs(real, z, mask_id)


class ModuleDenoiser(nn.Module):
    """A `sampler.Denoiser` made of your own torch module: logits over K or K + 1 classes -> SUBS log p(x0 | z_t).

    `module(z, t)` (or `module(z)` with takes_time=False) must return logits of shape
    (batch, length, vocab_size) or (batch, length, vocab_size + 1), the last class being the mask
    (then mask_id must be vocab_size).  t is the diffusion time in [0, 1]; a module that wants
    another time variable (σ(t), log-SNR) takes t and converts it itself.  The module is called on
    two probe batches here, before any sampling: a mismatch of the vocabulary, sequence length,
    mask id or output shape is a ValueError naming the argument.  The wrapper is an nn.Module
    (the module's parameters are its parameters), so it trains, moves between devices and is
    distilled (`sampler.distill_module`) like the project's own `TransformerDenoiser`.

    Example (a user network over the embedded source, K = 32, mask id 32, 33 output classes)::

        net = torch.nn.Sequential(torch.nn.Embedding(33, 16), torch.nn.Linear(16, 33))
        denoiser = ModuleDenoiser(net, vocab_size=32, seq_len=64, takes_time=False)
        log_p = denoiser(z, t)        # Float[B, L, 32], SUBS
    """

    def __init__(
        self, module: Callable[..., Any], vocab_size: int, seq_len: int, mask_id: int | None = None, takes_time: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        vocab_size = _positive_int(vocab_size, "vocab_size", 2)
        seq_len = _positive_int(seq_len, "seq_len")
        mask_id = vocab_size if mask_id is None else mask_id
        if isinstance(mask_id, bool) or not isinstance(mask_id, numbers.Integral) or 0 <= mask_id < vocab_size:
            raise ValueError(f"mask_id must be an int outside the real tokens 0..{vocab_size - 1} "
                             f"(conventionally vocab_size={vocab_size}), got {mask_id!r}")
        if not isinstance(takes_time, bool):
            raise ValueError(f"takes_time must be a bool, got {takes_time!r}")
        self.network = module  # not `.module`: sampler.train.runtime.unwrap strips a `.module` as a DDP wrapper
        classes = self._probe(vocab_size, seq_len, int(mask_id), takes_time)
        self.config = ModuleDenoiserConfig(vocab_size, seq_len, int(mask_id), takes_time, classes)

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def _call(self, z: Tensor, t: Tensor, takes_time: bool) -> Any:
        return self.network(z, t) if takes_time else self.network(z)

    @torch.no_grad()
    def _probe(self, vocab_size: int, seq_len: int, mask_id: int, takes_time: bool) -> int:
        """Call the module on real tokens only, then on an input holding the mask id; returns C (K or K + 1)."""
        device = next((p.device for p in self.network.parameters()), torch.device("cpu"))
        tokens = (torch.arange(_PROBE_BATCH * seq_len, device=device).reshape(_PROBE_BATCH, seq_len) * 7) % vocab_size
        tokens[:, -1] = vocab_size - 1  # the largest real id always appears
        masked = tokens.clone()
        masked[0] = mask_id  # an all-masked row, a half-masked row, a row with one mask
        masked[1, ::2] = mask_id
        masked[2, 0] = mask_id
        t = torch.tensor([1.0, 0.5, 0.25], device=device)
        where = (f"vocab_size={vocab_size}, seq_len={seq_len}, mask_id={mask_id}, takes_time={takes_time}: "
                 f"called as module({'z, t' if takes_time else 'z'}) with z of shape ({_PROBE_BATCH}, {seq_len})")
        classes = []
        for z, ids, suspect in ((tokens, f"token ids 0..{vocab_size - 1}", "vocab_size or seq_len"),
                                (masked, f"token ids and mask_id={mask_id}", "mask_id")):
            try:
                logits = self._call(z, t, takes_time)
            except TypeError as err:
                raise ValueError(f"module could not be called ({where}); check takes_time: {err}") from err
            except (IndexError, RuntimeError, ValueError) as err:
                raise ValueError(f"module failed on a probe input of {ids} ({where}); check {suspect}: {err}") from err
            classes.append(_check_probe_output(logits, z, vocab_size, mask_id))
        if classes[0] != classes[1]:
            raise ValueError(f"module returns {classes[0]} classes without masks but {classes[1]} with them")
        return classes[0]

    def forward(self, z: Int[Tensor, "B L"], t: Float[Tensor, "B"]) -> Float[Tensor, "B L K"]:
        """log p(x0 | z_t) over the K real tokens, SUBS-parameterised (see the module docstring)."""
        cfg = self.config
        _check_denoiser_input(z, t, cfg)
        logits = self._call(z, t, cfg.time_conditioning)
        expected = (z.shape[0], z.shape[1], cfg.output_classes)
        if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"module output must have shape {expected} (as on the probe), got {got}")
        return subs_from_logits(logits, z, cfg.vocab_size, cfg.mask_id)


def _check_denoiser_input(z: Any, t: Any, cfg: ModuleDenoiserConfig) -> None:
    """ValueError naming z or t unless z is an integer (B, L <= seq_len) tensor of ids in 0..K−1 or the mask
    id, and t a floating tensor of shape (B,).  Cheap: dtype and shape reads and one pass over z's ids."""
    if not isinstance(z, Tensor) or z.is_floating_point() or z.is_complex() or z.dtype == torch.bool:
        raise ValueError(f"z must be an integer tensor of token ids, got {getattr(z, 'dtype', type(z).__name__)}")
    if z.dim() != 2 or z.shape[1] > cfg.seq_len:
        raise ValueError(f"z must have shape (batch, length <= {cfg.seq_len}), got {tuple(z.shape)}")
    if not isinstance(t, Tensor) or not t.is_floating_point() or tuple(t.shape) != (z.shape[0],):
        got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be a floating tensor of shape (batch,) = ({z.shape[0]},), one time per row of z; got {got}")
    outside = ((z < 0) | (z >= cfg.vocab_size)) & (z != cfg.mask_id)
    if bool(outside.any()):
        raise ValueError(f"z holds id {int(z[outside][0])}, neither a real token 0..{cfg.vocab_size - 1} nor mask_id={cfg.mask_id}")


def _check_probe_output(logits: Any, z: Tensor, vocab_size: int, mask_id: int) -> int:
    """The class count C of a probe output; ValueError on a non-tensor, a wrong shape or class count, NaN,
    or a masked position where every real token has probability 0."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(f"module must return a floating-point tensor of logits, got {type(logits).__name__}"
                         + (f" of dtype {logits.dtype}" if isinstance(logits, Tensor) else ""))
    batch, length = z.shape
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (batch, length):
        raise ValueError(f"module output must have shape (batch, length, classes) = ({batch}, {length}, "
                         f"{vocab_size} or {vocab_size + 1}), got {tuple(logits.shape)}")
    classes = logits.shape[-1]
    if classes not in (vocab_size, vocab_size + 1):
        raise ValueError(f"module returns {classes} classes per position; vocab_size={vocab_size} needs "
                         f"{vocab_size} (real tokens) or {vocab_size + 1} (real tokens, then the mask class)")
    if classes == vocab_size + 1 and mask_id != vocab_size:
        raise ValueError(f"module returns vocab_size + 1 = {classes} classes, so class {vocab_size} is the mask "
                         f"class and mask_id must be {vocab_size}, got mask_id={mask_id}")
    if torch.isnan(logits).any():
        raise ValueError("module output holds NaN on the probe input")
    dead = (logits[..., :vocab_size] == float("-inf")).all(-1) & (z == mask_id)
    if dead.any():
        raise ValueError("module gives every real token logit −inf at a masked position of the probe input")
    return classes


__all__ = ["ModuleDenoiser", "ModuleDenoiserConfig", "subs_from_logits"]
