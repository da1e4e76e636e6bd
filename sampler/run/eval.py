"""Sample quality of a checkpoint (`mcd eval`, from an EvalConfig), measured honestly (two numbers, never one).

For every temperature T and step count N (all with the same sampler seed, so every
configuration sees the same masking order and random stream and differences are paired):

- exact source: NLL per token of the samples under the true source, its excess over the
  source's entropy rate (optimum 0), each with standard errors; the paired difference of
  per-sequence NLL against the largest step count;
- unigram entropy of the samples (mean per-sequence entropy, nats, with SE), to catch collapse;
- real-text source: generative perplexity under an evaluator LM (``sampler.quality.gen_perplexity``); the
  result names the evaluator (numbers compare only under the same evaluator).

Once per checkpoint: the validation ELBO on held-out source samples,

    ELBO(x0) = E_t [ w(t) · (1/L) Σ_{l : z_t,l = m} −log p_θ(x0_l | z_t) ],  w(t) = −α′(t)/(1 − α(t)),

with z_t masked by the duality's threshold coupling (duality.MaskedCoupling), t stratified
over [t_min, 1] (t_min = sampler.batches.T_MIN; the truncated piece is about t_min·NLL),
``elbo_draws`` draws per sequence; an upper bound on −log p_θ(x0)/L.  For an exact source
the paired gap ELBO − (−log p(x0)/L) (≥ 0 up to noise: the model is not the source) is reported.

Sweeping temperatures at the largest step count gives the teacher's NLL–entropy frontier
(JSON key ``frontier``), against which other models are compared at matched entropy
(``sampler.data.frontier_at_entropy``).
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm

from duality import MaskedCoupling
from theory.checks import check_int

from ..batches import T_MIN
from ..checkpoint import atomic_write_bytes
from ..data import (
    DataSource,
    StoredTokenizerSource,
    json_ready,
    no_exact_likelihood,
    paired_difference,
    sample_quality,
    source_or_stored_tokenizer,
    strict_json,
)
from ..device import autocast_denoiser
from ..losses import elbo_weight
from ..protocols import Denoiser, Schedule, reads_shadow_noise
from ..quality.gen_perplexity import load_evaluator, require_text_extra
from ..cost import sampler_cost
from ..quality.two_axis import recall_summary, recall_with_diagnostic
from ..sampling import ancestral_sample
from ..shadow.recall import shadow_recall_unavailable
from ..shadow.student import check_argmax_temperature
from ..configs import DEFAULT_EVAL_STEPS as DEFAULT_STEPS  # noqa: F401  (re-exported)
from ..configs import EvalConfig  # noqa: F401  (defined torch-free for the command line; re-exported)
from .open import OpenedRun, open_for_inference

# what `mcd eval` reports only on a source with exact likelihood (else in report["unavailable"], with the reason)
EXACT_LIKELIHOOD_ROWS = ("entropy_rate", "nll_per_token", "excess", "nll_paired_vs_max_steps", "elbo_gap")


def validation_elbo_per_sequence(
    denoiser: Denoiser, schedule: Schedule, x0: Int[Tensor, "N L"], mask_id: int, vocab_size: int,
    generator: torch.Generator, draws: int = 4, batch_size: int = 256, device: Any = "cpu",
    t_min: float | None = None,
) -> Float[Tensor, " N"]:
    """Per-sequence MDLM ELBO (nats/token) averaged over ``draws`` stratified times per sequence.

    For sequence i and draw d: t = t_min + (1 − t_min)·((u_i + d/D) mod 1), u_i ~ U(0, 1);
    z_t = MaskedCoupling(threshold).mask(x0, noise, t); value = w(t) Σ_masked −log p_θ(x0|z_t) / L.
    """
    check_int(draws, "draws", 1)
    t_min = T_MIN if t_min is None else t_min
    coupling = MaskedCoupling(schedule, vocab_size=vocab_size, mask_id=mask_id, method="threshold")
    n, length = x0.shape
    offsets = torch.rand(n, dtype=torch.float64, generator=generator)
    total = torch.zeros(n, dtype=torch.float64)
    with torch.no_grad():
        for d in range(draws):
            t_all = t_min + (1 - t_min) * ((offsets + d / draws) % 1.0)
            for start in range(0, n, batch_size):
                xb = x0[start: start + batch_size].cpu()
                tb = t_all[start: start + batch_size]
                noise = coupling.sample_noise(xb, generator)
                z = coupling.mask(xb, noise, tb)
                log_probs = denoiser(z.to(device), tb.to(device=device, dtype=torch.float32)).double().cpu()
                picked = log_probs.gather(-1, xb.unsqueeze(-1)).squeeze(-1)
                masked_nll = torch.where(z == mask_id, -picked, torch.zeros_like(picked)).sum(-1)
                weight = elbo_weight(schedule, tb).double()
                total[start: start + batch_size] += weight * masked_nll / length
    return total / draws


def _check_args(args: EvalConfig) -> None:
    """The config's own checks (EvalConfig.validate, torch-free) and the optional extra a named evaluator needs."""
    args.validate()
    if args.evaluator not in ("auto", "none"):
        require_text_extra()


