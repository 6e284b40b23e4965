"""The whole journey of a new user in a real browser, in Chinese and again in English, with
clicks and typing only (issue 15): a project with a success criterion in the user's language,
an upload of real data with its columns mapped, a quick-preset job on SmolLM2-135M-Instruct,
the automatic evaluation watched as it runs, a review campaign graded with the keyboard, a
deployment answering in the playground, and the adapter's export downloaded.

The Chinese journey's browser asks for zh-CN (Accept-Language), as a Chinese user's does; the
English one asks for English. Every step's screenshot goes to TUNELAB_SCREENSHOTS (CI keeps the
folder) or the test's tmp folder, with the time each step took in timings.txt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, expect
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.live import LiveServer
from tests.web.journey import Journey, screenshot_root

# Real SmolLM2 weights: "slow" also starts it first under `pytest -n auto`.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "journey"
MODEL = "smollm2-135m-instruct"
LOCALES = {"zh_CN": "zh-CN", "en": "en-GB"}  # the browser's language


@pytest.fixture(params=["zh_CN", "en"])
def journey(
    request: pytest.FixtureRequest, browser: Browser, cluster: LiveServer, tmp_path: Path
) -> Iterator[Journey]:
    locale = request.param
    context = browser.new_context(
        base_url=cluster.url, locale=LOCALES[locale], accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    # A 2-core machine shared with training: pages may take longer than Playwright's 5 s.
    expect.set_options(timeout=30_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    shots = screenshot_root(tmp_path) / f"journey-{locale}"
    shots.mkdir(parents=True, exist_ok=True)
    journey = Journey(page=page, locale=locale, shots=shots)
    try:
        yield journey
    finally:
        page.screenshot(path=str(shots / "last.png"), full_page=True)
        print(f"\n{locale}, screenshots in {shots}:\n{journey.write_report()}")
        context.close()
        expect.set_options(timeout=5_000)
    # Our pages work under their own Content-Security-Policy.
    assert [e for e in errors if "Content Security Policy" in e] == []


def test_a_new_user_goes_from_a_goal_to_a_deployed_model_in_the_browser(
    journey: Journey, cluster: LiveServer, tmp_path: Path
) -> None:
    j, page = journey, journey.page
    log_in(j)
    project = create_project(j)
    import_data(j, project)
    job_url = train(j, project)
    evaluation_url = watch_the_evaluation(j, job_url)
    review(j, evaluation_url)
    deploy_and_chat(j, project)
    download_export(j, project, job_url, tmp_path)
    if j.zh:
        assert j.english == [], "English in the headings of Chinese pages:\n" + "\n".join(j.english)
    assert page.url.startswith(cluster.url)


def log_in(j: Journey) -> None:
    page = j.page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    j.step("login-page")
    j.label("E-mail").fill(ADMIN_EMAIL)
    j.label("Password").fill(ADMIN_PASSWORD)
    j.button("Log in").click()
    expect(page).to_have_url(re.compile(r"/projects$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(j.t("Projects"))
    j.step("projects")


def create_project(j: Journey) -> str:
    """The goal, with a criterion in the user's words; the project's name."""
    page = j.page
    name = j.pick("客服助手 旅程", "Dialogue summaries journey")
    j.own_words.update(name.split())
    j.label("Name").fill(name)
    j.label("Domain").fill(j.pick("客户服务", "chat summaries"))
    j.label("Task description").fill(
        j.pick("用简短的中文回答客户的问题。", "Summarise a chat in one sentence.")
    )
    # A criterion in plain words that cannot be measured is refused beside the form, which
    # keeps what was typed (issue 15, problem 1: it was a blank 500 that lost the form).
    criteria = j.label("Success criteria, one per line")
    vague = j.pick(
        "微调后的模型要比直接提示基础模型回答得更好",
        "the tuned model answers better than the prompted base model",
    )
    criteria.fill(vague)
    j.button("Create project").click()
    expect(page.get_by_role("alert").first).to_contain_text(vague)
    expect(criteria).to_have_value(vague)
    expect(j.label("Name")).to_have_value(name)
    j.step("vague-criterion-refused")
    criteria.fill(
        j.pick(
            "rougeL 比基线提高 0.01\n人工评审胜率不低于 50%",
            "rougeL improves on baseline by >= 0.01\nhuman win rate >= 50%",
        )
    )
    j.button("Create project").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(
        page.get_by_text(j.pick("人工评审胜率不低于 50%", "human win rate >= 50%"))
    ).to_be_visible()
    j.step("project")
    return name


def import_data(j: Journey, project: str) -> None:
    """Upload a real excerpt in columns of the user's own, map them, split and import."""
    page = j.page
    path = DATA / ("alpaca_zh_excerpt.csv" if j.zh else "samsum_excerpt.jsonl")
    prompt_column, answer_column = ("问题", "回答") if j.zh else ("dialogue", "summary")
    j.own_words.update({path.name, prompt_column, answer_column, "csv", "jsonl"})
    page.locator("#upload-form input[type=file]").first.set_input_files(path)
    j.button("Upload").click()
    expect(page).to_have_url(re.compile(r"/uploads/[0-9a-f-]+$"))
    expect(page.get_by_test_id("sample")).to_contain_text(j.pick("黎明", "Amanda"))
    mapping = page.get_by_test_id("mapping")
    mapping.get_by_label(j.t("Prompt / question")).select_option(prompt_column)
    mapping.get_by_label(j.t("Answer / completion")).select_option(answer_column)
    j.label("Test %").fill("6")
    j.step("upload-mapped")
    j.button("Validate and import").click()
    expect(page).to_have_url(re.compile(r"/datasets/[0-9a-f-]+\?version=1$"))
    expect(page.get_by_test_id("split-counts")).to_be_visible()
    j.step("dataset")
    page.get_by_role("link", name=project, exact=True).first.click()
    expect(page.get_by_test_id("datasets")).to_contain_text(path.stem)


