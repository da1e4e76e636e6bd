"""Text benchmark: every sampler of a text teacher (and its students, and the autoregressive reference) under the
field's protocol (generative perplexity at matched entropy) and ours (recall, n-gram fidelity), with its cost.

How to run (from the repository root, the `text` extra installed):

    PYTHONPATH=$PWD python benchmarks/text_bench.py --teacher runs/text/teacher --ar runs/text/ar \
        --data shakespeare --evaluator smollm2 --num 64 [--steps 1024 256 64 16 8 4] [--confidence-steps 64 16 8 4] \
        [--temperatures 0.8 0.9 1.0] [--student RUN[:STEPS] ...] [--recall-num 16 --recall-ks 1 4 16] \
        [--threads 1] --out runs/text/bench
    PYTHONPATH=$PWD python benchmarks/text_bench.py --smoke --out /tmp/text-bench-smoke   # about a minute, offline

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
  ancestral samplers, exact for the confidence sampler (`confidence_log_likelihood`) and the AR model;
- cost: network forward passes per sample and full-sequence forward equivalents per sample (positions
  processed / L; the AR sampler has no KV cache, so it processes (L+1)/2 sequence equivalents), counted at the
  token embedding of every backbone in the model with all `--num` samples in one batch, and wall seconds per
  sample on `--threads` threads.

Matched entropy: for each (sampler, steps) the points (entropy, gen NLL) over temperatures are interpolated
linearly at the target entropy (`frontier_at_entropy`; extrapolated from the two nearest points, and flagged,
when the target lies outside), target = the held-out text's own mean per-sample unigram entropy (same length,
same tokens).  Writes OUT/text_bench.{json,md} and OUT/text_bench_{steps,cost,precision_recall}.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn

from sampler.autoregressive import nll_per_sequence
from sampler.device import apply_threads
from sampler.confidence import confidence_log_likelihood, confidence_sample
from sampler.data import frontier_at_entropy, source_or_stored_tokenizer, strict_json, unigram_entropy_per_sequence
from sampler.data.text import StoredTokenizerSource
from sampler.model import TransformerDenoiser
from sampler.protocols import reads_shadow_noise
from sampler.quality.gen_perplexity import load_evaluator, ratio_estimate
from sampler.quality.recall import mean_and_se
from sampler.quality.recall_convergence import recall_versus_k
from sampler.quality.text_quality import distinct_ngrams, gen_nll_per_character, text_ngram_fidelity
from sampler.run.eval import validation_elbo_per_sequence
from sampler.run.open import OpenedRun, open_run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STEPS = [1024, 256, 64, 16, 8, 4]
DEFAULT_TEMPERATURES = [0.8, 0.9, 1.0]
NUM_SHOWN = 3  # decoded samples per row in the .md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="the teacher's run directory (mcd train)")
    p.add_argument("--ar", help="the autoregressive reference's run directory (mcd train --objective ar)")
    p.add_argument("--student", action="append", default=[], metavar="RUN[:STEPS]",
                   help="a student run, sampled at STEPS (default: its distillation's target steps); repeatable")
    p.add_argument("--data", help="the corpus spec the teacher was trained on (e.g. shakespeare)")
    p.add_argument("--evaluator", default="smollm2", help="smollm2, a local .gguf file or a Hugging Face directory")
    p.add_argument("--steps", type=int, nargs="*", default=DEFAULT_STEPS,
                   help="the teacher's ancestral step counts (none: no ancestral rows)")
    p.add_argument("--confidence-steps", type=int, nargs="*", default=None,
                   help="the confidence sampler's step counts (default: --steps; none: no confidence rows)")
    p.add_argument("--temperatures", type=float, nargs="+", default=DEFAULT_TEMPERATURES)
    p.add_argument("--num", type=int, default=64, help="samples per row (one batch)")
    p.add_argument("--recall-temperature", type=float, default=1.0)
    p.add_argument("--recall-num", type=int, default=16, help="held-out sequences for recall")
    p.add_argument("--recall-ks", type=int, nargs="+", default=[1, 4, 16], help="reveal patterns k (each 4x the last)")
    p.add_argument("--recall-estimator", choices=("plain", "smc"), default="plain")
    p.add_argument("--recall-max-steps", type=int, default=None,
                   help="skip the reveal-pattern recall of ancestral rows above this many steps (cost)")
    p.add_argument("--heldout-num", type=int, default=1024, help="held-out windows for the n-gram law and target entropy")
    p.add_argument("--nll-num", type=int, default=256, help="held-out windows for both models' held-out NLL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--include", action="append", default=[], metavar="JSON",
                   help="rows of an earlier text_bench.json with the same data, evaluator, seed, --num and held-out "
                        "settings, added before the matched-entropy table and the plots (a bench run in parts)")
    p.add_argument("--smoke", action="store_true", help="tiny corpus, models and evaluator in a temporary directory")
    p.add_argument("--out", default="runs/text-bench")
    args = p.parse_args(argv)
    _check_args(args)
    return args


def _check_args(args: argparse.Namespace) -> None:
    """ValueError naming the argument, before any work."""
    if not args.smoke and (args.teacher is None or args.data is None):
        raise ValueError("--teacher and --data are required (or pass --smoke)")
    for name, minimum in (("num", 2), ("recall_num", 2), ("heldout_num", 2), ("nll_num", 2), ("threads", 1)):
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum} (standard errors), got {getattr(args, name)}")
    if not args.recall_ks:
        raise ValueError("--recall-ks must list at least one k")
    for name in ("steps", "recall_ks", "confidence_steps"):
        if getattr(args, name) and min(getattr(args, name)) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must list positive integers, got {getattr(args, name)}")
    if any(b != 4 * a for a, b in zip(args.recall_ks, args.recall_ks[1:])):
        raise ValueError(f"--recall-ks must each be 4 times the one before, got {args.recall_ks}")
    for t in args.temperatures + [args.recall_temperature]:
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"--temperatures / --recall-temperature must be positive and finite, got {t}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")


# ---------------------------------------------------------------------------------------------------- cost


@contextmanager
def counting_forwards(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the rows and positions entering the token embedding of every TransformerDenoiser in `model` (one
    entry per network forward pass, whichever method the sampler calls: forward, or hidden for the AR model)."""
    counts = {"rows": 0, "positions": 0}

    def hook(_module: nn.Module, inputs: tuple, _output: Any) -> None:
        tokens = inputs[0]
        counts["rows"] += int(tokens.shape[0]) if tokens.dim() > 1 else 1
        counts["positions"] += int(tokens.numel())

    backbones = [m for m in model.modules() if isinstance(m, TransformerDenoiser)]
    if not backbones:
        raise ValueError("model holds no TransformerDenoiser backbone: its forward passes cannot be counted")
    handles = [b.embed.register_forward_hook(hook) for b in backbones]
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


