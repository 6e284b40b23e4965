"""The built-in model server's engine: one base model, its adapters, and a batching scheduler.

One background thread owns the model. Requests wait in a queue; each round takes the model
name of the oldest waiting request, gathers up to ``max_batch_size`` waiting requests for that
same model (waiting at most ``max_wait_ms`` for more) and decodes them together: a left-padded
prefill, then one token per step for every row from the KV cache. Requests that arrive while a
batch runs wait for the next round. Text reaches each caller's asyncio queue as it is decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

from worker.evaluation.generation import eos_token_ids, left_padded
from worker.spec.formatting import ensure_chat_template, ensure_pad_token, render
from worker.training.models import (
    load_model,
    load_tokenizer,
    pick_device_and_dtype,
    resolve_model,
)

FinishReason = Literal["stop", "length"]
Message = Mapping[str, str]


class SamplingParams(BaseModel):
    """How to decode one request; temperature 0 is greedy."""

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """New text of one request; the last one carries its finish reason."""

    text: str
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    """A whole answer, as ``complete`` collects it from the deltas."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class UnknownModel(KeyError):
    """A request named a model (base or adapter) this server does not serve."""

    def __init__(self, name: str, served: Sequence[str]) -> None:
        super().__init__(name)
        self.message = f"The model '{name}' is not served here; choose one of: {', '.join(served)}."

    def __str__(self) -> str:
        return self.message


class InvalidRequest(ValueError):
    """A request the engine cannot run as given (empty or too long prompt, bad messages)."""


class EngineClosed(RuntimeError):
    """The engine was closed before the request ran."""


