"""Whole training passes recorded once as CUDA graphs and replayed, for models whose layers
are too small to keep a GPU busy.

At 0.5B and 1B one packed pass is a few thousand kernels of microseconds each (two dozen
layers, each a dozen projections, norms, attention and their backward), and the host spends
longer issuing them than the GPU spends running them: a Qwen2.5-0.5B step took 217 ms of wall
time for 119 ms of GPU work. A CUDA graph records the kernels of one pass, forward and
backward, and launches them all again with one call, so the host no longer sets the pace.

- **What is recorded**: the decoder, the loss head and the backward pass, gradients added
  into the adapters' ``.grad`` in place. The host copies each pass's inputs into the graph's
  own tensors and sets the pass's share of the step's loss (1 / the step's answer tokens)
  before each replay. The optimiser, gradient clipping and validation run as before.
- **Shapes**: a graph replays the shapes it was recorded with, so a graphed run packs its
  rows into a few fixed shapes (``packing.graph_row``: width, label slots and sample
  boundaries rounded up, the longest segment one bound for the whole run; the filler
  predicts nothing and attends only to itself). The run's first pass runs as usual (it
  compiles the kernels and sets up the libraries) and is then recorded; from then on a pass
  of a new shape is recorded first (recording runs no kernel, and costs about the host time
  of a plain pass) and replayed at once, which computes it. A run records a handful to a
  few dozen graphs, most in its first steps. All graphs share one memory pool, so together
  they hold about one pass's activations. Past ``MAX_GRAPHS`` shapes, passes of a new shape
  run as usual.
- **Faults**: a pass that cannot be recorded (an operation that waits for the GPU, say)
  turns graphs off for the rest of the run, with a warning, and the run goes on as usual;
  a pass that runs out of memory drops every graph and turns them off (see ``budget``).
- **When**: ``TUNELAB_CUDA_GRAPHS`` (worker setting) ``auto`` (default) records passes of
  packed LoRA runs on a CUDA GPU whose decoder layers hold at most ``SMALL_LAYER_WEIGHTS``
  weights, in the weights' own 16-bit dtype, without DoRA, 4-bit layers, gradient
  checkpointing or several processes, where the loss comes from the decoder's hidden states;
  and of those only passes of at most ``MAX_PASS_WORK`` (tokens x one layer's weights): a
  larger pass keeps the GPU busy by itself and runs as usual, unpadded; and only in runs of
  at least ``MIN_RUN_PASSES`` passes, which repay the recordings. ``off`` never;
  ``on`` records every pass, 4-bit (QLoRA) and DoRA runs and larger models too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from worker.training.compiled import SMALL_LAYER_WEIGHTS, switch
from worker.training.packing import MicroBatch, ShapeKey, layer_weights, widen_row

MODE_ENV = "TUNELAB_CUDA_GRAPHS"
# ``auto`` records passes of layers of at most SMALL_LAYER_WEIGHTS weights, as ``compiled``
# compiles them (an 8B layer keeps the GPU busy on its own).
# Recorded shapes per run; a pass of a shape past them runs as usual.
MAX_GRAPHS = 48
# ``auto`` records passes of at most this much work (tokens x weights of one layer). Measured
# on one H100 host (2026-12-07 evening, bench/train_throughput.py, 100 steps, graphs against
# none in one command, both orders; with the dropout and loss kernels, the step loop and new
# shapes recorded first): Qwen2.5-0.5B lognormal, 14.7k-token passes (2.2e11), 1.23-1.42x;
# Llama-3.2-1B chat-short, 7.8k-token passes (4.7e11), 1.11-1.17x; Llama-3.2-1B lognormal,
# 14.7k-token passes (8.9e11), 0.88x (the GPU busy, the filler costing more than the launches
# saved). Before those changes (2026-12-06) the first two ran 1.00x and 0.89-0.92x, hence the
# earlier bound of 1.6e11.
MAX_PASS_WORK = 6e11
# ... and only in runs of at least this many passes: recording a new shape costs about the
# host time of a plain pass, and a run meets a few to a dozen shapes. Measured on an H100
# (2026-12-07, with the dropout and loss kernels, new shapes recorded first and replayed, one
# attention bound a run) at Qwen2.5-0.5B chat-short: a replayed pass took 75-105 ms where a
# plain one took 110-130 ms and a recording 190-260 ms; a 100-step run ran 1.09x overall
# (its second half 1.18x), a 6-step one 0.79x. (Before those changes a 96-step run ran 0.99x.)
MIN_RUN_PASSES = 100
# A pass of a shape not recorded replays in the cheapest recorded graph that holds it (widened
# with filler, ``packing.widen_row``) until the extra tokens that shape's passes have cost reach
# this many of its widths; then its own shape is recorded. A recording costs about one plain
# pass of host time, so waiting to record a shape until its padding has cost about as much
# (ski rental) spends at most twice the better of the two in hindsight. Modelled on the
# benchmark's rows (100 steps of 32 samples, three seeds each of lognormal and chat-short; a
# replay's time in proportion to its tokens and slots, a recording 230 ms more, as measured at
# 0.5B): 5-10 shapes recorded where recording every new one recorded 11-15, 4-11% less time.
# Measured on an H100 (2026-12-07 late, bench/train_throughput.py, 100 steps, Qwen2.5-0.5B
# lognormal): 7 shapes recorded and 30 passes widened; 96,704 and 96,556 tok/s against 90,741
# and 88,852 when every new shape was recorded (15), 1.08x; the same final loss.
RECORD_PASSES = 1.0

Loss = Callable[[Any, MicroBatch], torch.Tensor]
# A recorded pass's shape: width, label slots, sample boundaries, longest segment.
Key = ShapeKey


def setting() -> str:
    """``TUNELAB_CUDA_GRAPHS``: auto, on or off (anything else counts as auto)."""
    return switch(MODE_ENV)


def decide(
    lm: Any,
    device: torch.device,
    *,
    packed: bool,
    checkpointing: bool,
    fused_head: bool,
    autocast: torch.dtype | None,
    method: str = "lora",
    dora: bool = False,
    run_passes: float | None = None,
) -> tuple[bool, str]:
    """Whether this run's passes are recorded as CUDA graphs, and why (or why not).
    ``run_passes``: the passes of the whole run (None: not known, not a reason to stay off).
    Several processes are decided later, by the trainer."""
    mode = setting()
    if mode == "off":
        return False, f"{MODE_ENV}=off"
    if device.type != "cuda":
        return False, "not on a CUDA GPU"
    if not packed:
        return False, "rows are not packed"
    if not fused_head:
        return False, "the loss does not come from the decoder's hidden states"
    if checkpointing:
        return False, "gradient checkpointing is on"
    if autocast is not None:
        return False, "the weights are float32 masters (full fine-tuning)"
    if mode == "on":
        return True, f"{MODE_ENV}=on"
    if method != "lora" or dora:
        return False, "only plain LoRA runs replay CUDA graphs by default"
    if any(p.dtype == torch.uint8 for p in lm.parameters()):
        return False, "4-bit layers are not recorded by default"
    weights = layer_weights(lm.config)
    if weights > SMALL_LAYER_WEIGHTS:
        return False, f"layers of {weights / 1e6:.0f}M weights keep the GPU busy on their own"
    if run_passes is not None and run_passes < MIN_RUN_PASSES:
        return False, (
            f"a run of {run_passes:,.0f} passes is too short to repay recording its row shapes "
            f"(about {MIN_RUN_PASSES})"
        )
    return True, (
        f"layers of {weights / 1e6:.0f}M weights are launch-bound in passes of up to "
        f"{row_limit(lm.config):,} tokens; larger passes run as usual"
    )


def row_limit(model_config: Any) -> int | None:
    """The most tokens of a pass that is recorded (``auto``: the larger ones keep the GPU
    busy and would only pay for the filler); None records every pass (``on``)."""
    if setting() == "on":
        return None
    return int(MAX_PASS_WORK // layer_weights(model_config))


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: MicroBatch  # the tensors the graph reads, on the GPU
    scale: torch.Tensor  # the pass's share of the step's loss
    loss: torch.Tensor  # the pass's summed loss, written by each replay


class PassGraphs:
    """The recorded passes of one run, by shape (``MicroBatch.shape_key``)."""

    def __init__(
        self,
        loss: Loss,
        on_event: Callable[[str, str, dict[str, Any] | None], None],
        limit: int = MAX_GRAPHS,
    ) -> None:
        self.loss_of = loss
        self.on_event = on_event
        self.limit = limit
        self.graphs: dict[Key, _Graph] = {}
        self.pool: Any = None
        self.stream: torch.cuda.Stream | None = None
        self.off: str | None = None  # why graphs stopped, once they have
        self.recorded = self.replayed = self.eager = self.large = self.widened = 0
        # Extra tokens replayed so far for each shape not recorded, in larger graphs.
        self.padding: dict[Key, float] = {}
        self.slot_cost: float | None = None  # a label slot's work, in tokens (``slot_cost``)

    def run(
        self, lm: Any, batch: MicroBatch, answer_tokens: int, device: torch.device
    ) -> torch.Tensor:
        """Forward and backward of one pass (``batch`` still on the host), its loss divided
        by ``answer_tokens`` for the gradient; returns its summed loss, detached."""
        if batch.label_weights is None:  # a pass too large to gain (see ``row_limit``)
            self.large += 1
            return self._plain(lm, batch.to(device), answer_tokens)
        key = batch.shape_key()
        graph = self.graphs.get(key)
        if graph is None and self.eager and self.off is None:
            graph, batch = self._stand_in(lm, batch, key)
        if graph is not None:
            _load(graph.inputs, batch)
            return self._replay(graph, answer_tokens)
        if self.eager and self._room():
            # A new shape once the run is warm (its first pass ran as usual: kernels
            # compiled, libraries set up): recorded first, then replayed, which computes it.
            graph = self._record(lm, key, batch.to(device))
            if graph is not None:
                return self._replay(graph, answer_tokens)
        moved = batch.to(device)
        summed = self._plain(lm, moved, answer_tokens)
        self.eager += 1
        if self.eager == 1 and self._room():
            # The run's first pass: recorded after running as usual (nothing is warm yet).
            self._record(lm, key, moved)
        return summed

    def _stand_in(self, lm: Any, batch: MicroBatch, key: Key) -> tuple[_Graph | None, MicroBatch]:
        """The recorded graph ``stand_in`` picks for this pass and the pass widened to its
        shape; else (None, the pass as it was)."""
        if self.slot_cost is None:
            self.slot_cost = slot_cost(lm.config)
        spent = self.padding.get(key, 0.0)
        picked = stand_in(self.graphs, key, spent, self.slot_cost, room=self._room())
        widened = None if picked is None else widen_row(batch, picked[0])
        if picked is None or widened is None:
            return None, batch
        self.padding[key] = spent + picked[1]
        self.widened += 1
        return self.graphs[picked[0]], widened

    def _room(self) -> bool:
        """Whether a new shape may still be recorded."""
        return self.off is None and len(self.graphs) < self.limit

    def _replay(self, graph: _Graph, answer_tokens: int) -> torch.Tensor:
        """Replay a recorded pass over the inputs in its tensors; its summed loss."""
        graph.scale.fill_(1.0 / answer_tokens)
        graph.graph.replay()
        self.replayed += 1
        return graph.loss

    def _plain(self, lm: Any, batch: MicroBatch, answer_tokens: int) -> torch.Tensor:
        """A pass run as usual; its summed loss, detached. Nothing of its autograd graph
        outlives it: a gradient accumulator kept alive from it would tie a later recording
        to this (the default) stream."""
        loss = self.loss_of(lm, batch)
        (loss / answer_tokens).backward()
        return loss.detach()

    def _record(self, lm: Any, key: Key, inputs: MicroBatch) -> _Graph | None:
        """Record a pass over ``inputs`` (which stay the graph's inputs); recording runs no
        kernel. The adapters' gradients exist by now (the run's first pass made them, and a
        graphed run zeroes them in place), so the recorded backward adds into them in place.
        None if it failed (graphs are then off)."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        device = inputs.input_ids.device
        scale = torch.ones((), device=device)
        graph = torch.cuda.CUDAGraph()
        # Dropout's random numbers come from the device's default generator, which a
        # recording takes over; a recording that fails leaves it stuck in that state (every
        # later draw raises), so its state from before is put back then.
        generator = torch.cuda.default_generators[device.index or torch.cuda.current_device()]
        before = generator.clone_state()
        # On a side stream of its own, after the work queued so far (``torch.cuda.graph``
        # would also wait for the GPU, collect garbage and empty the cache: a tenth of a
        # second per shape, for nothing here).
        if self.stream is None:
            self.stream = torch.cuda.Stream(device)
        self.stream.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(self.stream):
                graph.capture_begin(pool=self.pool)
                try:
                    loss = self.loss_of(lm, inputs)
                    (loss * scale).backward()
                    out = loss.detach()
                finally:
                    graph.capture_end()
        except Exception as exc:  # any failure falls back to plain passes
            torch.cuda.current_stream(device).wait_stream(self.stream)
            generator.graphsafe_set_state(before)
            self.stop(f"recording a pass failed ({type(exc).__name__}: {exc})")
            return None
        torch.cuda.current_stream(device).wait_stream(self.stream)
        recorded = self.graphs[key] = _Graph(graph, inputs, scale, out)
        self.recorded += 1
        return recorded

    def stop(self, why: str) -> None:
        """Drop every graph (and their memory) and run plain passes from now on."""
        if self.off is not None:
            return
        self.off = why
        self.graphs.clear()
        self.pool = None
        self.on_event(
            "warning",
            f"CUDA graphs are off for the rest of this run: {why}. Passes run as usual "
            f"(slower for small models; {MODE_ENV}=off skips them).",
            {"cuda_graphs": False},
        )

    def release(self) -> None:
        """Drop every graph and its memory at the run's end."""
        self.off = self.off or "the run ended"
        self.graphs.clear()
        self.pool = None

    def summary(self) -> dict[str, int]:
        return {
            "graphs_recorded": self.recorded,
            "passes_replayed": self.replayed,
            "passes_plain": self.eager,
            "passes_too_large": self.large,
            "passes_widened": self.widened,
        }


