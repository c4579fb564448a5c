"""A local webhook receiver for the alert tests: the ``webhook`` fixture and the ``AlertWebhook`` pointed at it."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from aiq_pipelines.defs.resources import AlertWebhook


class Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[AlertWebhook, list[dict]]]:
    """A local webhook receiver and the AlertWebhook resource pointed at it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield AlertWebhook(url=f"http://127.0.0.1:{server.server_port}/hook", ui_url="http://dagster.local"), Receiver.posts
    finally:
        server.shutdown()
