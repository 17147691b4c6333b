"""Serve an ASGI app on a loopback port from a background thread, for tests that need a
real HTTP server (the CLI's and the HTTP transport's)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .fakes import FakeMerchantProcessor


class LiveServer:
    """`with LiveServer(make_app) as server: server.url` -- the app lives in its own loop."""

    def __init__(self, make_app: Callable[[], Awaitable[Any]]) -> None:
        self._make_app = make_app
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to the test thread
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        app = await self._make_app()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if task.done():
                await task
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self._ready.set()
        await task

    def call(self, coroutine: Awaitable[Any]) -> Any:
        """Run a coroutine in the server's loop (where its database lives)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)  # type: ignore[arg-type]

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the test server did not start")
        if self._error is not None:
            raise RuntimeError("the test server failed") from self._error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)
        time.sleep(0)


def processor_app(processor: FakeMerchantProcessor) -> FastAPI:
    """The fake processor's merchant API over HTTP."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def any_route(path: str, request: Request) -> Response:
        raw = await request.body()
        body = None
        if raw:
            import json

            body = json.loads(raw)
        answer = await processor.request(
            request.method,
            "/" + path,
            timeout_s=5,
            json_body=body,
            headers={"Authorization": request.headers.get("authorization", "")},
        )
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    return app
