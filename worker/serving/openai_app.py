"""An OpenAI-compatible HTTP API over a ServingEngine: models, chat completions, completions.

Streaming answers are server-sent events shaped like OpenAI's (``data: {chunk}`` lines, then
``data: [DONE]``); errors use OpenAI's ``{"error": {...}}`` body so its clients report them.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.serving.engine import (
    Delta,
    EngineClosed,
    InvalidRequest,
    SamplingParams,
    ServingEngine,
    UnknownModel,
)

Kind = Literal["chat", "text"]


class ApiError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# --- Request bodies (fields this server does not use are accepted and ignored) --------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


# --- The app --------------------------------------------------------------------------------


def make_app(engine: ServingEngine, *, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` under /v1; ``api_key`` makes a bearer key required."""
    app = FastAPI(title="tunelab model server", docs_url=None, redoc_url=None)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_require_key(api_key))])

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        created = int(time.time())
        models = [
            {"id": name, "object": "model", "created": created, "owned_by": "tunelab"}
            for name in engine.model_names()
        ]
        return {"object": "list", "data": models}

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest) -> Response:
        messages = [{"role": m.role, "content": _text_content(m)} for m in body.messages]
        params = _sampling(body, body.max_completion_tokens or body.max_tokens)
        return await _answer(engine, "chat", body, messages, None, params)

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Response:
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "Send one prompt per request.", param="prompt")
            prompt = prompt[0]
        params = _sampling(body, body.max_tokens)
        return await _answer(engine, "text", body, None, prompt, params)

    app.include_router(router)
    _add_error_handlers(app)
    return app


def _require_key(api_key: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), api_key.encode()
        ):
            raise ApiError(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )

    return check


def _text_content(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, "Only text message content is supported.", param="messages")
        texts.append(part["text"])
    return "".join(texts)


def _sampling(body: _Sampling, max_tokens: int | None) -> SamplingParams:
    if body.n not in (None, 1):
        raise ApiError(400, "Only n=1 is supported; send separate requests.", param="n")
    values: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "stop": [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        "seed": body.seed,
    }
    if max_tokens is not None:
        values["max_tokens"] = max_tokens
    try:
        return SamplingParams(**values)
    except ValidationError as exc:
        raise ApiError(400, _validation_message(exc.errors())) from exc


async def _answer(
    engine: ServingEngine,
    kind: Kind,
    body: _Sampling,
    messages: list[dict[str, str]] | None,
    prompt: str | None,
    params: SamplingParams,
) -> Response:
    deltas = engine.stream(body.model, messages, prompt, params)
    # The first delta is awaited here, so a refused request gets its status code rather than
    # a stream that starts with 200 and then fails.
    try:
        first = await anext(deltas)
    except UnknownModel as exc:
        raise ApiError(404, exc.message, param="model", code="model_not_found") from exc
    except InvalidRequest as exc:
        raise ApiError(400, str(exc)) from exc
    except EngineClosed as exc:
        raise ApiError(503, str(exc), type_="server_error") from exc
    reply = _Reply(kind, body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _events(reply, first, deltas, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    last, parts = first, [first.text]
    async for delta in deltas:
        last = delta
        parts.append(delta.text)
    return JSONResponse(reply.whole("".join(parts), last))


class _Reply:
    """Builds the response objects of one answer, chat or text, streamed or whole."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind, self.model = kind, model
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, delta: Delta, *, first: bool = False) -> dict[str, Any]:
        if self.kind == "text":
            choice = {"index": 0, "text": delta.text, "logprobs": None}
            return self._envelope("text_completion", [choice | _reason(delta)])
        content: dict[str, Any] = {"role": "assistant"} if first else {}
        if delta.text or first:
            content["content"] = delta.text
        choice = {"index": 0, "delta": content, "logprobs": None}
        return self._envelope("chat.completion.chunk", [choice | _reason(delta)])

    def usage_chunk(self, delta: Delta) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._envelope(obj, []) | {"usage": _usage(delta)}

    def whole(self, text: str, last: Delta) -> dict[str, Any]:
        if self.kind == "text":
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None}
            obj = "text_completion"
        else:
            message = {"role": "assistant", "content": text}
            choice, obj = {"index": 0, "message": message, "logprobs": None}, "chat.completion"
        return self._envelope(obj, [choice | _reason(last)]) | {"usage": _usage(last)}


def _reason(delta: Delta) -> dict[str, Any]:
    return {"finish_reason": delta.finish_reason}


def _usage(delta: Delta) -> dict[str, int]:
    return {
        "prompt_tokens": delta.prompt_tokens,
        "completion_tokens": delta.completion_tokens,
        "total_tokens": delta.prompt_tokens + delta.completion_tokens,
    }


async def _events(
    reply: _Reply, first: Delta, rest: AsyncIterator[Delta], include_usage: bool
) -> AsyncIterator[str]:
    last = first
    try:
        yield _event(reply.chunk(first, first=True))
        async for delta in rest:
            last = delta
            yield _event(reply.chunk(delta))
    except Exception as exc:  # the status line is sent: the error travels as an event
        yield _event(ApiError(500, str(exc), type_="server_error").body())
        return
    if include_usage:
        yield _event(reply.usage_chunk(last))
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# --- Errors ---------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def invalid_body(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        param = _location(errors[0]) if errors else None
        error = ApiError(400, _validation_message(errors), param=param)
        return JSONResponse(error.body(), status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = ApiError(exc.status_code, str(exc.detail))
        return JSONResponse(error.body(), status_code=exc.status_code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        error = ApiError(500, f"The model server failed: {exc}", type_="server_error")
        return JSONResponse(error.body(), status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _location(error: Any) -> str:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body")


def _validation_message(errors: list[Any]) -> str:
    parts = [f"{_location(e) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    return "Invalid request: " + "; ".join(parts)
