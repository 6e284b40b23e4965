"""Conversations as the model sees them: the chat template applied, the character spans of the
answers, and token labels that carry the loss only on answer tokens.

Torch-free, so the web process can preview a sample exactly as training will see it (with a
`tokenizers`-backed tokenizer) and the engine uses the very same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100

# For tokenizers that ship no template. Each turn ends with the tokenizer's own end-of-sequence
# token, so a model trained with it learns to stop where generation stops.
FALLBACK_CHAT_TEMPLATE = (
    "{%- set end = eos_token if eos_token else '<|im_end|>' -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + end + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

Message = dict[str, str]


@dataclass(frozen=True)
class Sample:
    """One tokenized conversation; ``labels`` is IGNORE_INDEX except on answer tokens."""

    input_ids: list[int]
    labels: list[int]


def ensure_chat_template(tokenizer: Any) -> bool:
    """Install the fallback template when the tokenizer has none; True if it did."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def ensure_pad_token(tokenizer: Any) -> int:
    """The id used for padding; falls back to end-of-sequence for tokenizers without one.

    Padded positions are masked from attention and loss, so the id's meaning never matters;
    setting it on the tokenizer means the saved adapter's tokenizer can pad batches too.
    """
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def with_system_prompt(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The conversation with ``system_prompt`` as its first turn unless it has a system turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    return str(text)


def answer_spans(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant's answers.

    An answer's span is what rendering ``messages[:i+1]`` adds to rendering ``messages[:i]``
    with the generation prompt: the content plus the template's end-of-turn marker, so this
    works for any template and any number of turns. Trailing whitespace after the marker is
    template glue the model never has to produce, so it stays unlabelled.
    """
    full = render(tokenizer, messages, generation_prompt=False)
    prefix_spans: dict[int, tuple[int, int]] = {}
    end_marker = ""
    for i, message in enumerate(messages):
        # An opening assistant turn answers nothing and has no prompt to render before it.
        if message["role"] != "assistant" or i == 0:
            continue
        prompt = render(tokenizer, messages[:i], generation_prompt=True)
        turn = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if turn.startswith(prompt) and full.startswith(turn):
            added = turn[len(prompt) :].rstrip()
            prefix_spans[i] = (len(prompt), len(prompt) + len(added))
            content = message["content"]
            if content and content in added:
                end_marker = added[added.rindex(content) + len(content) :]

    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        found = prefix_spans.get(i)
        if found is None:
            found = _search(full, message["content"], cursor)
            if found is not None and message["role"] == "assistant":
                found = _extend_over(full, found, end_marker)
        if found is None:
            continue
        if message["role"] == "assistant" and i > 0 and found[1] > found[0]:
            spans.append(found)
        cursor = max(cursor, found[1])
    return full, spans


# Some templates rewrite history (Qwen3 drops the reasoning block from earlier answers), so an
# earlier turn's render is not a prefix of the whole conversation. Such an answer is found by
# its text after the turns before it, and gets the end-of-turn marker learnt from the others.
def _search(full: str, content: str, cursor: int) -> tuple[int, int] | None:
    start = full.find(content, cursor) if content else -1
    return None if start < 0 else (start, start + len(content))


def _extend_over(full: str, span: tuple[int, int], end_marker: str) -> tuple[int, int]:
    start, end = span
    if end_marker and full.startswith(end_marker, end):
        end += len(end_marker)
    return start, end


def encode(tokenizer: Any, messages: Sequence[Message], max_seq_length: int) -> Sample:
    """Tokenize a conversation once and label the tokens that overlap an answer span."""
    text, spans = answer_spans(tokenizer, messages)
    # Special tokens come from the template itself; the tokenizer must not add a second BOS.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])[:max_seq_length]
    offsets = list(encoded["offset_mapping"])[: len(ids)]
    labels = [
        token if any(_overlaps(start, end, a, b) for a, b in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, offsets, strict=True)
    ]
    return Sample(input_ids=ids, labels=labels)


def _overlaps(start: int, end: int, span_start: int, span_end: int) -> bool:
    if start == end:
        return span_start <= start < span_end
    return start < span_end and end > span_start
