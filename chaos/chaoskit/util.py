"""Small helpers shared by the suite: logging, commands, ports, paths."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CHAOS = Path(__file__).resolve().parents[1]
ROOT = CHAOS.parent
TESTS_DEPLOY = ROOT / "tests" / "deploy"
CACHE = Path(os.environ.get("CHAOS_CACHE", "/var/tmp/hubbub-chaos"))

# The deployment tests' verifier (publishers, EventSource-like subscribers) is reused as is.
if str(TESTS_DEPLOY) not in sys.path:
    sys.path.insert(0, str(TESTS_DEPLOY))

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[chaos {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def run(argv: list[str], check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
