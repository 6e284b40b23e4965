"""OpenAI's error object, and tunelab's own errors said in it."""

from __future__ import annotations

from typing import Any

from app.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TunelabError,
    Unauthorized,
)


class OpenAIError(Exception):
    """An error the OpenAI-compatible routes answer as ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        errors: list[FieldError] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.errors = errors or []
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }
        if self.errors:
            # tunelab's own addition: every problem, with its line and field.
            error["errors"] = [e.as_dict() for e in self.errors]
        error.update(self.extra)
        return {"error": error}


def from_tunelab(exc: TunelabError, *, prefix: str = "") -> OpenAIError:
    """A tunelab service error as OpenAI's: its status, the field named as ``param``."""
    status = 400 if exc.status_code == 422 else exc.status_code
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        409: "invalid_request_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = {
        NotFound: "not_found",
        Conflict: "conflict",
        Forbidden: "permission_denied",
        Unauthorized: "invalid_api_key",
        PayloadTooLarge: "file_too_large",
    }.get(type(exc), exc.code)
    field = next((e.field for e in exc.errors if e.field), None)
    param = _param(field, prefix) if field else None
    return OpenAIError(status, exc.message, param=param, code=code, kind=kind, errors=exc.errors)


def _param(field: str, prefix: str) -> str:
    # A job's training config is its hyper-parameters in OpenAI's words.
    if field.startswith("config."):
        return prefix + field
    return field