# (denoiser, steps, temperature) -> samples: one sampler of the evaluation over `denoiser` (its own, or the same
# wrapped to count its calls), its seed fixed (args.seed) so rows are paired
Draw = Callable[[Any, int, float], Tensor]


def _costed(draw: Draw, denoiser: Any, steps: int, temperature: float, repeats: int) -> tuple[Tensor, dict[str, Any]]:
    """The samples of one draw and the sampler's cost (sampler.cost.sampler_cost: forward equivalents per sample,
    median wall time per sample on one thread over `repeats` identical draws; the first draw's samples)."""
    drawn: list[Tensor] = []

    def once(counted: Any) -> Tensor:
        drawn.append(draw(counted, steps, temperature))
        return drawn[-1]
    cost = sampler_cost(once, denoiser, repeats=repeats)
    return drawn[0], cost


def _checkpoint_draw(run: OpenedRun, args: EvalConfig, seq_len: int) -> Draw:
    """The checkpoint's own sampler (its kind's: ancestral, or noise-shared for a shadow student), seed args.seed."""
    return lambda denoiser, steps, temperature: run.kind.sample(
        denoiser, run.schedule, device=run.device, num_samples=args.num, num_steps=steps, seq_len=seq_len,
        seed=args.seed, temperature=temperature, cached=not args.no_cache, batch_size=args.batch_size)


def _oracle_draw(schedule: Schedule, args: EvalConfig, seq_len: int, mask_id: int, vocab_size: int,
                 device: Any) -> Draw:
    """The ancestral sampler over the source's exact denoiser (cached: it ignores t), seed args.seed."""
    return lambda oracle, steps, temperature: ancestral_sample(
        oracle, schedule, num_steps=steps, num_samples=args.num, seq_len=seq_len, mask_id=mask_id, vocab_size=vocab_size,
        generator=torch.Generator().manual_seed(args.seed), temperature=temperature, cached=True, device=device,
        batch_size=args.batch_size)


def _measure(samples: Tensor, source: DataSource, evaluator: Any, rate: tuple[float, float] | None) -> dict:
    metrics = sample_quality(samples, source, entropy_rate=rate)
    if evaluator is not None:
        texts = [source.decode(row) for row in samples]
        metrics.update(evaluator.gen_perplexity(texts))
    return metrics


