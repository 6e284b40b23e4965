"""Inside one process of a multi-process run (torch.distributed, started by torchrun through
``distributed``): which rank this is, what share of each step it trains, and the few things
every rank must agree on.

Every rank holds every sample and draws the same shuffled batches (``data.make_batches``), so
each knows the whole step: its answer tokens (the loss divisor, identical on every rank),
and its samples, split across the ranks by tokens (``packing.share_tokens``). A rank trains
its share under DDP's ``no_sync`` (gradients accumulate locally, no collective), then one
zero-weighted pass over the step's shortest sample whose backward all-reduces the
accumulated gradients. Local passes thus never wait for another rank, so a rank may halve its
pass size and retry a step on its own (``budget.StepFitter``), and a rank whose share is
empty still joins the all-reduce. DDP averages over ranks; each rank's loss is scaled by the
world size, so the summed gradient is the one-process run's.

What is decided from the clock or the caller (stop, checkpoint now, early stopping) is
decided on rank 0 and broadcast, so every rank takes the same branch; rank 0 alone reports,
writes checkpoints and the artifact.

In a single-process run ``Ranks.current()`` is rank 0 of 1 and every method is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from worker.spec.formatting import Sample
from worker.training.callbacks import StepMetrics, TrainCallbacks
from worker.training.packing import MicroBatch, share_tokens

# Test-only: "RANK:STEP" makes that rank exit with code 3 as that step starts (a crashed rank).
CRASH_ENV = "TUNELAB_TEST_RANK_EXIT"


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @staticmethod
    def current() -> Ranks:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return Ranks(dist.get_rank(), dist.get_world_size())
        return Ranks()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1

    def share(
        self, group: Sequence[Sequence[Sample]], batch_size: int, packed: bool
    ) -> list[list[Sample]]:
        """This rank's batches of one step: its token-balanced share of the step's samples,
        as one list to pack (packed rows) or in batches of ``batch_size`` (padded rows)."""
        if not self.several:
            return [list(b) for b in group]
        mine = share_tokens([s for b in group for s in b], self.world)[self.rank]
        if packed:
            return [mine] if mine else []
        return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        return bool(self._broadcast([float(flag)])[0]) if self.several else flag

    def _broadcast(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.broadcast(tensor, src=0)
        return [float(v) for v in tensor.tolist()]

    def total(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over every rank (in float64), on every rank."""
        if not self.several:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def most(self, value: float) -> float:
        """The largest of every rank's ``value``, on every rank."""
        if not self.several:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's torch RNG states (CPU and its own GPU), on rank 0; None elsewhere and
        in single-process runs. A collective: every rank calls it at the same point."""
        if not self.several:
            return None
        import torch.distributed as dist

        mine = {
            "rank": self.rank,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        }
        gathered: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(mine, gathered, dst=0)
        return gathered

    def exit_if_told(self, step: int) -> None:
        """The test knob of ``CRASH_ENV``: this rank dies abruptly as ``step`` starts."""
        told = os.environ.get(CRASH_ENV, "")
        if told and told == f"{self.rank}:{step}":
            os._exit(3)


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _LossOf(torch.nn.Module):
    """The model as DDP sees it: a forward from a micro-batch to its summed loss (the
    engine's loss head runs outside the model's own forward)."""

    def __init__(self, lm: Any, plan: Any) -> None:
        super().__init__()
        self.lm = lm
        self.plan = plan

    def forward(self, batch: MicroBatch) -> torch.Tensor:
        from worker.training.steps import micro_batch_loss

        return micro_batch_loss(self.lm, batch, self.plan)


class Replicas:
    """The trained model wrapped in DDP, and the optimiser step's forward and backward."""

    # A pass only this rank runs (no collective until the step's last): it may be halved and
    # retried here alone (budget.StepFitter).
    halves_alone = True

    def __init__(self, lm: Any, plan: Any, ranks: Ranks) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.ranks = ranks
        self.loss_of = _LossOf(lm, plan)
        # Only the trained weights are DDP's: the frozen ones (4-bit ones included) and the
        # buffers (rotary tables) were loaded alike on every rank, and broadcasting them would
        # cost a copy of the model per rank at the start and the buffers at every forward.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self.loss_of,
            [n for n, p in self.loss_of.named_parameters() if not p.requires_grad]
            + [n for n, _ in self.loss_of.named_buffers()],
        )
        # Batches are moved to the device by the loop (no device_ids: DDP leaves them be).
        self.ddp = DistributedDataParallel(self.loss_of, device_ids=None)

    def step(
        self,
        micro: list[MicroBatch],
        filler: MicroBatch,
        answer_tokens: int,
        plan: Any,
        device: torch.device,
    ) -> tuple[float, int]:
        """Forward and backward of this rank's passes, then the all-reduce; the step's mean
        loss and tokens over every rank."""
        self.loss_of.plan = plan  # halved budgets come in a new plan
        scale = self.ranks.world / answer_tokens
        loss_sum = torch.zeros((), device=device, dtype=torch.float32)
        with self.ddp.no_sync():
            for batch in [b.to(device) for b in micro]:
                loss = self.ddp(batch)
                (loss * scale).backward()
                loss_sum += loss.detach()
        # The pass whose backward all-reduces the gradients accumulated above; it adds none.
        (self.ddp(filler.to(device)) * 0.0).backward()
        loss_total, tokens = self.ranks.total([float(loss_sum), sum(b.tokens for b in micro)])
        return loss_total / answer_tokens, int(tokens)

    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Nothing to gather: every rank holds the whole weights and optimiser state."""
        return None


class Sharded:
    """Full fine-tuning over several processes: the model's weights, gradients and optimiser
    state sharded across them with FSDP2 (``fully_shard`` on each decoder layer and on the
    whole), and the optimiser step's forward and backward.

    Every forward pass gathers the weights from every rank, so the ranks run as many passes
    as each other: a rank with fewer real passes than the others runs zero-weighted ones
    over the step's shortest sample. Each backward reduce-scatters its gradients (averaged;
    the loss is scaled by the world size as under DDP). A pass that runs out of GPU memory
    cannot be halved on one rank alone (the others would wait in its collectives): it ends
    the processes, and the parent restarts them all at half the budget from the newest
    checkpoint (``budget.ShardedPassTooLarge``, ``distributed``).
    """

    halves_alone = False

    def __init__(self, lm: Any, plan: Any, ranks: Ranks) -> None:
        from torch.distributed.fsdp import fully_shard

        self.ranks = ranks
        self.loss_of = _LossOf(lm, plan)
        shard_layers(lm, plan.autocast)  # a no-op where ``bring_to_device`` did it already
        fully_shard(self.loss_of, mp_policy=precision(plan.autocast))

    def step(
        self,
        micro: list[MicroBatch],
        filler: MicroBatch,
        answer_tokens: int,
        plan: Any,
        device: torch.device,
    ) -> tuple[float, int]:
        self.loss_of.plan = plan
        scale = self.ranks.world / answer_tokens
        passes = int(self.ranks.most(len(micro)))
        loss_sum = torch.zeros((), device=device, dtype=torch.float32)
        for i in range(passes):
            real = i < len(micro)
            loss = self.loss_of((micro[i] if real else filler).to(device))
            (loss * (scale if real else 0.0)).backward()
            if real:
                loss_sum += loss.detach()
        loss_total, tokens = self.ranks.total([float(loss_sum), sum(b.tokens for b in micro)])
        return loss_total / answer_tokens, int(tokens)

    def validation_sums(
        self,
        mine: Sequence[Sample],
        every: Sequence[Sample],
        plan: Any,
        pad_id: int,
        batch_size: int,
        device: torch.device,
    ) -> tuple[float, int]:
        """``steps.validation_sums`` of this rank's share ``mine`` of the validation samples
        ``every``, through the sharded model, in as many passes as every other rank."""
        from worker.training.steps import micro_batches

        micro = [
            batch
            for start in range(0, len(mine), batch_size)
            for batch in micro_batches([list(mine[start : start + batch_size])], plan, pad_id)
        ]
        shortest = min(every, key=lambda s: len(s.input_ids))
        filler = micro_batches([[shortest]], plan, pad_id)[0]
        loss_sum, answer_tokens = 0.0, 0
        with torch.no_grad():
            for i in range(int(self.ranks.most(len(micro)))):
                real = i < len(micro)
                batch = (micro[i] if real else filler).to(device)
                loss = self.loss_of(batch)
                if real:
                    loss_sum += float(loss)
                    answer_tokens += int(batch.label_targets.numel())
        return loss_sum, answer_tokens

    def full_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The trained weights by name and the optimiser's state, whole (as a one-process
        run has them), on every rank. A collective: every rank calls it at the same point."""
        weights = {
            name: whole(param.detach())
            for name, param in model.named_parameters()
            if param.requires_grad
        }
        state = optimizer.state_dict()
        state["state"] = {
            index: {key: whole(value) for key, value in values.items()}
            for index, values in state["state"].items()
        }
        return weights, state


