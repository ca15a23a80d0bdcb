"""The sender (:mod:`distblob.notifications.sender`): an event stays queued until the endpoint
accepts it, retried past refusals as distribution's retrying sink, one event per envelope."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from distblob.config.notifications import Endpoint
from distblob.notifications.journal import MemoryQueue
from distblob.notifications.sender import Sender

pytestmark = pytest.mark.timeout(60)


def test_sender_retries_until_accepted_and_keeps_order() -> None:
    statuses = [500, 503, 404, 500, 200, 302, 200]  # the endpoint's answers, in turn
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append(json.loads(body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    queue = MemoryQueue("hook")
    for n in range(3):
        queue.append(json.dumps({"n": n}).encode())
    sender = Sender(Endpoint("hook", url, threshold=2, backoff=0.05), queue)

    async def deliver() -> None:
        task = asyncio.create_task(sender.run())
        while queue.pending:
            await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(deliver())
    finally:
        server.shutdown()
        server.server_close()
    # Four refusals of the first event, then each event once (a 302 counts as accepted).
    assert [b["events"][0]["n"] for b in bodies] == [0, 0, 0, 0, 0, 1, 2]
    assert all(len(b["events"]) == 1 for b in bodies)
    assert sender.failures == 0
