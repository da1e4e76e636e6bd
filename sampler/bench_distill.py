"""The distillation benchmark (`mcd bench-distill`, from a BenchConfig): teacher vs MCD student vs stochastic-baseline student, across step counts.

On the embedded exact-likelihood source (sampler.data, "exact") it trains, or reuses from
OUT, a teacher, then for each training seed an MCD student and a baseline student with the
same rounds, optimiser steps, batch and loss options (the baseline spends two teacher forward
passes per step, MCD one; both are counted).  Then, for every sampling step count:

- NLL per token of the samples under the true source, its excess over the entropy rate, and
  the mean per-sequence unigram entropy, for every model;
- paired differences (all models sampled with the same sampler seed) with standard errors:
  student − teacher and MCD − baseline, per training seed, and their spread over seeds;
- the teacher's temperature-swept (entropy, NLL) frontier at that step count, and each
  student's gain at matched entropy: frontier_NLL(student entropy) − student NLL (> 0: the
  student beats every temperature of the teacher at its own diversity; a gain that vanishes
  here was bought with lower entropy, not better samples).

Outputs in OUT: bench.md (tables), bench.json (every number), bench_nll.png, bench_frontier.png.
`--smoke` is a <2-minute end-to-end run (tiny teacher, a few distillation steps, step counts
32/8/4) that checks the pipeline and that the teacher's 4-step samples are measurably worse than
its 32-step ones; it does not check the quality claims.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_EVAL_STEPS = (1024, 256, 64, 16, 8, 4)
SMOKE_EVAL_STEPS = (32, 4)


@dataclass
class BenchConfig:
    out: str = "runs/bench-distill"
    teacher: str | None = None  # reuse this teacher run instead of training one in OUT/teacher
    teacher_minutes: float | None = 10.0
    teacher_steps: int | None = None
    teacher_size: str = "tiny"
    seq_len: int | None = None
    seeds: tuple[int, ...] = (0, 1)
    start_steps: int = 64
    target_steps: int = 8
    steps_per_round: int = 200
    batch_size: int = 64
    lr: float = 3e-4
    divergence: str = "reverse_kl"
    temperature: bool = True
    coupling: str = "threshold"
    eval_steps: tuple[int, ...] = DEFAULT_EVAL_STEPS
    frontier_steps: tuple[int, ...] = (16, 8, 4)
    frontier_temperatures: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
    num_samples: int = 512
    check_samples: int = 0  # teacher samples for the 4-vs-32-step check (0: those of the table)
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 64
    sample_seed: int = 1234
    device: str = "cpu"
    progress: bool = True
    smoke: bool = False

    @classmethod
    def smoke_config(cls, out: str, **overrides: Any) -> "BenchConfig":
        base = dict(
            out=out, teacher_minutes=None, teacher_steps=400, teacher_lr=3e-3, teacher_batch_size=32, seq_len=32,
            seeds=(0, 1), start_steps=8, target_steps=4, steps_per_round=4, batch_size=16, eval_steps=SMOKE_EVAL_STEPS,
            frontier_steps=(4,), frontier_temperatures=(0.8, 1.0, 1.25), num_samples=256, check_samples=1024,
            progress=False, smoke=True,
        )
        base.update(overrides)
        return cls(**base)


# ---------------------------------------------------------------------------- stages


def _teacher_budget(config: BenchConfig) -> list[Any]:
    return [config.teacher_steps, config.teacher_minutes, config.teacher_size, config.seq_len, config.teacher_lr, config.teacher_batch_size]


def ensure_teacher(config: BenchConfig) -> tuple[Path, dict[str, Any]]:
    """The teacher run: config.teacher as given, or OUT/teacher (trained now, or reused when it
    already reached its step or time budget)."""
    from .checkpoint import checkpoint_path, load_checkpoint
    from .train import TrainConfig, train

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
    _, meta = load_checkpoint(run_dir)
    cost = {
        "budget": _teacher_budget(config),
        "step": int(meta["step"]), "wall_time_s": time.perf_counter() - start,
        "final_loss": summary.get("final_loss"),
    }
    cost_file.write_text(json.dumps(cost))
    return run_dir, {**cost, "reused": False}


def distill_students(config: BenchConfig, teacher_dir: Path) -> dict[str, dict[str, Any]]:
    """One MCD and one baseline student per seed, same budget of optimiser steps (reused when finished)."""
    from .train import DistillConfig, distill

    records: dict[str, dict[str, Any]] = {}
    for seed in config.seeds:
        for method in ("mcd", "baseline"):
            name = f"{method}-seed{seed}"
            records[name] = distill(
                DistillConfig(
                    teacher=str(teacher_dir), out=str(Path(config.out) / name), method=method, coupling=config.coupling,
                    divergence=config.divergence, start_steps=config.start_steps, target_steps=config.target_steps,
                    steps_per_round=config.steps_per_round, batch_size=config.batch_size, lr=config.lr,
                    temperature=config.temperature, seed=seed, device=config.device, progress=config.progress,
                    save_every=max(50, config.steps_per_round), log_every=10,
                )
            )
    return records


@torch.no_grad()
def sample_models(
    models: dict[str, Any], schedule: Any, num_steps: int, config: BenchConfig, seq_len: int, temperature: float = 1.0
) -> dict[str, Any]:
    """Samples of every model with one sampler seed (paired comparisons)."""
    from .sampling import ancestral_sample

    out = {}
    for name, model in models.items():
        generator = torch.Generator().manual_seed(config.sample_seed)
        out[name] = ancestral_sample(
            model, schedule, num_steps, config.num_samples, seq_len, model.mask_id, model.config.vocab_size,
            generator=generator, temperature=temperature, cached=not model.config.time_conditioning,
            device=config.device, batch_size=256,
        )
    return out


def _quality(samples: torch.Tensor, source: Any, rate: tuple[float, float]) -> dict[str, Any]:
    from .data import sample_quality

    return sample_quality(samples, source, entropy_rate=rate)


def evaluate(config: BenchConfig, teacher_dir: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every number of the benchmark (see the module docstring)."""
    from tqdm import tqdm

    from .checkpoint import load_denoiser, load_schedule, load_source
    from .data import frontier_at_entropy, json_ready, paired_difference

    teacher, meta = load_denoiser(teacher_dir, device=config.device, use_ema=True)
    schedule, source = load_schedule(meta), load_source(meta)
    seq_len = int(meta.get("seq_len") or teacher.config.seq_len)
    rate = source.entropy_rate(seq_len)
    models = {"teacher": teacher}
    for name in records:
        models[name], _ = load_denoiser(Path(config.out) / name, device=config.device, use_ema=True)
    students = [n for n in models if n != "teacher"]

    rows: list[dict[str, Any]] = []
    frontier: dict[int, list[dict[str, float]]] = {}
    teacher_per_seq: dict[int, torch.Tensor] = {}
    steps_iter = tqdm(config.eval_steps, desc="evaluating", disable=not config.progress, leave=False)
    for num_steps in steps_iter:
        samples = sample_models(models, schedule, num_steps, config, seq_len)
        quality = {name: _quality(s, source, rate) for name, s in samples.items()}
        if num_steps in config.frontier_steps:
            points = []
            for temp in config.frontier_temperatures:
                q = quality["teacher"] if temp == 1.0 else _quality(
                    sample_models({"teacher": teacher}, schedule, num_steps, config, seq_len, temp)["teacher"], source, rate
                )
                points.append({"temperature": temp, "unigram_entropy": q["unigram_entropy"], "nll_per_token": q["nll_per_token"]})
            frontier[num_steps] = points
        for name in models:
            q = quality[name]
            row = {"steps": num_steps, "model": name, **{k: v for k, v in json_ready(q).items() if not k.startswith("per_")}}
            if name != "teacher":
                row["minus_teacher"] = paired_difference(q["per_sequence_nll"], quality["teacher"]["per_sequence_nll"])
                if name.startswith("mcd-"):
                    partner = name.replace("mcd-", "baseline-")
                    row["minus_baseline"] = paired_difference(q["per_sequence_nll"], quality[partner]["per_sequence_nll"])
                if num_steps in frontier:
                    matched = frontier_at_entropy(frontier[num_steps], q["unigram_entropy"], outside="linear")
                    covered = [p["unigram_entropy"] for p in frontier[num_steps]]
                    row["frontier_nll_at_entropy"] = matched
                    row["gain_at_matched_entropy"] = matched - q["nll_per_token"]
                    row["matched_entropy_extrapolated"] = not min(covered) <= q["unigram_entropy"] <= max(covered)
            rows.append(row)
        teacher_per_seq[num_steps] = quality["teacher"]["per_sequence_nll"]
    # the smoke check: the teacher's 4-step samples against its 32-step ones (paired by sampler seed)
    smoke_check = None
    if 4 in teacher_per_seq and 32 in teacher_per_seq:
        if config.check_samples > config.num_samples:  # a larger teacher-only draw for a sharper check
            check = BenchConfig(**{**config.__dict__, "num_samples": config.check_samples})
            for n in (4, 32):
                drawn = sample_models({"teacher": teacher}, schedule, n, check, seq_len)["teacher"]
                teacher_per_seq[n] = _quality(drawn, source, rate)["per_sequence_nll"]
        diff, se = paired_difference(teacher_per_seq[4], teacher_per_seq[32])
        smoke_check = {"teacher_nll_4_minus_32": diff, "se": se, "z": diff / se if se > 0 else float("inf")}

    spread = seed_spread(rows, config)
    return {
        "entropy_rate": rate[0], "entropy_rate_se": rate[1], "source": source.name, "seq_len": seq_len,
        "rows": rows, "frontier": {str(k): v for k, v in frontier.items()}, "seed_spread": spread,
        "students": students, "smoke_check": smoke_check,
    }


