"""The arms of `mcd bench-distill`: a registry name -> (what to train, how to sample), one entry per arm.

An `Arm` says how to train one run per training seed (`train(arm, config, teacher_dir, seed) -> cost record`),
how to load the trained sampler's denoiser (`load`) and how to draw from it (`sample`), how its recall is
measured (`recall`: True for a per-token-independent ancestral sampler, whose law the reveal-pattern bound of
sampler.quality.recall covers; a `RecallFn` for a sampler with its own bound; False with `no_recall_reason`
where none exists, reported as unavailable with that reason), at which step counts it is evaluated
(`cut`: the paper's framing, student at its target count against the teacher at its start count) and which
arms it is compared with, paired per training seed (`compare_to`).  Adding an arm is one `register(Arm(...))`.

Arms (every student starts as the teacher; same rounds, optimiser steps, batch and lr unless said):
- `mcd`, `baseline`: MCD and the stochastic baseline with the bench's divergence (reverse KL by default);
- `mcd-fkl`, `baseline-fkl`: the same with forward KL (its fixed point is the teacher's marginal, so
  what the reverse-KL arms gain beyond it is sharpening);
- `mcd-noce`: MCD without the cross-entropy term (divergence on still-masked tokens only);
- `more-training`: no distillation, the teacher trained further with its own ELBO for the same optimiser
  steps, batch and lr as a student (a copy of the teacher run, resumed; the training seed picks the data stream);
- `mcd-equal-compute`: MCD with twice the batch, so it reads the teacher on as many sequences as the baseline
  (2 passes × B): equal teacher compute at equal optimiser steps and the same round schedule (doubling the
  steps instead would also double the refresh interval and the student's own compute);
- `paper-1024-64`, `paper-256-16` and `paper-baseline-1024-64`, `paper-baseline-256-16`: the paper's 16× cuts,
  MCD and baseline students distilled from 1024 (256) to 64 (16) steps, evaluated at 64 (16) steps against
  the teacher at 1024 (256);
- `shadow-soft`, `shadow-hard`: the noise-conditioned shadow student (sampler.train.shadow), design A (forward
  KL to the teacher's conditional at each token's reveal) and design B (cross-entropy to the rollout's
  endpoint, sampled by argmax), on the bench's rounds with `SHADOW_SUBSTEPS` = 2 teacher sub-steps per student
  step (so one round halves the step count), teacher passes counted.  They are sampled by the noise-shared
  sampler (`noise_shared`, noise from the bench's sampler seed) and always trained with the "uniform"
  coupling: the shadow step needs a per-token reveal noise and the noise-shared sampler of the checkpoint
  draws it by that method, whatever the bench's --coupling (default "threshold", which the MCD arms use; its
  "gaussian" has no per-token reveal noise).  Their recall is unavailable: the input head feeds every token's
  noise to every token, so the sampler's law is not tractable;
- `shadow-causal`: design A with the causal noise head (sampler.shadow.causal_head: a token reads only the noise of
  tokens revealed before it), whose recall is the sequential importance bound
  (sampler.shadow.recall); `paper-shadow-1024-64`, `paper-shadow-256-16`: the same on the paper's
  16× cuts.  The shadow arms are not in the default arms (time).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..configs import BUILTIN_ARM_CUTS, check_arm_names
from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint, load_source
from ..data import DataSource
from ..protocols import Denoiser, NoiseConditionedDenoiser, Schedule
from ..quality.two_axis import recall_bound_per_sequence
from ..sampling import ancestral_sample
from ..shadow.student import shadow_sample
from ..train import DistillConfig, TrainConfig, distill, train
from ..train.distill import round_step_counts, teacher_weights_digest
from .open import open_run

if TYPE_CHECKING:
    from .bench import BenchConfig

TrainFn = Callable[["Arm", "BenchConfig", Path, int], dict[str, Any]]
# recall(denoiser, schedule, heldout, *, steps, temperatures, k, generator, device) -> per-sequence bound [T, M]
# (nats/token, one row per temperature), the signature of sampler.quality.recall.recall_per_sequence
RecallFn = Callable[..., Float[Tensor, "T M"]]

SHADOW_SUBSTEPS = 2  # teacher sub-steps per shadow-student step: one round halves the step count
SHADOW_COUPLING = "uniform"  # per-token reveal noise, the noise-shared sampler's default method
NOISE_CONDITIONED_NO_RECALL = (
    "noise-conditioned sampler: its law is not a product of per-token conditionals over a token-independent "
    "reveal pattern, so the reveal-pattern bound does not apply (the sequential bound needs the causal head: "
    "arm shadow-causal)")


def load_student(run_dir: Path, device: str) -> Denoiser:
    """The run's EMA denoiser (eval mode), opened by sampler.run.open; ValueError when the run is of another kind."""
    return _open_kind(run_dir, device, "denoiser")


