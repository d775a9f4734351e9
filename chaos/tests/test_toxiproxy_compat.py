"""Toxiproxy compatibility of chaosproxy: the `toxiproxy-python` client from PyPI
drives it, and an echo server behind it shows that each toxic does what
Toxiproxy's documentation says. Everything on 127.0.0.1.

    CHAOSPROXY_BIN=/path/to/chaosproxy python3 -m pytest -q chaos/tests
(chaos/run builds the binary and runs this before the scenarios.)
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

toxiproxy = pytest.importorskip("toxiproxy", reason="pip install toxiproxy-python")
from toxiproxy import Toxiproxy  # noqa: E402
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists  # noqa: E402

BIN = os.environ.get("CHAOSPROXY_BIN", "/var/tmp/hubbub-chaos/target/release/chaosproxy")


def start_chaosproxy() -> tuple[subprocess.Popen, int]:
    """chaosproxy with its API on 127.0.0.1:0; the port comes from its `API on ADDR` line
    (nothing is guessed free, so nothing can take it in between)."""
    proc = subprocess.Popen([BIN, "-host", "127.0.0.1", "-port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def drain():  # keeps reading so that the pipe never fills
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, "chaosproxy exited"
        remaining = deadline - time.monotonic()
        assert remaining > 0, "chaosproxy did not say where its API listens"
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        found = re.search(r"API on \S*:(\d+)", line)
        if found:
            return proc, int(found.group(1))


class Echo(threading.Thread):
    """A TCP echo server on 127.0.0.1."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c: socket.socket):
        with c:
            while True:
                try:
                    b = c.recv(65536)
                except OSError:
                    return
                if not b:
                    return
                try:
                    c.sendall(b)
                except OSError:
                    return


@pytest.fixture(scope="module")
def server():
    if not Path(BIN).exists():
        pytest.fail(f"no chaosproxy binary at {BIN} (chaos/run builds it; or set CHAOSPROXY_BIN)")
    proc, port = start_chaosproxy()
    t = Toxiproxy()
    t.update_api_consumer("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not t.running():
        assert proc.poll() is None, "chaosproxy exited"
        assert time.monotonic() < deadline, "chaosproxy API did not come up"
        time.sleep(0.05)
    echo = Echo()
    echo.start()
    yield t, echo
    proc.terminate()
    proc.wait(timeout=10)
    echo.sock.close()


def roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> tuple[bytes, float]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            b = s.recv(65536)
            if not b:
                break
            got += b
    return got, time.monotonic() - t0


def listen_port(proxy) -> int:
    return int(proxy.listen.rsplit(":", 1)[1])


def test_version_and_proxy_lifecycle(server):
    t, echo = server
    assert b"version" in t.version() or t.version()
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="lifecycle", listen="127.0.0.1:0")
    port = listen_port(p)
    assert port > 0
    assert "lifecycle" in t.proxies()
    assert t.get_proxy("lifecycle").upstream == f"127.0.0.1:{echo.port}"
    assert roundtrip(port)[0] == b"ping"
    with pytest.raises(ProxyExists):
        t.create(upstream=f"127.0.0.1:{echo.port}", name="lifecycle")
    with p.down():
        with pytest.raises(OSError):
            roundtrip(port, timeout=1)
    assert roundtrip(port)[0] == b"ping"
    assert t.destroy(p)
    assert t.get_proxy("lifecycle") is None


def test_populate_reset_and_errors(server):
    t, echo = server
    made = t.populate([{"name": f"pop{i}", "upstream": f"127.0.0.1:{echo.port}", "listen": "127.0.0.1:0"}
                       for i in range(2)])
    assert {p.name for p in made} == {"pop0", "pop1"}
    # Port 0 became the bound port (as Toxiproxy): the same spec again changes nothing.
    port0 = listen_port(t.get_proxy("pop0"))
    assert t.populate([{"name": "pop0", "upstream": f"127.0.0.1:{echo.port}", "listen": f"127.0.0.1:{port0}"}]) == []
    p0 = t.get_proxy("pop0")
    p0.add_toxic(type="latency", attributes={"latency": 300})
    p0.disable()
    with pytest.raises(InvalidToxic):
        p0.add_toxic(type="no_such_toxic")
    with pytest.raises(NotFound):
        t.get_proxy("pop1").destroy_toxic("missing")
    t.reset()
    p0 = t.get_proxy("pop0")
    assert p0.enabled and p0.toxics() == {}
    assert roundtrip(port0)[1] < 0.25
    for p in t.proxies().values():
        t.destroy(p)


def test_latency_with_jitter(server):
    t, echo = server
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="latency")
    port = listen_port(p)
    base = min(roundtrip(port)[1] for _ in range(3))
    p.add_toxic(type="latency", stream="upstream", attributes={"latency": 200, "jitter": 50})
    toxics = p.toxics()
    assert toxics["latency_upstream"].attributes == {"latency": 200, "jitter": 50}
    rtts = [roundtrip(port)[1] for _ in range(4)]
    assert all(0.14 <= r < 0.5 for r in rtts), rtts
    p.destroy_toxic("latency_upstream")
    assert roundtrip(port)[1] < base + 0.1
    t.destroy(p)


def test_timeout_drops_data_then_closes(server):
    t, echo = server
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="timeout")
    with socket.create_connection(("127.0.0.1", listen_port(p)), timeout=5) as s:
        s.sendall(b"a")
        assert s.recv(10) == b"a"
        p.add_toxic(type="timeout", attributes={"timeout": 300})  # applies to the live connection
        t0 = time.monotonic()
        s.sendall(b"b")
        got = s.recv(10)  # nothing comes back; closed after ~300 ms
        assert got == b""
        assert 0.2 < time.monotonic() - t0 < 2
    t.destroy(p)


def test_reset_peer_sends_rst(server):
    t, echo = server
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="reset")
    p.add_toxic(type="reset_peer", attributes={"timeout": 200})
    with socket.create_connection(("127.0.0.1", listen_port(p)), timeout=5) as s:
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            while True:
                s.sendall(b"x")
                if not s.recv(10):
                    break
                time.sleep(0.02)
        assert 0.15 < time.monotonic() - t0 < 2
    t.destroy(p)


def test_slicer_bandwidth_and_limit_data(server):
    t, echo = server
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="shape")
    port = listen_port(p)
    payload = os.urandom(20_000)
    p.add_toxic(type="slicer", name="slices", attributes={"average_size": 64, "size_variation": 32, "delay": 10})
    assert roundtrip(port, payload)[0] == payload
    p.destroy_toxic("slices")
    p.add_toxic(type="bandwidth", name="bw", stream="downstream", attributes={"rate": 40})  # 40 KB/s
    got, secs = roundtrip(port, payload)
    assert got == payload and 0.35 < secs < 3, secs
    p.destroy_toxic("bw")
    p.add_toxic(type="limit_data", name="limit", attributes={"bytes": 1000})
    got, _ = roundtrip(port, payload)
    assert len(got) == 1000
    t.destroy(p)


def test_toxicity_zero_never_applies(server):
    t, echo = server
    p = t.create(upstream=f"127.0.0.1:{echo.port}", name="toxicity")
    p.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 1000})
    assert roundtrip(listen_port(p))[1] < 0.5
    t.destroy(p)