@dataclass(eq=False)
class _Request:
    model: str
    ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Delta | BaseException]
    cancelled: bool = False

    def push(self, item: Delta | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's event loop is gone: nobody is listening
            self.cancelled = True


class ServingEngine:
    """A base model and its adapters behind one batching scheduler thread."""

    def __init__(
        self,
        base_model: str,
        adapters: Mapping[str, Path],
        *,
        model_cache_dir: Path,
        served_name: str = "base",
        allow_downloads: bool = False,
        trust_remote_code: bool = False,
        max_batch_size: int = 16,
        max_wait_ms: float = 20.0,
        dtype: str = "auto",
    ) -> None:
        folders = {name: Path(folder) for name, folder in adapters.items()}
        # Adapter folders are checked before the (slow) base model load.
        check_adapters(folders, served_name)
        resolved = resolve_model(
            base_model, model_cache_dir, allow_downloads, trust_remote_code=trust_remote_code
        )
        device, torch_dtype = pick_device_and_dtype(dtype)
        model = load_model(
            resolved, dtype=torch_dtype, device=device, trust_remote_code=trust_remote_code
        )
        tokenizer = load_tokenizer(resolved, trust_remote_code=trust_remote_code)
        self._start(
            _attach_adapters(model, folders), tokenizer, served_name, max_batch_size, max_wait_ms
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        served_name: str = "base",
        max_batch_size: int = 16,
        max_wait_ms: float = 20.0,
    ) -> ServingEngine:
        """Serve a model already loaded (a PeftModel serves its adapters too)."""
        engine = cls.__new__(cls)
        engine._start(model, tokenizer, served_name, max_batch_size, max_wait_ms)
        return engine

    def _start(
        self,
        model: Any,
        tokenizer: Any,
        served_name: str,
        max_batch_size: int,
        max_wait_ms: float,
    ) -> None:
        ensure_chat_template(tokenizer)
        # The decode loop and the HTTP event loop are two threads sharing the GIL; with the
        # default 5 ms switch interval each decode step can wait that long for it several
        # times over, which dominates a small model's step on a GPU.
        if sys.getswitchinterval() > 0.0005:
            sys.setswitchinterval(0.0005)
        self._pad_id = ensure_pad_token(tokenizer)
        self._model = model.eval()
        self._tokenizer = tokenizer
        self._served_name = served_name
        self._adapters: list[str] = list(getattr(model, "peft_config", {}) or {})
        if served_name in self._adapters:
            raise ValueError(f"The base model's name '{served_name}' is also an adapter's name.")
        self._eos_ids = eos_token_ids(model, tokenizer)
        self._device = next(model.parameters()).device
        self._context = _context_length(model, tokenizer)
        self._keeps_last_logits = _accepts(model, "logits_to_keep")
        # transformers 5.24 renamed the KV-cache argument (and output) to ``cache``.
        self._cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"
        self._max_batch = max(1, max_batch_size)
        self._max_wait = max(0.0, max_wait_ms) / 1000
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closing = False
        self._stats = {"batches": 0, "requests": 0, "max_batch_rows": 0, "tokens": 0}
        self._thread = threading.Thread(target=self._serve, name="serving-engine", daemon=True)
        self._thread.start()

    # --- Public API ---------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """The base model's served name, then every adapter's name."""
        return [self._served_name, *self._adapters]

    def stats(self) -> dict[str, int]:
        """Batches run, requests answered, the widest batch, and tokens generated so far."""
        with self._cond:
            return dict(self._stats)

    @property
    def context_length(self) -> int:
        """Prompt plus answer tokens the model can attend to."""
        return self._context

    def close(self) -> None:
        """Stop the scheduler thread; requests still waiting fail with EngineClosed."""
        with self._cond:
            self._closing = True
            waiting, self._pending = self._pending, []
            self._cond.notify_all()
        for request in waiting:
            request.push(EngineClosed("The model server is shutting down."))
        self._thread.join()

    async def stream(
        self,
        model: str,
        messages: Sequence[Message] | None,
        prompt: str | None,
        params: SamplingParams,
    ) -> AsyncIterator[Delta]:
        """Answer a conversation (chat template) or a raw prompt, yielding text as it comes."""
        request = self._submit(model, messages, prompt, params)
        finished = False
        try:
            while True:
                item = await request.out.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
                if item.finish_reason is not None:
                    finished = True
                    return
        finally:
            # A caller that stopped listening (client gone) frees its row in the batch.
            request.cancelled = not finished

    async def complete(
        self,
        model: str,
        messages: Sequence[Message] | None,
        prompt: str | None,
        params: SamplingParams,
    ) -> Completion:
        """The whole answer at once."""
        parts: list[str] = []
        async for delta in self.stream(model, messages, prompt, params):
            parts.append(delta.text)
            if delta.finish_reason is not None:
                return Completion(
                    "".join(parts),
                    delta.finish_reason,
                    delta.prompt_tokens,
                    delta.completion_tokens,
                )
        raise RuntimeError("The answer ended without a finish reason.")

    # --- Requests -----------------------------------------------------------------------

    def _submit(
        self,
        model: str,
        messages: Sequence[Message] | None,
        prompt: str | None,
        params: SamplingParams,
    ) -> _Request:
        if model not in self.model_names():
            raise UnknownModel(model, self.model_names())
        ids = self._encode(messages, prompt)
        if not ids:
            raise InvalidRequest("The prompt is empty; send some text to answer.")
        if len(ids) >= self._context:
            raise InvalidRequest(
                f"The prompt is {len(ids)} tokens but the model reads at most {self._context} "
                "tokens (prompt and answer together); shorten the prompt or the conversation."
            )
        # An answer may use what the context has left; asking for more ends with "length".
        room = self._context - len(ids)
        params = params.model_copy(update={"max_tokens": min(params.max_tokens, room)})
        request = _Request(model, ids, params, asyncio.get_running_loop(), asyncio.Queue())
        with self._cond:
            if self._closing:
                raise EngineClosed("The model server is shutting down.")
            self._pending.append(request)
            self._cond.notify_all()
        return request

    def _encode(self, messages: Sequence[Message] | None, prompt: str | None) -> list[int]:
        if (messages is None) == (prompt is None):
            raise InvalidRequest("Send either chat messages or a prompt, not both or neither.")
        if messages is None:
            # A raw prompt gets the tokenizer's own special tokens (a BOS for Llama-style models).
            return list(self._tokenizer(prompt)["input_ids"])
        try:
            conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
            text = render(self._tokenizer, conversation, generation_prompt=True)
        except Exception as exc:  # template errors name the problem (roles, order)
            raise InvalidRequest(f"The chat template refused these messages: {exc}") from exc
        # The template writes the special tokens itself; a second BOS would confuse the model.
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- Scheduler thread ---------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except Exception as exc:  # one failed batch must not stop the server
                for request in batch:
                    request.push(RuntimeError(f"Generation failed: {exc}"))

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while True:
                self._pending = [r for r in self._pending if not r.cancelled]
                if self._closing:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                model = self._pending[0].model
                deadline = time.monotonic() + self._max_wait
                chosen = self._gather(model, deadline)
                if chosen:
                    self._pending = [r for r in self._pending if r not in chosen]
                    return chosen

    def _gather(self, model: str, deadline: float) -> list[_Request]:
        # Called with the condition held; waiting releases it so requests can arrive.
        while True:
            same = [r for r in self._pending if r.model == model and not r.cancelled]
            left = deadline - time.monotonic()
            if len(same) >= self._max_batch or left <= 0 or self._closing:
                return same[: self._max_batch]
            self._cond.wait(left)

    def _run_batch(self, requests: list[_Request]) -> None:
        rows = [_Row(r, self._tokenizer, self._eos_ids, self._device) for r in requests]
        ids, mask = left_padded([r.ids for r in requests], self._pad_id, self._device)
        # Positions count real tokens only, so a left-padded row starts at 0 like an unpadded one.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._keeps_last_logits else {}
        generated = 0
        with self._selected(requests[0].model), torch.inference_mode():
            out = self._model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
            )
            while True:
                tokens = _pick(out.logits[:, -1, :], rows)
                for row, token in zip(rows, tokens, strict=True):
                    if not row.done:
                        row.advance(token)
                        generated += 1
                if all(row.done for row in rows):
                    break
                # Finished rows keep feeding padding; their results are no longer read.
                step = [
                    self._pad_id if row.done else t for row, t in zip(rows, tokens, strict=True)
                ]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                out = self._model(
                    input_ids=torch.tensor(step, device=self._device).unsqueeze(1),
                    attention_mask=mask,
                    position_ids=mask.sum(dim=1, keepdim=True) - 1,
                    use_cache=True,
                    **{self._cache_arg: getattr(out, self._cache_arg)},
                )
        with self._cond:
            self._stats["batches"] += 1
            self._stats["requests"] += len(rows)
            self._stats["max_batch_rows"] = max(self._stats["max_batch_rows"], len(rows))
            self._stats["tokens"] += generated

    @contextlib.contextmanager
    def _selected(self, name: str) -> Iterator[None]:
        if not self._adapters:
            yield
        elif name == self._served_name:
            with self._model.disable_adapter():
                yield
        else:
            self._model.set_adapter(name)
            yield


