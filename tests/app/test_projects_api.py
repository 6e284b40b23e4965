from __future__ import annotations

import uuid

import httpx
from fastapi.testclient import TestClient

from tests.factories import create_project


def test_create_project_returns_201_with_id_and_the_goal(api: httpx.Client) -> None:
    project = create_project(
        api, domain="客服", success_criteria=["rougeL >= 0.40"], task_description="回答客户问题"
    )
    assert uuid.UUID(project["id"])
    fetched = api.get(f"/projects/{project['id']}").json()
    assert fetched["domain"] == "客服"
    assert fetched["success_criteria"] == ["rougeL >= 0.40"]


def test_project_list_is_paginated_newest_first(api: httpx.Client) -> None:
    ids = [create_project(api, name=f"p{i}")["id"] for i in range(3)]
    page = api.get("/projects", params={"limit": 2, "offset": 0}).json()
    assert page["limit"] == 2 and page["total"] >= 3
    assert [p["id"] for p in page["items"]] == ids[::-1][:2]
    second = api.get("/projects", params={"limit": 2, "offset": 2}).json()
    assert ids[0] in [p["id"] for p in second["items"]]


def test_project_without_a_name_is_refused_naming_the_field(api: httpx.Client) -> None:
    response = api.post("/projects", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "name"


def test_unknown_project_is_404(api: httpx.Client) -> None:
    response = api.get(f"/projects/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["detail"] == "project not found"


def test_openapi_documents_the_upload_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/projects/{project_id}/datasets"]["post"]["requestBody"]
    assert "file" in body["content"]["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_deleting_a_project_removes_it_and_is_audited(api: httpx.Client) -> None:
    project = create_project(api, name="to delete")
    assert api.delete(f"/projects/{project['id']}").status_code == 204
    assert api.get(f"/projects/{project['id']}").status_code == 404
    assert api.delete(f"/projects/{project['id']}").status_code == 404
    events = api.get("/audit", params={"action": "project.deleted"}).json()["items"]
    assert events[0]["target"] == f"project {project['id']}"
