"""eagle serve takes up a new threshold without a restart: under load no request fails, every answer names the
threshold that judged it, later answers are the new threshold's, and a failed load keeps the old one."""

import json
import signal
import threading
import time
from pathlib import Path

from eagle_cli.formats.scores import read_scores
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import ThresholdParams
from tests.conftest import threshold_of
from tests.served import call, copied_store, eagle_serving


def test_a_reload_under_load_loses_no_request_and_later_answers_are_the_new_thresholds(washer_scores, tmp_path):
    store, old = copied_store(washer_scores.input("threshold"), tmp_path / "store")
    new = threshold_of(old.input("bank"), ThresholdParams("quantile", q=50), context=store)
    tau = {old.id: read_threshold(old).tau, new.id: read_threshold(new).tau}
    assert tau[old.id] != tau[new.id]
    rows = read_scores(washer_scores)
    bodies = [(row, Path(row.path).read_bytes()) for row in rows]
    answers, stop = [], threading.Event()

    def client(url: str, offset: int) -> None:
        number = offset
        while not stop.is_set():
            row, body = bodies[number % len(bodies)]
            sent = time.monotonic()
            answers.append((sent, row, *call(url, "/inspect", body, "k")))
            number += 1

    with eagle_serving("--threshold", str(old.path), "--artifacts", str(store.artifacts), "--run", store.run,
                       "--client-key-env", "EAGLE_TEST_KEY", env={"EAGLE_TEST_KEY": "k"}) as (url, server):
        clients = [threading.Thread(target=client, args=(url, i)) for i in range(8)]
        for thread in clients:
            thread.start()
        while len(answers) < 30:
            time.sleep(0.05)
        status, reply = call(url, "/reload", json.dumps({"threshold": "0123456789abcdef"}).encode(), "k")
        assert status == 422 and f"still serving {old.id}" in reply["error"]
        assert call(url, "/reload", b"", None)[0] == 401
        status, reply = call(url, "/reload", json.dumps({"threshold": new.id}).encode(), "k")
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
            if call(url, "/health", None)[1]["threshold"] == latest.id:
                break
            time.sleep(0.1)
        assert call(url, "/health", None)[1]["threshold"] == latest.id
    assert all(status == 200 for _, _, status, _ in answers)
    for sent, row, _, answer in answers:
        assert answer["threshold"] in tau and answer["tau"] == tau[answer["threshold"]]
        assert answer["anomalous"] == (answer["score"] >= tau[answer["threshold"]])
        assert abs(answer["score"] - row.score) <= 1e-4 * abs(row.score)
        if sent > reloaded:
            assert answer["threshold"] == new.id  # sent after the reload answered: judged by the new threshold
    assert {answer["threshold"] for *_, answer in answers} == set(tau)
