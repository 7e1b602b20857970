"""eagle run end to end (real MobileNetV2 weights, a tiny Qwen2.5-VL) and the report in a real browser."""

import base64
import html
import io
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.prompts import read_prompts
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import CaasSettings, PromptParams, ReasonParams, ReportParams
from eagle_cli.stages.prompt import run_prompt
from eagle_cli.stages.reason import run_reason
from eagle_cli.stages.report import run_report
from tests.report.browser import dump_dom, screenshot

runner = CliRunner()
XSS = '<script>document.title="pwned"</script><b id="injected">bold?</b>'


def _config(path, data, artifacts_dir, **extra):
    settings = {"data": str(data), "artifacts": str(artifacts_dir), "run": "r1", "backbone": "mobilenet_v2",
                "weights": "imagenet", "resize": 96, "crop": 80, "device": "cpu", "threshold_method": "quantile",
                "q": 20, "max_new_tokens": 3, **extra}
    path.write_text(yaml.safe_dump(settings))
    return path


def _run(config, *args):
    """The run's result and its outcomes: one per stage of each category, with its artifact or its error."""
    result = runner.invoke(app, ["run", str(config), "--json", *args])
    if not result.stdout.strip().startswith("{"):
        return result, []
    document = json.loads(result.stdout)
    return result, ([{**item, "error": None} for item in document["artifacts"]]
                    + [{**item, "path": None, "reused": False} for item in document["failed"]])


