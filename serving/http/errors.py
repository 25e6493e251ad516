"""Every error as application/problem+json (RFC 9457), and a 4xx for every bad input: FastAPI's validation errors,
Starlette's HTTP errors, the search layer's BadRequest (with the allowed values), the studio's refusals; a search
index not loadable yet is a 503; anything unexpected is logged with its traceback and answered as a 500 problem
that carries none."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.http.schemas import Problem
from serving.search.live import IndexNotReady
from serving.search.requests import BadRequest

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
          413: "Content too large", 415: "Unsupported media type", 422: "Unprocessable content",
          500: "Internal server error", 503: "Service unavailable"}
DESCRIPTIONS = {400: "the body could not be parsed (broken multipart, form or JSON bytes)",
                401: "a bearer token is needed (ZOO_API_TOKEN) and was missing or wrong",
                404: "no such resource (or not served: NSFW, deleted, above the content level)",
                409: "the job has no image (yet)", 413: "the body or image is larger than the server takes",
                422: "a parameter the server cannot take (the problem names it, and the allowed values)",
                503: "not available on this server now (the studio's models, the reranker or the index)"}


class ProblemError(Exception):
    """An error answered as a problem: status, detail, and optionally the allowed values and extra headers."""

    def __init__(self, status: int, detail: str, *, allowed: dict[str, list[str]] | None = None,
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.allowed = status, detail, allowed
        self.errors, self.headers = errors or [], headers


def problem_response(request: Request, status: int, detail: str, *, allowed: dict | None = None,
                     errors: list[dict] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail, instance=request.url.path,
                   allowed=allowed, errors=errors or [])
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers,
                        media_type=PROBLEM_TYPE)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses a route declares in OpenAPI."""
    return {status: {"model": Problem, "description": DESCRIPTIONS.get(status, TITLES[status])}
            for status in statuses}


def _validation_errors(error: RequestValidationError) -> list[dict]:
    return [{"where": ".".join(str(part) for part in item.get("loc", ())), "why": str(item.get("msg", ""))}
            for item in error.errors()]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, error: ProblemError) -> JSONResponse:
        return problem_response(request, error.status, error.detail, allowed=error.allowed, errors=error.errors,
                                headers=error.headers)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, error: BadRequest) -> JSONResponse:
        allowed = {error.field: error.allowed} if error.allowed else None
        return problem_response(request, 422, str(error), allowed=allowed,
                                errors=[{"where": error.field, "why": str(error)}])

    @app.exception_handler(IndexNotReady)
    async def _not_ready(request: Request, error: IndexNotReady) -> JSONResponse:
        return problem_response(request, 503, f"the search index is not ready: {error}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(error)
        detail = "; ".join(f"{item['where']}: {item['why']}" for item in errors[:5]) or "invalid request"
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem_response(request, error.status_code, str(error.detail), headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return problem_response(request, 500, "the server failed to answer this request; it has been logged")
