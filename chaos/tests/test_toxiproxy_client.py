"""chaoskit's Toxiproxy client against a stand-in API (no chaosproxy binary needed).

    python3 -m pytest -q chaos/tests/test_toxiproxy_client.py
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

requests = pytest.importorskip("requests", reason="chaos/install-deps installs it")
from chaoskit import util  # noqa: E402,F401  (puts tests/deploy on sys.path)
from chaoskit.toxiproxy import Toxiproxy  # noqa: E402


class Version(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b'"2.9.0"'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def test_wait_up_retries_until_the_api_answers_and_gives_up_after_the_timeout():
    # Bound now, listening only later: until then connections are refused, and
    # the port stays ours (nothing is guessed free and taken in between).
    server = ThreadingHTTPServer(("127.0.0.1", 0), Version, bind_and_activate=False)
    server.server_bind()
    port = server.server_address[1]
    t = Toxiproxy(f"http://127.0.0.1:{port}", timeout=1.0)
    began = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        t.wait_up(timeout=0.3)
    assert time.monotonic() - began >= 0.3
    servers = []

    def serve_late():
        time.sleep(0.5)
        server.server_activate()
        servers.append(server)
        server.serve_forever()

    threading.Thread(target=serve_late, daemon=True).start()
    try:
        t.wait_up(timeout=10)
        assert t.version() == "2.9.0"
    finally:
        while not servers:
            time.sleep(0.05)
        servers[0].shutdown()
        servers[0].server_close()
