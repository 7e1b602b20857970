"""eagle serve on a real loopback HTTP server: the answers match eagle score, requests share forwards,
limits and bad uploads get their status, and the service keeps serving."""

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from eagle_cli import __version__, load_expert
from eagle_cli.drift import DriftWatch
from eagle_cli.formats.calibration import calibration_scores
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import CaasSettings, ReasonParams
from eagle_cli.service.app import Station, create_app
from eagle_cli.service.batching import BatchingScorer
from eagle_cli.service.reasoning import ServiceReasoner
from tests.conftest import bomb_png
from tests.mllm.servers import serving_in_background


def serving(scorer, reasoner=None, **limits):
    settings = {"max_bytes": 10_000_000, "max_pixels": 4_000_000, **limits}
    return serving_in_background(create_app({"washer": Station(scorer, reasoner)}, **settings))


def post(url, body: bytes, headers=None) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/inspect", data=body, method="POST",
                                     headers={"Content-Type": "image/png", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def expert_and_rows(washer_scores):
    expert = load_expert(washer_scores.input("threshold"))
    return expert, read_scores(washer_scores)


@pytest.fixture(scope="module")
def exported_expert(expert_and_rows, tmp_path_factory):
    """The same expert exported, as `eagle serve --runtime onnx` serves it."""
    from eagle_cli.export.runtime import ExportedExpert
    from eagle_cli.export.writer import export_expert

    return ExportedExpert.load(export_expert(expert_and_rows[0], tmp_path_factory.mktemp("export") / "washer"))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_answers_match_eagle_score_and_concurrent_requests_share_forwards(runtime, expert_and_rows, request):
    expert, rows = expert_and_rows
    if runtime == "onnx":
        expert = request.getfixturevalue("exported_expert")
    scorer = BatchingScorer(expert, threshold_id="t", batch_size=4, max_wait_s=0.05)
    bodies = [Path(row.path).read_bytes() for row in rows] * 3
    with serving(scorer) as url, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(url, body), bodies))
    scorer.close()
    assert all(status == 200 for status, _ in answers)
    for (_, answer), row in zip(answers, rows * 3, strict=True):
        assert answer["score"] == pytest.approx(row.score, rel=1e-4)
        assert answer["anomalous"] == row.anomalous and answer["uncertain"] == row.uncertain
        assert (answer["width"], answer["height"]) == (row.width, row.height)
        assert bool(answer["boxes"]) <= answer["anomalous"]  # boxes only with an anomalous verdict
        for x0, y0, x1, y1 in answer["boxes"]:
            assert 0 <= x0 < x1 <= row.width and 0 <= y0 < y1 <= row.height
    assert any(answer["anomalous"] and answer["boxes"] for _, answer in answers)
    assert scorer.batches < len(bodies)  # several requests went through one forward
    assert len({answer["request_id"] for _, answer in answers}) == len(bodies)
    assert all(answer["threshold"] == "t" and answer["eagle"] == __version__ for _, answer in answers)


def test_every_answer_has_its_p_value_and_parts_unlike_the_calibration_raise_the_drift_alarm(expert_and_rows,
                                                                                              washer_scores):
    expert, rows = expert_and_rows
    calibration = calibration_scores(washer_scores.input("threshold").input("calibration"))
    scorer = BatchingScorer(expert, threshold_id="t", batch_size=1, watch=DriftWatch(calibration, delta=0.01))
    worst = max(rows, key=lambda row: row.score)  # a defect scoring above every calibration image
    with serving(scorer) as url:
        with urllib.request.urlopen(url + "/health") as response:
            assert json.loads(response.read())["drift"]["status"] == "ok"
        answers = [post(url, Path(worst.path).read_bytes())[1] for _ in range(12)]
        with urllib.request.urlopen(url + "/health") as response:
            drift = json.loads(response.read())["drift"]
        with urllib.request.urlopen(url + "/metrics") as response:
            text = response.read().decode()
    scorer.close()
    assert all(answer["p_value"] == pytest.approx(1 / (len(calibration) + 1)) for answer in answers)
    assert drift["status"] == "drifting" and 1 < drift["since_part"] <= 12 and drift["parts"] == 12
    assert 'eagle_drift_alarm{category="washer"} 1.0' in text and 'eagle_drift_parts{category="washer"} 12.0' in text


