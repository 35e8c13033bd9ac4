"""Run an ASGI app under uvicorn in a background thread: for notebooks, benchmarks and
tests that talk to a real server in the same process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from govml.errors import GovmlError


@contextmanager
def serve_in_background(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_seconds: float = 60.0
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``port=0``: a free port)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="govml-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_seconds
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise GovmlError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(15)
