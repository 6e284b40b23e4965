"""Batched generation and reference likelihoods for evaluation.

Prompts are rendered with the same chat template and system prompt as training
(``worker.spec.formatting``), sorted by length so each batch carries little padding,
batched by a token budget, left-padded, and returned in the caller's order. The vLLM path is
used when vLLM is installed and it is given a model folder; it is deliberately small and is
not exercised by the tests (vLLM is not installed where they run).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from worker.spec.decoding import DecodingSettings
from worker.spec.formatting import (
    IGNORE_INDEX,
    Message,
    encode,
    ensure_chat_template,
    ensure_pad_token,
    render,
    with_system_prompt,
)

Prompt = Sequence[Message] | str
Progress = Callable[[int, int], None]
Backend = Literal["auto", "transformers", "vllm"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Generation:
    """One answer: its text (stop string and end-of-sequence removed) and token counts."""

    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class ReferenceNLL:
    """Summed negative log-likelihood (nats) of a reference answer and its token count."""

    nll: float
    tokens: int


def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    settings: DecodingSettings,
    *,
    system_prompt: str | None = None,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    backend: Backend = "auto",
) -> list[Generation]:
    """Answer every prompt (a conversation, or a string as one user turn), in input order.

    ``model`` is a loaded transformers model, or a model folder / ``vllm.LLM`` for vLLM.
    ``batch_tokens`` bounds rows x (longest prompt + max_new_tokens) per batch, which is what
    the KV cache holds; ``batch_size`` bounds the rows.
    """
    texts = [_render_prompt(tokenizer, p, system_prompt) for p in prompts]
    if _use_vllm(model, backend):
        return _generate_vllm(model, tokenizer, texts, settings, progress)
    if isinstance(model, str | Path):
        raise ValueError(
            "generate_batched got a model folder but vLLM is not installed (or not chosen); "
            "load the model with worker.training.models.load_model and pass it instead."
        )
    encoded = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return _generate_transformers(
        model, tokenizer, encoded, settings, batch_tokens, batch_size, progress
    )


def _render_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None) -> str:
    ensure_chat_template(tokenizer)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return render(tokenizer, with_system_prompt(messages, system_prompt), generation_prompt=True)


# --- transformers --------------------------------------------------------------------------


def _generate_transformers(
    model: Any,
    tokenizer: Any,
    encoded: list[list[int]],
    settings: DecodingSettings,
    batch_tokens: int | None,
    batch_size: int | None,
    progress: Progress | None,
) -> list[Generation]:
    from transformers import GenerationConfig, StoppingCriteriaList

    device = next(model.parameters()).device
    pad_id = ensure_pad_token(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    # Every sampling knob is set explicitly: unset ones would be filled from the model's own
    # generation_config (top_k=50, a temperature...), so two models would decode differently.
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=not settings.greedy,
        temperature=settings.temperature if not settings.greedy else 1.0,
        top_p=settings.top_p if not settings.greedy else 1.0,
        # 0 switches top-k off when sampling; greedy decoding refuses the flag (with a warning).
        top_k=None if settings.greedy else 0,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )
    budget, rows_cap = _batch_limits(device, batch_tokens, batch_size)
    results: list[Generation | None] = [None] * len(encoded)
    done = 0
    was_training = model.training
    model.eval()
    # A forked RNG seeds sampling without disturbing the caller's random state.
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(settings.seed)
            for batch in _batches(encoded, settings.max_new_tokens, budget, rows_cap):
                prompts = [encoded[i] for i in batch]
                ids, mask = left_padded(prompts, pad_id, device)
                stopper = _StopStrings(tokenizer, settings.stop, ids.shape[1], len(batch))
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([stopper]) if settings.stop else None,
                )
                new = out[:, ids.shape[1] :].tolist()
                for row, index in enumerate(batch):
                    results[index] = _finish(
                        tokenizer, new[row], len(prompts[row]), eos_ids, settings, stopper, row
                    )
                done += len(batch)
                if progress is not None:
                    progress(done, len(encoded))
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The token ids that end an answer: the model's generation config's and the tokenizer's."""
    # The model's generation config may list several end tokens (Qwen: <|im_end|> and
    # <|endoftext|>); the tokenizer's eos is the one training taught with the fallback template.
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for candidate in [configured, tokenizer.eos_token_id]:
        for token in candidate if isinstance(candidate, list) else [candidate]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def _batch_limits(
    device: torch.device, batch_tokens: int | None, batch_size: int | None
) -> tuple[int, int]:
    # A GPU gains from wide batches until memory runs out; a CPU's cores are saturated by a
    # few rows, and padding there costs real time.
    on_gpu = device.type == "cuda"
    budget = batch_tokens if batch_tokens is not None else (65536 if on_gpu else 8192)
    rows = batch_size if batch_size is not None else (256 if on_gpu else 16)
    return max(1, budget), max(1, rows)


def _batches(
    encoded: list[list[int]], extra_tokens: int, budget: int, rows_cap: int
) -> list[list[int]]:
    """Indices grouped longest first, each group within ``budget`` padded tokens."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # The first (longest) row of a batch sets its padded width.
        width = len(encoded[current[0]] if current else encoded[index]) + extra_tokens
        if current and ((len(current) + 1) * width > budget or len(current) >= rows_cap):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def left_padded(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Left padding puts every prompt's last token in the last column, where generation
    # continues; the mask gives each row positions that start at 0 on its first real token.
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


class _StopStrings:
    """Stops each row once its answer contains a stop string; records the length it had."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int, rows: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_width = prompt_width
        # A stop string of n characters spans at most 4n byte-level tokens (UTF-8), so a
        # window of that many recent tokens always holds a stop string that just completed.
        self.window = 4 * max((len(s) for s in self.stop), default=0) + 2
        self.stopped_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids.shape[1] - self.prompt_width
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.window) :].tolist()
        for row, tail in enumerate(tails):
            if self.stopped_at[row] is not None:
                finished[row] = True
                continue
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            if any(s in text for s in self.stop):
                self.stopped_at[row] = generated
                finished[row] = True
        return finished