@dataclass(eq=False)
class _Row:
    """One request's decoding state: its tokens, the text already sent, and its sampler."""

    request: _Request
    tokenizer: Any
    eos_ids: list[int]
    device: torch.device
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded answer already pushed
    finished: bool = False
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device=self.device)
        seed = self.request.params.seed
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @property
    def done(self) -> bool:
        return self.finished or self.request.cancelled

    def advance(self, token: int) -> None:
        """Take the next token; push whatever text is now certain, and the end if it ended."""
        self.tokens.append(token)
        params = self.request.params
        # The whole answer is decoded again each step: a character split over several
        # byte-level tokens only appears once all of them are there.
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = _first_stop(text, params.stop, self.sent)
        if cut is not None:
            self._finish(text[:cut], "stop")
        elif token in self.eos_ids:
            self._finish(text, "stop")
        elif len(self.tokens) >= params.max_tokens:
            # Cut off mid-character: the rest of its bytes will never come, so the partial
            # character (shown as a replacement character) is dropped rather than sent.
            self._finish(text.rstrip("\ufffd"), "length")
        else:
            # A trailing replacement character is a character whose bytes are still coming.
            certain = text.rstrip("\ufffd")
            safe = len(certain) - _stop_prefix(certain, params.stop)
            if safe > self.sent:
                self._push(text[self.sent : safe], None)
                self.sent = safe

    def _finish(self, text: str, reason: FinishReason) -> None:
        self.finished = True
        self._push(text[self.sent :], reason)

    def _push(self, text: str, reason: FinishReason | None) -> None:
        prompt = len(self.request.ids)
        self.request.push(Delta(text, reason, prompt, len(self.tokens)))


def _first_stop(text: str, stops: Sequence[str], sent: int) -> int | None:
    """Where the earliest stop string starts; text already sent never holds a whole one."""
    found = [i for s in stops if s and (i := text.find(s, max(0, sent - len(s)))) >= 0]
    return min(found) if found else None


def _stop_prefix(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that could be the start of a stop string (held back)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def _pick(logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
    """The next token of every row: argmax for greedy rows, a sample for the others."""
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    for index, row in enumerate(rows):
        params = row.request.params
        if not row.done and params.temperature > 0:
            tokens[index] = _sample(logits[index], params, row.generator)
    return tokens


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator).item())
    ordered, order = probs.sort(descending=True)
    # Keep the most likely tokens until their mass reaches top_p; the first is always kept.
    keep = (ordered.cumsum(dim=-1) - ordered) < params.top_p
    choice = torch.multinomial(ordered * keep, 1, generator=generator)
    return int(order[choice].item())


def _context_length(model: Any, tokenizer: Any) -> int:
    configured = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    # Tokenizers without a known limit report a huge sentinel (1e30).
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1 << 24 else 2048


def _accepts(model: Any, argument: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


# --- Adapters ------------------------------------------------------------------------------


def check_adapters(folders: Mapping[str, Path], served_name: str) -> None:
    """Refuse adapters that cannot share one base model in this server, before loading any."""
    from peft import PeftConfig

    types: dict[str, str] = {}
    for name, folder in folders.items():
        if not name or name == served_name or "." in name:
            # PEFT keeps adapters in torch module dicts, whose keys cannot hold a dot.
            raise ValueError(
                f"Adapter name '{name}' is empty, contains a dot, or is the base model's served "
                "name; rename it."
            )
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(
                f"Adapter '{name}': {folder} has no adapter_config.json; point at the folder "
                "a training run saved its adapter to."
            )
        config = PeftConfig.from_pretrained(str(folder))
        if config.is_prompt_learning:
            raise ValueError(
                f"Adapter '{name}' is a {config.peft_type.value} adapter: prefix-tuning/P-tuning "
                "adapters cannot share a base model in the server; serve them alone."
            )
        types[name] = str(config.peft_type.value)
    if len(set(types.values())) > 1:
        listed = ", ".join(f"{n} ({t})" for n, t in types.items())
        raise ValueError(
            f"These adapters are of different kinds: {listed}. PEFT shares a base model only "
            "among adapters of one kind; run one server per kind."
        )


def _attach_adapters(model: Any, folders: Mapping[str, Path]) -> Any:
    if not folders:
        return model
    from peft import PeftModel

    names = list(folders)
    wrapped = PeftModel.from_pretrained(model, str(folders[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        wrapped.load_adapter(str(folders[name]), adapter_name=name)
    return wrapped
