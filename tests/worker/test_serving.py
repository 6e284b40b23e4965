"""The built-in model server: OpenAI-compatible answers from a base model and its adapters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
import torch
import uvicorn
from peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.evaluation.generation import eos_token_ids
from worker.serving.engine import SamplingParams, ServingEngine
from worker.serving.openai_app import make_app
from worker.spec.formatting import ensure_chat_template, render

REPO = Path(__file__).resolve().parents[2]
KEY = "test-internal-key"
QUESTION = [{"role": "user", "content": "Name three rivers in Europe."}]


def save_adapter(base_dir: Path, config: Any, dest: Path, seed: int) -> Path:
    """An adapter with random (non-identity) weights, so it really changes the answers."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    get_peft_model(model, config).save_pretrained(str(dest))
    return dest


def lora() -> LoraConfig:
    return LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


@contextmanager
def serving(engine: ServingEngine, api_key: str | None = KEY) -> Iterator[str]:
    """The app on a free loopback port in a background thread; yields its /v1 URL."""
    config = uvicorn.Config(make_app(engine, api_key=api_key), port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {
        "alpha": save_adapter(tiny_model_dir, lora(), folder / "alpha", seed=4),
        "beta": save_adapter(tiny_model_dir, lora(), folder / "beta", seed=2),
    }


@pytest.fixture(scope="module")
def engine(
    tiny_model_dir: Path, adapters: dict[str, Path], work_dir: Path
) -> Iterator[ServingEngine]:
    served = ServingEngine(
        str(tiny_model_dir), adapters, model_cache_dir=work_dir, max_wait_ms=20, max_batch_size=8
    )
    yield served
    served.close()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def url(engine: ServingEngine) -> Iterator[str]:
    with serving(engine) as base_url:
        yield base_url


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)


def chat(client: openai.OpenAI, model: str, **options: Any) -> Any:
    defaults: dict[str, Any] = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
    options = defaults | options
    return client.chat.completions.create(model=model, **options)


def streamed(client: openai.OpenAI, model: str, **options: Any) -> list[Any]:
    return list(chat(client, model, stream=True, **options))


# --- Listing and answering ------------------------------------------------------------------


