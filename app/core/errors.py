"""Domain errors raised by services; one handler maps them to HTTP statuses and page messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with the input: where (line and/or field) and what to do."""

    message: str
    field: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TunelabError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        errors: list[FieldError] | None = None,
        error_count: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.error_count = error_count if error_count is not None else len(self.errors)
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
            body["error_count"] = self.error_count
        body.update(self.extra)
        return body


class Unauthorized(TunelabError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TunelabError):
    status_code = 403
    code = "forbidden"


class TooManyRequests(TunelabError):
    status_code = 429
    code = "too_many_requests"


class NotFound(TunelabError):
    status_code = 404
    code = "not_found"


class InvalidInput(TunelabError):
    status_code = 422
    code = "invalid_input"

    @classmethod
    def on(cls, field: str, message: str, *, detail: str | None = None) -> InvalidInput:
        """One field at fault; the detail reads "field: message" unless given."""
        return cls(
            detail if detail is not None else f"{field}: {message}",
            errors=[FieldError(field=field, message=message)],
        )

    @classmethod
    def from_validation(cls, exc: Any) -> InvalidInput:
        """A pydantic ValidationError, each problem with the field it is about."""
        errors = [
            FieldError(field=".".join(str(p) for p in e["loc"]) or None, message=e["msg"])
            for e in exc.errors()
        ]
        return cls(f"{errors[0].field or 'the request'}: {errors[0].message}", errors=errors)


class InvalidDataset(InvalidInput):
    code = "invalid_dataset"


class Conflict(TunelabError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(TunelabError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(TunelabError):
    status_code = 415
    code = "unsupported_media_type"
