"""Everything a zh-CN reader sees is Chinese (issue 15), including what is stored in English:
a review campaign's default criteria and mode, the review page's choices and its script's
words, the evaluations' default model labels and the metrics' names, a dataset's format and
its length table, the job form's estimate, members' roles and a success criterion's examples.
The API keeps the stored English values."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete, select
from sqlalchemy.orm import Session

from app.models import (
    Artifact,
    CampaignReviewer,
    CampaignStatus,
    Dataset,
    Deployment,
    Evaluation,
    Export,
    Job,
    JobStatus,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
    WorkerRecord,
)
from app.services import jobs as jobs_service
from app.services import workers
from app.services.evaluations.candidates import default_label
from app.services.jobs import events
from tests.app.pages import csrf
from tests.conftest import ADMIN_EMAIL
from tests.factories import alpaca_records, jsonl
from worker.spec.placement import Capacity

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en"}


@dataclass
class World:
    project: str
    dataset: str
    job: str
    evaluation: str
    campaign: str
    labels: dict[str, str]


@pytest.fixture
def world(browser: TestClient, connection: Connection) -> World:
    """A project with data imported through "my own columns", a succeeded job, its evaluation
    (default labels, stored in English) and an open campaign with the default criteria."""
    page = browser.get("/projects")
    made = browser.post(
        "/projects",
        data={"name": "中文页面", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    project_id = made.headers["location"].rsplit("/", 1)[1]
    records = [{"问题": r["instruction"], "答案": r["output"]} for r in alpaca_records(30)]
    staged = browser.post(
        f"/projects/{project_id}/uploads",
        files={"file": ("qa.jsonl", jsonl(records), "application/octet-stream")},
        headers={"X-CSRF-Token": csrf(page.text)},
        follow_redirects=False,
    )
    assert staged.status_code == 303, staged.text
    upload_page = browser.get(staged.headers["location"])
    imported = browser.post(
        staged.headers["location"] + "/import",
        data={
            "name": "问答",
            "format": "columns",
            "map_prompt": "问题",
            "map_completion": "答案",
            "csrf_token": csrf(upload_page.text),
        },
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text
    dataset_id = imported.headers["location"].split("/")[2].split("?")[0]
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        dataset = session.get(Dataset, uuid.UUID(dataset_id))
        assert dataset is not None
        version = dataset.versions[-1]
        job = Job(
            project_id=dataset.project_id,
            dataset_id=dataset.id,
            dataset_version_id=version.id,
            config={"base_model": "smollm2-135m-instruct", "method": "lora"},
            status=JobStatus.succeeded,
            queue="training",
            result={},
        )
        session.add(job)
        session.flush()
        # As the services write them (a message id), and as the engine does (English only).
        jobs_service.add_event(session, job_id=job.id, message=events.JOB_CREATED, params={})
        jobs_service.add_event(
            session,
            job_id=job.id,
            message=events.FILES_VALIDATED,
            params={"records": 30, "queue": "training"},
        )
        for message, data in [
            ("Started on worker vm:1", None),
            ("Chosen automatically: learning_rate 0.0008", {"auto": {"learning_rate": 0.0008}}),
            ("Model loaded (137.0M parameters, 2.4M trainable)", None),
            ("Failed: the job has already failed and cannot be cancelled", None),
            ("Something new the engine says", None),
        ]:
            jobs_service.add_event(session, job_id=job.id, message=message, data=data)
        base = {
            "key": "baseline",
            "kind": "base",
            "base_model": "smollm2-135m-instruct",
            "k_shot": 0,
        }
        tuned = {"key": f"job-{str(job.id)[:8]}", "kind": "job", "job_id": str(job.id)}
        tuned["method"] = "lora"
        candidates = [
            {**base, "label": default_label(base)},
            {**tuned, "label": default_label(tuned)},
        ]
        value = {"value": 0.5, "low": 0.4, "high": 0.6}
        evaluation = Evaluation(
            project_id=dataset.project_id,
            dataset_version_id=version.id,
            job_id=job.id,
            split="test",
            candidates=candidates,
            settings={},
            status="succeeded",
            queue="training",
            progress={},
            results={
                "n": 3,
                "baseline": "baseline",
                "primary_metric": "exact_match",
                "models": {
                    c["key"]: {"exact_match": value, "token_f1": value, "perplexity": value}
                    for c in candidates
                },
                "deltas": {
                    c["key"]: {"exact_match": {"value": 0.05, "low": 0.01, "high": 0.12}}
                    for c in candidates[1:]
                },
                "decoding": {"temperature": 0, "max_new_tokens": 64},
                "bleu_tokenizer": "zh",
            },
        )
        session.add(evaluation)
        session.flush()
        campaign = ReviewCampaign(
            project_id=dataset.project_id,
            evaluation_id=evaluation.id,
            name="盲评",
            mode="both",
            criteria=["accuracy", "style", "format"],
            model_a=candidates[0],
            model_b=candidates[1],
            status=CampaignStatus.open,
        )
        session.add(campaign)
        session.flush()
        item = ReviewItem(
            campaign_id=campaign.id,
            position=0,
            messages=[
                {"role": "system", "content": "你是客服。"},
                {"role": "user", "content": "你好"},
            ],
            prompt="你好",
            answer_a="甲",
            answer_b="乙",
        )
        session.add_all([item, CampaignReviewer(campaign_id=campaign.id, user_id=admin.id)])
        session.flush()
        session.add(
            ReviewAssignment(
                campaign_id=campaign.id, reviewer_id=admin.id, item_id=item.id, sequence=1
            )
        )
        session.commit()
        return World(
            project=project_id,
            dataset=dataset_id,
            job=str(job.id),
            evaluation=str(evaluation.id),
            campaign=str(campaign.id),
            labels={c["key"]: c["label"] for c in candidates},
        )


def test_the_review_page_is_chinese(browser: TestClient, world: World) -> None:
    page = browser.get(f"/reviews/{world.campaign}/1", headers=ZH)
    assert page.status_code == 200, page.text[:2000]
    text = page.text
    for chinese in ("左边更好", "右边更好", "平局：一样好", "都不好", "准确性", "风格", "格式"):
        assert chinese in text, chinese
    for english in ("Left is better", "Tie: equally good", ">accuracy<", ">style<"):
        assert english not in text, english
    # The page's script shows the words it is given, in the page's language.
    assert 'data-saved="已保存"' in text and 'data-graded="已评 {n} 条"' in text
    assert ">系统<" in text  # a conversation's roles
    english = browser.get(f"/reviews/{world.campaign}/1", headers=EN).text
    assert "Left is better" in english and 'data-graded="{n} graded"' in english


def test_the_campaign_page_names_its_mode_criteria_and_models_in_chinese(
    browser: TestClient, world: World
) -> None:
    text = browser.get(f"/campaigns/{world.campaign}", headers=ZH).text
    assert "两两比较并评分" in text and "pairwise and ratings" not in text
    assert "基础模型 + 提示（SmolLM2" in text and "Base model + prompt" not in text
    assert f"微调模型（LoRA，任务 {world.job[:8]}）" in text and "Fine-tuned (" not in text


def test_the_new_campaign_form_proposes_chinese_criteria(browser: TestClient, world: World) -> None:
    text = browser.get(f"/evaluations/{world.evaluation}", headers=ZH).text
    assert "准确性\n风格\n格式" in text
    assert "accuracy\nstyle\nformat" in browser.get(f"/evaluations/{world.evaluation}").text


def test_evaluation_pages_translate_default_labels_and_metric_names(
    browser: TestClient, world: World
) -> None:
    text = browser.get(f"/evaluations/{world.evaluation}", headers=ZH).text
    for chinese in ("基础模型 + 提示（SmolLM2", "零示例", "微调模型（LoRA", "完全匹配", "困惑度"):
        assert chinese in text, chinese
    for english in ("Base model + prompt", "Fine-tuned (", ">Exact match<", ">Perplexity<"):
        assert english not in text, english
    report = browser.get(f"/projects/{world.project}/report", headers=ZH).text
    assert "完全匹配" in report and "Exact match" not in report
    assert "基础模型 + 提示" in report and "Base model + prompt" not in report
    # The difference row's intervals read "+0.010 至 +0.120", as the English one reads "to".
    assert " 至 " in report and " to +" not in report and " to -" not in report
    assert " to " in browser.get(f"/projects/{world.project}/report", headers=EN).text
    # English pages, and the API (which the CLI reads), keep the stored labels.
    english = browser.get(f"/evaluations/{world.evaluation}", headers=EN).text
    assert "Base model + prompt (SmolLM2" in english and ">Exact match<" in english
    stored = browser.get(
        f"/api/v1/evaluations/{world.evaluation}", headers={**ZH, "Accept": "application/json"}
    ).json()
    assert {c["key"]: c["label"] for c in stored["candidates"]} == world.labels


def test_a_label_someone_chose_is_shown_as_written(world: World) -> None:
    from app.core.i18n import using_locale
    from app.web.display_words import model_label

    base = {"key": "b", "kind": "base", "base_model": "smollm2-135m-instruct", "k_shot": 3}
    with using_locale("zh_CN"):
        assert model_label({**base, "label": default_label(base)}).endswith("3 个示例）")
        assert model_label({**base, "label": "my prompt"}) == "my prompt"
        assert model_label({"key": "x", "label": "旧的"}) == "旧的"


def test_dataset_pages_show_the_format_and_roles_in_chinese(
    browser: TestClient, world: World
) -> None:
    project = browser.get(f"/projects/{world.project}", headers=ZH).text
    assert "自定义列" in project and ">columns<" not in project
    assert "(管理员)" in project and "(admin)" not in project
    dataset = browser.get(f"/datasets/{world.dataset}", headers=ZH).text
    assert "自定义列" in dataset and ">columns " not in dataset


def test_the_length_table_and_its_unit_are_chinese() -> None:
    from app.core.i18n import using_locale
    from app.web.rendering import templates

    stats = {
        "records": 3,
        "unit": "characters",
        "prompt": {"min": 1, "mean": 2, "max": 3},
        "answer": {"min": 1, "mean": 2, "max": 3},
        "total": {"min": 2, "mean": 4, "max": 6},
    }
    charts = {
        name: {"label": name, "empty": True, "bars": [], "x_ticks": []}
        for name in ("total", "languages", "prompt", "answer")
    }
    template = templates.env.get_template("datasets/_stats.html")
    with using_locale("zh_CN"):
        text = template.render(stats=stats, charts=charts, dataset=None, version=None)
    assert "<th>提示</th>" in text and "<th>回答</th>" in text and "<th>合计</th>" in text
    assert "<strong>字符</strong>" in text and "characters" not in text


def test_the_job_forms_estimate_reads_in_chinese(browser: TestClient, world: World) -> None:
    page = browser.get(f"/projects/{world.project}", headers=ZH)
    estimate = browser.post(
        f"/projects/{world.project}/estimate",
        data={
            "dataset_id": f"{world.dataset}@1",
            "base_model": "smollm2-135m-instruct",
            "method": "lora",
            "csrf_token": csrf(page.text),
        },
        headers=ZH,
    )
    assert estimate.status_code == 200, estimate.text
    text = estimate.text
    assert "自动选择：" in text and "学习率" in text, text
    assert "about " not in text and "learning rate" not in text
    assert re.search(r"约 [\d.]+ (秒|分钟|小时)", text), text
    # What the estimate assumes, too.
    assert "样本长度：" in text and "时间为近似值" in text
    assert "Sample lengths" not in text and "Time is approximate" not in text


def test_a_success_criterions_examples_are_chinese(browser: TestClient) -> None:
    page = browser.get("/projects", headers=ZH)
    refused = browser.post(
        "/projects",
        data={
            "name": "标准",
            "success_criteria": "微调后的模型要比直接提示基础模型回答得更好",
            "csrf_token": csrf(page.text),
        },
        headers=ZH,
    )
    assert refused.status_code == 422, refused.text[:1000]
    assert "rougeL 比基线提高至少 0.05" in refused.text
    assert "improves on baseline" not in refused.text


def test_job_events_are_shown_in_the_readers_language(browser: TestClient, world: World) -> None:
    text = browser.get(f"/jobs/{world.job}", headers=ZH).text
    for chinese in (
        "任务已创建",
        "文件已校验（30 条记录）；已在队列“training”中排队",
        "已在工作节点 vm:1 上开始",
        "自动选择：学习率 0.0008",
        "模型已加载（137.0M 参数，其中 2.4M 可训练）",
        "失败：训练任务已经是",
    ):
        assert chinese in text, chinese
    for english in ("Job created", "Files validated", "Started on worker", "Model loaded"):
        assert english not in text, english
    assert "Something new the engine says" in text  # unknown: as stored
    english_page = browser.get(f"/jobs/{world.job}", headers=EN).text
    assert "Job created" in english_page
    # The method as people write it, not its API name in capitals.
    assert "LoRA on <code>" in english_page and "LORA on" not in english_page
    # The API keeps the English message; the id and values ride along in data.
    stored = browser.get(
        f"/api/v1/jobs/{world.job}/events", headers={**ZH, "Accept": "application/json"}
    ).json()
    rows = stored if isinstance(stored, list) else stored["items"]
    first = rows[0]
    assert first["message"] == "Job created"
    assert first["data"] == {"message_id": "Job created", "message_params": {}}
    assert rows[1]["message"] == "Files validated (30 records); queued on 'training'"


def test_an_event_whose_values_do_not_fill_its_message_is_shown_as_stored() -> None:
    from app.core.i18n import using_locale

    data = {"message_id": "Checkpoint saved at step %(step)s", "message_params": {}}
    with using_locale("zh_CN"):
        assert events.event_text("Checkpoint saved at step 3", data) == "Checkpoint saved at step 3"
        assert events.event_text("Checkpoint saved at step 3", None) == "已在第 3 步保存检查点"
        stopped = (
            "Stopped early at step 40 of 100: the validation loss has not improved by more than "
            "0.01 in 3 evaluations. The best, 1.2345, was at step 30; the weights saved are the "
            "last step's (step 40)."
        )
        assert events.event_text(stopped, None).startswith("第 40 步（共 100 步）时提前停止")
        assert events.event_text("Paused through the API", None) == "已通过 API 暂停"


def test_the_job_pages_live_part_shows_its_evaluation_and_one_download_per_model(
    browser: TestClient, world: World, connection: Connection
) -> None:
    # The part that refreshes in place is what a user sees when the job has just finished.
    live = browser.get(f"/jobs/{world.job}/live", headers=ZH).text
    assert 'data-testid="job-evaluations"' in live and f"/evaluations/{world.evaluation}" in live
    assert 'data-testid="exports"' in live  # and the export buttons, without a reload
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job_id = uuid.UUID(world.job)
        session.add(Artifact(job_id=job_id, kind="adapter", path="x", size_bytes=2048, files=[]))
        session.commit()
    page = browser.get(f"/jobs/{world.job}", headers=ZH).text
    assert page.count('data-testid="artifact-download"') == 1 and "下载适配器（.zip）" in page
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        session.add(Export(job_id=job_id, kind="adapter", status="succeeded", size_bytes=4096))
        session.commit()
    page = browser.get(f"/jobs/{world.job}", headers=ZH).text
    # The export (with its model card) is the one download; the raw adapter says where it is.
    assert 'data-testid="artifact-download"' not in page
    assert page.count('data-testid="export-download"') == 1 and "下载适配器（.tar）" in page
    assert "已导出：请在下方“导出”中下载" in page


def test_a_queued_export_says_what_it_waits_for(
    browser: TestClient, world: World, connection: Connection
) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        job = session.get(Job, uuid.UUID(world.job))
        assert job is not None
        session.add(Export(job_id=job.id, kind="merged", status="queued", queue="training"))
        # A worker serves the queue: the export waits for the work holding it.
        session.execute(delete(WorkerRecord))
        workers.register(
            session, name="vm:1", host="vm", capacity=Capacity(), queues=["training"], models=[]
        )
        session.add(
            Deployment(
                project_id=job.project_id,
                name=f"serving-{uuid.uuid4().hex[:6]}",
                base_model="smollm2-135m-instruct",
                status="running",
                queue="training",
                worker="vm:1",
                api_key="k",
            )
        )
        session.commit()
    text = browser.get(f"/jobs/{world.job}/exports", headers=ZH).text
    assert 'data-testid="export-waiting"' in text
    assert "正在等待：部署“serving-" in text and "停止前会一直占用它的工作节点" in text
    english = browser.get(f"/jobs/{world.job}/exports", headers=EN).text
    assert "waiting for deployment “serving-" in english


def test_the_report_links_a_running_evaluation_with_its_progress(
    browser: TestClient, world: World, connection: Connection
) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        done = session.get(Evaluation, uuid.UUID(world.evaluation))
        assert done is not None
        running = Evaluation(
            project_id=done.project_id,
            dataset_version_id=done.dataset_version_id,
            job_id=done.job_id,
            split="test",
            candidates=done.candidates,
            settings={},
            status="running",
            queue="training",
            progress={"phase": "generating", "model": "baseline", "done": 3, "total": 8},
            results={},
        )
        session.add(running)
        session.commit()
        running_id = str(running.id)
    text = browser.get(f"/projects/{world.project}/report", headers=ZH).text
    assert 'data-testid="report-running"' in text and f'href="/evaluations/{running_id}"' in text
    assert "正在生成：3 / 8" in text or "：3 / 8" in text
    assert 'max="8" value="3"' in text


@pytest.mark.parametrize(
    ("explanation", "chinese"),
    [
        (
            "met: rougeL gain over baseline 0.191 ≥ 0.010 (95% CI 0.095–0.321)",
            "ROUGE-L 相对基线的提升 0.191 ≥ 0.010；95% 置信区间 0.095–0.321",
        ),
        (
            "not met: exact_match 0.100 < 0.400 (short by 0.300); 95% CI 0.000–0.200, but the "
            "95% interval includes the threshold",
            "完全匹配 0.100 < 0.400（差 0.300）；95% 置信区间 0.000–0.200，但 95% 置信区间包含阈值",
        ),
        (
            "met: human win rate 0.600 > 0.500 (95% CI 0.550–0.650) (the review campaign is "
            "still open)",
            "人工评审胜率 0.600 > 0.500；95% 置信区间 0.550–0.650（评审活动仍在进行）",
        ),
        ("waits for human review", "等待人工评审"),
        ("not measured: perplexity was not measured in this evaluation", "本次评估没有测量 困惑度"),
        ("something the worker says now", "something the worker says now"),
    ],
)
def test_a_verdicts_explanation_reads_in_chinese(explanation: str, chinese: str) -> None:
    from app.core.i18n import using_locale
    from app.services.evaluations.words import explanation_text

    with using_locale("zh_CN"):
        assert explanation_text({"explanation": explanation}) == chinese
    # English: as stored, less the status it starts with (the page shows it beside the text)
    english = explanation
    for status in ("met: ", "not met: "):
        if explanation.startswith(status):
            english = explanation.removeprefix(status)
    assert explanation_text({"explanation": explanation}) == english