def load_shadow(run_dir: Path, device: str) -> NoiseConditionedDenoiser:
    """The run's EMA shadow student (eval mode; its checkpoint records its reveal method and draw)."""
    return _open_kind(run_dir, device, "shadow")


def _open_kind(run_dir: Path, device: str, kind: str) -> Any:
    run = open_run(run_dir, device, use_ema=True)
    if run.kind.name != kind:
        raise CheckpointError(f"checkpoint at {str(run_dir)!r} is a {run.kind.name!r} run; this arm reads a {kind!r} run")
    return run.model


@torch.no_grad()
def noise_shared(student: NoiseConditionedDenoiser, schedule: Schedule, steps: int, num_samples: int, seq_len: int, temperature: float,
                 seed: int, device: str) -> Int[Tensor, "N L"]:
    """`num_samples` draws of the noise-shared sampler (sampler.shadow.student.shadow_sample: ShadowNoise from the
    sampler seed `seed`, the student's recorded reveal method and draw) at `steps` steps and `temperature`."""
    return shadow_sample(student, schedule, num_steps=steps, num_samples=num_samples, seq_len=seq_len, seed=seed, temperature=temperature, device=device, batch_size=256)


@torch.no_grad()
def ancestral(denoiser: Denoiser, schedule: Schedule, steps: int, num_samples: int, seq_len: int, temperature: float,
              seed: int, device: str) -> Int[Tensor, "N L"]:
    """`num_samples` ancestral samples at `steps` steps and `temperature`, from the sampler seed `seed`
    (every sampler of a bench draws from the same seed: paired comparisons)."""
    config = getattr(denoiser, "config", None)
    cached = config is not None and not config.time_conditioning
    # a model, or the exact denoiser (or a floor wrapper of it, whose config only says it reads t)
    vocab_size = getattr(config, "vocab_size", None) or denoiser.vocab_size
    return ancestral_sample(denoiser, schedule, num_steps=steps, num_samples=num_samples, seq_len=seq_len, mask_id=denoiser.mask_id, vocab_size=vocab_size,
                            generator=torch.Generator().manual_seed(seed), temperature=temperature, cached=cached,
                            device=device, batch_size=256)


@dataclass(frozen=True)
class Arm:
    name: str
    summary: str
    train: TrainFn
    method: str = "mcd"
    divergence: str | None = None  # None: the bench's --divergence
    no_cross_entropy: bool = False
    batch_multiplier: int = 1
    cut: tuple[int, int] | None = None  # (start, target) steps of the paper's framing; None: the bench's own
    compare_to: tuple[str, ...] = ()  # arms this one is compared with (paired, same training seed)
    load: Callable[[Path, str], Any] = load_student
    sample: Callable[..., torch.Tensor] = ancestral
    recall: RecallFn | bool = True  # True: the reveal-pattern bound (per-token-independent ancestral sampler)
    no_recall_reason: str = ""  # why recall is unavailable (required when recall is False)
    coupling: str | None = None  # None: the bench's --coupling
    shadow_target: str = "soft"  # method "shadow": design A ("soft") or B ("hard")
    shadow_head: str = "input"  # method "shadow": how the student reads the noise ("input" or "causal")

    def __post_init__(self) -> None:
        if not (isinstance(self.recall, bool) or callable(self.recall)):
            raise ValueError(f"arm {self.name!r}: recall must be a bool or a recall function, got {self.recall!r}")
        if self.recall is False and not self.no_recall_reason:
            raise ValueError(f"arm {self.name!r}: recall=False needs no_recall_reason (it is reported in bench.json)")

    def recall_fn(self) -> RecallFn | None:
        """The arm's recall function (None: unavailable, see `no_recall_reason`)."""
        if self.recall is True:
            return recall_bound_per_sequence
        return self.recall or None

    def run_name(self, seed: int) -> str:
        return f"{self.name}-seed{seed}"

    def start_target(self, config: "BenchConfig") -> tuple[int, int]:
        return self.cut if self.cut is not None else (config.start_steps, config.target_steps)

    def student_steps(self, config: "BenchConfig") -> tuple[int, ...]:
        """Step counts the arm's samplers are evaluated at."""
        return (self.cut[1],) if self.cut is not None else tuple(config.eval_steps)