def seed_spread(rows: list[dict[str, Any]], config: BenchConfig) -> list[dict[str, Any]]:
    """Per step count and method: mean over training seeds of (NLL, student − teacher, gain at
    matched entropy, MCD − baseline) and their spread (min, max, sample std)."""
    out = []
    steps_list = sorted({r["steps"] for r in rows}, reverse=True)
    for num_steps in steps_list:
        for method in ("mcd", "baseline"):
            mine = [r for r in rows if r["steps"] == num_steps and r["model"].startswith(method + "-")]
            if not mine:
                continue
            entry: dict[str, Any] = {"steps": num_steps, "method": method, "seeds": len(mine)}
            for key, get in (
                ("nll_per_token", lambda r: r["nll_per_token"]),
                ("minus_teacher", lambda r: r["minus_teacher"][0]),
                ("minus_baseline", lambda r: r["minus_baseline"][0] if "minus_baseline" in r else None),
                ("gain_at_matched_entropy", lambda r: r.get("gain_at_matched_entropy")),
            ):
                values = [v for v in (get(r) for r in mine) if v is not None]
                if values:
                    mean = sum(values) / len(values)
                    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
                    entry[key] = {"mean": mean, "min": min(values), "max": max(values), "std": std}
            out.append(entry)
    return out


