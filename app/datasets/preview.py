"""One sample as training sees it: the rendered chat template, which tokens carry the loss, and
which fall past ``max_seq_length``.

It runs worker.spec.formatting, the code training runs, on a ``TextTokenizer``: the labels
shown are the labels trained on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jinja2

from app.core.errors import InvalidInput
from app.datasets.tokenization import TextTokenizer
from worker.spec.formatting import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    encode,
    ensure_chat_template,
    render,
    with_system_prompt,
)


class Piece(NamedTuple):
    """A run of text whose tokens share the same flags."""

    text: str
    loss: bool  # the tokens are answer tokens: training computes the loss on them
    truncated: bool  # the tokens lie past max_seq_length: training never sees them


@dataclass(frozen=True)
class Preview:
    pieces: list[Piece]
    total_tokens: int  # the whole rendered conversation, truncated tokens included
    loss_tokens: int  # answer tokens within max_seq_length
    truncated_tokens: int
    template_fallback: bool  # the model has no chat template: tunelab's fallback renders it
    # Training drops a sample with no answer token after the first once truncated.
    dropped: bool

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


def preview(
    messages: Sequence[Mapping[str, str]],
    tokenizer: TextTokenizer,
    *,
    max_seq_length: int,
    system_prompt: str | None = None,
) -> Preview:
    """The conversation as training will see it, in pieces flagged loss / truncated."""
    if max_seq_length < 1:
        raise InvalidInput("max_seq_length must be at least 1.")
    installed = ensure_chat_template(tokenizer)
    fallback = installed or tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    conversation = with_system_prompt([dict(m) for m in messages], system_prompt)
    try:
        # Labels for every token; the first max_seq_length of them are what training uses,
        # since truncation only cuts the list.
        sample = encode(tokenizer, conversation, sys.maxsize)
        text = render(tokenizer, conversation, generation_prompt=False)
    except jinja2.exceptions.TemplateError as exc:
        raise InvalidInput(f"The chat template of '{tokenizer.name}' failed: {exc}") from exc
    offsets = tokenizer(text)["offset_mapping"]
    total = len(sample.input_ids)
    loss = [label != IGNORE_INDEX for label in sample.labels]
    truncated = [i >= max_seq_length for i in range(total)]
    kept_labels = sample.labels[:max_seq_length]
    return Preview(
        pieces=_pieces(text, offsets, loss, truncated),
        total_tokens=total,
        loss_tokens=sum(loss[:max_seq_length]),
        truncated_tokens=max(0, total - max_seq_length),
        template_fallback=fallback,
        dropped=all(label == IGNORE_INDEX for label in kept_labels[1:]),
    )


def _pieces(
    text: str, offsets: Sequence[tuple[int, int]], loss: Sequence[bool], truncated: Sequence[bool]
) -> list[Piece]:
    """Cut ``text`` at token boundaries and merge neighbours with equal flags.

    Byte-level BPE can split one Han character or emoji over several tokens; those tokens all
    carry the whole character's offsets, so they are grouped, and a group counts as loss /
    truncated when any of its tokens does. Text no token covers (whitespace the offsets trim)
    joins the token after it, so the pieces always add up to ``text``.
    """
    groups: list[tuple[int, int, bool, bool]] = []  # start, end, loss, truncated
    for (start, end), is_loss, is_cut in zip(offsets, loss, truncated, strict=True):
        if groups and start < groups[-1][1]:
            g_start, g_end, g_loss, g_cut = groups[-1]
            groups[-1] = (g_start, max(g_end, end), g_loss or is_loss, g_cut or is_cut)
        else:
            groups.append((start, end, is_loss, is_cut))
    if not groups:
        return [Piece(text, False, False)] if text else []

    pieces: list[Piece] = []
    cursor = 0
    for index, (_, end, is_loss, is_cut) in enumerate(groups):
        stop = len(text) if index == len(groups) - 1 else max(end, cursor)
        chunk, cursor = text[cursor:stop], stop
        if pieces and pieces[-1].loss == is_loss and pieces[-1].truncated == is_cut:
            pieces[-1] = Piece(pieces[-1].text + chunk, is_loss, is_cut)
        elif chunk:
            pieces.append(Piece(chunk, is_loss, is_cut))
    return pieces
