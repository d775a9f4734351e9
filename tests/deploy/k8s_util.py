"""Helpers for tests/deploy/test_k8s.py: rendering k8s/, what the kubelet would do with the
StatefulSet's container spec (downward API, secretKeyRef, `$(VAR)` expansion, service links,
probes), `hubbub serve --help` parsing, HS256 tokens and a small SSE reader.

Pure functions (no Docker, no cluster) so that the checks can be tried on mutated manifests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

import verifier  # tests/deploy/verifier.py, next to this file

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"


# --------------------------------------------------------------------------- manifests


def kustomize(path: Path = K8S_DIR) -> list[dict]:
    """`kubectl kustomize <path>`: what `kubectl apply -k` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl")
    r = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def manifest_files(path: Path = K8S_DIR) -> list[Path]:
    """Every object file in k8s/ (what `kubectl apply -f k8s/` reads, minus kustomize's own file)."""
    return sorted(
        p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.name != "kustomization.yaml"
    )


def load_files(files: list[Path]) -> list[dict]:
    docs = []
    for f in files:
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def key(obj: dict) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected exactly one {kind} {name or ''} in the manifests, found {len(hits)}"
    return hits[0]


def hubbub_container(sts: dict) -> dict:
    containers = sts["spec"]["template"]["spec"]["containers"]
    hits = [c for c in containers if c["name"] == "hubbub"]
    assert len(hits) == 1, "the StatefulSet must have one container named hubbub"
    return hits[0]


def named_ports(container: dict) -> dict[str, dict]:
    return {p["name"]: p for p in container.get("ports", []) if "name" in p}


def resolve_port(container: dict, port) -> int:
    """A probe's or Service's port: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    ports = named_ports(container)
    assert port in ports, f"port {port!r} names no port of container {container['name']} (has {sorted(ports)})"
    return ports[port]["containerPort"]


# --------------------------------------------------------------------------- values

_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def quantity(q) -> float:
    """A Kubernetes resource quantity ("250m", "2", "2Gi") as a number (cores or bytes)."""
    m = _QUANTITY.match(str(q))
    assert m, f"cannot read quantity {q!r}"
    return float(m.group(1)) * _FACTORS[m.group(2)]


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")


def duration_s(text: str) -> float:
    """hubbub's durations: `500ms`, `40s`, `5m`, `1h` or bare seconds."""
    m = _DURATION.match(text)
    assert m, f"cannot read duration {text!r}"
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    assert host and port.isdigit(), f"{addr!r} is not host:port"
    return host, int(port)


# --------------------------------------------------------------------------- the kubelet's view

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (env values, command, args): `$(NAME)` becomes NAME's value
    when NAME is defined (earlier in the list, or by a service link), else stays as written;
    `$$` escapes a `$`."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, value)


