"""The messages with values in them that a zh-CN reader meets, in Chinese (issue 15): a data
row's problem, a training config, method or base model refused, why a job failed, and what
the training engine says while it runs. Each is made by the code that writes it where that
code can run here; the engine's events, written inline in the middle of a run, are written
out as the engine words them. The API keeps the stored English and the field."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.core.i18n import using_locale
from app.core.messages import translate_message
from app.models import Job, JobStatus
from app.services import jobs as jobs_service
from app.services.jobs.events import event_text
from tests.app.test_chinese_pages import EN, ZH, World, world  # noqa: F401
from tests.factories import alpaca_records, create_dataset, create_project, jsonl, tiny_config


def zh(message: str) -> str:
    with using_locale("zh_CN"):
        return translate_message(message)


def zh_event(message: str) -> str:
    with using_locale("zh_CN"):
        return event_text(message, None)


def test_a_data_rows_problems_are_chinese_in_the_api_answer(api: TestClient) -> None:
    project = create_project(api)
    bad = [
        {"instruction": "q", "output": "a"},
        {"instruction": "q", "output": 3},
        {"instruction": "q"},
        {"instruction": None, "output": "a"},
    ]
    response = api.post(
        f"/projects/{project['id']}/datasets",
        files={"file": ("train.jsonl", jsonl(bad), "application/octet-stream")},
        headers=ZH,
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    shown = {e["field"]: e["message"] for e in errors}
    assert shown["output"] in (
        "`output` 应为文本，实际是数字（3）",
        "缺少 `output`（该记录的字段是 `instruction`）：每条记录都需要一个回答",
    )
    messages = " ".join(shown.values())
    assert "must be text" not in messages and "is missing" not in messages
    assert "`instruction` 为空（null）：每条记录都需要一个任务或问题" in messages


@pytest.mark.parametrize(
    ("record", "field", "chinese"),
    [
        (
            {"messages": "hi"},
            "messages",
            '`messages` 应为对话轮次列表 {"role": …, "content": …}，实际是文本（"hi"）',
        ),
        ({"messages": []}, "messages", "`messages` 为空：至少添加一轮用户发言和一轮助手回答"),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "messages",
            "`messages` 中没有助手回答：模型是从助手的回答中学习的",
        ),
        (
            {
                "messages": [
                    {"role": "human", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "messages[0].role",
            '`messages[0].role` 是 "human"：角色必须是 system、user 或 assistant（请用“user”）',
        ),
        (
            {"messages": [3, {"role": "assistant", "content": "y"}]},
            "messages[0]",
            "`messages[0]` 应为包含 `role` 和 `content` 的对象，实际是数字（3）",
        ),
        (
            {"conversations": [{"from": "bob", "value": "x"}, {"from": "gpt", "value": "y"}]},
            "conversations[0].from",
            '`conversations[0].from` 是 "bob"：发言者必须是 human、gpt 或 system（user 和 assistant 也可以）',
        ),
    ],
)
def test_a_conversations_problems_are_chinese(
    tmp_path: Path, record: dict, field: str, chinese: str
) -> None:
    from app.datasets.parsing import validate_file

    src = tmp_path / "x.jsonl"
    src.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps(record))
    errors = {e.field: e.message for e in validate_file(src).errors}
    assert zh(errors[field]) == chinese
    assert translate_message(errors[field]) == errors[field]  # English: as written


def test_a_refused_training_config_names_the_field_in_chinese(
    api: TestClient, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(30))
    cases = [
        (tiny_config(tiny_model, method="ia3", lora_r=8), "config.lora_r", "只适用于 LoRA 类方法"),
        (tiny_config(tiny_model, method="qlora"), "config.method", "QLoRA 需要 NVIDIA GPU"),
        (
            tiny_config(tiny_model, batch_size=16, gradient_accumulation_steps=4),
            "config.gradient_accumulation_steps",
            "超过了数据集的",
        ),
        (
            tiny_config(tiny_model, method="full", dtype="float16"),
            "config.dtype",
            "全量微调不支持 float16",
        ),
        (
            {**tiny_config(tiny_model), "base_model": "../../etc/passwd.bin"},
            "config.base_model",
            "请选择模型目录中的模型",
        ),
    ]
    for config, field, chinese in cases:
        body = {"project_id": project["id"], "dataset_id": dataset["id"], "config": config}
        response = api.post("/jobs", json=body, headers=ZH)
        assert response.status_code == 422, response.text
        answer = response.json()
        # The field stays machine-readable; its message and the summary are in Chinese.
        error = next(e for e in answer["errors"] if e["field"] == field)
        assert chinese in error["message"], answer
        assert re.search(r"[\u4e00-\u9fff]", answer["message"]), answer
        assert "applies to" not in answer["message"] and "Choose LoRA" not in answer["message"]


def test_worker_spec_refusals_made_by_the_code_read_in_chinese() -> None:
    from worker.spec.autoconfig import ConfigProblem, check_against_dataset
    from worker.spec.config import TrainConfig
    from worker.spec.method_support import check_method
    from worker.spec.model_names import REFUSED, LocalModelUnusable, for_remote_user

    assert zh(REFUSED).startswith("请选择模型目录中的模型")
    mamba = check_method("prefix_tuning", model_type="mamba", cuda_available=True)
    assert mamba is not None
    assert (
        zh(mamba)
        == "Prefix-tuning 无法训练这个模型：Mamba 是没有注意力层的状态空间模型。请改用 LoRA。"
    )
    hybrid = check_method("prefix_tuning", model_type="qwen3_next", cuda_available=True)
    assert hybrid is not None and "混有线性注意力层" in zh(hybrid)
    unknown = check_method("magic", model_type=None, cuda_available=True)
    assert unknown is not None and zh(unknown).startswith("未知的方法“magic”")
    config = TrainConfig.model_validate(
        {"base_model": "smollm2-135m-instruct", "batch_size": 8, "gradient_accumulation_steps": 4}
    )
    with pytest.raises(ConfigProblem) as problem:
        check_against_dataset(config, dataset_records=10)
    assert zh(problem.value.reason).startswith("批大小 × 梯度累积步数为每个优化步 32 个样本")
    remote = for_remote_user(LocalModelUnusable("/models/x", "missing"))
    assert (
        zh(remote)
        == "无法使用模型“/models/x”：它不是工作节点能读取的、带 config.json 的模型文件夹，也不是 .gguf 文件。"
    )
    too_long = "99999 tokens is more than this model reads at once (8,192 tokens); use at most 8192 or auto"
    assert zh(too_long).startswith("99999 个 token 超过了 这个模型 一次能读取的长度")


def test_why_a_job_failed_made_by_the_engine_reads_in_chinese(tmp_path: Path) -> None:
    from worker.training import budget, engine, models
    from worker.training.checkpoints import IncompatibleCheckpoint, load_checkpoint

    assert zh(engine._explain(MemoryError())) == "机器内存不足。请调小批大小或最大序列长度。"
    assert zh(engine._explain(ValueError("x"))) == "训练意外失败（ValueError: x）。"
    assert zh(budget._no_room(4096)).startswith(
        "即使把单次前向的规模减半，单个样本（4,096 个 token）"
    )
    assert zh(models.remote_code_refused("m")).startswith("模型“m”需要运行它自带的代码")
    with pytest.raises(IncompatibleCheckpoint) as refused:
        load_checkpoint(
            tmp_path, model=None, optimizer=None, scheduler=None, config=None, samples_hash=""
        )
    assert zh(str(refused.value)) == f"{tmp_path} 不是检查点：其中没有 state.json。"
    # Started over after such a checkpoint (worker/tasks/training.py), as an event.
    assert zh_event(f"{refused.value} Training starts over.").endswith("训练将从头开始。")


@pytest.mark.parametrize(
    ("event", "chinese"),
    [
        (
            "A forward pass of 8,192 tokens did not fit in GPU memory: the token budget is halved "
            "from 16,384 to 8,192 and the step retried (this run keeps the smaller budget; "
            "micro_batch_tokens sets one).",
            "一次 8,192 个 token 的前向计算超出了 GPU 显存：token 预算从 16,384 减半到 8,192",
        ),
        (
            "A padded batch of 8 rows did not fit in GPU memory: each batch now runs in passes "
            "of 4 rows, and the step was retried.",
            "一个 8 行的填充批次超出了 GPU 显存：现在每个批次分成每次 4 行来计算，并重试了这一步。",
        ),
        (
            "3 of 60 fused layers were replaced during training by another library; those "
            "layers ran their own (slower) forward.",
            "60 个融合层中有 3 个在训练中被其他库替换",
        ),
        (
            "Batches are padded, not packed: the model uses sliding-window attention.",
            "批次采用填充而非打包：模型使用滑动窗口注意力。",
        ),
        (
            "Compiling 30 decoder layers (layers of 3M weights are launch-bound uncompiled); the "
            "first steps include the compile time.",
            "每层 3M 个权重，不编译时受内核启动开销限制",
        ),
        (
            "2 of 10 validation samples are left out of the validation loss: no part of their "
            "answer fits in max_seq_length=auto.",
            "10 个验证样本中有 2 个未计入验证损失",
        ),
        (
            "Model 'x' ships its own code; it is not run: transformers' built-in 'llama' "
            "implementation is used instead.",
            "模型“x”自带代码，但不会运行：改用 transformers 内置的“llama”实现。",
        ),
        (
            "Loading pickle weights (pytorch_model.bin): an admin allowed them for this model",
            "正在加载 pickle 权重（pytorch_model.bin）：管理员已为这个模型允许",
        ),
        (
            "Made through the OpenAI-compatible API as ftjob-abc; learning_rate_multiplier 2 → "
            "learning rate 0.0004",
            "通过 OpenAI 兼容 API 创建，编号 ftjob-abc；学习率倍数 2 → 学习率 0.0004",
        ),
    ],
)
def test_the_engines_events_read_in_chinese(event: str, chinese: str) -> None:
    assert chinese in zh_event(event), zh_event(event)
    assert not re.search(r"[\u4e00-\u9fff]", event_text(event, None))  # English: English


def test_the_job_page_shows_a_failed_jobs_reason_and_events_in_chinese(
    browser: TestClient,
    world: World,  # noqa: F811
    connection: Connection,
) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job = session.get(Job, uuid.UUID(world.job))
        assert job is not None
        job.status = JobStatus.failed
        job.error = "The loss became nan at step 7; lower the learning rate."
        jobs_service.add_event(
            session,
            job_id=job.id,
            level="warning",
            message="A padded batch of 8 rows did not fit in GPU memory: each batch now runs in "
            "passes of 4 rows, and the step was retried.",
        )
        session.commit()
    text = browser.get(f"/jobs/{world.job}", headers=ZH).text
    assert "第 7 步的损失变成了 nan；请调低学习率。" in text
    assert "现在每个批次分成每次 4 行来计算" in text
    assert "lower the learning rate" not in text and "did not fit in GPU memory" not in text
    english = browser.get(f"/jobs/{world.job}", headers=EN).text
    assert "The loss became nan at step 7" in english


@pytest.mark.parametrize(
    ("name", "content", "chinese"),
    [
        (
            "a.jsonl",
            '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n',
            "第 32 列的 JSON 无效：记录提前结束了：它被截断了，或者延续到了下一行",
        ),
        ("b.jsonl", "", "文件是空的：请上传包含记录的文件"),
        ("c.jsonl", "[1, 2]\n", "每条记录都必须是带字段的 JSON 对象 {…}，但这里是数字（1）"),
        ("d.csv", "a,b\n1,2\n", "无法判断用哪些列来训练：现有的列是 `a`, `b`；"),
        ("g.txt", "hello", "这个文件看起来不是 JSON、JSONL 或 CSV：它以 `hello` 开头。"),
        (
            "h.jsonl",
            '{"instruction": "a"，"output": "b"}\n',
            "`，` 是全角（中文）字符；在文本值之外，JSON 需要半角的 `,`",
        ),
        ("i.jsonl", "{'instruction': 'a'}\n", "文本和字段名需要用双引号"),
    ],
)
def test_a_file_that_cannot_be_read_says_why_in_chinese(
    tmp_path: Path, name: str, content: str, chinese: str
) -> None:
    from app.datasets.parsing import validate_file

    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    report = validate_file(src, filename=name)
    assert report.errors, report
    first = report.errors[0].message
    assert chinese in zh(first), zh(first)


def test_the_records_warnings_are_chinese(tmp_path: Path) -> None:
    from app.datasets.parsing import validate_file

    src = tmp_path / "w.jsonl"
    records = [{"instruction": "q", "output": "b"}, {"prompt": "x", "completion": "y"}]
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    warnings = [zh(w) for w in validate_file(src, filename="w.jsonl").warnings]
    assert "2 条记录的回答很短（少于 2 个字符），例如第 1 行" in warnings, warnings
    assert any(w.startswith("文件中混有多种记录格式") for w in warnings), warnings


def test_a_services_refusal_with_values_is_chinese_in_the_api(
    browser: TestClient,
    world: World,  # noqa: F811
) -> None:
    from tests.app.test_chinese_pages import csrf

    token = csrf(browser.get(f"/jobs/{world.job}").text)
    headers = {"Accept": "application/json", "X-CSRF-Token": token}
    # The world's job has succeeded: it cannot resume, nor be cancelled.
    resumed = browser.post(f"/api/v1/jobs/{world.job}/resume", headers={**ZH, **headers})
    assert resumed.status_code == 409, resumed.text
    assert resumed.json()["message"] == "该任务的状态是“已成功”；只有已取消或失败的任务才能继续"
    cancelled = browser.post(f"/api/v1/jobs/{world.job}/cancel", headers={**ZH, **headers})
    assert cancelled.status_code == 409, cancelled.text
    assert cancelled.json()["message"] == "训练任务已经是“已成功”状态，无法取消"
    english = browser.post(f"/api/v1/jobs/{world.job}/resume", headers={**EN, **headers}).json()
    assert (
        english["message"]
        == english["detail"]
        == ("the job has succeeded; only a cancelled or failed job can resume")
    )


@pytest.mark.parametrize(
    ("message", "chinese"),
    [
        (
            "the worker was killed by signal 9 on each of 3 attempts",
            "工作节点被信号 9 终止（3 次尝试都是如此）",
        ),
        ("worker vm:7 stopped responding", "工作节点 vm:7 停止响应"),
        (
            "the worker exited with status 1; re-queued (attempt 2)",
            "工作节点以状态 1 退出；已重新排队（第 2 次尝试）",
        ),
        (
            "tunelab stopped while it ran; cancelled as requested",
            "tunelab 在它运行时停止了；已按要求取消",
        ),
    ],
)
def test_a_worker_lost_reads_in_chinese(message: str, chinese: str) -> None:
    assert zh(message) == chinese
    assert zh_event(message) == chinese  # as an event, too


def test_the_job_form_refuses_a_setting_in_chinese_and_keeps_the_input(
    browser: TestClient,
    world: World,  # noqa: F811
) -> None:
    from tests.app.test_chinese_pages import csrf

    page = browser.get(f"/projects/{world.project}", headers=ZH)
    refused = browser.post(
        f"/projects/{world.project}/jobs",
        data={
            "dataset_id": f"{world.dataset}@1",
            "base_model": "smollm2-135m-instruct",
            "method": "ia3",
            "lora_r": "8",
            "csrf_token": csrf(page.text),
        },
        headers=ZH,
    )
    assert refused.status_code == 422, refused.text[:2000]
    text = refused.text
    assert "“LoRA 秩 (r)”只适用于 LoRA 类方法（lora、qlora），不适用于 ia3" in text
    assert "applies to the LoRA methods" not in text
    assert 'data-field="config.lora_r"' in text  # the field, machine-readable
