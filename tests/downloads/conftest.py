"""A loopback HTTP server (127.0.0.1, a free port) standing in for the release hosts, and a cache per test.

Every catalog URL is pointed at it through AUDIOINTERP_MIRROR, so no test reaches the internet.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from audiointerp.downloads import fetching


@dataclass
class Route:
    """What the server answers on one path: `mode` ok | cut (announce the whole body, send half, close) |
    cut_once (cut on the first request, ok after) | 404 | html | slow (ok, sent in pieces over ~1 s)."""

    body: bytes = b""
    mode: str = "ok"
    hits: int = 0


@dataclass
class Server:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.port}/mirror"

    def serve(self, url_path: str, body: bytes = b"", mode: str = "ok") -> Route:
        """Answer `/mirror<url_path>` (the path of the catalog URL) as `mode` says."""
        route = Route(body, mode)
        self.routes["/mirror" + url_path] = route
        return route

    def hits(self) -> int:
        return sum(r.hits for r in self.routes.values())


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
            route = server.routes.get(self.path.split("?")[0])  # the query (e.g. ?download=1) is ignored
            if route is None or route.mode == "404":
                if route is not None:
                    route.hits += 1
                self.send_error(404, "Not Found")
                return
            route.hits += 1
            mode = route.mode
            if mode == "cut_once":
                mode = "cut" if route.hits == 1 else "ok"
            if mode == "busy_once" and route.hits == 1:  # 503 Service Unavailable, then the file
                self.send_error(503, "Service Unavailable")
                return
            if mode == "html":
                page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if mode == "cut":
                self.wfile.write(route.body[: len(route.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if mode == "slow":
                step = max(1, len(route.body) // 10)
                for start in range(0, len(route.body), step):
                    self.wfile.write(route.body[start:start + step])
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            self.wfile.write(route.body)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    """A loopback HTTP server on a free port, stopped after the test."""
    state = Server(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def caches(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Weights and data caches under tmp_path, downloads on, every URL mirrored to the loopback server, retries
    without pauses, and an empty Hugging Face cache."""
    weights, data = tmp_path / "weights", tmp_path / "data"
    monkeypatch.setenv("AUDIOINTERP_WEIGHTS", str(weights))
    monkeypatch.setenv("AUDIOINTERP_DATA", str(data))
    monkeypatch.setenv("AUDIOINTERP_MIRROR", server.mirror)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("AUDIOINTERP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(fetching, "RETRY_PAUSE_S", 0.01)
    return {"weights": weights, "data": data}

