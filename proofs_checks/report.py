"""Write the suite's report: report.json (machine), report.md (human), PNG plots.

report.json schema (top level): passed, seed, quick, device, seconds, total_draws,
suite_false_fail_rate (Σ over claims, union bound), suite_false_fail_budget, false_pass_rate (β at
which detectable discrepancies are stated), package_versions, claims, mutants, plots.
Each claim: id, title, statement, kind, method, passed, n (Monte Carlo draws), false_fail_rate,
false_pass_rate, detectable_discrepancy and detectable_discrepancy_unit (absolute probability
unless no sub-test is a probability test), statistic, threshold and statistic_of (the deciding
sub-test: the first failing one, else the closest to its threshold), seconds,
checked_implementations, notes, error,
subtests (each: name, method, statistic, threshold, comparison, passed, n, false_fail_rate,
false_pass_rate, detectable_discrepancy, discrepancy_unit, details).
Each mutant: name, claim, description, caught, caught_by (failing sub-tests), n, seconds, error.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .stats import TestResult
from .suite import SuiteResult, as_json

PLOT_FILES = {
    "alpha_curves": "alpha_curves.png",
    "unmasking_cdfs": "unmasking_cdfs.png",
    "reappearance": "reappearance.png",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isinf(value):
        return "inf"
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# What each test method's statistic is, in words and units (the "statistic / threshold" columns).
_STATISTIC_UNITS = {
    "DKW": "KS distance: max |F̂ − F| over the grid (probability)",
    "exact binomial": "|p̂ − p|, absolute difference of probabilities",
    "two-sample Hoeffding (Bonferroni over points)": "max |p̂₁ − p̂₂|, absolute difference of probabilities",
    "zero-violation (exact)": "number of violating draws (count)",
    "one-sided Clopper-Pearson lower bound > 0": "number of events seen (count; passes at ≥ 1)",
    "sympy": "0 = proved symbolically, 1 = not proved",
}


def statistic_unit(test: TestResult) -> str:
    """What `test.statistic` measures and in which unit, from its method (and the unit the test
    states for deviations of means and numerical errors)."""
    if test.method in _STATISTIC_UNITS:
        return _STATISTIC_UNITS[test.method]
    if test.method.startswith("exact binomial x"):
        return "max over cells of |p̂ − p| ÷ the cell's acceptance half-width (ratio; passes at ≤ 1)"
    if test.method == "numerical tolerance":
        return f"{test.discrepancy_unit} error" if test.discrepancy_unit in ("relative", "absolute") else f"error ({test.discrepancy_unit})"
    if "Bernstein" in test.method:
        return f"|estimate − exact value| ({test.discrepancy_unit})"
    raise ValueError(f"test {test.name!r} has a method without a stated unit: {test.method!r}")


def _table_cell(text: str) -> str:
    """Text for a markdown table cell: a '|' inside it (as in |p̂ − p|) escaped so it does not end the cell."""
    return text.replace("|", "\\|")


def _claim_statistic_unit(tests: list[TestResult], statistic_of: str | None) -> str:
    """The unit of the claim's deciding sub-test (named by statistic_of), or '' when there is none."""
    chosen = [t for t in tests if t.name == statistic_of]
    return statistic_unit(chosen[0]) if chosen else ""


def plain_summary(result: SuiteResult, data: dict[str, Any]) -> str:
    """A paragraph in plain words: what "passed" means for this report."""
    return (
        f"**What \"passed\" means.** Each claim is checked by exact algebra (sympy), by numerical comparison with "
        f"stated tolerances, or by Monte Carlo draws from the code under test compared with the formula it should "
        f"follow. A Monte Carlo check can fail by bad luck even when the code is right; each one's chance of that "
        f"(its false-fail rate) is stated in the tables, and for the whole suite they add up to at most "
        f"{_fmt(result.suite_false_fail_rate)} (budget {_fmt(data['suite_false_fail_budget'])}), so a failure is a "
        f"bug, not noise. Passing is also informative: each check states the smallest discrepancy it detects — a "
        f"true error at least that large would make it pass with probability at most "
        f"{_fmt(data['false_pass_rate'])} (\"detectable discrepancy\"). Finally, the suite must catch planted bugs "
        f"(mutants): versions of the code with a realistic mistake, each of which must make some check fail; a "
        f"surviving mutant fails the suite. \"Statistic / threshold\": a check passes when its statistic is at "
        f"most its threshold (at least, where marked); the unit of each statistic is given beside it."
    )