def _validation_elbo_report(denoiser: Denoiser, schedule: Schedule, source: DataSource, args: EvalConfig, seq_len: int,
                            mask_id: int, vocab_size: int, device: Any) -> dict[str, Any]:
    """The validation ELBO of held-out source sequences (and, for an exact source, its gap over the true NLL)."""
    held_out = source.sample_batch(args.elbo_num, seq_len, torch.Generator().manual_seed(1_000_003 + args.seed),
                                   split="valid")
    elbo = validation_elbo_per_sequence(denoiser, schedule, held_out, mask_id, vocab_size,
                                        torch.Generator().manual_seed(2_000_003 + args.seed),
                                        draws=args.elbo_draws, batch_size=args.batch_size, device=device)
    elbo_report: dict[str, Any] = {"elbo": float(elbo.mean()), "se": float(elbo.std() / math.sqrt(elbo.numel())),
                                   "num_sequences": int(elbo.numel()), "draws_per_sequence": args.elbo_draws}
    if source.exact:
        true_nll = -source.log_prob(held_out) / seq_len
        gap, gap_se = paired_difference(elbo, true_nll)
        elbo_report.update({"true_nll": float(true_nll.mean()), "elbo_gap": gap, "elbo_gap_se": gap_se})
    return elbo_report


def _recall_row(denoiser: Any, schedule: Schedule, heldout: Tensor, args: EvalConfig, steps: int,
                temperature: float, device: Any) -> dict[str, Any]:
    """Recall of the row's sampler on the held-out true sequences with its k and diagnostic
    (`two_axis.recall_with_diagnostic`: plain importance sampling over reveal patterns up to k = args.recall_k, or
    the causal shadow student's sequential bound, k = 1, 4, ... likewise), the patterns seeded by args.seed (every row pairs);
    {"unavailable": reason} for a shadow student without a tractable law."""
    if reads_shadow_noise(denoiser):
        reason = shadow_recall_unavailable(denoiser)
        if reason is not None:
            return {"unavailable": reason}
    report = recall_with_diagnostic(denoiser, schedule, heldout, steps=steps, temperature=temperature,
                                    max_k=args.recall_k, tolerance=args.recall_tolerance, seed=4_000_003 + args.seed,
                                    device=device, batch_size=args.batch_size)
    return {**recall_summary(report), "steps": steps, "temperature": float(temperature),
            "num_heldout": int(heldout.shape[0])}


def _optional_evaluator(args: EvalConfig, source: DataSource, device: Any) -> Any:
    """The evaluator LM of args.evaluator ("auto": SmolLM2 for a real-text source, none for an exact one);
    None when off, or when "auto" finds none (with a warning)."""
    name = args.evaluator
    if name == "auto":
        name = None if source.exact else "smollm2"
    if name in (None, "none"):
        return None
    try:
        return load_evaluator(name, device=device)
    except (ImportError, RuntimeError, OSError) as err:
        if args.evaluator != "auto":
            raise
        print(f"mcd eval: warning: no evaluator ({err}); generative perplexity skipped", file=sys.stderr)
        return None


