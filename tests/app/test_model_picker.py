"""The job form's model picker and the admin menu's "Model permissions", in English and
Chinese, through the app in this process; the catalog API says each model's languages."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.app.test_languages import ZH


def test_the_admin_menu_names_the_security_page_model_permissions(
    browser: TestClient,
) -> None:
    page = browser.get("/projects").text
    assert re.search(r'<a href="/admin/models">Model permissions</a>', page)
    assert re.search(
        r'<a href="/admin/models">模型权限</a>', browser.get("/projects", headers=ZH).text
    )


def test_the_catalog_api_says_which_models_speak_chinese(api: TestClient) -> None:
    models = {m["name"]: m for m in api.get("/models").json()}
    assert models["qwen3-0.6b"]["chinese"] and "zh" in models["qwen3-0.6b"]["languages"]
    assert models["smollm2-135m-instruct"]["languages"] == ["en"]
    assert not models["smollm2-135m-instruct"]["chinese"]