def write_report(result: SuiteResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write report.json, report.md and the plots into out_dir (created if needed).
    Returns the written paths by name."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out)
    data = as_json(result)
    data["plots"] = {name: path.name for name, path in plots.items()}
    written = {"json": out / "report.json", "markdown": out / "report.md"}
    _atomic_write(written["json"], json.dumps(data, indent=2, allow_nan=False) + "\n")
    _atomic_write(written["markdown"], markdown(result, data))
    written.update(plots)
    return written


def mutants_phrase(result: SuiteResult) -> str:
    """"n/m planted bugs caught", or that none were run (`mcd verify --no-mutants`), never "0/0 caught"."""
    if not result.mutants:
        return "the planted bugs were not run"
    return f"{sum(m.caught for m in result.mutants)}/{len(result.mutants)} planted bugs caught"


def markdown(result: SuiteResult, data: dict[str, Any]) -> str:
    lines = [
        "# Verification of the Gaussian–masked duality",
        "",
        f"**{'PASSED' if result.passed else 'FAILED'}** — {sum(c.passed for c in result.claims)}/{len(result.claims)} claims pass, "
        f"{mutants_phrase(result)}.",
        "",
        plain_summary(result, data),
        "",
        f"- seed {result.seed}, {'--quick' if result.quick else 'default'} sizes, device {result.device}, "
        f"{result.seconds:.1f} s, {result.total_draws:,} Monte Carlo draws (claims; mutant runs not counted)",
        f"- suite false-fail rate <= {_fmt(result.suite_false_fail_rate)} (budget {_fmt(data['suite_false_fail_budget'])}, "
        "Bonferroni across claims and within each claim across its sub-tests; numerical, symbolic and zero-violation "
        "sub-tests cannot fail by chance)",
        f"- detectable discrepancies are stated at false-pass rate β = {_fmt(data['false_pass_rate'])}: a true "
        "discrepancy at least that large makes the check pass with probability <= β",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
        "",
        "## Claims",
        "",
        "| # | claim | kind | method | passed | draws | false-fail rate | detectable discrepancy | statistic / threshold — unit (of the deciding sub-test) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result.claims:
        lines.append(
            f"| {c.claim.id} | {_table_cell(c.claim.title)} | {c.claim.kind} | {_table_cell(c.claim.method)} | {'yes' if c.passed else '**NO**'} | {c.draws:,} | "
            f"{_fmt(c.false_fail_rate)} | {_fmt(c.detectable_discrepancy)} | {_fmt(c.statistic)} / {_fmt(c.threshold)} — "
            f"{_table_cell(_claim_statistic_unit(c.tests, c.statistic_of))} |"
        )
    lines += ["", "## Mutants (planted bugs)", "", "| mutant | claim | bug | caught | caught by |", "|---|---|---|---|---|"]
    for m in result.mutants:
        by = "; ".join(m.failed_tests[:3]) + (f" (+{len(m.failed_tests) - 3} more)" if len(m.failed_tests) > 3 else "")
        lines.append(f"| {m.mutant.name} | {m.mutant.claim} | {_table_cell(m.mutant.description)} | {'yes' if m.caught else '**NO (survived)**'} | {_table_cell(by)} |")
    lines += ["", "## Details", ""]
    for c in result.claims:
        lines += [f"### Claim {c.claim.id}: {c.claim.title}", "", f"*{c.claim.statement}*", ""]
        if c.error:
            lines += [f"**Error:** `{c.error}`", ""]
        lines += ["Implementations checked: " + ", ".join(f"{k} = `{v}`" for k, v in c.checked.items()), ""]
        for note in c.notes:
            lines += [f"- {note}"]
        if c.notes:
            lines.append("")
        lines += ["| sub-test | method | passed | n | statistic | threshold | statistic unit | false-fail | detectable (unit) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in c.tests:
            op = "" if t.comparison == "<=" else " (pass iff >=)"
            lines.append(
                f"| {_table_cell(t.name)} | {_table_cell(t.method)} | {'yes' if t.passed else '**NO**'} | {t.n:,} | {_fmt(t.statistic, 4)} | {_fmt(t.threshold, 4)}{op} | "
                f"{_table_cell(statistic_unit(t))} | "
                f"{_fmt(t.false_fail_rate)} | {_fmt(t.detectable_discrepancy)} ({_table_cell(t.discrepancy_unit)}) |"
            )
        lines.append("")
        lines.append(f"Claim time {c.seconds:.2f} s.")
        lines.append("")
    lines += ["## Plots", ""]
    for name, file in data.get("plots", {}).items():
        lines.append(f"![{name}]({file})")
    lines += [
        "",
        "## Methods",
        "",
        "- **DKW**: sup |F̂_n − F| <= ε with ε = sqrt(log(2/δ)/(2n)), simultaneous over every grid point; detectable "
        "Δ = ε + sqrt(log(1/β)/(2n)) (one-sided Hoeffding at the point of discrepancy).",
        "- **Exact binomial**: equal-tail acceptance region of Bin(n, p) at δ (no normal approximation); detectable Δ by "
        "bisection on the exact pass probability.  Conditional kernels condition on the (independent-token) denominator count.",
        "- **Two-sample Hoeffding**: |p̂_1 − p̂_2| <= sqrt(log(2/δ)(1/n + 1/m)/2) per point, Bonferroni over points.",
        "- **Zero-violation**: a property required of every draw; false-fail 0, detects violation frequencies >= 1 − β^(1/n).",
        "- **Clopper–Pearson positivity**: the rate is confirmed > 0 iff an event occurs (false-pass 0 when the rate is 0); "
        "false-fail <= δ whenever the true rate >= 1 − δ^(1/n).",
        "- **Bernstein** (exact variance from enumeration) and **empirical Bernstein** (Maurer–Pontil) for bounded means.",
        "- Mutants run at half the --quick sample sizes (in both modes).",
        "",
    ]
    return "\n".join(lines)


def _dress(ax: Any, xlabel: str, ylabel: str, title: str, legend_fontsize: int, *, legend_columns: int = 1,
           title_fontsize: int | None = None) -> None:
    """Axis labels, title, legend and the light grid every report plot uses (the title at the
    default size unless title_fontsize is given)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_fontsize is None else {"fontsize": title_fontsize}))
    ax.legend(fontsize=legend_fontsize, ncol=legend_columns)
    ax.grid(alpha=0.3)


def _plot_alpha_curves(plt: Any, curves: dict[str, Any]) -> Any:
    """Claim 1: α_K(ν) curves with the Monte Carlo points, and their residuals within the DKW bands."""
    fig, (ax, res) = plt.subplots(2, 1, figsize=(7.5, 8), gridspec_kw={"height_ratios": [3, 2]})
    for index, (k, entry) in enumerate(curves.items()):
        color = f"C{index}"
        ax.plot(entry["curve_nu"], entry["curve_alpha"], color=color, lw=1.2, label=f"α_K(ν), K={k}")
        eps = entry["epsilon_threshold"]
        ax.errorbar(entry["nu"], entry["threshold"], yerr=eps, fmt="o", ms=3, color=color, capsize=2, alpha=0.8)
        claimed = np.asarray(entry["claimed"])
        res.plot(claimed, np.asarray(entry["threshold"]) - claimed, "o-", color=color, ms=3, lw=0.8, label=f"threshold draws, K={k}")
        if "materialised" in entry:
            ax.plot(entry["nu"], entry["materialised"], "x", color=color, ms=5)
            res.plot(claimed, np.asarray(entry["materialised"]) - claimed, "x--", color=color, ms=5, lw=0.8, label=f"materialised, K={k}")
    first = next(iter(curves.values()))
    for key, style in (("epsilon_threshold", ":"), ("epsilon_materialised", "-.")):
        res.axhline(first[key], color="k", ls=style, lw=0.8)
        res.axhline(-first[key], color="k", ls=style, lw=0.8)
    _dress(res, "α_K(ν) (claimed)", "Monte Carlo − α_K(ν)",
           "Residuals with the DKW bands (dotted: threshold n, dash-dot: materialised n)", 6, legend_columns=2, title_fontsize=9)
    _dress(ax, "ν = α̃/σ̃", "P(project(w) = x0)", "α_K(ν): curves, Monte Carlo (o threshold draws ± DKW band, x materialised)", 8)
    return fig


def _plot_unmasking_cdfs(plt: Any, entry: dict[str, Any]) -> Any:
    """Claim 5: the unmasking-time ECDF of each coupling against 1 − α(t)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(entry["theory_t"], entry["theory_cdf"], color="k", lw=1, label="1 − α(t) (theory)")
    for index, (method, values) in enumerate(entry["methods"].items()):
        tau = np.sort(np.asarray(values["tau"], dtype=np.float64))
        tau = np.where(np.isfinite(tau), tau, 1.05)
        ax.step(tau, np.arange(1, tau.size + 1) / tau.size, where="post", color=f"C{index}", alpha=0.6, label=f"ECDF of τ, {method}")
        ax.plot(entry["times"], values["cdf"], "o", color=f"C{index}", ms=4, label=f"P(τ <= t) on the grid, {method}")
    ax.set_xlim(0, 1.05)
    _dress(ax, "t", "P(τ <= t)", "Unmasking-time CDFs of the three couplings", 7)
    return fig


def _plot_reappearance(plt: Any, entry: dict[str, Any]) -> Any:
    """Claim 4: per-step reappearance rate of the fresh-noise OU path (a masked path has 0)."""
    mid = (np.asarray(entry["t_from"]) + np.asarray(entry["t_to"])) / 2
    rate = np.asarray(entry["rate"])
    lower, upper = np.asarray(entry["lower"]), np.asarray(entry["upper"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.errorbar(mid, rate, yerr=[rate - lower, upper - rate], fmt="o-", capsize=3, label="fresh-noise OU path (95 % Clopper–Pearson)")
    ax.axhline(0.0, color="k", lw=1, label="any masked path (shared noise): 0")
    _dress(ax, "t (middle of the step t_i → t_i+1)", "P(masked at t_i, visible at t_i+1)",
           "Counterexample: tokens reappear on a Markov Gaussian path", 8)
    return fig


PLOTTERS = {"alpha_curves": _plot_alpha_curves, "unmasking_cdfs": _plot_unmasking_cdfs, "reappearance": _plot_reappearance}


def write_plots(result: SuiteResult, out: Path) -> dict[str, Path]:
    """PNG plots from the claims' plot data (Agg backend); a plot whose claim did not run or
    errored is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, Any] = {}
    for c in result.claims:
        data.update(c.plot_data)
    written: dict[str, Path] = {}
    for name, plot in PLOTTERS.items():
        if name not in data:
            continue
        fig = plot(plt, data[name])
        written[name] = out / PLOT_FILES[name]
        fig.tight_layout()
        fig.savefig(written[name], dpi=110)
        plt.close(fig)
    return written