def train_distilled(arm: Arm, config: "BenchConfig", teacher_dir: Path, seed: int) -> dict[str, Any]:
    """One distillation run (sampler.train.distill; reused when finished): its cost record, with the coupling it
    was trained with (the arm's own, e.g. "uniform" for the shadow arms, else the bench's --coupling)."""
    start, target = arm.start_target(config)
    coupling = arm.coupling or config.coupling
    out = Path(config.out) / arm.run_name(seed)
    # temperature: the bench's own setting (BenchConfig.temperature, off unless --temperature-schedule), passed
    # explicitly so DistillConfig's default never decides an arm; resume: an arm's existing run is continued
    return {"coupling": coupling, **distill(DistillConfig(
        teacher=str(teacher_dir), out=str(out), method=arm.method, resume=checkpoint_path(out).is_file(),
        coupling=coupling, shadow_target=arm.shadow_target, shadow_head=arm.shadow_head, shadow_substeps=SHADOW_SUBSTEPS,
        divergence=arm.divergence or config.divergence, start_steps=start,
        target_steps=target, steps_per_round=config.steps_per_round, batch_size=config.batch_size * arm.batch_multiplier,
        lr=config.lr, temperature=config.temperature, seed=seed, device=config.device, progress=config.progress,
        save_every=max(50, config.steps_per_round), log_every=10, no_cross_entropy=arm.no_cross_entropy,
    ))}


def seeded_data(source: DataSource, seed: int) -> DataSource:
    """A shallow copy of the source whose sample_batch ignores the caller's generator and draws from a
    training-seed stream (a resumed teacher run restores the teacher's own data generator; this gives each
    training seed its own data).  The copy describes itself as the source does (so the resume check passes)."""
    stream = torch.Generator().manual_seed(31_337 + 1_000_003 * seed)
    draw = source.sample_batch
    clone = copy.copy(source)
    clone.sample_batch = lambda n, seq_len=None, generator=None: draw(n, seq_len, stream)
    return clone


MORE_TRAINING_ORIGIN = "bench_origin.json"  # what a more-training run was made from (teacher digest, settings)


def _more_training_origin(teacher_tensors: dict, teacher_meta: dict, config: "BenchConfig", seed: int, goal: int) -> dict:
    """The facts a reused more-training run must share with this bench: the teacher's weights digest and step,
    and the settings its continuation trains with."""
    return {"teacher_weights_digest": teacher_weights_digest(teacher_tensors), "teacher_step": int(teacher_meta["step"]),
            "goal": goal, "batch_size": config.batch_size, "lr": config.lr, "seed": seed}


def _check_more_training_origin(out: Path, origin: dict) -> None:
    """ValueError unless `out` records (MORE_TRAINING_ORIGIN) that it was made from this teacher and these settings."""
    path = out / MORE_TRAINING_ORIGIN
    recorded = json.loads(path.read_text()) if path.is_file() else None
    if recorded != origin:
        differing = sorted(k for k in origin if not isinstance(recorded, dict) or recorded.get(k) != origin[k])
        what = f"it differs in {differing}" if isinstance(recorded, dict) else f"it has no {MORE_TRAINING_ORIGIN}"
        raise ValueError(f"{str(out)!r} cannot be reused: it was not shown to be made from this teacher and settings "
                         f"({what}); remove it or choose another --out")


def train_more(arm: Arm, config: "BenchConfig", teacher_dir: Path, seed: int) -> dict[str, Any]:
    """The teacher run copied and resumed with its ELBO for as many optimiser steps as a student of the bench's
    own rounds (same batch, lr and EMA decay as the students); reused when it already reached them."""

    out = Path(config.out) / arm.run_name(seed)
    teacher_tensors, teacher_meta = load_checkpoint(teacher_dir)
    extra = len(round_step_counts(config.start_steps, config.target_steps)) * config.steps_per_round
    goal = int(teacher_meta["step"]) + extra
    origin = _more_training_origin(teacher_tensors, teacher_meta, config, seed, goal)
    if checkpoint_path(out).is_file():
        _check_more_training_origin(out, origin)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / MORE_TRAINING_ORIGIN).write_text(json.dumps(origin, sort_keys=True) + "\n")
        for item in Path(teacher_dir).iterdir():
            if item.is_file() and item.name not in ("metrics.jsonl", ".lock"):
                shutil.copy2(item, out / item.name)
    done = int(load_checkpoint(out)[1]["step"])
    summary: dict[str, Any] = {"seconds": 0.0}
    if done < goal:
        # the students' optimiser settings on purpose: allowed changes, recorded in the run's meta["resumes"]
        stored = teacher_meta.get("train_config") or {}
        cfg = TrainConfig(out=str(out), data="exact", resume=True, max_steps=goal, batch_size=config.batch_size,
                          seq_len=stored.get("seq_len"), allow_changed=("batch_size", "lr", "ema_decay", "warmup", "seed"),
                          lr=config.lr, ema_decay=0.99, warmup=0, seed=seed, device=config.device,
                          progress=config.progress, eval_every=10**9, save_every=max(50, config.steps_per_round),
                          minutes=None)
        summary = train(cfg, source=seeded_data(load_source(teacher_meta), seed))
    interrupted = bool(summary.get("interrupted", False))
    return {"optimizer_steps": extra, "teacher_forward_passes": 0, "teacher_sequence_evals": 0,
            "wall_time_s": float(summary.get("seconds", 0.0)), "complete": not interrupted, "interrupted": interrupted}


