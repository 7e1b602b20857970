"""Faults at every stage, as a user meets them: the exit code, the one message, errors.jsonl, and that
work published before the fault is byte-identical after it.

One small store (tiny brick, every stage through report) is built once; each row copies it, applies
one fault and runs one stage on the command line. Full disks and read-only folders are real mounts
(tmpfs, read-only bind), so they need root; elsewhere those rows skip and say why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from tests.cli.test_cli import TINY_ARGS
from tests.conftest import bomb_png

runner = CliRunner()
CATEGORY = "brick"


def stage_args(stage: str, model: Path) -> list[str]:
    return {
        "extract": ["extract", *TINY_ARGS],
        "fit-bank": ["fit-bank", *TINY_ARGS],
        "fit-threshold": ["fit-threshold", "--target-far", "0.2"],
        "score": ["score", "--device", "cpu"],
        "prompt": ["prompt", "--visual", "both"],
        "reason": ["reason", "--model", str(model), "--device", "cpu", "--max-new-tokens", "2"],
        "report": ["report"],
    }[stage]


#: The artifact each stage reads, which the tampering rows damage.
INPUT_KIND = {"fit-bank": "features", "fit-threshold": "bank", "score": "threshold", "prompt": "scores",
              "reason": "prompts", "report": "answers"}
STAGES = ("extract", "fit-bank", "fit-threshold", "score", "prompt", "reason", "report")


@dataclass
class Case:
    """One stage run under one fault."""

    root: Path  # the artifacts folder
    data: Path  # a private copy of the dataset
    model: Path
    stage: str
    source: Path | None = None  # the dataset the store was built from
    extra: tuple[str, ...] = ()

    def invoke(self, *more: str, force: bool = True):
        args = [*stage_args(self.stage, self.model), *self.extra, *more, "--artifacts", str(self.root),
                "--category", CATEGORY, "-q"]
        return runner.invoke(app, [*args, "--force"] if force else args)


@pytest.fixture(scope="module")
def store(tiny_root, tiny_qwen, tmp_path_factory) -> tuple[Path, Path]:
    """(artifacts, data): every stage of the tiny brick category, published once."""
    base = tmp_path_factory.mktemp("faults")
    data = base / "data"
    shutil.copytree(tiny_root / CATEGORY, data / CATEGORY)
    root = base / "artifacts"
    for stage in STAGES[1:]:
        data_arg = ["--data", str(data)] if stage == "fit-bank" else []
        result = Case(root, data, tiny_qwen, stage, extra=tuple(data_arg)).invoke(force=False)
        assert result.exit_code == 0, result.output
    return root, data


@pytest.fixture
def case(store, tiny_qwen, tmp_path, request) -> Case:
    """A private copy of the store, and of its data for faults that damage images, for the stage named by the
    test's ``stage`` parameter. The copied artifacts still name the store's own data folder."""
    root, data = tmp_path / "artifacts", tmp_path / "data"
    shutil.copytree(store[0], root)
    shutil.copytree(store[1], data)
    return Case(root, data, tiny_qwen, request.node.callspec.params["stage"], source=store[1])


def published(root: Path) -> dict[str, str]:
    """Every file of every published artifact, with its sha256."""
    # Artifact files lie at <run>/<category>/<kind>/<id>/…; the store's image-digest cache is no artifact.
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and len(p.relative_to(root).parts) > 4
            and not any(part.startswith(".tmp-") for part in p.parts)}


def assert_only_written_changed(root: Path, result, before: dict[str, str]) -> None:
    """Files of artifacts this run did not write (``--json`` names those it did) are unchanged."""
    written = [Path(ref["path"]).relative_to(root) for ref in json.loads(result.stdout)["artifacts"]]
    after = published(root)
    kept = {path: digest for path, digest in before.items() if not any(Path(path).is_relative_to(w) for w in written)}
    assert {path: after[path] for path in kept} == kept


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".tmp-*"))


def assert_one_message(result, pattern: str) -> None:
    """Exit 1 with one ``error:`` line matching ``pattern`` and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output
    assert "Traceback" not in result.output


def errors_of(root: Path, kind: str) -> dict[str, str]:
    """File name → reason, from errors.jsonl of the newest ``kind`` artifact."""
    ref = artifacts.latest(root, "default", CATEGORY if kind != "report" else "_all", kind)
    rows = [json.loads(line) for line in (ref.path / "errors.jsonl").read_text().splitlines()]
    return {Path(row["file"]).name: row["error"] for row in rows}


