"""eagle export and the torch-free runtime: the same scores, verdicts, maps and boxes as the torch expert on
realistic parts (crop, full frame, tiles; ONNX and OpenVINO), no torch imported, and a damaged export refused."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eagle_cli import Expert
from eagle_cli.data.synthetic import generate
from eagle_cli.errors import ArtifactError
from eagle_cli.export.folder import MANIFEST
from eagle_cli.export.runtime import ExportedExpert
from eagle_cli.export.writer import export_expert
from eagle_cli.params import ExtractParams, ThresholdParams
from eagle_cli.prompts.boxes import find_boxes

#: Runs a script with the full install's modules made unimportable, as on a line PC without them.
WITHOUT_FULL = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "transformers", "sklearn", "skimage", "matplotlib",
                                  "jinja2", "onnx", "onnxscript"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Absent())
"""

#: Extraction of each mode on realistic 480 px parts: a centre crop, the full frame, and tiles (auto).
MODES = {"crop": {"tile": 0}, "full": {"tile": 0, "crop": 0, "resize": 320}, "tiles": {}}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realistic")
    generate(root, categories=("coins",), variation="realistic", n_train=10, n_test_good=3, n_test_per_defect=1,
             size=480, seed=2)
    return root / "coins"


@pytest.fixture(scope="module")
def experts(parts) -> dict[str, Expert]:
    good = [Image.open(path) for path in sorted((parts / "train" / "good").glob("*.png"))]
    return {mode: Expert.fit(good, extract=ExtractParams(backbone="mobilenet_v2", device="cpu", **settings),
                             threshold=ThresholdParams("quantile", q=10), category="coins")
            for mode, settings in MODES.items()}


@pytest.fixture(scope="module")
def exported(experts, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    folders = {mode: export_expert(expert, root / mode, threshold={"id": mode}) for mode, expert in experts.items()}
    folders["tiles-openvino"] = export_expert(experts["tiles"], root / "tiles-openvino", format="openvino")
    return folders


def _test_images(parts: Path) -> list[Image.Image]:
    return [Image.open(path) for path in sorted((parts / "test").rglob("*.png"))]


@pytest.mark.parametrize("mode", [*MODES, "tiles-openvino"])
def test_the_export_scores_as_the_torch_expert(mode, parts, experts, exported):
    images = _test_images(parts)
    expected = experts[mode.split("-")[0]].score(images)
    got = ExportedExpert.load(exported[mode]).score(images)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4)
    assert got.anomalous.tolist() == expected.anomalous.tolist() and expected.anomalous.any()
    assert got.uncertain.tolist() == expected.uncertain.tolist()
    tau = experts[mode.split("-")[0]].tau
    for mine, theirs in zip(got.maps, expected.maps, strict=True):
        assert np.abs(mine - theirs).max() <= 1e-3 * (theirs.max() - theirs.min())
        assert [box for box, _ in find_boxes(mine, tau)] == [box for box, _ in find_boxes(theirs, tau)]


def test_a_damaged_or_foreign_export_is_refused_with_one_message(exported, tmp_path):
    def copy() -> Path:
        target = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(exported["crop"], target)
        return target

    edited = copy()
    settings = json.loads((edited / "expert.json").read_text())
    (edited / "expert.json").write_text(json.dumps({**settings, "tau": settings["tau"] * 2}))
    missing = copy()
    (missing / "bank.safetensors").unlink()
    other_schema = copy()
    manifest = json.loads((other_schema / MANIFEST).read_text())
    (other_schema / MANIFEST).write_text(json.dumps({**manifest, "schema": 99, "eagle": "9.0"}))
    relabelled = copy()
    (relabelled / MANIFEST).write_text(json.dumps({**manifest, "threshold": {"id": "another"}}))
    garbled = copy()
    (garbled / MANIFEST).write_text("{not json")
    cases = {edited: "expert.json does not match the check value", missing: "lacks bank.safetensors",
             other_schema: "exported by eagle 9.0 with export schema 99", garbled: "manifest.json cannot be read",
             relabelled: "was edited after export",
             tmp_path / "nothing": "is not an eagle export"}
    for folder, message in cases.items():
        with pytest.raises(ArtifactError, match=message) as refused:
            ExportedExpert.load(folder)
        assert "\n" not in str(refused.value) and "eagle export" in str(refused.value)


def test_the_runtime_scores_without_torch_or_the_full_install(parts, exported):
    script = WITHOUT_FULL + f"""
import json
from pathlib import Path
from PIL import Image
from eagle_cli.export.runtime import ExportedExpert
expert = ExportedExpert.load({str(exported["tiles"])!r})
paths = sorted(Path({str(parts / "test")!r}).rglob("*.png"))
result = expert.score([Image.open(p) for p in paths])
print(json.dumps({{"scores": result.scores.tolist(), "torch": [m for m in sys.modules if m.startswith("torch")]}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["torch"] == [] and len(printed["scores"]) == len(_test_images(parts))


def test_an_export_that_does_not_reproduce_torch_is_never_written(experts, tmp_path):
    from eagle_cli.export import writer

    class Drifting(writer._FeatureGraph):
        """Random noise on the features: the exported graph draws other noise than the eager run."""

        def forward(self, tiles):
            features = super().forward(tiles)
            return features + torch.rand_like(features)

    with pytest.raises(ArtifactError, match="does not reproduce eagle's features"):
        writer._write_graph(Drifting(experts["crop"].extractor).eval(), 224, tmp_path, "onnx", "mobilenet_v2")


def test_the_runtime_install_resolves_without_torch():
    """What `pip install 'eagle-cli[runtime]'` would install, resolved by pip itself."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                          "--report", "-", f"{root}[runtime]"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(run.stdout)["install"]}
    assert {"onnxruntime", "faiss-cpu", "numpy", "eagle-cli"} <= names
    assert not names & {"torch", "torchvision", "transformers", "nvidia-cudnn-cu12", "scikit-learn"}
