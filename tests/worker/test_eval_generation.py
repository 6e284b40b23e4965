"""Batched generation for evaluation: same answers as one at a time, in order, stopped right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.evaluation.generation import (
    DecodingSettings,
    Generation,
    generate_batched,
    reference_nll,
)
from worker.spec.formatting import encode, ensure_chat_template, render

REPO = Path(__file__).resolve().parents[2]

PROMPTS: list[Any] = [
    "Hi",
    "请用三句话介绍一下长城的历史，以及它为什么重要。",
    [{"role": "user", "content": "Summarise: " + "the cat sat on the mat. " * 12}],
    [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is 2 + 2?"},
    ],
    "Write a haiku about autumn leaves falling in a quiet garden.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return model, tokenizer


def one_at_a_time(model: Any, tokenizer: Any, prompt: Any, settings: DecodingSettings) -> list[int]:
    """The reference: model.generate on a single unpadded prompt."""
    ensure_chat_template(tokenizer)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = render(tokenizer, messages, generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,
        top_p=1.0,
        temperature=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    new: list[int] = out[0, ids.shape[1] :].tolist()
    return new


def test_batched_greedy_matches_one_at_a_time_token_for_token(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    settings = DecodingSettings(max_new_tokens=12)
    # Two rows per batch forces prompts of different lengths to share a left-padded batch.
    batched = generate_batched(model, tokenizer, PROMPTS, settings, batch_size=2)
    for prompt, generation in zip(PROMPTS, batched, strict=True):
        expected = one_at_a_time(model, tokenizer, prompt, settings)
        assert generation.new_tokens == len(expected)
        assert generation.text == tokenizer.decode(expected, skip_special_tokens=True)


def test_results_come_back_in_input_order_whatever_the_batching(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    settings = DecodingSettings(max_new_tokens=6)
    singly = [generate_batched(model, tokenizer, [p], settings)[0] for p in PROMPTS]
    for size in (1, 3, 16):
        assert generate_batched(model, tokenizer, PROMPTS, settings, batch_size=size) == singly
    # A token budget too small for two rows still answers everything, one row per batch.
    assert generate_batched(model, tokenizer, PROMPTS, settings, batch_tokens=1) == singly


def test_prompt_tokens_count_the_rendered_prompt_with_its_system_turn(
    tiny: tuple[Any, Any],
) -> None:
    model, tokenizer = tiny
    settings = DecodingSettings(max_new_tokens=2)
    plain = generate_batched(model, tokenizer, ["Hi"], settings)[0]
    with_system = generate_batched(
        model, tokenizer, ["Hi"], settings, system_prompt="Be kind and brief."
    )[0]
    text = render(
        tokenizer,
        [{"role": "system", "content": "Be kind and brief."}, {"role": "user", "content": "Hi"}],
        generation_prompt=True,
    )
    assert with_system.prompt_tokens == len(tokenizer(text, add_special_tokens=False).input_ids)
    assert with_system.prompt_tokens > plain.prompt_tokens


def test_generation_stops_at_max_new_tokens_with_reason_length(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    results = generate_batched(model, tokenizer, PROMPTS, DecodingSettings(max_new_tokens=5))
    assert all(r.new_tokens <= 5 for r in results)
    assert all(r.finish_reason == "length" for r in results if r.new_tokens == 5)


def test_a_stop_string_ends_that_answer_only_and_is_not_kept(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    free = generate_batched(model, tokenizer, PROMPTS, DecodingSettings(max_new_tokens=16))
    # A stop string taken from the middle of one answer: that answer ends there, the others
    # (which do not contain it) are unchanged.
    target = max(range(len(free)), key=lambda i: len(free[i].text))
    text = free[target].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), "the random model's answer is too short to cut"
    settings = DecodingSettings(max_new_tokens=16, stop=(stop,))
    stopped = generate_batched(model, tokenizer, PROMPTS, settings, batch_size=16)
    cut = stopped[target]
    assert cut.finish_reason == "stop"
    assert cut.text == text[: text.find(stop)]
    assert cut.new_tokens < free[target].new_tokens
    for before, after in zip(free, stopped, strict=True):
        if stop not in before.text:
            assert after == before


def test_sampling_is_reproducible_with_the_same_seed(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    settings = DecodingSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    first = generate_batched(model, tokenizer, PROMPTS, settings)
    again = generate_batched(model, tokenizer, PROMPTS, settings)
    assert first == again
    assert all(isinstance(r, Generation) for r in first)


def test_decoding_settings_serialise_for_recording_with_results() -> None:
    settings = DecodingSettings(max_new_tokens=64, stop=("\n\n", "。"))
    recorded = json.loads(settings.model_dump_json())
    assert recorded["stop"] == ["\n\n", "。"]
    assert DecodingSettings.model_validate(recorded) == settings
    assert settings.greedy


def test_decoding_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        DecodingSettings(max_new_tokens=0)
    with pytest.raises(ValueError):
        DecodingSettings(top_p=0.0)
    with pytest.raises(ValueError):
        DecodingSettings(temperature=-1.0)


def test_vllm_backend_is_refused_clearly_when_not_installed(tiny: tuple[Any, Any]) -> None:
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="vLLM is not installed"):
        generate_batched(model, tokenizer, ["Hi"], DecodingSettings(), backend="vllm")


def test_reference_nll_matches_a_hand_computation_from_logits(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts: list[Any] = ["Hi", "请介绍一下你自己。", "What is the capital of France?"]
    references = ["Hello!", "我是一个语言模型，可以回答问题。", "Paris."]
    # A budget of one row per batch and a wide one must agree, and both match by hand.
    wide = reference_nll(model, tokenizer, prompts, references)
    narrow = reference_nll(model, tokenizer, prompts, references, batch_tokens=1)
    for prompt, reference, got, single in zip(prompts, references, wide, narrow, strict=True):
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reference},
        ]
        sample = encode(tokenizer, messages, 4096)
        ids = torch.tensor([sample.input_ids])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        answer = [t for t, label in enumerate(sample.labels) if label != -100]
        expected = -sum(log_probs[t - 1, sample.input_ids[t]].item() for t in answer)
        assert got.tokens == len(answer) > len(tokenizer(reference).input_ids) - 1
        assert got.nll == pytest.approx(expected, rel=1e-4)
        assert single.nll == pytest.approx(expected, rel=1e-4)


def test_reference_nll_refuses_mismatched_lengths(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="2 prompts but 1 references"):
        reference_nll(model, tokenizer, ["a", "b"], ["x"])


def test_benchmark_quick_run_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "eval_generation.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    for key in (
        "prompts",
        "device",
        "one_at_a_time_tokens_per_s",
        "batched_tokens_per_s",
        "ratio",
        "one_at_a_time_seconds",
        "batched_seconds",
        "outputs_match",
    ):
        assert key in result
    assert result["outputs_match"] is True