def service_link_env(services: list[dict], namespace_ips: dict[str, str]) -> dict[str, str]:
    """The docker-links-style variables the kubelet injects for every Service of the namespace
    with a cluster IP (unless the pod sets enableServiceLinks: false)."""
    env: dict[str, str] = {}
    for svc in services:
        name = svc["metadata"]["name"]
        if svc["spec"].get("clusterIP") == "None":
            continue
        ip = namespace_ips[name]
        prefix = name.upper().replace("-", "_")
        ports = svc["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            if "name" in p:
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            base = f"{prefix}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
    return env


def secret_has(secrets: list[dict], name: str, key_: str) -> bool:
    """Whether the rendered Secret `name` holds `key_` (for an `optional: true` reference)."""
    secret = next((s for s in secrets if s["metadata"]["name"] == name), None)
    return secret is not None and (key_ in secret.get("stringData", {}) or key_ in secret.get("data", {}))


def secret_value(secrets: list[dict], name: str, key_: str) -> str:
    secret = next((s for s in secrets if s["metadata"]["name"] == name), None)
    assert secret is not None, f"secretKeyRef names Secret {name!r}, which the manifests do not define"
    if key_ in secret.get("stringData", {}):
        return secret["stringData"][key_]
    assert key_ in secret.get("data", {}), f"Secret {name} has no key {key_!r}"
    return base64.b64decode(secret["data"][key_]).decode()


def container_env(
    container: dict,
    *,
    pod_fields: dict[str, str],
    secrets: list[dict],
    base_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment the kubelet gives the container: `base_env` (service links), then the
    spec's `env` in order, each value `$(VAR)`-expanded against what is defined so far, downward
    API `fieldRef`s from `pod_fields`, `secretKeyRef`s from the rendered Secrets."""
    assert "envFrom" not in container, "envFrom is not emulated by this test: extend container_env"
    env = dict(base_env or {})
    for e in container.get("env", []):
        name = e["name"]
        if "value" in e:
            env[name] = expand(e["value"], env)
        elif "valueFrom" in e:
            src = e["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                assert path in pod_fields, f"env {name}: downward API field {path} is not emulated"
                env[name] = pod_fields[path]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                if ref.get("optional") and not secret_has(secrets, ref["name"], ref["key"]):
                    continue  # the kubelet leaves the variable unset
                env[name] = secret_value(secrets, ref["name"], ref["key"])
            else:
                raise AssertionError(f"env {name}: valueFrom {sorted(src)} is not emulated")
        else:
            env[name] = ""
    return env


def container_argv(container: dict, env: dict[str, str]) -> tuple[list[str] | None, list[str]]:
    """(command or None for the image's entrypoint, args), both `$(VAR)`-expanded."""
    command = container.get("command")
    args = [expand(a, env) for a in container.get("args", [])]
    return ([expand(c, env) for c in command] if command else None), args


def spec_env_names(container: dict) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def spec_env_literal(container: dict, name: str) -> str:
    for e in container.get("env", []):
        if e["name"] == name:
            assert "value" in e, f"{name} must be a literal value in the manifest"
            return e["value"]
    raise AssertionError(f"the container spec does not set {name}")


# --------------------------------------------------------------------------- the binary's options

_OPTION = re.compile(r"^\s{2,}(?:-(\w), )?--([a-z0-9][a-z0-9-]*)(?:[ =]<([^>]+)>)?")


def parse_serve_help(text: str) -> dict[str, dict]:
    """`hubbub serve --help` (clap) -> {flag: {"env": NAME|None, "value": bool, "choices": [...]}}.

    Each option's block (its line plus the description lines under it) is joined before the
    `[env: ...]` / `[possible values: ...]` annotations are read, so wrapping does not matter."""
    options: dict[str, dict] = {}
    current: str | None = None
    blocks: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = _OPTION.match(line)
        if m:
            current = m.group(2)
            options[current] = {"value": m.group(3) is not None, "env": None, "choices": None}
            blocks[current] = [line[m.end() :]]
        elif current is not None and line.strip():
            blocks[current].append(line)
    for flag, lines in blocks.items():
        joined = " ".join(" ".join(lines).split())
        env = re.search(r"\[env:\s*([A-Z0-9_]+)", joined)
        if env:
            options[flag]["env"] = env.group(1)
        choices = re.search(r"\[possible values:\s*([^\]]*)\]", joined)
        if choices:
            options[flag]["choices"] = [c.strip() for c in choices.group(1).split(",")]
    return options


def check_against_binary(container: dict, options: dict[str, dict]) -> list[str]:
    """Every way the container spec can be out of step with `hubbub serve`'s options: an unknown
    HUBBUB_* variable, an unknown flag, a flag missing its value, a value outside the option's
    possible values. Returns the problems (empty = in step)."""
    problems = []
    by_env = {o["env"]: (flag, o) for flag, o in options.items() if o["env"]}
    for e in container.get("env", []):
        name = e["name"]
        if not name.startswith("HUBBUB_"):
            continue
        if name not in by_env:
            problems.append(f"env {name} is not an option of `hubbub serve` (known: {', '.join(sorted(by_env))})")
            continue
        flag, o = by_env[name]
        if o["choices"] and "value" in e and e["value"] not in o["choices"]:
            problems.append(f"env {name}={e['value']!r}: --{flag} accepts only {o['choices']}")
    args = list(container.get("args", []))
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--"):
            problems.append(f"arg {a!r}: `hubbub serve` takes no positional arguments")
            continue
        flag, eq, value = a[2:].partition("=")
        if flag not in options:
            problems.append(f"arg --{flag} is not an option of `hubbub serve`")
            continue
        o = options[flag]
        if o["value"] and not eq:
            if i >= len(args):
                problems.append(f"arg --{flag} needs a value")
                continue
            value = args[i]
            i += 1
        elif not o["value"] and eq:
            problems.append(f"arg --{flag} takes no value")
            continue
        if o["choices"] and o["value"] and value not in o["choices"]:
            problems.append(f"arg --{flag} {value!r}: accepts only {o['choices']}")
    return problems


# --------------------------------------------------------------------------- HTTP, tokens, SSE


def hs256_token(key_: str, claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key_.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def http_get(host: str, port: int, path: str, timeout: float = 2.0, headers: dict | None = None):
    """(status, body) of a plain GET, the way the kubelet's httpGet probe asks (no proxy)."""
    return verifier.http_get(verifier.Node(f"{host}:{port}", host, port), path, timeout, headers)


def probe_ok(host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    """The kubelet's httpGet verdict: success iff 200 <= status < 400 within timeoutSeconds."""
    try:
        status, _ = http_get(host, port, path, timeout=timeout, headers={"User-Agent": "kube-probe/1.32"})
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return 200 <= status < 400, f"HTTP {status}"


class SseReader:
    """A subscription on one connection; `events()` yields parsed events until a deadline."""

    def __init__(self, host: str, port: int, path: str, headers: dict, timeout: float = 10.0):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()
        self.closed_by_server = False

    def next_event(self) -> dict | None:
        """The next event (fields joined as in SSE), or None at end of stream. Comments skipped."""
        event: dict[str, str] = {}
        while True:
            raw = self.resp.readline()
            if not raw:
                self.closed_by_server = True
                return None
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[field] = event[field] + "\n" + value if field == "data" and field in event else value

    def close(self):
        self.conn.close()