@pytest.fixture(scope="module")
def chain(tiny_root, tiny_qwen, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    config = _config(tmp / "run.yaml", tiny_root, tmp / "artifacts", model=str(tiny_qwen), mllm_alone=True,
                     caas=True, caas_layers="1-2", visual="both")
    result, outcomes = _run(config)
    assert result.exit_code == 0, result.output
    return tmp, config, outcomes


def test_run_does_every_stage_for_every_category(chain):
    _, _, outcomes = chain
    stages = {(o["category"], o["stage"]) for o in outcomes}
    for category in ("brick", "washer"):
        for stage in ("extract", "fit-bank", "fit-threshold", "score", "prompt", "reason", "prompt-alone",
                      "reason-alone"):
            assert (category, stage) in stages
    assert ("all", "report") in stages and not any(o["error"] for o in outcomes)


def test_a_second_run_redoes_nothing_and_a_new_threshold_redoes_only_what_follows(chain):
    tmp, config, _ = chain
    _, again = _run(config)
    assert all(o["reused"] for o in again)
    settings = yaml.safe_load(config.read_text())
    changed = tmp / "changed.yaml"
    changed.write_text(yaml.safe_dump({**settings, "threshold_method": "mad"}))
    result, outcomes = _run(changed)
    assert result.exit_code == 0
    reused = {(o["category"], o["stage"]): o["reused"] for o in outcomes}
    for category in ("brick", "washer"):
        assert reused[(category, "extract")] and reused[(category, "fit-bank")]
        assert not any(reused[(category, stage)] for stage in ("fit-threshold", "score", "prompt", "reason"))
        # Both thresholds were fitted on one calibration artifact: a new method scores no training image again.
        assert len(artifacts.list_artifacts(tmp / "artifacts", run="r1", category=category, kind="calibration")) == 1


def test_report_numbers_files_and_mmad_export(chain):
    tmp, _, outcomes = chain
    report = artifacts.open_artifact(next(o["path"] for o in outcomes if o["stage"] == "report")).path
    data = json.loads((report / "metrics.json").read_text())
    systems = {r["system"] for r in data["rows"]}
    assert systems == {"Expert", "EAGLE + CAAS", "MLLM alone, no CAAS"}
    macro = {r["system"]: r for r in data["rows"] if r["category"] == "macro"}
    assert 0 <= macro["Expert"]["balanced_accuracy"] <= 1 and macro["Expert"]["image_auroc"] > 0.5
    assert "macro balanced accuracy" in data["headline"]
    csv_lines = (report / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,category,system,image_auroc") and len(csv_lines) == 1 + len(data["rows"])
    mmad = json.loads((report / "mmad_r1_eagle-caas.json").read_text())
    assert set(mmad[0]) == {"image", "question", "question_type", "correct_answer", "gpt_answer"}
    assert mmad[0]["image"].startswith(("brick/", "washer/"))


def test_report_opens_in_a_browser_with_tables_plots_and_a_gallery(chain, tmp_path):
    _, _, outcomes = chain
    report = artifacts.open_artifact(next(o["path"] for o in outcomes if o["stage"] == "report"))
    page = report.path / "report.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # self-contained
    dom = dump_dom(page, tmp_path / "profile")
    assert dom.count('class="metrics"') == 1 and dom.count('class="plot"') >= 2
    assert dom.count('class="item"') == 22
    # The calibration table sets the threshold's promise beside what the good test images show.
    assert dom.count('class="calibration"') == 1
    inputs = report.manifest["inputs"]
    for scores in [artifacts.open_artifact(report.locate(i)) for i in inputs if i["kind"] == "scores"]:
        good = [json.loads(line) for line in (scores.path / "scores.jsonl").read_text().splitlines()]
        good = [r for r in good if r["label"] == 0]
        row = dom.split(f'<tr data-category="{scores.path.parent.parent.name}">')[1].split("</tr>")[0]
        assert f"({sum(r['anomalous'] for r in good)}/{len(good)})" in row and 'class="predicted"' in row
    shot = screenshot(page, tmp_path / "first-screen.png", tmp_path / "profile2")
    with Image.open(shot) as image:
        assert image.size == (1280, 1600) and len(np.unique(np.asarray(image.convert("L")))) > 20  # not blank


def test_model_text_with_markup_is_shown_as_text(tiny_root, tmp_path):
    from tests.mllm.servers import completion, scripted_server

    with scripted_server([(200, completion(XSS))]) as (url, _):
        config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer"], backend="openai",
                         base_url=url, model="served")
        result, outcomes = _run(config)
    assert result.exit_code == 0, result.output
    page = artifacts.open_artifact(next(o["path"] for o in outcomes if o["stage"] == "report")).path / "report.html"
    dom = dump_dom(page, tmp_path / "profile")
    assert '<b id="injected">' not in dom and "&lt;b id=\"injected\"&gt;" in dom
    assert "<title>eagle report" in dom and "pwned" not in dom.split("</title>")[0]


def test_without_a_model_reasoning_is_skipped_with_one_line_and_the_report_shows_the_expert(tiny_root, tmp_path):
    config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["brick"])
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 0
    assert "reasoning skipped: no multimodal model set" in result.output
    report = artifacts.latest(tmp_path / "a", "r1", "_all", "report")
    assert {r["system"] for r in json.loads((report.path / "metrics.json").read_text())["rows"]} == {"Expert"}


def test_a_failing_category_does_not_stop_the_others(tiny_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    for image in (data / "washer" / "train" / "good").iterdir():
        image.write_text("not an image")
    config = _config(tmp_path / "c.yaml", data, tmp_path / "a")
    result, outcomes = _run(config)
    assert result.exit_code == 1
    failed = [o for o in outcomes if o["error"]]
    assert [(o["category"], o["stage"]) for o in failed] == [("washer", "extract")]
    assert any(o["category"] == "brick" and o["stage"] == "score" and o["path"] for o in outcomes)
    assert any(o["stage"] == "report" and o["path"] for o in outcomes)


def test_config_errors_are_one_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nbackbon: resnet18\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "did you mean 'backbone'" in result.output
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"data: {tmp_path / 'nowhere'}\n")
    result = runner.invoke(app, ["run", str(missing)])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output


def test_report_refuses_runs_of_different_datasets(tiny_root, mmad_root, tmp_path):
    for run, data in (("a", tiny_root), ("b", mmad_root)):
        config = _config(tmp_path / f"{run}.yaml", data, tmp_path / "art", run=run, category=["brick"])
        assert _run(config)[0].exit_code == 0
    with pytest.raises(ArtifactError, match="scored different datasets"):
        run_report(("a", "b"), (), ReportParams(), context=Context(artifacts=tmp_path / "art"))