def _finish(
    tokenizer: Any,
    new: list[int],
    prompt_tokens: int,
    eos_ids: list[int],
    settings: DecodingSettings,
    stopper: _StopStrings,
    row: int,
) -> Generation:
    # Rows that finished early are filled with padding up to the batch's longest answer; the
    # first end token or the recorded stop length says where this row really ended.
    end = len(new)
    reason: FinishReason = "length"
    eos_at = next((i for i, t in enumerate(new) if t in eos_ids), None)
    if eos_at is not None:
        end, reason = eos_at + 1, "stop"
    stopped = stopper.stopped_at[row]
    if stopped is not None and stopped < end:
        end, reason = stopped, "stop"
    text = tokenizer.decode(new[:end], skip_special_tokens=True)
    cut = min((text.find(s) for s in settings.stop if s and s in text), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop"
    return Generation(text=text, prompt_tokens=prompt_tokens, new_tokens=end, finish_reason=reason)


# --- vLLM (optional, untested here) --------------------------------------------------------


def _use_vllm(model: Any, backend: Backend) -> bool:
    if backend == "transformers":
        return False
    installed = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not installed:
        raise ValueError("backend='vllm' was asked for but vLLM is not installed on this worker.")
    # vLLM loads weights itself: it can serve a model folder or its own LLM object, never a
    # torch module that is already loaded (with an adapter attached, say).
    loaded_torch_module = isinstance(model, torch.nn.Module)
    if backend == "vllm" and loaded_torch_module:
        raise ValueError("backend='vllm' needs a model folder or a vllm.LLM, not a loaded model.")
    return installed and not loaded_torch_module


def _generate_vllm(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    settings: DecodingSettings,
    progress: Progress | None,
) -> list[Generation]:
    import vllm

    llm = vllm.LLM(model=str(model), seed=settings.seed) if isinstance(model, str | Path) else model
    params = vllm.SamplingParams(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=-1,
        repetition_penalty=settings.repetition_penalty,
        seed=settings.seed,
        stop=list(settings.stop) or None,
    )
    prompts = [
        {"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts
    ]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    if progress is not None:
        progress(len(texts), len(texts))
    results = []
    for output in outputs:  # vLLM returns outputs in the order of the prompts
        best = output.outputs[0]
        reason: FinishReason = "length" if best.finish_reason == "length" else "stop"
        results.append(
            Generation(
                text=best.text,
                prompt_tokens=len(output.prompt_token_ids),
                new_tokens=len(best.token_ids),
                finish_reason=reason,
            )
        )
    return results


# --- Reference likelihoods -----------------------------------------------------------------


def reference_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    references: Sequence[str],
    settings: DecodingSettings | None = None,
    *,
    system_prompt: str | None = None,
    batch_tokens: int | None = None,
) -> list[ReferenceNLL]:
    """Per example, the summed NLL of the reference answer given the prompt, and its tokens.

    The reference is labelled exactly as training labels an answer (its text and the
    template's end-of-turn marker), so exp(sum of nll / sum of tokens) is the perplexity that
    matches the training loss. ``settings`` does not change likelihoods; it is accepted so
    callers hand every evaluation step the same object.
    """
    del settings
    if len(prompts) != len(references):
        raise ValueError(
            f"reference_nll got {len(prompts)} prompts but {len(references)} references."
        )
    ensure_chat_template(tokenizer)
    pad_id = ensure_pad_token(tokenizer)
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
    samples = []
    for prompt, reference in zip(prompts, references, strict=True):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        conversation = with_system_prompt(messages, system_prompt)
        conversation.append({"role": "assistant", "content": reference})
        samples.append(encode(tokenizer, conversation, limit))

    device = next(model.parameters()).device
    # Logits of the whole batch are materialised (rows x width x vocabulary), so the default
    # budget is smaller than generation's.
    budget = (
        batch_tokens if batch_tokens is not None else (16384 if device.type == "cuda" else 4096)
    )
    results: list[ReferenceNLL | None] = [None] * len(samples)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ids_only = [s.input_ids for s in samples]
            for batch in _batches(ids_only, 0, budget, rows_cap=1 << 30):
                width = max(len(samples[i].input_ids) for i in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    sample = samples[index]
                    n = len(sample.input_ids)
                    ids[row, :n] = torch.tensor(sample.input_ids)
                    labels[row, :n] = torch.tensor(sample.labels)
                    mask[row, :n] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                # Token t is predicted by the logits at t-1.
                targets = labels[:, 1:].to(device)
                losses = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2),
                    targets,
                    ignore_index=IGNORE_INDEX,
                    reduction="none",
                )
                sums = losses.sum(dim=1).tolist()
                counts = (targets != IGNORE_INDEX).sum(dim=1).tolist()
                for row, index in enumerate(batch):
                    results[index] = ReferenceNLL(nll=float(sums[row]), tokens=int(counts[row]))
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
