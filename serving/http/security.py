"""Who may call what: an optional bearer token (ZOO_API_TOKEN) guards the routes that spend GPU time (generate,
edit), and the browser origins allowed to call the API (ZOO_CORS_ORIGINS). Search and the catalogue stay open."""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.http.errors import ProblemError
from serving.http.state import ServerState, server

bearer = HTTPBearer(auto_error=False, description="ZOO_API_TOKEN, when the server sets one")


def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                  state: ServerState = Depends(server)) -> None:
    """401 unless the request carries the server's token (no check when the server sets none)."""
    token = state.settings.api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ProblemError(401, "this server needs `Authorization: Bearer <ZOO_API_TOKEN>` to generate or edit",
                           headers={"WWW-Authenticate": "Bearer"})


def allow_origins(app: FastAPI, origins: tuple[str, ...]) -> None:
    """CORS for the configured origins (none: browsers on other origins cannot call the API)."""
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Location"],
                           allow_credentials=False)
