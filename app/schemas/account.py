from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input

Scope = Literal["read", "write", "admin"]
RoleName = Literal["admin", "trainer", "reviewer"]


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    display_name: str
    role: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(Input):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: RoleName = "trainer"
    password: str | None = Field(default=None, min_length=10, max_length=1024)
    display_name: str = Field(default="", max_length=200)


class UserUpdate(Input):
    model_config = ConfigDict(extra="forbid")

    role: RoleName | None = None
    is_active: bool | None = None
    storage_quota_bytes: int | None = Field(default=None, ge=0)


class TokenCreate(Input):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default=["read"], min_length=1)
    expires_at: datetime | None = None


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="the secret, shown this once; store it now")


class MemberAdd(Input):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    actor_email: str
    action: str
    target: str
    ip: str
    details: dict[str, Any]


class ModelPermissionWrite(Input):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512)
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False


class ModelPermissionRead(ModelPermissionWrite):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: uuid.UUID
    created_at: datetime


class PasswordSet(Input):
    """One's own password; ``current_password`` is needed once a password is set."""

    model_config = ConfigDict(extra="forbid")

    new_password: str = Field(min_length=10, max_length=1024)
    current_password: str = Field(default="", max_length=1024)


class InviteCreate(Input):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: RoleName = "trainer"
    days: int = Field(default=7, ge=1, le=30)


class InviteCreated(BaseModel):
    """The one-time link, shown once: send it to the person invited."""

    user: UserRead
    link: str
    expires_at: datetime