# ---------------------------------------------------------------------------- reporting


def _pm(value: tuple[float, float] | list[float]) -> str:
    return f"{value[0]:+.4f} ± {value[1]:.4f}"


def markdown_report(result: dict[str, Any]) -> str:
    lines = [
        f"# bench-distill: teacher vs MCD vs stochastic baseline ({result['source']}, L = {result['seq_len']})",
        "",
        f"Entropy rate of the source: {result['entropy_rate']:.4f} ± {result['entropy_rate_se']:.4f} nats/token. "
        "NLL under the true source, nats per token; differences are paired (same sampler seed) with their standard errors; "
        "gain at matched entropy = teacher frontier NLL at the student's unigram entropy − student NLL (> 0: better; "
        "'extrapolated' when the student's entropy lies outside the swept temperatures).",
        "",
        "## Quality by step count",
        "",
        "| steps | model | NLL | excess | unigram H | − teacher | MCD − baseline | gain @ matched H |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['steps']} | {r['model']} | {r['nll_per_token']:.4f} ± {r['nll_se']:.4f} | {r['excess']:.4f} | "
            f"{r['unigram_entropy']:.4f} | {_pm(r['minus_teacher']) if 'minus_teacher' in r else ''} | "
            f"{_pm(r['minus_baseline']) if 'minus_baseline' in r else ''} | "
            f"{format(r['gain_at_matched_entropy'], '+.4f') if 'gain_at_matched_entropy' in r else ''}"
            f"{' (extrapolated)' if r.get('matched_entropy_extrapolated') else ''} |"
        )
    lines += ["", "## Spread over training seeds (mean [min, max])", "",
              "| steps | method | seeds | NLL | − teacher | MCD − baseline | gain @ matched H |", "|---:|---|---:|---:|---:|---:|---:|"]

    def fmt(entry: dict[str, Any], key: str) -> str:
        v = entry.get(key)
        return "" if v is None else f"{v['mean']:+.4f} [{v['min']:+.4f}, {v['max']:+.4f}]"

    for e in result["seed_spread"]:
        lines.append(f"| {e['steps']} | {e['method']} | {e['seeds']} | {fmt(e, 'nll_per_token')} | {fmt(e, 'minus_teacher')} | "
                     f"{fmt(e, 'minus_baseline')} | {fmt(e, 'gain_at_matched_entropy')} |")
    lines += ["", "## Teacher temperature frontier", "", "| steps | temperature | unigram H | NLL |", "|---:|---:|---:|---:|"]
    for steps, points in result["frontier"].items():
        for p in points:
            lines.append(f"| {steps} | {p['temperature']:.2f} | {p['unigram_entropy']:.4f} | {p['nll_per_token']:.4f} |")
    lines += ["", "## Training cost (equal optimiser steps; teacher forward passes counted)", "",
              "| run | optimiser steps | teacher forward passes | teacher sequence evaluations | wall time (s) |", "|---|---:|---:|---:|---:|"]
    t = result["cost"]["teacher"]
    wall = t.get("wall_time_s")
    wall_text = "–" if wall is None else f"{wall:.0f}"
    lines.append(f"| teacher | {t.get('step')} | | | {wall_text}{' (reused)' if t.get('reused') else ''} |")
    for name, c in result["cost"]["students"].items():
        lines.append(f"| {name} | {c['optimizer_steps']} | {c['teacher_forward_passes']} | {c['teacher_sequence_evals']} | {c['wall_time_s']:.0f} |")
    if result.get("smoke_check"):
        s = result["smoke_check"]
        lines += ["", f"Teacher NLL(4 steps) − NLL(32 steps) = {s['teacher_nll_4_minus_32']:+.4f} ± {s['se']:.4f} (z = {s['z']:.1f})."]
    lines += ["", f"Command: `{result['command']}`; total wall time {result['wall_time_s']:.0f} s.", ""]
    return "\n".join(lines)


