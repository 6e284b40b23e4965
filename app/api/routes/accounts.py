"""Who am I, API tokens, users and roles, project members, the audit log, model permissions."""

from __future__ import annotations

import uuid

from fastapi import Request

from app.api.deps import (
    CurrentAdmin,
    CurrentTrainer,
    CurrentUser,
    CurrentWriter,
    Limit,
    Offset,
    SessionDep,
    make_router,
)
from app.core.errors import Conflict
from app.models import Role
from app.schemas.account import (
    AuditEventRead,
    InviteCreate,
    InviteCreated,
    MemberAdd,
    ModelPermissionRead,
    ModelPermissionWrite,
    PasswordSet,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.schemas.common import Page
from app.services import access
from app.services.accounts import audit, credentials, invites
from app.services.accounts import users as accounts

router = make_router(tags=["accounts"])


@router.get("/me", response_model=UserRead)
def me(me: CurrentUser) -> UserRead:
    return UserRead.model_validate(me.user)


@router.put("/me/password", status_code=204)
def set_password(body: PasswordSet, session: SessionDep, me: CurrentWriter) -> None:
    """Set one's own password (then log in with it at /login); a password already set must be
    given as ``current_password``."""
    invites.set_password(
        session,
        user=me.user,
        new_password=body.new_password,
        current_password=body.current_password,
        ip=me.ip,
    )
    session.commit()


@router.post("/invites", status_code=201, response_model=InviteCreated)
def invite(
    body: InviteCreate, request: Request, session: SessionDep, me: CurrentAdmin
) -> InviteCreated:
    """Invite someone by a one-time link that expires after ``days`` days; audited."""
    made = invites.invite(
        session, email=body.email, role=Role(body.role), actor=me.user, ip=me.ip, days=body.days
    )
    session.commit()
    return InviteCreated(
        user=UserRead.model_validate(made.user),
        link=invites.link_for(str(request.base_url), made.secret),
        expires_at=made.expires_at,
    )


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(session: SessionDep, me: CurrentUser) -> list[TokenRead]:
    return [TokenRead.model_validate(t) for t in credentials.list_tokens(session, user=me.user)]


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, session: SessionDep, me: CurrentWriter) -> TokenCreated:
    """Create an API token for yourself, with at most the scopes of the credential you call
    with. The secret is in this response and nowhere else."""
    token, secret = credentials.create_token(
        session,
        user=me.user,
        name=body.name,
        scopes=list(body.scopes),
        granted=me.scopes,
        expires_at=body.expires_at,
        ip=me.ip,
    )
    session.commit()
    return TokenCreated.model_validate(
        {**TokenRead.model_validate(token).model_dump(), "token": secret}
    )


@router.post("/tokens/{token_id}/revoke", response_model=TokenRead)
def revoke_token(token_id: uuid.UUID, session: SessionDep, me: CurrentWriter) -> TokenRead:
    """Revoke one of your tokens; another user's needs an admin with the `admin` scope."""
    token = credentials.revoke_token(
        session, user=me.user, token_id=token_id, others=me.acts_as_admin, ip=me.ip
    )
    session.commit()
    return TokenRead.model_validate(token)


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, me: CurrentAdmin) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in accounts.list_users(session)]


@router.post("/users", status_code=201, response_model=UserRead)
def create_user(body: UserCreate, session: SessionDep, me: CurrentAdmin) -> UserRead:
    user = accounts.create_user(
        session,
        email=body.email,
        role=Role(body.role),
        password=body.password,
        display_name=body.display_name,
        actor=me.user,
    )
    session.commit()
    return UserRead.model_validate(user)


@router.patch("/users/{user_id}", response_model=UserRead)
def update_user(
    user_id: uuid.UUID, body: UserUpdate, session: SessionDep, me: CurrentAdmin
) -> UserRead:
    """Change a role, disable an account (which ends its sessions) or set a storage quota."""
    user = accounts.get_user(session, user_id=user_id)
    if user.id == me.user.id and (body.is_active is False or body.role not in (None, "admin")):
        raise Conflict("you cannot disable yourself or give up your own admin role")
    if body.role is not None and body.role != user.role:
        accounts.set_role(session, user=user, role=Role(body.role), actor=me.user)
        credentials.revoke_sessions(session, user=user, actor=me.user)
    if body.is_active is not None and body.is_active != user.is_active:
        user.is_active = body.is_active
        audit.record(
            session,
            action="user.enabled" if body.is_active else "user.disabled",
            actor=me.user,
            target=user.email,
            ip=me.ip,
        )
        if not body.is_active:
            credentials.revoke_sessions(session, user=user, actor=me.user)
    if body.storage_quota_bytes is not None:
        user.storage_quota_bytes = body.storage_quota_bytes
    session.commit()
    return UserRead.model_validate(user)


@router.get("/projects/{project_id}/members", response_model=list[UserRead])
def list_members(project_id: uuid.UUID, session: SessionDep, me: CurrentTrainer) -> list[UserRead]:
    project = access.project_for(session, me.user, project_id)
    return [UserRead.model_validate(u) for u in access.members(session, project=project)]


@router.post("/projects/{project_id}/members", status_code=201, response_model=UserRead)
def add_member(
    project_id: uuid.UUID, body: MemberAdd, session: SessionDep, me: CurrentTrainer
) -> UserRead:
    """Give another user access to a project you belong to."""
    project = access.project_for(session, me.user, project_id)
    user = accounts.find_user(session, email=body.email)
    access.add_member(session, project=project, user=user, actor=me.user)
    session.commit()
    return UserRead.model_validate(user)


@router.get("/audit", response_model=Page[AuditEventRead])
def list_audit_events(
    session: SessionDep,
    me: CurrentAdmin,
    limit: Limit = 50,
    offset: Offset = 0,
    action: str | None = None,
) -> Page[AuditEventRead]:
    rows, total = audit.list_events(session, limit=limit, offset=offset, action=action)
    return Page(
        items=[AuditEventRead.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/model-permissions", response_model=list[ModelPermissionRead])
def list_model_permissions(session: SessionDep, me: CurrentAdmin) -> list[ModelPermissionRead]:
    return [ModelPermissionRead.model_validate(r) for r in accounts.model_permissions(session)]


@router.put("/model-permissions", response_model=ModelPermissionRead)
def set_model_permission(
    body: ModelPermissionWrite, session: SessionDep, me: CurrentAdmin
) -> ModelPermissionRead:
    """Allow (or stop allowing) one named base model to run its own code or load pickles."""
    row = accounts.set_model_permission(
        session,
        model=body.model,
        trust_remote_code=body.trust_remote_code,
        allow_pickle_weights=body.allow_pickle_weights,
        actor=me.user,
        ip=me.ip,
    )
    session.commit()
    return ModelPermissionRead.model_validate(row)
