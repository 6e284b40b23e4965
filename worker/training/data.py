"""From chat records to training batches: encoding every record (see `formatting` for the chat
template and the answer-only labels) and choosing each optimiser step's samples. How a step's
samples are then cut into forward passes (packed rows under a token budget, or padded rows)
is `packing`'s job; `collate` here is the plain padded form, for evaluation and tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from worker.spec.errors import TrainingError
from worker.spec.formatting import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    Message,
    Sample,
    answer_spans,
    encode,
    ensure_chat_template,
    ensure_pad_token,
    render,
    with_system_prompt,
)

# The text side lives in `formatting` (torch-free, shared with the web preview); re-exported.
__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "IGNORE_INDEX",
    "Message",
    "PreparedData",
    "Sample",
    "answer_spans",
    "collate",
    "encode",
    "ensure_chat_template",
    "ensure_pad_token",
    "make_batches",
    "prepare_samples",
    "render",
    "with_system_prompt",
]


@dataclass(frozen=True)
class PreparedData:
    samples: list[Sample]
    dropped_too_long: int


def prepare_samples(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    *,
    max_seq_length: int,
    system_prompt: str | None,
) -> PreparedData:
    """Encode every record; drop those with no answer token left after truncation."""
    if not getattr(tokenizer, "is_fast", True):
        raise TrainingError(
            "This model's tokenizer has no fast (Rust) version, which tunelab needs to find "
            "the answer tokens in each sample."
        )
    samples: list[Sample] = []
    dropped = 0
    for index, record in enumerate(records):
        messages = with_system_prompt(record["messages"], system_prompt)
        try:
            sample = encode(tokenizer, messages, max_seq_length)
        except Exception as exc:
            raise TrainingError(
                f"The model's chat template could not render sample {index + 1}: {exc}"
            ) from exc
        # The first token is never predicted, so a label there alone teaches nothing.
        if all(label == IGNORE_INDEX for label in sample.labels[1:]):
            dropped += 1
            continue
        samples.append(sample)
    return PreparedData(samples=samples, dropped_too_long=dropped)


def make_batches(
    samples: Sequence[Sample], batch_size: int, *, seed: int, epoch: int
) -> list[list[Sample]]:
    """This epoch's batches: a shuffle that depends only on (seed, epoch), then fixed-size
    slices (the last may be smaller)."""
    order = list(range(len(samples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [
        [samples[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]


def collate(batch: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample; padding is masked from attention and loss."""
    width = max(len(s.input_ids) for s in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, sample in enumerate(batch):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
