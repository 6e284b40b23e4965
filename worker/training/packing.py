"""Token-budget micro-batches: the samples of one optimiser step, packed end to end.

An optimiser step still takes ``batch_size x gradient_accumulation_steps`` samples (see
``data.make_batches``); only how they are cut into forward passes changes. Instead of
fixed-size batches padded to their longest sample, the step's samples are packed into rows
of at most ``token_budget`` tokens with no padding at all. Each packed row carries:

- ``position_ids`` that restart at 0 for every sample (rotary embeddings see each sample as
  if it were alone),
- ``cu_seq_lens`` (0, len1, len1+len2, …) from which attention keeps samples apart
  (see ``attention``),
- the positions whose next token is an answer token, and those tokens: the loss is computed
  on these rows only. A sample's last token predicts nothing, so nothing crosses from one
  sample into the next at a boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from worker.spec.formatting import IGNORE_INDEX, Sample

# Work per packed row, in tokens x weights of one transformer layer: 2,048 tokens of a
# Llama-3-8B layer (218M weights). Each forward pass costs a fixed amount of host time per
# layer (Python, kernel launches), so a layer with fewer weights needs more tokens to keep the
# GPU busy: about 7k for Llama-3.2-1B and 30k for Qwen2.5-0.5B. Measured on an H200, 2k
# tokens already keep an 8B model busy (4k: 15% faster, 40% more memory), while 0.5B ran
# 20% faster at 16k tokens than at 9k.
_ROW_WORK = 2048 * 218_103_808
_MIN_BUDGET, _MAX_BUDGET = 512, 32768
# The shortest row a compiled pass is padded to (see ``bucket_length``).
_MIN_BUCKET = 256
# The fewest segments, and the shortest longest segment, of a graphed pass (see ``graph_row``).
_MIN_SEGMENTS = 8
_MIN_SEGMENT_BOUND = 128


# A row's shape for CUDA graphs: (width, label slots, sample boundaries, longest segment).
ShapeKey = tuple[int, int, int, int]


@dataclass(frozen=True)
class MicroBatch:
    """One forward pass: a packed row, or padded rows (``attention_mask`` set)."""

    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor | None  # [1, width] for a packed row
    attention_mask: torch.Tensor | None  # [rows, width] for padded rows
    cu_seq_lens: torch.Tensor | None  # int32 [samples + 1] for a packed row
    max_length: int
    label_positions: torch.Tensor  # flat indices into rows x width that predict an answer
    label_targets: torch.Tensor  # the answer token each of those positions predicts
    tokens: int  # real (non-pad) tokens
    # 1 for each real label and 0 for the padding after them (see ``graph_row``); None: all real.
    label_weights: torch.Tensor | None = None

    def to(self, device: torch.device) -> MicroBatch:
        """A copy on ``device``. Copies to a GPU go through pinned memory, so they queue
        behind the GPU's work instead of making the host wait for it."""
        pin = device.type == "cuda"

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return MicroBatch(
            input_ids=_required(move(self.input_ids)),
            position_ids=move(self.position_ids),
            attention_mask=move(self.attention_mask),
            cu_seq_lens=move(self.cu_seq_lens),
            max_length=self.max_length,
            label_positions=_required(move(self.label_positions)),
            label_targets=_required(move(self.label_targets)),
            tokens=self.tokens,
            label_weights=move(self.label_weights),
        )

    def shape_key(self) -> ShapeKey:
        """What a pass replayed as a CUDA graph is recorded for: the row's width, the label
        slots, the sample boundaries and the longest segment (see ``graph_row``)."""
        bounds = 0 if self.cu_seq_lens is None else int(self.cu_seq_lens.numel())
        return (
            int(self.input_ids.shape[-1]),
            int(self.label_positions.numel()),
            bounds,
            self.max_length,
        )