def whole(value: Any) -> Any:
    """A sharded tensor gathered whole (a collective), anything else as it is."""
    full = getattr(value, "full_tensor", None)
    return full() if callable(full) else value


def precision(compute: torch.dtype | None) -> Any:
    """FSDP2's mixed-precision policy for float32 master weights computing in ``compute``:
    each layer's weights are gathered in ``compute`` (half the bytes over the wire) and freed
    again after the layer ran, gradients reduced in float32. Without it, autocast would cast
    every gathered float32 weight to ``compute`` and keep the copy for backward: 2 bytes a
    parameter of the whole model on every GPU, however many share the model."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute is None or compute == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)


def shard_layers(lm: Any, compute: torch.dtype | None = None) -> None:
    """Shard each decoder layer not sharded yet (FSDP2): this rank keeps its share of the
    layer's weights, on its own device (``fully_shard`` moves weights that are elsewhere),
    gathered to compute in ``compute`` (see ``precision``)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for layer in decoder_layers(lm):
        if not isinstance(layer, FSDPModule):
            fully_shard(layer, mp_policy=precision(compute))


def bring_to_device(lm: Any, device: torch.device, compute: torch.dtype | None = None) -> None:
    """Full fine-tuning's weights, loaded into host memory, brought onto ``device`` so that no
    GPU ever holds the whole model: each decoder layer in turn is sharded (FSDP2 copies that
    one layer over and keeps this rank's share of it), then what is left (embeddings, final
    norm, head, buffers; tied weights stay one tensor) is moved whole, for ``Sharded`` to shard
    in turn. On a CPU run nothing moves and the layers are sharded as ``Sharded`` would."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    shard_layers(lm, compute)
    moved: dict[int, torch.nn.Parameter] = {}
    for module in lm.modules():
        for name, param in list(module._parameters.items()):
            if param is None or hasattr(param, "device_mesh") or param.device == device:
                continue
            if id(param) not in moved:
                moved[id(param)] = torch.nn.Parameter(
                    param.data.to(device), requires_grad=param.requires_grad
                )
            module._parameters[name] = moved[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def decoder_layers(lm: Any) -> list[torch.nn.Module]:
    decoder = lm.get_decoder()
    layers = getattr(decoder, "layers", None)
    return list(layers) if layers is not None else []


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The model's state dict with sharded tensors gathered whole (a collective), to save
    the artifact; None when nothing is sharded (save it as it is)."""
    state = model.state_dict(keep_vars=True)  # tied weights: one object under both names
    if not any(callable(getattr(v, "full_tensor", None)) for v in state.values()):
        return None
    # A tensor under two names (tied embeddings) gathered once, so that it stays one tensor
    # and save_pretrained keeps it once, as it does unsharded.
    gathered: dict[int, Any] = {}
    for value in state.values():
        if id(value) not in gathered:
            gathered[id(value)] = whole(value.detach())
    return {name: gathered[id(value)] for name, value in state.items()}


