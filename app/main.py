"""The FastAPI application: the JSON API under /api/v1 and the server-rendered pages."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api.routes import datasets, jobs, projects
from app.core.config import PROJECT_ROOT
from app.core.errors import TunelabError
from app.web import pages

log = logging.getLogger(__name__)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="tunelab",
        summary="Fine-tune open LLMs into specialists, measured against a prompting baseline.",
        version="0.1.0",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    api_prefix = "/api/v1"
    for module in (projects, datasets, jobs):
        app.include_router(module.router, prefix=api_prefix)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "static"), name="static")

    @app.exception_handler(TunelabError)
    async def _domain_error(request: Request, exc: TunelabError) -> Response:
        if _wants_html(request):
            return pages.error_page(request, exc.status_code, exc.message, exc.errors)
        return JSONResponse(exc.body(), status_code=exc.status_code)

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
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = "something went wrong on the server; the error was logged"
        if _wants_html(request):
            return pages.error_page(request, 500, message, [])
        return JSONResponse({"detail": message, "code": "internal_error"}, status_code=500)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