def reveal_pattern_recall(run: OpenedRun, steps: int, args: argparse.Namespace) -> Callable[..., dict[str, Any]]:
    """The ancestral sampler's held-out NLL bound at `steps` (`recall_versus_k`), its k and ×4-change diagnostic."""
    def recall(heldout: torch.Tensor, temperature: float) -> dict[str, Any]:
        if args.recall_max_steps is not None and steps > args.recall_max_steps:
            return {"unavailable": f"skipped: {steps} steps > --recall-max-steps {args.recall_max_steps}"}
        start = time.perf_counter()
        report = recall_versus_k(run.model, run.schedule, heldout, steps=steps, estimator=args.recall_estimator,
                                 temperature=temperature, ks=args.recall_ks, seed=args.seed, device=run.device)
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


def teacher_rows(run: OpenedRun, args: argparse.Namespace) -> list[SamplerRow]:
    """The teacher's ancestral sampler at each of --steps and its confidence-ordered sampler at --confidence-steps."""
    config, seq_len = run.model.config, run.model.config.seq_len
    rows = []
    for steps in sorted(set(args.steps), reverse=True):
        def draw(t: float, n: int, seed: int, steps: int = steps) -> torch.Tensor:
            return run.sample(num_samples=n, num_steps=steps, seq_len=seq_len, seed=seed, temperature=t, batch_size=n)
        rows.append(SamplerRow("teacher/ancestral", steps, run.model, draw, reveal_pattern_recall(run, steps, args)))
    confidence_steps = args.steps if args.confidence_steps is None else args.confidence_steps
    for steps in sorted(set(confidence_steps), reverse=True):
        def draw(t: float, n: int, seed: int, steps: int = steps) -> torch.Tensor:
            return confidence_sample(run.model, run.schedule, num_samples=n, num_steps=steps, seq_len=seq_len,
                                     mask_id=config.mask_id, vocab_size=config.vocab_size, temperature=t,
                                     generator=torch.Generator().manual_seed(seed), device=run.device, batch_size=n)

        def nll(x: torch.Tensor, t: float, steps: int = steps) -> torch.Tensor:
            return -confidence_log_likelihood(run.model, run.schedule, x, num_steps=steps, temperature=t,
                                              device=run.device) / x.shape[1]
        rows.append(SamplerRow("teacher/confidence", steps, run.model, draw, exact_recall(nll, "exact (max-prob confidence)")))
    return rows


