"""The distillation benchmark (`mcd bench-distill`, from a BenchConfig): every arm of sampler.run.arms against
the teacher's and the exact denoiser's temperature frontiers, on two axes, across step counts.

On the embedded exact-likelihood source it trains, or reuses from OUT, a teacher (or takes `--teacher`), then
one run per arm and training seed (sampler.run.arms: MCD, the stochastic baseline, their forward-KL versions,
MCD without cross-entropy, the teacher trained further, MCD at equal teacher compute, the paper's 16x cuts,
the shadow students of designs A and B).
Every sampler row (teacher and oracle at each temperature of the sweep, each student at T = 1), at every
evaluated step count, gets, each with a standard error (sampler.quality):

- precision E_q[−log p]/L of `num_samples` samples under the true source (and the unigram entropy);
- recall: the importance-weighted bound (k reveal patterns) on the NLL of `heldout` true sequences;
- n-gram fidelity: JS between the samples' n-gram frequencies and the exact marginals (n in ngram_orders),
  beside the value of as many true sequences;
- typicality: KS statistic between per-sequence −log p/L of samples and of fresh true sequences.

Pairing: one sampler seed for every sampler (same uniforms), one held-out set, one set of reveal patterns per
step count, one reference set; precision and recall differences are paired (std of the per-sequence
difference / sqrt N), fidelity and typicality differences carry sqrt(se_a² + se_b²).
`sampler.quality.compare.dominance` says "dominates" only where a sampler is better on precision and recall
(beyond z = 2 SE), or strictly inside the other's temperature frontier, with no n-gram order and not
typicality worse.  Seed means: over training seeds, with the between-seed SE.

Unavailable, never zero: a sampler whose arm has no recall (the shadow arms: a noise-conditioned sampler,
drawn by the noise-shared sampler from the same sampler seed) gets recall None with the arm's reason, and is
compared on precision and entropy only (no dominance verdict).  On a teacher source without exact likelihood
(real text) precision, recall, fidelity, typicality, the oracle rows and the anchors are None with the reason
in result["unavailable"] and in each row's "unavailable"; the unigram entropy is still reported.

The paper's framing (arms paper-*): each student at its target step count against the teacher at its start
count, under the paper's protocol (precision and unigram entropy only) and under ours (all four axes).

Outputs in OUT: bench.md (tables), bench.json (every number), bench_pr_<steps>.png (one per step count), bench_cost.png
(precision and recall against forward equivalents and one-thread wall time per sample).
`--smoke` (< 2 minutes) runs the pipeline end to end on a tiny teacher (with one shadow arm) and checks the recall sanity
anchors through the benchmark's own recall code (exact denoiser: steps >> tokens gives the true −log p/L,
one step gives the sum of the one-step marginals).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from ..checkpoint import checkpoint_path, load_checkpoint, load_schedule, load_source
from ..data import DataSource, get_source, json_ready, no_exact_likelihood, paired_difference, sample_quality, strict_json
from ..protocols import Denoiser, NoiseConditionedDenoiser, Schedule
from ..quality.compare import dominance
from ..quality.fidelity import check_ngram_orders
from ..quality.recall_convergence import converged
from ..quality.two_axis import recall_bound_per_sequence, recall_summary, recall_with_diagnostic, two_axis_metrics
from ..cost import sampler_cost
from ..rundir import check_output_path, run_dir_lock
from ..train import TrainConfig, train
from ..train.loop import StoppedBySignal
from ..train.runtime import check_training_memory
from ..device import apply_threads, pick_device  # noqa: F401  (apply_threads: for mcd bench-distill's --threads)
from ..model import DenoiserConfig
from ..confidence import confidence_recall_per_sequence, confidence_sample
from ..floor_denoisers import ScheduledTemperatureDenoiser, TopPDenoiser
from ..quality.envelope import lower_envelope
from .arms import ARMS, ancestral, load_student

# BenchConfig and its --smoke settings are defined torch-free for the command line (sampler.configs); re-exported here
from ..configs import BENCH_DEFAULT_ARMS as DEFAULT_ARMS  # noqa: F401
from ..configs import BENCH_EVAL_STEPS as DEFAULT_EVAL_STEPS  # noqa: F401
from ..configs import BENCH_SMOKE_EVAL_STEPS as SMOKE_EVAL_STEPS  # noqa: F401
from ..configs import BenchConfig

ANCHOR_STEPS = 2**16  # "many more steps than tokens": two tokens share a step with probability ~ L²/(2·N) per pattern
PAPER_CUT = 16  # the paper's step reduction
ANCHOR_SEQUENCES = 8  # held-out sequences of the anchors
FLOOR_SCHEDULES = ((1.2, 0.8), (0.8, 1.2))  # per-step temperature schedules (T at t = 1, T at t = 0) of the floor
FLOOR_TOP_P = (0.95,)  # top-p truncations of the exact marginals in the floor
FLOOR_ARMS = ("oracle", "floor")  # the per-token-independent floor rows: the exact denoiser's families


def validate(config: BenchConfig) -> None:
    """ValueError naming the argument, before any training or sampling: the settings (against the live arm
    registry, which may hold arms registered at run time) and the training settings."""
    config.validate_settings({name: arm.cut for name, arm in ARMS.items()})
    _validate_training(config)


def _validate_training(config: BenchConfig) -> None:
    """The training settings that need the teacher or torch, checked before the teacher is trained: for a teacher
    trained in OUT the n-gram orders against its sequences, and one training step's memory."""
    if config.teacher is not None:  # its n-gram orders are checked against its source (check_source) before any work
        described = load_checkpoint(config.teacher)[1].get("model_config")
        if not isinstance(described, dict):
            raise ValueError(f"teacher={config.teacher!r} is not a denoiser checkpoint (its meta has no model_config mapping)")
        model_config = DenoiserConfig.from_dict(described)
        seq_len, batches = model_config.seq_len, {}
    else:
        source = get_source("exact", seq_len=config.seq_len)
        seq_len = config.seq_len or int(source.default_seq_len)
        check_ngram_orders(tuple(config.ngram_orders), seq_len, source.vocab_size)
        model_config = DenoiserConfig.preset(config.teacher_size, int(source.vocab_size), seq_len)
        batches = {"--teacher-batch-size": config.teacher_batch_size}
    batches = {**batches,
               **{f"--batch-size × {ARMS[name].batch_multiplier} (arm {name})": config.batch_size * ARMS[name].batch_multiplier
                  for name in config.arms}}
    for label, batch in batches.items():
        try:
            check_training_memory(model_config, batch, seq_len, pick_device(config.device))
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None


