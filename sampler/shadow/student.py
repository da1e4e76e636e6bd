"""The noise-conditioned ("shadow") student: a TransformerDenoiser that also reads the shadow noise.

At every position masked in z_t the student adds to the token embedding

    offset_l = MLP(φ(c_l), φ(τ_l), φ(t − τ_l))  +  E_draft[d_l],

where c_l is the token's category noise, τ_l its reveal time (visible at time t iff t < τ_l, from the
coupling: τ = α⁻¹(u) for reveal noise u), φ(v) = [v, sin(πkv), cos(πkv) for k = 1..F] (scalar Fourier
features; F = `fourier_features`), and d_l the token's *provisional value*: the sorted-quantile draw at
c_l of the student's own noise-free prediction p(· | z_t) (one extra forward pass without the noise
input, no gradient).  The draft is what the noise-shared rollout would reveal at the first sub-step,
so the network refines drafts instead of learning sharp thresholds of c against a CDF.  Visible positions
get no offset.  No K-dimensional input: the cost at any K is one MLP on 3(2F + 1) scalars per token, one
embedding lookup and (with drafts) one more trunk pass and a sorted-quantile draw.

The last MLP layer and E_draft are zero-initialised, so a fresh student computes exactly the
teacher's function (its base network holds the teacher's weights); a student whose noise weights are
all zero skips the noise input outside training (the same output, less work; while training the zero
offset is computed, since the gradient that moves those weights flows through it).

`ShadowConfig(head="causal")` replaces that input by `sampler.shadow.causal_head.CausalNoiseHead`: the base runs
once without noise, and a small attention stack adds to its final hidden state at masked l a term that
reads only (z_t, t, all τ) and {c_j, d_j : τ_j > τ_l}; the noise-shared sampler's law then has a sequential
importance bound (`sampler.shadow.recall`).  "input" (the default) is the head described above.

`ablation` switches the noise input for experiments: "none" (normal), "zero" (no noise input: the base
network alone, the per-token-independent floor), "fresh" (the features read an independent category noise
drawn from `ablation_seed`, the true reveal noise, while the sampler still draws at the true c: the
quantile at a fresh uniform).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from sampler.checkpoint import CheckpointError, load_checkpoint, load_schedule, model_weights
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.shadow.causal_head import CausalNoiseHead, fourier_features
from sampler.shadow.noise import (
    ShadowNoise,
    noise_shared_sample,
    sample_shadow_noise,
    shadow_coupling,
    sorted_quantile_draw,
)

from ..protocols import Denoiser, NoiseConditionedDenoiser, Schedule
from ..sampling import check_seed

ABLATIONS = ("none", "zero", "fresh")
HEADS = ("input", "causal")
SCALARS = 3  # c, τ, t − τ


@dataclass(frozen=True)
class ShadowConfig:
    """Shape of the noise input: Fourier frequencies per scalar, MLP width, drafts on/off, and the head:
    "input" (noise features added to the token embeddings; the law is intractable) or "causal" (a small
    attention stack over the base's final hidden states that reads only the noise of tokens revealed
    earlier, `sampler.shadow.causal_head`; width, layers and heads below)."""

    fourier_features: int = 8
    hidden: int = 128
    draft: bool = True
    head: str = "input"
    causal_width: int = 64
    causal_layers: int = 2
    causal_heads: int = 4

    def __post_init__(self) -> None:
        for name in ("fourier_features", "hidden", "causal_width", "causal_layers", "causal_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.draft, bool):
            raise ValueError(f"draft must be a bool, got {self.draft!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.causal_width % self.causal_heads:
            raise ValueError(f"causal_width={self.causal_width} must be a multiple of causal_heads={self.causal_heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShadowConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"shadow config has unknown keys {sorted(unknown)}")
        return cls(**d)


class ShadowStudent(nn.Module):
    """log p(x0 | z_t, t, noise) over the K real tokens; see the module docstring."""

    reads_shadow_noise = True

    def __init__(self, config: DenoiserConfig, shadow: ShadowConfig, schedule: Schedule):
        super().__init__()
        self.config = config
        self.shadow = shadow
        self.schedule = schedule
        self.base = TransformerDenoiser(config)
        if shadow.head == "causal":
            self.causal = CausalNoiseHead(config, shadow.fourier_features, shadow.causal_width, shadow.causal_layers,
                                          shadow.causal_heads, shadow.draft)
        else:
            width = SCALARS * (2 * shadow.fourier_features + 1)
            self.noise_mlp = nn.Sequential(nn.Linear(width, shadow.hidden), nn.GELU(), nn.Linear(shadow.hidden, config.d_model))
            nn.init.zeros_(self.noise_mlp[2].weight)
            nn.init.zeros_(self.noise_mlp[2].bias)
            self.draft_embed = nn.Embedding(config.vocab_size, config.d_model) if shadow.draft else None
            if self.draft_embed is not None:
                nn.init.zeros_(self.draft_embed.weight)
        self.ablation = "none"
        self.ablation_seed = 0
        self.reveal_method = "uniform"  # the coupling its sampling noise is drawn with (from the checkpoint's meta)
        self.draw = "quantile"  # "argmax" for a design-B student (from the checkpoint's meta)
        self._couplings: dict[tuple[int, str], Any] = {}

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def noise_weights_zero(self) -> bool:
        """True while every weight that carries the noise into the network is zero (the student is its base)."""
        if self.shadow.head == "causal":
            return self.causal.output_is_zero()
        last = self.noise_mlp[2]
        zero = not bool(last.weight.any()) and not bool(last.bias.any())
        return zero and (self.draft_embed is None or not bool(self.draft_embed.weight.any()))

    def reveal_times(self, noise: ShadowNoise) -> Float[Tensor, "B L"]:
        """τ per token from the coupling (clamped to [0, 1]; float64)."""
        key = (noise.vocab_size, noise.method)
        if key not in self._couplings:
            self._couplings[key] = shadow_coupling(self.schedule, noise.vocab_size, self.mask_id, noise.method)
        return self._couplings[key].unmask_time(noise.reveal).clamp(0.0, 1.0)

    def _features_noise(self, noise: ShadowNoise) -> ShadowNoise:
        """The noise the features read: `noise`, or under ablation "fresh" the same reveal noise with an
        independent category noise drawn from ablation_seed."""
        if self.ablation != "fresh":
            return noise
        generator = torch.Generator(device=noise.device).manual_seed(self.ablation_seed)
        category = torch.rand(noise.shape, dtype=torch.float64, device=noise.device, generator=generator)
        return ShadowNoise(noise.reveal, category.clamp_(min=torch.finfo(torch.float64).tiny), noise.method, noise.vocab_size)

    def noise_offset(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"], noise: ShadowNoise) -> Float[Tensor, "B L D"]:
        """The embedding offset at masked positions (zero at visible ones)."""
        noise = self._features_noise(noise)
        tau = self.reveal_times(noise).to(z.device)
        gap = t.double().to(z.device).unsqueeze(-1) - tau
        scalars = torch.stack((noise.category.to(z.device), tau, gap), dim=-1)
        features = fourier_features(scalars, self.shadow.fourier_features).flatten(-2)
        offset = self.noise_mlp(features)
        if self.draft_embed is not None:
            with torch.no_grad():
                marginals = self.base(z, t.float())
            masked = z == self.mask_id
            draft = torch.zeros_like(z)
            draft[masked] = sorted_quantile_draw(marginals[masked], noise.category.to(z.device)[masked])
            offset = offset + self.draft_embed(draft)
        return offset * (z == self.mask_id).unsqueeze(-1).to(offset.dtype)

    def forward(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"], *, noise: Any) -> Float[Tensor, "B L K"]:
        """log p(x0 | z_t, t, noise); noise: the ShadowNoise of the batch (typed Any so a wrong value reaches the ValueError)."""
        check_noise_for(noise, z, "noise")
        skip = self.ablation == "zero" or (not (self.training and torch.is_grad_enabled()) and self.noise_weights_zero())
        if skip:  # the offset would be exactly zero (or is switched off); while training it is kept for its gradient
            return self.base(z, t)
        if self.shadow.head == "causal":
            hidden = self.base.hidden(z, t)
            return self.base.readout(hidden + self.causal_delta(z, t, noise, hidden), z)
        return self.base(z, t, input_offset=self.noise_offset(z, t, noise))

    def causal_delta(
        self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"], noise: ShadowNoise, hidden: Float[Tensor, "B L D"],
        base_log_probs: Float[Tensor, "B L K"] | None = None,
    ) -> Float[Tensor, "B L D"]:
        """Δ of the causal head (zero at visible positions) from the base's hidden states at (z_t, t): drafts
        d_j = sorted_quantile_draw(base log-probs at j, c_j) at masked j (base_log_probs = readout(hidden)
        when not given), then `sampler.shadow.causal_head.CausalNoiseHead`."""
        noise = self._features_noise(noise)
        masked = z == self.mask_id
        category = noise.category.to(z.device)
        if base_log_probs is None:
            with torch.no_grad():
                base_log_probs = self.base.readout(hidden.detach(), z)
        draft = torch.zeros_like(z)
        if self.shadow.draft and bool(masked.any()):
            draft[masked] = sorted_quantile_draw(base_log_probs.detach()[masked], category[masked])
        tau = self.reveal_times(noise).to(z.device)
        return self.causal(hidden, masked, t.to(z.device), tau, category, draft)


def check_noise_for(noise: Any, z: Tensor, name: str = "noise") -> None:
    """ValueError unless `noise` is a ShadowNoise of z's shape on z's device."""
    if not isinstance(noise, ShadowNoise):
        raise ValueError(f"{name} must be a ShadowNoise, got {type(noise).__name__}")
    if noise.shape != tuple(z.shape):
        raise ValueError(f"{name} has shape {noise.shape} but z has shape {tuple(z.shape)}")
    if noise.device != z.device:
        raise ValueError(f"{name} is on {noise.device} but z is on {z.device}")


def set_ablation(student: ShadowStudent, ablation: str, seed: int = 0) -> None:
    """Switch the student's noise input: "none", "zero" or "fresh" (module docstring)."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    student.ablation, student.ablation_seed = ablation, int(seed)


