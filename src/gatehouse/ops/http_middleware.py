"""The frame of Gatehouse's pure ASGI middlewares: HTTP requests only, the response's status watched."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HTTPMiddleware:
    """Pure ASGI (streams pass through untouched): ``handle`` sees each HTTP request; anything
    else (lifespan, websocket) goes straight to the app."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ResponseStatus:
    """Passes a response on through ``send`` and keeps its ``code``: 500 until the response
    starts (an app that fails first answers 500); ``on_start`` may add headers to the start.
    ``ended_at``: when the last body chunk was sent (``perf_counter``), before any background
    work the app does after it."""

    def __init__(self, send: Send, on_start: Callable[[Message], None] | None = None):
        self.code = 500
        self.ended_at: float | None = None
        self._send = send
        self._on_start = on_start

    def seconds_since(self, started: float) -> float:
        return (self.ended_at if self.ended_at is not None else time.perf_counter()) - started

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
            if self._on_start is not None:
                self._on_start(message)
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended_at = time.perf_counter()
