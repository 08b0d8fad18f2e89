"""Serving an ASGI app in this event loop (xiaozhi_runtime.asgi): ready on return, a taken
port raised to the caller, a failed startup reported, stopped when the block exits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from xiaozhi.errors import StartupError
from xiaozhi_runtime.asgi import AddressInUse, ServedApp, serve_app


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def test_the_app_answers_once_serve_app_returns() -> None:
    async with serve_app(hello_app()) as served:
        assert served.port > 0
        assert served.url == f"http://127.0.0.1:{served.port}"
        async with httpx.AsyncClient(base_url=served.url) as http:
            assert (await http.get("/hello")).json() == {"hello": "world"}
    with pytest.raises(httpx.ConnectError):  # stopped with the block
        async with httpx.AsyncClient(base_url=served.url) as http:
            await http.get("/hello")


async def test_a_taken_port_is_an_oserror_naming_the_address_and_the_setting() -> None:
    async with serve_app(hello_app()) as served:
        with pytest.raises(OSError, match="in use") as info:
            async with serve_app(hello_app(), port=served.port, port_setting="XIAOZHI_X_PORT"):
                pass
    assert isinstance(info.value, AddressInUse)
    assert f"cannot listen on 127.0.0.1:{served.port}" in str(info.value)
    assert "set XIAOZHI_X_PORT to another port" in str(info.value)


async def test_a_failed_lifespan_is_a_startup_error() -> None:
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield  # pragma: no cover

    with pytest.raises(StartupError, match="did not start"):
        async with serve_app(FastAPI(lifespan=broken)):
            pass


def test_urls_of_wildcard_and_ipv6_hosts() -> None:
    server = None  # the URL needs no server
    assert ServedApp(server, "0.0.0.0", 80).url == "http://127.0.0.1:80"  # type: ignore[arg-type]
    assert ServedApp(server, "::1", 81).url == "http://[::1]:81"  # type: ignore[arg-type]
