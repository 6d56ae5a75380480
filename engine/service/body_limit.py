"""Request bodies are capped: the API takes small JSON objects, never megabytes.

A pure ASGI middleware, so nothing downstream ever holds more than the cap: a body announced
larger is refused before it is read, a chunked one as soon as it passes the cap.
"""

from __future__ import annotations

import json

from engine.service.error_kinds import TOO_LARGE

MAX_BODY_BYTES = 1 << 20  # 1 MB: a job with 1000 prompt regions is well under 200 KB
# A refused body up to this size is read and dropped before the answer, so an ordinary client
# (which sends it all before reading) gets the 413 rather than a reset connection; larger
# ones are answered at once and the connection closed.
DRAIN_BYTES = 16 << 20


class BodyLimit:
    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                announced = self.limit + 1
            if announced > self.limit:
                if announced <= DRAIN_BYTES:
                    await self._drain(receive)
                await self._refuse(send)
                return
        elif b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body at all
            return
        # Read it all now (at most the cap), then hand it on as one message.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)

    async def _drain(self, receive, size: int = 0) -> None:
        while size <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send) -> None:
        body = json.dumps({
            "detail": f"the request body is larger than {self.limit // (1 << 20)} MB; job "
                      "requests are small JSON objects (send raster paths, not raster data)",
            "error_kind": TOO_LARGE,
        }).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then=None):
    """A ``receive`` that gives ``messages`` first, then whatever ``then`` gives (a later
    disconnect)."""
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
