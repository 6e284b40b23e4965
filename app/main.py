"""The FastAPI application: the JSON API under /api/v1 and the server-rendered pages."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from app.api.deps import Public
from app.api.routes import (
    accounts,
    catalog,
    datasets,
    deploy,
    estimates,
    evaluations,
    jobs,
    openai_compat,
    openai_files,
    openai_fine_tuning,
    projects,
    reviews,
    uploads,
    workers,
)
from app.core.config import get_settings
from app.core.db import serve_on_this_loop
from app.core.errors import TunelabError, Unauthorized
from app.core.i18n import LOCALE_COOKIE, LocaleMiddleware, choose, using_locale
from app.core.messages import translated_body
from app.core.paths import STATIC_DIR
from app.core.security_headers import (
    CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    SecurityHeadersMiddleware,
)
from app.web import (
    auth_pages,
    data_pages,
    deploy_pages,
    evaluation_pages,
    pages,
    review_pages,
)
from app.web.rendering import error_page

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # The routes' database work runs on this pool of threads; the database pool is sized to
    # match (app.core.db.make_engine).
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().web_threads
    serve_on_this_loop()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="tunelab",
        summary="Fine-tune open LLMs into specialists, measured against a prompting baseline.",
        version="0.1.0",
        # The docs page is served below from vendored Swagger UI files, so it works offline.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.add_middleware(SecurityHeadersMiddleware, docs_policies={"/docs": CONTENT_SECURITY_POLICY})
    # Outermost: the language is known before anything (the error handlers too) speaks.
    app.add_middleware(LocaleMiddleware)
    api_prefix = "/api/v1"
    for module in (
        projects,
        uploads,
        datasets,
        jobs,
        evaluations,
        reviews,
        deploy,
        estimates,
        catalog,
        accounts,
        workers,
    ):
        app.include_router(module.router, prefix=api_prefix)
    app.include_router(openai_compat.router)
    app.include_router(openai_files.router)
    app.include_router(openai_fine_tuning.router)
    app.include_router(pages.router)
    app.include_router(data_pages.router)
    app.include_router(evaluation_pages.router)
    app.include_router(review_pages.router)
    app.include_router(deploy_pages.router)
    app.include_router(auth_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(TunelabError)
    async def _domain_error(request: Request, exc: TunelabError) -> Response:
        if _wants_html(request):
            if isinstance(exc, Unauthorized):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return error_page(request, exc.status_code, exc.message, exc.errors)
        return JSONResponse(translated_body(exc.body()), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"] if p != "body") or None,
                "message": err["msg"],
                "line": None,
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        body = {
            "detail": f"the request is not valid: {summary}",
            "code": "invalid_input",
            "errors": errors,
            "error_count": len(errors),
        }
        return JSONResponse(translated_body(body), status_code=422)

    @app.exception_handler(SQLAlchemyTimeout)
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # The pool is exhausted or the database is restarting: a client that waits and tries
        # again succeeds, so say so instead of a 500.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        message = "the database is busy or restarting; try again in a few seconds"
        if _wants_html(request):
            response: Response = error_page(request, 503, message, [])
        else:
            response = JSONResponse(
                translated_body({"detail": message, "code": "unavailable"}), status_code=503
            )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = "something went wrong on the server; the error was logged"
        # Outside the middleware stack the request's language is gone: choose it again.
        principal = getattr(request.state, "principal", None)
        locale = choose(
            user=principal.viewer.locale if principal is not None else None,
            cookie=request.cookies.get(LOCALE_COOKIE),
            accept_language=request.headers.get("accept-language"),
        )
        with using_locale(locale):
            if _wants_html(request):
                response: Response = error_page(request, 500, message, [])
            else:
                response = JSONResponse(
                    translated_body({"detail": message, "code": "internal_error"}),
                    status_code=500,
                )
        # Starlette runs this handler outside the middleware stack, so the headers go on here.
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/docs", include_in_schema=False)
    def docs(_: Public) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="tunelab API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/healthz", tags=["meta"])
    def healthz(_: Public) -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