def test_models_lists_the_base_and_every_adapter(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["alpha", "base", "beta"]


def test_chat_completion_answers_with_usage(client: openai.OpenAI) -> None:
    answer = chat(client, "alpha")
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason in {"stop", "length"}
    assert answer.usage.completion_tokens > 0 and answer.usage.prompt_tokens > 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_chat_joins_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = chat(client, "beta", max_tokens=20)
    chunks = streamed(client, "beta", max_tokens=20)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stream_reports_usage_when_asked(client: openai.OpenAI) -> None:
    chunks = streamed(client, "base", stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completions_endpoint_continues_a_raw_prompt(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model="base", prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert whole.object == "text_completion"
    assert whole.usage is not None and whole.usage.prompt_tokens == 4
    parts = client.completions.create(
        model="base", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text


def test_adapter_answer_is_what_peft_generate_gives(
    client: openai.OpenAI, tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ensure_chat_template(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapters["alpha"])).eval()
    text = render(tokenizer, QUESTION, generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    eos = eos_token_ids(model, tokenizer)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    served = chat(client, "alpha", max_tokens=16).choices[0].message.content
    assert served == expected
    assert chat(client, "base", max_tokens=16).choices[0].message.content != expected


def test_concurrent_requests_run_in_shared_batches(
    client: openai.OpenAI, engine: ServingEngine
) -> None:
    questions = [f"Question number {i}: what is {i} + {i}?" for i in range(16)]

    def ask(question: str) -> Any:
        messages = [{"role": "user", "content": question}]
        return chat(client, "alpha", messages=messages, max_tokens=10)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, questions))
    assert all(a.choices[0].finish_reason in {"stop", "length"} for a in answers)
    assert engine.stats()["max_batch_rows"] > 1


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    texts = {
        chat(client, "beta", temperature=0.9, top_p=0.8, seed=7).choices[0].message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    full = chat(client, "base", max_tokens=24).choices[0].message.content
    stop = full[len(full) // 3 : len(full) // 3 + 3]
    expected = full[: full.find(stop)]
    assert expected, "the stop string should cut the answer after some text"

    cut = chat(client, "base", max_tokens=24, stop=["never appears", stop]).choices[0]
    assert cut.message.content == expected and cut.finish_reason == "stop"
    chunks = streamed(client, "base", max_tokens=24, stop=stop)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected


# --- Refusals -------------------------------------------------------------------------------


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The ``error`` object of an OpenAI-shaped error response."""
    assert isinstance(error.body, dict)
    return error.body


def test_wrong_key_is_refused_with_401(url: str) -> None:
    stranger = openai.OpenAI(base_url=url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.models.list()
    assert caught.value.status_code == 401
    assert "API key" in error_body(caught.value)["message"]


def test_unknown_model_is_404_naming_the_served_ones(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, "gamma")
    assert error_body(caught.value)["code"] == "model_not_found"
    assert "alpha" in error_body(caught.value)["message"]


def test_more_than_one_choice_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "base", n=2)
    assert error_body(caught.value)["param"] == "n"


def test_prompt_longer_than_the_context_is_400(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 1100}]
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "base", messages=long, stream=True)
    assert "1024 tokens" in error_body(caught.value)["message"]


def test_invalid_body_is_400_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "base", temperature=-1)
    assert "temperature" in error_body(caught.value)["message"]


# --- Streaming text a character at a time ---------------------------------------------------


class ScriptedModel(torch.nn.Module):
    """Says a fixed token sequence whatever it is asked, then its end token."""

    def __init__(self, script: list[int], vocab: int, eos: int) -> None:
        super().__init__()
        self.script, self.vocab, self.eos = script, vocab, eos
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=1024)
        self.generation_config = SimpleNamespace(eos_token_id=eos)

    def forward(self, input_ids: torch.Tensor, past_key_values: int | None = None, **_: Any) -> Any:
        step = past_key_values or 0
        token = self.script[step] if step < len(self.script) else self.eos
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        logits[:, -1, token] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=step + 1)


def test_chinese_streams_whole_characters(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    text = "长城很长。饕餮与龘靐齉！"
    script = tokenizer.encode(text, add_special_tokens=False)
    # Some characters are split over two byte-level tokens, which alone decode to U+FFFD.
    assert any("\ufffd" in tokenizer.decode([t]) for t in script)
    model = ScriptedModel(script, len(tokenizer), tokenizer.eos_token_id)
    engine = ServingEngine.from_model(model, tokenizer)
    try:
        with serving(engine, api_key=None) as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
            chunks = streamed(client, "base", max_tokens=64)
    finally:
        engine.close()
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_an_answer_cut_off_mid_character_ends_without_its_partial_bytes(
    tiny_model_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    script = tokenizer.encode("长城龘靐齉", add_special_tokens=False)
    # The first token at which the decoded text ends in a character still missing bytes.
    cut = next(n for n in range(1, len(script)) if tokenizer.decode(script[:n]).endswith("\ufffd"))
    whole = tokenizer.decode(script[:cut]).rstrip("\ufffd")
    model = ScriptedModel(script, len(tokenizer), tokenizer.eos_token_id)
    engine = ServingEngine.from_model(model, tokenizer)
    try:
        with serving(engine, api_key=None) as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
            chunks = streamed(client, "base", max_tokens=cut)
    finally:
        engine.close()
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert "".join(pieces) == whole and all("\ufffd" not in p for p in pieces)
    assert chunks[-1].choices[0].finish_reason == "length"


# --- Adapters of other kinds ----------------------------------------------------------------


def test_an_ia3_adapter_changes_the_answer(tiny_model_dir: Path, work_dir: Path) -> None:
    config = IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"],
        feedforward_modules=["down_proj"],
        init_ia3_weights=False,
    )
    folder = save_adapter(tiny_model_dir, config, work_dir / "ia3", seed=3)
    engine = ServingEngine(str(tiny_model_dir), {"scaled": folder}, model_cache_dir=work_dir)
    params = SamplingParams(max_tokens=12, temperature=0)

    async def both() -> list[str]:
        answers = [engine.complete(m, QUESTION, None, params) for m in ("scaled", "base")]
        return [a.text for a in await asyncio.gather(*answers)]

    try:
        scaled, base = asyncio.run(both())
    finally:
        engine.close()
    assert scaled != base


def test_adapters_of_different_kinds_are_refused(
    tiny_model_dir: Path, adapters: dict[str, Path], work_dir: Path
) -> None:
    config = IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[])
    ia3 = save_adapter(tiny_model_dir, config, work_dir / "ia3-mixed", seed=4)
    with pytest.raises(ValueError, match="different kinds"):
        ServingEngine(
            str(tiny_model_dir), {"alpha": adapters["alpha"], "x": ia3}, model_cache_dir=work_dir
        )


def test_prompt_tuning_adapter_is_refused(tiny_model_dir: Path, work_dir: Path) -> None:
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    folder = save_adapter(tiny_model_dir, config, work_dir / "prompt", seed=5)
    with pytest.raises(ValueError, match="serve them alone"):
        ServingEngine(str(tiny_model_dir), {"p": folder}, model_cache_dir=work_dir)


# --- Benchmark smoke run --------------------------------------------------------------------


def test_throughput_bench_quick_prints_one_json_line() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve_throughput.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["server_new_tokens"] > 0 and result["one_at_a_time_new_tokens"] > 0
    assert result["ratio"] > 0 and result["max_batch_rows"] >= 1
