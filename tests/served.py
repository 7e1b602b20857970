"""`eagle serve` as a user starts it: a real process on a free loopback port, and plain HTTP calls to it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, path: str, body: bytes | None, key: str | None = None) -> tuple[int, dict]:
    """GET (no body) or POST ``path``; (status, JSON answer)."""
    headers = {"X-API-Key": key} if key else {}
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextmanager
def eagle_serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``eagle serve ARGS`` in its own process, once /health answers: (its URL, the process); killed after."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "eagle_cli", "serve", *args, "--port", str(port)],
                              env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(f"eagle serve exited: {server.stderr.read()}") from None
                time.sleep(0.2)
        yield url, server
    finally:
        server.kill()
        server.wait()


def copied_store(threshold: ArtifactRef, into: Path) -> tuple[Context, ArtifactRef]:
    """A copy of the store holding ``threshold`` (new artifacts go to the copy, never to a shared store), as a
    context on the threshold's run, and the threshold in the copy."""
    root = threshold.path.parents[3]
    shutil.copytree(root, into)
    return (Context(artifacts=into, run=threshold.path.parents[2].name),
            artifacts.open_artifact(into / threshold.path.relative_to(root)))
