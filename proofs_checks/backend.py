"""`mcd verify`'s back-end, imported by the dispatcher only once the arguments and the output directory are
checked (proofs_checks.cli): the suite, its report, and the thread setting."""

from __future__ import annotations

from sampler.device import apply_threads

from .report import mutants_phrase, write_report
from .suite import resolve_device, run_suite

__all__ = ["apply_threads", "mutants_phrase", "resolve_device", "run_suite", "write_report"]