def _sampler_rows(kind: str, model_fn: Any, draw: Draw, args: EvalConfig, schedule: Schedule, source: DataSource,
                  evaluator: Any, rate: tuple[float, float] | None, device: Any, heldout: Tensor | None,
                  emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """One report row per (temperature, step count) of one denoiser (`model_fn`, drawn from by `draw`), each
    paired with the most steps, with its cost and (with `heldout`) its recall; `emit(row)` as each is done."""
    for temperature in args.temperatures:  # all of them refused before the first sample
        check_argmax_temperature(model_fn, temperature, "--temperatures")
    out = []
    for temperature in args.temperatures:
        reference = None
        for steps in sorted(set(args.steps), reverse=True):
            samples, cost = _costed(draw, model_fn, steps, temperature, args.cost_repeats)
            metrics = _measure(samples, source, evaluator, rate)
            seconds = cost["wall_s_per_sample"] * samples.shape[0]
            row = {"denoiser": kind, "temperature": temperature, "steps": steps, "seconds": seconds,
                   "tokens_per_s": samples.numel() / max(seconds, 1e-9), "cost": cost, **json_ready(metrics)}
            key = "per_sequence_nll" if source.exact else ("per_sequence_gen_nll" if evaluator else None)
            if key is not None:
                if reference is None:
                    reference = (steps, metrics[key])
                else:
                    mean, se = paired_difference(metrics[key], reference[1])
                    row["paired_vs_max_steps"] = {"metric": key.replace("per_sequence_", ""),
                                                  "reference_steps": reference[0], "mean": mean, "se": se}
            if heldout is not None:
                row["recall"] = _recall_row(model_fn, schedule, heldout, args, steps, temperature, device)
            row["example"] = source.decode(samples[0])
            out.append(row)
            emit(row)
    return out


def evaluate_checkpoint(args: EvalConfig, stream: Any = None, progress: bool = False) -> dict:
    """Run the whole evaluation of ``mcd eval`` and return its JSON-able report.  With `stream` (a text file,
    e.g. sys.stdout) the table's header is written first and each row as it is computed (legend and footnotes
    last); with `progress` a tqdm bar with ETA over all rows goes to stderr."""
    _check_args(args)
    run = open_for_inference(args)
    if run.kind.name == "ar":
        raise ValueError(f"ckpt={args.ckpt!r} is an autoregressive reference (mcd train --objective ar): mcd eval measures "
                         "masked samplers; its exact held-out NLL is the eval_elbo of its metrics.jsonl, and `mcd sample` "
                         "draws from it")
    model, meta, schedule, device = run.model, run.meta, run.schedule, run.device
    config = model.config
    source = source_or_stored_tokenizer(meta.get("source"), meta.get("tokenizer"), corpus_needed=True, corpus=args.data)
    if isinstance(source, StoredTokenizerSource):
        print(f"mcd eval: warning: {source.reason}; decoding with the checkpoint's stored tokenizer, "
              "validation ELBO skipped (it needs held-out text)", file=sys.stderr)
    if int(source.vocab_size) != int(config.vocab_size):
        raise ValueError(f"vocabulary mismatch: the checkpoint's source has vocab_size={source.vocab_size}, "
                         f"its model vocab_size={config.vocab_size}")
    if args.oracle and not hasattr(source, "denoiser"):
        raise ValueError(f"--oracle needs a source with an exact denoiser (the embedded 'exact' source), got {source.name}")
    seq_len, mask_id, vocab_size = config.seq_len, config.mask_id, config.vocab_size
    shadow = reads_shadow_noise(model)  # sampled by the noise-shared sampler (its kind's); its ELBO reads the base network
    elbo_denoiser = autocast_denoiser(model.base if shadow else model, device)  # a shadow student: noise input off

    evaluator = _optional_evaluator(args, source, device)

    report: dict[str, Any] = {
        "sampler": run.kind.sampler_name, "checkpoint": str(args.ckpt), "step": meta.get("step"), "weights": "raw" if args.no_ema else "ema",
        "source": source.describe(), "source_name": source.name, "exact_source": bool(source.exact),
        "schedule": meta.get("schedule"), "seq_len": seq_len, "num": args.num, "seed": args.seed,
        "evaluator": evaluator.name if evaluator is not None else None,
        "note": ("one sampler seed for every row: rows are paired (same masking order and random stream). "
                 "gen_ppl numbers are comparable only under the same evaluator."),
    }

    reason = no_exact_likelihood(source)  # real text: reported as unavailable with the reason, never as zero
    report["unavailable"] = {} if reason is None else {name: reason for name in EXACT_LIKELIHOOD_ROWS}
    rate = None
    if source.exact:
        rate = source.entropy_rate(seq_len)
        report["entropy_rate"] = {
            "value": rate[0], "se": rate[1],
            "method": "exact" if rate[1] == 0.0 else "Monte Carlo over 16384 source samples, exact log-probs",
        }

    report["validation_elbo"] = (
        {"skipped": source.reason} if isinstance(source, StoredTokenizerSource)
        else _validation_elbo_report(elbo_denoiser, schedule, source, args, seq_len, mask_id, vocab_size, device)
    )
    if shadow and "elbo" in report["validation_elbo"]:
        report["validation_elbo"]["note"] = ("shadow student: ELBO of its base network (noise input off); the "
                                             "noise-conditioned sampler's own likelihood is not a product of marginals")

    steps_sorted = sorted(set(args.steps), reverse=True)
    heldout = (source.sample_batch(args.num, seq_len, torch.Generator().manual_seed(3_000_003 + args.seed))
               if source.exact and args.recall_k else None)
    report["recall_settings"] = ({"max_k": args.recall_k, "tolerance": args.recall_tolerance,
                                  "num_heldout": args.num} if heldout is not None else None)
    table = TableWriter(report, stream)
    total = len(args.temperatures) * len(steps_sorted) * (2 if args.oracle else 1)
    with tqdm(total=total, desc="mcd eval rows", file=sys.stderr, disable=not progress, leave=False) as bar:
        def emit(row: dict[str, Any]) -> None:
            table.row(row)
            bar.update(1)
        context = (args, schedule, source, evaluator, rate, device, heldout, emit)
        rows = _sampler_rows("model", model, _checkpoint_draw(run, args, seq_len), *context)
        if args.oracle:
            oracle = source.denoiser(mask_id)
            rows += _sampler_rows("oracle", oracle, _oracle_draw(schedule, args, seq_len, mask_id, vocab_size, device),
                                  *context)
    table.finish()
    report["results"] = rows
    report["frontier"] = [
        {"temperature": r["temperature"], "steps": r["steps"], "unigram_entropy": r["unigram_entropy"],
         **({"nll_per_token": r["nll_per_token"]} if "nll_per_token" in r else {}),
         **({"gen_nll": r["gen_nll"]} if "gen_nll" in r else {})}
        for r in rows if r["denoiser"] == "model" and r["steps"] == steps_sorted[0]
    ]
    return report


TABLE_WIDTH = 120  # the table's lines fit this many columns
LEGEND = ("excess: NLL of the samples under the source minus its entropy rate (0 = the source's own law). "
          "Δ vs max: paired NLL difference to the same denoiser and T at the most steps. recall: held-out NLL bound "
          "at k patterns; Δk/4: its change from k/4 to k; rem: |Δk/4| + 2 SE, what more k could still remove. "
          "fwd: network-forward equivalents per sample; ms: wall time per sample on one thread (median of runs).")


def _pm(value: float, se: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}±{se:.{digits}f}"


def _columns(report: dict) -> list[tuple[str, int]]:
    """(title, width) of each column, for the report's source (exact: excess and Δ; an evaluator: gen_ppl)."""
    columns = [("denoiser", 8), ("T", 4), ("steps", 5)]
    if report["exact_source"]:
        columns += [("excess", 13), ("Δ vs max", 14)]
    if report["evaluator"]:
        columns += [("gen_ppl", 13)]
    columns += [("entropy", 13)]
    if report.get("recall_settings") or any("recall" in r for r in report.get("results", [])):
        columns += [("recall", 13), ("k", 4), ("Δk/4", 14), ("rem", 6)]
    return columns + [("fwd", 6), ("ms", 7)]


class TableWriter:
    """The plain-text table of `mcd eval`, written header first and row by row to `stream` (None: kept only);
    long "recall unavailable" reasons become numbered footnotes printed after the legend."""

    def __init__(self, report: dict, stream: Any) -> None:
        self.report, self.stream, self.lines, self.footnotes = report, stream, [], {}
        self.columns = _columns(report)
        header = " ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width) in enumerate(self.columns))
        self._write(preamble_lines(report) + [header, "-" * len(header)])

    def _write(self, lines: list[str]) -> None:
        self.lines += lines
        if self.stream is not None:
            for line in lines:
                print(line, file=self.stream, flush=True)

    def _cells(self, r: dict) -> dict[str, str]:
        cells = {"denoiser": r["denoiser"], "T": f"{r['temperature']:g}", "steps": str(r["steps"]),
                 "entropy": _pm(r["unigram_entropy"], r["unigram_entropy_se"])}
        if "excess" in r:
            cells["excess"] = _pm(r["excess"], r["excess_se"])
            paired = r.get("paired_vs_max_steps")
            cells["Δ vs max"] = f"{paired['mean']:+.4f}±{paired['se']:.4f}" if paired else "—"
        if "gen_ppl" in r:
            cells["gen_ppl"] = _pm(r["gen_ppl"], r["gen_ppl_se"], 1)
        recall = r.get("recall")
        if recall is not None and "value" in recall:
            cells.update({"recall": _pm(recall["value"], recall["se"]), "k": str(recall["k"]),
                          "Δk/4": "—" if math.isnan(recall["change"]) else f"{recall['change']:+.4f}±{recall['change_se']:.4f}",
                          "rem": "—" if math.isinf(recall["remaining"]) else f"{recall['remaining']:.4f}"[1:]
                          if recall["remaining"] < 1 else f"{recall['remaining']:.2f}"})
        elif recall is not None:
            number = self.footnotes.setdefault(recall["unavailable"], len(self.footnotes) + 1)
            cells["recall"] = f"n/a [{number}]"
        if "cost" in r:
            cells["fwd"] = f"{r['cost']['forward_equivalents']:.1f}"
            cells["ms"] = f"{1000 * r['cost']['wall_s_per_sample']:.2f}"
        return cells

    def row(self, r: dict) -> None:
        cells = self._cells(r)
        self._write([" ".join(f"{cells.get(title, ''):>{width}}" if i else f"{cells.get(title, ''):<{width}}"
                              for i, (title, width) in enumerate(self.columns))])

    def finish(self) -> None:
        self._write(["", *_wrapped("legend: " + LEGEND)]
                    + [line for reason, number in self.footnotes.items()
                       for line in _wrapped(f"[{number}] recall unavailable: {reason}")])


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, TABLE_WIDTH, subsequent_indent="    ")


