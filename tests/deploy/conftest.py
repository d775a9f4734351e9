"""Shared fixtures for the deployment tests: a Docker engine (required in CI)
and the hubbub image, built once per session with `scripts/image` (no registry).

These tests drive real containers on the local engine. Outside CI a missing
engine skips them with a reason; with CI=true it fails the run instead.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("HUBBUB_TEST_IMAGE", "hubbub:dev")


def docker_available() -> str | None:
    """None when the engine answers, else why not."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"the Docker engine does not answer: {r.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="session")
def docker():
    why = docker_available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {why}: deployment tests need a Docker engine")
        pytest.skip(why)
    return "docker"


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) when it answers, else `docker-compose` (v1), else None."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return cmd
    return None


@pytest.fixture(scope="session")
def compose(docker):
    """The compose command line to use (a list), required in CI like the engine."""
    cmd = compose_command()
    if cmd is None:
        why = "neither `docker compose` nor `docker-compose` is installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {why}: deployment tests need Docker Compose")
        pytest.skip(why)
    return cmd


@pytest.fixture(scope="session")
def hubbub_image(docker):
    """Builds the runtime image from this checkout (once per session).

    HUBBUB_TEST_SKIP_IMAGE_BUILD=1 reuses an existing image (iterating locally).
    """
    if os.environ.get("HUBBUB_TEST_SKIP_IMAGE_BUILD") != "1":
        subprocess.run([str(ROOT / "scripts" / "image"), "--tag", IMAGE], check=True, cwd=ROOT)
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    assert r.returncode == 0, f"image {IMAGE} was not built"
    return IMAGE
