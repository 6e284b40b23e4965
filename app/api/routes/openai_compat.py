"""tunelab's OpenAI-compatible surface: `/v1/models`, `/v1/chat/completions` and
`/v1/completions`, with tunelab's tokens. Each request goes to the worker serving its model
(never a model in this process), streamed back as it comes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.api.deps import CurrentReader, SessionDep, SettingsDep, in_thread, make_router
from app.core.config import Settings
from app.services import deployments
from app.services.openai_compat import serving
from app.services.openai_compat.errors import OpenAIError

router = make_router(prefix="/v1", tags=["openai-compatible"])
# Generation can take minutes; only connecting must be quick.
UPSTREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)


def openai_error(status: int, message: str, *, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status_code=status,
    )


@router.get("/models")
def list_models(session: SessionDep, me: CurrentReader) -> dict[str, Any]:
    """Every model of the running deployments you can see, and every fine-tuned model of the
    fine-tuning API (`ft:…`, deployed or not) with its owner."""
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "tunelab"}
        for deployment in deployments.running(session, user=me.user)
        for name in deployments.served_names(deployment)
    ]
    return {"object": "list", "data": data + serving.listed(session, me.user)}


async def _fine_tuned(
    session: SessionDep, settings: Settings, me: Any, model: str
) -> str | JSONResponse:
    """The deployment model name serving a fine-tuned model's `ft:` name; with auto-deploy,
    deployed first (waiting up to its timeout); otherwise OpenAI's error object."""
    try:
        target = await in_thread(session, serving.resolve, session, me.user, model)
        if target.served_as is not None:
            return target.served_as
        if not settings.auto_deploy:
            raise serving.not_deployed(target)

        def start() -> serving.Target:
            try:
                started = serving.start_deployment(
                    session, settings=settings, user=me.user, target=target
                )
                session.commit()
            except BaseException:
                session.rollback()
                raise
            assert started.deployment_id is not None
            deployment = deployments.deployment_for(session, me.user, started.deployment_id)
            if deployment.status == "starting" and deployment.worker is None:
                deployments.offer(session, deployment=deployment)
            return started

        started = await in_thread(session, start)
        assert started.deployment_id is not None
        deadline = serving.deadline(settings)
        while time.monotonic() < deadline:
            name = await in_thread(session, serving.served_name, session, started.deployment_id)
            if name is not None:
                return name
            await asyncio.sleep(1.0)
        link = f"/projects/{target.project_id}/deployments"
        raise OpenAIError(
            504,
            f"the model is still being deployed after {settings.auto_deploy_timeout:.0f} s; "
            f"try again shortly (progress: {link})",
            kind="server_error",
            code="deployment_timeout",
            extra={"deployment_url": link},
        )
    except OpenAIError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)


async def _forward(
    request: Request, session: SessionDep, settings: Settings, me: Any, path: str
) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return openai_error(400, "the body must be JSON", kind="invalid_request_error")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return openai_error(400, "name the `model`", kind="invalid_request_error", param="model")
    rename: tuple[bytes, bytes] | None = None
    if body["model"].startswith("ft:"):
        served = await _fine_tuned(session, settings, me, body["model"])
        if isinstance(served, Response):
            return served
        # The answer names the model as it was asked for, as OpenAI's does.
        rename = (json.dumps(served).encode(), json.dumps(body["model"]).encode())
        body["model"] = served
    found = await in_thread(
        session, deployments.running_for_model, session, user=me.user, model=body["model"]
    )
    if found is None:
        return openai_error(
            404,
            f"no running deployment serves the model {body['model']!r}; GET /v1/models lists them",
            kind="invalid_request_error",
            param="model",
        )
    deployment, _ = found
    # in_thread gave the connection back: none is held while the model answers.
    url, key = f"{deployment.url}/v1/{path}", deployment.api_key
    client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
    try:
        upstream = await client.send(
            client.build_request(
                "POST", url, json=body, headers={"Authorization": f"Bearer {key}"}
            ),
            stream=True,
        )
    except httpx.HTTPError:
        await client.aclose()
        return openai_error(
            503, "the worker serving this model cannot be reached", kind="server_error"
        )

    async def relay() -> AsyncIterator[bytes]:
        try:
            if rename is None or upstream.headers.get("content-encoding"):
                async for chunk in upstream.aiter_raw():
                    yield chunk
            else:
                async for chunk in _renamed(upstream.aiter_raw(), *rename):
                    yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    return StreamingResponse(
        relay(),
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _renamed(chunks: AsyncIterator[bytes], old: bytes, new: bytes) -> AsyncIterator[bytes]:
    """The body with the JSON string ``old`` written ``new``: each server-sent event as soon
    as it is whole (so a stream stays a stream), a plain JSON body at its end."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        end = pending.rfind(b"\n\n")
        if end >= 0:
            yield pending[: end + 2].replace(old, new)
            pending = pending[end + 2 :]
    if pending:
        yield pending.replace(old, new)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> Response:
    """OpenAI's chat completions, streamed (server-sent events) when `stream` is true."""
    return await _forward(request, session, settings, me, "chat/completions")


@router.post("/completions", response_model=None)
async def completions(
    request: Request, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> Response:
    """OpenAI's (legacy) text completions, streamed when `stream` is true."""
    return await _forward(request, session, settings, me, "completions")