def shard_like(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``whole`` cut as ``param`` is sharded (from the copy each rank holds: no collective);
    ``whole`` itself when ``param`` is not sharded."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None:
        return whole
    from torch.distributed.tensor import distribute_tensor

    placements = param.placements  # type: ignore[attr-defined]
    return distribute_tensor(whole.to(param.device), mesh, placements, src_data_rank=None)


class RankCallbacks:
    """The callbacks every rank of a multi-process run is given: rank 0 reports through
    ``inner`` and decides when to stop; the other ranks report nothing and learn rank 0's
    decision (``should_stop`` is a broadcast: every rank asks at the same points)."""

    def __init__(self, inner: TrainCallbacks, ranks: Ranks) -> None:
        self.inner, self.ranks = inner, ranks
        self._checkpoint = False

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        if self.ranks.main:
            self.inner.on_event(level, message, data)

    def on_step(self, metrics: StepMetrics) -> None:
        if self.ranks.main:
            self.inner.on_step(metrics)

    def should_stop(self) -> bool:
        stop, checkpoint = False, False
        if self.ranks.main:
            from worker.training.callbacks import checkpoint_on_stop

            stop = self.inner.should_stop()
            checkpoint = stop and checkpoint_on_stop(self.inner)
        if self.ranks.several:
            stop, checkpoint = (bool(v) for v in self.ranks._broadcast([stop, checkpoint]))
        self._checkpoint = checkpoint
        return stop

    def checkpoint_on_stop(self) -> bool:
        return self._checkpoint
