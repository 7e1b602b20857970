"""eagle serve takes up a new threshold without a restart: under load no request fails, every answer names the
threshold that judged it, later answers are the new threshold's, and a failed load keeps the old one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.context import Context
from eagle_cli.formats.scores import read_scores
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import ThresholdParams
from tests.conftest import threshold_of
from tests.test_audit import _free_port


def _call(url: str, path: str, body: bytes | None, key: str | None = None) -> tuple[int, dict]:
    headers = {"X-API-Key": key} if key else {}
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_reload_under_load_loses_no_request_and_later_answers_are_the_new_thresholds(washer_scores, tmp_path):
    shared = washer_scores.input("threshold")
    store = Context(artifacts=tmp_path / "store", run=shared.path.parents[2].name)
    shutil.copytree(shared.path.parents[3], store.artifacts)  # new thresholds go to a copy of the shared store
    old = artifacts.open_artifact(store.artifacts / shared.path.relative_to(shared.path.parents[3]))
    new = threshold_of(old.input("bank"), ThresholdParams("quantile", q=50), context=store)
    tau = {old.id: read_threshold(old).tau, new.id: read_threshold(new).tau}
    assert tau[old.id] != tau[new.id]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "eagle_cli", "serve", "--threshold", str(old.path),
                               "--artifacts", str(store.artifacts), "--run", store.run, "--port", str(port),
                               "--client-key-env", "EAGLE_TEST_KEY"],
                              env={**os.environ, "EAGLE_TEST_KEY": "k"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    rows = read_scores(washer_scores)
    bodies = [(row, Path(row.path).read_bytes()) for row in rows]
    answers, stop = [], threading.Event()

    def client(offset: int) -> None:
        number = offset
        while not stop.is_set():
            row, body = bodies[number % len(bodies)]
            sent = time.monotonic()
            answers.append((sent, row, *_call(url, "/inspect", body, "k")))
            number += 1

    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in clients:
            thread.start()
        while len(answers) < 30:
            time.sleep(0.05)
        status, reply = _call(url, "/reload", json.dumps({"threshold": "0123456789abcdef"}).encode(), "k")
        assert status == 422 and f"still serving {old.id}" in reply["error"]
        assert _call(url, "/reload", b"", None)[0] == 401
        status, reply = _call(url, "/reload", json.dumps({"threshold": new.id}).encode(), "k")
        reloaded = time.monotonic()
        assert status == 200 and reply == {"category": "washer", "threshold": new.id, "previous": old.id}
        while sum(sent > reloaded for sent, *_ in answers) < 30:
            time.sleep(0.05)
        stop.set()
        for thread in clients:
            thread.join()
        # SIGHUP takes up the category's latest threshold.
        latest = threshold_of(old.input("bank"), ThresholdParams("quantile", q=20), context=store)
        server.send_signal(signal.SIGHUP)
        for _ in range(100):
            if _call(url, "/health", None)[1]["threshold"] == latest.id:
                break
            time.sleep(0.1)
        assert _call(url, "/health", None)[1]["threshold"] == latest.id
    finally:
        server.kill()
    assert all(status == 200 for _, _, status, _ in answers)
    for sent, row, _, answer in answers:
        assert answer["threshold"] in tau and answer["tau"] == tau[answer["threshold"]]
        assert answer["anomalous"] == (answer["score"] >= tau[answer["threshold"]])
        assert abs(answer["score"] - row.score) <= 1e-4 * abs(row.score)
        if sent > reloaded:
            assert answer["threshold"] == new.id  # sent after the reload answered: judged by the new threshold
    assert {answer["threshold"] for *_, answer in answers} == set(tau)
