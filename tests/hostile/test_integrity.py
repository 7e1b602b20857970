"""Tampered manifests: whatever a report or `artifacts show` would print is sealed, so an edited summary,
lineage or date is refused like an edited parameter, and nothing is published from it."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app


def _report(store, run, ref):
    return ["report", "--artifacts", str(store), "--run", run]


def _show(store, run, ref):
    return ["artifacts", "show", str(ref.path)]


#: (kind, manifest key, edited value, command): each edit went straight to the screen or metrics.csv before.
TAMPERED = [
    ("scores", ("summary", "image_auroc"), 12.3, _report),
    ("scores", ("summary", "pixel_auroc"), 0.999, _report),
    ("threshold", ("summary", "tau"), 0.001, _show),
    ("threshold", ("lineage", "backbone"), "wide_resnet50_2", _show),
    ("bank", ("created",), "2030-01-01T00:00:00+00:00", _show),
    ("bank", ("files",), {}, _show),
]


@pytest.mark.parametrize("kind,key,value,command", TAMPERED)
def test_an_edited_manifest_is_refused_before_anything_is_printed(washer_scores, tmp_path, kind, key, value, command):
    store, run = tmp_path / "store", washer_scores.path.parents[2].name
    shutil.copytree(washer_scores.path.parents[3], store)
    ref = artifacts.latest(store, run, "washer", kind)
    manifest = json.loads((ref.path / artifacts.MANIFEST).read_text())
    *outer, last = key
    target = manifest
    for name in outer:
        target = target[name]
    target[last] = value
    (ref.path / artifacts.MANIFEST).write_text(json.dumps(manifest, indent=2))
    before = sorted(store.rglob(artifacts.MANIFEST))
    result = CliRunner().invoke(app, command(store, run, ref), env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "was edited after it was written" in result.output and str(ref.path) in result.output.replace("\n", "")
    assert str(value) not in result.stdout
    assert sorted(store.rglob(artifacts.MANIFEST)) == before


def test_an_untouched_store_still_reports_and_shows(washer_scores, tmp_path):
    store, run = tmp_path / "store", washer_scores.path.parents[2].name
    shutil.copytree(washer_scores.path.parents[3], store)
    threshold = artifacts.latest(store, run, "washer", "threshold")
    shown = CliRunner().invoke(app, ["artifacts", "show", str(threshold.path)])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["summary"]["tau"] == threshold.summary["tau"]
    assert CliRunner().invoke(app, ["report", "--artifacts", str(store), "--run", run]).exit_code == 0
