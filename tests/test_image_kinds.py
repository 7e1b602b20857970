"""Every kind of image file, through `eagle score` and through `POST /inspect`: the same score, or the same
refusal for the same reason (one decoding module serves both)."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eagle_cli import load_expert
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.formats.features import read_errors
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import ScoreParams
from eagle_cli.service.app import Station, create_app
from eagle_cli.service.batching import BatchingScorer
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.mllm.servers import serving_in_background


def _write_kinds(source: Path, folder: Path) -> dict[str, str | None]:
    """One file of each kind made from the washer image ``source``; name → the refusal expected (None: scored)."""
    image = Image.open(source).convert("RGB").crop((0, 0, 96, 88))  # not square: a turn shows in the size
    gray = np.asarray(image.convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(folder / "sixteen_bit.png")  # 16-bit grey, the full range used
    image.save(folder / "eight_bit.png")
    image.quantize(64).save(folder / "palette.png")
    image.convert("CMYK").save(folder / "cmyk.tiff")
    image.convert("LA").save(folder / "grey_alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: the picture is meant to be seen rotated by 90°
    image.transpose(Image.Transpose.ROTATE_90).save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    image.resize((40, 40)).save(folder / "too_small.png")
    Image.fromarray(np.asarray(image.convert("L"), dtype=np.float32)).save(folder / "float.tiff")
    (folder / "truncated.png").write_bytes((folder / "eight_bit.png").read_bytes()[:300])
    (folder / "not_an_image.png").write_text("hello")
    return {"sixteen_bit.png": None, "eight_bit.png": None, "palette.png": None, "cmyk.tiff": None,
            "grey_alpha.png": None, "exif_rotated.jpg": None, "too_small.png": "smaller than the 80-pixel frame",
            "float.tiff": "floating-point image", "truncated.png": "truncated or damaged",
            "not_an_image.png": "not an image format"}


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/inspect", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_image_kind_gets_the_same_answer_from_eagle_score_and_the_service(washer_scores, tmp_path):
    folder = tmp_path / "kinds"
    folder.mkdir()
    expected = _write_kinds(Path(read_scores(washer_scores)[0].path), folder)
    threshold = washer_scores.input("threshold")
    scores = run_score(threshold, ScoreInputs(source=DataSource(test=folder), category="washer"), ScoreParams(),
                       context=Context(artifacts=tmp_path / "artifacts"))
    scored = {Path(row.path).name: row for row in read_scores(scores)}
    refused = {Path(row.path).name: row.error for row in read_errors(scores)}
    assert set(scored) == {name for name, reason in expected.items() if reason is None}
    assert {name: reason for name, reason in expected.items() if reason} == {
        name: next(part for part in expected.values() if part and part in reason) for name, reason in refused.items()}
    scorer = BatchingScorer(load_expert(threshold), threshold_id=threshold.id)
    with serving_in_background(create_app({"washer": Station(scorer)}, max_bytes=10**7, max_pixels=10**7)) as url:
        answers = {name: _post(url, (folder / name).read_bytes()) for name in expected}
    scorer.close()
    for name, (status, answer) in answers.items():
        if name in scored:
            assert status == 200 and answer["score"] == pytest.approx(scored[name].score, rel=1e-5), name
            assert (answer["width"], answer["height"]) == (scored[name].width, scored[name].height)
        else:
            assert status in (415, 422) and refused[name] in answer["error"], (name, answer)
    # The 16-bit file is scaled by its range, not clipped: it scores as its 8-bit grey twin, not as a white image.
    grey = Image.open(folder / "eight_bit.png").convert("L")
    assert scored["sixteen_bit.png"].score == pytest.approx(load_expert(threshold).score([grey]).scores[0], rel=1e-5)
    # The turned JPEG is seen as the camera meant it: upright, as wide as the original.
    assert (scored["exif_rotated.jpg"].width, scored["exif_rotated.jpg"].height) == (96, 88)
