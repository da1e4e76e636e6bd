"""Text benchmark: every sampler of a text teacher (and its students, and the autoregressive reference) under the
field's protocol (generative perplexity at matched entropy) and ours (recall, n-gram fidelity), with its cost.

How to run (the `text` extra installed): `mcd bench-text` (sampler.cli.bench_text), e.g.

    mcd bench-text --teacher runs/text/teacher --ar runs/text/ar --data shakespeare --evaluator smollm2 \
        --num 64 [--steps 1024 256 64 16 8 4] [--confidence-steps 64 16 8 4] [--temperatures 0.8 0.9 1.0] \
        [--student RUN[:STEPS] ...] [--recall-num 16 --recall-ks 1 4 16] [--threads 1] --out runs/text/bench
    mcd bench-text --smoke --out /tmp/text-bench-smoke   # under a minute, offline

`--data` is the corpus spec the teacher was trained on (`shakespeare`, or `text:PATH?tokenizer=byte`); the
held-out text is that source's `split="valid"`.  `--smoke` writes a tiny corpus to a temporary directory,
trains a tiny teacher and AR model a few steps, and scores with a tiny randomly initialised evaluator (no
download).

Rows (sampler, steps), each at every temperature T of `--temperatures`, all with one sampler seed:
- `teacher/ancestral`: the teacher's ancestral sampler (cached: the network runs only when a token is revealed),
- `teacher/confidence`: its confidence-ordered sampler (max-prob confidence, `sampler.confidence`),
- `student:NAME`: each student with its own sampler (`open_run(path).sample`) at its steps,
- `ar`: the autoregressive reference (one position at a time), and `heldout`: held-out text itself.

Per row:
- gen NLL per character (nats: Σ_i S_i / Σ_i c_i of the evaluator's summed NLL S_i over characters c_i) and
  per evaluator token (its gen PPL), `sampler.quality.text_quality` / `gen_perplexity`;
- entropy: the mean over samples of the entropy (nats) of each sample's own token frequencies in the MODEL's
  tokens (bytes for a byte tokenizer; `unigram_entropy_per_sequence`), and its SE;
- distinct-2 / distinct-3 over all samples' model tokens;
- character n-gram fidelity: JS divergence of pooled 1/2/3-gram frequencies against a large held-out sample,
  beside `reference_js` (held-out text of the same size: the floor at that sample size);
- recall (at T = `--recall-temperature` only): the held-out NLL bound −log q(x)/L of the row's sampler, in nats
  per token and per character: reveal-pattern bound with `recall_versus_k` (k, last ×4 change ± SE, ESS) for
  ancestral samplers, the sequential importance bound (same diagnostic) for a shadow student, exact for the
  confidence sampler (`confidence_log_likelihood`) and the AR model;
- cost: network forward passes per sample and full-sequence forward equivalents per sample (positions
  processed / L; the AR sampler has no KV cache, so it processes (L+1)/2 sequence equivalents), counted at the
  token embedding of every backbone in the model (and, for a shadow student, one pass of its noise head per call,
  as `sampler.cost` counts it) with all `--num` samples in one batch, and wall seconds per
  sample on `--threads` threads.

Matched entropy: for each (sampler, steps) the points (entropy, gen NLL) over temperatures are interpolated
linearly at the target entropy (`frontier_at_entropy`; extrapolated from the two nearest points, and flagged,
when the target lies outside), target = the held-out text's own mean per-sample unigram entropy (same length,
same tokens).  Writes OUT/text_bench.{json,md} and OUT/text_bench_{steps,cost,precision_recall}.png.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from ..autoregressive import nll_per_sequence
from ..configs import TextBenchConfig, spec_path, student_steps
from ..confidence import confidence_log_likelihood, confidence_sample
from ..data import frontier_at_entropy, source_or_stored_tokenizer, strict_json, unigram_entropy_per_sequence
from ..data.text import StoredTokenizerSource
from ..device import apply_threads, pick_device
from ..model import TransformerDenoiser
from ..protocols import reads_shadow_noise
from ..quality.gen_perplexity import load_evaluator, ratio_estimate
from ..quality.recall import mean_and_se
from ..quality.recall_convergence import estimator_for, recall_versus_k
from ..quality.text_quality import distinct_ngrams, gen_nll_per_character, text_ngram_fidelity
from ..quality.tiny_evaluator import make_tiny_evaluator
from ..train import DistillConfig, TrainConfig, distill, train
from .eval import validation_elbo_per_sequence
from .open import OpenedRun, open_run

NUM_SHOWN = 3  # decoded samples per row in the .md


# ---------------------------------------------------------------------------------------------------- cost


@contextmanager
def counting_forwards(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the rows and positions entering the token embedding of every TransformerDenoiser in `model` (one
    entry per network forward pass, whichever method the sampler calls: forward, or hidden for the AR model),
    plus one pass per call of a shadow student for its noise head (the convention of `sampler.cost.passes_per_call`:
    base trunk + noise head, so a causal student's step costs 2)."""
    counts = {"rows": 0, "positions": 0}

    def hook(_module: nn.Module, inputs: tuple, _output: Any) -> None:
        tokens = inputs[0]
        counts["rows"] += int(tokens.shape[0]) if tokens.dim() > 1 else 1
        counts["positions"] += int(tokens.numel())

    backbones = [m for m in model.modules() if isinstance(m, TransformerDenoiser)]
    if not backbones:
        raise ValueError("model holds no TransformerDenoiser backbone: its forward passes cannot be counted")
    heads = [m for m in model.modules() if reads_shadow_noise(m)]  # a shadow student, called with z [B, L] first
    handles = [module.register_forward_hook(hook) for module in [b.embed for b in backbones] + heads]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def timed_draw(model: nn.Module, draw: Callable[[], torch.Tensor], seq_len: int) -> tuple[torch.Tensor, dict]:
    """(samples, cost): forward passes and full-sequence equivalents per sample, wall seconds per sample."""
    with counting_forwards(model) as counts:
        start = time.perf_counter()
        samples = draw()
        seconds = time.perf_counter() - start
    n = samples.shape[0]
    return samples, {"forward_passes": counts["rows"] / n, "sequence_equivalents": counts["positions"] / (n * seq_len),
                     "seconds_per_sample": seconds / n, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------- samplers


class SamplerRow(NamedTuple):
    """One sampler at one step count: `draw(temperature, num, seed)` -> samples; `recall(heldout, T)` -> dict."""

    name: str
    steps: int | None
    model: nn.Module
    draw: Callable[[float, int, int], torch.Tensor]
    recall: Callable[[torch.Tensor, float], dict[str, Any]]


def reveal_pattern_recall(run: OpenedRun, steps: int, config: TextBenchConfig) -> Callable[..., dict[str, Any]]:
    """The sampler's held-out NLL bound at `steps` (`recall_versus_k`), its k and ×4-change diagnostic: over reveal
    patterns (--recall-estimator) for an ancestral sampler, the sequential importance bound for a shadow student's
    noise-shared sampler (as `recall_with_diagnostic` chooses)."""
    estimator = estimator_for(run.model, config.recall_estimator)

    def recall(heldout: torch.Tensor, temperature: float) -> dict[str, Any]:
        if config.recall_max_steps is not None and steps > config.recall_max_steps:
            return {"unavailable": f"skipped: {steps} steps > --recall-max-steps {config.recall_max_steps}"}
        start = time.perf_counter()
        report = recall_versus_k(run.model, run.schedule, heldout, steps=steps, estimator=estimator,
                                 temperature=temperature, ks=config.recall_ks, seed=config.seed, device=run.device)
        levels = [{k: v for k, v in level.items() if k != "per_sequence"} for level in report["levels"]]
        return {"value": report["recall"], "se": report["recall_se"], "bound": f"reveal patterns ({report['estimator']})",
                "k": report["k"], "change_from_k_over_4": report["change"], "change_se": report["change_se"],
                "ess": report["ess"], "remaining": report["remaining"], "levels": levels,
                "seconds": time.perf_counter() - start}
    return recall


def exact_recall(log_likelihood_per_token: Callable[[torch.Tensor, float], torch.Tensor], bound: str) -> Callable:
    """Recall from an exact −log q(x)/L per held-out sequence."""
    def recall(heldout: torch.Tensor, temperature: float) -> dict[str, Any]:
        start = time.perf_counter()
        value, se = mean_and_se(log_likelihood_per_token(heldout, temperature), "recall")
        return {"value": value, "se": se, "bound": bound, "k": None, "seconds": time.perf_counter() - start}
    return recall


def teacher_rows(run: OpenedRun, config: TextBenchConfig) -> list[SamplerRow]:
    """The teacher's ancestral sampler at each of --steps and its confidence-ordered sampler at --confidence-steps."""
    model_config, seq_len = run.model.config, run.model.config.seq_len
    rows = []
    for steps in sorted(set(config.steps), reverse=True):
        def draw(t: float, n: int, seed: int, steps: int = steps) -> torch.Tensor:
            return run.sample(num_samples=n, num_steps=steps, seq_len=seq_len, seed=seed, temperature=t, batch_size=n)
        rows.append(SamplerRow("teacher/ancestral", steps, run.model, draw, reveal_pattern_recall(run, steps, config)))
    confidence_steps = config.steps if config.confidence_steps is None else config.confidence_steps
    for steps in sorted(set(confidence_steps), reverse=True):
        def draw(t: float, n: int, seed: int, steps: int = steps) -> torch.Tensor:
            return confidence_sample(run.model, run.schedule, num_samples=n, num_steps=steps, seq_len=seq_len,
                                     mask_id=model_config.mask_id, vocab_size=model_config.vocab_size, temperature=t,
                                     generator=torch.Generator().manual_seed(seed), device=run.device, batch_size=n)

        def nll(x: torch.Tensor, t: float, steps: int = steps) -> torch.Tensor:
            return -confidence_log_likelihood(run.model, run.schedule, x, num_steps=steps, temperature=t,
                                              device=run.device) / x.shape[1]
        rows.append(SamplerRow("teacher/confidence", steps, run.model, draw, exact_recall(nll, "exact (max-prob confidence)")))
    return rows


def student_row(spec: str, config: TextBenchConfig, teacher: OpenedRun, label: str) -> SamplerRow:
    """A student run `PATH[:STEPS]` sampled by its own kind's sampler (`open_run(path).sample`) at STEPS (default:
    its distillation's target steps, meta["distill"]["config"]["target_steps"]); ValueError naming --student when
    it has no step count or its vocabulary or length differ from the teacher's."""
    path = spec_path(spec)
    run = open_run(path, device=teacher.device, threads=config.threads)
    steps = student_steps(spec) or run.meta.get("distill", {}).get("config", {}).get("target_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--student {spec!r}: no step count given and none in its meta; pass RUN:STEPS")
    shape = dict(run.meta.get("model_config") or {})
    shape = {key: getattr(getattr(run.model, "config", None), key, shape.get(key)) for key in ("vocab_size", "seq_len")}
    expected = {key: getattr(teacher.model.config, key) for key in ("vocab_size", "seq_len")}
    if shape != expected:
        raise ValueError(f"--student {spec!r} has {shape}, the teacher {expected}: not a student of this teacher")

    def draw(t: float, n: int, seed: int) -> torch.Tensor:
        return run.sample(num_samples=n, num_steps=steps, seq_len=shape["seq_len"], seed=seed, temperature=t, batch_size=n)

    return SamplerRow(f"student:{label}", steps, run.model, draw, reveal_pattern_recall(run, steps, config))


def student_labels(specs: tuple[str, ...]) -> list[str]:
    """Each student's row name: its directory's name, or its whole path where two students share a name."""
    names = [Path(spec_path(spec)).name for spec in specs]
    return [name if names.count(name) == 1 else spec_path(spec) for name, spec in zip(names, specs)]


def ar_row(run: OpenedRun) -> SamplerRow:
    """The autoregressive reference: L forward passes of growing prefixes; its recall is its exact NLL."""
    seq_len = run.model.config.seq_len

    def draw(t: float, n: int, seed: int) -> torch.Tensor:
        return run.sample(num_samples=n, num_steps=seq_len, seq_len=seq_len, seed=seed, temperature=t)

    def nll(x: torch.Tensor, t: float) -> torch.Tensor:
        if t != 1.0:
            raise ValueError("the AR model's exact NLL is at temperature 1 only")
        return nll_per_sequence(run.model, x.to(run.device)).double().cpu()
    return SamplerRow("ar", seq_len, run.model, draw, exact_recall(nll, "exact"))


# ----------------------------------------------------------------------------------------------- measuring


class HeldOut(NamedTuple):
    """Held-out text of the source (split "valid"): the n-gram law, a same-size reference, the recall set."""

    law: torch.Tensor
    reference: torch.Tensor
    recall: torch.Tensor
    target_entropy: float
    target_entropy_se: float


def held_out(source: Any, seq_len: int, config: TextBenchConfig) -> HeldOut:
    """Three independent held-out samples (seeds fixed from --seed); the target entropy is the law sample's mean
    per-sample unigram entropy in the model's tokens."""
    def batch(n: int, offset: int) -> torch.Tensor:
        return source.sample_batch(n, seq_len, torch.Generator().manual_seed(1_000_003 * offset + config.seed), split="valid")
    law = batch(config.heldout_num, 1)
    entropy, entropy_se = mean_and_se(unigram_entropy_per_sequence(law, source.vocab_size), "held-out entropy")
    return HeldOut(law, batch(config.num, 2), batch(config.recall_num, 3), entropy, entropy_se)


def text_metrics(samples: torch.Tensor, source: Any, evaluator: Any, heldout: HeldOut, seed: int,
                 num_bootstrap: int) -> dict[str, Any]:
    """Gen NLL per character and per evaluator token, entropy, distinct-2/3, n-gram fidelity of one sample set."""
    texts = [source.decode(row) for row in samples]
    sums, counts = evaluator.score(texts)
    per_token = ratio_estimate(sums, counts)
    entropy, entropy_se = mean_and_se(unigram_entropy_per_sequence(samples, source.vocab_size), "entropy")
    fidelity = text_ngram_fidelity(samples, heldout.law, heldout.reference, source.vocab_size, orders=(1, 2, 3),
                                   num_bootstrap=num_bootstrap, generator=torch.Generator().manual_seed(seed))
    return {**gen_nll_per_character(sums, texts), "gen_nll_token": per_token["gen_nll"],
            "gen_nll_token_se": per_token["gen_nll_se"], "gen_ppl_token": per_token["gen_ppl"],
            "evaluator_tokens": per_token["num_tokens"], "unigram_entropy": entropy, "unigram_entropy_se": entropy_se,
            "distinct_2": distinct_ngrams(samples, 2), "distinct_3": distinct_ngrams(samples, 3),
            "fidelity_js": {str(order): row for order, row in fidelity.items()}, "examples": texts[:NUM_SHOWN]}


def tokens_per_character(source: Any, tokens: torch.Tensor) -> float:
    """Model tokens per character of the decoded text (1 for a byte tokenizer on ASCII text)."""
    return tokens.numel() / sum(len(source.decode(row)) for row in tokens)


def measure_row(row: SamplerRow, source: Any, evaluator: Any, heldout: HeldOut, config: TextBenchConfig,
                per_char: float) -> list[dict[str, Any]]:
    """One entry per temperature: the text metrics and cost; recall at --recall-temperature."""
    out = []
    for temperature in config.temperatures:
        samples, cost = timed_draw(row.model, lambda: row.draw(temperature, config.num, config.seed).cpu(),
                                   heldout.law.shape[1])
        entry = {"sampler": row.name, "steps": row.steps, "temperature": temperature, "cost": cost,
                 **text_metrics(samples, source, evaluator, heldout, config.seed, config.bootstrap)}
        if temperature == config.recall_temperature:
            recall = row.recall(heldout.recall, temperature)
            if "value" in recall:
                recall.update({"value_per_char": recall["value"] * per_char, "se_per_char": recall["se"] * per_char})
            entry["recall"] = recall
        out.append(entry)
        print(f"  {row.name} steps={row.steps} T={temperature:g}: gen NLL/char {entry['gen_nll_char']:.3f}, "
              f"H {entry['unigram_entropy']:.3f}, {cost['seconds_per_sample']:.3f} s/sample", file=sys.stderr, flush=True)
    return out


def matched_entropy(entries: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per (sampler, steps): gen NLL per character and per token interpolated at the target entropy along the
    temperature frontier (linear; extrapolated from the nearest two points and flagged outside the range)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault((entry["sampler"], entry["steps"]), []).append(entry)
    out = []
    for (sampler, steps), group in groups.items():
        entropies = [e["unigram_entropy"] for e in group]
        row = {"sampler": sampler, "steps": steps, "target_entropy": target,
               "in_range": min(entropies) <= target <= max(entropies), "num_temperatures": len(group),
               "cost": {key: sum(e["cost"][key] for e in group) / len(group) for key in group[0]["cost"]}}
        for unit in ("char", "token"):
            points = [(e["unigram_entropy"], e[f"gen_nll_{unit}"]) for e in group]
            nll = frontier_at_entropy(points, target, outside="linear")
            row[f"gen_nll_{unit}"], row[f"gen_ppl_{unit}"] = nll, math.exp(nll)
        out.append(row)
    return out


def heldout_nll(teacher: OpenedRun, ar: OpenedRun | None, source: Any, config: TextBenchConfig) -> dict[str, Any]:
    """Both models' held-out NLL on the same held-out windows, per token and per character: the teacher's ELBO
    (an upper bound on its −log p(x)/L; 4 stratified times per window) and the AR model's exact NLL."""
    model_config = teacher.model.config
    x = source.sample_batch(config.nll_num, model_config.seq_len, torch.Generator().manual_seed(4_000_037 + config.seed),
                            split="valid")
    per_char = tokens_per_character(source, x)
    elbo = validation_elbo_per_sequence(teacher.model, teacher.schedule, x, model_config.mask_id, model_config.vocab_size,
                                        torch.Generator().manual_seed(5_000_011 + config.seed), draws=4, device=teacher.device)
    rows = {"teacher_elbo": elbo.double()}
    if ar is not None:
        rows["ar_exact"] = nll_per_sequence(ar.model, x.to(ar.device)).double().cpu()
    out: dict[str, Any] = {"num_windows": config.nll_num, "seq_len": model_config.seq_len, "tokens_per_char": per_char}
    for name, values in rows.items():
        value, se = mean_and_se(values, name)
        out[name] = {"per_token": value, "se": se, "per_char": value * per_char, "se_per_char": se * per_char}
    for name, run in (("teacher", teacher), ("ar", ar)):
        if run is not None:
            out[f"{name}_step"] = run.meta.get("step")
            out[f"{name}_parameters"] = sum(p.numel() for p in run.model.parameters())
    return out


def heldout_entry(source: Any, evaluator: Any, heldout: HeldOut, config: TextBenchConfig) -> dict[str, Any]:
    """Held-out text scored like a sampler row (its reference sample): the data's own gen PPL and entropy."""
    return {"sampler": "heldout", "steps": None, "temperature": None,
            **text_metrics(heldout.reference, source, evaluator, heldout, config.seed, config.bootstrap)}


INCLUDE_KEYS = ("data", "num", "seed", "seq_len", "evaluator", "recall_num", "recall_temperature")


def included_rows(path: str, config: TextBenchConfig, evaluator: str, seq_len: int, target: float) -> list[dict]:
    """The sampler rows of an earlier report (not its held-out row); ValueError naming --include unless it was
    measured on the same data, evaluator, seed, --num, length and held-out sample (its target entropy)."""
    earlier = json.loads(Path(path).read_text())
    ours = {"data": config.data, "num": config.num, "seed": config.seed, "seq_len": seq_len, "evaluator": evaluator,
            "recall_num": config.recall_num, "recall_temperature": config.recall_temperature}
    differing = {key: (earlier.get(key), ours[key]) for key in INCLUDE_KEYS if earlier.get(key) != ours[key]}
    if earlier.get("target_entropy", {}).get("value") != target:
        differing["target_entropy"] = (earlier.get("target_entropy", {}).get("value"), target)
    if differing:
        raise ValueError(f"--include {path!r} was measured differently (earlier, now): {differing}")
    return [dict(row, included_from=str(path)) for row in earlier["rows"] if row["sampler"] != "heldout"]


def open_source(teacher: OpenedRun, data: str) -> Any:
    """The teacher's source rebuilt on the corpus the user named (held-out text needs it)."""
    source = source_or_stored_tokenizer(teacher.meta.get("source"), teacher.meta.get("tokenizer"), corpus=data)
    if isinstance(source, StoredTokenizerSource):
        raise ValueError(f"--data {data!r}: the corpus is unavailable ({source.reason}); held-out text needs it")
    if source.vocab_size != teacher.model.config.vocab_size:
        raise ValueError(f"--data {data!r} gives vocab_size {source.vocab_size}, the teacher has "
                         f"{teacher.model.config.vocab_size}: not the corpus it was trained on")
    return source


def run_bench(config: TextBenchConfig) -> dict[str, Any]:
    """Every row measured; the report (JSON-able)."""
    apply_threads(config.threads)
    start = time.perf_counter()
    device = pick_device(config.device)
    teacher = open_run(config.teacher, device=device, threads=config.threads)
    ar = open_run(config.ar, device=device, threads=config.threads) if config.ar else None
    if ar is not None and ar.kind.name != "ar":
        raise ValueError(f"--ar {config.ar!r} is a {ar.kind.name!r} run, not an autoregressive reference")
    source = open_source(teacher, config.data)
    evaluator = load_evaluator(config.evaluator, device=device)
    seq_len = teacher.model.config.seq_len
    heldout = held_out(source, seq_len, config)
    per_char = tokens_per_character(source, heldout.law)
    included = [entry for path in config.include  # checked against this run before any row is measured
                for entry in included_rows(path, config, evaluator.name, seq_len, heldout.target_entropy)]
    rows = teacher_rows(teacher, config) + [student_row(spec, config, teacher, label)
                                            for spec, label in zip(config.students, student_labels(config.students))]
    if ar is not None:
        rows.append(ar_row(ar))
    entries = [heldout_entry(source, evaluator, heldout, config)]
    for row in rows:
        entries += measure_row(row, source, evaluator, heldout, config, per_char)
    entries += included
    return {
        "teacher": str(config.teacher), "ar": config.ar, "students": list(config.students), "data": config.data,
        "source": source.describe(), "seq_len": seq_len, "vocab_size": source.vocab_size, "evaluator": evaluator.name,
        "num": config.num, "seed": config.seed, "temperatures": list(config.temperatures), "threads": config.threads,
        "recall_temperature": config.recall_temperature, "recall_num": config.recall_num, "steps": list(config.steps),
        "device": str(device), "included": list(config.include),
        "target_entropy": {"value": heldout.target_entropy, "se": heldout.target_entropy_se,
                           "what": f"mean per-sample unigram entropy (nats) of {config.heldout_num} held-out windows of "
                                   f"{seq_len} model tokens (the samples' entropy is measured the same way)"},
        "heldout_nll": heldout_nll(teacher, ar, source, config),
        "tokens_per_char": per_char, "rows": entries,
        "matched": matched_entropy([e for e in entries if e["sampler"] != "heldout"], heldout.target_entropy),
        "wall_seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------ report


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _recall_cell(recall: dict[str, Any] | None) -> str:
    if recall is None:
        return ""
    if "value" not in recall:
        return "n/a"
    k = f", k={recall['k']}, Δ(k/4) {recall['change_from_k_over_4']:+.3f}±{recall['change_se']:.3f}" if recall["k"] else ""
    return f"{recall['value_per_char']:.3f}±{recall['se_per_char']:.3f} ({recall['bound']}{k})"


def format_markdown(report: dict[str, Any]) -> str:
    """The report's tables, its held-out NLLs, and a few decoded samples per row."""
    target, nll = report["target_entropy"], report["heldout_nll"]
    lines = [f"# Text benchmark: {report['source'].get('spec')} (L = {report['seq_len']}, V = {report['vocab_size']})", "",
             f"Evaluator {report['evaluator']}; {report['num']} samples per row, seed {report['seed']}, "
             f"{report['threads']} thread(s); wall time {report['wall_seconds']:.0f} s.", "",
             *([f"Rows included from earlier runs (same held-out sample, evaluator and seed; their wall times were "
                f"measured then): {', '.join(report['included'])}.", ""] if report.get("included") else []),
             f"Command: `{report.get('command', '')}`", "",
             f"Target entropy {target['value']:.4f} ± {target['se']:.4f} nats: {target['what']}.", "",
             "## Held-out NLL (same held-out windows)", "",
             "| model | parameters | step | nats/token | nats/char |", "|---|---|---|---|---|"]
    for name, label in (("teacher_elbo", "teacher (ELBO bound)"), ("ar_exact", "AR (exact)")):
        if name in nll:
            who = name.split("_")[0]
            lines.append(f"| {label} | {nll.get(who + '_parameters')} | {nll.get(who + '_step')} | "
                         f"{nll[name]['per_token']:.4f} ± {nll[name]['se']:.4f} | {nll[name]['per_char']:.4f} |")
    lines += ["", "## Gen PPL at matched entropy", "",
              "| sampler | steps | gen PPL/char | gen PPL/token | target in range | forward passes | seq. equiv. | s/sample |",
              "|---|---|---|---|---|---|---|---|"]
    for m in report["matched"]:
        lines.append(f"| {m['sampler']} | {m['steps']} | {_num(m['gen_ppl_char'])} | {_num(m['gen_ppl_token'], 1)} | "
                     f"{'yes' if m['in_range'] else 'no (extrapolated)'} | {_num(m['cost']['forward_passes'], 1)} | "
                     f"{_num(m['cost']['sequence_equivalents'], 1)} | {_num(m['cost']['seconds_per_sample'], 4)} |")
    lines += ["", "## Every row", "",
              "| sampler | steps | T | gen NLL/char | gen PPL/token | entropy | distinct-2 | distinct-3 | JS1 | JS2 | JS3 | "
              "recall (nats/char) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["rows"]:
        js = e["fidelity_js"]
        js_cells = " | ".join(f"{js[o]['js']:.4f} (ref {js[o]['reference_js']:.4f})" for o in ("1", "2", "3"))
        lines.append(f"| {e['sampler']} | {e['steps'] if e['steps'] is not None else ''} | "
                     f"{e['temperature'] if e['temperature'] is not None else ''} | "
                     f"{e['gen_nll_char']:.3f} ± {e['gen_nll_char_se']:.3f} | {e['gen_ppl_token']:.1f} | "
                     f"{e['unigram_entropy']:.3f} | {e['distinct_2']:.3f} | {e['distinct_3']:.3f} | {js_cells} | "
                     f"{_recall_cell(e.get('recall'))} |")
    lines += ["", "## Samples (at the recall temperature)", ""]
    for e in report["rows"]:
        if e["temperature"] in (None, report.get("recall_temperature", 1.0)):
            lines.append(f"**{e['sampler']}**" + (f" steps {e['steps']}, T {e['temperature']}:" if e["steps"] else ":"))
            lines += ["", "```", *[text.replace("```", "'''") + "\n---" for text in e["examples"]], "```", ""]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """Gen PPL/char at matched entropy vs steps and vs cost (sequence equivalents); the precision–recall plane."""
    import matplotlib  # heavy and optional: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (see above)

    by_sampler: dict[str, list[dict[str, Any]]] = {}
    for m in report["matched"]:
        by_sampler.setdefault(m["sampler"], []).append(m)
    written = []
    for name, x_of, label in (("steps", lambda m: m["steps"], "sampling steps (AR: L positions)"),
                              ("cost", lambda m: m["cost"]["sequence_equivalents"], "full-sequence forward equivalents per sample")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for sampler, ms in by_sampler.items():
            ms = sorted(ms, key=x_of)
            ax.plot([x_of(m) for m in ms], [m["gen_ppl_char"] for m in ms], "o-", label=sampler)
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="gen PPL per character at matched entropy",
               title=f"target entropy {report['target_entropy']['value']:.3f} nats")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"text_bench_{name}.png", dpi=120)
        plt.close(fig)
        written.append(f"text_bench_{name}.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in report["rows"]:
        recall = e.get("recall") or {}
        if "value_per_char" in recall:
            ax.errorbar(recall["value_per_char"], e["gen_nll_char"], xerr=recall["se_per_char"], yerr=e["gen_nll_char_se"], fmt="o")
            ax.annotate(f"{e['sampler']} {e['steps']}", (recall["value_per_char"], e["gen_nll_char"]), fontsize=6)
    ax.set(xlabel="recall: held-out NLL bound (nats/char, lower is better)",
           ylabel="precision: gen NLL (nats/char, lower is better)", title=f"T = {report.get('recall_temperature', 1.0)}")
    fig.tight_layout()
    fig.savefig(out / "text_bench_precision_recall.png", dpi=120)
    plt.close(fig)
    return written + ["text_bench_precision_recall.png"]


# ------------------------------------------------------------------------------------------------- smoke

SMOKE_WORDS = ("the king shall speak to thee and thou art my lord so fair a day of good men who "
               "come hither now with love upon her grace").split()
SMOKE_SETTINGS = dict(steps=(16, 4), confidence_steps=(4,), temperatures=(0.8, 1.0), num=8, recall_num=4,
                      recall_ks=(1, 4), heldout_num=64, nll_num=16, recall_max_steps=None, include=(), bootstrap=8)


def smoke_corpus(path: Path, seed: int = 0, num_lines: int = 600) -> Path:
    """A small corpus of seeded random lines of common words, written to `path`."""
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(num_lines):
        words = torch.randint(0, len(SMOKE_WORDS), (int(torch.randint(4, 10, (1,), generator=generator)),), generator=generator)
        lines.append(" ".join(SMOKE_WORDS[i] for i in words.tolist()).capitalize() + ".")
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare_smoke(config: TextBenchConfig, tmp: Path) -> TextBenchConfig:
    """Write a tiny corpus, train a teacher, an AR model (a few steps each) and a 4-step MCD student from the
    teacher (one short round) on `config.device`, write the tiny random evaluator (no download); `config` pointed at
    them with the smoke settings."""
    data = f"text:{smoke_corpus(tmp / 'corpus.txt')}?tokenizer=byte"
    quiet = dict(batch_size=8, warmup=1, save_every=10**6, log_every=10**6, progress=False, device=config.device,
                 threads=config.threads)
    for name, objective in (("teacher", "mdlm"), ("ar", "ar")):
        train(TrainConfig(out=str(tmp / name), data=data, seq_len=32, max_steps=20, objective=objective, seed=0,
                          eval_every=10**6, eval_batches=1, **quiet))
    distill(DistillConfig(teacher=str(tmp / "teacher"), out=str(tmp / "student"), method="mcd", start_steps=8,
                          target_steps=4, steps_per_round=2, seed=0, **quiet))
    return replace(config, **SMOKE_SETTINGS, teacher=str(tmp / "teacher"), ar=str(tmp / "ar"), data=data,
                   students=(str(tmp / "student"),), evaluator=str(make_tiny_evaluator(tmp / "evaluator")))


def text_bench(config: TextBenchConfig, command: str = "") -> dict[str, Any]:
    """Measure every row (`--smoke`: on tiny runs made in a temporary directory) and write OUT/text_bench.json,
    OUT/text_bench.md (tables and a few decoded samples of each row) and the plots; the report, with the paths
    written under "written"."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="text-bench-smoke-") as tmp:
        measured = prepare_smoke(config, Path(tmp)) if config.smoke else config
        report = run_bench(measured)
    report["smoke"] = bool(config.smoke)
    report["command"] = command
    report["plots"] = []
    (out / "text_bench.json").write_text(strict_json(report, indent=1) + "\n")  # the measurements, saved first
    report["plots"] = write_plots(report, out)
    (out / "text_bench.json").write_text(strict_json(report, indent=1) + "\n")
    (out / "text_bench.md").write_text(format_markdown(report))
    report["written"] = [str(out / name) for name in ("text_bench.md", "text_bench.json", *report["plots"])]
    return report
