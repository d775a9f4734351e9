"""A small client of Toxiproxy's HTTP API (what chaosproxy and real Toxiproxy serve)."""

from __future__ import annotations

import time

import requests


class Toxiproxy:
    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()

    def _call(self, method: str, path: str, json=None, ok=(200, 201, 204)):
        r = self.http.request(method, self.url + path, json=json, timeout=self.timeout)
        if r.status_code not in ok:
            raise RuntimeError(f"toxiproxy {method} {path} -> {r.status_code}: {r.text.strip()}")
        return r.json() if r.content else None

    def version(self) -> str:
        return str(self._call("GET", "/version"))

    def wait_up(self, timeout: float = 30) -> None:
        """Until the API answers (it starts after the proxy process does); the last
        error once `timeout` s have passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.version()
                return
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def proxies(self) -> dict:
        return self._call("GET", "/proxies")

    def populate(self, proxies: list[dict]) -> dict:
        return self._call("POST", "/populate", proxies)

    def set_enabled(self, proxy: str, enabled: bool) -> dict:
        return self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def add_toxic(self, proxy: str, type: str, name: str | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, **attributes) -> dict:
        body = {"type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        if name:
            body["name"] = name
        return self._call("POST", f"/proxies/{proxy}/toxics", body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{proxy}/toxics")

    def reset(self) -> None:
        self._call("POST", "/reset")