def shadow_student_from_teacher(
    teacher_weights: dict[str, Tensor], config: DenoiserConfig, shadow: ShadowConfig, schedule: Schedule, seed: int = 0,
) -> ShadowStudent:
    """A fresh ShadowStudent whose base holds the teacher's weights (strict): at init it is the teacher.  The
    random first MLP layer is drawn from `seed` (the global RNG is left as it was), so a run is a function of its seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = ShadowStudent(config, shadow, schedule)
    student.base.load_state_dict(teacher_weights, strict=True)
    return student


# ---------------------------------------------------------------------------
# checkpoints and sampling


def is_shadow_meta(meta: dict[str, Any]) -> bool:
    """Whether a checkpoint's meta describes a shadow student (it needs the noise-shared sampler)."""
    return isinstance(meta.get("shadow"), dict)


def load_shadow_student(run_dir: Any, device: Any = "cpu", use_ema: bool = True) -> tuple[ShadowStudent, dict[str, Any]]:
    """(ShadowStudent in eval mode on `device`, meta) from a `mcd distill --method shadow` run; EMA weights
    when present and asked for.  CheckpointError when the checkpoint is not a shadow student or does not fit."""
    tensors, meta = load_checkpoint(run_dir)
    return shadow_student_from_checkpoint(tensors, meta, str(run_dir), device, use_ema), meta


