"""A tiny randomly initialised evaluator LM for offline checks of the text path (`mcd bench-text --smoke`, the
tests): a byte-level BPE tokenizer trained on a few lines and a one-layer Llama, saved as a local Hugging Face
directory that `load_evaluator(path)` reads.  Nothing is downloaded; its perplexities mean nothing."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = "the cat sat on the mat. the dog sat on the log. a bird sang in the tree; the sun rose over the hill.\n"


def make_tiny_evaluator(directory: Path, seed: int = 0) -> Path:
    """Write a tiny causal LM (random weights, seeded) and its tokenizer into `directory`; returns it."""
    from tokenizers import ByteLevelBPETokenizer  # optional (the `text` extra)
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # heavy and optional (the `text` extra)

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT] * 20, vocab_size=300, min_frequency=1, special_tokens=["<s>", "</s>", "<pad>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return Path(directory)