# ---------------------------------------------------------------------------------------------------------
# Bad images: listed, skipped, the run goes on.

def _bad_images(folder: Path) -> dict[str, str]:
    """Write one file of each bad kind into ``folder``; return file name → the reason errors.jsonl must give."""
    real = next(folder.parent.parent.rglob("*.png")).read_bytes()
    (folder / "bomb.png").write_bytes(bomb_png(30_000, 30_000))
    (folder / "truncated.png").write_bytes(real[: len(real) // 2])
    (folder / "text.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (40, 40)).save(folder / "small.png")
    Image.new("F", (96, 96)).save(folder / "float.tiff")
    return {"bomb.png": "megapixel limit", "truncated.png": "cannot be decoded", "text.png": "not an image format",
            "empty.png": "not an image format", "small.png": "smaller than the 80-pixel frame",
            "float.tiff": "floating-point image"}


@pytest.mark.parametrize("stage,split,kind", [("extract", "train", "features"), ("fit-bank", "train", "features"),
                                              ("score", "test", "scores")])
def test_bad_images_are_listed_and_skipped_and_the_stage_completes(case, stage, split, kind):
    expected = _bad_images(case.data / CATEGORY / split / "good")
    before = published(case.root)
    result = case.invoke("--data", str(case.data), "--json")
    assert result.exit_code == 0, result.output
    found = errors_of(case.root, kind)
    assert set(found) == set(expected)
    assert all(reason in found[name] for name, reason in expected.items()), found
    assert_only_written_changed(case.root, result, before)


@pytest.mark.parametrize("stage", ["prompt", "report"])
def test_an_image_broken_after_scoring_is_listed_and_the_stage_completes(case, stage):
    # The chain up to this stage again, over the private data copy, so that an image can be broken.
    for step in ("score", "prompt", "reason")[:1 if stage == "prompt" else 3]:
        extra = ("--data", str(case.data)) if step == "score" else ()
        result = Case(case.root, case.data, case.model, step, extra=extra).invoke("--json", force=False)
        assert result.exit_code == 0, result.output
        if step == "score":
            scores = Path(json.loads(result.stdout)["artifacts"][0]["path"]) / "scores.jsonl"
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    broken = Path(next(row["path"] for row in rows if row["anomalous"]))
    assert broken.is_relative_to(case.data)
    broken.write_text("overwritten")
    before = published(case.root)
    result = case.invoke("--json")
    assert result.exit_code == 0, result.output
    if stage == "prompt":
        assert list(errors_of(case.root, "prompts")) == [broken.name]
    else:
        ref = artifacts.latest(case.root, "default", "_all", "report")
        page = (ref.path / "report.html").read_text()
        assert f"image unreadable now: <span class=\"path\">{broken}</span>" in page  # named, not fatal
    assert_only_written_changed(case.root, result, before)


@pytest.mark.parametrize("stage", ["score"])
def test_a_mask_of_the_wrong_size_is_listed_and_its_image_still_scored(case, stage):
    mask = sorted((case.data / CATEGORY / "ground_truth").rglob("*.png"))[0]
    Image.new("L", (10, 10), 255).save(mask)
    result = case.invoke("--data", str(case.data), "--json")
    assert result.exit_code == 0, result.output
    assert list(errors_of(case.root, "scores")) == [mask.name]
    assert "left out of pixel metrics" in errors_of(case.root, "scores")[mask.name]
    summary = json.loads(result.stdout)["artifacts"][0]["summary"]
    assert summary["images"] == len(list((case.data / CATEGORY / "test").rglob("*.png")))
    assert summary["pixel_auroc"] is not None


# ---------------------------------------------------------------------------------------------------------
# Faults that stop a stage: exit 1, one message, nothing published, nothing earlier changed.

def _stopped(case: Case, result, pattern: str, before: dict[str, str]) -> None:
    assert_one_message(result, pattern)
    assert published(case.root) == before
    # Only a resumable stage keeps a hidden folder: the answers it already has.
    assert all(name.startswith(".tmp-partial-") for name in hidden(case.root)) if case.stage == "reason" \
        else hidden(case.root) == []


@pytest.mark.parametrize("stage", ["extract", "fit-bank", "score"])
@pytest.mark.parametrize("folder,pattern", [("missing", "does not exist"),
                                            ("empty", "No categories found.*Point --data at a dataset root")])
def test_a_missing_or_empty_data_folder_stops_the_stage(case, stage, folder, pattern):
    target = case.data.parent / folder
    if folder == "empty":
        target.mkdir()
    before = published(case.root)
    _stopped(case, case.invoke("--data", str(target)), pattern, before)


@pytest.mark.parametrize("stage", list(INPUT_KIND))
@pytest.mark.parametrize("fault,pattern", [("tampered", "was changed after it was written"),
                                           ("newer schema", "schema 99; this eagle .* reads schema")])
def test_a_damaged_input_artifact_stops_the_stage(case, stage, fault, pattern):
    kind = INPUT_KIND[stage]
    ref = artifacts.latest(case.root, "default", CATEGORY, kind)
    if fault == "tampered":
        data_file = max((p for p in ref.path.iterdir() if p.name != artifacts.MANIFEST), key=lambda p: p.stat().st_size)
        content = bytearray(data_file.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data_file.write_bytes(bytes(content))
    else:
        manifest = json.loads((ref.path / artifacts.MANIFEST).read_text())
        manifest["schema"] = 99
        (ref.path / artifacts.MANIFEST).write_text(json.dumps(manifest))
    before = published(case.root)
    _stopped(case, case.invoke(), pattern, before)


@pytest.mark.parametrize("stage", ["score"])
def test_test_features_of_another_backbone_setting_stop_scoring(case, stage):
    other = [arg if arg != "96" else "112" for arg in TINY_ARGS]
    extracted = runner.invoke(app, ["extract", *other, "--split", "test", "--data", str(case.data), "--category",
                                    CATEGORY, "--artifacts", str(case.root), "--json", "-q"])
    assert extracted.exit_code == 0, extracted.output
    features = json.loads(extracted.stdout)["artifacts"][0]["path"]
    before = published(case.root)
    _stopped(case, case.invoke("--features", features), "computed differently.*resize: 96 vs 112", before)


@pytest.mark.parametrize("stage", STAGES)
def test_a_read_only_artifacts_folder_stops_new_work_and_still_serves_what_it_holds(case, stage):
    case.extra = ("--data", str(case.source)) if stage in ("extract", "fit-bank") else ()
    before = published(case.root)
    with read_only(case.root):
        stopped = case.invoke()
        reused = case.invoke(force=False)
    _stopped(case, stopped, r"not written \(.*: (Read-only file system|Permission denied)\); make the folder "
                            "writable", before)
    assert reused.exit_code == 0, reused.output


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_stops_the_stage_with_one_message(case, stage, tmp_path):
    case.extra = ("--data", str(case.source)) if stage in ("extract", "fit-bank") else ()
    with tiny_disk(tmp_path / "disk") as disk:
        case.root = Path(shutil.copytree(case.root, disk / "artifacts"))
        before = published(case.root)
        _fill(disk)
        result = case.invoke()
        _stopped(case, result, r"not written \(.*: No space left on device\); free space there", before)


# ---------------------------------------------------------------------------------------------------------
# Two processes on the same artifact id.

@pytest.mark.parametrize("stage", ["fit-bank", "reason"])
def test_two_processes_writing_the_same_artifact_both_succeed_and_publish_one(case, stage):
    kind = {"fit-bank": "bank", "reason": "answers"}[stage]
    old = artifacts.latest(case.root, "default", CATEGORY, kind)
    shutil.rmtree(old.path)
    args = [*stage_args(stage, case.model), "--artifacts", str(case.root), "--category", CATEGORY, "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "eagle_cli", *args], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert not any("Traceback" in text for _, text in outcomes)
    written = artifacts.list_artifacts(case.root, category=CATEGORY, kind=kind)
    assert [ref.id for ref in written] == [old.id]
    artifacts.open_artifact(written[0].path)  # every file matches its manifest
    if kind == "answers":
        ids = [json.loads(line)["id"] for line in (written[0].path / "answers.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == old.summary["answers"]
    assert hidden(case.root) == []


# ---------------------------------------------------------------------------------------------------------
# Mounts.

@contextmanager
def read_only(folder: Path):
    """``folder`` read-only for this process: a read-only bind mount as root (root ignores modes)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for path in modes:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    _mount(["--bind", str(folder), str(folder)])
    try:
        _mount(["-o", "remount,bind,ro", str(folder)])
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def tiny_disk(folder: Path, megabytes: int = 32):
    """A real file system of ``megabytes`` at ``folder`` (tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    folder.mkdir()
    _mount(["-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)])
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); the fault needs a real mount")


def _fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        except OSError:
            pass
