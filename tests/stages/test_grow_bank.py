"""eagle update-bank: a bank grows by the new images only, as the greedy seeded with its old selection would."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from eagle_cli.data import DataSource
from eagle_cli.errors import ArtifactError, DataError, ParameterError
from eagle_cli.expert.coreset import continue_coreset, coreset_size
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, ExtractParams
from eagle_cli.seeds import category_seed
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.grow_bank import extraction_of, run_grow_bank
from eagle_cli.stages.score import ScoreInputs
from tests.conftest import TINY, split_good_images, threshold_of

CPU = ExtractParams(device="cpu")

BANK = BankParams(coreset_ratio=0.1)


@pytest.fixture
def folders(tiny_root, tmp_path):
    """The brick category's 8 good training images split into 6 old and 2 new."""
    return split_good_images(tiny_root, "brick", tmp_path / "split", (6, 2))


def _bank(folder, context, params=BANK):
    features = run_extract(DataSource(good=folder).resolved(), "brick", "train", TINY, context=context)
    return run_fit_bank(features, params, context=context)


def _grow(parent, folder, context):
    """eagle update-bank: the new images extracted as the bank's were, then the bank grown with them."""
    category, extract = extraction_of(parent, CPU)
    new = run_extract(DataSource(good=folder).resolved(), category, "train", extract, context=context)
    return run_grow_bank(parent, new, context=context)


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_grown_bank_continues_the_old_selection_over_old_and_new_patches(folders, context):
    old, new = folders
    parent = _bank(old, context)
    before = _tree(parent.path)
    grown = _grow(parent, new, context)
    features, records, _ = read_features(grown.input("features"))
    assert [r.path.rsplit("/", 1)[0] for r in records] == [str(old)] * 6 + [str(new)] * 2
    assert [r.index for r in records] == list(range(8))
    patches = features.shape[1]
    rows = open_bank(grown).coreset().selected
    old_rows = open_bank(parent).coreset().selected
    assert len(rows) == coreset_size(8 * patches, BANK.coreset_ratio) and torch.equal(rows[:len(old_rows)], old_rows)
    # The same continuation, run here from the parent's recorded cover, gives the same bank.
    previous = open_bank(parent).coreset()
    again = continue_coreset(features.reshape(8 * patches, -1), previous, BANK.coreset_ratio,
                             generator=torch.Generator().manual_seed(category_seed(BANK.seed, "brick")))
    assert torch.equal(again.selected, rows)
    assert grown.input_ids("bank") == [parent.id]
    assert grown.summary["grown_from"] == parent.id and grown.summary["added_images"] == 2
    assert _tree(parent.path) == before  # the old bank is untouched


@pytest.mark.parametrize(("image_top", "updates"), [(1, "exact"), (8, "lists")])
def test_a_grown_bank_keeps_the_parents_scoring_rule_and_selection(folders, context, image_top, updates):
    old, new = folders
    parent = _bank(old, context, BankParams(coreset_ratio=0.1, image_top=image_top, coreset_updates=updates))
    grown = _grow(parent, new, context)
    assert open_bank(grown).params == open_bank(parent).params
    assert (open_bank(grown).params.image_top, open_bank(grown).params.coreset_updates) == (image_top, updates)


def test_a_bank_at_its_limit_grows_by_the_new_images_share_of_it(folders, context):
    old, new = folders
    parent = _bank(old, context, BankParams(coreset_ratio=0.1, coreset_max=30))
    grown = _grow(parent, new, context)
    assert open_bank(parent).size == 30 and open_bank(grown).size == 30 + 30 * 2 // 8
    rows = open_bank(grown).coreset().selected
    assert torch.equal(rows[:30], open_bank(parent).coreset().selected)
    assert open_bank(grown).params.coreset_max == 30


def test_growing_refuses_what_it_cannot_do_and_writes_nothing(folders, context):
    old, new = folders
    parent = _bank(old, context)
    with pytest.raises(ParameterError, match="nothing to add"):
        _grow(parent, old, context)
    banks = sorted(p.name for p in parent.path.parent.iterdir())
    shutil.rmtree(parent.input("features").path)
    with pytest.raises(ArtifactError, match="training features are gone"):
        _grow(parent, new, context)
    assert sorted(p.name for p in parent.path.parent.iterdir()) == banks


def test_update_bank_on_the_command_line_writes_bank_calibration_and_threshold(folders, tmp_path):
    old, new = folders
    root = tmp_path / "cli-artifacts"
    tiny = ["--backbone", "mobilenet_v2", "--weights", "none", "--resize", "96", "--crop", "80", "--device", "cpu"]
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit-bank", "--good", str(old), *tiny, "--artifacts", str(root), "--json"])
    assert fitted.exit_code == 0, fitted.output
    result = runner.invoke(app, ["update-bank", "--good", str(new), "--target-far", "0.2", "--device", "cpu",
                                 "--artifacts", str(root), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["artifacts"]
    assert [item["kind"] for item in written] == ["bank", "calibration", "threshold"]
    assert written[0]["summary"]["images"] == 8 and written[1]["summary"]["images"] == 8
    threshold = artifacts.open_artifact(written[2]["path"], "threshold")
    assert threshold.input("bank").id == written[0]["id"]


def test_grown_features_refer_to_the_extracted_ones_and_a_second_growth_flattens_the_parts(tiny_root, tmp_path,
                                                                                           context):
    folders = split_good_images(tiny_root, "brick", tmp_path / "split", (4, 2, 2))
    parent = _bank(folders[0], context)
    once = _grow(parent, folders[1], context)
    twice = _grow(once, folders[2], context)
    joined = twice.input("features")
    assert not (joined.path / "features.safetensors").exists()  # no copy of anyone's rows
    parts = [joined.locate(item) for item in joined.manifest["inputs"]]
    assert parts[0] == parent.input("features").path and len(parts) == 3
    features, records, _ = read_features(joined)
    assert features.shape[0] == 8 and [r.index for r in records] == list(range(8))
    direct = torch.cat([read_features(artifacts.open_artifact(p))[0] for p in parts])
    assert torch.equal(features, direct)
    # Its test images are looked up where the bank was first fitted: a --good folder has none of its own.
    threshold = threshold_of(twice, context=context)
    with pytest.raises(DataError, match="pass --test DIR"):
        ScoreInputs.of_bank(threshold)
    shutil.rmtree(parts[1])
    with pytest.raises(ArtifactError, match="not a published eagle artifact"):
        read_features(joined)