def _required(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None
    return t


def answer_token_count(sample: Sample) -> int:
    """Answer tokens the loss sees: every labelled token except a first one (never predicted)."""
    return sum(1 for label in sample.labels[1:] if label != IGNORE_INDEX)


def default_token_budget(model_config: Any) -> int:
    """Tokens per packed row when the run config does not set ``micro_batch_tokens``."""
    return max(_MIN_BUDGET, min(_MAX_BUDGET, _ROW_WORK // layer_weights(model_config)))


def layer_weights(model_config: Any) -> int:
    """Weights of one transformer layer's projections (attention and MLP)."""
    hidden = int(getattr(model_config, "hidden_size", 0) or 4096)
    intermediate = int(getattr(model_config, "intermediate_size", 0) or 4 * hidden)
    heads = int(getattr(model_config, "num_attention_heads", 0) or 32)
    kv_heads = int(getattr(model_config, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(model_config, "head_dim", 0) or hidden // heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    return max(1, attention + 3 * hidden * intermediate)


def pack(samples: Sequence[Sample], token_budget: int) -> list[list[Sample]]:
    """Group ``samples`` into rows of at most ``token_budget`` tokens (first fit, longest
    first). A sample longer than the budget gets a row of its own; the order is a pure
    function of the input, so runs repeat exactly."""
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i].input_ids), i))
    rows: list[list[Sample]] = []
    room: list[int] = []
    for i in order:
        length = len(samples[i].input_ids)
        for r, free in enumerate(room):
            if length <= free:
                rows[r].append(samples[i])
                room[r] -= length
                break
        else:
            rows.append([samples[i]])
            room.append(token_budget - length)
    return rows


def share_tokens(samples: Sequence[Sample], parts: int) -> list[list[Sample]]:
    """Split one step's ``samples`` into ``parts`` shares of nearly equal tokens, one per
    process of a multi-process run, so that no process idles at the step's end: longest
    first, each to the share with the fewest tokens so far (the first such share on a tie).
    A pure function of the input: every process computes the same split."""
    shares: list[list[Sample]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(range(len(samples)), key=lambda i: (-len(samples[i].input_ids), i)):
        lightest = min(range(parts), key=lambda p: (load[p], p))
        shares[lightest].append(samples[i])
        load[lightest] += len(samples[i].input_ids)
    return shares


def bucket_length(tokens: int) -> int:
    """The fixed row length a compiled pass of ``tokens`` tokens is padded to.

    Lengths are a quarter of the power of two below them apart (…, 4,096, 5,120, 6,144,
    7,168, 8,192, 10,240, …; at least ``_MIN_BUCKET``): at most four per doubling, so a run's
    rows fall into a few shapes that each compile once, and the padding stays under a quarter
    of the row (an eighth on average)."""
    if tokens <= _MIN_BUCKET:
        return _MIN_BUCKET
    step = (1 << ((tokens - 1).bit_length() - 1)) // 4
    return -(-tokens // step) * step


def widen_row(row: MicroBatch, key: ShapeKey) -> MicroBatch | None:
    """``row`` (a ``graph_row``) in the larger shape ``key`` (width, label slots, sample
    boundaries, longest segment; each at least the row's own), for a pass replayed in a graph
    recorded for that shape: more filler, shared out over more filler segments where the key
    has more boundaries, and more label slots of weight 0. None if the filler segments would
    outgrow the key's longest segment (the attention kernels would skip their ends)."""
    width, slots, bounds, longest = key
    assert row.cu_seq_lens is not None and row.label_weights is not None
    own = row.shape_key()
    if width < own[0] or slots < own[1] or bounds < own[2] or longest < own[3]:
        return None
    real = row.tokens
    cu = row.cu_seq_lens.tolist()
    count = cu.index(real)  # the real samples' boundaries come first
    if _longest_filler(width, real, bounds - 1 - count) > longest:
        return None
    return _with_filler(row, count, int(row.label_weights.sum().item()), key)


def _longest_filler(width: int, real: int, extra: int) -> int:
    """The longest of ``extra`` filler segments that share ``width - real`` tokens evenly, as
    ``_with_filler`` lays them out."""
    return -(-(width - real) // extra)


def _with_filler(row: MicroBatch, count: int, labels: int, key: ShapeKey) -> MicroBatch:
    """The first ``count`` samples and ``labels`` labels of the packed ``row`` in the shape
    ``key`` (width, label slots, sample boundaries, longest segment): the filler after them
    shared out evenly over the boundaries the samples leave (each segment holds at least one
    token and attends only to itself), and the label slots after the real labels pointing at
    the row's last (filler) position with weight 0."""
    width, slots, bounds, longest = key
    assert row.cu_seq_lens is not None and row.position_ids is not None
    real, extra = row.tokens, bounds - 1 - count
    share, more = divmod(width - real, extra)
    lengths = [share + 1] * more + [share] * (extra - more)
    weights = torch.zeros(slots, dtype=torch.float32)
    weights[:labels] = 1.0
    return MicroBatch(
        input_ids=torch.cat(
            [row.input_ids[:, :real], torch.zeros((1, width - real), dtype=torch.long)], 1
        ),
        position_ids=torch.cat(
            [
                row.position_ids[:, :real],
                torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0),
            ],
            1,
        ),
        attention_mask=None,
        cu_seq_lens=torch.cat(
            [row.cu_seq_lens[: count + 1], real + torch.tensor(lengths).cumsum(0).to(torch.int32)]
        ).to(torch.int32),
        max_length=longest,
        label_positions=torch.cat(
            [row.label_positions[:labels], torch.full((slots - labels,), width - 1)]
        ),
        label_targets=torch.cat(
            [row.label_targets[:labels], torch.zeros(slots - labels, dtype=torch.long)]
        ),
        tokens=real,
        label_weights=weights,
    )


def segment_bound(longest: int) -> int:
    """The longest segment a graphed row's attention is recorded for, for segments of up to
    ``longest`` tokens: the next power of two (at least ``_MIN_SEGMENT_BOUND``)."""
    return max(_MIN_SEGMENT_BOUND, 1 << (max(1, longest) - 1).bit_length())


def collate_packed(samples: Sequence[Sample], pad_to: int | None = None) -> MicroBatch:
    """One row holding ``samples`` end to end, with no padding; with ``pad_to``, followed by
    filler tokens up to that length. The filler is a segment of its own (it attends only to
    itself, so every activation stays finite) and predicts nothing, so the loss and the
    gradients are those of the samples alone."""
    ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    cu = [0]
    for sample in samples:
        n = len(sample.input_ids)
        ids.extend(sample.input_ids)
        positions.extend(range(n))
        # Position i predicts token i + 1 of the same sample; the last predicts nothing.
        targets.extend(sample.labels[1:])
        targets.append(IGNORE_INDEX)
        cu.append(cu[-1] + n)
    real = cu[-1]
    longest = max(len(s.input_ids) for s in samples)
    filler = (pad_to or 0) - real
    if filler > 0:
        ids.extend([0] * filler)
        positions.extend(range(filler))
        targets.extend([IGNORE_INDEX] * filler)
        cu.append(real + filler)
    target_tensor = torch.tensor(targets, dtype=torch.long)
    label_positions = (target_tensor != IGNORE_INDEX).nonzero().squeeze(1)
    return MicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        attention_mask=None,
        cu_seq_lens=torch.tensor(cu, dtype=torch.int32),
        max_length=max(longest, filler),
        label_positions=label_positions,
        label_targets=target_tensor[label_positions],
        tokens=real,
    )


def collate_padded(samples: Sequence[Sample], pad_id: int) -> MicroBatch:
    """Right-padded rows (for models that cannot be packed); padding is masked out."""
    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        targets[row, : n - 1] = torch.tensor(sample.labels[1:], dtype=torch.long)
        attention_mask[row, :n] = 1
    flat = targets.flatten()
    label_positions = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    return MicroBatch(
        input_ids=input_ids,
        position_ids=None,
        attention_mask=attention_mask,
        cu_seq_lens=None,
        max_length=width,
        label_positions=label_positions,
        label_targets=flat[label_positions],
        tokens=int(attention_mask.sum()),
    )


def graph_row(samples: Sequence[Sample], bound: int | None = None) -> MicroBatch:
    """One packed row in one of a few fixed shapes, for a pass replayed as a CUDA graph (see
    ``graphs``): a recorded pass repeats its kernels with the shapes and launch sizes it was
    recorded with, so everything that sets them is rounded up to a few values.

    - **Segments**: the sample boundaries (``cu_seq_lens``) number a power of two, at least
      ``_MIN_SEGMENTS`` and more than the samples: the filler after them is shared out evenly
      over the missing segments. Every segment holds at least one token, and each attends
      only to itself, so the filler changes nothing real.
    - **Width**: ``bucket_length`` of the tokens plus one token per filler segment (under a
      quarter of filler).
    - **Longest segment**, which sets the attention kernels' grid: ``bound`` where given (the
      run's: the next power of two above its longest sample, ``segment_bound``, so that it
      adds no shapes of its own), else the next power of two of this row's (at least
      ``_MIN_SEGMENT_BOUND``); never more than the width. The kernels skip the blocks past a
      segment's end, so a larger bound costs next to nothing.
    - **Labels**: ``bucket_length`` slots; those after the real labels point at the row's
      last (filler) position, with weight 0 in ``label_weights``: they add nothing to the
      loss or to any gradient.
    """
    row = collate_packed(samples)
    real, count = row.tokens, len(samples)
    segments = max(_MIN_SEGMENTS, 1 << count.bit_length())  # a power of two above count
    extra = segments - count
    width = bucket_length(real + extra)
    # Shared out evenly (``_with_filler``), so that the filler's segments are rarely the longest.
    longest = max(row.max_length, _longest_filler(width, real, extra), bound or 0)
    labels = int(row.label_positions.numel())
    key = (width, bucket_length(labels), segments + 1, min(width, segment_bound(longest)))
    return _with_filler(row, count, labels, key)