def shadow_student_from_checkpoint(tensors: dict[str, Tensor], meta: dict[str, Any], where: str, device: Any = "cpu",
                                   use_ema: bool = True) -> ShadowStudent:
    """The ShadowStudent (eval mode, on `device`, its reveal method and draw from the meta) of a loaded checkpoint."""
    if not is_shadow_meta(meta):
        raise CheckpointError(f"checkpoint at {where!r} is not a shadow student (no 'shadow' entry in its meta)")
    try:
        student = ShadowStudent(DenoiserConfig.from_dict(meta["model_config"]),
                                ShadowConfig.from_dict(meta["shadow"]["config"]), load_schedule(meta))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint at {where!r} has an invalid shadow student description: {err}") from err
    try:
        student.load_state_dict(model_weights(tensors, use_ema), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint at {where!r} does not match its shadow student config: {err}") from err
    student.reveal_method = meta["shadow"].get("reveal_method", "uniform")
    student.draw = meta["shadow"].get("draw", "quantile")
    return student.to(device).eval()


class ArgmaxShadowDenoiser:
    """A design-B student as the noise-shared sampler's denoiser: log of the one-hot at the student's argmax
    (lowest id on ties), so the sorted-quantile draw at any c returns the argmax and c is read only as input."""

    reads_shadow_noise = True

    def __init__(self, student: ShadowStudent):
        self.student = student
        self.config = student.config

    def __call__(self, z: Tensor, t: Tensor, *, noise: Any) -> Tensor:
        log_probs = self.student(z, t, noise=noise)
        one_hot = torch.full_like(log_probs, float("-inf"))
        return one_hot.scatter_(-1, log_probs.argmax(-1, keepdim=True), 0.0)


def check_argmax_temperature(student: Any, temperature: Any, name: str = "temperature") -> None:
    """ValueError naming `name` for a temperature other than 1 with a hard-target (design B) student: it draws
    every token by argmax, so a temperature would change nothing while being reported as if it had."""
    if getattr(student, "draw", None) == "argmax" and temperature != 1:
        raise ValueError(f"{name}={temperature!r} is not available for a hard-target (design B) shadow student: it "
                         "draws every token by argmax, so the output would not depend on it; use temperature 1")


def shadow_sample(
    student: Denoiser | NoiseConditionedDenoiser, schedule: Schedule, *, num_steps: int, num_samples: int, seq_len: int, seed: int,
    temperature: float = 1.0,
    method: str | None = None, device: Any = "cpu", batch_size: int = 256, fixed: Int[Tensor, "N L"] | None = None,
) -> Int[Tensor, "N L"]:
    """num_samples sequences from the noise-shared sampler (a student whose `draw` is "argmax", design B, through
    ArgmaxShadowDenoiser): ShadowNoise (reveal `method`, default the student's reveal_method) drawn from `seed` on the CPU (the same noise on any device, paired across samplers), moved to
    `device`, then noise_shared_sample."""
    seed = check_seed(seed)
    check_argmax_temperature(student, temperature)
    config = student.config
    method = getattr(student, "reveal_method", "uniform") if method is None else method
    if getattr(student, "draw", "quantile") == "argmax":
        student = ArgmaxShadowDenoiser(student)
    noise = sample_shadow_noise(num_samples, seq_len, schedule, config.vocab_size, config.mask_id,
                                torch.Generator().manual_seed(seed), method=method)
    if torch.device(device).type != "cpu":
        noise = noise.to(device)
    return noise_shared_sample(student, schedule, num_steps=num_steps, noise=noise, mask_id=config.mask_id, vocab_size=config.vocab_size,
                               temperature=temperature, fixed=fixed, batch_size=batch_size)