class _Gated:
    """The real expert, made to wait at a gate before scoring, so the queue can be filled on purpose."""

    def __init__(self, expert):
        self.expert, self.tau, self.gate, self.entered = expert, expert.tau, threading.Event(), threading.Event()
        self.geometry, self.s_max = expert.geometry, expert.s_max

    def score(self, images):
        self.entered.set()
        self.gate.wait()
        return self.expert.score(images)


def test_a_full_queue_answers_busy_at_once_and_the_waiting_requests_complete(expert_and_rows):
    expert, rows = expert_and_rows
    gated = _Gated(expert)
    scorer = BatchingScorer(gated, batch_size=1, max_wait_s=0, queue_size=1)
    body = Path(rows[0].path).read_bytes()
    with serving(scorer) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, body)
        assert gated.entered.wait(30)  # the worker holds the first request
        second = pool.submit(post, url, body)
        while scorer.waiting < 1:
            time.sleep(0.01)
        status, answer = post(url, body)
        assert status == 503 and "busy" in answer["error"]
        gated.gate.set()
        assert first.result()[0] == 200 and second.result()[0] == 200
    scorer.close()


def test_bad_uploads_get_their_status_and_the_service_keeps_serving(expert_and_rows):
    expert, rows = expert_and_rows
    scorer = BatchingScorer(expert, threshold_id="t")
    good = Path(rows[0].path).read_bytes()
    with serving(scorer, max_bytes=len(good) + 10, api_key="s3cret") as url:
        key = {"Authorization": "Bearer s3cret"}
        assert post(url, good)[0] == 401 and post(url, good, {"X-API-Key": "wrong"})[0] == 401
        status, answer = post(url, bomb_png(3_000, 3_000), key)
        assert status == 413 and "9.0 megapixels" in answer["error"] and "--max-image-pixels" in answer["error"]
        assert post(url, bomb_png(30_000, 30_000), key)[0] == 413  # beyond Pillow's own bomb limit
        assert post(url, good[: len(good) // 2], key)[0] == 422  # truncated
        assert post(url, b"not an image at all", key)[0] == 415
        assert post(url, b"", key)[0] == 422
        assert post(url, good + b"\0" * 100, key)[0] == 413  # over --max-bytes
        assert post(url, good, {"X-API-Key": "s3cret"})[0] == 200
        with urllib.request.urlopen(url + "/health") as response:
            assert json.loads(response.read())["status"] == "ok"
        request = urllib.request.Request(url + "/metrics", headers=key)
        with urllib.request.urlopen(request) as response:
            text = response.read().decode()
        assert 'eagle_requests_total{status="200"} 1.0' in text and 'eagle_requests_total{status="413"} 3.0' in text
    scorer.close()


def test_with_a_model_each_reply_carries_its_answer_to_the_defect_question(expert_and_rows, tiny_qwen):
    expert, rows = expert_and_rows
    params = ReasonParams(model=str(tiny_qwen), device="cpu", max_new_tokens=3,
                          caas=CaasSettings(layers=(1,)))
    reasoner = ServiceReasoner(params, category="washer")
    scorer = BatchingScorer(expert, threshold_id="t")
    picked = [next(r for r in rows if r.anomalous), next(r for r in rows if not r.anomalous)]
    with serving(scorer, reasoner=reasoner) as url, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda row: post(url, Path(row.path).read_bytes()), picked))
    scorer.close()
    for (status, answer), row in zip(answers, picked, strict=True):
        assert status == 200 and answer["anomalous"] == row.anomalous
        reply = answer["answer"]
        assert reply["question"] == "Is there any defect in the object?" and isinstance(reply["raw"], str)
        assert reply["valid"] == (reply["parsed"] is not None) and reply["model"] == str(tiny_qwen)
        assert reply["caas"] == row.uncertain  # CAAS acts only inside the expert's window
