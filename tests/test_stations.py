"""Several stations in one service: each category at /inspect/{category}, judged as `eagle score` judges it,
with one backbone for the categories whose features were computed alike."""

from pathlib import Path

import pytest

from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.formats.expert import load_expert, share_backbone
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import BankParams, ScoreParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.conftest import TINY, threshold_of
from tests.served import call, eagle_serving


@pytest.fixture(scope="module")
def two_categories(tiny_root, tmp_path_factory):
    context = Context(artifacts=tmp_path_factory.mktemp("stations"))
    scores = {}
    for category in ("brick", "washer"):
        features = run_extract(DataSource(root=tiny_root), category, "train", TINY, context=context)
        threshold = threshold_of(run_fit_bank(features, BankParams(coreset_ratio=0.1), context=context),
                                 context=context)
        scores[category] = run_score(threshold, ScoreInputs(source=DataSource(root=tiny_root), category=category),
                                     ScoreParams(), context=context)
    return context, scores


def test_categories_computed_alike_share_one_backbone(two_categories):
    _, scores = two_categories
    brick, washer = (load_expert(scores[c].input("threshold")) for c in ("brick", "washer"))
    assert share_backbone(washer, brick) and washer.extractor is brick.extractor


def test_each_station_answers_at_its_route_as_eagle_score_judged_it(two_categories):
    context, scores = two_categories
    with eagle_serving("--category", "brick,washer", "--artifacts", str(context.artifacts)) as (url, _):
        health = call(url, "/health", None)[1]
        assert set(health["stations"]) == {"brick", "washer"}
        for category, ref in scores.items():
            assert health["stations"][category]["threshold"] == ref.input("threshold").id
            for row in read_scores(ref)[:4]:
                status, answer = call(url, f"/inspect/{category}", Path(row.path).read_bytes())
                assert status == 200 and answer["category"] == category
                assert answer["score"] == pytest.approx(row.score, rel=1e-4) and answer["anomalous"] == row.anomalous
        status, answer = call(url, "/inspect", Path(read_scores(scores["brick"])[0].path).read_bytes())
        assert status == 404 and "/inspect/CATEGORY" in answer["error"] and "brick, washer" in answer["error"]
        assert call(url, "/inspect/bottle", b"x")[0] == 404