def check_source(teacher_dir: Path, config: BenchConfig) -> None:
    """The n-gram orders must fit the teacher's source.  A source without exact likelihood (real text) is no error:
    precision, recall, fidelity, typicality, the oracle and the anchors are then reported as unavailable."""

    _, meta = load_checkpoint(teacher_dir)
    source = load_source(meta)
    if getattr(source, "exact", False):  # n-gram tables are built only against exact marginals
        seq_len = int(meta.get("seq_len") or meta["model_config"]["seq_len"])
        check_ngram_orders(tuple(config.ngram_orders), seq_len, source.vocab_size)


# ---------------------------------------------------------------------------- stages


def _teacher_budget(config: BenchConfig) -> list[Any]:
    return [config.teacher_steps, config.teacher_minutes, config.teacher_size, config.seq_len, config.teacher_lr, config.teacher_batch_size]


def ensure_teacher(config: BenchConfig) -> tuple[Path, dict[str, Any]]:
    """The teacher run: config.teacher as given, or OUT/teacher (trained now, or reused when it
    already reached its step or time budget)."""

    if config.teacher is not None:
        _, meta = load_checkpoint(config.teacher)
        return Path(config.teacher), {"reused": True, "step": meta.get("step"), "wall_time_s": None}
    run_dir = Path(config.out) / "teacher"
    cost_file = run_dir / "bench_cost.json"
    if checkpoint_path(run_dir).is_file() and cost_file.is_file():
        cost = json.loads(cost_file.read_text())
        if cost.get("budget") == _teacher_budget(config):
            return run_dir, {**cost, "reused": True}
    start = time.perf_counter()
    cfg = TrainConfig(
        out=str(run_dir), data="exact", seq_len=config.seq_len, size=config.teacher_size, max_steps=config.teacher_steps,
        minutes=config.teacher_minutes, device=config.device, progress=config.progress,
        resume=checkpoint_path(run_dir).is_file(), eval_every=10**9, save_every=500,
        warmup=min(100, max(1, (config.teacher_steps or 1000) // 20)), lr=config.teacher_lr,
        batch_size=config.teacher_batch_size,
    )
    summary = train(cfg)
    stop_if_interrupted(summary, run_dir)
    _, meta = load_checkpoint(run_dir)
    cost = {
        "budget": _teacher_budget(config),
        "step": int(meta["step"]), "wall_time_s": time.perf_counter() - start,
        "final_loss": summary.get("final_loss"),
    }
    cost_file.write_text(strict_json(cost))
    return run_dir, {**cost, "reused": False}


def train_arms(config: BenchConfig, teacher_dir: Path) -> dict[str, dict[str, Any]]:
    """One run per arm and training seed (reused when finished): {run name: cost record with its arm and seed}."""
    records: dict[str, dict[str, Any]] = {}
    for name in config.arms:
        arm = ARMS[name]
        for seed in config.seeds:
            records[arm.run_name(seed)] = {**arm.train(arm, config, teacher_dir, seed), "arm": name, "seed": seed}
            stop_if_interrupted(records[arm.run_name(seed)], Path(config.out) / arm.run_name(seed))
    return records


def stop_if_interrupted(record: dict[str, Any], run_dir: Path) -> None:
    """Raise StoppedBySignal when a stop signal ended the training behind `record` (the bench stops there;
    the same command resumes that run from its checkpoint and reuses the finished ones)."""
    if record.get("interrupted"):
        raise StoppedBySignal(f"stopped by a signal while training {run_dir} (checkpoint saved at step "
                              f"{record.get('step', '?')}); run the same command again to resume")


# ---------------------------------------------------------------------------- one sampler, every metric


@dataclass
class EvalContext:
    """What every sampler row shares: the source, the schedule, the held-out set and the config."""

    config: BenchConfig
    source: DataSource
    schedule: Schedule
    seq_len: int
    heldout: torch.Tensor
    no_exact_likelihood: str | None = None  # why the exact-likelihood metrics are unavailable (None: the source has it)


def recall_rows(ctx: EvalContext, denoiser: Denoiser | NoiseConditionedDenoiser, steps: int, temperatures: tuple[float, ...],
                recall: Any = None) -> Float[Tensor, "T M"]:
    """Per-sequence recall bound (float64, [T, heldout]) of the `steps`-step sampler at each temperature, by `recall`
    (a sampler.run.arms.RecallFn; None: the dispatcher sampler.quality.two_axis.recall_bound_per_sequence); one set of k reveal
    patterns per step count (seeded by the sampler seed and `steps`), so rows at a step count pair."""
    recall = recall_bound_per_sequence if recall is None else recall
    generator = torch.Generator().manual_seed(ctx.config.sample_seed * 7_919 + steps)
    return recall(denoiser, ctx.schedule, ctx.heldout, steps=steps, temperatures=temperatures,
                  k=ctx.config.k, generator=generator, device=ctx.config.device)


def recall_report(ctx: EvalContext, denoiser: Denoiser | NoiseConditionedDenoiser, steps: int,
                  temperature: float) -> dict[str, Any]:
    """A sampler row's recall with its k and diagnostic (`two_axis.recall_with_diagnostic`, the one dispatcher: plain
    importance sampling over reveal patterns, or a causal shadow student's sequential bound, at k = 1, 4, ... up to
    recall_k); the draws are seeded by the sampler seed and `steps`, so every row at a step count pairs."""
    return recall_with_diagnostic(denoiser, ctx.schedule, ctx.heldout, steps=steps, temperature=temperature,
                                  max_k=ctx.config.recall_k, tolerance=ctx.config.recall_tolerance,
                                  seed=ctx.config.sample_seed * 7_919 + steps, device=ctx.config.device)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler row's identity and how to draw and score it: its denoiser, `sample` (arms.ancestral or
    noise_shared), and `recall` (a RecallFn, or None with `no_recall_reason`)."""

    label: str
    arm: str
    seed: int | None
    denoiser: Denoiser | NoiseConditionedDenoiser  # noise-conditioned: sampled by noise_shared
    sample: Any
    recall: Any
    no_recall_reason: str = ""
    recall_estimator: Any = None  # (ctx, denoiser, steps, temperature) -> report; None: recall_report


def confidence_draw(denoiser: Denoiser, schedule: Schedule, steps: int, num_samples: int, seq_len: int,
                    temperature: float, seed: int, device: str) -> Tensor:
    """The confidence-ordered sampler (max_prob, MaskGIT-style) in the bench's sample signature, from the sampler seed."""
    vocab_size = denoiser.config.vocab_size if getattr(denoiser, "config", None) is not None else denoiser.vocab_size
    return confidence_sample(denoiser, schedule, num_samples=num_samples, num_steps=steps, seq_len=seq_len,
                             mask_id=denoiser.mask_id, vocab_size=vocab_size, generator=torch.Generator().manual_seed(seed),
                             temperature=temperature, confidence="max_prob", device=device)


def confidence_recall(ctx: EvalContext, denoiser: Denoiser, steps: int, temperature: float) -> dict[str, Any]:
    """The confidence sampler's exact recall (max_prob: its law is a product along x's own path; no k, no
    estimator), in the report format of recall_with_diagnostic (k None, change 0, remaining 0)."""
    per_sequence = confidence_recall_per_sequence(denoiser, ctx.schedule, ctx.heldout, num_steps=steps,
                                                  temperature=temperature, device=ctx.config.device)
    value, se = paired_difference(per_sequence, torch.zeros_like(per_sequence))
    return {"recall": value, "recall_se": se, "k": None, "change": 0.0, "change_se": 0.0, "remaining": 0.0, "ess": 1.0,
            "estimator": "exact", "per_sequence": per_sequence, "levels": []}


def floor_specs(oracle: Denoiser) -> list[SamplerSpec]:
    """The extra per-token-independent floor rows over the exact denoiser: per-step temperature schedules and top-p
    truncations (sampler.floor_denoisers), sampled ancestrally and scored by the reveal-pattern recall."""
    specs = [SamplerSpec(f"floor-T{start:g}to{end:g}", "floor", None,
                         ScheduledTemperatureDenoiser(oracle, start=start, end=end), ancestral, recall_bound_per_sequence)
             for start, end in FLOOR_SCHEDULES]
    return specs + [SamplerSpec(f"floor-top{p:g}", "floor", None, TopPDenoiser(oracle, top_p=p), ancestral,
                                recall_bound_per_sequence) for p in FLOOR_TOP_P]


def sampler_rows(ctx: EvalContext, spec: SamplerSpec, steps: int, temperatures: tuple[float, ...]) -> list[dict[str, Any]]:
    """One row per temperature: precision, recall, n-gram JS (with the true-sequence reference), KS, unigram
    entropy, each (value, SE), plus the per-sequence tensors the paired differences need.  A metric that cannot
    be computed (no exact likelihood, or no recall for this sampler) is None with its reason in row["unavailable"]."""

    config = ctx.config
    no_recall = ctx.no_exact_likelihood or (None if spec.recall is not None else spec.no_recall_reason)
    rows = []
    for temperature in temperatures:
        recall, why = None, no_recall
        if not no_recall:
            recall, why = _row_recall(ctx, spec, steps, temperature)
        drawn: list[Tensor] = []

        def draw(denoiser: Any, temperature: float = temperature) -> Tensor:
            drawn.append(spec.sample(denoiser, ctx.schedule, steps, config.num_samples, ctx.seq_len, temperature,
                                     config.sample_seed, config.device))
            return drawn[-1]
        cost = sampler_cost(draw, spec.denoiser, repeats=config.cost_repeats)
        samples = drawn[0]
        m = two_axis_metrics(samples, ctx.source, ngram_orders=config.ngram_orders, seed=config.sample_seed,
                             num_bootstrap=config.num_bootstrap)
        quality = sample_quality(samples, ctx.source)
        unavailable = {**{k: v for k, v in m["unavailable"].items() if k != "recall"}, **({"recall": why} if why else {})}
        rows.append({
            "steps": steps, "sampler": spec.label, "arm": spec.arm, "seed": spec.seed, "temperature": float(temperature),
            "precision": None if m["precision"] is None else [m["precision"]["value"], m["precision"]["se"]],
            "recall": None if recall is None else [recall["recall"], recall["recall_se"]],
            "recall_diagnostic": None if recall is None else recall_summary(recall), "cost": cost,
            "unigram_entropy": [quality["unigram_entropy"], quality["unigram_entropy_se"]],
            **_fidelity_and_typicality(m), "unavailable": unavailable,
            "precision_per_sequence": None if m["precision"] is None else m["precision"]["per_sequence"],
            "recall_per_sequence": None if recall is None else recall["per_sequence"],
            "entropy_per_sequence": torch.as_tensor(quality["per_sequence_entropy"], dtype=torch.float64),
        })
    return rows


def _row_recall(ctx: EvalContext, spec: SamplerSpec, steps: int, temperature: float) -> tuple[dict[str, Any] | None, str | None]:
    """(recall report, None), or (None, reason) for a top-p floor row that cuts a held-out token in every pattern
    drawn (its recall is +inf there: the bound has no finite mean)."""
    estimator = spec.recall_estimator or recall_report
    if callable(spec.recall) and spec.recall is not recall_bound_per_sequence and spec.recall_estimator is None:
        per_sequence = recall_rows(ctx, spec.denoiser, steps, (temperature,), spec.recall)[0]  # an arm's own bound
        value, se = paired_difference(per_sequence, torch.zeros_like(per_sequence))
        return {"recall": value, "recall_se": se, "k": ctx.config.k, "change": math.nan, "change_se": math.nan,
                "remaining": math.inf, "ess": math.nan, "estimator": "arm's own", "per_sequence": per_sequence,
                "levels": []}, None
    report = estimator(ctx, spec.denoiser, steps, temperature) if not isinstance(spec.denoiser, TopPDenoiser) else None
    if report is not None:
        return report, None
    try:
        return recall_report(ctx, spec.denoiser, steps, temperature), None
    except ValueError as err:
        if "non-finite" not in str(err):
            raise
        return None, (f"top-p {spec.denoiser.top_p:g} cuts a held-out token at its reveal step in every drawn "
                      "pattern: the recall bound is +inf")


def _fidelity_and_typicality(m: dict[str, Any]) -> dict[str, Any]:
    """A row's n-gram JS (with the true-sequence reference and both KLs) and KS entries from two_axis_metrics'
    result; None where unavailable."""
    fid, typ = m["fidelity"], m["typicality"]
    return {
        "fidelity": None if fid is None else {n: [fid[n]["js"], fid[n]["js_se"]] for n in fid},
        "fidelity_reference": None if fid is None else {n: [fid[n]["reference_js"], fid[n]["reference_js_se"]] for n in fid},
        "fidelity_kl": None if fid is None else {n: {k: fid[n][k] for k in ("kl_samples_exact", "kl_exact_samples")} for n in fid},
        "typicality": None if typ is None else [typ["ks"], typ["ks_se"]], "ks_p": None if typ is None else typ["p_value"],
    }


def recall_anchors(ctx: EvalContext) -> dict[str, Any]:
    """The recall sanity anchors, through `recall_rows` with the exact denoiser (float64):
    ANCHOR_STEPS >> L steps: tokens reveal one at a time (up to rare collisions), so the bound equals the true
    −log p(x)/L of the held-out sequences (chain rule in the reveal order); 1 step: every pattern reveals all
    tokens at t = 1, so the bound is −Σ_l log p(x_l | all masked)/L exactly."""

    oracle = ctx.source.denoiser(dtype=torch.float64)
    x, length = ctx.heldout[:ANCHOR_SEQUENCES], ctx.seq_len
    few = replace(ctx, heldout=x)  # the many-step bound costs one denoiser call per distinct reveal step
    many = recall_rows(few, oracle, ANCHOR_STEPS, (1.0,))[0]
    true_nll = -ctx.source.log_prob(x).double() / length
    one = recall_rows(few, oracle, 1, (1.0,))[0]
    all_masked = torch.full_like(x, oracle.mask_id)
    marginals = oracle(all_masked, torch.ones(x.shape[0], dtype=torch.float64))
    one_step_sum = -marginals.gather(-1, x[..., None])[..., 0].sum(1) / length
    gap, gap_se = paired_difference(many, true_nll)
    return {"steps_many": ANCHOR_STEPS, "many_minus_true": [gap, gap_se],
            "many_max_abs": float((many - true_nll).abs().max()),
            "one_step_max_abs": float((one - one_step_sum).abs().max()),
            "true_nll": float(true_nll.mean()), "num_heldout": int(x.shape[0])}


def _smoke_check(ctx: EvalContext, teacher: Denoiser, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The teacher at the fewest evaluated steps against the most (paired by sampler seed; a larger draw when
    check_samples > num_samples): fewer steps must be measurably worse."""

    per_seq = {r["steps"]: r["precision_per_sequence"] for r in rows if r["sampler"] == "teacher" and r["temperature"] == 1.0}
    few, many = min(ctx.config.eval_steps), max(ctx.config.eval_steps)
    if few == many or ctx.no_exact_likelihood:
        return None
    config = ctx.config
    if config.check_samples > config.num_samples:
        for n in (few, many):
            drawn = ancestral(teacher, ctx.schedule, n, config.check_samples, ctx.seq_len, 1.0, config.sample_seed, config.device)
            per_seq[n] = sample_quality(drawn, ctx.source)["per_sequence_nll"]
    diff, se = paired_difference(per_seq[few], per_seq[many])
    return {"few_steps": few, "many_steps": many, "teacher_nll_few_minus_many": diff, "se": se,
            "z": diff / se if se > 0 else float("inf")}


def evaluate(config: BenchConfig, teacher_dir: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every row, comparison, seed mean and paper-framing line of the benchmark (module docstring).  On a source
    without exact likelihood the metrics that need it, the oracle and the anchors are None, with the reason in
    result["unavailable"] (and in each row's "unavailable")."""

    _, meta = load_checkpoint(teacher_dir)
    schedule, source = load_schedule(meta), load_source(meta)
    teacher = load_student(teacher_dir, config.device)
    seq_len = int(meta.get("seq_len") or teacher.config.seq_len)
    heldout = source.sample_batch(config.heldout, seq_len, torch.Generator().manual_seed(config.sample_seed + 10_007))
    ctx = EvalContext(config, source, schedule, seq_len, heldout, no_exact_likelihood(source))
    unavailable = _unavailable(ctx)
    oracle = None if "oracle" in unavailable else SamplerSpec("oracle", "oracle", None, source.denoiser(), ancestral,
                                                                 recall_bound_per_sequence)
    teacher_spec = SamplerSpec("teacher", "teacher", None, teacher, ancestral, recall_bound_per_sequence)
    confidence = [] if oracle is None else [
        SamplerSpec(f"{spec.label}-confidence", "confidence", None, spec.denoiser, confidence_draw, True,
                    recall_estimator=confidence_recall) for spec in (teacher_spec, oracle)]
    students = [(arm, SamplerSpec(run, arm.name, rec["seed"], arm.load(Path(config.out) / run, config.device), arm.sample,
                                  arm.recall_fn(), arm.no_recall_reason))
                for run, rec in records.items() for arm in (ARMS[rec["arm"]],)]
    extra_teacher = {s for arm, _ in students if arm.cut for s in arm.cut} - set(config.eval_steps)
    rows: list[dict[str, Any]] = []
    for steps in tqdm(sorted(set(config.eval_steps) | extra_teacher, reverse=True), desc="evaluating",
                      disable=not config.progress, leave=False):
        sweep = tuple(config.temperatures) if steps in config.eval_steps else (1.0,)
        rows += sampler_rows(ctx, teacher_spec, steps, sweep)
        if oracle is not None and steps in config.eval_steps:
            rows += sampler_rows(ctx, oracle, steps, sweep)
            for spec in [*floor_specs(oracle.denoiser), *confidence]:
                rows += sampler_rows(ctx, spec, steps, (1.0,))
        rows += [row for arm, spec in students if steps in arm.student_steps(config)
                 for row in sampler_rows(ctx, spec, steps, (1.0,))]
    comparisons = compare_rows(rows, config)
    exact = ctx.no_exact_likelihood is None
    return {
        "source": source.name, "seq_len": seq_len, "entropy_rate": source.entropy_rate(seq_len)[0] if exact else None,
        "heldout_true_nll": float((-source.log_prob(heldout) / seq_len).mean()) if exact else None,
        "rows": rows, "comparisons": comparisons, "seed_means": seed_means(comparisons, rows),
        "paper": paper_framing(rows, comparisons, config), "unavailable": unavailable,
        "anchors": recall_anchors(ctx) if config.check_anchors and "anchors" not in unavailable else None,
        "smoke_check": _smoke_check(ctx, teacher, rows),
    }


def _unavailable(ctx: EvalContext) -> dict[str, str]:
    """What the bench cannot report on this source, with the reason: the exact-likelihood metrics on a source
    without it, the oracle (and the recall anchors, which read it) on a source without an exact denoiser."""
    reason = ctx.no_exact_likelihood
    out = {} if reason is None else {name: reason for name in (
        "precision", "recall", "fidelity", "typicality", "entropy_rate", "heldout_true_nll", "smoke_check")}
    if reason is not None or not hasattr(ctx.source, "denoiser"):
        out["oracle"] = reason or f"source {ctx.source.name} has no exact denoiser"
        if ctx.config.check_anchors:
            out["anchors"] = out["oracle"]
    return out


# ---------------------------------------------------------------------------- comparisons


def _curve(rows: list[dict[str, Any]], label: str, steps: int) -> list[dict[str, Any]] | None:
    """The temperature sweep of sampler `label` at `steps` (for "oracle": the floor, the lower envelope of every
    per-token-independent exact-denoiser row, its temperature sweep and its families): its rows with precision and recall (paired with every
    other row at that step count: one sampler seed, one held-out set), or None when fewer than two or when two
    share a mean precision (a sampler whose draws ignore the temperature: no curve to place a row against)."""
    curve = [r for r in rows if (r["arm"] in FLOOR_ARMS if label == "oracle" else r["sampler"] == label)
             and r["steps"] == steps and r["precision"] is not None and r["recall"] is not None]
    if label == "oracle":  # the floor: the lower envelope of every per-token-independent exact-denoiser row
        points = [{"precision": r["precision"][0], "recall": r["recall"][0], "index": i} for i, r in enumerate(curve)]
        curve = [curve[p["index"]] for p in lower_envelope(points)]
    distinct = len({float(torch.as_tensor(r["precision_per_sequence"], dtype=torch.float64).mean()) for r in curve}) == len(curve)
    return curve if len(curve) >= 2 and distinct else None


def _compare(a: dict[str, Any], b: dict[str, Any], curve: Any, config: BenchConfig) -> dict[str, Any]:
    """One paired comparison a − b (dominance verdict, differences, frontier gap)."""

    entry = {"steps_a": a["steps"], "steps_b": b["steps"], "a": a["sampler"], "b": b["sampler"], "arm_a": a["arm"],
             "arm_b": b["arm"], "seed": a["seed"],
             "entropy": list(paired_difference(a["entropy_per_sequence"], b["entropy_per_sequence"]))}
    missing = [f"{name} unavailable for {row['sampler']} ({row['unavailable'][name]})"
               for name in ("precision", "recall") for row in (a, b) if row[name] is None]
    if missing:
        precision = (None if a["precision"] is None or b["precision"] is None else
                     list(paired_difference(a["precision_per_sequence"], b["precision_per_sequence"])))
        return {**entry, "precision": precision, "dominates": None, "reason": "; ".join(missing)}
    verdict = dominance(a, b, curve=curve, z=config.z)
    diffs = verdict.pop("differences")
    out = {**entry, **{k: list(v) for k, v in diffs.items() if k != "fidelity"},
           "fidelity": {n: list(v) for n, v in diffs["fidelity"].items()}, **verdict}
    return {**out, **recall_determined(a, b, curve, out)}


def recall_determined(a: dict[str, Any], b: dict[str, Any], curve: Any, comparison: dict[str, Any]) -> dict[str, Any]:
    """{"recall_determined": bool, "undetermined": reason or None}: a recall comparison (Δ recall, and the
    frontier gap when there is one) stands only where `recall_convergence.converged` allows it: the remaining change
    (|change k/4 -> k| + 2 SE) of each row involved (a, b, and the curve's rows for a frontier gap) is smaller than
    the difference claimed."""
    def report(row: dict[str, Any]) -> dict[str, Any]:
        d = row["recall_diagnostic"]
        return {"recall": d["value"], "change": d["change"], "change_se": d["change_se"]}

    claims = [("Δ recall", [a, b], comparison["recall"][0])]
    gap = comparison.get("frontier_gap")
    if curve and gap is not None:
        claims.append(("frontier gap", [a, *curve], gap))
    reasons = []
    for name, rows, difference in claims:
        stuck = [r["sampler"] + (f" T={r['temperature']:g}" if r["temperature"] != 1.0 else "") for r in rows
                 if not converged(report(r), report(r), claimed_difference=difference)]
        if stuck:
            reasons.append(f"{name} {difference:+.4f} is within the remaining recall change of {', '.join(stuck)}")
    return {"recall_determined": not reasons, "undetermined": "; ".join(reasons) or None}


def compare_rows(rows: list[dict[str, Any]], config: BenchConfig) -> list[dict[str, Any]]:
    """Every student (T = 1) against the teacher and the oracle at its step count (with their temperature
    curves) and against the arms it names in `compare_to` (same training seed); the teacher against the oracle."""
    at = {(r["sampler"], r["steps"]): r for r in rows if r["temperature"] == 1.0}
    out = []
    for r in rows:
        if r["temperature"] != 1.0 or r["arm"] in FLOOR_ARMS:
            continue
        steps = r["steps"]
        others = [("oracle", steps)] if r["arm"] == "teacher" else [("teacher", steps), ("oracle", steps)]
        if r["arm"] in ARMS:
            others += [(ARMS[name].run_name(r["seed"]), steps) for name in ARMS[r["arm"]].compare_to]
        for label, s in others:
            if (label, s) in at:
                out.append(_compare(r, at[(label, s)], _curve(rows, label, s), config))
    return out


def _mean_and_between_seed_se(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return [mean, float("nan")]
    return [mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))]


def seed_means(comparisons: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (steps, arm, compared arm): the mean over training seeds of each difference with its between-seed SE
    (std/sqrt(seeds)), the mean paired SE within a seed, and on how many seeds the arm dominates."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for c in comparisons:
        if c["seed"] is not None and c.get("dominates") is not None and c["steps_a"] == c["steps_b"]:
            groups.setdefault((c["steps_a"], c["arm_a"], c["arm_b"]), []).append(c)
    out = []
    for (steps, arm, other), cs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
        entry: dict[str, Any] = {"steps": steps, "arm": arm, "vs": other, "seeds": len(cs),
                                 "dominates": sum(bool(c["dominates"]) for c in cs)}
        for key in ("precision", "recall", "typicality", "entropy"):
            entry[key] = _mean_and_between_seed_se([c[key][0] for c in cs]) + [sum(c[key][1] for c in cs) / len(cs)]
        entry["fidelity"] = {n: _mean_and_between_seed_se([c["fidelity"][n][0] for c in cs]) +
                             [sum(c["fidelity"][n][1] for c in cs) / len(cs)] for n in cs[0]["fidelity"]}
        mine = [r for r in rows if r["steps"] == steps and r["arm"] == arm]
        entry["values"] = {key: _mean_and_between_seed_se([r[key][0] for r in mine]) for key in ("precision", "recall")
                           if mine and all(r[key] is not None for r in mine)}
        out.append(entry)
    return out


def paper_framing(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], config: BenchConfig) -> list[dict[str, Any]]:
    """For each paper-cut student (start -> target), and each other student at s steps when the teacher was
    evaluated at 16·s: against the teacher at the start step count, the paper's protocol (paired Δprecision and Δunigram entropy) beside ours (Δrecall, ΔJS, ΔKS, dominance)."""
    at = {(r["sampler"], r["steps"]): r for r in rows if r["temperature"] == 1.0}
    out = []
    for r in rows:
        arm = ARMS.get(r["arm"])
        if arm is None or r["temperature"] != 1.0:
            continue
        cut = arm.cut or (PAPER_CUT * r["steps"], r["steps"])  # any student at s steps against the teacher at 16·s
        if r["steps"] != cut[1] or ("teacher", cut[0]) not in at:
            continue
        c = _compare(r, at[("teacher", cut[0])], _curve(rows, "teacher", cut[0]), config)
        out.append({"cut": list(cut), "run": r["sampler"], "arm": arm.name, "seed": r["seed"], **c})
    return out


# ---------------------------------------------------------------------------- reporting


def _pm(value: Any, signed: bool = False) -> str:
    if value is None or value[0] is None:
        return "n/a"
    se = "" if value[1] is None or math.isnan(value[1]) else f" ± {value[1]:.4f}"  # None: a NaN through strict JSON
    return f"{value[0]:{'+' if signed else ''}.4f}{se}"


def _verdict(c: dict[str, Any]) -> str:
    if c.get("dominates") is None:
        return c.get("reason", "")
    verdict = "**dominates**" if c["dominates"] else c["reason"]
    return verdict + (f" (**undetermined**: {c['undetermined']})" if c.get("undetermined") else "")


def _rows_table(result: dict[str, Any]) -> list[str]:
    orders = sorted({int(n) for r in result["rows"] for n in r["fidelity"] or {}})
    lines = ["| steps | sampler | T | precision | recall | k | Δ k/4→k | remaining | fwd/sample | ms/sample | unigram H | "
             + " | ".join(f"JS{n} (true)" for n in orders) + " | KS |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(orders) + "---:|"]
    for r in result["rows"]:
        fid = " | ".join("n/a" if r["fidelity"] is None else
                         f"{r['fidelity'][str(n)][0]:.4f} ± {r['fidelity'][str(n)][1]:.4f} ({r['fidelity_reference'][str(n)][0]:.4f})"
                         for n in orders)
        lines.append(f"| {r['steps']} | {r['sampler']} | {r['temperature']:g} | {_pm(r['precision'])} | {_pm(r['recall'])} | "
                     f"{_recall_diagnostic_cells(r.get('recall_diagnostic'))} | {_cost_cells(r.get('cost'))} | "
                     f"{r['unigram_entropy'][0]:.3f} | {fid} | {_pm(r['typicality'])} |")
    return lines


def _recall_diagnostic_cells(d: dict[str, Any] | None) -> str:
    """k | change k/4 -> k ± SE | remaining, or n/a (a NaN change, one level, comes through strict JSON as None)."""
    if d is None:
        return "n/a | n/a | n/a"
    change = "—" if d["change"] is None else _pm([d["change"], d["change_se"]], True)
    remaining = "—" if d["remaining"] is None or math.isinf(d["remaining"]) else f"{d['remaining']:.4f}"
    return f"{d['k']} | {change} | {remaining}"


def _cost_cells(cost: dict[str, Any] | None) -> str:
    if cost is None:
        return "n/a | n/a"
    return f"{cost['forward_equivalents']:.1f} | {1000 * cost['wall_s_per_sample']:.3f}"


def _means_table(result: dict[str, Any]) -> list[str]:
    lines = ["| steps | arm | − | seeds | Δ precision | Δ recall | Δ JS (per order) | Δ KS | dominates (seeds) |",
             "|---:|---|---|---:|---:|---:|---|---:|---:|"]

    def fmt(v: list[float | None]) -> str:
        se = "" if v[1] is None or math.isnan(v[1]) else f" ± {v[1]:.4f}"  # None: a NaN through strict JSON
        return f"{v[0]:+.4f}{se} ({v[2]:.4f})"

    for e in result["seed_means"]:
        fid = "; ".join(f"{n}: {e['fidelity'][n][0]:+.4f}" for n in sorted(e["fidelity"], key=int))
        lines.append(f"| {e['steps']} | {e['arm']} | {e['vs']} | {e['seeds']} | {fmt(e['precision'])} | {fmt(e['recall'])} | "
                     f"{fid} | {fmt(e['typicality'])} | {e['dominates']}/{e['seeds']} |")
    return lines


def _comparisons_table(comparisons: list[dict[str, Any]], first: str) -> list[str]:
    lines = [f"| {first} | a | b | Δ precision | Δ entropy | Δ recall | Δ JS (per order) | Δ KS | frontier gap | verdict |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---|"]
    for c in comparisons:
        fid = "; ".join(f"{n}: {_pm(v, True)}" for n, v in sorted(c.get("fidelity", {}).items(), key=lambda kv: int(kv[0])))
        gap, gap_se = c.get("frontier_gap"), c.get("frontier_gap_se")
        where = f"{c['steps_a']} vs {c['steps_b']}" if c["steps_a"] != c["steps_b"] else str(c["steps_a"])
        lines.append(f"| {where} | {c['a']} | {c['b']} | {_pm(c['precision'], True)} | {_pm(c['entropy'], True)} | "
                     f"{_pm(c.get('recall'), True)} | {fid} | {_pm(c.get('typicality'), True)} | "
                     f"{'' if gap is None else _pm((gap, gap_se), True)} | {_verdict(c)} |")
    return lines


def _unavailable_lines(result: dict[str, Any]) -> list[str]:
    """"n/a" explained: what the bench could not report on this source, and per sampler which metric and why."""
    lines = [f"- {name}: {reason}" for name, reason in result.get("unavailable", {}).items()]
    per_sampler: dict[tuple[str, str], str] = {}
    for r in result["rows"]:
        for name, reason in r.get("unavailable", {}).items():
            if result.get("unavailable", {}).get(name) != reason:
                per_sampler.setdefault((r["sampler"], name), reason)
    lines += [f"- {name} of {sampler}: {reason}" for (sampler, name), reason in per_sampler.items()]
    return ["## Unavailable (n/a in the tables)", "", *lines, ""] if lines else []


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_report(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        f"# bench-distill: arms {', '.join(config['arms'])} ({result['source']}, L = {result['seq_len']})", "",
        f"Entropy rate {_number(result['entropy_rate'])} nats/token; held-out true −log p/L "
        f"{_number(result['heldout_true_nll'])} ({config['heldout']} sequences). Precision: E_q[−log p]/L of {config['num_samples']} samples; recall: held-out "
        f"NLL bound of the sampler, k = {config['k']}; JS: n-gram Jensen–Shannon to the exact marginals (true sequences' "
        "value in brackets); KS: typicality. All lower is better, ± SE. One sampler seed for every row (paired).", "",
        f"Dominates = better on precision and recall beyond {config['z']:g} SE (or strictly inside the other's "
        "temperature frontier: frontier gap, recall minus the frontier's at a's precision with a paired SE, below −z·SE) "
        "and no n-gram order nor KS worse beyond z SE.", "",
        "## Seed means (differences a − b; mean ± between-seed SE (mean paired SE))", "", *_means_table(result), "",
        "## Paper's framing: student at its target steps against the teacher at its start steps", "",
        "Paper's protocol reads Δ precision and Δ entropy only; ours reads all columns and the verdict.", "",
        *_comparisons_table(result["paper"], "steps"), "",
        "## Every sampler", "", *_rows_table(result), "",
        "## Every paired comparison (per training seed)", "", *_comparisons_table(result["comparisons"], "steps"), "",
        *_unavailable_lines(result),
    ]
    if result.get("anchors"):
        a = result["anchors"]
        lines += [f"Recall anchors (exact denoiser, {a['num_heldout']} held-out sequences): {a['steps_many']} steps − true "
                  f"NLL = {_pm(a['many_minus_true'], True)} (max |·| {a['many_max_abs']:.2e}); 1 step − sum of one-step "
                  f"marginals: max |·| {a['one_step_max_abs']:.2e}.", ""]
    if result.get("smoke_check"):
        s = result["smoke_check"]
        lines += [f"Teacher precision({s['few_steps']} steps) − precision({s['many_steps']} steps) = "
                  f"{s['teacher_nll_few_minus_many']:+.4f} ± {s['se']:.4f} (z = {s['z']:.1f}).", ""]
    lines += ["## Training cost", "", "| run | coupling | optimiser steps | teacher forward passes | teacher sequence evaluations "
              "| wall time (s) |", "|---|---|---:|---:|---:|---:|"]
    t = result["cost"]["teacher"]
    lines.append(f"| teacher | | {t.get('step')} | | | {'–' if t.get('wall_time_s') is None else format(t['wall_time_s'], '.0f')}"
                 f"{' (reused)' if t.get('reused') else ''} |")
    for name, c in result["cost"]["students"].items():
        lines.append(f"| {name} | {c.get('coupling') or ''} | {c['optimizer_steps']} | {c['teacher_forward_passes']} | "
                     f"{c['teacher_sequence_evals']} | {c['wall_time_s']:.0f} |")
    lines += ["", f"Command: `{result['command']}`; total wall time {result['wall_time_s']:.0f} s.", ""]
    return "\n".join(lines)


def plots(result: dict[str, Any], out: Path) -> list[str]:
    """One figure per step count in the (precision, recall) plane: the teacher's and the oracle's temperature
    curves and every student, with SE bars."""
    import matplotlib  # heavy and optional: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (see above)

    written = []
    for steps in sorted({r["steps"] for r in result["rows"] if r["sampler"] == "oracle"}, reverse=True):
        fig, ax = plt.subplots(figsize=(6.5, 5))
        mine = [r for r in result["rows"] if r["steps"] == steps and r["recall"] is not None]
        for label, style in (("oracle", "k-o"), ("teacher", "b-s")):
            pts = sorted((r for r in mine if r["sampler"] == label), key=lambda r: r["temperature"])
            ax.errorbar([r["precision"][0] for r in pts], [r["recall"][0] for r in pts], xerr=[r["precision"][1] for r in pts],
                        yerr=[r["recall"][1] for r in pts], fmt=style, capsize=2, label=f"{label} (T sweep)")
            for r in pts:
                ax.annotate(f"T={r['temperature']:g}", (r["precision"][0], r["recall"][0]), fontsize=6,
                            textcoords="offset points", xytext=(3, 2))
        for r in mine:
            if r["sampler"] not in ("oracle", "teacher"):
                ax.errorbar(r["precision"][0], r["recall"][0], xerr=r["precision"][1], yerr=r["recall"][1], fmt="^",
                            capsize=2, label=r["sampler"])
        for r in result["rows"]:  # precision only (recall unavailable, e.g. a noise-conditioned sampler)
            if r["steps"] == steps and r["recall"] is None and r["precision"] is not None:
                ax.axvline(r["precision"][0], ls="-.", lw=1, color="tab:red", label=f"{r['sampler']} (precision; recall n/a)")
        floor = [{"precision": r["precision"][0], "recall": r["recall"][0]} for r in mine if r["arm"] in FLOOR_ARMS]
        envelope = lower_envelope(floor)
        if len(envelope) > 1:
            ax.plot([r["precision"] for r in envelope], [r["recall"] for r in envelope], "k--", lw=1,
                    label="floor envelope")
        ax.axhline(result["heldout_true_nll"], color="grey", ls="--", lw=1, label="held-out true NLL")
        ax.axvline(result["entropy_rate"], color="grey", ls=":", lw=1, label="entropy rate")
        ax.set_xlabel("precision: E_q[−log p]/L (nats/token)")
        ax.set_ylabel("recall: held-out NLL bound (nats/token)")
        ax.set_title(f"{steps} steps: lower-left is better")
        ax.legend(fontsize=6)
        fig.tight_layout()
        path = out / f"bench_pr_{steps}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(str(path))
    return written


def cost_plot(result: dict[str, Any], out: Path) -> str | None:
    """bench_cost.png: precision and recall (rows) against forward equivalents and wall time per sample (columns),
    every sampler row at T = 1 with its SE bars, one marker per sampler, step counts annotated.  None without
    rows that have both a cost and a precision."""
    rows = [r for r in result["rows"] if r.get("cost") and r["precision"] is not None and r["temperature"] == 1.0]
    if not rows:
        return None
    import matplotlib  # heavy and optional: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (see above)

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    costs = (("forward_equivalents", "network-forward equivalents per sample", 1.0),
             ("wall_s_per_sample", "wall time per sample, one thread (ms)", 1000.0))
    for column, (key, label, scale) in enumerate(costs):
        for line, metric in enumerate(("precision", "recall")):
            ax = axes[line][column]
            for sampler in dict.fromkeys(r["sampler"] for r in rows):
                mine = sorted((r for r in rows if r["sampler"] == sampler and r[metric] is not None),
                              key=lambda r: r["cost"][key])
                if not mine:
                    continue
                xs = [scale * r["cost"][key] for r in mine]
                ax.errorbar(xs, [r[metric][0] for r in mine], yerr=[r[metric][1] for r in mine], fmt="-o", ms=3,
                            capsize=2, label=sampler)
                for x, r in zip(xs, mine):
                    ax.annotate(str(r["steps"]), (x, r[metric][0]), fontsize=6, textcoords="offset points", xytext=(3, 2))
            ax.set_xscale("log")
            ax.set_ylabel(f"{metric} (nats/token, lower is better)")
            if line == 1:
                ax.set_xlabel(label)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("quality against cost (T = 1; numbers: step counts)")
    fig.tight_layout()
    path = out / "bench_cost.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------- entry points


def _per_sequence_key(key: str) -> bool:
    """The per-sequence tensors of a row (kept in bench_per_sequence.pt, left out of bench.json)."""
    return key.endswith("_per_sequence")


def bench(config: BenchConfig, command: str = "mcd bench-distill") -> dict[str, Any]:
    """Validate, then run every stage and write OUT/bench.{md,json} and the plots; returns the result dict
    (JSON-ready: the per-sequence tensors are dropped).  OUT is locked for the whole run."""
    validate(config)

    check_output_path(config.out, kind="dir", name="--out")
    with run_dir_lock(config.out, command=command):
        return _bench_owned(config, command)


def _bench_owned(config: BenchConfig, command: str) -> dict[str, Any]:
    """bench() once OUT is this process's (its students and teacher lock their own run directories)."""
    started = time.perf_counter()
    if config.teacher is not None:
        check_source(Path(config.teacher), config)
    out = Path(config.out)
    teacher_dir, teacher_cost = ensure_teacher(config)
    check_source(teacher_dir, config)
    records = train_arms(config, teacher_dir)
    evaluated = evaluate(config, teacher_dir, records)
    torch.save([{k: v for k, v in r.items() if k.endswith("_per_sequence") or k in ("steps", "sampler", "temperature")}
                for r in evaluated["rows"]], out / "bench_per_sequence.pt")  # for later paired comparisons
    result = json_ready(evaluated, drop_key=_per_sequence_key)
    result["cost"] = {
        "teacher": teacher_cost,
        "students": {n: {k: r.get(k) for k in ("coupling", "optimizer_steps", "teacher_forward_passes", "teacher_sequence_evals",
                                                "wall_time_s")} for n, r in records.items()},
    }
    result["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()}
    result["command"] = command
    result["wall_time_s"] = time.perf_counter() - started
    (out / "bench.json").write_text(strict_json(result, indent=2) + "\n")
    (out / "bench.md").write_text(markdown_report(result))
    result["plots"] = plots(result, out)
    cost_figure = cost_plot(result, out) if result.get("rows") else None
    if cost_figure is not None:
        result["plots"].append(cost_figure)
    return result