ARMS: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
    """Add an arm to the registry (its name must be new)."""
    if arm.name in ARMS:
        raise ValueError(f"arm {arm.name!r} is already registered")
    ARMS[arm.name] = arm
    return arm


def check_arms(names: Any) -> tuple[str, ...]:
    """The arm names as a tuple; ValueError naming --arms on an empty list or a name not registered."""
    return check_arm_names(names, {name: arm.cut for name, arm in ARMS.items()})


for _arm in (
    Arm("mcd", "MCD (CE where z_s revealed x0, divergence to the teacher at (z_s, s) elsewhere)", train_distilled,
        compare_to=("baseline", "more-training", "mcd-noce", "mcd-fkl")),
    Arm("baseline", "stochastic baseline (targets from the teacher's two half-steps)", train_distilled, method="baseline",
        compare_to=("more-training",)),
    Arm("mcd-fkl", "MCD with forward KL", train_distilled, divergence="forward_kl", compare_to=("baseline-fkl", "more-training")),
    Arm("baseline-fkl", "baseline with forward KL", train_distilled, method="baseline", divergence="forward_kl"),
    Arm("mcd-noce", "MCD without the cross-entropy term", train_distilled, no_cross_entropy=True,
        compare_to=("more-training",)),
    Arm("more-training", "no distillation: the teacher trained further with its ELBO, same steps and batch", train_more),
    Arm("mcd-equal-compute", "MCD at 2x batch: the baseline's teacher sequence evaluations", train_distilled,
        batch_multiplier=2, compare_to=("baseline", "mcd")),
    Arm("paper-1024-64", "paper's framing: MCD 1024 -> 64 steps", train_distilled, cut=(1024, 64),
        compare_to=("paper-baseline-1024-64",)),
    Arm("paper-256-16", "paper's framing: MCD 256 -> 16 steps", train_distilled, cut=(256, 16),
        compare_to=("paper-baseline-256-16",)),
    Arm("paper-baseline-1024-64", "paper's framing: baseline 1024 -> 64 steps", train_distilled, method="baseline",
        cut=(1024, 64)),
    Arm("paper-baseline-256-16", "paper's framing: baseline 256 -> 16 steps", train_distilled, method="baseline",
        cut=(256, 16)),
    Arm("shadow-soft", "shadow student, design A (forward KL to the teacher at each reveal; noise-shared sampler)",
        train_distilled, method="shadow", coupling=SHADOW_COUPLING, shadow_target="soft", compare_to=("mcd", "baseline"),
        load=load_shadow, sample=noise_shared, recall=False, no_recall_reason=NOISE_CONDITIONED_NO_RECALL),
    Arm("shadow-hard", "shadow student, design B (CE to the rollout's endpoint, argmax; noise-shared sampler)",
        train_distilled, method="shadow", coupling=SHADOW_COUPLING, shadow_target="hard", compare_to=("mcd", "baseline"),
        load=load_shadow, sample=noise_shared, recall=False, no_recall_reason=NOISE_CONDITIONED_NO_RECALL),
    Arm("shadow-causal", "shadow student, design A with the causal noise head (sequential recall bound)",
        train_distilled, method="shadow", coupling=SHADOW_COUPLING, shadow_head="causal", compare_to=("mcd", "baseline"),
        load=load_shadow, sample=noise_shared, recall=recall_bound_per_sequence),
    Arm("paper-shadow-1024-64", "paper's framing: causal shadow student 1024 -> 64 steps", train_distilled,
        method="shadow", coupling=SHADOW_COUPLING, shadow_head="causal", cut=(1024, 64),
        compare_to=("paper-1024-64", "paper-baseline-1024-64"), load=load_shadow, sample=noise_shared, recall=recall_bound_per_sequence),
    Arm("paper-shadow-256-16", "paper's framing: causal shadow student 256 -> 16 steps", train_distilled,
        method="shadow", coupling=SHADOW_COUPLING, shadow_head="causal", cut=(256, 16),
        compare_to=("paper-256-16", "paper-baseline-256-16"), load=load_shadow, sample=noise_shared, recall=recall_bound_per_sequence),
):
    register(_arm)


if {name: arm.cut for name, arm in ARMS.items()} != BUILTIN_ARM_CUTS:  # the command line checks --arms against that table
    raise RuntimeError("sampler.configs.BUILTIN_ARM_CUTS must list every built-in arm with its cut")
