"""The largest body the API reads (ZOO_MAX_BODY_MB): refused before it is read when Content-Length says so, and cut
off while streaming when a chunked body grows past it, with a 413 problem either way. Images are further limited in
pixels (serving/http/uploads.py) so a small file cannot expand into a huge bitmap."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.http.schemas import Problem


class BodyLimit:
    """ASGI middleware: at most `max_bytes` of request body. A streamed body that grows past it raises a 413
    HTTPException from `receive`, inside the app, where the error handlers answer it as a problem."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (ZOO_MAX_BODY_MB)"

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = Problem(title="Content too large", status=413, instance=scope.get("path"), detail=self._detail())
        data = json.dumps(body.model_dump(mode="json", exclude_none=True)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
