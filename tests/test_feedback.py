"""The operator's loop on a real loopback service: inspect → feedback → eagle update-bank → reload."""

import json
from pathlib import Path

from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from eagle_cli.formats.scores import read_scores
from tests.served import call, copied_store, eagle_serving


def test_labelled_parts_grow_the_bank_and_the_service_takes_up_the_new_threshold(washer_scores, tmp_path):
    context, old = copied_store(washer_scores.input("threshold"), tmp_path / "store")
    store, run, feedback = context.artifacts, context.run, tmp_path / "feedback"
    with eagle_serving("--threshold", str(old.path), "--artifacts", str(store), "--run", run, "--feedback-dir",
                       str(feedback), "--client-key-env", "EAGLE_TEST_KEY", env={"EAGLE_TEST_KEY": "k"}) as (url, _):
        good = [row for row in read_scores(washer_scores) if row.label == 0]
        answers = [call(url, "/inspect", Path(row.path).read_bytes(), "k")[1] for row in good]
        for answer in answers:
            status, filed = call(url, "/feedback", json.dumps({"request_id": answer["request_id"], "label": "good",
                                                                "note": "operator: fine"}).encode(), "k")
            assert status == 200 and filed["label"] == "good"
        assert call(url, "/feedback", json.dumps({"request_id": "nope", "label": "good"}).encode(), "k")[0] == 404
        assert call(url, "/feedback", json.dumps({"request_id": answers[0]["request_id"],
                                                   "label": "maybe"}).encode(), "k")[0] == 422
        filed = {path.stem: path.read_bytes() for path in (feedback / "washer" / "good").iterdir()}
        sent = zip(answers, good, strict=True)
        assert filed == {answer["request_id"]: Path(row.path).read_bytes() for answer, row in sent}
        log = [json.loads(line) for line in (feedback / "washer" / "feedback.jsonl").read_text().splitlines()]
        assert [entry["label"] for entry in log] == ["good"] * len(good) and log[0]["threshold"] == old.id

        grown = CliRunner().invoke(app, ["update-bank", "--bank", str(old.input("bank").path), "--good",
                                         str(feedback / "washer" / "good"), "--artifacts", str(store), "--run", run,
                                         "--target-far", "0.2", "--json"])
        assert grown.exit_code == 0, grown.output
        new = next(artifacts.open_artifact(a["path"]) for a in json.loads(grown.stdout)["artifacts"]
                   if a["kind"] == "threshold")
        status, reply = call(url, "/reload", b"", "k")
        assert status == 200 and reply == {"category": "washer", "threshold": new.id, "previous": old.id}
        assert call(url, "/inspect", Path(good[0].path).read_bytes(), "k")[1]["threshold"] == new.id
