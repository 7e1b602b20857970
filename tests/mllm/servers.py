"""Real HTTP servers on loopback: model servers for the OpenAI-compatible backend, and eagle serve's app."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def transformers_serve(model: Path, port: int | None = None):
    """``transformers serve`` on loopback with ``model``; yields (base URL, process)."""
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("transformers")
    process = subprocess.Popen([str(exe), "serve", str(model), "--port", str(port), "--device", "cpu"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("transformers serve did not come up within 90 s") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        process.kill()
        process.wait()


@contextmanager
def scripted_server(replies: list[tuple[int, str]]):
    """A server answering each POST with the next (status, body) of ``replies`` (the last one repeats).

    Yields its base URL and the list of (status sent, Authorization header received) per request.
    """
    served = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body = replies[min(len(served), len(replies) - 1)]
            served.append((status, self.headers.get("Authorization")))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", served
    finally:
        server.shutdown()


def completion(text: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


@contextmanager
def serving_in_background(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the ASGI ``app`` with uvicorn on a thread of this process (port 0: a free one); yield its base URL."""
    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, name="eagle-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the service could not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
