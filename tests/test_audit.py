"""The audit trail: every answered verdict is on disk before its answer, rotation keeps whole lines, and a
kill -9 of a loaded service loses at most the line being written."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from eagle_cli.formats.scores import read_scores
from eagle_cli.service.audit import AuditLog
from tests.served import eagle_serving


def test_rotation_keeps_whole_lines_and_the_newest_files(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2_000, keep=3)
    for number in range(200):
        log.record({"request_id": f"{number:04d}", "score": number / 7})
    log.close()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all(f.stat().st_size <= 2_000 for f in files)
    ids = [json.loads(line)["request_id"] for f in reversed(files[1:]) for line in f.read_text().splitlines()]
    ids += [json.loads(line)["request_id"] for line in files[0].read_text().splitlines()]
    assert ids == sorted(ids) and ids[-1] == "0199"  # the newest, in order, nothing torn


def _post(url: str, body: bytes) -> dict | None:
    request = urllib.request.Request(url + "/inspect", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def test_a_killed_service_loses_at_most_the_line_being_written(washer_scores, tmp_path):
    log = tmp_path / "audit" / "audit.jsonl"
    with eagle_serving("--threshold", str(washer_scores.input("threshold").path), "--audit-log", str(log),
                       "--audit-images", "anomalous", "--max-wait-ms", "1") as (url, server):
        bodies = [Path(row.path).read_bytes() for row in read_scores(washer_scores)]
        answered, stop = [], threading.Event()

        def client(offset: int) -> None:
            number = offset
            while not stop.is_set():
                reply = _post(url, bodies[number % len(bodies)])
                if reply is not None:
                    answered.append(reply)
                number += 1

        clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in clients:
            thread.start()
        while len(answered) < 40:
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        stop.set()
        for thread in clients:
            thread.join()
    lines = log.read_bytes().split(b"\n")
    complete = [json.loads(line) for line in lines[:-1]]  # every line but a possibly torn last one parses
    assert lines[-1] == b"" or len(lines[-1]) < 10_000
    logged = {entry["request_id"]: entry for entry in complete}
    assert {reply["request_id"] for reply in answered} <= logged.keys()  # written before it was answered
    for reply in answered:
        entry = logged[reply["request_id"]]
        assert entry["score"] == reply["score"] and entry["threshold"] == reply["threshold"]
        assert len(entry["image_sha256"]) == 64 and entry["eagle"] == reply["eagle"]
    kept = {path.stem for path in (log.parent / "images").glob("*.png")}
    flagged = {entry["request_id"] for entry in complete if entry["anomalous"]}
    assert flagged and flagged <= kept  # an image is kept before its line is written
    assert not kept & {entry["request_id"] for entry in complete if not entry["anomalous"]}