def preamble_lines(report: dict) -> list[str]:
    """The lines above the table: checkpoint, source, entropy rate, validation ELBO, evaluator, unavailable rows."""
    lines = [f"checkpoint {report['checkpoint']} (step {report['step']}, {report['weights']} weights), "
             f"source {report['source_name']}, L={report['seq_len']}, N={report['num']}, seed={report['seed']}"]
    if "entropy_rate" in report:
        er = report["entropy_rate"]
        lines.append(f"entropy rate of the source: {er['value']:.4f} ± {er['se']:.4f} nats/token ({er['method']})")
    ve = report["validation_elbo"]
    if "skipped" in ve:
        line = f"validation ELBO: skipped ({ve['skipped']})"
    else:
        line = f"validation ELBO: {ve['elbo']:.4f} ± {ve['se']:.4f} nats/token"
    if "elbo_gap" in ve:
        line += f" (gap over the true NLL of the same data: {ve['elbo_gap']:.4f} ± {ve['elbo_gap_se']:.4f})"
    lines.append(line)
    if report["evaluator"]:
        lines.append(f"evaluator: {report['evaluator']} (gen perplexity comparable only under this evaluator)")
    settings = report.get("recall_settings")
    if settings:
        lines.append(f"recall: {settings['num_heldout']} held-out true sequences, k up to {settings['max_k']}"
                     + (f", stopping once rem <= {settings['tolerance']:g}" if settings["tolerance"] else ""))
    unavailable = report.get("unavailable") or {}
    for reason in dict.fromkeys(unavailable.values()):
        lines.append(f"unavailable: {', '.join(n for n, r in unavailable.items() if r == reason)} ({reason})")
    return lines


def format_table(report: dict) -> str:
    """The whole plain-text table of a finished report (as `mcd eval` streams it)."""
    table = TableWriter(report, None)
    for r in report["results"]:
        table.row(r)
    table.finish()
    return "\n".join(table.lines)


def write_json(path: Path, obj: dict) -> None:
    """`obj` as indented JSON at `path`, atomically, with the user's umask (sampler.checkpoint.atomic_write_bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())


__all__ = ["EvalConfig", "evaluate_checkpoint", "validation_elbo_per_sequence", "format_table", "write_json", "DEFAULT_STEPS"]
