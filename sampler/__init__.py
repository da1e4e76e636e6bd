"""sampler: teacher model, data sources, training, samplers, evaluation and masked consistency distillation.

The public API below is what the `mcd` command line does, as library calls.  `import sampler` is
cheap: each name is imported from its module on first use (torch is not imported until then).

Load a trained run (`mcd train` / `mcd distill` output) and sample it::

    run = sampler.load_run("runs/teacher")                    # a sampler.Run: .denoiser .schedule .source .mask_id
    opened = sampler.open_run("runs/teacher")                 # its kind (denoiser, shadow) picks loader and sampler
    x = opened.sample(num_samples=16, num_steps=64, seq_len=run.seq_len, seed=0)
    x = sampler.sample(run.denoiser, run.schedule, num_samples=16, num_steps=64, seed=0)
    x = sampler.sample(run.denoiser, run.schedule, num_samples=16, num_steps=64, seed=0, temperature=0.9, prefix=[3, 1, 4])
    x = sampler.ancestral_sample(run.denoiser, run.schedule, num_steps=64, num_samples=16, seq_len=run.seq_len,
                                 mask_id=run.mask_id, vocab_size=run.vocab_size,
                                 generator=torch.Generator().manual_seed(0))   # the sampler itself

Every exported sampler takes (denoiser, schedule) and then keywords only: num_samples, num_steps, seq_len, ...

Evaluate (exact-source metrics; the evaluator LM for real text)::

    source = sampler.get_source("exact")                      # the embedded HMM, vocab 32
    q = sampler.sample_quality(x, source)                     # nll_per_token, excess, unigram_entropy, ...
    d, se = sampler.paired_difference(q["per_sequence_nll"], q_ref["per_sequence_nll"])
    nll = sampler.frontier_at_entropy(frontier_points, q["unigram_entropy"])   # teacher at matched entropy
    elbo = sampler.validation_elbo_per_sequence(run.denoiser, run.schedule, x0, run.mask_id,
                                                run.vocab_size, torch.Generator().manual_seed(0))
    report = sampler.evaluate_checkpoint(sampler.EvalConfig(ckpt="runs/teacher", steps=[64, 8]))
    lm = sampler.load_evaluator("smollm2"); lm.gen_perplexity(["some text"])   # needs the `text` extra
    m = sampler.two_axis_metrics(x, source, denoiser=run.denoiser, schedule=run.schedule, steps=64)
                                                              # precision, recall, n-gram fidelity, typicality

The noise-shared (shadow) sampler: per-token reveal noise from the coupling and a category noise,
drawn once from a seed; with a denoiser that ignores the noise it has the ancestral sampler's law::

    noise = sampler.sample_shadow_noise(16, run.seq_len, run.schedule, run.vocab_size, run.mask_id,
                                        torch.Generator().manual_seed(0))
    x = sampler.noise_shared_sample(run.denoiser, run.schedule, num_steps=64, noise=noise, mask_id=run.mask_id,
                                    vocab_size=run.vocab_size)

Train a teacher and distil it, from the typed configs the CLI builds::

    sampler.train_teacher(sampler.TrainConfig(out="runs/teacher", max_steps=2000))
    sampler.distill_run(sampler.DistillConfig(teacher="runs/teacher", out="runs/mcd"))

Bring your own denoiser: any callable (z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K]
over the K real tokens, SUBS-parameterised, with a mask id outside 0..K−1 (`sampler.Denoiser`;
schedules are `sampler.Schedule`), or a module returning logits over K or K + 1 classes::

    denoiser = sampler.ModuleDenoiser(my_net, vocab_size=32, seq_len=64)   # mask id 32; probed now
    schedule = sampler.make_schedule("loglinear")
    x = sampler.sample(denoiser, schedule, num_samples=16, num_steps=64, seed=0)
    result = sampler.distill_module(denoiser, schedule, source,
                                    sampler.DistillConfig(teacher="my-net", out="runs/my-student"))
    isinstance(denoiser, sampler.Denoiser)                    # True
    model = sampler.TransformerDenoiser(sampler.DenoiserConfig.preset("tiny", vocab_size=32, seq_len=64))

`train_teacher` and `distill_run` are `sampler.train.teacher.train` and `sampler.train.distill.distill`
under names that do not collide with the subpackage `sampler.train` and its module `sampler.train.distill`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> (module, name in that module)
_EXPORTS: dict[str, tuple[str, str]] = {
    # load and sample
    "Run": (".api", "Run"),
    "load_run": (".api", "load_run"),
    "open_run": (".run.open", "open_run"),
    "sample": (".api", "sample"),
    "ancestral_sample": (".sampling", "ancestral_sample"),
    # evaluate
    "get_source": (".data", "get_source"),
    "sample_quality": (".data", "sample_quality"),
    "paired_difference": (".data", "paired_difference"),
    "frontier_at_entropy": (".data", "frontier_at_entropy"),
    "validation_elbo_per_sequence": (".run.eval", "validation_elbo_per_sequence"),
    "EvalConfig": (".run.eval", "EvalConfig"),
    "evaluate_checkpoint": (".run.eval", "evaluate_checkpoint"),
    "load_evaluator": (".quality.gen_perplexity", "load_evaluator"),
    "two_axis_metrics": (".quality.two_axis", "two_axis_metrics"),
    # the noise-shared (shadow) sampler
    "sample_shadow_noise": (".shadow.noise", "sample_shadow_noise"),
    "noise_shared_sample": (".shadow.noise", "noise_shared_sample"),
    # train and distil
    "TrainConfig": (".train.config", "TrainConfig"),
    "train_teacher": (".train.teacher", "train"),
    "DistillConfig": (".train.config", "DistillConfig"),
    "distill_run": (".train.distill", "distill"),
    "distill_module": (".api", "distill_module"),
    # bring your own denoiser
    "Denoiser": (".protocols", "Denoiser"),
    "Schedule": (".protocols", "Schedule"),
    "ModuleDenoiser": (".adapter", "ModuleDenoiser"),
    "make_schedule": (".checkpoint", "make_schedule"),
    "TransformerDenoiser": (".model", "TransformerDenoiser"),
    "DenoiserConfig": (".model", "DenoiserConfig"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562), then keep it in the package."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sampler' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from .adapter import ModuleDenoiser
    from .api import Run, distill_module, load_run, sample
    from .checkpoint import make_schedule
    from .data import frontier_at_entropy, get_source, paired_difference, sample_quality
    from .run.eval import EvalConfig, evaluate_checkpoint, validation_elbo_per_sequence
    from .quality.gen_perplexity import load_evaluator
    from .model import DenoiserConfig, TransformerDenoiser
    from .quality.two_axis import two_axis_metrics
    from .shadow.noise import noise_shared_sample, sample_shadow_noise
    from .protocols import Denoiser, Schedule
    from .sampling import ancestral_sample
    from .train.config import DistillConfig, TrainConfig
    from .train.distill import distill as distill_run
    from .train.teacher import train as train_teacher