def plots(result: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = sorted({r["model"] for r in result["rows"]}, key=lambda n: (n != "teacher", n))
    for name in models:
        rs = sorted((r for r in result["rows"] if r["model"] == name), key=lambda r: r["steps"])
        ax.errorbar([r["steps"] for r in rs], [r["nll_per_token"] for r in rs], yerr=[r["nll_se"] for r in rs],
                    marker="o", capsize=3, label=name, linestyle="-" if name == "teacher" else "--" if name.startswith("mcd") else ":")
    ax.axhline(result["entropy_rate"], color="k", lw=0.8, label="entropy rate")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("NLL per token under the true source (nats)")
    ax.set_title("teacher vs MCD vs stochastic baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench_nll.png", dpi=120)
    plt.close(fig)
    written.append(str(out / "bench_nll.png"))

    if result["frontier"]:
        fig, axes = plt.subplots(1, len(result["frontier"]), figsize=(4.5 * len(result["frontier"]), 4), squeeze=False)
        for ax, (steps, points) in zip(axes[0], result["frontier"].items()):
            ax.plot([p["unigram_entropy"] for p in points], [p["nll_per_token"] for p in points], "k-o", label="teacher (T sweep)")
            for p in points:
                ax.annotate(f"T={p['temperature']:g}", (p["unigram_entropy"], p["nll_per_token"]), fontsize=7)
            for r in result["rows"]:
                if str(r["steps"]) == steps and r["model"] != "teacher":
                    ax.plot(r["unigram_entropy"], r["nll_per_token"], "s" if r["model"].startswith("mcd") else "^", label=r["model"])
            ax.set_title(f"{steps} steps")
            ax.set_xlabel("unigram entropy (nats)")
            ax.set_ylabel("NLL per token (nats)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "bench_frontier.png", dpi=120)
        plt.close(fig)
        written.append(str(out / "bench_frontier.png"))
    return written


# ---------------------------------------------------------------------------- entry points


def bench(config: BenchConfig, command: str = "mcd bench-distill") -> dict[str, Any]:
    """Run every stage, write OUT/bench.{md,json} and the plots; returns the result dict."""
    from .train.distill import round_step_counts

    round_step_counts(config.start_steps, config.target_steps)  # bad input fails before training
    if not config.seeds:
        raise ValueError("seeds must name at least one training seed")
    for s in config.eval_steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"eval_steps must be positive integers, got {s!r}")
    from .rundir import check_output_path, run_dir_lock

    check_output_path(config.out, kind="dir", name="--out")
    with run_dir_lock(config.out, command=command):
        return _bench_owned(config, command)


def _bench_owned(config: BenchConfig, command: str) -> dict[str, Any]:
    """bench() once OUT is this process's (its students and teacher lock their own run directories)."""
    started = time.perf_counter()
    out = Path(config.out)
    teacher_dir, teacher_cost = ensure_teacher(config)
    records = distill_students(config, teacher_dir)
    result = evaluate(config, teacher_dir, records)
    result["cost"] = {
        "teacher": teacher_cost,
        "students": {n: {k: r[k] for k in ("optimizer_steps", "teacher_forward_passes", "teacher_sequence_evals", "wall_time_s")} for n, r in records.items()},
    }
    result["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()}
    result["command"] = command
    result["wall_time_s"] = time.perf_counter() - started
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "bench.md").write_text(markdown_report(result))
    result["plots"] = plots(result, out)
    return result