def stand_in(
    recorded: Iterable[Key], key: Key, spent: float, slot_cost: float, *, room: bool
) -> tuple[Key, float] | None:
    """Of the ``recorded`` shapes, the one to replay a pass of shape ``key`` in (widened to it,
    ``packing.widen_row``), and the extra work that costs, in tokens (a label slot at
    ``slot_cost``); None to record the pass's own shape instead (or, with no ``room``, to run
    it as usual). The cheapest shape that holds the pass is taken while ``spent`` (the extra
    work the shape's passes have cost so far) plus this pass's stays within ``RECORD_PASSES``
    of its width; with no room for a recording, while this pass's alone does."""
    best: tuple[Key, float] | None = None
    for other in recorded:
        if all(o >= k for o, k in zip(other, key, strict=True)):
            cost = (other[0] - key[0]) + slot_cost * (other[1] - key[1])
            if best is None or cost < best[1]:
                best = (other, cost)
    if best is None:
        return None
    if room and spent + best[1] > RECORD_PASSES * key[0]:
        return None
    if not room and best[1] > key[0]:
        return None
    return best


def slot_cost(model_config: Any) -> float:
    """A label slot's work in the loss head (hidden size x vocabulary) against a token's in
    the decoder layers: the price of a slot when a pass is widened (about 0.4 at Qwen2.5-0.5B,
    0.08 at Llama-3-8B)."""
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    vocab = int(getattr(model_config, "vocab_size", 0) or 0)
    layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    per_token = layers * layer_weights(model_config)
    return hidden * vocab / per_token if per_token and hidden and vocab else 0.5


def _load(target: MicroBatch, batch: MicroBatch) -> None:
    """Copy a host batch into a graph's input tensors (through pinned memory, without
    waiting for the GPU)."""
    pairs = [
        (target.input_ids, batch.input_ids),
        (target.position_ids, batch.position_ids),
        (target.cu_seq_lens, batch.cu_seq_lens),
        (target.label_positions, batch.label_positions),
        (target.label_targets, batch.label_targets),
        (target.label_weights, batch.label_weights),
    ]
    for dst, src in pairs:
        if dst is None or src is None:
            continue
        dst.copy_(src.pin_memory(), non_blocking=True)