def choose_model(j: Journey) -> None:
    """The base model: a catalog picker where there is one, else the name typed."""
    field = j.page.locator("#job-form").get_by_label(j.t("Base model")).first
    if field.evaluate("e => e.tagName") == "SELECT":
        field.select_option(MODEL)
    elif field.get_attribute("type") in ("radio", "checkbox"):
        field.check()
    else:
        field.fill(MODEL)


def train(j: Journey, project: str) -> str:
    """A quick-preset LoRA job on SmolLM2; the job page's address once it succeeded."""
    page = j.page
    choose_model(j)
    j.label("Preset").select_option("quick")
    # Small enough for each language's journey to stay short on a 2-core CPU.
    j.label("Max steps").fill("8")
    j.label("Max sequence length").fill("256")
    estimate = page.get_by_test_id("estimate")
    expect(estimate).not_to_contain_text(j.t("Estimating memory and time…"))
    j.step("job-form")
    j.button("Start training").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]+$"))
    live = page.locator("#live")
    expect(live).to_have_attribute(
        "data-status", re.compile("succeeded|failed|cancelled"), timeout=240_000
    )
    error = page.get_by_test_id("job-error")
    assert live.get_attribute("data-status") == "succeeded", (
        error.inner_text() if error.count() else "no error shown"
    )
    expect(page.get_by_test_id("status")).to_have_text(j.t("succeeded"))
    expect(page.get_by_test_id("loss-chart").locator("polyline").first).to_be_attached()
    j.step("job-succeeded")
    return page.url


def watch_the_evaluation(j: Journey, job_url: str) -> str:
    """The evaluation each job queues for itself, its progress seen while it runs."""
    page = j.page
    # The job page lists its evaluation as soon as the job is done, without a reload.
    link = page.get_by_test_id("job-evaluations").get_by_role("link").first
    expect(link).to_be_visible(timeout=30_000)
    link.click()
    expect(page).to_have_url(re.compile(r"/evaluations/[0-9a-f-]+$"))
    evaluation_url = page.url
    seen: list[str] = []
    shot = False
    status: str | None = "queued"
    deadline = time.monotonic() + EVALUATION_SECONDS
    while status in (None, "queued", "running"):
        assert time.monotonic() < deadline, f"the evaluation took over {EVALUATION_SECONDS} s"
        try:  # one look at the page, which swaps its live part and reloads when done
            status, text = page.evaluate(LOOK_AT_THE_EVALUATION)
        except PlaywrightError:
            status, text = None, None
        if text and text not in seen:
            seen.append(text)
            if not shot and re.search(r"\d", text):
                j.step("evaluation-progress")  # the first count of items done
                shot = True
        page.wait_for_timeout(300)
    expect(page.get_by_test_id("status")).to_have_text(j.t("succeeded"), timeout=60_000)
    # Progress in numbers: "… 3 of 5" (items done, of the total), in the page's language.
    counted = [s for s in seen if re.search(r"\d+\D+\d+", s)]
    assert counted, f"no count of items done was seen while the evaluation ran: {seen}"
    expect(page.get_by_test_id("model-row").first).to_be_visible()
    j.step("evaluation-done")
    return evaluation_url


EVALUATION_SECONDS = 300
# The evaluation's status and its progress line, read at once (the page may be mid-swap).
LOOK_AT_THE_EVALUATION = """() => {
  const live = document.getElementById("eval-live");
  const progress = document.querySelector("[data-testid=eval-progress]");
  const shown = progress && progress.offsetParent !== null;
  return [live ? live.dataset.status : null, shown ? progress.innerText : null];
}"""