def student_row(spec: str, args: argparse.Namespace) -> SamplerRow:
    """A student run `PATH[:STEPS]` sampled by its own kind's sampler at STEPS (default: its target steps)."""
    path, _, steps_text = spec.rpartition(":") if ":" in spec and spec.rsplit(":", 1)[1].isdigit() else (spec, "", "")
    run = open_run(path, device="cpu", threads=args.threads)
    steps = int(steps_text) if steps_text else run.meta.get("distill", {}).get("config", {}).get("target_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--student {spec!r}: no step count given and none in its meta; pass RUN:STEPS")
    seq_len = run.model.config.seq_len if hasattr(run.model, "config") else run.meta["model_config"]["seq_len"]

    def draw(t: float, n: int, seed: int) -> torch.Tensor:
        return run.sample(num_samples=n, num_steps=steps, seq_len=seq_len, seed=seed, temperature=t, batch_size=n)

    if reads_shadow_noise(run.model):
        def recall(heldout: torch.Tensor, temperature: float) -> dict[str, Any]:
            return {"unavailable": "a shadow student's recall needs its sequential bound (mcd eval on an exact source); "
                                   "not computed here"}
    else:
        recall = reveal_pattern_recall(run, steps, args)
    return SamplerRow(f"student:{Path(path).name}", steps, run.model, draw, recall)


def ar_row(run: OpenedRun) -> SamplerRow:
    """The autoregressive reference: L forward passes of growing prefixes; its recall is its exact NLL."""
    seq_len = run.model.config.seq_len

    def draw(t: float, n: int, seed: int) -> torch.Tensor:
        return run.sample(num_samples=n, num_steps=seq_len, seq_len=seq_len, seed=seed, temperature=t)

    def nll(x: torch.Tensor, t: float) -> torch.Tensor:
        if t != 1.0:
            raise ValueError("the AR model's exact NLL is at temperature 1 only")
        return nll_per_sequence(run.model, x).double()
    return SamplerRow("ar", seq_len, run.model, draw, exact_recall(nll, "exact"))


# ----------------------------------------------------------------------------------------------- measuring


class HeldOut(NamedTuple):
    """Held-out text of the source (split "valid"): the n-gram law, a same-size reference, the recall set."""

    law: torch.Tensor
    reference: torch.Tensor
    recall: torch.Tensor
    target_entropy: float
    target_entropy_se: float


def held_out(source: Any, seq_len: int, args: argparse.Namespace) -> HeldOut:
    """Three independent held-out samples (seeds fixed from --seed); the target entropy is the law sample's mean
    per-sample unigram entropy in the model's tokens."""
    def batch(n: int, offset: int) -> torch.Tensor:
        return source.sample_batch(n, seq_len, torch.Generator().manual_seed(1_000_003 * offset + args.seed), split="valid")
    law = batch(args.heldout_num, 1)
    entropy, entropy_se = mean_and_se(unigram_entropy_per_sequence(law, source.vocab_size), "held-out entropy")
    return HeldOut(law, batch(args.num, 2), batch(args.recall_num, 3), entropy, entropy_se)


def text_metrics(samples: torch.Tensor, source: Any, evaluator: Any, heldout: HeldOut, seed: int) -> dict[str, Any]:
    """Gen NLL per character and per evaluator token, entropy, distinct-2/3, n-gram fidelity of one sample set."""
    texts = [source.decode(row) for row in samples]
    sums, counts = evaluator.score(texts)
    per_token = ratio_estimate(sums, counts)
    entropy, entropy_se = mean_and_se(unigram_entropy_per_sequence(samples, source.vocab_size), "entropy")
    fidelity = text_ngram_fidelity(samples, heldout.law, heldout.reference, source.vocab_size, orders=(1, 2, 3),
                                   generator=torch.Generator().manual_seed(seed))
    return {**gen_nll_per_character(sums, texts), "gen_nll_token": per_token["gen_nll"],
            "gen_nll_token_se": per_token["gen_nll_se"], "gen_ppl_token": per_token["gen_ppl"],
            "evaluator_tokens": per_token["num_tokens"], "unigram_entropy": entropy, "unigram_entropy_se": entropy_se,
            "distinct_2": distinct_ngrams(samples, 2), "distinct_3": distinct_ngrams(samples, 3),
            "fidelity_js": {str(order): row for order, row in fidelity.items()}, "examples": texts[:NUM_SHOWN]}


