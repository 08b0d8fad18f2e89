"""A FAKE Home Assistant for tests: only ``POST /api/services/<domain>/<service>``.

Not Home Assistant: a few lines of FastAPI that record each service call and check the
long-lived token the way Home Assistant does (``Authorization: Bearer <token>``, 401 otherwise).
Served by uvicorn on a free loopback port with :func:`xiaozhi_runtime.asgi.serve_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from xiaozhi_runtime.asgi import serve_app

__all__ = ["FakeHomeAssistant", "ServiceCall"]


@dataclass(frozen=True, slots=True)
class ServiceCall:
    domain: str
    service: str
    body: dict[str, Any]
    authorized: bool


class FakeHomeAssistant:
    """Records service calls; ``token`` is the only long-lived token it accepts."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[ServiceCall] = []
        self.url = ""
        self._changed = asyncio.Event()
        app = FastAPI()

        @app.post("/api/services/{domain}/{service}")
        async def call_service(domain: str, service: str, request: Request) -> JSONResponse:
            authorized = request.headers.get("authorization") == f"Bearer {self.token}"
            body = await request.json()
            self.calls.append(ServiceCall(domain, service, body, authorized))
            self._changed.set()
            if not authorized:
                return JSONResponse({"message": "Unauthorized"}, status_code=401)
            return JSONResponse([])  # Home Assistant answers with the states that changed

        self.app = app

    async def wait_for_calls(self, count: int, within: float = 10.0) -> list[ServiceCall]:
        async def _wait() -> None:
            while len(self.calls) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), within)
        return self.calls

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeHomeAssistant]:
        async with serve_app(self.app, host="127.0.0.1", port=0) as served:
            self.url = served.url
            yield self