def review(j: Journey, evaluation_url: str) -> None:
    """A blind review of the evaluation's answers, the user its reviewer, graded by keyboard."""
    page = j.page
    form = page.get_by_test_id("campaign-form")
    name = j.pick("人工盲评", "Blind review")
    j.own_words.update(name.split())
    form.get_by_label(j.t("Name"), exact=True).fill(name)
    criteria = j.pick("准确\n简洁", "accuracy\nbrevity")
    j.own_words.update(criteria.split())
    form.get_by_label(j.t("Rubric criteria for ratings (one per line)")).fill(criteria)
    form.get_by_label(j.t("Reviewers' e-mails (one per line)")).fill(ADMIN_EMAIL)
    j.step("campaign-form")
    form.get_by_role("button", name=j.t("Start the review")).click()
    expect(page).to_have_url(re.compile(r"/campaigns/[0-9a-f-]+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    j.step("campaign")

    page.get_by_role("link", name=j.t("Reviews"), exact=True).click()
    expect(page.get_by_test_id("my-campaigns")).to_contain_text(name)
    j.step("my-reviews")
    row = page.get_by_test_id("my-campaigns").locator("tr", has_text=name)
    row.get_by_test_id("continue").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/reviews/[0-9a-f-]+/1$"))
    graded = 0
    while "/done" not in page.url:
        here = page.url
        expect(page.get_by_test_id("answer-left")).to_be_visible()
        expect(page.locator("#review-form[data-ready=true]")).to_be_attached()
        page.keyboard.press("ArrowRight")  # the right answer is better
        for _ in range(page.locator(".score-row").count()):
            page.keyboard.press("4")
        expect(page.get_by_test_id("save-state")).to_have_attribute("data-state", "saved")
        if graded == 0:
            j.step("review-item")
        graded += 1
        page.keyboard.press("n")
        expect(page).not_to_have_url(here)
    assert graded >= 2
    expect(page.get_by_test_id("done")).to_contain_text(str(graded))
    j.step("review-done")
    page.goto(evaluation_url)  # back where the campaign began


def deploy_and_chat(j: Journey, project: str) -> None:
    page = j.page
    page.get_by_role("link", name=project, exact=True).first.click()
    page.get_by_test_id("deployments-link").click()
    name = j.pick("journey-zh", "journey-en")
    j.own_words.add(name)
    page.get_by_test_id("deploy-form").get_by_label(j.t("Name")).fill(name)
    j.step("deploy-form")
    page.get_by_test_id("deploy-form").get_by_role("button", name=j.t("Deploy")).click()
    expect(page).to_have_url(re.compile(r"/deployments/[0-9a-f-]+$"))
    j.step("deployment-starting")
    expect(page.get_by_test_id("deployment-status")).to_have_text(j.t("running"), timeout=180_000)
    j.label("Longest answer").fill("24")
    message = j.pick("天空是什么颜色的？", "Summarise: Tom: lunch at 1? Ann: sure, see you.")
    j.label("Message").fill(message)
    page.get_by_test_id("send").click()
    answers: list[Locator] = []
    for side in ("left", "right"):
        answer = page.get_by_test_id(f"pane-{side}").get_by_test_id("answer")
        expect(answer).to_have_attribute("data-done", "true", timeout=120_000)
        answers.append(answer)
    assert all(a.inner_text().strip() for a in answers)
    j.step("playground")
    # Done trying it: a deployment holds the worker, so the user frees it for the export.
    page.locator("main a[href$='/deployments']").first.click()
    deployments = page.get_by_test_id("deployments")
    deployments.get_by_role("button", name=j.t("Undeploy")).click()
    expect(deployments).to_contain_text(re.compile(f"{j.t('stopping')}|{j.t('stopped')}"))
    j.step("undeployed")


def download_export(j: Journey, project: str, job_url: str, tmp_path: Path) -> None:
    page = j.page
    page.get_by_role("link", name=project, exact=True).first.click()
    job_path = "/" + job_url.split("://", 1)[1].split("/", 1)[1]
    page.locator(f"a[href='{job_path}']").first.click()
    expect(page).to_have_url(job_url)
    page.get_by_role("button", name=j.t("Export the adapter (for vLLM's LoRA support)")).click()
    row = page.get_by_test_id("export-row").first
    done = re.compile(f"{j.t('succeeded')}|{j.t('failed')}|{j.t('cancelled')}")
    expect(row).to_contain_text(done, timeout=180_000)
    link = page.get_by_test_id("export-download").first
    assert link.count(), f"the export did not succeed: {row.inner_text()}"
    j.step("export")
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / (download.value.suggested_filename or "export.tar")
    download.value.save_as(saved)
    assert saved.stat().st_size > 0
    j.step("export-downloaded")