def tokens_per_character(source: Any, tokens: torch.Tensor) -> float:
    """Model tokens per character of the decoded text (1 for a byte tokenizer on ASCII text)."""
    return tokens.numel() / sum(len(source.decode(row)) for row in tokens)


def measure_row(row: SamplerRow, source: Any, evaluator: Any, heldout: HeldOut, args: argparse.Namespace,
                per_char: float) -> list[dict[str, Any]]:
    """One entry per temperature: the text metrics and cost; recall at --recall-temperature."""
    out = []
    for temperature in args.temperatures:
        samples, cost = timed_draw(row.model, lambda: row.draw(temperature, args.num, args.seed), heldout.law.shape[1])
        entry = {"sampler": row.name, "steps": row.steps, "temperature": temperature, "cost": cost,
                 **text_metrics(samples, source, evaluator, heldout, args.seed)}
        if temperature == args.recall_temperature:
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


def heldout_nll(teacher: OpenedRun, ar: OpenedRun | None, source: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Both models' held-out NLL on the same held-out windows, per token and per character: the teacher's ELBO
    (an upper bound on its −log p(x)/L; 4 stratified times per window) and the AR model's exact NLL."""
    config = teacher.model.config
    x = source.sample_batch(args.nll_num, config.seq_len, torch.Generator().manual_seed(4_000_037 + args.seed),
                            split="valid")
    per_char = tokens_per_character(source, x)
    elbo = validation_elbo_per_sequence(teacher.model, teacher.schedule, x, config.mask_id, config.vocab_size,
                                        torch.Generator().manual_seed(5_000_011 + args.seed), draws=4, device=teacher.device)
    rows = {"teacher_elbo": elbo.double()}
    if ar is not None:
        rows["ar_exact"] = nll_per_sequence(ar.model, x).double()
    out: dict[str, Any] = {"num_windows": args.nll_num, "seq_len": config.seq_len, "tokens_per_char": per_char}
    for name, values in rows.items():
        value, se = mean_and_se(values, name)
        out[name] = {"per_token": value, "se": se, "per_char": value * per_char, "se_per_char": se * per_char}
    for name, run in (("teacher", teacher), ("ar", ar)):
        if run is not None:
            out[f"{name}_step"] = run.meta.get("step")
            out[f"{name}_parameters"] = sum(p.numel() for p in run.model.parameters())
    return out


def heldout_entry(source: Any, evaluator: Any, heldout: HeldOut, args: argparse.Namespace) -> dict[str, Any]:
    """Held-out text scored like a sampler row (its reference sample): the data's own gen PPL and entropy."""
    return {"sampler": "heldout", "steps": None, "temperature": None,
            **text_metrics(heldout.reference, source, evaluator, heldout, args.seed)}


INCLUDE_KEYS = ("data", "num", "seed", "seq_len", "evaluator", "recall_num", "recall_temperature")


def included_rows(path: str, args: argparse.Namespace, evaluator: str, seq_len: int, target: float) -> list[dict]:
    """The sampler rows of an earlier report (not its held-out row); ValueError naming --include unless it was
    measured on the same data, evaluator, seed, --num, length and held-out sample (its target entropy)."""
    earlier = json.loads(Path(path).read_text())
    ours = {"data": args.data, "num": args.num, "seed": args.seed, "seq_len": seq_len, "evaluator": evaluator,
            "recall_num": args.recall_num, "recall_temperature": args.recall_temperature}
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


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every row measured; the report (JSON-able)."""
    apply_threads(args.threads)
    start = time.perf_counter()
    teacher = open_run(args.teacher, device="cpu", threads=args.threads)
    ar = open_run(args.ar, device="cpu", threads=args.threads) if args.ar else None
    if ar is not None and ar.kind.name != "ar":
        raise ValueError(f"--ar {args.ar!r} is a {ar.kind.name!r} run, not an autoregressive reference")
    source = open_source(teacher, args.data)
    evaluator = load_evaluator(args.evaluator)
    seq_len = teacher.model.config.seq_len
    heldout = held_out(source, seq_len, args)
    per_char = tokens_per_character(source, heldout.law)
    rows = teacher_rows(teacher, args) + [student_row(spec, args) for spec in args.student]
    if ar is not None:
        rows.append(ar_row(ar))
    entries = [heldout_entry(source, evaluator, heldout, args)]
    for row in rows:
        entries += measure_row(row, source, evaluator, heldout, args, per_char)
    for path in args.include:
        entries += included_rows(path, args, evaluator.name, seq_len, heldout.target_entropy)
    return {
        "teacher": str(args.teacher), "ar": args.ar, "students": args.student, "data": args.data,
        "source": source.describe(), "seq_len": seq_len, "vocab_size": source.vocab_size, "evaluator": evaluator.name,
        "num": args.num, "seed": args.seed, "temperatures": args.temperatures, "threads": args.threads,
        "recall_temperature": args.recall_temperature, "recall_num": args.recall_num, "steps": args.steps,
        "included": args.include,
        "target_entropy": {"value": heldout.target_entropy, "se": heldout.target_entropy_se,
                           "what": f"mean per-sample unigram entropy (nats) of {args.heldout_num} held-out windows of "
                                   f"{seq_len} model tokens (the samples' entropy is measured the same way)"},
        "heldout_nll": heldout_nll(teacher, ar, source, args),
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
    import matplotlib.pyplot as plt

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
SMOKE_SETTINGS = dict(steps=[16, 4], confidence_steps=[4], temperatures=[0.8, 1.0], num=8, recall_num=4,
                      recall_ks=[1, 4], heldout_num=64, nll_num=16, recall_max_steps=None)


def smoke_corpus(path: Path, seed: int = 0, num_lines: int = 600) -> Path:
    """A small corpus of seeded random lines of common words, written to `path`."""
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(num_lines):
        words = torch.randint(0, len(SMOKE_WORDS), (int(torch.randint(4, 10, (1,), generator=generator)),), generator=generator)
        lines.append(" ".join(SMOKE_WORDS[i] for i in words.tolist()).capitalize() + ".")
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_evaluator(directory: Path) -> Path:
    """The tests' tiny random evaluator (tests/text_fixtures.py), written to `directory` (no download)."""
    spec = importlib.util.spec_from_file_location("text_fixtures", REPO / "tests" / "text_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_evaluator(directory)


def prepare_smoke(args: argparse.Namespace, tmp: Path) -> argparse.Namespace:
    """Write a tiny corpus, train a teacher, an AR model (a few steps each) and a 4-step MCD student from the
    teacher (one short round), write the tiny evaluator, and point `args` at them with the smoke settings."""
    from sampler.train import DistillConfig, TrainConfig, distill, train

    data = f"text:{smoke_corpus(tmp / 'corpus.txt')}?tokenizer=byte"
    quiet = dict(batch_size=8, warmup=1, save_every=10**6, log_every=10**6, progress=False, device="cpu")
    for name, objective in (("teacher", "mdlm"), ("ar", "ar")):
        train(TrainConfig(out=str(tmp / name), data=data, seq_len=32, max_steps=20, objective=objective, seed=0,
                          eval_every=10**6, eval_batches=1, **quiet))
    distill(DistillConfig(teacher=str(tmp / "teacher"), out=str(tmp / "student"), method="mcd", start_steps=8,
                          target_steps=4, steps_per_round=2, seed=0, **quiet))
    for key, value in SMOKE_SETTINGS.items():
        setattr(args, key, value)
    args.teacher, args.ar, args.data = str(tmp / "teacher"), str(tmp / "ar"), data
    args.student = [f"{tmp / 'student'}:4"]
    args.evaluator = str(_tiny_evaluator(tmp / "evaluator"))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="text-bench-smoke-") as tmp:
        if args.smoke:
            prepare_smoke(args, Path(tmp))
        report = run_bench(args)
    report["smoke"] = bool(args.smoke)
    report["command"] = "python benchmarks/text_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report["plots"] = write_plots(report, out)
    (out / "text_bench.json").write_text(strict_json(report, indent=1) + "\n")
    (out / "text_bench.md").write_text(format_markdown(report))
    print(format_markdown(report).split("## Every row")[0])
    print(f"wrote {out}/text_bench.{{json,md}} and {', '.join(report['plots'])}")
    return report


if __name__ == "__main__":
    main()