def test_two_runs_side_by_side_show_differences_and_markdown(tiny_root, tmp_path):
    for run, method in (("a", "k-sigma"), ("b", "quantile")):
        config = _config(tmp_path / f"{run}.yaml", tiny_root, tmp_path / "art", run=run, threshold_method=method)
        assert _run(config)[0].exit_code == 0
    result = runner.invoke(app, ["report", "--run", "a", "--compare", "b", "--artifacts", str(tmp_path / "art"),
                                 "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "| run | category | system |" in result.stdout and "| b | macro | Expert |" in result.stdout
    report = artifacts.latest(tmp_path / "art", "a", "_all", "report")
    comparison = json.loads((report.path / "metrics.json").read_text())["comparison"]
    assert comparison and all(len(v) == 3 for r in comparison for k, v in r.items() if k not in ("category", "system"))


def test_an_unfinished_answer_set_is_named_not_reported_unless_asked_for(tiny_root, tiny_qwen, qwen_backend,
                                                                          tmp_path):
    from tests.stages.test_pipeline import Interrupting

    config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer"])
    assert _run(config)[0].exit_code == 0
    context = Context(artifacts=tmp_path / "a", run="r1")
    prompts = run_prompt(artifacts.latest(tmp_path / "a", "r1", "washer", "scores"), PromptParams(), context=context)
    with pytest.raises(KeyboardInterrupt):
        run_reason(prompts, ReasonParams(model=str(tiny_qwen), max_new_tokens=2), backend=lambda: qwen_backend,
                   context=replace(context, reporter=Interrupting(after=4)))
    # By default the unfinished answers are no system of the report: a note names them and how to finish.
    left_out = run_report(("r1",), (), ReportParams(), context=replace(context, force=True))
    data = json.loads((left_out.path / "metrics.json").read_text())
    assert {r["system"] for r in data["rows"]} == {"Expert"} and not list(left_out.path.glob("mmad_*.json"))
    assert any("holds 3 of 11 answers" in note and "--include-incomplete" in note for note in data["notes"])
    # Asked for, they are shown as an incomplete system whose figures cover what was answered.
    report = run_report(("r1",), (), ReportParams(include_incomplete=True), context=replace(context, force=True))
    data = json.loads((report.path / "metrics.json").read_text())
    partial = next(r for r in data["rows"] if r["category"] == "washer" and r["system"] != "Expert")
    assert partial["system"] == "EAGLE, no CAAS (incomplete)" and partial["complete"] is False
    assert partial["coverage"] < 1
    assert data["notes"] and "incomplete" in data["notes"][0]
    assert "(incomplete)" in (report.path / "report.html").read_text()
    # More answers arrive: the next report is a new one, not the one made from fewer.
    with pytest.raises(KeyboardInterrupt):
        run_reason(prompts, ReasonParams(model=str(tiny_qwen), max_new_tokens=2), backend=lambda: qwen_backend,
                   context=replace(context, reporter=Interrupting(after=2)))
    later = run_report(("r1",), (), ReportParams(include_incomplete=True), context=context)
    assert not later.reused and later.path != report.path
    rows = json.loads((later.path / "metrics.json").read_text())["rows"]
    assert next(r for r in rows if r["category"] == "washer" and r["system"] != "Expert")["coverage"] > \
        partial["coverage"]
    assert not run_report(("r1",), (), ReportParams(), context=context).reused  # the note's count moved too
    # An unfinished run with CAAS on is labelled with it, like a finished one.
    with pytest.raises(KeyboardInterrupt):
        run_reason(prompts, ReasonParams(model=str(tiny_qwen), max_new_tokens=2, caas=CaasSettings(layers=(1, 2))),
                   backend=lambda: qwen_backend, context=replace(context, reporter=Interrupting(after=2)))
    rows = json.loads((run_report(("r1",), (), ReportParams(include_incomplete=True), context=context).path
                       / "metrics.json").read_text())["rows"]
    assert {r["system"] for r in rows} == {"Expert", "EAGLE, no CAAS (incomplete)", "EAGLE + CAAS (incomplete)"}


def test_mmad_runs_report_accuracy_per_question_type(mmad_root, tiny_qwen, tmp_path):
    config = _config(tmp_path / "c.yaml", mmad_root, tmp_path / "a", model=str(tiny_qwen), max_new_tokens=2,
                     task="all")
    result, outcomes = _run(config)
    assert result.exit_code == 0, result.output
    report = artifacts.open_artifact(next(o["path"] for o in outcomes if o["stage"] == "report")).path
    types = json.loads((report / "metrics.json").read_text())["question_types"]
    assert {(t["type"], t["n"]) for t in types} == {("Anomaly Detection", 11), ("Defect Classification", 8)}
    assert all(0 <= t["accuracy"] <= 1 for t in types)
    assert 'class="types"' in (report / "report.html").read_text()


def test_two_models_on_the_same_prompts_stay_apart(tiny_root, tiny_qwen, tiny_llava, tmp_path):
    config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer"])
    assert _run(config)[0].exit_code == 0
    context = Context(artifacts=tmp_path / "a", run="r1")
    prompts = run_prompt(artifacts.latest(tmp_path / "a", "r1", "washer", "scores"), PromptParams(), context=context)
    for model in (tiny_qwen, tiny_llava):
        run_reason(prompts, ReasonParams(model=str(model), device="cpu", max_new_tokens=2), context=context)
    report = run_report(("r1",), (), ReportParams(), context=context)
    systems = {r["system"] for r in json.loads((report.path / "metrics.json").read_text())["rows"]}
    assert systems == {"Expert", f"EAGLE, no CAAS · {tiny_qwen.name}", f"EAGLE, no CAAS · {tiny_llava.name}"}


def test_the_gallery_shows_the_boxes_the_model_was_shown(tiny_root, tmp_path):
    from eagle_cli.params import BoxParams
    from eagle_cli.stages.prompt import run_prompt

    config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer"], q=5, box_level=0.5)
    assert _run(config)[0].exit_code == 0
    context = Context(artifacts=tmp_path / "a", run="r1", force=True)
    scores = artifacts.latest(tmp_path / "a", "r1", "washer", "scores")
    flagged = sum(row.anomalous for row in read_scores(scores))
    drawn = run_report(("r1",), (), ReportParams(), context=context).path / "report.html"
    assert flagged and drawn.read_text().count('alt="boxes"') == sum(
        bool(r.boxes) for r in read_prompts(artifacts.latest(tmp_path / "a", "r1", "washer", "prompts"))) > 0
    # Prompts drawn with a level no map reaches have no boxes, and neither has the report built on them.
    run_prompt(scores, PromptParams(box=BoxParams(level=1e9)), context=context)
    assert run_report(("r1",), (), ReportParams(), context=context).path.joinpath("report.html").read_text().count(
        'alt="boxes"') == 0


def test_each_system_identity_gets_one_label_everywhere_and_is_never_merged(tiny_root, tiny_qwen, tmp_path):
    config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer", "brick"])
    assert _run(config)[0].exit_code == 0
    context = Context(artifacts=tmp_path / "a", run="r1")
    # One model over 0-shot and 1-shot prompts, and with two answer lengths: four systems.
    for category in ("washer", "brick"):
        scores = artifacts.latest(tmp_path / "a", "r1", category, "scores")
        for shots in (0, 1):
            prompts = run_prompt(scores, PromptParams(shots=shots), context=context)
            for tokens in (2, 3):
                run_reason(prompts, ReasonParams(model=str(tiny_qwen), device="cpu", max_new_tokens=tokens),
                           context=context)
    report = run_report(("r1",), (), ReportParams(), context=context)
    metrics = json.loads((report.path / "metrics.json").read_text())
    labels = set(metrics["systems"])
    assert len(labels) == 4 and all(label.startswith(f"EAGLE, no CAAS · {tiny_qwen.name} · ") for label in labels)
    rows = [r for r in metrics["rows"] if r["system"] != "Expert"]
    for label in labels:
        assert sorted(r["category"] for r in rows if r["system"] == label) == ["brick", "macro", "micro", "washer"]
    assert {(metrics["systems"][label]["prompt"]["shots"], metrics["systems"][label]["reason"]["max_new_tokens"])
            for label in labels} == {(0, 2), (0, 3), (1, 2), (1, 3)}
    exports = sorted(report.path.glob("mmad_*.json"))
    assert len(exports) == 4
    for export in exports:  # each question once per system: 11 + 11 Anomaly Detection questions
        questions = [(a["image"], a["question"]["text"]) for a in json.loads(export.read_text())]
        assert len(questions) == len(set(questions)) == 22
    assert all(label in (report.path / "report.html").read_text() for label in labels)


#: Written into a copy of the page: where each table's box ends and whether it scrolls, and the page's width.
MEASURE = """<script>
window.addEventListener("load", function () {
  var tables = Array.from(document.querySelectorAll("table")).map(function (table) {
    var box = table.parentElement;
    return {name: table.className || "table", scrolls: getComputedStyle(box).overflowX,
            right: box.getBoundingClientRect().right};
  });
  document.body.setAttribute("data-measured", JSON.stringify(
    {page: document.documentElement.scrollWidth, view: window.innerWidth, tables: tables}));
});
</script>"""


@pytest.mark.parametrize("width", [1400, 800])
def test_an_all_invalid_system_at_a_laptops_width(tiny_root, tmp_path, width):
    """Tables scroll inside their box at any width, a system's label says its CAAS state, and a system whose
    every answer is invalid says so in its card."""
    from tests.mllm.servers import completion, scripted_server

    with scripted_server([(200, completion("I cannot tell from this picture."))]) as (url, _):
        config = _config(tmp_path / "c.yaml", tiny_root, tmp_path / "a", category=["washer"], backend="openai",
                         base_url=url, model="served")
        result, outcomes = _run(config)
    assert result.exit_code == 0, result.output
    report = artifacts.open_artifact(next(o["path"] for o in outcomes if o["stage"] == "report")).path
    metrics = json.loads((report / "metrics.json").read_text())
    macro = next(r for r in metrics["rows"] if r["category"] == "macro" and r["system"] != "Expert")
    assert macro["system"] == "EAGLE, no CAAS" and macro["invalid_share"] == 1 and macro["balanced_accuracy"] is None
    page = tmp_path / "page.html"
    page.write_text((report / "report.html").read_text().replace("</body>", MEASURE + "</body>"))
    dom = dump_dom(page, tmp_path / "profile", size=f"{width},900")
    card = dom.split('class="card"')[2].split('<div class="card"')[0]
    assert "EAGLE, no CAAS" in card and "all 11 answers invalid" in card
    measured = json.loads(html.unescape(dom.split('data-measured="')[1].split('"')[0]))
    assert measured["view"] == width and measured["page"] <= width
    assert measured["tables"] and all(t["scrolls"] in ("auto", "scroll") and t["right"] <= width
                                      for t in measured["tables"]), measured


def test_a_narrow_caas_window_is_still_drawn_as_a_visible_band(washer_scores):
    from eagle_cli.report import plots
    from eagle_cli.report.gather import gather

    store, run = washer_scores.path.parents[3], washer_scores.path.parents[2].name
    category = gather(store, run, ["washer"]).categories["washer"]
    scores = [r.score for r in category.rows] + list(category.calibration_scores)
    tau = category.threshold.tau
    narrow = replace(category, threshold=replace(category.threshold, s_max=tau + 1e-6 * (max(scores) - min(scores))))
    with Image.open(io.BytesIO(base64.b64decode(plots.dbt_histogram(narrow)))) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    strip = (np.abs(pixels - [255, 140, 0]).sum(axis=2) < 60).any(axis=0)  # matplotlib's darkorange
    assert strip.sum() >= 5
